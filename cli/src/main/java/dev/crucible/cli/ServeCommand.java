package dev.crucible.cli;

import dev.crucible.backend.Backend;
import dev.crucible.engine.BatchEngine;
import dev.crucible.model.BatchDecoder;
import dev.crucible.serve.OpenAiServer;
import dev.crucible.serve.ServerConfig;
import dev.crucible.tensor.DType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;

@Command(name = "serve", mixinStandardHelpOptions = true,
        header = "Serve a model over the OpenAI API with continuous batching and a chat page.",
        description = {"Serve a model over the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models), with a chat page at /,",
                "/health and Prometheus /metrics. Requests are batched continuously: up to --max-seqs sequences decode together,",
                "over a paged KV cache of --kv-tokens tokens (pages of --page-size) that sequences take as they grow."})
final class ServeCommand implements Callable<Integer> {
    @Option(names = {"--model", "-m"}, required = true, paramLabel = "PATH",
            description = "A checkpoint or run directory, a Hugging Face Llama directory, or a GGUF file.")
    Path model;

    @Option(names = "--host", defaultValue = "127.0.0.1", description = "Address to listen on. Default: ${DEFAULT-VALUE}.")
    String host;

    @Option(names = "--port", defaultValue = "8080", description = "Port (0 = any free port). Default: ${DEFAULT-VALUE}.")
    int port;

    @Option(names = "--model-name", paramLabel = "ID", description = "Model id reported by /v1/models (default: the directory or file name).")
    String modelName;

    @Option(names = "--api-key", paramLabel = "KEY", description = "Require 'Authorization: Bearer KEY' on /v1 and /metrics (repeatable).")
    List<String> apiKeys = new ArrayList<>();

    @Option(names = "--api-keys", paramLabel = "FILE", description = "A file of accepted keys, one per line ('#' comments).")
    Path apiKeyFile;

    @Option(names = {"--max-seqs", "--slots"}, defaultValue = "64", description = "Sequences running at once (decoded together). Default: ${DEFAULT-VALUE}.")
    int slots;

    @Option(names = "--context", paramLabel = "N", description = "Most tokens per sequence (default: the model's context).")
    Integer context;

    @Option(names = "--kv-tokens", paramLabel = "N",
            description = "KV-cache size in tokens, shared by all sequences (default: 16 x --context, what 16 fixed slots took).")
    Long kvTokens;

    @Option(names = "--page-size", defaultValue = "16", description = "Tokens per KV-cache page. Default: ${DEFAULT-VALUE}.")
    int pageSize;

    @Option(names = "--max-queue", defaultValue = "64", description = "Sequences that may wait for admission; beyond, 429. Default: ${DEFAULT-VALUE}.")
    int maxQueue;

    @Option(names = "--max-concurrent", defaultValue = "64", description = "Generation requests handled at once; beyond, 429. Default: ${DEFAULT-VALUE}.")
    int maxConcurrent;

    @Option(names = "--max-request-bytes", defaultValue = "1048576", description = "Largest request body. Default: ${DEFAULT-VALUE}.")
    long maxRequestBytes;

    @Option(names = "--max-prompt-tokens", defaultValue = "8192", description = "Longest prompt. Default: ${DEFAULT-VALUE}.")
    int maxPromptTokens;

    @Option(names = "--max-tokens", defaultValue = "4096", description = "Largest max_tokens a request may ask for. Default: ${DEFAULT-VALUE}.")
    int maxTokens;

    @Option(names = "--warmup", defaultValue = "10", paramLabel = "SECONDS",
            description = "Before listening, run throwaway sequences through the kernels for up to this long, so the first requests are not slowed by the JIT (0: off). Default: ${DEFAULT-VALUE}.")
    double warmup;

    @Mixin
    BackendOptions backendOptions;

    @Mixin
    WeightOptions weightOptions;

    @Mixin
    KvOptions kvOptions;

    @Override
    public Integer call() throws Exception {
        DType kvType = kvOptions.type();
        List<String> keys = new ArrayList<>(apiKeys);
        if (apiKeyFile != null) {
            try {
                for (String line : Files.readAllLines(apiKeyFile)) {
                    String k = line.strip();
                    if (!k.isEmpty() && !k.startsWith("#")) keys.add(k);
                }
            } catch (IOException e) {
                throw new UserException("cannot read --api-keys file " + apiKeyFile + ": " + e.getMessage());
            }
            if (keys.isEmpty()) throw new UserException("--api-keys file " + apiKeyFile + " holds no keys");
        }
        if (slots <= 0 || maxQueue < 0 || maxConcurrent <= 0 || maxRequestBytes <= 0 || maxPromptTokens <= 0 || maxTokens <= 0 || pageSize <= 0) {
            throw new UserException("--max-seqs, --max-concurrent, --max-request-bytes, --max-prompt-tokens, --max-tokens and --page-size must be positive");
        }
        if (port < 0 || port > 65535) throw new UserException("--port must be in 0..65535");
        if (!(warmup >= 0 && warmup <= 3600)) throw new UserException("--warmup must be in 0..3600 seconds");
        String name = modelName != null ? modelName : model.toAbsolutePath().normalize().getFileName().toString();
        try (Backend be = backendOptions.create(); ModelFiles.Loaded m = ModelFiles.load(model, be, weightOptions.type())) {
            int ctx = context != null ? context : m.model().config().context();
            if (ctx <= 1 || ctx > m.model().config().context()) throw new UserException("--context must be in 2.." + m.model().config().context());
            ServerConfig cfg = new ServerConfig(host, port, name, keys, maxRequestBytes, maxPromptTokens, maxTokens, maxConcurrent, 8, 1);
            long tokens = kvTokens != null ? kvTokens : 16L * ctx;
            if (tokens < ctx) throw new UserException("--kv-tokens " + tokens + " cannot hold one sequence of --context " + ctx);
            if (tokens / pageSize >= Integer.MAX_VALUE) throw new UserException("--kv-tokens " + tokens + " is too many pages of " + pageSize);
            try (BatchDecoder dec = warmedUp(new BatchDecoder(m.model(), slots, BatchDecoder.pagesFor(tokens, pageSize), pageSize, ctx, Math.max(slots, 64), kvType), warmup);
                 BatchEngine engine = new BatchEngine(dec, m.tokenizer(), Tokenizers.eosId(m.tokenizer()), new BatchEngine.Config(maxQueue));
                 OpenAiServer server = new OpenAiServer(engine, m.tokenizer(), cfg)) {
                System.err.printf("serving %s on http://%s:%d/ (up to %d sequences of up to %d tokens; KV cache %d pages x %d tokens, %s, %.1f MiB%s)%n",
                        name, host, server.port(), slots, ctx, dec.pages(), dec.pageSize(), dec.kvType(), dec.cacheBytes() / 1048576.0,
                        keys.isEmpty() ? "" : ", API keys required");
                String note = GenerateBenchCommand.kernelNote(m.model());
                if (note != null) System.err.println(note);
                CountDownLatch stop = new CountDownLatch(1);
                Runtime.getRuntime().addShutdownHook(new Thread(stop::countDown));
                stop.await();
            }
        }
        return 0;
    }

    /** Rounds of {@link BatchDecoder#warmUp}: enough for the kernels to be compiled (measured: see the option). */
    static final int WARMUP_ROUNDS = 12;

    /** Runs {@link BatchDecoder#warmUp} for at most {@code seconds} (none for 0), saying so on stderr. */
    static BatchDecoder warmedUp(BatchDecoder dec, double seconds) {
        if (seconds <= 0) return dec;
        long t0 = System.nanoTime();
        System.err.print("warming up the kernels (--warmup 0 skips)... ");
        int rounds = dec.warmUp(java.time.Duration.ofMillis((long) (seconds * 1000)), WARMUP_ROUNDS);
        System.err.printf(java.util.Locale.ROOT, "%d round(s) in %.1f s%n", rounds, (System.nanoTime() - t0) / 1e9);
        return dec;
    }
}
