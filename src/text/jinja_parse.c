/* jinja_parse.c — lexer and parser of the Jinja subset: template source ->
 * AST (struct jnode) in the compiled template's arena.
 *
 * The lexer follows Jinja2 3.1's Lexer rule for rule so whitespace comes out
 * byte-identical: newlines normalized to \n and one trailing newline dropped
 * (keep_trailing_newline=False), `-`/`+` whitespace control, trim_blocks (one
 * newline after %} and #}), lstrip_blocks (spaces/tabs before {% and {# on
 * their own line), raw blocks, Python string escapes (string literals decode
 * like Python's "unicode-escape" of their backslashreplace'd text), the
 * integer/float literal grammar and bracket balancing inside tags.
 * The parser is Jinja's recursive descent grammar with the same precedence
 * (filters bind to unary expressions, `is` tests, chained comparisons, inline
 * if), plus the statements chat templates use: if/elif/else, for (target
 * unpacking, `if` filter, else), set (names, tuples, namespace attributes,
 * block set with filters), macro (defaults, caller/varargs/kwargs), call,
 * filter blocks, with, print, break/continue (loopcontrols) and transformers'
 * generation tag.
 *
 * Errors name line:col. Parsing depth is bounded (a hostile template cannot
 * exhaust the stack). Does not: support block/extends/include/import/from/
 * autoescape (no loader in this engine) or recursive for loops. */
#define _GNU_SOURCE /* memmem, strftime_l, asprintf */
#include "text/jinja_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define MAX_DEPTH 200

enum tok {
    T_EOF = 0, T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME, T_STRING, T_INT, T_FLOAT,
    T_ADD, T_SUB, T_DIV, T_FLOORDIV, T_MUL, T_MOD, T_POW, T_TILDE, T_LBRACKET, T_RBRACKET, T_LPAREN, T_RPAREN,
    T_LBRACE, T_RBRACE, T_EQ, T_NE, T_GT, T_GTEQ, T_LT, T_LTEQ, T_ASSIGN, T_DOT, T_COLON, T_PIPE, T_COMMA,
    T_SEMICOLON,
};

static const char *tok_desc[] = {
    "end of template", "template data / text", "begin of print statement", "end of print statement",
    "begin of statement block", "end of statement block", "name", "string", "integer", "float",
    "+", "-", "/", "//", "*", "%", "**", "~", "[", "]", "(", ")", "{", "}", "==", "!=", ">", ">=", "<", "<=",
    "=", ".", ":", "|", ",", ";",
};

struct token {
    uint8_t t;
    uint32_t line, col;
    const char *p; /* into the normalized source */
    uint32_t len;
    union { struct jstr *s; int64_t i; double d; } v;
};

struct parser {
    struct chat_template *ct;
    const char *src; /* normalized */
    size_t len;
    struct token *toks;
    size_t ntoks, captoks, pos;
    jmp_buf jb;
    char *err;
    size_t errlen;
    int depth;
    int loop_depth;
    /* tag stack for error messages */
    const char *tags[MAX_DEPTH + 8];
    int ntags;
};

_Noreturn static void perr(struct parser *p, uint32_t line, uint32_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
_Noreturn static void perr(struct parser *p, uint32_t line, uint32_t col, const char *fmt, ...) {
    if (p->err && p->errlen) {
        int n = snprintf(p->err, p->errlen, "%u:%u: ", line, col);
        if (n >= 0 && (size_t)n < p->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    longjmp(p->jb, 1);
}

static void *palloc(struct parser *p, size_t n) {
    void *m = jarena_alloc(&p->ct->arena, n);
    memset(m, 0, n);
    return m;
}

static struct jstr *pstr(struct parser *p, const char *s, size_t len) {
    char *d = palloc(p, len + 1);
    memcpy(d, s, len);
    struct jstr *o = palloc(p, sizeof *o);
    o->p = d;
    o->len = len;
    o->nchars = jutf8_count(d, len);
    return o;
}

static uint32_t intern(struct parser *p, const char *s, size_t len) {
    struct chat_template *ct = p->ct;
    for (uint32_t i = 0; i < ct->nnames; i++)
        if (ct->names[i]->len == len && memcmp(ct->names[i]->p, s, len) == 0) return i;
    if (ct->nnames == ct->capnames) {
        uint32_t cap = ct->capnames ? ct->capnames * 2 : 32;
        struct jstr **nn = palloc(p, cap * sizeof *nn);
        if (ct->nnames) memcpy(nn, ct->names, ct->nnames * sizeof *nn);
        ct->names = nn;
        ct->capnames = cap;
    }
    ct->names[ct->nnames] = pstr(p, s, len);
    return ct->nnames++;
}

/* ---- lexer ---------------------------------------------------------------------- */

static void pos_of(struct parser *p, size_t off, uint32_t *line, uint32_t *col) {
    uint32_t l = 1, c = 1;
    for (size_t i = 0; i < off && i < p->len; i++) {
        if (p->src[i] == '\n') { l++; c = 1; }
        else if (((unsigned char)p->src[i] & 0xc0) != 0x80) c++;
    }
    *line = l;
    *col = c;
}

/* Line/col tracking is incremental: the lexer walks forward only. */
struct lexpos { size_t off; uint32_t line, col; };
static void advance_to(struct parser *p, struct lexpos *lp, size_t off) {
    for (size_t i = lp->off; i < off; i++) {
        if (p->src[i] == '\n') { lp->line++; lp->col = 1; }
        else if (((unsigned char)p->src[i] & 0xc0) != 0x80) lp->col++;
    }
    lp->off = off;
}

static struct token *push_tok(struct parser *p, int t, struct lexpos *lp, size_t off, size_t len) {
    if (p->ntoks == p->captoks) {
        size_t cap = p->captoks ? p->captoks * 2 : 256;
        struct token *nt = realloc(p->toks, cap * sizeof *nt);
        if (!nt) perr(p, 0, 0, "out of memory");
        p->toks = nt;
        p->captoks = cap;
    }
    advance_to(p, lp, off);
    struct token *k = &p->toks[p->ntoks++];
    memset(k, 0, sizeof *k);
    k->t = (uint8_t)t;
    k->line = lp->line;
    k->col = lp->col;
    k->p = p->src + off;
    k->len = (uint32_t)len;
    return k;
}

/* Python's str.isspace / re \s for one code point at s[i]; returns its byte length or 0. */
static size_t space_at(const char *s, size_t n, size_t i) {
    if (i >= n) return 0;
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) return jpy_isspace(c) ? 1 : 0;
    size_t adv;
    uint32_t cp = jutf8_decode(s + i, n - i, &adv);
    return jpy_isspace(cp) ? adv : 0;
}

static size_t skip_space(const char *s, size_t n, size_t i) {
    size_t k;
    while ((k = space_at(s, n, i))) i += k;
    return i;
}

/* rstrip of whitespace: returns the new end. */
static size_t rstrip_end(const char *s, size_t start, size_t end) {
    while (end > start) {
        size_t b = end - 1;
        while (b > start && ((unsigned char)s[b] & 0xc0) == 0x80) b--;
        if (space_at(s, end, b) != end - b) break;
        end = b;
    }
    return end;
}

/* lstrip_blocks: text = s[start, end) ends right before a {% or {# tag. Jinja
 * strips the whitespace between the last newline (or the start of the text if
 * the previous token ended a line) and the tag, if there is nothing else. */
static size_t lstrip_text(const char *s, size_t start, size_t end, bool line_starting) {
    size_t lpos = end;
    while (lpos > start && s[lpos - 1] != '\n') lpos--;
    if (lpos == start && !line_starting) return end; /* no newline in the text, mid-line */
    if (lpos == end) return end;                     /* `\s+` needs at least one character */
    for (size_t i = lpos; i < end;) {
        size_t k = space_at(s, end, i);
        if (!k) return end;
        i += k;
    }
    return lpos;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* (\d+_)*\d+ at i; returns end or i if no match */
static size_t digits_us(const char *s, size_t n, size_t i) {
    if (i >= n || !is_digit(s[i])) return i;
    size_t j = i;
    while (j < n && is_digit(s[j])) j++;
    while (j + 1 < n && s[j] == '_' && is_digit(s[j + 1])) {
        j++;
        while (j < n && is_digit(s[j])) j++;
    }
    return j;
}

static size_t match_float(const char *s, size_t n, size_t i) {
    if (i > 0 && s[i - 1] == '.') return 0;
    size_t a = digits_us(s, n, i);
    if (a == i) return 0;
    /* alternative 1: (\.digits)? e[+-]? digits */
    size_t j = a;
    if (j < n && s[j] == '.') {
        size_t f = digits_us(s, n, j + 1);
        if (f > j + 1) j = f;
    }
    for (int pass = 0; pass < 2; pass++) {
        size_t k = pass == 0 ? j : a;
        if (pass == 1 && j == a) break;
        if (k < n && (s[k] == 'e' || s[k] == 'E')) {
            size_t m = k + 1;
            if (m < n && (s[m] == '+' || s[m] == '-')) m++;
            size_t e = digits_us(s, n, m);
            if (e > m) return e - i;
        }
    }
    /* alternative 2: \.digits */
    if (a < n && s[a] == '.') {
        size_t f = digits_us(s, n, a + 1);
        if (f > a + 1) return f - i;
    }
    return 0;
}

static size_t match_int(const char *s, size_t n, size_t i, int *base) {
    if (i >= n || !is_digit(s[i])) return 0;
    if (s[i] == '0' && i + 1 < n) {
        char c = (char)(s[i + 1] | 0x20);
        int b = c == 'b' ? 2 : c == 'o' ? 8 : c == 'x' ? 16 : 0;
        if (b) {
            size_t j = i + 2, last = 0;
            for (;;) {
                size_t k = j;
                if (k < n && s[k] == '_') k++;
                if (k < n && ((b == 2 && (s[k] == '0' || s[k] == '1')) || (b == 8 && s[k] >= '0' && s[k] <= '7') ||
                              (b == 16 && is_hex(s[k])))) {
                    j = k + 1;
                    last = j;
                } else {
                    break;
                }
            }
            if (last) { *base = b; return last - i; }
        }
    }
    *base = 10;
    if (s[i] != '0') {
        size_t j = i + 1;
        for (;;) {
            size_t k = j;
            if (k < n && s[k] == '_') k++;
            if (k < n && is_digit(s[k])) j = k + 1;
            else break;
        }
        return j - i;
    }
    size_t j = i + 1;
    for (;;) {
        size_t k = j;
        if (k < n && s[k] == '_') k++;
        if (k < n && s[k] == '0') j = k + 1;
        else break;
    }
    return j - i;
}

static bool ident_start(uint32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    return juc_is_alpha(c);
}
static bool ident_cont(uint32_t c) {
    if (c < 0x80) return ident_start(c) || (c >= '0' && c <= '9');
    return juc_is_alnum(c) || c == 0xb7;
}

static size_t match_name(const char *s, size_t n, size_t i) {
    size_t adv;
    if (i >= n || !ident_start(jutf8_decode(s + i, n - i, &adv))) return 0;
    size_t j = i + adv;
    while (j < n && ident_cont(jutf8_decode(s + j, n - j, &adv))) j += adv;
    return j - i;
}

/* Decode a Jinja string literal body like Python's
 * body.encode("ascii", "backslashreplace").decode("unicode-escape"). */
static struct jstr *unescape(struct parser *p, const char *s, size_t n, struct lexpos *lp, size_t off) {
    /* step 1: backslashreplace non-ASCII */
    size_t cap = n * 10 + 1, m = 0;
    char *a = malloc(cap);
    if (!a) perr(p, lp->line, lp->col, "out of memory");
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) { a[m++] = (char)c; i++; continue; }
        size_t adv;
        uint32_t cp = jutf8_decode(s + i, n - i, &adv);
        if (cp < 0x100) m += (size_t)sprintf(a + m, "\\x%02x", cp);
        else if (cp < 0x10000) m += (size_t)sprintf(a + m, "\\u%04x", cp);
        else m += (size_t)sprintf(a + m, "\\U%08x", cp);
        i += adv;
    }
    /* step 2: unicode-escape */
    char *o = malloc(m * 4 + 1);
    if (!o) { free(a); perr(p, lp->line, lp->col, "out of memory"); }
    size_t k = 0;
    const char *bad = NULL;
    for (size_t i = 0; i < m && !bad;) {
        char c = a[i];
        if (c != '\\') { o[k++] = c; i++; continue; }
        if (i + 1 >= m) { bad = "\\ at end of string"; break; }
        char e = a[i + 1];
        uint32_t cp = 0;
        int need = 0;
        i += 2;
        switch (e) {
        case '\n': continue;
        case '\\': o[k++] = '\\'; continue;
        case '\'': o[k++] = '\''; continue;
        case '"': o[k++] = '"'; continue;
        case 'a': o[k++] = 7; continue;
        case 'b': o[k++] = 8; continue;
        case 'f': o[k++] = 12; continue;
        case 'n': o[k++] = 10; continue;
        case 'r': o[k++] = 13; continue;
        case 't': o[k++] = 9; continue;
        case 'v': o[k++] = 11; continue;
        case 'x': need = 2; break;
        case 'u': need = 4; break;
        case 'U': need = 8; break;
        case 'N': bad = "\\N{...} escapes are not supported"; continue;
        default:
            if (e >= '0' && e <= '7') {
                cp = (uint32_t)(e - '0');
                for (int d = 0; d < 2 && i < m && a[i] >= '0' && a[i] <= '7'; d++) cp = cp * 8 + (uint32_t)(a[i++] - '0');
                k += jutf8_encode(cp, o + k);
                continue;
            }
            o[k++] = '\\';
            o[k++] = e;
            continue;
        }
        for (int d = 0; d < need; d++) {
            if (i >= m || !is_hex(a[i])) {
                bad = need == 2 ? "truncated \\xXX escape" : need == 4 ? "truncated \\uXXXX escape" : "truncated \\UXXXXXXXX escape";
                break;
            }
            char h = a[i++];
            cp = cp * 16 + (uint32_t)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
        }
        if (bad) break;
        if (cp > 0x10ffff) { bad = "illegal Unicode character"; break; }
        if (cp >= 0xd800 && cp <= 0xdfff) { bad = "lone surrogate in string literal"; break; }
        k += jutf8_encode(cp, o + k);
    }
    free(a);
    if (bad) {
        free(o);
        uint32_t line, col;
        pos_of(p, off, &line, &col);
        perr(p, line, col, "%s", bad);
    }
    struct jstr *r = pstr(p, o, k);
    free(o);
    return r;
}

static void lex_tag(struct parser *p, struct lexpos *lp, size_t *ppos, bool *line_starting, bool block) {
    const char *s = p->src;
    size_t n = p->len, i = *ppos;
    char bal[MAX_DEPTH + 1];
    int nbal = 0;
    for (;;) {
        if (i >= n) { *ppos = i; return; } /* EOF inside a tag: the parser reports it */
        /* end of tag (only with balanced brackets) */
        if (nbal == 0) {
            if (block) {
                if (s[i] == '+' && i + 2 < n && s[i + 1] == '%' && s[i + 2] == '}') {
                    push_tok(p, T_BLOCK_END, lp, i, 3);
                    *ppos = i + 3;
                    *line_starting = false;
                    return;
                }
                if (s[i] == '-' && i + 2 < n && s[i + 1] == '%' && s[i + 2] == '}') {
                    push_tok(p, T_BLOCK_END, lp, i, 3);
                    size_t e = skip_space(s, n, i + 3);
                    *ppos = e;
                    *line_starting = e > i + 3 ? s[e - 1] == '\n' : false;
                    return;
                }
                if (s[i] == '%' && i + 1 < n && s[i + 1] == '}') {
                    push_tok(p, T_BLOCK_END, lp, i, 2);
                    size_t e = i + 2;
                    if (e < n && s[e] == '\n') e++; /* trim_blocks */
                    *ppos = e;
                    *line_starting = s[e - 1] == '\n';
                    return;
                }
            } else {
                if (s[i] == '-' && i + 2 < n && s[i + 1] == '}' && s[i + 2] == '}') {
                    push_tok(p, T_VAR_END, lp, i, 3);
                    size_t e = skip_space(s, n, i + 3);
                    *ppos = e;
                    *line_starting = e > i + 3 ? s[e - 1] == '\n' : false;
                    return;
                }
                if (s[i] == '}' && i + 1 < n && s[i + 1] == '}') {
                    push_tok(p, T_VAR_END, lp, i, 2);
                    *ppos = i + 2;
                    *line_starting = false;
                    return;
                }
            }
        }
        size_t k = space_at(s, n, i);
        if (k) {
            size_t e = skip_space(s, n, i);
            *line_starting = s[e - 1] == '\n';
            i = e;
            continue;
        }
        *line_starting = false;
        size_t len;
        int base;
        if ((len = match_float(s, n, i))) {
            struct token *t = push_tok(p, T_FLOAT, lp, i, len);
            char tmp[128];
            size_t m = 0;
            for (size_t j = i; j < i + len && m < sizeof tmp - 1; j++)
                if (s[j] != '_') tmp[m++] = s[j];
            tmp[m] = 0;
            t->v.d = strtod(tmp, NULL);
            i += len;
            continue;
        }
        if ((len = match_int(s, n, i, &base))) {
            struct token *t = push_tok(p, T_INT, lp, i, len);
            unsigned __int128 v = 0;
            size_t j = i + (base == 10 ? 0 : 2);
            for (; j < i + len; j++) {
                if (s[j] == '_') continue;
                char c = s[j];
                unsigned d = (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
                v = v * (unsigned)base + d;
                if (v > (unsigned __int128)INT64_MAX) perr(p, t->line, t->col, "integer literal too large");
            }
            t->v.i = (int64_t)v;
            i += len;
            continue;
        }
        if ((len = match_name(s, n, i))) {
            push_tok(p, T_NAME, lp, i, len);
            i += len;
            continue;
        }
        if (s[i] == '\'' || s[i] == '"') {
            char q = s[i];
            size_t j = i + 1;
            while (j < n && s[j] != q) j += (s[j] == '\\' && j + 1 < n) ? 2 : 1;
            if (j < n && s[j] == q) {
                struct token *t = push_tok(p, T_STRING, lp, i, j + 1 - i);
                t->v.s = unescape(p, s + i + 1, j - i - 1, lp, i);
                i = j + 1;
                continue;
            }
            uint32_t line, col;
            pos_of(p, i, &line, &col);
            perr(p, line, col, "unexpected char %s at %zu", q == '\'' ? "\"'\"" : "'\"'", i);
        }
        /* operators, longest first */
        static const struct { const char *s; int t; } ops[] = {
            { "//", T_FLOORDIV }, { "**", T_POW }, { "==", T_EQ }, { "!=", T_NE }, { ">=", T_GTEQ }, { "<=", T_LTEQ },
            { "+", T_ADD }, { "-", T_SUB }, { "/", T_DIV }, { "*", T_MUL }, { "%", T_MOD }, { "~", T_TILDE },
            { "[", T_LBRACKET }, { "]", T_RBRACKET }, { "(", T_LPAREN }, { ")", T_RPAREN }, { "{", T_LBRACE },
            { "}", T_RBRACE }, { ">", T_GT }, { "<", T_LT }, { "=", T_ASSIGN }, { ".", T_DOT }, { ":", T_COLON },
            { "|", T_PIPE }, { ",", T_COMMA }, { ";", T_SEMICOLON },
        };
        int found = -1;
        for (size_t o = 0; o < ARRAY_LEN(ops); o++) {
            size_t ol = strlen(ops[o].s);
            if (i + ol <= n && memcmp(s + i, ops[o].s, ol) == 0) { found = (int)o; break; }
        }
        if (found < 0) {
            uint32_t line, col;
            pos_of(p, i, &line, &col);
            size_t adv;
            jutf8_decode(s + i, n - i, &adv);
            perr(p, line, col, "unexpected char '%.*s' at %zu", (int)adv, s + i, i);
        }
        int t = ops[found].t;
        struct token *tk = push_tok(p, t, lp, i, strlen(ops[found].s));
        if (t == T_LBRACE || t == T_LPAREN || t == T_LBRACKET) {
            if (nbal >= MAX_DEPTH) perr(p, tk->line, tk->col, "brackets nested too deeply");
            bal[nbal++] = t == T_LBRACE ? '}' : t == T_LPAREN ? ')' : ']';
        } else if (t == T_RBRACE || t == T_RPAREN || t == T_RBRACKET) {
            char c = s[i];
            if (!nbal) perr(p, tk->line, tk->col, "unexpected '%c'", c);
            char want = bal[--nbal];
            if (want != c) perr(p, tk->line, tk->col, "unexpected '%c', expected '%c'", c, want);
        }
        i += strlen(ops[found].s);
    }
}

static void push_data(struct parser *p, struct lexpos *lp, size_t start, size_t end) {
    if (end > start) push_tok(p, T_DATA, lp, start, end - start);
}

static void lex(struct parser *p) {
    const char *s = p->src;
    size_t n = p->len, i = 0;
    bool line_starting = true;
    struct lexpos lp = { 0, 1, 1 };
    while (i < n) {
        /* earliest {{, {% or {# */
        size_t j = i;
        int kind = 0; /* 1 var, 2 comment, 3 block */
        while (j + 1 < n) {
            if (s[j] == '{' && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#')) {
                kind = s[j + 1] == '{' ? 1 : s[j + 1] == '#' ? 2 : 3;
                break;
            }
            j++;
        }
        if (!kind) { push_data(p, &lp, i, n); break; }
        char sign = 0;
        if (j + 2 < n && (s[j + 2] == '-' || s[j + 2] == '+')) sign = s[j + 2];
        size_t after = j + 2 + (sign ? 1 : 0);
        /* raw block? {%(-|+|)\s*raw\s*(?:-%}\s*|%}) */
        bool raw = false;
        size_t raw_end = 0;
        if (kind == 3) {
            size_t k = skip_space(s, n, after);
            if (k + 3 <= n && memcmp(s + k, "raw", 3) == 0) {
                size_t m = skip_space(s, n, k + 3);
                if (m + 3 <= n && s[m] == '-' && s[m + 1] == '%' && s[m + 2] == '}') {
                    raw = true;
                    raw_end = skip_space(s, n, m + 3);
                } else if (m + 2 <= n && s[m] == '%' && s[m + 1] == '}') {
                    raw = true;
                    raw_end = m + 2;
                }
            }
        }
        size_t tend = j;
        if (sign == '-') tend = rstrip_end(s, i, j);
        else if (sign != '+' && kind != 1) tend = lstrip_text(s, i, j, line_starting);
        push_data(p, &lp, i, tend);
        if (raw) {
            line_starting = s[raw_end - 1] == '\n';
            if (raw_end >= n) break; /* nothing after the raw tag: the lexer stops */
            /* (.*?)((?:{%(-|+|))\s*endraw\s*(?:\+%}|\-%}\s*|%}\n?)) */
            size_t q = raw_end;
            bool ok = false;
            while (q + 1 < n) {
                if (s[q] == '{' && s[q + 1] == '%') {
                    char es = 0;
                    size_t a = q + 2;
                    if (a < n && (s[a] == '-' || s[a] == '+')) es = s[a++];
                    a = skip_space(s, n, a);
                    if (a + 6 <= n && memcmp(s + a, "endraw", 6) == 0) {
                        size_t b = skip_space(s, n, a + 6), e = 0;
                        if (b + 3 <= n && s[b] == '+' && s[b + 1] == '%' && s[b + 2] == '}') e = b + 3;
                        else if (b + 3 <= n && s[b] == '-' && s[b + 1] == '%' && s[b + 2] == '}') e = skip_space(s, n, b + 3);
                        else if (b + 2 <= n && s[b] == '%' && s[b + 1] == '}') { e = b + 2; if (e < n && s[e] == '\n') e++; }
                        if (e) {
                            size_t dend = q;
                            if (es == '-') dend = rstrip_end(s, raw_end, q);
                            else if (es != '+') dend = lstrip_text(s, raw_end, q, line_starting);
                            push_data(p, &lp, raw_end, dend);
                            i = e;
                            line_starting = s[e - 1] == '\n';
                            ok = true;
                            break;
                        }
                    }
                }
                q++;
            }
            if (!ok) {
                uint32_t line, col;
                pos_of(p, j, &line, &col);
                perr(p, line, col, "Missing end of raw directive");
            }
            continue;
        }
        if (kind == 2) {
            /* (.*?)((?:\+#}|\-#}\s*|#}\n?)); with no character left after
             * {# Jinja's lexer simply stops (no rule matches at the end) */
            if (after >= n) break;
            size_t q = after, e = 0;
            while (q + 1 < n) {
                if (s[q] == '+' && q + 2 < n && s[q + 1] == '#' && s[q + 2] == '}') { e = q + 3; break; }
                if (s[q] == '-' && q + 2 < n && s[q + 1] == '#' && s[q + 2] == '}') { e = skip_space(s, n, q + 3); break; }
                if (s[q] == '#' && s[q + 1] == '}') { e = q + 2; if (e < n && s[e] == '\n') e++; break; }
                q++;
            }
            if (!e) {
                uint32_t line, col;
                pos_of(p, j, &line, &col);
                perr(p, line, col, "Missing end of comment tag");
            }
            line_starting = s[e - 1] == '\n';
            i = e;
            continue;
        }
        push_tok(p, kind == 1 ? T_VAR_BEGIN : T_BLOCK_BEGIN, &lp, j, after - j);
        line_starting = false;
        i = after;
        lex_tag(p, &lp, &i, &line_starting, kind == 3);
    }
    struct lexpos end = lp;
    push_tok(p, T_EOF, &end, n, 0);
}

/* ---- parser helpers ---------------------------------------------------------------- */

static struct token *cur(struct parser *p) { return &p->toks[p->pos]; }
static struct token *look(struct parser *p) { return &p->toks[p->pos + 1 < p->ntoks ? p->pos + 1 : p->pos]; }
static struct token *next(struct parser *p) {
    struct token *t = cur(p);
    if (p->pos + 1 < p->ntoks) p->pos++;
    return t;
}
static bool is_name(const struct token *t, const char *s) {
    return t->t == T_NAME && t->len == strlen(s) && memcmp(t->p, s, t->len) == 0;
}

static void describe(const struct token *t, char *out, size_t n) {
    if (t->t == T_NAME) snprintf(out, n, "%.*s", (int)MIN(t->len, 60u), t->p);
    else snprintf(out, n, "%s", tok_desc[t->t]);
}

_Noreturn static void unexpected(struct parser *p, const char *expected) {
    struct token *t = cur(p);
    char d[80];
    describe(t, d, sizeof d);
    if (t->t == T_EOF) perr(p, t->line, t->col, "unexpected end of template, expected '%s'.", expected);
    perr(p, t->line, t->col, "expected token '%s', got '%s'", expected, d);
}

static struct token *expect(struct parser *p, int t) {
    if (cur(p)->t != t) unexpected(p, tok_desc[t]);
    return next(p);
}

static void expect_name(struct parser *p, const char *s) {
    if (!is_name(cur(p), s)) unexpected(p, s);
    next(p);
}

static struct jnode *mk(struct parser *p, int kind, const struct token *at) {
    struct jnode *n = palloc(p, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = at->line;
    n->col = at->col;
    return n;
}

struct nvec { struct jnode **v; uint32_t n, cap; };
static void nv_push(struct parser *p, struct nvec *v, struct jnode *x) {
    if (v->n == v->cap) {
        uint32_t cap = v->cap ? v->cap * 2 : 4;
        struct jnode **nv = palloc(p, cap * sizeof *nv);
        if (v->n) memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}
static struct jnodes nv_done(struct nvec *v) { struct jnodes r = { v->v, v->n }; return r; }

static void enter(struct parser *p) {
    if (++p->depth > MAX_DEPTH) perr(p, cur(p)->line, cur(p)->col, "template nested too deeply");
}
static void leave(struct parser *p) { p->depth--; }

/* ---- expressions ---------------------------------------------------------------------- */

static struct jnode *parse_expression(struct parser *p, bool with_condexpr);
static struct jnode *parse_tuple(struct parser *p, bool simplified, bool with_condexpr, const char *const *extra_end,
                                 bool explicit_parens, bool with_namespace);
static struct jnode *parse_primary(struct parser *p, bool with_namespace);
static struct jnode *parse_unary(struct parser *p, bool with_filter);
static struct jnode *parse_postfix(struct parser *p, struct jnode *n);
static struct jnode *parse_filter_expr(struct parser *p, struct jnode *n);
static struct jnode *parse_filter(struct parser *p, struct jnode *n, bool start_inline);

static struct jnode *parse_condexpr(struct parser *p) {
    enter(p);
    struct token *at = cur(p);
    struct jnode *expr1 = parse_expression(p, false);
    while (is_name(cur(p), "if")) {
        next(p);
        struct jnode *expr2 = parse_expression(p, false), *expr3 = NULL;
        if (is_name(cur(p), "else")) {
            next(p);
            expr3 = parse_condexpr(p);
        }
        struct jnode *c = mk(p, N_CONDEXPR, at);
        c->u.cond.test = expr2;
        c->u.cond.a = expr1;
        c->u.cond.b = expr3;
        expr1 = c;
        at = cur(p);
    }
    leave(p);
    return expr1;
}

static struct jnode *parse_not(struct parser *p);

static struct jnode *parse_and(struct parser *p) {
    struct token *at = cur(p);
    struct jnode *left = parse_not(p);
    while (is_name(cur(p), "and")) {
        next(p);
        struct jnode *right = parse_not(p), *n = mk(p, N_AND, at);
        n->u.bin.l = left;
        n->u.bin.r = right;
        left = n;
        at = cur(p);
    }
    return left;
}

static struct jnode *parse_or(struct parser *p) {
    struct token *at = cur(p);
    struct jnode *left = parse_and(p);
    while (is_name(cur(p), "or")) {
        next(p);
        struct jnode *right = parse_and(p), *n = mk(p, N_OR, at);
        n->u.bin.l = left;
        n->u.bin.r = right;
        left = n;
        at = cur(p);
    }
    return left;
}

static struct jnode *parse_expression(struct parser *p, bool with_condexpr) {
    if (with_condexpr) return parse_condexpr(p);
    enter(p);
    struct jnode *n = parse_or(p);
    leave(p);
    return n;
}

static struct jnode *parse_math1(struct parser *p);

static struct jnode *parse_compare(struct parser *p) {
    struct token *at = cur(p);
    struct jnode *expr = parse_math1(p);
    struct nvec rhs = { 0 };
    uint8_t ops[64];
    uint32_t nops = 0;
    for (;;) {
        int t = cur(p)->t, op = -1;
        if (t == T_EQ) op = CMP_EQ; else if (t == T_NE) op = CMP_NE; else if (t == T_LT) op = CMP_LT;
        else if (t == T_LTEQ) op = CMP_LE; else if (t == T_GT) op = CMP_GT; else if (t == T_GTEQ) op = CMP_GE;
        if (op >= 0) next(p);
        else if (is_name(cur(p), "in")) { next(p); op = CMP_IN; }
        else if (is_name(cur(p), "not") && is_name(look(p), "in")) { next(p); next(p); op = CMP_NOTIN; }
        else break;
        if (nops >= ARRAY_LEN(ops)) perr(p, cur(p)->line, cur(p)->col, "comparison chain too long");
        ops[nops++] = (uint8_t)op;
        nv_push(p, &rhs, parse_math1(p));
    }
    if (!nops) return expr;
    struct jnode *n = mk(p, N_COMPARE, at);
    n->u.cmp.first = expr;
    n->u.cmp.rhs = rhs.v;
    n->u.cmp.n = nops;
    n->u.cmp.ops = palloc(p, nops);
    memcpy(n->u.cmp.ops, ops, nops);
    return n;
}

static struct jnode *parse_not(struct parser *p) {
    if (is_name(cur(p), "not")) {
        struct token *at = next(p);
        enter(p);
        struct jnode *n = mk(p, N_NOT, at);
        n->u.un.x = parse_not(p);
        leave(p);
        return n;
    }
    return parse_compare(p);
}

static struct jnode *binop(struct parser *p, const struct token *at, int op, struct jnode *l, struct jnode *r) {
    struct jnode *n = mk(p, N_BINOP, at);
    n->op = (uint8_t)op;
    n->u.bin.l = l;
    n->u.bin.r = r;
    return n;
}

static struct jnode *parse_pow(struct parser *p) {
    struct token *at = cur(p);
    struct jnode *left = parse_unary(p, true);
    while (cur(p)->t == T_POW) {
        next(p);
        struct jnode *right = parse_unary(p, true);
        left = binop(p, at, OP_POW, left, right);
        at = cur(p);
    }
    return left;
}

static struct jnode *parse_math2(struct parser *p) {
    struct token *at = cur(p);
    struct jnode *left = parse_pow(p);
    for (;;) {
        int t = cur(p)->t, op;
        if (t == T_MUL) op = OP_MUL; else if (t == T_DIV) op = OP_DIV; else if (t == T_FLOORDIV) op = OP_FLOORDIV;
        else if (t == T_MOD) op = OP_MOD; else break;
        next(p);
        struct jnode *right = parse_pow(p);
        left = binop(p, at, op, left, right);
        at = cur(p);
    }
    return left;
}

static struct jnode *parse_concat(struct parser *p) {
    struct token *at = cur(p);
    struct nvec args = { 0 };
    nv_push(p, &args, parse_math2(p));
    while (cur(p)->t == T_TILDE) {
        next(p);
        nv_push(p, &args, parse_math2(p));
    }
    if (args.n == 1) return args.v[0];
    struct jnode *n = mk(p, N_CONCAT, at);
    n->u.items = nv_done(&args);
    return n;
}

static struct jnode *parse_math1(struct parser *p) {
    struct token *at = cur(p);
    struct jnode *left = parse_concat(p);
    while (cur(p)->t == T_ADD || cur(p)->t == T_SUB) {
        int op = cur(p)->t == T_ADD ? OP_ADD : OP_SUB;
        next(p);
        struct jnode *right = parse_concat(p);
        left = binop(p, at, op, left, right);
        at = cur(p);
    }
    return left;
}

static struct jnode *parse_unary(struct parser *p, bool with_filter) {
    struct token *at = cur(p);
    struct jnode *node;
    enter(p);
    if (at->t == T_SUB || at->t == T_ADD) {
        next(p);
        node = mk(p, at->t == T_SUB ? N_NEG : N_POS, at);
        node->u.un.x = parse_unary(p, false);
    } else {
        node = parse_primary(p, false);
    }
    node = parse_postfix(p, node);
    if (with_filter) node = parse_filter_expr(p, node);
    leave(p);
    return node;
}

static struct jnode *mk_const(struct parser *p, const struct token *at, jv v) {
    struct jnode *n = mk(p, N_CONST, at);
    n->u.cval = v;
    return n;
}

static struct jnode *parse_list(struct parser *p) {
    struct token *at = expect(p, T_LBRACKET);
    struct nvec items = { 0 };
    while (cur(p)->t != T_RBRACKET) {
        if (items.n) expect(p, T_COMMA);
        if (cur(p)->t == T_RBRACKET) break;
        nv_push(p, &items, parse_expression(p, true));
    }
    expect(p, T_RBRACKET);
    struct jnode *n = mk(p, N_LIST, at);
    n->u.items = nv_done(&items);
    return n;
}

static struct jnode *parse_dict(struct parser *p) {
    struct token *at = expect(p, T_LBRACE);
    struct nvec keys = { 0 }, vals = { 0 };
    while (cur(p)->t != T_RBRACE) {
        if (keys.n) expect(p, T_COMMA);
        if (cur(p)->t == T_RBRACE) break;
        nv_push(p, &keys, parse_expression(p, true));
        expect(p, T_COLON);
        nv_push(p, &vals, parse_expression(p, true));
    }
    expect(p, T_RBRACE);
    struct jnode *n = mk(p, N_DICT, at);
    n->u.dict.keys = nv_done(&keys);
    n->u.dict.vals = nv_done(&vals);
    return n;
}

static struct jnode *parse_primary(struct parser *p, bool with_namespace) {
    struct token *t = cur(p);
    struct jnode *node;
    enter(p);
    if (t->t == T_NAME) {
        next(p);
        if (is_name(t, "true") || is_name(t, "True")) node = mk_const(p, t, jv_bool(true));
        else if (is_name(t, "false") || is_name(t, "False")) node = mk_const(p, t, jv_bool(false));
        else if (is_name(t, "none") || is_name(t, "None")) node = mk_const(p, t, jv_none());
        else if (with_namespace && cur(p)->t == T_DOT) {
            next(p);
            struct token *attr = expect(p, T_NAME);
            node = mk(p, N_NSREF, t);
            node->u.nsref.id = intern(p, t->p, t->len);
            node->u.nsref.attr = pstr(p, attr->p, attr->len);
        } else {
            node = mk(p, N_NAME, t);
            node->u.name.id = intern(p, t->p, t->len);
        }
    } else if (t->t == T_STRING) { /* adjacent literals concatenate: 'a' "b" */
        size_t first = p->pos, len = 0;
        while (cur(p)->t == T_STRING) len += next(p)->v.s->len;
        if (p->pos - first == 1) {
            node = mk_const(p, t, jv_from_str(t->v.s, false));
        } else {
            char *buf = palloc(p, len + 1);
            size_t off = 0;
            for (size_t j = first; j < p->pos; j++) {
                memcpy(buf + off, p->toks[j].v.s->p, p->toks[j].v.s->len);
                off += p->toks[j].v.s->len;
            }
            struct jstr *str = palloc(p, sizeof *str);
            str->p = buf;
            str->len = len;
            str->nchars = jutf8_count(buf, len);
            node = mk_const(p, t, jv_from_str(str, false));
        }
    } else if (t->t == T_INT) {
        next(p);
        node = mk_const(p, t, jv_int(t->v.i));
    } else if (t->t == T_FLOAT) {
        next(p);
        node = mk_const(p, t, jv_float(t->v.d));
    } else if (t->t == T_LPAREN) {
        next(p);
        node = parse_tuple(p, false, true, NULL, true, false);
        expect(p, T_RPAREN);
    } else if (t->t == T_LBRACKET) {
        node = parse_list(p);
    } else if (t->t == T_LBRACE) {
        node = parse_dict(p);
    } else {
        char d[80];
        describe(t, d, sizeof d);
        if (t->t == T_EOF) perr(p, t->line, t->col, "unexpected end of template");
        perr(p, t->line, t->col, "unexpected '%s'", d);
    }
    leave(p);
    return node;
}

/* Jinja's is_tuple_end passes its extra end rules to Token.test_any as one
 * tuple argument, so they never match: only }} %} and ) end a tuple
 * (`{% for x, in y %}` is a syntax error there too). */
static bool is_tuple_end(struct parser *p, const char *const *extra_end) {
    (void)extra_end;
    int t = cur(p)->t;
    return t == T_VAR_END || t == T_BLOCK_END || t == T_RPAREN;
}

static struct jnode *parse_tuple(struct parser *p, bool simplified, bool with_condexpr, const char *const *extra_end,
                                 bool explicit_parens, bool with_namespace) {
    struct token *at = cur(p);
    struct nvec args = { 0 };
    bool is_tuple = false;
    enter(p);
    for (;;) {
        if (args.n) expect(p, T_COMMA);
        if (is_tuple_end(p, extra_end)) break;
        struct jnode *x = simplified ? parse_primary(p, with_namespace) : parse_expression(p, with_condexpr);
        nv_push(p, &args, x);
        if (cur(p)->t == T_COMMA) is_tuple = true;
        else break;
    }
    leave(p);
    if (!is_tuple) {
        if (args.n) return args.v[0];
        if (!explicit_parens) {
            char d[80];
            describe(cur(p), d, sizeof d);
            perr(p, cur(p)->line, cur(p)->col, "Expected an expression, got '%s'", d);
        }
    }
    struct jnode *n = mk(p, N_TUPLE, at);
    n->u.items = nv_done(&args);
    return n;
}

static void parse_call_args(struct parser *p, struct jcallargs *a) {
    struct token *lp = expect(p, T_LPAREN);
    struct nvec args = { 0 };
    struct jkwarg kw[64];
    uint32_t nkw = 0;
    bool require_comma = false;
    memset(a, 0, sizeof *a);
    while (cur(p)->t != T_RPAREN) {
        if (require_comma) {
            expect(p, T_COMMA);
            if (cur(p)->t == T_RPAREN) break;
        }
        if (cur(p)->t == T_MUL) {
            if (a->dyn_args || a->dyn_kwargs) perr(p, lp->line, lp->col, "invalid syntax for function call expression");
            next(p);
            a->dyn_args = parse_expression(p, true);
        } else if (cur(p)->t == T_POW) {
            if (a->dyn_kwargs) perr(p, lp->line, lp->col, "invalid syntax for function call expression");
            next(p);
            a->dyn_kwargs = parse_expression(p, true);
        } else if (cur(p)->t == T_NAME && look(p)->t == T_ASSIGN) {
            if (a->dyn_kwargs) perr(p, lp->line, lp->col, "invalid syntax for function call expression");
            if (nkw >= ARRAY_LEN(kw)) perr(p, lp->line, lp->col, "too many keyword arguments");
            struct token *k = next(p);
            next(p);
            kw[nkw].name = intern(p, k->p, k->len);
            kw[nkw].sname = p->ct->names[kw[nkw].name];
            kw[nkw].value = parse_expression(p, true);
            nkw++;
        } else {
            if (a->dyn_args || a->dyn_kwargs || nkw) perr(p, lp->line, lp->col, "invalid syntax for function call expression");
            nv_push(p, &args, parse_expression(p, true));
        }
        require_comma = true;
    }
    expect(p, T_RPAREN);
    a->args = nv_done(&args);
    if (nkw) {
        a->kw = palloc(p, nkw * sizeof *a->kw);
        memcpy(a->kw, kw, nkw * sizeof *kw);
    }
    a->nkw = nkw;
}

static struct jnode *parse_call(struct parser *p, struct jnode *fn) {
    struct token *at = cur(p);
    struct jnode *n = mk(p, N_CALL, at);
    n->u.call.fn = fn;
    parse_call_args(p, &n->u.call.a);
    return n;
}

static struct jnode *parse_subscribed(struct parser *p) {
    struct token *at = cur(p);
    struct jnode *args[3] = { NULL, NULL, NULL };
    if (cur(p)->t == T_COLON) {
        next(p);
    } else {
        struct jnode *node = parse_expression(p, true);
        if (cur(p)->t != T_COLON) return node;
        next(p);
        args[0] = node;
    }
    if (cur(p)->t == T_COLON) {
        /* no stop */
    } else if (cur(p)->t != T_RBRACKET && cur(p)->t != T_COMMA) {
        args[1] = parse_expression(p, true);
    }
    if (cur(p)->t == T_COLON) {
        next(p);
        if (cur(p)->t != T_RBRACKET && cur(p)->t != T_COMMA) args[2] = parse_expression(p, true);
    }
    struct jnode *n = mk(p, N_SLICE, at);
    n->u.slice.start = args[0];
    n->u.slice.stop = args[1];
    n->u.slice.step = args[2];
    return n;
}

static struct jnode *parse_subscript(struct parser *p, struct jnode *node) {
    struct token *t = next(p);
    if (t->t == T_DOT) {
        struct token *a = next(p);
        if (a->t == T_NAME) {
            struct jnode *n = mk(p, N_GETATTR, t);
            n->u.getattr.obj = node;
            n->u.getattr.attr = pstr(p, a->p, a->len);
            return n;
        }
        if (a->t != T_INT) perr(p, a->line, a->col, "expected name or number");
        struct jnode *n = mk(p, N_GETITEM, t);
        n->u.getitem.obj = node;
        n->u.getitem.key = mk_const(p, a, jv_int(a->v.i));
        return n;
    }
    /* lbracket */
    struct nvec args = { 0 };
    while (cur(p)->t != T_RBRACKET) {
        if (args.n) expect(p, T_COMMA);
        nv_push(p, &args, parse_subscribed(p));
    }
    expect(p, T_RBRACKET);
    struct jnode *key;
    if (args.n == 1) {
        key = args.v[0];
    } else {
        /* Jinja writes obj[(a:b, c)] for these: invalid Python, a compile error there */
        for (uint32_t i = 0; i < args.n; i++)
            if (args.v[i]->kind == N_SLICE) perr(p, args.v[i]->line, args.v[i]->col, "invalid syntax (slice in a tuple subscript)");
        key = mk(p, N_TUPLE, t);
        key->u.items = nv_done(&args);
    }
    if (key->kind == N_SLICE) { /* obj[a:b:c] */
        struct jnode *n = key;
        struct jnode *g = mk(p, N_GETITEM, t);
        g->u.getitem.obj = node;
        g->u.getitem.key = n;
        return g;
    }
    struct jnode *n = mk(p, N_GETITEM, t);
    n->u.getitem.obj = node;
    n->u.getitem.key = key;
    return n;
}

static struct jnode *parse_postfix(struct parser *p, struct jnode *node) {
    for (int guard = 0;; guard++) {
        if (guard > MAX_DEPTH) perr(p, cur(p)->line, cur(p)->col, "expression too long");
        int t = cur(p)->t;
        if (t == T_DOT || t == T_LBRACKET) node = parse_subscript(p, node);
        else if (t == T_LPAREN) node = parse_call(p, node);
        else break;
    }
    return node;
}

static struct jnode *parse_test(struct parser *p, struct jnode *node) {
    struct token *t = next(p); /* is */
    bool negated = false;
    if (is_name(cur(p), "not")) { next(p); negated = true; }
    struct token *nm = expect(p, T_NAME);
    char name[256];
    size_t nl = MIN(nm->len, sizeof name - 1);
    memcpy(name, nm->p, nl);
    while (cur(p)->t == T_DOT) {
        next(p);
        struct token *more = expect(p, T_NAME);
        if (nl + 1 + more->len < sizeof name) { name[nl++] = '.'; memcpy(name + nl, more->p, more->len); nl += more->len; }
    }
    name[nl] = 0;
    struct jnode *n = mk(p, N_TEST, t);
    n->u.filter.arg = node;
    n->u.filter.id = jtest_lookup(name, nl);
    n->u.filter.fname = pstr(p, name, nl);
    int ct = cur(p)->t;
    if (ct == T_LPAREN) {
        parse_call_args(p, &n->u.filter.a);
    } else if ((ct == T_NAME || ct == T_STRING || ct == T_INT || ct == T_FLOAT || ct == T_LBRACKET || ct == T_LBRACE) &&
               !is_name(cur(p), "else") && !is_name(cur(p), "or") && !is_name(cur(p), "and")) {
        if (is_name(cur(p), "is")) perr(p, cur(p)->line, cur(p)->col, "You cannot chain multiple tests with is");
        struct jnode *arg = parse_postfix(p, parse_primary(p, false));
        struct jnode **v = palloc(p, sizeof *v);
        v[0] = arg;
        n->u.filter.a.args.v = v;
        n->u.filter.a.args.n = 1;
    }
    if (negated) {
        struct jnode *x = mk(p, N_NOT, t);
        x->u.un.x = n;
        return x;
    }
    return n;
}

static struct jnode *parse_filter(struct parser *p, struct jnode *node, bool start_inline) {
    while (cur(p)->t == T_PIPE || start_inline) {
        if (!start_inline) next(p);
        struct token *t = expect(p, T_NAME);
        char name[256];
        size_t nl = MIN(t->len, sizeof name - 1);
        memcpy(name, t->p, nl);
        while (cur(p)->t == T_DOT) {
            next(p);
            struct token *more = expect(p, T_NAME);
            if (nl + 1 + more->len < sizeof name) { name[nl++] = '.'; memcpy(name + nl, more->p, more->len); nl += more->len; }
        }
        name[nl] = 0;
        struct jnode *n = mk(p, N_FILTER, t);
        n->u.filter.arg = node;
        n->u.filter.id = jfilter_lookup(name, nl);
        n->u.filter.fname = pstr(p, name, nl);
        if (cur(p)->t == T_LPAREN) parse_call_args(p, &n->u.filter.a);
        node = n;
        start_inline = false;
    }
    return node;
}

static struct jnode *parse_filter_expr(struct parser *p, struct jnode *node) {
    for (int guard = 0;; guard++) {
        if (guard > MAX_DEPTH) perr(p, cur(p)->line, cur(p)->col, "expression too long");
        if (cur(p)->t == T_PIPE) node = parse_filter(p, node, false);
        else if (is_name(cur(p), "is")) node = parse_test(p, node);
        else if (cur(p)->t == T_LPAREN) node = parse_call(p, node);
        else break;
    }
    return node;
}

/* ---- statements --------------------------------------------------------------------------- */

static struct jnode *subparse(struct parser *p, const char *const *end_tokens);

static bool can_assign(const struct jnode *n) {
    if (n->kind == N_NAME || n->kind == N_NSREF) return true;
    if (n->kind == N_TUPLE) {
        for (uint32_t i = 0; i < n->u.items.n; i++)
            if (!can_assign(n->u.items.v[i])) return false;
        return true;
    }
    return false;
}

static const char *node_kind_name(const struct jnode *n) {
    switch (n->kind) {
    case N_CONST: return "const";
    case N_CALL: return "call";
    case N_GETATTR: return "getattr";
    case N_GETITEM: return "getitem";
    case N_LIST: return "list";
    case N_DICT: return "dict";
    default: return "expression";
    }
}

static struct jnode *parse_assign_target(struct parser *p, bool with_tuple, bool name_only, const char *const *extra_end,
                                         bool with_namespace) {
    struct jnode *target;
    if (name_only) {
        struct token *t = expect(p, T_NAME);
        /* nodes.Name.can_assign: the constant names cannot be assigned */
        static const char *const consts[] = { "true", "false", "none", "True", "False", "None" };
        for (size_t i = 0; i < ARRAY_LEN(consts); i++)
            if (is_name(t, consts[i])) perr(p, t->line, t->col, "can't assign to 'name'");
        target = mk(p, N_NAME, t);
        target->u.name.id = intern(p, t->p, t->len);
    } else if (with_tuple) {
        target = parse_tuple(p, true, true, extra_end, false, with_namespace);
    } else {
        target = parse_primary(p, with_namespace);
    }
    if (!can_assign(target)) perr(p, target->line, target->col, "can't assign to '%s'", node_kind_name(target));
    return target;
}

static void fail_eof(struct parser *p, const char *const *end_tokens) {
    struct token *t = cur(p);
    char msg[512];
    int n = snprintf(msg, sizeof msg, "Unexpected end of template.");
    if (end_tokens && end_tokens[0]) {
        n += snprintf(msg + n, sizeof msg - (size_t)n, " Jinja was looking for the following tags: ");
        for (int i = 0; end_tokens[i] && n < (int)sizeof msg; i++)
            n += snprintf(msg + n, sizeof msg - (size_t)n, "%s'%s'", i ? " or " : "", end_tokens[i]);
        if (n < (int)sizeof msg) n += snprintf(msg + n, sizeof msg - (size_t)n, ".");
    }
    if (p->ntags && n < (int)sizeof msg)
        snprintf(msg + n, sizeof msg - (size_t)n, " The innermost block that needs to be closed is '%s'.", p->tags[p->ntags - 1]);
    perr(p, t->line, t->col, "%s", msg);
}

/* Parse statements until one of end_tokens; leaves that token current. */
static struct jnode *parse_statements(struct parser *p, const char *const *end_tokens, bool drop_needle) {
    if (cur(p)->t == T_COLON) next(p);
    expect(p, T_BLOCK_END);
    struct jnode *body = subparse(p, end_tokens);
    if (cur(p)->t == T_EOF) fail_eof(p, end_tokens);
    if (drop_needle) next(p);
    return body;
}

static const char *const END_FOR[] = { "endfor", "else", NULL };
static const char *const END_FOR2[] = { "endfor", NULL };
static const char *const END_IF[] = { "elif", "else", "endif", NULL };
static const char *const END_IF2[] = { "endif", NULL };
static const char *const END_SET[] = { "endset", NULL };
static const char *const END_MACRO[] = { "endmacro", NULL };
static const char *const END_CALL[] = { "endcall", NULL };
static const char *const END_FILTER[] = { "endfilter", NULL };
static const char *const END_WITH[] = { "endwith", NULL };
static const char *const END_GEN[] = { "endgeneration", NULL };
static const char *const IN_END[] = { "in", NULL };
static const char *const REC_END[] = { "recursive", NULL };

static struct jnode *parse_for(struct parser *p) {
    struct token *at = next(p);
    struct jnode *n = mk(p, N_FOR, at);
    n->u.forl.target = parse_assign_target(p, true, false, IN_END, false);
    expect_name(p, "in");
    n->u.forl.iter = parse_tuple(p, false, false, REC_END, false, false);
    if (is_name(cur(p), "if")) {
        next(p);
        n->u.forl.test = parse_expression(p, true);
    }
    if (is_name(cur(p), "recursive")) perr(p, cur(p)->line, cur(p)->col, "recursive for loops are not supported");
    p->loop_depth++;
    n->u.forl.body = parse_statements(p, END_FOR, false);
    p->loop_depth--;
    if (is_name(next(p), "endfor")) {
        n->u.forl.else_ = NULL;
    } else {
        n->u.forl.else_ = parse_statements(p, END_FOR2, true);
    }
    return n;
}

static struct jnode *parse_if(struct parser *p) {
    struct token *at = next(p);
    struct jnode *n = mk(p, N_IF, at);
    struct nvec tests = { 0 }, bodies = { 0 };
    for (;;) {
        nv_push(p, &tests, parse_tuple(p, false, false, NULL, false, false));
        nv_push(p, &bodies, parse_statements(p, END_IF, false));
        struct token *t = next(p);
        if (is_name(t, "elif")) continue;
        if (is_name(t, "else")) n->u.ifs.else_ = parse_statements(p, END_IF2, true);
        break;
    }
    n->u.ifs.tests = nv_done(&tests);
    n->u.ifs.bodies = nv_done(&bodies);
    return n;
}

static struct jnode *parse_set(struct parser *p) {
    struct token *at = next(p);
    struct jnode *target = parse_assign_target(p, true, false, NULL, true);
    if (cur(p)->t == T_ASSIGN) {
        next(p);
        struct jnode *n = mk(p, N_SET, at);
        n->u.set.target = target;
        n->u.set.value = parse_tuple(p, false, true, NULL, false, false);
        return n;
    }
    struct jnode *n = mk(p, N_SETBLOCK, at);
    n->u.setblock.target = target;
    n->u.setblock.filter = parse_filter(p, NULL, false);
    int saved = p->loop_depth;
    n->u.setblock.body = parse_statements(p, END_SET, true);
    p->loop_depth = saved;
    return n;
}

static void parse_signature(struct parser *p, struct jnode *n) {
    struct nvec params = { 0 }, defaults = { 0 };
    expect(p, T_LPAREN);
    while (cur(p)->t != T_RPAREN) {
        if (params.n) expect(p, T_COMMA);
        struct jnode *arg = parse_assign_target(p, true, true, NULL, false);
        if (cur(p)->t == T_ASSIGN) {
            next(p);
            nv_push(p, &defaults, parse_expression(p, true));
        } else if (defaults.n) {
            perr(p, cur(p)->line, cur(p)->col, "non-default argument follows default argument");
        }
        nv_push(p, &params, arg);
    }
    expect(p, T_RPAREN);
    n->u.macro.params = params.v;
    n->u.macro.nparams = params.n;
    n->u.macro.defaults = defaults.v;
    n->u.macro.ndefaults = defaults.n;
}

static struct jnode *parse_macro(struct parser *p) {
    struct token *at = next(p);
    struct jnode *n = mk(p, N_MACRO, at);
    struct jnode *name = parse_assign_target(p, true, true, NULL, false);
    n->u.macro.name = name->u.name.id;
    n->u.macro.sname = p->ct->names[name->u.name.id];
    parse_signature(p, n);
    int saved = p->loop_depth;
    p->loop_depth = 0;
    n->u.macro.body = parse_statements(p, END_MACRO, true);
    p->loop_depth = saved;
    return n;
}

static struct jnode *parse_call_block(struct parser *p) {
    struct token *at = next(p);
    struct jnode *n = mk(p, N_CALLBLOCK, at);
    struct jnode *m = mk(p, N_MACRO, at);
    m->u.macro.name = intern(p, "caller", 6);
    m->u.macro.sname = p->ct->names[m->u.macro.name];
    if (cur(p)->t == T_LPAREN) parse_signature(p, m);
    struct jnode *call = parse_expression(p, true);
    if (call->kind != N_CALL) perr(p, at->line, at->col, "expected call");
    int saved = p->loop_depth;
    p->loop_depth = 0;
    m->u.macro.body = parse_statements(p, END_CALL, true);
    p->loop_depth = saved;
    n->u.callblock.call = call;
    n->u.callblock.macro = m;
    return n;
}

static struct jnode *parse_filter_block(struct parser *p) {
    struct token *at = next(p);
    struct jnode *n = mk(p, N_FILTERBLOCK, at);
    n->u.filterblock.filter = parse_filter(p, NULL, true);
    n->u.filterblock.body = parse_statements(p, END_FILTER, true);
    return n;
}

static struct jnode *parse_with(struct parser *p) {
    struct token *at = next(p);
    struct jnode *n = mk(p, N_WITH, at);
    struct nvec targets = { 0 }, values = { 0 };
    while (cur(p)->t != T_BLOCK_END) {
        if (targets.n) expect(p, T_COMMA);
        nv_push(p, &targets, parse_assign_target(p, true, false, NULL, false));
        expect(p, T_ASSIGN);
        nv_push(p, &values, parse_expression(p, true));
    }
    n->u.with.targets = nv_done(&targets);
    n->u.with.values = nv_done(&values);
    n->u.with.body = parse_statements(p, END_WITH, true);
    return n;
}

static struct jnode *parse_generation(struct parser *p) {
    struct token *at = next(p);
    struct jnode *n = mk(p, N_WITH, at); /* a caller body: its own scope */
    int saved = p->loop_depth;
    p->loop_depth = 0;
    n->u.with.body = parse_statements(p, END_GEN, true);
    p->loop_depth = saved;
    return n;
}

static struct jnode *parse_print(struct parser *p) {
    struct token *at = next(p);
    struct jnode *n = mk(p, N_OUTPUT, at);
    struct nvec items = { 0 };
    while (cur(p)->t != T_BLOCK_END) {
        if (items.n) expect(p, T_COMMA);
        nv_push(p, &items, parse_expression(p, true));
    }
    n->u.items = nv_done(&items);
    return n;
}

static struct jnode *parse_statement(struct parser *p) {
    struct token *t = cur(p);
    if (t->t != T_NAME) perr(p, t->line, t->col, "tag name expected");
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)MIN(t->len, 60u), t->p);
    if (p->ntags >= MAX_DEPTH) perr(p, t->line, t->col, "template nested too deeply");
    enter(p);
    struct jnode *n = NULL;
    p->tags[p->ntags++] = pstr(p, name, strlen(name))->p; /* for "innermost block" messages */
    if (is_name(t, "for")) n = parse_for(p);
    else if (is_name(t, "if")) n = parse_if(p);
    else if (is_name(t, "set")) n = parse_set(p);
    else if (is_name(t, "macro")) n = parse_macro(p);
    else if (is_name(t, "call")) n = parse_call_block(p);
    else if (is_name(t, "filter")) n = parse_filter_block(p);
    else if (is_name(t, "with")) n = parse_with(p);
    else if (is_name(t, "print")) n = parse_print(p);
    else if (is_name(t, "generation")) n = parse_generation(p);
    else if (is_name(t, "break") || is_name(t, "continue")) {
        if (p->loop_depth == 0) perr(p, t->line, t->col, "'%s' outside loop", name);
        n = mk(p, is_name(t, "break") ? N_BREAK : N_CONTINUE, t);
        next(p);
    } else if (is_name(t, "block") || is_name(t, "extends") || is_name(t, "include") || is_name(t, "import") ||
               is_name(t, "from") || is_name(t, "autoescape")) {
        perr(p, t->line, t->col, "tag '%s' is not supported (no template loader)", name);
    } else {
        p->ntags--;
        perr(p, t->line, t->col, "Encountered unknown tag '%s'.", name);
    }
    p->ntags--;
    leave(p);
    return n;
}

static struct jnode *subparse(struct parser *p, const char *const *end_tokens) {
    struct token *at = cur(p);
    struct nvec body = { 0 }, data = { 0 };
    struct token *data_at = NULL;
    enter(p);
    for (;;) {
        struct token *t = cur(p);
        if (t->t == T_EOF) break;
        if (t->t == T_DATA) {
            if (!data.n) data_at = t;
            struct jnode *d = mk(p, N_DATA, t);
            d->u.data.text = pstr(p, t->p, t->len);
            nv_push(p, &data, d);
            next(p);
        } else if (t->t == T_VAR_BEGIN) {
            if (!data.n) data_at = t;
            next(p);
            nv_push(p, &data, parse_tuple(p, false, true, NULL, false, false));
            expect(p, T_VAR_END);
        } else if (t->t == T_BLOCK_BEGIN) {
            if (data.n) {
                struct jnode *o = mk(p, N_OUTPUT, data_at);
                o->u.items = nv_done(&data);
                nv_push(p, &body, o);
                memset(&data, 0, sizeof data);
            }
            next(p);
            if (end_tokens) {
                bool hit = false;
                for (const char *const *e = end_tokens; *e; e++)
                    if (is_name(cur(p), *e)) hit = true;
                if (hit) goto done;
            }
            nv_push(p, &body, parse_statement(p));
            expect(p, T_BLOCK_END);
        } else {
            char d[80];
            describe(t, d, sizeof d);
            perr(p, t->line, t->col, "unexpected '%s'", d);
        }
    }
    if (data.n) {
        struct jnode *o = mk(p, N_OUTPUT, data_at);
        o->u.items = nv_done(&data);
        nv_push(p, &body, o);
    }
done:
    leave(p);
    struct jnode *n = mk(p, N_SCOPEBODY, at);
    n->u.items = nv_done(&body);
    return n;
}

/* ---- checks after parsing: unknown filters/tests (Jinja raises them at compile
 * time unless they sit inside an if/inline-if of the same frame), macro specials. */

static void check(struct parser *p, struct jnode *n, bool soft, int depth);

static void check_args(struct parser *p, struct jcallargs *a, bool soft, int depth) {
    for (uint32_t i = 0; i < a->args.n; i++) check(p, a->args.v[i], soft, depth);
    for (uint32_t i = 0; i < a->nkw; i++) check(p, a->kw[i].value, soft, depth);
    if (a->dyn_args) check(p, a->dyn_args, soft, depth);
    if (a->dyn_kwargs) check(p, a->dyn_kwargs, soft, depth);
}

static void check_list(struct parser *p, struct jnodes l, bool soft, int depth) {
    for (uint32_t i = 0; i < l.n; i++) check(p, l.v[i], soft, depth);
}

/* Does the subtree load the name id (anywhere, nested macros included)? */
static bool loads_name(const struct jnode *n, uint32_t id, int depth);

static bool loads_list(struct jnodes l, uint32_t id, int depth) {
    for (uint32_t i = 0; i < l.n; i++)
        if (loads_name(l.v[i], id, depth)) return true;
    return false;
}

static bool loads_args(const struct jcallargs *a, uint32_t id, int depth) {
    for (uint32_t i = 0; i < a->nkw; i++)
        if (loads_name(a->kw[i].value, id, depth)) return true;
    return loads_list(a->args, id, depth) || loads_name(a->dyn_args, id, depth) || loads_name(a->dyn_kwargs, id, depth);
}

static bool loads_name(const struct jnode *n, uint32_t id, int depth) {
    if (!n || depth > MAX_DEPTH * 4) return false;
    depth++;
    switch (n->kind) {
    case N_NAME: return n->u.name.id == id;
    case N_NSREF: return n->u.nsref.id == id;
    case N_GETATTR: return loads_name(n->u.getattr.obj, id, depth);
    case N_GETITEM: return loads_name(n->u.getitem.obj, id, depth) || loads_name(n->u.getitem.key, id, depth);
    case N_SLICE:
        return loads_name(n->u.slice.start, id, depth) || loads_name(n->u.slice.stop, id, depth) ||
               loads_name(n->u.slice.step, id, depth);
    case N_CALL: return loads_name(n->u.call.fn, id, depth) || loads_args(&n->u.call.a, id, depth);
    case N_FILTER: case N_TEST: return loads_name(n->u.filter.arg, id, depth) || loads_args(&n->u.filter.a, id, depth);
    case N_BINOP: case N_AND: case N_OR: return loads_name(n->u.bin.l, id, depth) || loads_name(n->u.bin.r, id, depth);
    case N_NEG: case N_POS: case N_NOT: return loads_name(n->u.un.x, id, depth);
    case N_COMPARE:
        if (loads_name(n->u.cmp.first, id, depth)) return true;
        for (uint32_t i = 0; i < n->u.cmp.n; i++)
            if (loads_name(n->u.cmp.rhs[i], id, depth)) return true;
        return false;
    case N_CONCAT: case N_LIST: case N_TUPLE: case N_OUTPUT: case N_SCOPEBODY: return loads_list(n->u.items, id, depth);
    case N_DICT: return loads_list(n->u.dict.keys, id, depth) || loads_list(n->u.dict.vals, id, depth);
    case N_CONDEXPR:
        return loads_name(n->u.cond.test, id, depth) || loads_name(n->u.cond.a, id, depth) || loads_name(n->u.cond.b, id, depth);
    case N_IF: return loads_list(n->u.ifs.tests, id, depth) || loads_list(n->u.ifs.bodies, id, depth) || loads_name(n->u.ifs.else_, id, depth);
    case N_FOR:
        return loads_name(n->u.forl.iter, id, depth) || loads_name(n->u.forl.test, id, depth) ||
               loads_name(n->u.forl.body, id, depth) || loads_name(n->u.forl.else_, id, depth);
    case N_SET: return loads_name(n->u.set.value, id, depth) || (n->u.set.target->kind == N_NSREF && n->u.set.target->u.nsref.id == id);
    case N_SETBLOCK: return loads_name(n->u.setblock.filter, id, depth) || loads_name(n->u.setblock.body, id, depth);
    case N_MACRO:
        for (uint32_t i = 0; i < n->u.macro.ndefaults; i++)
            if (loads_name(n->u.macro.defaults[i], id, depth)) return true;
        return loads_name(n->u.macro.body, id, depth);
    case N_CALLBLOCK: return loads_name(n->u.callblock.call, id, depth) || loads_name(n->u.callblock.macro, id, depth);
    case N_FILTERBLOCK: return loads_name(n->u.filterblock.filter, id, depth) || loads_name(n->u.filterblock.body, id, depth);
    case N_WITH: return loads_list(n->u.with.values, id, depth) || loads_name(n->u.with.body, id, depth);
    default: return false;
    }
}

static void check_macro(struct parser *p, struct jnode *m, int depth) {
    struct chat_template *ct = p->ct;
    for (uint32_t i = 0; i < m->u.macro.nparams; i++) {
        uint32_t id = m->u.macro.params[i]->u.name.id;
        if (id == ct->id_caller) m->u.macro.explicit_caller = true;
    }
    m->u.macro.uses_caller = loads_name(m->u.macro.body, ct->id_caller, 0);
    m->u.macro.uses_varargs = loads_name(m->u.macro.body, ct->id_varargs, 0);
    m->u.macro.uses_kwargs = loads_name(m->u.macro.body, ct->id_kwargs, 0);
    for (uint32_t i = 0; i < m->u.macro.nparams; i++) {
        uint32_t id = m->u.macro.params[i]->u.name.id;
        if (id == ct->id_varargs) m->u.macro.uses_varargs = false;
        if (id == ct->id_kwargs) m->u.macro.uses_kwargs = false;
    }
    if (m->u.macro.uses_caller && m->u.macro.explicit_caller) {
        for (uint32_t i = 0; i < m->u.macro.nparams; i++)
            if (m->u.macro.params[i]->u.name.id == ct->id_caller && i < m->u.macro.nparams - m->u.macro.ndefaults)
                perr(p, m->line, m->col,
                     "When defining macros or call blocks the special \"caller\" argument must be omitted or be given a default.");
    }
    for (uint32_t i = 0; i < m->u.macro.ndefaults; i++) check(p, m->u.macro.defaults[i], false, depth);
    check(p, m->u.macro.body, false, depth);
}

static void check(struct parser *p, struct jnode *n, bool soft, int depth) {
    if (!n) return;
    if (++depth > MAX_DEPTH * 4) perr(p, n->line, n->col, "template nested too deeply");
    switch (n->kind) {
    case N_GETATTR: check(p, n->u.getattr.obj, soft, depth); break;
    case N_GETITEM: check(p, n->u.getitem.obj, soft, depth); check(p, n->u.getitem.key, soft, depth); break;
    case N_SLICE:
        check(p, n->u.slice.start, soft, depth); check(p, n->u.slice.stop, soft, depth); check(p, n->u.slice.step, soft, depth);
        break;
    case N_CALL: check(p, n->u.call.fn, soft, depth); check_args(p, &n->u.call.a, soft, depth); break;
    case N_FILTER: case N_TEST:
        if (n->u.filter.id < 0 && !soft)
            perr(p, n->line, n->col, "No %s named '%.*s'.", n->kind == N_FILTER ? "filter" : "test",
                 (int)n->u.filter.fname->len, n->u.filter.fname->p);
        check(p, n->u.filter.arg, soft, depth);
        check_args(p, &n->u.filter.a, soft, depth);
        break;
    case N_BINOP: case N_AND: case N_OR: check(p, n->u.bin.l, soft, depth); check(p, n->u.bin.r, soft, depth); break;
    case N_NEG: case N_POS: case N_NOT: check(p, n->u.un.x, soft, depth); break;
    case N_COMPARE:
        check(p, n->u.cmp.first, soft, depth);
        for (uint32_t i = 0; i < n->u.cmp.n; i++) check(p, n->u.cmp.rhs[i], soft, depth);
        break;
    case N_CONCAT: case N_LIST: case N_TUPLE: case N_OUTPUT: case N_SCOPEBODY: check_list(p, n->u.items, soft, depth); break;
    case N_DICT: check_list(p, n->u.dict.keys, soft, depth); check_list(p, n->u.dict.vals, soft, depth); break;
    case N_CONDEXPR:
        check(p, n->u.cond.test, true, depth); check(p, n->u.cond.a, true, depth); check(p, n->u.cond.b, true, depth);
        break;
    case N_IF:
        check_list(p, n->u.ifs.tests, true, depth);
        check_list(p, n->u.ifs.bodies, true, depth);
        check(p, n->u.ifs.else_, true, depth);
        break;
    case N_FOR: {
        const struct jnode *t = n->u.forl.target;
        if (t->kind == N_NAME && t->u.name.id == p->ct->id_loop)
            perr(p, t->line, t->col, "Can't assign to special loop variable in for-loop target");
        if (t->kind == N_TUPLE)
            for (uint32_t i = 0; i < t->u.items.n; i++)
                if (t->u.items.v[i]->kind == N_NAME && t->u.items.v[i]->u.name.id == p->ct->id_loop)
                    perr(p, t->line, t->col, "Can't assign to special loop variable in for-loop target");
        check(p, n->u.forl.iter, soft, depth);
        check(p, n->u.forl.test, false, depth);
        check(p, n->u.forl.body, false, depth);
        check(p, n->u.forl.else_, false, depth);
        n->u.forl.uses_loop = loads_name(n->u.forl.body, p->ct->id_loop, 0);
        break;
    }
    case N_SET: check(p, n->u.set.value, soft, depth); break;
    case N_SETBLOCK: check(p, n->u.setblock.filter, false, depth); check(p, n->u.setblock.body, false, depth); break;
    case N_MACRO: check_macro(p, n, depth); break;
    case N_CALLBLOCK: check(p, n->u.callblock.call, soft, depth); check_macro(p, n->u.callblock.macro, depth); break;
    case N_FILTERBLOCK: check(p, n->u.filterblock.filter, false, depth); check(p, n->u.filterblock.body, false, depth); break;
    case N_WITH: check_list(p, n->u.with.values, soft, depth); check(p, n->u.with.body, false, depth); break;
    default: break;
    }
}

/* ---- entry ------------------------------------------------------------------------------------ */

static bool valid_utf8(const char *s, size_t n, size_t *bad) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) { i++; continue; }
        size_t adv;
        uint32_t cp = jutf8_decode(s + i, n - i, &adv);
        if (adv == 1 || (cp >= 0xd800 && cp <= 0xdfff)) { *bad = i; return false; }
        i += adv;
    }
    return true;
}

int jinja_parse(struct chat_template *ct, const char *src, size_t len, char *err, size_t errlen) {
    struct parser p;
    memset(&p, 0, sizeof p);
    p.ct = ct;
    p.err = err;
    p.errlen = errlen;
    size_t bad;
    if (!valid_utf8(src, len, &bad)) {
        p.src = src;
        p.len = len;
        uint32_t line, col;
        pos_of(&p, bad, &line, &col);
        snprintf(err, errlen, "%u:%u: template is not valid UTF-8", line, col);
        return -1;
    }
    /* normalize newlines (\r\n, \r -> \n) and drop one trailing newline */
    char *norm = malloc(len + 1);
    if (!norm) { snprintf(err, errlen, "out of memory"); return -1; }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            norm[n++] = src[i];
        }
    }
    if (n && norm[n - 1] == '\n') n--;
    norm[n] = 0;
    p.src = norm;
    p.len = n;
    if (setjmp(p.jb)) {
        free(p.toks);
        free(norm);
        return -1;
    }
    ct->id_loop = intern(&p, "loop", 4);
    ct->id_caller = intern(&p, "caller", 6);
    ct->id_varargs = intern(&p, "varargs", 7);
    ct->id_kwargs = intern(&p, "kwargs", 6);
    lex(&p);
    ct->root = subparse(&p, NULL);
    if (cur(&p)->t != T_EOF) {
        char d[80];
        describe(cur(&p), d, sizeof d);
        perr(&p, cur(&p)->line, cur(&p)->col, "unexpected '%s'", d);
    }
    check(&p, ct->root, false, 0);
    ct->mentions_content = memmem(norm, n, "content", 7) != NULL || memmem(src, len, "content", 7) != NULL;
    ct->global_of = palloc(&p, (ct->nnames + 1) * sizeof(int));
    for (uint32_t i = 0; i < ct->nnames; i++) ct->global_of[i] = jglobal_lookup(ct->names[i]->p, ct->names[i]->len);
    free(p.toks);
    free(norm);
    return 0;
}
