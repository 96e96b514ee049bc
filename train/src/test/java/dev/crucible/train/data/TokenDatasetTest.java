package dev.crucible.train.data;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.formats.FormatException;
import dev.crucible.tensor.Rng;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class TokenDatasetTest {
    @TempDir
    Path dir;

    static int[] randomTokens(int n, int vocab, long seed) {
        Rng rng = Rng.keyed(seed);
        int[] t = new int[n];
        for (int i = 0; i < n; i++) t[i] = rng.nextInt(vocab);
        return t;
    }

    /** Writes tokens in uneven chunks. */
    static List<Path> write(Path out, int[] tokens, int vocab, int eos, long shardTokens) {
        try (ShardWriter w = new ShardWriter(out, vocab, eos, "test tokenizer", shardTokens)) {
            w.addSource("memory");
            for (int i = 0, step = 1; i < tokens.length; i += step, step = step % 13 + 1)
                w.write(tokens, i, Math.min(step, tokens.length - i));
            return w.finish();
        }
    }

    @Test
    void roundTripAcrossShards() throws Exception {
        for (int vocab : new int[]{65536, 100_000}) {
            Path out = dir.resolve("v" + vocab);
            int[] tokens = randomTokens(1000, vocab, vocab);
            tokens[0] = vocab - 1;
            tokens[1] = 0;
            List<Path> shards = write(out, tokens, vocab, 3, 64);
            assertEquals(16, shards.size()); // ceil(1000 / 64)
            int width = vocab <= 65536 ? 2 : 4;
            assertEquals(32 + 64L * width, Files.size(shards.get(0)));
            assertEquals(32 + (1000 - 15 * 64L) * width, Files.size(shards.get(15)));

            JsonNode meta = new ObjectMapper().readTree(out.resolve("meta.json").toFile());
            assertEquals(1000, meta.get("totalTokens").asLong());
            assertEquals(vocab, meta.get("vocabSize").asInt());
            assertEquals(3, meta.get("eosId").asInt());
            assertEquals(width, meta.get("tokenWidth").asInt());
            assertEquals("test tokenizer", meta.get("tokenizer").asText());
            assertEquals("shard-00001.bin", meta.get("shards").get(1).get("file").asText());
            assertEquals("memory", meta.get("sources").get(0).asText());

            try (TokenDataset ds = TokenDataset.open(out)) {
                assertEquals(1000, ds.size());
                assertEquals(vocab, ds.vocabSize());
                assertEquals(3, ds.eosId());
                assertEquals(16, ds.shardCount());
                for (int i = 0; i < 1000; i++) assertEquals(tokens[i], ds.token(i));
                Rng rng = Rng.keyed(5);
                for (int k = 0; k < 500; k++) {
                    int start = rng.nextInt(1000), len = rng.nextInt(1000 - start + 1);
                    int[] dst = new int[len + 2];
                    ds.read(start, dst, 1, len);
                    for (int i = 0; i < len; i++) assertEquals(tokens[start + i], dst[1 + i]);
                    assertEquals(0, dst[0]);
                }
                assertThrows(IndexOutOfBoundsException.class, () -> ds.token(1000));
                assertThrows(IndexOutOfBoundsException.class, () -> ds.read(990, new int[20], 0, 11));
            }
            try (TokenDataset one = TokenDataset.open(shards.get(2))) {
                assertEquals(64, one.size());
                assertEquals(tokens[128], one.token(0));
                assertEquals(3, one.eosId());
            }
        }
    }

    @Test
    void exactMultipleHasNoEmptyShardAndRewriteReplaces() throws Exception {
        Path out = dir.resolve("out");
        assertEquals(4, write(out, randomTokens(40, 300, 1), 300, 0, 10).size());
        write(out, randomTokens(15, 300, 2), 300, 0, 10);
        try (var files = Files.list(out)) {
            assertEquals(List.of("meta.json", "shard-00000.bin", "shard-00001.bin"),
                    files.map(p -> p.getFileName().toString()).sorted().toList());
        }
        try (TokenDataset ds = TokenDataset.open(out)) {
            assertEquals(15, ds.size());
        }
    }

    @Test
    void writerRejectsBadInputAndCleansUpWhenNotFinished() throws Exception {
        Path out = dir.resolve("out");
        try (ShardWriter w = new ShardWriter(out, 10, 9, "", 4)) {
            w.write(new int[]{1, 2, 3, 4, 5});
            assertThrows(IllegalArgumentException.class, () -> w.write(new int[]{10}));
            assertThrows(IllegalArgumentException.class, () -> w.write(new int[]{-1}));
        }
        try (var files = Files.list(out)) {
            assertEquals(0, files.count());
        }
        assertThrows(IllegalArgumentException.class, () -> new ShardWriter(out, 10, 10, "", 4));
        assertThrows(IllegalArgumentException.class, () -> new ShardWriter(out, 10, 0, "", 0));

        Path foreign = dir.resolve("foreign");
        Files.createDirectories(foreign);
        Files.writeString(foreign.resolve("notes.txt"), "keep me");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new ShardWriter(foreign, 10, 0, "", 4));
        assertTrue(e.getMessage().contains(foreign.toString()) && e.getMessage().contains("notes.txt"), e.getMessage());
        assertTrue(Files.exists(foreign.resolve("notes.txt")));
    }

    @Test
    void corruptShardsAreReportedWithTheFile() throws Exception {
        Path out = dir.resolve("out");
        List<Path> shards = write(out, randomTokens(100, 1000, 3), 1000, 1, 30);
        Path victim = shards.get(1);
        byte[] good = Files.readAllBytes(victim);

        try (RandomAccessFile f = new RandomAccessFile(victim.toFile(), "rw")) {
            f.setLength(good.length - 2);
        }
        expectFormatError(out, victim, "truncated");
        expectFormatError(victim, victim, "truncated");

        Files.write(victim, java.util.Arrays.copyOf(good, 20));
        expectFormatError(out, victim, "header");

        byte[] bad = good.clone();
        bad[0] = 'X';
        Files.write(victim, bad);
        expectFormatError(out, victim, "magic");

        bad = good.clone();
        bad[8] = 2;
        Files.write(victim, bad);
        expectFormatError(out, victim, "version");

        bad = good.clone();
        bad[12] = 3;
        Files.write(victim, bad);
        expectFormatError(out, victim, "width");

        Files.delete(victim);
        expectFormatError(out, victim, "missing");

        Files.write(victim, good);
        try (TokenDataset ds = TokenDataset.open(out)) {
            assertEquals(100, ds.size());
        }
        Files.delete(out.resolve("meta.json"));
        expectFormatError(out, out, "meta.json");
        expectFormatError(dir.resolve("nope"), dir.resolve("nope"), "no such");
    }

    private static void expectFormatError(Path open, Path named, String words) {
        FormatException e = assertThrows(FormatException.class, () -> TokenDataset.open(open).close());
        assertTrue(e.getMessage().contains(named.toString()) && e.getMessage().contains(words), e.getMessage());
    }
}
