/* model.c — load a checkpoint directory and bind its tensors by name.
 *
 * Binding happens once, with strict shapes and dtypes: after model_load the
 * forward addresses layer->wq, never a string (STYLE.md 5). A missing or
 * mis-shaped tensor fails the load with its name and the expected and actual
 * shapes. Matrices stay in their stored precision inside the mmapped file;
 * only 1-D tensors (norm weights, biases) are copied to f32, which is also
 * where Gemma's (1 + w) norm is folded (STYLE.md 6). Fused tensors (Phi-3's
 * qkv_proj and gate_up_proj) are split by row offsets, without a copy.
 *
 * Quantized checkpoints (io/quant.h): the quantization config is read and
 * preflighted before anything else; a matrix whose module has MLX .scales
 * binds as an affine weight in place, one with AWQ .qweight is repacked into
 * the same affine form in memory the model owns. The forward does not know
 * the difference.
 *
 * Weight-name prefixes: plain causal LMs use "model."; wrappers such as
 * Gemma3ForConditionalGeneration use "model.language_model." (transformers 5)
 * or "language_model.model." (older checkpoints). Vision towers are ignored. */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>

#include "io/quant.h"
#include "io/safetensors.h"

struct binder {
    struct model *m;
    const struct quant_cfg *qc;
    const char *prefix;   /* e.g. "model." */
    char *err;
    size_t errlen;
};

static void shape_str(const struct st_tensor *t, char *buf, size_t len) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

static const struct st_tensor *find_t(struct binder *b, const char *name, bool optional) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", b->prefix, name);
    const struct st_tensor *t = st_find(b->m->st, full);
    if (!t && !optional) errf(b->err, b->errlen, "%s: tensor '%s' is missing from the checkpoint", b->m->dir, full);
    return t;
}

static bool float_dtype(enum dtype d) { return d == DT_F32 || d == DT_BF16 || d == DT_F16; }

static void *own_bytes(struct model *m, size_t n);

/* A quantized matrix `name` (ending in ".weight") of logical shape [rows,
 * cols]: 0 bound, -1 error, 1 not quantized (bind it dense). The format
 * follows the config; whether this module is quantized follows its tensors
 * (MLX: .scales beside .weight; AWQ: .qweight), as mlx-lm and AutoAWQ
 * decide. */
static int bind_quantized(struct binder *b, struct bk_weight *w, const char *name, int64_t rows, int64_t cols) {
    if (b->qc->method == QUANT_NONE) return 1;
    char mod[512], probe[600];
    size_t len = strlen(name);
    if (len < 7 || strcmp(name + len - 7, ".weight") != 0) return 1;
    snprintf(mod, sizeof mod, "%s%.*s", b->prefix, (int)(len - 7), name);
    if (b->qc->method == QUANT_AWQ) {
        snprintf(probe, sizeof probe, "%s.qweight", mod);
        if (!st_find(b->m->st, probe)) return 1;
        void *mem = own_bytes(b->m, quant_awq_bytes(rows, cols, b->qc->group_size));
        return quant_bind_awq(b->m->st, mod, rows, cols, b->qc->group_size, mem, w, b->err, b->errlen) ? -1 : 0;
    }
    snprintf(probe, sizeof probe, "%s.scales", mod);
    if (!st_find(b->m->st, probe)) return 1;
    int bits, group;
    if (!quant_module_params(b->qc, mod, &bits, &group))
        return errf(b->err, b->errlen, "%s: config.json marks '%s' as not quantized (false) but the checkpoint has "
                    "'%s'", b->m->dir, mod, probe);
    return quant_bind_mlx(b->m->st, mod, rows, cols, bits, group, w, b->err, b->errlen) ? -1 : 0;
}

/* Bind a 2-D matrix of shape [rows, cols]. */
static int bind_matrix(struct binder *b, struct bk_weight *w, const char *name, int64_t rows, int64_t cols) {
    int q = bind_quantized(b, w, name, rows, cols);
    if (q <= 0) return q;
    const struct st_tensor *t = find_t(b, name, false);
    if (!t) return -1;
    char s[128];
    shape_str(t, s, sizeof s);
    if (!float_dtype(t->dtype)) /* first: a packed quantized weight has a shape of its own */
        return errf(b->err, b->errlen,
                    "%s: tensor '%s%s' has dtype %s; only F32, BF16 and F16 weights are supported here "
                    "(quantized checkpoints need their quantization config)",
                    t->file, b->prefix, name, dtype_name(t->dtype));
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return errf(b->err, b->errlen, "%s: tensor '%s%s' has shape %s, expected [%lld, %lld]", t->file, b->prefix,
                    name, s, (long long)rows, (long long)cols);
    /* every field: callers may hand in an uninitialised weight (bind_split) */
    *w = (struct bk_weight){ .dtype = t->dtype, .rows = rows, .cols = cols, .data = t->data, .fmt = BK_W_DENSE };
    return 0;
}

/* Rows [r0, r0 + rows) of a fused matrix of shape [total_rows, cols]. */
static int bind_split(struct binder *b, struct bk_weight *w, const char *name, int64_t total_rows, int64_t cols,
                      int64_t r0, int64_t rows) {
    struct bk_weight whole = { 0 };
    if (bind_matrix(b, &whole, name, total_rows, cols)) return -1;
    *w = whole;
    w->rows = rows;
    if (whole.fmt == BK_W_AFFINE) { /* rows of codes, scales and biases */
        size_t sb = (size_t)r0 * (size_t)(cols / whole.group_size) * dtype_size(whole.dtype);
        w->data = (const char *)whole.data + (size_t)r0 * bk_affine_row_bytes(&whole);
        w->scales = (const char *)whole.scales + sb;
        w->biases = (const char *)whole.biases + sb;
        return 0;
    }
    w->data = (const char *)whole.data + (size_t)r0 * (size_t)cols * dtype_size(whole.dtype);
    return 0;
}

static float *own_vec(struct model *m, size_t n) {
    if (m->n_owned == m->cap_owned) {
        m->cap_owned = m->cap_owned ? 2 * m->cap_owned : 64;
        float **nw = realloc(m->owned, (size_t)m->cap_owned * sizeof *nw);
        if (!nw) abort();
        m->owned = nw;
    }
    float *v = xmalloc(n * sizeof(float));
    m->owned[m->n_owned++] = v;
    return v;
}

/* Load-time memory owned by the model (AWQ repacks), kept in the same list
 * as the f32 vectors; 4-byte aligned. */
static void *own_bytes(struct model *m, size_t n) { return own_vec(m, (n + sizeof(float) - 1) / sizeof(float)); }

/* A 1-D tensor [n] copied to f32 (+ add, for Gemma's 1 + w). */
static int bind_vec(struct binder *b, const float **out, const char *name, int64_t n, float add, bool optional) {
    *out = NULL;
    const struct st_tensor *t = find_t(b, name, optional);
    if (!t) return optional ? 0 : -1;
    char s[128];
    shape_str(t, s, sizeof s);
    if (t->ndim != 1 || t->shape[0] != n)
        return errf(b->err, b->errlen, "%s: tensor '%s%s' has shape %s, expected [%lld]", t->file, b->prefix, name,
                    s, (long long)n);
    if (!float_dtype(t->dtype))
        return errf(b->err, b->errlen, "%s: tensor '%s%s' has dtype %s, expected F32, BF16 or F16", t->file,
                    b->prefix, name, dtype_name(t->dtype));
    float *v = own_vec(b->m, (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = dtype_read_f32(t->data, t->dtype, (size_t)i) + add;
    *out = v;
    return 0;
}

static int bind_layer(struct binder *b, int il) {
    struct model *m = b->m;
    const struct hparams *hp = &m->hp;
    struct layer_weights *L = &m->layers[il];
    const int64_t d = hp->d_model, qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_kv_head * hp->head_dim;
    const int64_t ff = hp->d_ff;
    const float one = hp->norm_plus_one ? 1.0f : 0.0f;
    char n[256];
#define NM(s) (snprintf(n, sizeof n, "layers.%d.%s", il, s), n)
    if (hp->family == FAM_PHI3) {
        const int64_t tot = qd + 2 * kvd;
        if (bind_split(b, &L->wq, NM("self_attn.qkv_proj.weight"), tot, d, 0, qd) ||
            bind_split(b, &L->wk, NM("self_attn.qkv_proj.weight"), tot, d, qd, kvd) ||
            bind_split(b, &L->wv, NM("self_attn.qkv_proj.weight"), tot, d, qd + kvd, kvd) ||
            bind_split(b, &L->w_gate, NM("mlp.gate_up_proj.weight"), 2 * ff, d, 0, ff) ||
            bind_split(b, &L->w_up, NM("mlp.gate_up_proj.weight"), 2 * ff, d, ff, ff))
            return -1;
    } else {
        if (bind_matrix(b, &L->wq, NM("self_attn.q_proj.weight"), qd, d) ||
            bind_matrix(b, &L->wk, NM("self_attn.k_proj.weight"), kvd, d) ||
            bind_matrix(b, &L->wv, NM("self_attn.v_proj.weight"), kvd, d) ||
            bind_matrix(b, &L->w_gate, NM("mlp.gate_proj.weight"), ff, d) ||
            bind_matrix(b, &L->w_up, NM("mlp.up_proj.weight"), ff, d))
            return -1;
    }
    if (bind_matrix(b, &L->wo, NM("self_attn.o_proj.weight"), d, qd) ||
        bind_matrix(b, &L->w_down, NM("mlp.down_proj.weight"), d, ff))
        return -1;
    if (hp->attn_bias) {
        if (bind_vec(b, &L->bq, NM("self_attn.q_proj.bias"), qd, 0, false) ||
            bind_vec(b, &L->bk, NM("self_attn.k_proj.bias"), kvd, 0, false) ||
            bind_vec(b, &L->bv, NM("self_attn.v_proj.bias"), kvd, 0, false))
            return -1;
    }
    if (hp->o_bias && bind_vec(b, &L->bo, NM("self_attn.o_proj.bias"), d, 0, false)) return -1;
    if (hp->mlp_bias) {
        if (bind_vec(b, &L->b_gate, NM("mlp.gate_proj.bias"), ff, 0, false) ||
            bind_vec(b, &L->b_up, NM("mlp.up_proj.bias"), ff, 0, false) ||
            bind_vec(b, &L->b_down, NM("mlp.down_proj.bias"), d, 0, false))
            return -1;
    }
    if (bind_vec(b, &L->attn_norm, NM("input_layernorm.weight"), d, one, false)) return -1;
    if (hp->sandwich_norms) {
        if (bind_vec(b, &L->post_attn_norm, NM("post_attention_layernorm.weight"), d, one, false) ||
            bind_vec(b, &L->ffn_norm, NM("pre_feedforward_layernorm.weight"), d, one, false) ||
            bind_vec(b, &L->post_ffn_norm, NM("post_feedforward_layernorm.weight"), d, one, false))
            return -1;
    } else if (bind_vec(b, &L->ffn_norm, NM("post_attention_layernorm.weight"), d, one, false))
        return -1;
    if (hp->qk_norm) {
        if (bind_vec(b, &L->q_norm, NM("self_attn.q_norm.weight"), hp->head_dim, one, false) ||
            bind_vec(b, &L->k_norm, NM("self_attn.k_norm.weight"), hp->head_dim, one, false))
            return -1;
    }
#undef NM
    return 0;
}

static const char *prefixes[] = { "model.", "model.language_model.", "language_model.model.", "" };

static int bind_all(struct model *m, const struct quant_cfg *qc, char *err, size_t errlen) {
    struct hparams *hp = &m->hp;
    struct binder b = { .m = m, .qc = qc, .prefix = NULL, .err = err, .errlen = errlen };
    char probe[128];
    for (size_t i = 0; i < ARRAY_LEN(prefixes) && !b.prefix; i++) {
        snprintf(probe, sizeof probe, "%sembed_tokens.weight", prefixes[i]);
        if (st_find(m->st, probe)) b.prefix = prefixes[i];
    }
    if (!b.prefix)
        return errf(err, errlen, "%s: no embedding table (looked for model.embed_tokens.weight, "
                    "model.language_model.embed_tokens.weight, language_model.model.embed_tokens.weight)", m->dir);
    if (bind_matrix(&b, &m->tok_emb, "embed_tokens.weight", hp->n_vocab, hp->d_model)) return -1;
    m->layers = xcalloc((size_t)hp->n_layer, sizeof *m->layers);
    for (int i = 0; i < hp->n_layer; i++)
        if (bind_layer(&b, i)) return -1;
    if (bind_vec(&b, &m->final_norm, "norm.weight", hp->d_model, hp->norm_plus_one ? 1.0f : 0.0f, false)) return -1;

    /* Output head: lm_head.weight beside the prefix root, unless tied. A
     * checkpoint without one is tied when the config does not say otherwise
     * (transformers drops tied copies on save and omits keys equal to the
     * defaults); one whose config says untied must have its head. */
    const char *heads[] = { "lm_head.weight", "language_model.lm_head.weight", "model.lm_head.weight" };
    const char *head = NULL;
    for (size_t i = 0; i < ARRAY_LEN(heads) && !head; i++)
        if (st_find(m->st, heads[i])) head = heads[i];
    if (!hp->tie_embeddings && !head && hp->tie_explicit)
        return errf(err, errlen, "%s: config.json says tie_word_embeddings false but the checkpoint has no "
                    "lm_head.weight (nor language_model.lm_head.weight)", m->dir);
    if (hp->tie_embeddings || !head) {
        hp->tie_embeddings = true;
        m->lm_head = m->tok_emb;
    } else {
        struct binder hb = b;
        hb.prefix = "";
        if (bind_matrix(&hb, &m->lm_head, head, hp->n_vocab, hp->d_model)) return -1;
    }
    return 0;
}

/* ---- device backends: weights uploaded once ------------------------------ */

static void *dev_copy(struct model *m, const void *src, size_t bytes, char *err, size_t errlen) {
    if (m->dev_count) { /* device_room's pass: the pointer stays the host's */
        *m->dev_count += (bytes + 511) / 512 * 512; /* cudaMalloc's granularity, at least */
        return (void *)src;
    }
    void *d = bk_alloc(m->bk, bytes);
    if (!d) {
        errf(err, errlen, "%s: cannot allocate %zu bytes of %s memory for the weights", m->dir, bytes, m->bk->ops->name);
        return NULL;
    }
    if (m->n_dev == m->cap_dev) {
        m->cap_dev = m->cap_dev ? 2 * m->cap_dev : 256;
        void **nw = realloc(m->dev_owned, (size_t)m->cap_dev * sizeof *nw);
        if (!nw) abort();
        m->dev_owned = nw;
    }
    m->dev_owned[m->n_dev++] = d;
    return bk_upload(m->bk, d, src, bytes, err, errlen) ? NULL : d;
}

/* A matrix in its stored format (codes, scales and biases for affine). */
static int upload_weight(struct model *m, struct bk_weight *w, char *err, size_t errlen) {
    char e2[256];
    if (bk_weight_check(m->bk, w, e2, sizeof e2)) return errf(err, errlen, "%s: %s", m->dir, e2);
    if (w->fmt == BK_W_AFFINE) {
        size_t sb = (size_t)w->rows * (size_t)(w->cols / w->group_size) * dtype_size(w->dtype);
        if (!(w->data = dev_copy(m, w->data, (size_t)w->rows * bk_affine_row_bytes(w), err, errlen)) ||
            !(w->scales = dev_copy(m, w->scales, sb, err, errlen)) ||
            !(w->biases = dev_copy(m, w->biases, sb, err, errlen)))
            return -1;
        return 0;
    }
    return (w->data = dev_copy(m, w->data, bk_weight_bytes(w), err, errlen)) ? 0 : -1;
}

static int upload_vec(struct model *m, const float **v, int64_t n, char *err, size_t errlen) {
    if (!*v) return 0;
    return (*v = dev_copy(m, *v, (size_t)n * sizeof(float), err, errlen)) ? 0 : -1;
}

static int upload_all(struct model *m, char *err, size_t errlen) {
    const struct hparams *hp = &m->hp;
    const int64_t d = hp->d_model, qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_kv_head * hp->head_dim;
    const int64_t ff = hp->d_ff, D = hp->head_dim;
    if (upload_weight(m, &m->tok_emb, err, errlen)) return -1;
    if (hp->tie_embeddings) m->lm_head = m->tok_emb;
    else if (upload_weight(m, &m->lm_head, err, errlen)) return -1;
    if (upload_vec(m, &m->final_norm, d, err, errlen)) return -1;
    for (int il = 0; il < hp->n_layer; il++) {
        struct layer_weights *L = &m->layers[il];
        struct bk_weight *ws[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (size_t i = 0; i < ARRAY_LEN(ws); i++)
            if (upload_weight(m, ws[i], err, errlen)) return -1;
        struct { const float **v; int64_t n; } vs[] = {
            { &L->bq, qd }, { &L->bk, kvd }, { &L->bv, kvd }, { &L->bo, d }, { &L->b_gate, ff }, { &L->b_up, ff },
            { &L->b_down, d }, { &L->attn_norm, d }, { &L->ffn_norm, d }, { &L->post_attn_norm, d },
            { &L->post_ffn_norm, d }, { &L->q_norm, D }, { &L->k_norm, D },
        };
        for (size_t i = 0; i < ARRAY_LEN(vs); i++)
            if (upload_vec(m, vs[i].v, vs[i].n, err, errlen)) return -1;
    }
    return 0;
}

/* Device backends: whether the weights fit in the device's free memory,
 * before anything is read from disk or uploaded (a model too large for the
 * card fails at once with both sizes, not after paging in the checkpoint;
 * AWQ checkpoints have been read by their repacking already). */
static int device_room(struct model *m, char *err, size_t errlen) {
    size_t need = 0, fr, tot;
    m->dev_count = &need;
    int rc = upload_all(m, err, errlen);
    m->dev_count = NULL;
    if (rc || bk_mem_info(m->bk, &fr, &tot)) return rc;
    if (need > fr)
        return errf(err, errlen, "%s: the weights need %.2f GiB of %s memory, %.2f GiB of the device's %.2f GiB is free",
                    m->dir, (double)need / (1 << 30), m->bk->ops->name, (double)fr / (1 << 30),
                    (double)tot / (1 << 30));
    return 0;
}

int model_load(struct model **out, const char *dir, struct backend *bk, const char *hf_overrides_json, char *err,
               size_t errlen) {
    *out = NULL;
    struct model *m = xcalloc(1, sizeof *m);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    m->bk = bk;
    /* quantization preflight first: an unsupported format fails before any
     * model state is built */
    struct quant_cfg qc;
    if (quant_cfg_load(&qc, dir, err, errlen)) {
        free(m);
        return -1;
    }
    if (hparams_load(&m->hp, dir, hf_overrides_json, err, errlen)) {
        quant_cfg_free(&qc);
        free(m);
        return -1;
    }
    int rc = st_open_dir(&m->st, dir, err, errlen);
    /* weights resident before the first request (progress on stderr); on a
     * device once they are known to fit, except AWQ checkpoints: binding
     * repacks them on the host, which reads them all anyway */
    const bool early = bk->host_mem || qc.method == QUANT_AWQ;
    if (!rc && early) st_prefault(m->st);
    if (!rc) rc = bind_all(m, &qc, err, errlen);
    if (!rc && !bk->host_mem) rc = device_room(m, err, errlen);
    if (!rc && !bk->host_mem && !early) st_prefault(m->st);
    if (!rc && !bk->host_mem) rc = upload_all(m, err, errlen); /* once, stored format */
    quant_cfg_free(&qc);
    if (rc) {
        model_free(m);
        return -1;
    }
    const struct hparams *hp = &m->hp;
    int half = hp->rot_dim / 2;
    m->freq_host = xcalloc((size_t)MAX(hp->rot_dim, 1), sizeof(float));
    m->inv_freq = xcalloc((size_t)half, sizeof(float));
    rope_inv_freq(&hp->rope, hp->rot_dim, hp->max_pos, 0, m->inv_freq, &m->rope_attn_factor);
    if (hp->rope.type == ROPE_LONGROPE) {
        m->inv_freq_long = xcalloc((size_t)half, sizeof(float));
        rope_inv_freq(&hp->rope, hp->rot_dim, hp->max_pos, INT32_MAX, m->inv_freq_long, &m->rope_long_attn_factor);
    }
    if (hp->has_rope_local) {
        m->inv_freq_local = xcalloc((size_t)half, sizeof(float));
        rope_inv_freq(&hp->rope_local, hp->rot_dim, hp->max_pos, 0, m->inv_freq_local, &m->rope_local_attn_factor);
    }
    *out = m;
    return 0;
}

void model_free(struct model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->inv_freq);
    free(m->inv_freq_local);
    free(m->inv_freq_long);
    if (m->bk) {
        for (int i = 0; i < MODEL_GRAPHS; i++)
            if (m->graphs[i].g) m->bk->ops->graph_free(m->bk, m->graphs[i].g);
        for (int i = 0; i < m->n_dev; i++) bk_free(m->bk, m->dev_owned[i]);
        bk_free(m->bk, m->scratch);
        bk_free(m->bk, m->idx_dev);
    }
    free(m->dev_owned);
    free(m->idx_host);
    free(m->pad);
    free(m->freq_host);
    if (m->st) st_close(m->st);
    hparams_free(&m->hp);
    free(m);
}

size_t model_kv_bytes_per_token(const struct hparams *hp, enum dtype kv_dtype) {
    return (size_t)hp->n_layer * 2 * (size_t)hp->n_kv_head * (size_t)hp->head_dim * dtype_size(kv_dtype);
}

enum dtype model_default_kv_dtype(const struct hparams *hp) { return hp->dtype; }
