/* test_safetensors.c — round trips through st_write_file / st_open_*, sharded
 * directories, and every malformed header the parser must refuse (with a
 * message naming the file and the tensor). Files go to a mkdtemp dir. */
#include "harness.h"
#include "io/safetensors.h"

#include <stdint.h>
#include <sys/stat.h>

static char tmpdir_[256];

static const char *tmpdir(void) {
    if (!tmpdir_[0]) {
        snprintf(tmpdir_, sizeof tmpdir_, "/tmp/vllmc_st_XXXXXX");
        REQUIRE(mkdtemp(tmpdir_));
    }
    return tmpdir_;
}

static void rm_rf(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", dir);
    tmpdir_[0] = 0; /* the next tmp dir is a fresh one */
}

static char *path_in(char *buf, size_t n, const char *dir, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

/* Write 8-byte little-endian hlen, the header bytes, then datalen bytes of
 * pattern data. hlen is given separately so tests can lie about it. */
static void write_raw(const char *path, uint64_t hlen, const char *hdr, size_t datalen) {
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    uint8_t lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (uint8_t)(hlen >> (8 * i));
    REQUIRE(fwrite(lb, 1, 8, f) == 8);
    REQUIRE(fwrite(hdr, 1, strlen(hdr), f) == strlen(hdr));
    for (size_t i = 0; i < datalen; i++) fputc((int)(i & 0xff), f);
    REQUIRE(fclose(f) == 0);
}

/* A file named `name` with the given header must fail to open; the message
 * must contain the file name and (if non-NULL) `tensor` and `also`. */
static void expect_fail(const char *name, const char *hdr, size_t datalen, const char *tensor, const char *also) {
    char p[512], err[512] = "";
    path_in(p, sizeof p, tmpdir(), name);
    write_raw(p, strlen(hdr), hdr, datalen);
    struct st_set *s = (struct st_set *)1;
    int rc = st_open_file(&s, p, err, sizeof err);
    CHECK(rc == -1);
    CHECK(s == NULL);
    CHECK(strstr(err, name) != NULL);
    if (tensor) CHECK(strstr(err, tensor) != NULL);
    if (also) CHECK(strstr(err, also) != NULL);
    if (rc != -1 || !strstr(err, name) || (tensor && !strstr(err, tensor)) || (also && !strstr(err, also)))
        fprintf(stderr, "  err: %s\n", err);
    st_close(rc == 0 ? s : NULL);
}

/* ---- round trips --------------------------------------------------------- */

TEST(roundtrip_dtypes) {
    float f32[6];
    uint16_t bf16[12], f16[5];
    int32_t i32[7];
    unsigned long long rng = 42;
    for (int i = 0; i < 6; i++) f32[i] = test_randf(&rng);
    for (int i = 0; i < 12; i++) bf16[i] = f32_to_bf16(test_randf(&rng));
    for (int i = 0; i < 5; i++) f16[i] = f32_to_f16(test_randf(&rng));
    for (int i = 0; i < 7; i++) i32[i] = (int32_t)(test_rng_next_(&rng) & 0xffffffff);
    float scalar = 3.5f;
    struct st_write_tensor w[] = {
        { "a.f32", DT_F32, 2, { 2, 3 }, f32 },
        { "b.bf16", DT_BF16, 3, { 2, 3, 2 }, bf16 },
        { "c.f16", DT_F16, 1, { 5 }, f16 },
        { "d.i32", DT_I32, 1, { 7 }, i32 },
        { "e.empty", DT_F32, 2, { 0, 4 }, NULL },
        { "f.scalar", DT_F32, 0, { 0 }, &scalar },
    };
    char p[512], err[512] = "";
    path_in(p, sizeof p, tmpdir(), "model.safetensors");
    REQUIRE(st_write_file(p, w, ARRAY_LEN(w), err, sizeof err) == 0);

    /* header length is padded to a multiple of 8 */
    FILE *f = fopen(p, "rb");
    REQUIRE(f);
    uint8_t lb[8];
    REQUIRE(fread(lb, 1, 8, f) == 8);
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | lb[i];
    CHECK(hl % 8 == 0);

    for (int pass = 0; pass < 2; pass++) {
        struct st_set *s = NULL;
        int rc = pass == 0 ? st_open_file(&s, p, err, sizeof err) : st_open_dir(&s, tmpdir(), err, sizeof err);
        if (rc) fprintf(stderr, "  %s\n", err);
        REQUIRE(rc == 0);
        CHECK(st_count(s) == ARRAY_LEN(w));
        size_t total = 0;
        for (size_t i = 0; i < ARRAY_LEN(w); i++) {
            const struct st_tensor *t = st_find(s, w[i].name);
            REQUIRE(t);
            CHECK(strcmp(t->name, w[i].name) == 0);
            CHECK(t->dtype == w[i].dtype);
            CHECK(t->ndim == w[i].ndim);
            size_t n = 1;
            for (int d = 0; d < t->ndim; d++) {
                CHECK(t->shape[d] == w[i].shape[d]);
                n *= (size_t)w[i].shape[d];
            }
            CHECK(t->nbytes == n * dtype_size(w[i].dtype));
            if (t->nbytes) CHECK(memcmp(t->data, w[i].data, t->nbytes) == 0);
            CHECK(strstr(t->file, "model.safetensors") != NULL);
            total += t->nbytes;
        }
        CHECK(st_total_bytes(s) == total);
        CHECK(st_find(s, "missing") == NULL);
        CHECK(st_find(s, "a.f3") == NULL);
        for (size_t i = 0; i < st_count(s); i++) CHECK(st_find(s, st_at(s, i)->name) == st_at(s, i));
        CHECK(st_at(s, st_count(s)) == NULL);
        st_close(s);
    }
    rm_rf(tmpdir());
}

TEST(many_tensors_hash) {
    enum { N = 2500 };
    static struct st_write_tensor w[N];
    static char names[N][64];
    static int32_t vals[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.weight", i);
        vals[i] = i * 7;
        w[i] = (struct st_write_tensor){ names[i], DT_I32, 1, { 1 }, &vals[i] };
    }
    char p[512], err[512] = "";
    path_in(p, sizeof p, tmpdir(), "big.safetensors");
    REQUIRE(st_write_file(p, w, N, err, sizeof err) == 0);
    struct st_set *s = NULL;
    REQUIRE(st_open_file(&s, p, err, sizeof err) == 0);
    CHECK(st_count(s) == N);
    for (int i = 0; i < N; i++) {
        const struct st_tensor *t = st_find(s, names[i]);
        REQUIRE(t);
        int32_t v;
        memcpy(&v, t->data, 4);
        CHECK(v == i * 7);
    }
    st_close(s);
    rm_rf(tmpdir());
}

TEST(parse_buffer_and_metadata) {
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},\"x\":{\"dtype\":\"U8\",\"shape\":[3],"
                      "\"data_offsets\":[1,4]},\"y\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    size_t hl = strlen(hdr);
    uint8_t buf[512];
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    memcpy(buf + 8 + hl, "\x09\x01\x02\x03", 4);
    struct st_set *s = NULL;
    char err[256] = "";
    REQUIRE(st_parse_buffer(&s, buf, 8 + hl + 4, "mem.safetensors", err, sizeof err) == 0);
    CHECK(st_count(s) == 2);
    CHECK(st_find(s, "__metadata__") == NULL);
    const struct st_tensor *x = st_find(s, "x");
    REQUIRE(x);
    CHECK(x->data == buf + 8 + hl + 1 && x->nbytes == 3);
    st_close(s);
    /* one byte short: x's end (4) is past the data (3 bytes) */
    CHECK(st_parse_buffer(&s, buf, 8 + hl + 3, "mem.safetensors", err, sizeof err) == -1);
    CHECK(strstr(err, "mem.safetensors") && strstr(err, "'x'"));
}

/* ---- sharded directories ------------------------------------------------- */

static void write_shard(const char *dir, const char *file, const char *const *names, const float *vals, int n) {
    struct st_write_tensor w[8];
    for (int i = 0; i < n; i++) w[i] = (struct st_write_tensor){ names[i], DT_F32, 1, { 1 }, &vals[i] };
    char p[512], err[256];
    path_in(p, sizeof p, dir, file);
    REQUIRE(st_write_file(p, w, (size_t)n, err, sizeof err) == 0);
}

static void write_text(const char *dir, const char *file, const char *text) {
    char p[512];
    path_in(p, sizeof p, dir, file);
    FILE *f = fopen(p, "w");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
}

static const char *names_a[] = { "embed", "layer.0" }, *names_b[] = { "layer.1", "norm" };
static const float vals_a[] = { 1, 2 }, vals_b[] = { 3, 4 };

TEST(sharded_index) {
    const char *d = tmpdir();
    write_shard(d, "model-00001-of-00002.safetensors", names_a, vals_a, 2);
    write_shard(d, "model-00002-of-00002.safetensors", names_b, vals_b, 2);
    write_text(d, "model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":16},\"weight_map\":{"
               "\"embed\":\"model-00001-of-00002.safetensors\",\"layer.0\":\"model-00001-of-00002.safetensors\","
               "\"layer.1\":\"model-00002-of-00002.safetensors\",\"norm\":\"model-00002-of-00002.safetensors\"}}");
    struct st_set *s = NULL;
    char err[512] = "";
    int rc = st_open_dir(&s, d, err, sizeof err);
    if (rc) fprintf(stderr, "  %s\n", err);
    REQUIRE(rc == 0);
    CHECK(st_count(s) == 4);
    CHECK(st_total_bytes(s) == 16);
    const char *all[] = { "embed", "layer.0", "layer.1", "norm" };
    for (int i = 0; i < 4; i++) {
        const struct st_tensor *t = st_find(s, all[i]);
        REQUIRE(t);
        float v;
        memcpy(&v, t->data, 4);
        CHECK(v == (float)(i + 1));
        CHECK(strstr(t->file, i < 2 ? "00001-of" : "00002-of") != NULL);
    }
    st_close(s);
    rm_rf(d);
}

TEST(sharded_glob_sorted) {
    const char *d = tmpdir();
    write_shard(d, "b.safetensors", names_b, vals_b, 2);
    write_shard(d, "a.safetensors", names_a, vals_a, 2);
    write_text(d, "notes.txt", "not a shard");
    struct st_set *s = NULL;
    char err[512] = "";
    REQUIRE(st_open_dir(&s, d, err, sizeof err) == 0);
    CHECK(st_count(s) == 4);
    CHECK(strstr(st_at(s, 0)->file, "a.safetensors") != NULL); /* sorted: a before b */
    CHECK(strstr(st_find(s, "norm")->file, "b.safetensors") != NULL);
    st_close(s);
    rm_rf(d);
}

TEST(dir_empty_or_missing) {
    const char *d = tmpdir();
    struct st_set *s = NULL;
    char err[512] = "";
    CHECK(st_open_dir(&s, d, err, sizeof err) == -1 && s == NULL);
    CHECK(strstr(err, d) != NULL);
    char p[512];
    path_in(p, sizeof p, d, "nope");
    CHECK(st_open_dir(&s, p, err, sizeof err) == -1);
    CHECK(strstr(err, "nope") != NULL);
    CHECK(st_open_file(&s, p, err, sizeof err) == -1);
    CHECK(strstr(err, "nope") != NULL);
    rm_rf(d);
}

TEST(dup_across_shards_glob) {
    const char *d = tmpdir();
    const char *n2[] = { "layer.0", "other" };
    write_shard(d, "a.safetensors", names_a, vals_a, 2);
    write_shard(d, "b.safetensors", n2, vals_b, 2);
    struct st_set *s = NULL;
    char err[512] = "";
    CHECK(st_open_dir(&s, d, err, sizeof err) == -1 && s == NULL);
    CHECK(strstr(err, "b.safetensors") && strstr(err, "a.safetensors") && strstr(err, "'layer.0'"));
    rm_rf(d);
}

TEST(dup_across_shards_index) {
    const char *d = tmpdir();
    const char *n2[] = { "layer.0", "norm" };
    write_shard(d, "s1.safetensors", names_a, vals_a, 2);
    write_shard(d, "s2.safetensors", n2, vals_b, 2);
    write_text(d, "model.safetensors.index.json",
               "{\"weight_map\":{\"embed\":\"s1.safetensors\",\"layer.0\":\"s1.safetensors\","
               "\"norm\":\"s2.safetensors\"}}");
    struct st_set *s = NULL;
    char err[512] = "";
    CHECK(st_open_dir(&s, d, err, sizeof err) == -1);
    CHECK(strstr(err, "s2.safetensors") && strstr(err, "'layer.0'"));
    rm_rf(d);
}

TEST(index_missing_shard_file) {
    const char *d = tmpdir();
    write_shard(d, "s1.safetensors", names_a, vals_a, 2);
    write_text(d, "model.safetensors.index.json",
               "{\"weight_map\":{\"embed\":\"s1.safetensors\",\"layer.0\":\"s1.safetensors\","
               "\"norm\":\"s9.safetensors\"}}");
    struct st_set *s = NULL;
    char err[512] = "";
    CHECK(st_open_dir(&s, d, err, sizeof err) == -1);
    CHECK(strstr(err, "s9.safetensors") != NULL);
    rm_rf(d);
}

TEST(index_tensor_absent_from_shard) {
    const char *d = tmpdir();
    write_shard(d, "s1.safetensors", names_a, vals_a, 2);
    write_shard(d, "s2.safetensors", names_b, vals_b, 2);
    write_text(d, "model.safetensors.index.json",
               "{\"weight_map\":{\"embed\":\"s1.safetensors\",\"lm_head\":\"s2.safetensors\"}}");
    struct st_set *s = NULL;
    char err[512] = "";
    CHECK(st_open_dir(&s, d, err, sizeof err) == -1);
    CHECK(strstr(err, "'lm_head'") && strstr(err, "s2.safetensors") && strstr(err, "index.json"));
    /* mapped to the wrong shard */
    write_text(d, "model.safetensors.index.json",
               "{\"weight_map\":{\"embed\":\"s2.safetensors\",\"norm\":\"s2.safetensors\"}}");
    CHECK(st_open_dir(&s, d, err, sizeof err) == -1);
    CHECK(strstr(err, "'embed'") && strstr(err, "s2.safetensors"));
    rm_rf(d);
}

TEST(index_malformed) {
    const char *d = tmpdir();
    write_shard(d, "s1.safetensors", names_a, vals_a, 2);
    struct st_set *s = NULL;
    char err[512] = "";
    write_text(d, "model.safetensors.index.json", "{\"weight_map\":");
    CHECK(st_open_dir(&s, d, err, sizeof err) == -1 && strstr(err, "index.json"));
    write_text(d, "model.safetensors.index.json", "{\"nothing\":1}");
    CHECK(st_open_dir(&s, d, err, sizeof err) == -1 && strstr(err, "weight_map"));
    write_text(d, "model.safetensors.index.json", "{\"weight_map\":{\"embed\":\"../s1.safetensors\"}}");
    CHECK(st_open_dir(&s, d, err, sizeof err) == -1 && strstr(err, "'embed'"));
    write_text(d, "model.safetensors.index.json", "{\"weight_map\":{\"embed\":7}}");
    CHECK(st_open_dir(&s, d, err, sizeof err) == -1 && strstr(err, "'embed'"));
    rm_rf(d);
}

/* ---- malformed single files ---------------------------------------------- */

#define T1(body) "{\"t\":{" body "}}"

TEST(bad_truncated_file) {
    char p[512], err[256] = "";
    path_in(p, sizeof p, tmpdir(), "trunc.safetensors");
    FILE *f = fopen(p, "wb");
    REQUIRE(f);
    fwrite("\x10\x00\x00", 1, 3, f);
    fclose(f);
    struct st_set *s = NULL;
    CHECK(st_open_file(&s, p, err, sizeof err) == -1 && strstr(err, "trunc.safetensors"));
    /* empty file too */
    f = fopen(p, "wb");
    REQUIRE(f);
    fclose(f);
    CHECK(st_open_file(&s, p, err, sizeof err) == -1 && strstr(err, "trunc.safetensors"));
    /* header present, data cut short */
    expect_fail("cut.safetensors", T1("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]"), 10, "'t'", NULL);
    rm_rf(tmpdir());
}

TEST(bad_header_length) {
    char p[512], err[256] = "";
    path_in(p, sizeof p, tmpdir(), "hlen.safetensors");
    struct st_set *s = NULL;
    write_raw(p, 1000, "{}", 0); /* past end */
    CHECK(st_open_file(&s, p, err, sizeof err) == -1 && strstr(err, "hlen.safetensors"));
    write_raw(p, UINT64_MAX, "{}", 0); /* wraps if added carelessly */
    CHECK(st_open_file(&s, p, err, sizeof err) == -1 && strstr(err, "hlen.safetensors"));
    write_raw(p, 0, "{}", 0); /* zero */
    CHECK(st_open_file(&s, p, err, sizeof err) == -1 && strstr(err, "hlen.safetensors"));
    rm_rf(tmpdir());
}

TEST(bad_json) {
    expect_fail("badjson.safetensors", "{\"t\":{\"dtype\":", 0, NULL, NULL);
    expect_fail("trail.safetensors", "{} x", 0, NULL, NULL);
    expect_fail("array.safetensors", "[1,2,3]", 0, NULL, "object");
    expect_fail("str.safetensors", "\"hello\"", 0, NULL, NULL);
    expect_fail("entry.safetensors", "{\"t\":5}", 0, "'t'", NULL);
    expect_fail("meta.safetensors", "{\"__metadata__\":{\"k\":1}}", 0, "'k'", NULL);
    expect_fail("meta2.safetensors", "{\"__metadata__\":[]}", 0, "__metadata__", NULL);
    rm_rf(tmpdir());
}

TEST(bad_offsets) {
    expect_fail("overlap.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                16, "'a'", "'b'");
    expect_fail("same.safetensors",
                "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},"
                "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
                16, "'a'", "'b'");
    expect_fail("range.safetensors", T1("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]"), 16, "'t'",
                "past the end");
    expect_fail("neg.safetensors", T1("\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[-4,0]"), 16, "'t'", NULL);
    expect_fail("rev.safetensors", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]"), 16, "'t'", NULL);
    expect_fail("huge.safetensors",
                T1("\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9223372036854775806,9223372036854775807]"),
                16, "'t'", NULL);
    expect_fail("noff.safetensors", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]"), 16, "'t'", NULL);
    expect_fail("fltoff.safetensors", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]"), 16, "'t'",
                NULL);
    rm_rf(tmpdir());
}

TEST(adjacent_and_zero_size_ok) {
    /* touching ranges, a zero-size tensor at an occupied offset, a gap */
    const char *hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"z\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[2,2]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                      "\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[10,12]}}";
    char p[512], err[512] = "";
    path_in(p, sizeof p, tmpdir(), "ok.safetensors");
    write_raw(p, strlen(hdr), hdr, 12);
    struct st_set *s = NULL;
    int rc = st_open_file(&s, p, err, sizeof err);
    if (rc) fprintf(stderr, "  %s\n", err);
    CHECK(rc == 0);
    if (!rc) CHECK(st_count(s) == 4 && st_find(s, "z")->nbytes == 0);
    st_close(s);
    rm_rf(tmpdir());
}

TEST(bad_dtype) {
    expect_fail("dtype.safetensors", T1("\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,1]"), 4, "'t'",
                "Q4_K");
    expect_fail("dtype2.safetensors", T1("\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,1]"), 4, "'t'", NULL);
    expect_fail("dtype3.safetensors", T1("\"shape\":[1],\"data_offsets\":[0,1]"), 4, "'t'", NULL);
    rm_rf(tmpdir());
}

TEST(bad_shape) {
    expect_fail("mismatch.safetensors", T1("\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,8]"), 16, "'t'",
                NULL);
    expect_fail("negdim.safetensors", T1("\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]"), 16, "'t'", NULL);
    expect_fail("fltdim.safetensors", T1("\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]"), 16, "'t'",
                NULL);
    expect_fail("strdim.safetensors", T1("\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,2]"), 16, "'t'",
                NULL);
    expect_fail("noshape.safetensors", T1("\"dtype\":\"U8\",\"shape\":3,\"data_offsets\":[0,3]"), 16, "'t'", NULL);
    expect_fail("ndims.safetensors",
                T1("\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]"), 16, "'t'", NULL);
    expect_fail("ovf.safetensors",
                T1("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]"), 16, "'t'",
                "overflow");
    expect_fail("ovf2.safetensors",
                T1("\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]"), 16, "'t'",
                "overflow");
    rm_rf(tmpdir());
}

TEST(shape_overflow_then_zero_ok) {
    /* a zero dim after huge ones: 0 elements, not an overflow */
    const char *hdr = T1("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16,0],\"data_offsets\":[0,0]");
    char p[512], err[512] = "";
    path_in(p, sizeof p, tmpdir(), "zero.safetensors");
    write_raw(p, strlen(hdr), hdr, 0);
    struct st_set *s = NULL;
    CHECK(st_open_file(&s, p, err, sizeof err) == 0);
    st_close(s);
    rm_rf(tmpdir());
}

TEST(bad_duplicate_in_header) {
    expect_fail("dup.safetensors",
                "{\"model.norm.weight\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                "\"model.norm.weight\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                4, "model.norm.weight", NULL);
    rm_rf(tmpdir());
}

TEST(write_rejects_duplicates) {
    float v = 1;
    struct st_write_tensor w[] = { { "x", DT_F32, 1, { 1 }, &v }, { "x", DT_F32, 1, { 1 }, &v } };
    char p[512], err[256] = "";
    path_in(p, sizeof p, tmpdir(), "w.safetensors");
    CHECK(st_write_file(p, w, 2, err, sizeof err) == -1 && strstr(err, "'x'"));
    rm_rf(tmpdir());
}

TEST_MAIN()
