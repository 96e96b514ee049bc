package dev.crucible.qualify;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import dev.crucible.backend.ref.RefBackend;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Qualification: the healthy CPU backend can train; each simulated defect is caught and named. */
class QualifyTest {
    static QualifyReport qualify(String backend, Duration timeout, TrainingCheck.Config training, String... ops) {
        try (Backend b = Backends.create(backend, 2); Backend ref = new RefBackend()) {
            QualifyReport r = Qualification.run(b, ref, new Qualification.Config(1234, timeout, List.of(ops), training), null);
            System.out.println(r.toText());
            return r;
        }
    }

    static QualifyReport.OpVerdict op(QualifyReport r, String op) {
        return r.ops().stream().filter(o -> o.op().equals(op)).findFirst().orElseThrow();
    }

    static void named(QualifyReport r, String... words) {
        String text = r.toText();
        for (String w : words) assertTrue(text.contains(w), "expected '" + w + "' in:\n" + text);
    }

    @Test
    void healthyCpuCanTrain() {
        QualifyReport r = qualify("cpu", Duration.ofSeconds(30), TrainingCheck.Config.tiny(25));
        assertEquals(Verdict.CAN_TRAIN, r.verdict(), r.toText());
        assertNotNull(r.training());
        assertTrue(r.training().passed());
        assertTrue(r.toMarkdown().contains("| MatMul | F32 | ✓ |"), r.toMarkdown());
        assertTrue(r.toJson().contains("\"verdict\" : \"CAN_TRAIN\""));
    }

    @Test
    void reducedMantissaMatMulIsCaught() {
        QualifyReport r = qualify("defective:matmul-mantissa=12", Duration.ofSeconds(30), null, "MatMul");
        assertEquals(QualifyReport.OpStatus.FAIL, op(r, "MatMul").status());
        assertEquals(Verdict.CANNOT, r.verdict());
        named(r, "MatMul", "nmse");
    }

    @Test
    void nondeterministicReductionsAreCaught() {
        QualifyReport r = qualify("defective:reduce-order", Duration.ofSeconds(30), null, "MatMul", "SumSquares");
        assertEquals(QualifyReport.OpStatus.FAIL, op(r, "SumSquares").status());
        assertEquals(QualifyReport.OpStatus.FAIL, op(r, "MatMul").status());
        assertTrue(op(r, "SumSquares").problem().contains("nondeterministic"), op(r, "SumSquares").problem());
        assertTrue(op(r, "MatMul").problem().contains("nondeterministic"), op(r, "MatMul").problem());
    }

    @Test
    void bitFlipsAreCaught() {
        QualifyReport r = qualify("defective:bitflip=Add@1e-3", Duration.ofSeconds(30), null, "Add", "SwiGlu");
        assertEquals(QualifyReport.OpStatus.FAIL, op(r, "Add").status());
        assertEquals(QualifyReport.OpStatus.PASS, op(r, "SwiGlu").status());
        named(r, "Add");
    }

    @Test
    void nanOnRareInputsIsCaught() {
        QualifyReport r = qualify("defective:nan-on=RmsNorm@10", Duration.ofSeconds(30), null, "RmsNorm");
        assertEquals(QualifyReport.OpStatus.FAIL, op(r, "RmsNorm").status());
        assertTrue(op(r, "RmsNorm").problem().contains("non-finite"), op(r, "RmsNorm").problem());
    }

    @Test
    void missingBackwardOpMeansServeOnly() {
        QualifyReport r = qualify("defective:missing=AttentionBackward", Duration.ofSeconds(30),
                TrainingCheck.Config.tiny(3), "Attention", "AttentionBackward");
        assertEquals(QualifyReport.OpStatus.UNSUPPORTED, op(r, "AttentionBackward").status());
        assertEquals(QualifyReport.OpStatus.PASS, op(r, "Attention").status());
        assertEquals(Verdict.CAN_SERVE, r.verdict());
        assertTrue(r.trainingNote().contains("AttentionBackward"), r.trainingNote());
        named(r, "AttentionBackward unsupported");
    }

    @Test
    void hangIsTimedOutAndNamed() {
        long t0 = System.nanoTime();
        QualifyReport r = qualify("defective:hang=SwiGlu", Duration.ofMillis(500), TrainingCheck.Config.tiny(3),
                "SwiGlu", "Add");
        assertTrue(System.nanoTime() - t0 < 20e9, "a hang must not block qualification");
        assertEquals(QualifyReport.OpStatus.HUNG, op(r, "SwiGlu").status());
        assertEquals(QualifyReport.OpStatus.PASS, op(r, "Add").status());
        assertEquals(Verdict.CANNOT, r.verdict());
        named(r, "SwiGlu", "HUNG", "did not return within 0.5 s");
    }

    @Test
    void defectSpecsAreParsedAndChecked() {
        Defects d = Defects.parse("matmul-mantissa=10, reduce-order, bitflip=matmul@1e-4, nan-on=Add@12, missing=Rope, hang=SwiGlu, seed=3");
        assertEquals(10, d.matmulMantissa());
        assertEquals("MatMul", d.bitflipOp());
        assertEquals(List.of("matmul-mantissa=10", "reduce-order", "bitflip=MatMul@1.0E-4", "nan-on=Add@12",
                "missing=Rope", "hang=SwiGlu"), d.names());
        assertTrue(Defects.parse("").none());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Defects.parse("warp-drive"));
        assertTrue(e.getMessage().contains("warp-drive") && e.getMessage().contains("matmul-mantissa"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Defects.parse("missing=Conv2d"));
        assertThrows(IllegalArgumentException.class, () -> Backends.create("cpu:fast", 1));
    }

    @Test
    void mantissaRounding() {
        assertEquals(1f, DefectiveBackend.roundMantissa(1f + 0x1p-12f, 10));
        assertEquals(1f + 0x1p-10f, DefectiveBackend.roundMantissa(1f + 0x1p-10f + 0x1p-12f, 10));
        assertEquals(1f + 0x1p-9f, DefectiveBackend.roundMantissa(1f + 0x1p-10f + 0x1p-11f, 10)); // tie to even
        assertEquals(-2f, DefectiveBackend.roundMantissa(-1.9999999f, 10));
        assertTrue(Float.isNaN(DefectiveBackend.roundMantissa(Float.NaN, 10)));
    }
}
