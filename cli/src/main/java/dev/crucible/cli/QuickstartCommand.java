package dev.crucible.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.engine.Generator;
import dev.crucible.engine.SamplingParams;
import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.model.Llama;
import dev.crucible.tensor.Rng;
import dev.crucible.train.Checkpoint;
import dev.crucible.train.TrainConfig;
import dev.crucible.train.Trainer;
import dev.crucible.train.data.DataPrepare;
import dev.crucible.train.data.TokenDataset;
import dev.crucible.train.task.ArithmeticTask;
import dev.crucible.train.task.Problem;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.BufferedWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

@Command(name = "quickstart", mixinStandardHelpOptions = true,
        header = "The main job: train a small Llama on built-in arithmetic data, evaluate it, generate.",
        description = {"The main job on built-in data: generate an arithmetic corpus (3-digit addition and subtraction",
                "with written-out steps), tokenize it, train a small Llama from scratch, evaluate exact-answer accuracy",
                "on held-out problems, and print sample generations. About 5-8 minutes on 2 cores."})
final class QuickstartCommand implements Callable<Integer> {
    static final String MARKER = "quickstart.json";

    @Option(names = "--out", defaultValue = "runs/quickstart", paramLabel = "DIR",
            description = "Output directory (an earlier quickstart there is replaced). Default: ${DEFAULT-VALUE}.")
    Path out;

    @Option(names = "--steps", defaultValue = "2000", description = "Training steps. Default: ${DEFAULT-VALUE}.")
    int steps;

    @Option(names = "--problems", defaultValue = "100000", description = "Training problems to generate. Default: ${DEFAULT-VALUE}.")
    int problems;

    @Option(names = "--eval-problems", defaultValue = "500", description = "Held-out problems for the final accuracy. Default: ${DEFAULT-VALUE}.")
    int evalProblems;

    @Option(names = "--seed", defaultValue = "1234", description = "Seed for data, initialisation and order. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Mixin
    BackendOptions backendOptions;

    @Override
    public Integer call() throws Exception {
        if (steps <= 0 || problems <= 0 || evalProblems <= 0) throw new UserException("--steps, --problems and --eval-problems must be positive");
        prepareOutDir();
        ArithmeticTask task = new ArithmeticTask(3, "+-");
        Path dataDir = out.resolve("data");
        Path corpus = dataDir.resolve("arithmetic.jsonl");
        Path shards = dataDir.resolve("shards");
        Files.createDirectories(dataDir);

        System.out.printf("1/4  generating %,d arithmetic problems (held-out problems excluded) -> %s%n", problems, corpus);
        System.out.println("     e.g. " + task.text(task.make(347, '+', 285)).strip());
        DataPrepare.Summary s = arithmeticShards(task, corpus, shards, problems, seed);
        Tokenizer tok = Tokenizer.load(shards.resolve("tokenizer.json"));
        ObjectMapper json = new ObjectMapper();
        System.out.printf("2/4  tokenized (byte-level, vocabulary %d): %,d tokens in %d shard(s) -> %s%n", tok.vocabSize(), s.tokens(), s.shards().size(), shards);

        TrainConfig cfg = config(tok.vocabSize());
        Path runDir = out.resolve("run");
        System.out.printf("3/4  training a %,d-parameter Llama (dim %d, %d layers, %d heads, ffn %d) for %d steps of %,d tokens%n",
                cfg.model().paramCount(), cfg.model().dim(), cfg.model().layers(), cfg.model().heads(), cfg.model().ffn(),
                cfg.steps(), cfg.tokensPerStep());
        int[] evalSize = {100};
        Trainer.Evaluator evaluator = (model, step) -> {
            int n = step == cfg.steps() ? evalProblems : evalSize[0];
            return Map.of("heldout_accuracy", accuracy(model, tok, task, n, null));
        };
        try (TokenDataset ds = TokenDataset.open(shards)) {
            int code = TrainCommand.run(cfg, ds, runDir, shards.resolve("tokenizer.json"), backendOptions,
                    Trainer.Options.defaults().withEvaluator(evaluator));
            if (code != 0) return code;
        }

        System.out.println("4/4  sample generations on held-out problems (greedy):");
        Path ckpt = Checkpoint.latestGood(runDir.resolve("checkpoints")).dir();
        double acc;
        try (var be = backendOptions.create(); ModelFiles.Loaded m = ModelFiles.load(ckpt, be)) {
            acc = accuracy(m.model(), m.tokenizer(), task, 8, System.out);
        }
        Files.writeString(out.resolve(MARKER), json.writerWithDefaultPrettyPrinter().writeValueAsString(Map.of(
                "steps", steps, "problems", problems, "seed", seed)));
        System.out.println();
        System.out.println("Outputs:");
        System.out.println("  corpus       " + corpus);
        System.out.println("  shards       " + shards);
        System.out.println("  checkpoint   " + ckpt);
        System.out.println("  metrics      " + runDir.resolve("metrics.jsonl"));
        System.out.println("  plots        " + runDir.resolve("loss.png") + ", " + runDir.resolve("accuracy.png"));
        // The model saw every problem right after an end-of-text token, so prompts start with one too.
        System.out.println("Try:  ./crucible generate --checkpoint " + runDir + " --prompt '<|endoftext|>123+456=' --stop $'\\n'");
        return 0;
    }

    /**
     * Writes {@code problems} training problems as JSONL (one document each) and tokenizes them byte-level into
     * shards with a tokenizer.json: the built-in data of quickstart and chaos.
     */
    static DataPrepare.Summary arithmeticShards(ArithmeticTask task, Path corpus, Path shards, int problems, long seed) throws java.io.IOException {
        Files.createDirectories(corpus.getParent());
        ObjectMapper json = new ObjectMapper();
        try (BufferedWriter w = Files.newBufferedWriter(corpus)) {
            for (int i = 0; i < problems; i++) {
                Problem p = task.corpusProblem(seed, i);
                w.write(json.writeValueAsString(Map.of("text", task.text(p))));
                w.newLine();
            }
        }
        Tokenizer tok = Tokenizer.byteLevel(List.of(Tokenizers.EOS));
        DataPrepare.Summary s = DataPrepare.prepare(List.of(corpus), shards, tok::encode, Tokenizers.eosId(tok), tok.vocabSize(),
                tok.name(), "text", 100_000_000, null);
        tok.saveHuggingFace(shards.resolve("tokenizer.json"));
        return s;
    }

    /** The quickstart model and schedule: small enough for a few minutes on 2 cores, big enough to learn the task. */
    TrainConfig config(int vocab) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("model.vocab", vocab);
        m.put("model.dim", 128);
        m.put("model.layers", 4);
        m.put("model.heads", 4);
        m.put("model.kv_heads", 4);
        m.put("model.ffn", 384);
        m.put("model.context", 128);
        m.put("train.batch", 16);
        m.put("train.seq_len", 128);
        m.put("train.steps", steps);
        m.put("train.seed", seed);
        m.put("train.eval_interval", Math.max(1, steps / 4));
        m.put("train.eval_batches", 8);
        m.put("train.checkpoint_interval", Math.max(1, steps / 4));
        m.put("train.log_interval", 10);
        m.put("optim.lr", 2e-3);
        m.put("optim.min_lr", 1e-4);
        m.put("optim.warmup", Math.min(50, steps / 10));
        m.put("optim.weight_decay", 0.1);
        m.put("data.path", out.resolve("data/shards").toString());
        return TrainConfig.fromMap(m);
    }

    /**
     * Exact-answer accuracy over n held-out problems, generated greedily after an end-of-text token (the model saw
     * every problem start after one in training). When {@code show} is set, prints each problem and answer.
     */
    static double accuracy(Llama model, Tokenizer tok, ArithmeticTask task, int n, java.io.PrintStream show) {
        Generator g = new Generator(model, tok, Tokenizers.eosId(tok));
        int correct = 0;
        for (int i = 0; i < n; i++) {
            Problem p = task.sampleHeldOut(Rng.keyed(7, Rng.key("quickstart.eval"), i));
            Generator.Result r = g.generate(Tokenizers.EOS + p.prompt(), 64, SamplingParams.GREEDY, List.of("\n"), null);
            boolean ok = task.check(p, r.text());
            if (ok) correct++;
            if (show != null) show.printf("     %s %-40s %s (expected %d)%n", ok ? "ok " : "BAD", p.prompt() + r.text(), ok ? "" : "wrong", p.answer());
        }
        return (double) correct / n;
    }

    private void prepareOutDir() throws Exception {
        if (Files.exists(out)) {
            boolean ours = Files.exists(out.resolve(MARKER)) || Files.exists(out.resolve("data/arithmetic.jsonl"));
            boolean empty;
            try (var s = Files.list(out)) {
                empty = s.findAny().isEmpty();
            }
            if (!ours && !empty) throw new UserException(out + " exists and is not an earlier quickstart: choose another --out");
            Checkpoint.deleteTree(out);
        }
        Files.createDirectories(out);
    }
}
