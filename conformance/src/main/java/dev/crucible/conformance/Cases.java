package dev.crucible.conformance;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Rng;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

import static dev.crucible.conformance.Gen.inputs;
import static dev.crucible.conformance.Gen.normal;
import static dev.crucible.conformance.Gen.uniform;
import static dev.crucible.tensor.DType.F16;
import static dev.crucible.tensor.DType.F32;
import static dev.crucible.tensor.DType.I32;

/**
 * The reference-comparison cases: every op of {@link Op}, each at an aligned shape (multiples of 16/64, what the fast
 * paths of a kernel see) and an odd one (primes such as 7, 13, 37: the tails and remainders), plus the variants that
 * change what an op does: transposes and accumulation for MatMul, in-place and aliased outputs, GQA and KV-cache
 * layouts for attention, masked targets for cross-entropy. Inputs are drawn in realistic ranges.
 */
public final class Cases {
    private Cases() {
    }

    /** All cases, in the order of the ops in {@link Op}. */
    public static List<OpCase> all() {
        List<OpCase> c = new ArrayList<>();
        c.add(fill(F32, 1024, 1.5f));
        c.add(fill(F32, 37, 0f));
        c.add(fill(I32, 256, 7f));
        c.add(fill(I32, 13, -3f));
        c.add(copy(F32, 1024));
        c.add(copy(F32, 37));
        c.add(copy(I32, 256));
        c.add(copy(I32, 13));
        c.add(copyToHalf(1024));
        c.add(copyToHalf(37));
        c.add(embedding(128, 512, 64));
        c.add(embedding(7, 37, 13));
        c.add(embeddingBackward(128, 64, 64));
        c.add(embeddingBackward(13, 7, 37));
        c.add(rmsNorm(16, 256, true));
        c.add(rmsNorm(7, 37, true));
        c.add(rmsNorm(13, 37, false));
        c.add(rmsNormBackward(16, 256));
        c.add(rmsNormBackward(7, 37));
        for (int[] s : new int[][] {{64, 64, 128}, {7, 13, 37}}) {
            for (boolean transA : new boolean[] {false, true}) {
                for (boolean transB : new boolean[] {false, true}) {
                    for (boolean acc : new boolean[] {false, true}) c.add(matmul(s[0], s[1], s[2], transA, transB, acc));
                }
            }
        }
        // M past one row tile (MatMul's all-of-B packing path) as well as within it (per-tile panels above).
        c.add(matmul(197, 70, 288, false, true, false));
        c.add(matmul(203, 33, 64, true, false, true));
        // A weight gradient's shape: transposed A over several K blocks (each packed from its own rows of A).
        c.add(matmul(203, 40, 600, true, false, true));
        // Inference with weights used as stored: one token (the decode path), a few rows (a batched decode step)
        // and a prefill-sized M (packed GEMM), at aligned and odd N, K of whole blocks.
        for (DType t : new DType[] {DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0}) {
            c.add(weightMatmul(t, 1, 96, 256, false));
            c.add(weightMatmul(t, 3, 37, 96, true));
            c.add(weightMatmul(t, 17, 70, 288, false));
            c.add(embedding(t, 9, 37, 64));
        }
        c.add(rope(64, 4, 128, 10_000f, false));
        c.add(rope(64, 4, 128, 10_000f, true));
        c.add(rope(13, 7, 74, 500_000f, false));
        c.add(rope(13, 7, 74, 500_000f, true));
        // Training: Tq = Tk, qPos0 = 0, contiguous K/V; MHA, GQA, odd.
        c.add(attention(2, 64, 64, 4, 4, 64, 0, 64, true));
        c.add(attention(2, 32, 32, 8, 2, 64, 0, 32, true));
        c.add(attention(2, 13, 13, 6, 2, 37, 0, 13, true));
        // Inference against a KV cache: a prefill chunk in the middle (keys past the last query exist but are
        // masked), a single-token decode step, and an odd chunk; the cache holds more rows than Tk.
        c.add(attention(2, 16, 64, 8, 2, 64, 32, 128, true));
        c.add(attention(3, 1, 37, 4, 2, 16, 36, 64, false));
        c.add(attention(2, 7, 29, 6, 3, 38, 22, 41, false));
        c.add(attentionBackward(2, 32, 4, 2, 64));
        c.add(attentionBackward(2, 13, 6, 3, 37));
        c.add(swiglu(4096));
        c.add(swiglu(1021));
        c.add(swigluBackward(4096));
        c.add(swigluBackward(1021));
        c.add(add(4096, Alias.NONE));
        c.add(add(1021, Alias.NONE));
        c.add(add(1024, Alias.OUT_IS_A));
        c.add(add(37, Alias.OUT_IS_B));
        c.add(crossEntropy(16, 256, Grad.NONE, 1f / 16));
        c.add(crossEntropy(16, 512, Grad.SEPARATE, 1f / 16));
        c.add(crossEntropy(7, 37, Grad.IN_PLACE, 0.37f));
        c.add(crossEntropy(13, 1021, Grad.SEPARATE, 1f));
        c.add(sumSquares(65536));
        c.add(sumSquares(1021));
        c.add(adamw(4096, 1));
        c.add(adamw(1021, 10));
        // Paged KV cache: a decode step over sequences of different lengths (one page just full, one just begun, a
        // single key, several key blocks), MHA, GQA and MQA, and prefill chunks of one sequence (rows sharing a
        // page-table row), one longer than a query block. Page ids are shuffled: never contiguous, never in order.
        c.add(pagedAttention(8, 2, 64, 16, new int[] {1, 16, 17, 64, 100, 33}));
        c.add(pagedAttention(6, 3, 37, 7, new int[] {1, 7, 8, 23, 40}));
        c.add(pagedAttention(4, 4, 16, 16, new int[] {200, 5}));
        c.add(pagedPrefill(4, 1, 32, 16, 20, 13));
        c.add(pagedPrefill(2, 1, 13, 5, 3, 37));
        // F16 pools (an F16 KV cache): the same shapes; the reference widens the same halves exactly, so the
        // tolerance is F32's.
        c.add(pagedAttention(F16, 8, 2, 64, 16, new int[] {1, 16, 17, 64, 100, 33}));
        c.add(pagedAttention(F16, 6, 3, 37, 7, new int[] {1, 7, 8, 23, 40}));
        c.add(pagedPrefill(F16, 4, 1, 32, 16, 20, 13));
        c.add(pagedPrefill(F16, 2, 1, 13, 5, 3, 37));
        return List.copyOf(c);
    }

    static OpCase fill(DType type, int n, float value) {
        return new OpCase("Fill", "n=" + n + " value=" + value, type, Tolerance.EXACT,
                (rng, ref) -> Map.of(),
                h -> new Op.Fill(h.out("out", type, n), value));
    }

    static OpCase copy(DType type, int n) {
        return new OpCase("Copy", "n=" + n, type, Tolerance.EXACT,
                (rng, ref) -> inputs("src", type == F32 ? normal(rng, n, 1) : randomInts(rng, n)),
                h -> new Op.Copy(h.in("src"), h.out("dst", type, n)));
    }

    /** F32 → F16, each value rounded to the nearest half (ties to even); values past ±65504 become ±∞. */
    static OpCase copyToHalf(int n) {
        return new OpCase("Copy", "F32→F16 n=" + n, F16, Tolerance.EXACT,
                (rng, ref) -> {
                    float[] x = normal(rng, n, 1).floats();
                    float[] special = {0f, -0f, 65504f, 65520f, -7e4f, 6e-8f, 1e-5f, 1f + 0x1p-11f, 1f + 3 * 0x1p-11f};
                    System.arraycopy(special, 0, x, 0, Math.min(n, special.length));
                    return inputs("src", HostArray.f32(x));
                },
                h -> new Op.Copy(h.in("src"), h.out("dst", F16, n)));
    }

    private static HostArray randomInts(Rng rng, int n) {
        int[] v = new int[n];
        for (int i = 0; i < n; i++) v[i] = (int) rng.nextLong();
        return HostArray.i32(v);
    }

    static OpCase embedding(int n, int vocab, int dim) {
        return new OpCase("Embedding", "N=" + n + " V=" + vocab + " C=" + dim, F32, Tolerance.EXACT,
                (rng, ref) -> inputs("ids", HostArray.i32(uniform(rng, n, vocab)),
                        "table", normal(rng, vocab * dim, 1)),
                h -> new Op.Embedding(h.in("ids"), h.in("table"), h.out("out", F32, (long) n * dim), n, dim));
    }

    /** A table stored as {@code type}: rows must come out decoded exactly. */
    static OpCase embedding(DType type, int n, int vocab, int dim) {
        return new OpCase("Embedding", "N=" + n + " V=" + vocab + " C=" + dim + " table " + type, F32, Tolerance.EXACT,
                (rng, ref) -> inputs("ids", HostArray.i32(uniform(rng, n, vocab)),
                        "table", HostArray.encoded(type, normal(rng, vocab * dim, 1).floats())),
                h -> new Op.Embedding(h.in("ids"), h.in("table"), h.out("out", F32, (long) n * dim), n, dim));
    }

    /**
     * c = a·bᵀ with the weight b (N,K) stored as {@code type}; the reference decodes it exactly, so NMSE applies
     * (for Q4_0 and Q8_0 with room for 8-bit activations: {@link Tolerance#QUANTIZED_ACTIVATIONS}).
     */
    static OpCase weightMatmul(DType type, int m, int n, int k, boolean acc) {
        return new OpCase("MatMul", "M=" + m + " N=" + n + " K=" + k + " a·bᵀ b " + type + (acc ? " +=" : ""), F32,
                type == DType.Q4_0 || type == DType.Q8_0 ? Tolerance.QUANTIZED_ACTIVATIONS : Tolerance.REDUCTION,
                (rng, ref) -> inputs("a", normal(rng, m * k, 1), "b", HostArray.encoded(type, normal(rng, k * n, 1).floats()),
                        "c", normal(rng, m * n, 1)),
                h -> new Op.MatMul(h.in("a"), h.in("b"), acc ? h.inOut("c") : h.out("c", F32, (long) m * n),
                        m, n, k, false, true, acc));
    }

    /** N > V, so rows repeat and the scatter-add has collisions (where a racy parallel kernel loses updates). */
    static OpCase embeddingBackward(int n, int vocab, int dim) {
        return new OpCase("EmbeddingBackward", "N=" + n + " V=" + vocab + " C=" + dim + " +=", F32,
                Tolerance.ELEMENTWISE,
                (rng, ref) -> inputs("ids", HostArray.i32(uniform(rng, n, vocab)),
                        "dOut", normal(rng, n * dim, 1),
                        "dTable", normal(rng, vocab * dim, 0.1)),
                h -> new Op.EmbeddingBackward(h.in("ids"), h.in("dOut"), h.inOut("dTable"), n, dim));
    }

    static final float EPS = 1e-5f;

    /** A residual stream: rows of N(0,1) with per-row scales spread over e^±2. */
    static float[] residual(Rng rng, int n, int dim) {
        float[] x = normal(rng, n * dim, 0, 1);
        for (int r = 0; r < n; r++) {
            double scale = Math.exp(rng.nextGaussian());
            for (int c = 0; c < dim; c++) x[r * dim + c] *= (float) scale;
        }
        return x;
    }

    static OpCase rmsNorm(int n, int dim, boolean saveRstd) {
        return new OpCase("RmsNorm", "N=" + n + " C=" + dim + (saveRstd ? " +rstd" : ""), F32, Tolerance.REDUCTION,
                (rng, ref) -> inputs("x", HostArray.f32(residual(rng, n, dim)),
                        "weight", HostArray.f32(normal(rng, dim, 1, 0.1))),
                h -> new Op.RmsNorm(h.in("x"), h.in("weight"), h.out("out", F32, (long) n * dim),
                        saveRstd ? h.out("rstd", F32, n) : null, n, dim, EPS));
    }

    /** The forward RmsNorm with rstd saved, for backward inputs. */
    static OpCase.OpFactory rmsNormForward(int n, int dim) {
        return h -> new Op.RmsNorm(h.in("x"), h.in("weight"), h.out("out", F32, (long) n * dim),
                h.out("rstd", F32, n), n, dim, EPS);
    }

    /** Runs a forward op on the reference to make inputs a backward op needs (saved rstd, out, lse). */
    static Execution onReference(Backend reference, Map<String, HostArray> in, OpCase.OpFactory forward) {
        Execution e = Harness.execute(reference, in, forward);
        if (!e.supported()) throw new IllegalStateException("the reference does not support " + e.op());
        return e;
    }

    static OpCase rmsNormBackward(int n, int dim) {
        return new OpCase("RmsNormBackward", "N=" + n + " C=" + dim + " +=", F32, Tolerance.REDUCTION,
                (rng, ref) -> {
                    var in = inputs("x", HostArray.f32(residual(rng, n, dim)),
                            "weight", HostArray.f32(normal(rng, dim, 1, 0.1)),
                            "dOut", normal(rng, n * dim, 1),
                            "dx", normal(rng, n * dim, 0.1),
                            "dWeight", normal(rng, dim, 0.1));
                    in.put("rstd", onReference(ref, in, rmsNormForward(n, dim)).output("rstd"));
                    return in;
                },
                h -> new Op.RmsNormBackward(h.in("dOut"), h.in("x"), h.in("weight"), h.in("rstd"), h.inOut("dx"),
                        h.inOut("dWeight"), n, dim));
    }

    static OpCase matmul(int m, int n, int k, boolean transA, boolean transB, boolean acc) {
        String label = "M=" + m + " N=" + n + " K=" + k + " " + (transA ? "aᵀ" : "a") + "·" + (transB ? "bᵀ" : "b")
                + (acc ? " +=" : "");
        return new OpCase("MatMul", label, F32, Tolerance.REDUCTION,
                (rng, ref) -> inputs("a", normal(rng, m * k, 1), "b", normal(rng, k * n, 1),
                        "c", normal(rng, m * n, 1)),
                h -> new Op.MatMul(h.in("a"), h.in("b"), acc ? h.inOut("c") : h.out("c", F32, (long) m * n),
                        m, n, k, transA, transB, acc));
    }

    /** Positions spread over a long context, where an angle formed differently from HF's shows. */
    static OpCase rope(int n, int heads, int headDim, float theta, boolean inverse) {
        return new OpCase("Rope", "N=" + n + " H=" + heads + " D=" + headDim + " θ=" + (int) theta
                + (inverse ? " inverse" : ""), F32, Tolerance.TRANSCENDENTAL,
                (rng, ref) -> inputs("x", normal(rng, n * heads * headDim, 1),
                        "positions", HostArray.i32(uniform(rng, n, 4096))),
                h -> new Op.Rope(h.inOut("x"), h.in("positions"), n, heads, headDim, theta, inverse));
    }

    /**
     * q(B,Tq,H,D); k, v in a cache of {@code capacity} rows per batch row (capacity ≥ Tk). Rows at or past Tk are
     * stale cache content, set to large values so a kernel that reads them does not pass by luck.
     */
    static OpCase attention(int batch, int tq, int tk, int heads, int kvHeads, int headDim, int qPos0, int capacity,
                            boolean saveLse) {
        long stride = (long) capacity * kvHeads * headDim;
        String label = (tq == tk && qPos0 == 0 && capacity == tk
                ? "B=" + batch + " T=" + tq
                : "B=" + batch + " Tq=" + tq + " Tk=" + tk + " q0=" + qPos0 + " cache=" + capacity)
                + " H=" + heads + " KV=" + kvHeads + " D=" + headDim + (saveLse ? " +lse" : "");
        return new OpCase("Attention", label, F32, Tolerance.SOFTMAX,
                (rng, ref) -> inputs("q", normal(rng, batch * tq * heads * headDim, 1),
                        "k", kvCache(rng, batch, tk, capacity, kvHeads * headDim),
                        "v", kvCache(rng, batch, tk, capacity, kvHeads * headDim)),
                h -> new Op.Attention(h.in("q"), h.in("k"), h.in("v"),
                        h.out("out", F32, (long) batch * tq * heads * headDim),
                        saveLse ? h.out("lse", F32, (long) batch * heads * tq) : null,
                        batch, tq, tk, heads, kvHeads, headDim, qPos0, stride));
    }

    private static HostArray kvCache(Rng rng, int batch, int tk, int capacity, int rowSize) {
        float[] v = new float[batch * capacity * rowSize];
        for (int b = 0; b < batch; b++) {
            for (int t = 0; t < capacity; t++) {
                for (int c = 0; c < rowSize; c++) {
                    int i = (b * capacity + t) * rowSize + c;
                    v[i] = t < tk ? (float) rng.nextGaussian() : ((i & 1) == 0 ? 3e4f : -3e4f);
                }
            }
        }
        return HostArray.f32(v);
    }

    /** The training-time forward with lse saved, as AttentionBackward expects. */
    static OpCase.OpFactory attentionForward(int batch, int t, int heads, int kvHeads, int headDim) {
        return h -> new Op.Attention(h.in("q"), h.in("k"), h.in("v"),
                h.out("out", F32, (long) batch * t * heads * headDim), h.out("lse", F32, (long) batch * heads * t),
                batch, t, t, heads, kvHeads, headDim, 0, (long) t * kvHeads * headDim);
    }

    static OpCase.OpFactory attentionBackwardOp(int batch, int t, int heads, int kvHeads, int headDim) {
        long qn = (long) batch * t * heads * headDim, kvn = (long) batch * t * kvHeads * headDim;
        return h -> new Op.AttentionBackward(h.in("dOut"), h.in("q"), h.in("k"), h.in("v"), h.in("out"),
                h.in("lse"), h.out("dq", F32, qn), h.out("dk", F32, kvn), h.out("dv", F32, kvn),
                batch, t, heads, kvHeads, headDim);
    }

    static OpCase attentionBackward(int batch, int t, int heads, int kvHeads, int headDim) {
        int qn = batch * t * heads * headDim, kvn = batch * t * kvHeads * headDim;
        return new OpCase("AttentionBackward", "B=" + batch + " T=" + t + " H=" + heads + " KV=" + kvHeads + " D="
                + headDim, F32, Tolerance.SOFTMAX,
                (rng, ref) -> {
                    var in = inputs("q", normal(rng, qn, 1), "k", normal(rng, kvn, 1), "v", normal(rng, kvn, 1),
                            "dOut", normal(rng, qn, 1));
                    Execution fwd = onReference(ref, in, attentionForward(batch, t, heads, kvHeads, headDim));
                    in.put("out", fwd.output("out"));
                    in.put("lse", fwd.output("lse"));
                    return in;
                },
                attentionBackwardOp(batch, t, heads, kvHeads, headDim));
    }

    /** Gate pre-activations N(0, 3²): both tails of silu (≈0 and ≈identity) and the curved middle. */
    static OpCase swiglu(int n) {
        return new OpCase("SwiGlu", "n=" + n, F32, Tolerance.TRANSCENDENTAL,
                (rng, ref) -> inputs("gate", normal(rng, n, 3), "up", normal(rng, n, 1)),
                h -> new Op.SwiGlu(h.in("gate"), h.in("up"), h.out("out", F32, n), n));
    }

    static OpCase swigluBackward(int n) {
        return new OpCase("SwiGluBackward", "n=" + n, F32, Tolerance.TRANSCENDENTAL,
                (rng, ref) -> inputs("gate", normal(rng, n, 3), "up", normal(rng, n, 1), "dOut", normal(rng, n, 1)),
                h -> new Op.SwiGluBackward(h.in("dOut"), h.in("gate"), h.in("up"), h.out("dGate", F32, n),
                        h.out("dUp", F32, n), n));
    }

    enum Alias { NONE, OUT_IS_A, OUT_IS_B }

    static OpCase add(int n, Alias alias) {
        String label = "n=" + n + switch (alias) {
            case NONE -> "";
            case OUT_IS_A -> " out=a";
            case OUT_IS_B -> " out=b";
        };
        return new OpCase("Add", label, F32, Tolerance.ELEMENTWISE,
                (rng, ref) -> inputs("a", normal(rng, n, 1), "b", normal(rng, n, 1)),
                h -> switch (alias) {
                    case NONE -> new Op.Add(h.in("a"), h.in("b"), h.out("out", F32, n), n);
                    case OUT_IS_A -> {
                        Buffer a = h.inOut("a");
                        yield new Op.Add(a, h.in("b"), a, n);
                    }
                    case OUT_IS_B -> {
                        Buffer b = h.inOut("b");
                        yield new Op.Add(h.in("a"), b, b, n);
                    }
                });
    }

    enum Grad { NONE, SEPARATE, IN_PLACE }

    /**
     * Logits N(0, 2²); about one target in five is −1 (masked); one row is shifted by +100, which overflows exp in
     * f32 unless the row maximum is subtracted first, as every softmax must.
     */
    static OpCase crossEntropy(int n, int vocab, Grad grad, float gradScale) {
        String label = "N=" + n + " V=" + vocab + switch (grad) {
            case NONE -> "";
            case SEPARATE -> " +dLogits";
            case IN_PLACE -> " dLogits=logits";
        } + (grad == Grad.NONE ? "" : " scale=" + gradScale);
        return new OpCase("CrossEntropy", label, F32, Tolerance.SOFTMAX,
                (rng, ref) -> inputs("logits", HostArray.f32(logits(rng, n, vocab)),
                        "targets", HostArray.i32(targets(rng, n, vocab))),
                h -> switch (grad) {
                    case NONE -> new Op.CrossEntropy(h.in("logits"), h.in("targets"), h.out("losses", F32, n),
                            null, n, vocab, gradScale);
                    case SEPARATE -> new Op.CrossEntropy(h.in("logits"), h.in("targets"), h.out("losses", F32, n),
                            h.out("dLogits", F32, (long) n * vocab), n, vocab, gradScale);
                    case IN_PLACE -> {
                        Buffer logits = h.inOut("logits");
                        yield new Op.CrossEntropy(logits, h.in("targets"), h.out("losses", F32, n), logits, n,
                                vocab, gradScale);
                    }
                });
    }

    static float[] logits(Rng rng, int n, int vocab) {
        float[] l = normal(rng, n * vocab, 0, 2);
        int shifted = rng.nextInt(n);
        for (int c = 0; c < vocab; c++) l[shifted * vocab + c] += 100f;
        return l;
    }

    /** Valid targets, about one in five masked (−1), at least one of each. */
    static int[] targets(Rng rng, int n, int vocab) {
        int[] t = uniform(rng, n, vocab);
        for (int i = 0; i < n; i++) if (rng.nextInt(5) == 0) t[i] = -1;
        t[0] = -1;
        if (n > 1) t[n - 1] = rng.nextInt(vocab);
        return t;
    }

    static OpCase sumSquares(int n) {
        return new OpCase("SumSquares", "n=" + n, F32, Tolerance.REDUCTION,
                (rng, ref) -> inputs("x", normal(rng, n, 1e-2)),
                h -> new Op.SumSquares(h.in("x"), h.out("out", F32, 1)));
    }

    /** Parameters ~N(0, 0.02²), gradients ~1e-2, moments of matching size (v ≥ 0), GPT-style hyperparameters. */
    static OpCase adamw(int n, int step) {
        return new OpCase("AdamW", "n=" + n + " step=" + step, F32, Tolerance.TRANSCENDENTAL,
                (rng, ref) -> {
                    float[] v = normal(rng, n, 0, 1e-2);
                    for (int i = 0; i < n; i++) v[i] = v[i] * v[i];
                    return inputs("param", normal(rng, n, 0.02), "grad", normal(rng, n, 1e-2),
                            "m", normal(rng, n, 1e-2), "v", HostArray.f32(v));
                },
                h -> new Op.AdamW(h.inOut("param"), h.in("grad"), h.inOut("m"), h.inOut("v"), 3e-4f, 0.9f, 0.95f,
                        1e-8f, 0.1f, step, 0.5f));
    }

    private static HostArray pooled(DType pool, float[] values) {
        return pool == F32 ? HostArray.f32(values) : HostArray.encoded(pool, values);
    }

    /** A decode step: row r is its own sequence with {@code lengths[r]} keys (query at position lengths[r] − 1). */
    static OpCase pagedAttention(int heads, int kvHeads, int headDim, int pageSize, int[] lengths) {
        return pagedAttention(F32, heads, kvHeads, headDim, pageSize, lengths);
    }

    /** A decode step with pools of {@code pool} type (F32 or F16). */
    static OpCase pagedAttention(DType pool, int heads, int kvHeads, int headDim, int pageSize, int[] lengths) {
        String lens = Arrays.stream(lengths).mapToObj(Integer::toString).collect(Collectors.joining(","));
        return pagedAttention(pool, "decode R=" + lengths.length + " lengths=" + lens, heads, kvHeads, headDim, pageSize,
                lengths, false);
    }

    /** A prefill chunk of one sequence: {@code rows} queries at positions q0 … q0+rows−1, all on one page-table row. */
    static OpCase pagedPrefill(int heads, int kvHeads, int headDim, int pageSize, int q0, int rows) {
        return pagedPrefill(F32, heads, kvHeads, headDim, pageSize, q0, rows);
    }

    /** A prefill chunk with pools of {@code pool} type (F32 or F16). */
    static OpCase pagedPrefill(DType pool, int heads, int kvHeads, int headDim, int pageSize, int q0, int rows) {
        int[] lengths = new int[rows];
        for (int r = 0; r < rows; r++) lengths[r] = q0 + 1 + r;
        return pagedAttention(pool, "prefill R=" + rows + " q0=" + q0, heads, kvHeads, headDim, pageSize, lengths, true);
    }

    /**
     * Pool pages are dealt to the sequences from a shuffled list with spare pages left over; page-table entries past
     * what a row needs are −1 (never read); every pool row no query may see (spare pages, the tail of a sequence's last
     * page) holds ±3e4, so a kernel that reads a wrong page or a key past the length does not pass by luck.
     */
    private static OpCase pagedAttention(DType pool, String label, int heads, int kvHeads, int headDim, int pageSize, int[] lengths,
                                         boolean oneSequence) {
        int rows = lengths.length, kvRow = kvHeads * headDim;
        int longest = Arrays.stream(lengths).max().orElseThrow();
        int maxPages = (longest + pageSize - 1) / pageSize + 1;                 // one column more than any row needs
        int sequences = oneSequence ? 1 : rows;
        int[] seqLength = oneSequence ? new int[] {longest} : lengths.clone();
        int needed = 0;
        for (int len : seqLength) needed += (len + pageSize - 1) / pageSize;
        int pages = needed + 3;
        return new OpCase("PagedAttention", label + " H=" + heads + " KV=" + kvHeads + " D=" + headDim + " S=" + pageSize
                + " pages=" + pages, pool, Tolerance.SOFTMAX,
                (rng, ref) -> {
                    int[] ids = new int[pages];
                    for (int i = 0; i < pages; i++) ids[i] = i;
                    for (int i = pages - 1; i > 0; i--) {
                        int j = rng.nextInt(i + 1), t = ids[i];
                        ids[i] = ids[j];
                        ids[j] = t;
                    }
                    float[] k = new float[pages * pageSize * kvRow], v = new float[k.length];
                    for (int i = 0; i < k.length; i++) k[i] = v[i] = (i & 1) == 0 ? 3e4f : -3e4f;
                    int[][] seqPages = new int[sequences][];
                    int next = 0;
                    for (int s = 0; s < sequences; s++) {
                        seqPages[s] = new int[(seqLength[s] + pageSize - 1) / pageSize];
                        for (int i = 0; i < seqPages[s].length; i++) seqPages[s][i] = ids[next++];
                        for (int t = 0; t < seqLength[s]; t++) {
                            int base = (seqPages[s][t / pageSize] * pageSize + t % pageSize) * kvRow;
                            for (int c = 0; c < kvRow; c++) {
                                k[base + c] = (float) rng.nextGaussian();
                                v[base + c] = (float) rng.nextGaussian();
                            }
                        }
                    }
                    int[] table = new int[rows * maxPages];
                    Arrays.fill(table, -1);
                    for (int r = 0; r < rows; r++) {
                        int[] own = seqPages[oneSequence ? 0 : r];
                        System.arraycopy(own, 0, table, r * maxPages, oneSequence ? own.length : (lengths[r] + pageSize - 1) / pageSize);
                    }
                    return inputs("q", normal(rng, rows * heads * headDim, 1), "kPool", pooled(pool, k),
                            "vPool", pooled(pool, v), "pageTable", HostArray.i32(table), "lengths", HostArray.i32(lengths));
                },
                h -> new Op.PagedAttention(h.in("q"), h.in("kPool"), h.in("vPool"), h.in("pageTable"), h.in("lengths"),
                        h.out("out", F32, (long) rows * heads * headDim), rows, heads, kvHeads, headDim, pageSize,
                        maxPages));
    }
}
