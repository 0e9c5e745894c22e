/* jinja_builtins.c — what templates call: Jinja's filters and tests, the
 * globals of transformers' environment (range as the sandbox limits it,
 * dict, namespace, cycler, joiner, raise_exception, strftime_now), the
 * Python methods of str/list/tuple/dict values, and loop.cycle/changed.
 *
 * Each follows Python/Jinja2 3.1 semantics and argument binding (positional
 * then keyword, Python's errors for unknown or missing arguments). Methods
 * that mutate a list or dict are not attributes here: the immutable sandbox
 * turns them into an undefined that raises "access to attribute ... is
 * unsafe" (jinja_value.c).
 *
 * Does not implement (render error if called): the filters filesizeformat,
 * pprint, random, striptags, urlencode, urlize, wordwrap, xmlattr and the
 * lipsum global; full Unicode special casing (ß, ligatures and final sigma
 * are handled; other multi-character case mappings use the simple mapping). */
#define _GNU_SOURCE /* memmem, strftime_l, asprintf */
#include "text/jinja_internal.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "util/util.h"

/* ---- name tables ----------------------------------------------------------------- */

enum jfilter {
    F_ABS, F_ATTR, F_BATCH, F_CAPITALIZE, F_CENTER, F_COUNT, F_D, F_DEFAULT, F_DICTSORT, F_E, F_ESCAPE,
    F_FILESIZEFORMAT, F_FIRST, F_FLOAT, F_FORCEESCAPE, F_FORMAT, F_GROUPBY, F_INDENT, F_INT, F_JOIN, F_LAST,
    F_LENGTH, F_LIST, F_LOWER, F_ITEMS, F_MAP, F_MIN, F_MAX, F_PPRINT, F_RANDOM, F_REJECT, F_REJECTATTR,
    F_REPLACE, F_REVERSE, F_ROUND, F_SAFE, F_SELECT, F_SELECTATTR, F_SLICE, F_SORT, F_STRING, F_STRIPTAGS,
    F_SUM, F_TITLE, F_TRIM, F_TRUNCATE, F_UNIQUE, F_UPPER, F_URLENCODE, F_URLIZE, F_WORDCOUNT, F_WORDWRAP,
    F_XMLATTR, F_TOJSON, F_COUNT_
};
static const char *const filter_names[F_COUNT_] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int", "join", "last",
    "length", "list", "lower", "items", "map", "min", "max", "pprint", "random", "reject", "rejectattr",
    "replace", "reverse", "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags",
    "sum", "title", "trim", "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap",
    "xmlattr", "tojson",
};

enum jtest {
    T_ODD, T_EVEN, T_DIVISIBLEBY, T_DEFINED, T_UNDEFINED, T_FILTER, T_TEST, T_NONE, T_BOOLEAN, T_FALSE, T_TRUE,
    T_INTEGER, T_FLOAT, T_LOWER, T_UPPER, T_STRING, T_MAPPING, T_NUMBER, T_SEQUENCE, T_ITERABLE, T_CALLABLE,
    T_SAMEAS, T_ESCAPED, T_IN, T_EQ1, T_EQ2, T_EQ3, T_NE1, T_NE2, T_GT1, T_GT2, T_GT3, T_GE1, T_GE2, T_LT1,
    T_LT2, T_LT3, T_LE1, T_LE2, T_COUNT_
};
static const char *const test_names[T_COUNT_] = {
    "odd", "even", "divisibleby", "defined", "undefined", "filter", "test", "none", "boolean", "false", "true",
    "integer", "float", "lower", "upper", "string", "mapping", "number", "sequence", "iterable", "callable",
    "sameas", "escaped", "in", "==", "eq", "equalto", "!=", "ne", ">", "gt", "greaterthan", "ge", ">=", "<",
    "lt", "lessthan", "<=", "le",
};

enum jglobal { G_RANGE, G_DICT, G_NAMESPACE, G_LIPSUM, G_CYCLER, G_JOINER, G_RAISE, G_STRFTIME, G_COUNT_ };
static const char *const global_names[G_COUNT_] = {
    "range", "dict", "namespace", "lipsum", "cycler", "joiner", "raise_exception", "strftime_now",
};

enum jmethod {
    /* str */
    M_CAPITALIZE, M_CASEFOLD, M_CENTER, M_COUNT, M_ENDSWITH, M_FIND, M_FORMAT, M_FORMAT_MAP, M_INDEX, M_ISALNUM,
    M_ISALPHA, M_ISASCII, M_ISDECIMAL, M_ISDIGIT, M_ISLOWER, M_ISNUMERIC, M_ISSPACE, M_ISTITLE, M_ISUPPER,
    M_JOIN, M_LJUST, M_LOWER, M_LSTRIP, M_PARTITION, M_REMOVEPREFIX, M_REMOVESUFFIX, M_REPLACE, M_RFIND,
    M_RINDEX, M_RJUST, M_RPARTITION, M_RSPLIT, M_RSTRIP, M_SPLIT, M_SPLITLINES, M_STARTSWITH, M_STRIP,
    M_SWAPCASE, M_TITLE, M_UPPER, M_ZFILL, M_STR_LAST_,
    /* list / tuple */
    M_L_COUNT = M_STR_LAST_, M_L_INDEX, M_L_COPY,
    /* dict */
    M_D_GET, M_D_ITEMS, M_D_KEYS, M_D_VALUES, M_D_COPY,
    /* loop */
    M_LOOP_CYCLE, M_LOOP_CHANGED,
    /* cycler */
    M_CYC_NEXT, M_CYC_RESET,
    M_COUNT_
};
static const char *const method_names[M_COUNT_] = {
    "capitalize", "casefold", "center", "count", "endswith", "find", "format", "format_map", "index", "isalnum",
    "isalpha", "isascii", "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper",
    "join", "ljust", "lower", "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind",
    "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip",
    "swapcase", "title", "upper", "zfill",
    "count", "index", "copy",
    "get", "items", "keys", "values", "copy",
    "cycle", "changed",
    "next", "reset",
};

static int find_name(const char *const *tab, int n, const char *s, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(tab[i]) == len && memcmp(tab[i], s, len) == 0) return i;
    return -1;
}

int jfilter_lookup(const char *name, size_t len) { return find_name(filter_names, F_COUNT_, name, len); }
int jtest_lookup(const char *name, size_t len) { return find_name(test_names, T_COUNT_, name, len); }
int jglobal_lookup(const char *name, size_t len) { return find_name(global_names, G_COUNT_, name, len); }
const char *jmethod_name(int id) { return id >= 0 && id < M_COUNT_ ? method_names[id] : "?"; }
const char *jbuiltin_name(int id) { return id >= 0 && id < G_COUNT_ ? global_names[id] : "?"; }

int jmethod_lookup(jv obj, const char *name, size_t len) {
    int m;
    switch (obj.t) {
    case JV_STR: return find_name(method_names, M_STR_LAST_, name, len);
    case JV_LIST:
        if (obj.f == LK_LIST || obj.f == LK_TUPLE) {
            m = find_name(method_names + M_L_COUNT, 3, name, len);
            if (m == 2 && obj.f == LK_TUPLE) return -1;
            return m < 0 ? -1 : M_L_COUNT + m;
        }
        return -1;
    case JV_DICT:
        m = find_name(method_names + M_D_GET, 5, name, len);
        return m < 0 ? -1 : M_D_GET + m;
    case JV_OBJ:
        if (obj.u.o->kind == JO_LOOP) {
            m = find_name(method_names + M_LOOP_CYCLE, 2, name, len);
            return m < 0 ? -1 : M_LOOP_CYCLE + m;
        }
        if (obj.u.o->kind == JO_CYCLER) {
            m = find_name(method_names + M_CYC_NEXT, 2, name, len);
            return m < 0 ? -1 : M_CYC_NEXT + m;
        }
        return -1;
    default:
        return -1;
    }
}

bool jmethod_is_mutating(jv obj, const char *name, size_t len) {
    static const char *const list_mut[] = { "append", "clear", "pop", "reverse", "insert", "sort", "extend", "remove" };
    static const char *const dict_mut[] = { "clear", "pop", "popitem", "setdefault", "update" };
    if (obj.t == JV_LIST && obj.f == LK_LIST) return find_name(list_mut, 8, name, len) >= 0;
    if (obj.t == JV_DICT) return find_name(dict_mut, 5, name, len) >= 0;
    return false;
}

/* ---- argument binding ---------------------------------------------------------------- */

/* Bind positional args and keywords to params[0..np) (names); out[i] is
 * JV_UNDEF with un == NULL and given[i] false when not passed. */
static void bind(struct jrender *r, const char *fname, const char *const *params, int np, const jv *args, size_t nargs,
                 const struct jdict *kw, jv *out, bool *given) {
    if ((int)nargs > np)
        jr_fail(r, "%s() takes %d positional argument%s but %zu were given", fname, np + 1, np ? "s" : "", nargs + 1);
    for (int i = 0; i < np; i++) { out[i] = jv_undef(); given[i] = false; }
    for (size_t i = 0; i < nargs; i++) { out[i] = args[i]; given[i] = true; }
    if (!kw) return;
    for (uint32_t k = 0; k < kw->n; k++) {
        const struct jstr *kn = kw->k[k].u.s;
        int idx = kw->k[k].t == JV_STR ? find_name(params, np, kn->p, kn->len) : -1;
        if (idx < 0) jr_fail(r, "%s() got an unexpected keyword argument '%.*s'", fname, (int)kn->len, kn->p);
        if (given[idx]) jr_fail(r, "%s() got multiple values for argument '%s'", fname, params[idx]);
        out[idx] = kw->v[k];
        given[idx] = true;
    }
}

static void require(struct jrender *r, const char *fname, const char *const *params, int nreq, const bool *given) {
    for (int i = 0; i < nreq; i++)
        if (!given[i]) jr_fail(r, "%s() missing 1 required positional argument: '%s'", fname, params[i]);
}

static int64_t int_arg(struct jrender *r, jv v, const char *what) {
    if (v.t == JV_INT || v.t == JV_BOOL) return v.u.i;
    jr_fail(r, "'%s' object cannot be interpreted as an integer%s%s", jv_type_name(v), what ? " " : "", what ? what : "");
}

static struct jstr *str_arg(struct jrender *r, jv v, const char *fname) {
    if (v.t == JV_STR) return v.u.s;
    if (v.t == JV_UNDEF && v.u.un) jr_fail_undefined(r, v);
    jr_fail(r, "%s arg must be None or str", fname);
}

static jv wrapstr(struct jrender *r, const char *p, size_t len) { return jv_from_str(jstr_wrap(r, p, len), false); }

/* ---- code point helpers ------------------------------------------------------------------ */

static uint32_t *to_cps(struct jrender *r, const struct jstr *s, size_t *n) {
    uint32_t *c = jr_alloc(r, (s->nchars + 1) * sizeof(uint32_t));
    size_t k = 0;
    for (size_t i = 0; i < s->len;) {
        size_t adv;
        c[k++] = jutf8_decode(s->p + i, s->len - i, &adv);
        i += adv;
    }
    *n = k;
    return c;
}

static void put_cp(struct jrender *r, struct jbuf *b, uint32_t cp) {
    char t[4];
    jbuf_put(r, b, t, jutf8_encode(cp, t));
}

static bool upper_special(struct jrender *r, struct jbuf *b, uint32_t c, bool title) {
    switch (c) {
    case 0xdf: jbuf_put(r, b, title ? "Ss" : "SS", 2); return true;
    case 0xfb00: jbuf_put(r, b, title ? "Ff" : "FF", 2); return true;
    case 0xfb01: jbuf_put(r, b, title ? "Fi" : "FI", 2); return true;
    case 0xfb02: jbuf_put(r, b, title ? "Fl" : "FL", 2); return true;
    case 0xfb03: jbuf_put(r, b, title ? "Ffi" : "FFI", 3); return true;
    case 0xfb04: jbuf_put(r, b, title ? "Ffl" : "FFL", 3); return true;
    case 0xfb05: case 0xfb06: jbuf_put(r, b, title ? "St" : "ST", 2); return true;
    default: return false;
    }
}

static void put_upper(struct jrender *r, struct jbuf *b, uint32_t c) {
    if (c < 0x80) { jbuf_putc(r, b, (char)(c >= 'a' && c <= 'z' ? c - 32 : c)); return; }
    if (!upper_special(r, b, c, false)) put_cp(r, b, juc_upper(c));
}
static void put_title(struct jrender *r, struct jbuf *b, uint32_t c) {
    if (c < 0x80) { jbuf_putc(r, b, (char)(c >= 'a' && c <= 'z' ? c - 32 : c)); return; }
    if (!upper_special(r, b, c, true)) put_cp(r, b, juc_title(c));
}
static void put_lower(struct jrender *r, struct jbuf *b, const uint32_t *cps, size_t n, size_t i) {
    uint32_t c = cps[i];
    if (c < 0x80) { jbuf_putc(r, b, (char)(c >= 'A' && c <= 'Z' ? c + 32 : c)); return; }
    if (c == 0x130) { jbuf_put(r, b, "i\xcc\x87", 3); return; }
    if (c == 0x3a3) { /* final sigma */
        bool before = i > 0 && juc_is_cased(cps[i - 1]);
        bool after = i + 1 < n && juc_is_cased(cps[i + 1]);
        put_cp(r, b, before && !after ? 0x3c2 : 0x3c3);
        return;
    }
    put_cp(r, b, juc_lower(c));
}

enum casemode { C_UPPER, C_LOWER, C_TITLE, C_CAPITALIZE, C_SWAPCASE };

static jv str_case(struct jrender *r, jv v, int mode) {
    struct jstr *s = v.u.s;
    size_t n;
    uint32_t *c = to_cps(r, s, &n);
    jr_push_buf(r);
    struct jbuf *b = jr_out(r);
    bool prev_cased = false;
    for (size_t i = 0; i < n; i++) {
        switch (mode) {
        case C_UPPER: put_upper(r, b, c[i]); break;
        case C_LOWER: put_lower(r, b, c, n, i); break;
        case C_CAPITALIZE: if (i == 0) put_title(r, b, c[i]); else put_lower(r, b, c, n, i); break;
        case C_SWAPCASE:
            if (juc_is_upper(c[i])) put_lower(r, b, c, n, i);
            else if (juc_is_lower(c[i])) put_upper(r, b, c[i]);
            else put_cp(r, b, c[i]);
            break;
        case C_TITLE:
            if (prev_cased) put_lower(r, b, c, n, i);
            else put_title(r, b, c[i]);
            prev_cased = juc_is_cased(c[i]);
            break;
        }
    }
    return jv_from_str(jr_pop_buf(r), v.f & JVF_MARKUP);
}

/* ---- strip / split --------------------------------------------------------------------------- */

static bool in_chars(uint32_t c, const uint32_t *set, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (set[i] == c) return true;
    return false;
}

/* which: 1 left, 2 right, 3 both. chars NULL = whitespace. */
static jv str_strip(struct jrender *r, jv v, jv chars, int which) {
    struct jstr *s = v.u.s;
    uint32_t *set = NULL;
    size_t nset = 0;
    if (chars.t == JV_STR) set = to_cps(r, chars.u.s, &nset);
    else if (chars.t != JV_NONE && !(chars.t == JV_UNDEF && !chars.u.un)) str_arg(r, chars, "strip");
    size_t b = 0, e = s->len;
    if (which & 1) {
        while (b < e) {
            size_t adv;
            uint32_t c = jutf8_decode(s->p + b, e - b, &adv);
            if (set ? !in_chars(c, set, nset) : !jpy_isspace(c)) break;
            b += adv;
        }
    }
    if (which & 2) {
        while (e > b) {
            size_t k = e - 1;
            while (k > b && ((unsigned char)s->p[k] & 0xc0) == 0x80) k--;
            size_t adv;
            uint32_t c = jutf8_decode(s->p + k, e - k, &adv);
            if (adv != e - k) { k = e - 1; c = (unsigned char)s->p[k]; }
            if (set ? !in_chars(c, set, nset) : !jpy_isspace(c)) break;
            e = k;
        }
    }
    return jv_from_str(jstr_wrap(r, s->p + b, e - b), v.f & JVF_MARKUP);
}

static size_t next_cp(const char *p, size_t len, size_t i, uint32_t *c) {
    size_t adv;
    *c = jutf8_decode(p + i, len - i, &adv);
    return i + adv;
}

static jv str_split(struct jrender *r, jv v, jv sepv, int64_t maxsplit, bool right) {
    struct jstr *s = v.u.s;
    bool mk = v.f & JVF_MARKUP;
    struct jlist *out = jlist_new(r, 0);
    if (sepv.t == JV_NONE || (sepv.t == JV_UNDEF && !sepv.u.un)) {
        if (!right) {
            size_t i = 0;
            int64_t splits = 0;
            for (;;) {
                uint32_t c;
                while (i < s->len) { size_t j = next_cp(s->p, s->len, i, &c); if (!jpy_isspace(c)) break; i = j; }
                if (i >= s->len) break;
                if (maxsplit >= 0 && splits >= maxsplit) {
                    jlist_push(r, out, jv_from_str(jstr_wrap(r, s->p + i, s->len - i), mk));
                    break;
                }
                size_t st = i;
                while (i < s->len) { size_t j = next_cp(s->p, s->len, i, &c); if (jpy_isspace(c)) break; i = j; }
                jlist_push(r, out, jv_from_str(jstr_wrap(r, s->p + st, i - st), mk));
                splits++;
            }
        } else {
            size_t n;
            uint32_t *c = to_cps(r, s, &n);
            size_t *off = jr_alloc(r, (n + 1) * sizeof(size_t));
            for (size_t i = 0, o = 0; i <= n; i++) { off[i] = o; if (i < n) { char t[4]; o += jutf8_encode(c[i], t); } }
            int64_t e = (int64_t)n, splits = 0;
            struct jlist *rev = jlist_new(r, 0);
            for (;;) {
                while (e > 0 && jpy_isspace(c[e - 1])) e--;
                if (e <= 0) break;
                if (maxsplit >= 0 && splits >= maxsplit) {
                    jlist_push(r, rev, jv_from_str(jstr_wrap(r, s->p, off[e]), mk));
                    break;
                }
                int64_t st = e;
                while (st > 0 && !jpy_isspace(c[st - 1])) st--;
                jlist_push(r, rev, jv_from_str(jstr_wrap(r, s->p + off[st], off[e] - off[st]), mk));
                splits++;
                e = st;
            }
            for (size_t i = rev->n; i > 0; i--) jlist_push(r, out, rev->v[i - 1]);
        }
        return jv_from_list(out, LK_LIST);
    }
    struct jstr *sep = str_arg(r, sepv, "split");
    if (sep->len == 0) jr_fail(r, "empty separator");
    if (!right) {
        size_t i = 0;
        int64_t splits = 0;
        for (;;) {
            const char *hit = maxsplit >= 0 && splits >= maxsplit ? NULL
                                                                 : memmem(s->p + i, s->len - i, sep->p, sep->len);
            if (!hit) { jlist_push(r, out, jv_from_str(jstr_wrap(r, s->p + i, s->len - i), mk)); break; }
            size_t h = (size_t)(hit - s->p);
            jlist_push(r, out, jv_from_str(jstr_wrap(r, s->p + i, h - i), mk));
            i = h + sep->len;
            splits++;
        }
    } else {
        struct jlist *rev = jlist_new(r, 0);
        size_t e = s->len;
        int64_t splits = 0;
        for (;;) {
            size_t h = SIZE_MAX;
            if (!(maxsplit >= 0 && splits >= maxsplit) && e >= sep->len)
                for (size_t k = e - sep->len + 1; k-- > 0;)
                    if (memcmp(s->p + k, sep->p, sep->len) == 0) { h = k; break; }
            if (h == SIZE_MAX) { jlist_push(r, rev, jv_from_str(jstr_wrap(r, s->p, e), mk)); break; }
            jlist_push(r, rev, jv_from_str(jstr_wrap(r, s->p + h + sep->len, e - h - sep->len), mk));
            e = h;
            splits++;
        }
        for (size_t i = rev->n; i > 0; i--) jlist_push(r, out, rev->v[i - 1]);
    }
    return jv_from_list(out, LK_LIST);
}

static bool is_linebreak(uint32_t c) {
    return c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x85 ||
           c == 0x2028 || c == 0x2029;
}

static struct jlist *splitlines(struct jrender *r, struct jstr *s, bool keepends, bool mk) {
    struct jlist *out = jlist_new(r, 0);
    size_t i = 0, st = 0;
    while (i < s->len) {
        uint32_t c;
        size_t j = next_cp(s->p, s->len, i, &c);
        if (is_linebreak(c)) {
            size_t e = j;
            if (c == '\r' && j < s->len && s->p[j] == '\n') e = j + 1;
            jlist_push(r, out, jv_from_str(jstr_wrap(r, s->p + st, (keepends ? e : i) - st), mk));
            st = i = e;
            continue;
        }
        i = j;
    }
    if (st < s->len) jlist_push(r, out, jv_from_str(jstr_wrap(r, s->p + st, s->len - st), mk));
    return out;
}

static jv str_replace(struct jrender *r, jv v, struct jstr *old, struct jstr *new_, int64_t count) {
    struct jstr *s = v.u.s;
    jr_push_buf(r);
    struct jbuf *b = jr_out(r);
    if (count < 0) count = INT64_MAX;
    if (old->len == 0) {
        int64_t done = 0;
        size_t i = 0;
        if (done < count) { jbuf_put(r, b, new_->p, new_->len); done++; }
        while (i < s->len) {
            uint32_t c;
            size_t j = next_cp(s->p, s->len, i, &c);
            jbuf_put(r, b, s->p + i, j - i);
            i = j;
            if (done < count) { jbuf_put(r, b, new_->p, new_->len); done++; }
        }
    } else {
        size_t i = 0;
        int64_t done = 0;
        while (done < count) {
            const char *hit = memmem(s->p + i, s->len - i, old->p, old->len);
            if (!hit) break;
            size_t h = (size_t)(hit - s->p);
            jbuf_put(r, b, s->p + i, h - i);
            jbuf_put(r, b, new_->p, new_->len);
            i = h + old->len;
            done++;
        }
        jbuf_put(r, b, s->p + i, s->len - i);
    }
    return jv_from_str(jr_pop_buf(r), v.f & JVF_MARKUP);
}

/* Python's (start, end) of str methods, in code points -> byte range. */
static void str_range(struct jrender *r, struct jstr *s, jv startv, jv endv, size_t *bs, size_t *be) {
    int64_t n = (int64_t)s->nchars, st = 0, en = n;
    if (startv.t != JV_UNDEF && startv.t != JV_NONE) st = int_arg(r, startv, NULL);
    if (endv.t != JV_UNDEF && endv.t != JV_NONE) en = int_arg(r, endv, NULL);
    if (st < 0) { st += n; if (st < 0) st = 0; }
    if (en < 0) { en += n; if (en < 0) en = 0; }
    if (st > n) st = n;
    if (en > n) en = n;
    if (en < st) en = st;
    *bs = jutf8_offset(s, (size_t)st);
    *be = jutf8_offset(s, (size_t)en);
}

static bool affix_match(struct jrender *r, struct jstr *s, jv pre, jv startv, jv endv, bool suffix, const char *fn) {
    size_t bs, be;
    int64_t n = (int64_t)s->nchars;
    int64_t st = 0;
    if (startv.t != JV_UNDEF && startv.t != JV_NONE) {
        st = int_arg(r, startv, NULL);
        if (st < 0) st += n;
    }
    str_range(r, s, startv, endv, &bs, &be);
    if (st > n) return false; /* Python: start beyond the end never matches */
    const jv *cands = &pre;
    size_t nc = 1;
    if (pre.t == JV_LIST && pre.f == LK_TUPLE) { cands = pre.u.l->v; nc = pre.u.l->n; }
    else if (pre.t != JV_STR) jr_fail(r, "%s first arg must be str or a tuple of str, not %s", fn, jv_type_name(pre));
    for (size_t i = 0; i < nc; i++) {
        if (cands[i].t != JV_STR) jr_fail(r, "tuple for %s must only contain str, not %s", fn, jv_type_name(cands[i]));
        struct jstr *p = cands[i].u.s;
        if (p->len > be - bs) continue;
        if (!suffix && memcmp(s->p + bs, p->p, p->len) == 0) return true;
        if (suffix && memcmp(s->p + be - p->len, p->p, p->len) == 0) return true;
    }
    return false;
}

static int64_t str_find(struct jrender *r, struct jstr *s, struct jstr *sub, jv startv, jv endv, bool rev) {
    size_t bs, be;
    int64_t n = (int64_t)s->nchars, st = 0;
    if (startv.t != JV_UNDEF && startv.t != JV_NONE) { st = int_arg(r, startv, NULL); if (st < 0) st += n; }
    if (st > n) return -1;
    str_range(r, s, startv, endv, &bs, &be);
    if (sub->len > be - bs) return -1;
    size_t h = SIZE_MAX;
    if (!rev) {
        const char *hit = sub->len ? memmem(s->p + bs, be - bs, sub->p, sub->len) : s->p + bs;
        if (hit) h = (size_t)(hit - s->p);
    } else {
        for (size_t k = be - sub->len + 1; k-- > bs;)
            if (memcmp(s->p + k, sub->p, sub->len) == 0) { h = k; break; }
    }
    if (h == SIZE_MAX) return -1;
    return (int64_t)jutf8_count(s->p, h);
}

static jv str_pad(struct jrender *r, jv v, int64_t width, jv fillv, int how) { /* 0 center, 1 ljust, 2 rjust */
    struct jstr *s = v.u.s;
    uint32_t fill = ' ';
    if (fillv.t != JV_UNDEF) {
        if (fillv.t != JV_STR || fillv.u.s->nchars != 1) jr_fail(r, "The fill character must be exactly one character long");
        size_t adv;
        fill = jutf8_decode(fillv.u.s->p, fillv.u.s->len, &adv);
    }
    int64_t n = (int64_t)s->nchars;
    if (width <= n) return v;
    if (width > (int64_t)r->ct->lim.max_output) jr_fail(r, "width too large");
    int64_t marg = width - n, left;
    if (how == 0) left = marg / 2 + (marg & width & 1);
    else if (how == 1) left = 0;
    else left = marg;
    jr_push_buf(r);
    for (int64_t i = 0; i < left; i++) put_cp(r, jr_out(r), fill);
    jbuf_put(r, jr_out(r), s->p, s->len);
    for (int64_t i = 0; i < marg - left; i++) put_cp(r, jr_out(r), fill);
    return jv_from_str(jr_pop_buf(r), v.f & JVF_MARKUP);
}

static jv str_count(struct jrender *r, struct jstr *s, struct jstr *sub, jv startv, jv endv) {
    size_t bs, be;
    int64_t n = (int64_t)s->nchars, st = 0;
    if (startv.t != JV_UNDEF && startv.t != JV_NONE) { st = int_arg(r, startv, NULL); if (st < 0) st += n; }
    if (st > n) return jv_int(0);
    str_range(r, s, startv, endv, &bs, &be);
    if (sub->len == 0) return jv_int((int64_t)jutf8_count(s->p + bs, be - bs) + 1);
    int64_t c = 0;
    size_t i = bs;
    while (i + sub->len <= be) {
        const char *hit = memmem(s->p + i, be - i, sub->p, sub->len);
        if (!hit) break;
        c++;
        i = (size_t)(hit - s->p) + sub->len;
    }
    return jv_int(c);
}

static jv str_join(struct jrender *r, jv sepv, jv iterable) {
    struct jlist *l = jv_iterate(r, iterable);
    jr_work(r, l->n);
    struct jstr *sep = sepv.u.s;
    jr_push_buf(r);
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].t != JV_STR)
            jr_fail(r, "sequence item %zu: expected str instance, %s found", i, jv_type_name(l->v[i]));
        if (i) jbuf_put(r, jr_out(r), sep->p, sep->len);
        jbuf_put(r, jr_out(r), l->v[i].u.s->p, l->v[i].u.s->len);
    }
    return jv_from_str(jr_pop_buf(r), sepv.f & JVF_MARKUP);
}

/* ---- sorting --------------------------------------------------------------------------------- */

static void msort(struct jrender *r, jv *items, jv *keys, size_t n, bool reverse) {
    if (n < 2) return;
    jr_work(r, n * 8);
    jv *ti = jr_alloc(r, n * sizeof(jv)), *tk = jr_alloc(r, n * sizeof(jv));
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = MIN(lo + w, n), hi = MIN(lo + 2 * w, n), i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                /* stable: take right only if strictly before left (reverse: Python keeps stability too) */
                bool take_right = reverse ? jv_cmp(r, keys[i], keys[j], "<") < 0 && jv_cmp(r, keys[i], keys[j], "<") != 3
                                          : jv_cmp(r, keys[j], keys[i], "<") == -1;
                if (take_right) { ti[k] = items[j]; tk[k++] = keys[j++]; }
                else { ti[k] = items[i]; tk[k++] = keys[i++]; }
            }
            while (i < mid) { ti[k] = items[i]; tk[k++] = keys[i++]; }
            while (j < hi) { ti[k] = items[j]; tk[k++] = keys[j++]; }
        }
        memcpy(items, ti, n * sizeof(jv));
        memcpy(keys, tk, n * sizeof(jv));
    }
}

static jv ignore_case(struct jrender *r, jv v) {
    if (v.t == JV_STR) return str_case(r, v, C_LOWER);
    return v;
}

/* Jinja's _prepare_attribute_parts + environment.getitem chain. */
static jv attr_path(struct jrender *r, jv item, jv attribute) {
    if (attribute.t == JV_NONE) return item;
    if (attribute.t != JV_STR) return jv_getitem(r, item, attribute);
    struct jstr *a = attribute.u.s;
    size_t i = 0;
    for (;;) {
        const char *dot = memchr(a->p + i, '.', a->len - i);
        size_t e = dot ? (size_t)(dot - a->p) : a->len;
        bool digits = e > i;
        int64_t num = 0;
        for (size_t k = i; k < e && digits; k++) {
            if (a->p[k] < '0' || a->p[k] > '9' || num > 100000000000000000LL) digits = false;
            else num = num * 10 + (a->p[k] - '0');
        }
        item = jv_getitem(r, item, digits ? jv_int(num) : wrapstr(r, a->p + i, e - i));
        if (!dot) break;
        i = e + 1;
    }
    return item;
}

/* ---- filters ------------------------------------------------------------------------------------ */

static jv soft_str(struct jrender *r, jv v) { return jv_to_str(r, v); }

static struct json_opts json_opts_from(struct jrender *r, jv ensure_ascii, jv indent, jv separators, jv sort_keys) {
    struct json_opts o;
    memset(&o, 0, sizeof o);
    o.ensure_ascii = ensure_ascii.t != JV_UNDEF && jv_truthy(r, ensure_ascii);
    o.sort_keys = sort_keys.t != JV_UNDEF && jv_truthy(r, sort_keys);
    if (indent.t != JV_UNDEF && indent.t != JV_NONE) {
        o.has_indent = true;
        if (indent.t == JV_STR) { o.indent = indent.u.s->p; o.indent_len = indent.u.s->len; }
        else if (indent.t == JV_INT || indent.t == JV_BOOL) {
            int64_t n = indent.u.i < 0 ? 0 : indent.u.i;
            if (n > 4096) jr_fail(r, "indent too large");
            char *sp = jr_alloc(r, (size_t)n + 1);
            memset(sp, ' ', (size_t)n);
            o.indent = sp;
            o.indent_len = (size_t)n;
        } else {
            jr_fail(r, "can't multiply sequence by non-int of type '%s'", jv_type_name(indent));
        }
    }
    o.item_sep = o.has_indent ? "," : ", ";
    o.key_sep = ": ";
    if (separators.t != JV_UNDEF && separators.t != JV_NONE) { /* item_separator, key_separator = separators */
        struct jlist *sl = jv_iterate(r, separators);
        if (sl->n != 2) jr_fail(r, sl->n > 2 ? "too many values to unpack (expected 2)" : "not enough values to unpack (expected 2, got %zu)", sl->n);
        /* c_make_encoder(..., key_separator [5], item_separator [6], ...) */
        if (sl->v[1].t != JV_STR) jr_fail(r, "make_encoder() argument 5 must be str, not %s", jv_type_name(sl->v[1]));
        if (sl->v[0].t != JV_STR) jr_fail(r, "make_encoder() argument 6 must be str, not %s", jv_type_name(sl->v[0]));
        o.item_sep = sl->v[0].u.s->p;
        o.item_sep_len = sl->v[0].u.s->len;
        o.key_sep = sl->v[1].u.s->p;
        o.key_sep_len = sl->v[1].u.s->len;
        return o;
    }
    o.item_sep_len = strlen(o.item_sep);
    o.key_sep_len = strlen(o.key_sep);
    return o;
}

static jv to_int(struct jrender *r, jv v, jv def, int64_t base, bool *ok);
static bool py_float_parse(struct jrender *r, struct jstr *s0, double *out);

static jv markup(struct jrender *r, jv v) {
    if (v.t == JV_STR && (v.f & JVF_MARKUP)) return v;
    return jv_from_str(jv_to_jstr(r, v), true);
}

static jv escape_html(struct jrender *r, jv v, bool force) {
    if (!force && v.t == JV_STR && (v.f & JVF_MARKUP)) return v;
    struct jstr *s = jv_to_jstr(r, v);
    jr_push_buf(r);
    struct jbuf *b = jr_out(r);
    for (size_t i = 0; i < s->len; i++) {
        switch (s->p[i]) {
        case '&': jbuf_put(r, b, "&amp;", 5); break;
        case '<': jbuf_put(r, b, "&lt;", 4); break;
        case '>': jbuf_put(r, b, "&gt;", 4); break;
        case '"': jbuf_put(r, b, "&#34;", 5); break;
        case '\'': jbuf_put(r, b, "&#39;", 5); break;
        default: jbuf_putc(r, b, s->p[i]);
        }
    }
    return jv_from_str(jr_pop_buf(r), true);
}

static jv make_gen(struct jlist *l) { return jv_from_list(l, LK_GEN); }

static const char *const P_UNIQUE[] = { "case_sensitive", "attribute" };
static const char *const P_BATCH[] = { "linecount", "fill_with" };
static const char *const P_SLICE[] = { "slices", "fill_with" };

/* Jinja's map/select/reject/selectattr/rejectattr/items/unique/batch/slice
 * are generator functions: their bodies (and errors) run only when the
 * result is first iterated. A thunk keeps the call until then. */
struct jthunk { int id; jv value; jv *args; size_t nargs; const struct jdict *kw; };

static bool filter_is_lazy(int id) {
    return id == F_MAP || id == F_SELECT || id == F_REJECT || id == F_SELECTATTR || id == F_REJECTATTR ||
           id == F_ITEMS || id == F_UNIQUE || id == F_BATCH || id == F_SLICE;
}

static jv filter_body(struct jrender *r, int id, jv value, const jv *args, size_t nargs, const struct jdict *kw);

void jgen_force(struct jrender *r, jv gen) {
    struct jlist *l = gen.u.l;
    struct jthunk *t = l->thunk;
    if (!t) return;
    l->thunk = NULL;
    jv res = filter_body(r, t->id, t->value, t->args, t->nargs, t->kw);
    l->v = res.u.l->v;
    l->n = res.u.l->n;
    l->cap = res.u.l->cap;
    l->pos = 0;
}

static bool dispatch_test_by_name(struct jrender *r, jv name, jv item, const jv *args, size_t nargs, const struct jdict *kw) {
    if (name.t != JV_STR) jr_fail(r, "No test named %s.", jv_type_name(name));
    int id = jtest_lookup(name.u.s->p, name.u.s->len);
    if (id < 0) jr_fail(r, "No test named '%.*s'.", (int)name.u.s->len, name.u.s->p);
    return jtest_call(r, id, item, args, nargs, kw);
}

/* select/reject/selectattr/rejectattr */
static jv select_reject(struct jrender *r, jv value, const jv *args, size_t nargs, const struct jdict *kw, bool attr,
                        bool select) {
    struct jlist *out = jlist_new(r, 0);
    if (!jv_truthy(r, value)) return make_gen(out);
    size_t off = 0;
    jv attribute = jv_none();
    if (attr) {
        if (nargs < 1) jr_fail(r, "Missing parameter for attribute name");
        attribute = args[0];
        off = 1;
    }
    bool have_test = nargs > off;
    struct jlist *items = jv_iterate(r, value);
    jr_work(r, items->n);
    for (size_t i = 0; i < items->n; i++) {
        jv x = attr ? attr_path(r, items->v[i], attribute) : items->v[i];
        bool t = have_test ? dispatch_test_by_name(r, args[off], x, args + off + 1, nargs - off - 1, kw) : jv_truthy(r, x);
        if (t == select) jlist_push(r, out, items->v[i]);
    }
    return make_gen(out);
}

static jv do_map(struct jrender *r, jv value, const jv *args, size_t nargs, const struct jdict *kw) {
    struct jlist *out = jlist_new(r, 0);
    if (!jv_truthy(r, value)) return make_gen(out);
    jv attribute = jv_undef(), def = jv_none();
    bool by_attr = false;
    if (nargs == 0 && kw) {
        bool has_attr = false;
        for (uint32_t k = 0; k < kw->n; k++)
            if (kw->k[k].t == JV_STR && kw->k[k].u.s->len == 9 && memcmp(kw->k[k].u.s->p, "attribute", 9) == 0) has_attr = true;
        if (has_attr) {
            by_attr = true;
            for (uint32_t k = 0; k < kw->n; k++) {
                struct jstr *kn = kw->k[k].u.s;
                if (kn->len == 9 && memcmp(kn->p, "attribute", 9) == 0) attribute = kw->v[k];
                else if (kn->len == 7 && memcmp(kn->p, "default", 7) == 0) def = kw->v[k];
                else jr_fail(r, "Unexpected keyword argument '%.*s'", (int)kn->len, kn->p);
            }
        }
    }
    if (!by_attr && nargs == 0) jr_fail(r, "map requires a filter argument");
    struct jlist *items = jv_iterate(r, value);
    jr_work(r, items->n);
    int fid = -1;
    if (!by_attr) {
        if (args[0].t != JV_STR) jr_fail(r, "No filter named %s.", jv_type_name(args[0]));
        fid = jfilter_lookup(args[0].u.s->p, args[0].u.s->len);
        if (fid < 0) jr_fail(r, "No filter named '%.*s'.", (int)args[0].u.s->len, args[0].u.s->p);
    }
    for (size_t i = 0; i < items->n; i++) {
        jv x;
        if (by_attr) {
            x = attr_path(r, items->v[i], attribute);
            if (def.t != JV_NONE && x.t == JV_UNDEF) x = def;
        } else {
            x = jfilter_call(r, fid, items->v[i], args + 1, nargs - 1, kw);
        }
        jlist_push(r, out, x);
    }
    return make_gen(out);
}

static jv do_sort(struct jrender *r, jv value, bool reverse, bool case_sensitive, jv attribute, bool multi) {
    struct jlist *src = jv_iterate(r, value);
    size_t n = src->n;
    jv *items = jr_alloc(r, (n + 1) * sizeof(jv)), *keys = jr_alloc(r, (n + 1) * sizeof(jv));
    memcpy(items, src->v, n * sizeof(jv));
    for (size_t i = 0; i < n; i++) {
        if (multi) {
            /* make_multi_attrgetter: a list of keys, one per comma separated attribute */
            struct jlist *parts = jlist_new(r, 1);
            if (attribute.t == JV_STR) {
                struct jstr *a = attribute.u.s;
                size_t st = 0;
                for (size_t k = 0; k <= a->len; k++)
                    if (k == a->len || a->p[k] == ',') {
                        jv x = attr_path(r, items[i], wrapstr(r, a->p + st, k - st));
                        jlist_push(r, parts, case_sensitive ? x : ignore_case(r, x));
                        st = k + 1;
                    }
            } else {
                jv x = attr_path(r, items[i], attribute);
                jlist_push(r, parts, case_sensitive ? x : ignore_case(r, x));
            }
            keys[i] = jv_from_list(parts, LK_LIST);
        } else {
            jv x = attr_path(r, items[i], attribute);
            keys[i] = case_sensitive ? x : ignore_case(r, x);
        }
    }
    msort(r, items, keys, n, reverse);
    struct jlist *out = jlist_new(r, n);
    memcpy(out->v, items, n * sizeof(jv));
    out->n = n;
    return jv_from_list(out, LK_LIST);
}

static double py_round(double x, int64_t nd) {
    if (!isfinite(x) || nd > 330) return x;
    if (nd < -330) return copysign(0.0, x);
    if (nd >= 0) {
        char buf[512];
        snprintf(buf, sizeof buf, "%.*f", (int)nd, x);
        return strtod(buf, NULL);
    }
    double p = pow(10.0, (double)-nd);
    double y = x / p, f = floor(y), diff = y - f;
    double rr = diff > 0.5 ? f + 1 : diff < 0.5 ? f : (fmod(f, 2.0) == 0 ? f : f + 1);
    return rr * p;
}

static const char *const P_DEFAULT[] = { "default_value", "boolean" };
static const char *const P_JOIN[] = { "d", "attribute" };
static const char *const P_REPLACE[] = { "old", "new", "count" };
static const char *const P_TRIM[] = { "chars" };
static const char *const P_INT[] = { "default", "base" };
static const char *const P_FLOAT[] = { "default" };
static const char *const P_ROUND[] = { "precision", "method" };
static const char *const P_INDENT[] = { "width", "first", "blank" };
static const char *const P_CENTER[] = { "width" };
static const char *const P_DICTSORT[] = { "case_sensitive", "by", "reverse" };
static const char *const P_SORT[] = { "reverse", "case_sensitive", "attribute" };
static const char *const P_MINMAX[] = { "case_sensitive", "attribute" };
static const char *const P_SUM[] = { "attribute", "start" };
static const char *const P_ATTR[] = { "name" };
static const char *const P_TRUNCATE[] = { "length", "killwords", "end", "leeway" };
static const char *const P_TOJSON[] = { "ensure_ascii", "indent", "separators", "sort_keys" };
static const char *const P_NONE[] = { NULL };
static const char *const P_GROUPBY[] = { "attribute", "default", "case_sensitive" };

static bool bool_arg(struct jrender *r, jv v, bool def) { return v.t == JV_UNDEF && !v.u.un ? def : jv_truthy(r, v); }

jv jfilter_call(struct jrender *r, int id, jv value, const jv *args, size_t nargs, const struct jdict *kw) {
    if (!filter_is_lazy(id)) return filter_body(r, id, value, args, nargs, kw);
    /* arguments bind when the generator function is called */
    jv a[4];
    bool g[4];
    if (id == F_BATCH) { bind(r, "do_batch", P_BATCH, 2, args, nargs, kw, a, g); require(r, "do_batch", P_BATCH, 1, g); }
    if (id == F_SLICE) { bind(r, "sync_do_slice", P_SLICE, 2, args, nargs, kw, a, g); require(r, "sync_do_slice", P_SLICE, 1, g); }
    if (id == F_UNIQUE) bind(r, "sync_do_unique", P_UNIQUE, 2, args, nargs, kw, a, g);
    if (id == F_ITEMS && (nargs || (kw && kw->n))) jr_fail(r, "do_items() takes 1 positional argument but %zu were given", nargs + 1);
    struct jthunk *t = jr_alloc(r, sizeof *t);
    t->id = id;
    t->value = value;
    t->args = jr_alloc(r, (nargs + 1) * sizeof(jv));
    if (nargs) memcpy(t->args, args, nargs * sizeof(jv));
    t->nargs = nargs;
    t->kw = kw;
    struct jlist *l = jlist_new(r, 0);
    l->thunk = t;
    return make_gen(l);
}

static jv filter_body(struct jrender *r, int id, jv value, const jv *args, size_t nargs, const struct jdict *kw) {
    jv a[4];
    bool g[4];
    const char *fname = filter_names[id];
#define BIND(P, NREQ) do { bind(r, fname, P, (int)ARRAY_LEN(P), args, nargs, kw, a, g); require(r, fname, P, NREQ, g); } while (0)
#define NOARGS() do { if (nargs || (kw && kw->n)) bind(r, fname, P_NONE, 0, args, nargs, kw, a, g); } while (0)
    switch (id) {
    case F_ABS:
        NOARGS();
        if (value.t == JV_INT || value.t == JV_BOOL) {
            if (value.u.i == INT64_MIN) jr_fail(r, "integer overflow");
            return jv_int(value.u.i < 0 ? -value.u.i : value.u.i);
        }
        if (value.t == JV_FLOAT) return jv_float(fabs(value.u.d));
        jr_fail(r, "bad operand type for abs(): '%s'", jv_type_name(value));
    case F_ATTR: {
        BIND(P_ATTR, 1);
        if (a[0].t != JV_STR) jr_fail(r, "attribute name must be string");
        if (value.t == JV_UNDEF) jr_fail_undefined(r, value);
        /* attributes only: no fallback to items */
        jv probe = jv_getattr(r, value, a[0].u.s->p, a[0].u.s->len);
        if (value.t == JV_DICT && probe.t != JV_UNDEF && jmethod_lookup(value, a[0].u.s->p, a[0].u.s->len) < 0 &&
            !jmethod_is_mutating(value, a[0].u.s->p, a[0].u.s->len))
            return jv_undef_info(r, NULL, value, a[0], JU_PLAIN);
        return probe;
    }
    case F_BATCH: {
        BIND(P_BATCH, 1);
        int64_t lc = int_arg(r, a[0], NULL);
        struct jlist *items = jv_iterate(r, value), *out = jlist_new(r, 0), *tmp = jlist_new(r, 4);
        jr_work(r, items->n);
        for (size_t i = 0; i < items->n; i++) {
            if ((int64_t)tmp->n == lc) { /* as do_batch: a batch of 0 yields [] before every item */
                jlist_push(r, out, jv_from_list(tmp, LK_LIST));
                tmp = jlist_new(r, 4);
            }
            jlist_push(r, tmp, items->v[i]);
        }
        if (tmp->n) {
            if (g[1] && a[1].t != JV_NONE)
                while ((int64_t)tmp->n < lc) jlist_push(r, tmp, a[1]);
            jlist_push(r, out, jv_from_list(tmp, LK_LIST));
        }
        return make_gen(out);
    }
    case F_CAPITALIZE: NOARGS(); return str_case(r, soft_str(r, value), C_CAPITALIZE);
    case F_CENTER: {
        BIND(P_CENTER, 0);
        int64_t w = g[0] ? int_arg(r, a[0], NULL) : 80;
        return str_pad(r, soft_str(r, value), w, jv_undef(), 0);
    }
    case F_COUNT: case F_LENGTH: NOARGS(); return jv_int(jv_len_or_fail(r, value));
    case F_D: case F_DEFAULT:
        BIND(P_DEFAULT, 0);
        if (value.t == JV_UNDEF || (bool_arg(r, a[1], false) && !jv_truthy(r, value)))
            return g[0] ? a[0] : wrapstr(r, "", 0);
        return value;
    case F_DICTSORT: {
        BIND(P_DICTSORT, 0);
        bool cs = bool_arg(r, a[0], false), rev = g[2] ? int_arg(r, a[2], NULL) != 0 : false;
        int pos = 0;
        if (g[1]) {
            if (a[1].t == JV_STR && a[1].u.s->len == 3 && memcmp(a[1].u.s->p, "key", 3) == 0) pos = 0;
            else if (a[1].t == JV_STR && a[1].u.s->len == 5 && memcmp(a[1].u.s->p, "value", 5) == 0) pos = 1;
            else jr_fail(r, "You can only sort by either \"key\" or \"value\"");
        }
        if (value.t == JV_UNDEF) jr_fail_undefined(r, value);
        if (value.t != JV_DICT) jr_fail(r, "'%s' object has no attribute 'items'", jv_type_name(value));
        struct jdict *d = value.u.dict;
        jv *items = jr_alloc(r, (d->n + 1) * sizeof(jv)), *keys = jr_alloc(r, (d->n + 1) * sizeof(jv));
        for (uint32_t i = 0; i < d->n; i++) {
            struct jlist *t = jlist_new(r, 2);
            t->v[0] = d->k[i];
            t->v[1] = d->v[i];
            t->n = 2;
            items[i] = jv_from_list(t, LK_TUPLE);
            jv k = pos ? d->v[i] : d->k[i];
            keys[i] = cs ? k : ignore_case(r, k);
        }
        msort(r, items, keys, d->n, rev);
        struct jlist *out = jlist_new(r, d->n);
        memcpy(out->v, items, d->n * sizeof(jv));
        out->n = d->n;
        return jv_from_list(out, LK_LIST);
    }
    case F_E: case F_ESCAPE: NOARGS(); return escape_html(r, value, false);
    case F_FORCEESCAPE: NOARGS(); return escape_html(r, value, true);
    case F_FIRST: {
        NOARGS();
        if (value.t == JV_LIST && value.f == LK_GEN) {
            jgen_force(r, value);
            struct jlist *l = value.u.l;
            if (l->pos < l->n) return l->v[l->pos++];
        } else {
            struct jlist *l = jv_iterate(r, value);
            if (l->n) return l->v[0];
        }
        return jv_undef_info(r, "No first item, sequence was empty.", jv_undef(), jv_undef(), JU_PLAIN);
    }
    case F_LAST: {
        NOARGS();
        if (value.t == JV_LIST && value.f != LK_LIST && value.f != LK_TUPLE)
            jr_fail(r, "'%s' object is not reversible", jv_type_name(value));
        if (value.t == JV_NONE || value.t == JV_INT || value.t == JV_FLOAT || value.t == JV_BOOL)
            jr_fail(r, "'%s' object is not reversible", jv_type_name(value));
        struct jlist *l = jv_iterate(r, value);
        if (l->n) return l->v[l->n - 1];
        return jv_undef_info(r, "No last item, sequence was empty.", jv_undef(), jv_undef(), JU_PLAIN);
    }
    case F_FLOAT: {
        BIND(P_FLOAT, 0);
        jv def = g[0] ? a[0] : jv_float(0.0);
        double d;
        if (value.t == JV_UNDEF) jr_fail_undefined(r, value);
        if (value.t == JV_FLOAT) return value;
        if (value.t == JV_INT || value.t == JV_BOOL) return jv_float((double)value.u.i);
        if (value.t == JV_STR && py_float_parse(r, value.u.s, &d)) return jv_float(d);
        return def;
    }
    case F_FORMAT: {
        jv fmt = soft_str(r, value);
        if (nargs && kw && kw->n) jr_fail(r, "can't handle positional and keyword arguments at the same time");
        if (kw && kw->n) return jpy_percent_format(r, fmt, jv_from_dict((struct jdict *)kw));
        struct jlist *t = jlist_new(r, nargs);
        for (size_t i = 0; i < nargs; i++) t->v[t->n++] = args[i];
        return jpy_percent_format(r, fmt, jv_from_list(t, LK_TUPLE));
    }
    case F_GROUPBY: {
        BIND(P_GROUPBY, 1);
        bool cs = bool_arg(r, a[2], false);
        struct jlist *src = jv_iterate(r, value);
        size_t n = src->n;
        jv *items = jr_alloc(r, (n + 1) * sizeof(jv)), *keys = jr_alloc(r, (n + 1) * sizeof(jv));
        memcpy(items, src->v, n * sizeof(jv));
        for (size_t i = 0; i < n; i++) {
            jv x = attr_path(r, items[i], a[0]);
            if (g[1] && a[1].t != JV_NONE && x.t == JV_UNDEF) x = a[1];
            keys[i] = cs ? x : ignore_case(r, x);
        }
        jv *orig = jr_alloc(r, (n + 1) * sizeof(jv));
        for (size_t i = 0; i < n; i++) {
            jv x = attr_path(r, items[i], a[0]);
            if (g[1] && a[1].t != JV_NONE && x.t == JV_UNDEF) x = a[1];
            orig[i] = x;
        }
        /* sort (items, keys) but remember originals: sort indices */
        jv *idx = jr_alloc(r, (n + 1) * sizeof(jv));
        for (size_t i = 0; i < n; i++) idx[i] = jv_int((int64_t)i);
        msort(r, idx, keys, n, false);
        struct jlist *out = jlist_new(r, 0);
        for (size_t i = 0; i < n;) {
            size_t j = i + 1;
            while (j < n && jv_eq(r, keys[j], keys[i])) j++;
            struct jlist *grp = jlist_new(r, j - i);
            for (size_t k = i; k < j; k++) grp->v[grp->n++] = items[idx[k].u.i];
            struct jlist *t = jlist_new(r, 2);
            t->v[0] = cs ? keys[i] : orig[idx[i].u.i];
            t->v[1] = jv_from_list(grp, LK_LIST);
            t->n = 2;
            jv gt = jv_from_list(t, LK_TUPLE);
            gt.sub = 1;
            jlist_push(r, out, gt);
            i = j;
        }
        return jv_from_list(out, LK_LIST);
    }
    case F_INDENT: {
        BIND(P_INDENT, 0);
        if (value.t == JV_UNDEF) jr_fail_undefined(r, value); /* s += "\n" */
        if (value.t != JV_STR) jr_fail(r, "unsupported operand type(s) for +=: '%s' and 'str'", jv_type_name(value));
        jv s = value;
        struct jstr *ind;
        if (g[0] && a[0].t == JV_STR) ind = a[0].u.s;
        else {
            int64_t w = g[0] ? int_arg(r, a[0], NULL) : 4;
            if (w < 0) w = 0;
            if (w > 4096) jr_fail(r, "indent too large");
            char *sp = jr_alloc(r, (size_t)w + 1);
            memset(sp, ' ', (size_t)w);
            ind = jstr_wrap(r, sp, (size_t)w);
        }
        bool first = bool_arg(r, a[1], false), blank = bool_arg(r, a[2], false);
        struct jstr *withnl = jv_binop(r, OP_ADD, s, wrapstr(r, "\n", 1)).u.s;
        struct jlist *lines = splitlines(r, withnl, false, false);
        jr_work(r, lines->n);
        jr_push_buf(r);
        struct jbuf *b = jr_out(r);
        if (first) jbuf_put(r, b, ind->p, ind->len);
        for (size_t i = 0; i < lines->n; i++) {
            struct jstr *ln = lines->v[i].u.s;
            if (i) {
                jbuf_putc(r, b, '\n');
                if (blank || ln->len) jbuf_put(r, b, ind->p, ind->len);
            }
            jbuf_put(r, b, ln->p, ln->len);
        }
        return jv_from_str(jr_pop_buf(r), s.f & JVF_MARKUP);
    }
    case F_INT: {
        BIND(P_INT, 0);
        bool ok;
        return to_int(r, value, g[0] ? a[0] : jv_int(0), g[1] ? int_arg(r, a[1], NULL) : 10, &ok);
    }
    case F_JOIN: {
        BIND(P_JOIN, 0);
        jv sep = g[0] ? soft_str(r, a[0]) : wrapstr(r, "", 0);
        struct jlist *items = jv_iterate(r, value);
        jr_work(r, items->n);
        jr_push_buf(r);
        for (size_t i = 0; i < items->n; i++) {
            if (i) jbuf_put(r, jr_out(r), sep.u.s->p, sep.u.s->len);
            jv x = g[1] && a[1].t != JV_NONE ? attr_path(r, items->v[i], a[1]) : items->v[i];
            jv_write_str(r, jr_out(r), x);
        }
        return jv_from_str(jr_pop_buf(r), false);
    }
    case F_LIST: {
        NOARGS();
        struct jlist *l = jv_iterate(r, value), *c = jlist_new(r, l->n);
        memcpy(c->v, l->v, l->n * sizeof(jv));
        c->n = l->n;
        return jv_from_list(c, LK_LIST);
    }
    case F_LOWER: NOARGS(); return str_case(r, soft_str(r, value), C_LOWER);
    case F_UPPER: NOARGS(); return str_case(r, soft_str(r, value), C_UPPER);
    case F_ITEMS: {
        NOARGS();
        struct jlist *out = jlist_new(r, 0);
        if (value.t == JV_UNDEF) return make_gen(out);
        if (value.t != JV_DICT) jr_fail(r, "Can only get item pairs from a mapping.");
        for (uint32_t i = 0; i < value.u.dict->n; i++) {
            struct jlist *t = jlist_new(r, 2);
            t->v[0] = value.u.dict->k[i];
            t->v[1] = value.u.dict->v[i];
            t->n = 2;
            jlist_push(r, out, jv_from_list(t, LK_TUPLE));
        }
        return make_gen(out);
    }
    case F_MAP: return do_map(r, value, args, nargs, kw);
    case F_MIN: case F_MAX: {
        BIND(P_MINMAX, 0);
        bool cs = bool_arg(r, a[0], false);
        struct jlist *l = jv_iterate(r, value);
        jr_work(r, l->n);
        if (!l->n) return jv_undef_info(r, "No aggregated item, sequence was empty.", jv_undef(), jv_undef(), JU_PLAIN);
        size_t best = 0;
        jv bk = jv_undef();
        for (size_t i = 0; i < l->n; i++) {
            jv k = attr_path(r, l->v[i], g[1] ? a[1] : jv_none());
            if (!cs) k = ignore_case(r, k);
            if (i == 0) { bk = k; continue; }
            int c = jv_cmp(r, k, bk, id == F_MIN ? "<" : ">");
            if ((id == F_MIN && c == -1) || (id == F_MAX && c == 1)) { best = i; bk = k; }
        }
        return l->v[best];
    }
    case F_REJECT: return select_reject(r, value, args, nargs, kw, false, false);
    case F_REJECTATTR: return select_reject(r, value, args, nargs, kw, true, false);
    case F_SELECT: return select_reject(r, value, args, nargs, kw, false, true);
    case F_SELECTATTR: return select_reject(r, value, args, nargs, kw, true, true);
    case F_REPLACE: {
        BIND(P_REPLACE, 2);
        int64_t count = g[2] && a[2].t != JV_NONE ? int_arg(r, a[2], NULL) : -1;
        jv s = soft_str(r, value);
        s.f &= (uint8_t)~JVF_MARKUP; /* str(s) in a non-autoescape environment */
        return str_replace(r, s, soft_str(r, a[0]).u.s, soft_str(r, a[1]).u.s, count);
    }
    case F_REVERSE: {
        NOARGS();
        if (value.t == JV_STR) return jv_slice(r, value, jv_none(), jv_none(), jv_int(-1));
        struct jlist *l = jv_iterate(r, value), *o = jlist_new(r, l->n);
        for (size_t i = l->n; i > 0; i--) o->v[o->n++] = l->v[i - 1];
        return jv_from_list(o, value.t == JV_LIST && (value.f == LK_LIST || value.f == LK_TUPLE) ? LK_GEN : LK_LIST);
    }
    case F_ROUND: {
        BIND(P_ROUND, 0);
        int64_t prec = g[0] ? int_arg(r, a[0], NULL) : 0;
        int method = 0;
        if (g[1]) {
            if (a[1].t == JV_STR && a[1].u.s->len == 6 && !memcmp(a[1].u.s->p, "common", 6)) method = 0;
            else if (a[1].t == JV_STR && a[1].u.s->len == 4 && !memcmp(a[1].u.s->p, "ceil", 4)) method = 1;
            else if (a[1].t == JV_STR && a[1].u.s->len == 5 && !memcmp(a[1].u.s->p, "floor", 5)) method = 2;
            else jr_fail(r, "method must be common, ceil or floor");
        }
        if (!jv_is_num(value)) jr_fail(r, "type %s doesn't define __round__ method", jv_type_name(value));
        if (method == 0) {
            if (value.t != JV_FLOAT) {
                if (prec >= 0) return jv_int(value.u.i);
                if (prec < -18) return jv_int(0);
                int64_t m = 1;
                for (int64_t k = 0; k < -prec; k++) m *= 10;
                int64_t v = value.u.i, q = v / m, rem = v % m;
                if (rem < 0) { rem += m; q--; } /* floor division */
                if (2 * (__int128)rem > m || (2 * (__int128)rem == m && (q & 1))) q++; /* half to even */
                return jv_int((int64_t)((__int128)q * m));
            }
            return jv_float(py_round(value.u.d, prec));
        }
        double x = value.t == JV_FLOAT ? value.u.d : (double)value.u.i, p = pow(10.0, (double)prec);
        return jv_float((method == 1 ? ceil(x * p) : floor(x * p)) / p);
    }
    case F_SAFE: NOARGS(); return markup(r, value);
    case F_SLICE: {
        BIND(P_SLICE, 1);
        int64_t slices = int_arg(r, a[0], NULL);
        if (slices == 0) jr_fail(r, "integer division or modulo by zero");
        if (slices < 0) return make_gen(jlist_new(r, 0)); /* range(slices) is empty */
        if (slices > 100000) jr_fail(r, "too many slices");
        struct jlist *seq = jv_iterate(r, value), *out = jlist_new(r, (size_t)slices);
        int64_t length = (int64_t)seq->n, per = length / slices, extra = length % slices, offset = 0;
        for (int64_t sn = 0; sn < slices; sn++) {
            int64_t start = offset + sn * per;
            if (sn < extra) offset++;
            int64_t end = offset + (sn + 1) * per;
            struct jlist *tmp = jlist_new(r, (size_t)(end - start + 1));
            for (int64_t i = start; i < end; i++) tmp->v[tmp->n++] = seq->v[i];
            if (g[1] && a[1].t != JV_NONE && sn >= extra) jlist_push(r, tmp, a[1]);
            jlist_push(r, out, jv_from_list(tmp, LK_LIST));
        }
        return make_gen(out);
    }
    case F_SORT: {
        BIND(P_SORT, 0);
        bool rev = g[0] ? int_arg(r, a[0], NULL) != 0 : false; /* sorted(reverse=) wants an int */
        return do_sort(r, value, rev, bool_arg(r, a[1], false), g[2] ? a[2] : jv_none(), true);
    }
    case F_STRING: NOARGS(); return soft_str(r, value);
    case F_SUM: {
        BIND(P_SUM, 0);
        struct jlist *l = jv_iterate(r, value);
        jr_work(r, l->n);
        jv acc = g[1] ? a[1] : jv_int(0);
        for (size_t i = 0; i < l->n; i++) {
            jv x = g[0] && a[0].t != JV_NONE ? attr_path(r, l->v[i], a[0]) : l->v[i];
            if (acc.t == JV_STR) jr_fail(r, "sum() can't sum strings [use ''.join(seq) instead]");
            acc = jv_binop(r, OP_ADD, acc, x);
        }
        return acc;
    }
    case F_TITLE: {
        NOARGS();
        jv sv = soft_str(r, value);
        struct jstr *s = sv.u.s;
        jr_push_buf(r);
        size_t i = 0;
        /* split on runs of [-\s({\[<]+ keeping them; capitalize each word's first char */
        while (i < s->len) {
            size_t j = i;
            uint32_t c;
            size_t nx = next_cp(s->p, s->len, j, &c);
            bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || jpy_isspace(c);
            if (sep) {
                while (j < s->len) {
                    nx = next_cp(s->p, s->len, j, &c);
                    if (!(c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || jpy_isspace(c))) break;
                    j = nx;
                }
                jbuf_put(r, jr_out(r), s->p + i, j - i);
            } else {
                while (j < s->len) {
                    nx = next_cp(s->p, s->len, j, &c);
                    if (c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || jpy_isspace(c)) break;
                    j = nx;
                }
                struct jstr *w = jstr_wrap(r, s->p + i, j - i);
                size_t first_end = next_cp(w->p, w->len, 0, &c);
                jv up = str_case(r, jv_from_str(jstr_wrap(r, w->p, first_end), false), C_UPPER);
                jv lo = str_case(r, jv_from_str(jstr_wrap(r, w->p + first_end, w->len - first_end), false), C_LOWER);
                jbuf_put(r, jr_out(r), up.u.s->p, up.u.s->len);
                jbuf_put(r, jr_out(r), lo.u.s->p, lo.u.s->len);
            }
            i = j;
        }
        return jv_from_str(jr_pop_buf(r), sv.f & JVF_MARKUP);
    }
    case F_TRIM: {
        BIND(P_TRIM, 0);
        return str_strip(r, soft_str(r, value), g[0] ? a[0] : jv_none(), 3);
    }
    case F_TRUNCATE: {
        BIND(P_TRUNCATE, 0);
        jv sv = value;
        int64_t length = g[0] ? int_arg(r, a[0], NULL) : 255;
        bool killwords = bool_arg(r, a[1], false);
        struct jstr *end = g[2] ? soft_str(r, a[2]).u.s : jstr_wrap(r, "...", 3);
        int64_t leeway = g[3] && a[3].t != JV_NONE ? int_arg(r, a[3], NULL) : 5;
        if (length < (int64_t)end->nchars) jr_fail(r, "expected length >= %zu, got %lld", end->nchars, (long long)length);
        if (leeway < 0) jr_fail(r, "expected leeway >= 0, got %lld", (long long)leeway);
        if ((int64_t)jv_len_or_fail(r, sv) <= length + leeway) return sv; /* len(s) of any sized value */
        if (sv.t != JV_STR) jr_fail(r, "'%s' object has no attribute 'rsplit'", jv_type_name(sv));
        jv head = jv_slice(r, sv, jv_none(), jv_int(length - (int64_t)end->nchars), jv_none());
        if (!killwords) {
            struct jlist *parts = str_split(r, head, wrapstr(r, " ", 1), 1, true).u.l;
            head = parts->v[0];
        }
        return jv_binop(r, OP_ADD, head, jv_from_str(end, false));
    }
    case F_UNIQUE: {
        BIND(P_UNIQUE, 0);
        bool cs = bool_arg(r, a[0], false);
        struct jlist *l = jv_iterate(r, value), *out = jlist_new(r, 0);
        jr_work(r, l->n);
        struct jdict *seen = jdict_new(r, 0);
        for (size_t i = 0; i < l->n; i++) {
            jv k = attr_path(r, l->v[i], g[1] ? a[1] : jv_none());
            if (!cs) k = ignore_case(r, k);
            jv o;
            if (!jdict_get(r, seen, k, &o)) {
                jdict_set(r, seen, k, jv_none());
                jlist_push(r, out, l->v[i]);
            }
        }
        return make_gen(out);
    }
    case F_WORDCOUNT: {
        NOARGS();
        struct jstr *s = soft_str(r, value).u.s;
        int64_t n = 0;
        bool in = false;
        for (size_t i = 0; i < s->len;) {
            uint32_t c;
            i = next_cp(s->p, s->len, i, &c);
            bool w = c == '_' || juc_is_alnum(c);
            if (w && !in) n++;
            in = w;
        }
        return jv_int(n);
    }
    case F_TOJSON: {
        BIND(P_TOJSON, 0);
        struct json_opts o = json_opts_from(r, a[0], a[1], a[2], a[3]);
        jr_push_buf(r);
        jv_write_json(r, jr_out(r), value, &o, 0);
        return jv_from_str(jr_pop_buf(r), false);
    }
    default:
        jr_fail(r, "the filter '%s' is not supported by this engine", fname);
    }
#undef BIND
#undef NOARGS
}

/* Python float(str): strip, sign, inf/infinity/nan, decimal literal with
 * single underscores between digits. */
static bool py_float_parse(struct jrender *r, struct jstr *s0, double *out) {
    struct jstr *s = str_strip(r, jv_from_str(s0, false), jv_none(), 3).u.s;
    const char *p = s->p, *e = s->p + s->len;
    if (p == e) return false;
    char *buf = jr_alloc(r, s->len + 1), *o = buf;
    if (*p == '+' || *p == '-') *o++ = *p++;
    size_t rest = (size_t)(e - p);
    char low[10] = { 0 };
    for (size_t i = 0; i < rest && i < 9; i++) low[i] = (char)(p[i] | 0x20);
    if ((rest == 3 && !memcmp(low, "inf", 3)) || (rest == 8 && !memcmp(low, "infinity", 8))) {
        *out = buf[0] == '-' ? -INFINITY : INFINITY;
        return true;
    }
    if (rest == 3 && !memcmp(low, "nan", 3)) { *out = NAN; return true; }
    int ndig = 0;
    bool prev_digit = false, seen_dot = false, seen_e = false;
    for (; p < e; p++) {
        char c = *p;
        if (c >= '0' && c <= '9') { *o++ = c; prev_digit = true; ndig++; continue; }
        if (c == '_') {
            if (!prev_digit || p + 1 >= e || p[1] < '0' || p[1] > '9') return false;
            prev_digit = false;
            continue;
        }
        if (c == '.' && !seen_dot && !seen_e) { *o++ = c; seen_dot = true; prev_digit = false; continue; }
        if ((c == 'e' || c == 'E') && !seen_e && ndig) {
            *o++ = 'e';
            seen_e = true;
            prev_digit = false;
            if (p + 1 < e && (p[1] == '+' || p[1] == '-')) *o++ = *++p;
            if (p + 1 >= e || p[1] < '0' || p[1] > '9') return false;
            continue;
        }
        return false;
    }
    *o = 0;
    if (!ndig) return false;
    char *end;
    *out = strtod(buf, &end);
    return *end == 0;
}

/* Python int(str, base): 0 ok, -1 invalid (ValueError), -2 beyond int64. */
static int py_int_parse(struct jrender *r, struct jstr *s0, int64_t base, int64_t *out) {
    if (base != 0 && (base < 2 || base > 36)) return -1;
    struct jstr *s = str_strip(r, jv_from_str(s0, false), jv_none(), 3).u.s;
    const char *p = s->p, *e = s->p + s->len;
    bool neg = false;
    if (p < e && (*p == '+' || *p == '-')) neg = *p++ == '-';
    if (p >= e) return -1;
    int64_t b = base;
    bool had_prefix = false;
    if (e - p >= 2 && p[0] == '0') {
        char c = (char)(p[1] | 0x20);
        int pb = c == 'x' ? 16 : c == 'o' ? 8 : c == 'b' ? 2 : 0;
        if (pb && (b == 0 || b == pb)) { b = pb; p += 2; had_prefix = true; }
    }
    if (b == 0) {
        b = 10;
        if (p < e && *p == '0') { /* only zeros allowed after a leading zero */
            for (const char *q = p; q < e; q++)
                if (*q != '0' && *q != '_') return -1;
        }
    }
    unsigned __int128 acc = 0;
    bool prev_us = !had_prefix, any = false;
    if (had_prefix && p < e && *p == '_') { p++; prev_us = true; }
    for (; p < e; p++) {
        char c = *p;
        if (c == '_') { if (prev_us) return -1; prev_us = true; continue; }
        int d = c >= '0' && c <= '9' ? c - '0' : ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ? (c | 0x20) - 'a' + 10 : 99;
        if (d >= b) return -1;
        acc = acc * (unsigned)b + (unsigned)d;
        if (acc > (unsigned __int128)INT64_MAX + 1) return -2;
        prev_us = false;
        any = true;
    }
    if (!any || prev_us) return -1;
    if (!neg && acc > INT64_MAX) return -2;
    *out = neg ? (int64_t)(0 - (uint64_t)acc) : (int64_t)acc;
    return 0;
}

/* int() as Jinja's do_int calls it. */
static jv to_int(struct jrender *r, jv v, jv def, int64_t base, bool *ok) {
    *ok = true;
    switch (v.t) {
    case JV_UNDEF: jr_fail_undefined(r, v);
    case JV_INT: return v;
    case JV_BOOL: return jv_int(v.u.i);
    case JV_FLOAT:
        if (isinf(v.u.d)) jr_fail(r, "cannot convert float infinity to integer");
        if (isnan(v.u.d)) { *ok = false; return def; }
        if (fabs(v.u.d) >= 9.2e18) jr_fail(r, "integer overflow (Python ints are unbounded; this engine's are 64-bit)");
        return jv_int((int64_t)v.u.d);
    case JV_STR: {
        int64_t i;
        int rc = py_int_parse(r, v.u.s, base, &i);
        if (rc == 0) return jv_int(i);
        if (rc == -2) jr_fail(r, "integer overflow (Python ints are unbounded; this engine's are 64-bit)");
        double d;
        if (py_float_parse(r, v.u.s, &d) && isfinite(d)) {
            if (fabs(d) >= 9.2e18) jr_fail(r, "integer overflow (Python ints are unbounded; this engine's are 64-bit)");
            return jv_int((int64_t)d);
        }
        *ok = false;
        return def;
    }
    default:
        *ok = false;
        return def;
    }
}

/* ---- tests --------------------------------------------------------------------------------------- */

static bool is_callable(jv v) {
    if (v.t == JV_UNDEF) return true; /* Undefined defines __call__ (which raises) */
    if (v.t != JV_OBJ) return false;
    int k = v.u.o->kind;
    return k == JO_MACRO || k == JO_BUILTIN || k == JO_METHOD || k == JO_JOINER || k == JO_LOOP;
}

bool jtest_call(struct jrender *r, int id, jv value, const jv *args, size_t nargs, const struct jdict *kw) {
    static const char *const P_ONE[] = { "other" };
    jv a[1];
    bool g[1];
    const char *tname = test_names[id];
    switch (id) {
    case T_DIVISIBLEBY: case T_SAMEAS: case T_IN: case T_EQ1: case T_EQ2: case T_EQ3: case T_NE1: case T_NE2:
    case T_GT1: case T_GT2: case T_GT3: case T_GE1: case T_GE2: case T_LT1: case T_LT2: case T_LT3: case T_LE1:
    case T_LE2:
        bind(r, tname, P_ONE, 1, args, nargs, kw, a, g);
        require(r, tname, P_ONE, 1, g);
        break;
    default:
        if (nargs || (kw && kw->n)) bind(r, tname, P_ONE, 0, args, nargs, kw, a, g);
    }
    switch (id) {
    case T_ODD: return jv_eq(r, jv_binop(r, OP_MOD, value, jv_int(2)), jv_int(1));
    case T_EVEN: return jv_eq(r, jv_binop(r, OP_MOD, value, jv_int(2)), jv_int(0));
    case T_DIVISIBLEBY: return jv_eq(r, jv_binop(r, OP_MOD, value, a[0]), jv_int(0));
    case T_DEFINED: return value.t != JV_UNDEF;
    case T_UNDEFINED: return value.t == JV_UNDEF;
    case T_FILTER: return value.t == JV_STR && jfilter_lookup(value.u.s->p, value.u.s->len) >= 0;
    case T_TEST: return value.t == JV_STR && jtest_lookup(value.u.s->p, value.u.s->len) >= 0;
    case T_NONE: return value.t == JV_NONE;
    case T_BOOLEAN: return value.t == JV_BOOL;
    case T_FALSE: return value.t == JV_BOOL && !value.u.i;
    case T_TRUE: return value.t == JV_BOOL && value.u.i;
    case T_INTEGER: return value.t == JV_INT;
    case T_FLOAT: return value.t == JV_FLOAT;
    case T_LOWER: case T_UPPER: {
        struct jstr *s = jv_to_jstr(r, value);
        bool cased = false;
        for (size_t i = 0; i < s->len;) {
            uint32_t c;
            i = next_cp(s->p, s->len, i, &c);
            if (id == T_LOWER) { if (juc_is_upper(c)) return false; if (juc_is_lower(c)) cased = true; }
            else { if (juc_is_lower(c)) return false; if (juc_is_upper(c)) cased = true; }
        }
        return cased;
    }
    case T_STRING: return value.t == JV_STR;
    case T_MAPPING: return value.t == JV_DICT;
    case T_NUMBER: return jv_is_num(value);
    case T_SEQUENCE:
        if (value.t == JV_UNDEF || value.t == JV_STR || value.t == JV_DICT) return true;
        if (value.t == JV_LIST) return value.f == LK_LIST || value.f == LK_TUPLE;
        return jv_is_obj(value, JO_RANGE);
    case T_ITERABLE:
        if (value.t == JV_UNDEF || value.t == JV_STR || value.t == JV_LIST || value.t == JV_DICT) return true;
        return jv_is_obj(value, JO_RANGE) || jv_is_obj(value, JO_LOOP);
    case T_CALLABLE: return is_callable(value);
    case T_SAMEAS: {
        jv o = a[0];
        if (value.t != o.t) return false;
        switch (value.t) {
        case JV_NONE: return true;
        case JV_BOOL: return value.u.i == o.u.i;
        case JV_INT: return value.u.i == o.u.i && value.u.i >= -5 && value.u.i <= 256;
        case JV_STR: return value.u.s == o.u.s;
        case JV_LIST: return value.u.l == o.u.l;
        case JV_DICT: return value.u.dict == o.u.dict;
        case JV_OBJ: return value.u.o == o.u.o;
        default: return false;
        }
    }
    case T_ESCAPED: return value.t == JV_STR && (value.f & JVF_MARKUP);
    case T_IN: return jv_contains(r, a[0], value);
    case T_EQ1: case T_EQ2: case T_EQ3: return jv_eq(r, value, a[0]);
    case T_NE1: case T_NE2: return !jv_eq(r, value, a[0]);
    case T_GT1: case T_GT2: case T_GT3: return jv_cmp(r, value, a[0], ">") == 1;
    case T_GE1: case T_GE2: { int c = jv_cmp(r, value, a[0], ">="); return c == 1 || c == 0; }
    case T_LT1: case T_LT2: case T_LT3: return jv_cmp(r, value, a[0], "<") == -1;
    case T_LE1: case T_LE2: { int c = jv_cmp(r, value, a[0], "<="); return c == -1 || c == 0; }
    }
    return false;
}

/* ---- globals ------------------------------------------------------------------------------------------ */

/* The "C" locale, made once and shared (Python formats dates in the C locale
 * unless a program calls setlocale(LC_TIME)). NULL if newlocale fails. */
static locale_t c_locale(void) {
    static locale_t cloc;
    locale_t l = __atomic_load_n(&cloc, __ATOMIC_ACQUIRE);
    if (l) return l;
    l = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (!l) return (locale_t)0;
    locale_t expected = (locale_t)0;
    if (!__atomic_compare_exchange_n(&cloc, &expected, l, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        freelocale(l);
        return expected;
    }
    return l;
}

static void strftime_py(struct jrender *r, struct jbuf *b, struct jstr *fmt) {
    struct tm tm;
    int64_t usec = 0;
    if (r->now_fixed) {
        time_t t = (time_t)r->now;
        gmtime_r(&t, &tm);
    } else {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        time_t t = tv.tv_sec;
        usec = tv.tv_usec;
        localtime_r(&t, &tm);
    }
    /* datetime.strftime handles %f, %z and %Z itself (naive datetime: empty) */
    jr_push_buf(r);
    struct jbuf *f = jr_out(r);
    for (size_t i = 0; i < fmt->len; i++) {
        char c = fmt->p[i];
        if (c == '%' && i + 1 < fmt->len) {
            char d = fmt->p[i + 1];
            if (d == 'f') { jbuf_printf(r, f, "%06lld", (long long)usec); i++; continue; }
            if (d == 'z' || d == 'Z') { i++; continue; }
            jbuf_putc(r, f, c);
            jbuf_putc(r, f, d);
            i++;
            continue;
        }
        jbuf_putc(r, f, c);
    }
    jbuf_putc(r, f, 0);
    struct jstr *pf = jr_pop_buf(r);
    locale_t cloc = c_locale();
    /* time.strftime: a 1024-byte buffer, doubled while strftime returns 0, up
     * to 256 x the format's length */
    size_t fmtlen = pf->len - 1, n = 0;
    for (size_t cap = 1024;; cap *= 2) {
        if (cap > r->ct->lim.max_output * 2) jr_fail(r, "strftime output too large");
        char *out = jr_alloc(r, cap);
        n = cloc ? strftime_l(out, cap, pf->p, &tm, cloc) : strftime(out, cap, pf->p, &tm);
        if (n || cap >= 256 * fmtlen) {
            jbuf_put(r, b, out, n);
            break;
        }
    }
}

jv jbuiltin_call(struct jrender *r, int id, const jv *args, size_t nargs, const struct jdict *kw) {
    switch (id) {
    case G_RANGE: {
        if (kw && kw->n) jr_fail(r, "range() takes no keyword arguments");
        if (nargs < 1 || nargs > 3) jr_fail(r, "range expected at most 3 arguments, got %zu", nargs);
        int64_t start = 0, stop, step = 1;
        if (nargs == 1) stop = int_arg(r, args[0], NULL);
        else { start = int_arg(r, args[0], NULL); stop = int_arg(r, args[1], NULL); }
        if (nargs == 3) step = int_arg(r, args[2], NULL);
        if (step == 0) jr_fail(r, "range() arg 3 must not be zero");
        struct jobj *o = jobj_new(r, JO_RANGE);
        o->u.range.start = start;
        o->u.range.stop = stop;
        o->u.range.step = step;
        int64_t len;
        jv_len(r, jv_from_obj(o), &len);
        if (len > 100000) jr_fail(r, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        return jv_from_obj(o);
    }
    case G_DICT: case G_NAMESPACE: {
        if (nargs > 1) jr_fail(r, "%s expected at most 1 argument, got %zu", id == G_DICT ? "dict" : "namespace", nargs);
        struct jdict *d = jdict_new(r, 0);
        if (nargs == 1) {
            jv src = args[0];
            if (src.t == JV_UNDEF) jr_fail_undefined(r, src); /* dict() probes .keys */
            if (src.t == JV_DICT) {
                for (uint32_t i = 0; i < src.u.dict->n; i++) jdict_set(r, d, src.u.dict->k[i], src.u.dict->v[i]);
            } else if (jv_is_obj(src, JO_NAMESPACE)) {
                jr_fail(r, "'Namespace' object is not iterable");
            } else {
                struct jlist *l = jv_iterate(r, src);
                for (size_t i = 0; i < l->n; i++) {
                    struct jlist *pair = jv_iterate(r, l->v[i]);
                    if (pair->n != 2)
                        jr_fail(r, "dictionary update sequence element #%zu has length %zu; 2 is required", i, pair->n);
                    jdict_set(r, d, pair->v[0], pair->v[1]);
                }
            }
        }
        if (kw)
            for (uint32_t i = 0; i < kw->n; i++) jdict_set(r, d, kw->k[i], kw->v[i]);
        if (id == G_DICT) return jv_from_dict(d);
        struct jobj *o = jobj_new(r, JO_NAMESPACE);
        o->u.ns = d;
        return jv_from_obj(o);
    }
    case G_CYCLER: {
        if (kw && kw->n) jr_fail(r, "Cycler() got an unexpected keyword argument");
        if (!nargs) jr_fail(r, "at least one item has to be provided");
        struct jobj *o = jobj_new(r, JO_CYCLER);
        o->u.cycler.items = jlist_new(r, nargs);
        for (size_t i = 0; i < nargs; i++) o->u.cycler.items->v[o->u.cycler.items->n++] = args[i];
        return jv_from_obj(o);
    }
    case G_JOINER: {
        static const char *const P[] = { "sep" };
        jv a[1];
        bool g[1];
        bind(r, "Joiner", P, 1, args, nargs, kw, a, g);
        struct jobj *o = jobj_new(r, JO_JOINER);
        o->u.joiner.sep = g[0] ? jv_to_jstr(r, a[0]) : jstr_wrap(r, ", ", 2);
        return jv_from_obj(o);
    }
    case G_RAISE: {
        static const char *const P[] = { "message" };
        jv a[1];
        bool g[1];
        bind(r, "raise_exception", P, 1, args, nargs, kw, a, g);
        require(r, "raise_exception", P, 1, g);
        struct jstr *m = jv_to_jstr(r, a[0]);
        jr_fail(r, "%.*s", (int)m->len, m->p);
    }
    case G_STRFTIME: {
        static const char *const P[] = { "format" };
        jv a[1];
        bool g[1];
        bind(r, "strftime_now", P, 1, args, nargs, kw, a, g);
        require(r, "strftime_now", P, 1, g);
        if (a[0].t != JV_STR) jr_fail(r, "strftime() argument 1 must be str, not %s", jv_type_name(a[0]));
        jr_push_buf(r);
        strftime_py(r, jr_out(r), a[0].u.s);
        return jv_from_str(jr_pop_buf(r), false);
    }
    default:
        jr_fail(r, "the global '%s' is not supported by this engine", jbuiltin_name(id));
    }
}

/* ---- methods ----------------------------------------------------------------------------------------- */

/* start/end arguments of str.find/count/startswith...: ints, bools or None
 * (Python's slice-index conversion); absent ones become None. */
static void slice_args(struct jrender *r, jv *a, const bool *g, int from, int to) {
    for (int i = from; i <= to; i++) {
        if (!g[i]) { a[i] = jv_none(); continue; }
        if (a[i].t != JV_INT && a[i].t != JV_BOOL && a[i].t != JV_NONE)
            jr_fail(r, "slice indices must be integers or None or have an __index__ method");
    }
}

static bool str_all(struct jstr *s, bool (*pred)(uint32_t)) {
    if (!s->len) return false;
    for (size_t i = 0; i < s->len;) {
        uint32_t c;
        i = next_cp(s->p, s->len, i, &c);
        if (!pred(c)) return false;
    }
    return true;
}
static bool p_space(uint32_t c) { return jpy_isspace(c); }
static bool p_ascii(uint32_t c) { return c < 0x80; }

jv jmethod_call(struct jrender *r, int id, jv self, const jv *args, size_t nargs, const struct jdict *kw) {
    jv a[4];
    bool g[4];
    const char *mname = method_names[id];
#define MB(NREQ, ...) do { static const char *const P_[] = { __VA_ARGS__ }; \
        bind(r, mname, P_, (int)ARRAY_LEN(P_), args, nargs, kw, a, g); require(r, mname, P_, NREQ, g); } while (0)
#define M0() do { if (nargs || (kw && kw->n)) jr_fail(r, "%s.%s() takes no arguments (%zu given)", jv_type_name(self), mname, nargs + (kw ? kw->n : 0)); } while (0)
#define POSONLY() do { if (kw && kw->n) jr_fail(r, "%s.%s() takes no keyword arguments", jv_type_name(self), mname); } while (0)
    struct jstr *s = self.t == JV_STR ? self.u.s : NULL;
    bool mk = self.t == JV_STR && (self.f & JVF_MARKUP);
    switch (id) {
    case M_CAPITALIZE: M0(); return str_case(r, self, C_CAPITALIZE);
    case M_CASEFOLD: M0(); return str_case(r, self, C_LOWER);
    case M_LOWER: M0(); return str_case(r, self, C_LOWER);
    case M_UPPER: M0(); return str_case(r, self, C_UPPER);
    case M_TITLE: M0(); return str_case(r, self, C_TITLE);
    case M_SWAPCASE: M0(); return str_case(r, self, C_SWAPCASE);
    case M_CENTER: case M_LJUST: case M_RJUST:
        POSONLY();
        MB(1, "width", "fillchar");
        return str_pad(r, self, int_arg(r, a[0], NULL), a[1], id == M_CENTER ? 0 : id == M_LJUST ? 1 : 2);
    case M_ZFILL: {
        POSONLY();
        MB(1, "width");
        int64_t w = int_arg(r, a[0], NULL), n = (int64_t)s->nchars;
        if (w <= n) return self;
        if (w > (int64_t)r->ct->lim.max_output) jr_fail(r, "width too large");
        jr_push_buf(r);
        size_t st = 0;
        if (s->len && (s->p[0] == '+' || s->p[0] == '-')) { jbuf_putc(r, jr_out(r), s->p[0]); st = 1; }
        for (int64_t i = 0; i < w - n; i++) jbuf_putc(r, jr_out(r), '0');
        jbuf_put(r, jr_out(r), s->p + st, s->len - st);
        return jv_from_str(jr_pop_buf(r), mk);
    }
    case M_COUNT:
        POSONLY();
        MB(1, "sub", "start", "end");
        slice_args(r, a, g, 1, 2);
        return str_count(r, s, str_arg(r, a[0], "count"), a[1], a[2]);
    case M_STARTSWITH: case M_ENDSWITH:
        POSONLY();
        MB(1, "prefix", "start", "end");
        slice_args(r, a, g, 1, 2);
        return jv_bool(affix_match(r, s, a[0], a[1], a[2], id == M_ENDSWITH, mname));
    case M_FIND: case M_RFIND: case M_INDEX: case M_RINDEX: {
        POSONLY();
        MB(1, "sub", "start", "end");
        if (a[0].t != JV_STR) jr_fail(r, "must be str, not %s", jv_type_name(a[0]));
        slice_args(r, a, g, 1, 2);
        int64_t i = str_find(r, s, a[0].u.s, a[1], a[2], id == M_RFIND || id == M_RINDEX);
        if (i < 0 && (id == M_INDEX || id == M_RINDEX)) jr_fail(r, "substring not found");
        return jv_int(i);
    }
    case M_FORMAT: return jpy_str_format(r, s, args, nargs, kw, NULL);
    case M_FORMAT_MAP:
        POSONLY();
        MB(1, "mapping");
        if (a[0].t != JV_DICT) /* any object works until a named field is looked up in it */
            return jpy_str_format(r, s, NULL, 0, NULL, &a[0]);
        return jpy_str_format(r, s, NULL, 0, a[0].u.dict, NULL);
    case M_ISALNUM: M0(); return jv_bool(str_all(s, juc_is_alnum));
    case M_ISALPHA: M0(); return jv_bool(str_all(s, juc_is_alpha));
    case M_ISASCII: M0(); return jv_bool(s->len == 0 || str_all(s, p_ascii));
    case M_ISDECIMAL: M0(); return jv_bool(str_all(s, juc_is_decimal));
    case M_ISDIGIT: M0(); return jv_bool(str_all(s, juc_is_digit));
    case M_ISNUMERIC: M0(); return jv_bool(str_all(s, juc_is_numeric));
    case M_ISSPACE: M0(); return jv_bool(str_all(s, p_space));
    case M_ISLOWER: M0(); return jv_bool(jtest_call(r, T_LOWER, self, NULL, 0, NULL));
    case M_ISUPPER: M0(); return jv_bool(jtest_call(r, T_UPPER, self, NULL, 0, NULL));
    case M_ISTITLE: {
        M0();
        bool prev = false, any = false;
        for (size_t i = 0; i < s->len;) {
            uint32_t c;
            i = next_cp(s->p, s->len, i, &c);
            if (juc_is_upper(c)) { if (prev) return jv_bool(false); prev = true; any = true; }
            else if (juc_is_lower(c)) { if (!prev) return jv_bool(false); prev = true; any = true; }
            else prev = false;
        }
        return jv_bool(any);
    }
    case M_JOIN: POSONLY(); MB(1, "iterable"); return str_join(r, self, a[0]);
    case M_STRIP: case M_LSTRIP: case M_RSTRIP:
        POSONLY();
        MB(0, "chars");
        return str_strip(r, self, g[0] ? a[0] : jv_none(), id == M_STRIP ? 3 : id == M_LSTRIP ? 1 : 2);
    case M_PARTITION: case M_RPARTITION: {
        POSONLY();
        MB(1, "sep");
        struct jstr *sep = str_arg(r, a[0], mname);
        if (!sep->len) jr_fail(r, "empty separator");
        struct jlist *t = jlist_new(r, 3);
        size_t h = SIZE_MAX;
        if (id == M_PARTITION) {
            const char *hit = memmem(s->p, s->len, sep->p, sep->len);
            if (hit) h = (size_t)(hit - s->p);
        } else if (s->len >= sep->len) {
            for (size_t k = s->len - sep->len + 1; k-- > 0;)
                if (memcmp(s->p + k, sep->p, sep->len) == 0) { h = k; break; }
        }
        jv empty = jv_from_str(jstr_wrap(r, "", 0), mk);
        if (h == SIZE_MAX) {
            if (id == M_PARTITION) { t->v[0] = self; t->v[1] = empty; t->v[2] = empty; }
            else { t->v[0] = empty; t->v[1] = empty; t->v[2] = self; }
        } else {
            t->v[0] = jv_from_str(jstr_wrap(r, s->p, h), mk);
            t->v[1] = jv_from_str(sep, mk);
            t->v[2] = jv_from_str(jstr_wrap(r, s->p + h + sep->len, s->len - h - sep->len), mk);
        }
        t->n = 3;
        return jv_from_list(t, LK_TUPLE);
    }
    case M_REMOVEPREFIX: case M_REMOVESUFFIX: {
        POSONLY();
        if (id == M_REMOVEPREFIX) MB(1, "prefix"); else MB(1, "suffix");
        struct jstr *x = str_arg(r, a[0], mname);
        if (x->len <= s->len) {
            if (id == M_REMOVEPREFIX && memcmp(s->p, x->p, x->len) == 0)
                return jv_from_str(jstr_wrap(r, s->p + x->len, s->len - x->len), mk);
            if (id == M_REMOVESUFFIX && x->len && memcmp(s->p + s->len - x->len, x->p, x->len) == 0)
                return jv_from_str(jstr_wrap(r, s->p, s->len - x->len), mk);
        }
        return self;
    }
    case M_REPLACE: {
        POSONLY();
        MB(2, "old", "new", "count");
        int64_t count = g[2] ? int_arg(r, a[2], NULL) : -1;
        struct jstr *o = str_arg(r, a[0], "replace"), *n = str_arg(r, a[1], "replace");
        return str_replace(r, self, o, n, count);
    }
    case M_SPLIT: case M_RSPLIT: {
        MB(0, "sep", "maxsplit");
        int64_t maxsplit = g[1] ? int_arg(r, a[1], NULL) : -1;
        return str_split(r, self, g[0] ? a[0] : jv_none(), maxsplit, id == M_RSPLIT);
    }
    case M_SPLITLINES: {
        MB(0, "keepends");
        bool keep = g[0] ? int_arg(r, a[0], NULL) != 0 : false;
        return jv_from_list(splitlines(r, s, keep, mk), LK_LIST);
    }
    /* list / tuple */
    case M_L_COUNT: {
        POSONLY();
        MB(1, "value");
        int64_t c = 0;
        jr_work(r, self.u.l->n);
        for (size_t i = 0; i < self.u.l->n; i++) c += jv_eq(r, self.u.l->v[i], a[0]);
        return jv_int(c);
    }
    case M_L_INDEX: {
        POSONLY();
        MB(1, "value", "start", "stop");
        int64_t n = (int64_t)self.u.l->n, st = 0, en = n;
        if (g[1]) { st = int_arg(r, a[1], NULL); if (st < 0) { st += n; if (st < 0) st = 0; } }
        if (g[2]) { en = int_arg(r, a[2], NULL); if (en < 0) { en += n; if (en < 0) en = 0; } }
        jr_work(r, self.u.l->n);
        for (int64_t i = st; i < en && i < n; i++)
            if (jv_eq(r, self.u.l->v[i], a[0])) return jv_int(i);
        if (self.f == LK_TUPLE) jr_fail(r, "tuple.index(x): x not in tuple");
        jr_push_buf(r);
        jv_write_repr(r, jr_out(r), a[0], 0);
        struct jstr *rep = jr_pop_buf(r);
        jr_fail(r, "%.*s is not in list", (int)rep->len, rep->p);
    }
    case M_L_COPY: {
        M0();
        struct jlist *c = jlist_new(r, self.u.l->n);
        memcpy(c->v, self.u.l->v, self.u.l->n * sizeof(jv));
        c->n = self.u.l->n;
        return jv_from_list(c, LK_LIST);
    }
    /* dict */
    case M_D_GET: {
        POSONLY();
        MB(1, "key", "default");
        jv out;
        if (jdict_get(r, self.u.dict, a[0], &out)) return out;
        return g[1] ? a[1] : jv_none();
    }
    case M_D_ITEMS: case M_D_KEYS: case M_D_VALUES: {
        M0();
        struct jdict *d = self.u.dict;
        struct jlist *l = jlist_new(r, d->n);
        for (uint32_t i = 0; i < d->n; i++) {
            if (id == M_D_KEYS) l->v[l->n++] = d->k[i];
            else if (id == M_D_VALUES) l->v[l->n++] = d->v[i];
            else {
                struct jlist *t = jlist_new(r, 2);
                t->v[0] = d->k[i];
                t->v[1] = d->v[i];
                t->n = 2;
                l->v[l->n++] = jv_from_list(t, LK_TUPLE);
            }
        }
        return jv_from_list(l, id == M_D_KEYS ? LK_KEYS : id == M_D_VALUES ? LK_VALUES : LK_ITEMS);
    }
    case M_D_COPY: {
        M0();
        struct jdict *d = jdict_new(r, self.u.dict->n);
        for (uint32_t i = 0; i < self.u.dict->n; i++) jdict_set(r, d, self.u.dict->k[i], self.u.dict->v[i]);
        return jv_from_dict(d);
    }
    /* loop */
    case M_LOOP_CYCLE: {
        POSONLY();
        if (!nargs) jr_fail(r, "no items for cycling given");
        return args[self.u.o->u.loop->index0 % nargs];
    }
    case M_LOOP_CHANGED: {
        POSONLY();
        struct jloop *lp = self.u.o->u.loop;
        struct jlist *t = jlist_new(r, nargs);
        for (size_t i = 0; i < nargs; i++) t->v[t->n++] = args[i];
        jv cur = jv_from_list(t, LK_TUPLE);
        if (!lp->has_changed || !jv_eq(r, lp->last_changed, cur)) {
            lp->has_changed = true;
            lp->last_changed = cur;
            return jv_bool(true);
        }
        return jv_bool(false);
    }
    case M_CYC_NEXT: {
        M0();
        struct jobj *o = self.u.o;
        jv v = o->u.cycler.items->v[o->u.cycler.pos];
        o->u.cycler.pos = (o->u.cycler.pos + 1) % o->u.cycler.items->n;
        return v;
    }
    case M_CYC_RESET: M0(); self.u.o->u.cycler.pos = 0; return jv_none();
    default:
        jr_fail(r, "method '%s' is not supported by this engine", mname);
    }
#undef MB
#undef M0
#undef POSONLY
}
