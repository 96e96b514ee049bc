package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Fused softmax + cross-entropy over logits(N,V). One read of each row from memory finds max and Σexp together
 * (an online softmax over L1-sized blocks: the block max is found first, so each logit costs one exp); a second
 * pass writes gradScale · (softmax − onehot). The gradient pass reads each logit just before writing the same
 * index, so dLogits may be the logits buffer. A negative target masks its row (loss 0, gradient 0).
 */
public final class CrossEntropy {
    private CrossEntropy() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int VL = S.length();
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final ValueLayout.OfInt I = ValueLayout.JAVA_INT_UNALIGNED;
    static final int ROWS = 4;
    static final int BLOCK = 1024;

    public static void forward(Parallel par, MemorySegment logits, MemorySegment targets, MemorySegment losses,
                               MemorySegment dLogits, int n, int vocab, float gradScale) {
        par.forEach(Parallel.chunks(n, ROWS), t -> {
            float[] scratch = new float[BLOCK];
            for (int r = t * ROWS, end = Math.min(n, r + ROWS); r < end; r++) {
                row(logits, targets.getAtIndex(I, r), losses, dLogits, r, vocab, gradScale, scratch);
            }
        });
    }

    private static void row(MemorySegment logits, int target, MemorySegment losses, MemorySegment dLogits, int r,
                            int vocab, float gradScale, float[] scratch) {
        if (target >= vocab) throw new IndexOutOfBoundsException("target " + target + " outside vocab " + vocab);
        long base = (long) r * vocab * 4;
        if (target < 0) {
            losses.setAtIndex(F, r, 0f);
            if (dLogits != null) dLogits.asSlice(base, vocab * 4L).fill((byte) 0);
            return;
        }
        float max = Float.NEGATIVE_INFINITY;
        double sum = 0;
        for (int b0 = 0; b0 < vocab; b0 += BLOCK) {
            int b1 = Math.min(vocab, b0 + BLOCK);
            float bmax = blockMax(logits, base, b0, b1);
            if (bmax > max) {
                sum *= StrictMath.exp((double) max - bmax);
                max = bmax;
            }
            MemorySegment.copy(logits, F, base + b0 * 4L, scratch, 0, b1 - b0);
            sum += VMath.exp(scratch, 0, scratch, 0, b1 - b0, 1f, max);
        }
        float lse = (float) (max + StrictMath.log(sum));
        losses.setAtIndex(F, r, lse - logits.get(F, base + target * 4L));
        if (dLogits == null) return;
        for (int b0 = 0; b0 < vocab; b0 += BLOCK) {
            int len = Math.min(BLOCK, vocab - b0);
            MemorySegment.copy(logits, F, base + b0 * 4L, scratch, 0, len);
            VMath.exp(scratch, 0, scratch, 0, len, 1f, lse);
            int c = 0;
            for (int vend = len - VL; c <= vend; c += VL) {
                FloatVector.fromArray(S, scratch, c).mul(gradScale).intoArray(scratch, c);
            }
            for (; c < len; c++) scratch[c] *= gradScale;
            MemorySegment.copy(scratch, 0, dLogits, F, base + b0 * 4L, len);
        }
        long ti = base + target * 4L;
        dLogits.set(F, ti, dLogits.get(F, ti) - gradScale);
    }

    private static float blockMax(MemorySegment x, long base, int from, int to) {
        int c = from;
        float m = Float.NEGATIVE_INFINITY;
        if (to - from >= VL) {
            FloatVector mv = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY);
            for (int vend = to - VL; c <= vend; c += VL) {
                mv = mv.max(FloatVector.fromMemorySegment(S, x, base + c * 4L, NATIVE));
            }
            m = mv.reduceLanes(VectorOperators.MAX);
        }
        for (; c < to; c++) m = Math.max(m, x.get(F, base + c * 4L));
        return m;
    }
}
