package dev.crucible.formats.hf;

import dev.crucible.formats.tokenizer.Tokenizer;

import java.util.Map;

/**
 * A whole model in memory, format-neutral: its shape, every weight as f32 under its Hugging Face name and in the HF
 * layout (rotate-half rope rows, [out, in] matrices), and its tokenizer. Importers produce it; exporters consume it.
 *
 * @param format      where it came from, for people ("hf safetensors (BF16)", "gguf v3 Q8_0", ...)
 * @param bos         beginning-of-sequence id, or -1
 * @param eos         end-of-sequence id, or -1
 */
public record ModelWeights(LlamaSpec spec, Map<String, float[]> tensors, Tokenizer tokenizer, String format, int bos, int eos) {

    /** Checks that every tensor the spec needs is there with the right number of elements. */
    public ModelWeights {
        for (Map.Entry<String, long[]> e : spec.tensorShapes().entrySet()) {
            float[] t = tensors.get(e.getKey());
            if (t == null) throw new IllegalArgumentException("missing tensor " + e.getKey());
            long n = 1;
            for (long d : e.getValue()) n *= d;
            if (t.length != n) throw new IllegalArgumentException(e.getKey() + " has " + t.length + " elements, its shape needs " + n);
        }
    }
}
