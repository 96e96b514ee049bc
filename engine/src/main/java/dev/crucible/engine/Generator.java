package dev.crucible.engine;

import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.model.Llama;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * Text generation for one sequence with a KV cache: the prompt is prefilled in chunks, then one token per step.
 * Stops at max tokens, at the end-of-text token, at the context limit, or when the text contains a stop string
 * (which is cut from the result).
 */
public final class Generator {
    /** finishReason: "stop" (eos or a stop string), "length" (max tokens or context full). */
    public record Result(String text, int promptTokens, int completionTokens, String finishReason,
                         double prefillSeconds, double decodeSeconds) {
        public double decodeTokensPerSecond() {
            return completionTokens <= 1 ? 0 : (completionTokens - 1) / Math.max(decodeSeconds, 1e-9);
        }
    }

    private final Llama model;
    private final Tokenizer tokenizer;
    private final int eosId;
    private final dev.crucible.tensor.DType kvType;

    /** eosId < 0 when the tokenizer has no end-of-text token. An F32 (exact) KV cache. */
    public Generator(Llama model, Tokenizer tokenizer, int eosId) {
        this(model, tokenizer, eosId, dev.crucible.tensor.DType.F32);
    }

    /** With the KV cache in {@code kvType}: F32 (exact) or F16 (half the memory; see {@link Llama.Session}). */
    public Generator(Llama model, Tokenizer tokenizer, int eosId, dev.crucible.tensor.DType kvType) {
        this.model = model;
        this.tokenizer = tokenizer;
        this.eosId = eosId;
        this.kvType = kvType;
    }

    public Result generate(String prompt, int maxTokens, SamplingParams sampling, List<String> stops, Consumer<String> onText) {
        int[] promptIds = tokenizer.encodeWithSpecials(prompt);
        if (promptIds.length == 0) throw new IllegalArgumentException("the prompt is empty");
        int context = model.config().context();
        if (promptIds.length >= context) {
            throw new IllegalArgumentException("the prompt has " + promptIds.length + " tokens; the model context is " + context);
        }
        // Prefill in chunks of up to 512 prompt tokens: each chunk reads (and for stored types decodes) every
        // weight once, so bigger chunks make prompt processing compute-bound; 512 is llama.cpp's micro-batch too.
        // The cache holds what this request can reach, not the whole context (a 128K-context model's full cache
        // would take gigabytes).
        int capacity = (int) Math.min(context, (long) promptIds.length + Math.max(0, maxTokens));
        try (Llama.Session s = model.session(capacity, Math.min(512, promptIds.length), kvType)) {
            long t0 = System.nanoTime();
            float[] logits = s.append(promptIds);
            long t1 = System.nanoTime();
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            List<Integer> out = new ArrayList<>();
            String text = "";
            int emitted = 0;
            String finish = "length";
            while (out.size() < maxTokens) {
                int next = Sampler.sample(Sampler.limitVocabulary(logits, tokenizer.vocabSize()), sampling, s.length());
                if (next == eosId) {
                    finish = "stop";
                    break;
                }
                out.add(next);
                bytes.writeBytes(tokenizer.decodeBytes(new int[]{next}));
                text = decodeComplete(bytes.toByteArray());
                int cut = firstStop(text, stops);
                if (cut >= 0) {
                    text = text.substring(0, cut);
                    finish = "stop";
                    break;
                }
                // Hold back text that might be the start of a stop string.
                int safe = text.length() - holdBack(text, stops);
                if (onText != null && safe > emitted) {
                    onText.accept(text.substring(emitted, safe));
                    emitted = safe;
                }
                if (out.size() >= maxTokens || s.length() >= capacity) break;
                logits = s.append(new int[]{next});
            }
            if (onText != null && text.length() > emitted) onText.accept(text.substring(emitted));
            long t2 = System.nanoTime();
            return new Result(text, promptIds.length, out.size(), finish, (t1 - t0) / 1e9, (t2 - t1) / 1e9);
        }
    }

    /** Decodes the bytes, dropping an incomplete UTF-8 sequence at the end (it completes with later tokens). */
    static String decodeComplete(byte[] b) {
        int end = b.length, i = end - 1, back = 0;
        while (i >= 0 && back < 4 && (b[i] & 0xC0) == 0x80) {
            i--;
            back++;
        }
        if (i >= 0) {
            int lead = b[i] & 0xFF, need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            if (need > 1 && end - i < need) end = i;
        }
        return new String(b, 0, end, StandardCharsets.UTF_8);
    }

    static int firstStop(String text, List<String> stops) {
        int best = -1;
        for (String s : stops) {
            int i = text.indexOf(s);
            if (i >= 0 && (best < 0 || i < best)) best = i;
        }
        return best;
    }

    static int holdBack(String text, List<String> stops) {
        int hold = 0;
        for (String s : stops) {
            for (int k = Math.min(s.length() - 1, text.length()); k > hold; k--) {
                if (text.endsWith(s.substring(0, k))) {
                    hold = k;
                    break;
                }
            }
        }
        return hold;
    }
}
