package dev.crucible.formats.gguf;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Writes a GGUF v3 file: magic "GGUF", u32 version 3, u64 tensor count, u64 metadata count, the key/values, the
 * tensor infos (name, u32 n_dims, u64 ne[] innermost first, u32 type, u64 offset relative to the data section), then
 * the data section starting at the next multiple of the alignment (32), each tensor padded to the alignment.
 */
public final class GgufWriter {
    public static final int ALIGNMENT = 32;

    private record Pending(String name, long[] ne, GgmlType type, byte[] data) {}

    private final Map<String, GgufValue> metadata = new LinkedHashMap<>();
    private final List<Pending> tensors = new ArrayList<>();

    public GgufWriter put(String key, GgufValue value) {
        metadata.put(key, value);
        return this;
    }

    /**
     * Adds a tensor. {@code ne} is ggml's order (innermost first): a PyTorch [out, in] weight is ne = [in, out].
     * {@code data} must hold exactly the encoded elements.
     */
    public GgufWriter tensor(String name, long[] ne, GgmlType type, byte[] data) {
        long n = 1;
        for (long d : ne) n *= d;
        long rows = n / ne[0];
        long expect = type.rowBytes(ne[0]) * rows;
        if (type.rowBytes(ne[0]) < 0 || expect != data.length) {
            throw new IllegalArgumentException(name + ": " + data.length + " bytes do not fit " + type + " " + java.util.Arrays.toString(ne));
        }
        tensors.add(new Pending(name, ne.clone(), type, data));
        return this;
    }

    public void write(Path file) throws IOException {
        Out h = new Out();
        h.bytes(new byte[] {'G', 'G', 'U', 'F'});
        h.u32(3);
        h.u64(tensors.size());
        h.u64(metadata.size());
        for (Map.Entry<String, GgufValue> e : metadata.entrySet()) {
            h.string(e.getKey());
            h.u32(e.getValue().type().id);
            value(h, e.getValue().type(), e.getValue().elementType(), e.getValue().value());
        }
        long offset = 0;
        for (Pending t : tensors) {
            h.string(t.name());
            h.u32(t.ne().length);
            for (long d : t.ne()) h.u64(d);
            h.u32(t.type().id);
            h.u64(offset);
            offset = align(offset + t.data().length);
        }
        try (OutputStream os = new BufferedOutputStream(Files.newOutputStream(file), 1 << 20)) {
            byte[] header = h.toArray();
            os.write(header);
            os.write(new byte[(int) (align(header.length) - header.length)]);
            for (Pending t : tensors) {
                os.write(t.data());
                os.write(new byte[(int) (align(t.data().length) - t.data().length)]);
            }
        }
    }

    static long align(long x) {
        return (x + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    }

    private static void value(Out h, GgufValue.Type type, GgufValue.Type elem, Object v) {
        switch (type) {
            case UINT8, INT8, BOOL -> h.buf(1).put(type == GgufValue.Type.BOOL ? (byte) ((Boolean) v ? 1 : 0) : ((Long) v).byteValue());
            case UINT16, INT16 -> h.buf(2).putShort(((Long) v).shortValue());
            case UINT32, INT32 -> h.u32(((Long) v).intValue());
            case UINT64, INT64 -> h.u64((Long) v);
            case FLOAT32 -> h.buf(4).putFloat((Float) v);
            case FLOAT64 -> h.buf(8).putDouble((Double) v);
            case STRING -> h.string((String) v);
            case ARRAY -> {
                List<?> list = (List<?>) v;
                h.u32(elem.id);
                h.u64(list.size());
                for (Object o : list) value(h, elem, null, o);
            }
        }
    }

    /** A growing little-endian byte buffer. */
    private static final class Out {
        private ByteBuffer b = ByteBuffer.allocate(1 << 16).order(ByteOrder.LITTLE_ENDIAN);

        ByteBuffer buf(int need) {
            if (b.remaining() < need) {
                ByteBuffer n = ByteBuffer.allocate(Math.max(b.capacity() * 2, b.position() + need)).order(ByteOrder.LITTLE_ENDIAN);
                b.flip();
                n.put(b);
                b = n;
            }
            return b;
        }

        void u32(int v) { buf(4).putInt(v); }

        void u64(long v) { buf(8).putLong(v); }

        void bytes(byte[] v) { buf(v.length).put(v); }

        void string(String s) {
            byte[] u = s.getBytes(StandardCharsets.UTF_8);
            u64(u.length);
            bytes(u);
        }

        byte[] toArray() {
            byte[] out = new byte[b.position()];
            b.duplicate().flip().get(out);
            return out;
        }
    }
}
