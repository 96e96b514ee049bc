package dev.crucible.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.train.Trainer;
import dev.crucible.train.fault.FaultPlan;
import dev.crucible.train.fault.Supervisor;
import dev.crucible.train.TrainConfig;
import dev.crucible.train.data.TokenDataset;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

@Command(name = "train", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Train a Llama-style model on prepared token shards (see 'crucible data prepare').",
                "Settings come from defaults, then --config (TOML or JSON, sections model/train/optim/data), then flags.",
                "An existing run directory with checkpoints is resumed from its newest good checkpoint.",
                "Runs supervised: the training worker is a child process, restarted after a crash or hang; Ctrl-C or",
                "SIGTERM makes it write a final checkpoint first. Faults are logged to RUN/events.jsonl ('crucible runs show RUN').",
                "Writes RUN/config.json, RUN/metrics.jsonl, RUN/checkpoints/step-NNNNNNNN/, RUN/loss.png."})
final class TrainCommand implements Callable<Integer> {
    @Option(names = "--config", paramLabel = "FILE", description = "Config file (.toml or .json). Unknown keys are errors.")
    Path config;

    @Option(names = "--data", paramLabel = "DIR", description = "Token shard directory (overrides data.path).")
    String data;

    @Option(names = "--out", paramLabel = "RUN", defaultValue = "runs/train", description = "Run directory. Default: ${DEFAULT-VALUE}.")
    Path out;

    @Option(names = "--model", paramLabel = "PATH",
            description = "Start from these weights (fine-tuning): a checkpoint, an HF Llama directory or a GGUF file. Its shape overrides model.*.")
    Path initModel;

    @Option(names = "--set", paramLabel = "KEY=VALUE", description = "Set any config key, e.g. --set optim.beta2=0.99 (repeatable).")
    List<String> sets = List.of();

    // Model shape
    @Option(names = "--vocab", description = "Vocabulary size (default: the data's).") Integer vocab;
    @Option(names = "--dim", description = "Model width.") Integer dim;
    @Option(names = "--layers", description = "Decoder layers.") Integer layers;
    @Option(names = "--heads", description = "Attention heads.") Integer heads;
    @Option(names = "--kv-heads", description = "Key/value heads (grouped-query attention).") Integer kvHeads;
    @Option(names = "--ffn", description = "MLP hidden size.") Integer ffn;
    @Option(names = "--context", description = "Longest sequence the model handles.") Integer context;
    @Option(names = "--rope-theta", description = "Rotary embedding base.") Double ropeTheta;
    @Option(names = "--norm-eps", description = "RMSNorm epsilon.") Double normEps;
    @Option(names = "--tied", arity = "0..1", description = "Tie the output head to the embedding.") Boolean tied;
    // Training
    @Option(names = "--batch", description = "Sequences per micro-batch.") Integer batch;
    @Option(names = "--seq-len", description = "Tokens per training sequence (<= context).") Integer seqLen;
    @Option(names = "--grad-accum", description = "Micro-batches per optimizer step.") Integer gradAccum;
    @Option(names = "--steps", description = "Optimizer steps.") Integer steps;
    @Option(names = "--seed", description = "Seed for initialisation and data order.") Long seed;
    @Option(names = "--eval-interval", description = "Evaluate every N steps (0 = only at the end).") Integer evalInterval;
    @Option(names = "--eval-batches", description = "Validation batches per evaluation.") Integer evalBatches;
    @Option(names = "--checkpoint-interval", description = "Checkpoint every N steps (0 = only at the end).") Integer checkpointInterval;
    @Option(names = "--keep-checkpoints", description = "Newest checkpoints kept.") Integer keepCheckpoints;
    @Option(names = "--log-interval", description = "Write metrics every N steps.") Integer logInterval;
    // Optimizer
    @Option(names = "--lr", description = "Peak learning rate.") Double lr;
    @Option(names = "--min-lr", description = "Learning rate at the end of the cosine decay.") Double minLr;
    @Option(names = "--warmup", description = "Linear warm-up steps.") Integer warmup;
    @Option(names = "--beta1", description = "AdamW beta1.") Double beta1;
    @Option(names = "--beta2", description = "AdamW beta2.") Double beta2;
    @Option(names = "--eps", description = "AdamW epsilon.") Double eps;
    @Option(names = "--weight-decay", description = "AdamW weight decay (matrices only).") Double weightDecay;
    @Option(names = "--clip", description = "Global gradient-norm clip (0 = off).") Double clip;
    @Option(names = "--val-fraction", description = "Share of the data held out for validation.") Double valFraction;

    // Fault tolerance
    @Option(names = "--no-supervise", description = "Train in this process instead of a supervised worker process (no restarts).")
    boolean noSupervise;

    @Option(names = "--worker", hidden = true, description = "Internal: this process is the supervised worker.")
    boolean worker;

    @Option(names = "--max-restarts", defaultValue = "10", description = "Restarts after crashes or hangs before giving up. Default: ${DEFAULT-VALUE}.")
    int maxRestarts;

    @Option(names = "--heartbeat-timeout", defaultValue = "600", paramLabel = "SECONDS",
            description = "A worker with no finished step for this long is considered hung and restarted. Default: ${DEFAULT-VALUE}.")
    double heartbeatTimeout;

    @Option(names = "--restart-backoff", defaultValue = "2", paramLabel = "SECONDS",
            description = "Wait before the first restart; doubles each time, at most 60 s. Default: ${DEFAULT-VALUE}.")
    double restartBackoff;

    @Option(names = "--faults", paramLabel = "SPEC",
            description = {"Inject faults (testing, chaos runs), e.g. kill@120,hang@300,nan@450,spike@500,corrupt-ckpt@600.",
                    "Also read from $CRUCIBLE_FAULTS. See docs/fault-tolerance.md."})
    String faults;

    @Option(names = "--replay-backend", defaultValue = "ref", paramLabel = "NAME",
            description = "Second backend for the silent-corruption check (replay.interval > 0). Default: ${DEFAULT-VALUE}.")
    String replayBackend;

    @Option(names = "--qualify",
            description = {"Qualify the backend before training (op conformance and a short training run against the",
                    "reference, as 'crucible qualify'); refuse to start unless the verdict is CAN_TRAIN. Catches systematic",
                    "defects such as silently reduced matmul precision before they cost a run."})
    boolean qualify;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Mixin
    BackendOptions backendOptions;

    @Override
    public Integer call() throws Exception {
        Map<String, Object> flat = new LinkedHashMap<>();
        if (config != null) flat.putAll(TrainConfig.flatten(ConfigFiles.read(config)));
        Object[][] flags = {
                {"model.vocab", vocab}, {"model.dim", dim}, {"model.layers", layers}, {"model.heads", heads},
                {"model.kv_heads", kvHeads}, {"model.ffn", ffn}, {"model.context", context}, {"model.rope_theta", ropeTheta},
                {"model.norm_eps", normEps}, {"model.tied", tied}, {"train.batch", batch}, {"train.seq_len", seqLen},
                {"train.grad_accum", gradAccum}, {"train.steps", steps}, {"train.seed", seed},
                {"train.eval_interval", evalInterval}, {"train.eval_batches", evalBatches},
                {"train.checkpoint_interval", checkpointInterval}, {"train.keep_checkpoints", keepCheckpoints},
                {"train.log_interval", logInterval}, {"optim.lr", lr}, {"optim.min_lr", minLr}, {"optim.warmup", warmup},
                {"optim.beta1", beta1}, {"optim.beta2", beta2}, {"optim.eps", eps}, {"optim.weight_decay", weightDecay},
                {"optim.clip", clip}, {"data.path", data}, {"data.val_fraction", valFraction}};
        for (Object[] f : flags) if (f[1] != null) flat.put((String) f[0], f[1]);
        for (String s : sets) {
            int eq = s.indexOf('=');
            if (eq <= 0) throw new UserException("--set needs KEY=VALUE, got '" + s + "'");
            flat.put(s.substring(0, eq).trim(), s.substring(eq + 1).trim());
        }
        Object dataPath = flat.getOrDefault("data.path", "");
        if (dataPath == null || dataPath.toString().isEmpty()) throw new UserException("no training data: pass --data DIR (made by 'crucible data prepare') or set data.path");
        Path dataDir = Path.of(dataPath.toString());
        if (!Files.exists(dataDir)) throw new UserException("data directory not found: " + dataDir);
        dev.crucible.formats.hf.ModelWeights init = initModel == null ? null : ModelFiles.forTraining(initModel, flat);
        TrainConfig cfg;
        try (TokenDataset ds = TokenDataset.open(dataDir)) {
            if (!flat.containsKey("model.vocab")) flat.put("model.vocab", ds.vocabSize());
            cfg = TrainConfig.fromMap(flat);
        }
        String faultSpec = faults != null ? faults : System.getenv("CRUCIBLE_FAULTS");
        FaultPlan plan = FaultPlan.parse(faultSpec, cfg.seed(), out); // validates the spec before anything starts
        if (qualify && !worker && !qualified()) return 1;
        if (!worker && !noSupervise) return supervise(new Supervisor.Policy(maxRestarts, heartbeatTimeout, restartBackoff, 60));
        try (TokenDataset ds = TokenDataset.open(dataDir)) {
            Path tokenizer = dataDir.resolve("tokenizer.json");
            Trainer.Options o = Trainer.Options.defaults().withFaults(plan, FaultPlan.Actions.PROCESS);
            if (init != null) o = o.withInitializer(model -> ModelFiles.copyInto(init, model));
            if (cfg.replayInterval() > 0) o = o.withReplay(dev.crucible.backend.Backends.create(replayBackend, 1));
            try {
                return run(cfg, ds, out, Files.exists(tokenizer) ? tokenizer : null, backendOptions, o);
            } finally {
                if (o.replayBackend() != null) o.replayBackend().close();
            }
        }
    }

    /** Runs qualification of the chosen backend against the reference; prints the report when it fails. */
    private boolean qualified() {
        try (Backend candidate = backendOptions.create(); Backend ref = dev.crucible.backend.Backends.create("ref", 1)) {
            System.out.println("qualifying " + candidate.name() + " against " + ref.name() + " before training ...");
            dev.crucible.qualify.QualifyReport r = dev.crucible.qualify.Qualification.run(candidate, ref,
                    new dev.crucible.qualify.Qualification.Config(1234, java.time.Duration.ofSeconds(20), List.of(),
                            dev.crucible.qualify.TrainingCheck.Config.tiny(25)), null);
            if (r.meets(dev.crucible.qualify.Verdict.CAN_TRAIN)) {
                System.out.println("backend " + candidate.name() + " qualified: CAN_TRAIN");
                return true;
            }
            System.out.print(r.toText());
            System.err.println("crucible: backend " + candidate.name() + " did not qualify for training; not starting (see above)");
            return false;
        }
    }

    /** The command line that runs crucible with these arguments in a new JVM with this JVM's settings. */
    static List<String> selfCommand(List<String> args) {
        List<String> cmd = new java.util.ArrayList<>();
        cmd.add(ProcessHandle.current().info().command().orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString()));
        cmd.addAll(java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments());
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(Main.class.getName());
        cmd.addAll(args);
        return cmd;
    }

    /** Re-runs this command as a child JVM ("--worker") under a {@link Supervisor}. */
    private int supervise(Supervisor.Policy policy) throws Exception {
        List<String> args = new java.util.ArrayList<>(spec.commandLine().getParseResult().originalArgs()); // starts with "train"
        args.add("--worker");
        Supervisor sup = new Supervisor(selfCommand(args), out, policy);
        Thread hook = new Thread(() -> {
            sup.stop();
            try {
                sup.awaitChild(120_000);
            } catch (InterruptedException ignored) {
                Thread.currentThread().interrupt();
            }
        }, "supervisor-stop");
        Runtime.getRuntime().addShutdownHook(hook);
        try {
            return sup.run();
        } finally {
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException ignored) {
                // already shutting down
            }
        }
    }

    /**
     * Runs training in this process with the standard progress display, a stop hook (SIGINT/SIGTERM: finish the
     * step, write a checkpoint, exit) and the curves drawn afterwards. Shared with quickstart.
     */
    static Integer run(TrainConfig cfg, TokenDataset ds, Path runDir, Path tokenizer, BackendOptions bo,
                       Trainer.Options options) throws Exception {
        Files.createDirectories(runDir);
        Files.writeString(runDir.resolve("config.json"), new ObjectMapper().writerWithDefaultPrettyPrinter().writeValueAsString(cfg.toNestedMap()));
        try (Backend be = bo.create()) {
            System.out.printf("backend %s; run directory %s%n", be.name(), runDir);
            Trainer t = new Trainer(cfg, be, ds, runDir, tokenizer,
                    options.withListener(new Progress(System.out, Math.max(cfg.logInterval(), cfg.steps() / 40))));
            java.util.concurrent.CountDownLatch finished = new java.util.concurrent.CountDownLatch(1);
            Thread hook = new Thread(() -> {
                t.requestStop();
                try {
                    finished.await(120, java.util.concurrent.TimeUnit.SECONDS);
                } catch (InterruptedException ignored) {
                    Thread.currentThread().interrupt();
                }
            }, "train-stop");
            Runtime.getRuntime().addShutdownHook(hook);
            Trainer.Result r;
            try {
                r = t.run();
            } finally {
                finished.countDown();
            }
            boolean shuttingDown = false;
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException e) {
                shuttingDown = true;
            }
            if (r.stopped() || shuttingDown) {
                System.out.println("stopped at step " + r.steps() + "; checkpoint: " + r.lastCheckpoint());
                return 130;
            }
            List<Path> plots = Plots.draw(runDir);
            System.out.printf("done: %d steps in %s, final loss %.4f%n", r.steps(), Progress.time(r.seconds()), r.finalLoss());
            System.out.println("checkpoint: " + r.lastCheckpoint());
            System.out.println("metrics:    " + runDir.resolve("metrics.jsonl"));
            System.out.println("plots:      " + String.join(", ", plots.stream().map(Path::toString).toList()));
        }
        return 0;
    }
}
