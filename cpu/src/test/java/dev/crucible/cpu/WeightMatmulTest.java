package dev.crucible.cpu;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.tensor.Blocks;
import dev.crucible.tensor.DType;
import org.junit.jupiter.params.ParameterizedTest;

import java.lang.foreign.MemorySegment;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * A decode step's matmul for one sequence must give the same bits whether the step holds that sequence alone or
 * with others (M = 1 takes the fused weight-row kernel, M > 1 decodes each weight row once and reuses it), or a
 * sampled text would depend on server load. M runs up to {@link CpuBackend#invariantMatmulRows()}, the most rows the
 * backend promises this for (callers split larger decode steps).
 */
class WeightMatmulTest {
    /** K with an even and an odd number of 16-element vectors, and (for the unblocked types) a scalar tail. */
    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> shapes() {
        java.util.List<org.junit.jupiter.params.provider.Arguments> all = new java.util.ArrayList<>();
        for (DType t : new DType[]{DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0}) {
            boolean blocked = t == DType.Q8_0 || t == DType.Q4_0;
            for (int k : blocked ? new int[]{320, 352} : new int[]{320, 336, 333}) {
                for (int m : new int[]{5, 7, 16, 31}) all.add(org.junit.jupiter.params.provider.Arguments.of(t, k, m));
            }
        }
        return all.stream();
    }

    @org.junit.jupiter.api.Test
    void thePromisedRowCountIsTheLargestShapeTestedHere() {
        try (Backend be = new CpuBackend(2)) {
            assertEquals(31, be.invariantMatmulRows());
        }
    }

    @ParameterizedTest(name = "{0} k={1} m={2}")
    @org.junit.jupiter.params.provider.MethodSource("shapes")
    void aRowGivesTheSameBitsAloneAndInABatch(DType type, int k, int m) {
        int n = 71;
        Random r = new Random(5);
        float[] w = new float[n * k], x = new float[m * k];
        for (int i = 0; i < w.length; i++) w[i] = (float) r.nextGaussian();
        for (int i = 0; i < x.length; i++) x[i] = (float) r.nextGaussian();
        try (Backend be = new CpuBackend(2)) {
            Buffer b = be.allocate(type, (long) n * k);
            be.copyIn(b, type == DType.F32 ? MemorySegment.ofArray(w) : MemorySegment.ofArray(Blocks.encode(type, w, 0, w.length)));
            Buffer a = be.allocate(DType.F32, (long) m * k), c = be.allocate(DType.F32, (long) m * n);
            be.copyIn(a, MemorySegment.ofArray(x));
            be.run(new Op.MatMul(a, b, c, m, n, k, false, true, false));
            float[] all = new float[m * n];
            be.copyOut(c, MemorySegment.ofArray(all));
            for (int row = 0; row < m; row++) {
                Buffer one = be.allocate(DType.F32, n);
                be.run(new Op.MatMul(a.slice((long) row * k, k), b, one, 1, n, k, false, true, false));
                float[] alone = new float[n];
                be.copyOut(one, MemorySegment.ofArray(alone));
                for (int j = 0; j < n; j++) {
                    assertEquals(Float.floatToRawIntBits(alone[j]), Float.floatToRawIntBits(all[row * n + j]),
                            type + " row " + row + " col " + j + ": " + alone[j] + " vs " + all[row * n + j]);
                }
                one.close();
            }
        }
    }

    /**
     * A prefill-sized matmul on stored weights (M between MC and 4·MC decodes each N tile's weights into its own
     * panel) gives the bits of the F32 GEMM on the decoded matrix (which packs all of B first): the same
     * micro-kernel sums in the same order whichever tiling ran them. (The Java kernels: with the native ones, Q4_0
     * and Q8_0 prefill runs on 8-bit activations; CpuNativeTest.)
     */
    @ParameterizedTest(name = "{0} m={1}")
    @org.junit.jupiter.params.provider.CsvSource({"Q8_0, 300", "Q4_0, 193", "F16, 500", "BF16, 260"})
    void prefillOnStoredWeightsMatchesTheF32Gemm(DType type, int m) {
        int n = 200, k = 352;
        Random r = new Random(11);
        float[] w = new float[n * k], x = new float[m * k];
        for (int i = 0; i < w.length; i++) w[i] = (float) r.nextGaussian();
        for (int i = 0; i < x.length; i++) x[i] = (float) r.nextGaussian();
        byte[] stored = Blocks.encode(type, w, 0, w.length);
        float[] decoded = new float[n * k];
        Blocks.decode(type, MemorySegment.ofArray(stored), 0, n * k, decoded, 0);
        try (Backend be = new CpuBackend(2, null, null)) {
            float[][] out = new float[2][m * n];
            for (int run = 0; run < 2; run++) {
                Buffer b = run == 0 ? be.allocate(type, (long) n * k) : be.allocate(DType.F32, (long) n * k);
                be.copyIn(b, run == 0 ? MemorySegment.ofArray(stored) : MemorySegment.ofArray(decoded));
                Buffer a = be.allocate(DType.F32, (long) m * k), c = be.allocate(DType.F32, (long) m * n);
                be.copyIn(a, MemorySegment.ofArray(x));
                be.run(new Op.MatMul(a, b, c, m, n, k, false, true, false));
                be.copyOut(c, MemorySegment.ofArray(out[run]));
            }
            for (int i = 0; i < m * n; i++) {
                assertEquals(Float.floatToRawIntBits(out[1][i]), Float.floatToRawIntBits(out[0][i]),
                        type + " element " + i + ": " + out[0][i] + " vs " + out[1][i]);
            }
        }
    }

    /**
     * Q4_0 and Q8_0 matmuls on 8-bit activations (Q4Int, or the native kernels), decode-sized and prefill-sized:
     * within NMSE 1e-4 of the exact product of the decoded weights, with a trace of the rounding (so the integer path
     * did run); and new weights copied into the same buffer are followed (the rearranged copy is dropped).
     */
    @ParameterizedTest(name = "{0} m={1}")
    @org.junit.jupiter.params.provider.CsvSource({"Q4_0, 1", "Q4_0, 3", "Q4_0, 31", "Q4_0, 40", "Q8_0, 1", "Q8_0, 4", "Q8_0, 31", "Q8_0, 40"})
    void quantizedMatmulsOn8BitActivationsAreCloseAndFollowNewWeights(DType type, int m) {
        Random r = new Random(m);
        int n = 70, k = 1056;
        try (CpuBackend be = new CpuBackend(2)) {
            org.junit.jupiter.api.Assumptions.assumeTrue(be.decodeActivationsInt8(type),
                    type + " matmuls run on exact f32 activations here (CRUCIBLE_Q4/Q8=f32, or no native kernels / AVX-512BW)");
            org.junit.jupiter.api.Assumptions.assumeTrue(m < 32 || be.nativeKernels() != null, "prefill on 8-bit activations needs the native kernels");
            Buffer b = be.allocate(type, (long) n * k), a = be.allocate(DType.F32, (long) m * k);
            Buffer c = be.allocate(DType.F32, (long) m * n);
            float[] x = new float[m * k];
            for (int i = 0; i < x.length; i++) x[i] = (float) r.nextGaussian();
            be.copyIn(a, MemorySegment.ofArray(x));
            for (int round = 0; round < 2; round++) { // round 1 writes other weights into the same buffer
                float[] w = new float[n * k];
                for (int i = 0; i < w.length; i++) w[i] = (float) (r.nextGaussian() * 0.05);
                byte[] enc = Blocks.encode(type, w, 0, w.length);
                be.copyIn(b, MemorySegment.ofArray(enc));
                be.run(new Op.MatMul(a, b, c, m, n, k, false, true, false));
                float[] got = new float[m * n];
                be.copyOut(c, MemorySegment.ofArray(got));
                float[] dec = new float[n * k];
                Blocks.decode(type, MemorySegment.ofArray(enc), 0, n * k, dec, 0);
                double err = 0, ref = 0;
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int p = 0; p < k; p++) s += (double) x[i * k + p] * dec[j * k + p];
                        err += (s - got[i * n + j]) * (s - got[i * n + j]);
                        ref += s * s;
                    }
                }
                double nmse = err / ref;
                org.junit.jupiter.api.Assertions.assertTrue(nmse < 1e-4, type + " round " + round + " nmse " + nmse);
                org.junit.jupiter.api.Assertions.assertTrue(nmse > 1e-9, "8-bit activations leave a trace (nmse " + nmse + "): was the integer path used?");
            }
        }
    }
}
