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

#endif
