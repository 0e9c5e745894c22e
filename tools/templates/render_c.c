/* render_c.c — renders template files with the C engine for diff_corpus.py.
 * Reads file paths on stdin (one per line) and the variables from argv[1]
 * (a JSON object); prints one JSON line per file:
 *   {"f": path, "rc": 0, "out": "..."} or {"f": path, "rc": -1|-2, "err": "..."}
 * Limits are small, like the fuzz target's. Build:
 *   make BUILD=build-jinja build-jinja/libvllmc.a
 *   cc -std=gnu17 -O2 -Iinclude -Isrc -o /tmp/render_c tools/templates/render_c.c \
 *      build-jinja/libvllmc.a -ljansson -lutf8proc -lm -lpthread */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat_template.h"

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long k = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)k + 1);
    *n = fread(b, 1, (size_t)k, f);
    b[*n] = 0;
    fclose(f);
    return b;
}

int main(int argc, char **argv) {
    json_error_t je;
    json_t *ctx = argc > 1 ? json_load_file(argv[1], 0, &je) : NULL;
    char path[4096];
    while (fgets(path, sizeof path, stdin)) {
        path[strcspn(path, "\n")] = 0;
        size_t n;
        char *src = slurp(path, &n);
        if (!src) continue;
        json_t *o = json_object();
        json_object_set_new(o, "f", json_string(path));
        if (strlen(src) != n) {
            json_object_set_new(o, "skip", json_true()); /* NUL bytes: not a C string */
        } else {
            char err[2048];
            struct chat_template *ct;
            int rc = chat_template_compile(&ct, src, err, sizeof err);
            if (rc == 0) {
                struct chat_template_limits lim = { .max_output = 1 << 16, .max_memory = 16 << 20,
                                                    .max_loop_iters = 20000, .max_call_depth = 20 };
                chat_template_set_limits(ct, &lim);
                chat_template_set_now(ct, 1722004496);
                char *out = NULL;
                size_t len = 0;
                rc = chat_template_render(ct, ctx, &out, &len, err, sizeof err);
                if (rc == 0) json_object_set_new(o, "out", json_stringn_nocheck(out, len));
                free(out);
                chat_template_free(ct);
            }
            json_object_set_new(o, "rc", json_integer(rc));
            if (rc) json_object_set_new(o, "err", json_stringn_nocheck(err, strlen(err)));
        }
        char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        puts(line);
        free(line);
        json_decref(o);
        free(src);
    }
    json_decref(ctx);
    return 0;
}
