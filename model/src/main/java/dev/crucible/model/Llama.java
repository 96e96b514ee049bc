package dev.crucible.model;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Rng;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The dense Llama decoder as a sequence of ops on a {@link Backend}: training forward and backward over a (B,T)
 * batch, and cached inference one chunk at a time. Hugging Face {@code LlamaForCausalLM} semantics (see
 * DESIGN.md §4). Parameters and gradients each live in one contiguous buffer laid out by {@link ParamLayout};
 * activations are allocated once per (B,T) shape and reused.
 *
 * <pre>
 *   h0 = embed[ids]
 *   per layer: h += Wo·attn(rope(Wq·n1), rope(Wk·n1), Wv·n1),  n1 = rmsnorm(h)
 *              h += Wdown·(silu(Wgate·n2) ⊙ Wup·n2),          n2 = rmsnorm(h)
 *   logits = Wlm·rmsnorm(h)        (Wlm = embed when tied)
 * </pre>
 */
public final class Llama implements AutoCloseable {
    private final LlamaConfig cfg;
    private final Backend be;
    private final ParamLayout layout;
    private final Buffer params;
    private final Buffer grads;
    /** Inference-only models: one buffer per tensor, each in its own storage type; null for trainable models. */
    private final Map<String, Buffer> stored;
    /**
     * Inference-only models: buffers that hold a group of stored tensors as slices (see {@link #forInference}), by
     * the group's first tensor; empty for trainable models.
     */
    private final Map<String, Buffer> fusedRoots;

    /** Tensors of a layer stored one after another that a one-token step multiplies as one matrix. */
    private static final List<String> QKV = List.of("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
            GATE_UP = List.of("mlp.gate_proj.weight", "mlp.up_proj.weight");

    private final Weights w;
    private final Weights g;
    private Activations acts;

    /** A trainable model: f32 parameters and gradients, zero until initialised or loaded. */
    public Llama(LlamaConfig cfg, Backend backend) {
        this.cfg = cfg;
        this.be = backend;
        this.layout = ParamLayout.of(cfg);
        this.params = be.allocate(DType.F32, layout.total());
        this.grads = be.allocate(DType.F32, layout.total());
        this.stored = null;
        this.fusedRoots = Map.of();
        be.run(new Op.Fill(params, 0f));
        be.run(new Op.Fill(grads, 0f));
        this.w = new Weights(name -> slice(params, layout.get(name)), l -> span(params, l, QKV), l -> span(params, l, GATE_UP));
        this.g = new Weights(name -> slice(grads, layout.get(name)), l -> null, l -> null);
    }

    private Llama(LlamaConfig cfg, Backend backend, Map<String, Buffer> stored, Map<String, Buffer> fusedRoots) {
        this.cfg = cfg;
        this.be = backend;
        this.layout = ParamLayout.of(cfg);
        this.params = null;
        this.grads = null;
        this.stored = stored;
        this.fusedRoots = fusedRoots;
        this.w = new Weights(stored::get, l -> fusedRoots.get(group(l, QKV).get(0)), l -> fusedRoots.get(group(l, GATE_UP).get(0)));
        this.g = null;
    }

    /**
     * A model for inference only: no gradients, and every tensor in the storage type {@code types} picks for it (F32,
     * or for the matrices F16, BF16, Q8_0 or Q4_0, used by the matmuls as stored). {@code fill} then receives each
     * tensor's HF name and its freshly allocated buffer, and must copy the weights in. Norm weights are always F32.
     *
     * <p>Where a layer's q, k and v projections share a type, they are stored as one (q; k; v) matrix, and gate and
     * up as one (gate; up): each tensor is a slice of it. A one-token step then streams each with one matmul instead
     * of three or two (fewer, longer weight streams; the same products, so the same bits).
     */
    public static Llama forInference(LlamaConfig cfg, Backend backend, java.util.function.Function<String, DType> types,
                                     java.util.function.BiConsumer<String, Buffer> fill) {
        return forInference(cfg, backend, types, fill, true);
    }

    /** {@link #forInference(LlamaConfig, Backend, java.util.function.Function, java.util.function.BiConsumer)}, fusing or not. */
    public static Llama forInference(LlamaConfig cfg, Backend backend, java.util.function.Function<String, DType> types,
                                     java.util.function.BiConsumer<String, Buffer> fill, boolean fuse) {
        ParamLayout layout = ParamLayout.of(cfg);
        Map<String, DType> typeOf = new LinkedHashMap<>();
        for (ParamLayout.Tensor t : layout.tensors()) {
            DType type = t.decays() ? types.apply(t.name()) : DType.F32;
            long rowLength = t.shape()[t.shape().length - 1];
            if (type != DType.F32 && rowLength % type.blockSize() != 0) type = DType.F32; // rows must be whole blocks
            typeOf.put(t.name(), type);
        }
        // Groups of consecutive tensors stored as one buffer: (first tensor's name → the group's names).
        Map<String, List<String>> groups = new LinkedHashMap<>();
        if (fuse) {
            for (int l = 0; l < cfg.layers(); l++) {
                for (List<String> g : List.of(group(l, QKV), group(l, GATE_UP))) {
                    if (g.stream().map(typeOf::get).distinct().count() == 1) groups.put(g.get(0), g);
                }
            }
        }
        Map<String, Buffer> stored = new LinkedHashMap<>(), roots = new LinkedHashMap<>();
        try {
            for (ParamLayout.Tensor t : layout.tensors()) {
                if (stored.containsKey(t.name())) continue;                 // filled with its group
                List<String> g = groups.get(t.name());
                if (g == null) {
                    Buffer b = backend.allocate(typeOf.get(t.name()), t.size());
                    stored.put(t.name(), b);
                    fill.accept(t.name(), b);
                    continue;
                }
                long total = 0;
                for (String name : g) total += layout.get(name).size();
                Buffer root = backend.allocate(typeOf.get(t.name()), total);
                roots.put(t.name(), root);
                long at = 0;
                for (String name : g) {
                    Buffer b = root.slice(at, layout.get(name).size());
                    at += b.elements();
                    stored.put(name, b);
                    fill.accept(name, b);
                }
            }
        } catch (RuntimeException e) {
            stored.values().forEach(Buffer::close);
            roots.values().forEach(Buffer::close);
            throw e;
        }
        return new Llama(cfg, backend, stored, roots);
    }

    /**
     * Layer l's q, k and v projections as one (q; k; v) matrix of (H·D + 2·KV·D) rows, or null where they are not
     * stored together. Trainable models always have it (a view of the parameters).
     */
    public Buffer fusedQkv(int l) { return w.qkv[l]; }

    /** Layer l's gate and up projections as one (gate; up) matrix of 2·ffn rows, or null. */
    public Buffer fusedGateUp(int l) { return w.gu[l]; }

    private static List<String> group(int layer, List<String> parts) {
        return parts.stream().map(n -> "model.layers." + layer + "." + n).toList();
    }

    /** The group's tensors of layer l as one view of {@code all} (consecutive in {@link ParamLayout}). */
    private Buffer span(Buffer all, int l, List<String> parts) {
        List<String> names = group(l, parts);
        ParamLayout.Tensor first = layout.get(names.get(0));
        long at = first.offset(), total = 0;
        for (String n : names) {
            ParamLayout.Tensor t = layout.get(n);
            if (t.offset() != at) return null;
            at += t.size();
            total += t.size();
        }
        return all.slice(first.offset(), total);
    }

    /** True for models made by {@link #forInference}: they have no gradients and cannot train. */
    public boolean inferenceOnly() { return stored != null; }

    /** The storage type of one tensor. */
    public DType type(String name) { return param(name).type(); }

    /** Bytes of all weights as stored. */
    public long weightBytes() {
        if (stored == null) return params.type().bytes(params.elements());
        long n = 0;
        for (Buffer b : stored.values()) n += b.type().bytes(b.elements());
        return n;
    }

    private void trainable() {
        if (stored != null) throw new IllegalStateException("this model was loaded for inference only (no f32 parameters or gradients)");
    }

    public LlamaConfig config() { return cfg; }

    public Backend backend() { return be; }

    public ParamLayout layout() { return layout; }

    /** All parameters, one buffer in {@link ParamLayout} order. */
    public Buffer params() {
        trainable();
        return params;
    }

    /** All gradients, same layout; accumulate across micro-batches until {@link #zeroGrads}. */
    public Buffer grads() {
        trainable();
        return grads;
    }

    /** One tensor by its HF name (a view of {@link #params()}, or the stored buffer of an inference model). */
    public Buffer param(String name) {
        if (stored != null) {
            Buffer b = stored.get(name);
            if (b == null) throw new IllegalArgumentException("no tensor " + name);
            return b;
        }
        return slice(params, layout.get(name));
    }

    public Buffer grad(String name) {
        trainable();
        return slice(grads, layout.get(name));
    }

    private static Buffer slice(Buffer b, ParamLayout.Tensor t) { return b.slice(t.offset(), t.size()); }

    /** HF initialisation: linear and embedding weights ~ N(0, std), norm weights 1; one stream per tensor. */
    public void initRandom(long seed, double std) {
        trainable();
        try (Arena arena = Arena.ofConfined()) {
            for (int i = 0; i < layout.tensors().size(); i++) {
                ParamLayout.Tensor t = layout.tensors().get(i);
                MemorySegment host = arena.allocate(ValueLayout.JAVA_FLOAT, t.size());
                Rng rng = Rng.keyed(seed, Rng.key("init"), i);
                for (long j = 0; j < t.size(); j++) {
                    float v = t.decays() ? (float) (rng.nextGaussian() * std) : 1f;
                    host.setAtIndex(ValueLayout.JAVA_FLOAT, j, v);
                }
                be.copyIn(slice(params, t), host);
            }
        }
    }

    public void zeroGrads() {
        trainable();
        be.run(new Op.Fill(grads, 0f));
    }

    /** The tensors of one parameter-shaped buffer, sliced by name. */
    private final class Weights {
        final Buffer embed, norm, lmHead;
        final Buffer[] n1, wq, wk, wv, wo, n2, wg, wu, wd;
        /** Per layer, (q; k; v) and (gate; up) as one matrix where the tensors lie so in memory, else null. */
        final Buffer[] qkv, gu;

        Weights(java.util.function.Function<String, Buffer> all, java.util.function.IntFunction<Buffer> qkvOf,
                java.util.function.IntFunction<Buffer> guOf) {
            int L = cfg.layers();
            n1 = new Buffer[L]; wq = new Buffer[L]; wk = new Buffer[L]; wv = new Buffer[L]; wo = new Buffer[L];
            n2 = new Buffer[L]; wg = new Buffer[L]; wu = new Buffer[L]; wd = new Buffer[L];
            qkv = new Buffer[L]; gu = new Buffer[L];
            embed = s(all, "model.embed_tokens.weight");
            for (int l = 0; l < L; l++) {
                String p = "model.layers." + l + ".";
                n1[l] = s(all, p + "input_layernorm.weight");
                wq[l] = s(all, p + "self_attn.q_proj.weight");
                wk[l] = s(all, p + "self_attn.k_proj.weight");
                wv[l] = s(all, p + "self_attn.v_proj.weight");
                wo[l] = s(all, p + "self_attn.o_proj.weight");
                n2[l] = s(all, p + "post_attention_layernorm.weight");
                wg[l] = s(all, p + "mlp.gate_proj.weight");
                wu[l] = s(all, p + "mlp.up_proj.weight");
                wd[l] = s(all, p + "mlp.down_proj.weight");
                qkv[l] = qkvOf.apply(l);
                gu[l] = guOf.apply(l);
            }
            norm = s(all, "model.norm.weight");
            lmHead = cfg.tied() ? embed : s(all, "lm_head.weight");
        }

        private Buffer s(java.util.function.Function<String, Buffer> all, String name) { return all.apply(name); }
    }

    /** Everything the backward pass needs from the forward pass, for one (B,T). Allocated once and reused. */
    private final class Activations implements AutoCloseable {
        final int batch, seq, n;
        final List<Buffer> owned = new ArrayList<>();
        final Buffer ids, targets, positions, losses;
        final Buffer[] res;      // (L+1) × (N,C): residual stream entering each layer, and the final one
        final Buffer[] resMid;   // L × (N,C): after attention, before the MLP
        final Buffer[] ln1, ln2, rstd1, rstd2, q, k, v, att, lse, gate, up, hid;
        final Buffer lnf, rstdf, logits;
        // backward scratch, shared by all layers
        final Buffer dres, dln, datt, dq, dk, dv, dhid, dgate, dup;

        Activations(int batch, int seq) {
            this.batch = batch;
            this.seq = seq;
            this.n = batch * seq;
            int L = cfg.layers(), C = cfg.dim(), F = cfg.ffn(), KV = cfg.kvDim(), H = cfg.heads();
            ids = alloc(DType.I32, n);
            targets = alloc(DType.I32, n);
            positions = alloc(DType.I32, n);
            losses = alloc(DType.F32, n);
            res = new Buffer[L + 1];
            for (int l = 0; l <= L; l++) res[l] = alloc(DType.F32, (long) n * C);
            resMid = f(L, (long) n * C);
            ln1 = f(L, (long) n * C); ln2 = f(L, (long) n * C);
            rstd1 = f(L, n); rstd2 = f(L, n);
            q = f(L, (long) n * C); k = f(L, (long) n * KV); v = f(L, (long) n * KV);
            att = f(L, (long) n * C); lse = f(L, (long) batch * H * seq);
            gate = f(L, (long) n * F); up = f(L, (long) n * F); hid = f(L, (long) n * F);
            lnf = alloc(DType.F32, (long) n * C);
            rstdf = alloc(DType.F32, n);
            logits = alloc(DType.F32, (long) n * cfg.vocab());
            dres = alloc(DType.F32, (long) n * C);
            dln = alloc(DType.F32, (long) n * C);
            datt = alloc(DType.F32, (long) n * C);
            dq = alloc(DType.F32, (long) n * C);
            dk = alloc(DType.F32, (long) n * KV);
            dv = alloc(DType.F32, (long) n * KV);
            dhid = alloc(DType.F32, (long) n * F);
            dgate = alloc(DType.F32, (long) n * F);
            dup = alloc(DType.F32, (long) n * F);
            int[] pos = new int[n];
            for (int i = 0; i < n; i++) pos[i] = i % seq;
            be.copyIn(positions, MemorySegment.ofArray(pos));
        }

        private Buffer alloc(DType t, long count) {
            Buffer b = be.allocate(t, count);
            owned.add(b);
            return b;
        }

        private Buffer[] f(int count, long elements) {
            Buffer[] out = new Buffer[count];
            for (int i = 0; i < count; i++) out[i] = alloc(DType.F32, elements);
            return out;
        }

        @Override
        public void close() { owned.forEach(Buffer::close); }
    }

    private Activations acts(int batch, int seq) {
        if (seq > cfg.context()) throw new IllegalArgumentException("sequence length " + seq + " exceeds the model context " + cfg.context());
        if (acts == null || acts.batch != batch || acts.seq != seq) {
            if (acts != null) acts.close();
            acts = new Activations(batch, seq);
        }
        return acts;
    }

    /** Sum and count of per-token losses from one forward pass. Masked targets (negative) do not count. */
    public record Loss(double sum, int count) {
        public double mean() { return count == 0 ? 0 : sum / count; }
    }

    /**
     * Forward pass over ids (B,T) with next-token targets (B,T). With {@code gradScale > 0} the backward pass
     * follows and adds gradScale · ∂(Σ token losses)/∂θ into {@link #grads()}: pass 1/(tokens in the whole
     * accumulated batch) for the mean loss. With gradScale 0 only the loss is computed.
     */
    public Loss step(int[] ids, int[] targets, int batch, int seq, float gradScale) {
        Activations a = acts(batch, seq);
        if (ids.length != a.n || targets.length != a.n) throw new IllegalArgumentException("ids/targets must hold B*T = " + a.n + " tokens");
        for (int id : ids) checkToken(id);
        int count = 0;
        for (int t : targets) {
            if (t >= cfg.vocab()) checkToken(t);
            if (t >= 0) count++;
        }
        boolean train = gradScale != 0f;
        if (train) trainable();
        be.copyIn(a.ids, MemorySegment.ofArray(ids));
        be.copyIn(a.targets, MemorySegment.ofArray(targets));
        forward(a);
        be.run(new Op.CrossEntropy(a.logits, a.targets, a.losses, train ? a.logits : null, a.n, cfg.vocab(), gradScale));
        if (train) backward(a);
        float[] losses = new float[a.n];
        be.copyOut(a.losses, MemorySegment.ofArray(losses));
        double sum = 0;
        for (float l : losses) sum += l;
        return new Loss(sum, count);
    }

    private void checkToken(int id) {
        if (id < 0 || id >= cfg.vocab()) throw new IllegalArgumentException("token id " + id + " outside the vocabulary of " + cfg.vocab());
    }

    private void forward(Activations a) {
        int n = a.n, C = cfg.dim(), F = cfg.ffn(), KV = cfg.kvDim(), H = cfg.heads(), D = cfg.headDim();
        be.run(new Op.Embedding(a.ids, w.embed, a.res[0], n, C));                               // (N,C)
        for (int l = 0; l < cfg.layers(); l++) {
            Buffer x = a.res[l];
            be.run(new Op.RmsNorm(x, w.n1[l], a.ln1[l], a.rstd1[l], n, C, cfg.normEps()));
            linear(a.ln1[l], w.wq[l], a.q[l], n, C, C);                                          // (N,H·D)
            linear(a.ln1[l], w.wk[l], a.k[l], n, C, KV);                                         // (N,KV·D)
            linear(a.ln1[l], w.wv[l], a.v[l], n, C, KV);
            be.run(new Op.Rope(a.q[l], a.positions, n, H, D, cfg.ropeTheta(), false));
            be.run(new Op.Rope(a.k[l], a.positions, n, cfg.kvHeads(), D, cfg.ropeTheta(), false));
            be.run(new Op.Attention(a.q[l], a.k[l], a.v[l], a.att[l], a.lse[l], a.batch, a.seq, a.seq, H,
                    cfg.kvHeads(), D, 0, (long) a.seq * KV));                                    // (N,H·D)
            linear(a.att[l], w.wo[l], a.dln, n, C, C);                                           // scratch (N,C)
            be.run(new Op.Add(x, a.dln, a.resMid[l], (long) n * C));
            be.run(new Op.RmsNorm(a.resMid[l], w.n2[l], a.ln2[l], a.rstd2[l], n, C, cfg.normEps()));
            linear(a.ln2[l], w.wg[l], a.gate[l], n, C, F);                                       // (N,F)
            linear(a.ln2[l], w.wu[l], a.up[l], n, C, F);
            be.run(new Op.SwiGlu(a.gate[l], a.up[l], a.hid[l], (long) n * F));
            linear(a.hid[l], w.wd[l], a.dln, n, F, C);                                           // (N,C)
            be.run(new Op.Add(a.resMid[l], a.dln, a.res[l + 1], (long) n * C));
        }
        be.run(new Op.RmsNorm(a.res[cfg.layers()], w.norm, a.lnf, a.rstdf, n, C, cfg.normEps()));
        linear(a.lnf, w.lmHead, a.logits, n, C, cfg.vocab());                                    // (N,V)
    }

    /** Mirror of {@link #forward}; expects the gradient of the loss w.r.t. the logits in a.logits. */
    private void backward(Activations a) {
        int n = a.n, C = cfg.dim(), F = cfg.ffn(), KV = cfg.kvDim(), H = cfg.heads(), D = cfg.headDim();
        Buffer dlogits = a.logits;
        linearBackward(dlogits, a.lnf, w.lmHead, g.lmHead, a.dln, n, C, cfg.vocab(), false);
        be.run(new Op.Fill(a.dres, 0f));
        be.run(new Op.RmsNormBackward(a.dln, a.res[cfg.layers()], w.norm, a.rstdf, a.dres, g.norm, n, C));
        for (int l = cfg.layers() - 1; l >= 0; l--) {
            // MLP: res[l+1] = resMid + Wdown·h, so dres flows to resMid unchanged and into the MLP.
            linearBackward(a.dres, a.hid[l], w.wd[l], g.wd[l], a.dhid, n, F, C, false);
            be.run(new Op.SwiGluBackward(a.dhid, a.gate[l], a.up[l], a.dgate, a.dup, (long) n * F));
            linearBackward(a.dgate, a.ln2[l], w.wg[l], g.wg[l], a.dln, n, C, F, false);
            linearBackward(a.dup, a.ln2[l], w.wu[l], g.wu[l], a.dln, n, C, F, true);
            be.run(new Op.RmsNormBackward(a.dln, a.resMid[l], w.n2[l], a.rstd2[l], a.dres, g.n2[l], n, C));
            // Attention: resMid = res[l] + Wo·att.
            linearBackward(a.dres, a.att[l], w.wo[l], g.wo[l], a.datt, n, C, C, false);
            be.run(new Op.AttentionBackward(a.datt, a.q[l], a.k[l], a.v[l], a.att[l], a.lse[l], a.dq, a.dk, a.dv,
                    a.batch, a.seq, H, cfg.kvHeads(), D));
            be.run(new Op.Rope(a.dq, a.positions, n, H, D, cfg.ropeTheta(), true));
            be.run(new Op.Rope(a.dk, a.positions, n, cfg.kvHeads(), D, cfg.ropeTheta(), true));
            linearBackward(a.dq, a.ln1[l], w.wq[l], g.wq[l], a.dln, n, C, C, false);
            linearBackward(a.dk, a.ln1[l], w.wk[l], g.wk[l], a.dln, n, C, KV, true);
            linearBackward(a.dv, a.ln1[l], w.wv[l], g.wv[l], a.dln, n, C, KV, true);
            be.run(new Op.RmsNormBackward(a.dln, a.res[l], w.n1[l], a.rstd1[l], a.dres, g.n1[l], n, C));
        }
        be.run(new Op.EmbeddingBackward(a.ids, a.dres, g.embed, n, C));
    }

    /** y(N,out) = x(N,in) · Wᵀ with W (out,in). */
    private void linear(Buffer x, Buffer weight, Buffer y, int n, int in, int out) {
        be.run(new Op.MatMul(x, weight, y, n, out, in, false, true, false));
    }

    /** dx(N,in) (+)= dy(N,out) · W and dW(out,in) += dyᵀ · x. */
    private void linearBackward(Buffer dy, Buffer x, Buffer weight, Buffer dWeight, Buffer dx, int n, int in, int out,
                                boolean accumulateDx) {
        be.run(new Op.MatMul(dy, weight, dx, n, in, out, false, false, accumulateDx));
        be.run(new Op.MatMul(dy, x, dWeight, out, in, n, true, false, true));
    }

    // ------------------------------------------------------------------ inspection (tests, parity tools)

    /** Residual stream after layer l (l = -1: the embedding output) from the last forward pass, (B,T,C). */
    public float[] residual(int layer) { return read(acts.res[layer + 1]); }

    public float[] finalNorm() { return read(acts.lnf); }

    /** Logits of the last forward pass; after a training step they hold the logit gradients instead. */
    public float[] logits() { return read(acts.logits); }

    public float[] read(Buffer b) {
        float[] out = new float[Math.toIntExact(b.elements())];
        be.copyOut(b, MemorySegment.ofArray(out));
        return out;
    }

    // ------------------------------------------------------------------ cached inference

    /**
     * A key/value cache for one sequence: per layer (capacity, KV·D) rows of keys and values (keys stored after
     * rope). Inference runs the same ops as training, one chunk of new tokens at a time.
     *
     * <p>The cache is F32 (exact: the training forward's attention, {@link Op.Attention}) or F16 (half the memory
     * and half the attention's reads, llama.cpp's default: new keys and values are rounded to F16 as they are
     * stored, and attention is {@link Op.PagedAttention} over the cache as one page, as the serving engine's
     * {@link BatchDecoder} computes it with an F16 cache).
     */
    public final class Session implements AutoCloseable {
        private final int capacity, chunk;
        private final DType kvType;
        private final Buffer[] kc, vc;
        private final Buffer ids, positions, x, ln, q, att, tmp, resMid, gate, up, hid, logits;
        /** F16 cache only: this chunk's keys and values in F32, the page table (one page) and each row's key count. */
        private final Buffer kNew, vNew, pageTable, lengths;
        /** One-token steps: the (q; k; v) and (gate; up) products of the fused matrices. */
        private final Buffer qkvOut, guOut;
        private final List<Buffer> owned = new ArrayList<>();
        private int length;

        private Session(int capacity, int chunk, DType kvType) {
            this.capacity = capacity;
            this.chunk = chunk;
            this.kvType = kvType;
            int L = cfg.layers(), C = cfg.dim(), F = cfg.ffn(), KV = cfg.kvDim();
            kc = new Buffer[L];
            vc = new Buffer[L];
            for (int l = 0; l < L; l++) {
                kc[l] = alloc(kvType, (long) capacity * KV);
                vc[l] = alloc(kvType, (long) capacity * KV);
            }
            boolean half = kvType == DType.F16;
            kNew = half ? alloc(DType.F32, (long) chunk * KV) : null;
            vNew = half ? alloc(DType.F32, (long) chunk * KV) : null;
            pageTable = half ? alloc(DType.I32, chunk) : null;            // every row: page 0, the whole cache
            lengths = half ? alloc(DType.I32, chunk) : null;
            if (half) be.copyIn(pageTable, MemorySegment.ofArray(new int[chunk]));
            qkvOut = alloc(DType.F32, C + 2L * KV);
            guOut = alloc(DType.F32, 2L * F);
            ids = alloc(DType.I32, chunk);
            positions = alloc(DType.I32, chunk);
            x = alloc(DType.F32, (long) chunk * C);
            ln = alloc(DType.F32, (long) chunk * C);
            q = alloc(DType.F32, (long) chunk * C);
            att = alloc(DType.F32, (long) chunk * C);
            tmp = alloc(DType.F32, (long) chunk * C);
            resMid = alloc(DType.F32, (long) chunk * C);
            gate = alloc(DType.F32, (long) chunk * F);
            up = alloc(DType.F32, (long) chunk * F);
            hid = alloc(DType.F32, (long) chunk * F);
            logits = alloc(DType.F32, cfg.vocab()); // only the last position's logits are computed
        }

        private Buffer alloc(DType t, long count) {
            Buffer b = be.allocate(t, count);
            owned.add(b);
            return b;
        }

        /** Tokens already in the cache. */
        public int length() { return length; }

        public int capacity() { return capacity; }

        /** Forgets everything after the first {@code keep} tokens (the cache rows are simply overwritten later). */
        public void truncate(int keep) {
            if (keep < 0 || keep > length) throw new IllegalArgumentException("cannot keep " + keep + " of " + length);
            length = keep;
        }

        /**
         * Appends tokens to the sequence and returns the logits (V) after the last one. Long inputs run in chunks.
         */
        public float[] append(int[] tokens) {
            if (tokens.length == 0) throw new IllegalArgumentException("no tokens to append");
            if (length + tokens.length > capacity) {
                throw new IllegalArgumentException("sequence of " + (length + tokens.length) + " tokens exceeds the context of " + capacity);
            }
            for (int t : tokens) checkToken(t);
            float[] last = null;
            for (int start = 0; start < tokens.length; start += chunk) {
                int m = Math.min(chunk, tokens.length - start);
                int[] part = java.util.Arrays.copyOfRange(tokens, start, start + m);
                last = run(part, start + m == tokens.length);
            }
            return last;
        }

        private float[] run(int[] tokens, boolean wantLogits) {
            int m = tokens.length, C = cfg.dim(), F = cfg.ffn(), KV = cfg.kvDim(), H = cfg.heads(), D = cfg.headDim();
            int[] pos = new int[m];
            for (int i = 0; i < m; i++) pos[i] = length + i;
            Buffer idsM = ids.slice(0, m), posM = positions.slice(0, m);
            be.copyIn(idsM, MemorySegment.ofArray(tokens));
            be.copyIn(posM, MemorySegment.ofArray(pos));
            Buffer xm = x.slice(0, (long) m * C), lnm = ln.slice(0, (long) m * C), qm = q.slice(0, (long) m * C);
            Buffer attm = att.slice(0, (long) m * C), tmpm = tmp.slice(0, (long) m * C), mid = resMid.slice(0, (long) m * C);
            Buffer gm = gate.slice(0, (long) m * F), um = up.slice(0, (long) m * F), hm = hid.slice(0, (long) m * F);
            boolean half = kvType == DType.F16;
            Buffer lenM = null;
            if (half) {
                int[] len = new int[m];
                for (int i = 0; i < m; i++) len[i] = length + i + 1;                      // causal
                lenM = lengths.slice(0, m);
                be.copyIn(lenM, MemorySegment.ofArray(len));
            }
            be.run(new Op.Embedding(idsM, w.embed, xm, m, C));
            for (int l = 0; l < cfg.layers(); l++) {
                Buffer kRows = kc[l].slice((long) length * KV, (long) m * KV), vRows = vc[l].slice((long) length * KV, (long) m * KV);
                // F32: projected straight into the cache. F16: projected in F32, rounded as they are copied in.
                // One token: q, k and v from one matmul on the fused matrix, where the model has one.
                boolean fused = m == 1 && w.qkv[l] != null;
                Buffer qIn = fused ? qkvOut.slice(0, C) : qm;
                Buffer kOut = fused ? qkvOut.slice(C, KV) : half ? kNew.slice(0, (long) m * KV) : kRows;
                Buffer vOut = fused ? qkvOut.slice(C + KV, KV) : half ? vNew.slice(0, (long) m * KV) : vRows;
                be.run(new Op.RmsNorm(xm, w.n1[l], lnm, null, m, C, cfg.normEps()));
                if (fused) {
                    linear(lnm, w.qkv[l], qkvOut, 1, C, C + 2 * KV);
                } else {
                    linear(lnm, w.wq[l], qm, m, C, C);
                    linear(lnm, w.wk[l], kOut, m, C, KV);
                    linear(lnm, w.wv[l], vOut, m, C, KV);
                }
                be.run(new Op.Rope(qIn, posM, m, H, D, cfg.ropeTheta(), false));
                be.run(new Op.Rope(kOut, posM, m, cfg.kvHeads(), D, cfg.ropeTheta(), false));
                int tk = length + m;
                if (half || fused) {
                    be.run(new Op.Copy(kOut, kRows));
                    be.run(new Op.Copy(vOut, vRows));
                }
                if (half) {
                    be.run(new Op.PagedAttention(qIn, kc[l], vc[l], pageTable.slice(0, m), lenM, attm, m, H, cfg.kvHeads(), D, capacity, 1));
                } else {
                    be.run(new Op.Attention(qIn, kc[l].slice(0, (long) tk * KV), vc[l].slice(0, (long) tk * KV), attm, null,
                            1, m, tk, H, cfg.kvHeads(), D, length, (long) tk * KV));
                }
                linear(attm, w.wo[l], tmpm, m, C, C);
                be.run(new Op.Add(xm, tmpm, mid, (long) m * C));
                be.run(new Op.RmsNorm(mid, w.n2[l], lnm, null, m, C, cfg.normEps()));
                if (m == 1 && w.gu[l] != null) {
                    linear(lnm, w.gu[l], guOut, 1, C, 2 * F);
                    be.run(new Op.SwiGlu(guOut.slice(0, F), guOut.slice(F, F), hm, F));
                } else {
                    linear(lnm, w.wg[l], gm, m, C, F);
                    linear(lnm, w.wu[l], um, m, C, F);
                    be.run(new Op.SwiGlu(gm, um, hm, (long) m * F));
                }
                linear(hm, w.wd[l], tmpm, m, F, C);
                be.run(new Op.Add(mid, tmpm, xm, (long) m * C));
            }
            length += m;
            if (!wantLogits) return null;
            // Only the last position's logits are needed to continue the sequence.
            Buffer lastX = xm.slice((long) (m - 1) * C, C), lastLn = lnm.slice(0, C), out = logits.slice(0, cfg.vocab());
            be.run(new Op.RmsNorm(lastX, w.norm, lastLn, null, 1, C, cfg.normEps()));
            linear(lastLn, w.lmHead, out, 1, C, cfg.vocab());
            return read(out);
        }

        @Override
        public void close() { owned.forEach(Buffer::close); }
    }

    /**
     * A fresh inference session holding up to {@code capacity} tokens, prefilling at most {@code chunk} at a time,
     * with an F32 cache (exact).
     */
    public Session session(int capacity, int chunk) {
        return session(capacity, chunk, DType.F32);
    }

    /** {@link #session(int, int)} with the cache in {@code kvType}: F32 (exact) or F16 (see {@link Session}). */
    public Session session(int capacity, int chunk, DType kvType) {
        if (capacity <= 0 || capacity > cfg.context()) {
            throw new IllegalArgumentException("session capacity " + capacity + " must be in 1.." + cfg.context());
        }
        if (kvType != DType.F32 && kvType != DType.F16) throw new IllegalArgumentException("KV cache type must be F32 or F16, got " + kvType);
        return new Session(capacity, Math.max(1, Math.min(chunk, capacity)), kvType);
    }

    @Override
    public void close() {
        if (acts != null) acts.close();
        if (stored != null) {
            stored.values().forEach(Buffer::close);
            fusedRoots.values().forEach(Buffer::close);
        } else {
            params.close();
            grads.close();
        }
    }
}
