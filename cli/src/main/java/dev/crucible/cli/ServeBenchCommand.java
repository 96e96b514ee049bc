package dev.crucible.cli;

import dev.crucible.backend.Backend;
import dev.crucible.engine.BatchEngine;
import dev.crucible.model.BatchDecoder;
import dev.crucible.serve.LoadGenerator;
import dev.crucible.serve.OpenAiServer;
import dev.crucible.serve.ServerConfig;
import dev.crucible.tensor.DType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "serve", mixinStandardHelpOptions = true,
        description = {"Serving speed as a client sees it: time to first token, per-stream decode tokens/s and aggregate tokens/s",
                "at 1, 4 and 16 concurrent streaming completions. Starts the model behind a server on a free loopback port,",
                "or measures a running server with --url."})
final class ServeBenchCommand implements Callable<Integer> {
    @Option(names = {"--model", "-m"}, paramLabel = "PATH", description = "Model to serve for the measurement.")
    Path model;

    @Option(names = "--url", paramLabel = "URL", description = "Measure this running server instead (e.g. http://127.0.0.1:8080).")
    String url;

    @Option(names = "--api-key", paramLabel = "KEY", description = "Bearer token for --url.")
    String apiKey;

    @Option(names = "--streams", split = ",", defaultValue = "1,4,16", description = "Concurrency levels. Default: ${DEFAULT-VALUE}.")
    List<Integer> streams;

    @Option(names = "--tokens", defaultValue = "64", description = "Tokens generated per stream. Default: ${DEFAULT-VALUE}.")
    int tokens;

    @Option(names = "--prompt", defaultValue = "<|endoftext|>123+456=", description = "Prompt text. Default: ${DEFAULT-VALUE}.")
    String prompt;

    @Mixin
    BackendOptions backendOptions;

    @Mixin
    WeightOptions weightOptions;

    @Mixin
    KvOptions kvOptions;

    @Override
    public Integer call() throws Exception {
        if ((model == null) == (url == null)) throw new UserException("give exactly one of --model PATH or --url URL");
        if (tokens <= 1) throw new UserException("--tokens must be at least 2");
        DType kvType = kvOptions.type();
        if (url != null) {
            report(url, apiKey);
            return 0;
        }
        int slots = streams.stream().mapToInt(Integer::intValue).max().orElse(1);
        try (Backend be = backendOptions.create(); ModelFiles.Loaded m = ModelFiles.load(model, be, weightOptions.type());
             BatchDecoder dec = new BatchDecoder(m.model(), slots,
                     BatchDecoder.pagesFor((long) slots * m.model().config().context(), BatchDecoder.DEFAULT_PAGE_SIZE),
                     BatchDecoder.DEFAULT_PAGE_SIZE, m.model().config().context(), Math.max(slots, 64), kvType);
             BatchEngine engine = new BatchEngine(dec, m.tokenizer(), Tokenizers.eosId(m.tokenizer()), new BatchEngine.Config(4 * slots));
             OpenAiServer server = new OpenAiServer(engine, m.tokenizer(), ServerConfig.defaults("bench").withPort(0))) {
            report("http://127.0.0.1:" + server.port(), null);
        }
        return 0;
    }

    private void report(String base, String key) throws InterruptedException {
        // Warm-up: the JIT compiles the decode path for one row and for the widest batch before anything is timed.
        LoadGenerator.run(base, key, prompt, 1, tokens);
        LoadGenerator.run(base, key, prompt, streams.stream().mapToInt(Integer::intValue).max().orElse(1), Math.min(tokens, 16));
        System.out.println("streams  ttft_p50_ms  ttft_max_ms  decode_tok/s/stream  aggregate_tok/s  failures");
        for (int s : streams) {
            LoadGenerator.Result r = LoadGenerator.run(base, key, prompt, s, tokens);
            System.out.println(String.format(Locale.ROOT, "%7d  %11.1f  %11.1f  %19.1f  %15.1f  %8d", s, r.ttftP50() * 1e3,
                    r.ttftMax() * 1e3, r.decodeTokensPerSecondPerStream(), r.aggregateTokensPerSecond(), r.failures()));
        }
    }
}
