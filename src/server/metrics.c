/* metrics.c — Prometheus exposition with vLLM's metric names, types, help
 * texts and histogram buckets (vllm/v1/metrics/loggers.py); see metrics.h.
 * Every series carries model_name and engine="0" labels, as vLLM's do. */
#include "server/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

static const double TTFT_BUCKETS[] = { 0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                       1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0 };
static const double ITL_BUCKETS[] = { 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                      0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0 };
static const double REQUEST_BUCKETS[] = { 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                                          30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0 };
static const double N_BUCKETS[] = { 1, 2, 5, 10, 20 };

static const struct {
    const char *name, *help;
} HIST_INFO[H_COUNT] = {
    [H_TTFT] = { "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds." },
    [H_ITL] = { "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds." },
    [H_TPOT] = { "vllm:request_time_per_output_token_seconds",
                 "Histogram of time_per_output_token_seconds per request." },
    [H_E2E] = { "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds." },
    [H_QUEUE] = { "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request." },
    [H_PREFILL] = { "vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request." },
    [H_DECODE] = { "vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request." },
    [H_INFERENCE] = { "vllm:request_inference_time_seconds",
                      "Histogram of time spent in RUNNING phase for request." },
    [H_PROMPT_TOKENS] = { "vllm:request_prompt_tokens", "Number of prefill tokens processed." },
    [H_GEN_TOKENS] = { "vllm:request_generation_tokens", "Number of generation tokens processed." },
    [H_PARAMS_N] = { "vllm:request_params_n", "Histogram of the n request parameter." },
    [H_PARAMS_MAX_TOKENS] = { "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter." },
};

static void hist_init(struct histogram *h, const double *b, int n) {
    h->bounds = b;
    h->n_bounds = n;
    h->counts = xcalloc((size_t)n + 1, sizeof *h->counts);
}

void metrics_init(struct metrics *m, const char *model_name, int max_model_len, int block_size, int64_t kv_blocks,
                  int prefix_caching) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    /* vLLM's build_1_2_5_buckets(max_model_len): 1, 2, 5, 10, 20, 50, ... <= max */
    int nt = 0;
    m->token_bounds = xmalloc(64 * sizeof *m->token_bounds);
    for (double mag = 1; nt < 60; mag *= 10) {
        static const double m125[3] = { 1, 2, 5 };
        int stop = 0;
        for (int k = 0; k < 3; k++) {
            if (mag * m125[k] > max_model_len) { stop = 1; break; }
            m->token_bounds[nt++] = mag * m125[k];
        }
        if (stop) break;
    }
    if (nt == 0) m->token_bounds[nt++] = 1;
    hist_init(&m->h[H_TTFT], TTFT_BUCKETS, (int)ARRAY_LEN(TTFT_BUCKETS));
    hist_init(&m->h[H_ITL], ITL_BUCKETS, (int)ARRAY_LEN(ITL_BUCKETS));
    hist_init(&m->h[H_TPOT], ITL_BUCKETS, (int)ARRAY_LEN(ITL_BUCKETS));
    for (int k = H_E2E; k <= H_INFERENCE; k++) hist_init(&m->h[k], REQUEST_BUCKETS, (int)ARRAY_LEN(REQUEST_BUCKETS));
    hist_init(&m->h[H_PROMPT_TOKENS], m->token_bounds, nt);
    hist_init(&m->h[H_GEN_TOKENS], m->token_bounds, nt);
    hist_init(&m->h[H_PARAMS_N], N_BUCKETS, (int)ARRAY_LEN(N_BUCKETS));
    hist_init(&m->h[H_PARAMS_MAX_TOKENS], m->token_bounds, nt);
    /* label value escaping: backslash, double quote, newline */
    size_t n = strlen(model_name);
    m->model_label = xmalloc(2 * n + 1);
    char *o = m->model_label;
    for (size_t i = 0; i < n; i++) {
        char c = model_name[i];
        if (c == '\\' || c == '"') *o++ = '\\', *o++ = c;
        else if (c == '\n') *o++ = '\\', *o++ = 'n';
        else *o++ = c;
    }
    *o = 0;
    m->block_size = block_size;
    m->kv_blocks = kv_blocks;
    m->prefix_caching = prefix_caching;
}

void metrics_free(struct metrics *m) {
    for (int k = 0; k < H_COUNT; k++) free(m->h[k].counts);
    free(m->token_bounds);
    free(m->model_label);
    pthread_mutex_destroy(&m->mu);
}

static void hist_add(struct histogram *h, double v) {
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

void metrics_observe(struct metrics *m, int which, double v) {
    pthread_mutex_lock(&m->mu);
    hist_add(&m->h[which], v);
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe_request(struct metrics *m, const struct request_timing *t) {
    double end = t->t_finished;
    double first = t->t_first_token > 0 ? t->t_first_token : end;
    double last = t->t_last_token > 0 ? t->t_last_token : end;
    pthread_mutex_lock(&m->mu);
    hist_add(&m->h[H_E2E], end - t->t_arrival);
    /* queue, prefill and inference time need the moment the engine first
     * scheduled the request; without it they are not observed at all
     * rather than observed wrong */
    if (t->t_scheduled > 0) {
        hist_add(&m->h[H_QUEUE], t->t_scheduled - t->t_arrival);
        hist_add(&m->h[H_PREFILL], first - t->t_scheduled);
        hist_add(&m->h[H_INFERENCE], last - t->t_scheduled);
    }
    hist_add(&m->h[H_DECODE], last - first);
    if (t->n_generation_tokens > 1) hist_add(&m->h[H_TPOT], (last - first) / (t->n_generation_tokens - 1));
    hist_add(&m->h[H_PROMPT_TOKENS], t->n_prompt_tokens);
    hist_add(&m->h[H_GEN_TOKENS], t->n_generation_tokens);
    hist_add(&m->h[H_PARAMS_N], t->n);
    if (t->max_tokens > 0) hist_add(&m->h[H_PARAMS_MAX_TOKENS], t->max_tokens);
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ---------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (n > 0 ? (size_t)n : 0);
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort(); /* out of memory */
    }
}

/* Python's repr of a float, as prometheus_client prints bucket bounds:
 * the shortest round-trip digits, "1.0" for integral values. */
static const char *pyfloat(char *buf, size_t cap, double v) {
    double a = fabs(v);
    if (v == 0 || (a >= 1e-4 && a < 1e16)) { /* positional, as repr does in this range */
        for (int d = 0; d <= 20; d++) {
            snprintf(buf, cap, "%.*f", d, v);
            if (strtod(buf, NULL) == v) break;
        }
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, cap, "%.*g", prec, v);
            if (strtod(buf, NULL) == v) break;
        }
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", cap - strlen(buf) - 1);
    return buf;
}

static void family(struct sbuf *b, const char *name, const char *type, const char *help) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *metrics_render(struct metrics *m, const struct vllmc_engine_stats *st, size_t *len) {
    struct sbuf b = { .cap = 16384 };
    b.p = xmalloc(b.cap);
    b.p[0] = 0;
    const char *L = m->model_label;
#define SERIES(name, fmt, ...) sb_printf(&b, "%s{engine=\"0\",model_name=\"%s\"} " fmt "\n", name, L, __VA_ARGS__)

    family(&b, "vllm:num_requests_running", "gauge", "Number of requests in model execution batches.");
    SERIES("vllm:num_requests_running", "%d", st->num_running);
    family(&b, "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.");
    SERIES("vllm:num_requests_waiting", "%d", st->num_waiting);
    family(&b, "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.");
    SERIES("vllm:kv_cache_usage_perc", "%.6g", st->kv_usage);
    family(&b, "vllm:engine_dead", "gauge", "1 if the engine thread has failed.");
    SERIES("vllm:engine_dead", "%d", st->engine_dead ? 1 : 0);

    family(&b, "vllm:prefix_cache_queries_total", "counter",
           "Prefix cache queries, in terms of number of queried tokens.");
    SERIES("vllm:prefix_cache_queries_total", "%lld", (long long)st->prefix_queries);
    family(&b, "vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.");
    SERIES("vllm:prefix_cache_hits_total", "%lld", (long long)st->prefix_hits);
    family(&b, "vllm:num_preemptions_total", "counter", "Cumulative number of preemption from the engine.");
    SERIES("vllm:num_preemptions_total", "%lld", (long long)st->preemptions);
    family(&b, "vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.");
    SERIES("vllm:prompt_tokens_total", "%lld", (long long)st->prompt_tokens);
    family(&b, "vllm:generation_tokens_total", "counter", "Number of generation tokens processed.");
    SERIES("vllm:generation_tokens_total", "%lld", (long long)st->generation_tokens);
    family(&b, "vllm:request_success_total", "counter", "Count of successfully processed requests.");
    static const char *const reasons[] = { NULL, "stop", "length", "abort", "error" };
    for (int k = 1; k <= 4; k++)
        sb_printf(&b, "vllm:request_success_total{engine=\"0\",finished_reason=\"%s\",model_name=\"%s\"} %lld\n",
                  reasons[k], L, (long long)st->requests_finished[k]);

    char num[40];
    pthread_mutex_lock(&m->mu);
    for (int k = 0; k < H_COUNT; k++) {
        const struct histogram *h = &m->h[k];
        family(&b, HIST_INFO[k].name, "histogram", HIST_INFO[k].help);
        uint64_t cum = 0;
        for (int i = 0; i <= h->n_bounds; i++) {
            cum += h->counts[i];
            if (i < h->n_bounds)
                sb_printf(&b, "%s_bucket{engine=\"0\",le=\"%s\",model_name=\"%s\"} %llu\n", HIST_INFO[k].name,
                          pyfloat(num, sizeof num, h->bounds[i]), L, (unsigned long long)cum);
            else
                sb_printf(&b, "%s_bucket{engine=\"0\",le=\"+Inf\",model_name=\"%s\"} %llu\n", HIST_INFO[k].name, L,
                          (unsigned long long)cum);
        }
        sb_printf(&b, "%s_count{engine=\"0\",model_name=\"%s\"} %llu\n", HIST_INFO[k].name, L,
                  (unsigned long long)h->count);
        sb_printf(&b, "%s_sum{engine=\"0\",model_name=\"%s\"} %s\n", HIST_INFO[k].name, L,
                  pyfloat(num, sizeof num, h->sum));
    }
    pthread_mutex_unlock(&m->mu);

    family(&b, "vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig");
    sb_printf(&b,
              "vllm:cache_config_info{block_size=\"%d\",enable_prefix_caching=\"%s\",engine=\"0\","
              "num_gpu_blocks=\"%lld\"} 1\n",
              m->block_size, m->prefix_caching ? "True" : "False", (long long)m->kv_blocks);
#undef SERIES
    *len = b.len;
    return b.p;
}

void metrics_log_line(char *buf, size_t cap, const struct vllmc_engine_stats *prev,
                      const struct vllmc_engine_stats *cur, double dt) {
    if (dt <= 0) dt = 1e-9;
    double pq = (double)(cur->prefix_queries - prev->prefix_queries);
    double ph = (double)(cur->prefix_hits - prev->prefix_hits);
    snprintf(buf, cap,
             "Engine 000: Avg prompt throughput: %.1f tokens/s, Avg generation throughput: %.1f tokens/s, "
             "Running: %d reqs, Waiting: %d reqs, KV cache usage: %.1f%%, Prefix cache hit rate: %.1f%%",
             (double)(cur->prompt_tokens - prev->prompt_tokens) / dt,
             (double)(cur->generation_tokens - prev->generation_tokens) / dt, cur->num_running, cur->num_waiting,
             100.0 * cur->kv_usage, pq > 0 ? 100.0 * ph / pq : 0.0);
}
