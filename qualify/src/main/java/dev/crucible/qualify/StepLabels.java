package dev.crucible.qualify;

import dev.crucible.model.LlamaConfig;
import dev.crucible.model.ParamLayout;

import java.util.ArrayList;
import java.util.List;

/**
 * Names for the ops of one training step, derived from the op order of {@code Llama.step} (forward, cross-entropy,
 * backward), {@code AdamW.gradNorm} and {@code AdamW.update}, which is fixed for a given config: the model needs no
 * naming hooks. {@link #at} checks each op's family against the expected one, so if the model's op order ever
 * changes the labels stop (and say so) rather than name the wrong tensor.
 */
public final class StepLabels {
    /**
     * @param phase   forward, backward or optimizer
     * @param layer   "embed", "layer 3", "final", "loss", "optim"
     * @param what    the tensor computed, e.g. "q_proj" or "dW down_proj"
     * @param op      the expected op family
     * @param tensors names of the op's outputs in this role (in {@code Op.outputs()} order)
     */
    public record Label(String phase, String layer, String what, String op, List<String> tensors) {
        public String tensor(int output) {
            return output < tensors.size() ? tensors.get(output) : "out" + output;
        }
    }

    private final List<Label> labels;
    private int mismatchAt = -1;

    private StepLabels(List<Label> labels) {
        this.labels = labels;
    }

    public List<Label> all() { return labels; }

    /** The op index where the recorded ops first disagreed with the expected order, or -1. */
    public int mismatchAt() { return mismatchAt; }

    /**
     * The label of op {@code index} whose family is {@code op}; a generic label past the end of the expected
     * sequence or after a mismatch.
     */
    public Label at(int index, String op, List<String> outputNames) {
        if (mismatchAt < 0 && index < labels.size() && labels.get(index).op().equals(op)) return labels.get(index);
        if (mismatchAt < 0 || index < mismatchAt) mismatchAt = index;
        return new Label("?", "?", op, op, outputNames);
    }

    /** The ops of zeroGrads, step(ids, targets, B, T, gradScale ≠ 0), gradNorm and update for this config. */
    public static StepLabels training(LlamaConfig cfg) {
        List<Label> l = new ArrayList<>();
        String fwd = "forward", bwd = "backward", opt = "optimizer";
        l.add(new Label(opt, "optim", "zero grads", "Fill", List.of("grads")));
        l.add(new Label(fwd, "embed", "embed_tokens", "Embedding", List.of("h")));
        for (int i = 0; i < cfg.layers(); i++) {
            String L = "layer " + i;
            l.add(new Label(fwd, L, "input_layernorm", "RmsNorm", List.of("ln1", "rstd1")));
            l.add(new Label(fwd, L, "q_proj", "MatMul", List.of("q")));
            l.add(new Label(fwd, L, "k_proj", "MatMul", List.of("k")));
            l.add(new Label(fwd, L, "v_proj", "MatMul", List.of("v")));
            l.add(new Label(fwd, L, "rope q", "Rope", List.of("q")));
            l.add(new Label(fwd, L, "rope k", "Rope", List.of("k")));
            l.add(new Label(fwd, L, "attention", "Attention", List.of("att", "lse")));
            l.add(new Label(fwd, L, "o_proj", "MatMul", List.of("att_out")));
            l.add(new Label(fwd, L, "residual (attn)", "Add", List.of("h_mid")));
            l.add(new Label(fwd, L, "post_attention_layernorm", "RmsNorm", List.of("ln2", "rstd2")));
            l.add(new Label(fwd, L, "gate_proj", "MatMul", List.of("gate")));
            l.add(new Label(fwd, L, "up_proj", "MatMul", List.of("up")));
            l.add(new Label(fwd, L, "swiglu", "SwiGlu", List.of("hid")));
            l.add(new Label(fwd, L, "down_proj", "MatMul", List.of("mlp_out")));
            l.add(new Label(fwd, L, "residual (mlp)", "Add", List.of("h")));
        }
        l.add(new Label(fwd, "final", "norm", "RmsNorm", List.of("lnf", "rstdf")));
        l.add(new Label(fwd, "final", "lm_head", "MatMul", List.of("logits")));
        l.add(new Label(fwd, "loss", "cross-entropy", "CrossEntropy", List.of("losses", "dlogits")));
        String head = cfg.tied() ? "lm_head (tied)" : "lm_head";
        l.add(new Label(bwd, "final", "dx " + head, "MatMul", List.of("dlnf")));
        l.add(new Label(bwd, "final", "dW " + head, "MatMul", List.of(cfg.tied() ? "grad embed_tokens" : "grad lm_head")));
        l.add(new Label(bwd, "final", "zero dh", "Fill", List.of("dh")));
        l.add(new Label(bwd, "final", "norm", "RmsNormBackward", List.of("dh", "grad norm")));
        for (int i = cfg.layers() - 1; i >= 0; i--) {
            String L = "layer " + i;
            linear(l, L, "down_proj", "dhid");
            l.add(new Label(bwd, L, "swiglu", "SwiGluBackward", List.of("dgate", "dup")));
            linear(l, L, "gate_proj", "dln2");
            linear(l, L, "up_proj", "dln2 (+=)");
            l.add(new Label(bwd, L, "post_attention_layernorm", "RmsNormBackward", List.of("dh", "grad post_attention_layernorm")));
            linear(l, L, "o_proj", "datt");
            l.add(new Label(bwd, L, "attention", "AttentionBackward", List.of("dq", "dk", "dv")));
            l.add(new Label(bwd, L, "rope q", "Rope", List.of("dq")));
            l.add(new Label(bwd, L, "rope k", "Rope", List.of("dk")));
            linear(l, L, "q_proj", "dln1");
            linear(l, L, "k_proj", "dln1 (+=)");
            linear(l, L, "v_proj", "dln1 (+=)");
            l.add(new Label(bwd, L, "input_layernorm", "RmsNormBackward", List.of("dh", "grad input_layernorm")));
        }
        l.add(new Label(bwd, "embed", "embed_tokens", "EmbeddingBackward", List.of("grad embed_tokens")));
        l.add(new Label(opt, "optim", "grad norm", "SumSquares", List.of("sum of squares")));
        for (ParamLayout.Tensor t : ParamLayout.of(cfg).tensors()) {
            l.add(new Label(opt, layerOf(t.name()), "adamw " + shortName(t.name()), "AdamW", List.of("param", "m", "v")));
        }
        return new StepLabels(List.copyOf(l));
    }

    private static void linear(List<Label> l, String layer, String name, String dx) {
        l.add(new Label("backward", layer, "dx " + name, "MatMul", List.of(dx)));
        l.add(new Label("backward", layer, "dW " + name, "MatMul", List.of("grad " + name)));
    }

    /** "model.layers.3.mlp.up_proj.weight" → "layer 3"; the embedding → "embed"; norm and lm_head → "final". */
    public static String layerOf(String param) {
        if (param.startsWith("model.layers.")) {
            String rest = param.substring("model.layers.".length());
            return "layer " + rest.substring(0, rest.indexOf('.'));
        }
        return param.startsWith("model.embed_tokens") ? "embed" : "final";
    }

    /** "model.layers.3.mlp.up_proj.weight" → "up_proj"; "model.embed_tokens.weight" → "embed_tokens". */
    public static String shortName(String param) {
        String s = param.endsWith(".weight") ? param.substring(0, param.length() - ".weight".length()) : param;
        return s.substring(s.lastIndexOf('.') + 1);
    }
}
