package dev.crucible.serve;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;

/**
 * Measures a running server from outside, as a client sees it: {@code streams} concurrent streaming completions of
 * exactly {@code maxTokens} tokens each (ignore_eos), started together. Per stream: time to first token, and decode
 * tokens/s after it; overall: generated tokens over wall time (aggregate throughput).
 */
public final class LoadGenerator {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** Figures for one concurrency level; times in seconds. */
    public record Result(int streams, int tokensPerStream, double ttftP50, double ttftMax, double decodeTokensPerSecondPerStream,
                         double aggregateTokensPerSecond, double wallSeconds, int failures) {}

    private LoadGenerator() {}

    public static Result run(String baseUrl, String apiKey, String prompt, int streams, int maxTokens) throws InterruptedException {
        HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(10)).build();
        double[] ttft = new double[streams], decode = new double[streams];
        int[] tokens = new int[streams];
        boolean[] failed = new boolean[streams];
        CountDownLatch go = new CountDownLatch(1), done = new CountDownLatch(streams);
        String body;
        try {
            body = JSON.writeValueAsString(JSON.createObjectNode().put("prompt", prompt).put("max_tokens", maxTokens)
                    .put("temperature", 0).put("stream", true).put("ignore_eos", true)
                    .set("stream_options", JSON.createObjectNode().put("include_usage", true)));
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < streams; i++) {
            int k = i;
            threads.add(Thread.ofVirtual().start(() -> {
                try {
                    go.await();
                    HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(baseUrl + "/v1/completions"))
                            .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body));
                    if (apiKey != null) b.header("Authorization", "Bearer " + apiKey);
                    long t0 = System.nanoTime(), first = -1, last = t0;
                    HttpResponse<java.io.InputStream> r = http.send(b.build(), HttpResponse.BodyHandlers.ofInputStream());
                    if (r.statusCode() != 200) throw new IllegalStateException("HTTP " + r.statusCode());
                    try (BufferedReader in = new BufferedReader(new InputStreamReader(r.body(), StandardCharsets.UTF_8))) {
                        String line;
                        while ((line = in.readLine()) != null) {
                            if (!line.startsWith("data: ") || line.equals("data: [DONE]")) continue;
                            JsonNode j = JSON.readTree(line.substring(6));
                            if (j.hasNonNull("usage")) tokens[k] = j.get("usage").get("completion_tokens").asInt();
                            if (j.get("choices").isEmpty() || j.get("choices").get(0).get("text").asText().isEmpty()) continue;
                            last = System.nanoTime();
                            if (first < 0) first = last;
                        }
                    }
                    ttft[k] = (first - t0) / 1e9;
                    decode[k] = (tokens[k] - 1) / Math.max((last - first) / 1e9, 1e-9);
                } catch (Exception e) {
                    failed[k] = true;
                } finally {
                    done.countDown();
                }
            }));
        }
        long start = System.nanoTime();
        go.countDown();
        done.await();
        double wall = (System.nanoTime() - start) / 1e9;
        int failures = 0, total = 0;
        List<Double> tt = new ArrayList<>();
        double dsum = 0;
        for (int i = 0; i < streams; i++) {
            if (failed[i]) {
                failures++;
                continue;
            }
            total += tokens[i];
            tt.add(ttft[i]);
            dsum += decode[i];
        }
        double[] sorted = tt.stream().mapToDouble(Double::doubleValue).toArray();
        Arrays.sort(sorted);
        int ok = streams - failures;
        return new Result(streams, maxTokens, ok == 0 ? Double.NaN : sorted[sorted.length / 2], ok == 0 ? Double.NaN : sorted[sorted.length - 1],
                ok == 0 ? 0 : dsum / ok, total / wall, wall, failures);
    }
}
