/* sampler_avx2.c — sampler_kern.h's vocabulary passes with 8 lanes, built
 * with the Makefile's AVX2 + FMA flags; sampler.c uses them when the CPU has
 * AVX2 and FMA. */
#define SK_VW 8
#define SK(name) name##_avx2
#define SK_API static
#include "engine/sampler_kern.h"

extern const struct sampler_kernels sampler_kernels_avx2;
const struct sampler_kernels sampler_kernels_avx2 = {
    "avx2", k_max_avx2, k_first_ge_avx2, k_next_chunk_gt_avx2, k_weights_avx2, k_gather_ge_avx2, k_sumexp_avx2,
    k_count_lp_ge_avx2,
};
