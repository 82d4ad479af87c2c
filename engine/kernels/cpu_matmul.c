/* int4 and int8 weights x int8 activations on AVX-512 VNNI: y = x @ W^T for PackedLinear's "tiles" layouts.
 *
 * W (N, K) holds 4-bit codes q with a bf16 (scale, zero) pair per output row and group of 32 inputs:
 * w = (q - 8) * scale + zero, as PyTorch's int4 CPU kernel reads them (int4_pack.py).
 * Layout: N / 16 tiles of 16 rows; a tile is K / 8 chunks of 64 bytes, byte 4r + t of a chunk holding
 * row r's code of input 8c + t in its low nibble and of input 8c + 4 + t in its high nibble, so one
 * 64-byte load, a mask and a shift give two vectors of 16 rows x 4 inputs: what vpdpbusd multiplies
 * with four int8 activations broadcast to every lane. Scales: (N / 16, K / 32, 16) uint32, bf16
 * scale in the low half, bf16 zero in the high half: a tile's codes and its scales are two sequential
 * streams (scales strided by N would be a stream per group, more than the prefetchers follow).
 *
 * Q4_0 weights have no zero (w = (q - 8) * scale): their tiles' scales are the bf16 scales alone,
 * (N / 16, K / 32, 16) uint16 (int4sym_matmul).
 *
 * int8: codes c in -127..127 with one bf16 scale per row, w = c * scale, stored as c + 128 (vpdpbusd
 * multiplies unsigned bytes): N / 16 tiles of K / 4 chunks of 64 bytes, byte 4r + t of chunk c
 * holding row r's input 4c + t; the + 128 comes back out as 128 * sum(xq).
 *
 * Activations are quantized per row and group of 32 to int8 with one float scale, as llama.cpp's
 * Q8_0 does: x ~ dx * xq. Per group: sum((q - 8) x) = dx * (sum(q xq) - 8 sum(xq)), and the zero
 * adds zero * dx * sum(xq). Each row's groups are summed in the same order whatever M is and
 * whichever thread takes the tile, so a row's result does not depend on its batch.
 */
#include "simd.h"

#define GROUP 32

/* One row of K bf16 activations -> K int8 codes, K / 32 scales and K / 32 code sums. */
void quantize_row(const uint16_t *x, int64_t K, int8_t *xq, float *dx, int32_t *sx) {
    for (int64_t g = 0; g < K / GROUP; g++) {
        __m512 a = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(x + g * GROUP)));
        __m512 b = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(x + g * GROUP + 16)));
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, _mm512_set1_ps(id)));  /* nearest, ties to even */
        __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, _mm512_set1_ps(id)));
        _mm_storeu_si128((__m128i *)(xq + g * GROUP), _mm512_cvtsepi32_epi8(qa));
        _mm_storeu_si128((__m128i *)(xq + g * GROUP + 16), _mm512_cvtsepi32_epi8(qb));
        dx[g] = d;
        sx[g] = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    }
}

static inline int32_t load_i32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ROWS activation rows (m0 ..) against one tile of 16 output rows; ROWS is a constant, so the
 * accumulators stay in registers. SYMMETRIC (Q4_0): the tile's scales are bf16 scales alone, (K / 32, 16)
 * uint16, and there is no zero term (w = (q - 8) * scale): 10% fewer bytes a weight than with the pairs. */
#define TILE_ROWS(NAME, ROWS, SYMMETRIC)                                                              \
static void NAME##_##ROWS(const uint8_t *wt, const void *tile_scales, int64_t N, int64_t K,           \
                          const int8_t *xq, const float *dx, const int32_t *sx, uint16_t *y) {         \
    const int64_t groups = K / GROUP;                                                                  \
    const __m512i low = _mm512_set1_epi8(0x0F);                                                        \
    __m512 acc[ROWS];                                                                                  \
    for (int r = 0; r < ROWS; r++) acc[r] = _mm512_setzero_ps();                                       \
    for (int64_t g = 0; g < groups; g++) {                                                             \
        __m512i dot[ROWS];                                                                             \
        for (int r = 0; r < ROWS; r++) dot[r] = _mm512_setzero_si512();                                \
        for (int c = 0; c < 4; c++) {                                                                  \
            __m512i w = _mm512_loadu_si512((const void *)(wt + (g * 4 + c) * 64));                     \
            __m512i lo = _mm512_and_si512(w, low);                                                     \
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), low);                               \
            for (int r = 0; r < ROWS; r++) {                                                           \
                const int8_t *xr = xq + r * K + g * GROUP + c * 8;                                     \
                dot[r] = _mm512_dpbusd_epi32(dot[r], lo, _mm512_set1_epi32(load_i32(xr)));             \
                dot[r] = _mm512_dpbusd_epi32(dot[r], hi, _mm512_set1_epi32(load_i32(xr + 4)));         \
            }                                                                                          \
        }                                                                                              \
        __m512 scale, zero = _mm512_setzero_ps();                                                      \
        if (SYMMETRIC) {                                                                               \
            scale = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)tile_scales + g * 16))); \
        } else {                                                                                       \
            __m512i pairs = _mm512_loadu_si512((const void *)((const uint32_t *)tile_scales + g * 16)); \
            scale = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));                                 \
            zero = _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32((int)0xFFFF0000)));   \
        }                                                                                              \
        for (int r = 0; r < ROWS; r++) {                                                               \
            const float d = dx[r * groups + g];                                                        \
            const int32_t s = sx[r * groups + g];                                                      \
            __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(dot[r], _mm512_set1_epi32(8 * s)));         \
            acc[r] = _mm512_fmadd_ps(v, _mm512_mul_ps(scale, _mm512_set1_ps(d)), acc[r]);              \
            if (!SYMMETRIC)                                                                            \
                acc[r] = _mm512_fmadd_ps(zero, _mm512_set1_ps(d * (float)s), acc[r]);                  \
        }                                                                                              \
    }                                                                                                  \
    for (int r = 0; r < ROWS; r++)                                                                     \
        _mm256_storeu_si256((__m256i *)(y + r * N), f32x16_to_bf16(acc[r]));                           \
}

TILE_ROWS(tile_rows, 1, 0)
TILE_ROWS(tile_rows, 2, 0)
TILE_ROWS(tile_rows, 3, 0)
TILE_ROWS(tile_rows, 4, 0)
TILE_ROWS(symmetric_rows, 1, 1)
TILE_ROWS(symmetric_rows, 2, 1)
TILE_ROWS(symmetric_rows, 3, 1)
TILE_ROWS(symmetric_rows, 4, 1)

/* ROWS rows of activations against one tile: wt its weights, tile_scales its scales (the layout's own). */
typedef void (*tile_fn)(const uint8_t *wt, const void *tile_scales, int64_t N, int64_t K, const int8_t *xq,
                        const float *dx, const int32_t *sx, uint16_t *y);

/* y (M, N) bf16 = x (M, K) bf16 @ W^T over tiles of tile_bytes weights and scale_bytes scales each; rows[r]
 * computes r + 1 rows. xq (M, K), dx and sx (M, K / 32): scratch the caller owns. */
static void tiled_matmul(const uint16_t *x, int64_t M, int64_t K, const uint8_t *w, int64_t tile_bytes,
                         const uint8_t *scales, int64_t scale_bytes, int64_t N, uint16_t *y, int8_t *xq,
                         float *dx, int32_t *sx, int threads, const tile_fn rows[4]) {
    const int64_t groups = K / GROUP, tiles = N / 16;
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++)
            quantize_row(x + m * K, K, xq + m * K, dx + m * groups, sx + m * groups);
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < tiles; t++)
            for (int64_t m = 0; m < M; m += 4) {
                const int64_t n = M - m < 4 ? M - m : 4;
                rows[n - 1](w + t * tile_bytes, scales + t * scale_bytes, N, K, xq + m * K, dx + m * groups,
                            sx + m * groups, y + m * N + t * 16);
            }
    }
}

static const tile_fn INT4_ROWS[4] = {tile_rows_1, tile_rows_2, tile_rows_3, tile_rows_4};

/* int4 tiles: K / 8 chunks of 64 bytes a tile; scales (N / 16, K / 32, 16) uint32 (scale, zero) pairs. */
void int4_matmul(const uint16_t *x, int64_t M, int64_t K, const uint8_t *w, const uint32_t *sz, int64_t N,
                 uint16_t *y, int8_t *xq, float *dx, int32_t *sx, int threads) {
    tiled_matmul(x, M, K, w, K * 8, (const uint8_t *)sz, (K / GROUP) * 16 * 4, N, y, xq, dx, sx, threads, INT4_ROWS);
}

static const tile_fn SYMMETRIC_ROWS[4] = {symmetric_rows_1, symmetric_rows_2, symmetric_rows_3, symmetric_rows_4};

/* Symmetric int4 tiles (Q4_0): as int4_matmul's; scales (N / 16, K / 32, 16) bf16, no zeros. */
void int4sym_matmul(const uint16_t *x, int64_t M, int64_t K, const uint8_t *w, const uint16_t *scales, int64_t N,
                    uint16_t *y, int8_t *xq, float *dx, int32_t *sx, int threads) {
    tiled_matmul(x, M, K, w, K * 8, (const uint8_t *)scales, (K / GROUP) * 16 * 2, N, y, xq, dx, sx, threads,
                 SYMMETRIC_ROWS);
}

/* int8 tiles: ROWS activation rows against one tile of 16 output rows. */
#define INT8_TILE_ROWS(ROWS)                                                                          \
static void int8_rows_##ROWS(const uint8_t *wt, const void *tile_scales, int64_t N, int64_t K,        \
                             const int8_t *xq, const float *dx, const int32_t *sx, uint16_t *y) {      \
    const __m512 scale = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)tile_scales));             \
    const int64_t groups = K / GROUP;                                                                  \
    __m512 acc[ROWS];                                                                                  \
    for (int r = 0; r < ROWS; r++) acc[r] = _mm512_setzero_ps();                                       \
    for (int64_t g = 0; g < groups; g++) {                                                             \
        __m512i dot[ROWS];                                                                             \
        for (int r = 0; r < ROWS; r++) dot[r] = _mm512_setzero_si512();                                \
        for (int c = 0; c < 8; c++) {                                                                  \
            __m512i w = _mm512_loadu_si512((const void *)(wt + (g * 8 + c) * 64));                     \
            for (int r = 0; r < ROWS; r++)                                                             \
                dot[r] = _mm512_dpbusd_epi32(dot[r], w,                                                \
                                             _mm512_set1_epi32(load_i32(xq + r * K + g * GROUP + c * 4))); \
        }                                                                                              \
        for (int r = 0; r < ROWS; r++) {                                                               \
            __m512i v = _mm512_sub_epi32(dot[r], _mm512_set1_epi32(128 * sx[r * groups + g]));         \
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(dx[r * groups + g]), acc[r]); \
        }                                                                                              \
    }                                                                                                  \
    for (int r = 0; r < ROWS; r++)                                                                     \
        _mm256_storeu_si256((__m256i *)(y + r * N), f32x16_to_bf16(_mm512_mul_ps(acc[r], scale)));     \
}

INT8_TILE_ROWS(1)
INT8_TILE_ROWS(2)
INT8_TILE_ROWS(3)
INT8_TILE_ROWS(4)

static const tile_fn INT8_ROWS[4] = {int8_rows_1, int8_rows_2, int8_rows_3, int8_rows_4};

/* int8 tiles: K / 4 chunks of 64 bytes a tile; scales (N,) bf16, 16 a tile. */
void int8_matmul(const uint16_t *x, int64_t M, int64_t K, const uint8_t *w, const uint16_t *scales, int64_t N,
                 uint16_t *y, int8_t *xq, float *dx, int32_t *sx, int threads) {
    tiled_matmul(x, M, K, w, K * 16, (const uint8_t *)scales, 16 * 2, N, y, xq, dx, sx, threads, INT8_ROWS);
}

/* GGUF Q4 rows -> the int4 tiles layout, for n_rows (a multiple of 16) rows of row_bytes bytes. A Q4 block
 * holds block_values codes from byte codes_at on: `run` bytes give `run` codes in their low nibbles, then
 * the next `run` codes in their high nibbles (Q4_0 / Q4_1: run 16; Q4_K: run 32). Rows go in parallel. */
void pack_q4_tiles(const uint8_t *rows, int64_t n_rows, int64_t row_bytes, int64_t block_values,
                   int64_t block_bytes, int64_t codes_at, int64_t run, uint8_t *out, int threads) {
    const int64_t blocks = row_bytes / block_bytes, K = blocks * block_values, chunks = K / 8;
    #pragma omp parallel num_threads(threads)
    {
        uint8_t codes[K];
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < n_rows; r++) {
            const uint8_t *row = rows + r * row_bytes;
            for (int64_t b = 0; b < blocks; b++) {
                const uint8_t *held = row + b * block_bytes + codes_at;
                uint8_t *c = codes + b * block_values;
                for (int64_t j = 0; j < block_values / (2 * run); j++)
                    for (int64_t i = 0; i < run; i++) {
                        const uint8_t byte = held[j * run + i];
                        c[j * 2 * run + i] = byte & 0x0F;
                        c[j * 2 * run + run + i] = byte >> 4;
                    }
            }
            uint8_t *tile = out + (r / 16) * chunks * 64 + (r % 16) * 4;
            for (int64_t k = 0; k < chunks; k++)
                for (int t = 0; t < 4; t++)
                    tile[k * 64 + t] = codes[8 * k + t] | (uint8_t)(codes[8 * k + 4 + t] << 4);
        }
    }
}

/* RMSNorm of `rows` bf16 rows of `dim` values (a multiple of 16) by a bf16 weight, in float32:
 * y = x / sqrt(mean(x^2) + eps) * w, rounded to bf16; one call instead of PyTorch's ~8 small ops. */
void rms_norm_bf16(const uint16_t *x, int64_t rows, int64_t dim, const uint16_t *weight, float eps, uint16_t *y) {
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *xr = x + r * dim;
        __m512 squares = _mm512_setzero_ps();
        for (int64_t i = 0; i < dim; i += 16) {
            __m512 v = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(xr + i)));
            squares = _mm512_fmadd_ps(v, v, squares);
        }
        const float scale = 1.0f / sqrtf(_mm512_reduce_add_ps(squares) / (float)dim + eps);
        for (int64_t i = 0; i < dim; i += 16) {
            __m512 v = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(xr + i)));
            __m512 w = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(weight + i)));
            v = _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(scale)), w);
            _mm256_storeu_si256((__m256i *)(y + r * dim + i), f32x16_to_bf16(v));
        }
    }
}

/* RoPE on the first n heads (head_dim bf16 values each) of `tokens` rows token_stride values apart, in
 * place: pair p of a head (x[2p], x[2p + 1])
 * ("norm" layout) or (x[p], x[p + head_dim / 2]) (neox) rotated by the token's (cos, sin) of pair p, in float32,
 * as rope.apply_rotary_emb computes it. cos_sin: (tokens, head_dim / 2, 2) float32. */
void rope_bf16(uint16_t *x, int64_t tokens, int64_t token_stride, int64_t n, int64_t head_dim, const float *cos_sin,
               int neox) {
    const int64_t half = head_dim / 2;
    for (int64_t t = 0; t < tokens; t++) {
        const float *cs = cos_sin + t * head_dim;
        for (int64_t h = 0; h < n; h++) {
            uint16_t *v = x + t * token_stride + h * head_dim;
            for (int64_t p = 0; p < half; p++) {
                uint16_t *a = neox ? v + p : v + 2 * p, *b = neox ? v + p + half : v + 2 * p + 1;
                const float af = bf16_to_f32(*a), bf = bf16_to_f32(*b), c = cs[2 * p], s = cs[2 * p + 1];
                *a = f32_to_bf16(af * c - bf * s);
                *b = f32_to_bf16(af * s + bf * c);
            }
        }
    }
}
