package dev.crucible.qualify;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.backend.UnsupportedOpException;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * One op stream on two backends at once: every buffer is a pair (one on each), every op runs on a, then on b, and
 * once recording starts each output is read back from both and compared ({@link OpDiff}). Host reads
 * ({@link #copyOut}) come from a, so the model's host-side decisions (the loss, the clip coefficient) are a's.
 *
 * <p>Free-running, b computes from its own earlier outputs: the diffs show how error builds up along the step. In
 * lockstep, each of b's outputs is overwritten with a's after the comparison, so every op on b starts from exactly
 * a's state and its diff is that op's own error: the op at fault, not the ones its error flowed into.
 */
public final class PairBackend implements Backend {
    /** A buffer on each backend, same type and length. */
    public record PairBuffer(Buffer a, Buffer b) implements Buffer {
        @Override
        public DType type() { return a.type(); }

        @Override
        public long elements() { return a.elements(); }

        @Override
        public Buffer slice(long offset, long count) { return new PairBuffer(a.slice(offset, count), b.slice(offset, count)); }

        @Override
        public void close() {
            try {
                a.close();
            } finally {
                b.close();
            }
        }
    }

    private final WatchedBackend a, b;
    private final boolean lockstep;
    private final StepLabels labels;
    private final List<OpDiff> diffs = new ArrayList<>();
    private boolean recording;
    private int index;
    private volatile StepLabels.Label current;

    public PairBackend(WatchedBackend a, WatchedBackend b, boolean lockstep, StepLabels labels) {
        this.a = a;
        this.b = b;
        this.lockstep = lockstep;
        this.labels = labels;
    }

    /** From now on every op is labelled (from index 0) and its outputs compared. */
    public void startRecording() {
        recording = true;
        index = 0;
        a.resetCount();
        b.resetCount();
    }

    public List<OpDiff> diffs() { return diffs; }

    /** The label of the op running now (for naming a hang), or null. */
    public StepLabels.Label current() { return current; }

    public int index() { return index; }

    private static PairBuffer pair(Buffer x) {
        if (x instanceof PairBuffer p) return p;
        throw new IllegalArgumentException("not a buffer of this pair backend: " + x);
    }

    @Override
    public String name() { return a.name() + "+" + b.name(); }

    @Override
    public Buffer allocate(DType type, long elements) {
        Buffer x = a.allocate(type, elements);
        try {
            return new PairBuffer(x, b.allocate(type, elements));
        } catch (RuntimeException e) {
            x.close();
            throw e;
        }
    }

    @Override
    public void copyIn(Buffer dst, MemorySegment src) {
        a.copyIn(pair(dst).a(), src);
        b.copyIn(pair(dst).b(), src);
    }

    @Override
    public void copyOut(Buffer src, MemorySegment dst) { a.copyOut(pair(src).a(), dst); }

    /** b's copy of a buffer. */
    public void copyOutB(Buffer src, MemorySegment dst) { b.copyOut(pair(src).b(), dst); }

    /** Everything the model may run; a backend that declines an op is reported when the op comes. */
    @Override
    public boolean supports(Op op) { return true; }

    @Override
    public void run(Op op) {
        Op opA = OpIO.remap(op, x -> pair(x).a()), opB = OpIO.remap(op, x -> pair(x).b());
        List<String> names = OpIO.outputNames(op);
        StepLabels.Label label = recording ? labels.at(index, op.name(), names) : new StepLabels.Label("setup", "-",
                op.name(), op.name(), names);
        current = label;
        try {
            for (WatchedBackend side : List.of(a, b)) {
                if (!side.supports(side == a ? opA : opB)) {
                    if (recording) {
                        diffs.add(new OpDiff(index, label.phase(), label.layer(), label.what(), op.name(), label.tensor(0),
                                op.outputs().getFirst().elements(), Double.NaN, Double.NaN, 0, 0, 0,
                                "unsupported by " + side.name()));
                    }
                    throw new UnsupportedOpException(side.name(), op);
                }
            }
            a.run(opA);
            b.run(opB);
            List<Buffer> outs = op.outputs();
            for (int i = 0; i < outs.size(); i++) {
                PairBuffer p = pair(outs.get(i));
                if (!recording && !lockstep) continue;
                int[] va = read(a, p.a()), vb = read(b, p.b());
                if (recording) diffs.add(compare(label, op.name(), label.tensor(i), p.type(), va, vb));
                if (lockstep) b.copyIn(p.b(), MemorySegment.ofArray(va));
            }
        } finally {
            current = null;
            if (recording) index++;
        }
    }

    private static int[] read(Backend side, Buffer x) {
        int[] v = new int[Math.toIntExact(x.elements())];
        side.copyOut(x, MemorySegment.ofArray(v));
        return v;
    }

    private OpDiff compare(StepLabels.Label label, String op, String tensor, DType type, int[] va, int[] vb) {
        double err = 0, ref = 0, maxAbs = 0;
        long bits = 0, nfA = 0, nfB = 0;
        boolean f32 = type == DType.F32;
        for (int i = 0; i < va.length; i++) {
            if (va[i] != vb[i]) bits++;
            double x = f32 ? Float.intBitsToFloat(va[i]) : va[i], y = f32 ? Float.intBitsToFloat(vb[i]) : vb[i];
            boolean fa = Double.isFinite(x), fb = Double.isFinite(y);
            if (!fa) nfA++;
            if (!fb) nfB++;
            if (!fa || !fb) continue;
            err += (y - x) * (y - x);
            ref += x * x;
            maxAbs = Math.max(maxAbs, Math.abs(y - x));
        }
        double nmse = ref == 0 ? (va.length == 0 ? 0 : err / va.length) : err / ref;
        return new OpDiff(index, label.phase(), label.layer(), label.what(), op, tensor, va.length, nmse, maxAbs, bits,
                nfA, nfB, "");
    }

    @Override
    public void synchronize() {
        a.synchronize();
        b.synchronize();
    }

    @Override
    public int invariantMatmulRows() { return Math.min(a.invariantMatmulRows(), b.invariantMatmulRows()); }

    /** Closes nothing: the two backends belong to the caller. */
    @Override
    public void close() {
    }
}
