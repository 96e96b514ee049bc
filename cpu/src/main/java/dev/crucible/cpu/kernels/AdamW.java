package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * One fused AdamW pass (PyTorch semantics): each element's param, m and v are read once and written once.
 * Scalars (bias corrections, decay factor) are computed in double once, the per-element math in float.
 */
public final class AdamW {
    private AdamW() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final long CHUNK = 1 << 15;

    public static void step(Parallel par, MemorySegment param, MemorySegment grad, MemorySegment m,
                            MemorySegment v, long n, float lr, float beta1, float beta2, float eps,
                            float weightDecay, int step, float gradScale) {
        double bc1 = 1 - StrictMath.pow(beta1, step), bc2 = 1 - StrictMath.pow(beta2, step);
        float decay = (float) (1 - (double) lr * weightDecay);
        float b1 = beta1, b2 = beta2, c1 = (float) (1 - (double) beta1), c2 = (float) (1 - (double) beta2);
        float stepSize = (float) (lr / bc1);              // lr · m̂ = stepSize · m
        float rsqrtBc2 = (float) (1 / StrictMath.sqrt(bc2));    // sqrt(v̂) = sqrt(v) · rsqrtBc2
        par.forEach(Parallel.chunks(n, CHUNK), t -> {
            long from = t * CHUNK, to = Math.min(n, from + CHUNK);
            long i = from;
            for (long end = to - S.length(); i <= end; i += S.length()) {
                long off = i * 4;
                FloatVector g = FloatVector.fromMemorySegment(S, grad, off, NATIVE).mul(gradScale);
                FloatVector p = FloatVector.fromMemorySegment(S, param, off, NATIVE).mul(decay);
                FloatVector mv = FloatVector.fromMemorySegment(S, m, off, NATIVE).mul(b1).add(g.mul(c1));
                FloatVector vv = FloatVector.fromMemorySegment(S, v, off, NATIVE).mul(b2).add(g.mul(g).mul(c2));
                FloatVector denom = vv.sqrt().mul(rsqrtBc2).add(eps);
                p.sub(mv.mul(stepSize).div(denom)).intoMemorySegment(param, off, NATIVE);
                mv.intoMemorySegment(m, off, NATIVE);
                vv.intoMemorySegment(v, off, NATIVE);
            }
            for (; i < to; i++) {
                float g = grad.getAtIndex(F, i) * gradScale;
                float p = param.getAtIndex(F, i) * decay;
                float mv = m.getAtIndex(F, i) * b1 + g * c1;
                float vv = v.getAtIndex(F, i) * b2 + g * g * c2;
                float denom = (float) Math.sqrt(vv) * rsqrtBc2 + eps;
                param.setAtIndex(F, i, p - mv * stepSize / denom);
                m.setAtIndex(F, i, mv);
                v.setAtIndex(F, i, vv);
            }
        });
    }
}
