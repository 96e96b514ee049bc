package dev.crucible.backend;

import dev.crucible.tensor.Blocks;
import dev.crucible.tensor.DType;

import java.util.List;

/**
 * One operation sent to a {@link Backend}. Ops are plain data: a training step is a list of these records, which can
 * be run, recorded, replayed on another backend and compared.
 *
 * <p>Conventions: all tensors are row-major; shapes are given in the comments outermost first, e.g. {@code (N,C)}.
 * Buffers are F32 unless stated; token ids and positions are I32. Sizes are checked when an op is built, so a
 * backend never reads or writes outside the buffers it is given. "+=" marks outputs that accumulate (gradients).
 */
public sealed interface Op {

    /** The buffers this op writes, in a fixed order (for recording and comparison). */
    List<Buffer> outputs();

    default String name() { return getClass().getSimpleName(); }

    /** out[i] = value. */
    record Fill(Buffer out, float value) implements Op {
        public List<Buffer> outputs() { return List.of(out); }
    }

    /**
     * dst = src, same length; same type (a bit copy), or F32 → F16 (each value rounded to the nearest half, ties to
     * even, as {@link Float#floatToFloat16}: how new keys and values enter an F16 KV cache).
     */
    record Copy(Buffer src, Buffer dst) implements Op {
        public Copy {
            check(src.type() == dst.type() || (src.type() == DType.F32 && dst.type() == DType.F16),
                    "Copy: cannot copy " + src.type() + " to " + dst.type() + " (same type, or F32 to F16)");
            check(src.elements() == dst.elements(), "Copy: lengths differ");
        }

        public List<Buffer> outputs() { return List.of(dst); }
    }

    /** out(N,C) = table[ids[n]] with ids (N) I32 and table (V,C), the table in F32 or any weight type (rows decoded). */
    record Embedding(Buffer ids, Buffer table, Buffer out, int n, int dim) implements Op {
        public Embedding {
            size(ids, DType.I32, n, "ids");
            check(table.elements() % dim == 0, "Embedding: table is not (V," + dim + ")");
            check(Blocks.isReal(table.type()) && dim % table.type().blockSize() == 0,
                    "Embedding: a table of " + table.type() + " rows of " + dim + " cannot be decoded");
            size(out, DType.F32, (long) n * dim, "out");
        }

        public List<Buffer> outputs() { return List.of(out); }
    }

    /** dTable(V,C) += scatter of dOut(N,C) by ids(N). */
    record EmbeddingBackward(Buffer ids, Buffer dOut, Buffer dTable, int n, int dim) implements Op {
        public EmbeddingBackward {
            size(ids, DType.I32, n, "ids");
            size(dOut, DType.F32, (long) n * dim, "dOut");
            check(dTable.elements() % dim == 0, "EmbeddingBackward: dTable is not (V," + dim + ")");
        }

        public List<Buffer> outputs() { return List.of(dTable); }
    }

    /**
     * out(N,C) = x · rsqrt(mean(x²) + eps) · weight(C); saves rstd(N) for the backward pass when rstd is not null.
     */
    record RmsNorm(Buffer x, Buffer weight, Buffer out, Buffer rstd, int n, int dim, float eps) implements Op {
        public RmsNorm {
            size(x, DType.F32, (long) n * dim, "x");
            size(weight, DType.F32, dim, "weight");
            size(out, DType.F32, (long) n * dim, "out");
            if (rstd != null) size(rstd, DType.F32, n, "rstd");
        }

        public List<Buffer> outputs() { return rstd == null ? List.of(out) : List.of(out, rstd); }
    }

    /** dx(N,C) += ∂/∂x, dWeight(C) += ∂/∂weight, given dOut(N,C), x, weight and the saved rstd(N). */
    record RmsNormBackward(Buffer dOut, Buffer x, Buffer weight, Buffer rstd, Buffer dx, Buffer dWeight, int n,
                           int dim) implements Op {
        public RmsNormBackward {
            size(dOut, DType.F32, (long) n * dim, "dOut");
            size(x, DType.F32, (long) n * dim, "x");
            size(weight, DType.F32, dim, "weight");
            size(rstd, DType.F32, n, "rstd");
            size(dx, DType.F32, (long) n * dim, "dx");
            size(dWeight, DType.F32, dim, "dWeight");
        }

        public List<Buffer> outputs() { return List.of(dx, dWeight); }
    }

    /**
     * c(M,N) = op(a)(M,K) · op(b)(K,N), or c += … when accumulate. op(a) = a stored (M,K), or aᵀ with a stored (K,M)
     * when transA; op(b) = b stored (K,N), or bᵀ with b stored (N,K) when transB. A linear layer y = x·Wᵀ is
     * (a = x, b = W, transB); its backward is dx = dy·W (no transposes) and dW += dyᵀ·x (transA, accumulate).
     * For inference b may also be a weight matrix in F16, BF16, Q8_0 or Q4_0 (transB, rows of whole blocks): it is
     * used as stored, each element standing for its decoded value ({@link Blocks#decode}).
     */
    record MatMul(Buffer a, Buffer b, Buffer c, int m, int n, int k, boolean transA, boolean transB,
                  boolean accumulate) implements Op {
        public MatMul {
            check(m > 0 && n > 0 && k > 0, "MatMul: dimensions must be positive");
            size(a, DType.F32, (long) m * k, "a");
            check(b.elements() == (long) k * n, "MatMul: b has " + b.elements() + " elements, expected " + (long) k * n);
            if (b.type() != DType.F32) {
                check(Blocks.isReal(b.type()) && transB && !transA,
                        "MatMul: a " + b.type() + " b must be a weight matrix stored (N,K) (transB, not transA)");
                check(k % b.type().blockSize() == 0, "MatMul: K = " + k + " is not a whole number of " + b.type() + " blocks");
            }
            size(c, DType.F32, (long) m * n, "c");
        }

        public List<Buffer> outputs() { return List.of(c); }
    }

    /**
     * Rotary embedding in place on x(N,H,D), HF rotate-half layout: for j < D/2, with angle = pos·θ^(-2j/D),
     * (x[j], x[j+D/2]) ← (x[j]·cos − x[j+D/2]·sin, x[j+D/2]·cos + x[j]·sin). positions(N) I32 give each row's
     * position. inverse rotates by −angle, which is the backward pass (rotation is orthogonal).
     */
    record Rope(Buffer x, Buffer positions, int n, int heads, int headDim, float theta, boolean inverse)
            implements Op {
        public Rope {
            check(headDim % 2 == 0, "Rope: head dimension must be even");
            size(x, DType.F32, (long) n * heads * headDim, "x");
            size(positions, DType.I32, n, "positions");
        }

        public List<Buffer> outputs() { return List.of(x); }
    }

    /**
     * Causal attention with grouped KV heads. q(B,Tq,H,D), k and v (B,·,KV,D) with {@code kvBatchStride} elements
     * between batch rows (a KV cache may hold more rows than Tk), out(B,Tq,H,D). Query i sits at position qPos0 + i
     * and sees keys 0 … qPos0 + i (< Tk). Query head h reads KV head h / (H/KV). Scores are scaled by D^-½.
     * lse(B,H,Tq), when not null, receives the log-sum-exp of each score row (kept for the backward pass instead
     * of the Tq × Tk probabilities).
     */
    record Attention(Buffer q, Buffer k, Buffer v, Buffer out, Buffer lse, int batch, int tq, int tk, int heads,
                     int kvHeads, int headDim, int qPos0, long kvBatchStride) implements Op {
        public Attention {
            check(heads % kvHeads == 0, "Attention: heads must be a multiple of kv heads");
            check(qPos0 >= 0 && qPos0 + tq <= tk, "Attention: queries at " + qPos0 + "+" + tq + " exceed " + tk + " keys");
            check(kvBatchStride >= (long) tk * kvHeads * headDim, "Attention: kv batch stride too small");
            long qn = (long) batch * tq * heads * headDim;
            size(q, DType.F32, qn, "q");
            size(out, DType.F32, qn, "out");
            long kvn = (batch - 1) * kvBatchStride + (long) tk * kvHeads * headDim;
            check(k.elements() >= kvn && v.elements() >= kvn, "Attention: k/v smaller than batch × stride");
            if (lse != null) size(lse, DType.F32, (long) batch * heads * tq, "lse");
        }

        public List<Buffer> outputs() { return lse == null ? List.of(out) : List.of(out, lse); }
    }

    /**
     * Backward of training-time {@link Attention} (Tq = Tk = T, qPos0 = 0, contiguous k/v): from dOut and the
     * saved out and lse, writes (not accumulates) dq(B,T,H,D), dk and dv (B,T,KV,D).
     */
    record AttentionBackward(Buffer dOut, Buffer q, Buffer k, Buffer v, Buffer out, Buffer lse, Buffer dq,
                             Buffer dk, Buffer dv, int batch, int t, int heads, int kvHeads, int headDim)
            implements Op {
        public AttentionBackward {
            check(heads % kvHeads == 0, "AttentionBackward: heads must be a multiple of kv heads");
            long qn = (long) batch * t * heads * headDim;
            long kvn = (long) batch * t * kvHeads * headDim;
            size(dOut, DType.F32, qn, "dOut");
            size(q, DType.F32, qn, "q");
            size(out, DType.F32, qn, "out");
            size(dq, DType.F32, qn, "dq");
            size(k, DType.F32, kvn, "k");
            size(v, DType.F32, kvn, "v");
            size(dk, DType.F32, kvn, "dk");
            size(dv, DType.F32, kvn, "dv");
            size(lse, DType.F32, (long) batch * heads * t, "lse");
        }

        public List<Buffer> outputs() { return List.of(dq, dk, dv); }
    }

    /** out = silu(gate) · up, elementwise over n values; silu(g) = g / (1 + e^-g). */
    record SwiGlu(Buffer gate, Buffer up, Buffer out, long n) implements Op {
        public SwiGlu {
            size(gate, DType.F32, n, "gate");
            size(up, DType.F32, n, "up");
            size(out, DType.F32, n, "out");
        }

        public List<Buffer> outputs() { return List.of(out); }
    }

    /** dGate, dUp (written) from dOut of {@link SwiGlu}. */
    record SwiGluBackward(Buffer dOut, Buffer gate, Buffer up, Buffer dGate, Buffer dUp, long n) implements Op {
        public SwiGluBackward {
            size(dOut, DType.F32, n, "dOut");
            size(gate, DType.F32, n, "gate");
            size(up, DType.F32, n, "up");
            size(dGate, DType.F32, n, "dGate");
            size(dUp, DType.F32, n, "dUp");
        }

        public List<Buffer> outputs() { return List.of(dGate, dUp); }
    }

    /** out = a + b over n values (out may be a or b: the residual stream adds in place). */
    record Add(Buffer a, Buffer b, Buffer out, long n) implements Op {
        public Add {
            size(a, DType.F32, n, "a");
            size(b, DType.F32, n, "b");
            size(out, DType.F32, n, "out");
        }

        public List<Buffer> outputs() { return List.of(out); }
    }

    /**
     * Fused softmax + cross-entropy over logits(N,V) with targets(N) I32: losses(N) = logsumexp(row) − row[target].
     * When dLogits is not null it receives gradScale · (softmax(row) − onehot(target)) (it may be the logits buffer
     * itself). A negative target masks its row: loss 0, gradient 0.
     */
    record CrossEntropy(Buffer logits, Buffer targets, Buffer losses, Buffer dLogits, int n, int vocab,
                        float gradScale) implements Op {
        public CrossEntropy {
            size(logits, DType.F32, (long) n * vocab, "logits");
            size(targets, DType.I32, n, "targets");
            size(losses, DType.F32, n, "losses");
            if (dLogits != null) size(dLogits, DType.F32, (long) n * vocab, "dLogits");
        }

        public List<Buffer> outputs() { return dLogits == null ? List.of(losses) : List.of(losses, dLogits); }
    }

    /** out[0] = Σ x² (for the global gradient norm). */
    record SumSquares(Buffer x, Buffer out) implements Op {
        public SumSquares {
            check(x.type() == DType.F32, "SumSquares: x must be F32");
            size(out, DType.F32, 1, "out");
        }

        public List<Buffer> outputs() { return List.of(out); }
    }

    /**
     * One AdamW step (PyTorch semantics) over param, with g = gradScale · grad (gradScale folds in clipping):
     * p −= lr·wd·p; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; p −= lr · (m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + eps).
     */
    record AdamW(Buffer param, Buffer grad, Buffer m, Buffer v, float lr, float beta1, float beta2, float eps,
                 float weightDecay, int step, float gradScale) implements Op {
        public AdamW {
            long n = param.elements();
            size(param, DType.F32, n, "param");
            size(grad, DType.F32, n, "grad");
            size(m, DType.F32, n, "m");
            size(v, DType.F32, n, "v");
            check(step >= 1, "AdamW: step counts from 1");
        }

        public List<Buffer> outputs() { return List.of(param, m, v); }
    }

    /**
     * Causal attention with grouped KV heads against a paged KV cache (inference; no backward). The cache is a pool
     * of fixed-size pages, kPool and vPool (P,S,KV,D): P pages of S = pageSize token rows, keys stored after rope;
     * both F32, or both F16 (half the memory and traffic; a backend widens each value exactly and computes in F32).
     * Query row r of q(R,H,D) belongs to a sequence whose pages are listed, in token order, in row r of
     * pageTable(R,maxPages) I32: its token t lives in page pageTable[r][t / S], row t % S. The row sees that
     * sequence's keys 0 … lengths[r]−1, lengths(R) I32 (causal: a query at position p has length p + 1).
     * Page-table entries past the ⌈length/S⌉ the row needs are never read. Query head h reads KV head h / (H/KV);
     * scores are scaled by D^-½; out(R,H,D).
     *
     * <p>One op serves a decode step of R sequences of different lengths (one row each, each with its own
     * page-table row) and a prefill chunk of one sequence (R rows with equal page-table rows and lengths
     * p0+1 … p0+R). Page ids and lengths are data, so a backend checks them when it runs (1 ≤ length ≤ maxPages·S,
     * 0 ≤ page < P for every page a row needs) and throws {@link IndexOutOfBoundsException} otherwise.
     */
    record PagedAttention(Buffer q, Buffer kPool, Buffer vPool, Buffer pageTable, Buffer lengths, Buffer out,
                          int rows, int heads, int kvHeads, int headDim, int pageSize, int maxPages) implements Op {
        public PagedAttention {
            check(rows > 0 && heads > 0 && kvHeads > 0 && headDim > 0 && pageSize > 0 && maxPages > 0,
                    "PagedAttention: dimensions must be positive");
            check(heads % kvHeads == 0, "PagedAttention: heads must be a multiple of kv heads");
            long qn = (long) rows * heads * headDim, page = (long) pageSize * kvHeads * headDim;
            size(q, DType.F32, qn, "q");
            size(out, DType.F32, qn, "out");
            check((kPool.type() == DType.F32 || kPool.type() == DType.F16) && vPool.type() == kPool.type(),
                    "PagedAttention: kPool and vPool must both be F32 or both F16, are " + kPool.type() + " and " + vPool.type());
            check(kPool.elements() > 0 && kPool.elements() % page == 0, "PagedAttention: kPool has " + kPool.elements()
                    + " elements, not (pages," + pageSize + "," + kvHeads + "," + headDim + ")");
            check(vPool.elements() == kPool.elements(), "PagedAttention: vPool and kPool differ in size");
            check(kPool.elements() / page <= Integer.MAX_VALUE, "PagedAttention: more pages than int ids");
            size(pageTable, DType.I32, (long) rows * maxPages, "pageTable");
            size(lengths, DType.I32, rows, "lengths");
        }

        /** P, the pages in the pool. */
        public int pages() { return (int) (kPool.elements() / ((long) pageSize * kvHeads * headDim)); }

        public List<Buffer> outputs() { return List.of(out); }
    }

    private static void check(boolean ok, String message) {
        if (!ok) throw new IllegalArgumentException(message);
    }

    private static void size(Buffer b, DType type, long elements, String what) {
        if (b == null) throw new IllegalArgumentException(what + " is null");
        if (b.type() != type) throw new IllegalArgumentException(what + " must be " + type + ", is " + b.type());
        if (b.elements() != elements) {
            throw new IllegalArgumentException(what + " has " + b.elements() + " elements, expected " + elements);
        }
    }
}
