/* test_sampler.c — the sampler's math on controlled logits. Expected values
 * come from the definitions of vLLM v1's sampling steps, computed here in
 * double (softmax of hand-picked logits, a plain full-sort reference of
 * min_p / top_k / top_p), never from the sampler's own output. Empirical
 * frequencies of seeded draws are checked with a chi-square test at the 0.1%
 * level (critical values from the chi-square table). */
#include "harness.h"
#include "engine/sampler.h"

#include <pthread.h>
#include <stdint.h>

#define QWEN_V 151936

/* The vocabulary passes exist once per instruction set; the tests that run
 * them over long rows loop over every set this CPU has. */
static const char *const ISAS[] = { "avx512", "avx2", "sse2", "neon", "portable" };
static const char *cur_isa_ = "default";
#define FOR_EACH_ISA(S)                                                            \
    for (int isa_ = 0; isa_ < (int)(sizeof ISAS / sizeof ISAS[0]); isa_++)         \
        if (!sampler_scratch_isa((S), ISAS[isa_]) || !(cur_isa_ = ISAS[isa_])) {  \
        } else

static struct vllmc_sampling_params sp_default(void) {
    struct vllmc_sampling_params sp;
    memset(&sp, 0, sizeof sp);
    sp.n = 1;
    sp.temperature = 1.0f;
    sp.top_p = 1.0f;
    sp.top_k = 0;
    sp.repetition_penalty = 1.0f;
    sp.max_tokens = 16;
    sp.logprobs = -1;
    sp.prompt_logprobs = -1;
    sp.skip_special_tokens = 1;
    sp.spaces_between_special_tokens = 1;
    sp.detokenize = 1;
    return sp;
}

static struct sampler_seq seq_for(const struct vllmc_sampling_params *sp, uint64_t seed) {
    struct sampler_seq q;
    memset(&q, 0, sizeof q);
    q.sp = sp;
    sampler_seed(q.rng, seed, 0);
    return q;
}

/* softmax of l[0..n) in double */
static void softmax_d(const double *l, int n, double *p) {
    double m = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) m = l[i] > m ? l[i] : m;
    for (int i = 0; i < n; i++) z += (p[i] = l[i] == -INFINITY ? 0 : exp(l[i] - m));
    for (int i = 0; i < n; i++) p[i] /= z;
}

/* Draw n tokens from a fresh copy of logits each time. */
static void draw_counts(struct sampler_scratch *S, const float *logits, int V, struct sampler_seq *q, int n,
                        int *counts) {
    float *w = malloc((size_t)V * sizeof *w);
    REQUIRE(w);
    memset(counts, 0, (size_t)V * sizeof *counts);
    for (int i = 0; i < n; i++) {
        memcpy(w, logits, (size_t)V * sizeof *w);
        int32_t t = sampler_sample(S, w, V, q, NULL, NULL);
        REQUIRE(t >= 0 && t < V);
        counts[t]++;
    }
    free(w);
}

/* Pearson chi-square of counts against p at the 0.1% level; tokens with p = 0
 * must never appear. Returns 1 when it passes. */
static int chi2_ok(const int *counts, const double *p, int V, int n) {
    static const double crit[] = { 0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59 };
    double x2 = 0;
    int cats = 0, ok = 1;
    for (int i = 0; i < V; i++) {
        if (p[i] == 0) {
            if (counts[i]) fprintf(stderr, "  token %d has p = 0 but %d draws\n", i, counts[i]), ok = 0;
            continue;
        }
        double e = p[i] * n;
        x2 += (counts[i] - e) * (counts[i] - e) / e;
        cats++;
    }
    int df = cats - 1;
    if (df < 1) return ok;
    REQUIRE(df <= 10);
    if (x2 > crit[df]) {
        fprintf(stderr, "  chi2 = %.2f > %.2f (df %d)\n", x2, crit[df], df);
        for (int i = 0; i < V; i++) fprintf(stderr, "    %d: %d vs %.1f\n", i, counts[i], p[i] * n);
        ok = 0;
    }
    return ok;
}

static void check_dist(struct sampler_scratch *S, const float *logits, int V, const struct sampler_seq *q,
                       const double *want, double tol) {
    float *w = malloc((size_t)V * sizeof *w), *p = malloc((size_t)V * sizeof *p);
    REQUIRE(w && p);
    memcpy(w, logits, (size_t)V * sizeof *w);
    sampler_distribution(S, w, V, q, p);
    for (int i = 0; i < V; i++)
        if (!(fabs(p[i] - want[i]) <= tol)) {
            fprintf(stderr, "  [%s] probs[%d] = %.9g, want %.9g\n", cur_isa_, i, p[i], want[i]);
            test_failed_here_ = 1;
        }
    free(w);
    free(p);
}

/* ---- the reference: vLLM's steps written the plain way -------------------
 * Dense masks and full sorts, double precision for probabilities. *skip is
 * set when a min_p or top_p boundary falls within float rounding of a token
 * heavy enough (p > 1e-6) to move the comparison, where two correct
 * implementations may differ. */

struct sv { double s; int id; };
static int sv_asc(const void *a, const void *b) { /* ascending, ties by id: a stable sort */
    const struct sv *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return x->id - y->id;
}

static void ref_processed(const float *raw, int V, const struct sampler_seq *q, float *l) {
    const struct vllmc_sampling_params *sp = q->sp;
    memcpy(l, raw, (size_t)V * sizeof *l);
    if (sp->allowed_token_ids && sp->n_allowed_token_ids > 0) {
        char *ok = calloc((size_t)V, 1);
        for (int j = 0; j < sp->n_allowed_token_ids; j++) ok[sp->allowed_token_ids[j]] = 1;
        for (int i = 0; i < V; i++)
            if (!ok[i]) l[i] = -INFINITY;
        free(ok);
    }
    for (int w = 0; w < q->n_bad_words; w++) {
        int len = q->bad_words_len[w], match = len - 1 <= q->n_output;
        for (int j = 0; match && j < len - 1; j++)
            match = q->output[q->n_output - (len - 1) + j] == q->bad_words[w][j];
        if (match) l[q->bad_words[w][len - 1]] = -INFINITY;
    }
    if (q->n_output < sp->min_tokens) {
        for (int j = 0; j < q->n_eos; j++) l[q->eos_ids[j]] = -INFINITY;
        for (int j = 0; j < sp->n_stop_token_ids; j++) l[sp->stop_token_ids[j]] = -INFINITY;
    }
    float *bias = calloc((size_t)V, sizeof *bias);
    for (int j = 0; j < sp->n_logit_bias; j++) bias[sp->logit_bias_ids[j]] = sp->logit_bias_values[j]; /* dict */
    for (int i = 0; i < V; i++) l[i] += bias[i];
    free(bias);
    int *cnt = calloc((size_t)V, sizeof *cnt);
    char *inp = calloc((size_t)V, 1);
    for (int j = 0; j < q->n_output; j++) cnt[q->output[j]]++;
    for (int j = 0; j < q->n_prompt; j++) inp[q->prompt[j]] = 1;
    for (int i = 0; i < V; i++) {
        if (inp[i] || cnt[i]) l[i] = l[i] > 0 ? l[i] / sp->repetition_penalty : l[i] * sp->repetition_penalty;
        l[i] -= sp->frequency_penalty * (float)cnt[i];
        l[i] -= sp->presence_penalty * (float)(cnt[i] > 0);
    }
    free(cnt);
    free(inp);
}

static void ref_distribution(const float *raw, int V, const struct sampler_seq *q, double *p, int *skip) {
    const struct vllmc_sampling_params *sp = q->sp;
    float *l = malloc((size_t)V * sizeof *l);
    double *s = malloc((size_t)V * sizeof *s), *pr = malloc((size_t)V * sizeof *pr);
    struct sv *o = malloc((size_t)V * sizeof *o);
    REQUIRE(l && s && pr && o);
    ref_processed(raw, V, q, l);
    *skip = 0;
    float T = sp->temperature;
    if (T > 0 && T < 0.01f) T = 0.01f;
    int finite = 0;
    for (int i = 0; i < V; i++) finite |= l[i] != -INFINITY;
    if (T < 1e-5f || !finite) { /* nothing finite: torch.argmax of the row is 0 */
        int b = 0;
        for (int i = 1; i < V; i++)
            if (l[i] > l[b]) b = i;
        for (int i = 0; i < V; i++) p[i] = i == b;
        goto out;
    }
    for (int i = 0; i < V; i++) s[i] = (double)(l[i] / T); /* vLLM divides in float */
    if (sp->min_p > 0) {
        softmax_d(s, V, pr);
        double mx = 0;
        for (int i = 0; i < V; i++) mx = pr[i] > mx ? pr[i] : mx;
        double thr = sp->min_p * mx;
        for (int i = 0; i < V; i++) {
            if (fabs(pr[i] - thr) < 4e-7 * thr && pr[i] > 1e-6) *skip = 1;
            if (pr[i] < thr) s[i] = -INFINITY;
        }
    }
    if (sp->top_k > 0 && sp->top_k < V) {
        for (int i = 0; i < V; i++) o[i] = (struct sv){ s[i], i };
        qsort(o, (size_t)V, sizeof *o, sv_asc);
        double kth = o[V - sp->top_k].s;
        for (int i = 0; i < V; i++)
            if (s[i] < kth) s[i] = -INFINITY;
    }
    if (sp->top_p < 1.0f) {
        softmax_d(s, V, pr);
        for (int i = 0; i < V; i++) o[i] = (struct sv){ s[i], i };
        qsort(o, (size_t)V, sizeof *o, sv_asc);
        double qq = (double)(1.0f - sp->top_p), cum = 0;
        for (int j = 0; j < V - 1; j++) { /* the last (largest) is always kept */
            cum += pr[o[j].id];
            if (pr[o[j].id] > 1e-6 && fabs(cum - qq) < 3e-7) *skip = 1;
            if (cum <= qq) s[o[j].id] = -INFINITY;
        }
    }
    softmax_d(s, V, p);
out:
    free(l);
    free(s);
    free(pr);
    free(o);
}

static void check_against_ref(struct sampler_scratch *S, const float *logits, int V, const struct sampler_seq *q,
                              int *n_skipped) {
    double *want = malloc((size_t)V * sizeof *want);
    REQUIRE(want);
    int skip;
    ref_distribution(logits, V, q, want, &skip);
    if (skip) (*n_skipped)++;
    else check_dist(S, logits, V, q, want, 2e-6);
    free(want);
}

/* ---- greedy ---------------------------------------------------------------- */

TEST(greedy_argmax_lowest_id_on_ties) {
    struct sampler_scratch *S = sampler_scratch_new(16);
    struct vllmc_sampling_params sp = sp_default();
    sp.temperature = 0;
    struct sampler_seq q = seq_for(&sp, 1);
    uint64_t rng0[4];
    memcpy(rng0, q.rng, sizeof rng0);

    float a[6] = { 1, 3, -2, 3, 0.5f, 3 };
    CHECK(sampler_sample(S, a, 6, &q, NULL, NULL) == 1);
    float b[7] = { 2, 2, 2, 2, 2, 2, 2 };
    CHECK(sampler_sample(S, b, 7, &q, NULL, NULL) == 0);
    float c[9];
    for (int i = 0; i < 9; i++) c[i] = -INFINITY;
    c[6] = -50;
    CHECK(sampler_sample(S, c, 9, &q, NULL, NULL) == 6);
    for (int i = 0; i < 9; i++) c[i] = -INFINITY;
    CHECK(sampler_sample(S, c, 9, &q, NULL, NULL) == 0); /* torch.argmax of an all -inf row */
    float d[13] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7 }; /* the max in the scalar tail */
    CHECK(sampler_sample(S, d, 13, &q, NULL, NULL) == 12);
    CHECK(memcmp(rng0, q.rng, sizeof rng0) == 0); /* greedy draws nothing */
    sampler_scratch_free(S);
}

TEST(greedy_large_vocab) {
    struct sampler_scratch *S = sampler_scratch_new(QWEN_V);
    float *l = malloc(QWEN_V * sizeof *l);
    REQUIRE(l);
    unsigned long long r = 99;
    for (int i = 0; i < QWEN_V; i++) l[i] = 8 * test_randf(&r);
    l[123457] = 9.5f;
    l[98765] = 9.5f;
    struct vllmc_sampling_params sp = sp_default();
    sp.temperature = 0;
    struct sampler_seq q = seq_for(&sp, 1);
    FOR_EACH_ISA(S) {
        CHECK(sampler_sample(S, l, QWEN_V, &q, NULL, NULL) == 98765);
        l[QWEN_V - 1] = 10; /* in the last partial vector */
        CHECK(sampler_sample(S, l, QWEN_V, &q, NULL, NULL) == QWEN_V - 1);
        l[QWEN_V - 1] = 0;
    }
    free(l);
    sampler_scratch_free(S);
}

/* ---- logprobs ---------------------------------------------------------------- */

TEST(logprobs_are_raw_whatever_the_knobs) {
    struct sampler_scratch *S = sampler_scratch_new(8);
    float raw[5] = { 1, 2, 3, 4, 5 };
    double lse = 0;
    for (int i = 0; i < 5; i++) lse += exp(raw[i]);
    lse = log(lse);
    struct vllmc_sampling_params sp = sp_default();
    sp.temperature = 0.7f;
    sp.repetition_penalty = 1.5f;
    sp.frequency_penalty = 0.5f;
    sp.presence_penalty = 0.5f;
    int32_t bid[1] = { 0 };
    float bval[1] = { 10 };
    sp.logit_bias_ids = bid, sp.logit_bias_values = bval, sp.n_logit_bias = 1;
    sp.logprobs = 3;
    int32_t prompt[1] = { 4 }, out[2] = { 3, 3 };
    struct sampler_seq q = seq_for(&sp, 5);
    q.prompt = prompt, q.n_prompt = 1, q.output = out, q.n_output = 2;
    int seen0 = 0;
    for (int it = 0; it < 200; it++) {
        float w[5];
        memcpy(w, raw, sizeof w);
        struct vllmc_logprob ch, top[3];
        int32_t t = sampler_sample(S, w, 5, &q, &ch, top);
        REQUIRE(t >= 0 && t < 5);
        seen0 += t == 0;
        CHECK(ch.token == t);
        CHECK_NEAR(ch.logprob, raw[t] - lse, 1e-5);
        CHECK(ch.rank == 5 - t); /* distinct logits: 1 + how many are larger */
        for (int j = 0; j < 3; j++) {
            CHECK(top[j].token == 4 - j);
            CHECK_NEAR(top[j].logprob, raw[4 - j] - lse, 1e-5);
            CHECK(top[j].rank == j + 1);
        }
    }
    CHECK(seen0 > 190); /* the bias decides sampling, not the logprobs */

    /* ties: vLLM's rank counts every token with logprob >= the chosen one */
    float tie[4] = { 2, 5, 5, 1 };
    double lt = log(exp(2.0) + 2 * exp(5.0) + exp(1.0));
    sp = sp_default();
    sp.temperature = 0;
    sp.logprobs = 2;
    q = seq_for(&sp, 5);
    struct vllmc_logprob ch, top[2];
    CHECK(sampler_sample(S, tie, 4, &q, &ch, top) == 1);
    CHECK(ch.rank == 2);
    CHECK_NEAR(ch.logprob, 5 - lt, 1e-5);
    CHECK(top[0].token == 1 && top[1].token == 2);
    CHECK_NEAR(top[1].logprob, 5 - lt, 1e-5);

    /* logprobs = 0: the chosen token only */
    sp.logprobs = 0;
    float w2[4] = { 2, 5, 5, 1 };
    ch.rank = -1;
    CHECK(sampler_sample(S, w2, 4, &q, &ch, NULL) == 1);
    CHECK(ch.rank == 2);
    sampler_scratch_free(S);
}

TEST(prompt_logprobs) {
    struct sampler_scratch *S = sampler_scratch_new(7);
    float l[7] = { 0.5f, -1, 3, 2, 2.5f, -4, 1 };
    double lse = 0;
    for (int i = 0; i < 7; i++) lse += exp(l[i]);
    lse = log(lse);
    struct vllmc_logprob ch, top[7];
    sampler_logprobs(S, l, 7, 3, 10, &ch, top); /* k > V: clamped */
    CHECK(ch.token == 3);
    CHECK_NEAR(ch.logprob, 2 - lse, 1e-5);
    CHECK(ch.rank == 3);
    static const int order[7] = { 2, 4, 3, 6, 0, 1, 5 };
    double total = 0;
    for (int j = 0; j < 7; j++) {
        CHECK(top[j].token == order[j]);
        CHECK(top[j].rank == j + 1);
        CHECK_NEAR(top[j].logprob, l[order[j]] - lse, 1e-5);
        total += exp(top[j].logprob);
    }
    CHECK_NEAR(total, 1.0, 1e-5);
    sampler_logprobs(S, l, 7, 5, 0, &ch, NULL);
    CHECK(ch.rank == 7);
    sampler_scratch_free(S);
}

TEST(logprobs_large_vocab_top_k) {
    struct sampler_scratch *S = sampler_scratch_new(QWEN_V);
    float *l = malloc(QWEN_V * sizeof *l);
    REQUIRE(l);
    unsigned long long r = 7;
    double m = -INFINITY, z = 0;
    for (int i = 0; i < QWEN_V; i++) l[i] = 6 * test_randf(&r), m = l[i] > m ? l[i] : m;
    for (int i = 0; i < QWEN_V; i++) z += exp(l[i] - m);
    double lse = m + log(z);
    /* the reference top 20: repeated max scans */
    char *used = calloc(QWEN_V, 1);
    int ref[20];
    for (int j = 0; j < 20; j++) {
        int b = -1;
        for (int i = 0; i < QWEN_V; i++)
            if (!used[i] && (b < 0 || l[i] > l[b])) b = i;
        used[b] = 1, ref[j] = b;
    }
    struct vllmc_sampling_params sp = sp_default();
    sp.logprobs = 20;
    sp.temperature = 0.6f, sp.top_k = 20, sp.top_p = 0.95f;
    struct sampler_seq q = seq_for(&sp, 3);
    float *w = malloc(QWEN_V * sizeof *w);
    FOR_EACH_ISA(S) {
        memcpy(w, l, QWEN_V * sizeof *w);
        struct vllmc_logprob ch, top[20];
        int32_t t = sampler_sample(S, w, QWEN_V, &q, &ch, top);
        for (int j = 0; j < 20; j++) {
            CHECK(top[j].token == ref[j]);
            CHECK_NEAR(top[j].logprob, l[ref[j]] - lse, 2e-5);
        }
        int rank = 0;
        for (int i = 0; i < QWEN_V; i++) rank += l[i] >= l[t];
        CHECK(ch.rank == rank);
        CHECK(rank <= 20); /* top_k = 20 */
        CHECK_NEAR(ch.logprob, l[t] - lse, 2e-5);
        sampler_logprobs(S, l, QWEN_V, ref[7], 3, &ch, top); /* prompt logprobs over the row */
        CHECK(ch.rank == 8 && top[2].token == ref[2]);
        CHECK_NEAR(ch.logprob, l[ref[7]] - lse, 2e-5);
    }
    free(used);
    free(w);
    free(l);
    sampler_scratch_free(S);
}

/* ---- temperature ------------------------------------------------------------ */

TEST(temperature_frequencies) {
    struct sampler_scratch *S = sampler_scratch_new(8);
    float l[5] = { 0, 1, 2, 0.5f, -1 };
    static const float temps[] = { 0.7f, 1.0f, 1.6f };
    for (int k = 0; k < 3; k++) {
        double s[5], p[5];
        for (int i = 0; i < 5; i++) s[i] = l[i] / temps[k];
        softmax_d(s, 5, p);
        struct vllmc_sampling_params sp = sp_default();
        sp.temperature = temps[k];
        struct sampler_seq q = seq_for(&sp, 1000 + k);
        int counts[5];
        draw_counts(S, l, 5, &q, 20000, counts);
        CHECK(chi2_ok(counts, p, 5, 20000));
        check_dist(S, l, 5, &q, p, 1e-6);
    }
    sampler_scratch_free(S);
}

TEST(temperature_below_001_is_001) {
    /* SamplingParams raises 0 < T < 0.01 to 0.01, so T = 1e-6 still samples */
    struct sampler_scratch *S = sampler_scratch_new(2);
    float l[2] = { 0, 0.01f };
    double s[2] = { 0, 0.01f / 0.01f }, p[2];
    softmax_d(s, 2, p);
    struct vllmc_sampling_params sp = sp_default();
    sp.temperature = 1e-6f;
    struct sampler_seq q = seq_for(&sp, 2);
    int counts[2];
    draw_counts(S, l, 2, &q, 20000, counts);
    CHECK(chi2_ok(counts, p, 2, 20000));
    sampler_scratch_free(S);
}

TEST(dense_draw_across_blocks) {
    /* four equal tokens in different 256-token blocks, the rest ~e^-30 */
    enum { V = 1000 };
    struct sampler_scratch *S = sampler_scratch_new(V);
    float l[V];
    for (int i = 0; i < V; i++) l[i] = -30;
    static const int hot[4] = { 3, 300, 700, 999 };
    for (int j = 0; j < 4; j++) l[hot[j]] = 0;
    struct vllmc_sampling_params sp = sp_default();
    struct sampler_seq q = seq_for(&sp, 4);
    int counts[V];
    draw_counts(S, l, V, &q, 20000, counts);
    int c4[5] = { 0 };
    for (int j = 0; j < 4; j++) c4[j] = counts[hot[j]];
    c4[4] = 20000 - c4[0] - c4[1] - c4[2] - c4[3];
    CHECK(c4[4] == 0); /* total mass of the rest ~ 1e-10 */
    double p4[4] = { 0.25, 0.25, 0.25, 0.25 };
    CHECK(chi2_ok(c4, p4, 4, 20000));
    sampler_scratch_free(S);
}

TEST(exp_accuracy) {
    /* weights e^(l - max) of the dense pass (vector lanes and the scalar tail)
     * against libm in double, over the whole range that keeps a weight. Token
     * 0 has the max (weight exactly 1), so p[i] / p[0] is the weight itself,
     * free of the normalisation: within 2 float ulps for exp plus one for the
     * two divisions (3 * 2^-23 relative). */
    enum { V = 37 }; /* vector lanes and a scalar tail at every width */
    struct sampler_scratch *S = sampler_scratch_new(V);
    struct vllmc_sampling_params sp = sp_default();
    struct sampler_seq q = seq_for(&sp, 1);
    FOR_EACH_ISA(S) {
        unsigned long long r = 3;
        double worst = 0;
        for (int it = 0; it < 1000; it++) {
            float l[V], w[V], p[V];
            l[0] = 0;
            for (int i = 1; i < V; i++) l[i] = -85.9f * (test_randf(&r) + 1) / 2;
            if (it < 100) /* reduced argument near +-ln2/2, where the series is weakest */
                for (int i = 1; i < V; i++) l[i] = -((float)(it % 60 + i) + (i & 1 ? 0.49f : -0.49f)) * 0.693147f;
            memcpy(w, l, sizeof w);
            sampler_distribution(S, w, V, &q, p);
            for (int i = 1; i < V; i++) {
                double want = exp((double)l[i]), rel = fabs((double)p[i] / p[0] - want) / want;
                worst = rel > worst ? rel : worst;
            }
        }
        if (worst > 3 * 0x1p-23) fprintf(stderr, "  [%s] worst relative error %.3g\n", cur_isa_, worst);
        CHECK(worst <= 3 * 0x1p-23);
    }
    sampler_scratch_free(S);
}

/* ---- top_k, top_p, min_p ------------------------------------------------------ */

static void check_knob(const float *l, int V, const struct vllmc_sampling_params *sp, const double *want,
                       uint64_t seed) {
    struct sampler_scratch *S = sampler_scratch_new(V);
    struct sampler_seq q = seq_for(sp, seed);
    check_dist(S, l, V, &q, want, 1e-6);
    int *counts = malloc((size_t)V * sizeof *counts);
    draw_counts(S, l, V, &q, 20000, counts);
    CHECK(chi2_ok(counts, want, V, 20000));
    free(counts);
    sampler_scratch_free(S);
}

TEST(top_k) {
    float l[5] = { 0, 1, 2, 3, 4 };
    struct vllmc_sampling_params sp = sp_default();
    sp.top_k = 2;
    double e3 = exp(3.0), e4 = exp(4.0);
    double want[5] = { 0, 0, 0, e3 / (e3 + e4), e4 / (e3 + e4) };
    check_knob(l, 5, &sp, want, 10);

    /* ties with the k-th value are kept: 3 tokens for k = 2 */
    float t[5] = { 1, 3, 2, 2, 0 };
    double z = exp(3.0) + 2 * exp(2.0);
    double want2[5] = { 0, exp(3.0) / z, exp(2.0) / z, exp(2.0) / z, 0 };
    check_knob(t, 5, &sp, want2, 11);

    /* the same inside an allowed_token_ids list (token 5 is not allowed) */
    float t6[6] = { 1, 3, 2, 2, 0, 5 };
    int32_t allowed[5] = { 0, 1, 2, 3, 4 };
    sp.allowed_token_ids = allowed, sp.n_allowed_token_ids = 5;
    double want3[6] = { 0, exp(3.0) / z, exp(2.0) / z, exp(2.0) / z, 0, 0 };
    check_knob(t6, 6, &sp, want3, 14);
    sp.allowed_token_ids = NULL, sp.n_allowed_token_ids = 0;

    /* ties count after the temperature: two logits a < b with a/T == b/T in
     * float both survive k = 1 (vLLM compares the scaled logits) */
    float T = 0.7f, b = 0, a = 0;
    for (int i = 0; i < 100000 && !b; i++) {
        float c = 1.5f + (float)i * 1e-5f, d = nextafterf(c, 0);
        if (d / T == c / T) b = c, a = d;
    }
    REQUIRE(b > 0);
    float ab[40];
    for (int i = 0; i < 40; i++) ab[i] = -1;
    ab[37] = b, ab[5] = a;
    double want4[40] = { 0 };
    want4[37] = want4[5] = 0.5;
    sp.top_k = 1, sp.temperature = T;
    check_knob(ab, 40, &sp, want4, 15);
    sp.temperature = 1;

    /* k >= V and k = -1 are off */
    double s5[5], p5[5];
    for (int i = 0; i < 5; i++) s5[i] = l[i];
    softmax_d(s5, 5, p5);
    sp.top_k = 5;
    check_knob(l, 5, &sp, p5, 12);
    sp.top_k = -1;
    check_knob(l, 5, &sp, p5, 13);
}

TEST(top_p) {
    struct vllmc_sampling_params sp = sp_default();
    /* equal logits: the stable ascending sort of vLLM drops lower ids first */
    float u[4] = { 0, 0, 0, 0 };
    sp.top_p = 0.5f;
    double w1[4] = { 0, 0, 0.5, 0.5 };
    check_knob(u, 4, &sp, w1, 20);
    sp.top_p = 0.75f;
    double w2[4] = { 0, 1.0 / 3, 1.0 / 3, 1.0 / 3 };
    check_knob(u, 4, &sp, w2, 21);
    sp.top_p = 0.76f; /* tail 0.25 > 1 - 0.76: all four */
    double w3[4] = { 0.25, 0.25, 0.25, 0.25 };
    check_knob(u, 4, &sp, w3, 22);

    /* probabilities 0.5 0.3 0.15 0.05: the smallest top set reaching p */
    float l[4] = { logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f) };
    sp.top_p = 0.79f;
    double w4[4] = { 0.5 / 0.8, 0.3 / 0.8, 0, 0 };
    check_knob(l, 4, &sp, w4, 23);
    sp.top_p = 0.81f;
    double w5[4] = { 0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0 };
    check_knob(l, 4, &sp, w5, 24);
    sp.top_p = 0.4f; /* below the top token alone */
    double w6[4] = { 1, 0, 0, 0 };
    check_knob(l, 4, &sp, w6, 25);
    sp.top_p = 1e-9f; /* always at least one token */
    check_knob(l, 4, &sp, w6, 26);
}

TEST(top_p_after_top_k) {
    /* top_p works on the distribution renormalised over the top-k tokens */
    float l[4] = { logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f) };
    struct vllmc_sampling_params sp = sp_default();
    sp.top_p = 0.75f;
    double without_k[4] = { 0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9, 0 };
    check_knob(l, 4, &sp, without_k, 30);
    sp.top_k = 3; /* renormalised 4/9 3/9 2/9: the first two already reach 0.75 */
    double with_k[4] = { 4.0 / 7, 3.0 / 7, 0, 0 };
    check_knob(l, 4, &sp, with_k, 31);
}

TEST(min_p) {
    float l[5] = { logf(0.5f), logf(0.3f), logf(0.1f), logf(0.06f), logf(0.04f) };
    struct vllmc_sampling_params sp = sp_default();
    sp.min_p = 0.15f; /* drop p < 0.075 */
    double w1[5] = { 0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9, 0, 0 };
    check_knob(l, 5, &sp, w1, 40);
    /* after temperature: T = 0.5 squares the probabilities, 0.25 0.09 0.01 ...;
     * 0.15 * 0.25 = 0.0375 keeps two */
    sp.temperature = 0.5f;
    double w2[5] = { 0.25 / 0.34, 0.09 / 0.34, 0, 0, 0 };
    check_knob(l, 5, &sp, w2, 41);
    /* with top_k and top_p together */
    sp.temperature = 1, sp.min_p = 0.1f, sp.top_k = 4, sp.top_p = 0.85f;
    /* min_p keeps 0.5 0.3 0.1 0.06 (>= 0.05); top_k 4 keeps the same;
     * renormalised /0.96: tails 1, 0.479, 0.167, 0.0625 -> the 0.06 one drops */
    double w3[5] = { 0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9, 0, 0 };
    check_knob(l, 5, &sp, w3, 42);
}

/* ---- logit processors ---------------------------------------------------------- */

static void processed(struct sampler_scratch *S, const float *raw, float *out, int V, const struct sampler_seq *q) {
    memcpy(out, raw, (size_t)V * sizeof *out);
    sampler_apply_processors(S, out, V, q);
}

TEST(penalties_exact) {
    struct sampler_scratch *S = sampler_scratch_new(7);
    float raw[7] = { 2, -2, 3, 0.5f, 1, -1, 0 }, l[7];
    int32_t prompt[3] = { 0, 1, 6 }, out[3] = { 3, 3, 4 };
    struct vllmc_sampling_params sp = sp_default();
    sp.repetition_penalty = 2, sp.frequency_penalty = 0.5f, sp.presence_penalty = 0.3f;
    struct sampler_seq q = seq_for(&sp, 1);
    q.prompt = prompt, q.n_prompt = 3, q.output = out, q.n_output = 3;
    processed(S, raw, l, 7, &q);
    /* repetition over prompt + output (positive / 2, negative * 2), then
     * frequency * count and presence over output only */
    static const float want[7] = { 1, -4, 3, 0.25f - 1.0f - 0.3f, 0.5f - 0.5f - 0.3f, -1, 0 };
    for (int i = 0; i < 7; i++) CHECK_NEAR(l[i], want[i], 1e-6);

    sp.repetition_penalty = 1;
    processed(S, raw, l, 7, &q);
    static const float want2[7] = { 2, -2, 3, 0.5f - 1.0f - 0.3f, 1 - 0.5f - 0.3f, -1, 0 };
    for (int i = 0; i < 7; i++) CHECK_NEAR(l[i], want2[i], 1e-6);

    /* negative penalties reward repeats */
    sp.frequency_penalty = -1, sp.presence_penalty = -0.5f;
    processed(S, raw, l, 7, &q);
    CHECK_NEAR(l[3], 0.5 + 2 + 0.5, 1e-6);
    CHECK_NEAR(l[4], 1 + 1 + 0.5, 1e-6);

    /* counts are reset between calls: the same call twice gives the same row */
    float l2[7];
    processed(S, raw, l2, 7, &q);
    CHECK(memcmp(l, l2, sizeof l) == 0);

    /* greedy flips */
    float two[2] = { 5, 4 };
    int32_t o0[1] = { 0 };
    sp = sp_default();
    sp.temperature = 0;
    q = seq_for(&sp, 1);
    q.output = o0, q.n_output = 1;
    float w[2];
    memcpy(w, two, sizeof w);
    CHECK(sampler_sample(S, w, 2, &q, NULL, NULL) == 0);
    sp.presence_penalty = 1.5f;
    memcpy(w, two, sizeof w);
    CHECK(sampler_sample(S, w, 2, &q, NULL, NULL) == 1);
    sp.presence_penalty = 0, sp.repetition_penalty = 1.3f; /* 5 / 1.3 < 4 */
    memcpy(w, two, sizeof w);
    CHECK(sampler_sample(S, w, 2, &q, NULL, NULL) == 1);
    sp.repetition_penalty = 1.2f; /* 5 / 1.2 > 4 */
    memcpy(w, two, sizeof w);
    CHECK(sampler_sample(S, w, 2, &q, NULL, NULL) == 0);
    sampler_scratch_free(S);
}

TEST(logit_bias) {
    struct sampler_scratch *S = sampler_scratch_new(4);
    float raw[4] = { 1, 0, 0, 2 }, l[4];
    int32_t ids[3] = { 1, 3, 2 };
    float vals[3] = { 2.5f, -1, 0.25f };
    struct vllmc_sampling_params sp = sp_default();
    sp.logit_bias_ids = ids, sp.logit_bias_values = vals, sp.n_logit_bias = 3;
    struct sampler_seq q = seq_for(&sp, 1);
    processed(S, raw, l, 4, &q);
    CHECK(l[0] == 1 && l[1] == 2.5f && l[2] == 0.25f && l[3] == 1);
    sp.temperature = 0;
    memcpy(l, raw, sizeof l);
    CHECK(sampler_sample(S, l, 4, &q, NULL, NULL) == 1);

    /* a repeated id takes its last value, as a dict */
    int32_t dup[2] = { 2, 2 };
    float dv[2] = { 1, 5 };
    sp.logit_bias_ids = dup, sp.logit_bias_values = dv, sp.n_logit_bias = 2;
    processed(S, raw, l, 4, &q);
    CHECK(l[2] == 5);

    /* bias comes before the penalties: (1 - 3) * 2 = -4, not 1 / 2 - 3 */
    int32_t b0[1] = { 0 }, o0[1] = { 0 };
    float bv[1] = { -3 };
    sp.logit_bias_ids = b0, sp.logit_bias_values = bv, sp.n_logit_bias = 1;
    sp.repetition_penalty = 2;
    q.output = o0, q.n_output = 1;
    processed(S, raw, l, 4, &q);
    CHECK_NEAR(l[0], -4, 1e-6);
    sampler_scratch_free(S);
}

TEST(allowed_token_ids) {
    struct sampler_scratch *S = sampler_scratch_new(6);
    float raw[6] = { 5, 1, 0, 1, 2, 9 }, l[6];
    int32_t allowed[3] = { 1, 3, 1 };
    struct vllmc_sampling_params sp = sp_default();
    sp.allowed_token_ids = allowed, sp.n_allowed_token_ids = 3;
    struct sampler_seq q = seq_for(&sp, 1);
    processed(S, raw, l, 6, &q);
    for (int i = 0; i < 6; i++) CHECK(l[i] == (i == 1 || i == 3 ? raw[i] : -INFINITY));
    /* a repeated id does not count twice */
    double want[6] = { 0, 0.5, 0, 0.5, 0, 0 };
    check_knob(raw, 6, &sp, want, 50);
    sp.temperature = 0;
    memcpy(l, raw, sizeof l);
    CHECK(sampler_sample(S, l, 6, &q, NULL, NULL) == 1); /* tie 1/3: lowest id */
    /* with top_k inside the allowed set */
    sp.temperature = 1, sp.top_k = 1;
    int32_t al2[3] = { 4, 0, 2 };
    sp.allowed_token_ids = al2;
    double want2[6] = { 1, 0, 0, 0, 0, 0 };
    check_knob(raw, 6, &sp, want2, 51);
    sampler_scratch_free(S);
}

TEST(bad_words) {
    struct sampler_scratch *S = sampler_scratch_new(8);
    float raw[8] = { 0, 1, 2, 3, 4, 5, 6, 7 }, l[8];
    static const int32_t w0[1] = { 5 }, w1[2] = { 2, 3 }, w2[3] = { 1, 2, 4 }, w3[4] = { 7, 7, 7, 6 };
    const int32_t *words[4] = { w0, w1, w2, w3 };
    int lens[4] = { 1, 2, 3, 4 };
    struct vllmc_sampling_params sp = sp_default();
    struct sampler_seq q = seq_for(&sp, 1);
    q.bad_words = words, q.bad_words_len = lens, q.n_bad_words = 4;

    processed(S, raw, l, 8, &q); /* no output: only the one-token word */
    for (int i = 0; i < 8; i++) CHECK(l[i] == (i == 5 ? -INFINITY : raw[i]));

    int32_t o1[2] = { 0, 2 };
    q.output = o1, q.n_output = 2;
    processed(S, raw, l, 8, &q); /* "2 3" completes; "1 2 4" does not */
    for (int i = 0; i < 8; i++) CHECK(l[i] == (i == 5 || i == 3 ? -INFINITY : raw[i]));

    int32_t o2[3] = { 7, 1, 2 };
    q.output = o2, q.n_output = 3;
    processed(S, raw, l, 8, &q);
    for (int i = 0; i < 8; i++) CHECK(l[i] == (i == 5 || i == 3 || i == 4 ? -INFINITY : raw[i]));

    int32_t o3[3] = { 7, 7, 7 };
    q.output = o3, q.n_output = 3;
    processed(S, raw, l, 8, &q);
    for (int i = 0; i < 8; i++) CHECK(l[i] == (i == 5 || i == 6 ? -INFINITY : raw[i]));

    sp.temperature = 0; /* greedy would take 7, then 6 */
    memcpy(l, raw, sizeof l);
    CHECK(sampler_sample(S, l, 8, &q, NULL, NULL) == 7);
    float r2[8] = { 0, 1, 2, 3, 4, 5, 9, 7 };
    CHECK(sampler_sample(S, r2, 8, &q, NULL, NULL) == 7);
    sampler_scratch_free(S);
}

TEST(min_tokens) {
    struct sampler_scratch *S = sampler_scratch_new(5);
    float raw[5] = { 1, 0, -1, 3, 4 };
    int32_t eos[1] = { 4 }, stop[1] = { 3 }, out[3] = { 0, 0, 0 };
    struct vllmc_sampling_params sp = sp_default();
    sp.temperature = 0, sp.min_tokens = 2;
    sp.stop_token_ids = stop, sp.n_stop_token_ids = 1;
    struct sampler_seq q = seq_for(&sp, 1);
    q.eos_ids = eos, q.n_eos = 1, q.output = out;
    static const int want[4] = { 0, 0, 4, 4 };
    for (int n = 0; n <= 3; n++) {
        float l[5];
        memcpy(l, raw, sizeof l);
        q.n_output = n;
        CHECK(sampler_sample(S, l, 5, &q, NULL, NULL) == want[n]);
        processed(S, raw, l, 5, &q);
        CHECK((l[3] == -INFINITY) == (n < 2) && (l[4] == -INFINITY) == (n < 2));
    }
    /* vLLM keeps EOS in all_stop_token_ids even with ignore_eos */
    sp.ignore_eos = 1;
    q.n_output = 1;
    float l[5];
    memcpy(l, raw, sizeof l);
    CHECK(sampler_sample(S, l, 5, &q, NULL, NULL) == 0);
    sampler_scratch_free(S);
}

/* ---- seeds ------------------------------------------------------------------- */

TEST(seeded_reproducible_whatever_the_batch) {
    enum { V = 50, N = 200 };
    struct sampler_scratch *S = sampler_scratch_new(V);
    float l[V];
    unsigned long long r = 5;
    for (int i = 0; i < V; i++) l[i] = 2 * test_randf(&r);
    struct vllmc_sampling_params spa = sp_default(), spb = sp_default(), spc = sp_default();
    spb.top_k = 5, spb.temperature = 0.8f;
    spc.top_p = 0.9f, spc.min_p = 0.05f;
    int a1[N], a2[N], b[N], sib[N];
    float w[V];

    struct sampler_seq qa = seq_for(&spa, 7);
    uint64_t before[4];
    for (int i = 0; i < N; i++) {
        memcpy(w, l, sizeof w);
        memcpy(before, qa.rng, sizeof before);
        a1[i] = sampler_sample(S, w, V, &qa, NULL, NULL);
        sampler_uniform(before); /* exactly one draw per token */
        CHECK(memcmp(before, qa.rng, sizeof before) == 0);
    }
    qa = seq_for(&spa, 7);
    struct sampler_seq qb = seq_for(&spb, 9), qc = seq_for(&spc, 12345);
    for (int i = 0; i < N; i++) { /* interleaved with other rows, other knobs */
        for (int j = 0; j < i % 3; j++) {
            memcpy(w, l, sizeof w);
            sampler_sample(S, w, V, &qc, NULL, NULL);
        }
        memcpy(w, l, sizeof w);
        b[i] = sampler_sample(S, w, V, &qb, NULL, NULL);
        memcpy(w, l, sizeof w);
        a2[i] = sampler_sample(S, w, V, &qa, NULL, NULL);
    }
    CHECK(memcmp(a1, a2, sizeof a1) == 0);
    int diff_b = 0;
    for (int i = 0; i < N; i++) diff_b += b[i] != a1[i];
    CHECK(diff_b > N / 2);

    struct sampler_seq qs = seq_for(&spa, 7); /* same seed, sibling index 1 */
    sampler_seed(qs.rng, 7, 1);
    struct sampler_seq qd = seq_for(&spa, 8);
    int diff_sib = 0, diff_seed = 0;
    for (int i = 0; i < N; i++) {
        memcpy(w, l, sizeof w);
        sib[i] = sampler_sample(S, w, V, &qs, NULL, NULL);
        memcpy(w, l, sizeof w);
        diff_seed += sampler_sample(S, w, V, &qd, NULL, NULL) != a1[i];
        diff_sib += sib[i] != a1[i];
    }
    CHECK(diff_sib > N / 2); /* independent streams agree ~1/25 of the time here */
    CHECK(diff_seed > N / 2);
    uint64_t s1[4], s2[4];
    sampler_seed(s1, 7, 0);
    sampler_seed(s2, 7, 0);
    CHECK(memcmp(s1, s2, sizeof s1) == 0);
    for (int i = 0; i < 1000; i++) {
        double u = sampler_uniform(s1);
        CHECK(u >= 0 && u < 1);
    }
    sampler_scratch_free(S);
}

struct thr_arg { const float *l; int V; int out[100]; };

static void *thr_run(void *p) {
    struct thr_arg *a = p;
    struct sampler_scratch *S = sampler_scratch_new(a->V);
    struct vllmc_sampling_params sp = sp_default();
    sp.top_k = 40, sp.top_p = 0.9f, sp.temperature = 0.8f, sp.frequency_penalty = 0.2f;
    struct sampler_seq q = seq_for(&sp, 77);
    float *w = malloc((size_t)a->V * sizeof *w);
    for (int i = 0; i < 100; i++) {
        memcpy(w, a->l, (size_t)a->V * sizeof *w);
        q.output = a->out, q.n_output = i;
        a->out[i] = sampler_sample(S, w, a->V, &q, NULL, NULL);
    }
    free(w);
    sampler_scratch_free(S);
    return NULL;
}

TEST(reentrant_across_threads) {
    enum { V = 5000 };
    float *l = malloc(V * sizeof *l);
    unsigned long long r = 11;
    for (int i = 0; i < V; i++) l[i] = 4 * test_randf(&r);
    struct thr_arg ref = { l, V, { 0 } }, a = ref, b = ref;
    thr_run(&ref);
    pthread_t ta, tb;
    REQUIRE(pthread_create(&ta, NULL, thr_run, &a) == 0);
    REQUIRE(pthread_create(&tb, NULL, thr_run, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(memcmp(ref.out, a.out, sizeof a.out) == 0);
    CHECK(memcmp(ref.out, b.out, sizeof b.out) == 0);
    free(l);
}

/* ---- against the plain reference, many shapes --------------------------------- */

TEST(matches_reference_random_knobs) {
    static const int sizes[] = { 1, 2, 7, 33, 300, 1000 };
    struct sampler_scratch *S = sampler_scratch_new(1000);
    unsigned long long r = 2024;
    float *l = malloc(1000 * sizeof *l);
    int skipped = 0, runs = 0;
    FOR_EACH_ISA(S)
    for (int it = 0; it < 400; it++) {
        int V = sizes[it % 6];
        float scale = 1 + 5 * (test_randf(&r) + 1);
        for (int i = 0; i < V; i++) l[i] = scale * test_randf(&r);
        if (it % 5 == 0 && V > 3) l[1] = l[2] = l[3]; /* ties */
        if (it % 7 == 0 && V > 4) l[4] = -INFINITY;
        struct vllmc_sampling_params sp = sp_default();
        unsigned long long pick = test_rng_next_(&r);
        sp.temperature = (pick & 3) == 0 ? 0 : 0.2f + 1.3f * (test_randf(&r) + 1) / 2;
        if (pick & 4) sp.top_k = 1 + (int)((test_rng_next_(&r) >> 8) % (unsigned)(V + 2));
        if (pick & 8) sp.top_p = 0.05f + 0.95f * (test_randf(&r) + 1) / 2;
        if (pick & 16) sp.min_p = 0.3f * (test_randf(&r) + 1) / 2;
        if (pick & 32) sp.repetition_penalty = 0.5f + 1.5f * (test_randf(&r) + 1) / 2;
        if (pick & 64) sp.frequency_penalty = 2 * test_randf(&r), sp.presence_penalty = 2 * test_randf(&r);
        int32_t prompt[6], out[8], bias_id[3], allowed[5], eos[1] = { 0 };
        float bias_v[3];
        for (int j = 0; j < 6; j++) prompt[j] = (int32_t)(test_rng_next_(&r) % (unsigned)V);
        for (int j = 0; j < 8; j++) out[j] = (int32_t)(test_rng_next_(&r) % (unsigned)V);
        for (int j = 0; j < 3; j++)
            bias_id[j] = (int32_t)(test_rng_next_(&r) % (unsigned)V), bias_v[j] = 3 * test_randf(&r);
        for (int j = 0; j < 5; j++) allowed[j] = (int32_t)(test_rng_next_(&r) % (unsigned)V);
        if (pick & 128) sp.logit_bias_ids = bias_id, sp.logit_bias_values = bias_v, sp.n_logit_bias = 3;
        if (pick & 256) sp.allowed_token_ids = allowed, sp.n_allowed_token_ids = 5;
        if (pick & 512) sp.min_tokens = 20;
        struct sampler_seq q = seq_for(&sp, (uint64_t)it);
        q.prompt = prompt, q.n_prompt = 6, q.output = out, q.n_output = 8, q.eos_ids = eos, q.n_eos = 1;
        check_against_ref(S, l, V, &q, &skipped);
        runs++;
        float w[1000];
        memcpy(w, l, (size_t)V * sizeof *w);
        struct vllmc_logprob ch;
        sp.logprobs = 0;
        int32_t t = sampler_sample(S, w, V, &q, &ch, NULL);
        CHECK(t >= 0 && t < V);
        CHECK(!isnan(ch.logprob) && ch.rank >= 1 && ch.rank <= V);
    }
    CHECK(skipped < runs / 20);
    free(l);
    sampler_scratch_free(S);
}

TEST(large_vocab_matches_reference) {
    struct sampler_scratch *S = sampler_scratch_new(QWEN_V);
    float *l = malloc(QWEN_V * sizeof *l);
    REQUIRE(l);
    unsigned long long r = 31337;
    /* a peaked head over a broad tail, like a model's row */
    for (int i = 0; i < QWEN_V; i++) l[i] = 3 * test_randf(&r) + 3 * test_randf(&r);
    for (int j = 0; j < 40; j++) l[test_rng_next_(&r) % QWEN_V] = 12 + 4 * test_randf(&r);
    int32_t out[64], prompt[200];
    for (int j = 0; j < 64; j++) out[j] = (int32_t)(test_rng_next_(&r) % QWEN_V);
    for (int j = 0; j < 200; j++) prompt[j] = (int32_t)(test_rng_next_(&r) % QWEN_V);
    struct { float T, p, minp, rep; int k; } cases[] = {
        { 0.6f, 0.95f, 0, 1, 20 },      /* Qwen3's generation_config */
        { 1.0f, 0.9f, 0, 1, 0 },        /* top_p alone: the dense path */
        { 1.5f, 0.99f, 0, 1, 0 },       /* a nucleus of most of the vocabulary */
        { 0.8f, 1, 0.05f, 1, 0 },       /* min_p alone */
        { 1.0f, 1, 0, 1.1f, 0 },        /* temperature + repetition penalty */
        { 0.7f, 0.8f, 0.02f, 1, 5000 }, /* a large k */
    };
    int skipped = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct vllmc_sampling_params sp = sp_default();
        sp.temperature = cases[c].T, sp.top_p = cases[c].p, sp.min_p = cases[c].minp;
        sp.repetition_penalty = cases[c].rep, sp.top_k = cases[c].k;
        struct sampler_seq q = seq_for(&sp, c);
        q.prompt = prompt, q.n_prompt = 200, q.output = out, q.n_output = 64;
        FOR_EACH_ISA(S) check_against_ref(S, l, QWEN_V, &q, &skipped);
    }

    /* rows that fool the strided samples the sampler guesses thresholds from
     * (every 37th token here): its guess must be checked and lowered */
    struct sampler_seq q;
    struct vllmc_sampling_params sp = sp_default();
    q = seq_for(&sp, 99);
    for (int i = 0; i < QWEN_V; i++) l[i] = i % 37 == 0 ? 5 : (test_randf(&r) + 1) / 2;
    sp.top_k = 10000; /* the sample sees 4107 tokens at 5, all above the k-th */
    FOR_EACH_ISA(S) check_against_ref(S, l, QWEN_V, &q, &skipped);
    for (int i = 0; i < QWEN_V; i++) l[i] = i % 37 == 0 ? 0 : -3.1f;
    sp.top_k = 0, sp.top_p = 0.9f; /* the sample's mass sits at weight 1, the nucleus goes far below */
    FOR_EACH_ISA(S) check_against_ref(S, l, QWEN_V, &q, &skipped);
    CHECK(skipped == 0);
    free(l);
    sampler_scratch_free(S);
}

/* ---- edges ------------------------------------------------------------------- */

TEST(vocab_of_one) {
    struct sampler_scratch *S = sampler_scratch_new(1);
    struct vllmc_sampling_params sp = sp_default();
    sp.top_k = 1, sp.top_p = 0.5f, sp.min_p = 0.5f, sp.logprobs = 3;
    struct sampler_seq q = seq_for(&sp, 1);
    for (int it = 0; it < 4; it++) {
        sp.temperature = it == 0 ? 0 : 0.5f * it;
        float l[1] = { -3 };
        struct vllmc_logprob ch, top[3];
        CHECK(sampler_sample(S, l, 1, &q, &ch, top) == 0);
        CHECK(ch.logprob == 0 && ch.rank == 1);
        CHECK(top[0].token == 0 && top[0].logprob == 0 && top[0].rank == 1);
    }
    sampler_scratch_free(S);
}

TEST(all_but_one_minus_inf) {
    struct sampler_scratch *S = sampler_scratch_new(9);
    struct vllmc_sampling_params sp = sp_default();
    sp.logprobs = 3;
    static const struct { float T, p, minp; int k; } knobs[] = {
        { 1, 1, 0, 0 }, { 0.5f, 0.9f, 0, 3 }, { 1.2f, 0.5f, 0.1f, 0 }, { 0, 1, 0, 0 }, { 1, 1, 0.2f, 12 },
    };
    for (size_t c = 0; c < sizeof knobs / sizeof knobs[0]; c++) {
        sp.temperature = knobs[c].T, sp.top_p = knobs[c].p, sp.min_p = knobs[c].minp, sp.top_k = knobs[c].k;
        struct sampler_seq q = seq_for(&sp, c);
        for (int it = 0; it < 50; it++) {
            float l[9];
            for (int i = 0; i < 9; i++) l[i] = -INFINITY;
            l[6] = 2.5f;
            struct vllmc_logprob ch, top[3];
            CHECK(sampler_sample(S, l, 9, &q, &ch, top) == 6);
            CHECK(ch.logprob == 0 && ch.rank == 1);
            CHECK(top[0].token == 6 && top[0].logprob == 0);
            CHECK(top[1].token == 0 && top[1].logprob == -INFINITY && top[2].token == 1);
        }
        float probs[9], l[9];
        for (int i = 0; i < 9; i++) l[i] = -INFINITY;
        l[6] = 2.5f;
        sampler_distribution(S, l, 9, &q, probs);
        for (int i = 0; i < 9; i++) CHECK(probs[i] == (i == 6));
    }
    /* every token -inf: token 0 (torch.argmax), logprobs -inf rather than NaN */
    sp.temperature = 1, sp.top_p = 0.9f;
    struct sampler_seq q = seq_for(&sp, 3);
    float l[9];
    for (int i = 0; i < 9; i++) l[i] = -INFINITY;
    struct vllmc_logprob ch, top[3];
    CHECK(sampler_sample(S, l, 9, &q, &ch, top) == 0);
    CHECK(ch.logprob == -INFINITY && !isnan(top[0].logprob));
    sampler_scratch_free(S);
}

TEST(check_params) {
    char err[256];
    struct vllmc_sampling_params sp = sp_default();
    CHECK(sampler_check_params(&sp, 100, err, sizeof err) == 0);
#define EXPECT_BAD(stmt, text)                                                   \
    do {                                                                         \
        struct vllmc_sampling_params b_ = sp_default();                          \
        stmt;                                                                    \
        err[0] = 0;                                                              \
        CHECK(sampler_check_params(&b_, 100, err, sizeof err) == VLLMC_EINVAL);  \
        CHECK(strstr(err, text) != NULL);                                        \
    } while (0)
    EXPECT_BAD(b_.temperature = -0.1f, "temperature must be non-negative");
    EXPECT_BAD(b_.temperature = 2.5f, "temperature must be in [0, 2]");
    EXPECT_BAD(b_.temperature = NAN, "finite");
    EXPECT_BAD(b_.top_p = 0, "top_p must be in (0, 1]");
    EXPECT_BAD(b_.top_p = 1.5f, "top_p");
    EXPECT_BAD(b_.top_k = -2, "top_k must be 0 (disable), or at least 1");
    EXPECT_BAD(b_.min_p = 1.5f, "min_p must be in [0, 1]");
    EXPECT_BAD(b_.presence_penalty = 2.5f, "presence_penalty must be in [-2, 2]");
    EXPECT_BAD(b_.frequency_penalty = -3, "frequency_penalty");
    EXPECT_BAD(b_.repetition_penalty = 0, "repetition_penalty must be greater than zero");
    EXPECT_BAD((b_.temperature = 0, b_.n = 2), "n must be 1 when using greedy sampling");
    EXPECT_BAD((b_.min_tokens = 20, b_.max_tokens = 10), "min_tokens must be less than or equal to max_tokens=10");
    EXPECT_BAD(b_.max_tokens = 0, "max_tokens must be at least 1");
    int32_t empty[1] = { 0 }, oov[2] = { 5, 100 };
    EXPECT_BAD((b_.allowed_token_ids = empty, b_.n_allowed_token_ids = 0), "allowed_token_ids is not None and empty");
    EXPECT_BAD((b_.allowed_token_ids = oov, b_.n_allowed_token_ids = 2), "out-of-vocab");
    float bv[2] = { 1, 2 };
    EXPECT_BAD((b_.logit_bias_ids = oov, b_.logit_bias_values = bv, b_.n_logit_bias = 2),
               "token_id(s) [100] in logit_bias contain out-of-vocab token ids. Vocabulary size: 100");
    const char *stops[1] = { "" };
    EXPECT_BAD((b_.stop = stops, b_.n_stop = 1), "stop cannot contain an empty string");
    sp.top_k = -1, sp.temperature = 1e-3f, sp.n = 3; /* -1 disables top_k; 1e-3 is not greedy */
    CHECK(sampler_check_params(&sp, 100, err, sizeof err) == 0);
}

TEST_MAIN()
