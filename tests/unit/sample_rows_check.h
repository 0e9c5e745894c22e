/* sample_rows_check.h — the check of a backend's sample_rows op (backend.h)
 * with the sampler's finishing half (sampler_dev_finish), for test_cuda.c:
 * random logits rows (V = 128256 and two odd small V; kinds with many ties,
 * with -inf, peaked, all -inf) in every sampling mode and seed. The device
 * path + host finish must give what sampler_sample gives on the host for
 * the same row and the same draw: the same token (a dense draw may differ
 * only within 1e-5 of a token boundary, and rarely), the chosen logprob
 * within 1e-5 and the same rank, the same top list. A row the device's
 * results do not settle is counted (the engine samples those whole).
 *
 * Logits are on a grid of 2^-12 (or coarser) so distinct values never
 * round to the same logprob: then the rank does not depend on the last bit
 * of the log-sum-exp, which the device sums in another order. */
#include "engine/sampler.h"

struct sr_case {
    float T, top_p, min_p;
    int top_k, logprobs;
};

static const struct sr_case SR_CASES[] = {
    { 0, 1, 0, 0, -1 },         /* greedy */
    { 0, 1, 0, 0, 5 },          /* greedy + top 5 */
    { 0.8f, 1, 0, 0, -1 },      /* dense draw */
    { 1, 1, 0.1f, 0, 0 },       /* dense + min_p + chosen logprob */
    { 0.5f, 1, 0, 1, 1 },       /* top_k 1: the chosen is the k-th */
    { 1, 1, 0, 50, 20 },        /* top_k 50 + top 20 */
    { 0.9f, 0.9f, 0, 64, -1 },  /* top_k 64 + top_p */
    { 1.3f, 0.5f, 0.05f, 8, 3 },/* top_k + top_p + min_p */
    { 0.001f, 1, 0, 0, 2 },     /* T < 0.01 counts as 0.01 */
    { 1, 0.9f, 0, 0, -1 },      /* top_p alone: the nucleus from the candidates, or the host's */
    { 0.7f, 0.95f, 0.02f, 0, 4 },/* top_p + min_p + top 4 */
    { 2.0f, 0.3f, 0, 0, 0 },    /* top_p, flat: rows whose nucleus outgrows the candidates */
    { 1, 1, 0, 100, -1 },       /* top_k > 64: the host's */
};
#define SR_KINDS 5

static void sr_row(float *l, int V, int kind, unsigned long long *rs) {
    for (int i = 0; i < V; i++) {
        float g = test_randf(rs) + test_randf(rs) + test_randf(rs) + test_randf(rs); /* about normal, sd 1.15 */
        switch (kind) {
        case 0: l[i] = roundf(g * 3 * 4096) / 4096; break;                  /* spread */
        case 1: l[i] = roundf(test_randf(rs) * 16) / 4; break;              /* 33 levels: ties everywhere */
        case 2: l[i] = i % 3 == 1 ? -INFINITY : roundf(g * 2 * 4096) / 4096; break; /* -inf on a third */
        case 3: l[i] = roundf(g * 4096) / 4096 + (i == V / 3 ? 12 : 0); break;      /* one peak */
        default: l[i] = i % 97 == 5 ? roundf(g * 1024) / 1024 : -INFINITY; break;  /* mostly -inf */
        }
    }
}

static int sr_lp_same(const struct vllmc_logprob *a, const struct vllmc_logprob *b) {
    return a->token == b->token && a->rank == b->rank &&
           (a->logprob == b->logprob || fabsf(a->logprob - b->logprob) <= 1e-5f);
}

/* Check sample_rows of backend g (its memory) for rows of V logits; returns failures. */
static int sr_check(struct backend *g, int V, int *n_dev, int *n_fallback, int *n_boundary) {
    const int NC = (int)(sizeof SR_CASES / sizeof SR_CASES[0]), R = NC * SR_KINDS;
    unsigned long long rs = 0x51ED5EEDull + (unsigned long long)V;
    float *host = xmalloc((size_t)R * V * sizeof(float)), *work = xmalloc((size_t)V * sizeof(float));
    float *probs = xmalloc((size_t)V * sizeof(float));
    for (int r = 0; r < R; r++) sr_row(host + (size_t)r * V, V, r % SR_KINDS, &rs);
    float *dev = g->host_mem ? host : up(g, host, (size_t)R * V * sizeof(float));
    struct sampler_scratch *S = sampler_scratch_new(V);
    struct vllmc_sampling_params *sp = xcalloc((size_t)R, sizeof *sp);
    struct sampler_dev_plan *plan = xcalloc((size_t)R, sizeof *plan);
    struct bk_sample_req *req = xcalloc((size_t)R, sizeof *req);
    struct bk_sample_res *res = xcalloc((size_t)R, sizeof *res);
    int *dev_of = xcalloc((size_t)R, sizeof *dev_of);
    double *u = xcalloc((size_t)R, sizeof *u);
    int n = 0, slots = 0, fails = 0;
    for (int r = 0; r < R; r++) {
        const struct sr_case *c = &SR_CASES[r / SR_KINDS];
        sp[r] = (struct vllmc_sampling_params){ .n = 1, .temperature = c->T, .top_p = c->top_p, .top_k = c->top_k,
                                                .min_p = c->min_p, .repetition_penalty = 1, .logprobs = c->logprobs,
                                                .max_tokens = 16, .prompt_logprobs = -1 };
        struct sampler_seq q = { .sp = &sp[r] };
        sampler_seed(q.rng, 1000 + (uint64_t)r, (uint64_t)V);
        sampler_dev_plan(&q, V, &plan[r]);
        dev_of[r] = -1;
        if (plan[r].mode == SAMPLER_DEV_HOST) continue;
        u[r] = plan[r].draws ? sampler_uniform(q.rng) : 0;
        static const int32_t mode[] = { 0, BK_SAMPLE_ARGMAX, BK_SAMPLE_DRAW, BK_SAMPLE_NONE, BK_SAMPLE_NONE };
        req[n] = (struct bk_sample_req){ .row = r, .mode = mode[plan[r].mode], .k = plan[r].k, .lp = plan[r].lp,
                                         .inv_t = plan[r].inv_t, .min_p = plan[r].min_p, .u = u[r],
                                         .cand_off = slots, .cand_cap = plan[r].cap, .wsum = plan[r].wsum };
        slots += plan[r].cap;
        dev_of[r] = n++;
    }
    int32_t *cid = xmalloc((size_t)(slots + 1) * sizeof *cid);
    float *cv = xmalloc((size_t)(slots + 1) * sizeof *cv);
    char err[256];
    if (bk_sample_rows(g, dev, V, req, n, res, cid, cv, slots, err, sizeof err)) {
        fprintf(stderr, "  sample_rows: %s\n", err);
        _exit(1);
    }
    for (int r = 0; r < R; r++) {
        if (dev_of[r] < 0) continue;
        const struct bk_sample_req *rq = &req[dev_of[r]];
        const struct bk_sample_res *rr = &res[dev_of[r]];
        const float *row = host + (size_t)r * V;
        struct sampler_seq q = { .sp = &sp[r] };
        sampler_seed(q.rng, 1000 + (uint64_t)r, (uint64_t)V);
        struct vllmc_logprob c_ref, c_dev, t_ref[20], t_dev[20];
        memcpy(work, row, (size_t)V * sizeof(float));
        int32_t ref = sampler_sample(S, work, V, &q, &c_ref, t_ref);
        const struct sampler_dev_row d = { .token = rr->token, .rank = rr->rank, .logprob = rr->logprob, .m = rr->m,
                                           .L = rr->L, .floor = rr->floor, .n_cand = rr->n_cand,
                                           .cid = cid + rq->cand_off, .cv = cv + rq->cand_off, .z = rr->z };
        q = (struct sampler_seq){ .sp = &sp[r] };
        int32_t got = sampler_dev_finish(S, V, &q, &plan[r], &d, u[r], &c_dev, t_dev);
        if (got < 0) {
            (*n_fallback)++;
            continue;
        }
        (*n_dev)++;
        const char *why = NULL;
        if (got != ref) {
            /* a draw over weights summed in another order (dense, or the
             * nucleus against the device's sum) may land on the other side
             * of a boundary within rounding */
            why = "token";
            if ((plan[r].mode == SAMPLER_DEV_DRAW || plan[r].mode == SAMPLER_DEV_NUCLEUS) && got >= 0 && got < V) {
                memcpy(work, row, (size_t)V * sizeof(float));
                sampler_distribution(S, work, V, &q, probs);
                double lo = 0;
                for (int i = 0; i < got; i++) lo += probs[i];
                if (u[r] >= lo - 1e-5 && u[r] <= lo + probs[got] + 1e-5) why = NULL, (*n_boundary)++;
            }
        } else if (sp[r].logprobs >= 0) {
            if (!sr_lp_same(&c_dev, &c_ref)) why = "chosen logprob";
            for (int k = 0; k < sp[r].logprobs && !why; k++)
                if (!sr_lp_same(&t_dev[k], &t_ref[k])) why = "top list";
        }
        if (why) {
            fprintf(stderr, "  V %d row %d (case %d kind %d): %s: device %d (%g rank %d), host %d (%g rank %d)\n", V, r,
                    r / SR_KINDS, r % SR_KINDS, why, got, c_dev.logprob, c_dev.rank, ref, c_ref.logprob, c_ref.rank);
            fails++;
        }
    }
    if (!g->host_mem) bk_free(g, dev);
    sampler_scratch_free(S);
    free(host), free(work), free(probs), free(sp), free(plan), free(req), free(res), free(dev_of), free(u);
    free(cid), free(cv);
    return fails;
}

static void sr_check_all(struct backend *g) {
    REQUIRE(g->ops->sample_rows);
    const int Vs[] = { 128256, 1000, 37 };
    int fails = 0, n_dev = 0, n_fb = 0, n_bd = 0;
    for (int i = 0; i < 3; i++) fails += sr_check(g, Vs[i], &n_dev, &n_fb, &n_bd);
    printf("      %d rows finished from the op's results, %d need the whole row, %d draws at a boundary\n", n_dev,
           n_fb, n_bd);
    CHECK(fails == 0);
    CHECK(n_dev >= 90); /* most rows settle from the op's results */
    CHECK(n_bd <= 2);
}
