package dev.crucible.cpu;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.backend.ref.RefBackend;
import dev.crucible.tensor.DType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.function.Function;

import static dev.crucible.cpu.OpHarness.randn;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code Op.PagedAttention} on the CPU: against the reference, bit-identical for any thread count, and bit-identical
 * to {@code Op.Attention} over a contiguous cache holding the same keys (so the batched server and the single-sequence
 * session agree exactly on attention).
 */
class PagedAttentionTest {
    static RefBackend ref;
    static CpuBackend cpu1, cpu2, cpu3;

    @BeforeAll
    static void setUp() {
        ref = new RefBackend();
        cpu1 = new CpuBackend(1);
        cpu2 = new CpuBackend(2);
        cpu3 = new CpuBackend(3);
    }

    @AfterAll
    static void tearDown() {
        cpu1.close();
        cpu2.close();
        cpu3.close();
    }

    /**
     * Sequences of the given lengths, their K/V rows (len, KV·D) contiguous per sequence, and the same rows in a pool of
     * shuffled pages (two spare pages of garbage).
     */
    record Paged(float[][] k, float[][] v, float[] kPool, float[] vPool, int[][] pages, int pageCount, int maxPages) {
        static Paged of(Random r, int[] lengths, int kvRow, int pageSize) {
            int n = lengths.length, needed = 0, longest = 0;
            for (int len : lengths) {
                needed += (len + pageSize - 1) / pageSize;
                longest = Math.max(longest, len);
            }
            int count = needed + 2;
            List<Integer> ids = new ArrayList<>();
            for (int i = 0; i < count; i++) ids.add(i);
            Collections.shuffle(ids, r);
            float[] kp = randn(r, count * pageSize * kvRow, 100), vp = randn(r, count * pageSize * kvRow, 100);
            float[][] k = new float[n][], v = new float[n][];
            int[][] pages = new int[n][];
            int next = 0;
            for (int s = 0; s < n; s++) {
                k[s] = randn(r, lengths[s] * kvRow, 1);
                v[s] = randn(r, lengths[s] * kvRow, 1);
                pages[s] = new int[(lengths[s] + pageSize - 1) / pageSize];
                for (int i = 0; i < pages[s].length; i++) pages[s][i] = ids.get(next++);
                for (int t = 0; t < lengths[s]; t++) {
                    int dst = (pages[s][t / pageSize] * pageSize + t % pageSize) * kvRow;
                    System.arraycopy(k[s], t * kvRow, kp, dst, kvRow);
                    System.arraycopy(v[s], t * kvRow, vp, dst, kvRow);
                }
            }
            return new Paged(k, v, kp, vp, pages, count, (longest + pageSize - 1) / pageSize);
        }

        /** (rows, maxPages): row i holds the pages of sequence seqOf[i]; unused entries −1. */
        int[] table(int[] seqOf) {
            int[] t = new int[seqOf.length * maxPages];
            Arrays.fill(t, -1);
            for (int i = 0; i < seqOf.length; i++) System.arraycopy(pages[seqOf[i]], 0, t, i * maxPages, pages[seqOf[i]].length);
            return t;
        }
    }

    static float[] out(Backend b, Function<OpHarness.Alloc, Op> f) {
        return (float[]) OpHarness.run(b, f).getFirst();
    }

    static void sameBits(String what, float[] want, float[] got) {
        assertEquals(want.length, got.length, what);
        for (int i = 0; i < want.length; i++) {
            if (Float.floatToRawIntBits(want[i]) != Float.floatToRawIntBits(got[i])) {
                throw new AssertionError(what + ": differs at " + i + ": " + want[i] + " vs " + got[i]);
            }
        }
    }

    @Test
    void decodeStepMatchesReferenceAndContiguousAttention() {
        Random r = new Random(11);
        // heads, kvHeads, d, pageSize, lengths...
        int[][] cases = {{8, 2, 64, 16, 1, 16, 17, 64, 150, 33}, {6, 3, 37, 7, 1, 7, 8, 23, 40}, {4, 4, 16, 16, 300},
                {4, 1, 24, 5, 9, 3, 70}};
        for (int[] c : cases) {
            int h = c[0], kv = c[1], d = c[2], ps = c[3], kvRow = kv * d;
            int[] lengths = Arrays.copyOfRange(c, 4, c.length);
            int n = lengths.length;
            Paged p = Paged.of(r, lengths, kvRow, ps);
            int[] seqOf = new int[n];
            for (int i = 0; i < n; i++) seqOf[i] = i;
            int[] table = p.table(seqOf);
            float[] q = randn(r, n * h * d, 1);
            String what = "paged decode " + Arrays.toString(c);
            Function<OpHarness.Alloc, Op> f = a -> new Op.PagedAttention(a.f32(q), a.f32(p.kPool()), a.f32(p.vPool()),
                    a.i32(table), a.i32(lengths), a.f32(new float[q.length]), n, h, kv, d, ps, p.maxPages());
            float[] want = out(ref, f), got = out(cpu2, f);
            double e = OpHarness.nmse(got, want);
            assertTrue(e <= 1e-8, what + ": NMSE " + e);
            sameBits(what + " 1 vs 3 threads", out(cpu1, f), out(cpu3, f));
            sameBits(what + " 1 vs 2 threads", out(cpu1, f), got);
            // Each row as a single-query Attention over its sequence's contiguous keys: the same bits.
            for (int i = 0; i < n; i++) {
                int len = lengths[i];
                float[] qi = Arrays.copyOfRange(q, i * h * d, (i + 1) * h * d), ki = p.k()[i], vi = p.v()[i];
                float[] single = out(cpu2, a -> new Op.Attention(a.f32(qi), a.f32(ki), a.f32(vi), a.f32(new float[qi.length]),
                        null, 1, 1, len, h, kv, d, len - 1, (long) len * kvRow));
                sameBits(what + " row " + i, single, Arrays.copyOfRange(got, i * h * d, (i + 1) * h * d));
            }
        }
    }

    @Test
    void prefillChunkMatchesReferenceAndContiguousAttention() {
        Random r = new Random(12);
        // heads, kvHeads, d, pageSize, q0, rows (more than one query block in the last)
        int[][] cases = {{4, 2, 32, 16, 20, 13}, {2, 1, 13, 5, 3, 37}, {6, 2, 16, 16, 0, 70}};
        for (int[] c : cases) {
            int h = c[0], kv = c[1], d = c[2], ps = c[3], q0 = c[4], m = c[5], kvRow = kv * d, tk = q0 + m;
            Paged p = Paged.of(r, new int[] {tk}, kvRow, ps);
            int[] lengths = new int[m];
            for (int i = 0; i < m; i++) lengths[i] = q0 + 1 + i;
            int[] table = p.table(new int[m]);
            float[] q = randn(r, m * h * d, 1);
            String what = "paged prefill " + Arrays.toString(c);
            Function<OpHarness.Alloc, Op> f = a -> new Op.PagedAttention(a.f32(q), a.f32(p.kPool()), a.f32(p.vPool()),
                    a.i32(table), a.i32(lengths), a.f32(new float[q.length]), m, h, kv, d, ps, p.maxPages());
            float[] want = out(ref, f), got = out(cpu2, f);
            double e = OpHarness.nmse(got, want);
            assertTrue(e <= 1e-8, what + ": NMSE " + e);
            sameBits(what + " 1 vs 3 threads", out(cpu1, f), out(cpu3, f));
            float[] k = p.k()[0], v = p.v()[0];
            float[] chunk = out(cpu2, a -> new Op.Attention(a.f32(q), a.f32(k), a.f32(v), a.f32(new float[q.length]), null,
                    1, m, tk, h, kv, d, q0, (long) tk * kvRow));
            sameBits(what + " vs Attention", chunk, got);
        }
    }

    /** x rounded to F16 and widened back: what an F16 pool holds. */
    static float[] halfRounded(float[] x) {
        float[] y = new float[x.length];
        for (int i = 0; i < x.length; i++) y[i] = Float.float16ToFloat(Float.floatToFloat16(x[i]));
        return y;
    }

    /**
     * F16 pools (decode rows and prefill blocks): the CPU widens exactly and runs the F32 arithmetic, so it gives the
     * bits of F32 pools holding the rounded values, for any thread count, and agrees with the reference reading the
     * same F16 pools as closely as for F32 (NMSE ≤ 1e-8).
     */
    @Test
    void f16PoolsGiveTheBitsOfF32PoolsHoldingTheRoundedValues() {
        Random r = new Random(14);
        // heads, kvHeads, d, pageSize, q0 (−1: a decode step over sequences of the lengths that follow), rows | lengths
        int[][] cases = {{8, 2, 64, 16, -1, 1, 16, 17, 64, 150, 33}, {6, 3, 37, 7, -1, 1, 7, 8, 23, 40},
                {4, 1, 24, 5, -1, 9, 3, 70}, {4, 2, 32, 16, 20, 13}, {2, 1, 13, 5, 3, 37}, {6, 2, 16, 16, 0, 70}};
        for (int[] c : cases) {
            int h = c[0], kv = c[1], d = c[2], ps = c[3], kvRow = kv * d;
            boolean decode = c[4] < 0;
            int[] lengths, seqOf;
            Paged p;
            if (decode) {
                lengths = Arrays.copyOfRange(c, 5, c.length);
                seqOf = new int[lengths.length];
                for (int i = 0; i < seqOf.length; i++) seqOf[i] = i;
                p = Paged.of(r, lengths, kvRow, ps);
            } else {
                int q0 = c[4], m = c[5];
                lengths = new int[m];
                for (int i = 0; i < m; i++) lengths[i] = q0 + 1 + i;
                seqOf = new int[m];
                p = Paged.of(r, new int[] {q0 + m}, kvRow, ps);
            }
            int n = lengths.length;
            int[] table = p.table(seqOf);
            float[] q = randn(r, n * h * d, 1), kr = halfRounded(p.kPool()), vr = halfRounded(p.vPool());
            String what = "f16 pools " + Arrays.toString(c);
            Function<OpHarness.Alloc, Op> half = a -> new Op.PagedAttention(a.f32(q), a.f16(p.kPool()), a.f16(p.vPool()),
                    a.i32(table), a.i32(lengths), a.f32(new float[q.length]), n, h, kv, d, ps, p.maxPages());
            Function<OpHarness.Alloc, Op> rounded = a -> new Op.PagedAttention(a.f32(q), a.f32(kr), a.f32(vr),
                    a.i32(table), a.i32(lengths), a.f32(new float[q.length]), n, h, kv, d, ps, p.maxPages());
            float[] got = out(cpu2, half);
            sameBits(what + " vs F32 pools of the rounded values", out(cpu2, rounded), got);
            sameBits(what + " 1 vs 3 threads", out(cpu1, half), out(cpu3, half));
            double e = OpHarness.nmse(got, out(ref, half));
            assertTrue(e <= 1e-8, what + ": NMSE vs reference " + e);
            sameBits(what + " reference: F16 pools vs F32 pools of the rounded values", out(ref, rounded), out(ref, half));
        }
    }

    /** Op.Copy F32 → F16 rounds as Float.floatToFloat16 (nearest, ties to even; overflow to ∞; NaN stays NaN). */
    @Test
    void copyRoundsF32ToF16() {
        Random r = new Random(15);
        float[] x = randn(r, 1021, 3);
        float[] special = {0f, -0f, 65504f, 65520f, 70000f, -1e9f, 6e-8f, 2.9e-8f, 1e-5f, Float.NaN,
                Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, 1f + 0x1p-11f, 1f + 0x1p-11f + 0x1p-23f, 1f + 3 * 0x1p-11f};
        System.arraycopy(special, 0, x, 0, special.length);
        short[] want = new short[x.length];
        for (int i = 0; i < x.length; i++) want[i] = Float.floatToFloat16(x[i]);
        for (Backend b : new Backend[] {ref, cpu1, cpu3}) {
            short[] got = (short[]) OpHarness.run(b, a -> {
                Buffer dst = a.backend.allocate(DType.F16, x.length);
                a.owned.add(dst);
                return new Op.Copy(a.f32(x), dst);
            }).getFirst();
            assertTrue(Arrays.equals(want, got), b.name() + ": F32 → F16 copy differs from Float.floatToFloat16");
        }
        // Other conversions are refused when the op is built.
        for (DType[] pair : new DType[][] {{DType.F16, DType.F32}, {DType.F32, DType.BF16}, {DType.I32, DType.F32}}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> OpHarness.run(ref, a -> {
                Buffer src = a.backend.allocate(pair[0], 8), dst = a.backend.allocate(pair[1], 8);
                a.owned.add(src);
                a.owned.add(dst);
                return new Op.Copy(src, dst);
            }));
            assertTrue(e.getMessage().contains(pair[0] + " to " + pair[1]), e.getMessage());
        }
    }

    @Test
    void badShapesAndIdsAreRefused() {
        Random r = new Random(13);
        int h = 4, kv = 2, d = 8, ps = 4;
        Paged p = Paged.of(r, new int[] {6, 3}, kv * d, ps);
        float[] q = randn(r, 2 * h * d, 1);
        int[] table = p.table(new int[] {0, 1});
        for (Backend b : new Backend[] {ref, cpu2}) {
            int[] badPage = table.clone();
            badPage[p.maxPages()] = p.pageCount();                         // row 1's first page: outside the pool
            assertThrows(IndexOutOfBoundsException.class, () -> OpHarness.run(b, a -> new Op.PagedAttention(a.f32(q),
                    a.f32(p.kPool()), a.f32(p.vPool()), a.i32(badPage), a.i32(new int[] {6, 3}), a.f32(new float[q.length]),
                    2, h, kv, d, ps, p.maxPages())));
            for (int[] lengths : new int[][] {{0, 3}, {6, p.maxPages() * ps + 1}}) {
                assertThrows(IndexOutOfBoundsException.class, () -> OpHarness.run(b, a -> new Op.PagedAttention(a.f32(q),
                        a.f32(p.kPool()), a.f32(p.vPool()), a.i32(table), a.i32(lengths), a.f32(new float[q.length]),
                        2, h, kv, d, ps, p.maxPages())));
            }
        }
        // Pool types: F32 or F16, both the same.
        assertThrows(IllegalArgumentException.class, () -> OpHarness.run(ref, a -> new Op.PagedAttention(a.f32(q),
                a.f16(p.kPool()), a.f32(p.vPool()), a.i32(table), a.i32(new int[] {6, 3}), a.f32(new float[q.length]),
                2, h, kv, d, ps, p.maxPages())));
        // Sizes are checked when the op is built: GQA ratio, a pool that is not whole pages, a short page table.
        assertThrows(IllegalArgumentException.class, () -> OpHarness.run(ref, a -> new Op.PagedAttention(a.f32(q),
                a.f32(p.kPool()), a.f32(p.vPool()), a.i32(table), a.i32(new int[] {6, 3}), a.f32(new float[q.length]),
                2, h, 3, d, ps, p.maxPages())));
        assertThrows(IllegalArgumentException.class, () -> OpHarness.run(ref, a -> new Op.PagedAttention(a.f32(q),
                a.f32(Arrays.copyOf(p.kPool(), p.kPool().length - 1)), a.f32(p.vPool()), a.i32(table), a.i32(new int[] {6, 3}),
                a.f32(new float[q.length]), 2, h, kv, d, ps, p.maxPages())));
        assertThrows(IllegalArgumentException.class, () -> OpHarness.run(ref, a -> new Op.PagedAttention(a.f32(q),
                a.f32(p.kPool()), a.f32(p.vPool()), a.i32(Arrays.copyOf(table, table.length - 1)), a.i32(new int[] {6, 3}),
                a.f32(new float[q.length]), 2, h, kv, d, ps, p.maxPages())));
    }
}
