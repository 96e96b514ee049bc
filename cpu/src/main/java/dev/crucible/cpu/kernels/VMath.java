package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector math whose bits do not depend on the JIT. The Vector API's own {@code reduceLanes(ADD)} and transcendental
 * {@code lanewise(EXP)} may give different bits compiled (tree reduction, SVML) and interpreted (sequential lanes,
 * {@code Math.exp}), so a run's result would depend on warm-up timing. Everything here uses only IEEE-exact
 * operations (add, mul, fma, compare, lane moves, integer bit tricks), identical on every tier.
 */
public final class VMath {
    private VMath() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int VL = S.length();

    private static final float LOG2E = 1.44269504088896341f;
    private static final float MAGIC = 12582912f; // 1.5·2^23: adding it rounds to an integer
    private static final float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    private static final float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f,
            P3 = 4.1665795894e-2f, P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;
    private static final float HI = 88.72283905206835f, LO = -87.33654475055310898657f;

    /** Rotations by VL/2, VL/4, … 1 lanes: a fixed-order tree sum. */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private static final VectorShuffle<Float>[] ROT = new VectorShuffle[Integer.numberOfTrailingZeros(VL)];

    static {
        for (int i = 0, s = VL / 2; s >= 1; s /= 2, i++) ROT[i] = VectorShuffle.iota(S, s, 1, true);
    }

    /** Σ lanes in a fixed tree order (same bits on every JIT tier). Small enough for C2 to inline. */
    public static float sum(FloatVector v) {
        for (VectorShuffle<Float> r : ROT) v = v.add(v.rearrange(r));
        return v.lane(0);
    }

    /**
     * dst[i] = e^(mul·src[i] − shift) for i < len (src and dst may be the same array), and returns Σ dst in a fixed
     * order. Cephes' expf scheme (Cody-Waite reduction, degree-6 polynomial), within ~1 ulp for normal results;
     * results below the normal range flush to 0, −∞ gives 0, overflow +∞, NaN stays NaN.
     *
     * <p>Arrays in, arrays out on purpose: a vector handed to a method C2 declines to inline is boxed on the heap,
     * which costs more than the exp. The exp is written out inside this one loop.
     */
    public static float exp(float[] src, int so, float[] dst, int dOff, int len, float mul, float shift) {
        FloatVector acc = FloatVector.zero(S);
        int i = 0;
        for (int end = len - VL; i <= end; i += VL) {
            FloatVector x = FloatVector.fromArray(S, src, so + i).mul(mul).sub(shift);
            FloatVector xc = x.max(LO).min(HI);
            FloatVector n = xc.fma(LOG2E, MAGIC).sub(MAGIC);
            FloatVector r = n.fma(FloatVector.broadcast(S, -LN2_HI), xc);
            r = n.fma(FloatVector.broadcast(S, -LN2_LO), r);
            FloatVector p = r.fma(P0, P1).fma(r, FloatVector.broadcast(S, P2)).fma(r, FloatVector.broadcast(S, P3))
                    .fma(r, FloatVector.broadcast(S, P4)).fma(r, FloatVector.broadcast(S, P5));
            FloatVector y = p.mul(r.mul(r)).add(r).add(1f);
            IntVector ni = (IntVector) n.convert(VectorOperators.F2I, 0);
            IntVector n1 = ni.lanewise(VectorOperators.ASHR, 1), n2 = ni.sub(n1);
            y = y.mul(n1.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats())
                    .mul(n2.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats());
            y = y.blend(0f, x.compare(VectorOperators.LT, LO)).blend(Float.POSITIVE_INFINITY, x.compare(VectorOperators.GT, HI));
            y.intoArray(dst, dOff + i);
            acc = acc.add(y);
        }
        float total = sum(acc);
        for (; i < len; i++) {
            float y = exp(src[so + i] * mul - shift);
            dst[dOff + i] = y;
            total += y;
        }
        return total;
    }

    /** The scalar twin of the vector loop in {@link #exp(float[], int, float[], int, int, float, float)}: same bits. */
    public static float exp(float x) {
        if (x < LO) return 0f;
        if (x > HI) return Float.POSITIVE_INFINITY;
        if (Float.isNaN(x)) return x;
        float t = Math.fma(x, LOG2E, MAGIC);
        float n = t - MAGIC;
        float r = Math.fma(n, -LN2_HI, x);
        r = Math.fma(n, -LN2_LO, r);
        float p = Math.fma(Math.fma(Math.fma(Math.fma(Math.fma(r, P0, P1), r, P2), r, P3), r, P4), r, P5);
        float y = p * (r * r) + r + 1f;
        int ni = (int) n, n1 = ni >> 1, n2 = ni - n1;
        return y * Float.intBitsToFloat((n1 + 127) << 23) * Float.intBitsToFloat((n2 + 127) << 23);
    }
}
