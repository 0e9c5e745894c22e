/* attn_fa.cu — tensor-core paged attention for prefill (FlashAttention-2
 * style), the CUDA backend's path for steps with long query ranges (see
 * ck_attention_fa in cuda_kernels.h; cuda.c decides when).
 *
 * One CTA of 4 warps owns a tile of BM = 64 * MT "rows" of one sequence and
 * one KV head, where a row is a (query token, query head) pair: the G query
 * heads that share the KV head (GQA) sit side by side, so a tile holds
 * BM / G query tokens times G heads and every K/V row it loads serves all G
 * heads. Each warp owns MT m16 row tiles. Per key tile of BN keys:
 *   - K and V rows are gathered from the paged pools by the block table into
 *     shared memory with cp.async (two stages: the next tile's copy runs
 *     while this one is computed; keys past the range are zero-filled);
 *   - S = Q K^T with mma.sync m16n8k16 (bf16 or f16 inputs, f32 sums), Q
 *     rounded once to the KV type when the CTA loads it (f32 in memory);
 *   - scale, softcap (s = cap * tanh(s / cap)), then the causal / sliding
 *     window mask (key j visible to the query at position p iff j <= p and
 *     p - j < window), only on tiles that cross an edge;
 *   - online softmax in f32 (running max and sum per row, as FA2), P rounded
 *     to the KV type in registers (the S accumulators become the A operand of
 *     the next mma without going through shared memory), O += P V.
 * Shared memory rows are 16-byte chunks XOR-swizzled by (row & 7), so the
 * ldmatrix reads (8 rows at one column) and the cp.async writes hit 8
 * different bank groups.
 *
 * Numerics against the CPU reference (cpu_ref.c, all f32): q and P are
 * rounded to bf16 (8-bit mantissa) or f16 (11-bit) before the products, so
 * scores carry a relative error of about 2^-9 (bf16) of |q||k| and the output
 * about 2^-9 of max|v|; the test's tolerance says so (test_cuda.c).
 *
 * The grid is one CTA per (tile slot, KV head, head chunk), slots first:
 * n_seqs * ceil(max_q / tokens per tile) slots, of which a CTA finds its
 * sequence by a warp scan over the query ranges (slots past a sequence's
 * tiles exit at once), the last (longest) tile of a sequence first.
 *
 * What this does not do: f32 KV caches or head dims other than 64, 128 and
 * 256 (the warp-per-row kernel in kernels.cu runs those), split-KV (decode
 * rows of a mixed batch run here as a tile with one token), wgmma/TMA (sm_90
 * only; mma.sync runs on sm_80 and later). */
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/ck_mma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

namespace {

constexpr int FA_THREADS = 128; /* 4 warps */
constexpr unsigned FULL = 0xffffffffu;

struct fa_args {
    float *out;
    const float *q;
    const uint16_t *kc, *vc;
    ck_attn a;
    int grp, G, NC, QR; /* heads per KV head, heads per CTA, head chunks, query tokens per tile */
    int lb;             /* log2(block_size) */
};

template <class E, int D, int MT, int BN>
__global__ void __launch_bounds__(FA_THREADS) fa_k(const fa_args f) {
    constexpr int BM = 64 * MT, CPR = D / 8, NB = BN / 8, DB = D / 8;
    extern __shared__ __align__(128) unsigned char smem[];
    __shared__ int sh_seq, sh_tile;
    const ck_attn a = f.a;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g8 = lane >> 2, t4 = lane & 3;
    const int HY = a.Hkv * f.NC;
    const int hy = (int)(blockIdx.x % (unsigned)HY), slot = (int)(blockIdx.x / (unsigned)HY);
    const int hk = hy / f.NC, chunk = hy % f.NC;

    /* which sequence and tile: a scan of tiles per sequence by warp 0 */
    if (warp == 0) {
        int base = 0, fs = -1, ft = 0;
        for (int s0 = 0; s0 < a.n_seqs; s0 += 32) {
            const int s = s0 + lane;
            int nt = 0;
            if (s < a.n_seqs) nt = (a.query_start[s + 1] - a.query_start[s] + f.QR - 1) / f.QR;
            int inc = nt;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int v = __shfl_up_sync(FULL, inc, o);
                if (lane >= o) inc += v;
            }
            const unsigned hit = __ballot_sync(FULL, slot < base + inc);
            if (hit) {
                const int l = __ffs(hit) - 1;
                const int incl = __shfl_sync(FULL, inc, l), ntl = __shfl_sync(FULL, nt, l);
                fs = s0 + l;
                ft = slot - (base + incl - ntl);
                break;
            }
            base += __shfl_sync(FULL, inc, 31);
        }
        if (lane == 0) sh_seq = fs, sh_tile = ft;
    }
    __syncthreads();
    const int s = sh_seq;
    if (s < 0) return; /* the whole CTA */
    const int q0 = a.query_start[s], nq = a.query_start[s + 1] - q0;
    const int ntl = (nq + f.QR - 1) / f.QR, local = ntl - 1 - sh_tile; /* longest tile first */
    const int tok0 = local * f.QR, ntok = min(f.QR, nq - tok0);
    const int pos0 = a.seq_len[s] - nq; /* position of the sequence's first query */
    const int qlo = pos0 + tok0, qhi = qlo + ntok - 1;
    const int window = a.window;
    const int kstart = (window > 0 && qlo - window + 1 > 0) ? qlo - window + 1 : 0, kend = qhi + 1;
    const int head0 = hk * f.grp + chunk * f.G; /* the CTA's first query head */
    const int nh = min(f.G, f.grp - chunk * f.G);

    uint16_t *sq = reinterpret_cast<uint16_t *>(smem);
    const uint32_t aq = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t ak = aq + BM * D * 2, av = ak + 2 * BN * D * 2;

    /* K/V tile of keys j0.. into stage st */
    const int lb = f.lb, bmask = a.block_size - 1;
    const size_t row = (size_t)a.Hkv * D;
    const int32_t *bt = a.block_table + (size_t)s * a.max_blocks;
    auto load_kv = [&](int st, int j0) {
#pragma unroll
        for (int i = 0; i < BN * CPR / FA_THREADS; i++) {
            const int idx = tid + i * FA_THREADS, r = idx / CPR, ch = idx % CPR, j = j0 + r;
            const uint16_t *ks = f.kc, *vs = f.vc;
            int bytes = 0;
            if (j < kend) {
                const size_t off = (size_t)((bt[j >> lb] << lb) | (j & bmask)) * row + (size_t)(hk * D + ch * 8);
                ks += off, vs += off, bytes = 16;
            }
            const uint32_t o = (uint32_t)(st * BN * D * 2) + ck_swz<D>(r, ch);
            ck_cp16(ak + o, ks, bytes);
            ck_cp16(av + o, vs, bytes);
        }
    };
    load_kv(0, kstart);
    ck_cp_commit();

    /* Q: f32 -> 16-bit, rows past the tile's tokens or heads as zeros */
    for (int idx = tid; idx < BM * (D / 4); idx += FA_THREADS) {
        const int r = idx / (D / 4), c4 = idx % (D / 4), tq = r / f.G, hh = r % f.G;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (tq < ntok && hh < nh)
            v = *reinterpret_cast<const float4 *>(f.q + ((size_t)(q0 + tok0 + tq) * a.H + head0 + hh) * D + c4 * 4);
        uint2 w;
        w.x = E::pack(v.x, v.y), w.y = E::pack(v.z, v.w);
        *reinterpret_cast<uint2 *>(reinterpret_cast<unsigned char *>(sq) + ck_swz<D>(r, c4 >> 1) + (c4 & 1) * 8) = w;
    }

    /* this thread's rows: (warp * MT + mt) * 16 + g8 + 8 * h2; position or -1 */
    int qp[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h2 = 0; h2 < 2; h2++) {
            const int r = (warp * MT + mt) * 16 + g8 + 8 * h2, tq = r / f.G, hh = r % f.G;
            qp[mt][h2] = (tq < ntok && hh < nh) ? qlo + tq : -1;
        }

    /* ldmatrix row addresses (byte offsets in a tile) of this lane at the
     * first 16 columns; the swizzle only flips chunk bits below D * 2, so the
     * k-th 16 columns are at off ^ (k << 5) (A: Q rows, B: K rows, B^T: V) */
    const int l7 = lane & 7, l8 = (lane >> 3) & 1, l16 = lane >> 4;
    const uint32_t qoff = (uint32_t)((warp * MT * 16 + l7 + l8 * 8) * D * 2 + ((l16 ^ l7) << 4));
    const uint32_t koff = (uint32_t)((l7 + l16 * 8) * D * 2 + ((l8 ^ l7) << 4));
    const uint32_t voff = (uint32_t)((l7 + l8 * 8) * D * 2 + ((l16 ^ l7) << 4));

    float o[MT][DB][4];
    float mrow[MT][2], lrow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int db = 0; db < DB; db++) o[mt][db][0] = o[mt][db][1] = o[mt][db][2] = o[mt][db][3] = 0.f;
        mrow[mt][0] = mrow[mt][1] = -INFINITY;
        lrow[mt][0] = lrow[mt][1] = 0.f;
    }
    /* exponents in base 2 with the scale folded in: without a softcap the
     * running max is of the raw scores (scale > 0) */
    const float cap = a.softcap, cap_in = a.scale / (cap > 0 ? cap : 1.0f);
    const float c2 = cap > 0 ? CK_L2E : a.scale * CK_L2E;
    const int n_tiles = (kend - kstart + BN - 1) / BN;

    for (int it = 0; it < n_tiles; it++) {
        const int j0 = kstart + it * BN, st = it & 1;
        if (it + 1 < n_tiles) load_kv(st ^ 1, j0 + BN);
        ck_cp_commit();
        ck_cp_wait<1>();
        __syncthreads(); /* this stage's K/V (and at it = 0 the Q tile) visible to all */

        /* S = Q K^T */
        float sc[MT][NB][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nb = 0; nb < NB; nb++) sc[mt][nb][0] = sc[mt][nb][1] = sc[mt][nb][2] = sc[mt][nb][3] = 0.f;
        const uint32_t kb = ak + (uint32_t)(st * BN * D * 2);
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t af[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) ck_ldsm4(af[mt], aq + ((qoff ^ (kk << 5)) + mt * 16 * D * 2));
#pragma unroll
            for (int nb = 0; nb < BN / 16; nb++) {
                uint32_t bf[4];
                ck_ldsm4(bf, kb + ((koff ^ (kk << 5)) + nb * 16 * D * 2));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    E::mma(sc[mt][2 * nb], af[mt], bf[0], bf[1]);
                    E::mma(sc[mt][2 * nb + 1], af[mt], bf[2], bf[3]);
                }
            }
        }

        /* scale, softcap, mask; online softmax */
        const bool edge = j0 + BN - 1 > qlo || (window > 0 && j0 <= qhi - window);
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int h2 = 0; h2 < 2; h2++) {
                const int p = qp[mt][h2];
                float mx = -INFINITY;
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float x = sc[mt][nb][2 * h2 + e];
                        if (cap > 0) x = cap * tanhf(x * cap_in);
                        if (edge) {
                            const int j = j0 + nb * 8 + 2 * t4 + e;
                            if (j > p || (window > 0 && p - j >= window)) x = -INFINITY;
                        }
                        sc[mt][nb][2 * h2 + e] = x;
                        mx = fmaxf(mx, x);
                    }
                mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 2));
                const float mnew = fmaxf(mrow[mt][h2], mx);
                const float mb = mnew == -INFINITY ? 0.f : mnew * c2; /* a row with nothing visible yet */
                const float corr = ck_ex2(fmaf(mrow[mt][h2], c2, -mb));
                mrow[mt][h2] = mnew;
                float sum = 0.f;
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const float pe = ck_ex2(fmaf(sc[mt][nb][2 * h2 + e], c2, -mb));
                        sc[mt][nb][2 * h2 + e] = pe;
                        sum += pe;
                    }
                lrow[mt][h2] = lrow[mt][h2] * corr + sum; /* this thread's columns; the quad sums at the end */
                if (__any_sync(FULL, corr != 1.0f)) /* once the maxima settle, most tiles skip this */
#pragma unroll
                    for (int db = 0; db < DB; db++) o[mt][db][2 * h2] *= corr, o[mt][db][2 * h2 + 1] *= corr;
            }

        /* O += P V: P from the S accumulators (two n8 blocks = one k16 A operand) */
        const uint32_t vb = av + (uint32_t)(st * BN * D * 2);
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                pa[mt][0] = E::pack(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
                pa[mt][1] = E::pack(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
                pa[mt][2] = E::pack(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
                pa[mt][3] = E::pack(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int db = 0; db < D / 16; db++) {
                uint32_t bf[4];
                ck_ldsm4t(bf, vb + ((voff ^ (db << 5)) + kk * 16 * D * 2));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    E::mma(o[mt][2 * db], pa[mt], bf[0], bf[1]);
                    E::mma(o[mt][2 * db + 1], pa[mt], bf[2], bf[3]);
                }
            }
        }
        __syncthreads(); /* the next iteration's copy overwrites this stage */
    }
    ck_cp_wait<0>();

    /* out = O / l, rows of real (token, head) pairs */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h2 = 0; h2 < 2; h2++) {
            float l = lrow[mt][h2];
            l += __shfl_xor_sync(FULL, l, 1);
            l += __shfl_xor_sync(FULL, l, 2);
            if (qp[mt][h2] < 0) continue;
            const int r = (warp * MT + mt) * 16 + g8 + 8 * h2, tq = r / f.G, hh = r % f.G;
            float *orow = f.out + ((size_t)(q0 + tok0 + tq) * a.H + head0 + hh) * D;
            const float inv = 1.0f / l;
#pragma unroll
            for (int db = 0; db < DB; db++)
                *reinterpret_cast<float2 *>(orow + db * 8 + 2 * t4) =
                    make_float2(o[mt][db][2 * h2] * inv, o[mt][db][2 * h2 + 1] * inv);
        }
}

template <class E, int D, int MT, int BN>
int fa_launch(ck_stream st, float *out, const float *q, const void *kc, const void *vc, const ck_attn *a, int max_q) {
    constexpr int BM = 64 * MT;
    fa_args f;
    f.out = out, f.q = q, f.kc = static_cast<const uint16_t *>(kc), f.vc = static_cast<const uint16_t *>(vc);
    f.a = *a;
    f.grp = a->H / a->Hkv;
    f.G = f.grp < BM ? f.grp : BM;
    f.NC = (f.grp + f.G - 1) / f.G;
    f.QR = BM / f.G;
    f.lb = 0;
    while ((1 << f.lb) < a->block_size) f.lb++;
    const size_t slots = (size_t)a->n_seqs * (size_t)((max_q + f.QR - 1) / f.QR);
    const size_t ctas = slots * (size_t)a->Hkv * (size_t)f.NC;
    if (ctas == 0) return 0;
    if (ctas > 0x7fffffffu) return (int)cudaErrorInvalidValue;
    const int smem = (BM + 4 * BN) * D * 2;
    /* per call: cheap, and right for whichever device is current */
    cudaError_t e = cudaFuncSetAttribute(fa_k<E, D, MT, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return (int)e;
    fa_k<E, D, MT, BN><<<(unsigned)ctas, FA_THREADS, smem, st>>>(f);
    return (int)cudaGetLastError();
}

template <class E>
int fa_d(ck_stream st, float *out, const float *q, const void *kc, const void *vc, const ck_attn *a, int max_q,
         int variant) {
    switch (a->D) {
    case 64:
        if (variant == 1) return fa_launch<E, 64, 1, 64>(st, out, q, kc, vc, a, max_q);
        if (variant == 2) return fa_launch<E, 64, 2, 32>(st, out, q, kc, vc, a, max_q);
        return fa_launch<E, 64, 2, 64>(st, out, q, kc, vc, a, max_q);
    case 128:
        if (variant == 1) return fa_launch<E, 128, 1, 64>(st, out, q, kc, vc, a, max_q);
        if (variant == 2) return fa_launch<E, 128, 2, 32>(st, out, q, kc, vc, a, max_q);
        return fa_launch<E, 128, 2, 64>(st, out, q, kc, vc, a, max_q);
    case 256: return fa_launch<E, 256, 1, 32>(st, out, q, kc, vc, a, max_q);
    }
    return (int)cudaErrorInvalidValue;
}

} // namespace

extern "C" int ck_attention_fa_runs(enum ck_type kt, const struct ck_attn *a, const void *q, const void *out,
                                    const void *kc, const void *vc) {
    const int D = a->D, B = a->block_size;
    return (kt == CK_BF16 || kt == CK_F16) && (D == 64 || D == 128 || D == 256) && B > 0 && (B & (B - 1)) == 0 &&
           a->scale > 0 && a->Hkv > 0 && a->H % a->Hkv == 0 && ((uintptr_t)q & 15) == 0 &&
           ((uintptr_t)out & 7) == 0 && ((uintptr_t)kc & 15) == 0 && ((uintptr_t)vc & 15) == 0;
}

extern "C" int ck_attention_fa(ck_stream st, float *out, const float *q, const void *kc, const void *vc,
                               enum ck_type kt, const struct ck_attn *a, int max_q, int variant, int n_sm) {
    if (a->n_seqs <= 0 || max_q <= 0) return 0;
    if (!ck_attention_fa_runs(kt, a, q, out, kc, vc)) return (int)cudaErrorInvalidValue;
    if (variant < 0) {
        /* 128-row tiles where they still make 4 CTAs per multiprocessor (the
         * 4096-token prefill), else 64 (chunks, few sequences; and D 64,
         * where 64-row tiles leave room for 4 CTAs per multiprocessor) */
        const int grp = a->H / a->Hkv, G = grp < 128 ? grp : 128, QR = 128 / G;
        const double ctas = (double)a->n_seqs * ((max_q + QR - 1) / QR) * a->Hkv * ((grp + G - 1) / G);
        variant = a->D == 128 && ctas >= 4.0 * n_sm ? 0 : 1;
    }
    if (kt == CK_BF16) return fa_d<CkBF16>(st, out, q, kc, vc, a, max_q, variant);
    return fa_d<CkF16>(st, out, q, kc, vc, a, max_q, variant);
}
