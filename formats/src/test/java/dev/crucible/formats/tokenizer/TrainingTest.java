package dev.crucible.formats.tokenizer;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class TrainingTest {
    static final List<String> CORPUS = List.of(
            "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs on.",
            "In the beginning the river was narrow, and the town on the river was small.",
            "Numbers like 12, 345 and 6789 appear in the ledger, next to the names of the traders.",
            "She said: \"the weather is fine today\", and then she went out to the garden.",
            "There there, the thing is that they thought the theory was thorough enough.",
            "Unicode too: café, naïve, Straße, 東京, 😀 and the end of the line.\n\n",
            "def train(self, x):\n    return self.forward(x) + 1\n",
            "the the the the the the the the the the the the the the the the the the");

    private static final String SAMPLE = "The fox and the dog went to the river, then the town. The end.";

    @Test
    void mergesShortenTheEncoding() {
        Tokenizer bytes = Tokenizer.byteLevel(List.of());
        Tokenizer trained = Tokenizer.train(CORPUS, 400, List.of());
        assertEquals(400, trained.vocabSize());
        int before = bytes.encode(SAMPLE).length;
        int after = trained.encode(SAMPLE).length;
        assertEquals(SAMPLE.length(), before);
        assertTrue(after < before * 0.6, "trained encoding has " + after + " tokens, bytes " + before);
        assertEquals(SAMPLE, trained.decode(trained.encode(SAMPLE)));
        // The most frequent word piece of the corpus is learned whole.
        assertEquals(1, trained.encode(" the").length);
    }

    @Test
    void trainingIsDeterministic() {
        Tokenizer a = Tokenizer.train(CORPUS, 350, List.of("<|endoftext|>"));
        Tokenizer b = Tokenizer.train(new ArrayList<>(CORPUS), 350, List.of("<|endoftext|>"));
        assertEquals(a.mergesAsStrings(), b.mergesAsStrings());
        assertArrayEquals(a.encode(SAMPLE), b.encode(SAMPLE));
    }

    @Test
    void idsAreBytesThenMergesThenSpecials() {
        List<String> specials = List.of("<|endoftext|>", "<|im_start|>");
        Tokenizer t = Tokenizer.train(CORPUS, 300, specials);
        assertEquals(300, t.vocabSize());
        assertEquals(specials, t.specialTokens());
        assertEquals(298, t.specialId("<|endoftext|>").getAsInt());
        assertEquals(299, t.specialId("<|im_start|>").getAsInt());
        assertEquals(Tokenizer.TokenKind.NORMAL, t.tokenKind(297));
        assertEquals("A", t.tokenText('A'));
        assertTrue(t.mergesAsStrings().size() >= 42);
    }

    @Test
    void progressCountsLearnedTokens() {
        List<Integer> seen = new ArrayList<>();
        Tokenizer.train(CORPUS, 300, List.of(), Tokenizer.GPT2_PATTERN, seen::add);
        assertEquals(44, seen.size());
        assertEquals(44, seen.getLast());
    }

    @Test
    void runsOutOfPairsGracefully() {
        Tokenizer t = Tokenizer.train(List.of("abab"), 1000, List.of("<|x|>"));
        assertTrue(t.vocabSize() < 1000);
        assertEquals("abab", t.decode(t.encode("abab")));
        assertEquals(1, t.encode("abab").length);
    }

    @Test
    void rejectsTooSmallVocab() {
        var e = assertThrows(IllegalArgumentException.class, () -> Tokenizer.train(CORPUS, 256, List.of("<s>")));
        assertTrue(e.getMessage().contains("256"), e.getMessage());
    }

    @Test
    void specialTokensInTheCorpusAreNotMerged() {
        String eot = "<|endoftext|>";
        List<String> texts = new ArrayList<>();
        for (int i = 0; i < 50; i++) texts.add("hello" + eot + "world" + eot);
        Tokenizer t = Tokenizer.train(texts, 280, List.of(eot));
        for (String m : t.mergesAsStrings()) assertFalse(m.contains("|"), m);
    }

    @Test
    void huggingFaceRoundTripKeepsEncodings(@TempDir Path dir) throws IOException {
        Tokenizer t = Tokenizer.train(CORPUS, 420, List.of("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
                .withChatTemplate("{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}");
        Path file = dir.resolve("tokenizer.json");
        t.saveHuggingFace(file);
        Tokenizer back = Tokenizer.load(file);
        assertEquals(t.vocabSize(), back.vocabSize());
        assertEquals(t.mergesAsStrings(), back.mergesAsStrings());
        assertEquals(t.specialTokens(), back.specialTokens());
        assertEquals(t.pattern(), back.pattern());
        assertEquals(t.chatTemplate(), back.chatTemplate());
        for (int id = 0; id < t.vocabSize(); id++) assertEquals(t.tokenAsGpt2Unicode(id), back.tokenAsGpt2Unicode(id));
        List<String> texts = new ArrayList<>(CORPUS);
        texts.addAll(RoundTripTest.randomTexts(11, 300));
        texts.add("a<|im_start|>b<|endoftext|>");
        for (String text : texts) {
            assertArrayEquals(t.encode(text), back.encode(text), TiktokenTest.abbreviate(text));
            assertArrayEquals(t.encodeWithSpecials(text), back.encodeWithSpecials(text));
        }
        // Saving the loaded copy gives the same file.
        Path again = dir.resolve("again/tokenizer.json");
        back.saveHuggingFace(again);
        assertEquals(Files.readString(file), Files.readString(again));
        assertTrue(Files.readString(dir.resolve("tokenizer_config.json")).contains("chat_template"));
        assertNull(Tokenizer.train(CORPUS, 300, List.of()).chatTemplate());
    }

    /** About a megabyte to a 2000-token vocabulary (time printed, not asserted). */
    @Test
    void trainsOnAMegabyte() throws IOException {
        String text = Files.readString(SharedFiles.shakespeare());
        long t0 = System.nanoTime();
        Tokenizer t = Tokenizer.train(List.of(text), 2000, List.of("<|endoftext|>"));
        double seconds = (System.nanoTime() - t0) / 1e9;
        int[] ids = t.encode(text);
        System.out.printf("train tinyshakespeare to 2000: %.2f s; it encodes to %d tokens (%.2f bytes/token)%n",
                seconds, ids.length, (double) text.length() / ids.length);
        assertEquals(2000, t.vocabSize());
        assertEquals(text, t.decode(ids));
        assertTrue(ids.length < text.length() / 2, "2000 tokens should at least halve the length");
    }
}
