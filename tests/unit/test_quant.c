/* test_quant.c — quantized checkpoints: the config preflight (MLX affine and
 * AWQ, every rejected AWQ variant with its message), the MLX bit-stream rule
 * and the AWQ repack against codes packed here independently (AutoAWQ's
 * order 0,2,4,6,1,3,5,7), strict shape/dtype checks at load, and every CPU
 * kernel set's quantized matmul and embedding lookup against
 * dequantize-then-f32-matmul on random data (odd sizes, every bits/group,
 * 1-3 threads, decode- and prefill-sized T).
 *
 * Error bound of the SIMD paths (quant_cpu.h): activations are split into two
 * int8 parts per (token, group), x = d*(hi + lo/256) with d = max|x_g|/127, so
 * |x - x~| <= d/512 and each output may differ from the f32 result by
 * sum_k |w_k| * max|x_g(k)| / 65024, plus f32 summation order (1e-5 of
 * sum |x w|). The portable path is f32 throughout (1e-5).
 * VLLMC_TEST_ISA adds one kernel set (the Arm run passes "neon"). */
#include "harness.h"

#include <sys/stat.h>

#include "backend/backend.h"
#include "backend/cpu/quant_cpu.h"
#include "io/quant.h"
#include "io/safetensors.h"
#include "model/model.h"

static unsigned long long rng = 0x243f6a8885a308d3ull;

/* ---- config preflight ---------------------------------------------------------- */

static int parse(struct quant_cfg *q, const char *json, char *err) {
    return quant_cfg_parse(q, json, strlen(json), err, 512);
}

TEST(config_none) {
    struct quant_cfg q;
    char err[512];
    REQUIRE(parse(&q, "{\"hidden_size\": 64}", err) == 0);
    CHECK(q.method == QUANT_NONE);
    quant_cfg_free(&q);
}

TEST(config_mlx_with_overrides) {
    struct quant_cfg q;
    char err[512] = "";
    const char *j = "{\"quantization\": {\"group_size\": 32, \"bits\": 4, \"mode\": \"affine\","
                    " \"model.layers.0.mlp.down_proj\": {\"bits\": 8, \"group_size\": 64},"
                    " \"model.layers.1.self_attn.q_proj\": false,"
                    " \"lm_head\": {\"bits\": 6}},"
                    " \"quantization_config\": {\"group_size\": 32, \"bits\": 4}}";
    int rc = parse(&q, j, err);
    if (rc) fprintf(stderr, "  %s\n", err);
    REQUIRE(rc == 0);
    CHECK(q.method == QUANT_MLX && q.bits == 4 && q.group_size == 32);
    int b, g;
    CHECK(quant_module_params(&q, "model.layers.0.mlp.down_proj", &b, &g) && b == 8 && g == 64);
    CHECK(!quant_module_params(&q, "model.layers.1.self_attn.q_proj", &b, &g));
    CHECK(quant_module_params(&q, "lm_head", &b, &g) && b == 6 && g == 32); /* group inherited */
    CHECK(quant_module_params(&q, "model.layers.0.mlp.up_proj", &b, &g) && b == 4 && g == 32);
    quant_cfg_free(&q);
    /* quantization_config alone (the Hugging Face side copy) */
    REQUIRE(parse(&q, "{\"quantization_config\": {\"group_size\": 128, \"bits\": 3}}", err) == 0);
    CHECK(q.method == QUANT_MLX && q.bits == 3 && q.group_size == 128);
    quant_cfg_free(&q);
}

TEST(config_mlx_rejects) {
    struct quant_cfg q;
    char err[512];
    CHECK(parse(&q, "{\"quantization\": {\"group_size\": 32, \"bits\": 4, \"mode\": \"mxfp4\"}}", err) != 0);
    CHECK(strstr(err, "mxfp4") && strstr(err, "affine"));
    CHECK(parse(&q, "{\"quantization\": {\"group_size\": 32, \"bits\": 7}}", err) != 0);
    CHECK(strstr(err, "7 bits"));
    CHECK(parse(&q, "{\"quantization\": {\"group_size\": 48, \"bits\": 4}}", err) != 0);
    CHECK(strstr(err, "group size 48"));
    CHECK(parse(&q, "{\"quantization\": {\"group_size\": 64, \"bits\": 4, \"x.y\": {\"bits\": 1}}}", err) != 0);
    CHECK(strstr(err, "x.y"));
}

TEST(config_awq_aliases) {
    struct quant_cfg q;
    char err[512] = "";
    const char *j = "{\"quantization_config\": {\"quant_method\": \"awq\", \"w_bit\": 4, \"q_group_size\": 128,"
                    " \"zero_point\": true, \"version\": \"GEMM\"}}";
    int rc = parse(&q, j, err);
    if (rc) fprintf(stderr, "  %s\n", err);
    REQUIRE(rc == 0);
    CHECK(q.method == QUANT_AWQ && q.bits == 4 && q.group_size == 128);
    quant_cfg_free(&q);
    REQUIRE(parse(&q, "{\"quantization_config\": {\"quant_method\": \"AWQ\", \"bits\": 4, \"group_size\": 128,"
                      " \"version\": \"gemm\", \"modules_to_not_convert\": null}}", err) == 0);
    CHECK(q.method == QUANT_AWQ);
    quant_cfg_free(&q);
}

TEST(config_awq_rejects_each_variant) {
    static const struct { const char *qc, *msg; } v[] = {
        { "\"quant_method\": \"awq\", \"bits\": 4, \"group_size\": 128, \"version\": \"gemv\"", "version 'gemv'" },
        { "\"quant_method\": \"awq\", \"bits\": 4, \"group_size\": 128, \"version\": \"marlin\"", "version 'marlin'" },
        { "\"quant_method\": \"awq\", \"w_bit\": 3, \"q_group_size\": 128, \"version\": \"GEMM\"", "3-bit" },
        { "\"quant_method\": \"awq\", \"bits\": 4, \"group_size\": 64, \"version\": \"gemm\"", "group size 64" },
        { "\"quant_method\": \"awq\", \"bits\": 4, \"group_size\": 128, \"zero_point\": false", "zero_point false" },
        { "\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": 128, \"desc_act\": false", "GPTQ" },
        { "\"quant_method\": \"fp8\"", "quant_method 'fp8'" },
    };
    for (size_t i = 0; i < ARRAY_LEN(v); i++) {
        char j[512], err[512] = "";
        snprintf(j, sizeof j, "{\"quantization_config\": {%s}}", v[i].qc);
        struct quant_cfg q;
        CHECK(parse(&q, j, err) != 0);
        if (!strstr(err, v[i].msg)) fprintf(stderr, "  variant %zu: message '%s' lacks '%s'\n", i, err, v[i].msg);
        CHECK(strstr(err, v[i].msg) != NULL);
        CHECK(q.method == QUANT_NONE && q.n_ov == 0);
    }
}

/* ---- packing rules ----------------------------------------------------------------- */

/* Pack codes[n][K] as MLX does: code k of a row at bit k*bits, little-endian. */
static uint8_t *pack_rows(const uint8_t *codes, int64_t N, int64_t K, int bits) {
    size_t rb = (size_t)K * bits / 8;
    uint8_t *p = xcalloc((size_t)N * rb + 1, 1);
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            for (int b = 0; b < bits; b++)
                if (codes[n * K + k] >> b & 1) {
                    size_t bit = (size_t)k * bits + (size_t)b;
                    p[(size_t)n * rb + bit / 8] |= (uint8_t)(1u << (bit % 8));
                }
    return p;
}

TEST(mlx_bit_stream_every_width) {
    static const int widths[] = { 2, 3, 4, 5, 6, 8 };
    for (size_t wi = 0; wi < ARRAY_LEN(widths); wi++) {
        const int bits = widths[wi];
        const int64_t N = 3, K = 64;
        uint8_t codes[3 * 64];
        for (int i = 0; i < N * K; i++) codes[i] = (uint8_t)(test_rng_next_(&rng) % (1u << bits));
        uint8_t *p = pack_rows(codes, N, K, bits);
        /* the 3-bit stream of MLX's extract_bits: code 2 = bits 6-7 of byte 0 + bit 0 of byte 1 */
        if (bits == 3) CHECK((unsigned)(((p[0] >> 6) | ((p[1] & 1) << 2))) == codes[2]);
        struct bk_weight w = { .dtype = DT_F32, .rows = N, .cols = K, .data = p, .fmt = BK_W_AFFINE, .bits = bits,
                               .group_size = 32 };
        int bad = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++) bad += bk_affine_code(&w, n, k) != codes[n * K + k];
        uint8_t un[64];
        q_unpack_codes(un, &w, 1, 0, K);
        for (int k = 0; k < K; k++) bad += un[k] != codes[K + k];
        CHECK(bad == 0);
        free(p);
    }
}

/* AutoAWQ GEMM packing, written from its description: nibble i of word
 * [row][c] holds column 8c + order[i], order = 0,2,4,6,1,3,5,7. */
static void awq_pack(int32_t *dst, const uint8_t *vals, int64_t R, int64_t C) {
    static const int order[8] = { 0, 2, 4, 6, 1, 3, 5, 7 };
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C / 8; c++) {
            uint32_t wd = 0;
            for (int i = 0; i < 8; i++) wd |= (uint32_t)vals[r * C + 8 * c + order[i]] << (4 * i);
            memcpy(&dst[r * (C / 8) + c], &wd, 4);
        }
}

/* An AWQ module "<name>" of [out, in] into tensors t[0..2] (buffers owned by the caller). */
struct awq_mod {
    int32_t *qw, *qz;
    uint16_t *sc;
    uint8_t *q, *z;
    float *s;
};

static void awq_make(struct awq_mod *a, int64_t out, int64_t in, int g) {
    const int64_t G = in / g;
    a->q = xmalloc((size_t)(in * out));
    a->z = xmalloc((size_t)(G * out));
    a->s = xmalloc((size_t)(G * out) * sizeof(float));
    a->qw = xmalloc((size_t)(in * out / 8) * 4);
    a->qz = xmalloc((size_t)(G * out / 8) * 4);
    a->sc = xmalloc((size_t)(G * out) * 2);
    for (int64_t i = 0; i < in * out; i++) a->q[i] = (uint8_t)(test_rng_next_(&rng) & 15);
    for (int64_t i = 0; i < G * out; i++) {
        a->z[i] = (uint8_t)(test_rng_next_(&rng) & 15);
        a->sc[i] = f32_to_f16(0.001f + 0.05f * fabsf(test_randf(&rng)));
        a->s[i] = f16_to_f32(a->sc[i]);
    }
    awq_pack(a->qw, a->q, in, out); /* qweight [in][out/8] */
    awq_pack(a->qz, a->z, G, out);  /* qzeros [G][out/8] */
}

static void awq_free(struct awq_mod *a) {
    free(a->q), free(a->z), free(a->s), free(a->qw), free(a->qz), free(a->sc);
}

static size_t awq_tensors(struct st_write_tensor *t, const char *mod, char names[3][128], const struct awq_mod *a,
                          int64_t out, int64_t in, int g) {
    snprintf(names[0], 128, "%s.qweight", mod);
    snprintf(names[1], 128, "%s.qzeros", mod);
    snprintf(names[2], 128, "%s.scales", mod);
    t[0] = (struct st_write_tensor){ names[0], DT_I32, 2, { in, out / 8 }, a->qw };
    t[1] = (struct st_write_tensor){ names[1], DT_I32, 2, { in / g, out / 8 }, a->qz };
    t[2] = (struct st_write_tensor){ names[2], DT_F16, 2, { in / g, out }, a->sc };
    return 3;
}

TEST(awq_repack_matches_q_minus_z_times_s) {
    const int64_t out = 24, in = 256;
    const int g = 128;
    struct awq_mod a;
    awq_make(&a, out, in, g);
    const char *dir = test_mkdtemp();
    char path[300], names[3][128], err[512];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    struct st_write_tensor t[3];
    awq_tensors(t, "blk.proj", names, &a, out, in, g);
    REQUIRE(st_write_file(path, t, 3, err, sizeof err) == 0);
    struct st_set *st;
    REQUIRE(st_open_file(&st, path, err, sizeof err) == 0);
    void *mem = xmalloc(quant_awq_bytes(out, in, g));
    struct bk_weight w;
    int rc = quant_bind_awq(st, "blk.proj", out, in, g, mem, &w, err, sizeof err);
    if (rc) fprintf(stderr, "  %s\n", err);
    REQUIRE(rc == 0);
    CHECK(w.fmt == BK_W_AFFINE && w.bits == 4 && w.group_size == g && w.rows == out && w.cols == in);
    float row[256];
    int bad = 0;
    for (int64_t n = 0; n < out; n++) {
        qref_dequant_row(row, &w, n);
        for (int64_t k = 0; k < in; k++) {
            float ref = ((float)a.q[k * out + n] - (float)a.z[(k / g) * out + n]) * a.s[(k / g) * out + n];
            bad += row[k] != ref; /* exact: the repack keeps s and -z*s in f32 */
        }
    }
    CHECK(bad == 0);
    /* a malformed qzeros names the tensor */
    struct bk_weight w2;
    CHECK(quant_bind_awq(st, "blk.proj", out, 2 * in, g, mem, &w2, err, sizeof err) != 0);
    CHECK(strstr(err, "blk.proj.qweight") != NULL);
    CHECK(quant_bind_awq(st, "blk.nope", out, in, g, mem, &w2, err, sizeof err) != 0);
    CHECK(strstr(err, "blk.nope.qweight") != NULL);
    st_close(st);
    free(mem);
    awq_free(&a);
}

/* ---- kernels ------------------------------------------------------------------------- */

struct rand_w {
    struct bk_weight w;
    uint8_t *codes;
    void *s, *b;
};

static void rand_weight(struct rand_w *r, int64_t N, int64_t K, int bits, int g, enum dtype sdt) {
    const int64_t G = K / g;
    uint8_t *codes = xmalloc((size_t)(N * K));
    for (int64_t i = 0; i < N * K; i++) codes[i] = (uint8_t)(test_rng_next_(&rng) % (1u << bits));
    r->codes = pack_rows(codes, N, K, bits);
    free(codes);
    const size_t es = dtype_size(sdt);
    r->s = xmalloc((size_t)(N * G) * es);
    r->b = xmalloc((size_t)(N * G) * es);
    const float range = (float)((1 << bits) - 1);
    for (int64_t i = 0; i < N * G; i++) {
        float s = (0.2f + fabsf(test_randf(&rng))) / range, b = -0.5f * range * s + 0.1f * test_randf(&rng);
        if (sdt == DT_BF16) { ((uint16_t *)r->s)[i] = f32_to_bf16(s); ((uint16_t *)r->b)[i] = f32_to_bf16(b); }
        else if (sdt == DT_F16) { ((uint16_t *)r->s)[i] = f32_to_f16(s); ((uint16_t *)r->b)[i] = f32_to_f16(b); }
        else { ((float *)r->s)[i] = s; ((float *)r->b)[i] = b; }
    }
    r->w = (struct bk_weight){ .dtype = sdt, .rows = N, .cols = K, .data = r->codes, .fmt = BK_W_AFFINE,
                               .bits = bits, .group_size = g, .scales = r->s, .biases = r->b };
}

static void rand_free(struct rand_w *r) { free(r->codes), free(r->s), free(r->b); }

static const char *const isas_all[] = { "portable", "avx2", "avx512", "neon" };

struct isa_list { const char *name[8]; int n; };
static struct isa_list isa_list(void) {
    struct isa_list l = { .n = 0 };
    for (size_t i = 0; i < ARRAY_LEN(isas_all); i++) {
        struct backend *bk;
        if (backend_cpu_create(&bk, 1, isas_all[i], NULL, 0) == 0) {
            l.name[l.n++] = isas_all[i];
            bk_destroy(bk);
        }
    }
    const char *extra = getenv("VLLMC_TEST_ISA");
    if (extra && *extra) l.name[l.n++] = extra;
    return l;
}

static void q_row_scales_one(const struct bk_weight *w, int64_t n, int64_t j, float *s, float *b) {
    float sb[2][256];
    q_row_scales(sb[0], sb[1], w, n);
    *s = sb[0][j];
    *b = sb[1][j];
}

/* One weight shape against every kernel set, thread count and T. */
static int check_matmul(const struct isa_list *isas, int64_t N, int64_t K, int bits, int g, enum dtype sdt,
                        const int *Ts, int nT) {
    struct rand_w r;
    rand_weight(&r, N, K, bits, g, sdt);
    int Tmax = 0, fails = 0;
    for (int i = 0; i < nT; i++) Tmax = MAX(Tmax, Ts[i]);
    float *x = xmalloc((size_t)Tmax * K * sizeof(float)), *wd = xmalloc((size_t)(N * K) * sizeof(float));
    double *ref = xmalloc((size_t)Tmax * N * sizeof(double)), *absxw = xmalloc((size_t)Tmax * N * sizeof(double));
    double *qerr = xmalloc((size_t)Tmax * N * sizeof(double));
    float *got = xmalloc((size_t)Tmax * N * sizeof(float));
    for (int64_t i = 0; i < Tmax * K; i++) x[i] = test_randf(&rng) * (i % 7 == 3 ? 8.0f : 1.0f); /* some outliers */
    for (int64_t n = 0; n < N; n++) qref_dequant_row(wd + n * K, &r.w, n);
    for (int t = 0; t < Tmax; t++)
        for (int64_t n = 0; n < N; n++) {
            double acc = 0, ax = 0, qe = 0, sq[256];
            REQUIRE(K / g <= 256);
            for (int64_t j = 0; j < K / g; j++) {
                float s0, b0;
                q_row_scales_one(&r.w, n, j, &s0, &b0);
                sq[j] = fabs(s0);
            }
            for (int64_t j = 0; j < K / g; j++) {
                double m = 0;
                for (int64_t k = j * g; k < (j + 1) * g; k++) m = fmax(m, fabs(x[t * K + k]));
                for (int64_t k = j * g; k < (j + 1) * g; k++) {
                    double xw = (double)x[t * K + k] * wd[n * K + k];
                    acc += xw;
                    ax += fabs(xw);
                    /* |w| or |s q| (the integer part's weight), whichever is larger */
                    qe += fmax(fabs(wd[n * K + k]), sq[k / g] * (1 << bits)) * m / 65024.0;
                }
            }
            ref[t * N + n] = acc;
            absxw[t * N + n] = ax;
            qerr[t * N + n] = qe;
        }
    for (int ii = 0; ii < isas->n; ii++) {
        for (int nth = 1; nth <= 3; nth++) {
            struct backend *bk;
            char err[256];
            REQUIRE(backend_cpu_create(&bk, nth, isas->name[ii], err, sizeof err) == 0);
            const bool exact = strcmp(backend_cpu_quant_isa(bk), "portable") == 0;
            for (int ti = 0; ti < nT; ti++) {
                const int T = Ts[ti];
                for (size_t i = 0; i < (size_t)T * N; i++) got[i] = NAN;
                bk_matmul(bk, got, x, &r.w, T);
                int bad = 0;
                double worst = 0;
                for (int t = 0; t < T; t++)
                    for (int64_t n = 0; n < N; n++) {
                        double d = fabs(got[t * N + n] - ref[t * N + n]);
                        /* the portable set keeps f32 activations: no quantization term */
                        double tol = 1e-5 * absxw[t * N + n] + 1e-6 + (exact ? 0.0 : 1.01 * qerr[t * N + n]);
                        if (!(d <= tol)) bad++;
                        worst = fmax(worst, d / tol);
                    }
                if (bad) {
                    fprintf(stderr, "  %s/%s thr %d: bits %d g %d %s N %lld K %lld T %d: %d outputs off (worst %.2f x tol)\n",
                            isas->name[ii], backend_cpu_quant_isa(bk), nth, bits, g, dtype_name(sdt), (long long)N,
                            (long long)K, T, bad, worst);
                    fails++;
                }
            }
            bk_destroy(bk);
        }
    }
    free(x), free(wd), free(ref), free(absxw), free(qerr), free(got);
    rand_free(&r);
    return fails;
}

static const int Ts_dot[] = { 1, 2, 5 }, Ts_tiles[] = { 16, 37 };

TEST(kernel_sets) {
    struct isa_list l = isa_list();
    for (int i = 0; i < l.n; i++) {
        struct backend *bk;
        REQUIRE(backend_cpu_create(&bk, 1, l.name[i], NULL, 0) == 0);
        fprintf(stderr, "  %s: quantized kernels %s\n", l.name[i], backend_cpu_quant_isa(bk));
        bk_destroy(bk);
    }
    struct backend *bk;
    REQUIRE(backend_cpu_create(&bk, 1, "auto-exact", NULL, 0) == 0);
    CHECK(strcmp(backend_cpu_quant_isa(bk), "portable") == 0); /* -exact: f32 activations */
    bk_destroy(bk);
}

TEST(matmul_every_bits_and_group) {
    struct isa_list l = isa_list();
    static const int widths[] = { 2, 3, 4, 5, 6, 8 }, groups[] = { 32, 64, 128 };
    int fails = 0;
    for (size_t wi = 0; wi < ARRAY_LEN(widths); wi++)
        for (size_t gi = 0; gi < ARRAY_LEN(groups); gi++) {
            const int g = groups[gi];
            /* K: 3 groups plus one, never a multiple of 128 past g = 32; N odd */
            fails += check_matmul(&l, 37, 3 * g + (g == 32 ? 32 : 0) + (g == 64 ? 64 : 0), widths[wi], g,
                                  gi == 0 ? DT_BF16 : gi == 1 ? DT_F16 : DT_F32, Ts_dot, ARRAY_LEN(Ts_dot));
        }
    CHECK(fails == 0);
}

TEST(matmul_prefill_sizes) {
    struct isa_list l = isa_list();
    int fails = 0;
    static const int widths[] = { 4, 8, 3 }, groups[] = { 32, 64, 128 };
    for (size_t wi = 0; wi < ARRAY_LEN(widths); wi++)
        for (size_t gi = 0; gi < ARRAY_LEN(groups); gi++)
            fails += check_matmul(&l, 45, 5 * groups[gi], widths[wi], groups[gi], DT_BF16, Ts_tiles,
                                  ARRAY_LEN(Ts_tiles));
    CHECK(fails == 0);
}

TEST(matmul_real_widths) {
    struct isa_list l = isa_list();
    static const int T1[] = { 1, 3 }, T2[] = { 19 };
    CHECK(check_matmul(&l, 64, 1024, 4, 64, DT_BF16, T1, 2) == 0);
    CHECK(check_matmul(&l, 48, 1024, 8, 64, DT_BF16, T1, 2) == 0);
    CHECK(check_matmul(&l, 40, 3072, 4, 64, DT_BF16, T2, 1) == 0);
    /* K = 8192: the tile path takes tokens in chunks of 64 that fit L2, so
     * T = 100 runs two chunks */
    static const int T3[] = { 100 };
    CHECK(check_matmul(&l, 40, 8192, 4, 64, DT_BF16, T3, 1) == 0);
}

TEST(embed_dequantizes_rows) {
    struct rand_w r;
    rand_weight(&r, 50, 96, 3, 32, DT_BF16);
    struct isa_list l = isa_list();
    const int32_t ids[] = { 0, 49, 7, 7, 23 };
    float got[5 * 96], want[96];
    for (int ii = 0; ii < l.n; ii++) {
        struct backend *bk;
        REQUIRE(backend_cpu_create(&bk, 2, l.name[ii], NULL, 0) == 0);
        bk_embed(bk, got, &r.w, ids, 5, 0.5f);
        int bad = 0;
        for (int t = 0; t < 5; t++) {
            for (int k = 0; k < 96; k++) {
                float s = bf16_to_f32(((uint16_t *)r.s)[ids[t] * 3 + k / 32]);
                float b = bf16_to_f32(((uint16_t *)r.b)[ids[t] * 3 + k / 32]);
                want[k] = (s * (float)bk_affine_code(&r.w, ids[t], k) + b) * 0.5f;
            }
            for (int k = 0; k < 96; k++) bad += got[t * 96 + k] != want[k];
        }
        CHECK(bad == 0);
        bk_destroy(bk);
    }
    rand_free(&r);
}

/* ---- loading --------------------------------------------------------------------------- */

/* A tiny Llama (d 64, ff 128, 1 layer, vocab 40, tied) with every matrix
 * MLX-quantized at `bits`/32; tweak() may damage one tensor. */
static const char *tiny_cfg(const char *quant) {
    static char buf[1200];
    snprintf(buf, sizeof buf,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 64,"
             " \"intermediate_size\": 128, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
             " \"num_key_value_heads\": 2, \"vocab_size\": 40, \"max_position_embeddings\": 64,"
             " \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0, \"tie_word_embeddings\": true,"
             " \"torch_dtype\": \"bfloat16\"%s%s}", quant ? ", " : "", quant ? quant : "");
    return buf;
}

struct tiny {
    struct st_write_tensor t[64];
    char names[64][96];
    void *bufs[64];
    int n, nb;
};

static void *tbuf(struct tiny *m, size_t n) { return m->bufs[m->nb++] = xcalloc(n, 1); }

static void tiny_mlx(struct tiny *m, const char *name, int64_t rows, int64_t cols, int bits, int g) {
    uint32_t *w = tbuf(m, (size_t)(rows * cols * bits / 8));
    for (int64_t i = 0; i < rows * cols * bits / 32; i++) w[i] = (uint32_t)test_rng_next_(&rng);
    uint16_t *s = tbuf(m, (size_t)(rows * cols / g) * 2), *b = tbuf(m, (size_t)(rows * cols / g) * 2);
    for (int64_t i = 0; i < rows * cols / g; i++) s[i] = f32_to_bf16(0.01f), b[i] = f32_to_bf16(-0.05f);
    const char *suf[3] = { "weight", "scales", "biases" };
    for (int i = 0; i < 3; i++) {
        snprintf(m->names[m->n], sizeof m->names[0], "%s.%s", name, suf[i]);
        const void *data = i == 0 ? (const void *)w : i == 1 ? (const void *)s : (const void *)b;
        m->t[m->n] = (struct st_write_tensor){ m->names[m->n], i ? DT_BF16 : DT_U32, 2,
                                               { rows, i ? cols / g : cols * bits / 32 }, data };
        m->n++;
    }
}

static void tiny_vec(struct tiny *m, const char *name, int64_t n) {
    uint16_t *v = tbuf(m, (size_t)n * 2);
    for (int64_t i = 0; i < n; i++) v[i] = f32_to_bf16(1.0f);
    snprintf(m->names[m->n], sizeof m->names[0], "%s", name);
    m->t[m->n] = (struct st_write_tensor){ m->names[m->n], DT_BF16, 1, { n }, v };
    m->n++;
}

static const char *tiny_write(int bits, const char *quant_json, void (*tweak)(struct tiny *)) {
    struct tiny m = { .n = 0 };
    tiny_mlx(&m, "model.embed_tokens", 40, 64, bits, 32);
    static const struct { const char *n; int r, c; } mats[] = {
        { "self_attn.q_proj", 64, 64 }, { "self_attn.k_proj", 32, 64 }, { "self_attn.v_proj", 32, 64 },
        { "self_attn.o_proj", 64, 64 }, { "mlp.gate_proj", 128, 64 }, { "mlp.up_proj", 128, 64 },
        { "mlp.down_proj", 64, 128 },
    };
    char nm[96];
    for (size_t i = 0; i < ARRAY_LEN(mats); i++) {
        snprintf(nm, sizeof nm, "model.layers.0.%s", mats[i].n);
        tiny_mlx(&m, nm, mats[i].r, mats[i].c, bits, 32);
    }
    tiny_vec(&m, "model.layers.0.input_layernorm.weight", 64);
    tiny_vec(&m, "model.layers.0.post_attention_layernorm.weight", 64);
    tiny_vec(&m, "model.norm.weight", 64);
    if (tweak) tweak(&m);
    const char *dir = test_write_tmp("config.json", tiny_cfg(quant_json));
    char path[300], err[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    REQUIRE(st_write_file(path, m.t, (size_t)m.n, err, sizeof err) == 0);
    for (int i = 0; i < m.nb; i++) free(m.bufs[i]);
    return dir;
}

static int load(const char *dir, char *err, size_t errlen) {
    struct backend *bk;
    REQUIRE(backend_cpu_create(&bk, 1, "portable", NULL, 0) == 0);
    struct model *m = NULL;
    int rc = model_load(&m, dir, bk, NULL, err, errlen);
    if (rc == 0) {
        CHECK(m->layers[0].w_down.fmt == BK_W_AFFINE && m->layers[0].w_down.bits == 4);
        CHECK(m->tok_emb.fmt == BK_W_AFFINE && m->lm_head.data == m->tok_emb.data); /* tied: the same table */
        /* one forward runs */
        float logits[40];
        int32_t tok = 3, pos = 0, slot = 8, qs[2] = { 0, 1 }, sl = 1, bt = 1, row = 0;
        struct bk_kv kvl = { .k = xcalloc(2 * 16 * 2 * 16, 4), .v = xcalloc(2 * 16 * 2 * 16, 4), .dtype = DT_F32,
                             .num_blocks = 2, .block_size = 16, .n_kv_heads = 2, .head_dim = 16 };
        struct model_kv kv = { &kvl, 1 };
        struct model_batch b = { .n_tokens = 1, .tokens = &tok, .positions = &pos, .slot_mapping = &slot,
                                 .attn = { 1, qs, &sl, &bt, 1 }, .n_logits = 1, .logits_rows = &row };
        CHECK(model_forward(m, &b, &kv, logits, err, errlen) == 0);
        for (int i = 0; i < 40; i++) CHECK(isfinite(logits[i]));
        free(kvl.k), free(kvl.v);
    }
    model_free(m);
    bk_destroy(bk);
    return rc;
}

static const char *Q4 = "\"quantization\": {\"group_size\": 32, \"bits\": 4}";

TEST(load_mlx_tiny) {
    char err[512] = "";
    int rc = load(tiny_write(4, Q4, NULL), err, sizeof err);
    if (rc) fprintf(stderr, "  %s\n", err);
    CHECK(rc == 0);
}

static void bad_scales_shape(struct tiny *m) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->t[i].name, "model.layers.0.mlp.up_proj.scales") == 0) m->t[i].shape[1] = 1;
}
static void bad_weight_dtype(struct tiny *m) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->t[i].name, "model.layers.0.self_attn.k_proj.weight") == 0) {
            m->t[i].dtype = DT_I32; /* same bytes, wrong type */
        }
}
static void no_biases(struct tiny *m) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->t[i].name, "model.layers.0.mlp.down_proj.biases") == 0) m->t[i] = m->t[--m->n];
}

TEST(load_mlx_malformed_tensors_are_named) {
    char err[512] = "";
    CHECK(load(tiny_write(4, Q4, bad_scales_shape), err, sizeof err) != 0);
    CHECK(strstr(err, "model.layers.0.mlp.up_proj.scales") && strstr(err, "[128, 1]") && strstr(err, "[128, 2]") &&
          strstr(err, "model.safetensors"));
    CHECK(load(tiny_write(4, Q4, bad_weight_dtype), err, sizeof err) != 0);
    CHECK(strstr(err, "model.layers.0.self_attn.k_proj.weight") && strstr(err, "I32"));
    CHECK(load(tiny_write(4, Q4, no_biases), err, sizeof err) != 0);
    CHECK(strstr(err, "model.layers.0.mlp.down_proj.biases") && strstr(err, "missing"));
    /* config says 8 bits: the 4-bit weight has the wrong shape */
    CHECK(load(tiny_write(4, "\"quantization\": {\"group_size\": 32, \"bits\": 8}", NULL), err, sizeof err) != 0);
    CHECK(strstr(err, "model.embed_tokens.weight") && strstr(err, "[40, 8]") && strstr(err, "[40, 16]"));
    /* a module marked false that has scales */
    CHECK(load(tiny_write(4, "\"quantization\": {\"group_size\": 32, \"bits\": 4, "
                             "\"model.layers.0.mlp.gate_proj\": false}", NULL), err, sizeof err) != 0);
    CHECK(strstr(err, "model.layers.0.mlp.gate_proj") && strstr(err, "false"));
    /* quantized tensors without a quantization config */
    CHECK(load(tiny_write(4, NULL, NULL), err, sizeof err) != 0);
    if (!strstr(err, "quantization config")) fprintf(stderr, "  %s\n", err);
    CHECK(strstr(err, "U32") && strstr(err, "quantization config"));
}

TEST(load_awq_rejected_variants_before_tensors) {
    /* config only: the preflight must fail before any tensor is looked at */
    static const struct { const char *qc, *msg; } v[] = {
        { "\"version\": \"gemv\", \"w_bit\": 4, \"q_group_size\": 128", "version 'gemv'" },
        { "\"version\": \"gemm\", \"bits\": 3, \"group_size\": 128", "3-bit" },
        { "\"version\": \"gemm\", \"bits\": 4, \"group_size\": 64", "group size 64" },
        { "\"version\": \"gemm\", \"bits\": 4, \"group_size\": 128, \"zero_point\": false", "zero_point false" },
    };
    for (size_t i = 0; i < ARRAY_LEN(v); i++) {
        char q[300], err[512] = "";
        snprintf(q, sizeof q, "\"quantization_config\": {\"quant_method\": \"awq\", %s}", v[i].qc);
        const char *dir = test_write_tmp("config.json", tiny_cfg(q));
        CHECK(load(dir, err, sizeof err) != 0);
        CHECK(strstr(err, v[i].msg) != NULL);
    }
    char err[512] = "";
    const char *dir = test_write_tmp("config.json", tiny_cfg("\"quantization_config\": {\"quant_method\": \"gptq\", "
                                                             "\"bits\": 4, \"group_size\": 128}"));
    CHECK(load(dir, err, sizeof err) != 0);
    CHECK(strstr(err, "GPTQ") != NULL);
}

TEST_MAIN()
