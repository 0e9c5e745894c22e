/* test_amx.c — the AMX bf16 GEMM against the portable matmul on the same
 * bf16-rounded activations (the only approximation the AMX path makes), on
 * random data with odd token counts and row counts that exercise the 32-row
 * panels, the 16-row tail and partial token blocks. Skipped without AMX. */
#include <math.h>
#include <stdlib.h>

#include "harness.h"

#if defined(__x86_64__)
#include "backend/cpu/cpu_ref.h"
#include "backend/cpu/gemm_amx.h"

static void check_shape(int T, int N, int K, unsigned long long seed) {
    unsigned long long rng = seed;
    uint16_t *W = xmalloc((size_t)N * K * 2);
    float *x = xmalloc((size_t)T * K * 4), *xr = xmalloc((size_t)T * K * 4);
    float *y = xmalloc((size_t)T * N * 4), *ref = xmalloc((size_t)T * N * 4);
    for (size_t i = 0; i < (size_t)N * K; i++) W[i] = f32_to_bf16(test_randf(&rng));
    for (size_t i = 0; i < (size_t)T * K; i++) {
        x[i] = 3.0f * test_randf(&rng);
        xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
    }
    for (size_t i = 0; i < (size_t)T * N; i++) y[i] = NAN; /* every output must be written */
    struct bk_weight w = { DT_BF16, N, K, W };
    uint16_t *xp = aligned_alloc(64, (amx_packed_bytes(T, K) + 63) & ~(size_t)63);
    amx_pack_x(xp, x, T, K, 0, (T + 15) / 16);
    int n_amx = N / 16 * 16;
    amx_gemm_rows(y, xp, &w, T, 0, n_amx);
    ref_matmul_rows(ref, xr, &w, T, 0, N);
    double worst = 0;
    int bad = 0;
    for (int t = 0; t < T; t++)
        for (int n = 0; n < n_amx; n++) {
            double r = ref[(size_t)t * N + n], g = y[(size_t)t * N + n];
            double e = fabs(r - g) / (1.0 + fabs(r));
            if (!(e <= 1e-4)) bad++;
            if (e > worst || isnan(g)) worst = isnan(g) ? INFINITY : e;
        }
    if (bad) fprintf(stderr, "  T=%d N=%d K=%d: %d bad, worst %.3g\n", T, N, K, bad, worst);
    CHECK(bad == 0);
    free(W); free(x); free(xr); free(y); free(ref); free(xp);
}

TEST(amx_gemm_matches_reference) {
    if (!amx_init()) SKIP("no AMX-BF16 on this CPU (or tile state not granted)");
    int Ts[] = { 1, 5, 16, 17, 33, 64, 100 };
    int Ns[] = { 16, 32, 48, 80, 99 };
    int Ks[] = { 32, 96, 1024 };
    unsigned long long seed = 1;
    for (size_t a = 0; a < ARRAY_LEN(Ts); a++)
        for (size_t b = 0; b < ARRAY_LEN(Ns); b++)
            for (size_t c = 0; c < ARRAY_LEN(Ks); c++) check_shape(Ts[a], Ns[b], Ks[c], seed++ * 7919);
}
#else
TEST(amx_gemm_matches_reference) { SKIP("AMX is x86-64 only"); }
#endif

TEST_MAIN()
