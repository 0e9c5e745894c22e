/* kernels_avx512.c — the AVX-512 kernel set (F/BW/DQ/VL + FMA + F16C, with an
 * optional AVX512_BF16 matmul path). Compiled with the ISA flags of the
 * Makefile; cpu.c calls it only after checking the CPU.
 *
 * Matmul is in "dot form": W[N][K] and x[T][K] are both contiguous along K, so
 * a register tile of MR tokens × NR weight rows keeps MR*NR vector
 * accumulators of partial sums along K and reduces them horizontally once at
 * the end. Each weight row is read once per tile row of tokens; for decode
 * (T <= MR) that is once per call, so the kernel streams W at memory speed.
 * For prefill, tokens are processed in chunks small enough to stay in L2 while
 * a block of NR weight rows stays in L1.
 *
 * Exact paths (f32 activations × weights converted exactly to f32, f32 FMA)
 * match the portable reference up to summation order. The bf16-dot path
 * (BF16 weights only, when cpu.c passes xb) rounds activations to bf16 and
 * uses vdpbf16ps: ~2x the FLOPs and half the activation traffic, at the cost
 * of ~3 significant digits in x (relative error of y ~1e-3 of the row norm).
 *
 * AMX (cpu_kernels_avx512_amx), on the bf16-dot path with K % 32 == 0, same
 * numerics as vdpbf16ps (bf16 products, f32 sums):
 *  - T > 64 (prefill): 32×32 output blocks. Each thread packs a panel of 32
 *    weight rows into the pair-interleaved layout tile B needs (a 16×16
 *    transpose of 32-bit pairs) in its scratch, then sweeps all token blocks
 *    over it.
 *  - 2 <= T <= 64 (batched decode): y^T = W x^T, weights straight from
 *    memory as tile A, only the activations packed. On this machine
 *    vdpbf16ps runs at half rate, so the vector tiles turn compute-bound
 *    from T ~ 4, and repacking the weights costs more than the products
 *    until T is well past 64.
 * Ragged tokens and rows fall back to the vector tiles.
 *
 * What this does not do: no threading (cpu.c). */
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_ref.h"

#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MR 4 /* tokens per register tile */
#define NR 4 /* weight rows per register tile */
/* Software prefetch distance along each weight row of the multi-token vector
 * tiles: rows are short (2-8 KiB) and read four at a time, too briefly for
 * the hardware prefetcher to ramp up on its own. Past a row's end it fetches
 * the start of the rows that follow, which the next tile reads. (The decode
 * and AMX kernels prefetch whole blocks ahead instead; see there.) */
#define PF_BYTES 1024

#define INLINE static inline __attribute__((always_inline))
/* Tile loops must unroll fully so accumulators live in registers; -O2 alone
 * leaves them in memory. */
#define UNROLL _Pragma("GCC unroll 16")

INLINE __mmask16 tail16(int64_t r) { return r >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << r) - 1); }
INLINE __mmask32 tail32(int64_t r) { return r >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << r) - 1); }

/* 16 elements as f32 from each storage type; masked lanes read nothing. */
INLINE __m512 ld_f32(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
INLINE __m512 ld_bf16(const uint16_t *p, __mmask16 m) {
    __m512i u = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
INLINE __m512 ld_f16(const uint16_t *p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
INLINE __m512 ld_any(const void *base, enum dtype dt, size_t i, __mmask16 m) {
    switch (dt) {
    case DT_BF16: return ld_bf16((const uint16_t *)base + i, m);
    case DT_F16: return ld_f16((const uint16_t *)base + i, m);
    default: return ld_f32((const float *)base + i, m);
    }
}

/* f32 -> bf16, round to nearest even, NaN kept quiet (as f32_to_bf16). */
INLINE __m256i cvt_bf16(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}
INLINE void st_any(void *base, enum dtype dt, size_t i, __m512 v, __mmask16 m) {
    switch (dt) {
    case DT_BF16: _mm256_mask_storeu_epi16((uint16_t *)base + i, m, cvt_bf16(v)); break;
    case DT_F16:
        _mm256_mask_storeu_epi16((uint16_t *)base + i, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        break;
    default: _mm512_mask_storeu_ps((float *)base + i, m, v); break;
    }
}

/* Sums of four vectors, as [sum a, sum b, sum c, sum d]. */
INLINE __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512 s = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
    return _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
}

INLINE void store_tile_row(float *y, __m512 a[NR], int nr) {
    __m128 s = reduce4(a[0], a[1], a[2], a[3]);
    if (nr == NR) _mm_storeu_ps(y, s);
    else _mm_mask_storeu_ps(y, (__mmask8)((1u << nr) - 1), s);
}

/* exp(x) for a vector: Cody-Waite reduction to |r| <= ln2/2 and a degree-7
 * Taylor polynomial (truncation 5e-9 relative), scaled by 2^n with scalef so
 * underflow and overflow come out as 0 and inf. Max error ~2 ulp. */
INLINE __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(100.0f)), _mm512_set1_ps(-110.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* ---- matmul ---------------------------------------------------------------- */

/* One MR×NR tile with exact f32 math: y[i][n + j] for i < mr, j < nr. Rows
 * past nr alias the last valid row (computed, not stored) so the inner loop
 * never branches. LD converts 16 weights to f32. */
#define DEF_TILE_F32(NAME, WT, LD)                                                                   \
    INLINE void NAME(float *y, const float *x, const WT *w, int64_t K, int64_t N, int mr, int64_t n,  \
                     int nr) {                                                                       \
        const WT *wr[NR];                                                                            \
        UNROLL                                                                                       \
        for (int j = 0; j < NR; j++) wr[j] = w + (size_t)(n + (j < nr ? j : nr - 1)) * K;            \
        __m512 acc[MR][NR];                                                                          \
        UNROLL                                                                                       \
        for (int i = 0; i < MR; i++)                                                                 \
            UNROLL                                                                                   \
            for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();                            \
        int64_t k = 0;                                                                               \
        for (; k + 16 <= K; k += 16) {                                                               \
            __m512 wv[NR];                                                                           \
            UNROLL                                                                                   \
            for (int j = 0; j < NR; j++) {                                                           \
                _mm_prefetch((const char *)(wr[j] + k) + PF_BYTES, _MM_HINT_T0);                     \
                wv[j] = LD(wr[j] + k, (__mmask16)0xffff);                                            \
            }                                                                                        \
            UNROLL                                                                                   \
            for (int i = 0; i < mr; i++) {                                                           \
                __m512 xv = _mm512_loadu_ps(x + (size_t)i * K + k);                                  \
                UNROLL                                                                               \
                for (int j = 0; j < NR; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);      \
            }                                                                                        \
        }                                                                                            \
        if (k < K) {                                                                                 \
            __mmask16 m = tail16(K - k);                                                             \
            __m512 wv[NR];                                                                           \
            UNROLL                                                                                   \
            for (int j = 0; j < NR; j++) wv[j] = LD(wr[j] + k, m);                                   \
            UNROLL                                                                                   \
            for (int i = 0; i < mr; i++) {                                                           \
                __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)i * K + k);                         \
                UNROLL                                                                               \
                for (int j = 0; j < NR; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);      \
            }                                                                                        \
        }                                                                                            \
        UNROLL                                                                                       \
        for (int i = 0; i < mr; i++) store_tile_row(y + (size_t)i * N + n, acc[i], nr);              \
    }

DEF_TILE_F32(tile_f32, float, ld_f32)
DEF_TILE_F32(tile_bf16, uint16_t, ld_bf16)
DEF_TILE_F32(tile_f16, uint16_t, ld_f16)

/* bf16 × bf16 pairs with f32 accumulation: 32 k per instruction. */
INLINE void tile_bf16dot(float *y, const uint16_t *xb, const uint16_t *w, int64_t K, int64_t N, int mr, int64_t n,
                         int nr) {
    const uint16_t *wr[NR];
    UNROLL
    for (int j = 0; j < NR; j++) wr[j] = w + (size_t)(n + (j < nr ? j : nr - 1)) * K;
    __m512 acc[MR][NR];
    UNROLL
    for (int i = 0; i < MR; i++)
        UNROLL
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512bh wv[NR];
        UNROLL
        for (int j = 0; j < NR; j++) {
            _mm_prefetch((const char *)(wr[j] + k) + PF_BYTES, _MM_HINT_T0);
            wv[j] = (__m512bh)_mm512_loadu_si512(wr[j] + k);
        }
        UNROLL
        for (int i = 0; i < mr; i++) {
            __m512bh xh = (__m512bh)_mm512_loadu_si512(xb + (size_t)i * 2 * K + k);
            __m512bh xl = (__m512bh)_mm512_loadu_si512(xb + (size_t)i * 2 * K + K + k);
            UNROLL
            for (int j = 0; j < NR; j++) acc[i][j] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[i][j], xh, wv[j]), xl, wv[j]);
        }
    }
    if (k < K) {
        __mmask32 m = tail32(K - k);
        __m512bh wv[NR];
        UNROLL
        for (int j = 0; j < NR; j++) wv[j] = (__m512bh)_mm512_maskz_loadu_epi16(m, wr[j] + k);
        UNROLL
        for (int i = 0; i < mr; i++) {
            __m512bh xh = (__m512bh)_mm512_maskz_loadu_epi16(m, xb + (size_t)i * 2 * K + k);
            __m512bh xl = (__m512bh)_mm512_maskz_loadu_epi16(m, xb + (size_t)i * 2 * K + K + k);
            UNROLL
            for (int j = 0; j < NR; j++) acc[i][j] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[i][j], xh, wv[j]), xl, wv[j]);
        }
    }
    UNROLL
    for (int i = 0; i < mr; i++) store_tile_row(y + (size_t)i * N + n, acc[i], nr);
}

/* Decode (one token) on the bf16-dot path: eight weight rows at a time, so
 * eight streams are in flight and the reduction is paid per eight rows. Rows
 * at or past nr alias the last valid row (computed, not stored).
 *
 * Prefetch: the tile's eight rows are one contiguous block of 16·K bytes,
 * and the next tile's block follows it. Each step (32 k) consumes one line
 * of each row, eight lines in all, and prefetches eight lines of the next
 * block, in address order, into L2: one linear stream that runs a tile ahead
 * at the rate the tile consumes, so the next tile's rows are in L2 when it
 * starts. (Per-row prefetch 1 KiB ahead left the start of every tile's rows
 * to demand misses: 75-80% of the read bandwidth over Qwen3-0.6B's matrices
 * against ~95% this way, BENCHMARKS.md.) */
INLINE void tile_bf16dot_1x8(float *y, const uint16_t *xb, const uint16_t *w, int64_t K, int64_t n, int nr) {
    const uint16_t *wr[8];
    UNROLL
    for (int j = 0; j < 8; j++) wr[j] = w + (size_t)(n + (j < nr ? j : nr - 1)) * K;
    const char *pf = (const char *)(w + (size_t)(n + 8) * K);
    __m512 acc[8];
    UNROLL
    for (int j = 0; j < 8; j++) acc[j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32, pf += 512) {
        const __m512bh xh = (__m512bh)_mm512_loadu_si512(xb + k), xl = (__m512bh)_mm512_loadu_si512(xb + K + k);
        UNROLL
        for (int j = 0; j < 8; j++) {
            _mm_prefetch(pf + 64 * j, _MM_HINT_T1);
            const __m512bh wv = (__m512bh)_mm512_loadu_si512(wr[j] + k);
            acc[j] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[j], xh, wv), xl, wv);
        }
    }
    if (k < K) {
        const __mmask32 m = tail32(K - k);
        const __m512bh xh = (__m512bh)_mm512_maskz_loadu_epi16(m, xb + k);
        const __m512bh xl = (__m512bh)_mm512_maskz_loadu_epi16(m, xb + K + k);
        UNROLL
        for (int j = 0; j < 8; j++) {
            const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, wr[j] + k);
            acc[j] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[j], xh, wv), xl, wv);
        }
    }
    const __m128 lo = reduce4(acc[0], acc[1], acc[2], acc[3]), hi = reduce4(acc[4], acc[5], acc[6], acc[7]);
    float out[8];
    _mm_storeu_ps(out, lo);
    _mm_storeu_ps(out + 4, hi);
    for (int j = 0; j < nr; j++) y[n + j] = out[j];
}

/* Specialise a tile on mr so the compiler fully unrolls it into registers. */
#define TILE_SWITCH(FN, ...)                                                  \
    switch (mr) {                                                             \
    case 1: FN(__VA_ARGS__, 1, n, nr); break;                                 \
    case 2: FN(__VA_ARGS__, 2, n, nr); break;                                 \
    case 3: FN(__VA_ARGS__, 3, n, nr); break;                                 \
    default: FN(__VA_ARGS__, 4, n, nr); break;                                \
    }

/* Tokens per chunk so a chunk of activations (elem bytes each) stays in L2. */
static int token_chunk(int64_t K, size_t elem, int T) {
    int64_t tb = (int64_t)(768 * 1024) / (K * (int64_t)elem);
    tb = tb / MR * MR;
    if (tb < MR) tb = MR;
    return tb > T ? T : (int)tb;
}

static void matmul_rows(float *y, const float *x, const uint16_t *xb, const struct bk_weight *w, int T,
                        int64_t n0, int64_t n1, void *scratch) {
    const int64_t K = w->cols, N = w->rows;
    if (xb && T == 1) {
        for (int64_t n = n0; n < n1; n += 8) tile_bf16dot_1x8(y, xb, (const uint16_t *)w->data, K, n, n1 - n < 8 ? (int)(n1 - n) : 8);
        return;
    }
    const int tb = token_chunk(K, 4, T);
    for (int t0 = 0; t0 < T; t0 += tb) {
        const int t1 = t0 + tb < T ? t0 + tb : T;
        for (int64_t n = n0; n < n1; n += NR) {
            const int nr = n1 - n < NR ? (int)(n1 - n) : NR;
            for (int t = t0; t < t1; t += MR) {
                const int mr = t1 - t < MR ? t1 - t : MR;
                float *yt = y + (size_t)t * N;
                if (xb) {
                    TILE_SWITCH(tile_bf16dot, yt, xb + (size_t)t * 2 * K, (const uint16_t *)w->data, K, N)
                } else if (w->dtype == DT_BF16) {
                    TILE_SWITCH(tile_bf16, yt, x + (size_t)t * K, (const uint16_t *)w->data, K, N)
                } else if (w->dtype == DT_F16) {
                    TILE_SWITCH(tile_f16, yt, x + (size_t)t * K, (const uint16_t *)w->data, K, N)
                } else {
                    TILE_SWITCH(tile_f32, yt, x + (size_t)t * K, (const float *)w->data, K, N)
                }
            }
        }
    }
}

static void to_bf16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16((int64_t)(n - i));
        _mm256_mask_storeu_epi16(dst + i, m, cvt_bf16(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

static void to_bf16_split(uint16_t *hi, uint16_t *lo, const float *src, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16((int64_t)(n - i));
        __m512 x = _mm512_maskz_loadu_ps(m, src + i);
        __m256i h = cvt_bf16(x);
        __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        _mm256_mask_storeu_epi16(hi + i, m, h);
        _mm256_mask_storeu_epi16(lo + i, m, cvt_bf16(_mm512_sub_ps(x, hf)));
    }
}

/* ---- elementwise ------------------------------------------------------------ */

static void embed(float *out, const struct bk_weight *table, const int32_t *ids, int T, float scale) {
    const int64_t K = table->cols;
    const __m512 s = _mm512_set1_ps(scale);
    for (int t = 0; t < T; t++) {
        size_t base = (size_t)ids[t] * K;
        for (int64_t k = 0; k < K; k += 16) {
            __mmask16 m = tail16(K - k);
            _mm512_mask_storeu_ps(out + (size_t)t * K + k, m,
                                  _mm512_mul_ps(ld_any(table->data, table->dtype, base + k, m), s));
        }
    }
}

static void rmsnorm(float *y, const float *x, const float *w, int R, int n, float eps) {
    for (int r = 0; r < R; r++) {
        const float *xr = x + (size_t)r * n;
        float *yr = y + (size_t)r * n;
        __m512 ss = _mm512_setzero_ps();
        for (int i = 0; i < n; i += 16) {
            __m512 v = _mm512_maskz_loadu_ps(tail16(n - i), xr + i);
            ss = _mm512_fmadd_ps(v, v, ss);
        }
        const __m512 inv = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(ss) / (float)n + eps));
        for (int i = 0; i < n; i += 16) {
            __mmask16 m = tail16(n - i);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + i), inv);
            if (w) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
            _mm512_mask_storeu_ps(yr + i, m, v);
        }
    }
}

/* cos/sin are computed once per (token, frequency) with libm and applied to
 * all heads with SIMD. Interleaved pairs (2i, 2i+1) use a pair swap and a
 * sign-folded sin table so both layouts share one loop shape. */
#define ROPE_MAX 512
static void rope(float *x, const int32_t *pos, int T, int H, int D, const struct bk_rope *r) {
    const int half = r->rot_dim / 2;
    if (r->rot_dim > ROPE_MAX) { ref_rope(x, pos, T, H, D, r); return; }
    float cs[ROPE_MAX], sn[ROPE_MAX];
    for (int t = 0; t < T; t++) {
        ref_rope_table(cs, sn, pos[t], r);
        for (int h = 0; h < H; h++) {
            float *xh = x + ((size_t)t * H + h) * D;
            if (r->neox) {
                for (int i = 0; i < half; i += 16) {
                    __mmask16 m = tail16(half - i);
                    __m512 c = _mm512_maskz_loadu_ps(m, cs + i), s = _mm512_maskz_loadu_ps(m, sn + i);
                    __m512 x0 = _mm512_maskz_loadu_ps(m, xh + i), x1 = _mm512_maskz_loadu_ps(m, xh + i + half);
                    _mm512_mask_storeu_ps(xh + i, m, _mm512_fmsub_ps(x0, c, _mm512_mul_ps(x1, s)));
                    _mm512_mask_storeu_ps(xh + i + half, m, _mm512_fmadd_ps(x1, c, _mm512_mul_ps(x0, s)));
                }
            } else {
                for (int i = 0; i < r->rot_dim; i += 16) {
                    __mmask16 m = tail16(r->rot_dim - i);
                    __m512 c = _mm512_maskz_loadu_ps(m, cs + i), s = _mm512_maskz_loadu_ps(m, sn + i);
                    __m512 v = _mm512_maskz_loadu_ps(m, xh + i);
                    __m512 sw = _mm512_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1));
                    _mm512_mask_storeu_ps(xh + i, m, _mm512_fmadd_ps(v, c, _mm512_mul_ps(sw, s)));
                }
            }
        }
    }
}

/* gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u): one exp, no
 * cancellation where tanh(u) is near -1. Exact-erf GELU stays scalar. */
static void glu(float *out, const float *gate, const float *up, int T, int F, int ld, enum bk_act act) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int t = 0; t < T; t++) {
        const float *g = gate + (size_t)t * ld, *u = up + (size_t)t * ld;
        float *o = out + (size_t)t * F;
        if (act == BK_ACT_GELU) {
            for (int f = 0; f < F; f++) o[f] = ref_act(g[f], act) * u[f];
            continue;
        }
        for (int f = 0; f < F; f += 16) {
            __mmask16 m = tail16(F - f);
            __m512 gv = _mm512_maskz_loadu_ps(m, g + f), uv = _mm512_maskz_loadu_ps(m, u + f), a;
            switch (act) {
            case BK_ACT_SILU: a = _mm512_div_ps(gv, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv)))); break;
            case BK_ACT_GELU_TANH: {
                __m512 g3 = _mm512_mul_ps(_mm512_mul_ps(gv, gv), gv);
                __m512 z = _mm512_mul_ps(_mm512_fmadd_ps(g3, _mm512_set1_ps(0.044715f), gv),
                                         _mm512_set1_ps(-2.0f * 0.7978845608028654f));
                a = _mm512_div_ps(gv, _mm512_add_ps(one, exp512(z)));
                break;
            }
            default: a = _mm512_max_ps(gv, _mm512_setzero_ps()); break;
            }
            _mm512_mask_storeu_ps(o + f, m, _mm512_mul_ps(a, uv));
        }
    }
}

static void kv_store(const struct bk_kv *kv, const float *k, const float *v, const int32_t *slots, int T) {
    const size_t row = (size_t)kv->n_kv_heads * kv->head_dim;
    for (int t = 0; t < T; t++) {
        if (slots[t] < 0) continue; /* backend.h: no store */
        size_t base = (size_t)slots[t] * row;
        for (size_t i = 0; i < row; i += 16) {
            __mmask16 m = tail16((int64_t)(row - i));
            st_any(kv->k, kv->dtype, base + i, _mm512_maskz_loadu_ps(m, k + (size_t)t * row + i), m);
            st_any(kv->v, kv->dtype, base + i, _mm512_maskz_loadu_ps(m, v + (size_t)t * row + i), m);
        }
    }
}

static void add_scaled(float *y, const float *x, float s, size_t n) {
    const __m512 sv = _mm512_set1_ps(s);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16((int64_t)(n - i));
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), sv,
                                                        _mm512_maskz_loadu_ps(m, y + i)));
    }
}

static void scale(float *x, size_t n, float s) {
    const __m512 sv = _mm512_set1_ps(s);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16((int64_t)(n - i));
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), sv));
    }
}

/* ---- attention ---------------------------------------------------------------- */

/* Query row t, the G = H/Hkv query heads sharing kv head hk. Two passes over
 * the visible keys: scores for all G heads (each key row read once from
 * memory, reused from L1 by the other heads), softmax with a vector exp, then
 * out = sum_j p_j v_j, normalised once at the end. */
static void attention(float *out, const float *q, const struct bk_kv *kv, const struct bk_attn_batch *b,
                      const struct bk_attn_params *p, int s, int t, int hk, float *scratch) {
    const int H = p->n_heads, Hkv = p->n_kv_heads, D = p->head_dim, B = kv->block_size;
    const int G = H / Hkv;
    const int q_begin = b->query_start[s], q_end = b->query_start[s + 1];
    const int L = b->seq_len[s];
    const int32_t *bt = b->block_table + (size_t)s * b->max_blocks;
    const size_t row = (size_t)Hkv * D;
    const int qpos = L - (q_end - q_begin) + (t - q_begin);
    int kstart = 0;
    if (p->sliding_window > 0 && qpos - p->sliding_window + 1 > 0) kstart = qpos - p->sliding_window + 1;
    const int n = qpos - kstart + 1;
    const float *qg = q + ((size_t)t * H + (size_t)hk * G) * D; /* [G][D] */
    float *og = out + ((size_t)t * H + (size_t)hk * G) * D;
    const enum dtype dt = kv->dtype;

    for (int j = 0; j < n; j++) {
        const int pos = kstart + j;
        const size_t base = ((size_t)bt[pos / B] * B + (size_t)(pos % B)) * row + (size_t)hk * D;
        for (int g = 0; g < G; g++) {
            __m512 acc = _mm512_setzero_ps();
            for (int d = 0; d < D; d += 16) {
                __mmask16 m = tail16(D - d);
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, qg + (size_t)g * D + d),
                                      ld_any(kv->k, dt, base + d, m), acc);
            }
            float dot = _mm512_reduce_add_ps(acc) * p->scale;
            if (p->softcap > 0) dot = p->softcap * tanhf(dot / p->softcap);
            scratch[(size_t)g * n + j] = dot;
        }
    }
    float inv_sum[64];
    float *inv = G <= 64 ? inv_sum : NULL;
    for (int g = 0; g < G; g++) {
        float *sc = scratch + (size_t)g * n;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < n; j += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail16(n - j), sc + j));
        const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        __m512 sum = _mm512_setzero_ps();
        for (int j = 0; j < n; j += 16) {
            __mmask16 m = tail16(n - j);
            __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sc + j), mv));
            e = _mm512_maskz_mov_ps(m, e);
            _mm512_mask_storeu_ps(sc + j, m, e);
            sum = _mm512_add_ps(sum, e);
        }
        float is = 1.0f / _mm512_reduce_add_ps(sum);
        if (inv) inv[g] = is;
        else for (int j = 0; j < n; j++) sc[j] *= is; /* G > 64: normalise weights instead */
        for (int d = 0; d < D; d += 16) _mm512_mask_storeu_ps(og + (size_t)g * D + d, tail16(D - d), _mm512_setzero_ps());
    }
    for (int j = 0; j < n; j++) {
        const int pos = kstart + j;
        const size_t base = ((size_t)bt[pos / B] * B + (size_t)(pos % B)) * row + (size_t)hk * D;
        for (int g = 0; g < G; g++) {
            const __m512 wv = _mm512_set1_ps(scratch[(size_t)g * n + j]);
            float *o = og + (size_t)g * D;
            for (int d = 0; d < D; d += 16) {
                __mmask16 m = tail16(D - d);
                _mm512_mask_storeu_ps(o + d, m, _mm512_fmadd_ps(wv, ld_any(kv->v, dt, base + d, m),
                                                                _mm512_maskz_loadu_ps(m, o + d)));
            }
        }
    }
    if (inv)
        for (int g = 0; g < G; g++) scale(og + (size_t)g * D, (size_t)D, inv[g]);
}


/* Blocked attention for prefill: query rows [t0, t1) of sequence s and the G
 * query heads of kv head hk form R = (t1 - t0) * G <= 32 query vectors, held
 * transposed (QT[d][r], two vectors of 16 lanes) so one key row read from the
 * cache serves all R of them: S[j][r] = sum_d QT[d][r] * k_j[d] by broadcast
 * FMAs, an online softmax per lane, and OT[d][r] += p_j[r] * v_j[d]. Keys come
 * in chunks of 16, converted once to f32. Lane r = (row tl, head g) =
 * (r / G, r % G); its position is qpos0 + tl. Softcap is not handled here
 * (cpu.c keeps those layers on the per-row kernel).
 * scratch: attention_block_scratch(D) floats. */
#define ABLK 16
static size_t attention_block_scratch(int D) { return (size_t)D * 32 * 2 + ABLK * 32 + (size_t)ABLK * D * 2 + 64; }

static void attention_block(float *out, const float *q, const struct bk_kv *kv, const struct bk_attn_batch *b,
                            const struct bk_attn_params *p, int s, int t0, int t1, int hk, float *scratch) {
    const int H = p->n_heads, Hkv = p->n_kv_heads, D = p->head_dim, B = kv->block_size;
    const int G = H / Hkv, nq = t1 - t0, R = nq * G;
    const int q_begin = b->query_start[s], q_end = b->query_start[s + 1], L = b->seq_len[s];
    const int32_t *bt = b->block_table + (size_t)s * b->max_blocks;
    const size_t row = (size_t)Hkv * D;
    const int qpos0 = L - (q_end - q_begin) + (t0 - q_begin), qlast = qpos0 + nq - 1;
    const int W = p->sliding_window;
    float *QT = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63); /* [D][32] */
    float *OT = QT + (size_t)D * 32;                                    /* [D][32] */
    float *P = OT + (size_t)D * 32;                                     /* [ABLK][32] */
    float *kf = P + ABLK * 32, *vf = kf + (size_t)ABLK * D;             /* [ABLK][D] */

    for (int d = 0; d < D; d++)
        for (int r = 0; r < 32; r++)
            QT[d * 32 + r] = r < R ? q[((size_t)(t0 + r / G) * H + (size_t)hk * G + r % G) * D + d] * p->scale : 0.0f;
    memset(OT, 0, (size_t)D * 32 * sizeof(float));
    int lpos[32];
    for (int r = 0; r < 32; r++) lpos[r] = r < R ? qpos0 + r / G : -1; /* -1: padding lane, never valid */
    const __m512i pos0 = _mm512_loadu_si512(lpos), pos1 = _mm512_loadu_si512(lpos + 16);
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, l0 = _mm512_setzero_ps(), l1 = l0;

    int kstart = 0;
    if (W > 0 && qpos0 - W + 1 > 0) kstart = qpos0 - W + 1;
    for (int j0 = kstart; j0 <= qlast; j0 += ABLK) {
        const int nk = qlast + 1 - j0 < ABLK ? qlast + 1 - j0 : ABLK;
        for (int j = 0; j < nk; j++) {
            const int pos = j0 + j;
            const size_t base = ((size_t)bt[pos / B] * B + (size_t)(pos % B)) * row + (size_t)hk * D;
            for (int d = 0; d < D; d += 16) {
                __mmask16 m = tail16(D - d);
                _mm512_mask_storeu_ps(kf + (size_t)j * D + d, m, ld_any(kv->k, kv->dtype, base + d, m));
                _mm512_mask_storeu_ps(vf + (size_t)j * D + d, m, ld_any(kv->v, kv->dtype, base + d, m));
            }
        }
        /* scores, masked to -inf where key j is after the lane's query or
         * outside its window */
        __m512 bm0 = _mm512_set1_ps(-INFINITY), bm1 = bm0;
        for (int j = 0; j < nk; j++) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0;
            const float *kj = kf + (size_t)j * D;
            for (int d = 0; d < D; d++) {
                const __m512 kd = _mm512_set1_ps(kj[d]);
                a0 = _mm512_fmadd_ps(_mm512_load_ps(QT + d * 32), kd, a0);
                a1 = _mm512_fmadd_ps(_mm512_load_ps(QT + d * 32 + 16), kd, a1);
            }
            const __m512i jv = _mm512_set1_epi32(j0 + j);
            __mmask16 v0 = _mm512_cmple_epi32_mask(jv, pos0), v1 = _mm512_cmple_epi32_mask(jv, pos1);
            if (W > 0) {
                const __m512i wv = _mm512_set1_epi32(W);
                v0 &= _mm512_cmplt_epi32_mask(_mm512_sub_epi32(pos0, jv), wv);
                v1 &= _mm512_cmplt_epi32_mask(_mm512_sub_epi32(pos1, jv), wv);
            }
            a0 = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), v0, a0);
            a1 = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), v1, a1);
            _mm512_store_ps(P + j * 32, a0);
            _mm512_store_ps(P + j * 32 + 16, a1);
            bm0 = _mm512_max_ps(bm0, a0);
            bm1 = _mm512_max_ps(bm1, a1);
        }
        /* online softmax; a lane with nothing visible yet keeps m = -inf and
         * subtracts 0 instead, so exp never sees -inf - -inf */
        const __m512 nm0 = _mm512_max_ps(m0, bm0), nm1 = _mm512_max_ps(m1, bm1);
        const __m512 ninf = _mm512_set1_ps(-INFINITY);
        const __m512 u0 = _mm512_mask_mov_ps(nm0, _mm512_cmp_ps_mask(nm0, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
        const __m512 u1 = _mm512_mask_mov_ps(nm1, _mm512_cmp_ps_mask(nm1, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
        const __m512 al0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m0, ninf, _CMP_NEQ_OQ), exp512(_mm512_sub_ps(m0, u0)));
        const __m512 al1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m1, ninf, _CMP_NEQ_OQ), exp512(_mm512_sub_ps(m1, u1)));
        l0 = _mm512_mul_ps(l0, al0);
        l1 = _mm512_mul_ps(l1, al1);
        for (int j = 0; j < nk; j++) {
            __m512 s0 = _mm512_load_ps(P + j * 32), s1 = _mm512_load_ps(P + j * 32 + 16);
            __m512 e0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s0, ninf, _CMP_NEQ_OQ), exp512(_mm512_sub_ps(s0, u0)));
            __m512 e1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s1, ninf, _CMP_NEQ_OQ), exp512(_mm512_sub_ps(s1, u1)));
            _mm512_store_ps(P + j * 32, e0);
            _mm512_store_ps(P + j * 32 + 16, e1);
            l0 = _mm512_add_ps(l0, e0);
            l1 = _mm512_add_ps(l1, e1);
        }
        m0 = nm0;
        m1 = nm1;
        for (int d = 0; d < D; d++) {
            __m512 o0 = _mm512_mul_ps(_mm512_load_ps(OT + d * 32), al0);
            __m512 o1 = _mm512_mul_ps(_mm512_load_ps(OT + d * 32 + 16), al1);
            for (int j = 0; j < nk; j++) {
                const __m512 vd = _mm512_set1_ps(vf[(size_t)j * D + d]);
                o0 = _mm512_fmadd_ps(_mm512_load_ps(P + j * 32), vd, o0);
                o1 = _mm512_fmadd_ps(_mm512_load_ps(P + j * 32 + 16), vd, o1);
            }
            _mm512_store_ps(OT + d * 32, o0);
            _mm512_store_ps(OT + d * 32 + 16, o1);
        }
    }
    float inv[32];
    _mm512_storeu_ps(inv, _mm512_div_ps(_mm512_set1_ps(1.0f), l0));
    _mm512_storeu_ps(inv + 16, _mm512_div_ps(_mm512_set1_ps(1.0f), l1));
    for (int r = 0; r < R; r++) {
        float *o = out + ((size_t)(t0 + r / G) * H + (size_t)hk * G + r % G) * D;
        for (int d = 0; d < D; d++) o[d] = OT[d * 32 + r] * inv[r];
    }
}

/* ---- AMX ------------------------------------------------------------------------ */

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

bool avx512_amx_init(void) {
    static atomic_int state; /* 0 unknown, 1 on, 2 off */
    int st = atomic_load(&state);
    if (st) return st == 1;
    unsigned a, b, c, d;
    bool ok = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) && (d & (1u << 22)); /* AMX-TILE, AMX-BF16 */
    /* Linux hands out the 8 KiB tile state only on request, per process. */
    if (ok) ok = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    atomic_store(&state, ok ? 1 : 2);
    return ok;
}

struct amx_tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* out[c] = column c of the 16×16 matrix of 32-bit elements in[0..15]. */
INLINE void transpose16x16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) { /* u[4i + c], 128-bit lane l: column 4l + c of rows 4i..4i+3 */
        u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int c = 0; c < 4; c++) {
        __m512i vlo = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88), vhi = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
        __m512i wlo = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88), whi = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
        r[0 + c] = _mm512_shuffle_i32x4(vlo, wlo, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(vhi, whi, 0x88);
        r[8 + c] = _mm512_shuffle_i32x4(vlo, wlo, 0xdd);
        r[12 + c] = _mm512_shuffle_i32x4(vhi, whi, 0xdd);
    }
}

/* y[t][n] for t < T (a multiple of 32), n in [n0, n1) (a multiple of 32 long).
 * pack holds 32 * K bf16. Tiles: 0-3 accumulators (2×2 blocks of 16×16 f32),
 * 4-5 activations (16 tokens × 32 k), 6-7 packed weights (16 k-pairs × 16 rows). */
__attribute__((target("amx-tile,amx-bf16"))) static void amx_block(float *y, const uint16_t *xb, const uint16_t *w,
                                                                   int64_t K, int64_t N, int T, int64_t n0,
                                                                   int64_t n1, uint32_t *pack) {
    struct amx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    _tile_loadconfig(&cfg);
    const int64_t KB = K / 32;
    const size_t xs = (size_t)K * 4, ys = (size_t)N * 4; /* xb rows: hi[K] lo[K] */
    const char *wend = (const char *)(w + (size_t)n1 * K);
    for (int64_t n = n0; n < n1; n += 32) {
        /* pack[(kb*2 + j)*256 + kp*16 + i] = pair kp of block kb of row n + 16j + i;
         * meanwhile the next panel (64·K contiguous bytes) is prefetched into
         * L2 in address order, 32 lines per block, so its packing finds it
         * there after this panel's token sweep (decode-sized T: a short
         * sweep, and 32 row streams the hardware prefetcher does not follow) */
        const char *pf = (const char *)(w + (size_t)(n + 32) * K);
        const bool pf_on = pf < wend;
        for (int64_t kb = 0; kb < KB; kb++, pf += 2048) {
            if (pf_on)
                for (int l = 0; l < 32; l++) _mm_prefetch(pf + 64 * l, _MM_HINT_T1);
            for (int j = 0; j < 2; j++) {
                __m512i r[16];
                for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(w + (size_t)(n + 16 * j + i) * K + kb * 32);
                transpose16x16(r);
                uint32_t *dst = pack + (size_t)(kb * 2 + j) * 256;
                for (int i = 0; i < 16; i++) _mm512_store_si512(dst + 16 * i, r[i]);
            }
        }
        for (int t = 0; t < T; t += 32) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            const uint16_t *a0 = xb + (size_t)t * 2 * K, *a1 = a0 + 32 * (size_t)K;
            for (int64_t kb = 0; kb < KB; kb++) {
                _tile_loadd(4, a0 + kb * 32, xs);
                _tile_loadd(5, a1 + kb * 32, xs);
                _tile_loadd(6, pack + (size_t)(kb * 2) * 256, 64);
                _tile_loadd(7, pack + (size_t)(kb * 2 + 1) * 256, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
                _tile_loadd(4, a0 + K + kb * 32, xs); /* the lo parts of the same tokens */
                _tile_loadd(5, a1 + K + kb * 32, xs);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            float *yt = y + (size_t)t * N + n;
            _tile_stored(0, yt, ys);
            _tile_stored(1, yt + 16, ys);
            _tile_stored(2, yt + 16 * N, ys);
            _tile_stored(3, yt + 16 * N + 16, ys);
        }
    }
    _tile_release();
}

/* Small T (2..64, batched decode): the transposed product y^T = W · x^T, so
 * the weights feed tile A straight from memory (16 rows × 32 k, their
 * natural layout) and only the activations are packed into tile B's pair
 * layout. Each weight byte is loaded once per call with no repacking (the
 * 32×32 blocks below repack every weight panel, which costs more than the
 * tile products at these T), which keeps batched decode near memory speed
 * where the vector tiles become compute-bound.
 *
 * B holds 16 columns. T <= 8: the hi parts of the tokens go in columns 0..7
 * and the lo parts in 8..15, so one tile product per weight tile covers both
 * (the two halves of C are added at the end). Otherwise TB = ceil(T / 16)
 * token blocks, each a hi and a lo B tile, and with four accumulator tiles a
 * pass covers G = 4 / TB row groups of 16 (64 rows for T <= 16, 32 for
 * T <= 32, 16 beyond).
 *
 * Packing (amx_pack_x, once per matmul and thread) and unpacking are 16×16
 * transposes of 32-bit pairs (scalar loops here cost as much as the tile
 * products at T = 16). A pass's rows are one
 * contiguous block (16·G rows × K); the pass prefetches the next one into L2
 * in address order at the rate it consumes its own, since its rows are 16·G
 * separate streams, more than the hardware prefetcher follows (per-row
 * software prefetch measured slower than none).
 * Tiles: 0-3 accumulators, 4-5 activations (also 7 where G = 1), 5-7 weights.
 * pack: planes of K/32 KiB; 1 (T <= 8) or 2·TB. */
/* The activations of amx_small in tile B's layout, once per matmul and
 * thread (matmul_pack): plane p, block kb: pack[p*hs + kb*256 + kp*16 + c] =
 * pair kp of block kb of column c. T <= 8: one plane, column c < 8 the hi
 * part of token c, c >= 8 the lo part of token c - 8. Otherwise plane
 * 2h + hl: part hl of token 16h + c. Columns past the tokens are zero. */
static void amx_pack_x(const uint16_t *xb, int T, int64_t K, uint32_t *pack) {
    const int64_t KB = K / 32;
    const size_t hs = (size_t)KB * 256; /* uint32 per plane */
    const uint32_t *x32 = (const uint32_t *)xb; /* per token: K/2 hi pairs, then K/2 lo pairs */
    const bool comb = T <= 8;
    const int TB = (T + 15) / 16;
    for (int p = 0; p < (comb ? 1 : 2 * TB); p++) {
        const uint32_t *src[16];
        for (int c = 0; c < 16; c++) {
            const int t = comb ? c % 8 : 16 * (p / 2) + c, hl = comb ? c / 8 : p % 2;
            src[c] = t < T ? x32 + (size_t)t * K + (size_t)hl * (K / 2) : NULL;
        }
        for (int64_t kb = 0; kb < KB; kb++) {
            __m512i r[16];
            for (int c = 0; c < 16; c++) r[c] = src[c] ? _mm512_loadu_si512(src[c] + kb * 16) : _mm512_setzero_si512();
            transpose16x16(r); /* r[kp] = pair kp of every column */
            uint32_t *dst = pack + p * hs + (size_t)kb * 256;
            for (int i = 0; i < 16; i++) _mm512_store_si512(dst + 16 * i, r[i]);
        }
    }
}

/* y for rows [n0, n1) (a multiple of 64 long) from pack as amx_pack_x left it. */
__attribute__((target("amx-tile,amx-bf16"))) static void amx_small(float *y, const uint16_t *w, int64_t K,
                                                                   int64_t N, int T, int64_t n0, int64_t n1,
                                                                   const uint32_t *pack) {
    const int64_t KB = K / 32;
    const size_t hs = (size_t)KB * 256;
    const bool comb = T <= 8;
    const int TB = (T + 15) / 16, G = TB == 1 ? 4 : TB == 2 ? 2 : 1, R = 16 * G;
    struct amx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    if (!comb && T < 16)
        for (int i = 0; i < 6; i++) cfg.colsb[i] = (uint16_t)(T * 4); /* C and B: T columns */
    _tile_loadconfig(&cfg);
    const size_t ws = (size_t)K * 2;
    _Alignas(64) float cbuf[4][16][16] = { { { 0 } } }; /* columns past T stay 0 */
    const char *wend = (const char *)(w + (size_t)n1 * K);
    for (int64_t n = n0; n < n1; n += R) {
        const uint16_t *w0 = w + (size_t)n * K;
        const char *pf = (const char *)(w0 + (size_t)R * K);
        const bool pf_on = pf < wend; /* the next pass is this thread's */
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t kb = 0; kb < KB; kb++, pf += (size_t)R * 64) {
            const uint16_t *wk = w0 + kb * 32;
            const uint32_t *pk = pack + kb * 256;
            if (pf_on)
                for (int l = 0; l < R; l++) _mm_prefetch(pf + 64 * l, _MM_HINT_T1);
            if (comb) {
                _tile_loadd(4, pk, 64);
                _tile_loadd(5, wk, ws);
                _tile_loadd(6, wk + 16 * K, ws);
                _tile_loadd(7, wk + 32 * K, ws);
                _tile_dpbf16ps(0, 5, 4);
                _tile_dpbf16ps(1, 6, 4);
                _tile_loadd(5, wk + 48 * K, ws);
                _tile_dpbf16ps(2, 7, 4);
                _tile_dpbf16ps(3, 5, 4);
            } else if (TB == 1) {
                _tile_loadd(4, pk, 64);
                _tile_loadd(5, pk + hs, 64);
                _tile_loadd(6, wk, ws);
                _tile_dpbf16ps(0, 6, 4);
                _tile_dpbf16ps(0, 6, 5);
                _tile_loadd(7, wk + 16 * K, ws);
                _tile_dpbf16ps(1, 7, 4);
                _tile_dpbf16ps(1, 7, 5);
                _tile_loadd(6, wk + 32 * K, ws);
                _tile_dpbf16ps(2, 6, 4);
                _tile_dpbf16ps(2, 6, 5);
                _tile_loadd(7, wk + 48 * K, ws);
                _tile_dpbf16ps(3, 7, 4);
                _tile_dpbf16ps(3, 7, 5);
            } else if (TB == 2) { /* C tile 2g + h */
                _tile_loadd(6, wk, ws);
                _tile_loadd(4, pk, 64);
                _tile_loadd(7, wk + 16 * K, ws);
                _tile_loadd(5, pk + hs, 64);
                _tile_dpbf16ps(0, 6, 4);
                _tile_dpbf16ps(2, 7, 4);
                _tile_dpbf16ps(0, 6, 5);
                _tile_dpbf16ps(2, 7, 5);
                _tile_loadd(4, pk + 2 * hs, 64);
                _tile_loadd(5, pk + 3 * hs, 64);
                _tile_dpbf16ps(1, 6, 4);
                _tile_dpbf16ps(3, 7, 4);
                _tile_dpbf16ps(1, 6, 5);
                _tile_dpbf16ps(3, 7, 5);
            } else { /* TB 3 or 4, one row group: C tile h */
                _tile_loadd(6, wk, ws);
                _tile_loadd(4, pk, 64);
                _tile_loadd(5, pk + hs, 64);
                _tile_dpbf16ps(0, 6, 4);
                _tile_loadd(7, pk + 2 * hs, 64);
                _tile_dpbf16ps(0, 6, 5);
                _tile_loadd(4, pk + 3 * hs, 64);
                _tile_dpbf16ps(1, 6, 7);
                _tile_dpbf16ps(1, 6, 4);
                _tile_loadd(5, pk + 4 * hs, 64);
                _tile_loadd(7, pk + 5 * hs, 64);
                _tile_dpbf16ps(2, 6, 5);
                _tile_dpbf16ps(2, 6, 7);
                if (TB == 4) {
                    _tile_loadd(4, pk + 6 * hs, 64);
                    _tile_loadd(5, pk + 7 * hs, 64);
                    _tile_dpbf16ps(3, 6, 4);
                    _tile_dpbf16ps(3, 6, 5);
                }
            }
        }
        _tile_stored(0, cbuf[0], 64);
        _tile_stored(1, cbuf[1], 64);
        _tile_stored(2, cbuf[2], 64);
        _tile_stored(3, cbuf[3], 64);
        for (int ci = 0; ci < 4; ci++) {
            const int g = TB == 1 ? ci : TB == 2 ? ci / 2 : 0, h = TB == 1 ? 0 : TB == 2 ? ci % 2 : ci;
            if (h >= TB) continue;
            __m512i r[16];
            for (int i = 0; i < 16; i++) r[i] = _mm512_load_si512(cbuf[ci][i]);
            transpose16x16(r); /* r[c] = column c: rows n + 16g .. n + 16g + 15 */
            float *yb = y + n + 16 * g;
            if (comb)
                for (int t = 0; t < T; t++)
                    _mm512_storeu_ps(yb + (size_t)t * N,
                                     _mm512_add_ps(_mm512_castsi512_ps(r[t]), _mm512_castsi512_ps(r[8 + t])));
            else
                for (int c = 0; c < 16 && 16 * h + c < T; c++)
                    _mm512_storeu_ps(yb + (size_t)(16 * h + c) * N, _mm512_castsi512_ps(r[c]));
        }
    }
    _tile_release();
}

/* Per-thread scratch: the 32-row weight panel of amx_block (64·K bytes) or
 * the activation planes of amx_small (up to 8 planes of K/32 KiB). */
static size_t amx_scratch(int64_t K) { return (size_t)256 * (size_t)K; }

static bool amx_small_path(const uint16_t *xb, int T, int64_t K) { return xb && T >= 2 && T <= 64 && K % 32 == 0; }

static void matmul_pack_amx(const uint16_t *xb, int T, int64_t K, void *scratch) {
    if (amx_small_path(xb, T, K)) amx_pack_x(xb, T, K, scratch);
}

static void matmul_rows_amx(float *y, const float *x, const uint16_t *xb, const struct bk_weight *w, int T,
                            int64_t n0, int64_t n1, void *scratch) {
    const int64_t K = w->cols, N = w->rows;
    if (amx_small_path(xb, T, K) && n1 - n0 >= 64) { /* scratch: matmul_pack_amx's */
        const int64_t nA = n0 + (n1 - n0) / 64 * 64;
        amx_small(y, (const uint16_t *)w->data, K, N, T, n0, nA, scratch);
        if (nA < n1) matmul_rows(y, x, xb, w, T, nA, n1, NULL);
        return;
    }
    if (!xb || T < 32 || K % 32 != 0 || n1 - n0 < 32) {
        matmul_rows(y, x, xb, w, T, n0, n1, scratch);
        return;
    }
    const int T32 = T / 32 * 32;
    const int64_t nA = n0 + (n1 - n0) / 32 * 32;
    amx_block(y, xb, (const uint16_t *)w->data, K, N, T32, n0, nA, scratch);
    if (nA < n1) matmul_rows(y, x, xb, w, T, nA, n1, NULL);
    if (T32 < T) matmul_rows(y + (size_t)T32 * N, x + (size_t)T32 * K, xb + (size_t)T32 * 2 * K, w, T - T32, n0, nA, NULL);
}

const struct cpu_kernels cpu_kernels_avx512 = {
    .name = "avx512", .matmul_rows = matmul_rows, .bf16_dot = true, .to_bf16 = to_bf16, .to_bf16_split = to_bf16_split, .embed = embed,
    .rmsnorm = rmsnorm, .rope = rope, .glu = glu, .kv_store = kv_store, .attention = attention, .attention_block = attention_block, .attention_block_scratch = attention_block_scratch,
    .attn_all_heads = false, .add_scaled = add_scaled, .scale = scale,
};

const struct cpu_kernels cpu_kernels_avx512_amx = {
    .name = "avx512", .matmul_rows = matmul_rows_amx, .matmul_scratch = amx_scratch, .matmul_pack = matmul_pack_amx, .bf16_dot = true,
    .to_bf16 = to_bf16, .to_bf16_split = to_bf16_split, .embed = embed, .rmsnorm = rmsnorm, .rope = rope, .glu = glu, .kv_store = kv_store,
    .attention = attention, .attention_block = attention_block, .attention_block_scratch = attention_block_scratch, .attn_all_heads = false, .add_scaled = add_scaled, .scale = scale,
};
