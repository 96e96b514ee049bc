package dev.crucible.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.formats.gguf.GgufFile;
import dev.crucible.formats.gguf.GgufModel;
import dev.crucible.formats.hf.HfModel;
import dev.crucible.formats.hf.LlamaSpec;
import dev.crucible.formats.hf.ModelWeights;
import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.model.Llama;
import dev.crucible.model.LlamaConfig;
import dev.crucible.model.ParamLayout;
import dev.crucible.train.Checkpoint;
import dev.crucible.train.TrainConfig;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Opens a model: a Crucible checkpoint directory, a run's checkpoints/ directory, a run directory, a Hugging Face
 * Llama directory (config.json + safetensors, single or sharded), or a GGUF file (weights dequantized to f32).
 */
final class ModelFiles {
    /** A loaded model; {@code checkpoint} is the checkpoint directory or the imported file/directory. */
    record Loaded(Llama model, Tokenizer tokenizer, Path checkpoint, TrainConfig config) implements AutoCloseable {
        @Override
        public void close() { model.close(); }
    }

    private ModelFiles() {}

    static Path resolveCheckpoint(Path path) {
        if (!Files.exists(path)) throw new UserException("no such checkpoint or run directory: " + path);
        if (Files.exists(path.resolve(Checkpoint.STATE)) || Files.exists(path.resolve(Checkpoint.MANIFEST))) {
            Checkpoint.verify(path);
            return path;
        }
        Path root = Files.isDirectory(path.resolve("checkpoints")) ? path.resolve("checkpoints") : path;
        Checkpoint.Found f = Checkpoint.latestGood(root);
        f.skipped().forEach(s -> System.err.println("warning: skipping bad checkpoint: " + s));
        if (f.dir() == null) throw new UserException(path + " holds no complete checkpoint");
        return f.dir();
    }

    /** True for a GGUF file or an HF directory: a model made elsewhere, loaded through {@link #importWeights}. */
    static boolean isForeign(Path path) {
        return (Files.isRegularFile(path) && GgufFile.looksLikeGguf(path))
                || (HfModel.isHfDir(path) && !Files.exists(path.resolve(Checkpoint.STATE)));
    }

    /** Reads a GGUF file or HF directory into memory. */
    static ModelWeights importWeights(Path path) {
        if (!Files.exists(path)) throw new UserException("no such model file or directory: " + path);
        if (Files.isRegularFile(path)) {
            if (!GgufFile.looksLikeGguf(path)) throw new UserException(path + " is a file but not GGUF (expected a .gguf file, an HF directory or a checkpoint)");
            return GgufModel.read(path);
        }
        return HfModel.read(path);
    }

    static LlamaConfig configOf(LlamaSpec s) {
        return new LlamaConfig(s.vocab(), s.dim(), s.layers(), s.heads(), s.kvHeads(), s.ffn(), s.context(), s.ropeTheta(), s.normEps(), s.tied());
    }

    static LlamaSpec specOf(LlamaConfig c) {
        return new LlamaSpec(c.vocab(), c.dim(), c.layers(), c.heads(), c.kvHeads(), c.ffn(), c.context(), c.ropeTheta(), c.normEps(), c.tied());
    }

    /** The model.* keys of a training config for this shape (for --set style merging). */
    static Map<String, Object> modelKeys(LlamaSpec s) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("model.vocab", s.vocab());
        m.put("model.dim", s.dim());
        m.put("model.layers", s.layers());
        m.put("model.heads", s.heads());
        m.put("model.kv_heads", s.kvHeads());
        m.put("model.ffn", s.ffn());
        m.put("model.context", s.context());
        m.put("model.rope_theta", (double) s.ropeTheta());
        m.put("model.norm_eps", (double) s.normEps());
        m.put("model.tied", s.tied());
        return m;
    }

    /** Copies imported weights into a model of the same shape. */
    static void copyInto(ModelWeights w, Llama model) {
        for (ParamLayout.Tensor t : model.layout().tensors()) {
            float[] x = w.tensors().get(t.name());
            if (x == null || x.length != t.size()) throw new UserException("imported model has no tensor " + t.name() + " of " + t.size() + " elements");
            model.backend().copyIn(model.params().slice(t.offset(), t.size()), MemorySegment.ofArray(x));
        }
    }

    /** Reads every parameter of a model back as f32 arrays under their HF names. */
    static ModelWeights weightsOf(Loaded m) {
        Map<String, float[]> out = new LinkedHashMap<>();
        try (Arena arena = Arena.ofConfined()) {
            for (ParamLayout.Tensor t : m.model().layout().tensors()) {
                Buffer b = m.model().params().slice(t.offset(), t.size());
                MemorySegment host = arena.allocate(t.size() * 4, 64);
                m.model().backend().copyOut(b, host);
                out.put(t.name(), host.toArray(ValueLayout.JAVA_FLOAT));
            }
        }
        int eos = Tokenizers.eosId(m.tokenizer());
        return new ModelWeights(specOf(m.model().config()), out, m.tokenizer(), "crucible checkpoint", eos, eos);
    }

    /**
     * Weights to fine-tune from: any model {@link #load} accepts. Its shape replaces the model.* keys of {@code flat}
     * (a differing value given by the user is reported and overridden).
     */
    static ModelWeights forTraining(Path path, Map<String, Object> flat) {
        ModelWeights w = readWeights(path);
        for (Map.Entry<String, Object> e : modelKeys(w.spec()).entrySet()) {
            Object old = flat.get(e.getKey());
            if (old != null && !String.valueOf(old).equals(String.valueOf(e.getValue()))
                    && !(e.getKey().equals("model.kv_heads") && String.valueOf(old).equals("0"))) {
                System.err.println("warning: " + e.getKey() + " = " + old + " replaced by the imported model's " + e.getValue());
            }
            flat.put(e.getKey(), e.getValue());
        }
        Object seq = flat.get("train.seq_len");
        if (seq == null && w.spec().context() < 128) flat.put("train.seq_len", w.spec().context());
        return w;
    }

    /** Any model {@link #load} accepts, read into memory as f32 without building it on a backend. */
    @SuppressWarnings("unchecked")
    static ModelWeights readWeights(Path path) {
        ModelWeights w;
        if (isForeign(path) || Files.isRegularFile(path)) {
            w = importWeights(path);
        } else {
            Path dir = resolveCheckpoint(path);
            Map<String, Object> nested = new ObjectMapper().convertValue(Checkpoint.state(dir).path("config"), Map.class);
            if (nested == null) throw new UserException(dir + ": state.json has no config");
            LlamaSpec spec = specOf(TrainConfig.fromMap(TrainConfig.flatten(nested)).model());
            Map<String, float[]> tensors = new LinkedHashMap<>();
            try (dev.crucible.formats.safetensors.SafeTensors st = dev.crucible.formats.safetensors.SafeTensors.open(dir.resolve(Checkpoint.MODEL))) {
                for (String n : spec.tensorShapes().keySet()) tensors.put(n, st.floats(n));
            }
            Tokenizer tok = Tokenizer.load(dir.resolve(Checkpoint.TOKENIZER));
            int eos = Tokenizers.eosId(tok);
            w = new ModelWeights(spec, tensors, tok, "crucible checkpoint", eos, eos);
        }
        return w;
    }

    @SuppressWarnings("unchecked")
    static Loaded load(Path path, Backend backend) {
        if (isForeign(path) || (Files.isRegularFile(path))) return loadForeign(path, backend);
        Path dir = resolveCheckpoint(path);
        JsonNode state = Checkpoint.state(dir);
        Map<String, Object> nested = new ObjectMapper().convertValue(state.path("config"), Map.class);
        if (nested == null) throw new UserException(dir + ": state.json has no config");
        TrainConfig cfg = TrainConfig.fromMap(TrainConfig.flatten(nested));
        Path tokFile = dir.resolve(Checkpoint.TOKENIZER);
        if (!Files.exists(tokFile)) throw new UserException(dir + " has no tokenizer.json");
        Tokenizer tok = Tokenizer.load(tokFile);
        Llama model = new Llama(cfg.model(), backend);
        try {
            Checkpoint.load(dir, model, null);
        } catch (RuntimeException e) {
            model.close();
            throw e;
        }
        return new Loaded(model, tok, dir, cfg);
    }

    private static Loaded loadForeign(Path path, Backend backend) {
        ModelWeights w = importWeights(path);
        Map<String, Object> keys = modelKeys(w.spec());
        keys.put("train.seq_len", Math.min(128, w.spec().context()));
        TrainConfig cfg = TrainConfig.fromMap(keys);
        Llama model = new Llama(cfg.model(), backend);
        try {
            copyInto(w, model);
        } catch (RuntimeException e) {
            model.close();
            throw e;
        }
        return new Loaded(model, w.tokenizer(), path, cfg);
    }
}
