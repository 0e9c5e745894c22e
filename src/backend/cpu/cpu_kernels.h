/* cpu_kernels.h — the per-ISA kernel sets of the CPU backend.
 *
 * A kernel set is a table of single-threaded kernels over the ranges they are
 * given; cpu.c picks one set at run time from the CPU's features and splits
 * every op across its thread pool. The portable set (cpu.c, over cpu_ref.c) is
 * the reference the SIMD sets are tested against (tests/unit/test_kernels.c).
 * Each SIMD set lives in kernels_<isa>.c, compiled with that ISA's flags
 * (Makefile) and only called after cpu.c has checked the CPU supports it.
 *
 * What this does not do: no threading, no allocation; scratch comes from
 * cpu.c. */
#ifndef VLLMC_CPU_KERNELS_H
#define VLLMC_CPU_KERNELS_H

#include "backend/backend.h"

struct cpu_kernels {
    const char *name;
    /* y[t][n] for t < T, n in [n0, n1). xb is NULL, or (only for BF16
     * weights, and only in a set with bf16_dot) the activations split into
     * two bf16 parts, [T][2][K] (per token hi[K] then lo[K], x = hi + lo to
     * within 2^-17 |x|): the kernel multiplies both parts in bf16 with f32
     * accumulation, so the result carries f32-like activation precision at
     * bf16-instruction speed (AMX / vdpbf16ps).
     * scratch: this thread's matmul_scratch(K) bytes, 64-byte aligned. */
    void (*matmul_rows)(float *y, const float *x, const uint16_t *xb, const struct bk_weight *w, int T,
                        int64_t n0, int64_t n1, void *scratch);
    size_t (*matmul_scratch)(int64_t K); /* NULL: none */
    /* Optional (NULL: none): cpu.c calls it on each thread, with that
     * thread's scratch, before the thread's matmul_rows calls of one matmul
     * (same xb, T and K; rows come in several calls), so a set that works on
     * the activations in a packed form builds it once per matmul. */
    void (*matmul_pack)(const uint16_t *xb, int T, int64_t K, void *scratch);
    /* matmul_rows accepts xb (uses instructions beyond the set's baseline:
     * cpu.c passes xb only where the CPU has them, e.g. AVX512_BF16) */
    bool bf16_dot;
    /* round f32 to bf16 (nearest even, as f32_to_bf16) */
    void (*to_bf16)(uint16_t *dst, const float *src, size_t n);
    /* hi = bf16(x), lo = bf16(x - hi); required where bf16_dot is set */
    void (*to_bf16_split)(uint16_t *hi, uint16_t *lo, const float *src, size_t n);
    void (*embed)(float *out, const struct bk_weight *table, const int32_t *ids, int T, float scale);
    void (*rmsnorm)(float *y, const float *x, const float *w, int R, int n, float eps);
    void (*rope)(float *x, const int32_t *pos, int T, int H, int D, const struct bk_rope *r);
    void (*glu)(float *out, const float *gate, const float *up, int T, int F, int ld, enum bk_act act);
    void (*kv_store)(const struct bk_kv *kv, const float *k, const float *v, const int32_t *slots, int T);
    /* Attention of query row t of sequence s for the query heads of kv head
     * hk (all heads when the set has attn_all_heads). scratch holds
     * (H / Hkv) * seq_len[s] floats. */
    void (*attention)(float *out, const float *q, const struct bk_kv *kv, const struct bk_attn_batch *b,
                      const struct bk_attn_params *p, int s, int t, int hk, float *scratch);
    bool attn_all_heads;
    /* Optional (NULL: none): attention of query rows [t0, t1) of sequence s
     * for the G query heads of kv head hk together, (t1 - t0) * G <= 32, no
     * softcap; each cached K/V row is read once for all of them (prefill).
     * scratch: attention_block_scratch(D) floats. */
    void (*attention_block)(float *out, const float *q, const struct bk_kv *kv, const struct bk_attn_batch *b,
                            const struct bk_attn_params *p, int s, int t0, int t1, int hk, float *scratch);
    size_t (*attention_block_scratch)(int D);
    void (*add_scaled)(float *y, const float *x, float s, size_t n);
    void (*scale)(float *x, size_t n, float s);
};

extern const struct cpu_kernels cpu_kernels_portable;
#if defined(__x86_64__)
extern const struct cpu_kernels cpu_kernels_avx512; /* AVX-512 F/BW/DQ/VL + FMA + F16C */
extern const struct cpu_kernels cpu_kernels_avx2;   /* AVX2 + FMA + F16C */
/* cpu_kernels_avx512 whose bf16-dot matmul runs prefill-sized calls on AMX
 * tiles; usable only after avx512_amx_init() returned true. */
extern const struct cpu_kernels cpu_kernels_avx512_amx;
/* Check AMX-TILE/AMX-BF16 and ask Linux for the tile state (process-wide,
 * once; later calls return the first answer). */
bool avx512_amx_init(void);
#endif
#if defined(__aarch64__)
extern const struct cpu_kernels cpu_kernels_neon;
#endif

#endif
