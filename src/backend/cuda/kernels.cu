/* kernels.cu — the CUDA backend's own kernels (see cuda_kernels.h): decode
 * GEMV, activation rounding for cuBLASLt (also straight from the GLU),
 * embedding, RMSNorm, RoPE, GLU, element-wise ops, the paged KV store and
 * paged attention.
 *
 * Numerics follow the CPU's portable reference (cpu_ref.c): f32 activations
 * and f32 sums everywhere, 16-bit values widened exactly, f32 -> bf16/f16
 * rounded to nearest even, RoPE angles as (float)pos * inv_freq with the
 * accurate cosf/sinf (no fast-math), the same activation formulas.
 *
 * Attention: one warp per (query row, head). Lane j scores key j of each run
 * of 32 keys against the query (held in shared memory), the warp keeps an
 * online softmax (running max and sum, as FlashAttention does), and each lane
 * accumulates its own head dims of P·V. Long contexts with few query rows
 * (decode) split the keys into ranges run by separate warps and merged by a
 * second kernel (split-KV, as FlashDecoding). This is the simple, exact
 * version: it runs f32 KV caches and odd head dims; decode steps on 16-bit
 * caches go to attn_dec.cu and prefill steps to the tensor-core kernel
 * (attn_fa.cu) where they apply.
 *
 * What this does not do: allocate, synchronise, or call cuBLAS. */
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/ck_device.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

int ck_pdl_on = 0;
extern "C" void ck_set_pdl(int on) { ck_pdl_on = on; }

/* The PTX architecture this build's kernels run from on the current device:
 * 90 from the sm_90 binary (or compute_90 PTX), 80 where the driver compiled
 * the compute_80 PTX (GPUs the build has no better code for). PDL needs 90:
 * the compute_80 code has no griddepcontrol.wait, and a kernel launched with
 * PDL behind one that lets dependents start early (cuBLAS's do) would read
 * its input too soon. All .cu files are built for the same architectures,
 * so one kernel answers for all. */
__global__ void ck_probe_k() {}
extern "C" int ck_kernel_ptx_version(void) {
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, ck_probe_k) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return fa.ptxVersion;
}

namespace {

constexpr unsigned FULL = 0xffffffffu;

/* Element types: load widens to f32, store rounds to nearest even; unpack
 * widens the elements of one 16-byte load. */
struct TF32 {
    using T = float;
    static constexpr int E = 4;
    static __device__ __forceinline__ float load(const T *p, size_t i) { return p[i]; }
    static __device__ __forceinline__ void store(T *p, size_t i, float v) { p[i] = v; }
    static __device__ __forceinline__ void unpack(uint4 r, float *f) {
        f[0] = __uint_as_float(r.x), f[1] = __uint_as_float(r.y), f[2] = __uint_as_float(r.z),
        f[3] = __uint_as_float(r.w);
    }
};
struct TBF16 {
    using T = uint16_t;
    static constexpr int E = 8;
    static __device__ __forceinline__ float load(const T *p, size_t i) { return __uint_as_float((uint32_t)p[i] << 16); }
    static __device__ __forceinline__ void store(T *p, size_t i, float v) {
        p[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    }
    static __device__ __forceinline__ void two(uint32_t u, float *f) {
        f[0] = __uint_as_float(u << 16), f[1] = __uint_as_float(u & 0xffff0000u);
    }
    static __device__ __forceinline__ void unpack(uint4 r, float *f) { two(r.x, f), two(r.y, f + 2), two(r.z, f + 4), two(r.w, f + 6); }
};
struct TF16 {
    using T = uint16_t;
    static constexpr int E = 8;
    static __device__ __forceinline__ float load(const T *p, size_t i) { return __half2float(__ushort_as_half(p[i])); }
    static __device__ __forceinline__ void store(T *p, size_t i, float v) { p[i] = __half_as_ushort(__float2half_rn(v)); }
    static __device__ __forceinline__ void two(uint32_t u, float *f) {
        f[0] = __half2float(__ushort_as_half((unsigned short)(u & 0xffffu)));
        f[1] = __half2float(__ushort_as_half((unsigned short)(u >> 16)));
    }
    static __device__ __forceinline__ void unpack(uint4 r, float *f) { two(r.x, f), two(r.y, f + 2), two(r.z, f + 4), two(r.w, f + 6); }
};

#define DISPATCH_TYPE(t, TAG, ...)                    \
    switch (t) {                                      \
    case CK_F32: { using TAG = TF32; __VA_ARGS__; } break;   \
    case CK_BF16: { using TAG = TBF16; __VA_ARGS__; } break; \
    case CK_F16: { using TAG = TF16; __VA_ARGS__; } break;   \
    default: return (int)cudaErrorInvalidValue;       \
    }

__device__ __forceinline__ float warp_sum(float v) { return ck_warp_sum(v); }
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    return v;
}

inline unsigned blocks_for(size_t n, unsigned per) { return (unsigned)((n + per - 1) / per); }

/* ---- GEMV (decode) --------------------------------------------------------- */

constexpr int GEMV_WARPS = 8;

/* acc[t] += the E weights wf times x[t][k0 .. k0 + E) (16-byte aligned) */
template <int TT, int E>
__device__ __forceinline__ void acc_chunk(float (&acc)[TT], const float (&wf)[E], const float *x, int K, int k0) {
#pragma unroll
    for (int t = 0; t < TT; t++) {
        const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * K + k0);
#pragma unroll
        for (int e = 0; e < E / 4; e++) {
            float4 xv = xp[e];
            acc[t] += wf[4 * e] * xv.x + wf[4 * e + 1] * xv.y + wf[4 * e + 2] * xv.z + wf[4 * e + 3] * xv.w;
        }
    }
}

template <class W, int TT>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_k(float *__restrict__ y, const float *__restrict__ x, const typename W::T *__restrict__ w, int N, int K, bool vec) {
    ck_pdl_trigger();
    ck_pdl_wait();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * GEMV_WARPS + warp;
    if (n >= N) return;
    const typename W::T *wr = w + (size_t)n * K;
    float acc[TT];
#pragma unroll
    for (int t = 0; t < TT; t++) acc[t] = 0.0f;
    if (vec) { /* K % E == 0, rows and x 16-byte aligned */
        constexpr int E = W::E;
#pragma unroll 4
        for (int k0 = lane * E; k0 < K; k0 += 32 * E) {
            float wf[E];
            W::unpack(__ldg(reinterpret_cast<const uint4 *>(wr + k0)), wf);
            acc_chunk<TT, E>(acc, wf, x, K, k0);
        }
    } else {
        for (int k = lane; k < K; k += 32) {
            const float wv = W::load(wr, k);
#pragma unroll
            for (int t = 0; t < TT; t++) acc[t] += wv * x[(size_t)t * K + k];
        }
    }
#pragma unroll
    for (int t = 0; t < TT; t++) {
        float v = warp_sum(acc[t]);
        if (lane == 0) y[(size_t)t * N + n] = v;
    }
}

/* The bandwidth version (16-byte loads only): a block of 8 warps owns RPB
 * rows, and the 8 / RPB warps of a row split its K range, so that even
 * matrices of few rows (K/V projections) put enough loads in flight; the
 * warps' sums meet in shared memory. Up to CK_GEMV_MAX_W weights reading
 * the same x share one launch (q/k/v, gate/up: ck_gemv_many), each owning a
 * range of blocks. A lane loads U 16-byte pieces of its row before it
 * uses any, through ck_ld_stream16 (the weights are read once); the first
 * U are loaded before the PDL wait (weights are never written by a
 * kernel), so they stream while the kernel before finishes. U = 8, or 4
 * with ck_gemv_shape (sweeps). */
int gv_u = 8;

template <class W>
struct GvMat {
    float *y;
    const typename W::T *w;
    int N, b0;
};
template <class W>
struct GvArgs {
    GvMat<W> m[CK_GEMV_MAX_W];
    int nm, K;
    const float *x;
};

template <class W, int TT, int RPB, int GV_U>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_split_k(GvArgs<W> a) {
    ck_pdl_trigger();
    constexpr int WPR = GEMV_WARPS / RPB, E = W::E, STRIDE = WPR * 32 * E;
    __shared__ float red[GEMV_WARPS][TT];
    GvMat<W> m = a.m[0];
#pragma unroll
    for (int i = 1; i < CK_GEMV_MAX_W; i++)
        if (i < a.nm && (int)blockIdx.x >= a.m[i].b0) m = a.m[i];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, K = a.K, N = m.N;
    const int r = warp % RPB, part = warp / RPB;
    const int n = ((int)blockIdx.x - m.b0) * RPB + r;
    float acc[TT];
#pragma unroll
    for (int t = 0; t < TT; t++) acc[t] = 0.0f;
    bool waited = false;
    if (n < N) {
        const typename W::T *wr = m.w + (size_t)n * K;
        for (int k0 = (part * 32 + lane) * E; k0 < K; k0 += GV_U * STRIDE) {
            uint4 q[GV_U];
#pragma unroll
            for (int u = 0; u < GV_U; u++)
                q[u] = k0 + u * STRIDE < K ? ck_ld_stream16(wr + k0 + u * STRIDE) : make_uint4(0, 0, 0, 0);
            if (!waited) ck_pdl_wait(), waited = true;
#pragma unroll
            for (int u = 0; u < GV_U; u++) {
                if (k0 + u * STRIDE >= K) break;
                float wf[E];
                W::unpack(q[u], wf);
                acc_chunk<TT, E>(acc, wf, a.x, K, k0 + u * STRIDE);
            }
        }
    }
    if (!waited) ck_pdl_wait(); /* y may still be read by the kernel before */
#pragma unroll
    for (int t = 0; t < TT; t++) {
        const float v = warp_sum(acc[t]);
        if (lane == 0) red[warp][t] = v;
    }
    __syncthreads();
    if (threadIdx.x < RPB * TT) {
        const int rr = threadIdx.x % RPB, t = threadIdx.x / RPB, nn = ((int)blockIdx.x - m.b0) * RPB + rr;
        if (nn < N) {
            float v = 0.0f;
#pragma unroll
            for (int p = 0; p < WPR; p++) v += red[p * RPB + rr][t];
            m.y[(size_t)t * N + nn] = v;
        }
    }
}

template <class W, int TT, int RPB>
int gemv_split_launch_rpb(ck_stream st, GvArgs<W> a) {
    int blocks = 0;
    for (int i = 0; i < a.nm; i++) a.m[i].b0 = blocks, blocks += (a.m[i].N + RPB - 1) / RPB;
    if (gv_u == 4) return ck_launch(gemv_split_k<W, TT, RPB, 4>, (unsigned)blocks, GEMV_WARPS * 32, 0, st, a);
    return ck_launch(gemv_split_k<W, TT, RPB, 8>, (unsigned)blocks, GEMV_WARPS * 32, 0, st, a);
}

template <class W, int TT>
int gemv_split_launch(ck_stream st, const GvArgs<W> &a) {
    /* rows per block: as many as still leave >= 1024 blocks */
    int rows = 0;
    for (int i = 0; i < a.nm; i++) rows += a.m[i].N;
    const int rpb = rows >= 8192 ? 8 : rows >= 4096 ? 4 : rows >= 2048 ? 2 : 1;
    switch (rpb) {
    case 8: return gemv_split_launch_rpb<W, TT, 8>(st, a);
    case 4: return gemv_split_launch_rpb<W, TT, 4>(st, a);
    case 2: return gemv_split_launch_rpb<W, TT, 2>(st, a);
    default: return gemv_split_launch_rpb<W, TT, 1>(st, a);
    }
}

template <class W>
int gemv_many_t(ck_stream st, int n, float *const *y, const float *x, const void *const *w, const int *N, int K,
                int T) {
    GvArgs<W> a = {};
    a.nm = n, a.K = K, a.x = x;
    for (int i = 0; i < n; i++) a.m[i] = GvMat<W>{ y[i], static_cast<const typename W::T *>(w[i]), N[i], 0 };
    switch (T) {
#define CASE(c) case c: return gemv_split_launch<W, c>(st, a);
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
    }
    return (int)cudaErrorInvalidValue;
}

/* the split kernel's conditions: 16-byte rows, weights and x */
template <class W>
bool gemv_vec(const void *w, const float *x, int K) {
    return K % W::E == 0 && ((uintptr_t)w & 15) == 0 && ((uintptr_t)x & 15) == 0;
}

template <class W>
int gemv_t(ck_stream st, float *y, const float *x, const void *w, int N, int K, int T, int variant) {
    const typename W::T *wp = static_cast<const typename W::T *>(w);
    const bool vec = gemv_vec<W>(w, x, K);
    if (vec && variant != 1) return gemv_many_t<W>(st, 1, &y, x, &w, &N, K, T);
    dim3 grid(blocks_for((size_t)N, GEMV_WARPS)), block(GEMV_WARPS * 32);
    switch (T) {
#define CASE(n) case n: return ck_launch(gemv_k<W, n>, grid, block, 0, st, y, x, wp, N, K, vec);
    CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
    }
    return (int)cudaErrorInvalidValue;
}

/* ---- element-wise ----------------------------------------------------------- */

template <class W>
__global__ void split_k(typename W::T *hi, typename W::T *lo, const float *x, size_t n) {
    ck_pdl_trigger();
    ck_pdl_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        W::store(hi, i, v);
        if (lo) W::store(lo, i, v - W::load(hi, i));
    }
}

template <class W>
__global__ void embed_k(float *out, const typename W::T *table, const int32_t *ids, int T, int K, float scale) {
    ck_pdl_trigger();
    ck_pdl_wait();
    for (int t = blockIdx.y; t < T; t += gridDim.y) {
        const size_t row = (size_t)ids[t] * K;
        for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < K; k += gridDim.x * blockDim.x)
            out[(size_t)t * K + k] = W::load(table, row + k) * scale;
    }
}

__global__ void rmsnorm_k(float *y, const float *x, const float *w, int n, float eps) {
    ck_pdl_trigger();
    ck_pdl_wait();
    __shared__ float part[32];
    const float *xr = x + (size_t)blockIdx.x * n;
    float *yr = y + (size_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    const float inv = 1.0f / sqrtf(ck_block_sum(ss, part) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * inv * (w ? w[i] : 1.0f);
}

/* one block per (token, head); thread i rotates pair i of every such head */
__global__ void rope_k(float *x, const int32_t *pos, int H, int D, const struct ck_rope r) {
    ck_pdl_trigger();
    ck_pdl_wait();
    const int t = blockIdx.x / H, h = blockIdx.x % H;
    ck_rope_head(x + ((size_t)t * H + h) * D, (float)pos[t], r, threadIdx.x, blockDim.x);
}


__global__ void glu_k(float *out, const float *gate, const float *up, int T, int F, int ld, int act) {
    ck_pdl_trigger();
    ck_pdl_wait();
    const size_t n = (size_t)T * F;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / F, f = i % F;
        out[i] = ck_act(gate[t * ld + f], act) * up[t * ld + f];
    }
}

/* glu_k's values rounded as split_k rounds them; V = 4: 4 consecutive
 * values per step (F and ld multiples of 4, 16-byte aligned rows) */
template <class W, int V>
__global__ void glu_split_k(typename W::T *hi, typename W::T *lo, const float *gate, const float *up, int T, int F,
                            int ld, int act) {
    ck_pdl_trigger();
    ck_pdl_wait();
    const int FV = F / V;
    const size_t n = (size_t)T * FV;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / FV, f = i % FV * V, o = t * F + f;
        float v[V];
        if constexpr (V == 4) {
            const float4 g = *reinterpret_cast<const float4 *>(gate + t * ld + f),
                         u = *reinterpret_cast<const float4 *>(up + t * ld + f);
            v[0] = ck_act(g.x, act) * u.x, v[1] = ck_act(g.y, act) * u.y, v[2] = ck_act(g.z, act) * u.z,
            v[3] = ck_act(g.w, act) * u.w;
        } else v[0] = ck_act(gate[t * ld + f], act) * up[t * ld + f];
#pragma unroll
        for (int j = 0; j < V; j++) {
            W::store(hi, o + j, v[j]);
            if (lo) W::store(lo, o + j, v[j] - W::load(hi, o + j));
        }
    }
}

__global__ void add_scaled_k(float *y, const float *x, float s, size_t n) {
    ck_pdl_trigger();
    ck_pdl_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += s * x[i];
}

__global__ void add_bias_k(float *y, const float *b, size_t n, int N) {
    ck_pdl_trigger();
    ck_pdl_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += b[i % N];
}

__global__ void softcap_k(float *x, size_t n, float cap) {
    ck_pdl_trigger();
    ck_pdl_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = cap * tanhf(x[i] / cap);
}

__global__ void scale_k(float *x, size_t n, float s) {
    ck_pdl_trigger();
    ck_pdl_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

template <class W>
__global__ void kv_store_k(typename W::T *kc, typename W::T *vc, const float *k, const float *v,
                           const int32_t *slots, int row) {
    ck_pdl_trigger();
    ck_pdl_wait();
    const int t = blockIdx.x;
    if (slots[t] < 0) return; /* a padding row of a recorded step (forward.c): nothing to store */
    const size_t dst = (size_t)slots[t] * row, src = (size_t)t * row;
    for (int i = threadIdx.x; i < row; i += blockDim.x) {
        W::store(kc, dst + i, k[src + i]);
        W::store(vc, dst + i, v[src + i]);
    }
}

/* ---- paged attention ----------------------------------------------------------- */

constexpr int ATTN_WARPS = 4;

/* The largest number of blocks a grid-stride element-wise kernel gets. */
constexpr unsigned EW_MAX_BLOCKS = 65535;

template <class KV, int DPL>
__global__ void __launch_bounds__(ATTN_WARPS * 32)
attn_k(float *out, const float *q, const typename KV::T *kc, const typename KV::T *vc, const ck_attn a,
       int n_split, float *part, int T_bound, bool vec) {
    __shared__ __align__(16) float q_sh[ATTN_WARPS][CK_ATTN_MAX_D];
    __shared__ float p_sh[ATTN_WARPS][32];
    __shared__ size_t b_sh[ATTN_WARPS][32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int H = a.H, D = a.D;
    const int item = blockIdx.x * ATTN_WARPS + warp, split = blockIdx.y;
    const int T = a.query_start[a.n_seqs];
    const int t = item / H, h = item % H;
    if (t >= T) return; /* whole warps leave together: no block-wide barrier below */
    /* the sequence of row t: the last s with query_start[s] <= t */
    int lo = 0, hi = a.n_seqs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (a.query_start[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    const int s = lo, q0 = a.query_start[s], nq = a.query_start[s + 1] - q0;
    const int qpos = a.seq_len[s] - nq + (t - q0);
    const int kstart = (a.window > 0 && qpos - a.window + 1 > 0) ? qpos - a.window + 1 : 0;
    const int nkeys = qpos - kstart + 1;
    int per = (nkeys + n_split - 1) / n_split;
    per = (per + 31) & ~31;
    const int k0 = kstart + split * per, k1 = min(qpos + 1, k0 + per);

    float *qs = q_sh[warp];
    const float *qh = q + ((size_t)t * H + h) * D;
    for (int d = lane; d < D; d += 32) qs[d] = qh[d];
    __syncwarp();
    const int hk = h / (H / a.Hkv), B = a.block_size;
    const size_t row = (size_t)a.Hkv * D;
    const int32_t *bt = a.block_table + (size_t)s * a.max_blocks;

    float m = -INFINITY, l = 0.0f, acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
    for (int j0 = k0; j0 < k1; j0 += 32) {
        const int j = j0 + lane;
        float sc = -INFINITY;
        size_t base = 0;
        if (j < k1) {
            base = ((size_t)bt[j / B] * B + (size_t)(j % B)) * row + (size_t)hk * D;
            const typename KV::T *kr = kc + base;
            float dot = 0.0f;
            if (vec) {
#pragma unroll 8
                for (int d = 0; d < D; d += KV::E) {
                    float kf[KV::E];
                    KV::unpack(*reinterpret_cast<const uint4 *>(kr + d), kf);
#pragma unroll
                    for (int e = 0; e < KV::E; e++) dot += qs[d + e] * kf[e];
                }
            } else {
#pragma unroll 4
                for (int d = 0; d < D; d++) dot += qs[d] * KV::load(kr, d);
            }
            dot *= a.scale;
            if (a.softcap > 0) dot = a.softcap * tanhf(dot / a.softcap);
            sc = dot;
        }
        const float mn = fmaxf(m, warp_max(sc)); /* finite: lane 0's key is in range */
        const float corr = expf(m - mn);
        const float p = j < k1 ? expf(sc - mn) : 0.0f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] *= corr;
        /* P·V: the run's weights and rows through shared memory, so that the
         * loads of several keys are in flight at once (a run of full 32 keys
         * unrolled) rather than one key's load waiting on the next's */
        p_sh[warp][lane] = p;
        b_sh[warp][lane] = base;
        __syncwarp();
        const int nj = min(32, k1 - j0);
        if (nj == 32) {
#pragma unroll 8
            for (int jj = 0; jj < 32; jj++) {
                const float pj = p_sh[warp][jj];
                const size_t bj = b_sh[warp][jj];
#pragma unroll
                for (int i = 0; i < DPL; i++) {
                    const int d = lane + 32 * i;
                    if (d < D) acc[i] += pj * KV::load(vc, bj + d);
                }
            }
        } else {
            for (int jj = 0; jj < nj; jj++) {
                const float pj = p_sh[warp][jj];
                const size_t bj = b_sh[warp][jj];
#pragma unroll
                for (int i = 0; i < DPL; i++) {
                    const int d = lane + 32 * i;
                    if (d < D) acc[i] += pj * KV::load(vc, bj + d);
                }
            }
        }
        __syncwarp();
        m = mn;
    }
    if (n_split == 1) {
        const float inv = 1.0f / l;
        float *oh = out + ((size_t)t * H + h) * D;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            const int d = lane + 32 * i;
            if (d < D) oh[d] = acc[i] * inv;
        }
    } else {
        float *po = part + (((size_t)split * T_bound + t) * H + h) * (size_t)(D + 2);
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            const int d = lane + 32 * i;
            if (d < D) po[d] = acc[i];
        }
        if (lane == 0) po[D] = m, po[D + 1] = l;
    }
}

/* merge the n_split partial results of each (row, head): one block each;
 * the splits' weights exp(m_s - M) go through shared memory, then every
 * thread sums its dims over the splits (independent loads, many in flight) */
constexpr int COMBINE_THREADS = 128, MAX_SPLIT = 128;

__device__ float block_reduce(float v, bool is_max, float *red) {
    v = is_max ? warp_max(v) : warp_sum(v);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads(); /* red may still be read from a previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : (is_max ? -INFINITY : 0.0f);
    return is_max ? warp_max(v) : warp_sum(v);
}

__global__ void __launch_bounds__(COMBINE_THREADS)
attn_combine_k(float *out, const float *part, const int32_t *query_start, int n_seqs, int H, int D, int n_split,
               int T_bound) {
    __shared__ float wsh[MAX_SPLIT], red[32];
    const int t = blockIdx.x / H, h = blockIdx.x % H;
    if (t >= query_start[n_seqs]) return; /* the whole block */
    const size_t stride = (size_t)T_bound * H * (D + 2);
    const float *p0 = part + ((size_t)t * H + h) * (size_t)(D + 2);
    float M = -INFINITY;
    for (int sp = threadIdx.x; sp < n_split; sp += blockDim.x) M = fmaxf(M, p0[sp * stride + D]);
    M = block_reduce(M, true, red);
    float L = 0.0f;
    for (int sp = threadIdx.x; sp < n_split; sp += blockDim.x) {
        const float ls = p0[sp * stride + D + 1];
        const float w = ls > 0 ? expf(p0[sp * stride + D] - M) : 0.0f; /* empty ranges weigh nothing */
        wsh[sp] = w;
        L += ls * w;
    }
    L = block_reduce(L, false, red); /* its barriers also publish wsh */
    const float inv = 1.0f / L;
    float *oh = out + ((size_t)t * H + h) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = 0.0f;
#pragma unroll 8
        for (int sp = 0; sp < n_split; sp++) v += p0[sp * stride + d] * wsh[sp];
        oh[d] = v * inv;
    }
}

template <class KV, int DPL>
int attn_t(ck_stream st, float *out, const float *q, const void *kc, const void *vc, const ck_attn *a, int T_bound,
           int n_split, float *part) {
    const size_t items = (size_t)T_bound * a->H;
    /* 16-byte key loads when every K row starts on a 16-byte boundary */
    const bool vec = a->D % KV::E == 0 && ((uintptr_t)kc & 15) == 0;
    dim3 grid(blocks_for(items, ATTN_WARPS), (unsigned)n_split), block(ATTN_WARPS * 32);
    attn_k<KV, DPL><<<grid, block, 0, st>>>(out, q, static_cast<const typename KV::T *>(kc),
                                            static_cast<const typename KV::T *>(vc), *a, n_split, part, T_bound, vec);
    if (n_split > 1)
        attn_combine_k<<<(unsigned)items, COMBINE_THREADS, 0, st>>>(out, part, a->query_start, a->n_seqs, a->H, a->D,
                                                                     n_split, T_bound);
    return (int)cudaGetLastError();
}

template <class KV>
int attn_d(ck_stream st, float *out, const float *q, const void *kc, const void *vc, const ck_attn *a, int T_bound,
           int n_split, float *part) {
    if (a->D <= 32) return attn_t<KV, 1>(st, out, q, kc, vc, a, T_bound, n_split, part);
    if (a->D <= 64) return attn_t<KV, 2>(st, out, q, kc, vc, a, T_bound, n_split, part);
    if (a->D <= 128) return attn_t<KV, 4>(st, out, q, kc, vc, a, T_bound, n_split, part);
    if (a->D <= CK_ATTN_MAX_D) return attn_t<KV, 8>(st, out, q, kc, vc, a, T_bound, n_split, part);
    return (int)cudaErrorInvalidValue;
}

unsigned ew_blocks(size_t n) {
    size_t b = (n + 255) / 256;
    return (unsigned)(b < 1 ? 1 : b > EW_MAX_BLOCKS ? EW_MAX_BLOCKS : b);
}

} // namespace

/* ---- entry points ------------------------------------------------------------------ */

extern "C" int ck_gemv(ck_stream st, float *y, const float *x, const void *w, enum ck_type wt, int N, int K, int T,
                       int variant) {
    if (T < 1 || T > CK_GEMV_MAX_T) return (int)cudaErrorInvalidValue;
    DISPATCH_TYPE(wt, W, return gemv_t<W>(st, y, x, w, N, K, T, variant));
    return 0;
}

extern "C" void ck_gemv_shape(int u) { gv_u = u == 4 ? 4 : 8; }

extern "C" int ck_gemv_many(ck_stream st, int n, float *const *y, const float *x, const void *const *w,
                            const int *N, enum ck_type wt, int K, int T) {
    if (T < 1 || T > CK_GEMV_MAX_T || n < 1 || n > CK_GEMV_MAX_W) return (int)cudaErrorInvalidValue;
    for (int i = 0; i < n; i++) {
        bool vec = false;
        DISPATCH_TYPE(wt, W, vec = gemv_vec<W>(w[i], x, K));
        if (!vec || N[i] < 1) return (int)cudaErrorInvalidValue;
    }
    DISPATCH_TYPE(wt, W, return gemv_many_t<W>(st, n, y, x, w, N, K, T));
    return 0;
}

extern "C" int ck_split(ck_stream st, void *hi, void *lo, const float *x, enum ck_type wt, size_t n) {
    if (!n) return 0;
    DISPATCH_TYPE(wt, W,
                  return ck_launch(split_k<W>, ew_blocks(n), 256, 0, st, static_cast<W::T *>(hi),
                                   static_cast<W::T *>(lo), x, n));
    return 0;
}

extern "C" int ck_embed(ck_stream st, float *out, const void *table, enum ck_type tt, const int32_t *ids, int T,
                        int K, float scale) {
    if (T <= 0) return 0;
    dim3 grid(blocks_for((size_t)K, 256), (unsigned)(T < 65535 ? T : 65535));
    DISPATCH_TYPE(tt, W,
                  return ck_launch(embed_k<W>, grid, 256, 0, st, out, static_cast<const W::T *>(table), ids, T, K,
                                   scale));
    return 0;
}

extern "C" int ck_rmsnorm(ck_stream st, float *y, const float *x, const float *w, int R, int n, float eps) {
    if (R <= 0) return 0;
    const int threads = n >= 1024 ? 1024 : n >= 256 ? 256 : 64;
    return ck_launch(rmsnorm_k, (unsigned)R, threads, 0, st, y, x, w, n, eps);
}

extern "C" int ck_rope(ck_stream st, float *x, const int32_t *pos, int T, int H, int D, const struct ck_rope *r) {
    if (T <= 0 || r->rot_dim <= 0) return 0;
    if (r->rot_dim / 2 > CK_ROPE_MAX_HALF) return (int)cudaErrorInvalidValue;
    const int half = r->rot_dim / 2, threads = half >= 128 ? 128 : half >= 64 ? 64 : 32;
    return ck_launch(rope_k, (unsigned)((size_t)T * H), threads, 0, st, x, pos, H, D, *r);
}

extern "C" int ck_glu(ck_stream st, float *out, const float *gate, const float *up, int T, int F, int ld, int act) {
    const size_t n = (size_t)T * F;
    if (!n) return 0;
    return ck_launch(glu_k, ew_blocks(n), 256, 0, st, out, gate, up, T, F, ld, act);
}

extern "C" int ck_glu_split(ck_stream st, void *hi, void *lo, const float *gate, const float *up, int T, int F, int ld,
                            int act, enum ck_type wt) {
    const size_t n = (size_t)T * F;
    if (!n) return 0;
    if (wt != CK_BF16 && wt != CK_F16) return (int)cudaErrorInvalidValue;
    const bool vec = F % 4 == 0 && ld % 4 == 0 && (uintptr_t)gate % 16 == 0 && (uintptr_t)up % 16 == 0;
    DISPATCH_TYPE(wt, W,
                  return vec ? ck_launch(glu_split_k<W, 4>, ew_blocks(n / 4), 256, 0, st, static_cast<W::T *>(hi),
                                         static_cast<W::T *>(lo), gate, up, T, F, ld, act)
                             : ck_launch(glu_split_k<W, 1>, ew_blocks(n), 256, 0, st, static_cast<W::T *>(hi),
                                         static_cast<W::T *>(lo), gate, up, T, F, ld, act));
    return 0;
}

extern "C" int ck_add_scaled(ck_stream st, float *y, const float *x, float s, size_t n) {
    if (!n) return 0;
    return ck_launch(add_scaled_k, ew_blocks(n), 256, 0, st, y, x, s, n);
}

extern "C" int ck_add_bias(ck_stream st, float *y, const float *bias, int T, int N) {
    const size_t n = (size_t)T * N;
    if (!n) return 0;
    return ck_launch(add_bias_k, ew_blocks(n), 256, 0, st, y, bias, n, N);
}

extern "C" int ck_softcap(ck_stream st, float *x, size_t n, float cap) {
    if (!n) return 0;
    return ck_launch(softcap_k, ew_blocks(n), 256, 0, st, x, n, cap);
}

extern "C" int ck_scale(ck_stream st, float *x, size_t n, float s) {
    if (!n) return 0;
    return ck_launch(scale_k, ew_blocks(n), 256, 0, st, x, n, s);
}

extern "C" int ck_kv_store(ck_stream st, void *kc, void *vc, enum ck_type kt, const float *k, const float *v,
                           const int32_t *slots, int T, int row) {
    if (T <= 0) return 0;
    const int threads = row >= 256 ? 256 : row >= 64 ? 64 : 32;
    DISPATCH_TYPE(kt, W,
                  return ck_launch(kv_store_k<W>, (unsigned)T, threads, 0, st, static_cast<W::T *>(kc),
                                   static_cast<W::T *>(vc), k, v, slots, row));
    return 0;
}

extern "C" int ck_attention(ck_stream st, float *out, const float *q, const void *kc, const void *vc,
                            enum ck_type kt, const struct ck_attn *a, int T_bound, int n_split, float *part) {
    if (T_bound <= 0 || a->n_seqs <= 0) return 0;
    if (a->D > CK_ATTN_MAX_D || a->H % a->Hkv || n_split < 1 || n_split > MAX_SPLIT) return (int)cudaErrorInvalidValue;
    DISPATCH_TYPE(kt, KV, return attn_d<KV>(st, out, q, kc, vc, a, T_bound, n_split, part));
    return 0;
}
