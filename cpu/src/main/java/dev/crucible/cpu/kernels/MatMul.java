package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * c(M,N) (+)= op(a)(M,K) · op(b)(K,N), the hot spot of training.
 *
 * <p>General shapes use a packed, register-blocked GEMM (the BLIS/GotoBLAS scheme): C is cut into MC×NC tiles, one
 * task each. A task walks K in blocks of {@link #KC}; per block it packs its slice of op(a) into MR-row micro-panels
 * and its slice of op(b) into NR-column micro-panels (zero-padded, so the micro-kernel never sees a ragged edge and
 * transposes cost only the packing), then runs an MR×NR micro-kernel that keeps the C tile in registers while it
 * streams one micro-panel of each. Every C element is thus summed in the same order (p within a K block, K blocks
 * in order) whatever the tiling of M and N or the thread count: results are bit-identical across thread counts.
 *
 * <p>Skinny shapes (M < {@link #SKINNY_M}, e.g. one token of inference) are memory-bound matrix-vector products
 * and take a direct path over N without packing.
 */
public final class MatMul {
    private MatMul() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int VL = S.length();
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /** Micro-tile: MR rows of C by NR columns (two vectors), 12 accumulators with 512-bit vectors. */
    static final int MR = 6;
    static final int NR = 2 * VL;
    /** K block: the B micro-panel (KC × NR floats) stays in L1, the packed A tile (MC × KC) in L2. */
    public static final int KC = 256;
    static final int MC = 32 * MR;
    static final int NC = 16 * NR;
    static final int SKINNY_M = 4;

    public static void gemm(Parallel par, MemorySegment a, MemorySegment b, MemorySegment c, int m, int n, int k,
                            boolean transA, boolean transB, boolean accumulate) {
        if (m < SKINNY_M) {
            skinny(par, a, b, c, m, n, k, transA, transB, accumulate);
            return;
        }
        int tilesM = Parallel.chunks(m, MC), tilesN = Parallel.chunks(n, NC);
        par.forEach(tilesM * tilesN, t -> {
            int tm = t / tilesN, tn = t % tilesN;
            int i0 = tm * MC, mc = Math.min(MC, m - i0);
            int j0 = tn * NC, nc = Math.min(NC, n - j0);
            tile(a, b, c, m, n, k, transA, transB, accumulate, i0, mc, j0, nc);
        });
    }

    private static void tile(MemorySegment a, MemorySegment b, MemorySegment c, int m, int n, int k, boolean transA,
                             boolean transB, boolean accumulate, int i0, int mc, int j0, int nc) {
        int mPanels = (mc + MR - 1) / MR, nPanels = (nc + NR - 1) / NR;
        int kcMax = Math.min(KC, k);
        float[] ap = new float[mPanels * MR * kcMax];
        float[] bp = new float[nPanels * NR * kcMax];
        float[] row = new float[Math.max(Math.max(mPanels * MR, nPanels * NR), kcMax)];
        float[] edge = new float[MR * NR];
        for (int p0 = 0; p0 < k; p0 += KC) {
            int kc = Math.min(KC, k - p0);
            boolean overwrite = p0 == 0 && !accumulate;
            if (transA) packAT(a, m, p0, kc, i0, mc, ap, row);
            else packA(a, k, p0, kc, i0, mc, ap, row);
            if (transB) packBT(b, k, p0, kc, j0, nc, bp, row);
            else packB(b, n, p0, kc, j0, nc, bp, row);
            for (int jp = 0; jp < nPanels; jp++) {
                int col = j0 + jp * NR, cols = Math.min(NR, j0 + nc - col);
                for (int ip = 0; ip < mPanels; ip++) {
                    int r0 = i0 + ip * MR, rows = Math.min(MR, i0 + mc - r0);
                    kernel6x2(ap, ip * MR * kc, bp, jp * NR * kc, kc, c, n, r0, col, rows, cols, overwrite, edge);
                }
            }
        }
    }

    // ---- packing: ap[panel][p][r] (MR rows), bp[panel][p][j] (NR columns), zero-padded --------------------------

    /** a stored (M,K): rows of A are contiguous along p. */
    private static void packA(MemorySegment a, int k, int p0, int kc, int i0, int mc, float[] ap, float[] row) {
        int mPanels = (mc + MR - 1) / MR;
        for (int ip = 0; ip < mPanels; ip++) {
            int base = ip * MR * kc;
            for (int r = 0; r < MR; r++) {
                int i = ip * MR + r;
                if (i < mc) {
                    MemorySegment.copy(a, F, ((long) (i0 + i) * k + p0) * 4, row, 0, kc);
                    for (int p = 0; p < kc; p++) ap[base + p * MR + r] = row[p];
                } else {
                    for (int p = 0; p < kc; p++) ap[base + p * MR + r] = 0f;
                }
            }
        }
    }

    /** a stored (K,M) (transA): a row of the stored matrix holds one p for every i. */
    private static void packAT(MemorySegment a, int m, int p0, int kc, int i0, int mc, float[] ap, float[] row) {
        int mPanels = (mc + MR - 1) / MR, padded = mPanels * MR;
        for (int i = mc; i < padded; i++) row[i] = 0f;
        for (int p = 0; p < kc; p++) {
            MemorySegment.copy(a, F, ((long) (p0 + p) * m + i0) * 4, row, 0, mc);
            for (int ip = 0; ip < mPanels; ip++) {
                System.arraycopy(row, ip * MR, ap, ip * MR * kc + p * MR, MR);
            }
        }
    }

    /** b stored (K,N): a row of b holds one p for every j. */
    private static void packB(MemorySegment b, int n, int p0, int kc, int j0, int nc, float[] bp, float[] row) {
        int nPanels = (nc + NR - 1) / NR, padded = nPanels * NR;
        for (int j = nc; j < padded; j++) row[j] = 0f;
        for (int p = 0; p < kc; p++) {
            MemorySegment.copy(b, F, ((long) (p0 + p) * n + j0) * 4, row, 0, nc);
            for (int jp = 0; jp < nPanels; jp++) {
                int src = jp * NR, dst = jp * NR * kc + p * NR;
                FloatVector.fromArray(S, row, src).intoArray(bp, dst);
                FloatVector.fromArray(S, row, src + VL).intoArray(bp, dst + VL);
            }
        }
    }

    /** b stored (N,K) (transB): a row of b holds every p for one j. */
    private static void packBT(MemorySegment b, int k, int p0, int kc, int j0, int nc, float[] bp, float[] row) {
        int nPanels = (nc + NR - 1) / NR;
        for (int jp = 0; jp < nPanels; jp++) {
            int base = jp * NR * kc;
            for (int jj = 0; jj < NR; jj++) {
                int j = jp * NR + jj;
                if (j < nc) {
                    MemorySegment.copy(b, F, ((long) (j0 + j) * k + p0) * 4, row, 0, kc);
                    for (int p = 0; p < kc; p++) bp[base + p * NR + jj] = row[p];
                } else {
                    for (int p = 0; p < kc; p++) bp[base + p * NR + jj] = 0f;
                }
            }
        }
    }

    // ---- micro-kernel ---------------------------------------------------------------------------------------------

    /** C[r0.., col..] (+)= Σ_p ap[p][r] · bp[p][j] over one packed micro-panel pair. */
    private static void kernel6x2(float[] ap, int ao, float[] bp, int bo, int kc, MemorySegment c, int ldc, int r0,
                                  int col, int rows, int cols, boolean overwrite, float[] edge) {
        FloatVector c00 = FloatVector.zero(S), c01 = FloatVector.zero(S);
        FloatVector c10 = FloatVector.zero(S), c11 = FloatVector.zero(S);
        FloatVector c20 = FloatVector.zero(S), c21 = FloatVector.zero(S);
        FloatVector c30 = FloatVector.zero(S), c31 = FloatVector.zero(S);
        FloatVector c40 = FloatVector.zero(S), c41 = FloatVector.zero(S);
        FloatVector c50 = FloatVector.zero(S), c51 = FloatVector.zero(S);
        for (int p = 0; p < kc; p++) {
            int bi = bo + p * NR, ai = ao + p * MR;
            FloatVector b0 = FloatVector.fromArray(S, bp, bi);
            FloatVector b1 = FloatVector.fromArray(S, bp, bi + VL);
            FloatVector a0 = FloatVector.broadcast(S, ap[ai]);
            c00 = b0.fma(a0, c00);
            c01 = b1.fma(a0, c01);
            FloatVector a1 = FloatVector.broadcast(S, ap[ai + 1]);
            c10 = b0.fma(a1, c10);
            c11 = b1.fma(a1, c11);
            FloatVector a2 = FloatVector.broadcast(S, ap[ai + 2]);
            c20 = b0.fma(a2, c20);
            c21 = b1.fma(a2, c21);
            FloatVector a3 = FloatVector.broadcast(S, ap[ai + 3]);
            c30 = b0.fma(a3, c30);
            c31 = b1.fma(a3, c31);
            FloatVector a4 = FloatVector.broadcast(S, ap[ai + 4]);
            c40 = b0.fma(a4, c40);
            c41 = b1.fma(a4, c41);
            FloatVector a5 = FloatVector.broadcast(S, ap[ai + 5]);
            c50 = b0.fma(a5, c50);
            c51 = b1.fma(a5, c51);
        }
        if (rows == MR && cols == NR) {
            long off = ((long) r0 * ldc + col) * 4, ld = (long) ldc * 4;
            store(c, off, c00, c01, overwrite);
            store(c, off + ld, c10, c11, overwrite);
            store(c, off + 2 * ld, c20, c21, overwrite);
            store(c, off + 3 * ld, c30, c31, overwrite);
            store(c, off + 4 * ld, c40, c41, overwrite);
            store(c, off + 5 * ld, c50, c51, overwrite);
            return;
        }
        c00.intoArray(edge, 0);
        c01.intoArray(edge, VL);
        c10.intoArray(edge, NR);
        c11.intoArray(edge, NR + VL);
        c20.intoArray(edge, 2 * NR);
        c21.intoArray(edge, 2 * NR + VL);
        c30.intoArray(edge, 3 * NR);
        c31.intoArray(edge, 3 * NR + VL);
        c40.intoArray(edge, 4 * NR);
        c41.intoArray(edge, 4 * NR + VL);
        c50.intoArray(edge, 5 * NR);
        c51.intoArray(edge, 5 * NR + VL);
        storeEdge(c, ldc, r0, col, rows, cols, overwrite, edge);
    }

    private static void store(MemorySegment c, long off, FloatVector v0, FloatVector v1, boolean overwrite) {
        if (!overwrite) {
            v0 = v0.add(FloatVector.fromMemorySegment(S, c, off, NATIVE));
            v1 = v1.add(FloatVector.fromMemorySegment(S, c, off + VL * 4L, NATIVE));
        }
        v0.intoMemorySegment(c, off, NATIVE);
        v1.intoMemorySegment(c, off + VL * 4L, NATIVE);
    }

    private static void storeEdge(MemorySegment c, int ldc, int r0, int col, int rows, int cols, boolean overwrite,
                                  float[] edge) {
        for (int r = 0; r < rows; r++) {
            long off = (long) (r0 + r) * ldc + col;
            for (int j = 0; j < cols; j++) {
                float v = edge[r * NR + j];
                c.setAtIndex(F, off + j, overwrite ? v : c.getAtIndex(F, off + j) + v);
            }
        }
    }

    // ---- skinny M: matrix-vector products -------------------------------------------------------------------------

    static final int SKINNY_COLS = 256;

    private static void skinny(Parallel par, MemorySegment a, MemorySegment b, MemorySegment c, int m, int n, int k,
                               boolean transA, boolean transB, boolean accumulate) {
        // The rows of op(a), gathered once (m·k floats, small).
        float[][] rows = new float[m][k];
        for (int i = 0; i < m; i++) {
            if (transA) for (int p = 0; p < k; p++) rows[i][p] = a.getAtIndex(F, (long) p * m + i);
            else MemorySegment.copy(a, F, (long) i * k * 4, rows[i], 0, k);
        }
        par.forEach(Parallel.chunks(n, SKINNY_COLS), t -> {
            int j0 = t * SKINNY_COLS, j1 = Math.min(n, j0 + SKINNY_COLS);
            if (transB) {
                for (int i = 0; i < m; i++) {
                    for (int j = j0; j < j1; j++) {
                        float s = dot(rows[i], b, (long) j * k * 4, k);
                        long ci = (long) i * n + j;
                        c.setAtIndex(F, ci, accumulate ? c.getAtIndex(F, ci) + s : s);
                    }
                }
            } else {
                float[] acc = new float[j1 - j0];
                for (int i = 0; i < m; i++) {
                    java.util.Arrays.fill(acc, 0f);
                    for (int p = 0; p < k; p++) axpy(rows[i][p], b, ((long) p * n + j0) * 4, acc);
                    long ci = (long) i * n + j0;
                    for (int j = 0; j < acc.length; j++) {
                        c.setAtIndex(F, ci + j, accumulate ? c.getAtIndex(F, ci + j) + acc[j] : acc[j]);
                    }
                }
            }
        });
    }

    private static float dot(float[] x, MemorySegment b, long off, int k) {
        FloatVector acc0 = FloatVector.zero(S), acc1 = FloatVector.zero(S);
        int p = 0;
        for (int end = k - 2 * VL; p <= end; p += 2 * VL) {
            acc0 = FloatVector.fromArray(S, x, p).fma(FloatVector.fromMemorySegment(S, b, off + p * 4L, NATIVE), acc0);
            acc1 = FloatVector.fromArray(S, x, p + VL)
                    .fma(FloatVector.fromMemorySegment(S, b, off + (p + VL) * 4L, NATIVE), acc1);
        }
        for (int end = k - VL; p <= end; p += VL) {
            acc0 = FloatVector.fromArray(S, x, p).fma(FloatVector.fromMemorySegment(S, b, off + p * 4L, NATIVE), acc0);
        }
        float s = VMath.sum(acc0.add(acc1));
        for (; p < k; p++) s = Math.fma(x[p], b.get(F, off + p * 4L), s);
        return s;
    }

    private static void axpy(float alpha, MemorySegment b, long off, float[] acc) {
        int j = 0;
        for (int end = acc.length - VL; j <= end; j += VL) {
            FloatVector.fromMemorySegment(S, b, off + j * 4L, NATIVE)
                    .fma(FloatVector.broadcast(S, alpha), FloatVector.fromArray(S, acc, j)).intoArray(acc, j);
        }
        for (; j < acc.length; j++) acc[j] = Math.fma(b.get(F, off + j * 4L), alpha, acc[j]);
    }
}
