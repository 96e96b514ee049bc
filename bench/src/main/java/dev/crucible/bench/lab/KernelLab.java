package dev.crucible.bench.lab;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.HostBuffer;
import dev.crucible.backend.Op;
import dev.crucible.backend.ref.RefBackend;
import dev.crucible.cpu.CpuBackend;
import dev.crucible.cpu.WorkerPool;
import dev.crucible.cpu.blas.BlasGemm;
import dev.crucible.cpu.blas.OpenBlas;
import dev.crucible.cpu.kernels.Attention;
import dev.crucible.cpu.kernels.MatMul;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * The kernel lab (llm.c's dev/cuda, for the CPU): numbered variants of one kernel, each first checked against
 * {@link RefBackend} on small odd shapes (NMSE), then timed on the shapes training runs. Only variants that pass are
 * timed. The winner lives in the backend; the history and the figures go to bench/NOTES.md.
 *
 * <pre>
 *   java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED \
 *        -cp bench/target/benchmarks.jar dev.crucible.bench.lab.KernelLab [matmul|attn-bwd|weight-dot|all] [threads] [reps]
 * </pre>
 */
public final class KernelLab {
    private KernelLab() {}

    /** One implementation of a kernel: runs the op's math on host segments. */
    interface Impl {
        void run(WorkerPool pool, Op op);
    }

    record Variant(String id, String what, Impl impl) {}

    /** Builds a fresh op (inputs random, outputs zero) of a family at a shape, on a backend. */
    interface OpFactory {
        Op make(Backend be, Random rnd);
    }

    static final double NMSE_TOL = 1e-9;

    public static void main(String[] args) {
        String which = args.length > 0 ? args[0] : "all";
        int threads = args.length > 1 ? Integer.parseInt(args[1]) : 2;
        int reps = args.length > 2 ? Integer.parseInt(args[2]) : 9;
        OpenBlas blas = OpenBlas.load(null).orElse(null);
        System.out.printf(Locale.ROOT, "kernel lab: %d thread(s), median of %d reps; OpenBLAS: %s%n", threads, reps,
                blas == null ? "not loaded" : blas.describe());
        try (WorkerPool pool = new WorkerPool(threads)) {
            if (which.equals("all") || which.equals("matmul")) matmul(pool, blas, reps);
            if (blas != null) blas.threads(1);
            if (which.equals("all") || which.equals("attn-bwd")) attentionBackward(pool, blas, reps);
            if (which.equals("all") || which.equals("weight-dot")) weightDot(pool, reps);
        }
    }

    // ---- matmul ---------------------------------------------------------------------------------------------------

    static void matmul(WorkerPool pool, OpenBlas blas, int reps) {
        List<Variant> vs = new ArrayList<>();
        vs.add(new Variant("mm-1", "Java packed GEMM, 6x32 micro-kernel (MatMul.gemm)", (p, op) -> {
            Op.MatMul o = (Op.MatMul) op;
            MatMul.gemm(p, seg(o.a()), seg(o.b()), seg(o.c()), o.m(), o.n(), o.k(), o.transA(), o.transB(), o.accumulate());
        }));
        if (blas != null) {
            vs.add(new Variant("mm-2", "OpenBLAS cblas_sgemm/sgemv through FFM, OpenBLAS's own threads", (p, op) -> {
                Op.MatMul o = (Op.MatMul) op;
                blas.threads(p.threads());
                blas.gemm(seg(o.a()), seg(o.b()), seg(o.c()), o.m(), o.n(), o.k(), o.transA(), o.transB(), o.accumulate());
            }));
            vs.add(new Variant("mm-3", "OpenBLAS single-threaded on fixed blocks of C over the Java pool (BlasGemm)", (p, op) -> {
                Op.MatMul o = (Op.MatMul) op;
                blas.threads(1);
                BlasGemm.gemm(p, blas, seg(o.a()), seg(o.b()), seg(o.c()), o.m(), o.n(), o.k(), o.transA(), o.transB(),
                        o.accumulate());
            }));
        }
        List<OpFactory> checks = new ArrayList<>();
        for (boolean ta : new boolean[]{false, true}) {
            for (boolean tb : new boolean[]{false, true}) {
                checks.add(mm(37, 53, 71, ta, tb, ta));
                checks.add(mm(1, 67, 45, ta, tb, tb));
                checks.add(mm(300, 130, 90, ta, tb, !ta));
                checks.add(mm(70, 500, 33, ta, tb, false));
            }
        }
        // The matmuls of a config S / M training step: forward (x·Wᵀ), dx (dy·W), dW (dyᵀ·x, accumulated).
        String[] names = {"S fwd qkvo 2048x288x288", "S dW 288x288x2048", "S fwd up 2048x768x288",
                "S dx down 2048x288x768", "S lm head 2048x4096x288", "M fwd up 2048x1408x512", "M dW up 1408x512x2048",
                "2048^3"};
        OpFactory[] shapes = {mm(2048, 288, 288, false, true, false), mm(288, 288, 2048, true, false, true),
                mm(2048, 768, 288, false, true, false), mm(2048, 288, 768, false, false, false),
                mm(2048, 4096, 288, false, true, false), mm(2048, 1408, 512, false, true, false),
                mm(1408, 512, 2048, true, false, true), mm(2048, 2048, 2048, false, true, false)};
        run("matmul", vs, checks, names, shapes, pool, reps, op -> {
            Op.MatMul o = (Op.MatMul) op;
            return 2.0 * o.m() * o.n() * o.k();
        });
    }

    static OpFactory mm(int m, int n, int k, boolean ta, boolean tb, boolean acc) {
        return (be, rnd) -> new Op.MatMul(rand(be, (long) m * k, rnd), rand(be, (long) k * n, rnd), rand(be, (long) m * n, rnd),
                m, n, k, ta, tb, acc);
    }

    // ---- attention backward ---------------------------------------------------------------------------------------

    static void attentionBackward(WorkerPool pool, OpenBlas blas, int reps) {
        List<Variant> vs = new ArrayList<>(List.of(
                new Variant("attn-bwd-1", "two passes: dk/dv per key block, then dq per query block (P, dS computed twice)",
                        (p, op) -> {
                            Op.AttentionBackward o = (Op.AttentionBackward) op;
                            AttentionBwdV1.backward(p, seg(o.dOut()), seg(o.q()), seg(o.k()), seg(o.v()), seg(o.out()),
                                    seg(o.lse()), seg(o.dq()), seg(o.dk()), seg(o.dv()), o.batch(), o.t(), o.heads(),
                                    o.kvHeads(), o.headDim());
                        }),
                new Variant("attn-bwd-2", "one pass per (batch, kv head): dq accumulated over key blocks in order",
                        (p, op) -> {
                            Op.AttentionBackward o = (Op.AttentionBackward) op;
                            Attention.backward(p, seg(o.dOut()), seg(o.q()), seg(o.k()), seg(o.v()), seg(o.out()),
                                    seg(o.lse()), seg(o.dq()), seg(o.dk()), seg(o.dv()), o.batch(), o.t(), o.heads(),
                                    o.kvHeads(), o.headDim());
                        })));
        if (blas != null) {
            vs.add(new Variant("attn-bwd-3", "OpenBLAS tiles: 64 query rows x keys per sgemm, softmax in Java (AttentionBlasV3)",
                    (p, op) -> {
                        Op.AttentionBackward o = (Op.AttentionBackward) op;
                        AttentionBlasV3.backward(p, blas, seg(o.dOut()), seg(o.q()), seg(o.k()), seg(o.v()), seg(o.out()),
                                seg(o.lse()), seg(o.dq()), seg(o.dk()), seg(o.dv()), o.batch(), o.t(), o.heads(),
                                o.kvHeads(), o.headDim());
                    }));
        }
        List<OpFactory> checks = List.of(attn(2, 37, 4, 2, 24), attn(1, 70, 3, 3, 16), attn(1, 130, 2, 1, 64));
        String[] names = {"S: B8 T256 H6 D48", "M: B8 T256 H8 D64", "GT: B4 T64 H12 D64", "GQA: B2 T1024 H8/2 D64"};
        OpFactory[] shapes = {attn(8, 256, 6, 6, 48), attn(8, 256, 8, 8, 64), attn(4, 64, 12, 12, 64), attn(2, 1024, 8, 2, 64)};
        run("attention backward", vs, checks, names, shapes, pool, reps, op -> {
            Op.AttentionBackward o = (Op.AttentionBackward) op;
            // causal: QKᵀ, dP = dO·Vᵀ, dV, dK, dQ: five T×T/2×D products of 2 FLOPs each
            return 5.0 * o.batch() * o.heads() * o.t() * (o.t() + 1) / 2.0 * o.headDim() * 2;
        });
    }

    /** Inputs of an attention backward: q, k, v, dOut random; out and lse from the reference forward. */
    static OpFactory attn(int b, int t, int h, int kv, int d) {
        return (be, rnd) -> {
            long n = (long) b * t;
            Buffer q = rand(be, n * h * d, rnd), k = rand(be, n * kv * d, rnd), v = rand(be, n * kv * d, rnd);
            Buffer out = be.allocate(DType.F32, n * h * d), lse = be.allocate(DType.F32, (long) b * h * t);
            try (CpuBackend cpu = new CpuBackend(1)) {
                cpu.run(new Op.Attention(q, k, v, out, lse, b, t, t, h, kv, d, 0, (long) t * kv * d));
            }
            return new Op.AttentionBackward(rand(be, n * h * d, rnd), q, k, v, out, lse, be.allocate(DType.F32, n * h * d),
                    be.allocate(DType.F32, n * kv * d), be.allocate(DType.F32, n * kv * d), b, t, h, kv, d);
        };
    }

    // ---- one-token matmul on quantized weights ----------------------------------------------------------------------

    static void weightDot(WorkerPool pool, int reps) {
        List<Variant> vs = new ArrayList<>();
        for (DType t : new DType[]{DType.Q4_0, DType.Q8_0}) {
            String id = t == DType.Q4_0 ? "wr-3" : "wr-5";
            String how = t == DType.Q4_0 ? "nibbles by table, one accumulator" : "one accumulator";
            vs.add(new Variant(id, t + ": backend, MatMul m=1 → WeightRows.dot (" + how + ")", (p, op) -> {
                Op.MatMul o = (Op.MatMul) op;
                if (o.b().type() != t) throw new Skip();
                MatMul.gemm(p, seg(o.a()), seg(o.b()), t, seg(o.c()), 1, o.n(), o.k(), false, true, false);
            }));
        }
        for (WeightDotV1.Kind kind : WeightDotV1.Kind.values()) {
            DType t = kind == WeightDotV1.Kind.Q8_TWO_ACC ? DType.Q8_0 : DType.Q4_0;
            String id = switch (kind) { case Q4_CONVERT -> "wr-1"; case Q4_TABLE_TWO_ACC -> "wr-2"; case Q8_TWO_ACC -> "wr-4"; };
            vs.add(new Variant(id, t + ": WeightDotV1." + kind, (p, op) -> {
                Op.MatMul o = (Op.MatMul) op;
                if (o.b().type() != t) throw new Skip();
                WeightDotV1.gemv(p, kind, seg(o.a()), seg(o.b()), seg(o.c()), o.n(), o.k());
            }));
        }
        vs.sort(java.util.Comparator.comparing(Variant::id));
        List<OpFactory> checks = List.of(wmm(DType.Q4_0, 67, 96), wmm(DType.Q8_0, 67, 96), wmm(DType.Q4_0, 130, 320),
                wmm(DType.Q8_0, 130, 320));
        String[] names = {"Q4_0 1b up 5632x2048", "Q4_0 1b down 2048x5632", "Q8_0 1b up 5632x2048", "Q8_0 1b down 2048x5632"};
        OpFactory[] shapes = {wmm(DType.Q4_0, 5632, 2048), wmm(DType.Q4_0, 2048, 5632), wmm(DType.Q8_0, 5632, 2048),
                wmm(DType.Q8_0, 2048, 5632)};
        run("weight-row dot (M = 1, transB, quantized weights)", vs, checks, names, shapes, pool, reps,
                op -> 2.0 * ((Op.MatMul) op).n() * ((Op.MatMul) op).k());
    }

    /** c(1,N) = x(1,K)·Wᵀ with W (N,K) random and stored as {@code type}. */
    static OpFactory wmm(DType type, int n, int k) {
        return (be, rnd) -> {
            float[] w = new float[n * k];
            for (int i = 0; i < w.length; i++) w[i] = (float) (rnd.nextGaussian() * 0.05);
            Buffer b = be.allocate(type, (long) n * k);
            be.copyIn(b, MemorySegment.ofArray(dev.crucible.tensor.Blocks.encode(type, w, 0, w.length)));
            return new Op.MatMul(rand(be, k, rnd), b, be.allocate(DType.F32, n), 1, n, k, false, true, false);
        };
    }

    /** Thrown by a variant given an op of a type it does not handle: that cell is left out. */
    static final class Skip extends RuntimeException {
        Skip() { super(null, null, false, false); }
    }

    // ---- the harness ----------------------------------------------------------------------------------------------

    interface Flops {
        double of(Op op);
    }

    static void run(String family, List<Variant> vs, List<OpFactory> checks, String[] names, OpFactory[] shapes,
                    WorkerPool pool, int reps, Flops flops) {
        System.out.printf(Locale.ROOT, "%n== %s ==%n", family);
        List<Variant> passed = new ArrayList<>();
        try (RefBackend ref = new RefBackend()) {
            for (Variant v : vs) {
                double worst = 0;
                for (OpFactory f : checks) {
                    try {
                        worst = Math.max(worst, check(v, f, ref, pool));
                    } catch (Skip notItsType) {
                        // the variant handles other inputs of this family
                    }
                }
                boolean ok = worst <= NMSE_TOL;
                System.out.printf(Locale.ROOT, "%-11s %-4s worst NMSE %.2e  %s%n", v.id(), ok ? "ok" : "FAIL", worst, v.what());
                if (ok) passed.add(v);
            }
            StringBuilder header = new StringBuilder(String.format(Locale.ROOT, "%-28s", "shape (ms, GFLOP/s)"));
            for (Variant v : passed) header.append(String.format(Locale.ROOT, " | %-20s", v.id()));
            System.out.println(header);
            for (int s = 0; s < shapes.length; s++) {
                Op op = shapes[s].make(ref, new Random(7));
                StringBuilder row = new StringBuilder(String.format(Locale.ROOT, "%-28s", names[s]));
                for (Variant v : passed) {
                    try {
                        double ms = time(v, op, pool, reps);
                        row.append(String.format(Locale.ROOT, " | %7.2f ms %7.1f GF", ms, flops.of(op) / ms / 1e6));
                    } catch (Skip notItsType) {
                        row.append(String.format(Locale.ROOT, " | %20s", "-"));
                    }
                }
                System.out.println(row);
                for (Buffer b : buffers(op)) b.close();
            }
        }
    }

    /** NMSE of the variant's outputs against the reference's, on fresh inputs (identical for both). */
    static double check(Variant v, OpFactory f, RefBackend ref, WorkerPool pool) {
        Op mine = f.make(ref, new Random(1)), theirs = f.make(ref, new Random(1));
        double worst = 0;
        try {
            v.impl().run(pool, mine);
            ref.run(theirs);
            List<Buffer> a = mine.outputs(), b = theirs.outputs();
            for (int i = 0; i < a.size(); i++) worst = Math.max(worst, nmse(floats(a.get(i)), floats(b.get(i))));
        } finally {
            for (Buffer x : buffers(mine)) x.close();
            for (Buffer x : buffers(theirs)) x.close();
        }
        return worst;
    }

    static double time(Variant v, Op op, WorkerPool pool, int reps) {
        for (int i = 0; i < 3; i++) v.impl().run(pool, op);
        double[] ms = new double[reps];
        for (int i = 0; i < reps; i++) {
            long t0 = System.nanoTime();
            v.impl().run(pool, op);
            ms[i] = (System.nanoTime() - t0) / 1e6;
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    static double nmse(float[] x, float[] ref) {
        double num = 0, den = 0;
        for (int i = 0; i < x.length; i++) {
            if (!Float.isFinite(x[i])) return Double.POSITIVE_INFINITY;
            double d = x[i] - ref[i];
            num += d * d;
            den += (double) ref[i] * ref[i];
        }
        return den == 0 ? num : num / den;
    }

    static Buffer rand(Backend be, long n, Random rnd) {
        Buffer b = be.allocate(DType.F32, n);
        MemorySegment s = seg(b);
        for (long i = 0; i < n; i++) s.setAtIndex(HostBuffer.F32, i, (float) rnd.nextGaussian());
        return b;
    }

    static float[] floats(Buffer b) {
        return seg(b).toArray(HostBuffer.F32);
    }

    /** Every buffer an op of the lab's families touches (to free them between shapes). */
    static List<Buffer> buffers(Op op) {
        return switch (op) {
            case Op.MatMul o -> List.of(o.a(), o.b(), o.c());
            case Op.AttentionBackward o -> List.of(o.dOut(), o.q(), o.k(), o.v(), o.out(), o.lse(), o.dq(), o.dk(), o.dv());
            default -> throw new IllegalArgumentException("no lab family for " + op.name());
        };
    }

    static MemorySegment seg(Buffer b) {
        return HostBuffer.seg(b);
    }
}
