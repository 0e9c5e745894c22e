/* kernels_q_avx2.c — affine quantized matmul on AVX2 (quant_cpu.h has the
 * numerics). Integer dots with vpmaddubsw (u8 × s8 -> s16 pairs) and
 * vpmaddwd against ones (-> s32), one pass per activation part.
 *
 * 4-bit: activations de-interleaved per 64 codes (QX_PERM64), so the low
 * nibbles of 32 bytes meet 32 even-k activations and the high nibbles the
 * odd ones; pair sums stay below 2*15*127*2. 8-bit: codes are made signed
 * (q - 128) and multiplied as |q'| × sign(x, q') so vpmaddubsw cannot
 * saturate (|x| <= 127 by the prep), with the 128*s moved into the bias
 * term. Other widths are unpacked to bytes per row and go through the same
 * dot unflipped (codes <= 63 cannot saturate either).
 *
 * What this does not do: run before cpu.c checked AVX2/FMA/F16C; allocate. */
#include "backend/cpu/quant_cpu.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))

static void setup(struct qx *q, const struct bk_weight *w, enum qplan p) {
    q->layout = w->bits == 4 ? QX_PERM64 : QX_NATURAL;
    q->ddx_codes = w->bits == 4 ? 8 : 4;
}

INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float bias_dot(const float *b, const float *xs, int Gp) {
    __m256 acc = _mm256_setzero_ps();
    for (int j = 0; j < Gp; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(b + j), _mm256_loadu_ps(xs + j), acc);
    return hsum8(acc);
}

/* Lane l of 8 covers `codes` codes: the index of its group within the chunk. */
INLINE __m256i lane_groups(int codes, int g) {
    return _mm256_setr_epi32(0, codes / g, 2 * codes / g, 3 * codes / g, 4 * codes / g, 5 * codes / g,
                             6 * codes / g, 7 * codes / g);
}

INLINE void dot4(float *y, const struct qx *q, const struct bk_weight *w, int64_t n, const uint8_t *row,
                 const float *sf, const float *bf, int t, int nt) {
    const int64_t K = q->K, Kp = q->Kp, N = w->rows;
    const int g = q->g;
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1), idx = lane_groups(8, g);
    __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
    for (int64_t c = 0; c < (K + 63) / 64; c++) {
        __m256i v = (c + 1) * 64 <= K ? _mm256_loadu_si256((const __m256i *)(row + c * 32))
                                      : _mm256_inserti128_si256(_mm256_setzero_si256(),
                                                                _mm_loadu_si128((const __m128i *)(row + c * 32)), 0);
        __m256i lo4 = _mm256_and_si256(v, m4), hi4 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        __m256 sl = _mm256_permutevar8x32_ps(_mm256_loadu_ps(sf + c * 64 / g), idx);
        for (int i = 0; i < nt; i++) {
            const int8_t *ah = q->hi + (size_t)(t + i) * Kp + c * 64, *al = q->lo + (size_t)(t + i) * Kp + c * 64;
            __m256i ph = _mm256_add_epi16(_mm256_maddubs_epi16(lo4, _mm256_loadu_si256((const __m256i *)ah)),
                                          _mm256_maddubs_epi16(hi4, _mm256_loadu_si256((const __m256i *)(ah + 32))));
            __m256i pl = _mm256_add_epi16(_mm256_maddubs_epi16(lo4, _mm256_loadu_si256((const __m256i *)al)),
                                          _mm256_maddubs_epi16(hi4, _mm256_loadu_si256((const __m256i *)(al + 32))));
            __m256i iv = _mm256_add_epi32(_mm256_slli_epi32(_mm256_madd_epi16(ph, ones), 8), _mm256_madd_epi16(pl, ones));
            __m256 sd = _mm256_mul_ps(sl, _mm256_loadu_ps(q->ddx + (size_t)(t + i) * (Kp / 4) + c * 8));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iv), sd, acc[i]);
        }
    }
    for (int i = 0; i < nt; i++)
        y[(size_t)(t + i) * N + n] = hsum8(acc[i]) + bias_dot(bf, q->xs + (size_t)(t + i) * q->Gp, q->Gp);
}

/* byte codes: 8-bit ones flipped to q - 128 (bf then holds b + 128 s), or
 * narrower unpacked codes (<= 63) used as they are */
INLINE void dot8(float *y, const struct qx *q, const struct bk_weight *w, int64_t n, const uint8_t *row,
                 const float *sf, const float *bf, int t, int nt, bool flipped) {
    const int64_t K = q->K, Kp = q->Kp, N = w->rows;
    const int g = q->g;
    const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1), idx = lane_groups(4, g);
    __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
    for (int64_t c = 0; c < K / 32; c++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(row + c * 32)), a = v;
        if (flipped) {
            v = _mm256_xor_si256(v, flip); /* q - 128 */
            a = _mm256_abs_epi8(v);
        }
        __m256 sl = _mm256_permutevar8x32_ps(_mm256_loadu_ps(sf + c * 32 / g), idx);
        for (int i = 0; i < nt; i++) {
            const int8_t *ah = q->hi + (size_t)(t + i) * Kp + c * 32, *al = q->lo + (size_t)(t + i) * Kp + c * 32;
            __m256i xh = _mm256_loadu_si256((const __m256i *)ah), xl = _mm256_loadu_si256((const __m256i *)al);
            if (flipped) {
                xh = _mm256_sign_epi8(xh, v);
                xl = _mm256_sign_epi8(xl, v);
            }
            __m256i ph = _mm256_maddubs_epi16(a, xh), pl = _mm256_maddubs_epi16(a, xl);
            __m256i iv = _mm256_add_epi32(_mm256_slli_epi32(_mm256_madd_epi16(ph, ones), 8), _mm256_madd_epi16(pl, ones));
            __m256 sd = _mm256_mul_ps(sl, _mm256_loadu_ps(q->ddx + (size_t)(t + i) * (Kp / 4) + c * 8));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iv), sd, acc[i]);
        }
    }
    for (int i = 0; i < nt; i++)
        y[(size_t)(t + i) * N + n] = hsum8(acc[i]) + bias_dot(bf, q->xs + (size_t)(t + i) * q->Gp, q->Gp);
}

static void matmul_rows(float *y, const struct qx *q, const struct bk_weight *w, int64_t n0, int64_t n1,
                        enum qplan p, void *scratch) {
    const int Gp = q->Gp + 16, G = q->G;
    float *sf = scratch, *bf = sf + Gp;
    uint8_t *codes = (uint8_t *)(bf + Gp);
    const size_t rb = bk_affine_row_bytes(w);
    for (int j = G; j < Gp; j++) sf[j] = bf[j] = 0.0f;
    for (int64_t n = n0; n < n1; n++) {
        q_row_scales(sf, bf, w, n);
        const uint8_t *row = (const uint8_t *)w->data + (size_t)n * rb;
        if (w->bits == 8) {
            for (int j = 0; j < G; j++) bf[j] += 128.0f * sf[j];
        } else if (w->bits != 4) {
            q_unpack_codes(codes, w, n, 0, w->cols);
            row = codes;
        }
        const bool fl = w->bits == 8;
        for (int t = 0; t < q->T; t += 4) {
            int nt = MIN(4, q->T - t);
            if (w->bits == 4) {
                switch (nt) {
                case 1: dot4(y, q, w, n, row, sf, bf, t, 1); break;
                case 2: dot4(y, q, w, n, row, sf, bf, t, 2); break;
                case 3: dot4(y, q, w, n, row, sf, bf, t, 3); break;
                default: dot4(y, q, w, n, row, sf, bf, t, 4); break;
                }
            } else {
                switch (nt) {
                case 1: dot8(y, q, w, n, row, sf, bf, t, 1, fl); break;
                case 2: dot8(y, q, w, n, row, sf, bf, t, 2, fl); break;
                case 3: dot8(y, q, w, n, row, sf, bf, t, 3, fl); break;
                default: dot8(y, q, w, n, row, sf, bf, t, 4, fl); break;
                }
            }
        }
    }
}

static enum qplan plan(const struct bk_weight *w, int T) { return QP_DOT; }

static size_t scratch(const struct bk_weight *w, enum qplan p) {
    const size_t Gp = (size_t)(((w->cols / w->group_size) + 15) & ~(int64_t)15) + 16;
    return 2 * Gp * sizeof(float) + (size_t)w->cols + 64;
}

const struct cpu_qkernels cpu_qkernels_avx2 = {
    .name = "avx2", .plan = plan, .setup = setup, .prep_rows = q_prep_rows_generic, .matmul_rows = matmul_rows,
    .scratch = scratch, .row_align = 16,
};
