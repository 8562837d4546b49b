#ifndef KANGAROO_KERNELS_C_H
#define KANGAROO_KERNELS_C_H

#include <stddef.h>
#include <stdint.h>

/// Integer-dot kernels for 4- and 8-bit weights against int8-quantised activations.
///
/// Activations are quantised per block of 32 values: q = round(x / d) with d = max|x| / 127, and the
/// block also keeps ds = d · Σq and the integer sums of its two halves (values 0–15 and 16–31), which
/// Q6_K's kernel subtracts 32 times (its weights are stored unsigned). A block's integer dot product is computed in eight 32-bit lanes (lane i
/// sums bytes 4i…4i+3), converted to float and accumulated per lane; lanes are added in a fixed order at
/// the end of a row. Every code path (AVX-512 VNNI, AVX2, portable) forms the same lanes in the same
/// order, so results do not depend on the path, on how many tokens share a call, or on row splitting.

/// Which instruction set the kernels use: 2 = AVX-512 VNNI, 1 = AVX2, 0 = portable C.
int kq_instruction_level(void);

/// Forces a lower instruction level on the calling thread (for tests; other threads, a thread pool's
/// workers too, keep the CPU's); returns the level in effect.
int kq_set_instruction_level(int level);

/// Quantises `tokens` rows of `columns` floats (`columns` a multiple of 32).
/// q: tokens × columns; d, ds: tokens × columns/32; half_sums: tokens × columns/16 (two per block).
void kq_quantize(const float *x, int columns, int tokens, int8_t *q, float *d, float *ds, int32_t *half_sums);

/// y[t · ldy + r] = Σ_c W[r][c] · x[t][c] for rows r in [row_begin, row_end) and tokens t < tokens.
/// `type` is the GGML type id of W: 2 (Q4_0), 3 (Q4_1), 6 (Q5_0), 7 (Q5_1), 8 (Q8_0), 11 (Q3_K),
/// 12 (Q4_K), 13 (Q5_K) or 14 (Q6_K). Rows are `row_bytes` apart.
void kq_matmul(int type, const void *weights, size_t row_bytes, int columns, int row_begin, int row_end,
               const int8_t *q, const float *d, const float *ds, int tokens, float *y, size_t ldy);

/// Weights repacked for the integer kernels, 16 rows at a time, for the formats `kq_has_packed`
/// accepts: Q4_0, Q4_1, Q5_0, Q4_K and Q6_K (packed.c gives the layout). Every (row, block of 32
/// columns) keeps its bits: nibbles, planes of the higher bits, its scales; so decode reads about the
/// same bytes as from the file.
int kq_has_packed(int type);
size_t kq_packed_size(int type, int rows, int columns);

/// Repacks `rows` rows of a `kq_has_packed` format into `packed` (kq_packed_size bytes).
void kq_pack(int type, const void *weights, size_t row_bytes, int rows, int columns, void *packed);

/// y[t · ldy + r] = Σ_c W[r][c] · x[t][c] for the rows of groups [group_begin, group_end) of a packed
/// matrix with `rows` rows, block after block in the order packed.c gives per format; the same bits on
/// every instruction level and for every number of tokens.
void kq_matmul_packed(int type, const void *packed, int rows, int columns, int group_begin, int group_end,
                      const int8_t *q, const float *d, const float *ds, const int32_t *half_sums, int tokens,
                      float *y, size_t ldy);

/// In-place softmax of `n` floats (exponentials within a few ulp of expf; 0 below e^−87.3).
void kq_softmax(float *x, int n);

/// gate[i] = silu(gate[i]) · up[i] for i < n, with softmax's exponential.
void kq_swiglu(float *gate, const float *up, int n);

/// Attention scores of `heads` queries (`head_size` floats apart) that share one kv head, whose keys
/// are stored in tiles of 16 positions (`key_tiles[tile][d][16]`, tiles 16 · head_size floats apart):
/// scores[h · scores_stride + j] = (q_h · k_j) · scale for j < count. Writes whole tiles, so each row
/// needs room for `count` rounded up to 16. A head's result does not depend on `heads`.
void kq_attention_scores(const float *q, int heads, const float *key_tiles, int count, int head_size, float scale,
                         float *scores, size_t scores_stride);

/// out[h · head_size + i] += Σ_{j < count} p[h · p_stride + j] · v_j[i] (added in order of j, one fused
/// multiply-add each) for `heads` probability rows and i < head_size (a multiple of 16), values stored
/// as IEEE half floats `stride` halves apart. A head's result does not depend on `heads`, and calls over
/// consecutive ranges of positions give the bits of one call over their union. Each lane i is its own
/// sum, so `head_size` may be a slice of the head (values offset to its first lane): the slices' calls
/// give the bits of one call over the whole head.
void kq_attention_values(const float *p, size_t p_stride, int heads, const uint16_t *values, size_t stride, int count,
                         int head_size, float *out);

/// Quantises `tokens` rows of `columns` floats to int16 per block of 32 (q = round(x / d), d = max|x| /
/// 32767). q: tokens × columns; d: tokens × columns/32. For the output head: a logit's error is about
/// 1/65534 of the block's largest activation per element, against 1/254 with int8.
void kq_quantize16(const float *x, int columns, int tokens, int16_t *q, float *d);

/// Q8_0 weights repacked 16 rows at a time for int16 activations: for each group of 16 rows and block
/// of 32 columns, 16 × f16 d, then 16 chunks of 32 bytes; chunk p holds row r's weights 2p, 2p+1 at
/// bytes 2r, 2r+1. As many bytes as the original blocks.
size_t kq_packed_q8_0_size(int rows, int columns);
void kq_pack_q8_0(const void *weights, size_t row_bytes, int rows, int columns, void *packed);

/// y[t · ldy + r] = Σ_c W[r][c] · x[t][c] for the rows of groups [group_begin, group_end) of a repacked
/// Q8_0 matrix, against int16 activations. Per (row, token), block after block:
/// acc = fma(s, d_w · d_x, acc) with s the exact integer dot product: the same bits on every
/// instruction level and for every number of tokens.
void kq_matmul_q8_0_int16(const void *packed, int rows, int columns, int group_begin, int group_end,
                          const int16_t *q, const float *d, int tokens, float *y, size_t ldy);

#endif
