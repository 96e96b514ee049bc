package dev.crucible.formats.hf;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The hyper-parameters of a dense Llama-family decoder as the file formats carry them (Hugging Face
 * {@code config.json}, GGUF {@code llama.*} keys). Mirrors the model module's {@code LlamaConfig}, which this module
 * cannot see. {@link #tensorShapes()} lists every weight under its Hugging Face name in the model's order.
 */
public record LlamaSpec(int vocab, int dim, int layers, int heads, int kvHeads, int ffn, int context,
                        float ropeTheta, float normEps, boolean tied) {

    /** @throws IllegalArgumentException naming the first impossible value */
    public LlamaSpec {
        if (vocab <= 0 || dim <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || ffn <= 0 || context <= 0) {
            throw new IllegalArgumentException("sizes must be positive: vocab " + vocab + ", dim " + dim + ", layers " + layers
                    + ", heads " + heads + ", kv heads " + kvHeads + ", ffn " + ffn + ", context " + context);
        }
        if (dim % heads != 0) throw new IllegalArgumentException("hidden size " + dim + " is not divisible by " + heads + " heads");
        if (heads % kvHeads != 0) throw new IllegalArgumentException(heads + " heads are not divisible by " + kvHeads + " key/value heads");
        if ((dim / heads) % 2 != 0) throw new IllegalArgumentException("head dimension " + dim / heads + " is odd");
        if (!(ropeTheta > 0) || Float.isInfinite(ropeTheta)) throw new IllegalArgumentException("rope theta " + ropeTheta + " is not positive");
        if (!(normEps > 0) || normEps >= 1) throw new IllegalArgumentException("norm epsilon " + normEps + " is not in (0, 1)");
    }

    public int headDim() { return dim / heads; }

    public int kvDim() { return kvHeads * headDim(); }

    /** Every parameter's HF name and PyTorch shape (outermost first), in the model's layout order. */
    public Map<String, long[]> tensorShapes() {
        Map<String, long[]> m = new LinkedHashMap<>();
        m.put("model.embed_tokens.weight", new long[] {vocab, dim});
        for (int l = 0; l < layers; l++) {
            String p = "model.layers." + l + ".";
            m.put(p + "input_layernorm.weight", new long[] {dim});
            m.put(p + "self_attn.q_proj.weight", new long[] {dim, dim});
            m.put(p + "self_attn.k_proj.weight", new long[] {kvDim(), dim});
            m.put(p + "self_attn.v_proj.weight", new long[] {kvDim(), dim});
            m.put(p + "self_attn.o_proj.weight", new long[] {dim, dim});
            m.put(p + "post_attention_layernorm.weight", new long[] {dim});
            m.put(p + "mlp.gate_proj.weight", new long[] {ffn, dim});
            m.put(p + "mlp.up_proj.weight", new long[] {ffn, dim});
            m.put(p + "mlp.down_proj.weight", new long[] {dim, ffn});
        }
        m.put("model.norm.weight", new long[] {dim});
        if (!tied) m.put("lm_head.weight", new long[] {vocab, dim});
        return m;
    }

    public long paramCount() {
        long n = 0;
        for (long[] s : tensorShapes().values()) {
            long k = 1;
            for (long d : s) k *= d;
            n += k;
        }
        return n;
    }
}
