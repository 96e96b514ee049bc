package dev.crucible.cpu.kernels;

import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Q4_0 weights against activations quantized to 8 bits, in 16-bit integer lanes: the decode path (a few activation
 * rows) of a matmul on stored Q4_0 weights.
 *
 * <p>Why: decoding each nibble to a float and multiplying it in f32 costs about 13 vector instructions per 32
 * weights (in C2's code), which held one-token Q4_0 decode at half llama.cpp's speed (llama.cpp multiplies int8 with
 * VNNI, which the Vector API cannot emit). Here a block's 32 products q·x are 16-bit integer multiplies and adds,
 * about eight instructions per 64 weights: about 1.6x the f32 path on one core (bench/NOTES.md, sixth session).
 *
 * <p>How: {@link #pack} rearranges a weight matrix once into groups of 32 blocks per row, byte j of block b at
 * [j][b], so a 512-bit vector of 32 shorts holds one element position of 32 blocks and each lane sums one block's
 * products: no lane sums per block. The block scales follow each group as f32, decoded once at packing (640 bytes
 * per 1024 weights, 11% more than the GGUF blocks). {@link #quantize} turns an activation row into 8-bit integers
 * per 32-element block (scale max|x|/127, round to nearest: llama.cpp's Q8_0 scheme), stored in the same
 * [element][block] order. A block's sum Σ (q − 8)·x is at most 32 · 8 · 127 = 32,512 in magnitude: it fits a
 * short, so it is computed exactly (it starts at −8·Σx and adds q·x with 16-bit wrap-around, which cancels out
 * because the true sum fits). Each row then sums d_w·d_x·(block sum) in f32 in a fixed order.
 *
 * <p>Numerics: the only error beyond f32 rounding is the 8-bit rounding of the activations (NMSE ~2e-5 against
 * the f32 product on Gaussian data; the conformance suite allows {@code Tolerance.QUANTIZED_ACTIVATIONS}). The
 * integer part is exact, so a row's result does not depend on how many rows a call holds or on the thread count:
 * batch invariance holds by construction. Prefill (32 rows and more) keeps the f32 GEMM.
 */
public final class Q4Int {
    private Q4Int() {}

    static final VectorSpecies<Float> FS = FloatVector.SPECIES_512;
    static final VectorSpecies<Short> SS = ShortVector.SPECIES_512;
    static final VectorSpecies<Byte> B32 = ByteVector.SPECIES_256;
    static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;

    /** Blocks per group: one per short lane of a 512-bit vector. */
    static final int G = 32;
    /** Where a group's scales start: after 16 nibble bytes per block in [j][b] order. */
    static final long SCALES = 16L * G;
    /** Bytes of a group: the nibbles, then G f32 scales (decoded from f16 once, at packing). */
    static final long GROUP_BYTES = SCALES + 4L * G;

    /** The setting: the system property {@code crucible.q4}, else the environment variable {@code CRUCIBLE_Q4}. */
    public static final String PROPERTY = "crucible.q4", ENV = "CRUCIBLE_Q4";

    /** Whether this machine can run the integer path: 32 short lanes (AVX-512BW) and 16 float lanes, native. */
    public static final boolean HARDWARE = ShortVector.SPECIES_PREFERRED.length() >= 32
            && FloatVector.SPECIES_PREFERRED.length() >= 16;

    /**
     * Whether Q4_0 decode matmuls take this kernel: {@code int8} (the default) where the {@link #HARDWARE} allows,
     * {@code f32} never (the f32 path: activations exact, and faster for steps of many sequences; see
     * docs/serving.md). Anything else is an error naming the setting.
     */
    public static boolean enabled() {
        return enabledSetting() && HARDWARE;
    }

    /** What the setting asks for, whatever the hardware: true for {@code int8} (the default), false for {@code f32}. */
    public static boolean enabledSetting() {
        String v = System.getProperty(PROPERTY, System.getenv(ENV));
        if (v == null || v.isBlank() || v.equalsIgnoreCase("int8")) return true;
        if (v.equalsIgnoreCase("f32")) return false;
        throw new IllegalArgumentException(ENV + " (or -D" + PROPERTY + ") must be int8 or f32, not '" + v + "'");
    }

    /** A Q4_0 matrix (n rows of k) rearranged for this kernel; its memory is freed by the GC with the object. */
    public record Packed(MemorySegment seg, int n, int k, int groups) {
        long rowBytes() { return groups * GROUP_BYTES; }

        /** Rows r0 … r0+count-1 as a packed matrix of their own (the same memory). */
        public Packed rows(int r0, int count) {
            if (r0 < 0 || count <= 0 || r0 + count > n) throw new IllegalArgumentException("rows " + r0 + "+" + count + " of " + n);
            return new Packed(seg.asSlice(r0 * rowBytes(), count * rowBytes()), count, k, groups);
        }
    }

    /** Rearranges the n Q4_0 rows of k elements stored at {@code b} (GGUF blocks), rows in parallel. */
    public static Packed pack(Parallel par, MemorySegment b, int n, int k) {
        if (k % 32 != 0) throw new IllegalArgumentException("Q4_0 rows hold whole blocks of 32, not " + k);
        int nb = k / 32, groups = (nb + G - 1) / G;
        long rowBytes = groups * GROUP_BYTES;
        MemorySegment t = dev.crucible.cpu.ffi.HugePages.allocate(rowBytes * n, Arena.ofAuto());
        int rowsPerTask = 64;
        ValueLayout.OfFloat f32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(LE);
        par.forEach(Parallel.chunks(n, rowsPerTask), task -> {
            // A group at a time through arrays: its GGUF blocks in, nibble bytes transposed, f16 scales widened.
            byte[] src = new byte[18 * G], nibbles = new byte[16 * G];
            float[] scales = new float[G];
            for (int r = task * rowsPerTask, end = Math.min(n, r + rowsPerTask); r < end; r++) {
                for (int g = 0; g < groups; g++) {
                    int blocks = Math.min(G, nb - g * G);
                    MemorySegment.copy(b, ValueLayout.JAVA_BYTE, ((long) r * nb + (long) g * G) * 18, src, 0, blocks * 18);
                    if (blocks < G) { // padding blocks: q = 0 and d = 0, so they add nothing
                        java.util.Arrays.fill(nibbles, (byte) 0);
                        java.util.Arrays.fill(scales, 0f);
                    }
                    for (int lane = 0; lane < blocks; lane++) {
                        int o = lane * 18;
                        scales[lane] = Float.float16ToFloat((short) ((src[o] & 0xff) | (src[o + 1] & 0xff) << 8));
                        for (int j = 0; j < 16; j++) nibbles[j * G + lane] = src[o + 2 + j];
                    }
                    long at = r * rowBytes + g * GROUP_BYTES;
                    MemorySegment.copy(nibbles, 0, t, ValueLayout.JAVA_BYTE, at, nibbles.length);
                    MemorySegment.copy(scales, 0, t, f32, at + SCALES, G);
                }
            }
        });
        return new Packed(t, n, k, groups);
    }

    /** An activation row quantized for {@link #dot}: values [g][element][block], scales and −8·Σq per block. */
    record Row(short[] q, float[] d, short[] corr) {
        static Row forGroups(int groups) {
            return new Row(new short[groups * G * 32], new float[groups * G], new short[groups * G]);
        }
    }

    /**
     * x[xo … xo+k) to 8-bit integers per 32-element block: d = max|x| / 127, q = x · (1/d) rounded to the nearest
     * integer, ties to even (llama.cpp's Q8_0 rounds ties away from zero; the two differ only on exact halves).
     * Blocks past k (to a whole group) are zero. Vectorised: per block two loads, |x| max, one multiply, and the
     * rounding by adding and subtracting 1.5·2^23 (exact for |v| ≤ 127); the stores go to [element][block] order.
     */
    static void quantize(float[] x, int xo, int k, Row out) {
        int nb = k / 32;
        java.util.Arrays.fill(out.q, (short) 0);
        java.util.Arrays.fill(out.d, 0f);
        java.util.Arrays.fill(out.corr, (short) 0);
        int[] q = new int[32];
        for (int blk = 0; blk < nb; blk++) {
            int base = xo + blk * 32;
            FloatVector v0 = FloatVector.fromArray(FS, x, base), v1 = FloatVector.fromArray(FS, x, base + 16);
            float amax = v0.abs().max(v1.abs()).reduceLanes(VectorOperators.MAX); // max: the same in any order
            float d = amax / 127f, id = d == 0f ? 0f : 1f / d;
            IntVector q0 = (IntVector) v0.mul(id).add(ROUNDER).sub(ROUNDER).convert(VectorOperators.F2I, 0);
            IntVector q1 = (IntVector) v1.mul(id).add(ROUNDER).sub(ROUNDER).convert(VectorOperators.F2I, 0);
            q0.intoArray(q, 0);
            q1.intoArray(q, 16);
            int g = blk / G, lane = blk % G, at = g * 32 * G + lane;
            for (int i = 0; i < 32; i++) out.q[at + i * G] = (short) q[i];
            out.d[blk] = d;
            out.corr[blk] = (short) (-8 * q0.add(q1).reduceLanes(VectorOperators.ADD));
        }
    }

    /** 1.5·2^23: v + this − this is v rounded to an integer (ties to even) for |v| < 2^22. */
    private static final float ROUNDER = 12582912f;

    /**
     * Σ over the row of d_w·d_x·(Σ (q − 8)·x) per block: one f32 vector accumulator taking, per group, the first 16
     * blocks' terms and then the last 16, then its lanes in order ({@link #laneSum}). Written out in one method (as
     * {@link #dot2}), and the lanes summed through an array: a vector handed to a helper that C2 leaves out of line
     * (VMath.sum here) is boxed on the heap, which made this kernel slower than the f32 path.
     */
    static float dot(Row x, Packed w, int row) {
        return dot(x, w, row, new float[16]);
    }

    static float dot(Row x, Packed w, int row, float[] lanes) {
        MemorySegment s = w.seg();
        short[] xq = x.q(), corr = x.corr();
        float[] dx = x.d();
        long at = row * w.rowBytes();
        FloatVector acc = FloatVector.zero(FS);
        for (int g = 0; g < w.groups(); g++, at += GROUP_BYTES) {
            ShortVector a = ShortVector.fromArray(SS, corr, g * G);
            for (int j = 0, xo = g * 32 * G; j < 16; j++) {
                ShortVector q = (ShortVector) ByteVector.fromMemorySegment(B32, s, at + (long) j * G, LE)
                        .convertShape(VectorOperators.ZERO_EXTEND_B2S, SS, 0);
                a = a.add(q.and((short) 0x0f).mul(ShortVector.fromArray(SS, xq, xo + j * G)))
                        .add(q.lanewise(VectorOperators.LSHR, 4).mul(ShortVector.fromArray(SS, xq, xo + (j + 16) * G)));
            }
            FloatVector d0 = FloatVector.fromMemorySegment(FS, s, at + SCALES, LE).mul(FloatVector.fromArray(FS, dx, g * G));
            FloatVector d1 = FloatVector.fromMemorySegment(FS, s, at + SCALES + 64, LE).mul(FloatVector.fromArray(FS, dx, g * G + 16));
            acc = ((FloatVector) a.convertShape(VectorOperators.S2F, FS, 0)).fma(d0, acc);
            acc = ((FloatVector) a.convertShape(VectorOperators.S2F, FS, 1)).fma(d1, acc);
        }
        acc.intoArray(lanes, 0);
        return laneSum(lanes, 0);
    }

    /**
     * {@link #dot} of four activation rows with one weight row: the weight bytes are loaded and split into nibbles
     * once for the four. Block sums are integers (exact in any order); each group's sums then go through an array
     * to {@link #dot}'s f32 steps, on accumulators kept in an array: four rows' f32 vectors live across the whole
     * loop were more than C2 would compile without boxing them (5x slower). So every result has {@link #dot}'s
     * bits. out[0..3]; acc holds 64 floats of scratch, sums 128 shorts.
     */
    static void dot4(Row x0, Row x1, Row x2, Row x3, Packed w, int row, float[] out, float[] acc, short[] sums) {
        MemorySegment s = w.seg();
        long at = row * w.rowBytes();
        java.util.Arrays.fill(acc, 0, 64, 0f);
        short[] q0 = x0.q(), q1 = x1.q(), q2 = x2.q(), q3 = x3.q();
        for (int g = 0; g < w.groups(); g++, at += GROUP_BYTES) {
            ShortVector a0 = ShortVector.fromArray(SS, x0.corr(), g * G), a1 = ShortVector.fromArray(SS, x1.corr(), g * G);
            ShortVector a2 = ShortVector.fromArray(SS, x2.corr(), g * G), a3 = ShortVector.fromArray(SS, x3.corr(), g * G);
            for (int j = 0, xo = g * 32 * G; j < 16; j++) {
                ShortVector q = (ShortVector) ByteVector.fromMemorySegment(B32, s, at + (long) j * G, LE)
                        .convertShape(VectorOperators.ZERO_EXTEND_B2S, SS, 0);
                ShortVector lo = q.and((short) 0x0f), hi = q.lanewise(VectorOperators.LSHR, 4);
                int l = xo + j * G, h = xo + (j + 16) * G;
                a0 = a0.add(lo.mul(ShortVector.fromArray(SS, q0, l))).add(hi.mul(ShortVector.fromArray(SS, q0, h)));
                a1 = a1.add(lo.mul(ShortVector.fromArray(SS, q1, l))).add(hi.mul(ShortVector.fromArray(SS, q1, h)));
                a2 = a2.add(lo.mul(ShortVector.fromArray(SS, q2, l))).add(hi.mul(ShortVector.fromArray(SS, q2, h)));
                a3 = a3.add(lo.mul(ShortVector.fromArray(SS, q3, l))).add(hi.mul(ShortVector.fromArray(SS, q3, h)));
            }
            a0.intoArray(sums, 0);
            a1.intoArray(sums, G);
            a2.intoArray(sums, 2 * G);
            a3.intoArray(sums, 3 * G);
            FloatVector w0 = FloatVector.fromMemorySegment(FS, s, at + SCALES, LE);
            FloatVector w1 = FloatVector.fromMemorySegment(FS, s, at + SCALES + 64, LE);
            for (int r = 0; r < 4; r++) {
                float[] dx = r == 0 ? x0.d() : r == 1 ? x1.d() : r == 2 ? x2.d() : x3.d();
                ShortVector a = ShortVector.fromArray(SS, sums, r * G);
                FloatVector c = FloatVector.fromArray(FS, acc, 16 * r);
                c = ((FloatVector) a.convertShape(VectorOperators.S2F, FS, 0)).fma(w0.mul(FloatVector.fromArray(FS, dx, g * G)), c);
                c = ((FloatVector) a.convertShape(VectorOperators.S2F, FS, 1)).fma(w1.mul(FloatVector.fromArray(FS, dx, g * G + 16)), c);
                c.intoArray(acc, 16 * r);
            }
        }
        for (int r = 0; r < 4; r++) out[r] = laneSum(acc, 16 * r);
    }

    /** lanes[o] + lanes[o+1] + … + lanes[o+15], left to right. */
    static float laneSum(float[] lanes, int o) {
        float s = lanes[o];
        for (int i = 1; i < 16; i++) s += lanes[o + i];
        return s;
    }

    /** {@link #dot} for two rows at once (two independent chains), each in exactly its order. */
    static void dot2(Row x, Packed w, int row0, int row1, float[] out, float[] lanes) {
        MemorySegment s = w.seg();
        short[] xq = x.q(), corr = x.corr();
        float[] dx = x.d();
        long at0 = row0 * w.rowBytes(), at1 = row1 * w.rowBytes();
        FloatVector acc0 = FloatVector.zero(FS), acc1 = acc0;
        for (int g = 0; g < w.groups(); g++, at0 += GROUP_BYTES, at1 += GROUP_BYTES) {
            ShortVector a0 = ShortVector.fromArray(SS, corr, g * G), a1 = a0;
            for (int j = 0, xo = g * 32 * G; j < 16; j++) {
                ShortVector xl = ShortVector.fromArray(SS, xq, xo + j * G), xh = ShortVector.fromArray(SS, xq, xo + (j + 16) * G);
                ShortVector q0 = (ShortVector) ByteVector.fromMemorySegment(B32, s, at0 + (long) j * G, LE)
                        .convertShape(VectorOperators.ZERO_EXTEND_B2S, SS, 0);
                ShortVector q1 = (ShortVector) ByteVector.fromMemorySegment(B32, s, at1 + (long) j * G, LE)
                        .convertShape(VectorOperators.ZERO_EXTEND_B2S, SS, 0);
                a0 = a0.add(q0.and((short) 0x0f).mul(xl)).add(q0.lanewise(VectorOperators.LSHR, 4).mul(xh));
                a1 = a1.add(q1.and((short) 0x0f).mul(xl)).add(q1.lanewise(VectorOperators.LSHR, 4).mul(xh));
            }
            FloatVector dx0 = FloatVector.fromArray(FS, dx, g * G), dx1 = FloatVector.fromArray(FS, dx, g * G + 16);
            FloatVector d00 = FloatVector.fromMemorySegment(FS, s, at0 + SCALES, LE).mul(dx0);
            FloatVector d01 = FloatVector.fromMemorySegment(FS, s, at0 + SCALES + 64, LE).mul(dx1);
            FloatVector d10 = FloatVector.fromMemorySegment(FS, s, at1 + SCALES, LE).mul(dx0);
            FloatVector d11 = FloatVector.fromMemorySegment(FS, s, at1 + SCALES + 64, LE).mul(dx1);
            acc0 = ((FloatVector) a0.convertShape(VectorOperators.S2F, FS, 0)).fma(d00, acc0);
            acc1 = ((FloatVector) a1.convertShape(VectorOperators.S2F, FS, 0)).fma(d10, acc1);
            acc0 = ((FloatVector) a0.convertShape(VectorOperators.S2F, FS, 1)).fma(d01, acc0);
            acc1 = ((FloatVector) a1.convertShape(VectorOperators.S2F, FS, 1)).fma(d11, acc1);
        }
        acc0.intoArray(lanes, 0);
        acc1.intoArray(lanes, 16);
        out[0] = laneSum(lanes, 0);
        out[1] = laneSum(lanes, 16);
    }

    /**
     * c (m,n) (+)= a (m,k) · wᵀ for m small (decode steps): every activation row quantized once, then column chunks
     * in parallel; one row against two weight rows at a time (one from each half of a chunk: two chains, two
     * streams); several rows four at a time against each weight row ({@link #dot4}), the last one to three by
     * {@link #dot}.
     */
    public static void matmul(Parallel par, MemorySegment a, Packed w, MemorySegment c, int m, int n, int k,
                              boolean accumulate) {
        if (w.n() != n || w.k() != k) throw new IllegalArgumentException("packed " + w.n() + "x" + w.k() + " used as " + n + "x" + k);
        Row[] rows = new Row[m];
        float[] buf = new float[k];
        for (int i = 0; i < m; i++) {
            MemorySegment.copy(a, ValueLayout.JAVA_FLOAT_UNALIGNED, (long) i * k * 4, buf, 0, k);
            rows[i] = Row.forGroups(w.groups());
            quantize(buf, 0, k, rows[i]);
        }
        int cols = n >= 4096 ? 256 : 64;
        par.forEach(Parallel.chunks(n, cols), t -> {
            int j0 = t * cols, j1 = Math.min(n, j0 + cols);
            float[] lanes = new float[32];
            if (m == 1) {
                float[] two = new float[2];
                int half = (j1 - j0) / 2;
                for (int i = 0; i < half; i++) {
                    int ja = j0 + i, jb = j0 + half + i;
                    dot2(rows[0], w, ja, jb, two, lanes);
                    store(c, ja, two[0], accumulate);
                    store(c, jb, two[1], accumulate);
                }
                for (int j = j0 + 2 * half; j < j1; j++) store(c, j, dot(rows[0], w, j, lanes), accumulate);
            } else {
                float[] four = new float[4], acc = new float[64];
                short[] sums = new short[4 * G];
                for (int j = j0; j < j1; j++) {
                    int i = 0;
                    for (; i + 4 <= m; i += 4) {
                        dot4(rows[i], rows[i + 1], rows[i + 2], rows[i + 3], w, j, four, acc, sums);
                        for (int r = 0; r < 4; r++) store(c, (long) (i + r) * n + j, four[r], accumulate);
                    }
                    for (; i < m; i++) store(c, (long) i * n + j, dot(rows[i], w, j, lanes), accumulate);
                }
            }
        });
    }

    private static void store(MemorySegment c, long i, float v, boolean accumulate) {
        c.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i, accumulate ? c.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i) + v : v);
    }
}
