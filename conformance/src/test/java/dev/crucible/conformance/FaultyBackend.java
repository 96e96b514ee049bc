package dev.crucible.conformance;

import dev.crucible.backend.Buffer;
import dev.crucible.backend.HostBackend;
import dev.crucible.backend.HostBuffer;
import dev.crucible.backend.Op;
import dev.crucible.backend.ref.RefBackend;
import dev.crucible.tensor.DType;

import java.util.ArrayList;
import java.util.List;

/** A test backend: the reference, with one deliberate defect the suite must catch and name. */
class FaultyBackend extends HostBackend {

    enum Fault {
        /** MatMul outputs scaled by 1 + 1e-3. */
        PERTURB_MATMUL,
        /** After each op, one element just past the end of its first output is written. */
        STRAY_WRITE,
        /** The first element of the first output becomes NaN. */
        NAN,
        /** Every other run flips the lowest bit of the first output's first element. */
        NONDETERMINISTIC,
        /** supports() is false for Attention and AttentionBackward. */
        NO_ATTENTION,
        /** MatMul writes into its input a as well. */
        CLOBBER_INPUT,
        /** The last element of each write-only F32 output is put back to what it held before the run. */
        SKIP_LAST,
        /** A MatMul of more than one row flips the lowest bit of its last element (rows depend on the row count). */
        ROW_DEPENDENT
    }

    private final RefBackend ref = new RefBackend();
    private final Fault fault;
    private final List<HostBuffer> roots = new ArrayList<>();
    private long runs;

    FaultyBackend(Fault fault) {
        this.fault = fault;
    }

    @Override
    public String name() {
        return "faulty-" + fault.name().toLowerCase();
    }

    @Override
    public Buffer allocate(DType type, long elements) {
        HostBuffer b = (HostBuffer) super.allocate(type, elements);
        roots.add(b);
        return b;
    }

    @Override
    public boolean supports(Op op) {
        if (fault == Fault.NO_ATTENTION && (op instanceof Op.Attention || op instanceof Op.AttentionBackward)) {
            return false;
        }
        return ref.supports(op);
    }

    @Override
    public void run(Op op) {
        HostBuffer first = HostBuffer.of(op.outputs().getFirst());
        int before = first.type() == DType.F32 ? first.segment().getAtIndex(HostBuffer.I32, first.elements() - 1) : 0;
        ref.run(op);
        runs++;
        switch (fault) {
            case PERTURB_MATMUL -> {
                if (op instanceof Op.MatMul mm) {
                    HostBuffer c = HostBuffer.of(mm.c());
                    for (long i = 0; i < c.elements(); i++) c.setFloat(i, c.getFloat(i) * 1.001f);
                }
            }
            case STRAY_WRITE -> {
                HostBuffer root = rootOf(first);
                long offset = (first.segment().address() - root.segment().address()) / 4;
                if (offset + first.elements() < root.elements()) root.setFloat(offset + first.elements(), 0.5f);
            }
            case NAN -> first.setFloat(0, Float.NaN);
            case NONDETERMINISTIC -> {
                if (runs % 2 == 1) first.setInt(0, first.getInt(0) ^ 1);
            }
            case CLOBBER_INPUT -> {
                if (op instanceof Op.MatMul mm) HostBuffer.of(mm.a()).setFloat(0, 42f);
            }
            case SKIP_LAST -> first.segment().setAtIndex(HostBuffer.I32, first.elements() - 1, before);
            case ROW_DEPENDENT -> {
                if (op instanceof Op.MatMul mm && mm.m() > 1) {
                    HostBuffer c = HostBuffer.of(mm.c());
                    c.setInt(c.elements() - 1, c.getInt(c.elements() - 1) ^ 1);
                }
            }
            case NO_ATTENTION -> { }
        }
    }

    /** The allocation a slice lives in, found by address (a slice does not know its parent). */
    private HostBuffer rootOf(HostBuffer slice) {
        long a = slice.segment().address();
        for (HostBuffer r : roots.reversed()) { // newest first: freed memory may be reused
            long start = r.segment().address();
            if (a >= start && a < start + r.segment().byteSize()) return r;
        }
        throw new IllegalStateException("buffer not allocated here");
    }

    @Override
    public void close() {
        roots.clear();
    }
}
