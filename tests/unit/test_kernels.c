/* test_kernels.c — every op of every CPU kernel set this machine runs,
 * against the portable reference kernels of cpu_ref.c (ggml's
 * test-backend-ops idea). Comparisons go through the backend, created with the
 * kernel set forced and 1, 2 or 3 threads, so the thread split is covered too.
 *
 * Error metric: per output row, max |got - ref| / max |ref|. Exact-f32 paths
 * must stay within 1e-5 (summation order differs). The bf16-dot matmul path
 * (BF16 weights × activations split into bf16 hi + lo parts) is held to
 * |got - ref| <= 2^-14 * sum_k |x_k w_k| per output: the split leaves at most
 * 2^-17 |x_k| of each activation out, and the rest is f32 summation order
 * over K terms. The env variable
 * VLLMC_TEST_ISA adds one more kernel set name to test (e.g. "avx2-exact"). */
#include "harness.h"

#include "backend/backend.h"
#include "backend/cpu/cpu_ref.h"
#include "util/threadpool.h"

#include <stdatomic.h>

#define TOL_EXACT 1e-5

static const char *const all_isas[] = { "portable", "avx2", "avx2-exact", "avx512", "avx512-exact", "neon" };
static const int thread_counts[] = { 1, 2, 3 };

struct isa_list { const char *name[8]; int n; };

static struct isa_list available_isas(void) {
    struct isa_list l = { .n = 0 };
    for (size_t i = 0; i < ARRAY_LEN(all_isas); i++) {
        struct backend *bk;
        if (backend_cpu_create(&bk, 1, all_isas[i], NULL, 0) == 0) {
            l.name[l.n++] = all_isas[i];
            bk_destroy(bk);
        }
    }
    const char *extra = getenv("VLLMC_TEST_ISA");
    if (extra && *extra) l.name[l.n++] = extra;
    return l;
}

static struct backend *make(const char *isa, int nth) {
    struct backend *bk = NULL;
    char err[256];
    int rc = backend_cpu_create(&bk, nth, isa, err, sizeof err);
    if (rc != 0) fprintf(stderr, "  backend_cpu_create(%s): %s\n", isa, err);
    REQUIRE(rc == 0);
    return bk;
}

static unsigned long long rng = 0x9e3779b97f4a7c15ull;
static void fill(float *x, size_t n, float amp) {
    for (size_t i = 0; i < n; i++) x[i] = test_randf(&rng) * amp;
}
static void *fill_weight(enum dtype dt, size_t n) {
    void *p = xmalloc(n * dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float v = test_randf(&rng);
        if (dt == DT_BF16) ((uint16_t *)p)[i] = f32_to_bf16(v);
        else if (dt == DT_F16) ((uint16_t *)p)[i] = f32_to_f16(v);
        else ((float *)p)[i] = v;
    }
    return p;
}

/* Worst per-row error relative to the row's max |ref|. */
static double row_err(const float *got, const float *ref, size_t rows, size_t cols) {
    double worst = 0;
    for (size_t r = 0; r < rows; r++) {
        double mx = 0, d = 0;
        for (size_t c = 0; c < cols; c++) {
            double a = got[r * cols + c], b = ref[r * cols + c];
            if (fabs(b) > mx) mx = fabs(b);
            if (isnan(a) != isnan(b)) d = INFINITY;
            else if (!isnan(a) && fabs(a - b) > d) d = fabs(a - b);
        }
        double e = mx > 0 ? d / mx : d;
        if (e > worst) worst = e;
    }
    return worst;
}

#define EXPECT_CLOSE(got, ref, rows, cols, tol, ...) do {                         \
        double e_ = row_err(got, ref, rows, cols);                                 \
        if (!(e_ <= (tol))) {                                                      \
            fprintf(stderr, "  %s:%d: error %.3g > %.3g: ", __FILE__, __LINE__, e_, (double)(tol)); \
            fprintf(stderr, __VA_ARGS__);                                          \
            fputc('\n', stderr);                                                   \
            test_failed_here_ = 1;                                                 \
        } } while (0)

static bool isa_rounds_bf16(const char *isa) { return strcmp(isa, "avx512") == 0; }

/* ---- infrastructure --------------------------------------------------------- */

TEST(isa_selection) {
    struct backend *bk;
    char err[128];
    CHECK(backend_cpu_create(&bk, 1, "bogus", err, sizeof err) != 0);
    CHECK(strstr(err, "bogus") != NULL);
#if defined(__x86_64__)
    CHECK(backend_cpu_create(&bk, 1, "neon", err, sizeof err) != 0);
#else
    CHECK(backend_cpu_create(&bk, 1, "avx512", err, sizeof err) != 0);
#endif
    REQUIRE(backend_cpu_create(&bk, 0, NULL, err, sizeof err) == 0);
    CHECK(bk->n_threads == cpu_physical_cores());
    fprintf(stderr, "  auto: %s, %d threads\n", backend_cpu_isa(bk), bk->n_threads);
#if defined(__aarch64__)
    CHECK(strcmp(backend_cpu_isa(bk), "neon") == 0);
#endif
    bk_destroy(bk);
    REQUIRE(backend_cpu_create(&bk, 2, "portable-exact", err, sizeof err) == 0);
    CHECK(strcmp(backend_cpu_isa(bk), "portable") == 0);
    CHECK(bk->n_threads == 2);
    bk_destroy(bk);
}

struct tp_ctx { atomic_int calls[8]; int bad_nth; int nth; };
static void tp_fn(void *arg, int ith, int nth) {
    struct tp_ctx *c = arg;
    if (nth != c->nth || ith < 0 || ith >= nth) c->bad_nth = 1;
    else atomic_fetch_add(&c->calls[ith], 1);
}

TEST(threadpool_runs_every_thread_once) {
    CHECK(cpu_physical_cores() >= 1);
    for (int n = 1; n <= 4; n++) {
        struct threadpool *p = threadpool_create(n);
        REQUIRE(p);
        CHECK(threadpool_size(p) == n);
        struct tp_ctx c = { .nth = n };
        for (int r = 0; r < 2000; r++) threadpool_run(p, tp_fn, &c);
        /* after a pause the workers sleep; they must still wake */
        usleep(5000);
        for (int r = 0; r < 3; r++) { threadpool_run(p, tp_fn, &c); usleep(2000); }
        CHECK(!c.bad_nth);
        for (int i = 0; i < n; i++) CHECK(atomic_load(&c.calls[i]) == 2003);
        threadpool_destroy(p);
    }
    threadpool_destroy(NULL);
}

/* ---- matmul ---------------------------------------------------------------------- */

static void check_matmul(const struct isa_list *isas, enum dtype dt, int N, int K, const int *Ts, int nT) {
    void *wd = fill_weight(dt, (size_t)N * K);
    struct bk_weight w = { .dtype = dt, .rows = N, .cols = K, .data = wd };
    int Tmax = 0;
    for (int i = 0; i < nT; i++) Tmax = MAX(Tmax, Ts[i]);
    float *x = xmalloc((size_t)Tmax * K * sizeof(float));
    float *ref = xmalloc((size_t)Tmax * N * sizeof(float));
    float *got = xmalloc((size_t)Tmax * N * sizeof(float));
    float *got1 = xmalloc((size_t)Tmax * N * sizeof(float));
    float *xabs = xmalloc((size_t)Tmax * K * sizeof(float)), *yabs = xmalloc((size_t)Tmax * N * sizeof(float));
    fill(x, (size_t)Tmax * K, 1.0f);
    for (size_t i = 0; i < (size_t)Tmax * K; i++) xabs[i] = fabsf(x[i]);
    void *wabs = NULL;
    if (dt == DT_BF16) { /* |W|: clear the sign bits */
        wabs = xmalloc((size_t)N * K * 2);
        for (size_t i = 0; i < (size_t)N * K; i++) ((uint16_t *)wabs)[i] = ((const uint16_t *)wd)[i] & 0x7fff;
    }
    struct bk_weight wa = { .dtype = dt, .rows = N, .cols = K, .data = wabs };
    for (int ti = 0; ti < nT; ti++) {
        const int T = Ts[ti];
        ref_matmul_rows(ref, x, &w, T, 0, N);
        if (wabs) ref_matmul_rows(yabs, xabs, &wa, T, 0, N);
        for (int ii = 0; ii < isas->n; ii++) {
            const char *isa = isas->name[ii];
            const bool bf16dot = dt == DT_BF16 && isa_rounds_bf16(isa);
            for (size_t nt = 0; nt < ARRAY_LEN(thread_counts); nt++) {
                struct backend *bk = make(isa, thread_counts[nt]);
                float *out = nt == 0 ? got1 : got;
                for (size_t i = 0; i < (size_t)T * N; i++) out[i] = NAN;
                bk_matmul(bk, out, x, &w, T);
                if (bf16dot) {
                    size_t bad = 0;
                    for (size_t i = 0; i < (size_t)T * N; i++)
                        if (!(fabsf(out[i] - ref[i]) <= 0x1p-14f * yabs[i] + 1e-6f)) bad++;
                    if (bad) fprintf(stderr, "  bf16-dot bound broken in %zu outputs: %s N=%d K=%d T=%d\n", bad, isa,
                                     N, K, T);
                    CHECK(bad == 0);
                } else {
                    EXPECT_CLOSE(out, ref, (size_t)T, (size_t)N, TOL_EXACT, "matmul %s %s N=%d K=%d T=%d threads=%d",
                                 isa, dtype_name(dt), N, K, T, thread_counts[nt]);
                }
                /* a row is computed the same way whichever thread owns it (not
                 * on bf16-dot, where AMX takes 32-row blocks and the vector
                 * tiles the rest, so the split changes the summation order) */
                if (nt > 0 && !bf16dot) CHECK(memcmp(got, got1, (size_t)T * N * sizeof(float)) == 0);
                bk_destroy(bk);
            }
        }
    }
    free(wd); free(x); free(ref); free(got); free(got1); free(xabs); free(yabs); free(wabs);
}

static const int Ts_all[] = { 1, 2, 3, 4, 5, 8, 17, 69 };

TEST(matmul_small_shapes) {
    struct isa_list isas = available_isas();
    static const int shapes[][2] = { { 1, 1 }, { 7, 5 }, { 33, 17 }, { 64, 64 }, { 3, 31 }, { 5, 33 }, { 19, 48 } };
    const enum dtype dts[] = { DT_F32, DT_BF16, DT_F16 };
    for (size_t d = 0; d < ARRAY_LEN(dts); d++)
        for (size_t s = 0; s < ARRAY_LEN(shapes); s++)
            check_matmul(&isas, dts[d], shapes[s][0], shapes[s][1], Ts_all, (int)ARRAY_LEN(Ts_all));
}

TEST(matmul_large_shapes) {
    struct isa_list isas = available_isas();
    const enum dtype dts[] = { DT_F32, DT_BF16, DT_F16 };
    static const int Ts1[] = { 1, 3, 8, 69 };
    static const int Ts2[] = { 130 }; /* more than one token chunk at K = 3000 */
    /* AMX: small-T path (2..64 tokens; hi and lo parts in one B tile up to 8
     * tokens, 1-4 blocks of 16 tokens beyond, in passes of 64, 32 or 16
     * rows), prefill blocks (32×32), ragged tokens and rows; 200 rows leave
     * remainders whatever the split */
    static const int Ts3[] = { 2, 5, 8, 9, 16, 17, 24, 32, 33, 48, 64, 65, 69, 130 };
    for (size_t d = 0; d < ARRAY_LEN(dts); d++) {
        check_matmul(&isas, dts[d], 257, 1000, Ts1, (int)ARRAY_LEN(Ts1));
        check_matmul(&isas, dts[d], 37, 3000, Ts2, 1);
        check_matmul(&isas, dts[d], 200, 1024, Ts3, (int)ARRAY_LEN(Ts3));
    }
}

/* ---- row-wise ops ---------------------------------------------------------------- */

TEST(embed_all_dtypes) {
    struct isa_list isas = available_isas();
    const enum dtype dts[] = { DT_F32, DT_BF16, DT_F16 };
    static const int Ks[] = { 1, 17, 64, 1000 };
    static const int Ts[] = { 1, 3, 69 };
    for (size_t d = 0; d < ARRAY_LEN(dts); d++)
        for (size_t ki = 0; ki < ARRAY_LEN(Ks); ki++) {
            const int V = 50, K = Ks[ki];
            void *tab = fill_weight(dts[d], (size_t)V * K);
            struct bk_weight w = { .dtype = dts[d], .rows = V, .cols = K, .data = tab };
            int32_t ids[69];
            for (int t = 0; t < 69; t++) ids[t] = (int32_t)(test_rng_next_(&rng) % V);
            float *ref = xmalloc(69 * (size_t)K * sizeof(float)), *got = xmalloc(69 * (size_t)K * sizeof(float));
            for (size_t ti = 0; ti < ARRAY_LEN(Ts); ti++) {
                ref_embed(ref, &w, ids, Ts[ti], 1.7f);
                for (int ii = 0; ii < isas.n; ii++)
                    for (size_t nt = 0; nt < ARRAY_LEN(thread_counts); nt++) {
                        struct backend *bk = make(isas.name[ii], thread_counts[nt]);
                        bk_embed(bk, got, &w, ids, Ts[ti], 1.7f);
                        CHECK(memcmp(got, ref, (size_t)Ts[ti] * K * sizeof(float)) == 0);
                        bk_destroy(bk);
                    }
            }
            free(tab); free(ref); free(got);
        }
}

TEST(rmsnorm_rows) {
    struct isa_list isas = available_isas();
    static const int Rs[] = { 1, 3, 69, 600 };
    static const int ns[] = { 1, 7, 64, 1000, 1024 };
    for (size_t ri = 0; ri < ARRAY_LEN(Rs); ri++)
        for (size_t ni = 0; ni < ARRAY_LEN(ns); ni++)
            for (int with_w = 0; with_w < 2; with_w++) {
                const int R = Rs[ri], n = ns[ni];
                size_t len = (size_t)R * n;
                float *x = xmalloc(len * 4), *ref = xmalloc(len * 4), *got = xmalloc(len * 4), *w = xmalloc((size_t)n * 4);
                fill(x, len, 3.0f);
                fill(w, (size_t)n, 2.0f);
                ref_rmsnorm(ref, x, with_w ? w : NULL, R, n, 1e-6f);
                for (int ii = 0; ii < isas.n; ii++)
                    for (size_t nt = 0; nt < ARRAY_LEN(thread_counts); nt++) {
                        struct backend *bk = make(isas.name[ii], thread_counts[nt]);
                        memcpy(got, x, len * 4); /* in place: y aliases x */
                        bk_rmsnorm(bk, got, got, with_w ? w : NULL, R, n, 1e-6f);
                        EXPECT_CLOSE(got, ref, (size_t)R, (size_t)n, TOL_EXACT, "rmsnorm %s R=%d n=%d w=%d",
                                     isas.name[ii], R, n, with_w);
                        bk_destroy(bk);
                    }
                free(x); free(ref); free(got); free(w);
            }
}

TEST(rope_layouts) {
    struct isa_list isas = available_isas();
    /* D, rot_dim: full, partial (Phi/GLM style), ragged SIMD tails */
    static const int cfg[][2] = { { 64, 64 }, { 128, 128 }, { 64, 32 }, { 80, 80 }, { 96, 20 }, { 6, 6 } };
    static const int Ts[] = { 1, 3, 69 };
    for (size_t c = 0; c < ARRAY_LEN(cfg); c++)
        for (int neox = 0; neox < 2; neox++)
            for (size_t ti = 0; ti < ARRAY_LEN(Ts); ti++) {
                const int D = cfg[c][0], rot = cfg[c][1], H = 5, T = Ts[ti];
                float inv_freq[64];
                for (int i = 0; i < rot / 2; i++) inv_freq[i] = powf(10000.0f, -2.0f * (float)i / (float)rot);
                struct bk_rope r = { inv_freq, rot, 1.25f, neox != 0 };
                int32_t pos[69];
                for (int t = 0; t < T; t++) pos[t] = (int32_t)(test_rng_next_(&rng) % 5000);
                size_t len = (size_t)T * H * D;
                float *x = xmalloc(len * 4), *ref = xmalloc(len * 4), *got = xmalloc(len * 4);
                fill(x, len, 2.0f);
                memcpy(ref, x, len * 4);
                ref_rope(ref, pos, T, H, D, &r);
                for (int ii = 0; ii < isas.n; ii++)
                    for (size_t nt = 0; nt < ARRAY_LEN(thread_counts); nt++) {
                        struct backend *bk = make(isas.name[ii], thread_counts[nt]);
                        memcpy(got, x, len * 4);
                        bk_rope(bk, got, pos, T, H, D, &r);
                        EXPECT_CLOSE(got, ref, (size_t)T * H, (size_t)D, TOL_EXACT, "rope %s D=%d rot=%d neox=%d T=%d",
                                     isas.name[ii], D, rot, neox, T);
                        bk_destroy(bk);
                    }
                free(x); free(ref); free(got);
            }
}

/* act(g) * u in double: ref_act's 0.5 x (1 + tanhf(u)) cancels where
 * tanh(u) is near -1, so the float reference is not the yardstick here. */
static double act_exact(double g, enum bk_act act) {
    switch (act) {
    case BK_ACT_SILU: return g / (1.0 + exp(-g));
    case BK_ACT_GELU_TANH: return 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
    case BK_ACT_GELU: return 0.5 * g * (1.0 + erf(g * 0.7071067811865476));
    case BK_ACT_RELU: return g > 0 ? g : 0;
    }
    return g;
}

/* Each output within 1e-5 relative, or 1e-6 of |g u| where the result is
 * tiny next to its inputs (the tails of silu and gelu). */
TEST(glu_activations) {
    struct isa_list isas = available_isas();
    const enum bk_act acts[] = { BK_ACT_SILU, BK_ACT_GELU_TANH, BK_ACT_GELU, BK_ACT_RELU };
    static const int Ts[] = { 1, 3, 17, 69 };
    static const int Fs[] = { 1, 13, 3072 };
    for (size_t a = 0; a < ARRAY_LEN(acts); a++)
        for (size_t ti = 0; ti < ARRAY_LEN(Ts); ti++)
            for (size_t fi = 0; fi < ARRAY_LEN(Fs); fi++) {
                const int T = Ts[ti], F = Fs[fi], ld = 2 * F + 3;
                float *gu = xmalloc((size_t)T * ld * 4), *got = xmalloc((size_t)T * F * 4);
                fill(gu, (size_t)T * ld, 8.0f);
                gu[0] = 100.0f; /* exp over/underflow corners */
                if (T > 1) gu[ld] = -100.0f;
                for (int ii = 0; ii < isas.n; ii++)
                    for (size_t nt = 0; nt < ARRAY_LEN(thread_counts); nt++) {
                        struct backend *bk = make(isas.name[ii], thread_counts[nt]);
                        bk_glu(bk, got, gu, gu + F, T, F, ld, acts[a]);
                        int bad = 0;
                        for (int t = 0; t < T; t++)
                            for (int f = 0; f < F; f++) {
                                double g = gu[(size_t)t * ld + f], u = gu[(size_t)t * ld + F + f];
                                double e = act_exact(g, acts[a]) * u, o = got[(size_t)t * F + f];
                                if (!(fabs(o - e) <= 1e-5 * fabs(e) + 1e-6 * fabs(g * u))) {
                                    if (!bad) fprintf(stderr, "  glu %s act=%d T=%d F=%d: g=%g u=%g got %.9g want %.9g\n",
                                                      isas.name[ii], (int)acts[a], T, F, g, u, o, e);
                                    bad++;
                                }
                            }
                        CHECK(bad == 0);
                        bk_destroy(bk);
                    }
                free(gu); free(got);
            }
}

/* Elementwise accuracy of the activations alone, over a dense sweep: the
 * vector exp must stay within ~1e-6 relative of libm. */
TEST(glu_activation_accuracy) {
    struct isa_list isas = available_isas();
    const int F = 20001;
    float *g = xmalloc((size_t)F * 4), *u = xmalloc((size_t)F * 4), *ref = xmalloc((size_t)F * 4),
          *got = xmalloc((size_t)F * 4);
    for (int f = 0; f < F; f++) { g[f] = -20.0f + 40.0f * (float)f / (float)(F - 1); u[f] = 1.0f; }
    for (int ii = 0; ii < isas.n; ii++) {
        struct backend *bk = make(isas.name[ii], 1);
        bk_glu(bk, got, g, u, 1, F, F, BK_ACT_SILU);
        ref_glu(ref, g, u, 1, F, F, BK_ACT_SILU);
        double worst = 0;
        for (int f = 0; f < F; f++)
            if (fabsf(ref[f]) > 1e-30f) worst = fmax(worst, fabs((double)got[f] - ref[f]) / fabs(ref[f]));
        CHECK(worst < 2e-6);
        if (worst >= 2e-6) fprintf(stderr, "  silu %s: max rel err %.3g\n", isas.name[ii], worst);
        bk_destroy(bk);
    }
    free(g); free(u); free(ref); free(got);
}

TEST(vector_ops) {
    struct isa_list isas = available_isas();
    static const size_t ns[] = { 1, 15, 1000, (1u << 18) + 3 };
    for (size_t ni = 0; ni < ARRAY_LEN(ns); ni++) {
        const size_t n = ns[ni];
        float *x = xmalloc(n * 4), *y0 = xmalloc(n * 4), *ref = xmalloc(n * 4), *got = xmalloc(n * 4);
        fill(x, n, 1.0f);
        fill(y0, n, 50.0f);
        for (int ii = 0; ii < isas.n; ii++)
            for (size_t nt = 0; nt < ARRAY_LEN(thread_counts); nt++) {
                struct backend *bk = make(isas.name[ii], thread_counts[nt]);
                for (size_t i = 0; i < n; i++) ref[i] = y0[i] + 0.37f * x[i];
                memcpy(got, y0, n * 4);
                bk_add_scaled(bk, got, x, 0.37f, n);
                EXPECT_CLOSE(got, ref, 1, n, TOL_EXACT, "add_scaled %s n=%zu", isas.name[ii], n);

                for (size_t i = 0; i < n; i++) ref[i] = y0[i] * -1.5f;
                memcpy(got, y0, n * 4);
                bk_scale(bk, got, n, -1.5f);
                CHECK(memcmp(got, ref, n * 4) == 0);

                for (size_t i = 0; i < n; i++) ref[i] = 30.0f * tanhf(y0[i] / 30.0f);
                memcpy(got, y0, n * 4);
                bk_softcap(bk, got, n, 30.0f);
                CHECK(memcmp(got, ref, n * 4) == 0);

                if (n >= 15) { /* bias over rows: T = n / 15 rows of 15 */
                    const int N = 15, T = (int)(n / 15);
                    for (int t = 0; t < T; t++)
                        for (int j = 0; j < N; j++) ref[(size_t)t * N + j] = y0[(size_t)t * N + j] + x[j];
                    memcpy(got, y0, n * 4);
                    bk_add_bias(bk, got, x, T, N);
                    CHECK(memcmp(got, ref, (size_t)T * N * 4) == 0);
                }
                bk_destroy(bk);
            }
        free(x); free(y0); free(ref); free(got);
    }
}

/* ---- KV cache and attention ----------------------------------------------------------- */

static struct bk_kv make_kv(enum dtype dt, int nblocks, int B, int Hkv, int D) {
    struct bk_kv kv = { NULL, NULL, dt, nblocks, B, Hkv, D };
    size_t n = (size_t)nblocks * B * Hkv * D;
    kv.k = fill_weight(dt, n);
    kv.v = fill_weight(dt, n);
    return kv;
}

TEST(kv_store_bit_exact) {
    struct isa_list isas = available_isas();
    const enum dtype dts[] = { DT_F32, DT_BF16, DT_F16 };
    static const int cfg[][2] = { { 2, 64 }, { 3, 5 }, { 1, 128 } }; /* Hkv, D */
    static const int Ts[] = { 1, 3, 69 };
    for (size_t d = 0; d < ARRAY_LEN(dts); d++)
        for (size_t c = 0; c < ARRAY_LEN(cfg); c++)
            for (size_t ti = 0; ti < ARRAY_LEN(Ts); ti++) {
                const int Hkv = cfg[c][0], D = cfg[c][1], B = 16, nb = 8, T = Ts[ti];
                struct bk_kv ref = make_kv(dts[d], nb, B, Hkv, D), got = ref;
                size_t pool = (size_t)nb * B * Hkv * D * dtype_size(dts[d]);
                got.k = xmalloc(pool);
                got.v = xmalloc(pool);
                float *k = xmalloc((size_t)T * Hkv * D * 4), *v = xmalloc((size_t)T * Hkv * D * 4);
                fill(k, (size_t)T * Hkv * D, 4.0f);
                fill(v, (size_t)T * Hkv * D, 4.0f);
                k[0] = NAN; /* NaN must survive the conversion as ref does */
                int32_t slots[69];
                for (int t = 0; t < T; t++) slots[t] = B + (int32_t)((t * 37) % ((nb - 1) * B)); /* distinct, not block 0 */
                ref_kv_store(&ref, k, v, slots, T);
                for (int ii = 0; ii < isas.n; ii++)
                    for (size_t nt = 0; nt < ARRAY_LEN(thread_counts); nt++) {
                        struct backend *bk = make(isas.name[ii], thread_counts[nt]);
                        memset(got.k, 0, pool);
                        memset(got.v, 0, pool);
                        bk_kv_store(bk, &got, k, v, slots, T);
                        /* compare only written slots: the rest of ref is random */
                        size_t row = (size_t)Hkv * D * dtype_size(dts[d]);
                        for (int t = 0; t < T; t++) {
                            CHECK(memcmp((char *)got.k + slots[t] * row, (char *)ref.k + slots[t] * row, row) == 0);
                            CHECK(memcmp((char *)got.v + slots[t] * row, (char *)ref.v + slots[t] * row, row) == 0);
                        }
                        bk_destroy(bk);
                    }
                free(ref.k); free(ref.v); free(got.k); free(got.v); free(k); free(v);
            }
}

struct attn_case {
    int H, Hkv, D, B, window;
    float softcap;
    int S;
    int qlen[4], ctx[4]; /* query rows and context length per sequence */
};

static void check_attention(const struct isa_list *isas, const struct attn_case *ac, enum dtype dt) {
    const int S = ac->S, B = ac->B;
    int32_t qs[5] = { 0 }, seq_len[4];
    int max_blocks = 0;
    for (int s = 0; s < S; s++) {
        qs[s + 1] = qs[s] + ac->qlen[s];
        seq_len[s] = ac->ctx[s];
        max_blocks = MAX(max_blocks, (ac->ctx[s] + B - 1) / B);
    }
    const int T = qs[S], nblocks = 1 + S * max_blocks;
    int32_t *bt = xcalloc((size_t)S * max_blocks, sizeof(int32_t));
    /* blocks handed out in a scrambled order, never block 0 */
    for (int i = 0; i < S * max_blocks; i++) bt[i] = 1 + (int32_t)((i * 7 + 3) % (S * max_blocks));
    struct bk_kv kv = make_kv(dt, nblocks, B, ac->Hkv, ac->D);
    struct bk_attn_batch b = { .n_seqs = S, .query_start = qs, .seq_len = seq_len, .block_table = bt,
                               .max_blocks = max_blocks };
    struct bk_attn_params p = { ac->H, ac->Hkv, ac->D, 1.0f / sqrtf((float)ac->D), ac->window, ac->softcap };
    size_t len = (size_t)T * ac->H * ac->D;
    float *q = xmalloc(len * 4), *ref = xmalloc(len * 4), *got = xmalloc(len * 4);
    fill(q, len, 2.0f);
    int max_ctx = 1;
    for (int s = 0; s < S; s++) max_ctx = MAX(max_ctx, ac->ctx[s]);
    float *scratch = xmalloc((size_t)max_ctx * 4);
    for (int s = 0; s < S; s++) ref_attention_rows(ref, q, &kv, &b, &p, s, qs[s], qs[s + 1], scratch);
    for (int ii = 0; ii < isas->n; ii++)
        for (size_t nt = 0; nt < ARRAY_LEN(thread_counts); nt++) {
            struct backend *bk = make(isas->name[ii], thread_counts[nt]);
            for (size_t i = 0; i < len; i++) got[i] = NAN;
            bk_attention(bk, got, q, &kv, &b, &p);
            EXPECT_CLOSE(got, ref, (size_t)T * ac->H, (size_t)ac->D, TOL_EXACT,
                         "attention %s kv=%s H=%d Hkv=%d D=%d B=%d window=%d softcap=%g S=%d threads=%d",
                         isas->name[ii], dtype_name(dt), ac->H, ac->Hkv, ac->D, B, ac->window, ac->softcap, S,
                         thread_counts[nt]);
            bk_destroy(bk);
        }
    free(bt); free(kv.k); free(kv.v); free(q); free(ref); free(got); free(scratch);
}

TEST(attention_paged) {
    struct isa_list isas = available_isas();
    const struct attn_case cases[] = {
        /* prefill + decode + chunked prefill in one batch */
        { 4, 4, 64, 16, 0, 0, 3, { 17, 1, 5 }, { 17, 40, 30 } },
        /* GQA, ragged head dim, odd block size */
        { 8, 2, 80, 5, 0, 0, 3, { 1, 9, 1 }, { 33, 9, 2 } },
        /* MQA, sliding window, softcap */
        { 6, 1, 128, 16, 7, 0.8f, 2, { 20, 1 }, { 20, 50 } },
        { 4, 2, 40, 8, 16, 30.0f, 4, { 1, 1, 1, 1 }, { 1, 100, 17, 64 } },
        /* long prefill: several items per thread, uneven costs */
        { 2, 1, 64, 16, 0, 0, 1, { 69 }, { 69 } },
        { 32, 8, 128, 16, 0, 0, 2, { 1, 3 }, { 300, 3 } },
    };
    const enum dtype dts[] = { DT_F32, DT_BF16, DT_F16 };
    for (size_t d = 0; d < ARRAY_LEN(dts); d++)
        for (size_t c = 0; c < ARRAY_LEN(cases); c++) check_attention(&isas, &cases[c], dts[d]);
}

TEST_MAIN()
