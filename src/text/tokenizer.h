/* tokenizer.h — Hugging Face tokenizer.json in C: encode, decode and
 * streaming decode that match the `tokenizers` library id for id.
 *
 * One `struct tokenizer` is immutable after tokenizer_load and may be shared
 * by any number of threads: encode/decode only read it (the word cache inside
 * has its own locks). A `struct tokenizer_stream` belongs to one thread.
 * Errors are values (STYLE.md 2): functions that fail return -1 or NULL and,
 * where they take err/errlen, write a message there; nothing is left
 * allocated after a failure. See tokenizer.c for what is and is not
 * supported. */
#ifndef VLLMC_TOKENIZER_H
#define VLLMC_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

struct tokenizer;

/* dir/tokenizer.json (required), dir/tokenizer_config.json,
 * dir/special_tokens_map.json, dir/chat_template.jinja or chat_template.json
 * (optional). The error message names the file (and the JSON path). */
int tokenizer_load(struct tokenizer **out, const char *dir, char *err, size_t errlen);
void tokenizer_free(struct tokenizer *t);

/* Thread-safe. *ids is malloc'd (free() it; non-NULL even for 0 ids).
 * add_special_tokens: run the post-processor (BOS/EOS as transformers adds
 * them). Invalid UTF-8 in text -> -1 with a message. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int add_special_tokens,
                     int32_t **ids, int *n_ids, char *err, size_t errlen);

/* malloc'd, NUL-terminated; *len (if non-NULL) gets the byte length. An id
 * < 0 or >= tokenizer_n_vocab -> NULL. Same as tokenizers' decode(ids,
 * skip_special_tokens) (no clean_up_tokenization_spaces, as vLLM's detokenizer). */
char *tokenizer_decode(const struct tokenizer *t, const int32_t *ids, int n, int skip_special_tokens,
                       size_t *len);

int tokenizer_n_vocab(const struct tokenizer *t);                         /* max id + 1, added tokens included */
const char *tokenizer_id_to_token(const struct tokenizer *t, int32_t id);    /* raw vocab string, NULL if none */
int32_t tokenizer_token_to_id(const struct tokenizer *t, const char *token); /* -1 if none */
int tokenizer_is_special(const struct tokenizer *t, int32_t id);

/* "bos_token", "eos_token", "unk_token", "pad_token" and any other *_token
 * key of tokenizer_config.json / special_tokens_map.json (string or
 * {"content": ...}; special_tokens_map.json wins, as in transformers); NULL
 * if unset. */
const char *tokenizer_special_token(const struct tokenizer *t, const char *name);
/* The id of tokenizer_special_token(t, name), -1 if unset or not in the vocabulary. */
int32_t tokenizer_special_id(const struct tokenizer *t, const char *name);

/* Chat template: NULL name = the default one (chat_template.jinja, else
 * tokenizer_config.json's chat_template, else chat_template.json); named ones
 * from the list form [{name, template}] (e.g. "tool_use"). NULL if none. */
const char *tokenizer_chat_template(const struct tokenizer *t, const char *name);

/* Incremental detokenizer for streaming (the prefix/read-offset method of
 * vLLM and tokenizers' DecodeStream): emits only complete UTF-8; the
 * concatenation of everything it emitted, followed by tokenizer_stream_flush,
 * equals tokenizer_decode of all pushed ids with the same
 * skip_special_tokens. Text whose decode ends in U+FFFD (an unfinished
 * character), or inside a run of byte-fallback tokens ("<0xE4>"...), is held
 * back until a later id completes it, or until flush.
 * spaces_between_special_tokens only matters to slow (Python) tokenizers;
 * fast ones, and so this one, ignore it, as vLLM does. */
struct tokenizer_stream;
struct tokenizer_stream *tokenizer_stream_new(const struct tokenizer *t, int skip_special_tokens,
                                              int spaces_between_special_tokens);
/* Push one id; *text and *len get the newly completed text (possibly empty), valid
 * until the next call. 0, or -1 for an id out of range (state unchanged). */
int tokenizer_stream_push(struct tokenizer_stream *s, int32_t id, const char **text, size_t *len);
/* End of the sequence: *text and *len get whatever was held back (possibly empty,
 * e.g. a final U+FFFD). The stream may be pushed to again afterwards. */
void tokenizer_stream_flush(struct tokenizer_stream *s, const char **text, size_t *len);
void tokenizer_stream_free(struct tokenizer_stream *s);

#endif
