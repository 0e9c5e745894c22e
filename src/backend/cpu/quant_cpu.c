/* quant_cpu.c — affine quantized matmul/embed for the CPU backend: the
 * portable reference kernels, the scalar activation prep, the thread split
 * and the choice of kernel set; see quant_cpu.h. */
#include "backend/cpu/quant_cpu.h"

#include <math.h>
#include <stdlib.h>

#include "util/threadpool.h"

/* ---- reference ------------------------------------------------------------------- */

static float rd_f(const void *p, enum dtype t, size_t i) {
    uint16_t h;
    float f;
    switch (t) { /* memcpy: checkpoint tensors may be unaligned (safetensors.c) */
    case DT_BF16: memcpy(&h, (const char *)p + 2 * i, 2); return bf16_to_f32(h);
    case DT_F16: memcpy(&h, (const char *)p + 2 * i, 2); return f16_to_f32(h);
    default: memcpy(&f, (const char *)p + 4 * i, 4); return f;
    }
}

void q_row_scales(float *s, float *b, const struct bk_weight *w, int64_t n) {
    const int64_t G = w->cols / w->group_size;
    for (int64_t j = 0; j < G; j++) {
        s[j] = rd_f(w->scales, w->dtype, (size_t)(n * G + j));
        b[j] = rd_f(w->biases, w->dtype, (size_t)(n * G + j));
    }
}

void q_unpack_codes(uint8_t *dst, const struct bk_weight *w, int64_t n, int64_t k0, int64_t cnt) {
    const uint8_t *row = (const uint8_t *)w->data + (size_t)n * bk_affine_row_bytes(w);
    const int bits = w->bits;
    if (bits == 8) { memcpy(dst, row + k0, (size_t)cnt); return; }
    if (bits == 4 && k0 % 2 == 0) {
        for (int64_t i = 0; i + 1 < cnt; i += 2) {
            uint8_t b = row[(k0 + i) / 2];
            dst[i] = b & 15;
            dst[i + 1] = b >> 4;
        }
        if (cnt % 2) dst[cnt - 1] = row[(k0 + cnt - 1) / 2] & 15;
        return;
    }
    for (int64_t i = 0; i < cnt; i++) dst[i] = (uint8_t)bk_affine_code(w, n, k0 + i);
}

void qref_dequant_row(float *out, const struct bk_weight *w, int64_t n) {
    const int64_t K = w->cols, g = w->group_size, G = K / g;
    for (int64_t j = 0; j < G; j++) {
        float s = rd_f(w->scales, w->dtype, (size_t)(n * G + j)), b = rd_f(w->biases, w->dtype, (size_t)(n * G + j));
        for (int64_t k = j * g; k < (j + 1) * g; k++) out[k] = s * (float)bk_affine_code(w, n, k) + b;
    }
}

void qref_matmul_rows(float *y, const float *x, const struct bk_weight *w, int T, int64_t n0, int64_t n1,
                      float *scratch) {
    const int64_t K = w->cols, N = w->rows;
    for (int64_t n = n0; n < n1; n++) {
        qref_dequant_row(scratch, w, n);
        for (int t = 0; t < T; t++) {
            const float *xr = x + (size_t)t * K;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += xr[k] * scratch[k];
            y[(size_t)t * N + n] = acc;
        }
    }
}

void qcpu_embed(float *out, const struct bk_weight *table, const int32_t *ids, int T, float scale) {
    const int64_t K = table->cols;
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * K;
        qref_dequant_row(o, table, ids[t]);
        if (scale != 1.0f)
            for (int64_t k = 0; k < K; k++) o[k] *= scale;
    }
}

/* ---- activation prep (scalar, any layout) -------------------------------------------- */

static int perm_width(enum qx_layout l) {
    return l == QX_PERM128 ? 128 : l == QX_PERM64 ? 64 : l == QX_PERM32 ? 32 : 0;
}

void q_prep_rows_generic(struct qx *q, const float *x, int t0, int t1) {
    const int64_t K = q->K, Kp = q->Kp;
    const int g = q->g, P = perm_width(q->layout);
    for (int t = t0; t < t1; t++) {
        const float *xr = x + (size_t)t * K;
        int8_t *hi = q->hi + (size_t)t * Kp, *lo = q->lo + (size_t)t * Kp;
        float *dd = q->dd + (size_t)t * q->Gp, *xs = q->xs + (size_t)t * q->Gp;
        const int64_t tail0 = K / 128 * 128; /* the last, partial chunk of any layout */
        memset(hi + tail0, 0, (size_t)(Kp - tail0));
        memset(lo + tail0, 0, (size_t)(Kp - tail0));
        for (int j = 0; j < q->Gp; j++) dd[j] = xs[j] = 0.0f;
        for (int j = 0; j < q->G; j++) {
            const float *v = xr + (size_t)j * g;
            float m = 0.0f, s = 0.0f;
            for (int i = 0; i < g; i++) {
                m = fmaxf(m, fabsf(v[i]));
                s += v[i];
            }
            float id = m > 0.0f ? 127.0f / m : 0.0f;
            dd[j] = m / 127.0f / 256.0f;
            xs[j] = s;
            for (int i = 0; i < g; i++) {
                int64_t k = (int64_t)j * g + i, pos = k;
                if (P) pos = k / P * P + (k % 2) * (P / 2) + (k % P) / 2;
                float a = v[i] * id, h = nearbyintf(a), l = nearbyintf((a - h) * 256.0f);
                hi[pos] = (int8_t)fminf(fmaxf(h, -127.0f), 127.0f);
                lo[pos] = (int8_t)fminf(fmaxf(l, -127.0f), 127.0f);
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

/* ---- the portable set ------------------------------------------------------------- */

static enum qplan port_plan(const struct bk_weight *w, int T) { return QP_PORTABLE; }

const struct cpu_qkernels cpu_qkernels_portable = { .name = "portable", .plan = port_plan };

const struct cpu_qkernels *cpu_qkernels_for(const char *dense_name, bool exact) {
    if (exact) return &cpu_qkernels_portable;
#if defined(__x86_64__)
    if (strncmp(dense_name, "avx512", 6) == 0 && q_avx512_vnni_ok())
        return q_amx_init() ? &cpu_qkernels_avx512_amx : &cpu_qkernels_avx512;
    if (strncmp(dense_name, "avx512", 6) == 0 || strncmp(dense_name, "avx2", 4) == 0) return &cpu_qkernels_avx2;
#elif defined(__aarch64__)
    if (strncmp(dense_name, "neon", 4) == 0) return &cpu_qkernels_neon;
#endif
    return &cpu_qkernels_portable;
}

/* ---- threading ---------------------------------------------------------------------- */

void qcpu_buf_free(struct qcpu_buf *b) {
    free(b->x);
    free(b->scratch);
    memset(b, 0, sizeof *b);
}

static char *align64(void *p) { return (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

static void *grow(void *p, size_t *len, size_t need) {
    if (need <= *len) return p;
    free(p);
    *len = need;
    return xmalloc(need);
}

struct qmm_ctx {
    const struct cpu_qkernels *qk;
    enum qplan plan;
    float *y;
    const float *x;
    const struct bk_weight *w;
    struct qx *q;
    int T, align;
    char *scratch;
    size_t stride;
};

static void split(int64_t n, int64_t align, int ith, int nth, int64_t *i0, int64_t *i1) {
    int64_t units = (n + align - 1) / align;
    *i0 = MIN(units * ith / nth * align, n);
    *i1 = MIN(units * (ith + 1) / nth * align, n);
}

static void qprep_fn(void *arg, int ith, int nth) {
    struct qmm_ctx *m = arg;
    int64_t t0, t1;
    split(m->T, 1, ith, nth, &t0, &t1);
    if (t1 > t0) m->qk->prep_rows(m->q, m->x, (int)t0, (int)t1);
}

static void qmm_fn(void *arg, int ith, int nth) {
    struct qmm_ctx *m = arg;
    int64_t n0, n1;
    split(m->w->rows, m->align, ith, nth, &n0, &n1);
    if (n1 <= n0) return;
    void *scr = m->scratch + (size_t)ith * m->stride;
    if (m->plan == QP_PORTABLE) qref_matmul_rows(m->y, m->x, m->w, m->T, n0, n1, scr);
    else m->qk->matmul_rows(m->y, m->q, m->w, n0, n1, m->plan, scr);
}

#define Q_PAR_MIN 16384

static void qrun(struct threadpool *pool, size_t work, threadpool_fn fn, void *ctx) {
    if (work < Q_PAR_MIN || threadpool_size(pool) == 1) fn(ctx, 0, 1);
    else threadpool_run(pool, fn, ctx);
}

void qcpu_matmul(const struct cpu_qkernels *qk, struct threadpool *pool, struct qcpu_buf *buf, float *y,
                 const float *x, const struct bk_weight *w, int T) {
    const int nth = threadpool_size(pool);
    const int64_t K = w->cols;
    struct qmm_ctx m = { .qk = qk, .plan = qk->plan(w, T), .y = y, .x = x, .w = w, .T = T, .align = 16 };
    struct qx q;
    if (m.plan == QP_PORTABLE) {
        m.stride = ((size_t)K * sizeof(float) + 63) & ~(size_t)63;
    } else {
        q = (struct qx){ .T = T, .Tp = (T + 15) & ~15, .K = K, .Kp = qx_stride(K), .g = w->group_size,
                         .layout = QX_NATURAL, .elt = 1 };
        qk->setup(&q, w, m.plan);
        q.G = (int)(K / q.g);
        q.Gp = (q.G + 15) & ~15;
        size_t hb = (size_t)q.Tp * (size_t)q.Kp * (size_t)q.elt, gb = (size_t)q.Tp * (size_t)q.Gp * sizeof(float);
        size_t xb = q.ddx_codes ? (size_t)q.Tp * (size_t)(q.Kp / 4) * sizeof(float) : 0;
        size_t need = 2 * hb + 2 * gb + xb + 4 * 64;
        buf->x = grow(buf->x, &buf->x_len, need);
        char *p = align64(buf->x);
        q.hi = (int8_t *)p;
        q.lo = (int8_t *)align64(p + hb);
        q.dd = (float *)align64((char *)q.lo + hb);
        q.xs = (float *)align64((char *)q.dd + gb);
        q.ddx = xb ? (float *)align64((char *)q.xs + gb) : NULL;
        m.q = &q;
        qrun(pool, (size_t)T * (size_t)K * 4, qprep_fn, &m);
        if (q.Tp > T) { /* padding tokens: zero parts and scales */
            size_t pr = (size_t)(q.Tp - T);
            memset(q.hi + (size_t)T * q.Kp * q.elt, 0, pr * (size_t)q.Kp * q.elt);
            memset(q.lo + (size_t)T * q.Kp * q.elt, 0, pr * (size_t)q.Kp * q.elt);
            memset(q.dd + (size_t)T * q.Gp, 0, pr * (size_t)q.Gp * sizeof(float));
            memset(q.xs + (size_t)T * q.Gp, 0, pr * (size_t)q.Gp * sizeof(float));
        }
        if (m.plan == QP_TILES) m.align = qk->row_align;
        m.stride = qk->scratch ? (qk->scratch(w, m.plan) + 63) & ~(size_t)63 : 0;
    }
    if (m.stride) {
        buf->scratch = grow(buf->scratch, &buf->scratch_len, m.stride * (size_t)nth + 64);
        m.scratch = align64(buf->scratch);
    }
    qrun(pool, (size_t)T * (size_t)K * (size_t)w->rows, qmm_fn, &m);
}
