package dev.crucible.conformance;

import dev.crucible.backend.Backend;
import dev.crucible.backend.UnsupportedOpException;
import dev.crucible.tensor.DType;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Consumer;

/**
 * Runs every case against a backend under test and a reference (normally {@code RefBackend}), the way llama.cpp's
 * test-backend-ops does for ggml backends. For each {@link OpCase}:
 * <ol>
 *   <li>fresh inputs are drawn from the seed; the reference runs the op;
 *   <li>the backend under test runs it, unless its {@code supports()} declines (reported as unsupported, not failed);
 *   <li>its outputs must be finite where the reference's are, within the case's NMSE tolerance, with the guard
 *       regions around every output untouched, every write-only output element written, every input unchanged;
 *   <li>it runs the case again: the outputs must be bitwise identical (determinism is a feature).
 * </ol>
 * Then every {@link GradCheck} runs the backward ops against finite differences, and (when the suite has MatMul
 * cases) {@link RowInvariance} checks the backend's claim about matmul rows. Every problem found goes into the
 * result's reason; an exception thrown by a backend is a failure of that case, not of the suite.
 */
public final class ConformanceSuite {
    private final List<OpCase> cases;
    private final List<GradCheck> gradChecks;

    /** The full suite: {@link Cases#all()} and {@link GradChecks#all()}. */
    public ConformanceSuite() {
        this(Cases.all(), GradChecks.all());
    }

    public ConformanceSuite(List<OpCase> cases, List<GradCheck> gradChecks) {
        this.cases = List.copyOf(cases);
        this.gradChecks = List.copyOf(gradChecks);
    }

    public List<OpCase> cases() { return cases; }

    public List<GradCheck> gradChecks() { return gradChecks; }

    /** The same suite restricted to some op families (e.g. "MatMul", "Attention"). */
    public ConformanceSuite only(String... ops) {
        Set<String> keep = Set.of(ops);
        return new ConformanceSuite(cases.stream().filter(c -> keep.contains(c.op())).toList(),
                gradChecks.stream().filter(g -> keep.contains(g.op())).toList());
    }

    public Report run(Backend candidate, Backend reference, long seed) {
        return run(candidate, reference, seed, r -> { });
    }

    /**
     * Runs all cases and gradient checks on {@code candidate}, comparing with {@code reference}; {@code progress}
     * (may be null) sees each result as it is made.
     */
    public Report run(Backend candidate, Backend reference, long seed, Consumer<CaseResult> progress) {
        long start = System.nanoTime();
        List<CaseResult> results = new ArrayList<>();
        for (OpCase c : cases) {
            CaseResult r = check(c, candidate, reference, seed);
            results.add(r);
            if (progress != null) progress.accept(r);
        }
        for (GradCheck g : gradChecks) {
            CaseResult r;
            try {
                r = g.run(candidate, reference, seed);
            } catch (RuntimeException e) {
                r = g.result(candidate, Double.NaN, CaseResult.Status.FAIL, "threw " + describe(e));
            }
            results.add(r);
            if (progress != null) progress.accept(r);
        }
        if (cases.stream().anyMatch(c -> c.op().equals("MatMul"))) {
            for (CaseResult r : RowInvariance.run(candidate, seed)) {
                results.add(r);
                if (progress != null) progress.accept(r);
            }
        }
        return new Report(candidate.name(), reference.name(), seed, results, Duration.ofNanos(System.nanoTime() - start));
    }

    /** One case against the reference: accuracy, non-finite values, guards, inputs, determinism. */
    public CaseResult check(OpCase c, Backend candidate, Backend reference, long seed) {
        Map<String, HostArray> inputs;
        Execution expected;
        try {
            inputs = c.generate(seed, reference);
            expected = c.run(reference, inputs);
        } catch (RuntimeException e) {
            return result(c, candidate, Double.NaN, CaseResult.Status.FAIL, "the reference failed: " + describe(e));
        }
        if (!expected.supported()) {
            return result(c, candidate, Double.NaN, CaseResult.Status.UNSUPPORTED, "the reference does not support it");
        }
        if (!expected.problems().isEmpty()) {
            return result(c, candidate, Double.NaN, CaseResult.Status.FAIL,
                    "the reference: " + String.join("; ", expected.problems()));
        }

        Execution first;
        try {
            first = c.run(candidate, inputs);
        } catch (UnsupportedOpException e) {
            return result(c, candidate, Double.NaN, CaseResult.Status.FAIL,
                    "supports() is true but run threw " + describe(e));
        } catch (RuntimeException e) {
            return result(c, candidate, Double.NaN, CaseResult.Status.FAIL, "threw " + describe(e));
        }
        if (!first.supported()) {
            return result(c, candidate, Double.NaN, CaseResult.Status.UNSUPPORTED, "supports() is false");
        }

        List<String> reasons = new ArrayList<>(first.problems());
        double worst = 0;
        String worstName = "";
        for (int i = 0; i < expected.outputs().size(); i++) {
            String name = expected.names().get(i);
            HostArray want = expected.outputs().get(i), got = first.outputs().get(i);
            String nf = Compare.nonFinite(got, want);
            if (nf != null) reasons.add("'" + name + "': " + nf);
            double e = nf != null ? Double.POSITIVE_INFINITY : Compare.nmse(got, want);
            if (e > worst || i == 0) {
                worst = e;
                worstName = name;
            }
        }
        if (worst > c.tolerance() && worst != Double.POSITIVE_INFINITY) {
            reasons.add(String.format("nmse %.3g > %.1g in '%s'", worst, c.tolerance(), worstName));
        }

        try {
            Execution second = c.run(candidate, inputs);
            for (int i = 0; i < first.outputs().size(); i++) {
                String diff = Compare.firstBitDifference(first.outputs().get(i), second.outputs().get(i));
                if (diff != null) reasons.add("nondeterministic: '" + first.names().get(i) + "' " + diff);
            }
        } catch (RuntimeException e) {
            reasons.add("second run threw " + describe(e));
        }
        return result(c, candidate, worst, reasons.isEmpty() ? CaseResult.Status.PASS : CaseResult.Status.FAIL,
                String.join("; ", reasons));
    }

    /**
     * Runs every case on two backends that must agree bit for bit, typically one backend at two thread counts
     * (DESIGN §4: the same bits on any number of threads). {@code reference} only generates inputs. A case either
     * backend declines is reported unsupported.
     */
    public Report sameBits(Backend candidate, Backend other, Backend reference, long seed,
                           Consumer<CaseResult> progress) {
        long start = System.nanoTime();
        List<CaseResult> results = new ArrayList<>();
        for (OpCase c : cases) {
            CaseResult r;
            try {
                Map<String, HostArray> inputs = c.generate(seed, reference);
                Execution a = c.run(candidate, inputs), b = c.run(other, inputs);
                if (!a.supported() || !b.supported()) {
                    r = bitwise(c, candidate, Double.NaN, CaseResult.Status.UNSUPPORTED,
                            (a.supported() ? other : candidate).name() + " does not support it");
                } else {
                    List<String> reasons = new ArrayList<>(a.problems());
                    reasons.addAll(b.problems());
                    long diffs = 0;
                    for (int i = 0; i < a.outputs().size(); i++) {
                        HostArray x = a.outputs().get(i), y = b.outputs().get(i);
                        String diff = Compare.firstBitDifference(x, y);
                        if (diff == null) continue;
                        for (int j = 0; j < Math.min(x.length(), y.length()); j++) if (x.bits(j) != y.bits(j)) diffs++;
                        reasons.add("'" + a.names().get(i) + "' differs from " + other.name() + ": " + diff);
                    }
                    r = bitwise(c, candidate, diffs, reasons.isEmpty() ? CaseResult.Status.PASS
                            : CaseResult.Status.FAIL, String.join("; ", reasons));
                }
            } catch (RuntimeException e) {
                r = bitwise(c, candidate, Double.NaN, CaseResult.Status.FAIL, "threw " + describe(e));
            }
            results.add(r);
            if (progress != null) progress.accept(r);
        }
        return new Report(candidate.name(), other.name(), seed, results, Duration.ofNanos(System.nanoTime() - start));
    }

    private static CaseResult bitwise(OpCase c, Backend candidate, double diffs, CaseResult.Status status,
                                      String reason) {
        return new CaseResult(candidate.name(), c.op(), c.shape(), c.dtype(), CaseResult.Check.BITWISE, diffs, 0,
                status, reason);
    }

    private static CaseResult result(OpCase c, Backend candidate, double error, CaseResult.Status status,
                                     String reason) {
        return new CaseResult(candidate.name(), c.op(), c.shape(), c.dtype(), CaseResult.Check.REFERENCE, error,
                c.tolerance(), status, reason);
    }

    private static String describe(Throwable e) {
        return e.getClass().getSimpleName() + (e.getMessage() == null ? "" : ": " + e.getMessage());
    }

    /**
     * The support matrix as a Markdown table: one row per (op, dtype) in the order the suite runs them, one column
     * per report's backend. A cell is ✓ (every case and gradient check passed), ✗ (something failed), unsupported
     * (the backend declined every case through supports()), partial (some passed, the rest were declined), or –
     * (no case of that op and dtype ran).
     */
    public static String supportMatrixMarkdown(List<Report> reports) {
        Set<String> rows = new LinkedHashSet<>();
        for (Report r : reports) {
            for (CaseResult c : r.results()) rows.add(c.op() + "\u0000" + c.dtype());
        }
        StringBuilder sb = new StringBuilder("| op | dtype |");
        for (Report r : reports) sb.append(' ').append(r.backend()).append(" |");
        sb.append("\n|---|---|");
        sb.append("---|".repeat(reports.size())).append('\n');
        for (String row : rows) {
            String[] parts = row.split("\u0000");
            sb.append("| ").append(parts[0]).append(" | ").append(parts[1]).append(" |");
            for (Report r : reports) sb.append(' ').append(cell(r, parts[0], DType.valueOf(parts[1]))).append(" |");
            sb.append('\n');
        }
        return sb.toString();
    }

    private static String cell(Report r, String op, DType dtype) {
        int pass = 0, fail = 0, unsupported = 0;
        for (CaseResult c : r.results()) {
            if (!c.op().equals(op) || c.dtype() != dtype) continue;
            switch (c.status()) {
                case PASS -> pass++;
                case FAIL -> fail++;
                case UNSUPPORTED -> unsupported++;
            }
        }
        if (fail > 0) return "✗";
        if (pass > 0 && unsupported > 0) return "partial";
        if (pass > 0) return "✓";
        if (unsupported > 0) return "unsupported";
        return "–";
    }
}
