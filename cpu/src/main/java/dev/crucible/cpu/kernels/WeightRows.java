package dev.crucible.cpu.kernels;

import dev.crucible.tensor.DType;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Weight rows stored in F16, BF16, Q8_0 or Q4_0 (GGUF block layouts), used as stored: decoded into floats a row slice
 * at a time (for packing a matmul panel or an embedding row), or consumed directly by a dot product against an f32
 * vector, decoding each block in registers (the one-token decode path, where the weights are read once per token and
 * their size sets the speed). Every decoded value equals {@link dev.crucible.tensor.Blocks#decode}'s exactly; the
 * dot products use a fixed summation order (bit-identical on every run and thread count).
 *
 * <p>Vectors are 16 floats (512 bits) when the machine has them; with narrower vectors the scalar path below is
 * used for the quantized types.
 */
public final class WeightRows {
    private WeightRows() {}

    static final VectorSpecies<Float> FS = FloatVector.SPECIES_512;
    static final VectorSpecies<Integer> IS = IntVector.SPECIES_512;
    static final VectorSpecies<Short> SS = ShortVector.SPECIES_256;
    static final VectorSpecies<Byte> BS = ByteVector.SPECIES_128;
    /** The 16-float vectors below are only worth it where they are native. */
    static final boolean WIDE = FloatVector.SPECIES_PREFERRED.length() >= 16;
    static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(LE);
    static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(LE);

    /** Decodes n elements (whole blocks) starting at byte {@code at} into out[from..from+n). */
    public static void decode(DType type, MemorySegment s, long at, int n, float[] out, int from) {
        if (!WIDE && type != DType.F32) {
            dev.crucible.tensor.Blocks.decode(type, s, at, n, out, from);
            return;
        }
        switch (type) {
            case F32 -> MemorySegment.copy(s, F32, at, out, from, n);
            case BF16 -> {
                int i = 0;
                for (; i + 16 <= n; i += 16) bf16(s, at + 2L * i).intoArray(out, from + i);
                for (; i < n; i++) out[from + i] = dev.crucible.tensor.Blocks.fromBf16(s.get(I16, at + 2L * i));
            }
            case F16 -> {
                // A plain loop: C2 compiles Float.float16ToFloat over a segment into the CPU's half-to-float
                // conversion (vcvtph2ps), several times faster than f16()'s bit manipulation. (The one-row dot keeps
                // f16(): decoding a row into a buffer first and then dotting it measured slower there, where the
                // weights stream from memory.)
                for (int i = 0; i < n; i++) out[from + i] = Float.float16ToFloat(s.get(I16, at + 2L * i));
            }
            case Q8_0 -> {
                for (int b = 0; b < n / 32; b++) {
                    long o = at + 34L * b;
                    FloatVector d = FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o)));
                    q8(s, o + 2).mul(d).intoArray(out, from + b * 32);
                    q8(s, o + 18).mul(d).intoArray(out, from + b * 32 + 16);
                }
            }
            case Q4_0 -> {
                for (int b = 0; b < n / 32; b++) {
                    long o = at + 18L * b;
                    IntVector table = q4Table(s, o);
                    IntVector q = nibbleBytes(ByteVector.fromMemorySegment(BS, s, o + 2, LE));
                    lowNibbles(q, table).intoArray(out, from + b * 32);
                    highNibbles(q, table).intoArray(out, from + b * 32 + 16);
                }
            }
            default -> throw new IllegalArgumentException("cannot decode " + type);
        }
    }

    /**
     * Σ_p x[xo + p] · w[p] over k elements of a stored weight row starting at byte {@code at}, w being the exactly
     * decoded values (for Q8_0/Q4_0 q·d is exact in f32: at most 19 significant bits). The sum runs in one vector
     * accumulator, 16 elements at a time, then {@link VMath#sum}, then the elements past the last whole vector:
     * the same operations in the same order as {@link MatMul}'s f32 dot on the decoded row, so a row gives the same
     * bits whichever kernel (fused here, or decode-then-tile for several activation rows) computed it.
     */
    public static float dot(DType type, float[] x, int xo, MemorySegment s, long at, int k) {
        if (!WIDE) return scalarDot(type, x, xo, s, at, k);
        FloatVector acc = FloatVector.zero(FS);
        int p = 0;
        switch (type) {
            case F16, BF16 -> {
                boolean half = type == DType.F16;
                for (; p + 16 <= k; p += 16) {
                    FloatVector w = half ? f16(s, at + 2L * p) : bf16(s, at + 2L * p);
                    acc = w.fma(FloatVector.fromArray(FS, x, xo + p), acc);
                }
                float sum = VMath.sum(acc);
                for (; p < k; p++) {
                    short h = s.get(I16, at + 2L * p);
                    sum = Math.fma(x[xo + p], half ? Float.float16ToFloat(h) : dev.crucible.tensor.Blocks.fromBf16(h), sum);
                }
                return sum;
            }
            case Q8_0 -> {
                for (long o = at; p < k; p += 32, o += 34) {
                    FloatVector d = FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o)));
                    acc = q8(s, o + 2).mul(d).fma(FloatVector.fromArray(FS, x, xo + p), acc);
                    acc = q8(s, o + 18).mul(d).fma(FloatVector.fromArray(FS, x, xo + p + 16), acc);
                }
                return VMath.sum(acc);
            }
            case Q4_0 -> {
                for (long o = at; p < k; p += 32, o += 18) {
                    IntVector table = q4Table(s, o);
                    IntVector q = nibbleBytes(ByteVector.fromMemorySegment(BS, s, o + 2, LE));
                    acc = lowNibbles(q, table).fma(FloatVector.fromArray(FS, x, xo + p), acc);
                    acc = highNibbles(q, table).fma(FloatVector.fromArray(FS, x, xo + p + 16), acc);
                }
                return VMath.sum(acc);
            }
            default -> throw new IllegalArgumentException("no weight-row dot for " + type);
        }
    }

    /**
     * Decode, then {@link MatMul}'s dot on the floats (machines without 512-bit vectors): the order of the tiles that
     * serve several activation rows there, so batch invariance holds on those machines too.
     */
    static float scalarDot(DType type, float[] x, int xo, MemorySegment s, long at, int k) {
        float[] w = new float[k];
        dev.crucible.tensor.Blocks.decode(type, s, at, k, w, 0);
        return MatMul.dot(x, xo, w, 0, k);
    }

    /**
     * {@link #dot} of x with two weight rows at once (bytes at0 and at1), each in exactly {@link #dot}'s order: two
     * independent accumulator chains, so neither row's adds wait on its own previous add (one row is a chain of k/16
     * dependent fused multiply-adds, which bounds one-token decode on a core). out[0], out[1].
     */
    public static void dot2(DType type, float[] x, MemorySegment s, long at0, long at1, int k, float[] out) {
        if (!WIDE || type == DType.F32) {
            out[0] = dot(type, x, 0, s, at0, k);
            out[1] = dot(type, x, 0, s, at1, k);
            return;
        }
        FloatVector acc0 = FloatVector.zero(FS), acc1 = acc0;
        long o0 = at0, o1 = at1;
        if (type == DType.F16 || type == DType.BF16) {
            boolean half = type == DType.F16;
            int p = 0;
            for (; p + 16 <= k; p += 16) {
                FloatVector xv = FloatVector.fromArray(FS, x, p);
                acc0 = (half ? f16(s, at0 + 2L * p) : bf16(s, at0 + 2L * p)).fma(xv, acc0);
                acc1 = (half ? f16(s, at1 + 2L * p) : bf16(s, at1 + 2L * p)).fma(xv, acc1);
            }
            float s0 = VMath.sum(acc0), s1 = VMath.sum(acc1);
            for (; p < k; p++) {
                short h0 = s.get(I16, at0 + 2L * p), h1 = s.get(I16, at1 + 2L * p);
                s0 = Math.fma(x[p], half ? Float.float16ToFloat(h0) : dev.crucible.tensor.Blocks.fromBf16(h0), s0);
                s1 = Math.fma(x[p], half ? Float.float16ToFloat(h1) : dev.crucible.tensor.Blocks.fromBf16(h1), s1);
            }
            out[0] = s0;
            out[1] = s1;
            return;
        } else if (type == DType.Q8_0) {
            for (int p = 0; p < k; p += 32, o0 += 34, o1 += 34) {
                FloatVector x0 = FloatVector.fromArray(FS, x, p), x1 = FloatVector.fromArray(FS, x, p + 16);
                FloatVector d0 = FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o0)));
                FloatVector d1 = FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o1)));
                acc0 = q8(s, o0 + 2).mul(d0).fma(x0, acc0);
                acc1 = q8(s, o1 + 2).mul(d1).fma(x0, acc1);
                acc0 = q8(s, o0 + 18).mul(d0).fma(x1, acc0);
                acc1 = q8(s, o1 + 18).mul(d1).fma(x1, acc1);
            }
        } else if (type == DType.Q4_0) {
            for (int p = 0; p < k; p += 32, o0 += 18, o1 += 18) {
                FloatVector x0 = FloatVector.fromArray(FS, x, p), x1 = FloatVector.fromArray(FS, x, p + 16);
                IntVector t0 = q4Table(s, o0), t1 = q4Table(s, o1);
                IntVector q0 = nibbleBytes(ByteVector.fromMemorySegment(BS, s, o0 + 2, LE));
                IntVector q1 = nibbleBytes(ByteVector.fromMemorySegment(BS, s, o1 + 2, LE));
                acc0 = lowNibbles(q0, t0).fma(x0, acc0);
                acc1 = lowNibbles(q1, t1).fma(x0, acc1);
                acc0 = highNibbles(q0, t0).fma(x1, acc0);
                acc1 = highNibbles(q1, t1).fma(x1, acc1);
            }
        } else {
            throw new IllegalArgumentException("no weight-row dot for " + type);
        }
        out[0] = VMath.sum(acc0);
        out[1] = VMath.sum(acc1);
    }

    // ---- block decoders: 16 floats each -----------------------------------------------------------------------

    /** 16 signed bytes at {@code at} as floats. */
    private static FloatVector q8(MemorySegment s, long at) {
        return (FloatVector) ByteVector.fromMemorySegment(BS, s, at, LE).convertShape(VectorOperators.B2F, FS, 0);
    }

    /** The 16 bytes of a Q4_0 block widened to int lanes (x86 has no byte shifts; int lanes keep it cheap). */
    private static IntVector nibbleBytes(ByteVector q) {
        return (IntVector) q.convertShape(VectorOperators.ZERO_EXTEND_B2I, IS, 0);
    }

    /** q − 8 for q = 0 … 15, the values a Q4_0 nibble stands for before scaling. */
    private static final FloatVector CENTERED = FloatVector.fromArray(FS, new float[]{-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7}, 0);

    /**
     * The 16 values a nibble of the Q4_0 block at {@code at} decodes to, (q − 8)·d for q = 0 … 15 (as float bits):
     * decoding is then one lane permutation per 16 nibbles instead of a subtraction, a conversion and a product, and
     * each value is that same product, so the same bits.
     */
    private static IntVector q4Table(MemorySegment s, long at) {
        return CENTERED.mul(Float.float16ToFloat(s.get(I16, at))).reinterpretAsInts();
    }

    /** Lane i: the value of the low nibble of byte i. */
    private static FloatVector lowNibbles(IntVector q, IntVector table) {
        return q.and(0x0f).selectFrom(table).reinterpretAsFloats();
    }

    /** Lane i: the value of the high nibble of byte i (zero-extended bytes shifted right by 4 are that nibble). */
    private static FloatVector highNibbles(IntVector q, IntVector table) {
        return q.lanewise(VectorOperators.LSHR, 4).selectFrom(table).reinterpretAsFloats();
    }

    /** 16 halves widened to int lanes, sign-extended (bit 31 is the half's bit 15; users mask or shift the rest). */
    private static IntVector halves(MemorySegment s, long at) {
        return (IntVector) ShortVector.fromMemorySegment(SS, s, at, LE).convertShape(VectorOperators.S2I, IS, 0);
    }

    private static FloatVector bf16(MemorySegment s, long at) {
        return halves(s, at).lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
    }

    private static final FloatVector F16_SCALE = FloatVector.broadcast(FS, 0x1p112f);

    /**
     * IEEE half to float by bit manipulation: magnitude bits shifted into a float's place and scaled by 2^112
     * (exact for normal and subnormal halves alike), infinities and NaNs given a float's all-ones exponent, the sign
     * copied.
     */
    static FloatVector f16(MemorySegment s, long at) {
        IntVector h = halves(s, at);
        IntVector mag = h.and(0x7fff);
        IntVector sign = h.and(0x80000000); // sign-extended lanes: bit 31 is already the half's sign
        FloatVector v = mag.lanewise(VectorOperators.LSHL, 13).reinterpretAsFloats().mul(F16_SCALE);
        VectorMask<Integer> special = mag.compare(VectorOperators.GE, 0x7c00);
        IntVector bits = v.reinterpretAsInts();
        if (special.anyTrue()) {
            bits = bits.blend(mag.lanewise(VectorOperators.LSHL, 13).or(0x7f800000), special);
        }
        return bits.or(sign).reinterpretAsFloats();
    }
}
