package dev.crucible.train.data;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.formats.FormatException;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * A read-only token stream over memory-mapped shard files ({@link ShardFormat}): a shard directory (the shards listed
 * in its meta.json, in order) or a single shard file. Every header is validated against its file's length on open;
 * a truncated or corrupt shard is a {@link FormatException} naming the file. The mappings belong to an arena this
 * object owns and are released by {@link #close()}. Reads are safe from several threads until then.
 */
public final class TokenDataset implements AutoCloseable {
    private static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final Arena arena;
    private final MemorySegment[] shards;
    private final long[] starts; // starts[i] = index of shard i's first token; starts[n] = size
    private final int width, vocabSize, eosId;

    private TokenDataset(Arena arena, MemorySegment[] shards, long[] starts, int width, int vocabSize, int eosId) {
        this.arena = arena;
        this.shards = shards;
        this.starts = starts;
        this.width = width;
        this.vocabSize = vocabSize;
        this.eosId = eosId;
    }

    /**
     * Opens a shard directory (needs meta.json) or one shard file (eosId comes from a meta.json beside it that lists
     * the file, else it is -1).
     */
    public static TokenDataset open(Path path) {
        if (!Files.exists(path)) throw new FormatException(path, "no such token shard file or directory");
        List<Path> files = new ArrayList<>();
        List<Long> expected = new ArrayList<>();
        int eos = -1;
        long metaVocab = -1;
        if (Files.isDirectory(path)) {
            Path metaFile = path.resolve(ShardFormat.META_FILE);
            if (!Files.isRegularFile(metaFile))
                throw new FormatException(path, "not a token shard directory (no " + ShardFormat.META_FILE
                        + "; was data preparation interrupted?)");
            JsonNode meta = readMeta(metaFile);
            eos = meta.path("eosId").asInt(-1);
            metaVocab = meta.path("vocabSize").asLong(-1);
            for (JsonNode s : meta.path("shards")) {
                String name = s.path("file").asText("");
                if (name.isEmpty() || name.contains("/") || name.contains("\\") || name.startsWith("."))
                    throw new FormatException(metaFile, "bad shard entry " + s);
                files.add(path.resolve(name));
                expected.add(s.path("tokens").asLong(-1));
            }
            if (files.isEmpty()) throw new FormatException(metaFile, "lists no shards");
        } else {
            files.add(path);
            expected.add(-1L);
            Path metaFile = path.toAbsolutePath().getParent().resolve(ShardFormat.META_FILE);
            if (Files.isRegularFile(metaFile)) {
                try {
                    JsonNode meta = readMeta(metaFile);
                    for (JsonNode s : meta.path("shards"))
                        if (s.path("file").asText("").equals(path.getFileName().toString())) eos = meta.path("eosId").asInt(-1);
                } catch (FormatException ignored) {
                    // A broken neighbour meta.json only costs the eos id of a single-file open.
                }
            }
        }

        Arena arena = Arena.ofShared();
        try {
            MemorySegment[] segs = new MemorySegment[files.size()];
            long[] starts = new long[files.size() + 1];
            int width = 0, vocab = 0;
            for (int i = 0; i < files.size(); i++) {
                Path f = files.get(i);
                try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                    long length = ch.size();
                    ByteBuffer hb = ByteBuffer.allocate(ShardFormat.HEADER_BYTES);
                    while (hb.hasRemaining() && ch.read(hb, hb.position()) > 0) {
                        // read the header fully
                    }
                    ShardFormat.Header h = ShardFormat.decodeHeader(f, hb.flip(), length);
                    if (i == 0) {
                        width = h.width();
                        vocab = (int) h.vocabSize();
                    } else if (h.width() != width || h.vocabSize() != vocab) {
                        throw new FormatException(f, "token width/vocabulary (" + h.width() + "/" + h.vocabSize()
                                + ") differ from the first shard's (" + width + "/" + vocab + ")");
                    }
                    if (expected.get(i) >= 0 && expected.get(i) != h.count())
                        throw new FormatException(f, "holds " + h.count() + " tokens but meta.json says " + expected.get(i));
                    segs[i] = ch.map(FileChannel.MapMode.READ_ONLY, 0, length, arena);
                    starts[i + 1] = starts[i] + h.count();
                } catch (NoSuchFileException e) {
                    throw new FormatException(f, "token shard is missing");
                } catch (IOException e) {
                    throw new FormatException(f, "cannot read token shard: " + e.getMessage(), e);
                }
            }
            if (metaVocab >= 0 && metaVocab != vocab)
                throw new FormatException(path, "meta.json vocabSize " + metaVocab + " differs from the shards' " + vocab);
            return new TokenDataset(arena, segs, starts, width, vocab, eos);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static JsonNode readMeta(Path metaFile) {
        try {
            JsonNode meta = new ObjectMapper().readTree(metaFile.toFile());
            if (meta == null || !meta.isObject()) throw new FormatException(metaFile, "not a JSON object");
            if (!ShardFormat.FORMAT_NAME.equals(meta.path("format").asText()))
                throw new FormatException(metaFile, "not a token shard meta.json (format is not \""
                        + ShardFormat.FORMAT_NAME + "\")");
            if (meta.path("version").asInt(-1) != ShardFormat.VERSION)
                throw new FormatException(metaFile, "unsupported version " + meta.path("version"));
            return meta;
        } catch (IOException e) {
            throw new FormatException(metaFile, "cannot read: " + e.getMessage(), e);
        }
    }

    /** Total tokens across all shards. */
    public long size() {
        return starts[shards.length];
    }

    public int vocabSize() {
        return vocabSize;
    }

    /** The end-of-document id from meta.json, or -1 when unknown. */
    public int eosId() {
        return eosId;
    }

    public int shardCount() {
        return shards.length;
    }

    /** Token i, 0 <= i < size(). */
    public int token(long i) {
        if (i < 0 || i >= size()) throw new IndexOutOfBoundsException("token " + i + " of " + size());
        int s = shardOf(i);
        return get(shards[s], i - starts[s]);
    }

    /** Copies tokens [start, start+len) into dst[off, off+len), across shard boundaries. */
    public void read(long start, int[] dst, int off, int len) {
        if (start < 0 || len < 0 || start > size() - len)
            throw new IndexOutOfBoundsException("tokens [" + start + ", " + (start + len) + ") of " + size());
        java.util.Objects.checkFromIndexSize(off, len, dst.length);
        int s = len == 0 ? 0 : shardOf(start);
        long pos = start;
        int done = 0;
        while (done < len) {
            MemorySegment seg = shards[s];
            long local = pos - starts[s];
            int n = (int) Math.min(len - done, starts[s + 1] - pos);
            if (width == 2) {
                long base = ShardFormat.HEADER_BYTES + local * 2;
                for (int k = 0; k < n; k++) dst[off + done + k] = seg.get(U16, base + 2L * k) & 0xFFFF;
            } else {
                long base = ShardFormat.HEADER_BYTES + local * 4;
                for (int k = 0; k < n; k++) dst[off + done + k] = seg.get(U32, base + 4L * k);
            }
            done += n;
            pos += n;
            s++;
        }
    }

    private int get(MemorySegment seg, long local) {
        return width == 2
                ? seg.get(U16, ShardFormat.HEADER_BYTES + local * 2) & 0xFFFF
                : seg.get(U32, ShardFormat.HEADER_BYTES + local * 4);
    }

    /** The shard holding token i (skipping empty shards). */
    private int shardOf(long i) {
        int k = Arrays.binarySearch(starts, i);
        if (k < 0) return -k - 2;
        while (k + 1 < starts.length && starts[k + 1] == i) k++; // empty shards share a start
        return k;
    }

    /** Releases the mappings; later reads fail. */
    @Override
    public void close() {
        if (arena.scope().isAlive()) arena.close();
    }
}
