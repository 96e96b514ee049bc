package dev.crucible.engine;

import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.model.BatchDecoder;

import java.io.ByteArrayOutputStream;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.Consumer;

/**
 * Continuous batching over a {@link BatchDecoder}. One scheduler thread loops:
 * <pre>
 *   admit waiting requests, oldest first, while a sequence id is free and the KV pool can promise the oldest its pages
 *   prefill admitted sequences, oldest first, up to one batch of prompt tokens (a burst of short prompts at once;
 *     a long prompt one chunk per iteration, interleaved with decoding instead of stalling it)
 *   decode one token for every sequence past its prefill, all in one batched forward
 *   sample, emit text, retire finished and cancelled sequences (their pages are free for the next step)
 * </pre>
 * Requests wait in a bounded queue: {@link #submit} refuses (returns null) when it is full, so a flood of requests
 * costs a 429, not memory. Consumers read a {@link Handle}'s events from any thread and may {@link Handle#cancel}
 * at any time; the sequence leaves the batch at the next step and its pages are reused.
 *
 * <p><b>Admission: page reservation.</b> The KV cache is paged ({@link BatchDecoder}): sequences take pages as they
 * grow. A request is admitted only when the pages not yet promised to admitted sequences cover its whole budget,
 * prompt + {@code max_tokens} (capped at the context) rounded up to pages, and the promise holds until it ends. So
 * a running sequence never meets a full cache: nothing is preempted or recomputed, and no sequence is cut short
 * because others grew. Pages are still taken only as tokens arrive: the pool holds the tokens actually cached, and
 * short requests (small prompt and {@code max_tokens}) fit many at once where fixed slots of the whole context fitted
 * few. Admission is first come, first served: the oldest request waits until its budget fits rather than being
 * overtaken by smaller ones, so none starves. The price is that a request asking for many tokens holds them although
 * it may stop early (a chat request without {@code max_tokens} reserves the whole context, as a slot did). vLLM
 * instead admits optimistically and preempts (and later recomputes) the newest sequence when pages run out: more
 * sequences at once when completions stop early, repeated prefill and less predictable latency under pressure. TGI
 * reserves, as this engine does.
 *
 * <p>Sampling draws are keyed by (seed, position), so a sequence's text does not depend on what else is batched.
 */
public final class BatchEngine implements AutoCloseable {
    /** Limits: queue = requests waiting for admission; the decode batch is min(running sequences, decoder rows). */
    public record Config(int maxQueue) {}

    private final BatchDecoder decoder;
    private final Tokenizer tokenizer;
    private final int eosId;
    private final int maxQueue;
    private final BlockingQueue<Seq> waiting = new LinkedBlockingQueue<>();
    private final List<Seq> active = new ArrayList<>();
    private final ArrayDeque<Seq> prefilling = new ArrayDeque<>();
    private final Thread thread;
    private volatile boolean running = true;
    private final Stats stats = new Stats();
    /** Pages promised to admitted sequences (the sum of their budgets); never above the pool. */
    private int reservedPages;

    /** Counters for /metrics; all monotonic except the gauges. */
    public static final class Stats {
        public final LongAdder admitted = new LongAdder(), finished = new LongAdder(), cancelled = new LongAdder();
        public final LongAdder promptTokens = new LongAdder(), generatedTokens = new LongAdder();
        public final LongAdder decodeSteps = new LongAdder(), decodeNanos = new LongAdder(), prefillNanos = new LongAdder();
        public final LongAdder ttftCount = new LongAdder();
        public final AtomicLong ttftMicrosSum = new AtomicLong();
        /** Upper bounds (seconds) of the TTFT histogram buckets; the last count is +Inf. */
        public static final double[] TTFT_BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
        public final LongAdder[] ttftBuckets = new LongAdder[TTFT_BUCKETS.length + 1];
        volatile int activeCount, waitingCount, pagesUsed, pagesReserved;
        volatile long cachedTokens;
        volatile double recentTokensPerSecond;

        Stats() { for (int i = 0; i < ttftBuckets.length; i++) ttftBuckets[i] = new LongAdder(); }

        void ttft(double seconds) {
            ttftCount.increment();
            ttftMicrosSum.addAndGet(Math.round(seconds * 1e6));
            int b = 0;
            while (b < TTFT_BUCKETS.length && seconds > TTFT_BUCKETS[b]) b++;
            ttftBuckets[b].increment();
        }

        public int active() { return activeCount; }

        public int waiting() { return waitingCount; }

        public long cachedTokens() { return cachedTokens; }

        /** KV pages holding tokens now. */
        public int pagesUsed() { return pagesUsed; }

        /** KV pages promised to admitted sequences (at least those they use): what admission counts against. */
        public int pagesReserved() { return pagesReserved; }

        /** Generated tokens per second over the last decode steps (exponential average). */
        public double recentTokensPerSecond() { return recentTokensPerSecond; }
    }

    /** The consumer's side of one sequence. */
    public static final class Handle {
        private final BlockingQueue<SequenceEvent> queue;
        private final Consumer<SequenceEvent> events;
        private volatile boolean cancelled;

        private Handle(Consumer<SequenceEvent> sink) {
            this.queue = sink == null ? new LinkedBlockingQueue<>() : null;
            this.events = sink == null ? queue::add : sink;
        }

        /** The next event, waiting up to the timeout; null on timeout. Only for handles made without a sink. */
        public SequenceEvent poll(long timeout, TimeUnit unit) throws InterruptedException {
            if (queue == null) throw new IllegalStateException("this handle's events go to its sink");
            return queue.poll(timeout, unit);
        }

        /** Asks the engine to drop the sequence; a Done("cancelled") event follows unless it already finished. */
        public void cancel() { cancelled = true; }

        public boolean cancelled() { return cancelled; }
    }

    /** Scheduler-side state of one sequence. */
    private final class Seq {
        final CompletionRequest req;
        final Handle handle;
        final long submitted = System.nanoTime();
        final int[] counts;
        final ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        final List<SequenceEvent.TokenLogprob> pending = new ArrayList<>();
        final List<SequenceEvent.TokenLogprob> promptScores = new ArrayList<>();
        int seq = -1, reserved, prefilled, generated, emittedChars, next;
        double ttft = -1;
        String text = "";

        Seq(CompletionRequest req, Handle handle) {
            this.req = req;
            this.handle = handle;
            this.counts = req.sampling().penalized() ? new int[decoder.config().vocab()] : null;
        }
    }

    public BatchEngine(BatchDecoder decoder, Tokenizer tokenizer, int eosId, Config config) {
        this.decoder = decoder;
        this.tokenizer = tokenizer;
        this.eosId = eosId;
        this.maxQueue = config.maxQueue();
        this.thread = Thread.ofPlatform().name("crucible-engine").daemon().start(this::loop);
    }

    public Stats stats() { return stats; }

    /** Tokens a sequence can hold (prompt + completion). */
    public int capacity() { return decoder.maxLength(); }

    /** Sequences that can run at once. */
    public int maxSequences() { return decoder.maxSequences(); }

    /** Pages in the KV pool. */
    public int pages() { return decoder.pages(); }

    public int pageSize() { return decoder.pageSize(); }

    /** KV-cache use: pages holding tokens over pages in the pool, 0..1. */
    public double cacheUse() { return (double) stats.pagesUsed / decoder.pages(); }

    /**
     * Queues a request; null when the queue is full (the caller answers 429).
     *
     * @throws IllegalArgumentException if the prompt does not leave room for one token in the context
     */
    public Handle submit(CompletionRequest req) { return submit(req, null); }

    /**
     * As {@link #submit(CompletionRequest)}, delivering events to {@code sink} instead of the handle's queue. The
     * sink runs on the scheduler thread: it must be quick and must not block (a queue offer).
     */
    public Handle submit(CompletionRequest req, Consumer<SequenceEvent> sink) {
        if (req.prompt().length >= decoder.maxLength()) {
            throw new IllegalArgumentException("the prompt has " + req.prompt().length + " tokens; the context holds " + decoder.maxLength());
        }
        for (int id : req.prompt()) {
            if (id < 0 || id >= decoder.config().vocab()) throw new IllegalArgumentException("token id " + id + " outside the vocabulary");
        }
        Handle h = new Handle(sink);
        synchronized (waiting) {
            if (waiting.size() >= maxQueue) purgeCancelled();
            if (waiting.size() >= maxQueue) return null;
            waiting.add(new Seq(req, h));
            stats.waitingCount = waiting.size();
        }
        return h;
    }

    /** Drops cancelled requests that still wait for admission (called with the queue locked). */
    private void purgeCancelled() {
        for (Iterator<Seq> it = waiting.iterator(); it.hasNext(); ) {
            Seq s = it.next();
            if (s.handle.cancelled) {
                it.remove();
                stats.cancelled.increment();
                s.handle.events.accept(new SequenceEvent.Done("cancelled", s.req.prompt().length, 0, -1, null));
            }
        }
        stats.waitingCount = waiting.size();
    }

    private void loop() {
        while (running) {
            try {
                if (active.isEmpty() && prefilling.isEmpty()) {
                    Seq s = waiting.poll(100, TimeUnit.MILLISECONDS);
                    if (s == null) continue;
                    admit(s); // nothing is reserved when nothing runs, and one budget never exceeds the pool
                }
                admitWaiting();
                prefillSome();
                decodeStep();
                publish();
            } catch (InterruptedException e) {
                break;
            } catch (RuntimeException e) {
                // A bug in one step must not kill the engine: fail every running sequence and carry on.
                for (Seq s : new ArrayList<>(active)) fail(s, e);
                for (Seq s : new ArrayList<>(prefilling)) fail(s, e);
                active.clear();
                prefilling.clear();
                publish();
            }
        }
        for (Seq s : active) done(s, "cancelled", null);
        for (Seq s : prefilling) done(s, "cancelled", null);
        for (Seq s : waiting) s.handle.events.accept(new SequenceEvent.Done("cancelled", s.req.prompt().length, 0, -1, null));
    }

    /** The gauges /metrics reads; the active count last, so a reader that sees it sees the cache gauges with it. */
    private void publish() {
        synchronized (waiting) {
            stats.waitingCount = waiting.size();
        }
        stats.cachedTokens = decoder.cachedTokens();
        stats.pagesUsed = decoder.usedPages();
        stats.pagesReserved = reservedPages;
        stats.activeCount = active.size() + prefilling.size();
    }

    /**
     * Admits waiting requests in arrival order while a sequence id is free and the oldest one's page budget fits in
     * the pages not yet promised (it waits for running sequences to end otherwise; younger ones wait behind it).
     */
    private void admitWaiting() {
        while (decoder.freeSequences() > 0) {
            Seq s;
            synchronized (waiting) {
                s = waiting.peek();
                if (s == null) break;
                if (!s.handle.cancelled && reservedPages + budget(s.req) > decoder.pages()) break;
                waiting.poll();
                stats.waitingCount = waiting.size();
            }
            admit(s);
        }
    }

    /**
     * Pages a request reserves: its prompt and every token it may generate, capped at the context (the last sampled
     * token is never appended, so this is one token to spare). Never more than the pool, which holds one context.
     */
    private int budget(CompletionRequest r) {
        return decoder.pagesFor(Math.min((long) r.prompt().length + r.maxTokens(), decoder.maxLength()));
    }

    private void admit(Seq s) {
        if (s.handle.cancelled) {
            stats.cancelled.increment();
            s.handle.events.accept(new SequenceEvent.Done("cancelled", s.req.prompt().length, 0, -1, null));
            return;
        }
        s.seq = decoder.acquire();
        s.reserved = budget(s.req);
        reservedPages += s.reserved;
        stats.admitted.increment();
        stats.promptTokens.add(s.req.prompt().length);
        if (s.req.echo() && s.req.logprobs() >= 0) {
            int first = s.req.prompt()[0];
            s.promptScores.add(info(first, Double.NaN, null, 0));
        }
        prefilling.add(s);
    }

    /**
     * Prefills admitted sequences, oldest first, until {@link BatchDecoder#maxBatch()} prompt tokens were processed in
     * this iteration (at least one chunk). A burst of short prompts is then prefilled within an iteration or two
     * instead of one per decode step (16 eight-token prompts waited up to 16 decode steps for their first token),
     * while a long prompt still advances one chunk per iteration between decode steps. Each sequence's prefill is
     * the same computation either way, so no sequence's bits change.
     */
    private void prefillSome() {
        // A cancelled sequence (0 tokens) counts as one, so the loop always ends.
        for (int spent = 0; !prefilling.isEmpty() && spent < decoder.maxBatch(); ) spent += Math.max(1, prefillOne());
    }

    /**
     * Prefills one chunk of the oldest sequence still in prefill; on its last chunk, samples its first token. Returns
     * the prompt tokens processed (0 for a cancelled sequence).
     */
    private int prefillOne() {
        Seq s = prefilling.peek();
        if (s == null) return 0;
        if (s.handle.cancelled) {
            prefilling.poll();
            done(s, "cancelled", null);
            return 0;
        }
        long t0 = System.nanoTime();
        int[] p = s.req.prompt();
        int n = Math.min(decoder.maxBatch(), p.length - s.prefilled);
        int[] part = java.util.Arrays.copyOfRange(p, s.prefilled, s.prefilled + n);
        boolean score = s.req.echo() && s.req.logprobs() >= 0;
        float[][] logits = decoder.prefill(s.seq, part, score);
        if (score) {
            for (int i = 0; i < n; i++) {
                int target = s.prefilled + i + 1;
                if (target >= p.length) break;
                s.promptScores.add(scored(logits[i], p[target], s.req.logprobs()));
            }
        }
        s.prefilled += n;
        stats.prefillNanos.add(System.nanoTime() - t0);
        if (s.prefilled < p.length) return n;
        prefilling.poll();
        if (score) s.handle.events.accept(new SequenceEvent.Prompt(List.copyOf(s.promptScores)));
        if (s.req.maxTokens() == 0) {
            done(s, "length", null);
            return n;
        }
        active.add(s);
        if (accept(s, logits[logits.length - 1])) {
            active.remove(s);
        }
        return n;
    }

    private void decodeStep() {
        if (active.isEmpty()) return;
        for (Iterator<Seq> it = active.iterator(); it.hasNext(); ) {
            Seq s = it.next();
            if (s.handle.cancelled) {
                it.remove();
                done(s, "cancelled", null);
            }
        }
        int n = Math.min(active.size(), decoder.maxBatch());
        if (n == 0) return;
        // Round-robin when more sequences than rows: the ones served this step go to the back.
        List<Seq> batch = new ArrayList<>(active.subList(0, n));
        int[] seqs = new int[n], tokens = new int[n];
        for (int i = 0; i < n; i++) {
            seqs[i] = batch.get(i).seq;
            tokens[i] = batch.get(i).next;
        }
        long t0 = System.nanoTime();
        float[][] logits = decoder.decode(seqs, tokens);
        long dt = System.nanoTime() - t0;
        stats.decodeSteps.increment();
        stats.decodeNanos.add(dt);
        double tps = n / Math.max(dt / 1e9, 1e-9);
        stats.recentTokensPerSecond = stats.recentTokensPerSecond == 0 ? tps : 0.9 * stats.recentTokensPerSecond + 0.1 * tps;
        if (n < active.size()) {
            active.subList(0, n).clear();
            active.addAll(batch);
        }
        for (int i = 0; i < n; i++) {
            Seq s = batch.get(i);
            if (accept(s, logits[i])) active.remove(s);
        }
    }

    /** Samples the next token of s from logits and emits it; true when s finished (and was retired). */
    private boolean accept(Seq s, float[] logits) {
        Sampler.limitVocabulary(logits, tokenizer.vocabSize());
        int position = decoder.length(s.seq);
        int tok = Sampler.sample(logits, s.req.sampling(), position, s.counts);
        if (s.ttft < 0) {
            s.ttft = (System.nanoTime() - s.submitted) / 1e9;
            stats.ttft(s.ttft);
        }
        if (tok == eosId && !s.req.ignoreEos()) {
            done(s, "stop", null);
            return true;
        }
        s.generated++;
        stats.generatedTokens.increment();
        if (s.counts != null) s.counts[tok]++;
        s.pending.add(s.req.logprobs() >= 0 ? scored(logits, tok, s.req.logprobs()) : info(tok, Double.NaN, null, 0));
        s.bytes.writeBytes(tokenizer.decodeBytes(new int[]{tok}));
        s.text = Generator.decodeComplete(s.bytes.toByteArray());
        int cut = Generator.firstStop(s.text, s.req.stops());
        if (cut >= 0) {
            s.text = s.text.substring(0, cut);
            done(s, "stop", null);
            return true;
        }
        int safe = s.text.length() - Generator.holdBack(s.text, s.req.stops());
        if (safe > s.emittedChars) emit(s, s.text.substring(s.emittedChars, safe));
        if (s.generated >= s.req.maxTokens() || decoder.length(s.seq) >= decoder.maxLength()) {
            done(s, "length", null);
            return true;
        }
        s.next = tok;
        return false;
    }

    private void emit(Seq s, String text) {
        s.handle.events.accept(new SequenceEvent.Chunk(text, List.copyOf(s.pending)));
        s.pending.clear();
        s.emittedChars += text.length();
    }

    private void done(Seq s, String reason, String error) {
        if (s.text.length() > s.emittedChars || (!s.pending.isEmpty() && !reason.equals("stop"))) {
            emit(s, s.text.substring(Math.min(s.emittedChars, s.text.length())));
        }
        reservedPages -= s.reserved;
        s.reserved = 0;
        if (s.seq >= 0) {
            decoder.release(s.seq);
            s.seq = -1;
        }
        if (reason.equals("cancelled")) stats.cancelled.increment();
        else stats.finished.increment();
        s.handle.events.accept(new SequenceEvent.Done(reason, s.req.prompt().length, s.generated, s.ttft, error));
    }

    private void fail(Seq s, RuntimeException e) {
        try {
            done(s, "error", String.valueOf(e.getMessage()));
        } catch (RuntimeException ignored) {
            s.handle.events.accept(new SequenceEvent.Done("error", s.req.prompt().length, s.generated, s.ttft, String.valueOf(e)));
        }
    }

    private SequenceEvent.TokenLogprob scored(float[] logits, int tok, int top) {
        double[] lp = Sampler.logSoftmax(Sampler.limitVocabulary(logits, tokenizer.vocabSize()));
        List<SequenceEvent.TokenLogprob> alts = new ArrayList<>();
        if (top > 0) for (int id : Sampler.topIds(lp, top)) alts.add(info(id, lp[id], null, 0));
        return info(tok, lp[tok], alts, top);
    }

    private SequenceEvent.TokenLogprob info(int id, double logprob, List<SequenceEvent.TokenLogprob> top, int k) {
        return new SequenceEvent.TokenLogprob(id, tokenizer.tokenText(id), tokenizer.decodeBytes(new int[]{id}), logprob,
                top == null ? List.of() : List.copyOf(top));
    }

    /** Stops the scheduler; running and waiting sequences end with "cancelled". */
    @Override
    public void close() {
        running = false;
        thread.interrupt();
        try {
            thread.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
