/* kernels_q_neon.c — affine quantized matmul on Arm NEON (ARMv8.2-A
 * baseline, no dot-product extension assumed); quant_cpu.h has the numerics.
 *
 * 4-bit: activations de-interleaved per 32 codes (QX_PERM32, one group block
 * per chunk), so low nibbles meet even-k and high nibbles odd-k activations;
 * vmull_s8/vmlal_s8 products of codes 0..15 and |x| <= 127 sum four deep in
 * s16 without overflow, then widen pairwise to s32. 8-bit: codes made signed
 * (q - 128, the 128*s going into the bias term), each s16 product widened
 * at once. Other widths are unpacked to bytes per row and take the same
 * path unflipped (codes <= 63).
 *
 * What this does not do: allocate; use SDOT (not in the baseline). */
#include "backend/cpu/quant_cpu.h"

#include <arm_neon.h>

static void setup(struct qx *q, const struct bk_weight *w, enum qplan p) {
    q->layout = w->bits == 4 ? QX_PERM32 : QX_NATURAL;
    q->ddx_codes = 0;
}

static float bias_dot(const float *b, const float *xs, int G) {
    float s = 0.0f;
    for (int j = 0; j < G; j++) s += b[j] * xs[j];
    return s;
}

/* sum over one 32-code chunk of 4-bit codes: 256*sum(q*hi) + sum(q*lo) */
static inline int32_t chunk4(uint8x16_t v, const int8_t *ah, const int8_t *al) {
    int8x16_t lo4 = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(15))), hi4 = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
    int8x16_t he = vld1q_s8(ah), ho = vld1q_s8(ah + 16), le = vld1q_s8(al), lo = vld1q_s8(al + 16);
    int16x8_t ph = vmull_s8(vget_low_s8(lo4), vget_low_s8(he));
    ph = vmlal_high_s8(ph, lo4, he);
    ph = vmlal_s8(ph, vget_low_s8(hi4), vget_low_s8(ho));
    ph = vmlal_high_s8(ph, hi4, ho);
    int16x8_t pl = vmull_s8(vget_low_s8(lo4), vget_low_s8(le));
    pl = vmlal_high_s8(pl, lo4, le);
    pl = vmlal_s8(pl, vget_low_s8(hi4), vget_low_s8(lo));
    pl = vmlal_high_s8(pl, hi4, lo);
    int32x4_t iv = vaddq_s32(vshlq_n_s32(vpaddlq_s16(ph), 8), vpaddlq_s16(pl));
    return vaddvq_s32(iv);
}

/* sum over 32 byte codes (8-bit ones already q - 128) */
static inline int32_t chunk8(int8x16_t v0, int8x16_t v1, const int8_t *ah, const int8_t *al) {
    int8x16_t h0 = vld1q_s8(ah), h1 = vld1q_s8(ah + 16), l0 = vld1q_s8(al), l1 = vld1q_s8(al + 16);
    int32x4_t ih = vpaddlq_s16(vmull_s8(vget_low_s8(v0), vget_low_s8(h0)));
    ih = vpadalq_s16(ih, vmull_high_s8(v0, h0));
    ih = vpadalq_s16(ih, vmull_s8(vget_low_s8(v1), vget_low_s8(h1)));
    ih = vpadalq_s16(ih, vmull_high_s8(v1, h1));
    int32x4_t il = vpaddlq_s16(vmull_s8(vget_low_s8(v0), vget_low_s8(l0)));
    il = vpadalq_s16(il, vmull_high_s8(v0, l0));
    il = vpadalq_s16(il, vmull_s8(vget_low_s8(v1), vget_low_s8(l1)));
    il = vpadalq_s16(il, vmull_high_s8(v1, l1));
    return vaddvq_s32(vaddq_s32(vshlq_n_s32(ih, 8), il));
}

static void matmul_rows(float *y, const struct qx *q, const struct bk_weight *w, int64_t n0, int64_t n1,
                        enum qplan p, void *scratch) {
    const int64_t K = q->K, Kp = q->Kp, N = w->rows;
    const int G = q->G, g = q->g;
    float *sf = scratch, *bf = sf + G;
    uint8_t *codes = (uint8_t *)(bf + G);
    const size_t rb = bk_affine_row_bytes(w);
    for (int64_t n = n0; n < n1; n++) {
        q_row_scales(sf, bf, w, n);
        const uint8_t *row = (const uint8_t *)w->data + (size_t)n * rb;
        if (w->bits == 8) {
            for (int j = 0; j < G; j++) bf[j] += 128.0f * sf[j];
        } else if (w->bits != 4) { /* narrower codes (<= 63) fit s8 as they are */
            q_unpack_codes(codes, w, n, 0, K);
            row = codes;
        }
        const uint8x16_t flip = vdupq_n_u8(w->bits == 8 ? 0x80 : 0);
        for (int t = 0; t < q->T; t++) {
            const int8_t *ah = q->hi + (size_t)t * Kp, *al = q->lo + (size_t)t * Kp;
            const float *dd = q->dd + (size_t)t * q->Gp;
            float acc = 0.0f;
            for (int64_t c = 0; c < K / 32; c++) {
                int32_t iv;
                if (w->bits == 4) {
                    iv = chunk4(vld1q_u8(row + c * 16), ah + c * 32, al + c * 32);
                } else {
                    int8x16_t v0 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(row + c * 32), flip));
                    int8x16_t v1 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(row + c * 32 + 16), flip));
                    iv = chunk8(v0, v1, ah + c * 32, al + c * 32);
                }
                const int j = (int)(c * 32 / g);
                acc += (float)iv * (sf[j] * dd[j]);
            }
            y[(size_t)t * N + n] = acc + bias_dot(bf, q->xs + (size_t)t * q->Gp, G);
        }
    }
}

static enum qplan plan(const struct bk_weight *w, int T) { return QP_DOT; }

static size_t scratch(const struct bk_weight *w, enum qplan p) {
    return 2 * (size_t)(w->cols / w->group_size) * sizeof(float) + (size_t)w->cols + 64;
}

const struct cpu_qkernels cpu_qkernels_neon = {
    .name = "neon", .plan = plan, .setup = setup, .prep_rows = q_prep_rows_generic, .matmul_rows = matmul_rows,
    .scratch = scratch, .row_align = 16,
};
