package dev.crucible.cpu;

import dev.crucible.backend.Backend;
import dev.crucible.backend.BackendProvider;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.HostBackend;
import dev.crucible.backend.HostBuffer;
import dev.crucible.backend.Op;
import dev.crucible.backend.UnsupportedOpException;
import dev.crucible.cpu.blas.BlasGemm;
import dev.crucible.cpu.blas.OpenBlas;
import dev.crucible.cpu.ffi.CpuNative;
import dev.crucible.cpu.ffi.HugePages;
import dev.crucible.cpu.kernels.AdamW;
import dev.crucible.cpu.kernels.Attention;
import dev.crucible.cpu.kernels.CrossEntropy;
import dev.crucible.cpu.kernels.Elementwise;
import dev.crucible.cpu.kernels.Embedding;
import dev.crucible.cpu.kernels.MatMul;
import dev.crucible.cpu.kernels.PagedAttention;
import dev.crucible.cpu.kernels.Q4Int;
import dev.crucible.cpu.kernels.Reduce;
import dev.crucible.cpu.kernels.RmsNorm;
import dev.crucible.cpu.kernels.Rope;
import dev.crucible.cpu.kernels.SwiGlu;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Collections;
import java.util.Map;
import java.util.WeakHashMap;

/**
 * The CPU backend: every op on host memory, in Vector API kernels ({@link dev.crucible.cpu.kernels}) spread over a
 * private pool of {@code threads} threads. Runs synchronously. Given the same inputs it produces the same bits for
 * any thread count: kernels split work into fixed-size tasks that each own their outputs and reduce in a fixed order.
 *
 * <p>Optionally matmul goes to OpenBLAS ({@link OpenBlas}, loaded through FFM), single-threaded on fixed blocks of
 * C spread over this pool ({@link BlasGemm}): faster, and still the same bits for any thread count, but other bits
 * than the Java kernels, and other bits again with another OpenBLAS version or CPU kind. It is opt-in, so that by
 * default a run gives the same bits on every machine: the {@link Provider} (what {@code --backend cpu} creates)
 * uses OpenBLAS only with {@code CRUCIBLE_BLAS=on} (or {@code -Dcrucible.blas=on}); {@code new CpuBackend(threads)}
 * never does. Skinny products (fewer than {@link #BLAS_MIN_ROWS} rows, e.g. single-token decode) always use the
 * Java kernels: per-call overhead and OpenBLAS's small-M paths made decode an order of magnitude slower there.
 *
 * <p>Where they were built and the CPU can run them, native kernels ({@link CpuNative}, C through FFM, on by default:
 * {@code CRUCIBLE_NATIVE}) take the inference-shaped ops: matmuls on stored Q4_0/Q8_0 weights (8-bit activations,
 * AVX-512 VNNI), decode rows on float weights and decode attention (the last two with the Java kernels' bits).
 * Every row's bits stay independent of the thread count and of what else shares a call.
 */
public final class CpuBackend extends HostBackend {

    public static final class Provider implements BackendProvider {
        @Override
        public String name() { return "cpu"; }

        @Override
        public Backend create(int threads) {
            int n = threads > 0 ? threads : Runtime.getRuntime().availableProcessors();
            return new CpuBackend(n, blasFromEnvironment());
        }
    }

    /** Rope tables hold at least this many positions, so short runs do not rebuild as positions grow. */
    private static final int ROPE_MIN_POSITIONS = 4096;
    /** Larger tables (positions × D/2 floats, twice) are not cached; such positions are computed per row. */
    private static final long ROPE_MAX_ENTRIES = 1L << 24;

    /**
     * Which matmul the provider's backends use: the system property {@code crucible.blas}, else the environment
     * variable {@code CRUCIBLE_BLAS}: {@code auto} or {@code on} = OpenBLAS when it loads, else the Java kernels;
     * unset or {@code off} = always the Java kernels (the same bits on every machine); anything else = a path or
     * soname of the OpenBLAS library to load.
     */
    public static final String BLAS_PROPERTY = "crucible.blas", BLAS_ENV = "CRUCIBLE_BLAS";

    /** OpenBLAS as {@link #BLAS_PROPERTY} / {@link #BLAS_ENV} ask, or null for the Java kernels. */
    public static OpenBlas blasFromEnvironment() {
        String v = System.getProperty(BLAS_PROPERTY, System.getenv(BLAS_ENV));
        if (v == null || v.isBlank() || v.equalsIgnoreCase("off") || v.equals("0") || v.equalsIgnoreCase("false")) return null;
        boolean auto = v.equalsIgnoreCase("auto") || v.equalsIgnoreCase("on");
        return OpenBlas.load(auto ? null : v).orElse(null);
    }

    private final WorkerPool pool;
    private final OpenBlas blas; // null: Java kernels only
    /** Q4_0 decode matmuls on 8-bit activations ({@link Q4Int}; {@code CRUCIBLE_Q4=f32} turns it off). */
    private final boolean q4Int;
    /** Native kernels ({@link CpuNative}), or null; and whether Q8_0 matmuls use them ({@code CRUCIBLE_Q8}). */
    private final CpuNative nat;
    private final boolean q8Int;
    /** Decode blocks of PagedAttention in the native kernels (their bits are the Java kernel's), or null. */
    private final PagedAttention.RowKernel attentionRows;
    private Rope.Table ropeTable; // the last table built; replaced when θ, D or the needed positions change

    public CpuBackend() {
        this(Runtime.getRuntime().availableProcessors());
    }

    /** Java kernels only: bit-identical results for any thread count. */
    public CpuBackend(int threads) {
        this(threads, null);
    }

    /**
     * With {@code blas} non-null, matmuls on native memory go to OpenBLAS (single-threaded calls on fixed blocks,
     * spread over this backend's threads: same bits for any thread count). Everything else stays in the Java
     * kernels.
     */
    public CpuBackend(int threads, OpenBlas blas) {
        this(threads, blas, CpuNative.fromEnvironment());
    }

    /**
     * With {@code nat} non-null, matmuls on stored Q4_0 and Q8_0 weights (any number of rows: prefill too) run in its
     * native kernels on 8-bit activations, each matrix rearranged once into the kernels' layout: for Q4_0 decode rows
     * the same bits as {@link Q4Int}; Q8_0 unless {@code CRUCIBLE_Q8=f32}. Decode rows on F32, F16 and BF16 weights
     * run there too, with the Java kernels' bits. Null: Java kernels only.
     */
    public CpuBackend(int threads, OpenBlas blas, CpuNative nat) {
        this.q4Int = Q4Int.enabled() || (nat != null && Q4Int.enabledSetting());
        this.nat = nat;
        this.q8Int = CpuNative.q8Int() && nat != null; // the setting is checked even where it cannot apply
        this.attentionRows = nat == null || !nat.full() ? null : nat.attentionRows();
        this.pool = new WorkerPool(threads);
        this.blas = blas;
    }

    /** The native kernels in use, or null. */
    public CpuNative nativeKernels() { return nat; }

    /**
     * Whether matmuls on weights stored as {@code weights} round their activations to 8 bits per block: decode-sized
     * ones (fewer than {@link MatMul#SKINNY_M} rows) for Q4_0 ({@code CRUCIBLE_Q4}), and with the native kernels every
     * Q4_0 and Q8_0 one ({@code CRUCIBLE_Q8}); false where activations stay exact f32.
     */
    public boolean decodeActivationsInt8(DType weights) {
        return switch (weights) {
            case Q4_0 -> q4Int;
            case Q8_0 -> q8Int;
            default -> false;
        };
    }

    public int threads() { return pool.threads(); }

    /** The OpenBLAS library used for matmul, or null when the Java kernels do it. */
    public OpenBlas blas() { return blas; }

    @Override
    public String name() { return "cpu"; }

    @Override
    public boolean supports(Op op) {
        return switch (op) {
            case Op.Fill o -> o.out().type() == DType.F32 || o.out().type() == DType.I32;
            case Op.Copy o -> true;
            case Op.MatMul o -> true; // F32, or a weight matrix in any type the op accepts
            case Op.EmbeddingBackward o -> o.dTable().type() == DType.F32;
            case Op.Embedding o -> true;
            case Op.RmsNorm o -> true;
            case Op.RmsNormBackward o -> true;
            case Op.Rope o -> true;
            case Op.Attention o -> o.k().type() == DType.F32 && o.v().type() == DType.F32;
            case Op.AttentionBackward o -> true;
            case Op.SwiGlu o -> true;
            case Op.SwiGluBackward o -> true;
            case Op.Add o -> true;
            case Op.CrossEntropy o -> true;
            case Op.SumSquares o -> true;
            case Op.AdamW o -> true;
            case Op.PagedAttention o -> true;
        };
    }

    @Override
    public void run(Op op) {
        if (!supports(op)) throw new UnsupportedOpException(name(), op);
        switch (op) {
            case Op.Fill o -> {
                if (o.out().type() == DType.I32) Elementwise.fillInt(pool, seg(o.out()), o.out().elements(), (int) o.value());
                else Elementwise.fill(pool, seg(o.out()), o.out().elements(), o.value());
            }
            case Op.Copy o -> {
                if (o.src().type() == o.dst().type()) Elementwise.copy(pool, seg(o.src()), seg(o.dst()));
                else Elementwise.toHalf(pool, seg(o.src()), seg(o.dst()), o.src().elements()); // F32 → F16
            }
            case Op.Embedding o -> Embedding.forward(pool, seg(o.ids()), seg(o.table()), o.table().type(), seg(o.out()),
                    o.n(), o.dim(), o.table().elements() / o.dim());
            case Op.EmbeddingBackward o -> Embedding.backward(pool, seg(o.ids()), seg(o.dOut()), seg(o.dTable()), o.n(),
                    o.dim(), o.dTable().elements() / o.dim());
            case Op.RmsNorm o -> RmsNorm.forward(pool, seg(o.x()), seg(o.weight()), seg(o.out()),
                    o.rstd() == null ? null : seg(o.rstd()), o.n(), o.dim(), o.eps());
            case Op.RmsNormBackward o -> RmsNorm.backward(pool, seg(o.dOut()), seg(o.x()), seg(o.weight()),
                    seg(o.rstd()), seg(o.dx()), seg(o.dWeight()), o.n(), o.dim());
            case Op.MatMul o -> matmul(o);
            case Op.Rope o -> Rope.apply(pool, seg(o.x()), seg(o.positions()), o.n(), o.heads(), o.headDim(),
                    ropeTable(o), o.inverse());
            case Op.Attention o -> Attention.forward(pool, seg(o.q()), seg(o.k()), seg(o.v()), seg(o.out()),
                    o.lse() == null ? null : seg(o.lse()), o.batch(), o.tq(), o.tk(), o.heads(), o.kvHeads(),
                    o.headDim(), o.qPos0(), o.kvBatchStride(), attentionRows);
            case Op.AttentionBackward o -> Attention.backward(pool, seg(o.dOut()), seg(o.q()), seg(o.k()), seg(o.v()),
                    seg(o.out()), seg(o.lse()), seg(o.dq()), seg(o.dk()), seg(o.dv()), o.batch(), o.t(), o.heads(),
                    o.kvHeads(), o.headDim());
            case Op.SwiGlu o -> SwiGlu.forward(pool, seg(o.gate()), seg(o.up()), seg(o.out()), o.n());
            case Op.SwiGluBackward o -> SwiGlu.backward(pool, seg(o.dOut()), seg(o.gate()), seg(o.up()),
                    seg(o.dGate()), seg(o.dUp()), o.n());
            case Op.Add o -> Elementwise.add(pool, seg(o.a()), seg(o.b()), seg(o.out()), o.n());
            case Op.CrossEntropy o -> CrossEntropy.forward(pool, seg(o.logits()), seg(o.targets()), seg(o.losses()),
                    o.dLogits() == null ? null : seg(o.dLogits()), o.n(), o.vocab(), o.gradScale());
            case Op.SumSquares o -> seg(o.out()).setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, 0,
                    (float) Reduce.sumSquares(pool, seg(o.x()), o.x().elements()));
            case Op.AdamW o -> AdamW.step(pool, seg(o.param()), seg(o.grad()), seg(o.m()), seg(o.v()),
                    o.param().elements(), o.lr(), o.beta1(), o.beta2(), o.eps(), o.weightDecay(), o.step(),
                    o.gradScale());
            case Op.PagedAttention o -> PagedAttention.forward(pool, seg(o.q()), seg(o.kPool()), seg(o.vPool()),
                    seg(o.pageTable()), seg(o.lengths()), seg(o.out()), o.rows(), o.heads(), o.kvHeads(), o.headDim(),
                    o.pageSize(), o.maxPages(), o.pages(), o.kPool().type() == DType.F16, attentionRows);
        }
    }

    /** Below this many rows of C a matmul stays on the Java kernels even when OpenBLAS is loaded. */
    public static final int BLAS_MIN_ROWS = 16;

    /** OpenBLAS is there and every buffer is in native memory (FFM passes only those to a plain downcall). */
    private boolean useBlas(Buffer... buffers) {
        if (blas == null) return false;
        for (Buffer b : buffers) if (!seg(b).isNative()) return false;
        return true; // BlasGemm sets OpenBLAS to one thread on every thread that calls it
    }

    /**
     * Q4_0 weight matrices rearranged for {@link Q4Int}, the decode path's integer kernel, by buffer: built on a
     * matrix's first decode-sized matmul (the GGUF bytes stay for prefill, embeddings and export, so a Q4_0 model
     * takes twice its size in memory once it has decoded), dropped when a Q4_0 buffer is written or the buffer is
     * collected.
     */
    private final Map<Buffer, Q4Int.Packed> q4Packed = Collections.synchronizedMap(new WeakHashMap<>());
    /**
     * The same for the native kernels' layout ({@link CpuNative#pack}), when they are in use: Q4_0 and Q8_0 matrices
     * on their first matmul, so such a model takes about twice its size in memory (the GGUF bytes stay for
     * embeddings and export).
     */
    private final Map<Buffer, CpuNative.Packed> nativePacked = Collections.synchronizedMap(new WeakHashMap<>());

    /**
     * Buffers of 2 MiB and more go on transparent huge pages where the OS allows ({@link HugePages}): decode streams
     * each weight once per token, and 4 KiB pages held one core to about two thirds of its read bandwidth here.
     */
    @Override
    public Buffer allocate(DType type, long elements) {
        long bytes = type.bytes(elements);
        if (bytes < HugePages.HUGE || !HugePages.enabled()) return super.allocate(type, elements);
        java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofShared();
        return HostBuffer.owning(type, elements, HugePages.allocate(bytes, arena), arena);
    }

    @Override
    public void copyIn(Buffer dst, MemorySegment src) {
        if (dst.type() == DType.Q4_0 || dst.type() == DType.Q8_0) { // it may be (or be a slice of) a packed matrix
            q4Packed.clear();
            nativePacked.clear();
        }
        super.copyIn(dst, src);
    }

    /**
     * For a weight matrix that is a slice of a larger buffer of the same type holding whole rows of k (Llama's fused
     * q;k;v and gate;up), the row it starts at in that buffer; −1 for a buffer of its own or any other slice.
     */
    private static long rowsInRoot(Buffer b, int k) {
        HostBuffer h = HostBuffer.of(b), root = h.root();
        if (root == h || root.type() != h.type() || root.elements() % k != 0 || h.rootOffset() % k != 0) return -1;
        return h.rootOffset() / k;
    }

    private static long rootRows(Buffer b, int k) { return HostBuffer.of(b).root().elements() / k; }

    private void matmul(Op.MatMul o) {
        MemorySegment a = seg(o.a()), b = seg(o.b()), c = seg(o.c());
        DType bType = o.b().type();
        boolean skinny = o.m() < MatMul.SKINNY_M && o.transB() && !o.transA();
        boolean floats = bType == DType.F16 || bType == DType.BF16 || bType == DType.F32 && (blas == null || o.m() < BLAS_MIN_ROWS);
        if (skinny && nat != null && nat.full() && floats) {
            nat.matmulFloat(pool, bType, a, b, c, o.m(), o.n(), o.k(), o.accumulate()); // the Java kernels' bits
            return;
        }
        // Q4_0 and Q8_0 through the native kernels' rearranged copy for any number of rows: decode steps and
        // prefill alike (every row's bits are the same whatever m is).
        boolean stored = o.transB() && !o.transA() && o.k() % 32 == 0;
        if (stored && nat != null && (bType == DType.Q4_0 && q4Int || bType == DType.Q8_0 && q8Int)) {
            CpuNative.Packed p = nativePacked.get(o.b());
            if (p == null || p.n() != o.n() || p.k() != o.k()) {
                long r0 = rowsInRoot(o.b(), o.k());
                if (r0 >= 0 && r0 % CpuNative.PACK_ROWS == 0 && (o.n() % CpuNative.PACK_ROWS == 0 || r0 + o.n() == rootRows(o.b(), o.k()))) {
                    // A row range of a matrix stored whole (Llama's fused q;k;v and gate;up): that matrix's packed copy.
                    HostBuffer root = HostBuffer.of(o.b()).root();
                    CpuNative.Packed whole = nativePacked.get(root);
                    if (whole == null || whole.k() != o.k()) {
                        whole = nat.pack(pool, bType, root.segment(), Math.toIntExact(rootRows(o.b(), o.k())), o.k());
                        nativePacked.put(root, whole);
                    }
                    p = whole.rows((int) r0, o.n());
                } else {
                    p = nat.pack(pool, bType, b, o.n(), o.k());
                }
                nativePacked.put(o.b(), p);
            }
            nat.matmulPacked(pool, a, p, c, o.m(), o.n(), o.k(), o.accumulate());
            return;
        }
        if (bType == DType.Q4_0 && q4Int && o.m() < MatMul.SKINNY_M && o.transB() && !o.transA()) {
            Q4Int.Packed p = q4Packed.get(o.b());
            if (p == null || p.n() != o.n() || p.k() != o.k()) {
                long r0 = rowsInRoot(o.b(), o.k());
                if (r0 >= 0) {                                    // rows of a matrix stored whole: its packed copy
                    HostBuffer root = HostBuffer.of(o.b()).root();
                    Q4Int.Packed whole = q4Packed.get(root);
                    if (whole == null || whole.k() != o.k()) {
                        whole = Q4Int.pack(pool, root.segment(), Math.toIntExact(rootRows(o.b(), o.k())), o.k());
                        q4Packed.put(root, whole);
                    }
                    p = whole.rows((int) r0, o.n());
                } else {
                    p = Q4Int.pack(pool, b, o.n(), o.k());
                }
                q4Packed.put(o.b(), p);
            }
            Q4Int.matmul(pool, a, p, c, o.m(), o.n(), o.k(), o.accumulate());
            return;
        }
        if (bType == DType.F32 && o.m() >= BLAS_MIN_ROWS && useBlas(o.a(), o.b(), o.c())) {
            BlasGemm.gemm(pool, blas, a, b, c, o.m(), o.n(), o.k(), o.transA(), o.transB(), o.accumulate());
        } else {
            MatMul.gemm(pool, a, b, bType, c, o.m(), o.n(), o.k(), o.transA(), o.transB(), o.accumulate());
        }
    }

    private static MemorySegment seg(Buffer b) {
        return HostBuffer.seg(b);
    }

    /** A cos/sin table covering this op's positions when that is cheap; built once per (θ, D) and grown by doubling. */
    private Rope.Table ropeTable(Op.Rope o) {
        MemorySegment pos = seg(o.positions());
        int maxPos = 0;
        for (int i = 0; i < o.n(); i++) maxPos = Math.max(maxPos, pos.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i));
        Rope.Table t = ropeTable;
        if (t != null && t.theta() == o.theta() && t.headDim() == o.headDim() && maxPos < t.capacity()) return t;
        int capacity = Math.max(ROPE_MIN_POSITIONS, Integer.highestOneBit(Math.max(1, maxPos)) * 2);
        if ((long) capacity * (o.headDim() / 2) > ROPE_MAX_ENTRIES) capacity = 0;
        if (t != null && t.theta() == o.theta() && t.headDim() == o.headDim() && capacity <= t.capacity()) return t;
        t = Rope.Table.build(o.theta(), o.headDim(), capacity);
        ropeTable = t;
        return t;
    }

    /**
     * Below {@link MatMul#SKINNY_M} rows every row is a dot product in one fixed order; from there on, the packed GEMM
     * (from {@link #BLAS_MIN_ROWS} rows OpenBLAS, where it is on).
     */
    @Override
    public int invariantMatmulRows() { return (blas != null ? BLAS_MIN_ROWS : MatMul.SKINNY_M) - 1; }

    @Override
    public void close() {
        q4Packed.clear();
        nativePacked.clear();
        pool.close();
    }
}
