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
                int i = 0;
                for (; i + 16 <= n; i += 16) f16(s, at + 2L * i).intoArray(out, from + i);
                for (; i < n; i++) out[from + i] = Float.float16ToFloat(s.get(I16, at + 2L * i));
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
                    FloatVector d = FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o)));
                    IntVector q = nibbleBytes(ByteVector.fromMemorySegment(BS, s, o + 2, LE));
                    lowNibbles(q).mul(d).intoArray(out, from + b * 32);
                    highNibbles(q).mul(d).intoArray(out, from + b * 32 + 16);
                }
            }
            default -> throw new IllegalArgumentException("cannot decode " + type);
        }
    }

    /**
     * Σ_p x[xo + p] · w[p] over k elements of a stored weight row starting at byte {@code at}. Quantized blocks are
     * summed per block and then scaled (d · Σ q·x), which is how the integer kernels of llama.cpp round too.
     */
    public static float dot(DType type, float[] x, int xo, MemorySegment s, long at, int k) {
        if (!WIDE) return scalarDot(type, x, xo, s, at, k);
        return switch (type) {
            case F16, BF16 -> dot16(type, x, xo, s, at, k);
            case Q8_0 -> dotQ8(x, xo, s, at, k);
            case Q4_0 -> dotQ4(x, xo, s, at, k);
            default -> throw new IllegalArgumentException("no weight-row dot for " + type);
        };
    }

    private static float dot16(DType type, float[] x, int xo, MemorySegment s, long at, int k) {
        FloatVector acc0 = FloatVector.zero(FS), acc1 = FloatVector.zero(FS);
        boolean half = type == DType.F16;
        int p = 0;
        for (; p + 32 <= k; p += 32) {
            FloatVector w0 = half ? f16(s, at + 2L * p) : bf16(s, at + 2L * p);
            FloatVector w1 = half ? f16(s, at + 2L * p + 32) : bf16(s, at + 2L * p + 32);
            acc0 = w0.fma(FloatVector.fromArray(FS, x, xo + p), acc0);
            acc1 = w1.fma(FloatVector.fromArray(FS, x, xo + p + 16), acc1);
        }
        for (; p + 16 <= k; p += 16) {
            FloatVector w0 = half ? f16(s, at + 2L * p) : bf16(s, at + 2L * p);
            acc0 = w0.fma(FloatVector.fromArray(FS, x, xo + p), acc0);
        }
        float sum = VMath.sum(acc0.add(acc1));
        for (; p < k; p++) {
            short h = s.get(I16, at + 2L * p);
            sum = Math.fma(x[xo + p], half ? Float.float16ToFloat(h) : dev.crucible.tensor.Blocks.fromBf16(h), sum);
        }
        return sum;
    }

    private static float dotQ8(float[] x, int xo, MemorySegment s, long at, int k) {
        FloatVector acc0 = FloatVector.zero(FS), acc1 = FloatVector.zero(FS);
        int blocks = k / 32, b = 0;
        for (; b + 2 <= blocks; b += 2) {
            long o = at + 34L * b;
            int p = xo + b * 32;
            FloatVector t0 = q8(s, o + 2).mul(FloatVector.fromArray(FS, x, p));
            t0 = q8(s, o + 18).fma(FloatVector.fromArray(FS, x, p + 16), t0);
            FloatVector t1 = q8(s, o + 36).mul(FloatVector.fromArray(FS, x, p + 32));
            t1 = q8(s, o + 52).fma(FloatVector.fromArray(FS, x, p + 48), t1);
            acc0 = t0.fma(FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o))), acc0);
            acc1 = t1.fma(FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o + 34))), acc1);
        }
        if (b < blocks) {
            long o = at + 34L * b;
            int p = xo + b * 32;
            FloatVector t0 = q8(s, o + 2).mul(FloatVector.fromArray(FS, x, p));
            t0 = q8(s, o + 18).fma(FloatVector.fromArray(FS, x, p + 16), t0);
            acc0 = t0.fma(FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o))), acc0);
        }
        return VMath.sum(acc0.add(acc1));
    }

    private static float dotQ4(float[] x, int xo, MemorySegment s, long at, int k) {
        FloatVector acc0 = FloatVector.zero(FS), acc1 = FloatVector.zero(FS);
        int blocks = k / 32, b = 0;
        for (; b + 2 <= blocks; b += 2) {
            long o = at + 18L * b;
            int p = xo + b * 32;
            IntVector q0 = nibbleBytes(ByteVector.fromMemorySegment(BS, s, o + 2, LE));
            IntVector q1 = nibbleBytes(ByteVector.fromMemorySegment(BS, s, o + 20, LE));
            FloatVector t0 = lowNibbles(q0).mul(FloatVector.fromArray(FS, x, p));
            t0 = highNibbles(q0).fma(FloatVector.fromArray(FS, x, p + 16), t0);
            FloatVector t1 = lowNibbles(q1).mul(FloatVector.fromArray(FS, x, p + 32));
            t1 = highNibbles(q1).fma(FloatVector.fromArray(FS, x, p + 48), t1);
            acc0 = t0.fma(FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o))), acc0);
            acc1 = t1.fma(FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o + 18))), acc1);
        }
        if (b < blocks) {
            long o = at + 18L * b;
            int p = xo + b * 32;
            IntVector q0 = nibbleBytes(ByteVector.fromMemorySegment(BS, s, o + 2, LE));
            FloatVector t0 = lowNibbles(q0).mul(FloatVector.fromArray(FS, x, p));
            t0 = highNibbles(q0).fma(FloatVector.fromArray(FS, x, p + 16), t0);
            acc0 = t0.fma(FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o))), acc0);
        }
        return VMath.sum(acc0.add(acc1));
    }

    /**
     * Q8_0/Q4_0 rows for several activation rows: the block values (q, or q − 8) as floats into q[0..k) and the
     * block scales into d[0..k/32), once per weight row; then {@link #dotBlocks} per activation row.
     */
    public static void decodeBlocks(DType type, MemorySegment s, long at, int k, float[] q, float[] d) {
        boolean q8 = type == DType.Q8_0;
        int bb = q8 ? 34 : 18;
        for (int b = 0; b < k / 32; b++) {
            long o = at + (long) bb * b;
            d[b] = Float.float16ToFloat(s.get(I16, o));
            if (!WIDE) {
                float[] one = new float[32];
                dev.crucible.tensor.Blocks.decode(type, s, o, 32, one, 0);
                System.arraycopy(one, 0, q, b * 32, 32); // already scaled: dotBlocks' scalar path multiplies by 1
                d[b] = 1f;
            } else if (q8) {
                q8(s, o + 2).intoArray(q, b * 32);
                q8(s, o + 18).intoArray(q, b * 32 + 16);
            } else {
                IntVector v = nibbleBytes(ByteVector.fromMemorySegment(BS, s, o + 2, LE));
                lowNibbles(v).intoArray(q, b * 32);
                highNibbles(v).intoArray(q, b * 32 + 16);
            }
        }
    }

    /**
     * The dot of x with a row from {@link #decodeBlocks}, in exactly the operations and order of {@link #dot} on
     * the stored row, so a row gives the same bits whether it was one of one or one of many.
     */
    public static float dotBlocks(float[] x, float[] q, float[] d, int k) {
        if (!WIDE) {
            float sum = 0;
            for (int p = 0; p < k; p++) sum = Math.fma(x[p], q[p] * d[p / 32], sum);
            return sum;
        }
        FloatVector acc0 = FloatVector.zero(FS), acc1 = FloatVector.zero(FS);
        int blocks = k / 32, b = 0;
        for (; b + 2 <= blocks; b += 2) {
            int p = b * 32;
            FloatVector t0 = FloatVector.fromArray(FS, q, p).mul(FloatVector.fromArray(FS, x, p));
            t0 = FloatVector.fromArray(FS, q, p + 16).fma(FloatVector.fromArray(FS, x, p + 16), t0);
            FloatVector t1 = FloatVector.fromArray(FS, q, p + 32).mul(FloatVector.fromArray(FS, x, p + 32));
            t1 = FloatVector.fromArray(FS, q, p + 48).fma(FloatVector.fromArray(FS, x, p + 48), t1);
            acc0 = t0.fma(FloatVector.broadcast(FS, d[b]), acc0);
            acc1 = t1.fma(FloatVector.broadcast(FS, d[b + 1]), acc1);
        }
        if (b < blocks) {
            int p = b * 32;
            FloatVector t0 = FloatVector.fromArray(FS, q, p).mul(FloatVector.fromArray(FS, x, p));
            t0 = FloatVector.fromArray(FS, q, p + 16).fma(FloatVector.fromArray(FS, x, p + 16), t0);
            acc0 = t0.fma(FloatVector.broadcast(FS, d[b]), acc0);
        }
        return VMath.sum(acc0.add(acc1));
    }

    /** Decode, then a plain fused multiply-add loop (machines without 512-bit vectors). */
    static float scalarDot(DType type, float[] x, int xo, MemorySegment s, long at, int k) {
        float[] w = new float[k];
        dev.crucible.tensor.Blocks.decode(type, s, at, k, w, 0);
        float sum = 0;
        for (int p = 0; p < k; p++) sum = Math.fma(x[xo + p], w[p], sum);
        return sum;
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

    private static FloatVector lowNibbles(IntVector q) {
        return (FloatVector) q.and(0x0f).sub(8).convert(VectorOperators.I2F, 0);
    }

    /** Zero-extended bytes shifted right by 4 are the high nibbles already (no mask needed). */
    private static FloatVector highNibbles(IntVector q) {
        return (FloatVector) q.lanewise(VectorOperators.LSHR, 4).sub(8).convert(VectorOperators.I2F, 0);
    }

    private static IntVector halves(MemorySegment s, long at) {
        return (IntVector) ShortVector.fromMemorySegment(SS, s, at, LE).convertShape(VectorOperators.S2I, IS, 0)
                .lanewise(VectorOperators.AND, 0xffff);
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
    private static FloatVector f16(MemorySegment s, long at) {
        IntVector h = halves(s, at);
        IntVector mag = h.and(0x7fff);
        IntVector sign = h.and(0x8000).lanewise(VectorOperators.LSHL, 16);
        FloatVector v = mag.lanewise(VectorOperators.LSHL, 13).reinterpretAsFloats().mul(F16_SCALE);
        VectorMask<Integer> special = mag.compare(VectorOperators.GE, 0x7c00);
        IntVector bits = v.reinterpretAsInts();
        if (special.anyTrue()) {
            bits = bits.blend(mag.lanewise(VectorOperators.LSHL, 13).or(0x7f800000), special);
        }
        return bits.or(sign).reinterpretAsFloats();
    }
}
