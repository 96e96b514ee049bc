package dev.crucible.train.data;

import dev.crucible.tensor.Rng;

/**
 * Fixed-window batches over a {@link TokenDataset} for next-token training.
 *
 * <p><b>Windows.</b> A window is T+1 consecutive tokens: ids are the first T, targets the last T. The stream is split
 * into a training region {@code [0, trainTokens)} and a validation region {@code [trainTokens, size)} of
 * {@code max(T+1, ceil(size · valFraction))} tokens (none when valFraction is 0). Each region is cut into
 * non-overlapping windows at stride T (consecutive windows share one boundary token); no window crosses between the
 * regions, so training never sees a validation token.
 *
 * <p><b>Order.</b> Epoch e visits every training window exactly once, in a permutation drawn from
 * {@code Rng.keyed(seed, key("crucible.data.order"), e)}; epochs advance automatically, also within a batch.
 * {@link #position()} after k batches, given to {@link #seek} on a fresh loader over the same data and settings,
 * makes it produce exactly the batches the first would have produced next (the position belongs in a checkpoint).
 *
 * <p>Not thread-safe.
 */
public final class DataLoader {
    private static final long ORDER_KEY = Rng.key("crucible.data.order");

    /** Where the loader stands: the next training sample is number cursor of epoch's permutation. */
    public record Position(long epoch, int cursor) {
    }

    private final TokenDataset data;
    private final int seqLen, batch;
    private final long seed;
    private final long valStart;
    private final int trainWindows, valWindows;
    private final int[] window;
    private int[] order;
    private long orderEpoch = -1;
    private long epoch;
    private int cursor;

    /**
     * @param seqLen T, tokens per row
     * @param batch B, rows per batch
     * @param valFraction share of the stream (its end) kept for validation, in [0, 1)
     * @throws IllegalArgumentException when the dataset cannot hold one window in each split (says how many tokens
     *     are needed)
     */
    public DataLoader(TokenDataset data, int seqLen, int batch, long seed, double valFraction) {
        if (seqLen <= 0 || batch <= 0)
            throw new IllegalArgumentException("sequence length and batch size must be positive, got " + seqLen + ", " + batch);
        if (!(valFraction >= 0 && valFraction < 1))
            throw new IllegalArgumentException("validation fraction must be in [0, 1), got " + valFraction);
        this.data = data;
        this.seqLen = seqLen;
        this.batch = batch;
        this.seed = seed;
        long size = data.size();
        long valTokens = valTokens(size, seqLen, valFraction);
        this.valStart = size - valTokens;
        long train = windows(valStart, seqLen), val = windows(valTokens, seqLen);
        if (train < 1 || (valFraction > 0 && val < 1)) {
            throw new IllegalArgumentException("dataset has " + size + " tokens, too few for one window of "
                    + (seqLen + 1) + " tokens (sequence length " + seqLen + " + 1) in the training split"
                    + (valFraction > 0 ? " and one in the validation split (fraction " + valFraction + ")" : "")
                    + ": at least " + minTokens(seqLen, valFraction) + " tokens are needed");
        }
        if (train > Integer.MAX_VALUE || val > Integer.MAX_VALUE)
            throw new IllegalArgumentException("too many windows (" + train + "); use a longer sequence length");
        this.trainWindows = (int) train;
        this.valWindows = (int) val;
        this.window = new int[seqLen + 1];
    }

    private static long valTokens(long size, int seqLen, double frac) {
        return frac == 0 ? 0 : Math.min(size, Math.max(seqLen + 1L, (long) Math.ceil(size * frac)));
    }

    private static long windows(long tokens, int seqLen) {
        return tokens <= seqLen ? 0 : (tokens - 1) / seqLen;
    }

    /** The smallest stream size that yields a window in each split (training windows grow monotonically with size). */
    static long minTokens(int seqLen, double frac) {
        long lo = 1, hi = 2L * (seqLen + 1);
        while (windows(hi - valTokens(hi, seqLen, frac), seqLen) < 1) hi *= 2;
        while (lo < hi) {
            long mid = (lo + hi) >>> 1;
            if (windows(mid - valTokens(mid, seqLen, frac), seqLen) >= 1) hi = mid;
            else lo = mid + 1;
        }
        return lo;
    }

    public int seqLen() {
        return seqLen;
    }

    public int batchSize() {
        return batch;
    }

    public int trainWindows() {
        return trainWindows;
    }

    public int valWindows() {
        return valWindows;
    }

    /** Validation batches needed to cover every validation window once: ceil(valWindows / B). */
    public int valBatches() {
        return (valWindows + batch - 1) / batch;
    }

    /** Fills ids and targets (each B·T, row-major [B][T]) with the next B training windows. */
    public void nextBatch(int[] ids, int[] targets) {
        checkLengths(ids, targets);
        for (int r = 0; r < batch; r++) {
            if (cursor == trainWindows) {
                epoch++;
                cursor = 0;
            }
            int w = order()[cursor++];
            fill((long) w * seqLen, r, ids, targets);
        }
    }

    /** Validation batch index: rows are validation windows index·B + r, modulo valWindows. */
    public void valBatch(int index, int[] ids, int[] targets) {
        if (valWindows == 0) throw new IllegalStateException("this loader has no validation split (fraction 0)");
        if (index < 0) throw new IllegalArgumentException("validation batch index must be non-negative, got " + index);
        checkLengths(ids, targets);
        for (int r = 0; r < batch; r++) {
            long w = ((long) index * batch + r) % valWindows;
            fill(valStart + w * seqLen, r, ids, targets);
        }
    }

    /** The position after the samples consumed so far. */
    public Position position() {
        return new Position(epoch, cursor);
    }

    /** Continues from a position produced by {@link #position()} with the same data and settings. */
    public void seek(Position p) {
        if (p.epoch() < 0 || p.cursor() < 0 || p.cursor() > trainWindows)
            throw new IllegalArgumentException("data position " + p + " is invalid for " + trainWindows
                    + " training windows (was the data or sequence length changed?)");
        epoch = p.epoch();
        cursor = p.cursor();
    }

    private void fill(long start, int row, int[] ids, int[] targets) {
        data.read(start, window, 0, seqLen + 1);
        System.arraycopy(window, 0, ids, row * seqLen, seqLen);
        System.arraycopy(window, 1, targets, row * seqLen, seqLen);
    }

    private void checkLengths(int[] ids, int[] targets) {
        int n = batch * seqLen;
        if (ids.length != n || targets.length != n)
            throw new IllegalArgumentException("ids and targets must hold B*T = " + n + " tokens, got "
                    + ids.length + " and " + targets.length);
    }

    /** The permutation of training windows for the current epoch (Fisher-Yates, keyed by seed and epoch). */
    private int[] order() {
        if (orderEpoch != epoch) {
            if (order == null) order = new int[trainWindows];
            for (int i = 0; i < trainWindows; i++) order[i] = i;
            Rng rng = Rng.keyed(seed, ORDER_KEY, epoch);
            for (int i = trainWindows - 1; i > 0; i--) {
                int j = rng.nextInt(i + 1);
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
            orderEpoch = epoch;
        }
        return order;
    }
}
