#ifndef KANGAROO_KERNELS_C_H
#define KANGAROO_KERNELS_C_H

#include <stddef.h>
#include <stdint.h>

/// Integer-dot kernels for 4- and 8-bit weights against int8-quantised activations.
///
/// Activations are quantised per block of 32 values: q = round(x / d) with d = max|x| / 127, and the
/// block also keeps ds = d · Σq. A block's integer dot product is computed in eight 32-bit lanes (lane i
/// sums bytes 4i…4i+3), converted to float and accumulated per lane; lanes are added in a fixed order at
/// the end of a row. Every code path (AVX-512 VNNI, AVX2, portable) forms the same lanes in the same
/// order, so results do not depend on the path, on how many tokens share a call, or on row splitting.

/// Which instruction set the kernels use: 2 = AVX-512 VNNI, 1 = AVX2, 0 = portable C.
int kq_instruction_level(void);

/// Forces a lower instruction level (for tests and measurements); returns the level in effect.
int kq_set_instruction_level(int level);

/// Quantises `tokens` rows of `columns` floats (`columns` a multiple of 32).
/// q: tokens × columns; d, ds: tokens × columns/32.
void kq_quantize(const float *x, int columns, int tokens, int8_t *q, float *d, float *ds);

/// y[t · ldy + r] = Σ_c W[r][c] · x[t][c] for rows r in [row_begin, row_end) and tokens t < tokens.
/// `type` is the GGML type id of W: 2 (Q4_0), 3 (Q4_1) or 8 (Q8_0). Rows are `row_bytes` apart.
void kq_matmul(int type, const void *weights, size_t row_bytes, int columns, int row_begin, int row_end,
               const int8_t *q, const float *d, const float *ds, int tokens, float *y, size_t ldy);

/// Q8_0 weights against float activations (the output head, where logits need full precision):
/// y[t · ldy + r] = Σ_c W[r][c] · x[t][c]. Per block, 16 float lanes take w·x of its two halves, are
/// scaled by the block's d and accumulated; the lanes are added in a fixed order. Same bits on every
/// path and for every number of tokens.
void kq_matmul_q8_0_float(const void *weights, size_t row_bytes, int columns, int row_begin, int row_end,
                          const float *x, int tokens, float *y, size_t ldy);

#endif
