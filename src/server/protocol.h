/* protocol.h — the OpenAI / vLLM request protocol: JSON bodies of
 * /v1/completions, /v1/chat/completions, /tokenize and /detokenize parsed
 * and validated into plain structs, and OpenAI error objects.
 *
 * Owns: the parsed JSON document of one request and every array built from
 * it (prompts, stop strings, logit bias, ...), freed by proto_request_free.
 * Does not: tokenize, render chat templates or talk to the engine; it needs
 * only jansson and the types of vllmc.h, so the fuzz target
 * (tests/fuzz/fuzz_request.c) links it alone. */
#ifndef VLLMC_SERVER_PROTOCOL_H
#define VLLMC_SERVER_PROTOCOL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "vllmc.h"

enum proto_kind { PROTO_COMPLETION, PROTO_CHAT, PROTO_TOKENIZE, PROTO_DETOKENIZE };

/* An error as vLLM reports it: {"error": {"message", "type", "param", "code"}}
 * with code = the HTTP status. */
struct proto_error {
    int status;
    const char *type;   /* "BadRequestError", "NotFoundError", ... (static) */
    char param[64];     /* "" -> null */
    char message[1024];
};

/* What validation needs to know about the served model. */
struct proto_limits {
    const char *const *model_names; /* --served-model-name values; [0] is reported */
    int n_model_names;
    int max_model_len;
    int n_vocab;
    int max_logprobs;               /* vLLM's default: 20 */
    const struct vllmc_sampling_params *defaults; /* the engine's (generation_config applied) */
};

/* One prompt: text to tokenize, or token ids given by the client. */
struct proto_prompt {
    const char *text;   /* UTF-8, points into the request's JSON; NULL for ids */
    size_t text_len;
    int32_t *ids;       /* malloc'd; NULL for text */
    int n_ids;
};

struct proto_request {
    enum proto_kind kind;
    json_t *root;                   /* the parsed body (owned) */
    const char *model;              /* served name to report in responses */

    int n_prompts;                  /* completion / tokenize-completion / detokenize */
    struct proto_prompt *prompts;

    /* chat (and tokenize in chat form) */
    json_t *messages;               /* owned copy; list-of-parts contents joined to strings */
    json_t *tools, *documents;      /* borrowed from root, or NULL */
    json_t *chat_template_kwargs;   /* borrowed object, or NULL */
    const char *chat_template;      /* per-request template source, or NULL */
    int add_generation_prompt, continue_final_message;
    int add_special_tokens;         /* completion default 1, chat default 0 */

    /* generation */
    struct vllmc_sampling_params sp;/* defaults overlaid with the request; arrays below */
    int max_tokens;                 /* requested; -1: not given */
    int stream, include_usage, continuous_usage;
    int echo;
    int logprobs;                   /* completion `logprobs` / chat `top_logprobs`; -1: none */
    int prompt_logprobs;            /* -1: none */
    int return_tokens_as_token_ids, return_token_ids, return_token_strs;
    int truncate_prompt_tokens;     /* 0: off; -1: max_model_len */
    const char *cache_salt, *request_id;

    const char **stop_;             /* storage behind sp */
    int32_t *stop_ids_, *bias_ids_, *allowed_;
    float *bias_vals_;
    const char **bad_words_;
};

/* Parse and validate a body. Returns 0, or -1 with e filled (r is then
 * empty and needs no free). */
int proto_parse(enum proto_kind kind, const char *body, size_t len, const struct proto_limits *lim,
                struct proto_request *r, struct proto_error *e);
void proto_request_free(struct proto_request *r);

/* After tokenizing prompt i: check the ids against the vocabulary, apply
 * truncate_prompt_tokens (may shrink *n in place), and check the context
 * length as vLLM does. *max_tokens gets the tokens this prompt may generate.
 * Returns 0 or -1 with e filled. */
int proto_check_prompt(const struct proto_request *r, const struct proto_limits *lim, int32_t *ids, int *n,
                       int *max_tokens, struct proto_error *e);

/* Fill e; returns -1. */
int proto_errorf(struct proto_error *e, int status, const char *type, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* {"error": {...}} (new reference). */
json_t *proto_error_json(const struct proto_error *e);

#endif
