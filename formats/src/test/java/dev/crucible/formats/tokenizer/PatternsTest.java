package dev.crucible.formats.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

class PatternsTest {
    @Test
    void dollarMeansEndOfTextOutsideClassesOnly() {
        assertEquals("\\s++\\z|a", Patterns.translate("\\s++$|a", Patterns.Dialect.RUST));
        assertEquals("[$]\\$x(?=\\n|\\z)", Patterns.translate("[$]\\$x$", Patterns.Dialect.ONIGURUMA));
        assertEquals("[^]$]\\z", Patterns.translate("[^]$]$", Patterns.Dialect.RUST));
        // Java's bare $ would also match before a final newline; the translation must not.
        Pattern p = Patterns.compile("a$", Patterns.Dialect.RUST);
        assertEquals(false, p.matcher("a\n").find());
        assertEquals(true, p.matcher("ba").find());
        Pattern trailing = Patterns.compile("\\s++$|\\S+|\\s", Patterns.Dialect.RUST);
        assertEquals(List.of("x", "\n", " ", "y", " \n"), pieces(trailing, "x\n y \n"));
        Pattern lines = Patterns.compile("\\w+$", Patterns.Dialect.ONIGURUMA);
        assertEquals(List.of("ab", "cd"), pieces(lines, "ab\ncd"));
    }

    private static List<String> pieces(Pattern p, String text) {
        List<String> out = new ArrayList<>();
        Matcher m = p.matcher(text);
        while (m.find()) out.add(m.group());
        return out;
    }

    /** Without NAME.json beside the rank file, the built-in pattern and specials give the same encodings. */
    @ParameterizedTest
    @ValueSource(strings = {"gpt2", "cl100k_base", "o200k_base"})
    void builtInMetadataMatchesTheSidecar(String name, @TempDir Path dir) throws IOException {
        Path shared = SharedFiles.tokenizers();
        Path rank = dir.resolve(name + ".tiktoken");
        Files.copy(shared.resolve(name + ".tiktoken"), rank);
        Tokenizer builtIn = Tokenizer.loadTiktoken(rank);
        Tokenizer withJson = SharedFiles.tiktoken(name);
        assertEquals(withJson.specialTokens(), builtIn.specialTokens());
        for (String s : withJson.specialTokens()) assertEquals(withJson.specialId(s), builtIn.specialId(s));
        List<String> texts = new ArrayList<>(RoundTripTest.randomTexts(22, 300));
        ObjectMapper json = new ObjectMapper();
        for (String line : Files.readAllLines(shared.resolve("vectors.jsonl"))) {
            if (!line.isBlank()) {
                JsonNode v = json.readTree(line);
                texts.add(v.get("text").asText());
            }
        }
        for (String text : texts) {
            assertArrayEquals(withJson.encodeWithSpecials(text), builtIn.encodeWithSpecials(text),
                    TiktokenTest.abbreviate(text));
        }
    }
}
