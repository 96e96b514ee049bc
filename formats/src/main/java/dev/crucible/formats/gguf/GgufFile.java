package dev.crucible.formats.gguf;

import dev.crucible.formats.FormatException;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A GGUF file (version 2 or 3), memory-mapped and validated before anything is handed out: magic, version, counts
 * and string lengths within the file, known value and tensor types, at most 4 dimensions, rows a whole number of
 * blocks, offsets aligned and inside the data section, no overlapping tensors, no duplicate names or keys. Every
 * failure is a {@link FormatException} naming the file and the problem.
 */
public final class GgufFile implements AutoCloseable {
    /** One tensor: its name, ggml dims (innermost first), type, and byte range relative to the data section. */
    public record TensorInfo(String name, long[] ne, GgmlType type, long offset, long size) {
        public long elements() {
            long n = 1;
            for (long d : ne) n *= d;
            return n;
        }

        /** The PyTorch-order shape (outermost first). */
        public long[] shape() {
            long[] s = new long[ne.length];
            for (int i = 0; i < ne.length; i++) s[i] = ne[ne.length - 1 - i];
            return s;
        }
    }

    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final int MAX_DIMS = 4;
    /** Nested arrays deeper than this are refused (they only serve to exhaust the stack). */
    private static final int MAX_NESTING = 2;

    private final Path path;
    private final Arena arena;
    private final MemorySegment data;
    private final int version;
    private final Map<String, GgufValue> metadata;
    private final Map<String, TensorInfo> tensors;

    private GgufFile(Path path, Arena arena, MemorySegment data, int version, Map<String, GgufValue> metadata,
                     Map<String, TensorInfo> tensors) {
        this.path = path;
        this.arena = arena;
        this.data = data;
        this.version = version;
        this.metadata = metadata;
        this.tensors = tensors;
    }

    /** True if the file starts with the GGUF magic (false for directories and unreadable files). */
    public static boolean looksLikeGguf(Path file) {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(4);
            while (b.hasRemaining() && ch.read(b) >= 0) { }
            return !b.hasRemaining() && b.get(0) == 'G' && b.get(1) == 'G' && b.get(2) == 'U' && b.get(3) == 'F';
        } catch (IOException | RuntimeException e) {
            return false;
        }
    }

    public static GgufFile open(Path path) {
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            MemorySegment all = size == 0 ? MemorySegment.ofArray(new byte[0]) : ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            Reader r = new Reader(path, all);
            if (size < 4 || all.get(ValueLayout.JAVA_BYTE, 0) != 'G' || all.get(ValueLayout.JAVA_BYTE, 1) != 'G'
                    || all.get(ValueLayout.JAVA_BYTE, 2) != 'U' || all.get(ValueLayout.JAVA_BYTE, 3) != 'F') {
                throw new FormatException(path, "not a GGUF file (the first 4 bytes are not \"GGUF\")");
            }
            r.pos = 4;
            int version = r.u32("version");
            if (version != 2 && version != 3) throw new FormatException(path, "unsupported GGUF version " + Integer.toUnsignedString(version) + " (2 and 3 are supported)");
            long nTensors = r.u64("tensor count"), nKv = r.u64("metadata count");
            // Each key/value needs at least 12 bytes, each tensor info at least 24: bound the counts by the file size.
            if (nKv < 0 || nKv > (size - r.pos) / 12) throw new FormatException(path, "metadata count " + Long.toUnsignedString(nKv) + " does not fit a file of " + size + " bytes");
            Map<String, GgufValue> meta = new LinkedHashMap<>();
            for (long i = 0; i < nKv; i++) {
                String key = r.string("metadata key #" + i);
                long typeId = Integer.toUnsignedLong(r.u32("type of '" + key + "'"));
                GgufValue.Type type = GgufValue.Type.ofId(typeId);
                if (type == null) throw new FormatException(path, "metadata '" + key + "' has unknown value type " + typeId);
                GgufValue v = r.value(key, type, 0);
                if (meta.put(key, v) != null) throw new FormatException(path, "metadata key '" + key + "' appears twice");
            }
            if (nTensors < 0 || nTensors > (size - r.pos) / 24) throw new FormatException(path, "tensor count " + Long.toUnsignedString(nTensors) + " does not fit a file of " + size + " bytes");
            long alignment = 32;
            GgufValue al = meta.get("general.alignment");
            if (al != null) {
                if (al.type() != GgufValue.Type.UINT32) throw new FormatException(path, "general.alignment is " + al.type() + ", not UINT32");
                alignment = (Long) al.value() & 0xffffffffL;
                if (alignment == 0 || (alignment & (alignment - 1)) != 0) throw new FormatException(path, "general.alignment " + alignment + " is not a power of two");
            }
            List<TensorInfo> infos = new ArrayList<>();
            Map<String, TensorInfo> byName = new LinkedHashMap<>();
            for (long i = 0; i < nTensors; i++) {
                String name = r.string("tensor name #" + i);
                String where = "tensor '" + name + "'";
                int nd = r.u32(where + " n_dims");
                if (nd < 1 || nd > MAX_DIMS) throw new FormatException(path, where + " has " + Integer.toUnsignedString(nd) + " dimensions (1 to " + MAX_DIMS + " allowed)");
                long[] ne = new long[nd];
                long elements = 1;
                for (int d = 0; d < nd; d++) {
                    ne[d] = r.u64(where + " dimension");
                    if (ne[d] <= 0) throw new FormatException(path, where + " has a bad dimension " + Long.toUnsignedString(ne[d]));
                    try {
                        elements = Math.multiplyExact(elements, ne[d]);
                    } catch (ArithmeticException e) {
                        throw new FormatException(path, where + " has an impossible shape " + Arrays.toString(ne));
                    }
                }
                long typeId = Integer.toUnsignedLong(r.u32(where + " type"));
                GgmlType type = GgmlType.ofId(typeId);
                if (type == null) {
                    throw new FormatException(path, where + " has tensor type " + GgmlType.nameOf(typeId) + ", which Crucible does not read"
                            + " (supported: F32, F16, BF16, Q8_0, Q4_0; llama-quantize --pure Q8_0 or Q4_0 writes a file of one type"
                            + " throughout, without the Q6_K output its mixes use)");
                }
                long rowBytes = type.rowBytes(ne[0]);
                if (rowBytes < 0) throw new FormatException(path, where + " row of " + ne[0] + " elements is not a whole number of " + type + " blocks of " + type.blockSize);
                long bytes;
                try {
                    bytes = Math.multiplyExact(rowBytes, elements / ne[0]);
                } catch (ArithmeticException e) {
                    throw new FormatException(path, where + " has an impossible shape " + Arrays.toString(ne));
                }
                long offset = r.u64(where + " offset");
                if (offset < 0 || offset % alignment != 0) throw new FormatException(path, where + " offset " + Long.toUnsignedString(offset) + " is not a multiple of the alignment " + alignment);
                TensorInfo t = new TensorInfo(name, ne, type, offset, bytes);
                if (byName.put(name, t) != null) throw new FormatException(path, "tensor '" + name + "' appears twice");
                infos.add(t);
            }
            long dataStart = (r.pos + alignment - 1) / alignment * alignment;
            long dataSize = size - dataStart;
            for (TensorInfo t : infos) {
                if (dataSize < 0 || t.offset() > dataSize || t.size() > dataSize - t.offset()) {
                    throw new FormatException(path, "tensor '" + t.name() + "' data [" + t.offset() + ", +" + t.size() + ") lies past the end of the file (truncated? data section has " + Math.max(0, dataSize) + " bytes)");
                }
            }
            List<TensorInfo> sorted = new ArrayList<>(infos);
            sorted.sort(Comparator.comparingLong(TensorInfo::offset));
            for (int i = 1; i < sorted.size(); i++) {
                TensorInfo a = sorted.get(i - 1), b = sorted.get(i);
                if (b.offset() < a.offset() + a.size()) throw new FormatException(path, "tensors '" + a.name() + "' and '" + b.name() + "' overlap");
            }
            MemorySegment data = all.asSlice(Math.min(dataStart, size));
            return new GgufFile(path, arena, data, version, Collections.unmodifiableMap(meta), Collections.unmodifiableMap(byName));
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

    /** Bounds-checked little-endian reads over the mapped header. */
    private static final class Reader {
        final Path path;
        final MemorySegment s;
        long pos;

        Reader(Path path, MemorySegment s) {
            this.path = path;
            this.s = s;
        }

        void need(long n, String what) {
            if (n < 0 || n > s.byteSize() - pos) throw new FormatException(path, "truncated: " + what + " runs past the end of the file (" + s.byteSize() + " bytes)");
        }

        int u32(String what) {
            need(4, what);
            int v = s.get(U32, pos);
            pos += 4;
            return v;
        }

        long u64(String what) {
            need(8, what);
            long v = s.get(U64, pos);
            pos += 8;
            return v;
        }

        String string(String what) {
            long n = u64(what + " length");
            need(n, what);
            if (n > Integer.MAX_VALUE - 8) throw new FormatException(path, what + " is " + Long.toUnsignedString(n) + " bytes long");
            byte[] b = s.asSlice(pos, n).toArray(ValueLayout.JAVA_BYTE);
            pos += n;
            try {
                return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT).decode(java.nio.ByteBuffer.wrap(b)).toString();
            } catch (CharacterCodingException e) {
                throw new FormatException(path, what + " is not valid UTF-8");
            }
        }

        GgufValue value(String key, GgufValue.Type type, int depth) {
            String what = "metadata '" + key + "'";
            return switch (type) {
                case UINT8 -> { need(1, what); yield new GgufValue(type, null, (long) (s.get(ValueLayout.JAVA_BYTE, pos++) & 0xff)); }
                case INT8 -> { need(1, what); yield new GgufValue(type, null, (long) s.get(ValueLayout.JAVA_BYTE, pos++)); }
                case BOOL -> {
                    need(1, what);
                    byte b = s.get(ValueLayout.JAVA_BYTE, pos++);
                    if (b != 0 && b != 1) throw new FormatException(path, what + " is a bool with value " + b);
                    yield new GgufValue(type, null, b == 1);
                }
                case UINT16, INT16 -> {
                    need(2, what);
                    short v = s.get(ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), pos);
                    pos += 2;
                    yield new GgufValue(type, null, type == GgufValue.Type.UINT16 ? (long) (v & 0xffff) : (long) v);
                }
                case UINT32 -> new GgufValue(type, null, Integer.toUnsignedLong(u32(what)));
                case INT32 -> new GgufValue(type, null, (long) u32(what));
                case UINT64, INT64 -> new GgufValue(type, null, u64(what));
                case FLOAT32 -> new GgufValue(type, null, Float.intBitsToFloat(u32(what)));
                case FLOAT64 -> new GgufValue(type, null, Double.longBitsToDouble(u64(what)));
                case STRING -> new GgufValue(type, null, string(what));
                case ARRAY -> {
                    if (depth >= MAX_NESTING) throw new FormatException(path, what + " nests arrays too deeply");
                    long et = Integer.toUnsignedLong(u32(what + " element type"));
                    GgufValue.Type elem = GgufValue.Type.ofId(et);
                    if (elem == null) throw new FormatException(path, what + " is an array of unknown type " + et);
                    long n = u64(what + " length");
                    long minSize = elem.size > 0 ? elem.size : 8;
                    if (n < 0 || n > (s.byteSize() - pos) / minSize) throw new FormatException(path, what + " array of " + Long.toUnsignedString(n) + " elements runs past the end of the file");
                    List<Object> list = new ArrayList<>((int) n);
                    for (long i = 0; i < n; i++) list.add(value(key, elem, depth + 1).value());
                    yield new GgufValue(type, elem, Collections.unmodifiableList(list));
                }
            };
        }
    }

    public Path path() { return path; }

    public int version() { return version; }

    public Map<String, GgufValue> metadata() { return metadata; }

    public Map<String, TensorInfo> tensors() { return tensors; }

    public GgufValue get(String key) { return metadata.get(key); }

    /** A required string value. */
    public String string(String key) {
        GgufValue v = metadata.get(key);
        if (v == null) throw new FormatException(path, "missing metadata '" + key + "'");
        if (v.type() != GgufValue.Type.STRING) throw new FormatException(path, "metadata '" + key + "' is " + v.type() + ", expected STRING");
        return (String) v.value();
    }

    /** A required integer value that fits an int and is at least {@code min}. */
    public int integer(String key, int min) {
        GgufValue v = metadata.get(key);
        if (v == null) throw new FormatException(path, "missing metadata '" + key + "'");
        return checkInt(key, v, min);
    }

    /** An optional integer value, or {@code dflt} if absent. */
    public int integer(String key, int min, int dflt) {
        GgufValue v = metadata.get(key);
        return v == null ? dflt : checkInt(key, v, min);
    }

    private int checkInt(String key, GgufValue v, int min) {
        Long l = v.asLong();
        if (l == null) throw new FormatException(path, "metadata '" + key + "' is " + v.type() + ", expected an integer");
        if (l < min || l > Integer.MAX_VALUE) throw new FormatException(path, "metadata '" + key + "' = " + l + " is out of range");
        return (int) (long) l;
    }

    /** An optional float value (FLOAT32 or FLOAT64), or {@code dflt} if absent. */
    public float real(String key, float dflt) {
        GgufValue v = metadata.get(key);
        if (v == null) return dflt;
        if (v.type() == GgufValue.Type.FLOAT32) return (Float) v.value();
        if (v.type() == GgufValue.Type.FLOAT64) return (float) (double) (Double) v.value();
        throw new FormatException(path, "metadata '" + key + "' is " + v.type() + ", expected a float");
    }

    /** An optional array value with elements of the given type, or null if absent. */
    public List<?> array(String key, GgufValue.Type... elementTypes) {
        GgufValue v = metadata.get(key);
        if (v == null) return null;
        if (v.type() == GgufValue.Type.ARRAY) for (GgufValue.Type t : elementTypes) if (v.elementType() == t) return (List<?>) v.value();
        throw new FormatException(path, "metadata '" + key + "' is " + v.type() + (v.elementType() == null ? "" : " of " + v.elementType()) + ", expected an array of " + Arrays.toString(elementTypes));
    }

    public TensorInfo tensor(String name) {
        TensorInfo t = tensors.get(name);
        if (t == null) throw new FormatException(path, "missing tensor '" + name + "'");
        return t;
    }

    /** The raw bytes of a tensor, valid until this file is closed. */
    public MemorySegment bytes(String name) {
        TensorInfo t = tensor(name);
        return data.asSlice(t.offset(), t.size());
    }

    /** The tensor decoded to floats (dequantized for Q8_0 and Q4_0), in row-major order. */
    public float[] floats(String name) {
        TensorInfo t = tensor(name);
        if (t.elements() > Integer.MAX_VALUE - 8) throw new FormatException(path, "tensor '" + name + "' has too many elements to load as one array");
        float[] out = new float[(int) t.elements()];
        Quant.decode(t.type(), data, t.offset(), out.length, out, 0);
        return out;
    }

    @Override
    public void close() {
        arena.close();
    }
}
