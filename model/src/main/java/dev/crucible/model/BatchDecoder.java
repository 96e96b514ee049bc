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
 * <p><b>Paged KV cache</b> (vLLM's PagedAttention). Keys (after rope) and values live in one pool per layer of
 * {@code pages} pages of {@code pageSize} tokens: (pages, pageSize, KV·D) values each for K and V, F32 or F16 (the
 * {@linkplain #kvType() KV type}: F16 halves the memory and the attention's traffic; new rows are rounded to the
 * nearest half as they are written, attention widens them exactly and computes in F32). A sequence owns a
 * page table, the list of its pages in token order; token t sits in row t % pageSize of page table[t / pageSize].
 * Appending tokens takes pages from a free list one page at a time as a sequence grows, and {@link #release} returns
 * them all. So memory holds the tokens actually cached (rounded up to a page per sequence), not sequences × the
 * longest context: with the same memory, many more short sequences fit than fixed slots would allow.
 *
 * <p>A sequence {@link #acquire}s an id, {@link #prefill}s its prompt (in chunks of at most {@code rows} tokens),
 * then joins {@link #decode} steps: one new token for each of N sequences, where every matmul runs over all N rows
 * at once (weights are read once per step, which is what makes batching pay on a memory-bound decode), and one
 * {@link Op.PagedAttention} serves every row, each against its own page table and length.
 *
 * <p>An append that needs more pages than are free fails with {@link OutOfPagesException} before anything changes:
 * no page is taken and no cache row written, so the caller can release or refuse sequences and carry on. Deciding
 * who gets pages (admission, reservation, preemption) is the scheduler's business; this class only counts.
 *
 * <p>Not thread-safe: one scheduler thread drives it.
 */
public final class BatchDecoder implements AutoCloseable {
    /** Tokens per page unless the caller says otherwise: vLLM's default block size. */
    public static final int DEFAULT_PAGE_SIZE = 16;

    /** An append needs more free pages than the pool has; nothing was changed. */
    public static final class OutOfPagesException extends IllegalStateException {
        private final int needed, free;

        OutOfPagesException(int needed, int free, String what) {
            super("KV cache full: " + what + " needs " + needed + " more page" + (needed == 1 ? "" : "s") + ", " + free + " free");
            this.needed = needed;
            this.free = free;
        }

        public int needed() { return needed; }

        public int free() { return free; }
    }

    private final Llama model;
    private final LlamaConfig cfg;
    private final Backend be;
    private final int maxSequences, pages, pageSize, maxLength, maxPages, rows;
    private final Buffer embed, norm, lmHead;
    private final Buffer[] n1, wq, wk, wv, wo, n2, wg, wu, wd;
    /** Per layer, (q; k; v) and (gate; up) as one matrix (Llama.fusedQkv), or null: one-row steps use them. */
    private final Buffer[] qkv, gu;
    private final DType kvType;                                      // F32 or F16
    private final Buffer[] kPool, vPool;                             // L × (pages, pageSize, KV·D) of kvType
    private final Buffer pageTable, lengths;                         // (rows, maxPages) I32, (rows) I32
    private final Buffer ids, positions, x, ln, q, kNew, vNew, att, tmp, mid, gate, up, hid, logits, qkvOut, guOut;
    private final List<Buffer> owned = new ArrayList<>();
    // Host-side bookkeeping, per sequence id: its pages in token order (table[s][0 … pageCount[s]-1], the rest −1).
    private final int[][] table;
    private final int[] pageCount, length;
    private final boolean[] used;
    private final Deque<Integer> freeIds = new ArrayDeque<>();
    private final int[] freePages;                                   // a stack: freePages[0 … freeTop-1]
    private int freeTop;

    /**
     * A pool of {@code pages} pages; a sequence may grow to the model context or the whole pool, whichever is less.
     *
     * @see #BatchDecoder(Llama, int, int, int, int, int)
     */
    public BatchDecoder(Llama model, int maxSequences, int pages, int pageSize, int rows) {
        this(model, maxSequences, pages, pageSize, (int) Math.min(model.config().context(), (long) pages * pageSize), rows);
    }

    /**
     * @param maxSequences sequences that can hold a cache at once (ids 0 … maxSequences-1)
     * @param pages        pages in the pool, shared by all sequences
     * @param pageSize     tokens per page
     * @param maxLength    most tokens one sequence may hold: at most the model context and the pool's tokens
     * @param rows         most rows in one forward: the decode batch size and the prefill chunk
     */
    public BatchDecoder(Llama model, int maxSequences, int pages, int pageSize, int maxLength, int rows) {
        this(model, maxSequences, pages, pageSize, maxLength, rows, DType.F32);
    }

    /**
     * As {@link #BatchDecoder(Llama, int, int, int, int, int)}, with the cache in {@code kvType}: F32 (exact) or F16
     * (half the memory: twice the tokens in the same bytes).
     */
    public BatchDecoder(Llama model, int maxSequences, int pages, int pageSize, int maxLength, int rows, DType kvType) {
        if (kvType != DType.F32 && kvType != DType.F16) throw new IllegalArgumentException("KV cache type must be F32 or F16, got " + kvType);
        this.kvType = kvType;
        this.model = model;
        this.cfg = model.config();
        this.be = model.backend();
        if (maxSequences <= 0) throw new IllegalArgumentException("maxSequences must be positive, got " + maxSequences);
        if (pages <= 0 || pageSize <= 0) throw new IllegalArgumentException("pages and pageSize must be positive, got " + pages + ", " + pageSize);
        if (maxLength <= 0 || maxLength > cfg.context()) throw new IllegalArgumentException("maxLength " + maxLength + " must be in 1.." + cfg.context());
        if (maxLength > (long) pages * pageSize) {
            throw new IllegalArgumentException("a pool of " + pages + " pages of " + pageSize + " tokens cannot hold one sequence of " + maxLength);
        }
        if (rows <= 0) throw new IllegalArgumentException("rows must be positive, got " + rows);
        this.maxSequences = maxSequences;
        this.pages = pages;
        this.pageSize = pageSize;
        this.maxLength = maxLength;
        this.maxPages = pagesFor(maxLength);
        this.rows = rows;
        int L = cfg.layers(), C = cfg.dim(), F = cfg.ffn(), KV = cfg.kvDim();
        embed = model.param("model.embed_tokens.weight");
        norm = model.param("model.norm.weight");
        lmHead = cfg.tied() ? embed : model.param("lm_head.weight");
        n1 = new Buffer[L]; wq = new Buffer[L]; wk = new Buffer[L]; wv = new Buffer[L]; wo = new Buffer[L];
        n2 = new Buffer[L]; wg = new Buffer[L]; wu = new Buffer[L]; wd = new Buffer[L];
        kPool = new Buffer[L]; vPool = new Buffer[L];
        qkv = new Buffer[L]; gu = new Buffer[L];
        for (int l = 0; l < L; l++) {
            qkv[l] = model.fusedQkv(l);
            gu[l] = model.fusedGateUp(l);
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
            kPool[l] = alloc(kvType, (long) pages * pageSize * KV);
            vPool[l] = alloc(kvType, (long) pages * pageSize * KV);
        }
        pageTable = alloc(DType.I32, (long) rows * maxPages);
        lengths = alloc(DType.I32, rows);
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
        qkvOut = alloc(DType.F32, C + 2L * KV);
        guOut = alloc(DType.F32, 2L * F);
        table = new int[maxSequences][maxPages];
        for (int[] t : table) Arrays.fill(t, -1);
        pageCount = new int[maxSequences];
        length = new int[maxSequences];
        used = new boolean[maxSequences];
        for (int s = 0; s < maxSequences; s++) freeIds.add(s);
        freePages = new int[pages];
        for (int i = 0; i < pages; i++) freePages[i] = pages - 1 - i;    // page 0 on top: handed out first
        freeTop = pages;
    }

    private Buffer alloc(DType t, long count) {
        Buffer b = be.allocate(t, count);
        owned.add(b);
        return b;
    }

    public LlamaConfig config() { return cfg; }

    /** Sequences that can hold a cache at once. */
    public int maxSequences() { return maxSequences; }

    /** Sequence ids not in use. */
    public int freeSequences() { return freeIds.size(); }

    /** Most tokens one sequence can hold (prompt + completion). */
    public int maxLength() { return maxLength; }

    /** Most sequences in one {@link #decode} call, and the prefill chunk. */
    public int maxBatch() { return rows; }

    public int pageSize() { return pageSize; }

    /** Pages in the pool. */
    public int pages() { return pages; }

    public int freePages() { return freeTop; }

    public int usedPages() { return pages - freeTop; }

    /** Pages that hold {@code tokens} tokens of one sequence. */
    public int pagesFor(long tokens) { return pagesFor(tokens, pageSize); }

    /** Pages of {@code pageSize} tokens that hold {@code tokens} tokens (to size a pool from a token budget). */
    public static int pagesFor(long tokens, int pageSize) { return Math.toIntExact((tokens + pageSize - 1) / pageSize); }

    /** Tokens held by all sequences together (for a KV-cache gauge). */
    public long cachedTokens() {
        long n = 0;
        for (int s = 0; s < maxSequences; s++) if (used[s]) n += length[s];
        return n;
    }

    /** The type of the cached keys and values: F32 or F16. */
    public DType kvType() { return kvType; }

    /** Bytes of the KV pool (keys and values, every layer). */
    public long cacheBytes() { return kvType.bytes(2L * cfg.layers() * pages * pageSize * cfg.kvDim()); }

    /** A free sequence id, with an empty cache, or -1 when all are in use. */
    public int acquire() {
        Integer s = freeIds.poll();
        if (s == null) return -1;
        used[s] = true;
        length[s] = 0;
        return s;
    }

    /** Ends a sequence: its pages go back to the free list and its id may be acquired again. */
    public void release(int seq) {
        check(seq);
        for (int i = pageCount[seq] - 1; i >= 0; i--) {
            freePages[freeTop++] = table[seq][i];
            table[seq][i] = -1;
        }
        pageCount[seq] = 0;
        used[seq] = false;
        length[seq] = 0;
        freeIds.add(seq);
    }

    /** Tokens in the sequence's cache. */
    public int length(int seq) {
        check(seq);
        return length[seq];
    }

    /** The sequence's pages, in token order (for tests and diagnostics). */
    public int[] pageTable(int seq) {
        check(seq);
        return Arrays.copyOf(table[seq], pageCount[seq]);
    }

    private void check(int seq) {
        if (seq < 0 || seq >= maxSequences || !used[seq]) throw new IllegalArgumentException("sequence " + seq + " is not in use");
    }

    /**
     * Runs throwaway sequences through the serving path until {@code budget} has passed or {@code maxRounds} rounds
     * are done, so that the JIT has compiled the kernels before the first request: a fresh server answered its first
     * short completion in 1.25 s and its tenth in 0.06 s. A round prefills a short prompt and a chunk long enough for
     * the batched matmul kernels, then decodes one sequence alone and several together, and releases them. Needs no
     * sequence in use; leaves every page and id free again. Returns the rounds run.
     */
    public int warmUp(java.time.Duration budget, int maxRounds) {
        for (int s = 0; s < maxSequences; s++) if (used[s]) throw new IllegalStateException("warm-up needs every sequence free");
        long deadline = System.nanoTime() + budget.toNanos();
        // Sequence 0 takes a short prompt and 2·steps decodes, the others a prompt and steps decodes: all within
        // maxLength however short it is.
        int steps = Math.min(4, (maxLength - 1) / 2), together = Math.min(maxSequences, 6);
        int shortest = Math.min(7, maxLength - 2 * steps), longest = Math.min(Math.min(rows, 48), maxLength - steps);
        int rounds = 0;
        for (; rounds < maxRounds && System.nanoTime() < deadline; rounds++) {
            int[] seqs = new int[together];
            int live = 0;
            try {
                for (int i = 0; i < together; i++) {
                    seqs[i] = acquire();
                    live++;
                    int n = i == 0 ? shortest : i == 1 ? longest : 1;
                    int[] prompt = new int[n];
                    for (int t = 0; t < n; t++) prompt[t] = (31 * t + 7 * i + rounds) % cfg.vocab();
                    prefill(seqs[i], prompt, false);
                }
                for (int step = 0; step < steps; step++) {
                    decode(new int[] {seqs[0]}, new int[] {step % cfg.vocab()});
                    int[] next = new int[together];
                    for (int i = 0; i < together; i++) next[i] = (step * 13 + i) % cfg.vocab();
                    decode(seqs, next);
                }
            } catch (OutOfPagesException e) {
                // A pool too small for a full round: what ran so far has warmed what it could.
                rounds++;
                break;
            } finally {
                for (int i = 0; i < live; i++) release(seqs[i]);
            }
        }
        return rounds;
    }

    /**
     * Appends tokens to one sequence. Returns the logits (V) after the last token, or with {@code allLogits} the
     * logits after every appended token ((n, V) as n rows): row i predicts token i+1 (prompt scoring).
     *
     * @throws OutOfPagesException if the tokens need more pages than are free (nothing is appended)
     */
    public float[][] prefill(int seq, int[] tokens, boolean allLogits) {
        check(seq);
        if (tokens.length == 0) throw new IllegalArgumentException("no tokens to prefill");
        if ((long) length[seq] + tokens.length > maxLength) {
            throw new IllegalArgumentException("sequence of " + ((long) length[seq] + tokens.length) + " tokens exceeds the context of " + maxLength);
        }
        for (int t : tokens) checkToken(t);
        int need = pagesFor(length[seq] + tokens.length) - pageCount[seq];
        if (need > freeTop) throw new OutOfPagesException(need, freeTop, "sequence " + seq + " (" + tokens.length + " new tokens)");
        grow(seq, length[seq] + tokens.length);
        float[][] out = new float[allLogits ? tokens.length : 1][];
        for (int start = 0; start < tokens.length; start += rows) {
            int m = Math.min(rows, tokens.length - start);
            int[] part = Arrays.copyOfRange(tokens, start, start + m);
            int[] seqOf = new int[m], pos = new int[m];
            Arrays.fill(seqOf, seq);
            for (int i = 0; i < m; i++) pos[i] = length[seq] + i;
            boolean last = start + m == tokens.length;
            forward(part, pos, seqOf, Integer.MAX_VALUE);
            length[seq] += m;
            if (allLogits) {
                float[][] r = head(0, m, Integer.MAX_VALUE);
                System.arraycopy(r, 0, out, start, m);
            } else if (last) {
                out[0] = head(m - 1, 1, Integer.MAX_VALUE)[0];
            }
        }
        return out;
    }

    /**
     * One decode step: appends tokens[i] to sequence seqs[i] (distinct sequences) and returns each row's logits (V)
     * after it.
     *
     * @throws OutOfPagesException if the sequences that start a new page together need more than are free (then no
     *                             sequence is changed)
     */
    public float[][] decode(int[] seqs, int[] tokens) {
        int n = seqs.length;
        if (n == 0 || n > rows || tokens.length != n) throw new IllegalArgumentException("decode takes 1.." + rows + " sequences with one token each");
        int[] pos = new int[n];
        boolean[] seen = new boolean[maxSequences];
        int need = 0;
        for (int i = 0; i < n; i++) {
            int s = seqs[i];
            check(s);
            if (seen[s]) throw new IllegalArgumentException("sequence " + s + " appears twice in one step");
            seen[s] = true;
            checkToken(tokens[i]);
            if (length[s] >= maxLength) throw new IllegalArgumentException("sequence " + s + " is full (" + maxLength + " tokens)");
            pos[i] = length[s];
            need += pagesFor(length[s] + 1) - pageCount[s];
        }
        if (need > freeTop) throw new OutOfPagesException(need, freeTop, "a decode step of " + n + " sequences");
        for (int s : seqs) grow(s, length[s] + 1);
        // Matmuls in pieces the backend gives every row the same bits in as alone: so a sequence's logits do not
        // depend on how many others share the step (a seeded request's text does not depend on the server's load).
        int piece = Math.max(1, be.invariantMatmulRows());
        forward(tokens, pos, seqs, piece);
        for (int s : seqs) length[s]++;
        return head(0, n, piece);
    }

    /** Takes pages from the free list until the sequence has room for {@code tokens} (the caller checked there are). */
    private void grow(int seq, int tokens) {
        for (int need = pagesFor(tokens); pageCount[seq] < need; ) table[seq][pageCount[seq]++] = freePages[--freeTop];
    }

    private void checkToken(int id) {
        if (id < 0 || id >= cfg.vocab()) throw new IllegalArgumentException("token id " + id + " outside the vocabulary of " + cfg.vocab());
    }

    /**
     * The decoder layers over m rows; row i is token tokens[i] at position pos[i] of sequence seqOf[i], whose pages
     * already cover that position. A prefill chunk is m rows of one sequence, a decode step one row per sequence:
     * both write the new keys and values into their pages and run one paged attention over all rows. Matmuls run in
     * pieces of at most {@code piece} rows ({@link #linear}).
     */
    private void forward(int[] tokens, int[] pos, int[] seqOf, int piece) {
        int m = tokens.length, C = cfg.dim(), F = cfg.ffn(), KV = cfg.kvDim(), H = cfg.heads(), D = cfg.headDim();
        Buffer idsM = ids.slice(0, m), posM = positions.slice(0, m);
        Buffer tableM = pageTable.slice(0, (long) m * maxPages), lenM = lengths.slice(0, m);
        int[] tab = new int[m * maxPages], len = new int[m];
        for (int i = 0; i < m; i++) {
            System.arraycopy(table[seqOf[i]], 0, tab, i * maxPages, maxPages);
            len[i] = pos[i] + 1;                                                                // causal
        }
        be.copyIn(idsM, MemorySegment.ofArray(tokens));
        be.copyIn(posM, MemorySegment.ofArray(pos));
        be.copyIn(tableM, MemorySegment.ofArray(tab));
        be.copyIn(lenM, MemorySegment.ofArray(len));
        // Where the new K/V rows go: runs of consecutive rows that land in consecutive rows of one page, one copy each.
        List<KvWrite> writes = new ArrayList<>();
        for (int i = 0; i < m; ) {
            int s = seqOf[i], p = pos[i], run = 1;
            while (i + run < m && seqOf[i + run] == s && pos[i + run] == p + run && (p + run) % pageSize != 0) run++;
            writes.add(new KvWrite(i, (long) table[s][p / pageSize] * pageSize + p % pageSize, run));
            i += run;
        }
        Buffer xm = x.slice(0, (long) m * C), lnm = ln.slice(0, (long) m * C), qm = q.slice(0, (long) m * C);
        Buffer km = kNew.slice(0, (long) m * KV), vm = vNew.slice(0, (long) m * KV);
        Buffer attm = att.slice(0, (long) m * C), tmpm = tmp.slice(0, (long) m * C), midm = mid.slice(0, (long) m * C);
        Buffer gm = gate.slice(0, (long) m * F), um = up.slice(0, (long) m * F), hm = hid.slice(0, (long) m * F);
        be.run(new Op.Embedding(idsM, embed, xm, m, C));                                         // (m,C)
        for (int l = 0; l < cfg.layers(); l++) {
            // One row: q, k and v from one matmul on the fused matrix, where the model has one.
            boolean fused = m == 1 && qkv[l] != null;
            Buffer qIn = fused ? qkvOut.slice(0, C) : qm, kIn = fused ? qkvOut.slice(C, KV) : km;
            Buffer vIn = fused ? qkvOut.slice(C + KV, KV) : vm;
            be.run(new Op.RmsNorm(xm, n1[l], lnm, null, m, C, cfg.normEps()));
            if (fused) {
                be.run(new Op.MatMul(lnm, qkv[l], qkvOut, 1, C + 2 * KV, C, false, true, false));  // (1,H·D+2·KV·D)
            } else {
                linear(lnm, wq[l], qm, m, C, C, piece);                                          // (m,H·D)
                linear(lnm, wk[l], km, m, C, KV, piece);                                         // (m,KV·D)
                linear(lnm, wv[l], vm, m, C, KV, piece);
            }
            be.run(new Op.Rope(qIn, posM, m, H, D, cfg.ropeTheta(), false));
            be.run(new Op.Rope(kIn, posM, m, cfg.kvHeads(), D, cfg.ropeTheta(), false));
            for (KvWrite w : writes) {                                                           // into the pages
                long src = (long) w.row() * KV, dst = w.poolRow() * KV, n = (long) w.count() * KV;
                be.run(new Op.Copy(kIn.slice(src, n), kPool[l].slice(dst, n)));
                be.run(new Op.Copy(vIn.slice(src, n), vPool[l].slice(dst, n)));
            }
            be.run(new Op.PagedAttention(qIn, kPool[l], vPool[l], tableM, lenM, attm, m, H, cfg.kvHeads(), D,
                    pageSize, maxPages));                                                        // (m,H·D)
            linear(attm, wo[l], tmpm, m, C, C, piece);
            be.run(new Op.Add(xm, tmpm, midm, (long) m * C));
            be.run(new Op.RmsNorm(midm, n2[l], lnm, null, m, C, cfg.normEps()));
            if (m == 1 && gu[l] != null) {
                be.run(new Op.MatMul(lnm, gu[l], guOut, 1, 2 * F, C, false, true, false));          // (1,2F)
                be.run(new Op.SwiGlu(guOut.slice(0, F), guOut.slice(F, F), hm, F));
            } else {
                linear(lnm, wg[l], gm, m, C, F, piece);                                          // (m,F)
                linear(lnm, wu[l], um, m, C, F, piece);
                be.run(new Op.SwiGlu(gm, um, hm, (long) m * F));
            }
            linear(hm, wd[l], tmpm, m, F, C, piece);                                             // (m,C)
            be.run(new Op.Add(midm, tmpm, xm, (long) m * C));
        }
    }

    /** {@code count} new K/V rows from row {@code row} of this forward go to pool rows poolRow … (one page). */
    private record KvWrite(int row, long poolRow, int count) {}

    /** Final norm and LM head over rows [first, first+n) of the last forward; returns n rows of V logits. */
    private float[][] head(int first, int n, int piece) {
        int C = cfg.dim(), V = cfg.vocab();
        Buffer xs = x.slice((long) first * C, (long) n * C), lns = ln.slice(0, (long) n * C), out = logits.slice(0, (long) n * V);
        be.run(new Op.RmsNorm(xs, norm, lns, null, n, C, cfg.normEps()));
        linear(lns, lmHead, out, n, C, V, piece);                                                // (n,V)
        float[] all = model.read(out);
        float[][] r = new float[n][];
        for (int i = 0; i < n; i++) r[i] = Arrays.copyOfRange(all, i * V, (i + 1) * V);
        return r;
    }

    /**
     * y(N,out) = x(N,in) · Wᵀ with W (out,in), as matmuls of at most {@code piece} rows each: as few pieces as that
     * allows (each reads all of W), of near-equal size rounded up to a multiple of 4 rows where the limit allows (CPU
     * kernels tile rows by 4).
     */
    private void linear(Buffer in, Buffer weight, Buffer y, int n, int k, int out, int piece) {
        if (n <= piece) {
            be.run(new Op.MatMul(in, weight, y, n, out, k, false, true, false));
            return;
        }
        int pieces = (n - 1) / piece + 1, size = (n - 1) / pieces + 1;
        if ((size + 3) / 4 * 4 <= piece) size = (size + 3) / 4 * 4;
        for (int r0 = 0; r0 < n; r0 += size) {
            int rows = Math.min(size, n - r0);
            be.run(new Op.MatMul(in.slice((long) r0 * k, (long) rows * k), weight, y.slice((long) r0 * out, (long) rows * out),
                    rows, out, k, false, true, false));
        }
    }

    @Override
    public void close() { owned.forEach(Buffer::close); }
}
