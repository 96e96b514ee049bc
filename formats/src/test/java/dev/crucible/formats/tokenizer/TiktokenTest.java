package dev.crucible.formats.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The OpenAI encodings against the reference implementation's output in shared/data/tokenizers/vectors.jsonl. */
class TiktokenTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** One test per line of vectors.jsonl; the reference encoded with every special token allowed. */
    @TestFactory
    List<DynamicTest> vectorsEncodeAndDecodeExactly() throws IOException {
        Path file = SharedFiles.tokenizers().resolve("vectors.jsonl");
        List<DynamicTest> tests = new ArrayList<>();
        int line = 0;
        for (String json : Files.readAllLines(file)) {
            if (json.isBlank()) continue;
            line++;
            JsonNode v = JSON.readTree(json);
            String encoding = v.get("encoding").asText();
            String text = v.get("text").asText();
            int[] expected = new int[v.get("tokens").size()];
            for (int i = 0; i < expected.length; i++) expected[i] = v.get("tokens").get(i).asInt();
            String label = line + " " + encoding + ": " + abbreviate(text);
            tests.add(DynamicTest.dynamicTest(label, () -> {
                Tokenizer t = SharedFiles.tiktoken(encoding);
                assertArrayEquals(expected, t.encodeWithSpecials(text), label);
                assertEquals(text, t.decode(expected), label);
            }));
        }
        assertTrue(line > 0, file + " has no vectors");
        return tests;
    }

    /**
     * Written as tokenizer.json (every merge the ranks imply, plus ignore_merges) and read back with the
     * tokenizers library's merge-list rules, each encoding still matches the reference vectors and Shakespeare.
     */
    @ParameterizedTest
    @ValueSource(strings = {"gpt2", "cl100k_base", "o200k_base"})
    void huggingFaceExportReproducesTiktoken(String name, @TempDir Path dir) throws IOException {
        Tokenizer t = SharedFiles.tiktoken(name);
        Path file = dir.resolve("tokenizer.json");
        t.saveHuggingFace(file);
        Tokenizer back = Tokenizer.load(file);
        assertEquals(t.vocabSize(), back.vocabSize());
        assertEquals(t.specialTokens(), back.specialTokens());
        for (String json : Files.readAllLines(SharedFiles.tokenizers().resolve("vectors.jsonl"))) {
            if (json.isBlank()) continue;
            JsonNode v = JSON.readTree(json);
            if (!v.get("encoding").asText().equals(name)) continue;
            String text = v.get("text").asText();
            assertArrayEquals(t.encodeWithSpecials(text), back.encodeWithSpecials(text), abbreviate(text));
        }
        String shakespeare = Files.readString(SharedFiles.shakespeare());
        assertArrayEquals(t.encode(shakespeare), back.encode(shakespeare));
        for (String text : RoundTripTest.randomTexts(12, 300)) {
            assertArrayEquals(t.encode(text), back.encode(text), abbreviate(text));
        }
    }

    static String abbreviate(String text) {
        String one = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t");
        return one.length() <= 40 ? one : one.substring(0, 40) + "...";
    }

    @Test
    void vocabularyShapes() {
        Tokenizer gpt2 = SharedFiles.tiktoken("gpt2");
        assertEquals(50257, gpt2.vocabSize());
        assertEquals(List.of("<|endoftext|>"), gpt2.specialTokens());
        assertEquals(50256, gpt2.specialId("<|endoftext|>").getAsInt());
        assertEquals("Ġthe", gpt2.tokenAsGpt2Unicode(262));
        assertEquals(" the", gpt2.tokenText(262));

        Tokenizer cl = SharedFiles.tiktoken("cl100k_base");
        assertEquals(100277, cl.vocabSize());
        assertEquals(Tokenizer.TokenKind.UNUSED, cl.tokenKind(100261));
        assertEquals(Tokenizer.TokenKind.SPECIAL, cl.tokenKind(100276));
        assertEquals(Tokenizer.TokenKind.NORMAL, cl.tokenKind(0));

        Tokenizer o200k = SharedFiles.tiktoken("o200k_base");
        assertEquals(200019, o200k.vocabSize());
    }
}
