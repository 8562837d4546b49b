// Helpers shared by the kernel files (not part of the public header).
#ifndef KANGAROO_KERNELS_COMMON_H
#define KANGAROO_KERNELS_COMMON_H

#include "KernelsC.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define KQ_X86 1
#define KQ_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KQ_TARGET_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq,avx512vnni")))
#endif

// Every kernel comes in three builds, NAME_portable, NAME_avx2 and NAME_avx512, that give the same
// bits; KQ_DISPATCH(NAME, args…) calls the one for this CPU's instruction level and returns.
#if KQ_X86
#define KQ_DISPATCH(NAME, ...)                                      \
    switch (kq_instruction_level()) {                               \
    case 2: NAME##_avx512(__VA_ARGS__); return;                     \
    case 1: NAME##_avx2(__VA_ARGS__); return;                       \
    default: NAME##_portable(__VA_ARGS__); return;                  \
    }
#else
#define KQ_DISPATCH(NAME, ...) NAME##_portable(__VA_ARGS__); return;
#endif

// The three builds of a kernel whose one always-inline body, NAME_body, is written for all of them
// (same operations, exact fmaf, so the same results on each).
#if KQ_X86
#define KQ_BUILDS(NAME, PARAMS, ARGS)                                              \
    static void NAME##_portable PARAMS { NAME##_body ARGS; }                      \
    KQ_TARGET_AVX2 static void NAME##_avx2 PARAMS { NAME##_body ARGS; }           \
    KQ_TARGET_VNNI static void NAME##_avx512 PARAMS { NAME##_body ARGS; }
#else
#define KQ_BUILDS(NAME, PARAMS, ARGS) static void NAME##_portable PARAMS { NAME##_body ARGS; }
#endif

static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1F;
    uint32_t mantissa = h & 0x3FF;
    uint32_t bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            exponent = 1;
            while (!(mantissa & 0x400)) { mantissa <<= 1; exponent--; }
            mantissa &= 0x3FF;
            bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
        }
    } else if (exponent == 31) {
        bits = sign | 0x7F800000 | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/// The scale of a block of 32 activations quantised to ±limit (max|v| / limit), and its inverse (0
/// for an all-zero block).
static inline __attribute__((always_inline)) float block_scale(const float *v, float limit, float *inverse) {
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
    float scale = amax / limit;
    *inverse = scale != 0 ? 1.0f / scale : 0.0f;
    return scale;
}

static inline uint16_t load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

// Readers of the quantised formats' blocks of 32 columns (kernels.c describes the formats).

static inline int signed_format(int type) { return type == 8 || type == 11 || type == 14; }
static inline int half_scales(int type) { return type == 11 || type == 14; }

static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *scale, uint8_t *min) {
    if (j < 4) {
        *scale = q[j] & 63;
        *min = q[j + 4] & 63;
    } else {
        *scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q3_K's scale k of 16: low 4 bits in bytes 0–7 (low then high nibbles), high 2 bits in bytes 8–11.
static inline int q3_k_scale(const uint8_t *scales, int k) {
    int low = k < 8 ? scales[k] & 0x0F : scales[k - 8] >> 4;
    int high = (scales[8 + k % 4] >> (2 * (k / 4))) & 3;
    return (low | high << 4) - 32;
}

// Portable reference of the integers: unsigned formats' values, signed formats' signed values.
static inline void block_integers_portable(int type, const uint8_t *row, int b, int v[32]) {
    switch (type) {
    case 2: case 3: case 6: case 7: {
        const uint8_t *k = row + (size_t)b * (type == 2 ? 18 : type == 3 ? 20 : type == 6 ? 22 : 24);
        const uint8_t *nibbles = k + (type == 2 ? 2 : type == 3 ? 4 : type == 6 ? 6 : 8);
        uint32_t high = 0;
        if (type == 6 || type == 7) memcpy(&high, k + (type == 6 ? 2 : 4), 4);
        for (int i = 0; i < 16; i++) {
            v[i] = (nibbles[i] & 0x0F) | ((high >> i) & 1) << 4;
            v[i + 16] = (nibbles[i] >> 4) | ((high >> (i + 16)) & 1) << 4;
        }
        break;
    }
    case 8:
        for (int i = 0; i < 32; i++) v[i] = (int8_t)row[34 * (size_t)b + 2 + i];
        break;
    case 11: {
        const uint8_t *k = row + 110 * (size_t)(b / 8);
        int j = b % 8, h = j / 4, sub = j % 4;
        for (int i = 0; i < 32; i++) v[i] = ((k[32 + 32 * h + i] >> (2 * sub)) & 3) - (((k[i] >> (4 * h + sub)) & 1) ? 0 : 4);
        break;
    }
    case 12: case 13: {
        const uint8_t *k = row + (type == 12 ? 144 : 176) * (size_t)(b / 8);
        int j = b % 8;
        const uint8_t *nibbles = k + (type == 12 ? 16 : 48) + 32 * (j / 2);
        for (int i = 0; i < 32; i++) {
            v[i] = (nibbles[i] >> (4 * (j % 2))) & 0x0F;
            if (type == 13) v[i] |= ((k[16 + i] >> j) & 1) << 4;
        }
        break;
    }
    case 14: {
        const uint8_t *k = row + 210 * (size_t)(b / 8);
        int j = b % 8, h = j / 4, sub = j % 4;
        const uint8_t *low = k + 64 * h + 32 * (sub & 1), *high = k + 128 + 32 * h;
        for (int i = 0; i < 32; i++) v[i] = (((low[i] >> (4 * (sub >> 1))) & 0x0F) | ((high[i] >> (2 * sub)) & 3) << 4) - 32;
        break;
    }
    default:
        for (int i = 0; i < 32; i++) v[i] = 0;
        break;
    }
}


#endif
