package dev.crucible.serve;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.io.BufferedReader;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

import static org.junit.jupiter.api.Assertions.*;

/** Every endpoint of a live server over real HTTP: results, streaming, errors, auth, limits, cancellation. */
class OpenAiServerTest {
    static final ObjectMapper JSON = new ObjectMapper();
    static final HttpClient HTTP = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(5)).build();
    static TestServer ts;

    @BeforeAll
    static void start() { ts = TestServer.start(); }

    @AfterAll
    static void stop() { ts.close(); }

    record Res(int status, String body, HttpResponse<String> raw) {
        JsonNode json() throws Exception { return JSON.readTree(body); }
    }

    static Res post(String base, String path, String body, String key) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(30))
                .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body));
        if (key != null) b.header("Authorization", "Bearer " + key);
        HttpResponse<String> r = HTTP.send(b.build(), HttpResponse.BodyHandlers.ofString());
        return new Res(r.statusCode(), r.body(), r);
    }

    static Res get(String base, String path, String key) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(30)).GET();
        if (key != null) b.header("Authorization", "Bearer " + key);
        HttpResponse<String> r = HTTP.send(b.build(), HttpResponse.BodyHandlers.ofString());
        return new Res(r.statusCode(), r.body(), r);
    }

    static Res post(String path, String body) throws Exception { return post(ts.base, path, body, null); }

    /** The data: payloads of an SSE body, in order. */
    static List<String> events(String body) {
        List<String> out = new ArrayList<>();
        for (String block : body.split("\n\n")) {
            if (block.startsWith("data: ")) out.add(block.substring(6));
        }
        return out;
    }

    static void assertError(Res r, int status, String param) throws Exception {
        assertEquals(status, r.status(), r.body());
        JsonNode e = r.json().get("error");
        assertNotNull(e, r.body());
        assertTrue(e.get("message").isTextual());
        assertTrue(e.get("type").isTextual());
        assertTrue(e.has("param") && e.has("code"));
        if (param != null) assertEquals(param, e.get("param").asText());
    }

    @Test
    void healthModelsAndPage() throws Exception {
        assertEquals("ok", get(ts.base, "/health", null).json().get("status").asText());
        JsonNode m = get(ts.base, "/v1/models", null).json();
        assertEquals("list", m.get("object").asText());
        assertEquals("tiny", m.get("data").get(0).get("id").asText());
        assertEquals(200, get(ts.base, "/v1/models/tiny", null).status());
        assertError(get(ts.base, "/v1/models/nope", null), 404, "model");
        Res page = get(ts.base, "/", null);
        assertEquals(200, page.status());
        assertTrue(page.body().contains("/v1/chat/completions"));
        assertError(get(ts.base, "/v1/nothing", null), 404, null);
    }

    @Test
    void completionWithUsageAndFinishReason() throws Exception {
        Res r = post("/v1/completions", "{\"model\":\"tiny\",\"prompt\":\"hello\",\"max_tokens\":7,\"temperature\":0,\"ignore_eos\":true}");
        assertEquals(200, r.status(), r.body());
        JsonNode j = r.json();
        assertEquals("text_completion", j.get("object").asText());
        assertEquals("length", j.get("choices").get(0).get("finish_reason").asText());
        assertEquals(5, j.get("usage").get("prompt_tokens").asInt());
        assertEquals(7, j.get("usage").get("completion_tokens").asInt());
        assertEquals(12, j.get("usage").get("total_tokens").asInt());
        // Greedy is deterministic; a seeded sample is reproducible; n gives n choices.
        String text = j.get("choices").get(0).get("text").asText();
        assertEquals(text, post("/v1/completions", "{\"prompt\":\"hello\",\"max_tokens\":7,\"temperature\":0,\"ignore_eos\":true}").json().get("choices").get(0).get("text").asText());
        String seeded = "{\"prompt\":\"hi\",\"max_tokens\":10,\"temperature\":1,\"seed\":42,\"n\":2,\"top_k\":50,\"min_p\":0.01,\"frequency_penalty\":0.5,\"ignore_eos\":true}";
        JsonNode a = post("/v1/completions", seeded).json(), b = post("/v1/completions", seeded).json();
        assertEquals(2, a.get("choices").size());
        assertEquals(a.get("choices"), b.get("choices"));
        assertEquals(1, a.get("choices").get(1).get("index").asInt());
        assertEquals(20, a.get("usage").get("completion_tokens").asInt());
    }

    @Test
    void stopStringCutsText() throws Exception {
        String full = post("/v1/completions", "{\"prompt\":\"abc\",\"max_tokens\":12,\"temperature\":0,\"ignore_eos\":true}").json().get("choices").get(0).get("text").asText();
        String stop = full.substring(4, 6);
        JsonNode j = post("/v1/completions", "{\"prompt\":\"abc\",\"max_tokens\":12,\"temperature\":0,\"ignore_eos\":true,\"stop\":[" + JSON.writeValueAsString(stop) + "]}").json();
        assertEquals("stop", j.get("choices").get(0).get("finish_reason").asText());
        assertEquals(full.substring(0, full.indexOf(stop)), j.get("choices").get(0).get("text").asText());
    }

    @Test
    void logprobsAndEchoScoring() throws Exception {
        JsonNode j = post("/v1/completions", "{\"prompt\":\"hey\",\"max_tokens\":4,\"temperature\":0,\"logprobs\":2,\"ignore_eos\":true}").json();
        JsonNode lp = j.get("choices").get(0).get("logprobs");
        assertEquals(4, lp.get("tokens").size());
        assertEquals(4, lp.get("token_logprobs").size());
        assertEquals(2, lp.get("top_logprobs").get(0).size());
        // Greedy: the chosen token is the most likely alternative.
        double best = Double.NEGATIVE_INFINITY;
        for (JsonNode v : lp.get("top_logprobs").get(0)) best = Math.max(best, v.asDouble());
        assertEquals(best, lp.get("token_logprobs").get(0).asDouble(), 1e-9);
        // echo + max_tokens 0: the prompt scored, first token without a logprob.
        JsonNode e = post("/v1/completions", "{\"prompt\":\"scoring\",\"max_tokens\":0,\"echo\":true,\"logprobs\":0}").json();
        JsonNode c = e.get("choices").get(0);
        assertEquals("scoring", c.get("text").asText());
        assertEquals(7, c.get("logprobs").get("tokens").size());
        assertTrue(c.get("logprobs").get("token_logprobs").get(0).isNull());
        assertTrue(c.get("logprobs").get("token_logprobs").get(1).asDouble() < 0);
        assertEquals(0, e.get("usage").get("completion_tokens").asInt());
        // Chat logprobs format.
        JsonNode ch = post("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":3,\"logprobs\":true,\"top_logprobs\":2,\"ignore_eos\":true}").json();
        JsonNode content = ch.get("choices").get(0).get("logprobs").get("content");
        assertEquals(3, content.size());
        assertEquals(2, content.get(0).get("top_logprobs").size());
        assertTrue(content.get(0).get("bytes").isArray());
    }

    @Test
    void streamingEndsWithDoneAndUsage() throws Exception {
        Res r = post("/v1/completions", "{\"prompt\":\"hello\",\"max_tokens\":6,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"ignore_eos\":true}");
        assertEquals(200, r.status());
        assertTrue(r.raw().headers().firstValue("content-type").orElse("").startsWith("text/event-stream"));
        List<String> ev = events(r.body());
        assertEquals("[DONE]", ev.getLast());
        JsonNode usage = JSON.readTree(ev.get(ev.size() - 2));
        assertEquals(0, usage.get("choices").size());
        assertEquals(6, usage.get("usage").get("completion_tokens").asInt());
        StringBuilder text = new StringBuilder();
        String finish = null;
        for (String e : ev.subList(0, ev.size() - 2)) {
            JsonNode c = JSON.readTree(e).get("choices").get(0);
            text.append(c.get("text").asText());
            if (!c.get("finish_reason").isNull()) finish = c.get("finish_reason").asText();
        }
        assertEquals("length", finish);
        String whole = post("/v1/completions", "{\"prompt\":\"hello\",\"max_tokens\":6,\"temperature\":0,\"ignore_eos\":true}").json().get("choices").get(0).get("text").asText();
        assertEquals(whole, text.toString());
        // Chat streaming: role first, content deltas, a finish_reason, [DONE].
        List<String> ce = events(post("/v1/chat/completions", "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}],\"max_tokens\":5,\"stream\":true,\"n\":2,\"ignore_eos\":true}").body());
        assertEquals("[DONE]", ce.getLast());
        JsonNode first = JSON.readTree(ce.getFirst());
        assertEquals("chat.completion.chunk", first.get("object").asText());
        assertEquals("assistant", first.get("choices").get(0).get("delta").get("role").asText());
        long finals = ce.stream().filter(s -> s.contains("\"finish_reason\":\"length\"")).count();
        assertEquals(2, finals);
    }

    @Test
    void chatCompletion() throws Exception {
        JsonNode j = post("/v1/chat/completions", "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],\"max_tokens\":5,\"ignore_eos\":true,\"temperature\":0}").json();
        assertEquals("chat.completion", j.get("object").asText());
        assertEquals("assistant", j.get("choices").get(0).get("message").get("role").asText());
        assertTrue(j.get("choices").get(0).get("message").get("content").isTextual());
        assertEquals("length", j.get("choices").get(0).get("finish_reason").asText());
        assertEquals(6, j.get("usage").get("prompt_tokens").asInt());   // <|endoftext|> + "hello"
    }

    @Test
    void malformedRequestsAre4xx() throws Exception {
        assertError(post("/v1/completions", "{not json"), 400, null);
        assertError(post("/v1/completions", ""), 400, null);
        assertError(post("/v1/completions", "[1,2]"), 400, null);
        assertError(post("/v1/completions", "{}"), 400, "prompt");
        assertError(post("/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":\"ten\"}"), 400, "max_tokens");
        assertError(post("/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":-1}"), 400, "max_tokens");
        assertError(post("/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":100000}"), 400, "max_tokens");
        assertError(post("/v1/completions", "{\"prompt\":\"x\",\"temperature\":5}"), 400, "temperature");
        assertError(post("/v1/completions", "{\"prompt\":\"x\",\"n\":0}"), 400, "n");
        assertError(post("/v1/completions", "{\"prompt\":\"x\",\"stop\":[1]}"), 400, "stop");
        assertError(post("/v1/completions", "{\"prompt\":\"x\",\"logprobs\":9}"), 400, "logprobs");
        assertError(post("/v1/completions", "{\"prompt\":[99999]}"), 400, "prompt");
        assertError(post("/v1/completions", "{\"prompt\":\"" + "x".repeat(300) + "\"}"), 400, "prompt");
        assertError(post("/v1/completions", "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}"), 400, "stream_options");
        assertError(post("/v1/chat/completions", "{\"messages\":[]}"), 400, "messages");
        assertError(post("/v1/chat/completions", "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}"), 400, "messages[0].role");
        assertError(post("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":5}]}"), 400, "messages[0].content");
        assertError(post("/v1/completions", "{\"prompt\":\"" + "y".repeat(2 << 20) + "\"}"), 413, null);
        assertEquals("ok", get(ts.base, "/health", null).json().get("status").asText());
    }

    @Test
    void bearerAuth() throws Exception {
        try (TestServer s = new TestServer(ServerConfig.defaults("tiny").withApiKeys(List.of("k1", "secret-2")), 2, 4)) {
            assertError(get(s.base, "/v1/models", null), 401, null);
            assertError(get(s.base, "/v1/models", "wrong"), 401, null);
            assertError(post(s.base, "/v1/completions", "{\"prompt\":\"x\"}", "secret-"), 401, null);
            assertEquals(200, get(s.base, "/v1/models", "secret-2").status());
            assertEquals(200, post(s.base, "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2}", "k1").status());
            assertEquals(200, get(s.base, "/health", null).status());
            assertError(get(s.base, "/metrics", null), 401, null);
        }
    }

    /** Writes a POST /v1/completions with a JSON body on a raw connection. */
    static void send(OutputStream out, String body) throws Exception {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        out.write(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + b.length + "\r\n\r\n").getBytes(StandardCharsets.UTF_8));
        out.write(b);
        out.flush();
    }

    /** Opens a raw streaming request and returns the socket after the first data event arrived. */
    static Socket openStream(String base, String body) throws Exception {
        URI u = URI.create(base);
        Socket sock = new Socket(u.getHost(), u.getPort());
        send(sock.getOutputStream(), body);
        BufferedReader in = new BufferedReader(new InputStreamReader(sock.getInputStream(), StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null && !line.contains("data: ")) { /* headers, chunk sizes */ }
        assertNotNull(line, "stream produced no data");
        return sock;
    }

    static double metric(String base, String name) throws Exception {
        for (String line : get(base, "/metrics", null).body().split("\n")) {
            if (line.startsWith(name + " ")) return Double.parseDouble(line.substring(name.length() + 1));
        }
        throw new AssertionError("no metric " + name);
    }

    @Test
    void busyServerAnswers429AndDisconnectCancels() throws Exception {
        // The stream may run for 4,000 tokens (a long context), so it still holds the one permit when the second request
        // arrives however fast this machine decodes the tiny model (200 tokens once finished first on a quiet machine).
        ServerConfig cfg = ServerConfig.defaults("tiny").withLimits(1 << 20, 8192, 4096, 1);
        try (TestServer s = new TestServer(cfg, 2, 4, 8192)) {
            String longStream = "{\"prompt\":\"a\",\"max_tokens\":4000,\"stream\":true,\"ignore_eos\":true,\"temperature\":0}";
            Socket sock = openStream(s.base, longStream);
            Res busy = post(s.base, "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2}", null);
            assertError(busy, 429, null);
            assertEquals("1", busy.raw().headers().firstValue("retry-after").orElse(null));
            sock.close();
            // The engine notices at its next write; the sequence is cancelled and its slot freed.
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (metric(s.base, "crucible_sequences_cancelled_total") < 1 && System.nanoTime() < deadline) Thread.sleep(20);
            assertEquals(1, metric(s.base, "crucible_sequences_cancelled_total"));
            while (metric(s.base, "crucible_active_sequences") > 0 && System.nanoTime() < deadline) Thread.sleep(20);
            assertEquals(0, metric(s.base, "crucible_active_sequences"));
            assertEquals(0, metric(s.base, "crucible_kv_cache_tokens"));
            assertEquals(0, metric(s.base, "crucible_kv_cache_pages_used"));
            assertEquals(0, metric(s.base, "crucible_kv_cache_pages_reserved"));
            assertEquals(2 * 8192 / 16, metric(s.base, "crucible_kv_cache_pages_total"));
            assertTrue(metric(s.base, "crucible_generated_tokens_total") < 4000);
            assertEquals(200, post(s.base, "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2}", null).status());
        }
        // A full engine queue also answers 429: one slot, queue of 1, three requests at once. The stream holding the
        // slot runs for up to 8,000 tokens, and the third request is retried until the queue is seen full, so the
        // check does not depend on how fast this machine decodes.
        ServerConfig longRuns = new ServerConfig("127.0.0.1", 0, "tiny", List.of(), 1 << 20, 8192, 8000, 64, 8, 1);
        try (TestServer s = new TestServer(longRuns, 1, 1, 8192)) {
            String longStream = "{\"prompt\":\"a\",\"max_tokens\":8000,\"stream\":true,\"ignore_eos\":true}";
            Socket a = openStream(s.base, longStream);
            Thread t = Thread.ofVirtual().start(() -> {
                try {
                    post(s.base, "/v1/completions", "{\"prompt\":\"q\",\"max_tokens\":1}", null);
                } catch (Exception ignored) { }
            });
            long deadline = System.nanoTime() + 5_000_000_000L;
            while (metric(s.base, "crucible_queue_depth") < 1 && System.nanoTime() < deadline) Thread.sleep(10);
            Res third = null;
            for (int i = 0; i < 20 && (third == null || third.status() != 429); i++) {
                third = post(s.base, "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2}", null);
            }
            assertError(third, 429, null);
            a.close();
            t.join(10_000);
            assertTrue(metric(s.base, "crucible_requests_rejected_total") >= 1);
        }
    }

    /**
     * A non-streamed request waits silently for its whole answer, so no failed write reveals a client that hung up: the
     * server must notice the closed connection itself, cancel the sequence (its KV pages freed long before max_tokens)
     * and keep serving. The sequence may run for 8,000 tokens, so the close lands mid-decode on any machine.
     */
    @Test
    void nonStreamingDisconnectCancels() throws Exception {
        ServerConfig longRuns = new ServerConfig("127.0.0.1", 0, "tiny", List.of(), 1 << 20, 8192, 8000, 4, 8, 1);
        try (TestServer s = new TestServer(longRuns, 1, 4, 8192)) {
            URI u = URI.create(s.base);
            Socket sock = new Socket(u.getHost(), u.getPort());
            send(sock.getOutputStream(), "{\"prompt\":\"a\",\"max_tokens\":8000,\"ignore_eos\":true}");
            long deadline = System.nanoTime() + 30_000_000_000L;
            while ((metric(s.base, "crucible_active_sequences") < 1 || metric(s.base, "crucible_generated_tokens_total") < 1)
                    && System.nanoTime() < deadline) Thread.sleep(10);
            assertEquals(1, metric(s.base, "crucible_active_sequences"), "the request never started decoding");
            assertTrue(metric(s.base, "crucible_kv_cache_pages_reserved") > 0);
            sock.close();
            // Noticed at once (within a decode step or so); the deadline only leaves room for a loaded machine.
            deadline = System.nanoTime() + 10_000_000_000L;
            while (metric(s.base, "crucible_sequences_cancelled_total") < 1 && System.nanoTime() < deadline) Thread.sleep(20);
            assertEquals(1, metric(s.base, "crucible_sequences_cancelled_total"), "the sequence was not cancelled");
            while (metric(s.base, "crucible_active_sequences") > 0 && System.nanoTime() < deadline) Thread.sleep(20);
            assertEquals(0, metric(s.base, "crucible_active_sequences"));
            assertEquals(0, metric(s.base, "crucible_sequences_finished_total"));
            assertEquals(0, metric(s.base, "crucible_kv_cache_tokens"));
            assertEquals(0, metric(s.base, "crucible_kv_cache_pages_used"));
            assertEquals(0, metric(s.base, "crucible_kv_cache_pages_reserved"));
            assertTrue(metric(s.base, "crucible_generated_tokens_total") < 8000);
            while (metric(s.base, "crucible_client_disconnects_total") < 1 && System.nanoTime() < deadline) Thread.sleep(20);
            assertEquals(1, metric(s.base, "crucible_client_disconnects_total"));
            // The server goes on answering, on fresh connections and on a kept-alive one.
            assertEquals("ok", get(s.base, "/health", null).json().get("status").asText());
            Res ok = post(s.base, "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":3,\"ignore_eos\":true}", null);
            assertEquals(200, ok.status(), ok.body());
            assertEquals(3, ok.json().get("usage").get("completion_tokens").asInt());
            assertEquals(3, post(s.base, "/v1/completions", "{\"prompt\":\"y\",\"max_tokens\":3,\"ignore_eos\":true}", null).json().get("usage").get("completion_tokens").asInt());
        }
    }

    /** One HTTP/1.1 response with a Content-Length body, read off a raw socket: the status line and the body. */
    static String[] response(InputStream in) throws Exception {
        StringBuilder head = new StringBuilder();
        int c;
        while (!head.toString().endsWith("\r\n\r\n") && (c = in.read()) != -1) head.append((char) c);
        int length = 0;
        for (String line : head.toString().split("\r\n")) {
            if (line.toLowerCase(Locale.ROOT).startsWith("content-length:")) length = Integer.parseInt(line.substring(15).trim());
        }
        return new String[] {head.toString().split("\r\n")[0], new String(in.readNBytes(length), StandardCharsets.UTF_8)};
    }

    /**
     * The disconnect watch reads ahead while a non-streamed request waits; the bytes of requests pipelined behind it
     * must reach the parser intact and in order, and the connection must stay usable.
     */
    @Test
    void pipelinedRequestsAreAnsweredInOrder() throws Exception {
        URI u = URI.create(ts.base);
        try (Socket sock = new Socket(u.getHost(), u.getPort())) {
            sock.setSoTimeout(60_000);
            OutputStream out = sock.getOutputStream();
            InputStream in = sock.getInputStream();
            send(out, "{\"prompt\":\"a\",\"max_tokens\":40,\"ignore_eos\":true}");
            Thread.sleep(50);                                   // most likely read ahead while the first one decodes
            send(out, "{\"prompt\":\"b\",\"max_tokens\":3,\"ignore_eos\":true}");
            String[] first = response(in), second = response(in);
            assertEquals("HTTP/1.1 200 OK", first[0], first[1]);
            assertEquals(40, JSON.readTree(first[1]).get("usage").get("completion_tokens").asInt());
            assertEquals("HTTP/1.1 200 OK", second[0], second[1]);
            assertEquals(3, JSON.readTree(second[1]).get("usage").get("completion_tokens").asInt());
            out.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".getBytes(StandardCharsets.UTF_8));
            out.flush();
            String[] health = response(in);
            assertEquals("HTTP/1.1 200 OK", health[0]);
            assertEquals("ok", JSON.readTree(health[1]).get("status").asText());
        }
    }

    @Test
    void metricsExposition() throws Exception {
        post("/v1/completions", "{\"prompt\":\"m\",\"max_tokens\":3,\"ignore_eos\":true}");
        String text = get(ts.base, "/metrics", null).body();
        for (String name : List.of("crucible_requests_total{endpoint=\"completions\",code=\"200\"}", "crucible_queue_depth",
                "crucible_decode_tokens_per_second", "crucible_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
                "crucible_kv_cache_usage_ratio", "crucible_generated_tokens_total", "crucible_kv_cache_pages_total",
                "crucible_kv_cache_pages_used", "crucible_kv_cache_pages_reserved", "crucible_kv_cache_page_size")) {
            assertTrue(text.contains(name), name + " missing from\n" + text);
        }
        assertTrue(metric(ts.base, "crucible_time_to_first_token_seconds_count") >= 1);
    }
}
