package dev.crucible.cpu.kernels;

import dev.crucible.tensor.DType;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * c(M,N) (+)= op(a)(M,K) · op(b)(K,N), the hot spot of training.
 *
 * <p>General shapes use a packed, register-blocked GEMM (the BLIS/GotoBLAS scheme) in two parallel phases. First
 * op(a) is packed into MR-row micro-panels and op(b) into NR-column micro-panels, per K block of {@link #KC}, zero
 * padded (so the micro-kernel never sees a ragged edge, and transposes cost only the packing, once per element).
 * Then each MC×NC tile of C is one task: for each K block in order it runs an MR×NR micro-kernel that keeps the C
 * tile in registers while streaming one A and one B micro-panel (the B panel stays in L1, the tile's A panels in
 * L2). Every C element is summed in the same order (p within a K block, K blocks in order) whatever the tiling or
 * the thread count: results are bit-identical across thread counts.
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
    /**
     * K up to this is one block (the B micro-panel, K × NR floats, still fits L1): a K of 288 as 256 + 32 would
     * store and reload every C tile for a 32-deep second pass.
     */
    static final int KC_SINGLE = 320;

    /**
     * A tile extent for a dimension: at most {@code max}, a multiple of {@code unit}, and splitting the dimension
     * into near-equal tiles (N = 288 as 160 + 128, not 256 + 32, so two threads get similar work). Only the tiling
     * changes; every element's sum is the same, so results do not depend on it.
     */
    static int balanced(int dim, int max, int unit) {
        int tiles = (dim + max - 1) / max;
        int size = (dim + tiles - 1) / tiles;
        return Math.min(max, (size + unit - 1) / unit * unit);
    }

    /** The K block for a given K: depends on the shape only (so on nothing a thread count could change). */
    static int blockK(int k) {
        return k <= KC_SINGLE ? k : KC;
    }
    static final int MC = 32 * MR;
    static final int NC = 8 * NR;
    /** Micro-panels per packing task. */
    static final int PACK_PANELS = 16;
    /**
     * Below this many rows of C, a matmul is a batch of dot products (decode steps of up to 31 sequences): packing
     * transposes every element of B once per call, which only pays when many rows reuse it.
     */
    public static final int SKINNY_M = 32;

    public static void gemm(Parallel par, MemorySegment a, MemorySegment b, MemorySegment c, int m, int n, int k,
                            boolean transA, boolean transB, boolean accumulate) {
        gemm(par, a, b, DType.F32, c, m, n, k, transA, transB, accumulate);
    }

    /**
     * As above with b stored as {@code bType}: anything but F32 is a weight matrix (N,K) of whole blocks (transB),
     * decoded by {@link WeightRows} while packing, or consumed in place by the skinny path.
     */
    public static void gemm(Parallel par, MemorySegment a, MemorySegment b, DType bType, MemorySegment c, int m, int n,
                            int k, boolean transA, boolean transB, boolean accumulate) {
        if (bType != DType.F32 && (!transB || transA)) throw new IllegalArgumentException(bType + " b must be (N,K), transB");
        if (m < SKINNY_M) {
            skinny(par, a, b, bType, c, m, n, k, transA, transB, accumulate);
            return;
        }
        // Stored weights (inference) up to a few MC of rows also take the per-tile B panels: packing all of a large
        // weight matrix up front writes an f32 copy far bigger than the caches (46 MB for a 5632 x 2048 matrix) that
        // the tiles then read back from memory; a tile's own panel is decoded into L2 and used by every row at once.
        if (m <= MC || (bType != DType.F32 && m <= STORED_ONE_TILE_M)) {
            oneRowTile(par, a, b, bType, c, m, n, k, transA, transB, accumulate);
            return;
        }
        int kb = blockK(k);
        int mPanels = (m + MR - 1) / MR, nPanels = (n + NR - 1) / NR, kBlocks = (k + kb - 1) / kb;
        int mPad = mPanels * MR, nPad = nPanels * NR;
        // Phase 1: pack all of op(a) and op(b) once (each element is then reused by every tile that needs it).
        // ap[p0·mPad + ip·MR·kc + p·MR + r] = op(a)[ip·MR + r, p0 + p] for the K block at p0 of length kc;
        // bp[p0·nPad + jp·NR·kc + p·NR + j] = op(b)[p0 + p, jp·NR + j]; rows/columns past m/n are zero.
        float[] ap = scratch(0, mPad * k), bp = scratch(1, nPad * k);
        int aGroups = Parallel.chunks(mPanels, PACK_PANELS), bGroups = Parallel.chunks(nPanels, PACK_PANELS);
        int aTasks = kBlocks * aGroups, bTasks = kBlocks * bGroups;
        par.forEach(aTasks + bTasks, t -> {
            boolean isA = t < aTasks;
            int u = isA ? t : t - aTasks, groups = isA ? aGroups : bGroups;
            int p0 = u / groups * kb, kc = Math.min(kb, k - p0), g = u % groups;
            if (isA) {
                int ip0 = g * PACK_PANELS, ip1 = Math.min(mPanels, ip0 + PACK_PANELS);
                if (transA) packAT(a, m, p0, kc, ip0, ip1, ap, p0 * mPad);
                else packA(a, m, k, p0, kc, ip0, ip1, ap, p0 * mPad);
            } else {
                int jp0 = g * PACK_PANELS, jp1 = Math.min(nPanels, jp0 + PACK_PANELS);
                if (transB) packBT(b, bType, n, k, p0, kc, jp0, jp1, bp, p0 * nPad);
                else packB(b, n, p0, kc, jp0, jp1, bp, p0 * nPad);
            }
        });
        // Phase 2: one task per mc×nc tile of C; K blocks in order, so every element sums in the same order.
        int mc = balanced(m, MC, MR), nc = balanced(n, NC, NR);
        int tilesM = Parallel.chunks(m, mc), tilesN = Parallel.chunks(n, nc);
        par.forEach(tilesM * tilesN, t -> {
            int i0 = t / tilesN * mc, j0 = t % tilesN * nc;
            int ip0 = i0 / MR, ip1 = Math.min(mPanels, (i0 + mc) / MR);
            int jp0 = j0 / NR, jp1 = Math.min(nPanels, (j0 + nc) / NR);
            float[] acc = new float[MR * NR];
            for (int p0 = 0; p0 < k; p0 += kb) {
                int kc = Math.min(kb, k - p0);
                boolean overwrite = p0 == 0 && !accumulate;
                for (int jp = jp0; jp < jp1; jp++) {
                    int col = jp * NR, cols = Math.min(NR, n - col);
                    int bo = p0 * nPad + jp * NR * kc;
                    for (int ip = ip0; ip < ip1; ip++) {
                        int row = ip * MR, rows = Math.min(MR, m - row);
                        kernel(ap, p0 * mPad + ip * MR * kc, bp, bo, kc, acc);
                        if (rows == MR && cols == NR) storeFull(c, n, row, col, overwrite, acc);
                        else storeEdge(c, n, row, col, rows, cols, overwrite, acc);
                    }
                }
            }
        });
    }

    /**
     * Packing buffers of the calling thread, grown as needed and reused by every call (a training step makes
     * hundreds of matmuls; allocating an f32 copy of A and B each time churned gigabytes of heap per step). They are
     * never cleared: padding rows and columns then hold stale values, which only feed the rows and columns of C
     * past m and n that the stores skip.
     */
    private static final ThreadLocal<float[][]> PACKED = ThreadLocal.withInitial(() -> new float[2][0]);

    private static float[] scratch(int which, int size) {
        float[][] s = PACKED.get();
        if (s[which].length < size) s[which] = new float[size];
        return s[which];
    }

    /** Rows up to which a matmul on stored (non-F32) weights decodes B per N tile ({@link #oneRowTile}). */
    static final int STORED_ONE_TILE_M = 4 * MC;

    /** N tiles {@link #oneRowTile} aims for. */
    static final int ONE_TILE_TASKS = 8;

    /** Per-thread scratch for one B panel (NC columns × KC), reused across calls. */
    private static final ThreadLocal<float[]> PANEL = ThreadLocal.withInitial(() -> new float[NC * Math.max(KC, KC_SINGLE)]);

    /**
     * M fits one MC tile (batched decode, short prefill chunks): every B element is used by exactly one tile, so
     * packing all of B up front (an f32 copy of the whole weight matrix, and for stored weight types a decoded one)
     * buys nothing. Instead each N tile packs its own B panel per K block into a per-thread L2-sized buffer and
     * runs the same micro-kernels in the same order as {@link #gemm}'s tiles: the results are bit-identical.
     */
    private static void oneRowTile(Parallel par, MemorySegment a, MemorySegment b, DType bType, MemorySegment c, int m,
                                   int n, int k, boolean transA, boolean transB, boolean accumulate) {
        int mPanels = (m + MR - 1) / MR, nPanels = (n + NR - 1) / NR, mPad = mPanels * MR;
        int kb = blockK(k);
        float[] ap = scratch(0, mPad * k);
        int aGroups = Parallel.chunks(mPanels, PACK_PANELS), kBlocks = (k + kb - 1) / kb;
        par.forEach(kBlocks * aGroups, t -> {
            int p0 = t / aGroups * kb, kc = Math.min(kb, k - p0), ip0 = t % aGroups * PACK_PANELS;
            int ip1 = Math.min(mPanels, ip0 + PACK_PANELS);
            if (transA) packAT(a, m, p0, kc, ip0, ip1, ap, p0 * mPad);
            else packA(a, m, k, p0, kc, ip0, ip1, ap, p0 * mPad);
        });
        // At least ~8 N tiles where N allows (N = 768 as 8 × 96, not 3 × 256 that leave a thread idle a third of
        // the time); tiling never changes a sum, so this is for balance only.
        int nc = balanced(n, Math.min(NC, Math.max(NR, (n / ONE_TILE_TASKS + NR - 1) / NR * NR)), NR);
        par.forEach(Parallel.chunks(n, nc), t -> {
            int jp0 = t * nc / NR, jp1 = Math.min(nPanels, jp0 + nc / NR);
            float[] panel = PANEL.get();
            float[] acc = new float[MR * NR];
            for (int p0 = 0; p0 < k; p0 += kb) {
                int kc = Math.min(kb, k - p0), base = -jp0 * NR * kc; // panel jp lands at (jp − jp0)·NR·kc
                // Columns past n are never written here, so they may hold an earlier block's values: they only
                // feed C columns past n, which the stores skip.
                if (transB) packBT(b, bType, n, k, p0, kc, jp0, jp1, panel, base);
                else packB(b, n, p0, kc, jp0, jp1, panel, base);
                boolean overwrite = p0 == 0 && !accumulate;
                for (int jp = jp0; jp < jp1; jp++) {
                    int col = jp * NR, cols = Math.min(NR, n - col);
                    for (int ip = 0; ip < mPanels; ip++) {
                        int row = ip * MR, rows = Math.min(MR, m - row);
                        kernel(ap, p0 * mPad + ip * MR * kc, panel, (jp - jp0) * NR * kc, kc, acc);
                        if (rows == MR && cols == NR) storeFull(c, n, row, col, overwrite, acc);
                        else storeEdge(c, n, row, col, rows, cols, overwrite, acc);
                    }
                }
            }
        });
    }

    // ---- packing (zero padding past m and n) ----------------------------------------------------------------------

    /** a stored (M,K): row i of op(a) is contiguous along p; scatter it into MR-interleaved panels. */
    private static void packA(MemorySegment a, int m, int k, int p0, int kc, int ip0, int ip1, float[] ap, int base) {
        float[] row = new float[kc];
        for (int ip = ip0; ip < ip1; ip++) {
            int o = base + ip * MR * kc;
            for (int r = 0; r < MR; r++) {
                int i = ip * MR + r;
                if (i >= m) continue; // padding rows only feed rows of C past m, which are never stored
                MemorySegment.copy(a, F, ((long) i * k + p0) * 4, row, 0, kc);
                for (int p = 0; p < kc; p++) ap[o + p * MR + r] = row[p];
            }
        }
    }

    /**
     * a stored (K,M) (transA): each stored row holds one p for consecutive i, already in panel order. A weight
     * gradient of a training step (K = B·T) packs its whole (K,M) activation this way, so this is a hot loop: each
     * panel's MR values at one p move as one full vector load and one full vector store, whose VL − MR extra floats
     * land in the slots of p + 1 and p + 2 of the same panel, written right after (copying MR floats at a time
     * through System.arraycopy took about twice as long). The last two p of a K block, and panels whose vector
     * would read past the row, are copied exactly: those spills would reach another panel or another task's block.
     */
    private static void packAT(MemorySegment a, int m, int p0, int kc, int ip0, int ip1, float[] ap, int base) {
        int spill = (VL - MR + MR - 1) / MR; // later p slots a full-width store runs into
        int vecEnd = VL >= MR && m >= VL ? Math.min(ip1, Math.max(ip0, (m - VL) / MR + 1)) : ip0; // i + VL <= m
        for (int p = 0; p < kc; p++) {
            long src = (long) (p0 + p) * m * 4;
            int dst = base + p * MR, ip = ip0;
            if (p + spill < kc) {
                for (; ip < vecEnd; ip++) {
                    FloatVector.fromMemorySegment(S, a, src + ip * MR * 4L, NATIVE).intoArray(ap, dst + ip * MR * kc);
                }
            }
            for (; ip < ip1; ip++) {
                int i = ip * MR, n = Math.min(MR, m - i), o = dst + ip * MR * kc;
                MemorySegment.copy(a, F, src + i * 4L, ap, o, n);
                for (int r = n; r < MR; r++) ap[o + r] = 0f;
            }
        }
    }

    /** b stored (K,N): each stored row holds one p for consecutive j. */
    private static void packB(MemorySegment b, int n, int p0, int kc, int jp0, int jp1, float[] bp, int base) {
        int j0 = jp0 * NR, j1 = Math.min(n, jp1 * NR), len = j1 - j0;
        float[] row = new float[(jp1 - jp0) * NR];
        for (int p = 0; p < kc; p++) {
            MemorySegment.copy(b, F, ((long) (p0 + p) * n + j0) * 4, row, 0, len);
            for (int jp = jp0; jp < jp1; jp++) {
                System.arraycopy(row, (jp - jp0) * NR, bp, base + jp * NR * kc + p * NR, NR);
            }
        }
    }

    /**
     * b stored (N,K) (transB): each stored row holds every p for one j. With 16-float vectors, 16 rows at a time are
     * decoded (or copied) into a row buffer and moved into the panel by 16×16 in-register transposes (64 two-vector
     * permutes per 256 elements instead of 256 scalar stores); otherwise, and for a K tail of under 16, each row is
     * scattered element by element. Either way every element lands where the scatter put it: the same panel bits.
     */
    static void packBT(MemorySegment b, DType bType, int n, int k, int p0, int kc, int jp0, int jp1, float[] bp,
                       int base) {
        if (VL != T16) {
            scatterBT(b, bType, n, k, p0, kc, jp0, jp1, bp, base);
            return;
        }
        float[] rows = ROWS16.get();
        if (rows.length < T16 * kc) ROWS16.set(rows = new float[T16 * kc]);
        int whole = kc / T16 * T16;
        for (int jp = jp0; jp < jp1; jp++) {
            int o = base + jp * NR * kc;
            for (int h = 0; h < NR; h += T16) {
                int j0 = jp * NR + h;
                if (j0 >= n) break; // columns past n only feed C columns that are never stored
                int count = Math.min(T16, n - j0);
                for (int r = 0; r < count; r++) weightSlice(b, bType, k, j0 + r, p0, kc, rows, r * kc);
                for (int p = 0; p < whole; p += T16) transpose16(rows, p, kc, bp, o + p * NR + h, NR);
                for (int r = 0; r < count; r++) {
                    for (int p = whole; p < kc; p++) bp[o + p * NR + h + r] = rows[r * kc + p];
                }
            }
        }
    }

    /** 16-lane vectors, where the transposing pack applies. */
    private static final int T16 = 16;
    private static final ThreadLocal<float[]> ROWS16 = ThreadLocal.withInitial(() -> new float[T16 * KC_SINGLE]);

    /** Elements p0 … p0+kc-1 of weight row j (kc whole blocks) as floats at out[at …]. */
    private static void weightSlice(MemorySegment b, DType bType, int k, int j, int p0, int kc, float[] out, int at) {
        if (bType == DType.F32) MemorySegment.copy(b, F, ((long) j * k + p0) * 4, out, at, kc);
        else WeightRows.decode(bType, b, bType.bytes((long) j * k + p0), kc, out, at);
    }

    /** The element-by-element pack of {@link #packBT}. */
    static void scatterBT(MemorySegment b, DType bType, int n, int k, int p0, int kc, int jp0, int jp1, float[] bp,
                          int base) {
        float[] row = new float[kc];
        for (int jp = jp0; jp < jp1; jp++) {
            int o = base + jp * NR * kc;
            for (int jj = 0; jj < NR; jj++) {
                int j = jp * NR + jj;
                if (j >= n) continue;
                weightSlice(b, bType, k, j, p0, kc, row, 0);
                for (int p = 0; p < kc; p++) bp[o + p * NR + jj] = row[p];
            }
        }
    }

    /**
     * Index vectors for {@link #transpose16}: stage s swaps bit b = 8 >> s of the (vector, lane) coordinates of every
     * element between a vector pair (i, i + b). LO[s] builds the new vector i, HI[s] the new vector i + b; an index
     * of 16 or more picks from the pair's second vector.
     */
    private static final FloatVector[] LO = new FloatVector[4], HI = new FloatVector[4];

    static {
        if (VL == T16) {
            for (int s = 0; s < 4; s++) {
                int bit = 8 >> s;
                float[] lo = new float[T16], hi = new float[T16];
                for (int l = 0; l < T16; l++) {
                    boolean set = (l & bit) != 0;
                    lo[l] = set ? T16 + (l & ~bit) : l;
                    hi[l] = set ? T16 + l : (l | bit);
                }
                LO[s] = FloatVector.fromArray(S, lo, 0);
                HI[s] = FloatVector.fromArray(S, hi, 0);
            }
        }
    }

    /**
     * dst[d + c·stride + r] = src[r·ld + p + c] for r, c < 16: sixteen row vectors transposed in registers by four
     * butterfly stages of two-vector permutes. Kept to straight-line code so C2 keeps every vector in a register.
     */
    private static void transpose16(float[] src, int p, int ld, float[] dst, int d, int stride) {
        FloatVector v0 = FloatVector.fromArray(S, src, p), v1 = FloatVector.fromArray(S, src, ld + p);
        FloatVector v2 = FloatVector.fromArray(S, src, 2 * ld + p), v3 = FloatVector.fromArray(S, src, 3 * ld + p);
        FloatVector v4 = FloatVector.fromArray(S, src, 4 * ld + p), v5 = FloatVector.fromArray(S, src, 5 * ld + p);
        FloatVector v6 = FloatVector.fromArray(S, src, 6 * ld + p), v7 = FloatVector.fromArray(S, src, 7 * ld + p);
        FloatVector v8 = FloatVector.fromArray(S, src, 8 * ld + p), v9 = FloatVector.fromArray(S, src, 9 * ld + p);
        FloatVector v10 = FloatVector.fromArray(S, src, 10 * ld + p), v11 = FloatVector.fromArray(S, src, 11 * ld + p);
        FloatVector v12 = FloatVector.fromArray(S, src, 12 * ld + p), v13 = FloatVector.fromArray(S, src, 13 * ld + p);
        FloatVector v14 = FloatVector.fromArray(S, src, 14 * ld + p), v15 = FloatVector.fromArray(S, src, 15 * ld + p);
        FloatVector lo = LO[0], hi = HI[0], t0, t1;
        // Stage 0: pairs (i, i + 8).
        t0 = lo.selectFrom(v0, v8); t1 = hi.selectFrom(v0, v8); v0 = t0; v8 = t1;
        t0 = lo.selectFrom(v1, v9); t1 = hi.selectFrom(v1, v9); v1 = t0; v9 = t1;
        t0 = lo.selectFrom(v2, v10); t1 = hi.selectFrom(v2, v10); v2 = t0; v10 = t1;
        t0 = lo.selectFrom(v3, v11); t1 = hi.selectFrom(v3, v11); v3 = t0; v11 = t1;
        t0 = lo.selectFrom(v4, v12); t1 = hi.selectFrom(v4, v12); v4 = t0; v12 = t1;
        t0 = lo.selectFrom(v5, v13); t1 = hi.selectFrom(v5, v13); v5 = t0; v13 = t1;
        t0 = lo.selectFrom(v6, v14); t1 = hi.selectFrom(v6, v14); v6 = t0; v14 = t1;
        t0 = lo.selectFrom(v7, v15); t1 = hi.selectFrom(v7, v15); v7 = t0; v15 = t1;
        // Stage 1: pairs (i, i + 4).
        lo = LO[1]; hi = HI[1];
        t0 = lo.selectFrom(v0, v4); t1 = hi.selectFrom(v0, v4); v0 = t0; v4 = t1;
        t0 = lo.selectFrom(v1, v5); t1 = hi.selectFrom(v1, v5); v1 = t0; v5 = t1;
        t0 = lo.selectFrom(v2, v6); t1 = hi.selectFrom(v2, v6); v2 = t0; v6 = t1;
        t0 = lo.selectFrom(v3, v7); t1 = hi.selectFrom(v3, v7); v3 = t0; v7 = t1;
        t0 = lo.selectFrom(v8, v12); t1 = hi.selectFrom(v8, v12); v8 = t0; v12 = t1;
        t0 = lo.selectFrom(v9, v13); t1 = hi.selectFrom(v9, v13); v9 = t0; v13 = t1;
        t0 = lo.selectFrom(v10, v14); t1 = hi.selectFrom(v10, v14); v10 = t0; v14 = t1;
        t0 = lo.selectFrom(v11, v15); t1 = hi.selectFrom(v11, v15); v11 = t0; v15 = t1;
        // Stage 2: pairs (i, i + 2).
        lo = LO[2]; hi = HI[2];
        t0 = lo.selectFrom(v0, v2); t1 = hi.selectFrom(v0, v2); v0 = t0; v2 = t1;
        t0 = lo.selectFrom(v1, v3); t1 = hi.selectFrom(v1, v3); v1 = t0; v3 = t1;
        t0 = lo.selectFrom(v4, v6); t1 = hi.selectFrom(v4, v6); v4 = t0; v6 = t1;
        t0 = lo.selectFrom(v5, v7); t1 = hi.selectFrom(v5, v7); v5 = t0; v7 = t1;
        t0 = lo.selectFrom(v8, v10); t1 = hi.selectFrom(v8, v10); v8 = t0; v10 = t1;
        t0 = lo.selectFrom(v9, v11); t1 = hi.selectFrom(v9, v11); v9 = t0; v11 = t1;
        t0 = lo.selectFrom(v12, v14); t1 = hi.selectFrom(v12, v14); v12 = t0; v14 = t1;
        t0 = lo.selectFrom(v13, v15); t1 = hi.selectFrom(v13, v15); v13 = t0; v15 = t1;
        // Stage 3: pairs (i, i + 1).
        lo = LO[3]; hi = HI[3];
        t0 = lo.selectFrom(v0, v1); t1 = hi.selectFrom(v0, v1); v0 = t0; v1 = t1;
        t0 = lo.selectFrom(v2, v3); t1 = hi.selectFrom(v2, v3); v2 = t0; v3 = t1;
        t0 = lo.selectFrom(v4, v5); t1 = hi.selectFrom(v4, v5); v4 = t0; v5 = t1;
        t0 = lo.selectFrom(v6, v7); t1 = hi.selectFrom(v6, v7); v6 = t0; v7 = t1;
        t0 = lo.selectFrom(v8, v9); t1 = hi.selectFrom(v8, v9); v8 = t0; v9 = t1;
        t0 = lo.selectFrom(v10, v11); t1 = hi.selectFrom(v10, v11); v10 = t0; v11 = t1;
        t0 = lo.selectFrom(v12, v13); t1 = hi.selectFrom(v12, v13); v12 = t0; v13 = t1;
        t0 = lo.selectFrom(v14, v15); t1 = hi.selectFrom(v14, v15); v14 = t0; v15 = t1;
        v0.intoArray(dst, d);
        v1.intoArray(dst, d + stride);
        v2.intoArray(dst, d + 2 * stride);
        v3.intoArray(dst, d + 3 * stride);
        v4.intoArray(dst, d + 4 * stride);
        v5.intoArray(dst, d + 5 * stride);
        v6.intoArray(dst, d + 6 * stride);
        v7.intoArray(dst, d + 7 * stride);
        v8.intoArray(dst, d + 8 * stride);
        v9.intoArray(dst, d + 9 * stride);
        v10.intoArray(dst, d + 10 * stride);
        v11.intoArray(dst, d + 11 * stride);
        v12.intoArray(dst, d + 12 * stride);
        v13.intoArray(dst, d + 13 * stride);
        v14.intoArray(dst, d + 14 * stride);
        v15.intoArray(dst, d + 15 * stride);
    }

    // ---- micro-kernel ---------------------------------------------------------------------------------------------

    /**
     * acc[r][j] = Σ_p ap[ao + p·MR + r] · bp[bo + p·NR + j]: the MR×NR tile lives in registers for the whole K block.
     * Vectors never leave this method except through the array, so C2 keeps them unboxed.
     */
    private static void kernel(float[] ap, int ao, float[] bp, int bo, int kc, float[] edge) {
        FloatVector c00 = FloatVector.zero(S), c01 = FloatVector.zero(S);
        FloatVector c10 = FloatVector.zero(S), c11 = FloatVector.zero(S);
        FloatVector c20 = FloatVector.zero(S), c21 = FloatVector.zero(S);
        FloatVector c30 = FloatVector.zero(S), c31 = FloatVector.zero(S);
        FloatVector c40 = FloatVector.zero(S), c41 = FloatVector.zero(S);
        FloatVector c50 = FloatVector.zero(S), c51 = FloatVector.zero(S);
        for (int p = 0; p < kc; p++) {
            int bi = bo + p * NR, ai = ao + p * MR;
            FloatVector b0 = FloatVector.fromArray(S, bp, bi + 0 * VL);
            FloatVector b1 = FloatVector.fromArray(S, bp, bi + 1 * VL);
            FloatVector a0 = FloatVector.broadcast(S, ap[ai + 0]);
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
        c00.intoArray(edge, 0 * NR + 0 * VL);
        c01.intoArray(edge, 0 * NR + 1 * VL);
        c10.intoArray(edge, 1 * NR + 0 * VL);
        c11.intoArray(edge, 1 * NR + 1 * VL);
        c20.intoArray(edge, 2 * NR + 0 * VL);
        c21.intoArray(edge, 2 * NR + 1 * VL);
        c30.intoArray(edge, 3 * NR + 0 * VL);
        c31.intoArray(edge, 3 * NR + 1 * VL);
        c40.intoArray(edge, 4 * NR + 0 * VL);
        c41.intoArray(edge, 4 * NR + 1 * VL);
        c50.intoArray(edge, 5 * NR + 0 * VL);
        c51.intoArray(edge, 5 * NR + 1 * VL);
    }


    private static void storeFull(MemorySegment c, int ldc, int r0, int col, boolean overwrite, float[] acc) {
        for (int r = 0; r < MR; r++) {
            long off = ((long) (r0 + r) * ldc + col) * 4;
            for (int v = 0; v < NR; v += VL) {
                FloatVector x = FloatVector.fromArray(S, acc, r * NR + v);
                if (!overwrite) x = x.add(FloatVector.fromMemorySegment(S, c, off + v * 4L, NATIVE));
                x.intoMemorySegment(c, off + v * 4L, NATIVE);
            }
        }
    }

    private static void storeEdge(MemorySegment c, int ldc, int r0, int col, int rows, int cols, boolean overwrite,
                                  float[] acc) {
        for (int r = 0; r < rows; r++) {
            long off = (long) (r0 + r) * ldc + col;
            for (int j = 0; j < cols; j++) {
                float v = acc[r * NR + j];
                c.setAtIndex(F, off + j, overwrite ? v : c.getAtIndex(F, off + j) + v);
            }
        }
    }

    // ---- skinny M: matrix-vector products -------------------------------------------------------------------------

    static final int SKINNY_COLS = 256;

    private static void skinny(Parallel par, MemorySegment a, MemorySegment b, DType bType, MemorySegment c, int m,
                               int n, int k, boolean transA, boolean transB, boolean accumulate) {
        // The rows of op(a), gathered once (m·k floats, small).
        float[][] rows = new float[m][k];
        for (int i = 0; i < m; i++) {
            if (transA) for (int p = 0; p < k; p++) rows[i][p] = a.getAtIndex(F, (long) p * m + i);
            else MemorySegment.copy(a, F, (long) i * k * 4, rows[i], 0, k);
        }
        // Every output column is one independent dot product (transB) or one independent lane of the axpy
        // sweeps, so the chunk size changes no bits; small N gets small chunks so both threads stay busy.
        int cols = n >= 16 * SKINNY_COLS ? SKINNY_COLS : SKINNY_COLS / 4;
        par.forEach(Parallel.chunks(n, cols), t -> {
            int j0 = t * cols, j1 = Math.min(n, j0 + cols);
            if (transB) {
                // One activation row: each weight row is streamed once through a fused decode-and-dot. Several
                // rows: weight rows are decoded (or copied) two at a time into L1 and dotted with four activation
                // rows at once (tile42: 8 accumulators, each weight and activation vector loaded once per tile).
                // Every (row, column) sum has the same operations in the same order either way (see
                // WeightRows.dot), so a sequence's logits do not depend on how many others share its decode step.
                if (m == 1 && bType != DType.F32) {
                    // Two rows per step, one from each half of the chunk: two independent chains (one row's sum is
                    // a chain of dependent adds that bounds a core), and two sequential streams through memory.
                    // Adjacent rows as the pair measured 30% slower than one row at a time: the streams jump.
                    float[] two = new float[2];
                    int half = (j1 - j0) / 2;
                    for (int i = 0; i < half; i++) {
                        int ja = j0 + i, jb = j0 + half + i;
                        WeightRows.dot2(bType, rows[0], b, bType.bytes((long) ja * k), bType.bytes((long) jb * k), k, two);
                        store(c, ja, two[0], accumulate);
                        store(c, jb, two[1], accumulate);
                    }
                    for (int j = j0 + 2 * half; j < j1; j++) {
                        store(c, j, WeightRows.dot(bType, rows[0], 0, b, bType.bytes((long) j * k), k), accumulate);
                    }
                } else if (m == 1) {
                    for (int j = j0; j < j1; j++) {
                        float s = bType == DType.F32 ? dot(rows[0], b, (long) j * k * 4, k)
                                : WeightRows.dot(bType, rows[0], 0, b, bType.bytes((long) j * k), k);
                        store(c, j, s, accumulate);
                    }
                } else {
                    float[] w0 = new float[k], w1 = new float[k], w2 = new float[k], w3 = new float[k];
                    float[] out = new float[16], acc = new float[16 * VL];
                    for (int j = j0; j < j1; ) {
                        if (j + 4 <= j1 && m >= 4) {
                            // Four weight rows against four activation rows (tile44: 16 accumulators, four weight
                            // and four activation loads per 16 FMAs); the last rows in pairs of weight rows.
                            weightRow(b, bType, j, k, w0);
                            weightRow(b, bType, j + 1, k, w1);
                            weightRow(b, bType, j + 2, k, w2);
                            weightRow(b, bType, j + 3, k, w3);
                            int i = 0;
                            for (; i + 4 <= m; i += 4) {
                                tile44(rows[i], rows[i + 1], rows[i + 2], rows[i + 3], w0, w1, w2, w3, k, acc, out);
                                for (int r = 0; r < 4; r++) {
                                    for (int q = 0; q < 4; q++) store(c, (long) (i + r) * n + j + q, out[4 * r + q], accumulate);
                                }
                            }
                            pairRows(rows, i, m, w0, w1, true, k, c, n, j, accumulate, out);
                            pairRows(rows, i, m, w2, w3, true, k, c, n, j + 2, accumulate, out);
                            j += 4;
                        } else {
                            boolean pair = j + 1 < j1;
                            weightRow(b, bType, j, k, w0);
                            if (pair) weightRow(b, bType, j + 1, k, w1);
                            pairRows(rows, 0, m, w0, w1, pair, k, c, n, j, accumulate, out);
                            j += pair ? 2 : 1;
                        }
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

    /**
     * Rows [from, m) of c against weight rows j and (if {@code pair}) j + 1, decoded in w0 and w1: four activation
     * rows at a time ({@link #tile42}), then the last one to three two at a time (a lone row paired with itself: four
     * independent chains instead of one chain of dependent adds per dot); a weight row without a pair by plain dots.
     */
    private static void pairRows(float[][] rows, int from, int m, float[] w0, float[] w1, boolean pair, int k,
                                 MemorySegment c, int n, int j, boolean accumulate, float[] out) {
        int i = from;
        for (; pair && i + 4 <= m; i += 4) {
            tile42(rows[i], rows[i + 1], rows[i + 2], rows[i + 3], w0, w1, k, out);
            for (int r = 0; r < 4; r++) {
                store(c, (long) (i + r) * n + j, out[2 * r], accumulate);
                store(c, (long) (i + r) * n + j + 1, out[2 * r + 1], accumulate);
            }
        }
        for (; pair && i < m; i += 2) {
            int i1 = Math.min(i + 1, m - 1);
            tile22(rows[i], rows[i1], w0, w1, k, out);
            for (int r = 0; r <= i1 - i; r++) {
                store(c, (long) (i + r) * n + j, out[2 * r], accumulate);
                store(c, (long) (i + r) * n + j + 1, out[2 * r + 1], accumulate);
            }
        }
        for (; i < m; i++) store(c, (long) i * n + j, dot(rows[i], w0, k), accumulate);
    }

    /** Σ x[p]·b[p] in one vector accumulator, then {@link VMath#sum}, then the tail: {@link WeightRows#dot}'s order. */
    private static float dot(float[] x, MemorySegment b, long off, int k) {
        FloatVector acc = FloatVector.zero(S);
        int p = 0;
        for (int end = k - VL; p <= end; p += VL) {
            acc = FloatVector.fromMemorySegment(S, b, off + p * 4L, NATIVE).fma(FloatVector.fromArray(S, x, p), acc);
        }
        float s = VMath.sum(acc);
        for (; p < k; p++) s = Math.fma(x[p], b.get(F, off + p * 4L), s);
        return s;
    }

    /** The same sum with b in an array. */
    private static float dot(float[] x, float[] b, int k) {
        return dot(x, 0, b, 0, k);
    }

    /** The same sum, x from offset xo and b from offset bo. */
    static float dot(float[] x, int xo, float[] b, int bo, int k) {
        FloatVector acc = FloatVector.zero(S);
        int p = 0;
        for (int end = k - VL; p <= end; p += VL) acc = FloatVector.fromArray(S, b, bo + p).fma(FloatVector.fromArray(S, x, xo + p), acc);
        float s = VMath.sum(acc);
        for (; p < k; p++) s = Math.fma(x[xo + p], b[bo + p], s);
        return s;
    }

    /** Weight row j (N,K) as floats: copied for F32, decoded exactly otherwise. */
    private static void weightRow(MemorySegment b, DType type, int j, int k, float[] w) {
        if (type == DType.F32) MemorySegment.copy(b, F, (long) j * k * 4, w, 0, k);
        else WeightRows.decode(type, b, type.bytes((long) j * k), k, w, 0);
    }

    private static void store(MemorySegment c, long ci, float v, boolean accumulate) {
        c.setAtIndex(F, ci, accumulate ? c.getAtIndex(F, ci) + v : v);
    }

    /**
     * out[2r + q] = dot(x_r, w_q) for four activation rows and two weight rows, each with its own accumulator and in
     * {@link #dot(float[], float[], int)}'s order.
     */
    private static void tile42(float[] x0, float[] x1, float[] x2, float[] x3, float[] w0, float[] w1, int k, float[] out) {
        FloatVector c00 = FloatVector.zero(S), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
        int p = 0;
        for (int end = k - VL; p <= end; p += VL) {
            FloatVector b0 = FloatVector.fromArray(S, w0, p), b1 = FloatVector.fromArray(S, w1, p);
            FloatVector a = FloatVector.fromArray(S, x0, p);
            c00 = b0.fma(a, c00);
            c01 = b1.fma(a, c01);
            a = FloatVector.fromArray(S, x1, p);
            c10 = b0.fma(a, c10);
            c11 = b1.fma(a, c11);
            a = FloatVector.fromArray(S, x2, p);
            c20 = b0.fma(a, c20);
            c21 = b1.fma(a, c21);
            a = FloatVector.fromArray(S, x3, p);
            c30 = b0.fma(a, c30);
            c31 = b1.fma(a, c31);
        }
        float s00 = VMath.sum(c00), s01 = VMath.sum(c01), s10 = VMath.sum(c10), s11 = VMath.sum(c11);
        float s20 = VMath.sum(c20), s21 = VMath.sum(c21), s30 = VMath.sum(c30), s31 = VMath.sum(c31);
        for (; p < k; p++) {
            s00 = Math.fma(x0[p], w0[p], s00);
            s01 = Math.fma(x0[p], w1[p], s01);
            s10 = Math.fma(x1[p], w0[p], s10);
            s11 = Math.fma(x1[p], w1[p], s11);
            s20 = Math.fma(x2[p], w0[p], s20);
            s21 = Math.fma(x2[p], w1[p], s21);
            s30 = Math.fma(x3[p], w0[p], s30);
            s31 = Math.fma(x3[p], w1[p], s31);
        }
        out[0] = s00;
        out[1] = s01;
        out[2] = s10;
        out[3] = s11;
        out[4] = s20;
        out[5] = s21;
        out[6] = s30;
        out[7] = s31;
    }

    /**
     * out[4r + q] = dot(x_r, w_q) for four activation rows and four weight rows, each with its own accumulator and in
     * {@link #dot(float[], float[], int)}'s order (acc: scratch for 16 vectors). Each weight and activation vector is
     * loaded once for four FMAs (one core, 16 rows: 72 → 92 GFLOP/s at K = 768 and 66 → 99 at K = 2048 against
     * {@link #tile42}).
     */
    private static void tile44(float[] x0, float[] x1, float[] x2, float[] x3, float[] w0, float[] w1, float[] w2,
                               float[] w3, int k, float[] acc, float[] out) {
        FloatVector c00 = FloatVector.zero(S), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
        FloatVector c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
        int p = 0;
        for (int end = k - VL; p <= end; p += VL) {
            FloatVector b0 = FloatVector.fromArray(S, w0, p), b1 = FloatVector.fromArray(S, w1, p);
            FloatVector b2 = FloatVector.fromArray(S, w2, p), b3 = FloatVector.fromArray(S, w3, p);
            FloatVector a = FloatVector.fromArray(S, x0, p);
            c00 = b0.fma(a, c00);
            c01 = b1.fma(a, c01);
            c02 = b2.fma(a, c02);
            c03 = b3.fma(a, c03);
            a = FloatVector.fromArray(S, x1, p);
            c10 = b0.fma(a, c10);
            c11 = b1.fma(a, c11);
            c12 = b2.fma(a, c12);
            c13 = b3.fma(a, c13);
            a = FloatVector.fromArray(S, x2, p);
            c20 = b0.fma(a, c20);
            c21 = b1.fma(a, c21);
            c22 = b2.fma(a, c22);
            c23 = b3.fma(a, c23);
            a = FloatVector.fromArray(S, x3, p);
            c30 = b0.fma(a, c30);
            c31 = b1.fma(a, c31);
            c32 = b2.fma(a, c32);
            c33 = b3.fma(a, c33);
        }
        // The 16 lane sums go through memory and one loop: written out here, C2 ran past its node budget and left
        // some VMath.sum calls out of line, boxing their vectors (the tile ran at two thirds of tile42's speed).
        c00.intoArray(acc, 0);
        c01.intoArray(acc, VL);
        c02.intoArray(acc, 2 * VL);
        c03.intoArray(acc, 3 * VL);
        c10.intoArray(acc, 4 * VL);
        c11.intoArray(acc, 5 * VL);
        c12.intoArray(acc, 6 * VL);
        c13.intoArray(acc, 7 * VL);
        c20.intoArray(acc, 8 * VL);
        c21.intoArray(acc, 9 * VL);
        c22.intoArray(acc, 10 * VL);
        c23.intoArray(acc, 11 * VL);
        c30.intoArray(acc, 12 * VL);
        c31.intoArray(acc, 13 * VL);
        c32.intoArray(acc, 14 * VL);
        c33.intoArray(acc, 15 * VL);
        laneSums(acc, out, 16);
        if (p < k) {
            tail(x0, w0, w1, w2, w3, p, k, out, 0);
            tail(x1, w0, w1, w2, w3, p, k, out, 4);
            tail(x2, w0, w1, w2, w3, p, k, out, 8);
            tail(x3, w0, w1, w2, w3, p, k, out, 12);
        }
    }

    /** out[i] = {@link VMath#sum} of the vector at acc[i·VL …] for i < count. */
    private static void laneSums(float[] acc, float[] out, int count) {
        for (int i = 0; i < count; i++) out[i] = VMath.sum(FloatVector.fromArray(S, acc, i * VL));
    }

    /** The scalar tail of {@link #tile44} for one activation row: out[o + q] += x·w_q over [p, k), in order. */
    private static void tail(float[] x, float[] w0, float[] w1, float[] w2, float[] w3, int p, int k, float[] out, int o) {
        for (int t = p; t < k; t++) {
            out[o] = Math.fma(x[t], w0[t], out[o]);
            out[o + 1] = Math.fma(x[t], w1[t], out[o + 1]);
            out[o + 2] = Math.fma(x[t], w2[t], out[o + 2]);
            out[o + 3] = Math.fma(x[t], w3[t], out[o + 3]);
        }
    }

    /** {@link #tile42} for two activation rows: out[2r + q] = dot(x_r, w_q), r, q in {0, 1}. */
    private static void tile22(float[] x0, float[] x1, float[] w0, float[] w1, int k, float[] out) {
        FloatVector c00 = FloatVector.zero(S), c01 = c00, c10 = c00, c11 = c00;
        int p = 0;
        for (int end = k - VL; p <= end; p += VL) {
            FloatVector b0 = FloatVector.fromArray(S, w0, p), b1 = FloatVector.fromArray(S, w1, p);
            FloatVector a = FloatVector.fromArray(S, x0, p);
            c00 = b0.fma(a, c00);
            c01 = b1.fma(a, c01);
            a = FloatVector.fromArray(S, x1, p);
            c10 = b0.fma(a, c10);
            c11 = b1.fma(a, c11);
        }
        float s00 = VMath.sum(c00), s01 = VMath.sum(c01), s10 = VMath.sum(c10), s11 = VMath.sum(c11);
        for (; p < k; p++) {
            s00 = Math.fma(x0[p], w0[p], s00);
            s01 = Math.fma(x0[p], w1[p], s01);
            s10 = Math.fma(x1[p], w0[p], s10);
            s11 = Math.fma(x1[p], w1[p], s11);
        }
        out[0] = s00;
        out[1] = s01;
        out[2] = s10;
        out[3] = s11;
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
