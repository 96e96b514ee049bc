package dev.crucible.qualify;

import dev.crucible.backend.Backend;
import dev.crucible.conformance.CaseResult;
import dev.crucible.conformance.ConformanceSuite;
import dev.crucible.conformance.GradCheck;
import dev.crucible.conformance.OpCase;
import dev.crucible.conformance.Report;
import dev.crucible.tensor.DType;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.function.Consumer;

/**
 * "Can this chip train our model?" Qualification of a backend in two parts:
 * <ol>
 *   <li>the conformance suite against the reference (every op forward and backward at aligned and odd shapes,
 *       NMSE, NaN/Inf, guard regions, determinism, finite differences), each case under a watchdog so an op
 *       that hangs is named and skipped instead of blocking;
 *   <li>a short training run against the reference ({@link TrainingCheck}).
 * </ol>
 * The verdict: {@link Verdict#CANNOT} when an op inference needs fails, hangs or is missing; {@link
 * Verdict#CAN_SERVE} when only training ops or the training run fail; {@link Verdict#CAN_TRAIN} otherwise.
 */
public final class Qualification {
    private Qualification() {
    }

    /**
     * @param seed      seed of every input (rerun with it to reproduce)
     * @param opTimeout an op that runs longer is a hang
     * @param ops       op families to check (empty: all); the verdict then covers only those
     * @param training  the training run, or null to skip it
     */
    public record Config(long seed, Duration opTimeout, List<String> ops, TrainingCheck.Config training) {
        public Config {
            ops = ops.stream().map(OpIO::family).toList();
        }

        public static Config defaults() {
            return new Config(1234, Duration.ofSeconds(20), List.of(), TrainingCheck.Config.tiny(25));
        }
    }

    public static QualifyReport run(Backend candidate, Backend reference, Config cfg, Consumer<String> progress) {
        Consumer<String> log = progress == null ? s -> { } : progress;
        long start = System.nanoTime();
        ConformanceSuite suite = new ConformanceSuite();
        if (!cfg.ops().isEmpty()) suite = suite.only(cfg.ops().toArray(String[]::new));
        WatchedBackend watched = new WatchedBackend(candidate);
        Set<String> hung = new LinkedHashSet<>();
        List<CaseResult> results = new ArrayList<>();
        for (OpCase c : suite.cases()) {
            CaseResult r;
            if (hung.contains(c.op())) {
                r = new CaseResult(candidate.name(), c.op(), c.shape(), c.dtype(), CaseResult.Check.REFERENCE,
                        Double.NaN, c.tolerance(), CaseResult.Status.FAIL, "not run: " + c.op() + " hung earlier");
            } else {
                ConformanceSuite s = suite;
                try {
                    r = Watchdog.call(List.of(watched), cfg.opTimeout(), () -> s.check(c, watched, reference, cfg.seed()));
                } catch (Watchdog.HangException e) {
                    hung.add(e.op());
                    r = new CaseResult(candidate.name(), c.op(), c.shape(), c.dtype(), CaseResult.Check.REFERENCE,
                            Double.NaN, c.tolerance(), CaseResult.Status.FAIL, "hung: " + e.getMessage());
                }
            }
            results.add(r);
            log.accept(r.toString());
        }
        for (GradCheck g : suite.gradChecks()) {
            CaseResult r;
            if (hung.contains(g.op())) {
                r = gradResult(candidate, g, "not run: " + g.op() + " hung earlier");
            } else {
                try {
                    r = Watchdog.call(List.of(watched), cfg.opTimeout(), () -> g.run(watched, reference, cfg.seed()));
                } catch (Watchdog.HangException e) {
                    hung.add(e.op());
                    r = gradResult(candidate, g, "hung: " + e.getMessage());
                } catch (RuntimeException e) {
                    r = gradResult(candidate, g, "threw " + e);
                }
            }
            results.add(r);
            log.accept(r.toString());
        }
        Report conformance = new Report(candidate.name(), reference.name(), cfg.seed(), results,
                Duration.ofNanos(System.nanoTime() - start));
        List<QualifyReport.OpVerdict> ops = QualifyReport.opVerdicts(conformance, hung);

        TrainingCheck.Result training = null;
        String trainingSkipped = null;
        if (cfg.training() == null) {
            trainingSkipped = "not requested";
        } else {
            List<String> blocking = ops.stream().filter(o -> o.status() == QualifyReport.OpStatus.HUNG
                    || o.status() == QualifyReport.OpStatus.UNSUPPORTED).map(o -> o.op() + " " + o.status().label()).toList();
            if (!blocking.isEmpty()) {
                trainingSkipped = "skipped: " + String.join(", ", blocking);
            } else {
                log.accept("training run: " + cfg.training().steps() + " steps on " + candidate.name() + " and " + reference.name());
                try {
                    training = Watchdog.call(List.of(watched), cfg.opTimeout(),
                            () -> TrainingCheck.run(watched, reference, cfg.training(), cfg.seed()));
                } catch (Watchdog.HangException e) {
                    trainingSkipped = "failed: " + e.getMessage();
                } catch (RuntimeException e) {
                    trainingSkipped = "failed: " + e.getClass().getSimpleName() + (e.getMessage() == null ? "" : ": " + e.getMessage());
                }
            }
        }
        return QualifyReport.of(candidate.name(), reference.name(), cfg, conformance, ops, training, trainingSkipped,
                Duration.ofNanos(System.nanoTime() - start));
    }

    private static CaseResult gradResult(Backend candidate, GradCheck g, String reason) {
        return new CaseResult(candidate.name(), g.op(), "fd " + g.shape(), DType.F32, CaseResult.Check.GRADIENT,
                Double.NaN, g.tolerance(), CaseResult.Status.FAIL, reason);
    }
}
