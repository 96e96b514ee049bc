package dev.crucible.cpu.kernels;

import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.cpu.CpuBackend;
import dev.crucible.cpu.WorkerPool;
import dev.crucible.tensor.Blocks;
import dev.crucible.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** The integer Q4_0 decode kernel against plain definitions of what it computes. */
class Q4IntTest {
    private static float[] gaussian(Random r, int n, double scale) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) (r.nextGaussian() * scale);
        return x;
    }

    private static MemorySegment q4(float[] w) {
        return MemorySegment.ofArray(Blocks.encode(DType.Q4_0, w, 0, w.length));
    }

    @Test
    void quantizeIsQ8ZeroInElementBlockOrder() {
        Random r = new Random(1);
        int k = 96; // three blocks: one partial group
        float[] x = gaussian(r, k, 2);
        x[5] = 0f;
        x[40] = -100f; // the block's largest magnitude, negative: it must map to -127 exactly
        x[64] = 127f; // block 2: d = 1, so the ties below stay ties
        x[65] = 2.5f;
        x[66] = -3.5f;
        Q4Int.Row row = Q4Int.Row.forGroups(1);
        Q4Int.quantize(x, 0, k, row);
        for (int blk = 0; blk < 3; blk++) {
            float amax = 0;
            for (int i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[blk * 32 + i]));
            float d = amax / 127f;
            assertEquals(d, row.d()[blk]);
            int sum = 0;
            for (int i = 0; i < 32; i++) {
                float v = x[blk * 32 + i] * (1f / d);
                int q = (int) Math.rint(v);
                assertEquals(q, row.q()[i * 32 + blk], "block " + blk + " element " + i + " (" + v + ")");
                assertTrue(Math.abs(q) <= 127);
                sum += q;
            }
            assertEquals((short) (-8 * sum), row.corr()[blk]);
        }
        assertEquals(-127, row.q()[8 * 32 + 1]); // element 8 of block 1 is x[40]
        assertEquals(2, row.q()[32 + 2]); // ties to even
        assertEquals(-4, row.q()[2 * 32 + 2]);
        for (int blk = 3; blk < 32; blk++) {
            assertEquals(0f, row.d()[blk]);
            assertEquals(0, row.corr()[blk]);
            for (int i = 0; i < 32; i++) assertEquals(0, row.q()[i * 32 + blk]);
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {32, 96, 1024, 1056, 2048, 5632})
    void aRowIsTheSumOfItsExactBlockProductsScaled(int k) {
        assumeTrue(Q4Int.HARDWARE, "needs 512-bit vectors with 16-bit lanes (AVX-512BW)");
        Random r = new Random(k);
        int n = 5;
        float[] w = gaussian(r, n * k, 0.05), x = gaussian(r, k, 1);
        MemorySegment stored = q4(w);
        Q4Int.Packed p;
        try (WorkerPool pool = new WorkerPool(2)) {
            p = Q4Int.pack(pool, stored, n, k);
        }
        Q4Int.Row row = Q4Int.Row.forGroups(p.groups());
        Q4Int.quantize(x, 0, k, row);
        float[] two = new float[2];
        for (int j = 0; j < n; j++) {
            // The definition in doubles: per block, the exact integer Σ (q − 8)·xq times d_w·d_x.
            double want = 0;
            for (int blk = 0; blk < k / 32; blk++) {
                long at = ((long) j * (k / 32) + blk) * 18;
                float dw = Float.float16ToFloat(stored.get(ValueLayout.JAVA_SHORT_UNALIGNED, at));
                long s = 0;
                for (int i = 0; i < 32; i++) {
                    int b = stored.get(ValueLayout.JAVA_BYTE, at + 2 + (i % 16)) & 0xff;
                    int q = (i < 16 ? b & 0x0f : b >>> 4) - 8;
                    s += (long) q * row.q()[((blk / 32) * 32 + i) * 32 + blk % 32];
                }
                want += (double) dw * row.d()[blk] * s;
            }
            float got = Q4Int.dot(row, p, j);
            assertEquals(want, got, 1e-5 * Math.max(1, Math.abs(want)), "row " + j + " k " + k);
            Q4Int.dot2(row, p, j, (j + 3) % n, two, new float[32]);
            assertEquals(Float.floatToRawIntBits(got), Float.floatToRawIntBits(two[0]), "dot2 keeps dot's bits");
            float[] four = new float[4];
            Q4Int.dot4(row, row, row, row, p, j, four, new float[64], new short[128]);
            for (float f : four) assertEquals(Float.floatToRawIntBits(got), Float.floatToRawIntBits(f), "dot4 keeps dot's bits");
        }
    }

    @Test
    void theSettingIsInt8OrF32() {
        String old = System.getProperty(Q4Int.PROPERTY);
        try {
            System.setProperty(Q4Int.PROPERTY, "f32");
            assertEquals(false, Q4Int.enabled());
            System.setProperty(Q4Int.PROPERTY, "INT8");
            assertEquals(Q4Int.HARDWARE, Q4Int.enabled());
            System.setProperty(Q4Int.PROPERTY, "fast");
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, Q4Int::enabled);
            assertTrue(e.getMessage().contains("CRUCIBLE_Q4") && e.getMessage().contains("'fast'"), e.getMessage());
        } finally {
            if (old == null) System.clearProperty(Q4Int.PROPERTY);
            else System.setProperty(Q4Int.PROPERTY, old);
        }
    }

    @Test
    void aRowAloneAndInAStepOfManyGiveTheSameBits() {
        assumeTrue(Q4Int.enabled(), "needs 512-bit vectors with 16-bit lanes (AVX-512BW), and CRUCIBLE_Q4 not f32");
        Random r = new Random(7);
        int n = 300, k = 2048, m = 9;
        float[] w = gaussian(r, n * k, 0.05), x = gaussian(r, m * k, 1);
        try (CpuBackend one = new CpuBackend(1); CpuBackend two = new CpuBackend(2)) {
            float[] all = new float[m * n];
            Buffer b = two.allocate(DType.Q4_0, (long) n * k), a = two.allocate(DType.F32, (long) m * k);
            Buffer c = two.allocate(DType.F32, (long) m * n);
            two.copyIn(b, q4(w));
            two.copyIn(a, MemorySegment.ofArray(x));
            two.run(new Op.MatMul(a, b, c, m, n, k, false, true, false));
            two.copyOut(c, MemorySegment.ofArray(all));
            Buffer b1 = one.allocate(DType.Q4_0, (long) n * k), a1 = one.allocate(DType.F32, k), c1 = one.allocate(DType.F32, n);
            one.copyIn(b1, q4(w));
            for (int i = 0; i < m; i++) {
                float[] xi = java.util.Arrays.copyOfRange(x, i * k, (i + 1) * k), alone = new float[n];
                one.copyIn(a1, MemorySegment.ofArray(xi));
                one.run(new Op.MatMul(a1, b1, c1, 1, n, k, false, true, false));
                one.copyOut(c1, MemorySegment.ofArray(alone));
                assertArrayEquals(alone, java.util.Arrays.copyOfRange(all, i * n, (i + 1) * n), "row " + i);
            }
            assertNotEquals(0f, all[0]);
        }
    }
}
