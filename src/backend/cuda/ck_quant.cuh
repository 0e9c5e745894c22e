/* ck_quant.cuh — what the int8-activation kernels of the affine weights
 * share (quant.cu's GEMV and tensor-core kernels, chain.cu's persistent
 * decode chain): the rounding of activations into two int8 parts per
 * value (layout and arithmetic below), dp4a on unsigned codes, the
 * widening of one scale or bias, and the warp sums of several values at once. Header-only, C++ for nvcc; in an anonymous
 * namespace, so each kernel file has its own copy. */
#ifndef VLLMC_CK_QUANT_CUH
#define VLLMC_CK_QUANT_CUH

#include "backend/cuda/cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

/* one scale or bias, widened to f32 */
__device__ __forceinline__ float ld_sb(const void *p, size_t i, int dt) {
    if (dt == CK_BF16) return __uint_as_float((uint32_t)__ldg(static_cast<const unsigned short *>(p) + i) << 16);
    if (dt == CK_F16) return __half2float(__ushort_as_half(__ldg(static_cast<const unsigned short *>(p) + i)));
    return __ldg(static_cast<const float *>(p) + i);
}

/* The activations, rounded once per call (qx_k) into the scratch given to
 * ck_qgemv, T x K each, as two int8 parts per value (as the CPU's SIMD
 * kernels do): with a = x * 127 / amax over a block of 32,
 *   xh  round(a)                 |xh| <= 127
 *   xl  round((a - xh) * 256)    |xl| <= 128, clamped to 127
 * so x = d (256 xh + xl) with d = amax / 127 / 256 and an error of at most
 * amax / 65024 per element (~16 bits, about bf16 hi + lo; twice that where
 * a - xh is exactly 1/2 and xl clamps), as the CPU's bound. For 4-bit
 * weights each run of 8 is stored as x0 x2 x4 x6 x1 x3 x5 x7, the order of a
 * code word's low and high nibbles (below). Per block of 32: xd = d; per
 * weight group: xs = the sum of the unrounded x (the bias term). Then
 *   y = sum over groups of s * sum_blocks(d * (256 sum(q xh) + sum(q xl))) + b * xs
 * with exact integer sums (dp4a): the only rounding beyond f32 sums is x's. */
struct QxLayout {
    int8_t *xh, *xl;
    float *xd, *xs;
};

__host__ __device__ inline QxLayout qx_layout(void *scratch, int K, int T) {
    uint8_t *p = static_cast<uint8_t *>(scratch);
    const size_t nq = ((size_t)T * K + 255) & ~(size_t)255, nb = (size_t)T * (K / 32);
    return QxLayout{ reinterpret_cast<int8_t *>(p), reinterpret_cast<int8_t *>(p + nq),
                     reinterpret_cast<float *>(p + 2 * nq), reinterpret_cast<float *>(p + 2 * nq + 4 * nb) };
}

__device__ __forceinline__ uint2 pack8(const int (&b)[8], bool nibbles) {
    uint32_t u[8];
#pragma unroll
    for (int j = 0; j < 8; j++) u[j] = (uint32_t)b[j] & 0xffu;
    if (nibbles)
        return make_uint2(u[0] | u[2] << 8 | u[4] << 16 | u[6] << 24, u[1] | u[3] << 8 | u[5] << 16 | u[7] << 24);
    return make_uint2(u[0] | u[1] << 8 | u[2] << 16 | u[3] << 24, u[4] | u[5] << 8 | u[6] << 16 | u[7] << 24);
}

/* the rounding of qx_k: thread lane of a warp holds elements 8 i .. 8 i + 7
 * (i = lane mod 32, consecutive over the warp; all 32 lanes call it); the
 * parts go to 8-byte slot at of xh and xl (default i: in order) */
template <bool NIBBLES>
__device__ __forceinline__ void qx_round8(const QxLayout &o, int i, const float (&v)[8], bool valid, int lane, int gs,
                                          int at = -1) {
    float amax = 0.0f, sum = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(v[j])), sum += v[j];
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
    for (int m = 1; m < gs / 8; m <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
    if (!valid) return;
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int h[8], l[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const float a = v[j] * inv, r = rintf(a);
        h[j] = (int)r; /* |a| <= 127 */
        l[j] = max(-127, min(127, __float2int_rn((a - r) * 256.0f)));
    }
    reinterpret_cast<uint2 *>(o.xh)[at < 0 ? i : at] = pack8(h, NIBBLES);
    reinterpret_cast<uint2 *>(o.xl)[at < 0 ? i : at] = pack8(l, NIBBLES);
    if ((lane & 3) == 0) o.xd[i >> 2] = amax / 127.0f / 256.0f;
    if ((lane & (gs / 8 - 1)) == 0) o.xs[(size_t)i * 8 / gs] = sum;
}

__device__ __forceinline__ int dp4a_us(uint32_t a, int b, int c) { /* unsigned bytes of a x signed bytes of b */
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

/* sums v[0..M) of every lane over the warp, M a power of two <= 32: halves
 * exchanged (M - 1 shuffles for M values, not 5 M); lane l ends with the sum
 * of value l / (32 / M) */
template <int M>
__device__ __forceinline__ float warp_sum_scatter(float (&v)[M], int lane) {
    int m = M;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        if (m > 1) {
            const bool up = lane & o;
#pragma unroll
            for (int i = 0; i < M / 2; i++)
                if (i < m / 2) {
                    const float send = up ? v[i] : v[i + m / 2], keep = up ? v[i + m / 2] : v[i];
                    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
                }
            m >>= 1;
        } else v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
    }
    return v[0];
}

__host__ __device__ constexpr int pow2_at_least(int n) { return n <= 1 ? 1 : 2 * pow2_at_least((n + 1) / 2); }

} // namespace

#endif
