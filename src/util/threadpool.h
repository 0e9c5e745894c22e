/* threadpool.h — a fixed pool of worker threads for data-parallel kernels.
 *
 * threadpool_run(pool, fn, ctx) calls fn(ctx, ith, nth) once on each of the
 * nth threads (ith = 0 is the caller itself) and returns when all calls are
 * done. It is meant to be called many times per decode step (every matmul,
 * norm and attention), so dispatch latency matters: idle workers spin on a
 * generation counter for a short while, then sleep on a condition variable so
 * an idle server burns no CPU.
 *
 * What this does not do: no task queue, no work stealing, no nesting. One
 * thread at a time may call threadpool_run on a given pool, and fn must not
 * call threadpool_run on the same pool. Partitioning work is fn's business. */
#ifndef VLLMC_THREADPOOL_H
#define VLLMC_THREADPOOL_H

struct threadpool;

typedef void (*threadpool_fn)(void *ctx, int ith, int nth);

/* n_threads counts the caller; n_threads <= 1 makes a pool with no workers
 * (threadpool_run then calls fn inline). Returns NULL only if no thread could
 * be started at all; fewer workers than asked is reported by threadpool_size. */
struct threadpool *threadpool_create(int n_threads);
void threadpool_destroy(struct threadpool *pool); /* NULL is fine */
int threadpool_size(const struct threadpool *pool); /* nth, including the caller */
void threadpool_run(struct threadpool *pool, threadpool_fn fn, void *ctx);

/* Physical cores of this machine (SMT siblings counted once), from
 * /sys/devices/system/cpu/cpu*\/topology; falls back to the number of online
 * logical CPUs, and never returns less than 1. */
int cpu_physical_cores(void);

#endif
