/* sched.c — one engine step: schedule, build the flat batch, run the
 * forward, sample, check stops, queue outputs (DESIGN.md 4).
 *
 * vLLM v1's scheduler, in short: there are no prefill or decode phases;
 * each sequence has n_computed (tokens whose K/V are cached) and n_tokens
 * (prompt + output) and every step gives it up to n_tokens - n_computed new
 * tokens within the step's token budget. Running sequences go first, in
 * admission order; a running sequence that cannot get blocks preempts the
 * most recently admitted one (recompute: blocks freed, back to the front of
 * the waiting queue). Waiting sequences are admitted in arrival order, with
 * their longest cached prefix, only in steps that preempted nothing.
 *
 * Sampling: one item per logits row, on the backend's host threads
 * (sampler.c). Where the backend offers sample_rows (a device), the forward
 * leaves the logits there, the rows the sampler can finish from a few
 * numbers and a short candidate list (sampler_dev_plan) get their
 * vocabulary passes on the device, and only the other rows (logit
 * processors, a top_p nucleus beyond the candidates, prompt logprobs) are
 * downloaded whole.
 *
 * A step is three parts (DESIGN.md 4): step_launch (aborts, schedule,
 * batch, forward queued), step_collect (wait, sample, each sequence's token
 * taken and the finishes that need no text decided: seq_take) and
 * step_emit (detokenize, stop strings, channels: seq_emit). Async
 * scheduling (e->overlap) runs collect(N), launch(N+1), emit(N), so the
 * text work overlaps the device's next step.
 *
 * Runs only on the engine thread; touches a request's channel only under
 * its mutex. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_internal.h"

#define PLP_CHUNK 64 /* prompt tokens per step for a request with prompt_logprobs (bounds logits memory) */

static void grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return;
    size_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) abort(); /* out of memory */
    *p = q;
    *cap = n;
}
#define GROW(p, cap, need) grow((void **)&(p), &(cap), (need), sizeof *(p))

static void grow_int(void **p, int *cap, int need, size_t elem) {
    size_t c = (size_t)*cap;
    grow(p, &c, (size_t)need, elem);
    *cap = (int)c;
}
#define GROWI(p, cap, need) grow_int((void **)&(p), &(cap), (need), sizeof *(p))

void engine_touch(struct vllmc_engine *e, struct vllmc_request *r) {
    for (int i = 0; i < e->n_touched; i++)
        if (e->touched[i] == r) return;
    GROWI(e->touched, e->cap_touched, e->n_touched + 1);
    e->touched[e->n_touched++] = r;
}

static void seq_hash_blocks(struct vllmc_engine *e, struct seq *s) {
    if (!e->pool.caching) return;
    const int B = e->block_size;
    while ((s->n_hashes + 1) * B <= s->n_tokens) {
        GROWI(s->hashes, s->cap_hashes, s->n_hashes + 1);
        const struct kv_hash *parent = s->n_hashes ? &s->hashes[s->n_hashes - 1] : NULL;
        kv_block_hash(&e->pool, parent, s->tokens + (size_t)s->n_hashes * B, s->n_hashes ? NULL : s->req->salt,
                      &s->hashes[s->n_hashes]);
        s->n_hashes++;
    }
}

static void seq_release_blocks(struct vllmc_engine *e, struct seq *s) {
    for (int i = s->n_blocks - 1; i >= 0; i--) kv_release(&e->pool, &s->blocks[i], 1); /* tail first */
    s->n_blocks = 0;
    s->n_cached_blocks = 0;
}

/* Give s the blocks to hold n_computed + num_new tokens, after taking the
 * n_hits cached blocks hits[] (only for a sequence with no blocks yet).
 * False, changing nothing, when the pool cannot. */
static bool seq_allocate(struct vllmc_engine *e, struct seq *s, int num_new, const int32_t *hits, int n_hits) {
    const int B = e->block_size;
    int need = (s->n_computed + n_hits * B + num_new + B - 1) / B;
    int fresh = need - s->n_blocks - n_hits;
    if (fresh < 0) fresh = 0;
    int free_hits = 0;
    for (int i = 0; i < n_hits; i++) free_hits += e->pool.blocks[hits[i]].ref == 0;
    if (e->pool.n_free - free_hits < fresh) return false;
    GROWI(s->blocks, s->cap_blocks, s->n_blocks + n_hits + fresh);
    for (int i = 0; i < n_hits; i++) {
        kv_touch(&e->pool, hits[i]);
        s->blocks[s->n_blocks++] = hits[i];
    }
    if (n_hits) {
        s->n_computed += n_hits * B;
        s->n_cached_blocks = s->n_blocks;
    }
    if (!kv_alloc(&e->pool, fresh, s->blocks + s->n_blocks)) abort(); /* checked above */
    s->n_blocks += fresh;
    /* Enter the blocks that will be full after this step in the prefix cache
     * now, as vLLM does: a sequence scheduled later in the same step can hit
     * them, since every layer writes all new K/V before attending. */
    int upto = (s->n_computed + num_new) / B;
    if (upto > s->n_hashes) upto = s->n_hashes;
    for (int j = s->n_cached_blocks; j < upto; j++) kv_cache_block(&e->pool, s->blocks[j], &s->hashes[j]);
    if (upto > s->n_cached_blocks) s->n_cached_blocks = upto;
    return true;
}

static void preempt(struct vllmc_engine *e, struct seq *s) {
    seq_release_blocks(e, s);
    s->n_computed = 0;
    s->state = SEQ_WAITING;
    GROWI(e->waiting, e->cap_waiting, e->n_waiting + 1);
    memmove(e->waiting + 1, e->waiting, (size_t)e->n_waiting * sizeof *e->waiting);
    e->waiting[0] = s;
    e->n_waiting++;
    e->st.preemptions++;
}

static struct chan_seq *chan_of(struct seq *s) { return &s->req->pending[s->index]; }

void engine_finish_seq(struct vllmc_engine *e, struct seq *s, enum vllmc_finish f) {
    if (s->state == SEQ_FINISHED) return;
    seq_release_blocks(e, s);
    s->state = SEQ_FINISHED;
    s->finish = f;
    struct vllmc_request *r = s->req;
    pthread_mutex_lock(&r->mu);
    struct chan_seq *c = chan_of(s);
    /* whatever text was held back for stop-string matching goes out now */
    if (s->text_sent < s->text_len) {
        size_t n = s->text_len - s->text_sent;
        GROW(c->text, c->text_cap, c->text_len + n + 1);
        memcpy(c->text + c->text_len, s->text + s->text_sent, n);
        c->text_len += n;
        c->text[c->text_len] = 0;
        s->text_sent = s->text_len;
    }
    c->finish = f;
    c->news = true;
    r->n_finished++;
    if (r->n_finished == r->n_seqs) r->all_finished = true;
    pthread_mutex_unlock(&r->mu);
    e->st.requests_finished[f]++;
    engine_touch(e, r);
}

/* Offset of the first stop string occurrence that starts at or after from,
 * or -1; *which gets its index. */
static long find_stop(const struct vllmc_request *r, const char *text, size_t len, size_t from, int *which) {
    long best = -1;
    for (int i = 0; i < r->sp.n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        if (!sl || sl > len) continue;
        for (size_t p = from; p + sl <= len; p++) {
            if (best >= 0 && (long)p >= best) break;
            if (text[p] == r->stop[i][0] && !memcmp(text + p, r->stop[i], sl)) {
                best = (long)p;
                *which = i;
                break;
            }
        }
    }
    return best;
}

static bool is_in(int32_t t, const int32_t *a, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] == t) return true;
    return false;
}

/* After sampling token it->tok for s, what the next step depends on: the
 * token joins s, and the finishes that need no text (EOS, a stop token id,
 * max_tokens, max_model_len) are decided into it. A sequence so ended gives
 * its blocks back at once and is not scheduled again (fin_pending); its
 * text and its finish go out in seq_emit. */
static void seq_take(struct vllmc_engine *e, struct seq *s, struct samp_item *it) {
    struct vllmc_request *r = s->req;
    const struct vllmc_sampling_params *sp = &r->sp;
    const int32_t t = it->tok;
    GROWI(s->tokens, s->cap_tokens, s->n_tokens + 1);
    s->tokens[s->n_tokens++] = t;
    s->n_output++;
    e->st.generation_tokens++;
    const struct hparams *hp = &e->model->hp;
    it->fin = VLLMC_NOT_FINISHED;
    it->stop_tok = -1;
    if (!sp->ignore_eos && is_in(t, (const int32_t *)hp->eos_token_ids, hp->n_eos)) it->fin = VLLMC_FINISH_STOP;
    else if (is_in(t, r->stop_ids, sp->n_stop_token_ids)) it->fin = VLLMC_FINISH_STOP, it->stop_tok = t;
    it->at_len = (sp->max_tokens >= 0 && s->n_output >= sp->max_tokens) || s->n_tokens >= e->max_model_len;
    if (it->fin || it->at_len) {
        s->fin_pending = true;
        seq_release_blocks(e, s);
    }
}

/* The rest of a sampled token's way out: detokenize it, check the stop
 * strings, queue token, text and logprobs on the channel, finish. A
 * sequence that ended since seq_take (an abort) gets nothing more. */
static void seq_emit(struct vllmc_engine *e, struct seq *s, const struct samp_item *it) {
    if (s->state == SEQ_FINISHED) return;
    struct vllmc_request *r = s->req;
    const struct vllmc_sampling_params *sp = &r->sp;
    const int32_t t = it->tok;
    const int n_top = sp->logprobs > 0 ? sp->logprobs : 0;
    const struct vllmc_logprob *chosen = &it->chosen, *top = it->top;
    enum vllmc_finish fin = it->fin;
    int32_t stop_tok = it->stop_tok;
    const char *stop_str = NULL;

    size_t text_before = s->text_len;
    if (sp->detokenize && s->ds && (fin == VLLMC_NOT_FINISHED || sp->include_stop_str_in_output))
        engine_detok_push(e, s, t);
    if (fin == VLLMC_NOT_FINISHED && r->sp.n_stop && s->text_len > text_before) {
        size_t from = text_before > (size_t)r->max_stop_len ? text_before - (size_t)r->max_stop_len + 1 : 0;
        int which = -1;
        long at = find_stop(r, s->text, s->text_len, from, &which);
        if (at >= 0) {
            size_t cut = (size_t)at + (sp->include_stop_str_in_output ? strlen(r->stop[which]) : 0);
            if (cut < s->text_len) s->text_len = cut;
            if (s->text_sent > s->text_len) s->text_sent = s->text_len;
            fin = VLLMC_FINISH_STOP;
            stop_str = r->stop[which];
        }
    }
    if (fin == VLLMC_NOT_FINISHED && it->at_len) fin = VLLMC_FINISH_LENGTH;
    /* finished other than by a stop string: what the detokenizer held back
     * (an unfinished character) belongs to the text, as in a full decode */
    if (fin && !stop_str && sp->detokenize && s->ds) engine_detok_flush(e, s);

    /* text that can go out: all of it when finished; otherwise hold back
     * what could still become the start of a stop string, and never split a
     * UTF-8 character */
    size_t sendable = s->text_len;
    if (fin == VLLMC_NOT_FINISHED && r->max_stop_len > 1) {
        size_t hold = (size_t)r->max_stop_len - 1;
        sendable = s->text_len > hold ? s->text_len - hold : 0;
        while (sendable > s->text_sent && ((unsigned char)s->text[sendable] & 0xC0) == 0x80) sendable--;
    }
    if (sendable < s->text_sent) sendable = s->text_sent;

    double now = time_now();
    pthread_mutex_lock(&r->mu);
    struct chan_seq *c = chan_of(s);
    GROWI(c->tok, c->cap_tok, c->n_tok + 1);
    if (sp->logprobs >= 0) {
        GROWI(c->lp, c->cap_lp, c->n_tok + 1);
        GROWI(c->top, c->cap_top, c->n_top + n_top);
        struct vllmc_token_logprobs *l = &c->lp[c->n_tok];
        l->chosen = *chosen;
        l->n_top = n_top;
        l->top = (const struct vllmc_logprob *)(uintptr_t)c->n_top; /* offset until delivery */
        if (n_top) memcpy(c->top + c->n_top, top, (size_t)n_top * sizeof *top);
        c->n_top += n_top;
    }
    c->tok[c->n_tok++] = t;
    if (sendable > s->text_sent) {
        size_t n = sendable - s->text_sent;
        GROW(c->text, c->text_cap, c->text_len + n + 1);
        memcpy(c->text + c->text_len, s->text + s->text_sent, n);
        c->text_len += n;
        c->text[c->text_len] = 0;
        s->text_sent = sendable;
    }
    c->n_total = s->n_output;
    c->news = true;
    if (fin) {
        c->stop_token = stop_tok;
        c->stop_str = stop_str;
    }
    if (r->t_first == 0) r->t_first = now;
    r->t_last = now;
    pthread_mutex_unlock(&r->mu);
    engine_touch(e, r);
    if (fin) engine_finish_seq(e, s, fin);
}

static void remove_finished(struct seq **list, int *n) {
    int k = 0;
    for (int i = 0; i < *n; i++)
        if (list[i]->state != SEQ_FINISHED) list[k++] = list[i];
    *n = k;
}

void engine_publish(struct vllmc_engine *e) {
    /* statistics first, so a reader woken below sees this step counted */
    pthread_mutex_lock(&e->stats_mu);
    e->st_pub = e->st;
    e->st_pub.num_running = e->n_running;
    e->st_pub.num_waiting = e->n_waiting;
    e->st_pub.kv_usage = e->pool.num_blocks > 1 ? (double)kv_used(&e->pool) / (e->pool.num_blocks - 1) : 0;
    pthread_mutex_unlock(&e->stats_mu);
    for (int i = 0; i < e->n_touched; i++) {
        struct vllmc_request *r = e->touched[i];
        pthread_mutex_lock(&r->mu);
        r->any_news = true;
        bool done = r->n_finished == r->n_seqs && !r->engine_done;
        if (done) r->engine_done = true;
        pthread_cond_broadcast(&r->cv);
        /* under the lock: vllmc_request_free clears notify under it too, so
         * no call can come after free returns */
        if (r->notify) r->notify(r->notify_arg);
        pthread_mutex_unlock(&r->mu);
        if (done) engine_release_request(r); /* may free r: nothing touches it after this */
    }
    e->n_touched = 0;
}

/* The sampler's view of sequence s for its sampling row. */
static void seq_view(const struct vllmc_engine *e, const struct seq *s, struct sampler_seq *q) {
    const struct vllmc_request *r = s->req;
    *q = (struct sampler_seq){
        .sp = &r->sp, .prompt = s->tokens, .n_prompt = s->n_prompt,
        .output = s->tokens + s->n_prompt, .n_output = s->n_output,
        .eos_ids = (const int32_t *)e->model->hp.eos_token_ids, .n_eos = e->model->hp.n_eos,
        .bad_words = (const int32_t *const *)r->bw, .bad_words_len = r->bw_len, .n_bad_words = r->n_bw,
    };
    memcpy(q->rng, s->rng, sizeof q->rng);
}

/* One logits row on the host: the sampler's whole-row pass, or the prompt
 * logprob of token pos. Skips rows the device's results settled. */
static void item_sample(struct vllmc_engine *e, struct sampler_scratch *scr, struct samp_item *it) {
    if (it->done) return;
    const int V = e->model->hp.n_vocab;
    struct seq *s = it->s;
    struct vllmc_request *r = s->req;
    float *row = e->logits + (size_t)it->row * V;
    if (it->pos >= 0) { /* prompt logprob of token pos */
        int kk = r->sp.prompt_logprobs;
        sampler_logprobs(scr, row, V, s->tokens[it->pos], kk, &r->plp[it->pos].chosen,
                         r->plp_top + (size_t)it->pos * kk);
        r->plp[it->pos].n_top = kk;
        return;
    }
    struct sampler_seq q;
    seq_view(e, s, &q);
    it->tok = sampler_sample(scr, row, V, &q, &it->chosen, it->top);
    memcpy(it->rng, q.rng, sizeof q.rng);
}

/* The finishing half of a row sent to the device (sampler_dev_finish); a row
 * its results settle is marked done. */
static void item_finish(struct vllmc_engine *e, struct sampler_scratch *scr, struct samp_item *it) {
    if (it->dev < 0) return;
    const struct bk_sample_req *rq = &e->dreq[it->dev];
    const struct bk_sample_res *rs = &e->dres[it->dev];
    const struct sampler_dev_row d = {
        .token = rs->token, .rank = rs->rank, .logprob = rs->logprob, .m = rs->m, .L = rs->L,
        .floor = rs->floor, .n_cand = rs->n_cand, .cid = e->dcid + rq->cand_off, .cv = e->dcv + rq->cand_off,
        .z = rs->z,
    };
    struct sampler_seq q;
    seq_view(e, it->s, &q);
    int32_t tok = sampler_dev_finish(scr, e->model->hp.n_vocab, &q, &it->plan, &d, it->u, &it->chosen, it->top);
    if (tok >= 0) it->tok = tok, it->done = true;
}

/* fn over items[0..n), spread over the backend's host threads when there are
 * at least min_par of them (each thread its own scratch; a sequence's RNG is
 * advanced only by its own item, so results do not depend on the split). */
struct items_ctx {
    struct vllmc_engine *e;
    int n;
    void (*fn)(struct vllmc_engine *, struct sampler_scratch *, struct samp_item *);
};

static void items_thread(void *arg, int ith, int nth) {
    const struct items_ctx *c = arg;
    struct sampler_scratch *scr = c->e->scratch[ith < c->e->n_scratch ? ith : 0];
    for (int i = ith; i < c->n; i += nth) c->fn(c->e, scr, &c->e->items[i]);
}

static void items_run(struct vllmc_engine *e, int n, int n_work, int min_par,
                      void (*fn)(struct vllmc_engine *, struct sampler_scratch *, struct samp_item *)) {
    struct items_ctx c = { .e = e, .n = n, .fn = fn };
    if (n_work >= min_par && n_work > 1) bk_host_parallel(e->bk, items_thread, &c);
    else if (n_work > 0) items_thread(&c, 0, 1);
}

/* Device sampling: the sampling rows the backend's sample_rows can take
 * (sampler_dev_plan) get their vocabulary passes where the logits lg are,
 * one upload of the requests and one download of the results; the sampler
 * finishes them here (sampler_dev_finish) and they are marked done. Each
 * random row's draw is made here from a copy of its generator, so a row the
 * results do not settle (left for item_sample, as are prompt-logprob rows) draws
 * the same number again from the original. 0, or -1 with err. */
static int dev_sample(struct vllmc_engine *e, const float *lg, int n_items, char *err, size_t errlen) {
    static const int32_t bk_mode[] = { [SAMPLER_DEV_ARGMAX] = BK_SAMPLE_ARGMAX, [SAMPLER_DEV_DRAW] = BK_SAMPLE_DRAW,
                                       [SAMPLER_DEV_CANDS] = BK_SAMPLE_NONE, [SAMPLER_DEV_NUCLEUS] = BK_SAMPLE_NONE };
    const int V = e->model->hp.n_vocab;
    int n = 0, slots = 0;
    GROWI(e->dreq, e->cap_dreq, n_items);
    GROWI(e->dres, e->cap_dres, n_items);
    for (int i = 0; i < n_items; i++) {
        struct samp_item *it = &e->items[i];
        it->dev = -1;
        if (it->pos >= 0) continue;
        struct sampler_seq q;
        seq_view(e, it->s, &q);
        sampler_dev_plan(&q, V, &it->plan);
        if (it->plan.mode == SAMPLER_DEV_HOST) continue;
        memcpy(it->rng, q.rng, sizeof it->rng);
        it->u = it->plan.draws ? sampler_uniform(it->rng) : 0;
        e->dreq[n] = (struct bk_sample_req){
            .row = it->row, .mode = bk_mode[it->plan.mode], .k = it->plan.k, .lp = it->plan.lp,
            .inv_t = it->plan.inv_t, .min_p = it->plan.min_p, .u = it->u, .cand_off = slots, .cand_cap = it->plan.cap,
            .wsum = it->plan.wsum,
        };
        slots += it->plan.cap;
        it->dev = n++;
    }
    if (n == 0) return 0;
    GROWI(e->dcid, e->cap_dcid, MAX(slots, 1));
    GROWI(e->dcv, e->cap_dcv, MAX(slots, 1));
    if (bk_sample_rows(e->bk, lg, V, e->dreq, n, e->dres, e->dcid, e->dcv, slots, err, errlen)) return -1;
    /* the finishing halves, over the host threads when they are many (a
     * top_k or top_p row's candidate work is a few microseconds) */
    items_run(e, n_items, n, 8, item_finish);
    for (int i = 0; i < n_items; i++)
        if (e->items[i].dev >= 0) {
            if (e->items[i].done) e->dev_rows++;
            else e->dev_fallbacks++;
        }
    return 0;
}

/* The rows still to sample on the host, from the backend's memory into
 * e->logits (runs of consecutive rows in one copy). */
static int fetch_rows(struct vllmc_engine *e, const float *lg, int n_items, char *err, size_t errlen) {
    const size_t V = (size_t)e->model->hp.n_vocab;
    for (int i = 0; i < n_items;) {
        if (e->items[i].done) {
            i++;
            continue;
        }
        int r0 = e->items[i].row, r1 = r0 + 1, j = i + 1;
        for (; j < n_items && !e->items[j].done && e->items[j].row == r1; j++) r1++;
        if (bk_download(e->bk, e->logits + (size_t)r0 * V, lg + (size_t)r0 * V, (size_t)(r1 - r0) * V * sizeof(float),
                        err, errlen))
            return -1;
        i = j;
    }
    return 0;
}

/* A step whose forward or sampling failed: its sequences end with the error. */
static void step_failed(struct vllmc_engine *e, int n_sched, const char *err) {
    for (int k = 0; k < n_sched; k++) {
        struct seq *s = e->sched[k];
        if (s->state == SEQ_FINISHED) continue;
        pthread_mutex_lock(&s->req->mu);
        snprintf(s->req->error, sizeof s->req->error, "%s", err);
        s->req->has_error = true;
        pthread_mutex_unlock(&s->req->mu);
        engine_finish_seq(e, s, VLLMC_FINISH_ERROR);
    }
    remove_finished(e->running, &e->n_running);
}

static int want_plp(const struct seq *s) { return s->req->sp.prompt_logprobs >= 0 && s->index == 0 && !s->plp_done; }

/* Schedule the next step, build its flat batch and start its forward:
 * 1 when a step was started (step_collect takes its results), 0 when
 * nothing was to run, -1 when the forward failed (err; its sequences are
 * sched[0..fl_n_sched), for step_failed once the last step's tokens are
 * out). */
static int step_launch(struct vllmc_engine *e, char *err, size_t errlen) {
    /* aborts first: their blocks return before anything is scheduled */
    for (int i = 0; i < e->n_running; i++)
        if (atomic_load(&e->running[i]->req->aborted)) engine_finish_seq(e, e->running[i], VLLMC_FINISH_ABORT);
    for (int i = 0; i < e->n_waiting; i++)
        if (atomic_load(&e->waiting[i]->req->aborted)) engine_finish_seq(e, e->waiting[i], VLLMC_FINISH_ABORT);
    remove_finished(e->running, &e->n_running);
    remove_finished(e->waiting, &e->n_waiting);
    /* sequences whose last token was just taken leave the list (step_emit,
     * later in this engine_step, finishes them): their slots are free now */
    {
        int k = 0;
        for (int i = 0; i < e->n_running; i++)
            if (!e->running[i]->fin_pending) e->running[k++] = e->running[i];
        e->n_running = k;
    }
    if (!e->n_running && !e->n_waiting) return 0;
    const int B = e->block_size;
    int budget = e->max_num_batched_tokens, n_sched = 0;
    bool preempted = false;
    GROWI(e->sched, e->cap_sched, e->n_running + e->n_waiting);

    for (int i = 0; i < e->n_running && budget > 0; i++) {
        struct seq *s = e->running[i];
        int num_new = MIN(s->n_tokens - s->n_computed, budget);
        if (want_plp(s)) num_new = MIN(num_new, PLP_CHUNK);
        bool ok = seq_allocate(e, s, num_new, NULL, 0);
        while (!ok) {
            struct seq *victim = e->running[--e->n_running];
            preempt(e, victim);
            preempted = true;
            if (victim == s) break;
            ok = seq_allocate(e, s, num_new, NULL, 0);
        }
        if (!ok) break;
        s->sched_new = num_new;
        e->sched[n_sched++] = s;
        budget -= num_new;
    }
    if (!preempted) {
        int32_t *hits = NULL;
        int cap_hits = 0;
        while (e->n_waiting > 0 && budget > 0 && e->n_running < e->max_num_seqs) {
            struct seq *s = e->waiting[0];
            int n_hits = 0;
            seq_hash_blocks(e, s);
            if (e->pool.caching && s->n_computed == 0 && s->n_blocks == 0 && !want_plp(s)) {
                int max_hit = (s->n_tokens - 1) / B; /* the last token is always computed */
                GROWI(hits, cap_hits, max_hit + 1);
                while (n_hits < max_hit && n_hits < s->n_hashes) {
                    int32_t id = kv_lookup(&e->pool, &s->hashes[n_hits]);
                    if (id < 0) break;
                    hits[n_hits++] = id;
                }
            }
            int num_new = MIN(s->n_tokens - s->n_computed - n_hits * B, budget);
            if (want_plp(s)) num_new = MIN(num_new, PLP_CHUNK);
            if (!seq_allocate(e, s, num_new, hits, n_hits)) break;
            if (e->pool.caching) {
                e->st.prefix_queries += s->n_tokens;
                e->st.prefix_hits += (int64_t)n_hits * B;
            }
            if (s->index == 0 && s->n_output == 0) s->req->n_cached_tokens = n_hits * B;
            if (s->req->t_scheduled == 0) {
                pthread_mutex_lock(&s->req->mu);
                s->req->t_scheduled = time_now();
                pthread_mutex_unlock(&s->req->mu);
            }
            memmove(e->waiting, e->waiting + 1, (size_t)(e->n_waiting - 1) * sizeof *e->waiting);
            e->n_waiting--;
            GROWI(e->running, e->cap_running, e->n_running + 1);
            e->running[e->n_running++] = s;
            s->state = SEQ_RUNNING;
            s->sched_new = num_new;
            e->sched[n_sched++] = s;
            budget -= num_new;
        }
        free(hits);
    }
    if (n_sched == 0) {
        /* Nothing fits although nothing runs: a request larger than the
         * whole pool (submission rejects those, so this is a safeguard). */
        if (e->n_running == 0 && e->n_waiting > 0) {
            struct seq *s = e->waiting[0];
            pthread_mutex_lock(&s->req->mu);
            snprintf(s->req->error, sizeof s->req->error, "request needs more KV blocks than the pool holds");
            s->req->has_error = true;
            pthread_mutex_unlock(&s->req->mu);
            engine_finish_seq(e, s, VLLMC_FINISH_ERROR);
            remove_finished(e->waiting, &e->n_waiting);
        }
        return 0;
    }

    /* the flat batch */
    int T = 0, maxb = 0, n_rows = 0;
    for (int k = 0; k < n_sched; k++) {
        struct seq *s = e->sched[k];
        T += s->sched_new;
        maxb = MAX(maxb, s->n_blocks);
        s->logit_row = -1;
        s->plp_n = 0;
        if (want_plp(s)) s->plp_n = MAX(0, MIN(s->n_computed + s->sched_new, s->n_prompt - 1) - s->n_computed);
        n_rows += s->plp_n + (s->n_computed + s->sched_new == s->n_tokens);
    }
    if ((size_t)T > e->cap_t) {
        size_t n = MAX((size_t)T, 2 * e->cap_t);
        free(e->b_tok), free(e->b_pos), free(e->b_slot);
        e->b_tok = xmalloc(n * sizeof *e->b_tok);
        e->b_pos = xmalloc(n * sizeof *e->b_pos);
        e->b_slot = xmalloc(n * sizeof *e->b_slot);
        e->cap_t = n;
    }
    if ((size_t)n_sched + 1 > e->cap_s) {
        size_t n = MAX((size_t)n_sched + 1, 2 * e->cap_s);
        free(e->b_qs), free(e->b_sl), free(e->b_rl);
        e->b_qs = xmalloc(n * sizeof *e->b_qs);
        e->b_sl = xmalloc(n * sizeof *e->b_sl);
        e->b_rl = xmalloc(n * sizeof *e->b_rl);
        e->cap_s = n;
    }
    GROW(e->b_table, e->cap_table, (size_t)n_sched * (size_t)MAX(maxb, 1));
    GROW(e->b_rows, e->cap_rows, (size_t)MAX(n_rows, 1));
    int t = 0, row = 0;
    for (int k = 0; k < n_sched; k++) {
        struct seq *s = e->sched[k];
        e->b_qs[k] = t;
        for (int i = 0; i < s->sched_new; i++) {
            int p = s->n_computed + i;
            e->b_tok[t + i] = s->tokens[p];
            e->b_pos[t + i] = p;
            e->b_slot[t + i] = s->blocks[p / B] * B + p % B;
        }
        if (s->plp_n) {
            s->plp_row0 = row;
            for (int i = 0; i < s->plp_n; i++) e->b_rows[row++] = t + i;
        }
        t += s->sched_new;
        if (s->n_computed + s->sched_new == s->n_tokens) {
            s->logit_row = row;
            e->b_rows[row++] = t - 1;
        }
        e->b_sl[k] = s->n_computed + s->sched_new;
        e->b_rl[k] = MAX(s->n_prompt, e->b_sl[k]);
        int32_t *tr = e->b_table + (size_t)k * (size_t)maxb;
        memcpy(tr, s->blocks, (size_t)s->n_blocks * sizeof *tr);
        for (int j = s->n_blocks; j < maxb; j++) tr[j] = 0;
    }
    e->b_qs[n_sched] = t;
    const int V = e->model->hp.n_vocab;
    GROW(e->logits, e->cap_logits, (size_t)MAX(n_rows, 1) * (size_t)V);
    struct model_batch b = {
        .n_tokens = T, .tokens = e->b_tok, .positions = e->b_pos, .slot_mapping = e->b_slot,
        .attn = { .n_seqs = n_sched, .query_start = e->b_qs, .seq_len = e->b_sl, .block_table = e->b_table,
                  .max_blocks = maxb },
        .rope_len = e->b_rl, .n_logits = n_rows, .logits_rows = e->b_rows,
    };
    double tf = time_now();
    const float *lg = e->logits; /* where the logits rows are: host memory, or the backend's (dev_sampling) */
    int frc = e->dev_sampling ? model_forward_keep(e->model, &b, &e->kv, e->logits, &lg, err, errlen)
                              : model_forward(e->model, &b, &e->kv, e->logits, err, errlen);
    /* on a device the forward only queues work: the wait for it is in the
     * first download (dev_sample's), counted as forward time in step_collect */
    e->st.forward_seconds += time_now() - tf;
    if (e->t_ready > 0) {
        e->st.gap_seconds += tf - e->t_ready;
        e->st.gap_steps++;
    }
    e->t_ready = 0;
    /* the batch was built from validated ids: a failure fails these requests */
    e->fl_n_sched = n_sched;
    if (frc) return -1;
    for (int k = 0; k < n_sched; k++) atomic_fetch_add(&e->sched[k]->req->refs, 1);
    e->inflight = true;
    e->fl_n_rows = n_rows;
    e->fl_lg = lg;
    return 1;
}

/* Take the started step's results: wait for them (a device's first
 * download), sample, advance each sequence and take its token (seq_take).
 * The sampled items stay in e->items for step_emit. Sequences that ended
 * while the step ran (a stop string found by step_emit) are skipped: their
 * rows were computed for nothing. */
static void step_collect(struct vllmc_engine *e) {
    const int n_sched = e->fl_n_sched, n_rows = e->fl_n_rows;
    const float *lg = e->fl_lg;
    char err[256];
    e->inflight = false;
    /* sampling and prompt logprobs: one item per logits row, spread over
     * the backend's threads (each with its own scratch; a sequence's RNG is
     * advanced only by its own item, so results do not depend on the split) */
    int n_items = 0;
    GROWI(e->items, e->cap_items, MAX(n_rows, 1));
    for (int k = 0; k < n_sched; k++) {
        struct seq *s = e->sched[k];
        if (s->state == SEQ_FINISHED) continue;
        for (int i = 0; i < s->plp_n; i++)
            e->items[n_items++] = (struct samp_item){ .s = s, .row = s->plp_row0 + i, .pos = s->n_computed + i + 1 };
        if (s->logit_row >= 0) e->items[n_items++] = (struct samp_item){ .s = s, .row = s->logit_row, .pos = -1 };
    }
    double tw = time_now();
    if (e->dev_sampling && (dev_sample(e, lg, n_items, err, sizeof err) ||
                            (!e->bk->host_mem && fetch_rows(e, lg, n_items, err, sizeof err)))) {
        step_failed(e, n_sched, err);
        goto out;
    }
    e->t_ready = time_now();
    if (e->dev_sampling) e->st.forward_seconds += e->t_ready - tw;
    int n_host = 0;
    for (int i = 0; i < n_items; i++) n_host += !e->items[i].done;
    items_run(e, n_items, n_host, 2, item_sample);
    for (int k = 0, it = 0; k < n_sched; k++) {
        struct seq *s = e->sched[k];
        if (s->state == SEQ_FINISHED) continue;
        struct vllmc_request *r = s->req;
        it += s->plp_n;
        bool was_prefill = s->n_computed < s->n_prompt;
        s->n_computed += s->sched_new;
        if (want_plp(s) && s->n_computed >= s->n_prompt - 1) {
            s->plp_done = true;
            pthread_mutex_lock(&r->mu);
            r->plp_ready = true;
            pthread_mutex_unlock(&r->mu);
        }
        if (was_prefill && s->n_computed >= s->n_prompt && s->index == 0 && s->n_output == 0)
            e->st.prompt_tokens += s->n_prompt;
        if (s->logit_row < 0) continue;
        struct samp_item *item = &e->items[it++];
        memcpy(s->rng, item->rng, sizeof s->rng);
        seq_take(e, s, item);
    }
    e->n_emit = n_items;
    e->st.steps++;
out:
    /* the batch's references (step_launch): a request may go here */
    for (int k = 0; k < n_sched; k++) engine_release_request(e->sched[k]->req);
}

/* Deliver the tokens step_collect took (seq_emit), in batch order. */
static void step_emit(struct vllmc_engine *e) {
    for (int i = 0; i < e->n_emit; i++)
        if (e->items[i].pos < 0) seq_emit(e, e->items[i].s, &e->items[i]);
    e->n_emit = 0;
    remove_finished(e->running, &e->n_running);
    remove_finished(e->waiting, &e->n_waiting);
}

/* One engine step. Synchronous: launch, collect, emit. With async
 * scheduling (e->overlap): collect the step queued by the previous call,
 * launch the next one, and only then emit the collected tokens, so that
 * detokenizing, stop strings, delivery and the readers' wake-ups run while
 * the device computes. Either way a sequence's tokens are the same; with
 * the overlap, one that a stop string ends has had one more token computed
 * (and dropped) in the step already queued. */
int engine_step(struct vllmc_engine *e) {
    double t0 = time_now();
    char err[256];
    int did = 0, rc;
    if (e->overlap) {
        if (e->inflight) step_collect(e), did = 1;
        rc = step_launch(e, err, sizeof err);
    } else {
        rc = step_launch(e, err, sizeof err);
        if (rc > 0) step_collect(e);
    }
    did |= rc != 0;
    if (did) {
        step_emit(e);
        /* a failed forward fails its sequences after the last step's tokens
         * are out (a stop string found there keeps its finish) */
        if (rc < 0) step_failed(e, e->fl_n_sched, err);
        e->st.busy_seconds += time_now() - t0;
    }
    engine_publish(e);
    return did;
}

void engine_drain(struct vllmc_engine *e) {
    if (e->inflight) step_collect(e);
    e->n_emit = 0;
}
