/* jinja_value.c — the values of the Jinja evaluator and their Python
 * semantics: construction (from JSON too), truthiness, equality, ordering,
 * hashing, str()/repr() exactly as Python 3 prints them (float repr,
 * string quoting), json.dumps as transformers' tojson calls it, arithmetic
 * and the sandboxed attribute/item lookup of Jinja's
 * ImmutableSandboxedEnvironment.
 *
 * Owns: nothing beyond the arena memory of the render it works for.
 * Does not: evaluate templates (jinja_eval.c) or implement filters, tests and
 * methods (jinja_builtins.c). Python ints are unbounded; here they are int64
 * and an overflow is a render error. */
#define _GNU_SOURCE /* memmem, strftime_l, asprintf */
#include "text/jinja_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "util/util.h"

/* ---- arena ----------------------------------------------------------------- */

struct jchunk {
    struct jchunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

void *jarena_alloc(struct jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (a->limit && (a->used + n > a->limit || n > a->limit)) return NULL;
    struct jchunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 48 * 1024 ? n : 64 * 1024 - sizeof(struct jchunk);
        c = xmalloc(sizeof *c + cap);
        c->cap = cap;
        c->used = 0;
        if (a->head && n > 48 * 1024) { /* keep filling the current chunk after a big one */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used += n;
    return p;
}

void jarena_free(struct jarena *a) {
    struct jchunk *c = a->head;
    while (c) {
        struct jchunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->used = 0;
}

void *jr_alloc(struct jrender *r, size_t n) {
    void *p = jarena_alloc(&r->arena, n);
    if (!p) jr_fail(r, "template used more than %zu bytes of memory", r->arena.limit);
    return p;
}

/* ---- UTF-8 ----------------------------------------------------------------- */

uint32_t jutf8_decode(const char *p, size_t len, size_t *adv) {
    const unsigned char *s = (const unsigned char *)p;
    unsigned c = s[0];
    if (c < 0x80 || len < 2) { *adv = 1; return c; }
    if (c >= 0xc2 && c < 0xe0 && (s[1] & 0xc0) == 0x80) { *adv = 2; return ((c & 0x1fu) << 6) | (s[1] & 0x3fu); }
    if (c >= 0xe0 && c < 0xf0 && len >= 3 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80) {
        uint32_t cp = ((c & 0x0fu) << 12) | ((s[1] & 0x3fu) << 6) | (s[2] & 0x3fu);
        if (cp >= 0x800) { *adv = 3; return cp; }
    }
    if (c >= 0xf0 && c < 0xf5 && len >= 4 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80) {
        uint32_t cp = ((c & 0x07u) << 18) | ((s[1] & 0x3fu) << 12) | ((s[2] & 0x3fu) << 6) | (s[3] & 0x3fu);
        if (cp >= 0x10000 && cp <= 0x10ffff) { *adv = 4; return cp; }
    }
    *adv = 1;
    return c;
}

size_t jutf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xc0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12)); o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f)); return 3;
    }
    o[0] = (unsigned char)(0xf0 | (cp >> 18)); o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t jutf8_count(const char *p, size_t len) {
    size_t n = 0, i = 0;
    while (i < len) {
        if ((unsigned char)p[i] < 0x80) { i++; n++; continue; }
        size_t adv;
        jutf8_decode(p + i, len - i, &adv);
        i += adv;
        n++;
    }
    return n;
}

size_t jutf8_offset(const struct jstr *s, size_t ci) {
    if (s->nchars == s->len) return ci < s->len ? ci : s->len;
    size_t i = 0, k = 0;
    while (i < s->len && k < ci) {
        size_t adv;
        jutf8_decode(s->p + i, s->len - i, &adv);
        i += adv;
        k++;
    }
    return i;
}

bool jpy_isspace(uint32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
    return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
           c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

static int ucat(uint32_t c) { return c > 0x10ffff ? UTF8PROC_CATEGORY_CN : (int)utf8proc_category((utf8proc_int32_t)c); }
uint32_t juc_lower(uint32_t c) { return c > 0x10ffff ? c : (uint32_t)utf8proc_tolower((utf8proc_int32_t)c); }
uint32_t juc_upper(uint32_t c) { return c > 0x10ffff ? c : (uint32_t)utf8proc_toupper((utf8proc_int32_t)c); }
uint32_t juc_title(uint32_t c) { return c > 0x10ffff ? c : (uint32_t)utf8proc_totitle((utf8proc_int32_t)c); }
bool juc_is_cased(uint32_t c) {
    int k = ucat(c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}
bool juc_is_lower(uint32_t c) { return ucat(c) == UTF8PROC_CATEGORY_LL; }
bool juc_is_upper(uint32_t c) { int k = ucat(c); return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LT; }
bool juc_is_alpha(uint32_t c) {
    int k = ucat(c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}
bool juc_is_decimal(uint32_t c) { return ucat(c) == UTF8PROC_CATEGORY_ND; }
bool juc_is_digit(uint32_t c) { return ucat(c) == UTF8PROC_CATEGORY_ND || (c >= 0xb2 && c <= 0xb3) || c == 0xb9 || (c >= 0x2070 && c <= 0x2079) || (c >= 0x2080 && c <= 0x2089) || (c >= 0x2460 && c <= 0x2468); }
bool juc_is_numeric(uint32_t c) {
    int k = ucat(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}
bool juc_is_alnum(uint32_t c) { return juc_is_alpha(c) || juc_is_numeric(c); }
bool juc_is_printable(uint32_t c) {
    if (c == ' ') return true;
    switch (ucat(c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS: case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
        return false;
    default:
        return true;
    }
}

/* ---- constructors ------------------------------------------------------------ */

struct jstr *jstr_wrap(struct jrender *r, const char *p, size_t len) {
    struct jstr *s = jr_alloc(r, sizeof *s);
    s->p = p;
    s->len = len;
    s->nchars = jutf8_count(p, len);
    return s;
}

struct jstr *jstr_new(struct jrender *r, const char *p, size_t len) {
    char *d = jr_alloc(r, len + 1);
    if (len) memcpy(d, p, len);
    d[len] = 0;
    return jstr_wrap(r, d, len);
}

jv jv_str(struct jrender *r, const char *p, size_t len) { return jv_from_str(jstr_new(r, p, len), false); }
jv jv_cstr(struct jrender *r, const char *s) { return jv_from_str(jstr_wrap(r, s, strlen(s)), false); }

struct jlist *jlist_new(struct jrender *r, size_t cap) {
    struct jlist *l = jr_alloc(r, sizeof *l);
    l->n = 0;
    l->pos = 0;
    l->thunk = NULL;
    l->cap = cap ? cap : 1; /* never NULL: callers memcpy from empty lists */
    l->v = jr_alloc(r, l->cap * sizeof(jv));
    return l;
}

void jlist_push(struct jrender *r, struct jlist *l, jv x) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jv *v = jr_alloc(r, cap * sizeof(jv));
        if (l->n) memcpy(v, l->v, l->n * sizeof(jv));
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
}

jv jv_list_new(struct jrender *r, size_t cap, int kind) { return jv_from_list(jlist_new(r, cap), kind); }

struct jdict *jdict_new(struct jrender *r, size_t cap) {
    struct jdict *d = jr_alloc(r, sizeof *d);
    memset(d, 0, sizeof *d);
    if (cap) {
        d->cap = (uint32_t)cap;
        d->k = jr_alloc(r, cap * sizeof(jv));
        d->v = jr_alloc(r, cap * sizeof(jv));
    }
    return d;
}

struct jobj *jobj_new(struct jrender *r, int kind) {
    struct jobj *o = jr_alloc(r, sizeof *o);
    memset(o, 0, sizeof *o);
    o->kind = (uint8_t)kind;
    return o;
}

jv jv_undef_info(struct jrender *r, const char *hint, jv obj, jv name, int kind) {
    struct jundef *u = jr_alloc(r, sizeof *u);
    u->kind = (uint8_t)kind;
    u->hint = hint;
    u->obj = obj;
    u->name = name;
    jv v = { .t = JV_UNDEF };
    v.u.un = u;
    return v;
}

/* ---- hashing and dicts ----------------------------------------------------------- */

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}

uint64_t jv_hash(struct jrender *r, jv v) {
    switch (v.t) {
    case JV_UNDEF: return 0x55;
    case JV_NONE: return 0x77;
    case JV_BOOL: case JV_INT: return mix64((uint64_t)v.u.i);
    case JV_FLOAT:
        if (v.u.d == floor(v.u.d) && fabs(v.u.d) < 9.2e18) return mix64((uint64_t)(int64_t)v.u.d);
        { uint64_t b; memcpy(&b, &v.u.d, 8); return mix64(b); }
    case JV_STR: return hash_bytes(v.u.s->p, v.u.s->len);
    case JV_LIST:
        if (v.f == LK_TUPLE) {
            jr_check_stack(r);
            uint64_t h = 0x345678;
            for (size_t i = 0; i < v.u.l->n; i++) h = mix64(h ^ jv_hash(r, v.u.l->v[i])) + i;
            return h;
        }
        jr_fail(r, "unhashable type: '%s'", jv_type_name(v));
    case JV_DICT:
        jr_fail(r, "unhashable type: 'dict'");
    default:
        return mix64((uint64_t)(uintptr_t)v.u.o);
    }
}

static void jdict_reindex(struct jrender *r, struct jdict *d) {
    uint32_t icap = 16;
    while (icap < d->n * 2 + 2) icap *= 2;
    d->idx = jr_alloc(r, icap * sizeof(uint32_t));
    memset(d->idx, 0, icap * sizeof(uint32_t));
    d->icap = icap;
    for (uint32_t e = 0; e < d->n; e++) {
        uint32_t i = (uint32_t)jv_hash(r, d->k[e]) & (icap - 1);
        while (d->idx[i]) i = (i + 1) & (icap - 1);
        d->idx[i] = e + 1;
    }
}

/* Index of key in d or -1. Keys compare with Python ==. */
static int64_t jdict_find(struct jrender *r, const struct jdict *d, jv key) {
    if (d->idx) {
        uint32_t i = (uint32_t)jv_hash(r, key) & (d->icap - 1);
        for (; d->idx[i]; i = (i + 1) & (d->icap - 1))
            if (jv_eq(r, d->k[d->idx[i] - 1], key)) return d->idx[i] - 1;
        return -1;
    }
    if (key.t == JV_STR) { /* fast path, the common case */
        for (uint32_t e = 0; e < d->n; e++)
            if (d->k[e].t == JV_STR && d->k[e].u.s->len == key.u.s->len &&
                memcmp(d->k[e].u.s->p, key.u.s->p, key.u.s->len) == 0)
                return e;
        for (uint32_t e = 0; e < d->n; e++)
            if (d->k[e].t != JV_STR && jv_eq(r, d->k[e], key)) return e;
        return -1;
    }
    for (uint32_t e = 0; e < d->n; e++)
        if (jv_eq(r, d->k[e], key)) return e;
    return -1;
}

bool jdict_get(struct jrender *r, const struct jdict *d, jv key, jv *out) {
    jv_hash(r, key); /* unhashable keys raise even on an empty dict */
    int64_t e = jdict_find(r, d, key);
    if (e < 0) return false;
    *out = d->v[e];
    return true;
}

bool jdict_get_str(const struct jdict *d, const char *key, size_t klen, jv *out) {
    for (uint32_t e = 0; e < d->n; e++)
        if (d->k[e].t == JV_STR && d->k[e].u.s->len == klen && memcmp(d->k[e].u.s->p, key, klen) == 0) {
            *out = d->v[e];
            return true;
        }
    return false;
}

void jdict_set(struct jrender *r, struct jdict *d, jv key, jv val) {
    jv_hash(r, key);
    int64_t e = jdict_find(r, d, key);
    if (e >= 0) { d->v[e] = val; return; }
    if (d->n == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 4;
        jv *k = jr_alloc(r, cap * sizeof(jv)), *v = jr_alloc(r, cap * sizeof(jv));
        if (d->n) { memcpy(k, d->k, d->n * sizeof(jv)); memcpy(v, d->v, d->n * sizeof(jv)); }
        d->k = k; d->v = v; d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n] = val;
    d->n++;
    if (d->idx && d->n * 2 + 2 <= d->icap) {
        uint32_t i = (uint32_t)jv_hash(r, key) & (d->icap - 1);
        while (d->idx[i]) i = (i + 1) & (d->icap - 1);
        d->idx[i] = d->n;
    } else if (d->n > 8) {
        jdict_reindex(r, d);
    }
}

/* ---- JSON input ------------------------------------------------------------------- */

jv jv_from_json(struct jrender *r, const json_t *j, int depth) {
    if (!j) return jv_none();
    if (depth > 2000) jr_fail(r, "input nested too deeply");
    if ((depth & 15) == 15) jr_check_stack(r);
    switch (json_typeof(j)) {
    case JSON_NULL: return jv_none();
    case JSON_TRUE: return jv_bool(true);
    case JSON_FALSE: return jv_bool(false);
    case JSON_INTEGER: return jv_int((int64_t)json_integer_value(j));
    case JSON_REAL: return jv_float(json_real_value(j));
    case JSON_STRING: return jv_from_str(jstr_wrap(r, json_string_value(j), json_string_length(j)), false);
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        struct jlist *l = jlist_new(r, n);
        for (size_t i = 0; i < n; i++) l->v[l->n++] = jv_from_json(r, json_array_get(j, i), depth + 1);
        return jv_from_list(l, LK_LIST);
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(j);
        struct jdict *d = jdict_new(r, n);
        const char *k;
        json_t *v;
        void *it;
        for (it = json_object_iter((json_t *)j); it; it = json_object_iter_next((json_t *)j, it)) {
            k = json_object_iter_key(it);
            v = json_object_iter_value(it);
            size_t klen = strlen(k);
#if JANSSON_VERSION_HEX >= 0x020e00
            klen = json_object_iter_key_len(it);
#endif
            /* JSON object keys are unique: append without a lookup */
            d->k[d->n] = jv_from_str(jstr_wrap(r, k, klen), false);
            d->v[d->n] = jv_from_json(r, v, depth + 1);
            d->n++;
        }
        if (d->n > 8) jdict_reindex(r, d);
        return jv_from_dict(d);
    }
    }
    return jv_none();
}

/* ---- type names -------------------------------------------------------------------- */

const char *jv_type_name(jv v) {
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return v.f & JVF_MARKUP ? "Markup" : "str";
    case JV_LIST:
        switch (v.f) {
        case LK_TUPLE: return "tuple";
        case LK_GEN: return "generator";
        case LK_KEYS: return "dict_keys";
        case LK_VALUES: return "dict_values";
        case LK_ITEMS: return "dict_items";
        default: return "list";
        }
    case JV_DICT: return "dict";
    case JV_OBJ:
        switch (v.u.o->kind) {
        case JO_NAMESPACE: return "Namespace";
        case JO_MACRO: return "Macro";
        case JO_BUILTIN: return "function";
        case JO_METHOD: return "builtin_function_or_method";
        case JO_LOOP: return "LoopContext";
        case JO_RANGE: return "range";
        case JO_CYCLER: return "Cycler";
        case JO_JOINER: return "Joiner";
        }
    }
    return "object";
}

const char *jv_object_type_repr(jv v) {
    if (v.t == JV_NONE) return "None";
    if (v.t == JV_STR && (v.f & JVF_MARKUP)) return "markupsafe.Markup object";
    if (v.t == JV_OBJ) {
        switch (v.u.o->kind) {
        case JO_NAMESPACE: return "jinja2.utils.Namespace object";
        case JO_MACRO: return "jinja2.runtime.Macro object";
        case JO_LOOP: return "jinja2.runtime.LoopContext object";
        case JO_CYCLER: return "jinja2.utils.Cycler object";
        case JO_JOINER: return "jinja2.utils.Joiner object";
        default: break;
        }
    }
    static _Thread_local char buf[48];
    snprintf(buf, sizeof buf, "%s object", jv_type_name(v));
    return buf;
}

/* ---- output buffers ------------------------------------------------------------------ */

void jbuf_put(struct jrender *r, struct jbuf *b, const char *p, size_t n) {
    if (!n) return;
    if (b->n + n > r->ct->lim.max_output)
        jr_fail(r, "template output exceeds %zu bytes", r->ct->lim.max_output);
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) jr_fail(r, "out of memory");
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

void jbuf_putc(struct jrender *r, struct jbuf *b, char c) { jbuf_put(r, b, &c, 1); }

void jbuf_printf(struct jrender *r, struct jbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    jbuf_put(r, b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- printing ------------------------------------------------------------------------- */

void jpy_float_repr(double d, char out[40]) {
    if (isnan(d)) { strcpy(out, "nan"); return; }
    if (isinf(d)) { strcpy(out, d < 0 ? "-inf" : "inf"); return; }
    if (d == 0) { strcpy(out, signbit(d) ? "-0.0" : "0.0"); return; }
    char buf[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
        if (strtod(buf, NULL) == d) break;
    }
    /* buf: [-]d[.ddd]e[+-]XX */
    char digits[24];
    int nd = 0, neg = 0;
    const char *p = buf;
    if (*p == '-') { neg = 1; p++; }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int decpt = exp10 + 1;
    char *o = out;
    if (neg) *o++ = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            *o++ = '0'; *o++ = '.';
            for (int i = 0; i < -decpt; i++) *o++ = '0';
            for (int i = 0; i < nd; i++) *o++ = digits[i];
        } else if (decpt >= nd) {
            for (int i = 0; i < nd; i++) *o++ = digits[i];
            for (int i = nd; i < decpt; i++) *o++ = '0';
            *o++ = '.'; *o++ = '0';
        } else {
            for (int i = 0; i < decpt; i++) *o++ = digits[i];
            *o++ = '.';
            for (int i = decpt; i < nd; i++) *o++ = digits[i];
        }
        *o = 0;
    } else {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            for (int i = 1; i < nd; i++) *o++ = digits[i];
        }
        snprintf(o, 12, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
}

void jpy_str_repr(struct jrender *r, struct jbuf *b, const char *p, size_t len) {
    bool has_sq = memchr(p, '\'', len) != NULL, has_dq = memchr(p, '"', len) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    jbuf_putc(r, b, q);
    size_t i = 0, run = 0;
    while (i < len) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != (unsigned char)q && c != '\\') { i++; run++; continue; }
        jbuf_put(r, b, p + i - run, run);
        run = 0;
        if (c < 0x80) {
            if (c == (unsigned char)q || c == '\\') { jbuf_putc(r, b, '\\'); jbuf_putc(r, b, (char)c); }
            else if (c == '\t') jbuf_put(r, b, "\\t", 2);
            else if (c == '\n') jbuf_put(r, b, "\\n", 2);
            else if (c == '\r') jbuf_put(r, b, "\\r", 2);
            else jbuf_printf(r, b, "\\x%02x", c);
            i++;
            continue;
        }
        size_t adv;
        uint32_t cp = jutf8_decode(p + i, len - i, &adv);
        if (juc_is_printable(cp) && adv > 1) jbuf_put(r, b, p + i, adv);
        else if (cp <= 0xff) jbuf_printf(r, b, "\\x%02x", cp);
        else if (cp <= 0xffff) jbuf_printf(r, b, "\\u%04x", cp);
        else jbuf_printf(r, b, "\\U%08x", cp);
        i += adv;
    }
    jbuf_put(r, b, p + i - run, run);
    jbuf_putc(r, b, q);
}

/* format(x, '.N') for a float: 'g' with N significant digits, but the
 * exponent form already from decpt > N-1 and at least one digit after the
 * point (CPython's format_float_short with Py_DTSF_ADD_DOT_0). x >= 0, finite. */
static void float_general_dot0(double x, int64_t prec, char out[80]) {
    if (prec <= 0) prec = 1;
    if (prec > 40) prec = 40;
    char buf[80];
    snprintf(buf, sizeof buf, "%.*e", (int)prec - 1, x);
    char digits[48];
    int nd = 0;
    const char *p = buf;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int exp10 = atoi(p + 1), decpt = exp10 + 1;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    char *o = out;
    if (decpt <= -4 || decpt > prec - 1) {
        *o++ = digits[0];
        if (nd > 1) { *o++ = '.'; for (int i = 1; i < nd; i++) *o++ = digits[i]; }
        snprintf(o, 12, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
        return;
    }
    if (decpt <= 0) {
        *o++ = '0'; *o++ = '.';
        for (int i = 0; i < -decpt; i++) *o++ = '0';
        for (int i = 0; i < nd; i++) *o++ = digits[i];
    } else {
        for (int i = 0; i < decpt; i++) *o++ = i < nd ? digits[i] : '0';
        *o++ = '.';
        if (nd > decpt) for (int i = decpt; i < nd; i++) *o++ = digits[i];
        else *o++ = '0';
    }
    *o = 0;
}

static void write_int(struct jrender *r, struct jbuf *b, int64_t i) {
    char t[24];
    int n = snprintf(t, sizeof t, "%lld", (long long)i);
    jbuf_put(r, b, t, (size_t)n);
}

static void write_float(struct jrender *r, struct jbuf *b, double d) {
    char t[40];
    jpy_float_repr(d, t);
    jbuf_put(r, b, t, strlen(t));
}

static void enter_value(struct jrender *r) {
    jr_check_stack(r);
    if (++r->value_depth > 900) jr_fail(r, "maximum recursion depth exceeded while printing a value");
}

void jv_write_repr(struct jrender *r, struct jbuf *b, jv v, int depth) {
    switch (v.t) {
    case JV_UNDEF: jbuf_put(r, b, "Undefined", 9); return;
    case JV_STR:
        if (v.f & JVF_MARKUP) {
            jbuf_put(r, b, "Markup(", 7);
            jpy_str_repr(r, b, v.u.s->p, v.u.s->len);
            jbuf_putc(r, b, ')');
        } else {
            jpy_str_repr(r, b, v.u.s->p, v.u.s->len);
        }
        return;
    case JV_LIST: {
        enter_value(r);
        struct jlist *l = v.u.l;
        const char *open = "[", *close = "]";
        if (v.f == LK_TUPLE) { open = "("; close = l->n == 1 ? ",)" : ")"; }
        else if (v.f == LK_KEYS) { open = "dict_keys(["; close = "])"; }
        else if (v.f == LK_VALUES) { open = "dict_values(["; close = "])"; }
        else if (v.f == LK_ITEMS) { open = "dict_items(["; close = "])"; }
        else if (v.f == LK_GEN) { jbuf_put(r, b, "<generator object>", 18); r->value_depth--; return; }
        jbuf_put(r, b, open, strlen(open));
        for (size_t i = 0; i < l->n; i++) {
            if (i) jbuf_put(r, b, ", ", 2);
            jv_write_repr(r, b, l->v[i], depth + 1);
        }
        jbuf_put(r, b, close, strlen(close));
        r->value_depth--;
        return;
    }
    case JV_DICT: {
        enter_value(r);
        struct jdict *d = v.u.dict;
        jbuf_putc(r, b, '{');
        for (uint32_t i = 0; i < d->n; i++) {
            if (i) jbuf_put(r, b, ", ", 2);
            jv_write_repr(r, b, d->k[i], depth + 1);
            jbuf_put(r, b, ": ", 2);
            jv_write_repr(r, b, d->v[i], depth + 1);
        }
        jbuf_putc(r, b, '}');
        r->value_depth--;
        return;
    }
    case JV_OBJ: {
        struct jobj *o = v.u.o;
        switch (o->kind) {
        case JO_NAMESPACE:
            enter_value(r);
            jbuf_put(r, b, "<Namespace ", 11);
            jv_write_repr(r, b, jv_from_dict(o->u.ns), depth + 1);
            jbuf_putc(r, b, '>');
            r->value_depth--;
            return;
        case JO_MACRO:
            if (o->u.macro.is_caller) { jbuf_put(r, b, "<Macro 'caller'>", 16); return; }
            jbuf_put(r, b, "<Macro ", 7);
            jpy_str_repr(r, b, o->u.macro.node->u.macro.sname->p, o->u.macro.node->u.macro.sname->len);
            jbuf_putc(r, b, '>');
            return;
        case JO_LOOP: {
            int64_t len = (int64_t)o->u.loop->items->n;
            jbuf_printf(r, b, "<LoopContext %lld/%lld>", (long long)o->u.loop->index0 + 1, (long long)len);
            return;
        }
        case JO_RANGE:
            if (o->u.range.step == 1)
                jbuf_printf(r, b, "range(%lld, %lld)", (long long)o->u.range.start, (long long)o->u.range.stop);
            else
                jbuf_printf(r, b, "range(%lld, %lld, %lld)", (long long)o->u.range.start, (long long)o->u.range.stop,
                            (long long)o->u.range.step);
            return;
        case JO_BUILTIN:
            jbuf_printf(r, b, "<function %s>", jbuiltin_name(o->u.builtin.id));
            return;
        case JO_METHOD:
            jbuf_printf(r, b, "<built-in method %s of %s object>", jmethod_name(o->u.method.id),
                        jv_type_name(o->u.method.self));
            return;
        case JO_CYCLER: jbuf_put(r, b, "<jinja2.utils.Cycler object>", 28); return;
        case JO_JOINER: jbuf_put(r, b, "<jinja2.utils.Joiner object>", 28); return;
        }
        return;
    }
    default:
        jv_write_str(r, b, v);
    }
}

void jv_write_str(struct jrender *r, struct jbuf *b, jv v) {
    switch (v.t) {
    case JV_UNDEF: return;
    case JV_NONE: jbuf_put(r, b, "None", 4); return;
    case JV_BOOL: if (v.u.i) jbuf_put(r, b, "True", 4); else jbuf_put(r, b, "False", 5); return;
    case JV_INT: write_int(r, b, v.u.i); return;
    case JV_FLOAT: write_float(r, b, v.u.d); return;
    case JV_STR: jbuf_put(r, b, v.u.s->p, v.u.s->len); return;
    default: jv_write_repr(r, b, v, 0);
    }
}

struct jstr *jv_to_jstr(struct jrender *r, jv v) {
    if (v.t == JV_STR) return v.u.s;
    jr_push_buf(r);
    jv_write_str(r, jr_out(r), v);
    return jr_pop_buf(r);
}

jv jv_to_str(struct jrender *r, jv v) {
    if (v.t == JV_STR) return v;
    return jv_from_str(jv_to_jstr(r, v), false);
}

/* ---- JSON output (Python json.dumps) ---------------------------------------------------- */

static void json_str(struct jrender *r, struct jbuf *b, const char *p, size_t len, bool ascii) {
    jbuf_putc(r, b, '"');
    size_t i = 0, run = 0;
    while (i < len) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && (c < 0x80 || !ascii)) { i++; run++; continue; }
        jbuf_put(r, b, p + i - run, run);
        run = 0;
        if (c < 0x80) {
            switch (c) {
            case '"': jbuf_put(r, b, "\\\"", 2); break;
            case '\\': jbuf_put(r, b, "\\\\", 2); break;
            case '\n': jbuf_put(r, b, "\\n", 2); break;
            case '\r': jbuf_put(r, b, "\\r", 2); break;
            case '\t': jbuf_put(r, b, "\\t", 2); break;
            case '\b': jbuf_put(r, b, "\\b", 2); break;
            case '\f': jbuf_put(r, b, "\\f", 2); break;
            default: jbuf_printf(r, b, "\\u%04x", c);
            }
            i++;
            continue;
        }
        size_t adv;
        uint32_t cp = jutf8_decode(p + i, len - i, &adv);
        if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000;
            jbuf_printf(r, b, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
        } else {
            jbuf_printf(r, b, "\\u%04x", cp);
        }
        i += adv;
    }
    jbuf_put(r, b, p + i - run, run);
    jbuf_putc(r, b, '"');
}

static void json_float(struct jrender *r, struct jbuf *b, double d) {
    if (isnan(d)) jbuf_put(r, b, "NaN", 3);
    else if (isinf(d)) { if (d > 0) jbuf_put(r, b, "Infinity", 8); else jbuf_put(r, b, "-Infinity", 9); }
    else write_float(r, b, d);
}

static void json_newline(struct jrender *r, struct jbuf *b, const struct json_opts *o, int level) {
    jbuf_putc(r, b, '\n');
    for (int i = 0; i < level; i++) jbuf_put(r, b, o->indent, o->indent_len);
}

/* Python's json key coercion: str, int, float, bool, None; else TypeError. */
static struct jstr *json_key(struct jrender *r, jv k) {
    switch (k.t) {
    case JV_STR: return k.u.s;
    case JV_NONE: return jstr_wrap(r, "null", 4);
    case JV_BOOL: return k.u.i ? jstr_wrap(r, "true", 4) : jstr_wrap(r, "false", 5);
    case JV_INT: return jv_to_jstr(r, k);
    case JV_FLOAT: {
        jr_push_buf(r);
        json_float(r, jr_out(r), k.u.d);
        return jr_pop_buf(r);
    }
    default:
        jr_fail(r, "keys must be str, int, float, bool or None, not %s", jv_type_name(k));
    }
}

static void sort_pairs(struct jrender *r, jv *keys, jv *vals, uint32_t n);

void jv_write_json(struct jrender *r, struct jbuf *b, jv v, const struct json_opts *o, int level) {
    switch (v.t) {
    case JV_NONE: jbuf_put(r, b, "null", 4); return;
    case JV_BOOL: if (v.u.i) jbuf_put(r, b, "true", 4); else jbuf_put(r, b, "false", 5); return;
    case JV_INT: write_int(r, b, v.u.i); return;
    case JV_FLOAT: json_float(r, b, v.u.d); return;
    case JV_STR: json_str(r, b, v.u.s->p, v.u.s->len, o->ensure_ascii); return;
    case JV_LIST:
        if (v.f == LK_LIST || v.f == LK_TUPLE) {
            struct jlist *l = v.u.l;
            if (l->n == 0) { jbuf_put(r, b, "[]", 2); return; }
            enter_value(r);
            jbuf_putc(r, b, '[');
            for (size_t i = 0; i < l->n; i++) {
                if (i) jbuf_put(r, b, o->item_sep, o->item_sep_len);
                if (o->has_indent) json_newline(r, b, o, level + 1);
                jv_write_json(r, b, l->v[i], o, level + 1);
            }
            if (o->has_indent) json_newline(r, b, o, level);
            jbuf_putc(r, b, ']');
            r->value_depth--;
            return;
        }
        break;
    case JV_DICT: {
        struct jdict *d = v.u.dict;
        if (d->n == 0) { jbuf_put(r, b, "{}", 2); return; }
        enter_value(r);
        jv *keys = d->k, *vals = d->v;
        if (o->sort_keys) {
            keys = jr_alloc(r, d->n * sizeof(jv));
            vals = jr_alloc(r, d->n * sizeof(jv));
            memcpy(keys, d->k, d->n * sizeof(jv));
            memcpy(vals, d->v, d->n * sizeof(jv));
            sort_pairs(r, keys, vals, d->n);
        }
        jbuf_putc(r, b, '{');
        for (uint32_t i = 0; i < d->n; i++) {
            if (i) jbuf_put(r, b, o->item_sep, o->item_sep_len);
            if (o->has_indent) json_newline(r, b, o, level + 1);
            struct jstr *ks = json_key(r, keys[i]);
            json_str(r, b, ks->p, ks->len, o->ensure_ascii);
            jbuf_put(r, b, o->key_sep, o->key_sep_len);
            jv_write_json(r, b, vals[i], o, level + 1);
        }
        if (o->has_indent) json_newline(r, b, o, level);
        jbuf_putc(r, b, '}');
        r->value_depth--;
        return;
    }
    default:
        break;
    }
    jr_fail(r, "Object of type %s is not JSON serializable", jv_type_name(v));
}

/* Stable merge sort of (key, value) pairs by key, Python ordering. */
static void sort_pairs(struct jrender *r, jv *keys, jv *vals, uint32_t n) {
    if (n < 2) return;
    jv *tk = jr_alloc(r, n * sizeof(jv)), *tv = jr_alloc(r, n * sizeof(jv));
    for (uint32_t w = 1; w < n; w *= 2) {
        for (uint32_t lo = 0; lo < n; lo += 2 * w) {
            uint32_t mid = MIN(lo + w, n), hi = MIN(lo + 2 * w, n), i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                if (jv_cmp(r, keys[j], keys[i], "<") < 0) { tk[k] = keys[j]; tv[k++] = vals[j++]; }
                else { tk[k] = keys[i]; tv[k++] = vals[i++]; }
            }
            while (i < mid) { tk[k] = keys[i]; tv[k++] = vals[i++]; }
            while (j < hi) { tk[k] = keys[j]; tv[k++] = vals[j++]; }
        }
        memcpy(keys, tk, n * sizeof(jv));
        memcpy(vals, tv, n * sizeof(jv));
    }
}

/* ---- truthiness, equality, ordering ------------------------------------------------------ */

static int64_t range_len(int64_t start, int64_t stop, int64_t step) {
    if (step > 0 && start < stop) return (int64_t)(((__int128)stop - start - 1) / step + 1);
    if (step < 0 && start > stop) return (int64_t)(((__int128)start - stop - 1) / (-(__int128)step) + 1);
    return 0;
}

bool jv_len(struct jrender *r, jv v, int64_t *out) {
    (void)r;
    switch (v.t) {
    case JV_UNDEF: *out = 0; return true;
    case JV_STR: *out = (int64_t)v.u.s->nchars; return true;
    case JV_LIST: if (v.f == LK_GEN) return false; *out = (int64_t)v.u.l->n; return true;
    case JV_DICT: *out = v.u.dict->n; return true;
    case JV_OBJ:
        if (v.u.o->kind == JO_RANGE) { *out = range_len(v.u.o->u.range.start, v.u.o->u.range.stop, v.u.o->u.range.step); return true; }
        if (v.u.o->kind == JO_LOOP) { *out = (int64_t)v.u.o->u.loop->items->n; return true; }
        return false;
    default: return false;
    }
}

int64_t jv_len_or_fail(struct jrender *r, jv v) {
    int64_t n;
    if (!jv_len(r, v, &n)) jr_fail(r, "object of type '%s' has no len()", jv_type_name(v));
    return n;
}

bool jv_truthy(struct jrender *r, jv v) {
    switch (v.t) {
    case JV_UNDEF: case JV_NONE: return false;
    case JV_BOOL: case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.d != 0.0;
    case JV_STR: return v.u.s->len > 0;
    case JV_LIST: return v.f == LK_GEN ? true : v.u.l->n > 0;
    case JV_DICT: return v.u.dict->n > 0;
    case JV_OBJ: {
        int64_t n;
        if (v.u.o->kind == JO_RANGE || v.u.o->kind == JO_LOOP) return jv_len(r, v, &n) && n > 0;
        return true;
    }
    }
    return true;
}

static double num_f(jv v) { return v.t == JV_FLOAT ? v.u.d : (double)v.u.i; }

/* Python int == float: exact comparison. */
static int cmp_int_float(int64_t i, double d) {
    if (isnan(d)) return 2; /* unordered */
    if (d >= 9223372036854775808.0) return -1;
    if (d < -9223372036854775808.0) return 1;
    double fl = floor(d);
    int64_t di = (int64_t)fl;
    if (i < di) return -1;
    if (i > di) return 1;
    return fl < d ? -1 : 0;
}

static int num_cmp(jv a, jv b) { /* -1, 0, 1, or 2 for NaN */
    if (a.t != JV_FLOAT && b.t != JV_FLOAT) return a.u.i < b.u.i ? -1 : a.u.i > b.u.i;
    if (a.t == JV_FLOAT && b.t == JV_FLOAT) {
        if (isnan(a.u.d) || isnan(b.u.d)) return 2;
        return a.u.d < b.u.d ? -1 : a.u.d > b.u.d;
    }
    if (a.t == JV_FLOAT) { int c = cmp_int_float(b.u.i, a.u.d); return c == 2 ? 2 : -c; }
    return cmp_int_float(a.u.i, b.u.d);
}

static bool is_seq_kind(jv v) { return v.t == JV_LIST && (v.f == LK_LIST || v.f == LK_TUPLE); }

bool jv_eq(struct jrender *r, jv a, jv b) {
    if (jv_is_num(a) && jv_is_num(b)) return num_cmp(a, b) == 0;
    if (a.t != b.t) return false;
    switch (a.t) {
    case JV_UNDEF: case JV_NONE: return true;
    case JV_STR: return a.u.s->len == b.u.s->len && memcmp(a.u.s->p, b.u.s->p, a.u.s->len) == 0;
    case JV_LIST: {
        if (a.u.l == b.u.l) return true;
        jr_check_stack(r);
        bool ka = is_seq_kind(a), kb = is_seq_kind(b);
        if (ka && kb) {
            if (a.f != b.f || a.u.l->n != b.u.l->n) return false;
            for (size_t i = 0; i < a.u.l->n; i++)
                if (!jv_eq(r, a.u.l->v[i], b.u.l->v[i])) return false;
            return true;
        }
        if (a.f == LK_KEYS && b.f == LK_KEYS) { /* set semantics */
            if (a.u.l->n != b.u.l->n) return false;
            for (size_t i = 0; i < a.u.l->n; i++) {
                bool found = false;
                for (size_t j = 0; j < b.u.l->n && !found; j++) found = jv_eq(r, a.u.l->v[i], b.u.l->v[j]);
                if (!found) return false;
            }
            return true;
        }
        return false;
    }
    case JV_DICT: {
        struct jdict *x = a.u.dict, *y = b.u.dict;
        if (x == y) return true;
        jr_check_stack(r);
        if (x->n != y->n) return false;
        for (uint32_t i = 0; i < x->n; i++) {
            jv o;
            if (!jdict_get(r, y, x->k[i], &o) || !jv_eq(r, x->v[i], o)) return false;
        }
        return true;
    }
    case JV_OBJ:
        if (a.u.o->kind == JO_RANGE && b.u.o->kind == JO_RANGE) {
            int64_t la = range_len(a.u.o->u.range.start, a.u.o->u.range.stop, a.u.o->u.range.step);
            int64_t lb = range_len(b.u.o->u.range.start, b.u.o->u.range.stop, b.u.o->u.range.step);
            if (la != lb) return false;
            if (la == 0) return true;
            if (a.u.o->u.range.start != b.u.o->u.range.start) return false;
            return la == 1 || a.u.o->u.range.step == b.u.o->u.range.step;
        }
        if (a.u.o->kind == JO_METHOD && b.u.o->kind == JO_METHOD)
            return a.u.o->u.method.id == b.u.o->u.method.id && jv_eq(r, a.u.o->u.method.self, b.u.o->u.method.self);
        return a.u.o == b.u.o;
    default:
        return false;
    }
}

int jv_cmp(struct jrender *r, jv a, jv b, const char *op) {
    if (a.t == JV_UNDEF) jr_fail_undefined(r, a);
    if (b.t == JV_UNDEF) jr_fail_undefined(r, b);
    if (jv_is_num(a) && jv_is_num(b)) {
        int c = num_cmp(a, b);
        return c == 2 ? 3 : c; /* 3: unordered (NaN): every ordering test is false */
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = MIN(a.u.s->len, b.u.s->len);
        int c = memcmp(a.u.s->p, b.u.s->p, n);
        if (c) return c < 0 ? -1 : 1;
        return a.u.s->len < b.u.s->len ? -1 : a.u.s->len > b.u.s->len;
    }
    if (is_seq_kind(a) && is_seq_kind(b) && a.f == b.f) {
        jr_check_stack(r);
        struct jlist *x = a.u.l, *y = b.u.l;
        size_t n = MIN(x->n, y->n);
        for (size_t i = 0; i < n; i++)
            if (!jv_eq(r, x->v[i], y->v[i])) return jv_cmp(r, x->v[i], y->v[i], op);
        return x->n < y->n ? -1 : x->n > y->n;
    }
    jr_fail(r, "'%s' not supported between instances of '%s' and '%s'", op, jv_type_name(a), jv_type_name(b));
}

/* ---- iteration ----------------------------------------------------------------------------- */

struct jlist *jv_iterate(struct jrender *r, jv v) {
    switch (v.t) {
    case JV_UNDEF: return jlist_new(r, 0);
    case JV_STR: {
        struct jstr *s = v.u.s;
        struct jlist *l = jlist_new(r, s->nchars);
        for (size_t i = 0; i < s->len;) {
            size_t adv = 1;
            if ((unsigned char)s->p[i] >= 0x80) jutf8_decode(s->p + i, s->len - i, &adv);
            l->v[l->n++] = jv_from_str(jstr_wrap(r, s->p + i, adv), false); /* str.__iter__: plain str */
            i += adv;
        }
        return l;
    }
    case JV_LIST:
        if (v.f == LK_GEN) {
            jgen_force(r, v);
            struct jlist *g = v.u.l, *l = jlist_new(r, g->n - g->pos);
            for (size_t i = g->pos; i < g->n; i++) l->v[l->n++] = g->v[i];
            g->pos = g->n;
            return l;
        }
        return v.u.l;
    case JV_DICT: {
        struct jlist *l = jlist_new(r, v.u.dict->n);
        for (uint32_t i = 0; i < v.u.dict->n; i++) l->v[l->n++] = v.u.dict->k[i];
        return l;
    }
    case JV_OBJ:
        if (v.u.o->kind == JO_RANGE) {
            int64_t n = range_len(v.u.o->u.range.start, v.u.o->u.range.stop, v.u.o->u.range.step);
            struct jlist *l = jlist_new(r, (size_t)n);
            for (int64_t i = 0; i < n; i++)
                l->v[l->n++] = jv_int(v.u.o->u.range.start + i * v.u.o->u.range.step);
            return l;
        }
        break;
    default:
        break;
    }
    jr_fail(r, "'%s' object is not iterable", jv_type_name(v));
}

bool jv_contains(struct jrender *r, jv c, jv item) {
    switch (c.t) {
    case JV_UNDEF: return false;
    case JV_STR:
        if (item.t != JV_STR) jr_fail(r, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
        if (item.u.s->len == 0) return true;
        if (item.u.s->len > c.u.s->len) return false;
        return memmem(c.u.s->p, c.u.s->len, item.u.s->p, item.u.s->len) != NULL;
    case JV_LIST: {
        if (c.f == LK_KEYS) jv_hash(r, item);
        if (c.f == LK_GEN) jgen_force(r, c);
        struct jlist *l = c.u.l;
        size_t start = c.f == LK_GEN ? l->pos : 0;
        for (size_t i = start; i < l->n; i++)
            if (jv_eq(r, l->v[i], item)) {
                if (c.f == LK_GEN) l->pos = i + 1;
                return true;
            }
        if (c.f == LK_GEN) l->pos = l->n;
        return false;
    }
    case JV_DICT: {
        jv o;
        return jdict_get(r, c.u.dict, item, &o);
    }
    case JV_OBJ:
        if (c.u.o->kind == JO_RANGE) {
            if (item.t == JV_INT || item.t == JV_BOOL) {
                int64_t s = c.u.o->u.range.start, e = c.u.o->u.range.stop, st = c.u.o->u.range.step, x = item.u.i;
                if (st > 0 ? (x < s || x >= e) : (x > s || x <= e)) return false;
                return (x - s) % st == 0;
            }
            struct jlist *l = jv_iterate(r, c);
            for (size_t i = 0; i < l->n; i++)
                if (jv_eq(r, l->v[i], item)) return true;
            return false;
        }
        break;
    default:
        break;
    }
    jr_fail(r, "argument of type '%s' is not iterable", jv_type_name(c));
}

/* ---- arithmetic -------------------------------------------------------------------------- */

static const char *op_sym(int op) {
    static const char *s[] = { "+", "-", "*", "/", "//", "%", "** or pow()" };
    return s[op];
}

_Noreturn static void op_type_error(struct jrender *r, int op, jv a, jv b) {
    jr_fail(r, "unsupported operand type(s) for %s: '%s' and '%s'", op_sym(op), jv_type_name(a), jv_type_name(b));
}

static jv markup_escape(struct jrender *r, jv v); /* plain str -> escaped markup */

static jv str_repeat(struct jrender *r, jv s, int64_t n) {
    if (n <= 0 || s.u.s->len == 0) return jv_from_str(jstr_wrap(r, "", 0), s.f & JVF_MARKUP);
    if ((uint64_t)n > r->ct->lim.max_output / s.u.s->len) jr_fail(r, "string repetition exceeds the output limit");
    size_t len = s.u.s->len * (size_t)n;
    char *p = jr_alloc(r, len + 1);
    for (int64_t i = 0; i < n; i++) memcpy(p + (size_t)i * s.u.s->len, s.u.s->p, s.u.s->len);
    p[len] = 0;
    struct jstr *o = jr_alloc(r, sizeof *o);
    o->p = p;
    o->len = len;
    o->nchars = s.u.s->nchars * (size_t)n;
    return jv_from_str(o, s.f & JVF_MARKUP);
}

static jv list_repeat(struct jrender *r, jv l, int64_t n) {
    if (n <= 0 || l.u.l->n == 0) return jv_list_new(r, 0, l.f);
    if ((uint64_t)n > (r->arena.limit ? r->arena.limit : SIZE_MAX) / 16 / l.u.l->n) jr_fail(r, "list repetition too large");
    struct jlist *o = jlist_new(r, l.u.l->n * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        for (size_t j = 0; j < l.u.l->n; j++) o->v[o->n++] = l.u.l->v[j];
    return jv_from_list(o, l.f);
}

static jv concat_str(struct jrender *r, jv a, jv b) {
    bool m = (a.f | b.f) & JVF_MARKUP;
    if (m) {
        if (!(a.f & JVF_MARKUP)) a = markup_escape(r, a);
        if (!(b.f & JVF_MARKUP)) b = markup_escape(r, b);
    }
    size_t len = a.u.s->len + b.u.s->len;
    if (len > r->ct->lim.max_output) jr_fail(r, "string exceeds the output limit");
    char *p = jr_alloc(r, len + 1);
    memcpy(p, a.u.s->p, a.u.s->len);
    memcpy(p + a.u.s->len, b.u.s->p, b.u.s->len);
    p[len] = 0;
    struct jstr *o = jr_alloc(r, sizeof *o);
    o->p = p;
    o->len = len;
    o->nchars = a.u.s->nchars + b.u.s->nchars;
    return jv_from_str(o, m);
}

static jv float_divmod(struct jrender *r, double vx, double wx, bool want_div, const char *what) {
    if (wx == 0.0) jr_fail(r, "%s", what);
    double mod = fmod(vx, wx), div = (vx - mod) / wx;
    if (mod) {
        if ((wx < 0) != (mod < 0)) { mod += wx; div -= 1.0; }
    } else {
        mod = copysign(0.0, wx);
    }
    double floordiv;
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0;
    } else {
        floordiv = copysign(0.0, vx / wx);
    }
    return jv_float(want_div ? floordiv : mod);
}

static jv int_result(struct jrender *r, __int128 x) {
    if (x > INT64_MAX || x < INT64_MIN) jr_fail(r, "integer overflow (Python ints are unbounded; this engine's are 64-bit)");
    return jv_int((int64_t)x);
}

jv jv_binop(struct jrender *r, int op, jv a, jv b) {
    if (op == OP_MOD && a.t == JV_STR) return jpy_percent_format(r, a, b); /* str.__mod__ takes any argument */
    if (a.t == JV_UNDEF) jr_fail_undefined(r, a);
    if (b.t == JV_UNDEF) jr_fail_undefined(r, b);
    bool na = jv_is_num(a), nb = jv_is_num(b);
    if (na && nb) {
        bool fl = a.t == JV_FLOAT || b.t == JV_FLOAT;
        switch (op) {
        case OP_ADD: return fl ? jv_float(num_f(a) + num_f(b)) : int_result(r, (__int128)a.u.i + b.u.i);
        case OP_SUB: return fl ? jv_float(num_f(a) - num_f(b)) : int_result(r, (__int128)a.u.i - b.u.i);
        case OP_MUL: return fl ? jv_float(num_f(a) * num_f(b)) : int_result(r, (__int128)a.u.i * b.u.i);
        case OP_DIV:
            if (num_f(b) == 0.0) jr_fail(r, fl ? "float division by zero" : "division by zero");
            return jv_float(num_f(a) / num_f(b));
        case OP_FLOORDIV:
            if (fl) return float_divmod(r, num_f(a), num_f(b), true, "float floor division by zero");
            if (b.u.i == 0) jr_fail(r, "integer division or modulo by zero");
            {
                __int128 q = (__int128)a.u.i / b.u.i;
                if ((a.u.i % b.u.i != 0) && ((a.u.i < 0) != (b.u.i < 0))) q--;
                return int_result(r, q);
            }
        case OP_MOD:
            if (fl) return float_divmod(r, num_f(a), num_f(b), false, "float modulo");
            if (b.u.i == 0) jr_fail(r, "integer modulo by zero");
            if (b.u.i == -1) return jv_int(0);
            {
                int64_t m = a.u.i % b.u.i;
                if (m && ((m < 0) != (b.u.i < 0))) m += b.u.i;
                return jv_int(m);
            }
        case OP_POW:
            if (!fl && b.u.i >= 0) {
                __int128 res = 1, base = a.u.i;
                int64_t e = b.u.i;
                while (e) {
                    if (e & 1) { res *= base; if (res > INT64_MAX || res < INT64_MIN) int_result(r, res); }
                    e >>= 1;
                    if (e) { base *= base; if (base > INT64_MAX || base < -(__int128)INT64_MAX) int_result(r, base); }
                }
                return int_result(r, res);
            }
            {
                double x = num_f(a), y = num_f(b);
                if (x == 0.0 && y < 0) jr_fail(r, "0.0 cannot be raised to a negative power");
                if (x < 0 && y != floor(y)) jr_fail(r, "complex results are not supported");
                return jv_float(pow(x, y));
            }
        }
    }
    if (op == OP_ADD) {
        if (a.t == JV_STR && b.t == JV_STR) return concat_str(r, a, b);
        if (a.t == JV_STR && !(a.f & JVF_MARKUP))
            jr_fail(r, "can only concatenate str (not \"%s\") to str", jv_type_name(b));
        if (is_seq_kind(a) && is_seq_kind(b) && a.f == b.f) {
            struct jlist *o = jlist_new(r, a.u.l->n + b.u.l->n);
            memcpy(o->v, a.u.l->v, a.u.l->n * sizeof(jv));
            if (b.u.l->n) memcpy(o->v + a.u.l->n, b.u.l->v, b.u.l->n * sizeof(jv));
            o->n = a.u.l->n + b.u.l->n;
            return jv_from_list(o, a.f);
        }
        if (is_seq_kind(a))
            jr_fail(r, "can only concatenate %s (not \"%s\") to %s", jv_type_name(a), jv_type_name(b), jv_type_name(a));
    }
    if (op == OP_MUL) {
        if (a.t == JV_STR && (b.t == JV_INT || b.t == JV_BOOL)) return str_repeat(r, a, b.u.i);
        if (b.t == JV_STR && (a.t == JV_INT || a.t == JV_BOOL)) return str_repeat(r, b, a.u.i);
        if (is_seq_kind(a) && (b.t == JV_INT || b.t == JV_BOOL)) return list_repeat(r, a, b.u.i);
        if (is_seq_kind(b) && (a.t == JV_INT || a.t == JV_BOOL)) return list_repeat(r, b, a.u.i);
        if (a.t == JV_STR || b.t == JV_STR || is_seq_kind(a) || is_seq_kind(b))
            jr_fail(r, "can't multiply sequence by non-int of type '%s'",
                    jv_type_name((a.t == JV_STR || is_seq_kind(a)) ? b : a));
    }
    if (op == OP_MOD && a.t == JV_STR) return jpy_percent_format(r, a, b);
    op_type_error(r, op, a, b);
}

jv jv_neg(struct jrender *r, jv a, bool neg) {
    if (a.t == JV_UNDEF) jr_fail_undefined(r, a);
    if (a.t == JV_FLOAT) return jv_float(neg ? -a.u.d : a.u.d);
    if (a.t == JV_INT || a.t == JV_BOOL) return neg ? int_result(r, -(__int128)a.u.i) : jv_int(a.u.i);
    jr_fail(r, "bad operand type for unary %c: '%s'", neg ? '-' : '+', jv_type_name(a));
}

/* ---- markup ---------------------------------------------------------------------------------- */

static jv markup_escape(struct jrender *r, jv v) {
    if (v.t == JV_STR && (v.f & JVF_MARKUP)) return v;
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

/* ---- attribute and item lookup (SandboxedEnvironment.getattr/getitem) -------------------------- */

static jv undefined_attr(struct jrender *r, jv obj, const char *name, size_t nlen) {
    return jv_undef_info(r, NULL, obj, jv_str(r, name, nlen), JU_PLAIN);
}

static jv unsafe_attr(struct jrender *r, jv obj, const char *name, size_t nlen) {
    jr_push_buf(r);
    struct jbuf *b = jr_out(r);
    jbuf_put(r, b, "access to attribute ", 20);
    jpy_str_repr(r, b, name, nlen);
    jbuf_put(r, b, " of ", 4);
    const char *tn = jv_type_name(obj);
    jpy_str_repr(r, b, tn, strlen(tn));
    jbuf_put(r, b, " object is unsafe.", 18);
    struct jstr *msg = jr_pop_buf(r);
    return jv_undef_info(r, msg->p, obj, jv_str(r, name, nlen), JU_SECURITY);
}

static jv loop_attr(struct jrender *r, jv obj, const char *name, size_t nlen, bool *found);

/* Dunder attributes every object (or the common builtins) has: reading one is
 * what the sandbox calls unsafe. */
static bool common_dunder(const char *name, size_t nlen) {
    static const char *const d[] = {
        "__class__", "__doc__", "__init__", "__repr__", "__str__", "__hash__", "__eq__", "__ne__", "__lt__",
        "__le__", "__gt__", "__ge__", "__getattribute__", "__setattr__", "__delattr__", "__dir__", "__format__",
        "__reduce__", "__reduce_ex__", "__sizeof__", "__subclasshook__", "__init_subclass__", "__new__",
        "__len__", "__getitem__", "__contains__", "__iter__", "__add__", "__mul__", "__mod__", "__dict__",
        "__module__", "__globals__", "__builtins__", "__mro__", "__bases__", "__subclasses__", "__call__",
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (strlen(d[i]) == nlen && memcmp(d[i], name, nlen) == 0) return true;
    return false;
}

/* The Python attribute named `name` of obj, if it has one. */
static bool py_attr(struct jrender *r, jv obj, const char *name, size_t nlen, jv *out) {
    if (nlen && name[0] == '_') {
        if (common_dunder(name, nlen)) { *out = unsafe_attr(r, obj, name, nlen); return true; }
        return false;
    }
    if (obj.t == JV_LIST && obj.f == LK_TUPLE && obj.sub == 1 && obj.u.l->n == 2) { /* _GroupTuple */
        if (nlen == 7 && !memcmp(name, "grouper", 7)) { *out = obj.u.l->v[0]; return true; }
        if (nlen == 4 && !memcmp(name, "list", 4)) { *out = obj.u.l->v[1]; return true; }
    }
    if (obj.t == JV_INT || obj.t == JV_BOOL || obj.t == JV_FLOAT) {
#define IS(s) (nlen == sizeof(s) - 1 && memcmp(name, s, nlen) == 0)
        if (IS("real")) { *out = obj.t == JV_FLOAT ? obj : jv_int(obj.u.i); return true; }
        if (IS("imag")) { *out = obj.t == JV_FLOAT ? jv_float(0.0) : jv_int(0); return true; }
        if (obj.t != JV_FLOAT && IS("numerator")) { *out = jv_int(obj.u.i); return true; }
        if (obj.t != JV_FLOAT && IS("denominator")) { *out = jv_int(1); return true; }
#undef IS
    }
    if (obj.t == JV_OBJ) {
        struct jobj *o = obj.u.o;
        if (o->kind == JO_NAMESPACE) return jdict_get_str(o->u.ns, name, nlen, out);
        if (o->kind == JO_LOOP) {
            bool found = false;
            *out = loop_attr(r, obj, name, nlen, &found);
            return found;
        }
        if (o->kind == JO_MACRO) { /* jinja2.runtime.Macro's attributes */
            const struct jnode *m = o->u.macro.node;
#define IS(s) (nlen == sizeof(s) - 1 && memcmp(name, s, nlen) == 0)
            if (IS("name")) {
                *out = o->u.macro.is_caller ? jv_cstr(r, "caller") : jv_from_str((struct jstr *)m->u.macro.sname, false);
                return true;
            }
            if (IS("arguments")) {
                struct jlist *l = jlist_new(r, m->u.macro.nparams);
                for (uint32_t i = 0; i < m->u.macro.nparams; i++)
                    l->v[l->n++] = jv_from_str(r->ct->names[m->u.macro.params[i]->u.name.id], false);
                *out = jv_from_list(l, LK_TUPLE);
                return true;
            }
            if (IS("catch_kwargs")) { *out = jv_bool(m->u.macro.uses_kwargs); return true; }
            if (IS("catch_varargs")) { *out = jv_bool(m->u.macro.uses_varargs); return true; }
            if (IS("caller")) { *out = jv_bool(m->u.macro.uses_caller); return true; }
#undef IS
            return false;
        }
    }
    if (jmethod_is_mutating(obj, name, nlen)) {
        *out = unsafe_attr(r, obj, name, nlen);
        return true;
    }
    int m = jmethod_lookup(obj, name, nlen);
    if (m < 0) return false;
    struct jobj *o = jobj_new(r, JO_METHOD);
    o->u.method.id = m;
    o->u.method.self = obj;
    *out = jv_from_obj(o);
    return true;
}

jv jv_getattr(struct jrender *r, jv obj, const char *name, size_t nlen) {
    if (obj.t == JV_UNDEF) jr_fail_undefined(r, obj);
    jv out;
    if (py_attr(r, obj, name, nlen, &out)) return out;
    if (obj.t == JV_DICT && jdict_get_str(obj.u.dict, name, nlen, &out)) return out;
    return undefined_attr(r, obj, name, nlen);
}

static bool index_of(struct jrender *r, jv key, int64_t n, int64_t *out) {
    (void)r;
    if (key.t != JV_INT && key.t != JV_BOOL) return false;
    int64_t i = key.u.i;
    if (i < 0) i += n;
    if (i < 0 || i >= n) return false;
    *out = i;
    return true;
}

jv jv_getitem(struct jrender *r, jv obj, jv key) {
    if (obj.t == JV_UNDEF) jr_fail_undefined(r, obj);
    jv out;
    int64_t i;
    switch (obj.t) {
    case JV_DICT:
        if (key.t == JV_LIST && key.f != LK_TUPLE) break; /* unhashable: TypeError, caught */
        if (key.t == JV_DICT) break;
        if (jdict_get(r, obj.u.dict, key, &out)) return out;
        break;
    case JV_LIST:
        if ((obj.f == LK_LIST || obj.f == LK_TUPLE) && index_of(r, key, (int64_t)obj.u.l->n, &i)) return obj.u.l->v[i];
        break;
    case JV_STR:
        if (index_of(r, key, (int64_t)obj.u.s->nchars, &i)) {
            size_t off = jutf8_offset(obj.u.s, (size_t)i), adv = 1;
            if ((unsigned char)obj.u.s->p[off] >= 0x80) jutf8_decode(obj.u.s->p + off, obj.u.s->len - off, &adv);
            return jv_from_str(jstr_wrap(r, obj.u.s->p + off, adv), obj.f & JVF_MARKUP);
        }
        break;
    case JV_OBJ:
        if (obj.u.o->kind == JO_RANGE) {
            int64_t n = range_len(obj.u.o->u.range.start, obj.u.o->u.range.stop, obj.u.o->u.range.step);
            if (index_of(r, key, n, &i)) return jv_int(obj.u.o->u.range.start + i * obj.u.o->u.range.step);
        }
        break;
    default:
        break;
    }
    if (key.t == JV_STR && py_attr(r, obj, key.u.s->p, key.u.s->len, &out)) return out;
    return jv_undef_info(r, NULL, obj, key, JU_PLAIN);
}

static bool slice_index(struct jrender *r, jv v, int64_t *out) { /* false: None */
    if (v.t == JV_NONE) return false;
    if (v.t == JV_INT || v.t == JV_BOOL) { *out = v.u.i; return true; }
    jr_fail(r, "slice indices must be integers or None or have an __index__ method");
}

/* Python's slice.indices(). */
static int64_t slice_adjust(int64_t len, bool has_start, int64_t start, bool has_stop, int64_t stop, int64_t step,
                            int64_t *ostart) {
    int64_t lo, hi;
    if (step > 0) { lo = 0; hi = len; } else { lo = -1; hi = len - 1; }
    if (!has_start) start = step > 0 ? lo : hi;
    else if (start < 0) { start += len; if (start < lo) start = lo; }
    else if (start > hi) start = hi;
    if (!has_stop) stop = step > 0 ? hi : lo;
    else if (stop < 0) { stop += len; if (stop < lo) stop = lo; }
    else if (stop > hi) stop = hi;
    *ostart = start;
    if (step > 0) return stop > start ? (stop - start - 1) / step + 1 : 0;
    return start > stop ? (start - stop - 1) / (-step) + 1 : 0;
}

jv jv_slice(struct jrender *r, jv obj, jv vstart, jv vstop, jv vstep) {
    if (obj.t == JV_UNDEF) jr_fail_undefined(r, obj);
    /* Jinja compiles obj[a:b:c] to a plain Python subscript: no undefined
     * fallback, Python's TypeErrors propagate */
    bool sliceable = obj.t == JV_STR || (obj.t == JV_LIST && (obj.f == LK_LIST || obj.f == LK_TUPLE)) ||
                     jv_is_obj(obj, JO_RANGE);
    if (obj.t == JV_DICT) jr_fail(r, "unhashable type: 'slice'");
    if (!sliceable) jr_fail(r, "'%s' object is not subscriptable", jv_type_name(obj));
    int64_t start = 0, stop = 0, step = 1;
    bool hs = slice_index(r, vstart, &start), he = slice_index(r, vstop, &stop);
    if (slice_index(r, vstep, &step) && step == 0) jr_fail(r, "slice step cannot be zero");
    if (obj.t == JV_STR) {
        struct jstr *s = obj.u.s;
        int64_t b0, n = slice_adjust((int64_t)s->nchars, hs, start, he, stop, step, &b0);
        if (step == 1) {
            size_t o0 = jutf8_offset(s, (size_t)b0), o1 = jutf8_offset(s, (size_t)(b0 + n));
            return jv_from_str(jstr_wrap(r, s->p + o0, o1 - o0), obj.f & JVF_MARKUP);
        }
        /* general step: collect code point offsets */
        size_t *offs = jr_alloc(r, (s->nchars + 1) * sizeof(size_t));
        size_t k = 0;
        for (size_t i = 0; i < s->len;) {
            offs[k++] = i;
            size_t adv = 1;
            if ((unsigned char)s->p[i] >= 0x80) jutf8_decode(s->p + i, s->len - i, &adv);
            i += adv;
        }
        offs[k] = s->len;
        jr_push_buf(r);
        for (int64_t j = 0; j < n; j++) {
            size_t c = (size_t)(b0 + j * step);
            jbuf_put(r, jr_out(r), s->p + offs[c], offs[c + 1] - offs[c]);
        }
        return jv_from_str(jr_pop_buf(r), obj.f & JVF_MARKUP);
    }
    if (obj.t == JV_LIST && (obj.f == LK_LIST || obj.f == LK_TUPLE)) {
        int64_t b0, n = slice_adjust((int64_t)obj.u.l->n, hs, start, he, stop, step, &b0);
        struct jlist *l = jlist_new(r, (size_t)n);
        for (int64_t j = 0; j < n; j++) l->v[l->n++] = obj.u.l->v[b0 + j * step];
        return jv_from_list(l, obj.f);
    }
    if (jv_is_obj(obj, JO_RANGE)) {
        int64_t rs = obj.u.o->u.range.start, rst = obj.u.o->u.range.step;
        int64_t b0, n = slice_adjust(range_len(rs, obj.u.o->u.range.stop, rst), hs, start, he, stop, step, &b0);
        struct jobj *o = jobj_new(r, JO_RANGE);
        o->u.range.start = rs + b0 * rst;
        o->u.range.step = rst * step;
        o->u.range.stop = o->u.range.start + n * o->u.range.step;
        return jv_from_obj(o);
    }
    jr_fail(r, "'%s' object is not subscriptable", jv_type_name(obj));
}

/* ---- loop attributes --------------------------------------------------------------------------- */

static jv loop_attr(struct jrender *r, jv obj, const char *name, size_t nlen, bool *found) {
    struct jloop *lp = obj.u.o->u.loop;
    int64_t n = (int64_t)lp->items->n, i0 = (int64_t)lp->index0;
    *found = true;
#define IS(s) (nlen == sizeof(s) - 1 && memcmp(name, s, nlen) == 0)
    if (IS("index")) return jv_int(i0 + 1);
    if (IS("index0")) return jv_int(i0);
    if (IS("revindex")) return jv_int(n - i0);
    if (IS("revindex0")) return jv_int(n - i0 - 1);
    if (IS("first")) return jv_bool(i0 == 0);
    if (IS("last")) return jv_bool(i0 + 1 >= n);
    if (IS("length")) return jv_int(n);
    if (IS("depth")) return jv_int(lp->depth0 + 1);
    if (IS("depth0")) return jv_int(lp->depth0);
    if (IS("previtem"))
        return i0 > 0 ? lp->items->v[i0 - 1] : jv_undef_info(r, "there is no previous item", jv_undef(), jv_undef(), JU_PLAIN);
    if (IS("nextitem"))
        return i0 + 1 < n ? lp->items->v[i0 + 1] : jv_undef_info(r, "there is no next item", jv_undef(), jv_undef(), JU_PLAIN);
    if (IS("cycle") || IS("changed")) {
        struct jobj *o = jobj_new(r, JO_METHOD);
        o->u.method.id = jmethod_lookup(obj, name, nlen);
        o->u.method.self = obj;
        return jv_from_obj(o);
    }
#undef IS
    *found = false;
    return jv_undef();
}

/* ---- printf-style formatting (str % args) ----------------------------------------------------------- */

static void pad_out(struct jrender *r, struct jbuf *b, const char *s, size_t len, size_t nchars, int64_t width,
                    bool left, char fill) {
    int64_t pad = width > (int64_t)nchars ? width - (int64_t)nchars : 0;
    if (pad > (int64_t)r->ct->lim.max_output) jr_fail(r, "format width too large");
    if (!left) for (int64_t i = 0; i < pad; i++) jbuf_putc(r, b, fill);
    jbuf_put(r, b, s, len);
    if (left) for (int64_t i = 0; i < pad; i++) jbuf_putc(r, b, fill);
}

/* Integer in a base with Python's %-format flags. */
static void fmt_int(struct jrender *r, struct jbuf *b, int64_t v, char conv, bool alt, bool zero, bool left, char sign,
                    int64_t width, int64_t prec) {
    char digits[80];
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int base = (conv == 'x' || conv == 'X') ? 16 : conv == 'o' ? 8 : 10;
    const char *dig = conv == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
    int nd = 0;
    do { digits[nd++] = dig[mag % (uint64_t)base]; mag /= (uint64_t)base; } while (mag);
    char out[160];
    int k = 0;
    if (v < 0) out[k++] = '-';
    else if (sign) out[k++] = sign;
    if (alt && base != 10) { out[k++] = '0'; out[k++] = conv == 'o' ? 'o' : conv; }
    int64_t zeros = prec > nd ? prec - nd : 0;
    if (zero && !left && prec < 0) {
        int64_t total = k + nd;
        if (width > total) zeros = width - total;
    }
    if (zeros > 60) {
        if (zeros > (int64_t)r->ct->lim.max_output) jr_fail(r, "format width too large");
        jbuf_put(r, b, out, (size_t)k);
        for (int64_t i = 0; i < zeros; i++) jbuf_putc(r, b, '0');
        while (nd) jbuf_putc(r, b, digits[--nd]);
        return;
    }
    for (int64_t i = 0; i < zeros; i++) out[k++] = '0';
    while (nd) out[k++] = digits[--nd];
    pad_out(r, b, out, (size_t)k, (size_t)k, width, left, ' ');
}

static void fmt_float(struct jrender *r, struct jbuf *b, double d, char conv, bool alt, bool zero, bool left, char sign,
                      int64_t width, int64_t prec) {
    if (prec < 0) prec = 6;
    if (prec > 200) prec = 200;
    if (width > 100000) jr_fail(r, "format width too large");
    char f[32], out[512];
    int k = 0;
    f[k++] = '%';
    if (left) f[k++] = '-';
    if (sign == '+') f[k++] = '+';
    else if (sign == ' ') f[k++] = ' ';
    if (alt) f[k++] = '#';
    if (zero) f[k++] = '0';
    f[k] = 0;
    char full[40];
    snprintf(full, sizeof full, "%s*.*%c", f, conv);
    if (width > 400 || (fabs(d) > 1e100 && (conv == 'f' || conv == 'F'))) {
        /* arena memory: a longjmp from jbuf_put must not leak it */
        int need = snprintf(NULL, 0, full, (int)width, (int)prec, d);
        if (need < 0) jr_fail(r, "format error");
        char *big = jr_alloc(r, (size_t)need + 1);
        snprintf(big, (size_t)need + 1, full, (int)width, (int)prec, d);
        jbuf_put(r, b, big, (size_t)need);
        return;
    }
    int n = snprintf(out, sizeof out, full, (int)width, (int)prec, d);
    jbuf_put(r, b, out, (size_t)MIN((size_t)n, sizeof out - 1));
}

/* CPython's unicode_format_getnextarg: a tuple hands out its items; any other
 * argument (or the value of the last %(key)) is handed out once. */
struct pctx { jv args; int64_t arglen, argidx; const jv *tuple; jv dict; bool has_dict; };

static jv pct_next(struct jrender *r, struct pctx *c) {
    if (c->argidx < c->arglen) {
        int64_t i = c->argidx++;
        return c->arglen < 0 ? c->args : c->tuple[i];
    }
    jr_fail(r, "not enough arguments for format string");
}

jv jpy_percent_format(struct jrender *r, jv fmtv, jv args) {
    struct jstr *fmt = fmtv.u.s;
    bool markup = fmtv.f & JVF_MARKUP;
    struct pctx c = { .args = args, .arglen = -1, .argidx = -2 };
    if (args.t == JV_LIST && args.f == LK_TUPLE) {
        c.arglen = (int64_t)args.u.l->n;
        c.argidx = 0;
        c.tuple = args.u.l->v;
    }
    /* PyMapping_Check: anything subscriptable that is not a tuple or str */
    if (args.t == JV_DICT || args.t == JV_UNDEF || (args.t == JV_LIST && args.f == LK_LIST) || jv_is_obj(args, JO_RANGE)) {
        c.dict = args;
        c.has_dict = true;
    }
    jr_push_buf(r);
    const char *p = fmt->p, *e = fmt->p + fmt->len;
    while (p < e) {
        const char *pc = memchr(p, '%', (size_t)(e - p));
        if (!pc) { jbuf_put(r, jr_out(r), p, (size_t)(e - p)); break; }
        jbuf_put(r, jr_out(r), p, (size_t)(pc - p));
        p = pc + 1;
        if (p >= e) jr_fail(r, "incomplete format");
        if (*p == '(') {
            if (!c.has_dict) jr_fail(r, "format requires a mapping");
            const char *ks = ++p;
            int depth = 1;
            while (p < e && depth) { if (*p == '(') depth++; else if (*p == ')') depth--; if (depth) p++; }
            if (p >= e) jr_fail(r, "incomplete format key");
            jv key = jv_str(r, ks, (size_t)(p - ks));
            p++;
            jv val;
            if (c.dict.t == JV_UNDEF) jr_fail_undefined(r, c.dict);
            if (c.dict.t != JV_DICT) jr_fail(r, "%s indices must be integers or slices, not str", jv_type_name(c.dict));
            if (!jdict_get(r, c.dict.u.dict, key, &val)) {
                jr_push_buf(r);
                jpy_str_repr(r, jr_out(r), ks, (size_t)(p - 1 - ks));
                struct jstr *k = jr_pop_buf(r);
                jr_fail(r, "%.*s", (int)k->len, k->p);
            }
            c.args = val;
            c.arglen = -1;
            c.argidx = -2;
        }
        bool left = false, zero = false, alt = false;
        char sign = 0;
        for (; p < e; p++) {
            if (*p == '-') left = true;
            else if (*p == '0') zero = true;
            else if (*p == '#') alt = true;
            else if (*p == '+') sign = '+';
            else if (*p == ' ') { if (sign != '+') sign = ' '; }
            else break;
        }
        int64_t width = -1, prec = -1;
        if (p < e && *p == '*') {
            jv w = pct_next(r, &c);
            if (w.t != JV_INT && w.t != JV_BOOL) jr_fail(r, "* wants int");
            width = w.u.i;
            if (width < 0) { left = true; width = -width; }
            p++;
        } else {
            for (; p < e && *p >= '0' && *p <= '9'; p++) {
                width = (width < 0 ? 0 : width) * 10 + (*p - '0');
                if (width > 100000000) jr_fail(r, "width too big");
            }
        }
        if (p < e && *p == '.') {
            p++;
            prec = 0;
            if (p < e && *p == '*') {
                jv w = pct_next(r, &c);
                if (w.t != JV_INT && w.t != JV_BOOL) jr_fail(r, "* wants int");
                prec = w.u.i < 0 ? 0 : w.u.i;
                p++;
            } else {
                for (; p < e && *p >= '0' && *p <= '9'; p++) {
                    prec = prec * 10 + (*p - '0');
                    if (prec > 100000000) jr_fail(r, "precision too big");
                }
            }
        }
        if (p < e && (*p == 'h' || *p == 'l' || *p == 'L')) p++; /* one length modifier is ignored */
        if (p >= e) jr_fail(r, "incomplete format");
        char conv = *p++;
        if (conv == '%') { jbuf_putc(r, jr_out(r), '%'); continue; }
        jv arg = pct_next(r, &c);
        struct jbuf *b = jr_out(r);
        switch (conv) {
        case 's': case 'r': case 'a': {
            struct jstr *sv;
            if (conv == 's') {
                jv x = arg;
                if (markup && !(x.t == JV_STR && (x.f & JVF_MARKUP))) x = markup_escape(r, x);
                sv = jv_to_jstr(r, x);
            } else {
                jr_push_buf(r);
                jv_write_repr(r, jr_out(r), arg, 0);
                sv = jr_pop_buf(r);
                if (markup) sv = markup_escape(r, jv_from_str(sv, false)).u.s;
            }
            size_t len = sv->len, nch = sv->nchars;
            if (prec >= 0 && (size_t)prec < nch) { len = jutf8_offset(sv, (size_t)prec); nch = (size_t)prec; }
            pad_out(r, b, sv->p, len, nch, width, left, ' ');
            break;
        }
        case 'd': case 'i': case 'u': {
            if (arg.t == JV_FLOAT) {
                if (isnan(arg.u.d) || isinf(arg.u.d)) jr_fail(r, "cannot convert float %s to integer", isnan(arg.u.d) ? "NaN" : "infinity");
                if (fabs(arg.u.d) >= 9.2e18) jr_fail(r, "integer overflow");
                arg = jv_int((int64_t)arg.u.d);
            }
            if (arg.t == JV_UNDEF) jr_fail_undefined(r, arg); /* Undefined.__int__ */
            if (arg.t != JV_INT && arg.t != JV_BOOL) jr_fail(r, "%%%c format: a real number is required, not %s", conv, jv_type_name(arg));
            fmt_int(r, b, arg.u.i, 'd', false, zero, left, sign, width, prec);
            break;
        }
        case 'x': case 'X': case 'o':
            if (arg.t != JV_INT && arg.t != JV_BOOL) jr_fail(r, "%%%c format: an integer is required, not %s", conv, jv_type_name(arg));
            fmt_int(r, b, arg.u.i, conv, alt, zero, left, sign, width, prec);
            break;
        case 'e': case 'E': case 'f': case 'F': case 'g': case 'G':
            if (arg.t == JV_UNDEF) jr_fail_undefined(r, arg); /* Undefined.__float__ */
            if (!jv_is_num(arg)) jr_fail(r, "must be real number, not %s", jv_type_name(arg));
            fmt_float(r, b, num_f(arg), conv, alt, zero, left, sign, width, prec);
            break;
        case 'c': {
            char t[4];
            if (arg.t == JV_INT || arg.t == JV_BOOL) {
                if (arg.u.i < 0 || arg.u.i > 0x10ffff) jr_fail(r, "%%c arg not in range(0x110000)");
                pad_out(r, b, t, jutf8_encode((uint32_t)arg.u.i, t), 1, width, left, ' ');
            } else if (arg.t == JV_STR && arg.u.s->nchars == 1) {
                pad_out(r, b, arg.u.s->p, arg.u.s->len, 1, width, left, ' ');
            } else {
                jr_fail(r, "%%c requires int or char");
            }
            break;
        }
        default:
            if ((unsigned char)conv >= 0x20 && (unsigned char)conv < 0x7f)
                jr_fail(r, "unsupported format character '%c' (0x%x) at index %zu", conv, (unsigned char)conv,
                        (size_t)(p - 1 - fmt->p));
            jr_fail(r, "unsupported format character (0x%x) at index %zu", (unsigned char)conv, (size_t)(p - 1 - fmt->p));
        }
    }
    if (c.argidx < c.arglen && !c.has_dict) jr_fail(r, "not all arguments converted during string formatting");
    return jv_from_str(jr_pop_buf(r), markup);
}

/* ---- str.format ------------------------------------------------------------------------------------- */

struct fspec { uint32_t fill; char align; char sign; bool alt, zero, comma, underscore; int64_t width, prec; char type; };

static void parse_spec(struct jrender *r, const char *p, size_t n, struct fspec *s) {
    memset(s, 0, sizeof *s);
    s->fill = ' ';
    s->width = -1;
    s->prec = -1;
    size_t i = 0;
    if (n >= 2) {
        size_t adv;
        uint32_t c = jutf8_decode(p, n, &adv);
        if (adv < n && strchr("<>=^", p[adv])) { s->fill = c; s->align = p[adv]; i = adv + 1; }
    }
    if (!s->align && i < n && strchr("<>=^", p[i])) s->align = p[i++];
    if (i < n && strchr("+- ", p[i])) s->sign = p[i++];
    if (i < n && p[i] == '#') { s->alt = true; i++; }
    if (i < n && p[i] == '0') { s->zero = true; i++; }
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        s->width = (s->width < 0 ? 0 : s->width) * 10 + (p[i++] - '0');
        if (s->width > 100000000) jr_fail(r, "Too many decimal digits in format string");
    }
    if (i < n && (p[i] == ',' || p[i] == '_')) { if (p[i] == ',') s->comma = true; else s->underscore = true; i++; }
    if (i < n && p[i] == '.') {
        i++;
        s->prec = 0;
        if (i >= n || p[i] < '0' || p[i] > '9') jr_fail(r, "Format specifier missing precision");
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            s->prec = s->prec * 10 + (p[i++] - '0');
            if (s->prec > 100000000) jr_fail(r, "Too many decimal digits in format string");
        }
    }
    if (i < n) s->type = p[i++];
    if (i < n) jr_fail(r, "Invalid format specifier");
}

static void align_out(struct jrender *r, struct jbuf *b, const char *s, size_t len, size_t nch, const struct fspec *sp,
                      char def_align) {
    char al = sp->align ? sp->align : def_align;
    int64_t pad = sp->width > (int64_t)nch ? sp->width - (int64_t)nch : 0;
    if (pad > (int64_t)r->ct->lim.max_output) jr_fail(r, "format width too large");
    char f[4];
    size_t fl = jutf8_encode(sp->fill, f);
    int64_t lp = al == '>' ? pad : al == '^' ? pad / 2 : 0, rp = pad - lp;
    if (al == '=') { lp = 0; rp = 0; }
    for (int64_t i = 0; i < lp; i++) jbuf_put(r, b, f, fl);
    jbuf_put(r, b, s, len);
    for (int64_t i = 0; i < rp; i++) jbuf_put(r, b, f, fl);
}

static void format_value(struct jrender *r, struct jbuf *b, jv v, const char *spec, size_t slen) {
    if (slen == 0) { jv_write_str(r, b, v); return; }
    struct fspec sp;
    parse_spec(r, spec, slen, &sp);
    if (v.t == JV_STR) {
        if (sp.type && sp.type != 's') jr_fail(r, "Unknown format code '%c' for object of type 'str'", sp.type);
        if (sp.sign == ' ') jr_fail(r, "Space not allowed in string format specifier");
        if (sp.sign) jr_fail(r, "Sign not allowed in string format specifier");
        if (sp.alt) jr_fail(r, "Alternate form (#) not allowed in string format specifier");
        if (sp.align == '=') jr_fail(r, "'=' alignment not allowed in string format specifier");
        struct jstr *s = v.u.s;
        size_t len = s->len, nch = s->nchars;
        if (sp.prec >= 0 && (size_t)sp.prec < nch) { len = jutf8_offset(s, (size_t)sp.prec); nch = (size_t)sp.prec; }
        if (sp.zero && !sp.align) { sp.fill = '0'; sp.align = '<'; }
        align_out(r, b, s->p, len, nch, &sp, '<');
        return;
    }
    if (v.t == JV_INT || v.t == JV_BOOL || v.t == JV_FLOAT) {
        if (v.t == JV_BOOL && !sp.type && !sp.width && !sp.sign) { jv_write_str(r, b, v); return; }
        char t = sp.type;
        jr_push_buf(r);
        struct jbuf *tb = jr_out(r);
        bool neg;
        if ((v.t != JV_FLOAT) && (!t || strchr("dxXobcn", t))) {
            if (sp.prec >= 0) jr_fail(r, "Precision not allowed in integer format specifier");
            int64_t x = v.u.i;
            neg = x < 0;
            if (t == 'c') {
                char c4[4];
                jbuf_put(r, tb, c4, jutf8_encode((uint32_t)x, c4));
            } else if (t == 'b') {
                uint64_t m = neg ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
                char d[70]; int nd = 0;
                do { d[nd++] = (char)('0' + (m & 1)); m >>= 1; } while (m);
                if (sp.alt) jbuf_put(r, tb, "0b", 2);
                while (nd) jbuf_putc(r, tb, d[--nd]);
            } else {
                fmt_int(r, tb, neg ? -x : x, t == 'x' || t == 'X' || t == 'o' ? t : 'd', sp.alt, false, false, 0, -1, -1);
            }
        } else {
            double d = num_f(v);
            neg = signbit(d);
            double a = fabs(d);
            if (!t) {
                if (sp.prec < 0 || !isfinite(a)) write_float(r, tb, a);
                else { char g[80]; float_general_dot0(a, sp.prec, g); jbuf_put(r, tb, g, strlen(g)); }
            } else if (t == '%') {
                fmt_float(r, tb, a * 100, 'f', sp.alt, false, false, 0, -1, sp.prec);
                jbuf_putc(r, tb, '%');
            } else if (strchr("eEfFgG", t)) {
                fmt_float(r, tb, a, t, sp.alt, false, false, 0, -1, sp.prec);
            } else {
                jr_fail(r, "Unknown format code '%c' for object of type '%s'", t, jv_type_name(v));
            }
        }
        struct jstr *digits = jr_pop_buf(r);
        /* thousands separators on the integer part */
        const char *dp = digits->p;
        size_t dl = digits->len;
        jr_push_buf(r);
        struct jbuf *nb = jr_out(r);
        if (sp.comma || sp.underscore) {
            size_t intlen = 0;
            while (intlen < dl && dp[intlen] >= '0' && dp[intlen] <= '9') intlen++;
            for (size_t i = 0; i < intlen; i++) {
                if (i && (intlen - i) % 3 == 0) jbuf_putc(r, nb, sp.comma ? ',' : '_');
                jbuf_putc(r, nb, dp[i]);
            }
            jbuf_put(r, nb, dp + intlen, dl - intlen);
        } else {
            jbuf_put(r, nb, dp, dl);
        }
        struct jstr *body = jr_pop_buf(r);
        char signc = neg ? '-' : sp.sign == '+' ? '+' : sp.sign == ' ' ? ' ' : 0;
        if (sp.zero && !sp.align) { sp.fill = '0'; sp.align = '='; }
        if (sp.align == '=') {
            int64_t pad = sp.width - (int64_t)body->nchars - (signc ? 1 : 0);
            if (pad > (int64_t)r->ct->lim.max_output) jr_fail(r, "format width too large");
            if (signc) jbuf_putc(r, b, signc);
            char f[4];
            size_t fl = jutf8_encode(sp.fill, f);
            for (int64_t i = 0; i < pad; i++) jbuf_put(r, b, f, fl);
            jbuf_put(r, b, body->p, body->len);
        } else {
            jr_push_buf(r);
            if (signc) jbuf_putc(r, jr_out(r), signc);
            jbuf_put(r, jr_out(r), body->p, body->len);
            struct jstr *all = jr_pop_buf(r);
            align_out(r, b, all->p, all->len, all->nchars, &sp, '>');
        }
        return;
    }
    if (v.t == JV_UNDEF) { /* Undefined.__format__ is object's: only an empty spec */
        jr_fail(r, "unsupported format string passed to Undefined.__format__");
    }
    jr_fail(r, "unsupported format string passed to %s.__format__", jv_type_name(v));
}

static jv format_arg(struct jrender *r, const char *fs, const char *fe, const jv *args, size_t nargs,
                     const struct jdict *kw, const jv *mapobj, size_t *auto_idx, int *mode) {
    /* first part: up to '.' or '[' */
    const char *q = fs;
    while (q < fe && *q != '.' && *q != '[') q++;
    jv v;
    bool digits = q > fs;
    size_t idx = 0;
    for (const char *t = fs; t < q && digits; t++) {
        if (*t < '0' || *t > '9') digits = false;
        else if ((idx = idx * 10 + (size_t)(*t - '0')) > 100000000) jr_fail(r, "Too many decimal digits in format string");
    }
    if (q == fs) {
        if (*mode == 2) jr_fail(r, "cannot switch from manual field specification to automatic field numbering");
        *mode = 1;
        if (*auto_idx >= nargs) jr_fail(r, "tuple index out of range");
        v = args[(*auto_idx)++];
    } else if (digits) {
        if (*mode == 1) jr_fail(r, "cannot switch from automatic field numbering to manual field specification");
        *mode = 2;
        if (idx >= nargs) jr_fail(r, "tuple index out of range");
        v = args[idx];
    } else {
        if (mapobj) { /* format_map(obj): obj[name] */
            if (mapobj->t == JV_UNDEF) jr_fail_undefined(r, *mapobj);
            jr_fail(r, "'%s' object is not subscriptable", jv_type_name(*mapobj));
        }
        if (!kw || !jdict_get_str(kw, fs, (size_t)(q - fs), &v)) {
            jr_push_buf(r);
            jpy_str_repr(r, jr_out(r), fs, (size_t)(q - fs));
            struct jstr *k = jr_pop_buf(r);
            jr_fail(r, "%.*s", (int)k->len, k->p);
        }
    }
    while (q < fe) {
        if (*q == '.') {
            const char *a = ++q;
            while (q < fe && *q != '.' && *q != '[') q++;
            if (q == a) jr_fail(r, "Empty attribute in format string");
            v = jv_getattr(r, v, a, (size_t)(q - a));
        } else if (*q == '[') {
            const char *a = ++q;
            while (q < fe && *q != ']') q++;
            if (q >= fe) jr_fail(r, "Missing ']' in format string");
            if (q == a) jr_fail(r, "Empty attribute in format string");
            bool dig = true;
            int64_t ki = 0;
            for (const char *t = a; t < q && dig; t++) {
                if (*t < '0' || *t > '9' || ki > 100000000000LL) dig = false;
                else ki = ki * 10 + (*t - '0');
            }
            v = jv_getitem(r, v, dig ? jv_int(ki) : jv_str(r, a, (size_t)(q - a)));
            q++;
            if (q < fe && *q != '.' && *q != '[') jr_fail(r, "Only '.' or '[' may follow ']' in format field specifier");
        } else {
            jr_fail(r, "Only '.' or '[' may follow ']' in format field specifier");
        }
    }
    return v;
}

jv jpy_str_format(struct jrender *r, struct jstr *fmt, const jv *args, size_t nargs, const struct jdict *kw,
                  const jv *mapobj) {
    jr_push_buf(r);
    const char *p = fmt->p, *e = fmt->p + fmt->len;
    size_t auto_idx = 0;
    int mode = 0; /* 1 auto, 2 manual */
    while (p < e) {
        char c = *p;
        if (c == '}') {
            if (p + 1 < e && p[1] == '}') { jbuf_putc(r, jr_out(r), '}'); p += 2; continue; }
            jr_fail(r, "Single '}' encountered in format string");
        }
        if (c != '{') { jbuf_putc(r, jr_out(r), c); p++; continue; }
        if (p + 1 < e && p[1] == '{') { jbuf_putc(r, jr_out(r), '{'); p += 2; continue; }
        if (p + 1 >= e) jr_fail(r, "Single '{' encountered in format string");
        p++;
        /* CPython's MarkupIterator: the field name runs to '}', ':' or '!' ('{' is
         * an error, '[' skips to ']'); a format spec counts nested braces */
        const char *fs = p;
        while (p < e) {
            if (*p == '{') jr_fail(r, "unexpected '{' in field name");
            if (*p == '[') {
                while (p < e && *p != ']') p++;
                continue;
            }
            if (*p == '}' || *p == ':' || *p == '!') break;
            p++;
        }
        if (p >= e) jr_fail(r, "expected '}' before end of string");
        const char *name_end = p;
        char conv = 0;
        if (*p == '!') {
            if (++p >= e) jr_fail(r, "end of string while looking for conversion specifier");
            conv = *p++;
            if (p >= e) jr_fail(r, "expected '}' before end of string");
            if (*p != ':' && *p != '}') jr_fail(r, "expected ':' after conversion specifier");
        }
        const char *spec = p, *fend = p;
        if (*p == ':') {
            spec = ++p;
            int depth = 1;
            while (p < e) {
                if (*p == '{') depth++;
                else if (*p == '}' && --depth == 0) break;
                p++;
            }
            if (p >= e) jr_fail(r, "expected '}' before end of string");
            fend = p;
        }
        p++; /* the closing '}' */
        jv v = format_arg(r, fs, name_end, args, nargs, kw, mapobj, &auto_idx, &mode);
        if (conv == 'r' || conv == 'a') {
            jr_push_buf(r);
            jv_write_repr(r, jr_out(r), v, 0);
            v = jv_from_str(jr_pop_buf(r), false);
        } else if (conv == 's') {
            v = jv_to_str(r, v);
        } else if (conv) {
            if ((unsigned char)conv >= 0x20 && (unsigned char)conv < 0x7f) jr_fail(r, "Unknown conversion specifier %c", conv);
            jr_fail(r, "Unknown conversion specifier \\x%x", (unsigned char)conv);
        }
        if (memchr(spec, '{', (size_t)(fend - spec))) { /* nested replacement fields in the spec */
            struct jstr *inner = jstr_wrap(r, spec, (size_t)(fend - spec));
            struct jstr *sp = jpy_str_format(r, inner, args, nargs, kw, mapobj).u.s;
            format_value(r, jr_out(r), v, sp->p, sp->len);
        } else {
            format_value(r, jr_out(r), v, spec, (size_t)(fend - spec));
        }
    }
    return jv_from_str(jr_pop_buf(r), false);
}
