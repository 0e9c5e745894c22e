/* unicode_probe.c — the local libraries' Unicode data, for gen_unicode.js:
 * which code points PCRE2 (as the tokenizer compiles its regexes) and
 * utf8proc (as tok_util.c uses it) put in each set. Prints one line per set:
 * "NAME lo-hi lo-hi ..." (hex), or for "norm" the per-character facts the
 * generator compares with Hugging Face's normalizers.
 *   cc -O2 unicode_probe.c -lpcre2-8 -lutf8proc && ./a.out */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static int enc(unsigned c, char *o) { int l = (int)utf8proc_encode_char((utf8proc_int32_t)c, (utf8proc_uint8_t *)o); o[l] = 0; return l; }

static void ranges(const char *name, int (*in)(unsigned, const void *), const void *arg) {
    printf("%s", name);
    long start = -1;
    for (unsigned c = 0; c <= 0x110000; c++) {
        int m = c < 0x110000 && !(c >= 0xD800 && c <= 0xDFFF) && in(c, arg);
        if (m && start < 0) start = c;
        if (!m && start >= 0) { printf(" %lx-%x", start, c - 1); start = -1; }
    }
    printf("\n");
}

static pcre2_match_data *md;
static int in_pcre(unsigned c, const void *re) {
    char b[5];
    int l = enc(c, b);
    return pcre2_match(re, (PCRE2_SPTR)b, (size_t)l, 0, PCRE2_NO_UTF_CHECK, md, NULL) >= 0;
}
static int cat(unsigned c) { return utf8proc_category((utf8proc_int32_t)c); }
/* the base definitions of tok_util.c's predicates (keep in step) */
static int in_numeric(unsigned c, const void *a) { (void)a; int k = cat(c); return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO; }
static int in_punct(unsigned c, const void *a) {
    (void)a;
    if (c < 0x80) return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
    int k = cat(c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}
static int in_word(unsigned c, const void *a) {
    (void)a;
    int k = cat(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_ND) || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_PC;
}

static int in_mark(unsigned c, const void *a) {
    (void)a;
    int k = cat(c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

int main(int argc, char **argv) {
    md = pcre2_match_data_create(1, NULL);
    for (int i = 1; i < argc; i++) { /* PCRE2 patterns: "name=pattern" */
        char *eq = strchr(argv[i], '=');
        if (!eq) continue;
        *eq = 0;
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)(eq + 1), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED,
                                       &ec, &eo, NULL);
        if (!re) { fprintf(stderr, "bad pattern %s\n", eq + 1); return 1; }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
        char name[64];
        snprintf(name, sizeof name, "pcre:%s", argv[i]);
        ranges(name, in_pcre, re);
        pcre2_code_free(re);
    }
    ranges("u8p:numeric", in_numeric, NULL);
    ranges("u8p:punct", in_punct, NULL);
    ranges("u8p:word", in_word, NULL);
    ranges("u8p:mark", in_mark, NULL);
    /* lowercase: "lower cp:lc ..." where different */
    printf("u8p:lower");
    for (unsigned c = 0; c < 0x110000; c++) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        unsigned l = (unsigned)utf8proc_tolower((utf8proc_int32_t)c);
        if (l != c) printf(" %x:%x", c, l);
    }
    printf("\n");
    /* normalization candidates: characters utf8proc gives a combining class, a
     * decomposition or a composition; NFD/NFKD/NFC/NFKC of each alone and NFD
     * next to U+0316 (ccc 220) and U+0301 (ccc 230), as hex UTF-8 */
    for (unsigned c = 0xA0; c < 0x110000; c++) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
        if (p->category == UTF8PROC_CATEGORY_CN) continue;
        if (p->combining_class == 0 && p->decomp_seqindex == UINT16_MAX && p->comb_index == UINT16_MAX) continue;
        char x[8], t[4][32];
        enc(c, x);
        snprintf(t[0], 32, "\xcc\x96%s", x);
        snprintf(t[1], 32, "%s\xcc\x96", x);
        snprintf(t[2], 32, "\xcc\x81%s", x);
        snprintf(t[3], 32, "%s\xcc\x81", x);
        const int opts[8] = { UTF8PROC_DECOMPOSE, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, UTF8PROC_COMPOSE,
                              UTF8PROC_COMPOSE | UTF8PROC_COMPAT, UTF8PROC_DECOMPOSE, UTF8PROC_DECOMPOSE,
                              UTF8PROC_DECOMPOSE, UTF8PROC_DECOMPOSE };
        printf("norm %x", c);
        for (int f = 0; f < 8; f++) {
            const char *s = f < 4 ? x : t[f - 4];
            utf8proc_uint8_t *o = NULL;
            utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)strlen(s), &o, (utf8proc_option_t)(opts[f] | UTF8PROC_STABLE));
            printf(" ");
            for (const utf8proc_uint8_t *q = o; q && *q; q++) printf("%02x", *q);
            free(o);
        }
        printf("\n");
    }
    pcre2_match_data_free(md);
    return 0;
}
