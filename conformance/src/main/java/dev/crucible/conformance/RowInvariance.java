package dev.crucible.conformance;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.tensor.Blocks;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Rng;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * Checks a backend's {@link Backend#invariantMatmulRows()} claim: a matmul y = x · Wᵀ of M rows, W stored in each
 * weight type, gives every row the bits the same row gets in a matmul of its own. The serving path relies on it (a
 * decode step batches many sequences; a seeded request's text must not depend on the others), so a claim that does
 * not hold is a failure. M is the claimed count, at most {@link #MAX_ROWS}; K spans whole Q8_0/Q4_0 blocks and an odd
 * number of 16-float vectors.
 */
public final class RowInvariance {
    private RowInvariance() {}

    public static final int MAX_ROWS = 40;
    static final DType[] TYPES = {DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0};
    static final int N = 37, K = 96;

    /** One result per weight type: BITWISE, error = the number of elements that differ. */
    public static List<CaseResult> run(Backend candidate, long seed) {
        List<CaseResult> out = new ArrayList<>();
        int m = Math.max(1, Math.min(MAX_ROWS, candidate.invariantMatmulRows()));
        for (DType type : TYPES) {
            String shape = "row invariance M=" + m + " N=" + N + " K=" + K + " x·Wᵀ";
            CaseResult r;
            try {
                r = check(candidate, type, m, Rng.keyed(seed, Rng.key(shape), type.ordinal()), shape);
            } catch (RuntimeException e) {
                r = result(candidate, type, shape, Double.NaN, CaseResult.Status.FAIL,
                        "threw " + e.getClass().getSimpleName() + (e.getMessage() == null ? "" : ": " + e.getMessage()));
            }
            out.add(r);
        }
        return out;
    }

    private static CaseResult check(Backend be, DType type, int m, Rng rng, String shape) {
        float[] w = new float[N * K], x = new float[m * K];
        for (int i = 0; i < w.length; i++) w[i] = (float) rng.nextGaussian();
        for (int i = 0; i < x.length; i++) x[i] = (float) rng.nextGaussian();
        List<Buffer> owned = new ArrayList<>();
        try {
            Buffer b = alloc(be, owned, type, (long) N * K), a = alloc(be, owned, DType.F32, (long) m * K);
            Buffer c = alloc(be, owned, DType.F32, (long) m * N), one = alloc(be, owned, DType.F32, N);
            Op.MatMul all = new Op.MatMul(a, b, c, m, N, K, false, true, false);
            if (!be.supports(all)) return result(be, type, shape, Double.NaN, CaseResult.Status.UNSUPPORTED, "supports() is false");
            be.copyIn(b, type == DType.F32 ? MemorySegment.ofArray(w) : MemorySegment.ofArray(Blocks.encode(type, w, 0, w.length)));
            be.copyIn(a, MemorySegment.ofArray(x));
            be.run(all);
            float[] batched = new float[m * N], alone = new float[N];
            be.copyOut(c, MemorySegment.ofArray(batched));
            long diffs = 0;
            String first = null;
            for (int row = 0; row < m; row++) {
                be.run(new Op.MatMul(a.slice((long) row * K, K), b, one, 1, N, K, false, true, false));
                be.copyOut(one, MemorySegment.ofArray(alone));
                for (int j = 0; j < N; j++) {
                    if (Float.floatToRawIntBits(alone[j]) == Float.floatToRawIntBits(batched[row * N + j])) continue;
                    diffs++;
                    if (first == null) first = "row " + row + " col " + j + ": " + alone[j] + " alone, " + batched[row * N + j] + " in " + m + " rows";
                }
            }
            return diffs == 0 ? result(be, type, shape, 0, CaseResult.Status.PASS, "")
                    : result(be, type, shape, diffs, CaseResult.Status.FAIL, "invariantMatmulRows() claims "
                    + be.invariantMatmulRows() + " but " + diffs + " element(s) differ, first " + first);
        } finally {
            owned.forEach(Buffer::close);
        }
    }

    private static Buffer alloc(Backend be, List<Buffer> owned, DType type, long n) {
        Buffer b = be.allocate(type, n);
        owned.add(b);
        return b;
    }

    private static CaseResult result(Backend be, DType type, String shape, double diffs, CaseResult.Status status, String reason) {
        return new CaseResult(be.name(), "MatMul", shape, type, CaseResult.Check.BITWISE, diffs, 0, status, reason);
    }
}
