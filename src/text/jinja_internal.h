/* jinja_internal.h — shared declarations of the Jinja subset behind
 * chat_template.h: values (Python semantics), the per-render arena, tokens,
 * the AST, and the entry points of the lexer, parser, evaluator and builtins.
 * Not a public header: only src/text/jinja_*.c and chat_template.c include it.
 *
 * Memory: a compiled template owns one compile arena (AST, constant strings,
 * the name table); it is read-only after chat_template_compile, so many
 * threads may render it at once. Each render owns a render arena for every
 * value it creates and frees it in one go at the end; errors unwind with
 * longjmp to the render entry, which is safe because nothing a render
 * allocates lives outside that arena except the output buffers, which the
 * render state tracks and frees. */
#ifndef VLLMC_JINJA_INTERNAL_H
#define VLLMC_JINJA_INTERNAL_H

#include <jansson.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "text/chat_template.h"

/* ---- arena --------------------------------------------------------------- */

struct jchunk;
struct jarena {
    struct jchunk *head;
    size_t used;  /* bytes handed out, for the memory limit */
    size_t limit; /* 0 = unlimited */
};
/* Returns NULL when the limit would be exceeded (callers turn that into an
 * error); aborts only when malloc itself fails, like xmalloc. */
void *jarena_alloc(struct jarena *a, size_t n);
void jarena_free(struct jarena *a);

/* ---- values ---------------------------------------------------------------- */

enum jv_type {
    JV_UNDEF = 0, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR,
    JV_LIST,  /* list, tuple, generator, dict views: see enum jlist_kind */
    JV_DICT,
    JV_OBJ,   /* namespace, macro, builtin, bound method, loop, range, ... */
};

enum jlist_kind { LK_LIST = 0, LK_TUPLE, LK_GEN, LK_KEYS, LK_VALUES, LK_ITEMS };

#define JVF_MARKUP 1 /* a str that is markupsafe.Markup (the `safe` filter) */

struct jstr {
    const char *p; /* UTF-8, not NUL-terminated in general */
    size_t len;    /* bytes */
    size_t nchars; /* code points (equals len for ASCII) */
};

typedef struct jv {
    uint8_t t;  /* enum jv_type */
    uint8_t f;  /* JVF_* for strings, enum jlist_kind for lists */
    uint16_t sub; /* JV_LIST tuples: 1 = groupby's (grouper, list) named tuple */
    uint32_t pad2_;
    union {
        int64_t i;  /* JV_BOOL (0/1), JV_INT */
        double d;   /* JV_FLOAT */
        struct jstr *s;
        struct jlist *l;
        struct jdict *dict;
        struct jobj *o;
        struct jundef *un; /* JV_UNDEF: may be NULL (no information) */
    } u;
} jv;

struct jthunk;
struct jlist {
    size_t n, cap;
    size_t pos; /* LK_GEN: items before pos were consumed (generators are one-shot) */
    jv *v;
    struct jthunk *thunk; /* LK_GEN: the filter call still to run (Jinja's filters are lazy generators) */
};

struct jdict {
    uint32_t n, cap;
    jv *k, *v;
    uint32_t *idx; /* open addressing (slot = entry + 1), built once n grows past a few */
    uint32_t icap;
};

enum jundef_kind { JU_PLAIN = 0, JU_SECURITY };
struct jundef {
    uint8_t kind;     /* enum jundef_kind: which error using it raises */
    const char *hint; /* message when set */
    jv obj;           /* the object the attribute/item was missing from (JV_UNDEF: none) */
    jv name;          /* the name or key */
};

enum jobj_kind {
    JO_NAMESPACE = 1, JO_MACRO, JO_BUILTIN, JO_METHOD, JO_LOOP, JO_RANGE, JO_CYCLER, JO_JOINER,
};

struct jnode;
struct jscope;
struct jloop;

struct jobj {
    uint8_t kind; /* enum jobj_kind */
    union {
        struct jdict *ns;                                  /* JO_NAMESPACE */
        struct { const struct jnode *node; struct jscope *scope; bool is_caller; } macro;
        struct { int id; } builtin;                        /* JO_BUILTIN: enum jbuiltin */
        struct { int id; jv self; } method;                /* JO_METHOD: enum jmethod */
        struct jloop *loop;                                /* JO_LOOP */
        struct { int64_t start, stop, step; } range;       /* JO_RANGE */
        struct { struct jlist *items; size_t pos; } cycler; /* JO_CYCLER */
        struct { struct jstr *sep; bool used; } joiner;    /* JO_JOINER */
    } u;
};

struct jloop {
    struct jlist *items; /* materialized iterable */
    size_t index0;
    int64_t depth0;
    bool has_changed;
    jv last_changed;     /* tuple of the last loop.changed() arguments */
};

/* ---- constructors and Python semantics (jinja_value.c) ---------------------- */

struct jrender;

static inline jv jv_undef(void) { jv v = { .t = JV_UNDEF }; return v; }
static inline jv jv_none(void) { jv v = { .t = JV_NONE }; return v; }
static inline jv jv_bool(bool b) { jv v = { .t = JV_BOOL }; v.u.i = b; return v; }
static inline jv jv_int(int64_t i) { jv v = { .t = JV_INT }; v.u.i = i; return v; }
static inline jv jv_float(double d) { jv v = { .t = JV_FLOAT }; v.u.d = d; return v; }
static inline jv jv_from_str(struct jstr *s, bool markup) {
    jv v = { .t = JV_STR, .f = markup ? JVF_MARKUP : 0 }; v.u.s = s; return v;
}
static inline jv jv_from_list(struct jlist *l, int kind) { jv v = { .t = JV_LIST, .f = (uint8_t)kind }; v.u.l = l; return v; }
static inline jv jv_from_dict(struct jdict *d) { jv v = { .t = JV_DICT }; v.u.dict = d; return v; }
static inline jv jv_from_obj(struct jobj *o) { jv v = { .t = JV_OBJ }; v.u.o = o; return v; }
static inline bool jv_is_num(jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }
static inline bool jv_is_obj(jv v, int kind) { return v.t == JV_OBJ && v.u.o->kind == kind; }

void *jr_alloc(struct jrender *r, size_t n); /* arena alloc or render error */
struct jstr *jstr_new(struct jrender *r, const char *p, size_t len);      /* copies */
struct jstr *jstr_wrap(struct jrender *r, const char *p, size_t len);     /* no copy */
jv jv_str(struct jrender *r, const char *p, size_t len);                  /* copies */
jv jv_cstr(struct jrender *r, const char *s);
struct jlist *jlist_new(struct jrender *r, size_t cap);
void jlist_push(struct jrender *r, struct jlist *l, jv x);
jv jv_list_new(struct jrender *r, size_t cap, int kind);
struct jdict *jdict_new(struct jrender *r, size_t cap);
void jdict_set(struct jrender *r, struct jdict *d, jv key, jv val); /* key must be hashable */
bool jdict_get(struct jrender *r, const struct jdict *d, jv key, jv *out);
bool jdict_get_str(const struct jdict *d, const char *key, size_t klen, jv *out);
struct jobj *jobj_new(struct jrender *r, int kind);
jv jv_undef_info(struct jrender *r, const char *hint, jv obj, jv name, int kind);
jv jv_from_json(struct jrender *r, const json_t *j, int depth);

size_t jutf8_count(const char *p, size_t len);
/* Decode one code point at p[0..len); invalid bytes decode as themselves
 * (Latin-1 style), one byte each, so every byte string is walkable. */
uint32_t jutf8_decode(const char *p, size_t len, size_t *adv);
size_t jutf8_encode(uint32_t cp, char *out); /* out >= 4 bytes */
size_t jutf8_offset(const struct jstr *s, size_t char_index); /* byte offset of a code point */
bool jpy_isspace(uint32_t cp);

bool jv_truthy(struct jrender *r, jv v);
bool jv_eq(struct jrender *r, jv a, jv b);
int jv_cmp(struct jrender *r, jv a, jv b, const char *op); /* <0, 0, >0 or render error */
uint64_t jv_hash(struct jrender *r, jv v);                  /* render error if unhashable */
const char *jv_type_name(jv v);                             /* Python's type name */
const char *jv_object_type_repr(jv v);                      /* Jinja's object_type_repr */

/* Output buffers (malloc'd, tracked by the render state). */
struct jbuf { char *p; size_t n, cap; };
void jbuf_put(struct jrender *r, struct jbuf *b, const char *p, size_t n);
void jbuf_putc(struct jrender *r, struct jbuf *b, char c);
void jbuf_printf(struct jrender *r, struct jbuf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

void jv_write_str(struct jrender *r, struct jbuf *b, jv v);  /* Python str(v) */
void jv_write_repr(struct jrender *r, struct jbuf *b, jv v, int depth); /* Python repr(v) */
void jpy_float_repr(double d, char out[40]);
void jpy_str_repr(struct jrender *r, struct jbuf *b, const char *p, size_t len);
jv jv_to_str(struct jrender *r, jv v);          /* str(v) as a JV_STR (markup kept) */
struct jstr *jv_to_jstr(struct jrender *r, jv v);

struct json_opts { const char *indent; size_t indent_len; bool has_indent; const char *item_sep, *key_sep;
                   size_t item_sep_len, key_sep_len; bool sort_keys; bool ensure_ascii; };
void jv_write_json(struct jrender *r, struct jbuf *b, jv v, const struct json_opts *o, int level);

/* Sequence protocol: lists, strings (code points), dict keys, ranges.
 * jv_iterate materializes anything iterable into a list (render error if not
 * iterable; undefined iterates as empty). Generators are consumed. */
struct jlist *jv_iterate(struct jrender *r, jv v);
bool jv_len(struct jrender *r, jv v, int64_t *out); /* false if no len() */
int64_t jv_len_or_fail(struct jrender *r, jv v);

/* Arithmetic and operators (Python semantics, render errors as Python raises). */
enum jbinop { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW };
jv jv_binop(struct jrender *r, int op, jv a, jv b);
jv jv_neg(struct jrender *r, jv a, bool neg);
bool jv_contains(struct jrender *r, jv container, jv item);
jv jv_getattr(struct jrender *r, jv obj, const char *name, size_t nlen);
jv jv_getitem(struct jrender *r, jv obj, jv key);
jv jv_slice(struct jrender *r, jv obj, jv start, jv stop, jv step);
jv jpy_percent_format(struct jrender *r, jv fmt, jv args);
jv jpy_str_format(struct jrender *r, struct jstr *fmt, const jv *args, size_t nargs, const struct jdict *kw,
                  const jv *mapobj); /* mapobj: format_map's non-dict argument, or NULL */

/* Unicode case helpers used by str methods and filters. */
uint32_t juc_lower(uint32_t c);
uint32_t juc_upper(uint32_t c);
uint32_t juc_title(uint32_t c);
bool juc_is_cased(uint32_t c);
bool juc_is_lower(uint32_t c);
bool juc_is_upper(uint32_t c);
bool juc_is_alnum(uint32_t c);
bool juc_is_alpha(uint32_t c);
bool juc_is_digit(uint32_t c);
bool juc_is_decimal(uint32_t c);
bool juc_is_numeric(uint32_t c);
bool juc_is_printable(uint32_t c);

/* ---- render state ------------------------------------------------------------ */

#define JR_MAX_BUFS 512

struct jrender {
    const struct chat_template *ct;
    jmp_buf jb;
    char *err;
    size_t errlen;
    int err_code;            /* -2 render error */
    struct jarena arena;
    struct jbuf bufs[JR_MAX_BUFS];
    int nbufs;               /* bufs[nbufs-1] is the current output */
    jv *ctxvals;             /* [ct->nnames]: context value per name id */
    uint8_t *ctxdone;        /* [ct->nnames]: ctxvals[i] looked up */
    uint8_t *ctxfound;       /* [ct->nnames]: ... and present in ctx */
    const json_t *ctx;       /* the JSON object passed to render */
    struct jscope *top;
    uint64_t loop_iters;
    int call_depth;
    int value_depth;         /* repr/json recursion */
    int64_t now;             /* strftime_now time, seconds since the epoch */
    bool now_fixed;
    int break_flag;          /* 1 break, 2 continue */
    uint64_t work;           /* item-level work, bounded by 64 * max_loop_iters */
    const char *stack_base;  /* address near the render entry, for the stack budget */
    size_t stack_budget;     /* bytes of stack this render may use below stack_base */
};

#define JR_STACK_BUDGET ((size_t)2 << 20) /* at most; less when the thread's stack is smaller */

_Noreturn void jr_fail(struct jrender *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
_Noreturn void jr_fail_undefined(struct jrender *r, jv u);
void jr_work(struct jrender *r, uint64_t n);
void jr_check_stack(struct jrender *r); /* render error when the stack budget is spent */

/* ---- lexer and parser (jinja_parse.c) -------------------------------------- */

enum jnode_kind {
    /* expressions */
    N_CONST = 1, N_NAME, N_GETATTR, N_GETITEM, N_SLICE, N_CALL, N_FILTER, N_TEST,
    N_BINOP, N_NEG, N_POS, N_NOT, N_AND, N_OR, N_COMPARE, N_CONCAT, N_CONDEXPR,
    N_LIST, N_TUPLE, N_DICT, N_NSREF,
    /* statements */
    N_OUTPUT, N_DATA, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK,
    N_FILTERBLOCK, N_WITH, N_BREAK, N_CONTINUE, N_SCOPEBODY,
};

enum jcmp { CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_IN, CMP_NOTIN };

struct jnodes { struct jnode **v; uint32_t n; };

struct jkwarg { uint32_t name; const struct jstr *sname; struct jnode *value; };

struct jcallargs {
    struct jnodes args;
    struct jkwarg *kw;
    uint32_t nkw;
    struct jnode *dyn_args, *dyn_kwargs;
};

struct jnode {
    uint8_t kind;
    uint8_t op;      /* N_BINOP: enum jbinop */
    uint32_t line, col;
    union {
        jv cval;                                            /* N_CONST (strings in compile arena) */
        struct { uint32_t id; } name;                       /* N_NAME */
        struct { struct jnode *obj; struct jstr *attr; } getattr;
        struct { struct jnode *obj, *key; } getitem;
        struct { struct jnode *start, *stop, *step; } slice;
        struct { struct jnode *fn; struct jcallargs a; } call;
        struct { struct jnode *arg; int id; struct jstr *fname; struct jcallargs a; } filter; /* also N_TEST */
        struct { struct jnode *l, *r; } bin;                /* BINOP, AND, OR */
        struct { struct jnode *x; } un;                     /* NEG, POS, NOT */
        struct { struct jnode *first; struct jnode **rhs; uint8_t *ops; uint32_t n; } cmp;
        struct jnodes items;                                /* CONCAT, LIST, TUPLE, OUTPUT, SCOPEBODY */
        struct { struct jnodes keys, vals; } dict;
        struct { struct jnode *test, *a, *b; } cond;        /* N_CONDEXPR (b may be NULL) */
        struct { uint32_t id; struct jstr *attr; } nsref;
        struct { struct jstr *text; } data;
        struct { struct jnodes tests; struct jnodes bodies; struct jnode *else_; } ifs; /* bodies are SCOPEBODY-less lists */
        struct { struct jnode *target, *iter, *test, *body, *else_; bool recursive; bool uses_loop; } forl;
        struct { struct jnode *target, *value; } set;
        struct { struct jnode *target, *filter, *body; } setblock;
        struct { uint32_t name; const struct jstr *sname; struct jnode **params; struct jnode **defaults;
                 uint32_t nparams, ndefaults; struct jnode *body; bool uses_caller, uses_varargs, uses_kwargs;
                 bool explicit_caller; } macro;                /* also the caller of N_CALLBLOCK */
        struct { struct jnode *call, *macro; } callblock;
        struct { struct jnode *filter, *body; } filterblock;
        struct { struct jnodes targets, values; struct jnode *body; } with;
    } u;
};

/* Builtin globals, methods, filters and tests (jinja_builtins.c). */
int jfilter_lookup(const char *name, size_t len); /* -1 unknown */
int jtest_lookup(const char *name, size_t len);   /* -1 unknown */
int jglobal_lookup(const char *name, size_t len); /* -1 none */

struct chat_template {
    struct jarena arena;
    struct jnode *root; /* N_SCOPEBODY */
    struct jstr **names; /* interned identifiers by id */
    uint32_t nnames, capnames;
    uint32_t id_loop, id_caller, id_varargs, id_kwargs; /* name ids of the special names */
    int *global_of;      /* [nnames]: builtin global id or -1 */
    bool mentions_content; /* the source contains "content" (continue_final_message check) */
    struct chat_template_limits lim;
    bool now_fixed;
    int64_t now;
};

/* Returns 0 or -1 with err "line:col: message". */
int jinja_parse(struct chat_template *ct, const char *src, size_t len, char *err, size_t errlen);

/* ---- evaluator (jinja_eval.c) ---------------------------------------------- */

jv jeval(struct jrender *r, struct jscope *sc, const struct jnode *n);
void jexec_body(struct jrender *r, struct jscope *sc, const struct jnode *body);
jv jcall(struct jrender *r, jv fn, const jv *args, size_t nargs, const struct jdict *kw);
jv jcall_macro(struct jrender *r, struct jobj *m, const jv *args, size_t nargs, const struct jdict *kw, jv caller);
struct jbuf *jr_out(struct jrender *r);
void jr_push_buf(struct jrender *r);
struct jstr *jr_pop_buf(struct jrender *r);
void jscope_set(struct jrender *r, struct jscope *sc, uint32_t id, jv v);
struct jscope *jscope_new(struct jrender *r, struct jscope *parent);

/* Filters and tests: called with the evaluated value, positional args and kwargs. */
jv jfilter_call(struct jrender *r, int id, jv value, const jv *args, size_t nargs, const struct jdict *kw);
void jgen_force(struct jrender *r, jv gen); /* run a lazy generator's filter now (no-op if done) */
bool jtest_call(struct jrender *r, int id, jv value, const jv *args, size_t nargs, const struct jdict *kw);
jv jbuiltin_call(struct jrender *r, int id, const jv *args, size_t nargs, const struct jdict *kw);
jv jmethod_call(struct jrender *r, int id, jv self, const jv *args, size_t nargs, const struct jdict *kw);
int jmethod_lookup(jv obj, const char *name, size_t len); /* -1 none */
const char *jmethod_name(int id);
const char *jbuiltin_name(int id);
bool jmethod_is_mutating(jv obj, const char *name, size_t len);

#endif
