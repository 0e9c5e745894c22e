/* tokenizer.c — load tokenizer.json (+ tokenizer_config.json,
 * special_tokens_map.json, chat templates) and encode text to ids exactly as
 * Hugging Face tokenizers 0.22 does (checked against it on real tokenizer
 * files by tests/unit/test_tokenizer.c).
 *
 * Encode follows the library's pipeline, on plain strings (offsets are not
 * tracked; the engine never needs them):
 *   1. validate UTF-8 (invalid input is an error, not U+FFFD);
 *   2. split out added tokens matched on the raw text (non-normalized ones),
 *      leftmost-longest, with single_word / lstrip / rstrip;
 *   3. normalize each remaining piece, then split out the normalized added
 *      tokens;
 *   4. pre-tokenize: the stages run depth first (each piece goes through all
 *      stages before the next), which gives the same words as the library's
 *      stage-by-stage order because no stage looks across pieces;
 *   5. BPE each word (tok_bpe.c), then the post-processor's template.
 * Owns (struct tokenizer, immutable after load): the id -> token table and
 * its string arena, the added tokens and their tries, the pipeline stages
 * with their compiled regexes, the BPE model (tok_bpe.c), special-token names
 * and chat templates. Per-call state (struct enc) lives on the caller's stack.
 * BOS/EOS: as transformers, whose tokenizer_config.json add_bos_token /
 * add_eos_token (or a Llama/Gemma tokenizer class, which default to a BOS)
 * replace tokenizer.json's post-processor with "[bos] $A [eos]" (v5's rule;
 * v4 applied it to the Llama/Gemma classes only — the same ids for every
 * tokenizer tested here). Named special tokens of the config that
 * tokenizer.json does not list become special added tokens, as transformers
 * adds them (only when the vocabulary has them).
 *
 * Supported: BPE (byte-level, byte_fallback, ignore_merges, unk/fuse_unk,
 * continuing_subword_prefix, end_of_word_suffix); normalizers NFC NFD NFKC
 * NFKD Lowercase Replace Prepend Strip StripAccents ByteLevel Sequence;
 * pre-tokenizers Split ByteLevel Metaspace Digits Punctuation Whitespace
 * WhitespaceSplit BertPreTokenizer CharDelimiterSplit Sequence;
 * post-processors TemplateProcessing ByteLevel RobertaProcessing
 * BertProcessing Sequence; decoders in tok_decode.c. Anything else fails the
 * load with a message naming the file and the JSON path.
 * Does not: truncation or padding (tokenizer.json's settings are ignored, as
 * transformers ignores them unless asked), pairs of sequences, offsets,
 * Unigram / WordPiece / WordLevel models, the Precompiled and Bert
 * normalizers. Metaspace's prepend_scheme "first" treats a piece as first
 * when it starts the input text, which differs from the library only when a
 * normalizer inserted text that a later split isolated. */
#include "text/tok_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <utf8proc.h>

#define MAX_STAGES 32

/* ---- loading helpers --------------------------------------------------------- */

static int read_json(struct tjson_doc *d, const char *dir, const char *name, bool required, char *err,
                     size_t errlen) {
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    memset(d, 0, sizeof *d);
    struct stat st;
    if (stat(path, &st) != 0) {
        if (!required && errno == ENOENT) return 1;
        return errf(err, errlen, "%s: %s", path, strerror(errno));
    }
    size_t len;
    char e2[256];
    char *buf = file_read_all(path, &len, e2, sizeof e2);
    if (!buf) return errf(err, errlen, "%s: %s", path, e2);
    if (tok_json_parse(d, buf, len, e2, sizeof e2)) return errf(err, errlen, "%s: %s", path, e2);
    return 0;
}

static char *dup_n(const char *s, size_t n) {
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static bool jbool(const struct tjson *j, bool dflt) {
    if (!j) return dflt;
    if (j->type == TJ_TRUE) return true;
    if (j->type == TJ_FALSE) return false;
    return dflt;
}

static int parse_behavior(const struct tjson *j, int *out) {
    static const char *names[] = { "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous" };
    if (!tj_is_str(j)) return -1;
    for (int i = 0; i < 5; i++)
        if (!strcmp(j->s, names[i])) { *out = i; return 0; }
    return -1;
}

/* pattern: {"String": s} or {"Regex": r} */
static int parse_pattern(const struct tjson *j, struct tok_regex *re, const char *path, char *err, size_t errlen) {
    const struct tjson *s = tok_json_get(j, "String"), *r = tok_json_get(j, "Regex");
    if (tj_is_str(s)) { tok_regex_literal(re, s->s, s->n); return 0; }
    if (tj_is_str(r)) {
        char e2[512];
        if (tok_regex_compile(re, r->s, r->n, e2, sizeof e2)) return errf(err, errlen, "%s.pattern: %s", path, e2);
        return 0;
    }
    return errf(err, errlen, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", path);
}

static int one_char(const struct tjson *j, char *out, int *len) {
    if (!tj_is_str(j) || j->n == 0 || j->n > 4) return -1;
    int l;
    utf8_decode(j->s, &l);
    if ((uint32_t)l != j->n) return -1;
    memcpy(out, j->s, j->n);
    out[j->n] = 0;
    *len = (int)j->n;
    return 0;
}

/* ---- normalizers ----------------------------------------------------------- */

static int norm_load(struct tokenizer *t, const struct tjson *j, const char *path, char *err, size_t errlen) {
    if (!j || j->type == TJ_NULL) return 0;
    const struct tjson *ty = tok_json_get(j, "type");
    if (!tj_is_str(ty)) return errf(err, errlen, "%s.type: expected a string", path);
    const char *type = ty->s;
    if (!strcmp(type, "Sequence")) {
        const struct tjson *arr = tok_json_get(j, "normalizers");
        if (!arr || arr->type != TJ_ARR) return errf(err, errlen, "%s.normalizers: expected an array", path);
        int i = 0;
        for (const struct tjson *c = arr->child; c; c = c->next, i++) {
            char p2[256];
            snprintf(p2, sizeof p2, "%s.normalizers[%d]", path, i);
            if (norm_load(t, c, p2, err, errlen)) return -1;
        }
        return 0;
    }
    if (t->n_norm >= MAX_STAGES) return errf(err, errlen, "%s: too many normalizers", path);
    t->norm = realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *t->norm);
    struct normalizer *n = &t->norm[t->n_norm];
    memset(n, 0, sizeof *n);
    if (!strcmp(type, "NFC")) n->type = N_NFC;
    else if (!strcmp(type, "NFD")) n->type = N_NFD;
    else if (!strcmp(type, "NFKC")) n->type = N_NFKC;
    else if (!strcmp(type, "NFKD")) n->type = N_NFKD;
    else if (!strcmp(type, "Lowercase")) n->type = N_LOWERCASE;
    else if (!strcmp(type, "StripAccents")) n->type = N_STRIP_ACCENTS;
    else if (!strcmp(type, "ByteLevel")) n->type = N_BYTELEVEL;
    else if (!strcmp(type, "Strip")) {
        n->type = N_STRIP;
        n->left = jbool(tok_json_get(j, "strip_left"), true);
        n->right = jbool(tok_json_get(j, "strip_right"), true);
    } else if (!strcmp(type, "Prepend")) {
        const struct tjson *p = tok_json_get(j, "prepend");
        if (!tj_is_str(p)) return errf(err, errlen, "%s.prepend: expected a string", path);
        n->type = N_PREPEND;
        n->content = dup_n(p->s, p->n);
        n->clen = p->n;
    } else if (!strcmp(type, "Replace")) {
        const struct tjson *c = tok_json_get(j, "content");
        if (!tj_is_str(c)) return errf(err, errlen, "%s.content: expected a string", path);
        if (parse_pattern(tok_json_get(j, "pattern"), &n->re, path, err, errlen)) return -1;
        n->type = N_REPLACE;
        n->content = dup_n(c->s, c->n);
        n->clen = c->n;
    } else {
        return errf(err, errlen, "%s: normalizer type \"%s\" is not supported", path, type);
    }
    t->n_norm++;
    return 0;
}

/* ---- pre-tokenizers -------------------------------------------------------- */

/* tokenizers' ByteLevel regex (GPT-2's) */
static const char BYTELEVEL_RE[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int pre_load(struct tokenizer *t, const struct tjson *j, const char *path, char *err, size_t errlen) {
    if (!j || j->type == TJ_NULL) return 0;
    const struct tjson *ty = tok_json_get(j, "type");
    if (!tj_is_str(ty)) return errf(err, errlen, "%s.type: expected a string", path);
    const char *type = ty->s;
    if (!strcmp(type, "Sequence")) {
        const struct tjson *arr = tok_json_get(j, "pretokenizers");
        if (!arr || arr->type != TJ_ARR) return errf(err, errlen, "%s.pretokenizers: expected an array", path);
        int i = 0;
        for (const struct tjson *c = arr->child; c; c = c->next, i++) {
            char p2[256];
            snprintf(p2, sizeof p2, "%s.pretokenizers[%d]", path, i);
            if (pre_load(t, c, p2, err, errlen)) return -1;
        }
        return 0;
    }
    if (t->n_pre >= MAX_STAGES) return errf(err, errlen, "%s: too many pre-tokenizers", path);
    t->pre = realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *t->pre);
    struct pretok *p = &t->pre[t->n_pre];
    memset(p, 0, sizeof *p);
    if (!strcmp(type, "Split")) {
        p->type = PT_SPLIT;
        if (parse_behavior(tok_json_get(j, "behavior"), &p->behavior))
            return errf(err, errlen, "%s.behavior: expected one of Removed, Isolated, MergedWithPrevious, "
                        "MergedWithNext, Contiguous", path);
        p->invert = jbool(tok_json_get(j, "invert"), false);
        if (parse_pattern(tok_json_get(j, "pattern"), &p->re, path, err, errlen)) return -1;
    } else if (!strcmp(type, "ByteLevel")) {
        p->type = PT_BYTELEVEL;
        p->add_prefix_space = jbool(tok_json_get(j, "add_prefix_space"), true);
        p->use_regex = jbool(tok_json_get(j, "use_regex"), true);
        if (p->use_regex && tok_regex_compile(&p->re, BYTELEVEL_RE, strlen(BYTELEVEL_RE), err, errlen)) return -1;
    } else if (!strcmp(type, "Metaspace")) {
        p->type = PT_METASPACE;
        if (one_char(tok_json_get(j, "replacement"), p->repl, &p->repl_len))
            return errf(err, errlen, "%s.replacement: expected one character", path);
        p->prepend_scheme = PS_ALWAYS;
        const struct tjson *ps = tok_json_get(j, "prepend_scheme");
        if (tj_is_str(ps)) {
            if (!strcmp(ps->s, "always")) p->prepend_scheme = PS_ALWAYS;
            else if (!strcmp(ps->s, "first")) p->prepend_scheme = PS_FIRST;
            else if (!strcmp(ps->s, "never")) p->prepend_scheme = PS_NEVER;
            else return errf(err, errlen, "%s.prepend_scheme: \"%s\" is not always/first/never", path, ps->s);
        }
        const struct tjson *aps = tok_json_get(j, "add_prefix_space");
        if (aps && aps->type == TJ_FALSE) {
            if (p->prepend_scheme != PS_NEVER && tj_is_str(ps))
                return errf(err, errlen, "%s: add_prefix_space does not match declared prepend_scheme", path);
            p->prepend_scheme = PS_NEVER;
        }
        p->split = jbool(tok_json_get(j, "split"), true);
    } else if (!strcmp(type, "Digits")) {
        p->type = PT_DIGITS;
        p->individual_digits = jbool(tok_json_get(j, "individual_digits"), false);
    } else if (!strcmp(type, "Punctuation")) {
        p->type = PT_PUNCT;
        p->behavior = SB_ISOLATED;
        const struct tjson *b = tok_json_get(j, "behavior");
        if (b && parse_behavior(b, &p->behavior)) return errf(err, errlen, "%s.behavior: unknown behavior", path);
    } else if (!strcmp(type, "Whitespace")) {
        p->type = PT_WHITESPACE;
    } else if (!strcmp(type, "WhitespaceSplit")) {
        p->type = PT_WHITESPACE_SPLIT;
    } else if (!strcmp(type, "BertPreTokenizer")) {
        p->type = PT_BERT;
    } else if (!strcmp(type, "CharDelimiterSplit")) {
        p->type = PT_CHAR_DELIM;
        if (one_char(tok_json_get(j, "delimiter"), p->repl, &p->repl_len))
            return errf(err, errlen, "%s.delimiter: expected one character", path);
    } else {
        return errf(err, errlen, "%s: pre-tokenizer type \"%s\" is not supported", path, type);
    }
    t->n_pre++;
    return 0;
}

/* ---- post-processors -------------------------------------------------------- */

static void tpl_free(struct tpl_piece *p, int n) {
    for (int i = 0; i < n; i++) free(p[i].ids);
    free(p);
}

/* Replace the $A piece of outer with the pieces of *cur. */
static void tpl_compose(struct tokenizer *t, struct tpl_piece *outer, int nouter) {
    int n = 0;
    for (int i = 0; i < nouter; i++) n += outer[i].seq ? t->n_tpl : 1;
    struct tpl_piece *np = xcalloc((size_t)MAX(n, 1), sizeof *np);
    int k = 0;
    for (int i = 0; i < nouter; i++) {
        if (outer[i].seq) {
            for (int m = 0; m < t->n_tpl; m++) {
                np[k] = t->tpl[m];
                if (t->tpl[m].ids) {
                    np[k].ids = xmalloc((size_t)t->tpl[m].n_ids * sizeof(int32_t));
                    memcpy(np[k].ids, t->tpl[m].ids, (size_t)t->tpl[m].n_ids * sizeof(int32_t));
                }
                k++;
            }
        } else {
            np[k++] = outer[i];
            outer[i].ids = NULL;
        }
    }
    tpl_free(outer, nouter);
    tpl_free(t->tpl, t->n_tpl);
    t->tpl = np;
    t->n_tpl = n;
    t->has_tpl = true;
}

static struct tpl_piece tpl_ids(const int32_t *ids, int n) {
    struct tpl_piece p = { .seq = false, .n_ids = n };
    p.ids = xmalloc((size_t)MAX(n, 1) * sizeof *p.ids);
    memcpy(p.ids, ids, (size_t)n * sizeof *ids);
    return p;
}

/* [token, id] of Roberta/Bert processors */
static int tok_pair(const struct tjson *j, int32_t *id) {
    if (!j || j->type != TJ_ARR || j->n != 2 || !j->child->next || j->child->next->type != TJ_NUM) return -1;
    *id = (int32_t)j->child->next->num;
    return 0;
}

static int post_load(struct tokenizer *t, const struct tjson *j, const char *path, char *err, size_t errlen) {
    if (!j || j->type == TJ_NULL) return 0;
    const struct tjson *ty = tok_json_get(j, "type");
    if (!tj_is_str(ty)) return errf(err, errlen, "%s.type: expected a string", path);
    const char *type = ty->s;
    if (!strcmp(type, "Sequence")) {
        const struct tjson *arr = tok_json_get(j, "processors");
        if (!arr || arr->type != TJ_ARR) return errf(err, errlen, "%s.processors: expected an array", path);
        int i = 0;
        for (const struct tjson *c = arr->child; c; c = c->next, i++) {
            char p2[256];
            snprintf(p2, sizeof p2, "%s.processors[%d]", path, i);
            if (post_load(t, c, p2, err, errlen)) return -1;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) return 0; /* offsets only */
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        int32_t cls, sep;
        if (tok_pair(tok_json_get(j, "cls"), &cls) || tok_pair(tok_json_get(j, "sep"), &sep))
            return errf(err, errlen, "%s: expected cls and sep as [token, id]", path);
        struct tpl_piece *p = xcalloc(3, sizeof *p);
        p[0] = tpl_ids(&cls, 1);
        p[1].seq = true;
        p[2] = tpl_ids(&sep, 1);
        tpl_compose(t, p, 3);
        return 0;
    }
    if (strcmp(type, "TemplateProcessing"))
        return errf(err, errlen, "%s: post-processor type \"%s\" is not supported", path, type);
    const struct tjson *single = tok_json_get(j, "single"), *special = tok_json_get(j, "special_tokens");
    if (!single || single->type != TJ_ARR) return errf(err, errlen, "%s.single: expected an array", path);
    struct tpl_piece *p = xcalloc(MAX(single->n, 1), sizeof *p);
    int n = 0, i = 0;
    for (const struct tjson *c = single->child; c; c = c->next, i++) {
        const struct tjson *seq = tok_json_get(c, "Sequence"), *sp = tok_json_get(c, "SpecialToken");
        if (seq) { p[n++].seq = true; continue; }
        const struct tjson *id = tok_json_get(sp, "id");
        if (!tj_is_str(id)) { tpl_free(p, n); return errf(err, errlen, "%s.single[%d]: expected Sequence or SpecialToken", path, i); }
        const struct tjson *st = tok_json_get(special, id->s), *ids = tok_json_get(st, "ids");
        if (!ids || ids->type != TJ_ARR) {
            tpl_free(p, n);
            return errf(err, errlen, "%s.special_tokens: missing \"%s\"", path, id->s);
        }
        int32_t buf[64];
        int k = 0;
        for (const struct tjson *x = ids->child; x && k < 64; x = x->next)
            if (x->type == TJ_NUM) buf[k++] = (int32_t)x->num;
        p[n++] = tpl_ids(buf, k);
    }
    tpl_compose(t, p, n);
    return 0;
}

/* ---- added tokens and their trie ------------------------------------------- */

static void trie_init(struct tok_trie *tr) {
    memset(tr, 0, sizeof *tr);
    tok_strmap_init(&tr->edges, 64);
    tr->cap_nodes = 64;
    tr->term = xmalloc(tr->cap_nodes * sizeof *tr->term);
    tr->term[0] = -1;
    tr->n_nodes = 1;
    tr->empty = true;
}

static void trie_free(struct tok_trie *tr) {
    tok_strmap_free(&tr->edges);
    free(tr->term);
}

static void trie_add(struct tok_trie *tr, const char *s, size_t n, int32_t idx) {
    if (!n) return;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        char key[5];
        memcpy(key, &node, 4);
        key[4] = s[i];
        int32_t c = tok_strmap_get(&tr->edges, key, 5);
        if (c < 0) {
            if (tr->n_nodes == tr->cap_nodes) {
                tr->cap_nodes *= 2;
                tr->term = realloc(tr->term, tr->cap_nodes * sizeof *tr->term);
                if (!tr->term) { log_error("out of memory"); abort(); }
            }
            c = (int32_t)tr->n_nodes++;
            tr->term[c] = -1;
            tok_strmap_put(&tr->edges, key, 5, c);
        }
        node = c;
    }
    tr->term[node] = idx;
    tr->first[(uint8_t)s[0]] = 1;
    tr->empty = false;
}

/* Longest added token starting at s[0..n); its length, or 0 (*idx its index). */
static size_t trie_longest(const struct tok_trie *tr, const char *s, size_t n, int32_t *idx) {
    int32_t node = 0;
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        char key[5];
        memcpy(key, &node, 4);
        key[4] = s[i];
        int32_t c = tok_strmap_get(&tr->edges, key, 5);
        if (c < 0) break;
        node = c;
        if (tr->term[node] >= 0) { best = i + 1; *idx = tr->term[node]; }
    }
    return best;
}

/* ---- the per-call encoder --------------------------------------------------- */

struct aspan { uint32_t s, e; int32_t id; };
struct aspanbuf { struct aspan *p; size_t n, cap; };

static void aspan_push(struct aspanbuf *b, uint32_t s, uint32_t e, int32_t id) {
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16;
        b->p = realloc(b->p, b->cap * sizeof *b->p);
        if (!b->p) { log_error("out of memory"); abort(); }
    }
    b->p[b->n++] = (struct aspan){ s, e, id };
}

struct enc {
    const struct tokenizer *t;
    struct ibuf *out;
    struct tbuf na, nb;                   /* normalizer double buffer */
    struct tbuf sa[MAX_STAGES], sb[MAX_STAGES];
    struct spanbuf spans[MAX_STAGES];
    struct aspanbuf araw, anorm;
    struct tok_matcher m;
    struct bpe_scratch *bs;
    utf8proc_int32_t *u32; size_t u32cap;
    char *err; size_t errlen;
};

static void enc_free(struct enc *e) {
    free(e->na.p);
    free(e->nb.p);
    for (int i = 0; i < MAX_STAGES; i++) { free(e->sa[i].p); free(e->sb[i].p); free(e->spans[i].p); }
    free(e->araw.p);
    free(e->anorm.p);
    tok_matcher_free(&e->m);
    tok_bpe_scratch_free(e->bs);
    free(e->u32);
}

/* tokenizers' AddedVocabulary::find_matches: spans covering s[0..n), id -1 for text. */
static void added_split(const struct tokenizer *t, const struct tok_trie *tr, const char *s, size_t n,
                        struct aspanbuf *out) {
    out->n = 0;
    size_t start_offset = 0, i = 0;
    if (!tr->empty) {
        while (i < n) {
            if (!tr->first[(uint8_t)s[i]]) { i++; continue; }
            int32_t idx = -1;
            size_t l = trie_longest(tr, s + i, n - i, &idx);
            if (!l) { i++; continue; }
            size_t start = i, stop = i + l;
            i = stop; /* matching resumes after the match, even if it is rejected */
            const struct added_token *a = &t->added[idx];
            if (a->single_word) {
                bool start_space = true, stop_space = true;
                if (start > 0) { /* \w$ on s[..start] */
                    size_t k = start - 1;
                    while (k > 0 && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
                    int cl;
                    start_space = !tok_uni_is_word(utf8_decode(s + k, &cl));
                }
                if (stop < n) {
                    int cl;
                    stop_space = !tok_uni_is_word(utf8_decode(s + stop, &cl));
                }
                if (!start_space || !stop_space) continue;
            }
            if (a->lstrip) { /* \s*$ on s[..start] */
                size_t k = start;
                while (k > 0) {
                    size_t q = k - 1;
                    while (q > 0 && ((uint8_t)s[q] & 0xC0) == 0x80) q--;
                    int cl;
                    if (!tok_uni_is_whitespace(utf8_decode(s + q, &cl))) break;
                    k = q;
                }
                start = MAX(k, start_offset);
            }
            if (a->rstrip) {
                while (stop < n) {
                    int cl;
                    if (!tok_uni_is_whitespace(utf8_decode(s + stop, &cl))) break;
                    stop += (size_t)cl;
                }
            }
            if (start_offset < start) aspan_push(out, (uint32_t)start_offset, (uint32_t)start, -1);
            aspan_push(out, (uint32_t)start, (uint32_t)stop, a->id);
            start_offset = stop;
        }
    }
    if (start_offset < n) aspan_push(out, (uint32_t)start_offset, (uint32_t)n, -1);
}

/* ---- normalization ------------------------------------------------------------ */

static bool nf_inert(int type, uint32_t c) {
    if ((c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF)) return true;
    switch (type) {
    case N_NFC:
        return c < 0x300 || (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0x3041 && c <= 0x3096) ||
               (c >= 0x30A1 && c <= 0x30FA) || (c >= 0x3000 && c <= 0x3029);
    case N_NFKC:
        return (c >= 0xC0 && c <= 0xFF) || (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0x3041 && c <= 0x3096) ||
               (c >= 0x30A1 && c <= 0x30FA);
    default:
        return false;
    }
}

static void nf_chunk(struct enc *e, int type, const char *s, size_t n, struct tbuf *out) {
    int opt = UTF8PROC_STABLE;
    if (type == N_NFC || type == N_NFKC) opt |= UTF8PROC_COMPOSE;
    else opt |= UTF8PROC_DECOMPOSE;
    if (type == N_NFKC || type == N_NFKD) opt |= UTF8PROC_COMPAT;
    for (;;) {
        utf8proc_ssize_t r = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, e->u32,
                                                (utf8proc_ssize_t)e->u32cap, (utf8proc_option_t)opt);
        if (r < 0) { tbuf_put(out, s, n); return; } /* cannot happen on valid UTF-8 */
        if ((size_t)r > e->u32cap) {
            e->u32cap = (size_t)r * 2;
            free(e->u32);
            e->u32 = xmalloc(e->u32cap * sizeof *e->u32);
            continue;
        }
        r = utf8proc_normalize_utf32(e->u32, r, (utf8proc_option_t)opt);
        tbuf_reserve(out, (size_t)r * 4);
        for (utf8proc_ssize_t i = 0; i < r; i++) out->n += (size_t)tok_utf8_encode((uint32_t)e->u32[i], out->p + out->n);
        out->p[out->n] = 0;
        return;
    }
}

/* Unicode normalization in chunks: ASCII characters are safe cut points (a
 * starter that composes with nothing before it), so runs of non-ASCII text
 * (with the ASCII character before them, which a combining mark may join) go
 * through utf8proc only when they hold a character outside the form's inert
 * ranges. Characters newer than the library's Unicode data
 * (tok_uni_norm_opaque) are cut points too and stay as they are: to the
 * library they are unassigned starters, which block reordering and
 * composition on both sides. */
static void nf_apply(struct enc *e, int type, const char *s, size_t n, struct tbuf *out) {
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && (uint8_t)s[j] < 0x80) j++;
        if (j == n) { tbuf_put(out, s + i, n - i); break; }
        size_t cs = j > i ? j - 1 : j; /* the chunk starts with the preceding ASCII char */
        tbuf_put(out, s + i, cs - i);
        bool need = false;
        size_t k = j;
        while (k < n && (uint8_t)s[k] >= 0x80) {
            int l;
            uint32_t c = utf8_decode(s + k, &l);
            if (tok_uni_norm_opaque(c)) {
                if (need) nf_chunk(e, type, s + cs, k - cs, out);
                else tbuf_put(out, s + cs, k - cs);
                tbuf_put(out, s + k, (size_t)l);
                need = false;
                cs = k + (size_t)l;
            } else if (!nf_inert(type, c)) {
                need = true;
            }
            k += (size_t)l;
        }
        if (need) nf_chunk(e, type, s + cs, k - cs, out);
        else tbuf_put(out, s + cs, k - cs);
        i = k;
    }
}

/* Applies every normalizer to s[0..n); the result is in *res (one of e->na/nb). */
static void normalize(struct enc *e, const char *s, size_t n, const char **res, size_t *rn) {
    const struct tokenizer *t = e->t;
    const char *cur = s;
    size_t cn = n;
    for (int k = 0; k < t->n_norm; k++) {
        const struct normalizer *nm = &t->norm[k];
        struct tbuf *out = (cur == e->na.p) ? &e->nb : &e->na;
        out->n = 0;
        tbuf_reserve(out, cn + 16);
        switch (nm->type) {
        case N_NFC: case N_NFD: case N_NFKC: case N_NFKD:
            nf_apply(e, nm->type, cur, cn, out);
            break;
        case N_LOWERCASE:
            for (size_t i = 0; i < cn;) {
                int l;
                uint32_t c = utf8_decode(cur + i, &l);
                if (c < 0x80) tbuf_putc(out, (char)(c >= 'A' && c <= 'Z' ? c + 32 : c));
                else {
                    uint32_t lc[3];
                    int m = tok_uni_lower(c, lc);
                    for (int q = 0; q < m; q++) {
                        char b[4];
                        tbuf_put(out, b, (size_t)tok_utf8_encode(lc[q], b));
                    }
                }
                i += (size_t)l;
            }
            break;
        case N_STRIP_ACCENTS:
            for (size_t i = 0; i < cn;) {
                int l;
                uint32_t c = utf8_decode(cur + i, &l);
                if (!tok_uni_is_mark(c)) tbuf_put(out, cur + i, (size_t)l);
                i += (size_t)l;
            }
            break;
        case N_BYTELEVEL:
            for (size_t i = 0; i < cn; i++) {
                int l;
                const char *u = tok_byte_char_utf8((uint8_t)cur[i], &l);
                tbuf_put(out, u, (size_t)l);
            }
            break;
        case N_PREPEND:
            if (cn) tbuf_put(out, nm->content, nm->clen);
            tbuf_put(out, cur, cn);
            break;
        case N_STRIP: {
            size_t a = 0, b = cn;
            if (nm->left)
                while (a < b) {
                    int l;
                    if (!tok_uni_is_whitespace(utf8_decode(cur + a, &l))) break;
                    a += (size_t)l;
                }
            if (nm->right)
                while (b > a) {
                    size_t q = b - 1;
                    while (q > a && ((uint8_t)cur[q] & 0xC0) == 0x80) q--;
                    int l;
                    if (!tok_uni_is_whitespace(utf8_decode(cur + q, &l))) break;
                    b = q;
                }
            tbuf_put(out, cur + a, b - a);
            break;
        }
        case N_REPLACE: {
            struct spanbuf *sp = &e->spans[0];
            sp->n = 0;
            if (tok_regex_find(&nm->re, &e->m, cur, cn, sp)) { tbuf_put(out, cur, cn); break; }
            for (size_t i = 0; i < sp->n; i++) {
                if (sp->p[i].match) tbuf_put(out, nm->content, nm->clen);
                else tbuf_put(out, cur + sp->p[i].s, sp->p[i].e - sp->p[i].s);
            }
            break;
        }
        }
        cur = out->p ? out->p : "";
        cn = out->n;
    }
    *res = cur;
    *rn = cn;
}

/* ---- pre-tokenization ------------------------------------------------------------ */

static int pt_run(struct enc *e, int k, const char *s, size_t n, bool at_origin);

/* Applies a split behavior to spans (in place) and runs the next stage on
 * each resulting piece. */
static int pt_emit(struct enc *e, int k, const char *s, struct spanbuf *sp, int behavior, bool at_origin) {
    size_t m = 0;
    struct span *v = sp->p;
    switch (behavior) {
    case SB_REMOVED:
        for (size_t i = 0; i < sp->n; i++)
            if (!v[i].match) v[m++] = v[i];
        break;
    case SB_ISOLATED:
        m = sp->n;
        break;
    case SB_CONTIGUOUS: {
        bool prev = false;
        for (size_t i = 0; i < sp->n; i++) {
            if (m > 0 && v[i].match == prev) v[m - 1].e = v[i].e;
            else v[m++] = v[i];
            prev = v[i].match;
        }
        break;
    }
    case SB_MERGED_PREV: {
        bool prev = false;
        for (size_t i = 0; i < sp->n; i++) {
            bool mt = v[i].match;
            if (mt && !prev && m > 0) v[m - 1].e = v[i].e;
            else v[m++] = v[i];
            prev = mt;
        }
        break;
    }
    case SB_MERGED_NEXT: { /* the same from the right end */
        bool prev = false;
        size_t w = sp->n;
        for (size_t i = sp->n; i-- > 0;) {
            bool mt = v[i].match;
            if (mt && !prev && w < sp->n) v[w].s = v[i].s;
            else v[--w] = v[i];
            prev = mt;
        }
        memmove(v, v + w, (sp->n - w) * sizeof *v);
        m = sp->n - w;
        break;
    }
    }
    /* the next stage may reuse this stage's span buffer only through its own
     * index, so iterating v here is safe */
    for (size_t i = 0; i < m; i++) {
        uint32_t a = v[i].s, b = v[i].e;
        if (b > a && pt_run(e, k + 1, s + a, b - a, at_origin && a == 0)) return -1;
    }
    return 0;
}

/* Char-predicate split (tokenizers' Pattern for Fn(char) -> bool): every
 * matching character is one match. */
static void pred_spans(const char *s, size_t n, bool (*pred)(uint32_t, const void *), const void *arg,
                       struct spanbuf *out) {
    out->n = 0;
    size_t last = 0, i = 0;
    while (i < n) {
        int l;
        uint32_t c = utf8_decode(s + i, &l);
        if (pred(c, arg)) {
            if (last < i) tok_spanbuf_push(out, (uint32_t)last, (uint32_t)i, 0);
            tok_spanbuf_push(out, (uint32_t)i, (uint32_t)(i + (size_t)l), 1);
            last = i + (size_t)l;
        }
        i += (size_t)l;
    }
    if (last < n) tok_spanbuf_push(out, (uint32_t)last, (uint32_t)n, 0);
}

static bool p_numeric(uint32_t c, const void *a) { (void)a; return tok_uni_is_numeric(c); }
static bool p_punct(uint32_t c, const void *a) { (void)a; return tok_uni_is_punct(c); }
static bool p_space(uint32_t c, const void *a) { (void)a; return tok_uni_is_whitespace(c); }
static bool p_char(uint32_t c, const void *a) { return c == *(const uint32_t *)a; }

static const char *byte_chars[256];
static int byte_char_len[256];
static pthread_once_t byte_chars_once = PTHREAD_ONCE_INIT;
static char byte_chars_buf[256 * 3];

static void byte_chars_init(void) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t c;
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) c = (uint32_t)b;
        else c = 256u + (uint32_t)n++;
        byte_char_len[b] = tok_utf8_encode(c, byte_chars_buf + b * 3);
        byte_chars[b] = byte_chars_buf + b * 3;
    }
}

const char *tok_byte_char_utf8(int b, int *len) {
    pthread_once(&byte_chars_once, byte_chars_init);
    *len = byte_char_len[b];
    return byte_chars[b];
}

static int model_word(struct enc *e, const char *s, size_t n) {
    return tok_bpe_tokenize(&e->t->bpe, &e->bs, s, n, e->out, e->err, e->errlen);
}

static int pt_run(struct enc *e, int k, const char *s, size_t n, bool at_origin) {
    const struct tokenizer *t = e->t;
    if (n == 0) return 0;
    if (k == t->n_pre) return model_word(e, s, n);
    const struct pretok *p = &t->pre[k];
    struct spanbuf *sp = &e->spans[k];
    sp->n = 0;
    switch (p->type) {
    case PT_SPLIT:
        if (tok_regex_find(&p->re, &e->m, s, n, sp)) return errf(e->err, e->errlen, "regex matching failed");
        if (p->invert)
            for (size_t i = 0; i < sp->n; i++) sp->p[i].match = !sp->p[i].match;
        return pt_emit(e, k, s, sp, p->behavior, at_origin);
    case PT_BYTELEVEL: {
        if (p->add_prefix_space && s[0] != ' ') {
            struct tbuf *a = &e->sa[k];
            a->n = 0;
            tbuf_putc(a, ' ');
            tbuf_put(a, s, n);
            s = a->p;
            n = a->n;
        }
        bool raw = t->bpe.raw_mode && k == t->n_pre - 1;
        if (p->use_regex) {
            if (tok_regex_find(&p->re, &e->m, s, n, sp)) return errf(e->err, e->errlen, "regex matching failed");
        } else {
            tok_spanbuf_push(sp, 0, (uint32_t)n, 0);
        }
        for (size_t i = 0; i < sp->n; i++) {
            const char *w = s + sp->p[i].s;
            size_t wn = sp->p[i].e - sp->p[i].s;
            if (!wn) continue;
            if (raw) {
                if (pt_run(e, k + 1, w, wn, at_origin && sp->p[i].s == 0)) return -1;
                continue;
            }
            struct tbuf *b = &e->sb[k];
            b->n = 0;
            for (size_t q = 0; q < wn; q++) {
                int l;
                const char *u = tok_byte_char_utf8((uint8_t)w[q], &l);
                tbuf_put(b, u, (size_t)l);
            }
            if (pt_run(e, k + 1, b->p, b->n, at_origin && sp->p[i].s == 0)) return -1;
        }
        return 0;
    }
    case PT_METASPACE: {
        struct tbuf *a = &e->sa[k];
        a->n = 0;
        bool starts = n >= (size_t)p->repl_len && !memcmp(s, p->repl, (size_t)p->repl_len);
        bool has_space_first = s[0] == ' ';
        bool prepend = !starts && !has_space_first &&
                       (p->prepend_scheme == PS_ALWAYS || (p->prepend_scheme == PS_FIRST && at_origin));
        if (prepend) tbuf_put(a, p->repl, (size_t)p->repl_len);
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') tbuf_put(a, p->repl, (size_t)p->repl_len);
            else tbuf_putc(a, s[i]);
        }
        if (!p->split) return pt_run(e, k + 1, a->p, a->n, at_origin);
        struct tok_regex lit = { .lit = (char *)p->repl, .litlen = (size_t)p->repl_len };
        tok_regex_find(&lit, &e->m, a->p, a->n, sp);
        return pt_emit(e, k, a->p, sp, SB_MERGED_NEXT, at_origin);
    }
    case PT_DIGITS:
        pred_spans(s, n, p_numeric, NULL, sp);
        return pt_emit(e, k, s, sp, p->individual_digits ? SB_ISOLATED : SB_CONTIGUOUS, at_origin);
    case PT_PUNCT:
        pred_spans(s, n, p_punct, NULL, sp);
        return pt_emit(e, k, s, sp, p->behavior, at_origin);
    case PT_WHITESPACE_SPLIT:
        pred_spans(s, n, p_space, NULL, sp);
        return pt_emit(e, k, s, sp, SB_REMOVED, at_origin);
    case PT_CHAR_DELIM: {
        int l;
        uint32_t c = utf8_decode(p->repl, &l);
        pred_spans(s, n, p_char, &c, sp);
        return pt_emit(e, k, s, sp, SB_REMOVED, at_origin);
    }
    case PT_WHITESPACE: { /* \w+|[^\w\s]+ kept, the rest removed */
        size_t i = 0;
        while (i < n) {
            int l;
            uint32_t c = utf8_decode(s + i, &l);
            int cls = tok_uni_is_word(c) ? 1 : tok_uni_is_whitespace(c) ? 0 : 2;
            size_t j = i + (size_t)l;
            while (j < n) {
                int l2;
                uint32_t c2 = utf8_decode(s + j, &l2);
                int cls2 = tok_uni_is_word(c2) ? 1 : tok_uni_is_whitespace(c2) ? 0 : 2;
                if (cls2 != cls) break;
                j += (size_t)l2;
            }
            tok_spanbuf_push(sp, (uint32_t)i, (uint32_t)j, cls == 0);
            i = j;
        }
        return pt_emit(e, k, s, sp, SB_REMOVED, at_origin);
    }
    case PT_BERT: { /* whitespace removed, then punctuation isolated: one pass */
        size_t i = 0, last = 0;
        while (i < n) {
            int l;
            uint32_t c = utf8_decode(s + i, &l);
            bool ws = tok_uni_is_whitespace(c), pu = !ws && tok_uni_is_punct(c);
            if (ws || pu) {
                if (last < i) tok_spanbuf_push(sp, (uint32_t)last, (uint32_t)i, 0);
                if (pu) tok_spanbuf_push(sp, (uint32_t)i, (uint32_t)(i + (size_t)l), 0);
                last = i + (size_t)l;
            }
            i += (size_t)l;
        }
        if (last < n) tok_spanbuf_push(sp, (uint32_t)last, (uint32_t)n, 0);
        return pt_emit(e, k, s, sp, SB_ISOLATED, at_origin);
    }
    }
    return 0;
}

/* ---- encode ------------------------------------------------------------------ */

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int add_special_tokens,
                     int32_t **ids, int *n_ids, char *err, size_t errlen) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return errf(err, errlen, "encode: NULL text");
    if (len > (size_t)INT32_MAX) return errf(err, errlen, "encode: text too long (%zu bytes)", len);
    size_t v = tok_utf8_valid_prefix(text, len);
    if (v != len) return errf(err, errlen, "encode: invalid UTF-8 at byte %zu", v);
    struct ibuf seq = { 0 };
    struct enc e = { .t = t, .out = &seq, .err = err, .errlen = errlen };
    int rc = 0;
    struct aspanbuf *ar = &e.araw;
    added_split(t, &t->trie_raw, text, len, ar);
    for (size_t i = 0; i < ar->n && !rc; i++) {
        struct aspan a = ar->p[i];
        if (a.id >= 0) { ibuf_push(&seq, a.id); continue; }
        if (a.e == a.s) continue;
        const char *ns;
        size_t nn;
        normalize(&e, text + a.s, a.e - a.s, &ns, &nn);
        /* the normalized piece may live in e.na/e.nb, which the next piece
         * overwrites: it is fully consumed before that */
        struct aspanbuf *an = &e.anorm;
        added_split(t, &t->trie_norm, ns, nn, an);
        for (size_t j = 0; j < an->n && !rc; j++) {
            struct aspan b = an->p[j];
            if (b.id >= 0) ibuf_push(&seq, b.id);
            else if (b.e > b.s) rc = pt_run(&e, 0, ns + b.s, b.e - b.s, a.s == 0 && b.s == 0);
        }
    }
    enc_free(&e);
    if (rc) { free(seq.p); return -1; }
    struct ibuf out = { 0 };
    if (add_special_tokens && t->has_tpl) {
        for (int i = 0; i < t->n_tpl; i++) {
            if (t->tpl[i].seq)
                for (size_t k = 0; k < seq.n; k++) ibuf_push(&out, seq.p[k]);
            else
                for (int k = 0; k < t->tpl[i].n_ids; k++) ibuf_push(&out, t->tpl[i].ids[k]);
        }
        free(seq.p);
    } else {
        out = seq;
    }
    if (!out.p) out.p = xmalloc(sizeof(int32_t));
    *ids = out.p;
    *n_ids = (int)out.n;
    return 0;
}

/* ---- tokenizer_config.json, special tokens, chat templates ------------------- */

static const char *json_token_string(const struct tjson *v) {
    if (tj_is_str(v)) return v->s;
    const struct tjson *c = tok_json_get(v, "content");
    if (tj_is_str(c)) return c->s;
    return NULL;
}

static void sp_set(struct tokenizer *t, const char *name, const char *value) {
    for (int i = 0; i < t->n_sp; i++)
        if (!strcmp(t->sp[i].name, name)) {
            free(t->sp[i].value);
            t->sp[i].value = value ? xstrdup(value) : NULL;
            return;
        }
    t->sp = realloc(t->sp, (size_t)(t->n_sp + 1) * sizeof *t->sp);
    t->sp[t->n_sp].name = xstrdup(name);
    t->sp[t->n_sp].value = value ? xstrdup(value) : NULL;
    t->n_sp++;
}

static void sp_collect(struct tokenizer *t, const struct tjson *cfg) {
    if (!cfg || cfg->type != TJ_OBJ) return;
    for (const struct tjson *m = cfg->child; m; m = m->next) {
        size_t kl = m->klen;
        if (kl > 6 && !strcmp(m->key + kl - 6, "_token") && strncmp(m->key, "add_", 4)) {
            if (m->type == TJ_NULL) sp_set(t, m->key, NULL);
            else if (json_token_string(m)) sp_set(t, m->key, json_token_string(m));
        }
    }
    const struct tjson *extra = tok_json_get(cfg, "extra_special_tokens");
    if (extra && extra->type == TJ_OBJ)
        for (const struct tjson *m = extra->child; m; m = m->next)
            if (json_token_string(m)) sp_set(t, m->key, json_token_string(m));
}

static void ct_add(struct tokenizer *t, const char *name, const char *tpl, size_t len) {
    for (int i = 0; i < t->n_ct; i++)
        if (!strcmp(t->ct[i].name, name)) return; /* the first source wins */
    t->ct = realloc(t->ct, (size_t)(t->n_ct + 1) * sizeof *t->ct);
    t->ct[t->n_ct].name = xstrdup(name);
    t->ct[t->n_ct].value = dup_n(tpl, len);
    t->n_ct++;
}

/* chat_template as a string or [{name, template}]; sets the default if unset */
static int ct_collect(struct tokenizer *t, const struct tjson *ct, const char *file, char *err, size_t errlen) {
    if (!ct || ct->type == TJ_NULL) return 0;
    if (tj_is_str(ct)) {
        if (!t->chat_default) t->chat_default = dup_n(ct->s, ct->n);
        return 0;
    }
    if (ct->type != TJ_ARR) return errf(err, errlen, "%s: chat_template: expected a string or a list", file);
    int i = 0;
    for (const struct tjson *c = ct->child; c; c = c->next, i++) {
        const struct tjson *n = tok_json_get(c, "name"), *tp = tok_json_get(c, "template");
        if (!tj_is_str(n) || !tj_is_str(tp))
            return errf(err, errlen, "%s: chat_template[%d]: expected {\"name\": ..., \"template\": ...}", file, i);
        ct_add(t, n->s, tp->s, tp->n);
        if (!strcmp(n->s, "default") && !t->chat_default) t->chat_default = dup_n(tp->s, tp->n);
    }
    return 0;
}

static void ct_dir(struct tokenizer *t, const char *dir) {
    char path[4400];
    snprintf(path, sizeof path, "%s/additional_chat_templates", dir);
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l <= 6 || strcmp(de->d_name + l - 6, ".jinja")) continue;
        char fp[4800], name[256];
        snprintf(fp, sizeof fp, "%s/%s", path, de->d_name);
        snprintf(name, sizeof name, "%.*s", (int)MIN(l - 6, 255), de->d_name);
        size_t len;
        char e2[128];
        char *s = file_read_all(fp, &len, e2, sizeof e2);
        if (s) { ct_add(t, name, s, len); free(s); }
    }
    closedir(d);
}

/* transformers' update_post_processor: see the header comment. */
static void apply_bos_eos_rule(struct tokenizer *t, const struct tjson *cfg, bool json_has_post) {
    if (!cfg || cfg->type != TJ_OBJ) return;
    const struct tjson *ab = tok_json_get(cfg, "add_bos_token"), *ae = tok_json_get(cfg, "add_eos_token");
    const struct tjson *cls = tok_json_get(cfg, "tokenizer_class");
    bool llama_like = false;
    if (tj_is_str(cls)) {
        static const char *names[] = { "LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer",
                                       "CodeLlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast" };
        for (size_t i = 0; i < ARRAY_LEN(names); i++) llama_like = llama_like || !strcmp(cls->s, names[i]);
    }
    bool explicit_ = ab || ae || llama_like;
    if (!explicit_ && json_has_post) return;
    bool add_bos = ab ? ab->type == TJ_TRUE : llama_like;
    bool add_eos = ae && ae->type == TJ_TRUE;
    int32_t bos = add_bos ? tokenizer_special_id(t, "bos_token") : -1;
    int32_t eos = add_eos ? tokenizer_special_id(t, "eos_token") : -1;
    add_bos = bos >= 0;
    add_eos = eos >= 0;
    struct tpl_piece *p = xcalloc(3, sizeof *p);
    int n = 0;
    if (add_bos) p[n++] = tpl_ids(&bos, 1);
    p[n++].seq = true;
    if (add_eos) p[n++] = tpl_ids(&eos, 1);
    tpl_free(t->tpl, t->n_tpl);
    t->tpl = NULL;
    t->n_tpl = 1;
    t->tpl = xcalloc(1, sizeof *t->tpl);
    t->tpl[0].seq = true;
    tpl_compose(t, p, n);
}

/* ---- load ---------------------------------------------------------------------- */

static void tok_table_set(struct tokenizer *t, struct tbuf *arena, int32_t id, const char *s, size_t n) {
    t->tok_off[id] = (uint32_t)arena->n;
    t->tok_len[id] = (uint32_t)n;
    tbuf_put(arena, s, n);
    tbuf_putc(arena, 0);
}

/* tokenizers' AddedVocabulary::add_tokens, as run when a tokenizer.json is
 * read: a token already in the model vocabulary keeps that id; any other gets
 * the next free id from the model's vocabulary size on (the "id" field of the
 * file is not used; files written by the library agree with this). */
static int load_added(struct tokenizer *t, const struct tjson *arr, char *err, size_t errlen) {
    if (!arr || arr->type == TJ_NULL) return 0;
    if (arr->type != TJ_ARR) return errf(err, errlen, "added_tokens: expected an array");
    t->added = xcalloc(MAX(arr->n, 1), sizeof *t->added);
    tok_strmap_init(&t->added_map, arr->n);
    int64_t next_id = (int64_t)t->bpe.vocab.n;
    int i = 0;
    for (const struct tjson *a = arr->child; a; a = a->next, i++) {
        const struct tjson *c = tok_json_get(a, "content"), *id = tok_json_get(a, "id");
        if (!tj_is_str(c)) return errf(err, errlen, "added_tokens[%d].content: expected a string", i);
        if (id && (id->type != TJ_NUM || id->num < 0))
            return errf(err, errlen, "added_tokens[%d].id: expected a non-negative integer", i);
        if (c->n == 0) continue;
        struct added_token x = { 0 };
        x.special = jbool(tok_json_get(a, "special"), false);
        x.lstrip = jbool(tok_json_get(a, "lstrip"), false);
        x.rstrip = jbool(tok_json_get(a, "rstrip"), false);
        x.single_word = jbool(tok_json_get(a, "single_word"), false);
        x.normalized = jbool(tok_json_get(a, "normalized"), !x.special);
        x.off = (uint32_t)i; /* index into arr, resolved to the arena by the caller */
        int32_t prev = tok_strmap_get(&t->added_map, c->s, c->n);
        if (prev >= 0) { /* the same content again: its id, the newer flags */
            for (int k = 0; k < t->n_added; k++)
                if (t->added[k].id == prev) { x.id = prev; t->added[k] = x; break; }
            continue;
        }
        int32_t mid = tok_strmap_get(&t->bpe.vocab, c->s, c->n);
        if (mid >= 0) x.id = mid;
        else if (next_id >= INT32_MAX) return errf(err, errlen, "added_tokens[%d]: too many tokens", i);
        else x.id = (int32_t)next_id++;
        tok_strmap_put(&t->added_map, c->s, c->n, x.id);
        t->added[t->n_added++] = x;
    }
    return 0;
}

void tokenizer_free(struct tokenizer *t) {
    if (!t) return;
    free(t->strs);
    free(t->tok_off);
    free(t->tok_len);
    free(t->is_special);
    tok_strmap_free(&t->added_map);
    free(t->added);
    trie_free(&t->trie_raw);
    trie_free(&t->trie_norm);
    for (int i = 0; i < t->n_norm; i++) { tok_regex_free(&t->norm[i].re); free(t->norm[i].content); }
    free(t->norm);
    for (int i = 0; i < t->n_pre; i++) tok_regex_free(&t->pre[i].re);
    free(t->pre);
    tok_bpe_free(&t->bpe);
    tpl_free(t->tpl, t->n_tpl);
    tok_decoders_free(t);
    for (int i = 0; i < t->n_sp; i++) { free(t->sp[i].name); free(t->sp[i].value); }
    free(t->sp);
    free(t->chat_default);
    for (int i = 0; i < t->n_ct; i++) { free(t->ct[i].name); free(t->ct[i].value); }
    free(t->ct);
    free(t);
}

int tokenizer_load(struct tokenizer **out, const char *dir, char *err, size_t errlen) {
    *out = NULL;
    struct tjson_doc doc, cfg = { 0 }, stm = { 0 }, ctj = { 0 };
    if (read_json(&doc, dir, "tokenizer.json", true, err, errlen)) return -1;
    struct tokenizer *t = xcalloc(1, sizeof *t);
    trie_init(&t->trie_raw);
    trie_init(&t->trie_norm);
    t->tpl = xcalloc(1, sizeof *t->tpl); /* the identity template, $A; has_tpl stays false */
    t->tpl[0].seq = true;
    t->n_tpl = 1;
    char e2[768];
    const char *fail_file = "tokenizer.json";
    const struct tjson *root = doc.root;
    if (root->type != TJ_OBJ) { snprintf(e2, sizeof e2, "expected an object"); goto fail; }
    const struct tjson *model = tok_json_get(root, "model");
    if (!model || model->type != TJ_OBJ) { snprintf(e2, sizeof e2, "model: expected an object"); goto fail; }
    if (tok_bpe_load(t, model, e2, sizeof e2)) goto fail;
    if (load_added(t, tok_json_get(root, "added_tokens"), e2, sizeof e2)) goto fail;
    if (norm_load(t, tok_json_get(root, "normalizer"), "normalizer", e2, sizeof e2)) goto fail;
    if (pre_load(t, tok_json_get(root, "pre_tokenizer"), "pre_tokenizer", e2, sizeof e2)) goto fail;
    const struct tjson *post = tok_json_get(root, "post_processor");
    if (post_load(t, post, "post_processor", e2, sizeof e2)) goto fail;
    bool json_has_post = post && post->type != TJ_NULL;
    if (tok_decoder_load(t, tok_json_get(root, "decoder"), "decoder", e2, sizeof e2)) goto fail;
    if (t->n_pre > 0 && t->pre[t->n_pre - 1].type == PT_BYTELEVEL) tok_bpe_enable_raw(&t->bpe);

    /* id -> token table: the model's vocabulary, then added tokens over it */
    int64_t maxid = -1;
    for (size_t i = 0; i < t->bpe.vocab.cap; i++)
        if (t->bpe.vocab.slot[i].len != UINT32_MAX) maxid = MAX(maxid, (int64_t)t->bpe.vocab.slot[i].val);
    for (int i = 0; i < t->n_added; i++) maxid = MAX(maxid, (int64_t)t->added[i].id);
    if (maxid < 0) { snprintf(e2, sizeof e2, "model.vocab: empty vocabulary"); goto fail; }
    if (maxid >= (1 << 26)) { snprintf(e2, sizeof e2, "token id %lld is too large", (long long)maxid); goto fail; }
    t->n_vocab = (int)maxid + 1;
    t->tok_off = xmalloc((size_t)t->n_vocab * sizeof *t->tok_off);
    t->tok_len = xmalloc((size_t)t->n_vocab * sizeof *t->tok_len);
    t->is_special = xcalloc((size_t)t->n_vocab, 1);
    for (int i = 0; i < t->n_vocab; i++) t->tok_len[i] = UINT32_MAX;
    struct tbuf arena = { 0 };
    tbuf_reserve(&arena, t->bpe.vocab.klen + 1024);
    for (size_t i = 0; i < t->bpe.vocab.cap; i++) {
        const struct strmap_slot *s = &t->bpe.vocab.slot[i];
        if (s->len != UINT32_MAX) tok_table_set(t, &arena, s->val, t->bpe.vocab.keys + s->off, s->len);
    }
    {
        const struct tjson *arr = tok_json_get(root, "added_tokens");
        const struct tjson *a = arr ? arr->child : NULL;
        int ai = 0;
        for (int i = 0; i < t->n_added; i++) {
            if (ai > (int)t->added[i].off) { a = arr->child; ai = 0; } /* a re-added token */
            while (a && ai < (int)t->added[i].off) { a = a->next; ai++; }
            const struct tjson *c = tok_json_get(a, "content");
            struct added_token *x = &t->added[i];
            tok_table_set(t, &arena, x->id, c->s, c->n);
            x->off = t->tok_off[x->id];
            x->len = c->n;
            if (x->special) t->is_special[x->id] = 1;
        }
    }
    t->strs = arena.p;
    t->strs_len = arena.n;
    tok_json_free(&doc);

    /* tokenizer_config.json, special_tokens_map.json */
    fail_file = "tokenizer_config.json";
    int rc = read_json(&cfg, dir, "tokenizer_config.json", false, e2, sizeof e2);
    if (rc < 0) goto fail_msg;
    fail_file = "special_tokens_map.json";
    rc = read_json(&stm, dir, "special_tokens_map.json", false, e2, sizeof e2);
    if (rc < 0) goto fail_msg;
    sp_collect(t, cfg.root);
    sp_collect(t, stm.root);
    /* named special tokens that tokenizer.json lacks become special added
     * tokens (transformers adds them), when the vocabulary has them */
    for (int i = 0; i < t->n_sp; i++) {
        const char *v = t->sp[i].value;
        if (!v || !*v || tok_strmap_get(&t->added_map, v, strlen(v)) >= 0) continue;
        int32_t id = tok_strmap_get(&t->bpe.vocab, v, strlen(v));
        if (id < 0) continue;
        t->added = realloc(t->added, (size_t)(t->n_added + 1) * sizeof *t->added);
        struct added_token *x = &t->added[t->n_added++];
        memset(x, 0, sizeof *x);
        x->id = id;
        x->special = true;
        x->off = t->tok_off[id];
        x->len = t->tok_len[id];
        if (!t->added_map.cap) tok_strmap_init(&t->added_map, 16);
        tok_strmap_put(&t->added_map, v, strlen(v), id);
        t->is_special[id] = 1;
    }
    apply_bos_eos_rule(t, cfg.root, json_has_post);
    fail_file = "tokenizer_config.json";
    if (cfg.root && ct_collect(t, tok_json_get(cfg.root, "chat_template"), "tokenizer_config.json", e2, sizeof e2))
        goto fail_msg;

    /* chat templates: chat_template.jinja wins over the config's */
    {
        char path[4300];
        snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
        size_t len;
        char e3[256];
        struct stat st;
        if (stat(path, &st) == 0) {
            char *s = file_read_all(path, &len, e3, sizeof e3);
            if (!s) { fail_file = "chat_template.jinja"; snprintf(e2, sizeof e2, "%s", e3); goto fail_msg; }
            free(t->chat_default);
            t->chat_default = s;
        }
        fail_file = "chat_template.json";
        rc = read_json(&ctj, dir, "chat_template.json", false, e2, sizeof e2);
        if (rc < 0) goto fail_msg;
        if (rc == 0 && ct_collect(t, tok_json_get(ctj.root, "chat_template"), "chat_template.json", e2, sizeof e2))
            goto fail_msg;
        ct_dir(t, dir);
    }

    /* added-token tries: normalized ones are matched in normalized text */
    for (int i = 0; i < t->n_added; i++) {
        const struct added_token *x = &t->added[i];
        const char *c = t->strs + x->off;
        if (!x->normalized) {
            trie_add(&t->trie_raw, c, x->len, i);
        } else {
            struct enc e = { .t = t };
            const char *ns;
            size_t nn;
            normalize(&e, c, x->len, &ns, &nn);
            trie_add(&t->trie_norm, ns, nn, i);
            enc_free(&e);
        }
    }
    tok_json_free(&cfg);
    tok_json_free(&stm);
    tok_json_free(&ctj);
    *out = t;
    return 0;

fail:
    errf(err, errlen, "%s/%s: %s", dir, fail_file, e2);
    tok_json_free(&doc);
    tokenizer_free(t);
    return -1;
fail_msg: /* e2 already names the file (read_json) or is a bare message */
    if (strstr(e2, fail_file)) errf(err, errlen, "%s", e2);
    else errf(err, errlen, "%s/%s: %s", dir, fail_file, e2);
    tok_json_free(&cfg);
    tok_json_free(&stm);
    tok_json_free(&ctj);
    tokenizer_free(t);
    return -1;
}

/* ---- accessors -------------------------------------------------------------------- */

int tokenizer_n_vocab(const struct tokenizer *t) { return t->n_vocab; }

const char *tokenizer_id_to_token(const struct tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab || t->tok_len[id] == UINT32_MAX) return NULL;
    return t->strs + t->tok_off[id];
}

int32_t tokenizer_token_to_id(const struct tokenizer *t, const char *token) {
    size_t n = strlen(token);
    int32_t id = t->added_map.cap ? tok_strmap_get(&t->added_map, token, n) : -1;
    return id >= 0 ? id : tok_strmap_get(&t->bpe.vocab, token, n);
}

int tokenizer_is_special(const struct tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->is_special[id];
}

const char *tokenizer_special_token(const struct tokenizer *t, const char *name) {
    for (int i = 0; i < t->n_sp; i++)
        if (!strcmp(t->sp[i].name, name)) return t->sp[i].value;
    return NULL;
}

int32_t tokenizer_special_id(const struct tokenizer *t, const char *name) {
    const char *v = tokenizer_special_token(t, name);
    return v ? tokenizer_token_to_id(t, v) : -1;
}

const char *tokenizer_chat_template(const struct tokenizer *t, const char *name) {
    if (!name) return t->chat_default;
    for (int i = 0; i < t->n_ct; i++)
        if (!strcmp(t->ct[i].name, name)) return t->ct[i].value;
    return NULL;
}
