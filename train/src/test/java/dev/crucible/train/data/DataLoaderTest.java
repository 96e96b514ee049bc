package dev.crucible.train.data;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.*;

class DataLoaderTest {
    @TempDir
    Path dir;
    private final List<TokenDataset> open = new ArrayList<>();

    @AfterEach
    void closeAll() {
        open.forEach(TokenDataset::close);
    }

    /** A dataset whose token i is i (so a token tells its position). */
    private TokenDataset positions(int n) {
        int[] t = new int[n];
        for (int i = 0; i < n; i++) t[i] = i;
        Path out = dir.resolve("d" + n + "_" + open.size());
        TokenDatasetTest.write(out, t, 65536, 0, 97);
        TokenDataset ds = TokenDataset.open(out);
        open.add(ds);
        return ds;
    }

    private static int[][] batch(DataLoader l) {
        int[] ids = new int[l.batchSize() * l.seqLen()], tg = new int[ids.length];
        l.nextBatch(ids, tg);
        return new int[][]{ids, tg};
    }

    @Test
    void windowsAndSplit() {
        TokenDataset ds = positions(10_000);
        DataLoader l = new DataLoader(ds, 16, 4, 1, 0.05);
        // val region: max(17, ceil(500)) = 500 tokens -> (500-1)/16 = 31 windows; train: (9500-1)/16 = 593
        assertEquals(31, l.valWindows());
        assertEquals(593, l.trainWindows());
        int[][] b = batch(l);
        for (int r = 0; r < 4; r++) {
            int start = b[0][r * 16];
            assertEquals(0, start % 16);
            for (int k = 0; k < 16; k++) {
                assertEquals(start + k, b[0][r * 16 + k]);
                assertEquals(start + k + 1, b[1][r * 16 + k]);
            }
        }
    }

    @Test
    void deterministicAndSeedDependent() {
        TokenDataset ds = positions(5000);
        DataLoader a = new DataLoader(ds, 8, 3, 42, 0.1), b = new DataLoader(ds, 8, 3, 42, 0.1);
        DataLoader c = new DataLoader(ds, 8, 3, 43, 0.1);
        boolean differs = false;
        for (int i = 0; i < 400; i++) { // several epochs
            int[][] x = batch(a), y = batch(b), z = batch(c);
            assertArrayEquals(x[0], y[0]);
            assertArrayEquals(x[1], y[1]);
            differs |= !Arrays.equals(x[0], z[0]);
        }
        assertTrue(differs);
    }

    @Test
    void seekResumesExactly() {
        TokenDataset ds = positions(3000);
        for (int k : new int[]{0, 1, 7, 40, 41, 95}) {
            DataLoader a = new DataLoader(ds, 10, 7, 9, 0.05);
            for (int i = 0; i < k; i++) batch(a);
            DataLoader.Position p = a.position();
            DataLoader b = new DataLoader(ds, 10, 7, 9, 0.05);
            b.seek(p);
            for (int i = 0; i < 60; i++) {
                int[][] x = batch(a), y = batch(b);
                assertArrayEquals(x[0], y[0], "k=" + k + " i=" + i);
                assertArrayEquals(x[1], y[1]);
            }
            assertEquals(a.position(), b.position());
        }
        DataLoader l = new DataLoader(ds, 10, 7, 9, 0.05);
        assertThrows(IllegalArgumentException.class, () -> l.seek(new DataLoader.Position(0, l.trainWindows() + 1)));
        assertThrows(IllegalArgumentException.class, () -> l.seek(new DataLoader.Position(-1, 0)));
    }

    @Test
    void everyTrainingWindowOncePerEpochAndDisjointFromValidation() {
        TokenDataset ds = positions(4001);
        int T = 12;
        DataLoader l = new DataLoader(ds, T, 5, 3, 0.05);
        int n = l.trainWindows();
        long valStart = 4001 - Math.max(T + 1, (long) Math.ceil(4001 * 0.05));
        List<Integer> seen = new ArrayList<>();
        List<Integer> maxTok = new ArrayList<>();
        int batches = (3 * n + 4) / 5;
        for (int i = 0; i < batches; i++) {
            int[][] b = batch(l);
            for (int r = 0; r < 5; r++) {
                seen.add(b[0][r * T] / T);
                maxTok.add(b[1][r * T + T - 1]);
            }
        }
        for (int e = 0; e < 3; e++) {
            Set<Integer> epoch = new HashSet<>(seen.subList(e * n, (e + 1) * n));
            assertEquals(n, epoch.size(), "epoch " + e);
            assertTrue(epoch.stream().allMatch(w -> w >= 0 && w < n));
        }
        assertNotEquals(seen.subList(0, n), seen.subList(n, 2 * n)); // a new permutation each epoch
        assertTrue(maxTok.stream().allMatch(t -> t < valStart), "training read a validation token");
        assertEquals(3, l.position().epoch());

        int[] ids = new int[5 * T], tg = new int[5 * T];
        Set<Integer> valStarts = new HashSet<>();
        for (int v = 0; v < l.valBatches(); v++) {
            l.valBatch(v, ids, tg);
            int[] again = new int[5 * T];
            l.valBatch(v, again, new int[5 * T]);
            assertArrayEquals(ids, again);
            for (int r = 0; r < 5; r++) {
                assertTrue(ids[r * T] >= valStart);
                assertEquals(ids[r * T] + T, tg[r * T + T - 1]);
                valStarts.add(ids[r * T]);
            }
        }
        assertEquals(l.valWindows(), valStarts.size());
        int[] wrapped = new int[5 * T];
        l.valBatch(l.valWindows(), wrapped, tg); // index*B wraps modulo valWindows
        l.valBatch(0, ids, new int[5 * T]);
        assertEquals(ids[0], wrapped[0]);
    }

    @Test
    void tooSmallDatasetSaysHowManyTokensAreNeeded() {
        int needed = (int) DataLoader.minTokens(32, 0.05);
        assertEquals(66, needed); // 33 for training + 33 for validation
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new DataLoader(positions(needed - 1), 32, 2, 0, 0.05));
        assertTrue(e.getMessage().contains("65 tokens") && e.getMessage().contains("at least 66"), e.getMessage());
        DataLoader ok = new DataLoader(positions(needed), 32, 2, 0, 0.05);
        assertEquals(1, ok.trainWindows());
        assertEquals(1, ok.valWindows());
        int big = (int) DataLoader.minTokens(4, 0.5);
        assertThrows(IllegalArgumentException.class, () -> new DataLoader(positions(big - 1), 4, 1, 0, 0.5));
        assertEquals(1, new DataLoader(positions(big), 4, 1, 0, 0.5).trainWindows());

        DataLoader noVal = new DataLoader(positions(33), 32, 1, 0, 0);
        assertEquals(0, noVal.valWindows());
        assertThrows(IllegalStateException.class, () -> noVal.valBatch(0, new int[32], new int[32]));
        assertThrows(IllegalArgumentException.class, () -> noVal.nextBatch(new int[31], new int[32]));
        assertThrows(IllegalArgumentException.class, () -> new DataLoader(positions(100), 4, 1, 0, 1.0));
    }
}
