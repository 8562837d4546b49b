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
                                                                float *d, float *ds, int32_t *half_sums) {
    int blocks = columns / 32;
    for (int t = 0; t < tokens; t++) {
        for (int b = 0; b < blocks; b++) {
            const float *v = x + (size_t)t * columns + b * 32;
            int8_t *out = q + (size_t)t * columns + b * 32;
            float inverse, scale = block_scale(v, 127.0f, &inverse);
            int sum[2] = {0, 0};
            for (int i = 0; i < 32; i++) {
                int value = (int)nearbyintf(v[i] * inverse);
                out[i] = (int8_t)value;
                sum[i / 16] += value;
            }
            d[(size_t)t * blocks + b] = scale;
            ds[(size_t)t * blocks + b] = scale * (float)(sum[0] + sum[1]);
            half_sums[2 * ((size_t)t * blocks + b)] = sum[0];
            half_sums[2 * ((size_t)t * blocks + b) + 1] = sum[1];
        }
    }
}

static void quantize_portable(const float *x, int columns, int tokens, int8_t *q, float *d, float *ds,
                              int32_t *half_sums) {
    quantize_body(x, columns, tokens, q, d, ds, half_sums);
}

#if KQ_X86
KQ_TARGET_AVX2 static void quantize_avx2(const float *x, int columns, int tokens, int8_t *q, float *d, float *ds,
                                         int32_t *half_sums) {
    quantize_body(x, columns, tokens, q, d, ds, half_sums);
}

// The same arithmetic as quantize_body with explicit vectors: left to itself the compiler vectorised
// across blocks with gathers, and quantisation took 3.9% of an 8-token forward's samples in perf, all
// of it on the calling thread while the worker waited. Blocks are contiguous across tokens (columns
// is a multiple of 32). cvtps_epi32 rounds in the current mode like nearbyintf, max is
// order-independent and the int32 sum exact, so the results equal the portable ones bit for bit.
KQ_TARGET_VNNI static void quantize_avx512(const float *x, int columns, int tokens, int8_t *q, float *d, float *ds,
                                           int32_t *half_sums) {
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
        int32_t sum_a = _mm512_reduce_add_epi32(qa), sum_b = _mm512_reduce_add_epi32(qb);
        d[i] = scale;
        ds[i] = scale * (float)(sum_a + sum_b);
        half_sums[2 * i] = sum_a;
        half_sums[2 * i + 1] = sum_b;
    }
}
#endif

void kq_quantize(const float *x, int columns, int tokens, int8_t *q, float *d, float *ds, int32_t *half_sums) {
    KQ_DISPATCH(quantize, x, columns, tokens, q, d, ds, half_sums)
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
// Weight blocks. Products run over blocks of 32 columns, the activations' quantisation block. Of
// block b of a row, every format gives the kernels: 32 integers for the exact integer dot product
// (unsigned formats: the stored values; signed ones: their magnitudes, the signs moved onto the
// activations), the float scale of lanes 0–3 and of lanes 4–7 (columns 0–15 and 16–31, which the
// K-quants with 16-column sub-blocks scale apart), and the factor of the activations' scaled sum
// d_x·Σq_x that the format adds:
//   Q4_0  [f16 d][16 B nibbles]                       w = d·(n − 8)            extra −8·d
//   Q4_1  [f16 d][f16 m][16 B nibbles]                w = d·n + m              extra m
//   Q5_0  [f16 d][32 high bits][16 B nibbles]         w = d·(n − 16)           extra −16·d
//   Q5_1  [f16 d][f16 m][32 high bits][16 B nibbles]  w = d·n + m              extra m
//   Q8_0  [f16 d][32 × i8]                            w = d·i                  signed
//   Q4_K  256 columns: [f16 d][f16 dmin][12 B of 6-bit scales s_j and mins m_j][128 B nibbles]
//                                                     w = d·s_j·n − dmin·m_j   extra −dmin·m_j
//   Q5_K  Q4_K with [32 B high bits] before the nibbles
//   Q3_K  256 columns: [32 B high bits][64 B 2-bit][12 B of 6-bit scales s_k][f16 d]
//                                                     w = d·(s_k − 32)·i       signed, i in −4…3
//   Q6_K  256 columns: [128 B nibbles][64 B 2-bit highs][16 × i8 scales s_k][f16 d]
//                                                     w = d·s_k·i              signed, i in −32…31
// (j: the block's 32-column sub-block, k: its 16-column ones.) Q2_K's minimums are per 16 columns,
// which would need per-half activation sums; it takes the float path.

#define KQ_HALF_PORTABLE(p) half_to_float(load_u16(p))

// The float part of block b of a row: lane scales and the extra factor. HALF converts an f16.
#define KQ_DEFINE_BLOCK_FLOATS(NAME, TARGET, HALF)                                                          \
TARGET static inline __attribute__((always_inline)) void NAME(int type, const uint8_t *row, int b,           \
                                                              float *low, float *high, float *extra) {       \
    const uint8_t *k;                                                                                          \
    float d;                                                                                                   \
    *extra = 0;                                                                                                \
    switch (type) {                                                                                            \
    case 2: d = HALF(row + 18 * (size_t)b); *low = *high = d; *extra = -8.0f * d; break;                      \
    case 3: k = row + 20 * (size_t)b; *low = *high = HALF(k); *extra = HALF(k + 2); break;                     \
    case 6: d = HALF(row + 22 * (size_t)b); *low = *high = d; *extra = -16.0f * d; break;                     \
    case 7: k = row + 24 * (size_t)b; *low = *high = HALF(k); *extra = HALF(k + 2); break;                     \
    case 8: *low = *high = HALF(row + 34 * (size_t)b); break;                                                  \
    case 11: {                                                                                                 \
        k = row + 110 * (size_t)(b / 8);                                                                       \
        int j = b % 8, s = 8 * (j / 4) + 2 * (j % 4);                                                         \
        d = HALF(k + 108);                                                                                     \
        *low = d * (float)q3_k_scale(k + 96, s);                                                               \
        *high = d * (float)q3_k_scale(k + 96, s + 1);                                                          \
        break;                                                                                                 \
    }                                                                                                          \
    case 12: case 13: {                                                                                        \
        k = row + (type == 12 ? 144 : 176) * (size_t)(b / 8);                                                  \
        uint8_t scale, min;                                                                                    \
        scale_min_k4(b % 8, k + 4, &scale, &min);                                                              \
        *low = *high = HALF(k) * (float)scale;                                                                 \
        *extra = -(HALF(k + 2) * (float)min);                                                                  \
        break;                                                                                                 \
    }                                                                                                          \
    case 14: {                                                                                                 \
        k = row + 210 * (size_t)(b / 8);                                                                       \
        int j = b % 8;                                                                                         \
        const int8_t *scales = (const int8_t *)(k + 192) + 8 * (j / 4) + 2 * (j % 4);                         \
        d = HALF(k + 208);                                                                                     \
        *low = d * (float)scales[0];                                                                           \
        *high = d * (float)scales[1];                                                                          \
        break;                                                                                                 \
    }                                                                                                          \
    default: *low = *high = 0; break;                                                                          \
    }                                                                                                          \
}

KQ_DEFINE_BLOCK_FLOATS(block_floats_portable, , KQ_HALF_PORTABLE)

// Sums eight float lanes in a fixed order: (0+4, 1+5, 2+6, 3+7), then pairs, then the last two.
static inline float sum_lanes(const float l[8]) {
    float a0 = l[0] + l[4], a1 = l[1] + l[5], a2 = l[2] + l[6], a3 = l[3] + l[7];
    float b0 = a0 + a2, b1 = a1 + a3;
    return b0 + b1;
}

// Per (row, token), block after block: lane l of the exact integer dot product (columns 4l…4l+3)
// into acc[l] = fma(lane, scale_l · d_x, acc[l]), then, for unsigned formats, extra = fma(factor,
// d_x·Σq_x, extra); the result is sum_lanes(acc) + extra. The vector builds do the same operations.
static void matmul_portable(int type, const uint8_t *weights, size_t row_bytes, int columns, int row_begin, int row_end,
                            const int8_t *q, const float *d, const float *ds, int tokens, float *y, size_t ldy) {
    int blocks = columns / 32;
    for (int r = row_begin; r < row_end; r++) {
        const uint8_t *row = weights + (size_t)r * row_bytes;
        for (int t = 0; t < tokens; t++) {
            float acc[8] = {0};
            float extra = 0;
            for (int b = 0; b < blocks; b++) {
                int v[32];
                block_integers_portable(type, row, b, v);
                float low, high, factor;
                block_floats_portable(type, row, b, &low, &high, &factor);
                const int8_t *x = q + (size_t)t * columns + b * 32;
                float dx = d[(size_t)t * blocks + b];
                for (int l = 0; l < 8; l++) {
                    int32_t s = 0;
                    for (int i = 4 * l; i < 4 * l + 4; i++) s += v[i] * (int32_t)x[i];
                    acc[l] = fmaf((float)s, (l < 4 ? low : high) * dx, acc[l]);
                }
                if (!signed_format(type)) extra = fmaf(factor, ds[(size_t)t * blocks + b], extra);
            }
            y[(size_t)t * ldy + r] = sum_lanes(acc) + extra;
        }
    }
}

#if KQ_X86
// ---------------------------------------------------------------------------------------------
// x86: a block's integers as 32 unsigned bytes in a ymm register, activations signed.

#define KQ_HALF_F16C(p) _cvtsh_ss(load_u16(p))

KQ_TARGET_AVX2 static inline __m256i shift_right_16(__m256i x, int count) {
    return _mm256_srl_epi16(x, _mm_cvtsi32_si128(count));
}

// Byte i is 0xFF where bit i of `bits` is set, else 0.
KQ_TARGET_AVX2 static inline __m256i bits_to_bytes(uint32_t bits) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
}

// The integers of block b as unsigned bytes; for signed formats their magnitudes, with the signed
// values in *sign (for _mm256_sign_epi8 of the activations).
KQ_TARGET_AVX2 static inline __attribute__((always_inline)) __m256i block_bytes_x86(int type, const uint8_t *row, int b,
                                                                                 __m256i *sign) {
    const __m256i low_mask = _mm256_set1_epi8(0x0F);
    switch (type) {
    case 2: case 3: case 6: case 7: {
        const uint8_t *k = row + (size_t)b * (type == 2 ? 18 : type == 3 ? 20 : type == 6 ? 22 : 24);
        __m128i raw = _mm_loadu_si128((const __m128i *)(k + (type == 2 ? 2 : type == 3 ? 4 : type == 6 ? 6 : 8)));
        __m256i w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low_mask);
        if (type == 6 || type == 7) {
            uint32_t high;
            memcpy(&high, k + (type == 6 ? 2 : 4), 4);
            w = _mm256_or_si256(w, _mm256_and_si256(bits_to_bytes(high), _mm256_set1_epi8(0x10)));
        }
        return w;
    }
    case 8: {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(row + 34 * (size_t)b + 2));
        *sign = raw;
        return _mm256_sign_epi8(raw, raw);
    }
    case 11: {
        const uint8_t *k = row + 110 * (size_t)(b / 8);
        int j = b % 8, h = j / 4, sub = j % 4;
        __m256i low = _mm256_and_si256(shift_right_16(_mm256_loadu_si256((const __m256i *)(k + 32 + 32 * h)), 2 * sub),
                                       _mm256_set1_epi8(3));
        __m256i high = _mm256_and_si256(shift_right_16(_mm256_loadu_si256((const __m256i *)k), 4 * h + sub), _mm256_set1_epi8(1));
        __m256i v = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(high, 2)), _mm256_set1_epi8(4));
        *sign = v;
        return _mm256_sign_epi8(v, v);
    }
    case 12: case 13: {
        const uint8_t *k = row + (type == 12 ? 144 : 176) * (size_t)(b / 8);
        int j = b % 8;
        __m256i nibbles = _mm256_loadu_si256((const __m256i *)(k + (type == 12 ? 16 : 48) + 32 * (j / 2)));
        __m256i w = _mm256_and_si256(shift_right_16(nibbles, 4 * (j % 2)), low_mask);
        if (type == 13) {
            __m256i high = _mm256_and_si256(shift_right_16(_mm256_loadu_si256((const __m256i *)(k + 16)), j), _mm256_set1_epi8(1));
            w = _mm256_or_si256(w, _mm256_slli_epi16(high, 4));
        }
        return w;
    }
    case 14: {
        const uint8_t *k = row + 210 * (size_t)(b / 8);
        int j = b % 8, h = j / 4, sub = j % 4;
        __m256i low = _mm256_and_si256(shift_right_16(_mm256_loadu_si256((const __m256i *)(k + 64 * h + 32 * (sub & 1))),
                                                      4 * (sub >> 1)), low_mask);
        __m256i high = _mm256_and_si256(shift_right_16(_mm256_loadu_si256((const __m256i *)(k + 128 + 32 * h)), 2 * sub),
                                        _mm256_set1_epi8(3));
        __m256i v = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(high, 4)), _mm256_set1_epi8(32));
        *sign = v;
        return _mm256_sign_epi8(v, v);
    }
    default:
        return _mm256_setzero_si256();
    }
}

KQ_DEFINE_BLOCK_FLOATS(block_floats_x86, KQ_TARGET_AVX2, KQ_HALF_F16C)

// The scale of a block's lanes times the activations' d_x: one broadcast, or two halves.
KQ_TARGET_AVX2 static inline __attribute__((always_inline)) __m256 lane_scales(int type, float low, float high, float dx) {
    if (half_scales(type)) return _mm256_mul_ps(_mm256_set_m128(_mm_set1_ps(high), _mm_set1_ps(low)), _mm256_set1_ps(dx));
    return _mm256_set1_ps(low * dx);
}

// Rows are taken KQ_ROWS at a time: their blocks are unpacked once into a small buffer that stays in
// L1 (32 unsigned bytes, the signs, the scales and per-block factor per block), then every token
// streams through them with KQ_ROWS independent accumulator chains. Each (row, token) pair goes
// through the same sequence of operations whatever the number of tokens.
#define KQ_ROWS 4

#define KQ_DEFINE_MATMUL(NAME, TARGET, DOT)                                                              \
TARGET static inline __attribute__((always_inline)) void NAME##_impl(const int type, const uint8_t *weights, \
                        size_t row_bytes, int columns, int row_begin, int row_end, const int8_t *q,      \
                        const float *d, const float *ds, int tokens, float *y, size_t ldy) {             \
    const int is_signed = signed_format(type), halves = half_scales(type);                               \
    int blocks = columns / 32;                                                                           \
    __m256i w[KQ_ROWS][blocks], sign[is_signed ? KQ_ROWS : 1][is_signed ? blocks : 1];                   \
    float low[KQ_ROWS][blocks], high[halves ? KQ_ROWS : 1][halves ? blocks : 1], factor[KQ_ROWS][blocks]; \
    for (int r0 = row_begin; r0 < row_end; r0 += KQ_ROWS) {                                              \
        int nr = row_end - r0 < KQ_ROWS ? row_end - r0 : KQ_ROWS;                                        \
        for (int i = 0; i < KQ_ROWS; i++) {                                                              \
            /* Rows past the end repeat the last row; their results are not stored. */                  \
            const uint8_t *row = weights + (size_t)(r0 + (i < nr ? i : nr - 1)) * row_bytes;             \
            for (int b = 0; b < blocks; b++) {                                                           \
                __m256i s = _mm256_setzero_si256();                                                      \
                float h;                                                                                 \
                w[i][b] = block_bytes_x86(type, row, b, &s);                                             \
                block_floats_x86(type, row, b, &low[i][b], &h, &factor[i][b]);                           \
                if (is_signed) sign[i][b] = s;                                                           \
                if (halves) high[i][b] = h;                                                              \
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
                    __m256i lanes = DOT(w[i][b], is_signed ? _mm256_sign_epi8(x, sign[i][b]) : x);       \
                    __m256 scale = lane_scales(type, low[i][b], halves ? high[i][b] : 0, dx);            \
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), scale, acc[i]);                  \
                    if (!is_signed) extra[i] = fmaf(factor[i][b], dsx, extra[i]);                        \
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
    const int is_signed = signed_format(type);                                                           \
    int blocks = columns / 32;                                                                           \
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
                __m256i s = _mm256_setzero_si256();                                                      \
                float low, high, factor;                                                                 \
                __m256i wi = block_bytes_x86(type, rows[i], b, &s);                                      \
                block_floats_x86(type, rows[i], b, &low, &high, &factor);                                \
                __m256i lanes = DOT(wi, is_signed ? _mm256_sign_epi8(x, s) : x);                         \
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), lane_scales(type, low, high, dx), acc[i]); \
                if (!is_signed) extra[i] = fmaf(factor, dsx, extra[i]);                                  \
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
    switch (type) {                                                                                      \
    KQ_MATMUL_CASE(NAME, 2) KQ_MATMUL_CASE(NAME, 3) KQ_MATMUL_CASE(NAME, 6) KQ_MATMUL_CASE(NAME, 7)      \
    KQ_MATMUL_CASE(NAME, 8) KQ_MATMUL_CASE(NAME, 11) KQ_MATMUL_CASE(NAME, 12) KQ_MATMUL_CASE(NAME, 13)   \
    KQ_MATMUL_CASE(NAME, 14)                                                                             \
    default: break;                                                                                      \
    }                                                                                                    \
}

#define KQ_MATMUL_CASE(NAME, TYPE)                                                                       \
    case TYPE:                                                                                           \
        if (tokens == 1) NAME##_one_impl(TYPE, weights, row_bytes, columns, row_begin, row_end, q, d, ds, y); \
        else NAME##_impl(TYPE, weights, row_bytes, columns, row_begin, row_end, q, d, ds, tokens, y, ldy); \
        break;

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
