package dev.crucible.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.style.markers.SeriesMarkers;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** Loss and throughput curves from a run's metrics.jsonl, drawn to PNG with XChart. */
final class Plots {
    private Plots() {}

    /** Writes loss.png and throughput.png next to metrics.jsonl; returns the files written. */
    static List<Path> draw(Path runDir) throws IOException {
        System.setProperty("java.awt.headless", "true");
        Path metrics = runDir.resolve("metrics.jsonl");
        if (!Files.isRegularFile(metrics)) throw new UserException("no metrics.jsonl in " + runDir + " (is it a run directory?)");
        // A resumed run may repeat steps; the last value written for a step wins.
        Map<Integer, Double> loss = new TreeMap<>(), tps = new TreeMap<>();
        Map<String, Map<Integer, Double>> eval = new TreeMap<>();
        ObjectMapper json = new ObjectMapper();
        int lineNo = 0;
        for (String line : Files.readAllLines(metrics)) {
            lineNo++;
            if (line.isBlank()) continue;
            JsonNode n;
            try {
                n = json.readTree(line);
            } catch (IOException e) {
                throw new UserException(metrics + ":" + lineNo + ": not a JSON line");
            }
            int step = n.path("step").asInt();
            if ("train".equals(n.path("type").asText())) {
                loss.put(step, n.path("loss").asDouble());
                tps.put(step, n.path("tokens_per_s").asDouble());
            } else if ("eval".equals(n.path("type").asText())) {
                for (var f : n.properties()) {
                    if (f.getValue().isNumber() && !f.getKey().equals("step")) {
                        eval.computeIfAbsent(f.getKey(), k -> new TreeMap<>()).put(step, f.getValue().asDouble());
                    }
                }
            }
        }
        if (loss.isEmpty()) throw new UserException(metrics + " has no training steps yet");
        List<Path> out = new ArrayList<>();

        XYChart lc = new XYChartBuilder().width(900).height(500).title("Loss").xAxisTitle("step").yAxisTitle("loss").build();
        lc.getStyler().setYAxisLogarithmic(true);
        add(lc, "train loss", loss, false);
        if (eval.containsKey("val_loss")) add(lc, "validation loss", eval.get("val_loss"), true);
        out.add(save(lc, runDir.resolve("loss.png")));

        XYChart tc = new XYChartBuilder().width(900).height(400).title("Throughput").xAxisTitle("step").yAxisTitle("tokens/s").build();
        add(tc, "tokens/s", tps, false);
        out.add(save(tc, runDir.resolve("throughput.png")));

        for (var e : eval.entrySet()) {
            if (!e.getKey().contains("accuracy")) continue;
            XYChart ac = new XYChartBuilder().width(900).height(400).title("Held-out accuracy").xAxisTitle("step").yAxisTitle("accuracy").build();
            add(ac, e.getKey(), e.getValue(), true);
            out.add(save(ac, runDir.resolve("accuracy.png")));
            break;
        }
        return out;
    }

    private static void add(XYChart c, String name, Map<Integer, Double> points, boolean markers) {
        List<Double> x = new ArrayList<>(), y = new ArrayList<>();
        points.forEach((k, v) -> {
            if (Double.isFinite(v) && (v > 0 || !c.getStyler().isYAxisLogarithmic())) {
                x.add((double) k);
                y.add(v);
            }
        });
        if (x.isEmpty()) return;
        var s = c.addSeries(name, x, y);
        s.setMarker(markers ? SeriesMarkers.CIRCLE : SeriesMarkers.NONE);
    }

    private static Path save(XYChart c, Path file) throws IOException {
        BitmapEncoder.saveBitmap(c, file.toString(), BitmapEncoder.BitmapFormat.PNG);
        return file;
    }
}
