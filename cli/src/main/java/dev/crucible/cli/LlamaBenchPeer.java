package dev.crucible.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * llama.cpp's {@code llama-bench} as the peer of {@code crucible bench generate}: one repetition of its prompt
 * processing and text generation tests on the same GGUF file and thread count, read from its JSON output.
 */
final class LlamaBenchPeer {
    /** One run's figures: prompt processing and text generation tokens/s, and what llama-bench says it ran. */
    record Figures(double pp, double tg, String build) {}

    private final Path exe;
    private final Path model;
    private final int threads, promptTokens, genTokens;
    private final String cacheType;

    /** cacheType: llama.cpp's name of the KV-cache type given to -ctk and -ctv, or null for its default (f16). */
    LlamaBenchPeer(Path exe, Path model, int threads, int promptTokens, int genTokens, String cacheType) {
        if (!Files.isRegularFile(exe)) throw new UserException("--llama-bench: no such file: " + exe);
        if (!Files.isExecutable(exe)) throw new UserException("--llama-bench: not executable: " + exe);
        this.exe = exe;
        this.model = model;
        this.threads = threads;
        this.promptTokens = promptTokens;
        this.genTokens = genTokens;
        this.cacheType = cacheType;
    }

    List<String> command() {
        List<String> cmd = new ArrayList<>(List.of(exe.toString(), "-m", model.toString(), "-t", "" + threads, "-p", "" + promptTokens,
                "-n", "" + genTokens));
        if (cacheType != null) cmd.addAll(List.of("-ctk", cacheType, "-ctv", cacheType));
        cmd.addAll(List.of("-r", "1", "-o", "json"));
        return cmd;
    }

    /** Runs llama-bench once (it warms up itself); a failure is a user error carrying the end of its output. */
    Figures run() throws IOException, InterruptedException {
        Path err = Files.createTempFile("crucible-llama-bench", ".log");
        try {
            Process p = new ProcessBuilder(command()).redirectError(err.toFile()).start();
            byte[] out = p.getInputStream().readAllBytes();
            if (!p.waitFor(30, TimeUnit.MINUTES)) {
                p.destroyForcibly();
                throw new UserException("llama-bench ran over 30 minutes: " + String.join(" ", command()));
            }
            if (p.exitValue() != 0) {
                throw new UserException("llama-bench failed (exit " + p.exitValue() + "): " + String.join(" ", command()) + "\n" + tail(err));
            }
            return parse(new String(out, java.nio.charset.StandardCharsets.UTF_8));
        } finally {
            Files.deleteIfExists(err);
        }
    }

    /**
     * The pp and tg tokens/s in llama-bench's JSON output: an array of tests, each with n_prompt, n_gen and avg_ts
     * (and build_commit, model_type).
     */
    static Figures parse(String json) {
        JsonNode a;
        try {
            a = new ObjectMapper().readTree(json);
        } catch (IOException e) {
            throw new UserException("llama-bench's output is not the JSON that -o json writes: " + e.getMessage());
        }
        if (a == null || !a.isArray()) throw new UserException("llama-bench's output is not a JSON array of tests");
        double pp = Double.NaN, tg = Double.NaN;
        String build = "";
        for (JsonNode t : a) {
            int np = t.path("n_prompt").asInt(), ng = t.path("n_gen").asInt();
            double ts = t.path("avg_ts").asDouble(Double.NaN);
            if (np > 0 && ng == 0) pp = ts;
            else if (ng > 0 && np == 0) tg = ts;
            if (build.isEmpty()) build = t.path("model_type").asText("?") + ", build " + t.path("build_commit").asText("?");
        }
        if (Double.isNaN(pp) || Double.isNaN(tg)) throw new UserException("llama-bench's output lacks a prompt or a generation test: " + json.strip());
        return new Figures(pp, tg, build);
    }

    private static String tail(Path log) throws IOException {
        List<String> lines = Files.readAllLines(log);
        return String.join("\n", new ArrayList<>(lines.subList(Math.max(0, lines.size() - 10), lines.size())));
    }
}
