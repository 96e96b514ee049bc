package dev.crucible.qualify;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import dev.crucible.conformance.CaseResult;
import dev.crucible.conformance.ConformanceSuite;
import dev.crucible.conformance.Report;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * What {@link Qualification} concluded: the conformance report, a verdict per op, the training run, and the overall
 * {@link Verdict} with the reasons it is not better.
 */
public record QualifyReport(String backend, String reference, Qualification.Config config, Report conformance,
                            List<OpVerdict> ops, TrainingCheck.Result training, String trainingNote, Verdict verdict,
                            List<String> reasons, Duration elapsed) {

    public enum OpStatus {
        PASS("pass"), PARTIAL("partial"), FAIL("FAIL"), UNSUPPORTED("unsupported"), HUNG("HUNG"), NOT_TESTED("not tested");

        private final String label;

        OpStatus(String label) {
            this.label = label;
        }

        public String label() { return label; }

        /** Whether the op can be relied on (partial: some dtype variants declined, every one run passed). */
        public boolean ok() { return this == PASS || this == PARTIAL || this == NOT_TESTED; }
    }

    /**
     * One op family's verdict over its cases and gradient checks.
     *
     * @param serving whether inference needs it (else only training)
     * @param problem the first failure's reason (with the case's shape), or empty
     */
    public record OpVerdict(String op, boolean serving, OpStatus status, int passed, int failed, int unsupported,
                            double worstError, String problem) {}

    static List<OpVerdict> opVerdicts(Report r, Set<String> hung) {
        List<OpVerdict> out = new ArrayList<>();
        for (String op : OpIO.ALL) {
            int pass = 0, fail = 0, unsup = 0;
            double worst = Double.NaN;
            String problem = "";
            for (CaseResult c : r.results()) {
                if (!c.op().equals(op)) continue;
                switch (c.status()) {
                    case PASS -> pass++;
                    case FAIL -> fail++;
                    case UNSUPPORTED -> unsup++;
                }
                if (c.check() == CaseResult.Check.REFERENCE && !Double.isNaN(c.error()) && (Double.isNaN(worst) || c.error() > worst)) {
                    worst = c.error();
                }
                if (c.failed() && problem.isEmpty()) problem = c.reason() + " [" + c.shape() + "]";
            }
            OpStatus s = hung.contains(op) ? OpStatus.HUNG : fail > 0 ? OpStatus.FAIL
                    : pass == 0 && unsup > 0 ? OpStatus.UNSUPPORTED : pass > 0 && unsup > 0 ? OpStatus.PARTIAL
                    : pass > 0 ? OpStatus.PASS : OpStatus.NOT_TESTED;
            if (s == OpStatus.UNSUPPORTED) problem = "supports() is false";
            out.add(new OpVerdict(op, OpIO.serving(op), s, pass, fail, unsup, worst, problem));
        }
        return out;
    }

    static QualifyReport of(String backend, String reference, Qualification.Config cfg, Report conformance,
                            List<OpVerdict> ops, TrainingCheck.Result training, String trainingNote, Duration elapsed) {
        List<String> reasons = new ArrayList<>();
        boolean serve = true, train = true;
        for (OpVerdict o : ops) {
            if (o.status().ok()) continue;
            if (o.serving()) serve = false;
            train = false;
            reasons.add(o.op() + " " + o.status().label() + " (needed to " + (o.serving() ? "serve" : "train") + ")"
                    + (o.problem().isEmpty() ? "" : ": " + o.problem()));
        }
        if (training != null && !training.passed()) {
            train = false;
            reasons.add("training run: " + String.join("; ", training.problems()));
        } else if (training == null && trainingNote != null && trainingNote.startsWith("failed")) {
            train = false;
            reasons.add("training run " + trainingNote);
        }
        Verdict v = !serve ? Verdict.CANNOT : !train ? Verdict.CAN_SERVE : Verdict.CAN_TRAIN;
        return new QualifyReport(backend, reference, cfg, conformance, ops, training, trainingNote, v,
                List.copyOf(reasons), elapsed);
    }

    /** Whether the verdict is at least {@code required}. */
    public boolean meets(Verdict required) {
        return verdict.ordinal() <= required.ordinal();
    }

    /** Per-op table, training run, verdict: what a person reads. */
    public String toText() {
        StringBuilder sb = new StringBuilder();
        sb.append("qualify ").append(backend).append(" against ").append(reference).append(" (seed ")
                .append(config.seed()).append(", op timeout ").append(Watchdog.seconds(config.opTimeout())).append(")\n");
        sb.append("conformance: ").append(conformance.summary()).append('\n');
        sb.append(String.format("%-18s %-8s %-12s %-7s %-9s %s%n", "op", "needed", "verdict", "cases", "worst", "first problem"));
        for (OpVerdict o : ops) {
            if (o.status() == OpStatus.NOT_TESTED) continue;
            sb.append(String.format("%-18s %-8s %-12s %-7s %-9s %s%n", o.op(), o.serving() ? "serve" : "train",
                    o.status().label(), o.passed() + "/" + (o.passed() + o.failed() + o.unsupported()),
                    ParityReport.num(o.worstError()), cut(o.problem(), 160)));
        }
        sb.append(trainingLine()).append('\n');
        sb.append("VERDICT: ").append(verdict);
        if (!reasons.isEmpty()) {
            sb.append('\n');
            for (String r : reasons) sb.append("  - ").append(cut(r, 240)).append('\n');
        } else {
            sb.append('\n');
        }
        if (!config.ops().isEmpty()) sb.append("(only ").append(String.join(", ", config.ops())).append(" checked)\n");
        return sb.toString();
    }

    String trainingLine() {
        if (training == null) return "training run: " + (trainingNote == null ? "not run" : trainingNote);
        TrainingCheck.Result t = training;
        String curve = t.losses().isEmpty() ? "" : String.format("loss %.4f → %.4f (reference %.4f → %.4f)",
                t.losses().getFirst(), t.losses().getLast(), t.refLosses().getFirst(), t.refLosses().getLast());
        return String.format("training run (%d steps): %s — %s; loss diff max %.2e rel (step %d); step-1 grads %s, "
                        + "final grads %s (relative L2, worst tensor)", t.losses().size(), t.passed() ? "PASS" : "FAIL",
                curve, t.maxLossRel(), t.maxLossStep(), ParityReport.num(TrainingCheck.Result.worst(t.firstGrads())),
                ParityReport.num(TrainingCheck.Result.worst(t.finalGrads())));
    }

    /** The support matrix (op × dtype × backend) and the per-op verdicts, for docs. */
    public String toMarkdown() {
        StringBuilder sb = new StringBuilder("# Qualification of `").append(backend).append("`\n\n");
        sb.append("Against `").append(reference).append("`, seed ").append(config.seed()).append(". **Verdict: ")
                .append(verdict).append("**\n\n");
        for (String r : reasons) sb.append("- ").append(r.replace("|", "\\|")).append('\n');
        if (!reasons.isEmpty()) sb.append('\n');
        sb.append("## Support matrix\n\n").append(ConformanceSuite.supportMatrixMarkdown(List.of(conformance)));
        sb.append("\n## Ops\n\n| op | needed to | verdict | cases passed | worst NMSE |\n|---|---|---|---|---|\n");
        for (OpVerdict o : ops) {
            if (o.status() == OpStatus.NOT_TESTED) continue;
            sb.append("| ").append(o.op()).append(" | ").append(o.serving() ? "serve" : "train").append(" | ")
                    .append(o.status().label()).append(" | ").append(o.passed()).append('/')
                    .append(o.passed() + o.failed() + o.unsupported()).append(" | ").append(ParityReport.num(o.worstError()))
                    .append(" |\n");
        }
        sb.append("\n## Training run\n\n").append(trainingLine().replace("|", "\\|")).append('\n');
        return sb.toString();
    }

    public String toJson() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("backend", backend);
        m.put("reference", reference);
        m.put("seed", config.seed());
        m.put("op_timeout_s", config.opTimeout().toMillis() / 1000.0);
        m.put("verdict", verdict.name());
        m.put("reasons", reasons);
        List<Map<String, Object>> o = new ArrayList<>();
        for (OpVerdict v : ops) {
            Map<String, Object> j = new LinkedHashMap<>();
            j.put("op", v.op());
            j.put("needed_to", v.serving() ? "serve" : "train");
            j.put("status", v.status().name());
            j.put("passed", v.passed());
            j.put("failed", v.failed());
            j.put("unsupported", v.unsupported());
            j.put("worst_nmse", ParityReport.jnum(v.worstError()));
            j.put("problem", v.problem());
            o.add(j);
        }
        m.put("ops", o);
        List<Map<String, Object>> cases = new ArrayList<>();
        for (CaseResult c : conformance.results()) {
            Map<String, Object> j = new LinkedHashMap<>();
            j.put("op", c.op());
            j.put("shape", c.shape());
            j.put("dtype", c.dtype().name());
            j.put("check", c.check().name());
            j.put("status", c.status().name());
            j.put("error", ParityReport.jnum(c.error()));
            j.put("tolerance", c.tolerance());
            j.put("reason", c.reason());
            cases.add(j);
        }
        m.put("cases", cases);
        Map<String, Object> t = new LinkedHashMap<>();
        if (training != null) {
            t.put("passed", training.passed());
            t.put("steps", training.losses().size());
            t.put("losses", training.losses().stream().map(ParityReport::jnum).toList());
            t.put("reference_losses", training.refLosses().stream().map(ParityReport::jnum).toList());
            t.put("max_loss_rel", ParityReport.jnum(training.maxLossRel()));
            t.put("first_grad_rel_l2", grads(training.firstGrads()));
            t.put("final_grad_rel_l2", grads(training.finalGrads()));
            t.put("problems", training.problems());
        } else {
            t.put("note", trainingNote);
        }
        m.put("training", t);
        m.put("elapsed_s", elapsed.toMillis() / 1000.0);
        try {
            return new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValueAsString(m);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    private static Map<String, Object> grads(List<ParityReport.GradDiff> g) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (ParityReport.GradDiff d : g) m.put(d.name(), ParityReport.jnum(d.relL2()));
        return m;
    }

    private static String cut(String s, int n) {
        return s.length() <= n ? s : s.substring(0, n - 1) + "…";
    }
}
