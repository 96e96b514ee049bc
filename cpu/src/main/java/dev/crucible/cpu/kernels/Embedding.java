package dev.crucible.cpu.kernels;

import dev.crucible.tensor.DType;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Token embedding lookup and its scatter-add backward. The backward splits the work over column blocks, not rows:
 * two rows with the same id then never race, and each dTable element receives its additions in row order (the
 * reference's order), whatever the thread count.
 */
public final class Embedding {
    private Embedding() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final ValueLayout.OfInt I = ValueLayout.JAVA_INT_UNALIGNED;
    static final int ROWS = 64;
    static final int COLS = 128;

    /** out(N,C) = table[ids[n]]; ids outside [0, vocab) throw. */
    public static void forward(Parallel par, MemorySegment ids, MemorySegment table, MemorySegment out, int n,
                               int dim, long vocab) {
        forward(par, ids, table, DType.F32, out, n, dim, vocab);
    }

    /** As above with the table stored as {@code type} (rows decoded by {@link WeightRows}). */
    public static void forward(Parallel par, MemorySegment ids, MemorySegment table, DType type, MemorySegment out,
                               int n, int dim, long vocab) {
        par.forEach(Parallel.chunks(n, ROWS), t -> {
            float[] row = type == DType.F32 ? null : new float[dim];
            for (int r = t * ROWS, end = Math.min(n, r + ROWS); r < end; r++) {
                int id = ids.getAtIndex(I, r);
                if (id < 0 || id >= vocab) throw new IndexOutOfBoundsException("token id " + id + " outside vocab " + vocab);
                if (row == null) {
                    MemorySegment.copy(table, (long) id * dim * 4, out, (long) r * dim * 4, (long) dim * 4);
                } else {
                    WeightRows.decode(type, table, type.bytes((long) id * dim), dim, row, 0);
                    MemorySegment.copy(row, 0, out, F, (long) r * dim * 4, dim);
                }
            }
        });
    }

    /** dTable(V,C) += scatter of dOut(N,C) by ids(N). */
    public static void backward(Parallel par, MemorySegment ids, MemorySegment dOut, MemorySegment dTable, int n,
                                int dim, long vocab) {
        for (int r = 0; r < n; r++) {
            int id = ids.getAtIndex(I, r);
            if (id < 0 || id >= vocab) throw new IndexOutOfBoundsException("token id " + id + " outside vocab " + vocab);
        }
        par.forEach(Parallel.chunks(dim, COLS), t -> {
            int c0 = t * COLS, c1 = Math.min(dim, c0 + COLS);
            for (int r = 0; r < n; r++) {
                long src = (long) r * dim, dst = (long) ids.getAtIndex(I, r) * dim;
                int c = c0;
                for (int end = c1 - S.length(); c <= end; c += S.length()) {
                    FloatVector.fromMemorySegment(S, dTable, (dst + c) * 4, NATIVE)
                            .add(FloatVector.fromMemorySegment(S, dOut, (src + c) * 4, NATIVE))
                            .intoMemorySegment(dTable, (dst + c) * 4, NATIVE);
                }
                for (; c < c1; c++) dTable.setAtIndex(F, dst + c, dTable.getAtIndex(F, dst + c) + dOut.getAtIndex(F, src + c));
            }
        });
    }
}
