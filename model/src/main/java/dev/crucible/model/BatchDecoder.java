package dev.crucible.model;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.List;

/**
 * Cached inference for many sequences at once, over the same weights and ops as {@link Llama} (no second copy of
 * the math: the layer is the one in {@code Llama.Session}, with the row dimension spread over sequences).
 *
 * <p>The KV cache is a pool of {@code slots} fixed-size slots: per layer one keys buffer and one values buffer of
 * (slots, capacity, KV·D) floats, keys stored after rope. A sequence {@link #acquire()}s a slot, {@link #prefill}s its
 * prompt (chunked, one sequence at a time), then joins {@link #decode} steps: one new token for each of N sequences,
 * where every matmul runs over all N rows at once (weights are read once per step, which is what makes batching
 * pay on a memory-bound decode) and attention runs per row against that row's own slot. Releasing a slot makes it
 * available to the next sequence immediately; its rows are simply overwritten.
 *
 * <p>Not thread-safe: one scheduler thread drives it.
 */
public final class BatchDecoder implements AutoCloseable {
    private final Llama model;
    private final LlamaConfig cfg;
    private final Backend be;
    private final int slots, capacity, rows;
    private final Buffer embed, norm, lmHead;
    private final Buffer[] n1, wq, wk, wv, wo, n2, wg, wu, wd;
    private final Buffer[] kc, vc;                                   // L × (slots, capacity, KV)
    private final Buffer ids, positions, x, ln, q, kNew, vNew, att, tmp, mid, gate, up, hid, logits;
    private final List<Buffer> owned = new ArrayList<>();
    private final int[] length;
    private final boolean[] used;
    private final Deque<Integer> free = new ArrayDeque<>();

    /**
     * @param slots    sequences that can hold a cache at once
     * @param capacity tokens per sequence (at most the model context)
     * @param rows     most rows in one forward: the decode batch size and the prefill chunk
     */
    public BatchDecoder(Llama model, int slots, int capacity, int rows) {
        this.model = model;
        this.cfg = model.config();
        this.be = model.backend();
        if (slots <= 0) throw new IllegalArgumentException("slots must be positive, got " + slots);
        if (capacity <= 0 || capacity > cfg.context()) throw new IllegalArgumentException("capacity " + capacity + " must be in 1.." + cfg.context());
        if (rows <= 0) throw new IllegalArgumentException("rows must be positive, got " + rows);
        this.slots = slots;
        this.capacity = capacity;
        this.rows = rows;
        int L = cfg.layers(), C = cfg.dim(), F = cfg.ffn(), KV = cfg.kvDim();
        embed = model.param("model.embed_tokens.weight");
        norm = model.param("model.norm.weight");
        lmHead = cfg.tied() ? embed : model.param("lm_head.weight");
        n1 = new Buffer[L]; wq = new Buffer[L]; wk = new Buffer[L]; wv = new Buffer[L]; wo = new Buffer[L];
        n2 = new Buffer[L]; wg = new Buffer[L]; wu = new Buffer[L]; wd = new Buffer[L];
        kc = new Buffer[L]; vc = new Buffer[L];
        for (int l = 0; l < L; l++) {
            String p = "model.layers." + l + ".";
            n1[l] = model.param(p + "input_layernorm.weight");
            wq[l] = model.param(p + "self_attn.q_proj.weight");
            wk[l] = model.param(p + "self_attn.k_proj.weight");
            wv[l] = model.param(p + "self_attn.v_proj.weight");
            wo[l] = model.param(p + "self_attn.o_proj.weight");
            n2[l] = model.param(p + "post_attention_layernorm.weight");
            wg[l] = model.param(p + "mlp.gate_proj.weight");
            wu[l] = model.param(p + "mlp.up_proj.weight");
            wd[l] = model.param(p + "mlp.down_proj.weight");
            kc[l] = alloc(DType.F32, (long) slots * capacity * KV);
            vc[l] = alloc(DType.F32, (long) slots * capacity * KV);
        }
        ids = alloc(DType.I32, rows);
        positions = alloc(DType.I32, rows);
        x = alloc(DType.F32, (long) rows * C);
        ln = alloc(DType.F32, (long) rows * C);
        q = alloc(DType.F32, (long) rows * C);
        kNew = alloc(DType.F32, (long) rows * KV);
        vNew = alloc(DType.F32, (long) rows * KV);
        att = alloc(DType.F32, (long) rows * C);
        tmp = alloc(DType.F32, (long) rows * C);
        mid = alloc(DType.F32, (long) rows * C);
        gate = alloc(DType.F32, (long) rows * F);
        up = alloc(DType.F32, (long) rows * F);
        hid = alloc(DType.F32, (long) rows * F);
        logits = alloc(DType.F32, (long) rows * cfg.vocab());
        length = new int[slots];
        used = new boolean[slots];
        for (int s = 0; s < slots; s++) free.add(s);
    }

    private Buffer alloc(DType t, long count) {
        Buffer b = be.allocate(t, count);
        owned.add(b);
        return b;
    }

    public LlamaConfig config() { return cfg; }

    public int slots() { return slots; }

    public int capacity() { return capacity; }

    /** Most sequences in one {@link #decode} call. */
    public int maxBatch() { return rows; }

    public int freeSlots() { return free.size(); }

    /** Tokens held by all slots together (for a KV-cache use gauge). */
    public long cachedTokens() {
        long n = 0;
        for (int s = 0; s < slots; s++) if (used[s]) n += length[s];
        return n;
    }

    /** Bytes of the KV pool. */
    public long cacheBytes() { return 2L * cfg.layers() * slots * capacity * cfg.kvDim() * 4; }

    /** A free slot, emptied, or -1 when all are in use. */
    public int acquire() {
        Integer s = free.poll();
        if (s == null) return -1;
        used[s] = true;
        length[s] = 0;
        return s;
    }

    public void release(int slot) {
        check(slot);
        used[slot] = false;
        length[slot] = 0;
        free.add(slot);
    }

    public int length(int slot) {
        check(slot);
        return length[slot];
    }

    private void check(int slot) {
        if (slot < 0 || slot >= slots || !used[slot]) throw new IllegalArgumentException("slot " + slot + " is not in use");
    }

    /**
     * Appends tokens to one slot's sequence. Returns the logits (V) after the last token, or with {@code allLogits}
     * the logits after every appended token ((n, V) as n rows): row i predicts token i+1 (prompt scoring).
     */
    public float[][] prefill(int slot, int[] tokens, boolean allLogits) {
        check(slot);
        if (tokens.length == 0) throw new IllegalArgumentException("no tokens to prefill");
        if (length[slot] + tokens.length > capacity) {
            throw new IllegalArgumentException("sequence of " + (length[slot] + tokens.length) + " tokens exceeds the context of " + capacity);
        }
        for (int t : tokens) checkToken(t);
        float[][] out = new float[allLogits ? tokens.length : 1][];
        for (int start = 0; start < tokens.length; start += rows) {
            int m = Math.min(rows, tokens.length - start);
            int[] part = Arrays.copyOfRange(tokens, start, start + m);
            int[] slotOf = new int[m], pos = new int[m];
            Arrays.fill(slotOf, slot);
            for (int i = 0; i < m; i++) pos[i] = length[slot] + i;
            boolean last = start + m == tokens.length;
            forward(part, pos, slotOf, true);
            length[slot] += m;
            if (allLogits) {
                float[][] r = head(0, m);
                System.arraycopy(r, 0, out, start, m);
            } else if (last) {
                out[0] = head(m - 1, 1)[0];
            }
        }
        return out;
    }

    /**
     * One decode step: appends tokens[i] to the sequence in slots[i] (distinct slots) and returns each row's logits
     * (V) after it.
     */
    public float[][] decode(int[] slotIds, int[] tokens) {
        int n = slotIds.length;
        if (n == 0 || n > rows || tokens.length != n) throw new IllegalArgumentException("decode takes 1.." + rows + " slots with one token each");
        int[] pos = new int[n];
        boolean[] seen = new boolean[slots];
        for (int i = 0; i < n; i++) {
            check(slotIds[i]);
            if (seen[slotIds[i]]) throw new IllegalArgumentException("slot " + slotIds[i] + " appears twice in one step");
            seen[slotIds[i]] = true;
            checkToken(tokens[i]);
            if (length[slotIds[i]] >= capacity) throw new IllegalArgumentException("slot " + slotIds[i] + " is full (" + capacity + " tokens)");
            pos[i] = length[slotIds[i]];
        }
        forward(tokens, pos, slotIds, false);
        for (int s : slotIds) length[s]++;
        return head(0, n);
    }

    private void checkToken(int id) {
        if (id < 0 || id >= cfg.vocab()) throw new IllegalArgumentException("token id " + id + " outside the vocabulary of " + cfg.vocab());
    }

    /**
     * The decoder layers over m rows; row i is token tokens[i] at position pos[i] of the sequence in slot slotOf[i].
     * In a prefill (one slot, consecutive positions) attention runs once over the chunk; in a decode once per row.
     */
    private void forward(int[] tokens, int[] pos, int[] slotOf, boolean prefill) {
        int m = tokens.length, C = cfg.dim(), F = cfg.ffn(), KV = cfg.kvDim(), H = cfg.heads(), D = cfg.headDim();
        Buffer idsM = ids.slice(0, m), posM = positions.slice(0, m);
        be.copyIn(idsM, MemorySegment.ofArray(tokens));
        be.copyIn(posM, MemorySegment.ofArray(pos));
        Buffer xm = x.slice(0, (long) m * C), lnm = ln.slice(0, (long) m * C), qm = q.slice(0, (long) m * C);
        Buffer km = kNew.slice(0, (long) m * KV), vm = vNew.slice(0, (long) m * KV);
        Buffer attm = att.slice(0, (long) m * C), tmpm = tmp.slice(0, (long) m * C), midm = mid.slice(0, (long) m * C);
        Buffer gm = gate.slice(0, (long) m * F), um = up.slice(0, (long) m * F), hm = hid.slice(0, (long) m * F);
        be.run(new Op.Embedding(idsM, embed, xm, m, C));                                         // (m,C)
        for (int l = 0; l < cfg.layers(); l++) {
            be.run(new Op.RmsNorm(xm, n1[l], lnm, null, m, C, cfg.normEps()));
            linear(lnm, wq[l], qm, m, C, C);                                                     // (m,H·D)
            linear(lnm, wk[l], km, m, C, KV);                                                    // (m,KV·D)
            linear(lnm, wv[l], vm, m, C, KV);
            be.run(new Op.Rope(qm, posM, m, H, D, cfg.ropeTheta(), false));
            be.run(new Op.Rope(km, posM, m, cfg.kvHeads(), D, cfg.ropeTheta(), false));
            if (prefill) {
                long base = (long) slotOf[0] * capacity * KV;
                int p0 = pos[0], tk = p0 + m;
                be.run(new Op.Copy(km, kc[l].slice(base + (long) p0 * KV, (long) m * KV)));
                be.run(new Op.Copy(vm, vc[l].slice(base + (long) p0 * KV, (long) m * KV)));
                be.run(new Op.Attention(qm, kc[l].slice(base, (long) tk * KV), vc[l].slice(base, (long) tk * KV), attm, null,
                        1, m, tk, H, cfg.kvHeads(), D, p0, (long) tk * KV));
            } else {
                for (int i = 0; i < m; i++) {
                    long base = (long) slotOf[i] * capacity * KV;
                    int tk = pos[i] + 1;
                    be.run(new Op.Copy(km.slice((long) i * KV, KV), kc[l].slice(base + (long) pos[i] * KV, KV)));
                    be.run(new Op.Copy(vm.slice((long) i * KV, KV), vc[l].slice(base + (long) pos[i] * KV, KV)));
                    be.run(new Op.Attention(qm.slice((long) i * C, C), kc[l].slice(base, (long) tk * KV),
                            vc[l].slice(base, (long) tk * KV), attm.slice((long) i * C, C), null,
                            1, 1, tk, H, cfg.kvHeads(), D, pos[i], (long) tk * KV));
                }
            }
            linear(attm, wo[l], tmpm, m, C, C);
            be.run(new Op.Add(xm, tmpm, midm, (long) m * C));
            be.run(new Op.RmsNorm(midm, n2[l], lnm, null, m, C, cfg.normEps()));
            linear(lnm, wg[l], gm, m, C, F);                                                     // (m,F)
            linear(lnm, wu[l], um, m, C, F);
            be.run(new Op.SwiGlu(gm, um, hm, (long) m * F));
            linear(hm, wd[l], tmpm, m, F, C);                                                    // (m,C)
            be.run(new Op.Add(midm, tmpm, xm, (long) m * C));
        }
    }

    /** Final norm and LM head over rows [first, first+n) of the last forward; returns n rows of V logits. */
    private float[][] head(int first, int n) {
        int C = cfg.dim(), V = cfg.vocab();
        Buffer xs = x.slice((long) first * C, (long) n * C), lns = ln.slice(0, (long) n * C), out = logits.slice(0, (long) n * V);
        be.run(new Op.RmsNorm(xs, norm, lns, null, n, C, cfg.normEps()));
        linear(lns, lmHead, out, n, C, V);                                                       // (n,V)
        float[] all = model.read(out);
        float[][] r = new float[n][];
        for (int i = 0; i < n; i++) r[i] = Arrays.copyOfRange(all, i * V, (i + 1) * V);
        return r;
    }

    /** y(N,out) = x(N,in) · Wᵀ with W (out,in). */
    private void linear(Buffer in, Buffer weight, Buffer y, int n, int k, int out) {
        be.run(new Op.MatMul(in, weight, y, n, out, k, false, true, false));
    }

    @Override
    public void close() { owned.forEach(Buffer::close); }
}
