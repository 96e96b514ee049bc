package dev.crucible.formats.tokenizer;

/**
 * Merge rules keyed by the pair of token ids they join: (left, right) to (priority, result id). Primitive open
 * addressing because a converted 200k vocabulary has around a million rules and boxing them would triple the
 * memory and the load time.
 */
final class PairMap {
    static final long ABSENT = -1L;
    private long[] keys;
    private long[] values;
    private int size;
    private int mask;

    PairMap(int expected) {
        int capacity = Integer.highestOneBit(Math.max(4, expected * 2 - 1)) << 1;
        keys = new long[capacity];
        values = new long[capacity];
        java.util.Arrays.fill(keys, -1L);
        mask = capacity - 1;
    }

    static long key(int left, int right) {
        return ((long) left << 32) | (right & 0xFFFFFFFFL);
    }

    static long value(int priority, int result) {
        return ((long) priority << 32) | (result & 0xFFFFFFFFL);
    }

    static int priority(long value) {
        return (int) (value >>> 32);
    }

    static int result(long value) {
        return (int) value;
    }

    /** Sets the rule for a pair, replacing any earlier one. */
    void put(int left, int right, long value) {
        if ((size + 1) * 2 > keys.length) grow();
        long key = key(left, right);
        int slot = slot(key);
        while (keys[slot] != -1L && keys[slot] != key) slot = (slot + 1) & mask;
        if (keys[slot] == -1L) size++;
        keys[slot] = key;
        values[slot] = value;
    }

    /** The packed (priority, result) for a pair, or {@link #ABSENT}. */
    long get(int left, int right) {
        long key = key(left, right);
        int slot = slot(key);
        while (true) {
            long k = keys[slot];
            if (k == key) return values[slot];
            if (k == -1L) return ABSENT;
            slot = (slot + 1) & mask;
        }
    }

    int size() {
        return size;
    }

    private int slot(long key) {
        long h = key * 0x9E3779B97F4A7C15L;
        return (int) (h ^ (h >>> 29)) & mask;
    }

    private void grow() {
        long[] oldKeys = keys;
        long[] oldValues = values;
        keys = new long[oldKeys.length * 2];
        values = new long[oldKeys.length * 2];
        java.util.Arrays.fill(keys, -1L);
        mask = keys.length - 1;
        for (int i = 0; i < oldKeys.length; i++) {
            if (oldKeys[i] == -1L) continue;
            int slot = slot(oldKeys[i]);
            while (keys[slot] != -1L) slot = (slot + 1) & mask;
            keys[slot] = oldKeys[i];
            values[slot] = oldValues[i];
        }
    }
}
