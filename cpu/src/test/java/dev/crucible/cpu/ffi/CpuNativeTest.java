package dev.crucible.cpu.ffi;

import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.cpu.CpuBackend;
import dev.crucible.cpu.WorkerPool;
import dev.crucible.cpu.kernels.Parallel;
import dev.crucible.cpu.kernels.Q4Int;
import dev.crucible.tensor.Blocks;
import dev.crucible.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The native decode kernels against a plain Java model of their contract (crucible_cpu.c's header), bit for bit,
 * and for Q4_0 against the Java integer kernel {@link Q4Int}, bit for bit. Skips where the kernels are not there,
 * unless {@code CRUCIBLE_REQUIRE_NATIVE=1} (CI sets it where a compiler and AVX-512 VNNI are present), so that a
 * build that silently lost them fails instead of skipping.
 */
class CpuNativeTest {
    private static CpuNative kernels() {
        CpuNative k = CpuNative.fromEnvironment();
        if (k == null && "1".equals(System.getenv("CRUCIBLE_REQUIRE_NATIVE"))) {
            fail("CRUCIBLE_REQUIRE_NATIVE=1 but " + CpuNative.status());
        }
        assumeTrue(k != null, CpuNative.status());
        return k;
    }

    /** The kernels that need AVX-512 VNNI (float rows, attention; and the AVX-512 forms to compare the AVX2 ones with). */
    private static CpuNative fullKernels() {
        CpuNative k = kernels();
        assumeTrue(k.full(), "this CPU runs only the AVX2 forms of the native kernels (no AVX-512 VNNI)");
        return k;
    }

    private static float[] gaussian(Random r, int n, double scale) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) (r.nextGaussian() * scale);
        return x;
    }

    /** The quantizer's definition: per block d = max|x|/127, q = x·(1/d) rounded half to even (f32 steps). */
    private static void quantizeModel(float[] x, int xo, int k, int nbPad, byte[] q, float[] d, int[] s) {
        for (int b = 0; b < nbPad; b++) {
            if (b >= k / 32) continue; // zero
            float amax = 0;
            for (int i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[xo + 32 * b + i]));
            float db = amax / 127f, id = db == 0f ? 0f : 1f / db;
            int sum = 0;
            for (int i = 0; i < 32; i++) {
                int v = (int) Math.rint(x[xo + 32 * b + i] * id);
                q[32 * b + i] = (byte) v;
                sum += v;
            }
            d[b] = db;
            s[b] = sum;
        }
    }

    /** A row's result by the contract: exact block sums, lane b % 16 takes fma(isum, d_w·d_x, lane), lanes summed in order. */
    private static float dotModel(boolean q4, MemorySegment w, int row, int k, byte[] q, float[] d) {
        int nb = k / 32, nbPad = CpuNative.paddedBlocks(k), bs = q4 ? 18 : 34;
        float[] lanes = new float[16];
        for (int b = 0; b < nbPad; b++) {
            float dd = 0f;
            int isum = 0;
            if (b < nb) {
                long at = ((long) row * nb + b) * bs;
                float dw = Float.float16ToFloat(w.get(ValueLayout.JAVA_SHORT_UNALIGNED, at));
                for (int i = 0; i < 32; i++) {
                    int wq;
                    if (q4) {
                        int byt = w.get(ValueLayout.JAVA_BYTE, at + 2 + (i % 16)) & 0xff;
                        wq = (i < 16 ? byt & 0x0f : byt >>> 4) - 8;
                    } else {
                        wq = w.get(ValueLayout.JAVA_BYTE, at + 2 + i);
                    }
                    isum += wq * q[32 * b + i];
                }
                dd = dw * d[b];
            }
            lanes[b % 16] = Math.fma((float) isum, dd, lanes[b % 16]);
        }
        float s = lanes[0];
        for (int i = 1; i < 16; i++) s += lanes[i];
        return s;
    }

    /** The packed kernels, as the backend calls them. */
    private static void matmul(CpuNative nat, Parallel par, boolean q4, MemorySegment a, MemorySegment w, MemorySegment c,
                               int m, int n, int k, boolean accumulate) {
        DType type = q4 ? DType.Q4_0 : DType.Q8_0;
        nat.matmulPacked(par, a, nat.pack(par, type, w, n, k), c, m, n, k, accumulate);
    }

    @Test
    void quantizeFollowsItsDefinitionIncludingTiesAndZeroBlocks() {
        CpuNative nat = kernels();
        Random r = new Random(3);
        int k = 160, nbPad = CpuNative.paddedBlocks(k);
        float[] x = gaussian(r, k, 2);
        for (int i = 32; i < 64; i++) x[i] = 0f; // block 1: all zero, d = 0
        x[64] = 127f; x[65] = 2.5f; x[66] = -3.5f; x[67] = -127f; // block 2: d = 1, ties go to even
        byte[] q = new byte[nbPad * 32], wq = new byte[nbPad * 32];
        float[] d = new float[nbPad], wd = new float[nbPad];
        int[] s = new int[nbPad], ws = new int[nbPad];
        nat.quantize(MemorySegment.ofArray(x), k, nbPad, MemorySegment.ofArray(q), MemorySegment.ofArray(d),
                MemorySegment.ofArray(s));
        quantizeModel(x, 0, k, nbPad, wq, wd, ws);
        for (int b = 0; b < nbPad; b++) {
            assertEquals(Float.floatToRawIntBits(wd[b]), Float.floatToRawIntBits(d[b]), "scale of block " + b);
            assertEquals(ws[b], s[b], "sum of block " + b);
        }
        for (int i = 0; i < q.length; i++) assertEquals(wq[i], q[i], "element " + i);
        assertEquals(1f, d[2]);
        assertEquals(2, q[65]);
        assertEquals(-4, q[66]);
        assertEquals(0f, d[1]);

    }

    @ParameterizedTest
    @ValueSource(ints = {32, 96, 512, 544, 768, 1056, 2048, 5632})
    void q8RowsFollowTheContractBitForBit(int k) {
        rowsFollowTheContract(false, k);
    }

    @ParameterizedTest
    @ValueSource(ints = {32, 96, 512, 544, 768, 1056, 2048, 5632})
    void q4RowsFollowTheContractBitForBit(int k) {
        rowsFollowTheContract(true, k);
    }

    private void rowsFollowTheContract(boolean q4, int k) {
        CpuNative nat = kernels();
        Random r = new Random(k + (q4 ? 1 : 0));
        int n = 37, m = 6, nbPad = CpuNative.paddedBlocks(k);
        float[] w = gaussian(r, n * k, 0.05), x = gaussian(r, m * k, 1);
        for (int i = 0; i < k; i += 7) x[i] *= 20; // outliers: small integers for most of a block
        DType type = q4 ? DType.Q4_0 : DType.Q8_0;
        MemorySegment stored = MemorySegment.ofArray(Blocks.encode(type, w, 0, w.length));
        float[] c = new float[m * n];
        matmul(nat, Parallel.SERIAL, q4, MemorySegment.ofArray(x), stored, MemorySegment.ofArray(c), m, n, k, false);
        byte[] q = new byte[nbPad * 32];
        float[] d = new float[nbPad];
        for (int i = 0; i < m; i++) {
            java.util.Arrays.fill(q, (byte) 0);
            java.util.Arrays.fill(d, 0f);
            quantizeModel(x, i * k, k, nbPad, q, d, new int[nbPad]);
            for (int j = 0; j < n; j++) {
                float want = dotModel(q4, stored, j, k, q, d);
                assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(c[i * n + j]),
                        type + " k " + k + " row " + i + " col " + j + ": " + want + " vs " + c[i * n + j]);
            }
        }
    }

    /** The AVX2 forms (a CPU without AVX-512 VNNI runs them) give the AVX-512 forms' bits: quantizer and matmuls. */
    @ParameterizedTest
    @ValueSource(ints = {1, 3, 17, 40})
    void theAvx2FormsGiveTheSameBits(int m) {
        CpuNative nat = fullKernels(), avx2 = nat.avx2Form();
        assertTrue(!avx2.full());
        Random r = new Random(300 + m);
        int n = 37;
        for (DType type : new DType[] {DType.Q4_0, DType.Q8_0}) {
            for (int k : new int[] {32, 96, 544, 768, 1056, 2048}) {
                float[] w = gaussian(r, n * k, 0.05), x = gaussian(r, m * k, 1), base = gaussian(r, m * n, 1);
                for (int i = 0; i < k; i += 7) x[i] *= 20;
                MemorySegment stored = MemorySegment.ofArray(Blocks.encode(type, w, 0, w.length));
                CpuNative.Packed p = nat.pack(Parallel.SERIAL, type, stored, n, k);
                for (boolean acc : new boolean[] {false, true}) {
                    float[] a = base.clone(), b = base.clone();
                    nat.matmulPacked(Parallel.SERIAL, MemorySegment.ofArray(x), p, MemorySegment.ofArray(a), m, n, k, acc);
                    avx2.matmulPacked(Parallel.SERIAL, MemorySegment.ofArray(x), p, MemorySegment.ofArray(b), m, n, k, acc);
                    for (int i = 0; i < m * n; i++) {
                        assertEquals(Float.floatToRawIntBits(a[i]), Float.floatToRawIntBits(b[i]),
                                type + " k " + k + " m " + m + " accumulate " + acc + " element " + i + ": " + a[i] + " vs " + b[i]);
                    }
                }
            }
        }
        // Extremes for the 16-bit pair sums (no saturation): weights at ±127 and ±8 steps, activations at ±127.
        int k = 64;
        float[] w = new float[n * k], x = new float[k];
        for (int i = 0; i < w.length; i++) w[i] = i % 2 == 0 ? 1f : -1f;
        for (int i = 0; i < k; i++) x[i] = i % 3 == 0 ? -1f : 1f;
        for (DType type : new DType[] {DType.Q4_0, DType.Q8_0}) {
            MemorySegment stored = MemorySegment.ofArray(Blocks.encode(type, w, 0, w.length));
            CpuNative.Packed p = nat.pack(Parallel.SERIAL, type, stored, n, k);
            float[] a = new float[n], b = new float[n];
            nat.matmulPacked(Parallel.SERIAL, MemorySegment.ofArray(x), p, MemorySegment.ofArray(a), 1, n, k, false);
            avx2.matmulPacked(Parallel.SERIAL, MemorySegment.ofArray(x), p, MemorySegment.ofArray(b), 1, n, k, false);
            byte[] q = new byte[CpuNative.paddedBlocks(k) * 32];
            float[] d = new float[CpuNative.paddedBlocks(k)];
            quantizeModel(x, 0, k, CpuNative.paddedBlocks(k), q, d, new int[CpuNative.paddedBlocks(k)]);
            for (int j = 0; j < n; j++) {
                float want = dotModel(type == DType.Q4_0, stored, j, k, q, d);
                assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(a[j]), type + " row " + j);
                assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(b[j]), type + " AVX2 row " + j);
            }
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 5, 9, 31})
    void q4GivesTheJavaIntegerKernelsBits(int m) {
        CpuNative nat = kernels();
        assumeTrue(Q4Int.HARDWARE, "the Java integer kernel needs AVX-512BW");
        Random r = new Random(100 + m);
        int n = 300, k = 1056;
        float[] w = gaussian(r, n * k, 0.05), x = gaussian(r, m * k, 1), base = gaussian(r, m * n, 1);
        MemorySegment stored = MemorySegment.ofArray(Blocks.encode(DType.Q4_0, w, 0, w.length));
        try (WorkerPool pool = new WorkerPool(2)) {
            Q4Int.Packed p = Q4Int.pack(pool, stored, n, k);
            for (boolean acc : new boolean[] {false, true}) {
                float[] java = base.clone(), ours = base.clone();
                Q4Int.matmul(pool, MemorySegment.ofArray(x), p, MemorySegment.ofArray(java), m, n, k, acc);
                matmul(nat, pool, true, MemorySegment.ofArray(x), stored, MemorySegment.ofArray(ours), m, n, k, acc);
                for (int i = 0; i < m * n; i++) {
                    assertEquals(Float.floatToRawIntBits(java[i]), Float.floatToRawIntBits(ours[i]),
                            "m " + m + " accumulate " + acc + " element " + i + ": " + java[i] + " vs " + ours[i]);
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 5, 9, 31})
    void floatWeightsGiveTheJavaKernelsBits(int m) {
        fullKernels();
        Random r = new Random(200 + m);
        int n = 70;
        for (DType type : new DType[] {DType.F32, DType.F16, DType.BF16}) {
            for (int k : new int[] {16, 72, 100, 768, 1059}) {
                float[] w = gaussian(r, n * k, 0.05), x = gaussian(r, m * k, 1), base = gaussian(r, m * n, 1);
                byte[] enc = type == DType.F32 ? null : Blocks.encode(type, w, 0, w.length);
                for (boolean acc : new boolean[] {false, true}) {
                    float[][] got = new float[2][];
                    for (int v = 0; v < 2; v++) { // v = 0: Java kernels only; 1: the native kernels
                        try (CpuBackend be = new CpuBackend(2, null, v == 0 ? null : CpuNative.fromEnvironment())) {
                            Buffer b = be.allocate(type, (long) n * k), a = be.allocate(DType.F32, (long) m * k);
                            Buffer c = be.allocate(DType.F32, (long) m * n);
                            be.copyIn(b, enc == null ? MemorySegment.ofArray(w) : MemorySegment.ofArray(enc));
                            be.copyIn(a, MemorySegment.ofArray(x));
                            be.copyIn(c, MemorySegment.ofArray(base));
                            be.run(new Op.MatMul(a, b, c, m, n, k, false, true, acc));
                            got[v] = new float[m * n];
                            be.copyOut(c, MemorySegment.ofArray(got[v]));
                        }
                    }
                    for (int i = 0; i < m * n; i++) {
                        assertEquals(Float.floatToRawIntBits(got[0][i]), Float.floatToRawIntBits(got[1][i]),
                                type + " m " + m + " k " + k + " accumulate " + acc + " element " + i + ": " + got[0][i] + " vs " + got[1][i]);
                    }
                }
            }
        }
    }

    /** A decode step of sequences of mixed lengths over a shuffled page pool: the native rows give the Java kernel's bits. */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.CsvSource({"12, 12, 64, F32", "8, 2, 64, F32", "4, 4, 72, F32", "8, 2, 64, F16",
            "4, 1, 40, F16"})
    void pagedAttentionDecodeRowsGiveTheJavaKernelsBits(int heads, int kvHeads, int d, DType pool) {
        CpuNative nat = fullKernels();
        Random r = new Random(heads * 31 + d);
        int[] lengths = {1, 17, 64, 65, 130, 200, 3};
        int rows = lengths.length, pageSize = 16, kvRow = kvHeads * d;
        int maxPages = (200 + pageSize - 1) / pageSize, pages = rows * maxPages + 3;
        float[] q = gaussian(r, rows * heads * d, 1), k = gaussian(r, pages * pageSize * kvRow, 1), v = gaussian(r, pages * pageSize * kvRow, 1);
        int[] table = new int[rows * maxPages];
        java.util.List<Integer> ids = new java.util.ArrayList<>();
        for (int i = 0; i < pages; i++) ids.add(i);
        java.util.Collections.shuffle(ids, r);
        for (int i = 0; i < table.length; i++) table[i] = ids.get(i);
        float[][] got = new float[2][];
        for (int run = 0; run < 2; run++) {
            try (CpuBackend be = new CpuBackend(2, null, run == 0 ? null : nat)) {
                Buffer qb = be.allocate(DType.F32, q.length), out = be.allocate(DType.F32, q.length);
                Buffer kb = be.allocate(pool, k.length), vb = be.allocate(pool, v.length);
                Buffer tb = be.allocate(DType.I32, table.length), lb = be.allocate(DType.I32, rows);
                be.copyIn(qb, MemorySegment.ofArray(q));
                be.copyIn(kb, MemorySegment.ofArray(pool == DType.F32 ? MemorySegment.ofArray(k).toArray(ValueLayout.JAVA_BYTE) : Blocks.encode(pool, k, 0, k.length)));
                be.copyIn(vb, MemorySegment.ofArray(pool == DType.F32 ? MemorySegment.ofArray(v).toArray(ValueLayout.JAVA_BYTE) : Blocks.encode(pool, v, 0, v.length)));
                be.copyIn(tb, MemorySegment.ofArray(table));
                be.copyIn(lb, MemorySegment.ofArray(lengths));
                be.run(new Op.PagedAttention(qb, kb, vb, tb, lb, out, rows, heads, kvHeads, d, pageSize, maxPages));
                got[run] = new float[q.length];
                be.copyOut(out, MemorySegment.ofArray(got[run]));
            }
        }
        for (int i = 0; i < q.length; i++) {
            assertEquals(Float.floatToRawIntBits(got[0][i]), Float.floatToRawIntBits(got[1][i]),
                    pool + " heads " + heads + "/" + kvHeads + " d " + d + " element " + i + ": " + got[0][i] + " vs " + got[1][i]);
        }
        // The native rows did run (they may decline shapes past their scratch, which would make this test vacuous).
        java.util.concurrent.atomic.AtomicInteger ran = new java.util.concurrent.atomic.AtomicInteger();
        dev.crucible.cpu.kernels.PagedAttention.RowKernel rows0 = nat.attentionRows();
        float[] direct = new float[q.length];
        dev.crucible.cpu.kernels.PagedAttention.forward(Parallel.SERIAL, MemorySegment.ofArray(q),
                MemorySegment.ofArray(pool == DType.F32 ? MemorySegment.ofArray(k).toArray(ValueLayout.JAVA_BYTE) : Blocks.encode(pool, k, 0, k.length)),
                MemorySegment.ofArray(pool == DType.F32 ? MemorySegment.ofArray(v).toArray(ValueLayout.JAVA_BYTE) : Blocks.encode(pool, v, 0, v.length)),
                MemorySegment.ofArray(table), MemorySegment.ofArray(lengths), MemorySegment.ofArray(direct), rows, heads,
                kvHeads, d, pageSize, maxPages, pages, pool == DType.F16,
                (a, b, c, h, t, tr, l, r0, n, o, hs, kv, kh, dd, ps, sc) -> {
                    boolean done = rows0.rows(a, b, c, h, t, tr, l, r0, n, o, hs, kv, kh, dd, ps, sc);
                    if (done) ran.incrementAndGet();
                    return done;
                });
        assertEquals(rows * kvHeads, ran.get(), "every (sequence, KV head) block ran natively");
        for (int i = 0; i < q.length; i++) assertEquals(Float.floatToRawIntBits(got[0][i]), Float.floatToRawIntBits(direct[i]), "element " + i);
    }

    /**
     * Decode steps on a contiguous KV cache (Llama.Session's Attention op) through the native rows: each batch row's
     * cache is one page, so they must give the Java kernel's bits; one and two query rows, GQA, head sizes with
     * tails, caches longer than the keys in use, several batch rows.
     */
    @Test
    void contiguousDecodeAttentionThroughTheNativeRowsGivesTheJavaBits() {
        CpuNative nat = fullKernels();
        Random r = new Random(21);
        int[][] shapes = {{1, 1, 4, 4, 64, 0, 8}, {1, 1, 12, 12, 64, 70, 128}, {2, 2, 8, 2, 40, 33, 64}, {3, 1, 32, 8, 72, 200, 256},
                {1, 2, 6, 3, 64, 15, 17}, {2, 1, 4, 1, 128, 1, 2}};
        for (int[] sh : shapes) {
            int batch = sh[0], tq = sh[1], heads = sh[2], kvHeads = sh[3], d = sh[4], qPos0 = sh[5], capacity = sh[6];
            long stride = (long) capacity * kvHeads * d;
            float[] q = gaussian(r, batch * tq * heads * d, 1), k = gaussian(r, (int) (batch * stride), 1), v = gaussian(r, (int) (batch * stride), 1);
            float[] want = new float[q.length], got = new float[q.length];
            dev.crucible.cpu.kernels.Attention.forward(Parallel.SERIAL, MemorySegment.ofArray(q), MemorySegment.ofArray(k),
                    MemorySegment.ofArray(v), MemorySegment.ofArray(want), null, batch, tq, qPos0 + tq, heads, kvHeads, d, qPos0, stride);
            java.util.concurrent.atomic.AtomicInteger ran = new java.util.concurrent.atomic.AtomicInteger();
            dev.crucible.cpu.kernels.PagedAttention.RowKernel rows = nat.attentionRows();
            try (WorkerPool two = new WorkerPool(2)) {
                dev.crucible.cpu.kernels.Attention.forward(two, MemorySegment.ofArray(q), MemorySegment.ofArray(k),
                        MemorySegment.ofArray(v), MemorySegment.ofArray(got), null, batch, tq, qPos0 + tq, heads, kvHeads, d, qPos0, stride,
                        (a, b, c, h, t, tr, l, r0, n, o, hs, kv, kh, dd, ps, sc) -> {
                            boolean done = rows.rows(a, b, c, h, t, tr, l, r0, n, o, hs, kv, kh, dd, ps, sc);
                            if (done) ran.incrementAndGet();
                            return done;
                        });
            }
            String what = java.util.Arrays.toString(sh);
            assertEquals(batch * kvHeads, ran.get(), "every (batch row, KV head) ran natively: " + what);
            for (int i = 0; i < q.length; i++) {
                assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]), what + " element " + i);
            }
        }
        // A cache too short for the keys the step needs is left to the Java kernel's checks, never read past.
        float[] q = new float[4 * 64], kv = new float[10 * 4 * 64], out = new float[q.length];
        java.util.concurrent.atomic.AtomicInteger ran = new java.util.concurrent.atomic.AtomicInteger();
        assertThrows(IndexOutOfBoundsException.class, () -> dev.crucible.cpu.kernels.Attention.forward(Parallel.SERIAL,
                MemorySegment.ofArray(q), MemorySegment.ofArray(kv), MemorySegment.ofArray(kv), MemorySegment.ofArray(out), null,
                1, 1, 21, 4, 4, 64, 20, 20L * 4 * 64, (a, b, c, h, t, tr, l, r0, n, o, hs, kvh, kh, dd, ps, sc) -> {
                    ran.incrementAndGet();
                    return false;
                }));
        assertEquals(0, ran.get(), "the native rows never saw a cache shorter than the keys");
    }

    /**
     * A weight matrix that is a row range of a larger one (Llama's fused q;k;v) is multiplied from the larger
     * matrix's packed copy where the rows start a group of 16, and packed alone where they do not: the same bits as
     * the same rows in a buffer of their own, either way, for one row and for a prefill chunk.
     */
    @Test
    void rowRangesOfAStoredMatrixGiveTheBitsOfTheRowsAlone() {
        kernels();
        Random r = new Random(33);
        int rows = 80, k = 96;
        for (DType type : new DType[] {DType.Q4_0, DType.Q8_0}) {
            float[] w = gaussian(r, rows * k, 0.05);
            byte[] all = Blocks.encode(type, w, 0, w.length);
            try (CpuBackend be = new CpuBackend(2)) {
                Buffer root = be.allocate(type, (long) rows * k);
                be.copyIn(root, MemorySegment.ofArray(all));
                for (int[] range : new int[][] {{0, 32}, {32, 48}, {8, 16}, {64, 16}, {16, 64}}) {
                    int r0 = range[0], n = range[1];
                    Buffer alone = be.allocate(type, (long) n * k);
                    be.copyIn(alone, MemorySegment.ofArray(Blocks.encode(type, w, r0 * k, n * k)));
                    for (int m : new int[] {1, 5}) {
                        float[] x = gaussian(r, m * k, 1);
                        Buffer a = be.allocate(DType.F32, (long) m * k), c1 = be.allocate(DType.F32, (long) m * n), c2 = be.allocate(DType.F32, (long) m * n);
                        be.copyIn(a, MemorySegment.ofArray(x));
                        be.run(new Op.MatMul(a, root.slice((long) r0 * k, (long) n * k), c1, m, n, k, false, true, false));
                        be.run(new Op.MatMul(a, alone, c2, m, n, k, false, true, false));
                        float[] g1 = new float[m * n], g2 = new float[m * n];
                        be.copyOut(c1, MemorySegment.ofArray(g1));
                        be.copyOut(c2, MemorySegment.ofArray(g2));
                        for (int i = 0; i < g1.length; i++) {
                            assertEquals(Float.floatToRawIntBits(g2[i]), Float.floatToRawIntBits(g1[i]), type + " rows " + r0 + "+" + n + " m " + m + " at " + i);
                        }
                    }
                }
            }
        }
        CpuNative.Packed p = kernels().pack(Parallel.SERIAL, DType.Q4_0, MemorySegment.ofArray(new byte[40 * 18 * 2]), 40, 64);
        assertEquals(24, p.rows(16, 24).n());
        assertThrows(IllegalArgumentException.class, () -> p.rows(8, 16));          // not at a group's start
        assertThrows(IllegalArgumentException.class, () -> p.rows(0, 20));          // ends inside a group, not at the last row
    }

    @Test
    void aRowAloneAndInAStepOfManyGiveTheSameBitsOnAnyThreadCount() {
        CpuNative nat = kernels();
        Random r = new Random(11);
        int n = 600, k = 2048, m = 45; // more rows than a tile (16): a prefill chunk
        for (DType type : new DType[] {DType.Q8_0, DType.Q4_0}) {
            boolean q4 = type == DType.Q4_0;
            float[] w = gaussian(r, n * k, 0.05), x = gaussian(r, m * k, 1);
            MemorySegment stored = MemorySegment.ofArray(Blocks.encode(type, w, 0, w.length));
            float[] all = new float[m * n];
            try (WorkerPool two = new WorkerPool(2)) {
                matmul(nat, two, q4, MemorySegment.ofArray(x), stored, MemorySegment.ofArray(all), m, n, k, false);
            }
            for (int i : new int[] {0, 5, 12, 16, 44}) {
                float[] one = new float[n];
                matmul(nat, Parallel.SERIAL, q4, MemorySegment.ofArray(x).asSlice((long) i * k * 4, (long) k * 4),
                        stored, MemorySegment.ofArray(one), 1, n, k, false);
                for (int j = 0; j < n; j++) {
                    assertEquals(Float.floatToRawIntBits(all[i * n + j]), Float.floatToRawIntBits(one[j]),
                            type + " row " + i + " col " + j);
                }
            }
        }
    }

    @Test
    void settingsAreCheckedWithOneClearMessage() throws Exception {
        assertNull(CpuNative.load("off").kernels());
        assertTrue(CpuNative.load("off").status().contains("off"), CpuNative.load("off").status());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CpuNative.load("/no/such/lib.so"));
        assertTrue(e.getMessage().contains("CRUCIBLE_NATIVE") && e.getMessage().contains("/no/such/lib.so"), e.getMessage());
        Path notALibrary = Files.createTempFile("crucible", ".so");
        try {
            Files.writeString(notALibrary, "not an ELF file");
            e = assertThrows(IllegalArgumentException.class, () -> CpuNative.load(notALibrary.toString()));
            assertTrue(e.getMessage().contains("did not load"), e.getMessage());
        } finally {
            Files.delete(notALibrary);
        }
        String old = System.getProperty(CpuNative.Q8_PROPERTY);
        try {
            System.setProperty(CpuNative.Q8_PROPERTY, "F32");
            assertEquals(false, CpuNative.q8Int());
            System.setProperty(CpuNative.Q8_PROPERTY, "int4");
            e = assertThrows(IllegalArgumentException.class, CpuNative::q8Int);
            assertTrue(e.getMessage().contains("CRUCIBLE_Q8") && e.getMessage().contains("'int4'"), e.getMessage());
        } finally {
            if (old == null) System.clearProperty(CpuNative.Q8_PROPERTY);
            else System.setProperty(CpuNative.Q8_PROPERTY, old);
        }
    }
}
