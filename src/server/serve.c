/* serve.c — `vllmc serve MODEL [options]`: command-line flags (vLLM's names),
 * engine start-up, chat templates, the listening socket, the periodic stats
 * line, and orderly shutdown on SIGINT/SIGTERM (stop accepting, abort what
 * is in flight, exit 0 within a few seconds).
 *
 * Owns: the struct server of the process. Does not: handle requests
 * (http.c, api.c). */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/server.h"
#include "server/server_internal.h"
#include "util/util.h"

#define LOG_INTERVAL_S 10

static const char *serve_default_model; /* used when no MODEL is given */

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: vllmc serve [MODEL] [options]\n"
            "\n"
            "OpenAI-compatible HTTP server (vLLM's API, flags and metrics). MODEL is a checkpoint\n"
            "directory or ORG/NAME in the Hugging Face cache; nothing is downloaded. Without MODEL,\n"
            "the bundled demo model (models/demo) is served.\n"
            "\n"
            "options:\n"
            "  --host HOST                     address to listen on (default 127.0.0.1; 0.0.0.0 or ::\n"
            "                                  for all interfaces)\n"
            "  --port N                        port (default 8000; 0 picks a free one, printed at start)\n"
            "  --served-model-name NAME...     names clients use in \"model\"; the first is reported\n"
            "                                  (default: MODEL as given)\n"
            "  --api-key KEY                   require \"Authorization: Bearer KEY\" on /v1 endpoints\n"
            "                                  (default: $VLLM_API_KEY if set)\n"
            "  --max-model-len N               context length (default: the model's; 32k/1K style ok)\n"
            "  --max-num-seqs N                most sequences running at once (default 256; 1024 on a\n"
            "                                  GPU of 70 GiB or more other than an A100, as vLLM)\n"
            "  --max-num-batched-tokens N      tokens per engine step (default 2048; 8192 on such a GPU)\n"
            "  --block-size N                  KV cache block size: 8, 16 or 32 (default 16)\n"
            "  --kv-cache-memory-bytes B       KV cache size in bytes (1G/512M style ok; default: a\n"
            "                                  quarter of available memory, at most 4 GiB)\n"
            "  --kv-cache-dtype T              auto (the model's), float32, bfloat16, float16\n"
            "  --enable-prefix-caching         automatic prefix caching (the default)\n"
            "  --no-enable-prefix-caching      turn it off\n"
            "  --prefix-caching-hash-algo A    sha256 (default) or xxhash\n"
            "  --dtype T                       auto, or the checkpoint's own dtype (bfloat16, float16,\n"
            "                                  float32); conversions are not supported yet\n"
            "  --seed N                        seed of requests that give none (default 0)\n"
            "  --chat-template FILE            chat template file (or template text) replacing the\n"
            "                                  tokenizer's\n"
            "  --default-chat-template-kwargs JSON  object merged under each request's\n"
            "                                  chat_template_kwargs\n"
            "  --generation-config auto|vllm   auto: sampling defaults from generation_config.json\n"
            "                                  (default); vllm: vLLM's own defaults\n"
            "  --hf-overrides JSON             JSON object merged over config.json\n"
            "  --threads N                     CPU threads (default: one per physical core)\n"
            "  --device D                      auto (CUDA if built with it and a GPU is present), cpu,\n"
            "                                  cuda, cuda:N\n"
            "  --gpu-memory-utilization F      CUDA: fraction of GPU memory to use, the KV cache\n"
            "                                  taking what weights and activations leave (default 0.9)\n"
            "  --cuda-matmul bf16|split        CUDA: activations of the GEMMs rounded to bf16 (default,\n"
            "                                  vLLM's numerics) or split into hi + lo bf16 parts (f32-like\n"
            "                                  precision as on the CPU, 0.4-0.6x the batched throughput)\n"
            "  --async-scheduling              schedule and queue step N+1 before step N's tokens are\n"
            "                                  detokenized and sent (default on CUDA)\n"
            "  --no-async-scheduling           one step at a time (default on the CPU)\n"
            "  --enforce-eager                 CUDA: no CUDA graphs, every kernel of a decode step\n"
            "                                  launched one by one (as vLLM's flag)\n"
            "  --tensor-parallel-size N, -tp N\n"
            "                                  1 only: one device per server\n"
            "  --trust-remote-code             accepted for vLLM's command lines; no code from a\n"
            "                                  checkpoint is ever run\n"
            "  --max-waiting-requests N        answer 429 when more requests than this wait in the\n"
            "                                  queue (default 4096)\n"
            "  --disable-log-requests          do not log each request\n"
            "  -h, --help                      this text\n");
}

/* "123", "32k" (x1000), "32K" (x1024), "1G", "1Gi", "1.5G": vLLM's
 * human-readable integers. */
static int parse_human(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return -1;
    double mul = 1;
    if (*end) {
        const char *u = "kmgt", *U = "KMGT";
        const char *p = strchr(u, *end), *P = strchr(U, *end);
        if (!*end || (!p && !P)) return -1;
        int pow = (int)((p ? p - u : P - U) + 1);
        int binary = P != NULL || end[1] == 'i';
        for (int i = 0; i < pow; i++) mul *= binary ? 1024 : 1000;
        end += 1 + (end[1] == 'i');
        if (*end) return -1;
    }
    double r = v * mul;
    if (r < (double)lo || r > (double)hi || r != (double)(long long)r) return -1;
    *out = (long long)r;
    return 0;
}

static int parse_long(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

struct serve_opts {
    const char *model, *host, *api_key, *chat_template, *default_kwargs, *dtype;
    int port, max_waiting, log_requests;
    const char **names;
    int n_names;
    struct vllmc_engine_params ep;
};

static int usage_error(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "vllmc serve: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, " (see vllmc serve --help)\n");
    return 2;
}

/* Returns 0, 2 (usage error, message printed) or 3 (--help printed). */
static int parse_args(int argc, char **argv, struct serve_opts *o) {
    memset(o, 0, sizeof *o);
    vllmc_engine_params_default(&o->ep);
    o->host = "127.0.0.1";
    o->port = 8000;
    o->max_waiting = 4096;
    o->log_requests = 1;
    o->api_key = getenv("VLLM_API_KEY");
    if (o->api_key && !o->api_key[0]) o->api_key = NULL;
    o->names = xcalloc((size_t)argc + 1, sizeof *o->names);
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            serve_usage(stdout);
            return 3;
        }
        if (strncmp(a, "--", 2) && strcmp(a, "-tp") && strncmp(a, "-tp=", 4)) {
            if (o->model) return usage_error("unexpected argument '%s'%s", a, "");
            o->model = a;
            continue;
        }
        /* --flag=value or --flag value */
        char flag[96];
        const char *val = NULL, *eq = strchr(a, '=');
        if (eq) {
            snprintf(flag, sizeof flag, "%.*s", (int)(eq - a), a);
            val = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", a);
        }
        static const char *const bools[] = { "--enable-prefix-caching", "--no-enable-prefix-caching",
                                             "--disable-log-requests", "--async-scheduling",
                                             "--no-async-scheduling", "--enforce-eager", "--trust-remote-code" };
        int is_bool = 0;
        for (size_t k = 0; k < ARRAY_LEN(bools); k++) is_bool |= !strcmp(flag, bools[k]);
        if (is_bool) {
            if (val) return usage_error("option '%s' takes no value%s", flag, "");
            if (!strcmp(flag, "--enable-prefix-caching")) o->ep.disable_prefix_caching = 0;
            else if (!strcmp(flag, "--no-enable-prefix-caching")) o->ep.disable_prefix_caching = 1;
            else if (!strcmp(flag, "--async-scheduling")) o->ep.async_scheduling = 1;
            else if (!strcmp(flag, "--no-async-scheduling")) o->ep.async_scheduling = -1;
            else if (!strcmp(flag, "--enforce-eager")) o->ep.enforce_eager = 1;
            else if (!strcmp(flag, "--disable-log-requests")) o->log_requests = 0;
            /* --trust-remote-code: nothing of a checkpoint is ever run as code */
            continue;
        }
        if (!strcmp(flag, "-tp")) snprintf(flag, sizeof flag, "--tensor-parallel-size");
        static const char *const known[] = {
            "--host", "--port", "--served-model-name", "--api-key", "--max-model-len", "--max-num-seqs",
            "--max-num-batched-tokens", "--block-size", "--kv-cache-memory-bytes", "--kv-cache-dtype",
            "--prefix-caching-hash-algo", "--dtype", "--seed", "--chat-template", "--default-chat-template-kwargs",
            "--generation-config", "--hf-overrides", "--threads", "--max-waiting-requests",
            "--device", "--gpu-memory-utilization", "--cuda-matmul", "--tensor-parallel-size",
        };
        int is_known = 0;
        for (size_t k = 0; k < ARRAY_LEN(known); k++) is_known |= !strcmp(flag, known[k]);
        if (!is_known) return usage_error("unknown option '%s'%s", flag, "");
        if (!val) {
            if (i + 1 >= argc) return usage_error("option '%s' needs a value%s", flag, "");
            val = argv[++i];
        }
        long long v;
        if (!strcmp(flag, "--host")) o->host = val;
        else if (!strcmp(flag, "--tensor-parallel-size")) {
            if (parse_long(val, 1, 1, &v))
                return usage_error("--tensor-parallel-size '%s': one device per server (tensor parallelism is not "
                                   "supported yet)%s", val, "");
        }
        else if (!strcmp(flag, "--port")) {
            if (parse_long(val, 0, 65535, &v)) return usage_error("--port '%s': expected 0..65535%s", val, "");
            o->port = (int)v;
        } else if (!strcmp(flag, "--served-model-name")) {
            o->names[o->n_names++] = val;
            while (!eq && i + 1 < argc && argv[i + 1][0] != '-') /* up to the next option (-tp, -h too) */
                o->names[o->n_names++] = argv[++i];
        } else if (!strcmp(flag, "--api-key")) o->api_key = val;
        else if (!strcmp(flag, "--max-model-len")) {
            if (parse_human(val, 1, 1LL << 30, &v)) return usage_error("--max-model-len '%s': expected a positive integer%s", val, "");
            o->ep.max_model_len = (int)v;
        } else if (!strcmp(flag, "--max-num-seqs")) {
            if (parse_long(val, 1, 1 << 20, &v)) return usage_error("--max-num-seqs '%s': expected a positive integer%s", val, "");
            o->ep.max_num_seqs = (int)v;
        } else if (!strcmp(flag, "--max-num-batched-tokens")) {
            if (parse_human(val, 1, 1LL << 30, &v))
                return usage_error("--max-num-batched-tokens '%s': expected a positive integer%s", val, "");
            o->ep.max_num_batched_tokens = (int)v;
        } else if (!strcmp(flag, "--block-size")) {
            if (parse_long(val, 1, 1 << 16, &v) || (v != 8 && v != 16 && v != 32))
                return usage_error("--block-size '%s': expected 8, 16 or 32%s", val, "");
            o->ep.block_size = (int)v;
        } else if (!strcmp(flag, "--kv-cache-memory-bytes")) {
            if (parse_human(val, 1, 1LL << 50, &v)) return usage_error("--kv-cache-memory-bytes '%s': expected a byte count%s", val, "");
            o->ep.kv_cache_memory_bytes = v;
        } else if (!strcmp(flag, "--kv-cache-dtype")) {
            if (strcmp(val, "auto") && strcmp(val, "float32") && strcmp(val, "bfloat16") && strcmp(val, "float16"))
                return usage_error("--kv-cache-dtype '%s': expected auto, float32, bfloat16 or float16%s", val, "");
            o->ep.kv_cache_dtype = val;
        } else if (!strcmp(flag, "--prefix-caching-hash-algo")) {
            if (strcmp(val, "sha256") && strcmp(val, "xxhash"))
                return usage_error("--prefix-caching-hash-algo '%s': expected sha256 or xxhash%s", val, "");
            o->ep.prefix_caching_hash_algo = val;
        } else if (!strcmp(flag, "--dtype")) {
            static const char *const ok[] = { "auto", "bfloat16", "float16", "half", "float32", "float" };
            int good = 0;
            for (size_t k = 0; k < ARRAY_LEN(ok); k++) good |= !strcmp(val, ok[k]);
            if (!good) return usage_error("--dtype '%s': expected auto, bfloat16, float16 or float32%s", val, "");
            o->dtype = val;
        } else if (!strcmp(flag, "--seed")) {
            if (parse_long(val, 0, INT64_MAX, &v)) return usage_error("--seed '%s': expected a non-negative integer%s", val, "");
            o->ep.seed = (uint64_t)v;
        } else if (!strcmp(flag, "--chat-template")) o->chat_template = val;
        else if (!strcmp(flag, "--default-chat-template-kwargs")) {
            json_t *j = json_loads(val, 0, NULL);
            int good = json_is_object(j);
            json_decref(j);
            if (!good) return usage_error("--default-chat-template-kwargs '%s': expected a JSON object%s", val, "");
            o->default_kwargs = val;
        } else if (!strcmp(flag, "--generation-config")) {
            if (strcmp(val, "auto") && strcmp(val, "vllm"))
                return usage_error("--generation-config '%s': expected auto or vllm%s", val, "");
            o->ep.generation_config = val;
        } else if (!strcmp(flag, "--hf-overrides")) {
            json_t *j = json_loads(val, 0, NULL);
            int good = json_is_object(j);
            json_decref(j);
            if (!good) return usage_error("--hf-overrides '%s': expected a JSON object%s", val, "");
            o->ep.hf_overrides = val;
        } else if (!strcmp(flag, "--threads")) {
            if (parse_long(val, 1, 4096, &v)) return usage_error("--threads '%s': expected a positive integer%s", val, "");
            o->ep.n_threads = (int)v;
        } else if (!strcmp(flag, "--device")) o->ep.device = val; /* checked by the engine */
        else if (!strcmp(flag, "--cuda-matmul")) {
            if (strcmp(val, "split") && strcmp(val, "bf16"))
                return usage_error("--cuda-matmul '%s': expected split or bf16%s", val, "");
            o->ep.cuda_matmul = val;
        }
        else if (!strcmp(flag, "--gpu-memory-utilization")) {
            char *end;
            double u = strtod(val, &end);
            if (end == val || *end || !(u > 0 && u <= 1))
                return usage_error("--gpu-memory-utilization '%s': expected a fraction in (0, 1]%s", val, "");
            o->ep.gpu_memory_utilization = u;
        } else if (!strcmp(flag, "--max-waiting-requests")) {
            if (parse_long(val, 0, 1 << 30, &v)) return usage_error("--max-waiting-requests '%s': expected an integer >= 0%s", val, "");
            o->max_waiting = (int)v;
        }
    }
    if (!o->model) o->model = serve_default_model; /* the bundled demo, set by the CLI */
    if (!o->model) return usage_error("missing MODEL%s%s", "", "");
    if (o->n_names == 0) o->names[o->n_names++] = o->model;
    o->ep.model = o->model;
    return 0;
}

/* The checkpoint's dtype ("BF16") against --dtype: equal, or auto. */
static int dtype_ok(const char *flag, const char *model_dtype) {
    if (!flag || !strcmp(flag, "auto")) return 1;
    const char *want = !strcmp(flag, "bfloat16") ? "BF16"
                       : (!strcmp(flag, "float16") || !strcmp(flag, "half")) ? "F16"
                                                                             : "F32";
    return model_dtype && !strcasecmp(want, model_dtype);
}

static int setup_templates(struct server *s, const struct serve_opts *o, char *err, size_t errlen) {
    const char *src = NULL;
    char *file = NULL;
    if (o->chat_template) {
        struct stat st;
        if (!stat(o->chat_template, &st)) {
            size_t len;
            if (!(file = file_read_all(o->chat_template, &len, err, errlen))) return -1;
            src = file;
        } else if (strstr(o->chat_template, "{{") || strstr(o->chat_template, "{%")) {
            src = o->chat_template; /* vLLM also takes the template text itself */
        } else {
            return errf(err, errlen, "--chat-template %s: no such file", o->chat_template);
        }
    } else if (s->tok) {
        src = tokenizer_chat_template(s->tok, NULL);
    }
    char cerr[512];
    int rc = 0;
    if (src && chat_template_compile(&s->tmpl, src, cerr, sizeof cerr)) {
        s->tmpl = NULL;
        if (o->chat_template) rc = errf(err, errlen, "chat template %s: %s", file ? o->chat_template : "(text)", cerr);
        else log_warn("the tokenizer's chat template does not compile (%s); chat requests need a chat_template", cerr);
    }
    free(file);
    if (rc) return rc;
    if (!o->chat_template && s->tok) {
        const char *tools = tokenizer_chat_template(s->tok, "tool_use");
        if (tools && chat_template_compile(&s->tmpl_tools, tools, cerr, sizeof cerr)) {
            log_warn("the tokenizer's tool_use chat template does not compile (%s)", cerr);
            s->tmpl_tools = NULL;
        }
    }
    s->specials = json_object();
    static const char *const names[] = { "bos_token", "eos_token", "unk_token", "pad_token",
                                         "sep_token", "cls_token", "mask_token" };
    for (size_t i = 0; s->tok && i < ARRAY_LEN(names); i++) {
        const char *v = tokenizer_special_token(s->tok, names[i]);
        if (v) json_object_set_new(s->specials, names[i], json_string(v));
    }
    s->default_kwargs = o->default_kwargs ? json_loads(o->default_kwargs, 0, NULL) : json_object();
    return 0;
}

static void server_free(struct server *s) {
    http_stop(s);
    if (s->tmpl) chat_template_free(s->tmpl);
    if (s->tmpl_tools) chat_template_free(s->tmpl_tools);
    json_decref(s->specials);
    json_decref(s->default_kwargs);
    if (s->engine) vllmc_engine_close(s->engine);
    waiters_free(s);
    metrics_free(&s->metrics);
    if (s->shutdown_fd >= 0) close(s->shutdown_fd);
}

void vllmc_serve_set_default_model(const char *dir) { serve_default_model = dir; }

int vllmc_serve_main(int argc, char **argv) {
    struct serve_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        free(o.names);
        return rc == 3 ? 0 : rc;
    }

    /* SIGINT/SIGTERM are taken by sigtimedwait below: block them before any
     * thread (engine, HTTP) starts, so every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    char port[16];
    snprintf(port, sizeof port, "%d", o.port);
    int gai = getaddrinfo(o.host, port, &hints, &ai);
    if (gai) {
        fprintf(stderr, "vllmc serve: --host %s: %s\n", o.host, gai_strerror(gai));
        free(o.names);
        return 2;
    }

    static struct server srv;
    struct server *s = &srv;
    memset(s, 0, sizeof *s);
    s->shutdown_fd = -1;
    pthread_mutex_init(&s->waiters_mu, NULL);
    char err[2048];
    log_info("vllmc %s serve: model %s", VLLMC_VERSION, o.model);
    double t0 = time_now();
    if (vllmc_engine_open(&s->engine, &o.ep, err, sizeof err)) {
        log_error("failed to load model %s: %s", o.model, err);
        freeaddrinfo(ai);
        free(o.names);
        return 1;
    }
    vllmc_model_info(s->engine, &s->info);
    if (!dtype_ok(o.dtype, s->info.dtype)) {
        log_error("--dtype %s: the checkpoint is %s; only auto or the checkpoint's own dtype is supported for now",
                  o.dtype, s->info.dtype ? s->info.dtype : "?");
        vllmc_engine_close(s->engine);
        freeaddrinfo(ai);
        free(o.names);
        return 1;
    }
    s->tok = vllmc_engine_tokenizer(s->engine);
    s->names = o.names;
    s->n_names = o.n_names;
    s->model_root = o.model;
    s->api_key = o.api_key;
    s->log_requests = o.log_requests;
    s->max_waiting = o.max_waiting;
    s->created = time(NULL);
    vllmc_sampling_params_default(s->engine, &s->defaults);
    s->lim = (struct proto_limits){
        .model_names = s->names, .n_model_names = s->n_names, .max_model_len = s->info.max_model_len,
        .n_vocab = s->info.n_vocab, .max_logprobs = 20, .defaults = &s->defaults,
    };
    metrics_init(&s->metrics, s->names[0], s->info.max_model_len, s->info.block_size, s->info.kv_blocks,
                 !o.ep.disable_prefix_caching);
    s->shutdown_fd = eventfd(0, EFD_CLOEXEC);
    if (setup_templates(s, &o, err, sizeof err)) {
        log_error("%s", err);
        freeaddrinfo(ai);
        server_free(s);
        free(o.names);
        return 1;
    }
    log_info("model %s (%s, %s, %d layers, vocabulary %d), loaded in %.1f s", s->info.dir, s->info.architecture,
             s->info.dtype, s->info.n_layers, s->info.n_vocab, time_now() - t0);
    log_info("KV cache: %lld blocks of %d tokens (%lld tokens); max_model_len %d; max_num_seqs %d; "
             "max_num_batched_tokens %d; %d threads (%s)",
             (long long)s->info.kv_blocks, s->info.block_size, (long long)s->info.kv_tokens, s->info.max_model_len,
             s->info.max_num_seqs, s->info.max_num_batched_tokens, s->info.n_threads,
             s->info.cpu_isa ? s->info.cpu_isa : "?");
    if (!s->tok) log_warn("no tokenizer.json: only token-id prompts are accepted");

    rc = -1;
    for (struct addrinfo *p = ai; p && rc; p = p->ai_next) rc = http_start(s, p->ai_addr, p->ai_family == AF_INET6, err, sizeof err);
    freeaddrinfo(ai);
    if (rc) {
        log_error("--host %s --port %d: %s", o.host, o.port, err);
        server_free(s);
        free(o.names);
        return 1;
    }
    log_info("Starting vLLM-compatible API server on http://%s%s%s:%d (served model name%s:%s%s%s)",
             strchr(o.host, ':') ? "[" : "", o.host, strchr(o.host, ':') ? "]" : "", http_port(s),
             s->n_names > 1 ? "s" : "", " ", s->names[0], s->n_names > 1 ? ", ..." : "");
    if (s->api_key) log_info("API key required on /v1 endpoints");

    /* main thread: the periodic stats line, and signals */
    struct vllmc_engine_stats prev, cur;
    vllmc_engine_stats(s->engine, &prev);
    double t_prev = time_now();
    for (;;) {
        struct timespec ts = { LOG_INTERVAL_S, 0 };
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            log_info("%s received: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
            break;
        }
        if (sig < 0 && errno != EAGAIN) continue;
        vllmc_engine_stats(s->engine, &cur);
        double now = time_now();
        int busy = cur.num_running || cur.num_waiting || cur.prompt_tokens != prev.prompt_tokens ||
                   cur.generation_tokens != prev.generation_tokens;
        if (busy) {
            char line[512];
            metrics_log_line(line, sizeof line, &prev, &cur, now - t_prev);
            log_info("%s", line);
        }
        prev = cur;
        t_prev = now;
    }

    /* shutdown: no new connections or requests; abort those in flight
     * (handlers see shutdown_fd and abort their requests, which then finish
     * with reason "abort"); give them a few seconds to send that */
    atomic_store(&s->shutting_down, 1);
    http_quiesce(s);
    uint64_t one = 1;
    if (write(s->shutdown_fd, &one, sizeof one) < 0) log_warn("shutdown eventfd: %s", strerror(errno));
    double deadline = time_now() + 5.0;
    while (atomic_load(&s->n_active) > 0 && time_now() < deadline) poll(NULL, 0, 20);
    if (atomic_load(&s->n_active) > 0) log_warn("%d requests still open at exit", atomic_load(&s->n_active));
    server_free(s);
    free(o.names);
    log_info("server stopped");
    return 0;
}
