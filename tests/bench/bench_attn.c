/* bench_attn.c — the CUDA backend's attention op alone (bk_attention over a
 * paged bf16 KV cache, blocks of 16, random data), each kernel the backend
 * has: the warp-per-row kernel (VLLMC_CUDA_ATTN=warp) and the tensor-core
 * kernel, as it chooses its tile shape (fa) and with each one fixed (fa0: 128
 * rows x 64 keys, fa1: 64 x 64, fa2: 128 x 32).
 * Shapes: causal prefill of P tokens (default 4096) at D 64/128/256 with the
 * Llama-3.1-8B head counts (32/8; 16/8 at D 256), a 16K prefill, a chunk of
 * 512 queries after 3584 cached tokens, and a mixed step (a 1024-query chunk
 * + 64 decode rows at 4096). Prints time per call, causal TFLOP/s (4 * D * H
 * * sum over queries of the keys it sees: 4 T^2/2 D H for a whole prompt) and
 * the largest difference from the warp kernel's output. No pass/fail.
 *
 * First the decode kernels (attn_dec.cu's variants, some at split targets
 * of 1 and 3 CTAs per multiprocessor, against the warp kernel): batch 1 at context 4096 and
 * 32768 (D 64/128/256, GQA 4 and 8), 8 sequences of 4 query rows, batch 64
 * and 256 at context 600; time per call (20 calls back to back) and K/V
 * bytes read per second.
 *
 * Usage: bench_attn [-P prompt] [-d] (-d: decode only). Without CUDA it says
 * so and exits 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"

static char err[512];
static const char *modes[] = { "warp", "fa", "fa0", "fa1", "fa2" };
#define N_MODES 5
static struct backend *bks[N_MODES];
/* decode: the warp kernel, then attn_dec.cu's variants (VLLMC_CUDA_DEC 1:
 * registers, 2: cp.async tiles, 3: tensor cores, 4: three stages) at split
 * targets (VLLMC_CUDA_DEC_CTAS, CTAs per multiprocessor; the default 2) */
static const char *dmodes[] = { "warp", "v1", "v2", "v2 c3", "v3", "v3 c1", "v3 c3", "v4", "v4 c3" };
static const char *ddec[] = { "0", "1", "2", "2", "3", "3", "3", "4", "4" };
static const char *dctas[] = { NULL, NULL, NULL, "3", NULL, "1", "3", NULL, "3" };
#define N_DMODES 9
static struct backend *dbks[N_DMODES];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_attn: %s: %s\n", what, err);
    exit(1);
}

static void *dev_up(const void *h, size_t bytes) {
    void *d = bk_alloc(bks[0], bytes);
    if (!d || bk_upload(bks[0], d, h, bytes, err, sizeof err)) die("upload");
    return d;
}

static unsigned long long rs = 88172645463325252ull;
static float urand(void) {
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (float)(rs >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

static void sync_bk(struct backend *g, float *probe) {
    float f;
    if (bk_download(g, &f, probe, sizeof f, err, sizeof err)) die("sync");
}

/* S sequences: ctx[s] tokens after the step, nq[s] of them queries now;
 * dec: the decode kernels (time per call of 20 back to back, K/V bytes read
 * per second) instead of the prefill ones */
static void run_case_set(const char *name, int S, const int *ctx, const int *nq, int H, int Hkv, int D,
                         bool with_warp, bool dec) {
    const int B = 16;
    int max_blocks = 0, max_q = 0, max_len = 0, T = 0;
    double flops = 0;
    for (int s = 0; s < S; s++) {
        max_blocks = ctx[s] / B + 1 > max_blocks ? ctx[s] / B + 1 : max_blocks;
        max_q = nq[s] > max_q ? nq[s] : max_q;
        max_len = ctx[s] > max_len ? ctx[s] : max_len;
        for (int i = 0; i < nq[s]; i++) flops += 4.0 * D * H * (double)(ctx[s] - nq[s] + i + 1);
        T += nq[s];
    }
    const int nblocks = 1 + S * max_blocks;
    int32_t *qs = malloc((size_t)(S + 1) * 4), *bt = malloc((size_t)S * max_blocks * 4);
    qs[0] = 0;
    for (int s = 0; s < S; s++) qs[s + 1] = qs[s] + nq[s];
    for (int i = 0; i < S * max_blocks; i++) bt[i] = 1 + (int32_t)((i * 7919L) % (S * max_blocks)); /* scattered */
    const size_t kvn = (size_t)nblocks * B * Hkv * D, qn = (size_t)T * H * D;
    uint16_t *kh = malloc(kvn * 2);
    for (size_t i = 0; i < kvn; i++) kh[i] = f32_to_bf16(urand());
    float *qh = malloc(qn * 4);
    for (size_t i = 0; i < qn; i++) qh[i] = urand() * 2.0f;
    struct bk_kv kv = { .dtype = DT_BF16, .num_blocks = nblocks, .block_size = B, .n_kv_heads = Hkv, .head_dim = D };
    kv.k = dev_up(kh, kvn * 2);
    for (size_t i = 0; i < kvn; i++) kh[i] = f32_to_bf16(urand());
    kv.v = dev_up(kh, kvn * 2);
    struct bk_attn_batch ab = { .n_seqs = S, .max_blocks = max_blocks, .max_seq_len = max_len, .max_query_len = max_q };
    ab.query_start = dev_up(qs, (size_t)(S + 1) * 4);
    ab.seq_len = dev_up(ctx, (size_t)S * 4);
    ab.block_table = dev_up(bt, (size_t)S * max_blocks * 4);
    struct bk_attn_params ap = { .n_heads = H, .n_kv_heads = Hkv, .head_dim = D, .scale = 1.0f / sqrtf((float)D) };
    float *q = dev_up(qh, qn * 4), *out = bk_alloc(bks[0], qn * 4);
    float *ref = malloc(qn * 4), *got = malloc(qn * 4);
    if (!out) die("alloc");
    bool have_ref = false;
    double kv_bytes = 0;
    for (int s = 0; s < S; s++) kv_bytes += 2.0 * ctx[s] * Hkv * D * 2;
    printf("| %s, H %d/%d, D %d |", name, H, Hkv, D);
    for (int m = with_warp ? 0 : 1; m < (dec ? N_DMODES : N_MODES); m++) {
        if (!dec && D == 256 && m >= 3) break; /* D 256 has one tile shape */
        struct backend *g = dec ? dbks[m] : bks[m];
        bk_attention(g, out, q, &kv, &ab, &ap); /* warm-up (and the output compared) */
        sync_bk(g, out);
        if (bk_download(g, m == 0 ? ref : got, out, qn * 4, err, sizeof err)) die("download");
        double diff = 0;
        if (m == 0) have_ref = true;
        else if (have_ref)
            for (size_t i = 0; i < qn; i++) diff = fmax(diff, fabs((double)got[i] - ref[i]));
        const int reps = m == 0 ? 2 : dec ? 5 : 10, inner = dec ? 20 : 1;
        double best = 1e9;
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            for (int i = 0; i < inner; i++) bk_attention(g, out, q, &kv, &ab, &ap);
            sync_bk(g, out);
            best = fmin(best, (now() - t0) / inner);
        }
        if (dec) printf(" %s %.1f us, %.0f GB/s", dmodes[m], best * 1e6, kv_bytes / best / 1e9);
        else printf(" %s %.3f ms, %.0f TFLOP/s", modes[m], best * 1e3, flops / best / 1e12);
        if (m > 0 && have_ref) printf(" (max diff %.1e)", diff);
        printf(" |");
    }
    printf("\n");
    bk_free(bks[0], kv.k), bk_free(bks[0], kv.v), bk_free(bks[0], (void *)ab.query_start);
    bk_free(bks[0], (void *)ab.seq_len), bk_free(bks[0], (void *)ab.block_table), bk_free(bks[0], q);
    bk_free(bks[0], out);
    free(qs), free(bt), free(kh), free(qh), free(ref), free(got);
}

static void run_case(const char *name, int S, const int *ctx, const int *nq, int H, int Hkv, int D, bool with_warp) {
    run_case_set(name, S, ctx, nq, H, Hkv, D, with_warp, false);
}

/* S sequences of ctx tokens, nq query rows each, through the decode kernels */
static void run_decode(const char *name, int S, int ctx, int nq, int H, int Hkv, int D) {
    int *c = malloc((size_t)S * sizeof(int)), *n = malloc((size_t)S * sizeof(int));
    for (int s = 0; s < S; s++) c[s] = ctx, n[s] = nq;
    run_case_set(name, S, c, n, H, Hkv, D, true, true);
    free(c), free(n);
}

int main(int argc, char **argv) {
    int P = 4096, opt;
    bool only_dec = false;
    while ((opt = getopt(argc, argv, "P:d")) != -1) {
        if (opt == 'P') P = atoi(optarg);
        else if (opt == 'd') only_dec = true;
        else return 2;
    }
    for (int m = 0; m < N_MODES; m++) {
        setenv("VLLMC_CUDA_ATTN", modes[m], 1);
        if (backend_cuda_create(&bks[m], 0, 1, err, sizeof err)) {
            printf("bench_attn: skipped (%s)\n", err);
            return 0;
        }
    }
    unsetenv("VLLMC_CUDA_ATTN");
    for (int m = 0; m < N_DMODES; m++) {
        if (m == 0) setenv("VLLMC_CUDA_ATTN", "warp", 1);
        if (dctas[m]) setenv("VLLMC_CUDA_DEC_CTAS", dctas[m], 1);
        if (ddec[m]) setenv("VLLMC_CUDA_DEC", ddec[m], 1);
        if (backend_cuda_create(&dbks[m], 0, 1, err, sizeof err)) die("create");
        unsetenv("VLLMC_CUDA_ATTN");
        unsetenv("VLLMC_CUDA_DEC_CTAS");
        unsetenv("VLLMC_CUDA_DEC");
    }
    printf("| %s: decode attention alone, bf16 paged KV (blocks of 16) | time per call (20 back to back), K/V read "
           "per second, per kernel |\n|---|---|\n",
           backend_cuda_name(bks[0]));
    run_decode("batch 1, context 4096", 1, 4096, 1, 32, 8, 128);
    run_decode("batch 1, context 32768", 1, 32768, 1, 32, 8, 128);
    run_decode("batch 1, context 4096", 1, 4096, 1, 64, 8, 128);
    run_decode("batch 1, context 4096", 1, 4096, 1, 32, 8, 64);
    run_decode("batch 1, context 4096", 1, 4096, 1, 16, 8, 256);
    run_decode("batch 8 x 4 query rows, context 4096", 8, 4096, 4, 32, 8, 128);
    run_decode("batch 64, context 600", 64, 600, 1, 32, 8, 128);
    run_decode("batch 256, context 600", 256, 600, 1, 32, 8, 128);
    printf("\n");
    if (only_dec) goto done;
    printf("| %s: attention alone, bf16 paged KV (blocks of 16) | time, causal TFLOP/s per kernel |\n|---|---|\n",
           backend_cuda_name(bks[0]));
    {
        int c[1] = { P }, n[1] = { P };
        run_case("prefill", 1, c, n, 32, 8, 128, true);
        run_case("prefill", 1, c, n, 32, 8, 64, true);
        run_case("prefill", 1, c, n, 16, 8, 256, true);
    }
    {
        int c[1] = { 4 * P }, n[1] = { 4 * P };
        run_case("prefill x4", 1, c, n, 32, 8, 128, false);
    }
    {
        int c[1] = { P }, n[1] = { 512 };
        run_case("chunk of 512 after the rest", 1, c, n, 32, 8, 128, true);
    }
    {
        int c[65], n[65];
        c[0] = P / 2, n[0] = P / 4;
        for (int s = 1; s < 65; s++) c[s] = P, n[s] = 1;
        run_case("mixed: P/4-query chunk + 64 decode rows at P", 65, c, n, 32, 8, 128, true);
    }
done:
    for (int m = 0; m < N_MODES; m++) bk_destroy(bks[m]);
    for (int m = 0; m < N_DMODES; m++) bk_destroy(dbks[m]);
    return 0;
}
