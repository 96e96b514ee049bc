package dev.crucible.formats.hf;

import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.tensor.Blocks;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;

/**
 * A model's weights read one tensor at a time in the type each is to be used in, without first holding the whole
 * model as f32: a quantized GGUF file hands its blocks over as stored (only the rows of Q and K are reordered for
 * the rope layout), and any source can be converted tensor by tensor (f32 to Q8_0 on load, Q4_0 to f32, ...).
 * Names and layout are Hugging Face's ([out, in] matrices, rotate-half rope rows), as in {@link ModelWeights}.
 */
public interface WeightSource extends AutoCloseable {
    LlamaSpec spec();

    Tokenizer tokenizer();

    /** Where it came from, for people ("gguf v3 [Q8_0]", ...). */
    String format();

    int bos();

    int eos();

    /** The type the tensor is stored in. */
    DType storedType(String name);

    /**
     * The tensor's elements encoded as {@code type} (whole blocks per row), valid until the next call or
     * {@link #close}. When {@code type} is the stored type the bytes are the stored ones.
     */
    MemorySegment read(String name, DType type);

    @Override
    void close();

    /** Weights already in memory as f32 (a checkpoint, an HF directory, a dequantized file). */
    static WeightSource of(ModelWeights w) {
        return new WeightSource() {
            public LlamaSpec spec() { return w.spec(); }
            public Tokenizer tokenizer() { return w.tokenizer(); }
            public String format() { return w.format(); }
            public int bos() { return w.bos(); }
            public int eos() { return w.eos(); }
            public DType storedType(String name) { return DType.F32; }

            public MemorySegment read(String name, DType type) {
                float[] x = w.tensors().get(name);
                if (x == null) throw new IllegalArgumentException("no tensor " + name);
                return type == DType.F32 ? MemorySegment.ofArray(x) : MemorySegment.ofArray(Blocks.encode(type, x, 0, x.length));
            }

            public void close() {}
        };
    }
}
