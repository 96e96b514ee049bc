package dev.crucible.train.data;

import dev.crucible.formats.FormatException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.*;

class DataPrepareTest {
    @TempDir
    Path dir;

    /** UTF-8 bytes as token ids; eos is 256. */
    static final Function<String, int[]> BYTES = s -> {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        int[] t = new int[b.length];
        for (int i = 0; i < b.length; i++) t[i] = b[i] & 0xFF;
        return t;
    };
    static final int EOS = 256;

    private DataPrepare.Summary prepare(List<Path> inputs, Path out, String field) {
        return DataPrepare.prepare(inputs, out, BYTES, EOS, 257, "bytes", field, 5, null);
    }

    /** The dataset's documents, split at eos and decoded. */
    private static List<String> documents(Path out) {
        List<String> docs = new ArrayList<>();
        try (TokenDataset ds = TokenDataset.open(out)) {
            assertEquals(EOS, ds.eosId());
            assertEquals(EOS, ds.token(ds.size() - 1));
            var cur = new java.io.ByteArrayOutputStream();
            for (long i = 0; i < ds.size(); i++) {
                int t = ds.token(i);
                if (t == EOS) {
                    docs.add(cur.toString(StandardCharsets.UTF_8));
                    cur.reset();
                } else {
                    cur.write(t);
                }
            }
        }
        return docs;
    }

    @Test
    void textFile() throws Exception {
        Path f = dir.resolve("a.txt");
        Files.writeString(f, "\uFEFFhello wörld\n");
        List<String> progress = new ArrayList<>();
        DataPrepare.Summary s = DataPrepare.prepare(List.of(f), dir.resolve("out"), BYTES, EOS, 257, "bytes", null, 5,
                (file, n, docs, tokens) -> progress.add(file.getFileName() + ":" + n + ":" + docs + ":" + tokens));
        assertEquals(1, s.files());
        assertEquals(1, s.documents());
        assertEquals(14, s.tokens()); // 13 bytes + eos
        assertEquals(3, s.shards().size());
        assertEquals(List.of("a.txt:1:1:14"), progress);
        assertEquals(List.of("hello wörld\n"), documents(dir.resolve("out")));
    }

    @Test
    void directoryWalkedInSortedOrderSkippingHiddenAndBinary() throws Exception {
        Path in = dir.resolve("corpus");
        Files.createDirectories(in.resolve("b/sub"));
        Files.createDirectories(in.resolve(".git"));
        Files.writeString(in.resolve("c.md"), "C");
        Files.writeString(in.resolve("a.txt"), "A");
        Files.writeString(in.resolve("b/sub/z.txt"), "Z");
        Files.writeString(in.resolve("b/readme"), "R");
        Files.writeString(in.resolve("b/empty.txt"), "");
        Files.writeString(in.resolve(".hidden.txt"), "H");
        Files.writeString(in.resolve(".git/config"), "G");
        Files.write(in.resolve("b/image.png"), new byte[]{(byte) 0x89, 'P', 'N', 'G', 0, 0, 1});
        Files.writeString(in.resolve("d.jsonl"), "{\"text\":\"J1\"}\n\n{\"text\":\"J2\",\"id\":3}\n");
        DataPrepare.Summary s = prepare(List.of(in), dir.resolve("out"), null);
        assertEquals(List.of("A", "R", "Z", "C", "J1", "J2"), documents(dir.resolve("out")));
        assertEquals(6, s.files()); // a.txt, b/empty.txt, b/readme, b/sub/z.txt, c.md, d.jsonl
        assertEquals(6, s.documents());
        String meta = Files.readString(dir.resolve("out/meta.json"));
        assertTrue(meta.contains("readme") && !meta.contains("image.png") && !meta.contains("hidden"), meta);
    }

    @Test
    void jsonlWithField() throws Exception {
        Path f = dir.resolve("chat.jsonl");
        Files.writeString(f, "{\"body\":\"first\",\"text\":\"ignored\"}\r\n{\"body\":\"second \\u00e9\"}\n");
        DataPrepare.Summary s = prepare(List.of(f), dir.resolve("out"), "body");
        assertEquals(2, s.documents());
        assertEquals(List.of("first", "second é"), documents(dir.resolve("out")));
    }

    @Test
    void badJsonlLinesNameFileAndLine() throws Exception {
        Path f = dir.resolve("bad.jsonl");
        Files.writeString(f, "{\"text\":\"ok\"}\n{\"text\": oops}\n");
        expectError(List.of(f), f + ": line 2: malformed JSON");
        Files.writeString(f, "{\"text\":\"ok\"}\n\n{\"other\":\"x\"}\n");
        expectError(List.of(f), f + ": line 3: no string field \"text\"");
        Files.writeString(f, "{\"text\":5}\n");
        expectError(List.of(f), "line 1: no string field");
        Files.writeString(f, "[1,2]\n");
        expectError(List.of(f), "line 1: expected a JSON object");
        Files.writeString(f, "{\"text\":\"a\"} {\"text\":\"b\"}\n");
        expectError(List.of(f), "line 1: malformed JSON");
        assertFalse(Files.exists(dir.resolve("out/meta.json")));
    }

    @Test
    void emptyCorpusMissingPathAndBadUtf8AreClearErrors() throws Exception {
        Path empty = dir.resolve("empty");
        Files.createDirectories(empty);
        Files.writeString(empty.resolve("blank.txt"), "");
        expectError(List.of(empty), "empty corpus");
        try (var files = Files.list(dir.resolve("out"))) {
            assertEquals(0, files.count()); // nothing left behind
        }
        Path missing = dir.resolve("missing.txt");
        expectError(List.of(missing), missing + ": no such file");

        Path latin1 = dir.resolve("latin1.txt");
        Files.write(latin1, new byte[]{'o', 'k', '\n', 'c', 'a', 'f', (byte) 0xE9, '\n'});
        expectError(List.of(latin1), latin1 + ": not valid UTF-8 text: bad byte 0xe9 at line 2, byte offset 6");
        assertThrows(IllegalArgumentException.class, () -> prepare(List.of(), dir.resolve("out"), null));
    }

    @Test
    void refusesForeignOutputDirButReplacesPreviousShards() throws Exception {
        Path f = dir.resolve("a.txt");
        Files.writeString(f, "some text here");
        Path out = dir.resolve("out");
        prepare(List.of(f), out, null);
        Files.writeString(f, "tiny");
        DataPrepare.Summary s = prepare(List.of(f), out, null);
        assertEquals(5, s.tokens());
        assertEquals(List.of("tiny"), documents(out));

        Path foreign = dir.resolve("project");
        Files.createDirectories(foreign);
        Files.writeString(foreign.resolve("src.java"), "x");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> prepare(List.of(f), foreign, null));
        assertTrue(e.getMessage().contains("not empty"), e.getMessage());

        // An output directory inside an input directory is not read back as input.
        Path in = dir.resolve("in");
        Files.createDirectories(in);
        Files.writeString(in.resolve("x.txt"), "X");
        prepare(List.of(in), in.resolve("tokens"), null);
        prepare(List.of(in), in.resolve("tokens"), null);
        assertEquals(List.of("X"), documents(in.resolve("tokens")));
    }

    private void expectError(List<Path> inputs, String text) {
        FormatException e = assertThrows(FormatException.class, () -> prepare(inputs, dir.resolve("out"), null));
        assertTrue(e.getMessage().contains(text), e.getMessage());
    }
}
