/* gemm_amx.c — prefill matmul for BF16 weights on Intel AMX (TDPBF16PS).
 *
 * y[T][N] = x[T][K] · W^T is computed as y^T = W · x^T so that the weight,
 * the big operand, is the A tile and loads straight from its stored row-major
 * layout (16 rows × 32 bf16 per tile, stride K): no repacking of weights, no
 * second copy in memory. The activations, small and f32, are rounded to bf16
 * once per call into the VNNI layout the B tile needs (amx_pack_x):
 *   xp[tb][kb][r][2*t + j] = bf16(x[16*tb + t][32*kb + 2*r + j])
 * i.e. for each 16-token block and 32-wide K block, 16 rows of 64 bytes.
 * Tokens past T are zero. One panel of 32 weight rows (2 A tiles) stays in
 * cache while every token block streams past it; four C tiles accumulate a
 * 32×32 block of y^T over K.
 *
 * Rounding activations to bf16 is what bf16 inference does (transformers in
 * bf16, llama.cpp); the backend uses this path only for BF16 weights and
 * batches of at least AMX_MIN_T tokens (prefill). Decode stays on the exact
 * f32 path, which is memory-bound anyway.
 *
 * Requires: K % 32 == 0 (checked by the caller); rows are processed in panels
 * of 32 and 16, a tail of fewer than 16 rows is left to the caller. */
#include "backend/cpu/gemm_amx.h"

#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

struct tile_cfg {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

bool amx_init(void) {
    if (!__builtin_cpu_supports("avx512f")) return false;
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    bool amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    if (!amx_bf16 || !amx_tile) return false;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

size_t amx_packed_bytes(int T, int K) { return (size_t)((T + 15) / 16) * (size_t)(K / 32) * 1024; }

void amx_pack_x(uint16_t *xp, const float *x, int T, int K, int tb0, int tb1) {
    const int KB = K / 32;
    for (int tb = tb0; tb < tb1; tb++) {
        for (int kb = 0; kb < KB; kb++) {
            uint16_t *dst = xp + ((size_t)tb * KB + kb) * 512;
            for (int t = 0; t < 16; t++) {
                int tt = tb * 16 + t;
                if (tt >= T) {
                    for (int r = 0; r < 16; r++) dst[r * 32 + 2 * t] = dst[r * 32 + 2 * t + 1] = 0;
                    continue;
                }
                /* 32 consecutive floats -> bf16 (round to nearest even), scattered in pairs */
                __m512 lo = _mm512_loadu_ps(x + (size_t)tt * K + kb * 32);
                __m512 hi = _mm512_loadu_ps(x + (size_t)tt * K + kb * 32 + 16);
                __m512i pk = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
                uint32_t pairs[16];
                _mm512_storeu_si512(pairs, pk);
                uint32_t *d32 = (uint32_t *)dst;
                for (int r = 0; r < 16; r++) d32[r * 16 + t] = pairs[r];
            }
        }
    }
}

static void tiles_config(void) {
    struct tile_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);
}

/* C tile [16 n][16 t] (f32) -> y[t][n0 + n] for the valid tokens */
static inline void store_c(float *y, int N, const float *c, int t0, int T, int64_t n0) {
    int nt = T - t0 < 16 ? T - t0 : 16;
    for (int t = 0; t < nt; t++) {
        float *yr = y + (size_t)(t0 + t) * N + n0;
        for (int n = 0; n < 16; n++) yr[n] = c[n * 16 + t];
    }
}

void amx_gemm_rows(float *y, const uint16_t *xp, const struct bk_weight *w, int T, int64_t n0, int64_t n1) {
    const int K = (int)w->cols, KB = K / 32, TB = (T + 15) / 16, N = (int)w->rows;
    const uint16_t *W = (const uint16_t *)w->data;
    const size_t stride = (size_t)K * 2; /* bytes per weight row */
    float c[4][256] __attribute__((aligned(64)));
    tiles_config();
    int64_t n = n0;
    for (; n + 32 <= n1; n += 32) {
        const uint16_t *w0 = W + (size_t)n * K, *w1 = W + (size_t)(n + 16) * K;
        int tb = 0;
        for (; tb + 2 <= TB; tb += 2) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            const uint16_t *b0 = xp + (size_t)tb * KB * 512, *b1 = xp + (size_t)(tb + 1) * KB * 512;
            for (int kb = 0; kb < KB; kb++) {
                _tile_loadd(4, w0 + kb * 32, stride);
                _tile_loadd(5, w1 + kb * 32, stride);
                _tile_loadd(6, b0 + (size_t)kb * 512, 64);
                _tile_loadd(7, b1 + (size_t)kb * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            _tile_stored(0, c[0], 64);
            _tile_stored(1, c[1], 64);
            _tile_stored(2, c[2], 64);
            _tile_stored(3, c[3], 64);
            store_c(y, N, c[0], tb * 16, T, n);
            store_c(y, N, c[1], (tb + 1) * 16, T, n);
            store_c(y, N, c[2], tb * 16, T, n + 16);
            store_c(y, N, c[3], (tb + 1) * 16, T, n + 16);
        }
        for (; tb < TB; tb++) {
            _tile_zero(0);
            _tile_zero(2);
            const uint16_t *b0 = xp + (size_t)tb * KB * 512;
            for (int kb = 0; kb < KB; kb++) {
                _tile_loadd(4, w0 + kb * 32, stride);
                _tile_loadd(5, w1 + kb * 32, stride);
                _tile_loadd(6, b0 + (size_t)kb * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(2, 5, 6);
            }
            _tile_stored(0, c[0], 64);
            _tile_stored(2, c[2], 64);
            store_c(y, N, c[0], tb * 16, T, n);
            store_c(y, N, c[2], tb * 16, T, n + 16);
        }
    }
    for (; n + 16 <= n1; n += 16) {
        const uint16_t *w0 = W + (size_t)n * K;
        for (int tb = 0; tb < TB; tb++) {
            _tile_zero(0);
            const uint16_t *b0 = xp + (size_t)tb * KB * 512;
            for (int kb = 0; kb < KB; kb++) {
                _tile_loadd(4, w0 + kb * 32, stride);
                _tile_loadd(6, b0 + (size_t)kb * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
            }
            _tile_stored(0, c[0], 64);
            store_c(y, N, c[0], tb * 16, T, n);
        }
    }
    _tile_release();
}
