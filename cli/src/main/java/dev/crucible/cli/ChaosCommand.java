package dev.crucible.cli;

import dev.crucible.tensor.Rng;
import dev.crucible.train.Checkpoint;
import dev.crucible.train.fault.RunReport;
import dev.crucible.train.fault.Supervisor;
import dev.crucible.train.task.ArithmeticTask;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import java.util.concurrent.Callable;

@Command(name = "chaos", mixinStandardHelpOptions = true, sortOptions = false,
        header = "The chaos benchmark: a clean run and the same run under injected faults, compared.",
        description = {"The chaos benchmark: train a small model cleanly, then the same run under injected faults, and",
                "report faults injected / detected / recovered, whether the final weights equal the clean run's bits,",
                "goodput and time to resume. Three supervised runs on built-in arithmetic data:",
                "  clean   no faults",
                "  crash   kills (some mid-step, some while a checkpoint is written), a hang, a corrupt newest checkpoint:",
                "          faults that must leave no trace, so the final weights must equal the clean run's",
                "  numeric NaN and Inf gradients, a loss spike, and exponent bit flips in MatMul outputs on a simulated",
                "          defective device with every step replayed on a healthy one: detected and repaired"})
final class ChaosCommand implements Callable<Integer> {
    @Option(names = "--out", defaultValue = "runs/chaos", paramLabel = "DIR", description = "Output directory (replaced). Default: ${DEFAULT-VALUE}.")
    Path out;

    @Option(names = "--steps", defaultValue = "2000", description = "Steps of the clean and crash runs. Default: ${DEFAULT-VALUE}.")
    int steps;

    @Option(names = "--numeric-steps", defaultValue = "300", description = "Steps of the numeric run (it replays every step). Default: ${DEFAULT-VALUE}.")
    int numericSteps;

    @Option(names = "--checkpoint-interval", defaultValue = "100", description = "Default: ${DEFAULT-VALUE}.")
    int checkpointInterval;

    @Option(names = "--kills", defaultValue = "10", description = "Worker kills in the crash run (a third while checkpointing). Default: ${DEFAULT-VALUE}.")
    int kills;

    @Option(names = "--bitflip-rate", defaultValue = "2e-8", description = "Per-element exponent bit-flip rate in MatMul outputs. Default: ${DEFAULT-VALUE}.")
    double bitflipRate;

    @Option(names = "--seed", defaultValue = "7", description = "Seed for the fault schedule. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--threads", description = "Worker threads (default: all cores).")
    Integer threads;

    @Override
    public Integer call() throws Exception {
        if (steps < 4 * checkpointInterval) throw new UserException("--steps must be at least 4 checkpoint intervals");
        if (kills < 0 || kills > steps / 4) throw new UserException("--kills must be between 0 and steps/4");
        if (Files.exists(out)) Checkpoint.deleteTree(out);
        Path shards = out.resolve("data/shards");
        System.out.println("chaos: preparing built-in arithmetic data");
        QuickstartCommand.arithmeticShards(new ArithmeticTask(3, "+-"), out.resolve("data/arithmetic.jsonl"), shards, 20_000, 1);

        Path clean = out.resolve("clean"), crash = out.resolve("crash"), numeric = out.resolve("numeric");
        String crashFaults = crashSchedule();
        int q = numericSteps / 4;
        String numericFaults = "nan@" + (q + 3) + ",inf@" + (2 * q + 5) + ",spike@" + (3 * q + 7);

        System.out.printf("chaos: clean run, %d steps%n", steps);
        int c0 = supervise(clean, steps, null, List.of(), 0);
        System.out.printf("chaos: crash run, same %d steps, faults: %s%n", steps, crashFaults);
        int c1 = supervise(crash, steps, crashFaults, List.of(), 10);
        System.out.printf("chaos: numeric run, %d steps on defective:bitflip=MatMul@%g, every step replayed on cpu, faults: %s%n",
                numericSteps, bitflipRate, numericFaults);
        int c2 = supervise(numeric, numericSteps, numericFaults,
                List.of("--backend", "defective:bitflip=MatMul@" + bitflipRate + ",seed=" + seed, "--replay-backend", "cpu",
                        "--set", "replay.interval=1", "--set", "guard.loss_z=5", "--set", "guard.min_history=16"), 0);

        RunReport rc = RunReport.read(clean), rk = RunReport.read(crash), rn = RunReport.read(numeric);
        boolean same = c0 == 0 && c1 == 0 && checksum(clean, steps).equals(checksum(crash, steps));
        System.out.println();
        System.out.printf("%-34s %9s %9s %10s%n", "fault", "injected", "detected", "recovered");
        int kill = rk.faultsInjected().getOrDefault("kill", 0), ckptKill = count(rk, "fault_injected", "kill while writing");
        int corrupt = count(rk, "fault_injected", "flipped a bit");
        // Every injected kill, checkpoint-time kill and corruption (which also ends the worker) shows as a worker exit.
        row("worker killed", kill - ckptKill, count(rk, "worker_exit", "exit code") - ckptKill - corrupt, c1 == 0);
        row("worker killed while checkpointing", ckptKill, ckptKill, c1 == 0);
        row("hang", count(rk, "fault_injected", "hang"), rk.detected().getOrDefault("hang", 0), c1 == 0);
        row("corrupt newest checkpoint", corrupt, rk.detected().getOrDefault("bad_checkpoint", 0), c1 == 0);
        // With every step replayed, a NaN may be caught by the replay comparison before the guards see it.
        row("NaN / Inf gradients", count(rn, "fault_injected", "NaN") + count(rn, "fault_injected", "Inf"),
                caught(rn, "NaN", "nonfinite", "suspected_corruption") + caught(rn, "Inf", "nonfinite", "suspected_corruption"), c2 == 0);
        row("loss spike (corrupted batch)", count(rn, "fault_injected", "spike"), caught(rn, "spike", "loss_spike", "grad_spike"), c2 == 0);
        System.out.printf("%-34s %9s %9d %10d%n", "bit flips in MatMul (steps hit)", "rate " + bitflipRate,
                rn.detected().getOrDefault("suspected_corruption", 0), count(rn, "recomputed", ""));
        System.out.println();
        System.out.printf("final weights of the crash run equal the clean run's: %s (sha256 %s)%n", same ? "YES" : "NO",
                checksum(clean, steps).substring(0, 16));
        double nl = lastLoss(numeric, numericSteps);
        System.out.printf("numeric run finished: %s; final loss %.4f (%s)%n", c2 == 0 ? "yes" : "NO", nl,
                Double.isFinite(nl) ? "finite" : "NOT FINITE");
        System.out.printf("wall time: clean %.1f s, crash %.1f s; goodput of the crash run %.1f%% (useful step time / wall),%n",
                rc.wallSeconds(), rk.wallSeconds(), 100 * rk.goodput());
        System.out.printf("  clean wall / crash wall = %.1f%%; clean run's own goodput %.1f%%%n",
                100 * rc.wallSeconds() / Math.max(rk.wallSeconds(), 1e-9), 100 * rc.goodput());
        if (!rk.resumeSeconds().isEmpty()) {
            System.out.printf("time to resume after a failure: mean %.2f s, max %.2f s over %d restarts%n",
                    rk.resumeSeconds().stream().mapToDouble(Double::doubleValue).average().orElse(0),
                    rk.resumeSeconds().stream().mapToDouble(Double::doubleValue).max().orElse(0), rk.resumeSeconds().size());
        }
        System.out.println("timelines: crucible runs show " + crash + "   (and " + numeric + ")");
        return same && c2 == 0 && Double.isFinite(nl) ? 0 : 1;
    }

    /** kills at random steps (some in the second micro-batch), a third during checkpoint writes, one hang, one corruption. */
    private String crashSchedule() {
        Rng r = Rng.keyed(seed, Rng.key("chaos"));
        TreeSet<Integer> used = new TreeSet<>();
        List<String> f = new ArrayList<>();
        int ckptKills = kills / 3;
        int checkpoints = steps / checkpointInterval;
        for (int i = 0; i < ckptKills; i++) {
            int s;
            do s = (1 + r.nextInt(checkpoints - 1)) * checkpointInterval; while (!used.add(s));
            f.add("ckpt-kill@" + s);
        }
        for (int i = ckptKills; i < kills; i++) {
            int s;
            do s = 2 + r.nextInt(steps - 2); while (!used.add(s));
            f.add("kill@" + s + (i % 2 == 0 ? ".2" : ""));
        }
        int h;
        do h = 2 + r.nextInt(steps - 2); while (!used.add(h));
        f.add("hang@" + h);
        int c;
        do c = (1 + r.nextInt(checkpoints - 1)) * checkpointInterval; while (!used.add(c));
        f.add("corrupt-ckpt@" + c);
        return String.join(",", f);
    }

    private int supervise(Path run, int n, String faults, List<String> extra, double heartbeatTimeout) throws Exception {
        List<String> args = new ArrayList<>(List.of("train", "--worker", "--data", out.resolve("data/shards").toString(),
                "--out", run.toString(), "--dim", "64", "--layers", "2", "--heads", "4", "--ffn", "192", "--context", "64",
                "--seq-len", "64", "--batch", "8", "--grad-accum", "2", "--steps", String.valueOf(n), "--lr", "2e-3",
                "--warmup", "20", "--checkpoint-interval", String.valueOf(checkpointInterval), "--eval-interval", "0",
                "--log-interval", "1"));
        if (threads != null) args.addAll(List.of("--threads", String.valueOf(threads)));
        if (faults != null) args.addAll(List.of("--faults", faults));
        args.addAll(extra);
        Supervisor sup = new Supervisor(TrainCommand.selfCommand(args), run,
                new Supervisor.Policy(3 * kills + 5, heartbeatTimeout > 0 ? heartbeatTimeout : 600, 0.1, 1));
        return sup.run();
    }

    private static void row(String name, int injected, int detected, boolean finished) {
        System.out.printf("%-34s %9d %9d %10d%n", name, injected, detected, finished ? Math.min(injected, detected) : 0);
    }

    private static int count(RunReport r, String type, String detailPrefix) {
        return (int) r.events().stream().filter(e -> e.path("type").asText().equals(type)
                && e.path("detail").asText().startsWith(detailPrefix)).count();
    }

    /** Injected faults whose detail starts with {@code what} that were followed by a detection at the same step. */
    private static int caught(RunReport r, String what, String... detections) {
        java.util.Set<String> kinds = java.util.Set.of(detections);
        int n = 0;
        for (var e : r.events()) {
            if (!e.path("type").asText().equals("fault_injected") || !e.path("detail").asText().startsWith(what)) continue;
            int step = e.path("step").asInt();
            if (r.events().stream().anyMatch(d -> kinds.contains(d.path("type").asText()) && d.path("step").asInt() == step)) n++;
        }
        return n;
    }

    private static String checksum(Path run, int step) throws Exception {
        Path d = run.resolve("checkpoints").resolve(Checkpoint.dirName(step));
        if (!Files.exists(d.resolve(Checkpoint.MODEL))) return "missing";
        return Checkpoint.sha256(d.resolve(Checkpoint.MODEL)) + Checkpoint.sha256(d.resolve(Checkpoint.OPTIMIZER));
    }

    private static double lastLoss(Path run, int step) throws Exception {
        double loss = Double.NaN;
        var json = new com.fasterxml.jackson.databind.ObjectMapper();
        for (String line : Files.readAllLines(run.resolve("metrics.jsonl"))) {
            var n = json.readTree(line);
            if ("train".equals(n.path("type").asText()) && n.path("step").asInt() == step) loss = n.path("loss").asDouble();
        }
        return loss;
    }

}
