package dev.crucible.formats.safetensors;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.formats.FormatException;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Shape;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A safetensors file, memory-mapped and validated. Layout: u64 little-endian header length N; N bytes of UTF-8 JSON
 * {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}; then the data region,
 * offsets relative to its start. Everything is checked before any tensor is handed out: known dtypes, offsets inside
 * the file, sizes equal to shape × dtype, no overlapping tensors. Errors name the file and the problem.
 */
public final class SafeTensors implements AutoCloseable {
    /** Headers larger than this are refused (the format's own reference implementation uses 100 MB). */
    public static final long MAX_HEADER = 100L << 20;

    public record Entry(String name, DType type, Shape shape, long begin, long end) {}

    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path path;
    private final Arena arena;
    private final MemorySegment data;
    private final Map<String, Entry> entries;
    private final Map<String, String> metadata;

    private SafeTensors(Path path, Arena arena, MemorySegment data, Map<String, Entry> entries, Map<String, String> metadata) {
        this.path = path;
        this.arena = arena;
        this.data = data;
        this.entries = entries;
        this.metadata = metadata;
    }

    public static SafeTensors open(Path path) {
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8) throw new FormatException(path, "not a safetensors file: " + size + " bytes, shorter than the 8-byte header length");
            MemorySegment all = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            long n = all.get(ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0);
            if (n <= 1 || n > MAX_HEADER || n > size - 8) {
                throw new FormatException(path, "not a safetensors file: header length " + n + " does not fit a file of " + size + " bytes");
            }
            byte[] headerBytes = all.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
            JsonNode header;
            try {
                header = JSON.readTree(new String(headerBytes, StandardCharsets.UTF_8));
            } catch (JsonProcessingException e) {
                throw new FormatException(path, "safetensors header is not valid JSON: " + e.getOriginalMessage());
            }
            if (header == null || !header.isObject()) throw new FormatException(path, "safetensors header is not a JSON object");
            MemorySegment data = all.asSlice(8 + n);
            Map<String, String> metadata = new LinkedHashMap<>();
            Map<String, Entry> entries = new LinkedHashMap<>();
            for (Iterator<Map.Entry<String, JsonNode>> it = header.properties().iterator(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                if (e.getKey().equals("__metadata__")) {
                    if (!e.getValue().isObject()) throw new FormatException(path, "__metadata__ is not an object");
                    e.getValue().properties().forEach(m -> metadata.put(m.getKey(), m.getValue().asText()));
                    continue;
                }
                entries.put(e.getKey(), parseEntry(path, e.getKey(), e.getValue(), data.byteSize()));
            }
            checkNoOverlap(path, entries.values());
            return new SafeTensors(path, arena, data, Collections.unmodifiableMap(entries), Collections.unmodifiableMap(metadata));
        } catch (NoSuchFileException e) {
            arena.close();
            throw new FormatException(path, "no such file");
        } catch (IOException e) {
            arena.close();
            throw new FormatException(path, "cannot read: " + e.getMessage());
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static Entry parseEntry(Path path, String name, JsonNode node, long dataSize) {
        String where = "tensor '" + name + "'";
        if (!node.isObject()) throw new FormatException(path, where + " is not an object");
        JsonNode dt = node.get("dtype"), sh = node.get("shape"), off = node.get("data_offsets");
        if (dt == null || !dt.isTextual()) throw new FormatException(path, where + " has no dtype");
        DType type = DType.fromSafetensors(dt.asText());
        if (type == null) throw new FormatException(path, where + " has unsupported dtype " + dt.asText());
        if (sh == null || !sh.isArray()) throw new FormatException(path, where + " has no shape");
        long[] dims = new long[sh.size()];
        for (int i = 0; i < dims.length; i++) {
            JsonNode d = sh.get(i);
            if (!d.canConvertToLong() || !d.isIntegralNumber() || d.asLong() < 0) throw new FormatException(path, where + " has a bad dimension " + d);
            dims[i] = d.asLong();
        }
        if (off == null || !off.isArray() || off.size() != 2 || !off.get(0).isIntegralNumber() || !off.get(1).isIntegralNumber()) {
            throw new FormatException(path, where + " has no valid data_offsets");
        }
        long begin = off.get(0).asLong(), end = off.get(1).asLong();
        if (begin < 0 || end < begin || end > dataSize) {
            throw new FormatException(path, where + " data [" + begin + ", " + end + ") lies outside the data region of " + dataSize + " bytes");
        }
        Shape shape;
        long bytes;
        try {
            shape = new Shape(dims);
            bytes = Math.multiplyExact(shape.elements(), (long) type.blockBytes());
        } catch (ArithmeticException | IllegalArgumentException e) {
            throw new FormatException(path, where + " has an impossible shape " + sh);
        }
        if (bytes != end - begin) {
            throw new FormatException(path, where + " shape " + shape + " of " + type + " needs " + bytes + " bytes, offsets give " + (end - begin));
        }
        return new Entry(name, type, shape, begin, end);
    }

    private static void checkNoOverlap(Path path, Iterable<Entry> entries) {
        List<Entry> sorted = new ArrayList<>();
        entries.forEach(sorted::add);
        sorted.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
        for (int i = 1; i < sorted.size(); i++) {
            Entry a = sorted.get(i - 1), b = sorted.get(i);
            if (b.begin() < a.end()) throw new FormatException(path, "tensors '" + a.name() + "' and '" + b.name() + "' overlap");
        }
    }

    public Path path() { return path; }

    public Map<String, Entry> entries() { return entries; }

    public Map<String, String> metadata() { return metadata; }

    public boolean has(String name) { return entries.containsKey(name); }

    public Entry entry(String name) {
        Entry e = entries.get(name);
        if (e == null) throw new FormatException(path, "missing tensor '" + name + "'");
        return e;
    }

    /** The raw little-endian bytes of a tensor, valid until this file is closed. */
    public MemorySegment bytes(String name) {
        Entry e = entry(name);
        return data.asSlice(e.begin(), e.end() - e.begin());
    }

    /** The tensor converted to float (from F32, F64, F16, BF16). */
    public float[] floats(String name) {
        Entry e = entry(name);
        MemorySegment s = bytes(name);
        int n = Math.toIntExact(e.shape().elements());
        float[] out = new float[n];
        for (int i = 0; i < n; i++) {
            out[i] = switch (e.type()) {
                case F32 -> s.getAtIndex(LE_F32, i);
                case F64 -> (float) s.getAtIndex(LE_F64, i);
                case F16 -> Float.float16ToFloat(s.getAtIndex(LE_I16, i));
                case BF16 -> Float.intBitsToFloat(s.getAtIndex(LE_I16, i) << 16);
                default -> throw new FormatException(path, "tensor '" + name + "' is " + e.type() + ", not a float type");
            };
        }
        return out;
    }

    /** The tensor converted to double (from F32, F64, F16, BF16). */
    public double[] doubles(String name) {
        Entry e = entry(name);
        if (e.type() == DType.F64) {
            MemorySegment s = bytes(name);
            double[] out = new double[Math.toIntExact(e.shape().elements())];
            for (int i = 0; i < out.length; i++) out[i] = s.getAtIndex(LE_F64, i);
            return out;
        }
        float[] f = floats(name);
        double[] out = new double[f.length];
        for (int i = 0; i < f.length; i++) out[i] = f[i];
        return out;
    }

    /** The tensor as ints (from I32 or I64 within int range). */
    public int[] ints(String name) {
        Entry e = entry(name);
        MemorySegment s = bytes(name);
        int[] out = new int[Math.toIntExact(e.shape().elements())];
        for (int i = 0; i < out.length; i++) {
            out[i] = switch (e.type()) {
                case I32 -> s.getAtIndex(LE_I32, i);
                case I64 -> Math.toIntExact(s.getAtIndex(LE_I64, i));
                default -> throw new FormatException(path, "tensor '" + name + "' is " + e.type() + ", not an integer type");
            };
        }
        return out;
    }

    static final ValueLayout.OfFloat LE_F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfDouble LE_F64 = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfShort LE_I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfInt LE_I32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfLong LE_I64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    @Override
    public void close() {
        arena.close();
    }
}
