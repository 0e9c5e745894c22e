/* fused.cu — the CUDA backend's fused small ops of a layer (backend.h
 * add_rmsnorm and qkv_prep), so that a decode step launches fewer kernels:
 *   - add_rmsnorm: x += s * o, then h = rmsnorm(x) * w, one block per row
 *     (the residual add and the next norm: two launches become one), the
 *     row in registers (ck_add_rmsnorm_row) where n % 8 == 0; for
 *     prefill's GEMMs h may instead be rounded straight into their 16-bit
 *     activations (ck_add_rmsnorm_split, as ck_split rounds it);
 *   - qkv_prep: the biases, per-head q/k RMSNorm (Qwen3, Gemma 3), RoPE on q
 *     and k, and the paged KV store in one kernel, one warp per (token, head)
 *     with the head staged in shared memory (up to eight launches become
 *     one).
 * Each does what the plain ops do in the same order with the same
 * expressions (kernels.cu): f32 throughout, rope angles (float)pos *
 * inv_freq with the accurate cosf/sinf, f32 -> bf16/f16 rounded to nearest
 * even; only the order of the sums of squares differs.
 *
 * What this does not do: GEMV prologues/epilogues (the norm inside the
 * matmul that follows), RoPE tables that depend on the sequence length (the
 * model runs the plain ops there). */
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/ck_device.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

namespace {

constexpr int PREP_WARPS = 4;

struct SF32 {
    using T = float;
    static __device__ __forceinline__ void store(T *p, size_t i, float v) { p[i] = v; }
};
struct SBF16 {
    using T = uint16_t;
    static __device__ __forceinline__ void store(T *p, size_t i, float v) {
        p[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    }
};
struct SF16 {
    using T = uint16_t;
    static __device__ __forceinline__ void store(T *p, size_t i, float v) { p[i] = __half_as_ushort(__float2half_rn(v)); }
};

/* one block per row, rows of n % 8 == 0 (ck_add_rmsnorm_row: registers,
 * vector loads) */
template <int NR>
__global__ void add_rmsnorm8_k(float *x, const float *o, float s, float *h, const float *w, int n, float eps,
                               bool vec) {
    __shared__ float part[32];
    float v[NR][8];
    ck_add_rmsnorm_row<NR>(v, part, x, o, s, h, w, n, eps, vec);
}

/* f32 to bf16 (BF16) or f16, to nearest even, and back exactly */
template <bool BF16> __device__ __forceinline__ uint16_t round16(float v) {
    if constexpr (BF16) return __bfloat16_as_ushort(__float2bfloat16_rn(v));
    else return __half_as_ushort(__float2half_rn(v));
}
template <bool BF16> __device__ __forceinline__ float widen16(uint16_t u) {
    if constexpr (BF16) return __uint_as_float((uint32_t)u << 16);
    else return __half2float(__ushort_as_half(u));
}

/* add_rmsnorm8_k whose h is rounded straight into a dense GEMM's 16-bit
 * activations (as ck_split rounds it: hi, and lo = h - hi where lo is not
 * NULL) instead of being written (prefill's norm before q/k/v or gate/up) */
template <int NR, bool BF16>
__global__ void add_rmsnorm_split_k(float *x, const float *o, float s, uint16_t *hi, uint16_t *lo, const float *w,
                                    int n, float eps, bool vec) {
    __shared__ float part[32];
    float v[NR][8];
    ck_add_rmsnorm_row<NR>(v, part, x, o, s, nullptr, w, n, eps, vec);
    const int n8 = n / 8;
#pragma unroll
    for (int r = 0; r < NR; r++) {
        const int j = r * (int)blockDim.x + (int)threadIdx.x;
        if (j >= n8) continue;
        uint32_t ph[4], pl[4];
#pragma unroll
        for (int e = 0; e < 8; e += 2) {
            const uint16_t a = round16<BF16>(v[r][e]), b = round16<BF16>(v[r][e + 1]);
            const uint16_t c = round16<BF16>(v[r][e] - widen16<BF16>(a));
            const uint16_t d = round16<BF16>(v[r][e + 1] - widen16<BF16>(b));
            ph[e / 2] = (uint32_t)a | (uint32_t)b << 16, pl[e / 2] = (uint32_t)c | (uint32_t)d << 16;
        }
        const size_t at = (size_t)blockIdx.x * n + 8 * (size_t)j; /* 16-byte aligned: n % 8 == 0 */
        *reinterpret_cast<uint4 *>(hi + at) = make_uint4(ph[0], ph[1], ph[2], ph[3]);
        if (lo) *reinterpret_cast<uint4 *>(lo + at) = make_uint4(pl[0], pl[1], pl[2], pl[3]);
    }
}

/* other rows: one block per row; h may alias o or x (each element is read
 * and written by the same thread) */
__global__ void add_rmsnorm_k(float *x, const float *o, float s, float *h, const float *w, int n, float eps) {
    ck_pdl_trigger();
    ck_pdl_wait();
    __shared__ float part[32];
    float *xr = x + (size_t)blockIdx.x * n, *hr = h + (size_t)blockIdx.x * n;
    const float *orow = o + (size_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xr[i];
        v += s * orow[i];
        xr[i] = v;
        ss += v * v;
    }
    const float inv = 1.0f / sqrtf(ck_block_sum(ss, part) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) hr[i] = xr[i] * inv * (w ? w[i] : 1.0f);
}

/* one warp per (token t, head slot): slots [0, H) are q heads, [H, H + Hkv)
 * k heads, whose warp also stores k and v of that head */
template <class W>
__global__ void __launch_bounds__(PREP_WARPS * 32)
qkv_prep_k(const ck_qkv a, const struct ck_rope r, typename W::T *kc, typename W::T *vc) {
    extern __shared__ float sh[]; /* [PREP_WARPS][D] */
    ck_pdl_trigger();
    ck_pdl_wait();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int NH = a.H + a.Hkv, D = a.D;
    const int item = blockIdx.x * PREP_WARPS + warp;
    if (item >= a.T * NH) return; /* whole warps: no block barrier below */
    const int t = item / NH, hs = item % NH;
    const bool isq = hs < a.H;
    const int h = isq ? hs : hs - a.H;
    float *x = isq ? a.q + ((size_t)t * a.H + h) * D : a.k + ((size_t)t * a.Hkv + h) * D;
    const float *b = isq ? a.bq : a.bk, *nw = isq ? a.qn : a.kn;
    float *xs = sh + (size_t)warp * D;
    ck_prep_head(xs, x, b ? b + (size_t)h * D : nullptr, nw, a.eps, D, a.rope, r, (float)a.pos[t], lane);
    for (int d = lane; d < D; d += 32) x[d] = xs[d];
    if (isq || a.slots[t] < 0) return; /* slot < 0: a padding row of a recorded step (forward.c) */
    const size_t dst = (size_t)a.slots[t] * a.Hkv * D + (size_t)h * D;
    float *v = a.v + ((size_t)t * a.Hkv + h) * D;
    for (int d = lane; d < D; d += 32) {
        W::store(kc, dst + d, xs[d]);
        float vv = v[d];
        if (a.bv) {
            vv += a.bv[(size_t)h * D + d];
            v[d] = vv;
        }
        W::store(vc, dst + d, vv);
    }
}

} // namespace

extern "C" int ck_add_rmsnorm(ck_stream st, float *x, const float *o, float s, float *h, const float *w, int R, int n,
                              float eps) {
    if (R <= 0) return 0;
    if (n % 8 == 0 && n <= CK_NORM_ROW_MAX) {
        int nr, th;
        const bool vec = ck_add_rmsnorm_shape(x, o, h, w, n, &nr, &th);
        if (nr == 1) return ck_launch(add_rmsnorm8_k<1>, (unsigned)R, th, 0, st, x, o, s, h, w, n, eps, vec);
        if (nr == 2) return ck_launch(add_rmsnorm8_k<2>, (unsigned)R, th, 0, st, x, o, s, h, w, n, eps, vec);
        return ck_launch(add_rmsnorm8_k<4>, (unsigned)R, th, 0, st, x, o, s, h, w, n, eps, vec);
    }
    const int threads = n >= 1024 ? 1024 : n >= 256 ? 256 : 64;
    return ck_launch(add_rmsnorm_k, (unsigned)R, threads, 0, st, x, o, s, h, w, n, eps);
}

extern "C" int ck_add_rmsnorm_split(ck_stream st, float *x, const float *o, float s, void *hi, void *lo,
                                    const float *w, int R, int n, float eps, enum ck_type wt) {
    if (R <= 0) return 0;
    if (n % 8 || n > CK_NORM_ROW_MAX || (wt != CK_BF16 && wt != CK_F16) || (uintptr_t)hi % 16 ||
        (uintptr_t)lo % 16)
        return (int)cudaErrorInvalidValue;
    int nr, th;
    const bool vec = ck_add_rmsnorm_shape(x, o, x, w, n, &nr, &th);
    uint16_t *h16 = static_cast<uint16_t *>(hi), *l16 = static_cast<uint16_t *>(lo);
#define LAUNCH(NR)                                                                                                  \
    return wt == CK_BF16 ? ck_launch(add_rmsnorm_split_k<NR, true>, (unsigned)R, th, 0, st, x, o, s, h16, l16, w, n, \
                                     eps, vec)                                                                      \
                         : ck_launch(add_rmsnorm_split_k<NR, false>, (unsigned)R, th, 0, st, x, o, s, h16, l16, w, \
                                     n, eps, vec)
    if (nr == 1) LAUNCH(1);
    if (nr == 2) LAUNCH(2);
    LAUNCH(4);
#undef LAUNCH
}

extern "C" int ck_qkv_prep(ck_stream st, const struct ck_qkv *a, const struct ck_rope *r, void *kc, void *vc,
                           enum ck_type kt) {
    if (a->T <= 0) return 0;
    if (a->D <= 0 || a->D > 3072 || (a->rope && (r->rot_dim > a->D || r->rot_dim / 2 > CK_ROPE_MAX_HALF)))
        return (int)cudaErrorInvalidValue;
    const size_t smem = (size_t)PREP_WARPS * a->D * sizeof(float);
    const unsigned grid = (unsigned)(((size_t)a->T * (a->H + a->Hkv) + PREP_WARPS - 1) / PREP_WARPS);
    static const struct ck_rope none = { { 0 }, 0, 0, 0 };
    const struct ck_rope &rr = a->rope ? *r : none;
    switch (kt) {
    case CK_F32: return ck_launch(qkv_prep_k<SF32>, grid, PREP_WARPS * 32, smem, st, *a, rr, (float *)kc, (float *)vc);
    case CK_BF16:
        return ck_launch(qkv_prep_k<SBF16>, grid, PREP_WARPS * 32, smem, st, *a, rr, (uint16_t *)kc, (uint16_t *)vc);
    case CK_F16:
        return ck_launch(qkv_prep_k<SF16>, grid, PREP_WARPS * 32, smem, st, *a, rr, (uint16_t *)kc, (uint16_t *)vc);
    default: return (int)cudaErrorInvalidValue;
    }
}
