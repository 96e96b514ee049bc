package dev.crucible.serve;

import dev.crucible.engine.BatchEngine;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;

/** HTTP counters, and the Prometheus text exposition of them and of the engine's {@link BatchEngine.Stats}. */
final class ServerMetrics {
    private final Map<String, LongAdder> requests = new ConcurrentHashMap<>();
    final LongAdder rejected = new LongAdder();
    final LongAdder disconnects = new LongAdder();

    void request(String endpoint, int status) {
        requests.computeIfAbsent("endpoint=\"" + endpoint + "\",code=\"" + status + "\"", k -> new LongAdder()).increment();
    }

    String render(BatchEngine engine, int inFlight) {
        BatchEngine.Stats st = engine.stats();
        StringBuilder sb = new StringBuilder();
        head(sb, "crucible_requests_total", "counter", "HTTP requests by endpoint and status code.");
        for (Map.Entry<String, LongAdder> e : new TreeMap<>(requests).entrySet()) {
            sb.append("crucible_requests_total{").append(e.getKey()).append("} ").append(e.getValue().sum()).append('\n');
        }
        metric(sb, "crucible_requests_rejected_total", "counter", "Requests answered 429 (busy or queue full).", rejected.sum());
        metric(sb, "crucible_client_disconnects_total", "counter", "Generation requests whose client went away before the answer was complete (streamed or not); their sequences are cancelled.", disconnects.sum());
        metric(sb, "crucible_requests_in_flight", "gauge", "Generation requests being handled.", inFlight);
        metric(sb, "crucible_queue_depth", "gauge", "Sequences waiting for admission (a free sequence and KV pages).", st.waiting());
        metric(sb, "crucible_active_sequences", "gauge", "Sequences in prefill or decode.", st.active());
        metric(sb, "crucible_sequences_admitted_total", "counter", "Sequences admitted (their KV pages reserved).", st.admitted.sum());
        metric(sb, "crucible_sequences_finished_total", "counter", "Sequences that ended (stop, length, error).", st.finished.sum());
        metric(sb, "crucible_sequences_cancelled_total", "counter", "Sequences cancelled (client gone).", st.cancelled.sum());
        metric(sb, "crucible_prompt_tokens_total", "counter", "Prompt tokens prefilled.", st.promptTokens.sum());
        metric(sb, "crucible_generated_tokens_total", "counter", "Tokens generated.", st.generatedTokens.sum());
        metric(sb, "crucible_decode_steps_total", "counter", "Batched decode steps.", st.decodeSteps.sum());
        metric(sb, "crucible_decode_seconds_total", "counter", "Time in batched decode steps.", st.decodeNanos.sum() / 1e9);
        metric(sb, "crucible_prefill_seconds_total", "counter", "Time in prefill.", st.prefillNanos.sum() / 1e9);
        metric(sb, "crucible_decode_tokens_per_second", "gauge", "Generated tokens per second over recent decode steps.", st.recentTokensPerSecond());
        metric(sb, "crucible_kv_cache_tokens", "gauge", "Tokens held in the KV cache.", st.cachedTokens());
        metric(sb, "crucible_kv_cache_usage_ratio", "gauge", "KV-cache pages holding tokens over pages in the pool.", engine.cacheUse());
        metric(sb, "crucible_kv_cache_pages_total", "gauge", "Pages in the KV-cache pool (crucible_kv_cache_page_size tokens each).", engine.pages());
        metric(sb, "crucible_kv_cache_pages_used", "gauge", "KV-cache pages holding tokens.", st.pagesUsed());
        metric(sb, "crucible_kv_cache_pages_reserved", "gauge", "KV-cache pages promised to admitted sequences (prompt + max_tokens).", st.pagesReserved());
        metric(sb, "crucible_kv_cache_page_size", "gauge", "Tokens per KV-cache page.", engine.pageSize());
        head(sb, "crucible_time_to_first_token_seconds", "histogram", "From submission to the first sampled token.");
        long cum = 0;
        for (int i = 0; i < BatchEngine.Stats.TTFT_BUCKETS.length; i++) {
            cum += st.ttftBuckets[i].sum();
            sb.append("crucible_time_to_first_token_seconds_bucket{le=\"").append(BatchEngine.Stats.TTFT_BUCKETS[i]).append("\"} ").append(cum).append('\n');
        }
        cum += st.ttftBuckets[BatchEngine.Stats.TTFT_BUCKETS.length].sum();
        sb.append("crucible_time_to_first_token_seconds_bucket{le=\"+Inf\"} ").append(cum).append('\n');
        sb.append("crucible_time_to_first_token_seconds_sum ").append(OpenAiServer.fmt(st.ttftMicrosSum.get() / 1e6)).append('\n');
        sb.append("crucible_time_to_first_token_seconds_count ").append(st.ttftCount.sum()).append('\n');
        return sb.toString();
    }

    private static void head(StringBuilder sb, String name, String type, String help) {
        sb.append("# HELP ").append(name).append(' ').append(help).append('\n');
        sb.append("# TYPE ").append(name).append(' ').append(type).append('\n');
    }

    private static void metric(StringBuilder sb, String name, String type, String help, double value) {
        head(sb, name, type, help);
        sb.append(name).append(' ').append(value == Math.rint(value) && Math.abs(value) < 1e15 ? Long.toString((long) value) : OpenAiServer.fmt(value)).append('\n');
    }
}
