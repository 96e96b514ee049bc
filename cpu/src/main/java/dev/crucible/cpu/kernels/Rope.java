package dev.crucible.cpu.kernels;

import dev.crucible.backend.ref.RefBackend;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Rotary embedding in place on x(N,H,D), HF rotate-half layout (see {@code Op.Rope}). cos/sin come from a
 * {@link Table} built once per (θ, D) for positions [0, capacity) with exactly the reference's float rounding
 * (angle = pos · {@link RefBackend#ropeInvFreq}); positions outside the table are computed on the fly.
 */
public final class Rope {
    private Rope() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int VL = S.length();
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final ValueLayout.OfInt I = ValueLayout.JAVA_INT_UNALIGNED;
    static final int ROWS = 16;

    /** cos and sin of pos · invFreq(j) for pos < capacity, j < D/2, stored [pos][j]. Immutable once built. */
    public record Table(float theta, int headDim, int capacity, float[] cos, float[] sin) {
        public static Table build(float theta, int headDim, int capacity) {
            int half = headDim / 2;
            float[] cos = new float[capacity * half], sin = new float[capacity * half];
            float[] inv = new float[half];
            for (int j = 0; j < half; j++) inv[j] = RefBackend.ropeInvFreq(theta, j, headDim);
            for (int p = 0; p < capacity; p++) row(p, inv, cos, sin, p * half);
            return new Table(theta, headDim, capacity, cos, sin);
        }

        static void row(int pos, float[] inv, float[] cos, float[] sin, int off) {
            for (int j = 0; j < inv.length; j++) {
                float angle = pos * inv[j];
                cos[off + j] = (float) StrictMath.cos(angle);
                sin[off + j] = (float) StrictMath.sin(angle);
            }
        }
    }

    public static void apply(Parallel par, MemorySegment x, MemorySegment positions, int n, int heads, int headDim,
                             Table table, boolean inverse) {
        int half = headDim / 2;
        par.forEach(Parallel.chunks(n, ROWS), t -> {
            float[] inv = null, cosRow = null, sinRow = null;
            for (int r = t * ROWS, end = Math.min(n, r + ROWS); r < end; r++) {
                int pos = positions.getAtIndex(I, r);
                float[] cos, sin;
                int off;
                if (pos >= 0 && pos < table.capacity()) {
                    cos = table.cos();
                    sin = table.sin();
                    off = pos * half;
                } else {
                    if (inv == null) {
                        inv = new float[half];
                        for (int j = 0; j < half; j++) inv[j] = RefBackend.ropeInvFreq(table.theta(), j, headDim);
                        cosRow = new float[half];
                        sinRow = new float[half];
                    }
                    Table.row(pos, inv, cosRow, sinRow, 0);
                    cos = cosRow;
                    sin = sinRow;
                    off = 0;
                }
                for (int h = 0; h < heads; h++) {
                    long base = ((long) r * heads + h) * headDim * 4;
                    rotate(x, base, base + half * 4L, cos, sin, off, half, inverse);
                }
            }
        });
    }

    private static void rotate(MemorySegment x, long o1, long o2, float[] cos, float[] sin, int off, int half,
                               boolean inverse) {
        int j = 0;
        for (int end = half - VL; j <= end; j += VL) {
            FloatVector x1 = FloatVector.fromMemorySegment(S, x, o1 + j * 4L, NATIVE);
            FloatVector x2 = FloatVector.fromMemorySegment(S, x, o2 + j * 4L, NATIVE);
            FloatVector c = FloatVector.fromArray(S, cos, off + j);
            FloatVector s = FloatVector.fromArray(S, sin, off + j);
            if (inverse) s = s.neg();
            x1.fma(c, x2.mul(s).neg()).intoMemorySegment(x, o1 + j * 4L, NATIVE);
            x2.fma(c, x1.mul(s)).intoMemorySegment(x, o2 + j * 4L, NATIVE);
        }
        for (; j < half; j++) {
            float c = cos[off + j], s = inverse ? -sin[off + j] : sin[off + j];
            float x1 = x.get(F, o1 + j * 4L), x2 = x.get(F, o2 + j * 4L);
            x.set(F, o1 + j * 4L, Math.fma(x1, c, -(x2 * s)));
            x.set(F, o2 + j * 4L, Math.fma(x2, c, x1 * s));
        }
    }
}
