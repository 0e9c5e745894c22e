/* fuzz_request.c — libFuzzer target for the server's request parser
 * (src/server/protocol.c). The first byte picks the endpoint (completions,
 * chat, tokenize, detokenize); the rest is the body, untrusted JSON from the
 * network. Any crash, sanitizer report or leak is a bug; so is a parse that
 * succeeds with a value outside what validation promises. Build with
 * `make fuzz-request`. */
#include <math.h>

#include "server/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    static const char *const names[] = { "tiny", "alias" };
    struct vllmc_sampling_params d = {
        .n = 1, .top_p = 1, .repetition_penalty = 1, .max_tokens = -1, .logprobs = -1, .prompt_logprobs = -1,
        .skip_special_tokens = 1, .spaces_between_special_tokens = 1, .detokenize = 1,
    };
    struct proto_limits lim = { names, 2, 64, 100, 20, &d };
    enum proto_kind kind = (enum proto_kind)(data[0] % 4);
    struct proto_request r;
    struct proto_error e;
    if (proto_parse(kind, (const char *)data + 1, size - 1, &lim, &r, &e)) {
        if (e.status < 400 || e.status > 599 || !e.type || !e.message[0]) __builtin_trap();
        json_decref(proto_error_json(&e));
        return 0;
    }
    const struct vllmc_sampling_params *sp = &r.sp;
    if (sp->n < 1 || !(sp->top_p > 0 && sp->top_p <= 1) || sp->temperature < 0 || sp->top_k < 0 ||
        !(sp->min_p >= 0 && sp->min_p <= 1) || !(sp->repetition_penalty > 0) || sp->logprobs > 20 ||
        sp->prompt_logprobs > 20 || sp->min_tokens < 0)
        __builtin_trap();
    for (int i = 0; i < sp->n_stop; i++)
        if (!sp->stop[i][0]) __builtin_trap();
    for (int i = 0; i < sp->n_logit_bias; i++)
        if (sp->logit_bias_ids[i] >= 100 || fabsf(sp->logit_bias_values[i]) > 100) __builtin_trap();
    for (int i = 0; i < sp->n_allowed_token_ids; i++)
        if (sp->allowed_token_ids[i] >= 100) __builtin_trap();
    for (int i = 0; i < r.n_prompts; i++) {
        struct proto_prompt *p = &r.prompts[i];
        if (!p->ids) continue;
        int n = p->n_ids, max_tokens;
        if (proto_check_prompt(&r, &lim, p->ids, &n, &max_tokens, &e) == 0 &&
            (n <= 0 || n >= 64 || max_tokens < 0 || n + max_tokens > 64))
            __builtin_trap();
    }
    proto_request_free(&r);
    return 0;
}
