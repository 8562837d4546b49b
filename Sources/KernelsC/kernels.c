#include "common.h"

// Why C: swiftc emits no vpdpbusd (VNNI) for a widened int8 multiply-add, and its generic SIMD integer →
// float conversions were not inlined: the Swift float kernel for Q4_1 ran the default model at 21 tok/s
// on one thread (`kangaroo generate --threads 1`, release build), see the kernels issue note for the
// measured figures of this C path.


// ---------------------------------------------------------------------------------------------
// Activation quantisation. One body, compiled for the baseline and for AVX2 (AVX-512 is written out
// below): the operations (max of |x|, one division, multiply, round to nearest even, integer sum)
// give the same results either way, and with SSE4.1 and up the rounding is an instruction instead of a
// libm call per value.

static inline __attribute__((always_inline)) void quantize_body(const float *x, int columns, int tokens, int8_t *q,
                                                                float *d, float *ds) {
    int blocks = columns / 32;
    for (int t = 0; t < tokens; t++) {
        for (int b = 0; b < blocks; b++) {
            const float *v = x + (size_t)t * columns + b * 32;
            int8_t *out = q + (size_t)t * columns + b * 32;
            float inverse, scale = block_scale(v, 127.0f, &inverse);
            int sum = 0;
            for (int i = 0; i < 32; i++) {
                int value = (int)nearbyintf(v[i] * inverse);
                out[i] = (int8_t)value;
                sum += value;
            }
            d[(size_t)t * blocks + b] = scale;
            ds[(size_t)t * blocks + b] = scale * (float)sum;
        }
    }
}

static void quantize_portable(const float *x, int columns, int tokens, int8_t *q, float *d, float *ds) {
    quantize_body(x, columns, tokens, q, d, ds);
}

#if KQ_X86
KQ_TARGET_AVX2 static void quantize_avx2(const float *x, int columns, int tokens, int8_t *q, float *d, float *ds) {
    quantize_body(x, columns, tokens, q, d, ds);
}

// The same arithmetic as quantize_body with explicit vectors: left to itself the compiler vectorised
// across blocks with gathers, and quantisation took 3.9% of an 8-token forward's samples in perf, all
// of it on the calling thread while the worker waited. Blocks are contiguous across tokens (columns
// is a multiple of 32). cvtps_epi32 rounds in the current mode like nearbyintf, max is
// order-independent and the int32 sum exact, so the results equal the portable ones bit for bit.
KQ_TARGET_VNNI static void quantize_avx512(const float *x, int columns, int tokens, int8_t *q, float *d, float *ds) {
    size_t blocks = (size_t)tokens * (size_t)(columns / 32);
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (size_t i = 0; i < blocks; i++) {
        __m512 a = _mm512_loadu_ps(x + 32 * i), b = _mm512_loadu_ps(x + 32 * i + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, a), _mm512_andnot_ps(sign, b)));
        float scale = amax / 127.0f, inverse = scale != 0 ? 1.0f / scale : 0.0f;
        __m512 factor = _mm512_set1_ps(inverse);
        __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, factor)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, factor));
        _mm_storeu_si128((__m128i *)(q + 32 * i), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128((__m128i *)(q + 32 * i + 16), _mm512_cvtepi32_epi8(qb));
        d[i] = scale;
        ds[i] = scale * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    }
}
#endif

void kq_quantize(const float *x, int columns, int tokens, int8_t *q, float *d, float *ds) {
    KQ_DISPATCH(quantize, x, columns, tokens, q, d, ds)
}

// ---------------------------------------------------------------------------------------------
// Softmax. Why C: the same method written with Swift SIMD16 made attention's softmax 4× slower than
// scalar expf (its share of a 1081-token-context decode went from 11% to 43% in perf), while this loop
// vectorises. e^x by Cephes' single-precision method: x = n·ln 2 + r, a degree-6 polynomial for e^r,
// 2^n from the exponent bits. One body for the three builds, same operations (fmaf is exact on each),
// so the same results.

static inline __attribute__((always_inline)) float exp_cephes(float x) {
    int tiny = x < -87.33654f;
    x = fminf(fmaxf(x, -87.33654f), 88.72283f);
    float n = nearbyintf(x * 1.442695040888963f);
    float r = fmaf(n, -0.693359375f, x);  /* x − n·C1, C1 = ln 2 to 9 bits */
    r = fmaf(n, 2.12194440e-4f, r);       /* − n·C2, the rest of ln 2 */
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    float y = fmaf(p, r * r, r + 1.0f);
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return tiny ? 0.0f : y * scale;
}

static inline __attribute__((always_inline)) void softmax_body(float *x, int n) {
    float top = -INFINITY;
    for (int i = 0; i < n; i++) top = fmaxf(top, x[i]);
    float lanes[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int l = 0; l < 16; l++) {
            float e = exp_cephes(x[i + l] - top);
            x[i + l] = e;
            lanes[l] += e;
        }
    }
    for (int l = 0; i < n; i++, l++) {
        float e = exp_cephes(x[i] - top);
        x[i] = e;
        lanes[l] += e;
    }
    float sum = 0;
    for (int l = 0; l < 16; l++) sum += lanes[l];
    float inverse = 1.0f / sum;
    for (int j = 0; j < n; j++) x[j] *= inverse;
}

KQ_BUILDS(softmax, (float *x, int n), (x, n))

void kq_softmax(float *x, int n) { KQ_DISPATCH(softmax, x, n) }

// SwiGLU, gate[i] = g / (1 + e^−g) · up[i], with the same exponential as softmax. Why C: with libm's
// expf per element from Swift it took about 6% of an 8-token forward's samples, on the calling thread.
// One body for the three builds, element by element, so the same results.
static inline __attribute__((always_inline)) void swiglu_body(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + exp_cephes(-g)) * up[i];
    }
}

KQ_BUILDS(swiglu, (float *gate, const float *up, int n), (gate, up, n))

void kq_swiglu(float *gate, const float *up, int n) { KQ_DISPATCH(swiglu, gate, up, n) }

// ---------------------------------------------------------------------------------------------
// Weight blocks: for each format, the 32 weight bytes that enter the integer dot product, the
// block's float scale, and what the format adds per block (Q4_1: m · Σx; Q4_0: −8 · d · Σx,
// Q8_0: nothing).
//   Q4_0: [f16 d][16 B nibbles]        w = d · (n − 8)   → u8 n,      extra = −8·d_w·ds_x
//   Q4_1: [f16 d][f16 m][16 B nibbles] w = d · n + m     → u8 n,      extra = m_w·ds_x
//   Q8_0: [f16 d][32 × i8]             w = d · i         → |i| with x·sign(i), extra = 0

enum { BLOCK_Q4_0 = 18, BLOCK_Q4_1 = 20, BLOCK_Q8_0 = 34 };

// Portable reference: lane i of the integer dot product sums bytes 4i…4i+3.
static void lanes_portable(const uint8_t *w_u8, const int8_t *x, int32_t lanes[8]) {
    for (int i = 0; i < 8; i++) {
        int32_t s = 0;
        for (int k = 0; k < 4; k++) s += (int32_t)w_u8[4 * i + k] * (int32_t)x[4 * i + k];
        lanes[i] = s;
    }
}

static void unpack_portable(int type, const uint8_t *block, uint8_t w[32], int8_t sign[32]) {
    if (type == 8) {
        for (int i = 0; i < 32; i++) {
            int8_t v = (int8_t)block[2 + i];
            w[i] = (uint8_t)(v < 0 ? -(int)v : v);
            sign[i] = v < 0 ? -1 : (v == 0 ? 0 : 1);
        }
        return;
    }
    const uint8_t *nibbles = block + (type == 3 ? 4 : 2);
    for (int i = 0; i < 16; i++) {
        w[i] = nibbles[i] & 0x0F;
        w[i + 16] = nibbles[i] >> 4;
    }
}

static inline void block_scales(int type, const uint8_t *block, float *dw, float *extra_factor) {
    *dw = half_to_float(load_u16(block));
    if (type == 3) *extra_factor = half_to_float(load_u16(block + 2));
    else if (type == 2) *extra_factor = -8.0f * *dw;
    else *extra_factor = 0.0f;
}

static inline int block_bytes(int type) {
    return type == 2 ? BLOCK_Q4_0 : type == 3 ? BLOCK_Q4_1 : BLOCK_Q8_0;
}

// Sums eight float lanes in a fixed order: (0+4, 1+5, 2+6, 3+7), then pairs, then the last two.
static inline float sum_lanes(const float l[8]) {
    float a0 = l[0] + l[4], a1 = l[1] + l[5], a2 = l[2] + l[6], a3 = l[3] + l[7];
    float b0 = a0 + a2, b1 = a1 + a3;
    return b0 + b1;
}

static void matmul_portable(int type, const uint8_t *weights, size_t row_bytes, int columns, int row_begin, int row_end,
                            const int8_t *q, const float *d, const float *ds, int tokens, float *y, size_t ldy) {
    int blocks = columns / 32, bsize = block_bytes(type);
    for (int r = row_begin; r < row_end; r++) {
        const uint8_t *row = weights + (size_t)r * row_bytes;
        for (int t = 0; t < tokens; t++) {
            float acc[8] = {0};
            float extra = 0;
            for (int b = 0; b < blocks; b++) {
                const uint8_t *block = row + (size_t)b * bsize;
                uint8_t w[32];
                int8_t sign[32], x[32];
                unpack_portable(type, block, w, sign);
                const int8_t *xb = q + (size_t)t * columns + b * 32;
                for (int i = 0; i < 32; i++) x[i] = type == 8 ? (int8_t)(xb[i] * sign[i]) : xb[i];
                int32_t lanes[8];
                lanes_portable(w, x, lanes);
                float dw, factor;
                block_scales(type, block, &dw, &factor);
                float scale = dw * d[(size_t)t * blocks + b];
                for (int i = 0; i < 8; i++) acc[i] = fmaf((float)lanes[i], scale, acc[i]);
                extra = fmaf(factor, ds[(size_t)t * blocks + b], extra);
            }
            y[(size_t)t * ldy + r] = sum_lanes(acc) + extra;
        }
    }
}

#if KQ_X86
// ---------------------------------------------------------------------------------------------
// x86: weights unpacked to 32 unsigned bytes in a ymm register, activations signed.


// Rows are taken KQ_ROWS at a time: their blocks are unpacked once into a small buffer that stays in
// L1 (32 unsigned bytes, scale and per-block term per block), then every token streams through them with
// KQ_ROWS independent accumulator chains. Each (row, token) pair goes through the same sequence of
// operations whatever the number of tokens.
#define KQ_ROWS 4

#define KQ_DEFINE_MATMUL(NAME, TARGET, DOT)                                                              \
TARGET static inline __attribute__((always_inline)) void NAME##_impl(const int type, const uint8_t *weights, \
                        size_t row_bytes, int columns, int row_begin, int row_end, const int8_t *q,      \
                        const float *d, const float *ds, int tokens, float *y, size_t ldy) {             \
    int blocks = columns / 32, bsize = block_bytes(type);                                                \
    const __m256i low_mask = _mm256_set1_epi8(0x0F);                                                     \
    __m256i w[KQ_ROWS][blocks], sign[type == 8 ? KQ_ROWS : 1][type == 8 ? blocks : 1];                   \
    float dw[KQ_ROWS][blocks], factor[KQ_ROWS][blocks];                                                  \
    for (int r0 = row_begin; r0 < row_end; r0 += KQ_ROWS) {                                              \
        int nr = row_end - r0 < KQ_ROWS ? row_end - r0 : KQ_ROWS;                                        \
        for (int i = 0; i < KQ_ROWS; i++) {                                                              \
            /* Rows past the end repeat the last row; their results are not stored. */                  \
            const uint8_t *row = weights + (size_t)(r0 + (i < nr ? i : nr - 1)) * row_bytes;             \
            for (int b = 0; b < blocks; b++) {                                                           \
                const uint8_t *block = row + (size_t)b * bsize;                                          \
                dw[i][b] = _cvtsh_ss(load_u16(block));                                                   \
                if (type == 8) {                                                                         \
                    __m256i raw = _mm256_loadu_si256((const __m256i *)(block + 2));                      \
                    w[i][b] = _mm256_sign_epi8(raw, raw);                                                \
                    sign[i][b] = raw;                                                                    \
                    factor[i][b] = 0.0f;                                                                 \
                } else {                                                                                 \
                    __m128i raw = _mm_loadu_si128((const __m128i *)(block + (type == 3 ? 4 : 2)));       \
                    w[i][b] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low_mask); \
                    factor[i][b] = type == 3 ? _cvtsh_ss(load_u16(block + 2)) : -8.0f * dw[i][b];        \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
        for (int t = 0; t < tokens; t++) {                                                               \
            const int8_t *xq = q + (size_t)t * columns;                                                  \
            const float *xd = d + (size_t)t * blocks, *xds = ds + (size_t)t * blocks;                    \
            __m256 acc[KQ_ROWS];                                                                         \
            float extra[KQ_ROWS];                                                                        \
            for (int i = 0; i < KQ_ROWS; i++) { acc[i] = _mm256_setzero_ps(); extra[i] = 0; }            \
            for (int b = 0; b < blocks; b++) {                                                           \
                __m256i x = _mm256_loadu_si256((const __m256i *)(xq + b * 32));                          \
                float dx = xd[b], dsx = xds[b];                                                          \
                for (int i = 0; i < KQ_ROWS; i++) {                                                      \
                    __m256i lanes = DOT(w[i][b], type == 8 ? _mm256_sign_epi8(x, sign[i][b]) : x);       \
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_set1_ps(dw[i][b] * dx), acc[i]); \
                    extra[i] = fmaf(factor[i][b], dsx, extra[i]);                                        \
                }                                                                                        \
            }                                                                                            \
            for (int i = 0; i < nr; i++) {                                                               \
                float l[8];                                                                              \
                _mm256_storeu_ps(l, acc[i]);                                                             \
                y[(size_t)t * ldy + r0 + i] = sum_lanes(l) + extra[i];                                   \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
}                                                                                                        \
/* One token (decode): the same arithmetic straight from the weights, without the unpacked buffer. */  \
TARGET static inline __attribute__((always_inline)) void NAME##_one_impl(const int type,                 \
                        const uint8_t *weights, size_t row_bytes, int columns, int row_begin,            \
                        int row_end, const int8_t *q, const float *d, const float *ds, float *y) {       \
    int blocks = columns / 32, bsize = block_bytes(type);                                                \
    const __m256i low_mask = _mm256_set1_epi8(0x0F);                                                     \
    for (int r0 = row_begin; r0 < row_end; r0 += KQ_ROWS) {                                              \
        int nr = row_end - r0 < KQ_ROWS ? row_end - r0 : KQ_ROWS;                                        \
        const uint8_t *rows[KQ_ROWS];                                                                    \
        for (int i = 0; i < KQ_ROWS; i++) rows[i] = weights + (size_t)(r0 + (i < nr ? i : nr - 1)) * row_bytes; \
        __m256 acc[KQ_ROWS];                                                                             \
        float extra[KQ_ROWS];                                                                            \
        for (int i = 0; i < KQ_ROWS; i++) { acc[i] = _mm256_setzero_ps(); extra[i] = 0; }                \
        for (int b = 0; b < blocks; b++) {                                                               \
            __m256i x = _mm256_loadu_si256((const __m256i *)(q + b * 32));                               \
            float dx = d[b], dsx = ds[b];                                                                \
            for (int i = 0; i < KQ_ROWS; i++) {                                                          \
                const uint8_t *block = rows[i] + (size_t)b * bsize;                                      \
                float dwi = _cvtsh_ss(load_u16(block)), factor;                                          \
                __m256i wi, xi = x;                                                                      \
                if (type == 8) {                                                                         \
                    __m256i raw = _mm256_loadu_si256((const __m256i *)(block + 2));                      \
                    wi = _mm256_sign_epi8(raw, raw);                                                     \
                    xi = _mm256_sign_epi8(x, raw);                                                       \
                    factor = 0.0f;                                                                       \
                } else {                                                                                 \
                    __m128i raw = _mm_loadu_si128((const __m128i *)(block + (type == 3 ? 4 : 2)));       \
                    wi = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low_mask);      \
                    factor = type == 3 ? _cvtsh_ss(load_u16(block + 2)) : -8.0f * dwi;                   \
                }                                                                                        \
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(wi, xi)), _mm256_set1_ps(dwi * dx), acc[i]); \
                extra[i] = fmaf(factor, dsx, extra[i]);                                                  \
            }                                                                                            \
        }                                                                                                \
        for (int i = 0; i < nr; i++) {                                                                   \
            float l[8];                                                                                  \
            _mm256_storeu_ps(l, acc[i]);                                                                 \
            y[r0 + i] = sum_lanes(l) + extra[i];                                                         \
        }                                                                                                \
    }                                                                                                    \
}                                                                                                        \
/* One copy per weight format and path, so the format's branches fold away. */                         \
TARGET static void NAME(int type, const uint8_t *weights, size_t row_bytes, int columns, int row_begin,  \
                        int row_end, const int8_t *q, const float *d, const float *ds, int tokens,       \
                        float *y, size_t ldy) {                                                          \
    if (tokens == 1) {                                                                                   \
        switch (type) {                                                                                  \
        case 2: NAME##_one_impl(2, weights, row_bytes, columns, row_begin, row_end, q, d, ds, y); break; \
        case 3: NAME##_one_impl(3, weights, row_bytes, columns, row_begin, row_end, q, d, ds, y); break; \
        default: NAME##_one_impl(8, weights, row_bytes, columns, row_begin, row_end, q, d, ds, y); break; \
        }                                                                                                \
        return;                                                                                          \
    }                                                                                                    \
    switch (type) {                                                                                      \
    case 2: NAME##_impl(2, weights, row_bytes, columns, row_begin, row_end, q, d, ds, tokens, y, ldy); break; \
    case 3: NAME##_impl(3, weights, row_bytes, columns, row_begin, row_end, q, d, ds, tokens, y, ldy); break; \
    default: NAME##_impl(8, weights, row_bytes, columns, row_begin, row_end, q, d, ds, tokens, y, ldy); break; \
    }                                                                                                    \
}

KQ_TARGET_AVX2 static inline __m256i dot_avx2(__m256i w, __m256i x) {
    // u8 × s8 pairs → s16 (no saturation: |w| ≤ 128, |x| ≤ 127, 2·128·127 < 32768), then pairs → s32.
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

KQ_TARGET_VNNI static inline __m256i dot_vnni(__m256i w, __m256i x) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x);
}

KQ_DEFINE_MATMUL(matmul_avx2, KQ_TARGET_AVX2, dot_avx2)
KQ_DEFINE_MATMUL(matmul_avx512, KQ_TARGET_VNNI, dot_vnni)
#endif

static int detected_level(void) {
#if KQ_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) return 1;
#endif
    return 0;
}

// The CPU's level, and a lower one forced on the calling thread only: tests that compare the levels
// then run beside others without slowing them to the portable kernels.
static int detected = -1;
static _Thread_local int forced = -1;

int kq_instruction_level(void) {
    if (forced >= 0) return forced;
    if (detected < 0) detected = detected_level();
    return detected;
}

int kq_set_instruction_level(int wanted) {
    int best = detected_level();
    forced = wanted < best ? (wanted < 0 ? 0 : wanted) : best;
    return forced;
}

void kq_matmul(int type, const void *weights, size_t row_bytes, int columns, int row_begin, int row_end,
               const int8_t *q, const float *d, const float *ds, int tokens, float *y, size_t ldy) {
    KQ_DISPATCH(matmul, type, weights, row_bytes, columns, row_begin, row_end, q, d, ds, tokens, y, ldy)
}
