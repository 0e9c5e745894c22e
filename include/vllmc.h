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
 * Status: this is the foundation's API — loading a model and greedy
 * generation of one sequence at a time over the paged KV cache. Continuous
 * batching, sampling parameters and streaming outputs arrive with the engine
 * (issue "Engine: continuous batching ..."). */
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
    const char *cpu_isa;          /* kernel set in use */
    int n_threads;
};
void vllmc_model_info(const vllmc_engine *e, struct vllmc_model_info *info);

/* Greedy generation of one sequence: up to max_tokens ids after the prompt
 * are written to out (capacity max_tokens); *n_out receives the count.
 * Stops early at an EOS id unless ignore_eos. */
int vllmc_generate_greedy(vllmc_engine *e, const int32_t *prompt, int n_prompt, int max_tokens, int ignore_eos,
                          int32_t *out, int *n_out, char *err, size_t errlen);

/* Text of ids (concatenated token pieces; no special-token handling yet).
 * Returns the length written (NUL-terminated, truncated to cap-1), or -1 when
 * the checkpoint has no tokenizer.json. */
int vllmc_detokenize(const vllmc_engine *e, const int32_t *ids, int n, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
