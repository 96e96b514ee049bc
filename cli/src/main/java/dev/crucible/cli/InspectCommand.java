package dev.crucible.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.formats.FormatException;
import dev.crucible.formats.gguf.GgufFile;
import dev.crucible.formats.gguf.GgufModel;
import dev.crucible.formats.gguf.GgufValue;
import dev.crucible.formats.hf.HfModel;
import dev.crucible.formats.hf.LlamaSpec;
import dev.crucible.formats.safetensors.SafeTensors;
import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.train.Checkpoint;
import dev.crucible.train.TrainConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.Callable;

@Command(name = "inspect", mixinStandardHelpOptions = true,
        description = {"Describe a model file without running it: a GGUF file, an HF Llama directory, or a Crucible checkpoint/run.",
                "Prints the format, architecture and shape, parameter count, tensors (shapes, dtypes), tokenizer and metadata.",
                "Every file is fully validated; a damaged one is reported with the problem."})
final class InspectCommand implements Callable<Integer> {
    @Parameters(paramLabel = "PATH", description = "A .gguf file, an HF directory, or a checkpoint or run directory.")
    Path path;

    @Option(names = "--tensors", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "List every tensor (default); --no-tensors prints only the summary.")
    boolean tensors;

    private final List<String[]> rows = new ArrayList<>();

    @Override
    public Integer call() throws IOException {
        if (!Files.exists(path)) throw new UserException("no such file or directory: " + path);
        if (Files.isRegularFile(path)) {
            if (!GgufFile.looksLikeGguf(path)) throw new UserException(path + " is not a GGUF file (expected a .gguf file, an HF directory or a checkpoint)");
            gguf();
        } else if (HfModel.isHfDir(path) && !Files.exists(path.resolve(Checkpoint.STATE))) {
            hf();
        } else {
            checkpoint();
        }
        return 0;
    }

    private void gguf() {
        try (GgufFile g = GgufFile.open(path)) {
            LlamaSpec spec = GgufModel.readSpec(g);
            Tokenizer tok = GgufModel.tokenizer(g, spec.vocab());
            TreeSet<String> types = new TreeSet<>();
            g.tensors().values().forEach(t -> types.add(t.type().name()));
            System.out.printf("format:       GGUF v%d, %d tensors, %d metadata keys, dtypes %s%n", g.version(), g.tensors().size(), g.metadata().size(), types);
            summary(spec, tok);
            if (tensors) {
                System.out.println("tensors (ggml dims, innermost first):");
                for (GgufFile.TensorInfo t : g.tensors().values()) {
                    System.out.printf("  %-32s %-6s %s%n", t.name(), t.type(), Arrays.toString(t.ne()));
                }
            }
            System.out.println("metadata:");
            for (Map.Entry<String, GgufValue> e : g.metadata().entrySet()) System.out.printf("  %-40s %s%n", e.getKey(), e.getValue());
        }
    }

    private void hf() throws IOException {
        LlamaSpec spec = HfModel.readSpec(path.resolve(HfModel.CONFIG));
        Tokenizer tok = Tokenizer.load(path.resolve(HfModel.TOKENIZER));
        List<Path> files = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(path, "*.safetensors")) {
            ds.forEach(files::add);
        }
        files.sort(null);
        TreeSet<String> types = new TreeSet<>();
        List<String> lines = new ArrayList<>();
        for (Path f : files) {
            try (SafeTensors st = SafeTensors.open(f)) {
                for (SafeTensors.Entry e : st.entries().values()) {
                    types.add(e.type().name());
                    lines.add(String.format("  %-48s %-5s %s  (%s)", e.name(), e.type(), e.shape(), f.getFileName()));
                }
            }
        }
        System.out.printf("format:       Hugging Face safetensors, %d file(s), dtypes %s%n", files.size(), types);
        summary(spec, tok);
        if (tensors) {
            System.out.println("tensors:");
            lines.forEach(System.out::println);
        }
        System.out.println("config.json:");
        printJson(new ObjectMapper().readTree(path.resolve(HfModel.CONFIG).toFile()));
    }

    @SuppressWarnings("unchecked")
    private void checkpoint() throws IOException {
        Path dir = ModelFiles.resolveCheckpoint(path);
        JsonNode state = Checkpoint.state(dir);
        Map<String, Object> nested = new ObjectMapper().convertValue(state.path("config"), Map.class);
        if (nested == null) throw new UserException(dir + ": state.json has no config");
        LlamaSpec spec = ModelFiles.specOf(TrainConfig.fromMap(TrainConfig.flatten(nested)).model());
        Tokenizer tok = Tokenizer.load(dir.resolve(Checkpoint.TOKENIZER));
        System.out.printf("format:       Crucible checkpoint %s (step %d)%n", dir, state.path("step").asInt());
        summary(spec, tok);
        if (tensors) {
            System.out.println("tensors:");
            try (SafeTensors st = SafeTensors.open(dir.resolve(Checkpoint.MODEL))) {
                for (SafeTensors.Entry e : st.entries().values()) System.out.printf("  %-48s %-5s %s%n", e.name(), e.type(), e.shape());
            }
        }
        System.out.println("state.json:");
        for (String k : new String[] {"step", "tokens", "loss"}) if (state.has(k)) System.out.printf("  %-40s %s%n", k, state.get(k));
    }

    private static void summary(LlamaSpec s, Tokenizer tok) {
        System.out.println("architecture: llama (LlamaForCausalLM)");
        System.out.printf("shape:        vocab %d, dim %d, layers %d, heads %d, kv heads %d, head dim %d, ffn %d, context %d%n",
                s.vocab(), s.dim(), s.layers(), s.heads(), s.kvHeads(), s.headDim(), s.ffn(), s.context());
        System.out.printf("              rope theta %s, norm eps %s, tied embeddings %s%n", s.ropeTheta(), s.normEps(), s.tied());
        System.out.printf("parameters:   %,d%n", s.paramCount());
        System.out.printf("tokenizer:    %s, %d ids, special %s, chat template %s%n", tok.name(), tok.vocabSize(), tok.specialTokens(),
                tok.chatTemplate() == null ? "none" : "yes (" + tok.chatTemplate().length() + " chars)");
        if (tok.vocabSize() > s.vocab()) throw new FormatException("tokenizer has " + tok.vocabSize() + " ids but the model's vocabulary is " + s.vocab());
    }

    private static void printJson(JsonNode n) {
        for (Iterator<Map.Entry<String, JsonNode>> it = n.properties().iterator(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            System.out.printf("  %-40s %s%n", e.getKey(), e.getValue());
        }
    }
}
