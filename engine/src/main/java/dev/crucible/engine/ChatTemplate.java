package dev.crucible.engine;

import com.hubspot.jinjava.Jinjava;
import com.hubspot.jinjava.JinjavaConfig;
import com.hubspot.jinjava.interpret.FatalTemplateErrorsException;
import com.hubspot.jinjava.interpret.RenderResult;
import com.hubspot.jinjava.interpret.TemplateError;
import com.hubspot.jinjava.lib.fn.ELFunctionDefinition;
import dev.crucible.formats.tokenizer.Tokenizer;

import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Turns chat messages into a prompt with the model's own chat template: the Jinja text that Hugging Face
 * ({@code tokenizer_config.json}'s {@code chat_template}) and GGUF ({@code tokenizer.chat_template}) files carry,
 * rendered by Jinjava with the variables such templates expect ({@code messages}, {@code add_generation_prompt},
 * {@code bos_token}, {@code eos_token}) and the functions they call ({@code raise_exception}, {@code strftime_now}).
 * A model without a template gets {@link Family#PLAIN}: the end-of-text token, then the message contents one per
 * line (how the quickstart's models were trained).
 */
public final class ChatTemplate {
    /** One chat message. */
    public record Message(String role, String content) {}

    /** A template that cannot render these messages (its own raise_exception, or a Jinja error): a client error. */
    public static final class RenderException extends IllegalArgumentException {
        RenderException(String message) { super(message); }
    }

    /** What a template looks like, for its end-of-turn stop strings and the no-template fallback. */
    public enum Family { CHATML, LLAMA3, GEMMA, PHI3, MISTRAL, OTHER, PLAIN }

    private static final List<String> BOS = List.of("<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>");
    private static final List<String> EOS = List.of("<|end_of_text|>", "<|eot_id|>", "</s>", "<eos>", "<|endoftext|>", "<|im_end|>");

    private final String source;
    private final Family family;
    private final Jinjava jinja;
    private final String bos, eos;

    private ChatTemplate(String source, Family family, String bos, String eos) {
        this.source = source;
        this.family = family;
        this.bos = bos;
        this.eos = eos;
        if (source == null) {
            this.jinja = null;
        } else {
            this.jinja = new Jinjava(JinjavaConfig.newBuilder().withTrimBlocks(false).withLstripBlocks(false).build());
            jinja.getGlobalContext().registerFunction(new ELFunctionDefinition("", "raise_exception", ChatTemplate.class, "raise", String.class));
            jinja.getGlobalContext().registerFunction(new ELFunctionDefinition("", "strftime_now", ChatTemplate.class, "strftimeNow", String.class));
        }
    }

    /** The template of the tokenizer (with bos/eos token texts guessed from its special tokens). */
    public static ChatTemplate of(Tokenizer tok) {
        String t = tok.chatTemplate();
        String bos = BOS.stream().filter(s -> tok.specialId(s).isPresent()).findFirst().orElse("");
        String eos = EOS.stream().filter(s -> tok.specialId(s).isPresent()).findFirst().orElse("");
        if (t == null || t.isBlank()) return new ChatTemplate(null, Family.PLAIN, bos, eos);
        return new ChatTemplate(t, familyOf(t), bos, eos);
    }

    static Family familyOf(String t) {
        if (t.contains("<|im_start|>")) return Family.CHATML;
        if (t.contains("<|start_header_id|>")) return Family.LLAMA3;
        if (t.contains("<start_of_turn>")) return Family.GEMMA;
        if (t.contains("<|end|>") && t.contains("<|assistant|>")) return Family.PHI3;
        if (t.contains("[INST]")) return Family.MISTRAL;
        return Family.OTHER;
    }

    public Family family() { return family; }

    /** Stop strings implied by the template (its end-of-turn marker), beyond the end-of-text token. */
    public List<String> stops() {
        return switch (family) {
            case CHATML -> List.of("<|im_end|>");
            case LLAMA3 -> List.of("<|eot_id|>");
            case GEMMA -> List.of("<end_of_turn>");
            case PHI3 -> List.of("<|end|>");
            case MISTRAL -> List.of("</s>");
            case OTHER, PLAIN -> List.of();
        };
    }

    /**
     * The prompt for these messages, ending where the assistant's reply begins.
     *
     * @throws RenderException if the template refuses the conversation (e.g. roles not alternating) or fails
     */
    public String render(List<Message> messages, Tokenizer tok) {
        if (jinja == null) {
            StringBuilder sb = new StringBuilder();
            if (tok.specialId("<|endoftext|>").isPresent()) sb.append("<|endoftext|>");
            for (int i = 0; i < messages.size(); i++) {
                if (i > 0) sb.append('\n');
                sb.append(messages.get(i).content());
            }
            return sb.toString();
        }
        List<Map<String, Object>> msgs = new ArrayList<>();
        for (Message m : messages) {
            Map<String, Object> e = new LinkedHashMap<>();
            e.put("role", m.role());
            e.put("content", m.content());
            msgs.add(e);
        }
        Map<String, Object> vars = new HashMap<>();
        vars.put("messages", msgs);
        vars.put("add_generation_prompt", true);
        vars.put("bos_token", bos);
        vars.put("eos_token", eos);
        RenderResult r;
        RAISED.remove();
        try {
            r = jinja.renderForResult(source, vars);
        } catch (FatalTemplateErrorsException e) {
            throw new RenderException(raisedOr("the chat template failed: " + e.getMessage()));
        } catch (RuntimeException e) {
            throw new RenderException(raisedOr("the chat template failed: " + rootMessage(e)));
        }
        if (RAISED.get() != null) throw new RenderException(raisedOr(""));
        for (TemplateError err : r.getErrors()) {
            if (err.getSeverity() == TemplateError.ErrorType.FATAL) throw new RenderException("the chat template failed: " + err.getMessage());
        }
        return r.getOutput();
    }

    private static String rootMessage(Throwable e) {
        while (e.getCause() != null && e.getCause() != e) e = e.getCause();
        return e.getMessage();
    }

    /** The message of the template's own raise_exception during the current render (Jinjava wraps the throw). */
    private static final ThreadLocal<String> RAISED = new ThreadLocal<>();

    private static String raisedOr(String otherwise) {
        String m = RAISED.get();
        RAISED.remove();
        return m != null ? "the chat template refused the messages: " + m : otherwise;
    }

    /** {@code raise_exception(msg)} as templates call it to reject a conversation. */
    public static String raise(String message) {
        RAISED.set(message);
        throw new RenderException(message);
    }

    /** {@code strftime_now(fmt)}: the local time in a strftime format (the common directives). */
    public static String strftimeNow(String fmt) {
        LocalDateTime now = LocalDateTime.now();
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < fmt.length(); i++) {
            char c = fmt.charAt(i);
            if (c != '%' || i + 1 == fmt.length()) {
                out.append(c);
                continue;
            }
            char d = fmt.charAt(++i);
            String p = switch (d) {
                case 'd' -> "dd";
                case 'm' -> "MM";
                case 'Y' -> "yyyy";
                case 'y' -> "yy";
                case 'H' -> "HH";
                case 'M' -> "mm";
                case 'S' -> "ss";
                case 'b' -> "MMM";
                case 'B' -> "MMMM";
                case 'a' -> "EEE";
                case 'A' -> "EEEE";
                default -> null;
            };
            out.append(p == null ? (d == '%' ? "%" : "%" + d) : now.format(DateTimeFormatter.ofPattern(p, Locale.ROOT)));
        }
        return out.toString();
    }
}
