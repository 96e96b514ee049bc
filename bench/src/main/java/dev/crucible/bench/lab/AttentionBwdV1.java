package dev.crucible.bench.lab;

import dev.crucible.cpu.kernels.Parallel;
import dev.crucible.cpu.kernels.VMath;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Kernel lab, attention backward variant 1: the CPU backend's first version (two passes: dk/dv per key block, then
 * dq per query block, recomputing P and dS in each). Kept verbatim for comparison; see bench/NOTES.md.
 */
public final class AttentionBwdV1 {
    private AttentionBwdV1() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int VL = S.length();
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Query rows per task. */
    public static final int BQ = 32;
    /** Keys per block: a multiple of the vector length. */
    public static final int BK = 4 * VL;

    static int padded(int d) {
        return (d + VL - 1) / VL * VL;
    }

    // ---- backward -------------------------------------------------------------------------------------------------

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
                delta[bh * t + i] = (float) dot(dOut, off, out, off, d);
            }
        });
        int kBlocks = Parallel.chunks(t, BK);
        par.forEach(batch * kvHeads * kBlocks, task -> {
            int kb = task % kBlocks, bkh = task / kBlocks, kh = bkh % kvHeads, b = bkh / kvHeads;
            dkdv(dOut, q, k, v, lse, dk, dv, delta, b, kh, kb * BK, t, heads, kvHeads, group, d, dp, scale);
        });
        int qBlocks = Parallel.chunks(t, BQ);
        par.forEach(batch * heads * qBlocks, task -> {
            int qb = task % qBlocks, bh = task / qBlocks, h = bh % heads, b = bh / heads;
            dqBlock(dOut, q, k, v, lse, dq, delta, b, h, qb * BQ, t, heads, kvHeads, group, d, dp, scale);
        });
    }

    /** Row-block loads: dst[r][0..d) = src row of (b, i0+r, head) for r < rows, in a [BQ][dp] array. */
    private static void loadRows(MemorySegment src, int b, int i0, int rows, int t, int nHeads, int head, int d,
                                 int dp, float[] dst) {
        for (int r = 0; r < rows; r++) {
            MemorySegment.copy(src, F, ((((long) b * t + i0 + r) * nHeads + head) * d) * 4, dst, r * dp, d);
        }
        for (int r = rows; r < BQ; r++) java.util.Arrays.fill(dst, r * dp, r * dp + d, 0f);
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

    private static void dkdv(MemorySegment dOut, MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment lse,
                             MemorySegment dk, MemorySegment dv, float[] delta, int b, int kh, int j0, int t,
                             int heads, int kvHeads, int group, int d, int dp, float scale) {
        int bk = Math.min(BK, t - j0);
        float[] kt = new float[d * BK], vt = new float[d * BK], tmp = new float[d];
        float[] qs = new float[BQ * dp], dos = new float[BQ * dp];
        float[] p = new float[BQ * BK], ds = new float[BQ * BK];
        float[] dkAcc = new float[BK * dp], dvAcc = new float[BK * dp];
        loadKeysT(k, v, b, t, kvHeads, kh, d, dp, j0, bk, kt, vt, null, null, tmp);
        for (int g = 0; g < group; g++) {
            int h = kh * group + g;
            for (int i0 = j0; i0 < t; i0 += BQ) {
                int rows = Math.min(BQ, t - i0);
                loadRows(q, b, i0, rows, t, heads, h, d, dp, qs);
                loadRows(dOut, b, i0, rows, t, heads, h, d, dp, dos);
                for (int r = 0; r < rows; r++) {
                    int i = i0 + r, limit = Math.min(bk, i - j0 + 1);
                    int li = (b * heads + h) * t + i;
                    probs(qs, dos, r * dp, kt, vt, d, limit, scale, lse.getAtIndex(F, li), delta[li], p, ds, r * BK);
                }
                // dv[j] += Σ_r P[r][j]·dO[r]; dk[j] += Σ_r dS[r][j]·q[r]
                int jEnd = Math.min(bk, i0 + rows - j0);
                for (int j = 0; j < jEnd; j++) {
                    for (int cv = 0; cv < dp; cv += VL) {
                        FloatVector av = FloatVector.fromArray(S, dvAcc, j * dp + cv), av1 = FloatVector.zero(S);
                        FloatVector ak = FloatVector.fromArray(S, dkAcc, j * dp + cv), ak1 = FloatVector.zero(S);
                        int r = 0;
                        for (; r + 1 < rows; r += 2) {
                            int o0 = r * dp + cv, o1 = o0 + dp, p0 = r * BK + j, p1 = p0 + BK;
                            av = FloatVector.fromArray(S, dos, o0).fma(FloatVector.broadcast(S, p[p0]), av);
                            ak = FloatVector.fromArray(S, qs, o0).fma(FloatVector.broadcast(S, ds[p0]), ak);
                            av1 = FloatVector.fromArray(S, dos, o1).fma(FloatVector.broadcast(S, p[p1]), av1);
                            ak1 = FloatVector.fromArray(S, qs, o1).fma(FloatVector.broadcast(S, ds[p1]), ak1);
                        }
                        for (; r < rows; r++) {
                            av = FloatVector.fromArray(S, dos, r * dp + cv).fma(FloatVector.broadcast(S, p[r * BK + j]), av);
                            ak = FloatVector.fromArray(S, qs, r * dp + cv).fma(FloatVector.broadcast(S, ds[r * BK + j]), ak);
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

    private static void dqBlock(MemorySegment dOut, MemorySegment q, MemorySegment k, MemorySegment v,
                                MemorySegment lse, MemorySegment dq, float[] delta, int b, int h, int i0, int t,
                                int heads, int kvHeads, int group, int d, int dp, float scale) {
        int kh = h / group, rows = Math.min(BQ, t - i0);
        float[] kt = new float[d * BK], vt = new float[d * BK], kr = new float[BK * dp], tmp = new float[d];
        float[] qs = new float[BQ * dp], dos = new float[BQ * dp], dqAcc = new float[BQ * dp];
        float[] p = new float[BK], ds = new float[BK];
        loadRows(q, b, i0, rows, t, heads, h, d, dp, qs);
        loadRows(dOut, b, i0, rows, t, heads, h, d, dp, dos);
        int keys = i0 + rows;
        for (int j0 = 0; j0 < keys; j0 += BK) {
            int bk = Math.min(BK, keys - j0);
            loadKeysT(k, v, b, t, kvHeads, kh, d, dp, j0, bk, kt, vt, kr, null, tmp);
            for (int r = 0; r < rows; r++) {
                int i = i0 + r, limit = Math.min(bk, i - j0 + 1);
                if (limit <= 0) continue;
                int li = (b * heads + h) * t + i;
                probs(qs, dos, r * dp, kt, vt, d, limit, scale, lse.getAtIndex(F, li), delta[li], p, ds, 0);
                for (int cv = 0; cv < dp; cv += VL) {
                    FloatVector a0 = FloatVector.fromArray(S, dqAcc, r * dp + cv);
                    FloatVector a1 = FloatVector.zero(S), a2 = a1, a3 = a1;
                    int j = 0;
                    for (; j + 3 < limit; j += 4) {
                        a0 = FloatVector.fromArray(S, kr, j * dp + cv).fma(FloatVector.broadcast(S, ds[j]), a0);
                        a1 = FloatVector.fromArray(S, kr, (j + 1) * dp + cv).fma(FloatVector.broadcast(S, ds[j + 1]), a1);
                        a2 = FloatVector.fromArray(S, kr, (j + 2) * dp + cv).fma(FloatVector.broadcast(S, ds[j + 2]), a2);
                        a3 = FloatVector.fromArray(S, kr, (j + 3) * dp + cv).fma(FloatVector.broadcast(S, ds[j + 3]), a3);
                    }
                    for (; j < limit; j++) {
                        a0 = FloatVector.fromArray(S, kr, j * dp + cv).fma(FloatVector.broadcast(S, ds[j]), a0);
                    }
                    a0.add(a1).add(a2.add(a3)).intoArray(dqAcc, r * dp + cv);
                }
            }
        }
        for (int r = 0; r < rows; r++) {
            MemorySegment.copy(dqAcc, r * dp, dq, F, ((((long) b * t + i0 + r) * heads + h) * d) * 4, d);
        }
    }

    private static double dot(MemorySegment a, long aOff, MemorySegment b, long bOff, int len) {
        FloatVector acc = FloatVector.zero(S);
        int c = 0;
        for (int vend = len - VL; c <= vend; c += VL) {
            acc = FloatVector.fromMemorySegment(S, a, aOff + c * 4L, NATIVE)
                    .fma(FloatVector.fromMemorySegment(S, b, bOff + c * 4L, NATIVE), acc);
        }
        double s = VMath.sum(acc);
        for (; c < len; c++) s += (double) a.get(F, aOff + c * 4L) * b.get(F, bOff + c * 4L);
        return s;
    }
}
