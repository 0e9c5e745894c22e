/* metrics.h — Prometheus /metrics under vLLM's names, and the periodic
 * throughput log line.
 *
 * Owns: the per-request histograms the server records (TTFT, inter-token
 * latency, e2e, queue/prefill/decode/inference time, prompt and generation
 * tokens, n and max_tokens parameters), guarded by one mutex. Gauges and
 * counters come from vllmc_engine_stats at render time. Does not: keep
 * per-request state (the HTTP layer passes finished timings in). */
#ifndef VLLMC_SERVER_METRICS_H
#define VLLMC_SERVER_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "vllmc.h"

struct histogram {
    const double *bounds; /* ascending upper bounds; +Inf is implicit */
    int n_bounds;
    uint64_t *counts;     /* n_bounds + 1, not cumulative */
    double sum;
    uint64_t count;
};

enum {
    H_TTFT, H_ITL, H_TPOT, H_E2E, H_QUEUE, H_PREFILL, H_DECODE, H_INFERENCE,
    H_PROMPT_TOKENS, H_GEN_TOKENS, H_PARAMS_N, H_PARAMS_MAX_TOKENS, H_COUNT
};

struct metrics {
    pthread_mutex_t mu;
    struct histogram h[H_COUNT];
    double *token_bounds;   /* 1-2-5 series up to max_model_len (vLLM's build_1_2_5_buckets) */
    char *model_label;      /* escaped model name */
    int block_size;
    int64_t kv_blocks;
    int prefix_caching;
};

/* One finished request, as the HTTP layer saw it (seconds, monotonic). */
struct request_timing {
    double t_arrival, t_scheduled, t_first_token, t_last_token, t_finished; /* t_scheduled 0: unknown */
    int n_prompt_tokens, n_generation_tokens; /* summed over the request's sequences */
    int n, max_tokens;
};

void metrics_init(struct metrics *m, const char *model_name, int max_model_len, int block_size, int64_t kv_blocks,
                  int prefix_caching);
void metrics_free(struct metrics *m);
void metrics_observe(struct metrics *m, int which, double v);
void metrics_observe_request(struct metrics *m, const struct request_timing *t);

/* The Prometheus text exposition (version 0.0.4); malloc'd, *len set. */
char *metrics_render(struct metrics *m, const struct vllmc_engine_stats *st, size_t *len);

/* The log line vLLM prints every few seconds, from two stats snapshots dt
 * seconds apart, into buf. */
void metrics_log_line(char *buf, size_t cap, const struct vllmc_engine_stats *prev,
                      const struct vllmc_engine_stats *cur, double dt);

#endif
