package dev.crucible.cpu;

import dev.crucible.backend.Backend;
import dev.crucible.backend.BackendProvider;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.backend.ref.RefBackend;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Random;
import java.util.ServiceLoader;
import java.util.function.Function;

import static dev.crucible.cpu.OpHarness.nmse;
import static dev.crucible.cpu.OpHarness.randInts;
import static dev.crucible.cpu.OpHarness.randn;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Every op on CpuBackend against RefBackend (NMSE), at aligned and odd shapes, plus thread-count determinism. */
class CpuBackendTest {
    static final double ELEMENTWISE = 1e-10, REDUCTION = 1e-8;

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

    /** Runs the op on ref and on the 2-thread cpu backend; every output must agree within tol. */
    static void check(String what, double tol, Function<OpHarness.Alloc, Op> factory) {
        List<Object> want = OpHarness.run(ref, factory);
        List<Object> got = OpHarness.run(cpu2, factory);
        assertEquals(want.size(), got.size());
        for (int i = 0; i < want.size(); i++) {
            if (want.get(i) instanceof int[] w) {
                assertArrayEquals(w, (int[]) got.get(i), what + " output " + i);
            } else {
                double e = nmse((float[]) got.get(i), (float[]) want.get(i));
                assertTrue(e <= tol, what + " output " + i + ": NMSE " + e + " > " + tol);
            }
        }
    }

    /** The op gives the same bits on 1, 2 and 3 threads. */
    static void deterministic(String what, Function<OpHarness.Alloc, Op> factory) {
        List<Object> one = OpHarness.run(cpu1, factory);
        for (Backend b : new Backend[] {cpu2, cpu3}) {
            List<Object> other = OpHarness.run(b, factory);
            for (int i = 0; i < one.size(); i++) {
                float[] x = (float[]) one.get(i), y = (float[]) other.get(i);
                for (int j = 0; j < x.length; j++) {
                    if (Float.floatToRawIntBits(x[j]) != Float.floatToRawIntBits(y[j])) {
                        throw new AssertionError(what + " output " + i + " differs at " + j + " on "
                                + ((CpuBackend) b).threads() + " threads: " + x[j] + " vs " + y[j]);
                    }
                }
            }
        }
    }

    @Test
    void providerIsFoundByServiceLoader() {
        BackendProvider found = null;
        for (BackendProvider p : ServiceLoader.load(BackendProvider.class)) if (p.name().equals("cpu")) found = p;
        assertTrue(found != null, "no BackendProvider named cpu");
        try (Backend b = found.create(2)) {
            assertEquals("cpu", b.name());
        }
    }

    @Test
    void fillAndCopy() {
        Random r = new Random(1);
        for (int n : new int[] {1, 37, 70001}) {
            float[] x = randn(r, n, 1);
            check("fill f32 " + n, 0, a -> new Op.Fill(a.f32(x), 2.5f));
            check("fill zero " + n, 0, a -> new Op.Fill(a.f32(x), 0f));
            check("fill i32 " + n, 0, a -> new Op.Fill(a.i32(new int[n]), -7f));
            check("copy f32 " + n, 0, a -> new Op.Copy(a.f32(x), a.f32(new float[n])));
            int[] ids = randInts(r, n, 1000);
            check("copy i32 " + n, 0, a -> new Op.Copy(a.i32(ids), a.i32(new int[n])));
        }
    }

    @Test
    void add() {
        Random r = new Random(2);
        for (int n : new int[] {1, 1003, 70000}) {
            float[] x = randn(r, n, 1), y = randn(r, n, 1);
            check("add " + n, ELEMENTWISE, a -> new Op.Add(a.f32(x), a.f32(y), a.f32(new float[n]), n));
            check("add in place " + n, ELEMENTWISE, a -> {
                Buffer xa = a.f32(x);
                return new Op.Add(xa, a.f32(y), xa, n);
            });
        }
    }

    @Test
    void embedding() {
        Random r = new Random(3);
        int[][] shapes = {{37, 53, 101}, {64, 128, 50}};
        for (int[] s : shapes) {
            int n = s[0], dim = s[1], vocab = s[2];
            int[] ids = randInts(r, n, vocab);
            ids[1] = ids[0]; // repeated ids must accumulate
            float[] table = randn(r, vocab * dim, 1), dOut = randn(r, n * dim, 1), dTable = randn(r, vocab * dim, 1);
            check("embedding " + n + "x" + dim, 0, a -> new Op.Embedding(a.i32(ids), a.f32(table), a.f32(new float[n * dim]), n, dim));
            Function<OpHarness.Alloc, Op> bwd = a -> new Op.EmbeddingBackward(a.i32(ids), a.f32(dOut), a.f32(dTable), n, dim);
            check("embedding backward " + n + "x" + dim, ELEMENTWISE, bwd);
            deterministic("embedding backward", bwd);
        }
    }

    @Test
    void rmsNorm() {
        Random r = new Random(4);
        int[][] shapes = {{37, 53}, {64, 256}, {5, 8}};
        for (int[] s : shapes) {
            int n = s[0], dim = s[1];
            float[] x = randn(r, n * dim, 2), w = randn(r, dim, 1), dOut = randn(r, n * dim, 1);
            float[] dx = randn(r, n * dim, 1), dw = randn(r, dim, 1);
            check("rmsnorm " + n + "x" + dim, ELEMENTWISE, a -> new Op.RmsNorm(a.f32(x), a.f32(w), a.f32(new float[n * dim]), a.f32(new float[n]), n, dim, 1e-5f));
            check("rmsnorm no rstd", ELEMENTWISE, a -> new Op.RmsNorm(a.f32(x), a.f32(w), a.f32(new float[n * dim]), null, n, dim, 1e-5f));
            float[] rstd = new float[n];
            for (int i = 0; i < n; i++) {
                double ss = 0;
                for (int c = 0; c < dim; c++) ss += (double) x[i * dim + c] * x[i * dim + c];
                rstd[i] = (float) (1 / Math.sqrt(ss / dim + 1e-5));
            }
            Function<OpHarness.Alloc, Op> bwd = a -> new Op.RmsNormBackward(a.f32(dOut), a.f32(x), a.f32(w), a.f32(rstd), a.f32(dx), a.f32(dw), n, dim);
            check("rmsnorm backward " + n + "x" + dim, REDUCTION, bwd);
            deterministic("rmsnorm backward", bwd);
        }
    }

    @Test
    void matmul() {
        Random r = new Random(5);
        int[][] shapes = {{37, 53, 29}, {128, 96, 300}, {3, 70, 41}, {1, 129, 257}, {200, 300, 520}, {7, 5, 3}};
        for (int[] s : shapes) {
            int m = s[0], n = s[1], k = s[2];
            float[] x = randn(r, m * k, 1), y = randn(r, k * n, 1), c0 = randn(r, m * n, 1);
            for (int combo = 0; combo < 8; combo++) {
                boolean ta = (combo & 1) != 0, tb = (combo & 2) != 0, acc = (combo & 4) != 0;
                String what = "matmul " + m + "x" + n + "x" + k + " tA=" + ta + " tB=" + tb + " acc=" + acc;
                Function<OpHarness.Alloc, Op> f = a -> new Op.MatMul(a.f32(x), a.f32(y), a.f32(c0), m, n, k, ta, tb, acc);
                check(what, REDUCTION, f);
                if (m * n * k > 100_000) deterministic(what, f);
            }
        }
    }

    @Test
    void rope() {
        Random r = new Random(6);
        int[][] shapes = {{37, 3, 18}, {16, 4, 64}, {9, 2, 128}};
        for (int[] s : shapes) {
            int n = s[0], heads = s[1], d = s[2];
            float[] x = randn(r, n * heads * d, 1);
            int[] pos = randInts(r, n, 6000);
            pos[0] = 0;
            pos[n - 1] = -3;
            for (boolean inverse : new boolean[] {false, true}) {
                for (float theta : new float[] {10000f, 500000f}) {
                    check("rope " + n + "x" + heads + "x" + d + " inv=" + inverse, ELEMENTWISE,
                            a -> new Op.Rope(a.f32(x), a.i32(pos), n, heads, d, theta, inverse));
                }
            }
        }
    }

    @Test
    void attention() {
        Random r = new Random(7);
        // batch, tq, tk, heads, kvHeads, d, qPos0, extra kv rows per batch
        int[][] cases = {{2, 37, 37, 4, 2, 24, 0, 0}, {2, 70, 70, 2, 2, 64, 0, 0}, {3, 1, 50, 4, 1, 32, 49, 3},
                {2, 5, 25, 6, 3, 16, 20, 7}, {1, 129, 129, 1, 1, 48, 0, 0}};
        for (int[] c : cases) {
            int b = c[0], tq = c[1], tk = c[2], h = c[3], kv = c[4], d = c[5], qPos0 = c[6];
            long stride = (long) (tk + c[7]) * kv * d;
            int kvn = (int) ((b - 1) * stride + (long) tk * kv * d);
            float[] q = randn(r, b * tq * h * d, 1), k = randn(r, kvn, 1), v = randn(r, kvn, 1);
            String what = "attention " + java.util.Arrays.toString(c);
            Function<OpHarness.Alloc, Op> f = a -> new Op.Attention(a.f32(q), a.f32(k), a.f32(v), a.f32(new float[q.length]),
                    a.f32(new float[b * h * tq]), b, tq, tk, h, kv, d, qPos0, stride);
            check(what, REDUCTION, f);
            check(what + " no lse", REDUCTION, a -> new Op.Attention(a.f32(q), a.f32(k), a.f32(v), a.f32(new float[q.length]),
                    null, b, tq, tk, h, kv, d, qPos0, stride));
            deterministic(what, f);
        }
    }

    @Test
    void attentionBackward() {
        Random r = new Random(8);
        int[][] cases = {{2, 37, 4, 2, 24}, {1, 100, 3, 1, 16}, {1, 64, 2, 2, 64}};
        for (int[] c : cases) {
            int b = c[0], t = c[1], h = c[2], kv = c[3], d = c[4];
            int qn = b * t * h * d, kvn = b * t * kv * d;
            float[] q = randn(r, qn, 1), k = randn(r, kvn, 1), v = randn(r, kvn, 1), dOut = randn(r, qn, 1);
            List<Object> fwd = OpHarness.run(ref, a -> new Op.Attention(a.f32(q), a.f32(k), a.f32(v), a.f32(new float[qn]),
                    a.f32(new float[b * h * t]), b, t, t, h, kv, d, 0, (long) t * kv * d));
            float[] out = (float[]) fwd.get(0), lse = (float[]) fwd.get(1);
            String what = "attention backward " + java.util.Arrays.toString(c);
            Function<OpHarness.Alloc, Op> f = a -> new Op.AttentionBackward(a.f32(dOut), a.f32(q), a.f32(k), a.f32(v),
                    a.f32(out), a.f32(lse), a.f32(new float[qn]), a.f32(new float[kvn]), a.f32(new float[kvn]), b, t, h, kv, d);
            check(what, REDUCTION, f);
            deterministic(what, f);
        }
    }

    @Test
    void swiglu() {
        Random r = new Random(9);
        for (int n : new int[] {1, 1001, 70000}) {
            float[] g = randn(r, n, 3), u = randn(r, n, 1), dOut = randn(r, n, 1);
            check("swiglu " + n, ELEMENTWISE, a -> new Op.SwiGlu(a.f32(g), a.f32(u), a.f32(new float[n]), n));
            check("swiglu backward " + n, ELEMENTWISE, a -> new Op.SwiGluBackward(a.f32(dOut), a.f32(g), a.f32(u),
                    a.f32(new float[n]), a.f32(new float[n]), n));
        }
    }

    @Test
    void crossEntropy() {
        Random r = new Random(10);
        int[][] shapes = {{7, 5003}, {16, 2048}, {3, 10}};
        for (int[] s : shapes) {
            int n = s[0], vocab = s[1];
            float[] logits = randn(r, n * vocab, 4);
            int[] targets = randInts(r, n, vocab);
            targets[n - 1] = -1;
            float scale = 1f / n;
            Function<OpHarness.Alloc, Op> f = a -> new Op.CrossEntropy(a.f32(logits), a.i32(targets), a.f32(new float[n]),
                    a.f32(new float[n * vocab]), n, vocab, scale);
            check("cross entropy " + n + "x" + vocab, REDUCTION, f);
            check("cross entropy in place", REDUCTION, a -> {
                Buffer l = a.f32(logits);
                return new Op.CrossEntropy(l, a.i32(targets), a.f32(new float[n]), l, n, vocab, scale);
            });
            check("cross entropy loss only", REDUCTION, a -> new Op.CrossEntropy(a.f32(logits), a.i32(targets),
                    a.f32(new float[n]), null, n, vocab, scale));
            deterministic("cross entropy", f);
        }
    }

    @Test
    void sumSquares() {
        Random r = new Random(11);
        for (int n : new int[] {1, 1003, 1_000_003}) {
            float[] x = randn(r, n, 1);
            Function<OpHarness.Alloc, Op> f = a -> new Op.SumSquares(a.f32(x), a.f32(new float[1]));
            check("sum squares " + n, 1e-12, f);
            deterministic("sum squares", f);
        }
    }

    @Test
    void adamw() {
        Random r = new Random(12);
        for (int n : new int[] {1, 10007}) {
            float[] p = randn(r, n, 1), g = randn(r, n, 1), m = randn(r, n, 0.1f), v = new float[n];
            for (int i = 0; i < n; i++) v[i] = Math.abs((float) r.nextGaussian()) * 0.01f;
            check("adamw " + n, ELEMENTWISE, a -> new Op.AdamW(a.f32(p), a.f32(g), a.f32(m), a.f32(v), 3e-4f, 0.9f,
                    0.95f, 1e-8f, 0.1f, 3, 0.5f));
        }
    }

    @Test
    void supportsEveryF32Op() {
        try (Buffer x = cpu2.allocate(dev.crucible.tensor.DType.F32, 4)) {
            assertTrue(cpu2.supports(new Op.Fill(x, 1f)));
            assertTrue(cpu2.supports(new Op.SumSquares(x, x.slice(0, 1))));
        }
        try (Buffer x = cpu2.allocate(dev.crucible.tensor.DType.I64, 4)) {
            assertTrue(!cpu2.supports(new Op.Fill(x, 1f)));
        }
    }
}
