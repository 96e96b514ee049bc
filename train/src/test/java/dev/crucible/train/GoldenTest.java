package dev.crucible.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import dev.crucible.formats.safetensors.SafeTensors;
import dev.crucible.model.Llama;
import dev.crucible.model.LlamaConfig;
import dev.crucible.model.ParamLayout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The model against PyTorch ({@code ../shared/golden}, made by {@code peers/torch_llama.py}): activations, logits,
 * loss, every gradient and the weights after one clipped AdamW step.
 *
 * <p>Tolerances, as max |ours − theirs| / max |theirs| per tensor. Crucible computes in f32 with different summation
 * orders than PyTorch, so against the f64 files the error is f32 rounding accumulated through the network:
 * ~1e-7 per op, growing with depth and with the length of reductions (K = 176 here). Forward values: 2e-6. Gradients
 * pass through twice as many ops and through cancelling sums (softmax backward), so 2e-5. The optimizer step is run
 * from PyTorch's gradients (see below) and must land within 1e-3 of the step size. The f32 files carry PyTorch's
 * own f32 rounding too, so the same bounds apply.
 */
class GoldenTest {
    static Path golden(String file) {
        Path p = Path.of(System.getProperty("crucible.shared", "../../shared"), "golden", file);
        assumeTrue(Files.isRegularFile(p), "golden files absent (" + p + "): they live in ../shared, which this checkout lacks");
        return p;
    }

    @ParameterizedTest(name = "{0} on {1}")
    @CsvSource({
            "llama_tiny_f64.safetensors, ref", "llama_tiny_f32.safetensors, ref", "llama_tiny_tied_f32.safetensors, ref",
            "llama_tiny_f64.safetensors, cpu", "llama_tiny_f32.safetensors, cpu", "llama_tiny_tied_f32.safetensors, cpu"})
    void matchesPyTorch(String file, String backendName) throws Exception {
        try (SafeTensors st = SafeTensors.open(golden(file)); Backend be = Backends.create(backendName, 2)) {
            JsonNode c = new ObjectMapper().readTree(st.metadata().get("config"));
            int B = c.get("B").asInt(), T = c.get("T").asInt();
            LlamaConfig cfg = new LlamaConfig(c.get("vocab").asInt(), c.get("dim").asInt(), c.get("layers").asInt(),
                    c.get("heads").asInt(), c.get("kv_heads").asInt(), c.get("ffn").asInt(), T,
                    (float) c.get("rope_theta").asDouble(), (float) c.get("rms_eps").asDouble(), c.get("tied").asBoolean());
            try (Llama model = new Llama(cfg, be); AdamW opt = new AdamW(model)) {
                for (ParamLayout.Tensor t : model.layout().tensors()) {
                    be.copyIn(model.param(t.name()), MemorySegment.ofArray(st.floats("param." + t.name())));
                }
                int[] ids = st.ints("input_ids"), targets = st.ints("targets");

                Llama.Loss eval = model.step(ids, targets, B, T, 0f);
                close("act.embed", model.residual(-1), st.doubles("act.embed"), 2e-6);
                for (int l = 0; l < cfg.layers(); l++) close("act.layer." + l, model.residual(l), st.doubles("act.layer." + l), 2e-6);
                close("act.final_norm", model.finalNorm(), st.doubles("act.final_norm"), 2e-6);
                close("logits", model.logits(), st.doubles("logits"), 2e-6);
                double loss = st.doubles("loss")[0];
                assertEquals(loss, eval.mean(), 2e-6 * loss, "loss");

                Llama.Loss train = model.step(ids, targets, B, T, 1f / (B * T));
                assertEquals(loss, train.mean(), 2e-6 * loss, "loss (training pass)");
                for (ParamLayout.Tensor t : model.layout().tensors()) {
                    close("grad." + t.name(), model.read(model.grad(t.name())), st.doubles("grad." + t.name()), 2e-5);
                }

                // The optimizer step is checked from PyTorch's own gradients: AdamW's first step moves each weight
                // by about lr·g/(|g| + eps), which turns the tiny absolute error of a near-zero gradient into an
                // O(lr) difference, so feeding our gradients would test the gradients again, not the optimizer.
                for (ParamLayout.Tensor t : model.layout().tensors()) {
                    be.copyIn(model.grad(t.name()), MemorySegment.ofArray(st.floats("grad." + t.name())));
                }
                OptimizerConfig oc = new OptimizerConfig(3e-4, 3e-5, 0, 0.9, 0.95, 1e-8,
                        Double.parseDouble(st.metadata().get("weight_decay")), 1.0);
                double norm = opt.gradNorm();
                double refNorm = Double.parseDouble(st.metadata().get("grad_norm"));
                assertEquals(refNorm, norm, 1e-6 * refNorm, "global gradient norm");
                double lr = Double.parseDouble(st.metadata().get("lr"));
                assertEquals(lr, oc.lrAt(0, 1), 1e-12, "schedule at step 0");
                opt.update(oc, 1, lr, AdamW.clipCoef(norm, oc.clip()));
                for (ParamLayout.Tensor t : model.layout().tensors()) {
                    float[] ours = model.read(model.param(t.name()));
                    double[] theirs = st.doubles("step1." + t.name());
                    double maxErr = 0;
                    for (int i = 0; i < ours.length; i++) maxErr = Math.max(maxErr, Math.abs(ours[i] - theirs[i]));
                    // f32 rounding of weights of size ~0.1 (6e-9) plus a relative 1e-3 of the update size lr.
                    assertTrue(maxErr <= 1e-3 * lr + 1e-8, "step1." + t.name() + ": max error " + maxErr);
                }
            }
        }
    }

    static void close(String what, float[] ours, double[] theirs, double tol) {
        assertEquals(theirs.length, ours.length, what + " length");
        double maxErr = 0, maxRef = 0;
        for (int i = 0; i < ours.length; i++) {
            assertTrue(Float.isFinite(ours[i]), what + "[" + i + "] is not finite");
            maxErr = Math.max(maxErr, Math.abs(ours[i] - theirs[i]));
            maxRef = Math.max(maxRef, Math.abs(theirs[i]));
        }
        double rel = maxErr / Math.max(maxRef, 1e-30);
        assertTrue(rel <= tol, what + ": max error " + maxErr + " relative " + rel + " > " + tol);
    }
}
