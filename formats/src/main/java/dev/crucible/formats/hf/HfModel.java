package dev.crucible.formats.hf;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.crucible.formats.FormatException;
import dev.crucible.formats.gguf.Quant;
import dev.crucible.formats.safetensors.SafeTensors;
import dev.crucible.formats.safetensors.SafeTensorsWriter;
import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Shape;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A Hugging Face {@code LlamaForCausalLM} directory, as transformers and vLLM load it:
 * <ul>
 *   <li>{@code config.json}: architecture, sizes, {@code rms_norm_eps}, {@code rope_theta}, {@code tie_word_embeddings},
 *       {@code torch_dtype};</li>
 *   <li>{@code generation_config.json}: bos/eos ids, greedy decoding by default;</li>
 *   <li>{@code model.safetensors}, or shards {@code model-0000i-of-0000n.safetensors} with
 *       {@code model.safetensors.index.json} ({@code metadata.total_size}, {@code weight_map}) when the weights exceed the
 *       shard limit; {@code lm_head.weight} is left out when tied;</li>
 *   <li>{@code tokenizer.json} and {@code tokenizer_config.json} (special tokens, chat template).</li>
 * </ul>
 */
public final class HfModel {
    private HfModel() {}

    private static final ObjectMapper JSON = new ObjectMapper();
    public static final String CONFIG = "config.json", GENERATION = "generation_config.json", SINGLE = "model.safetensors",
            INDEX = "model.safetensors.index.json", TOKENIZER = "tokenizer.json", TOKENIZER_CONFIG = "tokenizer_config.json";

    /** A chat template for tokenizers that bring none: role-prefixed turns separated by the end-of-text token. */
    public static final String DEFAULT_CHAT_TEMPLATE = "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}"
            + "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}";

    /** The dtypes an export can use. */
    public static DType parseDtype(String s) {
        return switch (s.toLowerCase()) {
            case "f32", "float32" -> DType.F32;
            case "bf16", "bfloat16" -> DType.BF16;
            case "f16", "float16" -> DType.F16;
            default -> throw new IllegalArgumentException("unknown dtype '" + s + "' for an HF export (f32, bf16, f16)");
        };
    }

    private static String torchDtype(DType t) {
        return switch (t) {
            case F32 -> "float32";
            case BF16 -> "bfloat16";
            case F16 -> "float16";
            default -> throw new IllegalArgumentException(t + " is not an HF export dtype");
        };
    }

    /** Writes the directory (created if needed). Returns the files written. */
    public static List<Path> write(ModelWeights m, Path dir, DType dtype, long shardBytes) throws IOException {
        if (shardBytes <= 0) throw new IllegalArgumentException("shard size must be positive");
        Files.createDirectories(dir);
        LlamaSpec s = m.spec();
        List<Path> written = new ArrayList<>();

        ObjectNode cfg = JSON.createObjectNode();
        cfg.putArray("architectures").add("LlamaForCausalLM");
        cfg.put("model_type", "llama");
        cfg.put("vocab_size", s.vocab());
        cfg.put("hidden_size", s.dim());
        cfg.put("intermediate_size", s.ffn());
        cfg.put("num_hidden_layers", s.layers());
        cfg.put("num_attention_heads", s.heads());
        cfg.put("num_key_value_heads", s.kvHeads());
        cfg.put("head_dim", s.headDim());
        cfg.put("max_position_embeddings", s.context());
        cfg.put("rms_norm_eps", (double) s.normEps());
        cfg.put("rope_theta", (double) s.ropeTheta());
        cfg.putNull("rope_scaling");
        cfg.put("tie_word_embeddings", s.tied());
        cfg.put("hidden_act", "silu");
        cfg.put("attention_bias", false);
        cfg.put("attention_dropout", 0.0);
        cfg.put("mlp_bias", false);
        cfg.put("pretraining_tp", 1);
        cfg.put("initializer_range", 0.02);
        cfg.put("use_cache", true);
        cfg.put("torch_dtype", torchDtype(dtype));
        if (m.bos() >= 0) cfg.put("bos_token_id", m.bos());
        if (m.eos() >= 0) cfg.put("eos_token_id", m.eos());
        written.add(writeJson(dir.resolve(CONFIG), cfg));

        ObjectNode gen = JSON.createObjectNode();
        if (m.bos() >= 0) gen.put("bos_token_id", m.bos());
        if (m.eos() >= 0) gen.put("eos_token_id", m.eos());
        gen.put("do_sample", false);
        gen.put("max_length", s.context());
        written.add(writeJson(dir.resolve(GENERATION), gen));

        // Shards: tensors in layout order, a new shard when the next tensor would pass the limit.
        Map<String, long[]> shapes = s.tensorShapes();
        List<List<String>> shards = new ArrayList<>();
        long current = 0, total = 0;
        for (Map.Entry<String, long[]> e : shapes.entrySet()) {
            long bytes = dtype.bytes(Shape.of(e.getValue()).elements());
            if (shards.isEmpty() || (current > 0 && current + bytes > shardBytes)) {
                shards.add(new ArrayList<>());
                current = 0;
            }
            shards.getLast().add(e.getKey());
            current += bytes;
            total += bytes;
        }
        Map<String, String> weightMap = new LinkedHashMap<>();
        for (int i = 0; i < shards.size(); i++) {
            String name = shards.size() == 1 ? SINGLE : String.format("model-%05d-of-%05d.safetensors", i + 1, shards.size());
            SafeTensorsWriter w = new SafeTensorsWriter().metadata("format", "pt");
            for (String t : shards.get(i)) {
                w.add(t, dtype, Shape.of(shapes.get(t)), MemorySegment.ofArray(encode(m.tensors().get(t), dtype)));
                weightMap.put(t, name);
            }
            w.write(dir.resolve(name));
            written.add(dir.resolve(name));
        }
        if (shards.size() > 1) {
            ObjectNode idx = JSON.createObjectNode();
            idx.putObject("metadata").put("total_size", total);
            ObjectNode wm = idx.putObject("weight_map");
            weightMap.forEach(wm::put);
            written.add(writeJson(dir.resolve(INDEX), idx));
        } else {
            Files.deleteIfExists(dir.resolve(INDEX));
        }

        Tokenizer tok = m.tokenizer();
        String template = tok.chatTemplate() != null ? tok.chatTemplate() : DEFAULT_CHAT_TEMPLATE;
        ObjectNode tc = JSON.createObjectNode();
        tc.put("tokenizer_class", "PreTrainedTokenizerFast");
        tc.put("model_max_length", s.context());
        tc.put("clean_up_tokenization_spaces", false);
        if (m.bos() >= 0) tc.put("bos_token", tok.tokenAsGpt2Unicode(m.bos()));
        if (m.eos() >= 0) tc.put("eos_token", tok.tokenAsGpt2Unicode(m.eos()));
        tc.put("add_bos_token", false);
        tc.put("add_eos_token", false);
        ObjectNode decl = tc.putObject("added_tokens_decoder");
        for (String sp : tok.specialTokens()) {
            ObjectNode a = decl.putObject(String.valueOf(tok.specialId(sp).getAsInt()));
            a.put("content", sp);
            a.put("lstrip", false);
            a.put("normalized", false);
            a.put("rstrip", false);
            a.put("single_word", false);
            a.put("special", true);
        }
        tc.put("chat_template", template);
        written.add(writeJson(dir.resolve(TOKENIZER_CONFIG), tc));
        tok.withChatTemplate(template).saveHuggingFace(dir.resolve(TOKENIZER));
        written.add(dir.resolve(TOKENIZER));
        return written;
    }

    private static Path writeJson(Path file, JsonNode node) throws IOException {
        Files.write(file, JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(node));
        return file;
    }

    private static byte[] encode(float[] x, DType t) {
        byte[] out = new byte[(int) t.bytes(x.length)];
        MemorySegment s = MemorySegment.ofArray(out);
        ValueLayout.OfShort i16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
        ValueLayout.OfFloat f32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < x.length; i++) {
            switch (t) {
                case F32 -> s.setAtIndex(f32, i, x[i]);
                case F16 -> s.setAtIndex(i16, i, Float.floatToFloat16(x[i]));
                case BF16 -> s.setAtIndex(i16, i, Quant.toBf16(x[i]));
                default -> throw new IllegalArgumentException(t.toString());
            }
        }
        return out;
    }

    /** True if the directory looks like an HF model: a config.json beside model.safetensors or its shard index. */
    public static boolean isHfDir(Path dir) {
        return Files.isDirectory(dir) && Files.isRegularFile(dir.resolve(CONFIG))
                && (Files.isRegularFile(dir.resolve(SINGLE)) || Files.isRegularFile(dir.resolve(INDEX)));
    }

    /** Reads the shape from config.json; refuses architectures and options Crucible's model does not implement. */
    public static LlamaSpec readSpec(Path configFile) {
        JsonNode c;
        try {
            c = JSON.readTree(configFile.toFile());
        } catch (IOException e) {
            throw new FormatException(configFile, "is not readable JSON: " + e.getMessage());
        }
        if (c == null || !c.isObject()) throw new FormatException(configFile, "is not a JSON object");
        String type = c.path("model_type").asText("");
        if (!type.equals("llama") && !type.equals("mistral")) {
            throw new FormatException(configFile, "model_type '" + type + "' is not supported (llama, mistral: dense Llama-family decoders)");
        }
        if (c.path("attention_bias").asBoolean(false) || c.path("mlp_bias").asBoolean(false)) {
            throw new FormatException(configFile, "attention_bias/mlp_bias are not supported");
        }
        JsonNode scaling = c.get("rope_scaling");
        if (scaling != null && !scaling.isNull()) throw new FormatException(configFile, "rope_scaling " + scaling + " is not supported");
        String act = c.path("hidden_act").asText("silu");
        if (!act.equals("silu")) throw new FormatException(configFile, "hidden_act '" + act + "' is not supported (silu)");
        int heads = intField(configFile, c, "num_attention_heads", -1);
        int dim = intField(configFile, c, "hidden_size", -1);
        if (c.has("head_dim") && !c.get("head_dim").isNull() && heads > 0 && intField(configFile, c, "head_dim", -1) * heads != dim) {
            throw new FormatException(configFile, "head_dim " + c.get("head_dim") + " × " + heads + " heads differs from hidden_size " + dim + " (not supported)");
        }
        try {
            return new LlamaSpec(intField(configFile, c, "vocab_size", -1), dim, intField(configFile, c, "num_hidden_layers", -1),
                    heads, intField(configFile, c, "num_key_value_heads", heads), intField(configFile, c, "intermediate_size", -1),
                    intField(configFile, c, "max_position_embeddings", 2048),
                    (float) c.path("rope_theta").asDouble(10000), (float) c.path("rms_norm_eps").asDouble(1e-6),
                    c.path("tie_word_embeddings").asBoolean(false));
        } catch (IllegalArgumentException e) {
            throw new FormatException(configFile, "impossible model shape: " + e.getMessage());
        }
    }

    private static int intField(Path file, JsonNode c, String key, int dflt) {
        JsonNode n = c.get(key);
        if (n == null || n.isNull()) {
            if (dflt >= 0) return dflt;
            throw new FormatException(file, "missing \"" + key + "\"");
        }
        if (!n.isIntegralNumber() || !n.canConvertToInt() || n.asInt() <= 0) throw new FormatException(file, "\"" + key + "\" is " + n + ", expected a positive integer");
        return n.asInt();
    }

    /** Reads an HF directory: config.json, single or sharded safetensors, tokenizer.json. */
    public static ModelWeights read(Path dir) {
        LlamaSpec spec = readSpec(dir.resolve(CONFIG));
        Map<String, long[]> shapes = spec.tensorShapes();
        Map<String, Path> where = new HashMap<>();
        Path index = dir.resolve(INDEX);
        if (Files.isRegularFile(index)) {
            JsonNode idx;
            try {
                idx = JSON.readTree(index.toFile());
            } catch (IOException e) {
                throw new FormatException(index, "is not readable JSON: " + e.getMessage());
            }
            JsonNode wm = idx == null ? null : idx.get("weight_map");
            if (wm == null || !wm.isObject()) throw new FormatException(index, "has no \"weight_map\" object");
            for (Iterator<Map.Entry<String, JsonNode>> it = wm.properties().iterator(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                String f = e.getValue().asText("");
                if (f.isEmpty() || f.contains("/") || f.contains("\\") || f.equals("..")) {
                    throw new FormatException(index, "weight_map entry for '" + e.getKey() + "' names a bad file '" + f + "'");
                }
                where.put(e.getKey(), dir.resolve(f));
            }
        } else if (Files.isRegularFile(dir.resolve(SINGLE))) {
            for (String n : shapes.keySet()) where.put(n, dir.resolve(SINGLE));
        } else {
            throw new FormatException(dir, "has neither " + SINGLE + " nor " + INDEX);
        }
        Map<String, float[]> tensors = new LinkedHashMap<>();
        Map<Path, List<String>> byFile = new LinkedHashMap<>();
        for (String n : shapes.keySet()) {
            Path f = where.get(n);
            if (f == null) throw new FormatException(index, "weight_map has no entry for '" + n + "'");
            byFile.computeIfAbsent(f, k -> new ArrayList<>()).add(n);
        }
        String dtypes = "";
        for (Map.Entry<Path, List<String>> e : byFile.entrySet()) {
            try (SafeTensors st = SafeTensors.open(e.getKey())) {
                for (String n : e.getValue()) {
                    SafeTensors.Entry en = st.entry(n);
                    if (!en.shape().equals(Shape.of(shapes.get(n)))) {
                        throw new FormatException(e.getKey(), "tensor '" + n + "' has shape " + en.shape() + ", config.json implies " + Shape.of(shapes.get(n)));
                    }
                    if (en.type() != DType.F32 && en.type() != DType.F16 && en.type() != DType.BF16 && en.type() != DType.F64) {
                        throw new FormatException(e.getKey(), "tensor '" + n + "' is " + en.type() + ", not a float type");
                    }
                    if (!dtypes.contains(en.type().name())) dtypes += (dtypes.isEmpty() ? "" : "+") + en.type().name();
                    tensors.put(n, st.floats(n));
                }
            }
        }
        Tokenizer tok = Tokenizer.load(dir.resolve(TOKENIZER));
        if (tok.vocabSize() > spec.vocab()) {
            throw new FormatException(dir.resolve(TOKENIZER), "has " + tok.vocabSize() + " token ids but config.json's vocab_size is " + spec.vocab());
        }
        int bos = -1, eos = -1;
        JsonNode gen = readOptional(dir.resolve(GENERATION));
        JsonNode cfg = readOptional(dir.resolve(CONFIG));
        for (JsonNode n : new JsonNode[] {cfg, gen}) {
            if (n == null) continue;
            if (n.path("bos_token_id").canConvertToInt()) bos = n.path("bos_token_id").asInt();
            JsonNode e = n.path("eos_token_id");
            if (e.isArray() && !e.isEmpty()) e = e.get(0);
            if (e.isIntegralNumber() && e.canConvertToInt()) eos = e.asInt();
        }
        return new ModelWeights(spec, tensors, tok, "hf safetensors (" + dtypes + (byFile.size() > 1 ? ", " + byFile.size() + " shards" : "") + ")", bos, eos);
    }

    private static JsonNode readOptional(Path f) {
        if (!Files.isRegularFile(f)) return null;
        try {
            return JSON.readTree(f.toFile());
        } catch (IOException e) {
            throw new FormatException(f, "is not readable JSON: " + e.getMessage());
        }
    }

}
