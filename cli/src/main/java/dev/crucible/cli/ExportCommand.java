package dev.crucible.cli;

import dev.crucible.formats.gguf.GgmlType;
import dev.crucible.formats.gguf.GgufModel;
import dev.crucible.formats.hf.HfModel;
import dev.crucible.formats.hf.ModelWeights;
import dev.crucible.tensor.DType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "export", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Write a model for other tools: a Hugging Face LlamaForCausalLM directory (transformers, vLLM) or a GGUF file (llama.cpp).",
                "hf: config.json, generation_config.json, model.safetensors (sharded with an index above --shard-size), tokenizer.json, tokenizer_config.json.",
                "gguf: GGUF v3, architecture llama; Q/K rows permuted for llama.cpp's interleaved rope; norms always F32."})
final class ExportCommand implements Callable<Integer> {
    @Option(names = {"--checkpoint", "-c", "--model", "-m"}, required = true, paramLabel = "PATH",
            description = "The model: a checkpoint or run directory, an HF Llama directory, or a GGUF file.")
    Path source;

    @Option(names = "--format", required = true, description = "hf or gguf.")
    String format;

    @Option(names = "--dtype", description = "hf: f32, bf16, f16 (default bf16). gguf: f32, f16, bf16, q8_0, q4_0 (default f16).")
    String dtype;

    @Option(names = "--out", required = true, paramLabel = "PATH", description = "hf: the output directory. gguf: the output file.")
    Path out;

    @Option(names = "--shard-size", defaultValue = "5GB", paramLabel = "SIZE",
            description = "hf: largest safetensors shard, e.g. 5GB, 500MB, 4096 (bytes). Default: ${DEFAULT-VALUE}.")
    String shardSize;

    @Option(names = "--name", description = "gguf: general.name (default: the output file name).")
    String name;

    @Override
    public Integer call() throws Exception {
        String fmt = format.toLowerCase(Locale.ROOT);
        if (!fmt.equals("hf") && !fmt.equals("gguf")) throw new UserException("--format must be hf or gguf, got '" + format + "'");
        long shard = parseSize(shardSize);
        DType hfType = null;
        GgmlType ggType = null;
        try {
            if (fmt.equals("hf")) hfType = HfModel.parseDtype(dtype == null ? "bf16" : dtype);
            else ggType = GgmlType.parse(dtype == null ? "f16" : dtype);
        } catch (IllegalArgumentException e) {
            throw new UserException(e.getMessage());
        }
        ModelWeights w = ModelFiles.readWeights(source);
        long t0 = System.nanoTime();
        if (fmt.equals("hf")) {
            if (Files.isRegularFile(out)) throw new UserException("--out " + out + " is a file; an HF export is a directory");
            List<Path> files = HfModel.write(w, out, hfType, shard);
            System.out.printf("wrote %s (%s, %d files, %,d parameters) in %.1f s%n", out, hfType, files.size(), w.spec().paramCount(), (System.nanoTime() - t0) / 1e9);
        } else {
            if (Files.isDirectory(out)) throw new UserException("--out " + out + " is a directory; a GGUF export is a file");
            Path parent = out.toAbsolutePath().getParent();
            if (parent != null) Files.createDirectories(parent);
            String n = name != null ? name : out.getFileName().toString().replaceFirst("\\.gguf$", "");
            GgufModel.write(w, out, ggType, n);
            System.out.printf("wrote %s (%s, %,d bytes, %,d parameters) in %.1f s%n", out, ggType, Files.size(out), w.spec().paramCount(), (System.nanoTime() - t0) / 1e9);
        }
        return 0;
    }

    static long parseSize(String s) {
        String t = s.trim().toUpperCase(Locale.ROOT);
        long mult = 1;
        for (String[] u : new String[][] {{"GIB", "1073741824"}, {"MIB", "1048576"}, {"KIB", "1024"}, {"GB", "1000000000"}, {"MB", "1000000"}, {"KB", "1000"}, {"B", "1"}}) {
            if (t.endsWith(u[0])) {
                mult = Long.parseLong(u[1]);
                t = t.substring(0, t.length() - u[0].length()).trim();
                break;
            }
        }
        try {
            long v = (long) (Double.parseDouble(t) * mult);
            if (v <= 0) throw new NumberFormatException();
            return v;
        } catch (NumberFormatException e) {
            throw new UserException("--shard-size must be a positive size like 5GB, 500MB or 4096, got '" + s + "'");
        }
    }
}
