/* chat_template.c — the public side of chat templates (chat_template.h):
 * compile, render with JSON variables, and transformers'
 * apply_chat_template(tokenize=False) semantics including
 * continue_final_message.
 *
 * Owns: the compiled template (its arena) and, during a render, the render
 * state (arena, output buffers), freed before returning. The language itself
 * lives in jinja_parse.c (lexer, parser), jinja_eval.c (evaluator),
 * jinja_value.c (values) and jinja_builtins.c (filters, tests, methods).
 * Does not: read tokenizer_config.json or decide which template a model
 * uses; the caller passes the source. */
#define _GNU_SOURCE /* memmem, strftime_l, asprintf */
#include "text/chat_template.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/jinja_internal.h"
#include "util/util.h"

#define DEF_MAX_OUTPUT ((size_t)16 << 20)
#define DEF_MAX_MEMORY ((size_t)256 << 20)
#define DEF_MAX_ITERS 10000000ull
#define DEF_MAX_DEPTH 100

int chat_template_compile(struct chat_template **out, const char *source, char *err, size_t errlen) {
    *out = NULL;
    if (!source) return errf(err, errlen, "no template source");
    struct chat_template *ct = xcalloc(1, sizeof *ct);
    ct->lim.max_output = DEF_MAX_OUTPUT;
    ct->lim.max_memory = DEF_MAX_MEMORY;
    ct->lim.max_loop_iters = DEF_MAX_ITERS;
    ct->lim.max_call_depth = DEF_MAX_DEPTH;
    size_t len = strlen(source);
    if (jinja_parse(ct, source, len, err, errlen)) {
        jarena_free(&ct->arena);
        free(ct);
        return -1;
    }
    ct->mentions_content = strstr(source, "content") != NULL;
    *out = ct;
    return 0;
}

void chat_template_free(struct chat_template *ct) {
    if (!ct) return;
    jarena_free(&ct->arena);
    free(ct);
}

void chat_template_set_limits(struct chat_template *ct, const struct chat_template_limits *lim) {
    if (!ct || !lim) return;
    if (lim->max_output) ct->lim.max_output = lim->max_output;
    if (lim->max_memory) ct->lim.max_memory = lim->max_memory;
    if (lim->max_loop_iters) ct->lim.max_loop_iters = lim->max_loop_iters;
    if (lim->max_call_depth > 0) ct->lim.max_call_depth = lim->max_call_depth;
}

void chat_template_set_now(struct chat_template *ct, int64_t unix_seconds) {
    if (!ct) return;
    ct->now_fixed = true;
    ct->now = unix_seconds;
}

/* Stack left below `here` in the calling thread (cached per thread: for the
 * main thread glibc reads /proc/self/maps). Renders recurse (macros, nested
 * expressions); the budget turns a too-deep template into a render error
 * instead of a stack overflow, whatever stack size the caller's thread has. */
static size_t stack_budget(const char *here) {
    static _Thread_local uintptr_t lo;
    static _Thread_local int known;
    if (!known) {
        known = -1;
        pthread_attr_t at;
        if (pthread_getattr_np(pthread_self(), &at) == 0) {
            void *addr;
            size_t size;
            if (pthread_attr_getstack(&at, &addr, &size) == 0) {
                lo = (uintptr_t)addr;
                known = 1;
            }
            pthread_attr_destroy(&at);
        }
    }
    size_t budget = JR_STACK_BUDGET;
    if (known == 1 && (uintptr_t)here > lo) {
        size_t avail = (uintptr_t)here - lo, margin = 96 << 10;
        budget = avail > margin ? MIN(budget, avail - margin) : 0;
    }
    return budget;
}

/* Runs the render; separate from the entry so setjmp's frame stays simple. */
static int render_run(struct jrender *r, char **out, size_t *out_len) {
    if (setjmp(r->jb)) return -2;
    const struct chat_template *ct = r->ct;
    r->ctxvals = jr_alloc(r, (ct->nnames + 1) * sizeof(jv));
    r->ctxdone = jr_alloc(r, ct->nnames + 1);
    r->ctxfound = jr_alloc(r, ct->nnames + 1);
    memset(r->ctxdone, 0, ct->nnames + 1);
    memset(r->ctxfound, 0, ct->nnames + 1);
    r->top = jscope_new(r, NULL);
    jr_push_buf(r);
    jexec_body(r, r->top, ct->root);
    struct jbuf *b = &r->bufs[0];
    char *p = realloc(b->p, b->n + 1);
    if (!p) jr_fail(r, "out of memory");
    p[b->n] = 0;
    *out = p;
    if (out_len) *out_len = b->n;
    b->p = NULL;
    r->nbufs = 0;
    return 0;
}

int chat_template_render(const struct chat_template *ct, const json_t *ctx, char **out, size_t *out_len,
                         char *err, size_t errlen) {
    *out = NULL;
    if (out_len) *out_len = 0;
    if (!ct) return errf(err, errlen, "no compiled template");
    if (ctx && !json_is_object(ctx)) return errf(err, errlen, "template variables must be a JSON object");
    struct jrender *r = xcalloc(1, sizeof *r);
    char base;
    r->stack_base = &base;
    r->stack_budget = stack_budget(&base);
    r->ct = ct;
    r->err = err;
    r->errlen = errlen;
    r->ctx = ctx;
    r->arena.limit = ct->lim.max_memory;
    r->now_fixed = ct->now_fixed;
    r->now = ct->now;
    int rc = render_run(r, out, out_len);
    for (int i = 0; i < r->nbufs; i++) free(r->bufs[i].p);
    jarena_free(&r->arena);
    free(r);
    if (rc) {
        free(*out);
        *out = NULL;
        if (out_len) *out_len = 0;
    }
    return rc;
}

/* ---- apply_chat_template ------------------------------------------------------------ */

static const char CFM_TAG[] = "CONTINUE_FINAL_MESSAGE_TAG ";

/* Python str.strip()/rstrip() bounds on UTF-8 text. */
static void py_strip_bounds(const char *s, size_t n, size_t *b, size_t *e, int which) {
    size_t lo = 0, hi = n;
    if (which & 1)
        while (lo < hi) {
            size_t adv;
            uint32_t c = jutf8_decode(s + lo, hi - lo, &adv);
            if (!jpy_isspace(c)) break;
            lo += adv;
        }
    if (which & 2)
        while (hi > lo) {
            size_t k = hi - 1;
            while (k > lo && ((unsigned char)s[k] & 0xc0) == 0x80) k--;
            size_t adv;
            uint32_t c = jutf8_decode(s + k, hi - k, &adv);
            if (adv != hi - k || !jpy_isspace(c)) break;
            hi = k;
        }
    *b = lo;
    *e = hi;
}

static const char *find_last(const char *hay, size_t n, const char *needle, size_t m) {
    if (m > n) return NULL;
    for (size_t i = n - m + 1; i-- > 0;)
        if (memcmp(hay + i, needle, m) == 0) return hay + i;
    return NULL;
}

int chat_template_apply(const struct chat_template *ct, const struct chat_apply_params *p, char **out,
                        size_t *out_len, char *err, size_t errlen) {
    *out = NULL;
    if (out_len) *out_len = 0;
    if (!ct) return errf(err, errlen, "no compiled template");
    if (!p || !p->messages || !json_is_array(p->messages)) return errf(err, errlen, "messages must be a JSON array");
    if (p->continue_final_message && p->add_generation_prompt) {
        errf(err, errlen,
             "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message when "
             "you want the model to continue the final message, and add_generation_prompt when you want to add a "
             "header that will prompt it to start a new assistant message instead.");
        return -2;
    }
    json_t *ctx = json_object();
    if (p->specials && json_is_object(p->specials)) json_object_update(ctx, (json_t *)p->specials);
    if (p->kwargs && json_is_object(p->kwargs)) json_object_update(ctx, (json_t *)p->kwargs);
    json_t *messages = (json_t *)p->messages;
    json_t *owned_messages = NULL;
    char *final_text = NULL; /* the final message's text (before the tag) */
    size_t final_len = 0;
    if (p->continue_final_message) {
        size_t n = json_array_size(messages);
        json_t *last = n ? json_array_get(messages, n - 1) : NULL;
        if (!last || !json_is_object(last)) {
            json_decref(ctx);
            errf(err, errlen, "continue_final_message is set but the final message is not an object");
            return -2;
        }
        json_t *content = json_object_get(last, "content");
        if (!content || json_is_null(content)) {
            json_decref(ctx);
            errf(err, errlen, "continue_final_message is set but the final message has no \"content\" to continue!");
            return -2;
        }
        if (!ct->mentions_content) {
            json_decref(ctx);
            errf(err, errlen,
                 "continue_final_message is set to \"content\" but this is not an accepted field in the chat_template");
            return -2;
        }
        owned_messages = json_copy(messages);
        json_t *nlast = json_deep_copy(last);
        json_t *ncontent = json_object_get(nlast, "content");
        json_t *target = NULL; /* the string value to extend, and its parent */
        if (json_is_array(ncontent)) {
            for (size_t i = json_array_size(ncontent); i-- > 0;) {
                json_t *blk = json_array_get(ncontent, i);
                if (json_is_object(blk) && json_object_get(blk, "text")) { target = blk; break; }
            }
            if (!target) {
                json_decref(nlast);
                json_decref(owned_messages);
                json_decref(ctx);
                errf(err, errlen, "continue_final_message is set but we could not find any text to continue in the final message!");
                return -2;
            }
        } else {
            target = nlast;
        }
        const char *key = target == nlast ? "content" : "text";
        json_t *sv = json_object_get(target, key);
        if (!json_is_string(sv)) {
            json_decref(nlast);
            json_decref(owned_messages);
            json_decref(ctx);
            errf(err, errlen, "continue_final_message: the final message's %s is not a string", key);
            return -2;
        }
        final_len = json_string_length(sv);
        final_text = xmalloc(final_len + sizeof CFM_TAG);
        memcpy(final_text, json_string_value(sv), final_len);
        memcpy(final_text + final_len, CFM_TAG, sizeof CFM_TAG);
        json_object_set_new(target, key, json_stringn(final_text, final_len + sizeof CFM_TAG - 1));
        json_array_set_new(owned_messages, n - 1, nlast);
        messages = owned_messages;
    }
    json_object_set(ctx, "messages", messages);
    json_object_set_new(ctx, "tools", p->tools ? json_incref((json_t *)p->tools) : json_null());
    json_object_set_new(ctx, "documents", p->documents ? json_incref((json_t *)p->documents) : json_null());
    json_object_set_new(ctx, "add_generation_prompt", json_boolean(p->add_generation_prompt));
    char *text = NULL;
    size_t len = 0;
    int rc = chat_template_render(ct, ctx, &text, &len, err, errlen);
    json_decref(ctx);
    json_decref(owned_messages);
    if (rc == 0 && p->continue_final_message) {
        size_t fb, fe;
        py_strip_bounds(final_text, final_len, &fb, &fe, 3);
        const char *tag = CFM_TAG;
        size_t taglen = sizeof CFM_TAG - 2; /* the tag without its trailing space */
        bool has_final = fe == fb || memmem(text, len, final_text + fb, fe - fb) != NULL;
        const char *loc = find_last(text, len, tag, taglen);
        if (!has_final || !loc) {
            errf(err, errlen,
                 "continue_final_message is set but the final message does not appear in the chat after applying the "
                 "chat template! This can happen if the chat template deletes portions of the final message. Please "
                 "verify the chat template and final message in your chat to ensure they are compatible.Final message "
                 "to continue: %.*s\nRendered chat:\n%.*s",
                 (int)(fe - fb), final_text + fb, (int)MIN(len, (size_t)1 << 20), text);
            free(text);
            text = NULL;
            rc = -2;
        } else {
            size_t cut = (size_t)(loc - text);
            if (!(cut + sizeof CFM_TAG - 1 <= len && memcmp(loc, CFM_TAG, sizeof CFM_TAG - 1) == 0)) {
                size_t b, e;
                py_strip_bounds(text, cut, &b, &e, 2);
                cut = e;
            }
            text[cut] = 0;
            len = cut;
        }
    }
    free(final_text);
    if (rc) return rc;
    *out = text;
    if (out_len) *out_len = len;
    return 0;
}
