/* sampler.c — per-row sampling with vLLM v1's semantics (see sampler.h for
 * the order of the steps and the tie rules).
 *
 * Cost model (V = 151,936 for Qwen3, 64 rows a step): every pass over the
 * row is a vector loop of sampler_kern.h (SSE2/NEON here, AVX2 and AVX-512
 * in sampler_avx2.c / sampler_avx512.c, picked at run time), and nothing
 * sorts the vocabulary.
 *   greedy                   max pass + a pass to its first index
 *   top_k <= 64              a k-heap over the row (32-token chunks whose
 *                            values cannot enter are skipped by one vector
 *                            compare), a gather at the k-th value; exp only
 *                            on the gathered tokens
 *   top_k > 64               a threshold from a strided sample of 4096
 *                            logits, a gather above it (checked to hold k
 *                            tokens, else lowered), a quickselect there
 *   temperature [+ min_p]    max pass, one exp pass storing the weights and
 *                            per-256-token sums; the draw walks the sums
 *   top_p without top_k      the same, then a weight floor guessed from a
 *                            strided sample, a gather above it (checked to
 *                            hold mass >= top_p, else lowered) and an O(n)
 *                            quickselect on probability mass
 *   logprobs                 max + exp passes for the log-sum-exp, a k-heap
 *                            for the top k, one counting pass for the rank
 * Logit processors touch only the tokens they name: bans, biases, and the
 * distinct prompt/output tokens for penalties (counts live in scratch and are
 * reset after use). Each modified token's raw value is saved once, so the raw
 * row can be restored for the chosen token's rank.
 *
 * Does not: reproduce torch's random streams, or sample several tokens from
 * one row (no beam search, no speculative decoding). */
#include "engine/sampler.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define SAMPLING_EPS 1e-5f /* vLLM _SAMPLING_EPS: a temperature below it is greedy */
#define MIN_TEMP 1e-2f     /* vLLM _MAX_TEMP: SamplingParams raises 0 < T < 0.01 to it */

enum { MARK_PEN = 1, MARK_SAVED = 2, MARK_ALLOWED = 4, MARK_BIAS = 8 };

struct sampler_scratch {
    int V;
    const struct sampler_kernels *k; /* the O(V) passes for this CPU */
    float *ev;       /* [V] weights exp(s - max s) of the dense pass, or of the candidate list */
    double *bsum;    /* [V/SK_BLK + 1] sum of ev over each block */
    int32_t *cid;    /* [V] candidate ids; heap ids */
    float *cs;       /* [V] candidate scaled logits; heap values */
    int32_t *cnt;    /* [V] output-token counts, zero between calls */
    uint8_t *mark;   /* [V] MARK_* bits, zero between calls */
    int32_t *pen;    /* [V] distinct tokens the penalties touch */
    int32_t *sav_id; /* [V] tokens changed in the row ... */
    float *sav_v;    /* [V] ... and their raw values */
    int n_sav;
};

/* ---- random numbers ----------------------------------------------------- */

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sampler_seed(uint64_t rng[4], uint64_t seed, uint64_t index) {
    uint64_t x = seed;
    x = splitmix64(&x) ^ (index * 0xd1b54a32d192ed03ull + 0x8bb84b93962eacc9ull);
    for (int i = 0; i < 4; i++) rng[i] = splitmix64(&x);
    if (!(rng[0] | rng[1] | rng[2] | rng[3])) rng[0] = 1; /* xoshiro's one forbidden state */
}

static uint64_t xoshiro256ss(uint64_t s[4]) {
    uint64_t r = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return r;
}

double sampler_uniform(uint64_t rng[4]) { return (double)(xoshiro256ss(rng) >> 11) * 0x1.0p-53; }

/* ---- the O(V) passes (sampler_kern.h) ------------------------------------ */

#define SK_VW 4
#define SK(name) name##_base
#define SK_API static
#include "engine/sampler_kern.h"

static const struct sampler_kernels kernels_base = {
#if defined(__x86_64__)
    "sse2",
#elif defined(__aarch64__)
    "neon",
#else
    "portable",
#endif
    k_max_base, k_first_ge_base, k_next_chunk_gt_base, k_weights_base, k_gather_ge_base, k_sumexp_base,
    k_count_lp_ge_base,
};

#if defined(__x86_64__)
extern const struct sampler_kernels sampler_kernels_avx2, sampler_kernels_avx512;
#endif

/* The widest set this CPU runs, or the one named (NULL if it cannot run here). */
static const struct sampler_kernels *kernels_pick(const char *name) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    if (!name) return avx512 ? &sampler_kernels_avx512 : avx2 ? &sampler_kernels_avx2 : &kernels_base;
    if (!strcmp(name, "avx512")) return avx512 ? &sampler_kernels_avx512 : NULL;
    if (!strcmp(name, "avx2")) return avx2 ? &sampler_kernels_avx2 : NULL;
#endif
    if (!name || !strcmp(name, kernels_base.name)) return &kernels_base;
    return NULL;
}

/* First index of the maximum (torch.argmax); 0 when every entry is -inf. */
static int32_t row_argmax(const struct sampler_scratch *S, const float *l, int n) {
    int i = S->k->first_ge(l, n, S->k->max(l, n));
    return i < 0 ? 0 : i;
}

/* log-sum-exp of a raw row as log_softmax computes it: *m = max, *L = log sum exp(l - m). */
static void row_lse(const struct sampler_scratch *S, const float *l, int n, float *m, float *L) {
    *m = S->k->max(l, n);
    *L = *m == -INFINITY ? 0 : (float)log(S->k->sumexp(l, n, *m));
}

/* ---- scratch ------------------------------------------------------------ */

struct sampler_scratch *sampler_scratch_new(int n_vocab) {
    if (n_vocab < 1) return NULL;
    struct sampler_scratch *s = xcalloc(1, sizeof *s);
    size_t V = (size_t)n_vocab;
    s->V = n_vocab;
    s->ev = xmalloc(V * sizeof *s->ev);
    s->k = kernels_pick(NULL);
    s->bsum = xmalloc((V / SK_BLK + 1) * sizeof *s->bsum);
    s->cid = xmalloc(V * sizeof *s->cid);
    s->cs = xmalloc(V * sizeof *s->cs);
    s->cnt = xcalloc(V, sizeof *s->cnt);
    s->mark = xcalloc(V, sizeof *s->mark);
    s->pen = xmalloc(V * sizeof *s->pen);
    s->sav_id = xmalloc(V * sizeof *s->sav_id);
    s->sav_v = xmalloc(V * sizeof *s->sav_v);
    return s;
}

const char *sampler_scratch_isa(struct sampler_scratch *s, const char *force) {
    if (force) {
        const struct sampler_kernels *k = kernels_pick(force);
        if (!k) return NULL;
        s->k = k;
    }
    return s->k->name;
}

void sampler_scratch_free(struct sampler_scratch *s) {
    if (!s) return;
    free(s->ev);
    free(s->bsum);
    free(s->cid);
    free(s->cs);
    free(s->cnt);
    free(s->mark);
    free(s->pen);
    free(s->sav_id);
    free(s->sav_v);
    free(s);
}

/* ---- logit processors --------------------------------------------------- */

static inline void row_set(struct sampler_scratch *S, float *l, int32_t id, float v) {
    if (!(S->mark[id] & MARK_SAVED)) {
        S->mark[id] |= MARK_SAVED;
        S->sav_id[S->n_sav] = id;
        S->sav_v[S->n_sav++] = l[id];
    }
    l[id] = v;
}

/* Put back the raw values (if restore) and clear the SAVED marks. */
static void row_unsave(struct sampler_scratch *S, float *l, bool restore) {
    for (int j = 0; j < S->n_sav; j++) {
        if (restore) l[S->sav_id[j]] = S->sav_v[j];
        S->mark[S->sav_id[j]] &= (uint8_t)~MARK_SAVED;
    }
    S->n_sav = 0;
}

/* allowed_token_ids, bad_words, min_tokens, logit_bias and penalties, in vLLM's
 * order, on the tokens they name. The allowed set is not written into the row:
 * it becomes the candidate list cid[0..n) (deduplicated), and the return value
 * is n, or -1 when every token is allowed. With keep_allowed the ALLOWED marks
 * stay set for the caller to clear. */
static int row_process(struct sampler_scratch *S, float *l, int V, const struct sampler_seq *q, bool keep_allowed) {
    const struct vllmc_sampling_params *sp = q->sp;
    int n_allowed = -1;
    if (sp->allowed_token_ids && sp->n_allowed_token_ids > 0) {
        n_allowed = 0;
        for (int j = 0; j < sp->n_allowed_token_ids; j++) {
            int32_t t = sp->allowed_token_ids[j];
            if (t < 0 || t >= V || (S->mark[t] & MARK_ALLOWED)) continue;
            S->mark[t] |= MARK_ALLOWED;
            S->cid[n_allowed++] = t;
        }
        if (!keep_allowed)
            for (int j = 0; j < n_allowed; j++) S->mark[S->cid[j]] &= (uint8_t)~MARK_ALLOWED;
    }

    /* bad_words: the last token of a word is banned when the output ends with
     * the rest of it (vllm/v1/sample/ops/bad_words.py) */
    for (int w = 0; w < q->n_bad_words; w++) {
        const int32_t *bw = q->bad_words[w];
        int len = q->bad_words_len[w];
        if (!bw || len <= 0 || len - 1 > q->n_output) continue;
        if (len > 1 && memcmp(q->output + q->n_output - (len - 1), bw, (size_t)(len - 1) * sizeof *bw)) continue;
        int32_t t = bw[len - 1];
        if (t >= 0 && t < V) row_set(S, l, t, -INFINITY);
    }

    /* min_tokens: EOS and stop_token_ids until enough tokens */
    if (q->n_output < sp->min_tokens) {
        for (int j = 0; j < q->n_eos; j++)
            if (q->eos_ids[j] >= 0 && q->eos_ids[j] < V) row_set(S, l, q->eos_ids[j], -INFINITY);
        for (int j = 0; j < sp->n_stop_token_ids; j++) {
            int32_t t = sp->stop_token_ids[j];
            if (t >= 0 && t < V) row_set(S, l, t, -INFINITY);
        }
    }

    /* logit_bias: a dict in vLLM, so a repeated id takes its last value */
    if (sp->logit_bias_ids && sp->logit_bias_values) {
        for (int j = sp->n_logit_bias - 1; j >= 0; j--) {
            int32_t t = sp->logit_bias_ids[j];
            if (t < 0 || t >= V || (S->mark[t] & MARK_BIAS)) continue;
            S->mark[t] |= MARK_BIAS;
            row_set(S, l, t, l[t] + sp->logit_bias_values[j]);
        }
        for (int j = 0; j < sp->n_logit_bias; j++) {
            int32_t t = sp->logit_bias_ids[j];
            if (t >= 0 && t < V) S->mark[t] &= (uint8_t)~MARK_BIAS;
        }
    }

    /* penalties (vllm/model_executor/layers/utils.py apply_penalties) */
    float rep = sp->repetition_penalty, freq = sp->frequency_penalty, pres = sp->presence_penalty;
    if (rep != 1.0f || freq != 0.0f || pres != 0.0f) {
        int np = 0;
        for (int j = 0; j < q->n_output; j++) {
            int32_t t = q->output[j];
            if (t < 0 || t >= V) continue;
            if (S->cnt[t]++ == 0 && !(S->mark[t] & MARK_PEN)) S->mark[t] |= MARK_PEN, S->pen[np++] = t;
        }
        if (rep != 1.0f)
            for (int j = 0; j < q->n_prompt; j++) {
                int32_t t = q->prompt[j];
                if (t >= 0 && t < V && !(S->mark[t] & MARK_PEN)) S->mark[t] |= MARK_PEN, S->pen[np++] = t;
            }
        for (int j = 0; j < np; j++) {
            int32_t t = S->pen[j];
            float v = l[t];
            if (rep != 1.0f) v = v > 0 ? v / rep : v * rep;
            int c = S->cnt[t];
            if (c > 0) {
                v -= freq * (float)c;
                v -= pres;
            }
            row_set(S, l, t, v);
            S->cnt[t] = 0;
            S->mark[t] &= (uint8_t)~MARK_PEN;
        }
    }
    return n_allowed;
}

/* ---- selection ---------------------------------------------------------- */

/* Heap of the k best (value, id) pairs in cs/cid, worst at the root; better =
 * larger value, then lower id (torch.topk order for logprobs). */
static inline bool worse(float va, int32_t ia, float vb, int32_t ib) { return va < vb || (va == vb && ia > ib); }

static void heap_down(float *hv, int32_t *hid, int n, int i) {
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && worse(hv[c + 1], hid[c + 1], hv[c], hid[c])) c++;
        if (!worse(hv[c], hid[c], hv[i], hid[i])) return;
        float tv = hv[c];
        int32_t ti = hid[c];
        hv[c] = hv[i], hid[c] = hid[i];
        hv[i] = tv, hid[i] = ti;
        i = c;
    }
}

static inline void heap_offer(float *hv, int32_t *hid, int k, const float *l, int i) {
    if (l[i] > hv[0]) { /* ids grow along the row, so an equal value never wins */
        hv[0] = l[i], hid[0] = i;
        heap_down(hv, hid, k, 0);
    }
}

/* The k (1 <= k <= n) best entries of l[0..n) into S->cs/cid as a heap. Only
 * 32-token chunks holding a value above the heap's worst are looked at. */
static void row_topk_heap(struct sampler_scratch *S, const float *l, int n, int k) {
    float *hv = S->cs;
    int32_t *hid = S->cid;
    for (int i = 0; i < k; i++) hv[i] = l[i] == l[i] ? l[i] : -INFINITY, hid[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) heap_down(hv, hid, k, i);
    int i = k;
    for (; i < n && (i & 31); i++) heap_offer(hv, hid, k, l, i);
    while (i < n) {
        i = S->k->next_chunk_gt(l, i, n, hv[0]);
        for (int end = MIN(n, i + 32); i < end; i++) heap_offer(hv, hid, k, l, i);
    }
}

static int cand_topk(struct sampler_scratch *S, int n, int k);

/* A value below lk can divide by T to the same float as lk only within a few
 * ulps of it: the floor that keeps such ties in the gather. */
static inline float tie_floor(float lk) { return lk - (fabsf(lk) * 8 * FLT_EPSILON + FLT_MIN); }

/* The r-th largest (0-based) of a[0..n), partially reordering a. */
static float select_desc(float *a, int n, int r) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float x = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > x) i++;
            while (a[j] < x) j--;
            if (i <= j) {
                float t = a[i];
                a[i++] = a[j], a[j--] = t;
            }
        }
        if (r <= j) hi = j;
        else if (r >= i) lo = i;
        else return a[r];
    }
    return a[r];
}

/* The gathered tokens cid/cs[0..n) (raw logits, id order, every one >= the
 * k-th value's tie floor): scaled by 1/T and cut to the top k with its ties. */
static int topk_finish(struct sampler_scratch *S, int n, int k, float T) {
    for (int j = 0; j < n; j++) S->cs[j] /= T;
    n = cand_topk(S, n, k);
    return S->cs[k - 1] == -INFINITY ? -1 : n;
}

/* Top-k of a dense row for sampling: into cid/cs (scaled by 1/T) every token
 * whose scaled logit is >= the k-th largest one, as vLLM's top-k mask (ties at
 * the threshold are kept). Returns how many, or -1 when the k-th value is -inf
 * (top_k then masks nothing).
 * Small k: a k-heap finds the k-th value, then a gather at that value. Larger
 * k: a threshold from a strided sample of 4096 logits, a gather above it,
 * checked to hold at least k tokens (else a lower threshold), and an O(n)
 * selection among those. */
static int row_topk_gather(struct sampler_scratch *S, const float *l, int V, int k, float T) {
    int n;
    if (k <= 64) {
        row_topk_heap(S, l, V, k);
        float lk = S->cs[0];
        if (lk == -INFINITY) return -1;
        n = S->k->gather_ge(l, V, tie_floor(lk), S->cid, S->cs);
    } else {
        int stride = MAX(1, V / 4096), ns = 0;
        for (int i = 0; i < V; i += stride) S->ev[ns++] = l[i] == l[i] ? l[i] : -INFINITY;
        /* the sample rank where the k-th largest is expected, with room to spare */
        long r = (long)((double)k * ns / V * 1.5) + 16;
        for (;;) {
            float t = r < ns ? select_desc(S->ev, ns, (int)r) : -INFINITY;
            n = S->k->gather_ge(l, V, t == -INFINITY ? t : tie_floor(t), S->cid, S->cs);
            int at_t = 0;
            for (int j = 0; j < n; j++) at_t += S->cs[j] >= t;
            if (at_t >= k || t == -INFINITY) break;
            r *= 4;
        }
        if (n < k) return -1; /* fewer than k tokens are not NaN */
    }
    return topk_finish(S, n, k, T);
}

/* Order of vLLM's top-p: by scaled logit, and among equal logits the higher id
 * ranks first (its stable ascending sort puts the lower id nearer the tail). */
static inline bool above(float sa, int32_t ia, float sb, int32_t ib) { return sa > sb || (sa == sb && ia > ib); }

static inline void cand_swap(struct sampler_scratch *S, int i, int j, bool w) {
    float ts = S->cs[i];
    int32_t ti = S->cid[i];
    S->cs[i] = S->cs[j], S->cid[i] = S->cid[j];
    S->cs[j] = ts, S->cid[j] = ti;
    if (w) {
        float te = S->ev[i];
        S->ev[i] = S->ev[j], S->ev[j] = te;
    }
}

/* Partition candidates [lo, hi) around a median-of-three pivot: those above
 * it first. Returns the pivot's index; *mass = weight above it (when w). */
static int cand_partition(struct sampler_scratch *S, int lo, int hi, bool w, double *mass) {
    int a = lo, b = lo + (hi - lo) / 2, c = hi - 1, p;
    const float *s = S->cs;
    const int32_t *id = S->cid;
    if (above(s[a], id[a], s[b], id[b])) {
        if (above(s[b], id[b], s[c], id[c])) p = b;
        else p = above(s[a], id[a], s[c], id[c]) ? c : a;
    } else {
        if (above(s[a], id[a], s[c], id[c])) p = a;
        else p = above(s[b], id[b], s[c], id[c]) ? c : b;
    }
    cand_swap(S, p, hi - 1, w);
    float ps = s[hi - 1];
    int32_t pid = id[hi - 1];
    int k = lo;
    double m = 0;
    for (int i = lo; i < hi - 1; i++)
        if (above(s[i], id[i], ps, pid)) {
            if (w) m += S->ev[i];
            cand_swap(S, i, k++, w);
        }
    cand_swap(S, k, hi - 1, w);
    *mass = m;
    return k;
}

/* Top-k of the candidate list (n > k): the k best first, then the ones that tie
 * with the k-th. Returns the new length. */
static int cand_topk(struct sampler_scratch *S, int n, int k) {
    int lo = 0, hi = n;
    double unused;
    while (lo < hi) {
        int p = cand_partition(S, lo, hi, false, &unused);
        if (p == k - 1) break;
        if (p > k - 1) hi = p;
        else lo = p + 1;
    }
    float vk = S->cs[k - 1];
    int m = k;
    for (int i = k; i < n; i++)
        if (S->cs[i] == vk) cand_swap(S, i, m++, false);
    return m;
}

/* Top-p of the candidate list with weights ev (total Z): keeps, first, the
 * candidates whose tail probability (theirs and everything below) exceeds
 * 1 - top_p, i.e. the mass strictly above them is < Z * top_p; at least the
 * best one. Quickselect on mass, O(n). Returns how many are kept. */
static int cand_topp(struct sampler_scratch *S, int n, double Z, float top_p) {
    double P = Z * (1.0 - (double)(1.0f - top_p)); /* vLLM compares cumsum with 1 - p in float */
    int lo = 0, hi = n;
    double acc = 0;
    while (lo < hi) {
        double A;
        int p = cand_partition(S, lo, hi, true, &A);
        if (acc + A >= P) hi = p;
        else acc += A + S->ev[p], lo = p + 1;
    }
    if (lo == 0 && n > 0) { /* top_p so small that nothing qualifies: keep the best */
        int b = 0;
        for (int i = 1; i < n; i++)
            if (above(S->cs[i], S->cid[i], S->cs[b], S->cid[b])) b = i;
        cand_swap(S, 0, b, true);
        lo = 1;
    }
    return lo;
}

/* ---- the distribution --------------------------------------------------- */

/* What the draw picks from: weights over the dense row (ev, bsum) or over the
 * candidate list (cid, ev[0..n)); Z = 0 when every candidate is -inf. */
struct kept {
    bool dense;
    int n;
    double Z;
};

/* A first guess at a weight floor below the nucleus, from a strided sample of
 * the weights: where the sample's mass by binary exponent, scaled up, reaches
 * P, one octave lower. The caller checks the guess. */
static float topp_guess(const float *ev, int V, double P) {
    int stride = MAX(1, V / 4096);
    double h[128] = { 0 };
    for (int i = 0; i < V; i += stride) {
        uint32_t b;
        memcpy(&b, &ev[i], 4);
        h[(b >> 23) & 127] += ev[i];
    }
    h[127] += 1; /* the most likely token, weight 1, wherever the stride fell */
    double cum = 0;
    for (int e = 127; e > 1; e--) {
        cum += h[e] * stride;
        if (cum >= P) return ldexpf(1.0f, e - 128);
    }
    return FLT_MIN;
}

/* Weights of the candidate list from its scaled logits, dropping zeros and
 * those under min_p. Returns the sum (0: nothing is finite). */
static double cand_weights(struct sampler_scratch *S, int *n, float min_p) {
    float m = -INFINITY;
    for (int j = 0; j < *n; j++) m = S->cs[j] > m ? S->cs[j] : m;
    if (m == -INFINITY) return *n = 0, 0;
    double Z = 0;
    int w = 0;
    for (int j = 0; j < *n; j++) {
        float e = sk_exp1(S->cs[j] - m);
        if (e <= 0 || e < min_p) continue;
        S->cid[w] = S->cid[j], S->cs[w] = S->cs[j], S->ev[w] = e;
        Z += e;
        w++;
    }
    *n = w;
    return Z;
}

/* min_p and top_p over the candidate list cid/cs[0..n) (scaled logits). */
static void kept_cands(struct sampler_scratch *S, int n, const struct vllmc_sampling_params *sp, struct kept *K) {
    *K = (struct kept){ 0 };
    double Z = cand_weights(S, &n, sp->min_p > 0 ? sp->min_p : 0);
    if (Z <= 0) return;
    K->n = sp->top_p < 1.0f ? cand_topp(S, n, Z, sp->top_p) : n;
    Z = 0;
    for (int j = 0; j < K->n; j++) Z += S->ev[j];
    K->Z = Z;
}

/* Temperature, min_p, top_k and top_p over the processed row (candidates:
 * cid[0..n_allowed), or every token when n_allowed < 0). */
static void build_kept(struct sampler_scratch *S, const float *l, int V, int n_allowed,
                       const struct vllmc_sampling_params *sp, float T, struct kept *K) {
    int n = n_allowed, ncand = n < 0 ? V : n;
    bool use_k = sp->top_k > 0 && sp->top_k < ncand, use_p = sp->top_p < 1.0f;
    float min_p = sp->min_p > 0 ? sp->min_p : 0;
    if (n >= 0) {
        for (int j = 0; j < n; j++) S->cs[j] = l[S->cid[j]] / T;
        if (use_k) n = cand_topk(S, n, sp->top_k);
    } else if (use_k) {
        n = row_topk_gather(S, l, V, sp->top_k, T);
    }
    *K = (struct kept){ 0 };
    if (n < 0) { /* the whole row */
        float m = S->k->max(l, V);
        if (m == -INFINITY) return;
        double Z = S->k->weights(l, V, m, 1.0f / T, min_p, S->ev, S->bsum);
        if (!use_p) {
            *K = (struct kept){ .dense = true, .n = V, .Z = Z };
            return;
        }
        /* The nucleus is a prefix of the order, so the tokens of weight >= t
         * hold it once they carry mass >= P: gather at a guessed t, lower it
         * until they do. Weights that underflowed to 0 are never drawn. */
        double P = Z * (1.0 - (double)(1.0f - sp->top_p)), need = P * (1 + 1e-9);
        for (float t = topp_guess(S->ev, V, P);; t = MAX(t * 0x1p-8f, FLT_MIN)) {
            n = S->k->gather_ge(S->ev, V, t, S->cid, S->cs);
            double G = 0;
            for (int j = 0; j < n; j++) G += S->cs[j];
            if (G >= need || t == FLT_MIN) break;
        }
        memcpy(S->ev, S->cs, (size_t)n * sizeof *S->ev);
        for (int j = 0; j < n; j++) S->cs[j] = l[S->cid[j]] / T;
        K->n = cand_topp(S, n, Z, sp->top_p);
    } else {
        kept_cands(S, n, sp, K);
        return;
    }
    double Z = 0;
    for (int j = 0; j < K->n; j++) Z += S->ev[j];
    K->Z = Z;
}

/* The kept candidates cid/ev[0..n) in id order (heapsort), for up to
 * KEPT_SORT_MAX of them: the draw walks them in an order that does not
 * depend on how they were found (the host's gather above a guessed weight,
 * or a device's candidate list: at most SAMPLER_DEV_NUCLEUS_K + 64), so both
 * give the same token for the same draw. A larger nucleus (only the host
 * finds one) keeps its partition order: sorting 100k tokens of a flat row
 * would cost milliseconds. */
#define KEPT_SORT_MAX 1024
_Static_assert(KEPT_SORT_MAX >= SAMPLER_DEV_NUCLEUS_K + 64, "a device nucleus (k + 64 candidates) is always sorted");
static void kept_by_id(const struct sampler_scratch *S, int n) {
    int32_t *id = S->cid;
    float *w = S->ev;
    for (int start = n / 2 - 1, end = n; end > 1;) {
        int root;
        if (start >= 0) root = start--;
        else {
            end--;
            int32_t ti = id[0];
            float tw = w[0];
            id[0] = id[end], w[0] = w[end], id[end] = ti, w[end] = tw;
            root = 0;
        }
        for (int c; (c = 2 * root + 1) < end; root = c) {
            if (c + 1 < end && id[c + 1] > id[c]) c++;
            if (id[root] >= id[c]) break;
            int32_t ti = id[root];
            float tw = w[root];
            id[root] = id[c], w[root] = w[c], id[c] = ti, w[c] = tw;
        }
    }
}

/* Invert the cumulative weights at u in [0, 1). */
static int32_t kept_draw(const struct sampler_scratch *S, const struct kept *K, int V, double u) {
    if (!(K->Z > 0)) return 0;
    double target = u * K->Z, cum = 0;
    if (!K->dense) {
        if (K->n <= KEPT_SORT_MAX) kept_by_id(S, K->n);
        for (int j = 0; j < K->n; j++) {
            cum += S->ev[j];
            if (cum > target) return S->cid[j];
        }
        return S->cid[K->n - 1]; /* rounding: u * Z met the total */
    }
    int nb = (V + SK_BLK - 1) / SK_BLK, b = 0;
    for (; b < nb - 1 && cum + S->bsum[b] <= target; b++) cum += S->bsum[b];
    int last = -1;
    for (int i = b * SK_BLK; i < MIN(V, b * SK_BLK + SK_BLK); i++)
        if (S->ev[i] > 0) {
            last = i;
            cum += S->ev[i];
            if (cum > target) return i;
        }
    if (last >= 0) return last;
    for (int i = b * SK_BLK - 1; i >= 0; i--)
        if (S->ev[i] > 0) return i;
    return 0;
}

static float effective_temperature(const struct vllmc_sampling_params *sp) {
    float T = sp->temperature;
    return T > 0 && T < MIN_TEMP ? MIN_TEMP : T;
}

static int32_t greedy_pick(const struct sampler_scratch *S, const float *l, int V, int n_allowed) {
    if (n_allowed < 0) return row_argmax(S, l, V);
    float bv = -INFINITY;
    int32_t bi = 0;
    for (int j = 0; j < n_allowed; j++) {
        int32_t t = S->cid[j];
        if (l[t] > bv || (l[t] == bv && t < bi)) bv = l[t], bi = t;
    }
    return bv == -INFINITY ? 0 : bi; /* all -inf: argmax of the masked row is 0 */
}

/* ---- public ------------------------------------------------------------- */

static void top_fill(struct sampler_scratch *S, const float *l, int V, int k, float m, float L,
                     struct vllmc_logprob *top) {
    k = MIN(k, V);
    if (k <= 0 || !top) return;
    row_topk_heap(S, l, V, k);
    for (int end = k - 1; end > 0; end--) { /* heap sort: worst to the back */
        float tv = S->cs[0];
        int32_t ti = S->cid[0];
        S->cs[0] = S->cs[end], S->cid[0] = S->cid[end];
        S->cs[end] = tv, S->cid[end] = ti;
        heap_down(S->cs, S->cid, end, 0);
    }
    for (int i = 0; i < k; i++)
        top[i] = (struct vllmc_logprob){ S->cid[i], m == -INFINITY ? -INFINITY : (S->cs[i] - m) - L, i + 1 };
}

static void chosen_fill(const struct sampler_scratch *S, const float *l, int V, int32_t token, float m, float L,
                        struct vllmc_logprob *chosen) {
    if (!chosen) return;
    chosen->token = token;
    if (m == -INFINITY || token < 0 || token >= V) {
        chosen->logprob = -INFINITY;
        chosen->rank = V;
        return;
    }
    chosen->logprob = (l[token] - m) - L;
    chosen->rank = S->k->count_lp_ge(l, V, m, L, chosen->logprob);
}

int32_t sampler_sample(struct sampler_scratch *s, float *logits, int V, struct sampler_seq *q,
                       struct vllmc_logprob *chosen, struct vllmc_logprob *top) {
    if (!s || V < 1 || V > s->V) return 0;
    const struct vllmc_sampling_params *sp = q->sp;
    bool want_lp = sp->logprobs >= 0 && (chosen || top);
    float m = 0, L = 0;
    if (want_lp) {
        row_lse(s, logits, V, &m, &L);
        top_fill(s, logits, V, sp->logprobs, m, L, top);
    }
    int n_allowed = row_process(s, logits, V, q, false);
    float T = effective_temperature(sp);
    int32_t tok;
    if (!(T >= SAMPLING_EPS)) {
        tok = greedy_pick(s, logits, V, n_allowed);
    } else {
        struct kept K;
        build_kept(s, logits, V, n_allowed, sp, T, &K);
        tok = kept_draw(s, &K, V, sampler_uniform(q->rng)); /* one draw, whatever the row */
    }
    row_unsave(s, logits, want_lp);
    if (want_lp) chosen_fill(s, logits, V, tok, m, L, chosen);
    return tok;
}

void sampler_logprobs(struct sampler_scratch *s, const float *logits, int V, int32_t token, int k,
                      struct vllmc_logprob *chosen, struct vllmc_logprob *top) {
    if (!s || V < 1 || V > s->V) return;
    float m, L;
    row_lse(s, logits, V, &m, &L);
    top_fill(s, logits, V, k, m, L, top);
    chosen_fill(s, logits, V, token, m, L, chosen);
}

void sampler_apply_processors(struct sampler_scratch *s, float *logits, int V, const struct sampler_seq *q) {
    if (!s || V < 1 || V > s->V) return;
    int n_allowed = row_process(s, logits, V, q, true);
    if (n_allowed >= 0) {
        for (int i = 0; i < V; i++)
            if (!(s->mark[i] & MARK_ALLOWED)) logits[i] = -INFINITY;
        for (int j = 0; j < n_allowed; j++) s->mark[s->cid[j]] &= (uint8_t)~MARK_ALLOWED;
    }
    row_unsave(s, logits, false);
}

void sampler_distribution(struct sampler_scratch *s, float *logits, int V, const struct sampler_seq *q,
                          float *probs) {
    if (!s || V < 1 || V > s->V) return;
    memset(probs, 0, (size_t)V * sizeof *probs);
    int n_allowed = row_process(s, logits, V, q, false);
    float T = effective_temperature(q->sp);
    if (!(T >= SAMPLING_EPS)) {
        probs[greedy_pick(s, logits, V, n_allowed)] = 1;
    } else {
        struct kept K;
        build_kept(s, logits, V, n_allowed, q->sp, T, &K);
        if (!(K.Z > 0)) probs[0] = 1;
        else if (K.dense)
            for (int i = 0; i < V; i++) probs[i] = (float)(s->ev[i] / K.Z);
        else
            for (int j = 0; j < K.n; j++) probs[s->cid[j]] = (float)(s->ev[j] / K.Z);
    }
    row_unsave(s, logits, false);
}

/* ---- rows whose vocabulary passes ran on a device ------------------------ */

void sampler_dev_plan(const struct sampler_seq *q, int V, struct sampler_dev_plan *p) {
    const struct vllmc_sampling_params *sp = q->sp;
    *p = (struct sampler_dev_plan){ .mode = SAMPLER_DEV_HOST };
    /* the processors of row_process, under the same conditions */
    if (sp->allowed_token_ids && sp->n_allowed_token_ids > 0) return;
    if (sp->logit_bias_ids && sp->logit_bias_values && sp->n_logit_bias > 0) return;
    if (sp->repetition_penalty != 1.0f || sp->frequency_penalty != 0.0f || sp->presence_penalty != 0.0f) return;
    if (q->n_output < sp->min_tokens) return;
    for (int w = 0; w < q->n_bad_words; w++) {
        const int32_t *bw = q->bad_words[w];
        int len = q->bad_words_len[w];
        if (!bw || len <= 0 || len - 1 > q->n_output) continue;
        if (len > 1 && memcmp(q->output + q->n_output - (len - 1), bw, (size_t)(len - 1) * sizeof *bw)) continue;
        if (bw[len - 1] >= 0 && bw[len - 1] < V) return;
    }
    int n_top = sp->logprobs > 0 ? MIN(sp->logprobs, V) : 0;
    float T = effective_temperature(sp);
    if (!(T >= SAMPLING_EPS)) {
        p->mode = SAMPLER_DEV_ARGMAX;
        p->k = n_top;
    } else {
        bool use_k = sp->top_k > 0 && sp->top_k < V, use_p = sp->top_p < 1.0f;
        if (!use_k && !use_p) {
            p->mode = SAMPLER_DEV_DRAW;
            p->k = n_top;
            p->inv_t = 1.0f / T;
            p->min_p = sp->min_p > 0 ? sp->min_p : 0;
        } else if (use_k && sp->top_k <= SAMPLER_DEV_MAX_K) {
            p->mode = SAMPLER_DEV_CANDS;
            p->k = MAX(sp->top_k, n_top);
        } else if (!use_k && V > SAMPLER_DEV_NUCLEUS_K) {
            p->mode = SAMPLER_DEV_NUCLEUS;
            p->k = SAMPLER_DEV_NUCLEUS_K;
            p->wsum = true;
            p->inv_t = 1.0f / T;
            p->min_p = sp->min_p > 0 ? sp->min_p : 0;
        } else {
            return; /* a large top_k (or top_p over a tiny vocabulary): the host's passes */
        }
        p->draws = true;
    }
    p->lp = sp->logprobs >= 0;
    p->cap = p->k ? p->k + 64 : 0; /* ties at the k-th value and the lowered floor's few extra */
}

/* Position of token t among the candidates, or -1. */
static int cand_find(const struct sampler_dev_row *d, int32_t t) {
    for (int j = 0; j < d->n_cand; j++)
        if (d->cid[j] == t) return j;
    return -1;
}

int32_t sampler_dev_finish(struct sampler_scratch *s, int V, const struct sampler_seq *q,
                           const struct sampler_dev_plan *p, const struct sampler_dev_row *d, double u,
                           struct vllmc_logprob *chosen, struct vllmc_logprob *top) {
    const struct vllmc_sampling_params *sp = q->sp;
    if (!s || V < 1 || V > s->V || p->mode == SAMPLER_DEV_HOST) return -1;
    /* every token the host needs must be a candidate: the floor is finite
     * (kth > -inf) and none were cut off */
    if (p->k > 0 && (!(d->floor > -INFINITY) || d->n_cand > p->cap || d->n_cand < p->k)) return -1;
    int32_t tok = d->token;
    if (p->mode == SAMPLER_DEV_CANDS) {
        /* row_topk_gather from here on: the k-th value, the gather at its tie
         * floor (a subset of the candidates, same id order), then the same
         * candidate-list code as sampler_sample */
        const int k = sp->top_k, n = d->n_cand;
        memcpy(s->ev, d->cv, (size_t)n * sizeof *s->ev);
        float lk = select_desc(s->ev, n, k - 1), t = tie_floor(lk);
        if (lk == -INFINITY || d->floor > t) return -1;
        int c = 0;
        for (int j = 0; j < n; j++)
            if (d->cv[j] >= t) s->cid[c] = d->cid[j], s->cs[c++] = d->cv[j];
        c = topk_finish(s, c, k, effective_temperature(sp));
        if (c < 0) return -1;
        struct kept K;
        kept_cands(s, c, sp, &K);
        tok = kept_draw(s, &K, V, u);
    } else if (p->mode == SAMPLER_DEV_NUCLEUS) {
        /* build_kept's top_p over the whole row, from the candidates: their
         * weights as the host's weight pass makes them, the device's sum of
         * all; they hold the nucleus (a prefix of the order) once they carry
         * the mass the host's gather asks for */
        const float T = effective_temperature(sp), m = d->m;
        const double Z = d->z, P = Z * (1.0 - (double)(1.0f - sp->top_p)), need = P * (1 + 1e-9);
        if (!(Z > 0) || !(m > -INFINITY)) return -1;
        int c = 0;
        double G = 0;
        for (int j = 0; j < d->n_cand; j++) {
            float e = sk_exp1((d->cv[j] - m) * p->inv_t);
            if (!(e >= p->min_p) || e <= 0) continue;
            s->cid[c] = d->cid[j], s->ev[c] = e, s->cs[c++] = d->cv[j] / T;
            G += e;
        }
        if (!(G >= need)) return -1;
        struct kept K = { .n = cand_topp(s, c, Z, sp->top_p) };
        for (int j = 0; j < K.n; j++) K.Z += s->ev[j];
        tok = kept_draw(s, &K, V, u);
    }
    if (tok < 0 || tok >= V) return -1;
    if (sp->logprobs < 0) return tok;
    const float m = d->m, L = d->L;
    if (chosen) {
        if (p->mode != SAMPLER_DEV_CANDS && p->mode != SAMPLER_DEV_NUCLEUS) {
            *chosen = (struct vllmc_logprob){ tok, d->logprob, d->rank };
        } else {
            /* rank by counting the candidates: exact when no token under the
             * floor can reach the chosen logprob */
            int j = cand_find(d, tok);
            if (j < 0) return -1;
            float lp = (d->cv[j] - m) - L;
            if (!((d->floor - m) - L < lp)) return -1;
            int r = 0;
            for (int i = 0; i < d->n_cand; i++) r += (d->cv[i] - m) - L >= lp;
            *chosen = (struct vllmc_logprob){ tok, lp, r };
        }
    }
    const int kt = MIN(sp->logprobs, V);
    if (kt > 0 && top) {
        /* the kt best candidates (every token outside is below all of them),
         * by value then lower id, as top_fill orders them */
        if (d->n_cand < kt) return -1;
        float *hv = s->cs;
        int32_t *hid = s->cid;
        for (int i = 0; i < kt; i++) hv[i] = d->cv[i], hid[i] = d->cid[i];
        for (int i = kt / 2 - 1; i >= 0; i--) heap_down(hv, hid, kt, i);
        for (int i = kt; i < d->n_cand; i++)
            if (worse(hv[0], hid[0], d->cv[i], d->cid[i])) {
                hv[0] = d->cv[i], hid[0] = d->cid[i];
                heap_down(hv, hid, kt, 0);
            }
        for (int end = kt - 1; end > 0; end--) {
            float tv = hv[0];
            int32_t ti = hid[0];
            hv[0] = hv[end], hid[0] = hid[end];
            hv[end] = tv, hid[end] = ti;
            heap_down(hv, hid, end, 0);
        }
        for (int i = 0; i < kt; i++) top[i] = (struct vllmc_logprob){ hid[i], (hv[i] - m) - L, i + 1 };
    }
    return tok;
}

int sampler_check_params(const struct vllmc_sampling_params *sp, int n_vocab, char *err, size_t errlen) {
#define BAD(...) return errf(err, errlen, __VA_ARGS__), VLLMC_EINVAL
    if (sp->n < 1) BAD("n must be at least 1, got %d.", sp->n);
    if (!(sp->presence_penalty >= -2.0f && sp->presence_penalty <= 2.0f))
        BAD("presence_penalty must be in [-2, 2], got %g.", sp->presence_penalty);
    if (!(sp->frequency_penalty >= -2.0f && sp->frequency_penalty <= 2.0f))
        BAD("frequency_penalty must be in [-2, 2], got %g.", sp->frequency_penalty);
    if (!isfinite(sp->repetition_penalty))
        BAD("repetition_penalty must be a finite number, got %g.", sp->repetition_penalty);
    if (sp->repetition_penalty <= 0.0f)
        BAD("repetition_penalty must be greater than zero, got %g.", sp->repetition_penalty);
    if (!isfinite(sp->temperature)) BAD("temperature must be a finite number, got %g.", sp->temperature);
    if (sp->temperature < 0.0f) BAD("temperature must be non-negative, got %g.", sp->temperature);
    if (sp->temperature > 2.0f) BAD("temperature must be in [0, 2], got %g.", sp->temperature);
    if (!(sp->top_p > 0.0f && sp->top_p <= 1.0f)) BAD("top_p must be in (0, 1], got %g.", sp->top_p);
    if (sp->top_k < -1) BAD("top_k must be 0 (disable), or at least 1, got %d.", sp->top_k);
    if (!(sp->min_p >= 0.0f && sp->min_p <= 1.0f)) BAD("min_p must be in [0, 1], got %g.", sp->min_p);
    if (sp->max_tokens == 0) BAD("max_tokens must be at least 1, got %d.", sp->max_tokens);
    if (sp->min_tokens < 0) BAD("min_tokens must be greater than or equal to 0, got %d.", sp->min_tokens);
    if (sp->max_tokens > 0 && sp->min_tokens > sp->max_tokens)
        BAD("min_tokens must be less than or equal to max_tokens=%d, got %d.", sp->max_tokens, sp->min_tokens);
    for (int j = 0; j < sp->n_stop; j++)
        if (!sp->stop[j] || !sp->stop[j][0]) BAD("stop cannot contain an empty string.");
    if (sp->n_stop > 0 && !sp->detokenize)
        BAD("stop strings are only supported when detokenize is True. Set detokenize=True to use stop.");
    for (int j = 0; j < sp->n_bad_words; j++)
        if (!sp->bad_words[j] || !sp->bad_words[j][0]) BAD("bad_words cannot contain an empty string.");
    if (effective_temperature(sp) < SAMPLING_EPS && sp->n > 1)
        BAD("n must be 1 when using greedy sampling, got %d.", sp->n);
    if (sp->allowed_token_ids) {
        if (sp->n_allowed_token_ids <= 0) BAD("allowed_token_ids is not None and empty!");
        for (int j = 0; j < sp->n_allowed_token_ids; j++)
            if (sp->allowed_token_ids[j] < 0 || sp->allowed_token_ids[j] >= n_vocab)
                BAD("allowed_token_ids contains out-of-vocab token id!");
    }
    if (sp->n_logit_bias > 0) {
        char list[256] = "";
        size_t len = 0;
        int bad = 0;
        for (int j = 0; j < sp->n_logit_bias; j++) {
            int32_t t = sp->logit_bias_ids[j];
            if (t >= 0 && t < n_vocab) continue;
            if (len < sizeof list - 16)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", bad ? ", " : "", (int)t);
            bad++;
        }
        if (bad)
            BAD("token_id(s) [%s] in logit_bias contain out-of-vocab token ids. Vocabulary size: %d", list, n_vocab);
    }
    return 0;
#undef BAD
}
