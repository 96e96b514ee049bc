package dev.crucible.cpu.blas;

import dev.crucible.cpu.kernels.Parallel;

import java.lang.foreign.MemorySegment;

/**
 * Matmul on OpenBLAS, parallelised by the backend rather than by OpenBLAS: C is cut into fixed blocks of rows (or of
 * columns when N > M) chosen from the shape alone, and each block is one single-threaded {@code cblas_sgemm} on a
 * worker of the backend's pool. Every element of C is computed by the same single-threaded call whatever the pool
 * size, so results are <b>bit-identical for any thread count</b> (for a given OpenBLAS build and CPU kind), and no
 * OpenMP threads spin beside the Java workers between kernels (each worker sets OpenBLAS to one thread for its own
 * calls: {@link OpenBlas#singleThreadedOnThisThread}). M = 1 goes to {@code cblas_sgemv} on blocks of N.
 */
public final class BlasGemm {
    private BlasGemm() {}

    /** At most this many blocks per matmul; blocks are whole multiples of {@link #ALIGN} rows or columns. */
    static final int MAX_BLOCKS = 8;
    /** Smallest block, so that a block's packing and call overhead stay small against its work. */
    static final int MIN_BLOCK = 64;
    static final int ALIGN = 16;

    /** c(M,N) (+)= op(a)(M,K)·op(b)(K,N), row-major; a stored (M,K) or (K,M) with transA, b (K,N) or (N,K) with transB. */
    public static void gemm(Parallel par, OpenBlas blas, MemorySegment a, MemorySegment b, MemorySegment c, int m,
                            int n, int k, boolean transA, boolean transB, boolean accumulate) {
        float beta = accumulate ? 1f : 0f;
        if (m == 1) {
            // c(1,N) = op(b)ᵀ·a over blocks of columns; a is K contiguous floats either way. Overwriting zeroes c
            // first: some OpenBLAS versions apply beta = 0 as a multiply, which would keep a NaN already in c.
            if (!accumulate) c.asSlice(0, 4L * n).fill((byte) 0);
            int block = blockSize(n);
            par.forEach(Parallel.chunks(n, block), t -> {
                blas.singleThreadedOnThisThread();
                int from = t * block, len = Math.min(block, n - from);
                if (transB) blas.sgemv(false, len, k, b.asSlice((long) from * k * 4), k, a, 1f, c.asSlice(from * 4L));
                else blas.sgemv(true, k, len, b.asSlice(from * 4L), n, a, 1f, c.asSlice(from * 4L));
            });
            return;
        }
        int lda = transA ? m : k, ldb = transB ? k : n;
        boolean byRows = m >= n;
        int dim = byRows ? m : n;
        int block = blockSize(dim), blocks = Parallel.chunks(dim, block);
        par.forEach(blocks, t -> {
            blas.singleThreadedOnThisThread();
            int from = t * block, len = Math.min(block, dim - from);
            if (byRows) {
                // rows from..from+len of op(a) and of c
                long aOff = transA ? from : (long) from * k;
                blas.sgemm(transA, transB, len, n, k, a.asSlice(aOff * 4), lda, b, ldb, beta,
                        c.asSlice((long) from * n * 4), n);
            } else {
                // columns from..from+len of op(b) and of c
                long bOff = transB ? (long) from * k : from;
                blas.sgemm(transA, transB, m, len, k, a, lda, b.asSlice(bOff * 4), ldb, beta, c.asSlice((long) from * 4), n);
            }
        });
    }

    /** Rows (or columns) per block for a dimension: depends on the shape only, never on the thread count. */
    static int blockSize(int dim) {
        int blocks = Math.max(1, Math.min(MAX_BLOCKS, dim / MIN_BLOCK));
        int size = (dim + blocks - 1) / blocks;
        return (size + ALIGN - 1) / ALIGN * ALIGN;
    }
}
