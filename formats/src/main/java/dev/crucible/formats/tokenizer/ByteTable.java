package dev.crucible.formats.tokenizer;

import java.util.Arrays;

/**
 * Byte strings to token ids, looked up by a range of a larger array so that BPE can ask "is this slice of the piece
 * a token?" without allocating. Open addressing with linear probing; the table holds ids and reads the bytes back
 * from the tokenizer's id-to-bytes array, so it costs one int per slot.
 */
final class ByteTable {
    private final byte[][] bytesById;
    private final int[] slots; // id + 1; 0 = empty
    private final int mask;

    /** Indexes every non-null entry of {@code bytesById}; the caller guarantees the byte strings are distinct. */
    ByteTable(byte[][] bytesById) {
        this.bytesById = bytesById;
        int count = 0;
        for (byte[] b : bytesById) if (b != null) count++;
        int capacity = Integer.highestOneBit(Math.max(4, count * 2 - 1)) << 1;
        this.slots = new int[capacity];
        this.mask = capacity - 1;
        for (int id = 0; id < bytesById.length; id++) {
            byte[] b = bytesById[id];
            if (b == null) continue;
            int slot = hash(b, 0, b.length) & mask;
            while (slots[slot] != 0) slot = (slot + 1) & mask;
            slots[slot] = id + 1;
        }
    }

    /** The id of {@code src[from, to)}, or -1. */
    int get(byte[] src, int from, int to) {
        int slot = hash(src, from, to) & mask;
        int len = to - from;
        while (true) {
            int entry = slots[slot];
            if (entry == 0) return -1;
            byte[] b = bytesById[entry - 1];
            if (b.length == len && Arrays.equals(b, 0, len, src, from, to)) return entry - 1;
            slot = (slot + 1) & mask;
        }
    }

    int get(byte[] bytes) {
        return get(bytes, 0, bytes.length);
    }

    private static int hash(byte[] src, int from, int to) {
        int h = 0x811C9DC5;
        for (int i = from; i < to; i++) h = (h ^ (src[i] & 0xFF)) * 0x01000193;
        // FNV's low bits are weak for short keys; mix before masking.
        h ^= h >>> 16;
        h *= 0x85EBCA6B;
        h ^= h >>> 13;
        return h;
    }
}
