package dev.crucible.model;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import dev.crucible.backend.Buffer;
import dev.crucible.tensor.Blocks;
import dev.crucible.tensor.DType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.HashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Inference-only models keep their matrices in a storage type and the matmuls use them as stored. Their logits must
 * equal those of an ordinary f32 model holding the decoded values of the same weights (only the summation order
 * differs), on the prefill and the one-token decode paths.
 */
class InferenceWeightsTest {
    static final LlamaConfig CFG = new LlamaConfig(96, 64, 2, 4, 2, 160, 64, 10000f, 1e-5f, false);

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "F16", "BF16", "Q8_0", "Q4_0"})
    void storedWeightsGiveTheLogitsOfTheirDecodedValues(DType type) {
        try (Backend be = Backends.create("cpu", 2); Llama random = new Llama(CFG, be)) {
            random.initRandom(7, 0.05);
            Map<String, byte[]> encoded = new HashMap<>();
            Map<String, float[]> decoded = new HashMap<>();
            for (ParamLayout.Tensor t : random.layout().tensors()) {
                float[] x = random.read(random.param(t.name()));
                DType tt = t.decays() ? type : DType.F32;
                byte[] b = Blocks.encode(tt, x, 0, x.length);
                float[] d = new float[x.length];
                Blocks.decode(tt, MemorySegment.ofArray(b), 0, x.length, d, 0);
                encoded.put(t.name(), b);
                decoded.put(t.name(), d);
            }
            try (Llama ref = new Llama(CFG, be);
                 Llama inf = Llama.forInference(CFG, be, n -> type, (n, buf) -> be.copyIn(buf, MemorySegment.ofArray(encoded.get(n))))) {
                for (ParamLayout.Tensor t : ref.layout().tensors()) be.copyIn(ref.param(t.name()), MemorySegment.ofArray(decoded.get(t.name())));
                assertTrue(inf.inferenceOnly());
                assertEquals(type, inf.type("model.layers.1.mlp.down_proj.weight"));
                assertEquals(DType.F32, inf.type("model.norm.weight"));
                int[] prompt = {5, 17, 3, 88, 41, 9, 60, 2, 33, 71};
                try (Llama.Session a = ref.session(32, 4); Llama.Session b = inf.session(32, 4)) {
                    close(type, a.append(prompt), b.append(prompt));          // prefill in chunks of 4
                    for (int tok : new int[] {12, 90, 1}) close(type, a.append(new int[] {tok}), b.append(new int[] {tok})); // decode
                }
            }
        }
    }

    /**
     * Fused (q; k; v) and (gate; up) matrices change where the weights lie and how many matmuls a one-token step
     * runs, never a result: logits bit for bit those of the same model stored tensor by tensor, through a session
     * (prefill and decode) and the paged decoder (one sequence, then two), for every storage type; the fused model's
     * tensors are slices of the fused matrices, and no extra memory is used.
     */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "F16", "BF16", "Q8_0", "Q4_0"})
    void fusedMatricesGiveTheSameBits(DType type) {
        LlamaConfig cfg = new LlamaConfig(96, 64, 2, 4, 2, 160, 64, 10000f, 1e-5f, true);
        try (Backend be = Backends.create("cpu", 2); Llama random = new Llama(cfg, be)) {
            random.initRandom(9, 0.05);
            Map<String, byte[]> encoded = new HashMap<>();
            for (ParamLayout.Tensor t : random.layout().tensors()) {
                float[] x = random.read(random.param(t.name()));
                encoded.put(t.name(), Blocks.encode(t.decays() ? type : DType.F32, x, 0, x.length));
            }
            java.util.function.BiConsumer<String, Buffer> fill = (n, buf) -> be.copyIn(buf, MemorySegment.ofArray(encoded.get(n)));
            try (Llama fused = Llama.forInference(cfg, be, n -> type, fill);
                 Llama plain = Llama.forInference(cfg, be, n -> type, fill, false)) {
                for (int l = 0; l < cfg.layers(); l++) {
                    assertTrue(fused.fusedQkv(l) != null && fused.fusedGateUp(l) != null, "layer " + l);
                    assertEquals((long) (cfg.dim() + 2 * cfg.kvDim()) * cfg.dim(), fused.fusedQkv(l).elements());
                    org.junit.jupiter.api.Assertions.assertNull(plain.fusedQkv(l));
                }
                assertEquals(plain.weightBytes(), fused.weightBytes());
                for (String name : new String[] {"model.layers.1.self_attn.k_proj.weight", "model.layers.0.mlp.up_proj.weight"}) {
                    Buffer f = fused.param(name), p = plain.param(name);
                    byte[] fb = new byte[(int) type.bytes(f.elements())], pb = new byte[(int) type.bytes(p.elements())];
                    be.copyOut(f, MemorySegment.ofArray(fb));
                    be.copyOut(p, MemorySegment.ofArray(pb));
                    org.junit.jupiter.api.Assertions.assertArrayEquals(encoded.get(name), fb, name);
                    org.junit.jupiter.api.Assertions.assertArrayEquals(pb, fb, name);
                }
                int[] prompt = {5, 17, 3, 88, 41, 9, 60, 2, 33, 71};
                try (Llama.Session a = plain.session(32, 4); Llama.Session b = fused.session(32, 4);
                     Llama.Session c = plain.session(32, 4, DType.F16); Llama.Session d = fused.session(32, 4, DType.F16)) {
                    same(type + " prefill", a.append(prompt), b.append(prompt));
                    same(type + " prefill f16", c.append(prompt), d.append(prompt));
                    for (int tok : new int[] {12, 90, 1, 7}) {
                        same(type + " decode " + tok, a.append(new int[] {tok}), b.append(new int[] {tok}));
                        same(type + " decode f16 " + tok, c.append(new int[] {tok}), d.append(new int[] {tok}));
                    }
                }
                try (BatchDecoder pa = new BatchDecoder(plain, 2, 16, 8, 32, 8); BatchDecoder fb = new BatchDecoder(fused, 2, 16, 8, 32, 8)) {
                    int sa = pa.acquire(), sb = fb.acquire();
                    same(type + " paged prefill", pa.prefill(sa, prompt, false)[0], fb.prefill(sb, prompt, false)[0]);
                    same(type + " paged decode", pa.decode(new int[] {sa}, new int[] {4})[0], fb.decode(new int[] {sb}, new int[] {4})[0]);
                    int ta = pa.acquire(), tb = fb.acquire();
                    pa.prefill(ta, new int[] {8, 9}, false);
                    fb.prefill(tb, new int[] {8, 9}, false);
                    float[][] two = pa.decode(new int[] {sa, ta}, new int[] {6, 3}), twoF = fb.decode(new int[] {sb, tb}, new int[] {6, 3});
                    for (int i = 0; i < 2; i++) same(type + " paged pair " + i, two[i], twoF[i]);
                }
            }
        }
    }

    private static void same(String what, float[] want, float[] got) {
        assertEquals(want.length, got.length, what);
        for (int i = 0; i < want.length; i++) {
            assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]), what + ": logit " + i + " " + want[i] + " vs " + got[i]);
        }
    }

    /** Whether the CPU backend's decode matmuls on these weights round activations to 8 bits (as llama.cpp does). */
    private static boolean int8Activations(DType type) {
        try (Backend be = Backends.create("cpu", 1)) {
            return ((dev.crucible.cpu.CpuBackend) be).decodeActivationsInt8(type);
        }
    }

    /**
     * The logits of the decoded weights, to f32 rounding; for Q4_0 and Q8_0 where decode-sized matmuls run on 8-bit
     * activations (Q4Int or the native kernels, as llama.cpp does), within the NMSE that rounding leaves after 2
     * layers and the head.
     */
    private static void close(DType type, float[] want, float[] got) {
        double err = 0, scale = 0, se = 0, ss = 0;
        for (int i = 0; i < want.length; i++) {
            err = Math.max(err, Math.abs(want[i] - got[i]));
            scale = Math.max(scale, Math.abs(want[i]));
            se += (double) (want[i] - got[i]) * (want[i] - got[i]);
            ss += (double) want[i] * want[i];
        }
        if (int8Activations(type)) {
            System.out.printf(type + " logits: nmse %.2e, max |Δ| %.4f of max |logit| %.4f%n", se / ss, err, scale);
            assertTrue(se / ss <= 1e-3, "nmse " + se / ss + " (max |Δ| " + err + " vs max |logit| " + scale + ")");
        } else {
            assertTrue(err <= 1e-5 * scale, "max |Δ| " + err + " vs max |logit| " + scale);
        }
    }

    @Test
    void inferenceModelsRefuseToTrain() {
        try (Backend be = Backends.create("cpu", 1);
             Llama inf = Llama.forInference(CFG, be, n -> DType.Q8_0, (n, buf) -> {})) {
            int[] ids = new int[8];
            assertThrows(IllegalStateException.class, () -> inf.step(ids, ids, 1, 8, 1f / 8));
            assertThrows(IllegalStateException.class, inf::params);
            assertEquals(0f, (float) inf.step(ids, ids, 1, 8, 0f).mean(), 10f); // evaluation works
            long want = 0;
            for (ParamLayout.Tensor t : inf.layout().tensors()) want += (t.decays() ? DType.Q8_0 : DType.F32).bytes(t.size());
            assertEquals(want, inf.weightBytes());
        }
    }

    @Test
    void rowsThatAreNotWholeBlocksStayF32() {
        LlamaConfig odd = new LlamaConfig(40, 48, 1, 4, 4, 80, 16, 10000f, 1e-5f, true); // dim 48: not whole Q8_0 blocks
        try (Backend be = Backends.create("cpu", 1);
             Llama inf = Llama.forInference(odd, be, n -> DType.Q8_0, (n, buf) -> {})) {
            Buffer up = inf.param("model.layers.0.mlp.up_proj.weight");
            assertEquals(DType.F32, up.type());
        }
    }
}
