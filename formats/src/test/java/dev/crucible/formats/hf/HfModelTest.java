package dev.crucible.formats.hf;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.crucible.formats.FormatException;
import dev.crucible.formats.gguf.Quant;
import dev.crucible.formats.gguf.TinyModels;
import dev.crucible.formats.safetensors.SafeTensors;
import dev.crucible.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class HfModelTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Test
    void f32ExportRoundTripsExactlyAndLooksLikeTransformers(@TempDir Path dir) throws Exception {
        ModelWeights m = TinyModels.random(TinyModels.spec(false), 11);
        HfModel.write(m, dir, DType.F32, 1L << 30);
        JsonNode cfg = JSON.readTree(dir.resolve("config.json").toFile());
        assertEquals("LlamaForCausalLM", cfg.get("architectures").get(0).asText());
        assertEquals(64, cfg.get("hidden_size").asInt());
        assertEquals(2, cfg.get("num_key_value_heads").asInt());
        assertEquals(96, cfg.get("intermediate_size").asInt());
        assertEquals("float32", cfg.get("torch_dtype").asText());
        assertTrue(Files.exists(dir.resolve("generation_config.json")));
        JsonNode tc = JSON.readTree(dir.resolve("tokenizer_config.json").toFile());
        assertTrue(tc.get("chat_template").asText().contains("messages"));
        assertEquals("<|endoftext|>", tc.get("eos_token").asText());
        assertFalse(Files.exists(dir.resolve(HfModel.INDEX)));
        try (SafeTensors st = SafeTensors.open(dir.resolve("model.safetensors"))) {
            assertEquals("pt", st.metadata().get("format"));
            assertEquals(DType.F32, st.entry("model.layers.0.self_attn.k_proj.weight").type());
            assertArrayEquals(new long[] {32, 64}, st.entry("model.layers.0.self_attn.k_proj.weight").shape().dims());
        }
        ModelWeights back = HfModel.read(dir);
        assertEquals(m.spec(), back.spec());
        for (Map.Entry<String, float[]> e : m.tensors().entrySet()) assertArrayEquals(e.getValue(), back.tensors().get(e.getKey()), e.getKey());
        assertEquals(256, back.eos());
        assertEquals(m.tokenizer().vocabSize(), back.tokenizer().vocabSize());
    }

    @Test
    void shardsAboveTheLimitWithAnIndex(@TempDir Path dir) throws Exception {
        ModelWeights m = TinyModels.random(TinyModels.spec(true), 12);
        HfModel.write(m, dir, DType.BF16, 40_000);
        JsonNode idx = JSON.readTree(dir.resolve(HfModel.INDEX).toFile());
        long files = Files.list(dir).filter(p -> p.getFileName().toString().matches("model-\\d{5}-of-\\d{5}\\.safetensors")).count();
        assertTrue(files > 1, "shards: " + files);
        assertEquals(m.spec().paramCount() * 2, idx.get("metadata").get("total_size").asLong());
        assertFalse(idx.get("weight_map").has("lm_head.weight"), "tied: no lm_head");
        ModelWeights back = HfModel.read(dir);
        float[] x = m.tensors().get("model.layers.1.mlp.down_proj.weight"), y = back.tensors().get("model.layers.1.mlp.down_proj.weight");
        for (int i = 0; i < x.length; i++) assertEquals(Quant.fromBf16(Quant.toBf16(x[i])), y[i], 0f);
        assertTrue(back.format().contains("shards"), back.format());
    }

    @Test
    void readerRejectsMismatches(@TempDir Path dir) throws Exception {
        ModelWeights m = TinyModels.random(TinyModels.spec(false), 13);
        HfModel.write(m, dir, DType.F16, 1L << 30);
        Path config = dir.resolve("config.json");
        ObjectNode cfg = (ObjectNode) JSON.readTree(config.toFile());

        cfg.put("intermediate_size", 128);
        Files.write(config, JSON.writeValueAsBytes(cfg));
        FormatException e = assertThrows(FormatException.class, () -> HfModel.read(dir));
        assertTrue(e.getMessage().contains("mlp.gate_proj.weight' has shape") && e.getMessage().contains("model.safetensors"), e.getMessage());

        cfg.put("intermediate_size", 96);
        cfg.put("vocab_size", 200);
        Files.write(config, JSON.writeValueAsBytes(cfg));
        e = assertThrows(FormatException.class, () -> HfModel.read(dir));
        assertTrue(e.getMessage().contains("embed_tokens.weight' has shape"), e.getMessage());

        cfg.put("vocab_size", 257);
        cfg.put("model_type", "qwen2");
        Files.write(config, JSON.writeValueAsBytes(cfg));
        e = assertThrows(FormatException.class, () -> HfModel.read(dir));
        assertTrue(e.getMessage().contains("config.json") && e.getMessage().contains("qwen2"), e.getMessage());

        cfg.put("model_type", "llama");
        cfg.put("num_attention_heads", 5);
        Files.write(config, JSON.writeValueAsBytes(cfg));
        e = assertThrows(FormatException.class, () -> HfModel.read(dir));
        assertTrue(e.getMessage().contains("config.json") && e.getMessage().contains("5 heads"), e.getMessage());
    }

    @Test
    void tokenizerLargerThanTheVocabularyIsRejected(@TempDir Path dir) throws Exception {
        LlamaSpec small = new LlamaSpec(256, 64, 1, 4, 4, 64, 16, 1e4f, 1e-5f, true);
        ModelWeights m = TinyModels.random(small, 14);
        HfModel.write(new ModelWeights(small, m.tensors(), m.tokenizer(), "t", -1, -1), dir, DType.F32, 1L << 30);
        FormatException e = assertThrows(FormatException.class, () -> HfModel.read(dir));
        assertTrue(e.getMessage().contains("257 token ids but config.json's vocab_size is 256"), e.getMessage());
    }

    @Test
    void shardIndexNamingAMissingFileIsRejected(@TempDir Path dir) throws Exception {
        HfModel.write(TinyModels.random(TinyModels.spec(true), 15), dir, DType.F32, 40_000);
        Files.delete(dir.resolve(Files.list(dir).map(p -> p.getFileName().toString()).filter(n -> n.startsWith("model-00002")).findFirst().orElseThrow()));
        FormatException e = assertThrows(FormatException.class, () -> HfModel.read(dir));
        assertTrue(e.getMessage().contains("model-00002"), e.getMessage());
    }
}
