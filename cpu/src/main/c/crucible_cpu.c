/*
 * Crucible's native CPU kernels: the matmuls of decode steps and of prefill on stored weights.
 *   - Q4_0 and Q8_0, on 8-bit activations with AVX-512 VNNI, from a copy of each matrix rearranged once so that
 *     each 32-bit lane of a vector is one weight row (crucible_pack, crucible_packed_matmul): no horizontal sums,
 *     3-4x the rate of a VNNI kernel on the GGUF blocks as they lie (bench/NOTES.md, seventh session), at the price
 *     of that copy (as many bytes as the GGUF blocks);
 *   - F32, F16, BF16 decode rows: the Java kernels' f32 order exactly (crucible_float_matmul), so the same bits;
 *   - paged attention for decode rows, in the Java kernel's order exactly (crucible_paged_rows).
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
 * crucible_cpu_level() says which kernels may be called.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define KERNEL __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))
#define KERNEL2 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

/* The version of this interface; CpuNative refuses a library with another one. */
int32_t crucible_cpu_abi(void) { return 7; }

/*
 * What this CPU can run: 2 = every kernel (AVX-512 with VNNI); 1 = the quantized matmuls only, in their AVX2 form
 * (crucible_quantize and crucible_packed_matmul with avx2 = 1: the same bits, 256-bit vectors, VPMADDUBSW/VPMADDWD
 * instead of VPDPBUSD); 0 = none.
 */
int32_t crucible_cpu_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c")
        && __builtin_cpu_supports("fma")) {
        return 2;
    }
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") ? 1 : 0;
}

/* 1.5·2^23: v + R − R rounds v to an integer, ties to even, for |v| < 2^22 (Q4Int.ROUNDER). */
#define ROUNDER 12582912.0f

/* crucible_quantize's nb whole blocks in plain C (for CPUs below AVX-512): the same f32 steps, so the same values. */
static void quantize_plain(const float *x, int32_t nb, int8_t *q, float *d, int32_t *s) {
    for (int32_t b = 0; b < nb; b++) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) {
            float a = __builtin_fabsf(x[32 * b + i]);
            amax = a > amax ? a : amax;
        }
        float db = amax / 127.0f, id = db == 0.0f ? 0.0f : 1.0f / db;
        int32_t sum = 0;
        for (int i = 0; i < 32; i++) {
            float v = x[32 * b + i] * id;
            v = v + ROUNDER;
            v = v - ROUNDER;
            q[32 * b + i] = (int8_t) (int32_t) v;
            sum += (int32_t) v;
        }
        d[b] = db;
        s[b] = sum;
    }
}

/* The same with 512-bit vectors. */
KERNEL static void quantize_avx512(const float *x, int32_t nb, int8_t *q, float *d, int32_t *s) {
    const __m512 rounder = _mm512_set1_ps(ROUNDER);
    for (int32_t b = 0; b < nb; b++) {
        __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float db = amax / 127.0f, id = db == 0.0f ? 0.0f : 1.0f / db;
        __m512 vid = _mm512_set1_ps(id);
        __m512 r0 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(v0, vid), rounder), rounder);
        __m512 r1 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(v1, vid), rounder), rounder);
        __m512i i0 = _mm512_cvtps_epi32(r0), i1 = _mm512_cvtps_epi32(r1); /* exact: already integers */
        _mm_storeu_si128((__m128i *) (q + 32 * b), _mm512_cvtepi32_epi8(i0));
        _mm_storeu_si128((__m128i *) (q + 32 * b + 16), _mm512_cvtepi32_epi8(i1));
        d[b] = db;
        s[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    }
}

/*
 * Quantizes x[0..k) (k a multiple of 32) into nbPad ≥ k/32 blocks: q (nbPad·32 int8, block b at q[32b … 32b+31]),
 * d (nbPad f32 scales), s (nbPad int32: Σ q per block). Blocks past k/32 are zero. avx2 = 1: the plain-C form.
 * This and the other entry points below are compiled for the baseline x86-64 and call the forms the CPU can run.
 */
void crucible_quantize(int32_t avx2, const float *x, int32_t k, int32_t nbPad, int8_t *q, float *d, int32_t *s) {
    int32_t nb = k / 32;
    if (avx2) quantize_plain(x, nb, q, d, s);
    else quantize_avx512(x, nb, q, d, s);
    memset(q + 32 * nb, 0, (size_t) (nbPad - nb) * 32);
    memset(d + nb, 0, (size_t) (nbPad - nb) * sizeof(float));
    memset(s + nb, 0, (size_t) (nbPad - nb) * sizeof(int32_t));
}

INLINE void store(float *c, float v, int32_t accumulate) { *c = accumulate ? *c + v : v; }

/*
 * Q4_0 and Q8_0 rearranged for one-row-per-lane dot products ("packed"): rows in groups of 16, and for each group
 * and block b a record of
 *   - Q4_0 (288 bytes): four 64-byte vectors whose 32-bit lane l holds bytes 4q … 4q+3 of row l's 16 nibble bytes
 *     (q = 0…3), then row l's f16 block scale at 256 + 2l;
 *   - Q8_0 (544 bytes): eight 64-byte vectors whose lane l holds quants 4q … 4q+3 of row l plus 128 (as unsigned
 *     bytes, what VPDPBUSD multiplies), then the f16 scales at 512 + 2l;
 * as many bytes as the GGUF blocks. Rows past n are zero. A VPDPBUSD against four broadcast activation bytes adds
 * four products to each of 16 rows, so a block's sum for 16 rows needs no horizontal additions; the weights'
 * offsets (8 for Q4_0, 128 for Q8_0) come off as offset · Σq. Each row's 16 contract lanes (block b → lane b % 16)
 * are 16 vectors, summed in order at the end: the same bits as the other kernels and Q4Int.
 */
#define PACK_ROWS 16
#define PACK_Q4 288
#define PACK_Q8 544
/* Activation rows per tile of a many-row call (prefill): 16 rows' lane sums are 16 KB. */
#define PACK_TILE_M 16
/*
 * How far ahead of a packed block to prefetch (16 Q4_0 records, about 8 Q8_0 ones): one core's stream reached
 * ~9-12 GB/s without it, ~15-16 with it (seventh session).
 */
#define PREFETCH_BYTES (16 * PACK_Q4)

/* Packs row groups [g0, g1) of the n×k matrix w (GGUF Q4_0 if q4, else Q8_0) into out (group g at g·(k/32)·record). */
void crucible_pack(int32_t q4, const uint8_t *w, int32_t n, int32_t k, int32_t g0, int32_t g1, uint8_t *out) {
    int32_t nb = k / 32, rec = q4 ? PACK_Q4 : PACK_Q8, bsz = q4 ? 18 : 34, vecs = q4 ? 4 : 8;
    for (int32_t g = g0; g < g1; g++) {
        uint8_t *o = out + (int64_t) g * nb * rec;
        memset(o, 0, (size_t) nb * rec);
        for (int l = 0; l < PACK_ROWS; l++) {
            int64_t row = (int64_t) g * PACK_ROWS + l;
            if (row >= n) break;
            const uint8_t *r = w + row * nb * bsz;
            for (int32_t b = 0; b < nb; b++) {
                const uint8_t *blk = r + b * bsz;
                uint8_t *ob = o + (int64_t) b * rec;
                for (int q = 0; q < vecs; q++) {
                    for (int e = 0; e < 4; e++) {
                        uint8_t v = blk[2 + 4 * q + e];
                        ob[q * 64 + l * 4 + e] = q4 ? v : (uint8_t) (v ^ 0x80); /* int8 + 128 */
                    }
                }
                memcpy(ob + vecs * 64 + l * 2, blk, 2);
            }
        }
    }
}

INLINE int32_t load32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/*
 * One packed block of 16 rows against one activation row's block xb (32 int8) with Σq = xsum: the exact integer
 * sums (Q4_0: Σ (w − 8)·q; Q8_0: Σ w·q), one per lane. Two accumulators halve the dependency chain.
 */
KERNEL INLINE __m512i packed_block_sum(int q4, const __m512i *wv, const int8_t *xb, int32_t xsum) {
    __m512i a = _mm512_setzero_si512(), b = _mm512_setzero_si512();
    if (q4) { /* wv: 4 low-nibble vectors (elements 4q…), then 4 high-nibble ones (elements 16 + 4q…) */
        for (int q = 0; q < 4; q += 2) {
            a = _mm512_dpbusd_epi32(a, wv[q], _mm512_set1_epi32(load32(xb + 4 * q)));
            b = _mm512_dpbusd_epi32(b, wv[q + 1], _mm512_set1_epi32(load32(xb + 4 * q + 4)));
            a = _mm512_dpbusd_epi32(a, wv[4 + q], _mm512_set1_epi32(load32(xb + 16 + 4 * q)));
            b = _mm512_dpbusd_epi32(b, wv[4 + q + 1], _mm512_set1_epi32(load32(xb + 16 + 4 * q + 4)));
        }
        return _mm512_sub_epi32(_mm512_add_epi32(a, b), _mm512_set1_epi32(8 * xsum));
    }
    for (int q = 0; q < 8; q += 2) {
        a = _mm512_dpbusd_epi32(a, wv[q], _mm512_set1_epi32(load32(xb + 4 * q)));
        b = _mm512_dpbusd_epi32(b, wv[q + 1], _mm512_set1_epi32(load32(xb + 4 * q + 4)));
    }
    return _mm512_sub_epi32(_mm512_add_epi32(a, b), _mm512_set1_epi32(128 * xsum));
}

/* A packed block's weight vectors (Q4_0: nibbles split), after prefetching further down the stream. */
KERNEL INLINE void packed_load(int q4, const uint8_t *pb, __m512i *wv) {
    int rec = q4 ? PACK_Q4 : PACK_Q8;
    for (int i = 0; i < rec; i += 64) _mm_prefetch((const char *) (pb + PREFETCH_BYTES + i), _MM_HINT_T0);
    if (q4) {
        const __m512i low = _mm512_set1_epi8(0x0f);
        for (int q = 0; q < 4; q++) {
            __m512i raw = _mm512_loadu_si512((const void *) (pb + q * 64));
            wv[q] = _mm512_and_si512(raw, low);
            wv[4 + q] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
        }
    } else {
        for (int q = 0; q < 8; q++) wv[q] = _mm512_loadu_si512((const void *) (pb + q * 64));
    }
}

/* The 16 rows' scales of a packed block, as f32. */
KERNEL INLINE __m512 packed_scales(int q4, const uint8_t *pb) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (pb + (q4 ? 256 : 512))));
}

/*
 * c[i·ldc + j] (+)= activation row i · weight row j for the rows j of packed groups [g0, g1) (j < n) and all m
 * activation rows (crucible_quantize output, nbPad blocks each). One activation row: the 16 contract lanes of 16
 * weight rows live in 16 registers. Several: in tiles of PACK_TILE_M rows, each block's weights are loaded once per
 * tile and taken against every row of it, whose 16×16 lane sums live in acc (PACK_TILE_M·256 floats of scratch).
 */
KERNEL INLINE void packed_matmul(int q4, const uint8_t *p, int32_t n, int32_t k, int32_t g0, int32_t g1, int32_t m,
                                 const int8_t *xq, const float *xd, const int32_t *xs, int32_t nbPad, float *acc,
                                 float *c, int64_t ldc, int32_t accumulate) {
    int32_t nb = k / 32, rec = q4 ? PACK_Q4 : PACK_Q8;
    __m512i wv[8];
    float out[16];
    for (int32_t g = g0; g < g1; g++) {
        const uint8_t *pg = p + (int64_t) g * nb * rec;
        if (m == 1) {
            __m512 a[16];
            for (int l = 0; l < 16; l++) a[l] = _mm512_setzero_ps();
            int32_t b = 0;
            for (; b + 16 <= nb; b += 16) {
                for (int u = 0; u < 16; u++) { /* unrolled: lane u of the contract is register a[u] */
                    const uint8_t *pb = pg + (int64_t) (b + u) * rec;
                    packed_load(q4, pb, wv);
                    __m512i s = packed_block_sum(q4, wv, xq + (int64_t) (b + u) * 32, xs[b + u]);
                    __m512 dd = _mm512_mul_ps(packed_scales(q4, pb), _mm512_set1_ps(xd[b + u]));
                    a[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dd, a[u]);
                }
            }
            for (int u = 0; b + u < nb; u++) {
                const uint8_t *pb = pg + (int64_t) (b + u) * rec;
                packed_load(q4, pb, wv);
                __m512i s = packed_block_sum(q4, wv, xq + (int64_t) (b + u) * 32, xs[b + u]);
                __m512 dd = _mm512_mul_ps(packed_scales(q4, pb), _mm512_set1_ps(xd[b + u]));
                a[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dd, a[u]);
            }
            for (int32_t pad = nb; pad < nbPad; pad++) a[pad % 16] = _mm512_add_ps(a[pad % 16], _mm512_setzero_ps());
            __m512 s = a[0];
            for (int l = 1; l < 16; l++) s = _mm512_add_ps(s, a[l]);
            _mm512_storeu_ps(out, s);
            for (int l = 0; l < 16 && g * 16 + l < n; l++) store(c + g * 16 + l, out[l], accumulate);
            continue;
        }
        for (int32_t i0 = 0; i0 < m; i0 += PACK_TILE_M) { /* activation rows in tiles: their sums stay in L1 */
            int32_t mt = m - i0 < PACK_TILE_M ? m - i0 : PACK_TILE_M;
            memset(acc, 0, (size_t) mt * 256 * sizeof(float));
            for (int32_t b = 0; b < nb; b++) {
                const uint8_t *pb = pg + (int64_t) b * rec;
                packed_load(q4, pb, wv);
                __m512 dw = packed_scales(q4, pb);
                for (int32_t i = 0; i < mt; i++) {
                    int64_t row = i0 + i;
                    const int8_t *x = xq + row * nbPad * 32 + (int64_t) b * 32;
                    __m512i s = packed_block_sum(q4, wv, x, xs[row * nbPad + b]);
                    __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(xd[row * nbPad + b]));
                    float *ai = acc + (int64_t) i * 256 + (b % 16) * 16;
                    _mm512_storeu_ps(ai, _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dd, _mm512_loadu_ps(ai)));
                }
            }
            for (int32_t i = 0; i < mt; i++) {
                float *ai = acc + (int64_t) i * 256;
                for (int32_t pad = nb; pad < nbPad; pad++) {
                    __m512 v = _mm512_loadu_ps(ai + (pad % 16) * 16);
                    _mm512_storeu_ps(ai + (pad % 16) * 16, _mm512_add_ps(v, _mm512_setzero_ps()));
                }
                __m512 s = _mm512_loadu_ps(ai);
                for (int l = 1; l < 16; l++) s = _mm512_add_ps(s, _mm512_loadu_ps(ai + l * 16));
                _mm512_storeu_ps(out, s);
                for (int l = 0; l < 16 && g * 16 + l < n; l++)
                    store(c + (i0 + i) * ldc + g * 16 + l, out[l], accumulate);
            }
        }
    }
}

/*
 * The AVX2 form of packed_matmul, for CPUs without AVX-512 VNNI: each record's 16 rows as two halves of 8 lanes;
 * a block sum through VPMADDUBSW (pairs of byte products into 16 bits) and VPMADDWD (pairs into 32): Q4_0 as the
 * nibbles (at most 15·127·2 per pair, no saturation), Q8_0 as |w| against q with w's sign (at most 128·127·2), so
 * every integer sum is the same as VPDPBUSD's. The f32 steps are the same per lane: the same bits. All activation
 * rows keep their 16×16 lane sums in acc (16 registers per row would not fit in AVX2's 16).
 */
KERNEL2 INLINE __m256i block_sum_avx2(int q4, const uint8_t *pb, int half, const int8_t *xb, int32_t xsum) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a = _mm256_setzero_si256();
    if (q4) {
        const __m256i low = _mm256_set1_epi8(0x0f);
        for (int q = 0; q < 4; q++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *) (pb + q * 64 + half * 32));
            __m256i lo = _mm256_and_si256(raw, low), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
            a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(load32(xb + 4 * q))), ones));
            a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_set1_epi32(load32(xb + 16 + 4 * q))), ones));
        }
        return _mm256_sub_epi32(a, _mm256_set1_epi32(8 * xsum));
    }
    const __m256i flip = _mm256_set1_epi8((char) 0x80);
    for (int q = 0; q < 8; q++) {
        __m256i w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *) (pb + q * 64 + half * 32)), flip); /* int8 */
        __m256i x = _mm256_sign_epi8(_mm256_set1_epi32(load32(xb + 4 * q)), w);
        a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), x), ones));
    }
    return a;
}

KERNEL2 INLINE void packed_matmul_avx2(int q4, const uint8_t *p, int32_t n, int32_t k, int32_t g0, int32_t g1,
                                       int32_t m, const int8_t *xq, const float *xd, const int32_t *xs, int32_t nbPad,
                                       float *acc, float *c, int64_t ldc, int32_t accumulate) {
    int32_t nb = k / 32, rec = q4 ? PACK_Q4 : PACK_Q8;
    float out[16];
    for (int32_t g = g0; g < g1; g++) {
        const uint8_t *pg = p + (int64_t) g * nb * rec;
        for (int32_t i0 = 0; i0 < m; i0 += PACK_TILE_M) {
            int32_t mt = m - i0 < PACK_TILE_M ? m - i0 : PACK_TILE_M;
            memset(acc, 0, (size_t) mt * 256 * sizeof(float));
            for (int32_t b = 0; b < nb; b++) {
                const uint8_t *pb = pg + (int64_t) b * rec;
                for (int i = 0; i < rec; i += 64) _mm_prefetch((const char *) (pb + PREFETCH_BYTES + i), _MM_HINT_T0);
                for (int half = 0; half < 2; half++) {
                    __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (pb + (q4 ? 256 : 512) + 16 * half)));
                    for (int32_t i = 0; i < mt; i++) {
                        int64_t row = i0 + i;
                        __m256i sum = block_sum_avx2(q4, pb, half, xq + row * nbPad * 32 + (int64_t) b * 32,
                                                     xs[row * nbPad + b]);
                        __m256 dd = _mm256_mul_ps(dw, _mm256_set1_ps(xd[row * nbPad + b]));
                        float *ai = acc + (int64_t) i * 256 + (b % 16) * 16 + half * 8;
                        _mm256_storeu_ps(ai, _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), dd, _mm256_loadu_ps(ai)));
                    }
                }
            }
            for (int32_t i = 0; i < mt; i++) {
                float *ai = acc + (int64_t) i * 256;
                for (int32_t pad = nb; pad < nbPad; pad++) {
                    for (int half = 0; half < 2; half++) {
                        float *v = ai + (pad % 16) * 16 + half * 8;
                        _mm256_storeu_ps(v, _mm256_add_ps(_mm256_loadu_ps(v), _mm256_setzero_ps()));
                    }
                }
                for (int half = 0; half < 2; half++) {
                    __m256 sv = _mm256_loadu_ps(ai + half * 8);
                    for (int l = 1; l < 16; l++) sv = _mm256_add_ps(sv, _mm256_loadu_ps(ai + l * 16 + half * 8));
                    _mm256_storeu_ps(out + half * 8, sv);
                }
                for (int l = 0; l < 16 && g * 16 + l < n; l++)
                    store(c + (i0 + i) * ldc + g * 16 + l, out[l], accumulate);
            }
        }
    }
}

/*
 * packed_matmul on Q4_0 (q4 = 1) or Q8_0 (q4 = 0) records, each compiled with its own loops; avx2 = 1 for the
 * AVX2 form (acc then holds m·256 floats of scratch, or PACK_TILE_M·256 if fewer, for one activation row too).
 */
KERNEL static void packed_avx512(int32_t q4, const uint8_t *p, int32_t n, int32_t k, int32_t g0, int32_t g1, int32_t m,
                                 const int8_t *xq, const float *xd, const int32_t *xs, int32_t nbPad, float *acc,
                                 float *c, int64_t ldc, int32_t accumulate) {
    if (q4) packed_matmul(1, p, n, k, g0, g1, m, xq, xd, xs, nbPad, acc, c, ldc, accumulate);
    else packed_matmul(0, p, n, k, g0, g1, m, xq, xd, xs, nbPad, acc, c, ldc, accumulate);
}

KERNEL2 static void packed_avx2(int32_t q4, const uint8_t *p, int32_t n, int32_t k, int32_t g0, int32_t g1, int32_t m,
                                const int8_t *xq, const float *xd, const int32_t *xs, int32_t nbPad, float *acc,
                                float *c, int64_t ldc, int32_t accumulate) {
    if (q4) packed_matmul_avx2(1, p, n, k, g0, g1, m, xq, xd, xs, nbPad, acc, c, ldc, accumulate);
    else packed_matmul_avx2(0, p, n, k, g0, g1, m, xq, xd, xs, nbPad, acc, c, ldc, accumulate);
}

void crucible_packed_matmul(int32_t avx2, int32_t q4, const uint8_t *p, int32_t n, int32_t k, int32_t g0, int32_t g1,
                            int32_t m, const int8_t *xq, const float *xd, const int32_t *xs, int32_t nbPad, float *acc,
                            float *c, int64_t ldc, int32_t accumulate) {
    if (avx2) packed_avx2(q4, p, n, k, g0, g1, m, xq, xd, xs, nbPad, acc, c, ldc, accumulate);
    else packed_avx512(q4, p, n, k, g0, g1, m, xq, xd, xs, nbPad, acc, c, ldc, accumulate);
}

/*
 * Float weights (F32, F16, BF16) against f32 activations, in the Java kernels' order (WeightRows.dot, MatMul.dot):
 * per (weight row, activation row) one 16-lane accumulator takes fma(w[p…p+15], x[p…p+15], acc) for each whole
 * vector in order; then the lanes in VMath.sum's tree (v + v rotated by 8, 4, 2, 1 lanes; lane 0); then the
 * elements past the last whole vector as sum = fma(x[p], w[p], sum). So these kernels give the Java kernels' bits,
 * for any number of rows per call; they only run faster (several rows' chains at once, prefetch, the CPU's
 * half-to-float instruction).
 */
enum { W_F32 = 0, W_F16 = 1, W_BF16 = 2 };

KERNEL INLINE __m512 load_w(const uint8_t *w, int type, int64_t p) {
    switch (type) {
        case W_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (w + 2 * p)));
        case W_BF16: return _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *) (w + 2 * p))), 16));
        default: return _mm512_loadu_ps((const float *) (w + 4 * p));
    }
}

KERNEL INLINE float scalar_w(const uint8_t *w, int type, int64_t p) {
    uint16_t h;
    uint32_t u;
    float f;
    switch (type) {
        case W_F16: memcpy(&h, w + 2 * p, 2); return _cvtsh_ss(h);
        case W_BF16: memcpy(&h, w + 2 * p, 2); u = (uint32_t) h << 16; memcpy(&f, &u, 4); return f;
        default: memcpy(&f, w + 4 * p, 4); return f;
    }
}

/* VMath.sum: v + (v rotated by 8 lanes), then by 4, 2, 1; lane 0. */
KERNEL INLINE float tree_sum(__m512 v) {
    __m512i i = _mm512_castps_si512(v);
    i = _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(i), _mm512_castsi512_ps(_mm512_alignr_epi32(i, i, 8))));
    i = _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(i), _mm512_castsi512_ps(_mm512_alignr_epi32(i, i, 4))));
    i = _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(i), _mm512_castsi512_ps(_mm512_alignr_epi32(i, i, 2))));
    i = _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(i), _mm512_castsi512_ps(_mm512_alignr_epi32(i, i, 1))));
    return _mm512_cvtss_f32(_mm512_castsi512_ps(i));
}

/*
 * R weight rows (at wr[0…R-1]) against T activation rows (x, k apart): R·T results, out[r·T + t]. Each row's bytes
 * are prefetched FLOAT_PREFETCH bytes ahead, which runs on into the row that follows it in its stream.
 */
#define FLOAT_PREFETCH 1536
/* One activation row: weight rows per step, one from each part of a call's range (1, 2 or 4 measured alike). */
#define FLOAT_STREAMS 2
KERNEL INLINE void float_tile(const uint8_t *const *wr, int type, int R, const float *x, int T, int32_t k,
                              float *out) {
    __m512 acc[16];
    for (int i = 0; i < R * T; i++) acc[i] = _mm512_setzero_ps();
    int esz = type == W_F32 ? 4 : 2;
    int32_t p = 0;
    for (; p + 16 <= k; p += 16) {
        if (((p * esz) & 63) == 0) {
            for (int r = 0; r < R; r++) _mm_prefetch((const char *) (wr[r] + (int64_t) esz * p + FLOAT_PREFETCH), _MM_HINT_T0);
        }
        for (int r = 0; r < R; r++) {
            __m512 w = load_w(wr[r], type, p);
            for (int t = 0; t < T; t++) acc[r * T + t] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + (int64_t) t * k + p), acc[r * T + t]);
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < T; t++) {
            float s = tree_sum(acc[r * T + t]);
            for (int32_t q = p; q < k; q++) s = __builtin_fmaf(x[(int64_t) t * k + q], scalar_w(wr[r], type, q), s);
            out[r * T + t] = s;
        }
    }
}

/*
 * c[i·ldc + j] (+)= activation row i (a, k floats apart) · weight row j (type: 0 F32, 1 F16, 2 BF16; row-major) for
 * j in [j0, j1) and i in [0, m). One activation row: two weight rows at a time, one from each half of the range
 * (two chains, two sequential streams through memory); more: four adjacent weight rows against four activation
 * rows at a time (16 accumulators; each weight and activation vector loaded once per 16 multiply-adds).
 */
KERNEL void crucible_float_matmul(const uint8_t *w, int32_t type, int32_t k, int32_t j0, int32_t j1, int32_t m,
                                  const float *a, float *c, int64_t ldc, int32_t accumulate) {
    int64_t rowBytes = (int64_t) k * (type == W_F32 ? 4 : 2);
    float out[16];
    const uint8_t *wr[4];
    if (m == 1) {
        /* FLOAT_STREAMS rows at a time, one from each part of the range: independent chains, sequential streams */
        int32_t part = (j1 - j0) / FLOAT_STREAMS;
        for (int32_t i = 0; i < part; i++) {
            for (int r = 0; r < FLOAT_STREAMS; r++) wr[r] = w + (int64_t) (j0 + r * part + i) * rowBytes;
            float_tile(wr, type, FLOAT_STREAMS, a, 1, k, out);
            for (int r = 0; r < FLOAT_STREAMS; r++) store(c + j0 + r * part + i, out[r], accumulate);
        }
        for (int32_t j = j0 + FLOAT_STREAMS * part; j < j1; j++) {
            wr[0] = w + (int64_t) j * rowBytes;
            float_tile(wr, type, 1, a, 1, k, out);
            store(c + j, out[0], accumulate);
        }
        return;
    }
    for (int32_t j = j0; j < j1;) {
        int R = j1 - j >= 4 ? 4 : 1;
        for (int r = 0; r < R; r++) wr[r] = w + (int64_t) (j + r) * rowBytes;
        for (int32_t i = 0; i < m; i += 4) {
            int T = m - i < 4 ? m - i : 4;
            const float *x = a + (int64_t) i * k;
            switch (R * 8 + T) { /* constant R and T per call, so each is compiled with its own loops */
                case 1 * 8 + 1: float_tile(wr, type, 1, x, 1, k, out); break;
                case 1 * 8 + 2: float_tile(wr, type, 1, x, 2, k, out); break;
                case 1 * 8 + 3: float_tile(wr, type, 1, x, 3, k, out); break;
                case 1 * 8 + 4: float_tile(wr, type, 1, x, 4, k, out); break;
                case 4 * 8 + 1: float_tile(wr, type, 4, x, 1, k, out); break;
                case 4 * 8 + 2: float_tile(wr, type, 4, x, 2, k, out); break;
                case 4 * 8 + 3: float_tile(wr, type, 4, x, 3, k, out); break;
                default: float_tile(wr, type, 4, x, 4, k, out); break;
            }
            for (int r = 0; r < R; r++)
                for (int t = 0; t < T; t++) store(c + (int64_t) (i + t) * ldc + j + r, out[r * T + t], accumulate);
        }
        j += R;
    }
}

/*
 * Paged attention for decode rows, in PagedAttention's order exactly (its "by rows" path, which follows
 * Attention.forward for a query at position length − 1): keys in blocks of 64; per key a 16-lane chain of
 * fma(k, q, acc) over whole vectors, VMath.sum's tree, the elements past the last vector as fma(q, k, sum), times
 * scale; an online softmax per (row, head) with VMath.exp's Cephes polynomial (vector form for the block, scalar
 * form for the correction); P·V in two accumulators (even and odd keys) per 16 output lanes. So the same bits as
 * the Java kernel, for F32 pools and F16 pools (widened exactly first).
 */
#define ATT_BK 64
#define EXP_LOG2E 1.44269504088896341f
#define EXP_MAGIC 12582912.0f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f
#define EXP_HI 88.72283905206835f
#define EXP_LO -87.33654475055310898657f

/* VMath.exp(float). */
KERNEL INLINE float exp_scalar(float x) {
    if (x < EXP_LO) return 0.0f;
    if (x > EXP_HI) return __builtin_inff();
    if (x != x) return x;
    float t = __builtin_fmaf(x, EXP_LOG2E, EXP_MAGIC);
    float n = t - EXP_MAGIC;
    float r = __builtin_fmaf(n, -EXP_LN2_HI, x);
    r = __builtin_fmaf(n, -EXP_LN2_LO, r);
    float p = __builtin_fmaf(__builtin_fmaf(__builtin_fmaf(__builtin_fmaf(__builtin_fmaf(r, EXP_P0, EXP_P1), r, EXP_P2),
                                                            r, EXP_P3), r, EXP_P4), r, EXP_P5);
    float y = p * (r * r) + r + 1.0f;
    int32_t ni = (int32_t) n, n1 = ni >> 1, n2 = ni - n1;
    uint32_t b1 = (uint32_t) (n1 + 127) << 23, b2 = (uint32_t) (n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    return y * s1 * s2;
}

/* VMath.exp(p, 0, p, 0, len, 1, shift) for len a multiple of 16: p[i] = e^(p[i] − shift), returns the tree sum. */
KERNEL INLINE float exp_block(float *p, int len, float shift) {
    __m512 acc = _mm512_setzero_ps();
    const __m512 lo = _mm512_set1_ps(EXP_LO), hi = _mm512_set1_ps(EXP_HI), magic = _mm512_set1_ps(EXP_MAGIC);
    for (int i = 0; i < len; i += 16) {
        __m512 x = _mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(p + i), _mm512_set1_ps(1.0f)), _mm512_set1_ps(shift));
        __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
        __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(xc, _mm512_set1_ps(EXP_LOG2E), magic), magic);
        __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-EXP_LN2_HI), xc);
        r = _mm512_fmadd_ps(n, _mm512_set1_ps(-EXP_LN2_LO), r);
        __m512 q = _mm512_fmadd_ps(r, _mm512_set1_ps(EXP_P0), _mm512_set1_ps(EXP_P1));
        q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXP_P2));
        q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXP_P3));
        q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXP_P4));
        q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXP_P5));
        __m512 y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(q, _mm512_mul_ps(r, r)), r), _mm512_set1_ps(1.0f));
        __m512i ni = _mm512_cvttps_epi32(n);
        __m512i n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
        __m512i e127 = _mm512_set1_epi32(127);
        y = _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, e127), 23)));
        y = _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, e127), 23)));
        y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), _mm512_setzero_ps());
        y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), _mm512_set1_ps(__builtin_inff()));
        _mm512_storeu_ps(p + i, y);
        acc = _mm512_add_ps(acc, y);
    }
    return tree_sum(acc);
}

/* Math.max(a, b): NaN if either is, +0 over −0. */
INLINE float java_max(float a, float b) {
    if (a != a) return a;
    if (b != b) return b;
    if (a == 0.0f && b == 0.0f) return __builtin_signbit(a) ? b : a;
    return a >= b ? a : b;
}

/* 16 pool values at element c of a row (F32, or F16 widened exactly), and one of them. */
KERNEL INLINE __m512 pool16(const uint8_t *row, int half, int32_t c) {
    return half ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (row + 2 * c)))
                : _mm512_loadu_ps((const float *) (row + 4 * c));
}

KERNEL INLINE float pool1(const uint8_t *row, int half, int32_t c) {
    if (half) {
        uint16_t h;
        memcpy(&h, row + 2 * c, 2);
        return _cvtsh_ss(h);
    }
    float f;
    memcpy(&f, row + 4 * c, 4);
    return f;
}

/* One key's score: the chain over whole vectors, the tree, the tail, times scale (Attention.scoresByRows). */
KERNEL INLINE float key_score(const float *q, const uint8_t *k, int half, int32_t d, float scale) {
    int32_t dv = d / 16 * 16;
    __m512 a = _mm512_setzero_ps();
    for (int32_t c = 0; c < dv; c += 16) a = _mm512_fmadd_ps(pool16(k, half, c), _mm512_loadu_ps(q + c), a);
    float x = tree_sum(a);
    for (int32_t c = dv; c < d; c++) x = __builtin_fmaf(q[c], pool1(k, half, c), x);
    return x * scale;
}

KERNEL INLINE int32_t paged_rows(const float *q, const uint8_t *kPool, const uint8_t *vPool, int half,
                                  const int32_t *tableRow, const int32_t *len, int32_t r0, int32_t n,
                                  float *out, int32_t heads, int32_t kvHeads, int32_t kh, int32_t d,
                                  int32_t pageSize, float scale) {
    int32_t group = heads / kvHeads, nq = n * group, dp = (d + 15) / 16 * 16;
    if (d > 256 || nq > 64) return 0;
    float o[nq * dp], m[64], l[64], p[ATT_BK]; /* at most 64 KB, on the calling thread's stack */
    const uint8_t *kp[ATT_BK], *vp[ATT_BK];
    int32_t esz = half ? 2 : 4, keys = 0;
    memset(o, 0, sizeof(float) * (size_t) nq * dp);
    for (int32_t i = 0; i < nq; i++) {
        m[i] = -__builtin_inff();
        l[i] = 0.0f;
    }
    for (int32_t r = 0; r < n; r++) keys = len[r] > keys ? len[r] : keys;
    for (int32_t j0 = 0; j0 < keys; j0 += ATT_BK) {
        int32_t bk = keys - j0 < ATT_BK ? keys - j0 : ATT_BK;
        for (int32_t j = 0; j < bk; j++) {
            int32_t t = j0 + j;
            int64_t off = (((int64_t) tableRow[t / pageSize] * pageSize + t % pageSize) * kvHeads + kh) * d * esz;
            kp[j] = kPool + off;
            vp[j] = vPool + off;
        }
        for (int32_t r = 0; r < n; r++) {
            int32_t limit = len[r] - j0 < bk ? len[r] - j0 : bk;
            if (limit <= 0) continue;
            int32_t nv = (limit + 15) / 16;
            for (int32_t g = 0; g < group; g++) {
                int32_t qi = r * group + g;
                const float *qr = q + ((int64_t) (r0 + r) * heads + kh * group + g) * d;
                float bmax = -__builtin_inff();
                for (int32_t j = 0; j < limit; j++) {
                    p[j] = key_score(qr, kp[j], half, d, scale);
                    bmax = java_max(bmax, p[j]);
                }
                for (int32_t j = limit; j < nv * 16; j++) p[j] = -__builtin_inff();
                float mOld = m[qi], mNew = java_max(mOld, bmax);
                float corr = mOld == -__builtin_inff() ? 0.0f : exp_scalar(mOld - mNew);
                float blockSum = exp_block(p, nv * 16, mNew);
                m[qi] = mNew;
                l[qi] = l[qi] * corr + blockSum;
                /* Attention.accumulatePV: per 16 lanes, o·corr plus even keys, odd keys in a second chain */
                float *oq = o + (int64_t) qi * dp;
                int32_t dv = d / 16 * 16;
                for (int32_t cv = 0; cv < dv; cv += 16) {
                    __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(oq + cv), _mm512_set1_ps(corr)), a1 = _mm512_setzero_ps();
                    int32_t j = 0;
                    for (; j + 1 < limit; j += 2) {
                        a0 = _mm512_fmadd_ps(pool16(vp[j], half, cv), _mm512_set1_ps(p[j]), a0);
                        a1 = _mm512_fmadd_ps(pool16(vp[j + 1], half, cv), _mm512_set1_ps(p[j + 1]), a1);
                    }
                    if (j < limit) a0 = _mm512_fmadd_ps(pool16(vp[j], half, cv), _mm512_set1_ps(p[j]), a0);
                    _mm512_storeu_ps(oq + cv, _mm512_add_ps(a0, a1));
                }
                for (int32_t c = dv; c < d; c++) {
                    float a = oq[c] * corr;
                    for (int32_t j = 0; j < limit; j++) a = __builtin_fmaf(p[j], pool1(vp[j], half, c), a);
                    oq[c] = a;
                }
            }
        }
    }
    for (int32_t r = 0; r < n; r++) {
        for (int32_t g = 0; g < group; g++) {
            int32_t qi = r * group + g;
            float inv = 1.0f / l[qi];
            float *dst = out + ((int64_t) (r0 + r) * heads + kh * group + g) * d;
            for (int32_t c = 0; c < d; c++) dst[c] = o[(int64_t) qi * dp + c] * inv;
        }
    }
    return 1;
}

/*
 * Rows r0 … r0+n−1 (one page-table row, tableRow) and every query head of KV head kh: PagedAttention.block's "by
 * rows" path. q, out (rows, heads, d) f32; pools (pages, pageSize, kvHeads, d), F32 or F16 (half; widened as
 * read). Returns 0 (and does nothing) for shapes past its scratch (d > 256, n·group > 64): the caller then runs
 * the Java kernel.
 */
KERNEL int32_t crucible_paged_rows(const float *q, const uint8_t *kPool, const uint8_t *vPool, int32_t half,
                                   const int32_t *tableRow, const int32_t *len, int32_t r0, int32_t n,
                                   float *out, int32_t heads, int32_t kvHeads, int32_t kh, int32_t d,
                                   int32_t pageSize, float scale) {
    return half ? paged_rows(q, kPool, vPool, 1, tableRow, len, r0, n, out, heads, kvHeads, kh, d, pageSize, scale)
                : paged_rows(q, kPool, vPool, 0, tableRow, len, r0, n, out, heads, kvHeads, kh, d, pageSize, scale);
}
