/* kvcache.c — block pool, LRU free queue and prefix-cache map (see kvcache.h). */
#define OPENSSL_SUPPRESS_DEPRECATED 1 /* SHA256_Init & co.: no EVP context allocation per block */
#include "engine/kvcache.h"

#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "util/util.h"

static void q_remove(struct kv_pool *p, int32_t id) {
    struct kv_block *b = &p->blocks[id];
    if (b->prev >= 0) p->blocks[b->prev].next = b->next;
    else p->head = b->next;
    if (b->next >= 0) p->blocks[b->next].prev = b->prev;
    else p->tail = b->prev;
    b->prev = b->next = -1;
    b->queued = false;
    p->n_free--;
}

static void q_push_tail(struct kv_pool *p, int32_t id) {
    struct kv_block *b = &p->blocks[id];
    b->prev = p->tail;
    b->next = -1;
    if (p->tail >= 0) p->blocks[p->tail].next = id;
    else p->head = id;
    p->tail = id;
    b->queued = true;
    p->n_free++;
}

static uint32_t bucket_of(const struct kv_pool *p, const struct kv_hash *h) {
    uint32_t v;
    memcpy(&v, h->b, sizeof v); /* the hash is uniformly distributed already */
    return v & (p->n_buckets - 1);
}

int kv_pool_init(struct kv_pool *p, int num_blocks, int block_size, bool caching, enum kv_hash_algo algo,
                 char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    if (num_blocks < 2) return errf(err, errlen, "KV pool needs at least 2 blocks, got %d", num_blocks), -1;
    p->num_blocks = num_blocks;
    p->block_size = block_size;
    p->caching = caching;
    p->algo = algo;
    p->hash_len = algo == KV_HASH_SHA256 ? 32 : 16;
    p->blocks = xcalloc((size_t)num_blocks, sizeof *p->blocks);
    p->head = p->tail = -1;
    for (int32_t i = 0; i < num_blocks; i++) {
        p->blocks[i].prev = p->blocks[i].next = p->blocks[i].hnext = -1;
        if (i > 0) q_push_tail(p, i); /* block 0 is the null block */
    }
    p->blocks[0].ref = 1;
    p->n_buckets = 16;
    while (p->n_buckets < (uint32_t)num_blocks) p->n_buckets <<= 1;
    p->buckets = xmalloc(p->n_buckets * sizeof *p->buckets);
    memset(p->buckets, 0xff, p->n_buckets * sizeof *p->buckets);
    /* Per-process parent of the first block, as vLLM's NONE_HASH without
     * PYTHONHASHSEED: hashes cannot be predicted from outside. */
    size_t got = 0;
    while (got < sizeof p->none_hash.b) {
        ssize_t r = getrandom(p->none_hash.b + got, sizeof p->none_hash.b - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return 0;
}

void kv_pool_free(struct kv_pool *p) {
    free(p->blocks);
    free(p->buckets);
    memset(p, 0, sizeof *p);
}

void kv_block_hash(const struct kv_pool *p, const struct kv_hash *parent, const int32_t *tokens, const char *salt,
                   struct kv_hash *out) {
    const struct kv_hash *par = parent ? parent : &p->none_hash;
    uint8_t tok[4 * 64];
    int B = p->block_size;
    for (int i = 0; i < B; i++) { /* little-endian bytes whatever the host */
        uint32_t v = (uint32_t)tokens[i];
        tok[4 * i] = (uint8_t)v, tok[4 * i + 1] = (uint8_t)(v >> 8);
        tok[4 * i + 2] = (uint8_t)(v >> 16), tok[4 * i + 3] = (uint8_t)(v >> 24);
    }
    /* salt is length-prefixed so (tokens, salt) pairs cannot alias */
    uint8_t slen[9] = { 0 };
    size_t sl = salt ? strlen(salt) : 0;
    if (salt) {
        slen[0] = 1;
        for (int i = 0; i < 8; i++) slen[1 + i] = (uint8_t)((uint64_t)sl >> (8 * i));
    }
    memset(out, 0, sizeof *out);
    if (p->algo == KV_HASH_SHA256) {
        SHA256_CTX c;
        SHA256_Init(&c);
        SHA256_Update(&c, par->b, (size_t)p->hash_len);
        SHA256_Update(&c, tok, 4 * (size_t)B);
        SHA256_Update(&c, slen, sizeof slen);
        if (sl) SHA256_Update(&c, salt, sl);
        SHA256_Final(out->b, &c);
    } else {
        XXH3_state_t st;
        XXH3_128bits_reset(&st);
        XXH3_128bits_update(&st, par->b, (size_t)p->hash_len);
        XXH3_128bits_update(&st, tok, 4 * (size_t)B);
        XXH3_128bits_update(&st, slen, sizeof slen);
        if (sl) XXH3_128bits_update(&st, salt, sl);
        XXH128_hash_t h = XXH3_128bits_digest(&st);
        XXH128_canonicalFromHash((XXH128_canonical_t *)out->b, h);
    }
}

int32_t kv_lookup(const struct kv_pool *p, const struct kv_hash *h) {
    if (!p->caching) return -1;
    for (int32_t id = p->buckets[bucket_of(p, h)]; id >= 0; id = p->blocks[id].hnext)
        if (!memcmp(p->blocks[id].hash.b, h->b, (size_t)p->hash_len)) return id;
    return -1;
}

static void uncache(struct kv_pool *p, int32_t id) {
    struct kv_block *b = &p->blocks[id];
    if (!b->cached) return;
    int32_t *link = &p->buckets[bucket_of(p, &b->hash)];
    while (*link != id) link = &p->blocks[*link].hnext;
    *link = b->hnext;
    b->hnext = -1;
    b->cached = false;
}

void kv_touch(struct kv_pool *p, int32_t id) {
    struct kv_block *b = &p->blocks[id];
    if (b->ref == 0 && b->queued) q_remove(p, id);
    b->ref++;
}

bool kv_alloc(struct kv_pool *p, int n, int32_t *out) {
    if (n > p->n_free) return false;
    for (int i = 0; i < n; i++) {
        int32_t id = p->head;
        q_remove(p, id);
        uncache(p, id); /* lazy eviction */
        p->blocks[id].ref = 1;
        out[i] = id;
    }
    return true;
}

void kv_release(struct kv_pool *p, const int32_t *ids, int n) {
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id <= 0) continue;
        struct kv_block *b = &p->blocks[id];
        if (--b->ref == 0) q_push_tail(p, id);
    }
}

void kv_cache_block(struct kv_pool *p, int32_t id, const struct kv_hash *h) {
    if (!p->caching || id <= 0 || p->blocks[id].cached || kv_lookup(p, h) >= 0) return;
    struct kv_block *b = &p->blocks[id];
    b->hash = *h;
    b->cached = true;
    uint32_t k = bucket_of(p, h);
    b->hnext = p->buckets[k];
    p->buckets[k] = id;
}

int kv_pool_check(const struct kv_pool *p, char *err, size_t errlen) {
    int n = 0;
    int32_t prev = -1;
    for (int32_t id = p->head; id >= 0; id = p->blocks[id].next) {
        if (id == 0) return errf(err, errlen, "null block in the free queue"), -1;
        if (p->blocks[id].ref != 0) return errf(err, errlen, "block %d queued with ref %d", id, p->blocks[id].ref), -1;
        if (p->blocks[id].prev != prev) return errf(err, errlen, "free queue link broken at %d", id), -1;
        if (++n > p->num_blocks) return errf(err, errlen, "free queue has a cycle"), -1;
        prev = id;
    }
    if (prev != p->tail) return errf(err, errlen, "free queue tail is %d, walk ends at %d", p->tail, prev), -1;
    if (n != p->n_free) return errf(err, errlen, "free queue holds %d blocks, n_free says %d", n, p->n_free), -1;
    for (int32_t id = 1; id < p->num_blocks; id++) {
        const struct kv_block *b = &p->blocks[id];
        if (b->ref < 0) return errf(err, errlen, "block %d has ref %d", id, b->ref), -1;
        if ((b->ref == 0) != b->queued) return errf(err, errlen, "block %d: ref %d but queued=%d", id, b->ref, b->queued), -1;
        if (b->cached && kv_lookup(p, &b->hash) < 0) return errf(err, errlen, "cached block %d not in the map", id), -1;
    }
    return 0;
}
