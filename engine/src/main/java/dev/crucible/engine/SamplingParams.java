package dev.crucible.engine;

/**
 * How the next token is chosen. temperature 0 is greedy (argmax; ties go to the lowest id). Otherwise logits are
 * divided by the temperature, then restricted to the topK most likely tokens (0 = all) and to the smallest set whose
 * probability reaches topP (1 = all), and sampled with a generator keyed by (seed, position): the same seed and
 * request give the same text.
 */
public record SamplingParams(double temperature, int topK, double topP, long seed) {
    public static final SamplingParams GREEDY = new SamplingParams(0, 0, 1, 0);

    public SamplingParams {
        if (!(temperature >= 0) || Double.isInfinite(temperature)) throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
        if (topK < 0) throw new IllegalArgumentException("top-k must be >= 0, got " + topK);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("top-p must be in (0, 1], got " + topP);
    }

    public boolean greedy() { return temperature == 0; }
}
