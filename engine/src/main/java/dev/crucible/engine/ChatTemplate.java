package dev.crucible.engine;

import dev.crucible.formats.tokenizer.Tokenizer;

import java.util.List;

/**
 * Turns chat messages into a prompt. Crucible does not run Jinja: it recognises the families of templates models
 * ship with (by their marker tokens) and renders them natively; anything else, including no template, falls back to
 * {@link #PLAIN}.
 */
public enum ChatTemplate {
    /** {@code <|im_start|>role\ncontent<|im_end|>\n} … then {@code <|im_start|>assistant\n} (Qwen, SmolLM, …). */
    CHATML,
    /** Llama 3: {@code <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>}, after {@code <|begin_of_text|>}. */
    LLAMA3,
    /**
     * No template: the end-of-text token (when the tokenizer has one) then the message contents, one per line. This
     * is how the quickstart's byte-level models were trained ({@code <|endoftext|>123+456=}).
     */
    PLAIN;

    /** One chat message. */
    public record Message(String role, String content) {}

    /** Stop strings implied by the template (the end-of-turn marker), beyond the end-of-text token. */
    public List<String> stops() {
        return switch (this) {
            case CHATML -> List.of("<|im_end|>");
            case LLAMA3 -> List.of("<|eot_id|>");
            case PLAIN -> List.of();
        };
    }

    public static ChatTemplate of(Tokenizer tok) {
        String t = tok.chatTemplate();
        if (t == null) return PLAIN;
        if (t.contains("<|im_start|>")) return CHATML;
        if (t.contains("<|start_header_id|>")) return LLAMA3;
        return PLAIN;
    }

    public String render(List<Message> messages, Tokenizer tok) {
        StringBuilder sb = new StringBuilder();
        switch (this) {
            case CHATML -> {
                for (Message m : messages) sb.append("<|im_start|>").append(m.role()).append('\n').append(m.content()).append("<|im_end|>\n");
                sb.append("<|im_start|>assistant\n");
            }
            case LLAMA3 -> {
                if (tok.specialId("<|begin_of_text|>").isPresent()) sb.append("<|begin_of_text|>");
                for (Message m : messages) {
                    sb.append("<|start_header_id|>").append(m.role()).append("<|end_header_id|>\n\n").append(m.content()).append("<|eot_id|>");
                }
                sb.append("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
            case PLAIN -> {
                if (tok.specialId("<|endoftext|>").isPresent()) sb.append("<|endoftext|>");
                for (int i = 0; i < messages.size(); i++) {
                    if (i > 0) sb.append('\n');
                    sb.append(messages.get(i).content());
                }
            }
        }
        return sb.toString();
    }
}
