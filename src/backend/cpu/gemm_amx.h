/* gemm_amx.h — Intel AMX bf16 matmul for prefill (see gemm_amx.c).
 * x86-64 only; the caller checks amx_init() once per process. */
#ifndef VLLMC_GEMM_AMX_H
#define VLLMC_GEMM_AMX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

/* Batches smaller than this stay on the f32 SIMD path. */
#define AMX_MIN_T 16

/* True when the CPU has AMX-BF16 and the kernel granted tile state. */
bool amx_init(void);
/* Bytes of the packed activation buffer for T tokens of K (K % 32 == 0). */
size_t amx_packed_bytes(int T, int K);
/* Pack token blocks [tb0, tb1) (16 tokens each) of x[T][K] into xp. */
void amx_pack_x(uint16_t *xp, const float *x, int T, int K, int tb0, int tb1);
/* y rows n in [n0, n1) (multiples of 16 from n0) for all T tokens. */
void amx_gemm_rows(float *y, const uint16_t *xp, const struct bk_weight *w, int T, int64_t n0, int64_t n1);

#endif
