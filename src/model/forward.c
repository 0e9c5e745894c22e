/* forward.c — one forward for every dense family (DESIGN.md §4, §6).
 *
 * The step's tokens go through each matmul together, so each weight is read
 * once per step whatever the batch. Variants are flags in hparams; the
 * backend does the arithmetic. Per-step scratch is one buffer that grows only
 * when a step has more tokens than any before it (no allocation in steady
 * decode).
 *
 * Layer (pre-norm):
 *   h = norm(x); q,k,v = h·W (+b); [q/k norm]; [rope]; store k,v; a = attn
 *   o = a·Wo (+b); [post-attn norm]; x += r·o
 *   h = norm(x); f = down(act(gate(h)) * up(h)); [post-ffn norm]; x += r·f
 * Logits only for b->logits_rows: final norm, head, scale, softcap.
 * Where the backend offers the fused ops (backend.h), a residual add and the
 * norm after it (the next layer's attention norm too) are one add_rmsnorm,
 * and the biases, q/k norms, RoPE and KV store one qkv_prep (not for RoPE
 * tables that depend on the sequence length), or one qkv_attention with the
 * attention after them.
 *
 * Memory goes through the backend (backend.h): the scratch is a bk_alloc
 * buffer. On a device backend (not host_mem) the step's index arrays are
 * staged on the host and uploaded in one copy, the logits rows are gathered
 * on the device and the logits come back with one bk_download; on the CPU
 * the host arrays are used as they are. Small decode steps replay recorded
 * graphs where the backend offers them (run_graph below). model_forward_keep
 * skips the download and leaves the logits rows in the scratch, for a
 * backend that samples where they are (sample_rows). */
#include "model/model.h"

#include <stdlib.h>

static float *scratch_get(struct model *m, size_t n) {
    if (n > m->scratch_len) {
        bk_free(m->bk, m->scratch);
        m->scratch = bk_alloc(m->bk, n * sizeof(float));
        m->scratch_len = m->scratch ? n : 0;
        m->gen++; /* recorded graphs point at the old buffer */
    }
    return m->scratch;
}

/* Device backends: copy the step's index arrays to the device in one upload
 * and point *ab and the outputs at the copies. */
static int upload_batch(struct model *m, const struct model_batch *b, struct bk_attn_batch *ab,
                        const int32_t **tok, const int32_t **pos, const int32_t **slot, const int32_t **rows,
                        char *err, size_t errlen) {
    const size_t T = (size_t)b->n_tokens, S = (size_t)ab->n_seqs, R = (size_t)b->n_logits;
    const size_t tab = S * (size_t)ab->max_blocks; /* ab->max_blocks >= the batch's: rows padded with 0 */
    const size_t n = 3 * T + (S + 1) + S + tab + R;
    if (n > m->idx_len) {
        free(m->idx_host);
        bk_free(m->bk, m->idx_dev);
        m->idx_host = xmalloc(n * sizeof(int32_t));
        m->idx_dev = bk_alloc(m->bk, n * sizeof(int32_t));
        m->idx_len = m->idx_dev ? n : 0;
        m->gen++;
        if (!m->idx_dev) return errf(err, errlen, "forward: cannot allocate %zu bytes on the device", n * 4);
    }
    int32_t *h = m->idx_host, *dv = m->idx_dev;
    size_t o = 0;
#define PUT(src, cnt, out)                                           \
    do {                                                             \
        if (cnt) memcpy(h + o, (src), (cnt) * sizeof(int32_t));      \
        (out) = dv + o;                                              \
        o += (cnt);                                                  \
    } while (0)
    PUT(b->tokens, T, *tok);
    PUT(b->positions, T, *pos);
    PUT(b->slot_mapping, T, *slot);
    PUT(b->attn.query_start, S + 1, ab->query_start);
    PUT(b->attn.seq_len, S, ab->seq_len);
    PUT(b->logits_rows, R, *rows); /* before the table: fixed offsets for a given T, S, R */
    const int mb = b->attn.max_blocks;
    for (size_t s = 0; s < S; s++) {
        memcpy(h + o + s * ab->max_blocks, b->attn.block_table + s * mb, (size_t)mb * sizeof(int32_t));
        memset(h + o + s * ab->max_blocks + mb, 0, (size_t)(ab->max_blocks - mb) * sizeof(int32_t));
    }
    ab->block_table = dv + o;
    o += tab;
#undef PUT
    return bk_upload(m->bk, dv, h, o * sizeof(int32_t), err, errlen);
}

static int batch_check(const struct model *m, const struct model_batch *b, const struct model_kv *kv, char *err,
                       size_t errlen) {
    const int T = b->n_tokens, V = m->hp.n_vocab;
    if (T <= 0) return errf(err, errlen, "forward: empty batch");
    if (!kv || kv->n_layer != m->hp.n_layer) return errf(err, errlen, "forward: KV cache has the wrong layer count");
    const int64_t slots = (int64_t)kv->layers[0].num_blocks * kv->layers[0].block_size;
    for (int t = 0; t < T; t++) {
        if (b->tokens[t] < 0 || b->tokens[t] >= V)
            return errf(err, errlen, "forward: token id %d out of range [0, %d)", b->tokens[t], V);
        if (b->positions[t] < 0) return errf(err, errlen, "forward: negative position %d", b->positions[t]);
        if (b->slot_mapping[t] < 0 || b->slot_mapping[t] >= slots)
            return errf(err, errlen, "forward: slot %d out of range [0, %lld)", b->slot_mapping[t], (long long)slots);
    }
    const struct bk_attn_batch *a = &b->attn;
    if (a->n_seqs <= 0 || a->query_start[0] != 0 || a->query_start[a->n_seqs] != T)
        return errf(err, errlen, "forward: query_start must run from 0 to the token count");
    for (int s = 0; s < a->n_seqs; s++) {
        int q = a->query_start[s + 1] - a->query_start[s];
        if (q < 0 || a->seq_len[s] < q) return errf(err, errlen, "forward: sequence %d has bad lengths", s);
        int nb = (a->seq_len[s] + kv->layers[0].block_size - 1) / kv->layers[0].block_size;
        if (nb > a->max_blocks) return errf(err, errlen, "forward: sequence %d needs more blocks than the table", s);
        for (int i = 0; i < nb; i++) {
            int blk = a->block_table[(size_t)s * a->max_blocks + i];
            if (blk < 0 || blk >= kv->layers[0].num_blocks)
                return errf(err, errlen, "forward: block %d out of range", blk);
        }
    }
    for (int i = 0; i < b->n_logits; i++)
        if (b->logits_rows[i] < 0 || b->logits_rows[i] >= T)
            return errf(err, errlen, "forward: logits row %d out of range", b->logits_rows[i]);
    return 0;
}

/* Apply RoPE to q [T][H][D] and k [T][Hkv][D] of one layer. Types whose table
 * depends on the sequence length get one table per sequence (computed on the
 * host from b; pos is b->positions in the backend's memory). */
static void apply_rope(struct model *m, const struct model_batch *b, const int32_t *pos, float *q, float *k,
                       bool local, float *freq_scratch) {
    const struct hparams *hp = &m->hp;
    const struct rope_cfg *cfg = local ? &hp->rope_local : &hp->rope;
    const int H = hp->n_head, Hkv = hp->n_kv_head, D = hp->head_dim;
    struct bk_rope r = { .rot_dim = hp->rot_dim, .neox = true };
    if (!rope_depends_on_len(cfg)) {
        r.inv_freq = local ? m->inv_freq_local : m->inv_freq;
        r.attn_factor = local ? m->rope_local_attn_factor : m->rope_attn_factor;
        bk_rope(m->bk, q, pos, b->n_tokens, H, D, &r);
        bk_rope(m->bk, k, pos, b->n_tokens, Hkv, D, &r);
        return;
    }
    for (int s = 0; s < b->attn.n_seqs; s++) {
        int t0 = b->attn.query_start[s], n = b->attn.query_start[s + 1] - t0;
        if (n == 0) continue;
        int L = b->rope_len ? b->rope_len[s] : b->attn.seq_len[s];
        if (cfg->type == ROPE_LONGROPE) {
            int orig = cfg->orig_max_pos > 0 ? cfg->orig_max_pos : hp->max_pos;
            bool lng = L > orig;
            r.inv_freq = lng ? m->inv_freq_long : m->inv_freq;
            r.attn_factor = lng ? m->rope_long_attn_factor : m->rope_attn_factor;
        } else {
            rope_inv_freq(cfg, hp->rot_dim, hp->max_pos, L, freq_scratch, &r.attn_factor);
            r.inv_freq = freq_scratch;
        }
        bk_rope(m->bk, q + (size_t)t0 * H * D, pos + t0, n, H, D, &r);
        bk_rope(m->bk, k + (size_t)t0 * Hkv * D, pos + t0, n, Hkv, D, &r);
    }
}

/* x += resid_scale * o; h = norm(x) * w: one op where the backend fuses
 * them (add_rmsnorm), else the two. */
static void add_norm(struct model *m, float *x, const float *o, float *h, const float *w, int T) {
    const struct hparams *hp = &m->hp;
    struct backend *bk = m->bk;
    if (bk->ops->add_rmsnorm) {
        bk->ops->add_rmsnorm(bk, x, o, hp->resid_scale, h, w, T, hp->d_model, hp->norm_eps);
        return;
    }
    bk_add_scaled(bk, x, o, hp->resid_scale, (size_t)T * hp->d_model);
    bk_rmsnorm(bk, h, x, w, T, hp->d_model, hp->norm_eps);
}

/* y[i] = x · W[i]^T for the n weights that read x: one op where the
 * backend offers matmul_many, else n matmuls. */
static void project(struct backend *bk, int n, float *const *y, const float *x, const struct bk_weight *const *W,
                    int T) {
    if (bk->ops->matmul_many) {
        bk->ops->matmul_many(bk, n, y, x, W, T);
        return;
    }
    for (int i = 0; i < n; i++) bk_matmul(bk, y[i], x, W[i], T);
}

/* add_norm, then project(h): one op where the backend offers
 * add_rmsnorm_matmul (it may round h for the GEMV on the way, and leaves h
 * unspecified: the callers only read x and y afterwards). */
static void add_norm_project(struct model *m, float *x, const float *o, float *h, const float *w, int T, int n,
                             float *const *y, const struct bk_weight *const *W) {
    const struct hparams *hp = &m->hp;
    struct backend *bk = m->bk;
    if (bk->ops->add_rmsnorm_matmul) {
        bk->ops->add_rmsnorm_matmul(bk, x, o, hp->resid_scale, h, w, T, hp->d_model, hp->norm_eps, n, y, W);
        return;
    }
    add_norm(m, x, o, h, w, T);
    project(bk, n, y, h, W, T);
}

/* One step's buffers and index arrays as the ops see them (the backend's
 * memory), and the host batch (sequence structure, RoPE tables). */
struct step {
    const struct model_batch *b;
    const struct model_kv *kv;
    struct bk_attn_batch ab;
    const int32_t *tokens, *positions, *slots, *rows;
    float *x, *h, *q, *att, *k, *v, *g, *u, *a, *xr, *lg;
};

/* Queue every op of the step: embedding, the layers, the logits rows. */
static void run_ops(struct model *m, const struct step *st) {
    const struct hparams *hp = &m->hp;
    struct backend *bk = m->bk;
    const struct model_batch *b = st->b;
    const int T = b->n_tokens, d = hp->d_model, H = hp->n_head, Hkv = hp->n_kv_head, D = hp->head_dim;
    const int F = hp->d_ff, qd = H * D, kvd = Hkv * D, R = b->n_logits;
    float *x = st->x, *h = st->h, *q = st->q, *att = st->att, *k = st->k, *v = st->v, *g = st->g, *u = st->u;
    float *a = st->a, *xr = st->xr;
    float *o = h; /* attention/ffn outputs reuse h once it is consumed */

    bk_embed(bk, x, &m->tok_emb, st->tokens, T, hp->emb_scale);
    bk_rmsnorm(bk, h, x, m->layers[0].attn_norm, T, d, hp->norm_eps);
    float *const qkv[3] = { q, k, v }, *const gu[2] = { g, u };
    bool qkv_done = false; /* the previous layer's last op projected q, k, v */

    for (int il = 0; il < hp->n_layer; il++) {
        const struct layer_weights *L = &m->layers[il];
        const bool sliding = hp->layer_sliding[il], local = sliding && hp->has_rope_local;
        const struct rope_cfg *rc = local ? &hp->rope_local : &hp->rope;

        /* h = attn_norm(x) here (the previous layer's last op made it) */
        if (!qkv_done) {
            const struct bk_weight *const w3[3] = { &L->wq, &L->wk, &L->wv };
            project(bk, 3, qkv, h, w3, T);
        }
        struct bk_attn_params ap = {
            .n_heads = H, .n_kv_heads = Hkv, .head_dim = D, .scale = hp->attn_scale,
            .sliding_window = sliding ? hp->sliding_window : 0, .softcap = hp->attn_softcap,
        };
        if (bk->ops->qkv_prep && !(hp->layer_rope[il] && rope_depends_on_len(rc))) {
            /* biases, q/k norms, RoPE and the KV store in one op (with the
             * attention where the backend fuses the two) */
            struct bk_rope r = { .inv_freq = local ? m->inv_freq_local : m->inv_freq, .rot_dim = hp->rot_dim,
                                 .attn_factor = local ? m->rope_local_attn_factor : m->rope_attn_factor,
                                 .neox = true };
            const struct bk_qkv qa = { .q = q, .k = k, .v = v, .b_q = L->bq, .b_k = L->bk, .b_v = L->bv,
                                       .q_norm = L->q_norm, .k_norm = L->k_norm, .eps = hp->norm_eps,
                                       .rope = hp->layer_rope[il] ? &r : NULL, .pos = st->positions,
                                       .slots = st->slots, .T = T, .H = H, .Hkv = Hkv, .D = D };
            if (bk->ops->qkv_attention) bk->ops->qkv_attention(bk, att, &st->kv->layers[il], &qa, &st->ab, &ap);
            else {
                bk->ops->qkv_prep(bk, &st->kv->layers[il], &qa);
                bk_attention(bk, att, q, &st->kv->layers[il], &st->ab, &ap);
            }
        } else {
            if (L->bq) bk_add_bias(bk, q, L->bq, T, qd);
            if (L->bk) bk_add_bias(bk, k, L->bk, T, kvd);
            if (L->bv) bk_add_bias(bk, v, L->bv, T, kvd);
            if (L->q_norm) bk_rmsnorm(bk, q, q, L->q_norm, T * H, D, hp->norm_eps);
            if (L->k_norm) bk_rmsnorm(bk, k, k, L->k_norm, T * Hkv, D, hp->norm_eps);
            if (hp->layer_rope[il]) apply_rope(m, b, st->positions, q, k, local, m->freq_host);
            bk_kv_store(bk, &st->kv->layers[il], k, v, st->slots, T);
            bk_attention(bk, att, q, &st->kv->layers[il], &st->ab, &ap);
        }

        bk_matmul(bk, o, att, &L->wo, T);
        if (L->bo) bk_add_bias(bk, o, L->bo, T, d);
        if (L->post_attn_norm) bk_rmsnorm(bk, o, o, L->post_attn_norm, T, d, hp->norm_eps);
        const struct bk_weight *const w2[2] = { &L->w_gate, &L->w_up };
        add_norm_project(m, x, o, h, L->ffn_norm, T, 2, gu, w2);
        if (L->b_gate) bk_add_bias(bk, g, L->b_gate, T, F);
        if (L->b_up) bk_add_bias(bk, u, L->b_up, T, F);
        if (bk->ops->glu_matmul) bk->ops->glu_matmul(bk, o, a, g, u, T, F, F, hp->act, &L->w_down);
        else {
            bk_glu(bk, a, g, u, T, F, F, hp->act);
            bk_matmul(bk, o, a, &L->w_down, T);
        }
        if (L->b_down) bk_add_bias(bk, o, L->b_down, T, d);
        if (L->post_ffn_norm) bk_rmsnorm(bk, o, o, L->post_ffn_norm, T, d, hp->norm_eps);
        if (il + 1 < hp->n_layer) { /* the next layer's norm and its q, k, v */
            const struct layer_weights *Ln = &m->layers[il + 1];
            const struct bk_weight *const w3[3] = { &Ln->wq, &Ln->wk, &Ln->wv };
            add_norm_project(m, x, o, h, Ln->attn_norm, T, 3, qkv, w3);
            qkv_done = true;
        } else bk_add_scaled(bk, x, o, hp->resid_scale, (size_t)T * d);
    }

    if (R == 0) return;
    if (bk->host_mem) {
        for (int i = 0; i < R; i++) memcpy(xr + (size_t)i * d, x + (size_t)b->logits_rows[i] * d, (size_t)d * sizeof(float));
    } else { /* gather the rows on the device: an embedding lookup in x viewed as an f32 table */
        struct bk_weight xt = { .dtype = DT_F32, .rows = T, .cols = d, .data = x };
        bk_embed(bk, xr, &xt, st->rows, R, 1.0f);
    }
    bk_rmsnorm(bk, xr, xr, m->final_norm, R, d, hp->norm_eps);
    bk_matmul(bk, st->lg, xr, &m->lm_head, R);
    if (hp->logit_scale != 1.0f) bk_scale(bk, st->lg, (size_t)R * hp->n_vocab, hp->logit_scale);
    if (hp->final_softcap > 0) bk_softcap(bk, st->lg, (size_t)R * hp->n_vocab, hp->final_softcap);
}

/* Decode steps of up to MODEL_GRAPH_MAX_T sequences (one query row each, the
 * logits of every row) replay a recorded graph of the whole step where the
 * backend offers one (CUDA graphs): one launch instead of hundreds. A graph
 * is keyed by the token count and the (padded) block-table width, which fix
 * every launch's shape, and by the KV cache it writes; the index arrays are
 * uploaded to the same addresses before each replay. Above 8 tokens the
 * step is padded to a multiple of 8 (vLLM's capture sizes), so a few graphs
 * serve every batch size: pad_batch. RoPE tables that change with the length (dynamic NTK,
 * LongRoPE) are host values baked into a recording, so those models never
 * replay. */
#define MODEL_GRAPH_MAX_T 512 /* vLLM's largest capture size */

static int graph_tokens(int T) { return T <= 8 ? T : (T + 7) / 8 * 8; }

/* b (a decode step: one token per sequence, every row's logits) padded to
 * Tp tokens for a recorded step: the added rows are one-token sequences at
 * position 0 whose K/V are not stored (slot -1, backend.h kv_store) and
 * whose attention reads the first row of block 0 (or, where qkv_attention
 * fuses the prep, their own key); their logits rows are
 * computed and never read. The host arrays live in m->pad. */
static void pad_batch(struct model *m, const struct model_batch *b, struct model_batch *bp, int Tp) {
    const int T = b->n_tokens, S = b->attn.n_seqs, Sp = S + (Tp - T), mb = b->attn.max_blocks;
    const size_t n = 4 * (size_t)Tp + (size_t)(Sp + 1) + (size_t)Sp + (size_t)Sp * (size_t)mb;
    if (n > m->pad_len) {
        free(m->pad);
        m->pad = xmalloc(n * sizeof(int32_t));
        m->pad_len = n;
    }
    int32_t *tok = m->pad, *pos = tok + Tp, *slot = pos + Tp, *rows = slot + Tp, *qs = rows + Tp, *sl = qs + Sp + 1;
    int32_t *bt = sl + Sp;
    memcpy(tok, b->tokens, (size_t)T * sizeof(int32_t));
    memcpy(pos, b->positions, (size_t)T * sizeof(int32_t));
    memcpy(slot, b->slot_mapping, (size_t)T * sizeof(int32_t));
    memcpy(qs, b->attn.query_start, (size_t)(S + 1) * sizeof(int32_t));
    memcpy(sl, b->attn.seq_len, (size_t)S * sizeof(int32_t));
    memcpy(bt, b->attn.block_table, (size_t)S * (size_t)mb * sizeof(int32_t));
    memset(bt + (size_t)S * mb, 0, (size_t)(Sp - S) * (size_t)mb * sizeof(int32_t));
    for (int t = T; t < Tp; t++) tok[t] = 0, pos[t] = 0, slot[t] = -1;
    for (int s = S; s < Sp; s++) qs[s + 1] = qs[s] + 1, sl[s] = 1;
    for (int t = 0; t < Tp; t++) rows[t] = t;
    *bp = *b;
    bp->n_tokens = Tp, bp->tokens = tok, bp->positions = pos, bp->slot_mapping = slot, bp->rope_len = NULL;
    bp->n_logits = Tp, bp->logits_rows = rows;
    bp->attn.n_seqs = Sp, bp->attn.query_start = qs, bp->attn.seq_len = sl, bp->attn.block_table = bt;
}

static bool graph_eligible(const struct model *m, const struct model_batch *b, const struct bk_attn_batch *ab) {
    const struct hparams *hp = &m->hp;
    const int max_t = m->graph_max_t > 0 ? m->graph_max_t : MODEL_GRAPH_MAX_T;
    if (m->eager || !m->bk->ops->graph_begin || b->n_tokens > max_t || ab->max_query_len != 1 ||
        b->n_logits != b->n_tokens)
        return false;
    for (int i = 0; i < b->n_logits; i++)
        if (b->logits_rows[i] != i) return false;
    return !rope_depends_on_len(&hp->rope) && !(hp->has_rope_local && rope_depends_on_len(&hp->rope_local));
}

/* The KV cache a recording wrote into: its pools' addresses and layout. */
static uint64_t kv_key(const struct model_kv *kv) {
    uint64_t h = 1469598103934665603ull;
    for (int l = 0; l < kv->n_layer; l++) {
        const struct bk_kv *c = &kv->layers[l];
        const uint64_t parts[] = { (uintptr_t)c->k, (uintptr_t)c->v, (uint64_t)c->dtype, (uint64_t)c->num_blocks,
                                   (uint64_t)c->block_size };
        for (size_t i = 0; i < ARRAY_LEN(parts); i++) h = (h ^ parts[i]) * 1099511628211ull;
    }
    return h;
}

static void run_graph(struct model *m, const struct step *st) {
    struct backend *bk = m->bk;
    const int T = st->b->n_tokens, mb = st->ab.max_blocks;
    const uint64_t kvk = kv_key(st->kv);
    struct model_graph *slot = NULL;
    for (int i = 0; i < MODEL_GRAPHS && !slot; i++)
        if (m->graphs[i].g && m->graphs[i].T == T && m->graphs[i].mb == mb && m->graphs[i].kv == kvk)
            slot = &m->graphs[i];
    if (slot && slot->gen == m->gen) {
        int rc = bk->ops->graph_launch(bk, slot->g);
        if (rc <= 0) return; /* queued, or failed (the backend reports it at the download) */
    }
    if (slot) { /* stale: buffers moved since it was recorded */
        bk->ops->graph_free(bk, slot->g);
        slot->g = NULL;
    } else {
        slot = &m->graphs[m->next_graph];
        m->next_graph = (m->next_graph + 1) % MODEL_GRAPHS;
        if (slot->g) bk->ops->graph_free(bk, slot->g);
        slot->g = NULL;
    }
    run_ops(m, st); /* this step, unrecorded: it also grows whatever the ops need */
    if (bk->ops->graph_begin(bk)) return;
    run_ops(m, st);
    *slot = (struct model_graph){ .g = bk->ops->graph_end(bk), .T = T, .mb = mb, .gen = m->gen, .kv = kvk };
}

/* The forward; keep != NULL: the logits stay in the backend's memory and
 * *keep points at them (see model_forward_keep). */
static int forward(struct model *m, const struct model_batch *b, const struct model_kv *kv, float *logits,
                   const float **keep, char *err, size_t errlen) {
    if (batch_check(m, b, kv, err, errlen)) return -1;
    const struct hparams *hp = &m->hp;
    struct backend *bk = m->bk;
    const int R_out = b->n_logits; /* the rows the caller gets (a padded step computes more) */
    struct bk_attn_batch ab = b->attn;
    for (int s = 0; s < ab.n_seqs; s++) {
        ab.max_seq_len = MAX(ab.max_seq_len, ab.seq_len[s]);
        ab.max_query_len = MAX(ab.max_query_len, ab.query_start[s + 1] - ab.query_start[s]);
    }
    const bool graph = !bk->host_mem && graph_eligible(m, b, &ab);
    struct model_batch bp;
    if (graph && graph_tokens(b->n_tokens) > b->n_tokens) {
        pad_batch(m, b, &bp, graph_tokens(b->n_tokens));
        b = &bp;
        ab.n_seqs = bp.attn.n_seqs, ab.query_start = bp.attn.query_start, ab.seq_len = bp.attn.seq_len;
        ab.block_table = bp.attn.block_table;
    }
    const int T = b->n_tokens, d = hp->d_model, H = hp->n_head, Hkv = hp->n_kv_head, D = hp->head_dim;
    const int F = hp->d_ff, qd = H * D, kvd = Hkv * D, R = b->n_logits;

    /* scratch layout (+ the logits on a device backend) */
    size_t need = (size_t)T * (2 * (size_t)d + 2 * (size_t)qd + 2 * (size_t)kvd + 3 * (size_t)F) +
                  (size_t)R * d + (bk->host_mem ? 0 : (size_t)R * hp->n_vocab);
    float *x = scratch_get(m, need);
    if (!x) return errf(err, errlen, "forward: cannot allocate %zu bytes of scratch", need * sizeof(float));
    struct step st = { .b = b, .kv = kv, .ab = ab, .x = x };
    st.h = x + (size_t)T * d;
    st.q = st.h + (size_t)T * d;
    st.att = st.q + (size_t)T * qd;
    st.k = st.att + (size_t)T * qd;
    st.v = st.k + (size_t)T * kvd;
    st.g = st.v + (size_t)T * kvd;
    st.u = st.g + (size_t)T * F;
    st.a = st.u + (size_t)T * F;
    st.xr = st.a + (size_t)T * F;
    st.lg = bk->host_mem ? logits : st.xr + (size_t)R * d; /* device: logits in scratch, then downloaded */

    /* the batch as the ops see it: the host arrays on the CPU, copies on a device */
    st.tokens = b->tokens, st.positions = b->positions, st.slots = b->slot_mapping, st.rows = b->logits_rows;
    if (graph) { /* fixed launch shapes: the table padded to a power of two, keys bounded by its width */
        int mb = 16;
        while (mb < st.ab.max_blocks) mb *= 2;
        st.ab.max_blocks = mb;
        st.ab.max_seq_len = mb * kv->layers[0].block_size;
    }
    if (!bk->host_mem && upload_batch(m, b, &st.ab, &st.tokens, &st.positions, &st.slots, &st.rows, err, errlen))
        return -1;
    if (graph) run_graph(m, &st);
    else run_ops(m, &st);
    if (keep) {
        *keep = st.lg;
        return 0;
    }
    if (R_out > 0 && st.lg != logits &&
        bk_download(bk, logits, st.lg, (size_t)R_out * hp->n_vocab * sizeof(float), err, errlen))
        return -1;
    return 0;
}

int model_forward(struct model *m, const struct model_batch *b, const struct model_kv *kv, float *logits, char *err,
                  size_t errlen) {
    return forward(m, b, kv, logits, NULL, err, errlen);
}

int model_forward_keep(struct model *m, const struct model_batch *b, const struct model_kv *kv, float *logits,
                       const float **out, char *err, size_t errlen) {
    return forward(m, b, kv, logits, out, err, errlen);
}
