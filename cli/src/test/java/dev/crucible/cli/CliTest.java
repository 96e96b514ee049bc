package dev.crucible.cli;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The CLI as a user drives it: a small end-to-end run, and one clear message for each kind of bad input. */
class CliTest {
    record Run(int code, String out, String err) {}

    static synchronized Run run(String... args) {
        PrintStream oldOut = System.out, oldErr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        try {
            System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
            int code = Main.execute(args);
            return new Run(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
        }
    }

    /** A user error: exit 2, one "error:" line that mentions {@code expected}, and no stack trace. */
    static void userError(Run r, String expected) {
        assertEquals(Main.USER_ERROR, r.code(), "exit code; stderr: " + r.err());
        assertTrue(r.err().startsWith("error: "), "stderr: " + r.err());
        assertTrue(r.err().contains(expected), "expected '" + expected + "' in: " + r.err());
        assertFalse(r.err().contains("\tat "), "stack trace in: " + r.err());
    }

    static Path corpus(Path dir) throws Exception {
        Path text = dir.resolve("corpus.txt");
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 400; i++) sb.append("the quick brown fox jumps over the lazy dog ").append(i).append('\n');
        Files.writeString(text, sb);
        return text;
    }

    @Test
    void prepareTrainResumeGeneratePlot(@TempDir Path dir) throws Exception {
        Path data = dir.resolve("shards"), run = dir.resolve("run");
        Run prep = run("data", "prepare", "--out", data.toString(), corpus(dir).toString());
        assertEquals(0, prep.code(), prep.err());
        assertTrue(Files.exists(data.resolve("tokenizer.json")));

        String[] train = {"train", "--data", data.toString(), "--out", run.toString(), "--dim", "32", "--layers", "2",
                "--heads", "4", "--kv-heads", "2", "--ffn", "64", "--context", "32", "--seq-len", "32", "--batch", "4",
                "--steps", "6", "--checkpoint-interval", "3", "--eval-interval", "3", "--eval-batches", "1", "--log-interval", "1",
                "--lr", "3e-3", "--warmup", "2", "--threads", "2", "--no-supervise"};
        Run t = run(train);
        assertEquals(0, t.code(), t.err());
        assertTrue(Files.exists(run.resolve("checkpoints/step-00000006/DONE")), t.out());
        assertTrue(Files.exists(run.resolve("loss.png")));
        long trainLines;
        try (Stream<String> s = Files.lines(run.resolve("metrics.jsonl"))) {
            trainLines = s.filter(l -> l.contains("\"train\"")).count();
        }
        assertEquals(6, trainLines);

        // Same run directory, more steps: resumes from step 6 instead of starting over.
        String[] more = train.clone();
        more[java.util.Arrays.asList(more).indexOf("--steps") + 1] = "8";
        Run t2 = run(more);
        assertEquals(0, t2.code(), t2.err());
        assertTrue(t2.out().contains("resumed from"), t2.out());
        assertTrue(Files.exists(run.resolve("checkpoints/step-00000008/DONE")));

        Run g = run("generate", "--checkpoint", run.toString(), "--prompt", "the quick", "--max-tokens", "12", "--threads", "1");
        assertEquals(0, g.code(), g.err());
        assertFalse(g.out().isBlank());
        Run s1 = run("generate", "-c", run.toString(), "-p", "the", "--max-tokens", "16", "--temperature", "1", "--seed", "5");
        Run s2 = run("generate", "-c", run.toString(), "-p", "the", "--max-tokens", "16", "--temperature", "1", "--seed", "5");
        assertEquals(s1.out(), s2.out(), "same seed, same text");
        // The directory holding the run in run/ (the quickstart's layout) names it too.
        Run s3 = run("generate", "-c", dir.toString(), "-p", "the", "--max-tokens", "16", "--temperature", "1", "--seed", "5");
        assertEquals(s1.out(), s3.out(), s3.err());

        Run p = run("plot", run.toString());
        assertEquals(0, p.code(), p.err());
    }

    @Test
    void badTrainingInputs(@TempDir Path dir) throws Exception {
        Path data = dir.resolve("shards");
        assertEquals(0, run("data", "prepare", "--out", data.toString(), corpus(dir).toString()).code());
        String d = data.toString(), out = dir.resolve("run").toString();

        userError(run("train", "--data", dir.resolve("nope").toString(), "--out", out), "data directory not found");
        userError(run("train", "--out", out), "no training data");
        userError(run("train", "--data", d, "--out", out, "--dim", "30", "--heads", "4"), "not divisible by heads");
        userError(run("train", "--data", d, "--out", out, "--heads", "4", "--kv-heads", "3"), "not divisible by kv-heads");
        userError(run("train", "--data", d, "--out", out, "--seq-len", "256", "--context", "128"), "exceeds model.context");
        userError(run("train", "--data", d, "--out", out, "--set", "model.dimm=3"), "unknown key 'model.dimm'");

        Path toml = dir.resolve("bad.toml");
        Files.writeString(toml, "[model]\ndim = 64\nwidth = 3\n");
        userError(run("train", "--config", toml.toString(), "--data", d, "--out", out), "unknown key 'model.width'");
        Files.writeString(toml, "[model\ndim = ");
        userError(run("train", "--config", toml.toString(), "--data", d, "--out", out), "not valid TOML");
        Path json = dir.resolve("c.json");
        Files.writeString(json, "{\"train\": {\"batch\": \"many\"}}");
        userError(run("train", "--config", json.toString(), "--data", d, "--out", out), "train.batch must be an integer");
        userError(run("train", "--config", dir.resolve("missing.toml").toString(), "--data", d), "config file not found");
        assertFalse(Files.exists(dir.resolve("run/checkpoints")), "failed runs write no checkpoints");
    }

    @Test
    void badDataAndTokenizerInputs(@TempDir Path dir) throws Exception {
        Path empty = dir.resolve("empty.txt");
        Files.writeString(empty, "");
        userError(run("data", "prepare", "--out", dir.resolve("o1").toString(), empty.toString()), "");
        userError(run("data", "prepare", "--out", dir.resolve("o2").toString(), dir.resolve("missing.txt").toString()), "missing.txt");
        Path notTok = dir.resolve("tokenizer.json");
        Files.writeString(notTok, "{\"model\": {\"type\": \"WordPiece\"}}");
        userError(run("tokenizer", "encode", "--tokenizer", notTok.toString(), "--text", "hi"), "tokenizer.json");
        Path text = dir.resolve("plain.txt");
        Files.writeString(text, "just some words");
        userError(run("tokenizer", "encode", "--tokenizer", text.toString(), "--text", "hi"), "plain.txt");
        userError(run("tokenizer", "encode", "--tokenizer", "gpt2", "--tokenizer-dir", dir.toString(), "--text", "hi"), "gpt2");
        userError(run("tokenizer", "decode", "--tokenizer", "bytes", "--text", "[1, 2, x]"), "JSON array");
        userError(run("generate", "--checkpoint", dir.resolve("none").toString(), "--prompt", "x"), "no such checkpoint");
        userError(run("train", "--nonsense"), "nonsense");
        userError(run("plot", dir.toString()), "metrics.jsonl");
    }

    @Test
    void corruptCheckpointIsReportedNotUsed(@TempDir Path dir) throws Exception {
        Path data = dir.resolve("shards"), run = dir.resolve("run");
        assertEquals(0, run("data", "prepare", "--out", data.toString(), corpus(dir).toString()).code());
        Run t = run("train", "--data", data.toString(), "--out", run.toString(), "--dim", "16", "--layers", "1", "--heads", "2",
                "--ffn", "32", "--context", "16", "--seq-len", "16", "--batch", "2", "--steps", "2", "--checkpoint-interval", "1",
                "--no-supervise");
        assertEquals(0, t.code(), t.err());
        Path newest = run.resolve("checkpoints/step-00000002/model.safetensors");
        byte[] b = Files.readAllBytes(newest);
        b[b.length - 3] ^= 0x40;
        Files.write(newest, b);
        // The corrupt newest checkpoint is named, skipped and left in place; the previous good one serves.
        Run g = run("generate", "--checkpoint", run.toString(), "--prompt", "the", "--max-tokens", "4");
        assertEquals(0, g.code(), g.err());
        assertTrue(g.err().contains("step-00000002") && g.err().contains("SHA-256"), g.err());
        assertTrue(Files.exists(newest));
        userError(run("generate", "--checkpoint", run.resolve("checkpoints/step-00000002").toString(), "--prompt", "the"), "SHA-256");
    }

    @Test
    void helpIsCompleteForEveryCommand() {
        for (String[] cmd : new String[][]{{}, {"quickstart"}, {"train"}, {"generate"}, {"tokenizer"}, {"tokenizer", "train"},
                {"tokenizer", "encode"}, {"tokenizer", "decode"}, {"data"}, {"data", "prepare"}, {"plot"}, {"runs"},
                {"runs", "show"}, {"chaos"}, {"export"}, {"inspect"}, {"qualify"}, {"parity"}, {"serve"}, {"bench"},
                {"bench", "train"}, {"bench", "serve"}, {"bench", "generate"}, {"bench", "load"}}) {
            String[] args = java.util.Arrays.copyOf(cmd, cmd.length + 1);
            args[cmd.length] = "--help";
            Run r = run(args);
            assertEquals(0, r.code(), String.join(" ", args) + ": " + r.err());
            assertTrue(r.out().contains("Usage:"), String.join(" ", args));
        }
    }

    @Test
    void benchGenerateTimesSingleAndBatchedDecode() {
        Run r = run("bench", "generate", "--shape", "tiny", "--prompt-tokens", "8", "--gen-tokens", "4", "--reps", "1",
                "--batch", "1,3", "--threads", "1", "--warmup", "0");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("warm-up: 1 untimed round(s)"), r.out());
        assertTrue(r.out().contains("prompt processing (8 tokens)") && r.out().contains("decode (4 tokens)"), r.out());
        assertTrue(r.out().contains("batched decode"), r.out());
        assertTrue(r.out().lines().anyMatch(l -> l.matches("\\s+1\\s+[0-9.]+ .*1\\.00x")), r.out());
        assertTrue(r.out().lines().anyMatch(l -> l.matches("\\s+3\\s+[0-9.]+ .*[0-9.]+x")), r.out());
        userError(run("bench", "generate", "--shape", "tiny", "--batch", "0"), "--batch");
        userError(run("bench", "generate", "--shape", "tiny", "--warmup", "-2"), "--warmup must be in 0..600 seconds");
        userError(run("bench", "generate", "--shape", "tiny", "--kv-type", "q8_0"), "--kv-type must be f32 or f16, got 'q8_0'");
        userError(run("serve", "--model", "no-such-model", "--kv-type", "bf16"), "--kv-type must be f32 or f16, got 'bf16'");
        userError(run("serve", "--model", "no-such-model", "--warmup", "-1"), "--warmup must be in 0..3600 seconds");
        userError(run("bench", "load", "--model", "no-such-model", "--warmup", "-1"), "--warmup must be in 0..3600 seconds");
    }

    /**
     * {@code --llama-bench}: the peer is run once per round with the same file, threads, prompt and generation
     * lengths, its JSON read, and the ratios are ours over its figures. A stand-in script plays llama-bench (it
     * checks its arguments and reports fixed figures), so the arithmetic of the table can be checked.
     */
    @Test
    void benchGenerateAgainstLlamaBench(@TempDir Path dir) throws Exception {
        Path gguf = dir.resolve("tiny.gguf"), calls = dir.resolve("calls.txt"), fake = dir.resolve("llama-bench");
        Files.writeString(fake, """
                #!/bin/sh
                echo "$@" >> '%s'
                case "$*" in *"-m %s -t 1 -p 8 -n 4 -ctk f16 -ctv f16 -r 1 -o json"|*"-m %s -t 1 -p 8 -n 4 -r 1 -o json") ;; *) echo "unexpected arguments: $*" >&2; exit 3;; esac
                echo '[{"model_type":"llama ?B F32","build_commit":"abc123","n_prompt":8,"n_gen":0,"avg_ts":2.0},'
                echo ' {"model_type":"llama ?B F32","build_commit":"abc123","n_prompt":0,"n_gen":4,"avg_ts":0.5}]'
                """.formatted(calls, gguf, gguf));
        assertTrue(fake.toFile().setExecutable(true));
        Run r = run("bench", "generate", "--shape", "tiny", "--export-gguf", gguf.toString(), "--llama-bench", fake.toString(),
                "--prompt-tokens", "8", "--gen-tokens", "4", "--reps", "3", "--threads", "1", "--warmup", "0", "--kv-type", "f16");
        assertEquals(0, r.code(), r.err() + r.out());
        assertEquals(3, Files.readAllLines(calls).size(), "one llama-bench run per round");
        // Each round: ours, the peer's fixed 2.0 and 0.5 tok/s, and ratio = ours / theirs.
        java.util.regex.Pattern row = java.util.regex.Pattern.compile(
                "^(\\d+|median)\\s+([0-9.]+)\\s+2\\.0\\s+([0-9.]+)x\\s+([0-9.]+)\\s+0\\.5\\s+([0-9.]+)x$");
        long rows = r.out().lines().map(row::matcher).filter(java.util.regex.Matcher::matches).peek(m -> {
            assertEquals(Double.parseDouble(m.group(2)) / 2.0, Double.parseDouble(m.group(3)), 0.01 + 0.01 * Double.parseDouble(m.group(3)));
            assertEquals(Double.parseDouble(m.group(4)) / 0.5, Double.parseDouble(m.group(5)), 0.01 + 0.01 * Double.parseDouble(m.group(5)));
        }).count();
        assertEquals(4, rows, r.out());
        assertTrue(r.out().contains("llama ?B F32, build abc123"), r.out());
        assertTrue(Files.readAllLines(calls).get(0).contains("-ctk f16 -ctv f16"), "the same cache type for the peer");
        // An f32 cache: llama-bench cannot hold one, so it keeps its default, and the table says so.
        r = run("bench", "generate", "--model", gguf.toString(), "--llama-bench", fake.toString(),
                "--prompt-tokens", "8", "--gen-tokens", "4", "--reps", "1", "--threads", "1", "--warmup", "0");
        assertEquals(0, r.code(), r.err() + r.out());
        assertTrue(r.out().contains("llama-bench cannot keep an f32 KV cache"), r.out());
        assertFalse(Files.readAllLines(calls).get(3).contains("-ctk"), Files.readAllLines(calls).get(3));

        // Bad input: one clear message each.
        userError(run("bench", "generate", "--shape", "tiny", "--llama-bench", fake.toString()), "GGUF");
        userError(run("bench", "generate", "--model", gguf.toString(), "--llama-bench", dir.resolve("none").toString()), "no such file");
        userError(run("bench", "generate", "--model", gguf.toString(), "--llama-bench", fake.toString(), "--batch", "1,4"), "single streams");
        Path broken = dir.resolve("broken");
        Files.writeString(broken, "#!/bin/sh\necho 'cannot load model' >&2\nexit 1\n");
        assertTrue(broken.toFile().setExecutable(true));
        userError(run("bench", "generate", "--model", gguf.toString(), "--llama-bench", broken.toString(), "--prompt-tokens", "8",
                "--gen-tokens", "4", "--reps", "1", "--warmup", "0", "--threads", "1"), "cannot load model");
    }

    @Test
    void llamaBenchOutputIsParsedOrRefusedClearly() {
        LlamaBenchPeer.Figures f = LlamaBenchPeer.parse("""
                [{"model_type":"llama 1B Q4_0","build_commit":"x","n_prompt":512,"n_gen":0,"avg_ts":130.1},
                 {"model_type":"llama 1B Q4_0","build_commit":"x","n_prompt":0,"n_gen":128,"avg_ts":68.8}]""");
        assertEquals(130.1, f.pp(), 0);
        assertEquals(68.8, f.tg(), 0);
        UserException e = org.junit.jupiter.api.Assertions.assertThrows(UserException.class, () -> LlamaBenchPeer.parse("| model | size |"));
        assertTrue(e.getMessage().contains("-o json"), e.getMessage());
        e = org.junit.jupiter.api.Assertions.assertThrows(UserException.class,
                () -> LlamaBenchPeer.parse("[{\"n_prompt\":512,\"n_gen\":0,\"avg_ts\":1}]"));
        assertTrue(e.getMessage().contains("lacks"), e.getMessage());
    }
}
