/* kernels_avx2.c — the AVX2 kernel set (AVX2 + FMA + F16C), for x86 CPUs
 * without AVX-512. Same shapes as kernels_avx512.c at 8 lanes: dot-form matmul
 * with MR×NR register tiles (fewer, as AVX2 has 16 vector registers), bf16
 * widened by a shift, f16 by vcvtph2ps. Every path is exact f32 math: no
 * bf16-dot instruction exists here. AVX2 has no 16-bit masked loads, so
 * ragged tails go through a zero-padded 8-element buffer.
 *
 * What this does not do: no threading (cpu.c). */
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_ref.h"

#include <immintrin.h>
#include <math.h>

#define MR 2 /* tokens per register tile */
#define NR 4 /* weight rows per register tile */

#define INLINE static inline __attribute__((always_inline))
/* Tile loops must unroll fully so accumulators live in registers; -O2 alone
 * leaves them in memory. */
#define UNROLL _Pragma("GCC unroll 16")

INLINE __m256 ld_f32(const float *p) { return _mm256_loadu_ps(p); }
INLINE __m256 ld_bf16(const uint16_t *p) {
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
INLINE __m256 ld_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* The first cnt (< 8) elements at p, zero-padded to 8. */
INLINE __m256 ldp_f32(const float *p, int cnt) {
    float b[8] = { 0 };
    memcpy(b, p, (size_t)cnt * sizeof(float));
    return _mm256_loadu_ps(b);
}
INLINE __m256 ldp_bf16(const uint16_t *p, int cnt) {
    uint16_t b[8] = { 0 };
    memcpy(b, p, (size_t)cnt * sizeof(uint16_t));
    return ld_bf16(b);
}
INLINE __m256 ldp_f16(const uint16_t *p, int cnt) {
    uint16_t b[8] = { 0 };
    memcpy(b, p, (size_t)cnt * sizeof(uint16_t));
    return ld_f16(b);
}
/* cnt elements (1..8) of any storage type at element index i, as f32 */
INLINE __m256 ld_any(const void *base, enum dtype dt, size_t i, int cnt) {
    if (cnt == 8) {
        switch (dt) {
        case DT_BF16: return ld_bf16((const uint16_t *)base + i);
        case DT_F16: return ld_f16((const uint16_t *)base + i);
        default: return ld_f32((const float *)base + i);
        }
    }
    switch (dt) {
    case DT_BF16: return ldp_bf16((const uint16_t *)base + i, cnt);
    case DT_F16: return ldp_f16((const uint16_t *)base + i, cnt);
    default: return ldp_f32((const float *)base + i, cnt);
    }
}
INLINE void stp_f32(float *p, __m256 v, int cnt) {
    if (cnt == 8) { _mm256_storeu_ps(p, v); return; }
    float b[8];
    _mm256_storeu_ps(b, v);
    memcpy(p, b, (size_t)cnt * sizeof(float));
}

/* f32 -> bf16, round to nearest even, NaN kept quiet (as f32_to_bf16). */
INLINE __m128i cvt_bf16(__m256 v) {
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
    r = _mm256_srli_epi32(r, 16);
    /* pack 8 u32 (< 65536) to 8 u16 */
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}
INLINE void st_any(void *base, enum dtype dt, size_t i, __m256 v, int cnt) {
    if (dt == DT_F32) { stp_f32((float *)base + i, v, cnt); return; }
    __m128i h = dt == DT_BF16 ? cvt_bf16(v) : _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    uint16_t b[8];
    _mm_storeu_si128((__m128i *)b, h);
    memcpy((uint16_t *)base + i, b, (size_t)cnt * sizeof(uint16_t));
}

INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
INLINE float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
/* [sum a, sum b, sum c, sum d] */
INLINE __m128 reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* exp(x): Cody-Waite reduction, degree-7 Taylor polynomial, 2^n built in the
 * exponent field. Inputs are clamped to [-87.3, 88.7], so results below
 * ~1e-38 come out as ~1e-38 rather than 0 (harmless for softmax and
 * sigmoid); max error ~2 ulp elsewhere. */
INLINE __m256 exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.7f)), _mm256_set1_ps(-87.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* n in [-126, 128]: 2^n as two factors so n = 128 does not overflow the field */
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i h = _mm256_srai_epi32(ni, 1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* ---- matmul ---------------------------------------------------------------- */

/* One MR×NR tile, exact f32 math; rows past nr alias the last valid row. */
#define DEF_TILE(NAME, WT, LD, LDP)                                                                  \
    INLINE void NAME(float *y, const float *x, const WT *w, int64_t K, int64_t N, int mr, int64_t n,  \
                     int nr) {                                                                       \
        const WT *wr[NR];                                                                            \
        UNROLL                                                                                       \
        for (int j = 0; j < NR; j++) wr[j] = w + (size_t)(n + (j < nr ? j : nr - 1)) * K;            \
        __m256 acc[MR][NR];                                                                          \
        UNROLL                                                                                       \
        for (int i = 0; i < MR; i++)                                                                 \
            UNROLL                                                                                   \
            for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();                            \
        int64_t k = 0;                                                                               \
        for (; k + 8 <= K; k += 8) {                                                                 \
            __m256 wv[NR];                                                                           \
            UNROLL                                                                                   \
            for (int j = 0; j < NR; j++) wv[j] = LD(wr[j] + k);                                      \
            UNROLL                                                                                   \
            for (int i = 0; i < mr; i++) {                                                           \
                __m256 xv = _mm256_loadu_ps(x + (size_t)i * K + k);                                  \
                UNROLL                                                                               \
                for (int j = 0; j < NR; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);      \
            }                                                                                        \
        }                                                                                            \
        if (k < K) {                                                                                 \
            const int cnt = (int)(K - k);                                                            \
            __m256 wv[NR];                                                                           \
            UNROLL                                                                                   \
            for (int j = 0; j < NR; j++) wv[j] = LDP(wr[j] + k, cnt);                                \
            UNROLL                                                                                   \
            for (int i = 0; i < mr; i++) {                                                           \
                __m256 xv = ldp_f32(x + (size_t)i * K + k, cnt);                                     \
                UNROLL                                                                               \
                for (int j = 0; j < NR; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);      \
            }                                                                                        \
        }                                                                                            \
        UNROLL                                                                                       \
        for (int i = 0; i < mr; i++) {                                                               \
            float s[4];                                                                              \
            _mm_storeu_ps(s, reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));                   \
            memcpy(y + (size_t)i * N + n, s, (size_t)nr * sizeof(float));                            \
        }                                                                                            \
    }

DEF_TILE(tile_f32, float, ld_f32, ldp_f32)
DEF_TILE(tile_bf16, uint16_t, ld_bf16, ldp_bf16)
DEF_TILE(tile_f16, uint16_t, ld_f16, ldp_f16)

#define TILE_SWITCH(FN, ...)                                                  \
    switch (mr) {                                                             \
    case 1: FN(__VA_ARGS__, 1, n, nr); break;                                 \
    default: FN(__VA_ARGS__, 2, n, nr); break;                                \
    }

static void matmul_rows(float *y, const float *x, const uint16_t *xb, const struct bk_weight *w, int T,
                        int64_t n0, int64_t n1, void *scratch) {
    const int64_t K = w->cols, N = w->rows;
    int64_t tb64 = (int64_t)(768 * 1024) / (K * 4) / MR * MR; /* activations chunk stays in L2 */
    const int tb = tb64 < MR ? MR : tb64 > T ? T : (int)tb64;
    for (int t0 = 0; t0 < T; t0 += tb) {
        const int t1 = t0 + tb < T ? t0 + tb : T;
        for (int64_t n = n0; n < n1; n += NR) {
            const int nr = n1 - n < NR ? (int)(n1 - n) : NR;
            for (int t = t0; t < t1; t += MR) {
                const int mr = t1 - t < MR ? t1 - t : MR;
                float *yt = y + (size_t)t * N;
                const float *xt = x + (size_t)t * K;
                if (w->dtype == DT_BF16) {
                    TILE_SWITCH(tile_bf16, yt, xt, (const uint16_t *)w->data, K, N)
                } else if (w->dtype == DT_F16) {
                    TILE_SWITCH(tile_f16, yt, xt, (const uint16_t *)w->data, K, N)
                } else {
                    TILE_SWITCH(tile_f32, yt, xt, (const float *)w->data, K, N)
                }
            }
        }
    }
}

static void to_bf16(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *)(dst + i), cvt_bf16(_mm256_loadu_ps(src + i)));
    for (; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}

/* ---- elementwise ------------------------------------------------------------ */

static void embed(float *out, const struct bk_weight *table, const int32_t *ids, int T, float scale) {
    const int64_t K = table->cols;
    const __m256 s = _mm256_set1_ps(scale);
    for (int t = 0; t < T; t++) {
        size_t base = (size_t)ids[t] * K;
        for (int64_t k = 0; k < K; k += 8) {
            int cnt = K - k < 8 ? (int)(K - k) : 8;
            stp_f32(out + (size_t)t * K + k, _mm256_mul_ps(ld_any(table->data, table->dtype, base + k, cnt), s), cnt);
        }
    }
}

static void rmsnorm(float *y, const float *x, const float *w, int R, int n, float eps) {
    for (int r = 0; r < R; r++) {
        const float *xr = x + (size_t)r * n;
        float *yr = y + (size_t)r * n;
        __m256 ss = _mm256_setzero_ps();
        int i = 0;
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(xr + i);
            ss = _mm256_fmadd_ps(v, v, ss);
        }
        float sum = hsum(ss);
        for (; i < n; i++) sum += xr[i] * xr[i];
        const float inv = 1.0f / sqrtf(sum / (float)n + eps);
        const __m256 iv = _mm256_set1_ps(inv);
        for (i = 0; i + 8 <= n; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xr + i), iv);
            if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
            _mm256_storeu_ps(yr + i, v);
        }
        for (; i < n; i++) yr[i] = xr[i] * inv * (w ? w[i] : 1.0f);
    }
}

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
                int i = 0;
                for (; i + 8 <= half; i += 8) {
                    __m256 c = _mm256_loadu_ps(cs + i), s = _mm256_loadu_ps(sn + i);
                    __m256 x0 = _mm256_loadu_ps(xh + i), x1 = _mm256_loadu_ps(xh + i + half);
                    _mm256_storeu_ps(xh + i, _mm256_fmsub_ps(x0, c, _mm256_mul_ps(x1, s)));
                    _mm256_storeu_ps(xh + i + half, _mm256_fmadd_ps(x1, c, _mm256_mul_ps(x0, s)));
                }
                for (; i < half; i++) {
                    float x0 = xh[i], x1 = xh[i + half];
                    xh[i] = x0 * cs[i] - x1 * sn[i];
                    xh[i + half] = x1 * cs[i] + x0 * sn[i];
                }
            } else {
                int i = 0;
                for (; i + 8 <= r->rot_dim; i += 8) {
                    __m256 c = _mm256_loadu_ps(cs + i), s = _mm256_loadu_ps(sn + i);
                    __m256 v = _mm256_loadu_ps(xh + i);
                    __m256 sw = _mm256_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1));
                    _mm256_storeu_ps(xh + i, _mm256_fmadd_ps(v, c, _mm256_mul_ps(sw, s)));
                }
                for (; i < r->rot_dim; i += 2) {
                    float x0 = xh[i], x1 = xh[i + 1];
                    xh[i] = x0 * cs[i] + x1 * sn[i];
                    xh[i + 1] = x1 * cs[i + 1] + x0 * sn[i + 1];
                }
            }
        }
    }
}

/* gelu_tanh(x) = x * sigmoid(2u), see kernels_avx512.c; exact GELU is scalar. */
static void glu(float *out, const float *gate, const float *up, int T, int F, int ld, enum bk_act act) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int t = 0; t < T; t++) {
        const float *g = gate + (size_t)t * ld, *u = up + (size_t)t * ld;
        float *o = out + (size_t)t * F;
        int f = 0;
        if (act != BK_ACT_GELU) {
            for (; f + 8 <= F; f += 8) {
                __m256 gv = _mm256_loadu_ps(g + f), a;
                switch (act) {
                case BK_ACT_SILU:
                    a = _mm256_div_ps(gv, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
                    break;
                case BK_ACT_GELU_TANH: {
                    __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(gv, gv), gv);
                    __m256 z = _mm256_mul_ps(_mm256_fmadd_ps(g3, _mm256_set1_ps(0.044715f), gv),
                                             _mm256_set1_ps(-2.0f * 0.7978845608028654f));
                    a = _mm256_div_ps(gv, _mm256_add_ps(one, exp256(z)));
                    break;
                }
                default: a = _mm256_max_ps(gv, _mm256_setzero_ps()); break;
                }
                _mm256_storeu_ps(o + f, _mm256_mul_ps(a, _mm256_loadu_ps(u + f)));
            }
        }
        for (; f < F; f++) o[f] = ref_act(g[f], act) * u[f];
    }
}

static void kv_store(const struct bk_kv *kv, const float *k, const float *v, const int32_t *slots, int T) {
    const size_t row = (size_t)kv->n_kv_heads * kv->head_dim;
    for (int t = 0; t < T; t++) {
        if (slots[t] < 0) continue; /* backend.h: no store */
        size_t base = (size_t)slots[t] * row;
        for (size_t i = 0; i < row; i += 8) {
            int cnt = row - i < 8 ? (int)(row - i) : 8;
            st_any(kv->k, kv->dtype, base + i, ldp_f32(k + (size_t)t * row + i, cnt), cnt);
            st_any(kv->v, kv->dtype, base + i, ldp_f32(v + (size_t)t * row + i, cnt), cnt);
        }
    }
}

static void add_scaled(float *y, const float *x, float s, size_t n) {
    const __m256 sv = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), sv, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += s * x[i];
}

static void scale(float *x, size_t n, float s) {
    const __m256 sv = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), sv));
    for (; i < n; i++) x[i] *= s;
}

/* ---- attention ---------------------------------------------------------------- */

/* Same two-pass scheme as kernels_avx512.c: scores for the G heads of kv head
 * hk, vector-exp softmax, weighted sum of V normalised at the end. */
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
    const float *qg = q + ((size_t)t * H + (size_t)hk * G) * D;
    float *og = out + ((size_t)t * H + (size_t)hk * G) * D;
    const enum dtype dt = kv->dtype;

    for (int j = 0; j < n; j++) {
        const int pos = kstart + j;
        const size_t base = ((size_t)bt[pos / B] * B + (size_t)(pos % B)) * row + (size_t)hk * D;
        for (int g = 0; g < G; g++) {
            __m256 acc = _mm256_setzero_ps();
            for (int d = 0; d < D; d += 8) {
                int cnt = D - d < 8 ? D - d : 8;
                __m256 qv = cnt == 8 ? _mm256_loadu_ps(qg + (size_t)g * D + d) : ldp_f32(qg + (size_t)g * D + d, cnt);
                acc = _mm256_fmadd_ps(qv, ld_any(kv->k, dt, base + d, cnt), acc);
            }
            float dot = hsum(acc) * p->scale;
            if (p->softcap > 0) dot = p->softcap * tanhf(dot / p->softcap);
            scratch[(size_t)g * n + j] = dot;
        }
    }
    for (int g = 0; g < G; g++) {
        float *sc = scratch + (size_t)g * n;
        __m256 mx = _mm256_set1_ps(-INFINITY);
        int j = 0;
        for (; j + 8 <= n; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(sc + j));
        float m = hmax(mx);
        for (; j < n; j++) m = sc[j] > m ? sc[j] : m;
        const __m256 mv = _mm256_set1_ps(m);
        __m256 sum = _mm256_setzero_ps();
        for (j = 0; j + 8 <= n; j += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sc + j), mv));
            _mm256_storeu_ps(sc + j, e);
            sum = _mm256_add_ps(sum, e);
        }
        float tot = hsum(sum);
        for (; j < n; j++) { sc[j] = expf(sc[j] - m); tot += sc[j]; }
        scale(sc, (size_t)n, 1.0f / tot);
        memset(og + (size_t)g * D, 0, (size_t)D * sizeof(float));
    }
    for (int j = 0; j < n; j++) {
        const int pos = kstart + j;
        const size_t base = ((size_t)bt[pos / B] * B + (size_t)(pos % B)) * row + (size_t)hk * D;
        for (int g = 0; g < G; g++) {
            const __m256 wv = _mm256_set1_ps(scratch[(size_t)g * n + j]);
            float *o = og + (size_t)g * D;
            for (int d = 0; d < D; d += 8) {
                int cnt = D - d < 8 ? D - d : 8;
                __m256 ov = _mm256_fmadd_ps(wv, ld_any(kv->v, dt, base + d, cnt), cnt == 8 ? _mm256_loadu_ps(o + d) : ldp_f32(o + d, cnt));
                stp_f32(o + d, ov, cnt);
            }
        }
    }
}

const struct cpu_kernels cpu_kernels_avx2 = {
    .name = "avx2", .matmul_rows = matmul_rows, .bf16_dot = false, .to_bf16 = to_bf16, .embed = embed,
    .rmsnorm = rmsnorm, .rope = rope, .glu = glu, .kv_store = kv_store, .attention = attention,
    .attn_all_heads = false, .add_scaled = add_scaled, .scale = scale,
};
