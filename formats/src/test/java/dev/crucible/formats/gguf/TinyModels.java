package dev.crucible.formats.gguf;

import dev.crucible.formats.hf.LlamaSpec;
import dev.crucible.formats.hf.ModelWeights;
import dev.crucible.formats.tokenizer.Tokenizer;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

/** Small random models with the byte-level tokenizer, for format tests. */
public final class TinyModels {
    private TinyModels() {}

    public static ModelWeights random(LlamaSpec spec, long seed) {
        Random r = new Random(seed);
        Map<String, float[]> t = new LinkedHashMap<>();
        for (Map.Entry<String, long[]> e : spec.tensorShapes().entrySet()) {
            long n = 1;
            for (long d : e.getValue()) n *= d;
            float[] x = new float[(int) n];
            for (int i = 0; i < x.length; i++) x[i] = e.getValue().length == 1 ? 1f + 0.1f * (float) r.nextGaussian() : 0.05f * (float) r.nextGaussian();
            t.put(e.getKey(), x);
        }
        Tokenizer tok = Tokenizer.byteLevel(List.of("<|endoftext|>"));
        return new ModelWeights(spec, t, tok, "random", 256, 256);
    }

    public static LlamaSpec spec(boolean tied) {
        return new LlamaSpec(257, 64, 2, 4, 2, 96, 64, 10000f, 1e-5f, tied);
    }
}
