/* test_model.c — loading errors name the tensor and shapes; the forward is
 * invariant to how a step is batched (alone vs. with other sequences, whole
 * prefill vs. chunks, contiguous vs. scattered blocks), which is what lets the
 * engine batch and page freely. Uses a small random Llama-shaped checkpoint
 * written here with st_write_file. */
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "harness.h"
#include "io/safetensors.h"
#include "model/model.h"

enum { D_MODEL = 32, N_LAYER = 2, N_HEAD = 4, N_KV = 2, HEAD_DIM = 8, D_FF = 48, VOCAB = 64 };

struct ckpt {
    struct st_write_tensor t[64];
    int n;
    void *bufs[64];
};

static void add_t(struct ckpt *c, const char *name, int64_t r, int64_t k, enum dtype dt, unsigned long long *rng,
                  float scale, float offset) {
    struct st_write_tensor *t = &c->t[c->n];
    size_t n = (size_t)r * (size_t)(k ? k : 1);
    void *buf = xmalloc(n * dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float v = offset + scale * test_randf(rng);
        if (dt == DT_BF16) ((uint16_t *)buf)[i] = f32_to_bf16(v);
        else if (dt == DT_F32) ((float *)buf)[i] = v;
        else ((int32_t *)buf)[i] = (int32_t)i;
    }
    t->name = xstrdup(name);
    t->dtype = dt;
    t->ndim = k ? 2 : 1;
    t->shape[0] = r;
    t->shape[1] = k;
    t->data = buf;
    c->bufs[c->n++] = buf;
}

/* mutate: 0 = valid; 1 = drop a tensor; 2 = wrong shape; 3 = int dtype matrix;
 * 4 = no lm_head although the config says untied */
static const char *make_ckpt(int mutate) {
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": %d, \"num_hidden_layers\": %d, "
               "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"intermediate_size\": %d, "
               "\"vocab_size\": %d, \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-5, "
               "\"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\"}",
            D_MODEL, N_LAYER, N_HEAD, N_KV, D_FF, VOCAB);
    const char *dir = test_write_tmp("config.json", cfg);
    char p[256];
    struct ckpt c = { .n = 0 };
    unsigned long long rng = 0x1234567ull;
    add_t(&c, "model.embed_tokens.weight", VOCAB, D_MODEL, DT_BF16, &rng, 1.0f, 0);
    if (mutate != 4) add_t(&c, "lm_head.weight", VOCAB, D_MODEL, DT_BF16, &rng, 0.5f, 0);
    add_t(&c, "model.norm.weight", D_MODEL, 0, DT_BF16, &rng, 0.3f, 1.0f);
    for (int l = 0; l < N_LAYER; l++) {
        char n[128];
        float s = 1.0f / sqrtf(D_MODEL);
#define T2(nm, r, k) (snprintf(n, sizeof n, "model.layers.%d.%s", l, nm), add_t(&c, n, r, k, DT_BF16, &rng, s, 0))
        T2("self_attn.q_proj.weight", N_HEAD * HEAD_DIM, D_MODEL);
        if (!(mutate == 2 && l == 1)) T2("self_attn.k_proj.weight", N_KV * HEAD_DIM, D_MODEL);
        else T2("self_attn.k_proj.weight", N_KV * HEAD_DIM + 1, D_MODEL);
        T2("self_attn.v_proj.weight", N_KV * HEAD_DIM, D_MODEL);
        T2("self_attn.o_proj.weight", D_MODEL, N_HEAD * HEAD_DIM);
        T2("mlp.gate_proj.weight", D_FF, D_MODEL);
        if (!(mutate == 1 && l == 1)) T2("mlp.up_proj.weight", D_FF, D_MODEL);
        if (mutate == 3 && l == 0) {
            snprintf(n, sizeof n, "model.layers.%d.mlp.down_proj.weight", l);
            add_t(&c, n, D_MODEL, D_FF, DT_I32, &rng, 0, 0);
        } else T2("mlp.down_proj.weight", D_MODEL, D_FF);
#undef T2
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", l);
        add_t(&c, n, D_MODEL, 0, DT_BF16, &rng, 0.3f, 1.0f);
        snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", l);
        add_t(&c, n, D_MODEL, 0, DT_BF16, &rng, 0.3f, 1.0f);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    char err[256];
    REQUIRE(st_write_file(p, c.t, (size_t)c.n, err, sizeof err) == 0);
    for (int i = 0; i < c.n; i++) {
        free((void *)c.t[i].name);
        free(c.bufs[i]);
    }
    return dir;
}

TEST(load_errors_name_tensor_and_shapes) {
    struct backend *bk;
    char err[512];
    REQUIRE(backend_cpu_create(&bk, 1, NULL, err, sizeof err) == 0);
    struct model *m;
    CHECK(model_load(&m, make_ckpt(1), bk, NULL, err, sizeof err) != 0);
    CHECK(strstr(err, "model.layers.1.mlp.up_proj.weight") && strstr(err, "missing"));
    CHECK(model_load(&m, make_ckpt(2), bk, NULL, err, sizeof err) != 0);
    CHECK(strstr(err, "model.layers.1.self_attn.k_proj.weight") && strstr(err, "[17, 32]") &&
          strstr(err, "expected [16, 32]"));
    CHECK(model_load(&m, make_ckpt(3), bk, NULL, err, sizeof err) != 0);
    CHECK(strstr(err, "model.layers.0.mlp.down_proj.weight") && strstr(err, "I32"));
    CHECK(model_load(&m, make_ckpt(4), bk, NULL, err, sizeof err) != 0);
    CHECK(strstr(err, "tie_word_embeddings false") && strstr(err, "lm_head.weight"));
    REQUIRE(model_load(&m, make_ckpt(0), bk, NULL, err, sizeof err) == 0);
    CHECK(m->hp.n_layer == N_LAYER && !m->hp.tie_embeddings);
    model_free(m);
    bk_destroy(bk);
}

/* KV cache with explicit per-sequence block tables */
struct kvt {
    struct model_kv kv;
    void *mem;
};
static void kvt_init(struct kvt *t, const struct hparams *hp, int num_blocks, int B) {
    size_t lb = (size_t)num_blocks * B * hp->n_kv_head * hp->head_dim * sizeof(float);
    t->mem = xcalloc(2 * (size_t)hp->n_layer, lb);
    t->kv.n_layer = hp->n_layer;
    t->kv.layers = xcalloc((size_t)hp->n_layer, sizeof *t->kv.layers);
    for (int l = 0; l < hp->n_layer; l++)
        t->kv.layers[l] = (struct bk_kv){ (char *)t->mem + 2 * (size_t)l * lb, (char *)t->mem + (2 * (size_t)l + 1) * lb,
                                          DT_F32, num_blocks, B, hp->n_kv_head, hp->head_dim };
}
static void kvt_free(struct kvt *t) { free(t->mem); free(t->kv.layers); }

/* Run `n` tokens of one sequence as [chunks] steps; return logits of its last token. */
static void run_seq(struct model *m, struct kvt *kv, const int32_t *ids, int n, int chunk, const int32_t *table,
                    int max_blocks, int B, float *out) {
    char err[256];
    for (int done = 0; done < n;) {
        int q = MIN(chunk, n - done);
        int32_t pos[64], slot[64], qs[2] = { 0, q }, sl[1] = { done + q }, row = q - 1;
        for (int i = 0; i < q; i++) {
            pos[i] = done + i;
            slot[i] = table[(done + i) / B] * B + (done + i) % B;
        }
        struct model_batch b = { .n_tokens = q, .tokens = ids + done, .positions = pos, .slot_mapping = slot,
                                 .attn = { 1, qs, sl, table, max_blocks }, .n_logits = 1, .logits_rows = &row };
        REQUIRE(model_forward(m, &b, &kv->kv, out, err, sizeof err) == 0);
        done += q;
    }
}

TEST(forward_is_invariant_to_batching_chunking_and_paging) {
    struct backend *bk;
    char err[512];
    REQUIRE(backend_cpu_create(&bk, 2, NULL, err, sizeof err) == 0);
    struct model *m;
    REQUIRE(model_load(&m, make_ckpt(0), bk, NULL, err, sizeof err) == 0);
    const int B = 8, n1 = 29, n2 = 11;
    int32_t ids1[29], ids2[11];
    for (int i = 0; i < n1; i++) ids1[i] = (i * 7 + 3) % VOCAB;
    for (int i = 0; i < n2; i++) ids2[i] = (i * 5 + 1) % VOCAB;
    float ref[VOCAB], got[VOCAB];

    struct kvt kv;
    kvt_init(&kv, &m->hp, 16, B);
    int32_t contiguous[4] = { 1, 2, 3, 4 }, scattered[4] = { 9, 3, 14, 6 };
    run_seq(m, &kv, ids1, n1, 64, contiguous, 4, B, ref);
    run_seq(m, &kv, ids1, n1, 5, scattered, 4, B, got);
    float worst = 0;
    for (int i = 0; i < VOCAB; i++) worst = fmaxf(worst, fabsf(ref[i] - got[i]));
    CHECK(worst < 1e-4f);

    /* the same sequence batched beside another one, mixing a decode and a prefill chunk */
    int32_t tab[2][4] = { { 5, 7, 11, 12 }, { 2, 8, 0, 0 } };
    run_seq(m, &kv, ids1, n1 - 1, 64, tab[0], 4, B, got); /* context of seq 0 except its last token */
    int32_t tok[1 + 11], pos[12], slot[12], qs[3] = { 0, 1, 12 }, sl[2] = { n1, n2 }, rows[2] = { 0, 11 };
    tok[0] = ids1[n1 - 1];
    pos[0] = n1 - 1;
    slot[0] = tab[0][(n1 - 1) / B] * B + (n1 - 1) % B;
    for (int i = 0; i < n2; i++) {
        tok[1 + i] = ids2[i];
        pos[1 + i] = i;
        slot[1 + i] = tab[1][i / B] * B + i % B;
    }
    float both[2 * VOCAB], alone2[VOCAB];
    struct model_batch b = { .n_tokens = 12, .tokens = tok, .positions = pos, .slot_mapping = slot,
                             .attn = { 2, qs, sl, &tab[0][0], 4 }, .n_logits = 2, .logits_rows = rows };
    REQUIRE(model_forward(m, &b, &kv.kv, both, err, sizeof err) == 0);
    worst = 0;
    for (int i = 0; i < VOCAB; i++) worst = fmaxf(worst, fabsf(ref[i] - both[i]));
    CHECK(worst < 1e-4f);
    int32_t t3[4] = { 13, 15, 0, 0 };
    run_seq(m, &kv, ids2, n2, 64, t3, 4, B, alone2);
    worst = 0;
    for (int i = 0; i < VOCAB; i++) worst = fmaxf(worst, fabsf(alone2[i] - both[VOCAB + i]));
    CHECK(worst < 1e-4f);
    kvt_free(&kv);
    model_free(m);
    bk_destroy(bk);
}

TEST(forward_rejects_bad_batches) {
    struct backend *bk;
    char err[512];
    REQUIRE(backend_cpu_create(&bk, 1, NULL, err, sizeof err) == 0);
    struct model *m;
    REQUIRE(model_load(&m, make_ckpt(0), bk, NULL, err, sizeof err) == 0);
    struct kvt kv;
    kvt_init(&kv, &m->hp, 4, 8);
    int32_t tok[2] = { 1, VOCAB }, pos[2] = { 0, 1 }, slot[2] = { 8, 9 }, qs[2] = { 0, 2 }, sl[1] = { 2 }, tab[1] = { 1 };
    int32_t row = 1;
    float logits[VOCAB];
    struct model_batch b = { .n_tokens = 2, .tokens = tok, .positions = pos, .slot_mapping = slot,
                             .attn = { 1, qs, sl, tab, 1 }, .n_logits = 1, .logits_rows = &row };
    CHECK(model_forward(m, &b, &kv.kv, logits, err, sizeof err) != 0 && strstr(err, "token id"));
    tok[1] = 2;
    slot[1] = 32;
    CHECK(model_forward(m, &b, &kv.kv, logits, err, sizeof err) != 0 && strstr(err, "slot"));
    slot[1] = 9;
    tab[0] = 7;
    CHECK(model_forward(m, &b, &kv.kv, logits, err, sizeof err) != 0 && strstr(err, "block"));
    tab[0] = 1;
    CHECK(model_forward(m, &b, &kv.kv, logits, err, sizeof err) == 0);
    kvt_free(&kv);
    model_free(m);
    bk_destroy(bk);
}

TEST_MAIN()
