package dev.crucible.conformance;

import dev.crucible.tensor.Blocks;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * A tensor's values on the host, as a Java array: F32 in {@code float[]}, I32 in {@code int[]}, a weight in a storage
 * type (F16, BF16, Q8_0, Q4_0) as its bytes. Inputs of a case and
 * the outputs read back from a backend travel in this form. Treat it as immutable once built: the harness copies
 * it into backend buffers and never writes it back.
 */
public final class HostArray {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;

    private final DType type;
    private final float[] floats;
    private final int[] ints;
    /** A weight tensor in a storage type (F16, BF16, Q8_0, Q4_0): its bytes, and their decoded values. */
    private final byte[] raw;
    private final float[] decoded;

    private HostArray(DType type, float[] floats, int[] ints) {
        this(type, floats, ints, null, null);
    }

    private HostArray(DType type, float[] floats, int[] ints, byte[] raw, float[] decoded) {
        this.type = type;
        this.floats = floats;
        this.ints = ints;
        this.raw = raw;
        this.decoded = decoded;
    }

    /** The values stored as {@code type} (rounded or quantized as ggml would); an input only. */
    public static HostArray encoded(DType type, float[] values) {
        return ofBytes(type, Blocks.encode(type, values, 0, values.length), values.length);
    }

    private static HostArray ofBytes(DType type, byte[] bytes, int n) {
        float[] d = new float[n];
        Blocks.decode(type, MemorySegment.ofArray(bytes), 0, n, d, 0);
        return new HostArray(type, null, null, bytes, d);
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
            default -> {
                if (!Blocks.isReal(type)) throw new IllegalArgumentException("host arrays cannot hold " + type);
                byte[] bytes = new byte[Math.toIntExact(type.bytes(n))];
                MemorySegment.copy(seg, ValueLayout.JAVA_BYTE, type.bytes(offset), bytes, 0, bytes.length);
                yield ofBytes(type, bytes, n);
            }
        };
    }

    /** Writes all elements into {@code seg} starting at element {@code offset}. */
    public void write(MemorySegment seg, long offset) {
        if (raw != null) {
            MemorySegment.copy(raw, 0, seg, ValueLayout.JAVA_BYTE, type.bytes(offset), raw.length);
            return;
        }
        for (int i = 0; i < length(); i++) seg.setAtIndex(I32, offset + i, bits(i));
    }

    public DType type() { return type; }

    public int length() { return floats != null ? floats.length : ints != null ? ints.length : decoded.length; }

    /** The value as a double (exact for F32, I32 and the decoded value of a storage type). */
    public double get(int i) { return floats != null ? floats[i] : ints != null ? ints[i] : decoded[i]; }

    /** The raw 32 bits of element i (floats keep NaN payloads; a storage type gives its decoded float's bits). */
    public int bits(int i) {
        return floats != null ? Float.floatToRawIntBits(floats[i]) : ints != null ? ints[i] : Float.floatToRawIntBits(decoded[i]);
    }

    public boolean isFinite(int i) { return floats != null ? Float.isFinite(floats[i]) : ints != null || Float.isFinite(decoded[i]); }

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
        if (raw != null) return Arrays.equals(raw, other.raw);
        for (int i = 0; i < length(); i++) if (bits(i) != other.bits(i)) return false;
        return true;
    }

    @Override
    public String toString() {
        String head = floats != null || decoded != null
                ? Arrays.toString(Arrays.copyOf(floats != null ? floats : decoded, Math.min(8, length())))
                : Arrays.toString(Arrays.copyOf(ints, Math.min(8, ints.length)));
        return type + "[" + length() + "] " + head;
    }
}
