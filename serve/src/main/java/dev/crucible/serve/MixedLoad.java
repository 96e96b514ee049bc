package dev.crucible.serve;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.tensor.Rng;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A bounded soak of a running server, as its clients would load it: {@code clients} concurrent clients, each
 * looping for {@code seconds} over a seeded mix of streaming completions, non-streaming completions with n = 2, chat
 * completions, streams the client abandons after the first chunk, non-streamed completions whose client hangs up
 * before the answer, and malformed requests. Only loopback or the given URL is ever contacted, every request has a
 * timeout, and the run stops by itself.
 *
 * <p>What counts: a 5xx is never acceptable; a malformed request must get a 4xx with an OpenAI error body; every
 * completion that was not abandoned must arrive whole: a stream ends with exactly one {@code data: [DONE]} after a
 * chunk with a finish_reason, a non-streaming response has choices with indices exactly 0..n-1 (a missing one is
 * "lost", a repeated one "duplicated"). Afterwards {@code /health} must answer 200.
 */
public final class MixedLoad {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** Outcome; times in seconds. */
    public record Result(int requests, Map<String, Integer> byKind, Map<Integer, Integer> byStatus, int serverErrors,
                         int lost, int duplicated, int badErrorBodies, List<String> problems, double ttftP50, double ttftP99,
                         boolean healthyAfter, double seconds) {
        public boolean ok() {
            return serverErrors == 0 && lost == 0 && duplicated == 0 && badErrorBodies == 0 && healthyAfter;
        }
    }

    private MixedLoad() {}

    public static Result run(String baseUrl, String apiKey, int clients, double seconds, long seed) throws InterruptedException {
        HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(10)).build();
        long deadline = System.nanoTime() + (long) (seconds * 1e9);
        Map<String, AtomicInteger> kinds = new ConcurrentHashMap<>();
        Map<Integer, AtomicInteger> statuses = new ConcurrentHashMap<>();
        AtomicInteger requests = new AtomicInteger(), serverErrors = new AtomicInteger(), lost = new AtomicInteger(),
                duplicated = new AtomicInteger(), badBodies = new AtomicInteger();
        List<Double> ttfts = Collections.synchronizedList(new ArrayList<>());
        List<String> problems = Collections.synchronizedList(new ArrayList<>());
        long t0 = System.nanoTime();
        List<Thread> threads = new ArrayList<>();
        for (int c = 0; c < clients; c++) {
            int client = c;
            threads.add(Thread.ofVirtual().start(() -> {
                for (int i = 0; System.nanoTime() < deadline; i++) {
                    Rng rng = Rng.keyed(seed, client, i);
                    int pick = rng.nextInt(11);
                    String kind = pick < 4 ? "stream" : pick < 6 ? "complete_n2" : pick < 7 ? "chat" : pick < 9 ? "abandon"
                            : pick < 10 ? "hang_up" : "malformed";
                    kinds.computeIfAbsent(kind, k -> new AtomicInteger()).incrementAndGet();
                    requests.incrementAndGet();
                    try {
                        int status = switch (kind) {
                            case "stream", "abandon" -> stream(http, baseUrl, apiKey, rng, kind.equals("abandon"), ttfts, lost, duplicated, problems);
                            case "complete_n2" -> complete(http, baseUrl, apiKey, rng, lost, duplicated, problems);
                            case "chat" -> chat(http, baseUrl, apiKey, lost, problems);
                            case "hang_up" -> hangUp(baseUrl, apiKey, rng);
                            default -> malformed(http, baseUrl, apiKey, rng, badBodies, problems);
                        };
                        statuses.computeIfAbsent(status, k -> new AtomicInteger()).incrementAndGet();
                        if (status >= 500) {
                            serverErrors.incrementAndGet();
                            problems.add(kind + ": HTTP " + status);
                        }
                    } catch (Exception e) {
                        lost.incrementAndGet();
                        problems.add(kind + ": " + e);
                    }
                }
            }));
        }
        for (Thread t : threads) t.join();
        double wall = (System.nanoTime() - t0) / 1e9;
        boolean healthy;
        try {
            healthy = http.send(HttpRequest.newBuilder(URI.create(baseUrl + "/health")).timeout(Duration.ofSeconds(10)).build(),
                    HttpResponse.BodyHandlers.ofString()).statusCode() == 200;
        } catch (Exception e) {
            healthy = false;
        }
        List<Double> sorted = new ArrayList<>(ttfts);
        Collections.sort(sorted);
        double p50 = sorted.isEmpty() ? Double.NaN : sorted.get(sorted.size() / 2);
        double p99 = sorted.isEmpty() ? Double.NaN : sorted.get(Math.min(sorted.size() - 1, (int) Math.ceil(0.99 * sorted.size()) - 1));
        Map<String, Integer> k = new TreeMap<>();
        kinds.forEach((a, b) -> k.put(a, b.get()));
        Map<Integer, Integer> s = new TreeMap<>();
        statuses.forEach((a, b) -> s.put(a, b.get()));
        return new Result(requests.get(), k, s, serverErrors.get(), lost.get(), duplicated.get(), badBodies.get(),
                List.copyOf(problems.subList(0, Math.min(20, problems.size()))), p50, p99, healthy, wall);
    }

    private static HttpRequest.Builder post(String base, String path, String key, String body) {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(60))
                .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body));
        if (key != null) b.header("Authorization", "Bearer " + key);
        return b;
    }

    private static String prompt(Rng rng) {
        return "<|endoftext|>" + rng.nextInt(1000) + (rng.nextInt(2) == 0 ? "+" : "-") + rng.nextInt(1000) + "=";
    }

    private static int stream(HttpClient http, String base, String key, Rng rng, boolean abandon, List<Double> ttfts,
                              AtomicInteger lost, AtomicInteger duplicated, List<String> problems) throws Exception {
        String body = JSON.writeValueAsString(Map.of("prompt", prompt(rng), "max_tokens", 8 + rng.nextInt(24),
                "temperature", rng.nextInt(2) == 0 ? 0 : 0.8, "seed", rng.nextInt(1000), "stream", true));
        long t0 = System.nanoTime();
        HttpResponse<java.io.InputStream> r = http.send(post(base, "/v1/completions", key, body).build(), HttpResponse.BodyHandlers.ofInputStream());
        if (r.statusCode() != 200) {
            r.body().close();
            return r.statusCode();
        }
        int done = 0;
        boolean finished = false, first = true;
        try (BufferedReader in = new BufferedReader(new InputStreamReader(r.body(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = in.readLine()) != null) {
                if (!line.startsWith("data: ")) continue;
                if (first) {
                    ttfts.add((System.nanoTime() - t0) / 1e9);
                    first = false;
                    if (abandon) return 200; // closing the stream here is the client going away
                }
                if (line.equals("data: [DONE]")) {
                    done++;
                    continue;
                }
                JsonNode j = JSON.readTree(line.substring(6));
                for (JsonNode ch : j.path("choices")) if (!ch.path("finish_reason").isNull() && ch.has("finish_reason")) finished = true;
            }
        }
        if (done == 0 || !finished) {
            lost.incrementAndGet();
            problems.add("stream ended without " + (done == 0 ? "[DONE]" : "a finish_reason"));
        }
        if (done > 1) duplicated.incrementAndGet();
        return 200;
    }

    /**
     * A non-streamed completion whose client closes the connection while it is being generated (max_tokens large,
     * closed after 20-200 ms): the server must cancel it without a response. Recorded as status 499 (client closed
     * request, as nginx logs it). Sent on a raw socket, so the close is certain.
     */
    private static int hangUp(String base, String key, Rng rng) throws Exception {
        URI u = URI.create(base);
        byte[] body = JSON.writeValueAsBytes(Map.of("prompt", prompt(rng), "max_tokens", 512, "ignore_eos", true));
        try (java.net.Socket sock = new java.net.Socket()) {
            sock.connect(new java.net.InetSocketAddress(u.getHost(), u.getPort()), 10_000);
            String head = "POST /v1/completions HTTP/1.1\r\nHost: " + u.getHost() + "\r\nContent-Type: application/json\r\n"
                    + (key == null ? "" : "Authorization: Bearer " + key + "\r\n") + "Content-Length: " + body.length + "\r\n\r\n";
            java.io.OutputStream out = sock.getOutputStream();
            out.write(head.getBytes(StandardCharsets.US_ASCII));
            out.write(body);
            out.flush();
            Thread.sleep(20 + rng.nextInt(180));
        }
        return 499;
    }

    private static int complete(HttpClient http, String base, String key, Rng rng, AtomicInteger lost, AtomicInteger duplicated,
                                List<String> problems) throws Exception {
        String body = JSON.writeValueAsString(Map.of("prompt", prompt(rng), "max_tokens", 8 + rng.nextInt(24), "n", 2,
                "temperature", 0.7, "seed", rng.nextInt(1000)));
        HttpResponse<String> r = http.send(post(base, "/v1/completions", key, body).build(), HttpResponse.BodyHandlers.ofString());
        if (r.statusCode() != 200) return r.statusCode();
        JsonNode choices = JSON.readTree(r.body()).path("choices");
        boolean[] seen = new boolean[2];
        for (JsonNode ch : choices) {
            int idx = ch.path("index").asInt(-1);
            if (idx < 0 || idx > 1 || ch.path("finish_reason").isNull()) {
                lost.incrementAndGet();
                problems.add("bad choice " + ch);
            } else if (seen[idx]) {
                duplicated.incrementAndGet();
            } else {
                seen[idx] = true;
            }
        }
        if (!seen[0] || !seen[1]) {
            lost.incrementAndGet();
            problems.add("n=2 completion with choices " + choices.size());
        }
        return 200;
    }

    private static int chat(HttpClient http, String base, String key, AtomicInteger lost, List<String> problems) throws Exception {
        String body = "{\"messages\":[{\"role\":\"user\",\"content\":\"12+34=\"}],\"max_tokens\":12}";
        HttpResponse<String> r = http.send(post(base, "/v1/chat/completions", key, body).build(), HttpResponse.BodyHandlers.ofString());
        if (r.statusCode() != 200) return r.statusCode();
        JsonNode c = JSON.readTree(r.body()).path("choices");
        if (c.size() != 1 || !c.get(0).path("message").has("content")) {
            lost.incrementAndGet();
            problems.add("chat response without one message");
        }
        return 200;
    }

    private static int malformed(HttpClient http, String base, String key, Rng rng, AtomicInteger badBodies,
                                 List<String> problems) throws Exception {
        String[] bodies = {"{not json", "{\"prompt\": 5, \"max_tokens\": \"x\"}", "{\"max_tokens\": -3, \"prompt\": \"a\"}",
                "[]", "{\"prompt\": \"a\", \"n\": 0}", "{\"prompt\": \"a\", \"temperature\": \"hot\"}"};
        String body = bodies[rng.nextInt(bodies.length)];
        HttpResponse<String> r = http.send(post(base, "/v1/completions", key, body).build(), HttpResponse.BodyHandlers.ofString());
        if (r.statusCode() >= 400 && r.statusCode() < 500) {
            JsonNode e = JSON.readTree(r.body()).path("error");
            if (!e.has("message") || !e.has("type")) {
                badBodies.incrementAndGet();
                problems.add("4xx without an OpenAI error body: " + r.body());
            }
        } else if (r.statusCode() < 500) {
            badBodies.incrementAndGet();
            problems.add("malformed request answered " + r.statusCode() + ": " + body);
        }
        return r.statusCode();
    }
}
