package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The in-register half-to-float widening of the F16 row dots is exact for all 65,536 halves. */
class HalfWideningTest {
    @Test
    void everyHalfWidensExactly() {
        Assumptions.assumeTrue(WeightRows.WIDE, "16-float vectors are not native here; the scalar path is used");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(2L * 65536, 64);
            for (int h = 0; h < 65536; h++) s.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, h, (short) h);
            float[] lanes = new float[16];
            for (int h0 = 0; h0 < 65536; h0 += 16) {
                FloatVector v = WeightRows.f16(s, 2L * h0);
                v.intoArray(lanes, 0);
                for (int i = 0; i < 16; i++) {
                    float want = Float.float16ToFloat((short) (h0 + i));
                    if (Float.isNaN(want)) {
                        assertTrue(Float.isNaN(lanes[i]), "half 0x" + Integer.toHexString(h0 + i));
                    } else {
                        assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(lanes[i]),
                                "half 0x" + Integer.toHexString(h0 + i) + ": " + lanes[i] + " vs " + want);
                    }
                }
            }
        }
    }
}
