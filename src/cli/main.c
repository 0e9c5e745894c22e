/* main.c — the vllmc command. Subcommands:
 *   generate MODEL --prompt-ids 1,2,3 [--max-tokens N] ...   greedy generation
 * (serve, chat and bench arrive with the server and engine issues).
 * Includes only the public API (vllmc.h); exit() lives here and nowhere else. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vllmc.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: vllmc <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate MODEL   greedy generation from token ids (prints ids, and text\n"
            "                   when the checkpoint has a tokenizer.json)\n"
            "\n"
            "  vllmc --version | vllmc <command> --help\n");
}

static void generate_usage(FILE *f) {
    fprintf(f,
            "usage: vllmc generate MODEL --prompt-ids ID,ID,... [options]\n"
            "\n"
            "MODEL is a checkpoint directory or ORG/NAME in the Hugging Face cache\n"
            "($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub). Nothing is downloaded.\n"
            "\n"
            "options:\n"
            "  --prompt-ids LIST      comma-separated prompt token ids (required)\n"
            "  --max-tokens N         tokens to generate (default 16)\n"
            "  --ignore-eos           do not stop at the model's EOS ids\n"
            "  --threads N            CPU threads (default: one per physical core)\n"
            "  --cpu-isa NAME         kernel set: auto (default), portable, avx2, avx512, neon;\n"
            "                         a -exact suffix (e.g. auto-exact) keeps f32 activations\n"
            "                         in every matmul instead of the bf16 hi/lo split\n"
            "  --kv-cache-dtype T     auto (the model's), float32, bfloat16, float16\n"
            "  --block-size N         KV block size: 8, 16 or 32 (default 16)\n"
            "  --max-model-len N      context limit (default: from the config)\n"
            "  --hf-overrides JSON    JSON object merged over config.json\n");
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_ids(const char *s, int32_t **ids, int *n) {
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

static int cmd_generate(int argc, char **argv) {
    struct vllmc_engine_params p;
    vllmc_engine_params_default(&p);
    const char *ids_arg = NULL;
    long max_tokens = 16, v;
    int ignore_eos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VAL() do { if (!val) { fprintf(stderr, "vllmc generate: %s needs a value\n", a); return 2; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { generate_usage(stdout); return 0; }
        else if (!strcmp(a, "--prompt-ids")) { NEED_VAL(); ids_arg = val; }
        else if (!strcmp(a, "--max-tokens")) {
            NEED_VAL();
            if (parse_int(val, 0, 1 << 24, &max_tokens)) { fprintf(stderr, "vllmc generate: bad --max-tokens '%s'\n", val); return 2; }
        } else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
        else if (!strcmp(a, "--threads")) {
            NEED_VAL();
            if (parse_int(val, 1, 1024, &v)) { fprintf(stderr, "vllmc generate: bad --threads '%s'\n", val); return 2; }
            p.n_threads = (int)v;
        } else if (!strcmp(a, "--cpu-isa")) { NEED_VAL(); p.cpu_isa = val; }
        else if (!strcmp(a, "--kv-cache-dtype")) { NEED_VAL(); p.kv_cache_dtype = val; }
        else if (!strcmp(a, "--block-size")) {
            NEED_VAL();
            if (parse_int(val, 1, 1024, &v)) { fprintf(stderr, "vllmc generate: bad --block-size '%s'\n", val); return 2; }
            p.block_size = (int)v;
        } else if (!strcmp(a, "--max-model-len")) {
            NEED_VAL();
            if (parse_int(val, 1, 1 << 30, &v)) { fprintf(stderr, "vllmc generate: bad --max-model-len '%s'\n", val); return 2; }
            p.max_model_len = (int)v;
        } else if (!strcmp(a, "--hf-overrides")) { NEED_VAL(); p.hf_overrides = val; }
        else if (a[0] == '-') { fprintf(stderr, "vllmc generate: unknown option '%s' (see --help)\n", a); return 2; }
        else if (!p.model) p.model = a;
        else { fprintf(stderr, "vllmc generate: unexpected argument '%s'\n", a); return 2; }
#undef NEED_VAL
    }
    if (!p.model || !ids_arg) { generate_usage(stderr); return 2; }
    int32_t *ids;
    int n_ids;
    if (parse_ids(ids_arg, &ids, &n_ids)) { fprintf(stderr, "vllmc generate: bad --prompt-ids '%s'\n", ids_arg); return 2; }

    char err[1024];
    vllmc_engine *e;
    p.kv_cache_tokens = (int64_t)n_ids + max_tokens; /* one sequence: no need for max_model_len of KV */
    if (vllmc_engine_open(&e, &p, err, sizeof err)) {
        fprintf(stderr, "vllmc: %s\n", err);
        free(ids);
        return 1;
    }
    struct vllmc_model_info info;
    vllmc_model_info(e, &info);
    fprintf(stderr, "vllmc: %s (%s) from %s; %d threads, %s kernels; KV %lld blocks of %d\n", info.architecture,
            info.dtype, info.dir, info.n_threads, info.cpu_isa, (long long)info.kv_blocks, info.block_size);
    int32_t *out = malloc((size_t)(max_tokens ? max_tokens : 1) * sizeof *out);
    int n_out = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = vllmc_generate_greedy(e, ids, n_ids, (int)max_tokens, ignore_eos, out, &n_out, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc) fprintf(stderr, "vllmc: %s\n", err);
    else {
        for (int i = 0; i < n_out; i++) printf("%s%d", i ? "," : "", out[i]);
        printf("\n");
        /* text token by token, so no output length is cut off; the bytes of a
         * character split across tokens still come out in order */
        char piece[4096];
        int any = 0;
        for (int i = 0; i < n_out; i++) {
            int len = vllmc_detokenize(e, out + i, 1, piece, sizeof piece);
            if (len < 0) break;
            fwrite(piece, 1, (size_t)len, stdout);
            any = 1;
        }
        if (any) printf("\n");
        double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        fprintf(stderr, "vllmc: %d prompt + %d generated tokens in %.3f s\n", n_ids, n_out, s);
    }
    free(out);
    free(ids);
    vllmc_engine_close(e);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) { printf("vllmc %s\n", VLLMC_VERSION); return 0; }
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 2, argv + 2);
    fprintf(stderr, "vllmc: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
