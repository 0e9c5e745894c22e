/* backend.h — the ops every backend provides, over buffers it owns.
 *
 * A backend is a table of function pointers (struct backend_ops) plus its
 * state. The model forward (src/model) drives any backend through the bk_*
 * wrappers below and never touches a backend's internals; a backend knows
 * nothing of models (DESIGN.md §2, §7).
 *
 * Conventions (STYLE.md 7): activations are f32, row-major; T tokens in the
 * step, N output features, K input features, H/Hkv heads, D head dim, S
 * sequences, B block size.
 *
 * Memory: every array an op reads or writes (activations, weights' data,
 * scales and biases, norm weights, the KV pools, token ids, positions, slot
 * mappings, query starts, context lengths, block tables) lives in the
 * backend's memory: buffers from bk_alloc, or weights bk_upload'ed into
 * them. The descriptors themselves (struct bk_weight, bk_kv, bk_attn_batch,
 * bk_attn_params, bk_rope) and bk_rope.inv_freq are host memory on every
 * backend. On the CPU (host_mem) the backend's memory is host memory: a
 * caller may pass any host pointer and read results directly, and the
 * memory ops are malloc/free/memcpy. A device backend (CUDA) owns device
 * memory that the host reaches only through bk_upload / bk_download; its
 * ops are queued in order and run asynchronously, and bk_download waits
 * for them.
 *
 * Weights are matrices W[N][K] (out x in, as HF stores nn.Linear) in their
 * stored dtype: F32, BF16 or F16, or affine-quantized codes with per-group
 * scales and biases (struct bk_weight). matmul computes y[T][N] = x[T][K] · W^T
 * and reads each weight row once for all T tokens (decode reads the weights
 * once per step, whatever the batch); embed of an affine table dequantizes
 * the rows it looks up.
 *
 * The KV cache of one layer is two pools [num_blocks][B][Hkv][D] in kv_dtype
 * (F32, BF16 or F16). Block 0 is the null block and is never written.
 *
 * What this does not do: no graph, no scheduling, no allocation inside ops
 * (scratch comes from the caller), no knowledge of layer structure. */
#ifndef VLLMC_BACKEND_H
#define VLLMC_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

/* Storage formats of a weight matrix (DESIGN.md §6-7). */
enum bk_wfmt {
    BK_W_DENSE = 0, /* rows * cols elements of dtype */
    /* Affine quantization, w[n][k] = scales[n][k/g] * q[n][k] + biases[n][k/g]:
     * row n of data is a little-endian bit stream of cols codes of `bits`
     * bits (code k at bit k*bits of the row; rows are row_bytes =
     * cols*bits/8 apart), as MLX stores them; scales and biases are
     * [rows][cols/group_size] in dtype (BF16, F16 or F32). AWQ checkpoints
     * are repacked into this form at load (biases = -zero * scale). */
    BK_W_AFFINE,
};

/* A weight matrix W[rows=N][cols=K] in its stored format. Zero-initialised
 * trailing fields mean a dense matrix, so { dtype, N, K, data } still works. */
struct bk_weight {
    enum dtype dtype;   /* dense: DT_F32, DT_BF16, DT_F16; affine: dtype of scales and biases */
    int64_t rows, cols; /* N, K */
    const void *data;   /* dense: rows * cols elements, row-major; affine: the packed codes */
    enum bk_wfmt fmt;
    int bits, group_size;          /* affine: 2..8 bits, group of 32, 64 or 128 columns */
    const void *scales, *biases;   /* affine: [rows][cols / group_size] in dtype */
};

/* Bytes of one packed row of an affine weight. */
static inline size_t bk_affine_row_bytes(const struct bk_weight *w) { return (size_t)w->cols * (size_t)w->bits / 8; }
/* Code k of row n of an affine weight: the little-endian bit-stream rule. */
static inline unsigned bk_affine_code(const struct bk_weight *w, int64_t n, int64_t k) {
    const uint8_t *row = (const uint8_t *)w->data + (size_t)n * bk_affine_row_bytes(w);
    size_t bit = (size_t)k * (size_t)w->bits;
    unsigned v = row[bit / 8] >> (bit % 8);
    if (bit % 8 + (size_t)w->bits > 8) v |= (unsigned)row[bit / 8 + 1] << (8 - bit % 8);
    return v & ((1u << w->bits) - 1);
}
/* Bytes a weight occupies (codes + scales + biases for affine). */
static inline size_t bk_weight_bytes(const struct bk_weight *w) {
    if (w->fmt == BK_W_AFFINE)
        return (size_t)w->rows * (bk_affine_row_bytes(w) +
                                  2 * (size_t)(w->cols / w->group_size) * dtype_size(w->dtype));
    return (size_t)w->rows * (size_t)w->cols * dtype_size(w->dtype);
}

/* One layer's paged KV cache. */
struct bk_kv {
    void *k, *v;        /* [num_blocks][block_size][Hkv][D] each */
    enum dtype dtype;   /* DT_F32, DT_BF16, DT_F16 */
    int num_blocks, block_size, n_kv_heads, head_dim;
};

/* The flat varlen batch of one step, as the attention op needs it
 * (DESIGN.md §4). Sequence s owns query rows [query_start[s], query_start[s+1])
 * which sit at the last (query_start[s+1]-query_start[s]) positions of its
 * context of seq_len[s] tokens; its context lives in the blocks
 * block_table[s*max_blocks + 0 ..]. */
struct bk_attn_batch {
    int n_seqs;                 /* S */
    const int32_t *query_start; /* [S+1] */
    const int32_t *seq_len;     /* [S] context length after this step */
    const int32_t *block_table; /* [S][max_blocks] */
    int max_blocks;
    /* Host-side bounds for a device backend's launch sizes (0: unknown, the
     * backend assumes max_blocks * block_size and the token count): the
     * largest seq_len[s] and query_start[s+1] - query_start[s]. */
    int max_seq_len, max_query_len;
};

struct bk_attn_params {
    int n_heads, n_kv_heads, head_dim; /* H, Hkv, D; H % Hkv == 0 */
    float scale;                       /* multiplies q·k */
    int sliding_window;                /* 0 = full; else key k visible to query q iff q - k < window */
    float softcap;                     /* 0 = none; else s = cap * tanh(s / cap) */
};

/* Rotary embedding over the first rot_dim dims of each head.
 * angle(pos, i) = pos * inv_freq[i], i < rot_dim/2; cos and sin are multiplied
 * by attn_factor (YaRN / LongRoPE mscale). neox = true is HF's rotate_half
 * layout (pairs i, i + rot_dim/2); false pairs (2i, 2i+1). */
struct bk_rope {
    const float *inv_freq; /* [rot_dim/2] */
    int rot_dim;
    float attn_factor;
    bool neox;
};

enum bk_act { BK_ACT_SILU = 0, BK_ACT_GELU_TANH, BK_ACT_GELU, BK_ACT_RELU };

/* The attention inputs of one layer for qkv_prep (the optional op below). */
struct bk_qkv {
    float *q, *k, *v;                /* [T][H][D], [T][Hkv][D], [T][Hkv][D]: changed in place */
    const float *b_q, *b_k, *b_v;    /* biases [H*D], [Hkv*D], [Hkv*D]; NULL: none */
    const float *q_norm, *k_norm;    /* per-head RMSNorm weights [D]; NULL: no norm */
    float eps;
    const struct bk_rope *rope;      /* NULL: no rotation (NoPE layers) */
    const int32_t *pos, *slots;      /* [T]: positions, KV slots (as kv_store) */
    int T, H, Hkv, D;
};

/* One logits row for sample_rows (the optional op below). Host memory; the
 * layout is shared with the CUDA kernel (cuda_kernels.h ck_sample_req). */
enum bk_sample_mode { BK_SAMPLE_NONE = 0, BK_SAMPLE_ARGMAX = 1, BK_SAMPLE_DRAW = 2 };
struct bk_sample_req {
    int32_t row;            /* row of the logits block [R][V] */
    int32_t mode;           /* enum bk_sample_mode */
    int32_t k;              /* > 0: the k-th largest logit and the candidates at or above it */
    int32_t lp;             /* 1: the log-sum-exp, and the chosen token's logprob and rank */
    float inv_t, min_p;     /* DRAW: weights exp((l - max) * inv_t), 0 where < min_p */
    double u;               /* DRAW: the uniform draw, in [0, 1) */
    int32_t cand_off, cand_cap; /* this row's candidate slots */
    int32_t wsum;           /* 1: also z, the sum of the DRAW weights (inv_t, min_p) over the row */
    int32_t pad_;
};
struct bk_sample_res {
    int32_t token;          /* ARGMAX, DRAW: the token; NONE: -1 */
    int32_t rank;           /* lp and a token */
    float logprob;          /* lp and a token */
    float m, L;             /* the max (always) and the log-sum-exp (lp) */
    float kth, floor;       /* k > 0 */
    int32_t n_cand;         /* k > 0: how many candidates (only cand_cap are written) */
    double z;               /* wsum or DRAW: the weights' sum (0 when every logit is -inf) */
};

struct backend;

struct backend_ops {
    const char *name;
    void (*destroy)(struct backend *bk);
    /* y[T][N] = x[T][K] · W^T */
    void (*matmul)(struct backend *bk, float *y, const float *x, const struct bk_weight *w, int T);
    /* out[T][K] = rows ids[t] of the table W[V][K], converted to f32, times scale */
    void (*embed)(struct backend *bk, float *out, const struct bk_weight *table,
                  const int32_t *ids, int T, float scale);
    /* y[R][n] = x[R][n] / rms(x) * w (w == NULL: no weight). y may alias x. */
    void (*rmsnorm)(struct backend *bk, float *y, const float *x, const float *w, int R, int n, float eps);
    /* rotate x[T][H][D] in place, token t at position pos[t] */
    void (*rope)(struct backend *bk, float *x, const int32_t *pos, int T, int H, int D,
                 const struct bk_rope *r);
    /* out[T][F] = act(gate[t][f]) * up[t][f]; gate/up rows have stride ld */
    void (*glu)(struct backend *bk, float *out, const float *gate, const float *up, int T, int F,
                int ld, enum bk_act act);
    /* y[n] += scale * x[n] */
    void (*add_scaled)(struct backend *bk, float *y, const float *x, float scale, size_t n);
    /* y[T][N] += bias[N] */
    void (*add_bias)(struct backend *bk, float *y, const float *bias, int T, int N);
    /* write k[T][Hkv][D], v[T][Hkv][D] to slot slot_mapping[t] (= block*B + offset);
     * slot < 0: row t is not stored (the padding rows of a recorded step) */
    void (*kv_store)(struct backend *bk, const struct bk_kv *kv, const float *k, const float *v,
                     const int32_t *slot_mapping, int T);
    /* out[T][H][D] = softmax(scale · q·K^T, causal + window) · V over the paged cache */
    void (*attention)(struct backend *bk, float *out, const float *q, const struct bk_kv *kv,
                      const struct bk_attn_batch *b, const struct bk_attn_params *p);
    /* x[n] = cap * tanh(x / cap) */
    void (*softcap)(struct backend *bk, float *x, size_t n, float cap);
    void (*scale)(struct backend *bk, float *x, size_t n, float s);
    /* Host work the engine spreads over the backend's CPU threads (sampling
     * rows): fn(ctx, ith, nth) once per thread, ith = 0 the caller. */
    void (*host_parallel)(struct backend *bk, void (*fn)(void *ctx, int ith, int nth), void *ctx);
    int (*host_threads)(const struct backend *bk);

    /* ---- memory (see the header comment) ---- */
    /* A zero-filled buffer of `bytes` in the backend's memory; NULL if it cannot. */
    void *(*alloc)(struct backend *bk, size_t bytes);
    void (*free)(struct backend *bk, void *p); /* NULL is fine */
    /* Host src -> backend dst, in order after the ops queued so far; src may
     * be reused when it returns. 0, or -1 with a message. */
    int (*upload)(struct backend *bk, void *dst, const void *src, size_t bytes, char *err, size_t errlen);
    /* Wait for the queued ops, then backend src -> host dst. Reports a
     * failure of any queued op: 0, or -1 with a message. */
    int (*download)(struct backend *bk, void *dst, const void *src, size_t bytes, char *err, size_t errlen);
    /* Free and total bytes of the backend's own device memory; -1 where it
     * has none (the CPU: callers size host memory themselves). */
    int (*mem_info)(struct backend *bk, size_t *free_bytes, size_t *total_bytes);
    /* 0 if matmul and embed run weights of w's storage format, else -1 with
     * a message. NULL: every format. */
    int (*weight_check)(struct backend *bk, const struct bk_weight *w, char *err, size_t errlen);

    /* ---- optional (NULL: not offered): recorded op sequences (CUDA graphs) ----
     * Ops queued between graph_begin and graph_end are recorded, not run;
     * graph_launch queues one replay (same buffers, same arguments). While
     * recording, no op may grow the backend's own buffers: run the same ops
     * once unrecorded first. graph_begin: 0, or -1 (nothing is recorded and
     * the caller runs the ops itself). graph_end: the graph, or NULL if the
     * recording failed. graph_launch: 0 queued, 1 stale (the backend's
     * buffers moved since the recording: record again), -1 failed (reported
     * by the next download). */
    int (*graph_begin)(struct backend *bk);
    void *(*graph_end)(struct backend *bk);
    int (*graph_launch)(struct backend *bk, void *graph);
    void (*graph_free)(struct backend *bk, void *graph);

    /* ---- optional (NULL: not offered): the vocabulary passes of sampling ----
     * For each req[j], over the raw row l = logits + row * V (backend
     * memory, e.g. left there by model_forward_keep), into res[j]:
     *   m = max l (NaN ignored; -inf if none); argmax = the first i with
     *     l[i] >= m (0 if none).
     *   lp: L = log sum exp(l - m) (0 when m = -inf).
     *   ARGMAX: token = argmax. DRAW: token = the first i whose running sum
     *     of weights w_0 + .. + w_i exceeds u * sum w, w as in the request
     *     (the last i with w_i > 0 where rounding leaves none; 0 when m =
     *     -inf). NONE: token = -1.
     *   lp with a token: logprob = (l[token] - m) - L, rank = how many i have
     *     (l[i] - m) - L >= logprob (-inf and V when m = -inf).
     *   k > 0: kth = the k-th largest l[i] (NaN as -inf, counted with
     *     multiplicity); floor = f0 = kth - (|kth| * 8 FLT_EPSILON + FLT_MIN)
     *     (the sampler's tie floor: values that may divide by T to kth's
     *     quotient), with lp lowered further so that (floor - m) - L <
     *     (f0 - m) - L (then no value under the floor ties with a
     *     candidate's logprob); n_cand = how many i have l[i] >= floor, and
     *     the first cand_cap of them, in id order, go to cand_id/cand_val
     *     [cand_off ..] (n_slots in all).
     * req, res and the candidate arrays are host memory; the op waits for
     * its results. 0, or -1 with a message. The sampler finishes the rows
     * (sampler_dev_finish). */
    int (*sample_rows)(struct backend *bk, const float *logits, int V, const struct bk_sample_req *req, int n,
                       struct bk_sample_res *res, int32_t *cand_id, float *cand_val, int n_slots, char *err,
                       size_t errlen);

    /* ---- optional (NULL: not offered): fused ops (fewer launches per layer) ----
     * Each equals the sequence of plain ops named, in that order; the model
     * uses it where its layer has that shape and runs the plain ops
     * otherwise.
     * add_rmsnorm: add_scaled(x, o, s, R * n), then rmsnorm(h, x, w, R, n,
     * eps). h may alias o. */
    void (*add_rmsnorm)(struct backend *bk, float *x, const float *o, float s, float *h, const float *w, int R,
                        int n, float eps);
    /* qkv_prep: add_bias of b_q, b_k, b_v; rmsnorm(q, q, q_norm, T * H, D,
     * eps) and the same for k; rope(q), rope(k) at pos; kv_store(kv, k, v,
     * slots, T) — each step only where its field is set. */
    void (*qkv_prep)(struct backend *bk, const struct bk_kv *kv, const struct bk_qkv *a);
    /* qkv_attention: qkv_prep(kv, a), then attention(out, a->q, kv, b, p);
     * a->q, a->k and a->v are left unspecified (the CUDA backend's decode
     * kernel prepares q and the step's keys inside the attention and leaves
     * them as they were). */
    void (*qkv_attention)(struct backend *bk, float *out, const struct bk_kv *kv, const struct bk_qkv *a,
                          const struct bk_attn_batch *b, const struct bk_attn_params *p);
    /* matmul_many: matmul(y[i], x, w[i], T) for i < n (n <= BK_MATMUL_MANY):
     * the weights that read one input (q/k/v, gate/up) in fewer launches. */
    void (*matmul_many)(struct backend *bk, int n, float *const *y, const float *x, const struct bk_weight *const *w,
                        int T);
    /* glu_matmul: glu(a, gate, up, T, F, ld, act), then matmul(y, a, w, T);
     * a [T][F] is the op's to use: its contents afterwards are unspecified
     * (a backend may feed the GLU straight into the matmul). */
    void (*glu_matmul)(struct backend *bk, float *y, float *a, const float *gate, const float *up, int T, int F,
                       int ld, enum bk_act act, const struct bk_weight *w);
    /* add_rmsnorm_matmul: add_rmsnorm(x, o, s, h, w, R, n, eps), then
     * matmul_many(nw, y, h, W, R) (the norm feeds the next layer's q/k/v or
     * the gate/up projections; a backend may round h for them on the way).
     * h is scratch: its contents afterwards are unspecified (the CUDA
     * backend's decode chain never writes it). */
    void (*add_rmsnorm_matmul)(struct backend *bk, float *x, const float *o, float s, float *h, const float *w, int R,
                               int n, float eps, int nw, float *const *y, const struct bk_weight *const *W);
};
#define BK_MATMUL_MANY 4

struct backend {
    const struct backend_ops *ops;
    int n_threads;
    bool host_mem; /* the backend's memory is host memory (CPU); false: device memory */
};

/* CPU backend. n_threads <= 0: one per physical core. isa: NULL or "auto" picks
 * the best the CPU supports; "portable", "avx2", "avx512", "neon" force one
 * (an unsupported choice is an error). A "-exact" suffix ("auto-exact",
 * "avx512-exact") keeps f32 activations in every matmul instead of the bf16
 * hi/lo split used for BF16 weights on AVX512-BF16/AMX (see cpu.c). */
int backend_cpu_create(struct backend **out, int n_threads, const char *isa, char *err, size_t errlen);
/* VLLMC_CPU_SAMPLE_ROWS=1 at create: the CPU backend offers sample_rows too
 * (a plain C version of the device op, so the engine's device-sampling path
 * runs and is tested without a GPU). */
/* VLLMC_CPU_FUSED=1 at create: the CPU backend offers add_rmsnorm,
 * qkv_prep, qkv_attention, matmul_many, glu_matmul and add_rmsnorm_matmul
 * as the plain sequences they equal (so the model's fused path
 * runs and is tested without a GPU). */
/* Name of the kernel set the CPU backend selected ("avx512", "avx2", "neon", "portable"). */
const char *backend_cpu_isa(const struct backend *bk);
/* Name of the kernel set for affine quantized weights ("avx512-vnni-amx",
 * "avx512-vnni", "avx2", "neon", "portable"). */
const char *backend_cpu_quant_isa(const struct backend *bk);

/* CUDA backend (src/backend/cuda/, built with make CUDA=1; without it this
 * reports that it was not built). device: the CUDA device ordinal. n_threads:
 * host threads for host_parallel (sampling), <= 0: one per physical core.
 * Dense bf16/f16 GEMMs round their activations to bf16, as bf16 inference
 * usually does; VLLMC_CUDA_MATMUL=split splits them into hi + lo parts (two
 * GEMMs) so results keep f32-like activation precision, as on the CPU
 * (DESIGN.md 7). VLLMC_CUDA_GRAPHS=0 turns off recorded decode
 * steps (graph_* ops), VLLMC_CUDA_GEMV=1 selects the one-warp-per-row GEMV,
 * VLLMC_CUDA_GEMV_MAX_T=N runs 16-bit dense matmuls of up to N tokens (<= 8)
 * on it instead of cuBLASLt (default 2; 5 with split),
 * VLLMC_CUDA_FUSE=0 leaves out the fused ops (=norm keeps add_rmsnorm and
 * qkv_prep only, =mm all but add_rmsnorm_matmul, =noattn all but
 * qkv_attention; VLLMC_CUDA_QKV_ATTN=always fuses qkv_attention wherever the
 * kernel can, not only in one-wave grids), VLLMC_CUDA_PDL=0 launches
 * without programmatic dependent launch, VLLMC_CUDA_DEC=0..4 (default 3,
 * tensor cores) and VLLMC_CUDA_DEC_CTAS pick the decode attention kernel and
 * its split (VLLMC_CUDA_DEC_PDL=0 launches it without PDL,
 * VLLMC_CUDA_DEC_FLAGS its overlap switches, cuda_kernels.h),
 * VLLMC_CUDA_QG_SHAPE=S,U,W forces the int8 GEMV's launch shape (sweeps),
 * VLLMC_CUDA_GEMV_U=4 the dense GEMV's loads ahead per lane (8; sweeps),
 * VLLMC_CUDA_QGEMV picks the activations of the 4/8-bit GEMV of 1-2
 * tokens: by default one int8 per activation (q8, llama.cpp's precision)
 * for 4-bit weights in the bf16 mode and two (hi + lo, ~16 bits) otherwise;
 * =int8 two everywhere, =q8 one at 4 and 8 bits (not inside the decode
 * chain), =f32 f32 activations; VLLMC_CUDA_QBULK=KB: the 4-bit GEMV of 1-2
 * tokens moves each block's rows into shared memory by cp.async.bulk where a
 * block needs at most KB of it (sm_90; default 160, the most, 16 with q8;
 * 0 off; VLLMC_CUDA_QBULK_SM=N at most N of its one-token blocks per
 * multiprocessor, by padding their shared memory (default 9, 0 none; with
 * q8 none);
 * VLLMC_CUDA_QBULK_TRIG=0..3 where it lets the next kernel launch, sweeps),
 * VLLMC_CUDA_QCHUNK=N: affine 4/8-bit matmuls of up to N tokens run the GEMV
 * 8 tokens at a time (default 32, 16 with bf16 activations),
 * VLLMC_CUDA_QTILE_MB=N: larger affine matmuls dequantize tiles of at most N
 * MB (default 64; sweeps), VLLMC_CUDA_QPF_MB=N: a decode GEMV moves the next
 * affine weight's first N MB into L2 (default 4, 0 off), VLLMC_CUDA_CHAIN=1
 * runs consecutive one-token 4/8-bit matmul ops as one persistent kernel
 * (chain.cu; off by default: slower today; VLLMC_CUDA_CHAIN_MAX=N ops per
 * chain, VLLMC_CUDA_CHAIN_DBG / _TRACE / _COOP / _PDL measurement switches). */
int backend_cuda_create(struct backend **out, int device, int n_threads, char *err, size_t errlen);
/* The same with the matmul activation mode given ("bf16" or "split"; NULL:
 * VLLMC_CUDA_MATMUL, else bf16): the engine's --cuda-matmul. */
int backend_cuda_create_mode(struct backend **out, int device, int n_threads, const char *matmul, char *err,
                             size_t errlen);
/* Number of CUDA devices usable here; 0 when there are none or the build has no CUDA. */
int backend_cuda_devices(void);
/* The CUDA backend's device, for logs ("NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)"). */
const char *backend_cuda_name(const struct backend *bk);
/* Its matmul activation mode in use: "split" or "bf16". */
const char *backend_cuda_matmul_mode(const struct backend *bk);
/* How many qkv_attention calls ran the fused decode kernel (for tests). */
long backend_cuda_fused_attention_calls(const struct backend *bk);
/* How many one-token quantized matmul ops ran in the decode chain (for
 * tests); -1 where the chain is off (not VLLMC_CUDA_CHAIN=1, before sm_90, no CUDA). */
long backend_cuda_chain_ops(const struct backend *bk);
/* The dynamic shared memory (bytes) the backend pads the bulk 4-bit GEMV's
 * blocks to (VLLMC_CUDA_QBULK_SM; for tests): 0 where there is no padding,
 * no bulk GEMV or no CUDA. */
int backend_cuda_qbulk_pad(const struct backend *bk);
/* Which kernels the CUDA backend's matmuls ran, counted since it was
 * created (for tests; zeros without CUDA): launches of our dense GEMV (one
 * per matmul, or per matmul_many call that took every weight in one launch),
 * those one-launch matmul_many calls among them, cuBLASLt GEMMs (of any
 * matmul, dequantized tiles included), and quantized GEMV launches armed to
 * move the next weight's first bytes into L2 (VLLMC_CUDA_QPF_MB), and
 * quantized GEMV launches that moved their rows into shared memory in bulk
 * (VLLMC_CUDA_QBULK). */
struct backend_cuda_counts {
    long dense_gemv, dense_gemv_many, lt_gemm, qgemv_prefetch, qgemv_bulk;
};
void backend_cuda_counts(const struct backend *bk, struct backend_cuda_counts *out);

static inline void bk_destroy(struct backend *bk) { if (bk) bk->ops->destroy(bk); }
static inline void *bk_alloc(struct backend *bk, size_t bytes) { return bk->ops->alloc(bk, bytes); }
static inline void bk_free(struct backend *bk, void *p) { if (p) bk->ops->free(bk, p); }
static inline int bk_upload(struct backend *bk, void *dst, const void *src, size_t bytes, char *err, size_t errlen) {
    return bk->ops->upload(bk, dst, src, bytes, err, errlen);
}
static inline int bk_download(struct backend *bk, void *dst, const void *src, size_t bytes, char *err,
                              size_t errlen) { return bk->ops->download(bk, dst, src, bytes, err, errlen); }
static inline int bk_mem_info(struct backend *bk, size_t *free_bytes, size_t *total_bytes) {
    return bk->ops->mem_info(bk, free_bytes, total_bytes);
}
static inline int bk_weight_check(struct backend *bk, const struct bk_weight *w, char *err, size_t errlen) {
    return bk->ops->weight_check ? bk->ops->weight_check(bk, w, err, errlen) : 0;
}
static inline void bk_matmul(struct backend *bk, float *y, const float *x, const struct bk_weight *w, int T) {
    bk->ops->matmul(bk, y, x, w, T);
}
static inline void bk_embed(struct backend *bk, float *out, const struct bk_weight *t, const int32_t *ids,
                            int T, float scale) { bk->ops->embed(bk, out, t, ids, T, scale); }
static inline void bk_rmsnorm(struct backend *bk, float *y, const float *x, const float *w, int R, int n,
                              float eps) { bk->ops->rmsnorm(bk, y, x, w, R, n, eps); }
static inline void bk_rope(struct backend *bk, float *x, const int32_t *pos, int T, int H, int D,
                           const struct bk_rope *r) { bk->ops->rope(bk, x, pos, T, H, D, r); }
static inline void bk_glu(struct backend *bk, float *out, const float *g, const float *u, int T, int F, int ld,
                          enum bk_act act) { bk->ops->glu(bk, out, g, u, T, F, ld, act); }
static inline void bk_add_scaled(struct backend *bk, float *y, const float *x, float s, size_t n) {
    bk->ops->add_scaled(bk, y, x, s, n);
}
static inline void bk_add_bias(struct backend *bk, float *y, const float *b, int T, int N) {
    bk->ops->add_bias(bk, y, b, T, N);
}
static inline void bk_kv_store(struct backend *bk, const struct bk_kv *kv, const float *k, const float *v,
                               const int32_t *slots, int T) { bk->ops->kv_store(bk, kv, k, v, slots, T); }
static inline void bk_attention(struct backend *bk, float *out, const float *q, const struct bk_kv *kv,
                                const struct bk_attn_batch *b, const struct bk_attn_params *p) {
    bk->ops->attention(bk, out, q, kv, b, p);
}
static inline void bk_softcap(struct backend *bk, float *x, size_t n, float cap) { bk->ops->softcap(bk, x, n, cap); }
static inline void bk_scale(struct backend *bk, float *x, size_t n, float s) { bk->ops->scale(bk, x, n, s); }
static inline void bk_host_parallel(struct backend *bk, void (*fn)(void *, int, int), void *ctx) {
    bk->ops->host_parallel(bk, fn, ctx);
}
static inline int bk_host_threads(const struct backend *bk) { return bk->ops->host_threads(bk); }
static inline int bk_sample_rows(struct backend *bk, const float *logits, int V, const struct bk_sample_req *req,
                                 int n, struct bk_sample_res *res, int32_t *cand_id, float *cand_val, int n_slots,
                                 char *err, size_t errlen) {
    return bk->ops->sample_rows(bk, logits, V, req, n, res, cand_id, cand_val, n_slots, err, errlen);
}

#endif
