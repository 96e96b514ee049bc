package dev.crucible.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.crucible.backend.Buffer;
import dev.crucible.formats.FormatException;
import dev.crucible.formats.safetensors.SafeTensors;
import dev.crucible.formats.safetensors.SafeTensorsWriter;
import dev.crucible.model.Llama;
import dev.crucible.model.ParamLayout;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Shape;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * A checkpoint directory {@code step-NNNNNNNN/}:
 * <pre>
 *   model.safetensors      parameters, F32, Hugging Face names
 *   optimizer.safetensors  AdamW moments "m.NAME", "v.NAME" (absent in weights-only checkpoints)
 *   state.json             {"format": "crucible-checkpoint-v1", "step", "config": {…}, "data": {"epoch","cursor"}, …}
 *   tokenizer.json         the run's tokenizer (Hugging Face format)
 *   manifest.json          {"files": {name: {"bytes", "sha256"}}}
 *   DONE                   written last: a directory without it is incomplete
 * </pre>
 * It is written under a temporary name and renamed into place, so a crash leaves either the old set of checkpoints
 * or the new one, never a half-written directory under a real name. Loading verifies the manifest first.
 */
public final class Checkpoint {
    public static final String FORMAT = "crucible-checkpoint-v1";
    public static final String MODEL = "model.safetensors", OPTIMIZER = "optimizer.safetensors", STATE = "state.json",
            TOKENIZER = "tokenizer.json", MANIFEST = "manifest.json", DONE = "DONE";
    private static final ObjectMapper JSON = new ObjectMapper();

    private Checkpoint() {}

    public static String dirName(int step) { return String.format("step-%08d", step); }

    /**
     * Host copies of everything a checkpoint holds, taken between steps. Writing from a snapshot can then overlap
     * the next training steps. Owns its memory: {@link #close} frees it.
     */
    public record Snapshot(int step, ParamLayout layout, Arena arena, MemorySegment params, MemorySegment m,
                           MemorySegment v, Map<String, Object> state, Path tokenizerJson) implements AutoCloseable {
        @Override
        public void close() { arena.close(); }
    }

    /** Called after each file is written into the temporary directory; fault injection hooks in here. */
    public interface WriteHook {
        WriteHook NONE = (step, file) -> {};

        void written(int step, String file) throws IOException;
    }

    /** Copies parameters, and the AdamW moments when opt is not null, to host memory. */
    public static Snapshot snapshot(int step, Llama model, AdamW opt, Map<String, Object> state, Path tokenizerJson) {
        Arena arena = Arena.ofShared();
        try {
            MemorySegment p = download(model, model.params(), arena);
            MemorySegment m = opt == null ? null : download(model, opt.m(), arena);
            MemorySegment v = opt == null ? null : download(model, opt.v(), arena);
            return new Snapshot(step, model.layout(), arena, p, m, v, Map.copyOf(state), tokenizerJson);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /** Writes a checkpoint for {@code step} synchronously (snapshot + write) and returns its directory. */
    public static Path save(Path root, int step, Llama model, AdamW opt, Map<String, Object> state, Path tokenizerJson)
            throws IOException {
        try (Snapshot s = snapshot(step, model, opt, state, tokenizerJson)) {
            return write(root, s, WriteHook.NONE);
        }
    }

    /**
     * Writes a snapshot as {@code root/step-NNNNNNNN}: files go into a temporary directory, each is synced, the
     * manifest and then the DONE marker follow, and one rename publishes the whole. On failure the temporary
     * directory is removed and existing checkpoints are untouched.
     */
    public static Path write(Path root, Snapshot snap, WriteHook hook) throws IOException {
        Files.createDirectories(root);
        int step = snap.step();
        Path finalDir = root.resolve(dirName(step));
        Path tmp = Files.createTempDirectory(root, ".tmp-" + dirName(step) + "-");
        try {
            ParamLayout layout = snap.layout();
            writeTensors(tmp.resolve(MODEL), layout, "", snap.params());
            hook.written(step, MODEL);
            if (snap.m() != null) {
                SafeTensorsWriter w = new SafeTensorsWriter().metadata("format", FORMAT);
                for (ParamLayout.Tensor t : layout.tensors()) w.add("m." + t.name(), DType.F32, Shape.of(t.shape()), slice(snap.m(), t));
                for (ParamLayout.Tensor t : layout.tensors()) w.add("v." + t.name(), DType.F32, Shape.of(t.shape()), slice(snap.v(), t));
                w.write(tmp.resolve(OPTIMIZER));
                hook.written(step, OPTIMIZER);
            }
            ObjectNode st = JSON.createObjectNode();
            st.put("format", FORMAT);
            st.put("step", step);
            st.setAll((ObjectNode) JSON.valueToTree(snap.state()));
            Files.writeString(tmp.resolve(STATE), JSON.writerWithDefaultPrettyPrinter().writeValueAsString(st));
            hook.written(step, STATE);
            if (snap.tokenizerJson() != null) Files.copy(snap.tokenizerJson(), tmp.resolve(TOKENIZER));
            writeManifest(tmp);
            Files.writeString(tmp.resolve(DONE), "ok\n");
            fsync(tmp.resolve(DONE));
            fsyncDir(tmp);
            if (Files.exists(finalDir)) deleteTree(finalDir); // a re-run of the same step replaces it
            move(tmp, finalDir);
            fsyncDir(root);
            return finalDir;
        } catch (IOException | RuntimeException e) {
            deleteTree(tmp);
            throw e;
        }
    }

    /** Removes temporary directories left by a writer that died mid-write (they were never published). */
    public static void cleanTemporary(Path root) throws IOException {
        if (!Files.isDirectory(root)) return;
        try (Stream<Path> s = Files.list(root)) {
            for (Path p : s.filter(p -> p.getFileName().toString().startsWith(".tmp-step-")).toList()) deleteTree(p);
        }
    }

    private static MemorySegment download(Llama model, Buffer b, Arena arena) {
        MemorySegment host = arena.allocate(b.elements() * 4, 64);
        model.backend().copyOut(b, host);
        return host;
    }

    private static MemorySegment slice(MemorySegment all, ParamLayout.Tensor t) {
        return all.asSlice(t.offset() * 4, t.size() * 4);
    }

    private static void writeTensors(Path file, ParamLayout layout, String prefix, MemorySegment all) throws IOException {
        SafeTensorsWriter w = new SafeTensorsWriter().metadata("format", "pt");
        for (ParamLayout.Tensor t : layout.tensors()) w.add(prefix + t.name(), DType.F32, Shape.of(t.shape()), slice(all, t));
        w.write(file);
    }

    private static void writeManifest(Path dir) throws IOException {
        ObjectNode files = JSON.createObjectNode();
        try (Stream<Path> s = Files.list(dir)) {
            for (Path f : s.sorted().toList()) {
                ObjectNode e = files.putObject(f.getFileName().toString());
                e.put("bytes", Files.size(f));
                e.put("sha256", sha256(f));
                fsync(f);
            }
        }
        ObjectNode m = JSON.createObjectNode();
        m.set("files", files);
        Files.writeString(dir.resolve(MANIFEST), JSON.writerWithDefaultPrettyPrinter().writeValueAsString(m));
        fsync(dir.resolve(MANIFEST));
    }

    public static String sha256(Path f) throws IOException {
        try (InputStream in = Files.newInputStream(f)) {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[1 << 20];
            for (int r; (r = in.read(buf)) > 0; ) md.update(buf, 0, r);
            return HexFormat.of().formatHex(md.digest());
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Checks the marker, the manifest, and every file's size and SHA-256; throws {@link FormatException} if any fail. */
    public static void verify(Path dir) {
        if (!Files.isDirectory(dir)) throw new FormatException(dir, "not a checkpoint directory");
        if (!Files.exists(dir.resolve(DONE))) throw new FormatException(dir, "incomplete checkpoint (no DONE marker)");
        JsonNode files;
        try {
            files = JSON.readTree(dir.resolve(MANIFEST).toFile()).get("files");
        } catch (IOException e) {
            throw new FormatException(dir, "unreadable manifest.json: " + e.getMessage());
        }
        if (files == null || !files.isObject()) throw new FormatException(dir, "manifest.json lists no files");
        for (var e : files.properties()) {
            Path f = dir.resolve(e.getKey());
            try {
                long size = Files.size(f);
                if (size != e.getValue().path("bytes").asLong(-1)) {
                    throw new FormatException(dir, e.getKey() + " has " + size + " bytes, manifest says " + e.getValue().path("bytes"));
                }
                if (!sha256(f).equals(e.getValue().path("sha256").asText())) {
                    throw new FormatException(dir, e.getKey() + " does not match its SHA-256 in manifest.json (corrupt)");
                }
            } catch (NoSuchFileException ex) {
                throw new FormatException(dir, e.getKey() + " is missing");
            } catch (IOException ex) {
                throw new FormatException(dir, "cannot read " + e.getKey() + ": " + ex.getMessage());
            }
        }
    }

    /** state.json of a checkpoint (after {@link #verify}). */
    public static JsonNode state(Path dir) {
        try {
            JsonNode n = JSON.readTree(dir.resolve(STATE).toFile());
            if (!FORMAT.equals(n.path("format").asText())) throw new FormatException(dir, "state.json is not " + FORMAT);
            return n;
        } catch (IOException e) {
            throw new FormatException(dir, "unreadable state.json: " + e.getMessage());
        }
    }

    /** Checkpoint directories under root, newest step first. */
    public static List<Path> list(Path root) {
        if (!Files.isDirectory(root)) return List.of();
        try (Stream<Path> s = Files.list(root)) {
            return s.filter(p -> p.getFileName().toString().matches("step-\\d{8}") && Files.isDirectory(p))
                    .sorted((a, b) -> b.getFileName().toString().compareTo(a.getFileName().toString())).toList();
        } catch (IOException e) {
            return List.of();
        }
    }

    /** A verified checkpoint, or the reasons the newer ones were skipped. */
    public record Found(Path dir, List<String> skipped) {}

    /** The newest checkpoint that verifies; bad ones are reported in {@link Found#skipped} and left in place. */
    public static Found latestGood(Path root) {
        List<String> skipped = new ArrayList<>();
        for (Path d : list(root)) {
            try {
                verify(d);
                state(d);
                return new Found(d, skipped);
            } catch (FormatException e) {
                skipped.add(e.getMessage());
            }
        }
        return new Found(null, skipped);
    }

    /** Loads parameters (and, if opt is not null, the AdamW moments) into an already built model. */
    public static void load(Path dir, Llama model, AdamW opt) {
        loadTensors(dir.resolve(MODEL), model, model.params(), "");
        if (opt != null) {
            loadTensors(dir.resolve(OPTIMIZER), model, opt.m(), "m.");
            loadTensors(dir.resolve(OPTIMIZER), model, opt.v(), "v.");
        }
    }

    private static void loadTensors(Path file, Llama model, Buffer target, String prefix) {
        try (SafeTensors st = SafeTensors.open(file)) {
            for (ParamLayout.Tensor t : model.layout().tensors()) {
                SafeTensors.Entry e = st.entry(prefix + t.name());
                if (!e.shape().equals(Shape.of(t.shape()))) {
                    throw new FormatException(file, "tensor '" + e.name() + "' has shape " + e.shape() + ", the model needs " + Shape.of(t.shape()));
                }
                Buffer dst = target.slice(t.offset(), t.size());
                if (e.type() == DType.F32) model.backend().copyIn(dst, st.bytes(e.name()));
                else model.backend().copyIn(dst, MemorySegment.ofArray(st.floats(e.name())));
            }
        }
    }

    static void move(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(from, to);
        }
    }

    static void fsync(Path f) throws IOException {
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
            ch.force(true);
        }
    }

    static void fsyncDir(Path d) {
        try (FileChannel ch = FileChannel.open(d, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException ignored) {
            // not every file system can sync a directory; the rename is still atomic
        }
    }

    public static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) return;
        try (Stream<Path> s = Files.walk(p)) {
            for (Path x : s.sorted((a, b) -> b.getNameCount() - a.getNameCount()).toList()) Files.deleteIfExists(x);
        }
    }

    static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
}
