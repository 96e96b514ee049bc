package dev.crucible.formats.tokenizer;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Large-input correctness (all of o200k, all of tinyshakespeare) with the speed printed for the record. Speed is never
 * asserted here: timed unit tests fail on a busy machine; benchmarks measure speed.
 */
class SpeedTest {
    @Test
    void loadsO200kQuickly() {
        var dir = SharedFiles.tokenizers();
        Tokenizer.named("gpt2", dir); // warm up the JIT and class loading
        long t0 = System.nanoTime();
        Tokenizer t = Tokenizer.named("o200k_base", dir);
        double seconds = (System.nanoTime() - t0) / 1e9;
        System.out.printf("load o200k_base: %.3f s (%d ids)%n", seconds, t.vocabSize());
        assertEquals(200019, t.vocabSize());
    }

    @Test
    void encodesShakespeareQuickly() throws IOException {
        String text = Files.readString(SharedFiles.shakespeare());
        Tokenizer t = Tokenizer.named("gpt2", SharedFiles.tokenizers());
        int[] ids = t.encode(text); // first pass: JIT and cache warm-up
        double seconds = Double.MAX_VALUE; // best of a few: the machine may be busy with other work
        for (int i = 0; i < 5; i++) {
            long t0 = System.nanoTime();
            ids = t.encode(text);
            seconds = Math.min(seconds, (System.nanoTime() - t0) / 1e9);
        }
        System.out.printf("gpt2 encode tinyshakespeare: %d tokens, %.3f s, %.2f M tokens/s, %.1f MB/s%n",
                ids.length, seconds, ids.length / seconds / 1e6, text.length() / seconds / 1e6);
        assertEquals(text, t.decode(ids));
    }
}
