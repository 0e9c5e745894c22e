/* bench_sample.c — the sampling stage of one engine step on the CUDA
 * backend, with and without device sampling: R logits rows of V = 128256
 * (Llama-3's vocabulary) already in device memory, as the forward leaves
 * them, then
 *   host:   download the R x V block, sampler_sample on every row over the
 *           backend's host threads (the engine's path before sample_rows,
 *           and its path with VLLMC_DEVICE_SAMPLING=0);
 *   device: plan + draw per row, sample_rows (one upload, the kernel, one
 *           download of results and candidates), sampler_dev_finish per row
 *           on one thread (the engine's path now).
 * The rows are random (about normal, sd 3, plus a peak), so the top-k and
 * dense passes see realistic spreads. Prints a markdown table: median of 7
 * runs in ms per step, and the speed-up. Nothing here is a pass/fail test.
 *
 * Usage: bench_sample [-V vocab] [-t host threads]. Without CUDA it says so
 * and exits 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "engine/sampler.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char err[512];
static void die(const char *what) {
    fprintf(stderr, "bench_sample: %s: %s\n", what, err);
    exit(1);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct host_ctx {
    float *logits;
    int V, R;
    struct vllmc_sampling_params *sp;
    struct sampler_scratch **scr;
    int n_scr;
};

static void host_fn(void *arg, int ith, int nth) {
    struct host_ctx *c = arg;
    for (int r = ith; r < c->R; r += nth) {
        struct sampler_seq q = { .sp = c->sp };
        sampler_seed(q.rng, 7, (uint64_t)r);
        struct vllmc_logprob ch, top[20];
        sampler_sample(c->scr[ith < c->n_scr ? ith : 0], c->logits + (size_t)r * c->V, c->V, &q, &ch, top);
    }
}

int main(int argc, char **argv) {
    int V = 128256, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-V")) V = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) threads = atoi(argv[i + 1]);
    }
    struct backend *g;
    if (backend_cuda_create(&g, 0, threads, err, sizeof err)) {
        printf("bench_sample: no CUDA here (%s)\n", err);
        return 0;
    }
    const int RMAX = 256;
    float *host = malloc((size_t)RMAX * V * sizeof(float));
    unsigned long long s = 88172645463325252ull;
    for (size_t i = 0; i < (size_t)RMAX * V; i++) {
        float u = 0;
        for (int k = 0; k < 4; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            u += (float)((s >> 40) * (1.0 / (1ull << 24))) * 2 - 1;
        }
        host[i] = u * 2.6f + (i % V == (i / V * 7919) % V ? 10.0f : 0.0f);
    }
    float *dev = bk_alloc(g, (size_t)RMAX * V * sizeof(float));
    if (!dev || bk_upload(g, dev, host, (size_t)RMAX * V * sizeof(float), err, sizeof err)) die("upload");
    /* peaked rows, as a trained model's: 32 tokens near the top, the rest ~12 lower */
    for (size_t i = 0; i < (size_t)RMAX * V; i++) host[i] = (i % V) % 4001 == 17 ? host[i] * 0.5f : host[i] * 0.5f - 12;
    float *dev_pk = bk_alloc(g, (size_t)RMAX * V * sizeof(float));
    if (!dev_pk || bk_upload(g, dev_pk, host, (size_t)RMAX * V * sizeof(float), err, sizeof err)) die("upload");
    const int nth = bk_host_threads(g);
    struct sampler_scratch **scr = malloc((size_t)nth * sizeof *scr);
    for (int i = 0; i < nth; i++) scr[i] = sampler_scratch_new(V);
    struct bk_sample_req *req = malloc(RMAX * sizeof *req);
    struct bk_sample_res *res = malloc(RMAX * sizeof *res);
    struct sampler_dev_plan *plan = malloc(RMAX * sizeof *plan);
    double *u = malloc(RMAX * sizeof *u);
    int32_t *cid = malloc((size_t)RMAX * 512 * sizeof *cid);
    float *cv = malloc((size_t)RMAX * 512 * sizeof *cv);

    struct mode {
        const char *name;
        float T, top_p, min_p;
        int top_k, logprobs;
        bool peaked; /* the peaked rows */
    } modes[] = {
        { "greedy", 0, 1, 0, 0, -1 },
        { "greedy + logprobs 5", 0, 1, 0, 0, 5 },
        { "temperature 0.8", 0.8f, 1, 0, 0, -1 },
        { "T 0.8, min_p 0.05, logprobs 0", 0.8f, 1, 0.05f, 0, 0 },
        { "T 0.8, top_k 50, top_p 0.9", 0.8f, 0.9f, 0, 50, -1 },
        { "T 0.8, top_p 0.9 (peaked rows)", 0.8f, 0.9f, 0, 0, -1, true },
        { "T 1, top_p 0.95, logprobs 1 (peaked rows)", 1.0f, 0.95f, 0, 0, 1, true },
    };
    const int Rs[] = { 1, 8, 64, 256 };
    printf("`bench_sample` on %s, V = %d, %d host threads; ms per step (median of 7)\n\n", backend_cuda_name(g), V,
           nth);
    printf("| mode | rows | host: download + sampler | device: sample_rows + finish | speed-up |\n|---|---|---|---|---|\n");
    for (size_t mi = 0; mi < sizeof modes / sizeof modes[0]; mi++) {
        const struct mode *md = &modes[mi];
        const float *rows = md->peaked ? dev_pk : dev;
        struct vllmc_sampling_params sp = { .n = 1, .temperature = md->T, .top_p = md->top_p, .top_k = md->top_k,
                                            .min_p = md->min_p, .repetition_penalty = 1, .logprobs = md->logprobs,
                                            .max_tokens = 16, .prompt_logprobs = -1 };
        for (size_t ri = 0; ri < sizeof Rs / sizeof Rs[0]; ri++) {
            const int R = Rs[ri];
            double th[7], td[7];
            int fallbacks = 0;
            for (int it = 0; it < 7; it++) {
                double t0 = now();
                if (bk_download(g, host, rows, (size_t)R * V * sizeof(float), err, sizeof err)) die("download");
                struct host_ctx hc = { host, V, R, &sp, scr, nth };
                bk_host_parallel(g, host_fn, &hc);
                th[it] = now() - t0;

                t0 = now();
                int slots = 0;
                for (int r = 0; r < R; r++) {
                    struct sampler_seq q = { .sp = &sp };
                    sampler_seed(q.rng, 7, (uint64_t)r);
                    sampler_dev_plan(&q, V, &plan[r]);
                    u[r] = plan[r].draws ? sampler_uniform(q.rng) : 0;
                    static const int32_t bm[] = { 0, BK_SAMPLE_ARGMAX, BK_SAMPLE_DRAW, BK_SAMPLE_NONE, BK_SAMPLE_NONE };
                    req[r] = (struct bk_sample_req){ .row = r, .mode = bm[plan[r].mode], .k = plan[r].k,
                                                     .lp = plan[r].lp, .inv_t = plan[r].inv_t, .min_p = plan[r].min_p,
                                                     .u = u[r], .cand_off = slots, .cand_cap = plan[r].cap,
                                                     .wsum = plan[r].wsum };
                    slots += plan[r].cap;
                }
                if (bk_sample_rows(g, rows, V, req, R, res, cid, cv, slots, err, sizeof err)) die("sample_rows");
                for (int r = 0; r < R; r++) {
                    struct sampler_seq q = { .sp = &sp };
                    const struct sampler_dev_row d = { .token = res[r].token, .rank = res[r].rank,
                                                       .logprob = res[r].logprob, .m = res[r].m, .L = res[r].L,
                                                       .floor = res[r].floor, .n_cand = res[r].n_cand,
                                                       .cid = cid + req[r].cand_off, .cv = cv + req[r].cand_off,
                                                       .z = res[r].z };
                    struct vllmc_logprob ch, top[20];
                    if (sampler_dev_finish(scr[0], V, &q, &plan[r], &d, u[r], &ch, top) < 0) fallbacks++;
                }
                td[it] = now() - t0;
            }
            qsort(th, 7, sizeof *th, cmp_d);
            qsort(td, 7, sizeof *td, cmp_d);
            printf("| %s | %d | %.3f | %.3f | %.1fx |%s\n", md->name, R, th[3] * 1e3, td[3] * 1e3, th[3] / td[3],
                   fallbacks ? " (some rows fell back)" : "");
        }
    }
    bk_free(g, dev);
    bk_free(g, dev_pk);
    bk_destroy(g);
    return 0;
}
