/* tok_util.c — the tokenizer's building blocks: UTF-8 validation and Rust's
 * lossy conversion, the Unicode predicates the Rust code uses (from
 * utf8proc's tables), the two hash maps, and the regexes.
 *
 * Regexes: tokenizer.json patterns are written for Oniguruma (what Hugging
 * Face tokenizers uses); they are translated to PCRE2 and JIT-compiled. The
 * differences that matter, measured against tokenizers:
 *   \s  Oniguruma: White_Space only; PCRE2 also counts U+180E -> explicit class
 *   \w  Oniguruma: letters, marks, digits, connectors; PCRE2 10.42 (UCP) has no
 *       marks -> explicit class
 *   \h  Oniguruma (Ruby syntax): a hex digit; PCRE2: horizontal space
 *   X{n,m}+  Oniguruma: greedy (X{n,m})+; PCRE2: possessive -> wrapped
 *   \uHHHH  Oniguruma only -> \x{HHHH}
 * Iteration over matches follows the onig crate's find_iter (an empty match
 * right after the previous match is skipped by one character). Subjects are
 * validated once by the caller, so matching passes PCRE2_NO_UTF_CHECK.
 * Owns: nothing shared; maps and compiled regexes belong to whoever
 * initialized them. Does not: support \S/\W/\H inside a character class or nested classes
 * (load fails with a message; no known tokenizer uses them). */
#define _GNU_SOURCE /* memmem */
#include "text/tok_internal.h"

#include <stdio.h>
#include <utf8proc.h>
#include <xxhash.h>

/* ---- UTF-8 ---------------------------------------------------------------- */

/* bytes that may follow lead byte c as the second byte */
static inline bool utf8_second_ok(uint8_t lead, uint8_t b) {
    switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return b >= 0x80 && b <= 0xBF;
    }
}
static inline int utf8_width(uint8_t lead) {
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

size_t tok_utf8_valid_prefix(const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            /* 8 ASCII bytes at a time */
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, u + i, 8);
                if (w & 0x8080808080808080ull) break;
                i += 8;
            }
            while (i < n && u[i] < 0x80) i++;
            continue;
        }
        int w = utf8_width(u[i]);
        if (!w || i + (size_t)w > n || !utf8_second_ok(u[i], u[i + 1])) return i;
        for (int k = 2; k < w; k++)
            if ((u[i + (size_t)k] & 0xC0) != 0x80) return i;
        i += (size_t)w;
    }
    return n;
}

int tok_utf8_encode(uint32_t cp, char *out) {
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) { o[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { o[0] = (uint8_t)(0xC0 | (cp >> 6)); o[1] = (uint8_t)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

void tok_utf8_lossy_append(struct tbuf *out, const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    static const char fffd[3] = { (char)0xEF, (char)0xBF, (char)0xBD };
    tbuf_reserve(out, n + n / 2 + 3);
    size_t i = 0;
    while (i < n) {
        size_t v = tok_utf8_valid_prefix(s + i, n - i);
        tbuf_put(out, s + i, v);
        i += v;
        if (i >= n) break;
        /* one maximal ill-formed subpart */
        int w = utf8_width(u[i]);
        size_t skip = 1;
        if (w && i + 1 < n && utf8_second_ok(u[i], u[i + 1])) {
            skip = 2;
            while ((int)skip < w && i + skip < n && (u[i + skip] & 0xC0) == 0x80) skip++;
        }
        tbuf_put(out, fffd, 3);
        i += skip;
    }
}

/* ---- Unicode predicates ---------------------------------------------------- */

bool tok_uni_is_whitespace(uint32_t c) {
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    if (c < 0x85) return false;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

bool tok_uni_is_numeric(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

bool tok_uni_is_punct(uint32_t c) {
    if (c < 0x80) return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
                         (c >= 0x7B && c <= 0x7E);
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

bool tok_uni_is_word(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9)) return true;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_ND) || k == UTF8PROC_CATEGORY_NL ||
           k == UTF8PROC_CATEGORY_PC;
}

bool tok_uni_is_mark_nonspacing(uint32_t c) {
    return c >= 0x300 && utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_MN;
}

/* ---- hash maps ------------------------------------------------------------- */

uint64_t tok_hash(const void *p, size_t n) { return XXH3_64bits(p, n); }

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

void tok_strmap_init(struct strmap *m, size_t expect) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expect + expect / 2 + 1);
    m->slot = xmalloc(m->cap * sizeof *m->slot);
    for (size_t i = 0; i < m->cap; i++) m->slot[i].len = UINT32_MAX;
}

void tok_strmap_free(struct strmap *m) {
    free(m->slot);
    free(m->keys);
    memset(m, 0, sizeof *m);
}

static void tok_strmap_grow(struct strmap *m) {
    struct strmap_slot *old = m->slot;
    size_t oc = m->cap;
    m->cap *= 2;
    m->slot = xmalloc(m->cap * sizeof *m->slot);
    for (size_t i = 0; i < m->cap; i++) m->slot[i].len = UINT32_MAX;
    for (size_t i = 0; i < oc; i++) {
        if (old[i].len == UINT32_MAX) continue;
        size_t j = (size_t)old[i].h & (m->cap - 1);
        while (m->slot[j].len != UINT32_MAX) j = (j + 1) & (m->cap - 1);
        m->slot[j] = old[i];
    }
    free(old);
}

void tok_strmap_put(struct strmap *m, const char *k, size_t len, int32_t val) {
    if ((m->n + 1) * 3 > m->cap * 2) tok_strmap_grow(m);
    uint64_t h = tok_hash(k, len);
    size_t mask = m->cap - 1, i = (size_t)h & mask;
    for (;;) {
        struct strmap_slot *s = &m->slot[i];
        if (s->len == UINT32_MAX) break;
        if (s->h == h && s->len == len && !memcmp(m->keys + s->off, k, len)) { s->val = val; return; }
        i = (i + 1) & mask;
    }
    if (m->klen + len + 1 > m->kcap) {
        size_t c = m->kcap ? m->kcap : 4096;
        while (c < m->klen + len + 1) c *= 2;
        char *nk = realloc(m->keys, c);
        if (!nk) { log_error("out of memory"); abort(); }
        m->keys = nk;
        m->kcap = c;
    }
    memcpy(m->keys + m->klen, k, len);
    m->keys[m->klen + len] = 0;
    m->slot[i] = (struct strmap_slot){ .h = h, .off = (uint32_t)m->klen, .len = (uint32_t)len, .val = val };
    m->klen += len + 1;
    m->n++;
}

int32_t tok_strmap_get(const struct strmap *m, const char *k, size_t len) {
    if (!m->cap) return -1;
    uint64_t h = tok_hash(k, len);
    size_t mask = m->cap - 1, i = (size_t)h & mask;
    for (;;) {
        const struct strmap_slot *s = &m->slot[i];
        if (s->len == UINT32_MAX) return -1;
        if (s->h == h && s->len == len && !memcmp(m->keys + s->off, k, len)) return s->val;
        i = (i + 1) & mask;
    }
}

void tok_mergemap_init(struct mergemap *m, size_t expect) {
    m->cap = pow2_at_least(expect * 2 + 1);
    m->n = 0;
    m->slot = xmalloc(m->cap * sizeof *m->slot);
    for (size_t i = 0; i < m->cap; i++) m->slot[i].key = UINT64_MAX;
}

void tok_mergemap_free(struct mergemap *m) {
    free(m->slot);
    memset(m, 0, sizeof *m);
}

/* Sized once by the caller (the merge count is known); overwrites a duplicate
 * pair as collecting into a HashMap does: the last rank wins. */
void tok_mergemap_put(struct mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t mask = m->cap - 1, i = (size_t)(h >> 32) & mask;
    while (m->slot[i].key != UINT64_MAX && m->slot[i].key != key) i = (i + 1) & mask;
    if (m->slot[i].key == UINT64_MAX) m->n++;
    m->slot[i] = (struct merge_slot){ .key = key, .rank = rank, .id = id };
}

/* ---- regex translation ----------------------------------------------------- */

#define WS_BODY "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define WORD_BODY "\\p{L}\\p{M}\\p{Nd}\\p{Pc}\\p{Nl}\\x{200C}\\x{200D}\\x{24B6}-\\x{24E9}"
#define HEX_BODY "0-9a-fA-F"

static void tb_puts(struct tbuf *b, const char *s) { tbuf_put(b, s, strlen(s)); }

/* Insert "(?:" at position at of out. */
static void tb_insert_group(struct tbuf *b, size_t at) {
    tbuf_reserve(b, 3);
    memmove(b->p + at + 3, b->p + at, b->n - at);
    memcpy(b->p + at, "(?:", 3);
    b->n += 3;
    b->p[b->n] = 0;
}

int tok_regex_translate(const char *pat, size_t len, struct tbuf *out, char *err, size_t errlen) {
    size_t gstack[256];
    int gdepth = 0;
    size_t atom = 0; /* output position where the last complete atom starts */
    bool have_atom = false;
    size_t i = 0;
    out->n = 0;
    tbuf_reserve(out, len * 2);
    while (i < len) {
        char c = pat[i];
        size_t at = out->n;
        if (c == '\\') {
            if (i + 1 >= len) return errf(err, errlen, "pattern ends with a backslash");
            char e = pat[i + 1];
            if (e == 's') { tb_puts(out, "[" WS_BODY "]"); i += 2; }
            else if (e == 'S') { tb_puts(out, "[^" WS_BODY "]"); i += 2; }
            else if (e == 'w') { tb_puts(out, "[" WORD_BODY "]"); i += 2; }
            else if (e == 'W') { tb_puts(out, "[^" WORD_BODY "]"); i += 2; }
            else if (e == 'h') { tb_puts(out, "[" HEX_BODY "]"); i += 2; }
            else if (e == 'H') { tb_puts(out, "[^" HEX_BODY "]"); i += 2; }
            else if (e == 'u' && i + 6 <= len) {
                tb_puts(out, "\\x{");
                tbuf_put(out, pat + i + 2, 4);
                tb_puts(out, "}");
                i += 6;
            } else if ((e == 'p' || e == 'P' || e == 'x' || e == 'k' || e == 'g') && i + 2 < len &&
                       (pat[i + 2] == '{' || pat[i + 2] == '<')) {
                char close = pat[i + 2] == '{' ? '}' : '>';
                const char *q = memchr(pat + i + 2, close, len - i - 2);
                if (!q) return errf(err, errlen, "unterminated \\%c escape", e);
                tbuf_put(out, pat + i, (size_t)(q - (pat + i)) + 1);
                i = (size_t)(q - pat) + 1;
            } else {
                int l = utf8_len_of_lead((uint8_t)e);
                tbuf_put(out, pat + i, 1 + (size_t)l);
                i += 1 + (size_t)l;
            }
            atom = at;
            have_atom = true;
            continue;
        }
        if (c == '[') {
            /* a character class: copy, rewriting the escapes inside */
            tbuf_putc(out, '[');
            i++;
            if (i < len && pat[i] == '^') { tbuf_putc(out, '^'); i++; }
            if (i < len && pat[i] == ']') { tbuf_putc(out, ']'); i++; } /* literal ] first */
            bool closed = false;
            while (i < len) {
                char d = pat[i];
                if (d == ']') { tbuf_putc(out, ']'); i++; closed = true; break; }
                if (d == '[') {
                    if (i + 1 < len && pat[i + 1] == ':') { /* POSIX [:name:] */
                        const char *q = memchr(pat + i + 2, ']', len - i - 2);
                        if (!q) return errf(err, errlen, "unterminated POSIX class");
                        tbuf_put(out, pat + i, (size_t)(q - (pat + i)) + 1);
                        i = (size_t)(q - pat) + 1;
                        continue;
                    }
                    return errf(err, errlen, "nested character classes are not supported");
                }
                if (d == '&' && i + 1 < len && pat[i + 1] == '&')
                    return errf(err, errlen, "class intersection (&&) is not supported");
                if (d == '\\') {
                    if (i + 1 >= len) return errf(err, errlen, "pattern ends with a backslash");
                    char e = pat[i + 1];
                    if (e == 's') { tb_puts(out, WS_BODY); i += 2; }
                    else if (e == 'w') { tb_puts(out, WORD_BODY); i += 2; }
                    else if (e == 'h') { tb_puts(out, HEX_BODY); i += 2; }
                    else if (e == 'S' || e == 'W' || e == 'H')
                        return errf(err, errlen, "\\%c inside a character class is not supported", e);
                    else if (e == 'u' && i + 6 <= len) {
                        tb_puts(out, "\\x{");
                        tbuf_put(out, pat + i + 2, 4);
                        tb_puts(out, "}");
                        i += 6;
                    } else if ((e == 'p' || e == 'P' || e == 'x') && i + 2 < len && pat[i + 2] == '{') {
                        const char *q = memchr(pat + i + 2, '}', len - i - 2);
                        if (!q) return errf(err, errlen, "unterminated \\%c escape", e);
                        tbuf_put(out, pat + i, (size_t)(q - (pat + i)) + 1);
                        i = (size_t)(q - pat) + 1;
                    } else {
                        int l = utf8_len_of_lead((uint8_t)e);
                        tbuf_put(out, pat + i, 1 + (size_t)l);
                        i += 1 + (size_t)l;
                    }
                    continue;
                }
                int l = utf8_len_of_lead((uint8_t)d);
                tbuf_put(out, pat + i, (size_t)l);
                i += (size_t)l;
            }
            if (!closed) return errf(err, errlen, "unterminated character class");
            atom = at;
            have_atom = true;
            continue;
        }
        if (c == '(') {
            if (gdepth == (int)ARRAY_LEN(gstack)) return errf(err, errlen, "groups nested too deep");
            gstack[gdepth++] = at;
            tbuf_putc(out, '(');
            i++;
            have_atom = false;
            continue;
        }
        if (c == ')') {
            if (!gdepth) return errf(err, errlen, "unbalanced ')'");
            tbuf_putc(out, ')');
            i++;
            atom = gstack[--gdepth];
            have_atom = true;
            continue;
        }
        if (c == '{') {
            /* an interval {n}, {n,}, {,m}, {n,m}; else a literal brace */
            size_t j = i + 1;
            while (j < len && ((pat[j] >= '0' && pat[j] <= '9') || pat[j] == ',')) j++;
            if (j < len && pat[j] == '}' && j > i + 1) {
                tbuf_put(out, pat + i, j - i + 1);
                i = j + 1;
                if (i < len && pat[i] == '+' && have_atom) {
                    /* Oniguruma: X{n,m}+ is (?:X{n,m})+, not possessive */
                    tb_insert_group(out, atom);
                    tb_puts(out, ")+");
                    i++;
                }
                continue; /* the atom (with its quantifier) can be quantified no further in PCRE2 anyway */
            }
            tb_puts(out, "\\{");
            i++;
            atom = at;
            have_atom = true;
            continue;
        }
        if (c == '|') { tbuf_putc(out, '|'); i++; have_atom = false; continue; }
        if (c == '*' || c == '+' || c == '?') { tbuf_putc(out, c); i++; continue; }
        int l = utf8_len_of_lead((uint8_t)c);
        if (i + (size_t)l > len) l = (int)(len - i);
        tbuf_put(out, pat + i, (size_t)l);
        i += (size_t)l;
        atom = at;
        have_atom = true;
    }
    if (gdepth) return errf(err, errlen, "unbalanced '('");
    return 0;
}

int tok_regex_compile(struct tok_regex *r, const char *pattern, size_t len, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    if (tok_utf8_valid_prefix(pattern, len) != len) return errf(err, errlen, "pattern is not valid UTF-8");
    struct tbuf tr = { 0 };
    char e2[256];
    if (tok_regex_translate(pattern, len, &tr, e2, sizeof e2)) {
        free(tr.p);
        return errf(err, errlen, "regex /%.*s/: %s", (int)MIN(len, 200), pattern, e2);
    }
    int ec;
    PCRE2_SIZE eo;
    r->code = pcre2_compile((PCRE2_SPTR)tr.p, tr.n, PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &ec, &eo, NULL);
    if (!r->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        errf(err, errlen, "regex /%.*s/ (as PCRE2 /%s/): %s at offset %zu", (int)MIN(len, 200), pattern, tr.p,
             (const char *)msg, (size_t)eo);
        free(tr.p);
        return -1;
    }
    free(tr.p);
    pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE); /* failure: the interpreter is used */
    return 0;
}

void tok_regex_literal(struct tok_regex *r, const char *s, size_t len) {
    memset(r, 0, sizeof *r);
    r->lit = xmalloc(len + 1);
    memcpy(r->lit, s, len);
    r->lit[len] = 0;
    r->litlen = len;
}

void tok_regex_free(struct tok_regex *r) {
    if (r->code) pcre2_code_free(r->code);
    free(r->lit);
    memset(r, 0, sizeof *r);
}

void tok_matcher_free(struct tok_matcher *m) {
    if (m->md) pcre2_match_data_free(m->md);
    if (m->mc) pcre2_match_context_free(m->mc);
    if (m->js) pcre2_jit_stack_free(m->js);
    memset(m, 0, sizeof *m);
}

void tok_spanbuf_push(struct spanbuf *b, uint32_t s, uint32_t e, uint8_t match) {
    if (b->n == b->cap) {
        size_t c = b->cap ? b->cap * 2 : 64;
        struct span *np = realloc(b->p, c * sizeof *np);
        if (!np) { log_error("out of memory"); abort(); }
        b->p = np;
        b->cap = c;
    }
    b->p[b->n++] = (struct span){ s, e, match };
}

int tok_regex_find(const struct tok_regex *r, struct tok_matcher *m, const char *s, size_t n, struct spanbuf *out) {
    if (n == 0) { tok_spanbuf_push(out, 0, 0, 0); return 0; }
    size_t prev = 0;
    if (!r->code) {
        if (r->litlen == 0) { tok_spanbuf_push(out, 0, (uint32_t)n, 0); return 0; }
        const char *p = s, *end = s + n;
        while ((size_t)(end - p) >= r->litlen) {
            const char *q = memmem(p, (size_t)(end - p), r->lit, r->litlen);
            if (!q) break;
            size_t st = (size_t)(q - s);
            if (st != prev) tok_spanbuf_push(out, (uint32_t)prev, (uint32_t)st, 0);
            tok_spanbuf_push(out, (uint32_t)st, (uint32_t)(st + r->litlen), 1);
            prev = st + r->litlen;
            p = q + r->litlen;
        }
    } else {
        if (!m->md) {
            m->md = pcre2_match_data_create(1, NULL);
            m->mc = pcre2_match_context_create(NULL);
            m->js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
            if (!m->md || !m->mc || !m->js) return -1;
            pcre2_jit_stack_assign(m->mc, NULL, m->js);
        }
        size_t pos = 0;
        bool have_last = false;
        size_t last_end = 0;
        while (pos <= n) {
            int rc = pcre2_match(r->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, m->md, m->mc);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) return -1;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
            size_t ms = ov[0], me = ov[1];
            if (ms == me && have_last && last_end == me) {
                if (pos >= n) break;
                pos += (size_t)utf8_len_of_lead((uint8_t)s[pos]);
                continue;
            }
            if (ms != prev) tok_spanbuf_push(out, (uint32_t)prev, (uint32_t)ms, 0);
            tok_spanbuf_push(out, (uint32_t)ms, (uint32_t)me, 1);
            prev = me;
            pos = me;
            last_end = me;
            have_last = true;
        }
    }
    if (prev != n) tok_spanbuf_push(out, (uint32_t)prev, (uint32_t)n, 0);
    return 0;
}
