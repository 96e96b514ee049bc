package dev.crucible.formats.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.formats.FormatException;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.PatternSyntaxException;

/**
 * tiktoken's rank files: one token per line, {@code base64(bytes) SPACE rank}; ranks are the ids and the merge
 * priorities at once. The format carries no pre-tokenizer or special tokens, so those come from a {@code NAME.json}
 * beside the file ({@code {"name", "pat_str", "special_tokens": {text: id}}}) or from {@link Patterns#KNOWN}.
 */
final class TiktokenFile {
    private static final String EXPECTED =
            "expected a tiktoken rank file (lines 'base64token rank') or a Hugging Face tokenizer.json";

    private TiktokenFile() {
    }

    static Tokenizer read(Path file, byte[] content) {
        List<byte[]> tokens = new ArrayList<>();
        List<Integer> ranks = new ArrayList<>();
        Base64.Decoder base64 = Base64.getDecoder();
        int maxRank = -1;
        int line = 0;
        for (int start = 0; start < content.length; ) {
            int end = start;
            while (end < content.length && content[end] != '\n') end++;
            int next = end + 1;
            line++;
            if (end > start && content[end - 1] == '\r') end--;
            if (end > start) { // tiktoken skips empty lines
                int space = -1;
                for (int i = start; i < end; i++) {
                    if (content[i] == ' ') {
                        space = i;
                        break;
                    }
                }
                if (space <= start || space == end - 1) throw badLine(file, line, tokens.isEmpty());
                byte[] token;
                int rank;
                try {
                    token = base64.decode(new String(content, start, space - start,
                            java.nio.charset.StandardCharsets.ISO_8859_1));
                    rank = Integer.parseInt(new String(content, space + 1, end - space - 1,
                            java.nio.charset.StandardCharsets.ISO_8859_1));
                } catch (IllegalArgumentException e) { // also NumberFormatException
                    throw badLine(file, line, tokens.isEmpty());
                }
                if (token.length == 0 || rank < 0) throw badLine(file, line, tokens.isEmpty());
                tokens.add(token);
                ranks.add(rank);
                maxRank = Math.max(maxRank, rank);
            }
            start = next;
        }
        if (tokens.isEmpty()) throw new FormatException(file, "holds no tokens; " + EXPECTED);

        String name = baseName(file);
        Meta meta = meta(file, name);
        int size = maxRank + 1;
        for (int id : meta.specials.values()) size = Math.max(size, id + 1);
        byte[][] bytes = new byte[size][];
        for (int i = 0; i < tokens.size(); i++) {
            int rank = ranks.get(i);
            if (bytes[rank] != null) throw new FormatException(file, "rank " + rank + " appears twice");
            bytes[rank] = tokens.get(i);
        }
        for (Map.Entry<String, Integer> e : meta.specials.entrySet()) {
            if (bytes[e.getValue()] != null) {
                throw new FormatException(file, "special token " + e.getKey() + " has id " + e.getValue()
                        + ", which is already the rank of an ordinary token");
            }
        }
        Tokenizer t;
        try {
            t = new Tokenizer(name, Patterns.translate(meta.pattern, Patterns.Dialect.RUST), bytes, null, true,
                    meta.specials, null, null);
        } catch (PatternSyntaxException e) {
            throw new FormatException(meta.source, "pre-tokenizer pattern is not valid: " + e.getDescription());
        }
        // Two ranks with the same bytes would make the token of those bytes ambiguous.
        for (int id = 0; id < bytes.length; id++) {
            if (bytes[id] != null && t.idOfBytes(bytes[id]) != id) {
                throw new FormatException(file, "ranks " + t.idOfBytes(bytes[id]) + " and " + id
                        + " have the same bytes");
            }
        }
        return t;
    }

    private static FormatException badLine(Path file, int line, boolean first) {
        return new FormatException(file, first ? EXPECTED + ", but line " + line + " is not of that form"
                : "line " + line + " is not 'base64token rank'");
    }

    static String baseName(Path file) {
        String n = file.getFileName().toString();
        return n.endsWith(".tiktoken") ? n.substring(0, n.length() - ".tiktoken".length()) : n;
    }

    private record Meta(Path source, String pattern, Map<String, Integer> specials) {
    }

    private static Meta meta(Path file, String name) {
        Path sidecar = file.resolveSibling(name + ".json");
        if (Files.isRegularFile(sidecar)) {
            JsonNode root;
            try {
                root = new ObjectMapper().readTree(sidecar.toFile());
            } catch (IOException e) {
                throw new FormatException(sidecar, "is not valid JSON: " + e.getMessage(), e);
            }
            JsonNode pat = root == null ? null : root.get("pat_str");
            if (pat == null || !pat.isTextual()) {
                throw new FormatException(sidecar, "has no \"pat_str\" string; expected tiktoken metadata "
                        + "{\"name\", \"pat_str\", \"special_tokens\"} for " + file.getFileName());
            }
            Map<String, Integer> specials = new LinkedHashMap<>();
            JsonNode sp = root.get("special_tokens");
            if (sp != null && !sp.isNull()) {
                if (!sp.isObject()) {
                    throw new FormatException(sidecar, "\"special_tokens\" must be an object of token to id");
                }
                for (Iterator<Map.Entry<String, JsonNode>> it = sp.properties().iterator(); it.hasNext(); ) {
                    Map.Entry<String, JsonNode> e = it.next();
                    if (!e.getValue().canConvertToInt() || e.getValue().asInt() < 0 || e.getKey().isEmpty()) {
                        throw new FormatException(sidecar, "special token '" + e.getKey() + "' has no valid id");
                    }
                    if (specials.containsValue(e.getValue().asInt())) {
                        throw new FormatException(sidecar, "two special tokens have id " + e.getValue().asInt());
                    }
                    specials.put(e.getKey(), e.getValue().asInt());
                }
            }
            return new Meta(sidecar, pat.asText(), byId(specials));
        }
        Patterns.Known known = Patterns.KNOWN.get(name);
        if (known == null) {
            throw new FormatException(file, "no " + sidecar.getFileName() + " beside it and '" + name
                    + "' is not a known encoding, so its pre-tokenizer pattern and special tokens are unknown; add "
                    + sidecar.getFileName() + " with {\"pat_str\": ..., \"special_tokens\": {...}}");
        }
        return new Meta(file, known.pattern(), byId(known.specials()));
    }

    private static Map<String, Integer> byId(Map<String, Integer> specials) {
        Map<String, Integer> out = new LinkedHashMap<>();
        specials.entrySet().stream().sorted(Map.Entry.comparingByValue())
                .forEach(e -> out.put(e.getKey(), e.getValue()));
        return out;
    }
}
