package dev.crucible.qualify;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import dev.crucible.backend.ref.RefBackend;
import dev.crucible.model.LlamaConfig;
import org.junit.jupiter.api.Test;

import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Parity of one training step: the healthy CPU backend matches the reference; each defect is found and named. */
class ParityTest {
    static final LlamaConfig TINY = new LlamaConfig(61, 32, 2, 4, 2, 48, 16, 10_000f, 1e-5f, false);

    static ParityReport parity(Backend a, Backend b) {
        return Parity.run(a, b, new Parity.Config(TINY, 2, 12, 7, Parity.TOLERANCE, Parity.LOCAL_TOLERANCE, Duration.ofSeconds(3)), null);
    }

    @Test
    void cpuMatchesReference() {
        try (Backend ref = new RefBackend(); Backend cpu = Backends.create("cpu", 2)) {
            ParityReport r = parity(ref, cpu);
            System.out.println(r.summary());
            assertTrue(r.free().stream().anyMatch(d -> d.index() == 73 && d.layer().equals("layer 0") && d.what().equals("dW q_proj")));
            assertTrue(r.toText().contains("gradient divergence by layer"));
            assertTrue(r.toJson().contains("\"passed\" : true"));
            assertTrue(r.passed(), r.summary());
            assertEquals(-1, StepLabels.training(TINY).mismatchAt());
            assertTrue(r.free().stream().noneMatch(d -> d.phase().equals("?")), "every op labelled");
        }
    }

    @Test
    void reducedMantissaIsTheFirstMatMul() {
        try (Backend cpu = Backends.create("cpu", 2); Backend bad = Backends.create("defective:matmul-mantissa=10", 2)) {
            ParityReport r = parity(cpu, bad);
            System.out.println(r.summary());
            System.out.println(r.gradTable());
            OpDiff d = r.firstDivergence().orElseThrow();
            assertEquals("MatMul", d.op());
            assertEquals("layer 0", d.layer());
            assertEquals("q_proj", d.what());
            assertEquals("MatMul", r.firstAtFault().orElseThrow().op());
        }
    }

    @Test
    void bitFlipIsLocated() {
        try (Backend cpu = Backends.create("cpu", 2); Backend bad = Backends.create("defective:bitflip=SwiGluBackward@0.01", 2)) {
            ParityReport r = parity(cpu, bad);
            System.out.println(r.summary());
            assertEquals("SwiGluBackward", r.firstDivergence().orElseThrow().op());
            assertEquals("layer 1", r.firstDivergence().orElseThrow().layer());
            assertEquals("SwiGluBackward", r.firstAtFault().orElseThrow().op());
        }
    }

    @Test
    void nanIsLocated() {
        try (Backend cpu = Backends.create("cpu", 2); Backend bad = Backends.create("defective:nan-on=Attention@6", 2)) {
            ParityReport r = parity(cpu, bad);
            System.out.println(r.summary());
            OpDiff d = r.firstDivergence().orElseThrow();
            assertEquals("Attention", d.op());
            assertTrue(d.nonFiniteB() > 0);
            assertTrue(r.summary().contains("non-finite"), r.summary());
        }
    }

    @Test
    void missingOpStopsTheStepAndIsNamed() {
        try (Backend cpu = Backends.create("cpu", 2); Backend bad = Backends.create("defective:missing=RmsNormBackward", 2)) {
            ParityReport r = parity(cpu, bad);
            System.out.println(r.summary());
            assertNotNull(r.stopped());
            OpDiff d = r.firstDivergence().orElseThrow();
            assertEquals("RmsNormBackward", d.op());
            assertTrue(d.problem().startsWith("unsupported by defective"), d.problem());
        }
    }

    @Test
    void hangIsNamed() {
        try (Backend cpu = Backends.create("cpu", 2); Backend bad = Backends.create("defective:hang=SwiGlu", 2)) {
            ParityReport r = Parity.run(cpu, bad, new Parity.Config(TINY, 2, 12, 7, Parity.TOLERANCE, Parity.LOCAL_TOLERANCE, Duration.ofMillis(500)), null);
            System.out.println(r.summary());
            assertNotNull(r.stopped());
            assertTrue(r.stopped().contains("SwiGlu") && r.stopped().contains("hung"), r.stopped());
            assertEquals("SwiGlu", r.firstDivergence().orElseThrow().op());
        }
    }
}
