/* api.c — the generation endpoints: /v1/completions, /v1/chat/completions,
 * /tokenize and /detokenize. Turns a parsed request (protocol.h) into token
 * ids (chat template + tokenizer, in this HTTP thread), submits one engine
 * request per prompt, and answers with one JSON body or an SSE stream in
 * vLLM's shapes.
 *
 * Owns: struct gen (the engine requests of one HTTP request, what they
 * produced so far, the stream's pending bytes, the eventfd their notify
 * callback writes). Does not: parse HTTP or JSON syntax (http.c,
 * protocol.c), or touch engine internals. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "server/server_internal.h"
#include "util/util.h"

/* ---- small buffers and JSON helpers ------------------------------------- */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) abort(); /* out of memory */
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void sb_str(struct sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* A JSON string of bytes that may not be valid UTF-8 (a single token can end
 * inside a character): invalid sequences become U+FFFD, as HF's decode does. */
static json_t *jstr_lossy(const char *s, size_t n) {
    json_t *j = json_stringn(s ? s : "", s ? n : 0);
    if (j) return j;
    struct sbuf b = { 0 };
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = len > 0 && i + len <= n && c != 0;
        for (size_t k = 1; ok && k < len; k++) ok = (u[i + k] & 0xc0) == 0x80;
        if (ok && len > 1) {
            unsigned cp = c & (0x7f >> len);
            for (size_t k = 1; k < len; k++) cp = (cp << 6) | (u[i + k] & 0x3f);
            ok = !(cp < (len == 2 ? 0x80u : len == 3 ? 0x800u : 0x10000u)) && cp <= 0x10ffff &&
                 !(cp >= 0xd800 && cp <= 0xdfff);
        }
        if (ok) sb_add(&b, s + i, len), i += len;
        else sb_str(&b, "\xef\xbf\xbd"), i++;
    }
    j = json_stringn(b.p ? b.p : "", b.len);
    free(b.p);
    return j;
}

/* vLLM replaces -inf logprobs with -9999.0 (JSON has no infinity). */
static json_t *jlogprob(float lp) {
    if (isnan(lp)) return json_null();
    return json_real(lp < -9999.0f ? -9999.0 : (double)lp);
}

/* The text of one token for logprobs: "token_id:N" when asked (or without a
 * tokenizer), else its decoded piece. malloc'd. */
static char *token_str(const struct server *s, int32_t id, int as_ids, size_t *len) {
    if (!as_ids && s->tok) {
        char *t = tokenizer_decode(s->tok, &id, 1, 0, len);
        if (t) return t;
    }
    char *t = xmalloc(32);
    *len = (size_t)snprintf(t, 32, "token_id:%d", id);
    return t;
}

static json_t *jtoken(const struct server *s, int32_t id, int as_ids) {
    size_t n;
    char *t = token_str(s, id, as_ids, &n);
    json_t *j = jstr_lossy(t, n);
    free(t);
    return j;
}

static json_t *jids(const int32_t *ids, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* ---- one HTTP request's engine work -------------------------------------- */

struct lp_copy {
    struct vllmc_logprob chosen;
    int n_top;
    struct vllmc_logprob *top;
};

struct gseq {                /* one choice */
    struct sbuf text;        /* all of it (non-streamed) or the part not yet sent */
    int32_t *toks;
    int n_toks, cap_toks;
    struct lp_copy *lps;     /* parallel to toks when logprobs were asked */
    int n_gen;               /* tokens generated in total */
    enum vllmc_finish finish;
    int32_t stop_token;
    char *stop_str;
    int started;             /* stream: first chunk (role / echo) sent */
    int finish_sent;
    size_t text_offset;      /* completion logprobs text_offset */
};

struct greq {                /* one engine request: one prompt, n sequences */
    vllmc_request *r;
    int32_t *prompt;
    int n_prompt;
    char *prompt_text;       /* for echo */
    size_t prompt_text_len;
    int max_tokens;          /* 0: echo only (the engine is asked for 1 token, which is dropped) */
    int n_prompt_tokens, n_cached;
    struct lp_copy *plps;    /* prompt logprobs, n_plps entries */
    int n_plps;
    int done, recorded;
    double t_arrival, t_first, t_last;
    struct gseq *seqs;
};

struct gen {
    struct server *s;
    struct proto_request req;
    int n;                   /* sequences per prompt */
    int n_greq;
    struct greq *g;
    struct waiter *w;
    char id[64];
    time_t created;
    int aborted, client_gone;
    char *error;             /* engine-side failure */
    /* streaming */
    struct sbuf out;
    size_t out_off;
    int stream_done;
};

static void lp_copy_from(struct lp_copy *d, const struct vllmc_token_logprobs *s) {
    d->chosen = s->chosen;
    d->n_top = s->n_top > 0 ? s->n_top : 0;
    d->top = d->n_top ? xmalloc((size_t)d->n_top * sizeof *d->top) : NULL;
    if (d->n_top) memcpy(d->top, s->top, (size_t)d->n_top * sizeof *d->top);
}

static void gseq_clear_delta(struct gseq *q) {
    for (int i = 0; q->lps && i < q->n_toks; i++) free(q->lps[i].top);
    q->n_toks = 0;
    q->text.len = 0;
    if (q->text.p) q->text.p[0] = 0;
}

void gen_free(struct gen *g) {
    if (!g) return;
    for (int i = 0; i < g->n_greq; i++) {
        struct greq *q = &g->g[i];
        if (q->r) vllmc_request_free(q->r); /* no notify after this returns */
        for (int k = 0; q->seqs && k < g->n; k++) {
            gseq_clear_delta(&q->seqs[k]);
            free(q->seqs[k].text.p);
            free(q->seqs[k].toks);
            free(q->seqs[k].lps);
            free(q->seqs[k].stop_str);
        }
        free(q->seqs);
        for (int k = 0; k < q->n_plps; k++) free(q->plps[k].top);
        free(q->plps);
        free(q->prompt);
        free(q->prompt_text);
    }
    free(g->g);
    if (g->w) waiter_put(g->s, g->w);
    free(g->error);
    free(g->out.p);
    proto_request_free(&g->req);
    atomic_fetch_sub(&g->s->n_active, 1);
    free(g);
}

struct waiter *waiter_get(struct server *s) {
    pthread_mutex_lock(&s->waiters_mu);
    struct waiter *w = s->free_waiters;
    if (w) s->free_waiters = w->next;
    pthread_mutex_unlock(&s->waiters_mu);
    if (w) {
        uint64_t cnt;
        ssize_t r = read(w->efd, &cnt, sizeof cnt); /* drop stale wake-ups */
        (void)r;
        return w;
    }
    w = xcalloc(1, sizeof *w);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        free(w);
        return NULL;
    }
    return w;
}

void waiter_put(struct server *s, struct waiter *w) {
    pthread_mutex_lock(&s->waiters_mu);
    w->next = s->free_waiters;
    s->free_waiters = w;
    pthread_mutex_unlock(&s->waiters_mu);
}

void waiters_free(struct server *s) {
    for (struct waiter *w = s->free_waiters, *next; w; w = next) {
        next = w->next;
        close(w->efd);
        free(w);
    }
    s->free_waiters = NULL;
}

static void gen_notify(void *arg) {
    struct waiter *w = arg;
    uint64_t one = 1;
    ssize_t r = write(w->efd, &one, sizeof one);
    (void)r; /* the counter cannot overflow; nothing to do on failure */
}

static void gen_abort(struct gen *g) {
    if (g->aborted) return;
    g->aborted = 1;
    for (int i = 0; i < g->n_greq; i++)
        if (g->g[i].r && !g->g[i].done) vllmc_abort(g->g[i].r);
}

static int gen_all_done(const struct gen *g) {
    for (int i = 0; i < g->n_greq; i++)
        if (!g->g[i].done) return 0;
    return 1;
}

static void record_finished(struct gen *g, struct greq *q) {
    if (q->recorded) return;
    q->recorded = 1;
    int n_gen = 0;
    for (int k = 0; k < g->n; k++) n_gen += q->seqs[k].n_gen;
    struct request_timing t = {
        .t_arrival = q->t_arrival, .t_first_token = q->t_first, .t_last_token = q->t_last,
        .t_finished = time_now(), .n_prompt_tokens = q->n_prompt_tokens, .n_generation_tokens = n_gen,
        .n = g->n, .max_tokens = q->max_tokens,
    };
    if (t.t_arrival <= 0) t.t_arrival = t.t_finished;
    metrics_observe_request(&g->s->metrics, &t);
}

/* Take one output read into q: tokens, text and logprobs appended per
 * sequence, finish reasons, prompt logprobs, and the TTFT / inter-token
 * latency observations. */
static void absorb(struct gen *g, struct greq *q, const struct vllmc_output *o) {
    struct server *s = g->s;
    if (o->prompt_logprobs && !q->plps && o->n_prompt_tokens > 0) {
        q->plps = xcalloc((size_t)o->n_prompt_tokens, sizeof *q->plps);
        q->n_plps = o->n_prompt_tokens;
        for (int i = 0; i < q->n_plps; i++) lp_copy_from(&q->plps[i], &o->prompt_logprobs[i]);
    }
    q->n_prompt_tokens = o->n_prompt_tokens;
    q->n_cached = o->n_cached_tokens;
    if (o->t_arrival > 0) q->t_arrival = o->t_arrival;
    int most_new = 0;
    for (int i = 0; i < o->n_seqs; i++) {
        const struct vllmc_seq_output *so = &o->seqs[i];
        if (so->index < 0 || so->index >= g->n) continue;
        struct gseq *d = &q->seqs[so->index];
        int nt = so->n_tokens;
        if (q->max_tokens == 0) nt = 0; /* echo only: drop the one generated token */
        if (nt > 0) {
            if (d->n_toks + nt > d->cap_toks) {
                d->cap_toks = MAX(d->n_toks + nt, 2 * d->cap_toks);
                d->toks = realloc(d->toks, (size_t)d->cap_toks * sizeof *d->toks);
                if (g->req.logprobs >= 0) d->lps = realloc(d->lps, (size_t)d->cap_toks * sizeof *d->lps);
                if (!d->toks || (g->req.logprobs >= 0 && !d->lps)) abort(); /* out of memory */
            }
            memcpy(d->toks + d->n_toks, so->tokens, (size_t)nt * sizeof *d->toks);
            for (int k = 0; g->req.logprobs >= 0 && k < nt; k++) {
                if (so->logprobs) lp_copy_from(&d->lps[d->n_toks + k], &so->logprobs[k]);
                else d->lps[d->n_toks + k] = (struct lp_copy){ .chosen = { so->tokens[k], NAN, 0 } };
            }
            d->n_toks += nt;
            d->n_gen += nt;
            if (so->text_len && q->max_tokens != 0) sb_add(&d->text, so->text, so->text_len);
            most_new = MAX(most_new, nt);
        }
        if (so->finish != VLLMC_NOT_FINISHED) {
            d->finish = so->finish;
            d->stop_token = so->stop_token;
            free(d->stop_str);
            d->stop_str = so->stop_str ? xstrdup(so->stop_str) : NULL;
        }
    }
    /* TTFT once; then one inter-token latency per new token (vLLM observes
     * one per request per step; a read may span several steps) */
    if (most_new > 0) {
        double now = o->t_last_token > 0 ? o->t_last_token : time_now();
        if (q->t_first <= 0) {
            q->t_first = o->t_first_token > 0 ? o->t_first_token : now;
            metrics_observe(&s->metrics, H_TTFT, q->t_first - q->t_arrival);
            if (most_new > 1)
                for (int k = 1; k < most_new; k++)
                    metrics_observe(&s->metrics, H_ITL, (now - q->t_first) / (most_new - 1));
        } else {
            for (int k = 0; k < most_new; k++) metrics_observe(&s->metrics, H_ITL, (now - q->t_last) / most_new);
        }
        q->t_last = now;
    }
    if (o->error && !g->error) g->error = xstrdup(o->error);
    if (o->finished) {
        q->done = 1;
        for (int k = 0; k < g->n; k++)
            if (q->seqs[k].finish == VLLMC_NOT_FINISHED) q->seqs[k].finish = o->error ? VLLMC_FINISH_ERROR : VLLMC_FINISH_ABORT;
        record_finished(g, q);
    }
}

static void stream_emit(struct gen *g, int qi, const int *touched);

/* Read everything ready; returns the number of reads that had news. */
static int gen_pump(struct gen *g) {
    int news = 0;
    for (int i = 0; i < g->n_greq; i++) {
        struct greq *q = &g->g[i];
        while (!q->done) {
            struct vllmc_output o;
            int rc = vllmc_request_next(q->r, &o, 0);
            if (rc == VLLMC_EDONE) {
                q->done = 1;
                record_finished(g, q);
                break;
            }
            if (rc != 1) break;
            int touched[64] = { 0 }, *tp = touched, *heap = NULL;
            if (g->n > 64) tp = heap = xcalloc((size_t)g->n, sizeof *heap);
            for (int k = 0; k < o.n_seqs; k++)
                if (o.seqs[k].index >= 0 && o.seqs[k].index < g->n) tp[o.seqs[k].index] = 1;
            absorb(g, q, &o);
            if (g->req.stream) stream_emit(g, i, tp);
            free(heap);
            news++;
        }
    }
    return news;
}

/* Wait for news. Returns 1 after reading news (or when all is done), 0 on
 * timeout, -1 when the client went away (its requests are then aborted). */
static int gen_wait(struct gen *g, int client_fd, int timeout_ms) {
    struct server *s = g->s;
    for (;;) {
        uint64_t cnt;
        ssize_t r = read(g->w->efd, &cnt, sizeof cnt); /* non-blocking: reset before reading outputs */
        (void)r;
        if (gen_pump(g) > 0 || gen_all_done(g)) return 1;
        struct pollfd p[3] = { { g->w->efd, POLLIN, 0 }, { client_fd, POLLRDHUP, 0 }, { s->shutdown_fd, POLLIN, 0 } };
        int np = g->aborted ? 2 : 3;
        if (client_fd < 0) p[1].fd = -1;
        int rc = poll(p, (nfds_t)np, timeout_ms);
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) {
            struct vllmc_engine_stats st;
            vllmc_engine_stats(s->engine, &st);
            if (st.engine_dead && !g->error) {
                g->error = xstrdup("the engine failed");
                gen_abort(g);
                for (int i = 0; i < g->n_greq; i++) g->g[i].done = 1;
                return 1;
            }
            return 0;
        }
        if (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) {
            g->client_gone = 1;
            gen_abort(g);
            return -1;
        }
        if (np == 3 && p[2].revents) gen_abort(g); /* shutting down: finish with "abort" */
    }
}

/* ---- response bodies ------------------------------------------------------ */

static json_t *usage_json(const struct gen *g) {
    long long p = 0, c = 0, cached = 0;
    for (int i = 0; i < g->n_greq; i++) {
        const struct greq *q = &g->g[i];
        p += q->n_prompt_tokens ? q->n_prompt_tokens : q->n_prompt;
        cached += q->n_cached;
        for (int k = 0; k < g->n; k++) c += q->seqs[k].n_gen;
    }
    json_t *u = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer(p));
    json_object_set_new(u, "total_tokens", json_integer(p + c));
    json_object_set_new(u, "completion_tokens", json_integer(c));
    json_t *d = json_object();
    json_object_set_new(d, "cached_tokens", json_integer(cached));
    json_object_set_new(u, "prompt_tokens_details", d);
    return u;
}

static const char *finish_str(enum vllmc_finish f) {
    return f == VLLMC_NOT_FINISHED ? NULL : vllmc_finish_name(f);
}

/* stop_reason: the stop string, or a stop_token_ids token (not EOS), or null */
static json_t *stop_reason_json(const struct gen *g, const struct gseq *d) {
    if (d->finish != VLLMC_FINISH_STOP) return json_null();
    if (d->stop_str) return json_string(d->stop_str);
    for (int i = 0; i < g->req.sp.n_stop_token_ids; i++)
        if (g->req.sp.stop_token_ids[i] == d->stop_token) return json_integer(d->stop_token);
    return json_null();
}

/* vLLM's prompt_logprobs: [null, {"id": {"logprob", "rank", "decoded_token"}}, ...] */
static json_t *prompt_logprobs_json(const struct gen *g, const struct greq *q) {
    json_t *a = json_array();
    for (int i = 0; i < q->n_plps; i++) {
        const struct lp_copy *l = &q->plps[i];
        if (i == 0 || isnan(l->chosen.logprob)) { json_array_append_new(a, json_null()); continue; }
        json_t *o = json_object();
        for (int k = -1; k < l->n_top; k++) {
            const struct vllmc_logprob *lp = k < 0 ? &l->chosen : &l->top[k];
            char key[16];
            snprintf(key, sizeof key, "%d", lp->token);
            if (json_object_get(o, key)) continue;
            json_t *e = json_object();
            json_object_set_new(e, "logprob", jlogprob(lp->logprob));
            json_object_set_new(e, "rank", json_integer(lp->rank));
            json_object_set_new(e, "decoded_token", jtoken(g->s, lp->token, g->req.return_tokens_as_token_ids));
            json_object_set_new(o, key, e);
        }
        json_array_append_new(a, o);
    }
    return a;
}

/* OpenAI's legacy completion logprobs over tokens [0, n) of an entry list;
 * with echo, the prompt's entries come first. */
struct lp_acc {
    json_t *offsets, *lps, *toks, *tops;
    size_t offset;
};

static void lp_acc_add(struct lp_acc *a, const struct gen *g, const struct lp_copy *l, int32_t tok, int first_null) {
    size_t n;
    char *t = token_str(g->s, tok, g->req.return_tokens_as_token_ids, &n);
    json_array_append_new(a->offsets, json_integer((json_int_t)a->offset));
    a->offset += n;
    json_array_append_new(a->toks, jstr_lossy(t, n));
    free(t);
    if (first_null || !l || isnan(l->chosen.logprob)) {
        json_array_append_new(a->lps, json_null());
        json_array_append_new(a->tops, json_null());
        return;
    }
    json_array_append_new(a->lps, jlogprob(l->chosen.logprob));
    json_t *top = json_object();
    int k_max = MIN(l->n_top, g->req.logprobs);
    for (int k = -1; k < k_max; k++) { /* the top k and the sampled token, as vLLM */
        const struct vllmc_logprob *lp = k < 0 ? &l->chosen : &l->top[k];
        size_t tn;
        char *ts = token_str(g->s, lp->token, g->req.return_tokens_as_token_ids, &tn);
        json_t *key = jstr_lossy(ts, tn);
        free(ts);
        if (!json_object_get(top, json_string_value(key)))
            json_object_set_new(top, json_string_value(key), jlogprob(lp->logprob));
        json_decref(key);
    }
    json_array_append_new(a->tops, top);
}

static json_t *lp_acc_json(struct lp_acc *a) {
    json_t *o = json_object();
    json_object_set_new(o, "text_offset", a->offsets);
    json_object_set_new(o, "token_logprobs", a->lps);
    json_object_set_new(o, "tokens", a->toks);
    json_object_set_new(o, "top_logprobs", a->tops);
    return o;
}

static json_t *completion_logprobs(struct gen *g, struct greq *q, struct gseq *d, int with_prompt) {
    struct lp_acc a = { json_array(), json_array(), json_array(), json_array(), d->text_offset };
    if (with_prompt)
        for (int i = 0; i < q->n_prompt; i++)
            lp_acc_add(&a, g, i < q->n_plps ? &q->plps[i] : NULL, q->prompt[i], i == 0);
    for (int i = 0; i < d->n_toks; i++) lp_acc_add(&a, g, d->lps ? &d->lps[i] : NULL, d->toks[i], 0);
    d->text_offset = a.offset;
    return lp_acc_json(&a);
}

/* Chat logprobs: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]} */
static json_t *chat_lp_entry(const struct gen *g, const struct vllmc_logprob *lp) {
    size_t n;
    char *t = token_str(g->s, lp->token, g->req.return_tokens_as_token_ids, &n);
    json_t *e = json_object();
    json_t *js = jstr_lossy(t, n);
    json_t *bytes = json_array();
    const char *u = json_string_value(js); /* the bytes of the (repaired) string, as vLLM's encode() */
    for (size_t i = 0; u[i]; i++) json_array_append_new(bytes, json_integer((unsigned char)u[i]));
    json_object_set_new(e, "token", js);
    json_object_set_new(e, "logprob", jlogprob(lp->logprob));
    json_object_set_new(e, "bytes", bytes);
    free(t);
    return e;
}

static json_t *chat_logprobs(const struct gen *g, const struct gseq *d) {
    json_t *content = json_array();
    for (int i = 0; i < d->n_toks; i++) {
        const struct lp_copy *l = d->lps ? &d->lps[i] : NULL;
        struct vllmc_logprob chosen = l ? l->chosen : (struct vllmc_logprob){ d->toks[i], NAN, 0 };
        json_t *e = chat_lp_entry(g, &chosen);
        json_t *tops = json_array();
        for (int k = 0; l && k < MIN(l->n_top, g->req.logprobs); k++) json_array_append_new(tops, chat_lp_entry(g, &l->top[k]));
        json_object_set_new(e, "top_logprobs", tops);
        json_array_append_new(content, e);
    }
    json_t *o = json_object();
    json_object_set_new(o, "content", content);
    return o;
}

static json_t *response_head(const struct gen *g, const char *object) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(g->id));
    json_object_set_new(o, "object", json_string(object));
    json_object_set_new(o, "created", json_integer((json_int_t)g->created));
    json_object_set_new(o, "model", json_string(g->req.model));
    return o;
}

static json_t *completion_body(struct gen *g) {
    json_t *o = response_head(g, "text_completion");
    json_t *choices = json_array();
    for (int i = 0; i < g->n_greq; i++) {
        struct greq *q = &g->g[i];
        for (int k = 0; k < g->n; k++) {
            struct gseq *d = &q->seqs[k];
            json_t *c = json_object();
            json_object_set_new(c, "index", json_integer(i * g->n + k));
            struct sbuf t = { 0 };
            if (g->req.echo) sb_add(&t, q->prompt_text ? q->prompt_text : "", q->prompt_text_len);
            sb_add(&t, d->text.p ? d->text.p : "", d->text.len);
            json_object_set_new(c, "text", jstr_lossy(t.p, t.len));
            free(t.p);
            json_object_set_new(c, "logprobs",
                                g->req.logprobs >= 0 ? completion_logprobs(g, q, d, g->req.echo) : json_null());
            const char *fr = finish_str(d->finish);
            json_object_set_new(c, "finish_reason", fr ? json_string(fr) : json_null());
            json_object_set_new(c, "stop_reason", stop_reason_json(g, d));
            json_object_set_new(c, "prompt_logprobs",
                                g->req.prompt_logprobs >= 0 && q->plps ? prompt_logprobs_json(g, q) : json_null());
            if (g->req.return_token_ids) {
                json_object_set_new(c, "prompt_token_ids", jids(q->prompt, q->n_prompt));
                json_object_set_new(c, "token_ids", jids(d->toks, d->n_toks));
            }
            json_array_append_new(choices, c);
        }
    }
    json_object_set_new(o, "choices", choices);
    json_object_set_new(o, "usage", usage_json(g));
    json_object_set_new(o, "system_fingerprint", json_null());
    return o;
}

static json_t *chat_body(struct gen *g) {
    json_t *o = response_head(g, "chat.completion");
    json_t *choices = json_array();
    struct greq *q = &g->g[0];
    for (int k = 0; k < g->n; k++) {
        struct gseq *d = &q->seqs[k];
        json_t *c = json_object(), *m = json_object();
        json_object_set_new(c, "index", json_integer(k));
        json_object_set_new(m, "role", json_string("assistant"));
        json_object_set_new(m, "content", jstr_lossy(d->text.p, d->text.len));
        json_object_set_new(m, "refusal", json_null());
        json_object_set_new(m, "tool_calls", json_array());
        json_object_set_new(c, "message", m);
        json_object_set_new(c, "logprobs", g->req.logprobs >= 0 ? chat_logprobs(g, d) : json_null());
        const char *fr = finish_str(d->finish);
        json_object_set_new(c, "finish_reason", fr ? json_string(fr) : json_null());
        json_object_set_new(c, "stop_reason", stop_reason_json(g, d));
        if (g->req.return_token_ids) json_object_set_new(c, "token_ids", jids(d->toks, d->n_toks));
        json_array_append_new(choices, c);
    }
    json_object_set_new(o, "choices", choices);
    json_object_set_new(o, "usage", usage_json(g));
    json_object_set_new(o, "system_fingerprint", json_null());
    json_object_set_new(o, "prompt_logprobs",
                        g->req.prompt_logprobs >= 0 && q->plps ? prompt_logprobs_json(g, q) : json_null());
    if (g->req.return_token_ids) json_object_set_new(o, "prompt_token_ids", jids(q->prompt, q->n_prompt));
    return o;
}

/* ---- streaming ----------------------------------------------------------- */

static void sse_json(struct gen *g, json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    sb_str(&g->out, "data: ");
    if (s) sb_str(&g->out, s);
    sb_str(&g->out, "\n\n");
    free(s);
}

static json_t *chunk_head(struct gen *g) {
    json_t *o = response_head(g, g->req.kind == PROTO_CHAT ? "chat.completion.chunk" : "text_completion");
    if (g->req.include_usage) json_object_set_new(o, "usage", g->req.continuous_usage ? usage_json(g) : json_null());
    return o;
}

/* Chunks for the sequences of request qi that had news in the last read. */
static void stream_emit(struct gen *g, int qi, const int *touched) {
    struct greq *q = &g->g[qi];
    for (int k = 0; k < g->n; k++) {
        struct gseq *d = &q->seqs[k];
        if (!touched[k] || d->finish_sent) continue;
        int finished = d->finish != VLLMC_NOT_FINISHED;
        if (!d->n_toks && !d->text.len && !finished) continue;
        json_t *o = chunk_head(g), *choices = json_array(), *c = json_object();
        if (g->req.kind == PROTO_CHAT) {
            json_object_set_new(c, "index", json_integer(k));
            json_t *delta = json_object();
            json_object_set_new(delta, "content", jstr_lossy(d->text.p, d->text.len));
            json_object_set_new(c, "delta", delta);
            json_object_set_new(c, "logprobs", g->req.logprobs >= 0 ? chat_logprobs(g, d) : json_null());
        } else {
            json_object_set_new(c, "index", json_integer(qi * g->n + k));
            struct sbuf t = { 0 };
            int echo_now = g->req.echo && !d->started;
            if (echo_now) sb_add(&t, q->prompt_text ? q->prompt_text : "", q->prompt_text_len);
            sb_add(&t, d->text.p ? d->text.p : "", d->text.len);
            json_object_set_new(c, "text", jstr_lossy(t.p, t.len));
            free(t.p);
            json_object_set_new(c, "logprobs", g->req.logprobs >= 0 ? completion_logprobs(g, q, d, 0) : json_null());
        }
        d->started = 1;
        const char *fr = finish_str(d->finish);
        json_object_set_new(c, "finish_reason", fr ? json_string(fr) : json_null());
        json_object_set_new(c, "stop_reason", finished ? stop_reason_json(g, d) : json_null());
        if (g->req.return_token_ids) json_object_set_new(c, "token_ids", jids(d->toks, d->n_toks));
        json_array_append_new(choices, c);
        json_object_set_new(o, "choices", choices);
        sse_json(g, o);
        if (finished) d->finish_sent = 1;
        gseq_clear_delta(d);
    }
}

static void stream_finish(struct gen *g) {
    if (g->error) {
        struct proto_error e;
        proto_errorf(&e, 500, "InternalServerError", NULL, "%s", g->error);
        sse_json(g, proto_error_json(&e));
    } else if (g->req.include_usage) {
        json_t *o = response_head(g, g->req.kind == PROTO_CHAT ? "chat.completion.chunk" : "text_completion");
        json_object_set_new(o, "choices", json_array());
        json_object_set_new(o, "usage", usage_json(g));
        sse_json(g, o);
    }
    sb_str(&g->out, "data: [DONE]\n\n");
    g->stream_done = 1;
}

/* libmicrohttpd's content reader: hand out pending bytes, else block (this
 * is the connection's own thread) until the engine has news. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    struct hreq *h = cls;
    struct gen *g = h->gen;
    for (;;) {
        if (g->out_off < g->out.len) {
            size_t n = MIN(max, g->out.len - g->out_off);
            memcpy(buf, g->out.p + g->out_off, n);
            g->out_off += n;
            return (ssize_t)n;
        }
        g->out.len = g->out_off = 0;
        if (g->stream_done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (gen_all_done(g)) { stream_finish(g); continue; }
        int rc = gen_wait(g, h->fd, SERVER_PING_MS);
        if (rc < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (rc == 0 && g->out.len == 0) sb_str(&g->out, ": ping\n\n");
    }
}

/* ---- building requests ----------------------------------------------------- */

static int tokenize_text(struct server *s, const char *text, size_t len, int add_special, int32_t **ids, int *n,
                         struct proto_error *e) {
    if (!s->tok)
        return proto_errorf(e, 400, "BadRequestError", "prompt",
                            "this model has no tokenizer (tokenizer.json): send token ids");
    char err[512];
    if (tokenizer_encode(s->tok, text, len, add_special, ids, n, err, sizeof err))
        return proto_errorf(e, 400, "BadRequestError", "prompt", "tokenization failed: %s", err);
    return 0;
}

/* Render the chat template of request r into a malloc'd prompt. */
static int render_chat(struct server *s, const struct proto_request *r, char **out, size_t *len,
                       struct proto_error *e) {
    struct chat_template *own = NULL;
    const struct chat_template *ct = r->tools && s->tmpl_tools ? s->tmpl_tools : s->tmpl;
    char err[1024];
    if (r->chat_template) {
        if (chat_template_compile(&own, r->chat_template, err, sizeof err))
            return proto_errorf(e, 400, "BadRequestError", "chat_template", "invalid chat template: %s", err);
        ct = own;
    }
    if (!ct)
        return proto_errorf(e, 400, "BadRequestError", NULL,
                            "As of transformers v4.44, default chat template is no longer allowed, so you must "
                            "provide a chat template if the tokenizer does not define one.");
    json_t *kw = json_deep_copy(s->default_kwargs);
    if (r->chat_template_kwargs) json_object_update(kw, r->chat_template_kwargs);
    struct chat_apply_params p = {
        .messages = r->messages, .tools = r->tools, .documents = r->documents, .kwargs = kw, .specials = s->specials,
        .add_generation_prompt = r->add_generation_prompt, .continue_final_message = r->continue_final_message,
    };
    int rc = chat_template_apply(ct, &p, out, len, err, sizeof err);
    json_decref(kw);
    if (own) chat_template_free(own);
    if (rc) return proto_errorf(e, 400, "BadRequestError", NULL, "chat template error: %s", err);
    return 0;
}

/* Token ids of prompt i of a completion, or of the rendered chat. */
static int prompt_ids(struct server *s, const struct proto_request *r, int i, int32_t **ids, int *n, char **text,
                      size_t *text_len, struct proto_error *e) {
    *text = NULL;
    *text_len = 0;
    if (r->messages) {
        char *rendered;
        size_t rl;
        if (render_chat(s, r, &rendered, &rl, e)) return -1;
        int rc = tokenize_text(s, rendered, rl, r->add_special_tokens, ids, n, e);
        free(rendered);
        return rc;
    }
    const struct proto_prompt *p = &r->prompts[i];
    if (p->text) {
        if (tokenize_text(s, p->text, p->text_len, r->add_special_tokens, ids, n, e)) return -1;
        *text = xmalloc(p->text_len + 1);
        memcpy(*text, p->text, p->text_len);
        (*text)[p->text_len] = 0;
        *text_len = p->text_len;
        return 0;
    }
    *n = p->n_ids;
    *ids = xmalloc((size_t)(p->n_ids ? p->n_ids : 1) * sizeof **ids);
    memcpy(*ids, p->ids, (size_t)p->n_ids * sizeof **ids);
    return 0;
}

static char *decode_ids(const struct server *s, const int32_t *ids, int n, int skip_special, size_t *len) {
    *len = 0;
    if (s->tok) {
        char *t = tokenizer_decode(s->tok, ids, n, skip_special, len);
        if (t) return t;
    }
    *len = 0;
    return xstrdup("");
}

enum MHD_Result api_completions(struct hreq *h, struct MHD_Connection *mc, enum proto_kind kind) {
    struct server *s = h->s;
    struct proto_error e;
    struct gen *g = xcalloc(1, sizeof *g);
    g->s = s;
    atomic_fetch_add(&s->n_active, 1);
    if (proto_parse(kind, h->body ? h->body : "", h->len, &s->lim, &g->req, &e)) goto fail;
    struct proto_request *r = &g->req;
    g->n = r->sp.n;
    g->n_greq = kind == PROTO_CHAT ? 1 : r->n_prompts;
    g->g = xcalloc((size_t)g->n_greq, sizeof *g->g);
    g->created = time(NULL);
    snprintf(g->id, sizeof g->id, "%s-%016llx%08x", kind == PROTO_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)atomic_fetch_add(&s->next_id, 1), (unsigned)(time_now() * 1e6));
    if (r->request_id) snprintf(g->id, sizeof g->id, "%s", r->request_id);

    /* prompts -> ids, checked against the context before anything is submitted */
    for (int i = 0; i < g->n_greq; i++) {
        struct greq *q = &g->g[i];
        q->seqs = xcalloc((size_t)g->n, sizeof *q->seqs);
        if (prompt_ids(s, r, i, &q->prompt, &q->n_prompt, &q->prompt_text, &q->prompt_text_len, &e)) goto fail;
        if (proto_check_prompt(r, &s->lim, q->prompt, &q->n_prompt, &q->max_tokens, &e)) goto fail;
        if (r->echo && (!q->prompt_text || r->truncate_prompt_tokens)) {
            free(q->prompt_text);
            q->prompt_text = decode_ids(s, q->prompt, q->n_prompt, 0, &q->prompt_text_len);
        }
    }
    if (atomic_load(&s->shutting_down)) {
        proto_errorf(&e, 503, "ServiceUnavailableError", NULL, "the server is shutting down");
        goto fail;
    }
    struct vllmc_engine_stats st;
    vllmc_engine_stats(s->engine, &st);
    if (st.engine_dead) {
        proto_errorf(&e, 503, "ServiceUnavailableError", NULL, "the engine has failed");
        goto fail;
    }
    if (st.num_waiting + g->n_greq > s->max_waiting) {
        proto_errorf(&e, 429, "TooManyRequestsError", NULL,
                     "too many requests waiting (%d, limit %d): try again later", st.num_waiting, s->max_waiting);
        goto fail;
    }

    g->w = waiter_get(s);
    if (!g->w) {
        proto_errorf(&e, 503, "ServiceUnavailableError", NULL, "out of file descriptors");
        goto fail;
    }
    for (int i = 0; i < g->n_greq; i++) {
        struct greq *q = &g->g[i];
        char rid[96], err[512];
        snprintf(rid, sizeof rid, "%s-%d", g->id, i);
        struct vllmc_request_params rp = {
            .prompt = q->prompt, .n_prompt = q->n_prompt, .sampling = r->sp, .cache_salt = r->cache_salt,
            .request_id = rid, .notify = gen_notify, .notify_arg = g->w,
        };
        rp.sampling.max_tokens = q->max_tokens > 0 ? q->max_tokens : 1;
        if (r->echo && r->logprobs >= 0 && rp.sampling.prompt_logprobs < 0) rp.sampling.prompt_logprobs = r->logprobs;
        int rc = vllmc_submit(s->engine, &rp, &q->r, err, sizeof err);
        if (rc) {
            if (rc == VLLMC_ENOMEM || rc == VLLMC_EINVAL) proto_errorf(&e, 400, "BadRequestError", NULL, "%s", err);
            else proto_errorf(&e, 503, "ServiceUnavailableError", NULL, "%s", err);
            gen_abort(g);
            goto fail;
        }
        if (s->log_requests)
            log_info("Received request %s: prompt tokens %d, max_tokens %d, n %d, temperature %g%s", rid, q->n_prompt,
                     q->max_tokens, g->n, (double)r->sp.temperature, r->stream ? ", stream" : "");
    }

    if (r->stream) {
        if (kind == PROTO_CHAT) /* the role delta first, for every choice */
            for (int k = 0; k < g->n; k++) {
                json_t *o = chunk_head(g), *choices = json_array(), *c = json_object(), *d = json_object();
                json_object_set_new(c, "index", json_integer(k));
                json_object_set_new(d, "role", json_string("assistant"));
                json_object_set_new(d, "content", json_string(""));
                json_object_set_new(c, "delta", d);
                json_object_set_new(c, "logprobs", json_null());
                json_object_set_new(c, "finish_reason", json_null());
                json_array_append_new(choices, c);
                json_object_set_new(o, "choices", choices);
                sse_json(g, o);
            }
        h->gen = g;
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, h, NULL);
        MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(mc, 200, resp);
        MHD_destroy_response(resp);
        return ret;
    }

    for (;;) {
        if (gen_all_done(g)) break;
        if (gen_wait(g, h->fd, SERVER_PING_MS) < 0) { /* the client left: its requests are aborted */
            gen_free(g);
            return MHD_NO;
        }
    }
    if (g->error) {
        proto_errorf(&e, 500, "InternalServerError", NULL, "%s", g->error);
        goto fail;
    }
    json_t *body = kind == PROTO_CHAT ? chat_body(g) : completion_body(g);
    gen_free(g);
    return http_send_json(mc, 200, body);
fail:
    gen_free(g);
    return http_send_error(mc, &e);
}

/* ---- /tokenize and /detokenize ---------------------------------------------- */

enum MHD_Result api_tokenize(struct hreq *h, struct MHD_Connection *mc) {
    struct server *s = h->s;
    struct proto_request r;
    struct proto_error e;
    if (proto_parse(PROTO_TOKENIZE, h->body ? h->body : "", h->len, &s->lim, &r, &e)) return http_send_error(mc, &e);
    int32_t *ids = NULL;
    int n = 0;
    char *text;
    size_t tl;
    if (prompt_ids(s, &r, 0, &ids, &n, &text, &tl, &e)) {
        proto_request_free(&r);
        return http_send_error(mc, &e);
    }
    free(text);
    json_t *o = json_object();
    json_object_set_new(o, "count", json_integer(n));
    json_object_set_new(o, "max_model_len", json_integer(s->lim.max_model_len));
    json_object_set_new(o, "tokens", jids(ids, n));
    if (r.return_token_strs) {
        json_t *a = json_array();
        for (int i = 0; i < n; i++) {
            const char *t = s->tok ? tokenizer_id_to_token(s->tok, ids[i]) : NULL;
            json_array_append_new(a, t ? jstr_lossy(t, strlen(t)) : jtoken(s, ids[i], 1));
        }
        json_object_set_new(o, "token_strs", a);
    } else {
        json_object_set_new(o, "token_strs", json_null());
    }
    free(ids);
    proto_request_free(&r);
    return http_send_json(mc, 200, o);
}

enum MHD_Result api_detokenize(struct hreq *h, struct MHD_Connection *mc) {
    struct server *s = h->s;
    struct proto_request r;
    struct proto_error e;
    if (proto_parse(PROTO_DETOKENIZE, h->body ? h->body : "", h->len, &s->lim, &r, &e))
        return http_send_error(mc, &e);
    if (!s->tok) {
        proto_request_free(&r);
        proto_errorf(&e, 400, "BadRequestError", "tokens", "this model has no tokenizer (tokenizer.json)");
        return http_send_error(mc, &e);
    }
    size_t len;
    char *t = decode_ids(s, r.prompts[0].ids, r.prompts[0].n_ids, 0, &len);
    json_t *o = json_object();
    json_object_set_new(o, "prompt", jstr_lossy(t, len));
    free(t);
    proto_request_free(&r);
    return http_send_json(mc, 200, o);
}
