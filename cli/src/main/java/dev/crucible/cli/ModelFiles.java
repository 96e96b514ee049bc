package dev.crucible.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.backend.Backend;
import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.model.Llama;
import dev.crucible.train.Checkpoint;
import dev.crucible.train.TrainConfig;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/** Opens a trained model from a checkpoint directory, a run's checkpoints/ directory, or a run directory. */
final class ModelFiles {
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

    @SuppressWarnings("unchecked")
    static Loaded load(Path path, Backend backend) {
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
}
