/* embed.c — the smallest program that embeds the vllm.c engine through
 * vllmc.h: open a model, submit a prompt of token ids, print the generated
 * tokens as they stream in, close.
 *
 *   make examples && build/examples/embed models/demo 323,288,3004,268,736,969,10,80,308 12
 *
 * or, against an installed copy (make install PREFIX=...):
 *   cc -o embed examples/embed.c $(pkg-config --cflags --libs --static vllmc)
 *
 * Output: one line per generated token, "ID<TAB>TEXT" where TEXT is the text
 * that token completed (JSON-like escapes for newlines, tabs and quotes;
 * empty while a multi-byte character is still incomplete). Greedy decoding,
 * no stop at EOS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vllmc.h"

static void print_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\\') fputs("\\\\", stdout);
        else if (c == '"') fputs("\\\"", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL ID,ID,... [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    /* the prompt: comma-separated token ids */
    int32_t prompt[4096];
    int n_prompt = 0;
    for (char *p = argv[2]; *p && n_prompt < 4096;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0) { fprintf(stderr, "bad token id list '%s'\n", argv[2]); return 2; }
        prompt[n_prompt++] = (int32_t)v;
        p = *end == ',' ? end + 1 : end;
    }
    int max_tokens = argc > 3 ? atoi(argv[3]) : 32;

    /* 1. open the engine */
    struct vllmc_engine_params ep;
    vllmc_engine_params_default(&ep);
    ep.model = argv[1];
    ep.max_model_len = n_prompt + max_tokens; /* all this program needs: a small KV cache */
    ep.kv_cache_tokens = ep.max_model_len;
    vllmc_engine *e;
    char err[1024];
    if (vllmc_engine_open(&e, &ep, err, sizeof err) != VLLMC_OK) {
        fprintf(stderr, "vllmc_engine_open: %s\n", err);
        return 1;
    }
    struct vllmc_model_info info;
    vllmc_model_info(e, &info);
    fprintf(stderr, "%s (%s), %d layers, vocabulary %d\n", info.architecture, info.dtype, info.n_layers, info.n_vocab);

    /* 2. submit one request: greedy, no EOS stop */
    struct vllmc_request_params rp = { .prompt = prompt, .n_prompt = n_prompt };
    vllmc_sampling_params_default(e, &rp.sampling);
    rp.sampling.temperature = 0;
    rp.sampling.max_tokens = max_tokens;
    rp.sampling.ignore_eos = 1;
    vllmc_request *r;
    if (vllmc_submit(e, &rp, &r, err, sizeof err) != VLLMC_OK) {
        fprintf(stderr, "vllmc_submit: %s\n", err);
        vllmc_engine_close(e);
        return 1;
    }

    /* 3. stream: each read brings the tokens generated since the last one
     * (and the text they completed) */
    int rc = 0;
    struct vllmc_output o;
    while (vllmc_request_next(r, &o, -1) == 1) {
        if (o.error) { fprintf(stderr, "engine: %s\n", o.error); rc = 1; }
        for (int s = 0; s < o.n_seqs; s++) {
            const struct vllmc_seq_output *so = &o.seqs[s];
            for (int t = 0; t < so->n_tokens; t++) {
                printf("%d\t", so->tokens[t]);
                if (t == so->n_tokens - 1) print_escaped(so->text, so->text_len); /* the read's text, on its last token */
                putchar('\n');
            }
            fflush(stdout);
            if (so->finish) fprintf(stderr, "finished: %s\n", vllmc_finish_name(so->finish));
        }
        if (o.finished) break;
    }

    /* 4. clean up */
    vllmc_request_free(r);
    vllmc_engine_close(e);
    return rc;
}
