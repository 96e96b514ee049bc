package dev.crucible.train.fault;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.backend.HostBuffer;
import dev.crucible.backend.Op;
import dev.crucible.backend.ref.RefBackend;
import dev.crucible.cpu.CpuBackend;
import dev.crucible.formats.safetensors.SafeTensors;
import dev.crucible.tensor.Rng;
import dev.crucible.train.Checkpoint;
import dev.crucible.train.TrainConfig;
import dev.crucible.train.Trainer;
import dev.crucible.train.data.ShardWriter;
import dev.crucible.train.data.TokenDataset;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Crashes, guards and the corruption check, in process: an injected kill throws {@link FaultPlan.Crash}, and a
 * "restart" is a new trainer on the same run directory. The bar: a resumed run ends with exactly the bits of an
 * uninterrupted one, wherever it was stopped.
 */
class FaultToleranceTest {
    @TempDir
    static Path shared;
    static Path data;
    static Map<String, byte[]> clean;
    static TreeMap<Integer, Double> cleanLosses;

    static TrainConfig config(Map<String, Object> extra) {
        Map<String, Object> m = new HashMap<>();
        m.put("model.vocab", 64);
        m.put("model.dim", 32);
        m.put("model.layers", 2);
        m.put("model.heads", 4);
        m.put("model.kv_heads", 2);
        m.put("model.ffn", 64);
        m.put("model.context", 16);
        m.put("train.seq_len", 16);
        m.put("train.batch", 4);
        m.put("train.grad_accum", 2);
        m.put("train.steps", 12);
        m.put("train.checkpoint_interval", 3);
        m.put("train.eval_interval", 0);
        m.put("train.eval_batches", 1);
        m.put("train.log_interval", 1);
        m.put("train.keep_checkpoints", 10);
        m.put("optim.lr", 2e-2);
        m.put("optim.warmup", 2);
        m.put("guard.min_history", 3);
        m.put("data.path", data.toString());
        m.putAll(extra);
        return TrainConfig.fromMap(m);
    }

    @BeforeAll
    static void setUp() throws Exception {
        data = shared.resolve("data");
        // A learnable stream: repeated short patterns plus noise.
        try (ShardWriter w = new ShardWriter(data, 64, 63, "test", 1 << 20)) {
            Rng r = Rng.keyed(1, 2);
            int[] toks = new int[40_000];
            for (int i = 0; i < toks.length; i++) toks[i] = r.nextInt(10) < 8 ? (i * 7) % 50 : r.nextInt(63);
            w.write(toks);
            w.finish();
        }
        Path run = shared.resolve("clean");
        train(run, config(Map.of()), FaultPlan.NONE, null);
        clean = finalBits(run);
        cleanLosses = losses(run);
    }

    static Trainer.Result train(Path run, TrainConfig cfg, FaultPlan plan, Backend replay) throws Exception {
        try (TokenDataset ds = TokenDataset.open(data); Backend be = new CpuBackend(2)) {
            Trainer.Options o = Trainer.Options.defaults().withFaults(plan, FaultPlan.Actions.THROW).withReplay(replay);
            return new Trainer(cfg, be, ds, run, null, o).run();
        }
    }

    /** Runs until done, restarting after each simulated crash; returns the number of restarts. */
    static int trainWithRestarts(Path run, TrainConfig cfg, String faults) throws Exception {
        int restarts = 0;
        while (true) {
            FaultPlan plan = FaultPlan.parse(faults, cfg.seed(), run); // re-read each restart, like a new worker
            try {
                train(run, cfg, plan, null);
                return restarts;
            } catch (FaultPlan.Crash c) {
                restarts++;
                assertTrue(restarts < 20, "too many restarts");
            }
        }
    }

    static Map<String, byte[]> finalBits(Path run) throws Exception {
        Path ck = run.resolve("checkpoints").resolve(Checkpoint.dirName(12));
        Map<String, byte[]> out = new TreeMap<>();
        for (String f : List.of(Checkpoint.MODEL, Checkpoint.OPTIMIZER)) {
            try (SafeTensors st = SafeTensors.open(ck.resolve(f))) {
                for (String name : st.entries().keySet()) out.put(f + ":" + name, st.bytes(name).toArray(ValueLayout.JAVA_BYTE));
            }
        }
        return out;
    }

    static TreeMap<Integer, Double> losses(Path run) throws Exception {
        TreeMap<Integer, Double> out = new TreeMap<>();
        ObjectMapper json = new ObjectMapper();
        for (String line : Files.readAllLines(run.resolve("metrics.jsonl"))) {
            JsonNode n = json.readTree(line);
            if (n.path("type").asText().equals("train")) out.put(n.path("step").asInt(), n.path("loss").asDouble());
        }
        return out;
    }

    static List<String> eventTypes(Path run) throws Exception {
        List<String> out = new ArrayList<>();
        ObjectMapper json = new ObjectMapper();
        for (String line : Files.readAllLines(run.resolve("events.jsonl"))) out.add(json.readTree(line).path("type").asText());
        return out;
    }

    static void assertSameBits(Map<String, byte[]> a, Map<String, byte[]> b) {
        assertEquals(a.keySet(), b.keySet());
        for (String k : a.keySet()) assertArrayEquals(a.get(k), b.get(k), k + " differs from the uninterrupted run");
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"kill@5", "kill@7.2", "kill@4,kill@10.1,kill@11", "ckpt-kill@6", "corrupt-ckpt@9",
            "truncate-ckpt@6", "delete-ckpt@9", "disk-full@6,kill@8"})
    void resumedRunsEqualTheUninterruptedRun(String faults, @TempDir Path run) throws Exception {
        int restarts = trainWithRestarts(run, config(Map.of()), faults);
        assertSameBits(clean, finalBits(run));
        assertEquals(cleanLosses, losses(run), "loss curve");
        assertTrue(restarts >= (faults.equals("disk-full@6,kill@8") ? 1 : 1), "the fault fired");
    }

    @Test
    void badCheckpointsAreReportedAndLeftOnDisk(@TempDir Path run) throws Exception {
        trainWithRestarts(run, config(Map.of()), "corrupt-ckpt@9");
        assertTrue(eventTypes(run).contains("bad_checkpoint"));
        // The corrupt directory was replaced by the re-run of step 9 only after a good one was written again.
        Checkpoint.verify(run.resolve("checkpoints").resolve(Checkpoint.dirName(9)));
    }

    @Test
    void failedCheckpointWriteLosesNothing(@TempDir Path run) throws Exception {
        Trainer.Result r = train(run, config(Map.of()), FaultPlan.parse("readonly@6", 1234, run), null);
        assertEquals(12, r.steps());
        assertTrue(eventTypes(run).contains("checkpoint_failed"));
        assertFalse(Files.exists(run.resolve("checkpoints").resolve(Checkpoint.dirName(6))));
        Checkpoint.verify(run.resolve("checkpoints").resolve(Checkpoint.dirName(3)));
        try (var s = Files.list(run.resolve("checkpoints"))) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith(".tmp")), "no temporary directory left");
        }
        assertSameBits(clean, finalBits(run));
    }

    @Test
    void nonFiniteGradientsSkipTheUpdate(@TempDir Path run) throws Exception {
        Trainer.Result r = train(run, config(Map.of()), FaultPlan.parse("nan@4,inf@7", 1234, run), null);
        assertTrue(Double.isFinite(r.finalLoss()));
        List<String> ev = eventTypes(run);
        assertEquals(2, ev.stream().filter("nonfinite"::equals).count(), ev.toString());
        for (byte[] b : finalBits(run).values()) {
            float[] f = MemorySegment.ofArray(b).toArray(ValueLayout.JAVA_FLOAT_UNALIGNED);
            for (float x : f) assertTrue(Float.isFinite(x));
        }
    }

    /** Long enough for the loss to settle, so a corrupted batch stands out as it does in real training. */
    static Map<String, Object> spikeConfig(Map<String, Object> extra) {
        Map<String, Object> m = new HashMap<>(Map.of("train.steps", 40, "train.checkpoint_interval", 10,
                "guard.loss_z", 4.0, "guard.window", 16, "guard.min_history", 8));
        m.putAll(extra);
        return m;
    }

    @Test
    void lossSpikeRollsBackAndSkipsTheWindow(@TempDir Path run) throws Exception {
        Trainer.Result r = train(run, config(spikeConfig(Map.of())), FaultPlan.parse("spike@35", 1234, run), null);
        assertEquals(40, r.steps());
        List<String> ev = eventTypes(run);
        assertTrue(ev.contains("loss_spike") && ev.contains("rolled_back") && ev.contains("window_skipped"), ev.toString());
        JsonNode st = Checkpoint.state(run.resolve("checkpoints").resolve(Checkpoint.dirName(40)));
        assertEquals(35, st.path("skip_steps").get(0).asInt());
    }

    @Test
    void lossSpikeCanSkipInstead(@TempDir Path run) throws Exception {
        train(run, config(spikeConfig(Map.of("guard.loss_spike", "skip"))), FaultPlan.parse("spike@35", 1234, run), null);
        List<String> ev = eventTypes(run);
        assertTrue(ev.contains("loss_spike") && !ev.contains("rolled_back"), ev.toString());
    }

    /** A backend that silently scales one MatMul output by 1.5, once: a transient hardware fault. */
    static final class FlakyBackend extends dev.crucible.backend.HostBackend {
        final CpuBackend inner = new CpuBackend(2);
        int countdown;

        FlakyBackend(int failAtMatMul) {
            this.countdown = failAtMatMul;
        }

        @Override
        public String name() { return "flaky-cpu"; }

        @Override
        public boolean supports(Op op) { return inner.supports(op); }

        @Override
        public void run(Op op) {
            inner.run(op);
            if (op instanceof Op.MatMul mm && --countdown == 0) {
                HostBuffer c = HostBuffer.of(mm.c());
                for (long i = 0; i < c.elements(); i++) c.setFloat(i, c.getFloat(i) * 1.5f);
            }
        }

        @Override
        public void close() { inner.close(); }
    }

    @Test
    void replayOnTheReferenceCatchesSilentCorruption(@TempDir Path run) throws Exception {
        TrainConfig cfg = config(Map.of("replay.interval", 3));
        // 45 MatMuls per micro-batch, 90 per step: the 500th falls inside step 6, which is replayed.
        try (TokenDataset ds = TokenDataset.open(data); Backend be = new FlakyBackend(500); Backend ref = new RefBackend()) {
            Trainer.Options o = Trainer.Options.defaults().withReplay(ref);
            new Trainer(cfg, be, ds, run, null, o).run();
        }
        List<String> ev = eventTypes(run);
        assertTrue(ev.contains("suspected_corruption") && ev.contains("recomputed"), ev.toString());
        assertSameBits(clean, finalBits(run)); // the recomputed step is the clean step
    }

    @Test
    void stopRequestWritesAFinalCheckpoint(@TempDir Path run) throws Exception {
        try (TokenDataset ds = TokenDataset.open(data); Backend be = new CpuBackend(2)) {
            Trainer[] t = new Trainer[1];
            Trainer.Listener l = new Trainer.Listener() {
                @Override
                public void step(Trainer.StepStats s) {
                    if (s.step() == 5) t[0].requestStop();
                }
            };
            t[0] = new Trainer(config(Map.of()), be, ds, run, null, Trainer.Options.defaults().withListener(l));
            Trainer.Result r = t[0].run();
            assertTrue(r.stopped());
            assertEquals(5, r.steps());
        }
        Checkpoint.verify(run.resolve("checkpoints").resolve(Checkpoint.dirName(5)));
        train(run, config(Map.of()), FaultPlan.NONE, null);
        assertSameBits(clean, finalBits(run));
    }

    @Test
    void faultSpecsAreValidated() {
        assertThrows(IllegalArgumentException.class, () -> FaultPlan.parse("explode@3", 1, null));
        assertThrows(IllegalArgumentException.class, () -> FaultPlan.parse("kill@0", 1, null));
        assertThrows(IllegalArgumentException.class, () -> FaultPlan.parse("kill-random=2", 1, null));
        assertThrows(IllegalArgumentException.class, () -> FaultPlan.parse("nan@3.1", 1, null));
        assertEquals(3, FaultPlan.parse("kill@3, hang@4 ,kill-random=0.1", 1, null).faults().size());
    }

    @Test
    void guardsFlagSpikesOnlyUpward() {
        Guards g = new Guards(new Guards.Config(16, 4, 4, 4, Guards.Policy.SKIP, Guards.Policy.ROLLBACK, Guards.Policy.SKIP));
        for (int i = 0; i < 10; i++) {
            assertEquals(null, g.check(2.0 - 0.01 * i, 1.0));
            g.accept(2.0 - 0.01 * i, 1.0 + 0.01 * (i % 3));
        }
        assertEquals(null, g.check(0.5, 1.0), "a fast drop is not a spike");
        assertEquals("loss_spike", g.check(5.0, 1.0).kind());
        assertEquals("grad_spike", g.check(1.9, 50).kind());
        assertEquals("nonfinite", g.check(Double.NaN, 1).kind());
    }
}
