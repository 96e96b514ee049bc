package dev.crucible.cli;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static dev.crucible.cli.CliTest.run;
import static dev.crucible.cli.CliTest.userError;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** `crucible qualify` and `crucible parity` as a user runs them, on healthy and simulated defective backends. */
class QualifyCliTest {
    static void has(CliTest.Run r, String... words) {
        for (String w : words) assertTrue(r.out().contains(w), "expected '" + w + "' in:\n" + r.out() + r.err());
    }

    @Test
    void healthyBackendQualifiesAndWritesReports(@TempDir Path dir) throws Exception {
        CliTest.Run r = run("qualify", "--backend", "cpu", "--threads", "1", "--ops", "Add,SwiGlu", "--steps", "6",
                "--out", dir.toString());
        assertEquals(0, r.code(), r.out() + r.err());
        has(r, "VERDICT: CAN_TRAIN", "training run (6 steps): PASS");
        assertTrue(Files.readString(dir.resolve("qualify.json")).contains("\"verdict\" : \"CAN_TRAIN\""));
        assertTrue(Files.readString(dir.resolve("support-matrix.md")).contains("| Add | F32 | ✓ |"));
    }

    @Test
    void reducedPrecisionFailsQualification() {
        CliTest.Run r = run("qualify", "--backend", "defective:matmul-mantissa=10", "--threads", "1", "--ops", "MatMul",
                "--steps", "0");
        assertEquals(1, r.code(), r.out() + r.err());
        has(r, "MatMul", "FAIL", "nmse", "VERDICT: CANNOT");
    }

    @Test
    void hangIsNamedWithinTheTimeout() {
        CliTest.Run r = run("qualify", "--backend", "defective:hang=Rope", "--threads", "1", "--ops", "Rope", "--steps", "0",
                "--op-timeout", "0.3");
        assertEquals(1, r.code(), r.out() + r.err());
        has(r, "Rope", "HUNG", "did not return within 0.3 s");
    }

    @Test
    void missingBackwardOpCanServeOnly() {
        CliTest.Run r = run("qualify", "--backend", "defective:missing=SwiGluBackward", "--threads", "1", "--ops",
                "SwiGlu,SwiGluBackward", "--steps", "3", "--require", "serve");
        assertEquals(0, r.code(), r.out() + r.err());
        has(r, "SwiGluBackward", "unsupported", "VERDICT: CAN_SERVE");
    }

    @Test
    void parityFindsTheFirstDivergentOp(@TempDir Path dir) throws Exception {
        Path json = dir.resolve("parity.json");
        CliTest.Run r = run("parity", "--a", "cpu", "--b", "defective:matmul-mantissa=10", "--threads", "1",
                "--json", json.toString());
        assertEquals(1, r.code(), r.out() + r.err());
        has(r, "FIRST DIVERGENCE: #3 forward layer 0 MatMul q_proj", "gradient divergence by layer", "layer 1");
        String j = Files.readString(json);
        assertTrue(j.contains("\"first_divergence\"") && j.contains("\"q_proj\""), j);
    }

    @Test
    void parityOfIdenticalBackendsPasses() {
        CliTest.Run r = run("parity", "--a", "cpu", "--b", "cpu", "--threads", "1", "--summary", "--layers", "1");
        assertEquals(0, r.code(), r.out() + r.err());
        has(r, "PASS", "bit-identical");
    }

    @Test
    void badInputIsAUserError() {
        userError(run("qualify", "--backend", "defective:warp-drive"), "unknown defect");
        userError(run("qualify", "--backend", "nosuch"), "unknown backend 'nosuch'");
        userError(run("qualify", "--backend", "cpu", "--require", "fly"), "--require must be train or serve");
        userError(run("qualify", "--backend", "cpu", "--ops", "Conv2d"), "unknown op 'Conv2d'");
        userError(run("parity", "--b", "cpu", "--seq-len", "0"), "positive");
        userError(run("parity", "--b", "cpu", "--checkpoint", "/no/such/dir"), "no such");
    }
}
