package dev.crucible.cpu.kernels;

import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class VMathTest {
    @Test
    void expIsAccurateAndScalarMatchesVector() {
        Random r = new Random(1);
        float[] x = new float[1 << 16], y = new float[x.length];
        for (int i = 0; i < x.length; i++) x[i] = (float) (r.nextDouble() * 180 - 90);
        x[0] = Float.NEGATIVE_INFINITY;
        x[1] = Float.POSITIVE_INFINITY;
        x[2] = 0f;
        x[3] = -87f;
        x[4] = 88.5f;
        float total = VMath.exp(x, 0, y, 0, x.length, 1f, 0f);
        assertTrue(total > 0);
        double maxUlp = 0;
        for (int i = 0; i < x.length; i++) {
            assertEquals(Float.floatToRawIntBits(VMath.exp(x[i])), Float.floatToRawIntBits(y[i]), "scalar vs vector at " + x[i]);
            float want = (float) Math.exp(x[i]);
            if (want < Float.MIN_NORMAL) {
                assertTrue(y[i] == 0f || Math.abs(y[i] - want) < Float.MIN_NORMAL, "underflow at " + x[i]);
                continue;
            }
            if (Float.isInfinite(want)) {
                assertEquals(want, y[i]);
                continue;
            }
            maxUlp = Math.max(maxUlp, Math.abs(y[i] - Math.exp(x[i])) / Math.ulp(want));
        }
        assertTrue(maxUlp < 2, "max error " + maxUlp + " ulp");
    }

    @Test
    void sumIsTheLaneSum() {
        float[] x = new float[VMath.VL];
        double want = 0;
        for (int i = 0; i < x.length; i++) {
            x[i] = i * 0.5f + 1;
            want += x[i];
        }
        assertEquals(want, VMath.sum(FloatVector.fromArray(VMath.S, x, 0)), 0);
    }
}
