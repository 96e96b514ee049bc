package dev.crucible.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.HostBuffer;
import dev.crucible.backend.Op;
import dev.crucible.cpu.CpuBackend;
import dev.crucible.cpu.blas.OpenBlas;
import dev.crucible.model.Llama;
import dev.crucible.model.LlamaConfig;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Rng;
import dev.crucible.train.AdamW;
import dev.crucible.train.OptimizerConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Model.CommandSpec;

import java.io.IOException;
import java.io.PrintWriter;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryPoolMXBean;
import java.lang.management.MemoryType;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;

/**
 * {@code crucible bench}: whole-program speed, always side by side with a peer in the same run (DESIGN §12).
 *
 * <p>{@code bench train} times Crucible's training step (forward, fused softmax + cross-entropy, backward, global
 * gradient norm, AdamW with clipping folded in: exactly what {@code Trainer} runs per step, without data loading,
 * metrics or checkpoints) on random tokens, and then the PyTorch peer {@code torch_llama.py} on the same shape when
 * {@code python3} with torch is present. Both report the median and range of tokens/s over the steps after the
 * warm-up; model FLOPs utilisation is against the fp32 matmul peak measured at the start of the same run.
 */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = {"Measure speed side by side with a peer (tokens/s, MFU, peak memory)."},
        subcommands = {BenchCommand.Train.class, ServeBenchCommand.class, GenerateBenchCommand.class, LoadBenchCommand.class})
final class BenchCommand implements Runnable {
    @Spec
    CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    /** A model and batch shape to time; the same fields as the peer's flags. */
    record Shape(String name, int dim, int layers, int heads, int kvHeads, int ffn, int vocab, int seq, int batch,
                 boolean tied) {
        static Shape preset(String name) {
            return switch (name.toUpperCase(Locale.ROOT)) {
                case "S" -> new Shape("S", 288, 6, 6, 6, 768, 4096, 256, 8, false);
                case "M" -> new Shape("M", 512, 8, 8, 8, 1408, 8192, 256, 8, false);
                case "GT" -> new Shape("GT", 768, 12, 12, 12, 2048, 50257, 64, 4, true);
                default -> null;
            };
        }

        /** A JSON or TOML file: dim, layers, heads, [kv_heads], ffn, vocab, T (or seq_len), B (or batch), [tied]. */
        static Shape file(Path file) {
            Map<String, Object> m = ConfigFiles.read(file);
            int heads = num(m, file, "heads", null);
            return new Shape(file.getFileName().toString(), num(m, file, "dim", null), num(m, file, "layers", null),
                    heads, num(m, file, "kv_heads", heads), num(m, file, "ffn", null), num(m, file, "vocab", null),
                    num(m, file, m.containsKey("T") ? "T" : "seq_len", null), num(m, file, m.containsKey("B") ? "B" : "batch", null),
                    Boolean.TRUE.equals(m.get("tied")));
        }

        private static int num(Map<String, Object> m, Path file, String key, Integer dflt) {
            Object v = m.get(key);
            if (v == null) {
                if (dflt == null) throw new UserException(file + ": missing key '" + key + "'");
                return dflt;
            }
            if (!(v instanceof Number n)) throw new UserException(file + ": '" + key + "' must be a number");
            return n.intValue();
        }

        LlamaConfig model() {
            return new LlamaConfig(vocab, dim, layers, heads, kvHeads, ffn, seq, 10000f, 1e-5f, tied);
        }

        List<String> peerArgs() {
            List<String> a = new ArrayList<>(List.of("--dim", "" + dim, "--layers", "" + layers, "--heads", "" + heads,
                    "--kv-heads", "" + kvHeads, "--ffn", "" + ffn, "--vocab", "" + vocab, "--T", "" + seq, "--B", "" + batch));
            if (tied) a.add("--tied");
            return a;
        }

        /** Parameters that take part in a matmul (all but the norms, and the embedding table unless tied). */
        long matmulParams() {
            long total = model().paramCount();
            long norms = (2L * layers + 1) * dim;
            return total - norms - (tied ? 0 : (long) vocab * dim);
        }

        /** 6·N_matmul + 12·L·D·T, the convention of the peer (PaLM / nanoGPT; causal halving not applied). */
        double flopsPerToken() {
            return 6.0 * matmulParams() + 12.0 * layers * dim * seq;
        }

        String describe() {
            return String.format(Locale.ROOT, "dim %d, layers %d, heads %d%s, ffn %d, vocab %d%s, T %d, B %d", dim, layers,
                    heads, kvHeads == heads ? "" : " (kv " + kvHeads + ")", ffn, vocab, tied ? ", tied" : "", seq, batch);
        }
    }

    /** Tokens/s over the measured steps, plus phase medians (ms) and memory; memory -1 when unknown. */
    record Result(String label, double[] tokPerSec, Map<String, Double> phaseMs, double flopsPerToken, long heapPeak,
                  long rssPeak, String note) {
        double median() { return BenchCommand.median(tokPerSec); }

        double min() { return Arrays.stream(tokPerSec).min().orElse(Double.NaN); }

        double max() { return Arrays.stream(tokPerSec).max().orElse(Double.NaN); }
    }

    @Command(name = "train", mixinStandardHelpOptions = true, sortOptions = false,
            description = {"Time training steps of Crucible and of the PyTorch peer on the same shape and print a table:",
                    "tokens/s (median and range over the steps after warm-up), ratio, MFU against the matmul peak",
                    "measured in the same run, peak Java heap and resident memory.",
                    "Example: crucible bench train --config S --steps 12"})
    static final class Train implements Callable<Integer> {
        @Spec
        CommandSpec spec;

        @Option(names = "--config", required = true, paramLabel = "S|M|GT|FILE",
                description = "Preset S, M or GT (see docs/performance.md), or a JSON/TOML file with dim, layers, heads, "
                        + "kv_heads, ffn, vocab, T, B, tied.")
        String config;

        @Option(names = "--steps", defaultValue = "14", description = "Steps per run, warm-up included. Default: ${DEFAULT-VALUE}.")
        int steps;

        @Option(names = "--warmup-steps", defaultValue = "2", description = "Steps left out of the timing. Default: ${DEFAULT-VALUE}.")
        int warmupSteps;

        @Option(names = "--threads", defaultValue = "2", description = "Threads for both Crucible and the peer. Default: ${DEFAULT-VALUE}.")
        int threads;

        @Option(names = "--rounds", defaultValue = "1",
                description = "Alternate Crucible and the peer this many times (steps pooled); more rounds even out noise. Default: ${DEFAULT-VALUE}.")
        int rounds;

        @Option(names = "--backend", defaultValue = "cpu", description = "Crucible backend. Default: ${DEFAULT-VALUE}.")
        String backend;

        @Option(names = "--blas", defaultValue = "auto", paramLabel = "auto|on|off|LIB",
                description = "cpu backend matmul: OpenBLAS when it loads (auto), required (on), Java kernels only (off, "
                        + "bit-identical on any thread count), or the OpenBLAS library to load. Default: ${DEFAULT-VALUE}.")
        String blas;

        @Option(names = "--peer", paramLabel = "FILE",
                description = "The PyTorch peer script. Default: ../shared/peers/torch_llama.py next to the repository.")
        Path peer;

        @Option(names = "--python", defaultValue = "/usr/bin/python3", description = "Python with torch for the peer. Default: ${DEFAULT-VALUE}.")
        String python;

        @Option(names = "--no-peer", description = "Time Crucible only.")
        boolean noPeer;

        @Option(names = "--peak-size", defaultValue = "2048", description = "n of the n³ sgemm that measures the matmul peak. Default: ${DEFAULT-VALUE}.")
        int peakSize;

        @Option(names = "--profile", description = "Also print Crucible's time per op kind (matmuls by shape) over the measured steps.")
        boolean profile;

        @Option(names = "--json", paramLabel = "FILE", description = "Also write the results as JSON.")
        Path json;

        @Option(names = "--jit-warmup", defaultValue = "40", paramLabel = "STEPS",
                description = "Untimed steps of a tiny model of the same kind first, so the JIT has compiled every kernel "
                        + "before the timed run (a long training run never sees that cost). 0 = none. Default: ${DEFAULT-VALUE}.")
        int jitWarmup;

        @Option(names = "--seed", defaultValue = "1234", description = "Seed for weights and tokens. Default: ${DEFAULT-VALUE}.")
        long seed;

        @Override
        public Integer call() throws Exception {
            PrintWriter out = spec.commandLine().getOut();
            if (steps <= warmupSteps) throw new UserException("--steps must exceed --warmup-steps");
            if (threads <= 0 || rounds <= 0) throw new UserException("--threads and --rounds must be positive");
            Shape shape = Shape.preset(config);
            if (shape == null) shape = Shape.file(Path.of(config));
            OpenBlas lib = switch (blas.toLowerCase(Locale.ROOT)) {
                case "off" -> null;
                case "auto" -> OpenBlas.load(null).orElse(null);
                case "on" -> OpenBlas.load(null).orElseThrow(() -> new UserException("--blas on: no OpenBLAS library "
                        + "loads (tried " + OpenBlas.DEFAULT_NAMES + "); install libopenblas0-openmp or use --blas auto"));
                default -> OpenBlas.load(blas).orElseThrow(() -> new UserException("--blas: cannot load " + blas));
            };
            Path peerScript = noPeer ? null : peerScript();
            String peerMissing = noPeer ? "--no-peer" : peerScript == null ? "peer script not found (use --peer FILE)"
                    : !torchPresent() ? python + " has no torch (apt-get install python3-torch; see docs/performance.md)" : null;

            out.printf(Locale.ROOT, "config %s: %s%n", shape.name(), shape.describe());
            out.printf(Locale.ROOT, "params %,d (matmul %,d); model FLOPs/token %.1f M; %d steps per run, %d warm-up, %d thread(s), %d round(s)%n",
                    shape.model().paramCount(), shape.matmulParams(), shape.flopsPerToken() / 1e6, steps, warmupSteps,
                    threads, rounds);
            out.flush();

            Peak peak = matmulPeak(lib, threads, peakSize);
            out.printf(Locale.ROOT, "matmul peak: %.1f GFLOP/s (%s, fp32 %d^3, best of %d)%n", peak.gflops(), peak.how(),
                    peakSize, Peak.REPS);
            out.flush();

            if (jitWarmup > 0) {
                long t0 = System.nanoTime();
                jitWarmup(shape, lib);
                out.printf(Locale.ROOT, "JIT warm-up: %d steps of a tiny model in %.1f s (not timed)%n", jitWarmup,
                        (System.nanoTime() - t0) / 1e9);
                out.flush();
            }
            List<Result> crucible = new ArrayList<>(), torch = new ArrayList<>();
            for (int r = 0; r < rounds; r++) {
                crucible.add(runCrucible(shape, lib, out));
                if (peerMissing == null) torch.add(runPeer(shape, peerScript, out));
            }
            Result c = pool(crucible), t = torch.isEmpty() ? null : pool(torch);
            printTable(out, shape, peak, c, t, peerMissing);
            if (rounds > 1) {
                // Per round, so a round disturbed by other load on the machine shows as such.
                double[] ratios = new double[rounds];
                for (int r = 0; r < rounds; r++) {
                    ratios[r] = torch.isEmpty() ? Double.NaN : crucible.get(r).median() / torch.get(r).median();
                    out.printf(Locale.ROOT, "round %d: crucible %.1f tok/s%s%n", r + 1, crucible.get(r).median(), torch.isEmpty()
                            ? "" : String.format(Locale.ROOT, ", pytorch %.1f tok/s, ratio %.2fx", torch.get(r).median(), ratios[r]));
                }
                if (!torch.isEmpty()) out.printf(Locale.ROOT, "median of the per-round ratios: %.2fx%n", median(ratios));
                out.flush();
            }
            if (json != null) writeJson(shape, peak, c, t);
            return 0;
        }

        // ---- Crucible -------------------------------------------------------------------------------------------

        private Backend createBackend(OpenBlas lib) {
            Backend be = backend.equals("cpu") ? new CpuBackend(threads, lib) : Backends.create(backend, threads);
            return profile ? new Profiler(be) : be;
        }

        private String crucibleLabel(OpenBlas lib) {
            return "crucible (" + backend + (backend.equals("cpu") ? lib == null ? ", Java kernels" : ", OpenBLAS" : "") + ")";
        }

        /** The trainer's step (zero grads, forward + loss + backward, grad norm, clipped AdamW) on random tokens. */
        private Result runCrucible(Shape shape, OpenBlas lib, PrintWriter out) {
            LlamaConfig cfg = shape.model();
            OptimizerConfig oc = new OptimizerConfig(3e-4, 3e-5, 0, 0.9, 0.95, 1e-8, 0.1, 1.0);
            int n = shape.batch() * shape.seq();
            int[] ids = new int[n], targets = new int[n];
            Rng rng = Rng.keyed(seed, Rng.key("bench"));
            double[] tps = new double[steps - warmupSteps];
            double[][] phases = new double[3][steps - warmupSteps];
            resetPeaks();
            try (Backend be = createBackend(lib); Llama model = new Llama(cfg, be); AdamW opt = new AdamW(model)) {
                model.initRandom(seed, 0.02);
                int[] seqBuf = new int[shape.seq() + 1];
                for (int step = 0; step < steps; step++) {
                    if (be instanceof Profiler p && step == warmupSteps) p.reset();
                    for (int b = 0; b < shape.batch(); b++) {
                        for (int i = 0; i <= shape.seq(); i++) seqBuf[i] = rng.nextInt(shape.vocab());
                        System.arraycopy(seqBuf, 0, ids, b * shape.seq(), shape.seq());
                        System.arraycopy(seqBuf, 1, targets, b * shape.seq(), shape.seq());
                    }
                    long t0 = System.nanoTime();
                    model.zeroGrads();
                    Llama.Loss loss = model.step(ids, targets, shape.batch(), shape.seq(), 1f / n);
                    long t1 = System.nanoTime();
                    double norm = opt.gradNorm();
                    long t2 = System.nanoTime();
                    opt.update(oc, step + 1, oc.lrAt(step, steps), AdamW.clipCoef(norm, oc.clip()));
                    be.synchronize();
                    long t3 = System.nanoTime();
                    double dt = (t3 - t0) / 1e9;
                    out.printf(Locale.ROOT, "  crucible step %3d loss %.4f gnorm %.3f %8.1f ms %9.1f tok/s%n", step,
                            loss.mean(), norm, dt * 1e3, n / dt);
                    out.flush();
                    if (step >= warmupSteps) {
                        int s = step - warmupSteps;
                        tps[s] = n / dt;
                        phases[0][s] = (t1 - t0) / 1e6;
                        phases[1][s] = (t2 - t1) / 1e6;
                        phases[2][s] = (t3 - t2) / 1e6;
                    }
                }
                if (be instanceof Profiler p) p.print(out, steps - warmupSteps);
            }
            Map<String, Double> ph = new LinkedHashMap<>();
            ph.put("forward+backward", median(phases[0]));
            ph.put("clip", median(phases[1]));
            ph.put("adamw", median(phases[2]));
            return new Result(crucibleLabel(lib), tps, ph, shape.flopsPerToken(), heapPeak(), rssPeak(), null);
        }

        /** Runs the training step of a tiny model with the same head layout and tying, to get the kernels compiled. */
        private void jitWarmup(Shape shape, OpenBlas lib) {
            int group = shape.heads() / shape.kvHeads(), heads = 4 * group, kv = 4;
            LlamaConfig cfg = new LlamaConfig(512, heads * (shape.dim() / shape.heads()), 2, heads, kv, 2 * shape.dim() / 3 + 1,
                    64, 10000f, 1e-5f, shape.tied());
            int b = 2, t = 64, n = b * t;
            int[] ids = new int[n], targets = new int[n];
            Rng rng = Rng.keyed(seed, Rng.key("jit-warmup"));
            OptimizerConfig oc = new OptimizerConfig(3e-4, 3e-5, 0, 0.9, 0.95, 1e-8, 0.1, 1.0);
            try (Backend be = backend.equals("cpu") ? new CpuBackend(threads, lib) : Backends.create(backend, threads);
                 Llama model = new Llama(cfg, be); AdamW opt = new AdamW(model)) {
                model.initRandom(seed, 0.02);
                for (int step = 0; step < jitWarmup; step++) {
                    for (int i = 0; i < n; i++) {
                        ids[i] = rng.nextInt(cfg.vocab());
                        targets[i] = rng.nextInt(cfg.vocab());
                    }
                    model.zeroGrads();
                    model.step(ids, targets, b, t, 1f / n);
                    opt.update(oc, step + 1, 3e-4, AdamW.clipCoef(opt.gradNorm(), 1.0));
                }
            }
        }

        // ---- the PyTorch peer -----------------------------------------------------------------------------------

        private Path peerScript() {
            if (peer != null) {
                if (!Files.isRegularFile(peer)) throw new UserException("peer script not found: " + peer);
                return peer;
            }
            List<Path> candidates = new ArrayList<>();
            Path repo = repoRoot();
            if (repo != null) candidates.add(repo.resolve("../shared/peers/torch_llama.py"));
            candidates.add(Path.of("../shared/peers/torch_llama.py"));
            for (Path p : candidates) if (Files.isRegularFile(p)) return p.normalize();
            return null;
        }

        /** The repository holding the running jar (cli/target/crucible.jar or cli/target/classes), if any. */
        private static Path repoRoot() {
            try {
                Path p = Path.of(BenchCommand.class.getProtectionDomain().getCodeSource().getLocation().toURI());
                for (Path d = p; d != null; d = d.getParent()) {
                    if (Files.isRegularFile(d.resolve("pom.xml")) && Files.isDirectory(d.resolve("cli"))) return d;
                }
            } catch (URISyntaxException | SecurityException | NullPointerException e) {
                return null;
            }
            return null;
        }

        private boolean torchPresent() {
            try {
                Process p = new ProcessBuilder(python, "-c", "import torch").redirectErrorStream(true).start();
                p.getInputStream().readAllBytes();
                return p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0;
            } catch (IOException e) {
                return false;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            }
        }

        private Result runPeer(Shape shape, Path script, PrintWriter out) throws IOException, InterruptedException {
            Path jsonOut = Files.createTempFile("crucible-peer", ".json");
            try {
                List<String> cmd = new ArrayList<>(List.of(python, script.toString()));
                cmd.addAll(shape.peerArgs());
                cmd.addAll(List.of("--steps", "" + steps, "--warmup-steps", "" + warmupSteps, "--threads", "" + threads,
                        "--seed", "" + seed, "--json", jsonOut.toString()));
                ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
                pb.environment().put("OMP_NUM_THREADS", "" + threads);
                Process p = pb.start();
                long[] rss = {-1};
                Thread poll = Thread.ofPlatform().daemon().start(() -> {
                    Path status = Path.of("/proc/" + p.pid() + "/status");
                    while (p.isAlive()) {
                        rss[0] = Math.max(rss[0], statusKb(status, "VmHWM:"));
                        try {
                            Thread.sleep(50);
                        } catch (InterruptedException e) {
                            return;
                        }
                    }
                });
                List<Double> stepTps = new ArrayList<>();
                java.util.regex.Pattern stepLine = java.util.regex.Pattern.compile("^step\\s+(\\d+) .* ([0-9.]+) tok/s");
                try (var lines = p.inputReader().lines()) {
                    lines.forEach(l -> {
                        out.println("  torch " + l);
                        out.flush();
                        var mt = stepLine.matcher(l);
                        if (mt.find() && Integer.parseInt(mt.group(1)) >= warmupSteps) stepTps.add(Double.parseDouble(mt.group(2)));
                    });
                }
                int rc = p.waitFor();
                poll.join(1000);
                if (rc != 0) throw new UserException("the peer failed (exit " + rc + "): " + String.join(" ", cmd));
                JsonNode j = new ObjectMapper().readTree(jsonOut.toFile());
                // Per-step figures from the peer's step lines; its summary's median/min/max if those did not parse.
                double[] tps = stepTps.size() == steps - warmupSteps ? stepTps.stream().mapToDouble(Double::doubleValue).toArray()
                        : new double[]{j.path("tok_s_min").asDouble(), j.path("tok_s_median").asDouble(), j.path("tok_s_max").asDouble()};
                Map<String, Double> ph = new LinkedHashMap<>();
                JsonNode pm = j.path("phase_ms_median");
                ph.put("forward+backward", pm.path("forward").asDouble() + pm.path("backward").asDouble());
                ph.put("clip", pm.path("clip").asDouble());
                ph.put("adamw", pm.path("adamw").asDouble());
                return new Result("pytorch " + j.path("torch").asText() + " (" + j.path("threads").asInt() + " threads)", tps,
                        ph, j.path("flops_per_token").asDouble(), -1, rss[0] < 0 ? -1 : rss[0] * 1024, null);
            } finally {
                Files.deleteIfExists(jsonOut);
            }
        }

        // ---- matmul peak ----------------------------------------------------------------------------------------

        record Peak(double gflops, String how) {
            static final int REPS = 5;
        }

        /**
         * The best fp32 GEMM rate of this machine, measured now: OpenBLAS's own sgemm on {@code threads} of its
         * threads when it loads (how its authors reach peak), and the Java kernel; the higher one counts.
         */
        private static Peak matmulPeak(OpenBlas lib, int threads, int size) {
            try (CpuBackend be = new CpuBackend(threads)) {
                long n = (long) size * size;
                Buffer a = be.allocate(DType.F32, n), b = be.allocate(DType.F32, n), c = be.allocate(DType.F32, n);
                be.run(new Op.Fill(a, 0.5f));
                be.run(new Op.Fill(b, 0.25f));
                double flops = 2.0 * size * size * size, java = 0, blas = 0;
                for (int r = 0; r < Peak.REPS + 1; r++) { // the first run of each warms up
                    long t0 = System.nanoTime();
                    be.run(new Op.MatMul(a, b, c, size, size, size, false, true, false));
                    if (r > 0) java = Math.max(java, flops / (System.nanoTime() - t0));
                }
                if (lib != null) {
                    lib.threads(threads);
                    for (int r = 0; r < Peak.REPS + 1; r++) {
                        long t0 = System.nanoTime();
                        lib.gemm(HostBuffer.seg(a), HostBuffer.seg(b), HostBuffer.seg(c), size, size, size, false, true, false);
                        if (r > 0) blas = Math.max(blas, flops / (System.nanoTime() - t0));
                    }
                    lib.threads(1); // the backend runs OpenBLAS single-threaded on blocks (BlasGemm)
                }
                a.close();
                b.close();
                c.close();
                String how = String.format(Locale.ROOT, "%s %d thread(s); Java kernel %.1f%s", blas > java ? "OpenBLAS sgemm" : "Java kernel",
                        threads, java, lib == null ? "" : String.format(Locale.ROOT, ", OpenBLAS %.1f", blas));
                return new Peak(Math.max(java, blas), how);
            }
        }

        // ---- memory ---------------------------------------------------------------------------------------------

        /** Resets the heap pools' peaks and this process's resident high-water mark (Linux clear_refs 5). */
        private static void resetPeaks() {
            System.gc();
            for (MemoryPoolMXBean p : ManagementFactory.getMemoryPoolMXBeans()) {
                if (p.getType() == MemoryType.HEAP) p.resetPeakUsage();
            }
            try {
                Files.writeString(Path.of("/proc/self/clear_refs"), "5");
            } catch (IOException | UnsupportedOperationException | SecurityException e) {
                // not Linux or not permitted: the high-water mark then covers the whole process lifetime
            }
        }

        /** Sum of the heap pools' peaks since {@link #resetPeaks} (an upper bound of the peak heap in use). */
        private static long heapPeak() {
            long sum = 0;
            for (MemoryPoolMXBean p : ManagementFactory.getMemoryPoolMXBeans()) {
                if (p.getType() == MemoryType.HEAP && p.getPeakUsage() != null) sum += p.getPeakUsage().getUsed();
            }
            return sum;
        }

        private static long rssPeak() {
            long kb = statusKb(Path.of("/proc/self/status"), "VmHWM:");
            return kb < 0 ? -1 : kb * 1024;
        }

        private static long statusKb(Path status, String key) {
            try {
                for (String line : Files.readAllLines(status)) {
                    if (line.startsWith(key)) return Long.parseLong(line.substring(key.length()).trim().split("\\s+")[0]);
                }
            } catch (IOException | RuntimeException e) {
                return -1;
            }
            return -1;
        }

        // ---- report ---------------------------------------------------------------------------------------------

        private static Result pool(List<Result> rs) {
            if (rs.size() == 1) return rs.getFirst();
            double[] all = rs.stream().flatMapToDouble(r -> Arrays.stream(r.tokPerSec())).toArray();
            Map<String, Double> ph = new LinkedHashMap<>();
            for (String k : rs.getFirst().phaseMs().keySet()) {
                ph.put(k, median(rs.stream().mapToDouble(r -> r.phaseMs().get(k)).toArray()));
            }
            long heap = rs.stream().mapToLong(Result::heapPeak).max().orElse(-1);
            long rss = rs.stream().mapToLong(Result::rssPeak).max().orElse(-1);
            return new Result(rs.getFirst().label(), all, ph, rs.getFirst().flopsPerToken(), heap, rss, null);
        }

        private void printTable(PrintWriter out, Shape shape, Peak peak, Result c, Result t, String peerMissing) {
            out.println();
            out.printf(Locale.ROOT, "config %s (%s), %d thread(s); matmul peak %.1f GFLOP/s (%s)%n", shape.name(),
                    shape.describe(), threads, peak.gflops(), peak.how());
            String fmt = "| %-34s | %15s | %19s | %7s | %8s | %6s | %9s | %9s |%n";
            out.printf(Locale.ROOT, fmt, "run", "tokens/s median", "range", "ratio", "GFLOP/s", "MFU", "peak heap", "peak RSS");
            out.printf(Locale.ROOT, fmt, "-".repeat(34), "-".repeat(15), "-".repeat(19), "-".repeat(7), "-".repeat(8),
                    "-".repeat(6), "-".repeat(9), "-".repeat(9));
            double ref = t == null ? Double.NaN : t.median();
            for (Result r : t == null ? List.of(c) : List.of(c, t)) {
                double gf = r.median() * r.flopsPerToken() / 1e9;
                out.printf(Locale.ROOT, fmt, r.label(), String.format(Locale.ROOT, "%.1f", r.median()),
                        String.format(Locale.ROOT, "%.1f - %.1f", r.min(), r.max()),
                        Double.isNaN(ref) ? "-" : String.format(Locale.ROOT, "%.2fx", r.median() / ref),
                        String.format(Locale.ROOT, "%.1f", gf), String.format(Locale.ROOT, "%.1f%%", 100 * gf / peak.gflops()),
                        mib(r.heapPeak()), mib(r.rssPeak()));
            }
            for (Result r : t == null ? List.of(c) : List.of(c, t)) {
                StringBuilder sb = new StringBuilder("phases (median ms) " + r.label() + ":");
                r.phaseMs().forEach((k, v) -> sb.append(String.format(Locale.ROOT, " %s %.1f", k, v)));
                out.println(sb);
            }
            if (t == null) out.println("peer not run: " + peerMissing);
            else out.printf(Locale.ROOT, "crucible / pytorch tokens/s: %.2fx%n", c.median() / t.median());
            out.flush();
        }

        private static String mib(long bytes) {
            return bytes < 0 ? "-" : String.format(Locale.ROOT, "%d MiB", (bytes + (1 << 19)) >> 20);
        }

        private void writeJson(Shape shape, Peak peak, Result c, Result t) throws IOException {
            Map<String, Object> j = new LinkedHashMap<>();
            j.put("config", shape);
            j.put("threads", threads);
            j.put("steps", steps);
            j.put("warmup_steps", warmupSteps);
            j.put("rounds", rounds);
            j.put("matmul_peak_gflops", peak.gflops());
            j.put("matmul_peak_how", peak.how());
            j.put("crucible", resultMap(c, peak));
            if (t != null) {
                j.put("pytorch", resultMap(t, peak));
                j.put("ratio", c.median() / t.median());
            }
            Files.writeString(json, ConfigFiles.toJson(j));
        }

        private static Map<String, Object> resultMap(Result r, Peak peak) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("label", r.label());
            m.put("tok_s_median", r.median());
            m.put("tok_s_min", r.min());
            m.put("tok_s_max", r.max());
            m.put("mfu", r.median() * r.flopsPerToken() / 1e9 / peak.gflops());
            m.put("phase_ms_median", r.phaseMs());
            m.put("heap_peak_bytes", r.heapPeak());
            m.put("rss_peak_bytes", r.rssPeak());
            return m;
        }
    }

    /** Times every op by kind (matmuls also by shape); delegates everything. For --profile only. */
    static final class Profiler implements Backend {
        private final Backend be;
        private final Map<String, long[]> time = new java.util.TreeMap<>(); // key -> {nanos, count}

        Profiler(Backend be) { this.be = be; }

        void reset() { time.clear(); }

        /** What {@link #print} writes, as text. */
        String report(int steps) {
            java.io.StringWriter sw = new java.io.StringWriter();
            PrintWriter pw = new PrintWriter(sw);
            print(pw, steps);
            pw.flush();
            return sw.toString();
        }

        void print(PrintWriter out, int steps) {
            long total = time.values().stream().mapToLong(v -> v[0]).sum();
            out.printf(Locale.ROOT, "  profile: %.1f ms of ops per step%n", total / 1e6 / steps);
            time.entrySet().stream().sorted((x, y) -> Long.compare(y.getValue()[0], x.getValue()[0])).forEach(e ->
                    out.printf(Locale.ROOT, "  %8.2f ms/step %5.1f%% %5d calls/step  %s%s%n", e.getValue()[0] / 1e6 / steps,
                            100.0 * e.getValue()[0] / total, e.getValue()[1] / steps, e.getKey(), e.getValue()[2] == 0 ? ""
                                    : String.format(Locale.ROOT, " %.1f GFLOP/s", e.getValue()[2] / (double) e.getValue()[0])));
        }

        private static String key(Op op) {
            if (op instanceof Op.MatMul m) {
                return String.format(Locale.ROOT, "MatMul m%d n%d k%d%s%s%s%s", m.m(), m.n(), m.k(),
                        m.transA() ? " tA" : "", m.transB() ? " tB" : "", m.accumulate() ? " acc" : "",
                        m.b().type() == DType.F32 ? "" : " b " + m.b().type());
            }
            return op.getClass().getSimpleName();
        }

        @Override public String name() { return be.name(); }
        @Override public Buffer allocate(DType type, long elements) { return be.allocate(type, elements); }
        @Override public void copyIn(Buffer dst, java.lang.foreign.MemorySegment src) { be.copyIn(dst, src); }
        @Override public void copyOut(Buffer src, java.lang.foreign.MemorySegment dst) { be.copyOut(src, dst); }
        @Override public boolean supports(Op op) { return be.supports(op); }
        @Override public void synchronize() { be.synchronize(); }
        @Override public int invariantMatmulRows() { return be.invariantMatmulRows(); }
        @Override public void close() { be.close(); }

        @Override
        public void run(Op op) {
            long t0 = System.nanoTime();
            be.run(op);
            long dt = System.nanoTime() - t0;
            long[] v = time.computeIfAbsent(key(op), k -> new long[3]);
            v[0] += dt;
            v[1]++;
            if (op instanceof Op.MatMul m) v[2] += 2L * m.m() * m.n() * m.k();
        }
    }

    static double median(double[] xs) {
        double[] s = xs.clone();
        Arrays.sort(s);
        int n = s.length;
        return n == 0 ? Double.NaN : n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    }
}
