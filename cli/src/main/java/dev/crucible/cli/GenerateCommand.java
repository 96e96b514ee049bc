package dev.crucible.cli;

import dev.crucible.backend.Backend;
import dev.crucible.engine.Generator;
import dev.crucible.engine.SamplingParams;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "generate", mixinStandardHelpOptions = true,
        description = {"Continue a prompt with a trained model (KV-cached decoding), streaming the text to stdout.",
                "Greedy by default; --temperature > 0 samples, restricted by --top-k and --top-p, reproducibly for a --seed."})
final class GenerateCommand implements Callable<Integer> {
    @Option(names = {"--checkpoint", "-c"}, paramLabel = "DIR",
            description = "A checkpoint directory (step-NNNNNNNN), or a run directory (its newest good checkpoint is used).")
    Path checkpoint;

    @Option(names = {"--model", "-m"}, paramLabel = "PATH",
            description = "A model to load instead: a checkpoint or run directory, a Hugging Face Llama directory, or a GGUF file.")
    Path model;

    @Option(names = {"--prompt", "-p"}, required = true, description = "Text to continue. Special tokens such as <|endoftext|> are recognised.")
    String prompt;

    @Option(names = "--max-tokens", defaultValue = "128", description = "Most tokens to generate. Default: ${DEFAULT-VALUE}.")
    int maxTokens;

    @Option(names = "--temperature", defaultValue = "0", description = "0 = greedy; higher = more random. Default: ${DEFAULT-VALUE}.")
    double temperature;

    @Option(names = "--top-k", defaultValue = "0", description = "Sample only among the K most likely tokens (0 = all). Default: ${DEFAULT-VALUE}.")
    int topK;

    @Option(names = "--top-p", defaultValue = "1.0", description = "Sample from the smallest set of tokens with probability >= P. Default: ${DEFAULT-VALUE}.")
    double topP;

    @Option(names = "--seed", defaultValue = "0", description = "Seed for sampling: the same seed and prompt give the same text. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--stop", paramLabel = "TEXT", description = "Stop when this text appears (repeatable).")
    List<String> stops = List.of();

    @Option(names = "--stats", description = "Print token counts and speed to stderr afterwards.")
    boolean stats;

    @Mixin
    BackendOptions backendOptions;

    @Mixin
    WeightOptions weightOptions;

    @Mixin
    KvOptions kvOptions;

    @Override
    public Integer call() {
        if (maxTokens <= 0) throw new UserException("--max-tokens must be positive");
        dev.crucible.tensor.DType kvType = kvOptions.type();                   // a bad --kv-type fails before the model loads
        if ((checkpoint == null) == (model == null)) throw new UserException("give exactly one of --checkpoint DIR or --model PATH");
        Path source = model != null ? model : checkpoint;
        SamplingParams sp = new SamplingParams(temperature, topK, topP, seed);
        try (Backend be = backendOptions.create(); ModelFiles.Loaded m = ModelFiles.load(source, be, weightOptions.type())) {
            Generator g = new Generator(m.model(), m.tokenizer(), Tokenizers.eosId(m.tokenizer()), kvType);
            Generator.Result r = g.generate(prompt, maxTokens, sp, stops, s -> {
                System.out.print(s);
                System.out.flush();
            });
            System.out.println();
            if (stats) {
                System.err.printf("prompt %d tokens (%.3f s), completion %d tokens, %.1f tokens/s, finish: %s%n",
                        r.promptTokens(), r.prefillSeconds(), r.completionTokens(), r.decodeTokensPerSecond(), r.finishReason());
            }
        }
        return 0;
    }
}
