package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * SwiGLU: out = silu(gate) · up with silu(g) = g·σ(g), σ(g) = 1 / (1 + e^-g), and its backward
 * dUp = dOut·silu(g), dGate = dOut·up·σ(g)·(1 + g·(1 − σ(g))). The vector exp is the JDK's (SVML-backed, ≤ 1 ulp).
 */
public final class SwiGlu {
    private SwiGlu() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int VL = S.length();
    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final long CHUNK = 1 << 15;

    static final int BLOCK = 1024;

    public static void forward(Parallel par, MemorySegment gate, MemorySegment up, MemorySegment out, long n) {
        par.forEach(Parallel.chunks(n, CHUNK), t -> {
            long from = t * CHUNK, to = Math.min(n, from + CHUNK);
            float[] g = new float[BLOCK], e = new float[BLOCK], u = new float[BLOCK];
            FloatVector one = FloatVector.broadcast(S, 1f);
            for (long b0 = from; b0 < to; b0 += BLOCK) {
                int len = (int) Math.min(BLOCK, to - b0);
                MemorySegment.copy(gate, F, b0 * 4, g, 0, len);
                MemorySegment.copy(up, F, b0 * 4, u, 0, len);
                VMath.exp(g, 0, e, 0, len, -1f, 0f); // e^-g
                int i = 0;
                for (int end = len - VL; i <= end; i += VL) {
                    FloatVector gv = FloatVector.fromArray(S, g, i);
                    FloatVector sig = one.div(FloatVector.fromArray(S, e, i).add(one));
                    gv.mul(sig).mul(FloatVector.fromArray(S, u, i)).intoArray(e, i);
                }
                for (; i < len; i++) e[i] = g[i] * (1f / (e[i] + 1f)) * u[i];
                MemorySegment.copy(e, 0, out, F, b0 * 4, len);
            }
        });
    }

    public static void backward(Parallel par, MemorySegment dOut, MemorySegment gate, MemorySegment up,
                                MemorySegment dGate, MemorySegment dUp, long n) {
        par.forEach(Parallel.chunks(n, CHUNK), t -> {
            long from = t * CHUNK, to = Math.min(n, from + CHUNK);
            float[] g = new float[BLOCK], e = new float[BLOCK], u = new float[BLOCK], dy = new float[BLOCK];
            FloatVector one = FloatVector.broadcast(S, 1f);
            for (long b0 = from; b0 < to; b0 += BLOCK) {
                int len = (int) Math.min(BLOCK, to - b0);
                MemorySegment.copy(gate, F, b0 * 4, g, 0, len);
                MemorySegment.copy(up, F, b0 * 4, u, 0, len);
                MemorySegment.copy(dOut, F, b0 * 4, dy, 0, len);
                VMath.exp(g, 0, e, 0, len, -1f, 0f);
                int i = 0;
                for (int end = len - VL; i <= end; i += VL) {
                    FloatVector gv = FloatVector.fromArray(S, g, i), dyv = FloatVector.fromArray(S, dy, i);
                    FloatVector sig = one.div(FloatVector.fromArray(S, e, i).add(one));
                    dyv.mul(FloatVector.fromArray(S, u, i)).mul(sig).mul(gv.mul(one.sub(sig)).add(one)).intoArray(e, i);
                    dyv.mul(gv).mul(sig).intoArray(u, i);
                }
                for (; i < len; i++) {
                    float sig = 1f / (e[i] + 1f);
                    e[i] = dy[i] * u[i] * sig * (g[i] * (1 - sig) + 1);
                    u[i] = dy[i] * g[i] * sig;
                }
                MemorySegment.copy(e, 0, dGate, F, b0 * 4, len);
                MemorySegment.copy(u, 0, dUp, F, b0 * 4, len);
            }
        });
    }
}
