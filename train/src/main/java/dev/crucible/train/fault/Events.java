package dev.crucible.train.fault;

import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The fault timeline of a run: {@code RUN/events.jsonl}, one JSON object per line, appended by the worker and by the
 * supervisor (each line is written with one append, so two processes never interleave inside a line). Fields:
 * {@code t} (epoch ms), {@code time}, {@code source}, {@code type}, then {@code step}, {@code detail}, {@code action}
 * and any figures. {@code crucible runs show} reads it back.
 */
public final class Events {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Path file;
    private final String source;

    public Events(Path runDir, String source) {
        this.file = runDir.resolve("events.jsonl");
        this.source = source;
    }

    public Path file() { return file; }

    /** Appends an event; extra key/value pairs follow in order. */
    public synchronized void log(String type, Integer step, String detail, String action, Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        long now = System.currentTimeMillis();
        m.put("t", now);
        m.put("time", Instant.ofEpochMilli(now).toString());
        m.put("source", source);
        m.put("type", type);
        if (step != null) m.put("step", step);
        if (detail != null) m.put("detail", detail);
        if (action != null) m.put("action", action);
        for (int i = 0; i + 1 < kv.length; i += 2) m.put(String.valueOf(kv[i]), kv[i + 1]);
        try {
            Files.createDirectories(file.getParent());
            Files.write(file, (JSON.writeValueAsString(m) + "\n").getBytes(StandardCharsets.UTF_8),
                    StandardOpenOption.CREATE, StandardOpenOption.APPEND, StandardOpenOption.SYNC);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot append to " + file, e);
        }
    }
}
