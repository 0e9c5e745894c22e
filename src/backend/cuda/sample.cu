/* sample.cu — sample_rows of the CUDA backend (backend.h): the vocabulary
 * passes of sampling run next to the logits, so a row sends back a few
 * numbers and a short candidate list instead of V floats (DESIGN.md §7).
 * The CPU backend's plain C version (cpu/sample_cpu.c) states the same
 * contract as loops; read the two side by side.
 *
 * One thread block of SR_NT threads per row; each pass reads the row from
 * global memory (coalesced):
 *   1. max and first argmax; with k > 0 also the histogram of the top 11
 *      bits of the order-preserving keys (radix select, first digit);
 *   2. lp: sum exp(l - m) in doubles; wsum: the sum of the weights; DRAW:
 *      the weight sums of groups of
 *      consecutive tokens (at most SR_GROUPS groups, in shared memory); a
 *      block scan over the groups finds the one where u * Z falls and one
 *      warp walks it with a warp scan (ties to the host's walk: the first
 *      token whose running sum exceeds u * Z);
 *   3. k > 0: two more radix digits (11 and 10 bits) give the k-th largest
 *      key exactly (ties counted); the floor; the candidates gathered in id
 *      order (ballot + block prefix per tile of SR_NT tokens);
 *   4. lp with a token: a counting pass for its rank.
 * Sums are doubles of float terms added in another order than the host's,
 * and exp is CUDA's expf, not the sampler's polynomial: weights and sums
 * differ from the host's by float rounding, so a draw within ~1e-7 of a
 * token boundary may differ (sampler.h allows it) and the log-sum-exp may
 * differ in its last bit.
 *
 * Does not: apply logit processors (the engine downloads those rows; top_p
 * is the host's, from the candidates and z), or split one row over several
 * blocks (few rows leave SMs idle). */
#include <float.h>
#include <limits.h>
#include <stdint.h>

#include <cuda_runtime.h>

#include "backend/cuda/cuda_kernels.h"

#define SR_NT 512             /* threads per row */
#define SR_NW (SR_NT / 32)
#define SR_GROUPS 4096        /* DRAW: weight sums kept per row */
#define SR_BINS 2048          /* radix digits of 11 bits */
#define FULL 0xffffffffu

static_assert(SR_BINS == 4 * SR_NT, "radix_pick gives each thread four bins");

struct sr_smem {
    double gsum[SR_GROUPS]; /* DRAW: weight sum of each group */
    int hist[SR_BINS];      /* radix histogram */
    double rd[SR_NW];       /* per-warp partials of the block reductions */
    float rf[SR_NW];
    int ri[SR_NW];
    int found, digit, rem, tok;
    double base;
};

/* Order-preserving keys of floats (NaN as -inf): a larger value, a larger key. */
__device__ __forceinline__ uint32_t key_of(float x) {
    uint32_t b = __float_as_uint(x);
    if (x != x) b = 0xff800000u;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_value(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/* exp, 0 below -86 as the sampler's (and NaN -> 0) */
__device__ __forceinline__ float wexp(float x) { return x >= -86.0f ? expf(x) : 0.0f; }

__device__ __forceinline__ float weight(float x, float m, float inv_t, float min_p) {
    float e = wexp((x - m) * inv_t);
    return e >= min_p ? e : 0.0f;
}

/* ---- block reductions (every thread gets the result; SR_NT threads) ---- */

__device__ double block_sum_d(double v, sr_smem &sm) {
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sm.rd[threadIdx.x >> 5] = v;
    __syncthreads();
    double s = 0;
    for (int w = 0; w < SR_NW; w++) s += sm.rd[w];
    return s;
}

__device__ int block_sum_i(int v, sr_smem &sm) {
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sm.ri[threadIdx.x >> 5] = v;
    __syncthreads();
    int s = 0;
    for (int w = 0; w < SR_NW; w++) s += sm.ri[w];
    return s;
}

__device__ int block_max_i(int v, sr_smem &sm) {
    for (int o = 16; o; o >>= 1) v = max(v, __shfl_xor_sync(FULL, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sm.ri[threadIdx.x >> 5] = v;
    __syncthreads();
    int s = sm.ri[0];
    for (int w = 1; w < SR_NW; w++) s = max(s, sm.ri[w]);
    return s;
}

/* the larger value; on equal values the lower index */
__device__ __forceinline__ void arg_take(float &v, int &i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
}

__device__ void block_argmax(float &v, int &i, sr_smem &sm) {
    for (int o = 16; o; o >>= 1) arg_take(v, i, __shfl_xor_sync(FULL, v, o), __shfl_xor_sync(FULL, i, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sm.rf[threadIdx.x >> 5] = v, sm.ri[threadIdx.x >> 5] = i;
    __syncthreads();
    v = sm.rf[0], i = sm.ri[0];
    for (int w = 1; w < SR_NW; w++) arg_take(v, i, sm.rf[w], sm.ri[w]);
}

/* Exclusive prefix of v over the threads in order; *total the sum of all. */
__device__ double block_excl_scan_d(double v, double *total, sr_smem &sm) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    double x = v;
    for (int o = 1; o < 32; o <<= 1) {
        double y = __shfl_up_sync(FULL, x, o);
        if (lane >= o) x += y;
    }
    double ex = __shfl_up_sync(FULL, x, 1);
    if (lane == 0) ex = 0;
    __syncthreads();
    if (lane == 31) sm.rd[w] = x;
    __syncthreads();
    double base = 0, tot = 0;
    for (int i = 0; i < SR_NW; i++) {
        if (i < w) base += sm.rd[i];
        tot += sm.rd[i];
    }
    *total = tot;
    return base + ex;
}

__device__ int block_excl_scan_i(int v, sr_smem &sm) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int x = v;
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(FULL, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) sm.ri[w] = x;
    __syncthreads();
    int base = 0;
    for (int i = 0; i < w; i++) base += sm.ri[i];
    return base + x - v;
}

/* The digit (bin of hist[0..nb)) that holds the rem-th largest key, counting
 * from the top; rem becomes the rank within that bin. */
__device__ int radix_pick(sr_smem &sm, int nb, int &rem) {
    int c[4], s = 0;
    for (int u = 0; u < 4; u++) { /* thread t: bins nb-1-4t .. nb-4-4t, from the top */
        int r = 4 * (int)threadIdx.x + u;
        c[u] = r < nb ? sm.hist[nb - 1 - r] : 0;
        s += c[u];
    }
    int above = block_excl_scan_i(s, sm);
    for (int u = 0; u < 4; u++) {
        if (above < rem && rem <= above + c[u]) {
            sm.digit = nb - 1 - (4 * (int)threadIdx.x + u);
            sm.rem = rem - above;
        }
        above += c[u];
    }
    __syncthreads();
    const int d = sm.digit;
    rem = sm.rem;
    __syncthreads();
    return d;
}

/* backend.h's floor: f0 lowered until (floor - m) - L < (f0 - m) - L (-inf if not) */
__device__ float lowered_floor(float f0, float m, float L) {
    float y = (f0 - m) - L, f = f0, step = fmaxf(fabsf(f0 - m), fabsf(L)) * 0x1p-22f + FLT_MIN;
    for (int it = 0; it < 64 && !((f - m) - L < y); it++) {
        f = f0 - step;
        step *= 2;
    }
    return (f - m) - L < y ? f : -INFINITY;
}

__global__ void __launch_bounds__(SR_NT) k_sample_rows(const float *__restrict__ logits, int V,
                                                       const struct ck_sample_req *__restrict__ reqs,
                                                       struct ck_sample_res *__restrict__ res,
                                                       int32_t *__restrict__ cand_id, float *__restrict__ cand_val) {
    __shared__ sr_smem sm;
    const struct ck_sample_req q = reqs[blockIdx.x];
    const float *__restrict__ l = logits + (size_t)q.row * (size_t)V;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const bool sel = q.k > 0;

    /* 1. max, first argmax; the first radix digit */
    if (sel) {
        for (int b = tid; b < SR_BINS; b += SR_NT) sm.hist[b] = 0;
        __syncthreads();
    }
    float m = -INFINITY;
    int amax = INT_MAX;
    for (int i = tid; i < V; i += SR_NT) {
        const float x = l[i];
        if (x > m || (x == m && amax == INT_MAX)) m = x, amax = i;
        if (sel) atomicAdd(&sm.hist[key_of(x) >> 21], 1);
    }
    block_argmax(m, amax, sm);
    if (amax == INT_MAX) amax = 0;

    /* 2. log-sum-exp; DRAW weights by group */
    const bool draw = q.mode == CK_SAMPLE_DRAW && m > -INFINITY;
    const int gs = 32 * ((V + 32 * SR_GROUPS - 1) / (32 * SR_GROUPS)), G = (V + gs - 1) / gs;
    double se = 0, z = 0;
    if (draw) {
        for (int g = warp; g < G; g += SR_NW) {
            const int end = min(V, (g + 1) * gs);
            double acc = 0;
            for (int j = g * gs + lane; j < end; j += 32) {
                const float x = l[j];
                acc += weight(x, m, q.inv_t, q.min_p);
                if (q.lp) se += wexp(x - m);
            }
            for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(FULL, acc, o);
            if (lane == 0) sm.gsum[g] = acc;
        }
    } else if ((q.lp || q.wsum) && m > -INFINITY) {
        double zs = 0;
        for (int i = tid; i < V; i += SR_NT) {
            const float x = l[i];
            if (q.lp) se += wexp(x - m);
            if (q.wsum) zs += weight(x, m, q.inv_t, q.min_p);
        }
        if (q.wsum) z = block_sum_d(zs, sm);
    }
    float L = 0;
    if (q.lp) {
        se = block_sum_d(se, sm); /* its barriers also publish gsum */
        L = m > -INFINITY ? (float)log(se) : 0.0f;
    }

    int tok = -1;
    if (q.mode == CK_SAMPLE_ARGMAX) {
        tok = amax;
    } else if (q.mode == CK_SAMPLE_DRAW && !draw) {
        tok = 0; /* every logit -inf */
    } else if (draw) {
        __syncthreads();
        const int per = (G + SR_NT - 1) / SR_NT, g0 = min(G, tid * per), g1 = min(G, g0 + per);
        double ts = 0;
        for (int g = g0; g < g1; g++) ts += sm.gsum[g];
        double Z;
        double c = block_excl_scan_d(ts, &Z, sm);
        z = Z;
        const double target = q.u * Z;
        if (tid == 0) sm.found = INT_MAX, sm.tok = -1;
        __syncthreads();
        int gf = -1;
        double gb = 0;
        for (int g = g0; g < g1; g++) {
            const double nc = c + sm.gsum[g];
            if (nc > target) {
                gf = g, gb = c;
                break;
            }
            c = nc;
        }
        if (gf >= 0) atomicMin(&sm.found, gf);
        __syncthreads();
        if (gf >= 0 && gf == sm.found) sm.base = gb;
        __syncthreads();
        const int gsel = sm.found;
        if (gsel != INT_MAX && warp == 0) { /* the first token of the group whose running sum passes target */
            double cum = sm.base;
            const int end = min(V, (gsel + 1) * gs);
            int hit = -1;
            for (int j0 = gsel * gs; j0 < end && hit < 0; j0 += 32) {
                const int j = j0 + lane;
                const float w = j < end ? weight(l[j], m, q.inv_t, q.min_p) : 0.0f;
                double x = w;
                for (int o = 1; o < 32; o <<= 1) {
                    double y = __shfl_up_sync(FULL, x, o);
                    if (lane >= o) x += y;
                }
                const unsigned b = __ballot_sync(FULL, w > 0 && cum + x > target);
                if (b) hit = j0 + __ffs(b) - 1;
                cum += __shfl_sync(FULL, x, 31);
            }
            if (lane == 0) sm.tok = hit;
        }
        __syncthreads();
        tok = sm.tok;
        if (tok < 0) { /* rounding left u * Z at or past the end: the last weight > 0 up to there */
            const int end = gsel == INT_MAX ? V : min(V, (gsel + 1) * gs);
            int last = -1;
            for (int i = tid; i < end; i += SR_NT)
                if (weight(l[i], m, q.inv_t, q.min_p) > 0) last = i;
            last = block_max_i(last, sm);
            tok = last < 0 ? 0 : last;
        }
    }

    /* 3. the k-th largest key (radix select), the floor, the candidates */
    float kth = 0, fl = 0;
    int n_cand = 0;
    if (sel) {
        __syncthreads();
        int rem = min(q.k, V); /* k <= V by contract; never ask for more keys than there are */
        uint32_t prefix = (uint32_t)radix_pick(sm, 2048, rem) << 21, pmask = 0x7ffu << 21;
        for (int pass = 1; pass <= 2; pass++) {
            const int shift = pass == 1 ? 10 : 0, nb = pass == 1 ? 2048 : 1024;
            for (int b = tid; b < SR_BINS; b += SR_NT) sm.hist[b] = 0;
            __syncthreads();
            for (int i = tid; i < V; i += SR_NT) {
                const uint32_t key = key_of(l[i]);
                if ((key & pmask) == prefix) atomicAdd(&sm.hist[(key >> shift) & (uint32_t)(nb - 1)], 1);
            }
            __syncthreads();
            prefix |= (uint32_t)radix_pick(sm, nb, rem) << shift;
            pmask |= (uint32_t)(nb - 1) << shift;
        }
        kth = key_value(prefix);
        /* the sampler's tie_floor, without contraction into an FMA (the host has none) */
        fl = __fsub_rn(kth, __fadd_rn(__fmul_rn(__fmul_rn(fabsf(kth), 8.0f), FLT_EPSILON), FLT_MIN));
        if (q.lp && m > -INFINITY && fl > -INFINITY) fl = lowered_floor(fl, m, L);
        for (int t0 = 0; t0 < V; t0 += SR_NT) {
            const int i = t0 + tid;
            const float x = i < V ? l[i] : 0.0f;
            const bool p = i < V && x >= fl;
            const int cnt = __syncthreads_count(p);
            if (cnt == 0) continue;
            const unsigned b = __ballot_sync(FULL, p);
            if (lane == 0) sm.ri[warp] = __popc(b);
            __syncthreads();
            int pos = n_cand + __popc(b & ((1u << lane) - 1));
            for (int w = 0; w < warp; w++) pos += sm.ri[w];
            if (p && pos < q.cand_cap) {
                cand_id[q.cand_off + pos] = i;
                cand_val[q.cand_off + pos] = x;
            }
            n_cand += cnt;
            __syncthreads();
        }
    }

    /* 4. the chosen token's logprob and rank */
    float lp = 0;
    int rank = 0;
    if (q.lp && tok >= 0) {
        if (m == -INFINITY) {
            lp = -INFINITY, rank = V;
        } else {
            lp = (l[tok] - m) - L;
            int c = 0;
            for (int i = tid; i < V; i += SR_NT) c += (l[i] - m) - L >= lp;
            rank = block_sum_i(c, sm);
        }
    }
    if (tid == 0) res[blockIdx.x] = (struct ck_sample_res){ tok, rank, lp, m, L, kth, fl, n_cand, z };
}

extern "C" int ck_sample_rows(ck_stream st, const float *logits, int V, const struct ck_sample_req *req, int n,
                              struct ck_sample_res *res, int32_t *cand_id, float *cand_val) {
    if (n <= 0) return 0;
    k_sample_rows<<<n, SR_NT, 0, (cudaStream_t)st>>>(logits, V, req, res, cand_id, cand_val);
    return (int)cudaGetLastError();
}
