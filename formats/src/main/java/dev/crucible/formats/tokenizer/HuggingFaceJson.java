package dev.crucible.formats.tokenizer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.crucible.formats.FormatException;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Hugging Face {@code tokenizer.json}, restricted to what a byte-level BPE needs: model BPE with GPT-2-unicode
 * vocabulary and merges, a pre-tokenizer made of an optional regex Split followed by ByteLevel, an optional Unicode
 * normalization, and added tokens. Everything else that changes how text is split is refused with a message naming
 * it, rather than silently encoding differently from the tokenizers library. Post-processors (which add BOS/EOS
 * around a sequence) are ignored: callers add such tokens themselves.
 *
 * <p>All added tokens are treated as special tokens: they are matched only by {@link Tokenizer#encodeWithSpecials}.
 */
final class HuggingFaceJson {
    private static final String EXPECTED = "expected a Hugging Face tokenizer.json with a byte-level BPE model";
    private static final String CONFIG = "tokenizer_config.json";

    private HuggingFaceJson() {
    }

    // ---------------------------------------------------------------- reading

    static Tokenizer read(Path file, byte[] content) {
        ObjectMapper mapper = new ObjectMapper();
        JsonNode root;
        try {
            root = mapper.readTree(content);
        } catch (IOException e) {
            throw new FormatException(file, "is not valid JSON (" + firstLine(e) + "); " + EXPECTED);
        }
        if (root == null || !root.isObject()) throw new FormatException(file, "is JSON but not an object; " + EXPECTED);
        if (root.has("pat_str")) {
            throw new FormatException(file, "is tiktoken metadata (a pattern and special tokens), not a tokenizer; "
                    + "load the .tiktoken rank file beside it");
        }
        JsonNode model = root.get("model");
        if (model == null || !model.isObject()) {
            throw new FormatException(file, "is JSON without a \"model\" object; " + EXPECTED);
        }
        String type = model.path("type").asText("");
        if (type.isEmpty() && model.has("merges")) type = "BPE"; // files from old tokenizers versions omit it
        if (!type.equals("BPE")) {
            throw new FormatException(file, "has a " + (type.isEmpty() ? "model of unknown type" : type + " model")
                    + "; " + EXPECTED);
        }
        if (model.path("byte_fallback").asBoolean(false)) {
            throw new FormatException(file, "is a BPE over characters with byte_fallback (SentencePiece style); "
                    + EXPECTED);
        }
        for (String field : new String[] {"continuing_subword_prefix", "end_of_word_suffix"}) {
            if (!model.path(field).asText("").isEmpty()) {
                throw new FormatException(file, "uses " + field + ", which byte-level BPE does not; " + EXPECTED);
            }
        }
        String pattern = preTokenizer(file, root.get("pre_tokenizer"));
        Normalizer.Form normalizer = normalizer(file, root.get("normalizer"));

        JsonNode vocabNode = model.get("vocab");
        if (vocabNode == null || !vocabNode.isObject()) {
            throw new FormatException(file, "model has no \"vocab\" object; " + EXPECTED);
        }
        Map<String, Integer> vocab = new HashMap<>(vocabNode.size() * 2);
        int size = 0;
        for (Iterator<Map.Entry<String, JsonNode>> it = vocabNode.properties().iterator(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!e.getValue().canConvertToInt() || e.getValue().asInt() < 0) {
                throw new FormatException(file, "vocab entry '" + e.getKey() + "' has no valid id");
            }
            vocab.put(e.getKey(), e.getValue().asInt());
            size = Math.max(size, e.getValue().asInt() + 1);
        }
        Map<String, Integer> specials = new TreeMap<>();
        Map<Integer, String> specialById = new TreeMap<>();
        JsonNode added = root.get("added_tokens");
        if (added != null && added.isArray()) {
            for (JsonNode a : added) {
                JsonNode id = a.get("id");
                JsonNode text = a.get("content");
                if (id == null || !id.canConvertToInt() || id.asInt() < 0 || text == null || !text.isTextual()
                        || text.asText().isEmpty()) {
                    throw new FormatException(file, "added token " + a + " needs an \"id\" and a \"content\"");
                }
                if (specials.containsKey(text.asText()) || specialById.containsKey(id.asInt())) {
                    throw new FormatException(file, "added token " + a + " repeats an earlier id or content");
                }
                specials.put(text.asText(), id.asInt());
                specialById.put(id.asInt(), text.asText());
                size = Math.max(size, id.asInt() + 1);
            }
        }

        byte[][] bytes = new byte[size][];
        Map<Integer, String> seen = new HashMap<>();
        for (Map.Entry<String, Integer> e : vocab.entrySet()) {
            int id = e.getValue();
            if (specialById.containsKey(id)) continue; // the added token's text is what the id stands for
            byte[] b = ByteLevel.decode(e.getKey());
            if (b == null || b.length == 0) {
                throw new FormatException(file, "vocab entry '" + e.getKey() + "' (id " + id
                        + ") is not in GPT-2 byte-level form; " + EXPECTED);
            }
            if (bytes[id] != null) {
                throw new FormatException(file, "vocab entries '" + e.getKey() + "' and '" + seen.get(id)
                        + "' share id " + id);
            }
            bytes[id] = b;
            seen.put(id, e.getKey());
        }

        JsonNode mergesNode = model.get("merges");
        if (mergesNode == null || !mergesNode.isArray()) {
            throw new FormatException(file, "model has no \"merges\" list; " + EXPECTED);
        }
        List<int[]> merges = new ArrayList<>(mergesNode.size());
        int index = 0;
        for (JsonNode m : mergesNode) {
            String left;
            String right;
            if (m.isTextual()) {
                String[] parts = m.asText().split(" ", -1);
                if (parts.length != 2) {
                    throw new FormatException(file, "merge #" + index + " '" + m.asText()
                            + "' is not two tokens separated by one space");
                }
                left = parts[0];
                right = parts[1];
            } else if (m.isArray() && m.size() == 2 && m.get(0).isTextual() && m.get(1).isTextual()) {
                left = m.get(0).asText();
                right = m.get(1).asText();
            } else {
                throw new FormatException(file, "merge #" + index + " is neither \"a b\" nor [\"a\", \"b\"]: " + m);
            }
            merges.add(new int[] {vocabId(file, vocab, left, index), vocabId(file, vocab, right, index),
                    vocabId(file, vocab, left + right, index)});
            index++;
        }

        Map<String, Integer> specialsByIdOrder = new LinkedHashMap<>();
        specialById.forEach((id, text) -> specialsByIdOrder.put(text, id));
        boolean ignoreMerges = model.path("ignore_merges").asBoolean(false);
        Tokenizer t;
        try {
            t = new Tokenizer(nameOf(file), pattern, bytes, merges, ignoreMerges, specialsByIdOrder, normalizer,
                    chatTemplate(file));
        } catch (PatternSyntaxException e) {
            throw new FormatException(file, "pre-tokenizer regex is not supported: " + e.getDescription());
        }
        for (int id = 0; id < bytes.length; id++) {
            if (bytes[id] != null && t.idOfBytes(bytes[id]) != id) {
                throw new FormatException(file, "vocab ids " + t.idOfBytes(bytes[id]) + " and " + id
                        + " stand for the same bytes");
            }
        }
        return t;
    }

    private static int vocabId(Path file, Map<String, Integer> vocab, String token, int index) {
        Integer id = vocab.get(token);
        if (id == null) throw new FormatException(file, "merge #" + index + " uses '" + token + "', not in the vocab");
        return id;
    }

    /** The Java pattern that splits text like the file's pre_tokenizer. */
    private static String preTokenizer(Path file, JsonNode pre) {
        if (pre == null || pre.isNull()) {
            throw new FormatException(file, "has no pre_tokenizer, so it is not byte-level; " + EXPECTED);
        }
        List<JsonNode> steps = new ArrayList<>();
        if (pre.path("type").asText("").equals("Sequence")) pre.path("pretokenizers").forEach(steps::add);
        else steps.add(pre);
        String pattern = null;
        boolean byteLevel = false;
        for (JsonNode step : steps) {
            String type = step.path("type").asText("");
            switch (type) {
                case "Split" -> {
                    if (pattern != null || byteLevel) {
                        throw unsupported(file, "a Split after another split or after ByteLevel");
                    }
                    if (!step.path("behavior").asText("").equals("Isolated") || step.path("invert").asBoolean(false)) {
                        throw unsupported(file, "a Split with behavior " + step.path("behavior").asText("?")
                                + (step.path("invert").asBoolean(false) ? " inverted" : "")
                                + " (only Isolated is)");
                    }
                    JsonNode p = step.path("pattern");
                    if (p.path("Regex").isTextual()) {
                        pattern = Patterns.translate(p.get("Regex").asText(), Patterns.Dialect.ONIGURUMA);
                    } else if (p.path("String").isTextual()) {
                        pattern = Pattern.quote(p.get("String").asText());
                    } else {
                        throw new FormatException(file, "Split pre-tokenizer has no Regex or String pattern");
                    }
                }
                case "ByteLevel" -> {
                    if (step.path("add_prefix_space").asBoolean(false)) {
                        throw unsupported(file, "ByteLevel with add_prefix_space");
                    }
                    if (step.path("use_regex").asBoolean(true)) {
                        if (pattern != null) throw unsupported(file, "a Split followed by ByteLevel with use_regex");
                        pattern = Patterns.GPT2;
                    }
                    byteLevel = true;
                }
                default -> throw unsupported(file, "the " + (type.isEmpty() ? "untyped" : type) + " pre-tokenizer");
            }
        }
        if (!byteLevel) {
            throw new FormatException(file, "has no ByteLevel pre-tokenizer, so it is not byte-level; " + EXPECTED);
        }
        // ByteLevel without its regex and no Split: the whole text (between added tokens) is one pre-token.
        return pattern != null ? pattern : "(?s).+";
    }

    private static FormatException unsupported(Path file, String what) {
        return new FormatException(file, "uses " + what + ", which is not supported; " + EXPECTED
                + " whose pre_tokenizer is [Split(Regex, Isolated),] ByteLevel");
    }

    private static Normalizer.Form normalizer(Path file, JsonNode n) {
        if (n == null || n.isNull()) return null;
        String type = n.path("type").asText("");
        if (type.equals("Sequence")) {
            JsonNode list = n.path("normalizers");
            if (list.isEmpty()) return null;
            if (list.size() == 1) return normalizer(file, list.get(0));
        }
        return switch (type) {
            case "NFC" -> Normalizer.Form.NFC;
            case "NFD" -> Normalizer.Form.NFD;
            case "NFKC" -> Normalizer.Form.NFKC;
            case "NFKD" -> Normalizer.Form.NFKD;
            default -> throw new FormatException(file, "uses the " + type + " normalizer, which is not supported "
                    + "(only none or one of NFC, NFD, NFKC, NFKD)");
        };
    }

    private static String nameOf(Path file) {
        String n = file.getFileName().toString();
        if (n.equals("tokenizer.json")) {
            Path dir = file.toAbsolutePath().getParent();
            return dir != null && dir.getFileName() != null ? dir.getFileName().toString() : "tokenizer";
        }
        return n.endsWith(".json") ? n.substring(0, n.length() - 5) : n;
    }

    /** The chat_template of a tokenizer_config.json beside the file: a string, or a list of named templates. */
    private static String chatTemplate(Path file) {
        Path config = file.resolveSibling(CONFIG);
        if (!Files.isRegularFile(config)) return null;
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(config.toFile());
        } catch (IOException e) {
            throw new FormatException(config, "is not valid JSON (" + firstLine(e) + ")");
        }
        JsonNode t = root == null ? null : root.get("chat_template");
        if (t == null || t.isNull()) return null;
        if (t.isTextual()) return t.asText();
        if (t.isArray()) {
            String first = null;
            for (JsonNode named : t) {
                String text = named.path("template").asText(null);
                if ("default".equals(named.path("name").asText(null))) return text;
                if (first == null) first = text;
            }
            return first;
        }
        throw new FormatException(config, "\"chat_template\" is neither a string nor a list of named templates");
    }

    private static String firstLine(Exception e) {
        String m = e instanceof JsonProcessingException j ? j.getOriginalMessage() : e.getMessage();
        if (m == null) return e.getClass().getSimpleName();
        int nl = m.indexOf('\n');
        return nl < 0 ? m : m.substring(0, nl);
    }

    // ---------------------------------------------------------------- writing

    static void write(Tokenizer t, Path file) {
        ObjectMapper mapper = new ObjectMapper();
        ObjectNode root = mapper.createObjectNode();
        root.put("version", "1.0");
        root.putNull("truncation");
        root.putNull("padding");
        ArrayNode added = root.putArray("added_tokens");
        for (String s : t.specialTokens()) {
            ObjectNode a = added.addObject();
            a.put("id", t.specialId(s).getAsInt());
            a.put("content", s);
            a.put("single_word", false);
            a.put("lstrip", false);
            a.put("rstrip", false);
            a.put("normalized", false);
            a.put("special", true);
        }
        if (t.normalizer() == null) root.putNull("normalizer");
        else root.putObject("normalizer").put("type", t.normalizer().name());

        ObjectNode pre = root.putObject("pre_tokenizer");
        pre.put("type", "Sequence");
        ArrayNode steps = pre.putArray("pretokenizers");
        ObjectNode split = steps.addObject();
        split.put("type", "Split");
        split.putObject("pattern").put("Regex", t.pattern());
        split.put("behavior", "Isolated");
        split.put("invert", false);
        ObjectNode byteLevel = steps.addObject();
        byteLevel.put("type", "ByteLevel");
        byteLevel.put("add_prefix_space", false);
        byteLevel.put("trim_offsets", true);
        byteLevel.put("use_regex", false);

        root.putNull("post_processor");
        ObjectNode decoder = root.putObject("decoder");
        decoder.put("type", "ByteLevel");
        decoder.put("add_prefix_space", true);
        decoder.put("trim_offsets", true);
        decoder.put("use_regex", true);

        ObjectNode model = root.putObject("model");
        model.put("type", "BPE");
        model.putNull("dropout");
        model.putNull("unk_token");
        model.putNull("continuing_subword_prefix");
        model.putNull("end_of_word_suffix");
        model.put("fuse_unk", false);
        model.put("byte_fallback", false);
        model.put("ignore_merges", t.wholePieceFirst());
        ObjectNode vocab = model.putObject("vocab");
        for (int id = 0; id < t.vocabSize(); id++) {
            if (t.tokenKind(id) == Tokenizer.TokenKind.NORMAL) vocab.put(t.tokenAsGpt2Unicode(id), id);
        }
        ArrayNode merges = model.putArray("merges");
        for (String m : t.mergesAsStrings()) merges.add(m);

        try {
            Path dir = file.toAbsolutePath().getParent();
            if (dir != null) Files.createDirectories(dir);
            writeAtomically(file, mapper.writerWithDefaultPrettyPrinter().writeValueAsBytes(root));
            if (t.chatTemplate() != null) {
                Path config = file.resolveSibling(CONFIG);
                ObjectNode cfg = mapper.createObjectNode();
                if (Files.isRegularFile(config)) {
                    JsonNode old = mapper.readTree(config.toFile());
                    if (old instanceof ObjectNode o) cfg = o;
                }
                cfg.put("chat_template", t.chatTemplate());
                writeAtomically(config, mapper.writerWithDefaultPrettyPrinter().writeValueAsBytes(cfg));
            }
        } catch (IOException e) {
            throw new FormatException(file, "cannot be written: " + e.getMessage(), e);
        }
    }

    /** A reader never sees half a file, and a failed write leaves the old file in place. */
    private static void writeAtomically(Path file, byte[] content) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        Files.write(tmp, content);
        try {
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
        }
    }
}
