package dev.crucible.tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Scalar encoding and decoding of every {@link DType} that holds real numbers, the reference every fast kernel and
 * file reader is checked against. The bytes equal ggml's reference routines, so files are interchangeable with
 * llama.cpp: f16 and bf16 round to nearest even; Q8_0 uses d = max|x|/127 and q = round(x/d) (halves away from zero);
 * Q4_0 uses d = m/-8 where m is the element of largest magnitude (sign kept), q = min(15, trunc(x/d + 8.5)).
 * Blocks never straddle rows: a row of a quantized matrix is a whole number of blocks.
 */
public final class Blocks {
    private Blocks() {}

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** Round to nearest even, NaN kept quiet, as ggml_compute_fp32_to_bf16. */
    public static short toBf16(float f) {
        int u = Float.floatToRawIntBits(f);
        if ((u & 0x7fffffff) > 0x7f800000) return (short) ((u >>> 16) | 64);
        return (short) ((u + (0x7fff + ((u >>> 16) & 1))) >>> 16);
    }

    public static float fromBf16(short h) {
        return Float.intBitsToFloat((h & 0xffff) << 16);
    }

    /** C's roundf: halves away from zero. */
    public static int roundHalfAway(float v) {
        int r = (int) Math.floor(Math.abs((double) v) + 0.5);
        return v < 0 ? -r : r;
    }

    /** Encodes x[from..from+n) as the type; n must be a whole number of blocks. */
    public static byte[] encode(DType type, float[] x, int from, int n) {
        byte[] out = new byte[Math.toIntExact(type.bytes(n))];
        MemorySegment s = MemorySegment.ofArray(out);
        switch (type) {
            case F32 -> { for (int i = 0; i < n; i++) s.setAtIndex(F32, i, x[from + i]); }
            case F16 -> { for (int i = 0; i < n; i++) s.setAtIndex(I16, i, Float.floatToFloat16(x[from + i])); }
            case BF16 -> { for (int i = 0; i < n; i++) s.setAtIndex(I16, i, toBf16(x[from + i])); }
            case Q8_0 -> {
                for (int b = 0; b < n / 32; b++) {
                    int base = from + b * 32, o = b * 34;
                    float amax = 0;
                    for (int j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[base + j]));
                    float d = amax / 127f, id = d != 0 ? 1f / d : 0f;
                    s.set(I16, o, Float.floatToFloat16(d));
                    for (int j = 0; j < 32; j++) out[o + 2 + j] = (byte) roundHalfAway(x[base + j] * id);
                }
            }
            case Q4_0 -> {
                for (int b = 0; b < n / 32; b++) {
                    int base = from + b * 32, o = b * 18;
                    float amax = 0, max = 0;
                    for (int j = 0; j < 32; j++) {
                        float v = x[base + j];
                        if (amax < Math.abs(v)) { amax = Math.abs(v); max = v; }
                    }
                    float d = max / -8f, id = d != 0 ? 1f / d : 0f;
                    s.set(I16, o, Float.floatToFloat16(d));
                    for (int j = 0; j < 16; j++) {
                        int q0 = Math.min(15, (byte) (x[base + j] * id + 8.5f));
                        int q1 = Math.min(15, (byte) (x[base + 16 + j] * id + 8.5f));
                        out[o + 2 + j] = (byte) (q0 | (q1 << 4));
                    }
                }
            }
            default -> throw new IllegalArgumentException("cannot encode floats as " + type);
        }
        return out;
    }

    /**
     * Decodes n elements of the type starting at byte offset {@code at} of the segment into out[from..from+n); n and
     * the element the offset points at must be block aligned.
     */
    public static void decode(DType type, MemorySegment s, long at, int n, float[] out, int from) {
        switch (type) {
            case F32 -> { for (int i = 0; i < n; i++) out[from + i] = s.get(F32, at + 4L * i); }
            case F16 -> { for (int i = 0; i < n; i++) out[from + i] = Float.float16ToFloat(s.get(I16, at + 2L * i)); }
            case BF16 -> { for (int i = 0; i < n; i++) out[from + i] = fromBf16(s.get(I16, at + 2L * i)); }
            case Q8_0 -> {
                for (int b = 0; b < n / 32; b++) {
                    long o = at + 34L * b;
                    float d = Float.float16ToFloat(s.get(I16, o));
                    for (int j = 0; j < 32; j++) out[from + b * 32 + j] = s.get(ValueLayout.JAVA_BYTE, o + 2 + j) * d;
                }
            }
            case Q4_0 -> {
                for (int b = 0; b < n / 32; b++) {
                    long o = at + 18L * b;
                    float d = Float.float16ToFloat(s.get(I16, o));
                    for (int j = 0; j < 16; j++) {
                        int q = s.get(ValueLayout.JAVA_BYTE, o + 2 + j) & 0xff;
                        out[from + b * 32 + j] = ((q & 0xf) - 8) * d;
                        out[from + b * 32 + 16 + j] = ((q >>> 4) - 8) * d;
                    }
                }
            }
            default -> throw new IllegalArgumentException("cannot decode " + type + " as floats");
        }
    }

    /** True for the types {@link #decode} handles: the ones a weight matrix may be stored in. */
    public static boolean isReal(DType t) {
        return t == DType.F32 || t == DType.F16 || t == DType.BF16 || t == DType.Q8_0 || t == DType.Q4_0;
    }
}
