package dev.crucible.formats.tokenizer;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SpecialTokensTest {
    @Test
    void encodeWithSpecialsUsesTheIdAndEncodeDoesNot() {
        Tokenizer t = Tokenizer.train(TrainingTest.CORPUS, 320, List.of("<|endoftext|>"));
        int eot = t.specialId("<|endoftext|>").getAsInt();
        int[] with = t.encodeWithSpecials("a<|endoftext|>b");
        assertArrayEquals(new int[] {'a', eot, 'b'}, with);
        int[] without = t.encode("a<|endoftext|>b");
        assertFalse(Arrays.stream(without).anyMatch(id -> id == eot));
        assertEquals("a<|endoftext|>b", t.decode(with));
        assertEquals("a<|endoftext|>b", t.decode(without));
    }

    @Test
    void gpt2EndOfText() {
        Tokenizer t = SharedFiles.tiktoken("gpt2");
        assertArrayEquals(new int[] {64, 50256, 65}, t.encodeWithSpecials("a<|endoftext|>b"));
        int[] plain = t.encode("a<|endoftext|>b");
        assertTrue(plain.length > 3);
        assertFalse(Arrays.stream(plain).anyMatch(id -> id == 50256));
    }

    @Test
    void longestSpecialWinsAndAdjacentSpecialsSplit() {
        Tokenizer t = Tokenizer.byteLevel(List.of("<s>", "<s><s>", "</s>"));
        assertArrayEquals(new int[] {257, 256, 258}, t.encodeWithSpecials("<s><s><s></s>"));
        assertArrayEquals(new int[] {258, 258}, t.encodeWithSpecials("</s></s>"));
        assertEquals("</s>", t.tokenText(258));
        assertEquals(Tokenizer.TokenKind.SPECIAL, t.tokenKind(256));
        assertTrue(t.specialId("<unk>").isEmpty());
    }

    @Test
    void invalidIdsAreRejectedClearly() {
        Tokenizer t = Tokenizer.byteLevel(List.of("<|endoftext|>"));
        var e = assertThrows(IllegalArgumentException.class, () -> t.decode(new int[] {1, 257}));
        assertTrue(e.getMessage().contains("257"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> t.decode(new int[] {-1}));
        assertThrows(IllegalArgumentException.class, () -> t.tokenText(999));
        assertThrows(IllegalArgumentException.class, () -> Tokenizer.byteLevel(List.of("x", "x")));
    }

    @Test
    void unusedIdsInCl100k() {
        Tokenizer t = SharedFiles.tiktoken("cl100k_base");
        var e = assertThrows(IllegalArgumentException.class, () -> t.decode(new int[] {100261}));
        assertTrue(e.getMessage().contains("unused"), e.getMessage());
        assertEquals("[PAD100261]", t.tokenAsGpt2Unicode(100261));
        assertEquals("<|endofprompt|>", t.tokenAsGpt2Unicode(100276));
    }
}
