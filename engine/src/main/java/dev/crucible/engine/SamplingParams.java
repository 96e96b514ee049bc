package dev.crucible.engine;

/**
 * How the next token is chosen. Applied in this order to the logits of one step:
 * <ol>
 *   <li>penalties over the tokens generated so far (not the prompt): {@code repetitionPenalty} (CTRL/HF style: a
 *       positive logit of a seen token is divided by it, a negative one multiplied; 1 = off), then OpenAI's
 *       {@code frequencyPenalty · count(token)} and {@code presencePenalty · [count > 0]} subtracted (0 = off);</li>
 *   <li>temperature 0 is greedy (argmax; ties go to the lowest id); otherwise logits are divided by it;</li>
 *   <li>restricted to the topK most likely tokens (0 = all), to tokens whose probability is at least minP times the
 *       most likely one's (0 = all), and to the smallest set whose probability reaches topP (1 = all);</li>
 *   <li>sampled with a generator keyed by (seed, position): the same seed and request give the same text.</li>
 * </ol>
 */
public record SamplingParams(double temperature, int topK, double topP, long seed, double minP,
                             double repetitionPenalty, double frequencyPenalty, double presencePenalty) {
    public static final SamplingParams GREEDY = new SamplingParams(0, 0, 1, 0);

    public SamplingParams {
        if (!(temperature >= 0) || Double.isInfinite(temperature)) throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
        if (topK < 0) throw new IllegalArgumentException("top-k must be >= 0, got " + topK);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("top-p must be in (0, 1], got " + topP);
        if (!(minP >= 0 && minP <= 1)) throw new IllegalArgumentException("min-p must be in [0, 1], got " + minP);
        if (!(repetitionPenalty > 0) || Double.isInfinite(repetitionPenalty)) throw new IllegalArgumentException("repetition penalty must be > 0, got " + repetitionPenalty);
        if (!(Math.abs(frequencyPenalty) <= 2)) throw new IllegalArgumentException("frequency penalty must be in [-2, 2], got " + frequencyPenalty);
        if (!(Math.abs(presencePenalty) <= 2)) throw new IllegalArgumentException("presence penalty must be in [-2, 2], got " + presencePenalty);
    }

    /** Temperature, top-k, top-p and seed; no min-p, no penalties. */
    public SamplingParams(double temperature, int topK, double topP, long seed) {
        this(temperature, topK, topP, seed, 0, 1, 0, 0);
    }

    public boolean greedy() { return temperature == 0; }

    /** True when any penalty changes the logits (the sampler then needs the generated tokens). */
    public boolean penalized() { return repetitionPenalty != 1 || frequencyPenalty != 0 || presencePenalty != 0; }
}
