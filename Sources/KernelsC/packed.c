#include "common.h"

// Weights repacked 16 rows at a time (see KernelsC.h for the layout). One 32-bit lane per row: a
// vpdpbusd multiplies 4 weights of each of the 16 rows by the same 4 activations (broadcast), so a
// block of 32 columns takes 8 of them, and the float work (conversion, scales, the per-block term) is
// done once per 16 rows instead of once per row. Measured with `kangaroo bench speed` against the
// row-at-a-time kernels: see the kernels issue note and docs/measurements.md.
//
// Every format is stored as 4-bit low parts (nibbles) plus, for Q5_0 and Q6_K, planes of the higher
// bits, and per (row, block) float factors. Per (row, token) every path does exactly this, block
// after block, with lo / hi the sums over columns 0–15 / 16–31 (exact, in int32):
//   Q4_0, Q4_1, Q5_0, Q4_K:  acc = fma(lo + hi, s_w · d_x, acc);  acc = fma(m_w, d_x · Σx, acc)
//       (Q4_0: s_w = d, m_w = −8·d; Q4_1: d, m; Q5_0: d, −16·d; Q4_K: d·s_j, −(dmin·m_j))
//   Q6_K:  acc = fma(lo − 32·Σx_lo, d·s_lo · d_x, acc);  acc = fma(hi − 32·Σx_hi, d·s_hi · d_x, acc)
//       (Σx_lo, Σx_hi: the activations' half sums from kq_quantize, so no group sums them again)
// so a token's result is the same bits alone or in a batch, on every instruction level.

enum { GROUP = 16 };

// A group's block: [header][planes of high bits][256 B of nibbles]. Chunk k (of 4) of the nibbles
// holds, for row r, 4 bytes at 64k + 4r: low nibbles columns 4k…4k+3, high nibbles 16+4k…16+4k+3.
//   Q4_0: 16 × f16 d                       Q4_1: 16 × f16 d, 16 × f16 m
//   Q5_0: 16 × f16 d; one plane: row r's 32 fifth bits at 4r, the bit of column 4k+j (+16 for
//         h = 1) at bit 8j + 2k + h, so that one shift per chunk brings each to bit 4 of its byte
//   Q4_K: 16 × u8 s_j, 16 × u8 m_j         Q6_K: 16 × i8 s_lo, 16 × i8 s_hi; two planes (h = 0, 1):
//         row r's 2-bit highs of columns 16h + 4k + j at bits 8j + 2k, 8j + 2k + 1
// K-quants put a super-block header before each 8 blocks: Q4_K 16 × f16 d, 16 × f16 dmin;
// Q6_K 16 × f16 d.
static inline int header_bytes(int type) { return type == 3 ? 64 : 32; }
static inline int plane_bytes(int type) { return type == 6 ? 64 : type == 14 ? 128 : 0; }
static inline int group_block_bytes(int type) { return header_bytes(type) + plane_bytes(type) + 256; }
static inline int super_bytes(int type) { return type == 12 ? 64 : type == 14 ? 32 : 0; }
static inline size_t group_stride(int type, int blocks) {
    return (size_t)blocks * group_block_bytes(type) + (size_t)(blocks / 8) * super_bytes(type);
}
static inline size_t block_offset(int type, int b) {
    return (size_t)b * group_block_bytes(type) + (super_bytes(type) ? (size_t)(b / 8 + 1) * super_bytes(type) : 0);
}
static inline size_t super_offset(int type, int b) { return (size_t)(b / 8) * (8 * group_block_bytes(type) + super_bytes(type)); }
static inline int source_block_bytes(int type) {
    switch (type) {
    case 2: return 18;
    case 3: return 20;
    case 6: return 22;
    case 12: return 144;
    default: return 210;
    }
}

int kq_has_packed(int type) { return type == 2 || type == 3 || type == 6 || type == 12 || type == 14; }

size_t kq_packed_size(int type, int rows, int columns) {
    return (size_t)((rows + GROUP - 1) / GROUP) * group_stride(type, columns / 32);
}

void kq_pack(int type, const void *weights, size_t row_bytes, int rows, int columns, void *packed) {
    int groups = (rows + GROUP - 1) / GROUP, blocks = columns / 32, header = header_bytes(type);
    int planes = plane_bytes(type);
    memset(packed, 0, kq_packed_size(type, rows, columns));  // rows past the end: all zero
    for (int g = 0; g < groups; g++) {
        uint8_t *group = (uint8_t *)packed + (size_t)g * group_stride(type, blocks);
        for (int b = 0; b < blocks; b++) {
            uint8_t *out = group + block_offset(type, b), *super = group + super_offset(type, b);
            for (int r = 0; r < GROUP && g * GROUP + r < rows; r++) {
                const uint8_t *row = (const uint8_t *)weights + (size_t)(g * GROUP + r) * row_bytes;
                const uint8_t *kblock = row + (size_t)(type == 12 || type == 14 ? b / 8 : b) * source_block_bytes(type);
                int v[32];
                block_integers_portable(type, row, b, v);
                if (type == 14) for (int i = 0; i < 32; i++) v[i] += 32;  // stored unsigned, 0…63
                switch (type) {
                case 2: case 6: memcpy(out + 2 * r, kblock, 2); break;
                case 3: memcpy(out + 2 * r, kblock, 2); memcpy(out + 32 + 2 * r, kblock + 2, 2); break;
                case 12: {
                    uint8_t scale, min;
                    scale_min_k4(b % 8, kblock + 4, &scale, &min);
                    out[r] = scale;
                    out[16 + r] = min;
                    if (b % 8 == 0) { memcpy(super + 2 * r, kblock, 2); memcpy(super + 32 + 2 * r, kblock + 2, 2); }
                    break;
                }
                case 14: {
                    int j = b % 8;
                    out[r] = kblock[192 + 8 * (j / 4) + 2 * (j % 4)];
                    out[16 + r] = kblock[192 + 8 * (j / 4) + 2 * (j % 4) + 1];
                    if (b % 8 == 0) memcpy(super + 2 * r, kblock + 208, 2);
                    break;
                }
                }
                uint8_t *plane = out + header, *nibbles = out + header + planes;
                for (int k = 0; k < 4; k++) {
                    for (int j = 0; j < 4; j++) {
                        int low = v[4 * k + j], high = v[16 + 4 * k + j];
                        nibbles[64 * k + 4 * r + j] = (uint8_t)((low & 0x0F) | (high & 0x0F) << 4);
                        if (type == 6) {
                            plane[4 * r + j] |= (uint8_t)(((low >> 4) & 1) << (2 * k) | ((high >> 4) & 1) << (2 * k + 1));
                        } else if (type == 14) {
                            plane[4 * r + j] |= (uint8_t)(((low >> 4) & 3) << (2 * k));
                            plane[64 + 4 * r + j] |= (uint8_t)(((high >> 4) & 3) << (2 * k));
                        }
                    }
                }
            }
        }
    }
}

// A block's per-row float factors, as every path computes them: the scale of the low and high sums
// (equal but for Q6_K) and m_w. `super` is the block's super-block header (K-quants).
static inline void packed_factors_portable(int type, const uint8_t *base, const uint8_t *super, int r, float *low,
                                           float *high, float *m) {
    switch (type) {
    case 2: case 6: {
        float d = half_to_float(load_u16(base + 2 * r));
        *low = *high = d;
        *m = (type == 2 ? -8.0f : -16.0f) * d;
        break;
    }
    case 3:
        *low = *high = half_to_float(load_u16(base + 2 * r));
        *m = half_to_float(load_u16(base + 32 + 2 * r));
        break;
    case 12:
        *low = *high = half_to_float(load_u16(super + 2 * r)) * (float)base[r];
        *m = -(half_to_float(load_u16(super + 32 + 2 * r)) * (float)base[16 + r]);
        break;
    default: {
        float d = half_to_float(load_u16(super + 2 * r));
        *low = d * (float)(int8_t)base[r];
        *high = d * (float)(int8_t)base[16 + r];
        *m = 0;
        break;
    }
    }
}

static void packed_portable(int type, const uint8_t *packed, int rows, int columns, int group_begin, int group_end,
                            const int8_t *q, const float *d, const float *ds, const int32_t *half_sums, int tokens,
                            float *y, size_t ldy) {
    int blocks = columns / 32, header = header_bytes(type), planes = plane_bytes(type);
    for (int g = group_begin; g < group_end; g++) {
        const uint8_t *group = packed + (size_t)g * group_stride(type, blocks);
        int nr = rows - g * GROUP < GROUP ? rows - g * GROUP : GROUP;
        for (int t = 0; t < tokens; t++) {
            float acc[GROUP] = {0};
            for (int b = 0; b < blocks; b++) {
                const uint8_t *base = group + block_offset(type, b), *super = group + super_offset(type, b);
                const uint8_t *plane = base + header, *nibbles = base + header + planes;
                const int8_t *x = q + (size_t)t * columns + b * 32;
                float dx = d[(size_t)t * blocks + b], dsx = ds[(size_t)t * blocks + b];
                int32_t sum_lo = half_sums[2 * ((size_t)t * blocks + b)], sum_hi = half_sums[2 * ((size_t)t * blocks + b) + 1];
                for (int r = 0; r < GROUP; r++) {
                    int32_t lo = 0, hi = 0;
                    for (int k = 0; k < 4; k++) {
                        for (int j = 0; j < 4; j++) {
                            uint8_t byte = nibbles[64 * k + 4 * r + j];
                            int wl = byte & 0x0F, wh = byte >> 4;
                            if (type == 6) {
                                wl |= ((plane[4 * r + j] >> (2 * k)) & 1) << 4;
                                wh |= ((plane[4 * r + j] >> (2 * k + 1)) & 1) << 4;
                            } else if (type == 14) {
                                wl |= ((plane[4 * r + j] >> (2 * k)) & 3) << 4;
                                wh |= ((plane[64 + 4 * r + j] >> (2 * k)) & 3) << 4;
                            }
                            lo += wl * x[4 * k + j];
                            hi += wh * x[16 + 4 * k + j];
                        }
                    }
                    float low, high, m;
                    packed_factors_portable(type, base, super, r, &low, &high, &m);
                    if (type == 14) {
                        acc[r] = fmaf((float)(lo - 32 * sum_lo), low * dx, acc[r]);
                        acc[r] = fmaf((float)(hi - 32 * sum_hi), high * dx, acc[r]);
                    } else {
                        acc[r] = fmaf((float)(lo + hi), low * dx, acc[r]);
                        acc[r] = fmaf(m, dsx, acc[r]);
                    }
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

// Moves bits `from`… of every byte to `to`… (shifts of whole 32-bit lanes: the bits wanted stay
// inside their bytes, a mask drops the rest).
KQ_TARGET_VNNI static inline __attribute__((always_inline)) __m512i shift_bits_512(__m512i x, int from, int to) {
    if (from < to) return _mm512_slli_epi32(x, (unsigned)(to - from));
    if (from > to) return _mm512_srli_epi32(x, (unsigned)(from - to));
    return x;
}

KQ_TARGET_AVX2 static inline __attribute__((always_inline)) __m256i shift_bits_256(__m256i x, int from, int to) {
    if (from < to) return _mm256_slli_epi32(x, to - from);
    if (from > to) return _mm256_srli_epi32(x, from - to);
    return x;
}

// Up to 8 tokens against one group of 16 rows; `nt` is a constant after inlining, so the accumulators
// stay in registers. The unpacked weights of a block (8 zmm) are shared by the tokens.
KQ_TARGET_VNNI static inline __attribute__((always_inline)) void
tile_vnni(const int type, const int nt, const uint8_t *group, int blocks, const int8_t *q, int columns,
          const float *d, const float *ds, const int32_t *half_sums, float *y, size_t ldy, int nr, const uint8_t *end) {
    const int header = header_bytes(type), planes = plane_bytes(type), gbytes = group_block_bytes(type);
    const __m512i mask = _mm512_set1_epi8(0x0F);
    const __m512 negative_zero = _mm512_set1_ps(-0.0f);
    __m512 acc[8];
    __m512 super_d = _mm512_setzero_ps(), super_min = _mm512_setzero_ps();
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < blocks; b++) {
        const uint8_t *base = group + block_offset(type, b);
        if (nt > 1 || base + prefetch_distance(nt) < end)
            for (int line = 0; line < gbytes; line += 64) _mm_prefetch((const char *)(base + prefetch_distance(nt) + line), _MM_HINT_T0);
        if ((type == 12 || type == 14) && b % 8 == 0) {
            const uint8_t *super = group + super_offset(type, b);
            super_d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)super));
            if (type == 12) super_min = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(super + 32)));
        }
        __m512 low, high = _mm512_setzero_ps(), m = _mm512_setzero_ps();
        switch (type) {
        case 12:
            low = _mm512_mul_ps(super_d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)base))));
            m = _mm512_xor_ps(_mm512_mul_ps(super_min, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(base + 16))))),
                              negative_zero);
            break;
        case 14:
            low = _mm512_mul_ps(super_d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)base))));
            high = _mm512_mul_ps(super_d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(base + 16)))));
            break;
        default:
            low = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)base));
            m = type == 3 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(base + 32)))
                          : _mm512_mul_ps(low, _mm512_set1_ps(type == 2 ? -8.0f : -16.0f));
            break;
        }
        __m512i lo[4], hi[4];
        for (int k = 0; k < 4; k++) {
            __m512i raw = _mm512_loadu_si512((const void *)(base + header + planes + 64 * k));
            lo[k] = _mm512_and_si512(raw, mask);
            hi[k] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask);
            if (type == 6) {
                __m512i plane = _mm512_loadu_si512((const void *)(base + header));
                lo[k] = _mm512_or_si512(lo[k], _mm512_and_si512(shift_bits_512(plane, 2 * k, 4), _mm512_set1_epi8(0x10)));
                hi[k] = _mm512_or_si512(hi[k], _mm512_and_si512(shift_bits_512(plane, 2 * k + 1, 4), _mm512_set1_epi8(0x10)));
            } else if (type == 14) {
                __m512i plane0 = _mm512_loadu_si512((const void *)(base + header));
                __m512i plane1 = _mm512_loadu_si512((const void *)(base + header + 64));
                lo[k] = _mm512_or_si512(lo[k], _mm512_and_si512(shift_bits_512(plane0, 2 * k, 4), _mm512_set1_epi8(0x30)));
                hi[k] = _mm512_or_si512(hi[k], _mm512_and_si512(shift_bits_512(plane1, 2 * k, 4), _mm512_set1_epi8(0x30)));
            }
        }
        for (int t = 0; t < nt; t++) {
            const int8_t *x = q + (size_t)t * columns + b * 32;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int k = 0; k < 4; k++) {
                s0 = _mm512_dpbusd_epi32(s0, lo[k], _mm512_set1_epi32(load_i32(x + 4 * k)));
                s1 = _mm512_dpbusd_epi32(s1, hi[k], _mm512_set1_epi32(load_i32(x + 16 + 4 * k)));
            }
            __m512 dx = _mm512_set1_ps(d[(size_t)t * blocks + b]);
            if (type == 14) {
                const int32_t *sums = half_sums + 2 * ((size_t)t * blocks + b);
                s0 = _mm512_sub_epi32(s0, _mm512_set1_epi32(32 * sums[0]));
                s1 = _mm512_sub_epi32(s1, _mm512_set1_epi32(32 * sums[1]));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0), _mm512_mul_ps(low, dx), acc[t]);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), _mm512_mul_ps(high, dx), acc[t]);
            } else {
                __m512 s = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
                acc[t] = _mm512_fmadd_ps(s, _mm512_mul_ps(low, dx), acc[t]);
                acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(ds[(size_t)t * blocks + b]), acc[t]);
            }
        }
    }
    __mmask16 store = (__mmask16)((1u << nr) - 1);
    for (int t = 0; t < nt; t++) _mm512_mask_storeu_ps(y + (size_t)t * ldy, store, acc[t]);
}

// The AVX2 form of the same arithmetic: each group is two halves of 8 rows in ymm registers. maddubs
// gives pairs of products in 16 bits, the lo and hi pairs are added (at most 4 · 31 · 128 = 15872: no
// saturation; Q6_K's, up to 63, are widened apart), and madd widens to each row's int32 sum, so the
// sums are exactly those of VNNI. No software prefetch here (`end` is unused).
KQ_TARGET_AVX2 static inline __attribute__((always_inline)) void
tile_avx2(const int type, const int nt, const uint8_t *group, int blocks, const int8_t *q, int columns,
          const float *d, const float *ds, const int32_t *half_sums, float *y, size_t ldy, int nr, const uint8_t *end) {
    const int header = header_bytes(type), planes = plane_bytes(type);
    const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const __m256 negative_zero = _mm256_set1_ps(-0.0f);
    for (int h = 0; h < 2; h++) {
        __m256 acc[8];
        __m256 super_d = _mm256_setzero_ps(), super_min = _mm256_setzero_ps();
        for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
        for (int b = 0; b < blocks; b++) {
            const uint8_t *base = group + block_offset(type, b);
            if ((type == 12 || type == 14) && b % 8 == 0) {
                const uint8_t *super = group + super_offset(type, b);
                super_d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(super + 16 * h)));
                if (type == 12) super_min = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(super + 32 + 16 * h)));
            }
            __m256 low, high = _mm256_setzero_ps(), m = _mm256_setzero_ps();
            switch (type) {
            case 12:
                low = _mm256_mul_ps(super_d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(base + 8 * h)))));
                m = _mm256_xor_ps(_mm256_mul_ps(super_min, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                                      _mm_loadl_epi64((const __m128i *)(base + 16 + 8 * h))))), negative_zero);
                break;
            case 14:
                low = _mm256_mul_ps(super_d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(base + 8 * h)))));
                high = _mm256_mul_ps(super_d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(base + 16 + 8 * h)))));
                break;
            default:
                low = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(base + 16 * h)));
                m = type == 3 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(base + 32 + 16 * h)))
                              : _mm256_mul_ps(low, _mm256_set1_ps(type == 2 ? -8.0f : -16.0f));
                break;
            }
            __m256i lo[4], hi[4];
            for (int k = 0; k < 4; k++) {
                __m256i raw = _mm256_loadu_si256((const __m256i *)(base + header + planes + 64 * k + 32 * h));
                lo[k] = _mm256_and_si256(raw, mask);
                hi[k] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
                if (type == 6) {
                    __m256i plane = _mm256_loadu_si256((const __m256i *)(base + header + 32 * h));
                    lo[k] = _mm256_or_si256(lo[k], _mm256_and_si256(shift_bits_256(plane, 2 * k, 4), _mm256_set1_epi8(0x10)));
                    hi[k] = _mm256_or_si256(hi[k], _mm256_and_si256(shift_bits_256(plane, 2 * k + 1, 4), _mm256_set1_epi8(0x10)));
                } else if (type == 14) {
                    __m256i plane0 = _mm256_loadu_si256((const __m256i *)(base + header + 32 * h));
                    __m256i plane1 = _mm256_loadu_si256((const __m256i *)(base + header + 64 + 32 * h));
                    lo[k] = _mm256_or_si256(lo[k], _mm256_and_si256(shift_bits_256(plane0, 2 * k, 4), _mm256_set1_epi8(0x30)));
                    hi[k] = _mm256_or_si256(hi[k], _mm256_and_si256(shift_bits_256(plane1, 2 * k, 4), _mm256_set1_epi8(0x30)));
                }
            }
            for (int t = 0; t < nt; t++) {
                const int8_t *x = q + (size_t)t * columns + b * 32;
                __m256 dx = _mm256_set1_ps(d[(size_t)t * blocks + b]);
                if (type == 14) {
                    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
                    for (int k = 0; k < 4; k++) {
                        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_maddubs_epi16(lo[k], _mm256_set1_epi32(load_i32(x + 4 * k))), ones));
                        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_maddubs_epi16(hi[k], _mm256_set1_epi32(load_i32(x + 16 + 4 * k))), ones));
                    }
                    const int32_t *sums = half_sums + 2 * ((size_t)t * blocks + b);
                    s0 = _mm256_sub_epi32(s0, _mm256_set1_epi32(32 * sums[0]));
                    s1 = _mm256_sub_epi32(s1, _mm256_set1_epi32(32 * sums[1]));
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_mul_ps(low, dx), acc[t]);
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(high, dx), acc[t]);
                } else {
                    __m256i s = _mm256_setzero_si256();
                    for (int k = 0; k < 4; k++) {
                        __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo[k], _mm256_set1_epi32(load_i32(x + 4 * k))),
                                                     _mm256_maddubs_epi16(hi[k], _mm256_set1_epi32(load_i32(x + 16 + 4 * k))));
                        s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
                    }
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(low, dx), acc[t]);
                    acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(ds[(size_t)t * blocks + b]), acc[t]);
                }
            }
        }
        for (int t = 0; t < nt; t++) {
            float out[8];
            _mm256_storeu_ps(out, acc[t]);
            for (int r = 0; r < 8 && 8 * h + r < nr; r++) y[(size_t)t * ldy + 8 * h + r] = out[r];
        }
    }
}

#define KQ_PACKED_TILES(TILE, TYPE)                                                                      \
    switch (nt) { /* constant (type, nt) pairs, so every tile is fully unrolled */                       \
    case 1: TILE(TYPE, 1, group, blocks, qt, columns, dt, dst, hst, yt, ldy, nr, end); break;            \
    case 2: TILE(TYPE, 2, group, blocks, qt, columns, dt, dst, hst, yt, ldy, nr, end); break;            \
    case 3: TILE(TYPE, 3, group, blocks, qt, columns, dt, dst, hst, yt, ldy, nr, end); break;            \
    case 4: TILE(TYPE, 4, group, blocks, qt, columns, dt, dst, hst, yt, ldy, nr, end); break;            \
    case 5: TILE(TYPE, 5, group, blocks, qt, columns, dt, dst, hst, yt, ldy, nr, end); break;            \
    case 6: TILE(TYPE, 6, group, blocks, qt, columns, dt, dst, hst, yt, ldy, nr, end); break;            \
    case 7: TILE(TYPE, 7, group, blocks, qt, columns, dt, dst, hst, yt, ldy, nr, end); break;            \
    default: TILE(TYPE, 8, group, blocks, qt, columns, dt, dst, hst, yt, ldy, nr, end); break;           \
    }

#define KQ_DEFINE_PACKED(NAME, TARGET, TILE)                                                             \
TARGET static void NAME(int type, const uint8_t *packed, int rows, int columns, int group_begin,         \
                        int group_end, const int8_t *q, const float *d, const float *ds,                 \
                        const int32_t *half_sums, int tokens, float *y, size_t ldy) {                    \
    int blocks = columns / 32;                                                                           \
    size_t gstride = group_stride(type, blocks);                                                         \
    const uint8_t *end = packed + (size_t)group_end * gstride; /* one past these rows' bytes */          \
    for (int g = group_begin; g < group_end; g++) {                                                      \
        int nr = rows - g * GROUP < GROUP ? rows - g * GROUP : GROUP;                                    \
        const uint8_t *group = packed + g * gstride;                                                     \
        for (int t0 = 0; t0 < tokens; t0 += 8) {                                                         \
            int nt = tokens - t0 < 8 ? tokens - t0 : 8;                                                  \
            const int8_t *qt = q + (size_t)t0 * columns;                                                 \
            const float *dt = d + (size_t)t0 * blocks, *dst = ds + (size_t)t0 * blocks;                  \
            const int32_t *hst = half_sums + (size_t)t0 * 2 * blocks;                                    \
            float *yt = y + (size_t)t0 * ldy + (size_t)g * GROUP;                                        \
            switch (type) {                                                                              \
            case 2: KQ_PACKED_TILES(TILE, 2) break;                                                      \
            case 3: KQ_PACKED_TILES(TILE, 3) break;                                                      \
            case 6: KQ_PACKED_TILES(TILE, 6) break;                                                      \
            case 12: KQ_PACKED_TILES(TILE, 12) break;                                                    \
            default: KQ_PACKED_TILES(TILE, 14) break;                                                    \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
}

KQ_DEFINE_PACKED(packed_avx512, KQ_TARGET_VNNI, tile_vnni)
KQ_DEFINE_PACKED(packed_avx2, KQ_TARGET_AVX2, tile_avx2)
#endif

void kq_matmul_packed(int type, const void *packed, int rows, int columns, int group_begin, int group_end,
                      const int8_t *q, const float *d, const float *ds, const int32_t *half_sums, int tokens,
                      float *y, size_t ldy) {
    KQ_DISPATCH(packed, type, packed, rows, columns, group_begin, group_end, q, d, ds, half_sums, tokens, y, ldy)
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
