package dev.crucible.bench.lab;

import dev.crucible.cpu.blas.OpenBlas;

import dev.crucible.cpu.kernels.Parallel;
import dev.crucible.cpu.kernels.VMath;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Kernel lab, attention variant 3 (forward and backward; not in the backend: slower than the Java flash kernel at
 * training shapes, see bench/NOTES.md). Causal attention with grouped KV heads on OpenBLAS tiles: the products run as single-threaded {@code sgemm}s on
 * one block of {@link #BQ} query rows at a time, straight from the (B,T,H,D) activations (a head is a strided
 * matrix, leading dimension H·D), and the softmax in Java between them. Only a BQ × keys tile of scores lives at a
 * time (per task, in a Java array); the T × T matrix is never stored. The backward pass saves nothing extra either:
 * P is recomputed from lse.
 *
 * <p>Forward: one task per (batch, head, query block): S = Q_blk·Kᵀ, causal mask, row softmax (lse saved),
 * O_blk = P·V. Backward: one task per (batch, kv head), query heads of the group and query blocks in order:
 * P from lse, dP = dO_blk·Vᵀ, dS = P ⊙ (dP − rowsum(dO ⊙ O))·scale, then dV += Pᵀ·dO_blk, dK += dSᵀ·Q_blk (both
 * accumulated by sgemm with beta = 1 into rows the task owns) and dQ_blk = dS·K. Each output element has one owner
 * and one order of summation: the same bits for any thread count (for one OpenBLAS build and CPU kind).
 */
public final class AttentionBlasV3 {
    private AttentionBlasV3() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Query rows per tile. */
    public static final int BQ = 64;

    public static void forward(Parallel par, OpenBlas blas, MemorySegment q, MemorySegment k, MemorySegment v,
                               MemorySegment out, MemorySegment lse, int batch, int tq, int tk, int heads, int kvHeads,
                               int d, int qPos0, long kvBatchStride) {
        int qBlocks = Parallel.chunks(tq, BQ), group = heads / kvHeads, ldq = heads * d, ldk = kvHeads * d;
        float scale = (float) (1.0 / Math.sqrt(d));
        par.forEach(batch * heads * qBlocks, task -> {
            int qb = task % qBlocks, bh = task / qBlocks, h = bh % heads, b = bh / heads, kh = h / group;
            int i0 = qb * BQ, rows = Math.min(BQ, tq - i0), keys = Math.min(tk, qPos0 + i0 + rows);
            float[] s = new float[rows * keys];
            MemorySegment ss = MemorySegment.ofArray(s);
            MemorySegment qs = q.asSlice((((long) b * tq + i0) * heads + h) * d * 4);
            long kvOff = (b * kvBatchStride + (long) kh * d) * 4;
            blas.sgemmHeap(false, true, rows, keys, d, qs, ldq, k.asSlice(kvOff), ldk, 0f, ss, keys);
            for (int r = 0; r < rows; r++) {
                int limit = Math.min(keys, qPos0 + i0 + r + 1), o = r * keys;
                float max = Float.NEGATIVE_INFINITY;
                for (int j = 0; j < limit; j++) max = Math.max(max, s[o + j]);
                float m = max * scale;
                float sum = VMath.exp(s, o, s, o, limit, scale, m);
                float inv = 1f / sum;
                scaleRow(s, o, limit, inv);
                java.util.Arrays.fill(s, o + limit, o + keys, 0f);
                if (lse != null) lse.setAtIndex(F, ((long) b * heads + h) * tq + i0 + r, m + (float) StrictMath.log(sum));
            }
            blas.sgemmHeap(false, false, rows, d, keys, ss, keys, v.asSlice(kvOff), ldk, 0f,
                    out.asSlice((((long) b * tq + i0) * heads + h) * d * 4), ldq);
        });
    }

    public static void backward(Parallel par, OpenBlas blas, MemorySegment dOut, MemorySegment q, MemorySegment k,
                                MemorySegment v, MemorySegment out, MemorySegment lse, MemorySegment dq,
                                MemorySegment dk, MemorySegment dv, int batch, int t, int heads, int kvHeads, int d) {
        int group = heads / kvHeads, ldq = heads * d, ldk = kvHeads * d;
        float scale = (float) (1.0 / Math.sqrt(d));
        par.forEach(batch * kvHeads, task -> {
            int kh = task % kvHeads, b = task / kvHeads;
            long kvOff = (((long) b * t) * kvHeads + kh) * d * 4;
            for (int i = 0; i < t; i++) {
                long off = kvOff + (long) i * ldk * 4;
                dk.asSlice(off, d * 4L).fill((byte) 0);
                dv.asSlice(off, d * 4L).fill((byte) 0);
            }
            MemorySegment ks = k.asSlice(kvOff), vs = v.asSlice(kvOff), dks = dk.asSlice(kvOff), dvs = dv.asSlice(kvOff);
            float[] p = new float[BQ * t], dp = new float[BQ * t];
            MemorySegment ps = MemorySegment.ofArray(p), dps = MemorySegment.ofArray(dp);
            for (int g = 0; g < group; g++) {
                int h = kh * group + g;
                for (int i0 = 0; i0 < t; i0 += BQ) {
                    int rows = Math.min(BQ, t - i0), keys = i0 + rows;
                    long qOff = (((long) b * t + i0) * heads + h) * d * 4;
                    MemorySegment qs = q.asSlice(qOff), dos = dOut.asSlice(qOff);
                    blas.sgemmHeap(false, true, rows, keys, d, qs, ldq, ks, ldk, 0f, ps, keys);   // S
                    blas.sgemmHeap(false, true, rows, keys, d, dos, ldq, vs, ldk, 0f, dps, keys); // dP
                    for (int r = 0; r < rows; r++) {
                        int i = i0 + r, limit = i + 1, o = r * keys;
                        long row = qOff + (long) r * ldq * 4;
                        float delta = (float) dot(dOut, row, out, row, d);
                        float l = lse.getAtIndex(F, ((long) b * heads + h) * t + i);
                        VMath.exp(p, o, p, o, limit, scale, l);
                        java.util.Arrays.fill(p, o + limit, o + keys, 0f);
                        dScores(p, dp, o, limit, delta, scale);
                        java.util.Arrays.fill(dp, o + limit, o + keys, 0f);
                    }
                    blas.sgemmHeap(true, false, keys, d, rows, ps, keys, dos, ldq, 1f, dvs, ldk);          // dV += Pᵀ·dO
                    blas.sgemmHeap(true, false, keys, d, rows, dps, keys, qs, ldq, 1f, dks, ldk);          // dK += dSᵀ·Q
                    blas.sgemmHeap(false, false, rows, d, keys, dps, keys, ks, ldk, 0f, dq.asSlice(qOff), ldq); // dQ
                }
            }
        });
    }

    /** ds[o+j] = p[o+j]·(ds[o+j] − delta)·scale for j < len (ds holds dP on entry). */
    private static void dScores(float[] p, float[] ds, int o, int len, float delta, float scale) {
        int j = 0;
        for (int end = len - S.length(); j <= end; j += S.length()) {
            FloatVector pv = FloatVector.fromArray(S, p, o + j);
            pv.mul(FloatVector.fromArray(S, ds, o + j).sub(delta)).mul(scale).intoArray(ds, o + j);
        }
        for (; j < len; j++) ds[o + j] = p[o + j] * (ds[o + j] - delta) * scale;
    }

    private static void scaleRow(float[] s, int o, int len, float f) {
        int j = 0;
        for (int end = len - S.length(); j <= end; j += S.length()) {
            FloatVector.fromArray(S, s, o + j).mul(f).intoArray(s, o + j);
        }
        for (; j < len; j++) s[o + j] *= f;
    }

    /** Σ a·b over len floats at byte offsets, float vectors reduced in a fixed order, carried in double. */
    private static double dot(MemorySegment a, long aOff, MemorySegment b, long bOff, int len) {
        FloatVector acc = FloatVector.zero(S);
        int c = 0;
        for (int end = len - S.length(); c <= end; c += S.length()) {
            acc = FloatVector.fromMemorySegment(S, a, aOff + c * 4L, NATIVE)
                    .fma(FloatVector.fromMemorySegment(S, b, bOff + c * 4L, NATIVE), acc);
        }
        double s = VMath.sum(acc);
        for (; c < len; c++) s += (double) a.get(F, aOff + c * 4L) * b.get(F, bOff + c * 4L);
        return s;
    }
}
