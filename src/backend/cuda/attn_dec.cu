/* attn_dec.cu — paged attention for decode steps (1 to a few query rows per
 * sequence) over 16-bit KV caches: the CUDA backend's path when no sequence
 * of the step has CUDA_FA_MIN_Q query rows (cuda.c decides; see
 * ck_attention_dec in cuda_kernels.h).
 *
 * One CTA of 4 warps per (split of the keys, KV head, row chunk, sequence).
 * Its rows are the (query token, query head) pairs that share the KV head
 * (GQA), up to R of them (R = 1, 2, 4 or 8; more rows take several chunks),
 * so every K/V row it loads serves all of them: each K/V byte of a sequence
 * is read once per chunk, not once per query head as the warp-per-row kernel
 * (kernels.cu) does.
 *
 * K/V tiles of 4096 / D keys (16 KB of K and 16 KB of V) are copied from
 * the paged blocks into shared memory by cp.async, two stages: the next
 * tile's copy runs while this one is computed (variant 2, the default;
 * variant 1 loads each lane's bytes straight into registers, 4 keys per step,
 * and is slower: BENCHMARKS.md). A K or V row is read by LPR = D / 8 lanes,
 * 16 bytes (8 bf16/f16 values) each, so a warp covers 32 / LPR rows per load
 * and each lane holds its 8 dims of q for all R rows in registers. The dot
 * products are reduced over the LPR lanes of a key by shuffles, and every
 * lane keeps its own online softmax (running max and sum per row, as
 * FlashAttention does) over the keys it saw, so no cross-lane max is needed
 * per step. At the end the key groups of a warp merge by shuffles, the 4
 * warps through shared memory, and the CTA writes either the output (one
 * split) or a partial result (sum of weighted V rows, max, sum) that
 * attn_dec_combine_k merges over the splits, as FlashDecoding does.
 *
 * Splits: the host picks n_split so that all CTAs fill the GPU a few times
 * over (batch 1 at long context); each CTA cuts its sequence's visible keys
 * into n_split ranges from the real lengths, so a graph recorded against a
 * padded bound still splits the keys it has evenly.
 *
 * Numerics are the CPU reference's (cpu_ref.c): f32 q, K/V widened exactly,
 * f32 sums, scale then softcap (cap * tanh(s / cap)), expf; only the order of
 * the sums differs.
 *
 * What this does not do: f32 caches or head dims other than 64, 128, 256
 * (the warp-per-row kernel runs those), long query ranges (the tensor-core
 * kernel, attn_fa.cu). */
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/ck_device.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

namespace {

bool dec_pdl = true; /* ck_attention_dec_pdl */


constexpr unsigned FULL = 0xffffffffu;
constexpr int DEC_WARPS = 4, DEC_MAX_SPLIT = 128;

/* 16-byte loads of 8 16-bit values widened to f32 */
struct DBF16 {
    static __device__ __forceinline__ void two(uint32_t u, float *f) {
        f[0] = __uint_as_float(u << 16), f[1] = __uint_as_float(u & 0xffff0000u);
    }
    static __device__ __forceinline__ void unpack(uint4 r, float *f) { two(r.x, f), two(r.y, f + 2), two(r.z, f + 4), two(r.w, f + 6); }
};
struct DF16 {
    static __device__ __forceinline__ void two(uint32_t u, float *f) {
        f[0] = __half2float(__ushort_as_half((unsigned short)(u & 0xffffu)));
        f[1] = __half2float(__ushort_as_half((unsigned short)(u >> 16)));
    }
    static __device__ __forceinline__ void unpack(uint4 r, float *f) { two(r.x, f), two(r.y, f + 2), two(r.z, f + 4), two(r.w, f + 6); }
};

/* Rows per CTA for G query heads per KV head and up to max_q query tokens. */
inline int rows_for(int G, int max_q) {
    const int n = G * max_q;
    return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : 8;
}

/* 16 bytes global -> shared, asynchronously (cp.async, sm_80 and later) */
__device__ __forceinline__ void cp16(uint32_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/* What every CTA of the decode kernels knows about its rows and keys. */
template <int R> struct DecRows {
    int q0, nq, r0, nr, G;
    int lo[R], hi[R]; /* row i sees keys [lo, hi]; hi = -1: no row */
    int k0, k1;       /* this split's keys */
};

/* The CTA's rows, its q slice (qr: lane's 8 dims of every row) and its key
 * range; false if the chunk has no rows. per_align: the split size is a
 * multiple of it. */
template <int R, int D>
__device__ __forceinline__ bool dec_setup(DecRows<R> &w, float (&qr)[R][8], const float *q, const ck_attn &a,
                                          int s, int hk, int rc, int split, int n_split, int dl, int per_align) {
    w.G = a.H / a.Hkv;
    w.q0 = a.query_start[s], w.nq = a.query_start[s + 1] - w.q0;
    const int L = a.seq_len[s];
    w.r0 = rc * R, w.nr = min(R, w.nq * w.G - w.r0);
    if (w.nr <= 0) return false;
#pragma unroll
    for (int i = 0; i < R; i++) {
        const int r = w.r0 + i, qi = r / w.G;
        w.hi[i] = i < w.nr ? L - w.nq + qi : -1;
        w.lo[i] = a.window > 0 ? max(0, w.hi[i] - a.window + 1) : 0;
#pragma unroll
        for (int e = 0; e < 8; e++) qr[i][e] = 0.0f;
        if (i < w.nr) {
            const float *qh = q + ((size_t)(w.q0 + qi) * a.H + (size_t)hk * w.G + r % w.G) * D + dl * 8;
#pragma unroll
            for (int e = 0; e < 8; e++) qr[i][e] = qh[e];
        }
    }
    /* this split's share of the keys any row of the chunk sees: from the
     * first row's window start to the last row's position */
    const int kstart = w.lo[0], kend = L - w.nq + (w.r0 + w.nr - 1) / w.G + 1;
    int per = (kend - kstart + n_split - 1) / n_split;
    per = (per + per_align - 1) / per_align * per_align;
    w.k0 = kstart + split * per, w.k1 = min(kend, w.k0 + per);
    return true;
}

/* One step of a lane: U keys j = j0 + u * KPW (kload(u), vload(u) give its
 * 16 bytes of K and V): scores against the R rows reduced over the LPR
 * lanes of the key, scale, softcap, mask, then the lane's online softmax
 * and P·V. */
template <class KV, int LPR, int R, int U, class LK, class LV>
__device__ __forceinline__ void dec_step(const LK &kload, const LV &vload, int j0, const DecRows<R> &w,
                                         const float (&qr)[R][8], float (&m)[R], float (&l)[R],
                                         float (&acc)[R][8], float scale, float softcap) {
    constexpr int KPW = 32 / LPR;
    float sc[U][R];
#pragma unroll
    for (int u = 0; u < U; u++) {
        float kf[8];
        KV::unpack(kload(u), kf);
#pragma unroll
        for (int i = 0; i < R; i++) {
            float d = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; e++) d += qr[i][e] * kf[e];
            sc[u][i] = d;
        }
    }
#pragma unroll
    for (int o = LPR / 2; o > 0; o >>= 1)
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int i = 0; i < R; i++) sc[u][i] += __shfl_xor_sync(FULL, sc[u][i], o);
#pragma unroll
    for (int i = 0; i < R; i++) {
        float mx = m[i];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j = j0 + u * KPW;
            float x = sc[u][i] * scale;
            if (softcap > 0) x = softcap * tanhf(x / softcap);
            x = (j < w.k1 && j >= w.lo[i] && j <= w.hi[i]) ? x : -INFINITY;
            sc[u][i] = x;
            mx = fmaxf(mx, x);
        }
        if (mx == -INFINITY) { /* nothing visible to row i yet */
#pragma unroll
            for (int u = 0; u < U; u++) sc[u][i] = 0.0f;
            continue;
        }
        const float corr = expf(m[i] - mx); /* m = -inf: 0 */
        l[i] *= corr;
#pragma unroll
        for (int e = 0; e < 8; e++) acc[i][e] *= corr;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const float p = expf(sc[u][i] - mx);
            sc[u][i] = p;
            l[i] += p;
        }
        m[i] = mx;
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
        float vf[8];
        KV::unpack(vload(u), vf);
#pragma unroll
        for (int i = 0; i < R; i++)
#pragma unroll
            for (int e = 0; e < 8; e++) acc[i][e] += sc[u][i] * vf[e];
    }
}

/* The end of both kernels: the key groups of each warp merge by shuffles
 * (lanes dl, dl + LPR, ...), the warps through shared memory (o_sh: [4][R][D]
 * floats, m_sh, l_sh: [4][R]), and the CTA writes its rows (one split) or
 * this split's partials: o [split][T_bound][H][D], then (max, sum)
 * [split][T_bound][H][2]. A row no key of the split reached has sum 0. */
template <int LPR, int R>
__device__ __forceinline__ void dec_finish(float (&m)[R], float (&l)[R], float (&acc)[R][8], const DecRows<R> &w,
                                           float *o_sh, float *m_sh, float *l_sh, float *out, float *part,
                                           const ck_attn &a, int hk, int split, int n_split, int T_bound) {
    constexpr int D = LPR * 8;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, kg = lane / LPR, dl = lane % LPR;
#pragma unroll
    for (int i = 0; i < R; i++) {
        float M = m[i];
#pragma unroll
        for (int o = LPR; o < 32; o <<= 1) M = fmaxf(M, __shfl_xor_sync(FULL, M, o));
        const float f = m[i] == -INFINITY ? 0.0f : expf(m[i] - M);
        l[i] *= f;
#pragma unroll
        for (int e = 0; e < 8; e++) acc[i][e] *= f;
#pragma unroll
        for (int o = LPR; o < 32; o <<= 1) {
            l[i] += __shfl_xor_sync(FULL, l[i], o);
#pragma unroll
            for (int e = 0; e < 8; e++) acc[i][e] += __shfl_xor_sync(FULL, acc[i][e], o);
        }
        m[i] = M;
    }
    if (kg == 0) {
#pragma unroll
        for (int i = 0; i < R; i++) {
#pragma unroll
            for (int e = 0; e < 8; e++) o_sh[(warp * R + i) * D + dl * 8 + e] = acc[i][e];
            if (lane == 0) m_sh[warp * R + i] = m[i], l_sh[warp * R + i] = l[i];
        }
    }
    __syncthreads();
    const size_t items = (size_t)T_bound * a.H;
    for (int idx = threadIdx.x; idx < w.nr * D; idx += DEC_WARPS * 32) {
        const int i = idx / D, d = idx % D, r = w.r0 + i;
        const int t = w.q0 + r / w.G, h = hk * w.G + r % w.G;
        float M = -INFINITY;
#pragma unroll
        for (int ww = 0; ww < DEC_WARPS; ww++) M = fmaxf(M, m_sh[ww * R + i]);
        float Ls = 0.0f, v = 0.0f;
#pragma unroll
        for (int ww = 0; ww < DEC_WARPS; ww++) {
            const float f = m_sh[ww * R + i] == -INFINITY ? 0.0f : expf(m_sh[ww * R + i] - M);
            Ls += l_sh[ww * R + i] * f;
            v += o_sh[(ww * R + i) * D + d] * f;
        }
        const size_t item = (size_t)t * a.H + h;
        if (n_split == 1) {
            out[item * D + d] = v / Ls;
        } else {
            part[((size_t)split * items + item) * D + d] = v;
            if (d == 0) {
                float *ml = part + (size_t)n_split * items * D + ((size_t)split * items + item) * 2;
                ml[0] = M, ml[1] = Ls;
            }
        }
    }
}

/* Empty online-softmax state of R rows: running max, sum and 8 output dims. */
template <int R>
__device__ __forceinline__ void online_init(float (&m)[R], float (&l)[R], float (&acc)[R][8]) {
#pragma unroll
    for (int i = 0; i < R; i++) {
        m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) acc[i][e] = 0.0f;
    }
}

/* Variant 1: each lane loads its K/V bytes straight into registers, U keys
 * per step (all loads of a step in flight before its math). */
template <class KV, int LPR, int R, int U>
__global__ void __launch_bounds__(DEC_WARPS * 32)
attn_dec_k(float *__restrict__ out, const float *__restrict__ q, const uint16_t *__restrict__ kc,
           const uint16_t *__restrict__ vc, const ck_attn a, int n_split, int n_rc, float *__restrict__ part,
           int T_bound) {
    ck_pdl_wait(); /* a no-op unless launched with PDL (ck_attention_dec_pdl) */
    constexpr int D = LPR * 8, KPW = 32 / LPR, STEP = KPW * U;
    __shared__ float m_sh[DEC_WARPS * R], l_sh[DEC_WARPS * R];
    __shared__ __align__(16) float o_sh[DEC_WARPS * R * D];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, kg = lane / LPR, dl = lane % LPR;
    const int split = blockIdx.x, hk = blockIdx.y / n_rc, rc = blockIdx.y % n_rc, s = blockIdx.z;
    DecRows<R> w;
    float qr[R][8];
    if (!dec_setup<R, D>(w, qr, q, a, s, hk, rc, split, n_split, dl, 16)) return; /* the whole CTA */
    const int32_t *bt = a.block_table + (size_t)s * a.max_blocks;
    const int B = a.block_size;
    const size_t rowst = (size_t)a.Hkv * D, hoff = (size_t)hk * D + (size_t)dl * 8;
    float m[R], l[R], acc[R][8];
    online_init<R>(m, l, acc);
    for (int j0 = w.k0 + warp * STEP + kg; j0 - kg < w.k1; j0 += DEC_WARPS * STEP) {
        uint4 kr[U], vr[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j = j0 + u * KPW;
            if (j < w.k1) {
                const size_t base = ((size_t)bt[j / B] * B + (size_t)(j % B)) * rowst + hoff;
                kr[u] = __ldg(reinterpret_cast<const uint4 *>(kc + base));
                vr[u] = __ldg(reinterpret_cast<const uint4 *>(vc + base));
            } else {
                kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
            }
        }
        dec_step<KV, LPR, R, U>([&](int u) { return kr[u]; }, [&](int u) { return vr[u]; }, j0, w, qr, m, l, acc,
                                a.scale, a.softcap);
    }
    dec_finish<LPR, R>(m, l, acc, w, o_sh, m_sh, l_sh, out, part, a, hk, split, n_split, T_bound);
}

/* Variant 2: tiles of TK = 4096 / D keys (16 KB of K and of V) copied into
 * shared memory by cp.async, two stages (the next tile's copy runs while
 * this one is computed); each warp takes 4 steps of KPW keys of a tile.
 * Keys past the range copy the last key (finite data; masked). The tiles'
 * memory holds the warps' partial sums at the end. */
template <class KV, int LPR, int R>
__global__ void __launch_bounds__(DEC_WARPS * 32)
attn_dec2_k(float *__restrict__ out, const float *__restrict__ q, const uint16_t *__restrict__ kc,
            const uint16_t *__restrict__ vc, const ck_attn a, int n_split, int n_rc, float *__restrict__ part,
            int T_bound) {
    ck_pdl_wait(); /* a no-op unless launched with PDL (ck_attention_dec_pdl) */
    constexpr int D = LPR * 8, KPW = 32 / LPR, U = 4, STEP = KPW * U, TK = DEC_WARPS * STEP;
    constexpr int CH = TK * LPR / (DEC_WARPS * 32); /* 16-byte chunks of K (and of V) per thread per tile */
    static_assert(TK * D == 4096 && CH * DEC_WARPS * 32 == TK * LPR, "tile shape");
    static_assert(DEC_WARPS * R * D * 4 <= 4 * TK * D * 2, "partials fit in the tiles' memory");
    __shared__ __align__(16) uint16_t tiles[4 * TK * D]; /* [stage][K, V][TK][D] */
    __shared__ float m_sh[DEC_WARPS * R], l_sh[DEC_WARPS * R];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, kg = lane / LPR, dl = lane % LPR;
    const int split = blockIdx.x, hk = blockIdx.y / n_rc, rc = blockIdx.y % n_rc, s = blockIdx.z;
    DecRows<R> w;
    float qr[R][8];
    if (!dec_setup<R, D>(w, qr, q, a, s, hk, rc, split, n_split, dl, TK)) return; /* the whole CTA */
    const int32_t *bt = a.block_table + (size_t)s * a.max_blocks;
    const int B = a.block_size;
    const size_t rowst = (size_t)a.Hkv * D;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(tiles);
    float m[R], l[R], acc[R][8];
    online_init<R>(m, l, acc);
    const int ntiles = w.k1 > w.k0 ? (w.k1 - w.k0 + TK - 1) / TK : 0;
    auto issue = [&](int tile) {
        const int tk0 = w.k0 + tile * TK, stage = tile & 1;
#pragma unroll
        for (int c0 = 0; c0 < CH; c0++) {
            const int c = threadIdx.x + c0 * DEC_WARPS * 32, kk = c / LPR, pc = c % LPR;
            const int j = min(tk0 + kk, w.k1 - 1);
            const size_t src = ((size_t)bt[j / B] * B + (size_t)(j % B)) * rowst + (size_t)hk * D + (size_t)pc * 8;
            const uint32_t dk = sbase + (uint32_t)((stage * 2 * TK * D + kk * D + pc * 8) * 2);
            cp16(dk, kc + src);
            cp16(dk + TK * D * 2, vc + src);
        }
        cp_commit();
    };
    if (ntiles > 0) issue(0);
    for (int it = 0; it < ntiles; it++) {
        if (it + 1 < ntiles) {
            issue(it + 1);
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        const uint16_t *ks = tiles + (it & 1) * 2 * TK * D, *vs = ks + TK * D;
        const int kk0 = warp * STEP + kg;
        dec_step<KV, LPR, R, U>(
            [&](int u) { return *reinterpret_cast<const uint4 *>(ks + (kk0 + u * KPW) * D + dl * 8); },
            [&](int u) { return *reinterpret_cast<const uint4 *>(vs + (kk0 + u * KPW) * D + dl * 8); },
            w.k0 + it * TK + kk0, w, qr, m, l, acc, a.scale, a.softcap);
        __syncthreads(); /* this stage is refilled by the next iteration's copy */
    }
    dec_finish<LPR, R>(m, l, acc, w, reinterpret_cast<float *>(tiles), m_sh, l_sh, out, part, a, hk, split, n_split,
                       T_bound);
}

__device__ float dec_block_reduce(float v, bool is_max, float *red) {
    for (int o = 16; o > 0; o >>= 1) {
        const float x = __shfl_xor_sync(FULL, v, o);
        v = is_max ? fmaxf(v, x) : v + x;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads(); /* red may still be read from a previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : (is_max ? -INFINITY : 0.0f);
    for (int o = 16; o > 0; o >>= 1) {
        const float x = __shfl_xor_sync(FULL, v, o);
        v = is_max ? fmaxf(v, x) : v + x;
    }
    return v;
}

/* Merge the n_split partials of each (row, head), one block of 256 threads
 * each: thread sp reads split sp's (max, sum), the splits' weights exp(m -
 * M) go through shared memory, then groups of D / 4 threads each sum a
 * share of the splits' o rows by float4 (many loads in flight at once) and
 * the groups' sums meet in shared memory. A split that saw no key of the
 * row has sum 0 and weighs nothing. */
constexpr int CMB_THREADS = 256;
__global__ void __launch_bounds__(CMB_THREADS)
attn_dec_combine_k(float *out, const float *part, const int32_t *query_start, int n_seqs, int H, int D, int n_split,
                   int T_bound) {
    ck_pdl_wait();
    __shared__ float wsh[DEC_MAX_SPLIT], red[32];
    __shared__ float4 acc_sh[CMB_THREADS];
    const int t = blockIdx.x / H, h = blockIdx.x % H;
    if (t >= query_start[n_seqs]) return; /* the whole block */
    const size_t items = (size_t)T_bound * H, item = (size_t)t * H + h;
    const float *ml = part + (size_t)n_split * items * D;
    const int sp = threadIdx.x;
    float ms = -INFINITY, ls = 0.0f;
    if (sp < n_split) ms = ml[((size_t)sp * items + item) * 2], ls = ml[((size_t)sp * items + item) * 2 + 1];
    const float M = dec_block_reduce(ms, true, red);
    const float wt = ls > 0 ? expf(ms - M) : 0.0f;
    if (sp < n_split) wsh[sp] = wt;
    const float L = dec_block_reduce(ls * wt, false, red); /* its barriers also publish wsh */
    const int nd4 = D / 4, c = threadIdx.x % nd4, g = threadIdx.x / nd4, NG = CMB_THREADS / nd4;
    const float4 *p4 = reinterpret_cast<const float4 *>(part + item * D) + c;
    const size_t s4 = items * D / 4;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
    for (int k = g; k < n_split; k += NG) {
        const float4 x = p4[k * s4];
        const float ww = wsh[k];
        v.x += x.x * ww, v.y += x.y * ww, v.z += x.z * ww, v.w += x.w * ww;
    }
    acc_sh[threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.x < nd4) {
        float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int gg = 0; gg < NG; gg++) {
            const float4 x = acc_sh[gg * nd4 + c];
            sum.x += x.x, sum.y += x.y, sum.z += x.z, sum.w += x.w;
        }
        const float inv = 1.0f / L;
        float *oh = out + item * D + c * 4;
        oh[0] = sum.x * inv, oh[1] = sum.y * inv, oh[2] = sum.z * inv, oh[3] = sum.w * inv;
    }
}

template <class KV, int LPR, int R>
void dec_launch(ck_stream st, float *out, const float *q, const void *kc, const void *vc, const ck_attn *a,
                int T_bound, int n_rc, int n_split, float *part, int variant) {
    const dim3 grid((unsigned)n_split, (unsigned)(a->Hkv * n_rc), (unsigned)a->n_seqs);
    const uint16_t *k = static_cast<const uint16_t *>(kc), *v = static_cast<const uint16_t *>(vc);
    if (variant == 1) {
        constexpr int U = R >= 8 ? 2 : R >= 4 ? 4 : 8;
        ck_launch_if(dec_pdl, attn_dec_k<KV, LPR, R, U>, grid, DEC_WARPS * 32, 0, st, out, q, k, v, *a, n_split, n_rc,
                     part, T_bound);
    } else {
        ck_launch_if(dec_pdl, attn_dec2_k<KV, LPR, R>, grid, DEC_WARPS * 32, 0, st, out, q, k, v, *a, n_split, n_rc,
                     part, T_bound);
    }
}

template <class KV, int LPR>
void dec_rows(ck_stream st, float *out, const float *q, const void *kc, const void *vc, const ck_attn *a,
              int T_bound, int R, int n_rc, int n_split, float *part, int variant) {
    switch (R) {
    case 1: dec_launch<KV, LPR, 1>(st, out, q, kc, vc, a, T_bound, n_rc, n_split, part, variant); break;
    case 2: dec_launch<KV, LPR, 2>(st, out, q, kc, vc, a, T_bound, n_rc, n_split, part, variant); break;
    case 4: dec_launch<KV, LPR, 4>(st, out, q, kc, vc, a, T_bound, n_rc, n_split, part, variant); break;
    default: dec_launch<KV, LPR, 8>(st, out, q, kc, vc, a, T_bound, n_rc, n_split, part, variant); break;
    }
}

template <class KV>
void dec_dims(ck_stream st, float *out, const float *q, const void *kc, const void *vc, const ck_attn *a,
              int T_bound, int R, int n_rc, int n_split, float *part, int variant) {
    switch (a->D) {
    case 64: dec_rows<KV, 8>(st, out, q, kc, vc, a, T_bound, R, n_rc, n_split, part, variant); break;
    case 128: dec_rows<KV, 16>(st, out, q, kc, vc, a, T_bound, R, n_rc, n_split, part, variant); break;
    default: dec_rows<KV, 32>(st, out, q, kc, vc, a, T_bound, R, n_rc, n_split, part, variant); break;
    }
}

} // namespace

extern "C" void ck_attention_dec_pdl(int on) { dec_pdl = on != 0; }

extern "C" int ck_attention_dec_runs(enum ck_type kt, const struct ck_attn *a, const void *kc, const void *vc) {
    return (kt == CK_BF16 || kt == CK_F16) && (a->D == 64 || a->D == 128 || a->D == 256) && a->Hkv > 0 &&
           a->H % a->Hkv == 0 && ((uintptr_t)kc & 15) == 0 && ((uintptr_t)vc & 15) == 0;
}

extern "C" int ck_attention_dec_ctas(const struct ck_attn *a, int max_q) {
    const int G = a->H / a->Hkv, R = rows_for(G, max_q);
    return a->n_seqs * a->Hkv * ((G * max_q + R - 1) / R);
}

extern "C" int ck_attention_dec(ck_stream st, float *out, const float *q, const void *kc, const void *vc,
                                enum ck_type kt, const struct ck_attn *a, int T_bound, int max_q, int n_split,
                                float *part, int variant) {
    if (T_bound <= 0 || a->n_seqs <= 0 || max_q <= 0) return 0;
    if (!ck_attention_dec_runs(kt, a, kc, vc) || n_split < 1 || n_split > DEC_MAX_SPLIT || (n_split > 1 && !part))
        return (int)cudaErrorInvalidValue;
    const int G = a->H / a->Hkv, R = rows_for(G, max_q), n_rc = (G * max_q + R - 1) / R;
    if ((size_t)a->Hkv * n_rc > 65535 || a->n_seqs > 65535) return (int)cudaErrorInvalidValue;
    if (kt == CK_BF16) dec_dims<DBF16>(st, out, q, kc, vc, a, T_bound, R, n_rc, n_split, part, variant);
    else dec_dims<DF16>(st, out, q, kc, vc, a, T_bound, R, n_rc, n_split, part, variant);
    if (n_split > 1)
        ck_launch_if(dec_pdl, attn_dec_combine_k, (unsigned)((size_t)T_bound * a->H), CMB_THREADS, 0, st, out,
                     (const float *)part, a->query_start, a->n_seqs, a->H, a->D, n_split, T_bound);
    return (int)cudaGetLastError();
}
