/* sampler.h — the next token of one sequence from one row of logits, with
 * vLLM v1's semantics (vllm/v1/sample/sampler.py and the ops it calls).
 *
 * Order, as vLLM applies it to a row:
 *   raw logprobs   log_softmax of the unprocessed row (vLLM's default
 *                  logprobs mode "raw_logprobs"): the chosen token's logprob
 *                  and rank, and the top k, whatever the knobs below do
 *   allowed_token_ids   every other token -inf
 *   bad_words      the last token of a banned sequence is -inf when the
 *                  output ends with the rest of it (one-token words: always)
 *   min_tokens     EOS ids and stop_token_ids -inf while n_output < min_tokens
 *                  (EOS even with ignore_eos: vLLM's all_stop_token_ids)
 *   logit_bias     added
 *   penalties      repetition over prompt + output tokens (positive logits
 *                  divided, the rest multiplied), then frequency * count and
 *                  presence over output tokens (subtracted)
 *   greedy         temperature 0: argmax of the processed row, lowest id on
 *                  ties (torch.argmax); no random draw
 *   otherwise      divide by the temperature (0 < T < 0.01 counts as 0.01, as
 *                  SamplingParams does), min_p, top_k (ties with the k-th
 *                  value kept), top_p (the smallest top set whose probability
 *                  reaches top_p, at least one token; among equal logits the
 *                  higher id ranks first, as the stable ascending sort of
 *                  vLLM's apply_top_k_top_p), then one uniform draw from the
 *                  sequence's own generator, inverted on the renormalised
 *                  distribution.
 *
 * Owns: nothing but per-thread scratch (sized once for the vocabulary; no
 * allocation per call). Every function is reentrant: the engine may sample
 * rows of one step on several threads, one scratch per thread. The passes
 * over the whole vocabulary are vector loops (sampler_kern.h) compiled per
 * instruction set; a seeded sequence draws the same tokens on every set up to
 * float rounding (a draw within ~1e-7 of a token boundary may differ).
 *
 * Does not: validate a request against the model beyond sampler_check_params,
 * tokenize bad words (the engine passes token sequences), check stop strings
 * or decide when a sequence ends, or reproduce torch's random streams (a
 * seeded sequence reproduces itself here, not vLLM's exact tokens). */
#ifndef VLLMC_SAMPLER_H
#define VLLMC_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vllmc.h"

/* One row of a step's logits, for one sequence. Token ids outside [0, V) in
 * any list are ignored. */
struct sampler_seq {
    const struct vllmc_sampling_params *sp;
    const int32_t *prompt; int n_prompt;   /* repetition_penalty counts prompt + output tokens, as vLLM */
    const int32_t *output; int n_output;   /* generated so far: penalties, min_tokens, bad_words */
    const int32_t *eos_ids; int n_eos;     /* masked (with sp->stop_token_ids) while n_output < min_tokens */
    const int32_t *const *bad_words; const int *bad_words_len; int n_bad_words; /* token-id sequences */
    uint64_t rng[4];                       /* per-sequence state, advanced only by this sequence's draws */
};

/* Seed a sequence's generator (xoshiro256**): the engine passes sp->seed and
 * the sequence index (n > 1 siblings get distinct streams) when has_seed, else
 * its own seed mixed with a request counter. */
void sampler_seed(uint64_t rng[4], uint64_t seed, uint64_t index);

/* The draw sampler_sample makes: uniform in [0, 1), 53 bits; advances rng. */
double sampler_uniform(uint64_t rng[4]);

struct sampler_scratch;                     /* per-thread scratch sized for n_vocab */
struct sampler_scratch *sampler_scratch_new(int n_vocab); /* about 33 bytes per vocabulary entry */
void sampler_scratch_free(struct sampler_scratch *s);     /* NULL is fine */
/* The instruction set of the scratch's vocabulary passes ("avx512", "avx2",
 * "sse2", "neon"; the widest the CPU runs by default). force selects one
 * (tests, benchmarks); NULL when this CPU cannot run it. */
const char *sampler_scratch_isa(struct sampler_scratch *s, const char *force);

/* Sample one token from logits[V] (V <= the scratch's n_vocab). The row is
 * used as working space: its contents afterwards are unspecified. When
 * sp->logprobs >= 0, *chosen gets the token, its logprob and rank under the
 * raw distribution (rank = how many tokens have a logprob >= it, as vLLM) and
 * top[0 .. min(k, V)) the k = sp->logprobs most likely tokens, best first
 * (equal logprobs: lower id first), rank 1, 2, ...; either pointer may be
 * NULL. A random (non-greedy) row makes exactly one draw from q->rng.
 * If every candidate is -inf the result is token 0, as torch's argmax over
 * such a row. Returns the token id. */
int32_t sampler_sample(struct sampler_scratch *s, float *logits, int V, struct sampler_seq *q,
                       struct vllmc_logprob *chosen, struct vllmc_logprob *top);

/* Raw logprob and rank of `token` and the top k (k < 0: none; clamped to V)
 * under log_softmax(logits), for prompt_logprobs. top may be NULL when k <= 0. */
void sampler_logprobs(struct sampler_scratch *s, const float *logits, int V, int32_t token, int k,
                      struct vllmc_logprob *chosen, struct vllmc_logprob *top);

/* The checks vLLM's SamplingParams and input processor make on the knobs
 * this file reads (ranges of temperature, top_p, top_k, min_p, penalties,
 * n > 1 with greedy, min_tokens <= max_tokens, empty or out-of-vocabulary
 * allowed_token_ids, out-of-vocabulary logit_bias ids, empty stop strings and
 * bad words), with vLLM's messages. Returns 0, or VLLMC_EINVAL with err set. */
int sampler_check_params(const struct vllmc_sampling_params *sp, int n_vocab, char *err, size_t errlen);

/* ---- rows whose vocabulary passes run on a device ------------------------
 * A device backend can run the O(V) passes of a row where its logits are
 * (backend.h sample_rows) and return a few numbers and a short candidate
 * list; these are the host's two halves of that split. For the same row
 * and the same uniform draw they give what sampler_sample gives: the same
 * candidate-list code picks top_k tokens; a dense draw's sums are added in
 * another order (a draw within ~1e-7 of a token boundary may differ, as
 * between instruction sets), and the device's log-sum-exp may differ from
 * the host's by float rounding. */

enum sampler_dev_mode {
    SAMPLER_DEV_HOST = 0, /* the row needs the host's passes: sample it with sampler_sample */
    SAMPLER_DEV_ARGMAX,   /* greedy: the device's argmax is the token */
    SAMPLER_DEV_DRAW,     /* temperature [+ min_p] over the whole row: the device draws */
    SAMPLER_DEV_CANDS,    /* 0 < top_k <= SAMPLER_DEV_MAX_K [+ top_p, min_p]: the host draws among candidates */
    SAMPLER_DEV_NUCLEUS,  /* top_p without top_k [+ min_p]: the host draws among the best
                           * SAMPLER_DEV_NUCLEUS_K candidates if they hold the nucleus (the row's
                           * weight sum z from the device says), else the whole row is the host's */
};
#define SAMPLER_DEV_MAX_K 64
#define SAMPLER_DEV_NUCLEUS_K 256

/* What the device computes for one row (backend.h bk_sample_req). */
struct sampler_dev_plan {
    enum sampler_dev_mode mode;
    int k;              /* candidates at or above the k-th largest raw logit (0: none) */
    int cap;            /* candidate slots to give the row */
    bool lp;            /* logprobs wanted: the log-sum-exp, the device's token's logprob and rank */
    bool draws;         /* the row takes one draw from the sequence's generator */
    bool wsum;          /* NUCLEUS: the device also sums the weights (inv_t, min_p) */
    float inv_t, min_p; /* DRAW, NUCLEUS: weights exp((l - max) * inv_t), 0 under min_p */
};

/* HOST for a row the logit processors change (allowed_token_ids, a bad word
 * that applies now, min_tokens not reached, logit_bias, penalties) and for
 * top_k > SAMPLER_DEV_MAX_K. */
void sampler_dev_plan(const struct sampler_seq *q, int V, struct sampler_dev_plan *p);

/* The device's results for one row (backend.h bk_sample_res). */
struct sampler_dev_row {
    int32_t token, rank; /* ARGMAX, DRAW: the token; with lp its rank and logprob */
    float logprob;
    float m, L;          /* the row's max and log-sum-exp (lp) */
    float floor;         /* k > 0: the candidates are every token with a raw logit >= floor ... */
    int n_cand;          /* ... this many (more than the plan's cap: not all are here) ... */
    const int32_t *cid;  /* ... in id order, with their raw logits */
    const float *cv;
    double z;            /* NUCLEUS: the sum of the row's weights */
};

/* Finish a planned row with the draw u (read only when p->draws): returns
 * the token and fills *chosen and top[0 .. logprobs) as sampler_sample
 * does, or -1 when the device's results do not settle it (candidates cut
 * off, fewer than k finite logits, a rank the candidates cannot count): the
 * caller then runs sampler_sample on the whole row with the generator as it
 * was before u was drawn, which draws the same u. Touches only scratch. */
int32_t sampler_dev_finish(struct sampler_scratch *s, int V, const struct sampler_seq *q,
                           const struct sampler_dev_plan *p, const struct sampler_dev_row *d, double u,
                           struct vllmc_logprob *chosen, struct vllmc_logprob *top);

/* ---- for tests and debugging --------------------------------------------
 * The same code paths as sampler_sample, stopped early. */

/* Replace logits[V] by the processed row: allowed_token_ids, bad_words,
 * min_tokens, logit_bias and penalties applied (no temperature). */
void sampler_apply_processors(struct sampler_scratch *s, float *logits, int V, const struct sampler_seq *q);

/* probs[V] = the distribution the next draw of sampler_sample would come
 * from (one-hot when greedy); logits is used as working space. Draws nothing. */
void sampler_distribution(struct sampler_scratch *s, float *logits, int V, const struct sampler_seq *q,
                          float *probs);

#endif
