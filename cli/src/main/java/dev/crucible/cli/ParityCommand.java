package dev.crucible.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import dev.crucible.model.Llama;
import dev.crucible.model.LlamaConfig;
import dev.crucible.qualify.Parity;
import dev.crucible.qualify.ParityReport;
import dev.crucible.train.Checkpoint;
import dev.crucible.train.TrainConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.function.Consumer;

@Command(name = "parity", mixinStandardHelpOptions = true, sortOptions = false,
        header = "Find the first op where two backends diverge in one training step.",
        description = {"Run the same training step (same weights, same batch) on two backends, op by op, and report where",
                "they part: the first op output whose NMSE exceeds the tolerance (layer, op, tensor), error statistics of",
                "every op along the forward and backward pass and the optimizer update, and the per-layer gradient",
                "divergence table. A second pass in lockstep (each op on identical inputs) names the op at fault.",
                "Without --checkpoint: a small random-init model and a random batch from --seed.",
                "Exit code 0 when every op agrees, 1 when they diverge (or an op is missing or hangs), 2 for a usage error."})
final class ParityCommand implements Callable<Integer> {
    @Option(names = "--a", paramLabel = "BACKEND", defaultValue = "ref",
            description = "The trusted backend. Default: ${DEFAULT-VALUE}.")
    String a;

    @Option(names = "--b", paramLabel = "BACKEND", required = true, description = "The backend compared with it.")
    String b;

    @Option(names = "--threads", paramLabel = "N", description = "Worker threads of each backend (default: all cores).")
    Integer threads;

    @Option(names = {"--checkpoint", "-c"}, paramLabel = "DIR",
            description = "Weights and shape from a checkpoint (or a run directory's newest good one).")
    Path checkpoint;

    @Option(names = "--seed", defaultValue = "1", description = "Seed of the random weights and batch. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--vocab", defaultValue = "64", description = "Random model: vocabulary. Default: ${DEFAULT-VALUE}.") int vocab;
    @Option(names = "--dim", defaultValue = "32", description = "Random model: width. Default: ${DEFAULT-VALUE}.") int dim;
    @Option(names = "--layers", defaultValue = "2", description = "Random model: layers. Default: ${DEFAULT-VALUE}.") int layers;
    @Option(names = "--heads", defaultValue = "4", description = "Random model: heads. Default: ${DEFAULT-VALUE}.") int heads;
    @Option(names = "--kv-heads", defaultValue = "2", description = "Random model: key/value heads. Default: ${DEFAULT-VALUE}.") int kvHeads;
    @Option(names = "--ffn", defaultValue = "64", description = "Random model: MLP hidden size. Default: ${DEFAULT-VALUE}.") int ffn;

    @Option(names = "--batch", defaultValue = "2", description = "Sequences in the batch. Default: ${DEFAULT-VALUE}.")
    int batch;

    @Option(names = "--seq-len", description = "Tokens per sequence (default 16, at most the model's context).")
    Integer seqLen;

    @Option(names = "--tolerance", defaultValue = "1e-8",
            description = "Largest NMSE of an op output along the free-running step. Default: ${DEFAULT-VALUE}.")
    double tolerance;

    @Option(names = "--local-tolerance", defaultValue = "1e-10",
            description = "Largest NMSE of an op on identical inputs (lockstep). Default: ${DEFAULT-VALUE}.")
    double localTolerance;

    @Option(names = "--op-timeout", paramLabel = "SECONDS", defaultValue = "20",
            description = "An op that runs longer is reported as hung. Default: ${DEFAULT-VALUE}.")
    double opTimeout;

    @Option(names = "--json", paramLabel = "FILE", description = "Also write the full report as JSON.")
    Path json;

    @Option(names = "--summary", description = "Print only the verdict and the gradient table, not every op.")
    boolean summaryOnly;

    @Override
    public Integer call() throws Exception {
        int n = threads == null ? Runtime.getRuntime().availableProcessors() : threads;
        if (n <= 0) throw new UserException("--threads must be positive, got " + n);
        if (!(opTimeout > 0)) throw new UserException("--op-timeout must be positive, got " + opTimeout);
        LlamaConfig model;
        Consumer<Llama> init = null;
        if (checkpoint != null) {
            Path dir = ModelFiles.resolveCheckpoint(checkpoint);
            model = configOf(dir);
            init = m -> Checkpoint.load(dir, m, null);
            System.out.println("weights: " + dir);
        } else {
            model = new LlamaConfig(vocab, dim, layers, heads, kvHeads, ffn, Math.max(16, seqLen == null ? 16 : seqLen),
                    10_000f, 1e-5f, false);
        }
        int seq = seqLen != null ? seqLen : Math.min(16, model.context());
        Parity.Config cfg = new Parity.Config(model, batch, seq, seed, tolerance, localTolerance,
                Duration.ofMillis(Math.round(opTimeout * 1000)));
        ParityReport report;
        try (Backend ba = Backends.create(a, n); Backend bb = Backends.create(b, n)) {
            report = Parity.run(ba, bb, cfg, init);
        }
        if (summaryOnly) {
            System.out.print(report.summary());
            if (!report.grads().isEmpty()) System.out.print("\n" + report.gradTable());
        } else {
            System.out.print(report.toText());
        }
        if (json != null) {
            if (json.getParent() != null) Files.createDirectories(json.getParent());
            Files.writeString(json, report.toJson());
            System.out.println("wrote " + json);
        }
        System.out.flush();
        return report.passed() ? 0 : 1;
    }

    @SuppressWarnings("unchecked")
    private static LlamaConfig configOf(Path dir) {
        JsonNode state = Checkpoint.state(dir);
        Map<String, Object> nested = new ObjectMapper().convertValue(state.path("config"), Map.class);
        if (nested == null) throw new UserException(dir + ": state.json has no config");
        return TrainConfig.fromMap(TrainConfig.flatten(nested)).model();
    }
}
