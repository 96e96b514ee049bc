package dev.crucible.cli;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code crucible bench train} on a tiny shape from a file, Crucible only: the table comes out, bad input is a user error. */
class BenchCommandTest {
    @Test
    void benchTrainPrintsTheTable(@TempDir Path dir) throws Exception {
        Path cfg = dir.resolve("tiny.json");
        Files.writeString(cfg, "{\"dim\": 32, \"layers\": 1, \"heads\": 2, \"ffn\": 48, \"vocab\": 64, \"T\": 16, \"B\": 2}");
        Path json = dir.resolve("out.json");
        CliTest.Run r = CliTest.run("bench", "train", "--config", cfg.toString(), "--no-peer", "--steps", "3",
                "--warmup-steps", "1", "--jit-warmup", "1", "--peak-size", "64", "--threads", "1", "--blas", "off",
                "--json", json.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("| crucible (cpu, Java kernels)"), r.out());
        assertTrue(r.out().contains("peer not run: --no-peer"), r.out());
        assertTrue(Files.readString(json).contains("\"tok_s_median\""));
    }

    @Test
    void badConfigIsAUserError(@TempDir Path dir) {
        CliTest.userError(CliTest.run("bench", "train", "--config", dir.resolve("nope.json").toString(), "--no-peer"),
                "config file not found");
        CliTest.userError(CliTest.run("bench", "train", "--config", "S", "--steps", "2", "--warmup-steps", "2"),
                "--steps must exceed --warmup-steps");
    }
}
