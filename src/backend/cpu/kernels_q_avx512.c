/* kernels_q_avx512.c — affine quantized matmul on AVX-512 with VNNI, and on
 * AMX-INT8 tiles for prefill-sized calls (quant_cpu.h has the numerics).
 *
 * Decode (QP_DOT): per weight row, 64 bytes of codes at a time go through
 * vpdpbusd (u8 codes × s8 activations) twice, once per activation part.
 * 4-bit: a byte holds codes k (low nibble) and k+1 (high); the activations
 * come de-interleaved per 128 codes (QX_PERM128), so the low nibbles of 64
 * bytes multiply 64 even-k activations and the high nibbles the odd ones
 * with no shuffle on the weight side. Every 32-bit lane then covers 8 codes
 * of one group; the lane's combined scale s_group * d_group comes from a
 * permute of the row's scales times the prepared ddx. 8-bit codes are used as
 * stored (natural order). Other widths are unpacked to bytes per row and go
 * through the 8-bit path.
 *
 * Decode-sized calls take four rows at a time for one token (dot_r4), with
 * BF16 scales read straight from the checkpoint (one vpermw per chunk).
 *
 * Prefill (QP_TILES, T >= QTILE_MIN_T and AMX-INT8 granted): per chunk of
 * tokens whose activations fit L2, 16 output rows at a time are unpacked to
 * u8 codes in the VNNI tile layout, then for each 16-token tile and each
 * group, tdpbsud accumulates sum(q*hi) and sum(q*lo) in two int32 tiles;
 * those are combined and scaled per (token, row) by AVX-512 into f32
 * accumulators held in registers, on one set of tiles while the tile unit
 * fills the other. (A bf16 variant, weights dequantized and split hi/lo,
 * three tdpbf16ps per step and no per-group rescale, measured about the
 * dense bf16 path's speed, 1.5x slower than this.)
 *
 * What this does not do: run before cpu.c/quant_cpu.c checked VNNI (and AMX
 * for the tile set); allocate (scratch comes from quant_cpu.c). */
#include "backend/cpu/quant_cpu.h"

#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

#pragma GCC target("avx512vnni")

#define INLINE static inline __attribute__((always_inline))

/* ---- CPU feature checks -------------------------------------------------------------- */

bool q_avx512_vnni_ok(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni");
}

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

bool q_amx_init(void) {
    static atomic_int state; /* 0 unknown, 1 on, 2 off */
    int st = atomic_load(&state);
    if (st) return st == 1;
    unsigned a, b, c, d;
    bool ok = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) && (d & (1u << 25)); /* AMX-TILE, -INT8 */
    const char *env = getenv("VLLMC_CPU_AMX");
    if (env && strcmp(env, "0") == 0) ok = false;
    /* Linux hands out the tile state only on request, per process (idempotent). */
    if (ok) ok = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    atomic_store(&state, ok ? 1 : 2);
    return ok;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* Scales and biases of row n as f32 into s[G..G+16) and b[...], zero-padded to
 * a multiple of 16 plus 16 (the kernels load 16 at a time from any group). */
static void row_scales(float *s, float *b, const struct bk_weight *w, int64_t n) {
    const int64_t G = w->cols / w->group_size;
    const size_t es = dtype_size(w->dtype);
    const char *ps = (const char *)w->scales + (size_t)n * G * es, *pb = (const char *)w->biases + (size_t)n * G * es;
    for (int64_t j = 0; j < G + 16; j += 16) {
        int64_t left = G - j;
        __mmask16 m = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        __m512 vs, vb;
        if (w->dtype == DT_F32) {
            vs = _mm512_maskz_loadu_ps(m, ps + j * 4);
            vb = _mm512_maskz_loadu_ps(m, pb + j * 4);
        } else {
            __m256i hs = _mm256_maskz_loadu_epi16(m, ps + j * 2), hb = _mm256_maskz_loadu_epi16(m, pb + j * 2);
            if (w->dtype == DT_F16) {
                vs = _mm512_cvtph_ps(hs);
                vb = _mm512_cvtph_ps(hb);
            } else {
                vs = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hs), 16));
                vb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hb), 16));
            }
        }
        _mm512_storeu_ps(s + j, vs);
        _mm512_storeu_ps(b + j, vb);
    }
}

INLINE float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

/* sum_j b[j] * xs[j] over Gp (both zero-padded) */
INLINE float bias_dot(const float *b, const float *xs, int Gp) {
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < Gp; j += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(b + j), _mm512_loadu_ps(xs + j), acc);
    return hsum(acc);
}

/* ---- activation prep ------------------------------------------------------------------- */

static void setup(struct qx *q, const struct bk_weight *w, enum qplan p) {
    if (p == QP_TILES) { q->layout = QX_NATURAL; q->ddx_codes = 0; return; }
    q->layout = w->bits == 4 ? QX_PERM128 : QX_NATURAL;
    q->ddx_codes = w->bits == 4 ? 8 : 4;
}

INLINE __m128i quant16(__m512 v, __m512 id, __m128i *lo) {
    const __m512 lim = _mm512_set1_ps(127.0f);
    __m512 a = _mm512_mul_ps(v, id);
    __m512 h = _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 l = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_sub_ps(a, h), _mm512_set1_ps(256.0f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    l = _mm512_min_ps(_mm512_max_ps(l, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
    h = _mm512_min_ps(_mm512_max_ps(h, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
    *lo = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(l));
    return _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(h));
}

static void prep_rows(struct qx *q, const float *x, int t0, int t1) {
    const int64_t K = q->K, Kp = q->Kp;
    const int g = q->g;
    const bool perm = q->layout == QX_PERM128;
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int t = t0; t < t1; t++) {
        const float *xr = x + (size_t)t * K;
        int8_t *hi = q->hi + (size_t)t * Kp, *lo = q->lo + (size_t)t * Kp;
        float *dd = q->dd + (size_t)t * q->Gp, *xs = q->xs + (size_t)t * q->Gp;
        const int64_t tail0 = K / 128 * 128;
        memset(hi + tail0, 0, (size_t)(Kp - tail0));
        memset(lo + tail0, 0, (size_t)(Kp - tail0));
        for (int j = q->G; j < q->Gp; j++) dd[j] = xs[j] = 0.0f;
        for (int j = 0; j < q->G; j++) {
            const float *v = xr + (size_t)j * g;
            __m512 m = _mm512_setzero_ps(), s = _mm512_setzero_ps();
            for (int i = 0; i < g; i += 16) {
                __m512 a = _mm512_loadu_ps(v + i);
                m = _mm512_max_ps(m, _mm512_and_ps(a, sign));
                s = _mm512_add_ps(s, a);
            }
            float mx = _mm512_reduce_max_ps(m);
            dd[j] = mx / 127.0f / 256.0f;
            xs[j] = hsum(s);
            __m512 id = _mm512_set1_ps(mx > 0.0f ? 127.0f / mx : 0.0f);
            for (int i = 0; i < g; i += 32) {
                __m512 v0 = _mm512_loadu_ps(v + i), v1 = _mm512_loadu_ps(v + i + 16);
                int64_t k = (int64_t)j * g + i;
                __m128i h0, l0, h1, l1;
                if (perm) {
                    h0 = quant16(_mm512_permutex2var_ps(v0, ie, v1), id, &l0);
                    h1 = quant16(_mm512_permutex2var_ps(v0, io, v1), id, &l1);
                    int64_t p0 = k / 128 * 128 + (k % 128) / 2; /* evens of this 32-block */
                    _mm_storeu_si128((__m128i *)(hi + p0), h0);
                    _mm_storeu_si128((__m128i *)(lo + p0), l0);
                    _mm_storeu_si128((__m128i *)(hi + p0 + 64), h1);
                    _mm_storeu_si128((__m128i *)(lo + p0 + 64), l1);
                } else {
                    h0 = quant16(v0, id, &l0);
                    h1 = quant16(v1, id, &l1);
                    _mm_storeu_si128((__m128i *)(hi + k), h0);
                    _mm_storeu_si128((__m128i *)(lo + k), l0);
                    _mm_storeu_si128((__m128i *)(hi + k + 16), h1);
                    _mm_storeu_si128((__m128i *)(lo + k + 16), l1);
                }
            }
        }
        if (q->ddx) {
            float *dx = q->ddx + (size_t)t * (size_t)(Kp / 4);
            for (int64_t i = 0; i < Kp / q->ddx_codes; i++) {
                int64_t k = i * q->ddx_codes;
                dx[i] = k < K ? dd[k / g] : 0.0f;
            }
        }
    }
}

/* ---- decode: dot products with VNNI -------------------------------------------------------- */

/* Lane l of 16 covers `codes` codes: the index of its group within the chunk. */
static __m512i lane_groups(int codes, int g) {
    int v[16];
    for (int l = 0; l < 16; l++) v[l] = l * codes / g;
    return _mm512_loadu_si512(v);
}

/* Rows of 4-bit codes against nt (1..4) tokens starting at token t; idx:
 * lane_groups(8, g); gs: log2(g). */
INLINE void dot4(float *y, const struct qx *q, const struct bk_weight *w, int64_t n, const uint8_t *row,
                 const float *sf, const float *bf, int t, int nt, __m512i idx, int gs) {
    const int64_t K = q->K, Kp = q->Kp, N = w->rows;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 acc[4] = { _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps() };
    const int64_t nc = (K + 127) / 128;
    for (int64_t c = 0; c < nc; c++) {
        __m512i v;
        if ((c + 1) * 128 <= K) v = _mm512_loadu_si512(row + c * 64);
        else v = _mm512_maskz_loadu_epi8(((__mmask64)1 << ((K - c * 128) / 2)) - 1, row + c * 64);
        _mm_prefetch((const char *)row + c * 64 + 2048, _MM_HINT_T0);
        __m512i lo4 = _mm512_and_si512(v, m4), hi4 = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        __m512 sl = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(sf + ((c * 128) >> gs)));
        for (int i = 0; i < nt; i++) {
            const int8_t *ah = q->hi + (size_t)(t + i) * Kp + c * 128, *al = q->lo + (size_t)(t + i) * Kp + c * 128;
            __m512i ih = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo4, _mm512_loadu_si512(ah));
            ih = _mm512_dpbusd_epi32(ih, hi4, _mm512_loadu_si512(ah + 64));
            __m512i il = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo4, _mm512_loadu_si512(al));
            il = _mm512_dpbusd_epi32(il, hi4, _mm512_loadu_si512(al + 64));
            __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(ih, 8), il));
            __m512 sd = _mm512_mul_ps(sl, _mm512_loadu_ps(q->ddx + (size_t)(t + i) * (Kp / 4) + c * 16));
            acc[i] = _mm512_fmadd_ps(f, sd, acc[i]);
        }
    }
    for (int i = 0; i < nt; i++)
        y[(size_t)(t + i) * N + n] = hsum(acc[i]) + bias_dot(bf, q->xs + (size_t)(t + i) * q->Gp, q->Gp);
}

/* Rows of byte codes (8-bit, or unpacked narrower codes) against nt tokens;
 * idx: lane_groups(4, g). */
INLINE void dot8(float *y, const struct qx *q, const struct bk_weight *w, int64_t n, const uint8_t *row,
                 const float *sf, const float *bf, int t, int nt, __m512i idx, int gs) {
    const int64_t K = q->K, Kp = q->Kp, N = w->rows;
    __m512 acc[4] = { _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps() };
    const int64_t nc = (K + 63) / 64;
    for (int64_t c = 0; c < nc; c++) {
        __m512i v;
        if ((c + 1) * 64 <= K) v = _mm512_loadu_si512(row + c * 64);
        else v = _mm512_maskz_loadu_epi8(((__mmask64)1 << (K - c * 64)) - 1, row + c * 64);
        _mm_prefetch((const char *)row + c * 64 + 2048, _MM_HINT_T0);
        __m512 sl = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(sf + ((c * 64) >> gs)));
        for (int i = 0; i < nt; i++) {
            const int8_t *ah = q->hi + (size_t)(t + i) * Kp + c * 64, *al = q->lo + (size_t)(t + i) * Kp + c * 64;
            __m512i ih = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, _mm512_loadu_si512(ah));
            __m512i il = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, _mm512_loadu_si512(al));
            __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(ih, 8), il));
            __m512 sd = _mm512_mul_ps(sl, _mm512_loadu_ps(q->ddx + (size_t)(t + i) * (Kp / 4) + c * 16));
            acc[i] = _mm512_fmadd_ps(f, sd, acc[i]);
        }
    }
    for (int i = 0; i < nt; i++)
        y[(size_t)(t + i) * N + n] = hsum(acc[i]) + bias_dot(bf, q->xs + (size_t)(t + i) * q->Gp, q->Gp);
}

/* One token (decode), four rows at a time: the activation vectors are
 * loaded once for the four rows and the four dependency chains overlap.
 * bits4: 4-bit codes (QX_PERM128), else byte codes. Scales and biases are
 * read straight from BF16 storage (bf16dir: a masked load and one vpermw
 * put each lane's scale in the high half of its 32-bit lane, which is the
 * f32 value), else from f32 copies sf/bf [4][Gs] made by row_scales. */
#define R4_ROW(r, ACC, CODEV)                                                                          \
    do {                                                                                                \
        __m512 sl_;                                                                                     \
        if (bf16dir)                                                                                    \
            sl_ = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(                                    \
                0xAAAAAAAAu, idx16, _mm512_castsi128_si512(_mm_maskz_loadu_epi16(smask, s16 + (r) * G + grp)))); \
        else                                                                                            \
            sl_ = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(sf + (r) * Gs + grp));                      \
        __m512i v_ = CODEV;                                                                             \
        __m512i ih_, il_;                                                                               \
        if (bits4) {                                                                                    \
            __m512i lo4_ = _mm512_and_si512(v_, m4), hi4_ = _mm512_and_si512(_mm512_srli_epi16(v_, 4), m4); \
            ih_ = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo4_, he), hi4_, ho);                   \
            il_ = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo4_, le), hi4_, lo);                   \
        } else {                                                                                        \
            ih_ = _mm512_dpbusd_epi32(zero, v_, he);                                                    \
            il_ = _mm512_dpbusd_epi32(zero, v_, le);                                                    \
        }                                                                                               \
        __m512 f_ = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(ih_, 8), il_));              \
        ACC = _mm512_fmadd_ps(f_, _mm512_mul_ps(sl_, dx), ACC);                                        \
    } while (0)

#ifndef QPF
#define QPF 16
#endif

INLINE void dot_r4(float *y, const struct qx *q, const struct bk_weight *w, int64_t n0, const float *sf,
                   const float *bf, int Gs, __m512i idx, int gs, bool bits4, bool bf16dir) {
    const int64_t K = q->K, G = K >> gs;
    const size_t rb = bk_affine_row_bytes(w);
    const uint8_t *row0 = (const uint8_t *)w->data + (size_t)n0 * rb;
    const uint16_t *s16 = (const uint16_t *)w->scales + (size_t)n0 * G, *b16 = (const uint16_t *)w->biases + (size_t)n0 * G;
    const int CW = bits4 ? 128 : 64; /* codes per chunk */
    const __m512i m4 = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512(), idx16 = _mm512_slli_epi32(idx, 16);
    const __mmask8 smask = (__mmask8)((1u << (CW >> gs ? CW >> gs : 1)) - 1);
    __m512 acc[4];
    for (int r = 0; r < 4; r++) { /* the bias term, lane-wise: sum_j b[j] * xs[j] */
        acc[r] = _mm512_setzero_ps();
        for (int64_t j = 0; j < G; j += 16) {
            __m512 b;
            if (bf16dir) {
                __mmask16 m = G - j >= 16 ? 0xffff : (__mmask16)((1u << (G - j)) - 1);
                b = _mm512_castsi512_ps(
                    _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, b16 + r * G + j)), 16));
            } else {
                b = _mm512_loadu_ps(bf + r * Gs + j);
            }
            acc[r] = _mm512_fmadd_ps(b, _mm512_loadu_ps(q->xs + j), acc[r]);
        }
    }
    __m512 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    const int64_t nfull = K / CW;
    for (int64_t c = 0; c < nfull; c++) {
        const int8_t *ah = q->hi + c * CW, *al = q->lo + c * CW;
        const __m512 dx = _mm512_loadu_ps(q->ddx + c * 16);
        const __m512i he = _mm512_loadu_si512(ah), le = _mm512_loadu_si512(al);
        const __m512i ho = bits4 ? _mm512_loadu_si512(ah + 64) : zero, lo = bits4 ? _mm512_loadu_si512(al + 64) : zero;
        const int64_t grp = (c * CW) >> gs;
        const uint8_t *rp = row0 + c * 64;
        /* the weights are streamed once: fetch the rows QPF rows ahead */
        _mm_prefetch((const char *)rp + (QPF + 0) * rb, _MM_HINT_T0);
        _mm_prefetch((const char *)rp + (QPF + 1) * rb, _MM_HINT_T0);
        _mm_prefetch((const char *)rp + (QPF + 2) * rb, _MM_HINT_T0);
        _mm_prefetch((const char *)rp + (QPF + 3) * rb, _MM_HINT_T0);
        R4_ROW(0, a0, _mm512_loadu_si512(rp));
        R4_ROW(1, a1, _mm512_loadu_si512(rp + rb));
        R4_ROW(2, a2, _mm512_loadu_si512(rp + 2 * rb));
        R4_ROW(3, a3, _mm512_loadu_si512(rp + 3 * rb));
    }
    if (nfull * CW < K) { /* a partial chunk: codes past the row are masked out (activations there are 0) */
        const int64_t c = nfull;
        const int8_t *ah = q->hi + c * CW, *al = q->lo + c * CW;
        const __m512 dx = _mm512_loadu_ps(q->ddx + c * 16);
        const __m512i he = _mm512_loadu_si512(ah), le = _mm512_loadu_si512(al);
        const __m512i ho = bits4 ? _mm512_loadu_si512(ah + 64) : zero, lo = bits4 ? _mm512_loadu_si512(al + 64) : zero;
        const int64_t grp = (c * CW) >> gs;
        const __mmask64 mk = ((__mmask64)1 << ((K - c * CW) * (bits4 ? 1 : 2) / 2)) - 1;
        const uint8_t *rp = row0 + c * 64;
        R4_ROW(0, a0, _mm512_maskz_loadu_epi8(mk, rp));
        R4_ROW(1, a1, _mm512_maskz_loadu_epi8(mk, rp + rb));
        R4_ROW(2, a2, _mm512_maskz_loadu_epi8(mk, rp + 2 * rb));
        R4_ROW(3, a3, _mm512_maskz_loadu_epi8(mk, rp + 3 * rb));
    }
    y[0] = hsum(a0);
    y[1] = hsum(a1);
    y[2] = hsum(a2);
    y[3] = hsum(a3);
}

static void dot_rows(float *y, const struct qx *q, const struct bk_weight *w, int64_t n0, int64_t n1,
                     void *scratch) {
    const int Gp = q->Gp + 16;
    float *sf = scratch, *bf = sf + Gp;
    uint8_t *codes = (uint8_t *)(bf + Gp);
    const size_t rb = bk_affine_row_bytes(w);
    const int gs = __builtin_ctz((unsigned)q->g);
    const __m512i idx = lane_groups(w->bits == 4 ? 8 : 4, q->g);
    if (q->T == 1 && (w->bits == 4 || w->bits == 8)) { /* decode: blocks of four rows */
        float *sf4 = (float *)(codes + ((w->cols + 63) & ~(int64_t)63)), *bf4 = sf4 + 4 * Gp;
        const bool b4 = w->bits == 4, bfd = w->dtype == DT_BF16;
        for (; n0 + 4 <= n1; n0 += 4) {
            if (!bfd)
                for (int r = 0; r < 4; r++) row_scales(sf4 + r * Gp, bf4 + r * Gp, w, n0 + r);
            if (b4 && bfd) dot_r4(y + n0, q, w, n0, sf4, bf4, Gp, idx, gs, true, true);
            else if (b4) dot_r4(y + n0, q, w, n0, sf4, bf4, Gp, idx, gs, true, false);
            else if (bfd) dot_r4(y + n0, q, w, n0, sf4, bf4, Gp, idx, gs, false, true);
            else dot_r4(y + n0, q, w, n0, sf4, bf4, Gp, idx, gs, false, false);
        }
    }
    for (int64_t n = n0; n < n1; n++) {
        row_scales(sf, bf, w, n);
        const uint8_t *row = (const uint8_t *)w->data + (size_t)n * rb;
        if (w->bits != 4 && w->bits != 8) {
            q_unpack_codes(codes, w, n, 0, w->cols);
            row = codes;
        }
        for (int t = 0; t < q->T; t += 4) {
            int nt = MIN(4, q->T - t);
            if (w->bits == 4) {
                switch (nt) {
                case 1: dot4(y, q, w, n, row, sf, bf, t, 1, idx, gs); break;
                case 2: dot4(y, q, w, n, row, sf, bf, t, 2, idx, gs); break;
                case 3: dot4(y, q, w, n, row, sf, bf, t, 3, idx, gs); break;
                default: dot4(y, q, w, n, row, sf, bf, t, 4, idx, gs); break;
                }
            } else {
                switch (nt) {
                case 1: dot8(y, q, w, n, row, sf, bf, t, 1, idx, gs); break;
                case 2: dot8(y, q, w, n, row, sf, bf, t, 2, idx, gs); break;
                case 3: dot8(y, q, w, n, row, sf, bf, t, 3, idx, gs); break;
                default: dot8(y, q, w, n, row, sf, bf, t, 4, idx, gs); break;
                }
            }
        }
    }
}

/* ---- prefill: AMX-INT8 tiles ------------------------------------------------------------ */

#define QTILE_MIN_T 16

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
    for (int i = 0; i < 4; i++) {
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

/* Codes of row n as bytes in natural order into dst[Kp] (zero past K). */
static void unpack_row(uint8_t *dst, const struct bk_weight *w, int64_t n, int64_t Kp) {
    const int64_t K = w->cols;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)n * bk_affine_row_bytes(w);
    if (w->bits == 4) {
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        int64_t k = 0;
        for (; k + 64 <= K; k += 64) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(row + k / 2));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            __m256i a = _mm256_unpacklo_epi8(lo, hi), b = _mm256_unpackhi_epi8(lo, hi); /* per 128-bit lane */
            _mm256_storeu_si256((__m256i *)(dst + k), _mm256_permute2x128_si256(a, b, 0x20));
            _mm256_storeu_si256((__m256i *)(dst + k + 32), _mm256_permute2x128_si256(a, b, 0x31));
        }
        if (k < K) q_unpack_codes(dst + k, w, n, k, K - k);
    } else {
        q_unpack_codes(dst, w, n, 0, K);
    }
    memset(dst + K, 0, (size_t)(Kp - K));
}

#define TILE_N 16 /* output rows per block */

static size_t tiles_scratch(const struct bk_weight *w) {
    const int64_t Kp = qx_stride(w->cols), Gs = ((w->cols / w->group_size) + 15) / 16 * 16 + 16;
    return 2 * TILE_N * (size_t)Kp       /* unpacked codes [16][Kp], packed B tiles */
           + 2 * 1024                    /* C staging, hi and lo */
           + 2 * (size_t)Gs * TILE_N * 4 /* scales, biases [G][16] */
           + 2 * (size_t)Gs * 4 + 128;   /* one row's */
}

/* Pack the unpacked codes U [16][Kp] into B tiles: for k-step ks, row r of
 * the tile = 4 consecutive k of each of the 16 output rows (the VNNI layout
 * tdpbsud reads). */
static void pack_b(uint8_t *B, const uint8_t *U, int64_t Kp, int64_t nks, int KS) {
    for (int64_t ks = 0; ks < nks; ks++) {
        __m512i r[16];
        for (int i = 0; i < 16; i++) {
            if (KS == 64) r[i] = _mm512_loadu_si512(U + (size_t)i * Kp + ks * 64);
            else r[i] = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(U + (size_t)i * Kp + ks * 32)));
        }
        transpose16x16(r);
        uint8_t *dst = B + (size_t)ks * KS * 16;
        for (int i = 0; i < KS / 4; i++) _mm512_storeu_si512(dst + 64 * i, r[i]);
    }
}

/* Prefill on AMX-INT8. Per group of the weights, tdpbsud accumulates
 * sum(q*hi) and sum(q*lo) over 16 tokens × 16 rows in two int32 tiles; the
 * vector unit combines them, 256*hi + lo, and adds s*d/256 times that into
 * f32 accumulators held in registers. Two sets of accumulator tiles
 * alternate between groups, so the tile unit works on group i while the
 * vector unit rescales group i-1. Token chunks keep their activations in L2
 * while every block of rows passes over them. */
#define Q_TDP(TH, TL, GI)                                                                         \
    do {                                                                                          \
        _tile_zero(TH);                                                                           \
        _tile_zero(TL);                                                                           \
        for (int64_t k_ = (int64_t)(GI) * g; k_ < (int64_t)((GI) + 1) * g; k_ += KS) {            \
            _tile_loadd(4, ah + k_, Kp);                                                          \
            _tile_loadd(5, al + k_, Kp);                                                          \
            _tile_loadd(6, B + (size_t)(k_ / KS) * KS * 16, 64);                                  \
            _tile_dpbsud(TH, 4, 6);                                                               \
            _tile_dpbsud(TL, 5, 6);                                                               \
        }                                                                                         \
    } while (0)
#define Q_RESCALE(TH, TL, GI)                                                                     \
    do {                                                                                          \
        _tile_stored(TH, Ch, 64);                                                                 \
        _tile_stored(TL, Cl, 64);                                                                 \
        const __m512 sv_ = _mm512_loadu_ps(S + (size_t)(GI) * 16);                                \
        _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++) {                                   \
            __m512i iv_ = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(Ch + 16 * r), 8), \
                                           _mm512_load_si512(Cl + 16 * r));                       \
            __m512 f_ = _mm512_mul_ps(_mm512_cvtepi32_ps(iv_), _mm512_set1_ps(dd[(size_t)r * Gp + (GI)])); \
            acc[r] = _mm512_fmadd_ps(f_, sv_, acc[r]);                                            \
        }                                                                                         \
    } while (0)

__attribute__((target("amx-tile,amx-int8"))) static void tile_rows(float *y, const struct qx *q,
                                                                   const struct bk_weight *w, int64_t n0,
                                                                   int64_t n1, void *scratch) {
    const int64_t K = q->K, Kp = q->Kp, N = w->rows;
    const int g = q->g, G = q->G, Gp = q->Gp, Gs = (G + 15) / 16 * 16 + 16;
    const int KS = g >= 64 ? 64 : 32; /* k per tile step */
    const int64_t nks = (K + KS - 1) / KS;
    uint8_t *U = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63); /* [16][Kp] */
    uint8_t *B = U + TILE_N * (size_t)Kp;                                  /* [nks][KS/4][64] */
    int32_t *Ch = (int32_t *)(B + TILE_N * (size_t)Kp), *Cl = Ch + 256;
    float *S = (float *)(Cl + 256), *Bi = S + (size_t)Gs * 16;             /* [G][16] */
    float *rs = Bi + (size_t)Gs * 16, *rb = rs + Gs;                       /* one row's */

    struct amx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 4; i++) { cfg.rows[i] = 16; cfg.colsb[i] = 64; } /* C: two sets of (hi, lo), 16 × 16 int32 */
    cfg.rows[4] = cfg.rows[5] = 16; cfg.colsb[4] = cfg.colsb[5] = (uint16_t)KS; /* A hi/lo: 16 tokens × KS */
    cfg.rows[6] = (uint8_t)(KS / 4); cfg.colsb[6] = 64;                         /* B: KS/4 quads × 16 rows */
    _tile_loadconfig(&cfg);

    const int TC = (int)MIN(q->Tp, MAX(64, ((1024 * 1024) / (Kp * 2)) / 16 * 16));
    for (int tc = 0; tc < q->T; tc += TC)
    for (int64_t nb = n0; nb < n1; nb += TILE_N) {
        const int nr = (int)MIN(TILE_N, n1 - nb);
        for (int i = 0; i < TILE_N; i++) {
            if (i < nr) unpack_row(U + (size_t)i * Kp, w, nb + i, Kp);
            else memset(U + (size_t)i * Kp, 0, (size_t)Kp);
        }
        pack_b(B, U, Kp, nks, KS);
        for (int i = 0; i < TILE_N; i++) { /* scales/biases transposed to [G][16] (zero past nr) */
            if (i < nr) row_scales(rs, rb, w, nb + i);
            for (int j = 0; j < G; j++) {
                S[(size_t)j * 16 + i] = i < nr ? rs[j] : 0.0f;
                Bi[(size_t)j * 16 + i] = i < nr ? rb[j] : 0.0f;
            }
        }
        for (int t0 = tc; t0 < MIN(q->T, tc + TC); t0 += 16) {
            const int8_t *ah = q->hi + (size_t)t0 * Kp, *al = q->lo + (size_t)t0 * Kp;
            const float *dd = q->dd + (size_t)t0 * Gp, *xs = q->xs + (size_t)t0 * Gp;
            __m512 acc[16];
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
            for (int j = 0; j < G; j++) { /* the bias term: sum_j b[j] * xs[t][j] */
                const __m512 bv = _mm512_loadu_ps(Bi + (size_t)j * 16);
#pragma GCC unroll 16
                for (int r = 0; r < 16; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(xs[(size_t)r * Gp + j]), bv, acc[r]);
            }
            Q_TDP(0, 1, 0);
            for (int gi = 1; gi < G; gi++) {
                if (gi & 1) {
                    Q_TDP(2, 3, gi);
                    Q_RESCALE(0, 1, gi - 1);
                } else {
                    Q_TDP(0, 1, gi);
                    Q_RESCALE(2, 3, gi - 1);
                }
            }
            if ((G - 1) & 1) Q_RESCALE(2, 3, G - 1);
            else Q_RESCALE(0, 1, G - 1);
            const __mmask16 mk = (__mmask16)((1u << nr) - 1);
            const int rows = MIN(16, q->T - t0);
            for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(y + (size_t)(t0 + r) * N + nb, mk, acc[r]);
        }
    }
    _tile_release();
}

/* ---- the sets ----------------------------------------------------------------------------------- */

static enum qplan plan_dot(const struct bk_weight *w, int T) { return QP_DOT; }
static enum qplan plan_amx(const struct bk_weight *w, int T) { return T >= QTILE_MIN_T ? QP_TILES : QP_DOT; }

static size_t scratch(const struct bk_weight *w, enum qplan p) {
    const size_t Gp = (size_t)(((w->cols / w->group_size) + 15) & ~(int64_t)15) + 16;
    size_t dot = 10 * Gp * sizeof(float) + (size_t)w->cols + 128;
    return p == QP_TILES ? tiles_scratch(w) : dot;
}

static void matmul_rows(float *y, const struct qx *q, const struct bk_weight *w, int64_t n0, int64_t n1,
                        enum qplan p, void *scr) {
    if (p == QP_TILES) tile_rows(y, q, w, n0, n1, scr);
    else dot_rows(y, q, w, n0, n1, scr);
}

const struct cpu_qkernels cpu_qkernels_avx512 = {
    .name = "avx512-vnni", .plan = plan_dot, .setup = setup, .prep_rows = prep_rows, .matmul_rows = matmul_rows,
    .scratch = scratch, .row_align = 16,
};

const struct cpu_qkernels cpu_qkernels_avx512_amx = {
    .name = "avx512-vnni-amx", .plan = plan_amx, .setup = setup, .prep_rows = prep_rows,
    .matmul_rows = matmul_rows, .scratch = scratch, .row_align = TILE_N,
};
