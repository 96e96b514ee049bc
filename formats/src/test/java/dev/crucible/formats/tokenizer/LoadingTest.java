package dev.crucible.formats.tokenizer;

import dev.crucible.formats.FormatException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Reading Hugging Face and tiktoken files, and the messages for files that are neither. */
class LoadingTest {
    @TempDir
    Path dir;

    /**
     * A tiny byte-level BPE in the tokenizers library's layout, with the 256 single bytes, merges as
     * "a b" or as pairs, and a GPT-2-style pre-tokenizer.
     */
    private Path tinyHuggingFace(String name, boolean pairMerges, String extraModelFields) throws IOException {
        StringBuilder vocab = new StringBuilder();
        for (int b = 0; b < 256; b++) {
            String s = ByteLevel.encode(new byte[] {(byte) b});
            vocab.append(jsonString(s)).append(": ").append(b).append(", ");
        }
        vocab.append("\"Ġt\": 256, \"he\": 257, \"Ġthe\": 258, \"Ġa\": 259, \"<|endoftext|>\": 260");
        String merges = pairMerges ? "[[\"Ġ\", \"t\"], [\"h\", \"e\"], [\"Ġt\", \"he\"], [\"Ġ\", \"a\"]]"
                : "[\"Ġ t\", \"h e\", \"Ġt he\", \"Ġ a\"]";
        String json = """
                {"version": "1.0", "truncation": null, "padding": null,
                 "added_tokens": [{"id": 260, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                                   "rstrip": false, "normalized": false, "special": true}],
                 "normalizer": null,
                 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                                   "use_regex": true},
                 "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false,
                                    "use_regex": true},
                 "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                 "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                           "end_of_word_suffix": "", "fuse_unk": false%s,
                           "vocab": {%s}, "merges": %s}}
                """.formatted(extraModelFields, vocab, merges);
        Path file = dir.resolve(name);
        Files.writeString(file, json);
        return file;
    }

    private static String jsonString(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else sb.append(c);
        }
        return sb.append('"').toString();
    }

    @Test
    void readsHuggingFaceMergesInBothForms() throws IOException {
        for (boolean pairs : new boolean[] {false, true}) {
            Tokenizer t = Tokenizer.load(tinyHuggingFace("t" + pairs + ".json", pairs, ""));
            assertEquals(261, t.vocabSize());
            assertEquals(Tokenizer.GPT2_PATTERN, t.pattern());
            assertArrayEquals(new int[] {'x', 258, 259, 256}, t.encode("x the a t"));
            assertArrayEquals(new int[] {258, 260}, t.encodeWithSpecials(" the<|endoftext|>"));
            assertEquals(List.of("Ġ t", "h e", "Ġt he", "Ġ a"), t.mergesAsStrings());
            assertEquals("Ġthe", t.tokenAsGpt2Unicode(258));
            assertEquals(" the", t.tokenText(258));
        }
    }

    /** Merge order, not token ids, decides: "h e" listed after "Ġ h" makes " he" merge as "Ġh" + "e". */
    @Test
    void mergePriorityFollowsTheList() throws IOException {
        StringBuilder vocab = new StringBuilder();
        for (int b = 0; b < 256; b++) {
            vocab.append(jsonString(ByteLevel.encode(new byte[] {(byte) b}))).append(": ").append(b).append(", ");
        }
        vocab.append("\"he\": 256, \"Ġh\": 257, \"Ġhe\": 258");
        Path file = dir.resolve("order.json");
        Files.writeString(file, """
                {"added_tokens": [], "normalizer": {"type": "NFC"},
                 "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                   {"type": "Split", "pattern": {"Regex": " ?\\\\p{L}+|\\\\s+"}, "behavior": "Isolated",
                    "invert": false},
                   {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
                 "model": {"type": "BPE", "vocab": {%s}, "merges": ["Ġ h", "h e", "Ġh e"]}}
                """.formatted(vocab));
        Tokenizer t = Tokenizer.load(file);
        assertArrayEquals(new int[] {258}, t.encode(" he"));
        assertArrayEquals(new int[] {256}, t.encode("he"));
        // The Split regex leaves "!" unmatched; it is still encoded.
        assertEquals(" he!", t.decode(t.encode(" he!")));
        // NFC: e + combining acute becomes é before splitting.
        assertArrayEquals(t.encode("\u00e9"), t.encode("e\u0301"));
    }

    @Test
    void ignoreMergesTakesWholeTokens() throws IOException {
        Tokenizer t = Tokenizer.load(tinyHuggingFace("ignore.json", false, ", \"ignore_merges\": true"));
        assertArrayEquals(new int[] {258}, t.encode(" the"));
    }

    @Test
    void loadReadsADirectoryThroughItsTokenizerJson() throws IOException {
        Path sub = Files.createDirectories(dir.resolve("model"));
        Files.copy(tinyHuggingFace("x.json", false, ""), sub.resolve("tokenizer.json"));
        Files.writeString(sub.resolve("tokenizer_config.json"),
                "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, "
                        + "{\"name\": \"default\", \"template\": \"D\"}]}");
        Tokenizer t = Tokenizer.load(sub);
        assertEquals("model", t.name());
        assertEquals("D", t.chatTemplate());
    }

    @Test
    void tiktokenFileWithMetadataBesideIt() throws IOException {
        StringBuilder ranks = new StringBuilder();
        var b64 = java.util.Base64.getEncoder();
        for (int b = 0; b < 256; b++) ranks.append(b64.encodeToString(new byte[] {(byte) b})).append(' ').append(b).append('\n');
        ranks.append(b64.encodeToString("ab".getBytes())).append(" 256\n");
        Files.writeString(dir.resolve("mine.tiktoken"), ranks);
        Files.writeString(dir.resolve("mine.json"),
                "{\"name\": \"mine\", \"pat_str\": \"\\\\S+|\\\\s+\", \"special_tokens\": {\"<|eot|>\": 300}}");
        Tokenizer t = Tokenizer.load(dir.resolve("mine.tiktoken"));
        assertEquals(301, t.vocabSize());
        assertArrayEquals(new int[] {256, 'c', ' ', 300}, t.encodeWithSpecials("abc <|eot|>"));
        assertEquals(List.of("a b"), t.mergesAsStrings());
    }

    // ---------------------------------------------------------------- errors

    private FormatException loadFails(Path file) {
        return assertThrows(FormatException.class, () -> Tokenizer.load(file));
    }

    private static void assertMentions(Exception e, String... parts) {
        for (String p : parts) assertTrue(e.getMessage().contains(p), "'" + e.getMessage() + "' lacks '" + p + "'");
    }

    @Test
    void missingFile() {
        Path file = dir.resolve("nope.json");
        assertMentions(loadFails(file), "nope.json", "no such file");
        assertMentions(assertThrows(FormatException.class, () -> Tokenizer.loadTiktoken(file)), "no such file");
        assertMentions(assertThrows(FormatException.class, () -> Tokenizer.named("cl100k_base", dir)),
                "cl100k_base.tiktoken", "known names");
        assertThrows(IllegalArgumentException.class, () -> Tokenizer.named("../etc", dir));
    }

    @Test
    void plainTextIsNotATokenizer() throws IOException {
        Path file = dir.resolve("notes.txt");
        Files.writeString(file, "Dear diary,\nthe weather was fine.\n");
        assertMentions(loadFails(file), "notes.txt", "expected a tiktoken rank file", "line 1");
        Files.writeString(file, "");
        assertMentions(loadFails(file), "empty");
    }

    @Test
    void badLineInRankFileNamesTheLine() throws IOException {
        Path file = dir.resolve("bad.tiktoken");
        Files.writeString(file, "YQ== 0\nYg== 1\nnot base64! x\n");
        assertMentions(loadFails(file), "bad.tiktoken", "line 3");
    }

    @Test
    void unknownTiktokenWithoutMetadata() throws IOException {
        Path file = dir.resolve("custom.tiktoken");
        Files.writeString(file, "YQ== 0\n");
        assertMentions(loadFails(file), "custom.json", "pattern");
    }

    @Test
    void otherJsonIsNotATokenizer() throws IOException {
        Path file = dir.resolve("config.json");
        Files.writeString(file, "{\"hidden_size\": 768}");
        assertMentions(loadFails(file), "config.json", "without a \"model\"", "expected a Hugging Face tokenizer.json");
        Files.writeString(file, "{\"model\": ");
        assertMentions(loadFails(file), "not valid JSON");
    }

    @Test
    void wordPieceIsRefused() throws IOException {
        Path file = dir.resolve("tokenizer.json");
        Files.writeString(file, """
                {"model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                           "vocab": {"[UNK]": 0, "a": 1, "##b": 2}},
                 "pre_tokenizer": {"type": "BertPreTokenizer"}}
                """);
        assertMentions(loadFails(file), "WordPiece model", "byte-level BPE");
    }

    @Test
    void sentencePieceStyleBpeIsRefused() throws IOException {
        Path file = dir.resolve("tokenizer.json");
        Files.writeString(file, """
                {"model": {"type": "BPE", "byte_fallback": true, "vocab": {"▁a": 0}, "merges": []},
                 "pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}}
                """);
        assertMentions(loadFails(file), "byte_fallback");
    }

    @Test
    void tiktokenMetadataPointsToTheRankFile() throws IOException {
        Path file = dir.resolve("gpt2.json");
        Files.writeString(file, "{\"name\": \"gpt2\", \"pat_str\": \"\\\\s+\", \"special_tokens\": {}}");
        assertMentions(loadFails(file), "tiktoken metadata", ".tiktoken");
    }

    @Test
    void mergeOutsideTheVocab() throws IOException {
        Path file = tinyHuggingFace("broken.json", false, "");
        Files.writeString(file, Files.readString(file).replace("\"Ġ a\"]", "\"Ġ a\", \"x y\"]"));
        assertMentions(loadFails(file), "merge #4", "'xy'", "not in the vocab");
    }
}
