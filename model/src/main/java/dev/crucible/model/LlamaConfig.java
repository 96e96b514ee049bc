package dev.crucible.model;

/**
 * Shape of a dense Llama decoder, Hugging Face {@code LlamaForCausalLM} semantics. {@code context} is the longest
 * sequence the model is trained or served at.
 */
public record LlamaConfig(int vocab, int dim, int layers, int heads, int kvHeads, int ffn, int context,
                          float ropeTheta, float normEps, boolean tied) {

    /** Checks the shape is buildable; the message says what to change. */
    public LlamaConfig {
        positive(vocab, "vocab");
        positive(dim, "dim");
        positive(layers, "layers");
        positive(heads, "heads");
        positive(kvHeads, "kv-heads");
        positive(ffn, "ffn");
        positive(context, "context");
        if (dim % heads != 0) throw new IllegalArgumentException("dim " + dim + " is not divisible by heads " + heads);
        if (heads % kvHeads != 0) {
            throw new IllegalArgumentException("heads " + heads + " is not divisible by kv-heads " + kvHeads);
        }
        if ((dim / heads) % 2 != 0) {
            throw new IllegalArgumentException("head dimension dim/heads = " + dim / heads + " must be even for rotary embeddings");
        }
        if (!(ropeTheta > 0) || Float.isInfinite(ropeTheta)) throw new IllegalArgumentException("rope-theta must be positive, got " + ropeTheta);
        if (!(normEps > 0) || normEps >= 1) throw new IllegalArgumentException("norm-eps must be in (0, 1), got " + normEps);
    }

    private static void positive(int v, String name) {
        if (v <= 0) throw new IllegalArgumentException(name + " must be positive, got " + v);
    }

    public int headDim() { return dim / heads; }

    public int kvDim() { return kvHeads * headDim(); }

    public long paramCount() { return ParamLayout.of(this).total(); }
}
