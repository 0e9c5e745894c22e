/* chain.cu — the decode chain: several one-token matmuls of 4- or 8-bit
 * affine weights (and the norm or GLU that makes each one's input) in one
 * persistent kernel, so that the weights stream from memory without a gap
 * between the matmuls.
 *
 * Why: at batch 1 a decode step is a sequence of GEMVs that depend on each
 * other (o, gate/up, down, the next layer's q/k/v). Launched one by one,
 * each starts empty (launch, the first loads' latency) and drains (the
 * last wave of blocks), and a kernel can load ahead only what its first
 * wave holds in registers. On an H100 that left the 4-bit 8B decode at
 * ~63% of copy bandwidth with the GEMVs at ~2 TB/s (BENCHMARKS.md). Here
 * one CTA per multiprocessor stays for the whole chain: a producer thread
 * streams the CTA's share of every weight, matmul after matmul, into a
 * ring of shared-memory slots (cp.async.bulk + mbarriers), never waiting
 * for the arithmetic, while the consumer warps compute; between two
 * matmuls the CTAs meet at a grid-wide barrier (a counter in global
 * memory), and the ring keeps filling with the next matmul's rows
 * meanwhile.
 *
 * An op of the chain (struct ck_chain_op) is one of backend.h's matmul,
 * matmul_many, add_rmsnorm_matmul or glu_matmul at T = 1, and computes what
 * quant.cu's int8 GEMV computes (the input rounded to two int8 parts per
 * block of 32, dp4a against the codes, ck_quant.cuh): every CTA rounds the
 * op's whole input into its own shared memory (from x, x + s o normalised,
 * or act(gate) * up, read from L2: chain_input), then takes tiles of rows
 * round-robin (tile t of the op goes to CTA t mod grid). A tile is RT rows
 * (a power of two, at most 8 KB of codes); the CTA's tiles go to its
 * consumer warps in turn, and a warp sums whole rows (the input of a chunk
 * read from shared memory once for all RT rows), so no partial sums cross
 * warps and the results do not depend on timing. add_rmsnorm_matmul also
 * writes x (each CTA its slice, once every CTA has read x: after the next
 * op's barrier, or after a second counter where the next op reads x or the
 * op is the last); h is left unspecified, as backend.h allows.
 *
 * Synchronisation: counters in global memory (ck_chain_sync_bytes, zero
 * before the first launch): done[i] counts the CTAs through op i, rd[i]
 * those that have read op i's norm input, and the last CTA out resets them
 * all, so every launch finds zeros (stream order: one chain runs at a
 * time). Every CTA must be resident at once: the grid is one CTA per
 * multiprocessor with most of its shared memory (launched cooperatively).
 * Writes before an arrival are fenced; reads of activations after a
 * barrier bypass L1 (ld.global.cg).
 *
 * PDL: the producer starts streaming before the kernel before has finished
 * (weights are never written by a kernel), CH_FIRST_FILLS tiles, then waits
 * for op 0's input reads (which would queue behind its loads); the
 * consumers wait for the kernel before reading any activation.
 *
 * Where it stands (H100, BENCHMARKS.md): the tiles stream faster than the
 * GEMV (the head 2.83 TB/s against 2.57, gate/up 16.6 us against 19.2), but
 * every op's input rounding (3-17 us: each CTA reads the whole input from
 * L2) and its barrier cost more than the launches they replace, so a 4-bit
 * 8B decode step takes 3.76 ms against 3.05: opt-in (VLLMC_CUDA_CHAIN=1).
 *
 * What this does not do: more than one token, other bit widths, inputs
 * wider than CH_KMAX, rows wider than a slot (8-bit rows of more than 8192
 * columns), or scales whose total size is not a multiple of 16 bytes
 * (ck_chain_fits says no; the caller runs the op on its own); sm_80
 * (cp.async.bulk is sm_90: the kernel body is empty there and
 * ck_chain_supported() is 0). */
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/ck_device.cuh"
#include "backend/cuda/ck_quant.cuh"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace {

constexpr int CH_NC = 8;                       /* consumer warps */
constexpr int CH_THREADS = (CH_NC + 1) * 32;   /* + the producer warp */
constexpr int CH_CODES = 8192;                 /* code bytes per slot */
constexpr int CH_SB = 1280;                    /* scale (and bias) bytes per slot: rows + 2 x 16 alignment */
constexpr int CH_SLOT = CH_CODES + 2 * CH_SB;
constexpr int CH_KMAX = 16384;                 /* input width at most */
constexpr int CH_MAX_SLOTS = 16;               /* a multiple of CH_NC: warp w uses slots w, w + CH_NC, .. */
constexpr int CH_RT_MAX = 16;                  /* rows per tile at most */

/* shared memory: barriers, then the rounded input, then the ring */
constexpr int CH_OFF_PART = 2 * CH_MAX_SLOTS * 8;               /* after full[], empty[]: 32 floats */
constexpr int CH_OFF_FLAG = CH_OFF_PART + 128;                  /* the producer's go-ahead */
constexpr int CH_SAVE = 1024;                                   /* floats of this CTA's slice of x + s o at most */
constexpr int CH_OFF_SAVE = CH_OFF_FLAG + 16;
constexpr int CH_OFF_XD = CH_OFF_SAVE + CH_SAVE * 4;
constexpr int CH_OFF_XS = CH_OFF_XD + CH_KMAX / 32 * 4;
constexpr int CH_OFF_XH = CH_OFF_XS + CH_KMAX / 32 * 4;
constexpr int CH_OFF_XL = CH_OFF_XH + CH_KMAX;
constexpr int CH_OFF_RING = (CH_OFF_XL + CH_KMAX + 127) / 128 * 128;

/* one op as the kernel takes it: the caller's op and its tiling */
struct ChOp {
    ck_chain_op o;
    int rt, rb, sbrow, gsh, vec;              /* rows per tile, code and scale bytes per row, log2 group, 16-byte input */
    int defer;                                /* NORM: x's slice written after the next barrier (the next op reads no x) */
    int tend[CK_QGEMV_MAX_W];                 /* tiles of weights 0..j together */
};
struct ChArgs {
    ChOp op[CK_CHAIN_MAX];
    int n, ns;          /* ops, ring slots */
    int dbg;            /* VLLMC_CUDA_CHAIN_DBG (measurements only; results wrong): 1 no arithmetic, 2 no loads */
    int trace;          /* VLLMC_CUDA_CHAIN_TRACE=N: the Nth launch prints its timeline (CTA 0 and the last) */
    unsigned *sync;     /* done[CK_CHAIN_MAX], read[CK_CHAIN_MAX], exit */
};

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900 /* the kernel is empty before sm_90 */
constexpr int CH_FIRST_FILLS = 4; /* the producer's fills before op 0's input is read */

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mb_init(uint64_t *b, unsigned n) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(b)), "r"(n) : "memory");
}
__device__ __forceinline__ void mb_expect(uint64_t *b, unsigned tx) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(b)), "r"(tx) : "memory");
}
__device__ __forceinline__ void mb_arrive(uint64_t *b) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(b)) : "memory");
}
__device__ __forceinline__ void mb_wait(uint64_t *b, unsigned parity) {
    uint32_t done;
    do {
        asm volatile("{\n\t.reg .pred p;\n\t"
                     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
                     "selp.u32 %0, 1, 0, p;\n\t}"
                     : "=r"(done)
                     : "r"(smem_u32(b)), "r"(parity)
                     : "memory");
    } while (!done);
}
__device__ __forceinline__ void bulk_load(void *dst, const void *src, unsigned bytes, uint64_t *bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
}

/* the consumers' own barrier (named barrier 1: the producer warp is not in it) */
__device__ __forceinline__ void cons_sync() { asm volatile("bar.sync 1, %0;" ::"n"(CH_NC * 32) : "memory"); }

__device__ __forceinline__ unsigned long long gtime() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* the sum of v over the consumer threads (part: CH_NC floats) */
__device__ __forceinline__ float cons_sum(float v, float *part) {
    v = ck_warp_sum(v);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    cons_sync();
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < CH_NC; w++) s += part[w];
    cons_sync(); /* part is free again */
    return s;
}

/* 8 activations written by earlier kernels or CTAs, through L2 */
__device__ __forceinline__ void ld8_cg(float (&v)[8], const float *p, bool vec) {
    if (vec) {
        const float4 a = __ldcg(reinterpret_cast<const float4 *>(p)), b = __ldcg(reinterpret_cast<const float4 *>(p) + 1);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = __ldcg(p + j);
    }
}

/* one scale or bias in shared memory */
__device__ __forceinline__ float sb_at(const uint8_t *p, int i, int dt) {
    if (dt == CK_BF16) return __uint_as_float((uint32_t)reinterpret_cast<const unsigned short *>(p)[i] << 16);
    if (dt == CK_F16) return __half2float(__ushort_as_half(reinterpret_cast<const unsigned short *>(p)[i]));
    return reinterpret_cast<const float *>(p)[i];
}

/* The prologue of op o, by the consumer threads: its input rounded into
 * q (shared memory), as qx_k / add_rmsnorm_qx_k round it. Returns the
 * norm's 1 / rms for ck_chain NORM ops. */
__device__ __forceinline__ uint8_t *stash_base() {
    extern __shared__ __align__(128) uint8_t sm[];
    return sm + CH_OFF_SAVE;
}

/* run i of 8 inputs (all 32 lanes of the warp call it) into the rounded
 * layout. 4 bits: a lane's 16 bytes of codes (32 codes: runs 4L .. 4L + 3)
 * meet two 16-byte words of each part, stored lane-major per chunk (word h
 * of lane L at ((L / 32) 2 + h) 512 + (L % 32) 16) so that the consumers'
 * loads do not conflict; 8 bits: in order */
__device__ __forceinline__ void round_run(const QxLayout &q, int i, const float (&v)[8], int n8, int lane, int gs,
                                          bool nib) {
    const int L = i >> 2, at = (((L >> 5) * 2 + ((i >> 1) & 1)) * 64) + (L & 31) * 2 + (i & 1);
    if (nib) qx_round8<true>(q, i, v, i < n8, lane, gs, at);
    else qx_round8<false>(q, i, v, i < n8, lane, gs);
}

/* The prologue of an op, by the consumer threads: its input rounded into q
 * (shared memory), as qx_k / add_rmsnorm_qx_k round it; a NORM op also
 * keeps this CTA's slice of x + s o for chain_norm_writes. The loops are
 * not unrolled: this code runs once per op, from a cold instruction cache
 * (unrolled, the 14336-wide GLU input took ~40 us on an H100, fetching
 * instructions); the next run's loads are issued before the current run's
 * arithmetic instead. */
__device__ __noinline__ void chain_input(const ChOp &op, const QxLayout &q, float *part) {
    const ck_chain_op &o = op.o;
    const int K = o.K, n8 = K / 8, lane = (int)threadIdx.x & 31, kind = o.kind, act = o.act, gs = o.gs;
    const int tid = (int)threadIdx.x, nr = (n8 + CH_NC * 32 - 1) / (CH_NC * 32); /* runs per thread, uniform */
    const bool nib = o.bits == 4, vec = op.vec;
    const float s = o.s, *p0 = kind == CK_CHAIN_GLU ? o.gate : o.x, *p1 = kind == CK_CHAIN_GLU ? o.up : o.o;
    const bool two = kind != CK_CHAIN_X;
    float inv = 1.0f;
    if (kind == CK_CHAIN_NORM) { /* pass 1: the sum of squares; this CTA's slice of x + s o kept */
        const int per = (n8 + (int)gridDim.x - 1) / (int)gridDim.x, i0 = (int)blockIdx.x * per;
        float *save = reinterpret_cast<float *>(stash_base()), ss = 0.0f, nv[8], nb[8];
        if (tid < n8) ld8_cg(nv, p0 + 8 * (size_t)tid, vec), ld8_cg(nb, p1 + 8 * (size_t)tid, vec);
#pragma unroll 1
        for (int r = 0; r < nr; r++) {
            const int i = r * CH_NC * 32 + tid, in = i + CH_NC * 32;
            float v[8], b[8];
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] = nv[j], b[j] = nb[j];
            if (in < n8) ld8_cg(nv, p0 + 8 * (size_t)in, vec), ld8_cg(nb, p1 + 8 * (size_t)in, vec);
            if (i < n8) {
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    v[j] += s * b[j];
                    ss += v[j] * v[j];
                }
                if (i >= i0 && i < i0 + per)
#pragma unroll
                    for (int j = 0; j < 8; j++) save[8 * (i - i0) + j] = v[j];
            }
        }
        inv = 1.0f / sqrtf(cons_sum(ss, part) / (float)K + o.eps);
    }
    /* the rounding pass (for NORM the second read of x and o, from L2) */
    float nv[8], nb[8];
    if (tid < n8) {
        ld8_cg(nv, p0 + 8 * (size_t)tid, vec);
        if (two) ld8_cg(nb, p1 + 8 * (size_t)tid, vec);
    }
#pragma unroll 1
    for (int r = 0; r < nr; r++) {
        const int i = r * CH_NC * 32 + tid, in = i + CH_NC * 32;
        float v[8], b[8];
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = i < n8 ? nv[j] : 0.0f, b[j] = two && i < n8 ? nb[j] : 0.0f;
        if (in < n8) {
            ld8_cg(nv, p0 + 8 * (size_t)in, vec);
            if (two) ld8_cg(nb, p1 + 8 * (size_t)in, vec);
        }
        if (kind == CK_CHAIN_GLU) {
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] = ck_act(v[j], act) * b[j];
        } else if (kind == CK_CHAIN_NORM) {
            float w[8];
            if (o.w && i < n8) ck_ld8(w, o.w + 8 * (size_t)i, vec);
            else {
#pragma unroll
                for (int j = 0; j < 8; j++) w[j] = 1.0f;
            }
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] = (v[j] + s * b[j]) * inv * w[j];
        }
        round_run(q, i, v, n8, lane, gs, nib); /* all lanes: the rounding shuffles */
    }
}

/* add_rmsnorm_matmul's write: this CTA's slice of x (x + s o, kept by
 * chain_input); h is left unspecified (backend.h) */
__device__ void chain_norm_writes(const ChOp &op) {
    const ck_chain_op &o = op.o;
    const int n8 = o.K / 8, per = (n8 + (int)gridDim.x - 1) / (int)gridDim.x;
    const int i0 = (int)blockIdx.x * per, i1 = min(n8, i0 + per);
    const float *save = reinterpret_cast<const float *>(stash_base());
    for (int e = (int)threadIdx.x; e < 8 * (i1 - i0); e += CH_NC * 32) o.x[8 * (size_t)i0 + e] = save[e];
}

/* tile t of op: weight j, first row and rows */
__device__ __forceinline__ void tile_of(const ChOp &op, int t, int &j, int &row0, int &rows) {
    j = 0;
    while (j + 1 < op.o.nw && t >= op.tend[j]) j++;
    row0 = (t - (j ? op.tend[j - 1] : 0)) * op.rt;
    rows = min(op.rt, op.o.N[j] - row0);
}

/* The consumers' work on one op: the CTA's tiles go to the consumer warps
 * in turn (fill f to warp f mod CH_NC, from slot f mod ns). A warp sums
 * whole rows: chunk by chunk (512 bytes of every row of the tile, 16 per
 * lane), the rounded input of the chunk is read from shared memory once
 * and meets the RT rows' codes (qg_k's arithmetic: exact dp4a sums per 16
 * bytes, s * d and the bias in f32); then the rows' lane sums are added
 * over the warp at once (warp_sum_scatter). */
template <int BITS, int RT, int SDT>
__device__ __noinline__ void op_tiles(const ChOp &op, unsigned f0, int ns, int dbg, int warp, int lane) {
    /* shared memory through its own window (LDS), not generic pointers */
    extern __shared__ __align__(128) uint8_t sm[];
    uint64_t *full = reinterpret_cast<uint64_t *>(sm), *empty = full + CH_MAX_SLOTS;
    const uint8_t *ring = sm + CH_OFF_RING;
    const QxLayout q{ reinterpret_cast<int8_t *>(sm + CH_OFF_XH), reinterpret_cast<int8_t *>(sm + CH_OFF_XL),
                      reinterpret_cast<float *>(sm + CH_OFF_XD), reinterpret_cast<float *>(sm + CH_OFF_XS) };
    constexpr int NW = 128 / BITS / 4; /* 32-bit words of codes as bytes per 16 bytes */
    const int rb = op.rb, gsh = op.gsh, sbrow = op.sbrow, G = (int)gridDim.x, gmask = (1 << gsh) - 1;
    const int ntiles = op.tend[op.o.nw - 1];
    unsigned f = f0 + (unsigned)((warp - (int)(f0 % CH_NC) + CH_NC) % CH_NC);
    for (int t = (int)blockIdx.x + (int)(f - f0) * G; t < ntiles; t += CH_NC * G, f += CH_NC) {
        int j, row0, rows;
        tile_of(op, t, j, row0, rows);
        const int s = (int)(f % (unsigned)ns);
        mb_wait(&full[s], (f / ns) & 1);
        const uint8_t *slot = ring + (size_t)s * CH_SLOT;
        const uint8_t *sc0 = slot + CH_CODES + (int)(((size_t)row0 * sbrow) & 15);
        float acc[RT];
#pragma unroll
        for (int r = 0; r < RT; r++) acc[r] = 0.0f;
        for (int c = 0; c * 512 < rb && dbg != 1; c++) {
            const int o = c * 512 + 16 * lane, k0 = o / BITS * 8, g = k0 >> gsh;
            if (o >= rb) continue;
            const bool first = (k0 & gmask) == 0;
            int xh[NW], xl[NW];
#pragma unroll
            for (int w = 0; w < NW; w += 4) {
                const int at = BITS == 4 ? (2 * c + w / 4) * 512 + 16 * lane : k0 + 4 * w;
                const int4 h4 = *reinterpret_cast<const int4 *>(q.xh + at);
                const int4 l4 = *reinterpret_cast<const int4 *>(q.xl + at);
                xh[w] = h4.x, xh[w + 1] = h4.y, xh[w + 2] = h4.z, xh[w + 3] = h4.w;
                xl[w] = l4.x, xl[w + 1] = l4.y, xl[w + 2] = l4.z, xl[w + 3] = l4.w;
            }
            const float d = q.xd[k0 >> 5], xs = first ? q.xs[g] : 0.0f;
#pragma unroll
            for (int r = 0; r < RT; r++) {
                if (r >= rows) break;
                const uint4 w = *reinterpret_cast<const uint4 *>(slot + r * rb + o);
                const uint8_t *sc = sc0 + r * sbrow;
                const float sv = sb_at(sc, g, SDT), bv = first ? sb_at(sc + CH_SB, g, SDT) : 0.0f;
                const uint32_t w4[4] = { w.x, w.y, w.z, w.w };
                uint32_t cwd[NW];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    if constexpr (BITS == 4) cwd[2 * i] = w4[i] & 0x0f0f0f0fu, cwd[2 * i + 1] = (w4[i] >> 4) & 0x0f0f0f0fu;
                    else cwd[i] = w4[i];
                }
                int h0 = 0, h1 = 0, l0 = 0, l1 = 0; /* independent chains; the sums are exact */
#pragma unroll
                for (int i = 0; i < NW; i += 2) {
                    if constexpr (BITS == 4) {
                        h0 = __dp4a((int)cwd[i], xh[i], h0), h1 = __dp4a((int)cwd[i + 1], xh[i + 1], h1);
                        l0 = __dp4a((int)cwd[i], xl[i], l0), l1 = __dp4a((int)cwd[i + 1], xl[i + 1], l1);
                    } else {
                        h0 = dp4a_us(cwd[i], xh[i], h0), h1 = dp4a_us(cwd[i + 1], xh[i + 1], h1);
                        l0 = dp4a_us(cwd[i], xl[i], l0), l1 = dp4a_us(cwd[i + 1], xl[i + 1], l1);
                    }
                }
                const int si = ((h0 + h1) << 8) + l0 + l1;
                acc[r] = fmaf(sv * d, (float)si, fmaf(bv, xs, acc[r]));
            }
        }
        __syncwarp();
        if (lane == 0) mb_arrive(&empty[s]); /* the slot is read; the sums are in registers */
        const float sum = warp_sum_scatter<RT>(acc, lane);
        const int r = lane / (32 / RT);
        if (lane % (32 / RT) == 0 && r < rows && dbg != 1) op.o.y[j][row0 + r] = sum;
    }
}

#endif

__global__ void __launch_bounds__(CH_THREADS, 1) chain_k(const __grid_constant__ ChArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(128) uint8_t sm[];
    uint64_t *full = reinterpret_cast<uint64_t *>(sm), *empty = full + CH_MAX_SLOTS;
    float *part = reinterpret_cast<float *>(sm + CH_OFF_PART);
    const QxLayout q{ reinterpret_cast<int8_t *>(sm + CH_OFF_XH), reinterpret_cast<int8_t *>(sm + CH_OFF_XL),
                      reinterpret_cast<float *>(sm + CH_OFF_XD), reinterpret_cast<float *>(sm + CH_OFF_XS) };
    uint8_t *ring = sm + CH_OFF_RING;
    const int warp = (int)threadIdx.x >> 5, lane = (int)threadIdx.x & 31, ns = a.ns, G = (int)gridDim.x;
    unsigned *done = a.sync, *rd = a.sync + CK_CHAIN_MAX, *exit_n = a.sync + 2 * CK_CHAIN_MAX;
    if (threadIdx.x == 0) {
        for (int s = 0; s < ns; s++) mb_init(&full[s], 1), mb_init(&empty[s], 1);
        *reinterpret_cast<volatile int *>(sm + CH_OFF_FLAG) = 0;
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    if (warp == CH_NC) { /* the producer: every tile of every op, in the consumers' order */
        if (lane == 0) {
            unsigned f = 0; /* fills so far */
            const unsigned long long T0 = gtime();
            const bool tr = a.trace && (blockIdx.x == 0 || blockIdx.x == gridDim.x - 1);
            unsigned long long ev[CK_CHAIN_MAX + 1];
            for (int i = 0; i < a.n; i++) {
                if (tr) ev[i] = gtime();
                const ChOp &op = a.op[i];
                for (int t = (int)blockIdx.x; t < op.tend[op.o.nw - 1]; t += G, f++) {
                    int j, row0, rows;
                    tile_of(op, t, j, row0, rows);
                    const int s = (int)(f % (unsigned)ns);
                    if (f == CH_FIRST_FILLS) /* the rest waits for op 0's input reads (they queue behind these) */
                        while (!*reinterpret_cast<volatile int *>(sm + CH_OFF_FLAG)) __nanosleep(64);
                    if (f >= (unsigned)ns) mb_wait(&empty[s], ((f / ns) - 1) & 1);
                    const size_t sb0 = (size_t)row0 * op.sbrow, sa = sb0 & ~(size_t)15;
                    const unsigned sbytes = (unsigned)((sb0 + (size_t)rows * op.sbrow + 15 - sa) & ~(size_t)15);
                    const unsigned cbytes = (unsigned)rows * op.rb;
                    uint8_t *slot = ring + (size_t)s * CH_SLOT;
                    if (a.dbg == 2) {
                        mb_arrive(&full[s]);
                        continue;
                    }
                    mb_expect(&full[s], cbytes + 2 * sbytes);
                    bulk_load(slot, static_cast<const uint8_t *>(op.o.wt[j].codes) + (size_t)row0 * op.rb, cbytes,
                              &full[s]);
                    bulk_load(slot + CH_CODES, static_cast<const uint8_t *>(op.o.wt[j].scales) + sa, sbytes, &full[s]);
                    bulk_load(slot + CH_CODES + CH_SB, static_cast<const uint8_t *>(op.o.wt[j].biases) + sa, sbytes,
                              &full[s]);
                }
            }
            if (tr) {
                ev[a.n] = gtime();
                for (int i = 0; i <= a.n; i++)
                    printf("chain trace cta %d producer op %d starts at %.2f us\n", blockIdx.x, i, (ev[i] - T0) / 1e3);
            }
        }
        ck_pdl_wait();
        return;
    }

    /* the consumers */
    const unsigned long long T0 = gtime();
    const bool tr = a.trace && threadIdx.x == 0 && (blockIdx.x == 0 || blockIdx.x == gridDim.x - 1);
    unsigned long long ev[CK_CHAIN_MAX][5];
#define CH_TR(k) \
    if (tr) ev[i][k] = gtime()
    ck_pdl_wait();
    unsigned f = 0;
    for (int i = 0; i < a.n; i++) {
        const ChOp &op = a.op[i];
        CH_TR(0);
        if (i > 0) { /* every CTA through op i - 1 */
            if (threadIdx.x == 0) {
                while (ld_acquire(&done[i - 1]) < (unsigned)G) __nanosleep(32);
                __threadfence();
            }
            cons_sync();
        }
        CH_TR(1);
        if (i > 0 && a.op[i - 1].defer) chain_norm_writes(a.op[i - 1]); /* every CTA has read that x */
        chain_input(op, q, part);
        cons_sync();
        if (i == 0 && threadIdx.x == 0) *reinterpret_cast<volatile int *>(sm + CH_OFF_FLAG) = 1; /* producer: go on */
        CH_TR(2);
        if (op.o.kind == CK_CHAIN_NORM && !op.defer && threadIdx.x == 0) atomicAdd(&rd[i], 1u); /* x and o read */
#define CH_TILES(B, RT, S) op_tiles<B, RT, S>(op, f, ns, a.dbg, warp, lane)
#define CH_RT(B, S)                                                                                                  \
    (op.rt == 1 ? CH_TILES(B, 1, S) : op.rt == 2 ? CH_TILES(B, 2, S) : op.rt == 4 ? CH_TILES(B, 4, S)              \
     : op.rt == 8 ? CH_TILES(B, 8, S) : CH_TILES(B, 16, S))
#define CH_SDT(B) (op.o.sdt == CK_BF16 ? CH_RT(B, CK_BF16) : op.o.sdt == CK_F16 ? CH_RT(B, CK_F16) : CH_RT(B, CK_F32))
        if (op.o.bits == 4) CH_SDT(4);
        else CH_SDT(8);
#undef CH_SDT
#undef CH_RT
#undef CH_TILES
        f += (unsigned)((op.tend[op.o.nw - 1] - (int)blockIdx.x + G - 1) / G); /* this CTA's tiles of the op */
        CH_TR(3);
        if (op.o.kind == CK_CHAIN_NORM && !op.defer) { /* every CTA has read the old x: write this CTA's slice */
            if (threadIdx.x == 0)
                while (ld_acquire(&rd[i]) < (unsigned)G) __nanosleep(32);
            cons_sync();
            chain_norm_writes(op);
        }
        __threadfence();
        cons_sync();
        CH_TR(4);
        if (threadIdx.x == 0) atomicAdd(&done[i], 1u);
    }
#undef CH_TR
    if (tr)
        for (int i = 0; i < a.n; i++)
            printf("chain trace cta %d op %d: begins %.2f, barrier passed %.2f, input rounded %.2f, tiles done (warp 0) "
                   "%.2f, arrives %.2f us\n",
                   blockIdx.x, i, (ev[i][0] - T0) / 1e3, (ev[i][1] - T0) / 1e3, (ev[i][2] - T0) / 1e3,
                   (ev[i][3] - T0) / 1e3, (ev[i][4] - T0) / 1e3);
    /* the last CTA out resets the counters for the next launch (every
     * other CTA is past its last wait) */
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(exit_n, 1u) == (unsigned)G - 1) {
            for (int i = 0; i < CK_CHAIN_MAX; i++) done[i] = 0, rd[i] = 0;
            *exit_n = 0;
            __threadfence();
        }
    }
#endif
}

int g_sms, g_optin; /* the device's multiprocessors and shared memory per block (one kind of GPU per process) */

int chain_device() {
    if (g_sms) return 0;
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (!e) e = cudaDeviceGetAttribute(&g_sms, cudaDevAttrMultiProcessorCount, dev);
    if (!e) e = cudaDeviceGetAttribute(&g_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    return (int)e;
}

int chain_slots() { return g_optin > CH_OFF_RING ? (g_optin - CH_OFF_RING) / CH_SLOT : 0; }

int ilog2(int v) {
    int r = 0;
    while ((1 << r) < v) r++;
    return r;
}

} // namespace

extern "C" size_t ck_chain_sync_bytes(void) { return (2 * CK_CHAIN_MAX + 1) * sizeof(unsigned); }

extern "C" int ck_chain_supported(void) {
    if (chain_device()) return 0;
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, chain_k) != cudaSuccess || fa.ptxVersion < 90) {
        cudaGetLastError();
        return 0;
    }
    int dev = 0, major = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    return major >= 9 && chain_slots() >= CH_NC;
}

/* rows per tile: a power of two whose codes fit a slot and scales a scale slot */
static int chain_rt(int rb, int sbrow) {
    int rt = 1;
    while (2 * rt <= CH_RT_MAX && 2 * rt * rb <= CH_CODES && 2 * rt * sbrow + 32 <= CH_SB) rt *= 2;
    return rt;
}

static int sb_bytes(int sdt) { return sdt == CK_F32 ? 4 : 2; }

extern "C" int ck_chain_fits(const struct ck_chain_op *o) {
    if (chain_device()) return 0;
    if (o->nw < 1 || o->nw > CK_QGEMV_MAX_W || o->K < 32 || o->K > CH_KMAX || o->K % o->gs) return 0;
    if ((o->bits != 4 && o->bits != 8) || (o->gs != 32 && o->gs != 64 && o->gs != 128)) return 0;
    const int rb = o->K / 8 * o->bits, sbrow = o->K / o->gs * sb_bytes(o->sdt);
    if (rb > CH_CODES || sbrow + 32 > CH_SB) return 0;
    for (int j = 0; j < o->nw; j++) {
        const ck_qweight &w = o->wt[j];
        if (o->N[j] < 1 || (uintptr_t)w.codes % 16 || (uintptr_t)w.scales % 16 || (uintptr_t)w.biases % 16 ||
            ((size_t)o->N[j] * sbrow) % 16 || w.bits != o->bits || w.group_size != o->gs || (int)w.sdt != o->sdt)
            return 0;
    }
    if (o->kind == CK_CHAIN_NORM && (!o->x || !o->o || (o->K / 8 + g_sms - 1) / g_sms * 8 > CH_SAVE)) return 0;
    if (o->kind == CK_CHAIN_GLU && (!o->gate || !o->up)) return 0;
    if (o->kind == CK_CHAIN_X && !o->x) return 0;
    return 1;
}

extern "C" int ck_chain(ck_stream st, const struct ck_chain_op *ops, int n, unsigned *sync) {
    if (n < 1 || n > CK_CHAIN_MAX) return (int)cudaErrorInvalidValue;
    int e = chain_device();
    if (e) return e;
    ChArgs a;
    static int dbg = -1;
    if (dbg < 0) dbg = getenv("VLLMC_CUDA_CHAIN_DBG") ? atoi(getenv("VLLMC_CUDA_CHAIN_DBG")) : 0;
    a.dbg = dbg;
    static long launches, trace_at = -1;
    if (trace_at < 0) trace_at = getenv("VLLMC_CUDA_CHAIN_TRACE") ? atol(getenv("VLLMC_CUDA_CHAIN_TRACE")) : 0;
    a.trace = ++launches == trace_at;
    /* a multiple of CH_NC: the fills of a slot then all go to one warp, in order */
    a.n = n, a.sync = sync, a.ns = (chain_slots() < CH_MAX_SLOTS ? chain_slots() : CH_MAX_SLOTS) / CH_NC * CH_NC;
    if (a.ns < CH_NC) return (int)cudaErrorNotSupported;
    for (int i = 0; i < n; i++) {
        if (!ck_chain_fits(&ops[i])) return (int)cudaErrorInvalidValue;
        ChOp &op = a.op[i];
        op.o = ops[i];
        op.rb = ops[i].K / 8 * ops[i].bits;
        op.sbrow = ops[i].K / ops[i].gs * sb_bytes(ops[i].sdt);
        op.rt = chain_rt(op.rb, op.sbrow);
        op.gsh = ilog2(ops[i].gs);
        const ck_chain_op &o = ops[i];
        const float *in[3] = { o.x, o.kind == CK_CHAIN_NORM ? o.o : o.gate, o.kind == CK_CHAIN_NORM ? o.w : o.up };
        op.vec = 1;
        for (int k = 0; k < 3; k++)
            if (in[k] && (uintptr_t)in[k] % 16) op.vec = 0;
        if (o.kind == CK_CHAIN_NORM && o.w && (uintptr_t)o.w % 16) op.vec = 0;
        op.defer = 0;
        if (o.kind == CK_CHAIN_NORM && i + 1 < n) { /* the next op neither reads nor writes x */
            const ck_chain_op &nx = ops[i + 1];
            bool touches = nx.x == o.x || nx.o == o.x || nx.gate == o.x || nx.up == o.x;
            for (int k = 0; k < nx.nw; k++) touches = touches || nx.y[k] == o.x;
            op.defer = !touches;
        }
        int t = 0;
        for (int j = 0; j < CK_QGEMV_MAX_W; j++) {
            if (j < o.nw) t += (o.N[j] + op.rt - 1) / op.rt;
            op.tend[j] = t;
        }
    }
    static bool attr;
    const size_t smem = CH_OFF_RING + (size_t)a.ns * CH_SLOT;
    if (!attr) {
        if ((e = (int)cudaFuncSetAttribute(chain_k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem))) return e;
        attr = true;
    }
    cudaLaunchConfig_t lc = {};
    lc.gridDim = dim3((unsigned)g_sms);
    lc.blockDim = dim3(CH_THREADS);
    lc.dynamicSmemBytes = smem;
    lc.stream = st;
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeCooperative;
    at[0].val.cooperative = 1;
    at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[1].val.programmaticStreamSerializationAllowed = 1;
    lc.attrs = at;
    static int coop = -1, pdl = -1;
    if (coop < 0) coop = !(getenv("VLLMC_CUDA_CHAIN_COOP") && !strcmp(getenv("VLLMC_CUDA_CHAIN_COOP"), "0"));
    if (pdl < 0) pdl = !(getenv("VLLMC_CUDA_CHAIN_PDL") && !strcmp(getenv("VLLMC_CUDA_CHAIN_PDL"), "0"));
    lc.attrs = coop ? at : at + 1;
    lc.numAttrs = (coop ? 1 : 0) + (pdl && ck_pdl_on ? 1 : 0);
    return (int)cudaLaunchKernelEx(&lc, chain_k, a);
}
