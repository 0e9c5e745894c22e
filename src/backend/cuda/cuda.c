/* cuda.c — the CUDA backend (DESIGN.md §7): the op table of backend.h over
 * device memory, on one CUDA stream of one device.
 *
 * Owns: the stream, a cuBLASLt handle with its workspace and a cache of
 * matmul plans (layouts + heuristic algorithm per shape), scratch for 16-bit
 * activations and split-KV partials (grown to the largest step seen, so steady
 * decode allocates nothing), and a host thread pool for host_parallel
 * (the sampling rows the device does not finish run on the host).
 *
 * Matmul: for few tokens (decode) our GEMV reads each weight row once with
 * f32 activations (16-bit weights: up to 2 tokens, 5 with the split mode,
 * where cuBLASLt's tensor cores get ahead; f32 weights: up to
 * CK_GEMV_MAX_T); more tokens go to cuBLASLt (f32 sums). F32
 * weights: an f32 GEMM (no TF32). BF16/F16 weights: the activations are
 * rounded to the weight type (one GEMM, as bf16 inference usually does: the
 * default); with the split mode (--cuda-matmul split, VLLMC_CUDA_MATMUL=split)
 * the rounding error goes through a second GEMM (x = hi + lo, y = W·hi +
 * W·lo), so results keep f32-like activation precision as on the CPU.
 * F16 activations saturate beyond 65504 (F16 weights only).
 * Affine-quantized weights (MLX bit streams, AWQ repacked): the quantized
 * GEMV of quant.cu up to CK_GEMV_MAX_T tokens (4 and 8 bits: activations
 * rounded to two int8 parts, ~16 bits, in scratch qx, or for 1-2 tokens of
 * 4-bit weights in the bf16 mode to one, see qgemv_act8; VLLMC_CUDA_QGEMV=f32
 * keeps them f32 as the other widths do); at 4/8 bits 9-16 tokens (32 with
 * split) on the tensor cores (ck_qmma), where that is off in runs of 8
 * tokens up to qchunk_max (VLLMC_CUDA_QCHUNK); beyond, tiles of rows
 * dequantized to bf16 hi (+ lo) in one scratch buffer (wq), then cuBLASLt
 * as above (see matmul_affine). Embedding lookups dequantize the rows they
 * read.
 *
 * Memory: bk_alloc is cudaMalloc (never managed memory) zero-filled on the
 * stream; upload and download are stream-ordered copies that wait for the
 * copy. The first CUDA error is kept and reported by the next upload or
 * download (ops return nothing).
 *
 * Weight prefetch: the backend learns the order in which affine weights are
 * used (every forward runs them in the same order; the prefill before the
 * first decode step teaches it) and arms each decode GEMV with the next
 * GEMV's first 4 MB of codes, which its blocks move into L2 as they finish
 * (ck_qgemv_prefetch), so the next kernel's first loads hit L2 instead of
 * starting cold. A freed weight clears what was learned.
 *
 * Graphs: graph_begin/end record the ops queued between them by stream
 * capture (the forward records whole decode steps, forward.c); a recording
 * remembers the scratch generation, and a replay after xb, part, wq or qx moved
 * reports itself stale. VLLMC_CUDA_GRAPHS=0 turns recording off.
 *
 * Attention: steps whose longest query range has CUDA_FA_MIN_Q rows or more
 * (prefill, chunked prefill, and the decode rows batched with them) run the
 * tensor-core kernel (attn_fa.cu) where it applies (BF16/F16 KV, D 64, 128
 * or 256); decode steps on 16-bit caches (D 64, 128, 256) run attn_dec.cu,
 * split over the keys until the CTAs fill the GPU VLLMC_CUDA_DEC_CTAS times
 * per multiprocessor (default 2): its tensor-core variant (3, the default,
 * D 64 and 128; VLLMC_CUDA_DEC=4 with three stages), 2 its exact-f32
 * cp.async variant (also where 3 does not apply), 1 its register-load
 * variant, 0 the warp kernel; the rest run the warp-per-row kernel, split
 * over the keys for decode. VLLMC_CUDA_ATTN=warp keeps the warp kernel for
 * everything; fa0, fa1 and fa2 fix the FA kernel's tile shape
 * (ck_attention_fa; fa, the default, lets it choose).
 *
 * Fused ops (fused.cu, quant.cu): add_rmsnorm and qkv_prep (backend.h),
 * which the forward uses instead of the plain sequences; matmul_many,
 * glu_matmul and add_rmsnorm_matmul, which on affine 4/8-bit decode
 * weights become one rounding (or none: the norm or GLU kernel rounds) and
 * one GEMV launch over every weight's rows, and the plain ops otherwise.
 * VLLMC_CUDA_FUSE=0 leaves them out of the op table (=norm keeps
 * add_rmsnorm and qkv_prep). The decode path's kernels are launched with
 * programmatic dependent launch (ck_device.cuh; VLLMC_CUDA_PDL=0 off).
 *
 * Sampling: sample_rows (sample.cu) runs the vocabulary passes of the rows
 * the engine's sampler can finish from a few numbers and candidates.
 *
 * What this does not do: quantized formats other than affine, top_p and
 * logit processors on the device, overlapping host scheduling with the
 * device — later steps. */
#include "backend/backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "util/threadpool.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define LT_WORKSPACE ((size_t)32 << 20)
#define CUDA_FA_MIN_Q 16 /* query rows of a sequence from which the FA kernel runs the step */
/* affine prefill: dequantized rows per tile (hi + lo) at most; 8, 16 MB
 * were slower on an H200 and 32 MB the same (BENCHMARKS.md); VLLMC_CUDA_QTILE_MB */
#define QTILE_BYTES ((size_t)64 << 20)
#define N_PLANS 64

struct mm_plan {
    bool used;
    cudaDataType_t type;
    int N, K, T, ldc;
    uint32_t align[3];
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

struct cuda_backend {
    struct backend base;
    struct backend_ops ops; /* cuda_ops, less the fused ops with VLLMC_CUDA_FUSE=0 */
    int device, n_sm;
    char name[256];
    cudaStream_t st;
    cublasLtHandle_t lt;
    void *ws;
    struct threadpool *pool;
    bool split;          /* bf16/f16 GEMMs: hi + lo activations */
    int gemv_variant;    /* VLLMC_CUDA_GEMV (see ck_gemv) */
    int gemv_max_t;      /* 16-bit dense matmuls of up to this many tokens run our GEMV (VLLMC_CUDA_GEMV_MAX_T) */
    int qmma_min, qmma_max; /* 4/8-bit matmuls of this many tokens run ck_qmma (VLLMC_CUDA_QMMA_T) */
    bool qa_always;         /* qkv_attention fuses whenever the kernel can (VLLMC_CUDA_QKV_ATTN=always) */
    long n_fused_attn;      /* qkv_attention calls that ran fused (backend_cuda_fused_attention_calls) */
    bool attn_warp;      /* VLLMC_CUDA_ATTN=warp: the warp kernel only */
    int fa_variant;      /* else ck_attention_fa's variant (-1: its choice) */
    int dec;             /* decode steps on 16-bit caches: attn_dec.cu's variant (VLLMC_CUDA_DEC; 0: warp kernel) */
    int dec_ctas;        /* its split target: CTAs per multiprocessor (VLLMC_CUDA_DEC_CTAS) */
    void *xb;            /* 16-bit activations: hi then lo */
    size_t xb_len;
    float *part;         /* split-KV partial results */
    size_t part_len;
    void *wq;            /* affine prefill: a tile of dequantized weight rows, bf16 hi then lo */
    size_t wq_len;
    void *qx;            /* affine decode: activations rounded to int8 (ck_qgemv_scratch) */
    size_t qx_len;
    int qgemv_variant;   /* VLLMC_CUDA_QGEMV: int8 (default) = 0, f32 = 1 (see ck_qgemv) */
    int qgemv_act8;      /* int8-only activations for 1-2 tokens (ck_qx_in.act8): 1 at 4 and 8 bits
                          * (VLLMC_CUDA_QGEMV=q8), 2 at 4 bits (the bf16 mode's default), 0 never */
    int qbulk_kb;        /* VLLMC_CUDA_QBULK: ck_qx_in.bulk_kb (0: off) */
    int qbulk_pad;       /* VLLMC_CUDA_QBULK_SM: ck_qx_in.bulk_pad */
    int qchunk_max;      /* affine 4/8-bit matmuls of up to this many tokens run the GEMV 8 tokens at a time */
    size_t qtile_bytes;  /* affine matmuls beyond: dequantized rows per tile (hi + lo), VLLMC_CUDA_QTILE_MB */
    struct mm_plan plans[N_PLANS];
    int next_plan;
    void *samp, *samp_host; /* sample_rows: requests, results, candidates (device, pinned copy) */
    size_t samp_len;
    bool graphs;         /* graph_* ops on (VLLMC_CUDA_GRAPHS != 0) */
    /* the order affine weights are used in, learned as calls come (group
     * leaders: the first weight of a fused call), so that a decode GEMV moves
     * the next one's first qpf_max bytes into L2 as its blocks finish
     * (VLLMC_CUDA_QPF_MB, default 4; 0 off) */
    size_t qpf_max;
    int qpf_n, qpf_nest;
    const void *qpf_last;
    struct { const void *key, *next; size_t bytes; } qpf[2048];
    /* the decode chain (chain.cu): one-token quantized matmul ops queued here
     * and launched together as one kernel when any other op comes (or the
     * queue is full); VLLMC_CUDA_CHAIN=1 on */
    bool chain_on;
    int n_chain, chain_max; /* ops queued; ops per chain at most (VLLMC_CUDA_CHAIN_MAX, sweeps) */
    struct ck_chain_op chain[CK_CHAIN_MAX];
    unsigned *chain_sync;
    long n_chain_ops;    /* ops that ran in a chain (backend_cuda_chain_ops) */
    struct backend_cuda_counts counts; /* backend_cuda_counts */
    unsigned gen;        /* bumped when xb, part, wq or qx move: recorded graphs then point at freed memory */
    bool failed;
    char err[256];
};

static struct cuda_backend *cb(struct backend *bk) { return (struct cuda_backend *)bk; }

static void fail(struct cuda_backend *c, const char *what, const char *why) {
    if (c->failed) return;
    c->failed = true;
    snprintf(c->err, sizeof c->err, "cuda backend: %s: %s", what, why);
}

/* rc: a cudaError_t (0 = success) */
static bool ok(struct cuda_backend *c, int rc, const char *what) {
    if (rc == 0) return true;
    fail(c, what, cudaGetErrorString((cudaError_t)rc));
    return false;
}

static bool lt_ok(struct cuda_backend *c, cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    fail(c, what, cublasLtGetStatusString(s));
    return false;
}

/* The calling thread's current device is per thread: the engine's thread
 * is not the one that created the backend. */
static void enter_dev(struct cuda_backend *c) {
    if (c->device != 0) cudaSetDevice(c->device);
}

/* launch the queued chain ops (they run before anything queued after) */
static void chain_flush(struct cuda_backend *c) {
    const int n = c->n_chain;
    if (!n) return;
    c->n_chain = 0;
    if (c->failed) return;
    if (ok(c, ck_chain(c->st, c->chain, n, c->chain_sync), "decode chain")) c->n_chain_ops += n;
}

/* every op but the chain's own starts here: the chain queued so far runs first */
static void enter(struct cuda_backend *c) {
    enter_dev(c);
    if (c->n_chain) chain_flush(c);
}

/* queue op o (T = 1; its weights as ck_qgemv_many takes them) if it can run
 * in the chain; else run what is queued and return false */
static bool chain_push(struct cuda_backend *c, struct ck_chain_op *o, int n, const struct ck_qweight *q,
                       float *const *y, const int *N) {
    enter_dev(c);
    if (!c->chain_on || c->failed) {
        chain_flush(c);
        return false;
    }
    o->nw = n, o->bits = q[0].bits, o->gs = q[0].group_size, o->sdt = (int)q[0].sdt;
    for (int i = 0; i < n; i++) o->wt[i] = q[i], o->y[i] = y[i], o->N[i] = N[i];
    if (!ck_chain_fits(o)) {
        chain_flush(c);
        return false;
    }
    if (c->n_chain >= c->chain_max) chain_flush(c);
    c->chain[c->n_chain++] = *o;
    return true;
}

static int type_of(enum dtype dt, enum ck_type *out) {
    switch (dt) {
    case DT_F32: *out = CK_F32; return 0;
    case DT_BF16: *out = CK_BF16; return 0;
    case DT_F16: *out = CK_F16; return 0;
    default: return -1;
    }
}

/* Device scratch of at least bytes (grown by half again; the old contents
 * are dropped). cudaFree waits for work still using the old buffer. */
static void *grow(struct cuda_backend *c, void **buf, size_t *len, size_t bytes) {
    if (bytes <= *len) return *buf;
    size_t n = bytes + bytes / 2;
    c->gen++;
    cudaFree(*buf);
    *buf = NULL;
    *len = 0;
    if (!ok(c, cudaMalloc(buf, n), "scratch")) {
        *buf = NULL;
        return NULL;
    }
    *len = n;
    return *buf;
}

/* ---- cuBLASLt ----------------------------------------------------------------- */

static uint32_t align_of(const void *p) {
    uint32_t a = 256;
    while (a > 1 && (uintptr_t)p % a) a >>= 1;
    return a;
}

static void plan_drop(struct mm_plan *p) {
    if (!p->used) return;
    cublasLtMatmulDescDestroy(p->op);
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->c);
    p->used = false;
}

/* y[T][N] = x[T][K] · W^T in column-major terms: Y (N x T) = op_T(W: K x N) · X (K x T).
 * ldc: Y's column stride (N, or the full width when N rows are a tile of a wider Y). */
static struct mm_plan *plan_get(struct cuda_backend *c, cudaDataType_t type, int N, int K, int T, int ldc,
                                const uint32_t al[3]) {
    for (int i = 0; i < N_PLANS; i++) {
        struct mm_plan *p = &c->plans[i];
        if (p->used && p->type == type && p->N == N && p->K == K && p->T == T && p->ldc == ldc &&
            p->align[0] == al[0] && p->align[1] == al[1] && p->align[2] == al[2])
            return p;
    }
    struct mm_plan *p = &c->plans[c->next_plan];
    c->next_plan = (c->next_plan + 1) % N_PLANS;
    plan_drop(p);
    *p = (struct mm_plan){ .type = type, .N = N, .K = K, .T = T, .ldc = ldc, .align = { al[0], al[1], al[2] } };
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    if (!lt_ok(c, cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc")) return NULL;
    p->used = true; /* from here plan_drop frees what was made (the layouts may be NULL: destroy accepts it) */
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (!lt_ok(c, cublasLtMatrixLayoutCreate(&p->a, type, (uint64_t)K, (uint64_t)N, K), "layout") ||
        !lt_ok(c, cublasLtMatrixLayoutCreate(&p->b, type, (uint64_t)K, (uint64_t)T, K), "layout") ||
        !lt_ok(c, cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, (uint64_t)N, (uint64_t)T, ldc), "layout")) {
        plan_drop(p);
        return NULL;
    }
    cublasLtMatmulPreference_t pref;
    if (!lt_ok(c, cublasLtMatmulPreferenceCreate(&pref), "preference")) {
        plan_drop(p);
        return NULL;
    }
    uint64_t wsb = LT_WORKSPACE;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], sizeof al[0]);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], sizeof al[1]);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], sizeof al[2]);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2], sizeof al[2]);
    cublasLtMatmulHeuristicResult_t res;
    int n = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &res, &n);
    cublasLtMatmulPreferenceDestroy(pref);
    if (!lt_ok(c, s, "matmul heuristic")) {
        plan_drop(p);
        return NULL;
    }
    if (n < 1) {
        fail(c, "matmul heuristic", "no algorithm for this shape");
        plan_drop(p);
        return NULL;
    }
    p->algo = res.algo;
    return p;
}

static void lt_gemm_ld(struct cuda_backend *c, cudaDataType_t type, const void *w, const void *x, float *y, int N,
                       int K, int T, int ldc, float beta) {
    const uint32_t al[3] = { align_of(w), align_of(x), align_of(y) };
    struct mm_plan *p = plan_get(c, type, N, K, T, ldc, al);
    if (!p) return;
    const float alpha = 1.0f;
    if (lt_ok(c, cublasLtMatmul(c->lt, p->op, &alpha, w, p->a, x, p->b, &beta, y, p->c, y, p->c, &p->algo, c->ws,
                                LT_WORKSPACE, c->st),
              "cublasLtMatmul"))
        c->counts.lt_gemm++;
}

static void lt_gemm(struct cuda_backend *c, cudaDataType_t type, const void *w, const void *x, float *y, int N, int K,
                    int T, float beta) {
    lt_gemm_ld(c, type, w, x, y, N, K, T, N, beta);
}

/* ---- affine-quantized weights ------------------------------------------------------- */

static bool qweight_of(const struct bk_weight *w, struct ck_qweight *q) {
    enum ck_type sdt;
    if (w->fmt != BK_W_AFFINE || type_of(w->dtype, &sdt)) return false;
    *q = (struct ck_qweight){ .codes = w->data, .scales = w->scales, .biases = w->biases, .sdt = sdt,
                              .bits = w->bits, .group_size = w->group_size };
    return true;
}

/* qpf: w is used now (first weight of a call); remember it as the one after
 * the previous call's */
static void qpf_learn(struct cuda_backend *c, const struct bk_weight *w) {
    if (!c->qpf_max || c->qpf_nest || w->fmt != BK_W_AFFINE) return;
    if (c->qpf_last && c->qpf_last != w->data) {
        int i = 0;
        while (i < c->qpf_n && c->qpf[i].key != c->qpf_last) i++;
        if (i < (int)(sizeof c->qpf / sizeof c->qpf[0])) {
            if (i == c->qpf_n) c->qpf_n++;
            c->qpf[i].key = c->qpf_last, c->qpf[i].next = w->data;
            c->qpf[i].bytes = MIN((size_t)w->rows * bk_affine_row_bytes(w), c->qpf_max);
        }
    }
    c->qpf_last = w->data;
}

/* qpf: before a GEMV launch on w, what to prefetch after it */
static void qpf_arm(struct cuda_backend *c, const struct bk_weight *w) {
    for (int i = 0; c->qpf_max && i < c->qpf_n; i++)
        if (c->qpf[i].key == w->data) {
            ck_qgemv_prefetch(c->qpf[i].next, c->qpf[i].bytes);
            c->counts.qgemv_prefetch++;
            return;
        }
    ck_qgemv_prefetch(NULL, 0);
}

/* ck_qgemv_many, counting the launches that took the bulk kernel */
static int qgemv_many(struct cuda_backend *c, int n, float *const *y, const struct ck_qx_in *in,
                      const struct ck_qweight *q, const int *N, int K, int T, void *qx) {
    const long b0 = ck_qgemv_bulk_launches();
    const int rc = ck_qgemv_many(c->st, n, y, in, q, N, K, T, qx);
    c->counts.qgemv_bulk += ck_qgemv_bulk_launches() - b0;
    return rc;
}

/* the int8 GEMV's input settings this backend was created with, for
 * weights of these bits */
static struct ck_qx_in qx_in(const struct cuda_backend *c, int bits) {
    return (struct ck_qx_in){ .act8 = c->qgemv_act8 == 1 || (c->qgemv_act8 == 2 && bits == 4),
                              .bulk_kb = c->qbulk_kb,
                              .bulk_pad = c->qbulk_pad };
}

/* the 16-bit activations of a dense GEMM of n values: hi, and lo in the
 * split mode (else NULL), in c->xb; false if it could not grow */
static bool split_buf(struct cuda_backend *c, size_t n, uint16_t **hi, uint16_t **lo) {
    const size_t n_al = (n + 127) & ~(size_t)127; /* lo on a 256-byte boundary */
    *hi = grow(c, &c->xb, &c->xb_len, (c->split ? 2 : 1) * n_al * sizeof(uint16_t));
    *lo = *hi && c->split ? *hi + n_al : NULL;
    return *hi != NULL;
}

/* y = W · (hi + lo) on cuBLASLt (lo NULL: hi only), w dense of type wt */
static void dense_gemm(struct cuda_backend *c, float *y, const struct bk_weight *w, enum ck_type wt,
                       const uint16_t *hi, const uint16_t *lo, int T) {
    const int N = (int)w->rows, K = (int)w->cols;
    const cudaDataType_t type = wt == CK_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    lt_gemm(c, type, w->data, hi, y, N, K, T, 0.0f);
    if (lo) lt_gemm(c, type, w->data, lo, y, N, K, T, 1.0f);
}

/* y = W · (hi + lo) for an affine weight: tiles of rows (qtile_bytes at
 * most, one scratch buffer) dequantized to bf16 for cuBLASLt; in the split
 * mode the dequantized weight is split too (see matmul_affine) */
static void affine_tiles(struct cuda_backend *c, float *y, const struct ck_qweight *q, int N, int K,
                         const uint16_t *hi, const uint16_t *lo, int T) {
    const size_t parts = lo ? 2 : 1;
    size_t rows = c->qtile_bytes / (parts * (size_t)K * 2) / 64 * 64; /* tiles start on 256-byte boundaries of y */
    rows = MIN(MAX(rows, (size_t)64), (size_t)N);
    uint16_t *wh = grow(c, &c->wq, &c->wq_len, parts * rows * (size_t)K * sizeof(uint16_t));
    if (!wh) return;
    uint16_t *wl = lo ? wh + rows * (size_t)K : NULL;
    for (int n0 = 0; n0 < N; n0 += (int)rows) {
        const int m = MIN((int)rows, N - n0);
        if (!ok(c, ck_qdequant(c->st, wh, wl, q, K, n0, m), "dequantize")) return;
        lt_gemm_ld(c, CUDA_R_16BF, wh, hi, y + n0, m, K, T, N, 0.0f);
        if (lo) {
            lt_gemm_ld(c, CUDA_R_16BF, wh, lo, y + n0, m, K, T, N, 1.0f);
            lt_gemm_ld(c, CUDA_R_16BF, wl, hi, y + n0, m, K, T, N, 1.0f);
        }
    }
}

/* an affine matmul of T tokens over weights of these bits runs ck_qmma (at
 * 4/8 bits 9-16 tokens, 32 with split), else the GEMV (up to CK_GEMV_MAX_T,
 * at 4/8 bits in runs of 8 up to qchunk_max), else dequantized tiles */
static bool affine_qmma(const struct cuda_backend *c, int bits, int T) {
    return (bits == 4 || bits == 8) && T >= c->qmma_min && T <= c->qmma_max && !c->qgemv_variant;
}
static bool affine_gemv(const struct cuda_backend *c, int bits, int T) {
    return T <= CK_GEMV_MAX_T || (T <= c->qchunk_max && (bits == 4 || bits == 8));
}

/* whether a matmul of w over T tokens feeds cuBLASLt 16-bit activations of
 * type *wt (hi, + lo in the split mode): dense 16-bit weights beyond our
 * GEMV, affine weights beyond the GEMV and ck_qmma (dequantized tiles, bf16);
 * the ops that make such an input may then round it straight into those parts */
static bool gemm_path(const struct cuda_backend *c, const struct bk_weight *w, int T, enum ck_type *wt) {
    if (w->fmt == BK_W_DENSE) return !type_of(w->dtype, wt) && *wt != CK_F32 && T > c->gemv_max_t;
    struct ck_qweight q;
    if (w->fmt != BK_W_AFFINE || !qweight_of(w, &q) || affine_qmma(c, w->bits, T) || affine_gemv(c, w->bits, T))
        return false;
    *wt = CK_BF16;
    return true;
}

/* gemm_path for all n weights of a call, of one activation type and K columns */
static bool gemm_path_all(const struct cuda_backend *c, int n, const struct bk_weight *const *w, int K, int T,
                          enum ck_type *wt) {
    enum ck_type t;
    if (n < 1 || T < 1) return false;
    for (int i = 0; i < n; i++) {
        if (!gemm_path(c, w[i], T, &t) || (i && t != *wt) || (int)w[i]->cols != K) return false;
        *wt = t;
    }
    return true;
}

/* y = W · (hi + lo) for a weight on gemm_path */
static void gemm_parts(struct cuda_backend *c, float *y, const struct bk_weight *w, enum ck_type wt,
                       const uint16_t *hi, const uint16_t *lo, int T) {
    struct ck_qweight q;
    if (w->fmt == BK_W_DENSE) dense_gemm(c, y, w, wt, hi, lo, T);
    else if (qweight_of(w, &q)) affine_tiles(c, y, &q, (int)w->rows, (int)w->cols, hi, lo, T);
    else fail(c, "matmul", "unsupported scale dtype of an affine weight");
}

/* Up to CK_GEMV_MAX_T tokens the quantized GEMV (quant.cu), then at 4/8 bits
 * ck_qmma up to qmma_max (tensor cores, the same int8 parts). Beyond, tiles
 * of rows (QTILE_BYTES at most, one scratch buffer) are dequantized to bf16
 * and go through cuBLASLt: W_hi·x_hi (bf16 weight and activations, the
 * default). The dequantized weight is exact in f32, so with the split mode's
 * hi + lo activations it is split the same way (w = w_hi + w_lo) and y =
 * W_hi·x_hi + W_hi·x_lo + W_lo·x_hi: both sides keep ~16 bits, as in the
 * dense split (W_lo·x_lo, ~2^-18 of the sum, is left out). */
static void matmul_affine(struct cuda_backend *c, float *y, const float *x, const struct bk_weight *w, int T) {
    struct ck_qweight q;
    if (!qweight_of(w, &q)) {
        fail(c, "matmul", "unsupported scale dtype of an affine weight");
        return;
    }
    const int N = (int)w->rows, K = (int)w->cols;
    if (affine_qmma(c, w->bits, T)) {
        void *qx = grow(c, &c->qx, &c->qx_len, ck_qgemv_scratch(K, T));
        if (qx) ok(c, ck_qmma(c->st, y, x, &q, N, K, T, qx), "quantized mma");
        return;
    }
    /* the GEMV in runs of up to 8 tokens while that reads fewer bytes than
     * dequantizing (c->qchunk_max; BENCHMARKS.md) */
    if (affine_gemv(c, w->bits, T)) {
        void *qx = grow(c, &c->qx, &c->qx_len, ck_qgemv_scratch(K, MIN(T, CK_GEMV_MAX_T)));
        for (int t0 = 0; qx && t0 < T; t0 += CK_GEMV_MAX_T) {
            const int n = MIN(CK_GEMV_MAX_T, T - t0);
            if (t0 + n >= T) qpf_arm(c, w);
            struct ck_qx_in in = qx_in(c, w->bits);
            in.x = x + (size_t)t0 * K;
            float *yt = y + (size_t)t0 * N;
            const int rc = (w->bits == 4 || w->bits == 8) && !c->qgemv_variant
                               ? qgemv_many(c, 1, &yt, &in, &q, &N, K, n, qx)
                               : ck_qgemv(c->st, yt, in.x, &q, N, K, n, qx, c->qgemv_variant);
            if (!ok(c, rc, "quantized gemv")) return;
        }
        return;
    }
    const size_t len = (size_t)T * (size_t)K;
    uint16_t *hi, *lo;
    if (split_buf(c, len, &hi, &lo) && ok(c, ck_split(c->st, hi, lo, x, CK_BF16, len), "split"))
        affine_tiles(c, y, &q, N, K, hi, lo, T);
}

/* The weights of a matmul_many / glu_matmul call as the one-launch
 * quantized GEMV takes them: all affine 4- or 8-bit of one group size and
 * scale dtype, K columns, n <= CK_QGEMV_MAX_W, T tokens of decode; false:
 * run the plain ops. */
static bool qgemv_group(const struct cuda_backend *c, int n, const struct bk_weight *const *w, int K, int T,
                        struct ck_qweight *q, int *N) {
    if (T > CK_GEMV_MAX_T || n > CK_QGEMV_MAX_W || c->qgemv_variant) return false;
    for (int i = 0; i < n; i++) {
        if (!qweight_of(w[i], &q[i]) || (q[i].bits != 4 && q[i].bits != 8) || (int)w[i]->cols != K ||
            q[i].bits != q[0].bits || q[i].group_size != q[0].group_size || q[i].sdt != q[0].sdt)
            return false;
        N[i] = (int)w[i]->rows;
    }
    return true;
}

/* The weights of a matmul_many call as ck_gemv_many takes them: dense, one
 * type, K columns, n <= CK_GEMV_MAX_W, T tokens within cu_matmul's GEMV
 * range, the default GEMV, 16-byte aligned (as ck_gemv's split kernel
 * needs); false: one cu_matmul per weight. */
static bool dense_group(const struct cuda_backend *c, int n, const struct bk_weight *const *w, const float *x, int T) {
    enum ck_type wt;
    if (n < 2 || n > CK_GEMV_MAX_W || T < 1 || c->gemv_variant || w[0]->fmt != BK_W_DENSE ||
        type_of(w[0]->dtype, &wt) || T > (wt == CK_F32 ? CK_GEMV_MAX_T : c->gemv_max_t) || ((uintptr_t)x & 15))
        return false;
    const int64_t K = w[0]->cols, per16 = wt == CK_F32 ? 4 : 8;
    for (int i = 0; i < n; i++)
        if (w[i]->fmt != BK_W_DENSE || w[i]->dtype != w[0]->dtype || w[i]->cols != K || K % per16 ||
            ((uintptr_t)w[i]->data & 15))
            return false;
    return true;
}

/* ---- ops -------------------------------------------------------------------------- */

static void cu_matmul(struct backend *bk, float *y, const float *x, const struct bk_weight *w, int T) {
    struct cuda_backend *c = cb(bk);
    enter_dev(c);
    enum ck_type wt;
    if (T <= 0) return;
    if (w->fmt == BK_W_AFFINE) {
        struct ck_qweight q;
        int N = (int)w->rows;
        if (T == 1 && qgemv_group(c, 1, &w, (int)w->cols, 1, &q, &N)) {
            struct ck_chain_op o = { .kind = CK_CHAIN_X, .K = (int)w->cols, .x = (float *)x };
            if (chain_push(c, &o, 1, &q, &y, &N)) return;
        }
        chain_flush(c);
        qpf_learn(c, w);
        matmul_affine(c, y, x, w, T);
        return;
    }
    chain_flush(c);
    if (w->fmt != BK_W_DENSE || type_of(w->dtype, &wt)) {
        fail(c, "matmul", "unsupported weight format");
        return;
    }
    const int N = (int)w->rows, K = (int)w->cols;
    if (T <= (wt == CK_F32 ? CK_GEMV_MAX_T : c->gemv_max_t)) {
        if (ok(c, ck_gemv(c->st, y, x, w->data, wt, N, K, T, c->gemv_variant), "gemv")) c->counts.dense_gemv++;
        return;
    }
    if (wt == CK_F32) {
        lt_gemm(c, CUDA_R_32F, w->data, x, y, N, K, T, 0.0f);
        return;
    }
    const size_t len = (size_t)T * (size_t)K;
    uint16_t *hi, *lo;
    if (split_buf(c, len, &hi, &lo) && ok(c, ck_split(c->st, hi, lo, x, wt, len), "split"))
        dense_gemm(c, y, w, wt, hi, lo, T);
}

static void cu_matmul_many(struct backend *bk, int n, float *const *y, const float *x,
                           const struct bk_weight *const *w, int T) {
    struct cuda_backend *c = cb(bk);
    enter_dev(c);
    struct ck_qweight q[CK_QGEMV_MAX_W];
    int N[CK_QGEMV_MAX_W];
    const bool grouped = T > 0 && n > 0 && qgemv_group(c, n, w, (int)w[0]->cols, T, q, N);
    if (grouped && T == 1) {
        struct ck_chain_op o = { .kind = CK_CHAIN_X, .K = (int)w[0]->cols, .x = (float *)x };
        if (chain_push(c, &o, n, q, y, N)) return;
    }
    chain_flush(c);
    if (grouped) {
        const int K = (int)w[0]->cols;
        void *qx = grow(c, &c->qx, &c->qx_len, ck_qgemv_scratch(K, T));
        struct ck_qx_in in = qx_in(c, q[0].bits);
        in.x = x;
        qpf_learn(c, w[0]);
        qpf_arm(c, w[0]);
        if (qx) ok(c, qgemv_many(c, n, y, &in, q, N, K, T, qx), "quantized gemv");
        return;
    }
    _Static_assert(CK_GEMV_MAX_W <= CK_QGEMV_MAX_W, "N[] holds either kind");
    if (dense_group(c, n, w, x, T)) { /* one GEMV launch over the n weights */
        const void *wd[CK_GEMV_MAX_W];
        enum ck_type wt;
        type_of(w[0]->dtype, &wt);
        for (int i = 0; i < n; i++) wd[i] = w[i]->data, N[i] = (int)w[i]->rows;
        if (ok(c, ck_gemv_many(c->st, n, y, x, wd, N, wt, (int)w[0]->cols, T), "gemv"))
            c->counts.dense_gemv++, c->counts.dense_gemv_many++;
        return;
    }
    /* weights on cuBLASLt (prefill's q/k/v, gate and up): the input split
     * once for all of their GEMMs */
    enum ck_type wt;
    if (n > 1 && gemm_path_all(c, n, w, (int)w[0]->cols, T, &wt)) {
        const size_t len = (size_t)T * (size_t)w[0]->cols;
        uint16_t *hi, *lo;
        if (split_buf(c, len, &hi, &lo) && ok(c, ck_split(c->st, hi, lo, x, wt, len), "split"))
            for (int i = 0; i < n; i++) gemm_parts(c, y[i], w[i], wt, hi, lo, T);
        return;
    }
    if (n > 0) qpf_learn(c, w[0]);
    c->qpf_nest++;
    for (int i = 0; i < n; i++) cu_matmul(bk, y[i], x, w[i], T);
    c->qpf_nest--;
}

static void cu_add_rmsnorm(struct backend *bk, float *x, const float *o, float s, float *h, const float *w, int R,
                           int n, float eps);

static void cu_add_rmsnorm_matmul(struct backend *bk, float *x, const float *o, float s, float *h, const float *w,
                                  int R, int n, float eps, int nw, float *const *y, const struct bk_weight *const *W) {
    struct cuda_backend *c = cb(bk);
    enter_dev(c);
    struct ck_qweight q[CK_QGEMV_MAX_W];
    int N[CK_QGEMV_MAX_W];
    const bool grouped = R > 0 && nw > 0 && n <= 32768 && qgemv_group(c, nw, W, n, R, q, N);
    if (grouped && R == 1) {
        struct ck_chain_op op = { .kind = CK_CHAIN_NORM, .K = n, .x = x, .o = o, .w = w, .s = s, .eps = eps };
        if (chain_push(c, &op, nw, q, y, N)) return;
    }
    chain_flush(c);
    if (grouped) { /* h rounded by the norm kernel */
        void *qx = grow(c, &c->qx, &c->qx_len, ck_qgemv_scratch(n, R));
        struct ck_qx_in in = qx_in(c, q[0].bits);
        in.ready = 1;
        qpf_learn(c, W[0]);
        qpf_arm(c, W[0]);
        if (qx && ok(c, ck_add_rmsnorm_qx(c->st, x, o, s, h, w, R, n, eps, q[0].bits, q[0].group_size, qx),
                     "add_rmsnorm"))
            ok(c, qgemv_many(c, nw, y, &in, q, N, n, R, qx), "quantized gemv");
        return;
    }
    /* weights on cuBLASLt (prefill; gemm_path): h rounded straight into
     * their GEMMs' activations, not written (backend.h: h is scratch) */
    enum ck_type wt;
    if (n % 8 == 0 && n <= CK_NORM_ROW_MAX && gemm_path_all(c, nw, W, n, R, &wt)) {
        uint16_t *hi, *lo;
        if (split_buf(c, (size_t)R * (size_t)n, &hi, &lo) &&
            ok(c, ck_add_rmsnorm_split(c->st, x, o, s, hi, lo, w, R, n, eps, wt), "add_rmsnorm"))
            for (int i = 0; i < nw; i++) gemm_parts(c, y[i], W[i], wt, hi, lo, R);
        return;
    }
    cu_add_rmsnorm(bk, x, o, s, h, w, R, n, eps);
    cu_matmul_many(bk, nw, y, h, W, R);
}

static void cu_glu_matmul(struct backend *bk, float *y, float *a, const float *g, const float *u, int T, int F, int ld,
                          enum bk_act act, const struct bk_weight *w) {
    struct cuda_backend *c = cb(bk);
    enter_dev(c);
    struct ck_qweight q;
    int N;
    const bool grouped = T > 0 && qgemv_group(c, 1, &w, F, T, &q, &N);
    if (grouped && T == 1) {
        struct ck_chain_op o = { .kind = CK_CHAIN_GLU, .K = F, .gate = g, .up = u, .act = (int)act };
        if (chain_push(c, &o, 1, &q, &y, &N)) return;
    }
    chain_flush(c);
    if (grouped) {
        void *qx = grow(c, &c->qx, &c->qx_len, ck_qgemv_scratch(F, T));
        struct ck_qx_in in = qx_in(c, q.bits);
        in.gate = g, in.up = u, in.ld = ld, in.act = (int)act;
        qpf_learn(c, w);
        qpf_arm(c, w);
        if (qx) ok(c, qgemv_many(c, 1, &y, &in, &q, &N, F, T, qx), "quantized gemv");
        return;
    }
    /* a weight on cuBLASLt (gemm_path: dense 16-bit or dequantized tiles):
     * the GLU rounded straight into its activations (a is not written); with
     * the same for the norm (cu_add_rmsnorm_matmul) and one split per
     * matmul_many, bf16 8B prefill of 4096 tokens 134.6-135.6 -> 112.7-115.9
     * ms (H100), MLX 4-bit 140.2-140.5 -> 121.4-121.9 (H200; BENCHMARKS.md) */
    enum ck_type wt;
    if (gemm_path_all(c, 1, &w, F, T, &wt)) {
        uint16_t *hi, *lo;
        if (split_buf(c, (size_t)T * (size_t)F, &hi, &lo) &&
            ok(c, ck_glu_split(c->st, hi, lo, g, u, T, F, ld, (int)act, wt), "glu"))
            gemm_parts(c, y, w, wt, hi, lo, T);
        return;
    }
    ok(c, ck_glu(c->st, a, g, u, T, F, ld, (int)act), "glu");
    cu_matmul(bk, y, a, w, T);
}

static void cu_embed(struct backend *bk, float *out, const struct bk_weight *t, const int32_t *ids, int T, float scale) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    enum ck_type tt;
    struct ck_qweight q;
    if (t->fmt == BK_W_AFFINE && qweight_of(t, &q)) { /* only the looked-up rows are dequantized */
        ok(c, ck_qembed(c->st, out, &q, ids, T, (int)t->cols, scale), "quantized embed");
        return;
    }
    if (t->fmt != BK_W_DENSE || type_of(t->dtype, &tt)) {
        fail(c, "embed", "unsupported table format");
        return;
    }
    ok(c, ck_embed(c->st, out, t->data, tt, ids, T, (int)t->cols, scale), "embed");
}

static void cu_rmsnorm(struct backend *bk, float *y, const float *x, const float *w, int R, int n, float eps) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    ok(c, ck_rmsnorm(c->st, y, x, w, R, n, eps), "rmsnorm");
}

static void cu_rope(struct backend *bk, float *x, const int32_t *pos, int T, int H, int D, const struct bk_rope *r) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    if (r->rot_dim / 2 > CK_ROPE_MAX_HALF) {
        fail(c, "rope", "rotary dims beyond 512");
        return;
    }
    struct ck_rope kr = { .rot_dim = r->rot_dim, .attn_factor = r->attn_factor, .neox = r->neox };
    memcpy(kr.inv_freq, r->inv_freq, (size_t)(r->rot_dim / 2) * sizeof(float));
    ok(c, ck_rope(c->st, x, pos, T, H, D, &kr), "rope");
}

static void cu_glu(struct backend *bk, float *out, const float *g, const float *u, int T, int F, int ld,
                   enum bk_act act) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    ok(c, ck_glu(c->st, out, g, u, T, F, ld, (int)act), "glu");
}

static void cu_add_scaled(struct backend *bk, float *y, const float *x, float s, size_t n) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    ok(c, ck_add_scaled(c->st, y, x, s, n), "add_scaled");
}

static void cu_add_bias(struct backend *bk, float *y, const float *b, int T, int N) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    ok(c, ck_add_bias(c->st, y, b, T, N), "add_bias");
}

static void cu_kv_store(struct backend *bk, const struct bk_kv *kv, const float *k, const float *v,
                        const int32_t *slots, int T) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    enum ck_type kt;
    if (type_of(kv->dtype, &kt)) {
        fail(c, "kv_store", "unsupported KV dtype");
        return;
    }
    ok(c, ck_kv_store(c->st, kv->k, kv->v, kt, k, v, slots, T, kv->n_kv_heads * kv->head_dim), "kv_store");
}

/* What cu_attention runs for a call: the tensor-core prefill kernel (FA),
 * the decode kernels (DEC, with their split and partials buffer) or the
 * warp-per-row kernel (WARP, with its split); FAIL: reported. */
enum attn_path { ATTN_FAIL, ATTN_FA, ATTN_DEC, ATTN_WARP };
struct attn_plan {
    struct ck_attn a;
    enum ck_type kt;
    int max_q, T_bound, n_split;
    float *part;
};

static enum attn_path attn_plan(struct cuda_backend *c, const float *q, const float *out, const struct bk_kv *kv,
                                const struct bk_attn_batch *b, const struct bk_attn_params *p, struct attn_plan *pl) {
    if (type_of(kv->dtype, &pl->kt) || p->head_dim > CK_ATTN_MAX_D) {
        fail(c, "attention", "unsupported KV dtype or head dim");
        return ATTN_FAIL;
    }
    const enum ck_type kt = pl->kt;
    const int cap = b->max_blocks * kv->block_size;
    const int max_q = pl->max_q = b->max_query_len > 0 ? b->max_query_len : cap;
    int keys = b->max_seq_len > 0 ? b->max_seq_len : cap;
    if (p->sliding_window > 0) keys = MIN(keys, p->sliding_window);
    pl->a = (struct ck_attn){
        .query_start = b->query_start, .seq_len = b->seq_len, .block_table = b->block_table, .n_seqs = b->n_seqs,
        .max_blocks = b->max_blocks, .block_size = kv->block_size, .H = p->n_heads, .Hkv = p->n_kv_heads,
        .D = p->head_dim, .scale = p->scale, .softcap = p->softcap, .window = p->sliding_window,
    };
    const struct ck_attn *a = &pl->a;
    pl->part = NULL, pl->n_split = 1;
    if (!c->attn_warp && max_q >= CUDA_FA_MIN_Q && ck_attention_fa_runs(kt, a, q, out, kv->k, kv->v)) return ATTN_FA;
    const int T_bound = pl->T_bound = b->n_seqs * max_q;
    const bool dec = !c->attn_warp && c->dec && max_q < CUDA_FA_MIN_Q && ck_attention_dec_runs(kt, a, kv->k, kv->v);
    if (dec) {
        /* as many key ranges as bring the CTAs to dec_ctas per multiprocessor,
         * each at least a tile (32 keys; 64 for the tensor-core variants) */
        const size_t ctas = (size_t)ck_attention_dec_ctas(a, max_q, c->dec), target = (size_t)c->n_sm * c->dec_ctas;
        const int tile = c->dec >= 3 ? 64 : 32;
        if (ctas < target && keys > tile)
            pl->n_split = (int)MAX(1, MIN(MIN((size_t)(keys + tile - 1) / tile, (target + ctas - 1) / ctas), 128));
    } else {
        /* split the keys when the rows alone leave the GPU idle (decode): each
         * range at least 64 keys, about 32 warps per multiprocessor in all */
        const size_t items = (size_t)T_bound * (size_t)p->n_heads, target = (size_t)c->n_sm * 32;
        if (items < target && keys > 64)
            pl->n_split = (int)MAX(1, MIN(MIN((size_t)(keys + 63) / 64, (target + items - 1) / items), 128));
    }
    if (pl->n_split > 1) {
        const size_t need =
            (size_t)pl->n_split * T_bound * (size_t)p->n_heads * (size_t)(p->head_dim + 2) * sizeof(float);
        if (!(pl->part = grow(c, (void **)&c->part, &c->part_len, need))) return ATTN_FAIL;
    }
    return dec ? ATTN_DEC : ATTN_WARP;
}

/* the kernels of a planned call */
static void run_attention(struct cuda_backend *c, enum attn_path path, const struct attn_plan *pl, float *out,
                          const float *q, const struct bk_kv *kv) {
    const struct ck_attn *a = &pl->a;
    switch (path) {
    case ATTN_FAIL: return;
    case ATTN_FA:
        ok(c, ck_attention_fa(c->st, out, q, kv->k, kv->v, pl->kt, a, pl->max_q, c->fa_variant, c->n_sm),
           "attention (fa)");
        return;
    case ATTN_DEC:
        ok(c, ck_attention_dec(c->st, out, q, kv->k, kv->v, pl->kt, a, pl->T_bound, pl->max_q, pl->n_split, pl->part,
                               c->dec),
           "attention (dec)");
        return;
    case ATTN_WARP:
        ok(c, ck_attention(c->st, out, q, kv->k, kv->v, pl->kt, a, pl->T_bound, pl->n_split, pl->part), "attention");
        return;
    }
}

static void cu_attention(struct backend *bk, float *out, const float *q, const struct bk_kv *kv,
                         const struct bk_attn_batch *b, const struct bk_attn_params *p) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    if (b->n_seqs <= 0) return;
    struct attn_plan pl;
    run_attention(c, attn_plan(c, q, out, kv, b, p, &pl), &pl, out, q, kv);
}

static void cu_add_rmsnorm(struct backend *bk, float *x, const float *o, float s, float *h, const float *w, int R,
                           int n, float eps) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    ok(c, ck_add_rmsnorm(c->st, x, o, s, h, w, R, n, eps), "add_rmsnorm");
}

/* backend.h's qkv_prep arguments as the kernels take them; false: reported */
static bool prep_args(struct cuda_backend *c, const struct bk_kv *kv, const struct bk_qkv *a, enum ck_type *kt,
                      struct ck_qkv *k, struct ck_rope *kr) {
    if (type_of(kv->dtype, kt) || (a->rope && a->rope->rot_dim / 2 > CK_ROPE_MAX_HALF)) {
        fail(c, "qkv_prep", "unsupported KV dtype or rotary dims");
        return false;
    }
    kr->rot_dim = 0;
    if (a->rope) {
        kr->rot_dim = a->rope->rot_dim, kr->attn_factor = a->rope->attn_factor, kr->neox = a->rope->neox;
        memcpy(kr->inv_freq, a->rope->inv_freq, (size_t)(a->rope->rot_dim / 2) * sizeof(float));
    }
    *k = (struct ck_qkv){ .q = a->q, .k = a->k, .v = a->v, .bq = a->b_q, .bk = a->b_k, .bv = a->b_v,
                          .qn = a->q_norm, .kn = a->k_norm, .pos = a->pos, .slots = a->slots, .T = a->T,
                          .H = a->H, .Hkv = a->Hkv, .D = a->D, .eps = a->eps, .rope = a->rope != NULL };
    return true;
}

static void cu_qkv_prep(struct backend *bk, const struct bk_kv *kv, const struct bk_qkv *a) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    enum ck_type kt;
    struct ck_qkv k;
    struct ck_rope kr;
    if (prep_args(c, kv, a, &kt, &k, &kr)) ok(c, ck_qkv_prep(c->st, &k, &kr, kv->k, kv->v, kt), "qkv_prep");
}

/* qkv_prep + attention: one kernel where the decode attention's variant 3
 * runs the call with its keys split (its grid sized to the split target) or
 * in no more CTAs than that target (the merge of its splits after), else
 * the two ops. The prep inside adds latency to every CTA (its q rows after
 * the wait, the step's key in its last tile), which costs more than the
 * separate kernel once the CTAs run in several waves (8B, 256 sequences:
 * 6,774-6,867 vs 6,988-7,079 output tok/s on an H100).
 * VLLMC_CUDA_QKV_ATTN=always fuses wherever variant 3 runs (tests). */
static void cu_qkv_attention(struct backend *bk, float *out, const struct bk_kv *kv, const struct bk_qkv *qa,
                             const struct bk_attn_batch *b, const struct bk_attn_params *p) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    if (b->n_seqs <= 0 || qa->T <= 0) { /* nothing to attend: the prep alone (it may still store keys) */
        cu_qkv_prep(bk, kv, qa);
        return;
    }
    struct attn_plan pl;
    enum ck_type kt;
    struct ck_qkv k;
    struct ck_rope kr;
    const enum attn_path path = attn_plan(c, qa->q, out, kv, b, p, &pl);
    if (path == ATTN_FAIL || !prep_args(c, kv, qa, &kt, &k, &kr)) return;
    const bool one_wave = c->dec == 3 && path == ATTN_DEC &&
                          (c->qa_always || pl.n_split > 1 ||
                           (size_t)ck_attention_dec_ctas(&pl.a, pl.max_q, 3) <= (size_t)c->n_sm * (size_t)MAX(c->dec_ctas, 2));
    if (one_wave) {
        const int rc = ck_attention_dec_prep(c->st, out, &k, &kr, kv->k, kv->v, kt, &pl.a, pl.T_bound, pl.max_q,
                                             pl.n_split, pl.part);
        if (rc != (int)cudaErrorInvalidValue) {
            if (ok(c, rc, "attention (dec, with qkv_prep)")) c->n_fused_attn++;
            return;
        }
    }
    ok(c, ck_qkv_prep(c->st, &k, &kr, kv->k, kv->v, kt), "qkv_prep"); /* the two ops, on the plan made above */
    run_attention(c, path, &pl, out, qa->q, kv);
}

static void cu_softcap(struct backend *bk, float *x, size_t n, float cap) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    ok(c, ck_softcap(c->st, x, n, cap), "softcap");
}

static void cu_scale(struct backend *bk, float *x, size_t n, float s) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    ok(c, ck_scale(c->st, x, n, s), "scale");
}

static void cu_host_parallel(struct backend *bk, void (*fn)(void *, int, int), void *ctx) {
    threadpool_run(cb(bk)->pool, fn, ctx);
}
static int cu_host_threads(const struct backend *bk) { return threadpool_size(((const struct cuda_backend *)bk)->pool); }

/* ---- memory ------------------------------------------------------------------------------ */

static void *cu_alloc(struct backend *bk, size_t bytes) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* out of memory is an answer here, not a sticky failure */
        return NULL;
    }
    if (!ok(c, cudaMemsetAsync(p, 0, bytes, c->st), "memset")) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cu_free(struct backend *bk, void *p) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    for (int i = 0; i < c->qpf_n; i++) /* a freed weight: forget the learned order */
        if (c->qpf[i].key == p || c->qpf[i].next == p) c->qpf_n = 0, c->qpf_last = NULL;
    if (c->qpf_last == p) c->qpf_last = NULL;
    cudaFree(p);
}

static int copy(struct cuda_backend *c, void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                const char *what, char *err, size_t errlen) {
    enter(c);
    if (!c->failed && bytes) ok(c, cudaMemcpyAsync(dst, src, bytes, kind, c->st), what);
    if (!c->failed) ok(c, cudaStreamSynchronize(c->st), what);
    return c->failed ? errf(err, errlen, "%s", c->err) : 0;
}

static int cu_upload(struct backend *bk, void *dst, const void *src, size_t bytes, char *err, size_t errlen) {
    return copy(cb(bk), dst, src, bytes, cudaMemcpyHostToDevice, "upload", err, errlen);
}

static int cu_download(struct backend *bk, void *dst, const void *src, size_t bytes, char *err, size_t errlen) {
    return copy(cb(bk), dst, src, bytes, cudaMemcpyDeviceToHost, "download", err, errlen);
}

static int cu_mem_info(struct backend *bk, size_t *free_bytes, size_t *total_bytes) {
    enter(cb(bk));
    return cudaMemGetInfo(free_bytes, total_bytes) == cudaSuccess ? 0 : -1;
}

static int cu_weight_check(struct backend *bk, const struct bk_weight *w, char *err, size_t errlen) {
    enum ck_type t;
    if (w->fmt == BK_W_AFFINE) {
        if (w->bits < 2 || w->bits > 8 || w->bits == 7)
            return errf(err, errlen, "the cuda backend runs affine weights of 2, 3, 4, 5, 6 or 8 bits, not %d",
                        w->bits);
        if (w->group_size != 32 && w->group_size != 64 && w->group_size != 128)
            return errf(err, errlen, "the cuda backend runs affine weights in groups of 32, 64 or 128, not %d",
                        w->group_size);
        if (type_of(w->dtype, &t))
            return errf(err, errlen, "the cuda backend runs affine weights with F32, BF16 or F16 scales, not %s",
                        dtype_name(w->dtype));
        if (w->cols % w->group_size)
            return errf(err, errlen, "affine weight of %lld columns: not a multiple of the group size %d",
                        (long long)w->cols, w->group_size);
        return 0;
    }
    if (w->fmt != BK_W_DENSE) return errf(err, errlen, "the cuda backend does not know weight format %d", (int)w->fmt);
    if (type_of(w->dtype, &t)) return errf(err, errlen, "the cuda backend runs F32, BF16 and F16 weights only");
    return 0;
}

/* ---- sampling passes (sample.cu) --------------------------------------------------------- */

_Static_assert(sizeof(struct ck_sample_req) == sizeof(struct bk_sample_req) &&
                   offsetof(struct ck_sample_req, u) == offsetof(struct bk_sample_req, u) &&
                   offsetof(struct ck_sample_req, cand_cap) == offsetof(struct bk_sample_req, cand_cap) &&
                   sizeof(struct ck_sample_res) == sizeof(struct bk_sample_res) &&
                   offsetof(struct ck_sample_res, n_cand) == offsetof(struct bk_sample_res, n_cand) &&
                   offsetof(struct ck_sample_req, wsum) == offsetof(struct bk_sample_req, wsum) &&
                   offsetof(struct ck_sample_res, z) == offsetof(struct bk_sample_res, z),
               "sample_rows layouts");

/* One upload of the requests, the kernel, one download of results and candidates. */
static int cu_sample_rows(struct backend *bk, const float *logits, int V, const struct bk_sample_req *req, int n,
                          struct bk_sample_res *res, int32_t *cand_id, float *cand_val, int n_slots, char *err,
                          size_t errlen) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    if (n <= 0 || c->failed) return c->failed ? errf(err, errlen, "%s", c->err) : 0;
    const size_t rq = (size_t)n * sizeof *req, rs = (size_t)n * sizeof *res, cs = (size_t)n_slots * sizeof(float);
    const size_t o_res = (rq + 255) & ~(size_t)255, o_id = o_res + ((rs + 255) & ~(size_t)255);
    const size_t o_val = o_id + ((cs + 255) & ~(size_t)255), need = o_val + cs;
    if (need > c->samp_len) { /* grown by half again; nothing recorded uses it */
        cudaFree(c->samp);
        cudaFreeHost(c->samp_host);
        c->samp = c->samp_host = NULL;
        c->samp_len = 0;
        if (!ok(c, cudaMalloc(&c->samp, need + need / 2), "sample_rows") ||
            !ok(c, cudaMallocHost(&c->samp_host, need + need / 2), "sample_rows"))
            return errf(err, errlen, "%s", c->err);
        c->samp_len = need + need / 2;
    }
    char *d = c->samp, *h = c->samp_host;
    memcpy(h, req, rq);
    if (ok(c, cudaMemcpyAsync(d, h, rq, cudaMemcpyHostToDevice, c->st), "sample_rows upload") &&
        ok(c, ck_sample_rows(c->st, logits, V, (const struct ck_sample_req *)d, n, (struct ck_sample_res *)(d + o_res),
                             (int32_t *)(d + o_id), (float *)(d + o_val)),
           "sample_rows") &&
        ok(c, cudaMemcpyAsync(h + o_res, d + o_res, need - o_res, cudaMemcpyDeviceToHost, c->st), "sample_rows download"))
        ok(c, cudaStreamSynchronize(c->st), "sample_rows");
    if (c->failed) return errf(err, errlen, "%s", c->err);
    memcpy(res, h + o_res, rs);
    memcpy(cand_id, h + o_id, cs);
    memcpy(cand_val, h + o_val, cs);
    return 0;
}

/* ---- recorded steps (CUDA graphs) ------------------------------------------------------- */

struct cu_graph {
    cudaGraphExec_t exec;
    unsigned gen;
};

static int cu_graph_begin(struct backend *bk) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    if (!c->graphs || c->failed) return -1;
    if (cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return 0;
}

static void *cu_graph_end(struct backend *bk) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->st, &g);
    if (e != cudaSuccess || !g || c->failed) {
        if (e != cudaSuccess) ok(c, e, "graph capture");
        if (g) cudaGraphDestroy(g);
        return NULL;
    }
    struct cu_graph *cg = xcalloc(1, sizeof *cg);
    e = cudaGraphInstantiate(&cg->exec, g, 0);
    cudaGraphDestroy(g);
    if (!ok(c, e, "graph instantiate")) {
        free(cg);
        return NULL;
    }
    cg->gen = c->gen;
    return cg;
}

static int cu_graph_launch(struct backend *bk, void *graph) {
    struct cuda_backend *c = cb(bk);
    struct cu_graph *cg = graph;
    enter(c);
    if (cg->gen != c->gen) return 1;
    return ok(c, cudaGraphLaunch(cg->exec, c->st), "graph launch") ? 0 : -1;
}

static void cu_graph_free(struct backend *bk, void *graph) {
    struct cu_graph *cg = graph;
    if (!cg) return;
    enter(cb(bk));
    cudaGraphExecDestroy(cg->exec);
    free(cg);
}

static void cu_destroy(struct backend *bk) {
    struct cuda_backend *c = cb(bk);
    enter(c);
    cudaStreamSynchronize(c->st);
    for (int i = 0; i < N_PLANS; i++) plan_drop(&c->plans[i]);
    if (c->lt) cublasLtDestroy(c->lt);
    cudaFree(c->ws);
    cudaFree(c->xb);
    cudaFree(c->part);
    cudaFree(c->samp);
    cudaFreeHost(c->samp_host);
    cudaFree(c->wq);
    cudaFree(c->qx);
    cudaFree(c->chain_sync);
    cudaStreamDestroy(c->st);
    threadpool_destroy(c->pool);
    free(c);
}

static const struct backend_ops cuda_ops = {
    .name = "cuda", .destroy = cu_destroy, .matmul = cu_matmul, .embed = cu_embed, .rmsnorm = cu_rmsnorm,
    .rope = cu_rope, .glu = cu_glu, .add_scaled = cu_add_scaled, .add_bias = cu_add_bias, .kv_store = cu_kv_store,
    .attention = cu_attention, .softcap = cu_softcap, .scale = cu_scale, .host_parallel = cu_host_parallel,
    .host_threads = cu_host_threads, .alloc = cu_alloc, .free = cu_free, .upload = cu_upload,
    .download = cu_download, .mem_info = cu_mem_info, .weight_check = cu_weight_check,
    .graph_begin = cu_graph_begin, .graph_end = cu_graph_end, .graph_launch = cu_graph_launch,
    .graph_free = cu_graph_free, .sample_rows = cu_sample_rows, .add_rmsnorm = cu_add_rmsnorm,
    .matmul_many = cu_matmul_many, .glu_matmul = cu_glu_matmul, .add_rmsnorm_matmul = cu_add_rmsnorm_matmul,
    .qkv_prep = cu_qkv_prep,
    .qkv_attention = cu_qkv_attention,
};

int backend_cuda_devices(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

int backend_cuda_create(struct backend **out, int device, int n_threads, char *err, size_t errlen) {
    return backend_cuda_create_mode(out, device, n_threads, NULL, err, errlen);
}

int backend_cuda_create_mode(struct backend **out, int device, int n_threads, const char *matmul, char *err,
                             size_t errlen) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return errf(err, errlen, "cuda backend: no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none");
    }
    if (device < 0 || device >= n) return errf(err, errlen, "cuda backend: device %d: this machine has %d", device, n);
    const char *mode = matmul ? matmul : getenv("VLLMC_CUDA_MATMUL");
    if (mode && strcmp(mode, "split") && strcmp(mode, "bf16"))
        return errf(err, errlen, "cuda backend: %s '%s': expected split or bf16",
                    matmul ? "matmul mode" : "VLLMC_CUDA_MATMUL", mode);
    const char *attn = getenv("VLLMC_CUDA_ATTN");
    int fa_variant = -1;
    if (attn && !strcmp(attn, "fa0")) fa_variant = 0;
    else if (attn && !strcmp(attn, "fa1")) fa_variant = 1;
    else if (attn && !strcmp(attn, "fa2")) fa_variant = 2;
    else if (attn && strcmp(attn, "fa") && strcmp(attn, "warp"))
        return errf(err, errlen, "cuda backend: VLLMC_CUDA_ATTN='%s': expected fa, fa0, fa1, fa2 or warp", attn);
    const char *qv = getenv("VLLMC_CUDA_QGEMV");
    if (qv && strcmp(qv, "f32") && strcmp(qv, "int8") && strcmp(qv, "q8"))
        return errf(err, errlen, "cuda backend: VLLMC_CUDA_QGEMV='%s': expected int8, q8 or f32", qv);
    struct cudaDeviceProp prop;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaFree(NULL)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
        cudaGetLastError();
        return errf(err, errlen, "cuda backend: device %d: %s", device, cudaGetErrorString(e));
    }
    struct cuda_backend *c = xcalloc(1, sizeof *c);
    c->ops = cuda_ops;
    const char *fuse = getenv("VLLMC_CUDA_FUSE");
    /* VLLMC_CUDA_FUSE=0: no fused ops; =norm: add_rmsnorm and qkv_prep only;
     * =mm: also matmul_many and glu_matmul, not add_rmsnorm_matmul (for measurements) */
    if (fuse && !strcmp(fuse, "mm")) c->ops.add_rmsnorm_matmul = NULL;
    if (fuse && (!strcmp(fuse, "0") || !strcmp(fuse, "norm")))
        c->ops.matmul_many = NULL, c->ops.glu_matmul = NULL, c->ops.add_rmsnorm_matmul = NULL;
    if (fuse && !strcmp(fuse, "0")) c->ops.add_rmsnorm = NULL, c->ops.qkv_prep = NULL;
    /* =noattn: all but qkv_attention (the two ops instead) */
    if (fuse && (!strcmp(fuse, "0") || !strcmp(fuse, "noattn"))) c->ops.qkv_attention = NULL;
    c->base.ops = &c->ops;
    c->base.host_mem = false;
    c->device = device;
    c->n_sm = prop.multiProcessorCount;
    c->split = mode && !strcmp(mode, "split"); /* default bf16: vLLM's numerics (DESIGN.md 7) */
    c->gemv_variant = getenv("VLLMC_CUDA_GEMV") ? atoi(getenv("VLLMC_CUDA_GEMV")) : 0;
    /* Our GEMV (f32 activations, exact products) reads each weight once but
     * loads the activations once per token from L1, so it is bound by those
     * loads from a few tokens on; cuBLASLt's tensor cores are not. Crossover
     * on an H100 (8B bf16 decode, ms/step; BENCHMARKS.md): with bf16
     * activations 2 tokens 7.16 GEMV vs 7.34, 3: 8.43 vs 7.46, 8: 18.1 vs
     * 8.18; with split (two GEMMs) 4: 10.5 vs 13.0, 6: 14.4 vs 13.2. */
    c->gemv_max_t = getenv("VLLMC_CUDA_GEMV_MAX_T") ? atoi(getenv("VLLMC_CUDA_GEMV_MAX_T")) : c->split ? 5 : 2;
    c->gemv_max_t = MAX(0, MIN(c->gemv_max_t, CK_GEMV_MAX_T));
    c->qgemv_variant = qv && !strcmp(qv, "f32");
    /* Which activations the 4/8-bit GEMV of 1-2 tokens takes: two int8 parts
     * per value (hi + lo, ~16 bits) or the high one only (q8: a block of 32
     * on one scale, llama.cpp's q8_1; error <= max |x| of the block / 254).
     * The bf16 mode (the default: every other matmul's activations are
     * rounded to bf16) takes q8 for 4-bit weights, whose own rounding error
     * (a 15th of the group's range) is far above it: its transformers
     * goldens agree as closely as before (BENCHMARKS.md, session 13), and
     * 4-bit 8B decode is 2.54-2.57 instead of 2.58-2.61 ms/token (H100).
     * 8-bit weights keep hi + lo (q8's error is their own size), and the
     * split mode (near-f32 activations) keeps it everywhere.
     * VLLMC_CUDA_QGEMV=int8: hi + lo everywhere, =q8: q8 at 4 and 8 bits. */
    c->qgemv_act8 = qv ? !strcmp(qv, "q8") : c->split ? 0 : 2;
    /* the 4-bit GEMV of 1-2 tokens through shared memory (ck_qx_in.bulk_kb):
     * every 8B shape (4-bit 8B decode 2.76-2.77 ms/token against 2.82-2.83
     * without the down projection's 32 KB blocks, 3.01-3.04 without any;
     * H100, BENCHMARKS.md); with q8 blocks of up to 16 KB, so the down
     * projection keeps q8's two warps per row (quant.cu's qg_cfg_table) */
    c->qbulk_kb = getenv("VLLMC_CUDA_QBULK") ? atoi(getenv("VLLMC_CUDA_QBULK")) : c->qgemv_act8 ? 16 : CK_QBULK_MAX_KB;
    c->qbulk_kb = MAX(0, MIN(c->qbulk_kb, CK_QBULK_MAX_KB));
    if (c->qbulk_kb && !ck_qgemv_bulk_supported()) c->qbulk_kb = 0;
    /* at most 9 of its one-token blocks per multiprocessor (48 registers
     * would allow 10): 4-bit 8B decode 2.63-2.65 -> 2.58-2.60 ms/token
     * (H100, BENCHMARKS.md); not with q8 (40 registers, 12 blocks), where
     * the cap did not help */
    const int per_sm = getenv("VLLMC_CUDA_QBULK_SM") ? atoi(getenv("VLLMC_CUDA_QBULK_SM")) : c->qgemv_act8 ? 0 : 9;
    c->qbulk_pad = c->qbulk_kb ? ck_qgemv_bulk_pad(per_sm) : 0;
    if (getenv("VLLMC_CUDA_QBULK_TRIG")) ck_qgemv_bulk_trig(atoi(getenv("VLLMC_CUDA_QBULK_TRIG")));
    /* beyond 8 tokens the GEMV (in runs of 8) reads less than dequantizing the
     * weight for cuBLASLt up to about 32 tokens with the hi + lo split (three
     * GEMMs), 16 with bf16 activations (one); VLLMC_CUDA_QCHUNK=N overrides */
    c->qchunk_max = getenv("VLLMC_CUDA_QCHUNK") ? atoi(getenv("VLLMC_CUDA_QCHUNK")) : c->split ? 32 : 16;
    /* 4/8-bit matmuls of 9-16 tokens (32 with split) on the tensor cores
     * (ck_qmma): at 16 tokens 1.1-1.9x the GEMV in runs of 8 on every 8B
     * shape (H100, BENCHMARKS.md); at 32 it only matches the dequantized
     * tiles on the big shapes and loses on the small ones, but the split
     * mode's alternative there is the GEMV in four runs.
     * VLLMC_CUDA_QMMA_T=MIN,MAX moves the range (MAX 0: never) */
    c->qmma_min = CK_GEMV_MAX_T + 1, c->qmma_max = c->split ? CK_QMMA_MAX_T : 16;
    if (getenv("VLLMC_CUDA_QMMA_T")) sscanf(getenv("VLLMC_CUDA_QMMA_T"), "%d,%d", &c->qmma_min, &c->qmma_max);
    c->qmma_min = MAX(1, c->qmma_min), c->qmma_max = MIN(c->qmma_max, CK_QMMA_MAX_T);
    c->qa_always = getenv("VLLMC_CUDA_QKV_ATTN") && !strcmp(getenv("VLLMC_CUDA_QKV_ATTN"), "always");
    c->qtile_bytes = getenv("VLLMC_CUDA_QTILE_MB") ? (size_t)MAX(1, atoi(getenv("VLLMC_CUDA_QTILE_MB"))) << 20 : QTILE_BYTES;
    if (getenv("VLLMC_CUDA_GEMV_U")) ck_gemv_shape(atoi(getenv("VLLMC_CUDA_GEMV_U"))); /* sweeps */
    if (getenv("VLLMC_CUDA_QG_SHAPE")) { /* "S,U,W[,trig]" (sweeps; ck_qgemv_shape) */
        int S = 0, U = 0, W = 0, trig = 0;
        sscanf(getenv("VLLMC_CUDA_QG_SHAPE"), "%d,%d,%d,%d", &S, &U, &W, &trig);
        ck_qgemv_shape(S, U, W, trig);
    }
    c->fa_variant = fa_variant;
    c->attn_warp = attn && !strcmp(attn, "warp");
    c->dec = getenv("VLLMC_CUDA_DEC") ? atoi(getenv("VLLMC_CUDA_DEC")) : 3;
    if (c->dec < 0 || c->dec > 4) c->dec = 3;
    c->dec_ctas = getenv("VLLMC_CUDA_DEC_CTAS") ? atoi(getenv("VLLMC_CUDA_DEC_CTAS")) : 2;
    if (c->dec_ctas < 1) c->dec_ctas = 1;
    ck_attention_dec_pdl(!(getenv("VLLMC_CUDA_DEC_PDL") && !strcmp(getenv("VLLMC_CUDA_DEC_PDL"), "0")));
    /* the prefetch and the early trigger: 4-bit 8B decode 3.21-3.22 -> 3.15-3.17 ms/token (H100) */
    ck_attention_dec_flags(getenv("VLLMC_CUDA_DEC_FLAGS") ? atoi(getenv("VLLMC_CUDA_DEC_FLAGS"))
                                                          : CK_DEC_PREFETCH | CK_DEC_TRIGGER);
    c->graphs = !(getenv("VLLMC_CUDA_GRAPHS") && !strcmp(getenv("VLLMC_CUDA_GRAPHS"), "0"));
    /* 4 MB: 4-bit 8B decode 3.11-3.14 -> 3.04-3.06 ms/token (H100; 8, 16, 32 MB slower) */
    c->qpf_max = (size_t)(getenv("VLLMC_CUDA_QPF_MB") ? MAX(0, atoi(getenv("VLLMC_CUDA_QPF_MB"))) : 4) << 20;
    /* programmatic dependent launch (ck_device.cuh): sm_90+ with kernels from sm_90
     * code (a GPU this build has no sm_90-or-newer code for runs the compute_80 PTX,
     * which has no griddepcontrol.wait), off with VLLMC_CUDA_PDL=0 (process-wide: one
     * kind of GPU per process is assumed, as the kernels' launch shapes do) */
    const int ptx = ck_kernel_ptx_version();
    ck_set_pdl(prop.major >= 9 && ptx >= 90 && !(getenv("VLLMC_CUDA_PDL") && !strcmp(getenv("VLLMC_CUDA_PDL"), "0")));
    char from[64] = "";
    if (ptx && ptx < 10 * prop.major + prop.minor) snprintf(from, sizeof from, ", kernels from compute_%d PTX", ptx);
    snprintf(c->name, sizeof c->name, "%s (sm_%d%d, %d SMs%s)", prop.name, prop.major, prop.minor,
             prop.multiProcessorCount, from);
    if ((e = cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaMalloc(&c->ws, LT_WORKSPACE)) != cudaSuccess) {
        cudaGetLastError();
        errf(err, errlen, "cuda backend: %s", cudaGetErrorString(e));
        cu_destroy(&c->base);
        return -1;
    }
    cublasStatus_t s = cublasLtCreate(&c->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        c->lt = NULL;
        errf(err, errlen, "cuda backend: cuBLASLt: %s", cublasLtGetStatusString(s));
        cu_destroy(&c->base);
        return -1;
    }
    c->pool = threadpool_create(n_threads > 0 ? n_threads : cpu_physical_cores());
    if (!c->pool) {
        errf(err, errlen, "cuda backend: cannot start host threads");
        cu_destroy(&c->base);
        return -1;
    }
    /* the decode chain (chain.cu), sm_90: opt-in with VLLMC_CUDA_CHAIN=1 until it
     * beats the GEMVs it replaces (4-bit 8B decode 3.76 vs 3.05-3.10 ms/token on
     * an H100, BENCHMARKS.md) */
    c->chain_on = getenv("VLLMC_CUDA_CHAIN") && !strcmp(getenv("VLLMC_CUDA_CHAIN"), "1") && ck_chain_supported();
    c->chain_max = getenv("VLLMC_CUDA_CHAIN_MAX") ? atoi(getenv("VLLMC_CUDA_CHAIN_MAX")) : CK_CHAIN_MAX;
    c->chain_max = MAX(1, MIN(c->chain_max, CK_CHAIN_MAX));
    if (c->chain_on && ((e = cudaMalloc((void **)&c->chain_sync, ck_chain_sync_bytes())) != cudaSuccess ||
                        (e = cudaMemset(c->chain_sync, 0, ck_chain_sync_bytes())) != cudaSuccess)) {
        cudaGetLastError();
        errf(err, errlen, "cuda backend: %s", cudaGetErrorString(e));
        cu_destroy(&c->base);
        return -1;
    }
    c->base.n_threads = threadpool_size(c->pool);
    *out = &c->base;
    return 0;
}

const char *backend_cuda_name(const struct backend *bk) { return ((const struct cuda_backend *)bk)->name; }

void backend_cuda_counts(const struct backend *bk, struct backend_cuda_counts *out) {
    *out = ((const struct cuda_backend *)bk)->counts;
}

int backend_cuda_qbulk_pad(const struct backend *bk) { return ((const struct cuda_backend *)bk)->qbulk_pad; }

long backend_cuda_chain_ops(const struct backend *bk) {
    const struct cuda_backend *c = (const struct cuda_backend *)bk;
    return c->chain_on ? c->n_chain_ops : -1;
}

long backend_cuda_fused_attention_calls(const struct backend *bk) {
    return ((const struct cuda_backend *)bk)->n_fused_attn;
}

const char *backend_cuda_matmul_mode(const struct backend *bk) {
    return ((const struct cuda_backend *)bk)->split ? "split" : "bf16";
}
