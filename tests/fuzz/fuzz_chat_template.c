/* fuzz_chat_template.c — libFuzzer target for chat templates: the input is a
 * template source; it is compiled and, if it compiles, rendered against a
 * small fixed context and through chat_template_apply (with and without
 * continue_final_message). Any crash, sanitizer report, leak, hang or runaway
 * allocation is a bug: templates can be per-request strings from clients.
 * Limits are set small so each input finishes fast; the limits themselves
 * are what is being tested. Build with `make fuzz-template`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat_template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *ctx, *msgs, *tools, *specials, *kwargs;

static void setup(void) {
    if (ctx) return;
    msgs = json_loads("[{\"role\":\"system\",\"content\":\"sys\"},"
                      "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"h\\u00e9 \\ud83d\\ude00\"}]},"
                      "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"type\":\"function\",\"function\":"
                      "{\"name\":\"f\",\"arguments\":{\"x\":1.5,\"y\":[true,null]}}}]},"
                      "{\"role\":\"tool\",\"content\":\"42\"},{\"role\":\"assistant\",\"content\":\"ok \"}]",
                      0, NULL);
    tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\","
                       "\"properties\":{\"x\":{\"type\":\"number\"}}}}}]", 0, NULL);
    specials = json_loads("{\"bos_token\":\"<s>\",\"eos_token\":\"</s>\"}", 0, NULL);
    kwargs = json_loads("{\"enable_thinking\":false,\"n\":3,\"d\":{\"k\":\"v\"}}", 0, NULL);
    ctx = json_object();
    json_object_set(ctx, "messages", msgs);
    json_object_set(ctx, "tools", tools);
    json_object_update(ctx, specials);
    json_object_update(ctx, kwargs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    if (size > 1 << 16) return 0;
    char *src = malloc(size + 1);
    memcpy(src, data, size);
    src[size] = 0; /* an embedded NUL just ends the template early */
    char err[512];
    struct chat_template *ct = NULL;
    if (chat_template_compile(&ct, src, err, sizeof err) == 0) {
        struct chat_template_limits lim = { .max_output = 1 << 16, .max_memory = 16 << 20, .max_loop_iters = 20000,
                                            .max_call_depth = 20 };
        chat_template_set_limits(ct, &lim);
        chat_template_set_now(ct, 1722004496);
        char *out = NULL;
        size_t n = 0;
        if (chat_template_render(ct, ctx, &out, &n, err, sizeof err) == 0) {
            if (!out || out[n] != 0) __builtin_trap();
        } else if (out) {
            __builtin_trap();
        }
        free(out);
        struct chat_apply_params p = { .messages = msgs, .tools = tools, .specials = specials, .kwargs = kwargs,
                                       .add_generation_prompt = (int)(size & 1), .continue_final_message = 0 };
        out = NULL;
        chat_template_apply(ct, &p, &out, &n, err, sizeof err);
        free(out);
        p.add_generation_prompt = 0;
        p.continue_final_message = 1;
        out = NULL;
        chat_template_apply(ct, &p, &out, &n, err, sizeof err);
        free(out);
        chat_template_free(ct);
    } else if (ct) {
        __builtin_trap();
    }
    free(src);
    return 0;
}
