/* ck_mma.cuh — the tensor-core and asynchronous-copy helpers of the CUDA
 * backend's attention kernels (attn_fa.cu: prefill; attn_dec.cu: decode):
 * mma.sync m16n8k16 with bf16 or f16 inputs and f32 sums, ldmatrix, 16-byte
 * cp.async with zero fill, the plain 2^x, and the XOR swizzle of [rows][D]
 * 16-bit tiles in shared memory. Header-only, C++ for nvcc; sm_80 and later.
 *
 * The swizzle: 16-byte chunk ch of row r sits at chunk ch ^ (r & 7), so
 * ldmatrix (8 rows at one column) and row-wise cp.async writes hit 8
 * different bank groups; it flips only chunk bits below D * 2 bytes, so the
 * k-th 16 columns of a lane's ldmatrix address are at off ^ (k << 5). */
#ifndef VLLMC_CK_MMA_CUH
#define VLLMC_CK_MMA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* the 16-bit element type of a K/V cache: packing two floats, and the mma */
struct CkBF16 {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    static __device__ __forceinline__ void mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};
struct CkF16 {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    static __device__ __forceinline__ void mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

__device__ __forceinline__ void ck_ldsm4(uint32_t *r, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ck_ldsm4t(uint32_t *r, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
/* 16 bytes global -> shared; bytes = 0 writes zeros and reads nothing */
__device__ __forceinline__ void ck_cp16(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void ck_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void ck_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/* 2^x; 2^-inf = 0 (the plain MUFU, without exp2f's denormal fix-ups) */
__device__ __forceinline__ float ck_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* byte offset of 16-byte chunk ch of row r in a [rows][D] 16-bit tile */
template <int D> __device__ __forceinline__ uint32_t ck_swz(int r, int ch) {
    return (uint32_t)(r * (D * 2) + ((ch ^ (r & 7)) << 4));
}

constexpr float CK_L2E = 1.4426950408889634f; /* log2(e) */

#endif
