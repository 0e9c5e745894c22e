/* test_tokenizer.c — src/text/tokenizer against Hugging Face tokenizers.
 *
 * Expected values come from the reference, never from this code:
 *  - real_*: nine real tokenizer files (tools/tokenizers/fetch.sh puts them in
 *    tools/tokenizers/cache/; skipped with a message when absent) and the ids
 *    and strings that tokenizers 0.22.2 gives for every text of
 *    tests/fixtures/tokenizers/corpus.json (tools/tokenizers/gen_golden.js):
 *    encode with and without special tokens, decode with and without
 *    skip_special_tokens, decode of id sequences encode never gives (random
 *    ids, every prefix of a multi-byte text); streaming decode must
 *    concatenate to the full decode; and 1500 texts of random code points
 *    from every Unicode block (soup.json), where the Unicode versions of the
 *    regex and normalization tables show (see src/text/tok_unicode.h).
 *  - small_*: hand-written tokenizer.json files (tests/fixtures/tokenizers/
 *    small/, made with their reference ids by tools/tokenizers/gen_small.js)
 *    for the parts the real files do not reach; no network needed.
 *  - errors, special tokens, chat templates, concurrent encodes. */
#include "harness.h"
#include "text/tok_internal.h"
#include "text/tokenizer.h"

#include <jansson.h>
#include <pthread.h>
#include <sys/stat.h>

#define FIX "tests/fixtures/tokenizers"

static const char *cache_dir(void) {
    const char *d = getenv("VLLMC_TOKENIZER_CACHE");
    return d ? d : "tools/tokenizers/cache";
}

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!j) fprintf(stderr, "  %s: %s\n", path, je.text);
    return j;
}

static json_t *load_gz(const char *path) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
    FILE *f = popen(cmd, "r");
    if (!f) return NULL;
    json_error_t je;
    json_t *j = json_loadf(f, JSON_ALLOW_NUL, &je);
    pclose(f);
    if (!j) fprintf(stderr, "  %s: %s\n", path, je.text);
    return j;
}

static int ids_of(json_t *arr, int32_t **out) {
    int n = (int)json_array_size(arr);
    *out = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) (*out)[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return n;
}

static void show_ids(const char *what, const int32_t *a, int n) {
    fprintf(stderr, "    %s (%d):", what, n);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", a[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

static void show_str(const char *what, const char *s, size_t n) {
    fprintf(stderr, "    %s: \"", what);
    for (size_t i = 0; i < n && i < 200; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fprintf(stderr, "\\n");
        else if (c < 0x20) fprintf(stderr, "\\x%02x", c);
        else fputc(c, stderr);
    }
    fprintf(stderr, n > 200 ? "...\"\n" : "\"\n");
}

/* encode(text) == want; prints the first few failures */
static bool check_encode(const struct tokenizer *t, const char *text, size_t len, int special, json_t *want,
                         const char *label, int *shown) {
    int32_t *ids = NULL, *w = NULL;
    int n = 0;
    char err[256] = "";
    int rc = tokenizer_encode(t, text, len, special, &ids, &n, err, sizeof err);
    int nw = ids_of(want, &w);
    bool ok = rc == 0 && n == nw && (n == 0 || !memcmp(ids, w, sizeof(int32_t) * (size_t)n));
    if (!ok && (*shown)++ < 5) {
        fprintf(stderr, "  %s: encode(special=%d) mismatch %s\n", label, special, err);
        show_str("text", text, len);
        show_ids("got ", ids, n);
        show_ids("want", w, nw);
    }
    free(ids);
    free(w);
    return ok;
}

static bool check_decode(const struct tokenizer *t, const int32_t *ids, int n, int skip, const char *want,
                         size_t wantlen, const char *label, int *shown) {
    size_t len = 0;
    char *s = tokenizer_decode(t, ids, n, skip, &len);
    bool ok = s && len == wantlen && !memcmp(s, want, len);
    if (!ok && (*shown)++ < 5) {
        fprintf(stderr, "  %s: decode(skip=%d) mismatch\n", label, skip);
        show_ids("ids ", ids, n);
        show_str("got ", s ? s : "(NULL)", s ? len : 6);
        show_str("want", want, wantlen);
    }
    free(s);
    return ok;
}

/* Stream all ids; the pieces + flush must be want. Pieces must be valid UTF-8. */
static bool check_stream(const struct tokenizer *t, const int32_t *ids, int n, int skip, const char *want,
                         size_t wantlen, const char *label, int *shown) {
    struct tokenizer_stream *st = tokenizer_stream_new(t, skip, 1);
    struct tbuf acc = { 0 };
    bool utf8_ok = true;
    for (int i = 0; i < n; i++) {
        const char *p;
        size_t l;
        if (tokenizer_stream_push(st, ids[i], &p, &l)) { utf8_ok = false; break; }
        if (tok_utf8_valid_prefix(p, l) != l) utf8_ok = false;
        tbuf_put(&acc, p, l);
    }
    const char *p;
    size_t l;
    tokenizer_stream_flush(st, &p, &l);
    tbuf_put(&acc, p, l);
    tokenizer_stream_free(st);
    bool ok = utf8_ok && acc.n == wantlen && (!wantlen || !memcmp(acc.p, want, wantlen));
    if (!ok && (*shown)++ < 5) {
        fprintf(stderr, "  %s: stream(skip=%d) mismatch (utf8 ok %d)\n", label, skip, utf8_ok);
        show_ids("ids ", ids, n);
        show_str("got ", acc.p ? acc.p : "", acc.n);
        show_str("want", want, wantlen);
    }
    free(acc.p);
    return ok;
}

static struct tokenizer *load_real(const char *name) {
    char dir[512], err[512];
    snprintf(dir, sizeof dir, "%s/%s", cache_dir(), name);
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    struct stat st;
    if (stat(p, &st) != 0) SKIP("real tokenizer files not fetched: run bash tools/tokenizers/fetch.sh");
    struct tokenizer *t = NULL;
    int rc = tokenizer_load(&t, dir, err, sizeof err);
    if (rc) fprintf(stderr, "  load %s: %s\n", dir, err);
    REQUIRE(rc == 0 && t);
    return t;
}

static void run_real(const char *name) {
    struct tokenizer *t = load_real(name);
    char gp[256];
    snprintf(gp, sizeof gp, FIX "/%s.json.gz", name);
    json_t *g = load_gz(gp), *corpus = load_json(FIX "/corpus.json");
    REQUIRE(g && corpus);
    REQUIRE(tokenizer_n_vocab(t) == (int)json_integer_value(json_object_get(g, "n_vocab")));
    json_t *enc = json_object_get(g, "encode"), *encs = json_object_get(g, "encode_special");
    json_t *dec = json_object_get(g, "decode"), *decs = json_object_get(g, "decode_skip");
    size_t nt = json_array_size(corpus);
    REQUIRE(json_array_size(enc) == nt && json_array_size(encs) == nt);
    int bad_enc = 0, bad_dec = 0, bad_stream = 0, shown_e = 0, shown_d = 0, shown_s = 0;
    for (size_t i = 0; i < nt; i++) {
        json_t *tx = json_array_get(corpus, i);
        const char *text = json_string_value(tx);
        size_t len = json_string_length(tx);
        char label[64];
        snprintf(label, sizeof label, "%s corpus[%zu]", name, i);
        bad_enc += !check_encode(t, text, len, 0, json_array_get(enc, i), label, &shown_e);
        bad_enc += !check_encode(t, text, len, 1, json_array_get(encs, i), label, &shown_e);
        int32_t *ids;
        int n = ids_of(json_array_get(encs, i), &ids);
        for (int skip = 0; skip < 2; skip++) {
            json_t *w = json_array_get(skip ? decs : dec, i);
            bad_dec += !check_decode(t, ids, n, skip, json_string_value(w), json_string_length(w), label, &shown_d);
            bad_stream += !check_stream(t, ids, n, skip, json_string_value(w), json_string_length(w), label, &shown_s);
        }
        free(ids);
    }
    json_t *cases = json_object_get(g, "decode_cases");
    int bad_cases = 0, bad_case_stream = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        int32_t *ids;
        int n = ids_of(json_object_get(c, "ids"), &ids);
        char label[64];
        snprintf(label, sizeof label, "%s decode_cases[%zu]", name, i);
        for (int skip = 0; skip < 2; skip++) {
            json_t *w = json_object_get(c, skip ? "text_skip" : "text");
            bad_cases += !check_decode(t, ids, n, skip, json_string_value(w), json_string_length(w), label, &shown_d);
            bad_case_stream += !check_stream(t, ids, n, skip, json_string_value(w), json_string_length(w), label, &shown_s);
        }
        free(ids);
    }
    /* Unicode soup: code points of every block, where table versions differ */
    json_t *soup = load_json(FIX "/soup.json"), *soup_ids = json_object_get(g, "soup");
    REQUIRE(soup && json_array_size(soup) == json_array_size(soup_ids));
    int bad_soup = 0, shown_u = 0;
    for (size_t i = 0; i < json_array_size(soup); i++) {
        json_t *tx = json_array_get(soup, i);
        char label[64];
        snprintf(label, sizeof label, "%s soup[%zu]", name, i);
        bad_soup += !check_encode(t, json_string_value(tx), json_string_length(tx), 1, json_array_get(soup_ids, i),
                                  label, &shown_u);
    }
    json_decref(soup);
    json_t *sp = json_object_get(g, "specials");
    int bad_sp = 0;
    for (size_t i = 0; i < json_array_size(sp); i++) {
        json_t *e = json_array_get(sp, i);
        int32_t id = (int32_t)json_integer_value(json_array_get(e, 0));
        int want = (int)json_integer_value(json_array_get(e, 1));
        const char *tok = json_string_value(json_array_get(e, 2));
        const char *got = tokenizer_id_to_token(t, id);
        bool ok = tokenizer_is_special(t, id) == want && ((!tok && !got) || (tok && got && !strcmp(tok, got)));
        if (tok) ok = ok && tokenizer_token_to_id(t, tok) == id;
        if (!ok && bad_sp++ < 5) fprintf(stderr, "  %s: id %d special %d token %s\n", name, id, want, tok ? tok : "-");
    }
    if (bad_enc || bad_dec || bad_stream || bad_cases || bad_case_stream || bad_sp || bad_soup)
        fprintf(stderr, "  %s: %d encode, %d decode, %d stream, %d decode-case, %d decode-case stream, %d token, "
                "%d soup mismatches (of %zu texts, %zu cases)\n", name, bad_enc, bad_dec, bad_stream, bad_cases,
                bad_case_stream, bad_sp, bad_soup, nt, json_array_size(cases));
    CHECK(bad_enc == 0);
    CHECK(bad_dec == 0);
    CHECK(bad_stream == 0);
    CHECK(bad_cases == 0);
    CHECK(bad_case_stream == 0);
    CHECK(bad_sp == 0);
    CHECK(bad_soup == 0);
    json_decref(g);
    json_decref(corpus);
    tokenizer_free(t);
}

TEST(real_qwen3) { run_real("qwen3"); }
TEST(real_llama3) { run_real("llama3"); }
TEST(real_gemma3) { run_real("gemma3"); }
TEST(real_gptoss) { run_real("gptoss"); }
TEST(real_deepseek_v3) { run_real("deepseek_v3"); }
TEST(real_llama2) { run_real("llama2"); }
TEST(real_llama3_1) { run_real("llama3_1"); }
TEST(real_claude) { run_real("claude"); }
TEST(real_gpt35turbo) { run_real("gpt35turbo"); }

/* Special tokens and chat templates as the files state them. */
TEST(real_special_tokens_and_templates) {
    struct tokenizer *t = load_real("qwen3");
    char p[512];
    snprintf(p, sizeof p, "%s/qwen3/tokenizer_config.json", cache_dir());
    json_t *cfg = load_json(p);
    REQUIRE(cfg);
    CHECK(tokenizer_special_token(t, "bos_token") == NULL); /* "bos_token": null */
    const char *eos = tokenizer_special_token(t, "eos_token");
    CHECK(eos && !strcmp(eos, json_string_value(json_object_get(cfg, "eos_token"))));
    const char *pad = tokenizer_special_token(t, "pad_token");
    CHECK(pad && !strcmp(pad, json_string_value(json_object_get(cfg, "pad_token"))));
    CHECK(tokenizer_special_id(t, "eos_token") == tokenizer_token_to_id(t, eos));
    CHECK(tokenizer_special_id(t, "eos_token") >= 0);
    CHECK(tokenizer_special_token(t, "no_such_token") == NULL);
    const char *ct = tokenizer_chat_template(t, NULL);
    CHECK(ct && !strcmp(ct, json_string_value(json_object_get(cfg, "chat_template"))));
    CHECK(tokenizer_chat_template(t, "tool_use") == NULL);
    json_decref(cfg);
    tokenizer_free(t);

    t = load_real("gemma3"); /* {"content": ...}-free strings, extra_special_tokens */
    snprintf(p, sizeof p, "%s/gemma3/tokenizer_config.json", cache_dir());
    cfg = load_json(p);
    REQUIRE(cfg);
    const char *img = tokenizer_special_token(t, "image_token");
    CHECK(img && !strcmp(img, json_string_value(json_object_get(cfg, "image_token"))));
    const char *bos = tokenizer_special_token(t, "bos_token");
    CHECK(bos && !strcmp(bos, json_string_value(json_object_get(cfg, "bos_token"))));
    json_decref(cfg);
    tokenizer_free(t);

    t = load_real("deepseek_v3"); /* {"content": ...} form */
    snprintf(p, sizeof p, "%s/deepseek_v3/tokenizer_config.json", cache_dir());
    cfg = load_json(p);
    REQUIRE(cfg);
    bos = tokenizer_special_token(t, "bos_token");
    CHECK(bos && !strcmp(bos, json_string_value(json_object_get(json_object_get(cfg, "bos_token"), "content"))));
    CHECK(tokenizer_special_token(t, "unk_token") == NULL);
    json_decref(cfg);
    tokenizer_free(t);
}

struct thr_arg { const struct tokenizer *t; json_t *corpus, *want; int bad; };
static void *thr_main(void *p) {
    struct thr_arg *a = p;
    int shown = 0;
    for (int rep = 0; rep < 3; rep++)
        for (size_t i = 0; i < json_array_size(a->corpus); i++) {
            json_t *tx = json_array_get(a->corpus, i);
            a->bad += !check_encode(a->t, json_string_value(tx), json_string_length(tx), 1,
                                    json_array_get(a->want, i), "thread", &shown);
        }
    return NULL;
}

/* One tokenizer, four threads encoding at once (the word cache is shared). */
TEST(real_concurrent_encode) {
    struct tokenizer *t = load_real("llama3");
    json_t *g = load_gz(FIX "/llama3.json.gz"), *corpus = load_json(FIX "/corpus.json");
    REQUIRE(g && corpus);
    struct thr_arg a[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct thr_arg){ t, corpus, json_object_get(g, "encode_special"), 0 };
        REQUIRE(pthread_create(&th[i], NULL, thr_main, &a[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(a[i].bad == 0);
    }
    json_decref(g);
    json_decref(corpus);
    tokenizer_free(t);
}

/* Byte-level tokenizers without a normalizer lose nothing: decode(encode(x))
 * is x for any valid UTF-8 (the reference here is the input itself), and the
 * stream gives the same text. Random code points from many scripts, specials
 * text and whitespace, 300 texts per tokenizer. */
static void run_roundtrip(const char *name) {
    struct tokenizer *t = load_real(name);
    static const uint32_t ranges[][2] = { { 0x20, 0x7e }, { 0x09, 0x0d }, { 0xa0, 0x2ff }, { 0x300, 0x36f },
                                          { 0x400, 0x4ff }, { 0x600, 0x6ff }, { 0x900, 0x97f }, { 0xe00, 0xe7f },
                                          { 0x1100, 0x11ff }, { 0x180e, 0x180e }, { 0x2000, 0x206f }, { 0x3000, 0x30ff },
                                          { 0x4e00, 0x9fff }, { 0xac00, 0xd7a3 }, { 0xfe00, 0xffff }, { 0x1f300, 0x1faff },
                                          { 0x10000, 0x10ffff } };
    static const char *snippets[] = { "<|endoftext|>", "<|im_start|>", "<s>", " 's", "'ll", "\n\n", "   ", "1234" };
    unsigned long long rng = 0x1234567ull + (unsigned long long)strlen(name);
    int bad = 0, shown = 0;
    for (int k = 0; k < 300; k++) {
        struct tbuf b = { 0 };
        int n = (int)(test_rng_next_(&rng) % 60);
        for (int i = 0; i < n; i++) {
            unsigned long long r = test_rng_next_(&rng);
            if (r % 9 == 0) { tbuf_put(&b, snippets[(r >> 8) % 8], strlen(snippets[(r >> 8) % 8])); continue; }
            const uint32_t *rg = ranges[(r >> 4) % ARRAY_LEN(ranges)];
            uint32_t c = rg[0] + (uint32_t)((r >> 16) % (rg[1] - rg[0] + 1));
            if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
            char u[4];
            tbuf_put(&b, u, (size_t)tok_utf8_encode(c, u));
        }
        int32_t *ids;
        int ni;
        char err[256];
        const char *txt = b.p ? b.p : "";
        REQUIRE(tokenizer_encode(t, txt, b.n, 0, &ids, &ni, err, sizeof err) == 0);
        char label[64];
        snprintf(label, sizeof label, "%s roundtrip %d", name, k);
        if (!check_decode(t, ids, ni, 0, txt, b.n, label, &shown)) bad++;
        else if (!check_stream(t, ids, ni, 0, txt, b.n, label, &shown)) bad++;
        free(ids);
        free(b.p);
    }
    CHECK(bad == 0);
    tokenizer_free(t);
}

TEST(real_roundtrip_llama3) { run_roundtrip("llama3"); }
TEST(real_roundtrip_gptoss) { run_roundtrip("gptoss"); }
TEST(real_roundtrip_deepseek_v3) { run_roundtrip("deepseek_v3"); }
TEST(real_roundtrip_gpt35turbo) { run_roundtrip("gpt35turbo"); }

/* ---- hand-written tokenizers (no network) ---------------------------------- */

static void run_small(const char *name) {
    char dir[256], err[512];
    snprintf(dir, sizeof dir, FIX "/small/%s", name);
    struct tokenizer *t = NULL;
    int rc = tokenizer_load(&t, dir, err, sizeof err);
    if (rc) fprintf(stderr, "  load %s: %s\n", dir, err);
    REQUIRE(rc == 0);
    char gp[300];
    snprintf(gp, sizeof gp, "%s/golden.json", dir);
    json_t *g = load_json(gp);
    REQUIRE(g);
    json_t *cases = json_object_get(g, "cases");
    int bad = 0, se = 0, sd = 0, ss = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        json_t *tx = json_object_get(c, "text");
        char label[300];
        snprintf(label, sizeof label, "%s case %zu", name, i);
        bad += !check_encode(t, json_string_value(tx), json_string_length(tx), 0, json_object_get(c, "ids"), label, &se);
        bad += !check_encode(t, json_string_value(tx), json_string_length(tx), 1, json_object_get(c, "ids_special"),
                             label, &se);
        int32_t *ids;
        int n = ids_of(json_object_get(c, "ids_special"), &ids);
        for (int skip = 0; skip < 2; skip++) {
            json_t *w = json_object_get(c, skip ? "decode_skip" : "decode");
            bad += !check_decode(t, ids, n, skip, json_string_value(w), json_string_length(w), label, &sd);
            bad += !check_stream(t, ids, n, skip, json_string_value(w), json_string_length(w), label, &ss);
        }
        free(ids);
    }
    CHECK(bad == 0);
    json_decref(g);
    tokenizer_free(t);
}

TEST(small_metaspace_first) { run_small("metaspace_first"); }
TEST(small_metaspace_always) { run_small("metaspace_always"); }
TEST(small_metaspace_never) { run_small("metaspace_never"); }
TEST(small_normalizers) { run_small("normalizers"); }
TEST(small_nfkd_strip) { run_small("nfkd_strip"); }
TEST(small_nfd_whitespace_split) { run_small("nfd_whitespace_split"); }
TEST(small_splits) { run_small("splits"); }
TEST(small_added_tokens) { run_small("added_tokens"); }
TEST(small_subword_prefix) { run_small("subword_prefix"); }
TEST(small_roberta) { run_small("roberta"); }
TEST(small_bytelevel_regex) { run_small("bytelevel_regex"); }
TEST(small_regex_space) { run_small("regex_space"); }
TEST(small_regex_nonspace) { run_small("regex_nonspace"); }
TEST(small_regex_word) { run_small("regex_word"); }
TEST(small_regex_hex) { run_small("regex_hex"); }
TEST(small_regex_interval_plus) { run_small("regex_interval_plus"); }
TEST(small_regex_anchors) { run_small("regex_anchors"); }
TEST(small_regex_empty) { run_small("regex_empty"); }
TEST(small_regex_case) { run_small("regex_case"); }
TEST(small_regex_class) { run_small("regex_class"); }
TEST(small_regex_unicode_escape) { run_small("regex_unicode_escape"); }

/* ---- errors -------------------------------------------------------------------- */

static const char *MINI =
    "{\"version\":\"1.0\",\"added_tokens\":[],\"normalizer\":null,\"pre_tokenizer\":null,"
    "\"post_processor\":null,\"decoder\":null,"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}}";

TEST(load_missing_file) {
    struct tokenizer *t = (struct tokenizer *)1;
    char err[512] = "";
    CHECK(tokenizer_load(&t, "/nonexistent/dir", err, sizeof err) == -1);
    CHECK(t == NULL);
    CHECK(strstr(err, "/nonexistent/dir/tokenizer.json") != NULL);
}

TEST(load_malformed_json) {
    const char *dir = test_write_tmp("tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 0,}}}");
    struct tokenizer *t = NULL;
    char err[512] = "";
    CHECK(tokenizer_load(&t, dir, err, sizeof err) == -1);
    CHECK(strstr(err, "tokenizer.json") != NULL);
    CHECK(strstr(err, "line 1") != NULL);
    if (!strstr(err, "line 1")) fprintf(stderr, "  err: %s\n", err);
}

TEST(load_bad_merge_names_path) {
    const char *dir = test_write_tmp("tokenizer.json",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}");
    struct tokenizer *t = NULL;
    char err[512] = "";
    CHECK(tokenizer_load(&t, dir, err, sizeof err) == -1);
    CHECK(strstr(err, "tokenizer.json") && strstr(err, "model.merges[0]") && strstr(err, "\"ab\""));
    fprintf(stderr, "  (message: %s)\n", err);
}

TEST(load_unsupported_names_path) {
    const char *dir = test_write_tmp("tokenizer.json",
        "{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"UnicodeScripts\"}]},"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}");
    struct tokenizer *t = NULL;
    char err[512] = "";
    CHECK(tokenizer_load(&t, dir, err, sizeof err) == -1);
    CHECK(strstr(err, "pre_tokenizer.pretokenizers[0]") && strstr(err, "UnicodeScripts"));
}

TEST(load_bad_config_names_file) {
    const char *dir = test_write_tmp("tokenizer.json", MINI);
    char p[300];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(p, "w");
    REQUIRE(f);
    fputs("{\"chat_template\": [1, 2]}", f);
    fclose(f);
    struct tokenizer *t = NULL;
    char err[512] = "";
    CHECK(tokenizer_load(&t, dir, err, sizeof err) == -1);
    CHECK(strstr(err, "tokenizer_config.json") && strstr(err, "chat_template[0]"));
    f = fopen(p, "w");
    fputs("{\"chat_template\": ", f);
    fclose(f);
    CHECK(tokenizer_load(&t, dir, err, sizeof err) == -1);
    CHECK(strstr(err, "tokenizer_config.json") != NULL);
}

/* Every prefix of a real (small) tokenizer.json fails cleanly, naming the
 * file; random byte changes load or fail, never crash (ASan build). */
TEST(load_truncated_and_mangled) {
    size_t len;
    char err[512];
    char *src = file_read_all(FIX "/small/added_tokens/tokenizer.json", &len, err, sizeof err);
    REQUIRE(src);
    const char *dir = test_mkdtemp();
    char p[300];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unsigned long long rng = 99;
    for (int k = 0; k < 120; k++) {
        size_t cut = k < 60 ? (size_t)(test_rng_next_(&rng) % len) : len;
        char *buf = malloc(len + 1);
        memcpy(buf, src, len);
        if (k >= 60)
            for (int f = 0; f < 4; f++) buf[test_rng_next_(&rng) % len] = (char)(test_rng_next_(&rng) & 0xff);
        FILE *f = fopen(p, "wb");
        REQUIRE(f && fwrite(buf, 1, cut, f) == cut);
        fclose(f);
        struct tokenizer *t = NULL;
        err[0] = 0;
        int rc = tokenizer_load(&t, dir, err, sizeof err);
        if (k < 60) CHECK(rc == -1 && strstr(err, "tokenizer.json"));
        if (rc == 0) {
            int32_t *ids;
            int n;
            if (tokenizer_encode(t, "Hello <mask> world", 18, 1, &ids, &n, err, sizeof err) == 0) {
                free(tokenizer_decode(t, ids, n, 0, NULL));
                free(ids);
            }
            tokenizer_free(t);
        }
        free(buf);
    }
    free(src);
}

TEST(encode_invalid_utf8) {
    const char *dir = test_write_tmp("tokenizer.json", MINI);
    struct tokenizer *t = NULL;
    char err[512] = "";
    REQUIRE(tokenizer_load(&t, dir, err, sizeof err) == 0);
    int32_t *ids = (int32_t *)1;
    int n = 7;
    static const char *bad[] = { "a\xff", "\xc3", "\xed\xa0\x80", "\xe2\x82", "\xf4\x90\x80\x80", "\xc0\xaf" };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        err[0] = 0;
        CHECK(tokenizer_encode(t, bad[i], strlen(bad[i]), 1, &ids, &n, err, sizeof err) == -1);
        CHECK(ids == NULL && n == 0);
        CHECK(strstr(err, "UTF-8") != NULL);
    }
    CHECK(tokenizer_encode(t, "abab", 4, 0, &ids, &n, err, sizeof err) == 0);
    CHECK(n == 2 && ids[0] == 2 && ids[1] == 2);
    free(ids);
    CHECK(tokenizer_encode(t, "", 0, 1, &ids, &n, err, sizeof err) == 0);
    CHECK(n == 0 && ids != NULL);
    free(ids);
    /* decode: an out-of-range id is NULL, stream push -1 */
    int32_t oob[2] = { 0, 3 };
    CHECK(tokenizer_decode(t, oob, 2, 0, NULL) == NULL);
    oob[1] = -1;
    CHECK(tokenizer_decode(t, oob, 2, 0, NULL) == NULL);
    struct tokenizer_stream *s = tokenizer_stream_new(t, 0, 1);
    const char *p;
    size_t l;
    CHECK(tokenizer_stream_push(s, 99, &p, &l) == -1);
    CHECK(tokenizer_stream_push(s, 2, &p, &l) == 0);
    tokenizer_stream_free(s);
    CHECK(tokenizer_id_to_token(t, 2) && !strcmp(tokenizer_id_to_token(t, 2), "ab"));
    CHECK(tokenizer_id_to_token(t, 3) == NULL && tokenizer_id_to_token(t, -1) == NULL);
    CHECK(tokenizer_token_to_id(t, "b") == 1 && tokenizer_token_to_id(t, "zz") == -1);
    CHECK(tokenizer_n_vocab(t) == 3);
    tokenizer_free(t);
}

/* chat_template.jinja over the config's; the list form; special_tokens_map.json over the config */
TEST(chat_templates_and_special_map) {
    const char *dir = test_write_tmp("tokenizer.json", MINI);
    char p[300];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(p, "w");
    REQUIRE(f);
    fputs("{\"chat_template\": [{\"name\": \"default\", \"template\": \"D{{x}}\"},"
          " {\"name\": \"tool_use\", \"template\": \"T\"}],"
          " \"bos_token\": {\"content\": \"a\", \"lstrip\": false}, \"eos_token\": \"b\", \"sep_token\": \"ab\"}", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/special_tokens_map.json", dir);
    f = fopen(p, "w");
    fputs("{\"eos_token\": {\"content\": \"ab\"}}", f);
    fclose(f);
    struct tokenizer *t = NULL;
    char err[512] = "";
    REQUIRE(tokenizer_load(&t, dir, err, sizeof err) == 0);
    CHECK(!strcmp(tokenizer_chat_template(t, NULL), "D{{x}}"));
    CHECK(!strcmp(tokenizer_chat_template(t, "tool_use"), "T"));
    CHECK(tokenizer_chat_template(t, "other") == NULL);
    CHECK(!strcmp(tokenizer_special_token(t, "bos_token"), "a"));
    CHECK(!strcmp(tokenizer_special_token(t, "eos_token"), "ab"));
    CHECK(!strcmp(tokenizer_special_token(t, "sep_token"), "ab"));
    CHECK(tokenizer_special_id(t, "eos_token") == 2);
    CHECK(tokenizer_special_token(t, "pad_token") == NULL);
    tokenizer_free(t);
    snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
    f = fopen(p, "w");
    fputs("J{{ messages }}", f);
    fclose(f);
    REQUIRE(tokenizer_load(&t, dir, err, sizeof err) == 0);
    CHECK(!strcmp(tokenizer_chat_template(t, NULL), "J{{ messages }}"));
    CHECK(!strcmp(tokenizer_chat_template(t, "tool_use"), "T"));
    tokenizer_free(t);
}

/* Oniguruma -> PCRE2 rewriting (tokenizers' regexes are Oniguruma's). */
TEST(regex_translation) {
    struct tbuf out = { 0 };
    char err[256];
    CHECK(tok_regex_translate("a{1,2}+", 7, &out, err, sizeof err) == 0);
    CHECK(!strcmp(out.p, "(?:a{1,2})+"));
    CHECK(tok_regex_translate("(ab){2}+c", 9, &out, err, sizeof err) == 0);
    CHECK(!strcmp(out.p, "(?:(ab){2})+c"));
    CHECK(tok_regex_translate("\\u00e9", 6, &out, err, sizeof err) == 0);
    CHECK(!strcmp(out.p, "\\x{00e9}"));
    CHECK(tok_regex_translate("[\\S]", 4, &out, err, sizeof err) == -1);
    CHECK(tok_regex_translate("[a[b]]", 6, &out, err, sizeof err) == -1);
    CHECK(tok_regex_translate("(a", 2, &out, err, sizeof err) == -1);
    free(out.p);
    /* \s is White_Space: U+180E is not, U+3000 is */
    struct tok_regex re;
    REQUIRE(tok_regex_compile(&re, "\\s+", 3, err, sizeof err) == 0);
    struct tok_matcher m = { 0 };
    struct spanbuf sp = { 0 };
    const char *s = "a\xe1\xa0\x8e" "b\xe3\x80\x80" "c";
    CHECK(tok_regex_find(&re, &m, s, strlen(s), &sp) == 0);
    CHECK(sp.n == 3 && sp.p[0].e == 5 && sp.p[1].match && sp.p[1].e - sp.p[1].s == 3);
    free(sp.p);
    tok_matcher_free(&m);
    tok_regex_free(&re);
}

/* Rust's String::from_utf8_lossy: one U+FFFD per maximal ill-formed subpart. */
TEST(utf8_lossy) {
    static const struct { const char *in; const char *out; } c[] = {
        { "a\xff" "b", "a\xef\xbf\xbd" "b" },
        { "\xe2\x82", "\xef\xbf\xbd" },
        { "\xe2\x82" "A", "\xef\xbf\xbd" "A" },
        { "\xf0\x9f\x98", "\xef\xbf\xbd" },
        { "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
        { "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },
        { "\xf4\x90", "\xef\xbf\xbd\xef\xbf\xbd" },
    };
    for (size_t i = 0; i < ARRAY_LEN(c); i++) {
        struct tbuf b = { 0 };
        tok_utf8_lossy_append(&b, c[i].in, strlen(c[i].in));
        CHECK(b.n == strlen(c[i].out) && !memcmp(b.p, c[i].out, b.n));
        free(b.p);
    }
}

TEST_MAIN()
