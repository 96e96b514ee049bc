package dev.crucible.formats.tokenizer;

import java.util.Arrays;

/**
 * The merge step of byte-level BPE: one pre-token's bytes in, token ids out. Two rule sets share one algorithm
 * ("repeatedly join the adjacent pair with the lowest priority, leftmost first"):
 * <ul>
 *   <li>ranks (tiktoken): a pair may join when the concatenation of its bytes is a token; its priority is that
 *       token's rank, which is also its id.
 *   <li>merges (Hugging Face, and tokenizers trained here): a pair may join when it is listed; its priority is its
 *       position in the merge list and the result is the listed token.
 * </ul>
 * The two agree on vocabularies converted from one to the other, but not on every vocabulary, so each tokenizer keeps
 * the rule set its file was written for. Immutable and thread-safe.
 */
final class BpeModel {
    /** Above this many bytes the linear scan (quadratic) gives way to a heap; pieces that long are rare. */
    static final int HEAP_THRESHOLD = 128;

    private static final long NONE = Long.MAX_VALUE;

    final byte[][] tokenBytes;
    final ByteTable table;
    /** Token of each single byte, or -1 where the vocabulary has none. */
    final int[] byteToId;
    /** Merge rules; null for the ranks rule set. */
    final PairMap merges;
    /** Return a piece that is itself a token without merging (tiktoken always; Hugging Face's ignore_merges). */
    final boolean wholePieceFirst;

    BpeModel(byte[][] tokenBytes, PairMap merges, boolean wholePieceFirst) {
        this.tokenBytes = tokenBytes;
        this.table = new ByteTable(tokenBytes);
        this.merges = merges;
        this.wholePieceFirst = wholePieceFirst;
        this.byteToId = new int[256];
        byte[] one = new byte[1];
        for (int b = 0; b < 256; b++) {
            one[0] = (byte) b;
            byteToId[b] = table.get(one);
        }
    }

    boolean usesRanks() {
        return merges == null;
    }

    /**
     * The ids of one pre-token.
     *
     * @throws IllegalArgumentException if the piece holds a byte the vocabulary has no token for
     */
    int[] encode(byte[] piece) {
        if (piece.length == 0) return new int[0];
        if (wholePieceFirst || piece.length == 1) {
            int id = table.get(piece);
            if (id >= 0) return new int[] {id};
        }
        return piece.length <= HEAP_THRESHOLD ? encodeLinear(piece) : encodeHeap(piece);
    }

    private int byteId(byte b) {
        int id = byteToId[b & 0xFF];
        if (id < 0) {
            throw new IllegalArgumentException(String.format(
                    "byte 0x%02X has no token in this vocabulary, so text containing it cannot be encoded", b & 0xFF));
        }
        return id;
    }

    /** Packed (priority, result) for joining two adjacent parts, or {@link #NONE}. */
    private long join(byte[] piece, int leftId, int rightId, int from, int to) {
        if (merges == null) {
            int id = table.get(piece, from, to);
            return id < 0 ? NONE : PairMap.value(id, id);
        }
        long v = merges.get(leftId, rightId);
        return v == PairMap.ABSENT ? NONE : v;
    }

    /** tiktoken's loop: parts in flat arrays, each merge removes one entry and refreshes its two neighbours. */
    int[] encodeLinear(byte[] piece) {
        int n = piece.length;
        int[] ids = new int[n];
        int[] starts = new int[n + 1];
        long[] joins = new long[n]; // joins[i]: joining part i with part i+1
        for (int i = 0; i < n; i++) {
            ids[i] = byteId(piece[i]);
            starts[i] = i;
        }
        starts[n] = n;
        for (int i = 0; i + 1 < n; i++) joins[i] = join(piece, ids[i], ids[i + 1], starts[i], starts[i + 2]);
        int count = n;
        while (count > 1) {
            long best = NONE;
            int at = -1;
            for (int i = 0; i + 1 < count; i++) {
                // Priority sits in the high bits, so comparing packed values orders by priority.
                if (joins[i] < best) {
                    best = joins[i];
                    at = i;
                }
            }
            if (at < 0) break;
            ids[at] = PairMap.result(best);
            System.arraycopy(ids, at + 2, ids, at + 1, count - at - 2);
            System.arraycopy(starts, at + 2, starts, at + 1, count - at - 1);
            System.arraycopy(joins, at + 2, joins, at + 1, count - at - 2);
            count--;
            joins[at] = at + 1 < count ? join(piece, ids[at], ids[at + 1], starts[at], starts[at + 2]) : NONE;
            if (at > 0) joins[at - 1] = join(piece, ids[at - 1], ids[at], starts[at - 1], starts[at + 1]);
        }
        return Arrays.copyOf(ids, count);
    }

    /**
     * Same result as {@link #encodeLinear} in O(n log n): a heap of candidate joins ordered by (priority, start),
     * parts as a linked list named by their first byte. Entries go stale when a neighbour merges; a popped entry
     * is used only if its pair still exists and still has that priority, and since every live pair has a current
     * entry in the heap, the first valid pop is the lowest-priority, leftmost join, as in the linear scan.
     */
    int[] encodeHeap(byte[] piece) {
        int n = piece.length;
        int[] ids = new int[n];
        int[] next = new int[n];
        int[] prev = new int[n];
        boolean[] dead = new boolean[n];
        for (int i = 0; i < n; i++) {
            ids[i] = byteId(piece[i]);
            next[i] = i + 1;
            prev[i] = i - 1;
        }
        LongHeap heap = new LongHeap(n);
        for (int i = 0; i + 1 < n; i++) push(heap, piece, ids, next, i);
        int count = n;
        while (!heap.isEmpty()) {
            long entry = heap.pop();
            int p = (int) entry;
            if (dead[p] || next[p] >= n) continue;
            int q = next[p];
            long v = join(piece, ids[p], ids[q], p, next[q]);
            if (v == NONE || PairMap.priority(v) != (int) (entry >>> 32)) continue;
            ids[p] = PairMap.result(v);
            dead[q] = true;
            next[p] = next[q];
            if (next[p] < n) prev[next[p]] = p;
            count--;
            push(heap, piece, ids, next, p);
            if (prev[p] >= 0) push(heap, piece, ids, next, prev[p]);
        }
        int[] out = new int[count];
        for (int p = 0, k = 0; p < n; p = next[p]) out[k++] = ids[p];
        return out;
    }

    private void push(LongHeap heap, byte[] piece, int[] ids, int[] next, int p) {
        int q = next[p];
        if (q >= piece.length) return;
        long v = join(piece, ids[p], ids[q], p, next[q]);
        if (v != NONE) heap.push(((long) PairMap.priority(v) << 32) | p);
    }

    /** Min-heap of longs. */
    private static final class LongHeap {
        private long[] a;
        private int size;

        LongHeap(int capacity) {
            a = new long[Math.max(4, capacity)];
        }

        boolean isEmpty() {
            return size == 0;
        }

        void push(long v) {
            if (size == a.length) a = Arrays.copyOf(a, size * 2);
            int i = size++;
            while (i > 0) {
                int parent = (i - 1) >>> 1;
                if (a[parent] <= v) break;
                a[i] = a[parent];
                i = parent;
            }
            a[i] = v;
        }

        long pop() {
            long top = a[0];
            long last = a[--size];
            int i = 0;
            while (true) {
                int child = 2 * i + 1;
                if (child >= size) break;
                if (child + 1 < size && a[child + 1] < a[child]) child++;
                if (a[child] >= last) break;
                a[i] = a[child];
                i = child;
            }
            a[i] = last;
            return top;
        }
    }
}
