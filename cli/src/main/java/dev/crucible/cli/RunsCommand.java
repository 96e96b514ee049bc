package dev.crucible.cli;

import com.fasterxml.jackson.databind.JsonNode;
import dev.crucible.train.Checkpoint;
import dev.crucible.train.fault.RunReport;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.stream.Stream;

@Command(name = "runs", mixinStandardHelpOptions = true,
        description = "List training runs with their progress and fault counts; 'runs show RUN' prints one run's fault timeline.",
        subcommands = {RunsCommand.Show.class})
final class RunsCommand implements Callable<Integer> {
    @Option(names = "--root", defaultValue = "runs", paramLabel = "DIR", description = "Where runs live. Default: ${DEFAULT-VALUE}.")
    Path root;

    @Override
    public Integer call() throws Exception {
        if (!Files.isDirectory(root)) throw new UserException("no runs directory: " + root);
        List<Path> runs;
        try (Stream<Path> s = Files.walk(root, 3)) {
            runs = s.filter(p -> Files.exists(p.resolve("config.json")) || Files.exists(p.resolve("events.jsonl"))).sorted().toList();
        }
        if (runs.isEmpty()) {
            System.out.println("no runs under " + root);
            return 0;
        }
        System.out.printf("%-40s %-10s %10s %9s %8s %8s  %s%n", "RUN", "STATUS", "CHECKPOINT", "RESTARTS", "FAULTS", "GOODPUT", "LAST EVENT");
        for (Path run : runs) {
            RunReport r = RunReport.read(run);
            List<Path> ck = Checkpoint.list(run.resolve("checkpoints"));
            String ckpt = ck.isEmpty() ? "-" : ck.getFirst().getFileName().toString().replace("step-", "").replaceFirst("^0+(?=.)", "");
            int faults = r.detected().values().stream().mapToInt(Integer::intValue).sum();
            String last = r.events().isEmpty() ? "-" : r.events().getLast().path("time").asText();
            System.out.printf("%-40s %-10s %10s %9d %8d %7.1f%%  %s%n", root.relativize(run), r.status(), ckpt, r.restarts(), faults,
                    100 * r.goodput(), last);
        }
        return 0;
    }

    @Command(name = "show", mixinStandardHelpOptions = true,
            description = "The fault timeline of a run (from RUN/events.jsonl): faults, detections, restarts, time lost, goodput.")
    static final class Show implements Callable<Integer> {
        @Parameters(paramLabel = "RUN", description = "Run directory.")
        Path run;

        @Override
        public Integer call() throws Exception {
            if (!Files.isDirectory(run)) throw new UserException("no such run directory: " + run);
            if (!Files.exists(run.resolve("events.jsonl"))) throw new UserException(run + " has no events.jsonl (is it a run directory?)");
            print(RunReport.read(run), true);
            return 0;
        }
    }

    static void print(RunReport r, boolean timeline) {
        if (timeline && !r.events().isEmpty()) {
            long t0 = r.events().getFirst().path("t").asLong();
            System.out.println("timeline:");
            for (JsonNode e : r.events()) {
                System.out.printf("  %9.2fs  %-10s %-22s %6s  %s%s%n", (e.path("t").asLong() - t0) / 1000.0, e.path("source").asText(),
                        e.path("type").asText(), e.has("step") ? e.path("step").asText() : "",
                        e.path("detail").asText(""), e.has("action") ? "  -> " + e.path("action").asText() : "");
            }
        }
        System.out.printf("status %s at step %d; wall %.1f s, useful step time %.1f s, goodput %.1f%%%n", r.status(), r.lastStep(),
                r.wallSeconds(), r.usefulSeconds(), 100 * r.goodput());
        System.out.printf("restarts %d; faults injected %s; detected %s%n", r.restarts(), r.faultsInjected(), r.detected());
        if (!r.resumeSeconds().isEmpty()) {
            double mean = r.resumeSeconds().stream().mapToDouble(Double::doubleValue).average().orElse(0);
            double max = r.resumeSeconds().stream().mapToDouble(Double::doubleValue).max().orElse(0);
            System.out.printf("time to resume after a failure: mean %.2f s, max %.2f s (%d resumes)%n", mean, max, r.resumeSeconds().size());
        }
    }
}
