package dev.crucible.train.fault;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * What happened to a run, read back from its events.jsonl and metrics.jsonl: the fault timeline, restarts, time to
 * resume, and goodput = time spent on steps that count toward the final model / wall-clock time. A step that was
 * computed, lost to a crash and computed again counts once; evaluation and checkpoint time do not count as useful.
 */
public record RunReport(Path run, List<JsonNode> events, double wallSeconds, double usefulSeconds, int restarts,
                        Map<String, Integer> faultsInjected, Map<String, Integer> detected, List<Double> resumeSeconds,
                        int lastStep, String status) {

    /** Event types that record a detected problem (as opposed to bookkeeping). */
    public static final Set<String> DETECTIONS = Set.of("worker_exit", "hang", "nonfinite", "loss_spike", "grad_spike",
            "bad_checkpoint", "checkpoint_failed", "suspected_corruption", "persistent_mismatch");

    public double goodput() { return wallSeconds <= 0 ? 0 : Math.min(1, usefulSeconds / wallSeconds); }

    public static RunReport read(Path run) throws IOException {
        ObjectMapper json = new ObjectMapper();
        List<JsonNode> events = new ArrayList<>();
        Path ev = run.resolve("events.jsonl");
        if (Files.exists(ev)) {
            for (String line : Files.readAllLines(ev)) {
                if (line.isBlank()) continue;
                try {
                    events.add(json.readTree(line));
                } catch (IOException e) {
                    // a line cut by a crash mid-write: skip it
                }
            }
        }
        TreeMap<Integer, double[]> lines = new TreeMap<>(); // step → {step_s, tokens}: newest line wins
        Path metrics = run.resolve("metrics.jsonl");
        if (Files.exists(metrics)) {
            for (String line : Files.readAllLines(metrics)) {
                try {
                    JsonNode n = json.readTree(line);
                    if (n != null && "train".equals(n.path("type").asText())) {
                        lines.put(n.path("step").asInt(), new double[]{n.path("step_s").asDouble(), n.path("tokens").asDouble()});
                    }
                } catch (IOException e) {
                    // skip a cut line
                }
            }
        }
        double useful = 0;
        int prev = 0;
        for (var e : lines.entrySet()) {
            useful += e.getValue()[0] * (e.getKey() - prev);
            prev = e.getKey();
        }
        double wall = events.size() < 2 ? 0 : (events.getLast().path("t").asLong() - events.getFirst().path("t").asLong()) / 1000.0;
        int restarts = 0;
        Map<String, Integer> injected = new TreeMap<>(), detected = new TreeMap<>();
        List<Double> resume = new ArrayList<>();
        long exitAt = -1;
        int lastStep = 0;
        String status = "incomplete";
        for (JsonNode e : events) {
            String type = e.path("type").asText();
            if (e.has("step")) lastStep = Math.max(lastStep, e.path("step").asInt());
            switch (type) {
                case "restart" -> restarts++;
                case "fault_injected" -> injected.merge(e.path("detail").asText().split("[ :]")[0].toLowerCase(), 1, Integer::sum);
                case "worker_exit", "hang" -> exitAt = exitAt < 0 ? e.path("t").asLong() : exitAt;
                case "resume", "start" -> {
                    if (exitAt >= 0) resume.add((e.path("t").asLong() - exitAt) / 1000.0);
                    exitAt = -1;
                }
                case "finished" -> status = "finished";
                case "stopped" -> status = "stopped";
                case "supervisor_exit" -> {
                    if (e.path("detail").asText().contains("exhausted")) status = "failed";
                }
                default -> { }
            }
            if (DETECTIONS.contains(type)) detected.merge(type, 1, Integer::sum);
        }
        return new RunReport(run, events, wall, useful, restarts, injected, detected, resume, lastStep, status);
    }
}
