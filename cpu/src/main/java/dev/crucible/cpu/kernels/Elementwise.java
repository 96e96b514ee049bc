package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Memory-bound elementwise ops (fill, copy, F32 → F16 conversion, add) over flat F32/I32 segments. Work is split into fixed chunks of
 * {@link #CHUNK} elements; two threads reach about twice the read bandwidth of one.
 */
public final class Elementwise {
    private Elementwise() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final ValueLayout.OfInt I = ValueLayout.JAVA_INT_UNALIGNED;
    static final ValueLayout.OfShort H = ValueLayout.JAVA_SHORT_UNALIGNED;
    /** Elements per task: large enough that the hand-off costs nothing, small enough to balance. */
    public static final long CHUNK = 1 << 16;

    /** out[0..n) = value (F32). */
    public static void fill(Parallel par, MemorySegment out, long n, float value) {
        par.forEach(Parallel.chunks(n, CHUNK), t -> {
            long from = t * CHUNK, to = Math.min(n, from + CHUNK);
            if (Float.floatToRawIntBits(value) == 0) out.asSlice(from * 4, (to - from) * 4).fill((byte) 0);
            else fillRange(out, from, to, value);
        });
    }

    private static void fillRange(MemorySegment out, long from, long to, float value) {
        FloatVector v = FloatVector.broadcast(S, value);
        long i = from;
        for (long end = to - S.length(); i <= end; i += S.length()) v.intoMemorySegment(out, i * 4, NATIVE);
        for (; i < to; i++) out.setAtIndex(F, i, value);
    }

    /** out[0..n) = value (I32). */
    public static void fillInt(Parallel par, MemorySegment out, long n, int value) {
        par.forEach(Parallel.chunks(n, CHUNK), t -> {
            long from = t * CHUNK, to = Math.min(n, from + CHUNK);
            for (long i = from; i < to; i++) out.setAtIndex(I, i, value);
        });
    }

    /** dst = src, byte for byte (any element type). */
    public static void copy(Parallel par, MemorySegment src, MemorySegment dst) {
        long bytes = src.byteSize(), chunk = CHUNK * 4;
        par.forEach(Parallel.chunks(bytes, chunk), t -> {
            long from = t * chunk, len = Math.min(bytes - from, chunk);
            MemorySegment.copy(src, from, dst, from, len);
        });
    }

    /**
     * dst[0..n) (F16) = src[0..n) (F32), each rounded to the nearest half, ties to even ({@link Float#floatToFloat16}).
     */
    public static void toHalf(Parallel par, MemorySegment src, MemorySegment dst, long n) {
        par.forEach(Parallel.chunks(n, CHUNK), t -> {
            long from = t * CHUNK, to = Math.min(n, from + CHUNK);
            for (long i = from; i < to; i++) dst.set(H, 2 * i, Float.floatToFloat16(src.get(F, 4 * i)));
        });
    }

    /** out = a + b over n values; out may alias a or b (each element is read before it is written). */
    public static void add(Parallel par, MemorySegment a, MemorySegment b, MemorySegment out, long n) {
        par.forEach(Parallel.chunks(n, CHUNK), t -> {
            long from = t * CHUNK, to = Math.min(n, from + CHUNK);
            long i = from;
            for (long end = to - S.length(); i <= end; i += S.length()) {
                FloatVector.fromMemorySegment(S, a, i * 4, NATIVE)
                        .add(FloatVector.fromMemorySegment(S, b, i * 4, NATIVE))
                        .intoMemorySegment(out, i * 4, NATIVE);
            }
            for (; i < to; i++) out.setAtIndex(F, i, a.getAtIndex(F, i) + b.getAtIndex(F, i));
        });
    }
}
