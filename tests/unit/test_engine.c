/* test_engine.c — the engine (continuous batching, paged KV with prefix
 * caching, preemption, stops, sampling through the engine) against the
 * transformers fixtures of tests/fixtures (see tests/fixture.h).
 *
 * Every expected token and log-probability comes from transformers: a
 * fixture's reference gives, for prompt+greedy continuation, the greedy ids
 * and the next-token log-probability at every position, so any prefix of
 * prompt+greedy is also a prompt with a known continuation. Greedy outputs
 * are compared up to the first reference near-tie (margin < 1e-2).
 * VLLMC_TEST_DEVICE (cpu, cuda) picks the engine's device (default cpu);
 * on cuda log-probabilities are held to the bf16 tolerance, 1e-2. */
#include <pthread.h>
#include <stdatomic.h>

#include "engine/engine_internal.h"
#include "fixture.h"
#include "harness.h"
#include "vllmc.h"

static double tol_f32(void) {
    const char *d = getenv("VLLMC_TEST_DEVICE");
    return d && strcmp(d, "cpu") ? 1e-2 : 1e-3;
}
#define TOL_F32 tol_f32()
#define MARGIN 1e-2

static const char *fixture_dir(const char *name) {
    static char p[600];
    const char *root = getenv("VLLMC_FIXTURES");
    snprintf(p, sizeof p, "%s/%s", root ? root : "tests/fixtures", name);
    return p;
}

/* Every engine test runs twice (ENGINE_TEST): with async scheduling off,
 * and on (step N+1 queued before step N's tokens are emitted; on the CPU the
 * forward is synchronous, so only the order changes), each against the same
 * references. g_async is the mode of the running test's engines. */
static int g_async = -1;
#define ENGINE_TEST(name)                         \
    static void body_##name(void);                \
    TEST(name) {                                  \
        g_async = -1;                             \
        body_##name();                            \
    }                                             \
    TEST(name##_async) {                          \
        g_async = 1;                              \
        body_##name();                            \
    }                                             \
    static void body_##name(void)

static vllmc_engine *open_engine(const char *dir, int kv_tokens, int batched, int caching, const char *algo) {
    struct vllmc_engine_params p;
    vllmc_engine_params_default(&p);
    p.model = dir;
    p.n_threads = 2;
    p.kv_cache_tokens = kv_tokens;
    p.max_num_batched_tokens = batched;
    p.disable_prefix_caching = !caching;
    p.prefix_caching_hash_algo = algo;
    p.max_model_len = 96;
    p.device = getenv("VLLMC_TEST_DEVICE") ? getenv("VLLMC_TEST_DEVICE") : "cpu";
    p.async_scheduling = g_async;
    vllmc_engine *e;
    char err[512];
    if (vllmc_engine_open(&e, &p, err, sizeof err)) {
        fprintf(stderr, "  open %s: %s\n", dir, err);
        _exit(1);
    }
    CHECK(e->overlap == (g_async > 0));
    return e;
}

/* A request built from fixture case c with the first k greedy tokens appended
 * to its prompt: expected continuation greedy[k..]. */
struct job {
    int c, k;
    int32_t prompt[128];
    int n_prompt;
    vllmc_request *r;
    int32_t out[64];
    float lp[64];
    int n_out;
    double plp[128];
    int n_cached;
    enum vllmc_finish finish;
};

static void job_make(struct job *j, const struct fixture *f, int c, int k) {
    memset(j, 0, sizeof *j);
    const struct fcase *fc = &f->c[c];
    j->c = c, j->k = k;
    memcpy(j->prompt, fc->prompt, (size_t)fc->n_prompt * 4);
    memcpy(j->prompt + fc->n_prompt, fc->greedy, (size_t)k * 4);
    j->n_prompt = fc->n_prompt + k;
}

static void job_submit(vllmc_engine *e, struct job *j, int max_tokens, int plp, const char *salt) {
    struct vllmc_request_params rp = { .prompt = j->prompt, .n_prompt = j->n_prompt, .cache_salt = salt };
    vllmc_sampling_params_default(e, &rp.sampling);
    rp.sampling.temperature = 0;
    rp.sampling.max_tokens = max_tokens;
    rp.sampling.ignore_eos = 1;
    rp.sampling.logprobs = 0;
    rp.sampling.prompt_logprobs = plp;
    char err[256];
    int rc = vllmc_submit(e, &rp, &j->r, err, sizeof err);
    if (rc) fprintf(stderr, "  submit: %s\n", err);
    REQUIRE(rc == 0);
}

static void job_collect(struct job *j) {
    struct vllmc_output o;
    int rc;
    while ((rc = vllmc_request_next(j->r, &o, 60000)) == 1) {
        for (int i = 0; i < o.n_seqs; i++) {
            const struct vllmc_seq_output *s = &o.seqs[i];
            for (int t = 0; t < s->n_tokens && j->n_out < 64; t++) {
                j->out[j->n_out] = s->tokens[t];
                j->lp[j->n_out++] = s->logprobs ? s->logprobs[t].chosen.logprob : NAN;
            }
            if (s->finish) j->finish = s->finish;
        }
        if (o.prompt_logprobs)
            for (int p = 0; p < o.n_prompt_tokens && p < 128; p++) j->plp[p] = o.prompt_logprobs[p].chosen.logprob;
        j->n_cached = o.n_cached_tokens;
        if (o.finished) break;
    }
    REQUIRE(rc == 1); /* no timeout */
    CHECK(vllmc_request_next(j->r, &o, 0) == VLLMC_EDONE);
    vllmc_request_free(j->r);
    j->r = NULL;
}

/* Compare a finished job with the reference; returns failures. */
static int job_check(const struct job *j, const struct fixture *f, int want_tokens, bool check_plp) {
    const struct fcase *fc = &f->c[j->c];
    int fails = 0;
    if (j->n_out != want_tokens) {
        fprintf(stderr, "  case %d k %d: %d tokens, want %d\n", j->c, j->k, j->n_out, want_tokens);
        fails++;
    }
    for (int t = 0; t < j->n_out && j->k + t < fc->n_greedy; t++) {
        int g = j->k + t;
        if (j->out[t] != fc->greedy[g]) {
            fprintf(stderr, "  case %d k %d: token %d is %d, transformers %d\n", j->c, j->k, t, j->out[t], fc->greedy[g]);
            fails++;
            break;
        }
        /* logprob of the chosen token: reference row n_prompt(orig)+g-1 */
        double ref = fc->logprobs[fc->n_prompt + g - 1];
        if (!(fabs(j->lp[t] - ref) <= TOL_F32)) {
            fprintf(stderr, "  case %d k %d: logprob[%d] %.6f, transformers %.6f\n", j->c, j->k, t, j->lp[t], ref);
            fails++;
            break;
        }
        if (fc->margin[g] < MARGIN) break; /* a near-tie: later tokens may differ legitimately */
    }
    if (check_plp) {
        if (!isnan(j->plp[0])) fails++, fprintf(stderr, "  prompt logprob[0] should be NaN\n");
        for (int p = 1; p < j->n_prompt; p++)
            if (!(fabs(j->plp[p] - fc->logprobs[p - 1]) <= TOL_F32)) {
                fprintf(stderr, "  case %d k %d: prompt logprob[%d] %.6f, transformers %.6f\n", j->c, j->k, p,
                        j->plp[p], fc->logprobs[p - 1]);
                fails++;
                break;
            }
    }
    return fails;
}

static void pool_whole(vllmc_engine *e) {
    /* the engine thread is idle once every request has finished and been read */
    char err[256];
    for (int i = 0; i < 200; i++) {
        struct vllmc_engine_stats st;
        vllmc_engine_stats(e, &st);
        if (st.num_running == 0 && st.num_waiting == 0) break;
        usleep(10000);
    }
    pthread_mutex_lock(&e->sub_mu);
    int rc = kv_pool_check(&e->pool, err, sizeof err);
    int used = kv_used(&e->pool);
    pthread_mutex_unlock(&e->sub_mu);
    if (rc) fprintf(stderr, "  pool: %s\n", err);
    CHECK(rc == 0);
    if (used) fprintf(stderr, "  %d blocks still held at idle\n", used);
    CHECK(used == 0);
}

/* ---- the block pool on its own ---- */

TEST(kv_pool_lru_and_lazy_eviction) {
    struct kv_pool p;
    char err[256];
    REQUIRE(kv_pool_init(&p, 5, 4, true, KV_HASH_SHA256, err, sizeof err) == 0);
    CHECK(p.n_free == 4);
    int32_t a[4];
    CHECK(kv_alloc(&p, 4, a));
    CHECK(a[0] == 1 && a[1] == 2 && a[2] == 3 && a[3] == 4); /* initial order by id */
    CHECK(!kv_alloc(&p, 1, a));
    int32_t toks[4] = { 1, 2, 3, 4 };
    struct kv_hash h1, h2, h1s;
    kv_block_hash(&p, NULL, toks, NULL, &h1);
    kv_block_hash(&p, &h1, toks, NULL, &h2);
    kv_block_hash(&p, NULL, toks, "tenant", &h1s);
    CHECK(memcmp(h1.b, h2.b, 32) != 0);  /* the parent matters */
    CHECK(memcmp(h1.b, h1s.b, 32) != 0); /* the salt matters */
    kv_cache_block(&p, a[0], &h1);
    kv_cache_block(&p, a[1], &h2);
    CHECK(kv_lookup(&p, &h1) == a[0] && kv_lookup(&p, &h2) == a[1] && kv_lookup(&p, &h1s) < 0);
    /* free last-first: the tail block (a[1]) is queued before a[0], so it is evicted first */
    int32_t rev[2] = { a[1], a[0] };
    kv_release(&p, rev, 2);
    CHECK(p.n_free == 2);
    CHECK(kv_lookup(&p, &h1) == a[0]); /* still cached while free */
    kv_touch(&p, a[0]);                /* a hit takes it out of the free queue */
    CHECK(p.n_free == 1 && p.blocks[a[0]].ref == 1);
    int32_t b;
    CHECK(kv_alloc(&p, 1, &b) && b == a[1]); /* the free cached block is reused ... */
    CHECK(kv_lookup(&p, &h2) < 0);           /* ... and its hash dropped (lazy eviction) */
    CHECK(kv_pool_check(&p, err, sizeof err) == 0);
    int32_t all[4] = { a[0], b, a[2], a[3] };
    kv_release(&p, all, 4);
    CHECK(p.n_free == 4);
    CHECK(kv_pool_check(&p, err, sizeof err) == 0);
    kv_pool_free(&p);

    REQUIRE(kv_pool_init(&p, 3, 4, true, KV_HASH_XXH3, err, sizeof err) == 0);
    struct kv_hash x1, x2;
    kv_block_hash(&p, NULL, toks, NULL, &x1);
    toks[3] = 5;
    kv_block_hash(&p, NULL, toks, NULL, &x2);
    CHECK(p.hash_len == 16 && memcmp(x1.b, x2.b, 16) != 0);
    kv_pool_free(&p);
}

/* ---- batch invariance ---- */

static void run_jobs(vllmc_engine *e, struct job *jobs, int n, int plp) {
    for (int i = 0; i < n; i++) {
        const int max_tokens = 24 - jobs[i].k;
        job_submit(e, &jobs[i], max_tokens, plp, NULL);
    }
    for (int i = 0; i < n; i++) job_collect(&jobs[i]);
}

static void batch_invariance(const char *name) {
    struct fixture f;
    REQUIRE(fixture_load(&f, fixture_dir(name)) == 0);
    vllmc_engine *e = open_engine(f.dir, 0, 64, 1, NULL);
    enum { N = 32 };
    static struct job alone[N], batch[N];
    int fails = 0;
    for (int i = 0; i < N; i++) {
        job_make(&alone[i], &f, i % f.n_cases, (i / f.n_cases) * 3 % 24);
        run_jobs(e, &alone[i], 1, 0);
        fails += job_check(&alone[i], &f, 24 - alone[i].k, true);
    }
    for (int i = 0; i < N; i++) job_make(&batch[i], &f, i % f.n_cases, (i / f.n_cases) * 3 % 24);
    run_jobs(e, batch, N, 0);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        fails += job_check(&batch[i], &f, 24 - batch[i].k, true);
        for (int t = 0; t < batch[i].n_out && t < alone[i].n_out; t++)
            if (batch[i].out[t] == alone[i].out[t]) worst = fmax(worst, fabs(batch[i].lp[t] - alone[i].lp[t]));
    }
    printf("      %s: 32 requests alone vs together: max |logprob diff| %.2e\n", name, worst);
    CHECK(worst <= TOL_F32);
    struct vllmc_engine_stats st;
    vllmc_engine_stats(e, &st);
    CHECK(st.generation_tokens > 0);
    CHECK(fails == 0);
    pool_whole(e);
    vllmc_engine_close(e);
    fixture_free(&f);
}

ENGINE_TEST(batch_invariance_qwen3) { batch_invariance("qwen3_f32"); }
ENGINE_TEST(batch_invariance_mistral_swa) { batch_invariance("mistral_swa_f32"); }

/* ---- preemption ---- */

ENGINE_TEST(preemption_keeps_outputs) {
    struct fixture f;
    REQUIRE(fixture_load(&f, fixture_dir("llama3_f32")) == 0);
    /* 12 blocks of 16: far less than 16 concurrent requests of up to 61 tokens */
    vllmc_engine *e = open_engine(f.dir, 12 * 16, 512, 1, NULL);
    enum { N = 16 };
    static struct job jobs[N];
    for (int i = 0; i < N; i++) job_make(&jobs[i], &f, i % f.n_cases, 0);
    run_jobs(e, jobs, N, -1);
    int fails = 0;
    for (int i = 0; i < N; i++) fails += job_check(&jobs[i], &f, 24, false);
    CHECK(fails == 0);
    struct vllmc_engine_stats st;
    vllmc_engine_stats(e, &st);
    printf("      preemptions: %lld\n", (long long)st.preemptions);
    CHECK(st.preemptions > 0);
    pool_whole(e);
    vllmc_engine_close(e);
    fixture_free(&f);
}

/* ---- prefix caching ---- */

ENGINE_TEST(prefix_cache_hits_and_same_outputs) {
    struct fixture f;
    REQUIRE(fixture_load(&f, fixture_dir("qwen3_f32")) == 0);
    vllmc_engine *on = open_engine(f.dir, 0, 2048, 1, NULL), *off = open_engine(f.dir, 0, 2048, 0, NULL);
    struct job a, b, c, d;
    job_make(&a, &f, 2, 11); /* 48-token prompt: 47 cacheable -> 2 full blocks of 16 */
    run_jobs(on, &a, 1, -1);
    CHECK(a.n_cached == 0);
    job_make(&b, &f, 2, 11);
    run_jobs(on, &b, 1, -1);
    CHECK(b.n_cached == 32);
    job_make(&c, &f, 2, 11);
    run_jobs(off, &c, 1, -1);
    CHECK(c.n_cached == 0);
    CHECK(job_check(&a, &f, 13, false) == 0);
    CHECK(job_check(&b, &f, 13, false) == 0);
    CHECK(job_check(&c, &f, 13, false) == 0);
    CHECK(a.n_out == b.n_out && !memcmp(a.out, b.out, (size_t)a.n_out * 4));
    CHECK(a.n_out == c.n_out && !memcmp(a.out, c.out, (size_t)a.n_out * 4));
    struct vllmc_engine_stats st;
    vllmc_engine_stats(on, &st);
    CHECK(st.prefix_hits == 32);
    CHECK(st.prefix_queries == 2 * 48);
    /* a prompt of exactly 3 blocks: the hit is capped so its last token is computed */
    job_make(&d, &f, 2, 11);
    d.n_prompt = 48; /* 37 + 11 */
    run_jobs(on, &d, 1, -1);
    CHECK(d.n_cached == 32);
    pool_whole(on);
    vllmc_engine_close(on);
    vllmc_engine_close(off);
    fixture_free(&f);
}

ENGINE_TEST(prefix_cache_salt_separates_tenants) {
    struct fixture f;
    REQUIRE(fixture_load(&f, fixture_dir("qwen3_f32")) == 0);
    vllmc_engine *e = open_engine(f.dir, 0, 2048, 1, "xxhash");
    struct job j[4];
    const char *salts[4] = { "alice", "bob", "alice", NULL };
    int want[4] = { 0, 0, 32, 0 };
    for (int i = 0; i < 4; i++) {
        job_make(&j[i], &f, 2, 11);
        job_submit(e, &j[i], 13, -1, salts[i]);
        job_collect(&j[i]);
        CHECK(j[i].n_cached == want[i]);
        CHECK(job_check(&j[i], &f, 13, false) == 0);
    }
    pool_whole(e);
    vllmc_engine_close(e);
    fixture_free(&f);
}

ENGINE_TEST(prefix_cache_eviction_under_pressure) {
    struct fixture f;
    REQUIRE(fixture_load(&f, fixture_dir("qwen3_f32")) == 0);
    /* 8 blocks: the first request's cached blocks must be evicted by others */
    vllmc_engine *e = open_engine(f.dir, 8 * 16, 2048, 1, NULL);
    struct job a, o[6], b;
    job_make(&a, &f, 2, 11);
    run_jobs(e, &a, 1, -1);
    for (int i = 0; i < 6; i++) {
        job_make(&o[i], &f, i % 2, 20); /* other prompts fill the pool */
        run_jobs(e, &o[i], 1, -1);
        CHECK(job_check(&o[i], &f, 4, false) == 0);
    }
    job_make(&b, &f, 2, 11);
    run_jobs(e, &b, 1, -1);
    CHECK(b.n_cached < 32); /* (part of) its prefix was evicted ... */
    CHECK(job_check(&b, &f, 13, false) == 0); /* ... and the output is still right */
    pool_whole(e);
    vllmc_engine_close(e);
    fixture_free(&f);
}

/* ---- prompt logprobs, limits, abort ---- */

ENGINE_TEST(prompt_logprobs_chunked) {
    struct fixture f;
    REQUIRE(fixture_load(&f, fixture_dir("qwen3_f32")) == 0);
    vllmc_engine *e = open_engine(f.dir, 0, 16, 1, NULL); /* 16-token budget: the prompt spans several steps */
    struct job j;
    job_make(&j, &f, 2, 20);
    job_submit(e, &j, 4, 2, NULL);
    job_collect(&j);
    CHECK(job_check(&j, &f, 4, true) == 0);
    vllmc_engine_close(e);
    fixture_free(&f);
}

ENGINE_TEST(limits_and_errors) {
    vllmc_engine *e = open_engine(fixture_dir("qwen3_f32"), 0, 64, 1, NULL);
    int32_t ids[200];
    for (int i = 0; i < 200; i++) ids[i] = 5 + i;
    struct vllmc_request_params rp = { .prompt = ids, .n_prompt = 100 };
    vllmc_sampling_params_default(e, &rp.sampling);
    vllmc_request *r = NULL;
    char err[512];
    CHECK(vllmc_submit(e, &rp, &r, err, sizeof err) == VLLMC_EINVAL); /* 100 >= max_model_len 96 */
    CHECK(strstr(err, "maximum context length is 96") != NULL);
    rp.n_prompt = 50;
    rp.sampling.max_tokens = 60;
    CHECK(vllmc_submit(e, &rp, &r, err, sizeof err) == VLLMC_EINVAL);
    CHECK(strstr(err, "110 tokens") != NULL);
    rp.sampling.max_tokens = 4;
    rp.sampling.top_p = 0;
    CHECK(vllmc_submit(e, &rp, &r, err, sizeof err) == VLLMC_EINVAL);
    rp.sampling.top_p = 1;
    rp.sampling.n = 0;
    CHECK(vllmc_submit(e, &rp, &r, err, sizeof err) == VLLMC_EINVAL);
    rp.sampling.n = 1;
    ids[3] = 384;
    CHECK(vllmc_submit(e, &rp, &r, err, sizeof err) == VLLMC_EINVAL);
    CHECK(strstr(err, "out of vocabulary") != NULL);
    ids[3] = 8;
    /* truncate_prompt_tokens keeps the last N */
    rp.n_prompt = 200;
    rp.truncate_prompt_tokens = 10;
    REQUIRE(vllmc_submit(e, &rp, &r, err, sizeof err) == 0);
    struct vllmc_output o;
    int n = 0, prompt_n = 0;
    while (vllmc_request_next(r, &o, 60000) == 1) {
        prompt_n = o.n_prompt_tokens;
        for (int i = 0; i < o.n_seqs; i++) n += o.seqs[i].n_tokens;
        if (o.finished) {
            CHECK(o.seqs[0].finish == VLLMC_FINISH_LENGTH);
            break;
        }
    }
    CHECK(prompt_n == 10 && n == 4);
    vllmc_request_free(r);
    pool_whole(e);
    vllmc_engine_close(e);
}

ENGINE_TEST(abort_frees_blocks) {
    vllmc_engine *e = open_engine(fixture_dir("qwen3_f32"), 0, 8, 1, NULL);
    int32_t ids[60];
    for (int i = 0; i < 60; i++) ids[i] = 7 + i;
    vllmc_request *r[8];
    char err[256];
    for (int k = 0; k < 8; k++) {
        struct vllmc_request_params rp = { .prompt = ids, .n_prompt = 60 };
        vllmc_sampling_params_default(e, &rp.sampling);
        rp.sampling.ignore_eos = 1;
        REQUIRE(vllmc_submit(e, &rp, &r[k], err, sizeof err) == 0);
    }
    for (int k = 0; k < 8; k += 2) vllmc_request_free(r[k]); /* gone without reading */
    for (int k = 1; k < 8; k += 2) {
        vllmc_abort(r[k]);
        struct vllmc_output o;
        enum vllmc_finish fin = 0;
        while (vllmc_request_next(r[k], &o, 60000) == 1) {
            for (int i = 0; i < o.n_seqs; i++) fin = o.seqs[i].finish ? o.seqs[i].finish : fin;
            if (o.finished) break;
        }
        CHECK(fin == VLLMC_FINISH_ABORT || fin == VLLMC_FINISH_LENGTH);
        vllmc_request_free(r[k]);
    }
    pool_whole(e);
    vllmc_engine_close(e);
}

/* ---- the slot of a sequence that ends ---- */

/* max_num_seqs = 1, two requests: when A's last token (max_tokens) is
 * taken, B is admitted in the same engine step. With async scheduling B's
 * step is queued before A's token is delivered, so when A's finish is
 * published (its notify, on the engine thread) B is already running; one
 * step at a time, B is still waiting then. */
struct slot_probe {
    vllmc_request *a, *b;
    int b_state, seen;
};
static void slot_notify(void *arg) {
    struct slot_probe *p = arg;
    if (p->b && !p->seen && p->a->n_finished == p->a->n_seqs) p->seen = 1, p->b_state = p->b->seqs[0].state;
}
ENGINE_TEST(ended_sequence_frees_its_slot_at_once) {
    struct vllmc_engine_params p;
    vllmc_engine_params_default(&p);
    p.model = fixture_dir("qwen3_f32");
    p.n_threads = 2;
    p.max_model_len = 96;
    p.max_num_seqs = 1;
    p.device = getenv("VLLMC_TEST_DEVICE") ? getenv("VLLMC_TEST_DEVICE") : "cpu";
    p.async_scheduling = g_async;
    vllmc_engine *e;
    char err[512];
    REQUIRE(vllmc_engine_open(&e, &p, err, sizeof err) == 0);
    static struct slot_probe pr;
    int32_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = 20 + i;
    vllmc_request *r[2];
    pthread_mutex_lock(&e->sub_mu); /* both queued before the engine looks */
    for (int k = 0; k < 2; k++) {
        struct vllmc_request_params rp = { .prompt = ids, .n_prompt = 12 };
        vllmc_sampling_params_default(e, &rp.sampling);
        rp.sampling.temperature = 0;
        rp.sampling.max_tokens = 6;
        rp.sampling.ignore_eos = 1;
        if (k == 0) rp.notify = slot_notify, rp.notify_arg = &pr;
        pthread_mutex_unlock(&e->sub_mu);
        REQUIRE(vllmc_submit(e, &rp, &r[k], err, sizeof err) == 0);
        pthread_mutex_lock(&e->sub_mu);
    }
    pthread_mutex_lock(&r[0]->mu); /* notify runs under it */
    pr.a = r[0], pr.b = r[1];
    pthread_mutex_unlock(&r[0]->mu);
    pthread_mutex_unlock(&e->sub_mu);
    struct vllmc_output o;
    for (int k = 0; k < 2; k++) {
        int n = 0;
        while (vllmc_request_next(r[k], &o, 60000) == 1) {
            for (int i = 0; i < o.n_seqs; i++) n += o.seqs[i].n_tokens;
            if (o.finished) break;
        }
        CHECK(n == 6);
        vllmc_request_free(r[k]);
    }
    CHECK(pr.seen);
    if (pr.b_state != (g_async > 0 ? SEQ_RUNNING : SEQ_WAITING))
        fprintf(stderr, "  B's state when A's finish was published: %d\n", pr.b_state);
    CHECK(pr.b_state == (g_async > 0 ? SEQ_RUNNING : SEQ_WAITING));
    vllmc_engine_close(e);
}

/* ---- a forward that fails ---- */

/* The backend's ops with alloc failing while g_fail_alloc is set: the
 * forward's scratch grows for a larger batch, so a step that adds a long
 * prompt fails in its forward, as a device out of memory would. */
static atomic_int g_fail_alloc;
static const struct backend_ops *g_real_ops;
static void *failing_alloc(struct backend *bk, size_t bytes) {
    return atomic_load(&g_fail_alloc) ? NULL : g_real_ops->alloc(bk, bytes);
}

/* A's notify (the engine thread, after it published A's output): at its
 * third call it holds the engine there until the test has queued B, so B
 * joins the very next launch, whatever the threads' timing. */
static atomic_int g_gate; /* 0: open, 1: the engine waits in the notify, 2: released */
static int g_gate_calls;
static void gate_notify(void *arg) {
    (void)arg;
    if (++g_gate_calls != 3) return;
    atomic_store(&g_gate, 1);
    for (int i = 0; i < 600000 && atomic_load(&g_gate) == 1; i++) usleep(50); /* 30 s at most */
}

/* A decodes; B's long prompt joins and its step's forward fails. Both
 * requests end with the error, A after every token of the steps before
 * (with async scheduling the failing step is launched before the previous
 * step's tokens are emitted: they must still go out), and the engine serves
 * the next request. */
ENGINE_TEST(failed_forward_keeps_earlier_tokens) {
    struct fixture f;
    REQUIRE(fixture_load(&f, fixture_dir("qwen3_f32")) == 0);
    vllmc_engine *e = open_engine(f.dir, 0, 256, 0, NULL);
    static struct backend_ops ops;
    g_real_ops = e->bk->ops, ops = *e->bk->ops, ops.alloc = failing_alloc;
    e->bk->ops = &ops; /* the engine thread is idle: nothing submitted yet */
    atomic_store(&g_gate, 0), g_gate_calls = 0;
    const struct fcase *fc = &f.c[0];
    enum { MAXT = 48 };
    struct job a;
    job_make(&a, &f, 0, 0);
    REQUIRE(a.n_prompt + MAXT <= 96);
    struct vllmc_request_params rp = { .prompt = a.prompt, .n_prompt = a.n_prompt };
    vllmc_sampling_params_default(e, &rp.sampling);
    rp.sampling.temperature = 0;
    rp.sampling.max_tokens = MAXT;
    rp.sampling.ignore_eos = 1;
    rp.notify = gate_notify;
    char err[256];
    REQUIRE(vllmc_submit(e, &rp, &a.r, err, sizeof err) == 0);
    for (int i = 0; i < 600000 && atomic_load(&g_gate) != 1; i++) usleep(50);
    REQUIRE(atomic_load(&g_gate) == 1);
    atomic_store(&g_fail_alloc, 1);
    struct job b = { 0 };
    for (int i = 0; i < 80; i++) b.prompt[i] = 300 + i;
    b.n_prompt = 80;
    job_submit(e, &b, 4, -1, NULL);
    atomic_store(&g_gate, 2);
    struct vllmc_output o;
    char a_msg[256] = "";
    int rc;
    while ((rc = vllmc_request_next(a.r, &o, 60000)) == 1) {
        for (int i = 0; i < o.n_seqs; i++)
            for (int t = 0; t < o.seqs[i].n_tokens && a.n_out < 64; t++) a.out[a.n_out++] = o.seqs[i].tokens[t];
        if (o.error) snprintf(a_msg, sizeof a_msg, "%s", o.error);
        if (o.finished) break;
    }
    REQUIRE(rc == 1);
    vllmc_request_free(a.r);
    job_collect(&b);
    CHECK(b.finish == VLLMC_FINISH_ERROR && b.n_out == 0);
    atomic_store(&g_fail_alloc, 0);
    if (!strstr(a_msg, "cannot allocate")) fprintf(stderr, "  A's error: '%s'\n", a_msg);
    CHECK(strstr(a_msg, "cannot allocate") != NULL);
    struct vllmc_engine_stats st;
    vllmc_engine_stats(e, &st);
    /* every token sampled for A reached A (B sampled none): 3 or 4 of them,
     * as the failing step was launched after A's third output or, with the
     * overlap, after the fourth step had been queued */
    if (st.generation_tokens != a.n_out)
        fprintf(stderr, "  A read %d tokens, the engine sampled %lld\n", a.n_out, (long long)st.generation_tokens);
    CHECK(st.generation_tokens == a.n_out);
    CHECK(a.n_out == (g_async > 0 ? 4 : 3));
    for (int t = 0; t < a.n_out && t < fc->n_greedy; t++) {
        CHECK(a.out[t] == fc->greedy[t]);
        if (a.out[t] != fc->greedy[t] || fc->margin[t] < MARGIN) break;
    }
    /* the engine goes on: the next request is served in full */
    struct job c;
    job_make(&c, &f, 1, 0);
    job_submit(e, &c, 8, -1, NULL);
    job_collect(&c);
    CHECK(job_check(&c, &f, 8, false) == 0);
    vllmc_engine_close(e); /* the static copy's destroy is the backend's own */
    fixture_free(&f);
}

/* ---- stop strings (text) ---- */

/* The text of id in text_model's vocabulary (special tokens: skipped, as
 * skip_special_tokens does). */
static void piece(int id, char *out) {
    if (id < 26) out[0] = (char)('a' + id), out[1] = 0;
    else if (id < 381) out[0] = (char)('a' + (id - 26) / 26), out[1] = (char)('a' + (id - 26) % 26), out[2] = 0;
    else out[0] = 0;
}

/* A model dir: the fixture's files plus a byte-level BPE tokenizer.json:
 * ids 0..25 the letters, 26..380 the letter pairs "aa", "ab", ... (with their
 * merges), 381..383 special tokens. So the text of any ids is known. */
static const char *text_model(const char *fixture) {
    const char *dir = test_mkdtemp();
    char src[700], dst[700], cwd[512];
    REQUIRE(getcwd(cwd, sizeof cwd));
    DIR *d = opendir(fixture_dir(fixture));
    REQUIRE(d);
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.' || !strcmp(de->d_name, "reference.json")) continue;
        snprintf(src, sizeof src, "%s/%s/%s", cwd, fixture_dir(fixture), de->d_name);
        snprintf(dst, sizeof dst, "%s/%s", dir, de->d_name);
        REQUIRE(symlink(src, dst) == 0);
    }
    closedir(d);
    snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
    FILE *fp = fopen(dst, "w");
    REQUIRE(fp);
    fprintf(fp, "{\"version\":\"1.0\",\"added_tokens\":[");
    const char *specials[3] = { "<|im_start|>", "<|im_end|>", "<|endoftext|>" };
    for (int i = 0; i < 3; i++)
        fprintf(fp, "%s{\"id\":%d,\"content\":\"%s\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                    "\"normalized\":false,\"special\":true}", i ? "," : "", 381 + i, specials[i]);
    fprintf(fp, "],\"normalizer\":null,"
                "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},"
                "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
                "\"trim_offsets\":true,\"use_regex\":true},\"model\":{\"type\":\"BPE\",\"dropout\":null,"
                "\"unk_token\":null,\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":false,"
                "\"byte_fallback\":false,\"vocab\":{");
    for (int i = 0; i < 381; i++) {
        char p[3];
        piece(i, p);
        fprintf(fp, "%s\"%s\":%d", i ? "," : "", p, i);
    }
    fprintf(fp, "},\"merges\":[");
    for (int i = 26; i < 381; i++) fprintf(fp, "%s\"%c %c\"", i > 26 ? "," : "", 'a' + (i - 26) / 26, 'a' + (i - 26) % 26);
    fprintf(fp, "]}}");
    fclose(fp);
    return dir;
}

static void stop_case(vllmc_engine *e, const struct fixture *f, int include) {
    const struct fcase *fc = &f->c[2];
    char text[64 * 2 + 1] = "", p[3];
    size_t end3 = 0;
    for (int i = 0; i < fc->n_greedy; i++) {
        piece(fc->greedy[i], p), strcat(text, p);
        if (i == 3) end3 = strlen(text);
    }
    /* the stop string spans tokens 3 and 4: the last letter of one and the
     * next two letters */
    REQUIRE(end3 >= 1 && strlen(text) >= end3 + 2);
    char stop[4] = { text[end3 - 1], text[end3], text[end3 + 1], 0 };
    const char *hit = strstr(text, stop);
    REQUIRE(hit);
    size_t want_len = (size_t)(hit - text) + (include ? 3 : 0);
    const char *stops[2] = { "zzzzzzzz-never", stop };
    struct vllmc_request_params rp = { .prompt = fc->prompt, .n_prompt = fc->n_prompt };
    vllmc_sampling_params_default(e, &rp.sampling);
    rp.sampling.temperature = 0;
    rp.sampling.ignore_eos = 1;
    rp.sampling.max_tokens = 24;
    rp.sampling.stop = stops;
    rp.sampling.n_stop = 2;
    rp.sampling.include_stop_str_in_output = include;
    vllmc_request *r;
    char err[256];
    struct vllmc_engine_stats st;
    vllmc_engine_stats(e, &st);
    const int64_t steps0 = st.steps;
    REQUIRE(vllmc_submit(e, &rp, &r, err, sizeof err) == 0);
    char got[256] = "";
    struct vllmc_output o;
    char stop_str[16] = "";
    enum vllmc_finish fin = 0;
    int n_tok = 0;
    while (vllmc_request_next(r, &o, 60000) == 1) {
        for (int i = 0; i < o.n_seqs; i++) {
            n_tok += o.seqs[i].n_tokens;
            REQUIRE(strlen(got) + o.seqs[i].text_len < sizeof got);
            strncat(got, o.seqs[i].text, o.seqs[i].text_len);
            if (o.seqs[i].finish) fin = o.seqs[i].finish;
            if (o.seqs[i].stop_str) snprintf(stop_str, sizeof stop_str, "%s", o.seqs[i].stop_str);
        }
        if (o.finished) break;
    }
    vllmc_request_free(r);
    CHECK(fin == VLLMC_FINISH_STOP);
    CHECK(!strcmp(stop_str, stop));
    CHECK(strlen(got) == want_len && !strncmp(got, text, want_len)); /* nothing of the stop string leaked */
    if (strlen(got) != want_len) fprintf(stderr, "  got '%s', want '%.*s'\n", got, (int)want_len, text);
    /* one step per token (the prompt fits one step); with async scheduling
     * the step after the stop string's token was already queued when the
     * string was found, so it is computed and dropped: one step more */
    const int64_t want = n_tok + (g_async > 0);
    for (int i = 0; i < 200; i++) {
        vllmc_engine_stats(e, &st);
        if (st.steps - steps0 >= want) break;
        usleep(10000);
    }
    usleep(20000);
    vllmc_engine_stats(e, &st);
    if (st.steps - steps0 != want) fprintf(stderr, "  %lld steps for %d tokens\n", (long long)(st.steps - steps0), n_tok);
    CHECK(st.steps - steps0 == want);
}

/* bad_words through the tokenizer: banning the text of the first greedy
 * token changes the first token, and the banned id never appears. */
ENGINE_TEST(bad_words_ban_token_text) {
    struct fixture f;
    REQUIRE(fixture_load(&f, fixture_dir("qwen3_f32")) == 0);
    vllmc_engine *e = open_engine(text_model("qwen3_f32"), 0, 64, 1, NULL);
    const struct fcase *fc = &f.c[1];
    int32_t banned = fc->greedy[0];
    char word[3];
    piece(banned, word);
    REQUIRE(word[0]);
    const char *bad[1] = { word };
    struct vllmc_request_params rp = { .prompt = fc->prompt, .n_prompt = fc->n_prompt };
    vllmc_sampling_params_default(e, &rp.sampling);
    rp.sampling.temperature = 0;
    rp.sampling.ignore_eos = 1;
    rp.sampling.max_tokens = 12;
    rp.sampling.bad_words = bad;
    rp.sampling.n_bad_words = 1;
    vllmc_request *r;
    char err[256];
    REQUIRE(vllmc_submit(e, &rp, &r, err, sizeof err) == 0);
    struct vllmc_output o;
    int n = 0, first = -1, hits = 0;
    while (vllmc_request_next(r, &o, 60000) == 1) {
        for (int i = 0; i < o.n_seqs; i++)
            for (int t = 0; t < o.seqs[i].n_tokens; t++, n++) {
                if (n == 0) first = o.seqs[i].tokens[t];
                hits += o.seqs[i].tokens[t] == banned;
            }
        if (o.finished) break;
    }
    vllmc_request_free(r);
    CHECK(n == 12);
    CHECK(first >= 0 && first != banned);
    CHECK(hits == 0);
    pool_whole(e);
    vllmc_engine_close(e);
    fixture_free(&f);
}

ENGINE_TEST(stop_strings_across_tokens) {
    struct fixture f;
    REQUIRE(fixture_load(&f, fixture_dir("qwen3_f32")) == 0);
    vllmc_engine *e = open_engine(text_model("qwen3_f32"), 0, 64, 1, NULL);
    stop_case(e, &f, 0);
    stop_case(e, &f, 1);
    pool_whole(e);
    vllmc_engine_close(e);
    fixture_free(&f);
}

/* ---- sampling through the engine ---- */

static void sample_run(vllmc_engine *e, uint64_t seed, int n, int32_t out[][16], int others) {
    int32_t ids[20];
    for (int i = 0; i < 20; i++) ids[i] = 30 + 7 * i;
    char err[256];
    vllmc_request *noise[8];
    for (int k = 0; k < others; k++) { /* unseeded neighbours in the same batch */
        struct vllmc_request_params rp = { .prompt = ids + k, .n_prompt = 10 };
        vllmc_sampling_params_default(e, &rp.sampling);
        rp.sampling.max_tokens = 16;
        rp.sampling.ignore_eos = 1;
        REQUIRE(vllmc_submit(e, &rp, &noise[k], err, sizeof err) == 0);
    }
    struct vllmc_request_params rp = { .prompt = ids, .n_prompt = 20 };
    vllmc_sampling_params_default(e, &rp.sampling);
    rp.sampling.temperature = 1.0f;
    rp.sampling.has_seed = 1;
    rp.sampling.seed = seed;
    rp.sampling.n = n;
    rp.sampling.max_tokens = 16;
    rp.sampling.ignore_eos = 1;
    vllmc_request *r;
    REQUIRE(vllmc_submit(e, &rp, &r, err, sizeof err) == 0);
    int cnt[8] = { 0 };
    struct vllmc_output o;
    while (vllmc_request_next(r, &o, 60000) == 1) {
        for (int i = 0; i < o.n_seqs; i++)
            for (int t = 0; t < o.seqs[i].n_tokens; t++) out[o.seqs[i].index][cnt[o.seqs[i].index]++] = o.seqs[i].tokens[t];
        if (o.finished) break;
    }
    for (int i = 0; i < n; i++) CHECK(cnt[i] == 16);
    vllmc_request_free(r);
    for (int k = 0; k < others; k++) vllmc_request_free(noise[k]);
}

ENGINE_TEST(seeded_sampling_reproduces_in_any_batch) {
    vllmc_engine *e = open_engine(fixture_dir("qwen3_f32"), 0, 64, 1, NULL);
    int32_t a[4][16], b[4][16], c[4][16];
    sample_run(e, 1234, 4, a, 0);
    sample_run(e, 1234, 4, b, 5);
    sample_run(e, 99, 4, c, 0);
    CHECK(!memcmp(a, b, sizeof a));   /* same seed, other requests around: same samples */
    CHECK(memcmp(a, c, sizeof a) != 0); /* another seed: other samples */
    int distinct = 0;
    for (int i = 1; i < 4; i++) distinct += memcmp(a[0], a[i], sizeof a[0]) != 0;
    CHECK(distinct > 0); /* the n siblings are not copies of each other */
    pool_whole(e);
    vllmc_engine_close(e);
}

/* ---- device sampling (backend sample_rows) ---- */

struct dcase {
    float temperature, top_p, min_p, rep;
    int top_k, logprobs, n;
};

struct dout {
    int32_t tok[3][12];
    struct vllmc_logprob chosen[3][12], top[3][12][5];
    int n_tok[3];
};

static void dcase_run(vllmc_engine *e, const struct dcase *c, uint64_t seed, struct dout *o) {
    int32_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = (int32_t)(17 + 11 * i + seed) % 300;
    struct vllmc_request_params rp = { .prompt = ids, .n_prompt = 12 };
    vllmc_sampling_params_default(e, &rp.sampling);
    rp.sampling.temperature = c->temperature;
    rp.sampling.top_p = c->top_p;
    rp.sampling.top_k = c->top_k;
    rp.sampling.min_p = c->min_p;
    rp.sampling.repetition_penalty = c->rep;
    rp.sampling.logprobs = c->logprobs;
    rp.sampling.n = c->n;
    rp.sampling.has_seed = 1;
    rp.sampling.seed = seed;
    rp.sampling.max_tokens = 12;
    rp.sampling.ignore_eos = 1;
    vllmc_request *r;
    char err[256];
    REQUIRE(vllmc_submit(e, &rp, &r, err, sizeof err) == 0);
    memset(o, 0, sizeof *o);
    struct vllmc_output out;
    while (vllmc_request_next(r, &out, 60000) == 1) {
        for (int i = 0; i < out.n_seqs; i++) {
            const struct vllmc_seq_output *so = &out.seqs[i];
            int x = so->index;
            for (int t = 0; t < so->n_tokens && o->n_tok[x] < 12; t++) {
                int j = o->n_tok[x]++;
                o->tok[x][j] = so->tokens[t];
                if (so->logprobs) {
                    o->chosen[x][j] = so->logprobs[t].chosen;
                    for (int q = 0; q < so->logprobs[t].n_top && q < 5; q++) o->top[x][j][q] = so->logprobs[t].top[q];
                }
            }
        }
        if (out.finished) break;
    }
    vllmc_request_free(r);
}

/* The engine with the backend's sample_rows (on the CPU its plain C version,
 * VLLMC_CPU_SAMPLE_ROWS=1) against the same engine sampling whole rows on
 * the host (VLLMC_DEVICE_SAMPLING=0): the same tokens, logprobs, ranks and
 * top lists for every mode, one request at a time (the same batches). */
ENGINE_TEST(device_sampling_matches_host) {
    setenv("VLLMC_CPU_SAMPLE_ROWS", "1", 1);
    vllmc_engine *a = open_engine(fixture_dir("qwen3_f32"), 0, 64, 1, NULL);
    setenv("VLLMC_DEVICE_SAMPLING", "0", 1);
    vllmc_engine *b = open_engine(fixture_dir("qwen3_f32"), 0, 64, 1, NULL);
    unsetenv("VLLMC_DEVICE_SAMPLING");
    REQUIRE(a->dev_sampling && !b->dev_sampling);
    const struct dcase cases[] = {
        { 0, 1, 0, 1, 0, 5, 1 },       /* greedy + top 5 */
        { 0.8f, 1, 0, 1, 0, 3, 1 },    /* dense draw */
        { 0.7f, 1, 0.05f, 1, 0, -1, 1 }, /* + min_p */
        { 1, 1, 0, 1, 5, -1, 1 },      /* top_k */
        { 1.2f, 0.8f, 0.02f, 1, 20, 2, 1 }, /* top_k + top_p + min_p */
        { 1, 1, 0, 1, 1, 1, 1 },       /* top_k 1: the chosen is the k-th */
        { 1, 0.9f, 0, 1, 0, 0, 1 },    /* top_p alone: the nucleus from 256 candidates (V = 384) */
        { 1, 1, 0, 1.2f, 10, 0, 1 },   /* penalties: host */
        { 1, 1, 0, 1, 40, 0, 3 },      /* n = 3 */
        { 0.001f, 1, 0, 1, 0, 0, 1 },  /* below 0.01: T = 0.01 */
    };
    int fails = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (uint64_t seed = 1; seed <= 2; seed++) {
            struct dout x, y;
            dcase_run(a, &cases[c], seed, &x);
            dcase_run(b, &cases[c], seed, &y);
            for (int i = 0; i < cases[c].n; i++) {
                if (x.n_tok[i] != 12 || y.n_tok[i] != 12 || memcmp(x.tok[i], y.tok[i], sizeof x.tok[i])) {
                    fprintf(stderr, "  case %zu seed %d seq %d: tokens differ\n", c, (int)seed, i);
                    fails++;
                    continue;
                }
                for (int t = 0; t < 12 && cases[c].logprobs >= 0; t++) {
                    const struct vllmc_logprob *p = &x.chosen[i][t], *q = &y.chosen[i][t];
                    int bad = p->token != q->token || p->rank != q->rank || !(fabsf(p->logprob - q->logprob) <= 1e-5f);
                    for (int k = 0; k < cases[c].logprobs && k < 5; k++) {
                        const struct vllmc_logprob *u = &x.top[i][t][k], *v = &y.top[i][t][k];
                        bad |= u->token != v->token || u->rank != v->rank || !(fabsf(u->logprob - v->logprob) <= 1e-5f);
                    }
                    if (bad) {
                        fprintf(stderr, "  case %zu seed %d seq %d token %d: logprobs differ (%d %g rank %d / %d %g rank %d)\n",
                                c, (int)seed, i, t, p->token, p->logprob, p->rank, q->token, q->logprob, q->rank);
                        fails++;
                        break;
                    }
                }
            }
        }
    CHECK(fails == 0);
    printf("      %lld rows sampled from the device's results, %lld needed the whole row\n", (long long)a->dev_rows,
           (long long)a->dev_fallbacks);
    CHECK(a->dev_rows >= 2 * 12 * 11); /* 9 cases on the device, n = 3 counting three: 11 rows a step, 2 seeds */
    CHECK(b->dev_rows == 0);
    vllmc_engine_close(a);
    vllmc_engine_close(b);
}

TEST_MAIN()
