/* kernels_neon.c — the NEON kernel set for aarch64 (baseline Advanced SIMD;
 * the Makefile adds armv8.2-a+fp16). Same shapes as kernels_avx512.c at 4
 * lanes: dot-form matmul with 4×4 register tiles (32 vector registers leave
 * room), bf16 widened by a 16-bit left shift, f16 by fcvtl. Every path is
 * exact f32 math (no BFDOT: not every v8.2 core has it). Ragged tails go
 * through a zero-padded 4-element buffer.
 *
 * What this does not do: no threading (cpu.c), no SVE. */
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_ref.h"

#include <arm_neon.h>
#include <math.h>

#define MR 4 /* tokens per register tile */
#define NR 4 /* weight rows per register tile */

#define INLINE static inline __attribute__((always_inline))
/* Tile loops must unroll fully so accumulators live in registers; -O2 alone
 * leaves them in memory. */
#define UNROLL _Pragma("GCC unroll 16")

INLINE float32x4_t ld_f32(const float *p) { return vld1q_f32(p); }
INLINE float32x4_t ld_bf16(const uint16_t *p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
INLINE float32x4_t ld_f16(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

INLINE float32x4_t ldp_f32(const float *p, int cnt) {
    float b[4] = { 0 };
    memcpy(b, p, (size_t)cnt * sizeof(float));
    return vld1q_f32(b);
}
INLINE float32x4_t ldp_bf16(const uint16_t *p, int cnt) {
    uint16_t b[4] = { 0 };
    memcpy(b, p, (size_t)cnt * sizeof(uint16_t));
    return ld_bf16(b);
}
INLINE float32x4_t ldp_f16(const uint16_t *p, int cnt) {
    uint16_t b[4] = { 0 };
    memcpy(b, p, (size_t)cnt * sizeof(uint16_t));
    return ld_f16(b);
}
/* cnt elements (1..4) of any storage type at element index i, as f32 */
INLINE float32x4_t ld_any(const void *base, enum dtype dt, size_t i, int cnt) {
    if (cnt == 4) {
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
INLINE void stp_f32(float *p, float32x4_t v, int cnt) {
    if (cnt == 4) { vst1q_f32(p, v); return; }
    float b[4];
    vst1q_f32(b, v);
    memcpy(p, b, (size_t)cnt * sizeof(float));
}

/* f32 -> bf16, round to nearest even, NaN kept quiet (as f32_to_bf16). */
INLINE uint16x4_t cvt_bf16(float32x4_t v) {
    uint32x4_t u = vreinterpretq_u32_f32(v);
    uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    uint32x4_t r = vaddq_u32(u, vaddq_u32(lsb, vdupq_n_u32(0x7fff)));
    uint32x4_t is_num = vceqq_f32(v, v);
    r = vbslq_u32(is_num, r, vorrq_u32(u, vdupq_n_u32(0x400000)));
    return vshrn_n_u32(r, 16);
}
INLINE void st_any(void *base, enum dtype dt, size_t i, float32x4_t v, int cnt) {
    if (dt == DT_F32) { stp_f32((float *)base + i, v, cnt); return; }
    uint16x4_t h = dt == DT_BF16 ? cvt_bf16(v) : vreinterpret_u16_f16(vcvt_f16_f32(v));
    uint16_t b[4];
    vst1_u16(b, h);
    memcpy((uint16_t *)base + i, b, (size_t)cnt * sizeof(uint16_t));
}

/* [sum a, sum b, sum c, sum d] */
INLINE float32x4_t reduce4(float32x4_t a, float32x4_t b, float32x4_t c, float32x4_t d) {
    return vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d));
}

/* exp(x): Cody-Waite reduction, degree-7 Taylor polynomial, 2^n built in the
 * exponent field as two factors; inputs clamped to [-87.3, 88.7] (results
 * below ~1e-38 come out as ~1e-38, harmless for softmax and sigmoid). */
INLINE float32x4_t exp128(float32x4_t x) {
    x = vmaxq_f32(vminq_f32(x, vdupq_n_f32(88.7f)), vdupq_n_f32(-87.3f));
    float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.0f / 5040.0f);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 720.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    int32x4_t ni = vcvtq_s32_f32(n);
    int32x4_t h = vshrq_n_s32(ni, 1);
    float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(h, vdupq_n_s32(127)), 23));
    float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vsubq_s32(ni, h), vdupq_n_s32(127)), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
}

/* ---- matmul ---------------------------------------------------------------- */

/* One MR×NR tile, exact f32 math; rows past nr alias the last valid row. */
#define DEF_TILE(NAME, WT, LD, LDP)                                                                  \
    INLINE void NAME(float *y, const float *x, const WT *w, int64_t K, int64_t N, int mr, int64_t n,  \
                     int nr) {                                                                       \
        const WT *wr[NR];                                                                            \
        UNROLL                                                                                       \
        for (int j = 0; j < NR; j++) wr[j] = w + (size_t)(n + (j < nr ? j : nr - 1)) * K;            \
        float32x4_t acc[MR][NR];                                                                     \
        UNROLL                                                                                       \
        for (int i = 0; i < MR; i++)                                                                 \
            UNROLL                                                                                   \
            for (int j = 0; j < NR; j++) acc[i][j] = vdupq_n_f32(0.0f);                              \
        int64_t k = 0;                                                                               \
        for (; k + 4 <= K; k += 4) {                                                                 \
            float32x4_t wv[NR];                                                                      \
            UNROLL                                                                                   \
            for (int j = 0; j < NR; j++) wv[j] = LD(wr[j] + k);                                      \
            UNROLL                                                                                   \
            for (int i = 0; i < mr; i++) {                                                           \
                float32x4_t xv = vld1q_f32(x + (size_t)i * K + k);                                   \
                UNROLL                                                                               \
                for (int j = 0; j < NR; j++) acc[i][j] = vfmaq_f32(acc[i][j], xv, wv[j]);            \
            }                                                                                        \
        }                                                                                            \
        if (k < K) {                                                                                 \
            const int cnt = (int)(K - k);                                                            \
            float32x4_t wv[NR];                                                                      \
            UNROLL                                                                                   \
            for (int j = 0; j < NR; j++) wv[j] = LDP(wr[j] + k, cnt);                                \
            UNROLL                                                                                   \
            for (int i = 0; i < mr; i++) {                                                           \
                float32x4_t xv = ldp_f32(x + (size_t)i * K + k, cnt);                                \
                UNROLL                                                                               \
                for (int j = 0; j < NR; j++) acc[i][j] = vfmaq_f32(acc[i][j], xv, wv[j]);            \
            }                                                                                        \
        }                                                                                            \
        UNROLL                                                                                       \
        for (int i = 0; i < mr; i++)                                                                 \
            stp_f32(y + (size_t)i * N + n, reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]), nr); \
    }

DEF_TILE(tile_f32, float, ld_f32, ldp_f32)
DEF_TILE(tile_bf16, uint16_t, ld_bf16, ldp_bf16)
DEF_TILE(tile_f16, uint16_t, ld_f16, ldp_f16)

#define TILE_SWITCH(FN, ...)                                                  \
    switch (mr) {                                                             \
    case 1: FN(__VA_ARGS__, 1, n, nr); break;                                 \
    case 2: FN(__VA_ARGS__, 2, n, nr); break;                                 \
    case 3: FN(__VA_ARGS__, 3, n, nr); break;                                 \
    default: FN(__VA_ARGS__, 4, n, nr); break;                                \
    }

static void matmul_rows(float *y, const float *x, const uint16_t *xb, const struct bk_weight *w, int T,
                        int64_t n0, int64_t n1, void *scratch) {
    const int64_t K = w->cols, N = w->rows;
    int64_t tb64 = (int64_t)(512 * 1024) / (K * 4) / MR * MR; /* activations chunk stays in L2 */
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
    for (; i + 4 <= n; i += 4) vst1_u16(dst + i, cvt_bf16(vld1q_f32(src + i)));
    for (; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}

/* ---- elementwise ------------------------------------------------------------ */

static void embed(float *out, const struct bk_weight *table, const int32_t *ids, int T, float scale) {
    const int64_t K = table->cols;
    for (int t = 0; t < T; t++) {
        size_t base = (size_t)ids[t] * K;
        for (int64_t k = 0; k < K; k += 4) {
            int cnt = K - k < 4 ? (int)(K - k) : 4;
            stp_f32(out + (size_t)t * K + k, vmulq_n_f32(ld_any(table->data, table->dtype, base + k, cnt), scale), cnt);
        }
    }
}

static void rmsnorm(float *y, const float *x, const float *w, int R, int n, float eps) {
    for (int r = 0; r < R; r++) {
        const float *xr = x + (size_t)r * n;
        float *yr = y + (size_t)r * n;
        float32x4_t ss = vdupq_n_f32(0.0f);
        int i = 0;
        for (; i + 4 <= n; i += 4) {
            float32x4_t v = vld1q_f32(xr + i);
            ss = vfmaq_f32(ss, v, v);
        }
        float sum = vaddvq_f32(ss);
        for (; i < n; i++) sum += xr[i] * xr[i];
        const float inv = 1.0f / sqrtf(sum / (float)n + eps);
        for (i = 0; i + 4 <= n; i += 4) {
            float32x4_t v = vmulq_n_f32(vld1q_f32(xr + i), inv);
            if (w) v = vmulq_f32(v, vld1q_f32(w + i));
            vst1q_f32(yr + i, v);
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
                for (; i + 4 <= half; i += 4) {
                    float32x4_t c = vld1q_f32(cs + i), s = vld1q_f32(sn + i);
                    float32x4_t x0 = vld1q_f32(xh + i), x1 = vld1q_f32(xh + i + half);
                    vst1q_f32(xh + i, vfmsq_f32(vmulq_f32(x0, c), x1, s));
                    vst1q_f32(xh + i + half, vfmaq_f32(vmulq_f32(x1, c), x0, s));
                }
                for (; i < half; i++) {
                    float x0 = xh[i], x1 = xh[i + half];
                    xh[i] = x0 * cs[i] - x1 * sn[i];
                    xh[i + half] = x1 * cs[i] + x0 * sn[i];
                }
            } else {
                int i = 0;
                for (; i + 4 <= r->rot_dim; i += 4) {
                    float32x4_t c = vld1q_f32(cs + i), s = vld1q_f32(sn + i);
                    float32x4_t v = vld1q_f32(xh + i);
                    float32x4_t sw = vrev64q_f32(v); /* swap each pair */
                    vst1q_f32(xh + i, vfmaq_f32(vmulq_f32(v, c), sw, s));
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
    const float32x4_t one = vdupq_n_f32(1.0f);
    for (int t = 0; t < T; t++) {
        const float *g = gate + (size_t)t * ld, *u = up + (size_t)t * ld;
        float *o = out + (size_t)t * F;
        int f = 0;
        if (act != BK_ACT_GELU) {
            for (; f + 4 <= F; f += 4) {
                float32x4_t gv = vld1q_f32(g + f), a;
                switch (act) {
                case BK_ACT_SILU: a = vdivq_f32(gv, vaddq_f32(one, exp128(vnegq_f32(gv)))); break;
                case BK_ACT_GELU_TANH: {
                    float32x4_t g3 = vmulq_f32(vmulq_f32(gv, gv), gv);
                    float32x4_t z = vmulq_n_f32(vfmaq_n_f32(gv, g3, 0.044715f), -2.0f * 0.7978845608028654f);
                    a = vdivq_f32(gv, vaddq_f32(one, exp128(z)));
                    break;
                }
                default: a = vmaxq_f32(gv, vdupq_n_f32(0.0f)); break;
                }
                vst1q_f32(o + f, vmulq_f32(a, vld1q_f32(u + f)));
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
        for (size_t i = 0; i < row; i += 4) {
            int cnt = row - i < 4 ? (int)(row - i) : 4;
            st_any(kv->k, kv->dtype, base + i, ldp_f32(k + (size_t)t * row + i, cnt), cnt);
            st_any(kv->v, kv->dtype, base + i, ldp_f32(v + (size_t)t * row + i, cnt), cnt);
        }
    }
}

static void add_scaled(float *y, const float *x, float s, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), s));
    for (; i < n; i++) y[i] += s * x[i];
}

static void scale(float *x, size_t n, float s) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), s));
    for (; i < n; i++) x[i] *= s;
}

/* ---- attention ---------------------------------------------------------------- */

/* Same two-pass scheme as kernels_avx512.c. */
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
            float32x4_t acc = vdupq_n_f32(0.0f);
            for (int d = 0; d < D; d += 4) {
                int cnt = D - d < 4 ? D - d : 4;
                float32x4_t qv = cnt == 4 ? vld1q_f32(qg + (size_t)g * D + d) : ldp_f32(qg + (size_t)g * D + d, cnt);
                acc = vfmaq_f32(acc, qv, ld_any(kv->k, dt, base + d, cnt));
            }
            float dot = vaddvq_f32(acc) * p->scale;
            if (p->softcap > 0) dot = p->softcap * tanhf(dot / p->softcap);
            scratch[(size_t)g * n + j] = dot;
        }
    }
    for (int g = 0; g < G; g++) {
        float *sc = scratch + (size_t)g * n;
        float32x4_t mx = vdupq_n_f32(-INFINITY);
        int j = 0;
        for (; j + 4 <= n; j += 4) mx = vmaxq_f32(mx, vld1q_f32(sc + j));
        float m = vmaxvq_f32(mx);
        for (; j < n; j++) m = sc[j] > m ? sc[j] : m;
        const float32x4_t mv = vdupq_n_f32(m);
        float32x4_t sum = vdupq_n_f32(0.0f);
        for (j = 0; j + 4 <= n; j += 4) {
            float32x4_t e = exp128(vsubq_f32(vld1q_f32(sc + j), mv));
            vst1q_f32(sc + j, e);
            sum = vaddq_f32(sum, e);
        }
        float tot = vaddvq_f32(sum);
        for (; j < n; j++) { sc[j] = expf(sc[j] - m); tot += sc[j]; }
        scale(sc, (size_t)n, 1.0f / tot);
        memset(og + (size_t)g * D, 0, (size_t)D * sizeof(float));
    }
    for (int j = 0; j < n; j++) {
        const int pos = kstart + j;
        const size_t base = ((size_t)bt[pos / B] * B + (size_t)(pos % B)) * row + (size_t)hk * D;
        for (int g = 0; g < G; g++) {
            const float wgt = scratch[(size_t)g * n + j];
            float *o = og + (size_t)g * D;
            for (int d = 0; d < D; d += 4) {
                int cnt = D - d < 4 ? D - d : 4;
                float32x4_t ov = cnt == 4 ? vld1q_f32(o + d) : ldp_f32(o + d, cnt);
                stp_f32(o + d, vfmaq_n_f32(ov, ld_any(kv->v, dt, base + d, cnt), wgt), cnt);
            }
        }
    }
}

const struct cpu_kernels cpu_kernels_neon = {
    .name = "neon", .matmul_rows = matmul_rows, .bf16_dot = false, .to_bf16 = to_bf16, .embed = embed,
    .rmsnorm = rmsnorm, .rope = rope, .glu = glu, .kv_store = kv_store, .attention = attention,
    .attn_all_heads = false, .add_scaled = add_scaled, .scale = scale,
};
