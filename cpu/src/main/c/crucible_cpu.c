/*
 * Crucible's native CPU kernels: quantized decode matmuls on 8-bit activations with AVX-512 VNNI.
 *
 * Why native: the Vector API cannot emit VPDPBUSD (64 byte products summed into 16 int32 lanes in one
 * instruction), which is how llama.cpp multiplies Q8_0 and Q4_0 weights. The Java kernels stay the reference and
 * the fallback (dev.crucible.cpu.kernels.Q4Int, MatMul); this file is loaded through FFM by
 * dev.crucible.cpu.ffi.CpuNative when it was built and the CPU has the instructions.
 *
 * The contract every kernel here keeps (and CpuNativeTest checks bit for bit against a plain Java model):
 *   - activations: each 32-element block b of a row is quantized to q = round_half_even(x * (1/d)), d = max|x|/127
 *     (d = 0 gives 0/0 → 0), the same f32 steps as Q4Int.quantize;
 *   - a block's integer sum (Q4_0: Σ (w − 8)·q, Q8_0: Σ w·q) is exact in int32;
 *   - a row's result: 16 f32 lanes, lane l takes blocks l, l+16, l+32, … in order, each as
 *     acc = fma((float) isum_b, d_w(b) * d_x(b), acc); blocks past the row up to a whole number of 32-block groups
 *     add fma(0, 0, acc); then the lanes are summed left to right. That is Q4Int.dot's order, so for Q4_0 this file
 *     and the Java integer kernel give the same bits, and every row's bits are the same whatever rows or sequences
 *     share the call (the serving guarantee: same seed, same text under any load).
 *
 * Built by cpu/src/main/c/build.sh with -ffp-contract=off, so the compiler fuses no multiply-add the contract
 * does not name. Functions carry their own target attributes: the library loads on any x86-64 CPU, and
 * crucible_cpu_supported() says whether the kernels may be called.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define KERNEL __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))
#define INLINE static inline __attribute__((always_inline))

/* The version of this interface; CpuNative refuses a library with another one. */
int32_t crucible_cpu_abi(void) { return 1; }

/* 1 when this CPU has every instruction the kernels use. */
int32_t crucible_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c")
        && __builtin_cpu_supports("fma");
}

/* 1.5·2^23: v + R − R rounds v to an integer, ties to even, for |v| < 2^22 (Q4Int.ROUNDER). */
#define ROUNDER 12582912.0f

/*
 * Quantizes x[0..k) (k a multiple of 32) into nbPad ≥ k/32 blocks: q (nbPad·32 int8), d (nbPad f32 scales),
 * s (nbPad int32: Σ q per block). Blocks past k/32 are zero. Layout of q:
 *   q4layout = 0: natural order, block b at q[32b … 32b+31];
 *   q4layout = 1: per 4 blocks u (blocks 4u…4u+3) 128 bytes: elements 0-15 of the four blocks, then elements 16-31
 *                 of the four, matching how a Q4_0 block stores its low and high nibbles.
 */
KERNEL void crucible_quantize(const float *x, int32_t k, int32_t nbPad, int32_t q4layout, int8_t *q, float *d,
                              int32_t *s) {
    int32_t nb = k / 32;
    const __m512 rounder = _mm512_set1_ps(ROUNDER);
    for (int32_t b = 0; b < nbPad; b++) {
        int8_t *lo = q4layout ? q + (b / 4) * 128 + (b % 4) * 16 : q + 32 * b;
        int8_t *hi = q4layout ? lo + 64 : lo + 16;
        if (b >= nb) {
            memset(lo, 0, 16);
            memset(hi, 0, 16);
            d[b] = 0.0f;
            s[b] = 0;
            continue;
        }
        __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float db = amax / 127.0f, id = db == 0.0f ? 0.0f : 1.0f / db;
        __m512 vid = _mm512_set1_ps(id);
        __m512 r0 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(v0, vid), rounder), rounder);
        __m512 r1 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(v1, vid), rounder), rounder);
        __m512i i0 = _mm512_cvtps_epi32(r0), i1 = _mm512_cvtps_epi32(r1); /* exact: already integers */
        _mm_storeu_si128((__m128i *) lo, _mm512_cvtepi32_epi8(i0));
        _mm_storeu_si128((__m128i *) hi, _mm512_cvtepi32_epi8(i1));
        d[b] = db;
        s[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    }
}

/*
 * Four vectors of 16 int32 partial sums, each 128-bit chunk c of V_i holding the partials of one block, to one
 * vector whose lane 4c + i is the sum of V_i's chunk c.
 */
KERNEL INLINE __m512i hadd4(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
    __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(v0, v1), _mm512_unpackhi_epi32(v0, v1));
    __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(v2, v3), _mm512_unpackhi_epi32(v2, v3));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
}

/* Lanes summed left to right (the contract's last step). */
KERNEL INLINE float lane_sum(__m512 acc) {
    float l[16];
    _mm512_storeu_ps(l, acc);
    float s = l[0];
    for (int i = 1; i < 16; i++) s += l[i];
    return s;
}

INLINE void store(float *c, float v, int32_t accumulate) { *c = accumulate ? *c + v : v; }

/* 16 f16 block scales at base, base + stride, …: the low half of a 32-bit gather. */
KERNEL INLINE __m512 scales16(const uint8_t *base, __m512i offsets) {
    __m512i g = _mm512_i32gather_epi32(offsets, (const void *) base, 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
}

/* The same for the blocks whose bit is set in {@code mask}; the others' scales are 0. */
KERNEL INLINE __m512 scales16m(const uint8_t *base, __m512i offsets, __mmask16 mask) {
    __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, offsets, (const void *) base, 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
}

/*
 * One weight row's 16 blocks (a "chunk"), or its first 4·units (the row's end), against T activation rows, Q4_0. wb: the first of the 16 blocks (18 bytes
 * each: f16 scale, 16 bytes of nibbles; byte j holds element j low, element j+16 high). xq/xd/xs: per activation
 * row, this chunk's quantized values (q4 layout), scales and sums.
 */
KERNEL INLINE void q4_chunk(const uint8_t *wb, int units, int T, const int8_t *const *xq,
                            const float *const *xd, const int32_t *const *xs, __m512 *acc) {
    const __m512i low = _mm512_set1_epi8(0x0f);
    const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i offsets = _mm512_setr_epi32(0, 18, 36, 54, 72, 90, 108, 126, 144, 162, 180, 198, 216, 234, 252, 270);
    __m512i v[4][4];
    for (int u = 0; u < 4; u++) {
        if (u >= units) { /* past the row's last block: nothing to add */
            for (int t = 0; t < T; t++) v[t][u] = _mm512_setzero_si512();
            continue;
        }
        const uint8_t *p = wb + u * 4 * 18 + 2;
        __m512i raw = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *) p));
        raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *) (p + 18)), 1);
        raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *) (p + 36)), 2);
        raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *) (p + 54)), 3);
        __m512i lo = _mm512_and_si512(raw, low), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
        for (int t = 0; t < T; t++) {
            __m512i xl = _mm512_loadu_si512((const void *) (xq[t] + u * 128));
            __m512i xh = _mm512_loadu_si512((const void *) (xq[t] + u * 128 + 64));
            v[t][u] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xl), hi, xh);
        }
    }
    __m512 dw = units == 4 ? scales16(wb, offsets)
                           : scales16m(wb, offsets, (__mmask16) ((1u << (4 * units)) - 1));
    for (int t = 0; t < T; t++) {
        /* lane 4c + u holds block 4u + c; back to block order, minus 8·Σq (the nibbles' offset) */
        __m512i sum = _mm512_permutexvar_epi32(perm, hadd4(v[t][0], v[t][1], v[t][2], v[t][3]));
        sum = _mm512_sub_epi32(sum, _mm512_slli_epi32(_mm512_loadu_si512((const void *) xs[t]), 3));
        __m512 dd = _mm512_mul_ps(dw, _mm512_loadu_ps(xd[t]));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), dd, acc[t]);
    }
}

/* The same for Q8_0: 34-byte blocks (f16 scale, 32 int8), Σ w·q via |w| and q with w's sign. */
KERNEL INLINE void q8_chunk(const uint8_t *wb, int units, int T, const int8_t *const *xq, const float *const *xd,
                            __m512 *acc) {
    const __m512i perm = _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
    const __m512i offsets = _mm512_setr_epi32(0, 34, 68, 102, 136, 170, 204, 238, 272, 306, 340, 374, 408, 442,
                                              476, 510);
    __m512i half[4][2];
    for (int h = 0; h < 2; h++) {
        __m512i v[4][4];
        for (int u = 0; u < 4; u++) {
            int b = 8 * h + 2 * u; /* blocks b and b+1 */
            if (b >= 4 * units) {
                for (int t = 0; t < T; t++) v[t][u] = _mm512_setzero_si512();
                continue;
            }
            const uint8_t *p = wb + b * 34 + 2;
            __m512i w = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *) p));
            w = _mm512_inserti64x4(w, _mm256_loadu_si256((const __m256i *) (p + 34)), 1);
            __mmask64 neg = _mm512_movepi8_mask(w);
            __m512i aw = _mm512_abs_epi8(w);
            for (int t = 0; t < T; t++) {
                __m512i x = _mm512_loadu_si512((const void *) (xq[t] + b * 32));
                x = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
                v[t][u] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, x);
            }
        }
        /* lane 4c + u: chunk c of v[u], i.e. half c%2 of block 8h + 2u + c/2 */
        for (int t = 0; t < T; t++) half[t][h] = hadd4(v[t][0], v[t][1], v[t][2], v[t][3]);
    }
    __m512 dw = units == 4 ? scales16(wb, offsets)
                           : scales16m(wb, offsets, (__mmask16) ((1u << (4 * units)) - 1));
    for (int t = 0; t < T; t++) {
        /* chunks: [blocks 0,2,4,6 | 1,3,5,7 | 8,10,12,14 | 9,11,13,15], the halves of each block added */
        __m512i a = half[t][0], b = half[t][1];
        __m512i sum = _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, 0x88), _mm512_shuffle_i32x4(a, b, 0xdd));
        sum = _mm512_permutexvar_epi32(perm, sum);
        __m512 dd = _mm512_mul_ps(dw, _mm512_loadu_ps(xd[t]));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), dd, acc[t]);
    }
}

/*
 * One weight row against T (1-4) activation rows: chunks of 16 blocks, the row's last chunk as far as it goes in
 * whole units of 4 blocks (a last unit of 1-3 blocks from a zero-padded copy); then fma(0, 0, acc) for each chunk
 * of padding up to nbPad blocks (a whole number of 32-block groups).
 */
KERNEL INLINE void row_dot(int q4, const uint8_t *wr, int32_t nb, int32_t nbPad, int T, const int8_t *const *xq,
                           const float *const *xd, const int32_t *const *xs, float *out) {
    int bsz = q4 ? 18 : 34, qpb = 32; /* quantized activation bytes per block */
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const int8_t *q[4];
    const float *d[4];
    const int32_t *s[4];
    for (int32_t ch = 0; ch * 16 < nbPad; ch++) {
        int32_t valid = nb - ch * 16;
        if (valid <= 0) {
            for (int t = 0; t < T; t++) acc[t] = _mm512_add_ps(acc[t], _mm512_setzero_ps());
            continue;
        }
        const uint8_t *wb = wr + (int64_t) ch * 16 * bsz;
        int units = valid >= 16 ? 4 : (valid + 3) / 4;
        uint8_t tail[16 * 34];
        if (valid < 16 && valid % 4 != 0) { /* rows of 32·(4j+1…3) elements: rare */
            memset(tail, 0, sizeof tail);
            memcpy(tail, wb, (size_t) valid * bsz);
            wb = tail;
        }
        for (int t = 0; t < T; t++) {
            q[t] = xq[t] + (int64_t) ch * 16 * qpb;
            d[t] = xd[t] + ch * 16;
            if (q4) s[t] = xs[t] + ch * 16;
        }
        if (q4) q4_chunk(wb, units, T, q, d, s, acc);
        else q8_chunk(wb, units, T, q, d, acc);
    }
    for (int t = 0; t < T; t++) out[t] = lane_sum(acc[t]);
}

/*
 * c[i·ldc + j] (+)= row i of the activations · weight row j, for j in [j0, j1) and i in [0, m): the decode matmul
 * on stored Q4_0 (q4 = 1) or Q8_0 (q4 = 0) weights w (row-major GGUF blocks, k/32 per row). xq, xd, xs: m rows of
 * crucible_quantize's output for nbPad blocks each (xs unused for Q8_0). Activation rows go four at a time against
 * each weight row, so each weight block is loaded once per four rows.
 */
KERNEL void crucible_quant_matmul(int32_t q4, const uint8_t *w, int32_t k, int32_t j0, int32_t j1, int32_t m,
                                  const int8_t *xq, const float *xd, const int32_t *xs, int32_t nbPad, float *c,
                                  int64_t ldc, int32_t accumulate) {
    int32_t nb = k / 32;
    int64_t rowBytes = (int64_t) nb * (q4 ? 18 : 34);
    for (int32_t j = j0; j < j1; j++) {
        const uint8_t *wr = w + j * rowBytes;
        for (int32_t i = 0; i < m; i += 4) {
            int T = m - i < 4 ? m - i : 4;
            const int8_t *q[4];
            const float *d[4];
            const int32_t *s[4];
            float out[4];
            for (int t = 0; t < T; t++) {
                q[t] = xq + (int64_t) (i + t) * nbPad * 32;
                d[t] = xd + (int64_t) (i + t) * nbPad;
                s[t] = q4 ? xs + (int64_t) (i + t) * nbPad : 0;
            }
            switch ((q4 ? 8 : 0) + T) { /* constant T and format per call, so each is compiled with its own loops */
                case 1: row_dot(0, wr, nb, nbPad, 1, q, d, s, out); break;
                case 2: row_dot(0, wr, nb, nbPad, 2, q, d, s, out); break;
                case 3: row_dot(0, wr, nb, nbPad, 3, q, d, s, out); break;
                case 4: row_dot(0, wr, nb, nbPad, 4, q, d, s, out); break;
                case 9: row_dot(1, wr, nb, nbPad, 1, q, d, s, out); break;
                case 10: row_dot(1, wr, nb, nbPad, 2, q, d, s, out); break;
                case 11: row_dot(1, wr, nb, nbPad, 3, q, d, s, out); break;
                default: row_dot(1, wr, nb, nbPad, 4, q, d, s, out); break;
            }
            for (int t = 0; t < T; t++) store(c + (int64_t) (i + t) * ldc + j, out[t], accumulate);
        }
    }
}
