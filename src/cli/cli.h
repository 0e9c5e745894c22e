/* cli.h — shared pieces of the vllmc subcommands (src/cli/): engine
 * option parsing and help text, number parsing, reading prompts. The CLI
 * sees only include/vllmc.h (and the text layer for prompts as text). */
#ifndef VLLMC_CLI_H
#define VLLMC_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vllmc.h"

int parse_long(const char *s, long lo, long hi, long *out);
int parse_double(const char *s, double lo, double hi, double *out);
/* "1,2,3" -> malloc'd ids */
int parse_ids(const char *s, int32_t **ids, int *n);

/* Engine options shared by generate, bench and chat (see ENGINE_OPTIONS_HELP).
 * argv[*i] is the option; consumes its value. Returns 1 if it was an engine
 * option, 0 if not, -1 after printing an error. */
int parse_engine_option(const char *cmd, int argc, char **argv, int *i, struct vllmc_engine_params *p);
#define ENGINE_OPTIONS_HELP                                                                       \
    "engine options:\n"                                                                           \
    "  --threads N               CPU threads (default: one per physical core)\n"                 \
    "  --cpu-isa NAME            kernel set: auto (default), portable, avx2, avx512, neon;\n"    \
    "                            a -exact suffix keeps f32 activations in every matmul\n"        \
    "  --kv-cache-dtype T        auto (the model's float type), float32, bfloat16, float16\n"    \
    "  --kv-cache-memory-bytes B KV cache size in bytes (suffixes K, M, G; default: a quarter\n" \
    "                            of available memory, at most 4 GiB)\n"                         \
    "  --block-size N            KV block size: 8, 16 (default) or 32\n"                         \
    "  --max-model-len N         context limit (default: from the config)\n"                    \
    "  --max-num-seqs N          sequences running at once (default 256; 1024 on a GPU of\n"     \
    "                            70 GiB or more other than an A100, as vLLM's server)\n"     \
    "  --max-num-batched-tokens N  tokens per step (default 2048; 8192 on such a GPU)\n"         \
    "  --no-enable-prefix-caching  turn automatic prefix caching off\n"                          \
    "  --prefix-caching-hash-algo sha256|xxhash  block hash (default sha256)\n"                  \
    "  --generation-config auto|vllm  sampling defaults from generation_config.json (auto)\n"   \
    "  --seed N                  seed for requests that give none (default 0)\n"                 \
    "  --hf-overrides JSON       JSON object merged over config.json\n"                       \
    "  --device D                auto (CUDA if built with it and a GPU is present), cpu,\n"     \
    "                            cuda, cuda:N\n"                                                \
    "  --gpu-memory-utilization F  CUDA: fraction of GPU memory to use (default 0.9)\n"      \
    "  --cuda-matmul bf16|split  CUDA: activations of the GEMMs rounded to bf16 (default,\n"  \
    "                            vLLM's numerics) or hi + lo bf16 parts (f32-like, slower)\n" \
    "  --enforce-eager           CUDA: no CUDA graphs (each kernel launched one by one)\n"   \
    "  --[no-]async-scheduling   queue step N+1 before step N's tokens are delivered\n"       \
    "                            (default: on with CUDA, off on the CPU)\n"

/* "key 'K' has the wrong type" into err; returns -1. */
int errf_cli(char *err, size_t errlen, const char *key);
double time_now_cli(void); /* seconds, monotonic */
/* Tokenize a text prompt with the engine's tokenizer (vllmc_engine_tokenizer). */
int prompt_encode(const void *tokenizer, const char *text, int add_special_tokens, int32_t **ids, int *n, char *err,
                  size_t errlen);

/* Open an engine and log what was loaded; NULL after printing the error. */
vllmc_engine *open_engine_logged(const struct vllmc_engine_params *p);

int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_chat(int argc, char **argv);

/* The bundled demo model's directory (src/cli/paths.c): $VLLMC_DEMO_MODEL,
 * else BINDIR/../models/demo (a checkout's build directory), else
 * BINDIR/../share/vllmc/models/demo (make install). 0, or -1 with err set. */
int default_model_dir(char *buf, size_t len, char *err, size_t errlen);

#endif
