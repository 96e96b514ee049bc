package dev.crucible.qualify;

import dev.crucible.backend.Backend;
import dev.crucible.backend.BackendProvider;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.HostBuffer;
import dev.crucible.backend.Op;
import dev.crucible.backend.UnsupportedOpException;
import dev.crucible.cpu.CpuBackend;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Rng;

import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * A simulated defective accelerator: the CPU backend with the {@link Defects} a real chip or its software stack has
 * shown (silently reduced matmul precision, nondeterministic reductions, bit flips, NaN on rare inputs, a missing op,
 * an op that hangs). It exists so that qualification and parity can be shown to catch and name each one; see
 * docs/qualify.md. Named {@code defective:SPEC} (e.g. {@code defective:matmul-mantissa=10}); a bare
 * {@code defective} reads the spec from the environment variable {@code CRUCIBLE_DEFECTS}.
 *
 * <p>Random draws (which elements flip, the summation order) come from a generator keyed by the defect seed and a
 * call counter: reproducible from process to process, different from call to call.
 */
public final class DefectiveBackend implements Backend {
    public static final String ENV = "CRUCIBLE_DEFECTS";
    /** The low mantissa bits an input value must carry to trigger nan-on (masked to the defect's bit count). */
    static final int NAN_PATTERN = 0x5A_5A5A;

    public static final class Provider implements BackendProvider {
        @Override
        public String name() { return "defective"; }

        @Override
        public Backend create(int threads) {
            return create(threads, "");
        }

        @Override
        public Backend create(int threads, String options) {
            String spec = options.isEmpty() ? System.getenv().getOrDefault(ENV, "") : options;
            return new DefectiveBackend(new CpuBackend(threads > 0 ? threads : Runtime.getRuntime().availableProcessors()),
                    Defects.parse(spec));
        }
    }

    private final CpuBackend cpu;
    private final Defects defects;
    private long calls;

    public DefectiveBackend(CpuBackend cpu, Defects defects) {
        this.cpu = cpu;
        this.defects = defects;
    }

    public Defects defects() { return defects; }

    @Override
    public String name() { return "defective:" + defects.spec(); }

    @Override
    public Buffer allocate(DType type, long elements) { return cpu.allocate(type, elements); }

    @Override
    public void copyIn(Buffer dst, MemorySegment src) { cpu.copyIn(dst, src); }

    @Override
    public void copyOut(Buffer src, MemorySegment dst) { cpu.copyOut(src, dst); }

    @Override
    public boolean supports(Op op) {
        return !defects.missing().contains(op.name()) && cpu.supports(op);
    }

    @Override
    public void run(Op op) {
        if (!supports(op)) throw new UnsupportedOpException(name(), op);
        long call = ++calls;
        if (defects.hang().contains(op.name())) hang();
        int nanAt = op.name().equals(defects.nanOp()) ? rarePattern(op) : -1;
        switch (op) {
            case Op.MatMul mm when defects.matmulMantissa() != Defects.NO_ROUNDING -> reducedPrecision(mm);
            case Op.MatMul mm when defects.reduceOrder() && mm.accumulate() && mm.transA() && !mm.transB() && mm.k() > 1 ->
                    splitK(mm, Rng.keyed(defects.seed(), Rng.key("reduce-order"), call));
            case Op.SumSquares ss when defects.reduceOrder() ->
                    shuffledSumSquares(ss, Rng.keyed(defects.seed(), Rng.key("reduce-order"), call));
            default -> cpu.run(op);
        }
        if (nanAt >= 0) {
            HostBuffer out = HostBuffer.of(op.outputs().getFirst());
            if (out.type() == DType.F32 && out.elements() > 0) out.setFloat(nanAt % out.elements(), Float.NaN);
        }
        if (op.name().equals(defects.bitflipOp())) flipBits(op, Rng.keyed(defects.seed(), Rng.key("bitflip"), call));
    }

    /** A hung device: never returns, whatever the host does. */
    private static void hang() {
        while (true) {
            try {
                Thread.sleep(Long.MAX_VALUE);
            } catch (InterruptedException ignored) {
                // a hung device does not answer to the host
            }
        }
    }

    /** MatMul on inputs rounded to the defect's mantissa width; accumulation as the CPU backend does it. */
    private void reducedPrecision(Op.MatMul mm) {
        try (Buffer a = rounded(mm.a()); Buffer b = rounded(mm.b())) {
            cpu.run(new Op.MatMul(a, b, mm.c(), mm.m(), mm.n(), mm.k(), mm.transA(), mm.transB(), mm.accumulate()));
        }
    }

    private Buffer rounded(Buffer src) {
        HostBuffer in = HostBuffer.of(src), out = HostBuffer.of(cpu.allocate(DType.F32, src.elements()));
        int bits = defects.matmulMantissa();
        for (long i = 0; i < src.elements(); i++) out.setFloat(i, roundMantissa(in.getFloat(i), bits));
        return out;
    }

    /** x rounded to nearest (ties to even) with {@code bits} explicit mantissa bits; non-finite values unchanged. */
    public static float roundMantissa(float x, int bits) {
        if (!Float.isFinite(x) || bits >= 23) return x;
        int drop = 23 - bits, u = Float.floatToRawIntBits(x);
        int lsb = (u >>> drop) & 1;
        u += (1 << (drop - 1)) - 1 + lsb;
        return Float.intBitsToFloat(u & -(1 << drop));
    }

    /** dW += aᵀ·b with the K sum split at a random point into two accumulations: the same sum in another order. */
    private void splitK(Op.MatMul mm, Rng rng) {
        int r = 1 + rng.nextInt(mm.k() - 1), m = mm.m(), n = mm.n(), k = mm.k();
        cpu.run(new Op.MatMul(mm.a().slice(0, (long) r * m), mm.b().slice(0, (long) r * n), mm.c(), m, n, r, true, false, true));
        cpu.run(new Op.MatMul(mm.a().slice((long) r * m, (long) (k - r) * m), mm.b().slice((long) r * n, (long) (k - r) * n),
                mm.c(), m, n, k - r, true, false, true));
    }

    /** Σx² over chunks of random length (1..256), each summed in f32, the partial sums added in a random order. */
    private static void shuffledSumSquares(Op.SumSquares ss, Rng rng) {
        HostBuffer x = HostBuffer.of(ss.x());
        long n = x.elements();
        java.util.List<Float> partials = new java.util.ArrayList<>();
        for (long start = 0; start < n; ) {
            // Short chunks (hundreds of partial sums for the suite's 65536-element case), so two calls practically
            // never round alike: with chunks of up to 4096 two random orders sometimes gave the same bits.
            long len = Math.min(n - start, 1 + rng.nextInt(256));
            float s = 0;
            for (long i = start; i < start + len; i++) s += x.getFloat(i) * x.getFloat(i);
            partials.add(s);
            start += len;
        }
        for (int i = partials.size() - 1; i > 0; i--) java.util.Collections.swap(partials, i, rng.nextInt(i + 1));
        float total = 0;
        for (float p : partials) total += p;
        HostBuffer.of(ss.out()).setFloat(0, total);
    }

    /** The position of the first input value with the trigger pattern in its low mantissa bits, or -1. */
    private int rarePattern(Op op) {
        int mask = (1 << defects.nanBits()) - 1, want = NAN_PATTERN & mask;
        long offset = 0;
        for (Buffer b : OpIO.inputs(op)) {
            if (b.type() != DType.F32) continue;
            HostBuffer h = HostBuffer.of(b);
            for (long i = 0; i < h.elements(); i++) {
                if ((h.getInt(i) & mask) == want) return (int) ((offset + i) & Integer.MAX_VALUE);
            }
            offset += h.elements();
        }
        return -1;
    }

    /** Each F32 output element, with probability rate, gets one of its exponent bits (23..30) flipped. */
    private void flipBits(Op op, Rng rng) {
        double rate = defects.bitflipRate();
        List<Buffer> outs = op.outputs();
        for (Buffer b : outs) {
            if (b.type() != DType.F32) continue;
            HostBuffer h = HostBuffer.of(b);
            // Geometric gaps between flipped elements: exact for any rate, and cheap for small ones.
            long i = gap(rng, rate);
            while (i < h.elements()) {
                h.setInt(i, h.getInt(i) ^ (1 << (23 + rng.nextInt(8))));
                i += 1 + gap(rng, rate);
            }
        }
    }

    private static long gap(Rng rng, double rate) {
        if (rate >= 1) return 0;
        double u = 1 - rng.nextDouble();
        return (long) Math.floor(Math.log(u) / Math.log1p(-rate));
    }

    @Override
    public void synchronize() { cpu.synchronize(); }

    @Override
    public void close() { cpu.close(); }

    @Override
    public int invariantMatmulRows() { return cpu.invariantMatmulRows(); }
}
