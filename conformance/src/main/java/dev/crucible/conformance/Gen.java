package dev.crucible.conformance;

import dev.crucible.tensor.Rng;

import java.util.LinkedHashMap;
import java.util.Map;

/** Random inputs for the cases: every draw comes from the case's keyed generator. */
final class Gen {
    private Gen() {
    }

    /** n values from N(mean, sd²), rounded to f32. */
    static float[] normal(Rng rng, int n, double mean, double sd) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float) (mean + sd * rng.nextGaussian());
        return v;
    }

    static HostArray normal(Rng rng, int n, double sd) {
        return HostArray.f32(normal(rng, n, 0, sd));
    }

    /** n ints uniform in [0, bound). */
    static int[] uniform(Rng rng, int n, int bound) {
        int[] v = new int[n];
        for (int i = 0; i < n; i++) v[i] = rng.nextInt(bound);
        return v;
    }

    /** An ordered map of named inputs: {@code inputs("a", x, "b", y)}. */
    static Map<String, HostArray> inputs(Object... nameValue) {
        Map<String, HostArray> m = new LinkedHashMap<>();
        for (int i = 0; i < nameValue.length; i += 2) m.put((String) nameValue[i], (HostArray) nameValue[i + 1]);
        return m;
    }
}
