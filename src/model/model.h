/* model.h — hyper-parameters, bound weights and the forward pass of the dense
 * decoder families (DESIGN.md §6).
 *
 * A family is a row in the architecture table (model.c), read from config.json
 * into struct hparams (config.c), bound once by name with strict shapes
 * (model.c), and run by one shared forward (forward.c) whose small variants
 * are flags in hparams: q/k norm, biases, partial rotary, sliding windows,
 * softcaps, Granite multipliers, NoPE layers, Gemma's (1 + w) norms and
 * sandwich norms, tied embeddings.
 *
 * The forward takes the flat varlen batch of DESIGN.md §4 (tokens, positions,
 * slot mapping, per-sequence query starts, context lengths and block tables),
 * writes K/V into the paged cache through slot_mapping and returns logits for
 * the rows named in logits_rows only.
 *
 * Does not: schedule, sample, tokenize, or own the KV cache memory (the caller
 * does; model_kv_* only describe its shape). */
#ifndef VLLMC_MODEL_H
#define VLLMC_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"

#define MODEL_MAX_LAYERS 256
#define MODEL_GRAPHS 72 /* recorded decode steps kept (forward.c): token counts 1-8, then multiples of 8 */

enum model_family {
    FAM_LLAMA = 0, /* Llama 2/3, Mistral, Yi */
    FAM_QWEN2,     /* + qkv bias */
    FAM_QWEN3,     /* + q/k norm */
    FAM_PHI3,      /* fused qkv / gate_up, partial rotary, longrope */
    FAM_GRANITE,   /* multipliers */
    FAM_SMOLLM3,   /* NoPE layers */
    FAM_GEMMA3,    /* (1+w) norms, sandwich norms, sliding layers, softcap */
};

enum rope_type { ROPE_DEFAULT = 0, ROPE_LINEAR, ROPE_DYNAMIC, ROPE_LLAMA3, ROPE_YARN, ROPE_LONGROPE };

/* One RoPE configuration (a model has one, or one per layer type). */
struct rope_cfg {
    enum rope_type type;
    double theta;
    double factor;
    int orig_max_pos;           /* original_max_position_embeddings (0 = max_pos) */
    double low_freq_factor, high_freq_factor;  /* llama3 */
    double beta_fast, beta_slow, mscale, mscale_all_dim; /* yarn */
    bool truncate;              /* yarn: round the correction range (default true) */
    double attn_factor;         /* yarn/longrope attention_factor; <= 0: derive */
    float *short_factor, *long_factor; /* longrope, [rot_dim/2] each (owned) */
    int n_short, n_long;
};

struct hparams {
    enum model_family family;
    char arch[96];              /* the HF architectures[0] string */
    int n_layer, d_model, n_head, n_kv_head, head_dim, d_ff, n_vocab;
    int max_pos;                /* max_position_embeddings */
    float norm_eps;
    enum dtype dtype;           /* torch_dtype / dtype of the checkpoint */
    int rot_dim;                /* rotary dims per head (partial_rotary_factor * head_dim) */
    struct rope_cfg rope;       /* full-attention layers (or all) */
    struct rope_cfg rope_local; /* sliding layers when the model has a separate one */
    bool has_rope_local;

    bool tie_embeddings, attn_bias, o_bias, mlp_bias, qk_norm;
    bool tie_explicit;          /* config.json set tie_word_embeddings itself */
    bool norm_plus_one;         /* Gemma: weight is (1 + w), folded at load */
    bool sandwich_norms;        /* Gemma: post-attn, pre/post-ffn norms */
    enum bk_act act;
    float emb_scale;            /* embeddings *= this (Gemma sqrt(d), Granite multiplier) */
    float resid_scale;          /* Granite residual_multiplier (1 otherwise) */
    float attn_scale;           /* q·k multiplier (1/sqrt(D) by default) */
    float logit_scale;          /* logits *= this (Granite 1/logits_scaling) */
    float final_softcap, attn_softcap; /* 0 = none */
    int sliding_window;         /* window for sliding layers (tokens incl. self) */
    uint8_t layer_sliding[MODEL_MAX_LAYERS]; /* 1 = sliding-window layer */
    uint8_t layer_rope[MODEL_MAX_LAYERS];    /* 0 = NoPE layer (SmolLM3) */

    /* generation_config.json / config.json */
    int bos_token_id;           /* -1 if none */
    int eos_token_ids[8];
    int n_eos;
};

struct layer_weights {
    struct bk_weight wq, wk, wv, wo, w_gate, w_up, w_down;
    const float *bq, *bk, *bv, *bo, *b_gate, *b_up, *b_down; /* NULL when absent */
    const float *attn_norm, *ffn_norm;                         /* input / post-attention norm */
    const float *post_attn_norm, *post_ffn_norm;               /* Gemma sandwich (ffn_norm = pre-ffn) */
    const float *q_norm, *k_norm;                              /* [D] */
};

struct model {
    struct hparams hp;
    struct backend *bk;
    struct st_set *st;          /* the mapped checkpoint */
    struct bk_weight tok_emb, lm_head;
    const float *final_norm;
    struct layer_weights *layers;
    /* precomputed inv_freq tables for each rope configuration; for dynamic and
     * longrope the table depends on the sequence length (see rope.c). */
    float *inv_freq, *inv_freq_local, *inv_freq_long;
    float rope_attn_factor, rope_local_attn_factor, rope_long_attn_factor;
    float **owned;              /* f32 copies of 1-D tensors (norms, biases) */
    int n_owned, cap_owned;
    /* per-step scratch in the backend's memory, grown on demand (never
     * inside a layer loop) */
    float *scratch;
    size_t scratch_len;
    float *freq_host;           /* [rot_dim]: per-sequence RoPE tables (host) */
    /* device backends: the step's index arrays, staged here and uploaded at once */
    int32_t *idx_host, *idx_dev;
    size_t idx_len;
    int32_t *pad;  /* host index arrays of a padded recorded step (forward.c) */
    size_t pad_len;
    void **dev_owned;           /* device copies of weights and vectors (bk_free at model_free) */
    int n_dev, cap_dev;
    size_t *dev_count;          /* set during the room check: dev_copy adds up bytes instead of copying */
    /* recorded decode steps (forward.c), and a counter bumped whenever the
     * scratch or index buffers move (recordings older than it are stale) */
    struct model_graph { void *g; int T, mb; unsigned gen; uint64_t kv; } graphs[MODEL_GRAPHS];
    int next_graph;
    unsigned gen;
    bool eager;                 /* no recorded steps (the engine's enforce_eager) */
    int graph_max_t;            /* recorded steps of up to this many tokens (forward.c; 0: MODEL_GRAPH_MAX_T) */
    char dir[4096];
};

/* The flat batch of one step (DESIGN.md §4). */
struct model_batch {
    int n_tokens;                /* T */
    const int32_t *tokens;       /* [T] */
    const int32_t *positions;    /* [T] */
    const int32_t *slot_mapping; /* [T] */
    struct bk_attn_batch attn;   /* S sequences, query starts, seq lens, block tables */
    /* [S] or NULL: the length that picks RoPE tables that depend on it
     * (dynamic NTK, LongRoPE), as transformers does per forward call. The
     * engine passes max(prompt length, seq_len) so a chunked prefill rotates
     * like one whole-prompt forward; NULL means seq_len. */
    const int32_t *rope_len;
    int n_logits;                /* rows whose logits are wanted */
    const int32_t *logits_rows;  /* [n_logits] indices into [0, T) */
};

/* The paged KV cache for all layers; memory owned by the caller. */
struct model_kv {
    struct bk_kv *layers;        /* [n_layer] */
    int n_layer;
};

/* Parse config.json (+ generation_config.json) of a checkpoint directory.
 * hf_overrides_json: NULL or a JSON object merged over config.json first. */
int hparams_load(struct hparams *hp, const char *dir, const char *hf_overrides_json, char *err, size_t errlen);
void hparams_free(struct hparams *hp);
/* One-line description for start-up logs. */
void hparams_describe(const struct hparams *hp, char *buf, size_t len);

/* Load config and weights (mmapped, stored precision) and bind them. On a
 * backend whose memory is not host memory the weights and 1-D tensors are
 * uploaded once, in their stored format, and the layer structs point at the
 * device copies. */
int model_load(struct model **out, const char *dir, struct backend *bk, const char *hf_overrides_json,
               char *err, size_t errlen);
void model_free(struct model *m);

/* Bytes of KV cache per token (all layers, K and V) for a KV dtype. */
size_t model_kv_bytes_per_token(const struct hparams *hp, enum dtype kv_dtype);
/* KV dtype to use by default: the model's float type (F32/BF16/F16). */
enum dtype model_default_kv_dtype(const struct hparams *hp);

/* Run one step. logits: [n_logits][n_vocab]. Returns 0, or -1 on invalid
 * batch input (token id out of range, slot out of range). */
int model_forward(struct model *m, const struct model_batch *b, const struct model_kv *kv, float *logits,
                  char *err, size_t errlen);
/* model_forward, but on a device backend the logits rows stay in the
 * backend's memory: *out points at [n_logits][V] floats there, valid until
 * the next forward (they live in its scratch); logits is not written. On a
 * host_mem backend this is model_forward and *out = logits. */
int model_forward_keep(struct model *m, const struct model_batch *b, const struct model_kv *kv, float *logits,
                       const float **out, char *err, size_t errlen);

/* rope.c: build the inv_freq table for cfg over rot_dim dims, for a sequence
 * of seq_len tokens (only dynamic NTK and longrope depend on it). */
void rope_inv_freq(const struct rope_cfg *cfg, int rot_dim, int max_pos, int seq_len, float *inv_freq,
                   float *attn_factor);
bool rope_depends_on_len(const struct rope_cfg *cfg);

#endif
