/* bench_kernels.c — matmul throughput of the CPU backend on Qwen3-0.6B shapes
 * (hidden 1024, ff 3072, q 2048, kv 1024, vocab 151936), next to a plain
 * memory-read probe run in the same process with the same threads, so decode
 * GB/s can be read as a fraction of what the machine streams.
 *
 *   bench_kernels [threads] [isa ...]     (default: physical cores; every set)
 *
 * "cold" decode rotates over enough copies of the weight to overflow the
 * last-level cache, as a real model's 28 layers do; "hot" reuses one copy.
 * A plain main() printing a table, not a test. */
#include "backend/backend.h"
#include "util/threadpool.h"

#include <stdio.h>
#include <stdlib.h>

struct probe_ctx { const uint64_t *buf; size_t n; uint64_t sum[64]; };

/* Read a slice with the widest loads the CPU has, four independent
 * accumulators so the adds never throttle the loads. */
#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static uint64_t probe_sum512(const uint64_t *p, size_t n) {
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        a = _mm512_add_epi64(a, _mm512_loadu_si512(p + i));
        b = _mm512_add_epi64(b, _mm512_loadu_si512(p + i + 8));
        c = _mm512_add_epi64(c, _mm512_loadu_si512(p + i + 16));
        d = _mm512_add_epi64(d, _mm512_loadu_si512(p + i + 24));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d)));
}
#endif
static uint64_t probe_sum(const uint64_t *p, size_t n) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) return probe_sum512(p, n);
#endif
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) { a += p[i]; b += p[i + 1]; c += p[i + 2]; d += p[i + 3]; }
    return a + b + c + d;
}

static void probe_fn(void *arg, int ith, int nth) {
    struct probe_ctx *c = arg;
    size_t i0 = c->n * (size_t)ith / (size_t)nth, i1 = c->n * (size_t)(ith + 1) / (size_t)nth;
    c->sum[ith] = probe_sum(c->buf + i0, i1 - i0);
}

static double probe_gbs(int nth) {
    const size_t bytes = (size_t)1 << 30;
    uint64_t *buf = xmalloc(bytes);
    memset(buf, 1, bytes);
    struct threadpool *p = threadpool_create(nth);
    struct probe_ctx c = { buf, bytes / 8, { 0 } };
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = time_now();
        threadpool_run(p, probe_fn, &c);
        double gbs = (double)bytes / (time_now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    threadpool_destroy(p);
    free(buf);
    return best;
}

static void empty_fn(void *arg, int ith, int nth) { (void)arg; (void)ith; (void)nth; }

/* Round trip of one threadpool_run with nothing to do, workers spinning. */
static double dispatch_us(int nth) {
    struct threadpool *p = threadpool_create(nth);
    const int n = 100000;
    threadpool_run(p, empty_fn, NULL);
    double t0 = time_now();
    for (int i = 0; i < n; i++) threadpool_run(p, empty_fn, NULL);
    double us = (time_now() - t0) / n * 1e6;
    threadpool_destroy(p);
    return us;
}

static void *rand_weight(enum dtype dt, size_t n) {
    void *p = xmalloc(n * dtype_size(dt));
    unsigned long long s = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        float v = (float)((s >> 40) * (1.0 / (1ull << 24))) - 0.5f;
        if (dt == DT_BF16) ((uint16_t *)p)[i] = f32_to_bf16(v);
        else if (dt == DT_F16) ((uint16_t *)p)[i] = f32_to_f16(v);
        else ((float *)p)[i] = v;
    }
    return p;
}

/* Seconds per call, best of a few rounds over `copies` weights in turn. */
static double time_matmul(struct backend *bk, struct bk_weight *w, int copies, int T, float *y, const float *x,
                          double min_s) {
    double best = 1e30;
    for (int round = 0; round < 3; round++) {
        int calls = 0;
        double t0 = time_now(), el;
        do {
            bk_matmul(bk, y, x, &w[calls % copies], T);
            calls++;
            el = time_now() - t0;
        } while (el < min_s || calls < copies);
        if (el / calls < best) best = el / calls;
    }
    return best;
}

struct shape { const char *name; int N, K; };

int main(int argc, char **argv) {
    int nth = argc > 1 ? atoi(argv[1]) : 0;
    if (nth <= 0) nth = cpu_physical_cores();
    static const char *def_isas[] = { "avx512", "avx512-exact", "avx2", "neon", "portable" };
    const char **isas = argc > 2 ? (const char **)argv + 2 : def_isas;
    int n_isas = argc > 2 ? argc - 2 : (int)(sizeof def_isas / sizeof *def_isas);

    double probe = probe_gbs(nth);
    printf("threads %d, memory read probe %.1f GB/s, pool dispatch %.2f us\n\n", nth, probe, dispatch_us(nth));

    static const struct shape shapes[] = {
        { "qkv 4096x1024", 4096, 1024 }, { "o 1024x2048", 1024, 2048 }, { "gate_up 6144x1024", 6144, 1024 },
        { "ff 3072x1024", 3072, 1024 },  { "down 1024x3072", 1024, 3072 }, { "lm_head 151936x1024", 151936, 1024 },
    };
    static const int Ts[] = { 1, 4, 8, 16, 32, 64, 512 };
    static const enum dtype dts[] = { DT_BF16, DT_F16, DT_F32 };
    const int Tmax = 512;
    float *x = xmalloc((size_t)Tmax * 3072 * sizeof(float));
    float *y = xmalloc((size_t)Tmax * 151936 * sizeof(float));
    for (size_t i = 0; i < (size_t)Tmax * 3072; i++) x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;

    printf("%-13s %-5s %-20s %4s %10s %10s %8s %9s\n", "isa", "dtype", "shape", "T", "ms/call", "GB/s", "%probe",
           "GFLOP/s");
    for (int ii = 0; ii < n_isas; ii++) {
        struct backend *bk;
        char err[256];
        if (backend_cpu_create(&bk, nth, isas[ii], err, sizeof err) != 0) continue;
        for (size_t di = 0; di < sizeof dts / sizeof *dts; di++) {
            const enum dtype dt = dts[di];
            for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
                const struct shape *sh = &shapes[si];
                const size_t wbytes = (size_t)sh->N * sh->K * dtype_size(dt);
                /* enough copies to overflow a large LLC (~600 MB), at most 2 GB total */
                int copies = (int)((600u << 20) / wbytes) + 1;
                if ((size_t)copies * wbytes > ((size_t)2 << 30)) copies = 1;
                if (copies > 64) copies = 64;
                struct bk_weight w[64];
                for (int c = 0; c < copies; c++) w[c] = (struct bk_weight){ .dtype = dt, .rows = sh->N, .cols = sh->K, .data = rand_weight(dt, (size_t)sh->N * sh->K) };
                for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++) {
                    const int T = Ts[ti];
                    if (strcmp(isas[ii], "portable") == 0 && T > 8) continue; /* the reference is slow */
                    if (dt != DT_BF16 && T > 8 && T < 512) continue; /* batched decode: the bf16 paths only */
                    if (T == 512 && sh->N > 10000) continue;
                    double s = time_matmul(bk, w, T >= 64 ? 1 : copies, T, y, x, T >= 64 ? 1.0 : 0.5);
                    double gbs = (double)wbytes / s / 1e9, gflops = 2.0 * T * sh->N * sh->K / s / 1e9;
                    printf("%-13s %-5s %-20s %4d %10.3f %10.1f %7.0f%% %9.1f\n", isas[ii], dtype_name(dt), sh->name, T,
                           s * 1e3, gbs, 100 * gbs / probe, gflops);
                    fflush(stdout);
                }
                for (int c = 0; c < copies; c++) free((void *)w[c].data);
            }
        }
        bk_destroy(bk);
    }
    free(x);
    free(y);
    return 0;
}
