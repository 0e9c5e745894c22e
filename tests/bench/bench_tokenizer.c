/* bench_tokenizer.c — tokenizer speed: load time and single-threaded encode
 * throughput on a 10 MB mixed text, next to Hugging Face tokenizers (the
 * Node binding, tools/tokenizers/bench_hf.js) on the same file in the same
 * run, with the two id sequences compared.
 *
 *   bench_tokenizer [MB] [name ...]   (default 10 MB; the six fetched tokenizers)
 *
 * Tokenizer files come from tools/tokenizers/fetch.sh (tools/tokenizers/cache);
 * the HF side runs when tools/tokenizers/node_modules has the binding
 * (cd tools/tokenizers && npm install). The text: the test corpus's lines
 * (the very long single-character runs left out) and generated sentences of
 * random syllable words, CJK characters and numbers, so both word caches see
 * repeats and new words alike. Times are the best of 3. Not a test. */
#include "text/tokenizer.h"
#include "util/util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static unsigned rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 32);
}

struct sbuf { char *p; size_t n, cap; };
static void put(struct sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void puts_(struct sbuf *b, const char *s) { put(b, s, strlen(s)); }

static char *make_text(size_t bytes, size_t *len) {
    json_error_t je;
    json_t *corpus = json_load_file("tests/fixtures/tokenizers/corpus.json", JSON_ALLOW_NUL, &je);
    if (!corpus) { fprintf(stderr, "corpus.json: %s\n", je.text); exit(1); }
    static const char *syl[] = { "ka", "ro", "mi", "tel", "an", "ver", "sto", "qua", "lin", "dre", "po", "ux",
                                 "ban", "chi", "ze", "for", "gla", "hin", "jo", "wes" };
    static const char *cjk[] = { "的", "一", "是", "不", "了", "人", "我", "在", "有", "他", "这", "中", "大", "来", "上",
                                 "国", "个", "到", "说", "们", "语", "の", "に", "は", "を", "た", "が", "で", "한", "국" };
    struct sbuf b = { 0 };
    size_t nl = json_array_size(corpus);
    while (b.n < bytes) {
        unsigned r = rnd() % 10;
        if (r < 7) {
            json_t *s = json_array_get(corpus, rnd() % nl);
            if (json_string_length(s) > 1500) continue;
            put(&b, json_string_value(s), json_string_length(s));
        } else if (r < 9) {
            int words = 5 + (int)(rnd() % 15);
            for (int w = 0; w < words; w++) {
                if (w) puts_(&b, rnd() % 8 ? " " : ", ");
                int ns = 1 + (int)(rnd() % 4);
                for (int k = 0; k < ns; k++) puts_(&b, syl[rnd() % 20]);
                if (rnd() % 10 == 0) { char num[16]; snprintf(num, sizeof num, " %u", rnd() % 100000); puts_(&b, num); }
            }
            puts_(&b, ".");
        } else {
            int n = 5 + (int)(rnd() % 30);
            for (int k = 0; k < n; k++) puts_(&b, cjk[rnd() % 30]);
            puts_(&b, "。");
        }
        puts_(&b, "\n");
    }
    json_decref(corpus);
    *len = b.n;
    return b.p;
}

int main(int argc, char **argv) {
    double mb = argc > 1 ? atof(argv[1]) : 10.0;
    const char *all[] = { "qwen3", "llama3", "gemma3", "gptoss", "deepseek_v3", "llama2" };
    const char **names = all;
    int nn = 6;
    if (argc > 2) { names = (const char **)argv + 2; nn = argc - 2; }
    size_t len;
    char *text = make_text((size_t)(mb * 1e6), &len);
    const char *tf = "/tmp/vllmc_bench_tokenizer.txt", *idf = "/tmp/vllmc_bench_tokenizer.ids";
    FILE *f = fopen(tf, "wb");
    if (!f || fwrite(text, 1, len, f) != len) { perror(tf); return 1; }
    fclose(f);
    struct stat st;
    bool hf = stat("tools/tokenizers/node_modules/@anush008/tokenizers", &st) == 0;
    printf("text: %.2f MB (%s)\nHF tokenizers side: %s\n\n", (double)len / 1e6, tf,
           hf ? "@anush008/tokenizers 0.6.0 (tokenizers 0.22.2), RAYON_NUM_THREADS=1" : "not installed");
    printf("%-12s %9s %9s %10s %10s %9s %9s %8s %6s\n", "tokenizer", "load s", "HF load", "encode s", "HF enc s",
           "MB/s", "HF MB/s", "speedup", "same");
    for (int i = 0; i < nn; i++) {
        char dir[512], err[512];
        snprintf(dir, sizeof dir, "tools/tokenizers/cache/%s", names[i]);
        struct tokenizer *t = NULL;
        double load = 1e9;
        for (int r = 0; r < 3; r++) {
            double t0 = time_now();
            if (tokenizer_load(&t, dir, err, sizeof err)) { printf("%-12s %s\n", names[i], err); break; }
            load = MIN(load, time_now() - t0);
            if (r < 2) tokenizer_free(t);
        }
        if (!t) continue;
        double enc = 1e9;
        int32_t *ids = NULL;
        int n = 0;
        for (int r = 0; r < 3; r++) {
            free(ids);
            double t0 = time_now();
            if (tokenizer_encode(t, text, len, 0, &ids, &n, err, sizeof err)) { printf("%s\n", err); return 1; }
            enc = MIN(enc, time_now() - t0);
        }
        double hf_load = 0, hf_enc = 0;
        const char *same = "-";
        if (hf) {
            char cmd[1200];
            snprintf(cmd, sizeof cmd, "RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false node tools/tokenizers/bench_hf.js "
                     "'%s' '%s' '%s' 3", dir, tf, idf);
            FILE *p = popen(cmd, "r");
            char line[512] = "";
            if (p && fgets(line, sizeof line, p)) {
                json_t *j = json_loads(line, 0, NULL);
                hf_load = json_real_value(json_object_get(j, "load_s"));
                hf_enc = json_real_value(json_object_get(j, "encode_s"));
                json_decref(j);
            }
            if (p) pclose(p);
            size_t ilen;
            char *hids = file_read_all(idf, &ilen, err, sizeof err);
            same = hids && ilen == (size_t)n * 4 && !memcmp(hids, ids, ilen) ? "yes" : "NO";
            free(hids);
        }
        printf("%-12s %9.3f %9.3f %10.3f %10.3f %9.2f %9.2f %7.2fx %6s\n", names[i], load, hf_load, enc, hf_enc,
               (double)len / 1e6 / enc, hf_enc > 0 ? (double)len / 1e6 / hf_enc : 0, hf_enc > 0 ? hf_enc / enc : 0, same);
        printf("%-12s %d tokens\n", "", n);
        fflush(stdout);
        free(ids);
        tokenizer_free(t);
    }
    free(text);
    return 0;
}
