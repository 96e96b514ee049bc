package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Causal attention with grouped KV heads, flash style: the T×T score matrix is never stored.
 *
 * <p>Forward: one task per (batch, head, block of {@link #FQ} queries). Keys are visited in blocks of {@link #BK}
 * (K transposed to [d][key], so scores vectorise over keys; V as [key][d], so P·V vectorises over d), with an
 * online softmax per query row (running max and sum, the output rescaled when the max grows); lse = max + log(sum)
 * is saved for the backward pass. Head rows are copied into arrays padded to a whole number of vectors, so D need
 * not be a multiple of the vector length.
 *
 * <p>Backward (FlashAttention-2 without atomics, one pass): probabilities are recomputed from lse once per (query,
 * key) pair. One task per (batch, kv head) walks the key blocks in order; for each it sums dk and dv over the
 * group's query heads and the causal query rows in a fixed order, and adds dS·K into a task-local dq for every
 * row, so dq sums over key blocks in order too (lab variant attn-bwd-2 in bench/NOTES.md: about 1.6x faster than
 * the two-pass version, which recomputed P and dS for dq). Every output element has one owner and one summation
 * order: bit-identical for any thread count.
 */
public final class Attention {
    private Attention() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int VL = S.length();
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Query rows per backward task, and per row block of the paged kernel. */
    public static final int BQ = 32;
    /**
     * Query rows per forward task. Each task transposes every key block it visits, so more rows per task transpose
     * less per row: 128 against 32 ran T = 512 (32 heads, D 64) at 45 against 35 GFLOP/s on one core. A row's
     * arithmetic does not depend on its block, so this changes no bits.
     */
    static final int FQ = 128;
    /** Keys per block: a multiple of the vector length. */
    public static final int BK = 4 * VL;

    static int padded(int d) {
        return (d + VL - 1) / VL * VL;
    }

    // ---- forward --------------------------------------------------------------------------------------------------

    public static void forward(Parallel par, MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment out,
                               MemorySegment lse, int batch, int tq, int tk, int heads, int kvHeads, int d, int qPos0,
                               long kvBatchStride) {
        forward(par, q, k, v, out, lse, batch, tq, tk, heads, kvHeads, d, qPos0, kvBatchStride, null);
    }

    /**
     * {@link #forward} with decode steps (at most {@link #ROW_MAJOR_ROWS} query rows, no lse) given to {@code fast}
     * where it is not null: each batch row's cache is one page of the paged kernel's layout, so the stand-in that
     * keeps {@link PagedAttention}'s "by rows" bits keeps this kernel's too (the two share their arithmetic). A block
     * it declines runs here.
     */
    public static void forward(Parallel par, MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment out,
                               MemorySegment lse, int batch, int tq, int tk, int heads, int kvHeads, int d, int qPos0,
                               long kvBatchStride, PagedAttention.RowKernel fast) {
        long rowFloats = (long) kvHeads * d;
        if (fast != null && lse == null && tq <= ROW_MAJOR_ROWS && kvBatchStride % rowFloats == 0
                && kvBatchStride / rowFloats >= qPos0 + tq && kvBatchStride / rowFloats <= Integer.MAX_VALUE
                && fits(k, batch, kvBatchStride, qPos0 + tq, rowFloats) && fits(v, batch, kvBatchStride, qPos0 + tq, rowFloats)
                && q.byteSize() >= (long) batch * tq * heads * d * 4 && out.byteSize() >= (long) batch * tq * heads * d * 4) {
            int pageSize = (int) (kvBatchStride / rowFloats), group = heads / kvHeads;
            int[] table = new int[batch], len = new int[batch * tq];
            for (int b = 0; b < batch; b++) {
                table[b] = b;
                for (int i = 0; i < tq; i++) len[b * tq + i] = qPos0 + i + 1;
            }
            float scale = (float) (1.0 / Math.sqrt(d));
            par.forEach(batch * kvHeads, task -> {
                int b = task / kvHeads, kh = task % kvHeads;
                if (!fast.rows(q, k, v, false, table, b, len, b * tq, tq, out, heads, kvHeads, kh, d, pageSize, scale)) {
                    for (int h = kh * group; h < (kh + 1) * group; h++) {
                        forwardBlock(q, k, v, out, null, b, 0, h, tq, heads, kvHeads, d, qPos0, kvBatchStride);
                    }
                }
            });
            return;
        }
        int qBlocks = Parallel.chunks(tq, FQ);
        par.forEach(batch * heads * qBlocks, task -> {
            int qb = task % qBlocks, bh = task / qBlocks;
            forwardBlock(q, k, v, out, lse, bh / heads, qb, bh % heads, tq, heads, kvHeads, d, qPos0, kvBatchStride);
        });
    }

    /** Query block qb (rows qb·FQ …) of head h in batch row b. */
    private static void forwardBlock(MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment out,
                                     MemorySegment lse, int b, int qb, int h, int tq, int heads, int kvHeads, int d,
                                     int qPos0, long kvBatchStride) {
        int group = heads / kvHeads, dp = padded(d), kh = h / group;
        float scale = (float) (1.0 / Math.sqrt(d));
        int i0 = qb * FQ, rows = Math.min(FQ, tq - i0);
        boolean byRows = rows <= ROW_MAJOR_ROWS;
        // Sized by the block's rows: a decode step's task holds one row, not FQ (zeroing 64 KB per head per token).
        float[] qs = new float[rows * dp], o = new float[rows * dp];
        // Rows read in place (decode) need no transposed key block: one task per head per token allocates less.
        float[] kt = byRows ? null : new float[dp * BK], vb = byRows ? null : new float[BK * dp];
        float[] p = new float[2 * BK], tmp = new float[d];
        float[] m = new float[rows], l = new float[rows];
        java.util.Arrays.fill(m, Float.NEGATIVE_INFINITY);
        for (int r = 0; r < rows; r++) {
            MemorySegment.copy(q, F, ((((long) b * tq + i0 + r) * heads + h) * d) * 4, qs, r * dp, d);
        }
        long kvBase = b * kvBatchStride;
        int keys = qPos0 + i0 + rows; // keys 0 … keys-1 are visible to some row of this block
        long[] at = byRows ? new long[BK] : null;
        for (int j0 = 0; j0 < keys; j0 += BK) {
            int bk = Math.min(BK, keys - j0);
            if (byRows) {
                for (int j = 0; j < bk; j++) at[j] = (kvBase + ((long) (j0 + j) * kvHeads + kh) * d) * 4;
            } else {
                loadKeys(k, v, kvBase, kvHeads, kh, d, dp, j0, bk, kt, vb, tmp);
            }
            for (int r = 0; r < rows; r++) {
                int limit = Math.min(bk, qPos0 + i0 + r + 1 - j0);
                if (limit <= 0) continue;
                int nv = (limit + VL - 1) / VL;
                if (!byRows && r + 1 < rows) {
                    // Two query rows share every key and value load; each row's arithmetic is unchanged.
                    int limit1 = Math.min(bk, limit + 1), nv1 = (limit1 + VL - 1) / VL;
                    float[] mx = scores2(qs, r * dp, dp, kt, d, nv, limit, nv1, limit1, scale, p);
                    float c0 = online(m, l, r, mx[0], p, 0, nv), c1 = online(m, l, r + 1, mx[1], p, BK, nv1);
                    scaleRow(o, r * dp, dp, c0);
                    scaleRow(o, (r + 1) * dp, dp, c1);
                    accumulateRows2(o, r * dp, dp, p, 0, vb, limit, limit1);
                    r++;
                    continue;
                }
                float bmax = byRows ? scoresByRows(qs, r * dp, k, at, d, nv, limit, scale, p)
                        : scores(qs, r * dp, kt, d, nv, limit, scale, p);
                float corr = online(m, l, r, bmax, p, 0, nv);
                if (byRows) accumulatePV(o, r * dp, d, corr, p, v, at, limit);
                else accumulatePV(o, r * dp, dp, corr, p, vb, limit);
            }
        }
        for (int r = 0; r < rows; r++) {
            float inv = 1f / l[r];
            for (int c = 0; c < d; c++) tmp[c] = o[r * dp + c] * inv;
            MemorySegment.copy(tmp, 0, out, F, ((((long) b * tq + i0 + r) * heads + h) * d) * 4, d);
            if (lse != null) lse.setAtIndex(F, ((long) b * heads + h) * tq + i0 + r, m[r] + (float) StrictMath.log(l[r]));
        }
    }

    /** Whether {@code seg} holds {@code keys} key rows of {@code rowFloats} floats for each of {@code batch} rows. */
    private static boolean fits(MemorySegment seg, int batch, long kvBatchStride, int keys, long rowFloats) {
        return seg.byteSize() >= ((batch - 1) * kvBatchStride + keys * rowFloats) * 4;
    }

    /** kt[c][j] = K[j0+j][c] and vb[j][c] = V[j0+j][c] for j < bk; the rest zero. */
    private static void loadKeys(MemorySegment k, MemorySegment v, long kvBase, int kvHeads, int kh, int d, int dp,
                                 int j0, int bk, float[] kt, float[] vb, float[] tmp) {
        for (int j = 0; j < BK; j++) {
            if (j < bk) {
                long off = (kvBase + ((long) (j0 + j) * kvHeads + kh) * d) * 4;
                MemorySegment.copy(k, F, off, tmp, 0, d);
                for (int c = 0; c < d; c++) kt[c * BK + j] = tmp[c];
                MemorySegment.copy(v, F, off, vb, j * dp, d);
            } else {
                for (int c = 0; c < d; c++) kt[c * BK + j] = 0f;
                java.util.Arrays.fill(vb, j * dp, j * dp + d, 0f);
            }
        }
    }

    /** The online-softmax update of row r for a block with maximum bmax: exponentiates p in place, returns corr. */
    private static float online(float[] m, float[] l, int r, float bmax, float[] p, int po, int nv) {
        float mOld = m[r], mNew = Math.max(mOld, bmax);
        float corr = mOld == Float.NEGATIVE_INFINITY ? 0f : VMath.exp(mOld - mNew);
        float blockSum = VMath.exp(p, po, p, po, nv * VL, 1f, mNew); // masked lanes: e^−∞ = 0
        m[r] = mNew;
        l[r] = l[r] * corr + blockSum;
        return corr;
    }

    /**
     * {@link #scores} for rows ro and ro + dp into s[0, BK) and s[BK, 2·BK) (each kᵀ vector loaded once for both);
     * returns the two maxima. Each row's sums and masking are {@link #scores}'s exactly.
     */
    private static float[] scores2(float[] rowsArr, int ro, int dp, float[] kt, int d, int nv0, int limit0, int nv1,
                                   int limit1, float scale, float[] s) {
        FloatVector a0 = FloatVector.zero(S), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int r1 = ro + dp;
        for (int c = 0; c < d; c++) {
            FloatVector qa = FloatVector.broadcast(S, rowsArr[ro + c]), qb = FloatVector.broadcast(S, rowsArr[r1 + c]);
            int ki = c * BK;
            FloatVector k0 = FloatVector.fromArray(S, kt, ki), k1 = FloatVector.fromArray(S, kt, ki + VL);
            FloatVector k2 = FloatVector.fromArray(S, kt, ki + 2 * VL), k3 = FloatVector.fromArray(S, kt, ki + 3 * VL);
            a0 = k0.fma(qa, a0);
            a1 = k1.fma(qa, a1);
            a2 = k2.fma(qa, a2);
            a3 = k3.fma(qa, a3);
            b0 = k0.fma(qb, b0);
            b1 = k1.fma(qb, b1);
            b2 = k2.fma(qb, b2);
            b3 = k3.fma(qb, b3);
        }
        return new float[] {maskStore(a0, a1, a2, a3, limit0, scale, s, 0), maskStore(b0, b1, b2, b3, limit1, scale, s, BK)};
    }

    /** Scales the four score vectors, masks lanes at and past limit to −∞, stores them at s[so…] and returns the max. */
    private static float maskStore(FloatVector s0, FloatVector s1, FloatVector s2, FloatVector s3, int limit, float scale,
                                   float[] s, int so) {
        FloatVector ninf = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY);
        s0 = ninf.blend(s0.mul(scale), S.indexInRange(0, limit));
        s1 = ninf.blend(s1.mul(scale), S.indexInRange(VL, limit));
        s2 = ninf.blend(s2.mul(scale), S.indexInRange(2 * VL, limit));
        s3 = ninf.blend(s3.mul(scale), S.indexInRange(3 * VL, limit));
        s0.intoArray(s, so);
        s1.intoArray(s, so + VL);
        s2.intoArray(s, so + 2 * VL);
        s3.intoArray(s, so + 3 * VL);
        return s0.max(s1).max(s2.max(s3)).reduceLanes(VectorOperators.MAX);
    }

    /** o[oo … oo+dp) ·= corr (the online softmax's rescale, before a block's P·V is added). */
    private static void scaleRow(float[] o, int oo, int dp, float corr) {
        for (int cv = 0; cv < dp; cv += VL) FloatVector.fromArray(S, o, oo + cv).mul(corr).intoArray(o, oo + cv);
    }

    /**
     * With at most this many query rows sharing a key block (a decode step), transposing the keys costs more than it
     * saves: scores are then dot products along D of the query with each key row ({@link #scoresByRows}).
     */
    public static final int ROW_MAJOR_ROWS = 2;

    /**
     * s[j] = scale · (row · K_j) for j < limit, −∞ beyond (up to nv vectors), the key rows read in place at byte
     * offsets at[j] (no copy: a decode step touches each key once); returns the max.
     */
    static float scoresByRows(float[] row, int ro, MemorySegment k, long[] at, int d, int nv, int limit, float scale,
                              float[] s) {
        float max = Float.NEGATIVE_INFINITY;
        int dv = d / VL * VL;
        int j = 0;
        // Two keys at a time: two independent accumulator chains hide the FMA latency (one key's chain is only
        // d/VL long) and their lane sums overlap. Each key's operations are those of the single-key loop below.
        for (; j + 1 < limit; j += 2) {
            long off0 = at[j], off1 = at[j + 1];
            FloatVector a0 = FloatVector.zero(S), a1 = FloatVector.zero(S);
            for (int c = 0; c < dv; c += VL) {
                FloatVector qc = FloatVector.fromArray(S, row, ro + c);
                a0 = FloatVector.fromMemorySegment(S, k, off0 + c * 4L, NATIVE).fma(qc, a0);
                a1 = FloatVector.fromMemorySegment(S, k, off1 + c * 4L, NATIVE).fma(qc, a1);
            }
            float x0 = VMath.sum(a0), x1 = VMath.sum(a1);
            for (int c = dv; c < d; c++) {
                x0 = Math.fma(row[ro + c], k.get(F, off0 + c * 4L), x0);
                x1 = Math.fma(row[ro + c], k.get(F, off1 + c * 4L), x1);
            }
            x0 *= scale;
            x1 *= scale;
            s[j] = x0;
            s[j + 1] = x1;
            max = Math.max(max, Math.max(x0, x1));
        }
        for (; j < limit; j++) {
            long off = at[j];
            FloatVector a0 = FloatVector.zero(S);
            for (int c = 0; c < dv; c += VL) {
                a0 = FloatVector.fromMemorySegment(S, k, off + c * 4L, NATIVE).fma(FloatVector.fromArray(S, row, ro + c), a0);
            }
            float x = VMath.sum(a0);
            for (int c = dv; c < d; c++) x = Math.fma(row[ro + c], k.get(F, off + c * 4L), x);
            x *= scale;
            s[j] = x;
            max = Math.max(max, x);
        }
        java.util.Arrays.fill(s, limit, nv * VL, Float.NEGATIVE_INFINITY);
        return max;
    }

    /** o[row] = o[row] · corr + Σ_{j<limit} p[j] · V_j, the value rows read in place at byte offsets at[j]. */
    static void accumulatePV(float[] o, int oo, int d, float corr, float[] p, MemorySegment v, long[] at, int limit) {
        int dv = d / VL * VL;
        for (int cv = 0; cv < dv; cv += VL) {
            FloatVector a0 = FloatVector.fromArray(S, o, oo + cv).mul(corr), a1 = FloatVector.zero(S);
            int j = 0;
            for (; j + 1 < limit; j += 2) {
                a0 = FloatVector.fromMemorySegment(S, v, at[j] + cv * 4L, NATIVE).fma(FloatVector.broadcast(S, p[j]), a0);
                a1 = FloatVector.fromMemorySegment(S, v, at[j + 1] + cv * 4L, NATIVE).fma(FloatVector.broadcast(S, p[j + 1]), a1);
            }
            if (j < limit) a0 = FloatVector.fromMemorySegment(S, v, at[j] + cv * 4L, NATIVE).fma(FloatVector.broadcast(S, p[j]), a0);
            a0.add(a1).intoArray(o, oo + cv);
        }
        for (int c = dv; c < d; c++) {
            float a = o[oo + c] * corr;
            for (int j = 0; j < limit; j++) a = Math.fma(p[j], v.get(F, at[j] + c * 4L), a);
            o[oo + c] = a;
        }
    }

    /**
     * s[j] = scale · (row · kt[·][j]) for j < limit, −∞ beyond; returns the max. Four independent accumulators (one
     * per key vector) keep the FMA pipes busy; all BK lanes are computed (kt is zero-padded). Shared with
     * {@link PagedAttention}, as are {@link #scoresByRows} and {@link #accumulatePV}, so paged and contiguous caches
     * give the same bits.
     */
    static float scores(float[] row, int ro, float[] kt, int d, int nv, int limit, float scale, float[] s) {
        FloatVector s0 = FloatVector.zero(S), s1 = s0, s2 = s0, s3 = s0;
        for (int c = 0; c < d; c++) {
            FloatVector qc = FloatVector.broadcast(S, row[ro + c]);
            int ki = c * BK;
            s0 = FloatVector.fromArray(S, kt, ki).fma(qc, s0);
            s1 = FloatVector.fromArray(S, kt, ki + VL).fma(qc, s1);
            s2 = FloatVector.fromArray(S, kt, ki + 2 * VL).fma(qc, s2);
            s3 = FloatVector.fromArray(S, kt, ki + 3 * VL).fma(qc, s3);
        }
        return maskStore(s0, s1, s2, s3, limit, scale, s, 0);
    }

    /** o[row] = o[row] · corr + Σ_{j<limit} p[j] · vb[j]. */
    static void accumulatePV(float[] o, int oo, int dp, float corr, float[] p, float[] vb, int limit) {
        scaleRow(o, oo, dp, corr);
        accumulateRows(o, oo, dp, p, 0, vb, limit);
    }

    // ---- backward -------------------------------------------------------------------------------------------------

    /**
     * dv[j] += Σ_r P[r][j]·dO[r] and dk[j] += Σ_r dS[r][j]·q[r] for keys j … j+3 at once: each dO and q row vector
     * is loaded once for the four keys. Per element the sum is the single-key loop's exactly (even rows into one
     * accumulator, odd rows into another, then added).
     */
    private static void accumulateKeys4(float[] dvAcc, float[] dkAcc, float[] dos, float[] qs, float[] p, float[] ds,
                                        int bo, int rows, int dp, int j) {
        for (int cv = 0; cv < dp; cv += VL) {
            int a0 = j * dp + cv, a1 = a0 + dp, a2 = a1 + dp, a3 = a2 + dp;
            FloatVector v0 = FloatVector.fromArray(S, dvAcc, a0), v1 = FloatVector.fromArray(S, dvAcc, a1);
            FloatVector v2 = FloatVector.fromArray(S, dvAcc, a2), v3 = FloatVector.fromArray(S, dvAcc, a3);
            FloatVector k0 = FloatVector.fromArray(S, dkAcc, a0), k1 = FloatVector.fromArray(S, dkAcc, a1);
            FloatVector k2 = FloatVector.fromArray(S, dkAcc, a2), k3 = FloatVector.fromArray(S, dkAcc, a3);
            FloatVector w0 = FloatVector.zero(S), w1 = w0, w2 = w0, w3 = w0, l0 = w0, l1 = w0, l2 = w0, l3 = w0;
            int r = 0;
            for (; r + 1 < rows; r += 2) {
                int o0 = bo + r * dp + cv, o1 = o0 + dp, p0 = r * BK + j, p1 = p0 + BK;
                FloatVector d0 = FloatVector.fromArray(S, dos, o0), q0 = FloatVector.fromArray(S, qs, o0);
                FloatVector d1 = FloatVector.fromArray(S, dos, o1), q1 = FloatVector.fromArray(S, qs, o1);
                v0 = d0.fma(FloatVector.broadcast(S, p[p0]), v0);
                v1 = d0.fma(FloatVector.broadcast(S, p[p0 + 1]), v1);
                v2 = d0.fma(FloatVector.broadcast(S, p[p0 + 2]), v2);
                v3 = d0.fma(FloatVector.broadcast(S, p[p0 + 3]), v3);
                k0 = q0.fma(FloatVector.broadcast(S, ds[p0]), k0);
                k1 = q0.fma(FloatVector.broadcast(S, ds[p0 + 1]), k1);
                k2 = q0.fma(FloatVector.broadcast(S, ds[p0 + 2]), k2);
                k3 = q0.fma(FloatVector.broadcast(S, ds[p0 + 3]), k3);
                w0 = d1.fma(FloatVector.broadcast(S, p[p1]), w0);
                w1 = d1.fma(FloatVector.broadcast(S, p[p1 + 1]), w1);
                w2 = d1.fma(FloatVector.broadcast(S, p[p1 + 2]), w2);
                w3 = d1.fma(FloatVector.broadcast(S, p[p1 + 3]), w3);
                l0 = q1.fma(FloatVector.broadcast(S, ds[p1]), l0);
                l1 = q1.fma(FloatVector.broadcast(S, ds[p1 + 1]), l1);
                l2 = q1.fma(FloatVector.broadcast(S, ds[p1 + 2]), l2);
                l3 = q1.fma(FloatVector.broadcast(S, ds[p1 + 3]), l3);
            }
            if (r < rows) {
                int o0 = bo + r * dp + cv, p0 = r * BK + j;
                FloatVector d0 = FloatVector.fromArray(S, dos, o0), q0 = FloatVector.fromArray(S, qs, o0);
                v0 = d0.fma(FloatVector.broadcast(S, p[p0]), v0);
                v1 = d0.fma(FloatVector.broadcast(S, p[p0 + 1]), v1);
                v2 = d0.fma(FloatVector.broadcast(S, p[p0 + 2]), v2);
                v3 = d0.fma(FloatVector.broadcast(S, p[p0 + 3]), v3);
                k0 = q0.fma(FloatVector.broadcast(S, ds[p0]), k0);
                k1 = q0.fma(FloatVector.broadcast(S, ds[p0 + 1]), k1);
                k2 = q0.fma(FloatVector.broadcast(S, ds[p0 + 2]), k2);
                k3 = q0.fma(FloatVector.broadcast(S, ds[p0 + 3]), k3);
            }
            v0.add(w0).intoArray(dvAcc, a0);
            v1.add(w1).intoArray(dvAcc, a1);
            v2.add(w2).intoArray(dvAcc, a2);
            v3.add(w3).intoArray(dvAcc, a3);
            k0.add(l0).intoArray(dkAcc, a0);
            k1.add(l1).intoArray(dkAcc, a1);
            k2.add(l2).intoArray(dkAcc, a2);
            k3.add(l3).intoArray(dkAcc, a3);
        }
    }

    public static void backward(Parallel par, MemorySegment dOut, MemorySegment q, MemorySegment k, MemorySegment v,
                                MemorySegment out, MemorySegment lse, MemorySegment dq, MemorySegment dk,
                                MemorySegment dv, int batch, int t, int heads, int kvHeads, int d) {
        int group = heads / kvHeads, dp = padded(d);
        float scale = (float) (1.0 / Math.sqrt(d));
        // delta[b,h,i] = dO·O = Σ_j p_j dP_j, laid out like lse (B,H,T).
        float[] delta = new float[batch * heads * t];
        par.forEach(batch * heads, bh -> {
            int b = bh / heads, h = bh % heads;
            for (int i = 0; i < t; i++) {
                long off = ((((long) b * t + i) * heads + h) * d) * 4;
                delta[bh * t + i] = (float) RmsNorm.dot(dOut, off, out, off, d);
            }
        });
        par.forEach(batch * kvHeads, task -> {
            int kh = task % kvHeads, b = task / kvHeads;
            backwardGroup(dOut, q, k, v, lse, dq, dk, dv, delta, b, kh, t, heads, kvHeads, group, d, dp, scale);
        });
    }

    /**
     * One (batch, kv head): every key block in order, each against the causal query rows of every query head of
     * the group. P and dS are computed once per (query, key) pair and feed all three gradients: dv and dk of the key
     * block (summed over heads and rows in order), and dq, accumulated in a task-local array over key blocks in order.
     * The task owns its dq, dk and dv rows, so the summation order never depends on the thread count.
     */
    private static void backwardGroup(MemorySegment dOut, MemorySegment q, MemorySegment k, MemorySegment v,
                                      MemorySegment lse, MemorySegment dq, MemorySegment dk, MemorySegment dv,
                                      float[] delta, int b, int kh, int t, int heads, int kvHeads, int group, int d,
                                      int dp, float scale) {
        int tp = (t + BQ - 1) / BQ * BQ; // rows padded to whole query blocks
        float[] qs = new float[group * tp * dp], dos = new float[group * tp * dp], dqAcc = new float[group * tp * dp];
        float[] lses = new float[group * t], deltas = new float[group * t];
        for (int g = 0; g < group; g++) {
            int h = kh * group + g;
            for (int i0 = 0; i0 < t; i0 += BQ) {
                int rows = Math.min(BQ, t - i0);
                loadRows(q, b, i0, rows, t, heads, h, d, dp, qs, (g * tp + i0) * dp);
                loadRows(dOut, b, i0, rows, t, heads, h, d, dp, dos, (g * tp + i0) * dp);
            }
            int li = (b * heads + h) * t;
            MemorySegment.copy(lse, F, (long) li * 4, lses, g * t, t);
            System.arraycopy(delta, li, deltas, g * t, t);
        }
        float[] kt = new float[d * BK], vt = new float[d * BK], kr = new float[BK * dp], tmp = new float[d];
        float[] p = new float[BQ * BK], ds = new float[BQ * BK];
        float[] dkAcc = new float[BK * dp], dvAcc = new float[BK * dp];
        for (int j0 = 0; j0 < t; j0 += BK) {
            int bk = Math.min(BK, t - j0);
            loadKeysT(k, v, b, t, kvHeads, kh, d, dp, j0, bk, kt, vt, kr, null, tmp);
            java.util.Arrays.fill(dkAcc, 0f);
            java.util.Arrays.fill(dvAcc, 0f);
            for (int g = 0; g < group; g++) {
                int qo = g * tp * dp;
                for (int i0 = j0 / BQ * BQ; i0 < t; i0 += BQ) {
                    int rows = Math.min(BQ, t - i0), bo = qo + i0 * dp;
                    for (int r = 0; r < rows; r++) {
                        int i = i0 + r, limit = Math.min(bk, i - j0 + 1);
                        if (limit <= 0) {
                            java.util.Arrays.fill(p, r * BK, (r + 1) * BK, 0f);
                            java.util.Arrays.fill(ds, r * BK, (r + 1) * BK, 0f);
                            continue;
                        }
                        if (r + 1 < rows) { // two rows share every key and value load (same bits as one at a time)
                            int limit1 = Math.min(bk, i + 1 - j0 + 1);
                            probs2(qs, dos, bo + r * dp, dp, kt, vt, d, limit, limit1, scale, lses[g * t + i],
                                    lses[g * t + i + 1], deltas[g * t + i], deltas[g * t + i + 1], p, ds, r * BK);
                            accumulateRows2(dqAcc, bo + r * dp, dp, ds, r * BK, kr, limit, limit1);
                            r++;
                            continue;
                        }
                        probs(qs, dos, bo + r * dp, kt, vt, d, limit, scale, lses[g * t + i], deltas[g * t + i], p, ds,
                                r * BK);
                        accumulateRows(dqAcc, bo + r * dp, dp, ds, r * BK, kr, limit);
                    }
                    // dv[j] += Σ_r P[r][j]·dO[r]; dk[j] += Σ_r dS[r][j]·q[r]
                    int jEnd = Math.min(bk, i0 + rows - j0);
                    int j = 0;
                    for (; j + 4 <= jEnd; j += 4) accumulateKeys4(dvAcc, dkAcc, dos, qs, p, ds, bo, rows, dp, j);
                    for (; j < jEnd; j++) {
                        for (int cv = 0; cv < dp; cv += VL) {
                            FloatVector av = FloatVector.fromArray(S, dvAcc, j * dp + cv), av1 = FloatVector.zero(S);
                            FloatVector ak = FloatVector.fromArray(S, dkAcc, j * dp + cv), ak1 = FloatVector.zero(S);
                            int r = 0;
                            for (; r + 1 < rows; r += 2) {
                                int o0 = bo + r * dp + cv, o1 = o0 + dp, p0 = r * BK + j, p1 = p0 + BK;
                                av = FloatVector.fromArray(S, dos, o0).fma(FloatVector.broadcast(S, p[p0]), av);
                                ak = FloatVector.fromArray(S, qs, o0).fma(FloatVector.broadcast(S, ds[p0]), ak);
                                av1 = FloatVector.fromArray(S, dos, o1).fma(FloatVector.broadcast(S, p[p1]), av1);
                                ak1 = FloatVector.fromArray(S, qs, o1).fma(FloatVector.broadcast(S, ds[p1]), ak1);
                            }
                            for (; r < rows; r++) {
                                int o0 = bo + r * dp + cv;
                                av = FloatVector.fromArray(S, dos, o0).fma(FloatVector.broadcast(S, p[r * BK + j]), av);
                                ak = FloatVector.fromArray(S, qs, o0).fma(FloatVector.broadcast(S, ds[r * BK + j]), ak);
                            }
                            av.add(av1).intoArray(dvAcc, j * dp + cv);
                            ak.add(ak1).intoArray(dkAcc, j * dp + cv);
                        }
                    }
                }
            }
            for (int j = 0; j < bk; j++) {
                long off = ((((long) b * t + j0 + j) * kvHeads + kh) * d) * 4;
                MemorySegment.copy(dkAcc, j * dp, dk, F, off, d);
                MemorySegment.copy(dvAcc, j * dp, dv, F, off, d);
            }
        }
        for (int g = 0; g < group; g++) {
            int h = kh * group + g;
            for (int i = 0; i < t; i++) {
                MemorySegment.copy(dqAcc, (g * tp + i) * dp, dq, F, ((((long) b * t + i) * heads + h) * d) * 4, d);
            }
        }
    }

    /** acc[ao..ao+dp) += Σ_{j<limit} w[wo+j] · rows[j]: four independent accumulators, added in a fixed order. */
    private static void accumulateRows(float[] acc, int ao, int dp, float[] w, int wo, float[] rows, int limit) {
        for (int cv = 0; cv < dp; cv += VL) {
            FloatVector a0 = FloatVector.fromArray(S, acc, ao + cv);
            FloatVector a1 = FloatVector.zero(S), a2 = a1, a3 = a1;
            int j = 0;
            for (; j + 3 < limit; j += 4) {
                a0 = FloatVector.fromArray(S, rows, j * dp + cv).fma(FloatVector.broadcast(S, w[wo + j]), a0);
                a1 = FloatVector.fromArray(S, rows, (j + 1) * dp + cv).fma(FloatVector.broadcast(S, w[wo + j + 1]), a1);
                a2 = FloatVector.fromArray(S, rows, (j + 2) * dp + cv).fma(FloatVector.broadcast(S, w[wo + j + 2]), a2);
                a3 = FloatVector.fromArray(S, rows, (j + 3) * dp + cv).fma(FloatVector.broadcast(S, w[wo + j + 3]), a3);
            }
            for (; j < limit; j++) {
                a0 = FloatVector.fromArray(S, rows, j * dp + cv).fma(FloatVector.broadcast(S, w[wo + j]), a0);
            }
            a0.add(a1).add(a2.add(a3)).intoArray(acc, ao + cv);
        }
    }

    /** Row-block loads: dst[off + r·dp ..] = src row of (b, i0+r, head) for r < rows; rows..BQ zeroed. */
    private static void loadRows(MemorySegment src, int b, int i0, int rows, int t, int nHeads, int head, int d,
                                 int dp, float[] dst, int off) {
        for (int r = 0; r < rows; r++) {
            MemorySegment.copy(src, F, ((((long) b * t + i0 + r) * nHeads + head) * d) * 4, dst, off + r * dp, d);
        }
        for (int r = rows; r < BQ; r++) java.util.Arrays.fill(dst, off + r * dp, off + r * dp + d, 0f);
    }

    /** kt/vt[c][j] = K/V[j0+j][c] transposed, kr[j][c] = K rows; padded with zeros. */
    private static void loadKeysT(MemorySegment k, MemorySegment v, int b, int t, int kvHeads, int kh, int d, int dp,
                                  int j0, int bk, float[] kt, float[] vt, float[] kr, float[] vr, float[] tmp) {
        for (int j = 0; j < BK; j++) {
            if (j < bk) {
                long off = ((((long) b * t + j0 + j) * kvHeads + kh) * d) * 4;
                MemorySegment.copy(k, F, off, tmp, 0, d);
                for (int c = 0; c < d; c++) kt[c * BK + j] = tmp[c];
                if (kr != null) System.arraycopy(tmp, 0, kr, j * dp, d);
                MemorySegment.copy(v, F, off, tmp, 0, d);
                for (int c = 0; c < d; c++) vt[c * BK + j] = tmp[c];
                if (vr != null) System.arraycopy(tmp, 0, vr, j * dp, d);
            } else {
                for (int c = 0; c < d; c++) {
                    kt[c * BK + j] = 0f;
                    vt[c * BK + j] = 0f;
                }
                if (kr != null) java.util.Arrays.fill(kr, j * dp, j * dp + d, 0f);
                if (vr != null) java.util.Arrays.fill(vr, j * dp, j * dp + d, 0f);
            }
        }
    }

    /**
     * For one query row: P[j] = exp(scale·q·k_j − lse) and dS[j] = P[j]·(dO·v_j − delta)·scale for j < limit,
     * zero beyond (nv vectors written).
     */
    /**
     * {@link #probs} for rows ro and ro + dp (the next query) with their own limits, lse and delta: each kᵀ and vᵀ
     * vector is loaded once for both. Each row's sums take {@link #probs}'s order exactly.
     */
    private static void probs2(float[] qs, float[] dos, int ro, int dp, float[] kt, float[] vt, int d, int limit0,
                               int limit1, float scale, float lse0, float lse1, float delta0, float delta1, float[] p,
                               float[] ds, int po) {
        FloatVector s0 = FloatVector.zero(S), s1 = s0, s2 = s0, s3 = s0, d0 = s0, d1 = s0, d2 = s0, d3 = s0;
        FloatVector t0 = s0, t1 = s0, t2 = s0, t3 = s0, e0 = s0, e1 = s0, e2 = s0, e3 = s0;
        int r1 = ro + dp;
        for (int c = 0; c < d; c++) {
            FloatVector qc = FloatVector.broadcast(S, qs[ro + c]), gc = FloatVector.broadcast(S, dos[ro + c]);
            FloatVector qd = FloatVector.broadcast(S, qs[r1 + c]), gd = FloatVector.broadcast(S, dos[r1 + c]);
            int ki = c * BK;
            FloatVector k0 = FloatVector.fromArray(S, kt, ki), k1 = FloatVector.fromArray(S, kt, ki + VL);
            FloatVector k2 = FloatVector.fromArray(S, kt, ki + 2 * VL), k3 = FloatVector.fromArray(S, kt, ki + 3 * VL);
            s0 = k0.fma(qc, s0);
            s1 = k1.fma(qc, s1);
            s2 = k2.fma(qc, s2);
            s3 = k3.fma(qc, s3);
            t0 = k0.fma(qd, t0);
            t1 = k1.fma(qd, t1);
            t2 = k2.fma(qd, t2);
            t3 = k3.fma(qd, t3);
            FloatVector v0 = FloatVector.fromArray(S, vt, ki), v1 = FloatVector.fromArray(S, vt, ki + VL);
            FloatVector v2 = FloatVector.fromArray(S, vt, ki + 2 * VL), v3 = FloatVector.fromArray(S, vt, ki + 3 * VL);
            d0 = v0.fma(gc, d0);
            d1 = v1.fma(gc, d1);
            d2 = v2.fma(gc, d2);
            d3 = v3.fma(gc, d3);
            e0 = v0.fma(gd, e0);
            e1 = v1.fma(gd, e1);
            e2 = v2.fma(gd, e2);
            e3 = v3.fma(gd, e3);
        }
        int pn = po + BK;
        s0.intoArray(p, po);
        s1.intoArray(p, po + VL);
        s2.intoArray(p, po + 2 * VL);
        s3.intoArray(p, po + 3 * VL);
        d0.intoArray(ds, po);
        d1.intoArray(ds, po + VL);
        d2.intoArray(ds, po + 2 * VL);
        d3.intoArray(ds, po + 3 * VL);
        t0.intoArray(p, pn);
        t1.intoArray(p, pn + VL);
        t2.intoArray(p, pn + 2 * VL);
        t3.intoArray(p, pn + 3 * VL);
        e0.intoArray(ds, pn);
        e1.intoArray(ds, pn + VL);
        e2.intoArray(ds, pn + 2 * VL);
        e3.intoArray(ds, pn + 3 * VL);
        finishProbs(p, ds, po, limit0, scale, lse0, delta0);
        finishProbs(p, ds, pn, limit1, scale, lse1, delta1);
    }

    /** p = exp(scale·s − lse) masked past limit, ds = p·(dP − delta)·scale, in place. */
    private static void finishProbs(float[] p, float[] ds, int po, int limit, float scale, float lse, float delta) {
        VMath.exp(p, po, p, po, BK, scale, lse);
        FloatVector zero = FloatVector.zero(S);
        for (int j = 0; j < BK; j += VL) {
            FloatVector pv = zero.blend(FloatVector.fromArray(S, p, po + j), S.indexInRange(j, limit));
            pv.intoArray(p, po + j);
            pv.mul(FloatVector.fromArray(S, ds, po + j).sub(delta)).mul(scale).intoArray(ds, po + j);
        }
    }

    /**
     * {@link #accumulateRows} for two consecutive rows (acc rows ao and ao + dp, weights at wo and wo + BK) with
     * their own limits: the key rows shared while both need them, then each row finishes alone, so each row's sum
     * takes the single-row order exactly.
     */
    private static void accumulateRows2(float[] acc, int ao, int dp, float[] w, int wo, float[] rows, int limit0,
                                        int limit1) {
        int both = Math.min(limit0, limit1) / 4 * 4, ao1 = ao + dp, wo1 = wo + BK;
        for (int cv = 0; cv < dp; cv += VL) {
            FloatVector a0 = FloatVector.fromArray(S, acc, ao + cv), a1 = FloatVector.zero(S), a2 = a1, a3 = a1;
            FloatVector b0 = FloatVector.fromArray(S, acc, ao1 + cv), b1 = a1, b2 = a1, b3 = a1;
            int j = 0;
            for (; j < both; j += 4) {
                FloatVector r0 = FloatVector.fromArray(S, rows, j * dp + cv), r1 = FloatVector.fromArray(S, rows, (j + 1) * dp + cv);
                FloatVector r2 = FloatVector.fromArray(S, rows, (j + 2) * dp + cv), r3 = FloatVector.fromArray(S, rows, (j + 3) * dp + cv);
                a0 = r0.fma(FloatVector.broadcast(S, w[wo + j]), a0);
                a1 = r1.fma(FloatVector.broadcast(S, w[wo + j + 1]), a1);
                a2 = r2.fma(FloatVector.broadcast(S, w[wo + j + 2]), a2);
                a3 = r3.fma(FloatVector.broadcast(S, w[wo + j + 3]), a3);
                b0 = r0.fma(FloatVector.broadcast(S, w[wo1 + j]), b0);
                b1 = r1.fma(FloatVector.broadcast(S, w[wo1 + j + 1]), b1);
                b2 = r2.fma(FloatVector.broadcast(S, w[wo1 + j + 2]), b2);
                b3 = r3.fma(FloatVector.broadcast(S, w[wo1 + j + 3]), b3);
            }
            int ja = j;
            for (; ja + 3 < limit0; ja += 4) {
                a0 = FloatVector.fromArray(S, rows, ja * dp + cv).fma(FloatVector.broadcast(S, w[wo + ja]), a0);
                a1 = FloatVector.fromArray(S, rows, (ja + 1) * dp + cv).fma(FloatVector.broadcast(S, w[wo + ja + 1]), a1);
                a2 = FloatVector.fromArray(S, rows, (ja + 2) * dp + cv).fma(FloatVector.broadcast(S, w[wo + ja + 2]), a2);
                a3 = FloatVector.fromArray(S, rows, (ja + 3) * dp + cv).fma(FloatVector.broadcast(S, w[wo + ja + 3]), a3);
            }
            for (; ja < limit0; ja++) a0 = FloatVector.fromArray(S, rows, ja * dp + cv).fma(FloatVector.broadcast(S, w[wo + ja]), a0);
            int jb = j;
            for (; jb + 3 < limit1; jb += 4) {
                b0 = FloatVector.fromArray(S, rows, jb * dp + cv).fma(FloatVector.broadcast(S, w[wo1 + jb]), b0);
                b1 = FloatVector.fromArray(S, rows, (jb + 1) * dp + cv).fma(FloatVector.broadcast(S, w[wo1 + jb + 1]), b1);
                b2 = FloatVector.fromArray(S, rows, (jb + 2) * dp + cv).fma(FloatVector.broadcast(S, w[wo1 + jb + 2]), b2);
                b3 = FloatVector.fromArray(S, rows, (jb + 3) * dp + cv).fma(FloatVector.broadcast(S, w[wo1 + jb + 3]), b3);
            }
            for (; jb < limit1; jb++) b0 = FloatVector.fromArray(S, rows, jb * dp + cv).fma(FloatVector.broadcast(S, w[wo1 + jb]), b0);
            a0.add(a1).add(a2.add(a3)).intoArray(acc, ao + cv);
            b0.add(b1).add(b2.add(b3)).intoArray(acc, ao1 + cv);
        }
    }

    private static void probs(float[] qs, float[] dos, int ro, float[] kt, float[] vt, int d, int limit, float scale,
                              float lse, float delta, float[] p, float[] ds, int po) {
        FloatVector s0 = FloatVector.zero(S), s1 = s0, s2 = s0, s3 = s0, d0 = s0, d1 = s0, d2 = s0, d3 = s0;
        for (int c = 0; c < d; c++) {
            FloatVector qc = FloatVector.broadcast(S, qs[ro + c]), gc = FloatVector.broadcast(S, dos[ro + c]);
            int ki = c * BK;
            s0 = FloatVector.fromArray(S, kt, ki).fma(qc, s0);
            s1 = FloatVector.fromArray(S, kt, ki + VL).fma(qc, s1);
            s2 = FloatVector.fromArray(S, kt, ki + 2 * VL).fma(qc, s2);
            s3 = FloatVector.fromArray(S, kt, ki + 3 * VL).fma(qc, s3);
            d0 = FloatVector.fromArray(S, vt, ki).fma(gc, d0);
            d1 = FloatVector.fromArray(S, vt, ki + VL).fma(gc, d1);
            d2 = FloatVector.fromArray(S, vt, ki + 2 * VL).fma(gc, d2);
            d3 = FloatVector.fromArray(S, vt, ki + 3 * VL).fma(gc, d3);
        }
        s0.intoArray(p, po);
        s1.intoArray(p, po + VL);
        s2.intoArray(p, po + 2 * VL);
        s3.intoArray(p, po + 3 * VL);
        d0.intoArray(ds, po);
        d1.intoArray(ds, po + VL);
        d2.intoArray(ds, po + 2 * VL);
        d3.intoArray(ds, po + 3 * VL);
        VMath.exp(p, po, p, po, BK, scale, lse);
        FloatVector zero = FloatVector.zero(S);
        for (int j = 0; j < BK; j += VL) {
            FloatVector pv = zero.blend(FloatVector.fromArray(S, p, po + j), S.indexInRange(j, limit));
            pv.intoArray(p, po + j);
            pv.mul(FloatVector.fromArray(S, ds, po + j).sub(delta)).mul(scale).intoArray(ds, po + j);
        }
    }
}
