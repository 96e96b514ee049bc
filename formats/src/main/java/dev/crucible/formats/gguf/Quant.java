package dev.crucible.formats.gguf;

import dev.crucible.tensor.Blocks;

import java.lang.foreign.MemorySegment;

/**
 * Encoding and decoding of tensor data in the ggml types: the GGUF-facing names for {@link Blocks}, whose bytes
 * equal ggml's reference routines.
 */
public final class Quant {
    private Quant() {}

    public static short toBf16(float f) { return Blocks.toBf16(f); }

    public static float fromBf16(short h) { return Blocks.fromBf16(h); }

    static int roundHalfAway(float v) { return Blocks.roundHalfAway(v); }

    /** Encodes n floats as the type; n must be a whole number of blocks. */
    public static byte[] encode(GgmlType type, float[] x, int from, int n) {
        if (type.rowBytes(n) < 0) throw new IllegalArgumentException(n + " elements are not a whole number of " + type + " blocks");
        return Blocks.encode(type.dtype(), x, from, n);
    }

    /** Decodes n elements of the type starting at byte offset {@code at} of the segment into out[from..from+n). */
    public static void decode(GgmlType type, MemorySegment s, long at, int n, float[] out, int from) {
        Blocks.decode(type.dtype(), s, at, n, out, from);
    }
}
