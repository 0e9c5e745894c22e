/* tok_decode.c — ids -> text: tokenizer.json's decoders, tokenizer_decode,
 * and the streaming detokenizer.
 *
 * Decode is tokenizers' Tokenizer::decode: the ids' token strings (special
 * ones dropped when asked; ids with no token skipped) go through the decoder
 * chain as a list of strings, and the result is their concatenation; with no
 * decoder the tokens are joined with spaces. Decoders: ByteLevel (bytes back
 * from GPT-2's alphabet, then Rust's lossy UTF-8), Metaspace, ByteFallback,
 * Fuse, Strip, Replace, WordPiece, BPEDecoder, Sequence.
 *
 * The stream is tokenizers' DecodeStream (vLLM's method): a window of ids
 * whose decode is compared with the previous window's, so decoders that look
 * at neighbours (Metaspace's first token, Strip, ByteFallback runs) give the
 * same text as decoding everything at once. Owns: per-stream id window and
 * text buffers. Does not: clean_up_tokenization_spaces (transformers'
 * post-edit, which vLLM's streaming path does not apply either), CTC. */
#include "text/tok_internal.h"

#include <stdio.h>

/* ---- load ---------------------------------------------------------------- */

static int one_char_of(const struct tjson *j, char *out, int *len) {
    if (!tj_is_str(j) || j->n == 0 || j->n > 4) return -1;
    int l;
    utf8_decode(j->s, &l);
    if ((uint32_t)l != j->n) return -1;
    memcpy(out, j->s, j->n);
    out[j->n] = 0;
    *len = (int)j->n;
    return 0;
}

static struct decoder *dec_new(struct tokenizer *t) {
    t->dec = realloc(t->dec, (size_t)(t->n_dec + 1) * sizeof *t->dec);
    if (!t->dec) { log_error("out of memory"); abort(); }
    struct decoder *d = &t->dec[t->n_dec++];
    memset(d, 0, sizeof *d);
    return d;
}

int tok_decoder_load(struct tokenizer *t, const struct tjson *j, const char *path, char *err, size_t errlen) {
    if (!j || j->type == TJ_NULL) return 0;
    t->has_decoder = true;
    const struct tjson *ty = tok_json_get(j, "type");
    if (!tj_is_str(ty)) return errf(err, errlen, "%s.type: expected a string", path);
    const char *type = ty->s;
    if (!strcmp(type, "Sequence")) {
        const struct tjson *arr = tok_json_get(j, "decoders");
        if (!arr || arr->type != TJ_ARR) return errf(err, errlen, "%s.decoders: expected an array", path);
        int i = 0;
        for (const struct tjson *c = arr->child; c; c = c->next, i++) {
            char p2[256];
            snprintf(p2, sizeof p2, "%s.decoders[%d]", path, i);
            if (tok_decoder_load(t, c, p2, err, errlen)) return -1;
        }
        return 0;
    }
    if (t->n_dec >= 32) return errf(err, errlen, "%s: too many decoders", path);
    if (!strcmp(type, "ByteLevel")) {
        dec_new(t)->type = D_BYTELEVEL;
    } else if (!strcmp(type, "ByteFallback")) {
        dec_new(t)->type = D_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        dec_new(t)->type = D_FUSE;
    } else if (!strcmp(type, "Metaspace")) {
        char r[5];
        int rl;
        if (one_char_of(tok_json_get(j, "replacement"), r, &rl))
            return errf(err, errlen, "%s.replacement: expected one character", path);
        int ps = PS_ALWAYS;
        const struct tjson *s = tok_json_get(j, "prepend_scheme");
        if (tj_is_str(s)) {
            if (!strcmp(s->s, "always")) ps = PS_ALWAYS;
            else if (!strcmp(s->s, "first")) ps = PS_FIRST;
            else if (!strcmp(s->s, "never")) ps = PS_NEVER;
            else return errf(err, errlen, "%s.prepend_scheme: \"%s\" is not always/first/never", path, s->s);
        }
        const struct tjson *aps = tok_json_get(j, "add_prefix_space");
        if (aps && aps->type == TJ_FALSE) ps = PS_NEVER;
        struct decoder *d = dec_new(t);
        d->type = D_METASPACE;
        memcpy(d->repl, r, sizeof r);
        d->repl_len = rl;
        d->prepend_scheme = ps;
    } else if (!strcmp(type, "Strip")) {
        const struct tjson *st = tok_json_get(j, "start"), *sp = tok_json_get(j, "stop");
        struct decoder *d = dec_new(t);
        d->type = D_STRIP;
        if (one_char_of(tok_json_get(j, "content"), d->repl, &d->repl_len))
            return errf(err, errlen, "%s.content: expected one character", path);
        d->start = st && st->type == TJ_NUM ? (int)st->num : 0;
        d->stop = sp && sp->type == TJ_NUM ? (int)sp->num : 0;
    } else if (!strcmp(type, "Replace")) {
        const struct tjson *c = tok_json_get(j, "content"), *pat = tok_json_get(j, "pattern");
        if (!tj_is_str(c)) return errf(err, errlen, "%s.content: expected a string", path);
        struct decoder *d = dec_new(t);
        d->type = D_REPLACE;
        d->content = xmalloc(c->n + 1);
        memcpy(d->content, c->s, c->n + 1);
        d->clen = c->n;
        const struct tjson *s = tok_json_get(pat, "String"), *r = tok_json_get(pat, "Regex");
        if (tj_is_str(s)) tok_regex_literal(&d->re, s->s, s->n);
        else if (tj_is_str(r)) {
            char e2[512];
            if (tok_regex_compile(&d->re, r->s, r->n, e2, sizeof e2)) return errf(err, errlen, "%s.pattern: %s", path, e2);
        } else return errf(err, errlen, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", path);
    } else if (!strcmp(type, "WordPiece")) {
        const struct tjson *p = tok_json_get(j, "prefix"), *c = tok_json_get(j, "cleanup");
        struct decoder *d = dec_new(t);
        d->type = D_WORDPIECE;
        const char *pre = tj_is_str(p) ? p->s : "##";
        d->clen = tj_is_str(p) ? p->n : 2;
        d->content = xmalloc(d->clen + 1);
        memcpy(d->content, pre, d->clen + 1);
        d->cleanup = !c || c->type != TJ_FALSE;
    } else if (!strcmp(type, "BPEDecoder")) {
        const struct tjson *s = tok_json_get(j, "suffix");
        struct decoder *d = dec_new(t);
        d->type = D_BPE;
        const char *suf = tj_is_str(s) ? s->s : "</w>";
        d->clen = tj_is_str(s) ? s->n : 4;
        d->content = xmalloc(d->clen + 1);
        memcpy(d->content, suf, d->clen + 1);
    } else {
        return errf(err, errlen, "%s: decoder type \"%s\" is not supported", path, type);
    }
    return 0;
}

void tok_decoders_free(struct tokenizer *t) {
    for (int i = 0; i < t->n_dec; i++) {
        tok_regex_free(&t->dec[i].re);
        free(t->dec[i].content);
    }
    free(t->dec);
    t->dec = NULL;
    t->n_dec = 0;
}

/* ---- token lists ----------------------------------------------------------- */

struct tlist { struct tbuf buf; size_t *off, *len; size_t n, cap; };

static void tl_reset(struct tlist *l) { l->buf.n = 0; l->n = 0; }
static void tl_free(struct tlist *l) { free(l->buf.p); free(l->off); free(l->len); }
static void tl_begin(struct tlist *l) { /* start a new token at the end of buf */
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->off = realloc(l->off, l->cap * sizeof *l->off);
        l->len = realloc(l->len, l->cap * sizeof *l->len);
        if (!l->off || !l->len) { log_error("out of memory"); abort(); }
    }
    l->off[l->n] = l->buf.n;
    l->len[l->n] = 0;
    l->n++;
}
static void tl_put(struct tlist *l, const char *s, size_t n) { /* append to the current token */
    tbuf_put(&l->buf, s, n);
    l->len[l->n - 1] += n;
}
static void tl_add(struct tlist *l, const char *s, size_t n) { tl_begin(l); tl_put(l, s, n); }
static inline const char *tl_s(const struct tlist *l, size_t i) { return l->buf.p + l->off[i]; }

struct dec_scratch { struct tlist a, b; struct tbuf tmp; struct spanbuf sp; struct tok_matcher m; };
static void dec_scratch_free(struct dec_scratch *s) {
    tl_free(&s->a);
    tl_free(&s->b);
    free(s->tmp.p);
    free(s->sp.p);
    tok_matcher_free(&s->m);
}

/* GPT-2 alphabet char -> byte, -1 if not in it */
static int16_t unbyte_tab[512];
static pthread_once_t unbyte_once = PTHREAD_ONCE_INIT;
static void unbyte_init(void) {
    for (int i = 0; i < 512; i++) unbyte_tab[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t c;
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) c = (uint32_t)b;
        else c = 256u + (uint32_t)n++;
        unbyte_tab[c] = (int16_t)b;
    }
}

static bool is_byte_token(const char *s, size_t n, uint8_t *b) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return false;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v = v * 16 + d;
    }
    *b = (uint8_t)v;
    return true;
}

static const char FFFD[3] = { (char)0xEF, (char)0xBF, (char)0xBD };

/* One decoder: in -> out. */
static void dec_apply(const struct decoder *d, struct dec_scratch *s, const struct tlist *in, struct tlist *out) {
    tl_reset(out);
    switch (d->type) {
    case D_BYTELEVEL: {
        pthread_once(&unbyte_once, unbyte_init);
        struct tbuf *raw = &s->tmp;
        raw->n = 0;
        for (size_t i = 0; i < in->n; i++) {
            const char *t = tl_s(in, i);
            size_t n = in->len[i], start = raw->n, q = 0;
            bool ok = true;
            while (q < n) {
                int l;
                uint32_t c = utf8_decode(t + q, &l);
                if (c >= 512 || unbyte_tab[c] < 0) { ok = false; break; }
                tbuf_putc(raw, (char)unbyte_tab[c]);
                q += (size_t)l;
            }
            if (!ok) { raw->n = start; tbuf_put(raw, t, n); }
        }
        tl_begin(out);
        size_t before = out->buf.n;
        tok_utf8_lossy_append(&out->buf, raw->p ? raw->p : "", raw->n);
        out->len[0] = out->buf.n - before;
        break;
    }
    case D_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            tl_begin(out);
            const char *t = tl_s(in, i);
            size_t n = in->len[i], q = 0;
            while (q < n) {
                int l = utf8_len_of_lead((uint8_t)t[q]);
                if (l == d->repl_len && !memcmp(t + q, d->repl, (size_t)l)) {
                    if (!(i == 0 && d->prepend_scheme != PS_NEVER)) tl_put(out, " ", 1);
                } else {
                    tl_put(out, t + q, (size_t)l);
                }
                q += (size_t)l;
            }
        }
        break;
    case D_BYTEFALLBACK: {
        struct tbuf *pend = &s->tmp;
        pend->n = 0;
        for (size_t i = 0; i <= in->n; i++) {
            uint8_t b;
            bool is_b = i < in->n && is_byte_token(tl_s(in, i), in->len[i], &b);
            if (is_b) { tbuf_putc(pend, (char)b); continue; }
            if (pend->n) {
                if (tok_utf8_valid_prefix(pend->p, pend->n) == pend->n) tl_add(out, pend->p, pend->n);
                else
                    for (size_t k = 0; k < pend->n; k++) tl_add(out, FFFD, 3);
                pend->n = 0;
            }
            if (i < in->n) tl_add(out, tl_s(in, i), in->len[i]);
        }
        break;
    }
    case D_FUSE:
        tl_begin(out);
        for (size_t i = 0; i < in->n; i++) tl_put(out, tl_s(in, i), in->len[i]);
        break;
    case D_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            const char *t = tl_s(in, i);
            size_t n = in->len[i], a = 0, b = n;
            size_t cl = (size_t)d->repl_len;
            for (int k = 0; k < d->start && a + cl <= b && !memcmp(t + a, d->repl, cl); k++) a += cl;
            for (int k = 0; k < d->stop && b >= a + cl && !memcmp(t + b - cl, d->repl, cl); k++) b -= cl;
            tl_add(out, t + a, b - a);
        }
        break;
    case D_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            tl_begin(out);
            s->sp.n = 0;
            const char *t = tl_s(in, i);
            if (tok_regex_find(&d->re, &s->m, t, in->len[i], &s->sp)) { tl_put(out, t, in->len[i]); continue; }
            for (size_t k = 0; k < s->sp.n; k++) {
                if (s->sp.p[k].match) tl_put(out, d->content, d->clen);
                else tl_put(out, t + s->sp.p[k].s, s->sp.p[k].e - s->sp.p[k].s);
            }
        }
        break;
    case D_WORDPIECE: {
        static const char *from[] = { " .", " ?", " !", " ,", " ' ", " n't", " 'm", " do not", " 's", " 've", " 're" };
        static const char *to[] = { ".", "?", "!", ",", "'", "n't", "'m", " don't", "'s", "'ve", "'re" };
        for (size_t i = 0; i < in->n; i++) {
            struct tbuf *w = &s->tmp;
            w->n = 0;
            const char *t = tl_s(in, i);
            size_t n = in->len[i];
            if (i != 0) {
                if (n >= d->clen && !memcmp(t, d->content, d->clen)) tbuf_put(w, t + d->clen, n - d->clen);
                else { tbuf_putc(w, ' '); tbuf_put(w, t, n); }
            } else {
                tbuf_put(w, t, n);
            }
            if (d->cleanup) {
                for (size_t r = 0; r < ARRAY_LEN(from); r++) { /* str::replace, one pattern at a time */
                    size_t fl = strlen(from[r]), tlen = strlen(to[r]);
                    struct tbuf nw = { 0 };
                    size_t q = 0;
                    while (q < w->n) {
                        if (q + fl <= w->n && !memcmp(w->p + q, from[r], fl)) { tbuf_put(&nw, to[r], tlen); q += fl; }
                        else tbuf_putc(&nw, w->p[q++]);
                    }
                    free(w->p);
                    *w = nw;
                }
            }
            tl_add(out, w->p ? w->p : "", w->n);
        }
        break;
    }
    case D_BPE:
        for (size_t i = 0; i < in->n; i++) {
            tl_begin(out);
            const char *t = tl_s(in, i);
            size_t n = in->len[i], q = 0;
            const char *rep = i + 1 == in->n ? "" : " ";
            while (q < n) {
                if (d->clen && q + d->clen <= n && !memcmp(t + q, d->content, d->clen)) {
                    tl_put(out, rep, strlen(rep));
                    q += d->clen;
                } else {
                    tl_put(out, t + q, 1);
                    q++;
                }
            }
        }
        break;
    }
}

/* Decodes into out (reset first). -1 on an id out of range. */
static int decode_into(const struct tokenizer *t, const int32_t *ids, size_t n, int skip, struct dec_scratch *s,
                       struct tbuf *out) {
    out->n = 0;
    tbuf_reserve(out, 16);
    out->p[0] = 0;
    struct tlist *cur = &s->a, *nxt = &s->b;
    tl_reset(cur);
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab) return -1;
        if (t->tok_len[id] == UINT32_MAX) continue;
        if (skip && t->is_special[id]) continue;
        tl_add(cur, t->strs + t->tok_off[id], t->tok_len[id]);
    }
    if (!t->has_decoder) {
        for (size_t i = 0; i < cur->n; i++) {
            if (i) tbuf_putc(out, ' ');
            tbuf_put(out, tl_s(cur, i), cur->len[i]);
        }
        return 0;
    }
    for (int k = 0; k < t->n_dec; k++) {
        dec_apply(&t->dec[k], s, cur, nxt);
        struct tlist *x = cur;
        cur = nxt;
        nxt = x;
    }
    for (size_t i = 0; i < cur->n; i++) tbuf_put(out, tl_s(cur, i), cur->len[i]);
    return 0;
}

char *tokenizer_decode(const struct tokenizer *t, const int32_t *ids, int n, int skip_special_tokens, size_t *len) {
    if (len) *len = 0;
    if (n < 0 || (n > 0 && !ids)) return NULL;
    struct dec_scratch s = { 0 };
    struct tbuf out = { 0 };
    int rc = decode_into(t, ids, (size_t)n, skip_special_tokens, &s, &out);
    dec_scratch_free(&s);
    if (rc) { free(out.p); return NULL; }
    if (len) *len = out.n;
    return out.p;
}

/* ---- streaming --------------------------------------------------------------- */

struct tokenizer_stream {
    const struct tokenizer *t;
    int skip;
    bool byte_fallback;   /* the decoders include ByteFallback */
    bool last_byte;       /* the window ends with a "<0xXX>" token */
    struct ibuf ids;      /* the window */
    struct tbuf prefix;   /* decode of ids[0..prefix_index) as last emitted */
    size_t prefix_index;
    struct tbuf str, text;
    struct dec_scratch s;
};

struct tokenizer_stream *tokenizer_stream_new(const struct tokenizer *t, int skip_special_tokens,
                                              int spaces_between_special_tokens) {
    (void)spaces_between_special_tokens;
    struct tokenizer_stream *s = xcalloc(1, sizeof *s);
    s->t = t;
    s->skip = skip_special_tokens;
    for (int i = 0; i < t->n_dec; i++) s->byte_fallback = s->byte_fallback || t->dec[i].type == D_BYTEFALLBACK;
    return s;
}

void tokenizer_stream_free(struct tokenizer_stream *s) {
    if (!s) return;
    free(s->ids.p);
    free(s->prefix.p);
    free(s->str.p);
    free(s->text.p);
    dec_scratch_free(&s->s);
    free(s);
}

static bool ends_fffd(const struct tbuf *b) { return b->n >= 3 && !memcmp(b->p + b->n - 3, FFFD, 3); }

static void set_text(struct tokenizer_stream *s, const char *p, size_t n, const char **text, size_t *len) {
    s->text.n = 0;
    tbuf_put(&s->text, p, n);
    *text = s->text.p;
    *len = n;
}

/* ByteFallback decodes a whole run of byte tokens at once, and an invalid run
 * becomes one U+FFFD per byte, the valid bytes before the bad one included.
 * So text is never emitted while the window ends inside such a run: beyond
 * tokenizers' DecodeStream, which would emit the valid start of a run and
 * then disagree with the full decode. */
static bool ends_in_byte_run(const struct tokenizer_stream *s, int32_t id) {
    uint8_t b;
    const struct tokenizer *t = s->t;
    if (!s->byte_fallback) return false;
    if (t->tok_len[id] == UINT32_MAX || (s->skip && t->is_special[id])) return s->last_byte; /* invisible */
    return is_byte_token(t->strs + t->tok_off[id], t->tok_len[id], &b);
}

int tokenizer_stream_push(struct tokenizer_stream *s, int32_t id, const char **text, size_t *len) {
    set_text(s, "", 0, text, len);
    if (id < 0 || id >= s->t->n_vocab) return -1;
    if (s->prefix.n == 0 && s->ids.n > 0 && !s->last_byte) {
        decode_into(s->t, s->ids.p, s->ids.n, s->skip, &s->s, &s->str);
        if (!ends_fffd(&s->str)) {
            s->prefix.n = 0;
            tbuf_put(&s->prefix, s->str.p, s->str.n);
            s->prefix_index = s->ids.n;
        }
    }
    ibuf_push(&s->ids, id);
    s->last_byte = ends_in_byte_run(s, id);
    if (s->last_byte) return 0;
    decode_into(s->t, s->ids.p, s->ids.n, s->skip, &s->s, &s->str);
    if (s->str.n > s->prefix.n && !ends_fffd(&s->str)) {
        /* tokenizers requires str to start with prefix (an error there); the
         * decoders used by real models keep it so */
        set_text(s, s->str.p + s->prefix.n, s->str.n - s->prefix.n, text, len);
        size_t new_prefix_index = s->ids.n - s->prefix_index;
        memmove(s->ids.p, s->ids.p + s->prefix_index, (s->ids.n - s->prefix_index) * sizeof *s->ids.p);
        s->ids.n -= s->prefix_index;
        decode_into(s->t, s->ids.p, s->ids.n, s->skip, &s->s, &s->prefix);
        s->prefix_index = new_prefix_index;
    }
    return 0;
}

void tokenizer_stream_flush(struct tokenizer_stream *s, const char **text, size_t *len) {
    set_text(s, "", 0, text, len);
    if (!s->ids.n) return;
    decode_into(s->t, s->ids.p, s->ids.n, s->skip, &s->s, &s->str);
    if (s->str.n > s->prefix.n) {
        set_text(s, s->str.p + s->prefix.n, s->str.n - s->prefix.n, text, len);
        s->prefix.n = 0;
        tbuf_put(&s->prefix, s->str.p, s->str.n);
        s->prefix_index = s->ids.n;
    }
    s->last_byte = false;
}
