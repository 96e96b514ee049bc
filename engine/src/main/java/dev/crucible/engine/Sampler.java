package dev.crucible.engine;

import dev.crucible.tensor.Rng;

import java.util.Arrays;

/** Picks a token from logits under {@link SamplingParams}. Stateless: the draw for position p uses Rng(seed, p). */
public final class Sampler {
    private Sampler() {}

    public static int argmax(float[] logits) {
        int best = 0;
        for (int i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    public static int sample(float[] logits, SamplingParams p, int position) {
        if (p.greedy()) return argmax(logits);
        int v = logits.length;
        Integer[] order = new Integer[v];
        for (int i = 0; i < v; i++) order[i] = i;
        // Sort by logit, descending; ties by id so the order is total and reproducible.
        Arrays.sort(order, (a, b) -> logits[a] != logits[b] ? Float.compare(logits[b], logits[a]) : Integer.compare(a, b));
        int keep = p.topK() > 0 ? Math.min(p.topK(), v) : v;
        double max = logits[order[0]] / p.temperature();
        double[] prob = new double[keep];
        double sum = 0;
        for (int i = 0; i < keep; i++) {
            prob[i] = Math.exp(logits[order[i]] / p.temperature() - max);
            sum += prob[i];
        }
        if (p.topP() < 1) {
            double cum = 0;
            for (int i = 0; i < keep; i++) {
                cum += prob[i] / sum;
                if (cum >= p.topP()) {
                    keep = i + 1;
                    break;
                }
            }
            sum = 0;
            for (int i = 0; i < keep; i++) sum += prob[i];
        }
        double u = Rng.keyed(p.seed(), Rng.key("sample"), position).nextDouble() * sum;
        for (int i = 0; i < keep; i++) {
            u -= prob[i];
            if (u < 0) return order[i];
        }
        return order[keep - 1];
    }
}
