#include "common.h"

// Q4_0 / Q4_1 weights repacked 16 rows at a time (see KernelsC.h for the layout). One 32-bit lane per
// row: a vpdpbusd multiplies 4 weights of each of the 16 rows by the same 4 activations (broadcast), so
// a block of 32 columns takes 8 of them, and the float work (conversion, scale, the per-block term) is
// done once per 16 rows instead of once per row. Measured with `kangaroo bench speed` against the
// row-at-a-time kernels it replaces: see the kernels issue note.
//
// Per (row, token) every path does exactly this, block after block:
//   s = Σ_{c < 32} n_c · x_c            (exact, in int32)
//   acc = fma((float)s, d_w · d_x, acc)
//   acc = fma(m_w, d_x · Σx, acc)        (Q4_1: m_w = m; Q4_0: m_w = −8 · d_w)
// so a token's result is the same bits alone or in a batch, on every instruction level.

enum { GROUP = 16 };

static inline int header_bytes(int type) { return type == 3 ? 64 : 32; }
static inline int group_block_bytes(int type) { return header_bytes(type) + 256; }
static inline int source_block_bytes(int type) { return type == 3 ? 20 : 18; }

size_t kq_packed_size(int type, int rows, int columns) {
    return (size_t)((rows + GROUP - 1) / GROUP) * (size_t)(columns / 32) * (size_t)group_block_bytes(type);
}

void kq_pack(int type, const void *weights, size_t row_bytes, int rows, int columns, void *packed) {
    int groups = (rows + GROUP - 1) / GROUP, blocks = columns / 32, header = header_bytes(type);
    size_t gbytes = (size_t)group_block_bytes(type);
    memset(packed, 0, kq_packed_size(type, rows, columns));  // rows past the end: all zero
    for (int g = 0; g < groups; g++) {
        for (int b = 0; b < blocks; b++) {
            uint8_t *out = (uint8_t *)packed + ((size_t)g * blocks + b) * gbytes;
            for (int r = 0; r < GROUP && g * GROUP + r < rows; r++) {
                const uint8_t *block = (const uint8_t *)weights + (size_t)(g * GROUP + r) * row_bytes
                                     + (size_t)b * source_block_bytes(type);
                memcpy(out + 2 * r, block, 2);                         // d
                if (type == 3) memcpy(out + 32 + 2 * r, block + 2, 2);  // m
                const uint8_t *nibbles = block + (type == 3 ? 4 : 2);
                for (int k = 0; k < 4; k++) memcpy(out + header + 64 * k + 4 * r, nibbles + 4 * k, 4);
            }
        }
    }
}

static void packed_portable(int type, const uint8_t *packed, int rows, int columns, int group_begin, int group_end,
                            const int8_t *q, const float *d, const float *ds, int tokens, float *y, size_t ldy) {
    int blocks = columns / 32, header = header_bytes(type), gbytes = group_block_bytes(type);
    for (int g = group_begin; g < group_end; g++) {
        int nr = rows - g * GROUP < GROUP ? rows - g * GROUP : GROUP;
        for (int t = 0; t < tokens; t++) {
            float acc[GROUP] = {0};
            for (int b = 0; b < blocks; b++) {
                const uint8_t *base = packed + ((size_t)g * blocks + b) * gbytes;
                const int8_t *x = q + (size_t)t * columns + b * 32;
                float dx = d[(size_t)t * blocks + b], dsx = ds[(size_t)t * blocks + b];
                for (int r = 0; r < GROUP; r++) {
                    int32_t s = 0;
                    for (int k = 0; k < 4; k++) {
                        for (int j = 0; j < 4; j++) {
                            uint8_t byte = base[header + 64 * k + 4 * r + j];
                            s += (byte & 0x0F) * x[4 * k + j] + (byte >> 4) * x[16 + 4 * k + j];
                        }
                    }
                    float dw = half_to_float(load_u16(base + 2 * r));
                    float m = type == 3 ? half_to_float(load_u16(base + 32 + 2 * r)) : -8.0f * dw;
                    acc[r] = fmaf((float)s, dw * dx, acc[r]);
                    acc[r] = fmaf(m, dsx, acc[r]);
                }
            }
            for (int r = 0; r < nr; r++) y[(size_t)t * ldy + (size_t)g * GROUP + r] = acc[r];
        }
    }
}

#if KQ_X86
// Software prefetch distance in bytes ahead of the block being read (a prefetch past the end of the
// matrix is harmless: prefetches do not fault): 4 KiB, and 8 KiB for one token, which goes through a
// block fastest. One token also stops prefetching at the end of its rows (`end`): what lies beyond is
// usually another thread's share, or another matrix's rows when the feed-forward job runs gate and up
// rows by turns. Each distance was measured (docs/measurements.md).
static inline int prefetch_distance(int tokens) { return tokens == 1 ? 8192 : 4096; }

static inline int32_t load_i32(const int8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

// Up to 8 tokens against one group of 16 rows; `nt` is a constant after inlining, so the accumulators
// stay in registers. The unpacked weights of a block (8 zmm) are shared by the tokens.
KQ_TARGET_VNNI static inline __attribute__((always_inline)) void
tile_vnni(const int type, const int nt, const uint8_t *group, int blocks, const int8_t *q, int columns,
          const float *d, const float *ds, float *y, size_t ldy, int nr, const uint8_t *end) {
    const int header = header_bytes(type), gbytes = group_block_bytes(type);
    const __m512i mask = _mm512_set1_epi8(0x0F);
    __m512 acc[8];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < blocks; b++) {
        const uint8_t *base = group + (size_t)b * gbytes;
        if (nt > 1 || base + prefetch_distance(nt) < end)
            for (int line = 0; line < gbytes; line += 64) _mm_prefetch((const char *)(base + prefetch_distance(nt) + line), _MM_HINT_T0);
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)base));
        __m512 m = type == 3 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(base + 32)))
                             : _mm512_mul_ps(dw, _mm512_set1_ps(-8.0f));
        __m512i lo[4], hi[4];
        for (int k = 0; k < 4; k++) {
            __m512i raw = _mm512_loadu_si512((const void *)(base + header + 64 * k));
            lo[k] = _mm512_and_si512(raw, mask);
            hi[k] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask);
        }
        for (int t = 0; t < nt; t++) {
            const int8_t *x = q + (size_t)t * columns + b * 32;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int k = 0; k < 4; k++) {
                s0 = _mm512_dpbusd_epi32(s0, lo[k], _mm512_set1_epi32(load_i32(x + 4 * k)));
                s1 = _mm512_dpbusd_epi32(s1, hi[k], _mm512_set1_epi32(load_i32(x + 16 + 4 * k)));
            }
            __m512 s = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
            acc[t] = _mm512_fmadd_ps(s, _mm512_mul_ps(dw, _mm512_set1_ps(d[(size_t)t * blocks + b])), acc[t]);
            acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(ds[(size_t)t * blocks + b]), acc[t]);
        }
    }
    __mmask16 store = (__mmask16)((1u << nr) - 1);
    for (int t = 0; t < nt; t++) _mm512_mask_storeu_ps(y + (size_t)t * ldy, store, acc[t]);
}

// The AVX2 form of the same arithmetic: each group is two halves of 8 rows in ymm registers. maddubs
// gives pairs of products in 16 bits, the lo and hi pairs are added (at most 4 · 15 · 128 = 7680: no
// saturation), and madd widens to each row's int32 sum, so the sums are exactly those of VNNI. No
// software prefetch here (`end` is unused).
KQ_TARGET_AVX2 static inline __attribute__((always_inline)) void
tile_avx2(const int type, const int nt, const uint8_t *group, int blocks, const int8_t *q, int columns,
          const float *d, const float *ds, float *y, size_t ldy, int nr, const uint8_t *end) {
    const int header = header_bytes(type), gbytes = group_block_bytes(type);
    const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    for (int h = 0; h < 2; h++) {
        __m256 acc[8];
        for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
        for (int b = 0; b < blocks; b++) {
            const uint8_t *base = group + (size_t)b * gbytes;
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(base + 16 * h)));
            __m256 m = type == 3 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(base + 32 + 16 * h)))
                                 : _mm256_mul_ps(dw, _mm256_set1_ps(-8.0f));
            __m256i lo[4], hi[4];
            for (int k = 0; k < 4; k++) {
                __m256i raw = _mm256_loadu_si256((const __m256i *)(base + header + 64 * k + 32 * h));
                lo[k] = _mm256_and_si256(raw, mask);
                hi[k] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
            }
            for (int t = 0; t < nt; t++) {
                const int8_t *x = q + (size_t)t * columns + b * 32;
                __m256i s = _mm256_setzero_si256();
                for (int k = 0; k < 4; k++) {
                    __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo[k], _mm256_set1_epi32(load_i32(x + 4 * k))),
                                                 _mm256_maddubs_epi16(hi[k], _mm256_set1_epi32(load_i32(x + 16 + 4 * k))));
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
                }
                __m256 f = _mm256_cvtepi32_ps(s);
                acc[t] = _mm256_fmadd_ps(f, _mm256_mul_ps(dw, _mm256_set1_ps(d[(size_t)t * blocks + b])), acc[t]);
                acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(ds[(size_t)t * blocks + b]), acc[t]);
            }
        }
        for (int t = 0; t < nt; t++) {
            float out[8];
            _mm256_storeu_ps(out, acc[t]);
            for (int r = 0; r < 8 && 8 * h + r < nr; r++) y[(size_t)t * ldy + 8 * h + r] = out[r];
        }
    }
}

#define KQ_DEFINE_PACKED(NAME, TARGET, TILE)                                                             \
TARGET static void NAME(int type, const uint8_t *packed, int rows, int columns, int group_begin,         \
                        int group_end, const int8_t *q, const float *d, const float *ds, int tokens,     \
                        float *y, size_t ldy) {                                                          \
    int blocks = columns / 32;                                                                           \
    size_t gstride = (size_t)blocks * group_block_bytes(type);                                           \
    const uint8_t *end = packed + (size_t)group_end * gstride; /* one past these rows' bytes */          \
    for (int g = group_begin; g < group_end; g++) {                                                      \
        int nr = rows - g * GROUP < GROUP ? rows - g * GROUP : GROUP;                                    \
        const uint8_t *group = packed + g * gstride;                                                     \
        for (int t0 = 0; t0 < tokens; t0 += 8) {                                                         \
            int nt = tokens - t0 < 8 ? tokens - t0 : 8;                                                  \
            const int8_t *qt = q + (size_t)t0 * columns;                                                 \
            const float *dt = d + (size_t)t0 * blocks, *dst = ds + (size_t)t0 * blocks;                  \
            float *yt = y + (size_t)t0 * ldy + (size_t)g * GROUP;                                        \
            switch (nt * 4 + type) { /* constant (type, nt) pairs, so every tile is fully unrolled */    \
            case 1 * 4 + 2: TILE(2, 1, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 2 * 4 + 2: TILE(2, 2, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 3 * 4 + 2: TILE(2, 3, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 4 * 4 + 2: TILE(2, 4, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 5 * 4 + 2: TILE(2, 5, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 6 * 4 + 2: TILE(2, 6, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 7 * 4 + 2: TILE(2, 7, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 8 * 4 + 2: TILE(2, 8, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 1 * 4 + 3: TILE(3, 1, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 2 * 4 + 3: TILE(3, 2, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 3 * 4 + 3: TILE(3, 3, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 4 * 4 + 3: TILE(3, 4, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 5 * 4 + 3: TILE(3, 5, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 6 * 4 + 3: TILE(3, 6, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            case 7 * 4 + 3: TILE(3, 7, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            default:        TILE(3, 8, group, blocks, qt, columns, dt, dst, yt, ldy, nr, end); break;    \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
}

KQ_DEFINE_PACKED(packed_avx512, KQ_TARGET_VNNI, tile_vnni)
KQ_DEFINE_PACKED(packed_avx2, KQ_TARGET_AVX2, tile_avx2)
#endif

void kq_matmul_packed(int type, const void *packed, int rows, int columns, int group_begin, int group_end,
                      const int8_t *q, const float *d, const float *ds, int tokens, float *y, size_t ldy) {
    KQ_DISPATCH(packed, type, packed, rows, columns, group_begin, group_end, q, d, ds, tokens, y, ldy)
}

// ---------------------------------------------------------------------------------------------
// Q8_0 × int16 activations (the output head). 16 rows at a time again: for each (group, block),
// 16 × f16 d, then 16 chunks of 32 bytes; chunk p holds (w[r][2p], w[r][2p+1]) at bytes 2r, 2r+1, so
// sign-extended to int16 each 32-bit lane is one row's pair of weights and vpdpwssd adds the row's two
// products with the broadcast activation pair. Per (row, token), block after block:
//   s = Σ_{c < 32} w_c · x_c   (exact in int32: |s| ≤ 32 · 128 · 32767 < 2³¹)
//   acc = fma((float)s, d_w · d_x, acc)

enum { HEAD_GROUP_BLOCK = 32 + 512 };

size_t kq_packed_q8_0_size(int rows, int columns) {
    return (size_t)((rows + GROUP - 1) / GROUP) * (size_t)(columns / 32) * HEAD_GROUP_BLOCK;
}

void kq_pack_q8_0(const void *weights, size_t row_bytes, int rows, int columns, void *packed) {
    int groups = (rows + GROUP - 1) / GROUP, blocks = columns / 32;
    memset(packed, 0, kq_packed_q8_0_size(rows, columns));
    for (int g = 0; g < groups; g++) {
        for (int b = 0; b < blocks; b++) {
            uint8_t *out = (uint8_t *)packed + ((size_t)g * blocks + b) * HEAD_GROUP_BLOCK;
            for (int r = 0; r < GROUP && g * GROUP + r < rows; r++) {
                const uint8_t *block = (const uint8_t *)weights + (size_t)(g * GROUP + r) * row_bytes + (size_t)b * 34;
                memcpy(out + 2 * r, block, 2);
                for (int p = 0; p < 16; p++) memcpy(out + 32 + 32 * p + 2 * r, block + 2 + 2 * p, 2);
            }
        }
    }
}

static inline __attribute__((always_inline)) void quantize16_body(const float *x, int columns, int tokens, int16_t *q,
                                                                  float *d) {
    int blocks = columns / 32;
    for (int t = 0; t < tokens; t++) {
        for (int b = 0; b < blocks; b++) {
            const float *v = x + (size_t)t * columns + b * 32;
            int16_t *out = q + (size_t)t * columns + b * 32;
            float inverse, scale = block_scale(v, 32767.0f, &inverse);
            for (int i = 0; i < 32; i++) {
                float value = nearbyintf(v[i] * inverse);
                out[i] = (int16_t)fminf(fmaxf(value, -32767.0f), 32767.0f);
            }
            d[(size_t)t * blocks + b] = scale;
        }
    }
}

KQ_BUILDS(quantize16, (const float *x, int columns, int tokens, int16_t *q, float *d), (x, columns, tokens, q, d))

// Same body for all three builds (see kq_quantize in kernels.c).
void kq_quantize16(const float *x, int columns, int tokens, int16_t *q, float *d) {
    KQ_DISPATCH(quantize16, x, columns, tokens, q, d)
}

static void head_portable(const uint8_t *packed, int rows, int columns, int group_begin, int group_end,
                          const int16_t *q, const float *d, int tokens, float *y, size_t ldy) {
    int blocks = columns / 32;
    for (int g = group_begin; g < group_end; g++) {
        int nr = rows - g * GROUP < GROUP ? rows - g * GROUP : GROUP;
        for (int t = 0; t < tokens; t++) {
            float acc[GROUP] = {0};
            for (int b = 0; b < blocks; b++) {
                const uint8_t *base = packed + ((size_t)g * blocks + b) * HEAD_GROUP_BLOCK;
                const int16_t *x = q + (size_t)t * columns + b * 32;
                float dx = d[(size_t)t * blocks + b];
                for (int r = 0; r < GROUP; r++) {
                    int32_t s = 0;
                    for (int p = 0; p < 16; p++) {
                        s += (int8_t)base[32 + 32 * p + 2 * r] * x[2 * p] + (int8_t)base[32 + 32 * p + 2 * r + 1] * x[2 * p + 1];
                    }
                    acc[r] = fmaf((float)s, half_to_float(load_u16(base + 2 * r)) * dx, acc[r]);
                }
            }
            for (int r = 0; r < nr; r++) y[(size_t)t * ldy + (size_t)g * GROUP + r] = acc[r];
        }
    }
}

#if KQ_X86
KQ_TARGET_VNNI static inline __attribute__((always_inline)) void
head_tile_vnni(const int nt, const uint8_t *group, int blocks, const int16_t *q, int columns, const float *d,
               float *y, size_t ldy, int nr) {
    __m512 acc[8];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < blocks; b++) {
        const uint8_t *base = group + (size_t)b * HEAD_GROUP_BLOCK;
        for (int line = 0; line < HEAD_GROUP_BLOCK; line += 64) _mm_prefetch((const char *)(base + prefetch_distance(nt) + line), _MM_HINT_T0);
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)base));
        // Few tokens: two chains per token (odd pairs in `odd`) hide vpdpwssd's latency; integer sums,
        // so the split is exact. The unrolled loop picks the chain, not an index: with `s[t][p & 1]`
        // clang kept the sums on the stack, and the head over 4 tokens cost as much as over 8
        // (docs/measurements.md).
        __m512i even[8], odd[8];
        for (int t = 0; t < nt; t++) even[t] = odd[t] = _mm512_setzero_si512();
        for (int p = 0; p < 16; p += 2) {
            __m512i w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(base + 32 + 32 * p)));
            __m512i w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(base + 64 + 32 * p)));
            for (int t = 0; t < nt; t++) {
                int32_t pair0, pair1;
                memcpy(&pair0, q + (size_t)t * columns + b * 32 + 2 * p, 4);
                memcpy(&pair1, q + (size_t)t * columns + b * 32 + 2 * p + 2, 4);
                even[t] = _mm512_dpwssd_epi32(even[t], w0, _mm512_set1_epi32(pair0));
                if (nt <= 4) odd[t] = _mm512_dpwssd_epi32(odd[t], w1, _mm512_set1_epi32(pair1));
                else even[t] = _mm512_dpwssd_epi32(even[t], w1, _mm512_set1_epi32(pair1));
            }
        }
        for (int t = 0; t < nt; t++) {
            __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(even[t], odd[t]));
            acc[t] = _mm512_fmadd_ps(f, _mm512_mul_ps(dw, _mm512_set1_ps(d[(size_t)t * blocks + b])), acc[t]);
        }
    }
    __mmask16 store = (__mmask16)((1u << nr) - 1);
    for (int t = 0; t < nt; t++) _mm512_mask_storeu_ps(y + (size_t)t * ldy, store, acc[t]);
}

KQ_TARGET_AVX2 static inline __attribute__((always_inline)) void
head_tile_avx2(const int nt, const uint8_t *group, int blocks, const int16_t *q, int columns, const float *d,
               float *y, size_t ldy, int nr) {
    for (int h = 0; h < 2; h++) {
        __m256 acc[8];
        for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
        for (int b = 0; b < blocks; b++) {
            const uint8_t *base = group + (size_t)b * HEAD_GROUP_BLOCK;
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(base + 16 * h)));
            __m256i s[8];
            for (int t = 0; t < nt; t++) s[t] = _mm256_setzero_si256();
            for (int p = 0; p < 16; p++) {
                __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(base + 32 + 32 * p + 16 * h)));
                for (int t = 0; t < nt; t++) {
                    int32_t pair;
                    memcpy(&pair, q + (size_t)t * columns + b * 32 + 2 * p, 4);
                    s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(w, _mm256_set1_epi32(pair)));
                }
            }
            for (int t = 0; t < nt; t++) {
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(dw, _mm256_set1_ps(d[(size_t)t * blocks + b])), acc[t]);
            }
        }
        for (int t = 0; t < nt; t++) {
            float out[8];
            _mm256_storeu_ps(out, acc[t]);
            for (int r = 0; r < 8 && 8 * h + r < nr; r++) y[(size_t)t * ldy + 8 * h + r] = out[r];
        }
    }
}

#define KQ_DEFINE_HEAD(NAME, TARGET, TILE)                                                               \
TARGET static void NAME(const uint8_t *packed, int rows, int columns, int group_begin, int group_end,    \
                        const int16_t *q, const float *d, int tokens, float *y, size_t ldy) {            \
    int blocks = columns / 32;                                                                           \
    for (int g = group_begin; g < group_end; g++) {                                                      \
        int nr = rows - g * GROUP < GROUP ? rows - g * GROUP : GROUP;                                    \
        const uint8_t *group = packed + (size_t)g * blocks * HEAD_GROUP_BLOCK;                           \
        for (int t0 = 0; t0 < tokens; t0 += 8) {                                                         \
            int nt = tokens - t0 < 8 ? tokens - t0 : 8;                                                  \
            const int16_t *qt = q + (size_t)t0 * columns;                                                \
            const float *dt = d + (size_t)t0 * blocks;                                                   \
            float *yt = y + (size_t)t0 * ldy + (size_t)g * GROUP;                                        \
            switch (nt) {                                                                                \
            case 1: TILE(1, group, blocks, qt, columns, dt, yt, ldy, nr); break;                         \
            case 2: TILE(2, group, blocks, qt, columns, dt, yt, ldy, nr); break;                         \
            case 3: TILE(3, group, blocks, qt, columns, dt, yt, ldy, nr); break;                         \
            case 4: TILE(4, group, blocks, qt, columns, dt, yt, ldy, nr); break;                         \
            case 5: TILE(5, group, blocks, qt, columns, dt, yt, ldy, nr); break;                         \
            case 6: TILE(6, group, blocks, qt, columns, dt, yt, ldy, nr); break;                         \
            case 7: TILE(7, group, blocks, qt, columns, dt, yt, ldy, nr); break;                         \
            default: TILE(8, group, blocks, qt, columns, dt, yt, ldy, nr); break;                        \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
}

KQ_DEFINE_HEAD(head_avx512, KQ_TARGET_VNNI, head_tile_vnni)
KQ_DEFINE_HEAD(head_avx2, KQ_TARGET_AVX2, head_tile_avx2)
#endif

void kq_matmul_q8_0_int16(const void *packed, int rows, int columns, int group_begin, int group_end,
                          const int16_t *q, const float *d, int tokens, float *y, size_t ldy) {
    KQ_DISPATCH(head, packed, rows, columns, group_begin, group_end, q, d, tokens, y, ldy)
}
