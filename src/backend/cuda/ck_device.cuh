/* ck_device.cuh — device helpers shared by the CUDA backend's kernel files
 * (kernels.cu, fused.cu, quant.cu): warp and block reductions. Header-only,
 * C++ for nvcc; nothing here launches or allocates. */
#ifndef VLLMC_CK_DEVICE_CUH
#define VLLMC_CK_DEVICE_CUH

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

#endif
