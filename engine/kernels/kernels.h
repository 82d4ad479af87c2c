/* The native kernels one source calls from another (cpu_decode.c sequences the others). */
#pragma once
#include <stdint.h>

void int4_matmul(const uint16_t *x, int64_t M, int64_t K, const uint8_t *w, const uint32_t *sz, int64_t N,
                 uint16_t *y, int8_t *xq, float *dx, int32_t *sx, int threads);
void int4sym_matmul(const uint16_t *x, int64_t M, int64_t K, const uint8_t *w, const uint16_t *scales, int64_t N,
                    uint16_t *y, int8_t *xq, float *dx, int32_t *sx, int threads);
void int8_matmul(const uint16_t *x, int64_t M, int64_t K, const uint8_t *w, const uint16_t *scales, int64_t N,
                 uint16_t *y, int8_t *xq, float *dx, int32_t *sx, int threads);
void rms_norm_bf16(const uint16_t *x, int64_t rows, int64_t dim, const uint16_t *weight, float eps, uint16_t *y);
void rope_bf16(uint16_t *x, int64_t tokens, int64_t token_stride, int64_t n, int64_t head_dim, const float *cos_sin,
               int neox);
void paged_decode_attention_bf16(const uint16_t *qkv, int64_t rows, int64_t row_stride, int64_t heads,
                                 int64_t kv_heads, int64_t head_dim, uint16_t *k_pool, uint16_t *v_pool,
                                 const int32_t *tables, int64_t table_width, const int32_t *lengths,
                                 int64_t block_size, int64_t window, int64_t first_key, const uint16_t *prior,
                                 const float *prior_lse, uint16_t *out, int threads);
