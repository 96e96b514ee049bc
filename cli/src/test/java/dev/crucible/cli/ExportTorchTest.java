package dev.crucible.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.cpu.CpuBackend;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * An HF export read by PyTorch: {@code ../shared/peers/torch_llama.py} (HF LlamaForCausalLM semantics) loads the
 * exported config.json and safetensors and must give Crucible's logits on the same tokens. Tolerance: max abs
 * difference within 1e-5 of the largest |logit| (both compute in f32, in different orders). Skips when
 * /usr/bin/python3 has no torch (Debian: python3-torch) or ../shared is absent.
 */
class ExportTorchTest {
    static final Path PYTHON = Path.of("/usr/bin/python3");

    static Path peer() {
        Path p = Path.of(System.getProperty("crucible.shared", "../../shared"), "peers", "torch_llama.py");
        assumeTrue(Files.isRegularFile(p), "the PyTorch peer is absent (" + p + "): it lives in ../shared");
        return p;
    }

    static void assumeTorch() throws Exception {
        assumeTrue(Files.isExecutable(PYTHON), "no /usr/bin/python3");
        Process p = new ProcessBuilder(PYTHON.toString(), "-c", "import torch, numpy").redirectErrorStream(true).start();
        assumeTrue(p.waitFor(120, TimeUnit.SECONDS) && p.exitValue() == 0,
                "/usr/bin/python3 cannot import torch and numpy (apt-get install python3-torch python3-numpy)");
    }

    @ParameterizedTest(name = "tied={0}")
    @ValueSource(booleans = {false, true})
    void pytorchReadsTheExportAsCrucibleDoes(boolean tied, @TempDir Path dir) throws Exception {
        Path peer = peer();
        assumeTorch();
        Path data = dir.resolve("shards"), run = dir.resolve("run"), hf = dir.resolve("hf");
        assertEquals(0, CliTest.run("data", "prepare", "--out", data.toString(), CliTest.corpus(dir).toString()).code());
        CliTest.Run t = CliTest.run("train", "--data", data.toString(), "--out", run.toString(), "--dim", "64", "--layers", "2",
                "--heads", "4", "--kv-heads", "2", "--ffn", "96", "--context", "32", "--seq-len", "32", "--batch", "4",
                "--steps", "20", "--lr", "3e-3", "--tied", String.valueOf(tied), "--eval-interval", "0", "--no-supervise");
        assertEquals(0, t.code(), t.err());
        CliTest.Run e = CliTest.run("export", "--checkpoint", run.toString(), "--format", "hf", "--dtype", "f32", "--out", hf.toString());
        assertEquals(0, e.code(), e.err());

        int[] ids = {116, 104, 101, 32, 113, 117, 105, 99, 107, 32, 98, 114, 111, 119, 110, 32, 102, 111, 120};
        float[] ours;
        try (Backend be = new CpuBackend(2); ModelFiles.Loaded m = ModelFiles.load(hf, be)) {
            int[] targets = new int[ids.length];
            java.util.Arrays.fill(targets, -1);
            m.model().step(ids, targets, 1, ids.length, 0f);
            ours = m.model().logits();
        }
        List<String> cmd = new ArrayList<>(List.of(PYTHON.toString(), Path.of("src/test/python/hf_reference_logits.py").toAbsolutePath().toString(),
                peer.toString(), hf.toString(), new ObjectMapper().writeValueAsString(ids)));
        Process p = new ProcessBuilder(cmd).redirectError(dir.resolve("py.err").toFile()).start();
        byte[] out = p.getInputStream().readAllBytes();
        assertTrue(p.waitFor(300, TimeUnit.SECONDS));
        assertEquals(0, p.exitValue(), Files.readString(dir.resolve("py.err")));
        double[][] theirs = new ObjectMapper().readValue(new String(out, StandardCharsets.UTF_8), double[][].class);
        int vocab = theirs[0].length;
        assertEquals(ids.length * vocab, ours.length);
        double maxErr = 0, maxRef = 0;
        for (int i = 0; i < ids.length; i++) {
            for (int v = 0; v < vocab; v++) {
                maxErr = Math.max(maxErr, Math.abs(ours[i * vocab + v] - theirs[i][v]));
                maxRef = Math.max(maxRef, Math.abs(theirs[i][v]));
            }
        }
        System.out.printf("HF export read by PyTorch (tied=%s): max |logit difference| %.3g, max |logit| %.3g%n", tied, maxErr, maxRef);
        assertTrue(maxErr <= 1e-5 * maxRef, "max |logit difference| " + maxErr + " vs max |logit| " + maxRef);
    }
}
