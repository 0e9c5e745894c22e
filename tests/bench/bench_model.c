/* bench_model.c — single-stream prefill and decode speed of one checkpoint
 * through the real loader, forward and CPU backend.
 *
 *   bench_model DIR [--threads T] [--prompt 512] [--gen 64] [--reps 3]
 *                   [--name NAME] [--bw GBS] [--isa auto] [--header]
 *                   [--max-noise 0.05] [--retries 10]
 *   bench_model DIR --batch B [--prompt 8] [--gen 32] [--threads T] [--reps 3]
 *
 * Prefill (ppP): one step of P prompt tokens (random ids, positions 0..P-1)
 * into an empty paged cache, logits for the last row only; what the
 * scheduler does for a prompt that fits the token budget.
 * Decode (tgG): G steps of one token each, from an empty cache (positions
 * 0..G-1), logits for the token every step; the same test as llama-bench's
 * tgG. Each is run once to warm up (page the mmapped weights in, grow the
 * forward's scratch) and then `reps` times; tok/s is reported as the mean and
 * the best repetition.
 *
 * Weight bytes per decode token: every matrix the step reads (q, k, v, o,
 * gate, up, down of every layer, plus the output head; a tied embedding table
 * counts once, as the head, since the embedding lookup reads one row of it).
 * Norm vectors and the KV cache (small at these lengths) are left out. With
 * --bw (the STREAM-style bandwidth measured alongside, GB/s) the achieved
 * fraction weight_bytes x decode tok/s / bandwidth is reported.
 *
 * Prints one "result ..." key=value line (tests/bench/run.sh parses it) and
 * one markdown table row (--header adds the header first).
 *
 * Batched decode (--batch B): B sequences of P prompt tokens each (default
 * 8) are prefilled in one step, then G steps (default 32) decode one token of
 * every sequence at once (T = B rows through every matmul, logits for all B).
 * Prints one "batch ..." line: the best and mean decode step time, the
 * aggregate decode tok/s (B per step), and the aggregate output tok/s of the
 * whole run including the prefill step (what an engine's throughput bench
 * sees, minus scheduling and sampling).
 *
 * Shared machines: each timed repetition also measures how much CPU other
 * processes took meanwhile (/proc/stat minus this process's own time, as a
 * fraction of all CPUs). A repetition above --max-noise (default 0.05) is run
 * again after a pause, up to --retries times per test (default 10); the
 * result lines report the largest noise among the repetitions kept.
 *
 * Does not: sample (token ids are random, as in llama-bench), or time the
 * engine's scheduler or tokenizer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backend/backend.h"
#include "model/model.h"

/* ---- noise guard (see the header) ---- */

static double g_max_noise = 0.05;
static int g_retries = 10;

struct noise {
    double busy, self, wall;
};

static double machine_busy_s(void) { /* CPU seconds of all processes since boot; 0 if unknown */
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long u = 0, n = 0, s = 0, idle = 0, io = 0, irq = 0, sirq = 0, steal = 0;
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &n, &s, &idle, &io, &irq, &sirq, &steal);
    fclose(f);
    return got == 8 ? (double)(u + n + s + irq + sirq + steal) / (double)sysconf(_SC_CLK_TCK) : 0;
}

static double self_cpu_s(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_utime.tv_sec + 1e-6 * (double)r.ru_utime.tv_usec + (double)r.ru_stime.tv_sec +
           1e-6 * (double)r.ru_stime.tv_usec;
}

static void noise_start(struct noise *n) {
    n->busy = machine_busy_s();
    n->self = self_cpu_s();
    n->wall = time_now();
}

/* Fraction of all CPUs that other processes used since noise_start. */
static double noise_end(const struct noise *n) {
    const double wall = time_now() - n->wall, busy = machine_busy_s() - n->busy, self = self_cpu_s() - n->self;
    const long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (n->busy == 0 || wall <= 0 || ncpu < 1) return 0;
    return MAX(0.0, (busy - self) / (wall * (double)ncpu));
}

/* After a timed repetition with noise f: true if it should be run again
 * (and waits a second first); *tries counts the retries of this test. */
static bool retry_noisy(double f, int *tries) {
    if (f <= g_max_noise || *tries >= g_retries) return false;
    (*tries)++;
    sleep(1);
    return true;
}

struct bench_kv {
    struct model_kv kv;
    void *mem;
    int32_t *table;     /* [S][max_blocks]: sequence s owns blocks 1 + s*max_blocks .. in order */
    int max_blocks, B;
};

static void bench_kv_init(struct bench_kv *t, const struct hparams *hp, int max_len, int B, int S) {
    t->B = B;
    t->max_blocks = (max_len + B - 1) / B;
    int num_blocks = 1 + S * t->max_blocks; /* block 0 is the null block */
    enum dtype dt = model_default_kv_dtype(hp);
    size_t lb = (size_t)num_blocks * B * hp->n_kv_head * hp->head_dim * dtype_size(dt);
    t->mem = xcalloc(2 * (size_t)hp->n_layer, lb);
    t->kv.n_layer = hp->n_layer;
    t->kv.layers = xcalloc((size_t)hp->n_layer, sizeof *t->kv.layers);
    for (int l = 0; l < hp->n_layer; l++)
        t->kv.layers[l] = (struct bk_kv){
            .k = (char *)t->mem + 2 * (size_t)l * lb, .v = (char *)t->mem + (2 * (size_t)l + 1) * lb,
            .dtype = dt, .num_blocks = num_blocks, .block_size = B, .n_kv_heads = hp->n_kv_head,
            .head_dim = hp->head_dim,
        };
    t->table = xmalloc((size_t)S * t->max_blocks * sizeof(int32_t));
    for (int i = 0; i < S * t->max_blocks; i++) t->table[i] = 1 + i;
}

static void bench_kv_free(struct bench_kv *t) {
    free(t->mem);
    free(t->kv.layers);
    free(t->table);
}

static size_t weight_bytes(const struct bk_weight *w) { return bk_weight_bytes(w); }

/* Bytes of matrices one decode step reads. */
static size_t decode_weight_bytes(const struct model *m) {
    size_t b = weight_bytes(&m->lm_head);
    b += weight_bytes(&m->tok_emb) / (size_t)m->tok_emb.rows; /* one embedding row (codes + scales + biases if quantized) */
    for (int l = 0; l < m->hp.n_layer; l++) {
        const struct layer_weights *L = &m->layers[l];
        b += weight_bytes(&L->wq) + weight_bytes(&L->wk) + weight_bytes(&L->wv) + weight_bytes(&L->wo) +
             weight_bytes(&L->w_gate) + weight_bytes(&L->w_up) + weight_bytes(&L->w_down);
    }
    return b;
}

static bool all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

/* One step of n tokens at positions p0..p0+n-1 of the single sequence. */
static int step(struct model *m, struct bench_kv *kv, const int32_t *ids, int p0, int n, float *logits,
                int32_t *pos, int32_t *slot, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        int p = p0 + i;
        pos[i] = p;
        slot[i] = kv->table[p / kv->B] * kv->B + p % kv->B;
    }
    int32_t qs[2] = { 0, n }, sl[1] = { p0 + n }, row[1] = { n - 1 };
    struct model_batch b = {
        .n_tokens = n, .tokens = ids, .positions = pos, .slot_mapping = slot,
        .attn = { .n_seqs = 1, .query_start = qs, .seq_len = sl, .block_table = kv->table,
                  .max_blocks = kv->max_blocks },
        .n_logits = 1, .logits_rows = row,
    };
    return model_forward(m, &b, &kv->kv, logits, err, errlen);
}

/* One step of S sequences with n tokens each, sequence s at positions
 * p0..p0+n-1; logits for the last token of every sequence. */
static int step_batch(struct model *m, struct bench_kv *kv, const int32_t *ids, int S, int p0, int n,
                      float *logits, int32_t *pos, int32_t *slot, int32_t *qs, int32_t *sl, int32_t *rows, char *err,
                      size_t errlen) {
    for (int s = 0; s < S; s++) {
        const int32_t *bt = kv->table + (size_t)s * kv->max_blocks;
        for (int i = 0; i < n; i++) {
            int p = p0 + i, t = s * n + i;
            pos[t] = p;
            slot[t] = bt[p / kv->B] * kv->B + p % kv->B;
        }
        qs[s] = s * n;
        sl[s] = p0 + n;
        rows[s] = s * n + n - 1;
    }
    qs[S] = S * n;
    struct model_batch b = {
        .n_tokens = S * n, .tokens = ids, .positions = pos, .slot_mapping = slot,
        .attn = { .n_seqs = S, .query_start = qs, .seq_len = sl, .block_table = kv->table,
                  .max_blocks = kv->max_blocks },
        .n_logits = S, .logits_rows = rows,
    };
    return model_forward(m, &b, &kv->kv, logits, err, errlen);
}

/* --batch: see the header. Returns 0 or 1 (message in err). */
static int bench_batch(struct model *m, const char *name, int threads, const char *isa, int S, int n_prompt, int n_gen,
                       int reps, char *err, size_t errlen) {
    const int V = m->hp.n_vocab, Tmax = S * MAX(n_prompt, 1);
    struct bench_kv kv;
    bench_kv_init(&kv, &m->hp, n_prompt + n_gen, 16, S);
    int32_t *ids = xmalloc((size_t)Tmax * sizeof *ids), *pos = xmalloc((size_t)Tmax * sizeof *pos);
    int32_t *slot = xmalloc((size_t)Tmax * sizeof *slot), *qs = xmalloc((size_t)(S + 1) * sizeof *qs);
    int32_t *sl = xmalloc((size_t)S * sizeof *sl), *rows = xmalloc((size_t)S * sizeof *rows);
    float *logits = xmalloc((size_t)S * V * sizeof *logits);
    uint64_t st = 0x2545f4914f6cdd1dull;
    for (int i = 0; i < Tmax; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((st >> 33) % (uint64_t)V);
    }
    int rc = 1, tries = 0;
    double best_step = 1e30, mean_step = 0, best_run = 1e30, mean_run = 0, noise_max = 0;
    for (int r = 0; r <= reps; r++) { /* r == 0: warm-up */
        struct noise nz;
        noise_start(&nz);
        double t0 = time_now();
        if (step_batch(m, &kv, ids, S, 0, n_prompt, logits, pos, slot, qs, sl, rows, err, errlen)) goto out;
        const double t1 = time_now();
        for (int g = 0; g < n_gen; g++)
            if (step_batch(m, &kv, ids, S, n_prompt + g, 1, logits, pos, slot, qs, sl, rows, err, errlen)) goto out;
        double t2 = time_now();
        if (!all_finite(logits, (size_t)S * V)) {
            snprintf(err, errlen, "batched decode produced non-finite logits");
            goto out;
        }
        if (r == 0) continue;
        const double f = noise_end(&nz);
        if (retry_noisy(f, &tries)) {
            r--;
            continue;
        }
        noise_max = MAX(noise_max, f);
        const double step = (t2 - t1) / n_gen;
        mean_step += step / reps;
        best_step = MIN(best_step, step);
        mean_run += (t2 - t0) / reps;
        best_run = MIN(best_run, t2 - t0);
    }
    printf("batch name=%s threads=%d isa=%s batch=%d prompt=%d gen=%d reps=%d step_ms_best=%.2f step_ms_mean=%.2f "
           "decode_tok_s_best=%.2f output_tok_s_best=%.2f output_tok_s_mean=%.2f noise=%.3f retried=%d\n",
           name, threads, isa, S, n_prompt, n_gen, reps, best_step * 1e3, mean_step * 1e3, S / best_step,
           S * n_gen / best_run, S * n_gen / mean_run, noise_max, tries);
    rc = 0;
out:
    free(ids);
    free(pos);
    free(slot);
    free(qs);
    free(sl);
    free(rows);
    free(logits);
    bench_kv_free(&kv);
    return rc;
}

struct timing {
    double mean_tps, best_tps;
};

int main(int argc, char **argv) {
    const char *dir = NULL, *name = NULL, *isa = "auto";
    int threads = 1, n_prompt = -1, n_gen = -1, reps = 3, header = 0, batch = 0;
    double bw = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) n_prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gen") && i + 1 < argc) n_gen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--name") && i + 1 < argc) name = argv[++i];
        else if (!strcmp(argv[i], "--bw") && i + 1 < argc) bw = atof(argv[++i]);
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) isa = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-noise") && i + 1 < argc) g_max_noise = atof(argv[++i]);
        else if (!strcmp(argv[i], "--retries") && i + 1 < argc) g_retries = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--header")) header = 1;
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else {
            fprintf(stderr, "usage: bench_model DIR [--threads T] [--prompt P] [--gen G] [--reps N] [--name S] "
                            "[--bw GBS] [--isa ISA] [--header] [--batch B] [--max-noise F] [--retries N]\n");
            return 2;
        }
    }
    if (n_prompt < 0) n_prompt = batch > 0 ? 8 : 512;
    if (n_gen < 0) n_gen = batch > 0 ? 32 : 64;
    if (!dir || threads < 1 || n_prompt < 1 || n_gen < 1 || reps < 1 || batch < 0) {
        fprintf(stderr, "bench_model: need a checkpoint directory and positive counts\n");
        return 2;
    }
    if (!name) name = dir;

    char err[1024];
    struct backend *bk;
    if (backend_cpu_create(&bk, threads, isa, err, sizeof err)) {
        fprintf(stderr, "bench_model: %s\n", err);
        return 1;
    }
    struct model *m;
    double t_load = time_now();
    if (model_load(&m, dir, bk, NULL, err, sizeof err)) {
        fprintf(stderr, "bench_model: %s\n", err);
        bk_destroy(bk);
        return 1;
    }
    t_load = time_now() - t_load;
    if (batch > 0) {
        int brc = bench_batch(m, name, threads, backend_cpu_isa(bk), batch, n_prompt, n_gen, reps, err, sizeof err);
        if (brc) fprintf(stderr, "bench_model: %s: %s\n", name, err);
        model_free(m);
        bk_destroy(bk);
        return brc;
    }
    const int V = m->hp.n_vocab;
    const int max_tok = MAX(n_prompt, n_gen);

    struct bench_kv kv;
    bench_kv_init(&kv, &m->hp, max_tok, 16, 1);
    int32_t *ids = xmalloc((size_t)max_tok * sizeof *ids), *pos = xmalloc((size_t)max_tok * sizeof *pos);
    int32_t *slot = xmalloc((size_t)max_tok * sizeof *slot);
    float *logits = xmalloc((size_t)V * sizeof *logits);
    uint64_t s = 0x853c49e6748fea9bull;
    for (int i = 0; i < max_tok; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }

    int rc = 1, pp_tries = 0, tg_tries = 0;
    double noise_max = 0;
    struct timing pp = { 0 }, tg = { 0 };
    /* prefill: warm-up, then reps */
    for (int r = 0; r <= reps; r++) {
        struct noise nz;
        noise_start(&nz);
        double t0 = time_now();
        if (step(m, &kv, ids, 0, n_prompt, logits, pos, slot, err, sizeof err)) goto fail;
        double tps = n_prompt / (time_now() - t0);
        if (!all_finite(logits, (size_t)V)) {
            snprintf(err, sizeof err, "prefill produced non-finite logits");
            goto fail;
        }
        if (r == 0) continue;
        const double f = noise_end(&nz);
        if (retry_noisy(f, &pp_tries)) {
            r--;
            continue;
        }
        noise_max = MAX(noise_max, f);
        pp.mean_tps += tps / reps;
        pp.best_tps = MAX(pp.best_tps, tps);
    }
    /* decode: one warm-up step, then reps of n_gen steps from an empty cache */
    if (step(m, &kv, ids, 0, 1, logits, pos, slot, err, sizeof err)) goto fail;
    for (int r = 0; r < reps; r++) {
        struct noise nz;
        noise_start(&nz);
        double t0 = time_now();
        for (int i = 0; i < n_gen; i++)
            if (step(m, &kv, ids + i, i, 1, logits, pos, slot, err, sizeof err)) goto fail;
        double tps = n_gen / (time_now() - t0);
        if (!all_finite(logits, (size_t)V)) {
            snprintf(err, sizeof err, "decode produced non-finite logits");
            goto fail;
        }
        const double f = noise_end(&nz);
        if (retry_noisy(f, &tg_tries)) {
            r--;
            continue;
        }
        noise_max = MAX(noise_max, f);
        tg.mean_tps += tps / reps;
        tg.best_tps = MAX(tg.best_tps, tps);
    }

    size_t wb = decode_weight_bytes(m);
    double frac = bw > 0 ? (double)wb * tg.best_tps / (bw * 1e9) : 0;
    printf("result name=%s threads=%d isa=%s prompt=%d gen=%d reps=%d load_s=%.2f pp_mean=%.2f pp_best=%.2f "
           "tg_mean=%.2f tg_best=%.2f weight_bytes=%zu bw_gbs=%.2f bw_frac=%.3f noise=%.3f retried=%d\n",
           name, threads, backend_cpu_isa(bk), n_prompt, n_gen, reps, t_load, pp.mean_tps, pp.best_tps,
           tg.mean_tps, tg.best_tps, wb, bw, frac, noise_max, pp_tries + tg_tries);
    if (header)
        printf("| model | threads | isa | pp%d tok/s (best, mean) | tg%d tok/s (best, mean) | weight GB/token | "
               "bandwidth GB/s | decode fraction of bandwidth |\n|---|---|---|---|---|---|---|---|\n",
               n_prompt, n_gen);
    printf("| %s | %d | %s | %.1f, %.1f | %.2f, %.2f | %.3f | %.1f | %.0f%% |\n", name, threads, backend_cpu_isa(bk),
           pp.best_tps, pp.mean_tps, tg.best_tps, tg.mean_tps, (double)wb / 1e9, bw, 100 * frac);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "bench_model: %s: %s\n", name, err);
    free(ids);
    free(pos);
    free(slot);
    free(logits);
    bench_kv_free(&kv);
    model_free(m);
    bk_destroy(bk);
    return rc;
}
