package dev.crucible.engine;

import dev.crucible.tensor.Rng;

import java.util.Arrays;

/**
 * Picks a token from logits under {@link SamplingParams}. Stateless: the draw for position p uses Rng(seed, p), so a
 * sequence's tokens do not depend on which other sequences share its batch.
 */
public final class Sampler {
    private Sampler() {}

    /**
     * Rules out the ids at or past {@code limit} (sets their logits to −∞), in place. A model's vocabulary is often
     * padded past its tokenizer's (GGUF files list the padding as unused tokens): those ids have no text, so they
     * must never be sampled, and they get probability 0 in logprobs.
     */
    public static float[] limitVocabulary(float[] logits, int limit) {
        for (int i = Math.max(0, limit); i < logits.length; i++) logits[i] = Float.NEGATIVE_INFINITY;
        return logits;
    }

    public static int argmax(float[] logits) {
        int best = 0;
        for (int i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    public static int sample(float[] logits, SamplingParams p, int position) {
        return sample(logits, p, position, null);
    }

    /**
     * Samples the token at {@code position}. {@code counts} (vocab-sized, or null) holds how often each token was
     * generated so far; penalties read it. {@code logits} is not modified.
     */
    public static int sample(float[] logits, SamplingParams p, int position, int[] counts) {
        float[] x = p.penalized() && counts != null ? penalize(logits, p, counts) : logits;
        if (p.greedy()) return argmax(x);
        int v = x.length;
        double t = p.temperature();
        float top = Float.NEGATIVE_INFINITY;
        for (float f : x) top = Math.max(top, f);
        double max = top / t;
        // Candidates: tokens within e^-40 of the most likely (the rest cannot change a double-precision draw) and,
        // with min-p, at least min-p times its probability. No full sort of the vocabulary per token.
        double floor = Math.max(p.minP() > 0 ? p.minP() : 0, Math.exp(-40));
        int[] ids = new int[v];
        double[] w = new double[v];
        int n = 0;
        for (int i = 0; i < v; i++) {
            double e = Math.exp(x[i] / t - max);
            if (e >= floor) {
                ids[n] = i;
                w[n++] = e;
            }
        }
        if (p.topK() > 0 || p.topP() < 1) {
            // Most likely first, ties by id: keys sort ascending as (−logit, id).
            long[] keys = new long[n];
            for (int c = 0; c < n; c++) {
                int bits = Float.floatToIntBits(x[ids[c]]);
                int ordered = bits >= 0 ? bits : bits ^ 0x7fffffff;  // signed int order = float order
                keys[c] = ((long) ~ordered << 32) | ids[c];           // descending logit, then ascending id
            }
            java.util.Arrays.sort(keys);
            for (int c = 0; c < n; c++) {
                ids[c] = (int) keys[c];
                w[c] = Math.exp(x[ids[c]] / t - max);
            }
            if (p.topK() > 0) n = Math.min(n, p.topK());
            if (p.topP() < 1) {
                double sum = 0, cum = 0;
                for (int c = 0; c < n; c++) sum += w[c];
                for (int c = 0; c < n; c++) {
                    cum += w[c] / sum;
                    if (cum >= p.topP()) {
                        n = c + 1;
                        break;
                    }
                }
            }
        }
        double sum = 0;
        for (int c = 0; c < n; c++) sum += w[c];
        double u = Rng.keyed(p.seed(), Rng.key("sample"), position).nextDouble() * sum;
        for (int c = 0; c < n; c++) {
            u -= w[c];
            if (u < 0) return ids[c];
        }
        return ids[n - 1];
    }

    /** A copy of the logits with repetition, frequency and presence penalties applied. */
    static float[] penalize(float[] logits, SamplingParams p, int[] counts) {
        float[] x = logits.clone();
        for (int i = 0; i < x.length; i++) {
            int c = counts[i];
            if (c == 0) continue;
            if (p.repetitionPenalty() != 1) x[i] = (float) (x[i] > 0 ? x[i] / p.repetitionPenalty() : x[i] * p.repetitionPenalty());
            x[i] -= (float) (p.frequencyPenalty() * c + p.presencePenalty());
        }
        return x;
    }

    /** log softmax of the logits, in double precision: the model's log-probabilities (no sampling transforms). */
    public static double[] logSoftmax(float[] logits) {
        double max = Double.NEGATIVE_INFINITY;
        for (float f : logits) max = Math.max(max, f);
        double sum = 0;
        for (float f : logits) sum += Math.exp(f - max);
        double lse = max + Math.log(sum);
        double[] out = new double[logits.length];
        for (int i = 0; i < logits.length; i++) out[i] = logits[i] - lse;
        return out;
    }

    /** Ids of the k largest values, largest first (ties: lower id first). */
    public static int[] topIds(double[] values, int k) {
        k = Math.min(k, values.length);
        int[] best = new int[k];
        int n = 0;
        for (int i = 0; i < values.length; i++) {
            if (n == k && values[i] <= values[best[k - 1]]) continue;
            int j = n < k ? n++ : k - 1;
            while (j > 0 && values[best[j - 1]] < values[i]) {
                best[j] = best[j - 1];
                j--;
            }
            best[j] = i;
        }
        return best;
    }
}
