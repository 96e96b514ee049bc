package dev.crucible.qualify;

import dev.crucible.backend.Backend;
import dev.crucible.model.Llama;
import dev.crucible.model.LlamaConfig;
import dev.crucible.model.ParamLayout;
import dev.crucible.tensor.Rng;
import dev.crucible.train.AdamW;
import dev.crucible.train.OptimizerConfig;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * The end-to-end half of qualification: a short training run of a tiny model on a seeded synthetic batch stream,
 * step for step on the candidate and on the reference from the same initial weights, comparing the loss curve, the
 * gradients of the first step (same weights: only the backends differ) and the gradients of the last step.
 *
 * <p>The data is a noisy affine sequence (x' = 5x + 3 mod V, with one token in ten random), which a tiny model
 * learns in a few dozen steps, so the loss falls steeply and a backend that trains badly shows.
 */
public final class TrainingCheck {
    /**
     * @param model        the model trained
     * @param batch        sequences per step
     * @param seq          tokens per sequence
     * @param steps        optimizer steps
     * @param lossTol      largest |loss_b − loss_ref| / loss_ref at any step
     * @param firstGradTol largest relative L2 difference of a parameter's gradient at step 1
     * @param finalGradTol largest relative L2 difference of a parameter's gradient at the last step
     */
    public record Config(LlamaConfig model, int batch, int seq, int steps, double lossTol, double firstGradTol,
                         double finalGradTol) {
        public static Config tiny(int steps) {
            return new Config(new LlamaConfig(64, 32, 2, 4, 2, 64, 16, 10_000f, 1e-5f, false), 4, 16, steps, 1e-3,
                    1e-4, 1e-2);
        }
    }

    /**
     * @param losses     the candidate's loss per step
     * @param refLosses  the reference's
     * @param maxLossRel the largest relative loss difference, and {@code maxLossStep} the step (from 1) it was at
     * @param firstGrads gradients of step 1, candidate against reference
     * @param finalGrads gradients of the last step
     * @param problems   every way the run failed to track the reference; empty when it passed
     */
    public record Result(List<Double> losses, List<Double> refLosses, double maxLossRel, int maxLossStep,
                         List<ParityReport.GradDiff> firstGrads, List<ParityReport.GradDiff> finalGrads,
                         List<String> problems) {
        public boolean passed() { return problems.isEmpty(); }

        static double worst(List<ParityReport.GradDiff> g) {
            return g.stream().mapToDouble(ParityReport.GradDiff::relL2).max().orElse(Double.NaN);
        }

        static String worstName(List<ParityReport.GradDiff> g) {
            return g.stream().max(java.util.Comparator.comparingDouble(ParityReport.GradDiff::relL2))
                    .map(ParityReport.GradDiff::name).orElse("-");
        }
    }

    static final OptimizerConfig OPTIM = new OptimizerConfig(1e-2, 1e-3, 3, 0.9, 0.95, 1e-8, 0.1, 1.0);

    private TrainingCheck() {
    }

    /** Runs both; an exception from the candidate (an unsupported op, a hang through the watchdog) propagates. */
    public static Result run(Backend candidate, Backend reference, Config cfg, long seed) {
        List<String> problems = new ArrayList<>();
        List<Double> losses = new ArrayList<>(), refLosses = new ArrayList<>();
        List<ParityReport.GradDiff> first = List.of(), last = List.of();
        double maxRel = 0;
        int maxStep = 0;
        try (Llama m = new Llama(cfg.model(), candidate); AdamW opt = new AdamW(m);
             Llama r = new Llama(cfg.model(), reference); AdamW refOpt = new AdamW(r)) {
            m.initRandom(seed, 0.02);
            r.initRandom(seed, 0.02);
            int n = cfg.batch() * cfg.seq();
            int[] ids = new int[n], targets = new int[n];
            float scale = 1f / n;
            for (int step = 0; step < cfg.steps(); step++) {
                batch(cfg, seed, step, ids, targets);
                double lr = OPTIM.lrAt(step, cfg.steps());
                double loss = step(m, opt, ids, targets, cfg, scale), refLoss = step(r, refOpt, ids, targets, cfg, scale);
                losses.add(loss);
                refLosses.add(refLoss);
                double rel = Math.abs(loss - refLoss) / Math.max(Math.abs(refLoss), 1e-12);
                if (!Double.isFinite(loss)) {
                    problems.add("non-finite loss " + loss + " at step " + (step + 1) + " (reference " + fmt(refLoss) + ")");
                    break;
                }
                if (rel > maxRel) {
                    maxRel = rel;
                    maxStep = step + 1;
                }
                if (step == 0) first = compare(m, r);
                if (step == cfg.steps() - 1) last = compare(m, r);
                double norm = opt.gradNorm(), refNorm = refOpt.gradNorm();
                if (!Double.isFinite(norm)) {
                    problems.add("non-finite gradient norm at step " + (step + 1));
                    break;
                }
                opt.update(OPTIM, step + 1, lr, AdamW.clipCoef(norm, OPTIM.clip()));
                refOpt.update(OPTIM, step + 1, lr, AdamW.clipCoef(refNorm, OPTIM.clip()));
            }
        }
        if (maxRel > cfg.lossTol()) {
            problems.add(String.format("loss curve off by %.3g relative at step %d (loss %s vs reference %s; tolerance %.0e)",
                    maxRel, maxStep, fmt(losses.get(maxStep - 1)), fmt(refLosses.get(maxStep - 1)), cfg.lossTol()));
        }
        gradProblem(problems, "step-1 gradients", first, cfg.firstGradTol());
        gradProblem(problems, "final gradients", last, cfg.finalGradTol());
        if (problems.isEmpty() && refLosses.size() > 1 && !(refLosses.getLast() < refLosses.getFirst())) {
            problems.add("the reference's loss did not fall (" + fmt(refLosses.getFirst()) + " → " + fmt(refLosses.getLast())
                    + "): the check itself is broken");
        }
        return new Result(List.copyOf(losses), List.copyOf(refLosses), maxRel, maxStep, first, last, List.copyOf(problems));
    }

    private static void gradProblem(List<String> problems, String what, List<ParityReport.GradDiff> g, double tol) {
        if (g.isEmpty()) return;
        double w = Result.worst(g);
        if (w > tol || Double.isNaN(w)) {
            problems.add(String.format("%s off by %.3g relative L2 in %s (tolerance %.0e)", what, w, Result.worstName(g), tol));
        }
    }

    private static String fmt(double v) {
        return String.format("%.6f", v);
    }

    private static double step(Llama model, AdamW opt, int[] ids, int[] targets, Config cfg, float scale) {
        model.zeroGrads();
        return model.step(ids, targets, cfg.batch(), cfg.seq(), scale).mean();
    }

    /** The synthetic batch of a step: a pure function of (seed, step). */
    static void batch(Config cfg, long seed, int step, int[] ids, int[] targets) {
        int v = cfg.model().vocab(), t = cfg.seq();
        Rng rng = Rng.keyed(seed, Rng.key("qualify data"), step);
        for (int b = 0; b < cfg.batch(); b++) {
            int x = rng.nextInt(v);
            int[] row = new int[t + 1];
            for (int i = 0; i <= t; i++) {
                row[i] = x;
                x = rng.nextInt(10) == 0 ? rng.nextInt(v) : (5 * x + 3) % v;
            }
            System.arraycopy(row, 0, ids, b * t, t);
            System.arraycopy(row, 1, targets, b * t, t);
        }
    }

    /** Each parameter's gradient on the candidate against the reference's. */
    static List<ParityReport.GradDiff> compare(Llama m, Llama r) {
        List<ParityReport.GradDiff> out = new ArrayList<>();
        for (ParamLayout.Tensor t : m.layout().tensors()) {
            float[] g = new float[Math.toIntExact(t.size())], ref = new float[g.length];
            m.backend().copyOut(m.grad(t.name()), MemorySegment.ofArray(g));
            r.backend().copyOut(r.grad(t.name()), MemorySegment.ofArray(ref));
            out.add(ParityReport.GradDiff.of(t.name(), ref, g));
        }
        return out;
    }
}
