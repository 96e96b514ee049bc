package dev.crucible.conformance;

import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * A tensor's values on the host, as a Java array: F32 in {@code float[]}, I32 in {@code int[]}. Inputs of a case and
 * the outputs read back from a backend travel in this form. Treat it as immutable once built: the harness copies
 * it into backend buffers and never writes it back.
 */
public final class HostArray {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;

    private final DType type;
    private final float[] floats;
    private final int[] ints;

    private HostArray(DType type, float[] floats, int[] ints) {
        this.type = type;
        this.floats = floats;
        this.ints = ints;
    }

    public static HostArray f32(float... values) {
        return new HostArray(DType.F32, values, null);
    }

    public static HostArray i32(int... values) {
        return new HostArray(DType.I32, null, values);
    }

    public static HostArray zeros(int n) {
        return f32(new float[n]);
    }

    /** Reads {@code n} elements of {@code type} (F32 or I32) starting at element {@code offset} of {@code seg}. */
    public static HostArray read(DType type, MemorySegment seg, long offset, int n) {
        return switch (type) {
            case F32 -> {
                float[] v = new float[n];
                for (int i = 0; i < n; i++) v[i] = seg.getAtIndex(F32, offset + i);
                yield f32(v);
            }
            case I32 -> {
                int[] v = new int[n];
                for (int i = 0; i < n; i++) v[i] = seg.getAtIndex(I32, offset + i);
                yield i32(v);
            }
            default -> throw new IllegalArgumentException("host arrays hold F32 or I32, not " + type);
        };
    }

    /** Writes all elements into {@code seg} starting at element {@code offset}. */
    public void write(MemorySegment seg, long offset) {
        for (int i = 0; i < length(); i++) seg.setAtIndex(I32, offset + i, bits(i));
    }

    public DType type() { return type; }

    public int length() { return floats != null ? floats.length : ints.length; }

    /** The value as a double (exact for both F32 and I32). */
    public double get(int i) { return floats != null ? floats[i] : ints[i]; }

    /** The raw 32 bits of element i (floats keep NaN payloads). */
    public int bits(int i) { return floats != null ? Float.floatToRawIntBits(floats[i]) : ints[i]; }

    public boolean isFinite(int i) { return floats == null || Float.isFinite(floats[i]); }

    /** A copy of the values, for building perturbed inputs. */
    public float[] floats() {
        if (floats == null) throw new IllegalStateException("not an F32 array: " + type);
        return floats.clone();
    }

    public int[] ints() {
        if (ints == null) throw new IllegalStateException("not an I32 array: " + type);
        return ints.clone();
    }

    /** Bitwise equality (so NaN payloads and signed zeros count). */
    public boolean sameBits(HostArray other) {
        if (type != other.type || length() != other.length()) return false;
        for (int i = 0; i < length(); i++) if (bits(i) != other.bits(i)) return false;
        return true;
    }

    @Override
    public String toString() {
        String head = floats != null
                ? Arrays.toString(Arrays.copyOf(floats, Math.min(8, floats.length)))
                : Arrays.toString(Arrays.copyOf(ints, Math.min(8, ints.length)));
        return type + "[" + length() + "] " + head;
    }
}
