/* tok_json.c — a small strict JSON parser for the tokenizer's files.
 *
 * Why not jansson: gemma3's tokenizer.json (33 MB, 780k strings) takes 0.6 s
 * in json_load_file alone, and the load budget is one second. This parser
 * works in place: strings are unescaped inside the file buffer (an unescaped
 * string is never longer than its source) and NUL-terminated there, and the
 * nodes come from a block allocator, so a parse is one pass with almost no
 * allocation. Owns: the file buffer and the node blocks of one document.
 *
 * Strict RFC 8259: UTF-8 is validated, lone surrogates in \u escapes are
 * errors (as serde_json), nesting is limited to 512 levels. Does not: keep
 * numbers' text, detect duplicate keys (lookups return the first; callers
 * that iterate see all, in file order). */
#include "text/tok_internal.h"

#include <math.h>
#include <stdio.h>

#define TJ_BLOCK 65536
#define TJ_MAX_DEPTH 512

struct tj_block { struct tj_block *next; size_t used; struct tjson node[TJ_BLOCK]; };

struct tj_parser {
    char *p, *end, *start;
    struct tjson_doc *doc;
    char *err; size_t errlen;
    int depth;
};

static struct tjson *tj_node(struct tj_parser *ps) {
    struct tj_block *b = ps->doc->blocks;
    if (!b || b->used == TJ_BLOCK) {
        b = xmalloc(sizeof *b);
        b->next = ps->doc->blocks;
        b->used = 0;
        ps->doc->blocks = b;
    }
    struct tjson *n = &b->node[b->used++];
    memset(n, 0, sizeof *n);
    return n;
}

static int tj_fail(struct tj_parser *ps, const char *what) {
    int line = 1, col = 1;
    for (const char *q = ps->start; q < ps->p && q < ps->end; q++) {
        if (*q == '\n') { line++; col = 1; }
        else if (((uint8_t)*q & 0xC0) != 0x80) col++;
    }
    return errf(ps->err, ps->errlen, "line %d, column %d: %s", line, col, what);
}

static void tj_ws(struct tj_parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t')) ps->p++;
}

static int tj_hex4(const char *s, uint32_t *v) {
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        x <<= 4;
        if (c >= '0' && c <= '9') x |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') x |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') x |= (uint32_t)(c - 'A' + 10);
        else return -1;
    }
    *v = x;
    return 0;
}

/* At the opening quote. Unescapes in place; *out and *len get the string. */
static int tj_string(struct tj_parser *ps, char **out, uint32_t *len) {
    char *src = ++ps->p, *dst = src;
    char *s0 = src;
    for (;;) {
        /* fast scan of plain bytes */
        char *q = src;
        while (q < ps->end && *q != '"' && *q != '\\' && (uint8_t)*q >= 0x20) q++;
        size_t plain = (size_t)(q - src);
        if (plain) {
            if (tok_utf8_valid_prefix(src, plain) != plain) {
                ps->p = src + tok_utf8_valid_prefix(src, plain);
                return tj_fail(ps, "invalid UTF-8 in a string");
            }
            if (dst != src) memmove(dst, src, plain);
            dst += plain;
            src = q;
        }
        if (src >= ps->end) { ps->p = src; return tj_fail(ps, "unterminated string"); }
        char c = *src;
        if (c == '"') break;
        if ((uint8_t)c < 0x20) { ps->p = src; return tj_fail(ps, "control character in a string"); }
        /* backslash */
        if (src + 1 >= ps->end) { ps->p = src; return tj_fail(ps, "unterminated string"); }
        char e = src[1];
        src += 2;
        switch (e) {
        case '"': *dst++ = '"'; break;
        case '\\': *dst++ = '\\'; break;
        case '/': *dst++ = '/'; break;
        case 'b': *dst++ = '\b'; break;
        case 'f': *dst++ = '\f'; break;
        case 'n': *dst++ = '\n'; break;
        case 'r': *dst++ = '\r'; break;
        case 't': *dst++ = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (ps->end - src < 4 || tj_hex4(src, &cp)) { ps->p = src; return tj_fail(ps, "bad \\u escape"); }
            src += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (ps->end - src < 6 || src[0] != '\\' || src[1] != 'u' || tj_hex4(src + 2, &lo) || lo < 0xDC00 ||
                    lo > 0xDFFF) {
                    ps->p = src;
                    return tj_fail(ps, "lone surrogate in a \\u escape");
                }
                src += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                ps->p = src;
                return tj_fail(ps, "lone surrogate in a \\u escape");
            }
            dst += tok_utf8_encode(cp, dst); /* never longer than the 6-12 escape bytes */
            break;
        }
        default: ps->p = src - 1; return tj_fail(ps, "bad escape");
        }
    }
    *dst = 0; /* dst <= src: the closing quote's position at the latest */
    *out = s0;
    *len = (uint32_t)(dst - s0);
    ps->p = src + 1;
    return 0;
}

static int tj_value(struct tj_parser *ps, struct tjson *n);

static int tj_number(struct tj_parser *ps, struct tjson *n) {
    char *s = ps->p, *q = s;
    if (q < ps->end && *q == '-') q++;
    if (q >= ps->end || !(*q >= '0' && *q <= '9')) return tj_fail(ps, "bad number");
    if (*q == '0') q++;
    else while (q < ps->end && *q >= '0' && *q <= '9') q++;
    if (q < ps->end && *q == '.') {
        q++;
        if (q >= ps->end || !(*q >= '0' && *q <= '9')) { ps->p = q; return tj_fail(ps, "bad number"); }
        while (q < ps->end && *q >= '0' && *q <= '9') q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < ps->end && (*q == '+' || *q == '-')) q++;
        if (q >= ps->end || !(*q >= '0' && *q <= '9')) { ps->p = q; return tj_fail(ps, "bad number"); }
        while (q < ps->end && *q >= '0' && *q <= '9') q++;
    }
    /* strtod needs a terminator: copy (numbers are short) */
    char tmp[64];
    size_t len = (size_t)(q - s);
    if (len >= sizeof tmp) len = sizeof tmp - 1;
    memcpy(tmp, s, len);
    tmp[len] = 0;
    n->type = TJ_NUM;
    n->num = strtod(tmp, NULL);
    ps->p = q;
    return 0;
}

static int tj_lit(struct tj_parser *ps, const char *w, int type, struct tjson *n) {
    size_t l = strlen(w);
    if ((size_t)(ps->end - ps->p) < l || memcmp(ps->p, w, l)) return tj_fail(ps, "unexpected token");
    ps->p += l;
    n->type = (uint8_t)type;
    return 0;
}

static int tj_value(struct tj_parser *ps, struct tjson *n) {
    tj_ws(ps);
    if (ps->p >= ps->end) return tj_fail(ps, "unexpected end of input");
    switch (*ps->p) {
    case '"': {
        char *s;
        if (tj_string(ps, &s, &n->n)) return -1;
        n->type = TJ_STR;
        n->s = s;
        return 0;
    }
    case '{': case '[': {
        bool obj = *ps->p == '{';
        if (++ps->depth > TJ_MAX_DEPTH) return tj_fail(ps, "nesting too deep");
        ps->p++;
        n->type = obj ? TJ_OBJ : TJ_ARR;
        struct tjson **tail = &n->child;
        tj_ws(ps);
        if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) { ps->p++; ps->depth--; return 0; }
        for (;;) {
            struct tjson *c = tj_node(ps);
            if (obj) {
                tj_ws(ps);
                if (ps->p >= ps->end || *ps->p != '"') return tj_fail(ps, "expected a key");
                char *k;
                if (tj_string(ps, &k, &c->klen)) return -1;
                c->key = k;
                tj_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':') return tj_fail(ps, "expected ':'");
                ps->p++;
            }
            if (tj_value(ps, c)) return -1;
            *tail = c;
            tail = &c->next;
            n->n++;
            tj_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
            if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) { ps->p++; break; }
            return tj_fail(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
        ps->depth--;
        return 0;
    }
    case 't': return tj_lit(ps, "true", TJ_TRUE, n);
    case 'f': return tj_lit(ps, "false", TJ_FALSE, n);
    case 'n': return tj_lit(ps, "null", TJ_NULL, n);
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) return tj_number(ps, n);
        return tj_fail(ps, "unexpected character");
    }
}

int tok_json_parse(struct tjson_doc *d, char *buf, size_t len, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    d->buf = buf;
    struct tj_parser ps = { .p = buf, .end = buf + len, .start = buf, .doc = d, .err = err, .errlen = errlen };
    if (len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3)) ps.p += 3; /* BOM */
    d->root = tj_node(&ps);
    if (tj_value(&ps, d->root)) { tok_json_free(d); return -1; }
    tj_ws(&ps);
    if (ps.p != ps.end) { tj_fail(&ps, "trailing characters after the JSON value"); tok_json_free(d); return -1; }
    return 0;
}

void tok_json_free(struct tjson_doc *d) {
    struct tj_block *b = d->blocks;
    while (b) { struct tj_block *nx = b->next; free(b); b = nx; }
    free(d->buf);
    memset(d, 0, sizeof *d);
}

const struct tjson *tok_json_get(const struct tjson *obj, const char *key) {
    if (!obj || obj->type != TJ_OBJ) return NULL;
    size_t kl = strlen(key);
    for (const struct tjson *c = obj->child; c; c = c->next)
        if (c->klen == kl && !memcmp(c->key, key, kl)) return c;
    return NULL;
}

const char *tok_json_type_name(const struct tjson *j) {
    if (!j) return "missing";
    static const char *names[] = { "null", "false", "true", "a number", "a string", "an array", "an object" };
    return names[j->type];
}
