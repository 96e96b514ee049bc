package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * SwiGLU: out = silu(gate) · up with silu(g) = g·σ(g), σ(g) = 1 / (1 + e^-g), and its backward
 * dUp = dOut·silu(g), dGate = dOut·up·σ(g)·(1 + g·(1 − σ(g))). The vector exp is the JDK's (SVML-backed, ≤ 1 ulp).
 */
public final class SwiGlu {
    private SwiGlu() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final long CHUNK = 1 << 15;

    public static void forward(Parallel par, MemorySegment gate, MemorySegment up, MemorySegment out, long n) {
        par.forEach(Parallel.chunks(n, CHUNK), t -> {
            long from = t * CHUNK, to = Math.min(n, from + CHUNK);
            long i = from;
            for (long end = to - S.length(); i <= end; i += S.length()) {
                FloatVector g = FloatVector.fromMemorySegment(S, gate, i * 4, NATIVE);
                FloatVector u = FloatVector.fromMemorySegment(S, up, i * 4, NATIVE);
                FloatVector sig = sigmoid(g);
                g.mul(sig).mul(u).intoMemorySegment(out, i * 4, NATIVE);
            }
            for (; i < to; i++) {
                float g = gate.getAtIndex(F, i);
                out.setAtIndex(F, i, g * sigmoid(g) * up.getAtIndex(F, i));
            }
        });
    }

    public static void backward(Parallel par, MemorySegment dOut, MemorySegment gate, MemorySegment up,
                                MemorySegment dGate, MemorySegment dUp, long n) {
        par.forEach(Parallel.chunks(n, CHUNK), t -> {
            long from = t * CHUNK, to = Math.min(n, from + CHUNK);
            long i = from;
            FloatVector one = FloatVector.broadcast(S, 1f);
            for (long end = to - S.length(); i <= end; i += S.length()) {
                FloatVector dy = FloatVector.fromMemorySegment(S, dOut, i * 4, NATIVE);
                FloatVector g = FloatVector.fromMemorySegment(S, gate, i * 4, NATIVE);
                FloatVector u = FloatVector.fromMemorySegment(S, up, i * 4, NATIVE);
                FloatVector sig = sigmoid(g);
                FloatVector dGateV = dy.mul(u).mul(sig).mul(g.mul(one.sub(sig)).add(one));
                dy.mul(g).mul(sig).intoMemorySegment(dUp, i * 4, NATIVE);
                dGateV.intoMemorySegment(dGate, i * 4, NATIVE);
            }
            for (; i < to; i++) {
                float dy = dOut.getAtIndex(F, i), g = gate.getAtIndex(F, i), u = up.getAtIndex(F, i);
                float sig = sigmoid(g);
                dUp.setAtIndex(F, i, dy * g * sig);
                dGate.setAtIndex(F, i, dy * u * sig * (1 + g * (1 - sig)));
            }
        });
    }

    static FloatVector sigmoid(FloatVector g) {
        FloatVector one = FloatVector.broadcast(S, 1f);
        return one.div(VMath.exp(g.neg()).add(one));
    }

    static float sigmoid(float g) {
        return 1f / (1f + VMath.exp(-g));
    }
}
