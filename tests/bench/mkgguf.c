/* mkgguf.c — convert one of the benchmark's checkpoints (tests/bench/mkmodel.c)
 * to an F16 GGUF file, so llama.cpp's llama-bench can run the very same
 * weights in the same benchmark run.
 *
 *   mkgguf DIR OUT.gguf
 *
 * Writes GGUF v3 as llama.cpp's convert_hf_to_gguf.py would for these two
 * families (general.file_type = MOSTLY_F16): matrices BF16 -> F16, 1-D
 * tensors (norms) F32, llama.cpp's tensor names (token_embd, blk.N.attn_q,
 * ...), the hyper-parameter keys of the "llama" or "qwen3" architecture, Q/K
 * rows permuted for the "llama" architecture (GGML's rope pairs adjacent
 * dims), and for a llama3 rope the rope_freqs.weight factors the converter
 * computes. The tokenizer is "none" with <arch>.vocab_size dummy tokens:
 * llama-bench feeds random token ids and never needs one.
 *
 * Data are streamed tensor by tensor (one tensor's F16 copy in memory at a
 * time). Only what llama-bench needs for Llama and Qwen3 is handled; this is
 * a benchmark tool, not a general converter. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "io/safetensors.h"
#include "model/model.h"

enum { GGUF_U32 = 4, GGUF_F32 = 6, GGUF_STRING = 8 };
enum { GGML_F32 = 0, GGML_F16 = 1 };
#define GGUF_ALIGN 32

struct out_tensor {
    char name[96];
    const struct st_tensor *src;  /* NULL: data in f32 below */
    const float *f32;
    int ndim;
    int64_t ne[2];                /* GGML order: ne[0] = columns */
    int type;
    int permute_heads;            /* >0: Llama Q/K row permutation over this many heads */
    uint64_t offset, nbytes;
};

static void w_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void w_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void w_str(FILE *f, const char *s) {
    w_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}
static void kv_u32(FILE *f, const char *arch, const char *key, uint32_t v) {
    char k[160];
    if (arch) snprintf(k, sizeof k, "%s.%s", arch, key);
    else snprintf(k, sizeof k, "%s", key);
    w_str(f, k);
    w_u32(f, GGUF_U32);
    w_u32(f, v);
}
static void kv_f32(FILE *f, const char *arch, const char *key, float v) {
    char k[160];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    w_str(f, k);
    w_u32(f, GGUF_F32);
    fwrite(&v, 4, 1, f);
}
static void kv_str(FILE *f, const char *key, const char *v) {
    w_str(f, key);
    w_u32(f, GGUF_STRING);
    w_str(f, v);
}

/* llama3 rope factors, as convert_hf_to_gguf.py's LlamaModel computes them. */
static float *llama3_rope_factors(const struct hparams *hp) {
    int n = hp->head_dim / 2;
    float *r = xmalloc((size_t)n * sizeof *r);
    double old = hp->rope.orig_max_pos, lo = hp->rope.low_freq_factor, hi = hp->rope.high_freq_factor;
    double lo_wl = old / lo, hi_wl = old / hi;
    for (int i = 0; i < n; i++) {
        double freq = 1.0 / pow(hp->rope.theta, (2.0 * i) / hp->head_dim);
        double wl = 2 * M_PI / freq;
        if (wl < hi_wl) r[i] = 1;
        else if (wl > lo_wl) r[i] = (float)hp->rope.factor;
        else {
            double smooth = (old / wl - lo) / (hi - lo);
            r[i] = (float)(1.0 / ((1 - smooth) / hp->rope.factor + smooth));
        }
    }
    return r;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mkgguf CHECKPOINT_DIR OUT.gguf\n");
        return 2;
    }
    const char *dir = argv[1], *out = argv[2];
    char err[1024];
    struct hparams hp;
    struct st_set *st;
    if (hparams_load(&hp, dir, NULL, err, sizeof err) || st_open_dir(&st, dir, err, sizeof err)) {
        fprintf(stderr, "mkgguf: %s\n", err);
        return 1;
    }
    const char *arch;
    if (hp.family == FAM_QWEN3) arch = "qwen3";
    else if (hp.family == FAM_LLAMA) arch = "llama";
    else {
        fprintf(stderr, "mkgguf: %s: only Llama and Qwen3 are handled\n", hp.arch);
        return 1;
    }
    bool llama = hp.family == FAM_LLAMA;
    float *rope_freqs = llama && hp.rope.type == ROPE_LLAMA3 ? llama3_rope_factors(&hp) : NULL;

    static const struct { const char *hf, *gg; } names[] = {
        { "input_layernorm.weight", "attn_norm.weight" },
        { "self_attn.q_proj.weight", "attn_q.weight" },
        { "self_attn.k_proj.weight", "attn_k.weight" },
        { "self_attn.v_proj.weight", "attn_v.weight" },
        { "self_attn.o_proj.weight", "attn_output.weight" },
        { "self_attn.q_norm.weight", "attn_q_norm.weight" },
        { "self_attn.k_norm.weight", "attn_k_norm.weight" },
        { "post_attention_layernorm.weight", "ffn_norm.weight" },
        { "mlp.gate_proj.weight", "ffn_gate.weight" },
        { "mlp.up_proj.weight", "ffn_up.weight" },
        { "mlp.down_proj.weight", "ffn_down.weight" },
    };
    size_t cap = 16 + (size_t)hp.n_layer * ARRAY_LEN(names), n = 0;
    struct out_tensor *t = xcalloc(cap, sizeof *t);
    /* add the tensor src (if present) under name gg */
#define ADD(srcname, ggname, perm)                                                                                  \
    do {                                                                                                           \
        const struct st_tensor *s_ = st_find(st, srcname);                                                        \
        if (s_) {                                                                                                  \
            struct out_tensor *o_ = &t[n++];                                                                       \
            snprintf(o_->name, sizeof o_->name, "%s", ggname);                                                    \
            o_->src = s_;                                                                                          \
            o_->ndim = s_->ndim;                                                                                   \
            o_->ne[0] = s_->shape[s_->ndim - 1];                                                                   \
            o_->ne[1] = s_->ndim == 2 ? s_->shape[0] : 1;                                                          \
            o_->type = s_->ndim == 2 ? GGML_F16 : GGML_F32;                                                        \
            o_->permute_heads = perm;                                                                              \
        }                                                                                                          \
    } while (0)
    ADD("model.embed_tokens.weight", "token_embd.weight", 0);
    ADD("model.norm.weight", "output_norm.weight", 0);
    ADD("lm_head.weight", "output.weight", 0);
    if (rope_freqs) {
        struct out_tensor *o = &t[n++];
        snprintf(o->name, sizeof o->name, "rope_freqs.weight");
        o->f32 = rope_freqs;
        o->ndim = 1;
        o->ne[0] = hp.head_dim / 2;
        o->ne[1] = 1;
        o->type = GGML_F32;
    }
    for (int l = 0; l < hp.n_layer; l++)
        for (size_t k = 0; k < ARRAY_LEN(names); k++) {
            char hf[160], gg[96];
            snprintf(hf, sizeof hf, "model.layers.%d.%s", l, names[k].hf);
            snprintf(gg, sizeof gg, "blk.%d.%s", l, names[k].gg);
            int perm = 0;
            if (llama && k == 1) perm = hp.n_head;
            if (llama && k == 2) perm = hp.n_kv_head;
            ADD(hf, gg, perm);
        }
#undef ADD
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        t[i].offset = off;
        t[i].nbytes = (uint64_t)t[i].ne[0] * (uint64_t)t[i].ne[1] * (t[i].type == GGML_F16 ? 2 : 4);
        off = (off + t[i].nbytes + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
    }

    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        perror(tmp);
        return 1;
    }
    const int n_kv = 16;
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, n);
    w_u64(f, (uint64_t)n_kv);
    kv_str(f, "general.architecture", arch);                                   /* 1 */
    kv_str(f, "general.name", dir);                                            /* 2 */
    kv_u32(f, NULL, "general.file_type", 1);                                   /* 3: MOSTLY_F16 */
    kv_u32(f, arch, "context_length", (uint32_t)hp.max_pos);                   /* 4 */
    kv_u32(f, arch, "embedding_length", (uint32_t)hp.d_model);                 /* 5 */
    kv_u32(f, arch, "block_count", (uint32_t)hp.n_layer);                      /* 6 */
    kv_u32(f, arch, "feed_forward_length", (uint32_t)hp.d_ff);                 /* 7 */
    kv_u32(f, arch, "attention.head_count", (uint32_t)hp.n_head);              /* 8 */
    kv_u32(f, arch, "attention.head_count_kv", (uint32_t)hp.n_kv_head);        /* 9 */
    kv_u32(f, arch, "attention.key_length", (uint32_t)hp.head_dim);            /* 10 */
    kv_u32(f, arch, "attention.value_length", (uint32_t)hp.head_dim);          /* 11 */
    kv_u32(f, arch, "rope.dimension_count", (uint32_t)hp.rot_dim);             /* 12 */
    kv_f32(f, arch, "rope.freq_base", (float)hp.rope.theta);                   /* 13 */
    kv_f32(f, arch, "attention.layer_norm_rms_epsilon", hp.norm_eps);          /* 14 */
    kv_u32(f, arch, "vocab_size", (uint32_t)hp.n_vocab);                       /* 15 */
    kv_str(f, "tokenizer.ggml.model", "none");                                 /* 16 */
    for (size_t i = 0; i < n; i++) {
        w_str(f, t[i].name);
        w_u32(f, (uint32_t)t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++) w_u64(f, (uint64_t)t[i].ne[d]);
        w_u32(f, (uint32_t)t[i].type);
        w_u64(f, t[i].offset);
    }
    long pos = ftell(f);
    for (long p = pos; p % GGUF_ALIGN; p++) fputc(0, f);

    uint64_t written = 0;
    for (size_t i = 0; i < n; i++) {
        const struct out_tensor *o = &t[i];
        while (written < o->offset) fputc(0, f), written++;
        size_t cnt = (size_t)o->ne[0] * (size_t)o->ne[1];
        if (o->type == GGML_F32) {
            float *v = xmalloc(cnt * sizeof *v);
            for (size_t j = 0; j < cnt; j++) v[j] = o->f32 ? o->f32[j] : dtype_read_f32(o->src->data, o->src->dtype, j);
            fwrite(v, 4, cnt, f);
            free(v);
        } else {
            uint16_t *v = xmalloc(cnt * sizeof *v);
            size_t K = (size_t)o->ne[0], N = (size_t)o->ne[1];
            size_t hd = o->permute_heads ? N / (size_t)o->permute_heads : 0;
            for (size_t r = 0; r < N; r++) {
                /* HF row (h, j, i) of each head -> GGML row (h, i, j), j in {0,1} halves */
                size_t src_r = r;
                if (hd) {
                    size_t h = r / hd, w = r % hd, i2 = w / 2, j = w % 2;
                    src_r = h * hd + j * (hd / 2) + i2;
                }
                for (size_t c = 0; c < K; c++)
                    v[r * K + c] = f32_to_f16(dtype_read_f32(o->src->data, o->src->dtype, src_r * K + c));
            }
            fwrite(v, 2, cnt, f);
            free(v);
        }
        written += o->nbytes;
    }
    if (ferror(f) | fclose(f) || rename(tmp, out)) {
        perror(out);
        return 1;
    }
    fprintf(stderr, "mkgguf: %s: %zu tensors, %.2f GB -> %s\n", dir, n, (double)written / 1e9, out);
    free(t);
    free(rope_freqs);
    st_close(st);
    hparams_free(&hp);
    return 0;
}
