package dev.crucible.engine;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.model.BatchDecoder;
import dev.crucible.model.Llama;
import dev.crucible.model.LlamaConfig;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.*;

/** Batched decoding against the single-sequence session, and the scheduler's contract. */
class BatchEngineTest {
    static Backend be;
    static Llama model;
    static Tokenizer tok;

    @BeforeAll
    static void setUp() {
        be = Backends.create("cpu", 2);
        model = new Llama(new LlamaConfig(257, 64, 2, 4, 2, 128, 128, 10000f, 1e-5f, true), be);
        model.initRandom(7, 0.5);
        tok = Tokenizer.byteLevel(List.of("<|endoftext|>"));
    }

    @AfterAll
    static void tearDown() {
        model.close();
        be.close();
    }

    static void close(float[] a, float[] b) {
        assertEquals(a.length, b.length);
        for (int i = 0; i < a.length; i++) assertEquals(a[i], b[i], 1e-3f * (1 + Math.abs(a[i])), "logit " + i);
    }

    @Test
    void batchedDecodeMatchesSessions() {
        int[][] prompts = {{1, 2, 3, 4, 5, 6, 7}, {50, 60}, {100, 101, 102, 103}};
        try (BatchDecoder dec = new BatchDecoder(model, 4, 16, 16, 64, 3)) {
            int[] slots = new int[3];
            List<Llama.Session> sessions = new ArrayList<>();
            int[] next = new int[3];
            for (int i = 0; i < 3; i++) {
                slots[i] = dec.acquire();
                float[] a = dec.prefill(slots[i], prompts[i], false)[0];      // 7 tokens in chunks of 3
                Llama.Session s = model.session(64, 5);
                sessions.add(s);
                close(s.append(prompts[i]), a);
                next[i] = Sampler.argmax(a);
            }
            for (int step = 0; step < 5; step++) {
                float[][] got = dec.decode(slots, next);
                for (int i = 0; i < 3; i++) {
                    close(sessions.get(i).append(new int[]{next[i]}), got[i]);
                    next[i] = Sampler.argmax(got[i]);
                }
            }
            // Prompt scoring: row i predicts token i+1, as the session does one token at a time.
            int s2 = dec.acquire();
            float[][] all = dec.prefill(s2, prompts[0], true);
            try (Llama.Session s = model.session(64, 1)) {
                for (int i = 0; i < prompts[0].length; i++) close(s.append(new int[]{prompts[0][i]}), all[i]);
            }
            sessions.forEach(Llama.Session::close);
            assertEquals(0, dec.freeSequences());
            dec.release(slots[1]);
            assertEquals(1, dec.freeSequences());
        }
    }

    static String run(BatchEngine e, CompletionRequest r, List<SequenceEvent> seen) throws InterruptedException {
        BatchEngine.Handle h = e.submit(r);
        StringBuilder sb = new StringBuilder();
        for (;;) {
            SequenceEvent ev = h.poll(10, TimeUnit.SECONDS);
            assertNotNull(ev, "engine stalled");
            if (seen != null) seen.add(ev);
            if (ev instanceof SequenceEvent.Chunk c) sb.append(c.text());
            if (ev instanceof SequenceEvent.Done d) return sb + "|" + d.finishReason() + "|" + d.completionTokens();
        }
    }

    @Test
    void engineMatchesGeneratorAndIsReproducible() throws Exception {
        String prompt = "hello";
        Generator.Result ref = new Generator(model, tok, 256).generate(prompt, 12, SamplingParams.GREEDY, List.of(), null);
        try (BatchDecoder dec = new BatchDecoder(model, 4, 32, 16, 128, 8);
             BatchEngine e = new BatchEngine(dec, tok, 256, new BatchEngine.Config(16))) {
            int[] ids = tok.encodeWithSpecials(prompt);
            String greedy = run(e, new CompletionRequest(ids, 12, SamplingParams.GREEDY, List.of(), -1, false, false), null);
            assertEquals(ref.text() + "|" + ref.finishReason() + "|" + ref.completionTokens(), greedy);
            SamplingParams sp = new SamplingParams(0.9, 40, 0.95, 1234, 0.05, 1.1, 0.2, 0.1);
            CompletionRequest r = new CompletionRequest(ids, 20, sp, List.of(), 3, true, true);
            // Same seed, alone or alongside other sequences: the same text.
            String alone = run(e, r, null);
            List<BatchEngine.Handle> noise = new ArrayList<>();
            for (int i = 0; i < 3; i++) noise.add(e.submit(new CompletionRequest(new int[]{i + 10}, 30, new SamplingParams(1, 0, 1, i), List.of(), -1, false, true)));
            List<SequenceEvent> events = new ArrayList<>();
            assertEquals(alone, run(e, r, events));
            noise.forEach(BatchEngine.Handle::cancel);
            SequenceEvent.Prompt p = (SequenceEvent.Prompt) events.getFirst();
            assertEquals(ids.length, p.tokens().size());
            assertTrue(Double.isNaN(p.tokens().getFirst().logprob()));
            for (SequenceEvent ev : events) {
                if (ev instanceof SequenceEvent.Chunk c) {
                    for (SequenceEvent.TokenLogprob t : c.tokens()) {
                        assertTrue(t.logprob() <= 0);
                        assertEquals(3, t.top().size());
                        assertTrue(t.top().get(0).logprob() >= t.top().get(2).logprob());
                    }
                }
            }
        }
    }

    @Test
    void stopStringsMaxTokensAndCancellation() throws Exception {
        try (BatchDecoder dec = new BatchDecoder(model, 2, 16, 16, 128, 8);
             BatchEngine e = new BatchEngine(dec, tok, 256, new BatchEngine.Config(1))) {
            int[] ids = tok.encodeWithSpecials("abc");
            String full = run(e, new CompletionRequest(ids, 10, SamplingParams.GREEDY, List.of(), -1, false, true), null);
            String text = full.substring(0, full.indexOf('|'));
            assertTrue(full.endsWith("|length|10"), full);
            String stop = text.substring(3, 5);
            String cut = run(e, new CompletionRequest(ids, 10, SamplingParams.GREEDY, List.of(stop), -1, false, true), null);
            assertTrue(cut.startsWith(text.substring(0, text.indexOf(stop)) + "|stop|"), cut + " vs " + text);
            // Cancelling frees the sequence and its pages: two long sequences, cancel both, the next request still runs.
            BatchEngine.Handle a = e.submit(new CompletionRequest(ids, 100, SamplingParams.GREEDY, List.of(), -1, false, true));
            BatchEngine.Handle b = e.submit(new CompletionRequest(ids, 100, SamplingParams.GREEDY, List.of(), -1, false, true));
            assertNotNull(a);
            a.cancel();
            if (b != null) b.cancel();
            assertTrue(run(e, new CompletionRequest(ids, 3, SamplingParams.GREEDY, List.of(), -1, false, true), null).endsWith("|length|3"));
            assertEquals(2, dec.freeSequences());
            assertEquals(dec.pages(), dec.freePages());
        }
    }

    /**
     * Admission reserves prompt + max_tokens in pages: with a pool of 8 pages and budgets of 2 pages, at most 4 run at
     * once though 8 sequence ids are free; the rest wait and are admitted as pages come back; no sequence ever meets
     * a full cache, and each gives the text it gives alone.
     */
    @Test
    void admissionReservesPagesAndQueuesTheRest() throws Exception {
        try (BatchDecoder dec = new BatchDecoder(model, 8, 8, 16, 128, 8);
             BatchEngine e = new BatchEngine(dec, tok, 256, new BatchEngine.Config(16))) {
            int[] ids = tok.encodeWithSpecials("abcde");                                  // 5 tokens + 20 ≤ 32: 2 pages
            String alone = run(e, new CompletionRequest(ids, 20, SamplingParams.GREEDY, List.of(), -1, false, true), null);
            assertTrue(alone.endsWith("|length|20"), alone);
            List<BatchEngine.Handle> handles = new ArrayList<>();
            for (int i = 0; i < 7; i++) {
                handles.add(e.submit(new CompletionRequest(ids, 20, SamplingParams.GREEDY, List.of(), -1, false, true)));
            }
            // One request that reserves the whole pool (its budget is the context) waits for all of them, then runs.
            BatchEngine.Handle big = e.submit(new CompletionRequest(ids, 1000, SamplingParams.GREEDY, List.of(), -1, false, true));
            int peakActive = 0, peakReserved = 0;
            List<String> texts = new ArrayList<>();
            for (BatchEngine.Handle h : handles) {
                StringBuilder sb = new StringBuilder();
                for (;;) {
                    SequenceEvent ev = h.poll(10, TimeUnit.SECONDS);
                    assertNotNull(ev, "engine stalled");
                    peakActive = Math.max(peakActive, e.stats().active());
                    peakReserved = Math.max(peakReserved, e.stats().pagesReserved());
                    if (ev instanceof SequenceEvent.Chunk c) sb.append(c.text());
                    if (ev instanceof SequenceEvent.Done d) {
                        texts.add(sb + "|" + d.finishReason() + "|" + d.completionTokens());
                        break;
                    }
                }
            }
            for (String t : texts) assertEquals(alone, t);
            assertTrue(peakActive <= 4, "active " + peakActive);
            assertTrue(peakReserved <= 8, "reserved " + peakReserved);
            SequenceEvent ev;
            int generated = -1;
            while ((ev = big.poll(20, TimeUnit.SECONDS)) != null) {
                if (ev instanceof SequenceEvent.Done d) {
                    assertEquals("length", d.finishReason());
                    generated = d.completionTokens();
                    break;
                }
            }
            assertEquals(128 - ids.length + 1, generated);   // ran to the full context (the last token is not cached)
            long deadline = System.nanoTime() + 5_000_000_000L;
            while ((e.stats().pagesUsed() > 0 || e.stats().pagesReserved() > 0) && System.nanoTime() < deadline) Thread.sleep(10);
            assertEquals(0, e.stats().pagesUsed());
            assertEquals(0, e.stats().pagesReserved());
            assertEquals(0, e.cacheUse());
            assertEquals(8, e.pages());
            assertEquals(16, e.pageSize());
        }
    }

    /**
     * A model whose vocabulary is padded past its tokenizer's (as GGUF files and vocab-rounded models are) must never
     * produce an id without text, even when the padding ids have the highest logits; logprob alternatives skip them.
     */
    @Test
    void paddingIdsPastTheTokenizerAreNeverSampled() throws Exception {
        try (Llama padded = new Llama(new LlamaConfig(400, 64, 1, 4, 2, 128, 64, 10000f, 1e-5f, false), be)) {
            padded.initRandom(3, 0.02);
            // Make ids 257.. dominate every prediction: a large output-head row for each of them.
            float[] head = padded.read(padded.param("lm_head.weight"));
            for (int i = 257 * 64; i < head.length; i++) head[i] = 5f * ((i % 3) - 1);
            be.copyIn(padded.param("lm_head.weight"), java.lang.foreign.MemorySegment.ofArray(head));
            Generator.Result g = new Generator(padded, tok, -1).generate("hi", 8, new SamplingParams(1.5, 0, 1, 7), List.of(), null);
            assertEquals(8, g.completionTokens());
            try (BatchDecoder dec = new BatchDecoder(padded, 2, 16, 16, 64, 4);
                 BatchEngine e = new BatchEngine(dec, tok, -1, new BatchEngine.Config(4))) {
                List<SequenceEvent> events = new ArrayList<>();
                run(e, new CompletionRequest(tok.encodeWithSpecials("hi"), 8, new SamplingParams(1.5, 0, 1, 7), List.of(), 5, false, false), events);
                int seen = 0;
                for (SequenceEvent ev : events) {
                    if (ev instanceof SequenceEvent.Chunk c) {
                        for (SequenceEvent.TokenLogprob t : c.tokens()) {
                            assertTrue(t.id() < 257, "sampled padding id " + t.id());
                            for (SequenceEvent.TokenLogprob alt : t.top()) assertTrue(alt.id() < 257);
                            seen++;
                        }
                    }
                }
                assertEquals(8, seen);
            }
        }
    }

    /** top-k keeps the most likely tokens, ties broken by the smaller id, across signs and magnitudes. */
    @Test
    void topKKeepsTheMostLikely() {
        float[] logits = {-3f, 2.5f, 0f, 2.5f, -0.5f, 7f, -7f, 1e-3f};
        for (int seed = 0; seed < 50; seed++) {
            assertEquals(5, Sampler.sample(logits, new SamplingParams(1, 1, 1, seed), 0));
            int two = Sampler.sample(logits, new SamplingParams(100, 2, 1, seed), 3);
            assertTrue(two == 5 || two == 1, "top-2 gave " + two);   // 2.5 at ids 1 and 3: id 1 wins the tie
            int three = Sampler.sample(new float[] {-1f, -2f, -0.5f, -3f}, new SamplingParams(100, 2, 1, seed), 1);
            assertTrue(three == 2 || three == 0, "top-2 of negatives gave " + three);
        }
        float[] flat = new float[32000];
        int[] seen = new int[32000];
        for (int i = 0; i < 2000; i++) seen[Sampler.sample(flat, new SamplingParams(1, 0, 1, i), i)]++;
        int distinct = 0;
        for (int c : seen) if (c > 0) distinct++;
        assertTrue(distinct > 1500, "a flat distribution should spread: " + distinct);
    }

    @Test
    void samplerPenaltiesAndMinP() {
        float[] logits = {5f, 4.9f, 1f, -3f};
        int[] counts = {3, 0, 0, 0};
        assertEquals(0, Sampler.sample(logits, SamplingParams.GREEDY, 0, counts));
        SamplingParams rep = new SamplingParams(0, 0, 1, 0, 0, 2.0, 0, 0);
        assertEquals(1, Sampler.sample(logits, rep, 0, counts));        // 5/2 < 4.9
        SamplingParams freq = new SamplingParams(0, 0, 1, 0, 0, 1, 0.1, 0);
        assertEquals(1, Sampler.sample(logits, freq, 0, counts));       // 5 - 0.3 < 4.9
        // min-p 0.5 at temperature 1 keeps only tokens 0 and 1: never 2 or 3 in many draws.
        SamplingParams minP = new SamplingParams(1, 0, 1, 9, 0.5, 1, 0, 0);
        for (int pos = 0; pos < 500; pos++) assertTrue(Sampler.sample(logits, minP, pos, null) <= 1);
        assertArrayEquals(new int[]{0, 1}, Sampler.topIds(new double[]{3, 2, 1}, 2));
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(1, 0, 1, 0, 1.5, 1, 0, 0));
    }
}
