package dev.crucible.cpu.kernels;

import dev.crucible.tensor.Blocks;
import dev.crucible.tensor.DType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.lang.foreign.MemorySegment;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The transposing B pack (16 weight rows at a time through in-register transposes) must put every element exactly
 * where the element-by-element scatter puts it: the GEMM's results depend on nothing else.
 */
class PackBTest {
    @ParameterizedTest(name = "{0} n={1} k={2} p0={3} kc={4}")
    @CsvSource({
            "F32, 71, 333, 0, 333",   // one K block with a tail of 13, N with a partial last panel and half panel
            "F32, 64, 600, 256, 256", // a later K block of whole vectors
            "F32, 16, 48, 0, 48",     // a single 16-row group
            "F16, 50, 320, 0, 320",
            "BF16, 33, 272, 0, 272",
            "Q8_0, 71, 352, 256, 96",
            "Q4_0, 40, 640, 256, 256",
    })
    void transposedPackMatchesTheScatter(DType type, int n, int k, int p0, int kc) {
        Random r = new Random(n * 31L + k);
        float[] w = new float[n * k];
        for (int i = 0; i < w.length; i++) w[i] = (float) r.nextGaussian();
        MemorySegment b = type == DType.F32 ? MemorySegment.ofArray(w) : MemorySegment.ofArray(Blocks.encode(type, w, 0, w.length));
        int nPanels = (n + MatMul.NR - 1) / MatMul.NR, size = nPanels * MatMul.NR * kc;
        float[] want = new float[size], got = new float[size];
        MatMul.scatterBT(b, type, n, k, p0, kc, 0, nPanels, want, 0);
        MatMul.packBT(b, type, n, k, p0, kc, 0, nPanels, got, 0);
        for (int i = 0; i < size; i++) {
            int column = i / (MatMul.NR * kc) * MatMul.NR + i % MatMul.NR;
            if (column >= n) continue; // padding: may hold anything (it only feeds C columns that are never stored)
            assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]), "element " + i);
        }
    }
}
