package dev.crucible.serve;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.crucible.engine.BatchEngine;
import dev.crucible.engine.ChatTemplate;
import dev.crucible.engine.CompletionRequest;
import dev.crucible.engine.SamplingParams;
import dev.crucible.engine.SequenceEvent;
import dev.crucible.formats.tokenizer.Tokenizer;
import io.helidon.common.socket.SocketOptions;
import io.helidon.webserver.CloseConnectionException;
import io.helidon.webserver.WebServer;
import io.helidon.webserver.http.ServerRequest;
import io.helidon.webserver.http.ServerResponse;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;

/**
 * The OpenAI-compatible HTTP API over a {@link BatchEngine}, on Helidon SE (one virtual thread per request; the
 * engine's scheduler thread does all model work). Routes:
 * <pre>
 *   GET  /                     the chat page
 *   GET  /health               {"status": "ok"}
 *   GET  /metrics              Prometheus text
 *   GET  /v1/models            the one model
 *   POST /v1/completions       prompt → text; stream, n, stop, logprobs, echo, usage
 *   POST /v1/chat/completions  messages → reply through the tokenizer's chat template
 * </pre>
 * Contract: a client's mistake is a 4xx with {@code {"error": {"message","type","param","code"}}}; overload is a 429
 * with Retry-After (too many requests in flight, or the engine's queue full); a client that goes away has its
 * sequences cancelled: they leave the batch at the next decode step and their KV pages are freed. A stream notices at
 * its next write; a non-streamed request, which writes nothing until the end, through the {@link ClientWatch} on its
 * connection.
 */
public final class OpenAiServer implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final BatchEngine engine;
    private final Tokenizer tokenizer;
    private final ChatTemplate template;
    private final ServerConfig cfg;
    private final Semaphore permits;
    private final byte[][] keyHashes;
    private final ServerMetrics metrics = new ServerMetrics();
    private final long created = System.currentTimeMillis() / 1000;
    private final WebServer server;

    public OpenAiServer(BatchEngine engine, Tokenizer tokenizer, ServerConfig cfg) {
        this.engine = engine;
        this.tokenizer = tokenizer;
        this.template = ChatTemplate.of(tokenizer);
        this.cfg = cfg;
        this.permits = new Semaphore(cfg.maxConcurrent());
        this.keyHashes = cfg.apiKeys().stream().map(OpenAiServer::sha256).toArray(byte[][]::new);
        this.server = WebServer.builder()
                .host(cfg.host())
                .port(cfg.port())
                .maxPayloadSize(Math.max(cfg.maxRequestBytes() * 16, 64L << 20))   // a backstop: readBody enforces the limit with an OpenAI error
                .connectionOptions(SocketOptions.builder().tcpNoDelay(true).build())
                .addConnectionSelector(ClientWatch.http1())       // tried before Helidon's own HTTP/1 selector
                .routing(r -> r
                        .get("/", (q, s) -> page(s))
                        .get("/health", (q, s) -> json(s, 200, JSON.createObjectNode().put("status", "ok")))
                        .get("/metrics", (q, s) -> guarded(q, s, "metrics", () -> metricsText(s)))
                        .get("/v1/models", (q, s) -> guarded(q, s, "models", () -> json(s, 200, models())))
                        .get("/v1/models/{id}", (q, s) -> guarded(q, s, "models", () -> model(q, s)))
                        .post("/v1/completions", (q, s) -> guarded(q, s, "completions", () -> generate(q, s, false)))
                        .post("/v1/chat/completions", (q, s) -> guarded(q, s, "chat", () -> generate(q, s, true)))
                        .any((q, s) -> guarded(q, s, "other", () -> {
                            throw new ApiError(404, "invalid_request_error", "no route " + q.prologue().method().text()
                                    + " " + q.path().path(), null, "unknown_url");
                        })))
                .build()
                .start();
    }

    /** The bound port (useful with port 0). */
    public int port() { return server.port(); }

    @Override
    public void close() { server.stop(); }

    // ------------------------------------------------------------------ plumbing

    private interface Action {
        void run() throws IOException;
    }

    /** Auth, error mapping and request counting around one route. */
    private void guarded(ServerRequest q, ServerResponse s, String endpoint, Action action) {
        int status = 200;
        try {
            boolean open = endpoint.equals("other") && !q.path().path().startsWith("/v1");
            if (!open) authorize(q);
            action.run();
            status = s.status().code();
        } catch (ApiError e) {
            status = e.status;
            if (!s.isSent()) error(s, e);
        } catch (CloseConnectionException e) {
            // The client hung up before its answer was ready: nothing to send; Helidon closes the connection.
            status = 499;
            throw e;
        } catch (Exception e) {
            status = 500;
            if (!s.isSent()) {
                try {
                    error(s, new ApiError(500, "server_error", "internal error: " + e, null, null));
                } catch (IllegalStateException streaming) {
                    // The response was already streaming when writing failed: the client went away mid-stream
                    // (its sequence is cancelled by the stream's own handling). Nothing can be sent; it is not a
                    // server error, so it is counted as nginx's 499 "client closed request".
                    status = 499;
                }
            }
        } finally {
            metrics.request(endpoint, status);
        }
    }

    private void authorize(ServerRequest q) {
        if (keyHashes.length == 0) return;
        String h = q.headers().first(io.helidon.http.HeaderNames.AUTHORIZATION).orElse("");
        String token = h.regionMatches(true, 0, "Bearer ", 0, 7) ? h.substring(7).trim() : "";
        byte[] given = sha256(token);
        boolean ok = false;
        // Compare against every key, hashes of equal length, no early exit: timing reveals nothing about the keys.
        for (byte[] k : keyHashes) ok |= MessageDigest.isEqual(k, given);
        if (!ok || token.isEmpty()) {
            throw new ApiError(401, "invalid_request_error",
                    token.isEmpty() ? "missing API key: send 'Authorization: Bearer KEY'" : "incorrect API key", null, "invalid_api_key");
        }
    }

    private static byte[] sha256(String s) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static void json(ServerResponse s, int status, JsonNode body) {
        s.status(status);
        s.header("Content-Type", "application/json");
        try {
            s.send(JSON.writeValueAsBytes(body));
        } catch (JsonProcessingException e) {
            throw new UncheckedIOException(e);
        }
    }

    private void error(ServerResponse s, ApiError e) {
        if (e.status == 429) s.header("Retry-After", Integer.toString(cfg.retryAfterSeconds()));
        if (e.status == 401) s.header("WWW-Authenticate", "Bearer");
        json(s, e.status, errorBody(e));
    }

    private static ObjectNode errorBody(ApiError e) {
        ObjectNode err = JSON.createObjectNode();
        err.put("message", e.getMessage());
        err.put("type", e.type);
        err.put("param", e.param);
        err.put("code", e.code);
        ObjectNode root = JSON.createObjectNode();
        root.set("error", err);
        return root;
    }

    private JsonNode readBody(ServerRequest q) throws IOException {
        long declared = q.headers().contentLength().orElse(-1);
        if (declared > cfg.maxRequestBytes()) throw tooLarge();
        byte[] bytes;
        try (InputStream in = q.content().inputStream()) {
            bytes = in.readNBytes((int) Math.min(Integer.MAX_VALUE - 8, cfg.maxRequestBytes() + 1));
        }
        if (bytes.length > cfg.maxRequestBytes()) throw tooLarge();
        if (bytes.length == 0) throw ApiError.invalid("the request body is empty; expected a JSON object", null);
        try {
            return JSON.readTree(bytes);
        } catch (JsonProcessingException e) {
            throw ApiError.invalid("the request body is not valid JSON: " + e.getOriginalMessage(), null);
        }
    }

    private ApiError tooLarge() {
        return new ApiError(413, "invalid_request_error", "the request body exceeds " + cfg.maxRequestBytes() + " bytes", null, "request_too_large");
    }

    // ------------------------------------------------------------------ simple routes

    private void page(ServerResponse s) throws IOException {
        try (InputStream in = OpenAiServer.class.getResourceAsStream("index.html")) {
            if (in == null) throw new IOException("index.html missing from the jar");
            s.header("Content-Type", "text/html; charset=utf-8");
            s.send(in.readAllBytes());
        }
    }

    private ObjectNode modelObject() {
        ObjectNode m = JSON.createObjectNode();
        m.put("id", cfg.modelName());
        m.put("object", "model");
        m.put("created", created);
        m.put("owned_by", "crucible");
        m.put("context_length", engine.capacity());
        return m;
    }

    private ObjectNode models() {
        ObjectNode root = JSON.createObjectNode();
        root.put("object", "list");
        root.putArray("data").add(modelObject());
        return root;
    }

    private void model(ServerRequest q, ServerResponse s) {
        String id = q.path().pathParameters().get("id");
        if (!id.equals(cfg.modelName())) throw new ApiError(404, "invalid_request_error", "the model '" + id + "' does not exist", "model", "model_not_found");
        json(s, 200, modelObject());
    }

    private void metricsText(ServerResponse s) {
        s.header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
        s.send(metrics.render(engine, cfg.maxConcurrent() - permits.availablePermits()).getBytes(StandardCharsets.UTF_8));
    }

    // ------------------------------------------------------------------ generation

    private record Tagged(int choice, SequenceEvent event) {}

    /** Queued by the connection's {@link ClientWatch} when the client of a non-streamed request hangs up. */
    private static final Tagged HUNG_UP = new Tagged(-1, null);

    /** Per-choice accumulation for a non-streamed response and for the final streamed chunk. */
    private static final class Choice {
        final StringBuilder text = new StringBuilder();
        final List<SequenceEvent.TokenLogprob> prompt = new ArrayList<>();
        final List<SequenceEvent.TokenLogprob> tokens = new ArrayList<>();
        SequenceEvent.Done done;
        boolean started;
    }

    private void generate(ServerRequest q, ServerResponse s, boolean chat) throws IOException {
        JsonNode body = readBody(q);
        Params p = Params.parse(body, chat, tokenizer, template, cfg, engine.capacity());
        if (!permits.tryAcquire()) {
            metrics.rejected.increment();
            throw new ApiError(429, "rate_limit_exceeded", "the server is busy (" + cfg.maxConcurrent() + " requests in flight); retry later", null, "rate_limit_exceeded");
        }
        int total = p.prompts().size() * p.n();
        BlockingQueue<Tagged> events = new LinkedBlockingQueue<>();
        List<BatchEngine.Handle> handles = new ArrayList<>();
        try {
            for (int c = 0; c < total; c++) {
                int choice = c;
                SamplingParams sp = p.sampling();
                int k = c % p.n();
                if (k > 0) {
                    sp = new SamplingParams(sp.temperature(), sp.topK(), sp.topP(), sp.seed() + k, sp.minP(),
                            sp.repetitionPenalty(), sp.frequencyPenalty(), sp.presencePenalty());
                }
                CompletionRequest cr = new CompletionRequest(p.prompts().get(c / p.n()), p.maxTokens(), sp, p.stops(),
                        p.logprobs(), p.echo(), p.ignoreEos());
                BatchEngine.Handle h = engine.submit(cr, e -> events.add(new Tagged(choice, e)));
                if (h == null) {
                    metrics.rejected.increment();
                    throw new ApiError(429, "rate_limit_exceeded", "the request queue is full; retry later", null, "rate_limit_exceeded");
                }
                handles.add(h);
            }
            String id = (chat ? "chatcmpl-" : "cmpl-") + UUID.randomUUID().toString().replace("-", "");
            if (p.stream()) stream(s, p, id, total, events, handles);
            else collect(s, p, id, total, events);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ApiError(503, "server_error", "interrupted", null, null);
        } finally {
            handles.forEach(BatchEngine.Handle::cancel);      // no-op for finished sequences
            permits.release();
        }
    }

    /**
     * Waits for every choice, then sends one JSON response. Nothing is written while waiting, so a client that hangs
     * up is noticed by the connection's watch: the wait ends at once, the caller's finally cancels the sequences
     * (freeing their KV pages), and the connection is closed without a response.
     */
    private void collect(ServerResponse s, Params p, String id, int total, BlockingQueue<Tagged> events) throws InterruptedException {
        Choice[] ch = new Choice[total];
        for (int i = 0; i < total; i++) ch[i] = new Choice();
        ClientWatch watch = ClientWatch.current();
        if (watch != null) watch.onHangUp(() -> events.add(HUNG_UP));
        int done = 0;
        while (done < total) {
            Tagged t = events.take();
            if (t == HUNG_UP) {
                metrics.disconnects.increment();
                throw new CloseConnectionException("the client closed the connection before its completion was ready");
            }
            Choice c = ch[t.choice()];
            switch (t.event()) {
                case SequenceEvent.Prompt pr -> c.prompt.addAll(pr.tokens());
                case SequenceEvent.Chunk k -> {
                    c.text.append(k.text());
                    c.tokens.addAll(k.tokens());
                }
                case SequenceEvent.Done d -> {
                    c.done = d;
                    done++;
                }
            }
        }
        for (Choice c : ch) {
            if (c.done.finishReason().equals("error")) throw new ApiError(500, "server_error", "generation failed: " + c.done.error(), null, null);
        }
        ObjectNode root = JSON.createObjectNode();
        root.put("id", id);
        root.put("object", p.chat() ? "chat.completion" : "text_completion");
        root.put("created", System.currentTimeMillis() / 1000);
        root.put("model", cfg.modelName());
        ArrayNode choices = root.putArray("choices");
        int promptTokens = 0, completionTokens = 0;
        for (int i = 0; i < total; i++) {
            Choice c = ch[i];
            ObjectNode o = choices.addObject();
            o.put("index", i);
            String promptText = p.promptTexts().get(i / p.n());
            if (p.chat()) {
                ObjectNode msg = o.putObject("message");
                msg.put("role", "assistant");
                msg.put("content", c.text.toString());
                o.set("logprobs", p.logprobs() >= 0 ? chatLogprobs(c.tokens) : null);
            } else {
                o.put("text", p.echo() ? promptText + c.text : c.text.toString());
                o.set("logprobs", p.logprobs() >= 0 ? completionLogprobs(c.prompt, c.tokens, p.echo() ? 0 : -1) : null);
            }
            o.put("finish_reason", c.done.finishReason());
            if (i % p.n() == 0) promptTokens += c.done.promptTokens();
            completionTokens += c.done.completionTokens();
        }
        root.set("usage", usage(promptTokens, completionTokens));
        json(s, 200, root);
    }

    private void stream(ServerResponse s, Params p, String id, int total, BlockingQueue<Tagged> events,
                        List<BatchEngine.Handle> handles) throws InterruptedException {
        s.status(200);
        s.header("Content-Type", "text/event-stream");
        s.header("Cache-Control", "no-cache");
        s.header("X-Accel-Buffering", "no");
        long createdAt = System.currentTimeMillis() / 1000;
        Choice[] ch = new Choice[total];
        for (int i = 0; i < total; i++) ch[i] = new Choice();
        int done = 0, promptTokens = 0, completionTokens = 0;
        try (OutputStream out = s.outputStream()) {
            if (p.chat()) {
                for (int i = 0; i < total; i++) {
                    ObjectNode delta = JSON.createObjectNode().put("role", "assistant").put("content", "");
                    send(out, chunk(p, id, createdAt, i, delta, null, null));
                }
            }
            while (done < total) {
                Tagged t = events.poll(1, TimeUnit.SECONDS);
                if (t == null) {
                    // An SSE comment: clients ignore it, and a write to a closed connection fails, which is how a
                    // client that left during a long prefill or queue wait is noticed.
                    out.write(": keep-alive\n\n".getBytes(StandardCharsets.UTF_8));
                    out.flush();
                    continue;
                }
                int i = t.choice();
                switch (t.event()) {
                    case SequenceEvent.Prompt pr -> ch[i].prompt.addAll(pr.tokens());
                    case SequenceEvent.Chunk k -> {
                        String text = k.text();
                        if (p.echo() && !ch[i].started) text = p.promptTexts().get(i / p.n()) + text;
                        ch[i].started = true;
                        JsonNode lp = p.logprobs() < 0 ? null : p.chat() ? chatLogprobs(k.tokens()) : completionLogprobs(List.of(), k.tokens(), -1);
                        send(out, p.chat()
                                ? chunk(p, id, createdAt, i, JSON.createObjectNode().put("content", text), lp, null)
                                : chunk(p, id, createdAt, i, text, lp, null));
                    }
                    case SequenceEvent.Done d -> {
                        done++;
                        if (i % p.n() == 0) promptTokens += d.promptTokens();
                        completionTokens += d.completionTokens();
                        if (p.echo() && !ch[i].started) {
                            send(out, chunk(p, id, createdAt, i, p.promptTexts().get(i / p.n()), null, null));
                        }
                        if (d.finishReason().equals("error")) {
                            ApiError e = new ApiError(500, "server_error", "generation failed: " + d.error(), null, null);
                            send(out, errorBody(e));
                            continue;
                        }
                        send(out, p.chat() ? chunk(p, id, createdAt, i, JSON.createObjectNode(), null, d.finishReason())
                                : chunk(p, id, createdAt, i, "", null, d.finishReason()));
                    }
                }
            }
            if (p.includeUsage()) {
                ObjectNode u = JSON.createObjectNode();
                u.put("id", id);
                u.put("object", p.chat() ? "chat.completion.chunk" : "text_completion");
                u.put("created", createdAt);
                u.put("model", cfg.modelName());
                u.putArray("choices");
                u.set("usage", usage(promptTokens, completionTokens));
                send(out, u);
            }
            out.write("data: [DONE]\n\n".getBytes(StandardCharsets.UTF_8));
            out.flush();
        } catch (IOException | UncheckedIOException e) {
            // The client went away: stop its sequences now (the finally in generate() cancels them too).
            handles.forEach(BatchEngine.Handle::cancel);
            metrics.disconnects.increment();
        }
    }

    private ObjectNode chunk(Params p, String id, long createdAt, int index, Object deltaOrText, JsonNode logprobs, String finish) {
        ObjectNode root = JSON.createObjectNode();
        root.put("id", id);
        root.put("object", p.chat() ? "chat.completion.chunk" : "text_completion");
        root.put("created", createdAt);
        root.put("model", cfg.modelName());
        ObjectNode c = root.putArray("choices").addObject();
        c.put("index", index);
        if (p.chat()) c.set("delta", (JsonNode) deltaOrText);
        else c.put("text", (String) deltaOrText);
        c.set("logprobs", logprobs);
        c.put("finish_reason", finish);
        if (p.includeUsage()) root.putNull("usage");
        return root;
    }

    private static void send(OutputStream out, JsonNode event) {
        try {
            out.write(("data: " + JSON.writeValueAsString(event) + "\n\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static ObjectNode usage(int prompt, int completion) {
        ObjectNode u = JSON.createObjectNode();
        u.put("prompt_tokens", prompt);
        u.put("completion_tokens", completion);
        u.put("total_tokens", prompt + completion);
        return u;
    }

    /** Legacy completions format: parallel arrays; echoed prompt tokens first (the very first has no logprob). */
    private static ObjectNode completionLogprobs(List<SequenceEvent.TokenLogprob> prompt, List<SequenceEvent.TokenLogprob> gen, int offset0) {
        ObjectNode o = JSON.createObjectNode();
        ArrayNode tokens = o.putArray("tokens"), lps = o.putArray("token_logprobs"), tops = o.putArray("top_logprobs"), offs = o.putArray("text_offset");
        int offset = Math.max(offset0, 0);
        List<SequenceEvent.TokenLogprob> all = new ArrayList<>(prompt);
        all.addAll(gen);
        for (SequenceEvent.TokenLogprob t : all) {
            tokens.add(t.token());
            if (Double.isNaN(t.logprob())) {
                lps.addNull();
                tops.addNull();
            } else {
                lps.add(t.logprob());
                ObjectNode top = tops.addObject();
                for (SequenceEvent.TokenLogprob a : t.top()) if (!top.has(a.token())) top.put(a.token(), a.logprob());
            }
            offs.add(offset);
            offset += new String(t.bytes(), StandardCharsets.UTF_8).length();
        }
        return o;
    }

    /** Chat format: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}. */
    private static ObjectNode chatLogprobs(List<SequenceEvent.TokenLogprob> gen) {
        ObjectNode o = JSON.createObjectNode();
        ArrayNode content = o.putArray("content");
        for (SequenceEvent.TokenLogprob t : gen) {
            ObjectNode e = tokenEntry(t);
            ArrayNode top = e.putArray("top_logprobs");
            for (SequenceEvent.TokenLogprob a : t.top()) top.add(tokenEntry(a));
            content.add(e);
        }
        return o;
    }

    private static ObjectNode tokenEntry(SequenceEvent.TokenLogprob t) {
        ObjectNode e = JSON.createObjectNode();
        e.put("token", t.token());
        e.put("logprob", Double.isNaN(t.logprob()) ? -9999.0 : t.logprob());
        ArrayNode b = e.putArray("bytes");
        for (byte x : t.bytes()) b.add(x & 0xFF);
        return e;
    }

    static String fmt(double v) { return String.format(Locale.ROOT, "%.6g", v); }
}
