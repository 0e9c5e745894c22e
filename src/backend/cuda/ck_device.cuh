/* ck_device.cuh — device helpers shared by the CUDA backend's kernel files
 * (kernels.cu, fused.cu, quant.cu): warp and block reductions, the RoPE
 * rotation of one head. Header-only,
 * C++ for nvcc; nothing here launches or allocates. */
#ifndef VLLMC_CK_DEVICE_CUH
#define VLLMC_CK_DEVICE_CUH

#include "backend/cuda/cuda_kernels.h"

__device__ __forceinline__ float ck_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The sum of v over the whole block (blockDim.x a multiple of 32, at most
 * 1024), returned to every thread. part: 32 floats of shared memory; the
 * call synchronises the block twice. */
__device__ __forceinline__ float ck_block_sum(float v, float *part) {
    v = ck_warp_sum(v);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        float p = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
        p = ck_warp_sum(p);
        if (threadIdx.x == 0) part[0] = p;
    }
    __syncthreads();
    return part[0];
}

/* Rotate one head xh[D] at position p (struct ck_rope: pairs i, i + half for
 * neox, else 2i, 2i + 1), pairs i0, i0 + step, ... of the rot_dim / 2. */
__device__ __forceinline__ void ck_rope_head(float *xh, float p, const struct ck_rope &r, int i0, int step) {
    const int half = r.rot_dim / 2;
    for (int i = i0; i < half; i += step) {
        const float ang = p * r.inv_freq[i];
        const float c = cosf(ang) * r.attn_factor, s = sinf(ang) * r.attn_factor;
        const int a = r.neox ? i : 2 * i, b = r.neox ? i + half : 2 * i + 1;
        const float x0 = xh[a], x1 = xh[b];
        xh[a] = x0 * c - x1 * s;
        xh[b] = x1 * c + x0 * s;
    }
}

#endif
