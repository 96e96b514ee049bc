package dev.crucible.cli;

import dev.crucible.train.Checkpoint;
import dev.crucible.train.fault.RunReport;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** `crucible train` as a supervised child process: real kills and a real hang, recovered to the same bits. */
class SupervisorCliTest {
    static String[] train(Path data, Path run, String... extra) {
        List<String> a = new java.util.ArrayList<>(List.of("train", "--data", data.toString(), "--out", run.toString(),
                "--dim", "16", "--layers", "1", "--heads", "2", "--ffn", "32", "--context", "16", "--seq-len", "16",
                "--batch", "2", "--steps", "8", "--checkpoint-interval", "2", "--eval-interval", "0", "--threads", "1",
                "--restart-backoff", "0.1", "--heartbeat-timeout", "10"));
        a.addAll(List.of(extra));
        return a.toArray(String[]::new);
    }

    @Test
    void killsAndHangsAreRecoveredToTheSameBits(@TempDir Path dir) throws Exception {
        Path data = dir.resolve("shards");
        assertEquals(0, CliTest.run("data", "prepare", "--out", data.toString(), CliTest.corpus(dir).toString()).code());
        Path clean = dir.resolve("clean"), faulty = dir.resolve("faulty");
        assertEquals(0, CliTest.run(train(data, clean, "--no-supervise")).code());

        CliTest.Run r = CliTest.run(train(data, faulty, "--faults", "kill@3,ckpt-kill@4,hang@6,corrupt-ckpt@6"));
        assertEquals(0, r.code(), r.err());
        String a = Checkpoint.sha256(clean.resolve("checkpoints/step-00000008/model.safetensors"));
        String b = Checkpoint.sha256(faulty.resolve("checkpoints/step-00000008/model.safetensors"));
        assertEquals(a, b, "final weights equal the uninterrupted run's");
        assertEquals(Checkpoint.sha256(clean.resolve("checkpoints/step-00000008/optimizer.safetensors")),
                Checkpoint.sha256(faulty.resolve("checkpoints/step-00000008/optimizer.safetensors")));

        RunReport rep = RunReport.read(faulty);
        assertTrue(rep.restarts() >= 4, "restarts: " + rep.restarts());
        assertTrue(rep.detected().getOrDefault("hang", 0) >= 1, rep.detected().toString());
        assertTrue(rep.detected().getOrDefault("bad_checkpoint", 0) >= 1, rep.detected().toString());
        assertEquals("finished", rep.status());

        CliTest.Run show = CliTest.run("runs", "show", faulty.toString());
        assertEquals(0, show.code(), show.err());
        assertTrue(show.out().contains("hang") && show.out().contains("goodput"), show.out());
        CliTest.Run list = CliTest.run("runs", "--root", dir.toString());
        assertTrue(list.out().contains("faulty") && list.out().contains("finished"), list.out());
    }

    @Test
    void sigtermWritesAFinalCheckpoint(@TempDir Path dir) throws Exception {
        Path data = dir.resolve("shards");
        assertEquals(0, CliTest.run("data", "prepare", "--out", data.toString(), CliTest.corpus(dir).toString()).code());
        Path run = dir.resolve("run");
        List<String> args = new java.util.ArrayList<>(List.of(train(data, run)));
        args.set(args.indexOf("--steps") + 1, "100000");
        args.set(args.indexOf("--checkpoint-interval") + 1, "100000");
        Process p = new ProcessBuilder(TrainCommand.selfCommand(args)).redirectErrorStream(true)
                .redirectOutput(dir.resolve("log.txt").toFile()).start();
        long deadline = System.currentTimeMillis() + 120_000;
        while (stepOf(run) < 5) {
            assertTrue(p.isAlive(), "training ended early: " + Files.readString(dir.resolve("log.txt")));
            assertTrue(System.currentTimeMillis() < deadline, "no progress");
            Thread.sleep(100);
        }
        p.destroy(); // SIGTERM to the supervisor, which forwards it to the worker
        assertTrue(p.waitFor(120, java.util.concurrent.TimeUnit.SECONDS));
        RunReport r = RunReport.read(run);
        assertEquals("stopped", r.status(), r.events().toString());
        int stopped = r.events().stream().filter(e -> e.path("type").asText().equals("stopped")).findFirst().orElseThrow()
                .path("step").asInt();
        assertTrue(stopped >= 4);
        Checkpoint.verify(run.resolve("checkpoints").resolve(Checkpoint.dirName(stopped)));
    }

    static int stepOf(Path run) {
        try {
            String s = Files.readString(run.resolve("heartbeat")).trim();
            return Integer.parseInt(s.substring(0, s.indexOf(' ')));
        } catch (Exception e) {
            return 0;
        }
    }

    @Test
    void restartBudgetIsBounded(@TempDir Path dir) throws Exception {
        Path data = dir.resolve("shards");
        assertEquals(0, CliTest.run("data", "prepare", "--out", data.toString(), CliTest.corpus(dir).toString()).code());
        Path run = dir.resolve("run");
        CliTest.Run r = CliTest.run(train(data, run, "--faults", "kill@2,kill@3,kill@4", "--max-restarts", "1"));
        assertEquals(1, r.code());
        assertEquals("failed", RunReport.read(run).status());
        assertTrue(Files.exists(run.resolve("events.jsonl")));
    }

    @Test
    void qualifyBeforeTrainingRefusesADefectiveBackend(@TempDir Path dir) throws Exception {
        Path data = dir.resolve("shards");
        assertEquals(0, CliTest.run("data", "prepare", "--out", data.toString(), CliTest.corpus(dir).toString()).code());
        Path run = dir.resolve("run");
        CliTest.Run r = CliTest.run(train(data, run, "--qualify", "--backend", "defective:matmul-mantissa=10"));
        assertEquals(1, r.code(), r.err());
        assertTrue(r.out().contains("MatMul") && r.err().contains("did not qualify"), r.out() + r.err());
        assertTrue(!Files.exists(run.resolve("checkpoints")), "nothing trained");
    }

    @Test
    void badFaultSpecIsAUserError(@TempDir Path dir) throws Exception {
        Path data = dir.resolve("shards");
        assertEquals(0, CliTest.run("data", "prepare", "--out", data.toString(), CliTest.corpus(dir).toString()).code());
        CliTest.userError(CliTest.run(train(data, dir.resolve("run"), "--faults", "explode@3")), "bad fault 'explode@3'");
        CliTest.userError(CliTest.run("runs", "show", dir.resolve("nope").toString()), "no such run");
    }
}
