/* bench_bw.c — STREAM-style read-bandwidth probe: how fast can T threads
 * stream a buffer far larger than the last-level cache from memory?
 *
 *   bench_bw [--gib 2] [--threads 1] [--reps 5]
 *
 * The buffer is written once (so every page is faulted in and backed), then
 * read end to end `reps` times by T pthreads, each summing a contiguous slice
 * with the widest loads the CPU has (512-bit, else 256-bit; four
 * accumulators, so the adds never limit the loads): the same loads the
 * decode kernels use. Plain 4 KiB pages, as the mmapped weights get.
 * Prints the best repetition in GB/s (1e9 bytes/s), as STREAM does, on one
 * line: "bw threads=T gib=G best_gbs=X mean_gbs=Y".
 *
 * This is the ceiling that decode, which streams every weight once per token,
 * is compared against. Does not: measure writes or copies (decode only reads
 * weights), or pin threads (the machine is a small VM; the OS places them). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/util.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

struct worker {
    const uint64_t *p;
    size_t n;       /* uint64 words */
    uint64_t sum;
    pthread_barrier_t *bar;
};

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t sum_avx512(const uint64_t *p, size_t n) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(p + i)));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(p + i + 8)));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(p + i + 16)));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(p + i + 24)));
    }
    uint64_t s = (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
    for (; i < n; i++) s += p[i];
    return s;
}

__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 12)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t t[4];
    _mm256_storeu_si256((__m256i *)t, a0);
    uint64_t s = t[0] + t[1] + t[2] + t[3];
    for (; i < n; i++) s += p[i];
    return s;
}
#endif

static uint64_t sum_portable(const uint64_t *p, size_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

static int isa_level; /* 2 = avx512f, 1 = avx2, 0 = portable */

static void *worker_run(void *arg) {
    struct worker *w = arg;
    pthread_barrier_wait(w->bar);
#if defined(__x86_64__)
    if (isa_level == 2) {
        w->sum = sum_avx512(w->p, w->n);
        return NULL;
    }
    if (isa_level == 1) {
        w->sum = sum_avx2(w->p, w->n);
        return NULL;
    }
#endif
    w->sum = sum_portable(w->p, w->n);
    return NULL;
}

int main(int argc, char **argv) {
    double gib = 2;
    int threads = 1, reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gib") && i + 1 < argc) gib = atof(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_bw [--gib G] [--threads T] [--reps N]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 256 || reps < 1 || gib <= 0) return 2;
#if defined(__x86_64__)
    isa_level = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
    size_t bytes = (size_t)(gib * 1073741824.0) & ~(size_t)4095;
    size_t words = bytes / 8;
    uint64_t *buf = aligned_alloc(4096, bytes);
    if (!buf) {
        fprintf(stderr, "bench_bw: cannot allocate %zu bytes\n", bytes);
        return 1;
    }
    for (size_t i = 0; i < words; i++) buf[i] = i;

    /* slices of whole 64-byte lines, one per thread */
    size_t per = (words / threads) & ~(size_t)31;
    double best = 0, total = 0;
    uint64_t check = 0;
    for (int r = 0; r < reps; r++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, (unsigned)threads + 1);
        struct worker w[256];
        pthread_t tid[256];
        for (int t = 0; t < threads; t++) {
            w[t] = (struct worker){ .p = buf + (size_t)t * per, .n = t == threads - 1 ? words - (size_t)t * per : per,
                                    .bar = &bar };
            pthread_create(&tid[t], NULL, worker_run, &w[t]);
        }
        pthread_barrier_wait(&bar);
        double t0 = time_now();
        for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
        double dt = time_now() - t0;
        pthread_barrier_destroy(&bar);
        for (int t = 0; t < threads; t++) check += w[t].sum;
        double gbs = (double)bytes / dt / 1e9;
        total += gbs;
        if (gbs > best) best = gbs;
    }
    /* the sum is printed so the reads cannot be optimised away */
    static const char *isa_names[] = { "portable", "avx2", "avx512" };
    printf("bw threads=%d gib=%.2f loads=%s best_gbs=%.2f mean_gbs=%.2f check=%llx\n", threads,
           (double)bytes / 1073741824.0, isa_names[isa_level], best, total / reps, (unsigned long long)(check & 0xffff));
    free(buf);
    return 0;
}
