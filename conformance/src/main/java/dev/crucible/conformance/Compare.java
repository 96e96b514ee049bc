package dev.crucible.conformance;

/**
 * How a backend's output is compared with the reference's.
 *
 * <p>The error is the normalised mean squared error NMSE = Σ(a−b)² / Σb² (b the reference), as llama.cpp's
 * test-backend-ops uses: scale-free, so one tolerance fits a tensor of any size and magnitude, and roughly the
 * square of the typical relative error (NMSE 1e-10 ≈ relative error 1e-5). When the reference is all zeros the
 * normalisation is meaningless and the plain mean squared error Σ(a−b)²/n is used instead.
 *
 * <p>A non-finite value never passes: NaN or ±Inf in the backend's output is an error unless the reference holds the
 * very same bits at that position (the generated inputs never make the reference produce one).
 */
public final class Compare {
    private Compare() {
    }

    /** NMSE over the positions where both are finite; +Inf when the lengths differ. */
    public static double nmse(HostArray actual, HostArray expected) {
        if (actual.length() != expected.length()) return Double.POSITIVE_INFINITY;
        double err = 0, ref = 0;
        for (int i = 0; i < expected.length(); i++) {
            if (!actual.isFinite(i) || !expected.isFinite(i)) continue;
            double a = actual.get(i), b = expected.get(i);
            err += (a - b) * (a - b);
            ref += b * b;
        }
        if (ref == 0) return expected.length() == 0 ? err : err / expected.length();
        return err / ref;
    }

    /**
     * Describes the first non-finite value in {@code actual} that the reference does not share bit for bit, or null.
     * Elements still holding the harness's sentinel are skipped: the harness reports them as unwritten. With a null
     * {@code expected} every non-finite value counts.
     */
    public static String nonFinite(HostArray actual, HostArray expected) {
        int count = 0, first = -1;
        for (int i = 0; i < actual.length(); i++) {
            if (actual.isFinite(i) || actual.bits(i) == Harness.SENTINEL) continue;
            if (expected != null && i < expected.length() && expected.bits(i) == actual.bits(i)) continue;
            if (first < 0) first = i;
            count++;
        }
        if (count == 0) return null;
        String s = count + " non-finite value(s), first [" + first + "] = " + actual.get(first);
        if (expected != null && first < expected.length()) s += " where the reference has " + expected.get(first);
        return s;
    }

    /** Describes the first element whose bits differ between two runs, or null when they are identical. */
    public static String firstBitDifference(HostArray first, HostArray second) {
        if (first.length() != second.length()) return "lengths " + first.length() + " and " + second.length();
        int count = 0, at = -1;
        for (int i = 0; i < first.length(); i++) {
            if (first.bits(i) != second.bits(i)) {
                if (at < 0) at = i;
                count++;
            }
        }
        if (count == 0) return null;
        return count + " element(s) differ, first [" + at + "]: " + first.get(at) + " then " + second.get(at);
    }
}
