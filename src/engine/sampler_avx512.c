/* sampler_avx512.c — sampler_kern.h's vocabulary passes with 16 lanes, built
 * with the Makefile's AVX-512 flags; sampler.c uses them when the CPU has
 * AVX-512 F/BW/DQ/VL. */
#define SK_VW 16
#define SK(name) name##_avx512
#define SK_API static
#include "engine/sampler_kern.h"

extern const struct sampler_kernels sampler_kernels_avx512;
const struct sampler_kernels sampler_kernels_avx512 = {
    "avx512", k_max_avx512, k_first_ge_avx512, k_next_chunk_gt_avx512, k_weights_avx512, k_gather_ge_avx512,
    k_sumexp_avx512, k_count_lp_ge_avx512,
};
