/* protocol.c — parse and validate OpenAI / vLLM request bodies (protocol.h).
 *
 * Validation follows vLLM's request models and SamplingParams._verify_args:
 * the same ranges, the same defaults (completion max_tokens 16, chat
 * add_special_tokens false, max_logprobs 20) and, where a client may match on
 * it, the same message text. Type errors are 400s naming the field.
 * Unknown fields are ignored (as pydantic does); known fields whose behaviour
 * we do not implement (beam search, structured outputs, suffix, non-text
 * content parts, tool_choice other than "none") are 400s, never silently
 * dropped. */
#include "server/protocol.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define MAX_SEQS_PER_REQUEST 1024 /* prompts x n */

int proto_errorf(struct proto_error *e, int status, const char *type, const char *param, const char *fmt, ...) {
    e->status = status;
    e->type = type;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

json_t *proto_error_json(const struct proto_error *e) {
    json_t *o = json_object();
    json_object_set_new(o, "message", json_string(e->message));
    json_object_set_new(o, "type", json_string(e->type ? e->type : "BadRequestError"));
    json_object_set_new(o, "param", e->param[0] ? json_string(e->param) : json_null());
    json_object_set_new(o, "code", json_integer(e->status));
    json_t *r = json_object();
    json_object_set_new(r, "error", o);
    return r;
}

#define BAD(e, param, ...) proto_errorf((e), 400, "BadRequestError", (param), __VA_ARGS__)

/* ---- typed field readers: 0 absent or null, 1 read, -1 type error ------ */

static int opt_bool(json_t *o, const char *key, int *out, struct proto_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_boolean(v)) *out = json_is_true(v);
    else if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
        *out = (int)json_integer_value(v);
    else return BAD(e, key, "'%s' must be a boolean", key);
    return 1;
}

static int opt_int64(json_t *o, const char *key, long long *out, struct proto_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v)) *out = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e18)
        *out = (long long)json_real_value(v);
    else return BAD(e, key, "'%s' must be an integer", key);
    return 1;
}

/* An int that fits in int (values beyond are range errors of the field). */
static int opt_int(json_t *o, const char *key, int *out, struct proto_error *e) {
    long long v;
    int rc = opt_int64(o, key, &v, e);
    if (rc != 1) return rc;
    if (v < -2147483647LL || v > 2147483647LL) return BAD(e, key, "'%s' is out of range: %lld", key, v);
    *out = (int)v;
    return 1;
}

static int opt_num(json_t *o, const char *key, double *out, struct proto_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return BAD(e, key, "'%s' must be a number", key);
    *out = json_number_value(v);
    return 1;
}

static int opt_str(json_t *o, const char *key, const char **out, struct proto_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return BAD(e, key, "'%s' must be a string", key);
    *out = json_string_value(v);
    return 1;
}

static int present(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return v && !json_is_null(v);
}

/* A list of token ids in [0, INT32_MAX); vocabulary checks come later. */
static int ids_of(json_t *a, const char *param, int32_t **ids, int *n, struct proto_error *e) {
    size_t len = json_array_size(a);
    int32_t *v = xmalloc((len ? len : 1) * sizeof *v);
    for (size_t i = 0; i < len; i++) {
        json_t *x = json_array_get(a, i);
        if (!json_is_integer(x)) { free(v); return BAD(e, param, "'%s' must be a list of integers", param); }
        json_int_t t = json_integer_value(x);
        if (t < 0 || t > INT32_MAX) { free(v); return BAD(e, param, "token id %lld is out of vocabulary", (long long)t); }
        v[i] = (int32_t)t;
    }
    *ids = v;
    *n = (int)len;
    return 0;
}

static int vocab_check(const int32_t *ids, int n, int n_vocab, const char *param, struct proto_error *e) {
    for (int i = 0; i < n; i++)
        if (ids[i] >= n_vocab)
            return BAD(e, param, "Token id %d is out of vocabulary (vocabulary size %d)", ids[i], n_vocab);
    return 0;
}

static int str_list(json_t *v, const char *param, int allow_single, const char ***out, int *n, struct proto_error *e) {
    if (allow_single && json_is_string(v)) {
        *out = xmalloc(sizeof **out);
        (*out)[0] = json_string_value(v);
        *n = 1;
        return 0;
    }
    if (!json_is_array(v)) return BAD(e, param, "'%s' must be %s", param, allow_single ? "a string or a list of strings" : "a list of strings");
    size_t len = json_array_size(v);
    const char **a = xmalloc((len ? len : 1) * sizeof *a);
    for (size_t i = 0; i < len; i++) {
        json_t *x = json_array_get(v, i);
        if (!json_is_string(x)) { free(a); return BAD(e, param, "'%s' must be a list of strings", param); }
        a[i] = json_string_value(x);
    }
    *out = a;
    *n = (int)len;
    return 0;
}

/* ---- sampling parameters (SamplingParams._verify_args) ----------------- */

static int parse_sampling(json_t *o, struct proto_request *r, const struct proto_limits *lim, struct proto_error *e) {
    struct vllmc_sampling_params *sp = &r->sp;
    double d;
    int i, rc;
    long long ll;

    if ((rc = opt_int(o, "n", &sp->n, e)) < 0) return -1;
    if (rc && sp->n < 1) return BAD(e, "n", "n must be at least 1, got %d.", sp->n);
    if ((rc = opt_num(o, "temperature", &d, e)) < 0) return -1;
    if (rc) {
        if (d < 0 || !isfinite(d)) return BAD(e, "temperature", "temperature must be non-negative, got %g.", d);
        sp->temperature = (float)d;
    }
    if ((rc = opt_num(o, "top_p", &d, e)) < 0) return -1;
    if (rc) {
        if (!(d > 0 && d <= 1)) return BAD(e, "top_p", "top_p must be in (0, 1], got %g.", d);
        sp->top_p = (float)d;
    }
    if ((rc = opt_int(o, "top_k", &i, e)) < 0) return -1;
    if (rc) {
        if (i < -1) return BAD(e, "top_k", "top_k must be 0 (disable), or at least 1, got %d.", i);
        sp->top_k = i < 0 ? 0 : i;
    }
    if ((rc = opt_num(o, "min_p", &d, e)) < 0) return -1;
    if (rc) {
        if (!(d >= 0 && d <= 1)) return BAD(e, "min_p", "min_p must be in [0, 1], got %g.", d);
        sp->min_p = (float)d;
    }
    static const char *const pen[2] = { "presence_penalty", "frequency_penalty" };
    for (int k = 0; k < 2; k++) {
        if ((rc = opt_num(o, pen[k], &d, e)) < 0) return -1;
        if (rc) {
            if (!(d >= -2 && d <= 2)) return BAD(e, pen[k], "%s must be in [-2, 2], got %g.", pen[k], d);
            if (k == 0) sp->presence_penalty = (float)d;
            else sp->frequency_penalty = (float)d;
        }
    }
    if ((rc = opt_num(o, "repetition_penalty", &d, e)) < 0) return -1;
    if (rc) {
        if (!(d > 0) || !isfinite(d))
            return BAD(e, "repetition_penalty", "repetition_penalty must be greater than zero, got %g.", d);
        sp->repetition_penalty = (float)d;
    }
    if ((rc = opt_int64(o, "seed", &ll, e)) < 0) return -1;
    if (rc) {
        sp->has_seed = 1;
        sp->seed = (uint64_t)ll;
    }

    /* max_tokens: chat prefers max_completion_tokens; completion defaults to 16 */
    int mt = -1;
    const char *mt_key = "max_tokens";
    if (r->kind == PROTO_CHAT && present(o, "max_completion_tokens")) mt_key = "max_completion_tokens";
    if (opt_bool(o, "echo", &r->echo, e) < 0) return -1;
    if ((rc = opt_int(o, mt_key, &mt, e)) < 0) return -1;
    /* max_tokens 0 with echo: the prompt (and its logprobs) only, as vLLM allows */
    if (rc && mt < (r->kind == PROTO_COMPLETION && r->echo ? 0 : 1))
        return BAD(e, mt_key, "max_tokens must be at least 1, got %d.", mt);
    if (rc) r->max_tokens = mt;
    else if (r->kind == PROTO_COMPLETION && !json_object_get(o, "max_tokens")) r->max_tokens = 16;
    else r->max_tokens = -1;

    if ((rc = opt_int(o, "min_tokens", &sp->min_tokens, e)) < 0) return -1;
    if (sp->min_tokens < 0)
        return BAD(e, "min_tokens", "min_tokens must be greater than or equal to 0, got %d.", sp->min_tokens);
    if (opt_bool(o, "ignore_eos", &sp->ignore_eos, e) < 0) return -1;
    if (opt_bool(o, "include_stop_str_in_output", &sp->include_stop_str_in_output, e) < 0) return -1;
    if (opt_bool(o, "skip_special_tokens", &sp->skip_special_tokens, e) < 0) return -1;
    if (opt_bool(o, "spaces_between_special_tokens", &sp->spaces_between_special_tokens, e) < 0) return -1;

    json_t *v = json_object_get(o, "stop");
    if (v && !json_is_null(v)) {
        if (str_list(v, "stop", 1, &r->stop_, &sp->n_stop, e)) return -1;
        for (int k = 0; k < sp->n_stop; k++)
            if (!r->stop_[k][0]) return BAD(e, "stop", "stop cannot contain an empty string.");
        sp->stop = r->stop_;
    }
    v = json_object_get(o, "stop_token_ids");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v)) return BAD(e, "stop_token_ids", "'stop_token_ids' must be a list of integers");
        if (ids_of(v, "stop_token_ids", &r->stop_ids_, &sp->n_stop_token_ids, e)) return -1;
        if (vocab_check(r->stop_ids_, sp->n_stop_token_ids, lim->n_vocab, "stop_token_ids", e)) return -1;
        sp->stop_token_ids = r->stop_ids_;
    }
    v = json_object_get(o, "bad_words");
    if (v && !json_is_null(v)) {
        if (str_list(v, "bad_words", 0, &r->bad_words_, &sp->n_bad_words, e)) return -1;
        sp->bad_words = r->bad_words_;
    }
    v = json_object_get(o, "logit_bias");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) return BAD(e, "logit_bias", "'logit_bias' must be an object of token id -> bias");
        size_t nb = json_object_size(v), k = 0;
        r->bias_ids_ = xmalloc((nb ? nb : 1) * sizeof *r->bias_ids_);
        r->bias_vals_ = xmalloc((nb ? nb : 1) * sizeof *r->bias_vals_);
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val) {
            char *end;
            long id = strtol(key, &end, 10);
            if (end == key || *end || id < 0 || id > INT32_MAX)
                return BAD(e, "logit_bias", "logit_bias key '%s' is not a token id", key);
            if (!json_is_number(val)) return BAD(e, "logit_bias", "logit_bias values must be numbers");
            if (id >= lim->n_vocab)
                return BAD(e, "logit_bias",
                           "token_id(s) [%ld] in logit_bias contain out-of-vocab token ids. Vocabulary size: %d", id,
                           lim->n_vocab);
            double b = json_number_value(val);
            r->bias_ids_[k] = (int32_t)id;
            r->bias_vals_[k++] = (float)(b < -100 ? -100 : b > 100 ? 100 : b); /* vLLM clamps */
        }
        sp->logit_bias_ids = r->bias_ids_;
        sp->logit_bias_values = r->bias_vals_;
        sp->n_logit_bias = (int)k;
    }
    v = json_object_get(o, "allowed_token_ids");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v)) return BAD(e, "allowed_token_ids", "'allowed_token_ids' must be a list of integers");
        if (ids_of(v, "allowed_token_ids", &r->allowed_, &sp->n_allowed_token_ids, e)) return -1;
        if (sp->n_allowed_token_ids == 0)
            return BAD(e, "allowed_token_ids", "allowed_token_ids is not None and empty!");
        for (int k = 0; k < sp->n_allowed_token_ids; k++)
            if (r->allowed_[k] >= lim->n_vocab)
                return BAD(e, "allowed_token_ids", "allowed_token_ids contains out-of-vocab token id!");
        sp->allowed_token_ids = r->allowed_;
    }

    /* logprobs */
    if (r->kind == PROTO_CHAT) {
        int want = 0, top = -1;
        if (opt_bool(o, "logprobs", &want, e) < 0) return -1;
        if ((rc = opt_int(o, "top_logprobs", &top, e)) < 0) return -1;
        if (rc) {
            if (top < 0) return BAD(e, "top_logprobs", "`top_logprobs` must be a positive value.");
            if (!want) return BAD(e, "top_logprobs", "when using `top_logprobs`, `logprobs` must be set to true.");
        }
        r->logprobs = want ? (top > 0 ? top : 0) : -1;
    } else {
        if ((rc = opt_int(o, "logprobs", &r->logprobs, e)) < 0) return -1;
        if (!rc) r->logprobs = -1;
        else if (r->logprobs < 0) return BAD(e, "logprobs", "logprobs must be non-negative, got %d.", r->logprobs);
    }
    if (r->logprobs > lim->max_logprobs)
        return BAD(e, "logprobs", "Requested sample logprobs of %d, which is greater than max allowed: %d", r->logprobs,
                   lim->max_logprobs);
    sp->logprobs = r->logprobs;
    if ((rc = opt_int(o, "prompt_logprobs", &r->prompt_logprobs, e)) < 0) return -1;
    if (!rc) r->prompt_logprobs = -1;
    else if (r->prompt_logprobs < 0)
        return BAD(e, "prompt_logprobs", "prompt_logprobs must be non-negative, got %d.", r->prompt_logprobs);
    else if (r->prompt_logprobs > lim->max_logprobs)
        return BAD(e, "prompt_logprobs", "Requested prompt logprobs of %d, which is greater than max allowed: %d",
                   r->prompt_logprobs, lim->max_logprobs);
    sp->prompt_logprobs = r->prompt_logprobs;

    /* streaming */
    if (opt_bool(o, "stream", &r->stream, e) < 0) return -1;
    v = json_object_get(o, "stream_options");
    if (v && !json_is_null(v)) {
        if (!r->stream) return BAD(e, "stream_options", "Stream options can only be defined when `stream=True`.");
        if (!json_is_object(v)) return BAD(e, "stream_options", "'stream_options' must be an object");
        if (opt_bool(v, "include_usage", &r->include_usage, e) < 0) return -1;
        if (opt_bool(v, "continuous_usage_stats", &r->continuous_usage, e) < 0) return -1;
    }
    if (r->stream && r->prompt_logprobs >= 0)
        return BAD(e, "prompt_logprobs", "`prompt_logprobs` are not available when `stream=True`.");

    /* vLLM extras */
    if ((rc = opt_int(o, "truncate_prompt_tokens", &r->truncate_prompt_tokens, e)) < 0) return -1;
    if (rc && (r->truncate_prompt_tokens == 0 || r->truncate_prompt_tokens < -1))
        return BAD(e, "truncate_prompt_tokens", "truncate_prompt_tokens must be -1 or at least 1, got %d.",
                   r->truncate_prompt_tokens);
    if (r->truncate_prompt_tokens > lim->max_model_len)
        return BAD(e, "truncate_prompt_tokens",
                   "truncate_prompt_tokens value is greater than max_model_len. Please, select a smaller truncation "
                   "size.");
    if (opt_str(o, "cache_salt", &r->cache_salt, e) < 0) return -1;
    if (r->cache_salt && !r->cache_salt[0])
        return BAD(e, "cache_salt", "Parameter 'cache_salt' must be a non-empty string if provided.");
    if (opt_str(o, "request_id", &r->request_id, e) < 0) return -1;
    if (opt_bool(o, "return_tokens_as_token_ids", &r->return_tokens_as_token_ids, e) < 0) return -1;
    if (opt_bool(o, "return_token_ids", &r->return_token_ids, e) < 0) return -1;
    const char *user;
    if (opt_str(o, "user", &user, e) < 0) return -1;

    /* things we do not do: say so instead of ignoring them */
    int beam = 0;
    if (opt_bool(o, "use_beam_search", &beam, e) < 0) return -1;
    if (beam) return BAD(e, "use_beam_search", "beam search is not supported");
    int best_of = 1;
    if (opt_int(o, "best_of", &best_of, e) < 0) return -1;
    if (best_of != 1 && best_of != sp->n) return BAD(e, "best_of", "best_of is not supported");
    if (present(o, "suffix")) return BAD(e, "suffix", "suffix is not currently supported");
    if (present(o, "prompt_embeds")) return BAD(e, "prompt_embeds", "prompt_embeds are not supported");
    v = json_object_get(o, "response_format");
    if (v && !json_is_null(v)) {
        json_t *t = json_is_object(v) ? json_object_get(v, "type") : NULL;
        if (!json_is_string(t)) return BAD(e, "response_format", "'response_format' must be an object with a 'type'");
        if (strcmp(json_string_value(t), "text"))
            return BAD(e, "response_format", "response_format type '%s' is not supported yet", json_string_value(t));
    }
    static const char *const guided[] = { "structured_outputs", "guided_json", "guided_regex", "guided_choice",
                                          "guided_grammar", "logits_processors" };
    for (size_t k = 0; k < ARRAY_LEN(guided); k++)
        if (present(o, guided[k])) return BAD(e, guided[k], "'%s' is not supported yet", guided[k]);
    return 0;
}

/* ---- chat messages ------------------------------------------------------ */

/* A content part's text, or NULL (e set) for parts we cannot take. */
static const char *part_text(json_t *p, size_t mi, struct proto_error *e) {
    if (json_is_string(p)) return json_string_value(p);
    json_t *t = json_is_object(p) ? json_object_get(p, "type") : NULL;
    if (!json_is_string(t)) {
        BAD(e, "messages", "messages[%zu]: each content part must be an object with a 'type'", mi);
        return NULL;
    }
    const char *ty = json_string_value(t);
    if (!strcmp(ty, "text") || !strcmp(ty, "input_text") || !strcmp(ty, "output_text") || !strcmp(ty, "refusal")) {
        json_t *x = json_object_get(p, !strcmp(ty, "refusal") ? "refusal" : "text");
        if (!json_is_string(x)) {
            BAD(e, "messages", "messages[%zu]: a '%s' part needs a string '%s'", mi, ty, "text");
            return NULL;
        }
        return json_string_value(x);
    }
    BAD(e, "messages", "messages[%zu]: content part type '%s' is not supported (text only)", mi, ty);
    return NULL;
}

/* vLLM's "string" content format: list-of-parts contents become one string
 * (parts joined by newlines), and tool-call arguments given as JSON strings
 * become objects, as templates expect. */
static json_t *normalize_messages(json_t *msgs, struct proto_error *e) {
    if (!json_is_array(msgs)) {
        BAD(e, "messages", "'messages' must be a list of message objects");
        return NULL;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) { BAD(e, "messages", "messages[%zu] must be an object", i); goto fail; }
        if (!json_is_string(json_object_get(m, "role"))) {
            BAD(e, "messages", "messages[%zu]: 'role' must be a string", i);
            goto fail;
        }
        json_t *c = json_deep_copy(m);
        json_array_append_new(out, c);
        json_t *content = json_object_get(m, "content");
        if (json_is_array(content)) {
            size_t cap = 64, len = 0;
            char *s = xmalloc(cap);
            for (size_t k = 0; k < json_array_size(content); k++) {
                const char *t = part_text(json_array_get(content, k), i, e);
                if (!t) { free(s); goto fail; }
                size_t tl = strlen(t);
                while (len + tl + 2 > cap) cap *= 2, s = realloc(s, cap);
                if (!s) goto fail;
                if (k) s[len++] = '\n';
                memcpy(s + len, t, tl);
                len += tl;
            }
            s[len] = 0;
            json_object_set_new(c, "content", json_stringn(s, len));
            free(s);
        } else if (content && !json_is_null(content) && !json_is_string(content)) {
            BAD(e, "messages", "messages[%zu]: 'content' must be a string, a list of parts or null", i);
            goto fail;
        }
        json_t *tcs = json_object_get(c, "tool_calls");
        for (size_t k = 0; json_is_array(tcs) && k < json_array_size(tcs); k++) {
            json_t *fn = json_object_get(json_array_get(tcs, k), "function");
            json_t *args = json_object_get(fn, "arguments");
            if (json_is_string(args)) {
                json_t *parsed = json_loads(json_string_value(args), 0, NULL);
                if (json_is_object(parsed)) json_object_set_new(fn, "arguments", parsed);
                else json_decref(parsed);
            }
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static int parse_chat_fields(json_t *o, struct proto_request *r, struct proto_error *e) {
    json_t *msgs = json_object_get(o, "messages");
    if (!msgs) return BAD(e, "messages", "'messages' is required");
    if (!(r->messages = normalize_messages(msgs, e))) return -1;
    r->add_generation_prompt = 1;
    if (opt_bool(o, "add_generation_prompt", &r->add_generation_prompt, e) < 0) return -1;
    if (opt_bool(o, "continue_final_message", &r->continue_final_message, e) < 0) return -1;
    if (r->add_generation_prompt && r->continue_final_message)
        return BAD(e, "continue_final_message",
                   "Cannot set both `continue_final_message` and `add_generation_prompt` to True.");
    r->add_special_tokens = 0;
    if (opt_bool(o, "add_special_tokens", &r->add_special_tokens, e) < 0) return -1;
    if (opt_str(o, "chat_template", &r->chat_template, e) < 0) return -1;
    json_t *v = json_object_get(o, "chat_template_kwargs");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) return BAD(e, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
        r->chat_template_kwargs = v;
    }
    v = json_object_get(o, "tools");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v)) return BAD(e, "tools", "'tools' must be a list");
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!json_is_object(json_array_get(v, i))) return BAD(e, "tools", "'tools' must be a list of objects");
        if (json_array_size(v)) r->tools = v;
    }
    v = json_object_get(o, "documents");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v)) return BAD(e, "documents", "'documents' must be a list");
        r->documents = v;
    }
    if (r->kind != PROTO_CHAT) return 0;
    /* vLLM: tools without tool_choice mean "auto", which needs a tool-call parser */
    v = json_object_get(o, "tool_choice");
    const char *choice = r->tools ? "auto" : "none";
    if (v && !json_is_null(v)) {
        if (json_is_string(v)) choice = json_string_value(v);
        else if (json_is_object(v)) choice = "named";
        else return BAD(e, "tool_choice", "'tool_choice' must be a string or an object");
    }
    if (!strcmp(choice, "auto"))
        return BAD(e, "tool_choice",
                   "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set");
    if (strcmp(choice, "none"))
        return BAD(e, "tool_choice", "tool_choice '%s' is not supported yet (no guided decoding)", choice);
    return 0;
}

/* ---- prompts -------------------------------------------------------------- */

static int parse_prompts(json_t *p, struct proto_request *r, struct proto_error *e) {
    if (!p || json_is_null(p)) return BAD(e, "prompt", "'prompt' is required");
    if (json_is_string(p)) {
        r->prompts = xcalloc(1, sizeof *r->prompts);
        r->n_prompts = 1;
        r->prompts[0].text = json_string_value(p);
        r->prompts[0].text_len = json_string_length(p);
        return 0;
    }
    if (!json_is_array(p) || json_array_size(p) == 0)
        return BAD(e, "prompt", "'prompt' must be a string, a list of strings, a list of token ids or a list of such lists, and not empty");
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) {
        r->prompts = xcalloc(1, sizeof *r->prompts);
        r->n_prompts = 1;
        return ids_of(p, "prompt", &r->prompts[0].ids, &r->prompts[0].n_ids, e);
    }
    size_t n = json_array_size(p);
    r->prompts = xcalloc(n, sizeof *r->prompts);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(p, i);
        if (json_is_string(x) && json_is_string(first)) {
            r->prompts[i].text = json_string_value(x);
            r->prompts[i].text_len = json_string_length(x);
        } else if (json_is_array(x) && json_is_array(first)) {
            if (ids_of(x, "prompt", &r->prompts[i].ids, &r->prompts[i].n_ids, e)) return -1;
        } else {
            return BAD(e, "prompt", "'prompt' must be a string, a list of strings, a list of token ids or a list of such lists");
        }
        r->n_prompts = (int)i + 1;
    }
    return 0;
}

/* ---- entry points -------------------------------------------------------- */

void proto_request_free(struct proto_request *r) {
    for (int i = 0; i < r->n_prompts; i++) free(r->prompts[i].ids);
    free(r->prompts);
    json_decref(r->messages);
    json_decref(r->root);
    free(r->stop_);
    free(r->stop_ids_);
    free(r->bias_ids_);
    free(r->bias_vals_);
    free(r->allowed_);
    free(r->bad_words_);
    memset(r, 0, sizeof *r);
}

int proto_parse(enum proto_kind kind, const char *body, size_t len, const struct proto_limits *lim,
                struct proto_request *r, struct proto_error *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->max_tokens = -1;
    r->logprobs = r->prompt_logprobs = -1;
    r->sp = *lim->defaults;
    r->sp.stop = NULL, r->sp.n_stop = 0;
    r->sp.stop_token_ids = NULL, r->sp.n_stop_token_ids = 0;
    r->sp.logit_bias_ids = NULL, r->sp.logit_bias_values = NULL, r->sp.n_logit_bias = 0;
    r->sp.allowed_token_ids = NULL, r->sp.n_allowed_token_ids = 0;
    r->sp.bad_words = NULL, r->sp.n_bad_words = 0;
    r->sp.logprobs = r->sp.prompt_logprobs = -1;

    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (!root) return BAD(e, NULL, "JSON decode error: %s (line %d, column %d)", je.text, je.line, je.column);
    r->root = root;
    if (!json_is_object(root)) { BAD(e, NULL, "the request body must be a JSON object"); goto fail; }

    const char *model = NULL;
    if (opt_str(root, "model", &model, e) < 0) goto fail;
    r->model = lim->n_model_names ? lim->model_names[0] : "";
    if (model) {
        int found = 0;
        for (int i = 0; i < lim->n_model_names && !found; i++) found = !strcmp(model, lim->model_names[i]);
        if (!found) {
            proto_errorf(e, 404, "NotFoundError", "model", "The model `%s` does not exist.", model);
            goto fail;
        }
        r->model = model;
    }

    switch (kind) {
    case PROTO_COMPLETION:
        r->add_special_tokens = 1;
        if (opt_bool(root, "add_special_tokens", &r->add_special_tokens, e) < 0) goto fail;
        if (parse_prompts(json_object_get(root, "prompt"), r, e)) goto fail;
        if (parse_sampling(root, r, lim, e)) goto fail;
        break;
    case PROTO_CHAT:
        if (parse_chat_fields(root, r, e)) goto fail;
        if (parse_sampling(root, r, lim, e)) goto fail;
        break;
    case PROTO_TOKENIZE:
        if (opt_bool(root, "return_token_strs", &r->return_token_strs, e) < 0) goto fail;
        if (json_object_get(root, "messages")) {
            if (parse_chat_fields(root, r, e)) goto fail;
        } else {
            json_t *p = json_object_get(root, "prompt");
            if (!json_is_string(p)) { BAD(e, "prompt", "'prompt' must be a string"); goto fail; }
            r->add_special_tokens = 1;
            if (opt_bool(root, "add_special_tokens", &r->add_special_tokens, e) < 0) goto fail;
            if (parse_prompts(p, r, e)) goto fail;
        }
        break;
    case PROTO_DETOKENIZE: {
        json_t *t = json_object_get(root, "tokens");
        if (!json_is_array(t)) { BAD(e, "tokens", "'tokens' must be a list of integers"); goto fail; }
        r->prompts = xcalloc(1, sizeof *r->prompts);
        r->n_prompts = 1;
        if (ids_of(t, "tokens", &r->prompts[0].ids, &r->prompts[0].n_ids, e)) goto fail;
        if (vocab_check(r->prompts[0].ids, r->prompts[0].n_ids, lim->n_vocab, "tokens", e)) goto fail;
        break;
    }
    }
    if ((kind == PROTO_COMPLETION || kind == PROTO_CHAT) &&
        (long long)(kind == PROTO_CHAT ? 1 : r->n_prompts) * r->sp.n > MAX_SEQS_PER_REQUEST) {
        BAD(e, "n", "a request may ask for at most %d sequences (prompts x n)", MAX_SEQS_PER_REQUEST);
        goto fail;
    }
    return 0;
fail:
    proto_request_free(r);
    return -1;
}

int proto_check_prompt(const struct proto_request *r, const struct proto_limits *lim, int32_t *ids, int *n,
                       int *max_tokens, struct proto_error *e) {
    if (vocab_check(ids, *n, lim->n_vocab, "prompt", e)) return -1;
    if (*n == 0) return BAD(e, "prompt", "The decoder prompt cannot be empty");
    int trunc = r->truncate_prompt_tokens == -1 ? lim->max_model_len : r->truncate_prompt_tokens;
    if (trunc > 0 && *n > trunc) {
        memmove(ids, ids + (*n - trunc), (size_t)trunc * sizeof *ids);
        *n = trunc;
    }
    const int L = lim->max_model_len;
    if (*n >= L)
        return BAD(e, "input_tokens",
                   "This model's maximum context length is %d tokens. However, your request has %d input tokens. "
                   "Please reduce the length of the input messages.",
                   L, *n);
    int mt = r->max_tokens;
    if (mt >= 0 && (long long)*n + mt > L)
        return BAD(e, "max_tokens",
                   "'max_tokens' or 'max_completion_tokens' is too large: %d. This model's maximum context length is "
                   "%d tokens and your request has %d input tokens (%d > %d - %d).",
                   mt, L, *n, mt, L, *n);
    int room = L - *n;
    if (mt < 0) mt = room;
    if (lim->defaults->max_tokens > 0) mt = MIN(mt, lim->defaults->max_tokens);
    mt = MIN(mt, room);
    if (r->sp.min_tokens > mt)
        return BAD(e, "min_tokens", "min_tokens must be less than or equal to max_tokens=%d, got %d.", mt,
                   r->sp.min_tokens);
    *max_tokens = mt;
    return 0;
}
