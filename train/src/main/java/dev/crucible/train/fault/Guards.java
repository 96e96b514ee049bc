package dev.crucible.train.fault;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Per-step health checks: non-finite loss or gradient norm, and spikes of either against a running window (a
 * z-score over the last {@code window} accepted steps, as llm.c's outlier detector). Only upward spikes count: the
 * loss falling fast is not a fault. The window is part of the checkpoint, so a resumed run decides exactly as an
 * uninterrupted one would.
 */
public final class Guards {
    public enum Policy {
        /** Do not apply the update; carry on with the next batch. */
        SKIP,
        /** Restore the newest good checkpoint and skip the batches of the offending step when replaying. */
        ROLLBACK;

        public static Policy parse(String s, String key) {
            try {
                return valueOf(s.trim().toUpperCase(Locale.ROOT));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(key + " must be skip or rollback, got '" + s + "'");
            }
        }
    }

    /** Thresholds and responses. A z threshold of 0 disables that spike check. */
    public record Config(int window, int minHistory, double lossZ, double gradZ, Policy nonFinite, Policy lossSpike,
                         Policy gradSpike) {
        public Config {
            if (window < 2) throw new IllegalArgumentException("guard.window must be >= 2");
            if (minHistory < 2 || minHistory > window) throw new IllegalArgumentException("guard.min_history must be in 2..guard.window");
            if (lossZ < 0 || gradZ < 0) throw new IllegalArgumentException("guard z thresholds must be >= 0");
        }
    }

    /** What a check found: kind ("nonfinite", "loss_spike", "grad_spike"), the value, its z-score, the policy. */
    public record Finding(String kind, double value, double z, Policy policy) {}

    private final Config cfg;
    private final ArrayDeque<Double> losses = new ArrayDeque<>(), norms = new ArrayDeque<>();

    public Guards(Config cfg) {
        this.cfg = cfg;
    }

    public Config config() { return cfg; }

    /** Checks a step's loss and gradient norm before its update is applied; null when healthy. */
    public Finding check(double loss, double gradNorm) {
        if (!Double.isFinite(loss) || !Double.isFinite(gradNorm)) {
            return new Finding("nonfinite", Double.isFinite(loss) ? gradNorm : loss, Double.NaN, cfg.nonFinite());
        }
        double zl = z(losses, loss), zg = z(norms, gradNorm);
        if (cfg.lossZ() > 0 && zl > cfg.lossZ()) return new Finding("loss_spike", loss, zl, cfg.lossSpike());
        if (cfg.gradZ() > 0 && zg > cfg.gradZ()) return new Finding("grad_spike", gradNorm, zg, cfg.gradSpike());
        return null;
    }

    /** Adds a healthy step to the window. */
    public void accept(double loss, double gradNorm) {
        push(losses, loss);
        push(norms, gradNorm);
    }

    private void push(ArrayDeque<Double> q, double v) {
        q.addLast(v);
        while (q.size() > cfg.window()) q.removeFirst();
    }

    private double z(ArrayDeque<Double> q, double v) {
        if (q.size() < cfg.minHistory()) return 0;
        double mean = 0;
        for (double x : q) mean += x;
        mean /= q.size();
        double var = 0;
        for (double x : q) var += (x - mean) * (x - mean);
        // A floor on the spread keeps a flat window from calling every wiggle a spike.
        double std = Math.max(Math.sqrt(var / (q.size() - 1)), 1e-3 * Math.abs(mean) + 1e-12);
        return (v - mean) / std;
    }

    /** The window, for the checkpoint. */
    public List<double[]> state() {
        List<double[]> out = new ArrayList<>();
        out.add(losses.stream().mapToDouble(Double::doubleValue).toArray());
        out.add(norms.stream().mapToDouble(Double::doubleValue).toArray());
        return out;
    }

    public void restore(double[] lossWindow, double[] normWindow) {
        losses.clear();
        norms.clear();
        for (double v : lossWindow) push(losses, v);
        for (double v : normWindow) push(norms, v);
    }
}
