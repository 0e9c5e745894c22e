/* sampler_kern.h — the sampler's passes over a whole vocabulary row, written
 * once with GCC vector extensions and compiled for each instruction set:
 * sampler.c includes it with 4 lanes (SSE2 on x86-64, NEON on AArch64),
 * sampler_avx2.c with 8 and sampler_avx512.c with 16; sampler.c picks a set
 * at run time from the CPU's features (struct sampler_kernels).
 *
 * The includer defines SK_VW (lanes) and SK(name) (the name of this set's
 * copy), and SK_API (storage class of the kernels). Everything else here is
 * static inline, so no vector type crosses a call between sets.
 *
 * exp(x) for x <= 0: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, and
 * the Taylor series of e^r to degree 7 (truncation error r^8/8! < 6e-9, under
 * a tenth of a float ulp). Below SK_EXP_MIN (and for NaN) the result is 0,
 * which keeps 2^n a normal number: e^-86 is 4e-38 of the most likely token.
 *
 * Does not: allocate, or know about sampling parameters; sampler.c does the
 * logic and calls these for the O(V) loops. */

#ifndef VLLMC_SAMPLER_KERN_COMMON
#define VLLMC_SAMPLER_KERN_COMMON
#include <stdint.h>
#include <string.h>

#define SK_BLK 256 /* tokens per partial sum of k_weights */

struct sampler_kernels {
    const char *name;
    /* max of l[0..n) (NaN ignored; -inf when n = 0) */
    float (*max)(const float *l, int n);
    /* first i with l[i] >= t, or -1 */
    int (*first_ge)(const float *l, int n, float t);
    /* from i (a multiple of 32) on, the first 32-token chunk holding a value
     * > t; the start of the last partial chunk when none does */
    int (*next_chunk_gt)(const float *l, int i, int n, float t);
    /* ev[i] = exp((l[i] - m) * invT), 0 where under min_p; bsum[b] = sum of
     * block b (SK_BLK tokens). Returns the sum of all. (vLLM computes
     * l / T - max(l / T); a multiply instead of a divide per token changes the
     * weights by float rounding only.) */
    double (*weights)(const float *l, int n, float m, float invT, float min_p, float *ev, double *bsum);
    /* (i, v[i]) for every v[i] >= t into id/out, in order; returns how many.
     * out may be v itself. */
    int (*gather_ge)(const float *v, int n, float t, int32_t *id, float *out);
    /* sum of exp(l[i] - m) */
    double (*sumexp)(const float *l, int n, float m);
    /* how many (l[i] - m) - L >= t */
    int (*count_lp_ge)(const float *l, int n, float m, float L, float t);
};

#define SK_EXP_MIN (-86.0f)
#define SK_EXP_MAGIC 12582912.0f /* 1.5 * 2^23: x + MAGIC rounds x to an integer */
#define SK_EXP_MAGIC_BITS 0x4b400000u
#define SK_LOG2E 1.44269504088896341f
#define SK_LN2_HI 0.693145751953125f      /* ln 2 in few bits, so n * LN2_HI is exact */
#define SK_LN2_LO 1.42860682030941723e-6f /* ln 2 - LN2_HI */

static inline float sk_exp1(float x) {
    if (!(x >= SK_EXP_MIN)) return 0.0f;
    float t = x * SK_LOG2E + SK_EXP_MAGIC, n = t - SK_EXP_MAGIC;
    uint32_t ni, b;
    memcpy(&ni, &t, 4);
    ni -= SK_EXP_MAGIC_BITS;
    float r = x - n * SK_LN2_HI;
    r = r - n * SK_LN2_LO;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    memcpy(&b, &p, 4);
    b += ni << 23;
    memcpy(&p, &b, 4);
    return p;
}
#endif

#if !defined(SK_VW) || !defined(SK) || !defined(SK_API)
#error "define SK_VW, SK(name) and SK_API before including sampler_kern.h"
#endif

#include <math.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

typedef float SK(vf) __attribute__((vector_size(SK_VW * 4)));
typedef int32_t SK(vi) __attribute__((vector_size(SK_VW * 4)));
typedef uint32_t SK(vu) __attribute__((vector_size(SK_VW * 4)));
#define vf SK(vf)
#define vi SK(vi)
#define vu SK(vu)

static inline vf SK(vld)(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void SK(vst)(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf SK(vset)(float x) { return (vf){ 0 } + x; }
static inline vf SK(vsel)(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static inline vf SK(vand)(vi m, vf a) { return (vf)((vi)a & m); }

/* max(a, x) lane-wise; a lane where x is NaN keeps a */
static inline vf SK(vmax)(vf a, vf x) {
#if SK_VW == 16 && defined(__AVX512F__)
    return _mm512_max_ps(x, a);
#elif SK_VW == 8 && defined(__AVX__)
    return _mm256_max_ps(x, a);
#elif SK_VW == 4 && defined(__SSE__)
    return _mm_max_ps(x, a);
#elif SK_VW == 4 && defined(__aarch64__)
    return vmaxnmq_f32(a, x);
#else
    return SK(vsel)(x > a, x, a);
#endif
}

/* any lane of a comparison result set */
static inline int SK(vany)(vi m) {
#if SK_VW == 16 && defined(__AVX512DQ__)
    return _mm512_movepi32_mask((__m512i)m) != 0;
#elif SK_VW == 8 && defined(__AVX__)
    return _mm256_movemask_ps((__m256)m) != 0;
#elif SK_VW == 4 && defined(__SSE__)
    return _mm_movemask_ps((__m128)m) != 0;
#elif SK_VW == 4 && defined(__aarch64__)
    return vmaxvq_u32((uint32x4_t)m) != 0;
#else
    int a = 0;
    for (int i = 0; i < SK_VW; i++) a |= m[i];
    return a != 0;
#endif
}

static inline float SK(hmax)(vf v) {
    float m = v[0];
    for (int i = 1; i < SK_VW; i++) m = v[i] > m ? v[i] : m;
    return m;
}

static inline float SK(hsum)(vf v) {
    float s = 0;
    for (int i = 0; i < SK_VW; i++) s += v[i];
    return s;
}

static inline vf SK(vexp)(vf x) {
    vi ok = x >= SK(vset)(SK_EXP_MIN);
    x = SK(vsel)(ok, x, SK(vset)(SK_EXP_MIN));
    vf t = x * SK_LOG2E + SK_EXP_MAGIC, n = t - SK_EXP_MAGIC;
    vu ni = (vu)t - SK_EXP_MAGIC_BITS;
    vf r = x - n * SK_LN2_HI;
    r = r - n * SK_LN2_LO;
    vf p = SK(vset)(1.0f / 5040);
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return SK(vand)(ok, (vf)((vu)p + (ni << 23)));
}

SK_API float SK(k_max)(const float *l, int n) {
    vf a = SK(vset)(-INFINITY), b = a, c = a, d = a;
    int i = 0;
    for (; i + 4 * SK_VW <= n; i += 4 * SK_VW) {
        a = SK(vmax)(a, SK(vld)(l + i));
        b = SK(vmax)(b, SK(vld)(l + i + SK_VW));
        c = SK(vmax)(c, SK(vld)(l + i + 2 * SK_VW));
        d = SK(vmax)(d, SK(vld)(l + i + 3 * SK_VW));
    }
    for (; i + SK_VW <= n; i += SK_VW) a = SK(vmax)(a, SK(vld)(l + i));
    float m = SK(hmax)(SK(vmax)(SK(vmax)(a, b), SK(vmax)(c, d)));
    for (; i < n; i++) m = l[i] > m ? l[i] : m;
    return m;
}

SK_API int SK(k_first_ge)(const float *l, int n, float t) {
    vf vt = SK(vset)(t);
    int i = 0;
    for (; i + 2 * SK_VW <= n; i += 2 * SK_VW)
        if (SK(vany)((SK(vld)(l + i) >= vt) | (SK(vld)(l + i + SK_VW) >= vt))) break;
    for (; i < n; i++)
        if (l[i] >= t) return i;
    return -1;
}

SK_API int SK(k_next_chunk_gt)(const float *l, int i, int n, float t) {
    vf vt = SK(vset)(t);
    for (; i + 32 <= n; i += 32) {
        vi hit = SK(vld)(l + i) > vt;
        for (int j = SK_VW; j < 32; j += SK_VW) hit |= SK(vld)(l + i + j) > vt;
        if (SK(vany)(hit)) return i;
    }
    return i;
}

SK_API double SK(k_weights)(const float *l, int n, float m, float invT, float min_p, float *ev, double *bsum) {
    vf vT = SK(vset)(invT), vm = SK(vset)(m), vmp = SK(vset)(min_p);
    double Z = 0;
    for (int b = 0, i0 = 0; i0 < n; b++, i0 += SK_BLK) {
        int i1 = i0 + SK_BLK < n ? i0 + SK_BLK : n, i = i0;
        vf acc = SK(vset)(0);
        for (; i + SK_VW <= i1; i += SK_VW) {
            vf e = SK(vexp)((SK(vld)(l + i) - vm) * vT);
            e = SK(vand)(e >= vmp, e);
            SK(vst)(ev + i, e);
            acc += e;
        }
        float bs = SK(hsum)(acc);
        for (; i < i1; i++) {
            float e = sk_exp1((l[i] - m) * invT);
            if (!(e >= min_p)) e = 0;
            ev[i] = e;
            bs += e;
        }
        bsum[b] = bs;
        Z += bs;
    }
    return Z;
}

SK_API int SK(k_gather_ge)(const float *v, int n, float t, int32_t *id, float *out) {
    vf vt = SK(vset)(t);
    int c = 0, i = 0;
    for (; i + 2 * SK_VW <= n; i += 2 * SK_VW) {
        if (!SK(vany)((SK(vld)(v + i) >= vt) | (SK(vld)(v + i + SK_VW) >= vt))) continue;
        for (int j = i; j < i + 2 * SK_VW; j++) { /* without branches; c <= j keeps it in place-safe */
            float x = v[j];
            id[c] = j, out[c] = x;
            c += x >= t;
        }
    }
    for (; i < n; i++) {
        float x = v[i];
        id[c] = i, out[c] = x;
        c += x >= t;
    }
    return c;
}

SK_API double SK(k_sumexp)(const float *l, int n, float m) {
    vf vm = SK(vset)(m);
    double sum = 0;
    for (int i0 = 0; i0 < n; i0 += SK_BLK) {
        int i1 = i0 + SK_BLK < n ? i0 + SK_BLK : n, i = i0;
        vf a = SK(vset)(0), b = a;
        for (; i + 2 * SK_VW <= i1; i += 2 * SK_VW) {
            a += SK(vexp)(SK(vld)(l + i) - vm);
            b += SK(vexp)(SK(vld)(l + i + SK_VW) - vm);
        }
        for (; i + SK_VW <= i1; i += SK_VW) a += SK(vexp)(SK(vld)(l + i) - vm);
        float bs = SK(hsum)(a + b);
        for (; i < i1; i++) bs += sk_exp1(l[i] - m);
        sum += bs;
    }
    return sum;
}

SK_API int SK(k_count_lp_ge)(const float *l, int n, float m, float L, float t) {
    vf vm = SK(vset)(m), vL = SK(vset)(L), vt = SK(vset)(t);
    vi a = { 0 }, b = { 0 };
    int i = 0;
    for (; i + 2 * SK_VW <= n; i += 2 * SK_VW) {
        a -= (SK(vld)(l + i) - vm) - vL >= vt;
        b -= (SK(vld)(l + i + SK_VW) - vm) - vL >= vt;
    }
    a += b;
    int c = 0;
    for (int j = 0; j < SK_VW; j++) c += a[j];
    for (; i < n; i++) c += (l[i] - m) - L >= t;
    return c;
}

#undef vf
#undef vi
#undef vu
