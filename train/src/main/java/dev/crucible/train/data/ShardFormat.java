package dev.crucible.train.data;

import dev.crucible.formats.FormatException;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * The token shard file format and the layout of a shard directory.
 *
 * <h2>Shard file ({@code shard-NNNNN.bin})</h2>
 * A 32-byte little-endian header, then the tokens:
 * <pre>
 * offset size  field
 *      0    8  magic "CRUTOKS1" (ASCII)
 *      8    4  u32 version = 1
 *     12    4  u32 token width in bytes: 2 when vocabSize &lt;= 65536, else 4
 *     16    8  u64 token count
 *     24    8  u64 vocabulary size (every token is in [0, vocabSize))
 *     32    .  count tokens, each an unsigned little-endian integer of the token width
 * </pre>
 * The file length is exactly {@code 32 + count * width}; anything else is a truncated or corrupt shard.
 *
 * <h2>Shard directory</h2>
 * Shard files named {@code shard-00000.bin}, {@code shard-00001.bin}, ... in stream order, plus {@code meta.json}
 * (written last, so a directory without it is incomplete):
 * <pre>
 * {"format": "crucible-tokens", "version": 1, "totalTokens": N, "vocabSize": V, "eosId": E, "tokenWidth": 2,
 *  "tokenizer": "description given by the caller",
 *  "shards": [{"file": "shard-00000.bin", "tokens": n0}, ...], "sources": ["input file", ...]}
 * </pre>
 */
public final class ShardFormat {
    public static final byte[] MAGIC = "CRUTOKS1".getBytes(StandardCharsets.US_ASCII);
    public static final int VERSION = 1;
    public static final int HEADER_BYTES = 32;
    public static final String META_FILE = "meta.json";
    public static final String FORMAT_NAME = "crucible-tokens";

    private ShardFormat() {
    }

    /** The token width in bytes for a vocabulary size: 2 up to 65536 tokens, else 4. */
    public static int widthFor(int vocabSize) {
        if (vocabSize <= 0) throw new IllegalArgumentException("vocabSize must be positive, got " + vocabSize);
        return vocabSize <= 65536 ? 2 : 4;
    }

    /** The file name of shard number index. */
    public static String shardName(int index) {
        return String.format("shard-%05d.bin", index);
    }

    /** True for names shardName could produce (used to recognise a previous shard directory). */
    static boolean isShardName(String name) {
        return name.matches("shard-\\d{5,}\\.bin");
    }

    /** A parsed header. */
    public record Header(int width, long count, long vocabSize) {
        public long fileBytes() {
            return HEADER_BYTES + count * width;
        }
    }

    static byte[] encodeHeader(int width, long count, long vocabSize) {
        ByteBuffer b = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.put(MAGIC).putInt(VERSION).putInt(width).putLong(count).putLong(vocabSize);
        return b.array();
    }

    /** Parses and validates a header against the file length; errors name the file. */
    static Header decodeHeader(Path file, ByteBuffer header, long fileLength) {
        if (fileLength < HEADER_BYTES)
            throw new FormatException(file, "truncated token shard: " + fileLength + " bytes, shorter than the "
                    + HEADER_BYTES + "-byte header");
        ByteBuffer b = header.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        byte[] magic = new byte[8];
        b.get(magic);
        if (!Arrays.equals(magic, MAGIC)) throw new FormatException(file, "not a Crucible token shard (bad magic)");
        int version = b.getInt();
        if (version != VERSION)
            throw new FormatException(file, "unsupported token shard version " + Integer.toUnsignedString(version)
                    + " (this build reads version " + VERSION + ")");
        int width = b.getInt();
        long count = b.getLong();
        long vocab = b.getLong();
        if (width != 2 && width != 4) throw new FormatException(file, "corrupt token shard: token width " + width);
        if (vocab <= 0 || vocab > Integer.MAX_VALUE || (width == 2 && vocab > 65536))
            throw new FormatException(file, "corrupt token shard: vocabulary size " + Long.toUnsignedString(vocab)
                    + " with " + width + "-byte tokens");
        if (count < 0 || count > (Long.MAX_VALUE - HEADER_BYTES) / width)
            throw new FormatException(file, "corrupt token shard: token count " + Long.toUnsignedString(count));
        Header h = new Header(width, count, vocab);
        if (h.fileBytes() != fileLength)
            throw new FormatException(file, "truncated or corrupt token shard: header says " + count + " tokens ("
                    + h.fileBytes() + " bytes) but the file has " + fileLength + " bytes");
        return h;
    }
}
