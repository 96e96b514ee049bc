package dev.crucible.cpu;

import dev.crucible.backend.Buffer;
import dev.crucible.backend.HostBuffer;
import dev.crucible.backend.Op;
import dev.crucible.tensor.DType;

import java.util.Random;

/**
 * A timing harness, not a test: GFLOP/s of MatMul at training shapes and attention forward/backward times.
 * Run: {@code java --add-modules jdk.incubator.vector -cp <cpu classes, test classes, backend, tensor>
 * dev.crucible.cpu.KernelBench [threads] [matmul|attention]}.
 */
public final class KernelBench {
    public static void main(String[] args) {
        int threads = args.length > 0 ? Integer.parseInt(args[0]) : Runtime.getRuntime().availableProcessors();
        String only = args.length > 1 ? args[1] : "";
        try (CpuBackend cpu = new CpuBackend(threads)) {
            System.out.println("threads " + threads);
            if (!only.equals("attention")) matmuls(cpu);
            if (!only.equals("matmul")) attention(cpu);
        }
    }

    static Buffer rand(CpuBackend cpu, long n, Random r) {
        Buffer b = cpu.allocate(DType.F32, n);
        HostBuffer h = HostBuffer.of(b);
        for (long i = 0; i < n; i++) h.setFloat(i, (float) r.nextGaussian());
        return b;
    }

    static void matmuls(CpuBackend cpu) {
        Random r = new Random(1);
        // m, n, k: linear forward (NT), dx (NN), dW (TN)
        int[][] shapes = {{4096, 768, 768}, {4096, 1024, 1024}, {4096, 256, 1024}, {4096, 1024, 256}, {512, 512, 512},
                {1024, 1024, 1024}, {4096, 128, 128}, {1, 2048, 2048}};
        for (int[] s : shapes) {
            int m = s[0], n = s[1], k = s[2];
            for (String mode : new String[] {"NT", "NN", "TN"}) {
                boolean ta = mode.charAt(0) == 'T', tb = mode.charAt(1) == 'T';
                // For TN (dW += dyᵀ·x) the reduction runs over tokens: stored a (K,M) with K = tokens.
                int mm = ta ? n : m, nn = ta ? k : n, kk = ta ? m : k;
                try (Buffer a = rand(cpu, (long) mm * kk, r); Buffer b = rand(cpu, (long) kk * nn, r);
                     Buffer c = cpu.allocate(DType.F32, (long) mm * nn)) {
                    Op op = new Op.MatMul(a, b, c, mm, nn, kk, ta, tb, ta);
                    double flops = 2.0 * mm * nn * kk;
                    double best = time(cpu, op, flops);
                    System.out.printf("matmul %s m=%d n=%d k=%d: %.1f GFLOP/s%n", mode, mm, nn, kk, flops / best / 1e9);
                }
            }
        }
    }

    /** Best seconds per run after warm-up, running for about half a second. */
    static double time(CpuBackend cpu, Op op, double flops) {
        int reps = (int) Math.max(2, Math.min(200, 2e10 / flops));
        for (int i = 0; i < reps; i++) cpu.run(op);
        double best = Double.MAX_VALUE;
        for (int round = 0; round < 5; round++) {
            long t0 = System.nanoTime();
            for (int i = 0; i < reps; i++) cpu.run(op);
            best = Math.min(best, (System.nanoTime() - t0) / 1e9 / reps);
        }
        return best;
    }

    static void attention(CpuBackend cpu) {
        Random r = new Random(2);
        int b = 8, t = 256, h = 6, kv = 6, d = 48;
        long qn = (long) b * t * h * d, kvn = (long) b * t * kv * d;
        try (Buffer q = rand(cpu, qn, r); Buffer k = rand(cpu, kvn, r); Buffer v = rand(cpu, kvn, r);
             Buffer out = cpu.allocate(DType.F32, qn); Buffer lse = cpu.allocate(DType.F32, (long) b * h * t);
             Buffer dOut = rand(cpu, qn, r); Buffer dq = cpu.allocate(DType.F32, qn);
             Buffer dk = cpu.allocate(DType.F32, kvn); Buffer dv = cpu.allocate(DType.F32, kvn)) {
            Op fwd = new Op.Attention(q, k, v, out, lse, b, t, t, h, kv, d, 0, (long) t * kv * d);
            Op bwd = new Op.AttentionBackward(dOut, q, k, v, out, lse, dq, dk, dv, b, t, h, kv, d);
            double flops = 4.0 * b * h * t * t / 2 * d; // causal: QKᵀ and PV over half the score matrix
            double f = time(cpu, fwd, flops);
            System.out.printf("attention fwd B=%d T=%d H=%d D=%d: %.2f ms (%.1f GFLOP/s)%n", b, t, h, d, f * 1e3, flops / f / 1e9);
            double g = time(cpu, bwd, 2.5 * flops);
            System.out.printf("attention bwd B=%d T=%d H=%d D=%d: %.2f ms (%.1f GFLOP/s at 2.5x fwd flops)%n", b, t, h, d, g * 1e3, 2.5 * flops / g / 1e9);
        }
    }
}
