package dev.crucible.cli;

import dev.crucible.backend.Backend;
import dev.crucible.model.Llama;
import dev.crucible.model.LlamaConfig;
import dev.crucible.tensor.DType;
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
                "--prompt-tokens tokens, then --gen-tokens decode steps, --reps times after warm-up rounds; reports",
                "the median and range of prefill and decode tokens/s, and decode against the memory-bandwidth roofline",
                "(weight bytes streamed per token over the measured read bandwidth). Either a trained --model or a",
                "random model of a named --shape (110m: dim 768, 12 layers, ffn 2048, vocab 32000; 1b: dim 2048, 16",
                "layers, 32/8 heads, ffn 5632, vocab 32000), its matrices in the --weights type. The llama.cpp peer is",
                "llama-bench -t 2 on the same GGUF file: --export-gguf FILE writes the random model there first and",
                "measures the model loaded back from it (needs heap for the f32 weights: CRUCIBLE_JAVA_OPTS=-Xmx12g for 1b)."})
final class GenerateBenchCommand implements Callable<Integer> {
    @Option(names = "--model", paramLabel = "PATH", description = "A checkpoint/run, HF directory or GGUF file.")
    Path model;

    @Option(names = "--shape", paramLabel = "110m|1b|tiny", description = "A random-weight model of this shape (instead of --model).")
    String shape;

    @Option(names = "--export-gguf", paramLabel = "FILE",
            description = "With --shape: write the random model as GGUF (type from --weights, default f32) and measure that file.")
    Path exportGguf;

    @Option(names = "--prefill-chunk", defaultValue = "512", paramLabel = "N",
            description = "Prompt tokens per forward pass during prefill. Default: ${DEFAULT-VALUE}.")
    int prefillChunk;

    @Option(names = "--profile", description = "Also print the time per op kind: the last round's prefill, and its decode steps per token.")
    boolean profile;

    @Option(names = "--prompt-tokens", defaultValue = "512", description = "Default: ${DEFAULT-VALUE}.")
    int promptTokens;

    @Option(names = "--gen-tokens", defaultValue = "128", description = "Default: ${DEFAULT-VALUE}.")
    int genTokens;

    @Option(names = "--reps", defaultValue = "3", description = "Timed rounds. Default: ${DEFAULT-VALUE}.")
    int reps;

    @Option(names = "--warmup", defaultValue = "3", paramLabel = "SECONDS",
            description = {"Untimed rounds first: at least one, and more until this long has passed (at most 100), so that",
                    "kernels a short prompt calls only a few times per round are JIT-compiled too. Default: ${DEFAULT-VALUE}."})
    double warmup;

    @Option(names = "--batch", split = ",", paramLabel = "N", defaultValue = "1",
            description = {"Also time batched decode: N sequences (each prefilled with --prompt-tokens) decoding --gen-tokens",
                    "together through the serving engine's BatchDecoder; reports aggregate and per-sequence tokens/s",
                    "and the speed-up over one sequence. Comma-separated list, e.g. 1,4,16. Default: ${DEFAULT-VALUE}."})
    int[] batch;

    @Option(names = "--llama-bench", paramLabel = "FILE",
            description = {"Measure against llama.cpp in the same run: with a GGUF --model (or --shape with --export-gguf),",
                    "each of --reps rounds times Crucible's prompt processing (--prompt-tokens) and decode (--gen-tokens",
                    "steps from an empty cache, as llama-bench's tg test) and then runs this llama-bench once (-r 1) on",
                    "the same file with as many threads and, for --kv-type f16, the same KV-cache type (-ctk/-ctv f16;",
                    "llama-bench refuses f32 and keeps its f16 default); prints both, the ratio per round, and the medians."})
    Path llamaBench;

    @Mixin
    BackendOptions backendOptions;

    @Mixin
    WeightOptions weightOptions;

    @Mixin
    KvOptions kvOptions;

    @Override
    public Integer call() throws Exception {
        if ((model == null) == (shape == null)) throw new UserException("give exactly one of --model or --shape");
        if (exportGguf != null && shape == null) throw new UserException("--export-gguf writes a random --shape model; give --shape");
        if (!(warmup >= 0 && warmup <= 600)) throw new UserException("--warmup must be in 0..600 seconds");
        if (promptTokens <= 0 || genTokens <= 0 || reps <= 0 || prefillChunk <= 0) {
            throw new UserException("--prompt-tokens, --gen-tokens, --reps and --prefill-chunk must be positive");
        }
        for (int b : batch) if (b <= 0 || b > 256) throw new UserException("--batch sizes must be in 1..256, got " + b);
        if (llamaBench != null) {
            if (profile || Arrays.stream(batch).anyMatch(b -> b > 1)) throw new UserException("--llama-bench times single streams: run --profile and --batch without it");
            Path gguf = exportGguf != null ? exportGguf : model;
            if (gguf == null || exportGguf == null && !(java.nio.file.Files.isRegularFile(gguf) && dev.crucible.formats.gguf.GgufFile.looksLikeGguf(gguf))) {
                throw new UserException("--llama-bench compares on one GGUF file: give a .gguf --model (or --shape with --export-gguf)");
            }
            peer = new LlamaBenchPeer(llamaBench, gguf, backendOptions.threads == null
                    ? Runtime.getRuntime().availableProcessors() : backendOptions.threads, promptTokens, genTokens,
                    kvOptions.type() == DType.F16 ? "f16" : null);
        }
        kvOptions.type();                                                 // a bad --kv-type fails before the model loads
        try (Backend be = profile ? new BenchCommand.Profiler(backendOptions.create()) : backendOptions.create()) {
            Llama m;
            ModelFiles.Loaded loaded = null;
            if (model != null) {
                loaded = ModelFiles.load(model, be, weightOptions.type());
                m = loaded.model();
            } else {
                LlamaConfig c = switch (shape) {
                    case "tiny" -> new LlamaConfig(257, 128, 4, 4, 4, 384, 1024, 10000f, 1e-5f, false);
                    case "110m" -> new LlamaConfig(32000, 768, 12, 12, 12, 2048, 1024, 10000f, 1e-5f, true);
                    case "1b" -> new LlamaConfig(32000, 2048, 16, 32, 8, 5632, 1024, 500000f, 1e-5f, false);
                    default -> throw new UserException("--shape must be tiny, 110m or 1b, got '" + shape + "'");
                };
                DType type = weightOptions.type() == null ? DType.F32 : weightOptions.type();
                if (exportGguf != null) {
                    writeRandomGguf(c, type, exportGguf);
                    loaded = ModelFiles.load(exportGguf, be, null);
                    m = loaded.model();
                } else {
                    m = randomModel(c, be, type);
                }
            }
            try {
                return run(m);
            } finally {
                if (loaded != null) loaded.close();
                else m.close();
            }
        }
    }

    private String prefillProfile = "";
    private LlamaBenchPeer peer;

    static final int MAX_WARMUP_ROUNDS = 100;

    /**
     * For a model on the CPU backend: which kernels its decode matmuls use (native or Java; for Q4_0 and Q8_0
     * weights, 8-bit or exact f32 activations, per CRUCIBLE_Q4 / CRUCIBLE_Q8); else null.
     */
    static String kernelNote(Llama m) {
        if (!(m.backend() instanceof dev.crucible.cpu.CpuBackend cpu)) return null;
        DType t = m.type("model.layers.0.mlp.up_proj.weight");
        String kernels = dev.crucible.cpu.ffi.CpuNative.status() + "\n" + dev.crucible.cpu.ffi.HugePages.status();
        if (t != DType.Q4_0 && t != DType.Q8_0) return kernels;
        String setting = t == DType.Q4_0 ? "CRUCIBLE_Q4" : "CRUCIBLE_Q8";
        boolean nat = cpu.nativeKernels() != null;
        if (!cpu.decodeActivationsInt8(t)) {
            return kernels + "\n" + t + " matmuls on exact f32 activations (" + setting + "=f32, or "
                    + (t == DType.Q8_0 ? "no native kernels)" : "neither native kernels nor AVX-512BW)");
        }
        return kernels + "\n" + t + (nat ? " matmuls (prefill and decode)" : " decode matmuls") + " on 8-bit activations, as llama.cpp's ("
                + setting + "=f32 keeps exact f32 activations; see docs/serving.md)";
    }

    private int run(Llama m) {
        LlamaConfig c = m.config();
        if (promptTokens + genTokens > c.context()) {
            throw new UserException("prompt + generated tokens (" + (promptTokens + genTokens) + ") exceed the context " + c.context());
        }
        double bandwidth = readBandwidth();
        String embed = "model.embed_tokens.weight";
        // Embedding rows are gathered, not streamed (unless the embedding is also the output head).
        long weightBytes = m.weightBytes() - (c.tied() ? 0 : m.type(embed).bytes((long) c.vocab() * c.dim()));
        System.out.printf("model: %,d parameters (%s), %s weights streamed per token: %.1f MB; measured read bandwidth %.1f GB/s%n",
                m.layout().total(), c, m.type("model.layers.0.mlp.up_proj.weight"), weightBytes / 1e6, bandwidth / 1e9);
        String note = kernelNote(m);
        if (note != null) System.out.println(note);
        Rng rng = Rng.keyed(1, Rng.key("bench.generate"));
        int[] prompt = new int[promptTokens];
        for (int i = 0; i < prompt.length; i++) prompt[i] = rng.nextInt(c.vocab());
        if (peer != null) return againstPeer(m, prompt, bandwidth, weightBytes);
        double[] pre = new double[reps], dec = new double[reps];
        // Warm-up: one round, then more until --warmup seconds have passed. An 8-token prefill calls some attention
        // kernels a few hundred times per round; after one round they were still C1-compiled (no vector intrinsics)
        // and took 15-74 ms per prefill instead of ~1.
        long warmEnd = System.nanoTime() + (long) (warmup * 1e9);
        int warmRounds = 0;
        for (int r = -1; r < reps; r++) {
            try (Llama.Session s = m.session(promptTokens + genTokens, prefillChunk, kvOptions.type())) {
                if (m.backend() instanceof BenchCommand.Profiler p) p.reset();
                long t0 = System.nanoTime();
                float[] logits = s.append(prompt);
                if (m.backend() instanceof BenchCommand.Profiler p) {
                    if (r == reps - 1) prefillProfile = p.report(1);
                    p.reset();
                }
                long t1 = System.nanoTime();
                for (int i = 0; i < genTokens; i++) logits = s.append(new int[]{dev.crucible.engine.Sampler.argmax(logits)});
                long t2 = System.nanoTime();
                if (r >= 0) {
                    pre[r] = promptTokens / ((t1 - t0) / 1e9);
                    dec[r] = genTokens / ((t2 - t1) / 1e9);
                }
            }
            if (r == -1 && ++warmRounds < MAX_WARMUP_ROUNDS && System.nanoTime() < warmEnd) r--; // another warm-up round
        }
        System.out.printf("warm-up: %d untimed round(s)%n", warmRounds);
        Arrays.sort(pre);
        Arrays.sort(dec);
        // The machine's bandwidth can move from minute to minute (a shared host): measure again after the runs and
        // hold decode to the better figure, so a quiet minute cannot flatter the roofline share.
        double after = readBandwidth();
        if (Math.abs(after - bandwidth) > 0.1 * Math.min(after, bandwidth)) {
            System.out.printf("read bandwidth moved during the runs: %.1f GB/s before, %.1f GB/s after; the roofline uses the higher%n",
                    bandwidth / 1e9, after / 1e9);
        }
        bandwidth = Math.max(bandwidth, after);
        double roof = bandwidth / weightBytes;
        System.out.printf("prompt processing (%d tokens): %.1f tok/s median (%.1f - %.1f)%n", promptTokens, pre[reps / 2], pre[0], pre[reps - 1]);
        System.out.printf("decode (%d tokens):            %.1f tok/s median (%.1f - %.1f)%n", genTokens, dec[reps / 2], dec[0], dec[reps - 1]);
        System.out.printf("decode roofline at the measured bandwidth: %.1f tok/s; decode reaches %.0f%% of it%n", roof, 100 * dec[reps / 2] / roof);
        if (m.backend() instanceof BenchCommand.Profiler p) {
            System.out.println("prefill of " + promptTokens + " tokens (last round):");
            System.out.print(prefillProfile);
            System.out.println("decode, per token (last round):");
            java.io.PrintWriter pw = new java.io.PrintWriter(System.out, true);
            p.print(pw, genTokens);
            pw.flush();
        }
        if (Arrays.stream(batch).anyMatch(b -> b > 1)) batched(m, prompt);
        return 0;
    }

    /** Prompt processing tokens/s: one prefill of {@code prompt} into a fresh session. */
    private double prefillRate(Llama m, int[] prompt) {
        try (Llama.Session s = m.session(prompt.length + 1, prefillChunk, kvOptions.type())) {
            long t0 = System.nanoTime();
            s.append(prompt);
            return prompt.length / ((System.nanoTime() - t0) / 1e9);
        }
    }

    /** Decode tokens/s from an empty cache, as llama-bench's tg test: --gen-tokens single-token steps from position 0. */
    private double decodeRate(Llama m, int first) {
        try (Llama.Session s = m.session(genTokens, prefillChunk, kvOptions.type())) {
            long t0 = System.nanoTime();
            int next = first;
            for (int i = 0; i < genTokens; i++) next = dev.crucible.engine.Sampler.argmax(s.append(new int[]{next}));
            return genTokens / ((System.nanoTime() - t0) / 1e9);
        }
    }

    /**
     * Alternating rounds against llama-bench: Crucible's pp and tg, then the peer's, --reps times (after Crucible's
     * warm-up), so that both see the same minutes of a noisy machine; ratios per round and their median.
     */
    private int againstPeer(Llama m, int[] prompt, double bandwidth, double weightBytes) {
        long warmEnd = System.nanoTime() + (long) (warmup * 1e9);
        int warmRounds = 0;
        do {
            prefillRate(m, prompt);
            decodeRate(m, prompt[0]);
        } while (++warmRounds < MAX_WARMUP_ROUNDS && System.nanoTime() < warmEnd);
        System.out.printf("warm-up: %d untimed round(s); peer: %s%n", warmRounds, String.join(" ", peer.command()));
        if (kvOptions.type() != DType.F16) {
            System.out.println("note: llama-bench cannot keep an f32 KV cache (-ctk f32 is refused): it runs with its f16 default;"
                    + " --kv-type f16 compares like with like");
        }
        String pp = "pp" + promptTokens, tg = "tg" + genTokens;
        System.out.printf("%-6s %14s %14s %7s   %14s %14s %7s%n", "round", pp + " crucible", pp + " llama", "ratio", tg + " crucible", tg + " llama", "ratio");
        double[][] f = new double[6][reps];                             // ours pp, peer pp, ratio pp, ours tg, peer tg, ratio tg
        String build = "";
        for (int r = 0; r < reps; r++) {
            double opp = prefillRate(m, prompt), otg = decodeRate(m, prompt[0]);
            LlamaBenchPeer.Figures p;
            try {
                p = peer.run();
            } catch (java.io.IOException e) {
                throw new UserException("could not run llama-bench: " + e.getMessage());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new UserException("interrupted while llama-bench ran");
            }
            build = p.build();
            double[] row = {opp, p.pp(), opp / p.pp(), otg, p.tg(), otg / p.tg()};
            for (int i = 0; i < 6; i++) f[i][r] = row[i];
            System.out.printf("%-6d %14.1f %14.1f %6.2fx   %14.1f %14.1f %6.2fx%n", r + 1, row[0], row[1], row[2], row[3], row[4], row[5]);
        }
        for (double[] col : f) Arrays.sort(col);
        int mid = reps / 2;
        System.out.printf("%-6s %14.1f %14.1f %6.2fx   %14.1f %14.1f %6.2fx%n", "median", f[0][mid], f[1][mid], f[2][mid], f[3][mid], f[4][mid], f[5][mid]);
        System.out.printf("ratio range: %s %.2f-%.2fx, %s %.2f-%.2fx (llama.cpp %s)%n", pp, f[2][0], f[2][reps - 1], tg, f[5][0], f[5][reps - 1], build);
        double roof = Math.max(bandwidth, readBandwidth()) / weightBytes;
        System.out.printf("decode roofline at the measured bandwidth: %.1f tok/s; Crucible's median decode reaches %.0f%% of it%n", roof, 100 * f[3][mid] / roof);
        return 0;
    }

    /**
     * Aggregate decode through {@link dev.crucible.model.BatchDecoder}: for each batch size, that many sequences are
     * prefilled (untimed) and then decode --gen-tokens steps together, --reps rounds after a warm-up round.
     */
    private void batched(Llama m, int[] prompt) {
        int most = Arrays.stream(batch).max().orElseThrow();
        int length = promptTokens + genTokens;
        int pages = most * dev.crucible.model.BatchDecoder.pagesFor(length, dev.crucible.model.BatchDecoder.DEFAULT_PAGE_SIZE);
        System.out.printf("batched decode (%d-token prompts, %d steps; BatchDecoder, the serving path, %s KV cache):%n",
                promptTokens, genTokens, kvOptions.type());
        System.out.println("  batch   aggregate tok/s (range)        per sequence   vs batch 1");
        double single = 0;
        try (dev.crucible.model.BatchDecoder dec = new dev.crucible.model.BatchDecoder(m, most, pages,
                dev.crucible.model.BatchDecoder.DEFAULT_PAGE_SIZE, length, Math.max(most, Math.min(prefillChunk, 512)),
                kvOptions.type())) {
            for (int b : batch) {
                double[] agg = new double[reps];
                for (int r = -1; r < reps; r++) {
                    int[] seqs = new int[b], next = new int[b];
                    for (int i = 0; i < b; i++) {
                        seqs[i] = dec.acquire();
                        next[i] = dev.crucible.engine.Sampler.argmax(dec.prefill(seqs[i], prompt, false)[0]);
                    }
                    if (m.backend() instanceof BenchCommand.Profiler p) p.reset();
                    long t0 = System.nanoTime();
                    for (int step = 0; step < genTokens; step++) {
                        float[][] logits = dec.decode(seqs, next);
                        for (int i = 0; i < b; i++) next[i] = dev.crucible.engine.Sampler.argmax(logits[i]);
                    }
                    long t1 = System.nanoTime();
                    for (int s : seqs) dec.release(s);
                    if (r >= 0) agg[r] = (double) b * genTokens / ((t1 - t0) / 1e9);
                }
                Arrays.sort(agg);
                double med = agg[reps / 2];
                if (b == 1) single = med;
                System.out.printf("  %5d   %8.1f (%.1f - %.1f)   %12.1f   %s%n", b, med, agg[0], agg[reps - 1], med / b,
                        single > 0 ? String.format(java.util.Locale.ROOT, "%.2fx", med / single) : "-");
                if (m.backend() instanceof BenchCommand.Profiler p) {
                    System.out.println("  batch " + b + ", per decode step (last round):");
                    System.out.print(p.report(genTokens).indent(2));
                }
            }
        }
    }

    /** HF-style random weights (N(0, 0.02), norms 1) stored as {@code type}, for speed measurements. */
    static Llama randomModel(LlamaConfig c, Backend be, DType type) {
        return Llama.forInference(c, be, name -> type, (name, buf) -> {
            float[] x = randomTensor(c, name);
            be.copyIn(buf, buf.type() == DType.F32 ? java.lang.foreign.MemorySegment.ofArray(x)
                    : java.lang.foreign.MemorySegment.ofArray(dev.crucible.tensor.Blocks.encode(buf.type(), x, 0, x.length)));
        });
    }

    private static float[] randomTensor(LlamaConfig c, String name) {
        java.util.List<dev.crucible.model.ParamLayout.Tensor> ts = dev.crucible.model.ParamLayout.of(c).tensors();
        int i = 0;
        while (!ts.get(i).name().equals(name)) i++;
        dev.crucible.model.ParamLayout.Tensor t = ts.get(i);
        Rng rng = Rng.keyed(1, Rng.key("init"), i);
        float[] x = new float[Math.toIntExact(t.size())];
        for (int j = 0; j < x.length; j++) x[j] = t.decays() ? (float) (rng.nextGaussian() * 0.02) : 1f;
        return x;
    }

    /** The same random model as a GGUF file (byte-level tokenizer; the unused ids become padding tokens). */
    private static void writeRandomGguf(LlamaConfig c, DType type, Path file) throws java.io.IOException {
        java.util.Map<String, float[]> tensors = new java.util.LinkedHashMap<>();
        for (dev.crucible.model.ParamLayout.Tensor t : dev.crucible.model.ParamLayout.of(c).tensors()) tensors.put(t.name(), randomTensor(c, t.name()));
        dev.crucible.formats.tokenizer.Tokenizer tok = dev.crucible.formats.tokenizer.Tokenizer.byteLevel(java.util.List.of("<|endoftext|>"));
        int eos = tok.vocabSize() - 1;
        var w = new dev.crucible.formats.hf.ModelWeights(ModelFiles.specOf(c), tensors, tok, "random", eos, eos);
        dev.crucible.formats.gguf.GgmlType g = dev.crucible.formats.gguf.GgmlType.parse(type.name());
        System.out.printf("writing the random model to %s (%s)...%n", file, g);
        dev.crucible.formats.gguf.GgufModel.write(w, file, g, "crucible-bench-" + file.getFileName());
    }

    /**
     * Best of a few passes summing 512 MiB of floats with 2 threads, 16-lane vectors in four accumulators (the decode
     * loop's access pattern: a stream of weights). A scalar loop here measured about 27 GB/s, its adds and not the
     * memory setting the pace.
     */
    static double readBandwidth() {
        float[][] parts = new float[2][64 << 20];
        for (float[] p : parts) Arrays.fill(p, 1f);
        float[] warm = new float[1 << 16];
        for (int i = 0; i < 20_000; i++) sum(warm, warm.length);  // compiled before it is timed
        double best = 0;
        for (int rep = 0; rep < 5; rep++) {
            double[] total = new double[2];
            long t0 = System.nanoTime();
            Thread[] ts = new Thread[2];
            for (int t = 0; t < 2; t++) {
                int which = t;
                ts[t] = Thread.ofPlatform().start(() -> total[which] = sum(parts[which], parts[which].length));
            }
            for (Thread t : ts) {
                try {
                    t.join();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return best;
                }
            }
            double sec = (System.nanoTime() - t0) / 1e9;
            if (total[0] + total[1] > 0) best = Math.max(best, 2.0 * 4 * (64 << 20) / sec);
        }
        return best;
    }

    private static final jdk.incubator.vector.VectorSpecies<Float> SP = jdk.incubator.vector.FloatVector.SPECIES_PREFERRED;

    private static double sum(float[] p, int n) {
        jdk.incubator.vector.FloatVector a = jdk.incubator.vector.FloatVector.zero(SP), b = a, c = a, d = a;
        int vl = SP.length(), i = 0;
        for (; i + 4 * vl <= n; i += 4 * vl) {
            a = a.add(jdk.incubator.vector.FloatVector.fromArray(SP, p, i));
            b = b.add(jdk.incubator.vector.FloatVector.fromArray(SP, p, i + vl));
            c = c.add(jdk.incubator.vector.FloatVector.fromArray(SP, p, i + 2 * vl));
            d = d.add(jdk.incubator.vector.FloatVector.fromArray(SP, p, i + 3 * vl));
        }
        return a.add(b).add(c).add(d).reduceLanes(jdk.incubator.vector.VectorOperators.ADD);
    }
}
