package dev.crucible.model;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import dev.crucible.tensor.DType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The paged KV cache: batched decode against single-sequence sessions, page accounting, and capacity. */
class BatchDecoderTest {
    static Backend be;
    static Llama model;

    @BeforeAll
    static void setUp() {
        be = Backends.create("cpu", 2);
        model = new Llama(new LlamaConfig(257, 64, 2, 4, 2, 128, 128, 10000f, 1e-5f, true), be);
        model.initRandom(7, 0.5);
    }

    @AfterAll
    static void tearDown() {
        model.close();
        be.close();
    }

    /** Same logits within 1e-5 of the row's largest magnitude. */
    static void close(float[] want, float[] got, String what) {
        assertEquals(want.length, got.length);
        double scale = 0, err = 0;
        for (int i = 0; i < want.length; i++) {
            scale = Math.max(scale, Math.abs(want[i]));
            err = Math.max(err, Math.abs((double) want[i] - got[i]));
        }
        assertTrue(err <= 1e-5 * scale, what + ": max error " + err + " over logits up to " + scale);
    }

    static int argmax(float[] x) {
        int best = 0;
        for (int i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    static int[] tokens(int n, int seed) {
        int[] t = new int[n];
        for (int i = 0; i < n; i++) t[i] = (seed * 31 + i * 17) % 256;
        return t;
    }

    static boolean contiguous(int[] pages) {
        for (int i = 1; i < pages.length; i++) if (pages[i] != pages[i - 1] + 1) return false;
        return true;
    }

    @Test
    void pagedDecodeMatchesSessionsAcrossPageBoundaries() {
        for (int pageSize : new int[] {4, 16}) {
            int[] promptLengths = {3, 4, 5, 9, 15, 17};
            int n = promptLengths.length;
            try (BatchDecoder dec = new BatchDecoder(model, 8, 64, pageSize, 64, 5)) {
                int[] seqs = new int[n], next = new int[n];
                List<Llama.Session> sessions = new ArrayList<>();
                for (int i = 0; i < n; i++) {
                    seqs[i] = dec.acquire();
                    int[] prompt = tokens(promptLengths[i], i);
                    float[] got = dec.prefill(seqs[i], prompt, false)[0];             // chunks of at most 5 rows
                    Llama.Session s = model.session(64, 7);
                    sessions.add(s);
                    close(s.append(prompt), got, "prefill " + i + " page size " + pageSize);
                    next[i] = argmax(got);
                }
                // Every step a different subset decodes, so the sequences' lengths drift apart and each crosses page
                // boundaries at its own step; their pages interleave in the pool.
                for (int step = 0; step < 14; step++) {
                    List<Integer> rows = new ArrayList<>();
                    for (int i = 0; i < n; i++) if ((step + i) % 4 != 0) rows.add(i);
                    int[] ids = rows.stream().mapToInt(i -> seqs[i]).toArray();
                    int[] toks = rows.stream().mapToInt(i -> next[i]).toArray();
                    float[][] got = dec.decode(ids, toks);
                    for (int r = 0; r < rows.size(); r++) {
                        int i = rows.get(r);
                        close(sessions.get(i).append(new int[] {next[i]}), got[r], "step " + step + " seq " + i + " page size " + pageSize);
                        next[i] = argmax(got[r]);
                    }
                }
                boolean scattered = false;
                for (int i = 0; i < n; i++) {
                    int len = dec.length(seqs[i]);
                    assertEquals(sessions.get(i).length(), len);
                    assertEquals(dec.pagesFor(len), dec.pageTable(seqs[i]).length);
                    scattered |= !contiguous(dec.pageTable(seqs[i]));
                }
                assertTrue(scattered, "decode steps should interleave the sequences' pages");
                long cached = 0;
                for (int s : seqs) cached += dec.length(s);
                assertEquals(cached, dec.cachedTokens());
                // Prompt scoring: row i predicts token i+1, as the session does one token at a time.
                int scored = dec.acquire();
                int[] prompt = tokens(11, 9);
                float[][] all = dec.prefill(scored, prompt, true);
                try (Llama.Session s = model.session(64, 1)) {
                    for (int i = 0; i < prompt.length; i++) close(s.append(new int[] {prompt[i]}), all[i], "scoring " + i);
                }
                sessions.forEach(Llama.Session::close);
            }
        }
    }

    @Test
    void pagesAreReturnedAndReusedAndAFullPoolFailsCleanly() {
        // 6 pages of 4 tokens; sequences of up to 16 tokens.
        try (BatchDecoder dec = new BatchDecoder(model, 4, 6, 4, 16, 8);
             Llama.Session sa = model.session(16, 8); Llama.Session sb = model.session(16, 8)) {
            assertEquals(6, dec.freePages());
            int a = dec.acquire(), b = dec.acquire();
            int[] pa = tokens(9, 1), pb = tokens(8, 2);
            close(sa.append(pa), dec.prefill(a, pa, false)[0], "a");                      // 3 pages
            close(sb.append(pb), dec.prefill(b, pb, false)[0], "b");                      // 2 pages
            assertEquals(1, dec.freePages());
            assertEquals(5, dec.usedPages());
            // a (9 → 10) fits its third page; b (8 → 9) takes the last free page.
            float[][] got = dec.decode(new int[] {a, b}, new int[] {5, 6});
            close(sa.append(new int[] {5}), got[0], "a 10");
            close(sb.append(new int[] {6}), got[1], "b 9");
            assertEquals(0, dec.freePages());
            got = dec.decode(new int[] {a, b}, new int[] {7, 8});                         // a 11, b 10: no new page
            close(sa.append(new int[] {7}), got[0], "a 11");
            close(sb.append(new int[] {8}), got[1], "b 10");
            got = dec.decode(new int[] {b, a}, new int[] {9, 10});                        // b 11, a 12: no new page
            close(sb.append(new int[] {9}), got[0], "b 11");
            close(sa.append(new int[] {10}), got[1], "a 12");

            // A new sequence needs a page: none free. Nothing changes.
            int c = dec.acquire();
            int[] aPages = dec.pageTable(a), bPages = dec.pageTable(b);
            BatchDecoder.OutOfPagesException full = assertThrows(BatchDecoder.OutOfPagesException.class,
                    () -> dec.prefill(c, tokens(5, 3), false));
            assertEquals(2, full.needed());
            assertEquals(0, full.free());
            assertTrue(full.getMessage().contains("KV cache full"), full.getMessage());
            assertEquals(0, dec.length(c));
            assertEquals(0, dec.pageTable(c).length);
            // a (12 → 13) needs a fourth page: the whole step is refused, b included, before anything is written.
            assertThrows(BatchDecoder.OutOfPagesException.class, () -> dec.decode(new int[] {b, a}, new int[] {11, 12}));
            assertEquals(12, dec.length(a));
            assertEquals(11, dec.length(b));
            assertArrayEquals(aPages, dec.pageTable(a));
            assertArrayEquals(bPages, dec.pageTable(b));
            assertEquals(0, dec.freePages());
            // b carries on alone, uncorrupted.
            close(sb.append(new int[] {11}), dec.decode(new int[] {b}, new int[] {11})[0], "b 12 after the refusal");

            // Releasing a returns its three pages; c reuses them, and their stale rows do not leak into c.
            dec.release(a);
            assertEquals(3, dec.freePages());
            assertThrows(IllegalArgumentException.class, () -> dec.length(a));
            int[] pc = tokens(7, 4);
            try (Llama.Session sc = model.session(16, 8)) {
                close(sc.append(pc), dec.prefill(c, pc, false)[0], "c on a's pages");
                Set<Integer> old = new HashSet<>();
                for (int p : aPages) old.add(p);
                for (int p : dec.pageTable(c)) assertTrue(old.contains(p), "page " + p + " was not a's");
                assertEquals(1, dec.freePages());
                got = dec.decode(new int[] {c, b}, new int[] {12, 13});
                close(sc.append(new int[] {12}), got[0], "c 8");
                close(sb.append(new int[] {13}), got[1], "b 13 (takes the last page)");
            }
            assertEquals(0, dec.freePages());
            dec.release(b);
            dec.release(c);
            assertEquals(6, dec.freePages());
            assertEquals(0, dec.cachedTokens());
            // Sequence ids run out independently of pages.
            for (int i = 0; i < 4; i++) assertTrue(dec.acquire() >= 0);
            assertEquals(-1, dec.acquire());
            // A sequence may not grow past its maximum length, whatever the pool holds.
            assertThrows(IllegalArgumentException.class, () -> dec.prefill(0, tokens(17, 5), false));
            assertThrows(IllegalArgumentException.class, () -> new BatchDecoder(model, 4, 3, 4, 16, 8)); // 12 < 16
        }
    }

    @Test
    void manyMoreShortSequencesFitThanSlotsOfTheSameMemory() {
        int context = 128, slots = 2, pageSize = 16;
        int pages = slots * context / pageSize;                                           // the memory of 2 slots
        int sequences = 16, prompt = 6, steps = 4;                                        // 10 tokens: one page each
        try (BatchDecoder dec = new BatchDecoder(model, 24, pages, pageSize, context, sequences)) {
            long slotBytes = 2L * model.config().layers() * slots * context * model.config().kvDim() * Float.BYTES;
            assertEquals(slotBytes, dec.cacheBytes());
            int[] seqs = new int[sequences], next = new int[sequences];
            List<Llama.Session> sessions = new ArrayList<>();
            for (int i = 0; i < sequences; i++) {
                seqs[i] = dec.acquire();
                int[] p = tokens(prompt, 20 + i);
                float[] got = dec.prefill(seqs[i], p, false)[0];
                Llama.Session s = model.session(prompt + steps, 8);
                sessions.add(s);
                close(s.append(p), got, "prefill " + i);
                next[i] = argmax(got);
            }
            for (int step = 0; step < steps; step++) {
                float[][] got = dec.decode(seqs, next);                                   // all 16 in one batch
                for (int i = 0; i < sequences; i++) {
                    close(sessions.get(i).append(new int[] {next[i]}), got[i], "step " + step + " seq " + i);
                    next[i] = argmax(got[i]);
                }
            }
            assertEquals(sequences, dec.usedPages());
            assertEquals((long) sequences * (prompt + steps), dec.cachedTokens());
            // 16 sequences where slots of the whole context held 2; the pool is now full, so a 17th cannot start.
            assertEquals(0, dec.freePages());
            int extra = dec.acquire();
            assertThrows(BatchDecoder.OutOfPagesException.class, () -> dec.prefill(extra, tokens(1, 0), false));
            sessions.forEach(Llama.Session::close);
        }
    }

    /** Largest |want − got| over the largest |want|. */
    static double relativeError(float[] want, float[] got) {
        double scale = 0, err = 0;
        for (int i = 0; i < want.length; i++) {
            scale = Math.max(scale, Math.abs(want[i]));
            err = Math.max(err, Math.abs((double) want[i] - got[i]));
        }
        return err / scale;
    }

    /**
     * Batch invariance, for both cache types: a sequence's logits are the same bits decoded alone as decoded in a batch
     * with other sequences (at another row, its pages interleaved with theirs).
     */
    @Test
    void aSequenceGivesTheSameBitsAloneAndBatched() {
        for (DType kv : new DType[] {DType.F32, DType.F16}) {
            int[] prompt = tokens(13, 3);
            int steps = 12;
            float[][] alone = new float[steps + 1][];
            int[] fed = new int[steps];
            try (BatchDecoder dec = new BatchDecoder(model, 4, 32, 4, 64, 8, kv)) {
                int s = dec.acquire();
                alone[0] = dec.prefill(s, prompt, false)[0];
                for (int step = 0; step < steps; step++) {
                    fed[step] = argmax(alone[step]);
                    alone[step + 1] = dec.decode(new int[] {s}, new int[] {fed[step]})[0];
                }
            }
            try (BatchDecoder dec = new BatchDecoder(model, 4, 32, 4, 64, 8, kv)) {
                int o1 = dec.acquire(), s = dec.acquire(), o2 = dec.acquire();
                dec.prefill(o1, tokens(6, 4), false);
                assertArrayEquals(alone[0], dec.prefill(s, prompt, false)[0], kv + " prefill");
                dec.prefill(o2, tokens(9, 5), false);
                for (int step = 0; step < steps; step++) {
                    float[][] got = dec.decode(new int[] {o1, s, o2}, new int[] {step % 7, fed[step], (step * 5) % 11});
                    assertArrayEquals(alone[step + 1], got[1], kv + " decode step " + step);
                }
                assertTrue(!contiguous(dec.pageTable(s)), kv + ": the pages should interleave");
            }
        }
    }

    /**
     * Batch invariance past the CPU backend's dot-product path: with 40 sequences in one decode step (the server's
     * default is up to 64), the matmuls would otherwise take the packed GEMM, whose summation order differs, and a
     * seeded request's text would depend on how busy the server is.
     */
    @Test
    void aSequenceGivesTheSameBitsInADecodeStepOfFortyRows() {
        int others = 39, steps = 3;
        int[] prompt = tokens(5, 41);
        float[][] alone = new float[steps + 1][];
        int[] fed = new int[steps];
        try (BatchDecoder dec = new BatchDecoder(model, 1, 8, 4, 32, 64)) {
            int s = dec.acquire();
            alone[0] = dec.prefill(s, prompt, false)[0];
            for (int step = 0; step < steps; step++) {
                fed[step] = argmax(alone[step]);
                alone[step + 1] = dec.decode(new int[] {s}, new int[] {fed[step]})[0];
            }
        }
        try (BatchDecoder dec = new BatchDecoder(model, others + 1, 8 * (others + 1), 4, 32, 64)) {
            int[] seqs = new int[others + 1];
            for (int i = 0; i < seqs.length; i++) seqs[i] = dec.acquire();
            int target = 17;
            for (int i = 0; i < seqs.length; i++) {
                float[] first = dec.prefill(seqs[i], i == target ? prompt : tokens(3 + i % 5, 100 + i), false)[0];
                if (i == target) assertArrayEquals(alone[0], first, "prefill");
            }
            for (int step = 0; step < steps; step++) {
                int[] next = new int[seqs.length];
                for (int i = 0; i < seqs.length; i++) next[i] = i == target ? fed[step] : (i * 7 + step) % 50;
                float[][] got = dec.decode(seqs, next);
                assertArrayEquals(alone[step + 1], got[target], "decode step " + step + " of " + seqs.length + " rows");
            }
        }
    }

    /**
     * The serving warm-up runs its rounds and leaves nothing behind: every page and sequence id free, and a sequence
     * afterwards gets the bits it gets from a decoder that never warmed up. A pool too small for a round stops it
     * early, cleanly; a sequence in use refuses it.
     */
    @Test
    void warmUpLeavesTheDecoderAsItFoundIt() {
        int[] prompt = tokens(9, 77);
        float[] want;
        try (BatchDecoder fresh = new BatchDecoder(model, 6, 64, 4, 64, 40)) {
            int s = fresh.acquire();
            fresh.prefill(s, prompt, false);
            want = fresh.decode(new int[] {s}, new int[] {5})[0];
        }
        try (BatchDecoder dec = new BatchDecoder(model, 6, 64, 4, 64, 40)) {
            assertEquals(3, dec.warmUp(java.time.Duration.ofMinutes(1), 3));
            assertEquals(dec.pages(), dec.freePages());
            assertEquals(0, dec.cachedTokens());
            int[] ids = new int[6];
            for (int i = 0; i < 6; i++) assertTrue((ids[i] = dec.acquire()) >= 0, "every id is free again");
            for (int i = 1; i < 6; i++) dec.release(ids[i]);
            dec.prefill(ids[0], prompt, false);
            assertArrayEquals(want, dec.decode(new int[] {ids[0]}, new int[] {5})[0]);
            assertThrows(IllegalStateException.class, () -> dec.warmUp(java.time.Duration.ofSeconds(1), 1));
        }
        try (BatchDecoder small = new BatchDecoder(model, 6, 5, 4, 20, 40)) {
            assertEquals(1, small.warmUp(java.time.Duration.ofMinutes(1), 3), "a pool of 20 tokens cannot hold a round");
            assertEquals(small.pages(), small.freePages());
        }
        for (int maxLength : new int[] {2, 3, 8, 15}) {                 // sequences shorter than a round's decodes
            try (BatchDecoder tiny = new BatchDecoder(model, 3, 64, 4, maxLength, 8)) {
                assertEquals(2, tiny.warmUp(java.time.Duration.ofMinutes(1), 2), "maxLength " + maxLength);
                assertEquals(tiny.pages(), tiny.freePages());
            }
        }
    }

    /**
     * An F16 cache: half the bytes of F32, and logits within 2e-2 of the largest logit of the F32 cache's (0.6% measured) over
     * prefill and decode (keys and values rounded to 11 significant bits; the same tokens fed to both).
     */
    @Test
    void anF16CacheIsHalfTheBytesAndCloseToF32() {
        int[] promptLengths = {3, 9, 17};
        int n = promptLengths.length, steps = 20;
        try (BatchDecoder f32 = new BatchDecoder(model, 4, 32, 4, 64, 8);
             BatchDecoder f16 = new BatchDecoder(model, 4, 32, 4, 64, 8, DType.F16)) {
            assertEquals(DType.F32, f32.kvType());
            assertEquals(DType.F16, f16.kvType());
            assertEquals(f32.cacheBytes(), 2 * f16.cacheBytes());
            assertEquals(2L * model.config().layers() * 32 * 4 * model.config().kvDim() * 2, f16.cacheBytes());
            int[] a = new int[n], b = new int[n], next = new int[n];
            double worst = 0;
            for (int i = 0; i < n; i++) {
                a[i] = f32.acquire();
                b[i] = f16.acquire();
                int[] p = tokens(promptLengths[i], 30 + i);
                float[][] want = f32.prefill(a[i], p, true), got = f16.prefill(b[i], p, true);
                for (int r = 0; r < p.length; r++) worst = Math.max(worst, relativeError(want[r], got[r]));
                next[i] = argmax(want[p.length - 1]);
            }
            for (int step = 0; step < steps; step++) {
                float[][] want = f32.decode(a, next), got = f16.decode(b, next);
                for (int i = 0; i < n; i++) {
                    worst = Math.max(worst, relativeError(want[i], got[i]));
                    next[i] = argmax(want[i]);
                }
            }
            assertTrue(worst <= 2e-2, "F16 cache: logits off by " + worst + " of the largest");
            assertTrue(worst > 0, "an F16 cache that matches F32 exactly is not rounding");
        }
    }

    /**
     * A session with an F16 cache computes what the serving engine's F16 pages compute for the same sequence (prefill
     * in chunks, then decode), bit for bit: the same rounding of new keys and values, the same paged attention over
     * the cache as one page. Against an F32 session it is close but not equal.
     */
    @Test
    void anF16SessionMatchesTheF16PagedCacheBitForBit() {
        int[] prompt = tokens(19, 44);
        try (BatchDecoder dec = new BatchDecoder(model, 2, 32, 4, 64, 8, DType.F16);
             Llama.Session half = model.session(64, 8, DType.F16); Llama.Session exact = model.session(64, 8)) {
            int seq = dec.acquire();
            float[] want = dec.prefill(seq, prompt, false)[0], got = half.append(prompt), f32 = exact.append(prompt);
            double worst = relativeError(f32, got);
            for (int step = 0; step < 12; step++) {
                assertArrayEquals(want, got, "step " + step);
                int next = argmax(want);
                want = dec.decode(new int[] {seq}, new int[] {next})[0];
                got = half.append(new int[] {next});
                f32 = exact.append(new int[] {next});
                worst = Math.max(worst, relativeError(f32, got));
            }
            assertEquals(31, half.length());
            assertTrue(worst > 0 && worst <= 2e-2, "F16 session against F32: logits off by " + worst + " of the largest");
        }
        assertThrows(IllegalArgumentException.class, () -> model.session(8, 4, DType.BF16));
    }
}
