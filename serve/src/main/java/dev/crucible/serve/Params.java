package dev.crucible.serve;

import com.fasterxml.jackson.databind.JsonNode;
import dev.crucible.engine.ChatTemplate;
import dev.crucible.engine.SamplingParams;
import dev.crucible.formats.tokenizer.Tokenizer;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;

/**
 * A completion or chat request, validated. Every mistake becomes an {@link ApiError} naming the parameter, so a
 * malformed request costs a 400 and never reaches the engine.
 */
record Params(boolean chat, List<int[]> prompts, List<String> promptTexts, int maxTokens, SamplingParams sampling,
              List<String> stops, int n, boolean stream, boolean includeUsage, int logprobs, boolean echo,
              boolean ignoreEos) {

    static Params parse(JsonNode body, boolean chat, Tokenizer tok, ChatTemplate template, ServerConfig cfg, int context) {
        if (body == null || !body.isObject()) throw ApiError.invalid("the request body must be a JSON object", null);
        JsonNode model = body.get("model");
        if (model != null && !model.isNull() && !model.isTextual()) throw ApiError.invalid("'model' must be a string", "model");
        List<String> texts = new ArrayList<>();
        List<int[]> prompts = new ArrayList<>();
        List<String> stops = new ArrayList<>();
        if (chat) {
            JsonNode msgs = body.get("messages");
            if (msgs == null || !msgs.isArray() || msgs.isEmpty()) throw ApiError.invalid("'messages' must be a non-empty array", "messages");
            List<ChatTemplate.Message> list = new ArrayList<>();
            for (int i = 0; i < msgs.size(); i++) {
                JsonNode m = msgs.get(i);
                String p = "messages[" + i + "]";
                if (!m.isObject()) throw ApiError.invalid(p + " must be an object", p);
                JsonNode role = m.get("role");
                if (role == null || !role.isTextual()) throw ApiError.invalid(p + ".role must be a string", p + ".role");
                if (!List.of("system", "developer", "user", "assistant", "tool").contains(role.asText())) {
                    throw ApiError.invalid("unknown role '" + role.asText() + "' in " + p, p + ".role");
                }
                list.add(new ChatTemplate.Message(role.asText().equals("developer") ? "system" : role.asText(), content(m.get("content"), p)));
            }
            String text;
            try {
                text = template.render(list, tok);
            } catch (ChatTemplate.RenderException e) {
                throw ApiError.invalid(e.getMessage(), "messages");
            }
            texts.add(text);
            prompts.add(tok.encodeWithSpecials(text));
            stops.addAll(template.stops());
        } else {
            JsonNode p = body.get("prompt");
            if (p == null || p.isNull()) throw ApiError.invalid("'prompt' is required", "prompt");
            if (p.isTextual()) {
                texts.add(p.asText());
            } else if (p.isArray() && !p.isEmpty() && p.get(0).isTextual()) {
                for (JsonNode e : p) {
                    if (!e.isTextual()) throw ApiError.invalid("'prompt' must be a string, an array of strings, or token ids", "prompt");
                    texts.add(e.asText());
                }
            } else if (p.isArray() && !p.isEmpty() && p.get(0).isIntegralNumber()) {
                prompts.add(ids(p, tok));
            } else if (p.isArray() && !p.isEmpty() && p.get(0).isArray()) {
                for (JsonNode e : p) prompts.add(ids(e, tok));
            } else {
                throw ApiError.invalid("'prompt' must be a string, an array of strings, or token ids", "prompt");
            }
            for (String t : texts) prompts.add(tok.encodeWithSpecials(t));
            if (texts.isEmpty()) for (int[] ids : prompts) texts.add(tok.decode(ids));
        }
        for (int[] ids : prompts) {
            if (ids.length == 0) throw ApiError.invalid("the prompt is empty", chat ? "messages" : "prompt");
            int limit = Math.min(cfg.maxPromptTokens(), context - 1);
            if (ids.length > limit) {
                throw ApiError.invalid("the prompt has " + ids.length + " tokens; the limit is " + limit
                        + " (model context " + context + ")", chat ? "messages" : "prompt", "context_length_exceeded");
            }
        }
        JsonNode mt = body.has("max_completion_tokens") && chat ? body.get("max_completion_tokens") : body.get("max_tokens");
        int maxTokens = integer(mt, chat ? "max_tokens" : "max_tokens", chat ? Math.min(cfg.maxTokens(), context) : 16, 0, cfg.maxTokens());
        if (chat && maxTokens == 0) throw ApiError.invalid("max_tokens must be at least 1", "max_tokens");
        double temperature = number(body.get("temperature"), "temperature", 1, 0, 2);
        double topP = number(body.get("top_p"), "top_p", 1, 0, 1);
        if (topP == 0) topP = 1e-9;
        int topK = integer(body.get("top_k"), "top_k", 0, 0, Integer.MAX_VALUE);
        double minP = number(body.get("min_p"), "min_p", 0, 0, 1);
        double rep = number(body.get("repetition_penalty"), "repetition_penalty", 1, 1e-3, 100);
        double freq = number(body.get("frequency_penalty"), "frequency_penalty", 0, -2, 2);
        double pres = number(body.get("presence_penalty"), "presence_penalty", 0, -2, 2);
        JsonNode seedNode = body.get("seed");
        long seed;
        if (seedNode == null || seedNode.isNull()) seed = ThreadLocalRandom.current().nextLong();
        else if (seedNode.isIntegralNumber() && seedNode.canConvertToLong()) seed = seedNode.asLong();
        else throw ApiError.invalid("'seed' must be an integer", "seed");
        int n = integer(body.get("n"), "n", 1, 1, cfg.maxN());
        boolean stream = bool(body.get("stream"), "stream", false);
        boolean includeUsage = false;
        JsonNode so = body.get("stream_options");
        if (so != null && !so.isNull()) {
            if (!so.isObject()) throw ApiError.invalid("'stream_options' must be an object", "stream_options");
            if (!stream) throw ApiError.invalid("'stream_options' is only allowed with stream: true", "stream_options");
            includeUsage = bool(so.get("include_usage"), "stream_options.include_usage", false);
        }
        int logprobs;
        if (chat) {
            boolean lp = bool(body.get("logprobs"), "logprobs", false);
            int top = integer(body.get("top_logprobs"), "top_logprobs", 0, 0, 20);
            if (body.has("top_logprobs") && !body.get("top_logprobs").isNull() && !lp) {
                throw ApiError.invalid("'top_logprobs' requires 'logprobs': true", "top_logprobs");
            }
            logprobs = lp ? top : -1;
        } else {
            JsonNode lp = body.get("logprobs");
            logprobs = lp == null || lp.isNull() ? -1 : integer(lp, "logprobs", 0, 0, 5);
        }
        boolean echo = !chat && bool(body.get("echo"), "echo", false);
        if (echo && stream && logprobs >= 0) throw ApiError.invalid("echo with logprobs is not supported when streaming", "echo");
        JsonNode st = body.get("stop");
        if (st != null && !st.isNull()) {
            if (st.isTextual()) stops.add(st.asText());
            else if (st.isArray() && st.size() <= 4) {
                for (JsonNode e : st) {
                    if (!e.isTextual()) throw ApiError.invalid("'stop' must be a string or an array of up to 4 strings", "stop");
                    stops.add(e.asText());
                }
            } else {
                throw ApiError.invalid("'stop' must be a string or an array of up to 4 strings", "stop");
            }
            if (stops.stream().anyMatch(String::isEmpty)) throw ApiError.invalid("stop strings must not be empty", "stop");
        }
        boolean ignoreEos = bool(body.get("ignore_eos"), "ignore_eos", false);
        if (n * prompts.size() > cfg.maxN()) throw ApiError.invalid("at most " + cfg.maxN() + " choices per request", "n");
        SamplingParams sp = new SamplingParams(temperature, topK, topP, seed, minP, rep, freq, pres);
        return new Params(chat, prompts, texts, maxTokens, sp, stops, n, stream, includeUsage, logprobs, echo, ignoreEos);
    }

    private static String content(JsonNode c, String p) {
        if (c == null || c.isNull()) return "";
        if (c.isTextual()) return c.asText();
        if (c.isArray()) {
            StringBuilder sb = new StringBuilder();
            for (JsonNode part : c) {
                if (!part.isObject() || !"text".equals(part.path("type").asText()) || !part.path("text").isTextual()) {
                    throw ApiError.invalid(p + ".content parts must be {\"type\": \"text\", \"text\": ...}", p + ".content");
                }
                sb.append(part.get("text").asText());
            }
            return sb.toString();
        }
        throw ApiError.invalid(p + ".content must be a string or an array of text parts", p + ".content");
    }

    private static int[] ids(JsonNode a, Tokenizer tok) {
        if (!a.isArray() || a.isEmpty()) throw ApiError.invalid("token id arrays must be non-empty", "prompt");
        int[] out = new int[a.size()];
        for (int i = 0; i < out.length; i++) {
            JsonNode e = a.get(i);
            if (!e.isIntegralNumber() || !e.canConvertToInt() || e.asInt() < 0 || e.asInt() >= tok.vocabSize()) {
                throw ApiError.invalid("token ids must be integers in 0.." + (tok.vocabSize() - 1), "prompt");
            }
            out[i] = e.asInt();
        }
        return out;
    }

    static int integer(JsonNode v, String name, int dflt, int min, int max) {
        if (v == null || v.isNull()) return dflt;
        if (!v.isIntegralNumber() || !v.canConvertToInt()) throw ApiError.invalid("'" + name + "' must be an integer", name);
        int x = v.asInt();
        if (x < min || x > max) throw ApiError.invalid("'" + name + "' must be in " + min + ".." + max + ", got " + x, name);
        return x;
    }

    static double number(JsonNode v, String name, double dflt, double min, double max) {
        if (v == null || v.isNull()) return dflt;
        if (!v.isNumber()) throw ApiError.invalid("'" + name + "' must be a number", name);
        double x = v.asDouble();
        if (!(x >= min && x <= max)) throw ApiError.invalid("'" + name + "' must be in [" + min + ", " + max + "], got " + x, name);
        return x;
    }

    static boolean bool(JsonNode v, String name, boolean dflt) {
        if (v == null || v.isNull()) return dflt;
        if (!v.isBoolean()) throw ApiError.invalid("'" + name + "' must be a boolean", name);
        return v.asBoolean();
    }
}
