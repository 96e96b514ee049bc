package dev.crucible.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.model.Llama;
import dev.crucible.tensor.Rng;
import dev.crucible.train.data.DataLoader;
import dev.crucible.train.data.TokenDataset;
import dev.crucible.train.fault.Events;
import dev.crucible.train.fault.FaultPlan;
import dev.crucible.train.fault.Guards;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Consumer;

/**
 * The training loop: restore the newest good checkpoint, then repeat {step, guards, maybe evaluate, maybe
 * checkpoint}, then a final checkpoint. Model, optimizer, data loader and guards carry their own state, and all of
 * it is in every checkpoint, so a run stopped anywhere and resumed produces the same bits as one never stopped.
 *
 * <p>What the loop survives (DESIGN.md §6): crashes and hangs (the supervisor restarts the worker, which resumes
 * here), non-finite or spiking loss and gradients ({@link Guards}: skip the update, or roll back to the last good
 * checkpoint and skip the offending batches), silently wrong hardware (optionally every N steps the step is
 * replayed on a second backend and compared; a mismatch is reported and the step recomputed), corrupt checkpoints
 * (skipped on restore, never deleted), and failed checkpoint writes (reported; training goes on). Checkpoints are
 * written from a host snapshot on a background thread, so the loop is not blocked for the write.
 *
 * <p>Outputs in the run directory: {@code metrics.jsonl}, {@code events.jsonl} (the fault timeline),
 * {@code heartbeat} (rewritten every step, read by the supervisor's watchdog) and {@code checkpoints/}.
 */
public final class Trainer {

    /** Per-step figures handed to listeners. */
    public record StepStats(int step, int steps, double loss, double lr, double gradNorm, double tokensPerSec,
                            double elapsedSec, double etaSec, long tokens, boolean skipped) {}

    /** Observes the run (progress display, logs). Called on the training thread, except checkpointed/warning. */
    public interface Listener {
        default void started(int firstStep, int steps, long params, String resumedFrom) {}

        default void step(StepStats s) {}

        default void evaluated(int step, Map<String, Double> metrics) {}

        default void checkpointed(int step, Path dir) {}

        default void warning(String message) {}
    }

    /** Extra evaluation (e.g. task accuracy) run at every eval interval and at the end. */
    public interface Evaluator {
        Map<String, Double> evaluate(Llama model, int step);
    }

    /**
     * Optional parts of a run. {@code replayBackend}: where steps are replayed for the corruption check (null: off).
     * {@code initializer}: sets the starting weights of a fresh run (null: random initialisation).
     */
    public record Options(Listener listener, Evaluator evaluator, FaultPlan faults, FaultPlan.Actions faultActions,
                          Backend replayBackend, Consumer<Llama> initializer) {
        public static Options defaults() { return new Options(null, null, FaultPlan.NONE, FaultPlan.Actions.PROCESS, null, null); }

        public Options withListener(Listener l) { return new Options(l, evaluator, faults, faultActions, replayBackend, initializer); }

        public Options withEvaluator(Evaluator e) { return new Options(listener, e, faults, faultActions, replayBackend, initializer); }

        public Options withFaults(FaultPlan f, FaultPlan.Actions a) { return new Options(listener, evaluator, f, a, replayBackend, initializer); }

        public Options withReplay(Backend b) { return new Options(listener, evaluator, faults, faultActions, b, initializer); }

        public Options withInitializer(Consumer<Llama> i) { return new Options(listener, evaluator, faults, faultActions, replayBackend, i); }
    }

    /** What a run reports. {@code stopped}: ended early on request, with a checkpoint of the last finished step. */
    public record Result(int steps, double finalLoss, Map<String, Double> finalEval, Path lastCheckpoint, double seconds,
                         boolean stopped) {}

    private static final ObjectMapper JSON = new ObjectMapper();

    private final TrainConfig cfg;
    private final Backend backend;
    private final TokenDataset data;
    private final Path runDir;
    private final Path tokenizerJson;
    private final Options opts;
    private final Listener listener;
    private final Events events;
    private final FaultPlan faults;
    private volatile boolean stopRequested;

    // Loop state that checkpoints carry besides the model, optimizer and loader.
    private long tokens;
    private final TreeSet<Integer> skipSteps = new TreeSet<>();
    private final Guards guards;

    private final ExecutorService writer = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(r, "checkpoint-writer");
        t.setDaemon(true);
        return t;
    });
    private Future<Path> pendingWrite;

    public Trainer(TrainConfig cfg, Backend backend, TokenDataset data, Path runDir, Path tokenizerJson, Options options) {
        this.cfg = cfg;
        this.backend = backend;
        this.data = data;
        this.runDir = runDir;
        this.tokenizerJson = tokenizerJson;
        this.opts = options;
        this.listener = options.listener() == null ? new Listener() {} : options.listener();
        this.faults = options.faults() == null ? FaultPlan.NONE : options.faults();
        this.events = new Events(runDir, "worker");
        this.guards = new Guards(cfg.guards());
        if (data.vocabSize() > cfg.model().vocab()) {
            throw new IllegalArgumentException("the data was tokenized with a vocabulary of " + data.vocabSize()
                    + " tokens but model.vocab is " + cfg.model().vocab());
        }
    }

    /** Shorthand for the common case. */
    public Trainer(TrainConfig cfg, Backend backend, TokenDataset data, Path runDir, Path tokenizerJson,
                   Listener listener, Evaluator evaluator) {
        this(cfg, backend, data, runDir, tokenizerJson, Options.defaults().withListener(listener).withEvaluator(evaluator));
    }

    public Path checkpointDir() { return runDir.resolve("checkpoints"); }

    /** Asks the loop to finish the current step, write a checkpoint and return (safe from any thread). */
    public void requestStop() { stopRequested = true; }

    public Result run() throws IOException {
        Files.createDirectories(runDir);
        long t0 = System.nanoTime();
        Checkpoint.cleanTemporary(checkpointDir());
        try (Llama model = new Llama(cfg.model(), backend); AdamW opt = new AdamW(model);
             BufferedWriter metrics = Files.newBufferedWriter(runDir.resolve("metrics.jsonl"),
                     StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
            DataLoader loader = new DataLoader(data, cfg.seqLen(), cfg.batch(), cfg.seed(), cfg.valFraction());
            Path restored = restore(model, opt, loader);
            int start = restored == null ? 0 : Checkpoint.state(restored).path("step").asInt();
            if (restored == null) {
                if (opts.initializer() != null) opts.initializer().accept(model);
                else model.initRandom(cfg.seed(), 0.02);
            }
            events.log(restored == null ? "start" : "resume", start, restored == null ? null : restored.toString(), null);
            listener.started(start, cfg.steps(), model.layout().total(), restored == null ? null : restored.toString());

            int B = cfg.batch(), T = cfg.seqLen(), accum = cfg.gradAccum();
            int[][] ids = new int[accum][B * T], targets = new int[accum][B * T];
            float gradScale = 1f / ((float) B * T * accum);
            double lastLoss = Double.NaN;
            long windowStart = System.nanoTime();
            int windowSteps = 0;
            Path lastCkpt = restored;
            int lastCkptStep = start;
            Map<String, Double> lastEval = Map.of();
            Replay replay = opts.replayBackend() == null || cfg.replayInterval() == 0 ? null : new Replay(opts.replayBackend());
            try {
                int step = start;
                while (step < cfg.steps()) {
                    if (stopRequested) {
                        if (lastCkptStep != step) lastCkpt = checkpointNow(model, opt, loader, step, lastLoss);
                        events.log("stopped", step, "stop requested", "final checkpoint written");
                        return new Result(step, lastLoss, lastEval, lastCkpt, (System.nanoTime() - t0) / 1e9, true);
                    }
                    int done = step + 1;
                    heartbeat(done);
                    if (faults.due(FaultPlan.Kind.KILL, done, 0) != null) {
                        events.log("fault_injected", done, "kill", "worker dies");
                        opts.faultActions().die();
                    }
                    if (faults.due(FaultPlan.Kind.HANG, done, 0) != null) {
                        events.log("fault_injected", done, "hang", "worker stops making progress");
                        opts.faultActions().hang();
                    }
                    if (skipSteps.contains(done)) {
                        // Rolled back past this step: its batches caused a fault, so they are consumed unused.
                        for (int micro = 0; micro < accum; micro++) loader.nextBatch(ids[micro], targets[micro]);
                        tokens += cfg.tokensPerStep();
                        events.log("window_skipped", done, "batches of step " + done + " skipped after rollback", null);
                        step++;
                        continue;
                    }

                    model.zeroGrads();
                    for (int micro = 0; micro < accum; micro++) {
                        loader.nextBatch(ids[micro], targets[micro]);
                        if (faults.due(FaultPlan.Kind.KILL, done, micro + 1) != null) {
                            events.log("fault_injected", done, "kill in micro-batch " + (micro + 1) + " of " + accum, "worker dies");
                            opts.faultActions().die();
                        }
                        if (faults.due(FaultPlan.Kind.SPIKE, done, 0) != null) {
                            corruptBatch(targets[micro], done);
                            events.log("fault_injected", done, "spike: batch targets replaced by random tokens", null);
                        }
                    }
                    Llama.Loss loss = forwardBackward(model, ids, targets, gradScale);
                    injectGradientFaults(model, done);
                    double norm = opt.gradNorm();

                    boolean skip = false;
                    if (replay != null && done % cfg.replayInterval() == 0) {
                        ReplayOutcome r = replay.check(model, ids, targets, gradScale, loss.mean(), done);
                        if (r.recomputed) {
                            loss = r.loss;
                            norm = opt.gradNorm();
                        }
                        skip = r.skip;
                    }

                    Guards.Finding f = skip ? null : guards.check(loss.mean(), norm);
                    if (f != null) {
                        boolean canRollback = f.policy() == Guards.Policy.ROLLBACK && lastCkpt != null;
                        events.log(f.kind(), done, String.format("value %.6g, z %.2f", f.value(), f.z()),
                                canRollback ? "rollback" : "skip update", "value", f.value());
                        listener.warning(String.format("step %d: %s (value %.4g); %s", done, f.kind(), f.value(),
                                canRollback ? "rolling back to the last good checkpoint" : "update skipped"));
                        if (canRollback) {
                            skipSteps.add(done);
                            awaitWrite();
                            Path back = restore(model, opt, loader);
                            if (back != null) {
                                step = Checkpoint.state(back).path("step").asInt();
                                skipSteps.add(done); // restore() read the checkpoint's set; keep this one too
                                lastCkpt = back;
                                lastCkptStep = step;
                                events.log("rolled_back", step, back.toString(), "replaying; step " + done + " will be skipped");
                                continue;
                            }
                        }
                        skip = true;
                    }
                    double lr = cfg.optim().lrAt(step, cfg.steps());
                    if (!skip) {
                        opt.update(cfg.optim(), done, lr, AdamW.clipCoef(norm, cfg.optim().clip()));
                        guards.accept(loss.mean(), norm);
                    }
                    tokens += cfg.tokensPerStep();
                    lastLoss = loss.mean();
                    windowSteps++;
                    double now = (System.nanoTime() - windowStart) / 1e9;
                    double tps = windowSteps * cfg.tokensPerStep() / Math.max(now, 1e-9);
                    double elapsed = (System.nanoTime() - t0) / 1e9;
                    double eta = (cfg.steps() - done) * (now / windowSteps);
                    listener.step(new StepStats(done, cfg.steps(), lastLoss, lr, norm, tps, elapsed, eta, tokens, skip));
                    if (done % cfg.logInterval() == 0 || done == cfg.steps()) {
                        writeLine(metrics, Map.of("type", "train", "step", done, "loss", lastLoss, "lr", lr, "grad_norm", norm,
                                "tokens_per_s", tps, "elapsed_s", elapsed, "tokens", tokens, "step_s", now / windowSteps));
                        windowStart = System.nanoTime();
                        windowSteps = 0;
                    }
                    boolean last = done == cfg.steps();
                    if ((cfg.evalInterval() > 0 && done % cfg.evalInterval() == 0) || last) {
                        lastEval = evaluate(model, loader, done);
                        Map<String, Object> line = new LinkedHashMap<>();
                        line.put("type", "eval");
                        line.put("step", done);
                        line.putAll(lastEval);
                        writeLine(metrics, line);
                        listener.evaluated(done, lastEval);
                        windowStart = System.nanoTime();
                        windowSteps = 0;
                    }
                    step = done;
                    if ((cfg.checkpointInterval() > 0 && done % cfg.checkpointInterval() == 0) || last) {
                        submitCheckpoint(model, opt, loader, done, lastLoss);
                        lastCkpt = checkpointDir().resolve(Checkpoint.dirName(done));
                        lastCkptStep = done;
                    }
                }
                Path fin = awaitWrite();
                if (fin != null) lastCkpt = fin;
                events.log("finished", cfg.steps(), null, null, "loss", lastLoss);
                return new Result(cfg.steps(), lastLoss, lastEval, lastCkpt, (System.nanoTime() - t0) / 1e9, false);
            } finally {
                awaitWrite();
                writer.shutdown();
                if (replay != null) replay.close();
            }
        }
    }

    private Llama.Loss forwardBackward(Llama model, int[][] ids, int[][] targets, float gradScale) {
        double sum = 0;
        int count = 0;
        for (int micro = 0; micro < ids.length; micro++) {
            Llama.Loss l = model.step(ids[micro], targets[micro], cfg.batch(), cfg.seqLen(), gradScale);
            sum += l.sum();
            count += l.count();
        }
        return new Llama.Loss(sum, count);
    }

    /** The newest good checkpoint into model, optimizer, loader and loop state; null (and nothing changed) if none. */
    private Path restore(Llama model, AdamW opt, DataLoader loader) {
        Checkpoint.Found found = Checkpoint.latestGood(checkpointDir());
        for (String s : found.skipped()) {
            listener.warning("skipping bad checkpoint: " + s);
            events.log("bad_checkpoint", null, s, "skipped (left on disk)");
        }
        if (found.dir() == null) return null;
        JsonNode st = Checkpoint.state(found.dir());
        Checkpoint.load(found.dir(), model, opt);
        tokens = st.path("tokens").asLong();
        loader.seek(new DataLoader.Position(st.path("data").path("epoch").asLong(), st.path("data").path("cursor").asInt()));
        skipSteps.clear();
        st.path("skip_steps").forEach(n -> skipSteps.add(n.asInt()));
        guards.restore(doubles(st.path("guards").path("loss")), doubles(st.path("guards").path("grad_norm")));
        return found.dir();
    }

    private static double[] doubles(JsonNode arr) {
        double[] out = new double[arr.size()];
        for (int i = 0; i < out.length; i++) out[i] = arr.get(i).asDouble();
        return out;
    }

    private Map<String, Object> loopState(DataLoader loader, double loss) {
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("tokens", tokens);
        state.put("loss", loss);
        DataLoader.Position p = loader.position();
        state.put("data", Map.of("epoch", p.epoch(), "cursor", p.cursor()));
        state.put("skip_steps", new ArrayList<>(skipSteps));
        List<double[]> g = guards.state();
        state.put("guards", Map.of("loss", g.get(0), "grad_norm", g.get(1)));
        state.put("seed", cfg.seed());
        state.put("config", cfg.toNestedMap());
        return state;
    }

    /** Snapshots now and writes in the background (after the previous write finishes). */
    private void submitCheckpoint(Llama model, AdamW opt, DataLoader loader, int step, double loss) {
        awaitWrite();
        Checkpoint.Snapshot snap = Checkpoint.snapshot(step, model, opt, loopState(loader, loss), tokenizerJson);
        pendingWrite = writer.submit(() -> {
            try (snap) {
                Path dir = Checkpoint.write(checkpointDir(), snap, this::writeHook);
                prune();
                listener.checkpointed(step, dir);
                events.log("checkpoint", step, dir.getFileName().toString(), null);
                afterWriteFaults(dir, step);
                return dir;
            }
        });
    }

    private Path checkpointNow(Llama model, AdamW opt, DataLoader loader, int step, double loss) {
        submitCheckpoint(model, opt, loader, step, loss);
        Path p = awaitWrite();
        return p == null ? checkpointDir().resolve(Checkpoint.dirName(step)) : p;
    }

    /** Waits for the background write; a failed write is reported, never fatal (the previous checkpoints stand). */
    private Path awaitWrite() {
        if (pendingWrite == null) return null;
        Future<Path> f = pendingWrite;
        pendingWrite = null;
        try {
            return f.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return null;
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            if (c instanceof FaultPlan.Crash crash) throw crash; // a simulated kill on the writer thread
            String msg = c.getMessage() == null ? c.toString() : c.getMessage();
            listener.warning("checkpoint write failed (training continues; earlier checkpoints are intact): " + msg);
            events.log("checkpoint_failed", null, msg, "continue");
            return null;
        }
    }

    private void writeHook(int step, String file) throws IOException {
        if (file.equals(Checkpoint.MODEL) && faults.due(FaultPlan.Kind.CKPT_KILL, step, 0) != null) {
            events.log("fault_injected", step, "kill while writing the checkpoint", "worker dies");
            opts.faultActions().die();
        }
        if (file.equals(Checkpoint.MODEL) && faults.due(FaultPlan.Kind.DISK_FULL, step, 0) != null) {
            events.log("fault_injected", step, "disk full", null);
            throw new IOException("No space left on device (injected)");
        }
        if (file.equals(Checkpoint.MODEL) && faults.due(FaultPlan.Kind.READONLY, step, 0) != null) {
            events.log("fault_injected", step, "read-only file system", null);
            throw new java.nio.file.AccessDeniedException(checkpointDir().toString(), null, "Read-only file system (injected)");
        }
    }

    private void afterWriteFaults(Path dir, int step) throws IOException {
        if (faults.due(FaultPlan.Kind.CORRUPT_CKPT, step, 0) != null) {
            Path f = dir.resolve(Checkpoint.MODEL);
            byte[] b = Files.readAllBytes(f);
            b[b.length / 2] ^= 0x10;
            Files.write(f, b);
            events.log("fault_injected", step, "flipped a bit in " + f, "worker dies");
            opts.faultActions().die();
        }
        if (faults.due(FaultPlan.Kind.TRUNCATE_CKPT, step, 0) != null) {
            Path f = dir.resolve(Checkpoint.OPTIMIZER);
            try (var ch = java.nio.channels.FileChannel.open(f, StandardOpenOption.WRITE)) {
                ch.truncate(ch.size() / 2);
            }
            events.log("fault_injected", step, "truncated " + f, "worker dies");
            opts.faultActions().die();
        }
        if (faults.due(FaultPlan.Kind.DELETE_CKPT, step, 0) != null) {
            Files.deleteIfExists(dir.resolve(Checkpoint.STATE));
            events.log("fault_injected", step, "deleted " + dir.resolve(Checkpoint.STATE), "worker dies");
            opts.faultActions().die();
        }
    }

    private void injectGradientFaults(Llama model, int step) {
        boolean nan = faults.due(FaultPlan.Kind.NAN, step, 0) != null;
        boolean inf = !nan && faults.due(FaultPlan.Kind.INF, step, 0) != null;
        if (nan || inf) {
            float v = nan ? Float.NaN : Float.POSITIVE_INFINITY;
            long at = Rng.keyed(cfg.seed(), Rng.key("fault.grad"), step).nextLong(model.layout().total());
            backend.copyIn(model.grads().slice(at, 1), MemorySegment.ofArray(new float[]{v}));
            events.log("fault_injected", step, (nan ? "NaN" : "Inf") + " written into gradient element " + at, null);
        }
    }

    private void corruptBatch(int[] targets, int step) {
        Rng r = Rng.keyed(cfg.seed(), Rng.key("fault.spike"), step);
        for (int i = 0; i < targets.length; i++) targets[i] = r.nextInt(data.vocabSize());
    }

    private void heartbeat(int step) {
        try {
            Files.writeString(runDir.resolve("heartbeat"), step + " " + System.currentTimeMillis() + "\n");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private Map<String, Double> evaluate(Llama model, DataLoader loader, int step) {
        int B = cfg.batch(), T = cfg.seqLen();
        int[] ids = new int[B * T], targets = new int[B * T];
        double sum = 0;
        long count = 0;
        int batches = Math.min(cfg.evalBatches(), Math.max(1, loader.valBatches()));
        for (int i = 0; i < batches; i++) {
            loader.valBatch(i, ids, targets);
            Llama.Loss l = model.step(ids, targets, B, T, 0f);
            sum += l.sum();
            count += l.count();
        }
        Map<String, Double> out = new LinkedHashMap<>();
        out.put("val_loss", sum / Math.max(1, count));
        if (opts.evaluator() != null) out.putAll(opts.evaluator().evaluate(model, step));
        return out;
    }

    /** Keeps the newest {@code keep_checkpoints} plus milestones; runs only after a newer checkpoint is complete. */
    private void prune() throws IOException {
        List<Path> all = Checkpoint.list(checkpointDir());
        int kept = 0;
        for (Path p : all) {
            int step = Integer.parseInt(p.getFileName().toString().substring("step-".length()));
            boolean milestone = cfg.milestoneInterval() > 0 && step % cfg.milestoneInterval() == 0;
            if (kept < cfg.keepCheckpoints()) kept++;
            else if (!milestone) Checkpoint.deleteTree(p);
        }
    }

    private static void writeLine(BufferedWriter w, Map<String, ?> fields) {
        try {
            w.write(JSON.writeValueAsString(fields));
            w.newLine();
            w.flush();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private record ReplayOutcome(boolean recomputed, boolean skip, Llama.Loss loss) {}

    /**
     * The silent-corruption check: the same step on a second backend from the same weights. Loss and gradients
     * must agree within {@code replay.tolerance} (relative); otherwise the step is recomputed on the primary and
     * compared again, and if it still disagrees its update is skipped.
     */
    private final class Replay implements AutoCloseable {
        private final Llama twin;

        Replay(Backend b) {
            twin = new Llama(cfg.model(), b);
        }

        ReplayOutcome check(Llama model, int[][] ids, int[][] targets, float gradScale, double loss, int step) {
            float[] p = model.read(model.params());
            twin.backend().copyIn(twin.params(), MemorySegment.ofArray(p));
            twin.zeroGrads();
            double sum = 0;
            int count = 0;
            for (int micro = 0; micro < ids.length; micro++) {
                Llama.Loss l = twin.step(ids[micro], targets[micro], cfg.batch(), cfg.seqLen(), gradScale);
                sum += l.sum();
                count += l.count();
            }
            double refLoss = sum / Math.max(1, count);
            float[] refGrad = twin.read(twin.grads());
            double diff = mismatch(loss, model.read(model.grads()), refLoss, refGrad);
            if (diff <= cfg.replayTolerance()) return new ReplayOutcome(false, false, null);
            events.log("suspected_corruption", step, String.format("%s vs %s: relative difference %.3g (loss %.6g vs %.6g)",
                    backend.name(), twin.backend().name(), diff, loss, refLoss), "recompute step", "difference", diff);
            listener.warning(String.format("step %d: %s disagrees with %s (relative difference %.3g): suspected hardware corruption; recomputing",
                    step, backend.name(), twin.backend().name(), diff));
            model.zeroGrads();
            Llama.Loss again = forwardBackward(model, ids, targets, gradScale);
            double diff2 = mismatch(again.mean(), model.read(model.grads()), refLoss, refGrad);
            boolean ok = diff2 <= cfg.replayTolerance();
            events.log(ok ? "recomputed" : "persistent_mismatch", step, String.format("relative difference %.3g", diff2),
                    ok ? "continue" : "skip update", "difference", diff2);
            return new ReplayOutcome(true, !ok, again);
        }

        private double mismatch(double loss, float[] grad, double refLoss, float[] refGrad) {
            if (!Double.isFinite(loss)) return Double.POSITIVE_INFINITY;
            double num = 0, den = 0;
            for (int i = 0; i < grad.length; i++) {
                double d = (double) grad[i] - refGrad[i];
                num += d * d;
                den += (double) refGrad[i] * refGrad[i];
            }
            double g = Math.sqrt(num / Math.max(den, 1e-30));
            if (Double.isNaN(g)) g = Double.POSITIVE_INFINITY;
            return Math.max(g, Math.abs(loss - refLoss) / Math.max(Math.abs(refLoss), 1e-12));
        }

        @Override
        public void close() { twin.close(); }
    }
}
