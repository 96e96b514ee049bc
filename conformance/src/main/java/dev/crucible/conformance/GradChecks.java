package dev.crucible.conformance;

import dev.crucible.backend.Op;

import java.util.Arrays;
import java.util.List;
import java.util.Map;

import static dev.crucible.conformance.Gen.inputs;
import static dev.crucible.conformance.Gen.normal;
import static dev.crucible.conformance.Gen.uniform;
import static dev.crucible.tensor.DType.F32;

/**
 * Finite-difference checks of every backward op, at small shapes (each sampled coordinate costs two forward runs on
 * the reference). In each, "R" (named dOut where the op takes an upstream gradient) is the random weight vector of
 * the loss L = Σ out · R, so the backward op given dOut = R must return ∂L/∂input.
 */
public final class GradChecks {
    private GradChecks() {
    }

    /**
     * The step. With Richardson extrapolation the truncation error is ~h⁴ (~1e-6 here), so h can be large, which keeps
     * the f32 rounding of the forward outputs (~1e-7 relative, divided by h) small as well.
     */
    static final double H = 3e-2;
    static final int SAMPLES = 48;

    public static List<GradCheck> all() {
        return List.of(embeddingBackward(), rmsNormBackward(), linearDx(), linearDw(), ropeInverse(),
                attentionBackward(), swigluBackward(), crossEntropy());
    }

    /** dTable += scatter(dOut) is ∂/∂table of Σ table[ids] · R; ids repeat and some rows are unused. */
    static GradCheck embeddingBackward() {
        int n = 9, vocab = 7, dim = 5;
        return new GradCheck("EmbeddingBackward", "N=" + n + " V=" + vocab + " C=" + dim, H, Tolerance.GRADIENT,
                SAMPLES,
                (rng, ref) -> inputs("ids", HostArray.i32(uniform(rng, n, vocab - 2)),
                        "table", normal(rng, vocab * dim, 1), "dOut", normal(rng, n * dim, 1),
                        "dTable", HostArray.zeros(vocab * dim)),
                h -> new Op.Embedding(h.in("ids"), h.in("table"), h.out("out", F32, n * dim), n, dim),
                Map.of("out", "dOut"),
                h -> new Op.EmbeddingBackward(h.in("ids"), h.in("dOut"), h.inOut("dTable"), n, dim),
                Map.of("dTable", "table"));
    }

    /**
     * x is N(0,1) here, without the row scales of the comparison cases: the norm's derivatives grow like rstdᵏ, so
     * a row of small values would need a proportionally smaller step.
     */
    static GradCheck rmsNormBackward() {
        int n = 3, dim = 13;
        return new GradCheck("RmsNormBackward", "N=" + n + " C=" + dim, H, Tolerance.GRADIENT, SAMPLES,
                (rng, ref) -> {
                    var in = inputs("x", normal(rng, n * dim, 1),
                            "weight", HostArray.f32(Gen.normal(rng, dim, 1, 0.1)),
                            "dOut", normal(rng, n * dim, 1),
                            "dx", HostArray.zeros(n * dim), "dWeight", HostArray.zeros(dim));
                    in.put("rstd", Cases.onReference(ref, in, Cases.rmsNormForward(n, dim)).output("rstd"));
                    return in;
                },
                Cases.rmsNormForward(n, dim),
                Map.of("out", "dOut"),
                h -> new Op.RmsNormBackward(h.in("dOut"), h.in("x"), h.in("weight"), h.in("rstd"), h.inOut("dx"),
                        h.inOut("dWeight"), n, dim),
                Map.of("dx", "x", "dWeight", "weight"));
    }

    private static final int LM = 5, LK = 7, LN = 3; // linear layer: x (M,K), W (N,K), y = x·Wᵀ (M,N)

    /** The linear layer y(M,N) = x(M,K) · W(N,K)ᵀ, as a model emits it. */
    private static Op linear(Harness h) {
        return new Op.MatMul(h.in("x"), h.in("W"), h.out("y", F32, LM * LN), LM, LN, LK, false, true, false);
    }

    private static Map<String, HostArray> linearInputs(dev.crucible.tensor.Rng rng) {
        return inputs("x", normal(rng, LM * LK, 1), "W", normal(rng, LN * LK, 1), "dy", normal(rng, LM * LN, 1),
                "dW", HostArray.zeros(LN * LK));
    }

    /** dx(M,K) = dy(M,N) · W(N,K): a MatMul without transposes. */
    static GradCheck linearDx() {
        return new GradCheck("MatMul", "linear dx=dy·W M=" + LM + " N=" + LN + " K=" + LK, H, Tolerance.GRADIENT,
                SAMPLES, (rng, ref) -> linearInputs(rng), GradChecks::linear, Map.of("y", "dy"),
                h -> new Op.MatMul(h.in("dy"), h.in("W"), h.out("dx", F32, LM * LK), LM, LK, LN, false, false, false),
                Map.of("dx", "x"));
    }

    /** dW(N,K) += dy(M,N)ᵀ · x(M,K): a MatMul with transA, accumulating. */
    static GradCheck linearDw() {
        return new GradCheck("MatMul", "linear dW+=dyᵀ·x M=" + LM + " N=" + LN + " K=" + LK, H, Tolerance.GRADIENT,
                SAMPLES, (rng, ref) -> linearInputs(rng), GradChecks::linear, Map.of("y", "dy"),
                h -> new Op.MatMul(h.in("dy"), h.in("x"), h.inOut("dW"), LN, LK, LM, true, false, true),
                Map.of("dW", "W"));
    }

    /** Rope is a rotation, so its inverse applied to dOut is the gradient of Σ rope(x) · dOut. */
    static GradCheck ropeInverse() {
        int n = 3, heads = 2, headDim = 6;
        float theta = 10_000f;
        return new GradCheck("Rope", "inverse N=" + n + " H=" + heads + " D=" + headDim, H, Tolerance.GRADIENT,
                SAMPLES,
                (rng, ref) -> inputs("x", normal(rng, n * heads * headDim, 1),
                        "positions", HostArray.i32(uniform(rng, n, 64)),
                        "dOut", normal(rng, n * heads * headDim, 1)),
                h -> new Op.Rope(h.inOut("x"), h.in("positions"), n, heads, headDim, theta, false),
                Map.of("x", "dOut"),
                h -> new Op.Rope(h.inOut("dOut"), h.in("positions"), n, heads, headDim, theta, true),
                Map.of("dOut", "x"));
    }

    /** GQA attention backward, two batch rows, causal over T = 5. */
    static GradCheck attentionBackward() {
        int batch = 2, t = 5, heads = 4, kvHeads = 2, headDim = 6;
        int qn = batch * t * heads * headDim, kvn = batch * t * kvHeads * headDim;
        return new GradCheck("AttentionBackward", "B=" + batch + " T=" + t + " H=" + heads + " KV=" + kvHeads
                + " D=" + headDim, H, Tolerance.GRADIENT, SAMPLES,
                (rng, ref) -> {
                    var in = inputs("q", normal(rng, qn, 1), "k", normal(rng, kvn, 1), "v", normal(rng, kvn, 1),
                            "dOut", normal(rng, qn, 1));
                    Execution fwd = Cases.onReference(ref, in, Cases.attentionForward(batch, t, heads, kvHeads, headDim));
                    in.put("out", fwd.output("out"));
                    in.put("lse", fwd.output("lse"));
                    return in;
                },
                Cases.attentionForward(batch, t, heads, kvHeads, headDim),
                Map.of("out", "dOut"),
                Cases.attentionBackwardOp(batch, t, heads, kvHeads, headDim),
                Map.of("dq", "q", "dk", "k", "dv", "v"));
    }

    static GradCheck swigluBackward() {
        int n = 17;
        return new GradCheck("SwiGluBackward", "n=" + n, H, Tolerance.GRADIENT, SAMPLES,
                (rng, ref) -> inputs("gate", normal(rng, n, 3), "up", normal(rng, n, 1), "dOut", normal(rng, n, 1)),
                h -> new Op.SwiGlu(h.in("gate"), h.in("up"), h.out("out", F32, n), n),
                Map.of("out", "dOut"),
                h -> new Op.SwiGluBackward(h.in("dOut"), h.in("gate"), h.in("up"), h.out("dGate", F32, n),
                        h.out("dUp", F32, n), n),
                Map.of("dGate", "gate", "dUp", "up"));
    }

    /**
     * dLogits = gradScale · (softmax − onehot) is ∂/∂logits of gradScale · Σ losses: the loss weights are all
     * gradScale (a mean over rows when gradScale = 1/N). One target is masked and must get a zero gradient. The step
     * is larger: a loss of ~5 carries an f32 rounding of ~5e-7, which a small step would magnify.
     */
    static GradCheck crossEntropy() {
        int n = 4, vocab = 11;
        float scale = 0.25f;
        return new GradCheck("CrossEntropy", "dLogits N=" + n + " V=" + vocab + " scale=" + scale, 0.1,
                Tolerance.GRADIENT, SAMPLES,
                (rng, ref) -> {
                    float[] w = new float[n];
                    Arrays.fill(w, scale);
                    int[] t = uniform(rng, n, vocab);
                    t[1] = -1;
                    return inputs("logits", normal(rng, n * vocab, 2), "targets", HostArray.i32(t),
                            "weights", HostArray.f32(w));
                },
                h -> new Op.CrossEntropy(h.in("logits"), h.in("targets"), h.out("losses", F32, n), null, n, vocab,
                        scale),
                Map.of("losses", "weights"),
                h -> new Op.CrossEntropy(h.in("logits"), h.in("targets"), h.out("losses", F32, n),
                        h.out("dLogits", F32, (long) n * vocab), n, vocab, scale),
                Map.of("dLogits", "logits"));
    }
}
