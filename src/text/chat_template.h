/* chat_template.h — chat templates: the Jinja subset that Hugging Face chat
 * templates are written in, rendered exactly as transformers renders them
 * (Python Jinja2 3.1 ImmutableSandboxedEnvironment with trim_blocks,
 * lstrip_blocks, the loopcontrols extension, transformers' `tojson`,
 * `raise_exception`, `strftime_now` and `{% generation %}`), byte for byte.
 *
 * Templates may come from clients (a per-request template string), so every
 * render is bounded: output size, memory, loop iterations and macro recursion
 * (struct chat_template_limits); hitting a limit is a render error, never a
 * crash or a hang. A compiled template is immutable: any number of threads may
 * render one at the same time.
 *
 * Does not: load templates from tokenizer_config.json (the caller passes the
 * source), tokenize, implement template inheritance/include/import/block or
 * recursive loops (no loader; compile errors), or autoescape (transformers
 * does not). Known differences from Python, none seen in real templates:
 * integers are 64-bit (a larger result is a render error); reprs of
 * functions/generators carry no address; Jinja evaluates constant output
 * expressions at compile time, where a bad slice of a literal (`{{ 1[:2] }}`)
 * becomes undefined instead of an error; case mapping is utf8proc's simple
 * mapping plus the common special cases (ß, ligatures, final sigma, İ); the
 * filters filesizeformat, pprint, random, striptags, urlencode, urlize,
 * wordwrap, xmlattr and the lipsum global are render errors; Markup.format
 * does not escape its arguments. */
#ifndef VLLMC_CHAT_TEMPLATE_H
#define VLLMC_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct chat_template;

/* Parse once; errors (syntax, unknown tag, unbalanced block, unknown filter or
 * test outside an `if`) -> -1 with a message "line:col: what". *out is NULL
 * after a failure. */
int chat_template_compile(struct chat_template **out, const char *source, char *err, size_t errlen);
void chat_template_free(struct chat_template *ct);

/* Render with variables from the JSON object ctx (may be NULL: no variables).
 * Thread-safe: many threads render one compiled template.
 * Returns 0, -1 for a compile-time problem (ct NULL, ctx not an object), or -2
 * for a render error (raise_exception("msg") -> err = "msg"; undefined and type
 * errors with Python's messages where they matter; limits hit).
 * *out is malloc'd and NUL-terminated (the text itself may hold NUL bytes:
 * use *out_len); NULL after an error. */
int chat_template_render(const struct chat_template *ct, const json_t *ctx, char **out, size_t *out_len,
                         char *err, size_t errlen);

/* transformers' apply_chat_template(tokenize=False): the variables messages,
 * tools (NULL -> None, as transformers passes it), documents (NULL -> None),
 * add_generation_prompt, the special tokens (specials: an object such as
 * {"bos_token":"<s>","eos_token":"</s>",...}), then kwargs
 * (chat_template_kwargs, e.g. {"enable_thinking": false}) merged over the
 * specials. kwargs cannot replace messages, tools, documents or
 * add_generation_prompt (Python would raise on the duplicate keyword; here
 * the explicit values win).
 * continue_final_message trims the render after the final message's content
 * exactly as transformers does, and fails (-2) as it does when combined with
 * add_generation_prompt, when the final message has no content, or when the
 * content does not appear in the render. */
struct chat_apply_params {
    const json_t *messages, *tools, *documents, *kwargs, *specials; /* any may be NULL except messages */
    int add_generation_prompt, continue_final_message;
};
int chat_template_apply(const struct chat_template *ct, const struct chat_apply_params *p, char **out,
                        size_t *out_len, char *err, size_t errlen);

/* Bounds of one render. Defaults: 16 MiB output, 256 MiB of values,
 * 10 million loop iterations, macro recursion 100 deep. A zero field keeps
 * the default. Call before rendering (not while other threads render ct). */
struct chat_template_limits {
    size_t max_output;
    size_t max_memory;
    uint64_t max_loop_iters;
    int max_call_depth;
};
void chat_template_set_limits(struct chat_template *ct, const struct chat_template_limits *lim);

/* Fix the clock strftime_now() reads (seconds since the epoch, formatted as
 * UTC) instead of the local time now; for tests and reproducible prompts.
 * Call before rendering. */
void chat_template_set_now(struct chat_template *ct, int64_t unix_seconds);

#endif
