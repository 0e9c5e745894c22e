/* jinja_eval.c — the tree-walking evaluator of the Jinja subset: scopes as
 * Jinja's compiler resolves them, expressions, statements, macros and call
 * blocks, loops with `loop`, and the render-time limits.
 *
 * Scoping (what Jinja's idtracking produces, observably): the template's top
 * level is one scope (sets there are visible everywhere after, macros see
 * them at call time); a for body is a fresh scope per iteration whose sets
 * vanish after the loop; if/elif/else share the enclosing scope; macro calls,
 * call-block bodies, with, filter blocks and block sets get their own scope.
 * Name lookup: scope chain, then the render variables, then the globals.
 *
 * Limits: loop iterations and macro calls count against max_loop_iters; item
 * level work (iteration, sorting, searching) against 64x that; macro
 * recursion against max_call_depth and a stack budget; memory and output in
 * jinja_value.c. Errors longjmp to the render entry in chat_template.c. */
#define _GNU_SOURCE /* memmem, strftime_l, asprintf */
#include "text/jinja_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

struct jscope {
    struct jscope *parent;
    uint32_t n, cap;
    uint32_t *ids;
    jv *vals;
};

struct jscope *jscope_new(struct jrender *r, struct jscope *parent) {
    struct jscope *s = jr_alloc(r, sizeof *s);
    memset(s, 0, sizeof *s);
    s->parent = parent;
    return s;
}

void jscope_set(struct jrender *r, struct jscope *sc, uint32_t id, jv v) {
    for (uint32_t i = 0; i < sc->n; i++)
        if (sc->ids[i] == id) { sc->vals[i] = v; return; }
    if (sc->n == sc->cap) {
        uint32_t cap = sc->cap ? sc->cap * 2 : 8;
        uint32_t *ids = jr_alloc(r, cap * sizeof *ids);
        jv *vals = jr_alloc(r, cap * sizeof *vals);
        if (sc->n) { memcpy(ids, sc->ids, sc->n * sizeof *ids); memcpy(vals, sc->vals, sc->n * sizeof *vals); }
        sc->ids = ids;
        sc->vals = vals;
        sc->cap = cap;
    }
    sc->ids[sc->n] = id;
    sc->vals[sc->n] = v;
    sc->n++;
}

static bool scope_get(const struct jscope *sc, uint32_t id, jv *out) {
    for (; sc; sc = sc->parent)
        for (uint32_t i = 0; i < sc->n; i++)
            if (sc->ids[i] == id) { *out = sc->vals[i]; return true; }
    return false;
}

/* ---- errors, buffers, limits -------------------------------------------------------- */

_Noreturn void jr_fail(struct jrender *r, const char *fmt, ...) {
    if (r->err && r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errlen, fmt, ap);
        va_end(ap);
    }
    r->err_code = -2;
    longjmp(r->jb, 1);
}

_Noreturn void jr_fail_undefined(struct jrender *r, jv u) {
    struct jundef *d = u.u.un;
    if (!d) jr_fail(r, "Undefined is undefined");
    if (d->hint) jr_fail(r, "%s", d->hint);
    jr_push_buf(r);
    struct jbuf *b = jr_out(r);
    if (d->obj.t == JV_UNDEF && !(d->obj.u.un)) {
        jv_write_repr(r, b, d->name, 0);
        jbuf_put(r, b, " is undefined", 13);
    } else if (d->name.t != JV_STR) {
        const char *tr = jv_object_type_repr(d->obj);
        jbuf_put(r, b, tr, strlen(tr));
        jbuf_put(r, b, " has no element ", 16);
        jv_write_repr(r, b, d->name, 0);
    } else {
        const char *tr = jv_object_type_repr(d->obj);
        jpy_str_repr(r, b, tr, strlen(tr));
        jbuf_put(r, b, " has no attribute ", 18);
        jv_write_repr(r, b, d->name, 0);
    }
    struct jstr *m = jr_pop_buf(r);
    jr_fail(r, "%.*s", (int)m->len, m->p);
}

struct jbuf *jr_out(struct jrender *r) { return &r->bufs[r->nbufs - 1]; }

void jr_push_buf(struct jrender *r) {
    if (r->nbufs >= JR_MAX_BUFS) jr_fail(r, "template nested too deeply");
    struct jbuf *b = &r->bufs[r->nbufs++];
    b->p = NULL;
    b->n = b->cap = 0;
}

struct jstr *jr_pop_buf(struct jrender *r) {
    struct jbuf *b = &r->bufs[r->nbufs - 1];
    struct jstr *s = jstr_new(r, b->p ? b->p : "", b->n);
    free(b->p);
    b->p = NULL;
    r->nbufs--;
    return s;
}

static void count_iter(struct jrender *r) {
    if (++r->loop_iters > r->ct->lim.max_loop_iters)
        jr_fail(r, "template exceeded %llu loop iterations", (unsigned long long)r->ct->lim.max_loop_iters);
}

void jr_work(struct jrender *r, uint64_t n) {
    r->work += n;
    if (r->work > r->ct->lim.max_loop_iters * 64)
        jr_fail(r, "template exceeded its work budget (%llu steps)", (unsigned long long)r->ct->lim.max_loop_iters * 64);
}

void jr_check_stack(struct jrender *r) {
    char probe;
    uintptr_t here = (uintptr_t)&probe;
    uintptr_t base = (uintptr_t)r->stack_base;
    size_t used = base > here ? base - here : here - base;
    if (used > r->stack_budget) jr_fail(r, "maximum recursion depth exceeded");
}

/* ---- names -------------------------------------------------------------------------- */

static jv lookup(struct jrender *r, struct jscope *sc, uint32_t id) {
    jv v;
    if (scope_get(sc, id, &v)) return v;
    const struct chat_template *ct = r->ct;
    if (!r->ctxdone[id]) {
        r->ctxdone[id] = 1;
        r->ctxvals[id] = jv_undef();
        r->ctxfound[id] = 0;
        if (r->ctx) {
            const json_t *j = json_object_getn(r->ctx, ct->names[id]->p, ct->names[id]->len);
            if (j) {
                r->ctxvals[id] = jv_from_json(r, j, 0);
                r->ctxfound[id] = 1;
            }
        }
    }
    if (r->ctxfound[id]) return r->ctxvals[id];
    if (ct->global_of[id] >= 0) {
        struct jobj *o = jobj_new(r, JO_BUILTIN);
        o->u.builtin.id = ct->global_of[id];
        return jv_from_obj(o);
    }
    return jv_undef_info(r, NULL, jv_undef(), jv_from_str((struct jstr *)ct->names[id], false), JU_PLAIN);
}

/* ---- expressions ----------------------------------------------------------------------- */

struct argv { jv *v; size_t n; struct jdict *kw; };

static void eval_args(struct jrender *r, struct jscope *sc, const struct jcallargs *a, struct argv *out) {
    size_t n = a->args.n;
    struct jlist *dyn = NULL;
    if (a->dyn_args) {
        jv d = jeval(r, sc, a->dyn_args);
        dyn = jv_iterate(r, d);
        n += dyn->n;
    }
    out->v = n ? jr_alloc(r, n * sizeof(jv)) : NULL;
    out->n = 0;
    for (uint32_t i = 0; i < a->args.n; i++) out->v[out->n++] = jeval(r, sc, a->args.v[i]);
    if (dyn)
        for (size_t i = 0; i < dyn->n; i++) out->v[out->n++] = dyn->v[i];
    out->kw = NULL;
    if (a->nkw || a->dyn_kwargs) {
        out->kw = jdict_new(r, a->nkw);
        for (uint32_t i = 0; i < a->nkw; i++)
            jdict_set(r, out->kw, jv_from_str((struct jstr *)a->kw[i].sname, false), jeval(r, sc, a->kw[i].value));
        if (a->dyn_kwargs) {
            jv d = jeval(r, sc, a->dyn_kwargs);
            if (d.t != JV_DICT) jr_fail(r, "argument after ** must be a mapping, not %s", jv_type_name(d));
            for (uint32_t i = 0; i < d.u.dict->n; i++) {
                if (d.u.dict->k[i].t != JV_STR) jr_fail(r, "keywords must be strings");
                jdict_set(r, out->kw, d.u.dict->k[i], d.u.dict->v[i]);
            }
        }
    }
}

/* A filter node applied to `base` (the node's own argument when has_base is false). */
static jv eval_filter(struct jrender *r, struct jscope *sc, const struct jnode *n, jv base, bool has_base) {
    jv value;
    const struct jnode *a = n->u.filter.arg;
    if (!a) value = base;
    else if (has_base && a->kind == N_FILTER) value = eval_filter(r, sc, a, base, true);
    else value = jeval(r, sc, a);
    struct argv av;
    eval_args(r, sc, &n->u.filter.a, &av);
    if (n->u.filter.id < 0)
        jr_fail(r, "No filter named '%.*s' found.", (int)n->u.filter.fname->len, n->u.filter.fname->p);
    return jfilter_call(r, n->u.filter.id, value, av.v, av.n, av.kw);
}

static jv compare(struct jrender *r, int op, jv a, jv b) {
    switch (op) {
    case CMP_EQ: return jv_bool(jv_eq(r, a, b));
    case CMP_NE: return jv_bool(!jv_eq(r, a, b));
    case CMP_LT: { int c = jv_cmp(r, a, b, "<"); return jv_bool(c == -1); }
    case CMP_LE: { int c = jv_cmp(r, a, b, "<="); return jv_bool(c == -1 || c == 0); }
    case CMP_GT: { int c = jv_cmp(r, a, b, ">"); return jv_bool(c == 1); }
    case CMP_GE: { int c = jv_cmp(r, a, b, ">="); return jv_bool(c == 1 || c == 0); }
    case CMP_IN: return jv_bool(jv_contains(r, b, a));
    case CMP_NOTIN: return jv_bool(!jv_contains(r, b, a));
    }
    return jv_bool(false);
}

jv jeval(struct jrender *r, struct jscope *sc, const struct jnode *n) {
    switch (n->kind) {
    case N_CONST: return n->u.cval;
    case N_NAME: return lookup(r, sc, n->u.name.id);
    case N_GETATTR: {
        jv o = jeval(r, sc, n->u.getattr.obj);
        return jv_getattr(r, o, n->u.getattr.attr->p, n->u.getattr.attr->len);
    }
    case N_GETITEM: {
        jv o = jeval(r, sc, n->u.getitem.obj);
        const struct jnode *k = n->u.getitem.key;
        if (k->kind == N_SLICE) {
            jv a = k->u.slice.start ? jeval(r, sc, k->u.slice.start) : jv_none();
            jv b = k->u.slice.stop ? jeval(r, sc, k->u.slice.stop) : jv_none();
            jv c = k->u.slice.step ? jeval(r, sc, k->u.slice.step) : jv_none();
            return jv_slice(r, o, a, b, c);
        }
        return jv_getitem(r, o, jeval(r, sc, k));
    }
    case N_SLICE: jr_fail(r, "slices are only valid as subscripts");
    case N_CALL: {
        jv fn = jeval(r, sc, n->u.call.fn);
        struct argv av;
        eval_args(r, sc, &n->u.call.a, &av);
        return jcall(r, fn, av.v, av.n, av.kw);
    }
    case N_FILTER: return eval_filter(r, sc, n, jv_undef(), false);
    case N_TEST: {
        jv value = jeval(r, sc, n->u.filter.arg);
        struct argv av;
        eval_args(r, sc, &n->u.filter.a, &av);
        if (n->u.filter.id < 0)
            jr_fail(r, "No test named '%.*s' found.", (int)n->u.filter.fname->len, n->u.filter.fname->p);
        return jv_bool(jtest_call(r, n->u.filter.id, value, av.v, av.n, av.kw));
    }
    case N_BINOP: {
        jv a = jeval(r, sc, n->u.bin.l), b = jeval(r, sc, n->u.bin.r);
        return jv_binop(r, n->op, a, b);
    }
    case N_NEG: return jv_neg(r, jeval(r, sc, n->u.un.x), true);
    case N_POS: return jv_neg(r, jeval(r, sc, n->u.un.x), false);
    case N_NOT: return jv_bool(!jv_truthy(r, jeval(r, sc, n->u.un.x)));
    case N_AND: {
        jv a = jeval(r, sc, n->u.bin.l);
        return jv_truthy(r, a) ? jeval(r, sc, n->u.bin.r) : a;
    }
    case N_OR: {
        jv a = jeval(r, sc, n->u.bin.l);
        return jv_truthy(r, a) ? a : jeval(r, sc, n->u.bin.r);
    }
    case N_COMPARE: {
        jv a = jeval(r, sc, n->u.cmp.first), res = jv_bool(true);
        for (uint32_t i = 0; i < n->u.cmp.n; i++) {
            jv b = jeval(r, sc, n->u.cmp.rhs[i]);
            res = compare(r, n->u.cmp.ops[i], a, b);
            if (!jv_truthy(r, res)) return res;
            a = b;
        }
        return res;
    }
    case N_CONCAT: {
        jr_push_buf(r);
        for (uint32_t i = 0; i < n->u.items.n; i++) {
            jv v = jeval(r, sc, n->u.items.v[i]);
            jv_write_str(r, jr_out(r), v);
        }
        return jv_from_str(jr_pop_buf(r), false);
    }
    case N_CONDEXPR:
        if (jv_truthy(r, jeval(r, sc, n->u.cond.test))) return jeval(r, sc, n->u.cond.a);
        if (n->u.cond.b) return jeval(r, sc, n->u.cond.b);
        {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "the inline if-expression on line %u evaluated to false and no else section was defined.", n->line);
            struct jstr *m = jstr_new(r, msg, strlen(msg));
            return jv_undef_info(r, m->p, jv_undef(), jv_undef(), JU_PLAIN);
        }
    case N_LIST: case N_TUPLE: {
        struct jlist *l = jlist_new(r, n->u.items.n);
        for (uint32_t i = 0; i < n->u.items.n; i++) l->v[l->n++] = jeval(r, sc, n->u.items.v[i]);
        return jv_from_list(l, n->kind == N_LIST ? LK_LIST : LK_TUPLE);
    }
    case N_DICT: {
        struct jdict *d = jdict_new(r, n->u.dict.keys.n);
        for (uint32_t i = 0; i < n->u.dict.keys.n; i++) {
            jv k = jeval(r, sc, n->u.dict.keys.v[i]);
            jv v = jeval(r, sc, n->u.dict.vals.v[i]);
            jdict_set(r, d, k, v);
        }
        return jv_from_dict(d);
    }
    case N_NSREF: /* only valid as an assignment target; as a value it reads like getattr */
        return jv_getattr(r, lookup(r, sc, n->u.nsref.id), n->u.nsref.attr->p, n->u.nsref.attr->len);
    default:
        jr_fail(r, "internal error: node %d is not an expression", n->kind);
    }
}

/* ---- calls ------------------------------------------------------------------------------- */

jv jcall_macro(struct jrender *r, struct jobj *m, const jv *args, size_t nargs, const struct jdict *kw0, jv caller) {
    const struct jnode *node = m->u.macro.node;
    const struct chat_template *ct = r->ct;
    if (r->call_depth >= ct->lim.max_call_depth) jr_fail(r, "maximum recursion depth exceeded");
    count_iter(r);
    jr_check_stack(r);
    const char *mname = m->u.macro.is_caller ? "caller" : node->u.macro.sname->p;
    int mnlen = m->u.macro.is_caller ? 6 : (int)node->u.macro.sname->len;
    uint32_t np = node->u.macro.nparams;
    struct jscope *sc = jscope_new(r, m->u.macro.scope);
    /* kwargs we may consume */
    struct jdict *kw = jdict_new(r, kw0 ? kw0->n : 0);
    if (kw0)
        for (uint32_t i = 0; i < kw0->n; i++) jdict_set(r, kw, kw0->k[i], kw0->v[i]);
    if (caller.t != JV_UNDEF || caller.u.un) jdict_set(r, kw, jv_cstr(r, "caller"), caller);
    bool *missing = jr_alloc(r, (np + 1) * sizeof(bool));
    size_t npos = MIN(nargs, (size_t)np);
    bool found_caller = false;
    for (uint32_t i = 0; i < np; i++) {
        uint32_t id = node->u.macro.params[i]->u.name.id;
        missing[i] = false;
        if (i < npos) { jscope_set(r, sc, id, args[i]); continue; }
        const struct jstr *pn = ct->names[id];
        bool got = false;
        for (uint32_t k = 0; k < kw->n; k++)
            if (kw->k[k].t == JV_STR && kw->k[k].u.s->len == pn->len && memcmp(kw->k[k].u.s->p, pn->p, pn->len) == 0) {
                jscope_set(r, sc, id, kw->v[k]);
                /* remove entry k */
                memmove(kw->k + k, kw->k + k + 1, (kw->n - k - 1) * sizeof(jv));
                memmove(kw->v + k, kw->v + k + 1, (kw->n - k - 1) * sizeof(jv));
                kw->n--;
                kw->idx = NULL;
                got = true;
                break;
            }
        if (id == ct->id_caller) found_caller = true;
        if (!got) missing[i] = true;
    }
    if (npos == np) found_caller = node->u.macro.explicit_caller;
    if (node->u.macro.uses_caller && !found_caller) {
        jv c = jv_none();
        bool have = false;
        for (uint32_t k = 0; k < kw->n; k++)
            if (kw->k[k].t == JV_STR && kw->k[k].u.s->len == 6 && memcmp(kw->k[k].u.s->p, "caller", 6) == 0) {
                c = kw->v[k];
                have = true;
                memmove(kw->k + k, kw->k + k + 1, (kw->n - k - 1) * sizeof(jv));
                memmove(kw->v + k, kw->v + k + 1, (kw->n - k - 1) * sizeof(jv));
                kw->n--;
                kw->idx = NULL;
                break;
            }
        if (!have || c.t == JV_NONE)
            c = jv_undef_info(r, "No caller defined", jv_undef(), jv_undef(), JU_PLAIN);
        jscope_set(r, sc, ct->id_caller, c);
    }
    if (node->u.macro.uses_kwargs) {
        jscope_set(r, sc, ct->id_kwargs, jv_from_dict(kw));
    } else if (kw->n) {
        for (uint32_t k = 0; k < kw->n; k++)
            if (kw->k[k].t == JV_STR && kw->k[k].u.s->len == 6 && memcmp(kw->k[k].u.s->p, "caller", 6) == 0)
                jr_fail(r, "macro '%.*s' was invoked with two values for the special caller argument. This is most likely a bug.",
                        mnlen, mname);
        jr_fail(r, "macro '%.*s' takes no keyword argument '%.*s'", mnlen, mname, (int)kw->k[0].u.s->len, kw->k[0].u.s->p);
    }
    if (node->u.macro.uses_varargs) {
        struct jlist *l = jlist_new(r, nargs > np ? nargs - np : 0);
        for (size_t i = np; i < nargs; i++) l->v[l->n++] = args[i];
        jscope_set(r, sc, ct->id_varargs, jv_from_list(l, LK_TUPLE));
    } else if (nargs > np) {
        jr_fail(r, "macro '%.*s' takes not more than %u argument(s)", mnlen, mname, np);
    }
    r->call_depth++;
    /* defaults are evaluated inside the macro, in order */
    for (uint32_t i = 0; i < np; i++) {
        if (!missing[i]) continue;
        uint32_t id = node->u.macro.params[i]->u.name.id;
        int64_t di = (int64_t)i - (int64_t)(np - node->u.macro.ndefaults);
        if (di >= 0) {
            jscope_set(r, sc, id, jeval(r, sc, node->u.macro.defaults[di]));
        } else {
            char msg[300];
            snprintf(msg, sizeof msg, "parameter '%.*s' was not provided", (int)MIN(ct->names[id]->len, 200u), ct->names[id]->p);
            jscope_set(r, sc, id, jv_undef_info(r, jstr_new(r, msg, strlen(msg))->p, jv_undef(), jv_undef(), JU_PLAIN));
        }
    }
    jr_push_buf(r);
    int saved_break = r->break_flag;
    r->break_flag = 0;
    jexec_body(r, sc, node->u.macro.body);
    r->break_flag = saved_break;
    r->call_depth--;
    return jv_from_str(jr_pop_buf(r), false);
}

jv jcall(struct jrender *r, jv fn, const jv *args, size_t nargs, const struct jdict *kw) {
    if (fn.t == JV_UNDEF) jr_fail_undefined(r, fn);
    if (fn.t == JV_OBJ) {
        struct jobj *o = fn.u.o;
        switch (o->kind) {
        case JO_MACRO: return jcall_macro(r, o, args, nargs, kw, jv_undef());
        case JO_BUILTIN: return jbuiltin_call(r, o->u.builtin.id, args, nargs, kw);
        case JO_METHOD: return jmethod_call(r, o->u.method.id, o->u.method.self, args, nargs, kw);
        case JO_JOINER:
            if (nargs || (kw && kw->n)) jr_fail(r, "__call__() takes 1 positional argument but %zu were given", nargs + 1);
            if (!o->u.joiner.used) { o->u.joiner.used = true; return jv_cstr(r, ""); }
            return jv_from_str(o->u.joiner.sep, false);
        default: break;
        }
    }
    jr_fail(r, "'%s' object is not callable", jv_type_name(fn));
}

/* ---- statements ------------------------------------------------------------------------ */

static void assign(struct jrender *r, struct jscope *sc, const struct jnode *t, jv v) {
    if (t->kind == N_NAME) { jscope_set(r, sc, t->u.name.id, v); return; }
    if (t->kind == N_NSREF) {
        jv ns = lookup(r, sc, t->u.nsref.id);
        if (!jv_is_obj(ns, JO_NAMESPACE)) jr_fail(r, "cannot assign attribute on non-namespace object");
        jdict_set(r, ns.u.o->u.ns, jv_from_str(t->u.nsref.attr, false), v);
        return;
    }
    /* tuple unpacking */
    uint32_t want = t->u.items.n;
    if (v.t == JV_UNDEF) jr_fail(r, "not enough values to unpack (expected %u, got 0)", want);
    struct jlist *l = jv_iterate(r, v);
    if (l->n > want) jr_fail(r, "too many values to unpack (expected %u)", want);
    if (l->n < want) jr_fail(r, "not enough values to unpack (expected %u, got %zu)", want, l->n);
    for (uint32_t i = 0; i < want; i++) assign(r, sc, t->u.items.v[i], l->v[i]);
}

static void exec_for(struct jrender *r, struct jscope *sc, const struct jnode *n) {
    jv it = jeval(r, sc, n->u.forl.iter);
    struct jlist *items = jv_iterate(r, it);
    jr_work(r, items->n);
    if (n->u.forl.test) {
        struct jlist *f = jlist_new(r, items->n);
        struct jscope *ts = jscope_new(r, sc);
        for (size_t i = 0; i < items->n; i++) {
            count_iter(r);
            ts->n = 0;
            assign(r, ts, n->u.forl.target, items->v[i]);
            if (jv_truthy(r, jeval(r, ts, n->u.forl.test))) f->v[f->n++] = items->v[i];
        }
        items = f;
    }
    bool else_ok = true; /* Jinja's iteration indicator: cleared at the end of a completed body */
    if (items->n) {
        struct jloop *lp = jr_alloc(r, sizeof *lp);
        memset(lp, 0, sizeof *lp);
        lp->items = items;
        struct jobj *lo = jobj_new(r, JO_LOOP);
        lo->u.loop = lp;
        struct jscope *bs = jscope_new(r, sc);
        for (size_t i = 0; i < items->n; i++) {
            count_iter(r);
            lp->index0 = i;
            bs->n = 0;
            jscope_set(r, bs, r->ct->id_loop, jv_from_obj(lo));
            assign(r, bs, n->u.forl.target, items->v[i]);
            jexec_body(r, bs, n->u.forl.body);
            if (r->break_flag == 1) { r->break_flag = 0; break; }
            if (r->break_flag == 2) { r->break_flag = 0; continue; }
            else_ok = false;
        }
    }
    if (else_ok && n->u.forl.else_) jexec_body(r, jscope_new(r, sc), n->u.forl.else_);
}

static jv apply_block_filter(struct jrender *r, struct jscope *sc, const struct jnode *f, jv value) {
    if (!f) return value;
    return eval_filter(r, sc, f, value, true);
}

static void exec_stmt(struct jrender *r, struct jscope *sc, const struct jnode *n) {
    switch (n->kind) {
    case N_OUTPUT:
        for (uint32_t i = 0; i < n->u.items.n; i++) {
            const struct jnode *x = n->u.items.v[i];
            if (x->kind == N_DATA) jbuf_put(r, jr_out(r), x->u.data.text->p, x->u.data.text->len);
            else {
                jv v = jeval(r, sc, x);
                jv_write_str(r, jr_out(r), v);
            }
        }
        return;
    case N_IF:
        for (uint32_t i = 0; i < n->u.ifs.tests.n; i++)
            if (jv_truthy(r, jeval(r, sc, n->u.ifs.tests.v[i]))) {
                jexec_body(r, sc, n->u.ifs.bodies.v[i]);
                return;
            }
        if (n->u.ifs.else_) jexec_body(r, sc, n->u.ifs.else_);
        return;
    case N_FOR: exec_for(r, sc, n); return;
    case N_SET: assign(r, sc, n->u.set.target, jeval(r, sc, n->u.set.value)); return;
    case N_SETBLOCK: {
        jr_push_buf(r);
        jexec_body(r, jscope_new(r, sc), n->u.setblock.body);
        jv v = jv_from_str(jr_pop_buf(r), false);
        if (r->break_flag) return;
        assign(r, sc, n->u.setblock.target, apply_block_filter(r, sc, n->u.setblock.filter, v));
        return;
    }
    case N_MACRO: {
        struct jobj *o = jobj_new(r, JO_MACRO);
        o->u.macro.node = n;
        o->u.macro.scope = sc;
        jscope_set(r, sc, n->u.macro.name, jv_from_obj(o));
        return;
    }
    case N_CALLBLOCK: {
        struct jobj *caller = jobj_new(r, JO_MACRO);
        caller->u.macro.node = n->u.callblock.macro;
        caller->u.macro.scope = sc;
        caller->u.macro.is_caller = true;
        const struct jnode *call = n->u.callblock.call;
        jv fn = jeval(r, sc, call->u.call.fn);
        struct argv av;
        eval_args(r, sc, &call->u.call.a, &av);
        if (!av.kw) av.kw = jdict_new(r, 1);
        jdict_set(r, av.kw, jv_cstr(r, "caller"), jv_from_obj(caller));
        jv res = jcall(r, fn, av.v, av.n, av.kw);
        jv_write_str(r, jr_out(r), res);
        return;
    }
    case N_FILTERBLOCK: {
        jr_push_buf(r);
        jexec_body(r, jscope_new(r, sc), n->u.filterblock.body);
        jv v = jv_from_str(jr_pop_buf(r), false);
        if (r->break_flag) return;
        jv_write_str(r, jr_out(r), apply_block_filter(r, sc, n->u.filterblock.filter, v));
        return;
    }
    case N_WITH: {
        struct jscope *ws = jscope_new(r, sc);
        for (uint32_t i = 0; i < n->u.with.targets.n; i++)
            assign(r, ws, n->u.with.targets.v[i], jeval(r, sc, n->u.with.values.v[i]));
        jexec_body(r, ws, n->u.with.body);
        return;
    }
    case N_BREAK: r->break_flag = 1; return;
    case N_CONTINUE: r->break_flag = 2; return;
    case N_SCOPEBODY: jexec_body(r, sc, n); return;
    default:
        jr_fail(r, "internal error: node %d is not a statement", n->kind);
    }
}

void jexec_body(struct jrender *r, struct jscope *sc, const struct jnode *body) {
    jr_check_stack(r);
    for (uint32_t i = 0; i < body->u.items.n; i++) {
        exec_stmt(r, sc, body->u.items.v[i]);
        if (r->break_flag) return;
    }
}
