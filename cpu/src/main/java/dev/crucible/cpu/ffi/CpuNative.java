package dev.crucible.cpu.ffi;

import dev.crucible.cpu.kernels.PagedAttention;
import dev.crucible.cpu.kernels.Parallel;
import dev.crucible.tensor.DType;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.Path;

import static dev.crucible.cpu.ffi.Downcalls.rethrow;
import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The CPU backend's native kernels ({@code cpu/src/main/c/crucible_cpu.c}, built into the jar by the Maven build
 * when a C compiler is there), through FFM: matmuls on stored Q4_0 and Q8_0 weights that multiply 8-bit integers
 * with AVX-512 VNNI (an instruction the Vector API cannot emit), and decode rows of float weights.
 *
 * <p>Optional in every way: without the library (no compiler at build time, another CPU architecture), on a CPU
 * without AVX-512 VNNI, or with {@code CRUCIBLE_NATIVE=off}, the backend keeps its Java kernels. {@link #status}
 * says which, and why.
 *
 * <p>What the kernels compute is pinned down in crucible_cpu.c's header: for Q4_0 it is exactly {@code Q4Int}'s
 * integer path (the same bits, checked by CpuNativeTest), on a copy of each matrix rearranged so that each vector
 * lane is one weight row (as many bytes as the GGUF blocks). For Q8_0 it is the same scheme on 8-bit weights; it
 * changes a Q8_0 model's results from the f32 path's ({@code CRUCIBLE_Q8=f32} keeps that path). For F32, F16 and
 * BF16 decode rows it is the Java kernels' order exactly. Every row's bits are the same whatever other rows or
 * sequences share a call, and for any thread count.
 *
 * <p>Downcalls are "critical": they may take heap segments (the quantized activations live in Java arrays) and
 * hold off the GC for their duration, a chunk of rows (well under a millisecond to a few).
 */
public final class CpuNative {

    /** The setting: the system property {@code crucible.native}, else the environment variable {@code CRUCIBLE_NATIVE}. */
    public static final String PROPERTY = "crucible.native", ENV = "CRUCIBLE_NATIVE";

    /** Where the build puts the library inside the jar (cpu/pom.xml). */
    static final String RESOURCE = "/dev/crucible/cpu/ffi/linux-x86_64/libcrucible_cpu.so";

    /** The interface version this class speaks (crucible_cpu_abi()). */
    static final int ABI = 7;

    private final MethodHandle quantize, pack, packedMatmul, floatMatmul, pagedRows;
    /** The AVX2 forms only (a CPU without AVX-512 VNNI): quantized matmuls, no float rows or attention. */
    private final boolean avx2;

    /** The same library, its AVX2 forms only: what a CPU without AVX-512 VNNI gets (tests compare the two). */
    CpuNative avx2Form() {
        return new CpuNative(this, true);
    }

    private CpuNative(CpuNative other, boolean avx2) {
        this.quantize = other.quantize;
        this.pack = other.pack;
        this.packedMatmul = other.packedMatmul;
        this.floatMatmul = other.floatMatmul;
        this.pagedRows = other.pagedRows;
        this.avx2 = avx2;
    }

    private CpuNative(SymbolLookup lib, boolean avx2) {
        this.avx2 = avx2;
        Linker linker = Linker.nativeLinker();
        Linker.Option critical = Linker.Option.critical(true);
        this.quantize = linker.downcallHandle(lib.findOrThrow("crucible_quantize"), FunctionDescriptor.ofVoid(
                JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, ADDRESS), critical);
        this.pack = linker.downcallHandle(lib.findOrThrow("crucible_pack"), FunctionDescriptor.ofVoid(
                JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS), critical);
        this.packedMatmul = linker.downcallHandle(lib.findOrThrow("crucible_packed_matmul"), FunctionDescriptor.ofVoid(
                JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_INT,
                ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT), critical);
        this.floatMatmul = linker.downcallHandle(lib.findOrThrow("crucible_float_matmul"), FunctionDescriptor.ofVoid(
                ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT), critical);
        this.pagedRows = linker.downcallHandle(lib.findOrThrow("crucible_paged_rows"), FunctionDescriptor.of(JAVA_INT,
                ADDRESS, ADDRESS, ADDRESS, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT,
                JAVA_INT, JAVA_INT, JAVA_INT, JAVA_FLOAT), critical);
    }

    /** Why the library is or is not in use, in one line (for startup banners and bench output). */
    public static String status() {
        return loaded().status;
    }

    /**
     * The kernels as {@link #PROPERTY} / {@link #ENV} ask: {@code auto} (the default) = the library built into the
     * jar, when it loads and this CPU can run it; {@code off} = none; anything else = the path of a library file
     * built from crucible_cpu.c (an error when it cannot be used, since it was asked for by name). Null when none.
     */
    public static CpuNative fromEnvironment() {
        return loaded().kernels;
    }

    /** What {@link #fromEnvironment} found: decided once per process (a bad setting is refused on every call). */
    record Loaded(CpuNative kernels, String status) {}

    private static Loaded loaded;

    private static synchronized Loaded loaded() {
        if (loaded == null) loaded = load(System.getProperty(PROPERTY, System.getenv(ENV)));
        return loaded;
    }

    static Loaded load(String setting) {
        if (setting != null && (setting.equalsIgnoreCase("off") || setting.equals("0") || setting.equalsIgnoreCase("false"))) {
            return new Loaded(null, "native kernels off (" + ENV + "=" + setting + "): Java kernels only");
        }
        boolean auto = setting == null || setting.isBlank() || setting.equalsIgnoreCase("auto") || setting.equalsIgnoreCase("on");
        Path file;
        if (auto) {
            if (!System.getProperty("os.arch", "").matches("amd64|x86_64")) {
                return new Loaded(null, "no native kernels for " + System.getProperty("os.arch") + ": Java kernels only");
            }
            try {
                file = extract();
            } catch (IOException e) {
                return new Loaded(null, "native kernels could not be unpacked (" + e.getMessage() + "): Java kernels only");
            }
            if (file == null) {
                return new Loaded(null, "native kernels not built (no C compiler when the jar was built): Java kernels only");
            }
        } else {
            file = Path.of(setting);
            if (!Files.isRegularFile(file)) {
                throw new IllegalArgumentException(ENV + " (or -D" + PROPERTY + ") must be auto, off or a library file; '"
                        + setting + "' is not a file");
            }
        }
        String why;
        try {
            SymbolLookup lib = SymbolLookup.libraryLookup(file, Arena.global());
            Linker linker = Linker.nativeLinker();
            int abi = (int) linker.downcallHandle(lib.findOrThrow("crucible_cpu_abi"), FunctionDescriptor.of(JAVA_INT)).invokeExact();
            if (abi != ABI) {
                why = "native kernels at " + file + " speak interface " + abi + ", not " + ABI;
            } else {
                int level = (int) linker.downcallHandle(lib.findOrThrow("crucible_cpu_level"), FunctionDescriptor.of(JAVA_INT)).invokeExact();
                if (level == 2) return new Loaded(new CpuNative(lib, false), "native kernels (AVX-512 VNNI) from " + file);
                if (level == 1) {
                    return new Loaded(new CpuNative(lib, true),
                            "native kernels (AVX2: the Q4_0/Q8_0 matmuls; no AVX-512 VNNI for the rest) from " + file);
                }
                why = "this CPU has neither AVX-512 VNNI nor AVX2, which the native kernels need";
            }
        } catch (Throwable t) { // not loadable: wrong architecture, missing symbols, native access denied
            why = "native kernels at " + file + " did not load (" + t.getMessage() + ")";
        }
        if (!auto) throw new IllegalArgumentException(ENV + "=" + setting + ": " + why);
        return new Loaded(null, why + ": Java kernels only");
    }

    /**
     * Copies the library out of the jar (FFM loads files) into a directory of this process's own
     * ({@code java.io.tmpdir/crucible-native-…}, created private to this user), removed when the JVM exits. A
     * shared, predictable path would let another user of the machine plant a library there first. Null when the jar
     * has none.
     */
    private static Path extract() throws IOException {
        byte[] bytes;
        try (InputStream in = CpuNative.class.getResourceAsStream(RESOURCE)) {
            if (in == null) return null;
            bytes = in.readAllBytes();
        }
        Path dir = Files.createTempDirectory("crucible-native-");
        Path file = dir.resolve("libcrucible_cpu.so");
        Files.write(file, bytes);
        dir.toFile().deleteOnExit(); // registered first, so it runs after the file's
        file.toFile().deleteOnExit();
        return file;
    }

    /** The Q8_0 setting: the system property {@code crucible.q8}, else the environment variable {@code CRUCIBLE_Q8}. */
    public static final String Q8_PROPERTY = "crucible.q8", Q8_ENV = "CRUCIBLE_Q8";

    /**
     * Whether Q8_0 matmuls quantize their activations to 8 bits and take these kernels: {@code int8} (the default)
     * when the kernels are loaded; {@code f32} never (the Java f32 path, activations exact). Anything else is an
     * error naming the setting.
     */
    public static boolean q8Int() {
        String v = System.getProperty(Q8_PROPERTY, System.getenv(Q8_ENV));
        if (v == null || v.isBlank() || v.equalsIgnoreCase("int8")) return true;
        if (v.equalsIgnoreCase("f32")) return false;
        throw new IllegalArgumentException(Q8_ENV + " (or -D" + Q8_PROPERTY + ") must be int8 or f32, not '" + v + "'");
    }

    /**
     * Whether every kernel here can run (AVX-512 VNNI): float decode rows and decode attention too. False: the
     * quantized matmuls only, in their AVX2 form.
     */
    public boolean full() { return !avx2; }

    /** Blocks of 32 a row is quantized into: whole groups of 32 blocks (the kernels' padding; see crucible_cpu.c). */
    public static int paddedBlocks(int k) {
        return (k / 32 + 31) / 32 * 32;
    }

    /**
     * x[0..k) quantized to 8-bit integers per 32-element block into nbPad blocks: q (nbPad·32 bytes, block b at
     * 32b), d (nbPad floats), s (nbPad ints: Σq per block). See crucible_cpu.c.
     */
    public void quantize(MemorySegment x, int k, int nbPad, MemorySegment q, MemorySegment d, MemorySegment s) {
        if (k % 32 != 0 || nbPad < k / 32) throw new IllegalArgumentException("k " + k + ", blocks " + nbPad);
        try {
            quantize.invokeExact(avx2 ? 1 : 0, x, k, nbPad, q, d, s);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** Rows per packed group (one per 32-bit lane of a 512-bit vector; crucible_cpu.c: PACK_ROWS). */
    public static final int PACK_ROWS = 16;
    /** Bytes per group and block (crucible_cpu.c: PACK_Q4, PACK_Q8). */
    static final int PACK_Q4 = 288, PACK_Q8 = 544;

    /**
     * A Q4_0 or Q8_0 matrix (n rows of k) rearranged for the packed kernel: 16 rows per group, as many bytes as the
     * GGUF blocks. Its memory is freed by the GC with the object.
     */
    public record Packed(MemorySegment seg, DType type, int n, int k) {
        int groups() { return (n + PACK_ROWS - 1) / PACK_ROWS; }

        /**
         * Rows r0 … r0+count-1 as a packed matrix of their own (the same memory): r0 must start a group of 16, and
         * the rows end on a group boundary or at the last row.
         */
        public Packed rows(int r0, int count) {
            if (r0 < 0 || count <= 0 || r0 + count > n || r0 % PACK_ROWS != 0 || (count % PACK_ROWS != 0 && r0 + count != n)) {
                throw new IllegalArgumentException("rows " + r0 + "+" + count + " of " + n + " are not whole groups of " + PACK_ROWS);
            }
            long groupBytes = (long) (k / 32) * (type == DType.Q4_0 ? PACK_Q4 : PACK_Q8);
            int groups = (count + PACK_ROWS - 1) / PACK_ROWS;
            return new Packed(seg.asSlice(r0 / PACK_ROWS * groupBytes, groups * groupBytes), type, count, k);
        }
    }

    /** Rearranges the n rows of k elements at {@code w} (GGUF Q4_0 or Q8_0 blocks), row groups in parallel. */
    public Packed pack(Parallel par, DType type, MemorySegment w, int n, int k) {
        if (type != DType.Q4_0 && type != DType.Q8_0) throw new IllegalArgumentException("no packed layout for " + type);
        if (k % 32 != 0) throw new IllegalArgumentException(type + " rows hold whole blocks of 32, not " + k);
        boolean q4 = type == DType.Q4_0;
        checkWeights(w, n, k, q4 ? 18 : 34);
        int groups = (n + PACK_ROWS - 1) / PACK_ROWS, perTask = 16;
        MemorySegment out = HugePages.allocate((long) groups * (k / 32) * (q4 ? PACK_Q4 : PACK_Q8), Arena.ofAuto());
        par.forEach(Parallel.chunks(groups, perTask), t -> {
            int g0 = t * perTask, g1 = Math.min(groups, g0 + perTask);
            try {
                pack.invokeExact(q4 ? 1 : 0, w, n, k, g0, g1, out);
            } catch (Throwable e) {
                throw rethrow(e);
            }
        });
        return new Packed(out, type, n, k);
    }

    /** The activations of a decode matmul, quantized: m rows of nbPad blocks (values, scales, sums). */
    private record Quantized(MemorySegment q, MemorySegment d, MemorySegment s, int nbPad) {}

    private Quantized quantizeRows(MemorySegment a, int m, int k) {
        int nbPad = paddedBlocks(k);
        if (a.byteSize() < (long) m * k * 4) throw new IllegalArgumentException("a holds " + a.byteSize() + " bytes, need " + (long) m * k * 4);
        MemorySegment q = MemorySegment.ofArray(new byte[m * nbPad * 32]);
        MemorySegment d = MemorySegment.ofArray(new float[m * nbPad]), s = MemorySegment.ofArray(new int[m * nbPad]);
        for (int i = 0; i < m; i++) {
            quantize(a.asSlice((long) i * k * 4, (long) k * 4), k, nbPad, q.asSlice((long) i * nbPad * 32),
                    d.asSlice((long) i * nbPad * 4), s.asSlice((long) i * nbPad * 4));
        }
        return new Quantized(q, d, s, nbPad);
    }

    private static void checkWeights(MemorySegment w, int n, int k, int blockBytes) {
        long need = (long) n * (k / 32) * blockBytes;
        if (w.byteSize() < need) throw new IllegalArgumentException("weights hold " + w.byteSize() + " bytes, need " + need);
    }

    private static void checkOutput(MemorySegment c, int m, int n) {
        if (c.byteSize() < (long) m * n * 4) throw new IllegalArgumentException("c holds " + c.byteSize() + " bytes, need " + (long) m * n * 4);
    }

    /**
     * c (m,n) (+)= a (m,k) · wᵀ for w n×k rearranged by {@link #pack} from Q4_0 or Q8_0 (crucible_cpu.c's contract:
     * for Q4_0 Q4Int's bits). Every activation row is quantized once, then the row groups go out in fixed chunks
     * over {@code par}; each row's bits are the same for any m and any thread count.
     */
    public void matmulPacked(Parallel par, MemorySegment a, Packed w, MemorySegment c, int m, int n, int k,
                             boolean accumulate) {
        if (w.n() != n || w.k() != k) throw new IllegalArgumentException("packed " + w.n() + "x" + w.k() + " used as " + n + "x" + k);
        checkOutput(c, m, n);
        Quantized x = quantizeRows(a, m, k);
        int q4 = w.type() == DType.Q4_0 ? 1 : 0;
        int groups = w.groups(), perTask = n >= 4096 ? 16 : 4; // 256 or 64 rows per task
        par.forEach(Parallel.chunks(groups, perTask), t -> {
            int g0 = t * perTask, g1 = Math.min(groups, g0 + perTask);
            // lane sums of up to 16 activation rows (PACK_TILE_M), unless one row keeps them in registers (AVX-512)
            MemorySegment acc = m > 1 || avx2 ? MemorySegment.ofArray(new float[Math.min(m, 16) * 256]) : MemorySegment.NULL;
            try {
                packedMatmul.invokeExact(avx2 ? 1 : 0, q4, w.seg(), n, k, g0, g1, m, x.q, x.d, x.s, x.nbPad, acc, c, (long) n, accumulate ? 1 : 0);
            } catch (Throwable e) {
                throw rethrow(e);
            }
        });
    }

    /**
     * c (m,n) (+)= a (m,k) · wᵀ for w n×k stored as F32, F16 or BF16: the decode matmul in the Java kernels' order
     * (WeightRows.dot), so with their bits; faster (several rows' chains at once, prefetch, F16C conversion).
     */
    public void matmulFloat(Parallel par, DType type, MemorySegment a, MemorySegment w,
                            MemorySegment c, int m, int n, int k, boolean accumulate) {
        if (avx2) throw new IllegalStateException("float decode rows need AVX-512 (full())");
        int code = switch (type) {
            case F32 -> 0;
            case F16 -> 1;
            case BF16 -> 2;
            default -> throw new IllegalArgumentException("no float kernel for " + type);
        };
        if (w.byteSize() < type.bytes((long) n * k)) throw new IllegalArgumentException("weights hold " + w.byteSize() + " bytes, need " + type.bytes((long) n * k));
        if (a.byteSize() < (long) m * k * 4) throw new IllegalArgumentException("a holds " + a.byteSize() + " bytes, need " + (long) m * k * 4);
        checkOutput(c, m, n);
        int cols = n >= 4096 ? 256 : 64;
        par.forEach(Parallel.chunks(n, cols), t -> {
            int j0 = t * cols, j1 = Math.min(n, j0 + cols);
            try {
                floatMatmul.invokeExact(w, code, k, j0, j1, m, a, c, (long) n, accumulate ? 1 : 0);
            } catch (Throwable e) {
                throw rethrow(e);
            }
        });
    }

    /**
     * PagedAttention's decode blocks in native code, with its bits (crucible_paged_rows). The pools and q, out are
     * bounds-checked by the Java kernel before any block runs (PagedAttention.validate).
     */
    public PagedAttention.RowKernel attentionRows() {
        if (avx2) throw new IllegalStateException("decode attention needs AVX-512 (full())");
        return (q, kPool, vPool, half, table, tableRow, len, r0, n, out, heads, kvHeads, kh, d, pageSize, scale) -> {
            try {
                return (int) pagedRows.invokeExact(q, kPool, vPool, half ? 1 : 0,
                        MemorySegment.ofArray(table).asSlice(tableRow * 4L), MemorySegment.ofArray(len).asSlice(r0 * 4L),
                        r0, n, out, heads, kvHeads, kh, d, pageSize, scale) != 0;
            } catch (Throwable e) {
                throw rethrow(e);
            }
        };
    }
}
