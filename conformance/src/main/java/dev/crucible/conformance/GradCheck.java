package dev.crucible.conformance;

import dev.crucible.backend.Backend;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Rng;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * A finite-difference check of one backward op. A scalar loss L = Σ forward-output · R (R random weights, given as
 * inputs) is evaluated on the reference backend, with the loss summed in double on the host; its gradient with respect
 * to an input x is estimated by central differences (L(x+h) − L(x−h)) / (x₊ − x₋) on a sample of coordinates, where
 * x₊, x₋ are the f32 values actually stored, so the rounding of x ± h costs nothing; two such differences, at h and
 * 2h, are combined by Richardson extrapolation (4·D(h) − D(2h)) / 3, whose error is O(h⁴) instead of O(h²). The backward op, given R as its
 * upstream gradient, runs on the backend under test and must agree (see {@link Tolerance#GRADIENT}).
 *
 * <p>Unlike the reference comparison this does not trust the reference's backward: it checks that the backward op
 * really is the derivative of the forward op, on both backends at once.
 *
 * @param op        the backward op family being checked (e.g. "RmsNormBackward")
 * @param shape     a short label of the (small) shape
 * @param h         the finite-difference step (the extrapolation also uses 2h)
 * @param tolerance the largest relative error that passes
 * @param samples   at most this many coordinates per input are perturbed
 * @param inputs    primal inputs, loss weights, and whatever the backward op needs (saved forward values, zeros for
 *                  accumulated gradients)
 * @param forward   the forward op, run on the reference for each perturbation
 * @param loss      forward output name → name of the input holding its weights R
 * @param backward  the backward op, run once on the backend under test
 * @param gradients backward output name → name of the input it is the gradient of
 */
public record GradCheck(String op, String shape, double h, double tolerance, int samples, OpCase.Inputs inputs,
                        OpCase.OpFactory forward, Map<String, String> loss, OpCase.OpFactory backward,
                        Map<String, String> gradients) {

    public GradCheck {
        // Sorted, so the order of checks (and of the reasons reported) is the same in every JVM.
        loss = Collections.unmodifiableSortedMap(new TreeMap<>(loss));
        gradients = Collections.unmodifiableSortedMap(new TreeMap<>(gradients));
    }

    public String id() {
        return op + " fd " + shape;
    }

    /** Runs the check; exceptions propagate (the suite turns them into a failed result). */
    public CaseResult run(Backend candidate, Backend reference, long seed) {
        Rng rng = Rng.keyed(seed, Rng.key(id()));
        Map<String, HostArray> in = inputs.generate(rng, reference);
        Execution back = Harness.execute(candidate, in, backward);
        if (!back.supported()) {
            return result(candidate, Double.NaN, CaseResult.Status.UNSUPPORTED, "supports() is false");
        }
        List<String> reasons = new ArrayList<>(back.problems());
        double worst = 0;
        for (int i = 0; i < back.outputs().size(); i++) {
            String nf = Compare.nonFinite(back.outputs().get(i), null);
            if (nf != null) {
                reasons.add("'" + back.names().get(i) + "': " + nf);
                worst = Double.POSITIVE_INFINITY;
            }
        }
        for (Map.Entry<String, String> g : gradients.entrySet()) {
            HostArray grad = back.output(g.getKey());
            String primal = g.getValue();
            float[] x = in.get(primal).floats();
            int[] coords = sample(Rng.keyed(seed, Rng.key(id()), Rng.key(primal)), x.length, samples);
            double[] fd = new double[coords.length];
            double maxAbs = 0;
            for (int i = 0; i < coords.length; i++) {
                int c = coords[i];
                // Richardson extrapolation of two central differences cancels the h² error term, so h can be large
                // enough that the f32 rounding of the forward outputs hardly shows.
                double d1 = centralDifference(reference, in, primal, x, c, h);
                double d2 = centralDifference(reference, in, primal, x, c, 2 * h);
                fd[i] = (4 * d1 - d2) / 3;
                maxAbs = Math.max(maxAbs, Math.abs(fd[i]));
            }
            double worstHere = 0;
            int worstAt = -1;
            for (int i = 0; i < coords.length; i++) {
                double an = grad.get(coords[i]);
                double scale = Math.max(Math.max(Math.abs(fd[i]), Math.abs(an)), 0.01 * maxAbs);
                double err = scale == 0 ? 0 : Math.abs(an - fd[i]) / scale;
                if (err > worstHere || worstAt < 0) {
                    worstHere = err;
                    worstAt = i;
                }
            }
            worst = Math.max(worst, worstHere);
            if (worstHere > tolerance) {
                reasons.add(String.format("%s[%d] = %.6g but finite differences of the forward give %.6g (rel %.3g)",
                        g.getKey(), coords[worstAt], grad.get(coords[worstAt]), fd[worstAt], worstHere));
            }
        }
        return result(candidate, worst, reasons.isEmpty() ? CaseResult.Status.PASS : CaseResult.Status.FAIL,
                String.join("; ", reasons));
    }

    CaseResult result(Backend candidate, double error, CaseResult.Status status, String reason) {
        return new CaseResult(candidate.name(), op, "fd " + shape, DType.F32, CaseResult.Check.GRADIENT, error,
                tolerance, status, reason);
    }

    /** (L(x+h) − L(x−h)) / (x₊ − x₋) at coordinate c, dividing by the f32 values actually stored. */
    private double centralDifference(Backend reference, Map<String, HostArray> in, String primal, float[] x, int c,
                                     double step) {
        float x0 = x[c], xp = (float) (x0 + step), xm = (float) (x0 - step);
        x[c] = xp;
        double lp = loss(reference, with(in, primal, x));
        x[c] = xm;
        double lm = loss(reference, with(in, primal, x));
        x[c] = x0;
        return (lp - lm) / ((double) xp - xm);
    }

    /** L = Σ over the loss outputs of Σ out · R, accumulated in double. */
    private double loss(Backend reference, Map<String, HostArray> in) {
        Execution fwd = Harness.execute(reference, in, forward);
        if (!fwd.supported()) throw new IllegalStateException("the reference does not support the forward of " + op);
        double l = 0;
        for (Map.Entry<String, String> e : loss.entrySet()) {
            HostArray out = fwd.output(e.getKey()), w = in.get(e.getValue());
            for (int i = 0; i < out.length(); i++) l += out.get(i) * w.get(i);
        }
        return l;
    }

    private static Map<String, HostArray> with(Map<String, HostArray> in, String name, float[] values) {
        Map<String, HostArray> m = new LinkedHashMap<>(in);
        m.put(name, HostArray.f32(values.clone()));
        return m;
    }

    /** Up to {@code k} distinct coordinates of {@code n}, in increasing order (all of them when n ≤ k). */
    private static int[] sample(Rng rng, int n, int k) {
        int[] idx = new int[n];
        for (int i = 0; i < n; i++) idx[i] = i;
        if (n <= k) return idx;
        for (int i = 0; i < k; i++) {
            int j = i + rng.nextInt(n - i);
            int t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
        }
        int[] s = Arrays.copyOf(idx, k);
        Arrays.sort(s);
        return s;
    }
}
