package dev.crucible.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.train.Trainer;
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
        dev.crucible.formats.hf.ModelWeights init = null;
        if (initModel != null) {
            init = ModelFiles.forTraining(initModel, flat);
        }
        try (TokenDataset ds = TokenDataset.open(dataDir)) {
            if (!flat.containsKey("model.vocab")) flat.put("model.vocab", ds.vocabSize());
            TrainConfig cfg = TrainConfig.fromMap(flat);
            Path tokenizer = dataDir.resolve("tokenizer.json");
            final dev.crucible.formats.hf.ModelWeights w = init;
            return run(cfg, ds, out, Files.exists(tokenizer) ? tokenizer : null, backendOptions, null,
                    w == null ? null : model -> ModelFiles.copyInto(w, model));
        }
    }

    /** Runs training with the standard progress display and draws the curves afterwards (shared with quickstart). */
    static Integer run(TrainConfig cfg, TokenDataset ds, Path runDir, Path tokenizer, BackendOptions bo,
                       Trainer.Evaluator evaluator) throws Exception {
        return run(cfg, ds, runDir, tokenizer, bo, evaluator, null);
    }

    /** As above; {@code init}, if not null, sets the initial weights of a fresh run (instead of random ones). */
    static Integer run(TrainConfig cfg, TokenDataset ds, Path runDir, Path tokenizer, BackendOptions bo,
                       Trainer.Evaluator evaluator, java.util.function.Consumer<dev.crucible.model.Llama> init) throws Exception {
        Files.createDirectories(runDir);
        Files.writeString(runDir.resolve("config.json"), new ObjectMapper().writerWithDefaultPrettyPrinter().writeValueAsString(cfg.toNestedMap()));
        try (Backend be = bo.create()) {
            System.out.printf("backend %s; run directory %s%n", be.name(), runDir);
            Trainer t = new Trainer(cfg, be, ds, runDir, tokenizer, Trainer.Options.defaults()
                    .withListener(new Progress(System.out, cfg.logInterval())).withEvaluator(evaluator).withInitializer(init));
            Trainer.Result r = t.run();
            List<Path> plots = Plots.draw(runDir);
            System.out.printf("done: %d steps in %s, final loss %.4f%n", r.steps(), Progress.time(r.seconds()), r.finalLoss());
            System.out.println("checkpoint: " + r.lastCheckpoint());
            System.out.println("metrics:    " + runDir.resolve("metrics.jsonl"));
            System.out.println("plots:      " + String.join(", ", plots.stream().map(Path::toString).toList()));
        }
        return 0;
    }
}
