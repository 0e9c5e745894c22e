/* threadpool.c — see threadpool.h.
 *
 * Protocol: the caller publishes (fn, ctx), sets `pending` to the number of
 * workers and bumps `gen`. Each worker remembers the last generation it ran;
 * on seeing a new one it runs its share and decrements `pending`. The caller
 * runs share 0 and then spins until `pending` is 0. Sleeping workers are
 * counted in `sleepers` (changed only under the mutex) so the caller takes the
 * mutex and broadcasts only when someone actually sleeps: with seq_cst order
 * on gen and sleepers, either the worker sees the new gen before waiting or
 * the caller sees it asleep and wakes it. */
#include "util/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

/* How long an idle worker spins before sleeping. Ops of one step follow each
 * other within microseconds; a gap this long means the engine is idle. */
#define SPIN_NS 300000

struct worker {
    struct threadpool *pool;
    int ith;
    pthread_t th;
};

struct threadpool {
    int nth; /* including the caller */
    struct worker *workers; /* [nth - 1] */
    _Alignas(64) atomic_uint gen;
    _Alignas(64) atomic_int pending;
    atomic_int sleepers;
    atomic_bool stop;
    threadpool_fn fn;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Wait until pool->gen differs from seen; returns the new generation. */
static unsigned worker_wait(struct threadpool *p, unsigned seen) {
    uint64_t t0 = 0;
    for (unsigned i = 1;; i++) {
        unsigned g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen) return g;
        cpu_relax();
        if ((i & 255) == 0) {
            uint64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) break;
        }
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    unsigned g;
    while ((g = atomic_load(&p->gen)) == seen) pthread_cond_wait(&p->cv, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct threadpool *p = w->pool;
    unsigned seen = 0; /* gen at creation: a run may start before this thread does */
    for (;;) {
        seen = worker_wait(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        p->fn(p->ctx, w->ith, p->nth);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
    return NULL;
}

static void pool_kick(struct threadpool *p) {
    atomic_fetch_add(&p->gen, 1); /* seq_cst: pairs with the sleepers check */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

struct threadpool *threadpool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    struct threadpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->nth = 1;
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) return p;
        for (int i = 1; i < n_threads; i++) {
            struct worker *w = &p->workers[i - 1];
            w->pool = p;
            w->ith = i;
            if (pthread_create(&w->th, NULL, worker_main, w) != 0) break;
            p->nth = i + 1;
        }
    }
    return p;
}

void threadpool_destroy(struct threadpool *p) {
    if (!p) return;
    atomic_store(&p->stop, true);
    pool_kick(p);
    for (int i = 1; i < p->nth; i++) pthread_join(p->workers[i - 1].th, NULL);
    free(p->workers);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int threadpool_size(const struct threadpool *p) { return p ? p->nth : 1; }

void threadpool_run(struct threadpool *p, threadpool_fn fn, void *ctx) {
    if (!p || p->nth == 1) { fn(ctx, 0, 1); return; }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->nth - 1, memory_order_relaxed);
    pool_kick(p); /* seq_cst increment also publishes fn, ctx and pending */
    fn(ctx, 0, p->nth);
    /* Workers normally finish within microseconds of us; yield if one was
     * descheduled so we do not steal its core. */
    for (unsigned i = 1; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; i++) {
        cpu_relax();
        if ((i & 4095) == 0) sched_yield();
    }
}

/* First CPU number in a list like "0-3,8-11" or "5". */
static int first_cpu_in_list(const char *s) { return atoi(s); }

int cpu_physical_cores(void) {
    int count = 0;
    for (int cpu = 0; cpu < 4096; cpu++) {
        char path[128], buf[256];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list", cpu);
        FILE *f = fopen(path, "r");
        if (!f) {
            /* CPU numbers may have holes (offline CPUs); stop after a long gap. */
            if (cpu > 0 && count > 0 && cpu > 2 * count + 64) break;
            continue;
        }
        if (fgets(buf, sizeof buf, f) && first_cpu_in_list(buf) == cpu) count++; /* one per core */
        fclose(f);
    }
    if (count > 0) return count;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
