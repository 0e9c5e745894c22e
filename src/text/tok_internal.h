/* tok_internal.h — the parts of the tokenizer shared by tokenizer.c,
 * tok_json.c, tok_util.c, tok_bpe.c and tok_decode.c. Not a public header:
 * only src/text/tok*.c and the tokenizer's unit test include it.
 *
 * Layout of one loaded tokenizer: every vocabulary string lives in one arena
 * (`strs`), addressed by offset; the model's string -> id map and the merge
 * map (pair of ids -> rank, new id) are open-addressing tables; the pipeline
 * stages (normalizers, pre-tokenizers, decoders) are flat arrays, Sequence
 * nodes of tokenizer.json flattened at load. */
#ifndef VLLMC_TOK_INTERNAL_H
#define VLLMC_TOK_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "text/tokenizer.h"
#include "util/util.h"

/* ---- growable buffers (per call scratch; never shared between threads) ---- */

struct tbuf { char *p; size_t n, cap; };
struct ibuf { int32_t *p; size_t n, cap; };

static inline void tbuf_reserve(struct tbuf *b, size_t extra) {
    if (b->n + extra + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 64;
        while (c < b->n + extra + 1) c *= 2;
        char *np = realloc(b->p, c);
        if (!np) { log_error("out of memory"); abort(); }
        b->p = np;
        b->cap = c;
    }
}
static inline void tbuf_put(struct tbuf *b, const void *s, size_t n) {
    tbuf_reserve(b, n);
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static inline void tbuf_putc(struct tbuf *b, char c) { tbuf_put(b, &c, 1); }
static inline void ibuf_push(struct ibuf *b, int32_t v) {
    if (b->n == b->cap) {
        size_t c = b->cap ? b->cap * 2 : 64;
        int32_t *np = realloc(b->p, c * sizeof *np);
        if (!np) { log_error("out of memory"); abort(); }
        b->p = np;
        b->cap = c;
    }
    b->p[b->n++] = v;
}

/* ---- JSON (tok_json.c): an in-situ DOM, much faster than jansson on the
 * 30 MB tokenizer.json files (load must stay under a second) ---- */

enum { TJ_NULL, TJ_FALSE, TJ_TRUE, TJ_NUM, TJ_STR, TJ_ARR, TJ_OBJ };
struct tjson {
    uint8_t type;
    uint32_t n;          /* TJ_STR: byte length; TJ_ARR/TJ_OBJ: member count */
    const char *s;       /* TJ_STR: decoded UTF-8, NUL-terminated (may hold NULs) */
    const char *key;     /* member of an object: its key (NUL-terminated) */
    uint32_t klen;
    double num;
    struct tjson *child; /* first member */
    struct tjson *next;  /* next sibling */
};
struct tj_block;
struct tjson_doc { struct tjson *root; char *buf; struct tj_block *blocks; };
/* Parses buf[0..len) in place (buf must hold len + 1 bytes); takes ownership
 * of buf. err gets "line L, column C: what". */
int tok_json_parse(struct tjson_doc *d, char *buf, size_t len, char *err, size_t errlen);
void tok_json_free(struct tjson_doc *d);
const struct tjson *tok_json_get(const struct tjson *obj, const char *key);
static inline bool tj_is_str(const struct tjson *j) { return j && j->type == TJ_STR; }
static inline bool tj_is_bool(const struct tjson *j) { return j && (j->type == TJ_TRUE || j->type == TJ_FALSE); }
const char *tok_json_type_name(const struct tjson *j);

/* ---- Unicode and UTF-8 helpers (tok_util.c) ---- */

/* Length of the valid UTF-8 prefix of s[0..n) (== n when all valid). */
size_t tok_utf8_valid_prefix(const char *s, size_t n);
/* Decode one code point at s (valid UTF-8 assumed); *len gets its length. */
static inline uint32_t utf8_decode(const char *s, int *len) {
    const uint8_t *u = (const uint8_t *)s;
    if (u[0] < 0x80) { *len = 1; return u[0]; }
    if (u[0] < 0xE0) { *len = 2; return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F); }
    if (u[0] < 0xF0) { *len = 3; return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F); }
    *len = 4;
    return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
}
static inline int utf8_len_of_lead(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }
int tok_utf8_encode(uint32_t cp, char *out); /* returns 1..4 */
/* Rust's String::from_utf8_lossy: each maximal ill-formed subpart -> U+FFFD. */
void tok_utf8_lossy_append(struct tbuf *out, const char *s, size_t n);
bool tok_uni_is_whitespace(uint32_t c);  /* White_Space (Rust char::is_whitespace, Oniguruma \s) */
bool tok_uni_is_numeric(uint32_t c);     /* Nd, Nl, No (Rust char::is_numeric) */
bool tok_uni_is_punct(uint32_t c);       /* ASCII punctuation or a P* category */
bool tok_uni_is_word(uint32_t c);        /* Rust regex \w: Alphabetic, M, Nd, Pc, Join_Control */
bool tok_uni_is_mark(uint32_t c);     /* StripAccents: is_combining_mark (M*) */
/* Characters the library's normalizers do not know (newer Unicode): left as they are. */
bool tok_uni_norm_opaque(uint32_t c);
/* Rust's char::to_lowercase: 1..3 code points into out. */
int tok_uni_lower(uint32_t c, uint32_t out[3]);

/* ---- hash maps (tok_util.c) ---- */

/* string -> int32, keys stored in the map's own arena */
struct strmap {
    struct strmap_slot { uint64_t h; uint32_t off, len; int32_t val; } *slot;
    size_t cap, n;           /* cap a power of two; slot.len == UINT32_MAX: empty */
    char *keys; size_t klen, kcap;
};
void tok_strmap_init(struct strmap *m, size_t expect);
void tok_strmap_free(struct strmap *m);
/* Insert or overwrite (serde's map: the last duplicate wins). */
void tok_strmap_put(struct strmap *m, const char *k, size_t len, int32_t val);
int32_t tok_strmap_get(const struct strmap *m, const char *k, size_t len); /* -1 if absent */
uint64_t tok_hash(const void *p, size_t n);

/* (id, id) -> (rank, new id) */
struct mergemap {
    struct merge_slot { uint64_t key; uint32_t rank; int32_t id; } *slot;
    size_t cap, n;
};
void tok_mergemap_init(struct mergemap *m, size_t expect);
void tok_mergemap_free(struct mergemap *m);
void tok_mergemap_put(struct mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t id);
static inline const struct merge_slot *tok_mergemap_get(const struct mergemap *m, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t mask = m->cap - 1, i = (size_t)(h >> 32) & mask;
    for (;;) {
        const struct merge_slot *s = &m->slot[i];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
        i = (i + 1) & mask;
    }
}

/* ---- regular expressions (tok_util.c) ---- */

/* A Split/Replace pattern: a literal string (memmem) or an Oniguruma regex
 * translated to PCRE2 (JIT). Shared read-only between threads. */
struct tok_regex {
    pcre2_code *code;  /* NULL for a literal */
    char *lit; size_t litlen;
};
/* Compiles an Oniguruma pattern (as tokenizers' Split/Replace "Regex"). */
int tok_regex_compile(struct tok_regex *r, const char *pattern, size_t len, char *err, size_t errlen);
void tok_regex_literal(struct tok_regex *r, const char *s, size_t len);
void tok_regex_free(struct tok_regex *r);
/* Onig -> PCRE2 pattern translation (exposed for the unit test). */
int tok_regex_translate(const char *pat, size_t len, struct tbuf *out, char *err, size_t errlen);

/* Per-call match state: match data and a JIT stack, created on first use. */
struct tok_matcher { pcre2_match_data *md; pcre2_match_context *mc; pcre2_jit_stack *js; };
void tok_matcher_free(struct tok_matcher *m);
/* Spans covering s[0..n) in order: (start, end, is_match), as tokenizers'
 * Pattern::find_matches (empty input -> one empty non-match). Appends to
 * *spans (reset by the caller). Returns -1 on a matcher failure. */
struct span { uint32_t s, e; uint8_t match; };
struct spanbuf { struct span *p; size_t n, cap; };
int tok_regex_find(const struct tok_regex *r, struct tok_matcher *m, const char *s, size_t n, struct spanbuf *out);
void tok_spanbuf_push(struct spanbuf *b, uint32_t s, uint32_t e, uint8_t match);

/* ---- the pipeline ---- */

enum split_behavior { SB_REMOVED, SB_ISOLATED, SB_MERGED_PREV, SB_MERGED_NEXT, SB_CONTIGUOUS };
enum prepend_scheme { PS_ALWAYS, PS_FIRST, PS_NEVER };

enum norm_type { N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWERCASE, N_REPLACE, N_PREPEND, N_STRIP, N_STRIP_ACCENTS, N_BYTELEVEL };
struct normalizer {
    int type;
    struct tok_regex re;        /* N_REPLACE */
    char *content; size_t clen; /* N_REPLACE content, N_PREPEND prepend */
    bool left, right;           /* N_STRIP */
};

enum pretok_type { PT_SPLIT, PT_BYTELEVEL, PT_METASPACE, PT_DIGITS, PT_PUNCT, PT_WHITESPACE, PT_WHITESPACE_SPLIT,
                   PT_BERT, PT_CHAR_DELIM };
struct pretok {
    int type;
    struct tok_regex re;            /* PT_SPLIT; PT_BYTELEVEL with use_regex */
    int behavior;                   /* enum split_behavior */
    bool invert;                    /* PT_SPLIT */
    bool add_prefix_space, use_regex; /* PT_BYTELEVEL */
    char repl[5]; int repl_len;     /* PT_METASPACE replacement char; PT_CHAR_DELIM delimiter */
    int prepend_scheme; bool split; /* PT_METASPACE */
    bool individual_digits;         /* PT_DIGITS */
};

enum decoder_type { D_BYTELEVEL, D_METASPACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_REPLACE, D_WORDPIECE, D_BPE };
struct decoder {
    int type;
    struct tok_regex re;              /* D_REPLACE */
    char *content; size_t clen;       /* D_REPLACE content; D_WORDPIECE prefix; D_BPE suffix */
    char repl[5]; int repl_len;       /* D_METASPACE replacement; D_STRIP content char */
    int prepend_scheme;               /* D_METASPACE */
    int start, stop;                  /* D_STRIP */
    bool cleanup;                     /* D_WORDPIECE */
};

struct added_token {
    int32_t id;
    uint32_t off, len;  /* content in t->strs */
    bool special, lstrip, rstrip, single_word, normalized;
};

/* Byte trie of added-token contents: leftmost-longest matching as the
 * aho-corasick crate's MatchKind::LeftmostLongest gives. */
struct tok_trie {
    struct strmap edges;   /* key: 4-byte node id + 1 byte -> child node id */
    int32_t *term;         /* [n_nodes] index into t->added, -1 if none */
    size_t n_nodes, cap_nodes;
    uint8_t first[256];    /* bytes that start some token */
    bool empty;
};

/* The BPE word cache: direct-mapped, sharded by hash, one mutex per shard;
 * short words only (a slot holds the key and the ids inline). */
#define WC_SHARDS 64
#define WC_KEY 46
#define WC_IDS 16
struct wc_slot { uint64_t h; uint8_t klen, nids; char key[WC_KEY]; int32_t ids[WC_IDS]; };
struct word_cache {
    pthread_mutex_t lock[WC_SHARDS];
    struct wc_slot *slot;   /* [WC_SHARDS * per_shard] */
    size_t per_shard;       /* power of two */
};

struct bpe {
    struct strmap vocab;      /* model vocab: token string -> id */
    struct strmap raw;        /* byte-level mode: token as raw bytes -> id */
    struct mergemap merges;
    bool raw_mode;            /* input words are raw bytes (ByteLevel is the last pre-tokenizer) */
    int32_t byte_id[256];     /* raw mode: id of each single byte, -1 none */
    int32_t fallback_id[256]; /* "<0xXX>" ids (byte_fallback), -1 none */
    int32_t ascii_id[128];    /* non-raw mode: id of each ASCII char, -1 none */
    bool ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;           /* -1: none (or the unk token is not in the vocab: unk_missing) */
    bool unk_missing;
    char *cont_prefix; size_t cont_len;  /* continuing_subword_prefix */
    char *eow_suffix; size_t eow_len;    /* end_of_word_suffix */
    struct word_cache cache;
};

/* Post-processor: a template of pieces, each a run of special ids or the
 * sequence itself ($A). */
struct tpl_piece { bool seq; int32_t *ids; int n_ids; };

struct named_str { char *name; char *value; };

struct tokenizer {
    char *strs; size_t strs_len;   /* arena of every token string */
    uint32_t *tok_off, *tok_len;   /* [n_vocab] token string of an id; tok_len UINT32_MAX: no token */
    int n_vocab;
    uint8_t *is_special;           /* [n_vocab] */
    struct strmap added_map;       /* added content -> id */
    struct added_token *added; int n_added;
    struct tok_trie trie_raw, trie_norm;

    struct normalizer *norm; int n_norm;
    struct pretok *pre; int n_pre;
    struct bpe bpe;
    struct tpl_piece *tpl; int n_tpl; bool has_tpl;
    struct decoder *dec; int n_dec; bool has_decoder;

    struct named_str *sp; int n_sp;      /* *_token names */
    char *chat_default;
    struct named_str *ct; int n_ct;      /* named chat templates */
};

/* tok_bpe.c */
int tok_bpe_load(struct tokenizer *t, const struct tjson *model, char *err, size_t errlen);
void tok_bpe_free(struct bpe *b);
/* Appends the ids of one pre-tokenized word. -1 (err set) only when an
 * unknown character needs an unk token that is not in the vocabulary. */
struct bpe_scratch;
int tok_bpe_tokenize(const struct bpe *b, struct bpe_scratch **scr, const char *w, size_t n, struct ibuf *out,
                 char *err, size_t errlen);
void tok_bpe_scratch_free(struct bpe_scratch *s);
/* Keys the vocabulary by raw bytes too (ByteLevel is the last pre-tokenizer). */
void tok_bpe_enable_raw(struct bpe *b);

/* tokenizer.c: the UTF-8 of GPT-2's alphabet character for byte b */
const char *tok_byte_char_utf8(int b, int *len);

/* tok_decode.c */
int tok_decoder_load(struct tokenizer *t, const struct tjson *j, const char *path, char *err, size_t errlen);
void tok_decoders_free(struct tokenizer *t);

#endif
