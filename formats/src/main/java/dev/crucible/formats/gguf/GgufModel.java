package dev.crucible.formats.gguf;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.crucible.formats.FormatException;
import dev.crucible.formats.hf.LlamaSpec;
import dev.crucible.formats.hf.ModelWeights;
import dev.crucible.formats.hf.WeightSource;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;
import dev.crucible.formats.tokenizer.Tokenizer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A Llama model as a GGUF file for llama.cpp's {@code llama} architecture.
 *
 * <p>Tensors: {@code token_embd}, {@code blk.N.attn_norm|attn_q|attn_k|attn_v|attn_output|ffn_norm|ffn_gate|ffn_up|ffn_down},
 * {@code output_norm}, {@code output} (absent when tied), each {@code .weight}, dims innermost first (an [out, in]
 * matrix is ne = [in, out]). Norm weights are always F32 (llama.cpp needs that); a matrix whose rows are not a whole
 * number of 32-element blocks falls back to F16 in a quantized export.
 *
 * <p>RoPE: Crucible (like HF) rotates the two halves of each head (x[i], x[i + d/2]); llama.cpp rotates consecutive
 * pairs (x[2i], x[2i+1]). So within each head of attn_q and attn_k, exported row 2i+h is HF row h·d/2 + i (h = 0, 1),
 * and the import applies the inverse.
 *
 * <p>Tokenizer: {@code tokenizer.ggml.model = "gpt2"} (byte-level BPE), tokens as GPT-2 unicode strings (special
 * tokens as their text, unused ids as {@code [PADn]}), token types (1 normal, 3 control, 5 unused), merges
 * {@code "a b"}, bos/eos ids, {@code add_bos_token = false} (Crucible adds no BOS), the pre-tokenizer name llama.cpp
 * knows for the pattern, and Crucible's exact pattern under {@code crucible.tokenizer.pattern} for round trips.
 */
public final class GgufModel {
    private GgufModel() {}

    public static final String PATTERN_KEY = "crucible.tokenizer.pattern", WHOLE_PIECE_KEY = "crucible.tokenizer.ignore_merges";
    static final int TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5;

    /** One exported tensor: GGUF name, HF name, whether Q/K rows are permuted, number of heads for the permutation. */
    private record Mapping(String gguf, String hf, int permuteHeads) {}

    private static List<Mapping> mappings(LlamaSpec s) {
        List<Mapping> m = new ArrayList<>();
        m.add(new Mapping("token_embd.weight", "model.embed_tokens.weight", 0));
        for (int l = 0; l < s.layers(); l++) {
            String b = "blk." + l + ".", p = "model.layers." + l + ".";
            m.add(new Mapping(b + "attn_norm.weight", p + "input_layernorm.weight", 0));
            m.add(new Mapping(b + "attn_q.weight", p + "self_attn.q_proj.weight", s.heads()));
            m.add(new Mapping(b + "attn_k.weight", p + "self_attn.k_proj.weight", s.kvHeads()));
            m.add(new Mapping(b + "attn_v.weight", p + "self_attn.v_proj.weight", 0));
            m.add(new Mapping(b + "attn_output.weight", p + "self_attn.o_proj.weight", 0));
            m.add(new Mapping(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", 0));
            m.add(new Mapping(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", 0));
            m.add(new Mapping(b + "ffn_up.weight", p + "mlp.up_proj.weight", 0));
            m.add(new Mapping(b + "ffn_down.weight", p + "mlp.down_proj.weight", 0));
        }
        m.add(new Mapping("output_norm.weight", "model.norm.weight", 0));
        if (!s.tied()) m.add(new Mapping("output.weight", "lm_head.weight", 0));
        return m;
    }

    /**
     * Reorders the rows of a [heads·d, cols] matrix from rotate-half to interleaved order (inverse = false) or back.
     */
    static float[] permuteRope(float[] w, int heads, int cols, boolean inverse) {
        int d = w.length / cols / heads, half = d / 2;
        float[] out = new float[w.length];
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < half; i++) {
                for (int k = 0; k < 2; k++) {
                    int hfRow = h * d + k * half + i, ggRow = h * d + 2 * i + k;
                    int from = inverse ? ggRow : hfRow, to = inverse ? hfRow : ggRow;
                    System.arraycopy(w, from * cols, out, to * cols, cols);
                }
            }
        }
        return out;
    }

    /** The llama.cpp pre-tokenizer name for a tokenizer's pattern. */
    static String preTokenizerName(Tokenizer t) {
        if (t.pattern().equals(Tokenizer.GPT2_PATTERN)) return "gpt-2";
        if (t.pattern().equals(Tokenizer.CL100K_PATTERN)) return t.mergesAsStrings().isEmpty() ? "llama-bpe" : "dbrx";
        return "default";
    }

    /** Writes the model as GGUF v3 with the given main type. */
    public static void write(ModelWeights m, Path file, GgmlType type, String name) throws IOException {
        LlamaSpec s = m.spec();
        Tokenizer tok = m.tokenizer();
        if (tok.vocabSize() > s.vocab()) throw new IllegalArgumentException("tokenizer has " + tok.vocabSize() + " ids, the model " + s.vocab());
        GgufWriter w = new GgufWriter();
        w.put("general.architecture", GgufValue.string("llama"));
        w.put("general.name", GgufValue.string(name));
        w.put("general.file_type", GgufValue.u32(type.fileType()));
        w.put("general.quantization_version", GgufValue.u32(2));
        w.put("llama.vocab_size", GgufValue.u32(s.vocab()));
        w.put("llama.context_length", GgufValue.u32(s.context()));
        w.put("llama.embedding_length", GgufValue.u32(s.dim()));
        w.put("llama.block_count", GgufValue.u32(s.layers()));
        w.put("llama.feed_forward_length", GgufValue.u32(s.ffn()));
        w.put("llama.attention.head_count", GgufValue.u32(s.heads()));
        w.put("llama.attention.head_count_kv", GgufValue.u32(s.kvHeads()));
        w.put("llama.attention.layer_norm_rms_epsilon", GgufValue.f32(s.normEps()));
        w.put("llama.rope.freq_base", GgufValue.f32(s.ropeTheta()));
        w.put("llama.rope.dimension_count", GgufValue.u32(s.headDim()));

        List<String> tokens = new ArrayList<>(s.vocab());
        int[] types = new int[s.vocab()];
        for (int id = 0; id < s.vocab(); id++) {
            if (id >= tok.vocabSize()) {
                tokens.add("[PAD" + id + "]");
                types[id] = TOKEN_UNUSED;
                continue;
            }
            tokens.add(tok.tokenAsGpt2Unicode(id));
            types[id] = switch (tok.tokenKind(id)) {
                case NORMAL -> TOKEN_NORMAL;
                case SPECIAL -> TOKEN_CONTROL;
                case UNUSED -> TOKEN_UNUSED;
            };
        }
        if (new HashSet<>(tokens).size() != tokens.size()) throw new IllegalArgumentException("the tokenizer's token strings are not unique; llama.cpp needs unique tokens");
        w.put("tokenizer.ggml.model", GgufValue.string("gpt2"));
        w.put("tokenizer.ggml.pre", GgufValue.string(preTokenizerName(tok)));
        w.put("tokenizer.ggml.tokens", GgufValue.strings(tokens));
        w.put("tokenizer.ggml.token_type", GgufValue.i32s(types));
        w.put("tokenizer.ggml.merges", GgufValue.strings(tok.mergesAsStrings()));
        if (m.bos() >= 0) w.put("tokenizer.ggml.bos_token_id", GgufValue.u32(m.bos()));
        if (m.eos() >= 0) w.put("tokenizer.ggml.eos_token_id", GgufValue.u32(m.eos()));
        w.put("tokenizer.ggml.add_bos_token", GgufValue.bool(false));
        w.put("tokenizer.ggml.add_eos_token", GgufValue.bool(false));
        w.put("tokenizer.chat_template", GgufValue.string(tok.chatTemplate() != null ? tok.chatTemplate() : dev.crucible.formats.hf.HfModel.DEFAULT_CHAT_TEMPLATE));
        w.put(PATTERN_KEY, GgufValue.string(tok.pattern()));

        Map<String, long[]> shapes = s.tensorShapes();
        for (Mapping mp : mappings(s)) {
            long[] shape = shapes.get(mp.hf());
            float[] x = m.tensors().get(mp.hf());
            long[] ne = new long[shape.length];
            for (int i = 0; i < shape.length; i++) ne[i] = shape[shape.length - 1 - i];
            if (mp.permuteHeads() > 0) x = permuteRope(x, mp.permuteHeads(), (int) shape[1], false);
            GgmlType t = shape.length == 1 ? GgmlType.F32 : type;
            if (t.rowBytes(ne[0]) < 0) t = GgmlType.F16;
            w.tensor(mp.gguf(), ne, t, Quant.encode(t, x, 0, x.length));
        }
        w.write(file);
    }

    /** Reads a {@code llama}-architecture GGUF: shape from metadata, weights dequantized to f32 in HF layout. */
    public static ModelWeights read(Path file) {
        try (WeightSource src = openStored(file)) {
            Map<String, float[]> tensors = new LinkedHashMap<>();
            for (String name : src.spec().tensorShapes().keySet()) {
                tensors.put(name, src.read(name, DType.F32).toArray(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(java.nio.ByteOrder.LITTLE_ENDIAN)));
            }
            return new ModelWeights(src.spec(), tensors, src.tokenizer(), src.format(), src.bos(), src.eos());
        }
    }

    /**
     * Opens a {@code llama}-architecture GGUF for loading tensor by tensor in the stored types (see
     * {@link WeightSource}); the file stays mapped until the source is closed.
     */
    public static WeightSource openStored(Path file) {
        GgufFile g = GgufFile.open(file);
        try {
            LlamaSpec spec = readSpec(g);
            Map<String, long[]> shapes = spec.tensorShapes();
            Map<String, Mapping> byHf = new LinkedHashMap<>();
            Set<GgmlType> seen = new java.util.TreeSet<>();
            for (Mapping mp : mappings(spec)) {
                GgufFile.TensorInfo t = g.tensor(mp.gguf());
                long[] shape = shapes.get(mp.hf());
                if (!java.util.Arrays.equals(t.shape(), shape)) {
                    throw new FormatException(file, "tensor '" + mp.gguf() + "' has dims " + java.util.Arrays.toString(t.ne()) + ", the metadata implies " + java.util.Arrays.toString(reverse(shape)));
                }
                byHf.put(mp.hf(), mp);
                if (shape.length > 1) seen.add(t.type());
            }
            // A tensor the model does not use changes what the file means (as llama.cpp, refuse it rather than
            // run something else than its author meant).
            Set<String> used = new java.util.HashSet<>();
            for (Mapping mp : byHf.values()) used.add(mp.gguf());
            for (String name : g.tensors().keySet()) {
                if (used.contains(name)) continue;
                if (name.equals("rope_freqs.weight")) {
                    throw new FormatException(file, "tensor 'rope_freqs.weight' (Llama 3.1-style rope frequency scaling) is not supported;"
                            + " without it the model would run with the wrong rotary frequencies");
                }
                throw new FormatException(file, "tensor '" + name + "' is not part of a llama model as Crucible runs it"
                        + " (another variant); refusing to ignore it");
            }
            Tokenizer tok = tokenizer(g, spec.vocab());
            int bos = g.integer("tokenizer.ggml.bos_token_id", 0, -1), eos = g.integer("tokenizer.ggml.eos_token_id", 0, -1);
            if (bos >= spec.vocab() || eos >= spec.vocab()) throw new FormatException(file, "bos/eos id " + Math.max(bos, eos) + " is outside the vocabulary of " + spec.vocab());
            String format = "gguf v" + g.version() + " " + seen;
            return new WeightSource() {
                public LlamaSpec spec() { return spec; }
                public Tokenizer tokenizer() { return tok; }
                public String format() { return format; }
                public int bos() { return bos; }
                public int eos() { return eos; }

                private Mapping mapping(String name) {
                    Mapping mp = byHf.get(name);
                    if (mp == null) throw new IllegalArgumentException("no tensor " + name);
                    return mp;
                }

                public DType storedType(String name) { return g.tensor(mapping(name).gguf()).type().dtype(); }

                public MemorySegment read(String name, DType type) {
                    Mapping mp = mapping(name);
                    GgufFile.TensorInfo t = g.tensor(mp.gguf());
                    long[] shape = shapes.get(name);
                    if (t.type().dtype() == type) {
                        if (mp.permuteHeads() == 0) return g.bytes(mp.gguf());
                        // Reorder whole rows of stored blocks (re-quantizing would not give the stored values back).
                        return MemorySegment.ofArray(permuteRows(g.bytes(mp.gguf()), type.bytes(shape[1]), mp.permuteHeads()));
                    }
                    float[] x = g.floats(mp.gguf());
                    if (mp.permuteHeads() > 0) x = permuteRope(x, mp.permuteHeads(), (int) shape[1], true);
                    return type == DType.F32 ? MemorySegment.ofArray(x) : MemorySegment.ofArray(dev.crucible.tensor.Blocks.encode(type, x, 0, x.length));
                }

                public void close() { g.close(); }
            };
        } catch (RuntimeException e) {
            g.close();
            throw e;
        }
    }

    /** {@link #permuteRope}'s inverse on rows of {@code rowBytes} stored bytes each. */
    static byte[] permuteRows(MemorySegment src, long rowBytes, int heads) {
        int rows = Math.toIntExact(src.byteSize() / rowBytes), d = rows / heads, half = d / 2;
        byte[] out = new byte[Math.toIntExact(src.byteSize())];
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < half; i++) {
                for (int k = 0; k < 2; k++) {
                    long hfRow = (long) h * d + k * half + i, ggRow = (long) h * d + 2L * i + k;
                    MemorySegment.copy(src, java.lang.foreign.ValueLayout.JAVA_BYTE, ggRow * rowBytes, out, (int) (hfRow * rowBytes), (int) rowBytes);
                }
            }
        }
        return out;
    }

    /** The model's shape from the {@code llama.*} metadata, checked against the embedding and the token list. */
    public static LlamaSpec readSpec(GgufFile g) {
        Path file = g.path();
        String arch = g.string("general.architecture");
        if (!arch.equals("llama")) throw new FormatException(file, "architecture '" + arch + "' is not supported (llama)");
        List<?> tokenList = g.array("tokenizer.ggml.tokens", GgufValue.Type.STRING);
        if (tokenList == null) throw new FormatException(file, "missing metadata 'tokenizer.ggml.tokens'");
        GgufFile.TensorInfo embd = g.tensor("token_embd.weight");
        int dim = g.integer("llama.embedding_length", 1), heads = g.integer("llama.attention.head_count", 1);
        int vocab = g.integer("llama.vocab_size", 1, tokenList.size());
        if (embd.ne().length != 2 || embd.ne()[0] != dim || embd.ne()[1] != vocab) {
            throw new FormatException(file, "token_embd.weight has dims " + java.util.Arrays.toString(embd.ne()) + ", the metadata implies [" + dim + ", " + vocab + "]");
        }
        if (tokenList.size() != vocab) throw new FormatException(file, "the tokenizer has " + tokenList.size() + " tokens but the model's vocabulary is " + vocab);
        int ropeDims = g.integer("llama.rope.dimension_count", 1, dim / heads);
        LlamaSpec spec;
        try {
            spec = new LlamaSpec(vocab, dim, g.integer("llama.block_count", 1), heads,
                    g.integer("llama.attention.head_count_kv", 1, heads), g.integer("llama.feed_forward_length", 1),
                    g.integer("llama.context_length", 1), g.real("llama.rope.freq_base", 10000f),
                    g.real("llama.attention.layer_norm_rms_epsilon", Float.NaN), !g.tensors().containsKey("output.weight"));
        } catch (IllegalArgumentException e) {
            throw new FormatException(file, "impossible model shape: " + e.getMessage());
        }
        if (ropeDims != spec.headDim()) throw new FormatException(file, "llama.rope.dimension_count " + ropeDims + " differs from the head dimension " + spec.headDim() + " (partial rotary is not supported)");
        GgufValue scaling = g.get("llama.rope.scaling.type");
        if (scaling != null && !"none".equals(scaling.value())) throw new FormatException(file, "rope scaling " + scaling + " is not supported");
        return spec;
    }

    private static long[] reverse(long[] a) {
        long[] r = new long[a.length];
        for (int i = 0; i < a.length; i++) r[i] = a[a.length - 1 - i];
        return r;
    }

    /** Rebuilds the byte-level BPE tokenizer from tokenizer.ggml.* by way of an equivalent tokenizer.json. */
    public static Tokenizer tokenizer(GgufFile g, int vocab) {
        Path file = g.path();
        String model = g.string("tokenizer.ggml.model");
        if (!model.equals("gpt2")) throw new FormatException(file, "tokenizer model '" + model + "' is not supported (gpt2: byte-level BPE)");
        List<?> tokens = g.array("tokenizer.ggml.tokens", GgufValue.Type.STRING);
        List<?> types = g.array("tokenizer.ggml.token_type", GgufValue.Type.INT32, GgufValue.Type.UINT32);
        if (types != null && types.size() != tokens.size()) throw new FormatException(file, "tokenizer.ggml.token_type has " + types.size() + " entries for " + tokens.size() + " tokens");
        List<?> merges = g.array("tokenizer.ggml.merges", GgufValue.Type.STRING);
        String pattern = g.get(PATTERN_KEY) != null ? g.string(PATTERN_KEY) : switch (g.get("tokenizer.ggml.pre") == null ? "default" : g.string("tokenizer.ggml.pre")) {
            case "llama-bpe", "llama3", "dbrx", "falcon3" -> Tokenizer.CL100K_PATTERN;
            default -> Tokenizer.GPT2_PATTERN;
        };
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = json.createObjectNode();
        root.put("version", "1.0");
        ArrayNode added = root.putArray("added_tokens");
        ObjectNode pre = root.putObject("pre_tokenizer");
        pre.put("type", "Sequence");
        ArrayNode steps = pre.putArray("pretokenizers");
        ObjectNode split = steps.addObject();
        split.put("type", "Split");
        split.putObject("pattern").put("Regex", pattern);
        split.put("behavior", "Isolated");
        split.put("invert", false);
        steps.addObject().put("type", "ByteLevel").put("add_prefix_space", false).put("use_regex", false);
        root.putObject("decoder").put("type", "ByteLevel");
        ObjectNode bpe = root.putObject("model");
        bpe.put("type", "BPE");
        bpe.put("ignore_merges", g.get("tokenizer.ggml.pre") != null && g.string("tokenizer.ggml.pre").equals("llama-bpe"));
        ObjectNode v = bpe.putObject("vocab");
        Set<String> seen = new HashSet<>();
        for (int id = 0; id < tokens.size(); id++) {
            String t = (String) tokens.get(id);
            if (!seen.add(t)) throw new FormatException(file, "token '" + t + "' (id " + id + ") appears twice in tokenizer.ggml.tokens");
            long type = types == null ? TOKEN_NORMAL : (Long) types.get(id);
            if (type == TOKEN_CONTROL || type == TOKEN_USER_DEFINED) {
                added.addObject().put("id", id).put("content", t).put("special", true);
            } else if (type != TOKEN_UNUSED) {
                v.put(t, id);
            }
        }
        ArrayNode ms = bpe.putArray("merges");
        if (merges != null) for (Object o : merges) ms.add((String) o);
        Path tmp = null;
        try {
            tmp = Files.createTempDirectory("gguf-");
            Files.write(tmp.resolve("tokenizer.json"), json.writeValueAsBytes(root));
            Tokenizer t = Tokenizer.load(tmp.resolve("tokenizer.json"));
            if (t.vocabSize() > vocab) throw new FormatException(file, "the tokenizer has " + t.vocabSize() + " ids but the model's vocabulary is " + vocab);
            GgufValue tmpl = g.get("tokenizer.chat_template");
            return tmpl != null && tmpl.type() == GgufValue.Type.STRING ? t.withChatTemplate((String) tmpl.value()) : t;
        } catch (FormatException e) {
            String msg = e.getMessage();
            String staged = tmp == null ? "\u0000" : tmp.resolve("tokenizer.json").toString();
            int cut = msg.indexOf(staged);
            throw new FormatException(file, "tokenizer.ggml.* do not form a valid byte-level BPE tokenizer: "
                    + (cut >= 0 ? msg.substring(cut + staged.length()).replaceFirst("^: ", "") : msg));
        } catch (IOException e) {
            throw new FormatException(file, "cannot stage the tokenizer: " + e.getMessage());
        } finally {
            if (tmp != null) {
                try {
                    Files.deleteIfExists(tmp.resolve("tokenizer.json"));
                    Files.deleteIfExists(tmp);
                } catch (IOException ignored) {
                    // a leftover temporary file is harmless
                }
            }
        }
    }
}
