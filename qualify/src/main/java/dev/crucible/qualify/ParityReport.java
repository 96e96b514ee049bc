package dev.crucible.qualify;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * What {@link Parity} found: every op output of the step on both backends, free-running and in lockstep, and the
 * per-layer gradient divergence.
 *
 * @param a        the first backend (the one trusted, usually the reference)
 * @param b        the backend compared with it
 * @param config   the step that was run
 * @param free     free-running diffs, in op order (one per op output)
 * @param lockstep lockstep diffs (empty when the free pass stopped)
 * @param grads    each parameter's gradient, b against a, after the backward pass of the free-running step
 * @param stopped  why the step could not complete on both (an unsupported op, a hang), or null
 * @param elapsed  wall time
 */
public record ParityReport(String a, String b, Parity.Config config, List<OpDiff> free, List<OpDiff> lockstep,
                           List<GradDiff> grads, String stopped, Duration elapsed) {

    /** One parameter's gradient: relative L2 difference ‖g_b − g_a‖ / ‖g_a‖, +Inf with non-finite values. */
    public record GradDiff(String layer, String tensor, String name, double norm, double relL2, double maxAbs,
                           long nonFinite) {
        /**
         * Candidate gradient {@code b} against reference {@code a} for parameter {@code name}: relative L2 difference
         * (absolute when the reference is zero; infinite when any element is non-finite), max |difference|, and
         * the count of non-finite elements.
         */
        public static GradDiff of(String name, float[] a, float[] b) {
            double diff = 0, ref = 0, maxAbs = 0;
            long nonFinite = 0;
            for (int i = 0; i < a.length; i++) {
                if (!Float.isFinite(b[i]) || !Float.isFinite(a[i])) {
                    nonFinite++;
                    continue;
                }
                double d = (double) b[i] - a[i];
                diff += d * d;
                ref += (double) a[i] * a[i];
                maxAbs = Math.max(maxAbs, Math.abs(d));
            }
            double rel = nonFinite > 0 ? Double.POSITIVE_INFINITY : ref == 0 ? Math.sqrt(diff) : Math.sqrt(diff / ref);
            return new GradDiff(StepLabels.layerOf(name), StepLabels.shortName(name), name, Math.sqrt(ref), rel, maxAbs, nonFinite);
        }
    }

    /** The columns of the per-layer table, in the order of a layer's parameters. */
    static final List<String> LAYER_TENSORS = List.of("input_layernorm", "q_proj", "k_proj", "v_proj", "o_proj",
            "post_attention_layernorm", "gate_proj", "up_proj", "down_proj");

    public double tolerance() { return config.tolerance(); }

    /** The first output of the free-running step that diverges. */
    public Optional<OpDiff> firstDivergence() {
        return free.stream().filter(d -> d.diverges(tolerance())).findFirst();
    }

    /** The first op whose own error, on identical inputs, exceeds the tolerance: the op at fault. */
    public Optional<OpDiff> firstAtFault() {
        return lockstep.stream().filter(d -> d.diverges(config.localTolerance())).findFirst();
    }

    /** The first output whose bits differ at all (free-running). */
    public Optional<OpDiff> firstBitDifference() {
        return free.stream().filter(d -> d.bitDiffs() > 0 || !d.problem().isEmpty()).findFirst();
    }

    public boolean passed() {
        return stopped == null && firstDivergence().isEmpty() && firstAtFault().isEmpty();
    }

    private Optional<OpDiff> local(OpDiff d) {
        return lockstep.stream().filter(l -> l.index() == d.index() && l.tensor().equals(d.tensor())).findFirst();
    }

    /** The verdict in a few lines: where the step first diverges and which op is at fault. */
    public String summary() {
        StringBuilder sb = new StringBuilder();
        sb.append(String.format("parity: %s (a) vs %s (b): one training step, %s, batch %d×%d, seed %d, tolerance nmse "
                        + "%.0e (local %.0e)%n", a, b, modelLabel(), config.batch(), config.seq(), config.seed(), tolerance(),
                config.localTolerance()));
        if (stopped != null) sb.append("STOPPED: ").append(stopped).append('\n');
        Optional<OpDiff> first = firstDivergence(), fault = firstAtFault();
        if (first.isEmpty() && fault.isEmpty() && stopped == null) {
            sb.append("PASS: every op output within tolerance");
            firstBitDifference().ifPresentOrElse(
                    d -> sb.append(String.format(" (first bit difference: %s, %d element(s))%n", d.where(), d.bitDiffs())),
                    () -> sb.append(" (bit-identical)\n"));
            return sb.toString();
        }
        first.ifPresent(d -> {
            sb.append("FIRST DIVERGENCE: ").append(d.where()).append(": ").append(describe(d, tolerance()));
            local(d).ifPresent(l -> sb.append(l.diverges(config.localTolerance())
                    ? String.format(" — on identical inputs nmse %.3g: this op is at fault", l.nmse())
                    : String.format(" — on identical inputs nmse %.3g, within %.0e: error built up in earlier ops",
                    l.nmse(), config.localTolerance())));
            sb.append('\n');
        });
        fault.ifPresent(d -> sb.append("FIRST OP AT FAULT (identical inputs): ").append(d.where()).append(": ")
                .append(describe(d, config.localTolerance())).append('\n'));
        return sb.toString();
    }

    private static String describe(OpDiff d, double tolerance) {
        if (!d.problem().isEmpty()) return d.problem();
        List<String> p = new ArrayList<>();
        if (d.nonFiniteB() > d.nonFiniteA()) p.add(d.nonFiniteB() + " non-finite value(s) (a has " + d.nonFiniteA() + ")");
        if (d.nmse() > tolerance) p.add(String.format("nmse %.3g > %.0e", d.nmse(), tolerance));
        if (p.isEmpty()) p.add(String.format("nmse %.3g", d.nmse()));
        return String.join(", ", p);
    }

    private String modelLabel() {
        var m = config.model();
        return String.format("model vocab=%d dim=%d layers=%d heads=%d kv=%d ffn=%d", m.vocab(), m.dim(), m.layers(),
                m.heads(), m.kvHeads(), m.ffn());
    }

    /** The summary, the per-op table along the step, per-phase maxima and the per-layer gradient table. */
    public String toText() {
        StringBuilder sb = new StringBuilder(summary()).append('\n');
        sb.append("per op along the step (nmse: free-running; local: same op on identical inputs; ! over tolerance)\n");
        sb.append(String.format("%5s %-9s %-8s %-15s %-26s %-28s %10s %10s %10s %8s %s%n", "#", "phase", "layer", "op",
                "what", "tensor", "nmse", "local", "max|Δ|", "bits≠", "non-finite a/b"));
        for (OpDiff d : free) {
            Optional<OpDiff> l = local(d);
            String mark = d.diverges(tolerance()) || l.map(x -> x.diverges(config.localTolerance())).orElse(false) ? "!" : " ";
            sb.append(String.format("%s%4d %-9s %-8s %-15s %-26s %-28s %10s %10s %10s %8d %d/%d%s%n", mark, d.index(),
                    d.phase(), d.layer(), d.op(), cut(d.what(), 26), cut(d.tensor(), 28), num(d.nmse()),
                    l.map(x -> num(x.nmse())).orElse("-"), num(d.maxAbs()), d.bitDiffs(), d.nonFiniteA(),
                    d.nonFiniteB(), d.problem().isEmpty() ? "" : "  " + d.problem()));
        }
        sb.append('\n').append("max nmse per phase (free-running / local):\n");
        for (String phase : List.of("forward", "backward", "optimizer")) {
            sb.append(String.format("  %-9s %10s / %10s%n", phase, num(maxNmse(free, phase)), num(maxNmse(lockstep, phase))));
        }
        if (!grads.isEmpty()) sb.append('\n').append(gradTable());
        sb.append(String.format("%nelapsed %.1f s%n", elapsed.toMillis() / 1000.0));
        return sb.toString();
    }

    private static double maxNmse(List<OpDiff> diffs, String phase) {
        double m = Double.NaN;
        for (OpDiff d : diffs) {
            if (!d.phase().equals(phase)) continue;
            double v = d.nonFiniteB() > d.nonFiniteA() ? Double.POSITIVE_INFINITY : d.nmse();
            if (Double.isNaN(m) || v > m) m = v;
        }
        return m;
    }

    /** Relative L2 gradient differences, one row per layer (the measurement of "first-layer gradients off"). */
    public String gradTable() {
        StringBuilder sb = new StringBuilder("gradient divergence by layer: ‖g_b − g_a‖ / ‖g_a‖\n");
        sb.append(String.format("%-9s", "layer"));
        for (String t : LAYER_TENSORS) sb.append(String.format(" %10s", abbreviate(t)));
        sb.append(String.format(" %10s%n", "worst"));
        Map<String, List<GradDiff>> byLayer = byLayer();
        for (Map.Entry<String, List<GradDiff>> e : byLayer.entrySet()) {
            if (!e.getKey().startsWith("layer ")) continue;
            sb.append(String.format("%-9s", e.getKey()));
            for (String t : LAYER_TENSORS) {
                sb.append(String.format(" %10s", e.getValue().stream().filter(g -> g.tensor().equals(t)).findFirst()
                        .map(g -> num(g.relL2())).orElse("-")));
            }
            sb.append(String.format(" %10s%n", num(worst(e.getValue()))));
        }
        for (Map.Entry<String, List<GradDiff>> e : byLayer.entrySet()) {
            if (e.getKey().startsWith("layer ")) continue;
            sb.append(String.format("%-9s", e.getKey()));
            for (GradDiff g : e.getValue()) sb.append(' ').append(g.tensor()).append(' ').append(num(g.relL2()));
            sb.append('\n');
        }
        return sb.toString();
    }

    private Map<String, List<GradDiff>> byLayer() {
        Map<String, List<GradDiff>> m = new LinkedHashMap<>();
        for (GradDiff g : grads) m.computeIfAbsent(g.layer(), k -> new ArrayList<>()).add(g);
        return m;
    }

    private static double worst(List<GradDiff> gs) {
        return gs.stream().mapToDouble(GradDiff::relL2).max().orElse(Double.NaN);
    }

    private static String abbreviate(String t) {
        return switch (t) {
            case "input_layernorm" -> "attn_norm";
            case "post_attention_layernorm" -> "mlp_norm";
            default -> t;
        };
    }

    static String num(double v) {
        if (Double.isNaN(v)) return "-";
        if (Double.isInfinite(v)) return "inf";
        if (v == 0) return "0";
        return String.format("%.2e", v);
    }

    private static String cut(String s, int n) {
        return s.length() <= n ? s : s.substring(0, n - 1) + "…";
    }

    /** Everything as JSON (numbers that are NaN or infinite become strings). */
    public String toJson() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("a", a);
        m.put("b", b);
        var c = config.model();
        m.put("model", Map.of("vocab", c.vocab(), "dim", c.dim(), "layers", c.layers(), "heads", c.heads(),
                "kv_heads", c.kvHeads(), "ffn", c.ffn(), "context", c.context(), "tied", c.tied()));
        m.put("batch", config.batch());
        m.put("seq_len", config.seq());
        m.put("seed", config.seed());
        m.put("tolerance", tolerance());
        m.put("local_tolerance", config.localTolerance());
        m.put("passed", passed());
        m.put("stopped", stopped);
        m.put("first_divergence", firstDivergence().map(ParityReport::json).orElse(null));
        m.put("first_at_fault", firstAtFault().map(ParityReport::json).orElse(null));
        m.put("first_bit_difference", firstBitDifference().map(ParityReport::json).orElse(null));
        m.put("ops", free.stream().map(d -> {
            Map<String, Object> j = json(d);
            local(d).ifPresent(l -> j.put("local_nmse", jnum(l.nmse())));
            return j;
        }).toList());
        List<Map<String, Object>> g = new ArrayList<>();
        for (GradDiff x : grads) {
            Map<String, Object> j = new LinkedHashMap<>();
            j.put("layer", x.layer());
            j.put("tensor", x.name());
            j.put("norm", jnum(x.norm()));
            j.put("rel_l2", jnum(x.relL2()));
            j.put("max_abs", jnum(x.maxAbs()));
            j.put("non_finite", x.nonFinite());
            g.add(j);
        }
        m.put("gradients", g);
        m.put("elapsed_s", elapsed.toMillis() / 1000.0);
        try {
            return new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValueAsString(m);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    static Map<String, Object> json(OpDiff d) {
        Map<String, Object> j = new LinkedHashMap<>();
        j.put("index", d.index());
        j.put("phase", d.phase());
        j.put("layer", d.layer());
        j.put("op", d.op());
        j.put("what", d.what());
        j.put("tensor", d.tensor());
        j.put("elements", d.elements());
        j.put("nmse", jnum(d.nmse()));
        j.put("max_abs", jnum(d.maxAbs()));
        j.put("bit_diffs", d.bitDiffs());
        j.put("non_finite_a", d.nonFiniteA());
        j.put("non_finite_b", d.nonFiniteB());
        if (!d.problem().isEmpty()) j.put("problem", d.problem());
        return j;
    }

    static Object jnum(double v) {
        return Double.isFinite(v) ? (Object) v : Double.isNaN(v) ? null : (v > 0 ? "Infinity" : "-Infinity");
    }
}
