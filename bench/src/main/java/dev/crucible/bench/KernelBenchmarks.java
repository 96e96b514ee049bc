package dev.crucible.bench;

import dev.crucible.backend.Buffer;
import dev.crucible.backend.HostBuffer;
import dev.crucible.backend.Op;
import dev.crucible.cpu.CpuBackend;
import dev.crucible.cpu.blas.OpenBlas;
import dev.crucible.tensor.DType;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

/**
 * JMH benchmarks of the CPU backend's training ops at the shapes of config S (dim 288, 6 heads, ffn 768, vocab
 * 4096, B·T = 2048 tokens), one op per benchmark, run through {@link CpuBackend#run} exactly as the model runs them.
 * {@code matmul = java|blas} picks the Java GEMM or OpenBLAS (skipped when OpenBLAS does not load).
 *
 * <pre>
 *   java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate \
 *        -jar bench/target/benchmarks.jar KernelBenchmarks -p threads=2
 * </pre>
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
        "-XX:-UseProfiledLoopPredicate"})
@State(Scope.Benchmark)
public class KernelBenchmarks {
    static final int N = 2048, C = 288, F = 768, V = 4096, B = 8, T = 256, H = 6, D = 48;

    @Param({"2"})
    public int threads;

    @Param({"java", "blas"})
    public String matmul;

    private CpuBackend be;
    private final List<Buffer> owned = new ArrayList<>();
    private Op mmForward, mmDx, mmDw, mmLmHead, attention, attentionBackward, crossEntropy, rmsNorm, rmsNormBackward,
            swiglu, swigluBackward, adamw, sumSquares;

    @Setup(Level.Trial)
    public void setUp() {
        OpenBlas blas = null;
        if (matmul.equals("blas")) {
            blas = OpenBlas.load(null).orElseThrow(() -> new IllegalStateException("OpenBLAS does not load here"));
        }
        be = new CpuBackend(threads, blas);
        Random rnd = new Random(42);
        Buffer x = rand(N * C, rnd), w = rand(C * C, rnd), y = rand(N * C, rnd), wUp = rand(F * C, rnd);
        Buffer h = rand(N * F, rnd), dW = rand(C * C, rnd), lm = rand(V * C, rnd), logits = rand((long) N * V, rnd);
        mmForward = new Op.MatMul(x, wUp, h, N, F, C, false, true, false);     // (N,C)·W_upᵀ
        mmDx = new Op.MatMul(y, w, x, N, C, C, false, false, true);           // dx += dy·W
        mmDw = new Op.MatMul(y, x, dW, C, C, N, true, false, true);           // dW += dyᵀ·x
        mmLmHead = new Op.MatMul(x, lm, logits, N, V, C, false, true, false); // logits
        Buffer q = rand(N * C, rnd), k = rand(N * C, rnd), v = rand(N * C, rnd), out = rand(N * C, rnd);
        Buffer lse = rand(B * H * T, rnd), dOut = rand(N * C, rnd);
        attention = new Op.Attention(q, k, v, out, lse, B, T, T, H, H, D, 0, (long) T * C);
        be.run(attention);
        attentionBackward = new Op.AttentionBackward(dOut, q, k, v, out, lse, rand(N * C, rnd), rand(N * C, rnd),
                rand(N * C, rnd), B, T, H, H, D);
        Buffer targets = be.allocate(DType.I32, N), losses = rand(N, rnd);
        owned.add(targets);
        for (int i = 0; i < N; i++) HostBuffer.of(targets).setInt(i, rnd.nextInt(V));
        crossEntropy = new Op.CrossEntropy(logits, targets, losses, rand((long) N * V, rnd), N, V, 1f / N);
        Buffer norm = rand(C, rnd), rstd = rand(N, rnd);
        rmsNorm = new Op.RmsNorm(x, norm, y, rstd, N, C, 1e-5f);
        be.run(rmsNorm);
        rmsNormBackward = new Op.RmsNormBackward(dOut, x, norm, rstd, rand(N * C, rnd), rand(C, rnd), N, C);
        Buffer gate = rand(N * F, rnd), up = rand(N * F, rnd);
        swiglu = new Op.SwiGlu(gate, up, h, (long) N * F);
        swigluBackward = new Op.SwiGluBackward(h, gate, up, rand(N * F, rnd), rand(N * F, rnd), (long) N * F);
        long params = 8_335_008L; // config S
        Buffer p = rand(params, rnd), g = rand(params, rnd), m = rand(params, rnd), vv = be.allocate(DType.F32, params);
        owned.add(vv);
        adamw = new Op.AdamW(p, g, m, vv, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 10, 0.5f);
        sumSquares = new Op.SumSquares(g, rand(1, rnd));
    }

    private Buffer rand(long n, Random rnd) {
        Buffer b = be.allocate(DType.F32, n);
        owned.add(b);
        HostBuffer hb = HostBuffer.of(b);
        for (long i = 0; i < n; i++) hb.setFloat(i, (float) (rnd.nextGaussian() * 0.1));
        return b;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        owned.forEach(Buffer::close);
        be.close();
    }

    @Benchmark public void matmulForwardUp() { be.run(mmForward); }
    @Benchmark public void matmulDx() { be.run(mmDx); }
    @Benchmark public void matmulDw() { be.run(mmDw); }
    @Benchmark public void matmulLmHead() { be.run(mmLmHead); }
    @Benchmark public void attentionForward() { be.run(attention); }
    @Benchmark public void attentionBackward() { be.run(attentionBackward); }
    @Benchmark public void crossEntropy() { be.run(crossEntropy); }
    @Benchmark public void rmsNorm() { be.run(rmsNorm); }
    @Benchmark public void rmsNormBackward() { be.run(rmsNormBackward); }
    @Benchmark public void swiglu() { be.run(swiglu); }
    @Benchmark public void swigluBackward() { be.run(swigluBackward); }
    @Benchmark public void adamw() { be.run(adamw); }
    @Benchmark public void sumSquares() { be.run(sumSquares); }
}
