package dev.crucible.conformance;

import dev.crucible.backend.ref.RefBackend;
import dev.crucible.cpu.CpuBackend;
import dev.crucible.cpu.blas.OpenBlas;
import org.junit.jupiter.api.Test;

import java.util.Optional;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The CPU backend with matmul on OpenBLAS (when the library is installed; skipped otherwise): the full suite, and
 * the same bits on any number of threads, which the fixed-block split of {@code BlasGemm} promises.
 */
class CpuBlasConformanceTest {
    private static final long SEED = 0xB1A5L;

    private static OpenBlas blas() {
        Optional<OpenBlas> b = OpenBlas.load(null);
        assumeTrue(b.isPresent(), "OpenBLAS (libopenblas.so.0) is not installed");
        return b.get();
    }

    @Test
    void cpuWithBlasPassesTheSuite() {
        OpenBlas blas = blas();
        try (CpuBackend cpu = new CpuBackend(2, blas); RefBackend ref = new RefBackend()) {
            Report r = new ConformanceSuite().run(cpu, ref, SEED, x -> {
                if (x.failed()) System.out.println("cpu+blas(2): " + x);
            });
            System.out.println(r.summary());
            assertTrue(r.passed(), r.toString());
        }
    }

    @Test
    void cpuWithBlasGivesTheSameBitsOnAnyNumberOfThreads() {
        OpenBlas blas = blas();
        try (CpuBackend one = new CpuBackend(1, blas); CpuBackend three = new CpuBackend(3, blas);
             RefBackend ref = new RefBackend()) {
            Report r = new ConformanceSuite().sameBits(three, one, ref, SEED, null);
            assertTrue(r.passed(), r.toString());
        }
    }
}
