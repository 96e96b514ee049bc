package dev.crucible.tensor;

/**
 * Element types a buffer can hold. Block-quantized types store {@link #blockSize()} elements in
 * {@link #blockBytes()} bytes (GGUF layouts); plain types have a block of one element.
 */
public enum DType {
    F32(4, 1, "F32"),
    F64(8, 1, "F64"),
    BF16(2, 1, "BF16"),
    F16(2, 1, "F16"),
    I32(4, 1, "I32"),
    I64(8, 1, "I64"),
    /** GGUF Q8_0: an f16 scale followed by 32 int8 values. */
    Q8_0(34, 32, null),
    /** GGUF Q4_0: an f16 scale followed by 16 bytes of nibbles (low nibbles are elements 0..15). */
    Q4_0(18, 32, null);

    private final int blockBytes;
    private final int blockSize;
    private final String safetensorsName;

    DType(int blockBytes, int blockSize, String safetensorsName) {
        this.blockBytes = blockBytes;
        this.blockSize = blockSize;
        this.safetensorsName = safetensorsName;
    }

    public int blockBytes() { return blockBytes; }

    public int blockSize() { return blockSize; }

    public boolean isQuantized() { return blockSize > 1; }

    /** Bytes needed for {@code elements} elements; they must fill whole blocks. */
    public long bytes(long elements) {
        if (elements % blockSize != 0) {
            throw new IllegalArgumentException(this + " needs a multiple of " + blockSize + " elements, got " + elements);
        }
        return elements / blockSize * blockBytes;
    }

    /** The name safetensors headers use, or null for types safetensors cannot hold. */
    public String safetensorsName() { return safetensorsName; }

    public static DType fromSafetensors(String name) {
        for (DType t : values()) {
            if (name.equals(t.safetensorsName)) return t;
        }
        return null;
    }
}
