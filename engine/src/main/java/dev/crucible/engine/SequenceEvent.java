package dev.crucible.engine;

import java.util.List;

/** What a running sequence reports to its consumer, in order: [Prompt] Chunk* Done. */
public sealed interface SequenceEvent {
    /** A token with its log-probability (NaN for the first prompt token, which nothing predicts) and top alternatives. */
    record TokenLogprob(int id, String token, byte[] bytes, double logprob, List<TokenLogprob> top) {}

    /** The scored prompt (only with echo): one entry per prompt token. */
    record Prompt(List<TokenLogprob> tokens) implements SequenceEvent {}

    /** New text, and the tokens released with it (log-probabilities, when requested; otherwise ids only). */
    record Chunk(String text, List<TokenLogprob> tokens) implements SequenceEvent {}

    /**
     * The end. finishReason: "stop" (end-of-text or a stop string), "length" (max tokens or context full),
     * "cancelled", or "error" (then {@code error} says why).
     */
    record Done(String finishReason, int promptTokens, int completionTokens, double ttftSeconds, String error)
            implements SequenceEvent {}
}
