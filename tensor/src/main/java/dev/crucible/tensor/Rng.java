package dev.crucible.tensor;

/**
 * A small counter-based random generator: the stream is a pure function of (seed, key...), so a draw made for
 * (seed, step, purpose) is the same on every run, thread count and resume. Not shared between threads: make one per
 * use from its key. The mixing is SplitMix64 over a counter.
 */
public final class Rng {
    private final long base;
    private long counter;
    private double spareGaussian = Double.NaN;

    private Rng(long base) {
        this.base = base;
    }

    /** A generator whose stream depends only on the seed and the keys (e.g. step, purpose). */
    public static Rng keyed(long seed, long... keys) {
        long h = mix(seed ^ 0x9E3779B97F4A7C15L);
        for (long k : keys) h = mix(h ^ mix(k + 0x632BE59BD9B4E019L));
        return new Rng(h);
    }

    /** A stable 64-bit hash of a string, for use as a key ("purpose"). */
    public static long key(String purpose) {
        long h = 0xCBF29CE484222325L;
        for (int i = 0; i < purpose.length(); i++) h = (h ^ purpose.charAt(i)) * 0x100000001B3L;
        return mix(h);
    }

    static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    public long nextLong() {
        return mix(base + (++counter) * 0x9E3779B97F4A7C15L);
    }

    /** Uniform in [0, bound). */
    public int nextInt(int bound) {
        if (bound <= 0) throw new IllegalArgumentException("bound must be positive");
        return (int) Math.floorMod(nextLong() >>> 1, (long) bound);
    }

    /** Uniform in [0, bound). */
    public long nextLong(long bound) {
        if (bound <= 0) throw new IllegalArgumentException("bound must be positive");
        return Math.floorMod(nextLong() >>> 1, bound);
    }

    /** Uniform in [0, 1) with 24 random bits. */
    public float nextFloat() {
        return (nextLong() >>> 40) * 0x1.0p-24f;
    }

    /** Uniform in [0, 1) with 53 random bits. */
    public double nextDouble() {
        return (nextLong() >>> 11) * 0x1.0p-53;
    }

    /** Standard normal (Box-Muller; the second value of each pair is kept for the next call). */
    public double nextGaussian() {
        if (!Double.isNaN(spareGaussian)) {
            double g = spareGaussian;
            spareGaussian = Double.NaN;
            return g;
        }
        double u1;
        do {
            u1 = nextDouble();
        } while (u1 <= 0);
        double u2 = nextDouble();
        double r = Math.sqrt(-2 * Math.log(u1));
        spareGaussian = r * Math.sin(2 * Math.PI * u2);
        return r * Math.cos(2 * Math.PI * u2);
    }
}
