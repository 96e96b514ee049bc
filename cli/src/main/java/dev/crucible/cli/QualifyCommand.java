package dev.crucible.cli;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import dev.crucible.qualify.Qualification;
import dev.crucible.qualify.QualifyReport;
import dev.crucible.qualify.TrainingCheck;
import dev.crucible.qualify.Verdict;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "qualify", mixinStandardHelpOptions = true, sortOptions = false,
        header = "Can this backend train or serve? Op conformance plus a short training run, with a verdict.",
        description = {"Can this backend train our model? Runs the op conformance suite against the reference backend",
                "(forward and backward ops, aligned and odd shapes, NMSE, NaN/Inf, guard regions, determinism, finite",
                "differences), each op under a timeout, then a short training run of a tiny model on the backend and on the",
                "reference, comparing the loss curve and the gradients. Prints a verdict per op and overall:",
                "CAN_TRAIN, CAN_SERVE (inference ops pass, training does not) or CANNOT.",
                "Exit code 0 when the verdict meets --require, 1 when it does not, 2 for a usage error.",
                "Try a simulated broken chip: --backend defective:matmul-mantissa=10 (see docs/qualify.md)."})
final class QualifyCommand implements Callable<Integer> {
    @Option(names = "--backend", paramLabel = "NAME", required = true,
            description = "The backend to qualify, e.g. cpu, or defective:SPEC.")
    String backend;

    @Option(names = "--reference", paramLabel = "NAME", defaultValue = "ref",
            description = "The backend trusted as correct. Default: ${DEFAULT-VALUE}.")
    String reference;

    @Option(names = "--threads", paramLabel = "N", description = "Worker threads of the backend (default: all cores).")
    Integer threads;

    @Option(names = "--seed", defaultValue = "1234", description = "Seed of every input. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--op-timeout", paramLabel = "SECONDS", defaultValue = "20",
            description = "An op that runs longer is reported as hung. Default: ${DEFAULT-VALUE}.")
    double opTimeout;

    @Option(names = "--steps", defaultValue = "25",
            description = "Steps of the training run (0 skips it; the verdict then rests on the ops). Default: ${DEFAULT-VALUE}.")
    int steps;

    @Option(names = "--ops", split = ",", paramLabel = "OP",
            description = "Check only these op families (comma-separated, e.g. MatMul,Attention); the verdict covers only them.")
    List<String> ops = List.of();

    @Option(names = "--require", defaultValue = "train", paramLabel = "train|serve",
            description = "The verdict needed for exit code 0. Default: ${DEFAULT-VALUE}.")
    String require;

    @Option(names = "--out", paramLabel = "DIR",
            description = "Write DIR/qualify.json (machine-readable report) and DIR/support-matrix.md.")
    Path out;

    @Option(names = {"--verbose", "-v"}, description = "Print every conformance case as it runs.")
    boolean verbose;

    @Override
    public Integer call() throws Exception {
        Verdict required = switch (require.toLowerCase(java.util.Locale.ROOT)) {
            case "train" -> Verdict.CAN_TRAIN;
            case "serve" -> Verdict.CAN_SERVE;
            default -> throw new UserException("--require must be train or serve, got '" + require + "'");
        };
        if (!(opTimeout > 0)) throw new UserException("--op-timeout must be positive, got " + opTimeout);
        if (steps < 0) throw new UserException("--steps must be >= 0, got " + steps);
        int n = threads == null ? Runtime.getRuntime().availableProcessors() : threads;
        if (n <= 0) throw new UserException("--threads must be positive, got " + n);
        Qualification.Config cfg = new Qualification.Config(seed, Duration.ofMillis(Math.round(opTimeout * 1000)), ops,
                steps == 0 ? null : TrainingCheck.Config.tiny(steps));
        QualifyReport report;
        try (Backend candidate = Backends.create(backend, n); Backend ref = Backends.create(reference, 1)) {
            System.out.println("qualifying " + candidate.name() + " against " + ref.name() + " …");
            report = Qualification.run(candidate, ref, cfg, verbose ? line -> System.out.println("  " + line) : null);
        }
        System.out.print(report.toText());
        if (out != null) {
            Files.createDirectories(out);
            Files.writeString(out.resolve("qualify.json"), report.toJson());
            Files.writeString(out.resolve("support-matrix.md"), report.toMarkdown());
            System.out.println("wrote " + out.resolve("qualify.json") + " and " + out.resolve("support-matrix.md"));
        }
        System.out.flush();
        return report.meets(required) ? 0 : 1;
    }
}
