/* engine.c — the engine behind include/vllmc.h.
 *
 * Owns: the backend, the loaded model and the KV pool (one allocation,
 * sized once at open; per layer [num_blocks][B][Hkv][D] for K and for V;
 * block 0 is the null block and never handed out).
 *
 * Today it runs one sequence at a time: a chunked prefill (chunks of at most
 * PREFILL_CHUNK tokens) and then one decode step per token, through the same
 * flat varlen batch the scheduler will build (DESIGN.md §4). The scheduler,
 * block manager with prefix caching and the request queue replace
 * vllmc_generate_greedy's simple block list in the engine issue.
 *
 * Does not: tokenize, sample anything but argmax, or serve concurrently. */
#include "vllmc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/backend.h"
#include "io/modeldir.h"
#include "model/model.h"
#include "text/detok.h"

#define PREFILL_CHUNK 512

struct vllmc_engine {
    struct backend *bk;
    struct model *model;
    struct model_kv kv;
    void *kv_mem;
    enum dtype kv_dtype;
    int block_size, num_blocks, max_model_len;
    struct detok *detok; /* NULL when the checkpoint has no tokenizer.json */
    char dir[4096];
};

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

int vllmc_engine_open(vllmc_engine **out, const struct vllmc_engine_params *p, char *err, size_t errlen) {
    *out = NULL;
    if (!p || !p->model) return errf(err, errlen, "no model given"), VLLMC_EINVAL;
    int B = p->block_size ? p->block_size : 16;
    if (B != 8 && B != 16 && B != 32) return errf(err, errlen, "block size %d: must be 8, 16 or 32", B), VLLMC_EINVAL;
    struct vllmc_engine *e = xcalloc(1, sizeof *e);
    if (modeldir_resolve(p->model, e->dir, sizeof e->dir, err, errlen)) goto fail_load;
    if (backend_cpu_create(&e->bk, p->n_threads, p->cpu_isa, err, errlen)) goto fail_load;
    if (model_load(&e->model, e->dir, e->bk, p->hf_overrides, err, errlen)) goto fail_load;
    const struct hparams *hp = &e->model->hp;
    if (parse_kv_dtype(p->kv_cache_dtype, model_default_kv_dtype(hp), &e->kv_dtype)) {
        errf(err, errlen, "kv cache dtype '%s': expected auto, float32, bfloat16 or float16", p->kv_cache_dtype);
        vllmc_engine_close(e);
        return VLLMC_EINVAL;
    }
    e->max_model_len = p->max_model_len > 0 ? p->max_model_len : hp->max_pos;
    e->block_size = B;
    size_t per_tok = model_kv_bytes_per_token(hp, e->kv_dtype);
    int64_t blocks;
    if (p->kv_cache_memory_bytes > 0) blocks = p->kv_cache_memory_bytes / (int64_t)(per_tok * (size_t)B);
    else {
        int64_t toks = p->kv_cache_tokens > 0 ? MIN(p->kv_cache_tokens, (int64_t)e->max_model_len) : e->max_model_len;
        blocks = (toks + B - 1) / B;
    }
    blocks += 1; /* the null block */
    if (blocks < 2) {
        errf(err, errlen, "kv cache of %lld bytes holds no block of %d tokens (%zu bytes each)",
             (long long)p->kv_cache_memory_bytes, B, per_tok * (size_t)B);
        vllmc_engine_close(e);
        return VLLMC_ENOMEM;
    }
    if (blocks > INT32_MAX / B) blocks = INT32_MAX / B;
    e->num_blocks = (int)blocks;
    size_t layer_bytes = (size_t)blocks * (size_t)B * (size_t)hp->n_kv_head * (size_t)hp->head_dim *
                         dtype_size(e->kv_dtype);
    e->kv_mem = calloc(2 * (size_t)hp->n_layer, layer_bytes);
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
    char terr[256];
    if (detok_load(&e->detok, e->dir, terr, sizeof terr)) e->detok = NULL; /* text output is optional */
    *out = e;
    return VLLMC_OK;
fail_load:
    vllmc_engine_close(e);
    return VLLMC_ELOAD;
}

void vllmc_engine_close(vllmc_engine *e) {
    if (!e) return;
    model_free(e->model);
    detok_free(e->detok);
    bk_destroy(e->bk);
    free(e->kv.layers);
    free(e->kv_mem);
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
    info->cpu_isa = backend_cpu_isa(e->bk);
    info->n_threads = e->bk->n_threads;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int vllmc_generate_greedy(vllmc_engine *e, const int32_t *prompt, int n_prompt, int max_tokens, int ignore_eos,
                          int32_t *out, int *n_out, char *err, size_t errlen) {
    *n_out = 0;
    const struct hparams *hp = &e->model->hp;
    if (n_prompt <= 0) return errf(err, errlen, "empty prompt"), VLLMC_EINVAL;
    if (max_tokens < 0) return errf(err, errlen, "max_tokens must be >= 0"), VLLMC_EINVAL;
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= hp->n_vocab)
            return errf(err, errlen, "prompt token %d at index %d is out of range [0, %d)", prompt[i], i,
                        hp->n_vocab), VLLMC_EINVAL;
    int total = n_prompt + max_tokens;
    if (total > e->max_model_len)
        return errf(err, errlen, "prompt (%d tokens) + max_tokens (%d) exceeds max_model_len %d", n_prompt,
                    max_tokens, e->max_model_len), VLLMC_EINVAL;
    const int B = e->block_size, nb = (total + B - 1) / B;
    if (nb > e->num_blocks - 1)
        return errf(err, errlen, "KV cache holds %d blocks; this request needs %d", e->num_blocks - 1, nb),
               VLLMC_ENOMEM;

    int32_t *table = xmalloc((size_t)nb * sizeof(int32_t));
    for (int i = 0; i < nb; i++) table[i] = 1 + i; /* blocks 1..nb; block 0 is null */
    int chunk = MIN(n_prompt, PREFILL_CHUNK);
    int32_t *tok = xmalloc((size_t)chunk * sizeof(int32_t)), *pos = xmalloc((size_t)chunk * sizeof(int32_t));
    int32_t *slot = xmalloc((size_t)chunk * sizeof(int32_t));
    float *logits = xmalloc((size_t)hp->n_vocab * sizeof(float));
    int rc = VLLMC_OK, done = 0, next = -1;
    while (*n_out < max_tokens) {
        int n;
        if (done < n_prompt) {
            n = MIN(chunk, n_prompt - done);
            for (int i = 0; i < n; i++) tok[i] = prompt[done + i];
        } else {
            n = 1;
            tok[0] = next;
        }
        for (int i = 0; i < n; i++) {
            pos[i] = done + i;
            slot[i] = table[(done + i) / B] * B + (done + i) % B;
        }
        int32_t qs[2] = { 0, n }, sl[1] = { done + n }, rl[1] = { MAX(n_prompt, done + n) }, row = n - 1;
        struct model_batch b = {
            .n_tokens = n, .tokens = tok, .positions = pos, .slot_mapping = slot,
            .attn = { .n_seqs = 1, .query_start = qs, .seq_len = sl, .block_table = table, .max_blocks = nb },
            .rope_len = rl, .n_logits = 1, .logits_rows = &row,
        };
        if (model_forward(e->model, &b, &e->kv, logits, err, errlen)) { rc = VLLMC_EINVAL; break; }
        done += n;
        if (done < n_prompt) continue;
        next = argmax(logits, hp->n_vocab);
        out[(*n_out)++] = next;
        if (!ignore_eos) {
            bool eos = false;
            for (int i = 0; i < hp->n_eos; i++) eos |= next == hp->eos_token_ids[i];
            if (eos) break;
        }
    }
    free(table);
    free(tok);
    free(pos);
    free(slot);
    free(logits);
    return rc;
}

int vllmc_detokenize(const vllmc_engine *e, const int32_t *ids, int n, char *buf, size_t cap) {
    if (!e->detok || cap == 0) return -1;
    size_t o = 0;
    for (int i = 0; i < n && o + 1 < cap; i++) o += detok_piece(e->detok, ids[i], buf + o, cap - 1 - o);
    buf[o] = 0;
    return (int)o;
}
