package dev.crucible.engine;

import java.util.List;

/**
 * One sequence to generate: prompt token ids, at most {@code maxTokens} new tokens (fewer if the context fills),
 * sampling, stop strings (cut from the text), {@code logprobs} top alternatives per generated token (-1: no
 * log-probabilities at all, 0: the chosen token's only), {@code echo}: also score the prompt (log-probability of every
 * prompt token after the first, with the same number of alternatives). {@code ignoreEos} keeps going past the
 * end-of-text token (benchmarks).
 */
public record CompletionRequest(int[] prompt, int maxTokens, SamplingParams sampling, List<String> stops, int logprobs,
                                boolean echo, boolean ignoreEos) {
    public CompletionRequest {
        if (prompt.length == 0) throw new IllegalArgumentException("the prompt is empty");
        if (maxTokens < 0) throw new IllegalArgumentException("max tokens must be >= 0, got " + maxTokens);
        if (logprobs > 20) throw new IllegalArgumentException("at most 20 log-probability alternatives, got " + logprobs);
        stops = List.copyOf(stops);
        for (String s : stops) if (s.isEmpty()) throw new IllegalArgumentException("stop strings must not be empty");
    }
}
