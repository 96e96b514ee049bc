package dev.crucible.formats.gguf;

import dev.crucible.formats.FormatException;
import dev.crucible.formats.hf.LlamaSpec;
import dev.crucible.formats.hf.ModelWeights;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class GgufTest {

    @Test
    void f32RoundTripIsBitExact(@TempDir Path dir) throws Exception {
        for (boolean tied : new boolean[] {false, true}) {
            ModelWeights m = TinyModels.random(TinyModels.spec(tied), 7);
            Path f = dir.resolve("m" + tied + ".gguf");
            GgufModel.write(m, f, GgmlType.F32, "t");
            ModelWeights back = GgufModel.read(f);
            assertEquals(m.spec(), back.spec());
            for (Map.Entry<String, float[]> e : m.tensors().entrySet()) {
                assertArrayEquals(e.getValue(), back.tensors().get(e.getKey()), e.getKey());
            }
            assertEquals(257, back.tokenizer().vocabSize());
            assertEquals("hello 12+3", back.tokenizer().decode(back.tokenizer().encodeWithSpecials("hello 12+3")));
            assertArrayEquals(new int[] {104, 105, 256}, back.tokenizer().encodeWithSpecials("hi<|endoftext|>"));
            assertEquals(256, back.eos());
        }
    }

    @Test
    void halfTypesRoundToNearestEven(@TempDir Path dir) throws Exception {
        ModelWeights m = TinyModels.random(TinyModels.spec(false), 8);
        for (GgmlType t : List.of(GgmlType.F16, GgmlType.BF16)) {
            Path f = dir.resolve(t + ".gguf");
            GgufModel.write(m, f, t, "t");
            ModelWeights back = GgufModel.read(f);
            float[] x = m.tensors().get("model.layers.1.mlp.up_proj.weight"), y = back.tensors().get("model.layers.1.mlp.up_proj.weight");
            for (int i = 0; i < x.length; i++) {
                float want = t == GgmlType.F16 ? Float.float16ToFloat(Float.floatToFloat16(x[i])) : Quant.fromBf16(Quant.toBf16(x[i]));
                assertEquals(want, y[i], 0f);
            }
            // norms stay F32, exactly
            assertArrayEquals(m.tensors().get("model.norm.weight"), back.tensors().get("model.norm.weight"));
        }
        assertEquals((short) 0x3f80, Quant.toBf16(1f));
        assertEquals((short) 0x3f80, Quant.toBf16(Float.intBitsToFloat(0x3f808000))); // tie to even: down
        assertEquals((short) 0x3f82, Quant.toBf16(Float.intBitsToFloat(0x3f818000))); // tie to even: up
    }

    @Test
    void q8BlockLayoutMatchesGgml() {
        float[] x = new float[32];
        for (int j = 0; j < 32; j++) x[j] = j - 16;
        byte[] b = Quant.encode(GgmlType.Q8_0, x, 0, 32);
        assertEquals(34, b.length);
        short d = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).getShort(0);
        assertEquals(Float.floatToFloat16(16f / 127f), d);
        assertEquals(-127, b[2]);            // x = -16
        assertEquals(8, b[2 + 17]);          // x = 1: round(7.9375)
        assertEquals(119, b[2 + 31]);        // x = 15: round(119.0625)
        assertEquals(-4, Quant.roundHalfAway(-3.5f)); // C roundf, not Java's Math.round
    }

    @Test
    void q4BlockLayoutMatchesGgml() {
        float[] x = new float[32];
        for (int j = 0; j < 32; j++) x[j] = j - 16;
        byte[] b = Quant.encode(GgmlType.Q4_0, x, 0, 32);
        assertEquals(18, b.length);
        // the largest magnitude is -16, so d = -16 / -8 = 2 and q = trunc(x/2 + 8.5), at most 15
        assertEquals(Float.floatToFloat16(2f), ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).getShort(0));
        for (int j = 0; j < 16; j++) {
            int lo = Math.min(15, (int) ((j - 16) / 2f + 8.5f)), hi = Math.min(15, (int) ((j) / 2f + 8.5f));
            assertEquals(lo | (hi << 4), b[2 + j] & 0xff, "byte " + j); // low nibble: element j, high: element j + 16
        }
        float[] y = new float[32];
        Quant.decode(GgmlType.Q4_0, MemorySegment.ofArray(b), 0, 32, y, 0);
        assertEquals(-16f, y[0]);
        assertEquals(14f, y[31]); // clamped at q = 15
    }

    @Test
    void quantizedExportsStayWithinTheirBlockBounds(@TempDir Path dir) throws Exception {
        ModelWeights m = TinyModels.random(TinyModels.spec(false), 9);
        for (GgmlType t : List.of(GgmlType.Q8_0, GgmlType.Q4_0)) {
            Path f = dir.resolve(t + ".gguf");
            GgufModel.write(m, f, t, "t");
            ModelWeights back = GgufModel.read(f);
            for (Map.Entry<String, float[]> e : m.tensors().entrySet()) {
                float[] x = e.getValue(), y = back.tensors().get(e.getKey());
                if (m.spec().tensorShapes().get(e.getKey()).length == 1) {
                    assertArrayEquals(x, y);
                    continue;
                }
                // Q/K rows are permuted on export and back on import, so compare in HF order per block of the source rows
                for (int b = 0; b < x.length / 32; b++) {
                    float amax = 0;
                    for (int j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
                    float d = amax / (t == GgmlType.Q8_0 ? 127f : 8f);
                    float bound = t == GgmlType.Q8_0 ? 0.51f * d + 127 * d / 2048 : 1.01f * d;
                    for (int j = 0; j < 32; j++) {
                        int i = b * 32 + j;
                        assertTrue(Math.abs(x[i] - y[i]) <= bound + 1e-12f, t + " " + e.getKey() + "[" + i + "]: " + x[i] + " vs " + y[i] + ", bound " + bound);
                    }
                }
            }
        }
    }

    /**
     * Loading as stored hands over the file's own blocks (Q and K rows reordered to the HF layout as whole rows), so
     * they decode to exactly what the dequantizing reader gives; asking for another type converts.
     */
    @Test
    void storedLoadingKeepsTheFilesBlocks(@TempDir Path dir) throws Exception {
        ModelWeights m = TinyModels.random(TinyModels.spec(false), 11);
        for (GgmlType t : List.of(GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0)) {
            Path f = dir.resolve(t + ".gguf");
            GgufModel.write(m, f, t, "t");
            ModelWeights deq = GgufModel.read(f);
            try (dev.crucible.formats.hf.WeightSource src = GgufModel.openStored(f)) {
                assertEquals(m.spec(), src.spec());
                assertEquals(256, src.eos());
                for (Map.Entry<String, float[]> e : deq.tensors().entrySet()) {
                    boolean matrix = m.spec().tensorShapes().get(e.getKey()).length == 2;
                    dev.crucible.tensor.DType want = matrix ? t.dtype() : dev.crucible.tensor.DType.F32;
                    assertEquals(want, src.storedType(e.getKey()), e.getKey());
                    float[] x = e.getValue(), y = new float[x.length];
                    java.lang.foreign.MemorySegment bytes = src.read(e.getKey(), want);
                    assertEquals(want.bytes(x.length), bytes.byteSize());
                    dev.crucible.tensor.Blocks.decode(want, bytes, 0, x.length, y, 0);
                    assertArrayEquals(x, y, t + " " + e.getKey());
                    float[] asF32 = new float[x.length];
                    java.lang.foreign.MemorySegment.copy(src.read(e.getKey(), dev.crucible.tensor.DType.F32),
                            java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, 0, asF32, 0, x.length);
                    assertArrayEquals(x, asF32, t + " " + e.getKey() + " as f32");
                }
            }
        }
    }

    @Test
    void ropePermutationInterleavesHalves() {
        int heads = 2, d = 4, cols = 1;
        float[] w = {0, 1, 2, 3, 10, 11, 12, 13}; // HF rows: head 0 = [x0 x1 | y0 y1], head 1 likewise
        float[] g = GgufModel.permuteRope(w, heads, cols, false);
        assertArrayEquals(new float[] {0, 2, 1, 3, 10, 12, 11, 13}, g); // pairs (x_i, y_i) become consecutive
        assertArrayEquals(w, GgufModel.permuteRope(g, heads, cols, true));
    }

    @Test
    void metadataHasWhatLlamaCppNeeds(@TempDir Path dir) throws Exception {
        Path f = dir.resolve("m.gguf");
        GgufModel.write(TinyModels.random(TinyModels.spec(true), 1), f, GgmlType.Q8_0, "tiny");
        try (GgufFile g = GgufFile.open(f)) {
            assertEquals(3, g.version());
            for (String k : List.of("llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                    "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count", "llama.vocab_size",
                    "general.file_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id")) {
                assertEquals(GgufValue.Type.UINT32, g.get(k).type(), k);
            }
            assertEquals(GgufValue.Type.FLOAT32, g.get("llama.attention.layer_norm_rms_epsilon").type());
            assertEquals(GgufValue.Type.INT32, g.get("tokenizer.ggml.token_type").elementType());
            assertEquals("gpt2", g.string("tokenizer.ggml.model"));
            assertEquals("llama-bpe", g.string("tokenizer.ggml.pre"));
            assertEquals(7L, g.get("general.file_type").value());
            assertTrue(!g.tensors().containsKey("output.weight"), "tied: no output tensor");
            assertEquals(GgmlType.F32, g.tensor("blk.0.attn_norm.weight").type());
            assertEquals(GgmlType.Q8_0, g.tensor("blk.0.attn_q.weight").type());
            assertArrayEquals(new long[] {64, 96}, g.tensor("blk.1.ffn_up.weight").ne()); // [out, in] -> ne = [in, out]
            long dataStart = Files.size(f) - g.tensors().values().stream().mapToLong(t -> (t.size() + 31) / 32 * 32).sum();
            assertEquals(0, dataStart % 32);
            g.tensors().values().forEach(t -> assertEquals(0, t.offset() % 32));
        }
    }

    // ------------------------------------------------------------ hardened reader

    private static Path tinyFile(Path dir, Consumer<GgufWriter> extra) throws Exception {
        GgufWriter w = new GgufWriter();
        w.put("general.architecture", GgufValue.string("llama"));
        extra.accept(w);
        w.tensor("a", new long[] {8}, GgmlType.F32, new byte[32]);
        w.tensor("bb", new long[] {8}, GgmlType.F32, new byte[32]);
        Path f = dir.resolve("t" + System.nanoTime() + ".gguf");
        w.write(f);
        return f;
    }

    /** Byte position of the u64 offset field of the tensor info named {@code name}. */
    private static int offsetField(byte[] file, String name) {
        byte[] key = name.getBytes(StandardCharsets.UTF_8);
        outer:
        for (int i = 8; i < file.length - key.length; i++) {
            if (ByteBuffer.wrap(file, i - 8, 8).order(ByteOrder.LITTLE_ENDIAN).getLong() != key.length) continue;
            for (int k = 0; k < key.length; k++) if (file[i + k] != key[k]) continue outer;
            int nd = ByteBuffer.wrap(file, i + key.length, 4).order(ByteOrder.LITTLE_ENDIAN).getInt();
            return i + key.length + 4 + 8 * nd + 4;
        }
        throw new AssertionError("no tensor " + name);
    }

    private static void fails(Path f, String expected) {
        FormatException e = assertThrows(FormatException.class, () -> GgufFile.open(f).close());
        assertTrue(e.getMessage().contains(f.toString()), e.getMessage());
        assertTrue(e.getMessage().contains(expected), "expected '" + expected + "' in: " + e.getMessage());
    }

    @Test
    void readerRejectsDamagedFiles(@TempDir Path dir) throws Exception {
        Path ok = tinyFile(dir, w -> { });
        GgufFile.open(ok).close();
        byte[] good = Files.readAllBytes(ok);

        Path f = dir.resolve("bad.gguf");
        Files.write(f, "GGML....".getBytes(StandardCharsets.US_ASCII));
        fails(f, "not a GGUF file");
        byte[] b = good.clone();
        b[4] = 4;
        Files.write(f, b);
        fails(f, "unsupported GGUF version 4");
        Files.write(f, java.util.Arrays.copyOf(good, 66));
        fails(f, "truncated");
        Files.write(f, java.util.Arrays.copyOf(good, good.length - 16));
        fails(f, "past the end");
        b = good.clone();
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(offsetField(b, "bb"), 0);
        Files.write(f, b);
        fails(f, "overlap");
        b = good.clone();
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(offsetField(b, "bb"), 1L << 40);
        Files.write(f, b);
        fails(f, "past the end");
        b = good.clone();
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(offsetField(b, "bb"), 36);
        Files.write(f, b);
        fails(f, "alignment");
        b = good.clone();
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putInt(offsetField(b, "bb") - 4, 12); // Q4_K
        Files.write(f, b);
        fails(f, "has tensor type Q4_K, which Crucible does not read");
        b = good.clone();
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putInt(offsetField(b, "bb") - 4, 14); // Q6_K
        Files.write(f, b);
        fails(f, "Q6_K");
        b = good.clone();
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putInt(offsetField(b, "bb") - 4, 999);
        Files.write(f, b);
        fails(f, "type 999");
        b = good.clone();
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(8, 1L << 50); // tensor count
        Files.write(f, b);
        fails(f, "tensor count");
        b = good.clone();
        int typeAt = 24 + 8 + "general.architecture".length();
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putInt(typeAt, 77);
        Files.write(f, b);
        fails(f, "unknown value type 77");
        b = good.clone();
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(typeAt + 4, 1L << 40); // string length
        Files.write(f, b);
        fails(f, "truncated");
        fails(tinyFile(dir, w -> w.put("general.architecture", GgufValue.u32(1)).put("general.alignment", GgufValue.u32(24))), "power of two");
    }

    @Test
    void modelReaderChecksShapesAndTokenizer(@TempDir Path dir) throws Exception {
        ModelWeights m = TinyModels.random(TinyModels.spec(false), 3);
        Path f = dir.resolve("m.gguf");
        GgufModel.write(m, f, GgmlType.F32, "t");
        byte[] good = Files.readAllBytes(f);

        Path tiny = tinyFile(dir, w -> w.put("general.architecture", GgufValue.string("gpt2")));
        FormatException e = assertThrows(FormatException.class, () -> GgufModel.read(tiny));
        assertTrue(e.getMessage().contains("architecture 'gpt2' is not supported"), e.getMessage());

        // change llama.embedding_length's value from 64 to 32
        byte[] b = good.clone();
        int at = indexOf(b, "llama.embedding_length") + "llama.embedding_length".length() + 4;
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putInt(at, 32);
        Path bad = dir.resolve("bad.gguf");
        Files.write(bad, b);
        e = assertThrows(FormatException.class, () -> GgufModel.read(bad));
        assertTrue(e.getMessage().contains("token_embd.weight has dims [64, 257], the metadata implies [32, 257]"), e.getMessage());

        // feed_forward_length 96 -> 64: the ffn tensors no longer match
        b = good.clone();
        at = indexOf(b, "llama.feed_forward_length") + "llama.feed_forward_length".length() + 4;
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putInt(at, 64);
        Files.write(bad, b);
        e = assertThrows(FormatException.class, () -> GgufModel.read(bad));
        assertTrue(e.getMessage().contains("ffn_gate.weight' has dims [64, 96], the metadata implies [64, 64]"), e.getMessage());

        // duplicate token strings: make token 'b' (id 98) read 'a'
        b = good.clone();
        at = indexOf(b, "tokenizer.ggml.tokens");
        int tokB = indexOfFrom(b, new byte[] {1, 0, 0, 0, 0, 0, 0, 0, 'b'}, at);
        b[tokB + 8] = 'a';
        Files.write(bad, b);
        e = assertThrows(FormatException.class, () -> GgufModel.read(bad));
        assertTrue(e.getMessage().contains("appears twice"), e.getMessage());

        // vocab_size 257 -> 256: the token list no longer matches the vocabulary
        b = good.clone();
        at = indexOf(b, "llama.vocab_size") + "llama.vocab_size".length() + 4;
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putInt(at, 256);
        Files.write(bad, b);
        e = assertThrows(FormatException.class, () -> GgufModel.read(bad));
        assertTrue(e.getMessage().contains(bad.toString()) && e.getMessage().contains("257"), e.getMessage());
    }

    /**
     * A tensor the model would not use (Llama 3.1's rope_freqs, or anything else) makes the file mean something
     * else: refused with a message that names it, as llama.cpp refuses unexpected tensors.
     */
    @Test
    void tensorsTheModelWouldIgnoreAreRefused(@TempDir Path dir) throws Exception {
        ModelWeights m = TinyModels.random(TinyModels.spec(false), 3);
        Path good = dir.resolve("m.gguf");
        GgufModel.write(m, good, GgmlType.F32, "t");
        for (String extra : new String[] {"rope_freqs.weight", "blk.0.attn_q.bias"}) {
            GgufWriter w = new GgufWriter();
            try (GgufFile g = GgufFile.open(good)) {
                g.metadata().forEach(w::put);
                for (GgufFile.TensorInfo t : g.tensors().values()) {
                    w.tensor(t.name(), t.ne(), t.type(), g.bytes(t.name()).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
                }
            }
            w.tensor(extra, new long[] {32}, GgmlType.F32, new byte[128]);
            Path f = dir.resolve("extra.gguf");
            w.write(f);
            FormatException e = assertThrows(FormatException.class, () -> GgufModel.read(f));
            assertTrue(e.getMessage().contains(f.toString()) && e.getMessage().contains("'" + extra + "'"), e.getMessage());
            assertThrows(FormatException.class, () -> GgufModel.openStored(f).close());
        }
        assertEquals(m.spec(), GgufModel.read(good).spec());                       // the file without them loads
    }

    static int indexOf(byte[] b, String s) {
        return indexOfFrom(b, s.getBytes(StandardCharsets.UTF_8), 0);
    }

    static int indexOfFrom(byte[] b, byte[] k, int from) {
        outer:
        for (int i = from; i <= b.length - k.length; i++) {
            for (int j = 0; j < k.length; j++) if (b[i + j] != k[j]) continue outer;
            return i;
        }
        throw new AssertionError("not found");
    }

    @Test
    void specRejectsImpossibleShapes() {
        assertThrows(IllegalArgumentException.class, () -> new LlamaSpec(10, 60, 1, 8, 8, 10, 8, 1e4f, 1e-5f, false));
    }
}
