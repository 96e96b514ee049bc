package dev.crucible.qualify;

import dev.crucible.backend.Backend;
import dev.crucible.backend.UnsupportedOpException;
import dev.crucible.model.Llama;
import dev.crucible.model.LlamaConfig;
import dev.crucible.model.ParamLayout;
import dev.crucible.tensor.Rng;
import dev.crucible.train.AdamW;
import dev.crucible.train.OptimizerConfig;

import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * Cross-backend parity of one training step: the same weights and the same batch on backends a and b, every op's
 * outputs compared (see {@link PairBackend}). Two passes: free-running (how far b's step drifts, op by op, and the
 * gradients it ends with) and lockstep (each op on identical inputs: which op is at fault). The step is the
 * trainer's: zero grads, forward, cross-entropy, backward, grad norm, AdamW update.
 */
public final class Parity {
    private Parity() {
    }

    /**
     * @param model     the model shape (random init from the seed unless an initializer loads weights)
     * @param batch     sequences in the batch
     * @param seq       tokens per sequence
     * @param seed      seed of the initial weights and of the random batch
     * @param tolerance      the largest NMSE of an op output in the free-running step that is not a divergence
     * @param localTolerance the largest NMSE of an op's own error (lockstep, identical inputs): tighter, since no
     *                       error flows in from earlier ops
     * @param opTimeout      an op running longer than this is a hang
     */
    public record Config(LlamaConfig model, int batch, int seq, long seed, double tolerance, double localTolerance,
                         Duration opTimeout) {
        public Config {
            if (batch <= 0 || seq <= 0) throw new IllegalArgumentException("batch and sequence length must be positive");
            if (seq > model.context()) throw new IllegalArgumentException("sequence length " + seq + " exceeds the model context " + model.context());
            if (!(tolerance >= 0)) throw new IllegalArgumentException("tolerance must be >= 0, got " + tolerance);
            if (!(localTolerance >= 0)) throw new IllegalArgumentException("local tolerance must be >= 0, got " + localTolerance);
        }
    }

    /**
     * Default tolerance of the free-running step. The CPU backend against the reference stays under ~1e-13 in the
     * forward and backward passes and ~1e-9 in the AdamW update (which divides by √v, amplifying differences in
     * tiny gradients); a 10-bit-mantissa matmul is ~1e-7 from its first use on.
     */
    public static final double TOLERANCE = 1e-8;

    /**
     * Default tolerance of one op on identical inputs: f32 against double rounding is ~1e-14 here, a 13-bit matmul
     * ~1e-9, a 10-bit one ~1e-7.
     */
    public static final double LOCAL_TOLERANCE = 1e-10;

    static final OptimizerConfig OPTIM = new OptimizerConfig(1e-3, 0, 0, 0.9, 0.95, 1e-8, 0.1, 1.0);

    /** Runs both passes; {@code init} loads the weights (null: random init from the seed). */
    public static ParityReport run(Backend a, Backend b, Config cfg, Consumer<Llama> init) {
        WatchedBackend wa = new WatchedBackend(a), wb = new WatchedBackend(b);
        long start = System.nanoTime();
        Pass free = pass(wa, wb, cfg, init, false);
        Pass lock = free.stopped == null ? pass(wa, wb, cfg, init, true) : new Pass(List.of(), List.of(), null);
        return new ParityReport(a.name(), b.name(), cfg, free.diffs, lock.diffs, free.grads, free.stopped,
                Duration.ofNanos(System.nanoTime() - start));
    }

    private record Pass(List<OpDiff> diffs, List<ParityReport.GradDiff> grads, String stopped) {}

    private static Pass pass(WatchedBackend wa, WatchedBackend wb, Config cfg, Consumer<Llama> init, boolean lockstep) {
        StepLabels labels = StepLabels.training(cfg.model());
        PairBackend pair = new PairBackend(wa, wb, lockstep, labels);
        List<ParityReport.GradDiff> grads = new ArrayList<>();
        try {
            Watchdog.call(List.of(wa, wb), cfg.opTimeout(), () -> {
                try (Llama model = new Llama(cfg.model(), pair); AdamW opt = new AdamW(model)) {
                    if (init != null) init.accept(model);
                    else model.initRandom(cfg.seed(), 0.02);
                    int n = cfg.batch() * cfg.seq();
                    int[] ids = new int[n], targets = new int[n];
                    Rng rng = Rng.keyed(cfg.seed(), Rng.key("parity batch"));
                    for (int i = 0; i < n; i++) ids[i] = rng.nextInt(cfg.model().vocab());
                    for (int i = 0; i < n; i++) targets[i] = (i + 1) % cfg.seq() == 0 ? rng.nextInt(cfg.model().vocab()) : ids[i + 1];
                    pair.startRecording();
                    model.zeroGrads();
                    model.step(ids, targets, cfg.batch(), cfg.seq(), 1f / n);
                    double norm = opt.gradNorm();
                    if (!lockstep) grads.addAll(gradients(model, pair));
                    opt.update(OPTIM, 1, OPTIM.lr(), AdamW.clipCoef(norm, OPTIM.clip()));
                }
                return null;
            });
            return new Pass(List.copyOf(pair.diffs()), grads, null);
        } catch (UnsupportedOpException e) {
            return new Pass(List.copyOf(pair.diffs()), grads, e.getMessage());
        } catch (Watchdog.HangException e) {
            StepLabels.Label l = pair.current();
            List<OpDiff> diffs = new ArrayList<>(pair.diffs());
            String where = l == null ? e.op() : l.phase() + " " + l.layer() + " " + e.op() + " " + l.what();
            diffs.add(new OpDiff(pair.index(), l == null ? "?" : l.phase(), l == null ? "?" : l.layer(),
                    l == null ? e.op() : l.what(), e.op(), l == null ? "" : l.tensor(0), 0, Double.NaN, Double.NaN, 0, 0, 0,
                    "hung on " + e.backend() + " (no return within " + Watchdog.seconds(e.timeout()) + ")"));
            return new Pass(diffs, grads, "op #" + pair.index() + " (" + where + ") hung on " + e.backend()
                    + ": no return within " + Watchdog.seconds(e.timeout()));
        }
    }

    /** Relative L2 difference of every parameter's gradient, b against a. */
    private static List<ParityReport.GradDiff> gradients(Llama model, PairBackend pair) {
        List<ParityReport.GradDiff> out = new ArrayList<>();
        for (ParamLayout.Tensor t : model.layout().tensors()) {
            float[] ga = new float[Math.toIntExact(t.size())], gb = new float[ga.length];
            pair.copyOut(model.grad(t.name()), MemorySegment.ofArray(ga));
            pair.copyOutB(model.grad(t.name()), MemorySegment.ofArray(gb));
            out.add(ParityReport.GradDiff.of(t.name(), ga, gb));
        }
        return out;
    }
}
