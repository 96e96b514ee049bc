package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * RMSNorm over rows of x(N,C): out = x · rstd · w with rstd = 1/sqrt(mean(x²) + eps), and its backward
 * dx += rstd · (dx̂ − x̂ · mean(dx̂ · x̂)) with dx̂ = dOut · w, x̂ = x · rstd; dW += Σ_n dOut · x̂.
 * dW is reduced deterministically: each fixed block of rows writes its own partial row, and the partials are
 * added in block order.
 */
public final class RmsNorm {
    private RmsNorm() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int VL = S.length();
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final int ROWS = 32;

    public static void forward(Parallel par, MemorySegment x, MemorySegment w, MemorySegment out,
                               MemorySegment rstdOut, int n, int dim, float eps) {
        par.forEach(Parallel.chunks(n, ROWS), t -> {
            for (int r = t * ROWS, end = Math.min(n, r + ROWS); r < end; r++) {
                long base = (long) r * dim * 4;
                double ss = dot(x, base, x, base, dim);
                float rstd = (float) (1.0 / Math.sqrt(ss / dim + eps));
                int c = 0;
                for (int vend = dim - VL; c <= vend; c += VL) {
                    FloatVector.fromMemorySegment(S, x, base + c * 4L, NATIVE).mul(rstd)
                            .mul(FloatVector.fromMemorySegment(S, w, c * 4L, NATIVE))
                            .intoMemorySegment(out, base + c * 4L, NATIVE);
                }
                for (; c < dim; c++) {
                    out.set(F, base + c * 4L, x.get(F, base + c * 4L) * rstd * w.getAtIndex(F, c));
                }
                if (rstdOut != null) rstdOut.setAtIndex(F, r, rstd);
            }
        });
    }

    public static void backward(Parallel par, MemorySegment dOut, MemorySegment x, MemorySegment w,
                                MemorySegment rstdIn, MemorySegment dx, MemorySegment dw, int n, int dim) {
        int tasks = Parallel.chunks(n, ROWS);
        float[][] dwPartial = new float[tasks][dim];
        par.forEach(tasks, t -> {
            float[] dwp = dwPartial[t];
            for (int r = t * ROWS, end = Math.min(n, r + ROWS); r < end; r++) {
                long base = (long) r * dim * 4;
                float rstd = rstdIn.getAtIndex(F, r);
                // mean(dx̂·x̂) = rstd/C · Σ dOut·w·x
                int c = 0;
                FloatVector acc = FloatVector.zero(S);
                for (int vend = dim - VL; c <= vend; c += VL) {
                    FloatVector g = FloatVector.fromMemorySegment(S, dOut, base + c * 4L, NATIVE);
                    FloatVector xv = FloatVector.fromMemorySegment(S, x, base + c * 4L, NATIVE);
                    FloatVector wv = FloatVector.fromMemorySegment(S, w, c * 4L, NATIVE);
                    acc = g.mul(wv).fma(xv, acc);
                    FloatVector.fromArray(S, dwp, c).add(g.mul(xv.mul(rstd))).intoArray(dwp, c);
                }
                double dot = VMath.sum(acc);
                for (; c < dim; c++) {
                    float g = dOut.get(F, base + c * 4L), xv = x.get(F, base + c * 4L);
                    dot += (double) g * w.getAtIndex(F, c) * xv;
                    dwp[c] += g * (xv * rstd);
                }
                float mean = (float) (dot * rstd / dim);
                float k = rstd * mean; // x̂ · mean · rstd = x · rstd² · mean
                c = 0;
                for (int vend = dim - VL; c <= vend; c += VL) {
                    FloatVector g = FloatVector.fromMemorySegment(S, dOut, base + c * 4L, NATIVE);
                    FloatVector xv = FloatVector.fromMemorySegment(S, x, base + c * 4L, NATIVE);
                    FloatVector wv = FloatVector.fromMemorySegment(S, w, c * 4L, NATIVE);
                    FloatVector d = g.mul(wv).sub(xv.mul(k)).mul(rstd);
                    FloatVector.fromMemorySegment(S, dx, base + c * 4L, NATIVE).add(d)
                            .intoMemorySegment(dx, base + c * 4L, NATIVE);
                }
                for (; c < dim; c++) {
                    float g = dOut.get(F, base + c * 4L), xv = x.get(F, base + c * 4L);
                    float d = (g * w.getAtIndex(F, c) - xv * k) * rstd;
                    dx.set(F, base + c * 4L, dx.get(F, base + c * 4L) + d);
                }
            }
        });
        par.forEach(Parallel.chunks(dim, 1024), t -> {
            for (int c = t * 1024, end = Math.min(dim, c + 1024); c < end; c++) {
                double s = 0;
                for (float[] p : dwPartial) s += p[c];
                dw.setAtIndex(F, c, (float) (dw.getAtIndex(F, c) + s));
            }
        });
    }

    /** Σ a·b over {@code len} floats at byte offsets aOff, bOff, float vectors reduced to double. */
    static double dot(MemorySegment a, long aOff, MemorySegment b, long bOff, int len) {
        FloatVector acc = FloatVector.zero(S);
        int c = 0;
        for (int vend = len - VL; c <= vend; c += VL) {
            acc = FloatVector.fromMemorySegment(S, a, aOff + c * 4L, NATIVE)
                    .fma(FloatVector.fromMemorySegment(S, b, bOff + c * 4L, NATIVE), acc);
        }
        double s = VMath.sum(acc);
        for (; c < len; c++) s += (double) a.get(F, aOff + c * 4L) * b.get(F, bOff + c * 4L);
        return s;
    }
}
