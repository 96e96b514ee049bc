package dev.crucible.cli;

import dev.crucible.backend.Backend;
import dev.crucible.engine.BatchEngine;
import dev.crucible.model.BatchDecoder;
import dev.crucible.serve.MixedLoad;
import dev.crucible.serve.OpenAiServer;
import dev.crucible.serve.ServerConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.concurrent.Callable;

@Command(name = "load", mixinStandardHelpOptions = true, sortOptions = false,
        header = "A bounded soak of the server: concurrent clients mixing streams, n=2, chat, abandoned streams, hung-up requests and malformed requests.",
        description = {"Starts the model behind a server on a free loopback port (or uses --url), runs --clients concurrent",
                "clients for --seconds, and reports requests by kind and status, 5xx (must be 0), lost and duplicated",
                "completions (must be 0), error bodies of 4xx answers, time to first token p50/p99, and whether /health",
                "still answers; for a server it started, also that the engine drains within 15 s of the last client (no",
                "sequence left running for a client that is gone, every KV page free). Exit 1 if any of those fail. Only",
                "the given server is contacted; the run stops by itself."})
final class LoadBenchCommand implements Callable<Integer> {
    @Option(names = "--model", paramLabel = "PATH", description = "Serve this model (checkpoint/run, HF directory or GGUF).")
    Path model;

    @Option(names = "--url", description = "Load a running server instead, e.g. http://127.0.0.1:8080 (loopback only).")
    String url;

    @Option(names = "--api-key", description = "Bearer token for --url.")
    String apiKey;

    @Option(names = "--clients", defaultValue = "32", description = "Concurrent clients. Default: ${DEFAULT-VALUE}.")
    int clients;

    @Option(names = "--seconds", defaultValue = "60", description = "Duration. Default: ${DEFAULT-VALUE}.")
    double seconds;

    @Option(names = "--slots", defaultValue = "16", description = "Sequences the started server runs at once (KV cache: this many contexts). Default: ${DEFAULT-VALUE}.")
    int slots;

    @Option(names = "--warmup", defaultValue = "10", paramLabel = "SECONDS",
            description = "As crucible serve: warm the started server's kernels up for up to this long first (0: off). Default: ${DEFAULT-VALUE}.")
    double warmup;

    @Option(names = "--seed", defaultValue = "1", description = "Seed of the request mix. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Mixin
    BackendOptions backendOptions;

    @Mixin
    WeightOptions weightOptions;

    @Mixin
    KvOptions kvOptions;

    @Override
    public Integer call() throws Exception {
        if ((model == null) == (url == null)) throw new UserException("give exactly one of --model PATH or --url URL");
        if (clients <= 0 || !(seconds > 0) || slots <= 0) throw new UserException("--clients, --seconds and --slots must be positive");
        if (!(warmup >= 0 && warmup <= 3600)) throw new UserException("--warmup must be in 0..3600 seconds");
        kvOptions.type();                                                 // a bad --kv-type fails before the model loads
        if (url != null) {
            String host = java.net.URI.create(url).getHost();
            if (host == null || !(host.equals("localhost") || host.startsWith("127.") || host.equals("[::1]") || host.equals("::1"))) {
                throw new UserException("--url must be a loopback address (localhost, 127.x.x.x, [::1])");
            }
            return report(MixedLoad.run(url, apiKey, clients, seconds, seed), true);
        }
        try (Backend be = backendOptions.create(); ModelFiles.Loaded m = ModelFiles.load(model, be, weightOptions.type());
             BatchDecoder dec = ServeCommand.warmedUp(new BatchDecoder(m.model(), slots,
                     BatchDecoder.pagesFor((long) slots * m.model().config().context(), BatchDecoder.DEFAULT_PAGE_SIZE),
                     BatchDecoder.DEFAULT_PAGE_SIZE, m.model().config().context(), Math.max(slots, 64), kvOptions.type()), warmup);
             BatchEngine engine = new BatchEngine(dec, m.tokenizer(), Tokenizers.eosId(m.tokenizer()), new BatchEngine.Config(4 * slots));
             OpenAiServer server = new OpenAiServer(engine, m.tokenizer(), ServerConfig.defaults("load").withPort(0))) {
            System.out.printf("serving %s on 127.0.0.1:%d with %d slots; %d clients for %.0f s ...%n", model, server.port(), slots, clients, seconds);
            MixedLoad.Result r = MixedLoad.run("http://127.0.0.1:" + server.port(), null, clients, seconds, seed);
            // Every client has its answer or has gone: the engine must drain (hung-up and abandoned sequences are
            // cancelled at once, not run to max_tokens) and give back every KV page.
            BatchEngine.Stats st = engine.stats();
            long deadline = System.nanoTime() + 15_000_000_000L;
            while ((st.active() > 0 || st.waiting() > 0) && System.nanoTime() < deadline) Thread.sleep(20);
            boolean drained = st.active() == 0 && st.waiting() == 0 && st.pagesUsed() == 0 && st.pagesReserved() == 0;
            System.out.printf("engine after the run: %d finished, %d cancelled, %d active, %d KV pages in use%s%n",
                    st.finished.sum(), st.cancelled.sum(), st.active(), st.pagesUsed(), drained ? "" : " (NOT DRAINED within 15 s)");
            return report(r, drained);
        }
    }

    private static int report(MixedLoad.Result r, boolean drained) {
        System.out.printf("requests %d in %.1f s by kind %s%n", r.requests(), r.seconds(), r.byKind());
        System.out.printf("HTTP status %s%n", r.byStatus());
        System.out.printf("5xx %d, lost %d, duplicated %d, 4xx without an error body %d, healthy after: %s%n", r.serverErrors(),
                r.lost(), r.duplicated(), r.badErrorBodies(), r.healthyAfter() ? "yes" : "NO");
        System.out.printf("time to first token: p50 %.1f ms, p99 %.1f ms%n", r.ttftP50() * 1e3, r.ttftP99() * 1e3);
        r.problems().forEach(p -> System.out.println("  problem: " + p));
        boolean ok = r.ok() && drained;
        System.out.println(ok ? "PASS" : "FAIL");
        return ok ? 0 : 1;
    }
}
