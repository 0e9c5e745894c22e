/* sample_cpu.c — sample_rows (backend.h) for the CPU backend, offered when
 * VLLMC_CPU_SAMPLE_ROWS=1: the device op's contract in plain C, one row
 * after another, written to be read next to the CUDA kernel
 * (src/backend/cuda/sample.cu) rather than to be fast.
 *
 * It exists so that the engine's device-sampling path (sched.c) and the
 * sampler's finishing half (sampler_dev_finish) run in CPU-only tests. It
 * does not make the CPU faster: there the engine samples whole rows itself
 * with the vector passes of sampler_kern.h. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_ref.h"

/* Order-preserving keys of floats (NaN as -inf): a larger value, a larger key. */
static uint32_t key_of(float x) {
    uint32_t b;
    if (x != x) x = -INFINITY;
    memcpy(&b, &x, 4);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

static float key_value(uint32_t k) {
    uint32_t b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float x;
    memcpy(&x, &b, 4);
    return x;
}

/* exp, 0 below -86 as the sampler's (and NaN -> 0) */
static float wexp(float x) { return x >= -86.0f ? expf(x) : 0.0f; }

static float weight(float x, float m, float inv_t, float min_p) {
    float e = wexp((x - m) * inv_t);
    return e >= min_p ? e : 0.0f;
}

/* The floor of backend.h: f0 lowered until (floor - m) - L < (f0 - m) - L;
 * -inf if that does not happen (the host then falls back). */
static float lowered_floor(float f0, float m, float L) {
    float y = (f0 - m) - L, f = f0, step = fmaxf(fabsf(f0 - m), fabsf(L)) * 0x1p-22f + FLT_MIN;
    for (int it = 0; it < 64 && !((f - m) - L < y); it++) {
        f = f0 - step;
        step *= 2;
    }
    return (f - m) - L < y ? f : -INFINITY;
}

static void sample_row(const float *l, int V, const struct bk_sample_req *q, struct bk_sample_res *r, int32_t *cid,
                       float *cv) {
    float m = -INFINITY;
    int amax = -1;
    for (int i = 0; i < V; i++)
        if (l[i] > m || (amax < 0 && l[i] == m)) m = l[i], amax = i;
    if (amax < 0) amax = 0;
    float L = 0;
    if (q->lp && m > -INFINITY) {
        double se = 0;
        for (int i = 0; i < V; i++) se += wexp(l[i] - m);
        L = (float)log(se);
    }
    double Z = 0;
    if ((q->wsum || q->mode == BK_SAMPLE_DRAW) && m > -INFINITY)
        for (int i = 0; i < V; i++) Z += weight(l[i], m, q->inv_t, q->min_p);
    int tok = -1;
    if (q->mode == BK_SAMPLE_ARGMAX) {
        tok = amax;
    } else if (q->mode == BK_SAMPLE_DRAW) {
        tok = 0;
        if (m > -INFINITY) {
            double target = q->u * Z, cum = 0;
            int last = -1;
            tok = -1;
            for (int i = 0; i < V && tok < 0; i++) {
                float w = weight(l[i], m, q->inv_t, q->min_p);
                if (w > 0) {
                    last = i;
                    cum += w;
                    if (cum > target) tok = i;
                }
            }
            if (tok < 0) tok = last < 0 ? 0 : last;
        }
    }
    *r = (struct bk_sample_res){ .token = tok, .m = m, .L = L, .z = Z };
    if (q->lp && tok >= 0) {
        if (m == -INFINITY) {
            r->logprob = -INFINITY, r->rank = V;
        } else {
            float lp = (l[tok] - m) - L;
            int c = 0;
            for (int i = 0; i < V; i++) c += (l[i] - m) - L >= lp;
            r->logprob = lp, r->rank = c;
        }
    }
    if (q->k > 0) {
        /* the k-th largest key: the largest K with at least k keys >= K */
        uint32_t lo = 0, hi = 0xffffffffu;
        while (lo < hi) {
            uint32_t mid = (uint32_t)(((uint64_t)lo + hi + 1) / 2);
            int c = 0;
            for (int i = 0; i < V; i++) c += key_of(l[i]) >= mid;
            if (c >= q->k) lo = mid;
            else hi = mid - 1;
        }
        float kth = key_value(lo);
        float f = kth - (fabsf(kth) * 8 * FLT_EPSILON + FLT_MIN);
        if (q->lp && m > -INFINITY && f > -INFINITY) f = lowered_floor(f, m, L);
        int n = 0;
        for (int i = 0; i < V; i++)
            if (l[i] >= f) {
                if (n < q->cand_cap) cid[q->cand_off + n] = i, cv[q->cand_off + n] = l[i];
                n++;
            }
        r->kth = kth, r->floor = f, r->n_cand = n;
    }
}

int cpu_sample_rows(struct backend *bk, const float *logits, int V, const struct bk_sample_req *req, int n,
                    struct bk_sample_res *res, int32_t *cand_id, float *cand_val, int n_slots, char *err,
                    size_t errlen) {
    for (int j = 0; j < n; j++) {
        if (req[j].cand_off < 0 || req[j].cand_cap < 0 || req[j].cand_off + req[j].cand_cap > n_slots)
            return errf(err, errlen, "sample_rows: candidate slots out of range");
        sample_row(logits + (size_t)req[j].row * V, V, &req[j], &res[j], cand_id, cand_val);
    }
    return 0;
}
