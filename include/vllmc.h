/* vllmc.h — the public API of libvllmc, the vllm.c engine.
 *
 * Narrow on purpose (STYLE.md 1): the server and CLI include this header and
 * nothing below it, so HTTP and command-line code never depend on tensors.
 * Grouped by lifetime: open/close an engine; run requests against it.
 *
 * Errors are values: functions return 0 on success or a negative VLLMC_E*
 * code and write a message into the caller's err buffer. After a failure
 * nothing was allocated and the engine (if any) is unchanged.
 *
 * What it offers: open a model (CPU or CUDA backend), submit requests (token ids +
 * vLLM's sampling parameters) that run with continuous batching over a
 * paged KV cache with automatic prefix caching, and read each request's
 * streamed output (tokens, text, logprobs, finish) from its own channel. */
#ifndef VLLMC_H
#define VLLMC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VLLMC_VERSION "0.1.0"

enum {
    VLLMC_OK = 0,
    VLLMC_EINVAL = -1,   /* bad argument or request */
    VLLMC_ELOAD = -2,    /* the model could not be loaded */
    VLLMC_ENOMEM = -3,   /* KV cache too small for the request */
};

typedef struct vllmc_engine vllmc_engine;

struct vllmc_engine_params {
    const char *model;            /* directory, or ORG/NAME in the Hugging Face cache */
    int n_threads;                /* <= 0: one per physical core */
    const char *cpu_isa;          /* NULL/"auto", or force "portable", "avx2", "avx512", "neon";
                                   * "-exact" suffix: f32 activations in every matmul */
    int64_t kv_cache_memory_bytes;/* <= 0: see kv_cache_tokens */
    int64_t kv_cache_tokens;      /* when no byte budget: capacity in tokens (<= 0: max_model_len) */
    int block_size;               /* 8, 16 (default when 0) or 32 */
    int max_model_len;            /* <= 0: from the config */
    const char *kv_cache_dtype;   /* NULL/"auto", "float32", "bfloat16", "float16" */
    const char *hf_overrides;     /* NULL or a JSON object merged over config.json */
    int max_num_seqs;             /* <= 0: 256; 1024 on a CUDA device of 70 GiB or more other than an A100
                                   * (vLLM's defaults for its API server) */
    int max_num_batched_tokens;   /* <= 0: 2048; 8192 on such a device */
    int disable_prefix_caching;   /* automatic prefix caching is on by default */
    const char *prefix_caching_hash_algo; /* NULL/"sha256" or "xxhash" */
    const char *generation_config;/* NULL/"auto": generation_config.json defaults; "vllm": vLLM's */
    uint64_t seed;                /* seeds requests that give no seed */
    const char *device;           /* NULL/"auto": CUDA when built with it and a GPU is present, else the
                                   * CPU; "cpu"; "cuda" or "cuda:N" (device ordinal N) */
    double gpu_memory_utilization;/* CUDA: fraction of the device's memory the engine may use (<= 0: 0.9);
                                   * the KV cache gets what the weights and the activations leave */
    const char *cuda_matmul;      /* CUDA: activations of the cuBLAS matmuls (dense, and dequantized beyond 16
                                   * tokens, 32 with split). NULL: VLLMC_CUDA_MATMUL, else "bf16" (default):
                                   * rounded once to bf16, as vLLM does; "split": hi + lo bf16 parts (two
                                   * GEMMs), f32-like precision as on the CPU, 0.4-0.6x the batched
                                   * throughput. Ignored on the CPU. */
    int async_scheduling;         /* 0: auto, on where the backend queues work (CUDA with device sampling);
                                   * 1: on; -1: off. On: step N+1 is scheduled and queued before step N's
                                   * tokens are detokenized, checked for stop strings and delivered, so that
                                   * host work runs while the device computes; a sequence ended by a stop
                                   * string has one extra token computed and dropped (vLLM's
                                   * --async-scheduling). Outputs are the same either way. */
    int enforce_eager;            /* CUDA: 1 = decode steps are never recorded as CUDA graphs, each kernel is
                                   * launched one by one (vLLM's --enforce-eager). Ignored on the CPU. */
};

/* Fill p with defaults. */
void vllmc_engine_params_default(struct vllmc_engine_params *p);

int vllmc_engine_open(vllmc_engine **out, const struct vllmc_engine_params *p, char *err, size_t errlen);
void vllmc_engine_close(vllmc_engine *e);

/* What was loaded, for logs and /v1/models. */
struct vllmc_model_info {
    const char *architecture;     /* HF architectures[0] */
    const char *dir;              /* resolved checkpoint directory */
    const char *dtype;            /* "BF16", ... */
    int n_vocab, max_model_len, n_layers;
    int64_t kv_blocks, kv_tokens; /* KV cache capacity */
    int block_size;
    int bos_token_id;             /* -1 if none */
    int n_eos;
    const int32_t *eos_token_ids;
    const char *cpu_isa;          /* kernel set in use; on CUDA the card and the matmul activation mode */
    int n_threads;
    int max_num_seqs, max_num_batched_tokens; /* in effect (the defaults resolved) */
};
void vllmc_model_info(const vllmc_engine *e, struct vllmc_model_info *info);

/* ---- Requests (continuous batching) ----------------------------------
 *
 * vllmc_engine_open starts one engine thread that owns all KV state and runs
 * the steps (DESIGN.md 3-5). vllmc_submit hands it a request (token ids +
 * sampling parameters, copied); outputs arrive on the request's own channel
 * and are read with vllmc_request_next from any one thread. Submission,
 * abort and reading are thread-safe. */

struct vllmc_sampling_params {
    int n;                       /* parallel samples sharing the prompt (>= 1) */
    float temperature;           /* 0: greedy */
    float top_p;                 /* (0, 1]; 1: off */
    int top_k;                   /* <= 0: off */
    float min_p;                 /* [0, 1]; 0: off */
    float presence_penalty;      /* [-2, 2] */
    float frequency_penalty;     /* [-2, 2] */
    float repetition_penalty;    /* > 0; 1: off */
    int has_seed;                /* seed given: reproducible whatever else is in the batch */
    uint64_t seed;
    int max_tokens;              /* < 0: up to max_model_len */
    int min_tokens;              /* EOS and stop_token_ids are masked before this many */
    int ignore_eos;
    const char *const *stop;     /* stop strings */
    int n_stop;
    const int32_t *stop_token_ids;
    int n_stop_token_ids;
    int include_stop_str_in_output;
    int logprobs;                /* < 0: none; k >= 0: sampled token's logprob + top k */
    int prompt_logprobs;         /* < 0: none; k >= 0: each prompt token's logprob + top k */
    const int32_t *logit_bias_ids;
    const float *logit_bias_values;
    int n_logit_bias;
    const int32_t *allowed_token_ids; /* NULL: all */
    int n_allowed_token_ids;
    const char *const *bad_words; /* each banned as a token sequence (with and without a leading space) */
    int n_bad_words;
    int skip_special_tokens;     /* default 1 */
    int spaces_between_special_tokens; /* default 1 */
    int detokenize;              /* default 1: produce text and check stop strings */
};

/* vLLM's defaults, then generation_config.json's (temperature, top_p, top_k,
 * min_p, repetition_penalty, max_new_tokens) when the engine was opened with
 * generation_config "auto". */
void vllmc_sampling_params_default(const vllmc_engine *e, struct vllmc_sampling_params *sp);

struct vllmc_request_params {
    const int32_t *prompt;       /* token ids (copied) */
    int n_prompt;
    struct vllmc_sampling_params sampling;
    int truncate_prompt_tokens;  /* > 0: keep only the last N prompt tokens; <= 0: off */
    const char *cache_salt;      /* NULL: none; separates prefix-cache tenants */
    const char *request_id;      /* for logs; NULL: generated */
    /* Called from the engine thread whenever new output is ready (may be NULL),
     * with the request's lock held: it must not block or call into the engine.
     * Never called after vllmc_request_free returns. */
    void (*notify)(void *arg);
    void *notify_arg;
};

typedef struct vllmc_request vllmc_request;

int vllmc_submit(vllmc_engine *e, const struct vllmc_request_params *rp, vllmc_request **out, char *err,
                 size_t errlen);
/* Stop generating; the request finishes with reason "abort" and its KV
 * blocks return to the pool at the engine's next step. */
void vllmc_abort(vllmc_request *r);
/* Release a request (aborting it if still running). */
void vllmc_request_free(vllmc_request *r);

enum vllmc_finish { VLLMC_NOT_FINISHED = 0, VLLMC_FINISH_STOP, VLLMC_FINISH_LENGTH, VLLMC_FINISH_ABORT,
                    VLLMC_FINISH_ERROR };
const char *vllmc_finish_name(enum vllmc_finish f); /* "stop", "length", "abort", "error" */

struct vllmc_logprob {
    int32_t token;
    float logprob;
    int rank;                    /* 1 = most likely */
};
struct vllmc_token_logprobs {
    struct vllmc_logprob chosen; /* the sampled (or prompt) token */
    int n_top;
    const struct vllmc_logprob *top; /* the top-k, most likely first */
};

/* New output of one of the request's n sequences since the previous read. */
struct vllmc_seq_output {
    int index;
    int n_tokens;
    const int32_t *tokens;
    const char *text;            /* complete UTF-8; stop strings never leak partially */
    size_t text_len;
    const struct vllmc_token_logprobs *logprobs; /* n_tokens entries, or NULL */
    enum vllmc_finish finish;
    int32_t stop_token;          /* the EOS/stop token that ended it, or -1 */
    const char *stop_str;        /* the stop string that ended it, or NULL */
    int n_total_tokens;          /* generated so far */
};

struct vllmc_output {
    int n_seqs;                  /* sequences with news in this read */
    const struct vllmc_seq_output *seqs;
    int n_prompt_tokens;         /* after truncation */
    int n_cached_tokens;         /* prompt tokens served from the prefix cache */
    const struct vllmc_token_logprobs *prompt_logprobs; /* n_prompt_tokens entries (the first has n_top 0,
                                                          * logprob NAN), once, or NULL */
    int finished;                /* every sequence finished; nothing more will come */
    const char *error;           /* engine-side failure, or NULL */
    double t_arrival, t_scheduled, t_first_token, t_last_token; /* seconds, monotonic clock (time_now);
                                                                 * 0 = not yet */
};

/* Wait up to timeout_ms (< 0: forever) for news. Returns 1 with *out filled
 * (valid until the next call or free), 0 on timeout, or VLLMC_EDONE after the
 * read that reported finished. */
#define VLLMC_EDONE (-4)
int vllmc_request_next(vllmc_request *r, struct vllmc_output *out, int timeout_ms);

/* ---- Engine statistics (for /metrics and logs) ------------------------- */
struct vllmc_engine_stats {
    int num_running, num_waiting;
    double kv_usage;             /* blocks held by live requests / all blocks */
    int64_t prefix_queries, prefix_hits; /* tokens */
    int64_t preemptions, prompt_tokens, generation_tokens;
    int64_t requests_finished[5]; /* by enum vllmc_finish */
    int64_t steps;
    double busy_seconds;         /* time spent in steps */
    double forward_seconds;      /* of which in the model's forward (on a device: until its results are
                                    back, device-side sampling included; the rest: scheduling, host
                                    sampling, text) */
    double gap_seconds;          /* host time from a step's results being back to the next step's
                                    forward call, summed over back-to-back steps: on a device, time it
                                    waits for the host between steps (async scheduling moves text and
                                    delivery out of it) */
    int64_t gap_steps;           /* the steps gap_seconds covers */
    int engine_dead;             /* the engine thread failed */
};
void vllmc_engine_stats(vllmc_engine *e, struct vllmc_engine_stats *st);

/* Convenience for tools and tests: greedy generation of one sequence through
 * the engine (same path as vllmc_submit). */
int vllmc_generate_greedy(vllmc_engine *e, const int32_t *prompt, int n_prompt, int max_tokens, int ignore_eos,
                          int32_t *out, int *n_out, char *err, size_t errlen);

/* The engine's tokenizer (struct tokenizer, src/text/tokenizer.h), or NULL
 * when the checkpoint has none. */
const void *vllmc_engine_tokenizer(const vllmc_engine *e);

#ifdef __cplusplus
}
#endif
#endif
