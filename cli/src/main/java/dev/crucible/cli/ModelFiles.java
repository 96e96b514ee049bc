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
import dev.crucible.formats.hf.WeightSource;
import dev.crucible.tensor.DType;
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
 * Opens a model: a Crucible checkpoint directory, a run's checkpoints/ directory, a run directory (or a quickstart
 * directory, whose run is in run/), a Hugging Face
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
        if (f.dir() == null) {
            // `crucible quickstart` writes its run to OUT/run (beside OUT/data): OUT names it too.
            if (Files.isDirectory(path.resolve("run").resolve("checkpoints"))) return resolveCheckpoint(path.resolve("run"));
            throw new UserException(path + " holds no complete checkpoint");
        }
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

    /** Loads any model for inference with every weight in its stored type. */
    static Loaded load(Path path, Backend backend) {
        return load(path, backend, null);
    }

    /**
     * Loads any model {@link #readWeights} accepts for inference only (no gradients): with {@code weights} null every
     * matrix keeps its stored type (a Q4_0 GGUF stays Q4_0, a checkpoint f32), otherwise each is converted to it on
     * load, tensor by tensor. Norm weights are always f32.
     */
    @SuppressWarnings("unchecked")
    static Loaded load(Path path, Backend backend, DType weights) {
        TrainConfig cfg;
        Path origin;
        WeightSource src;
        if (isForeign(path) || Files.isRegularFile(path)) {
            if (!Files.exists(path)) throw new UserException("no such model file or directory: " + path);
            if (Files.isRegularFile(path)) {
                if (!GgufFile.looksLikeGguf(path)) throw new UserException(path + " is a file but not GGUF (expected a .gguf file, an HF directory or a checkpoint)");
                src = GgufModel.openStored(path);
            } else {
                src = WeightSource.of(HfModel.read(path));
            }
            Map<String, Object> keys = modelKeys(src.spec());
            keys.put("train.seq_len", Math.min(128, src.spec().context()));
            cfg = TrainConfig.fromMap(keys);
            origin = path;
        } else {
            origin = resolveCheckpoint(path);
            Map<String, Object> nested = new ObjectMapper().convertValue(Checkpoint.state(origin).path("config"), Map.class);
            if (nested == null) throw new UserException(origin + ": state.json has no config");
            cfg = TrainConfig.fromMap(TrainConfig.flatten(nested));
            src = WeightSource.of(readWeights(origin));
        }
        try (src) {
            Llama model = Llama.forInference(configOf(src.spec()), backend,
                    name -> weights != null ? weights : src.storedType(name),
                    (name, buf) -> backend.copyIn(buf, src.read(name, buf.type())));
            return new Loaded(model, src.tokenizer(), origin, cfg);
        }
    }

    /** Parses a --weights value: "stored" (null) or a type name. */
    static DType weightType(String s) {
        if (s == null || s.equalsIgnoreCase("stored")) return null;
        for (DType t : DType.values()) {
            if (t.name().equalsIgnoreCase(s) && dev.crucible.tensor.Blocks.isReal(t)) return t;
        }
        throw new UserException("unknown --weights type '" + s + "' (stored, f32, f16, bf16, q8_0, q4_0)");
    }
}
