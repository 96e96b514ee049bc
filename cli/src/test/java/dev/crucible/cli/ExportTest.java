package dev.crucible.cli;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static dev.crucible.cli.CliTest.run;
import static dev.crucible.cli.CliTest.userError;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** export, inspect and --model as a user drives them, on a tiny model trained once for the class. */
class ExportTest {
    @TempDir
    static Path dir;
    static Path data, runDir;

    @BeforeAll
    static void trainTiny() throws Exception {
        data = dir.resolve("shards");
        runDir = dir.resolve("run");
        assertEquals(0, run("data", "prepare", "--out", data.toString(), CliTest.corpus(dir).toString()).code());
        CliTest.Run t = run("train", "--data", data.toString(), "--out", runDir.toString(), "--dim", "32", "--layers", "2",
                "--heads", "4", "--kv-heads", "2", "--ffn", "64", "--context", "32", "--seq-len", "32", "--batch", "4",
                "--steps", "4", "--eval-batches", "1", "--threads", "2", "--no-supervise");
        assertEquals(0, t.code(), t.err());
    }

    private static String greedy(String flag, Path model) {
        CliTest.Run g = run("generate", flag, model.toString(), "--prompt", "the quick", "--max-tokens", "16", "--threads", "1");
        assertEquals(0, g.code(), g.err());
        return g.out();
    }

    @Test
    void f32ExportsGenerateTheSameTextAsTheCheckpoint() {
        String want = greedy("--checkpoint", runDir);
        Path gguf = dir.resolve("m-f32.gguf"), hf = dir.resolve("hf-f32");
        CliTest.Run e = run("export", "--checkpoint", runDir.toString(), "--format", "gguf", "--dtype", "f32", "--out", gguf.toString());
        assertEquals(0, e.code(), e.err());
        e = run("export", "--checkpoint", runDir.toString(), "--format", "hf", "--dtype", "f32", "--out", hf.toString());
        assertEquals(0, e.code(), e.err());
        assertEquals(want, greedy("--model", gguf));
        assertEquals(want, greedy("--model", hf));
        assertEquals(want, greedy("--model", runDir));
    }

    @Test
    void everyGgufTypeAndShardedHfExportLoads() {
        for (String t : new String[] {"f16", "bf16", "q8_0", "q4_0"}) {
            Path f = dir.resolve("m-" + t + ".gguf");
            CliTest.Run e = run("export", "-c", runDir.toString(), "--format", "gguf", "--dtype", t, "--out", f.toString());
            assertEquals(0, e.code(), e.err());
            greedy("--model", f);
        }
        Path hf = dir.resolve("hf-sharded");
        CliTest.Run e = run("export", "-c", runDir.toString(), "--format", "hf", "--dtype", "bf16", "--shard-size", "20KB", "--out", hf.toString());
        assertEquals(0, e.code(), e.err());
        assertTrue(Files.exists(hf.resolve("model.safetensors.index.json")));
        greedy("--model", hf);
    }

    /**
     * A quantized GGUF runs on its stored blocks by default; converting it to f32 on load gives the same values, so
     * the same greedy text. A checkpoint can be quantized on load with --weights.
     */
    @Test
    void quantizedWeightsAreUsedAsStoredOrConvertedOnLoad() {
        Path f = dir.resolve("stored-q8_0.gguf");
        assertEquals(0, run("export", "-c", runDir.toString(), "--format", "gguf", "--dtype", "q8_0", "--out", f.toString()).code());
        String stored = greedy("--model", f);
        CliTest.Run g = run("generate", "--model", f.toString(), "--weights", "f32", "--prompt", "the quick", "--max-tokens", "16", "--threads", "1");
        assertEquals(0, g.code(), g.err());
        assertEquals(stored, g.out());
        for (String t : new String[] {"q4_0", "bf16", "stored"}) {
            CliTest.Run q = run("generate", "--checkpoint", runDir.toString(), "--weights", t, "--prompt", "the quick", "--max-tokens", "8", "--threads", "2");
            assertEquals(0, q.code(), q.err());
        }
        userError(run("generate", "--checkpoint", runDir.toString(), "--weights", "q4_k", "-p", "x"), "unknown --weights type 'q4_k'");
    }

    @Test
    void inspectDescribesEachFormat() {
        Path gguf = dir.resolve("inspect.gguf"), hf = dir.resolve("inspect-hf");
        assertEquals(0, run("export", "-c", runDir.toString(), "--format", "gguf", "--dtype", "q8_0", "--out", gguf.toString()).code());
        assertEquals(0, run("export", "-c", runDir.toString(), "--format", "hf", "--out", hf.toString()).code());
        for (Path p : new Path[] {gguf, hf, runDir}) {
            CliTest.Run r = run("inspect", p.toString());
            assertEquals(0, r.code(), r.err());
            assertTrue(r.out().contains("architecture: llama"), r.out());
            assertTrue(r.out().contains("dim 32, layers 2, heads 4, kv heads 2"), r.out());
            assertTrue(r.out().contains("parameters:"), r.out());
            assertTrue(r.out().contains("tokenizer:"), r.out());
        }
        assertTrue(run("inspect", gguf.toString()).out().contains("blk.0.attn_q.weight"));
    }

    @Test
    void fineTuneFromAnImportedModel() throws Exception {
        Path hf = dir.resolve("hf-init");
        assertEquals(0, run("export", "-c", runDir.toString(), "--format", "hf", "--dtype", "f32", "--out", hf.toString()).code());
        Path ft = dir.resolve("finetune");
        CliTest.Run t = run("train", "--data", data.toString(), "--out", ft.toString(), "--model", hf.toString(), "--seq-len", "32",
                "--batch", "4", "--steps", "2", "--eval-batches", "1", "--threads", "2", "--no-supervise");
        assertEquals(0, t.code(), t.err());
        assertTrue(Files.exists(ft.resolve("checkpoints/step-00000002/DONE")));
        CliTest.Run i = run("inspect", ft.toString());
        assertTrue(i.out().contains("dim 32, layers 2"), i.out());
    }

    @Test
    void badInputsAreUserErrors() throws Exception {
        Path junk = dir.resolve("junk.gguf");
        Files.write(junk, new byte[] {'G', 'G', 'U', 'F', 9, 0, 0, 0});
        userError(run("inspect", junk.toString()), "unsupported GGUF version 9");
        userError(run("generate", "--model", junk.toString(), "-p", "x"), "junk.gguf");
        userError(run("generate", "-p", "x"), "exactly one of --checkpoint");
        userError(run("export", "-c", runDir.toString(), "--format", "onnx", "--out", dir.resolve("x").toString()), "--format must be hf or gguf");
        userError(run("export", "-c", runDir.toString(), "--format", "gguf", "--dtype", "q4_k", "--out", dir.resolve("x.gguf").toString()), "unknown GGUF type");
        userError(run("export", "-c", runDir.toString(), "--format", "hf", "--dtype", "q8_0", "--out", dir.resolve("x").toString()), "unknown dtype");
        userError(run("export", "-c", runDir.toString(), "--format", "hf", "--shard-size", "lots", "--out", dir.resolve("x").toString()), "--shard-size");
        userError(run("inspect", dir.resolve("missing").toString()), "no such file");
    }
}
