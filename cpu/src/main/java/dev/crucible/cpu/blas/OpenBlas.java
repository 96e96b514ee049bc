package dev.crucible.cpu.blas;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

import static dev.crucible.cpu.ffi.Downcalls.rethrow;
import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * OpenBLAS's {@code cblas_sgemm} / {@code cblas_sgemv} through FFM, for the CPU backend's matmul. Optional: when no
 * {@code libopenblas.so.0} can be loaded, {@link #load} returns empty and the backend keeps its Java kernels.
 *
 * <p><b>Determinism.</b> With its own threads OpenBLAS makes no promise across thread counts (its level-3 driver
 * splits M and N by the thread count). The CPU backend therefore runs it single-threaded on fixed blocks of C
 * ({@link BlasGemm}), which gives the same bits for any thread count. What stays outside our control: other
 * OpenBLAS versions, and other CPU kinds (a DYNAMIC_ARCH build picks its kernel from the CPU at load time), give
 * other bits, and none of them equals the Java kernels' bits. Runs that must match across machines use the Java
 * kernels ({@code CRUCIBLE_BLAS=off}); see docs/performance.md.
 *
 * <p>All matrices are row-major {@code MemorySegment}s in native memory; calls with heap segments are refused by
 * FFM, so callers check {@link MemorySegment#isNative()} first. One instance per process is enough: the library is
 * loaded once into the global arena and never unloaded.
 */
public final class OpenBlas {
    // CBLAS enum values (cblas.h).
    private static final int ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112;

    /** The sonames tried in order when no explicit path is given. */
    public static final List<String> DEFAULT_NAMES = List.of("libopenblas.so.0", "libopenblas.so",
            "/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "/usr/lib/aarch64-linux-gnu/libopenblas.so.0");

    private final String library;
    private final MethodHandle sgemm, sgemmHeap, sgemv, setThreads, getConfig;

    private OpenBlas(String library, SymbolLookup lib) {
        Linker linker = Linker.nativeLinker();
        this.library = library;
        this.sgemm = linker.downcallHandle(lib.findOrThrow("cblas_sgemm"), FunctionDescriptor.ofVoid(
                JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_FLOAT, ADDRESS, JAVA_INT, ADDRESS,
                JAVA_INT, JAVA_FLOAT, ADDRESS, JAVA_INT));
        // The same function for tiles in Java arrays: a critical call may take heap segments (no copy, no native
        // scratch per task); it holds off GC for its duration, which is fine for tile-sized calls.
        this.sgemmHeap = linker.downcallHandle(lib.findOrThrow("cblas_sgemm"), FunctionDescriptor.ofVoid(
                JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_FLOAT, ADDRESS, JAVA_INT, ADDRESS,
                JAVA_INT, JAVA_FLOAT, ADDRESS, JAVA_INT), Linker.Option.critical(true));
        this.sgemv = linker.downcallHandle(lib.findOrThrow("cblas_sgemv"), FunctionDescriptor.ofVoid(
                JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_FLOAT, ADDRESS, JAVA_INT, ADDRESS, JAVA_INT, JAVA_FLOAT,
                ADDRESS, JAVA_INT));
        this.setThreads = lib.find("openblas_set_num_threads")
                .map(s -> linker.downcallHandle(s, FunctionDescriptor.ofVoid(JAVA_INT))).orElse(null);
        this.getConfig = lib.find("openblas_get_config")
                .map(s -> linker.downcallHandle(s, FunctionDescriptor.of(ADDRESS))).orElse(null);
    }

    /**
     * Loads OpenBLAS from {@code path} (a file or a soname), or from {@link #DEFAULT_NAMES} when null. Empty when
     * no candidate loads or it lacks the CBLAS symbols; never throws for a missing library.
     */
    public static Optional<OpenBlas> load(String path) {
        List<String> names = new ArrayList<>();
        if (path != null && !path.isBlank()) names.add(path);
        else names.addAll(DEFAULT_NAMES);
        for (String name : names) {
            try {
                if (name.contains("/") && !Files.exists(Path.of(name))) continue;
                SymbolLookup lib = SymbolLookup.libraryLookup(name, Arena.global());
                if (lib.find("cblas_sgemm").isEmpty() || lib.find("cblas_sgemv").isEmpty()) continue;
                return Optional.of(new OpenBlas(name, lib));
            } catch (IllegalArgumentException | IllegalCallerException | UnsupportedOperationException e) {
                // not loadable here (absent, wrong architecture, native access denied): try the next candidate
            }
        }
        return Optional.empty();
    }

    /** The name it was loaded from, and OpenBLAS's own build description when it has one. */
    public String describe() {
        String cfg = "";
        if (getConfig != null) {
            try {
                MemorySegment s = (MemorySegment) getConfig.invokeExact();
                cfg = " (" + s.reinterpret(256).getString(0).trim() + ")";
            } catch (Throwable t) {
                cfg = "";
            }
        }
        return library + cfg;
    }

    private final ThreadLocal<Boolean> singleHere = ThreadLocal.withInitial(() -> false);

    /**
     * Makes OpenBLAS run this thread's calls on this thread alone (once per thread; cheap after that). One call to
     * {@link #threads} is not enough: in OpenBLAS's OpenMP build the thread count is the calling thread's OpenMP
     * setting, so calls from any other thread (the backend's workers) went on splitting each block over OpenBLAS's
     * own threads, on top of the workers, and that split gave other bits for some elements.
     */
    public void singleThreadedOnThisThread() {
        if (singleHere.get()) return;
        threads(1);
        singleHere.set(true);
    }

    /** OpenBLAS's worker count for subsequent calls (process-wide; per calling thread in its OpenMP build). */
    public void threads(int n) {
        if (setThreads == null) return;
        try {
            setThreads.invokeExact(n);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * c(M,N) = op(a)(M,K)·op(b)(K,N) + (accumulate ? c : 0), row-major: a stored (M,K), or (K,M) when transA; b
     * stored (K,N), or (N,K) when transB. M = 1 goes to sgemv (about 3x faster than sgemm for a vector).
     */
    public void gemm(MemorySegment a, MemorySegment b, MemorySegment c, int m, int n, int k, boolean transA,
                     boolean transB, boolean accumulate) {
        float beta = accumulate ? 1f : 0f;
        try {
            if (m == 1) {
                // a is K contiguous floats either way; c(1,N) = op(b)ᵀ-as-stored · a. Overwrite = zero, then add:
                // some OpenBLAS versions scale y by beta = 0 as a multiply, which would keep a NaN already in c.
                if (!accumulate) c.asSlice(0, 4L * n).fill((byte) 0);
                beta = 1f;
                if (transB) sgemv.invokeExact(ROW_MAJOR, NO_TRANS, n, k, 1f, b, k, a, 1, beta, c, 1);
                else sgemv.invokeExact(ROW_MAJOR, TRANS, k, n, 1f, b, n, a, 1, beta, c, 1);
                return;
            }
            sgemm.invokeExact(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, m, n, k, 1f,
                    a, transA ? m : k, b, transB ? k : n, beta, c, n);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * The general row-major sgemm: c = op(a)·op(b) + beta·c with explicit leading dimensions, on matrices that
     * start at the given segments (slices of larger ones are fine).
     */
    public void sgemm(boolean transA, boolean transB, int m, int n, int k, MemorySegment a, int lda, MemorySegment b,
                      int ldb, float beta, MemorySegment c, int ldc) {
        try {
            sgemm.invokeExact(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, m, n, k, 1f, a, lda, b, ldb,
                    beta, c, ldc);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@link #sgemm} where any of a, b, c may be a heap segment ({@code MemorySegment.ofArray(float[])}). */
    public void sgemmHeap(boolean transA, boolean transB, int m, int n, int k, MemorySegment a, int lda, MemorySegment b,
                          int ldb, float beta, MemorySegment c, int ldc) {
        try {
            sgemmHeap.invokeExact(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, m, n, k, 1f, a, lda, b,
                    ldb, beta, c, ldc);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** The general row-major sgemv: y = op(a)·x + beta·y, a (rows, cols) with leading dimension lda. */
    public void sgemv(boolean trans, int rows, int cols, MemorySegment a, int lda, MemorySegment x, float beta,
                      MemorySegment y) {
        try {
            sgemv.invokeExact(ROW_MAJOR, trans ? TRANS : NO_TRANS, rows, cols, 1f, a, lda, x, 1, beta, y, 1);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }
}
