package dev.crucible.formats.gguf;

/**
 * The ggml tensor types Crucible reads and writes, with their GGUF type ids and block layouts. A block holds
 * {@code blockSize} consecutive elements of one row in {@code blockBytes} bytes; rows must be a whole number of
 * blocks.
 */
public enum GgmlType {
    F32(0, 1, 4),
    F16(1, 1, 2),
    /** An f16 scale d, then 16 bytes of nibbles: byte j holds element j (low nibble) and j+16 (high); x = (q-8)·d. */
    Q4_0(2, 32, 18),
    /** An f16 scale d, then 32 int8 values; x = q·d. */
    Q8_0(8, 32, 34),
    BF16(30, 1, 2);

    public final int id;
    public final int blockSize;
    public final int blockBytes;

    GgmlType(int id, int blockSize, int blockBytes) {
        this.id = id;
        this.blockSize = blockSize;
        this.blockBytes = blockBytes;
    }

    /** The type with this GGUF id, or null if Crucible does not support it. */
    public static GgmlType ofId(long id) {
        for (GgmlType t : values()) if (t.id == id) return t;
        return null;
    }

    /**
     * The name ggml gives a type id, for messages about the ones Crucible does not read (K-quants, i-quants, …), or
     * "type N" for an id it does not know.
     */
    public static String nameOf(long id) {
        GgmlType t = ofId(id);
        if (t != null) return t.name();
        String[] names = {"F32", "F16", "Q4_0", "Q4_1", null, null, "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K",
                "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8",
                "I16", "I32", "I64", "F64", "IQ1_M", "BF16", null, null, null, "TQ1_0", "TQ2_0", null, null, null, "MXFP4"};
        return id >= 0 && id < names.length && names[(int) id] != null ? names[(int) id] : "type " + id;
    }

    /** Bytes for a row of n elements, or -1 if n is not a whole number of blocks. */
    public long rowBytes(long n) {
        if (n % blockSize != 0) return -1;
        return n / blockSize * blockBytes;
    }

    /** The element type Crucible's buffers use for this ggml type (same block layout). */
    public dev.crucible.tensor.DType dtype() {
        return switch (this) {
            case F32 -> dev.crucible.tensor.DType.F32;
            case F16 -> dev.crucible.tensor.DType.F16;
            case Q4_0 -> dev.crucible.tensor.DType.Q4_0;
            case Q8_0 -> dev.crucible.tensor.DType.Q8_0;
            case BF16 -> dev.crucible.tensor.DType.BF16;
        };
    }

    /** The {@code general.file_type} value llama.cpp uses for a model that is mostly of this type. */
    public int fileType() {
        return switch (this) {
            case F32 -> 0;
            case F16 -> 1;
            case Q4_0 -> 2;
            case Q8_0 -> 7;
            case BF16 -> 32;
        };
    }

    /** Parses a user-facing name: f32, f16, bf16, q8_0, q4_0 (case-insensitive). */
    public static GgmlType parse(String s) {
        for (GgmlType t : values()) if (t.name().equalsIgnoreCase(s)) return t;
        throw new IllegalArgumentException("unknown GGUF type '" + s + "' (f32, f16, bf16, q8_0, q4_0)");
    }
}
