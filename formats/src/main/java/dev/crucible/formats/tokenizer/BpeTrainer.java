package dev.crucible.formats.tokenizer;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.function.IntConsumer;

/**
 * Learns byte-level BPE merges from pre-token counts. The corpus is reduced to distinct pre-tokens ("words") with
 * frequencies, so the work per merge is proportional to the words containing the merged pair, not to the corpus:
 * each pair keeps its total count and the list of words it occurs in, and a heap with lazy deletion yields the most
 * frequent pair.
 *
 * <p>Deterministic: words are processed in sorted order and ties in count go to the pair with the lower (left,
 * right) ids.
 */
final class BpeTrainer {
    /** Learned vocabulary: bytes of ids 0..n-1 (0..255 the single bytes), merges as {left, right, result}. */
    record Result(byte[][] tokenBytes, List<int[]> merges) {
    }

    private BpeTrainer() {
    }

    static Result train(Map<String, long[]> wordCounts, int maxNewTokens, IntConsumer progress) {
        String[] sorted = wordCounts.keySet().toArray(new String[0]);
        Arrays.sort(sorted);
        int[][] words = new int[sorted.length][];
        long[] freq = new long[sorted.length];
        for (int w = 0; w < sorted.length; w++) {
            byte[] b = sorted[w].getBytes(StandardCharsets.UTF_8);
            words[w] = new int[b.length];
            for (int i = 0; i < b.length; i++) words[w][i] = b[i] & 0xFF;
            freq[w] = wordCounts.get(sorted[w])[0];
        }

        List<byte[]> tokens = new ArrayList<>();
        for (int b = 0; b < 256; b++) tokens.add(new byte[] {(byte) b});
        // Bytes as an ISO-8859-1 string: a lossless key for "does this byte string have an id already?".
        Map<String, Integer> idOf = new HashMap<>();
        for (int b = 0; b < 256; b++) idOf.put(latin1(tokens.get(b)), b);

        Pairs pairs = new Pairs();
        for (int w = 0; w < words.length; w++) pairs.addWord(words[w], w, freq[w]);
        PriorityQueue<long[]> heap = new PriorityQueue<>(BpeTrainer::compareCandidates);
        for (int p = 0; p < pairs.size; p++) heap.add(new long[] {pairs.count[p], pairs.left[p], pairs.right[p]});

        List<int[]> merges = new ArrayList<>();
        PairMap merged = new PairMap(1024);
        int[] stamp = new int[words.length];
        Arrays.fill(stamp, -1);
        int learned = 0;
        int round = 0;
        while (learned < maxNewTokens && !heap.isEmpty()) {
            long[] top = heap.poll();
            int a = (int) top[1];
            int b = (int) top[2];
            int p = pairs.index(a, b);
            if (pairs.count[p] != top[0] || top[0] <= 0) continue; // stale: a fresher entry is in the heap

            byte[] joined = concat(tokens.get(a), tokens.get(b));
            String key = latin1(joined);
            Integer existing = idOf.get(key);
            int result;
            if (existing != null) {
                // Another pair already made these bytes: reuse the id so byte strings stay unique.
                result = existing;
            } else {
                result = tokens.size();
                tokens.add(joined);
                idOf.put(key, result);
                learned++;
            }
            // A pair can come back after it was merged (when a later merge recreates one of its halves); the
            // first rule already covers it at encode time, so it is listed once.
            if (merged.get(a, b) == PairMap.ABSENT) {
                merged.put(a, b, 1);
                merges.add(new int[] {a, b, result});
            }

            round++;
            int[] occurrences = pairs.words[p].toArray();
            pairs.touchStart();
            for (int w : occurrences) {
                if (stamp[w] == round) continue; // listed twice
                stamp[w] = round;
                int[] syms = words[w];
                if (!contains(syms, a, b)) continue;
                pairs.removeWord(syms, freq[w]);
                words[w] = syms = apply(syms, a, b, result);
                pairs.addWord(syms, w, freq[w]);
            }
            // Every pair whose count changed gets a fresh heap entry; the old ones are skipped as stale.
            for (int q : pairs.touched()) {
                if (pairs.count[q] > 0) heap.add(new long[] {pairs.count[q], pairs.left[q], pairs.right[q]});
            }
            if (existing == null) progress.accept(learned);
        }
        return new Result(tokens.toArray(new byte[0][]), merges);
    }

    /** Higher count first; then lower left id, then lower right id. */
    private static int compareCandidates(long[] x, long[] y) {
        if (x[0] != y[0]) return Long.compare(y[0], x[0]);
        if (x[1] != y[1]) return Long.compare(x[1], y[1]);
        return Long.compare(x[2], y[2]);
    }

    private static boolean contains(int[] syms, int a, int b) {
        for (int i = 0; i + 1 < syms.length; i++) if (syms[i] == a && syms[i + 1] == b) return true;
        return false;
    }

    /** Left to right, non-overlapping: "a a a" with (a, a) becomes "aa a", as encoding does. */
    private static int[] apply(int[] syms, int a, int b, int result) {
        int[] out = new int[syms.length];
        int n = 0;
        for (int i = 0; i < syms.length; i++) {
            if (i + 1 < syms.length && syms[i] == a && syms[i + 1] == b) {
                out[n++] = result;
                i++;
            } else {
                out[n++] = syms[i];
            }
        }
        return Arrays.copyOf(out, n);
    }

    private static byte[] concat(byte[] x, byte[] y) {
        byte[] out = Arrays.copyOf(x, x.length + y.length);
        System.arraycopy(y, 0, out, x.length, y.length);
        return out;
    }

    private static String latin1(byte[] b) {
        return new String(b, StandardCharsets.ISO_8859_1);
    }

    /** Pair statistics in parallel arrays, indexed through a {@link PairMap}. */
    private static final class Pairs {
        private final PairMap indexOf = new PairMap(1 << 16);
        int[] left = new int[1024];
        int[] right = new int[1024];
        long[] count = new long[1024];
        IntList[] words = new IntList[1024];
        int size;
        private final IntList touched = new IntList();
        private boolean[] isTouched = new boolean[1024];

        int index(int a, int b) {
            long v = indexOf.get(a, b);
            if (v != PairMap.ABSENT) return (int) v;
            if (size == left.length) {
                int n = size * 2;
                left = Arrays.copyOf(left, n);
                right = Arrays.copyOf(right, n);
                count = Arrays.copyOf(count, n);
                words = Arrays.copyOf(words, n);
                isTouched = Arrays.copyOf(isTouched, n);
            }
            left[size] = a;
            right[size] = b;
            words[size] = new IntList();
            indexOf.put(a, b, size);
            return size++;
        }

        void addWord(int[] syms, int w, long f) {
            for (int i = 0; i + 1 < syms.length; i++) {
                int p = index(syms[i], syms[i + 1]);
                count[p] += f;
                words[p].add(w); // duplicates are filtered by the caller's stamp
                touch(p);
            }
        }

        void removeWord(int[] syms, long f) {
            for (int i = 0; i + 1 < syms.length; i++) {
                int p = index(syms[i], syms[i + 1]);
                count[p] -= f;
                touch(p);
            }
        }

        void touchStart() {
            for (int i = 0; i < touched.size; i++) isTouched[touched.a[i]] = false;
            touched.size = 0;
        }

        private void touch(int p) {
            if (!isTouched[p]) {
                isTouched[p] = true;
                touched.add(p);
            }
        }

        int[] touched() {
            return touched.toArray();
        }
    }

    private static final class IntList {
        int[] a = new int[4];
        int size;

        void add(int v) {
            if (size == a.length) a = Arrays.copyOf(a, size * 2);
            a[size++] = v;
        }

        int[] toArray() {
            return Arrays.copyOf(a, size);
        }
    }
}
