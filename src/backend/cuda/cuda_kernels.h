/* cuda_kernels.h — the CUDA kernels of the CUDA backend, as plain C entry
 * points (kernels.cu, attn_fa.cu, attn_dec.cu, fused.cu, sample.cu and
 * quant.cu, compiled by nvcc) that cuda.c calls. Each one queues its
 * kernel(s) on the given stream and returns the launch's error (0 =
 * cudaSuccess); none waits for the device.
 *
 * All pointers are device memory except the small parameter structs, which
 * travel by value in the launch. Element types are named by the codes below
 * (the backend's enum dtype values are translated in cuda.c), so this header
 * needs neither CUDA's nor the project's headers and is shared by C and C++.
 *
 * What this does not do: no allocation, no synchronisation, no cuBLAS
 * (cuda.c owns the handles and the workspaces). */
#ifndef VLLMC_CUDA_KERNELS_H
#define VLLMC_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *ck_stream; /* = cudaStream_t */

enum ck_type { CK_F32 = 0, CK_BF16 = 1, CK_F16 = 2 };

#define CK_ROPE_MAX_HALF 256 /* rot_dim / 2 at most */
#define CK_GEMV_MAX_T 8      /* tokens per gemv call at most */
#define CK_ATTN_MAX_D 256    /* head dim at most */

/* y[T][N] = x[T][K] · W[N][K]^T with f32 activations and f32 sums, for
 * T <= CK_GEMV_MAX_T (decode): each weight row read once for all T tokens.
 * variant 0: rows split over several warps where there are few of them
 * (16-byte loads; the default); 1: one warp per row (the first version, kept
 * for comparison; also the fallback for unaligned or odd K). */
/* Programmatic dependent launch for the kernels that support it
 * (ck_device.cuh): on (1) by default where the GPU is sm_90 or newer and the
 * kernels run from sm_90 code (ck_kernel_ptx_version() >= 90). */
void ck_set_pdl(int on);
/* The PTX architecture (80, 90, ...) the kernels run from on the current
 * device (cudaFuncAttributes.ptxVersion); 0 if it cannot be told. */
int ck_kernel_ptx_version(void);

int ck_gemv(ck_stream st, float *y, const float *x, const void *w, enum ck_type wt, int N, int K, int T, int variant);
/* ck_gemv's default kernel over n <= CK_GEMV_MAX_W weights of one type and
 * K that read the same x (q/k/v, gate/up) in one launch: y[i][T][N[i]];
 * every weight and x 16-byte aligned with K % (16 / element size) == 0, or
 * cudaErrorInvalidValue. */
#define CK_GEMV_MAX_W 4
int ck_gemv_many(ck_stream st, int n, float *const *y, const float *x, const void *const *w, const int *N,
                 enum ck_type wt, int K, int T);
/* 16-byte pieces per lane loaded ahead in those kernels: 8 (default) or 4
 * (sweeps; VLLMC_CUDA_GEMV_U) */
void ck_gemv_shape(int u);
/* hi[i] = round(x[i]) to wt (BF16 or F16); lo (may be NULL) = round(x - hi) */
int ck_split(ck_stream st, void *hi, void *lo, const float *x, enum ck_type wt, size_t n);
/* out[t][k] = table[ids[t]][k] * scale */
int ck_embed(ck_stream st, float *out, const void *table, enum ck_type tt, const int32_t *ids, int T, int K,
             float scale);
/* y[r] = x[r] / rms(x[r]) * w (w NULL: none), rows of n; y may alias x */
int ck_rmsnorm(ck_stream st, float *y, const float *x, const float *w, int R, int n, float eps);

struct ck_rope {
    float inv_freq[CK_ROPE_MAX_HALF];
    int rot_dim;
    float attn_factor;
    int neox;
};
int ck_rope(ck_stream st, float *x, const int32_t *pos, int T, int H, int D, const struct ck_rope *r);
/* act: 0 silu, 1 gelu (tanh), 2 gelu (erf), 3 relu — enum bk_act's values */
int ck_glu(ck_stream st, float *out, const float *gate, const float *up, int T, int F, int ld, int act);
/* ck_glu then ck_split of its [T][F] output (wt BF16 or F16; lo NULL: hi
 * only), without the f32 output in between: the same values, half the
 * memory traffic of the two (prefill's GLU before the down projection) */
int ck_glu_split(ck_stream st, void *hi, void *lo, const float *gate, const float *up, int T, int F, int ld, int act,
                 enum ck_type wt);
int ck_add_scaled(ck_stream st, float *y, const float *x, float s, size_t n);
int ck_add_bias(ck_stream st, float *y, const float *bias, int T, int N);
int ck_softcap(ck_stream st, float *x, size_t n, float cap);
int ck_scale(ck_stream st, float *x, size_t n, float s);
/* k/v [T][row] (row = Hkv * D) to pools [slots][row] in kt */
int ck_kv_store(ck_stream st, void *kc, void *vc, enum ck_type kt, const float *k, const float *v,
                const int32_t *slots, int T, int row);

struct ck_attn {
    const int32_t *query_start, *seq_len, *block_table; /* device */
    int n_seqs, max_blocks, block_size;
    int H, Hkv, D;
    float scale, softcap;
    int window;
};
/* Paged attention over the flat varlen batch (see backend.h): one warp per
 * (query row, head), keys split into n_split ranges whose partial results
 * (part: n_split * T_bound * H * (D + 2) floats) a second kernel combines;
 * n_split == 1 writes out directly (part unused); n_split <= 128. T_bound >=
 * the token count. */
int ck_attention(ck_stream st, float *out, const float *q, const void *kc, const void *vc, enum ck_type kt,
                 const struct ck_attn *a, int T_bound, int n_split, float *part);

/* The decode kernels for 16-bit caches (attn_dec.cu): same contract as
 * ck_attention, for steps of few query rows (max_q >= every sequence's),
 * BF16/F16 KV with D 64, 128 or 256 and 16-byte aligned pools
 * (ck_attention_dec_runs says whether a call qualifies). One CTA per (split,
 * KV head, chunk of (token, query head) rows of that KV head, sequence):
 * ck_attention_dec_ctas CTAs per split; n_split <= 128 ranges of keys merged
 * by a second kernel (part: n_split * T_bound * H * (D + 2) floats when
 * n_split > 1). variant 1: K/V loaded into registers, chunks of up to 8
 * rows, exact f32 products; 2: the same with tiles copied into shared memory
 * by cp.async, two stages; 3: tensor cores, chunks of 16 rows, q and P
 * rounded to the KV type (attn_fa.cu's numerics), two stages of 64 keys;
 * 4: variant 3 with three stages. Variants 3 and 4 take D 64 and 128 with
 * power-of-two blocks; other calls run variant 2. */
/* Launch the decode attention kernels with PDL (each waits at its start,
 * none triggers early): on by default (4-bit 8B decode 3.24-3.26 -> 3.19-3.20
 * ms/token on an H100), VLLMC_CUDA_DEC_PDL=0 off. */
void ck_attention_dec_pdl(int on);
/* Overlap switches of the decode kernels (VLLMC_CUDA_DEC_FLAGS, for sweeps):
 * CK_DEC_PREFETCH: variant 3/4 copies the keys the kernel before did not
 * write (all but each sequence's query rows) before its PDL wait;
 * CK_DEC_TRIGGER: variant 3/4 lets the merge kernel launch after its main
 * loop; CK_DEC_COMBINE_TRIGGER: the merge kernel lets the next kernel launch
 * at its start. Default PREFETCH | TRIGGER (cuda.c; measured in
 * BENCHMARKS.md); the combine trigger was no faster. */
#define CK_DEC_PREFETCH 1
#define CK_DEC_TRIGGER 2
#define CK_DEC_COMBINE_TRIGGER 4
void ck_attention_dec_flags(int flags);
int ck_attention_dec_runs(enum ck_type kt, const struct ck_attn *a, const void *kc, const void *vc);
int ck_attention_dec_ctas(const struct ck_attn *a, int max_q, int variant);
int ck_attention_dec(ck_stream st, float *out, const float *q, const void *kc, const void *vc, enum ck_type kt,
                     const struct ck_attn *a, int T_bound, int max_q, int n_split, float *part, int variant);

/* fused.cu: backend.h add_rmsnorm (x[R][n] += s * o; h = rmsnorm(x) * w, w
 * NULL: none; h may alias o) and qkv_prep (the fields below as struct
 * bk_qkv; rope != 0: rotate by r; k, v stored to pools [slots][Hkv * D] of
 * kt). */
int ck_add_rmsnorm(ck_stream st, float *x, const float *o, float s, float *h, const float *w, int R, int n,
                   float eps);
#define CK_NORM_ROW_MAX 32768 /* the longest row of the register-held norm kernels (ck_add_rmsnorm_row) */
/* ck_add_rmsnorm whose h is not written but rounded into 16-bit hi (and lo
 * = h - hi unless NULL) as ck_split rounds it (wt BF16 or F16; rows of n %
 * 8 == 0 up to CK_NORM_ROW_MAX, else cudaErrorInvalidValue) */
int ck_add_rmsnorm_split(ck_stream st, float *x, const float *o, float s, void *hi, void *lo, const float *w, int R,
                         int n, float eps, enum ck_type wt);
struct ck_qkv {
    float *q, *k, *v;
    const float *bq, *bk, *bv, *qn, *kn;
    const int32_t *pos, *slots;
    int T, H, Hkv, D;
    float eps;
    int rope;
};
int ck_qkv_prep(ck_stream st, const struct ck_qkv *a, const struct ck_rope *r, void *kc, void *vc, enum ck_type kt);
/* ck_qkv_prep then ck_attention_dec (variant 3) in one kernel (attn_dec.cu):
 * p holds the raw q, k, v (read, not changed; the attention reads p->q), and
 * each CTA prepares its own q rows and the step's keys in its range, the
 * key's owner storing them to kc / vc at p->slots. Bit-identical to the two
 * calls where the batch's tokens are exactly its sequences' query rows (p->T
 * = query_start[n_seqs]: tokens past them are not stored). cudaErrorInvalidValue
 * where variant 3 does not run the call or there is nothing to attend (then
 * make the two calls). */
int ck_attention_dec_prep(ck_stream st, float *out, const struct ck_qkv *p, const struct ck_rope *r, void *kc,
                          void *vc, enum ck_type kt, const struct ck_attn *a, int T_bound, int max_q, int n_split,
                          float *part);

/* The tensor-core (FlashAttention-2-style) kernel for steps with long query
 * ranges (attn_fa.cu): same contract as ck_attention with n_split = 1, q and
 * P rounded to the KV type before the products. Runs BF16/F16 KV with D 64,
 * 128 or 256, power-of-two blocks, scale > 0, q 16-byte and out 8-byte
 * aligned: ck_attention_fa_runs says whether a call qualifies. max_q >= every
 * sequence's query rows. variant (D 64 and 128; D 256 has one tile shape):
 * 0 = 128 rows x 64 keys per tile, 1 = 64 x 64, 2 = 128 x 32, -1 = chosen by
 * the grid's size against n_sm multiprocessors. */
int ck_attention_fa_runs(enum ck_type kt, const struct ck_attn *a, const void *q, const void *out, const void *kc,
                         const void *vc);
int ck_attention_fa(ck_stream st, float *out, const float *q, const void *kc, const void *vc, enum ck_type kt,
                    const struct ck_attn *a, int max_q, int variant, int n_sm);

/* sample.cu: backend.h sample_rows over logits rows [.][V] (one block per
 * request); the same layouts as bk_sample_req / bk_sample_res (cuda.c checks). */
enum { CK_SAMPLE_NONE = 0, CK_SAMPLE_ARGMAX = 1, CK_SAMPLE_DRAW = 2 };
struct ck_sample_req {
    int32_t row, mode, k, lp;
    float inv_t, min_p;
    double u;
    int32_t cand_off, cand_cap, wsum, pad_;
};
struct ck_sample_res {
    int32_t token, rank;
    float logprob, m, L, kth, floor;
    int32_t n_cand;
    double z;
};
int ck_sample_rows(ck_stream st, const float *logits, int V, const struct ck_sample_req *req, int n,
                   struct ck_sample_res *res, int32_t *cand_id, float *cand_val);

/* ---- affine-quantized weights (quant.cu) ----
 * Codes as backend.h's BK_W_AFFINE (MLX bit streams, BITS 2, 3, 4, 5, 6 or
 * 8; groups of 32, 64 or 128 columns; scales and biases [N][K / group] in
 * sdt). Codes must be aligned to their load: 16 bytes for 4 and 8 bits, 8
 * for 2 and 6, 4 for 3 and 5 (cudaMalloc'd weights are). An unsupported
 * weight returns cudaErrorInvalidValue, a misaligned one
 * cudaErrorMisalignedAddress. */
struct ck_qweight {
    const void *codes, *scales, *biases;
    enum ck_type sdt;
    int bits, group_size;
};
/* y[T][N] = x[T][K] · W^T for T <= CK_GEMV_MAX_T: each packed row read once,
 * f32 sums. 4 and 8 bits (variant 0): the activations are first rounded to
 * two int8 parts per block of 32 (x = d (256 hi + lo), error <= max |x| of
 * the block / 65024 per element) in scratch (ck_qgemv_scratch(K, T) bytes,
 * 256-byte aligned, stream ordered: free again when the call's kernels are
 * done), which the codes meet in dp4a. Variant 2: the same, but 1-2 tokens
 * use the high int8 part only (error <= max |x| of the block / 254 per
 * element, as llama.cpp's q8_1 activations). Other widths and variant 1 keep
 * f32 activations (scratch unused). */
size_t ck_qgemv_scratch(int K, int T);
int ck_qgemv(ck_stream st, float *y, const float *x, const struct ck_qweight *w, int N, int K, int T, void *scratch,
             int variant);
/* The input of ck_qgemv_many: x[T][K] (x != NULL), or the GLU
 * act(gate) * up over rows of stride ld >= K, computed as ck_glu does, or
 * (ready) what ck_add_rmsnorm_qx just left in the scratch. */
#define CK_QBULK_MAX_KB 160 /* ck_qx_in.bulk_kb at most */
struct ck_qx_in {
    const float *x, *gate, *up;
    int ld, act, ready;
    int act8; /* 1-2 tokens: the GEMV uses the high int8 part only (ck_qgemv's variant 2) */
    /* 4-bit weights, 1-2 tokens, sm_90 (ck_qgemv_bulk_supported): the
     * GEMV whose blocks move their 4 rows into shared memory by
     * cp.async.bulk (quant.cu's qgb_k), for calls whose shapes allow it
     * (every weight's rows a multiple of 4, a block's scales a multiple of
     * 16 bytes) and whose blocks need at most bulk_kb KB of it (1 to
     * CK_QBULK_MAX_KB); 0: off */
    int bulk_kb;
    /* the least dynamic shared memory such a block asks for (bytes, from
     * ck_qgemv_bulk_pad): caps how many are resident per multiprocessor */
    int bulk_pad;
};
/* Force the launch shape of the int8 GEMV (for sweeps; 0 = the measured
 * table): S warps per row set (1, 2, 4), U chunks in flight per warp (1, 2),
 * W warps per block (4, 8), where the shape is valid (S divides W); trig
 * 1: the GEMV lets the next kernel launch at its start (default 0: as its
 * blocks exit, measured faster on an H100). */
void ck_qgemv_shape(int S, int U, int W, int trig);
/* whether the current device runs ck_qx_in.bulk_kb (sm_90 with the sm_90
 * build); also lets its kernels use CK_QBULK_MAX_KB of shared memory there.
 * Call it once per device before the first such GEMV (outside graph capture). */
int ck_qgemv_bulk_supported(void);
/* The dynamic shared memory per block that leaves room for at most per_sm
 * one-token bulk GEMV blocks (default activations) on a multiprocessor of
 * the current device: ck_qx_in.bulk_pad; 0 where per_sm <= 0 or that many
 * already fit no more. */
int ck_qgemv_bulk_pad(int per_sm);
/* launches of the bulk kernel so far (process-wide, for counting) */
long ck_qgemv_bulk_launches(void);
/* where the bulk GEMV lets the next kernel launch (for sweeps): 0 as a block
 * exits, 1 at its start, 2 once its bytes are in shared memory (default), 3
 * after its sums */
void ck_qgemv_bulk_trig(int where);
/* The next ck_qgemv / ck_qgemv_many call (only that one, whatever path it
 * takes) moves the first bytes at p into L2 as its blocks finish (the int8
 * GEMV on sm_90, cp.async.bulk.prefetch, each block a slice): the weight the
 * GEMV after it reads first. */
void ck_qgemv_prefetch(const void *p, size_t bytes);
/* ck_add_rmsnorm (x += s * o; h = rmsnorm(x) * w, R <= CK_GEMV_MAX_T rows
 * of n) that also rounds h into scratch as ck_qgemv_many rounds its input
 * for weights of these bits (4 or 8) and group size: then call
 * ck_qgemv_many with ready = 1, same scratch, K = n, T = R. */
int ck_add_rmsnorm_qx(ck_stream st, float *x, const float *o, float s, float *h, const float *w, int R, int n,
                      float eps, int bits, int gs, void *scratch);
#define CK_QGEMV_MAX_W 4 /* weights per ck_qgemv_many call */
/* y[i][T][N[i]] = in · W_i^T for the n weights (same bits 4 or 8, group and
 * scale dtype; 1 <= n <= CK_QGEMV_MAX_W), T <= CK_GEMV_MAX_T: the input is
 * rounded once (as ck_qgemv's variant 0) and one kernel covers every
 * weight's rows. scratch: ck_qgemv_scratch(K, T) bytes. Anything else
 * returns cudaErrorInvalidValue before queuing work (the caller then runs
 * the ops one by one). */
int ck_qgemv_many(ck_stream st, int n, float *const *y, const struct ck_qx_in *in, const struct ck_qweight *w,
                  const int *N, int K, int T, void *scratch);
/* chain.cu: one-token matmuls of 4/8-bit affine weights, each with the
 * op that makes its input, run back to back in one persistent kernel (the
 * weights stream into shared memory across the ops; CTAs meet at grid-wide
 * barriers between them). An op is
 *   CK_CHAIN_X:    y_j = x · W_j^T
 *   CK_CHAIN_NORM: x += s o; h = x / rms(x) * w (w NULL: 1); y_j = h · W_j^T
 *                  (x is written, h is not: backend.h's add_rmsnorm_matmul)
 *   CK_CHAIN_GLU:  y = (act(gate) * up) · W^T
 * for j < nw, the weights of one width, group and scale type (as
 * ck_qgemv_many), rows K wide; with ck_qgemv's arithmetic (int8 parts of
 * the input). An op reads what the ops before it wrote. sync: a device
 * buffer of ck_chain_sync_bytes(), zero before the first call and left zero
 * by every call (one chain at a time per buffer, stream ordered).
 * ck_chain_fits says whether an op can run in a chain (K <= 16384, 16-byte
 * aligned weights, scales of each weight a multiple of 16 bytes in all);
 * ck_chain_supported whether this device can (sm_90, enough shared memory). */
#define CK_CHAIN_MAX 8 /* ops per chain */
enum { CK_CHAIN_X = 0, CK_CHAIN_NORM = 1, CK_CHAIN_GLU = 2 };
struct ck_chain_op {
    int kind, nw, K, bits, gs, sdt, act;
    float s, eps;
    float *x;               /* X: the input; NORM: the residual (updated) */
    const float *o, *w;     /* NORM */
    const float *gate, *up; /* GLU */
    struct ck_qweight wt[CK_QGEMV_MAX_W];
    float *y[CK_QGEMV_MAX_W];
    int N[CK_QGEMV_MAX_W];
};
size_t ck_chain_sync_bytes(void);
int ck_chain_supported(void);
int ck_chain_fits(const struct ck_chain_op *op);
int ck_chain(ck_stream st, const struct ck_chain_op *ops, int n, unsigned *sync);
/* ck_qgemv's arithmetic (4 and 8 bits: the int8 activation parts, exact
 * integer sums, s * d and the bias in f32) for 1 <= T <= CK_QMMA_MAX_T tokens
 * on the tensor cores (int8 mma), each code read once for all of them; the
 * f32 sums run per block of 32 codes (the GEMV's per 16 bytes), so the
 * results are close to ck_qgemv's, not its bits. scratch:
 * ck_qgemv_scratch(K, T) bytes, 256-byte aligned. */
#define CK_QMMA_MAX_T 32
int ck_qmma(ck_stream st, float *y, const float *x, const struct ck_qweight *w, int N, int K, int T, void *scratch);
/* rows [n0, n0 + rows) of W to hi[rows][K] = bf16(w) and, if lo is not NULL,
 * lo[rows][K] = bf16(w - hi) (w = s * q + b in f32; hi and lo 16-byte
 * aligned) */
int ck_qdequant(ck_stream st, void *hi, void *lo, const struct ck_qweight *w, int K, int n0, int rows);
/* out[t][k] = w[ids[t]][k] * scale, rows dequantized as the CPU does */
int ck_qembed(ck_stream st, float *out, const struct ck_qweight *w, const int32_t *ids, int T, int K, float scale);

#ifdef __cplusplus
}
#endif

#endif
