package dev.crucible.cli;

import dev.crucible.backend.Backend;
import dev.crucible.model.Llama;
import dev.crucible.model.LlamaConfig;
import dev.crucible.tensor.Rng;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.Callable;

@Command(name = "generate", mixinStandardHelpOptions = true, sortOptions = false,
        header = "Single-stream inference speed: prompt processing and decode tokens/s, and the memory roofline.",
        description = {"Times one sequence through Llama.Session (the KV-cached path `crucible generate` uses): prefill of",
                "--prompt-tokens tokens, then --gen-tokens decode steps, --reps times after one warm-up round; reports",
                "the median and range of prefill and decode tokens/s, and decode against the memory-bandwidth roofline",
                "(f32 weight bytes per token over the measured read bandwidth). Either a trained --model or a random",
                "model of a named --shape (110m: dim 768, 12 layers, ffn 2048, vocab 32000; 1b: dim 2048, 16 layers,",
                "32/8 heads, ffn 5632, vocab 32000). The llama.cpp peer is llama-bench -t 2 on the same shape's GGUF."})
final class GenerateBenchCommand implements Callable<Integer> {
    @Option(names = "--model", paramLabel = "PATH", description = "A checkpoint/run, HF directory or GGUF file.")
    Path model;

    @Option(names = "--shape", paramLabel = "110m|1b|tiny", description = "A random-weight model of this shape (instead of --model).")
    String shape;

    @Option(names = "--prompt-tokens", defaultValue = "512", description = "Default: ${DEFAULT-VALUE}.")
    int promptTokens;

    @Option(names = "--gen-tokens", defaultValue = "128", description = "Default: ${DEFAULT-VALUE}.")
    int genTokens;

    @Option(names = "--reps", defaultValue = "3", description = "Timed rounds. Default: ${DEFAULT-VALUE}.")
    int reps;

    @Mixin
    BackendOptions backendOptions;

    @Override
    public Integer call() throws Exception {
        if ((model == null) == (shape == null)) throw new UserException("give exactly one of --model or --shape");
        if (promptTokens <= 0 || genTokens <= 0 || reps <= 0) throw new UserException("--prompt-tokens, --gen-tokens and --reps must be positive");
        try (Backend be = backendOptions.create()) {
            Llama m;
            ModelFiles.Loaded loaded = null;
            if (model != null) {
                loaded = ModelFiles.load(model, be);
                m = loaded.model();
            } else {
                LlamaConfig c = switch (shape) {
                    case "tiny" -> new LlamaConfig(257, 128, 4, 4, 4, 384, 1024, 10000f, 1e-5f, false);
                    case "110m" -> new LlamaConfig(32000, 768, 12, 12, 12, 2048, 1024, 10000f, 1e-5f, true);
                    case "1b" -> new LlamaConfig(32000, 2048, 16, 32, 8, 5632, 1024, 500000f, 1e-5f, false);
                    default -> throw new UserException("--shape must be tiny, 110m or 1b, got '" + shape + "'");
                };
                m = new Llama(c, be);
                m.initRandom(1, 0.02);
            }
            try {
                return run(m);
            } finally {
                if (loaded != null) loaded.close();
                else m.close();
            }
        }
    }

    private int run(Llama m) {
        LlamaConfig c = m.config();
        if (promptTokens + genTokens > c.context()) {
            throw new UserException("prompt + generated tokens (" + (promptTokens + genTokens) + ") exceed the context " + c.context());
        }
        double bandwidth = readBandwidth();
        long weightBytes = 4L * (m.layout().total() - (c.tied() ? 0 : (long) c.vocab() * c.dim())); // embedding rows are gathered, not streamed
        System.out.printf("model: %,d parameters (%s), f32 weights streamed per token: %.1f MB; measured read bandwidth %.1f GB/s%n",
                m.layout().total(), c, weightBytes / 1e6, bandwidth / 1e9);
        Rng rng = Rng.keyed(1, Rng.key("bench.generate"));
        int[] prompt = new int[promptTokens];
        for (int i = 0; i < prompt.length; i++) prompt[i] = rng.nextInt(c.vocab());
        double[] pre = new double[reps], dec = new double[reps];
        for (int r = -1; r < reps; r++) {
            try (Llama.Session s = m.session(promptTokens + genTokens, 64)) {
                long t0 = System.nanoTime();
                float[] logits = s.append(prompt);
                long t1 = System.nanoTime();
                for (int i = 0; i < genTokens; i++) logits = s.append(new int[]{dev.crucible.engine.Sampler.argmax(logits)});
                long t2 = System.nanoTime();
                if (r >= 0) {
                    pre[r] = promptTokens / ((t1 - t0) / 1e9);
                    dec[r] = genTokens / ((t2 - t1) / 1e9);
                }
            }
        }
        Arrays.sort(pre);
        Arrays.sort(dec);
        double roof = bandwidth / weightBytes;
        System.out.printf("prompt processing (%d tokens): %.1f tok/s median (%.1f - %.1f)%n", promptTokens, pre[reps / 2], pre[0], pre[reps - 1]);
        System.out.printf("decode (%d tokens):            %.1f tok/s median (%.1f - %.1f)%n", genTokens, dec[reps / 2], dec[0], dec[reps - 1]);
        System.out.printf("decode roofline at the measured bandwidth: %.1f tok/s; decode reaches %.0f%% of it%n", roof, 100 * dec[reps / 2] / roof);
        return 0;
    }

    /** Best of a few passes summing a 512 MiB array with 2 threads (the decode loop's access pattern: a stream of weights). */
    static double readBandwidth() {
        float[][] parts = new float[2][64 << 20];
        for (float[] p : parts) Arrays.fill(p, 1f);
        double best = 0;
        for (int rep = 0; rep < 4; rep++) {
            long t0 = System.nanoTime();
            double total = Arrays.stream(parts).parallel().mapToDouble(p -> {
                double a = 0, b = 0, c = 0, d = 0;
                for (int i = 0; i < p.length; i += 4) {
                    a += p[i];
                    b += p[i + 1];
                    c += p[i + 2];
                    d += p[i + 3];
                }
                return a + b + c + d;
            }).sum();
            double sec = (System.nanoTime() - t0) / 1e9;
            if (total > 0) best = Math.max(best, 2.0 * 4 * (64 << 20) / sec);
        }
        return best;
    }
}
