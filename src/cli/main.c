/* main.c — the vllmc command: dispatch to the subcommands, and the option
 * parsing they share (cli.h). exit() lives in src/cli and nowhere else. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "server/server.h"
#include "text/tokenizer.h"
static void usage(FILE *f) {
    fprintf(f,
            "usage: vllmc <command> [options]\n"
            "\n"
            "commands:\n"
            "  serve [MODEL]                OpenAI-compatible HTTP server (vLLM's API); no MODEL:\n"
            "                               the bundled demo model\n"
            "  chat [MODEL]                 interactive chat in the terminal (default: the demo model)\n"
            "  generate MODEL               offline generation: one prompt, or a JSONL file of them\n"
            "  bench throughput MODEL       offline throughput with random prompts\n"
            "  bench latency MODEL          latency of one batch\n"
            "  bench prefix-caching MODEL   time to first token, cold vs a cached prefix\n"
            "  bench serve                  load test of a running server\n"
            "\n"
            "MODEL is a checkpoint directory or ORG/NAME in the Hugging Face cache\n"
            "($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub). Nothing is downloaded.\n"
            "\n"
            "  vllmc --version | vllmc <command> --help\n");
}

int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

int parse_ids(const char *s, int32_t **ids, int *n) {
    int cap = 16, len = 0;
    int32_t *a = malloc((size_t)cap * sizeof *a);
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX || (*end && *end != ',')) { free(a); return -1; }
        if (len == cap) {
            cap *= 2;
            int32_t *na = realloc(a, (size_t)cap * sizeof *a);
            if (!na) { free(a); return -1; }
            a = na;
        }
        a[len++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (len == 0) { free(a); return -1; }
    *ids = a;
    *n = len;
    return 0;
}

static int parse_bytes(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v > 0)) return -1;
    double mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1024, end++;
    else if (*end == 'M' || *end == 'm') mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g') mul = 1024.0 * 1024 * 1024, end++;
    if (*end == 'i') end++;
    if (*end == 'B') end++;
    if (*end) return -1;
    *out = (int64_t)(v * mul);
    return 0;
}

int parse_engine_option(const char *cmd, int argc, char **argv, int *i, struct vllmc_engine_params *p) {
    const char *a = argv[*i];
    const char *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    long v;
    static const char *const with_value[] = {
        "--threads", "--cpu-isa", "--kv-cache-dtype", "--kv-cache-memory-bytes", "--block-size", "--max-model-len",
        "--max-num-seqs", "--max-num-batched-tokens", "--prefix-caching-hash-algo", "--generation-config", "--seed",
        "--hf-overrides", "--device", "--gpu-memory-utilization", "--cuda-matmul",
    };
    if (!strcmp(a, "--no-enable-prefix-caching")) { p->disable_prefix_caching = 1; return 1; }
    if (!strcmp(a, "--enable-prefix-caching")) { p->disable_prefix_caching = 0; return 1; }
    if (!strcmp(a, "--async-scheduling")) { p->async_scheduling = 1; return 1; }
    if (!strcmp(a, "--no-async-scheduling")) { p->async_scheduling = -1; return 1; }
    if (!strcmp(a, "--enforce-eager")) { p->enforce_eager = 1; return 1; }
    bool known = false;
    for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= !strcmp(a, with_value[k]);
    if (!known) return 0;
    if (!val) { fprintf(stderr, "vllmc %s: %s needs a value\n", cmd, a); return -1; }
    (*i)++;
#define INT_OPT(name, lo, hi, field)                                                              \
    if (!strcmp(a, name)) {                                                                       \
        if (parse_long(val, lo, hi, &v)) {                                                        \
            fprintf(stderr, "vllmc %s: %s: expected an integer in [%ld, %ld], got '%s'\n", cmd, a, \
                    (long)(lo), (long)(hi), val);                                                 \
            return -1;                                                                            \
        }                                                                                         \
        p->field = (int)v;                                                                        \
        return 1;                                                                                 \
    }
    INT_OPT("--threads", 1, 1024, n_threads)
    INT_OPT("--block-size", 1, 1024, block_size)
    INT_OPT("--max-model-len", 1, 1 << 30, max_model_len)
    INT_OPT("--max-num-seqs", 1, 1 << 20, max_num_seqs)
    INT_OPT("--max-num-batched-tokens", 1, 1 << 24, max_num_batched_tokens)
#undef INT_OPT
    if (!strcmp(a, "--seed")) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(val, &end, 10);
        if (errno || end == val || *end) { fprintf(stderr, "vllmc %s: --seed: bad value '%s'\n", cmd, val); return -1; }
        p->seed = s;
        return 1;
    }
    if (!strcmp(a, "--kv-cache-memory-bytes")) {
        if (parse_bytes(val, &p->kv_cache_memory_bytes)) {
            fprintf(stderr, "vllmc %s: --kv-cache-memory-bytes: bad size '%s'\n", cmd, val);
            return -1;
        }
        return 1;
    }
    if (!strcmp(a, "--gpu-memory-utilization")) {
        char *end;
        double u = strtod(val, &end);
        if (end == val || *end || !(u > 0 && u <= 1)) {
            fprintf(stderr, "vllmc %s: --gpu-memory-utilization: expected a fraction in (0, 1], got '%s'\n", cmd, val);
            return -1;
        }
        p->gpu_memory_utilization = u;
        return 1;
    }
    if (!strcmp(a, "--cpu-isa")) p->cpu_isa = val;
    else if (!strcmp(a, "--device")) p->device = val;
    else if (!strcmp(a, "--cuda-matmul")) p->cuda_matmul = val;
    else if (!strcmp(a, "--kv-cache-dtype")) p->kv_cache_dtype = val;
    else if (!strcmp(a, "--prefix-caching-hash-algo")) p->prefix_caching_hash_algo = val;
    else if (!strcmp(a, "--generation-config")) p->generation_config = val;
    else if (!strcmp(a, "--hf-overrides")) p->hf_overrides = val;
    return 1;
}

int errf_cli(char *err, size_t errlen, const char *key) {
    snprintf(err, errlen, "key '%s' has the wrong type", key);
    return -1;
}

double time_now_cli(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int prompt_encode(const void *tokenizer, const char *text, int add_special_tokens, int32_t **ids, int *n, char *err,
                  size_t errlen) {
    if (!tokenizer) {
        snprintf(err, errlen, "text prompts need the model's tokenizer.json (none found)");
        return -1;
    }
    return tokenizer_encode(tokenizer, text, strlen(text), add_special_tokens, ids, n, err, errlen) ? -1 : 0;
}

vllmc_engine *open_engine_logged(const struct vllmc_engine_params *p) {
    char err[1024];
    vllmc_engine *e;
    if (vllmc_engine_open(&e, p, err, sizeof err)) {
        fprintf(stderr, "vllmc: %s\n", err);
        return NULL;
    }
    struct vllmc_model_info info;
    vllmc_model_info(e, &info);
    fprintf(stderr,
            "vllmc: %s (%s) from %s; %d threads, %s kernels; KV cache %lld blocks of %d = %lld tokens; "
            "max_model_len %d\n",
            info.architecture, info.dtype, info.dir, info.n_threads, info.cpu_isa, (long long)info.kv_blocks,
            info.block_size, (long long)info.kv_tokens, info.max_model_len);
    return e;
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) { printf("vllmc %s\n", VLLMC_VERSION); return 0; }
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(cmd, "chat")) return cmd_chat(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) {
        if (argc >= 3 && !strcmp(argv[2], "serve")) return vllmc_bench_serve_main(argc - 2, argv + 2);
        return cmd_bench(argc - 2, argv + 2);
    }
    if (!strcmp(cmd, "serve")) {
        static char demo[4096];
        char err[256];
        if (default_model_dir(demo, sizeof demo, err, sizeof err) == 0) vllmc_serve_set_default_model(demo);
        return vllmc_serve_main(argc - 1, argv + 1);
    }
    fprintf(stderr, "vllmc: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
