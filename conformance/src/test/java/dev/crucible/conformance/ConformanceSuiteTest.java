package dev.crucible.conformance;

import dev.crucible.backend.Op;
import dev.crucible.backend.ref.RefBackend;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Predicate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ConformanceSuiteTest {
    private static final long SEED = 0x5EED_2024L;

    private static Report run(ConformanceSuite suite, FaultyBackend.Fault fault) {
        try (FaultyBackend candidate = new FaultyBackend(fault); RefBackend ref = new RefBackend()) {
            return suite.run(candidate, ref, SEED, null);
        }
    }

    /** Every result of the report that matches {@code which} failed, and its reason names {@code reason}. */
    private static void assertAllFail(Report report, Predicate<CaseResult> which, String reason) {
        List<CaseResult> selected = report.results().stream().filter(which).toList();
        assertFalse(selected.isEmpty(), "nothing selected");
        for (CaseResult r : selected) {
            assertTrue(r.failed() && r.reason().contains(reason), "expected a failure naming '" + reason + "': " + r);
        }
    }

    /** Op cases and gradient checks: not the row-invariance checks (which look at the bits of rows only). */
    private static Predicate<CaseResult> caseOrGradient() {
        return r -> r.check() != CaseResult.Check.BITWISE;
    }

    private static Predicate<CaseResult> reference() {
        return r -> r.check() == CaseResult.Check.REFERENCE;
    }

    @Test
    void referenceAgainstItselfPassesEverything() {
        ConformanceSuite suite = new ConformanceSuite();
        try (RefBackend candidate = new RefBackend(); RefBackend ref = new RefBackend()) {
            Report report = suite.run(candidate, ref, SEED, null);
            System.out.println(report);
            assertTrue(report.passed(), report.toString());
            assertTrue(report.unsupported().isEmpty(), report.toString());
            assertEquals(suite.cases().size() + suite.gradChecks().size() + RowInvariance.TYPES.length, report.results().size());
            // The reference's backward ops are the exact derivatives of its forward ops: finite differences agree
            // far more closely than the tolerance, so the tolerance has room for a backend's f32 arithmetic.
            for (CaseResult r : report.results()) {
                if (r.check() == CaseResult.Check.GRADIENT) assertTrue(r.error() < 2e-3, r.toString());
            }
            System.out.println(ConformanceSuite.supportMatrixMarkdown(List.of(report)));
        }
    }

    @Test
    void everyOpHasAnAlignedAndAnOddCase() {
        List<OpCase> cases = Cases.all();
        Set<String> ids = new HashSet<>();
        for (OpCase c : cases) assertTrue(ids.add(c.id()), "duplicate case " + c.id());
        for (Class<?> op : Op.class.getPermittedSubclasses()) {
            String name = op.getSimpleName();
            List<OpCase> mine = cases.stream().filter(c -> c.op().equals(name)).toList();
            assertTrue(mine.size() >= 2, name + " has " + mine.size() + " cases");
            assertTrue(mine.stream().anyMatch(c -> hasOdd(c.shape())), name + " has no odd shape");
        }
        // 16 f32 cases (every transpose/accumulate combination at two shapes), 3 with M past one row tile (one of
        // them a weight gradient's shape over several K blocks), and 3 per weight storage type.
        assertEquals(16 + 3 + 3 * 4, cases.stream().filter(c -> c.op().equals("MatMul")).count());
        for (String t : List.of("F16", "BF16", "Q8_0", "Q4_0")) {
            assertTrue(cases.stream().anyMatch(c -> c.op().equals("Embedding") && c.shape().endsWith("table " + t)), t + " embedding");
        }
    }

    private static boolean hasOdd(String shape) {
        return Arrays.stream(shape.split("[^0-9]+")).filter(s -> !s.isEmpty()).mapToLong(Long::parseLong)
                .anyMatch(v -> v % 2 == 1 && v > 1);
    }

    @Test
    void everyBackwardOpHasAGradientCheck() {
        Set<String> checked = new HashSet<>();
        for (GradCheck g : GradChecks.all()) checked.add(g.op());
        assertTrue(checked.containsAll(Set.of("EmbeddingBackward", "RmsNormBackward", "MatMul", "Rope",
                "AttentionBackward", "SwiGluBackward", "CrossEntropy")), checked.toString());
        assertEquals(2, GradChecks.all().stream().filter(g -> g.op().equals("MatMul")).count());
    }

    @Test
    void inputsArePureFunctionsOfTheSeed() {
        try (RefBackend ref = new RefBackend()) {
            OpCase c = Cases.rmsNormBackward(7, 37);
            Map<String, HostArray> a = c.generate(1, ref), b = c.generate(1, ref), other = c.generate(2, ref);
            for (String name : a.keySet()) assertTrue(a.get(name).sameBits(b.get(name)), name);
            assertFalse(a.get("x").sameBits(other.get("x")));
        }
    }

    @Test
    void perturbedMatMulFailsOnAccuracy() {
        Report report = run(new ConformanceSuite().only("MatMul", "Add"), FaultyBackend.Fault.PERTURB_MATMUL);
        // Q4_0 and Q8_0 weights allow 8-bit activations (Tolerance.QUANTIZED_ACTIVATIONS, NMSE 1e-4), a larger error
        // than this perturbation's 1e-6: those cases pass it; every other matmul case fails.
        Predicate<CaseResult> q4 = r -> r.shape().contains("b Q4_0") || r.shape().contains("b Q8_0");
        assertAllFail(report, reference().and(r -> r.op().equals("MatMul")).and(q4.negate()), "nmse");
        assertFalse(report.results().stream().noneMatch(q4), "no Q4_0 or Q8_0 weight case");
        for (CaseResult r : report.results()) {
            if (q4.test(r) && r.check() == CaseResult.Check.REFERENCE) assertTrue(r.passed(), r.toString());
            if (r.op().equals("MatMul") && r.check() == CaseResult.Check.REFERENCE) {
                assertTrue(r.error() > 1e-7 && r.error() < 1e-5, r.toString()); // (1e-3)² = 1e-6
            }
            if (r.op().equals("Add")) assertTrue(r.passed(), r.toString());
        }
        String matrix = ConformanceSuite.supportMatrixMarkdown(List.of(report));
        assertTrue(matrix.contains("| MatMul | F32 | ✗ |"), matrix);
        assertTrue(matrix.contains("| Add | F32 | ✓ |"), matrix);
    }

    @Test
    void writesOutsideAnOutputAreCaught() {
        Report report = run(new ConformanceSuite().only("Fill", "Add", "MatMul", "Rope", "CrossEntropy", "AdamW",
                "RmsNormBackward"), FaultyBackend.Fault.STRAY_WRITE);
        assertAllFail(report, caseOrGradient(), "wrote outside its output");
    }

    @Test
    void nanNeverPasses() {
        Report report = run(new ConformanceSuite().only("SwiGlu", "RmsNorm", "CrossEntropy", "AttentionBackward",
                "SumSquares"), FaultyBackend.Fault.NAN);
        assertAllFail(report, r -> true, "non-finite");
    }

    @Test
    void nondeterminismIsCaught() {
        Report report = run(new ConformanceSuite().only("MatMul", "SumSquares", "Attention", "AdamW"),
                FaultyBackend.Fault.NONDETERMINISTIC);
        assertAllFail(report, reference(), "nondeterministic");
    }

    @Test
    void modifiedInputsAreCaught() {
        Report report = run(new ConformanceSuite().only("MatMul"), FaultyBackend.Fault.CLOBBER_INPUT);
        assertAllFail(report, caseOrGradient(), "modified its input");
    }

    @Test
    void unwrittenOutputElementsAreCaught() {
        Report report = run(new ConformanceSuite().only("SwiGlu", "Embedding", "Attention", "CrossEntropy"),
                FaultyBackend.Fault.SKIP_LAST);
        assertAllFail(report, reference(), "unwritten");
    }

    @Test
    void unsupportedOpsAreReportedNotFailed() {
        ConformanceSuite suite = new ConformanceSuite().only("Attention", "AttentionBackward", "Add");
        Report faulty = run(suite, FaultyBackend.Fault.NO_ATTENTION);
        assertTrue(faulty.passed(), faulty.toString());
        for (CaseResult r : faulty.results()) {
            boolean attention = r.op().startsWith("Attention");
            assertEquals(attention ? CaseResult.Status.UNSUPPORTED : CaseResult.Status.PASS, r.status(), r.toString());
        }
        Report ref;
        try (RefBackend a = new RefBackend(); RefBackend b = new RefBackend()) {
            ref = suite.run(a, b, SEED, null);
        }
        String matrix = ConformanceSuite.supportMatrixMarkdown(List.of(ref, faulty));
        assertTrue(matrix.startsWith("| op | dtype | ref | faulty-no_attention |"), matrix);
        assertTrue(matrix.contains("| Attention | F32 | ✓ | unsupported |"), matrix);
        assertTrue(matrix.contains("| Add | F32 | ✓ | ✓ |"), matrix);
    }

    @Test
    void sameBitsFindsDifferingBackends() {
        ConformanceSuite suite = new ConformanceSuite().only("MatMul", "Add");
        try (FaultyBackend faulty = new FaultyBackend(FaultyBackend.Fault.PERTURB_MATMUL);
             RefBackend a = new RefBackend(); RefBackend b = new RefBackend()) {
            assertTrue(suite.sameBits(a, b, a, SEED, null).passed());
            Report report = suite.sameBits(faulty, a, a, SEED, null);
            for (CaseResult r : report.results()) {
                assertEquals(r.op().equals("MatMul") ? CaseResult.Status.FAIL : CaseResult.Status.PASS, r.status(),
                        r.toString());
            }
        }
    }

    /**
     * A backend whose matmul rows depend on how many rows share the call, while claiming they do not
     * ({@code invariantMatmulRows()} left at its default), fails the row-invariance checks and nothing else; the
     * same backend claiming one row passes them.
     */
    @Test
    void aFalseRowInvarianceClaimFails() {
        ConformanceSuite suite = new ConformanceSuite().only("MatMul");
        try (FaultyBackend faulty = new FaultyBackend(FaultyBackend.Fault.ROW_DEPENDENT); RefBackend ref = new RefBackend()) {
            Report report = suite.run(faulty, ref, SEED, null);
            List<CaseResult> rows = report.results().stream().filter(r -> r.shape().startsWith("row invariance")).toList();
            assertEquals(RowInvariance.TYPES.length, rows.size());
            for (CaseResult r : rows) {
                assertEquals(CaseResult.Status.FAIL, r.status(), r.toString());
                assertTrue(r.reason().contains("differ"), r.toString());
                assertTrue(r.shape().contains("M=" + RowInvariance.MAX_ROWS), r.toString());
            }
            for (CaseResult r : report.results()) if (!rows.contains(r)) assertTrue(r.passed(), r.toString());
            FaultyBackend honest = new FaultyBackend(FaultyBackend.Fault.ROW_DEPENDENT) {
                @Override public int invariantMatmulRows() { return 1; }
            };
            for (CaseResult r : RowInvariance.run(honest, SEED)) assertTrue(r.passed(), r.toString());
            honest.close();
        }
    }

    @Test
    void nmseAndNonFiniteRules() {
        HostArray zeros = HostArray.f32(0, 0, 0, 0);
        assertEquals(0.25, Compare.nmse(HostArray.f32(1, 0, 0, 0), zeros), 1e-15); // all-zero reference: plain MSE
        assertEquals(0.01, Compare.nmse(HostArray.f32(1.1f, 0), HostArray.f32(1, 0)), 1e-7);
        assertNotEquals(null, Compare.nonFinite(HostArray.f32(Float.NaN, 1), HostArray.f32(0, 1)));
        assertNotEquals(null, Compare.nonFinite(HostArray.f32(Float.POSITIVE_INFINITY), HostArray.f32(Float.NaN)));
        assertNull(Compare.nonFinite(HostArray.f32(Float.NEGATIVE_INFINITY), HostArray.f32(Float.NEGATIVE_INFINITY)));
        assertNull(Compare.firstBitDifference(HostArray.f32(1, 2), HostArray.f32(1, 2)));
        assertNotEquals(null, Compare.firstBitDifference(HostArray.f32(0f), HostArray.f32(-0f)));
    }
}
