/* kvcache.h — the KV block pool and the automatic prefix cache (DESIGN.md 5).
 *
 * Owns the bookkeeping of one KV-cache group's blocks: reference counts, the
 * LRU free queue (a doubly linked list through the blocks, O(1) removal from
 * the middle), and the map from block hash to cached block. Block 0 is the
 * null block: never handed out, never freed, never cached.
 *
 * Semantics follow vLLM v1's BlockPool / KVCacheManager:
 *   - a full block's hash chains over its parent's:
 *       h_i = H(h_{i-1} || token ids of block i || extra keys)
 *     with extra keys = the request's cache_salt on the first block only and
 *     h_{-1} = 32 random bytes per process. H = SHA-256 (default) or XXH3-128.
 *   - a block is cached (its hash entered in the map) as soon as it is full;
 *     a hit touches it (ref++, out of the free queue if it was free).
 *   - freeing drops ref counts; blocks reaching 0 go to the free queue tail,
 *     in the order given (callers pass a sequence's blocks last-first, so the
 *     longer-prefix tail blocks are evicted first). They keep their hash
 *     until popped for reuse (lazy eviction).
 *
 * Does not: know about requests, tokens beyond hashing them, or the KV
 * memory itself (the engine owns that; this only hands out block ids). Not
 * thread-safe: the engine thread is its only user. */
#ifndef VLLMC_KVCACHE_H
#define VLLMC_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KV_HASH_MAX 32

enum kv_hash_algo { KV_HASH_SHA256, KV_HASH_XXH3 };

struct kv_hash {
    uint8_t b[KV_HASH_MAX];
};

struct kv_block {
    int32_t ref;
    int32_t prev, next;          /* free queue links (-1 when not queued) */
    int32_t hnext;               /* hash bucket chain */
    bool queued, cached;
    struct kv_hash hash;         /* valid when cached */
};

struct kv_pool {
    int num_blocks;              /* including the null block 0 */
    int block_size;
    enum kv_hash_algo algo;
    int hash_len;                /* 32 (SHA-256) or 16 (XXH3-128) */
    bool caching;                /* prefix caching enabled */
    struct kv_block *blocks;
    int32_t head, tail;          /* free queue: head = LRU */
    int n_free;                  /* blocks in the free queue (cached-but-free included) */
    int32_t *buckets;            /* hash map: bucket -> first block id, -1 */
    uint32_t n_buckets;          /* power of two */
    struct kv_hash none_hash;    /* parent of the first block */
};

int kv_pool_init(struct kv_pool *p, int num_blocks, int block_size, bool caching, enum kv_hash_algo algo,
                 char *err, size_t errlen);
void kv_pool_free(struct kv_pool *p);

/* Hash of one full block of block_size token ids (salt only on the first). */
void kv_block_hash(const struct kv_pool *p, const struct kv_hash *parent, const int32_t *tokens,
                   const char *salt, struct kv_hash *out);

/* The cached block with this hash, or -1. */
int32_t kv_lookup(const struct kv_pool *p, const struct kv_hash *h);

/* Take a reference on a cached (possibly free) block. */
void kv_touch(struct kv_pool *p, int32_t id);

/* Pop n fresh blocks (ref 1, hash dropped) into out. Returns false, taking
 * nothing, if fewer than n are free. */
bool kv_alloc(struct kv_pool *p, int n, int32_t *out);

/* Drop one reference on each of ids[0..n), in order; blocks reaching 0 go
 * to the free queue tail. */
void kv_release(struct kv_pool *p, const int32_t *ids, int n);

/* Enter a full block in the prefix cache under h (no-op when caching is off
 * or another block already holds h). */
void kv_cache_block(struct kv_pool *p, int32_t id, const struct kv_hash *h);

/* Blocks not free (ref > 0), excluding the null block. */
static inline int kv_used(const struct kv_pool *p) { return p->num_blocks - 1 - p->n_free; }

/* Consistency check for tests: every block is either referenced or queued,
 * the queue is well linked, n_free matches, and each cached block is in its
 * bucket. Returns 0 or -1 with a message. */
int kv_pool_check(const struct kv_pool *p, char *err, size_t errlen);

#endif
