/* One token per row from float32 logits: top-k -> top-p -> min-p -> temperature -> draw, on AVX-512.
 *
 * The same distribution as engine/sampling.py's sampling_distribution (its reference), without a
 * sort of the vocabulary and in a few passes over it per row:
 *   - top-k: the k-th largest logit by selection (quickselect on a copy), tokens below it drop;
 *   - top-p: the survivors' probabilities exp(l - max) binned by their depth below the max (2048 bins
 *     of 0.01 nats, the last one open), the bin where the cumulative mass reaches p found from the
 *     bins, and only that bin's tokens sorted to place the cut exactly; every later filter and the
 *     draw then keep the tokens at or above one logit threshold;
 *   - min-p: p_i >= min_p p_max is l_i >= max + ln(min_p);
 *   - draw: weights exp((l - max) / T) over the kept tokens, summed in double in vocabulary order, and
 *     the first token whose running sum passes u times the total (u: the row's uniform), as
 *     sampling.draw inverts the cumulative distribution.
 * Rows run in parallel; each row's result depends only on its logits, parameters and uniform.
 */
#include <omp.h>
#include <stdlib.h>

#include "simd.h"

#define BINS 2048
#define BIN_WIDTH 0.01f  /* nats */

static float row_max(const float *l, int64_t n) {
    __m512 best = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        best = _mm512_max_ps(best, _mm512_loadu_ps(l + i));
    float top = _mm512_reduce_max_ps(best);
    for (; i < n; i++)
        top = fmaxf(top, l[i]);
    return top;
}

static int64_t row_argmax(const float *l, int64_t n) {
    int64_t at = 0;
    for (int64_t i = 1; i < n; i++)
        if (l[i] > l[at])
            at = i;
    return at;
}

/* The k-th largest of v[0..n) (1 <= k <= n), reordering v. */
static float kth_largest(float *v, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        const float a = v[lo], b = v[(lo + hi) / 2], c = v[hi];  /* median of three as the pivot */
        const float pivot = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) {  /* descending: larger values to the left */
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                const float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return v[want];
    }
    return v[want];
}

static int descending(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static inline int depth_bin(float top, float logit) {
    const float depth = (top - logit) / BIN_WIDTH;
    return depth < (float)(BINS - 1) ? (int)depth : BINS - 1;
}

/* Lanes of x at or above floor (and finite), their weights exp(x - top) and depth bins, as depth_bin. */
static inline __mmask16 weigh16(__m512 x, float top, float floor, __m512 *weights, __m512i *bins) {
    const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(floor), _CMP_GE_OQ)
                         & _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    const __m512 depth = _mm512_div_ps(_mm512_sub_ps(_mm512_set1_ps(top), x), _mm512_set1_ps(BIN_WIDTH));
    *bins = _mm512_cvttps_epi32(_mm512_min_ps(depth, _mm512_set1_ps((float)(BINS - 1))));
    *weights = _mm512_maskz_mov_ps(keep, exp_nonpositive(_mm512_sub_ps(x, _mm512_set1_ps(top))));
    return keep;
}

/* The lowest logit the nucleus keeps: the most probable tokens (logit >= floor) whose exclusive mass is
 * below p of the total (the most probable always). scratch: n floats. */
static float nucleus_floor(const float *l, int64_t n, float top, float floor, float p, float *scratch) {
    double mass[BINS] = {0};
    double total = 0.0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {  /* weights in vectors, added to their bins one by one */
        __m512 w;
        __m512i b;
        __mmask16 keep = weigh16(_mm512_loadu_ps(l + i), top, floor, &w, &b);
        if (!keep)
            continue;
        float weights[16];
        int32_t bins[16];
        _mm512_storeu_ps(weights, w);
        _mm512_storeu_si512((void *)bins, b);
        for (; keep; keep &= keep - 1) {
            const int j = __builtin_ctz(keep);
            mass[bins[j]] += weights[j];
            total += weights[j];
        }
    }
    for (; i < n; i++)
        if (l[i] >= floor && l[i] != -INFINITY) {
            const float e = _mm512_cvtss_f32(exp_nonpositive(_mm512_set1_ps(l[i] - top)));
            mass[depth_bin(top, l[i])] += e;
            total += e;
        }
    const double target = (double)p * total;
    double before = 0.0;  /* mass of the bins above `edge` */
    int edge = 0;
    while (edge < BINS - 1 && before + mass[edge] < target)
        before += mass[edge++];
    /* every token above the edge bin is kept, every one below dropped: sort the edge bin to place the cut */
    int64_t count = 0;
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(l + i);
        __m512 w;
        __m512i b;
        const __mmask16 keep = weigh16(x, top, floor, &w, &b) & _mm512_cmpeq_epi32_mask(b, _mm512_set1_epi32(edge));
        _mm512_mask_compressstoreu_ps(scratch + count, keep, x);
        count += __builtin_popcount((unsigned)keep);
    }
    for (; i < n; i++)
        if (l[i] >= floor && l[i] != -INFINITY && depth_bin(top, l[i]) == edge)
            scratch[count++] = l[i];
    if (count == 0)  /* rounding ran past the last bin: keep what is left */
        return floor;
    qsort(scratch, (size_t)count, sizeof(float), descending);
    float cut = scratch[0];
    for (int64_t j = 0; j < count && before < target; j++) {  /* kept while the mass before it is below p */
        cut = scratch[j];
        before += _mm512_cvtss_f32(exp_nonpositive(_mm512_set1_ps(scratch[j] - top)));
    }
    return cut;
}

/* The token the uniform u picks from weights exp((l - top) / t) over tokens with l >= floor. */
static int64_t draw(const float *l, int64_t n, float top, float floor, float t, double u) {
    const __m512 inv_t = _mm512_set1_ps(1.0f / t), vtop = _mm512_set1_ps(top), vfloor = _mm512_set1_ps(floor);
    double total = 0.0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(l + i);
        const __mmask16 keep = _mm512_cmp_ps_mask(x, vfloor, _CMP_GE_OQ);
        const __m512 w = _mm512_maskz_mov_ps(keep, exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(x, vtop), inv_t)));
        total += (double)_mm512_reduce_add_ps(w);
    }
    for (; i < n; i++)
        if (l[i] >= floor)
            total += exp((double)((l[i] - top) / t));
    const double target = u * total;
    double running = 0.0;
    int64_t last = -1;
    for (i = 0; i + 16 <= n; i += 16) {  /* block sums first, then the block where the sum passes target */
        const __m512 x = _mm512_loadu_ps(l + i);
        const __mmask16 keep = _mm512_cmp_ps_mask(x, vfloor, _CMP_GE_OQ);
        const __m512 w = _mm512_maskz_mov_ps(keep, exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(x, vtop), inv_t)));
        const double block = (double)_mm512_reduce_add_ps(w);
        if (keep)
            last = i + 31 - __builtin_clz((unsigned)keep);  /* its highest kept lane */
        if (running + block > target) {
            float weights[16];
            _mm512_storeu_ps(weights, w);
            for (int j = 0; j < 16; j++) {
                running += weights[j];
                if (weights[j] > 0.0f && running > target)
                    return i + j;
            }
        } else {
            running += block;
        }
    }
    for (; i < n; i++)
        if (l[i] >= floor) {
            last = i;
            running += exp((double)((l[i] - top) / t));
            if (running > target)
                return i;
        }
    return last;  /* rounding left the running sum just short of the target: the last kept token */
}

/* logits (rows, vocab) float32 (bias, penalties and grammar masks applied); per row temperature (0: the
 * argmax), top_k (0: off), top_p (1: off), min_p (0: off) and a uniform in [0, 1); scratch (threads,
 * vocab) float32; out (rows,) int64. */
void sample_rows(const float *logits, int64_t rows, int64_t vocab, const float *temperature, const int64_t *top_k,
                 const float *top_p, const float *min_p, const double *uniforms, float *scratch, int64_t *out,
                 int threads) {
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *l = logits + r * vocab;
        float *mine = scratch + (int64_t)omp_get_thread_num() * vocab;
        const float top = row_max(l, vocab);
        if (temperature[r] <= 0.0f || top == -INFINITY) {
            out[r] = row_argmax(l, vocab);
            continue;
        }
        float floor = -INFINITY;
        if (top_k[r] > 0 && top_k[r] < vocab) {
            memcpy(mine, l, (size_t)vocab * sizeof(float));
            floor = kth_largest(mine, vocab, top_k[r]);
        }
        if (top_p[r] < 1.0f)
            floor = fmaxf(floor, nucleus_floor(l, vocab, top, floor, top_p[r], mine));
        if (min_p[r] > 0.0f)
            floor = fmaxf(floor, top + logf(min_p[r]));
        out[r] = draw(l, vocab, top, floor, temperature[r], uniforms[r]);
    }
}

/* In place: -inf for every token whose bit is clear in its row of the packed bitmask (rows, words) int32
 * (bit t % 32 of word t / 32: a grammar's allowed tokens); sampling.mask_disallowed is the reference. */
void mask_disallowed_f32(float *logits, int64_t rows, int64_t vocab, const int32_t *bitmask, int64_t words) {
    const __m512 minus_inf = _mm512_set1_ps(-INFINITY);
    for (int64_t r = 0; r < rows; r++) {
        float *row = logits + r * vocab;
        const uint32_t *bits = (const uint32_t *)bitmask + r * words;
        for (int64_t w = 0; w < words && w * 32 < vocab; w++) {
            if (bits[w] == 0xFFFFFFFFu)
                continue;
            for (int half = 0; half < 2; half++) {
                const int64_t start = w * 32 + 16 * half;
                if (start >= vocab)
                    break;
                const int64_t n = vocab - start < 16 ? vocab - start : 16;
                const __mmask16 lanes = (__mmask16)((1u << n) - 1);
                const __mmask16 allowed = (__mmask16)(bits[w] >> (16 * half));
                _mm512_mask_storeu_ps(row + start, (__mmask16)(~allowed & lanes), minus_inf);
            }
        }
    }
}
