/* attn_dec.cu — paged attention for decode steps (1 to a few query rows per
 * sequence) over 16-bit KV caches: the CUDA backend's path when no sequence
 * of the step has CUDA_FA_MIN_Q query rows (cuda.c decides; see
 * ck_attention_dec in cuda_kernels.h).
 *
 * One CTA of 4 warps per (split of the keys, KV head, row chunk, sequence).
 * Its rows are the (query token, query head) pairs that share the KV head
 * (GQA), so every K/V row it loads serves all of them: each K/V byte of a
 * sequence is read once per chunk, not once per query head as the
 * warp-per-row kernel (kernels.cu) does.
 *
 * Variant 3, the default (head dims 64 and 128, power-of-two blocks): tensor
 * cores, attn_fa.cu's numerics (q and P rounded to the KV type, f32 sums).
 * A chunk is up to 16 rows, one m16 tile; K/V tiles of 64 keys are copied
 * into shared memory by cp.async (two stages; variant 4: three), and warp w
 * computes keys 16 w .. 16 w + 15 of each tile with mma.sync (S = Q K^T,
 * mask, online softmax on its 16 x 16 scores, O += P V), then the warps
 * merge through shared memory. Overlap switches (ck_attention_dec_flags):
 * the keys of earlier steps are copied before the PDL wait, and the merge
 * kernel may launch once the main loop is done.
 *
 * Variants 1 and 2 (every head dim the kernel takes; exact f32 products, the
 * CPU reference's arithmetic): up to R = 1, 2, 4 or 8 rows per chunk, each
 * lane owning 8 dims of every row. K/V tiles of 4096 / D keys are copied
 * into shared memory by cp.async, two stages (variant 2; variant 1 loads
 * each lane's bytes straight into registers, 4 keys per step). A K or V row
 * is read by LPR = D / 8 lanes, 16 bytes each; the dot products are reduced
 * over the LPR lanes by shuffles, and every lane keeps its own online
 * softmax (running max and sum per row) over the keys it saw. At the end the
 * key groups of a warp merge by shuffles, the 4 warps through shared memory.
 * This costs ~75 instructions per key per warp, which is what made batch 1
 * issue-bound (Nsight Compute: 12% occupancy, 0.59 issued per scheduler) and
 * what variant 3 removes.
 *
 * Every variant writes either the output (one split) or a partial result
 * (sum of weighted V rows, max in natural units of the scaled score, sum)
 * that attn_dec_combine_k merges over the splits, as FlashDecoding does.
 *
 * Splits: the host picks n_split so that all CTAs fill the GPU a few times
 * over (batch 1 at long context); each CTA cuts its sequence's visible keys
 * into n_split ranges from the real lengths, so a graph recorded against a
 * padded bound still splits the keys it has evenly.
 *
 * The step's own keys come from the pools, written by the kernel before
 * (qkv_prep or kv_store), or with PREP (ck_attention_dec_prep, variant 3)
 * from the raw projections: each CTA does qkv_prep's work for its q rows and
 * the step's keys in its range, and the one CTA that owns a key stores it.
 *
 * What this does not do: f32 caches or head dims other than 64, 128, 256
 * (the warp-per-row kernel runs those), long query ranges (the tensor-core
 * kernel, attn_fa.cu). */
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/ck_device.cuh"
#include "backend/cuda/ck_mma.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

namespace {

bool dec_pdl = true; /* ck_attention_dec_pdl */
int dec_flags = 0;    /* ck_attention_dec_flags */


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

/* One output element of a CTA's row: the attention output (one split) or
 * this split's partial, the sum of weighted V rows, and at d = 0 the max
 * (natural units of the scaled score) and the sum: o [split][T_bound][H][D],
 * then (max, sum) [split][T_bound][H][2]. */
__device__ __forceinline__ void dec_store(float *out, float *part, size_t item, int d, int D, float v, float M,
                                          float Ls, int split, int n_split, size_t items) {
    if (n_split == 1) {
        out[item * D + d] = v / Ls;
        return;
    }
    part[((size_t)split * items + item) * D + d] = v;
    if (d == 0) {
        float *ml = part + (size_t)n_split * items * D + ((size_t)split * items + item) * 2;
        ml[0] = M, ml[1] = Ls;
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
        dec_store(out, part, (size_t)t * a.H + h, d, D, v, M, Ls, split, n_split, items);
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
            ck_cp16(dk, kc + src, 16);
            ck_cp16(dk + TK * D * 2, vc + src, 16);
        }
        ck_cp_commit();
    };
    if (ntiles > 0) issue(0);
    for (int it = 0; it < ntiles; it++) {
        if (it + 1 < ntiles) {
            issue(it + 1);
            ck_cp_wait<1>();
        } else {
            ck_cp_wait<0>();
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

/* Variant 3 (the default for head dims 64 and 128 and power-of-two blocks):
 * tensor cores, as attn_fa.cu. The CTA's rows (up to 16) are one m16 tile,
 * q rounded to the KV type once; tiles of BN = 64 keys go into shared memory
 * by cp.async (NS stages: a batch-1 CTA's whole key range is in flight at
 * once), and warp w takes keys 16 w .. 16 w + 15 of each tile: S = Q K^T by
 * mma (D / 16 k-steps of two n8 blocks), mask and online softmax on its
 * 16 x 16 scores (the row max over the quad by two shuffles), P rounded to
 * the KV type as the A operand of O += P V. So a key costs a few
 * instructions per warp where variants 1 and 2 spend ~75 (16 lanes each
 * recomputing its softmax, 4 shuffle levels per dot product). The 4 warps'
 * states merge through shared memory (the stages' memory) as dec_finish
 * does; the partial format is the other variants' (maxima in natural units
 * of the scaled score). Numerics: attn_fa.cu's (q and P 16-bit). */
constexpr int DEC3_BN = 64;

template <int D, int NS> constexpr int dec3_smem() { return 16 * D * 2 + NS * 2 * DEC3_BN * D * 2; }

/* The step's qkv_prep folded into variant 3 (ck_attention_dec_prep): q, k, v
 * are the raw projections (read, not changed), a's other fields as qkv_prep's.
 * Empty for the plain kernel. */
template <bool PREP> struct DecPrep {};
template <> struct DecPrep<true> {
    ck_qkv a;
    struct ck_rope r;
};

template <class E, int D, int NS, bool PREP>
__global__ void __launch_bounds__(DEC_WARPS * 32)
attn_dec3_k(float *__restrict__ out, const float *__restrict__ q, uint16_t *__restrict__ kc,
            uint16_t *__restrict__ vc, const ck_attn a, int n_split, int n_rc, float *__restrict__ part,
            int T_bound, int lb, int flags, const DecPrep<PREP> pp) {
    /* CK_DEC_PREFETCH: the keys of earlier steps are copied before the PDL
     * wait. Kernels of this step may still run then (those that trigger
     * their dependents at their start, back to the last one that does not:
     * the previous layer's merge kernel), but within a step only this
     * layer's qkv_prep (or kv_store, or this kernel with PREP) writes this
     * layer's cache, and only the step's own keys, which are copied after the
     * wait (PREP: computed, never read from the pools); earlier steps ended
     * before the host read their tokens; the tables and lengths are host
     * uploads, which every kernel after them in the stream follows. */
    const bool pre = flags & CK_DEC_PREFETCH;
    if (!pre) ck_pdl_wait(); /* a no-op unless launched with PDL (ck_attention_dec_pdl) */
    constexpr int BN = DEC3_BN, CPR = D / 8, DB = D / 8, KT = D / 16, TILE = BN * D * 2;
    static_assert(DEC_WARPS * 16 == BN, "a warp per 16 keys of a tile");
    static_assert(DEC_WARPS * 16 * D * 4 <= NS * 2 * TILE, "the warps' outputs fit in the stages");
    extern __shared__ __align__(128) unsigned char smem[];
    __shared__ float m_sh[DEC_WARPS][16], l_sh[DEC_WARPS][16];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g8 = lane >> 2, t4 = lane & 3;
    const int split = blockIdx.x, hk = blockIdx.y / n_rc, rc = blockIdx.y % n_rc, s = blockIdx.z;
    const int G = a.H / a.Hkv, q0 = a.query_start[s], nq = a.query_start[s + 1] - q0, L = a.seq_len[s];
    const int r0 = rc * 16, nr = min(16, nq * G - r0);
    if (nr <= 0) { /* the whole CTA; after the wait, as the PDL contract asks of every exit */
        if (pre) ck_pdl_wait();
        return;
    }

    /* this split's keys: its share of the range any row of the chunk sees,
     * from the first row's window start to the last row's position */
    const int kstart = a.window > 0 ? max(0, L - nq + r0 / G - a.window + 1) : 0;
    const int kend = L - nq + (r0 + nr - 1) / G + 1;
    int per = (kend - kstart + n_split - 1) / n_split;
    per = (per + BN - 1) / BN * BN;
    const int k0 = kstart + split * per, k1 = min(kend, k0 + per);
    const int nt = k1 > k0 ? (k1 - k0 + BN - 1) / BN : 0;

    const uint32_t aq = (uint32_t)__cvta_generic_to_shared(smem), ak = aq + 16 * D * 2;
    const int32_t *bt = a.block_table + (size_t)s * a.max_blocks;
    const size_t rowst = (size_t)a.Hkv * D;
    const int bmask = (1 << lb) - 1;
    /* keys from kfresh on are this step's (written by the kernel before, or
     * with PREP computed here from the raw k and v) */
    const int kfresh = L - nq;
    /* which keys of the tile to copy: 0 all, 1 those before kfresh, 2 the
     * rest; keys past k1 are zeros (and masked). PREP copies only the first
     * kind (prep_fresh computes the rest). */
    auto load_kv = [&](int st, int j0, int part_sel) {
        if (PREP && part_sel == 0) part_sel = 1;
#pragma unroll
        for (int i = 0; i < BN * CPR / (DEC_WARPS * 32); i++) {
            const int idx = tid + i * DEC_WARPS * 32, r = idx / CPR, ch = idx % CPR, j = j0 + r;
            if (part_sel && (j < k1 && j >= kfresh) != (part_sel == 2)) continue;
            size_t off = 0;
            int bytes = 0;
            if (j < k1) off = (size_t)((bt[j >> lb] << lb) | (j & bmask)) * rowst + (size_t)(hk * D + ch * 8), bytes = 16;
            const uint32_t o = ak + (uint32_t)(st * 2 * TILE) + ck_swz<D>(r, ch);
            ck_cp16(o, kc + off, bytes);
            ck_cp16(o + TILE, vc + off, bytes);
        }
    };
    /* PREP: this step's keys of the tile starting at j0, a warp per key:
     * qkv_prep's k (bias, norm, RoPE) and v (bias) rounded into the stage as
     * the copy would have put them, and stored to the pools by the one CTA
     * that owns the key: the chunk of the first row of its query token (that
     * chunk's range holds the key, and one of its splits does). Slot < 0: a
     * padding row of a recorded step, used here but never stored. */
    __shared__ float prep_sh[PREP ? DEC_WARPS : 1][PREP ? D : 1];
    auto prep_fresh = [&](int st, int j0) {
        if constexpr (PREP) {
            float *xs = prep_sh[warp];
            const int jb = max(j0, kfresh), je = min(j0 + BN, k1);
            for (int j = jb + warp; j < je; j += DEC_WARPS) {
                const int qi = j - kfresh, t = q0 + qi, slot = pp.a.slots[t];
                ck_prep_head(xs, pp.a.k + ((size_t)t * a.Hkv + hk) * D, pp.a.bk ? pp.a.bk + (size_t)hk * D : nullptr,
                             pp.a.kn, pp.a.eps, D, pp.a.rope, pp.r, (float)pp.a.pos[t], lane);
                const float *vr = pp.a.v + ((size_t)t * a.Hkv + hk) * D;
                const float *bv = pp.a.bv ? pp.a.bv + (size_t)hk * D : nullptr;
                const bool store = slot >= 0 && rc == qi * G / 16;
                const size_t dst = (size_t)slot * rowst + (size_t)hk * D;
                unsigned char *sk = smem + st * 2 * TILE;
#pragma unroll
                for (int d = 2 * lane; d < D; d += 64) {
                    float v0 = vr[d], v1 = vr[d + 1];
                    if (bv) v0 += bv[d], v1 += bv[d + 1];
                    const uint32_t kw = E::pack(xs[d], xs[d + 1]), vw = E::pack(v0, v1);
                    const uint32_t o = 16 * D * 2 + ck_swz<D>(j - j0, d >> 3) + (d & 7) * 2;
                    *reinterpret_cast<uint32_t *>(sk + o) = kw;
                    *reinterpret_cast<uint32_t *>(sk + o + TILE) = vw;
                    if (store)
                        *reinterpret_cast<uint32_t *>(kc + dst + d) = kw, *reinterpret_cast<uint32_t *>(vc + dst + d) = vw;
                }
                __syncwarp(); /* xs is the next key's */
            }
        }
    };
    if (pre) { /* the first NS tiles as one group: the old keys, the wait, this step's */
#pragma unroll
        for (int st = 0; st < NS; st++)
            if (st < nt) load_kv(st, k0 + st * BN, 1);
        ck_pdl_wait();
#pragma unroll
        for (int st = 0; st < NS; st++)
            if (st < nt) {
                if (PREP) prep_fresh(st, k0 + st * BN);
                else load_kv(st, k0 + st * BN, 2);
            }
        ck_cp_commit();
    } else {
#pragma unroll
        for (int st = 0; st < NS; st++) {
            if (st < nt) load_kv(st, k0 + st * BN, 0), prep_fresh(st, k0 + st * BN);
            ck_cp_commit(); /* one group per tile slot, empty or not: the waits below count them */
        }
    }

    /* Q: rows (query token, head of the group), 16-bit, rows past nr zero;
     * PREP: a warp per row prepares it from the raw q first */
    if constexpr (PREP) {
        float *xs = prep_sh[warp];
        for (int i = warp; i < 16; i += DEC_WARPS) {
            const int r = r0 + i, t = q0 + r / G, h = hk * G + r % G;
            if (i < nr)
                ck_prep_head(xs, pp.a.q + ((size_t)t * a.H + h) * D, pp.a.bq ? pp.a.bq + (size_t)h * D : nullptr,
                             pp.a.qn, pp.a.eps, D, pp.a.rope, pp.r, (float)pp.a.pos[t], lane);
            else {
                for (int d = lane; d < D; d += 32) xs[d] = 0.0f;
                __syncwarp();
            }
#pragma unroll
            for (int d = 2 * lane; d < D; d += 64)
                *reinterpret_cast<uint32_t *>(smem + ck_swz<D>(i, d >> 3) + (d & 7) * 2) = E::pack(xs[d], xs[d + 1]);
            __syncwarp();
        }
    } else
    for (int idx = tid; idx < 16 * (D / 4); idx += DEC_WARPS * 32) {
        const int i = idx / (D / 4), c4 = idx % (D / 4), r = r0 + i;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (i < nr)
            v = *reinterpret_cast<const float4 *>(q + ((size_t)(q0 + r / G) * a.H + (size_t)hk * G + r % G) * D + c4 * 4);
        uint2 w;
        w.x = E::pack(v.x, v.y), w.y = E::pack(v.z, v.w);
        *reinterpret_cast<uint2 *>(smem + ck_swz<D>(i, c4 >> 1) + (c4 & 1) * 8) = w;
    }
    /* this thread's rows g8 and g8 + 8: the keys they see, [lo, hi] (hi = -1: no row) */
    int lo[2], hi[2];
#pragma unroll
    for (int h2 = 0; h2 < 2; h2++) {
        const int i = g8 + 8 * h2;
        hi[h2] = i < nr ? L - nq + (r0 + i) / G : -1;
        lo[h2] = a.window > 0 ? max(0, hi[h2] - a.window + 1) : 0;
    }
    __syncthreads();
    const int l7 = lane & 7, l8 = (lane >> 3) & 1, l16 = lane >> 4;
    const uint32_t qoff = (uint32_t)((l7 + l8 * 8) * D * 2 + ((l16 ^ l7) << 4));
    const uint32_t koff = (uint32_t)((warp * 16 + l7 + l16 * 8) * D * 2 + ((l8 ^ l7) << 4));
    const uint32_t voff = (uint32_t)((warp * 16 + l7 + l8 * 8) * D * 2 + ((l16 ^ l7) << 4));
    uint32_t af[KT][4];
#pragma unroll
    for (int kk = 0; kk < KT; kk++) ck_ldsm4(af[kk], aq + (qoff ^ (kk << 5)));

    float o[DB][4], mrow[2] = { -INFINITY, -INFINITY }, lrow[2] = { 0.f, 0.f };
#pragma unroll
    for (int db = 0; db < DB; db++) o[db][0] = o[db][1] = o[db][2] = o[db][3] = 0.f;
    const float cap = a.softcap, cap_in = a.scale / (cap > 0 ? cap : 1.0f);
    const float c2 = cap > 0 ? CK_L2E : a.scale * CK_L2E; /* base-2 exponents, the scale folded in */

    for (int it = 0; it < nt; it++) {
        const int st = it % NS, j0 = k0 + it * BN;
        /* groups: the first tiles' (NS of them, or one with pre), then a
         * refill per iteration: tile it's group is complete when at most
         * NS - 1 newer ones are pending (with pre, it of them before NS) */
        static_assert(NS <= 3, "the waits below");
        if (pre && it == 0) ck_cp_wait<0>();
        else if (pre && NS == 3 && it == 1) ck_cp_wait<1>();
        else ck_cp_wait<NS - 1>();
        __syncthreads(); /* tile it visible to all */
        const uint32_t kb = ak + (uint32_t)(st * 2 * TILE), vb = kb + TILE;
        float sc[2][4] = { { 0.f, 0.f, 0.f, 0.f }, { 0.f, 0.f, 0.f, 0.f } };
#pragma unroll
        for (int kk = 0; kk < KT; kk++) {
            uint32_t bf[4];
            ck_ldsm4(bf, kb + (koff ^ (kk << 5)));
            E::mma(sc[0], af[kk], bf[0], bf[1]);
            E::mma(sc[1], af[kk], bf[2], bf[3]);
        }
#pragma unroll
        for (int h2 = 0; h2 < 2; h2++) {
            float mx = -INFINITY;
#pragma unroll
            for (int nb = 0; nb < 2; nb++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float x = sc[nb][2 * h2 + e];
                    if (cap > 0) x = cap * tanhf(x * cap_in);
                    const int j = j0 + warp * 16 + nb * 8 + 2 * t4 + e;
                    if (j >= k1 || j < lo[h2] || j > hi[h2]) x = -INFINITY;
                    sc[nb][2 * h2 + e] = x;
                    mx = fmaxf(mx, x);
                }
            mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 2));
            const float mnew = fmaxf(mrow[h2], mx);
            const float mb = mnew == -INFINITY ? 0.f : mnew * c2; /* nothing visible yet: every p is 0 */
            const float corr = ck_ex2(fmaf(mrow[h2], c2, -mb));
            mrow[h2] = mnew;
            float sum = 0.f;
#pragma unroll
            for (int nb = 0; nb < 2; nb++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float pe = ck_ex2(fmaf(sc[nb][2 * h2 + e], c2, -mb));
                    sc[nb][2 * h2 + e] = pe;
                    sum += pe;
                }
            lrow[h2] = lrow[h2] * corr + sum; /* this thread's columns; the quad sums at the end */
#pragma unroll
            for (int db = 0; db < DB; db++) o[db][2 * h2] *= corr, o[db][2 * h2 + 1] *= corr;
        }
        uint32_t pa[4];
        pa[0] = E::pack(sc[0][0], sc[0][1]), pa[1] = E::pack(sc[0][2], sc[0][3]);
        pa[2] = E::pack(sc[1][0], sc[1][1]), pa[3] = E::pack(sc[1][2], sc[1][3]);
#pragma unroll
        for (int db = 0; db < D / 16; db++) {
            uint32_t bf[4];
            ck_ldsm4t(bf, vb + (voff ^ (db << 5)));
            E::mma(o[2 * db], pa, bf[0], bf[1]);
            E::mma(o[2 * db + 1], pa, bf[2], bf[3]);
        }
        __syncthreads(); /* every warp is done with stage st: refill it */
        if (it + NS < nt) load_kv(st, j0 + NS * BN, 0), prep_fresh(st, j0 + NS * BN);
        ck_cp_commit();
    }
    if (flags & CK_DEC_TRIGGER) ck_pdl_trigger(); /* the merge kernel may launch */
    ck_cp_wait<0>();
    __syncthreads(); /* the stages now hold the warps' outputs */

    float *o_sh = reinterpret_cast<float *>(smem + 16 * D * 2); /* [warp][16][D] */
#pragma unroll
    for (int h2 = 0; h2 < 2; h2++) {
        float l = lrow[h2];
        l += __shfl_xor_sync(FULL, l, 1);
        l += __shfl_xor_sync(FULL, l, 2);
        const int i = g8 + 8 * h2;
        if (i >= nr) continue;
        if (t4 == 0) m_sh[warp][i] = mrow[h2], l_sh[warp][i] = l;
        float *orow = o_sh + (warp * 16 + i) * D + 2 * t4;
#pragma unroll
        for (int db = 0; db < DB; db++) *reinterpret_cast<float2 *>(orow + db * 8) = make_float2(o[db][2 * h2], o[db][2 * h2 + 1]);
    }
    __syncthreads();
    const size_t items = (size_t)T_bound * a.H;
    for (int idx = tid; idx < nr * D; idx += DEC_WARPS * 32) {
        const int i = idx / D, d = idx % D, r = r0 + i;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, m_sh[w][i]);
        float Ls = 0.f, v = 0.f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) {
            const float f = m_sh[w][i] == -INFINITY ? 0.f : ck_ex2((m_sh[w][i] - M) * c2);
            Ls += l_sh[w][i] * f;
            v += o_sh[(w * 16 + i) * D + d] * f;
        }
        /* the max in natural units of the scaled score, as dec_finish's */
        dec_store(out, part, (size_t)(q0 + r / G) * a.H + (size_t)hk * G + r % G, d, D, v, M * (c2 / CK_L2E), Ls,
                  split, n_split, items);
    }
}

/* Merge the n_split partials of each (row, head): a block of D threads per
 * item, thread d reading every split's (max, sum) and its own column of the
 * splits' o rows, all loads independent (one round trip to L2, no barrier).
 * A split that saw no key of the row has sum 0 and weighs nothing. */
__global__ void attn_dec_combine_k(float *out, const float *part, const int32_t *query_start, int n_seqs, int H,
                                   int n_split, int T_bound, int flags) {
    if (flags & CK_DEC_COMBINE_TRIGGER) ck_pdl_trigger();
    ck_pdl_wait();
    const int t = blockIdx.x / H, h = blockIdx.x % H, D = blockDim.x, d = threadIdx.x;
    if (t >= query_start[n_seqs]) return; /* the whole block */
    const size_t items = (size_t)T_bound * H, item = (size_t)t * H + h;
    const float2 *ml = reinterpret_cast<const float2 *>(part + (size_t)n_split * items * D) + item;
    float M = -INFINITY;
#pragma unroll 8
    for (int sp = 0; sp < n_split; sp++) M = fmaxf(M, ml[sp * items].x);
    const float *p = part + item * D + d;
    float L = 0.0f, v = 0.0f;
#pragma unroll 8
    for (int sp = 0; sp < n_split; sp++) {
        const float2 e = ml[sp * items];
        const float w = e.y > 0 ? expf(e.x - M) : 0.0f;
        L += e.y * w, v += p[sp * items * D] * w;
    }
    out[item * D + d] = v / L;
}

template <class E, int D, int NS, bool PREP>
void dec3_launch(ck_stream st, float *out, const float *q, const void *kc, const void *vc, const ck_attn *a,
                 int T_bound, int n_rc, int n_split, float *part, const DecPrep<PREP> &pp) {
    constexpr int smem = dec3_smem<D, NS>();
    /* per call, as attn_fa.cu: cheap, and right for whichever device is current */
    cudaFuncSetAttribute(attn_dec3_k<E, D, NS, PREP>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    int lb = 0;
    while ((1 << lb) < a->block_size) lb++;
    const dim3 grid((unsigned)n_split, (unsigned)(a->Hkv * n_rc), (unsigned)a->n_seqs);
    /* the pools are written only by the PREP kernel */
    ck_launch_if(dec_pdl, attn_dec3_k<E, D, NS, PREP>, grid, DEC_WARPS * 32, smem, st, out, q,
                 static_cast<uint16_t *>(const_cast<void *>(kc)), static_cast<uint16_t *>(const_cast<void *>(vc)), *a,
                 n_split, n_rc, part, T_bound, lb, dec_flags, pp);
}

template <class E>
void dec3_dims(ck_stream st, float *out, const float *q, const void *kc, const void *vc, const ck_attn *a, int T_bound,
               int n_rc, int n_split, float *part, int variant) {
    const bool deep = variant == 4; /* 3 stages (variant 4) instead of 2 */
    const DecPrep<false> np;
    if (a->D == 64) {
        if (deep) dec3_launch<E, 64, 3>(st, out, q, kc, vc, a, T_bound, n_rc, n_split, part, np);
        else dec3_launch<E, 64, 2>(st, out, q, kc, vc, a, T_bound, n_rc, n_split, part, np);
    } else {
        if (deep) dec3_launch<E, 128, 3>(st, out, q, kc, vc, a, T_bound, n_rc, n_split, part, np);
        else dec3_launch<E, 128, 2>(st, out, q, kc, vc, a, T_bound, n_rc, n_split, part, np);
    }
}

/* variant 3 with the step's qkv_prep (two stages) */
template <class E>
void dec3_prep_dims(ck_stream st, float *out, void *kc, void *vc, const ck_attn *a, int T_bound, int n_rc,
                    int n_split, float *part, const DecPrep<true> &pp) {
    if (a->D == 64) dec3_launch<E, 64, 2>(st, out, pp.a.q, kc, vc, a, T_bound, n_rc, n_split, part, pp);
    else dec3_launch<E, 128, 2>(st, out, pp.a.q, kc, vc, a, T_bound, n_rc, n_split, part, pp);
}

/* the merge of the splits (a no-op for one) */
void dec_combine(ck_stream st, float *out, const float *part, const ck_attn *a, int T_bound, int n_split) {
    if (n_split > 1)
        ck_launch_if(dec_pdl, attn_dec_combine_k, (unsigned)((size_t)T_bound * a->H), (unsigned)a->D, 0, st, out,
                     part, a->query_start, a->n_seqs, a->H, n_split, T_bound, dec_flags);
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

/* variant 3 (and 4) run this call: head dims 64 and 128, power-of-two blocks */
bool dec3_runs(const ck_attn *a, int variant) {
    return variant >= 3 && (a->D == 64 || a->D == 128) && a->block_size > 0 && (a->block_size & (a->block_size - 1)) == 0;
}

} // namespace

extern "C" void ck_attention_dec_pdl(int on) { dec_pdl = on != 0; }

extern "C" void ck_attention_dec_flags(int flags) { dec_flags = flags; }

extern "C" int ck_attention_dec_runs(enum ck_type kt, const struct ck_attn *a, const void *kc, const void *vc) {
    return (kt == CK_BF16 || kt == CK_F16) && (a->D == 64 || a->D == 128 || a->D == 256) && a->Hkv > 0 &&
           a->H % a->Hkv == 0 && ((uintptr_t)kc & 15) == 0 && ((uintptr_t)vc & 15) == 0;
}

extern "C" int ck_attention_dec_ctas(const struct ck_attn *a, int max_q, int variant) {
    const int G = a->H / a->Hkv, R = dec3_runs(a, variant) ? 16 : rows_for(G, max_q);
    return a->n_seqs * a->Hkv * ((G * max_q + R - 1) / R);
}

extern "C" int ck_attention_dec(ck_stream st, float *out, const float *q, const void *kc, const void *vc,
                                enum ck_type kt, const struct ck_attn *a, int T_bound, int max_q, int n_split,
                                float *part, int variant) {
    if (T_bound <= 0 || a->n_seqs <= 0 || max_q <= 0) return 0;
    if (!ck_attention_dec_runs(kt, a, kc, vc) || n_split < 1 || n_split > DEC_MAX_SPLIT || (n_split > 1 && !part))
        return (int)cudaErrorInvalidValue;
    const bool v3 = dec3_runs(a, variant);
    const int G = a->H / a->Hkv, R = v3 ? 16 : rows_for(G, max_q), n_rc = (G * max_q + R - 1) / R;
    if ((size_t)a->Hkv * n_rc > 65535 || a->n_seqs > 65535) return (int)cudaErrorInvalidValue;
    if (v3) {
        if (kt == CK_BF16) dec3_dims<CkBF16>(st, out, q, kc, vc, a, T_bound, n_rc, n_split, part, variant);
        else dec3_dims<CkF16>(st, out, q, kc, vc, a, T_bound, n_rc, n_split, part, variant);
    } else if (kt == CK_BF16) dec_dims<DBF16>(st, out, q, kc, vc, a, T_bound, R, n_rc, n_split, part, variant);
    else dec_dims<DF16>(st, out, q, kc, vc, a, T_bound, R, n_rc, n_split, part, variant);
    dec_combine(st, out, part, a, T_bound, n_split);
    return (int)cudaGetLastError();
}

extern "C" int ck_attention_dec_prep(ck_stream st, float *out, const struct ck_qkv *p, const struct ck_rope *r,
                                     void *kc, void *vc, enum ck_type kt, const struct ck_attn *a, int T_bound,
                                     int max_q, int n_split, float *part) {
    /* nothing to attend is the caller's to skip: the two ops would still store keys */
    if (T_bound <= 0 || a->n_seqs <= 0 || max_q <= 0 || p->T <= 0) return (int)cudaErrorInvalidValue;
    if (!ck_attention_dec_runs(kt, a, kc, vc) || !dec3_runs(a, 3) || n_split < 1 || n_split > DEC_MAX_SPLIT ||
        (n_split > 1 && !part) || p->H != a->H || p->Hkv != a->Hkv || p->D != a->D ||
        (p->rope && (r->rot_dim > a->D || r->rot_dim % 2 || r->rot_dim / 2 > CK_ROPE_MAX_HALF)))
        return (int)cudaErrorInvalidValue;
    const int G = a->H / a->Hkv, n_rc = (G * max_q + 15) / 16;
    if ((size_t)a->Hkv * n_rc > 65535 || a->n_seqs > 65535) return (int)cudaErrorInvalidValue;
    DecPrep<true> pp{};
    pp.a = *p;
    if (p->rope) pp.r = *r;
    if (kt == CK_BF16) dec3_prep_dims<CkBF16>(st, out, kc, vc, a, T_bound, n_rc, n_split, part, pp);
    else dec3_prep_dims<CkF16>(st, out, kc, vc, a, T_bound, n_rc, n_split, part, pp);
    dec_combine(st, out, part, a, T_bound, n_split);
    return (int)cudaGetLastError();
}
