/* cpu_ref.c — portable reference kernels; see cpu_ref.h. */
#include "backend/cpu/cpu_ref.h"

#include <math.h>

static inline float load_f(const void *p, enum dtype t, size_t i) {
    switch (t) {
    case DT_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
    case DT_F16: return f16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static inline void store_f(void *p, enum dtype t, size_t i, float v) {
    switch (t) {
    case DT_BF16: ((uint16_t *)p)[i] = f32_to_bf16(v); break;
    case DT_F16: ((uint16_t *)p)[i] = f32_to_f16(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

void ref_matmul_rows(float *y, const float *x, const struct bk_weight *w, int T, int64_t n0, int64_t n1) {
    const int64_t K = w->cols, N = w->rows;
    for (int64_t n = n0; n < n1; n++) {
        for (int t = 0; t < T; t++) {
            const float *xr = x + (size_t)t * K;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += xr[k] * load_f(w->data, w->dtype, (size_t)n * K + k);
            y[(size_t)t * N + n] = acc;
        }
    }
}

void ref_embed(float *out, const struct bk_weight *table, const int32_t *ids, int T, float scale) {
    const int64_t K = table->cols;
    for (int t = 0; t < T; t++)
        for (int64_t k = 0; k < K; k++)
            out[(size_t)t * K + k] = load_f(table->data, table->dtype, (size_t)ids[t] * K + k) * scale;
}

void ref_rmsnorm(float *y, const float *x, const float *w, int R, int n, float eps) {
    for (int r = 0; r < R; r++) {
        const float *xr = x + (size_t)r * n;
        float *yr = y + (size_t)r * n;
        float ss = 0.0f;
        for (int i = 0; i < n; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)n + eps);
        for (int i = 0; i < n; i++) yr[i] = xr[i] * inv * (w ? w[i] : 1.0f);
    }
}

void ref_rope(float *x, const int32_t *pos, int T, int H, int D, const struct bk_rope *r) {
    const int half = r->rot_dim / 2;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            /* angle in f32 like transformers: inv_freq (f32) * position (f32) */
            float ang = (float)pos[t] * r->inv_freq[i];
            float c = cosf(ang) * r->attn_factor, s = sinf(ang) * r->attn_factor;
            for (int h = 0; h < H; h++) {
                float *xh = x + ((size_t)t * H + h) * D;
                int a = r->neox ? i : 2 * i, b = r->neox ? i + half : 2 * i + 1;
                float x0 = xh[a], x1 = xh[b];
                xh[a] = x0 * c - x1 * s;
                xh[b] = x1 * c + x0 * s;
            }
        }
    }
}

void ref_rope_table(float *cs, float *sn, int32_t pos, const struct bk_rope *r) {
    for (int i = 0; i < r->rot_dim / 2; i++) {
        float ang = (float)pos * r->inv_freq[i]; /* as ref_rope: f32 angle, libm cos/sin */
        float c = cosf(ang) * r->attn_factor, s = sinf(ang) * r->attn_factor;
        if (r->neox) { cs[i] = c; sn[i] = s; }
        else { cs[2 * i] = cs[2 * i + 1] = c; sn[2 * i] = -s; sn[2 * i + 1] = s; }
    }
}

float ref_act(float x, enum bk_act act) {
    switch (act) {
    case BK_ACT_SILU: return x / (1.0f + expf(-x));
    case BK_ACT_GELU_TANH: {
        const float k = 0.7978845608028654f; /* sqrt(2/pi) */
        return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
    }
    case BK_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case BK_ACT_RELU: return x > 0 ? x : 0;
    }
    return x;
}

void ref_glu(float *out, const float *gate, const float *up, int T, int F, int ld, enum bk_act act) {
    for (int t = 0; t < T; t++)
        for (int f = 0; f < F; f++)
            out[(size_t)t * F + f] = ref_act(gate[(size_t)t * ld + f], act) * up[(size_t)t * ld + f];
}

void ref_kv_store(const struct bk_kv *kv, const float *k, const float *v, const int32_t *slots, int T) {
    const size_t row = (size_t)kv->n_kv_heads * kv->head_dim;
    for (int t = 0; t < T; t++) {
        if (slots[t] < 0) continue; /* backend.h: no store */
        size_t base = (size_t)slots[t] * row;
        for (size_t i = 0; i < row; i++) {
            store_f(kv->k, kv->dtype, base + i, k[(size_t)t * row + i]);
            store_f(kv->v, kv->dtype, base + i, v[(size_t)t * row + i]);
        }
    }
}

void ref_attention_rows(float *out, const float *q, const struct bk_kv *kv, const struct bk_attn_batch *b,
                        const struct bk_attn_params *p, int s, int t0, int t1, float *scratch) {
    const int H = p->n_heads, Hkv = p->n_kv_heads, D = p->head_dim, B = kv->block_size;
    const int group = H / Hkv;
    const int q_begin = b->query_start[s], q_end = b->query_start[s + 1];
    const int L = b->seq_len[s];
    const int32_t *bt = b->block_table + (size_t)s * b->max_blocks;
    const size_t row = (size_t)Hkv * D;
    for (int t = t0; t < t1; t++) {
        const int qpos = L - (q_end - q_begin) + (t - q_begin); /* position of this query */
        int kstart = 0;
        if (p->sliding_window > 0 && qpos - p->sliding_window + 1 > 0) kstart = qpos - p->sliding_window + 1;
        for (int h = 0; h < H; h++) {
            const int hk = h / group;
            const float *qh = q + ((size_t)t * H + h) * D;
            float mx = -INFINITY;
            for (int j = kstart; j <= qpos; j++) {
                size_t base = ((size_t)bt[j / B] * B + (size_t)(j % B)) * row + (size_t)hk * D;
                float dot = 0.0f;
                for (int d = 0; d < D; d++) dot += qh[d] * load_f(kv->k, kv->dtype, base + d);
                dot *= p->scale;
                if (p->softcap > 0) dot = p->softcap * tanhf(dot / p->softcap);
                scratch[j] = dot;
                if (dot > mx) mx = dot;
            }
            float sum = 0.0f;
            for (int j = kstart; j <= qpos; j++) { scratch[j] = expf(scratch[j] - mx); sum += scratch[j]; }
            float *oh = out + ((size_t)t * H + h) * D;
            for (int d = 0; d < D; d++) oh[d] = 0.0f;
            for (int j = kstart; j <= qpos; j++) {
                size_t base = ((size_t)bt[j / B] * B + (size_t)(j % B)) * row + (size_t)hk * D;
                float wgt = scratch[j] / sum;
                for (int d = 0; d < D; d++) oh[d] += wgt * load_f(kv->v, kv->dtype, base + d);
            }
        }
    }
}
