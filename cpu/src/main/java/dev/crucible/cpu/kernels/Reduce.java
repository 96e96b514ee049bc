package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Global reductions. Σx² (for the gradient norm): each fixed chunk sums in float vectors over short blocks and
 * carries a double; chunk partials are combined in chunk order, so the bits do not depend on the thread count.
 */
public final class Reduce {
    private Reduce() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final long CHUNK = 1 << 16;
    /** Elements summed in float before the running total moves to double: keeps float error at ~2⁻²⁴·√BLOCK. */
    static final int BLOCK = 1024;

    public static double sumSquares(Parallel par, MemorySegment x, long n) {
        int tasks = Parallel.chunks(n, CHUNK);
        double[] partial = new double[tasks];
        par.forEach(tasks, t -> {
            long from = t * CHUNK, to = Math.min(n, from + CHUNK);
            double total = 0;
            for (long b = from; b < to; b += BLOCK) {
                long end = Math.min(to, b + BLOCK), i = b;
                FloatVector acc = FloatVector.zero(S);
                for (long vend = end - S.length(); i <= vend; i += S.length()) {
                    FloatVector v = FloatVector.fromMemorySegment(S, x, i * 4, NATIVE);
                    acc = v.fma(v, acc);
                }
                double s = VMath.sum(acc);
                for (; i < end; i++) {
                    float v = x.getAtIndex(F, i);
                    s += (double) v * v;
                }
                total += s;
            }
            partial[t] = total;
        });
        double sum = 0;
        for (double p : partial) sum += p;
        return sum;
    }
}
