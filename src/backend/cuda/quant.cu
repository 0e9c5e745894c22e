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
 * GEMV (T <= CK_GEMV_MAX_T): a thread owns QG_R = 4 rows and reads the same
 * unit of each, so the activations it loads (8 floats per token at a time)
 * serve 4 rows. For T < 4 the products are factored per unit,
 * y += s * sum(x q) + b * sum(x) (sum(x) shared by the 4 rows): about four
 * instructions per code at T = 1; for T >= 4 the weight is dequantized once
 * per code (w = s q + b) and reused by the T tokens. Sums are f32 with f32
 * activations; the threads of a row set (32..128, by K) split its units and
 * meet in shared memory. Blocks stay resident and loop over row sets, each
 * thread loading its next unit before it computes the current one.
 * On an H100 this reaches 0.6-1.1 TB/s at 4 bits (BENCHMARKS.md): the time
 * follows the number of codes more than the bytes (8 bits is barely slower),
 * so the per-code work and its latency, not DRAM, bound it today.
 *
 * Dequantization (prefill) and embedding compute w = s * q + b with separate
 * rounding of the product and the sum, as the portable CPU path does
 * (quant_cpu.c), so embedding rows are bit-identical to it.
 *
 * What this does not do: allocate, synchronise, call cuBLAS, read
 * activations in 16 bits or int8 (the GEMV keeps them f32 as the dense GEMV
 * does), or a tensor-core quantized GEMM (prefill dequantizes, cuda.c). */
#include "backend/cuda/cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace {

constexpr unsigned FULL = 0xffffffffu;
/* Measured on an H100 (BENCHMARKS.md) against 256 threads, 2 or 8 rows per
 * thread and 2 or 4 units per thread per group: these were best or even. */
constexpr int QG_THREADS = 128; /* threads per GEMV block (fine-grained occupancy at ~100 registers) */
constexpr int QG_R = 4;         /* rows per thread */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

/* one scale or bias, widened to f32 */
__device__ __forceinline__ float ld_sb(const void *p, size_t i, int dt) {
    if (dt == CK_BF16) return __uint_as_float((uint32_t)__ldg(static_cast<const unsigned short *>(p) + i) << 16);
    if (dt == CK_F16) return __half2float(__ushort_as_half(__ldg(static_cast<const unsigned short *>(p) + i)));
    return __ldg(static_cast<const float *>(p) + i);
}

/* the BITS words of one unit (32 codes) at p. The codes are read once per
 * call: loads that skip L1 (ld.global.nc.L1::no_allocate) leave it to the
 * activations, which every row reads again (10% faster on an H100). */
template <int BITS>
__device__ __forceinline__ void load_unit(uint32_t (&w)[BITS], const uint8_t *p) {
    if constexpr (BITS % 4 == 0) {
#pragma unroll
        for (int i = 0; i < BITS / 4; i++)
            asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                         : "=r"(w[4 * i]), "=r"(w[4 * i + 1]), "=r"(w[4 * i + 2]), "=r"(w[4 * i + 3])
                         : "l"(p + 16 * i));
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

/* ---- GEMV ------------------------------------------------------------------------ */

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

extern "C" int ck_qgemv(ck_stream st, float *y, const float *x, const struct ck_qweight *w, int N, int K, int T) {
    if (T < 1 || T > CK_GEMV_MAX_T) return (int)cudaErrorInvalidValue;
    if (int rc = check(w, K)) return rc;
    if (N <= 0) return 0;
    DISPATCH_BITS(w->bits, B, return qgemv_bits<B>(st, y, x, w, N, K, T));
    return 0;
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
