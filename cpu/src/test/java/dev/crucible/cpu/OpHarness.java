package dev.crucible.cpu;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.HostBuffer;
import dev.crucible.backend.Op;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.function.Function;

/**
 * Runs one op, built fresh from the same host arrays, on several backends and returns its outputs as arrays, so a
 * test can compare them (NMSE against the reference, or bit for bit across thread counts).
 */
final class OpHarness {
    private OpHarness() {}

    /** Allocates buffers on one backend, initialised from host arrays. */
    static final class Alloc {
        final Backend backend;
        final List<Buffer> owned = new ArrayList<>();

        Alloc(Backend backend) { this.backend = backend; }

        Buffer f32(float[] data) {
            Buffer b = backend.allocate(DType.F32, data.length);
            MemorySegment.copy(data, 0, HostBuffer.seg(b), HostBuffer.F32, 0, data.length);
            owned.add(b);
            return b;
        }

        /** data rounded to F16 (nearest, ties to even). */
        Buffer f16(float[] data) {
            Buffer b = backend.allocate(DType.F16, data.length);
            for (int i = 0; i < data.length; i++) {
                HostBuffer.seg(b).setAtIndex(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, i, Float.floatToFloat16(data[i]));
            }
            owned.add(b);
            return b;
        }

        Buffer i32(int[] data) {
            Buffer b = backend.allocate(DType.I32, data.length);
            MemorySegment.copy(data, 0, HostBuffer.seg(b), HostBuffer.I32, 0, data.length);
            owned.add(b);
            return b;
        }
    }

    /** Builds the op on {@code backend}, runs it, and returns each output (F32 as float[], I32 as int[], F16 as short[]). */
    static List<Object> run(Backend backend, Function<Alloc, Op> factory) {
        Alloc alloc = new Alloc(backend);
        Op op = factory.apply(alloc);
        backend.run(op);
        backend.synchronize();
        List<Object> outs = new ArrayList<>();
        for (Buffer b : op.outputs()) outs.add(read(b));
        for (Buffer b : alloc.owned) b.close();
        return outs;
    }

    static Object read(Buffer b) {
        HostBuffer h = HostBuffer.of(b);
        int n = (int) h.elements();
        if (h.type() == DType.I32) {
            int[] r = new int[n];
            MemorySegment.copy(h.segment(), HostBuffer.I32, 0, r, 0, n);
            return r;
        }
        if (h.type() == DType.F16) {
            short[] r = new short[n];
            MemorySegment.copy(h.segment(), java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, 0, r, 0, n);
            return r;
        }
        float[] r = new float[n];
        MemorySegment.copy(h.segment(), HostBuffer.F32, 0, r, 0, n);
        return r;
    }

    /** Σ(a−b)² / Σb² (plain Σ(a−b)² when b is all zero); NaN anywhere gives +∞. */
    static double nmse(float[] got, float[] want) {
        if (got.length != want.length) throw new AssertionError("length " + got.length + " != " + want.length);
        double err = 0, ref = 0;
        for (int i = 0; i < got.length; i++) {
            if (Float.isNaN(got[i]) || Float.isNaN(want[i])) return Double.POSITIVE_INFINITY;
            double d = (double) got[i] - want[i];
            err += d * d;
            ref += (double) want[i] * want[i];
        }
        return ref == 0 ? err : err / ref;
    }

    static float[] randn(Random r, int n, float scale) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) r.nextGaussian() * scale;
        return x;
    }

    static int[] randInts(Random r, int n, int bound) {
        int[] x = new int[n];
        for (int i = 0; i < n; i++) x[i] = r.nextInt(bound);
        return x;
    }
}
