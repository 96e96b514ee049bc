package dev.crucible.model;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Where each parameter lives in the one contiguous parameter buffer (gradients and AdamW moments use the same
 * layout). Names and shapes are Hugging Face's, so checkpoints and exports need no renaming. Order: embedding, each
 * layer's tensors, final norm, untied lm_head.
 */
public record ParamLayout(List<Tensor> tensors, long total) {

    /** One parameter: its HF name, PyTorch shape (outermost first), and offset in elements. */
    public record Tensor(String name, long[] shape, long offset, long size) {
        /** Weight decay applies to matrices only (not to norm weights), as in the reference optimizer. */
        public boolean decays() { return shape.length >= 2; }
    }

    public static ParamLayout of(LlamaConfig c) {
        List<Tensor> list = new ArrayList<>();
        long[] off = {0};
        java.util.function.BiConsumer<String, long[]> add = (name, shape) -> {
            long size = 1;
            for (long d : shape) size *= d;
            list.add(new Tensor(name, shape, off[0], size));
            off[0] += size;
        };
        add.accept("model.embed_tokens.weight", new long[]{c.vocab(), c.dim()});
        for (int l = 0; l < c.layers(); l++) {
            String p = "model.layers." + l + ".";
            add.accept(p + "input_layernorm.weight", new long[]{c.dim()});
            add.accept(p + "self_attn.q_proj.weight", new long[]{c.dim(), c.dim()});
            add.accept(p + "self_attn.k_proj.weight", new long[]{c.kvDim(), c.dim()});
            add.accept(p + "self_attn.v_proj.weight", new long[]{c.kvDim(), c.dim()});
            add.accept(p + "self_attn.o_proj.weight", new long[]{c.dim(), c.dim()});
            add.accept(p + "post_attention_layernorm.weight", new long[]{c.dim()});
            add.accept(p + "mlp.gate_proj.weight", new long[]{c.ffn(), c.dim()});
            add.accept(p + "mlp.up_proj.weight", new long[]{c.ffn(), c.dim()});
            add.accept(p + "mlp.down_proj.weight", new long[]{c.dim(), c.ffn()});
        }
        add.accept("model.norm.weight", new long[]{c.dim()});
        if (!c.tied()) add.accept("lm_head.weight", new long[]{c.vocab(), c.dim()});
        return new ParamLayout(Collections.unmodifiableList(list), off[0]);
    }

    public Map<String, Tensor> byName() {
        Map<String, Tensor> m = new LinkedHashMap<>();
        for (Tensor t : tensors) m.put(t.name(), t);
        return m;
    }

    public Tensor get(String name) {
        for (Tensor t : tensors) if (t.name().equals(name)) return t;
        throw new IllegalArgumentException("no parameter " + name);
    }
}
