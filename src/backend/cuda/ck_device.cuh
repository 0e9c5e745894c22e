/* ck_device.cuh — device helpers shared by the CUDA backend's kernel files
 * (kernels.cu, fused.cu, quant.cu, attn_dec.cu): warp and block reductions,
 * the RoPE rotation of one head, qkv_prep's work on one head, the GLU
 * activation, programmatic dependent launch (PDL), and the residual add +
 * RMSNorm of a row held in registers
 * (fused.cu's add_rmsnorm and quant.cu's variant that rounds for the GEMV).
 * Header-only, C++ for nvcc; nothing here allocates.
 *
 * PDL (sm_90+): a kernel launched with ck_launch may start while the kernel
 * before it in the stream is still running (its blocks are scheduled once
 * every block of the one before has called ck_pdl_trigger or exited), so
 * launch latency and the dependent's own prologue (a GEMV's first weight
 * loads) overlap the previous kernel's tail. The contract, for every kernel
 * launched with ck_launch: each thread calls ck_pdl_wait() before its first
 * global-memory access that may depend on or conflict with earlier work in
 * the stream (reads of inputs, any write), and no block exits before calling
 * it (so completions stay in stream order: a later wait on this kernel
 * implies everything before it finished). ck_pdl_wait returns when the
 * previous kernel has completed and its writes are visible. Reads of data no
 * kernel writes (weights) may come before it. ck_pdl_trigger() lets the next
 * kernel launch; kernels call it first thing. Inside CUDA graphs the
 * dependency is recorded as a programmatic edge. ck_pdl_on = 0 (the
 * VLLMC_CUDA_PDL=0 switch, or a GPU before sm_90) launches plainly; the
 * device calls are then no-ops. */
#ifndef VLLMC_CK_DEVICE_CUH
#define VLLMC_CK_DEVICE_CUH

#include "backend/cuda/cuda_kernels.h"

#include <cuda_runtime.h>

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

/* qkv_prep's work on one head, by one warp: xs[D] (shared memory) = x + b
 * (b NULL: none), RMS-normalised by nw (NULL: no norm), rotated at position
 * p when rope; fused.cu's qkv_prep and attn_dec.cu's decode kernel with the
 * step's prep folded in both use it, so their results are the same bits. */
__device__ __forceinline__ void ck_prep_head(float *xs, const float *x, const float *b, const float *nw, float eps,
                                             int D, bool rope, const struct ck_rope &r, float p, int lane) {
    float ss = 0.0f;
    for (int d = lane; d < D; d += 32) {
        float v = x[d];
        if (b) v += b[d];
        xs[d] = v;
        ss += v * v;
    }
    if (nw) {
        ss = ck_warp_sum(ss);
        const float inv = 1.0f / sqrtf(ss / (float)D + eps);
        for (int d = lane; d < D; d += 32) xs[d] = xs[d] * inv * nw[d];
    }
    __syncwarp();
    if (rope) {
        ck_rope_head(xs, p, r, lane, 32);
        __syncwarp();
    }
}

/* ---- GLU ---- */

/* the activation of a GLU (0 SiLU, 1 GELU tanh, 2 GELU erf, 3 ReLU), as glu_k and the GEMV input rounding compute it */
__device__ __forceinline__ float ck_act(float x, int act) {
    switch (act) {
    case 0: return x / (1.0f + expf(-x));
    case 1: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case 2: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case 3: return x > 0 ? x : 0;
    }
    return x;
}

/* 16 bytes of a stream read once per call (weights): through the
 * non-coherent path without allocating in L1, which is left to the
 * activations every row reads again (10% faster on an H100 for the
 * quantized GEMV, BENCHMARKS.md) */
__device__ __forceinline__ uint4 ck_ld_stream16(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* ---- programmatic dependent launch ---- */

__device__ __forceinline__ void ck_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void ck_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

extern "C" int ck_pdl_on; /* kernels.cu; set by ck_set_pdl */

/* launch k<<<grid, block, smem, st>>>(args...), with PDL where pdl and ck_pdl_on */
template <typename... KP, typename... A>
inline int ck_launch_if(bool pdl, void (*k)(KP...), dim3 grid, dim3 block, size_t smem, ck_stream st, A &&...args) {
    cudaLaunchConfig_t lc = {};
    lc.gridDim = grid;
    lc.blockDim = block;
    lc.dynamicSmemBytes = smem;
    lc.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    lc.attrs = at;
    lc.numAttrs = pdl && ck_pdl_on ? 1 : 0;
    return (int)cudaLaunchKernelEx(&lc, k, static_cast<A &&>(args)...);
}

template <typename... KP, typename... A>
inline int ck_launch(void (*k)(KP...), dim3 grid, dim3 block, size_t smem, ck_stream st, A &&...args) {
    return ck_launch_if(true, k, grid, block, smem, st, static_cast<A &&>(args)...);
}

/* ---- residual add + RMSNorm of one row per block ---- */

/* 8 floats at p (16-byte aligned if vec) */
__device__ __forceinline__ void ck_ld8(float (&v)[8], const float *p, bool vec) {
    if (vec) {
        const float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = p[j];
    }
}

/* 8 floats to p (16-byte aligned if vec) */
__device__ __forceinline__ void ck_st8(float *p, const float (&v)[8], bool vec) {
    if (vec) {
        reinterpret_cast<float4 *>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4 *>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) p[j] = v[j];
    }
}

/* Row blockIdx.x of n (n % 8 == 0, n <= CK_NORM_ROW_MAX): x += s * o, then
 * h = x / rms(x) * w (w NULL: 1), each thread owning runs of 8 elements j =
 * r * blockDim.x + threadIdx.x, r < NR, kept in v (h's values; zeros past
 * the row) for what the caller does next. The norm weight is read before
 * the PDL wait (no kernel writes it); h may alias o (all of o is read before
 * the barrier of the block sum). part: 32 floats of shared memory; rows of
 * up to CK_NORM_ROW_MAX (cuda_kernels.h). h NULL: not written. */
template <int NR>
__device__ __forceinline__ void ck_add_rmsnorm_row(float (&v)[NR][8], float *part, float *x, const float *o, float s,
                                                   float *h, const float *w, int n, float eps, bool vec) {
    ck_pdl_trigger();
    const int n8 = n / 8;
    float wv[NR][8];
#pragma unroll
    for (int r = 0; r < NR; r++) {
        const int j = r * (int)blockDim.x + (int)threadIdx.x;
        if (j < n8 && w) ck_ld8(wv[r], w + 8 * (size_t)j, vec);
        else {
#pragma unroll
            for (int e = 0; e < 8; e++) wv[r][e] = 1.0f;
        }
    }
    ck_pdl_wait();
    float *xr = x + (size_t)blockIdx.x * n, *hr = h ? h + (size_t)blockIdx.x * n : nullptr;
    const float *orow = o + (size_t)blockIdx.x * n;
    float ss = 0.0f;
#pragma unroll
    for (int r = 0; r < NR; r++) {
        const int j = r * (int)blockDim.x + (int)threadIdx.x;
        if (j < n8) {
            float ov[8];
            ck_ld8(v[r], xr + 8 * (size_t)j, vec);
            ck_ld8(ov, orow + 8 * (size_t)j, vec);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                v[r][e] += s * ov[e];
                ss += v[r][e] * v[r][e];
            }
            ck_st8(xr + 8 * (size_t)j, v[r], vec);
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) v[r][e] = 0.0f;
        }
    }
    const float inv = 1.0f / sqrtf(ck_block_sum(ss, part) / (float)n + eps);
#pragma unroll
    for (int r = 0; r < NR; r++) {
        const int j = r * (int)blockDim.x + (int)threadIdx.x;
#pragma unroll
        for (int e = 0; e < 8; e++) v[r][e] = v[r][e] * inv * wv[r][e];
        if (j < n8 && h) ck_st8(hr + 8 * (size_t)j, v[r], vec);
    }
}

/* the launch of a ck_add_rmsnorm_row kernel: NR (1, 2, 4) and threads per
 * row; returns whether every row is 16-byte aligned (vector loads) */
inline bool ck_add_rmsnorm_shape(const float *x, const float *o, const float *h, const float *w, int n, int *nr,
                                 int *threads) {
    const int n8 = n / 8;
    *nr = n8 <= 512 ? 1 : n8 <= 2048 ? 2 : 4;
    *threads = ((n8 + *nr - 1) / *nr + 31) / 32 * 32;
    return (uintptr_t)x % 16 == 0 && (uintptr_t)o % 16 == 0 && (uintptr_t)h % 16 == 0 && (!w || (uintptr_t)w % 16 == 0);
}

#endif
