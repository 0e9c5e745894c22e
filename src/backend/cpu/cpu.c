/* cpu.c — the CPU backend: owns the thread pool, picks a kernel set by CPU
 * features (cpu_kernels.h) and splits every op across the pool.
 *
 * Partitioning (DESIGN.md §7): matmul splits the N output rows into one
 * contiguous range per thread, so each weight row is streamed by exactly one
 * thread, once for all T tokens. The rows of a range are handed out in
 * chunks: each thread works from the front of its own range and, when that
 * is done, takes chunks from the back of the range with most left, so a
 * thread that streams slower (a busier core of a shared VM) holds nobody up
 * at the end of the op; the ranges stay contiguous, which the kernels'
 * run-ahead prefetch relies on. Attention hands out (query row, kv head)
 * items from an atomic counter, largest-context first, because causal prefill
 * rows cost more the later they sit. Row-wise ops (rmsnorm, rope, glu, embed,
 * kv_store) split over rows only when there are enough of them to pay for a
 * dispatch; small ones run on the calling thread.
 *
 * Kernel sets: "portable" (cpu_ref.c), "avx2", "avx512", "neon". A name may
 * carry the suffix "-exact" ("avx512-exact", "auto-exact"). By default, where
 * the CPU has AVX512_BF16, matmuls against BF16 weights split the activations
 * once per call into two bf16 parts (x = hi + lo to 2^-17) and multiply both
 * in bf16 with f32 sums (vdpbf16ps for decode, AMX tiles for prefill when the
 * OS grants them): several times faster prefill with activation precision
 * close to f32, so the golden tests hold at the f32 tolerances. "-exact"
 * keeps the plain f32 FMA path everywhere; F16 and F32 weights always use it.
 *
 * What this does not do: no allocation per op except growing the activation
 * and attention scratch to the largest size seen (so steady state allocates
 * nothing). */
#include "backend/backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_ref.h"
#include "backend/cpu/quant_cpu.h"
#include "util/threadpool.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* The chunks [front, back) still to do of one thread's share of a matmul's
 * rows, packed as front | back << 32 so both ends move by CAS; one cache
 * line each. */
struct mm_share {
    _Alignas(64) _Atomic uint64_t fb;
};

struct cpu_backend {
    struct backend base;
    struct backend_ops ops; /* cpu_ops, + sample_rows with VLLMC_CPU_SAMPLE_ROWS=1, fused ops with VLLMC_CPU_FUSED=1 */
    const struct cpu_kernels *k;
    bool bf16_dot; /* pass bf16 activations to matmul for BF16 weights */
    struct threadpool *pool;
    uint16_t *xb; /* activations as bf16 hi/lo parts [T][2][K] */
    size_t xb_len;
    float *attn_scratch; /* [n_threads][attn_stride] */
    void *attn_items; /* struct attn_item[], grown to the largest step seen */
    size_t attn_items_len;
    size_t attn_stride, attn_len;
    char *mm_scratch; /* [n_threads][mm_stride] bytes, 64-byte aligned */
    size_t mm_len;
    struct mm_share *shares; /* [n_threads]: chunked one-token matmuls */
    const struct cpu_qkernels *qk; /* affine quantized weights (quant_cpu.h) */
    struct qcpu_buf qbuf;
};

/* ---- the portable kernel set ---------------------------------------------- */

static void port_matmul_rows(float *y, const float *x, const uint16_t *xb, const struct bk_weight *w, int T,
                             int64_t n0, int64_t n1, void *scratch) { ref_matmul_rows(y, x, w, T, n0, n1); }
static void port_to_bf16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}
static void port_attention(float *out, const float *q, const struct bk_kv *kv, const struct bk_attn_batch *b,
                           const struct bk_attn_params *p, int s, int t, int hk, float *scratch) {
    ref_attention_rows(out, q, kv, b, p, s, t, t + 1, scratch);
}
static void port_add_scaled(float *y, const float *x, float s, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += s * x[i];
}
static void port_scale(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

const struct cpu_kernels cpu_kernels_portable = {
    .name = "portable", .matmul_rows = port_matmul_rows, .bf16_dot = false, .to_bf16 = port_to_bf16,
    .embed = ref_embed, .rmsnorm = ref_rmsnorm, .rope = ref_rope, .glu = ref_glu, .kv_store = ref_kv_store,
    .attention = port_attention, .attn_all_heads = true, .add_scaled = port_add_scaled, .scale = port_scale,
};

/* ---- dispatch helpers --------------------------------------------------------- */

/* Below this many elements of work an op runs on the caller alone: a pool
 * dispatch costs a few microseconds. */
#define PAR_MIN 16384

static int nth_of(const struct cpu_backend *c) { return threadpool_size(c->pool); }

/* Range [*i0, *i1) of n items for thread ith of nth, boundaries on multiples
 * of align. */
static void split(int64_t n, int64_t align, int ith, int nth, int64_t *i0, int64_t *i1) {
    int64_t units = (n + align - 1) / align;
    int64_t u0 = units * ith / nth, u1 = units * (ith + 1) / nth;
    *i0 = MIN(u0 * align, n);
    *i1 = MIN(u1 * align, n);
}

static void run(struct cpu_backend *c, size_t work, threadpool_fn fn, void *ctx) {
    if (work < PAR_MIN || nth_of(c) == 1) fn(ctx, 0, 1);
    else threadpool_run(c->pool, fn, ctx);
}

static void *grow(void *p, size_t *len, size_t need) {
    if (need <= *len) return p;
    free(p);
    *len = need;
    return xmalloc(need);
}

/* ---- ops -------------------------------------------------------------------------- */

static void cpu_destroy(struct backend *bk) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    free(c->shares);
    threadpool_destroy(c->pool);
    free(c->xb);
    free(c->attn_scratch);
    free(c->attn_items);
    free(c->mm_scratch);
    qcpu_buf_free(&c->qbuf);
    free(c);
}

struct matmul_ctx {
    const struct cpu_kernels *k;
    float *y;
    const float *x;
    uint16_t *xb;
    const struct bk_weight *w;
    int T;
    char *scratch;
    size_t stride;
    struct mm_share *shares; /* NULL: static split */
};

/* Rows per chunk of a chunked matmul (a multiple of every kernel's row
 * tile): 128 KiB of BF16 weights at K = 1024. */
#define MM_CHUNK 64

/* Next chunk from the front (own share) or the back (stealing) of sh; -1
 * when it is empty. */
static int64_t share_take(struct mm_share *sh, bool back) {
    uint64_t v = atomic_load_explicit(&sh->fb, memory_order_relaxed);
    for (;;) {
        const uint64_t f = v & 0xffffffffu, b = v >> 32;
        if (f >= b) return -1;
        const uint64_t nv = back ? (b - 1) << 32 | f : b << 32 | (f + 1);
        if (atomic_compare_exchange_weak_explicit(&sh->fb, &v, nv, memory_order_relaxed, memory_order_relaxed))
            return (int64_t)(back ? b - 1 : f);
    }
}

static void matmul_prep_fn(void *arg, int ith, int nth) {
    struct matmul_ctx *m = arg;
    int64_t t0, t1;
    split(m->T, 1, ith, nth, &t0, &t1);
    const size_t K = (size_t)m->w->cols;
    for (int64_t t = t0; t < t1; t++)
        m->k->to_bf16_split(m->xb + (size_t)t * 2 * K, m->xb + (size_t)t * 2 * K + K, m->x + (size_t)t * K, K);
}

static void matmul_fn(void *arg, int ith, int nth) {
    struct matmul_ctx *m = arg;
    void *scratch = m->scratch + (size_t)ith * m->stride;
    if (m->k->matmul_pack) m->k->matmul_pack(m->xb, m->T, m->w->cols, scratch);
    if (!m->shares) {
        int64_t n0, n1;
        split(m->w->rows, 16, ith, nth, &n0, &n1);
        if (n1 > n0) m->k->matmul_rows(m->y, m->x, m->xb, m->w, m->T, n0, n1, scratch);
        return;
    }
    const int64_t N = m->w->rows;
    int64_t u;
    while ((u = share_take(&m->shares[ith], false)) >= 0)
        m->k->matmul_rows(m->y, m->x, m->xb, m->w, m->T, u * MM_CHUNK, MIN(N, (u + 1) * MM_CHUNK), scratch);
    for (;;) { /* own share done: help the one with most left */
        int victim = -1;
        uint64_t most = 0;
        for (int i = 0; i < nth; i++) {
            const uint64_t v = atomic_load_explicit(&m->shares[i].fb, memory_order_relaxed);
            const uint64_t f = v & 0xffffffffu, b = v >> 32;
            if (b > f && b - f > most) {
                most = b - f;
                victim = i;
            }
        }
        if (victim < 0) break;
        if ((u = share_take(&m->shares[victim], true)) >= 0)
            m->k->matmul_rows(m->y, m->x, m->xb, m->w, m->T, u * MM_CHUNK, MIN(N, (u + 1) * MM_CHUNK), scratch);
    }
}

static void cpu_matmul(struct backend *bk, float *y, const float *x, const struct bk_weight *w, int T) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    if (w->fmt == BK_W_AFFINE) {
        qcpu_matmul(c->qk, c->pool, &c->qbuf, y, x, w, T);
        return;
    }
    struct matmul_ctx m = { c->k, y, x, NULL, w, T, NULL, 0, NULL };
    const size_t xn = (size_t)T * (size_t)w->cols;
    if (c->k->matmul_scratch) {
        m.stride = (c->k->matmul_scratch(w->cols) + 63) & ~(size_t)63;
        size_t need = m.stride * (size_t)nth_of(c) + 64;
        if (need > c->mm_len) {
            free(c->mm_scratch);
            c->mm_scratch = xmalloc(need);
            c->mm_len = need;
        }
        m.scratch = (char *)(((uintptr_t)c->mm_scratch + 63) & ~(uintptr_t)63);
    }
    if (c->bf16_dot && w->dtype == DT_BF16) {
        c->xb = grow(c->xb, &c->xb_len, 2 * xn * sizeof(uint16_t));
        m.xb = c->xb;
        run(c, xn / 8, matmul_prep_fn, &m);
    }
    const int nth = nth_of(c);
    const int64_t units = (w->rows + MM_CHUNK - 1) / MM_CHUNK;
    if (nth > 1 && units >= 2 * nth) {
        for (int i = 0; i < nth; i++) {
            int64_t u0, u1;
            split(units, 1, i, nth, &u0, &u1);
            atomic_store_explicit(&c->shares[i].fb, (uint64_t)u1 << 32 | (uint64_t)u0, memory_order_relaxed);
        }
        m.shares = c->shares; /* published by the pool's dispatch */
    }
    run(c, xn * (size_t)w->rows, matmul_fn, &m);
}

struct rows_ctx { /* arguments of the row-wise ops */
    const struct cpu_kernels *k;
    float *y;
    const float *x, *x2, *w;
    const struct bk_weight *table;
    const struct bk_kv *kv;
    const int32_t *ids;
    const struct bk_rope *rope;
    int rows, n, ld, H, D;
    float f;
    enum bk_act act;
};

static void embed_fn(void *arg, int ith, int nth) {
    struct rows_ctx *r = arg;
    int64_t t0, t1;
    split(r->rows, 1, ith, nth, &t0, &t1);
    r->k->embed(r->y + (size_t)t0 * r->n, r->table, r->ids + t0, (int)(t1 - t0), r->f);
}
static void cpu_embed(struct backend *bk, float *out, const struct bk_weight *t, const int32_t *ids, int T,
                      float scale) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    if (t->fmt == BK_W_AFFINE) {
        qcpu_embed(out, t, ids, T, scale);
        return;
    }
    struct rows_ctx r = { .k = c->k, .y = out, .table = t, .ids = ids, .rows = T, .n = (int)t->cols, .f = scale };
    run(c, (size_t)T * (size_t)t->cols, embed_fn, &r);
}

static void rmsnorm_fn(void *arg, int ith, int nth) {
    struct rows_ctx *r = arg;
    int64_t r0, r1;
    split(r->rows, 1, ith, nth, &r0, &r1);
    r->k->rmsnorm(r->y + (size_t)r0 * r->n, r->x + (size_t)r0 * r->n, r->w, (int)(r1 - r0), r->n, r->f);
}
static void cpu_rmsnorm(struct backend *bk, float *y, const float *x, const float *w, int R, int n, float eps) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    struct rows_ctx r = { .k = c->k, .y = y, .x = x, .w = w, .rows = R, .n = n, .f = eps };
    run(c, R > 1 ? (size_t)R * (size_t)n : 0, rmsnorm_fn, &r);
}

static void rope_fn(void *arg, int ith, int nth) {
    struct rows_ctx *r = arg;
    int64_t t0, t1;
    split(r->rows, 1, ith, nth, &t0, &t1);
    r->k->rope(r->y + (size_t)t0 * r->H * r->D, r->ids + t0, (int)(t1 - t0), r->H, r->D, r->rope);
}
static void cpu_rope(struct backend *bk, float *x, const int32_t *pos, int T, int H, int D,
                     const struct bk_rope *rp) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    struct rows_ctx r = { .k = c->k, .y = x, .ids = pos, .rope = rp, .rows = T, .H = H, .D = D };
    run(c, T > 1 ? (size_t)T * (size_t)H * (size_t)rp->rot_dim : 0, rope_fn, &r);
}

static void glu_fn(void *arg, int ith, int nth) {
    struct rows_ctx *r = arg;
    int64_t t0, t1;
    split(r->rows, 1, ith, nth, &t0, &t1);
    r->k->glu(r->y + (size_t)t0 * r->n, r->x + (size_t)t0 * r->ld, r->x2 + (size_t)t0 * r->ld, (int)(t1 - t0),
              r->n, r->ld, r->act);
}
static void cpu_glu(struct backend *bk, float *out, const float *g, const float *u, int T, int F, int ld,
                    enum bk_act act) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    struct rows_ctx r = { .k = c->k, .y = out, .x = g, .x2 = u, .rows = T, .n = F, .ld = ld, .act = act };
    run(c, T > 1 ? (size_t)T * (size_t)F * 4 : 0, glu_fn, &r);
}

static void add_scaled_fn(void *arg, int ith, int nth) {
    struct rows_ctx *r = arg; /* y[rows * n] += f * x; x2 != NULL: bias rows */
    int64_t i0, i1;
    if (r->x2) {
        split(r->rows, 1, ith, nth, &i0, &i1);
        for (int64_t t = i0; t < i1; t++) r->k->add_scaled(r->y + (size_t)t * r->n, r->x2, 1.0f, (size_t)r->n);
    } else {
        split((int64_t)r->rows * r->n, 64, ith, nth, &i0, &i1);
        r->k->add_scaled(r->y + i0, r->x + i0, r->f, (size_t)(i1 - i0));
    }
}
static void cpu_add_scaled(struct backend *bk, float *y, const float *x, float s, size_t n) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    if (n < 4 * PAR_MIN || nth_of(c) == 1 || n > INT32_MAX) { c->k->add_scaled(y, x, s, n); return; }
    struct rows_ctx r = { .k = c->k, .y = y, .x = x, .rows = 1, .n = (int)n, .f = s };
    run(c, n, add_scaled_fn, &r);
}
static void cpu_add_bias(struct backend *bk, float *y, const float *b, int T, int N) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    struct rows_ctx r = { .k = c->k, .y = y, .x2 = b, .rows = T, .n = N };
    run(c, T > 1 ? (size_t)T * (size_t)N / 4 : 0, add_scaled_fn, &r);
}

static void kv_store_fn(void *arg, int ith, int nth) {
    struct rows_ctx *r = arg;
    int64_t t0, t1;
    split(r->rows, 1, ith, nth, &t0, &t1);
    size_t row = (size_t)r->kv->n_kv_heads * r->kv->head_dim;
    r->k->kv_store(r->kv, r->x + (size_t)t0 * row, r->x2 + (size_t)t0 * row, r->ids + t0, (int)(t1 - t0));
}
static void cpu_kv_store(struct backend *bk, const struct bk_kv *kv, const float *k, const float *v,
                         const int32_t *slots, int T) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    struct rows_ctx r = { .k = c->k, .kv = kv, .x = k, .x2 = v, .ids = slots, .rows = T };
    run(c, T > 1 ? (size_t)T * (size_t)kv->n_kv_heads * (size_t)kv->head_dim : 0, kv_store_fn, &r);
}

/* One unit of attention work: query rows [t0, t1) of sequence s, kv head hk
 * (hk = -1: all heads, for a kernel set with attn_all_heads). Rows of a
 * prefill go in blocks through attention_block; decode rows one by one. */
struct attn_item {
    int s, t0, t1, hk, cost;
};

struct attn_ctx {
    const struct cpu_kernels *k;
    float *out;
    const float *q;
    const struct bk_kv *kv;
    const struct bk_attn_batch *b;
    const struct bk_attn_params *p;
    float *scratch;
    size_t stride;
    const struct attn_item *items;
    int n_items;
    atomic_int next;
};

static void attn_fn(void *arg, int ith, int nth) {
    struct attn_ctx *a = arg;
    float *scratch = a->scratch + (size_t)ith * a->stride;
    for (;;) {
        int i = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed);
        if (i >= a->n_items) break;
        const struct attn_item *it = &a->items[i];
        if (it->t1 - it->t0 > 1)
            a->k->attention_block(a->out, a->q, a->kv, a->b, a->p, it->s, it->t0, it->t1, it->hk, scratch);
        else
            a->k->attention(a->out, a->q, a->kv, a->b, a->p, it->s, it->t0, it->hk < 0 ? 0 : it->hk, scratch);
    }
}

static int attn_item_cmp(const void *x, const void *y) { /* most keys first: they take longest */
    const struct attn_item *a = x, *b = y;
    return (b->cost > a->cost) - (b->cost < a->cost);
}

static void cpu_attention(struct backend *bk, float *out, const float *q, const struct bk_kv *kv,
                          const struct bk_attn_batch *b, const struct bk_attn_params *p) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    const int S = b->n_seqs;
    if (S <= 0) return;
    const int G = p->n_heads / p->n_kv_heads, Hkv = p->n_kv_heads;
    const bool blocked = c->k->attention_block && p->softcap == 0 && G <= 32;
    const int bq = blocked ? 32 / G : 1; /* query rows per block */
    const int per_row = c->k->attn_all_heads ? 1 : Hkv;
    int max_len = 1, n_items = 0;
    size_t work = 0;
    for (int s = 0; s < S; s++) {
        const int nq = b->query_start[s + 1] - b->query_start[s];
        max_len = MAX(max_len, b->seq_len[s]);
        work += (size_t)nq * (size_t)b->seq_len[s];
        n_items += (blocked && nq > 1) ? (nq + bq - 1) / bq * Hkv : nq * per_row;
    }
    c->attn_items = grow(c->attn_items, &c->attn_items_len, (size_t)n_items * sizeof(struct attn_item));
    struct attn_item *items = c->attn_items;
    int n = 0;
    for (int s = 0; s < S; s++) {
        const int qb = b->query_start[s], qe = b->query_start[s + 1], nq = qe - qb, L = b->seq_len[s];
        const int step = (blocked && nq > 1) ? bq : 1;
        for (int t0 = qb; t0 < qe; t0 += step) {
            const int t1 = MIN(t0 + step, qe);
            const int last = L - nq + (t1 - 1 - qb); /* position of the block's last query */
            int keys = last + 1;
            if (p->sliding_window > 0) keys = MIN(keys, p->sliding_window + (t1 - t0) - 1);
            if (step > 1 || per_row > 1)
                for (int hk = 0; hk < Hkv; hk++) items[n++] = (struct attn_item){ s, t0, t1, hk, keys };
            else items[n++] = (struct attn_item){ s, t0, t1, -1, keys };
        }
    }
    qsort(items, (size_t)n, sizeof *items, attn_item_cmp);
    struct attn_ctx a = { .k = c->k, .out = out, .q = q, .kv = kv, .b = b, .p = p, .items = items, .n_items = n };
    size_t need = (size_t)G * (size_t)max_len;
    if (blocked) need = MAX(need, c->k->attention_block_scratch(p->head_dim));
    a.stride = (need + 15) & ~(size_t)15;
    c->attn_scratch = grow(c->attn_scratch, &c->attn_len, a.stride * (size_t)nth_of(c) * sizeof(float));
    a.scratch = c->attn_scratch;
    atomic_init(&a.next, 0);
    run(c, work * (size_t)p->n_heads * (size_t)p->head_dim / 4, attn_fn, &a);
}

static void softcap_fn(void *arg, int ith, int nth) {
    struct rows_ctx *r = arg;
    int64_t i0, i1;
    split(r->rows, 64, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++) r->y[i] = r->f * tanhf(r->y[i] / r->f);
}
static void cpu_softcap(struct backend *bk, float *x, size_t n, float cap) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    if (n > INT32_MAX) { for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap); return; }
    struct rows_ctx r = { .y = x, .rows = (int)n, .f = cap };
    run(c, n * 4, softcap_fn, &r);
}

static void scale_fn(void *arg, int ith, int nth) {
    struct rows_ctx *r = arg;
    int64_t i0, i1;
    split(r->rows, 64, ith, nth, &i0, &i1);
    r->k->scale(r->y + i0, (size_t)(i1 - i0), r->f);
}
static void cpu_scale(struct backend *bk, float *x, size_t n, float s) {
    struct cpu_backend *c = (struct cpu_backend *)bk;
    if (n < 4 * PAR_MIN || n > INT32_MAX) { c->k->scale(x, n, s); return; }
    struct rows_ctx r = { .k = c->k, .y = x, .rows = (int)n, .f = s };
    run(c, n, scale_fn, &r);
}

static void cpu_host_parallel(struct backend *bk, void (*fn)(void *, int, int), void *ctx) {
    threadpool_run(((struct cpu_backend *)bk)->pool, fn, ctx);
}
static int cpu_host_threads(const struct backend *bk) {
    return threadpool_size(((const struct cpu_backend *)bk)->pool);
}

/* Memory: the CPU backend's memory is host memory (host_mem), so these are
 * calloc/free/memcpy and callers on the CPU path skip them altogether. */
static void *cpu_alloc(struct backend *bk, size_t bytes) { return calloc(1, bytes ? bytes : 1); }
static void cpu_free(struct backend *bk, void *p) { free(p); }
static int cpu_copy(struct backend *bk, void *dst, const void *src, size_t bytes, char *err, size_t errlen) {
    if (bytes && dst != src) memcpy(dst, src, bytes);
    return 0;
}
static int cpu_mem_info(struct backend *bk, size_t *free_bytes, size_t *total_bytes) { return -1; }

/* VLLMC_CPU_FUSED=1: the fused ops as the plain sequences they equal
 * (backend.h), so the model's fused path runs and is tested without a GPU. */
static void cpu_add_rmsnorm(struct backend *bk, float *x, const float *o, float s, float *h, const float *w, int R,
                            int n, float eps) {
    cpu_add_scaled(bk, x, o, s, (size_t)R * (size_t)n);
    cpu_rmsnorm(bk, h, x, w, R, n, eps);
}
static void cpu_qkv_prep(struct backend *bk, const struct bk_kv *kv, const struct bk_qkv *a) {
    if (a->b_q) cpu_add_bias(bk, a->q, a->b_q, a->T, a->H * a->D);
    if (a->b_k) cpu_add_bias(bk, a->k, a->b_k, a->T, a->Hkv * a->D);
    if (a->b_v) cpu_add_bias(bk, a->v, a->b_v, a->T, a->Hkv * a->D);
    if (a->q_norm) cpu_rmsnorm(bk, a->q, a->q, a->q_norm, a->T * a->H, a->D, a->eps);
    if (a->k_norm) cpu_rmsnorm(bk, a->k, a->k, a->k_norm, a->T * a->Hkv, a->D, a->eps);
    if (a->rope) {
        cpu_rope(bk, a->q, a->pos, a->T, a->H, a->D, a->rope);
        cpu_rope(bk, a->k, a->pos, a->T, a->Hkv, a->D, a->rope);
    }
    cpu_kv_store(bk, kv, a->k, a->v, a->slots, a->T);
}
static void cpu_qkv_attention(struct backend *bk, float *out, const struct bk_kv *kv, const struct bk_qkv *a,
                              const struct bk_attn_batch *b, const struct bk_attn_params *p) {
    cpu_qkv_prep(bk, kv, a);
    cpu_attention(bk, out, a->q, kv, b, p);
}

static void cpu_matmul_many(struct backend *bk, int n, float *const *y, const float *x,
                            const struct bk_weight *const *w, int T) {
    for (int i = 0; i < n; i++) cpu_matmul(bk, y[i], x, w[i], T);
}
static void cpu_glu_matmul(struct backend *bk, float *y, float *a, const float *gate, const float *up, int T, int F,
                           int ld, enum bk_act act, const struct bk_weight *w) {
    cpu_glu(bk, a, gate, up, T, F, ld, act);
    cpu_matmul(bk, y, a, w, T);
}
static void cpu_add_rmsnorm_matmul(struct backend *bk, float *x, const float *o, float s, float *h, const float *w,
                                   int R, int n, float eps, int nw, float *const *y, const struct bk_weight *const *W) {
    cpu_add_rmsnorm(bk, x, o, s, h, w, R, n, eps);
    cpu_matmul_many(bk, nw, y, h, W, R);
}

static const struct backend_ops cpu_ops = {
    .name = "cpu", .destroy = cpu_destroy, .matmul = cpu_matmul, .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm, .rope = cpu_rope, .glu = cpu_glu, .add_scaled = cpu_add_scaled,
    .add_bias = cpu_add_bias, .kv_store = cpu_kv_store, .attention = cpu_attention,
    .softcap = cpu_softcap, .scale = cpu_scale, .host_parallel = cpu_host_parallel,
    .host_threads = cpu_host_threads, .alloc = cpu_alloc, .free = cpu_free, .upload = cpu_copy,
    .download = cpu_copy, .mem_info = cpu_mem_info,
};

/* ---- kernel set selection ------------------------------------------------------ */

struct isa_choice {
    const struct cpu_kernels *k;
    bool bf16_dot;
};

/* The best set of the given name this CPU runs; .k == NULL if none. */
static struct isa_choice isa_pick(const char *name) {
    struct isa_choice ch = { NULL, false };
    bool any = strcmp(name, "auto") == 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
    bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                  __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if ((any || strcmp(name, "avx512") == 0) && avx512) {
        ch.k = &cpu_kernels_avx512;
        ch.bf16_dot = __builtin_cpu_supports("avx512bf16");
        return ch;
    }
    if ((any || strcmp(name, "avx2") == 0) && avx2) { ch.k = &cpu_kernels_avx2; return ch; }
#elif defined(__aarch64__)
    if (any || strcmp(name, "neon") == 0) { ch.k = &cpu_kernels_neon; return ch; } /* NEON is baseline */
#endif
    if (any || strcmp(name, "portable") == 0) ch.k = &cpu_kernels_portable;
    return ch;
}

int backend_cpu_create(struct backend **out, int n_threads, const char *isa, char *err, size_t errlen) {
    char name[32];
    bool exact = false;
    snprintf(name, sizeof name, "%s", isa && *isa ? isa : "auto");
    size_t len = strlen(name);
    if (len > 6 && strcmp(name + len - 6, "-exact") == 0) {
        name[len - 6] = '\0';
        exact = true;
    }
    struct isa_choice ch = isa_pick(name);
    if (!ch.k) return errf(err, errlen, "cpu backend: kernel set '%s' is not available on this CPU", isa);
    if (n_threads <= 0) n_threads = cpu_physical_cores();
    struct threadpool *pool = threadpool_create(n_threads);
    if (!pool) return errf(err, errlen, "cpu backend: cannot start %d threads", n_threads);
    struct cpu_backend *c = xcalloc(1, sizeof *c);
    c->ops = cpu_ops;
    const char *sr = getenv("VLLMC_CPU_SAMPLE_ROWS");
    if (sr && !strcmp(sr, "1")) c->ops.sample_rows = cpu_sample_rows;
    const char *fu = getenv("VLLMC_CPU_FUSED");
    if (fu && !strcmp(fu, "1")) {
        c->ops.add_rmsnorm = cpu_add_rmsnorm, c->ops.qkv_prep = cpu_qkv_prep;
        c->ops.qkv_attention = cpu_qkv_attention;
        c->ops.matmul_many = cpu_matmul_many, c->ops.glu_matmul = cpu_glu_matmul;
        c->ops.add_rmsnorm_matmul = cpu_add_rmsnorm_matmul;
    }
    c->base.ops = &c->ops;
    c->base.n_threads = threadpool_size(pool);
    c->base.host_mem = true;
    c->k = ch.k;
    c->qk = cpu_qkernels_for(ch.k->name, exact);
    c->bf16_dot = ch.bf16_dot && !exact;
#if defined(__x86_64__)
    /* AMX tiles for prefill where the CPU and OS allow them; VLLMC_CPU_AMX=0
     * keeps the AVX-512 path (for comparisons). */
    const char *amx_env = getenv("VLLMC_CPU_AMX");
    if (c->bf16_dot && ch.k == &cpu_kernels_avx512 && !(amx_env && strcmp(amx_env, "0") == 0) &&
        avx512_amx_init())
        c->k = &cpu_kernels_avx512_amx;
#endif
    c->pool = pool;
    c->shares = aligned_alloc(64, (size_t)threadpool_size(pool) * sizeof *c->shares);
    if (!c->shares) {
        threadpool_destroy(pool);
        free(c);
        return errf(err, errlen, "cpu backend: out of memory");
    }
    *out = &c->base;
    return 0;
}

const char *backend_cpu_isa(const struct backend *bk) { return ((const struct cpu_backend *)bk)->k->name; }
const char *backend_cpu_quant_isa(const struct backend *bk) { return ((const struct cpu_backend *)bk)->qk->name; }
