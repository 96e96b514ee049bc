package dev.crucible.train.data;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

/**
 * Streams tokens into a shard directory (format: {@link ShardFormat}). Tokens are appended in order and split into
 * files of at most {@code shardTokens} tokens; each shard is written under a temporary name and atomically renamed
 * when full, and {@code meta.json} is written last by {@link #finish()}.
 *
 * <p>The output directory must be absent, empty, or a previous shard directory (only shard files, temporaries and
 * meta.json), whose contents are then replaced. {@link #close()} without {@link #finish()} deletes everything this
 * writer wrote, so a failed run leaves no half-valid dataset. Not thread-safe.
 */
public final class ShardWriter implements AutoCloseable {
    private static final int BUFFER_BYTES = 1 << 20;

    private final Path outDir;
    private final int vocabSize, eosId, width;
    private final String tokenizerDesc;
    private final long shardTokens;
    private final List<Long> shardCounts = new ArrayList<>();
    private final List<String> sources = new ArrayList<>();
    private final ByteBuffer buffer = ByteBuffer.allocate(BUFFER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private FileChannel current;
    private Path currentTmp;
    private long currentCount, total;
    private boolean finished, closed;

    /**
     * @param outDir the shard directory (created if missing)
     * @param vocabSize every token must be in [0, vocabSize)
     * @param eosId the end-of-document token id, recorded in meta.json
     * @param tokenizerDesc a free-form description of the tokenizer, recorded in meta.json
     * @param shardTokens the most tokens per shard file
     */
    public ShardWriter(Path outDir, int vocabSize, int eosId, String tokenizerDesc, long shardTokens) {
        this.width = ShardFormat.widthFor(vocabSize);
        if (eosId < 0 || eosId >= vocabSize)
            throw new IllegalArgumentException("eosId " + eosId + " is outside the vocabulary [0, " + vocabSize + ")");
        if (shardTokens <= 0) throw new IllegalArgumentException("shardTokens must be positive, got " + shardTokens);
        this.outDir = outDir;
        this.vocabSize = vocabSize;
        this.eosId = eosId;
        this.tokenizerDesc = tokenizerDesc == null ? "" : tokenizerDesc;
        this.shardTokens = shardTokens;
        prepareDirectory(outDir);
    }

    /** Creates outDir, or clears a previous shard directory; refuses any other non-empty directory. */
    private static void prepareDirectory(Path outDir) {
        try {
            if (Files.exists(outDir) && !Files.isDirectory(outDir))
                throw new IllegalArgumentException(outDir + ": output path exists and is not a directory");
            Files.createDirectories(outDir);
            List<Path> old = new ArrayList<>();
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(outDir)) {
                for (Path p : ds) {
                    String name = p.getFileName().toString();
                    boolean ours = Files.isRegularFile(p) && (ShardFormat.isShardName(name)
                            || name.equals(ShardFormat.META_FILE) || name.endsWith(".tmp"));
                    if (!ours)
                        throw new IllegalArgumentException(outDir + ": output directory is not empty and is not a "
                                + "previous token shard directory (found " + name + "); choose an empty or new directory");
                    old.add(p);
                }
            }
            for (Path p : old) Files.delete(p);
        } catch (IOException e) {
            throw new UncheckedIOException(outDir + ": cannot prepare output directory: " + e.getMessage(), e);
        }
    }

    /** Records an input file name for meta.json. */
    public void addSource(String source) {
        sources.add(source);
    }

    /** Appends all of tokens. */
    public void write(int[] tokens) {
        write(tokens, 0, tokens.length);
    }

    /** Appends tokens[off, off+len); each must be in [0, vocabSize). */
    public void write(int[] tokens, int off, int len) {
        ensureOpen();
        for (int i = off; i < off + len; i++) {
            int t = tokens[i];
            if (t < 0 || t >= vocabSize)
                throw new IllegalArgumentException("token id " + t + " is outside the vocabulary [0, " + vocabSize + ")");
            try {
                if (current == null) openShard();
                if (buffer.remaining() < width) flushBuffer();
                if (width == 2) buffer.putShort((short) t);
                else buffer.putInt(t);
                currentCount++;
                total++;
                if (currentCount == shardTokens) closeShard();
            } catch (IOException e) {
                throw new UncheckedIOException(outDir + ": cannot write token shard: " + e.getMessage(), e);
            }
        }
    }

    /** Tokens written so far. */
    public long tokens() {
        return total;
    }

    /** Closes the last shard and writes meta.json; returns the shard files in order. */
    public List<Path> finish() {
        ensureOpen();
        try {
            if (current != null) closeShard();
            ObjectMapper json = new ObjectMapper();
            ObjectNode meta = json.createObjectNode();
            meta.put("format", ShardFormat.FORMAT_NAME);
            meta.put("version", ShardFormat.VERSION);
            meta.put("totalTokens", total);
            meta.put("vocabSize", vocabSize);
            meta.put("eosId", eosId);
            meta.put("tokenWidth", width);
            meta.put("tokenizer", tokenizerDesc);
            ArrayNode shards = meta.putArray("shards");
            List<Path> files = new ArrayList<>();
            for (int i = 0; i < shardCounts.size(); i++) {
                shards.addObject().put("file", ShardFormat.shardName(i)).put("tokens", shardCounts.get(i));
                files.add(outDir.resolve(ShardFormat.shardName(i)));
            }
            ArrayNode src = meta.putArray("sources");
            sources.forEach(src::add);
            Path tmp = outDir.resolve(ShardFormat.META_FILE + ".tmp");
            json.writerWithDefaultPrettyPrinter().writeValue(tmp.toFile(), meta);
            move(tmp, outDir.resolve(ShardFormat.META_FILE));
            finished = true;
            closed = true;
            return files;
        } catch (IOException e) {
            throw new UncheckedIOException(outDir + ": cannot write token shards: " + e.getMessage(), e);
        }
    }

    /** Without a prior {@link #finish()}, abandons the output: deletes the shards and temporaries written. */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        try {
            if (current != null) current.close();
            if (currentTmp != null) Files.deleteIfExists(currentTmp);
            for (int i = 0; i < shardCounts.size(); i++) Files.deleteIfExists(outDir.resolve(ShardFormat.shardName(i)));
        } catch (IOException e) {
            throw new UncheckedIOException(outDir + ": cannot clean up token shards: " + e.getMessage(), e);
        }
    }

    private void ensureOpen() {
        if (closed) throw new IllegalStateException("ShardWriter for " + outDir + " is " + (finished ? "finished" : "closed"));
    }

    private void openShard() throws IOException {
        currentTmp = outDir.resolve(ShardFormat.shardName(shardCounts.size()) + ".tmp");
        current = FileChannel.open(currentTmp, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.WRITE);
        current.write(ByteBuffer.wrap(ShardFormat.encodeHeader(width, 0, vocabSize)));
        currentCount = 0;
    }

    private void flushBuffer() throws IOException {
        buffer.flip();
        while (buffer.hasRemaining()) current.write(buffer);
        buffer.clear();
    }

    private void closeShard() throws IOException {
        flushBuffer();
        ByteBuffer header = ByteBuffer.wrap(ShardFormat.encodeHeader(width, currentCount, vocabSize));
        while (header.hasRemaining()) current.write(header, header.position());
        current.force(true);
        current.close();
        current = null;
        Path target = outDir.resolve(ShardFormat.shardName(shardCounts.size()));
        move(currentTmp, target);
        currentTmp = null;
        shardCounts.add(currentCount);
    }

    private static void move(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(from, to, StandardCopyOption.REPLACE_EXISTING);
        }
    }
}
