/* quant.cu — the CUDA backend's kernels for affine-quantized weights
 * (BK_W_AFFINE, MLX layout; AWQ is repacked into it at load): the decode
 * GEMV, the dequantization of row tiles for the cuBLASLt prefill, and the
 * embedding lookup (see cuda_kernels.h).
 *
 * Layout (backend.h): row n of the codes is a little-endian bit stream of K
 * codes of BITS bits; scales and biases are [N][K / group] in BF16, F16 or
 * F32, w = s * q + b. Every kernel works on units of 32 codes: a unit is
 * BITS 32-bit words (4 * BITS bytes, read with 16-byte loads for 4 and
 * 8 bits, 8-byte loads for 2 and 6, 4-byte loads for 3 and 5), and lies in
 * one group because groups are 32, 64 or 128 codes.
 *
 * Unpacking: a code that sits at bit pos of a word (pos + BITS <= 23) becomes
 * a float with one AND/OR (LOP3) and one FADD: OR-ing the exponent of
 * 2^(23 - pos) over the masked bits gives the float 2^(23 - pos) + q exactly,
 * so no shift and no int-to-float conversion (a quarter-rate instruction)
 * is needed; the upper codes of a word take one shift by 16 first, codes
 * that straddle two words a funnel shift. The bit positions are constants
 * once the loops over a unit are unrolled, so every path is the same code
 * for every width.
 *
 * GEMV (T <= CK_GEMV_MAX_T), 4 and 8 bits: the activations are first
 * rounded to two int8 parts per block of 32 (qx_k; x = d (256 hi + lo),
 * ~16 bits, as the CPU's SIMD kernels do), then the codes meet them in dp4a
 * (qg_k): exact integer sums per 16 bytes of codes, one f32 multiply-add by
 * s * d each, the bias once per group against the exact sum of x
 * (ck_qx_in.act8: 1-2 tokens with the high part only, int8 activations as
 * llama.cpp's q8_1, error <= max |x| of the block / 254 per element; the
 * backend's choice for 4-bit weights in its bf16 mode, VLLMC_CUDA_QGEMV=q8
 * everywhere; 4-bit 8B decode 2.54-2.57 instead of 2.58-2.61 ms/token). About
 * one instruction per code at T = 1 (it was four with f32 activations);
 * a warp streams 512 contiguous bytes of a row per load, one or two rows
 * per warp, so a T = 1 call has as many warps in flight as registers allow.
 * H100 (BENCHMARKS.md): 1.3-2.6 TB/s at 4 bits and 1.9-3.0 at 8 for T = 1,
 * about twice the f32 kernel. One qg_k launch may cover several weights
 * that read the same input (ck_qgemv_many: q/k/v, gate/up; each owns a
 * range of blocks), and the rounding may read act(gate) * up instead of x
 * (the GLU before the down projection) or be done by the residual add +
 * RMSNorm kernel that makes x (add_rmsnorm_qx_k, ck_add_rmsnorm_qx). Both
 * kernels use programmatic dependent launch: qg_k loads its first codes
 * before waiting for the kernel before it; and a qg_k launch may be armed
 * (ck_qgemv_prefetch) to move the next GEMV's first bytes into L2 as its
 * blocks finish their rows. On sm_90, 4-bit calls of 1-2 tokens whose
 * blocks of 4 rows take at most ck_qx_in.bulk_kb of shared memory (the
 * backend's default: every 8B shape; with q8 all but the down projection)
 * run qgb_k instead: the same arithmetic, the rows moved into shared memory
 * by cp.async.bulk at each block's start (every byte of a resident block in
 * flight at once), the 4 rows of a granule interleaved, a lane's first
 * activations requested before the rows are waited for, at most 9 blocks
 * per multiprocessor (ck_qx_in.bulk_pad); 4-bit 8B decode 3.03-3.04 ->
 * 2.58-2.61 ms/token (H100, BENCHMARKS.md). Other widths (2, 3, 5, 6) and
 * VLLMC_CUDA_QGEMV=f32 run the f32 kernel (qgemv_k): a thread owns QG_R = 4
 * rows and reads the same unit of each, codes unpacked to floats as above;
 * for T < 4 the products are factored per unit, y += s * sum(x q) + b *
 * sum(x); for T >= 4 the weight is dequantized once per code and reused by
 * the T tokens. Blocks stay resident and loop over row sets, each thread
 * loading its next unit before it computes the current one.
 *
 * Dequantization (prefill) and embedding compute w = s * q + b with separate
 * rounding of the product and the sum, as the portable CPU path does
 * (quant_cpu.c), so embedding rows are bit-identical to it.
 *
 * Tensor cores (ck_qmma, 9-32 tokens): the same int8 parts against the
 * codes in int8 mma.sync (below, before the dequantization).
 *
 * What this does not do: allocate (the int8 activations live in the
 * caller's scratch), synchronise, call cuBLAS, or a tensor-core GEMM for
 * prefill (it dequantizes tiles for cuBLASLt, cuda.c). */
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/ck_device.cuh"
#include "backend/cuda/ck_quant.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace {

/* the f32 GEMV (qgemv_k). Measured on an H100 (BENCHMARKS.md) against 256
 * threads, 2 or 8 rows per thread and 2 or 4 units per thread per group:
 * these were best or even. */
constexpr int QG_THREADS = 128; /* threads per GEMV block (fine-grained occupancy at ~100 registers) */
constexpr int QG_R = 4;         /* rows per thread */

__device__ __forceinline__ float warp_sum(float v) { return ck_warp_sum(v); }


/* the BITS words of one unit (32 codes) at p. The codes are read once per
 * call: loads that skip L1 (ld.global.nc.L1::no_allocate) leave it to the
 * activations, which every row reads again (10% faster on an H100). */
template <int BITS>
__device__ __forceinline__ void load_unit(uint32_t (&w)[BITS], const uint8_t *p) {
    if constexpr (BITS % 4 == 0) {
#pragma unroll
        for (int i = 0; i < BITS / 4; i++) {
            const uint4 v = ck_ld_stream16(p + 16 * i);
            w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
        }
    } else if constexpr (BITS % 2 == 0) {
#pragma unroll
        for (int i = 0; i < BITS / 2; i++)
            asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];"
                         : "=r"(w[2 * i]), "=r"(w[2 * i + 1])
                         : "l"(p + 8 * i));
    } else {
#pragma unroll
        for (int i = 0; i < BITS; i++)
            asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(w[i]) : "l"(p + 4 * i));
    }
}

/* code j (0..31) of a unit as an exact float; j must fold to a constant */
template <int BITS>
__device__ __forceinline__ float code_f(const uint32_t (&w)[BITS], int j) {
    const int bit = j * BITS, a = bit >> 5, off = bit & 31;
    uint32_t v;
    int pos;
    if (off + BITS > 32) v = __funnelshift_r(w[a], w[a + 1 < BITS ? a + 1 : a], off), pos = 0;
    else if (off + BITS <= 23) v = w[a], pos = off;
    else v = w[a] >> 16, pos = off - 16;
    const uint32_t e = (uint32_t)(150 - pos) << 23; /* the exponent of 2^(23 - pos) */
    return __uint_as_float((v & (((1u << BITS) - 1u) << pos)) | e) - __uint_as_float(e);
}

/* s * q + b rounded twice, as the portable CPU path computes it */
__device__ __forceinline__ float deq(float s, float q, float b) { return __fadd_rn(__fmul_rn(s, q), b); }

/* ---- GEMV with f32 activations ---------------------------------------------------- */

/* One unit of QG_R rows: codes, scales and biases (what is loaded ahead). */
template <int BITS>
struct QUnit {
    uint32_t q[QG_R][BITS];
    float s[QG_R], b[QG_R];
};

template <int BITS>
__device__ __forceinline__ void qunit_load(QUnit<BITS> &d, const uint8_t *w, const void *sc, const void *bi, int sdt,
                                           int n0, int N, int u, size_t rb, int G, int gs) {
    const int g = (u << 5) / gs;
#pragma unroll
    for (int r = 0; r < QG_R; r++) { /* rows past N read row N - 1 and are not written */
        const size_t n = (size_t)min(n0 + r, N - 1);
        load_unit<BITS>(d.q[r], w + n * rb + (size_t)u * (4 * BITS));
        d.s[r] = ld_sb(sc, n * G + g, sdt);
        d.b[r] = ld_sb(bi, n * G + g, sdt);
    }
}

/* acc[r][t] += unit u of the rows · x[t] */
template <int BITS, int TT>
__device__ __forceinline__ void qunit_dot(float (&acc)[QG_R][TT], const QUnit<BITS> &d, const float *__restrict__ x,
                                          int u, int K, int T, bool xv) {
    constexpr bool FACT = TT < 4;
    float dot[QG_R][TT], xs[TT];
#pragma unroll
    for (int t = 0; t < TT; t++) {
        xs[t] = 0.0f;
#pragma unroll
        for (int r = 0; r < QG_R; r++) dot[r][t] = 0.0f;
    }
#pragma unroll
    for (int c = 0; c < 4; c++) {
        const int k = (u << 5) + 8 * c;
        float xv8[TT][8];
#pragma unroll
        for (int t = 0; t < TT; t++) {
            if (TT > 1 && t >= T) {
#pragma unroll
                for (int i = 0; i < 8; i++) xv8[t][i] = 0.0f;
            } else if (xv) {
                const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * K + k);
                const float4 a = __ldg(xp), bb = __ldg(xp + 1);
                xv8[t][0] = a.x, xv8[t][1] = a.y, xv8[t][2] = a.z, xv8[t][3] = a.w;
                xv8[t][4] = bb.x, xv8[t][5] = bb.y, xv8[t][6] = bb.z, xv8[t][7] = bb.w;
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) xv8[t][i] = __ldg(x + (size_t)t * K + k + i);
            }
            if (FACT) {
#pragma unroll
                for (int i = 0; i < 8; i++) xs[t] += xv8[t][i];
            }
        }
#pragma unroll
        for (int r = 0; r < QG_R; r++)
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float qf = code_f<BITS>(d.q[r], 8 * c + i);
                if (FACT) {
#pragma unroll
                    for (int t = 0; t < TT; t++) dot[r][t] = fmaf(xv8[t][i], qf, dot[r][t]);
                } else {
                    const float wv = fmaf(d.s[r], qf, d.b[r]);
#pragma unroll
                    for (int t = 0; t < TT; t++) acc[r][t] = fmaf(xv8[t][i], wv, acc[r][t]);
                }
            }
    }
    if (FACT) {
#pragma unroll
        for (int r = 0; r < QG_R; r++)
#pragma unroll
            for (int t = 0; t < TT; t++) acc[r][t] += fmaf(d.s[r], dot[r][t], d.b[r] * xs[t]);
    }
}

/* A group: QG_THREADS / tpr row sets of QG_R rows; the tpr threads of a set
 * stride over its K / 32 units. Blocks loop over groups (about as many
 * blocks as fit on the GPU at once), and every thread loads its next unit
 * (of this group or the next) before it computes the current one, so loads
 * stay in flight through the arithmetic and the reductions. TT: tokens the
 * kernel is built for (T <= TT: tokens beyond T read zeros and are not
 * written). */
template <int BITS, int TT>
__global__ void __launch_bounds__(QG_THREADS)
qgemv_k(float *__restrict__ y, const float *__restrict__ x, const uint8_t *__restrict__ w, const void *sc,
        const void *bi, int sdt, int N, int K, int gs, int T, int tpr, bool xv) {
    __shared__ float red[QG_THREADS / 32][QG_R * TT];
    const int tid = threadIdx.x, sets = QG_THREADS / tpr;
    const int set = tid / tpr, j0 = tid % tpr, warp = tid >> 5, lane = tid & 31;
    const int U = K >> 5, G = K / gs;
    const int n_groups = ((N + QG_R - 1) / QG_R + sets - 1) / sets;
    const int cnt = j0 < U ? (U - 1 - j0) / tpr + 1 : 0; /* units of this thread per group */
    const size_t rb = (size_t)K * BITS / 8;
    QUnit<BITS> cur, nxt;
    int g = blockIdx.x;
    if (cnt && g < n_groups) qunit_load<BITS>(cur, w, sc, bi, sdt, (g * sets + set) * QG_R, N, j0, rb, G, gs);
    for (; g < n_groups; g += gridDim.x) { /* uniform over the block: the barriers below are safe */
        float acc[QG_R][TT];
#pragma unroll
        for (int r = 0; r < QG_R; r++)
#pragma unroll
            for (int t = 0; t < TT; t++) acc[r][t] = 0.0f;
        for (int k = 0; k < cnt; k++) {
            const int gn = k + 1 < cnt ? g : g + (int)gridDim.x, kn = k + 1 < cnt ? k + 1 : 0;
            if (gn < n_groups)
                qunit_load<BITS>(nxt, w, sc, bi, sdt, (gn * sets + set) * QG_R, N, j0 + kn * tpr, rb, G, gs);
            qunit_dot<BITS, TT>(acc, cur, x, j0 + k * tpr, K, T, xv);
            cur = nxt;
        }
#pragma unroll
        for (int r = 0; r < QG_R; r++)
#pragma unroll
            for (int t = 0; t < TT; t++) {
                const float v = warp_sum(acc[r][t]);
                if (lane == 0) red[warp][r * TT + t] = v;
            }
        __syncthreads();
        const int wps = tpr >> 5; /* warps per row set */
        for (int i = tid; i < sets * QG_R * TT; i += QG_THREADS) {
            const int st = i / (QG_R * TT), e = i % (QG_R * TT), r = e / TT, t = e % TT;
            const int n = (g * sets + st) * QG_R + r;
            if (n >= N || t >= T) continue;
            float v = 0.0f;
            for (int p = 0; p < wps; p++) v += red[st * wps + p][e];
            y[(size_t)t * N + n] = v;
        }
        __syncthreads(); /* red is rewritten by the next group */
    }
}

template <int BITS, int TT>
int qgemv_launch(ck_stream st, float *y, const float *x, const ck_qweight *w, int N, int K, int T) {
    /* blocks resident on the whole GPU, asked once per kernel (the device of
     * the first call: one kind of GPU per process is assumed) */
    static int resident = 0;
    if (!resident) {
        int dev = 0, sms = 0, per_sm = 0;
        if (cudaGetDevice(&dev) || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, qgemv_k<BITS, TT>, QG_THREADS, 0))
            return (int)cudaGetLastError();
        resident = sms * (per_sm > 0 ? per_sm : 1);
    }
    const int U = K / 32;
    int tpr = 32; /* threads per row set: about one unit each per group, 32..QG_THREADS */
    while (tpr < QG_THREADS && 2 * tpr <= U) tpr *= 2;
    const int sets = QG_THREADS / tpr;
    const int groups = ((N + QG_R - 1) / QG_R + sets - 1) / sets;
    /* as many blocks as fit, each with the same number of groups */
    const int per_block = (groups + resident - 1) / resident;
    const unsigned grid = (unsigned)((groups + per_block - 1) / per_block);
    const bool xv = ((uintptr_t)x & 15) == 0;
    qgemv_k<BITS, TT><<<grid, QG_THREADS, 0, st>>>(y, x, static_cast<const uint8_t *>(w->codes), w->scales, w->biases,
                                                  (int)w->sdt, N, K, w->group_size, T, tpr, xv);
    return (int)cudaGetLastError();
}

/* 4 and 8 bits (the common checkpoints): a kernel per token count; the
 * other widths round T up to 1, 2, 4 or 8 */
template <int BITS>
int qgemv_bits(ck_stream st, float *y, const float *x, const ck_qweight *w, int N, int K, int T) {
    if constexpr (BITS == 4 || BITS == 8) {
        switch (T) {
#define CASE(n) case n: return qgemv_launch<BITS, n>(st, y, x, w, N, K, T);
            CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
        }
        return (int)cudaErrorInvalidValue;
    } else {
        if (T == 1) return qgemv_launch<BITS, 1>(st, y, x, w, N, K, T);
        if (T == 2) return qgemv_launch<BITS, 2>(st, y, x, w, N, K, T);
        if (T <= 4) return qgemv_launch<BITS, 4>(st, y, x, w, N, K, T);
        return qgemv_launch<BITS, 8>(st, y, x, w, N, K, T);
    }
}

/* ---- GEMV with int8 activation parts (4 and 8 bits) ----------------------------------- */




/* one thread per 8 activations, 4 per block of 32, gs / 8 per group (all
 * in one warp: K is a multiple of the group, 256 of a warp). The input is
 * x[T][K], or with in.gate act(gate) * up (rows of stride in.ld), computed
 * as glu_k does. Launched with PDL: waits before reading the input (plain
 * loads: the input was written by the kernel before). */
template <bool NIBBLES>
__global__ void qx_k(QxLayout o, const ck_qx_in in, int K, int gs, int n8, bool xv) {
    ck_pdl_trigger();
    ck_pdl_wait();
    const int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x & 31;
    float v[8];
    if (i >= n8) {
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = 0.0f;
    } else if (in.gate) {
        const int t = (int)(8 * (size_t)i / K), k = (int)(8 * (size_t)i % K);
        float g[8], u[8];
        ck_ld8(g, in.gate + (size_t)t * in.ld + k, xv);
        ck_ld8(u, in.up + (size_t)t * in.ld + k, xv);
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = ck_act(g[j], in.act) * u[j];
    } else ck_ld8(v, in.x + 8 * (size_t)i, xv);
    qx_round8<NIBBLES>(o, i, v, i < n8, lane, gs);
}

/* add_rmsnorm (ck_add_rmsnorm_row, the expressions of fused.cu's kernel)
 * that also rounds h into the GEMV's input layout, from the registers that
 * hold it. */
template <bool NIBBLES, int NR>
__global__ void add_rmsnorm_qx_k(QxLayout q, float *x, const float *o, float s, float *h, const float *w, int n,
                                 float eps, int gs, bool vec) {
    __shared__ float part[32];
    float v[NR][8];
    ck_add_rmsnorm_row<NR>(v, part, x, o, s, h, w, n, eps, vec);
    const int n8 = n / 8, lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < NR; r++) {
        const int j = r * (int)blockDim.x + (int)threadIdx.x;
        if (r * (int)blockDim.x >= n8) break; /* uniform over the block: whole warps shuffle below */
        qx_round8<NIBBLES>(q, (int)blockIdx.x * n8 + j, v[r], j < n8, lane, gs);
    }
}





/* one weight of a call: rows [0, N) of w, blocks [b0, next b0) of the grid */
struct QgMat {
    float *y;
    const uint8_t *w;
    const void *sc, *bi;
    int N, b0;
};
struct QgArgs {
    QgMat m[CK_QGEMV_MAX_W]; /* nm weights of the same shape kind reading the same x */
    int nm;
    QxLayout x;
    int sdt, K, gsh, S; /* gsh: log2 of the group size */
    int trig;           /* let the next kernel launch at once (else when the blocks exit) */
    const uint8_t *pf;  /* the next GEMV's first bytes: each block moves pf_per of them into L2 */
    unsigned pf_per;
};

/* A warp owns R rows (S warps split them: warp p of a set takes chunks p U,
 * p U + 1 .., then + S U); a chunk is 512 bytes of each row, 16 per lane,
 * U chunks loaded before any is used. A lane's 16 bytes (a granule: 32
 * codes at 4 bits, 16 at 8) lie in one block of 32 activations and one
 * group; the lane at a group's first code adds the bias term. Several
 * weights reading the same x (q/k/v, gate/up) share one launch: each owns a
 * range of blocks. The first chunks' codes and scales are loaded before the
 * PDL wait (weights are never written by a kernel), so they stream while
 * the kernels before finish. */
template <int BITS, int T, int R, int U, bool LO = true>
__global__ void __launch_bounds__(256) qg_k(QgArgs a) {
    constexpr int M = pow2_at_least(R * T), CPG = 128 / BITS, NW = CPG / 4; /* codes, code words per granule */
    __shared__ float red[8][M];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, S = a.S, sets = (blockDim.x >> 5) / S;
    QgMat m = a.m[0];
#pragma unroll
    for (int i = 1; i < CK_QGEMV_MAX_W; i++)
        if (i < a.nm && (int)blockIdx.x >= a.m[i].b0) m = a.m[i];
    const int set = warp / S, part = warp % S, n0 = (((int)blockIdx.x - m.b0) * sets + set) * R;
    const int N = m.N, K = a.K, gsh = a.gsh, G = K >> gsh, B32 = K >> 5;
    const int rb = K / 8 * BITS, nch = (rb + 511) >> 9;
    const uint8_t *wr[R];
    size_t gr[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const size_t n = (size_t)min(n0 + r, N - 1);
        wr[r] = m.w + n * rb, gr[r] = n * G;
    }
    float acc[R][T];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < T; t++) acc[r][t] = 0.0f;
    if (a.trig) ck_pdl_trigger();
    bool waited = false;
    for (int c0 = part * U; c0 < nch; c0 += S * U) {
        uint4 q[U][R];
        float s[U][R], b[U][R];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int o = ((c0 + u) << 9) + 16 * lane, k0 = o / BITS * 8, g = k0 >> gsh;
            const bool v = c0 + u < nch && o < rb, first = v && (k0 & ((1 << gsh) - 1)) == 0;
#pragma unroll
            for (int r = 0; r < R; r++) {
                q[u][r] = v ? ck_ld_stream16(wr[r] + o) : make_uint4(0, 0, 0, 0);
                s[u][r] = v ? ld_sb(m.sc, gr[r] + g, a.sdt) : 0.0f;
                b[u][r] = first ? ld_sb(m.bi, gr[r] + g, a.sdt) : 0.0f;
            }
        }
        if (!waited) ck_pdl_wait(), waited = true;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int o = ((c0 + u) << 9) + 16 * lane, k0 = o / BITS * 8, g = k0 >> gsh;
            if (!(c0 + u < nch && o < rb)) continue;
            const bool first = (k0 & ((1 << gsh) - 1)) == 0;
            /* codes as bytes: at 4 bits the low nibbles of a word (codes 0 2 4 6)
             * then the high ones (1 3 5 7), the order of xh and xl */
            uint32_t cw[R][NW];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const uint32_t w4[4] = { q[u][r].x, q[u][r].y, q[u][r].z, q[u][r].w };
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    if constexpr (BITS == 4)
                        cw[r][2 * j] = w4[j] & 0x0f0f0f0fu, cw[r][2 * j + 1] = (w4[j] >> 4) & 0x0f0f0f0fu;
                    else cw[r][j] = w4[j];
                }
            }
#pragma unroll
            for (int t = 0; t < T; t++) {
                const size_t xo = (size_t)t * K + k0;
                int xh[NW], xl[NW];
#pragma unroll
                for (int j = 0; j < NW; j += 4) {
                    const int4 h4 = __ldg(reinterpret_cast<const int4 *>(a.x.xh + xo) + j / 4);
                    xh[j] = h4.x, xh[j + 1] = h4.y, xh[j + 2] = h4.z, xh[j + 3] = h4.w;
                    if constexpr (LO) {
                        const int4 l4 = __ldg(reinterpret_cast<const int4 *>(a.x.xl + xo) + j / 4);
                        xl[j] = l4.x, xl[j + 1] = l4.y, xl[j + 2] = l4.z, xl[j + 3] = l4.w;
                    }
                }
                const float d = __ldg(a.x.xd + (size_t)t * B32 + (k0 >> 5));
                const float xs = first ? __ldg(a.x.xs + (size_t)t * G + g) : 0.0f;
#pragma unroll
                for (int r = 0; r < R; r++) {
                    int si = 0;
#pragma unroll
                    for (int j = 0; j < NW; j++)
                        si = BITS == 4 ? __dp4a((int)cw[r][j], xh[j], si) : dp4a_us(cw[r][j], xh[j], si);
                    si <<= 8; /* < 2^31: 16 codes x 255 x 127 x 256 at most */
                    if constexpr (LO) {
#pragma unroll
                        for (int j = 0; j < NW; j++)
                            si = BITS == 4 ? __dp4a((int)cw[r][j], xl[j], si) : dp4a_us(cw[r][j], xl[j], si);
                    }
                    acc[r][t] = fmaf(s[u][r] * d, (float)si, fmaf(b[u][r], xs, acc[r][t]));
                }
            }
        }
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (a.pf && threadIdx.x == 0)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a.pf + (size_t)blockIdx.x * a.pf_per),
                     "r"(a.pf_per)
                     : "memory");
#endif
    if (!waited) ck_pdl_wait();
    float v[M];
#pragma unroll
    for (int i = 0; i < M; i++) v[i] = i < R * T ? acc[i / T][i % T] : 0.0f;
    const float sum = warp_sum_scatter<M>(v, lane);
    const int idx = lane / (32 / M);
    const bool writer = lane % (32 / M) == 0 && idx < R * T;
    if (S > 1) {
        if (writer) red[warp][idx] = sum;
        __syncthreads();
        if (part || lane >= R * T) return;
        float tot = 0.0f;
        for (int p = 0; p < S; p++) tot += red[set * S + p][lane];
        const int r = lane / T, t = lane % T;
        if (n0 + r < N) m.y[(size_t)t * N + n0 + r] = tot;
    } else if (writer) {
        const int r = idx / T, t = idx % T;
        if (n0 + r < N) m.y[(size_t)t * N + n0 + r] = sum;
    }
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900 /* qgb_k's helpers */
/* one scale or bias in shared memory, widened as ld_sb widens it */
__device__ __forceinline__ float sm_sb(const uint8_t *p, int i, int dt) {
    if (dt == CK_BF16) return __uint_as_float((uint32_t)reinterpret_cast<const unsigned short *>(p)[i] << 16);
    if (dt == CK_F16) return __half2float(__ushort_as_half(reinterpret_cast<const unsigned short *>(p)[i]));
    return reinterpret_cast<const float *>(p)[i];
}

/* n bytes from global src to shared dst by the tensor memory accelerator,
 * completing on the mbarrier at bar (shared addresses; 16-byte aligned, n
 * a multiple of 16), marked first to leave L2 (weights are read once per
 * step; 4-bit 8B decode, blocks <= 16 KB: 2.92-2.96 -> 2.87-2.88 ms/token,
 * BENCHMARKS.md) */
__device__ __forceinline__ void bulk_g2s(uint32_t dst, const void *src, unsigned n, uint32_t bar) {
    asm volatile("{\n\t.reg .b64 pol;\n\t"
                 "createpolicy.fractional.L2::evict_first.b64 pol, 1.0;\n\t"
                 "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], "
                 "pol;\n}" ::"r"(dst),
                 "l"(src), "r"(n), "r"(bar)
                 : "memory");
}

#endif

/* The bulk GEMV (qgb_k, 1-2 tokens, sm_90; VLLMC_CUDA_QBULK): a block of
 * QB_W warps owns RB consecutive rows, and warp w the w-th quarter of every
 * row's granules (16 bytes of codes each). Its lane 0 moves those RB slices
 * into shared memory by cp.async.bulk on the warp's own mbarrier, thread 0
 * the rows' scales and biases on the block's, all at the block's start and
 * before the PDL wait (weights are never written by a kernel), so every
 * byte of a resident block is in flight at once whatever its registers; a
 * qg_k warp keeps 512 bytes in flight and walks its row chunk by chunk at
 * the memory latency (o and down: one partial wave, ~40% of DRAM peak,
 * BENCHMARKS.md). The arithmetic is qg_k's (the codes against the two int8
 * parts in dp4a, exact integer sums per granule, then s d and b xs in f32),
 * with the RB rows of a granule interleaved (the activations read once for
 * all of them, RB independent dp4a chains, each split in two) and the
 * warps' partial sums added through shared memory, so the f32 sums are
 * grouped differently from qg_k's. A lane holds its next granule's
 * activations in registers (QbX): the first one is requested right after
 * the PDL wait, before the rows are waited for, each later one after the
 * granule before it is summed. Measured and not kept (BENCHMARKS.md,
 * session 12): the activation slices moved into shared memory by
 * cp.async.bulk after the PDL wait (5 ms/token: they queue behind the
 * rows' copies and hold back the trigger), prefetch.global.L1 of them
 * (3.4), the next granule's loaded before the current one is summed (63
 * registers, no faster), 1 or 2 warps per block (8 or 16 for the down
 * projection), the rows of a later block moved into L2 ahead of it. */
constexpr int QB_W = 4, QB_RB = 4; /* warps and rows per block (8 rows: 4-bit 8B decode 3.19 vs 2.90 ms/token;
                                     * 2 rows for the down projection: 2.79-2.81 vs 2.76-2.77) */

/* A lane's activation parts for one granule of qgb_k (32 codes: 32 bytes of
 * each int8 part per token, the block's scale and the group's sum) */
template <int T, bool LO> struct QbX {
    int4 h[T][2], l[LO ? T : 1][2];
    float d[T], s[T];
};

/* (these loads repeat qg_k's on purpose: factoring qg_k's arithmetic into a
 * shared function changed ptxas's schedule for qg_k and cost 3-5% of a
 * 4/8-bit decode step, BENCHMARKS.md) */
template <int T, bool LO>
__device__ __forceinline__ void qgb_load_x(QbX<T, LO> &v, const QxLayout &x, int k0, int gsh, int K, int B32, int G) {
    const bool first = (k0 & ((1 << gsh) - 1)) == 0;
#pragma unroll
    for (int t = 0; t < T; t++) {
        const size_t xo = (size_t)t * K + k0;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            v.h[t][i] = __ldg(reinterpret_cast<const int4 *>(x.xh + xo) + i);
            if constexpr (LO) v.l[t][i] = __ldg(reinterpret_cast<const int4 *>(x.xl + xo) + i);
        }
        v.d[t] = __ldg(x.xd + (size_t)t * B32 + (k0 >> 5));
        v.s[t] = first ? __ldg(x.xs + (size_t)t * G + (k0 >> gsh)) : 0.0f;
    }
}

/* one granule (16 bytes at o of each of the RB rows of 4-bit codes in
 * shared memory) against the activations v */
template <int T, int RB, bool LO, int dt>
__device__ __forceinline__ void qgb_granule(const uint8_t *codes, int rb, const uint8_t *sc, const uint8_t *bi, int G,
                                            int o, int gsh, const QbX<T, LO> &v, float (&acc)[RB][T]) {
    constexpr int NW = 8; /* code words per granule */
    const int k0 = 2 * o, g = k0 >> gsh;
    const bool first = (k0 & ((1 << gsh) - 1)) == 0;
    uint4 q[RB];
#pragma unroll
    for (int r = 0; r < RB; r++) q[r] = *reinterpret_cast<const uint4 *>(codes + (size_t)r * rb + o);
#pragma unroll
    for (int t = 0; t < T; t++) {
        const int xh[NW] = { v.h[t][0].x, v.h[t][0].y, v.h[t][0].z, v.h[t][0].w,
                             v.h[t][1].x, v.h[t][1].y, v.h[t][1].z, v.h[t][1].w };
        const int4 l0 = v.l[LO ? t : 0][0], l1 = v.l[LO ? t : 0][1];
        const int xl[NW] = { l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w };
#pragma unroll
        for (int r = 0; r < RB; r++) {
            /* codes as bytes: the low nibbles of a word (codes 0 2 4 6) then
             * the high ones (1 3 5 7), the order of xh and xl */
            const uint32_t w4[4] = { q[r].x, q[r].y, q[r].z, q[r].w };
            uint32_t cw[NW];
#pragma unroll
            for (int j = 0; j < 4; j++) cw[2 * j] = w4[j] & 0x0f0f0f0fu, cw[2 * j + 1] = (w4[j] >> 4) & 0x0f0f0f0fu;
            int h[2] = { 0, 0 }, l[2] = { 0, 0 };
#pragma unroll
            for (int j = 0; j < NW; j++) {
                h[j & 1] = __dp4a((int)cw[j], xh[j], h[j & 1]);
                if constexpr (LO) l[j & 1] = __dp4a((int)cw[j], xl[j], l[j & 1]);
            }
            const int si = ((h[0] + h[1]) << 8) + l[0] + l[1]; /* < 2^31, as qg_k's */
            constexpr int es = dt == CK_F32 ? 4 : 2;
            const float s = sm_sb(sc + (size_t)r * G * es, g, dt);
            const float b = first ? sm_sb(bi + (size_t)r * G * es, g, dt) : 0.0f;
            acc[r][t] = fmaf(s * v.d[t], (float)si, fmaf(b, v.s[t], acc[r][t]));
        }
    }
}

/* SDT: the scale type as a template parameter (then 55-56 registers instead
 * of 64 at one token, 9 blocks per multiprocessor instead of 8: 4-bit 8B
 * decode 2.76-2.85 -> 2.65-2.70 ms/token, BENCHMARKS.md; 48 registers since
 * the activations are held in QbX). 4-bit codes only (qgb_granule). */
template <int BITS, int T, bool LO, int SDT>
__global__ void __launch_bounds__(QB_W * 32) qgb_k(QgArgs a) {
    static_assert(BITS == 4, "qgb_granule unpacks 4-bit codes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 /* else empty: ck_qgemv_bulk_supported() is 0 */
    constexpr int RB = QB_RB;
    constexpr int M = pow2_at_least(RB * T);
    extern __shared__ __align__(16) uint8_t qsm[];
    __shared__ uint64_t bar[QB_W + 1];
    __shared__ float red[QB_W][M];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    QgMat m = a.m[0];
#pragma unroll
    for (int i = 1; i < CK_QGEMV_MAX_W; i++)
        if (i < a.nm && (int)blockIdx.x >= a.m[i].b0) m = a.m[i];
    const int n0 = ((int)blockIdx.x - m.b0) * RB, K = a.K, gsh = a.gsh, G = K >> gsh, B32 = K >> 5;
    constexpr int es = SDT == CK_F32 ? 4 : 2;
    const int rb = K / 8 * BITS, ng = rb >> 4;
    const int j0 = warp * ng / QB_W, j1 = (warp + 1) * ng / QB_W; /* this warp's granules of each row */
    const unsigned cb = (unsigned)(RB * rb), sb = (unsigned)(RB * G * es); /* multiples of 16 (qgb_smem) */
    const uint32_t sm0 = (uint32_t)__cvta_generic_to_shared(qsm), ba = (uint32_t)__cvta_generic_to_shared(bar);
    if (lane == 0) {
        const uint32_t mb = ba + 8 * (warp + 1);
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(mb) : "memory");
        if (warp == 0) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(ba) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        const unsigned sl = (unsigned)(16 * (j1 - j0));
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mb), "r"(RB * sl) : "memory");
        for (int r = 0; sl && r < RB; r++)
            bulk_g2s(sm0 + r * rb + 16 * j0, m.w + (size_t)(n0 + r) * rb + 16 * j0, sl, mb);
        if (warp == 0) {
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(ba), "r"(2 * sb) : "memory");
            bulk_g2s(sm0 + cb, static_cast<const uint8_t *>(m.sc) + (size_t)n0 * G * es, sb, ba);
            bulk_g2s(sm0 + cb + sb, static_cast<const uint8_t *>(m.bi) + (size_t)n0 * G * es, sb, ba);
        }
    }
    if (a.trig == 1) ck_pdl_trigger();
    ck_pdl_wait();
    /* the first granule's activations (written by the kernel before) are
     * requested before the codes are waited for, so their L2 round trip
     * overlaps the copies' instead of following them (4-bit 8B decode
     * 2.64-2.67 -> 2.58-2.61 ms/token with ck_qx_in.bulk_pad, BENCHMARKS.md) */
    QbX<T, LO> xv;
    int j = j0 + lane;
    if (j < j1) qgb_load_x<T, LO>(xv, a.x, 32 * j, gsh, K, B32, G);
    __syncthreads(); /* the barriers are initialised before anyone waits on them */
    asm volatile("{\n\t.reg .pred p;\n"
                 "QGB_WAIT_S:\n\t"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], 0;\n\t"
                 "@!p bra QGB_WAIT_S;\n\t"
                 "QGB_WAIT_C:\n\t"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\n\t"
                 "@!p bra QGB_WAIT_C;\n}" ::"r"(ba),
                 "r"(ba + 8 * (warp + 1))
                 : "memory");
    if (a.trig == 2) ck_pdl_trigger();
    float acc[RB][T];
#pragma unroll
    for (int r = 0; r < RB; r++)
#pragma unroll
        for (int t = 0; t < T; t++) acc[r][t] = 0.0f;
    for (; j < j1; j += 32) {
        qgb_granule<T, RB, LO, SDT>(qsm, rb, qsm + cb, qsm + cb + sb, G, 16 * j, gsh, xv, acc);
        if (j + 32 < j1) qgb_load_x<T, LO>(xv, a.x, 32 * (j + 32), gsh, K, B32, G);
    }
    if (a.trig == 3) ck_pdl_trigger();
    if (a.pf && threadIdx.x == 0)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a.pf + (size_t)blockIdx.x * a.pf_per),
                     "r"(a.pf_per)
                     : "memory");
    float v[M];
#pragma unroll
    for (int i = 0; i < M; i++) v[i] = i < RB * T ? acc[i / T][i % T] : 0.0f;
    const float sum = warp_sum_scatter<M>(v, lane);
    const int idx = lane / (32 / M);
    if (lane % (32 / M) == 0 && idx < RB * T) red[warp][idx] = sum;
    __syncthreads();
    if (warp == 0 && lane < RB * T) {
        float tot = 0.0f;
#pragma unroll
        for (int w = 0; w < QB_W; w++) tot += red[w][lane];
        const int r = lane / T, t = lane % T;
        m.y[(size_t)t * m.N + n0 + r] = tot;
    }
#endif
}

/* the launch shape besides R and U: W warps per block, S warps per row set */
struct QgCfg {
    int R, U, W, S;
    bool act8; /* the high int8 part of the activations only (ck_qx_in.act8, 1-2 tokens) */
};

/* the blocks of a launch of rpb rows per block; the L2 prefetch's total
 * split over them */
int qg_blocks(QgArgs &a, int rpb) {
    int blocks = 0;
    for (int i = 0; i < a.nm; i++) {
        a.m[i].b0 = blocks;
        blocks += (a.m[i].N + rpb - 1) / rpb;
    }
    if (a.pf) a.pf_per = (unsigned)(a.pf_per / (unsigned)blocks) & ~15u; /* pf_per held the total */
    if (a.pf_per < 16) a.pf = nullptr, a.pf_per = 0;
    return blocks;
}

template <int BITS, int T, int R, int U>
int qg_launch(ck_stream st, QgArgs a, const QgCfg &c) {
    const int blocks = qg_blocks(a, R * (c.W / c.S));
    if constexpr (T <= 2)
        if (c.act8) return ck_launch(qg_k<BITS, T, R, U, false>, (unsigned)blocks, 32 * c.W, 0, st, a);
    return ck_launch(qg_k<BITS, T, R, U>, (unsigned)blocks, 32 * c.W, 0, st, a);
}

/* The shape by token count and rows, from sweeps on an H100 (BENCHMARKS.md):
 * one row per warp and one chunk at a time up to 2 tokens (the most warps in
 * flight: ~40 registers; 2 chunks or 2-4 rows were slower), except 2 rows per
 * warp for one 4-bit token over >= 20000 rows (gate + up, the head: the
 * activations read once per two rows; 4-bit 8B decode 3.07 -> 3.01-3.02
 * ms/token; not with int8-only activations, where it was slower); with those
 * (32 registers, so 64 warps per multiprocessor) 2 warps per row up to 4096
 * rows at one token (o and down then fill one wave: 2.89 -> 2.75 ms/token;
 * at 40 registers the split grid overflows it and is slower), 2 rows from 3
 * tokens (activation loads shared), 2 chunks for 3-4 tokens of <= 4096
 * rows; 2 warps per row where rows are few (k/v; 8-bit rows of 4096; 4096
 * rows from 5 tokens). Prefetching a warp's next chunks into L2 was slower
 * (4-bit decode 3.98 -> 4.44 ms/token). */
int qg_force_s, qg_force_u, qg_force_w; /* ck_qgemv_shape: 0 = the table below */
const void *qpf_ptr; /* ck_qgemv_prefetch: for the next launch only */
size_t qpf_bytes;
int qg_trig = 0; /* ck_qgemv_shape's trig: off, measured faster (3.21 vs 3.26-3.28 ms/token, 4-bit 8B) */

QgCfg qg_cfg_table(int N, int T, int bits, bool act8) {
    if (T == 1 && bits == 4 && N >= 20000 && !act8) return QgCfg{ 2, 1, 4, 1, act8 };
    if (T <= 2) return QgCfg{ 1, 1, 4, N <= (T == 1 && act8 ? 4096 : 2048) || (bits == 8 && N <= 4096) ? 2 : 1, act8 };
    if (T <= 4) return QgCfg{ 2, N <= 4096 ? 2 : 1, 4, N <= 2048 ? 2 : 1, false };
    return QgCfg{ 2, 1, 4, N <= 4096 ? 2 : 1, false };
}

QgCfg qg_cfg(int N, int T, int bits, bool act8) {
    QgCfg c = qg_cfg_table(N, T, bits, act8);
    if (qg_force_s) c.S = qg_force_s;
    if (qg_force_u) c.U = qg_force_u;
    if (qg_force_w) c.W = qg_force_w;
    return c;
}

template <int BITS, int T>
int qg_rows(ck_stream st, const QgArgs &a, const QgCfg &c) {
    if constexpr (T <= 2) {
        if (c.U == 2) return qg_launch<BITS, T, 1, 2>(st, a, c);
        if constexpr (T == 1)
            if (c.R == 2) return qg_launch<BITS, T, 2, 1>(st, a, c);
        return qg_launch<BITS, T, 1, 1>(st, a, c);
    }
    else if constexpr (T <= 4) {
        if (c.U == 2) return qg_launch<BITS, T, 2, 2>(st, a, c);
        return qg_launch<BITS, T, 2, 1>(st, a, c);
    } else return qg_launch<BITS, T, 2, 1>(st, a, c);
}

template <int BITS>
int qg_bits(ck_stream st, const QgArgs &a, const QgCfg &c, int T) {
    switch (T) {
#define CASE(n) case n: return qg_rows<BITS, n>(st, a, c);
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
    }
    return (int)cudaErrorInvalidValue;
}

/* the shared memory of a qgb_k launch, 0 where the call's shapes or
 * alignment do not allow one or it needs more than limit bytes per block */
size_t qgb_smem(const QgArgs &a, int bits, size_t limit) {
    const size_t G = (size_t)a.K >> a.gsh, es = a.sdt == CK_F32 ? 4 : 2, rb = (size_t)a.K / 8 * bits;
    const size_t sb = (size_t)QB_RB * G * es, n = QB_RB * rb + 2 * sb;
    if (rb % 16 || sb % 16 || n > limit) return 0;
    for (int i = 0; i < a.nm; i++)
        if (a.m[i].N % QB_RB || (uintptr_t)a.m[i].w % 16 || (uintptr_t)a.m[i].sc % 16 || (uintptr_t)a.m[i].bi % 16)
            return 0;
    return n;
}

long qgb_launches; /* ck_qgemv_bulk_launches */
/* ck_qgemv_bulk_trig: where a qgb_k block lets the next kernel launch (0 as
 * it exits, 1 at its start, 2 once its bytes are in, 3 after its sums); 2:
 * 4-bit 8B decode 2.87 -> 2.82-2.83 ms/token (q8 2.61-2.63; 1: 2.86-2.88,
 * 3: 2.83-2.85; H100, BENCHMARKS.md). The next kernel still waits for the
 * whole grid before it reads what this one wrote (ck_pdl_wait). */
int qgb_trig = 2;

template <int T, bool LO, int SDT>
int qgb_go3(ck_stream st, QgArgs a, size_t smem) {
    const int blocks = qg_blocks(a, QB_RB);
    a.trig = qgb_trig;
    qgb_launches++;
    return ck_launch(qgb_k<4, T, LO, SDT>, (unsigned)blocks, QB_W * 32, smem, st, a);
}

template <int T, bool LO>
int qgb_go(ck_stream st, const QgArgs &a, size_t smem) {
    if (a.sdt == CK_BF16) return qgb_go3<T, LO, CK_BF16>(st, a, smem);
    if (a.sdt == CK_F16) return qgb_go3<T, LO, CK_F16>(st, a, smem);
    return qgb_go3<T, LO, CK_F32>(st, a, smem);
}

/* the input rounded once (qx_k), then one qg_k (or qgb_k) over the n weights' rows */
int qg_run(ck_stream st, int n, float *const *y, const ck_qx_in &in, const ck_qweight *w, const int *N, int K, int T,
           void *scratch, const void *pf, size_t pf_bytes) {
    int rows = 0;
    for (int i = 0; i < n; i++) rows += N[i];
    const QgCfg c = qg_cfg(rows, T, w->bits, in.act8 && T <= 2);
    const QxLayout o = qx_layout(scratch, K, T);
    const int n8 = T * K / 8;
    const bool xv = in.gate ? ((uintptr_t)in.gate & 15) == 0 && ((uintptr_t)in.up & 15) == 0 && in.ld % 4 == 0
                            : ((uintptr_t)in.x & 15) == 0;
    const unsigned grid = (unsigned)((n8 + 255) / 256);
    if (!in.ready) { /* else ck_add_rmsnorm_qx left it there */
        const int rc = w->bits == 4 ? ck_launch(qx_k<true>, grid, 256, 0, st, o, in, K, w->group_size, n8, xv)
                                    : ck_launch(qx_k<false>, grid, 256, 0, st, o, in, K, w->group_size, n8, xv);
        if (rc) return rc;
    }
    QgArgs a = {};
    a.nm = 0;
    for (int i = 0; i < n; i++)
        if (N[i] > 0)
            a.m[a.nm++] = QgMat{ y[i], static_cast<const uint8_t *>(w[i].codes), w[i].scales, w[i].biases, N[i], 0 };
    if (!a.nm) return 0;
    a.x = o, a.sdt = (int)w->sdt, a.K = K, a.S = c.S, a.trig = qg_trig;
    a.pf = static_cast<const uint8_t *>(pf), a.pf_per = (unsigned)pf_bytes; /* the total, split in qg_launch */
    a.gsh = w->group_size == 32 ? 5 : w->group_size == 64 ? 6 : 7; /* check(): 32, 64 or 128 */
    /* 4 bits only: 8-bit decode 4.09-4.12 ms/token with it against 4.02 */
    if (in.bulk_kb > 0 && in.bulk_kb <= CK_QBULK_MAX_KB && T <= 2 && w->bits == 4)
        if (size_t sm = qgb_smem(a, w->bits, (size_t)in.bulk_kb << 10)) {
            sm = sm > (size_t)in.bulk_pad ? sm : (size_t)in.bulk_pad;
            if (T == 1) return c.act8 ? qgb_go<1, false>(st, a, sm) : qgb_go<1, true>(st, a, sm);
            return c.act8 ? qgb_go<2, false>(st, a, sm) : qgb_go<2, true>(st, a, sm);
        }
    return w->bits == 4 ? qg_bits<4>(st, a, c, T) : qg_bits<8>(st, a, c, T);
}

/* ---- tensor-core GEMM for 9 to CK_QMMA_MAX_T tokens ------------------------------------
 * The same arithmetic as qg_k (the codes against the int8 activation parts
 * of qx_k, exact integer sums per block of 32, then s * d and the bias
 * against the group's x sum in f32), with the integer sums done by int8
 * mma.sync (m16n8k32: u8 codes x s8 activation parts, s32): a warp takes MT
 * tiles of 16 rows and NT tiles of 8 tokens over a range of K; the 8 warps
 * of a block split K, and their sums meet in shared memory. Each code is
 * read once for all the tokens, where the GEMV in runs of 8 read it once per
 * 8 tokens and the dequantized path wrote and read it again as bf16.
 * Fragments (PTX ISA, m16n8k32 .s8/.u8): lane = 4 g + t holds A rows g and
 * g + 8, k bytes 4t..4t+3 and 16+4t..16+4t+3; B (k x n, "col") token g, the
 * same k bytes; C rows g, g + 8, tokens 2t, 2t + 1. The k order inside a
 * block is qx's: at 4 bits a code word's low nibbles, then its high ones
 * (x0 x2 x4 x6 x1 x3 x5 x7), so k bytes 4j..4j+3 of a block are word j / 2's
 * low (j even) or high (j odd) nibbles; at 8 bits word j itself. */
constexpr int QM_WARPS = 8, QM_U = 4; /* warps per block (splitting K), blocks of 32 codes in flight per warp */

__device__ __forceinline__ void mma_u8s8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* a code word; at 4 bits kept in L1: a block is half a 32-byte sector, whose
 * other half the next block reads (H100, 8B gate/up at 16 tokens: 85 against
 * 106 us without; no difference at 8 bits, whose blocks are whole sectors) */
template <int BITS> __device__ __forceinline__ uint32_t ld_code_word(const uint8_t *p) {
    uint32_t v;
    if constexpr (BITS == 4) asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(v) : "l"(p));
    else asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}

struct QmArgs {
    float *y;
    const uint8_t *w;
    const void *sc, *bi;
    QxLayout x;
    int N, K, T, sdt, gsh;
};

template <int BITS, int MT, int NT>
__global__ void __launch_bounds__(QM_WARPS * 32) qmma_k(QmArgs a) {
    constexpr int BS = 4 * BITS; /* bytes of a block of 32 codes */
    constexpr int ROWS = 16 * MT, TOKS = 8 * NT;
    __shared__ float red[QM_WARPS][ROWS][TOKS + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int K = a.K, N = a.N, T = a.T, G = K >> a.gsh, B32 = K >> 5;
    const size_t rb = (size_t)K / 8 * BITS;
    const int n0 = blockIdx.x * ROWS;
    const int per = (B32 + QM_WARPS - 1) / QM_WARPS, kb0 = warp * per, kb1 = min(B32, kb0 + per);
    /* this thread's code bytes in a block: k bytes 4t.. and 16 + 4t.. */
    const int o0 = BITS == 4 ? 4 * (t >> 1) : 4 * t, o1 = BITS == 4 ? 8 + 4 * (t >> 1) : 16 + 4 * t;
    const int nib = BITS == 4 ? 4 * (t & 1) : 0;
    const uint8_t *wr[MT][2];
    size_t gr[MT][2];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const size_t n = (size_t)min(n0 + 16 * m + g + 8 * h, N - 1); /* rows past N: read N - 1, not written */
            wr[m][h] = a.w + n * rb, gr[m][h] = n * G;
        }
    float acc[MT][NT][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int j = 0; j < NT; j++) acc[m][j][0] = acc[m][j][1] = acc[m][j][2] = acc[m][j][3] = 0.0f;
    ck_pdl_wait();
    for (int kb0u = kb0; kb0u < kb1; kb0u += QM_U) {
        /* QM_U blocks' codes, scales and biases in flight before any is used */
        uint32_t af[QM_U][MT][4];
        float s[QM_U][MT][2], b[QM_U][MT][2];
#pragma unroll
        for (int u = 0; u < QM_U; u++) {
            const int kb = min(kb0u + u, kb1 - 1), grp = (kb << 5) >> a.gsh;
            const bool first = ((kb << 5) & ((1 << a.gsh) - 1)) == 0;
#pragma unroll
            for (int m = 0; m < MT; m++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    uint32_t w0 = ld_code_word<BITS>(wr[m][h] + (size_t)kb * BS + o0);
                    uint32_t w1 = ld_code_word<BITS>(wr[m][h] + (size_t)kb * BS + o1);
                    if constexpr (BITS == 4) w0 = (w0 >> nib) & 0x0f0f0f0fu, w1 = (w1 >> nib) & 0x0f0f0f0fu;
                    af[u][m][h] = w0, af[u][m][2 + h] = w1; /* a0..a3: (g, k 4t) (g+8, k 4t) (g, k 16+4t) (g+8, k 16+4t) */
                    s[u][m][h] = ld_sb(a.sc, gr[m][h] + grp, a.sdt);
                    b[u][m][h] = first ? ld_sb(a.bi, gr[m][h] + grp, a.sdt) : 0.0f;
                }
        }
#pragma unroll
        for (int u = 0; u < QM_U; u++) {
            const int kb = kb0u + u;
            if (kb >= kb1) break;
            const int grp = (kb << 5) >> a.gsh;
            const bool first = ((kb << 5) & ((1 << a.gsh) - 1)) == 0;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int tb = 8 * j + g; /* this thread's B token */
                uint32_t bh0 = 0, bh1 = 0, bl0 = 0, bl1 = 0;
                if (tb < T) {
                    const uint32_t *xh = reinterpret_cast<const uint32_t *>(a.x.xh + (size_t)tb * K + (kb << 5));
                    const uint32_t *xl = reinterpret_cast<const uint32_t *>(a.x.xl + (size_t)tb * K + (kb << 5));
                    bh0 = xh[t], bh1 = xh[4 + t], bl0 = xl[t], bl1 = xl[4 + t];
                }
                float d[2], xs[2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int tc = 8 * j + 2 * t + e; /* this thread's C tokens */
                    d[e] = tc < T ? a.x.xd[(size_t)tc * B32 + kb] : 0.0f;
                    xs[e] = first && tc < T ? a.x.xs[(size_t)tc * G + grp] : 0.0f;
                }
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    int ch[4] = { 0, 0, 0, 0 }, cl[4] = { 0, 0, 0, 0 };
                    mma_u8s8(ch, af[u][m], bh0, bh1);
                    mma_u8s8(cl, af[u][m], bl0, bl1);
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        const int si = (ch[c] << 8) + cl[c]; /* < 2^31: 32 codes x 255 x 127 x 256 at most */
                        acc[m][j][c] = fmaf(s[u][m][c >> 1] * d[c & 1], (float)si,
                                            fmaf(b[u][m][c >> 1], xs[c & 1], acc[m][j][c]));
                    }
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) red[warp][16 * m + g + 8 * (c >> 1)][8 * j + 2 * t + (c & 1)] = acc[m][j][c];
    __syncthreads();
    for (int i = threadIdx.x; i < ROWS * TOKS; i += QM_WARPS * 32) {
        const int r = i / TOKS, tk = i % TOKS;
        if (n0 + r >= N || tk >= T) continue;
        float v = 0.0f;
#pragma unroll
        for (int p = 0; p < QM_WARPS; p++) v += red[p][r][tk];
        a.y[(size_t)tk * N + n0 + r] = v;
    }
}

template <int BITS, int MT>
int qmma_nt(ck_stream st, const QmArgs &a) {
    const unsigned grid = (unsigned)((a.N + 16 * MT - 1) / (16 * MT));
    switch ((a.T + 7) / 8) {
    case 1: return ck_launch(qmma_k<BITS, MT, 1>, grid, QM_WARPS * 32, 0, st, a);
    case 2: return ck_launch(qmma_k<BITS, MT, 2>, grid, QM_WARPS * 32, 0, st, a);
    case 3: return ck_launch(qmma_k<BITS, MT, 3>, grid, QM_WARPS * 32, 0, st, a);
    case 4: return ck_launch(qmma_k<BITS, MT, 4>, grid, QM_WARPS * 32, 0, st, a);
    }
    return (int)cudaErrorInvalidValue;
}

/* tiles of 32 rows for tall weights (each activation fragment serves more
 * rows), 16 otherwise (twice the blocks for the 4096-row ones) */
int qmma_run(ck_stream st, const QmArgs &a, int bits) {
    if (bits == 4) return a.N >= 8192 ? qmma_nt<4, 2>(st, a) : qmma_nt<4, 1>(st, a);
    return a.N >= 8192 ? qmma_nt<8, 2>(st, a) : qmma_nt<8, 1>(st, a);
}


/* ---- dequantization (prefill) and embedding ------------------------------------------ */

__device__ __forceinline__ uint32_t bf16x2(float lo_elem, float hi_elem) {
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo_elem)) |
           ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi_elem)) << 16);
}

/* rows [n0, n0 + rows) to hi[rows][K] = bf16(w) and, if lo, lo = bf16(w - hi) */
template <int BITS>
__global__ void qdequant_k(uint16_t *hi, uint16_t *lo, const uint8_t *w, const void *sc, const void *bi, int sdt,
                           int n0, int rows, int K, int gs) {
    const int U = K >> 5, G = K / gs;
    const size_t rb = (size_t)K * BITS / 8, total = (size_t)rows * U;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / U, u = i % U, n = (size_t)n0 + r;
        uint32_t q[BITS];
        load_unit<BITS>(q, w + n * rb + u * (4 * BITS));
        const size_t gi = n * G + (u << 5) / gs;
        const float s = ld_sb(sc, gi, sdt), b = ld_sb(bi, gi, sdt);
        const size_t o = r * K + (u << 5);
#pragma unroll
        for (int c = 0; c < 4; c++) {
            float v[8], l[8];
#pragma unroll
            for (int e = 0; e < 8; e++) {
                v[e] = deq(s, code_f<BITS>(q, 8 * c + e), b);
                l[e] = v[e] - __bfloat162float(__float2bfloat16_rn(v[e]));
            }
            reinterpret_cast<uint4 *>(hi + o)[c] =
                make_uint4(bf16x2(v[0], v[1]), bf16x2(v[2], v[3]), bf16x2(v[4], v[5]), bf16x2(v[6], v[7]));
            if (lo)
                reinterpret_cast<uint4 *>(lo + o)[c] =
                    make_uint4(bf16x2(l[0], l[1]), bf16x2(l[2], l[3]), bf16x2(l[4], l[5]), bf16x2(l[6], l[7]));
        }
    }
}

template <int BITS>
__global__ void qembed_k(float *out, const uint8_t *w, const void *sc, const void *bi, int sdt, const int32_t *ids,
                         int T, int K, int gs, float scale) {
    const int U = K >> 5, G = K / gs;
    const size_t rb = (size_t)K * BITS / 8;
    for (int t = blockIdx.y; t < T; t += gridDim.y) {
        const size_t n = (size_t)ids[t];
        for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < U; u += gridDim.x * blockDim.x) {
            uint32_t q[BITS];
            load_unit<BITS>(q, w + n * rb + (size_t)u * (4 * BITS));
            const size_t gi = n * G + (u << 5) / gs;
            const float s = ld_sb(sc, gi, sdt), b = ld_sb(bi, gi, sdt);
            float *o = out + (size_t)t * K + (u << 5);
#pragma unroll
            for (int j = 0; j < 32; j++) o[j] = __fmul_rn(deq(s, code_f<BITS>(q, j), b), scale);
        }
    }
}

#define DISPATCH_BITS(bits, B, ...)                                 \
    switch (bits) {                                                 \
    case 2: { constexpr int B = 2; __VA_ARGS__; } break;            \
    case 3: { constexpr int B = 3; __VA_ARGS__; } break;            \
    case 4: { constexpr int B = 4; __VA_ARGS__; } break;            \
    case 5: { constexpr int B = 5; __VA_ARGS__; } break;            \
    case 6: { constexpr int B = 6; __VA_ARGS__; } break;            \
    case 8: { constexpr int B = 8; __VA_ARGS__; } break;            \
    default: return (int)cudaErrorInvalidValue;                     \
    }

/* what every kernel here assumes of a weight of K columns */
int check(const ck_qweight *w, int K) {
    const int b = w->bits, g = w->group_size;
    if ((b < 2 || b > 8 || b == 7) || (g != 32 && g != 64 && g != 128) || K <= 0 || K % g ||
        (w->sdt != CK_BF16 && w->sdt != CK_F16 && w->sdt != CK_F32))
        return (int)cudaErrorInvalidValue;
    const unsigned load = b % 4 == 0 ? 16 : b % 2 == 0 ? 8 : 4; /* bytes per code load */
    if ((uintptr_t)w->codes % load) return (int)cudaErrorMisalignedAddress;
    return 0;
}

} // namespace

/* ---- entry points ------------------------------------------------------------------ */

extern "C" size_t ck_qgemv_scratch(int K, int T) {
    return 2 * (((size_t)T * K + 255) & ~(size_t)255) + 8 * (size_t)T * (K / 32) + 256;
}

extern "C" int ck_qgemv(ck_stream st, float *y, const float *x, const struct ck_qweight *w, int N, int K, int T,
                        void *scratch, int variant) {
    const void *pf = qpf_ptr; /* armed for this call only (ck_qgemv_prefetch) */
    const size_t pf_bytes = qpf_bytes;
    qpf_ptr = nullptr, qpf_bytes = 0;
    if (T < 1 || T > CK_GEMV_MAX_T) return (int)cudaErrorInvalidValue;
    if (int rc = check(w, K)) return rc;
    if (N <= 0) return 0;
    if ((w->bits == 4 || w->bits == 8) && variant != 1) {
        if (!scratch || (uintptr_t)scratch % 256) return (int)cudaErrorInvalidValue;
        const ck_qx_in in = { x, NULL, NULL, 0, 0, 0, variant == 2, 0, 0 };
        return qg_run(st, 1, &y, in, w, &N, K, T, scratch, pf, pf_bytes);
    }
    DISPATCH_BITS(w->bits, B, return qgemv_bits<B>(st, y, x, w, N, K, T));
    return 0;
}

extern "C" int ck_qgemv_many(ck_stream st, int n, float *const *y, const struct ck_qx_in *in,
                             const struct ck_qweight *w, const int *N, int K, int T, void *scratch) {
    const void *pf = qpf_ptr; /* armed for this call only (ck_qgemv_prefetch) */
    const size_t pf_bytes = qpf_bytes;
    qpf_ptr = nullptr, qpf_bytes = 0;
    if (T < 1 || T > CK_GEMV_MAX_T || n < 1 || n > CK_QGEMV_MAX_W || !scratch || (uintptr_t)scratch % 256 ||
        (w[0].bits != 4 && w[0].bits != 8) || (!in->ready && !in->x && !(in->gate && in->up && in->ld >= K)))
        return (int)cudaErrorInvalidValue;
    for (int i = 0; i < n; i++) {
        if (int rc = check(&w[i], K)) return rc;
        if (w[i].bits != w[0].bits || w[i].group_size != w[0].group_size || w[i].sdt != w[0].sdt || N[i] < 0)
            return (int)cudaErrorInvalidValue;
    }
    return qg_run(st, n, y, *in, w, N, K, T, scratch, pf, pf_bytes);
}

extern "C" void ck_qgemv_prefetch(const void *p, size_t bytes) {
    qpf_ptr = p, qpf_bytes = bytes < (1u << 30) ? bytes : (1u << 30);
}

/* the shared memory beyond 48 KB for every qgb_k instance, on the current device */
template <int T, bool LO> bool qgb_allow_smem() {
    const int n = CK_QBULK_MAX_KB * 1024;
    const cudaFuncAttribute at = cudaFuncAttributeMaxDynamicSharedMemorySize;
    return cudaFuncSetAttribute(qgb_k<4, T, LO, CK_BF16>, at, n) == cudaSuccess &&
           cudaFuncSetAttribute(qgb_k<4, T, LO, CK_F16>, at, n) == cudaSuccess &&
           cudaFuncSetAttribute(qgb_k<4, T, LO, CK_F32>, at, n) == cudaSuccess;
}

extern "C" int ck_qgemv_bulk_supported(void) {
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, qgb_k<4, 1, true, CK_BF16>) != cudaSuccess || fa.ptxVersion < 90) {
        cudaGetLastError();
        return 0;
    }
    int dev = 0, major = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (major < 9) return 0;
    if (!qgb_allow_smem<1, true>() || !qgb_allow_smem<1, false>() || !qgb_allow_smem<2, true>() ||
        !qgb_allow_smem<2, false>()) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

extern "C" int ck_qgemv_bulk_pad(int per_sm) {
    if (per_sm <= 0 || !ck_qgemv_bulk_supported()) return 0;
    const auto k = qgb_k<4, 1, true, CK_BF16>;
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, QB_W * 32, 0) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    if (n <= per_sm) return 0;
    /* the least multiple of 256 bytes that leaves per_sm (the occupancy
     * calculator counts the per-block reservation and the static arrays) */
    int lo = 0, hi = CK_QBULK_MAX_KB * 1024;
    while (hi - lo > 256) {
        const int mid = (lo + hi) / 2 / 256 * 256;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, QB_W * 32, (size_t)mid) != cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        if (n <= per_sm) hi = mid;
        else lo = mid;
    }
    return hi;
}

extern "C" long ck_qgemv_bulk_launches(void) { return qgb_launches; }
extern "C" void ck_qgemv_bulk_trig(int where) { qgb_trig = where; }


extern "C" void ck_qgemv_shape(int S, int U, int W, int trig) {
    qg_trig = trig;
    qg_force_s = S == 1 || S == 2 || S == 4 ? S : 0;
    qg_force_u = U == 1 || U == 2 ? U : 0;
    qg_force_w = W == 4 || W == 8 ? W : 0;
}

extern "C" int ck_add_rmsnorm_qx(ck_stream st, float *x, const float *o, float s, float *h, const float *w, int R,
                                 int n, float eps, int bits, int gs, void *scratch) {
    if (R < 1 || R > CK_GEMV_MAX_T || (bits != 4 && bits != 8) || (gs != 32 && gs != 64 && gs != 128) || n % gs ||
        !scratch || (uintptr_t)scratch % 256)
        return (int)cudaErrorInvalidValue;
    const QxLayout q = qx_layout(scratch, n, R);
    if (n > CK_NORM_ROW_MAX) return (int)cudaErrorInvalidValue;
    int nr, threads;
    const bool vec = ck_add_rmsnorm_shape(x, o, h, w, n, &nr, &threads);
#define LAUNCH(NR)                                                                                                  \
    return bits == 4 ? ck_launch(add_rmsnorm_qx_k<true, NR>, (unsigned)R, threads, 0, st, q, x, o, s, h, w, n, eps, \
                                 gs, vec)                                                                          \
                     : ck_launch(add_rmsnorm_qx_k<false, NR>, (unsigned)R, threads, 0, st, q, x, o, s, h, w, n,    \
                                 eps, gs, vec)
    if (nr == 1) LAUNCH(1);
    if (nr == 2) LAUNCH(2);
    LAUNCH(4);
#undef LAUNCH
}

extern "C" int ck_qdequant(ck_stream st, void *hi, void *lo, const struct ck_qweight *w, int K, int n0, int rows) {
    if (int rc = check(w, K)) return rc;
    if (rows <= 0) return 0;
    const size_t units = (size_t)rows * (size_t)(K / 32);
    const unsigned grid = (unsigned)((units + 255) / 256 < 65535 ? (units + 255) / 256 : 65535);
    DISPATCH_BITS(w->bits, B,
                  qdequant_k<B><<<grid, 256, 0, st>>>(static_cast<uint16_t *>(hi), static_cast<uint16_t *>(lo),
                                                      static_cast<const uint8_t *>(w->codes), w->scales, w->biases,
                                                      (int)w->sdt, n0, rows, K, w->group_size));
    return (int)cudaGetLastError();
}

extern "C" int ck_qembed(ck_stream st, float *out, const struct ck_qweight *w, const int32_t *ids, int T, int K,
                         float scale) {
    if (int rc = check(w, K)) return rc;
    if (T <= 0) return 0;
    const int U = K / 32, threads = U >= 128 ? 128 : 32;
    dim3 grid((unsigned)((U + threads - 1) / threads), (unsigned)(T < 65535 ? T : 65535));
    DISPATCH_BITS(w->bits, B,
                  qembed_k<B><<<grid, threads, 0, st>>>(out, static_cast<const uint8_t *>(w->codes), w->scales,
                                                        w->biases, (int)w->sdt, ids, T, K, w->group_size, scale));
    return (int)cudaGetLastError();
}

extern "C" int ck_qmma(ck_stream st, float *y, const float *x, const struct ck_qweight *w, int N, int K, int T,
                       void *scratch) {
    if (T < 1 || T > CK_QMMA_MAX_T || (w->bits != 4 && w->bits != 8) || !scratch || (uintptr_t)scratch % 256)
        return (int)cudaErrorInvalidValue;
    if (int rc = check(w, K)) return rc;
    if (N <= 0) return 0;
    const QxLayout o = qx_layout(scratch, K, T);
    const int n8 = T * K / 8;
    const ck_qx_in in = { x, NULL, NULL, 0, 0, 0, 0, 0, 0 };
    const bool xv = ((uintptr_t)x & 15) == 0;
    const unsigned grid = (unsigned)((n8 + 255) / 256);
    const int rc = w->bits == 4 ? ck_launch(qx_k<true>, grid, 256, 0, st, o, in, K, w->group_size, n8, xv)
                                : ck_launch(qx_k<false>, grid, 256, 0, st, o, in, K, w->group_size, n8, xv);
    if (rc) return rc;
    const QmArgs a = { y, static_cast<const uint8_t *>(w->codes), w->scales, w->biases, o, N, K, T, (int)w->sdt,
                       w->group_size == 32 ? 5 : w->group_size == 64 ? 6 : 7 };
    return qmma_run(st, a, w->bits);
}
