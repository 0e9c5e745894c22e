/* tok_bpe.c — the BPE model of tokenizer.json: vocabulary, merges, the merge
 * loop and the word cache.
 *
 * The merge loop is tokenizers' Word::merge_all: symbols in a linked list,
 * candidate merges in a min-heap ordered by (rank, position); an entry whose
 * pair no longer maps to the same new id is stale and dropped. That exact
 * rule (not just "lowest rank first") is kept so that vocabularies where two
 * pairs make the same token behave identically.
 *
 * Byte-level vocabularies (GPT-2's byte-to-unicode alphabet, "Ġ" for a space)
 * are turned around at load: when ByteLevel is the last pre-tokenizer, every
 * token is also keyed by its raw bytes, so encode never builds the mapped
 * string — a word's bytes are looked up directly (byte_id[] for the initial
 * symbols, `raw` for ignore_merges). Ids and merges are unchanged.
 *
 * Owns: both maps, the merge table, the word cache. Does not: dropout (a
 * random regularizer for training; ignored, as inference never sets it),
 * Unigram/WordPiece/WordLevel models (load fails with a message). */
#include "text/tok_internal.h"

#include <stdio.h>

struct sym { int32_t id, prev, next; uint32_t len; };
struct hent { uint32_t rank, pos; int32_t id; };
struct bpe_scratch {
    struct sym *sym; size_t nsym, capsym;
    struct hent *heap; size_t nheap, capheap;
    struct tbuf s; /* one character with prefix/suffix */
};

void tok_bpe_scratch_free(struct bpe_scratch *s) {
    if (!s) return;
    free(s->sym);
    free(s->heap);
    free(s->s.p);
    free(s);
}

/* ---- word cache ------------------------------------------------------------ */

static void wc_init(struct word_cache *c) {
    c->per_shard = 512;
    c->slot = xcalloc(WC_SHARDS * c->per_shard, sizeof *c->slot);
    for (int i = 0; i < WC_SHARDS; i++) pthread_mutex_init(&c->lock[i], NULL);
}

static void wc_free(struct word_cache *c) {
    if (!c->slot) return;
    for (int i = 0; i < WC_SHARDS; i++) pthread_mutex_destroy(&c->lock[i]);
    free(c->slot);
    c->slot = NULL;
}

static struct wc_slot *wc_slot_of(const struct word_cache *c, uint64_t h, int *shard) {
    *shard = (int)(h & (WC_SHARDS - 1));
    size_t i = (size_t)(h >> 6) & (c->per_shard - 1);
    return &c->slot[(size_t)*shard * c->per_shard + i];
}

/* Appends the cached ids of w; false if not cached. */
static bool wc_get(const struct word_cache *c, uint64_t h, const char *w, size_t n, struct ibuf *out) {
    int sh;
    struct wc_slot *s = wc_slot_of(c, h, &sh);
    pthread_mutex_t *lk = (pthread_mutex_t *)&c->lock[sh];
    pthread_mutex_lock(lk);
    bool hit = s->h == h && s->klen == n && s->nids && !memcmp(s->key, w, n);
    if (hit)
        for (int i = 0; i < s->nids; i++) ibuf_push(out, s->ids[i]);
    pthread_mutex_unlock(lk);
    return hit;
}

static void wc_put(const struct word_cache *c, uint64_t h, const char *w, size_t n, const int32_t *ids, size_t nids) {
    int sh;
    struct wc_slot *s = wc_slot_of(c, h, &sh);
    pthread_mutex_t *lk = (pthread_mutex_t *)&c->lock[sh];
    pthread_mutex_lock(lk);
    s->h = h;
    s->klen = (uint8_t)n;
    s->nids = (uint8_t)nids;
    memcpy(s->key, w, n);
    memcpy(s->ids, ids, nids * sizeof *ids);
    pthread_mutex_unlock(lk);
}

/* ---- load ------------------------------------------------------------------ */

/* GPT-2's byte <-> unicode alphabet: printable Latin-1 bytes map to
 * themselves, the other 68 to U+0100.. in byte order. */
static uint32_t byte_char(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
    return 256u + (uint32_t)n;
}

/* The raw bytes of a byte-level token; -1 if a character is outside the alphabet. */
static int unbyte(const int16_t *inv, const char *s, size_t n, struct tbuf *out) {
    out->n = 0;
    size_t i = 0;
    while (i < n) {
        int l;
        uint32_t c = utf8_decode(s + i, &l);
        if (c >= 512 || inv[c] < 0) return -1;
        tbuf_putc(out, (char)inv[c]);
        i += (size_t)l;
    }
    return 0;
}

static char *opt_str(const struct tjson *j, size_t *len) {
    if (!tj_is_str(j)) { if (len) *len = 0; return NULL; }
    char *s = xmalloc(j->n + 1);
    memcpy(s, j->s, j->n + 1);
    if (len) *len = j->n;
    return s;
}

int tok_bpe_load(struct tokenizer *t, const struct tjson *model, char *err, size_t errlen) {
    struct bpe *b = &t->bpe;
    memset(b, 0, sizeof *b);
    b->unk_id = -1;
    const struct tjson *type = tok_json_get(model, "type");
    if (type && (!tj_is_str(type) || strcmp(type->s, "BPE")))
        return errf(err, errlen, "model.type: %s models are not supported (only BPE)", tj_is_str(type) ? type->s : "?");
    const struct tjson *vocab = tok_json_get(model, "vocab"), *merges = tok_json_get(model, "merges");
    if (!vocab || vocab->type != TJ_OBJ) return errf(err, errlen, "model.vocab: expected an object, got %s", tok_json_type_name(vocab));
    if (!merges || merges->type != TJ_ARR) return errf(err, errlen, "model.merges: expected an array, got %s", tok_json_type_name(merges));
    const struct tjson *j;
    if ((j = tok_json_get(model, "ignore_merges")) && tj_is_bool(j)) b->ignore_merges = j->type == TJ_TRUE;
    if ((j = tok_json_get(model, "byte_fallback")) && tj_is_bool(j)) b->byte_fallback = j->type == TJ_TRUE;
    if ((j = tok_json_get(model, "fuse_unk")) && tj_is_bool(j)) b->fuse_unk = j->type == TJ_TRUE;
    b->cont_prefix = opt_str(tok_json_get(model, "continuing_subword_prefix"), &b->cont_len);
    b->eow_suffix = opt_str(tok_json_get(model, "end_of_word_suffix"), &b->eow_len);

    tok_strmap_init(&b->vocab, vocab->n);
    for (const struct tjson *m = vocab->child; m; m = m->next) {
        if (m->type != TJ_NUM || m->num < 0 || m->num > (double)INT32_MAX - 1 || m->num != (double)(int64_t)m->num)
            return errf(err, errlen, "model.vocab[\"%.100s\"]: expected a non-negative integer id", m->key);
        tok_strmap_put(&b->vocab, m->key, m->klen, (int32_t)m->num);
    }
    const struct tjson *unk = tok_json_get(model, "unk_token");
    if (tj_is_str(unk)) {
        b->unk_id = tok_strmap_get(&b->vocab, unk->s, unk->n);
        b->unk_missing = b->unk_id < 0;
    }

    /* merges: ["a b", ...] or [["a", "b"], ...] */
    tok_mergemap_init(&b->merges, merges->n);
    struct tbuf cat = { 0 };
    uint32_t rank = 0;
    size_t idx = 0;
    for (const struct tjson *m = merges->child; m; m = m->next, idx++) {
        const char *a, *c;
        size_t al, cl;
        if (m->type == TJ_STR) {
            if (m->n >= 8 && !memcmp(m->s, "#version", 8)) continue;
            const char *sp = memchr(m->s, ' ', m->n);
            if (!sp || memchr(sp + 1, ' ', m->n - (size_t)(sp + 1 - m->s))) {
                free(cat.p);
                return errf(err, errlen, "model.merges[%zu]: \"%.100s\" is not two tokens separated by one space", idx, m->s);
            }
            a = m->s; al = (size_t)(sp - m->s);
            c = sp + 1; cl = m->n - al - 1;
        } else if (m->type == TJ_ARR && m->n == 2 && tj_is_str(m->child) && tj_is_str(m->child->next)) {
            a = m->child->s; al = m->child->n;
            c = m->child->next->s; cl = m->child->next->n;
        } else {
            free(cat.p);
            return errf(err, errlen, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"], got %s", idx, tok_json_type_name(m));
        }
        int32_t ia = tok_strmap_get(&b->vocab, a, al), ic = tok_strmap_get(&b->vocab, c, cl);
        size_t skip = MIN(b->cont_len, cl);
        cat.n = 0;
        tbuf_put(&cat, a, al);
        tbuf_put(&cat, c + skip, cl - skip);
        int32_t inew = tok_strmap_get(&b->vocab, cat.p, cat.n);
        if (ia < 0 || ic < 0 || inew < 0) {
            const char *which = ia < 0 ? a : ic < 0 ? c : cat.p;
            int wl = (int)(ia < 0 ? al : ic < 0 ? cl : cat.n);
            errf(err, errlen, "model.merges[%zu]: token \"%.*s\" is not in the vocabulary", idx, MIN(wl, 100), which);
            free(cat.p);
            return -1;
        }
        tok_mergemap_put(&b->merges, ia, ic, rank++, inew);
    }
    free(cat.p);

    for (int i = 0; i < 256; i++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", i);
        b->fallback_id[i] = tok_strmap_get(&b->vocab, name, 6);
        b->byte_id[i] = -1;
    }
    for (int i = 0; i < 128; i++) {
        char ch = (char)i;
        b->ascii_id[i] = tok_strmap_get(&b->vocab, &ch, 1);
    }
    wc_init(&b->cache);
    return 0;
}

/* Called by tokenizer.c once it knows ByteLevel is the last pre-tokenizer. */
void tok_bpe_enable_raw(struct bpe *b) {
    if (b->cont_len || b->eow_len) return;
    int16_t inv[512];
    for (int i = 0; i < 512; i++) inv[i] = -1;
    for (int x = 0; x < 256; x++) inv[byte_char(x)] = (int16_t)x;
    tok_strmap_init(&b->raw, b->vocab.n);
    struct tbuf raw = { 0 };
    for (size_t i = 0; i < b->vocab.cap; i++) {
        const struct strmap_slot *s = &b->vocab.slot[i];
        if (s->len == UINT32_MAX) continue;
        if (unbyte(inv, b->vocab.keys + s->off, s->len, &raw)) continue; /* unreachable from byte input */
        tok_strmap_put(&b->raw, raw.p, raw.n, s->val);
    }
    free(raw.p);
    for (int x = 0; x < 256; x++) {
        char ch = (char)x;
        b->byte_id[x] = tok_strmap_get(&b->raw, &ch, 1);
    }
    b->raw_mode = true;
}

void tok_bpe_free(struct bpe *b) {
    tok_strmap_free(&b->vocab);
    tok_strmap_free(&b->raw);
    tok_mergemap_free(&b->merges);
    free(b->cont_prefix);
    free(b->eow_suffix);
    wc_free(&b->cache);
}

/* ---- tokenize -------------------------------------------------------------- */

static void sym_push(struct bpe_scratch *s, int32_t id, uint32_t len) {
    if (s->nsym == s->capsym) {
        s->capsym = s->capsym ? s->capsym * 2 : 64;
        s->sym = realloc(s->sym, s->capsym * sizeof *s->sym);
        if (!s->sym) { log_error("out of memory"); abort(); }
    }
    int32_t i = (int32_t)s->nsym;
    s->sym[i] = (struct sym){ .id = id, .prev = i - 1, .next = -1, .len = len };
    if (i > 0) s->sym[i - 1].next = i;
    s->nsym++;
}

static inline bool hless(const struct hent *a, const struct hent *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct bpe_scratch *s, uint32_t rank, uint32_t pos, int32_t id) {
    if (s->nheap == s->capheap) {
        s->capheap = s->capheap ? s->capheap * 2 : 64;
        s->heap = realloc(s->heap, s->capheap * sizeof *s->heap);
        if (!s->heap) { log_error("out of memory"); abort(); }
    }
    size_t i = s->nheap++;
    struct hent e = { rank, pos, id };
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(&e, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
}

static struct hent heap_pop(struct bpe_scratch *s) {
    struct hent top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0, n = s->nheap;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t c = l + 1 < n && hless(&s->heap[l + 1], &s->heap[l]) ? l + 1 : l;
        if (!hless(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static void merge_all(const struct bpe *b, struct bpe_scratch *s) {
    s->nheap = 0;
    for (size_t i = 0; i + 1 < s->nsym; i++) {
        const struct merge_slot *m = tok_mergemap_get(&b->merges, s->sym[i].id, s->sym[i + 1].id);
        if (m) heap_push(s, m->rank, (uint32_t)i, m->id);
    }
    while (s->nheap) {
        struct hent top = heap_pop(s);
        struct sym *cur = &s->sym[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        struct sym right = s->sym[cur->next];
        const struct merge_slot *m = tok_mergemap_get(&b->merges, cur->id, right.id);
        if (!m || m->id != top.id) continue; /* stale */
        s->sym[cur->next].len = 0;
        cur->id = top.id;
        cur->len += right.len;
        cur->next = right.next;
        if (right.next >= 0) s->sym[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            m = tok_mergemap_get(&b->merges, s->sym[cur->prev].id, cur->id);
            if (m) heap_push(s, m->rank, (uint32_t)cur->prev, m->id);
        }
        if (cur->next >= 0) {
            m = tok_mergemap_get(&b->merges, cur->id, s->sym[cur->next].id);
            if (m) heap_push(s, m->rank, top.pos, m->id);
        }
    }
}

/* The unk / byte-fallback handling of BPE::merge_word for one character (or
 * byte) not in the vocabulary. *unk carries a pending unk (id, len). */
static int add_unknown(const struct bpe *b, struct bpe_scratch *s, const char *ch, size_t nch, size_t n,
                       int32_t *unk_id, uint32_t *unk_len, char *err, size_t errlen) {
    if (b->byte_fallback) { /* the bytes of the looked-up string, prefix/suffix included */
        bool all = true;
        for (size_t k = 0; k < nch; k++) all = all && b->fallback_id[(uint8_t)ch[k]] >= 0;
        if (all) {
            for (size_t k = 0; k < nch; k++) sym_push(s, b->fallback_id[(uint8_t)ch[k]], 1);
            return 0;
        }
    }
    if (b->unk_missing) return errf(err, errlen, "the unk token of model.unk_token is not in the vocabulary");
    if (b->unk_id < 0) return 0; /* dropped, as tokenizers does without an unk token */
    if (*unk_id >= 0 && b->fuse_unk) { *unk_len += (uint32_t)n; return 0; }
    if (*unk_id >= 0) sym_push(s, *unk_id, *unk_len);
    *unk_id = b->unk_id;
    *unk_len = (uint32_t)n;
    return 0;
}

int tok_bpe_tokenize(const struct bpe *b, struct bpe_scratch **scr, const char *w, size_t n, struct ibuf *out,
                 char *err, size_t errlen) {
    if (n == 0) return 0;
    if (b->ignore_merges) {
        int32_t id = tok_strmap_get(b->raw_mode ? &b->raw : &b->vocab, w, n);
        if (id >= 0) { ibuf_push(out, id); return 0; }
    }
    uint64_t h = 0;
    bool cacheable = n <= WC_KEY;
    if (cacheable) {
        h = tok_hash(w, n);
        if (wc_get(&b->cache, h, w, n, out)) return 0;
    }
    if (!*scr) *scr = xcalloc(1, sizeof **scr);
    struct bpe_scratch *s = *scr;
    s->nsym = 0;
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
    if (b->raw_mode) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = b->byte_id[(uint8_t)w[i]];
            if (id >= 0) {
                if (unk_id >= 0) { sym_push(s, unk_id, unk_len); unk_id = -1; }
                sym_push(s, id, 1);
            } else if (add_unknown(b, s, w + i, 1, 1, &unk_id, &unk_len, err, errlen)) {
                return -1;
            }
        }
    } else {
        size_t i = 0;
        bool plain = !b->cont_len && !b->eow_len;
        while (i < n) {
            int l = utf8_len_of_lead((uint8_t)w[i]);
            int32_t id;
            if (plain) {
                id = l == 1 ? b->ascii_id[(uint8_t)w[i]] : tok_strmap_get(&b->vocab, w + i, (size_t)l);
            } else {
                s->s.n = 0;
                if (i > 0) tbuf_put(&s->s, b->cont_prefix, b->cont_len);
                tbuf_put(&s->s, w + i, (size_t)l);
                if (i + (size_t)l >= n) tbuf_put(&s->s, b->eow_suffix, b->eow_len);
                id = tok_strmap_get(&b->vocab, s->s.p, s->s.n);
            }
            if (id >= 0) {
                if (unk_id >= 0) { sym_push(s, unk_id, unk_len); unk_id = -1; }
                sym_push(s, id, (uint32_t)l);
            } else if (add_unknown(b, s, plain ? w + i : s->s.p, plain ? (size_t)l : s->s.n, (size_t)l, &unk_id,
                                   &unk_len, err, errlen)) {
                return -1;
            }
            i += (size_t)l;
        }
    }
    if (unk_id >= 0) sym_push(s, unk_id, unk_len);
    merge_all(b, s);
    size_t start = out->n;
    for (size_t i = 0; i < s->nsym; i++)
        if (s->sym[i].len) ibuf_push(out, s->sym[i].id);
    size_t nids = out->n - start;
    if (cacheable && nids > 0 && nids <= WC_IDS) wc_put(&b->cache, h, w, n, out->p + start, nids);
    return 0;
}
