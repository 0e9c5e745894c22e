/* test_cuda.c — every op of the CUDA backend against the CPU backend's
 * portable kernels (cpu_ref.c, the reference every kernel is defined by) on
 * random inputs: odd sizes, F32/BF16/F16 weights and KV caches, GQA, sliding
 * windows, softcaps, paged block tables with shuffled blocks, prefill, chunked
 * prefill and split-KV decode in one varlen batch, the tensor-core prefill
 * attention (its own tolerance: 16-bit q and P), the decode attention for
 * 16-bit caches (both variants, few and many key splits); the fused ops
 * add_rmsnorm, qkv_prep and qkv_attention against the plain sequences they
 * replace (qkv_attention also bit for bit against the GPU's two ops);
 * affine-quantized weights (every width, group and scale dtype) in matmul
 * and embed; and the memory ops.
 * Outputs are poisoned with NaN before each GPU run, so an element the GPU
 * did not write fails.
 *
 * Without a CUDA device, or in a build without CUDA (make without CUDA=1),
 * every test reports skipped, not passed (but sample_rows_cpu_version, the
 * CPU backend's version of the device-sampling op, runs anywhere). */
#include <math.h>
#include <unistd.h>

#include "backend/backend.h"
#include "engine/engine_internal.h"
#include "harness.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "vllmc.h"

static unsigned long long rng = 0x9E3779B97F4A7C15ull;

/* The matmul activation mode of the backends gpu() makes: the tests hold
 * the GEMMs to the split mode's near-f32 tolerance unless they set "bf16"
 * (and put "split" back). */
static const char *g_matmul = "split";

static struct backend *gpu(void) {
    static char err[512];
    struct backend *bk;
    if (backend_cuda_create_mode(&bk, 0, 2, g_matmul, err, sizeof err)) SKIP(err);
    return bk;
}

/* gpu() created with name=value in the environment, which is unset again
 * before a skip can leave it set for the tests after */
static struct backend *gpu_env(const char *name, const char *value) {
    static char err[512];
    struct backend *bk;
    setenv(name, value, 1);
    const int rc = backend_cuda_create_mode(&bk, 0, 2, g_matmul, err, sizeof err);
    unsetenv(name);
    if (rc) SKIP(err);
    return bk;
}

static struct backend *cpu(void) {
    struct backend *bk;
    char err[256];
    REQUIRE(backend_cpu_create(&bk, 1, "portable", err, sizeof err) == 0);
    return bk;
}

static float *randf(size_t n, float scale) {
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = test_randf(&rng) * scale;
    return x;
}

/* n random values in [-1, 1) stored as dt */
static void *rand_typed(enum dtype dt, size_t n) {
    void *p = xmalloc((n ? n : 1) * dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float v = test_randf(&rng);
        if (dt == DT_BF16) ((uint16_t *)p)[i] = f32_to_bf16(v);
        else if (dt == DT_F16) ((uint16_t *)p)[i] = f32_to_f16(v);
        else ((float *)p)[i] = v;
    }
    return p;
}

/* a device copy of host memory */
static void *up(struct backend *g, const void *h, size_t bytes) {
    char err[256];
    void *d = bk_alloc(g, bytes);
    REQUIRE(d != NULL);
    if (bk_upload(g, d, h, bytes, err, sizeof err)) {
        fprintf(stderr, "  upload: %s\n", err);
        _exit(1);
    }
    return d;
}

static void down(struct backend *g, void *h, const void *d, size_t bytes) {
    char err[256];
    if (bk_download(g, h, d, bytes, err, sizeof err)) {
        fprintf(stderr, "  download: %s\n", err);
        _exit(1);
    }
}

/* a device buffer of n floats, all NaN */
static float *poisoned(struct backend *g, size_t n) {
    float *h = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = up(g, h, n * sizeof(float));
    free(h);
    return d;
}

/* max over i of |got - ref| / (tol_abs + tol_rel * scale[i]) must be <= 1;
 * scale NULL: |ref[i]|. Returns the worst ratio. */
static double worst_ratio(const float *got, const float *ref, const float *scale, size_t n, double tol_abs,
                          double tol_rel) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double s = scale ? scale[i] : fabs(ref[i]);
        double r = fabs((double)got[i] - ref[i]) / (tol_abs + tol_rel * s);
        if (!(r <= w)) w = isnan(r) ? INFINITY : r;
    }
    return w;
}

#define CHECK_CLOSE(got, ref, scale, n, ta, tr, what, ...)                                          \
    do {                                                                                             \
        double w_ = worst_ratio(got, ref, scale, n, ta, tr);                                         \
        if (!(w_ <= 1.0)) {                                                                          \
            fprintf(stderr, "  " what ": error %.3g x tolerance\n", __VA_ARGS__, w_);                \
            test_failed_here_ = 1;                                                                   \
        }                                                                                            \
    } while (0)

TEST(memory_ops) {
    struct backend *g = gpu();
    CHECK(!g->host_mem);
    size_t fr = 0, tot = 0;
    CHECK(bk_mem_info(g, &fr, &tot) == 0);
    CHECK(tot > 0 && fr <= tot);
    /* zero-filled */
    uint8_t *h = xmalloc(100003);
    void *d = bk_alloc(g, 100003);
    REQUIRE(d);
    memset(h, 0xAB, 100003);
    down(g, h, d, 100003);
    size_t nz = 0;
    for (size_t i = 0; i < 100003; i++) nz += h[i] != 0;
    CHECK(nz == 0);
    /* round trip, at an odd offset */
    for (size_t i = 0; i < 100003; i++) h[i] = (uint8_t)(i * 7 + 3);
    char err[256];
    CHECK(bk_upload(g, (char *)d + 1, h, 100002, err, sizeof err) == 0);
    uint8_t *back = xcalloc(1, 100002);
    down(g, back, (char *)d + 1, 100002);
    CHECK(memcmp(back, h, 100002) == 0);
    bk_free(g, d);
    /* weights it runs and weights it refuses */
    struct bk_weight w = { .dtype = DT_BF16, .rows = 4, .cols = 64 };
    CHECK(bk_weight_check(g, &w, err, sizeof err) == 0);
    w.fmt = BK_W_AFFINE, w.bits = 4, w.group_size = 32;
    CHECK(bk_weight_check(g, &w, err, sizeof err) == 0);
    w.bits = 7;
    CHECK(bk_weight_check(g, &w, err, sizeof err) != 0 && strstr(err, "not 7"));
    w.bits = 4, w.group_size = 16;
    CHECK(bk_weight_check(g, &w, err, sizeof err) != 0 && strstr(err, "not 16"));
    w.group_size = 64, w.dtype = DT_U32;
    CHECK(bk_weight_check(g, &w, err, sizeof err) != 0 && strstr(err, "scales"));
    printf("      %s\n", backend_cuda_name(g));
    free(h), free(back);
    bk_destroy(g);
}

/* the CPU's y = x W^T for T tokens, and the size of each sum, sum_k |x w| */
static void matmul_ref(struct backend *c, const struct bk_weight *w, const float *x, int T, float *ref, float *mag) {
    const size_t N = (size_t)w->rows, K = (size_t)w->cols, es = dtype_size(w->dtype);
    bk_matmul(c, ref, x, w, T);
    float *xa = xmalloc((size_t)T * K * 4);
    for (size_t i = 0; i < (size_t)T * K; i++) xa[i] = fabsf(x[i]);
    struct bk_weight wa = *w;
    void *wabs = xmalloc(N * K * es);
    for (size_t i = 0; i < N * K; i++) {
        if (w->dtype == DT_F32) ((float *)wabs)[i] = fabsf(((const float *)w->data)[i]);
        else ((uint16_t *)wabs)[i] = ((const uint16_t *)w->data)[i] & 0x7fff;
    }
    wa.data = wabs;
    bk_matmul(c, mag, xa, &wa, T);
    free(xa), free(wabs);
}

static void check_matmul(struct backend *g, struct backend *c, enum dtype dt, int N, int K, const int *Ts, int nT,
                         double tol) {
    void *wh = rand_typed(dt, (size_t)N * K);
    struct bk_weight w = { .dtype = dt, .rows = N, .cols = K, .data = wh };
    struct bk_weight wd = w;
    wd.data = up(g, wh, (size_t)N * K * dtype_size(dt));
    for (int ti = 0; ti < nT; ti++) {
        const int T = Ts[ti];
        float *x = randf((size_t)T * K, 2.0f), *ref = xmalloc((size_t)T * N * 4), *got = xmalloc((size_t)T * N * 4);
        float *mag = xmalloc((size_t)T * N * 4);
        matmul_ref(c, &w, x, T, ref, mag);
        float *xd = up(g, x, (size_t)T * K * 4), *yd = poisoned(g, (size_t)T * N);
        bk_matmul(g, yd, xd, &wd, T);
        down(g, got, yd, (size_t)T * N * 4);
        CHECK_CLOSE(got, ref, mag, (size_t)T * N, 1e-6, tol, "matmul %s N=%d K=%d T=%d", dtype_name(dt), N, K, T);
        bk_free(g, xd), bk_free(g, yd);
        free(x), free(ref), free(got), free(mag);
    }
    bk_free(g, (void *)wd.data);
    free(wh);
}

/* matmul_many over 2-3 dense weights reading one x (q/k/v, gate/up): every
 * weight's rows against the CPU's matmul, in one GEMV launch where T is in
 * the GEMV's range and x is 16-byte aligned; an unaligned x falls back to
 * one GEMV per weight and T beyond the range to cuBLASLt, with the same
 * results. Split mode: 16-bit weights on the GEMV up to 5 tokens. */
TEST(dense_matmul_many) {
    struct backend *g = gpu(), *c = cpu();
    const enum dtype dts[] = { DT_F32, DT_BF16, DT_F16 };
    static const int Ns[] = { 515, 131, 64 }, Ks[] = { 1000, 4096 }, Ts[] = { 1, 2, 5, 6 };
    for (size_t di = 0; di < ARRAY_LEN(dts); di++)
        for (size_t ki = 0; ki < ARRAY_LEN(Ks); ki++)
            for (int n = 2; n <= 3; n++)
                for (size_t ti = 0; ti < ARRAY_LEN(Ts); ti++)
                    for (int shift = 0; shift < 2; shift++) { /* shift: x one float off 16-byte alignment */
                        const enum dtype dt = dts[di];
                        const int K = Ks[ki], T = Ts[ti], Tmax = dt == DT_F32 ? 8 : 5;
                        struct bk_weight w[3], wd[3];
                        float *ref[3], *mag[3], *yd[3];
                        float *x = randf((size_t)T * K, 2.0f);
                        for (int i = 0; i < n; i++) {
                            w[i] = (struct bk_weight){ .dtype = dt, .rows = Ns[i], .cols = K };
                            w[i].data = rand_typed(dt, (size_t)Ns[i] * K);
                            wd[i] = w[i];
                            wd[i].data = up(g, w[i].data, (size_t)Ns[i] * K * dtype_size(dt));
                            ref[i] = xmalloc((size_t)T * Ns[i] * 4), mag[i] = xmalloc((size_t)T * Ns[i] * 4);
                            matmul_ref(c, &w[i], x, T, ref[i], mag[i]);
                            yd[i] = poisoned(g, (size_t)T * Ns[i]);
                        }
                        float *xb = bk_alloc(g, ((size_t)T * K + 4) * 4);
                        REQUIRE(xb);
                        float *xd = xb + shift;
                        REQUIRE(bk_upload(g, xd, x, (size_t)T * K * 4, NULL, 0) == 0);
                        const struct bk_weight *wp[3] = { &wd[0], &wd[1], &wd[2] };
                        struct backend_cuda_counts c0, c1;
                        backend_cuda_counts(g, &c0);
                        g->ops->matmul_many(g, n, yd, xd, wp, T);
                        backend_cuda_counts(g, &c1);
                        for (int i = 0; i < n; i++) {
                            float *got = xmalloc((size_t)T * Ns[i] * 4);
                            down(g, got, yd[i], (size_t)T * Ns[i] * 4);
                            CHECK_CLOSE(got, ref[i], mag[i], (size_t)T * Ns[i], 1e-6, 2e-5,
                                        "matmul_many %s K=%d n=%d T=%d shift %d: weight %d", dtype_name(dt), K, n, T,
                                        shift, i);
                            free(got);
                        }
                        if (T > Tmax) CHECK(c1.dense_gemv == c0.dense_gemv && c1.lt_gemm > c0.lt_gemm);
                        else if (shift) CHECK(c1.dense_gemv == c0.dense_gemv + n && c1.dense_gemv_many == c0.dense_gemv_many);
                        else CHECK(c1.dense_gemv == c0.dense_gemv + 1 && c1.dense_gemv_many == c0.dense_gemv_many + 1);
                        bk_free(g, xb);
                        for (int i = 0; i < n; i++) {
                            bk_free(g, (void *)wd[i].data), bk_free(g, yd[i]);
                            free((void *)w[i].data), free(ref[i]), free(mag[i]);
                        }
                        free(x);
                    }
    bk_destroy(g), bk_destroy(c);
}

/* Every T up to CK_GEMV_MAX_T through our GEMV (VLLMC_CUDA_GEMV_MAX_T=8),
 * then the default crossover (split mode: 16-bit weights on the GEMV up to 5
 * tokens, cuBLASLt beyond; f32 weights on the GEMV up to 8). */
TEST(matmul_all_dtypes) {
    struct backend *c = cpu();
    const enum dtype dts[] = { DT_F32, DT_BF16, DT_F16 };
    static const int Ts[] = { 1, 2, 5, 6, 7, 8, 9, 69 };
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0) setenv("VLLMC_CUDA_GEMV_MAX_T", "8", 1);
        struct backend *g = gpu();
        unsetenv("VLLMC_CUDA_GEMV_MAX_T");
        for (size_t i = 0; i < ARRAY_LEN(dts); i++) {
            check_matmul(g, c, dts[i], 257, 1000, Ts, (int)ARRAY_LEN(Ts), 2e-5);
            check_matmul(g, c, dts[i], 33, 67, Ts, (int)ARRAY_LEN(Ts), 2e-5); /* K not a multiple of 8 */
            check_matmul(g, c, dts[i], 130, 4096, Ts, (int)ARRAY_LEN(Ts), 2e-5);
        }
        bk_destroy(g);
    }
    bk_destroy(c);
}

/* bf16 activations (the default mode): rounded once, so error of order 2^-9
 * of the sum's size, where the split holds 2e-5 (above). */
TEST(matmul_bf16_activation_mode) {
    g_matmul = "bf16";
    struct backend *g = gpu(), *c = cpu();
    g_matmul = "split";
    static const int Ts[] = { 2, 3, 8, 9, 69 }; /* the GEMV (f32 activations) up to 2 tokens, then cuBLASLt */
    for (size_t i = 0; i < ARRAY_LEN(Ts); i++) {
        struct backend_cuda_counts c0, c1;
        backend_cuda_counts(g, &c0);
        check_matmul(g, c, DT_BF16, 257, 1000, &Ts[i], 1, 4e-3);
        backend_cuda_counts(g, &c1);
        if (Ts[i] <= 2) CHECK(c1.dense_gemv == c0.dense_gemv + 1 && c1.lt_gemm == c0.lt_gemm);
        else CHECK(c1.dense_gemv == c0.dense_gemv && c1.lt_gemm == c0.lt_gemm + 1); /* one GEMM: bf16 activations */
    }
    bk_destroy(g), bk_destroy(c);
}

/* The mode a backend gets without one named: VLLMC_CUDA_MATMUL, else bf16
 * (vLLM's numerics); a bad value is refused. */
TEST(matmul_mode_default_and_environment) {
    static char err[512];
    struct backend *bk;
    unsetenv("VLLMC_CUDA_MATMUL"); /* whatever the run was started with */
    if (backend_cuda_create(&bk, 0, 2, err, sizeof err)) SKIP(err);
    CHECK(!strcmp(backend_cuda_matmul_mode(bk), "bf16"));
    bk_destroy(bk);
    setenv("VLLMC_CUDA_MATMUL", "split", 1);
    REQUIRE(backend_cuda_create(&bk, 0, 2, err, sizeof err) == 0);
    CHECK(!strcmp(backend_cuda_matmul_mode(bk), "split"));
    bk_destroy(bk);
    REQUIRE(backend_cuda_create_mode(&bk, 0, 2, "bf16", err, sizeof err) == 0); /* the named mode wins */
    CHECK(!strcmp(backend_cuda_matmul_mode(bk), "bf16"));
    bk_destroy(bk);
    setenv("VLLMC_CUDA_MATMUL", "fp8", 1);
    CHECK(backend_cuda_create(&bk, 0, 2, err, sizeof err) != 0 && strstr(err, "expected split or bf16"));
    unsetenv("VLLMC_CUDA_MATMUL");
}

TEST(embed_all_dtypes) {
    struct backend *g = gpu(), *c = cpu();
    const enum dtype dts[] = { DT_F32, DT_BF16, DT_F16 };
    const int Ks[] = { 7, 64, 1000 };
    for (size_t di = 0; di < ARRAY_LEN(dts); di++)
        for (size_t ki = 0; ki < ARRAY_LEN(Ks); ki++) {
            const int V = 50, K = Ks[ki], T = 69;
            void *tab = rand_typed(dts[di], (size_t)V * K);
            struct bk_weight w = { .dtype = dts[di], .rows = V, .cols = K, .data = tab }, wd = w;
            wd.data = up(g, tab, (size_t)V * K * dtype_size(dts[di]));
            int32_t ids[69];
            for (int t = 0; t < T; t++) ids[t] = (int32_t)(test_rng_next_(&rng) % V);
            float *ref = xmalloc((size_t)T * K * 4), *got = xmalloc((size_t)T * K * 4);
            bk_embed(c, ref, &w, ids, T, 1.5f);
            int32_t *idd = up(g, ids, sizeof ids);
            float *od = poisoned(g, (size_t)T * K);
            bk_embed(g, od, &wd, idd, T, 1.5f);
            down(g, got, od, (size_t)T * K * 4);
            CHECK(memcmp(got, ref, (size_t)T * K * 4) == 0); /* exact: widening and one product */
            bk_free(g, (void *)wd.data), bk_free(g, idd), bk_free(g, od);
            free(tab), free(ref), free(got);
        }
    bk_destroy(g), bk_destroy(c);
}

TEST(rmsnorm_rows) {
    struct backend *g = gpu(), *c = cpu();
    const int ns[] = { 5, 64, 1000, 4099 };
    for (size_t i = 0; i < ARRAY_LEN(ns); i++)
        for (int with_w = 0; with_w < 2; with_w++)
            for (int inplace = 0; inplace < 2; inplace++) {
                const int R = 37, n = ns[i];
                float *x = randf((size_t)R * n, 3.0f), *w = with_w ? randf((size_t)n, 2.0f) : NULL;
                float *ref = xmalloc((size_t)R * n * 4), *got = xmalloc((size_t)R * n * 4);
                bk_rmsnorm(c, ref, x, w, R, n, 1e-6f);
                float *xd = up(g, x, (size_t)R * n * 4), *wd = w ? up(g, w, (size_t)n * 4) : NULL;
                float *yd = inplace ? xd : poisoned(g, (size_t)R * n);
                bk_rmsnorm(g, yd, xd, wd, R, n, 1e-6f);
                down(g, got, yd, (size_t)R * n * 4);
                CHECK_CLOSE(got, ref, NULL, (size_t)R * n, 1e-6, 1e-5, "rmsnorm n=%d w=%d inplace=%d", n, with_w,
                            inplace);
                bk_free(g, xd), bk_free(g, wd);
                if (!inplace) bk_free(g, yd);
                free(x), free(w), free(ref), free(got);
            }
    bk_destroy(g), bk_destroy(c);
}

TEST(rope_layouts) {
    struct backend *g = gpu(), *c = cpu();
    const int Ds[] = { 16, 64, 128, 256 };
    for (size_t di = 0; di < ARRAY_LEN(Ds); di++)
        for (int partial = 0; partial < 2; partial++)
            for (int neox = 0; neox < 2; neox++) {
                const int T = 13, H = 3, D = Ds[di], rot = partial ? D / 2 : D;
                float inv_freq[128];
                for (int i = 0; i < rot / 2; i++) inv_freq[i] = powf(10000.0f, -2.0f * (float)i / (float)rot);
                struct bk_rope r = { inv_freq, rot, 1.25f, neox != 0 };
                int32_t pos[13];
                for (int t = 0; t < T; t++) pos[t] = (int32_t)(test_rng_next_(&rng) % 5000);
                const size_t n = (size_t)T * H * D;
                float *x = randf(n, 1.0f), *ref = xmalloc(n * 4), *got = xmalloc(n * 4), *ones = xmalloc(n * 4);
                memcpy(ref, x, n * 4);
                for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
                bk_rope(c, ref, pos, T, H, D, &r);
                float *xd = up(g, x, n * 4);
                int32_t *pd = up(g, pos, sizeof pos);
                bk_rope(g, xd, pd, T, H, D, &r);
                down(g, got, xd, n * 4);
                CHECK_CLOSE(got, ref, ones, n, 0, 2e-5, "rope D=%d rot=%d neox=%d", D, rot, neox);
                bk_free(g, xd), bk_free(g, pd);
                free(x), free(ref), free(got), free(ones);
            }
    bk_destroy(g), bk_destroy(c);
}

TEST(glu_activations) {
    struct backend *g = gpu(), *c = cpu();
    const enum bk_act acts[] = { BK_ACT_SILU, BK_ACT_GELU_TANH, BK_ACT_GELU, BK_ACT_RELU };
    for (size_t ai = 0; ai < ARRAY_LEN(acts); ai++) {
        const int T = 9, F = 1001, ld = 1003;
        float *gt = randf((size_t)T * ld, 6.0f), *u = randf((size_t)T * ld, 2.0f);
        float *ref = xmalloc((size_t)T * F * 4), *got = xmalloc((size_t)T * F * 4);
        bk_glu(c, ref, gt, u, T, F, ld, acts[ai]);
        float *gd = up(g, gt, (size_t)T * ld * 4), *ud = up(g, u, (size_t)T * ld * 4), *od = poisoned(g, (size_t)T * F);
        bk_glu(g, od, gd, ud, T, F, ld, acts[ai]);
        down(g, got, od, (size_t)T * F * 4);
        CHECK_CLOSE(got, ref, NULL, (size_t)T * F, 1e-6, 1e-5, "glu act=%d%s", (int)acts[ai], "");
        bk_free(g, gd), bk_free(g, ud), bk_free(g, od);
        free(gt), free(u), free(ref), free(got);
    }
    bk_destroy(g), bk_destroy(c);
}

TEST(elementwise_ops) {
    struct backend *g = gpu(), *c = cpu();
    const size_t n = 100003;
    const int T = 7, N = 1001;
    float *y = randf(n, 50.0f), *x = randf(n, 3.0f), *bias = randf((size_t)N, 1.0f);
    float *ref = xmalloc(n * 4), *got = xmalloc(n * 4);
    for (int op = 0; op < 4; op++) {
        memcpy(ref, y, n * 4);
        float *yd = up(g, y, n * 4), *xd = up(g, x, n * 4), *bd = up(g, bias, (size_t)N * 4);
        size_t m = n;
        switch (op) {
        case 0: bk_add_scaled(c, ref, x, 0.7f, n), bk_add_scaled(g, yd, xd, 0.7f, n); break;
        case 1: m = (size_t)T * N, bk_add_bias(c, ref, bias, T, N), bk_add_bias(g, yd, bd, T, N); break;
        case 2: bk_softcap(c, ref, n, 30.0f), bk_softcap(g, yd, n, 30.0f); break;
        case 3: bk_scale(c, ref, n, 0.125f), bk_scale(g, yd, n, 0.125f); break;
        }
        down(g, got, yd, n * 4);
        CHECK_CLOSE(got, ref, NULL, n, 1e-6, 1e-6, "elementwise op %d (%zu elements changed)", op, m);
        bk_free(g, yd), bk_free(g, xd), bk_free(g, bd);
    }
    free(y), free(x), free(bias), free(ref), free(got);
    bk_destroy(g), bk_destroy(c);
}

static struct bk_kv host_kv(enum dtype dt, int nblocks, int B, int Hkv, int D, bool random) {
    size_t n = (size_t)nblocks * B * Hkv * D;
    struct bk_kv kv = { .dtype = dt, .num_blocks = nblocks, .block_size = B, .n_kv_heads = Hkv, .head_dim = D };
    kv.k = random ? rand_typed(dt, n) : xcalloc(n, dtype_size(dt));
    kv.v = random ? rand_typed(dt, n) : xcalloc(n, dtype_size(dt));
    return kv;
}

static struct bk_kv dev_kv(struct backend *g, const struct bk_kv *h) {
    struct bk_kv d = *h;
    size_t bytes = (size_t)h->num_blocks * h->block_size * h->n_kv_heads * h->head_dim * dtype_size(h->dtype);
    d.k = up(g, h->k, bytes);
    d.v = up(g, h->v, bytes);
    return d;
}

TEST(kv_store_exact) {
    struct backend *g = gpu(), *c = cpu();
    const enum dtype dts[] = { DT_F32, DT_BF16, DT_F16 };
    for (size_t di = 0; di < ARRAY_LEN(dts); di++) {
        const int nb = 9, B = 8, Hkv = 2, D = 48, T = 40, row = Hkv * D;
        struct bk_kv kh = host_kv(dts[di], nb, B, Hkv, D, false), kd = dev_kv(g, &kh);
        /* distinct slots outside block 0, shuffled */
        int32_t slots[64];
        int n_slots = (nb - 1) * B;
        int32_t all[64];
        for (int i = 0; i < n_slots; i++) all[i] = B + i;
        for (int i = n_slots - 1; i > 0; i--) {
            int j = (int)(test_rng_next_(&rng) % (unsigned)(i + 1));
            int32_t t = all[i];
            all[i] = all[j], all[j] = t;
        }
        memcpy(slots, all, T * sizeof(int32_t));
        for (int t = 3; t < T; t += 7) slots[t] = -1; /* padding rows: not stored (backend.h) */
        float *k = randf((size_t)T * row, 3.0f), *v = randf((size_t)T * row, 3.0f);
        bk_kv_store(c, &kh, k, v, slots, T);
        float *kdd = up(g, k, (size_t)T * row * 4), *vdd = up(g, v, (size_t)T * row * 4);
        int32_t *sd = up(g, slots, T * sizeof(int32_t));
        bk_kv_store(g, &kd, kdd, vdd, sd, T);
        size_t bytes = (size_t)nb * B * row * dtype_size(dts[di]);
        void *gk = xmalloc(bytes), *gv = xmalloc(bytes);
        down(g, gk, kd.k, bytes);
        down(g, gv, kd.v, bytes);
        CHECK(memcmp(gk, kh.k, bytes) == 0); /* rounding to nearest even on both sides */
        CHECK(memcmp(gv, kh.v, bytes) == 0);
        bk_free(g, kd.k), bk_free(g, kd.v), bk_free(g, kdd), bk_free(g, vdd), bk_free(g, sd);
        free(kh.k), free(kh.v), free(k), free(v), free(gk), free(gv);
    }
    bk_destroy(g), bk_destroy(c);
}

struct attn_case {
    int H, Hkv, D, window;
    float softcap;
    enum dtype dt;
    int B;
    int S;
    int ctx[8], nq[8]; /* per sequence: context after the step, query rows */
};

/* extra block-table columns (null blocks) for the next check, as a recorded
 * decode step pads its table; the GPU then bounds the keys by the width */
static int table_pad;

/* the GPU's attention on the case against the CPU's; |got - ref| <= tol_abs +
 * tol_rel |ref|. Returns max |got - ref|. */
static double check_attention_tol(struct backend *g, struct backend *c, const struct attn_case *ac, double tol_abs,
                                  double tol_rel) {
    const int S = ac->S, B = ac->B;
    int32_t qs[9], seq_len[8];
    int max_blocks = 0, max_q = 0, max_len = 0;
    qs[0] = 0;
    for (int s = 0; s < S; s++) {
        qs[s + 1] = qs[s] + ac->nq[s];
        seq_len[s] = ac->ctx[s];
        max_blocks = MAX(max_blocks, (ac->ctx[s] + B - 1) / B);
        max_q = MAX(max_q, ac->nq[s]);
        max_len = MAX(max_len, ac->ctx[s]);
    }
    const int T = qs[S], nblocks = 1 + S * max_blocks, width = max_blocks + table_pad;
    int32_t *bt = xcalloc((size_t)S * width, sizeof(int32_t));
    /* blocks in a shuffled order, never block 0 */
    int32_t *perm = xmalloc((size_t)S * max_blocks * sizeof(int32_t));
    for (int i = 0; i < S * max_blocks; i++) perm[i] = 1 + i;
    for (int i = S * max_blocks - 1; i > 0; i--) {
        int j = (int)(test_rng_next_(&rng) % (unsigned)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int s = 0; s < S; s++) memcpy(bt + (size_t)s * width, perm + (size_t)s * max_blocks, (size_t)max_blocks * 4);
    struct bk_kv kh = host_kv(ac->dt, nblocks, B, ac->Hkv, ac->D, true), kd = dev_kv(g, &kh);
    struct bk_attn_batch b = { .n_seqs = S, .query_start = qs, .seq_len = seq_len, .block_table = bt,
                               .max_blocks = width };
    struct bk_attn_params p = { .n_heads = ac->H, .n_kv_heads = ac->Hkv, .head_dim = ac->D,
                                .scale = 1.0f / sqrtf((float)ac->D), .sliding_window = ac->window,
                                .softcap = ac->softcap };
    const size_t len = (size_t)T * ac->H * ac->D;
    float *q = randf(len, 2.0f), *ref = xmalloc(len * 4), *got = xmalloc(len * 4);
    bk_attention(c, ref, q, &kh, &b, &p);
    struct bk_attn_batch bd = b;
    bd.query_start = up(g, qs, (size_t)(S + 1) * 4);
    bd.seq_len = up(g, seq_len, (size_t)S * 4);
    bd.block_table = up(g, bt, (size_t)S * width * 4);
    bd.max_seq_len = table_pad ? width * B : max_len;
    bd.max_query_len = max_q;
    float *qd = up(g, q, len * 4), *od = poisoned(g, len);
    bk_attention(g, od, qd, &kd, &bd, &p);
    down(g, got, od, len * 4);
    CHECK_CLOSE(got, ref, NULL, len, tol_abs, tol_rel, "attention H=%d Hkv=%d D=%d window=%d softcap=%g %s B=%d",
                ac->H, ac->Hkv, ac->D, ac->window, ac->softcap, dtype_name(ac->dt), B);
    double err = 0;
    for (size_t i = 0; i < len; i++) err = fmax(err, fabs((double)got[i] - ref[i]));
    bk_free(g, (void *)bd.query_start), bk_free(g, (void *)bd.seq_len), bk_free(g, (void *)bd.block_table);
    bk_free(g, qd), bk_free(g, od), bk_free(g, kd.k), bk_free(g, kd.v);
    free(kh.k), free(kh.v), free(q), free(ref), free(got), free(bt), free(perm);
    return err;
}

static void check_attention(struct backend *g, struct backend *c, const struct attn_case *ac) {
    check_attention_tol(g, c, ac, 2e-5, 1e-4);
}

/* the warp-per-row kernel (exact f32 products); the tensor-core kernel that
 * takes prefill steps by default is tested below */
TEST(attention_varlen_paged) {
    setenv("VLLMC_CUDA_ATTN", "warp", 1);
    struct backend *g = gpu(), *c = cpu();
    unsetenv("VLLMC_CUDA_ATTN");
    /* mixed: one token alone, a whole prompt, a chunk of a prompt, decodes
     * (a long one); odd head dims take the scalar paths */
    static const struct attn_case cases[] = {
        { 4, 2, 16, 0, 0, DT_F32, 8, 5, { 1, 37, 50, 300, 9 }, { 1, 37, 13, 1, 1 } },
        { 8, 1, 64, 5, 0, DT_BF16, 16, 4, { 37, 50, 300, 2000 }, { 37, 13, 1, 1 } },
        { 6, 6, 128, 0, 30.0f, DT_F16, 16, 4, { 40, 50, 700, 3 }, { 40, 13, 1, 3 } },
        { 32, 8, 128, 0, 0, DT_BF16, 16, 3, { 100, 1500, 33 }, { 100, 1, 2 } },
        { 4, 4, 256, 64, 0, DT_F32, 32, 3, { 129, 1000, 70 }, { 129, 1, 5 } },
        { 5, 1, 80, 0, 0, DT_BF16, 16, 3, { 77, 600, 1 }, { 20, 1, 1 } },
        { 3, 3, 20, 0, 0, DT_F16, 8, 3, { 45, 500, 8 }, { 45, 1, 8 } },
        { 3, 3, 20, 7, 50.0f, DT_F32, 8, 2, { 45, 900 }, { 45, 1 } },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) check_attention(g, c, &cases[i]);
    bk_destroy(g), bk_destroy(c);
}

/* decode only (every sequence one query row): the warp kernel's split-KV
 * path and its merge (VLLMC_CUDA_DEC=0; attn_dec.cu is tested below) */
TEST(attention_split_kv_decode) {
    setenv("VLLMC_CUDA_DEC", "0", 1);
    struct backend *g = gpu(), *c = cpu();
    unsetenv("VLLMC_CUDA_DEC");
    static const struct attn_case cases[] = {
        { 32, 8, 128, 0, 0, DT_BF16, 16, 1, { 4096 }, { 1 } },
        { 8, 2, 64, 0, 0, DT_F16, 16, 4, { 3000, 129, 1, 2500 }, { 1, 1, 1, 1 } },
        { 8, 8, 128, 1000, 0, DT_F32, 32, 2, { 3000, 1200 }, { 1, 1 } },
        { 4, 1, 256, 0, 20.0f, DT_BF16, 16, 2, { 5000, 17 }, { 1, 1 } },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) check_attention(g, c, &cases[i]);
    bk_destroy(g), bk_destroy(c);
}

/* The decode kernels for 16-bit caches (attn_dec.cu) that run steps of
 * fewer than 16 query rows per sequence: GQA 1/4/7/8/16, D 64/128/256,
 * blocks of 8/16/32, bf16/f16, windows (1, narrower and wider than the
 * context), softcaps, sequences of different lengths (1 token, long
 * contexts), 1 to 15 query rows (row chunks of 8, and of 16 for the tensor
 * cores), a padded table (the bound a recorded step splits by); each variant
 * (VLLMC_CUDA_DEC 1: registers, 2: cp.async tiles, 3: tensor cores, the
 * default, 4: three stages) and few and many splits (VLLMC_CUDA_DEC_CTAS 1
 * and 16), with every overlap switch (VLLMC_CUDA_DEC_FLAGS 7) and none (0):
 * the same results in any order of the copies. Variants 1 and 2 compute in f32: the warp kernel's tolerance;
 * 3 and 4 round q and P to the KV type: the FA kernel's (1e-2 bf16, 3e-3
 * f16; the worst seen is printed). D 256 cases run variant 2 under 3. */
TEST(attention_decode_kernel) {
    static const struct attn_case cases[] = {
        { 32, 8, 128, 0, 0, DT_BF16, 16, 1, { 4096 }, { 1 } },
        { 32, 8, 128, 0, 0, DT_BF16, 16, 5, { 600, 1, 17, 1000, 33 }, { 1, 1, 1, 1, 1 } },
        { 8, 2, 64, 0, 0, DT_F16, 8, 4, { 3000, 129, 2, 2500 }, { 1, 2, 1, 3 } },
        { 28, 4, 128, 0, 50.0f, DT_BF16, 32, 3, { 700, 64, 1500 }, { 1, 1, 4 } },
        { 16, 2, 256, 100, 0, DT_BF16, 16, 3, { 1000, 50, 99 }, { 1, 2, 1 } },
        { 4, 4, 128, 1, 0, DT_F16, 16, 2, { 500, 3 }, { 1, 2 } },
        { 64, 8, 128, 0, 0, DT_BF16, 16, 2, { 2049, 777 }, { 2, 1 } },
        { 8, 1, 64, 33, 30.0f, DT_BF16, 8, 3, { 100, 40, 5000 }, { 15, 1, 1 } },
        { 6, 2, 256, 0, 0, DT_F16, 32, 2, { 4100, 1 }, { 1, 1 } },
        { 12, 12, 64, 0, 0, DT_BF16, 16, 1, { 20000 }, { 1 } },
        { 32, 2, 128, 3000, 0, DT_F16, 16, 2, { 300, 4000 }, { 1, 1 } },
        { 32, 8, 128, 0, 0, DT_BF16, 16, 8, { 1, 2, 3, 4, 5, 6, 7, 4097 }, { 1, 1, 1, 1, 1, 1, 1, 1 } },
        { 16, 1, 128, 0, 0, DT_F16, 16, 2, { 900, 260 }, { 1, 2 } },
    };
    static const int pads[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 7, 0 };
    static const char *ctas[] = { NULL, NULL, "1", "16", NULL, "1", "16", NULL, "16", NULL },
                      *dec[] = { "2", "1", "2", "2", NULL, "3", "3", "4", "3", "4" },
                      *flags[] = { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "7", "0" };
    struct backend *c = cpu();
    for (size_t v = 0; v < ARRAY_LEN(ctas); v++) {
        if (ctas[v]) setenv("VLLMC_CUDA_DEC_CTAS", ctas[v], 1);
        if (dec[v]) setenv("VLLMC_CUDA_DEC", dec[v], 1);
        if (flags[v]) setenv("VLLMC_CUDA_DEC_FLAGS", flags[v], 1);
        struct backend *g = gpu();
        unsetenv("VLLMC_CUDA_DEC_CTAS");
        unsetenv("VLLMC_CUDA_DEC");
        unsetenv("VLLMC_CUDA_DEC_FLAGS");
        const bool mma = !dec[v] || atoi(dec[v]) >= 3;
        double worst[2] = { 0, 0 }; /* bf16, f16 */
        for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
            table_pad = pads[i];
            const bool bf = cases[i].dt == DT_BF16;
            if (!mma) {
                check_attention(g, c, &cases[i]);
                continue;
            }
            double e = check_attention_tol(g, c, &cases[i], bf ? 1e-2 : 3e-3, 0);
            worst[!bf] = fmax(worst[!bf], e);
        }
        if (mma)
            printf("      variant %s, split target %s, flags %s: max |err| %.2e (bf16 KV), %.2e (f16 KV)\n",
                   dec[v] ? dec[v] : "3", ctas[v] ? ctas[v] : "2", flags[v] ? flags[v] : "0", worst[0], worst[1]);
        table_pad = 0;
        bk_destroy(g);
    }
    bk_destroy(c);
}

/* sum_k |x| |w| for the rows of a weight (the error scale of check_affine);
 * the CPU's embedding lookup of every row gives w in f32, dense or affine */
static float *weight_mag(struct backend *c, const struct bk_weight *h, const float *x, int T) {
    const int N = (int)h->rows, K = (int)h->cols;
    int32_t *all = xmalloc((size_t)N * 4);
    for (int n = 0; n < N; n++) all[n] = n;
    float *wabs = xmalloc((size_t)N * K * 4), *xa = xmalloc((size_t)T * K * 4), *mag = xmalloc((size_t)T * N * 4);
    bk_embed(c, wabs, h, all, N, 1.0f);
    for (size_t i = 0; i < (size_t)N * K; i++) wabs[i] = fabsf(wabs[i]);
    for (size_t i = 0; i < (size_t)T * K; i++) xa[i] = fabsf(x[i]);
    struct bk_weight wa = { .dtype = DT_F32, .rows = N, .cols = K, .data = wabs };
    bk_matmul(c, mag, xa, &wa, T);
    free(all), free(wabs), free(xa);
    return mag;
}

/* add_rmsnorm (nw == 0) or add_rmsnorm_matmul (then y_i = h · W_i^T for the
 * nw weights too) on R rows of n against the CPU's add_scaled, rmsnorm and
 * matmuls. mode 0: a norm weight, h apart; 1: no weight; 2: a weight, h on o
 * (as the model calls it). */
static void check_add_rmsnorm(struct backend *g, struct backend *c, int R, int n, int mode, int nw,
                              const struct bk_weight *const *wh, const struct bk_weight *const *wd, const int *N) {
    const size_t len = (size_t)R * n;
    float *x = randf(len, 3.0f), *o = randf(len, 2.0f), *w = mode != 1 ? randf((size_t)n, 2.0f) : NULL;
    float *xr = xmalloc(len * 4), *hr = xmalloc(len * 4), *xg = xmalloc(len * 4), *hg = xmalloc(len * 4);
    memcpy(xr, x, len * 4);
    bk_add_scaled(c, xr, o, 0.7f, len);
    bk_rmsnorm(c, hr, xr, w, R, n, 1e-6f);
    float *xd = up(g, x, len * 4), *od = up(g, o, len * 4), *wnd = w ? up(g, w, (size_t)n * 4) : NULL;
    float *hd = mode == 2 ? od : poisoned(g, len), *yd[BK_MATMUL_MANY];
    for (int i = 0; i < nw; i++) yd[i] = poisoned(g, (size_t)R * N[i]);
    if (nw) g->ops->add_rmsnorm_matmul(g, xd, od, 0.7f, hd, wnd, R, n, 1e-6f, nw, yd, wd);
    else g->ops->add_rmsnorm(g, xd, od, 0.7f, hd, wnd, R, n, 1e-6f);
    down(g, xg, xd, len * 4);
    down(g, hg, hd, len * 4);
    CHECK_CLOSE(xg, xr, NULL, len, 1e-6, 1e-6, "add_rmsnorm x n=%d R=%d mode=%d nw=%d", n, R, mode, nw);
    if (!nw) /* add_rmsnorm_matmul leaves h unspecified (backend.h) */
        CHECK_CLOSE(hg, hr, NULL, len, 1e-6, 1e-5, "add_rmsnorm h n=%d R=%d mode=%d nw=%d", n, R, mode, nw);
    for (int i = 0; i < nw; i++) {
        float *ref = xmalloc((size_t)R * N[i] * 4), *got = xmalloc((size_t)R * N[i] * 4);
        bk_matmul(c, ref, hr, wh[i], R);
        float *mag = weight_mag(c, wh[i], hr, R);
        down(g, got, yd[i], (size_t)R * N[i] * 4);
        CHECK_CLOSE(got, ref, mag, (size_t)R * N[i], 1e-6, 2e-5, "add_rmsnorm_matmul y%d n=%d R=%d mode=%d", i, n, R,
                    mode);
        free(ref), free(got), free(mag);
        bk_free(g, yd[i]);
    }
    bk_free(g, xd), bk_free(g, od), bk_free(g, wnd);
    if (mode != 2) bk_free(g, hd);
    free(x), free(o), free(w), free(xr), free(hr), free(xg), free(hg);
}

/* add_rmsnorm (fused.cu) against the CPU's add_scaled then rmsnorm: rows of
 * odd widths, with and without a weight, h apart from and aliasing o. */
TEST(add_rmsnorm_fused) {
    struct backend *g = gpu(), *c = cpu();
    REQUIRE(g->ops->add_rmsnorm != NULL);
    const int ns[] = { 4096, 1000, 37, 14336, 20480 }, Rs[] = { 1, 13 }; /* 1, 2, 4 runs of 8 per thread; odd n */
    for (size_t i = 0; i < ARRAY_LEN(ns); i++)
        for (size_t ri = 0; ri < ARRAY_LEN(Rs); ri++)
            for (int mode = 0; mode < 3; mode++) check_add_rmsnorm(g, c, Rs[ri], ns[i], mode, 0, NULL, NULL, NULL);
    bk_destroy(g), bk_destroy(c);
}

/* qkv_prep (fused.cu) against the CPU's plain sequence (add_bias, rmsnorm,
 * rope, kv_store): every KV dtype, with and without biases and q/k norms,
 * RoPE neox / interleaved / partial / none, GQA and MHA, D 64/80/128/256.
 * q, k and v to the f32 tolerances of rmsnorm and rope; the caches within a
 * rounding step of the KV type (the sums of squares run in another order). */
TEST(qkv_prep_fused) {
    struct backend *g = gpu(), *c = cpu();
    REQUIRE(g->ops->qkv_prep != NULL);
    const enum dtype dts[] = { DT_F32, DT_BF16, DT_F16 };
    static const int shapes[][3] = { { 32, 8, 128 }, { 5, 5, 80 }, { 28, 4, 64 }, { 8, 2, 256 } }; /* H, Hkv, D */
    int n_case = 0;
    for (size_t di = 0; di < ARRAY_LEN(dts); di++)
        for (size_t si = 0; si < ARRAY_LEN(shapes); si++)
            for (int var = 0; var < 5; var++) {
                /* var: 0 plain neox rope; 1 biases + norms + neox; 2 norms + interleaved rope;
                 * 3 biases + partial neox rope; 4 norms, no rope */
                const int H = shapes[si][0], Hkv = shapes[si][1], D = shapes[si][2], T = var == 1 ? 1 : 7;
                const int nb = 12, B = 8, rot = var == 3 ? D / 2 : D;
                const bool bias = var == 1 || var == 3, norm = var == 1 || var == 2 || var == 4;
                float inv_freq[128];
                for (int i = 0; i < rot / 2; i++) inv_freq[i] = powf(10000.0f, -2.0f * (float)i / (float)rot);
                struct bk_rope r = { inv_freq, rot, 1.1f, var != 2 };
                int32_t pos[7], slots[7];
                for (int t = 0; t < T; t++) pos[t] = (int32_t)(test_rng_next_(&rng) % 5000), slots[t] = B + 3 * t + 1;
                const size_t nq = (size_t)T * H * D, nk = (size_t)T * Hkv * D;
                float *q = randf(nq, 2.0f), *k = randf(nk, 2.0f), *v = randf(nk, 2.0f);
                float *bq = bias ? randf((size_t)H * D, 1.0f) : NULL, *bkk = bias ? randf((size_t)Hkv * D, 1.0f) : NULL;
                float *bv = bias ? randf((size_t)Hkv * D, 1.0f) : NULL;
                float *qn = norm ? randf((size_t)D, 1.5f) : NULL, *kn = norm ? randf((size_t)D, 1.5f) : NULL;
                struct bk_kv kh = host_kv(dts[di], nb, B, Hkv, D, false), kd = dev_kv(g, &kh);
                /* the CPU: the plain sequence (forward.c's unfused path) */
                float *qr = xmalloc(nq * 4), *kr = xmalloc(nk * 4), *vr = xmalloc(nk * 4);
                memcpy(qr, q, nq * 4), memcpy(kr, k, nk * 4), memcpy(vr, v, nk * 4);
                if (bias) bk_add_bias(c, qr, bq, T, H * D), bk_add_bias(c, kr, bkk, T, Hkv * D), bk_add_bias(c, vr, bv, T, Hkv * D);
                if (norm) bk_rmsnorm(c, qr, qr, qn, T * H, D, 1e-6f), bk_rmsnorm(c, kr, kr, kn, T * Hkv, D, 1e-6f);
                if (var != 4) bk_rope(c, qr, pos, T, H, D, &r), bk_rope(c, kr, pos, T, Hkv, D, &r);
                bk_kv_store(c, &kh, kr, vr, slots, T);
                /* the GPU: one op */
                float *qd = up(g, q, nq * 4), *kdd = up(g, k, nk * 4), *vd = up(g, v, nk * 4);
                float *bqd = bias ? up(g, bq, (size_t)H * D * 4) : NULL, *bkd = bias ? up(g, bkk, (size_t)Hkv * D * 4) : NULL;
                float *bvd = bias ? up(g, bv, (size_t)Hkv * D * 4) : NULL;
                float *qnd = norm ? up(g, qn, (size_t)D * 4) : NULL, *knd = norm ? up(g, kn, (size_t)D * 4) : NULL;
                int32_t *pd = up(g, pos, sizeof pos), *sd = up(g, slots, sizeof slots);
                const struct bk_qkv a = { .q = qd, .k = kdd, .v = vd, .b_q = bqd, .b_k = bkd, .b_v = bvd, .q_norm = qnd,
                                          .k_norm = knd, .eps = 1e-6f, .rope = var != 4 ? &r : NULL, .pos = pd,
                                          .slots = sd, .T = T, .H = H, .Hkv = Hkv, .D = D };
                g->ops->qkv_prep(g, &kd, &a);
                float *qg = xmalloc(nq * 4), *kg = xmalloc(nk * 4), *vg = xmalloc(nk * 4);
                down(g, qg, qd, nq * 4), down(g, kg, kdd, nk * 4), down(g, vg, vd, nk * 4);
                CHECK_CLOSE(qg, qr, NULL, nq, 1e-5, 2e-5, "qkv_prep q %s H=%d D=%d var=%d", dtype_name(dts[di]), H, D, var);
                CHECK_CLOSE(kg, kr, NULL, nk, 1e-5, 2e-5, "qkv_prep k %s H=%d D=%d var=%d", dtype_name(dts[di]), H, D, var);
                CHECK_CLOSE(vg, vr, NULL, nk, 1e-12, 0, "qkv_prep v %s H=%d D=%d var=%d", dtype_name(dts[di]), H, D, var);
                const size_t cn = (size_t)nb * B * Hkv * D, cbytes = cn * dtype_size(dts[di]);
                void *ck = xmalloc(cbytes), *cv = xmalloc(cbytes);
                down(g, ck, kd.k, cbytes), down(g, cv, kd.v, cbytes);
                float *fk[2] = { xmalloc(cn * 4), xmalloc(cn * 4) }, *fr[2] = { xmalloc(cn * 4), xmalloc(cn * 4) };
                for (size_t i = 0; i < cn; i++) {
                    fk[0][i] = dtype_read_f32(ck, dts[di], i), fk[1][i] = dtype_read_f32(cv, dts[di], i);
                    fr[0][i] = dtype_read_f32(kh.k, dts[di], i), fr[1][i] = dtype_read_f32(kh.v, dts[di], i);
                }
                const double rel = dts[di] == DT_BF16 ? 8e-3 : dts[di] == DT_F16 ? 1e-3 : 2e-5;
                CHECK_CLOSE(fk[0], fr[0], NULL, cn, 1e-5, rel, "qkv_prep k cache %s H=%d D=%d var=%d", dtype_name(dts[di]), H, D, var);
                CHECK_CLOSE(fk[1], fr[1], NULL, cn, 1e-12, 0, "qkv_prep v cache %s H=%d D=%d var=%d", dtype_name(dts[di]), H, D, var);
                n_case++;
                void *dev[] = { qd, kdd, vd, bqd, bkd, bvd, qnd, knd, pd, sd, kd.k, kd.v };
                for (size_t i = 0; i < ARRAY_LEN(dev); i++) bk_free(g, dev[i]);
                free(q), free(k), free(v), free(bq), free(bkk), free(bv), free(qn), free(kn), free(qr), free(kr), free(vr);
                free(qg), free(kg), free(vg), free(ck), free(cv), free(kh.k), free(kh.v);
                free(fk[0]), free(fk[1]), free(fr[0]), free(fr[1]);
            }
    printf("      %d cases\n", n_case);
    bk_destroy(g), bk_destroy(c);
}

/* qkv_attention (backend.h): qkv_prep then attention in one op. Where the
 * tensor-core decode kernel runs the call (16-bit KV, D 64 / 128) the CUDA
 * backend prepares q and the step's keys inside it (attn_dec.cu, PREP); the
 * output and both caches must be the same bits as the GPU's qkv_prep +
 * attention, and the output within the decode kernel's tolerance of the
 * CPU's plain sequence. Cases: GQA 1/4/8, 1-4 query rows per sequence (the
 * step's keys across a 64-key tile; 24 rows = two row chunks), a window
 * narrower than the step, biases + q/k norms + partial RoPE, no RoPE, a
 * padding row (slot -1: used, never stored), a token whose 7 query heads
 * straddle two row chunks (the key's owner is the first one's), few and many
 * splits; and calls the fused kernel does not take (D 256, f32 KV, variant
 * 2), which run the two ops (same checks, the f32 path's tolerance for f32).
 * VLLMC_CUDA_QKV_ATTN=always makes every call variant 3 can run fused, and
 * the backend's count of fused calls says that they were; at the default
 * the single long sequence (a split grid) is fused. */
struct qa_case {
    int H, Hkv, D, window, var; /* var: 0 neox RoPE; 1 biases, norms, partial RoPE; 2 norms, no RoPE */
    enum dtype dt;
    int B, S;
    int ctx[4], nq[4];
    bool pad_last; /* the last sequence is a padding row: slot -1, left out of the comparison */
};

static void check_qkv_attention(struct backend *g, struct backend *c, const struct qa_case *qc, double *worst) {
    const int S = qc->S, B = qc->B, H = qc->H, Hkv = qc->Hkv, D = qc->D;
    int32_t qs[5], seq_len[4], pos[64], slots[64];
    int max_blocks = 0, max_q = 0, max_len = 0;
    qs[0] = 0;
    for (int s = 0; s < S; s++) {
        qs[s + 1] = qs[s] + qc->nq[s], seq_len[s] = qc->ctx[s];
        max_blocks = MAX(max_blocks, (qc->ctx[s] + B - 1) / B);
        max_q = MAX(max_q, qc->nq[s]), max_len = MAX(max_len, qc->ctx[s]);
    }
    const int T = qs[S], nblocks = 1 + S * max_blocks;
    int32_t *bt = xcalloc((size_t)S * max_blocks, sizeof(int32_t));
    for (int i = 0; i < S * max_blocks; i++) bt[i] = 1 + i;
    for (int i = S * max_blocks - 1; i > 0; i--) {
        int j = (int)(test_rng_next_(&rng) % (unsigned)(i + 1));
        int32_t t = bt[i];
        bt[i] = bt[j], bt[j] = t;
    }
    for (int s = 0; s < S; s++)
        for (int i = 0; i < qc->nq[s]; i++) {
            const int t = qs[s] + i, p = qc->ctx[s] - qc->nq[s] + i;
            pos[t] = p, slots[t] = bt[(size_t)s * max_blocks + p / B] * B + p % B;
            if (qc->pad_last && s == S - 1) slots[t] = -1;
        }
    const int rot = qc->var == 1 ? D / 2 : D;
    float inv_freq[128];
    for (int i = 0; i < rot / 2; i++) inv_freq[i] = powf(10000.0f, -2.0f * (float)i / (float)rot);
    struct bk_rope r = { inv_freq, rot, qc->var == 1 ? 1.1f : 1.0f, true };
    const bool bias = qc->var == 1, norm = qc->var >= 1, rope = qc->var != 2;
    const size_t nq = (size_t)T * H * D, nk = (size_t)T * Hkv * D;
    float *q = randf(nq, 2.0f), *k = randf(nk, 2.0f), *v = randf(nk, 2.0f);
    float *bq = bias ? randf((size_t)H * D, 1.0f) : NULL, *bkk = bias ? randf((size_t)Hkv * D, 1.0f) : NULL;
    float *bv = bias ? randf((size_t)Hkv * D, 1.0f) : NULL;
    float *qn = norm ? randf((size_t)D, 1.5f) : NULL, *kn = norm ? randf((size_t)D, 1.5f) : NULL;
    struct bk_kv kh = host_kv(qc->dt, nblocks, B, Hkv, D, true), kd[2] = { dev_kv(g, &kh), dev_kv(g, &kh) };
    struct bk_attn_batch b = { .n_seqs = S, .query_start = qs, .seq_len = seq_len, .block_table = bt,
                               .max_blocks = max_blocks };
    struct bk_attn_params p = { .n_heads = H, .n_kv_heads = Hkv, .head_dim = D, .scale = 1.0f / sqrtf((float)D),
                                .sliding_window = qc->window };
    /* the CPU: forward.c's unfused sequence, on copies */
    float *ref = xmalloc(nq * 4), *qr = xmalloc(nq * 4), *kr = xmalloc(nk * 4), *vr = xmalloc(nk * 4);
    memcpy(qr, q, nq * 4), memcpy(kr, k, nk * 4), memcpy(vr, v, nk * 4);
    if (bias) bk_add_bias(c, qr, bq, T, H * D), bk_add_bias(c, kr, bkk, T, Hkv * D), bk_add_bias(c, vr, bv, T, Hkv * D);
    if (norm) bk_rmsnorm(c, qr, qr, qn, T * H, D, 1e-6f), bk_rmsnorm(c, kr, kr, kn, T * Hkv, D, 1e-6f);
    if (rope) bk_rope(c, qr, pos, T, H, D, &r), bk_rope(c, kr, pos, T, Hkv, D, &r);
    bk_kv_store(c, &kh, kr, vr, slots, T);
    bk_attention(c, ref, qr, &kh, &b, &p);
    /* the GPU, twice from the same raw projections: [0] qkv_prep + attention, [1] qkv_attention */
    struct bk_attn_batch bd = b;
    bd.query_start = up(g, qs, (size_t)(S + 1) * 4);
    bd.seq_len = up(g, seq_len, (size_t)S * 4);
    bd.block_table = up(g, bt, (size_t)S * max_blocks * 4);
    bd.max_seq_len = max_len, bd.max_query_len = max_q;
    float *bqd = bias ? up(g, bq, (size_t)H * D * 4) : NULL, *bkd = bias ? up(g, bkk, (size_t)Hkv * D * 4) : NULL;
    float *bvd = bias ? up(g, bv, (size_t)Hkv * D * 4) : NULL;
    float *qnd = norm ? up(g, qn, (size_t)D * 4) : NULL, *knd = norm ? up(g, kn, (size_t)D * 4) : NULL;
    int32_t *pd = up(g, pos, (size_t)T * 4), *sd = up(g, slots, (size_t)T * 4);
    const size_t cbytes = (size_t)nblocks * B * Hkv * D * dtype_size(qc->dt);
    float *got[2];
    void *ck[2], *cv[2];
    for (int f = 0; f < 2; f++) {
        float *qd = up(g, q, nq * 4), *kdd = up(g, k, nk * 4), *vd = up(g, v, nk * 4), *od = poisoned(g, nq);
        const struct bk_qkv a = { .q = qd, .k = kdd, .v = vd, .b_q = bqd, .b_k = bkd, .b_v = bvd, .q_norm = qnd,
                                  .k_norm = knd, .eps = 1e-6f, .rope = rope ? &r : NULL, .pos = pd, .slots = sd,
                                  .T = T, .H = H, .Hkv = Hkv, .D = D };
        if (f == 0) {
            g->ops->qkv_prep(g, &kd[0], &a);
            bk_attention(g, od, qd, &kd[0], &bd, &p);
        } else g->ops->qkv_attention(g, od, &kd[1], &a, &bd, &p);
        got[f] = xmalloc(nq * 4), ck[f] = xmalloc(cbytes), cv[f] = xmalloc(cbytes);
        down(g, got[f], od, nq * 4), down(g, ck[f], kd[f].k, cbytes), down(g, cv[f], kd[f].v, cbytes);
        bk_free(g, qd), bk_free(g, kdd), bk_free(g, vd), bk_free(g, od);
    }
    /* the padding sequence's rows (its key is never stored) are left out */
    const size_t cmp = qc->pad_last ? (size_t)qs[S - 1] * H * D : nq;
    CHECK(memcmp(got[0], got[1], cmp * 4) == 0);
    CHECK(memcmp(ck[0], ck[1], cbytes) == 0);
    CHECK(memcmp(cv[0], cv[1], cbytes) == 0);
    const double tol = qc->dt == DT_BF16 ? 1e-2 : qc->dt == DT_F16 ? 3e-3 : 2e-5;
    CHECK_CLOSE(got[1], ref, NULL, cmp, tol, qc->dt == DT_F32 ? 1e-4 : 0, "qkv_attention H=%d Hkv=%d D=%d var=%d %s",
                H, Hkv, D, qc->var, dtype_name(qc->dt));
    for (size_t i = 0; i < cmp; i++) *worst = fmax(*worst, fabs((double)got[1][i] - ref[i]));
    void *dev[] = { bqd, bkd, bvd, qnd, knd, pd, sd, kd[0].k, kd[0].v, kd[1].k, kd[1].v,
                    (void *)bd.query_start, (void *)bd.seq_len, (void *)bd.block_table };
    for (size_t i = 0; i < ARRAY_LEN(dev); i++) bk_free(g, dev[i]);
    for (int f = 0; f < 2; f++) free(got[f]), free(ck[f]), free(cv[f]);
    free(q), free(k), free(v), free(bq), free(bkk), free(bv), free(qn), free(kn), free(qr), free(kr), free(vr);
    free(ref), free(bt), free(kh.k), free(kh.v);
}

TEST(qkv_attention_fused) {
    static const struct qa_case cases[] = {
        { 32, 8, 128, 0, 0, DT_BF16, 16, 1, { 4096 }, { 1 }, false },
        { 32, 8, 128, 0, 1, DT_BF16, 16, 4, { 600, 1, 65, 1000 }, { 1, 1, 2, 1 }, false },
        { 8, 2, 64, 0, 2, DT_F16, 8, 3, { 3000, 129, 2 }, { 1, 4, 2 }, false },
        { 32, 4, 128, 0, 0, DT_BF16, 32, 2, { 700, 130 }, { 3, 3 }, false }, /* G 8 x 3 rows: two chunks */
        { 4, 4, 128, 2, 1, DT_F16, 16, 2, { 500, 3 }, { 3, 2 }, false },     /* window 2 < 3 rows */
        { 16, 2, 64, 0, 0, DT_BF16, 16, 3, { 900, 1, 64 }, { 1, 1, 1 }, true },
        { 12, 12, 64, 0, 1, DT_BF16, 16, 1, { 20000 }, { 1 }, false },
        { 28, 4, 128, 0, 1, DT_BF16, 16, 2, { 300, 50 }, { 3, 2 }, false }, /* G 7: token 2's rows in chunks 0 and 1 */
        { 8, 2, 256, 0, 1, DT_BF16, 16, 2, { 1000, 3 }, { 1, 2 }, false },   /* D 256: the two ops */
        { 8, 2, 128, 0, 1, DT_F32, 16, 2, { 1000, 3 }, { 1, 2 }, false },    /* f32 KV: the two ops */
    };
    static const char *ctas[] = { NULL, "1", "16", NULL, NULL }, *dec[] = { NULL, NULL, NULL, "2", NULL };
    static const bool always[] = { true, true, true, true, false };
    const int n_fusable = (int)ARRAY_LEN(cases) - 2; /* all but D 256 and f32 KV */
    struct backend *c = cpu();
    for (size_t vi = 0; vi < ARRAY_LEN(ctas); vi++) {
        if (ctas[vi]) setenv("VLLMC_CUDA_DEC_CTAS", ctas[vi], 1);
        if (dec[vi]) setenv("VLLMC_CUDA_DEC", dec[vi], 1);
        if (always[vi]) setenv("VLLMC_CUDA_QKV_ATTN", "always", 1);
        struct backend *g = gpu();
        unsetenv("VLLMC_CUDA_DEC_CTAS"), unsetenv("VLLMC_CUDA_DEC"), unsetenv("VLLMC_CUDA_QKV_ATTN");
        REQUIRE(g->ops->qkv_attention != NULL);
        double worst = 0;
        for (size_t i = 0; i < ARRAY_LEN(cases); i++) check_qkv_attention(g, c, &cases[i], &worst);
        const long fused = backend_cuda_fused_attention_calls(g);
        if (dec[vi]) CHECK(fused == 0);                     /* variant 2: the two ops */
        else if (always[vi]) CHECK(fused == n_fusable);
        else CHECK(fused >= 1 && fused <= n_fusable);       /* the default: at least the long single sequence */
        printf("      variant %s, split target %s%s: %ld of %d calls fused, max |err| %.2e\n",
               dec[vi] ? dec[vi] : "3", ctas[vi] ? ctas[vi] : "2", always[vi] ? " (always)" : "", fused,
               (int)ARRAY_LEN(cases), worst);
        bk_destroy(g);
    }
    bk_destroy(c);
}

/* The tensor-core (FlashAttention-2-style) kernel that runs steps with 16 or
 * more query rows in a sequence, each tile shape (VLLMC_CUDA_ATTN fa0, fa1,
 * fa2): BF16/F16 KV, D 64/128/256, GQA 1/4/7/8/72 (72 > 64 rows: head
 * chunks), blocks of 8/16/32, chunked prefill (queries after a cached prefix),
 * sliding windows (1, narrower and wider than the context), softcaps, odd
 * lengths and decode rows in one batch.
 * Tolerance: q and P are rounded to the KV type before the tensor-core
 * products (f32 sums), so the output is off by about 2^-9 (bf16) or 2^-11
 * (f16) of max|v| (= 1 here): |err| <= 1e-2 (bf16) and 3e-3 (f16); the worst
 * seen is printed. */
TEST(attention_fa_prefill) {
    static const struct attn_case cases[] = {
        { 8, 8, 64, 0, 0, DT_BF16, 16, 1, { 200 }, { 200 } },
        { 32, 8, 128, 0, 0, DT_BF16, 16, 3, { 300, 1000, 77 }, { 300, 1, 77 } },
        { 16, 2, 128, 0, 0, DT_F16, 8, 4, { 517, 64, 2000, 33 }, { 129, 64, 1, 17 } },
        { 8, 1, 64, 100, 0, DT_BF16, 32, 3, { 700, 300, 1500 }, { 250, 1, 300 } },
        { 4, 4, 256, 0, 30.0f, DT_BF16, 16, 2, { 190, 600 }, { 190, 1 } },
        { 8, 2, 256, 64, 0, DT_F16, 32, 3, { 333, 900, 50 }, { 100, 1, 50 } },
        { 28, 4, 128, 0, 50.0f, DT_F16, 16, 2, { 301, 45 }, { 301, 20 } },
        { 72, 1, 64, 0, 0, DT_BF16, 8, 2, { 100, 40 }, { 60, 40 } },
        { 8, 4, 128, 4096, 0, DT_BF16, 16, 1, { 150 }, { 150 } },
        { 4, 2, 64, 1, 0, DT_F16, 8, 2, { 50, 9 }, { 50, 1 } },
    };
    static const char *variants[] = { "fa0", "fa1", "fa2" };
    struct backend *c = cpu();
    for (size_t v = 0; v < ARRAY_LEN(variants); v++) {
        setenv("VLLMC_CUDA_ATTN", variants[v], 1);
        struct backend *g = gpu();
        unsetenv("VLLMC_CUDA_ATTN");
        double worst[2] = { 0, 0 }; /* bf16, f16 */
        for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
            const bool bf = cases[i].dt == DT_BF16;
            double e = check_attention_tol(g, c, &cases[i], bf ? 1e-2 : 3e-3, 0);
            worst[!bf] = fmax(worst[!bf], e);
        }
        printf("      %s: max |err| %.2e (bf16 KV), %.2e (f16 KV)\n", variants[v], worst[0], worst[1]);
        bk_destroy(g);
    }
    bk_destroy(c);
}

/* sample_rows (device sampling) with the sampler's finish against sampler_sample
 * (sample_rows_check.h); the CPU backend's plain C version of the op runs here
 * without a GPU too. */
#include "sample_rows_check.h"

TEST(sample_rows_match_sampler) {
    struct backend *g = gpu();
    sr_check_all(g);
    bk_destroy(g);
}

TEST(sample_rows_cpu_version) {
    setenv("VLLMC_CPU_SAMPLE_ROWS", "1", 1);
    struct backend *c = cpu();
    sr_check_all(c);
    bk_destroy(c);
}

/* ---- affine-quantized weights ---------------------------------------------------- */

/* A random affine weight on the host (codes, scales and biases in one block)
 * and its device copy. */
struct qw {
    struct bk_weight h, d;
    void *mem;
};

static struct qw qw_make(struct backend *g, int bits, int gs, enum dtype sdt, int N, int K) {
    struct qw q = { 0 };
    const size_t G = (size_t)K / gs, cb = (size_t)N * K * bits / 8, sb = (size_t)N * G * dtype_size(sdt);
    q.mem = xmalloc(cb + 2 * sb);
    uint8_t *codes = q.mem;
    for (size_t i = 0; i < cb; i++) codes[i] = (uint8_t)(test_rng_next_(&rng) >> 24);
    void *sc = rand_typed(sdt, (size_t)N * G), *bi = rand_typed(sdt, (size_t)N * G);
    memcpy(codes + cb, sc, sb);
    memcpy(codes + cb + sb, bi, sb);
    free(sc), free(bi);
    q.h = (struct bk_weight){ .dtype = sdt, .rows = N, .cols = K, .data = codes, .fmt = BK_W_AFFINE, .bits = bits,
                              .group_size = gs, .scales = codes + cb, .biases = codes + cb + sb };
    q.d = q.h;
    q.d.data = up(g, codes, cb);
    q.d.scales = up(g, codes + cb, sb);
    q.d.biases = up(g, codes + cb + sb, sb);
    return q;
}

static void qw_free(struct backend *g, struct qw *q) {
    bk_free(g, (void *)q->d.data), bk_free(g, (void *)q->d.scales), bk_free(g, (void *)q->d.biases);
    free(q->mem);
}

/* The 4- and 8-bit GEMV rounds activations to two int8 parts per block of
 * 32 (unless VLLMC_CUDA_QGEMV=f32): at most max|x| / 65024 per element,
 * ~6e-5 of sum |x w| here if every error had the same sign; they do not,
 * and the f32 tolerance holds. The worst seen is printed. */
static double qgemv_worst; /* error / sum |x w| */

/* y = x · W^T on the GPU against the portable CPU path (dequantize rows, f32
 * dot), error relative to sum_k |x w| as for dense weights; x_off shifts x
 * off its 16-byte alignment (the GEMV's scalar activation loads). */
static void check_affine(struct backend *g, struct backend *c, int bits, int gs, enum dtype sdt, int N, int K,
                         const int *Ts, int nT, double tol, int x_off) {
    const char *qv = getenv("VLLMC_CUDA_QGEMV");
    const bool int8_gemv = (bits == 4 || bits == 8) && !(qv && !strcmp(qv, "f32"));
    struct qw q = qw_make(g, bits, gs, sdt, N, K);
    /* |W| dequantized by the CPU (its embedding lookup of every row), as a dense f32 weight */
    int32_t *all = xmalloc((size_t)N * 4);
    for (int n = 0; n < N; n++) all[n] = n;
    float *wabs = xmalloc((size_t)N * K * 4);
    bk_embed(c, wabs, &q.h, all, N, 1.0f);
    for (size_t i = 0; i < (size_t)N * K; i++) wabs[i] = fabsf(wabs[i]);
    struct bk_weight wa = { .dtype = DT_F32, .rows = N, .cols = K, .data = wabs };
    for (int ti = 0; ti < nT; ti++) {
        const int T = Ts[ti];
        float *x = randf((size_t)T * K, 2.0f), *ref = xmalloc((size_t)T * N * 4), *got = xmalloc((size_t)T * N * 4);
        float *mag = xmalloc((size_t)T * N * 4), *xa = xmalloc((size_t)T * K * 4);
        bk_matmul(c, ref, x, &q.h, T);
        for (size_t i = 0; i < (size_t)T * K; i++) xa[i] = fabsf(x[i]);
        bk_matmul(c, mag, xa, &wa, T);
        float *xbuf = bk_alloc(g, ((size_t)T * K + (size_t)x_off) * 4), *xd = xbuf + x_off;
        REQUIRE(xbuf);
        char err[256];
        REQUIRE(bk_upload(g, xd, x, (size_t)T * K * 4, err, sizeof err) == 0);
        float *yd = poisoned(g, (size_t)T * N);
        bk_matmul(g, yd, xd, &q.d, T);
        down(g, got, yd, (size_t)T * N * 4);
        if (int8_gemv && T <= 32 /* the GEMV (CK_GEMV_MAX_T, in runs up to 32) */)
            qgemv_worst = fmax(qgemv_worst, worst_ratio(got, ref, mag, (size_t)T * N, 0, 1));
        CHECK_CLOSE(got, ref, mag, (size_t)T * N, 1e-6, tol, "affine matmul %d-bit g%d %s N=%d K=%d T=%d x+%d", bits,
                    gs, dtype_name(sdt), N, K, T, x_off);
        bk_free(g, xbuf), bk_free(g, yd);
        free(x), free(ref), free(got), free(mag), free(xa);
    }
    free(all), free(wabs);
    qw_free(g, &q);
}

/* every width and group, T = 1, 3, 8 (GEMV) and 37 (dequantized tiles +
 * cuBLASLt); BF16 and F16 scales (F32 too for 4 and 8 bits: AWQ repacks
 * into F32), odd N */
TEST(affine_matmul_every_bits_and_group) {
    struct backend *g = gpu(), *c = cpu();
    static const int Ts[] = { 1, 3, 8, 37 };
    const int bits[] = { 2, 3, 4, 5, 6, 8 }, gss[] = { 32, 64, 128 };
    for (size_t bi = 0; bi < ARRAY_LEN(bits); bi++)
        for (size_t gi = 0; gi < ARRAY_LEN(gss); gi++) {
            const enum dtype sdts[] = { DT_BF16, DT_F16, DT_F32 };
            const size_t nd = bits[bi] == 4 || bits[bi] == 8 ? 3 : 2;
            for (size_t di = 0; di < nd; di++)
                check_affine(g, c, bits[bi], gss[gi], sdts[di], 67, 384, Ts, (int)ARRAY_LEN(Ts), 2e-5, 0);
        }
    bk_destroy(g), bk_destroy(c);
}

/* model-like widths: many units per row set, T from 1 to 32 (the GEMV) and prefill,
 * tiles of rows (the head-sized case spans several), unaligned activations */
TEST(affine_matmul_real_widths) {
    struct backend *g = gpu(), *c = cpu();
    /* 9-32 tokens: the tensor-core kernel (ck_qmma), 37: dequantized tiles */
    static const int Ts[] = { 1, 2, 4, 5, 6, 7, 8, 16, 27, 32, 37 }, T1[] = { 1, 3, 9, 37 };
    check_affine(g, c, 4, 64, DT_BF16, 1001, 4096, Ts, (int)ARRAY_LEN(Ts), 2e-5, 0);
    check_affine(g, c, 8, 64, DT_BF16, 257, 2048, Ts, (int)ARRAY_LEN(Ts), 2e-5, 0);
    check_affine(g, c, 4, 128, DT_F32, 129, 14336, T1, (int)ARRAY_LEN(T1), 2e-5, 0);
    check_affine(g, c, 3, 64, DT_F16, 99, 2048, Ts, (int)ARRAY_LEN(Ts), 2e-5, 1);
    check_affine(g, c, 4, 64, DT_BF16, 8321, 8192, T1, (int)ARRAY_LEN(T1), 2e-5, 1); /* 4 tiles of 2048 rows + 129 */
    check_affine(g, c, 4, 64, DT_BF16, 20011, 512, T1, (int)ARRAY_LEN(T1), 2e-5, 0); /* one token: 2 rows per warp */
    printf("      GEMV with int8 activation parts: worst error %.2e of sum |x w|\n", qgemv_worst);
    bk_destroy(g), bk_destroy(c);
}


/* The tensor-core kernel (ck_qmma: int8 mma on the GEMV's int8 activation
 * parts) that takes 4/8-bit matmuls of 9-32 tokens, here for every T from 1
 * (VLLMC_CUDA_QMMA_T=1,32): every group size and scale dtype, row counts
 * that are not a multiple of its 16- or 32-row tiles (32 from 8192 rows),
 * K ranges that leave some of its 8 warps without blocks, unaligned
 * activations; then the default range (9-32 in the split mode test_cuda
 * pins; 9-16 with bf16 activations). */
TEST(affine_matmul_tensor_cores) {
    struct backend *c = cpu();
    static const int Ts[] = { 1, 2, 7, 8, 9, 15, 16, 17, 24, 31, 32 }, T2[] = { 1, 9, 32 };
    setenv("VLLMC_CUDA_QMMA_T", "1,32", 1);
    struct backend *g = gpu();
    unsetenv("VLLMC_CUDA_QMMA_T");
    const int bits[] = { 4, 8 }, gss[] = { 32, 64, 128 };
    const enum dtype sdts[] = { DT_BF16, DT_F16, DT_F32 };
    for (size_t bi = 0; bi < ARRAY_LEN(bits); bi++)
        for (size_t gi = 0; gi < ARRAY_LEN(gss); gi++)
            for (size_t di = 0; di < ARRAY_LEN(sdts); di++)
                check_affine(g, c, bits[bi], gss[gi], sdts[di], 67, 384, T2, (int)ARRAY_LEN(T2), 2e-5, 0);
    check_affine(g, c, 4, 64, DT_BF16, 1001, 4096, Ts, (int)ARRAY_LEN(Ts), 2e-5, 0);
    check_affine(g, c, 8, 64, DT_BF16, 257, 2048, Ts, (int)ARRAY_LEN(Ts), 2e-5, 1);
    check_affine(g, c, 4, 128, DT_F32, 8200, 1024, T2, (int)ARRAY_LEN(T2), 2e-5, 0); /* 32-row tiles */
    check_affine(g, c, 4, 64, DT_BF16, 5, 14336, T2, (int)ARRAY_LEN(T2), 2e-5, 1);
    bk_destroy(g);
    g = gpu();
    check_affine(g, c, 4, 64, DT_BF16, 300, 4096, T2, (int)ARRAY_LEN(T2), 2e-5, 0);
    printf("      int8 activation parts (GEMV and tensor cores): worst error %.2e of sum |x w|\n", qgemv_worst);
    bk_destroy(g), bk_destroy(c);
}

/* matmul_many (q/k/v, gate/up in one launch) and glu_matmul (the GLU fed
 * straight into the down projection's GEMV) against the CPU's plain ops:
 * the one-launch path (4/8-bit, one group and scale dtype), its fallbacks
 * (a dense weight among them, prefill-sized T), every activation, GLU rows
 * with an odd stride (scalar loads) */
TEST(affine_matmul_many_and_glu) {
    struct backend *g = gpu(), *c = cpu();
    REQUIRE(g->ops->matmul_many && g->ops->glu_matmul);
    static const int Ts[] = { 1, 2, 5, 8, 37 };
    char err[256];
    struct mcase {
        int bits, gs, n, K;
        enum dtype sdt;
        int N[3];
        bool dense_last;
    } cases[] = { { 4, 64, 3, 1024, DT_BF16, { 515, 131, 131 }, false },
                  { 8, 32, 2, 768, DT_F16, { 300, 301, 0 }, false },
                  { 4, 128, 2, 512, DT_F32, { 64, 65, 0 }, true } };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        const struct mcase *mc = &cases[ci];
        struct qw q[3];
        struct bk_weight dense_h = { 0 }, dense_d = { 0 };
        const struct bk_weight *wh[3], *wd[3];
        for (int i = 0; i < mc->n; i++) {
            if (mc->dense_last && i == mc->n - 1) {
                dense_h = (struct bk_weight){ .dtype = DT_BF16, .rows = mc->N[i], .cols = mc->K,
                                              .data = rand_typed(DT_BF16, (size_t)mc->N[i] * mc->K) };
                dense_d = dense_h;
                dense_d.data = up(g, dense_h.data, (size_t)mc->N[i] * mc->K * 2);
                wh[i] = &dense_h, wd[i] = &dense_d;
            } else {
                q[i] = qw_make(g, mc->bits, mc->gs, mc->sdt, mc->N[i], mc->K);
                wh[i] = &q[i].h, wd[i] = &q[i].d;
            }
        }
        for (size_t ti = 0; ti < ARRAY_LEN(Ts); ti++) {
            const int T = Ts[ti], K = mc->K;
            float *x = randf((size_t)T * K, 2.0f), *xd = up(g, x, (size_t)T * K * 4);
            float *yd[3];
            for (int i = 0; i < mc->n; i++) yd[i] = poisoned(g, (size_t)T * mc->N[i]);
            g->ops->matmul_many(g, mc->n, yd, xd, wd, T);
            for (int i = 0; i < mc->n; i++) {
                const int N = mc->N[i];
                float *ref = xmalloc((size_t)T * N * 4), *got = xmalloc((size_t)T * N * 4);
                bk_matmul(c, ref, x, wh[i], T);
                float *mag = weight_mag(c, wh[i], x, T);
                down(g, got, yd[i], (size_t)T * N * 4);
                CHECK_CLOSE(got, ref, mag, (size_t)T * N, 1e-6, 2e-5,
                            "matmul_many case %zu weight %d T=%d%s", ci, i, T, "");
                free(ref), free(got), free(mag);
                bk_free(g, yd[i]);
            }
            bk_free(g, xd), free(x);
        }
        for (int i = 0; i < mc->n; i++) {
            if (wh[i] == &dense_h) bk_free(g, (void *)dense_d.data), free((void *)dense_h.data);
            else qw_free(g, &q[i]);
        }
    }
    /* glu_matmul: F = K of the down weight; rows of gate/up with stride ld */
    const enum bk_act acts[] = { BK_ACT_SILU, BK_ACT_GELU_TANH, BK_ACT_GELU, BK_ACT_RELU };
    const int gb[] = { 4, 8, 4, 8 }, ldp[] = { 8, 3, 0, 1 };
    for (size_t ai = 0; ai < ARRAY_LEN(acts); ai++) {
        const int F = ai & 1 ? 768 : 1024, N = 259, ld = F + ldp[ai];
        struct qw q = qw_make(g, gb[ai], 64, DT_BF16, N, F);
        for (size_t ti = 0; ti < ARRAY_LEN(Ts); ti++) {
            const int T = Ts[ti];
            float *gt = randf((size_t)T * ld, 6.0f), *u = randf((size_t)T * ld, 2.0f);
            float *a = xmalloc((size_t)T * F * 4), *ref = xmalloc((size_t)T * N * 4), *got = xmalloc((size_t)T * N * 4);
            bk_glu(c, a, gt, u, T, F, ld, acts[ai]);
            bk_matmul(c, ref, a, &q.h, T);
            float *mag = weight_mag(c, &q.h, a, T);
            float *gd = up(g, gt, (size_t)T * ld * 4), *ud = up(g, u, (size_t)T * ld * 4);
            float *ad = poisoned(g, (size_t)T * F), *yd = poisoned(g, (size_t)T * N);
            g->ops->glu_matmul(g, yd, ad, gd, ud, T, F, ld, acts[ai], &q.d);
            REQUIRE(bk_download(g, got, yd, (size_t)T * N * 4, err, sizeof err) == 0);
            CHECK_CLOSE(got, ref, mag, (size_t)T * N, 1e-6, 2e-5, "glu_matmul act=%d %d-bit ld=%d T=%d", (int)acts[ai],
                        gb[ai], ld, T);
            bk_free(g, gd), bk_free(g, ud), bk_free(g, ad), bk_free(g, yd);
            free(gt), free(u), free(a), free(ref), free(got), free(mag);
        }
        qw_free(g, &q);
    }
    bk_destroy(g), bk_destroy(c);
}

/* glu_matmul over a dense 16-bit weight beyond the GEMV (prefill): the GLU
 * rounded straight into the GEMM's 16-bit activations (ck_glu_split) must
 * give the outputs of glu then matmul on the same backend bit for bit, one
 * GEMM per part (1 in the bf16 mode, 2 with split), and the CPU's within the
 * mode's tolerance; rows 16-byte aligned (4 values a step) and not (ld odd).
 * A 4-bit weight on dequantized tiles too (bit for bit). */
TEST(dense_glu_matmul_prefill) {
    struct backend *c = cpu();
    const char *modes[] = { "split", "bf16" };
    for (int mi = 0; mi < 2; mi++) {
        g_matmul = modes[mi];
        struct backend *g = gpu();
        g_matmul = "split";
        REQUIRE(g->ops->glu_matmul);
        const struct { enum dtype dt; int F, ldp, T; enum bk_act act; } cases[] = {
            { DT_BF16, 1024, 0, 37, BK_ACT_SILU }, { DT_F16, 768, 3, 69, BK_ACT_GELU_TANH },
            { DT_BF16, 1536, 8, 9, BK_ACT_GELU } };
        for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
            const int F = cases[ci].F, T = cases[ci].T, ld = F + cases[ci].ldp, N = 259;
            struct bk_weight w = { .dtype = cases[ci].dt, .rows = N, .cols = F }, wd;
            w.data = rand_typed(w.dtype, (size_t)N * F);
            wd = w;
            wd.data = up(g, w.data, (size_t)N * F * 2);
            float *gt = randf((size_t)T * ld, 6.0f), *u = randf((size_t)T * ld, 2.0f), *a = xmalloc((size_t)T * F * 4);
            float *ref = xmalloc((size_t)T * N * 4), *mag = xmalloc((size_t)T * N * 4);
            bk_glu(c, a, gt, u, T, F, ld, cases[ci].act);
            matmul_ref(c, &w, a, T, ref, mag);
            float *gd = up(g, gt, (size_t)T * ld * 4), *ud = up(g, u, (size_t)T * ld * 4);
            float *ad = poisoned(g, (size_t)T * F), *ad2 = poisoned(g, (size_t)T * F);
            float *y1 = poisoned(g, (size_t)T * N), *y2 = poisoned(g, (size_t)T * N);
            struct backend_cuda_counts k0, k1;
            backend_cuda_counts(g, &k0);
            g->ops->glu_matmul(g, y1, ad, gd, ud, T, F, ld, cases[ci].act, &wd);
            backend_cuda_counts(g, &k1);
            CHECK(k1.lt_gemm - k0.lt_gemm == (mi == 0 ? 2 : 1));
            bk_glu(g, ad2, gd, ud, T, F, ld, cases[ci].act);
            bk_matmul(g, y2, ad2, &wd, T);
            float *h1 = xmalloc((size_t)T * N * 4), *h2 = xmalloc((size_t)T * N * 4);
            down(g, h1, y1, (size_t)T * N * 4), down(g, h2, y2, (size_t)T * N * 4);
            CHECK(memcmp(h1, h2, (size_t)T * N * 4) == 0);
            CHECK_CLOSE(h1, ref, mag, (size_t)T * N, 1e-6, mi == 0 ? 2e-5 : 4e-3, "glu_matmul %s %s F=%d ld=%d T=%d",
                        modes[mi], dtype_name(w.dtype), F, ld, T);
            bk_free(g, gd), bk_free(g, ud), bk_free(g, ad), bk_free(g, ad2), bk_free(g, y1), bk_free(g, y2);
            bk_free(g, (void *)wd.data);
            free((void *)w.data), free(gt), free(u), free(a), free(ref), free(mag), free(h1), free(h2);
        }
        /* a 4-bit weight on dequantized tiles (beyond the GEMV and ck_qmma):
         * the same rounding into bf16, bit for bit */
        {
            const int F = 1024, T = 37, N = 259;
            struct qw q = qw_make(g, 4, 64, DT_BF16, N, F);
            float *gt = randf((size_t)T * F, 6.0f), *u = randf((size_t)T * F, 2.0f);
            float *gd = up(g, gt, (size_t)T * F * 4), *ud = up(g, u, (size_t)T * F * 4);
            float *ad = poisoned(g, (size_t)T * F), *ad2 = poisoned(g, (size_t)T * F);
            float *y1 = poisoned(g, (size_t)T * N), *y2 = poisoned(g, (size_t)T * N);
            g->ops->glu_matmul(g, y1, ad, gd, ud, T, F, F, BK_ACT_SILU, &q.d);
            bk_glu(g, ad2, gd, ud, T, F, F, BK_ACT_SILU);
            bk_matmul(g, y2, ad2, &q.d, T);
            float *h1 = xmalloc((size_t)T * N * 4), *h2 = xmalloc((size_t)T * N * 4);
            down(g, h1, y1, (size_t)T * N * 4), down(g, h2, y2, (size_t)T * N * 4);
            CHECK(memcmp(h1, h2, (size_t)T * N * 4) == 0);
            bk_free(g, gd), bk_free(g, ud), bk_free(g, ad), bk_free(g, ad2), bk_free(g, y1), bk_free(g, y2);
            free(gt), free(u), free(h1), free(h2);
            qw_free(g, &q);
        }
        bk_destroy(g);
    }
    bk_destroy(c);
}

/* add_rmsnorm_matmul over dense 16-bit weights beyond the GEMV (prefill):
 * h rounded straight into the GEMMs' activations (ck_add_rmsnorm_split).
 * In both modes x and every y equal add_rmsnorm then matmul_many on the same
 * backend bit for bit, with one GEMM per weight and part; in the split mode
 * also the CPU's (check_add_rmsnorm: h apart or on o, with and without a
 * norm weight). */
TEST(dense_add_rmsnorm_matmul_prefill) {
    struct backend *c = cpu();
    const char *modes[] = { "split", "bf16" };
    const struct { enum dtype dt; int n, nw, N[3], R; } cases[] = {
        { DT_BF16, 1024, 3, { 515, 131, 131 }, 37 }, { DT_F16, 4096, 2, { 300, 301, 0 }, 69 },
        { DT_BF16, 20480, 1, { 33, 0, 0 }, 9 } };
    for (int mi = 0; mi < 2; mi++) {
        g_matmul = modes[mi];
        struct backend *g = gpu();
        g_matmul = "split";
        REQUIRE(g->ops->add_rmsnorm_matmul && g->ops->add_rmsnorm && g->ops->matmul_many);
        for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
            const int n = cases[ci].n, nw = cases[ci].nw, R = cases[ci].R;
            const size_t len = (size_t)R * n;
            struct bk_weight wh[3], wdv[3];
            const struct bk_weight *whp[3], *wdp[3];
            for (int i = 0; i < nw; i++) {
                wh[i] = (struct bk_weight){ .dtype = cases[ci].dt, .rows = cases[ci].N[i], .cols = n };
                wh[i].data = rand_typed(cases[ci].dt, (size_t)cases[ci].N[i] * n);
                wdv[i] = wh[i];
                wdv[i].data = up(g, wh[i].data, (size_t)cases[ci].N[i] * n * 2);
                whp[i] = &wh[i], wdp[i] = &wdv[i];
            }
            if (mi == 0)
                for (int mode = 0; mode < 3; mode++) check_add_rmsnorm(g, c, R, n, mode, nw, whp, wdp, cases[ci].N);
            float *x = randf(len, 3.0f), *o = randf(len, 2.0f), *w = randf((size_t)n, 2.0f);
            float *x1 = up(g, x, len * 4), *x2 = up(g, x, len * 4), *od = up(g, o, len * 4), *wn = up(g, w, (size_t)n * 4);
            float *h2 = poisoned(g, len), *y1[3], *y2[3];
            for (int i = 0; i < nw; i++)
                y1[i] = poisoned(g, (size_t)R * cases[ci].N[i]), y2[i] = poisoned(g, (size_t)R * cases[ci].N[i]);
            struct backend_cuda_counts k0, k1;
            backend_cuda_counts(g, &k0);
            g->ops->add_rmsnorm_matmul(g, x1, od, 0.7f, od, wn, R, n, 1e-6f, nw, y1, wdp); /* h on o, as the model */
            backend_cuda_counts(g, &k1);
            CHECK(k1.lt_gemm - k0.lt_gemm == (long)nw * (mi == 0 ? 2 : 1));
            g->ops->add_rmsnorm(g, x2, od, 0.7f, h2, wn, R, n, 1e-6f);
            g->ops->matmul_many(g, nw, y2, h2, wdp, R);
            float *a = xmalloc(len * 4), *b = xmalloc(len * 4);
            down(g, a, x1, len * 4), down(g, b, x2, len * 4);
            CHECK(memcmp(a, b, len * 4) == 0);
            for (int i = 0; i < nw; i++) {
                const size_t m = (size_t)R * cases[ci].N[i];
                down(g, a, y1[i], m * 4), down(g, b, y2[i], m * 4);
                if (memcmp(a, b, m * 4)) {
                    fprintf(stderr, "  %s %s n=%d R=%d: y%d differs from add_rmsnorm + matmul_many\n", modes[mi],
                            dtype_name(cases[ci].dt), n, R, i);
                    test_failed_here_ = 1;
                }
                bk_free(g, y1[i]), bk_free(g, y2[i]);
            }
            bk_free(g, x1), bk_free(g, x2), bk_free(g, od), bk_free(g, wn), bk_free(g, h2);
            free(x), free(o), free(w), free(a), free(b);
            for (int i = 0; i < nw; i++) bk_free(g, (void *)wdv[i].data), free((void *)wh[i].data);
        }
        bk_destroy(g);
    }
    bk_destroy(c);
}

/* add_rmsnorm_matmul: the norm kernel that rounds h for the GEMV that
 * follows (4/8-bit weights, decode sizes) and its fallback (37 rows): x,
 * h and every y against the CPU's add_scaled, rmsnorm and matmuls; h apart
 * or on o (as the model calls it), with and without a norm weight */
TEST(add_rmsnorm_matmul_fused) {
    struct backend *g = gpu(), *c = cpu();
    REQUIRE(g->ops->add_rmsnorm_matmul);
    struct ncase {
        int bits, gs, n, nw, N[3];
        enum dtype sdt;
    } cases[] = { { 4, 64, 1024, 3, { 515, 131, 131 }, DT_BF16 }, { 8, 128, 768, 2, { 300, 301, 0 }, DT_F16 },
                  { 4, 32, 4096, 2, { 97, 64, 0 }, DT_BF16 }, { 8, 64, 14336, 1, { 70, 0, 0 }, DT_BF16 },
                  { 4, 128, 20480, 1, { 33, 0, 0 }, DT_F16 } }; /* 1, 2 and 4 runs of 8 per thread */
    static const int Rs[] = { 1, 3, 8, 37 };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        const struct ncase *nc = &cases[ci];
        const int n = nc->n;
        struct qw q[3];
        const struct bk_weight *wh[3], *wd[3];
        for (int i = 0; i < nc->nw; i++) {
            q[i] = qw_make(g, nc->bits, nc->gs, nc->sdt, nc->N[i], n);
            wh[i] = &q[i].h, wd[i] = &q[i].d;
        }
        for (size_t ri = 0; ri < ARRAY_LEN(Rs); ri++)
            for (int mode = 0; mode < 3; mode++) check_add_rmsnorm(g, c, Rs[ri], n, mode, nc->nw, wh, wd, nc->N);
        for (int i = 0; i < nc->nw; i++) qw_free(g, &q[i]);
    }
    bk_destroy(g), bk_destroy(c);
}

/* The one-token quantized ops of a layer as the model queues them (o,
 * gate/up after the norm, the GLU and down, the next layer's q/k/v after
 * the norm; h on o), three layers with two sets of weights, 12 ops: every
 * output against the CPU's plain ops (decode_layers). decode_chain runs
 * them in the decode chain (chain.cu), decode_layers_graph op by op and as
 * a CUDA graph replayed twice. */
static double chain_rel(const float *got, const float *ref, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - ref[i]);
        e = isnan(d) ? INFINITY : fmax(e, d);
    }
    return e / (m > 0 ? m : 1);
}

struct dcase {
    int bits, gs, d, F, Hq, Hkv;
    enum dtype sdt;
    enum bk_act act;
};
static const struct dcase dcases[] = { { 4, 64, 512, 1536, 512, 128, DT_BF16, BK_ACT_SILU },
                                       { 8, 32, 768, 2048, 768, 256, DT_F16, BK_ACT_GELU_TANH },
                                       { 4, 128, 1024, 4352, 1024, 160, DT_F32, BK_ACT_SILU },
                                       { 4, 32, 2048, 5632, 2048, 256, DT_BF16, BK_ACT_SILU },
                                       { 4, 64, 4096, 14336, 4096, 1024, DT_BF16, BK_ACT_SILU } }; /* the 8B's */

/* the 12 ops on g; with graphs, then recorded and replayed twice from the
 * same inputs (each replay checked) */
static void decode_layers(struct backend *g, struct backend *c, const struct dcase *cc, size_t ci, bool graphs) {
    const int d = cc->d, F = cc->F;
    enum { WO, WG, WU, WD, WQ, WK, WV, NWT };
    const int rows[NWT] = { d, F, F, d, cc->Hq, cc->Hkv, cc->Hkv }, cols[NWT] = { cc->Hq, d, d, F, d, d, d };
    struct qw q[2][NWT];
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < NWT; i++) q[l][i] = qw_make(g, cc->bits, cc->gs, cc->sdt, rows[i], cols[i]);
    float *nw[2][2];
    for (int l = 0; l < 2; l++) nw[l][0] = randf((size_t)d, 1.0f), nw[l][1] = randf((size_t)d, 1.0f);
    float *att = randf((size_t)cc->Hq, 1.0f), *x = randf((size_t)d, 4.0f);
    /* the CPU, op by op */
    float *xr = xmalloc((size_t)d * 4), *hr = xmalloc((size_t)d * 4), *gr = xmalloc((size_t)F * 4);
    float *ur = xmalloc((size_t)F * 4), *ar = xmalloc((size_t)F * 4), *qr = xmalloc((size_t)cc->Hq * 4);
    float *kr = xmalloc((size_t)cc->Hkv * 4), *vr = xmalloc((size_t)cc->Hkv * 4), *attr = xmalloc((size_t)cc->Hq * 4);
    memcpy(xr, x, (size_t)d * 4), memcpy(attr, att, (size_t)cc->Hq * 4);
    for (int li = 0; li < 3; li++) {
        const int l = li % 2;
        bk_matmul(c, hr, attr, &q[l][WO].h, 1);
        bk_add_scaled(c, xr, hr, 0.5f, (size_t)d);
        bk_rmsnorm(c, hr, xr, nw[l][0], 1, d, 1e-5f);
        bk_matmul(c, gr, hr, &q[l][WG].h, 1);
        bk_matmul(c, ur, hr, &q[l][WU].h, 1);
        bk_glu(c, ar, gr, ur, 1, F, F, cc->act);
        bk_matmul(c, hr, ar, &q[l][WD].h, 1);
        bk_add_scaled(c, xr, hr, 0.5f, (size_t)d);
        bk_rmsnorm(c, hr, xr, nw[l][1], 1, d, 1e-5f);
        bk_matmul(c, qr, hr, &q[l][WQ].h, 1);
        bk_matmul(c, kr, hr, &q[l][WK].h, 1);
        bk_matmul(c, vr, hr, &q[l][WV].h, 1);
        memcpy(attr, qr, (size_t)cc->Hq * 4); /* the next layer's attention output: q, for the test */
    }
    /* the GPU: the model's op sequence */
    float *xd = up(g, x, (size_t)d * 4), *hd = poisoned(g, (size_t)d), *gd = poisoned(g, (size_t)F);
    float *ud = poisoned(g, (size_t)F), *ad = poisoned(g, (size_t)F), *qd = poisoned(g, (size_t)cc->Hq);
    float *kd = poisoned(g, (size_t)cc->Hkv), *vd = poisoned(g, (size_t)cc->Hkv);
    float *attd = up(g, att, (size_t)cc->Hq * 4), *nwd[2][2];
    for (int l = 0; l < 2; l++) nwd[l][0] = up(g, nw[l][0], (size_t)d * 4), nwd[l][1] = up(g, nw[l][1], (size_t)d * 4);
    const long chain0 = backend_cuda_chain_ops(g);
    struct backend_cuda_counts k0, k1;
    backend_cuda_counts(g, &k0);
    float *got = xmalloc((size_t)F * 4);
    void *graph = NULL;
    for (int pass = 0; pass < (graphs ? 3 : 1); pass++) {
        if (pass) { /* the same inputs again, for a replay */
            char err[256];
            CHECK(bk_upload(g, xd, x, (size_t)d * 4, err, sizeof err) == 0);
            CHECK(bk_upload(g, attd, att, (size_t)cc->Hq * 4, err, sizeof err) == 0);
        }
        if (pass == 1) CHECK(g->ops->graph_begin(g) == 0);
        if (pass <= 1)
            for (int li = 0; li < 3; li++) {
                const int l = li % 2;
                const struct bk_weight *gu[2] = { &q[l][WG].d, &q[l][WU].d },
                                       *qkv[3] = { &q[l][WQ].d, &q[l][WK].d, &q[l][WV].d };
                float *const guy[2] = { gd, ud }, *const qkvy[3] = { qd, kd, vd };
                bk_matmul(g, hd, li ? qd : attd, &q[l][WO].d, 1);
                g->ops->add_rmsnorm_matmul(g, xd, hd, 0.5f, hd, nwd[l][0], 1, d, 1e-5f, 2, guy, gu);
                g->ops->glu_matmul(g, hd, ad, gd, ud, 1, F, F, cc->act, &q[l][WD].d);
                g->ops->add_rmsnorm_matmul(g, xd, hd, 0.5f, hd, nwd[l][1], 1, d, 1e-5f, 3, qkvy, qkv);
            }
        if (pass == 1) {
            graph = g->ops->graph_end(g);
            CHECK(graph != NULL);
        }
        if (pass && graph) CHECK(g->ops->graph_launch(g, graph) == 0);
        const struct { const float *dev, *ref; int n; const char *what; } outs[] = {
            { xd, xr, d, "x" }, { gd, gr, F, "gate" }, { ud, ur, F, "up" },
            { qd, qr, cc->Hq, "q" }, { kd, kr, cc->Hkv, "k" }, { vd, vr, cc->Hkv, "v" } };
        for (size_t oi = 0; oi < ARRAY_LEN(outs); oi++) {
            down(g, got, outs[oi].dev, (size_t)outs[oi].n * 4);
            const double e = chain_rel(got, outs[oi].ref, (size_t)outs[oi].n);
            if (!(e <= 2e-4)) {
                fprintf(stderr, "  case %zu (%d-bit g%d %s)%s: %s off by %.3g of its largest value\n", ci, cc->bits,
                        cc->gs, dtype_name(cc->sdt), pass ? ", graph replay" : "", outs[oi].what, e);
                test_failed_here_ = 1;
            }
        }
        if (pass == 0) { /* what ran where, before any replay */
            const long ran = backend_cuda_chain_ops(g) - chain0;
            backend_cuda_counts(g, &k1);
            const long bulk = k1.qgemv_bulk - k0.qgemv_bulk;
            fprintf(stderr, "  case %zu: %ld of 12 ops in the chain, %ld bulk launches\n", ci, chain0 < 0 ? -1 : ran,
                    bulk);
            if (chain0 >= 0) CHECK(ran == 12); /* the chain where it can run (it is on) */
            else if (backend_cuda_qbulk_pad(g) > 0) CHECK(bulk == (cc->bits == 4 ? 12 : 0)); /* sm_90: every 4-bit op */
        }
    }
    if (graph) g->ops->graph_free(g, graph);
    bk_free(g, xd), bk_free(g, hd), bk_free(g, gd), bk_free(g, ud), bk_free(g, ad), bk_free(g, qd);
    bk_free(g, kd), bk_free(g, vd), bk_free(g, attd);
    for (int l = 0; l < 2; l++) {
        bk_free(g, nwd[l][0]), bk_free(g, nwd[l][1]), free(nw[l][0]), free(nw[l][1]);
        for (int i = 0; i < NWT; i++) qw_free(g, &q[l][i]);
    }
    free(att), free(x), free(xr), free(hr), free(gr), free(ur), free(ar), free(qr), free(kr), free(vr), free(attr);
    free(got);
}

TEST(decode_chain) {
    const char *was = getenv("VLLMC_CUDA_CHAIN");
    if (!was) setenv("VLLMC_CUDA_CHAIN", "1", 1); /* opt-in (cuda.c); VLLMC_CUDA_CHAIN=0 tests the ops without it */
    static char err[512];
    struct backend *g;
    const int rc = backend_cuda_create_mode(&g, 0, 2, g_matmul, err, sizeof err);
    if (!was) unsetenv("VLLMC_CUDA_CHAIN"); /* before any skip: the other tests create their backends without it */
    if (rc) SKIP(err);
    struct backend *c = cpu();
    const bool small = getenv("VLLMC_TEST_CHAIN_SMALL") != NULL; /* under compute-sanitizer: not the 8B widths */
    for (size_t ci = 0; ci < ARRAY_LEN(dcases) - (small ? 1 : 0); ci++)
        decode_layers(g, c, &dcases[ci], ci, false);
    bk_destroy(g), bk_destroy(c);
}

/* The same ops on the test's usual backend (no chain): on sm_90 every
 * 4-bit op one bulk GEMV launch, none at 8 bits; outputs as above, also from
 * a recorded graph replayed twice. */
TEST(decode_layers_graph) {
    struct backend *g = gpu(), *c = cpu();
    REQUIRE(g->ops->graph_begin);
    const bool small = getenv("VLLMC_TEST_CHAIN_SMALL") != NULL;
    for (size_t ci = 0; ci < ARRAY_LEN(dcases) - (small ? 1 : 0); ci++) decode_layers(g, c, &dcases[ci], ci, true);
    bk_destroy(g), bk_destroy(c);
}

static float typed_f32(enum dtype dt, const void *p, size_t i) {
    if (dt == DT_F32) return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    return dt == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

/* VLLMC_CUDA_QGEMV=q8: the GEMV of 1-2 tokens with only the high int8 part
 * of each activation (x rounded to max |x| of its block of 32 / 127 steps),
 * against the CPU's f32 result within what that rounding can move it:
 * sum over k of |s q_k| (the dequantized weight less its group's bias; the
 * bias meets the exact sum of x) times max |x| of k's block / 254, plus the
 * f32 tolerance (q8 splits rows over 2 warps up to 4096 rows at one token,
 * the default up to 2048: the 3001-row case). The mode must show (its error
 * above the default's), must leave 3 tokens alone (the same bits as the
 * default backend), and matmul_many takes it too (gate + up over 20000 rows,
 * where the default runs 2 rows per warp). */
TEST(affine_gemv_int8_activations) {
    struct backend *g8 = gpu_env("VLLMC_CUDA_QGEMV", "q8");
    struct backend *g = gpu(), *c = cpu();
    const struct { int bits, gs, N, K; enum dtype sdt; int many; } cases[] = {
        { 4, 64, 515, 4096, DT_BF16, 0 }, { 8, 32, 257, 1024, DT_F16, 0 }, { 4, 128, 129, 14336, DT_F32, 0 },
        { 4, 64, 3001, 1024, DT_BF16, 0 }, /* q8: 2 warps per row up to 4096 rows, the default 1 */
        { 4, 64, 10007, 512, DT_BF16, 1 } };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        const int bits = cases[ci].bits, gs = cases[ci].gs, N = cases[ci].N, K = cases[ci].K, G = K / gs;
        const int nw = cases[ci].many ? 2 : 1;
        const enum dtype sdt = cases[ci].sdt;
        struct qw q[2];
        float *sq[2], *wa[2]; /* |s q| and |w| per weight element */
        int32_t *all = xmalloc((size_t)N * 4);
        for (int n = 0; n < N; n++) all[n] = n;
        for (int i = 0; i < nw; i++) {
            q[i] = qw_make(g, bits, gs, sdt, N, K);
            sq[i] = xmalloc((size_t)N * K * 4), wa[i] = xmalloc((size_t)N * K * 4);
            bk_embed(c, wa[i], &q[i].h, all, N, 1.0f);
            for (size_t e = 0; e < (size_t)N * K; e++) {
                const size_t gi = e / (size_t)K * (size_t)G + e % (size_t)K / (size_t)gs;
                sq[i][e] = fabsf(wa[i][e] - typed_f32(sdt, q[i].h.biases, gi));
                wa[i][e] = fabsf(wa[i][e]);
            }
        }
        for (int T = 1; T <= 3; T++) {
            float *x = randf((size_t)T * K, 2.0f);
            for (int k = 0; k < K; k += 96) x[k] *= 50.0f; /* some blocks with one large value */
            float *xd = up(g, x, (size_t)T * K * 4), *x8 = up(g8, x, (size_t)T * K * 4);
            double err8 = 0, err0 = 0;
            for (int i = 0; i < nw; i++) {
                float *ref = xmalloc((size_t)T * N * 4), *got = xmalloc((size_t)T * N * 4), *got0 = xmalloc((size_t)T * N * 4);
                bk_matmul(c, ref, x, &q[i].h, T);
                float *yd = poisoned(g, (size_t)T * N), *y8 = poisoned(g8, (size_t)T * N);
                if (nw == 2) {
                    float *yo = poisoned(g, (size_t)T * N), *yo8 = poisoned(g8, (size_t)T * N);
                    const struct bk_weight *w2[2] = { &q[0].d, &q[1].d };
                    float *y2[2] = { i ? yo : yd, i ? yd : yo }, *y28[2] = { i ? yo8 : y8, i ? y8 : yo8 };
                    g->ops->matmul_many(g, 2, y2, xd, w2, T);
                    g8->ops->matmul_many(g8, 2, y28, x8, w2, T);
                    bk_free(g, yo), bk_free(g8, yo8);
                } else {
                    bk_matmul(g, yd, xd, &q[i].d, T);
                    bk_matmul(g8, y8, x8, &q[i].d, T);
                }
                down(g, got0, yd, (size_t)T * N * 4);
                down(g8, got, y8, (size_t)T * N * 4);
                int bad0 = 0, bad8 = 0, badeq = 0;
                for (int t = 0; t < T; t++)
                    for (int n = 0; n < N; n++) {
                        double bound = 0, mag = 0; /* q8: half a step of the high part, max |x| / 254 */
                        for (int b = 0; b < K / 32; b++) {
                            float amax = 0;
                            for (int k = 32 * b; k < 32 * b + 32; k++) amax = fmaxf(amax, fabsf(x[(size_t)t * K + k]));
                            double s = 0;
                            for (int k = 32 * b; k < 32 * b + 32; k++) {
                                s += sq[i][(size_t)n * K + k];
                                mag += fabs(x[(size_t)t * K + k]) * wa[i][(size_t)n * K + k];
                            }
                            bound += s * amax / 254.0;
                        }
                        const size_t o = (size_t)t * N + n;
                        const double e8 = fabs(got[o] - ref[o]), e0 = fabs(got0[o] - ref[o]);
                        err8 = fmax(err8, e8), err0 = fmax(err0, e0);
                        /* the default: two int8 parts, max |x| / 65024 (a 256th of the above) */
                        if (!(e0 <= bound / 256 * 1.001 + 2e-5 * mag + 1e-6) && bad0++ < 3)
                            fprintf(stderr, "  default %d-bit N=%d K=%d T=%d: y[%d][%d] off by %g, bound %g\n", bits,
                                    N, K, T, t, n, e0, bound / 256 + 2e-5 * mag);
                        if (T <= 2 && !(e8 <= bound * 1.001 + 2e-5 * mag + 1e-6) && bad8++ < 3)
                            fprintf(stderr, "  q8 %d-bit g%d N=%d K=%d T=%d: y[%d][%d] off by %g, bound %g\n", bits, gs,
                                    N, K, T, t, n, e8, bound);
                        if (T == 3 && got[o] != got0[o] && badeq++ < 3)
                            fprintf(stderr, "  q8 backend at 3 tokens: y[%d][%d] %g, default %g\n", t, n, got[o], got0[o]);
                    }
                CHECK(bad0 == 0);
                CHECK(bad8 == 0);
                CHECK(badeq == 0);
                bk_free(g, yd), bk_free(g8, y8);
                free(ref), free(got), free(got0);
            }
            if (T <= 2) {
                printf("      q8 %d-bit g%d N=%d K=%d T=%d%s: worst |error| %.3g (default %.3g)\n", bits, gs, N, K, T,
                       nw == 2 ? " (matmul_many)" : "", err8, err0);
                CHECK(err8 > 4 * err0); /* the mode took effect */
            }
            bk_free(g, xd), bk_free(g8, x8);
            free(x);
        }
        for (int i = 0; i < nw; i++) qw_free(g, &q[i]), free(sq[i]), free(wa[i]);
        free(all);
    }
    bk_destroy(g8), bk_destroy(g), bk_destroy(c);
}

/* Which activations the one-token 4/8-bit GEMV takes by mode (cuda.c,
 * qgemv_act8): the bf16 mode (the default) rounds them to one int8 per
 * value for 4-bit weights (the outputs of VLLMC_CUDA_QGEMV=q8, bit for bit)
 * and keeps two for 8-bit weights (the split mode's outputs, bit for bit);
 * the split mode keeps two for both; VLLMC_CUDA_QGEMV=int8 gives the bf16
 * mode two at 4 bits too. The two kinds must differ (the mapping shows). */
static void gemv_out(struct backend *b, float *out, const struct qw *q, const float *xd, int N) {
    float *yd = poisoned(b, (size_t)N);
    bk_matmul(b, yd, xd, &q->d, 1);
    down(b, out, yd, (size_t)N * 4);
    bk_free(b, yd);
}

TEST(affine_gemv_activations_by_mode) {
    g_matmul = "bf16";
    struct backend *gb = gpu(), *gbi = gpu_env("VLLMC_CUDA_QGEMV", "int8");
    unsetenv("VLLMC_CUDA_QGEMV");
    g_matmul = "split";
    struct backend *gs = gpu(), *gq = gpu_env("VLLMC_CUDA_QGEMV", "q8");
    unsetenv("VLLMC_CUDA_QGEMV");
    const struct { int bits, gs, N, K; } cases[] = { { 4, 64, 1028, 4096 }, { 4, 32, 4096, 14336 }, { 8, 64, 1028, 4096 } };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        const int bits = cases[ci].bits, N = cases[ci].N, K = cases[ci].K;
        struct qw q = qw_make(gs, bits, cases[ci].gs, DT_BF16, N, K);
        float *x = randf((size_t)K, 2.0f);
        for (int k = 0; k < K; k += 96) x[k] *= 50.0f;
        float *xd = up(gs, x, (size_t)K * 4);
        float *ob = xmalloc((size_t)N * 4), *obi = xmalloc((size_t)N * 4), *os = xmalloc((size_t)N * 4),
              *oq = xmalloc((size_t)N * 4);
        gemv_out(gb, ob, &q, xd, N), gemv_out(gbi, obi, &q, xd, N);
        gemv_out(gs, os, &q, xd, N), gemv_out(gq, oq, &q, xd, N);
        const bool q8 = bits == 4; /* what the bf16 mode should have taken */
        CHECK(memcmp(ob, q8 ? oq : os, (size_t)N * 4) == 0);
        CHECK(memcmp(obi, os, (size_t)N * 4) == 0);
        CHECK(memcmp(oq, os, (size_t)N * 4) != 0);
        for (int n = 0; n < N; n++) CHECK(isfinite(ob[n]));
        printf("      %d-bit N=%d K=%d: the bf16 mode's one-token GEMV took %s activations\n", bits, N, K,
               !memcmp(ob, oq, (size_t)N * 4) ? "one int8 (q8)" : !memcmp(ob, os, (size_t)N * 4) ? "hi + lo" : "other");
        bk_free(gs, xd), free(x), free(ob), free(obi), free(os), free(oq);
        qw_free(gs, &q);
    }
    bk_destroy(gb), bk_destroy(gbi), bk_destroy(gs), bk_destroy(gq);
}

/* The 4-bit GEMV through shared memory (quant.cu's qgb_k, VLLMC_CUDA_QBULK:
 * a block's 4 rows moved in by cp.async.bulk, each warp a quarter of every
 * row, then qg_k's arithmetic with the f32 sums grouped differently): at 1-2
 * tokens, in both activation modes, the outputs of the register kernel
 * (VLLMC_CUDA_QBULK=0; checked against the CPU by
 * affine_gemv_int8_activations) to within f32 rounding; one bulk launch per
 * call where every weight's rows are a multiple of 4 and a block's bytes fit
 * the limit (by default 160 KB, 16 with q8; or as set), none elsewhere or at
 * 8 bits;
 * blocks padded to about 57 KB of shared memory (VLLMC_CUDA_QBULK_SM=3)
 * give the same outputs, and the default's padding (9 per multiprocessor)
 * is smaller but there, q8's none; matmul_many's q/k/v-like call takes one launch for
 * its three weights;
 * rows 64 codes wide leave two of a block's four warps no granule; rows of
 * 32768 need more than 48 KB per block. Then the default backend's bulk
 * launches against the CPU within check_affine's bound. Skips where the device is not sm_90
 * (no bulk launch counted). */
TEST(affine_gemv_bulk) {
    struct backend *g = gpu_env("VLLMC_CUDA_QBULK", "0"), *bd = gpu(), *b16 = gpu_env("VLLMC_CUDA_QBULK", "16");
    struct backend *bsm = gpu_env("VLLMC_CUDA_QBULK_SM", "3"); /* blocks padded to ~57 KB of shared memory */
    setenv("VLLMC_CUDA_QGEMV", "q8", 1);
    struct backend *g8 = gpu_env("VLLMC_CUDA_QBULK", "0"), *bd8 = gpu(), *b160q = gpu_env("VLLMC_CUDA_QBULK", "160");
    unsetenv("VLLMC_CUDA_QGEMV");
    struct { struct backend *b, *ref; int kb; const char *name; } modes[] = {
        { bd, g, 160, "default" }, { b16, g, 16, "16 KB" }, { bsm, g, 160, "3 blocks per SM" },
        { bd8, g8, 16, "q8 default" }, { b160q, g8, 160, "q8, 160 KB" } };
    const struct { int bits, gs, N, K; enum dtype sdt; int many; } cases[] = {
        { 4, 64, 5000, 4096, DT_BF16, 0 }, { 8, 32, 4100, 1024, DT_F16, 0 }, { 4, 128, 4104, 14336, DT_F32, 0 },
        { 4, 32, 1000, 64, DT_BF16, 0 }, { 4, 64, 5001, 512, DT_BF16, 0 }, { 4, 64, 8, 32768, DT_BF16, 0 },
        { 4, 64, 4096, 2048, DT_BF16, 1 } /* with two of 1028: q/k/v in one launch */ };
    int launched = 0;
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        const int bits = cases[ci].bits, K = cases[ci].K, many = cases[ci].many;
        const int nw = many ? 3 : 1, Ns[3] = { cases[ci].N, 1028, 1028 };
        struct qw q[3];
        const struct bk_weight *wd[3];
        for (int i = 0; i < nw; i++) q[i] = qw_make(g, bits, cases[ci].gs, cases[ci].sdt, Ns[i], K), wd[i] = &q[i].d;
        for (int T = 1; T <= 2; T++) {
            float *x = randf((size_t)T * K, 2.0f);
            for (int k = 0; k < K; k += 96) x[k] *= 50.0f;
            float *xd = up(g, x, (size_t)T * K * 4);
            for (size_t mi = 0; mi < ARRAY_LEN(modes); mi++) {
                struct backend *b = modes[mi].b, *r = modes[mi].ref;
                const size_t block = (size_t)K * 2 + 2 * 4 * (size_t)(K / cases[ci].gs) * dtype_size(cases[ci].sdt);
                bool eligible = bits == 4 && block <= (size_t)modes[mi].kb << 10;
                for (int i = 0; i < nw; i++) eligible = eligible && Ns[i] % 4 == 0;
                float *yb[3], *yr[3];
                for (int i = 0; i < nw; i++) yb[i] = poisoned(g, (size_t)T * Ns[i]), yr[i] = poisoned(g, (size_t)T * Ns[i]);
                struct backend_cuda_counts c0, c1, r0, r1;
                backend_cuda_counts(b, &c0), backend_cuda_counts(r, &r0);
                if (many) {
                    b->ops->matmul_many(b, 3, yb, xd, wd, T);
                    r->ops->matmul_many(r, 3, yr, xd, wd, T);
                } else {
                    bk_matmul(b, yb[0], xd, wd[0], T);
                    bk_matmul(r, yr[0], xd, wd[0], T);
                }
                backend_cuda_counts(b, &c1), backend_cuda_counts(r, &r1);
                const long launches = c1.qgemv_bulk - c0.qgemv_bulk;
                CHECK(r1.qgemv_bulk == r0.qgemv_bulk);
                if (ci == 0 && T == 1 && mi == 0 && launches == 0) {
                    for (int i = 0; i < nw; i++) bk_free(g, yb[i]), bk_free(g, yr[i]);
                    bk_free(g, xd), free(x), qw_free(g, &q[0]);
                    bk_destroy(bd), bk_destroy(b16), bk_destroy(bsm), bk_destroy(bd8), bk_destroy(b160q);
                    bk_destroy(g), bk_destroy(g8);
                    SKIP("no bulk GEMV on this device (sm_90 only)");
                }
                launched += (int)launches;
                CHECK(launches == (eligible ? 1 : 0));
                for (int i = 0; i < nw; i++) {
                    const size_t n = (size_t)T * Ns[i];
                    float *hb = xmalloc(n * 4), *hr = xmalloc(n * 4);
                    down(b, hb, yb[i], n * 4), down(r, hr, yr[i], n * 4);
                    double ymax = 0, worst = 0;
                    for (size_t e = 0; e < n; e++) ymax = fmax(ymax, fabs(hr[e]));
                    size_t bad = 0;
                    for (size_t e = 0; e < n; e++) {
                        const double d = fabs((double)hb[e] - hr[e]);
                        worst = isnan(d) ? INFINITY : fmax(worst, d);
                        bad += !(d <= 1e-5 * ymax);
                    }
                    if (bad)
                        fprintf(stderr, "  %s: %d-bit N=%d K=%d T=%d weight %d: %zu outputs off, worst %g of max %g\n",
                                modes[mi].name, bits, Ns[i], K, T, i, bad, worst, ymax);
                    CHECK(bad == 0);
                    CHECK(ymax > 0);
                    free(hb), free(hr);
                    bk_free(g, yb[i]), bk_free(g, yr[i]);
                }
            }
            bk_free(g, xd), free(x);
        }
        for (int i = 0; i < nw; i++) qw_free(g, &q[i]);
    }
    printf("      %d bulk launches; blocks padded to %d bytes by default, %d at 3 per SM\n", launched,
           backend_cuda_qbulk_pad(bd), backend_cuda_qbulk_pad(bsm));
    CHECK(launched > 0);
    /* the cap took effect: 9 per multiprocessor (the default) needs some
     * padding, 3 more than the 48 KB a launch gets without the attribute;
     * none with q8 */
    CHECK(backend_cuda_qbulk_pad(bd) > 0);
    CHECK(backend_cuda_qbulk_pad(bsm) > backend_cuda_qbulk_pad(bd));
    CHECK(backend_cuda_qbulk_pad(bsm) > 48 * 1024);
    CHECK(backend_cuda_qbulk_pad(bd8) == 0);
    /* and against the CPU directly (check_affine's bound), 1-2 tokens on the
     * default backend, every call a bulk launch */
    struct backend *c = cpu();
    static const int T12[] = { 1, 2 };
    struct backend_cuda_counts k0, k1;
    backend_cuda_counts(bd, &k0);
    check_affine(bd, c, 4, 64, DT_BF16, 5000, 4096, T12, 2, 2e-5, 0);
    check_affine(bd, c, 4, 128, DT_F32, 4104, 14336, T12, 2, 2e-5, 1);
    check_affine(bd, c, 4, 32, DT_F16, 1000, 64, T12, 2, 2e-5, 0);
    backend_cuda_counts(bd, &k1);
    CHECK(k1.qgemv_bulk - k0.qgemv_bulk >= 6);
    bk_destroy(c);
    bk_destroy(bd), bk_destroy(b16), bk_destroy(bsm), bk_destroy(bd8), bk_destroy(b160q), bk_destroy(g), bk_destroy(g8);
}

/* The L2 prefetch of the next quantized GEMV's weight (VLLMC_CUDA_QPF_MB,
 * default 4 MB): the backend learns the order in which weights are used and
 * arms each launch with the next one. Three 4-bit weights used in turn:
 * from the second round every launch is armed (none with the prefetch
 * off) and the results are the same bits with it on and off; after a weight of the learned order is freed the order is forgotten
 * (launches are armed only as it is learned again, so nothing prefetches
 * freed memory) and the results stay right. */
TEST(affine_gemv_l2_prefetch) {
    struct backend *goff = gpu_env("VLLMC_CUDA_QPF_MB", "0");
    struct backend *g = gpu();
    const int N = 300, K = 512;
    struct qw q[4];
    for (int i = 0; i < 3; i++) q[i] = qw_make(g, 4, 64, DT_BF16, N, K);
    float *x = randf(K, 2.0f), *xd = up(g, x, (size_t)K * 4), *yd = poisoned(g, N), *yo = poisoned(g, N);
    float *got = xmalloc((size_t)N * 4), *off = xmalloc((size_t)N * 4);
    int order[3] = { 0, 1, 2 };
    for (int phase = 0; phase < 2; phase++) {
        if (phase == 1) { /* free weight 1 of the learned order, use a new one in its place */
            qw_free(g, &q[1]);
            q[3] = qw_make(g, 4, 64, DT_BF16, N, K);
            order[1] = 3;
        }
        for (int round = 0; round < 3; round++) {
            struct backend_cuda_counts c0, c1, o0, o1;
            backend_cuda_counts(g, &c0), backend_cuda_counts(goff, &o0);
            for (int j = 0; j < 3; j++) {
                const struct qw *w = &q[order[j]];
                bk_matmul(g, yd, xd, &w->d, 1);
                bk_matmul(goff, yo, xd, &w->d, 1);
                down(g, got, yd, (size_t)N * 4), down(goff, off, yo, (size_t)N * 4);
                CHECK(memcmp(got, off, (size_t)N * 4) == 0); /* the GEMV itself: affine_matmul_* */
            }
            backend_cuda_counts(g, &c1), backend_cuda_counts(goff, &o1);
            const long armed = c1.qgemv_prefetch - c0.qgemv_prefetch;
            CHECK(o1.qgemv_prefetch == o0.qgemv_prefetch);
            /* round 0 learns (after the free too: forgetting the order forgets the
             * last weight used as well), so nothing is armed; from round 1 all 3
             * launches are */
            CHECK(armed == (round == 0 ? 0 : 3));
        }
    }
    for (int i = 0; i < 4; i++)
        if (i != 1) qw_free(g, &q[i]);
    bk_free(g, xd), bk_free(g, yd), bk_free(goff, yo);
    free(x), free(got), free(off);
    bk_destroy(goff), bk_destroy(g);
}

/* VLLMC_CUDA_QGEMV=f32: the 4- and 8-bit GEMV with f32 activations (the
 * kernel of the other widths) */
TEST(affine_matmul_f32_gemv) {
    setenv("VLLMC_CUDA_QGEMV", "f32", 1);
    struct backend *g = gpu(), *c = cpu();
    static const int Ts[] = { 1, 3, 8 };
    check_affine(g, c, 4, 64, DT_BF16, 1001, 4096, Ts, (int)ARRAY_LEN(Ts), 2e-5, 0);
    check_affine(g, c, 8, 32, DT_F16, 67, 384, Ts, (int)ARRAY_LEN(Ts), 2e-5, 1);
    bk_destroy(g), bk_destroy(c);
    unsetenv("VLLMC_CUDA_QGEMV");
}

/* bf16 activations (the default mode): the dequantized weight and the
 * activations rounded once */
TEST(affine_matmul_bf16_activation_mode) {
    g_matmul = "bf16";
    struct backend *g = gpu(), *c = cpu();
    g_matmul = "split";
    static const int Ts[] = { 37 };
    check_affine(g, c, 4, 64, DT_BF16, 257, 1024, Ts, 1, 4e-3, 0);
    bk_destroy(g), bk_destroy(c);
}

TEST(affine_embed_exact) {
    struct backend *g = gpu(), *c = cpu();
    const int bits[] = { 2, 3, 4, 5, 6, 8 }, gss[] = { 32, 64, 128 };
    const enum dtype sdts[] = { DT_BF16, DT_F16, DT_F32 };
    for (size_t bi = 0; bi < ARRAY_LEN(bits); bi++)
        for (size_t gi = 0; gi < ARRAY_LEN(gss); gi++) {
            const int V = 50, K = 512, T = 69;
            struct qw q = qw_make(g, bits[bi], gss[gi], sdts[(bi + gi) % 3], V, K);
            int32_t ids[69];
            for (int t = 0; t < T; t++) ids[t] = (int32_t)(test_rng_next_(&rng) % V);
            float *ref = xmalloc((size_t)T * K * 4), *got = xmalloc((size_t)T * K * 4);
            bk_embed(c, ref, &q.h, ids, T, 1.5f);
            int32_t *idd = up(g, ids, sizeof ids);
            float *od = poisoned(g, (size_t)T * K);
            bk_embed(g, od, &q.d, idd, T, 1.5f);
            down(g, got, od, (size_t)T * K * 4);
            if (memcmp(got, ref, (size_t)T * K * 4)) { /* s * q and + b rounded separately on both sides */
                fprintf(stderr, "  affine embed %d-bit g%d %s differs\n", bits[bi], gss[gi],
                        dtype_name(sdts[(bi + gi) % 3]));
                test_failed_here_ = 1;
            }
            bk_free(g, idd), bk_free(g, od);
            free(ref), free(got);
            qw_free(g, &q);
        }
    bk_destroy(g), bk_destroy(c);
}

/* A quantized checkpoint loads on the GPU (codes, scales and biases
 * uploaded); its numbers are test_quant_golden's with VLLMC_TEST_DEVICE=cuda. */
TEST(quantized_model_loads) {
    struct backend *g = gpu();
    char err[1024];
    struct model *m = NULL;
    const char *root = getenv("VLLMC_FIXTURES");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/quant/mlx_q4_g32_qwen3", root ? root : "tests/fixtures");
    if (model_load(&m, dir, g, NULL, err, sizeof err)) fprintf(stderr, "  %s\n", err);
    CHECK(m != NULL && m->layers[0].wq.fmt == BK_W_AFFINE);
    model_free(m);
    bk_destroy(g);
}

/* A checkpoint larger than the card: model_load refuses it before reading
 * its weights (st_prefault never starts: its progress reporter is not
 * called), with both sizes. The checkpoint is a sparse file: its
 * safetensors header real, its ~1.25x the device's memory of bf16 data
 * holes. */
static int g_prefault_calls;
static void count_prefault(void *arg, size_t done, size_t total) {
    (void)arg, (void)done, (void)total;
    g_prefault_calls++;
}

TEST(model_larger_than_device_refused_at_once) {
    struct backend *g = gpu();
    size_t fr, tot;
    REQUIRE(bk_mem_info(g, &fr, &tot) == 0);
    const int d = 4096, ff = 4096, V = (int)((double)tot * 1.25 / (2.0 * d)) + 1;
    REQUIRE((double)V * d * 2 > (double)tot);
    const char *dir = test_write_tmp("config.json", "");
    char path[600], cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d, "
             "\"intermediate_size\": %d, \"num_hidden_layers\": 1, \"num_attention_heads\": 32, "
             "\"num_key_value_heads\": 8, \"vocab_size\": %d, \"rms_norm_eps\": 1e-5, \"rope_theta\": 500000, "
             "\"max_position_embeddings\": 8192, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\"}",
             d, ff, V);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f && fputs(cfg, f) >= 0);
    fclose(f);
    /* tensors: name, rows, cols (cols 0: a vector) */
    struct { const char *name; long long r, c; } t[] = {
        { "model.embed_tokens.weight", V, d },
        { "model.layers.0.input_layernorm.weight", d, 0 },
        { "model.layers.0.self_attn.q_proj.weight", d, d },
        { "model.layers.0.self_attn.k_proj.weight", 1024, d },
        { "model.layers.0.self_attn.v_proj.weight", 1024, d },
        { "model.layers.0.self_attn.o_proj.weight", d, d },
        { "model.layers.0.post_attention_layernorm.weight", d, 0 },
        { "model.layers.0.mlp.gate_proj.weight", ff, d },
        { "model.layers.0.mlp.up_proj.weight", ff, d },
        { "model.layers.0.mlp.down_proj.weight", d, ff },
        { "model.norm.weight", d, 0 },
    };
    char hdr[4096];
    int n = snprintf(hdr, sizeof hdr, "{");
    long long off = 0;
    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        const long long bytes = 2 * t[i].r * (t[i].c ? t[i].c : 1);
        if (t[i].c)
            n += snprintf(hdr + n, sizeof hdr - (size_t)n,
                          "%s\"%s\": {\"dtype\": \"BF16\", \"shape\": [%lld, %lld], \"data_offsets\": [%lld, %lld]}",
                          i ? ", " : "", t[i].name, t[i].r, t[i].c, off, off + bytes);
        else
            n += snprintf(hdr + n, sizeof hdr - (size_t)n,
                          "%s\"%s\": {\"dtype\": \"BF16\", \"shape\": [%lld], \"data_offsets\": [%lld, %lld]}",
                          i ? ", " : "", t[i].name, t[i].r, off, off + bytes);
        off += bytes;
    }
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "}");
    while (n % 8) hdr[n++] = ' ';
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    f = fopen(path, "wb");
    const uint64_t hl = (uint64_t)n;
    REQUIRE(f && fwrite(&hl, 8, 1, f) == 1 && fwrite(hdr, 1, (size_t)n, f) == (size_t)n);
    REQUIRE(ftruncate(fileno(f), (off_t)(8 + n + off)) == 0); /* the data: holes */
    fclose(f);
    char err[1024] = "";
    struct model *m = NULL;
    g_prefault_calls = 0;
    st_set_progress(count_prefault, NULL);
    const int rc = model_load(&m, dir, g, NULL, err, sizeof err);
    printf("      %.1f GB checkpoint on a %.1f GB device: %s\n", (double)(8 + n + off) / 1e9, (double)tot / 1e9, err);
    CHECK(rc != 0 && m == NULL);
    CHECK(strstr(err, "the weights need") && strstr(err, "GiB is free") && strstr(err, dir));
    CHECK(g_prefault_calls == 0);
    /* a checkpoint that fits calls the reporter, so the check above can fail */
    snprintf(path, sizeof path, "%s/llama3_f32", getenv("VLLMC_FIXTURES") ? getenv("VLLMC_FIXTURES") : "tests/fixtures");
    REQUIRE(model_load(&m, path, g, NULL, err, sizeof err) == 0);
    CHECK(g_prefault_calls > 0);
    model_free(m);
    st_set_progress(NULL, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    bk_destroy(g);
}

/* The engine on the GPU sizes its KV cache from --gpu-memory-utilization:
 * what that fraction of the card leaves after the weights and activations
 * (capped at max_num_seqs full contexts, as on the CPU). */
TEST(engine_kv_from_gpu_memory_utilization) {
    struct backend *g = gpu();
    size_t fr, tot;
    REQUIRE(bk_mem_info(g, &fr, &tot) == 0);
    bk_destroy(g);
    const char *root = getenv("VLLMC_FIXTURES");
    char dir[600], err[512];
    snprintf(dir, sizeof dir, "%s/llama3_f32", root ? root : "tests/fixtures");
    struct vllmc_engine_params p;
    vllmc_engine_params_default(&p);
    p.model = dir;
    p.n_threads = 2;
    p.device = "cuda";
    p.gpu_memory_utilization = 0.25;
    p.max_num_seqs = 1 << 20; /* so the cap of max_num_seqs full contexts is not what binds */
    p.cuda_matmul = "split";  /* the engine option reaches the backend and its description */
    vllmc_engine *e;
    if (vllmc_engine_open(&e, &p, err, sizeof err)) {
        fprintf(stderr, "  open: %s\n", err);
        _exit(1);
    }
    struct vllmc_model_info info;
    vllmc_model_info(e, &info);
    /* llama3_f32: 4 layers, 2 KV heads of 16, f32 K and V */
    const double kv_bytes = (double)info.kv_tokens * 4 * 2 * 2 * 16 * 4;
    printf("      %lld KV tokens (%.2f GiB) of %.1f GiB on %s\n", (long long)info.kv_tokens, kv_bytes / (1 << 30),
           (double)tot / (1 << 30), info.cpu_isa);
    CHECK(!strncmp(info.cpu_isa, "cuda: ", 6) && strstr(info.cpu_isa, ", split activations"));
    CHECK(kv_bytes <= 0.25 * (double)tot);
    CHECK(kv_bytes >= 0.15 * (double)tot);
    CHECK(info.max_num_seqs == 1 << 20); /* given */
    /* vLLM's API-server batch defaults: 8192 tokens a step (1024 sequences)
     * on a card of 70 GiB or more other than an A100, else 2048 (256) */
    const bool big = tot >= ((size_t)70 << 30) && !strstr(info.cpu_isa, "A100");
    CHECK(info.max_num_batched_tokens == (big ? 8192 : 2048));
    int32_t prompt[] = { 1, 5, 9, 13 }, out[8];
    int n_out = 0;
    CHECK(vllmc_generate_greedy(e, prompt, 4, 8, 1, out, &n_out, err, sizeof err) == 0);
    CHECK(n_out == 8);
    vllmc_engine_close(e);
    p.max_num_seqs = 0;
    p.max_num_batched_tokens = 1000; /* given */
    /* decode steps are recorded as graphs, except with enforce_eager */
    for (int eager = 0; eager < 2; eager++) {
        p.enforce_eager = eager;
        REQUIRE(vllmc_engine_open(&e, &p, err, sizeof err) == 0);
        vllmc_model_info(e, &info);
        CHECK(info.max_num_seqs == (big ? 1024 : 256) && info.max_num_batched_tokens == 1000);
        CHECK(vllmc_generate_greedy(e, prompt, 4, 8, 1, out, &n_out, err, sizeof err) == 0 && n_out == 8);
        int recorded = 0;
        for (int i = 0; i < MODEL_GRAPHS; i++) recorded += e->model->graphs[i].g != NULL;
        printf("      enforce_eager %d: %d decode graphs recorded (%s)\n", eager, recorded, info.cpu_isa);
        const bool graphs_off = getenv("VLLMC_CUDA_GRAPHS") && !strcmp(getenv("VLLMC_CUDA_GRAPHS"), "0");
        CHECK(eager ? recorded == 0 && strstr(info.cpu_isa, ", eager")
                    : (recorded > 0 || graphs_off) && !strstr(info.cpu_isa, "eager"));
        vllmc_engine_close(e);
    }
}

TEST_MAIN()
