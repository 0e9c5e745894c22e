/* engine.c — the engine behind include/vllmc.h: open/close, the engine
 * thread, request submission and the per-request output channels.
 *
 * Owns: the backend (CPU or CUDA, params->device), the loaded model, the KV
 * memory (one bk_alloc in the backend's memory, per layer
 * [num_blocks][B][Hkv][D] for K and for V; block 0 is the null block)
 * and its block pool (kvcache.c), the thread that runs the steps (sched.c),
 * and every request's state.
 *
 * Threads: vllmc_submit, vllmc_abort, vllmc_request_next/free and
 * vllmc_engine_stats may be called from any thread. The engine thread is the
 * only one that touches sequences, blocks and the model; callers meet it
 * through the submission queue (sub_mu) and each request's channel (its mu).
 * A request is freed when both the caller (vllmc_request_free) and the
 * engine (all its sequences finished) have let go of it.
 *
 * Does not: tokenize or render templates (the server does that in its own
 * threads, DESIGN.md 3), or sample (sampler.c). */
#include "vllmc.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "engine/engine_internal.h"
#include "io/modeldir.h"
#include "text/tokenizer.h"

/* ---- text: incremental detokenizing ------------------------------------ */

struct detok_stream *engine_detok_new(struct vllmc_engine *e, const struct vllmc_request *r) {
    if (!e->tok) return NULL;
    return (struct detok_stream *)tokenizer_stream_new(e->tok, r->sp.skip_special_tokens,
                                                       r->sp.spaces_between_special_tokens);
}

void engine_detok_free(struct detok_stream *ds) { tokenizer_stream_free((struct tokenizer_stream *)ds); }

static void seq_text_append(struct seq *s, const char *text, size_t len) {
    if (!len) return;
    if (s->text_len + len + 1 > s->text_cap) {
        s->text_cap = (s->text_len + len + 1) * 2;
        s->text = realloc(s->text, s->text_cap);
        if (!s->text) abort();
    }
    memcpy(s->text + s->text_len, text, len);
    s->text_len += len;
    s->text[s->text_len] = 0;
}

void engine_detok_push(struct vllmc_engine *e, struct seq *s, int32_t id) {
    (void)e;
    const char *text;
    size_t len;
    if (tokenizer_stream_push((struct tokenizer_stream *)s->ds, id, &text, &len) == 0) seq_text_append(s, text, len);
}

void engine_detok_flush(struct vllmc_engine *e, struct seq *s) {
    (void)e;
    const char *text;
    size_t len;
    tokenizer_stream_flush((struct tokenizer_stream *)s->ds, &text, &len);
    seq_text_append(s, text, len);
}

/* vLLM's bad_words: each word is banned as the token sequence of the word
 * (leading spaces stripped) and, when it tokenizes to a different first
 * token of the same length, of " " + word. */
static int encode_bad_words(struct vllmc_engine *e, struct vllmc_request *r, const struct vllmc_sampling_params *sp,
                            char *err, size_t errlen) {
    r->bw = xcalloc((size_t)sp->n_bad_words * 2, sizeof *r->bw);
    r->bw_len = xcalloc((size_t)sp->n_bad_words * 2, sizeof *r->bw_len);
    for (int i = 0; i < sp->n_bad_words; i++) {
        const char *w = sp->bad_words[i];
        while (*w == ' ' || *w == '\t' || *w == '\n' || *w == '\r' || *w == '\f' || *w == '\v') w++;
        size_t wl = strlen(w);
        char *spaced = xmalloc(wl + 2);
        spaced[0] = ' ';
        memcpy(spaced + 1, w, wl + 1);
        for (int pass = 0; pass < 2; pass++) {
            int32_t *ids = NULL;
            int n = 0;
            const char *text = pass ? spaced : w;
            if (tokenizer_encode(e->tok, text, strlen(text), 0, &ids, &n, err, errlen)) {
                free(spaced);
                return -1;
            }
            bool keep = n > 0;
            if (pass && keep) {
                int last = r->n_bw - 1;
                keep = last >= 0 && ids[0] != r->bw[last][0] && n == r->bw_len[last];
            }
            if (keep) {
                r->bw[r->n_bw] = ids;
                r->bw_len[r->n_bw++] = n;
            } else free(ids);
        }
        free(spaced);
    }
    return 0;
}

/* ---- open / close ------------------------------------------------------ */

void vllmc_engine_params_default(struct vllmc_engine_params *p) {
    memset(p, 0, sizeof *p);
    p->block_size = 16;
}

static int parse_kv_dtype(const char *s, enum dtype model_dt, enum dtype *out) {
    if (!s || !strcmp(s, "auto")) *out = model_dt;
    else if (!strcmp(s, "float32")) *out = DT_F32;
    else if (!strcmp(s, "bfloat16")) *out = DT_BF16;
    else if (!strcmp(s, "float16")) *out = DT_F16;
    else return -1;
    return 0;
}

static int64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
    fclose(f);
    return (int64_t)kb * 1024;
}

/* vLLM's sampling defaults, then generation_config.json's (as vLLM's
 * --generation-config auto: temperature, top_p, top_k, min_p,
 * repetition_penalty, max_new_tokens). */
static void load_sampling_defaults(struct vllmc_engine *e, const char *mode) {
    struct vllmc_sampling_params *d = &e->defaults;
    memset(d, 0, sizeof *d);
    d->n = 1;
    d->temperature = 1.0f;
    d->top_p = 1.0f;
    d->top_k = 0;
    d->repetition_penalty = 1.0f;
    d->max_tokens = -1;
    d->logprobs = -1;
    d->prompt_logprobs = -1;
    d->skip_special_tokens = 1;
    d->spaces_between_special_tokens = 1;
    d->detokenize = 1;
    if (mode && !strcmp(mode, "vllm")) return;
    char path[4200];
    snprintf(path, sizeof path, "%s/generation_config.json", e->dir);
    json_t *g = json_load_file(path, 0, NULL);
    if (!g) return;
    json_t *v;
    if ((v = json_object_get(g, "temperature")) && json_is_number(v)) d->temperature = (float)json_number_value(v);
    if ((v = json_object_get(g, "top_p")) && json_is_number(v)) d->top_p = (float)json_number_value(v);
    if ((v = json_object_get(g, "top_k")) && json_is_integer(v)) d->top_k = (int)json_integer_value(v);
    if ((v = json_object_get(g, "min_p")) && json_is_number(v)) d->min_p = (float)json_number_value(v);
    if ((v = json_object_get(g, "repetition_penalty")) && json_is_number(v))
        d->repetition_penalty = (float)json_number_value(v);
    if ((v = json_object_get(g, "max_new_tokens")) && json_is_integer(v)) d->max_tokens = (int)json_integer_value(v);
    json_decref(g);
}

void vllmc_sampling_params_default(const vllmc_engine *e, struct vllmc_sampling_params *sp) { *sp = e->defaults; }

static void *engine_main(void *arg);

/* params->device: 0 with *cuda and *ordinal set, or -1. */
static int parse_device(const char *s, bool *cuda, int *ordinal) {
    *cuda = false;
    *ordinal = 0;
    if (!s || !*s || !strcmp(s, "auto")) *cuda = backend_cuda_devices() > 0;
    else if (!strcmp(s, "cuda")) *cuda = true;
    else if (!strncmp(s, "cuda:", 5)) {
        char *end;
        long v = strtol(s + 5, &end, 10);
        if (end == s + 5 || *end || v < 0 || v > 1024) return -1;
        *cuda = true;
        *ordinal = (int)v;
    } else if (strcmp(s, "cpu")) return -1;
    return 0;
}

/* Device memory one step needs besides weights and KV (the forward's
 * scratch for max_num_batched_tokens tokens, each a logits row at worst,
 * and the backend's matmul workspace), plus a margin. */
static int64_t device_activation_bytes(const struct hparams *hp, int T) {
    int64_t d = hp->d_model, qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_kv_head * hp->head_dim;
    int64_t F = hp->d_ff, V = hp->n_vocab;
    int64_t floats = (int64_t)T * (2 * d + 2 * qd + 2 * kvd + 3 * F + d + V);
    return 4 * floats + 4 * (int64_t)T * MAX(F, MAX(d, qd)) + ((int64_t)512 << 20);
}

int vllmc_engine_open(vllmc_engine **out, const struct vllmc_engine_params *p, char *err, size_t errlen) {
    *out = NULL;
    if (!p || !p->model) return errf(err, errlen, "no model given"), VLLMC_EINVAL;
    int B = p->block_size ? p->block_size : 16;
    if (B != 8 && B != 16 && B != 32) return errf(err, errlen, "block size %d: must be 8, 16 or 32", B), VLLMC_EINVAL;
    enum kv_hash_algo algo = KV_HASH_SHA256;
    if (p->prefix_caching_hash_algo && !strcmp(p->prefix_caching_hash_algo, "xxhash")) algo = KV_HASH_XXH3;
    else if (p->prefix_caching_hash_algo && strcmp(p->prefix_caching_hash_algo, "sha256"))
        return errf(err, errlen, "prefix caching hash algo '%s': expected sha256 or xxhash",
                    p->prefix_caching_hash_algo), VLLMC_EINVAL;
    if (p->generation_config && strcmp(p->generation_config, "auto") && strcmp(p->generation_config, "vllm"))
        return errf(err, errlen, "generation config '%s': expected auto or vllm", p->generation_config),
               VLLMC_EINVAL;
    bool cuda;
    int ordinal;
    if (parse_device(p->device, &cuda, &ordinal))
        return errf(err, errlen, "device '%s': expected auto, cpu, cuda or cuda:N", p->device), VLLMC_EINVAL;
    if (p->cuda_matmul && strcmp(p->cuda_matmul, "split") && strcmp(p->cuda_matmul, "bf16"))
        return errf(err, errlen, "cuda matmul '%s': expected split or bf16", p->cuda_matmul), VLLMC_EINVAL;
    if (p->gpu_memory_utilization > 1)
        return errf(err, errlen, "gpu memory utilization %g: expected a fraction in (0, 1]", p->gpu_memory_utilization),
               VLLMC_EINVAL;
    struct vllmc_engine *e = xcalloc(1, sizeof *e);
    pthread_mutex_init(&e->sub_mu, NULL);
    pthread_cond_init(&e->sub_cv, NULL);
    pthread_mutex_init(&e->stats_mu, NULL);
    if (modeldir_resolve(p->model, e->dir, sizeof e->dir, err, errlen)) goto fail_load;
    if (cuda ? backend_cuda_create_mode(&e->bk, ordinal, p->n_threads, p->cuda_matmul, err, errlen)
             : backend_cpu_create(&e->bk, p->n_threads, p->cpu_isa, err, errlen))
        goto fail_load;
    if (model_load(&e->model, e->dir, e->bk, p->hf_overrides, err, errlen)) goto fail_load;
    e->model->eager = p->enforce_eager > 0;
    /* VLLMC_GRAPH_MAX_T=N > 0: record decode steps of at most N sequences (measurements) */
    if (getenv("VLLMC_GRAPH_MAX_T")) e->model->graph_max_t = atoi(getenv("VLLMC_GRAPH_MAX_T"));
    if (cuda)
        snprintf(e->dev_desc, sizeof e->dev_desc, "cuda: %s, %s activations%s", backend_cuda_name(e->bk),
                 backend_cuda_matmul_mode(e->bk), e->model->eager ? ", eager" : "");
    /* sampling passes where the logits are, if the backend can (VLLMC_DEVICE_SAMPLING=0: never) */
    const char *ds = getenv("VLLMC_DEVICE_SAMPLING");
    e->dev_sampling = e->bk->ops->sample_rows && !(ds && !strcmp(ds, "0"));
    /* async scheduling pays only where the forward and the sampling are
     * queued and the host waits for the tokens alone; elsewhere it would
     * hold each step's text back by one forward */
    e->overlap = p->async_scheduling > 0 || (p->async_scheduling == 0 && e->dev_sampling && !e->bk->host_mem);
    const struct hparams *hp = &e->model->hp;
    if (parse_kv_dtype(p->kv_cache_dtype, model_default_kv_dtype(hp), &e->kv_dtype)) {
        errf(err, errlen, "kv cache dtype '%s': expected auto, float32, bfloat16 or float16", p->kv_cache_dtype);
        vllmc_engine_close(e);
        return VLLMC_EINVAL;
    }
    e->max_model_len = p->max_model_len > 0 ? p->max_model_len : hp->max_pos;
    e->block_size = B;
    /* vLLM's batch defaults for its API server (arg_utils.py,
     * get_batch_defaults): 1024 sequences and 8192 tokens a step on a GPU of
     * 70 GiB or more other than an A100 (H100, H200), else 256 and 2048 */
    size_t dev_free, dev_total;
    const bool big_gpu = cuda && bk_mem_info(e->bk, &dev_free, &dev_total) == 0 &&
                         dev_total >= ((size_t)70 << 30) && !strstr(backend_cuda_name(e->bk), "A100");
    e->max_num_seqs = p->max_num_seqs > 0 ? p->max_num_seqs : big_gpu ? 1024 : 256;
    e->max_num_batched_tokens = p->max_num_batched_tokens > 0 ? p->max_num_batched_tokens : big_gpu ? 8192 : 2048;
    size_t per_tok = model_kv_bytes_per_token(hp, e->kv_dtype);
    int64_t blocks, budget = p->kv_cache_memory_bytes;
    if (p->kv_cache_memory_bytes > 0) blocks = p->kv_cache_memory_bytes / (int64_t)(per_tok * (size_t)B);
    else if (p->kv_cache_tokens > 0) blocks = (p->kv_cache_tokens + B - 1) / B;
    else if (!e->bk->host_mem && bk_mem_info(e->bk, &dev_free, &dev_total) == 0) {
        /* a device (vLLM's --gpu-memory-utilization): the engine may use
         * util * total; the KV cache gets that less what is in use now
         * (weights, the context, other processes) and a step's activations,
         * and (as on the CPU) no more than max_num_seqs full contexts */
        double util = p->gpu_memory_utilization > 0 ? p->gpu_memory_utilization : 0.9;
        budget = (int64_t)(util * (double)dev_total) - (int64_t)(dev_total - dev_free) -
                 device_activation_bytes(hp, e->max_num_batched_tokens);
        if (budget <= 0) {
            errf(err, errlen, "gpu memory utilization %.2f of %.1f GiB leaves no room for a KV cache (%.1f GiB in "
                 "use, %.1f GiB for activations); raise it or give --kv-cache-memory-bytes", util,
                 (double)dev_total / (1 << 30), (double)(dev_total - dev_free) / (1 << 30),
                 (double)device_activation_bytes(hp, e->max_num_batched_tokens) / (1 << 30));
            vllmc_engine_close(e);
            return VLLMC_ENOMEM;
        }
        blocks = budget / (int64_t)(per_tok * (size_t)B);
        int64_t cap = ((int64_t)e->max_model_len + B - 1) / B * e->max_num_seqs;
        if (blocks > cap) blocks = cap;
    } else {
        /* default: a quarter of the available memory, at most 4 GiB (vLLM's
         * CPU default KV space), and no more than max_num_seqs full contexts */
        int64_t bytes = mem_available() / 4;
        if (bytes > ((int64_t)4 << 30)) bytes = (int64_t)4 << 30;
        blocks = bytes / (int64_t)(per_tok * (size_t)B);
        int64_t cap = ((int64_t)e->max_model_len + B - 1) / B * e->max_num_seqs;
        if (blocks > cap) blocks = cap;
    }
    blocks += 1; /* the null block */
    if (blocks < 2) {
        errf(err, errlen, "kv cache of %lld bytes holds no block of %d tokens (%zu bytes each)",
             (long long)budget, B, per_tok * (size_t)B);
        vllmc_engine_close(e);
        return VLLMC_ENOMEM;
    }
    if (blocks > INT32_MAX / B) blocks = INT32_MAX / B;
    int64_t cap_tokens = (blocks - 1) * B;
    if (cap_tokens < e->max_model_len) {
        if (p->max_model_len > 0) {
            errf(err, errlen,
                 "max_model_len %d needs %lld KV blocks, but the KV cache holds %lld (%lld tokens); give more "
                 "--kv-cache-memory-bytes or a smaller --max-model-len",
                 e->max_model_len, (long long)((e->max_model_len + B - 1) / B), (long long)(blocks - 1),
                 (long long)cap_tokens);
            vllmc_engine_close(e);
            return VLLMC_ENOMEM;
        }
        log_warn("max_model_len lowered from %d to %lld: the KV cache holds that many tokens", e->max_model_len,
                 (long long)cap_tokens);
        e->max_model_len = (int)cap_tokens;
    }
    e->num_blocks = (int)blocks;
    size_t layer_bytes = (size_t)blocks * (size_t)B * (size_t)hp->n_kv_head * (size_t)hp->head_dim *
                         dtype_size(e->kv_dtype);
    e->kv_mem = bk_alloc(e->bk, 2 * (size_t)hp->n_layer * layer_bytes);
    if (!e->kv_mem) {
        errf(err, errlen, "cannot allocate %zu bytes of KV cache", 2 * (size_t)hp->n_layer * layer_bytes);
        vllmc_engine_close(e);
        return VLLMC_ENOMEM;
    }
    e->kv.n_layer = hp->n_layer;
    e->kv.layers = xcalloc((size_t)hp->n_layer, sizeof *e->kv.layers);
    for (int i = 0; i < hp->n_layer; i++) {
        struct bk_kv *l = &e->kv.layers[i];
        l->k = (char *)e->kv_mem + (2 * (size_t)i) * layer_bytes;
        l->v = (char *)e->kv_mem + (2 * (size_t)i + 1) * layer_bytes;
        l->dtype = e->kv_dtype;
        l->num_blocks = e->num_blocks;
        l->block_size = B;
        l->n_kv_heads = hp->n_kv_head;
        l->head_dim = hp->head_dim;
    }
    if (kv_pool_init(&e->pool, e->num_blocks, B, !p->disable_prefix_caching, algo, err, errlen)) {
        vllmc_engine_close(e);
        return VLLMC_ENOMEM;
    }
    /* text is optional (token-id prompts work without), but a tokenizer.json
     * that is there and broken is a load error naming it */
    char tpath[4200];
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", e->dir);
    if (access(tpath, F_OK) == 0 && tokenizer_load(&e->tok, e->dir, err, errlen)) goto fail_load;
    load_sampling_defaults(e, p->generation_config);
    e->seed = p->seed;
    e->n_scratch = bk_host_threads(e->bk);
    e->scratch = xcalloc((size_t)e->n_scratch, sizeof *e->scratch);
    for (int i = 0; i < e->n_scratch; i++) e->scratch[i] = sampler_scratch_new(hp->n_vocab);
    if (pthread_create(&e->thread, NULL, engine_main, e)) {
        errf(err, errlen, "cannot start the engine thread");
        vllmc_engine_close(e);
        return VLLMC_ENOMEM;
    }
    e->thread_started = true;
    *out = e;
    return VLLMC_OK;
fail_load:
    vllmc_engine_close(e);
    return VLLMC_ELOAD;
}

static void seq_free(struct seq *s) {
    free(s->tokens);
    free(s->blocks);
    free(s->hashes);
    free(s->text);
    engine_detok_free(s->ds);
}

static void request_destroy(struct vllmc_request *r) {
    for (int i = 0; i < r->n_seqs; i++) {
        seq_free(&r->seqs[i]);
        for (int k = 0; k < 2; k++) {
            struct chan_seq *c = k ? &r->delivered[i] : &r->pending[i];
            free(c->tok), free(c->text), free(c->lp), free(c->top);
        }
    }
    free(r->seqs), free(r->pending), free(r->delivered), free(r->out_seqs);
    free(r->prompt), free(r->salt);
    for (int i = 0; i < r->sp.n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids), free(r->bias_ids), free(r->bias_vals), free(r->allowed);
    for (int i = 0; i < r->n_bw; i++) free(r->bw[i]);
    free(r->bw), free(r->bw_len);
    free(r->plp), free(r->plp_top);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

void engine_release_request(struct vllmc_request *r) {
    if (atomic_fetch_sub(&r->refs, 1) == 1) request_destroy(r);
}

void vllmc_engine_close(vllmc_engine *e) {
    if (!e) return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->sub_mu);
        e->stop = true;
        pthread_cond_signal(&e->sub_cv);
        pthread_mutex_unlock(&e->sub_mu);
        pthread_join(e->thread, NULL);
    }
    model_free(e->model);
    tokenizer_free(e->tok);
    if (e->bk) bk_free(e->bk, e->kv_mem);
    bk_destroy(e->bk);
    kv_pool_free(&e->pool);
    free(e->kv.layers);
    for (int i = 0; i < e->n_scratch; i++) sampler_scratch_free(e->scratch[i]);
    free(e->scratch);
    free(e->items);
    free(e->running), free(e->waiting), free(e->sched), free(e->touched);
    free(e->b_tok), free(e->b_pos), free(e->b_slot), free(e->b_qs), free(e->b_sl), free(e->b_rl);
    free(e->b_table), free(e->b_rows), free(e->logits);
    free(e->dreq), free(e->dres), free(e->dcid), free(e->dcv);
    pthread_mutex_destroy(&e->sub_mu);
    pthread_cond_destroy(&e->sub_cv);
    pthread_mutex_destroy(&e->stats_mu);
    free(e);
}

void vllmc_model_info(const vllmc_engine *e, struct vllmc_model_info *info) {
    const struct hparams *hp = &e->model->hp;
    memset(info, 0, sizeof *info);
    info->architecture = hp->arch;
    info->dir = e->dir;
    info->dtype = dtype_name(hp->dtype);
    info->n_vocab = hp->n_vocab;
    info->max_model_len = e->max_model_len;
    info->n_layers = hp->n_layer;
    info->kv_blocks = e->num_blocks - 1;
    info->kv_tokens = (int64_t)(e->num_blocks - 1) * e->block_size;
    info->block_size = e->block_size;
    info->bos_token_id = hp->bos_token_id;
    info->n_eos = hp->n_eos;
    info->eos_token_ids = hp->eos_token_ids;
    info->cpu_isa = e->dev_desc[0] ? e->dev_desc : strcmp(e->bk->ops->name, "cpu") ? e->bk->ops->name
                                                                                  : backend_cpu_isa(e->bk);
    info->n_threads = e->bk->n_threads;
    info->max_num_seqs = e->max_num_seqs;
    info->max_num_batched_tokens = e->max_num_batched_tokens;
}

/* ---- the engine thread -------------------------------------------------- */

static void admit(struct vllmc_engine *e, struct vllmc_request *r) {
    for (int i = 0; i < r->n_seqs; i++) {
        struct seq *s = &r->seqs[i];
        s->state = SEQ_WAITING;
        if (e->n_waiting + 1 > e->cap_waiting) {
            e->cap_waiting = MAX(16, 2 * e->cap_waiting);
            e->waiting = realloc(e->waiting, (size_t)e->cap_waiting * sizeof *e->waiting);
            if (!e->waiting) abort();
        }
        e->waiting[e->n_waiting++] = s;
    }
}

static void *engine_main(void *arg) {
    struct vllmc_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->sub_mu);
        while (!e->stop && !e->sub_head && !e->n_running && !e->n_waiting && !e->inflight) {
            e->t_ready = 0;
            pthread_cond_wait(&e->sub_cv, &e->sub_mu);
        }
        struct vllmc_request *list = e->sub_head;
        e->sub_head = e->sub_tail = NULL;
        bool stop = e->stop;
        pthread_mutex_unlock(&e->sub_mu);
        for (struct vllmc_request *r = list, *nx; r; r = nx) {
            nx = r->next_sub;
            admit(e, r);
        }
        if (stop) {
            engine_drain(e);
            for (int i = 0; i < e->n_running; i++) engine_finish_seq(e, e->running[i], VLLMC_FINISH_ABORT);
            for (int i = 0; i < e->n_waiting; i++) engine_finish_seq(e, e->waiting[i], VLLMC_FINISH_ABORT);
            e->n_running = e->n_waiting = 0;
            engine_publish(e);
            return NULL;
        }
        engine_step(e);
    }
}

/* ---- submission ---------------------------------------------------------- */

static char *dupn(const char *s) { return s ? xstrdup(s) : NULL; }

static void *dup_arr(const void *p, int n, size_t elem) {
    if (!p || n <= 0) return NULL;
    void *q = xmalloc((size_t)n * elem);
    memcpy(q, p, (size_t)n * elem);
    return q;
}

/* vLLM's SamplingParams checks (sampler_check_params), then what depends
 * on this engine: logprob limits, vocabulary, a tokenizer for text features. */
static int validate(const vllmc_engine *e, const struct vllmc_sampling_params *sp, char *err, size_t errlen) {
    const int V = e->model->hp.n_vocab;
    if (sampler_check_params(sp, V, err, errlen)) return -1;
    if (sp->n > 256) return errf(err, errlen, "n must be at most 256, got %d", sp->n);
    if (sp->logprobs > VLLMC_MAX_LOGPROBS)
        return errf(err, errlen, "Requested sample logprobs of %d, which is greater than max allowed: %d",
                    sp->logprobs, VLLMC_MAX_LOGPROBS);
    if (sp->prompt_logprobs > VLLMC_MAX_LOGPROBS)
        return errf(err, errlen, "Requested prompt logprobs of %d, which is greater than max allowed: %d",
                    sp->prompt_logprobs, VLLMC_MAX_LOGPROBS);
    for (int i = 0; i < sp->n_stop_token_ids; i++)
        if (sp->stop_token_ids[i] < 0 || sp->stop_token_ids[i] >= V)
            return errf(err, errlen, "stop_token_ids: %d is out of vocabulary [0, %d)", sp->stop_token_ids[i], V);
    for (int i = 0; i < sp->n_logit_bias; i++)
        if (!isfinite(sp->logit_bias_values[i])) return errf(err, errlen, "logit_bias: values must be finite");
    if (sp->n_stop && !e->tok) return errf(err, errlen, "stop strings need a tokenizer; this model has none");
    if (sp->n_bad_words && !e->tok) return errf(err, errlen, "bad_words need a tokenizer; this model has none");
    return 0;
}

int vllmc_submit(vllmc_engine *e, const struct vllmc_request_params *rp, vllmc_request **out, char *err,
                 size_t errlen) {
    *out = NULL;
    const struct vllmc_sampling_params *sp = &rp->sampling;
    const struct hparams *hp = &e->model->hp;
    if (!rp->prompt || rp->n_prompt <= 0) return errf(err, errlen, "the prompt is empty"), VLLMC_EINVAL;
    if (validate(e, sp, err, errlen)) return VLLMC_EINVAL;
    int n_prompt = rp->n_prompt;
    const int32_t *prompt = rp->prompt;
    if (rp->truncate_prompt_tokens > 0 && n_prompt > rp->truncate_prompt_tokens) {
        prompt += n_prompt - rp->truncate_prompt_tokens;
        n_prompt = rp->truncate_prompt_tokens;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= hp->n_vocab)
            return errf(err, errlen, "prompt token %d at index %d is out of vocabulary [0, %d)", prompt[i], i,
                        hp->n_vocab), VLLMC_EINVAL;
    if (n_prompt >= e->max_model_len)
        return errf(err, errlen,
                    "This model's maximum context length is %d tokens. However, your request has %d input tokens. "
                    "Please reduce the length of the input messages.", e->max_model_len, n_prompt), VLLMC_EINVAL;
    if (sp->max_tokens > 0 && (int64_t)n_prompt + sp->max_tokens > e->max_model_len)
        return errf(err, errlen,
                    "This model's maximum context length is %d tokens. However, you requested %lld tokens (%d in "
                    "the messages, %d in the completion). Please reduce the length of the messages or completion.",
                    e->max_model_len, (long long)n_prompt + sp->max_tokens, n_prompt, sp->max_tokens), VLLMC_EINVAL;

    struct vllmc_request *r = xcalloc(1, sizeof *r);
    atomic_init(&r->refs, 2);
    atomic_init(&r->aborted, 0);
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    r->e = e;
    r->sp = *sp;
    r->prompt = dup_arr(prompt, n_prompt, sizeof *prompt);
    r->n_prompt = n_prompt;
    r->salt = dupn(rp->cache_salt);
    if (sp->n_stop) {
        r->stop = xcalloc((size_t)sp->n_stop, sizeof *r->stop);
        for (int i = 0; i < sp->n_stop; i++) {
            r->stop[i] = xstrdup(sp->stop[i]);
            r->max_stop_len = MAX(r->max_stop_len, (int)strlen(sp->stop[i]));
        }
    }
    r->sp.stop = (const char *const *)r->stop;
    r->stop_ids = dup_arr(sp->stop_token_ids, sp->n_stop_token_ids, sizeof(int32_t));
    r->sp.stop_token_ids = r->stop_ids;
    r->bias_ids = dup_arr(sp->logit_bias_ids, sp->n_logit_bias, sizeof(int32_t));
    r->bias_vals = dup_arr(sp->logit_bias_values, sp->n_logit_bias, sizeof(float));
    r->sp.logit_bias_ids = r->bias_ids;
    r->sp.logit_bias_values = r->bias_vals;
    r->allowed = dup_arr(sp->allowed_token_ids, sp->n_allowed_token_ids, sizeof(int32_t));
    r->sp.allowed_token_ids = r->allowed;
    r->sp.bad_words = NULL;
    r->sp.n_bad_words = 0;
    if (sp->n_bad_words && encode_bad_words(e, r, sp, err, errlen)) {
        request_destroy(r);
        return VLLMC_EINVAL;
    }
    r->notify = rp->notify;
    r->notify_arg = rp->notify_arg;
    r->t_arrival = time_now();
    if (sp->prompt_logprobs >= 0) {
        r->plp = xcalloc((size_t)n_prompt, sizeof *r->plp);
        r->plp_top = xcalloc((size_t)n_prompt * (size_t)MAX(sp->prompt_logprobs, 1), sizeof *r->plp_top);
        r->plp[0].chosen.token = prompt[0];
        r->plp[0].chosen.logprob = NAN;
    }
    r->n_seqs = sp->n;
    r->seqs = xcalloc((size_t)r->n_seqs, sizeof *r->seqs);
    r->pending = xcalloc((size_t)r->n_seqs, sizeof *r->pending);
    r->delivered = xcalloc((size_t)r->n_seqs, sizeof *r->delivered);
    r->out_seqs = xcalloc((size_t)r->n_seqs, sizeof *r->out_seqs);

    pthread_mutex_lock(&e->sub_mu);
    if (e->stop) {
        pthread_mutex_unlock(&e->sub_mu);
        request_destroy(r);
        return errf(err, errlen, "the engine is shutting down"), VLLMC_EINVAL;
    }
    r->serial = ++e->serial;
    if (rp->request_id) snprintf(r->id, sizeof r->id, "%s", rp->request_id);
    else snprintf(r->id, sizeof r->id, "req-%llu", (unsigned long long)r->serial);
    for (int i = 0; i < r->n_seqs; i++) {
        struct seq *s = &r->seqs[i];
        s->req = r;
        s->index = i;
        s->state = SEQ_NEW;
        s->cap_tokens = n_prompt + 16;
        s->tokens = xmalloc((size_t)s->cap_tokens * sizeof *s->tokens);
        memcpy(s->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
        s->n_tokens = s->n_prompt = n_prompt;
        s->ds = sp->detokenize ? engine_detok_new(e, r) : NULL;
        if (sp->has_seed) sampler_seed(s->rng, sp->seed, (uint64_t)i);
        else sampler_seed(s->rng, e->seed ^ (r->serial * 0x9E3779B97F4A7C15ull), (uint64_t)i);
        r->pending[i].stop_token = r->delivered[i].stop_token = -1;
    }
    if (e->sub_tail) e->sub_tail->next_sub = r;
    else e->sub_head = r;
    e->sub_tail = r;
    pthread_cond_signal(&e->sub_cv);
    pthread_mutex_unlock(&e->sub_mu);
    *out = r;
    return VLLMC_OK;
}

void vllmc_abort(vllmc_request *r) {
    if (!r) return;
    atomic_store(&r->aborted, 1);
    /* wake the engine if it sleeps: it checks aborts at every step */
    pthread_mutex_lock(&r->mu);
    struct vllmc_engine *e = r->engine_done ? NULL : r->e;
    pthread_mutex_unlock(&r->mu);
    if (e) {
        pthread_mutex_lock(&e->sub_mu);
        pthread_cond_signal(&e->sub_cv);
        pthread_mutex_unlock(&e->sub_mu);
    }
}

void vllmc_request_free(vllmc_request *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->notify = NULL; /* no notify after this returns (the engine calls it under mu) */
    pthread_mutex_unlock(&r->mu);
    vllmc_abort(r);
    engine_release_request(r);
}

const char *vllmc_finish_name(enum vllmc_finish f) {
    switch (f) {
    case VLLMC_FINISH_STOP: return "stop";
    case VLLMC_FINISH_LENGTH: return "length";
    case VLLMC_FINISH_ABORT: return "abort";
    case VLLMC_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

int vllmc_request_next(vllmc_request *r, struct vllmc_output *out, int timeout_ms) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->mu);
    if (r->finished_read) {
        pthread_mutex_unlock(&r->mu);
        return VLLMC_EDONE;
    }
    struct timespec dl;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    }
    while (!r->any_news) {
        int rc = timeout_ms >= 0 ? pthread_cond_timedwait(&r->cv, &r->mu, &dl) : pthread_cond_wait(&r->cv, &r->mu);
        if (rc == ETIMEDOUT && !r->any_news) {
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
    }
    r->any_news = false;
    int k = 0;
    for (int i = 0; i < r->n_seqs; i++) {
        struct chan_seq *p = &r->pending[i];
        if (!p->news) continue;
        struct chan_seq tmp = r->delivered[i];
        r->delivered[i] = *p;
        *p = tmp;
        p->n_tok = 0, p->text_len = 0, p->n_top = 0, p->news = false;
        if (p->text) p->text[0] = 0;
        struct chan_seq *d = &r->delivered[i];
        if (d->lp)
            for (int j = 0; j < d->n_tok; j++) d->lp[j].top = d->lp[j].n_top ? d->top + (uintptr_t)d->lp[j].top : NULL;
        struct vllmc_seq_output *o = &r->out_seqs[k++];
        o->index = i;
        o->n_tokens = d->n_tok;
        o->tokens = d->tok;
        o->text = d->text ? d->text : "";
        o->text_len = d->text_len;
        o->logprobs = r->sp.logprobs >= 0 ? d->lp : NULL;
        o->finish = d->finish;
        o->stop_token = d->stop_token;
        o->stop_str = d->stop_str;
        o->n_total_tokens = d->n_total;
        /* finish and stop info are sticky on the pending side too */
        p->finish = d->finish, p->stop_token = d->stop_token, p->stop_str = d->stop_str, p->n_total = d->n_total;
    }
    out->n_seqs = k;
    out->seqs = r->out_seqs;
    out->n_prompt_tokens = r->n_prompt;
    out->n_cached_tokens = r->n_cached_tokens;
    if (r->plp_ready && !r->plp_sent) {
        for (int i = 1; i < r->n_prompt; i++) r->plp[i].top = r->plp_top + (size_t)i * r->sp.prompt_logprobs;
        out->prompt_logprobs = r->plp;
        r->plp_sent = true;
    }
    out->finished = r->all_finished;
    if (r->all_finished) r->finished_read = true;
    out->error = r->has_error ? r->error : NULL;
    out->t_arrival = r->t_arrival;
    out->t_scheduled = r->t_scheduled;
    out->t_first_token = r->t_first;
    out->t_last_token = r->t_last;
    pthread_mutex_unlock(&r->mu);
    return 1;
}

void vllmc_engine_stats(vllmc_engine *e, struct vllmc_engine_stats *st) {
    pthread_mutex_lock(&e->stats_mu);
    *st = e->st_pub;
    pthread_mutex_unlock(&e->stats_mu);
}

/* ---- convenience --------------------------------------------------------- */

int vllmc_generate_greedy(vllmc_engine *e, const int32_t *prompt, int n_prompt, int max_tokens, int ignore_eos,
                          int32_t *out, int *n_out, char *err, size_t errlen) {
    *n_out = 0;
    if (max_tokens <= 0) return max_tokens < 0 ? (errf(err, errlen, "max_tokens must be >= 0"), VLLMC_EINVAL) : 0;
    struct vllmc_request_params rp = { .prompt = prompt, .n_prompt = n_prompt };
    vllmc_sampling_params_default(e, &rp.sampling);
    rp.sampling.temperature = 0;
    rp.sampling.max_tokens = max_tokens;
    rp.sampling.ignore_eos = ignore_eos;
    rp.sampling.detokenize = 0;
    vllmc_request *r;
    int rc = vllmc_submit(e, &rp, &r, err, errlen);
    if (rc) return rc;
    struct vllmc_output o;
    while ((rc = vllmc_request_next(r, &o, -1)) == 1) {
        for (int i = 0; i < o.n_seqs; i++)
            for (int j = 0; j < o.seqs[i].n_tokens && *n_out < max_tokens; j++) out[(*n_out)++] = o.seqs[i].tokens[j];
        if (o.error) {
            errf(err, errlen, "%s", o.error);
            vllmc_request_free(r);
            return VLLMC_EINVAL;
        }
        if (o.finished) break;
    }
    vllmc_request_free(r);
    return VLLMC_OK;
}

const void *vllmc_engine_tokenizer(const vllmc_engine *e) { return e->tok; }
