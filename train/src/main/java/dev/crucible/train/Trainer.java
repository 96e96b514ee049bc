package dev.crucible.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.model.Llama;
import dev.crucible.train.data.DataLoader;
import dev.crucible.train.data.TokenDataset;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The training loop and nothing else: restore the newest good checkpoint, then repeat {step, maybe evaluate, maybe
 * checkpoint}, then a final checkpoint. Model, optimizer and data loader carry their own state; the trainer only
 * sequences them. Metrics go to {@code metrics.jsonl} in the run directory, one JSON object per line.
 */
public final class Trainer {

    /** Per-step figures handed to listeners. */
    public record StepStats(int step, int steps, double loss, double lr, double gradNorm, double tokensPerSec,
                            double elapsedSec, double etaSec, long tokens, boolean skipped) {}

    /** Observes the run (progress display, logs). All methods are called on the training thread. */
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

    /** What a finished run reports. */
    public record Result(int steps, double finalLoss, Map<String, Double> finalEval, Path lastCheckpoint, double seconds) {}

    private static final ObjectMapper JSON = new ObjectMapper();

    private final TrainConfig cfg;
    private final Backend backend;
    private final TokenDataset data;
    private final Path runDir;
    private final Path tokenizerJson;
    private final Listener listener;
    private final Evaluator evaluator;

    public Trainer(TrainConfig cfg, Backend backend, TokenDataset data, Path runDir, Path tokenizerJson,
                   Listener listener, Evaluator evaluator) {
        this.cfg = cfg;
        this.backend = backend;
        this.data = data;
        this.runDir = runDir;
        this.tokenizerJson = tokenizerJson;
        this.listener = listener == null ? new Listener() {} : listener;
        this.evaluator = evaluator;
        if (data.vocabSize() > cfg.model().vocab()) {
            throw new IllegalArgumentException("the data was tokenized with a vocabulary of " + data.vocabSize()
                    + " tokens but model.vocab is " + cfg.model().vocab());
        }
    }

    public Path checkpointDir() { return runDir.resolve("checkpoints"); }

    public Result run() throws IOException {
        Files.createDirectories(runDir);
        long t0 = System.nanoTime();
        try (Llama model = new Llama(cfg.model(), backend); AdamW opt = new AdamW(model);
             BufferedWriter metrics = Files.newBufferedWriter(runDir.resolve("metrics.jsonl"),
                     StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
            DataLoader loader = new DataLoader(data, cfg.seqLen(), cfg.batch(), cfg.seed(), cfg.valFraction());
            int start = 0;
            long tokens = 0;
            Checkpoint.Found found = Checkpoint.latestGood(checkpointDir());
            found.skipped().forEach(s -> listener.warning("skipping bad checkpoint: " + s));
            if (found.dir() != null) {
                JsonNode st = Checkpoint.state(found.dir());
                Checkpoint.load(found.dir(), model, opt);
                start = st.path("step").asInt();
                tokens = st.path("tokens").asLong();
                loader.seek(new DataLoader.Position(st.path("data").path("epoch").asLong(), st.path("data").path("cursor").asInt()));
            } else {
                model.initRandom(cfg.seed(), 0.02);
            }
            listener.started(start, cfg.steps(), model.layout().total(), found.dir() == null ? null : found.dir().toString());

            int B = cfg.batch(), T = cfg.seqLen();
            int[] ids = new int[B * T], targets = new int[B * T];
            float gradScale = 1f / ((float) B * T * cfg.gradAccum());
            double lastLoss = Double.NaN;
            long windowStart = System.nanoTime();
            int windowSteps = 0;
            Path lastCkpt = found.dir();
            Map<String, Double> lastEval = Map.of();
            for (int step = start; step < cfg.steps(); step++) {
                model.zeroGrads();
                double lossSum = 0;
                long count = 0;
                for (int micro = 0; micro < cfg.gradAccum(); micro++) {
                    loader.nextBatch(ids, targets);
                    Llama.Loss l = model.step(ids, targets, B, T, gradScale);
                    lossSum += l.sum();
                    count += l.count();
                }
                double loss = lossSum / Math.max(1, count);
                double norm = opt.gradNorm();
                double lr = cfg.optim().lrAt(step, cfg.steps());
                boolean skip = !Double.isFinite(loss) || !Double.isFinite(norm);
                if (skip) {
                    listener.warning("step " + (step + 1) + ": non-finite loss or gradient (loss " + loss + ", grad norm " + norm + "); update skipped");
                } else {
                    opt.update(cfg.optim(), step + 1, lr, AdamW.clipCoef(norm, cfg.optim().clip()));
                }
                tokens += cfg.tokensPerStep();
                lastLoss = loss;
                windowSteps++;
                double now = (System.nanoTime() - windowStart) / 1e9;
                double tps = windowSteps * cfg.tokensPerStep() / Math.max(now, 1e-9);
                double elapsed = (System.nanoTime() - t0) / 1e9;
                int done = step + 1;
                double eta = (cfg.steps() - done) * (now / windowSteps);
                StepStats s = new StepStats(done, cfg.steps(), loss, lr, norm, tps, elapsed, eta, tokens, skip);
                listener.step(s);
                if (done % cfg.logInterval() == 0 || done == cfg.steps()) {
                    writeLine(metrics, Map.of("type", "train", "step", done, "loss", loss, "lr", lr, "grad_norm", norm,
                            "tokens_per_s", tps, "elapsed_s", elapsed, "tokens", tokens));
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
                if ((cfg.checkpointInterval() > 0 && done % cfg.checkpointInterval() == 0) || last) {
                    Map<String, Object> state = new LinkedHashMap<>();
                    state.put("tokens", tokens);
                    state.put("loss", loss);
                    DataLoader.Position p = loader.position();
                    state.put("data", Map.of("epoch", p.epoch(), "cursor", p.cursor()));
                    state.put("config", cfg.toNestedMap());
                    lastCkpt = Checkpoint.save(checkpointDir(), done, model, opt, state, tokenizerJson);
                    prune();
                    listener.checkpointed(done, lastCkpt);
                    windowStart = System.nanoTime();
                    windowSteps = 0;
                }
            }
            return new Result(cfg.steps(), lastLoss, lastEval, lastCkpt, (System.nanoTime() - t0) / 1e9);
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
        if (evaluator != null) out.putAll(evaluator.evaluate(model, step));
        return out;
    }

    /** Keeps the newest {@code keep_checkpoints}; older ones are deleted only after a newer one is complete. */
    private void prune() throws IOException {
        List<Path> all = Checkpoint.list(checkpointDir());
        for (int i = cfg.keepCheckpoints(); i < all.size(); i++) Checkpoint.deleteTree(all.get(i));
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
}
