package dev.crucible.formats.gguf;

import dev.crucible.formats.FormatException;
import dev.crucible.formats.hf.HfModel;
import dev.crucible.formats.hf.LlamaSpec;
import dev.crucible.formats.hf.ModelWeights;
import dev.crucible.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Random;
import java.util.function.Consumer;

import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Mutated files (bytes flipped, truncated, header fields overwritten with random or extreme integers): every case
 * must load or fail with a {@link FormatException}, never another exception, a crash or a hang.
 */
class FuzzTest {
    private static final int CASES = 1500;

    @Test
    void mutatedGgufFilesFailCleanly(@TempDir Path dir) throws Exception {
        LlamaSpec spec = new LlamaSpec(257, 32, 1, 2, 1, 32, 16, 10000f, 1e-5f, false);
        Path f = dir.resolve("m.gguf");
        GgufModel.write(TinyModels.random(spec, 5), f, GgmlType.Q8_0, "fuzz");
        byte[] good = Files.readAllBytes(f);
        int header = (int) (good.length - 2 * 1200); // roughly where the tensor data starts; mutate the header more
        assertTimeoutPreemptively(Duration.ofSeconds(60), () -> run(good, Math.max(64, header), dir.resolve("x.gguf"), p -> GgufModel.read(p)));
    }

    @Test
    void mutatedSafetensorsFailCleanly(@TempDir Path dir) throws Exception {
        LlamaSpec spec = new LlamaSpec(257, 32, 1, 2, 1, 32, 16, 10000f, 1e-5f, true);
        Path hf = dir.resolve("hf");
        HfModel.write(TinyModels.random(spec, 6), hf, DType.BF16, 1L << 30);
        Path st = hf.resolve(HfModel.SINGLE);
        byte[] good = Files.readAllBytes(st);
        long n = ByteBuffer.wrap(good).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        assertTimeoutPreemptively(Duration.ofSeconds(60), () -> run(good, (int) (8 + n), st, p -> HfModel.read(hf)));
    }

    private static void run(byte[] good, int headerEnd, Path target, Consumer<Path> load) throws Exception {
        Random r = new Random(42);
        int ok = 0, rejected = 0;
        for (int c = 0; c < CASES; c++) {
            byte[] b = good.clone();
            int kind = c % 4;
            if (kind == 0) {                       // flip 1-8 random bits in the header
                for (int k = 1 + r.nextInt(8); k > 0; k--) b[r.nextInt(headerEnd)] ^= (byte) (1 << r.nextInt(8));
            } else if (kind == 1) {                // truncate anywhere
                b = java.util.Arrays.copyOf(b, r.nextInt(b.length));
            } else if (kind == 2) {                // overwrite a 4- or 8-byte field with an extreme or random value
                int at = r.nextInt(Math.max(1, headerEnd - 8));
                long[] extremes = {0, 1, -1, Integer.MAX_VALUE, 0xFFFFFFFFL, Long.MAX_VALUE, Long.MIN_VALUE, 1L << 32, r.nextLong()};
                long v = extremes[r.nextInt(extremes.length)];
                ByteBuffer bb = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
                if (r.nextBoolean()) bb.putInt(at, (int) v); else bb.putLong(at, v);
            } else {                               // random bytes anywhere, data included
                for (int k = 1 + r.nextInt(16); k > 0; k--) b[r.nextInt(b.length)] = (byte) r.nextInt(256);
            }
            Files.write(target, b);
            try {
                load.accept(target);
                ok++;
            } catch (FormatException e) {
                assertTrue(e.getMessage() != null && !e.getMessage().isBlank());
                rejected++;
            } catch (Throwable t) {
                fail("case " + c + " (kind " + kind + "): " + t, t);
            }
        }
        assertTrue(rejected > CASES / 4, "only " + rejected + " of " + CASES + " rejected; " + ok + " loaded");
    }

}
