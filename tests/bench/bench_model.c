/* bench_model.c — single-stream prefill and decode speed of one checkpoint
 * through the real loader, forward and CPU backend.
 *
 *   bench_model DIR [--threads T] [--prompt 512] [--gen 64] [--reps 3]
 *                   [--name NAME] [--bw GBS] [--isa auto] [--header]
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
 * Does not: sample (token ids are random, as in llama-bench), batch several
 * sequences, or time the engine's scheduler or tokenizer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/backend.h"
#include "model/model.h"

struct bench_kv {
    struct model_kv kv;
    void *mem;
    int32_t *table;     /* [max_blocks]: blocks 1..max_blocks in order */
    int max_blocks, B;
};

static void bench_kv_init(struct bench_kv *t, const struct hparams *hp, int max_len, int B) {
    t->B = B;
    t->max_blocks = (max_len + B - 1) / B;
    int num_blocks = 1 + t->max_blocks; /* block 0 is the null block */
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
    t->table = xmalloc((size_t)t->max_blocks * sizeof(int32_t));
    for (int i = 0; i < t->max_blocks; i++) t->table[i] = 1 + i;
}

static void bench_kv_free(struct bench_kv *t) {
    free(t->mem);
    free(t->kv.layers);
    free(t->table);
}

static size_t weight_bytes(const struct bk_weight *w) {
    return (size_t)w->rows * (size_t)w->cols * dtype_size(w->dtype);
}

/* Bytes of matrices one decode step reads. */
static size_t decode_weight_bytes(const struct model *m) {
    size_t b = weight_bytes(&m->lm_head);
    b += (size_t)m->tok_emb.cols * dtype_size(m->tok_emb.dtype); /* one embedding row */
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

struct timing {
    double mean_tps, best_tps;
};

int main(int argc, char **argv) {
    const char *dir = NULL, *name = NULL, *isa = "auto";
    int threads = 1, n_prompt = 512, n_gen = 64, reps = 3, header = 0;
    double bw = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) n_prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gen") && i + 1 < argc) n_gen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--name") && i + 1 < argc) name = argv[++i];
        else if (!strcmp(argv[i], "--bw") && i + 1 < argc) bw = atof(argv[++i]);
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) isa = argv[++i];
        else if (!strcmp(argv[i], "--header")) header = 1;
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else {
            fprintf(stderr, "usage: bench_model DIR [--threads T] [--prompt P] [--gen G] [--reps N] [--name S] "
                            "[--bw GBS] [--isa ISA] [--header]\n");
            return 2;
        }
    }
    if (!dir || threads < 1 || n_prompt < 1 || n_gen < 1 || reps < 1) {
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
    const int V = m->hp.n_vocab;
    const int max_tok = MAX(n_prompt, n_gen);

    struct bench_kv kv;
    bench_kv_init(&kv, &m->hp, max_tok, 16);
    int32_t *ids = xmalloc((size_t)max_tok * sizeof *ids), *pos = xmalloc((size_t)max_tok * sizeof *pos);
    int32_t *slot = xmalloc((size_t)max_tok * sizeof *slot);
    float *logits = xmalloc((size_t)V * sizeof *logits);
    uint64_t s = 0x853c49e6748fea9bull;
    for (int i = 0; i < max_tok; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }

    int rc = 1;
    struct timing pp = { 0 }, tg = { 0 };
    /* prefill: warm-up, then reps */
    for (int r = 0; r <= reps; r++) {
        double t0 = time_now();
        if (step(m, &kv, ids, 0, n_prompt, logits, pos, slot, err, sizeof err)) goto fail;
        double tps = n_prompt / (time_now() - t0);
        if (!all_finite(logits, (size_t)V)) {
            snprintf(err, sizeof err, "prefill produced non-finite logits");
            goto fail;
        }
        if (r == 0) continue;
        pp.mean_tps += tps / reps;
        pp.best_tps = MAX(pp.best_tps, tps);
    }
    /* decode: one warm-up step, then reps of n_gen steps from an empty cache */
    if (step(m, &kv, ids, 0, 1, logits, pos, slot, err, sizeof err)) goto fail;
    for (int r = 0; r < reps; r++) {
        double t0 = time_now();
        for (int i = 0; i < n_gen; i++)
            if (step(m, &kv, ids + i, i, 1, logits, pos, slot, err, sizeof err)) goto fail;
        double tps = n_gen / (time_now() - t0);
        if (!all_finite(logits, (size_t)V)) {
            snprintf(err, sizeof err, "decode produced non-finite logits");
            goto fail;
        }
        tg.mean_tps += tps / reps;
        tg.best_tps = MAX(tg.best_tps, tps);
    }

    size_t wb = decode_weight_bytes(m);
    double frac = bw > 0 ? (double)wb * tg.best_tps / (bw * 1e9) : 0;
    printf("result name=%s threads=%d isa=%s prompt=%d gen=%d reps=%d load_s=%.2f pp_mean=%.2f pp_best=%.2f "
           "tg_mean=%.2f tg_best=%.2f weight_bytes=%zu bw_gbs=%.2f bw_frac=%.3f\n",
           name, threads, backend_cpu_isa(bk), n_prompt, n_gen, reps, t_load, pp.mean_tps, pp.best_tps,
           tg.mean_tps, tg.best_tps, wb, bw, frac);
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
