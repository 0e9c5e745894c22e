/* engine_internal.h — the engine's private structures, shared by engine.c
 * (open/close, the thread, submission and output channels) and sched.c (the
 * step: scheduling, batch building, sampling, stop checks). Nothing outside
 * src/engine includes this. */
#ifndef VLLMC_ENGINE_INTERNAL_H
#define VLLMC_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "engine/kvcache.h"
#include "engine/sampler.h"
#include "model/model.h"
#include "util/util.h"
#include "vllmc.h"

struct detok_stream; /* a struct tokenizer_stream */
struct tokenizer;

#define VLLMC_MAX_LOGPROBS 20 /* vLLM's default max_logprobs */

/* What one sequence has produced since the reader last looked. */
struct chan_seq {
    int32_t *tok;
    int n_tok, cap_tok;
    char *text;
    size_t text_len, text_cap;
    struct vllmc_token_logprobs *lp; /* n_tok entries when logprobs wanted; .top holds an offset until delivery */
    int cap_lp;
    struct vllmc_logprob *top;
    int n_top, cap_top;
    enum vllmc_finish finish;
    int32_t stop_token;
    const char *stop_str;
    int n_total;
    bool news;
};

enum seq_state { SEQ_NEW, SEQ_WAITING, SEQ_RUNNING, SEQ_FINISHED };

struct seq {
    struct vllmc_request *req;
    int index;
    enum seq_state state;
    int32_t *tokens;             /* prompt + output */
    int n_tokens, cap_tokens;
    int n_prompt;
    int n_computed;              /* tokens whose K/V are in the cache */
    int32_t *blocks;             /* block table */
    int n_blocks, cap_blocks;
    struct kv_hash *hashes;      /* chain hashes of full blocks */
    int n_hashes, cap_hashes;
    int n_cached_blocks;         /* leading blocks entered in the prefix cache */
    int n_output;
    uint64_t rng[4];
    bool plp_done;               /* prompt logprobs already produced */
    /* text */
    struct detok_stream *ds;
    char *text;                  /* output text so far (after stop truncation) */
    size_t text_len, text_cap, text_sent;
    enum vllmc_finish finish;
    bool fin_pending;            /* its last token ends it (EOS, stop id, length): not scheduled again,
                                  * blocks already returned; seq_emit finishes it */
    /* this step */
    int sched_new;
    int logit_row;               /* row of the sampling logits, -1 */
    int plp_row0, plp_n;         /* prompt-logprob rows [row0, row0+n) for positions n_computed.. */
};

/* One logits row of a step: a sampling row (pos < 0) or the prompt logprob
 * of prompt token pos. */
struct samp_item {
    struct seq *s;
    int row, pos;
    int32_t tok;
    uint64_t rng[4];
    struct vllmc_logprob chosen, top[VLLMC_MAX_LOGPROBS];
    /* what seq_take decided for a sampled token, for seq_emit */
    enum vllmc_finish fin;       /* STOP for EOS or a stop token id, else NOT_FINISHED */
    int32_t stop_tok;            /* the stop token id, -1 */
    bool at_len;                 /* max_tokens or max_model_len reached */
    /* device sampling (sched.c dev_sample) */
    bool done;                   /* finished from the backend's sample_rows results */
    int dev;                     /* its request there, -1: none */
    double u;                    /* the row's draw */
    struct sampler_dev_plan plan;
};

struct vllmc_request {
    struct vllmc_engine *e;
    atomic_int refs;             /* the caller's and the engine's */
    atomic_int aborted;
    uint64_t serial;
    char id[64];
    /* parameters, deep-copied */
    struct vllmc_sampling_params sp;
    int32_t *prompt;
    int n_prompt;
    char *salt;
    char **stop;
    int max_stop_len;
    int32_t *stop_ids, *bias_ids, *allowed;
    float *bias_vals;
    int32_t **bw;                /* bad words as token sequences */
    int *bw_len;
    int n_bw;
    void (*notify)(void *);
    void *notify_arg;
    /* sequences */
    int n_seqs, n_finished;
    struct seq *seqs;
    bool engine_done;            /* engine dropped its reference */
    /* output channel (mu guards everything below) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct chan_seq *pending, *delivered;
    struct vllmc_seq_output *out_seqs;
    bool any_news, all_finished, finished_read;
    struct vllmc_token_logprobs *plp; /* prompt logprobs (engine-written, published once) */
    struct vllmc_logprob *plp_top;
    bool plp_ready, plp_sent;
    int n_cached_tokens;
    double t_arrival, t_scheduled, t_first, t_last;
    char error[256];
    bool has_error;
    struct vllmc_request *next_sub; /* submission queue link */
};

struct vllmc_engine {
    struct backend *bk;
    struct model *model;
    struct model_kv kv;
    void *kv_mem;
    enum dtype kv_dtype;
    int block_size, num_blocks, max_model_len;
    int max_num_seqs, max_num_batched_tokens;
    struct kv_pool pool;
    struct tokenizer *tok;       /* NULL when the checkpoint has no tokenizer.json */
    char dir[4096];
    struct vllmc_sampling_params defaults;
    uint64_t seed;

    /* thread + submission queue */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t sub_mu;
    pthread_cond_t sub_cv;
    struct vllmc_request *sub_head, *sub_tail;
    bool stop;
    uint64_t serial;

    /* engine-thread state */
    struct seq **running;        /* admission order */
    int n_running, cap_running;
    struct seq **waiting;        /* arrival order (preempted ones at the front) */
    int n_waiting, cap_waiting;
    struct sampler_scratch **scratch; /* one per backend thread */
    int n_scratch;
    struct samp_item *items;
    int cap_items;
    /* per-step buffers, grown only */
    int32_t *b_tok, *b_pos, *b_slot, *b_qs, *b_sl, *b_rl, *b_table, *b_rows;
    size_t cap_t, cap_s, cap_table, cap_rows;
    float *logits;
    size_t cap_logits;
    /* device sampling: the backend offers sample_rows (and VLLMC_DEVICE_SAMPLING != 0) */
    bool dev_sampling;
    char dev_desc[192];   /* CUDA: the card and the matmul activation mode, for logs (vllmc_model_info) */
    struct bk_sample_req *dreq;
    struct bk_sample_res *dres;
    int32_t *dcid;
    float *dcv;
    int cap_dreq, cap_dres, cap_dcid, cap_dcv;
    int64_t dev_rows, dev_fallbacks; /* rows finished from the device's results; rows that needed the whole row */
    struct seq **sched;
    int cap_sched;
    /* async scheduling (sched.c): the step queued on the backend whose
     * results step_collect has not taken yet (its batch is sched[0..fl_n_sched),
     * each sequence's request holding one reference until then), and the
     * items of the last collected step whose tokens step_emit has not
     * delivered yet */
    bool overlap;
    bool inflight;
    int fl_n_sched, fl_n_rows;
    const float *fl_lg;
    int n_emit;
    double t_ready;              /* when the last collected step's results were back; 0: the thread
                                  * has slept since (no gap to count) */
    struct vllmc_request **touched;
    int n_touched, cap_touched;

    /* statistics: st is the engine thread's; st_pub its copy for readers (stats_mu) */
    struct vllmc_engine_stats st;
    pthread_mutex_t stats_mu;
    struct vllmc_engine_stats st_pub;
};

/* sched.c */
int engine_step(struct vllmc_engine *e); /* 1 if work was done, 0 if idle */
void engine_drain(struct vllmc_engine *e); /* at shutdown: wait for a queued step, drop its results */
void engine_finish_seq(struct vllmc_engine *e, struct seq *s, enum vllmc_finish f);
void engine_publish(struct vllmc_engine *e); /* wake readers of requests touched this step */
void engine_touch(struct vllmc_engine *e, struct vllmc_request *r);
void engine_release_request(struct vllmc_request *r); /* drop one reference */

/* text (engine.c): incremental detokenizing of one sequence */
struct detok_stream *engine_detok_new(struct vllmc_engine *e, const struct vllmc_request *r);
void engine_detok_free(struct detok_stream *ds);
/* Append the text of token id to s->text; flush: what was held back. */
void engine_detok_push(struct vllmc_engine *e, struct seq *s, int32_t id);
void engine_detok_flush(struct vllmc_engine *e, struct seq *s);

#endif
