package dev.crucible.formats.safetensors;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.crucible.tensor.DType;
import dev.crucible.tensor.Shape;

import java.io.IOException;
import java.io.OutputStream;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.WritableByteChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Writes a safetensors file: tensors in the order added, back to back, header padded with spaces to a multiple of
 * 8 bytes so the data region stays aligned. The data of each tensor is copied at {@link #write} time, so segments
 * must stay valid until then.
 */
public final class SafeTensorsWriter {
    private record Pending(String name, DType type, Shape shape, MemorySegment data) {}

    private final List<Pending> tensors = new ArrayList<>();
    private final Map<String, String> metadata = new LinkedHashMap<>();

    public SafeTensorsWriter metadata(String key, String value) {
        metadata.put(key, value);
        return this;
    }

    public SafeTensorsWriter add(String name, DType type, Shape shape, MemorySegment littleEndianBytes) {
        if (type.safetensorsName() == null) throw new IllegalArgumentException(type + " cannot be stored in safetensors");
        long bytes = type.bytes(shape.elements());
        if (littleEndianBytes.byteSize() != bytes) {
            throw new IllegalArgumentException(name + ": " + littleEndianBytes.byteSize() + " bytes for shape " + shape + " of " + type);
        }
        tensors.add(new Pending(name, type, shape, littleEndianBytes));
        return this;
    }

    public SafeTensorsWriter add(String name, Shape shape, float[] values) {
        return add(name, DType.F32, shape, MemorySegment.ofArray(values));
    }

    public void write(Path file) throws IOException {
        ObjectNode header = new ObjectMapper().createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode meta = header.putObject("__metadata__");
            metadata.forEach(meta::put);
        }
        long offset = 0;
        for (Pending t : tensors) {
            ObjectNode e = header.putObject(t.name());
            e.put("dtype", t.type().safetensorsName());
            ArrayNode shape = e.putArray("shape");
            for (long d : t.shape().dims()) shape.add(d);
            ArrayNode off = e.putArray("data_offsets");
            off.add(offset);
            off.add(offset + t.data().byteSize());
            offset += t.data().byteSize();
        }
        byte[] json = header.toString().getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) / 8 * 8;
        ByteBuffer head = ByteBuffer.allocate(8 + padded).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(json);
        while (head.hasRemaining()) head.put((byte) ' ');
        head.flip();
        try (OutputStream os = Files.newOutputStream(file); WritableByteChannel ch = Channels.newChannel(os)) {
            ch.write(head);
            byte[] chunk = new byte[1 << 20];
            for (Pending t : tensors) {
                long size = t.data().byteSize();
                for (long pos = 0; pos < size; pos += chunk.length) {
                    int len = (int) Math.min(chunk.length, size - pos);
                    MemorySegment.copy(t.data(), ValueLayout.JAVA_BYTE, pos, chunk, 0, len);
                    os.write(chunk, 0, len);
                }
            }
        }
    }
}
