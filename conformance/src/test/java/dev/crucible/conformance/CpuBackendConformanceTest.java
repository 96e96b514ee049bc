package dev.crucible.conformance;

import dev.crucible.backend.ref.RefBackend;
import dev.crucible.cpu.CpuBackend;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CPU backend against the reference: the full suite, on several threads and on one, and bitwise agreement
 * between thread counts.
 */
class CpuBackendConformanceTest {
    private static final long SEED = 0xC0FFEEL;

    @Test
    void cpuBackendPassesTheSuite() {
        try (CpuBackend multi = new CpuBackend(4); CpuBackend single = new CpuBackend(1);
             RefBackend ref = new RefBackend()) {
            ConformanceSuite suite = new ConformanceSuite();
            Report multiReport = suite.run(multi, ref, SEED, r -> {
                if (r.failed()) System.out.println("cpu(4): " + r);
            });
            Report singleReport = suite.run(single, ref, SEED, r -> {
                if (r.failed()) System.out.println("cpu(1): " + r);
            });
            System.out.println(multiReport.summary());
            System.out.println(singleReport.summary());
            System.out.println(ConformanceSuite.supportMatrixMarkdown(List.of(multiReport)));
            assertTrue(multiReport.passed(), multiReport.toString());
            assertTrue(singleReport.passed(), singleReport.toString());
        }
    }

    /** DESIGN §4: the same bits on any number of threads. */
    @Test
    void cpuBackendGivesTheSameBitsOnAnyNumberOfThreads() {
        try (CpuBackend one = new CpuBackend(1); CpuBackend three = new CpuBackend(3); CpuBackend eight = new CpuBackend(8);
             RefBackend ref = new RefBackend()) {
            ConformanceSuite suite = new ConformanceSuite();
            Report r3 = suite.sameBits(three, one, ref, SEED, null);
            Report r8 = suite.sameBits(eight, one, ref, SEED + 1, null);
            assertTrue(r3.passed(), r3.toString());
            assertTrue(r8.passed(), r8.toString());
        }
    }
}
