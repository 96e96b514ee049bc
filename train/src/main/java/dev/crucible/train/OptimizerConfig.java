package dev.crucible.train;

/**
 * AdamW and its learning-rate schedule: linear warm-up over {@code warmup} steps to {@code lr}, then cosine decay to
 * {@code minLr} at the last step. {@code clip} is the global gradient-norm limit (0 disables clipping).
 */
public record OptimizerConfig(double lr, double minLr, int warmup, double beta1, double beta2, double eps,
                              double weightDecay, double clip) {
    public OptimizerConfig {
        if (!(lr > 0)) throw new IllegalArgumentException("lr must be positive, got " + lr);
        if (minLr < 0 || minLr > lr) throw new IllegalArgumentException("min-lr must be in [0, lr], got " + minLr);
        if (warmup < 0) throw new IllegalArgumentException("warmup must be >= 0, got " + warmup);
        if (!(beta1 >= 0 && beta1 < 1)) throw new IllegalArgumentException("beta1 must be in [0, 1), got " + beta1);
        if (!(beta2 >= 0 && beta2 < 1)) throw new IllegalArgumentException("beta2 must be in [0, 1), got " + beta2);
        if (!(eps > 0)) throw new IllegalArgumentException("eps must be positive, got " + eps);
        if (weightDecay < 0) throw new IllegalArgumentException("weight-decay must be >= 0, got " + weightDecay);
        if (clip < 0) throw new IllegalArgumentException("clip must be >= 0, got " + clip);
    }

    /** Learning rate at step s (from 0) of a run of {@code steps} steps; the reference peer's formula. */
    public double lrAt(int s, int steps) {
        if (s < warmup) return lr * (s + 1) / warmup;
        int n = Math.max(1, steps - warmup);
        int t = Math.min(s - warmup, n);
        return minLr + 0.5 * (lr - minLr) * (1 + Math.cos(Math.PI * t / n));
    }
}
