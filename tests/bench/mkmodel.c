/* mkmodel.c — write a random-weight checkpoint with the exact shapes of a
 * real model, locally, so the benchmark needs no download.
 *
 *   mkmodel qwen3-0.6b   DIR    Qwen3ForCausalLM, 28 x 1024, 16/8 heads of 128, vocab 151936, tied
 *   mkmodel llama-3.2-1b DIR    LlamaForCausalLM, 16 x 2048, 32/8 heads of 64, vocab 128256, tied, llama3 rope
 *   mkmodel NAME-4bit DIR / NAME-8bit DIR   the same weights, MLX affine quantized (group 64, bf16
 *                               scales/biases, embedding included), as mlx_lm.convert -q writes them
 *
 * DIR gets config.json (Hugging Face form) and model.safetensors (bf16, HF
 * tensor names). Matrices are N(0, 0.02)-like (Irwin-Hall of four uniforms),
 * norm weights 1 + N(0, 0.02): hidden states stay finite through every layer,
 * and the logits are as flat as those of an untrained model. The values are
 * deterministic (fixed seed per model).
 *
 * config.json is written last, after model.safetensors has been renamed into
 * place: a directory with a config.json is complete, which is what
 * tests/bench/run.sh checks before skipping the (slow) write.
 *
 * Does not: write a tokenizer (the benchmark feeds token ids), or stream: the
 * whole checkpoint is held in memory once (1.2 GB for Qwen3-0.6B, 2.5 GB for
 * Llama-3.2-1B), which st_write_file needs. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "io/safetensors.h"
#include "util/util.h"

struct shape_spec {
    const char *name;       /* command-line name */
    const char *config;     /* config.json text */
    int n_layer, d_model, n_head, n_kv_head, head_dim, d_ff, n_vocab;
    int qk_norm;
    uint64_t seed;
};

static const struct shape_spec specs[] = {
    { "qwen3-0.6b",
      "{\n"
      "  \"architectures\": [\"Qwen3ForCausalLM\"],\n"
      "  \"model_type\": \"qwen3\",\n"
      "  \"attention_bias\": false,\n"
      "  \"attention_dropout\": 0.0,\n"
      "  \"bos_token_id\": 151643,\n"
      "  \"eos_token_id\": 151645,\n"
      "  \"head_dim\": 128,\n"
      "  \"hidden_act\": \"silu\",\n"
      "  \"hidden_size\": 1024,\n"
      "  \"initializer_range\": 0.02,\n"
      "  \"intermediate_size\": 3072,\n"
      "  \"max_position_embeddings\": 40960,\n"
      "  \"max_window_layers\": 28,\n"
      "  \"num_attention_heads\": 16,\n"
      "  \"num_hidden_layers\": 28,\n"
      "  \"num_key_value_heads\": 8,\n"
      "  \"rms_norm_eps\": 1e-06,\n"
      "  \"rope_scaling\": null,\n"
      "  \"rope_theta\": 1000000,\n"
      "  \"sliding_window\": null,\n"
      "  \"tie_word_embeddings\": true,\n"
      "  \"torch_dtype\": \"bfloat16\",\n"
      "  \"use_cache\": true,\n"
      "  \"use_sliding_window\": false,\n"
      "  \"vocab_size\": 151936\n"
      "}\n",
      28, 1024, 16, 8, 128, 3072, 151936, 1, 0x5157454e33ull },
    { "llama-3.2-1b",
      "{\n"
      "  \"architectures\": [\"LlamaForCausalLM\"],\n"
      "  \"model_type\": \"llama\",\n"
      "  \"attention_bias\": false,\n"
      "  \"attention_dropout\": 0.0,\n"
      "  \"bos_token_id\": 128000,\n"
      "  \"eos_token_id\": [128001, 128008, 128009],\n"
      "  \"head_dim\": 64,\n"
      "  \"hidden_act\": \"silu\",\n"
      "  \"hidden_size\": 2048,\n"
      "  \"initializer_range\": 0.02,\n"
      "  \"intermediate_size\": 8192,\n"
      "  \"max_position_embeddings\": 131072,\n"
      "  \"mlp_bias\": false,\n"
      "  \"num_attention_heads\": 32,\n"
      "  \"num_hidden_layers\": 16,\n"
      "  \"num_key_value_heads\": 8,\n"
      "  \"pretraining_tp\": 1,\n"
      "  \"rms_norm_eps\": 1e-05,\n"
      "  \"rope_scaling\": {\n"
      "    \"factor\": 32.0,\n"
      "    \"high_freq_factor\": 4.0,\n"
      "    \"low_freq_factor\": 1.0,\n"
      "    \"original_max_position_embeddings\": 8192,\n"
      "    \"rope_type\": \"llama3\"\n"
      "  },\n"
      "  \"rope_theta\": 500000.0,\n"
      "  \"tie_word_embeddings\": true,\n"
      "  \"torch_dtype\": \"bfloat16\",\n"
      "  \"use_cache\": true,\n"
      "  \"vocab_size\": 128256\n"
      "}\n",
      16, 2048, 32, 8, 64, 8192, 128256, 0, 0x4c4c414d41ull },
};

/* splitmix64: one call gives four 16-bit uniforms. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* n bf16 values mean + std * z, z ~ Irwin-Hall(4) standardised (bounded by
 * +-3.46, so never an outlier that could overflow anything). */
static void fill_bf16(uint16_t *dst, size_t n, float mean, float std, uint64_t *s) {
    const float k = 1.7320508f / 65536.0f; /* sqrt(3) / 2^16: var of a sum of 4 U(0,1) is 1/3 */
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rng_next(s);
        float sum = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
                    (float)(r >> 48);
        float z = (sum - 2.0f * 65535.0f) * k;
        dst[i] = f32_to_bf16(mean + std * z);
    }
}

#define MAX_T 1024

struct plan {
    struct st_write_tensor t[MAX_T];
    char names[MAX_T][96];
    size_t n;
    size_t bytes;
};

static void plan_add(struct plan *p, const char *name, int64_t d0, int64_t d1) {
    struct st_write_tensor *t = &p->t[p->n];
    snprintf(p->names[p->n], sizeof p->names[p->n], "%s", name);
    t->name = p->names[p->n];
    t->dtype = DT_BF16;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    p->bytes += (size_t)d0 * (size_t)(d1 ? d1 : 1) * 2;
    p->n++;
}

/* Every tensor of the checkpoint, in HF's names and the generation order
 * both writers follow (the quantized one draws the same weights). */
static void plan_model(struct plan *pl, const struct shape_spec *sp) {
    const int D = sp->head_dim, H = sp->n_head, Hkv = sp->n_kv_head, C = sp->d_model, F = sp->d_ff;
    plan_add(pl, "model.embed_tokens.weight", sp->n_vocab, C);
    for (int l = 0; l < sp->n_layer; l++) {
        char n[96];
#define L(s) (snprintf(n, sizeof n, "model.layers.%d.%s", l, s), n)
        plan_add(pl, L("input_layernorm.weight"), C, 0);
        plan_add(pl, L("self_attn.q_proj.weight"), (int64_t)H * D, C);
        plan_add(pl, L("self_attn.k_proj.weight"), (int64_t)Hkv * D, C);
        plan_add(pl, L("self_attn.v_proj.weight"), (int64_t)Hkv * D, C);
        plan_add(pl, L("self_attn.o_proj.weight"), C, (int64_t)H * D);
        if (sp->qk_norm) {
            plan_add(pl, L("self_attn.q_norm.weight"), D, 0);
            plan_add(pl, L("self_attn.k_norm.weight"), D, 0);
        }
        plan_add(pl, L("post_attention_layernorm.weight"), C, 0);
        plan_add(pl, L("mlp.gate_proj.weight"), F, C);
        plan_add(pl, L("mlp.up_proj.weight"), F, C);
        plan_add(pl, L("mlp.down_proj.weight"), C, F);
#undef L
    }
    plan_add(pl, "model.norm.weight", C, 0);
}

static int write_model(const struct shape_spec *sp, const char *dir) {
    char err[1024], path[4200], tmp[4300];
    if (mkdir(dir, 0755) && errno != EEXIST) {
        fprintf(stderr, "mkmodel: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    static struct plan p;
    plan_model(&p, sp);

    fprintf(stderr, "mkmodel: %s: %zu tensors, %.2f GB of bf16 -> %s\n", sp->name, p.n, (double)p.bytes / 1e9, dir);
    double t0 = time_now();
    uint16_t *mem = malloc(p.bytes);
    if (!mem) {
        fprintf(stderr, "mkmodel: cannot allocate %zu bytes\n", p.bytes);
        return 1;
    }
    uint64_t s = sp->seed;
    size_t off = 0;
    for (size_t i = 0; i < p.n; i++) {
        size_t cnt = (size_t)p.t[i].shape[0] * (size_t)(p.t[i].ndim == 2 ? p.t[i].shape[1] : 1);
        p.t[i].data = mem + off;
        if (p.t[i].ndim == 1) fill_bf16(mem + off, cnt, 1.0f, 0.02f, &s);
        else fill_bf16(mem + off, cnt, 0.0f, 0.02f, &s);
        off += cnt;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (st_write_file(tmp, p.t, p.n, err, sizeof err) || rename(tmp, path)) {
        fprintf(stderr, "mkmodel: %s\n", err);
        free(mem);
        return 1;
    }
    free(mem);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(sp->config, f) == EOF || fclose(f)) {
        fprintf(stderr, "mkmodel: %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(stderr, "mkmodel: %s written in %.1f s\n", sp->name, time_now() - t0);
    return 0;
}

/* One row of bf16 values -> MLX affine codes (little-endian, bits 4 or 8),
 * bf16 scale and bias per group of g: scale = (max - min) / (2^bits - 1),
 * bias = min, q = round((w - bias) / scale), as mlx.core.quantize does. */
static void quant_row(uint8_t *codes, uint16_t *sc, uint16_t *bi, const uint16_t *row, int64_t cols, int bits,
                      int g) {
    const float levels = (float)((1 << bits) - 1);
    if (bits == 4) memset(codes, 0, (size_t)cols / 2);
    for (int64_t j = 0; j < cols / g; j++) {
        float mn = INFINITY, mx = -INFINITY;
        for (int i = 0; i < g; i++) {
            float v = bf16_to_f32(row[j * g + i]);
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
        sc[j] = f32_to_bf16((mx - mn) / levels > 1e-8f ? (mx - mn) / levels : 1e-8f);
        bi[j] = f32_to_bf16(mn);
        float s = bf16_to_f32(sc[j]), b = bf16_to_f32(bi[j]);
        for (int i = 0; i < g; i++) {
            int64_t k = j * g + i;
            float q = nearbyintf((bf16_to_f32(row[k]) - b) / s);
            q = q < 0 ? 0 : q > levels ? levels : q;
            if (bits == 8) codes[k] = (uint8_t)q;
            else codes[k / 2] |= (uint8_t)((unsigned)q << (4 * (k % 2)));
        }
    }
}

/* NAME-4bit / NAME-8bit: the same values as NAME (same generator, same
 * order), every matrix (the tied embedding too, as mlx_lm.convert does)
 * MLX-quantized with group 64 and bf16 scales/biases; norms stay bf16. */
static int write_model_q(const struct shape_spec *sp, const char *dir, int bits) {
    const int g = 64;
    char err[1024], path[4200], tmp[4300];
    if (mkdir(dir, 0755) && errno != EEXIST) {
        fprintf(stderr, "mkmodel: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    static struct plan p; /* the bf16 plan, for names, shapes and generation order */
    const int C = sp->d_model, F = sp->d_ff;
    plan_model(&p, sp);
    static struct st_write_tensor out[3 * MAX_T];
    static char names[3 * MAX_T][100];
    size_t no = 0, bytes = 0;
    for (size_t i = 0; i < p.n; i++) {
        const int64_t r = p.t[i].shape[0], c = p.t[i].ndim == 2 ? p.t[i].shape[1] : 0;
        if (!c) {
            bytes += (size_t)r * 2;
            continue;
        }
        bytes += (size_t)(r * c * bits / 8) + 2 * (size_t)(r * (c / g)) * 2;
    }
    uint8_t *mem = malloc(bytes);
    uint16_t *row = malloc((size_t)MAX(C, F) * 2);
    if (!mem || !row) {
        fprintf(stderr, "mkmodel: cannot allocate %zu bytes\n", bytes);
        return 1;
    }
    fprintf(stderr, "mkmodel: %s %d-bit g%d: %.2f GB -> %s\n", sp->name, bits, g, (double)bytes / 1e9, dir);
    double t0 = time_now();
    uint64_t s = sp->seed;
    size_t off = 0;
    for (size_t i = 0; i < p.n; i++) {
        const int64_t r = p.t[i].shape[0], c = p.t[i].ndim == 2 ? p.t[i].shape[1] : 0;
        if (!c) {
            fill_bf16((uint16_t *)(mem + off), (size_t)r, 1.0f, 0.02f, &s);
            out[no] = p.t[i];
            out[no++].data = mem + off;
            off += (size_t)r * 2;
            continue;
        }
        const size_t len = strlen(p.t[i].name) - strlen(".weight");
        uint8_t *codes = mem + off;
        uint16_t *sc = (uint16_t *)(codes + r * c * bits / 8), *bi = sc + r * (c / g);
        for (int64_t k = 0; k < r; k++) {
            fill_bf16(row, (size_t)c, 0.0f, 0.02f, &s);
            quant_row(codes + k * c * bits / 8, sc + k * (c / g), bi + k * (c / g), row, c, bits, g);
        }
        const char *suf[3] = { "weight", "scales", "biases" };
        const void *data[3] = { codes, sc, bi };
        for (int j = 0; j < 3; j++) {
            snprintf(names[no], sizeof names[no], "%.*s.%s", (int)len, p.t[i].name, suf[j]);
            out[no] = (struct st_write_tensor){ names[no], j ? DT_BF16 : DT_U32, 2,
                                                { r, j ? c / g : c * bits / 32 }, data[j] };
            no++;
        }
        off += (size_t)(r * c * bits / 8) + 2 * (size_t)(r * (c / g)) * 2;
    }
    free(row);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (st_write_file(tmp, out, no, err, sizeof err) || rename(tmp, path)) {
        fprintf(stderr, "mkmodel: %s\n", err);
        free(mem);
        return 1;
    }
    free(mem);
    /* config.json: the model's, plus MLX's quantization keys */
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *end = strrchr(sp->config, '}');
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%.*s,\n  \"quantization\": {\"group_size\": %d, \"bits\": %d, \"mode\": \"affine\"},\n"
                         "  \"quantization_config\": {\"group_size\": %d, \"bits\": %d, \"mode\": \"affine\"}\n}\n",
                      (int)(end - sp->config - 1), sp->config, g, bits, g, bits) < 0 || fclose(f)) {
        fprintf(stderr, "mkmodel: %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(stderr, "mkmodel: %s %d-bit written in %.1f s\n", sp->name, bits, time_now() - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mkmodel qwen3-0.6b|llama-3.2-1b[-4bit|-8bit] DIR\n");
        return 2;
    }
    for (size_t i = 0; i < ARRAY_LEN(specs); i++) {
        size_t n = strlen(specs[i].name);
        if (!strcmp(argv[1], specs[i].name)) return write_model(&specs[i], argv[2]);
        if (!strncmp(argv[1], specs[i].name, n) && !strcmp(argv[1] + n, "-4bit")) return write_model_q(&specs[i], argv[2], 4);
        if (!strncmp(argv[1], specs[i].name, n) && !strcmp(argv[1] + n, "-8bit")) return write_model_q(&specs[i], argv[2], 8);
    }
    fprintf(stderr, "mkmodel: unknown model '%s' (qwen3-0.6b, llama-3.2-1b, each also -4bit / -8bit)\n", argv[1]);
    return 2;
}
