package dev.crucible.bench.lab;

import dev.crucible.cpu.kernels.Parallel;
import dev.crucible.cpu.kernels.VMath;
import dev.crucible.tensor.DType;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Other one-token (M = 1) weight-row dot products for Q8_0 and Q4_0, to time against the backend's
 * {@code WeightRows.dot} (one accumulator; Q4_0 nibbles decoded through a 16-entry table). Each row's sum: 16-lane
 * vectors into accumulators, then a lane sum; 512-bit vectors only. The two-accumulator variants are faster alone but
 * change the summation order, and the batched decode tiles that must match it bit for bit then lose more than the
 * single row gains (bench/NOTES.md).
 */
final class WeightDotV1 {
    private WeightDotV1() {}

    static final VectorSpecies<Float> FS = FloatVector.SPECIES_512;
    static final VectorSpecies<Integer> IS = IntVector.SPECIES_512;
    static final VectorSpecies<Byte> BS = ByteVector.SPECIES_128;
    static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(LE);
    static final FloatVector CENTERED = FloatVector.fromArray(FS, new float[]{-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7}, 0);

    /** How one row's dot is computed. */
    enum Kind {
        /** wr-1: nibbles widened to ints, centred, converted and scaled per block; one accumulator. */
        Q4_CONVERT,
        /** wr-2: nibbles by table; a block's low half into one accumulator, its high half into another. */
        Q4_TABLE_TWO_ACC,
        /** wr-4: Q8_0 bytes converted and scaled per block; two accumulators as wr-2. */
        Q8_TWO_ACC
    }

    /** c(1,N) = x(1,K) · Wᵀ for W (N,K) stored as Q4_0/Q8_0, 64 columns per task. */
    static void gemv(Parallel par, Kind kind, MemorySegment x, MemorySegment w, MemorySegment c, int n, int k) {
        float[] row = x.asSlice(0, 4L * k).toArray(ValueLayout.JAVA_FLOAT);
        DType type = kind == Kind.Q8_TWO_ACC ? DType.Q8_0 : DType.Q4_0;
        par.forEach(Parallel.chunks(n, 64), t -> {
            for (int j = t * 64, end = Math.min(n, j + 64); j < end; j++) {
                long at = type.bytes((long) j * k);
                float s = switch (kind) {
                    case Q4_CONVERT -> q4Convert(row, w, at, k);
                    case Q4_TABLE_TWO_ACC -> q4Table(row, w, at, k);
                    case Q8_TWO_ACC -> q8(row, w, at, k);
                };
                c.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, j, s);
            }
        });
    }

    static float q4Convert(float[] x, MemorySegment s, long at, int k) {
        FloatVector acc = FloatVector.zero(FS);
        for (long o = at, p = 0; p < k; p += 32, o += 18) {
            FloatVector d = FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o)));
            IntVector q = (IntVector) ByteVector.fromMemorySegment(BS, s, o + 2, LE).convertShape(VectorOperators.ZERO_EXTEND_B2I, IS, 0);
            FloatVector lo = (FloatVector) q.and(0x0f).sub(8).convert(VectorOperators.I2F, 0);
            FloatVector hi = (FloatVector) q.lanewise(VectorOperators.LSHR, 4).sub(8).convert(VectorOperators.I2F, 0);
            acc = lo.mul(d).fma(FloatVector.fromArray(FS, x, (int) p), acc);
            acc = hi.mul(d).fma(FloatVector.fromArray(FS, x, (int) p + 16), acc);
        }
        return VMath.sum(acc);
    }

    static float q4Table(float[] x, MemorySegment s, long at, int k) {
        FloatVector acc0 = FloatVector.zero(FS), acc1 = acc0;
        for (long o = at, p = 0; p < k; p += 32, o += 18) {
            IntVector table = CENTERED.mul(Float.float16ToFloat(s.get(I16, o))).reinterpretAsInts();
            IntVector q = (IntVector) ByteVector.fromMemorySegment(BS, s, o + 2, LE).convertShape(VectorOperators.ZERO_EXTEND_B2I, IS, 0);
            acc0 = q.and(0x0f).selectFrom(table).reinterpretAsFloats().fma(FloatVector.fromArray(FS, x, (int) p), acc0);
            acc1 = q.lanewise(VectorOperators.LSHR, 4).selectFrom(table).reinterpretAsFloats().fma(FloatVector.fromArray(FS, x, (int) p + 16), acc1);
        }
        return VMath.sum(acc0.add(acc1));
    }

    static float q8(float[] x, MemorySegment s, long at, int k) {
        FloatVector acc0 = FloatVector.zero(FS), acc1 = acc0;
        for (long o = at, p = 0; p < k; p += 32, o += 34) {
            FloatVector d = FloatVector.broadcast(FS, Float.float16ToFloat(s.get(I16, o)));
            FloatVector lo = (FloatVector) ByteVector.fromMemorySegment(BS, s, o + 2, LE).convertShape(VectorOperators.B2F, FS, 0);
            FloatVector hi = (FloatVector) ByteVector.fromMemorySegment(BS, s, o + 18, LE).convertShape(VectorOperators.B2F, FS, 0);
            acc0 = lo.mul(d).fma(FloatVector.fromArray(FS, x, (int) p), acc0);
            acc1 = hi.mul(d).fma(FloatVector.fromArray(FS, x, (int) p + 16), acc1);
        }
        return VMath.sum(acc0.add(acc1));
    }
}
