#include "common.h"

// Attention over the KV cache for the query heads that share one kv head: their scores against the
// key tiles, and their probability-weighted sums of the values, reading each key and value once for
// the group. Why C: the Swift targets are compiled for Haswell (AVX2), so the SIMD16 loops that did
// this ran on 256-bit halves; this body is also compiled for AVX-512 and chosen at run time, which
// measured faster (docs/measurements.md).
//
// One body per kernel, compiled for the baseline, AVX2 and AVX-512, with every multiply-add an fmaf
// (exact on each) in a fixed order, so all three give the same bits, and a query's result never
// depends on which other queries are computed with it.

// Query vectors (heads, or heads × tokens of a multi-token item) computed in one pass over the keys
// and values. Up to 4 take 3 score tiles and 64 value lanes at a time, more take fewer tiles and lanes
// so that the sums still fit in the 32 vector registers, and each key and value is read once for all
// of them. Every score and sum is the same operations in any pass.
enum { MAX_GROUP = 8 };
// Key tiles whose scores are computed together (see scores_tiles): three were fastest, four run out of
// registers (docs/measurements.md); same bits in every case.
#ifndef SCORE_TILES
#define SCORE_TILES 3
#endif

// Software prefetch distance of the key tiles and value rows, in bytes: 12 KiB is the next three key
// tiles (16 positions × 64 floats each), which the scores read together, and 192 positions of a
// 32-lane value slice. The cache is read once per step, position after position, and each key tile is
// a 4 KiB page of its own, where the hardware prefetchers start over (docs/measurements.md). Prefetch
// never changes a result.
#ifndef KQ_ATTENTION_PREFETCH
#define KQ_ATTENTION_PREFETCH 12288
#endif

// Values are stored as IEEE half floats (KVCache). Converting 16 of them to floats is exact, so the
// three builds' loaders give the same floats.
static inline __attribute__((always_inline)) void halves16_portable(const uint16_t *h, float *out) {
    for (int l = 0; l < 16; l++) out[l] = half_to_float(h[l]);
}
#if KQ_X86
KQ_TARGET_AVX2 static inline __attribute__((always_inline)) void halves16_avx2(const uint16_t *h, float *out) {
    _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)));
    _mm256_storeu_ps(out + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + 8))));
}
KQ_TARGET_VNNI static inline __attribute__((always_inline)) void halves16_avx512(const uint16_t *h, float *out) {
    _mm512_storeu_ps(out, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h)));
}
#endif

// For each of `heads` queries (head_size floats apart) that share a kv head: scores[h][j] =
// (q_h · k_j) · scale for j < count, rows `scores_stride` apart; keys in KVCache's tiles of 16
// positions ([d][16]), each tile row loaded once for all the heads. Two chains per head (d even, d odd),
// added at the end. Writes whole tiles (count rounded up to 16). `heads` is a constant after inlining.
// `ntiles` tiles are computed together (a constant too), so each broadcast query element serves all
// of them; every score is the same sequence of operations whatever `ntiles` is.
static inline __attribute__((always_inline)) void scores_tiles(const int heads, const int ntiles, const float *q,
                                                               const float *k, int head_size, float scale,
                                                               float *scores, size_t scores_stride) {
    float even[MAX_GROUP][SCORE_TILES][16] = {{{0}}}, odd[MAX_GROUP][SCORE_TILES][16] = {{{0}}};
    for (int d = 0; d < head_size; d += 2) {
        for (int b = 0; b < ntiles; b++) {
            const float *kb = k + (size_t)b * 16 * (size_t)head_size;
            // Rows d and d + 1 of the tile: two cache lines.
            __builtin_prefetch((const char *)(kb + 16 * d) + KQ_ATTENTION_PREFETCH);
            __builtin_prefetch((const char *)(kb + 16 * d) + KQ_ATTENTION_PREFETCH + 64);
            for (int l = 0; l < 16; l++) {
                float k0 = kb[16 * d + l], k1 = kb[16 * d + 16 + l];
                for (int h = 0; h < heads; h++) {
                    even[h][b][l] = fmaf(q[(size_t)h * head_size + d], k0, even[h][b][l]);
                    odd[h][b][l] = fmaf(q[(size_t)h * head_size + d + 1], k1, odd[h][b][l]);
                }
            }
        }
    }
    for (int h = 0; h < heads; h++) {
        for (int b = 0; b < ntiles; b++) {
            for (int l = 0; l < 16; l++) scores[h * scores_stride + 16 * b + l] = (even[h][b][l] + odd[h][b][l]) * scale;
        }
    }
}

static inline __attribute__((always_inline)) void scores_body(const int heads, const float *q, const float *tiles,
                                                              int count, int head_size, float scale, float *scores,
                                                              size_t scores_stride) {
    // Accumulators: 2 · heads · tiles registers of 16 floats.
    const int together = heads <= 4 ? SCORE_TILES : heads <= 6 ? 2 : 1;
    int total = (count + 15) / 16, tile = 0;
    for (; tile + together <= total; tile += together) {
        scores_tiles(heads, together, q, tiles + (size_t)tile * 16 * (size_t)head_size, head_size, scale,
                     scores + 16 * tile, scores_stride);
    }
    for (; tile < total; tile++) {
        scores_tiles(heads, 1, q, tiles + (size_t)tile * 16 * (size_t)head_size, head_size, scale, scores + 16 * tile,
                     scores_stride);
    }
}

// For each of `heads` probability rows (`p_stride` apart): out[h][i] += Σ_j p[h][j] · v_j[i] for
// i < head_size, in order of j, values (halves) `stride` apart, each value row loaded once for all the
// heads; `width` output lanes per head stay in registers over all positions. Adding to `out` lets a
// caller split the positions: calls over j < c, then c ≤ j < count, give the bits of one call. A
// macro, one per build, for the build's half-float loader.
#define KQ_VALUES_BODY(SUFFIX, TARGET)                                                                       \
TARGET static inline __attribute__((always_inline)) void                                                     \
values_body_##SUFFIX(const int heads, const int width, const float *p, size_t p_stride,                      \
                     const uint16_t *values, size_t stride, int count, int head_size, float *out) {          \
    for (int strip = 0; strip < head_size; strip += width) {                                                 \
        float acc[MAX_GROUP][64];                                                                            \
        for (int h = 0; h < heads; h++) memcpy(acc[h], out + (size_t)h * head_size + strip, (size_t)width * 4); \
        for (int j = 0; j < count; j++) {                                                                    \
            const uint16_t *v = values + (size_t)j * stride + strip;                                         \
            for (int b = 0; b < width * 2; b += 64) __builtin_prefetch((const char *)v + KQ_ATTENTION_PREFETCH + b); \
            float value[64];                                                                                 \
            for (int l = 0; l < width; l += 16) halves16_##SUFFIX(v + l, value + l);                         \
            for (int l = 0; l < width; l++) {                                                                \
                for (int h = 0; h < heads; h++) acc[h][l] = fmaf(p[h * p_stride + j], value[l], acc[h][l]);  \
            }                                                                                                \
        }                                                                                                    \
        for (int h = 0; h < heads; h++) memcpy(out + (size_t)h * head_size + strip, acc[h], (size_t)width * 4); \
    }                                                                                                        \
}

// Vectors of the pass that starts at vector `h0`: the group in as few passes as MAX_GROUP allows, of
// near-equal sizes (12 vectors: 6 and 6, which keep more score tiles and value lanes in the registers
// than 8 and 4; docs/measurements.md).
static inline int slice_size(int heads, int h0) {
    int passes = (heads - h0 + MAX_GROUP - 1) / MAX_GROUP;
    return (heads - h0 + passes - 1) / passes;
}

// The cases of `values` for `N` vectors: strips of 16 or 32 lanes, and of 64 up to 4 vectors (the sums
// of more would not fit in the registers).
#define KQ_VALUES_CASES(SUFFIX, N)                                                                           \
    case N * 4: values_body_##SUFFIX(N, 16, ph, p_stride, values, stride, count, head_size, oh); break;     \
    case N * 4 + 1: values_body_##SUFFIX(N, 32, ph, p_stride, values, stride, count, head_size, oh); break;
#define KQ_VALUES_CASES_WIDE(SUFFIX, N)                                                                      \
    KQ_VALUES_CASES(SUFFIX, N)                                                                               \
    case N * 4 + 2: values_body_##SUFFIX(N, 64, ph, p_stride, values, stride, count, head_size, oh); break;

// The group in slices of at most MAX_GROUP heads (slice_size), each slice with a constant head count.
#define KQ_DEFINE_ATTENTION(SUFFIX, TARGET)                                                                  \
KQ_VALUES_BODY(SUFFIX, TARGET)                                                                               \
TARGET static void scores_##SUFFIX(const float *q, int heads, const float *tiles, int count, int head_size,  \
                                   float scale, float *scores, size_t scores_stride) {                       \
    for (int h0 = 0, n; h0 < heads; h0 += n) {                                                               \
        n = slice_size(heads, h0);                                                                           \
        const float *qh = q + (size_t)h0 * head_size;                                                        \
        float *sh = scores + (size_t)h0 * scores_stride;                                                     \
        switch (n) {                                                                                         \
        case 1: scores_body(1, qh, tiles, count, head_size, scale, sh, scores_stride); break;                 \
        case 2: scores_body(2, qh, tiles, count, head_size, scale, sh, scores_stride); break;                 \
        case 3: scores_body(3, qh, tiles, count, head_size, scale, sh, scores_stride); break;                 \
        case 4: scores_body(4, qh, tiles, count, head_size, scale, sh, scores_stride); break;                 \
        case 5: scores_body(5, qh, tiles, count, head_size, scale, sh, scores_stride); break;                 \
        case 6: scores_body(6, qh, tiles, count, head_size, scale, sh, scores_stride); break;                 \
        case 7: scores_body(7, qh, tiles, count, head_size, scale, sh, scores_stride); break;                 \
        default: scores_body(8, qh, tiles, count, head_size, scale, sh, scores_stride); break;                \
        }                                                                                                    \
    }                                                                                                        \
}                                                                                                            \
TARGET static void values_##SUFFIX(const float *p, size_t p_stride, int heads, const uint16_t *values,       \
                                   size_t stride, int count, int head_size, float *out) {                    \
    for (int h0 = 0, n; h0 < heads; h0 += n) {                                                               \
        n = slice_size(heads, h0);                                                                           \
        const float *ph = p + (size_t)h0 * p_stride;                                                         \
        float *oh = out + (size_t)h0 * head_size;                                                            \
        /* the widest strip whose sums fit in the registers: 64 lanes up to 4 vectors, then 32 */           \
        int width = n <= 4 && head_size % 64 == 0 ? 64 : head_size % 32 == 0 ? 32 : 16;                     \
        switch (n * 4 + width / 32) {                                                                        \
        KQ_VALUES_CASES_WIDE(SUFFIX, 1) KQ_VALUES_CASES_WIDE(SUFFIX, 2) KQ_VALUES_CASES_WIDE(SUFFIX, 3)     \
        KQ_VALUES_CASES_WIDE(SUFFIX, 4) KQ_VALUES_CASES(SUFFIX, 5) KQ_VALUES_CASES(SUFFIX, 6)                    \
        KQ_VALUES_CASES(SUFFIX, 7) KQ_VALUES_CASES(SUFFIX, 8)                                                \
        }                                                                                                    \
    }                                                                                                        \
}

KQ_DEFINE_ATTENTION(portable, )
#if KQ_X86
KQ_DEFINE_ATTENTION(avx2, KQ_TARGET_AVX2)
KQ_DEFINE_ATTENTION(avx512, KQ_TARGET_VNNI)
#endif

void kq_attention_scores(const float *q, int heads, const float *key_tiles, int count, int head_size, float scale,
                         float *scores, size_t scores_stride) {
    KQ_DISPATCH(scores, q, heads, key_tiles, count, head_size, scale, scores, scores_stride)
}

void kq_attention_values(const float *p, size_t p_stride, int heads, const uint16_t *values, size_t stride, int count,
                         int head_size, float *out) {
    KQ_DISPATCH(values, p, p_stride, heads, values, stride, count, head_size, out)
}
