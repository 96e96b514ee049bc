package dev.crucible.cpu.kernels;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import static dev.crucible.cpu.kernels.Attention.BK;
import static dev.crucible.cpu.kernels.Attention.BQ;
import static dev.crucible.cpu.kernels.Attention.F;
import static dev.crucible.cpu.kernels.Attention.VL;

/**
 * Causal attention of query rows against a paged KV cache ({@code Op.PagedAttention}): each row has its own
 * page-table row and its own number of visible keys, so one call serves a decode step over many sequences of
 * different lengths, or a prefill chunk of one sequence.
 *
 * <p>Rows are grouped into blocks of at most {@link Attention#BQ} consecutive rows whose page-table rows are equal
 * (a prefill chunk: one block per 32 queries; a decode step: one block per sequence). One task per (block, KV
 * head): keys are gathered from the pages in blocks of {@link Attention#BK} (K transposed, V as rows, exactly as
 * {@link Attention#forward} loads a contiguous cache) once for every query head of the GQA group and every row of
 * the block, with an online softmax per (row, head), so no more than one block of scores is ever held. The
 * blocking depends only on the page tables and lengths, never on the thread count, and every output row has one
 * owner: bit-identical for any number of threads.
 *
 * <p>Each (row, head) runs the same arithmetic, in the same order, as {@link Attention#forward} does for a query
 * at position {@code length − 1} of a contiguous cache (same key blocks from 0, same score, exp and P·V code), so a
 * paged cache gives the same bits as a contiguous one holding the same keys, whichever rows share a block.
 *
 * <p>F16 pools (half the memory and traffic of F32) are widened exactly as they are read: a block of key and value
 * rows is decoded into float scratch (rows as they lie for a decode step, keys transposed for a prefill block) and
 * the same arithmetic runs on the arrays, so an F16 pool gives the bits an F32 pool holding the widened values gives.
 */
public final class PagedAttention {
    private PagedAttention() {}

    private static final ValueLayout.OfInt I = ValueLayout.JAVA_INT_UNALIGNED;
    private static final ValueLayout.OfShort H = ValueLayout.JAVA_SHORT_UNALIGNED;

    /**
     * q, out (rows,H,D); kPool, vPool (pages,S,KV,D), F32 or (half) F16; pageTable (rows,maxPages) I32; lengths (rows) I32.
     *
     * @throws IndexOutOfBoundsException if a length is outside 1 … maxPages·S or a page id it needs outside the pool
     */
    public static void forward(Parallel par, MemorySegment q, MemorySegment kPool, MemorySegment vPool,
                               MemorySegment pageTable, MemorySegment lengths, MemorySegment out, int rows, int heads,
                               int kvHeads, int d, int pageSize, int maxPages, int pages, boolean half) {
        forward(par, q, kPool, vPool, pageTable, lengths, out, rows, heads, kvHeads, d, pageSize, maxPages, pages, half, null);
    }

    /**
     * A faster stand-in for this kernel's "by rows" blocks (decode rows: at most {@link Attention#ROW_MAJOR_ROWS}
     * rows of one page-table row), which must give their bits (the CPU backend's native kernels, CpuNative), or
     * decline a block by returning false.
     */
    public interface RowKernel {
        boolean rows(MemorySegment q, MemorySegment kPool, MemorySegment vPool, boolean half, int[] table, int tableRow,
                     int[] len, int r0, int n, MemorySegment out, int heads, int kvHeads, int kh, int d, int pageSize,
                     float scale);
    }

    /** {@link #forward} with decode blocks given to {@code fast} when it is not null. */
    public static void forward(Parallel par, MemorySegment q, MemorySegment kPool, MemorySegment vPool,
                               MemorySegment pageTable, MemorySegment lengths, MemorySegment out, int rows, int heads,
                               int kvHeads, int d, int pageSize, int maxPages, int pages, boolean half, RowKernel fast) {
        int[] len = new int[rows], table = new int[rows * maxPages];
        MemorySegment.copy(lengths, I, 0, len, 0, rows);
        MemorySegment.copy(pageTable, I, 0, table, 0, rows * maxPages);
        validate(len, table, rows, pageSize, maxPages, pages);
        // Blocks of consecutive rows with the same page-table row: start[b] … start[b+1]-1.
        int[] start = new int[rows + 1];
        int blocks = 0;
        for (int r = 0; r < rows; r++) {
            int first = blocks == 0 ? -1 : start[blocks - 1];
            if (first < 0 || r - first >= BQ || !Arrays.equals(table, r * maxPages, (r + 1) * maxPages,
                    table, first * maxPages, (first + 1) * maxPages)) {
                start[blocks++] = r;
            }
        }
        start[blocks] = rows;
        int group = heads / kvHeads, dp = Attention.padded(d);
        float scale = (float) (1.0 / Math.sqrt(d));
        par.forEach(blocks * kvHeads, task -> {
            int blk = task / kvHeads, kh = task % kvHeads, n = start[blk + 1] - start[blk];
            if (fast != null && n <= Attention.ROW_MAJOR_ROWS && fast.rows(q, kPool, vPool, half, table,
                    start[blk] * maxPages, len, start[blk], n, out, heads, kvHeads, kh, d, pageSize, scale)) {
                return;
            }
            block(q, kPool, vPool, out, table, len, start[blk], start[blk + 1] - start[blk], heads, kvHeads, kh, group,
                    d, dp, pageSize, maxPages, scale, half);
        });
    }

    private static void validate(int[] len, int[] table, int rows, int pageSize, int maxPages, int pages) {
        long most = (long) maxPages * pageSize;
        for (int r = 0; r < rows; r++) {
            if (len[r] < 1 || len[r] > most) {
                throw new IndexOutOfBoundsException("PagedAttention: row " + r + " sees " + len[r] + " keys; a page-table row holds 1.." + most);
            }
            for (int i = 0, need = (len[r] + pageSize - 1) / pageSize; i < need; i++) {
                int page = table[r * maxPages + i];
                if (page < 0 || page >= pages) {
                    throw new IndexOutOfBoundsException("PagedAttention: row " + r + " names page " + page + " of a pool of " + pages);
                }
            }
        }
    }

    /** Rows r0 … r0+n-1 (one page-table row), every query head of KV head kh. */
    private static void block(MemorySegment q, MemorySegment kPool, MemorySegment vPool, MemorySegment out,
                              int[] table, int[] len, int r0, int n, int heads, int kvHeads, int kh, int group, int d,
                              int dp, int pageSize, int maxPages, float scale, boolean half) {
        int nq = n * group; // query vectors: (row, group head) → index r·group + g
        float[] qs = new float[nq * dp], o = new float[nq * dp], m = new float[nq], l = new float[nq];
        boolean byRows = n <= Attention.ROW_MAJOR_ROWS; // as Attention.forward decides for its block of rows
        // Decode rows read F32 keys in place: no transposed block to allocate (a step runs rows·kvHeads of these
        // tasks). F16 rows are decoded into kr, vb (row j at j·dp).
        boolean inPlace = byRows && !half;
        float[] kt = byRows ? null : new float[dp * BK], vb = inPlace ? null : new float[BK * dp];
        float[] kr = byRows && half ? new float[BK * dp] : null;
        float[] p = new float[BK], tmp = new float[d];
        long[] at = byRows ? new long[BK] : null;
        // Decoded F16 rows are read through the same in-place code, as a heap segment over the scratch arrays.
        MemorySegment kRows = byRows && half ? MemorySegment.ofArray(kr) : kPool;
        MemorySegment vRows = byRows && half ? MemorySegment.ofArray(vb) : vPool;
        Arrays.fill(m, Float.NEGATIVE_INFINITY);
        int keys = 0;
        for (int r = 0; r < n; r++) {
            keys = Math.max(keys, len[r0 + r]);
            for (int g = 0; g < group; g++) {
                MemorySegment.copy(q, F, (((long) (r0 + r) * heads + kh * group + g) * d) * 4, qs, (r * group + g) * dp, d);
            }
        }
        int tableRow = r0 * maxPages;
        for (int j0 = 0; j0 < keys; j0 += BK) {
            int bk = Math.min(BK, keys - j0);
            if (inPlace) {
                for (int j = 0; j < bk; j++) {
                    int t = j0 + j;
                    at[j] = (((long) table[tableRow + t / pageSize] * pageSize + t % pageSize) * kvHeads + kh) * d * 4;
                }
            } else if (byRows) {
                for (int j = 0; j < bk; j++) {
                    int t = j0 + j;
                    long off = (((long) table[tableRow + t / pageSize] * pageSize + t % pageSize) * kvHeads + kh) * d * 2;
                    widen(kPool, off, kr, j * dp, d);
                    widen(vPool, off, vb, j * dp, d);
                    at[j] = (long) j * dp * 4;
                }
            } else {
                loadKeys(kPool, vPool, table, tableRow, pageSize, kvHeads, kh, d, dp, j0, bk, kt, vb, tmp, half);
            }
            for (int r = 0; r < n; r++) {
                int limit = Math.min(bk, len[r0 + r] - j0);
                if (limit <= 0) continue;
                int nv = (limit + VL - 1) / VL;
                for (int g = 0; g < group; g++) {
                    int qi = r * group + g;
                    float bmax = byRows ? Attention.scoresByRows(qs, qi * dp, kRows, at, d, nv, limit, scale, p)
                            : Attention.scores(qs, qi * dp, kt, d, nv, limit, scale, p);
                    float mOld = m[qi], mNew = Math.max(mOld, bmax);
                    float corr = mOld == Float.NEGATIVE_INFINITY ? 0f : VMath.exp(mOld - mNew);
                    float blockSum = VMath.exp(p, 0, p, 0, nv * VL, 1f, mNew); // masked lanes: e^−∞ = 0
                    m[qi] = mNew;
                    l[qi] = l[qi] * corr + blockSum;
                    if (byRows) Attention.accumulatePV(o, qi * dp, d, corr, p, vRows, at, limit);
                    else Attention.accumulatePV(o, qi * dp, dp, corr, p, vb, limit);
                }
            }
        }
        for (int r = 0; r < n; r++) {
            for (int g = 0; g < group; g++) {
                int qi = r * group + g;
                float inv = 1f / l[qi];
                for (int c = 0; c < d; c++) tmp[c] = o[qi * dp + c] * inv;
                MemorySegment.copy(tmp, 0, out, F, (((long) (r0 + r) * heads + kh * group + g) * d) * 4, d);
            }
        }
    }

    /** out[at … at+n) = the n halves at byte offset off, widened exactly. */
    private static void widen(MemorySegment seg, long off, float[] out, int at, int n) {
        for (int i = 0; i < n; i++) out[at + i] = Float.float16ToFloat(seg.get(H, off + 2L * i));
    }

    /** kt[c][j] = K[j0+j][c] and vb[j][c] = V[j0+j][c] for j < bk, key t read from its page; the rest zero. */
    private static void loadKeys(MemorySegment kPool, MemorySegment vPool, int[] table, int tableRow, int pageSize,
                                 int kvHeads, int kh, int d, int dp, int j0, int bk, float[] kt, float[] vb,
                                 float[] tmp, boolean half) {
        for (int j = 0; j < BK; j++) {
            if (j < bk) {
                int t = j0 + j;
                long row = (long) table[tableRow + t / pageSize] * pageSize + t % pageSize;
                long at = (row * kvHeads + kh) * d;
                if (half) {
                    widen(kPool, at * 2, tmp, 0, d);
                    widen(vPool, at * 2, vb, j * dp, d);
                } else {
                    MemorySegment.copy(kPool, F, at * 4, tmp, 0, d);
                    MemorySegment.copy(vPool, F, at * 4, vb, j * dp, d);
                }
                for (int c = 0; c < d; c++) kt[c * BK + j] = tmp[c];
            } else {
                for (int c = 0; c < d; c++) kt[c * BK + j] = 0f;
                Arrays.fill(vb, j * dp, j * dp + d, 0f);
            }
        }
    }
}
