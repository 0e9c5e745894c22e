/* quant_cpu.h — matmul and embedding lookup of the CPU backend on affine
 * quantized weights (BK_W_AFFINE: w = s*q + b per group of columns).
 *
 * Two numerical paths:
 *   - portable (the reference, quant_cpu.c): each weight row is dequantized
 *     to f32 and dotted with f32 activations (dequantize-then-f32-matmul);
 *   - SIMD (kernels_q_<isa>.c): the activations of the call are quantized
 *     once, per token and per group of the weight (block = group_size), into
 *     two int8 parts, x = d*(hi + lo/256) (|hi|, |lo| <= 127, so within
 *     d/512 = max|x|/65024 of x), and multiplied with the integer codes
 *     directly: dot = sum_g s_g * d_g/256 * (256*sum(q*hi) + sum(q*lo))
 *     + sum_g b_g * sum_g(x), the last sum over the exact f32 activations.
 *     One int8 part alone (plain Q8 activations) missed transformers by up
 *     to 0.5 in log-probability on the golden fixtures; the split holds them
 *     within ~2e-3 (measured with the portable model).
 * Decode-sized calls use VNNI / maddubs / NEON integer dots, prefill-sized
 * calls on CPUs with AMX-INT8 use int8 tiles (kernels_q_avx512.c).
 *
 * A kernel set is a table; cpu.c picks the one matching its dense set and
 * calls qcpu_matmul / qcpu_embed from its matmul / embed entry points.
 *
 * What this does not do: allocate per call in steady state (buffers grow to
 * the largest call seen), or support codes wider than 8 bits. */
#ifndef VLLMC_CPU_QUANT_H
#define VLLMC_CPU_QUANT_H

#include "backend/backend.h"

struct threadpool;

/* Layouts of the prepared int8 activations. */
enum qx_layout {
    QX_NATURAL = 0, /* hi/lo[k] = part of x[k] */
    /* 4-bit codes hold k even in the low nibble and k odd in the high nibble
     * of a byte; per chunk of P codes the activations are stored de-interleaved
     * as x[even k] (P/2 bytes) then x[odd k] (P/2 bytes) */
    QX_PERM128, QX_PERM64, QX_PERM32,
};

/* Row stride of the prepared activations: K rounded up to 128, plus 64 so
 * that the 16 rows an AMX tile load touches do not fall into the same few L1
 * sets (a power-of-two stride did, and tile loads stalled). */
static inline int64_t qx_stride(int64_t K) { return ((K + 127) & ~(int64_t)127) + 64; }

/* Activations of one call, quantized (see the file comment). Rows padded to
 * Tp (a multiple of 16) and to the stride Kp = qx_stride(K) with zeros. */
struct qx {
    int T, Tp, G, Gp;        /* tokens, groups per row (Gp: padded to 16) */
    int64_t K, Kp;
    int g;                   /* group size = activation block */
    enum qx_layout layout;
    int elt;                 /* bytes per element of hi/lo: 1 (int8 parts) or 2 (bf16 parts, tile path) */
    int8_t *hi, *lo;         /* [Tp][Kp] each */
    float *dd;               /* [Tp][Gp]: d/256 per group */
    float *xs;               /* [Tp][Gp]: sum of x over the group (f32) */
    float *ddx;              /* [Tp][Kp/8]: lane scales, see ddx_codes; NULL when unused */
    int ddx_codes;           /* codes per 32-bit accumulator lane for ddx: ddx[t][i] = dd[t][i*ddx_codes/g] */
};

/* What one call runs. */
enum qplan { QP_PORTABLE = 0, QP_DOT, QP_TILES };

struct cpu_qkernels {
    const char *name;
    /* the plan for this weight and T (QP_PORTABLE when the set has no path) */
    enum qplan (*plan)(const struct bk_weight *w, int T);
    /* the activation layout and ddx_codes (0: no ddx) this set wants for w */
    void (*setup)(struct qx *q, const struct bk_weight *w, enum qplan p);
    /* quantize rows [t0, t1) of x[T][K] into q (layout and sizes set) */
    void (*prep_rows)(struct qx *q, const float *x, int t0, int t1);
    /* y[t][n], t < T, n in [n0, n1); scratch: scratch(w, plan) bytes, 64-aligned */
    void (*matmul_rows)(float *y, const struct qx *q, const struct bk_weight *w, int64_t n0, int64_t n1,
                        enum qplan p, void *scratch);
    size_t (*scratch)(const struct bk_weight *w, enum qplan p);
    int row_align;           /* output rows per unit of the thread split for QP_TILES */
};

extern const struct cpu_qkernels cpu_qkernels_portable;
#if defined(__x86_64__)
extern const struct cpu_qkernels cpu_qkernels_avx512; /* + AVX512-VNNI (checked at run time) */
extern const struct cpu_qkernels cpu_qkernels_avx512_amx; /* + AMX-INT8 tiles for prefill */
extern const struct cpu_qkernels cpu_qkernels_avx2;
bool q_avx512_vnni_ok(void);
bool q_amx_init(void);
#endif
#if defined(__aarch64__)
extern const struct cpu_qkernels cpu_qkernels_neon;
#endif

/* The quantized kernel set that goes with a dense kernel set ("avx512",
 * "avx2", "neon", "portable"): AVX-512 needs VNNI (else AVX2), and adds AMX
 * tiles where the CPU has AMX-INT8, Linux grants the tile state and
 * VLLMC_CPU_AMX is not 0. exact (an "-exact" set): the portable path, f32
 * activations. */
const struct cpu_qkernels *cpu_qkernels_for(const char *dense_name, bool exact);

/* Growing buffers of one backend (freed by qcpu_buf_free). */
struct qcpu_buf {
    void *x;        /* prepared activations */
    size_t x_len;
    void *scratch;  /* per-thread kernel scratch */
    size_t scratch_len;
};
void qcpu_buf_free(struct qcpu_buf *b);

/* y[T][N] = x[T][K] · W^T for an affine W, over the pool's threads. */
void qcpu_matmul(const struct cpu_qkernels *qk, struct threadpool *pool, struct qcpu_buf *buf, float *y,
                 const float *x, const struct bk_weight *w, int T);
/* out[T][K] = dequantized rows ids[t] of an affine table, times scale. */
void qcpu_embed(float *out, const struct bk_weight *table, const int32_t *ids, int T, float scale);

/* ---- shared by the kernel files --------------------------------------------- */

/* Reference: rows [n0, n1) with f32 activations; scratch holds K floats. */
void qref_matmul_rows(float *y, const float *x, const struct bk_weight *w, int T, int64_t n0, int64_t n1,
                      float *scratch);
/* Dequantize row n of w into out[K] (f32). */
void qref_dequant_row(float *out, const struct bk_weight *w, int64_t n);
/* Scales and biases of row n as f32: s[G], b[G]. */
void q_row_scales(float *s, float *b, const struct bk_weight *w, int64_t n);
/* Scalar prep for any layout (the SIMD sets may use a faster one). */
void q_prep_rows_generic(struct qx *q, const float *x, int t0, int t1);
/* Unpack codes [k0, k0 + n) of row n0 of w into u8 (any bits). */
void q_unpack_codes(uint8_t *dst, const struct bk_weight *w, int64_t n, int64_t k0, int64_t cnt);

#endif
