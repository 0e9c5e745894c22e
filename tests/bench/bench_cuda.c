/* bench_cuda.c — the CUDA backend on Llama-3.1-8B shapes (32 layers, d 4096,
 * 32/8 heads of 128, ff 14336, vocab 128256) with random bf16 weights made
 * in device memory (uploaded from one random host block, no checkpoint on
 * disk), through the real forward (model_forward) over a paged bf16 KV
 * cache:
 *   - copy bandwidth: bk_scale over a 4 GiB buffer in place (read + write),
 *     the ceiling decode is compared with;
 *   - GEMM peak: one matmul of 8192 x 8192 x 8192 bf16 through the backend
 *     (one GEMM with the default bf16 activations; with
 *     VLLMC_CUDA_MATMUL=split the hi+lo split makes it two, and the rate is
 *     per GEMM), the ceiling prefill is compared with;
 *   - prefill of P tokens (default 4096) in one step: time, and useful
 *     FLOPs (2 * matmul params * P + causal attention) / time / peak;
 *   - decode, batch 1, G steps (default 64) after that prefill: tokens/s and
 *     bytes read per token (all weights + the KV read) * tok/s / bandwidth.
 *   - the decode GEMV alone on each weight shape (T = 1), both kernel
 *     variants (VLLMC_CUDA_GEMV 0 and 1), rotating over copies that
 *     overflow L2: time per call and GB/s, and their sum over a token;
 *   - the other decode ops one at a time (32 calls, launch gaps included),
 *     the fused add_rmsnorm and qkv_prep where the backend offers them.
 * Prints markdown tables. Nothing here is a pass/fail test.
 * -q BITS (4 or 8): the model's matrices, embedding table and head included
 * (as mlx-community checkpoints quantize them), are MLX affine BITS-bit in
 * groups of 64 with bf16 scales and biases (random codes made on the host,
 * uploaded); bytes per token then count codes + scales + biases. The GEMM
 * peak stays the dense bf16 ceiling; the GEMV table then times T = 1, 2, 4
 * and 8 tokens (int8 activations), 16 and 32 (whatever path the backend's
 * mode takes: with the default bf16 activations ck_qmma at 16 and
 * dequantized tiles + cuBLASLt at 32) and T = 1 with VLLMC_CUDA_QGEMV=f32 (the
 * kernel before them), each as replays of a recorded graph of the calls
 * over the copies (as decode runs them: two kernels per call); the model
 * runs with VLLMC_CUDA_QGEMV as set (f32: decode with the kernel before).
 *
 * Usage: bench_cuda [-P prompt] [-G gen] [-L layers] [-q bits] [-m] (-L fewer
 * layers for a quick look; the table says how many; -m: the model only, no
 * GEMV or op tables). Without CUDA it says so
 * and exits 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "model/model.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static struct backend *g;
static char err[512];
static uint16_t *rnd;            /* random bf16 block on the host */
static const size_t RND = 1 << 24; /* elements */
static size_t dev_bytes;
static int qbits; /* -q: affine weights of this many bits, groups of 64 (0: bf16) */

static void die(const char *what) {
    fprintf(stderr, "bench_cuda: %s: %s\n", what, err);
    exit(1);
}

static void sync_dev(void) {
    float f;
    static float *one;
    if (!one && !(one = bk_alloc(g, sizeof(float)))) die("alloc");
    if (bk_download(g, &f, one, sizeof f, err, sizeof err)) die("sync");
}

/* n random bf16 values (scaled by the host block's scale) in device memory */
static void *dev_rand(size_t n) {
    uint16_t *d = bk_alloc(g, n * 2);
    if (!d) {
        snprintf(err, sizeof err, "out of device memory at %zu bytes", dev_bytes);
        die("alloc");
    }
    dev_bytes += n * 2;
    for (size_t o = 0; o < n; o += RND) {
        size_t k = n - o < RND ? n - o : RND;
        size_t off = (o / RND * 7919) % (RND / 2); /* vary the pattern between chunks */
        if (k > RND - off) off = 0;
        if (bk_upload(g, d + o, rnd + off, k * 2, err, sizeof err)) die("upload");
    }
    return d;
}

static float *dev_const(size_t n, float v) {
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = v;
    float *d = bk_alloc(g, n * sizeof(float));
    if (!d || bk_upload(g, d, h, n * sizeof(float), err, sizeof err)) die("upload");
    free(h);
    return d;
}

static struct bk_weight wmat(int64_t rows, int64_t cols) {
    struct bk_weight w = { .dtype = DT_BF16, .rows = rows, .cols = cols };
    w.data = dev_rand((size_t)rows * (size_t)cols);
    return w;
}

/* a weight of the model: bf16, or with -q affine codes (the random block's
 * bytes) and bf16 scales and biases (its values, |v| < 0.02) */
static struct bk_weight wmodel(int64_t rows, int64_t cols) {
    if (!qbits) return wmat(rows, cols);
    struct bk_weight w = { .dtype = DT_BF16, .rows = rows, .cols = cols, .fmt = BK_W_AFFINE, .bits = qbits,
                           .group_size = 64 };
    const size_t cb = (size_t)rows * bk_affine_row_bytes(&w), ng = (size_t)rows * (size_t)(cols / 64);
    uint8_t *d = bk_alloc(g, cb);
    if (!d) die("alloc");
    for (size_t o = 0; o < cb; o += RND * 2) {
        size_t k = cb - o < RND * 2 ? cb - o : RND * 2;
        if (bk_upload(g, d + o, rnd, k, err, sizeof err)) die("upload");
    }
    dev_bytes += cb;
    w.data = d;
    w.scales = dev_rand(ng);
    w.biases = dev_rand(ng);
    return w;
}

static void wfree(struct bk_weight *w) {
    bk_free(g, (void *)w->data), bk_free(g, (void *)w->scales), bk_free(g, (void *)w->biases);
    dev_bytes -= bk_weight_bytes(w);
}

int main(int argc, char **argv) {
    int P = 4096, G = 64, layers = 32, opt;
    bool model_only = false;
    while ((opt = getopt(argc, argv, "P:G:L:q:m")) != -1) {
        if (opt == 'P') P = atoi(optarg);
        else if (opt == 'm') model_only = true;
        else if (opt == 'q') qbits = atoi(optarg);
        else if (opt == 'G') G = atoi(optarg);
        else if (opt == 'L') layers = atoi(optarg);
        else return 2;
    }
    if (qbits && qbits != 4 && qbits != 8) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines reach a pipe as they are printed */
    if (backend_cuda_create(&g, 0, 4, err, sizeof err)) {
        printf("bench_cuda: skipped (%s)\n", err);
        return 0;
    }
    const char *card = backend_cuda_name(g);
    rnd = malloc(RND * 2);
    unsigned long long s = 88172645463325252ull;
    for (size_t i = 0; i < RND; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        float v = ((float)(s >> 40) / (float)(1 << 24) * 2.0f - 1.0f) * 0.02f;
        rnd[i] = f32_to_bf16(v);
    }

    /* copy bandwidth: in-place scale of 4 GiB (reads and writes every byte) */
    const size_t nbw = (size_t)1 << 30;
    float *bw = bk_alloc(g, nbw * sizeof(float));
    if (!bw) die("alloc");
    bk_scale(g, bw, nbw, 1.0f);
    sync_dev();
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        bk_scale(g, bw, nbw, 1.0f);
        sync_dev();
        best = fmin(best, now() - t0);
    }
    const double bandwidth = 2.0 * (double)nbw * 4 / best;
    bk_free(g, bw);

    /* GEMM peak: 8192^3 bf16 (the hi+lo split runs two GEMMs; the rate is
     * per GEMM: the bf16 rate of the card through cuBLASLt) */
    double peak;
    {
        const int M = 8192;
        struct bk_weight w = wmat(M, M);
        float *x = bk_alloc(g, (size_t)M * M * 4), *y = bk_alloc(g, (size_t)M * M * 4);
        if (!x || !y) die("alloc");
        bk_matmul(g, y, x, &w, M);
        sync_dev();
        best = 1e9;
        for (int r = 0; r < 5; r++) {
            double t0 = now();
            bk_matmul(g, y, x, &w, M);
            sync_dev();
            best = fmin(best, now() - t0);
        }
        const char *mode = getenv("VLLMC_CUDA_MATMUL");
        const int gemms = mode && !strcmp(mode, "split") ? 2 : 1; /* the default: bf16 activations */
        printf("| GEMM 8192^3 bf16 through bk_matmul (%s) | %.1f ms | %.0f TFLOP/s (per GEMM: %d GEMMs) |\n",
               gemms == 1 ? "bf16 activations" : "hi+lo split", best * 1e3,
               gemms * 2.0 * M * (double)M * M / best / 1e12, gemms);
        bk_free(g, (void *)w.data), bk_free(g, x), bk_free(g, y);
        dev_bytes -= (size_t)M * M * 2;
        peak = gemms * 2.0 * M * (double)M * M / best;
    }

    /* decode GEMV alone: every shape of the model, T = 1 */
    double gemv_token[2] = { 0, 0 };
    if (!model_only) {
        static const int shapes[][3] = { /* N, K, matrices per token */
            { 4096, 4096, 64 }, { 1024, 4096, 64 }, { 14336, 4096, 64 }, { 4096, 14336, 32 }, { 128256, 4096, 1 } };
        struct backend *gv[2];
        for (int v = 0; v < 2; v++) {
            if (qbits) setenv("VLLMC_CUDA_QGEMV", v ? "f32" : "int8", 1);
            else setenv("VLLMC_CUDA_GEMV", v ? "1" : "0", 1);
            if (backend_cuda_create(&gv[v], 0, 1, err, sizeof err)) die("create");
        }
        unsetenv("VLLMC_CUDA_GEMV"), unsetenv("VLLMC_CUDA_QGEMV");
        float *x = dev_const(32 * 14336, 0.5f), *y = bk_alloc(g, (size_t)32 * 128256 * 4);
        const int nv = 2;
        if (qbits)
            printf("\n| decode GEMV, MLX %d-bit g64 (bf16 scales); bandwidth of codes + scales + biases; CUDA graphs "
                   "| T = 1, f32 activations (before) | T = 1 | T = 2 | T = 4 | T = 8 | T = 16 | T = 32 |\n"
                   "|---|---|---|---|---|---|---|---|\n",
                   qbits);
        else printf("\n| decode GEMV, bf16, T = 1 | variant 0 (split rows) | variant 1 (warp per row) |\n|---|---|---|\n");
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            const int N = shapes[i][0], K = shapes[i][1];
            struct bk_weight w[64];
            w[0] = wmodel(N, K);
            const size_t bytes = bk_weight_bytes(&w[0]);
            int copies = (int)((((size_t)256 << 20) + bytes - 1) / bytes);
            copies = copies > 64 ? 64 : copies; /* 64 x the smallest (2.4 MB at 4 bits) still overflows L2 */
            for (int cI = 1; cI < copies; cI++) w[cI] = wmodel(N, K);
            double us[2];
            if (qbits) { /* the quantized GEMV as decode runs it: replays of a recorded graph */
                static const int Tq[] = { 0, 1, 2, 4, 8, 16, 32 }; /* 0: T = 1 with f32 activations */
                printf("| %d x %d (%.1f MB) |", N, K, bytes / 1e6);
                for (int ti = 0; ti < 7; ti++) {
                    struct backend *b = gv[ti ? 0 : 1];
                    const int T = Tq[ti] ? Tq[ti] : 1, reps = copies < 8 ? 64 / copies : 8;
                    for (int r = 0; r < copies; r++) bk_matmul(b, y, x, &w[r], T); /* scratch grown before recording */
                    void *gr = NULL;
                    if (b->ops->graph_begin(b) == 0) {
                        for (int r = 0; r < copies; r++) bk_matmul(b, y, x, &w[r], T);
                        gr = b->ops->graph_end(b);
                    }
                    if (!gr) die("graph");
                    float f;
                    b->ops->graph_launch(b, gr);
                    if (bk_download(b, &f, y, 4, err, sizeof err)) die("gemv");
                    double t0 = now();
                    for (int r = 0; r < reps; r++) b->ops->graph_launch(b, gr);
                    if (bk_download(b, &f, y, 4, err, sizeof err)) die("gemv");
                    const double t = (now() - t0) / (reps * copies) * 1e6;
                    b->ops->graph_free(b, gr);
                    printf(" %.1f us, %.0f GB/s |", t, bytes / t / 1e3);
                    if (T == 1) gemv_token[ti ? 0 : 1] += t * (shapes[i][2] == 1 ? 1 : shapes[i][2] * layers / 32.0);
                }
                printf("\n");
                for (int cI = 0; cI < copies; cI++) wfree(&w[cI]);
                continue;
            }
            for (int v = 0; v < nv; v++) {
                const int reps = 8 * copies < 64 ? 64 : 8 * copies;
                for (int r = 0; r < copies; r++) bk_matmul(gv[v], y, x, &w[r], 1);
                float f;
                if (bk_download(gv[v], &f, y, 4, err, sizeof err)) die("gemv");
                double t0 = now();
                for (int r = 0; r < reps; r++) bk_matmul(gv[v], y, x, &w[r % copies], 1);
                if (bk_download(gv[v], &f, y, 4, err, sizeof err)) die("gemv");
                us[v] = (now() - t0) / reps * 1e6;
                const double per_token = shapes[i][2] == 1 ? 1 : shapes[i][2] * layers / 32.0; /* the head once */
                gemv_token[v] += us[v] * per_token;
            }
            printf("| %d x %d (%.0f MB) | %.1f us, %.0f GB/s | %.1f us, %.0f GB/s |\n", N, K, bytes / 1e6, us[0],
                       bytes / us[0] / 1e3, us[1], bytes / us[1] / 1e3);
            for (int cI = 0; cI < copies; cI++) wfree(&w[cI]);
        }
        if (qbits)
            printf("| all GEMVs of one token (32 layers + head), T = 1 | %.2f ms | %.2f ms | | | | | |\n",
                   gemv_token[1] / 1e3, gemv_token[0] / 1e3);
        else
            printf("| all GEMVs of one token (32 layers + head) | %.2f ms | %.2f ms |\n", gemv_token[0] / 1e3,
                   gemv_token[1] / 1e3);
        bk_free(g, x), bk_free(g, y);
        bk_destroy(gv[0]), bk_destroy(gv[1]);
    }

    /* the model */
    struct model *m = xcalloc(1, sizeof *m);
    struct hparams *hp = &m->hp;
    hp->family = FAM_LLAMA;
    snprintf(hp->arch, sizeof hp->arch, "LlamaForCausalLM");
    hp->n_layer = layers, hp->d_model = 4096, hp->n_head = 32, hp->n_kv_head = 8, hp->head_dim = 128;
    hp->d_ff = 14336, hp->n_vocab = 128256, hp->max_pos = 131072, hp->norm_eps = 1e-5f, hp->dtype = DT_BF16;
    hp->rot_dim = 128, hp->rope.type = ROPE_DEFAULT, hp->rope.theta = 500000;
    hp->act = BK_ACT_SILU, hp->emb_scale = 1, hp->resid_scale = 1, hp->attn_scale = 1.0f / sqrtf(128.0f);
    hp->logit_scale = 1;
    for (int i = 0; i < layers; i++) hp->layer_rope[i] = 1;
    m->bk = g;
    const int d = 4096, qd = 4096, kvd = 1024, F = 14336, V = 128256;
    m->tok_emb = wmodel(V, d);
    m->lm_head = wmodel(V, d);
    m->final_norm = dev_const((size_t)d, 1.0f);
    m->layers = xcalloc((size_t)layers, sizeof *m->layers);
    for (int l = 0; l < layers; l++) {
        struct layer_weights *L = &m->layers[l];
        L->wq = wmodel(qd, d), L->wk = wmodel(kvd, d), L->wv = wmodel(kvd, d), L->wo = wmodel(d, qd);
        L->w_gate = wmodel(F, d), L->w_up = wmodel(F, d), L->w_down = wmodel(d, F);
        L->attn_norm = dev_const((size_t)d, 1.0f), L->ffn_norm = dev_const((size_t)d, 1.0f);
    }
    m->inv_freq = xcalloc(64, sizeof(float));
    rope_inv_freq(&hp->rope, 128, hp->max_pos, 0, m->inv_freq, &m->rope_attn_factor);
    m->freq_host = xcalloc(128, sizeof(float));
    const double w_bytes = (double)dev_bytes; /* every weight is read once per step (codes, scales, biases) */
    const double mm_params = (double)layers * ((double)d * (qd + 2 * kvd) + (double)qd * d + 3.0 * d * F) + (double)V * d;

    /* KV: one sequence of P + G tokens, blocks of 16, bf16, block 0 the null block */
    const int B = 16, nblk = (P + G + B - 1) / B + 1;
    size_t lb = (size_t)nblk * B * kvd * 2;
    char *kvmem = bk_alloc(g, 2 * (size_t)layers * lb);
    if (!kvmem) die("kv alloc");
    struct bk_kv *kl = xcalloc((size_t)layers, sizeof *kl);
    for (int l = 0; l < layers; l++)
        kl[l] = (struct bk_kv){ .k = kvmem + 2 * (size_t)l * lb, .v = kvmem + (2 * (size_t)l + 1) * lb,
                                .dtype = DT_BF16, .num_blocks = nblk, .block_size = B, .n_kv_heads = 8,
                                .head_dim = 128 };
    struct model_kv kv = { .layers = kl, .n_layer = layers };
    int32_t *table = xmalloc((size_t)nblk * 4), *tok = xmalloc((size_t)P * 4), *pos = xmalloc((size_t)P * 4),
            *slot = xmalloc((size_t)P * 4);
    for (int i = 0; i < nblk - 1; i++) table[i] = 1 + i;
    for (int i = 0; i < P; i++) tok[i] = (int32_t)((i * 7919) % V), pos[i] = i, slot[i] = table[i / B] * B + i % B;
    float *logits = xmalloc((size_t)V * 4);

    /* prefill: P tokens in one step, logits of the last (twice: the first warms up) */
    double t_pf = 1e9;
    for (int r = 0; r < 2; r++) {
        int32_t qs[2] = { 0, P }, sl[1] = { P }, row = P - 1;
        struct model_batch b = { .n_tokens = P, .tokens = tok, .positions = pos, .slot_mapping = slot,
                                 .attn = { .n_seqs = 1, .query_start = qs, .seq_len = sl, .block_table = table,
                                           .max_blocks = nblk - 1 },
                                 .n_logits = 1, .logits_rows = &row };
        double t0 = now();
        if (model_forward(m, &b, &kv, logits, err, sizeof err)) die("prefill");
        t_pf = fmin(t_pf, now() - t0);
    }
    const double attn_flops = (double)layers * 4.0 * 32 * 128 * ((double)P * (P + 1) / 2);
    const double head = (double)V * d; /* the head runs for the last row only */
    const double pf_flops = 2.0 * (mm_params - head) * P + 2.0 * head + attn_flops;

    /* the other ops of a decode step, each run once per layer back to back
     * and then waited for: time per call, launch gaps included */
    if (!model_only) {
        float *x = dev_const((size_t)d, 0.5f), *h = dev_const((size_t)d, 0.1f), *q = dev_const((size_t)qd, 0.1f);
        float *k = dev_const((size_t)kvd, 0.1f), *v = dev_const((size_t)kvd, 0.1f), *att = dev_const((size_t)qd, 0);
        float *gt = dev_const((size_t)F, 0.1f), *u = dev_const((size_t)F, 0.1f), *a = dev_const((size_t)F, 0);
        int32_t hq[2] = { 0, 1 }, hs[1] = { P }, hpos[1] = { P - 1 };
        int32_t *dq = bk_alloc(g, 8), *ds = bk_alloc(g, 4), *dp = bk_alloc(g, 4), *dt = bk_alloc(g, (size_t)nblk * 4);
        if (bk_upload(g, dq, hq, 8, err, sizeof err) || bk_upload(g, ds, hs, 4, err, sizeof err) ||
            bk_upload(g, dp, hpos, 4, err, sizeof err) || bk_upload(g, dt, table, (size_t)nblk * 4, err, sizeof err))
            die("upload");
        struct bk_attn_batch ab = { .n_seqs = 1, .query_start = dq, .seq_len = ds, .block_table = dt,
                                    .max_blocks = nblk - 1, .max_seq_len = P, .max_query_len = 1 };
        struct bk_attn_params ap = { .n_heads = 32, .n_kv_heads = 8, .head_dim = 128, .scale = hp->attn_scale };
        struct bk_rope rp = { .inv_freq = m->inv_freq, .rot_dim = 128, .attn_factor = 1, .neox = true };
        printf("\n| decode op (T = 1, context %d), x %d layers | us per call |\n|---|---|\n", P, layers);
        const struct bk_qkv qa = { .q = q, .k = k, .v = v, .rope = &rp, .pos = dp, .slots = dp, .T = 1, .H = 32,
                                   .Hkv = 8, .D = 128 };
        for (int op = 0; op < 9; op++) {
            static const char *names[] = { "rmsnorm", "rope q + k", "kv_store", "attention", "add_scaled",
                                           "glu", "matmul wq (gemv)", "qkv_prep (rope q + k, kv_store fused)",
                                           "add_rmsnorm (add_scaled + rmsnorm fused)" };
            if ((op == 7 && !g->ops->qkv_prep) || (op == 8 && !g->ops->add_rmsnorm)) continue;
            double best_op = 1e9;
            for (int r = 0; r < 3; r++) {
                sync_dev();
                double t0 = now();
                for (int l = 0; l < layers; l++) {
                    switch (op) {
                    case 0: bk_rmsnorm(g, h, x, m->layers[l].attn_norm, 1, d, 1e-5f); break;
                    case 1: bk_rope(g, q, dp, 1, 32, 128, &rp), bk_rope(g, k, dp, 1, 8, 128, &rp); break;
                    case 2: bk_kv_store(g, &kl[l], k, v, dp, 1); break;
                    case 3: bk_attention(g, att, q, &kl[l], &ab, &ap); break;
                    case 4: bk_add_scaled(g, x, h, 1.0f, (size_t)d); break;
                    case 5: bk_glu(g, a, gt, u, 1, F, F, BK_ACT_SILU); break;
                    case 6: bk_matmul(g, q, h, &m->layers[l].wq, 1); break;
                    case 7: g->ops->qkv_prep(g, &kl[l], &qa); break;
                    case 8: g->ops->add_rmsnorm(g, x, att, 1.0f, h, m->layers[l].ffn_norm, 1, d, 1e-5f); break;
                    }
                }
                sync_dev();
                best_op = fmin(best_op, (now() - t0) / layers);
            }
            printf("| %s | %.1f |\n", names[op], best_op * 1e6);
        }
        float *bufs[] = { x, h, q, k, v, att, gt, u, a };
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) bk_free(g, bufs[i]);
        bk_free(g, dq), bk_free(g, ds), bk_free(g, dp), bk_free(g, dt);
    }

    /* decode: G steps of one token after the prompt */
    double t_dec = 0, kv_read = 0;
    for (int i = 0; i < G; i++) {
        int p = P + i;
        int32_t t1 = (int32_t)((p * 31) % V), p1 = p, s1 = table[p / B] * B + p % B, qs[2] = { 0, 1 }, sl[1] = { p + 1 },
                row = 0;
        struct model_batch b = { .n_tokens = 1, .tokens = &t1, .positions = &p1, .slot_mapping = &s1,
                                 .attn = { .n_seqs = 1, .query_start = qs, .seq_len = sl, .block_table = table,
                                           .max_blocks = nblk - 1 },
                                 .n_logits = 1, .logits_rows = &row };
        double t0 = now();
        if (model_forward(m, &b, &kv, logits, err, sizeof err)) die("decode");
        double dt = now() - t0;
        if (i >= 2) t_dec += dt, kv_read += (double)layers * 2 * (p + 1) * kvd * 2; /* the first two warm up */
    }
    const int timed = G - 2;
    const double per_tok = t_dec / timed, tps = 1.0 / per_tok;
    const double bytes_tok = w_bytes - (double)bk_weight_bytes(&m->tok_emb) /* the embedding table: one row read */ +
                             kv_read / timed;

    char wname[64];
    if (qbits) snprintf(wname, sizeof wname, "MLX %d-bit g64 weights (embedding and head too)", qbits);
    else snprintf(wname, sizeof wname, "bf16 weights");
    printf("\n| %s, Llama-3.1-8B shapes (%d layers), %s, bf16 KV | value |\n|---|---|\n", card, layers, wname);
    printf("| copy bandwidth (in-place scale of 4 GiB, read + write) | %.0f GB/s |\n", bandwidth / 1e9);
    printf("| GEMM peak (8192^3, as above) | %.0f TFLOP/s |\n", peak / 1e12);
    printf("| weights | %.2f GB |\n", w_bytes / 1e9);
    printf("| prefill %d tokens (one step) | %.1f ms, %.0f tok/s, %.0f TFLOP/s useful = %.0f%% of the GEMM peak |\n", P,
           t_pf * 1e3, P / t_pf, pf_flops / t_pf / 1e12, 100 * pf_flops / t_pf / peak);
    printf("| decode batch 1 (%d steps after the prompt) | %.2f ms/token, %.1f tok/s, %.2f GB read/token = %.0f GB/s "
           "= %.0f%% of copy bandwidth |\n",
           timed, per_tok * 1e3, tps, bytes_tok / 1e9, bytes_tok * tps / 1e9, 100 * bytes_tok * tps / bandwidth);
    bk_destroy(g);
    return 0;
}
