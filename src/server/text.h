/* text.h (server) — the text layer (src/text/tokenizer.h, chat_template.h)
 * as the server sees it.
 *
 * Transitional: the text layer is being written beside the server. Its
 * functions are referenced weakly here, so the server links (and answers
 * text requests with a clean 400) in a tree where tokenizer.c or
 * chat_template.c is not there yet; TEXT_HAVE_*() tell at run time. */
#ifndef VLLMC_SERVER_TEXT_H
#define VLLMC_SERVER_TEXT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#if __has_include("text/tokenizer.h")
#include "text/tokenizer.h"
#else
struct tokenizer;
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int add_special_tokens, int32_t **ids,
                     int *n_ids, char *err, size_t errlen);
char *tokenizer_decode(const struct tokenizer *t, const int32_t *ids, int n, int skip_special_tokens, size_t *len);
const char *tokenizer_id_to_token(const struct tokenizer *t, int32_t id);
const char *tokenizer_special_token(const struct tokenizer *t, const char *name);
const char *tokenizer_chat_template(const struct tokenizer *t, const char *name);
#endif

#if __has_include("text/chat_template.h")
#include "text/chat_template.h"
#else
struct chat_template;
int chat_template_compile(struct chat_template **out, const char *source, char *err, size_t errlen);
void chat_template_free(struct chat_template *ct);
struct chat_apply_params {
    const json_t *messages, *tools, *documents, *kwargs, *specials;
    int add_generation_prompt, continue_final_message;
};
int chat_template_apply(const struct chat_template *ct, const struct chat_apply_params *p, char **out,
                        size_t *out_len, char *err, size_t errlen);
#endif

#pragma weak tokenizer_encode
#pragma weak tokenizer_decode
#pragma weak tokenizer_id_to_token
#pragma weak tokenizer_special_token
#pragma weak tokenizer_chat_template
#pragma weak chat_template_compile
#pragma weak chat_template_free
#pragma weak chat_template_apply

#define TEXT_HAVE_TOKENIZER() (tokenizer_encode != NULL && tokenizer_decode != NULL)
#define TEXT_HAVE_TEMPLATES() (chat_template_compile != NULL && chat_template_apply != NULL)

#endif
