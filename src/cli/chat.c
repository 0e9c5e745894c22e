/* chat.c — `vllmc chat [MODEL]`: an interactive chat in the terminal.
 *
 * Each turn renders the whole conversation with the model's chat template
 * (chat_template_apply, as transformers' apply_chat_template with
 * add_generation_prompt), tokenizes it without special tokens (vLLM's chat
 * default), submits it to the engine and prints the reply as it streams.
 * Ctrl-C stops the reply being written (vllmc_abort) and keeps what was
 * written in the history; Ctrl-D or /exit quits; /reset clears the history.
 * When the conversation outgrows the context, the oldest turns are dropped.
 *
 * Owns: the conversation (a JSON array of messages) and the SIGINT handler
 * while it runs. Does not: edit lines (the terminal's own line editing is
 * all there is), keep history across runs, or render markdown.
 *
 * Output: replies go to stdout, one per turn, each followed by a newline;
 * prompts, notices and statistics go to stderr, so `vllmc chat < questions`
 * prints the replies alone. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

static void chat_usage(FILE *f) {
    fprintf(f,
            "usage: vllmc chat [MODEL] [options]\n"
            "\n"
            "Interactive chat with the model's chat template, replies streamed as they are\n"
            "generated. MODEL defaults to the bundled demo model (models/demo).\n"
            "\n"
            "  Enter sends a line; end a line with \\ to continue the message on the next one.\n"
            "  Ctrl-C stops the reply (what was written stays in the history).\n"
            "  Ctrl-D or /exit quits; /reset clears the history; /history prints it as JSON;\n"
            "  /help lists these commands.\n"
            "\n"
            "options:\n"
            "  --system TEXT             system message at the start of the conversation\n"
            "  --chat-template FILE      Jinja chat template to use instead of the model's\n"
            "  --max-tokens N            longest reply (default: what the context leaves)\n"
            "  --temperature T           0 = greedy (default: generation_config.json's, else 1)\n"
            "  --top-p P  --top-k K  --min-p P  --repetition-penalty X\n"
            "  --seed N                  seed of the first reply (the next ones use N+1, ...)\n"
            "  --ignore-eos              keep writing past the end-of-reply token\n"
            "\n" ENGINE_OPTIONS_HELP);
}

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

/* One line of input (without its newline), joining lines that end in '\'.
 * NULL at end of input; *interrupted set when Ctrl-C cut the read. */
static char *read_message(bool tty, int *interrupted) {
    char *msg = NULL, *line = NULL;
    size_t mlen = 0, cap = 0;
    *interrupted = 0;
    if (tty) fputs(">>> ", stderr);
    for (;;) {
        errno = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            if (errno == EINTR) {
                clearerr(stdin);
                *interrupted = 1;
                free(line);
                free(msg);
                return NULL;
            }
            free(line);
            if (msg) return msg; /* EOF after a continued line: send what there is */
            return NULL;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        bool more = n > 0 && line[n - 1] == '\\';
        if (more) line[--n] = 0;
        char *nm = realloc(msg, mlen + (size_t)n + 2);
        if (!nm) { free(msg); free(line); return NULL; }
        msg = nm;
        memcpy(msg + mlen, line, (size_t)n);
        mlen += (size_t)n;
        msg[mlen] = 0;
        if (!more) break;
        msg[mlen++] = '\n';
        msg[mlen] = 0;
        if (tty) fputs("... ", stderr);
    }
    free(line);
    return msg;
}

struct chat {
    vllmc_engine *e;
    const struct tokenizer *tok;
    struct chat_template *ct;
    json_t *specials;
    json_t *messages;    /* the conversation */
    int n_fixed;         /* leading messages never dropped (the system message) */
    int max_model_len;
    struct vllmc_sampling_params sp;
    int max_tokens;      /* < 0: what the context leaves */
    bool tty_err;
};

/* Render + tokenize the conversation; drops the oldest turns while it leaves
 * no room for a reply. 0, or -1 with err set. */
static int chat_prompt(struct chat *c, int32_t **ids, int *n, char *err, size_t errlen) {
    for (;;) {
        struct chat_apply_params ap = { .messages = c->messages, .specials = c->specials,
                                        .add_generation_prompt = 1 };
        char *text = NULL;
        size_t tlen = 0;
        if (chat_template_apply(c->ct, &ap, &text, &tlen, err, errlen)) return -1;
        int rc = tokenizer_encode(c->tok, text, tlen, 0, ids, n, err, errlen);
        free(text);
        if (rc) return -1;
        int room = c->max_model_len - *n;
        if (room >= 16 || room >= c->max_model_len / 2) return 0;
        /* drop the oldest user/assistant pair after the fixed messages */
        if ((int)json_array_size(c->messages) - c->n_fixed <= 1) {
            snprintf(err, errlen, "the message is too long: %d tokens with the template, the context holds %d", *n,
                     c->max_model_len);
            free(*ids);
            *ids = NULL;
            return -1;
        }
        free(*ids);
        *ids = NULL;
        json_array_remove(c->messages, (size_t)c->n_fixed);
        if ((int)json_array_size(c->messages) - c->n_fixed > 1) json_array_remove(c->messages, (size_t)c->n_fixed);
        if (c->tty_err) fprintf(stderr, "(context full: the oldest turn was dropped)\n");
    }
}

/* Generate and stream one reply; appends it to the history. 0, or -1 after
 * printing an error (the history is then as before the user's message). */
static int chat_turn(struct chat *c, const char *user) {
    char err[1024];
    json_array_append_new(c->messages, json_pack("{s:s,s:s}", "role", "user", "content", user));
    int32_t *ids = NULL;
    int n = 0;
    if (chat_prompt(c, &ids, &n, err, sizeof err)) {
        fprintf(stderr, "vllmc chat: %s\n", err);
        json_array_remove(c->messages, json_array_size(c->messages) - 1);
        return -1;
    }
    struct vllmc_sampling_params sp = c->sp;
    int room = c->max_model_len - n;
    sp.max_tokens = c->max_tokens > 0 && c->max_tokens < room ? c->max_tokens : room;
    struct vllmc_request_params rp = { .prompt = ids, .n_prompt = n, .sampling = sp };
    vllmc_request *r = NULL;
    int rc = vllmc_submit(c->e, &rp, &r, err, sizeof err);
    free(ids);
    if (rc) {
        fprintf(stderr, "vllmc chat: %s\n", err);
        json_array_remove(c->messages, json_array_size(c->messages) - 1);
        return -1;
    }
    char *reply = calloc(1, 1);
    size_t rlen = 0;
    bool oom = !reply;
    int n_tok = 0;
    enum vllmc_finish fin = VLLMC_NOT_FINISHED;
    bool stopped = false;
    const char *engine_err = NULL;
    double t0 = time_now_cli();
    g_interrupted = 0;
    for (;;) {
        if (g_interrupted && !stopped) {
            vllmc_abort(r);
            stopped = true;
        }
        struct vllmc_output o;
        int got = vllmc_request_next(r, &o, 100);
        if (got == 0) continue;
        if (got < 0) break;
        for (int k = 0; k < o.n_seqs; k++) {
            const struct vllmc_seq_output *so = &o.seqs[k];
            if (so->text_len) {
                fwrite(so->text, 1, so->text_len, stdout);
                fflush(stdout);
                char *nr = oom ? NULL : realloc(reply, rlen + so->text_len + 1);
                if (nr) {
                    reply = nr;
                    memcpy(reply + rlen, so->text, so->text_len);
                    rlen += so->text_len;
                    reply[rlen] = 0;
                } else oom = true;
            }
            n_tok += so->n_tokens;
            if (so->finish) fin = so->finish;
        }
        if (o.error) engine_err = o.error;
        if (o.finished) break;
    }
    double dt = time_now_cli() - t0;
    fputc('\n', stdout);
    fflush(stdout);
    if (engine_err) fprintf(stderr, "vllmc chat: %s\n", engine_err);
    if (stopped) fprintf(stderr, "(stopped after %d tokens)\n", n_tok);
    else if (fin == VLLMC_FINISH_LENGTH && sp.max_tokens == room)
        fprintf(stderr, "(the reply filled the context: %d tokens)\n", n_tok);
    else if (c->tty_err) fprintf(stderr, "\033[2m(%d tokens, %.1f tok/s)\033[0m\n", n_tok, dt > 0 ? n_tok / dt : 0.0);
    vllmc_request_free(r);
    g_interrupted = 0;
    if (oom) fprintf(stderr, "vllmc chat: out of memory: the reply is not kept in the history\n");
    if (oom || fin == VLLMC_FINISH_ERROR || (engine_err && !rlen)) {
        json_array_remove(c->messages, json_array_size(c->messages) - 1);
        free(reply);
        return -1;
    }
    json_array_append_new(c->messages, json_pack("{s:s,s:s%}", "role", "assistant", "content", reply, rlen));
    free(reply);
    return 0;
}

static char *read_file_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); errno = ENOMEM; return NULL; }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

int cmd_chat(int argc, char **argv) {
    struct vllmc_engine_params p;
    vllmc_engine_params_default(&p);
    const char *system = NULL, *template_file = NULL;
    double temperature = NAN, top_p = NAN, min_p = NAN, rep = NAN;
    long max_tokens = -1, top_k = -2, v;
    long long seed = -1;
    int ignore_eos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = parse_engine_option("chat", argc, argv, &i, &p);
        if (rc < 0) return 2;
        if (rc > 0) continue;
#define NEED_VAL() do { if (!val) { fprintf(stderr, "vllmc chat: %s needs a value\n", a); return 2; } i++; } while (0)
#define BAD() do { fprintf(stderr, "vllmc chat: bad %s '%s'\n", a, val); return 2; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { chat_usage(stdout); return 0; }
        else if (!strcmp(a, "--system")) { NEED_VAL(); system = val; }
        else if (!strcmp(a, "--chat-template")) { NEED_VAL(); template_file = val; }
        else if (!strcmp(a, "--max-tokens")) { NEED_VAL(); if (parse_long(val, 1, 1 << 24, &max_tokens)) BAD(); }
        else if (!strcmp(a, "--temperature")) { NEED_VAL(); if (parse_double(val, 0, 1e6, &temperature)) BAD(); }
        else if (!strcmp(a, "--top-p")) { NEED_VAL(); if (parse_double(val, 1e-9, 1, &top_p)) BAD(); }
        else if (!strcmp(a, "--min-p")) { NEED_VAL(); if (parse_double(val, 0, 1, &min_p)) BAD(); }
        else if (!strcmp(a, "--repetition-penalty")) { NEED_VAL(); if (parse_double(val, 1e-6, 1e6, &rep)) BAD(); }
        else if (!strcmp(a, "--top-k")) { NEED_VAL(); if (parse_long(val, -1, 1 << 24, &top_k)) BAD(); }
        else if (!strcmp(a, "--seed")) { NEED_VAL(); if (parse_long(val, 0, INT64_MAX, &v)) BAD(); seed = v; }
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "vllmc chat: unknown option '%s' (see --help)\n", a); return 2; }
        else if (!p.model) p.model = a;
        else { fprintf(stderr, "vllmc chat: unexpected argument '%s'\n", a); return 2; }
#undef NEED_VAL
#undef BAD
    }
    char demo[4096], err[1024];
    if (!p.model) {
        if (default_model_dir(demo, sizeof demo, err, sizeof err)) {
            fprintf(stderr, "vllmc chat: %s\n", err);
            return 2;
        }
        p.model = demo;
    }
    char *template_src = NULL;
    if (template_file && !(template_src = read_file_text(template_file))) {
        fprintf(stderr, "vllmc chat: --chat-template %s: %s\n", template_file, strerror(errno));
        return 2;
    }

    /* The engine's threads inherit this mask: with SIGINT blocked there,
     * Ctrl-C always reaches this thread (and interrupts a read at the prompt). */
    sigset_t block, old_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old_mask);
    vllmc_engine *e = open_engine_logged(&p);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    if (!e) { free(template_src); return 1; }
    struct chat c = { .e = e, .max_tokens = (int)max_tokens, .tty_err = isatty(2) };
    int rc = 1;
    c.tok = vllmc_engine_tokenizer(e);
    if (!c.tok) {
        fprintf(stderr, "vllmc chat: %s has no tokenizer.json\n", p.model);
        goto out;
    }
    const char *src = template_src ? template_src : tokenizer_chat_template(c.tok, NULL);
    if (!src) {
        fprintf(stderr, "vllmc chat: %s has no chat template (give one with --chat-template FILE)\n", p.model);
        goto out;
    }
    if (chat_template_compile(&c.ct, src, err, sizeof err)) {
        fprintf(stderr, "vllmc chat: chat template: %s\n", err);
        goto out;
    }
    struct vllmc_model_info info;
    vllmc_model_info(e, &info);
    c.max_model_len = info.max_model_len;
    c.specials = json_object();
    static const char *const names[] = { "bos_token", "eos_token", "unk_token", "pad_token" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *s = tokenizer_special_token(c.tok, names[i]);
        if (s) json_object_set_new(c.specials, names[i], json_string(s));
    }
    c.messages = json_array();
    if (system) {
        json_array_append_new(c.messages, json_pack("{s:s,s:s}", "role", "system", "content", system));
        c.n_fixed = 1;
    }
    vllmc_sampling_params_default(e, &c.sp);
    if (!isnan(temperature)) c.sp.temperature = (float)temperature;
    if (!isnan(top_p)) c.sp.top_p = (float)top_p;
    if (!isnan(min_p)) c.sp.min_p = (float)min_p;
    if (!isnan(rep)) c.sp.repetition_penalty = (float)rep;
    if (top_k != -2) c.sp.top_k = (int)top_k;
    c.sp.ignore_eos = ignore_eos;

    struct sigaction sa = { 0 }, old_sa;
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: Ctrl-C interrupts a read at the prompt */
    sigaction(SIGINT, &sa, &old_sa);

    bool tty_in = isatty(0);
    if (tty_in) fprintf(stderr, "Chatting with %s. Ctrl-C stops a reply, Ctrl-D or /exit quits, /help for more.\n",
                        info.dir);
    uint64_t turn = 0;
    rc = 0;
    for (;;) {
        int intr;
        char *msg = read_message(tty_in, &intr);
        if (!msg) {
            if (intr) { g_interrupted = 0; fputc('\n', stderr); continue; }
            if (tty_in) fputc('\n', stderr);
            break;
        }
        if (!strcmp(msg, "/exit") || !strcmp(msg, "/quit")) { free(msg); break; }
        if (!strcmp(msg, "/reset")) {
            while ((int)json_array_size(c.messages) > c.n_fixed) json_array_remove(c.messages, json_array_size(c.messages) - 1);
            fprintf(stderr, "(history cleared)\n");
        } else if (!strcmp(msg, "/history")) {
            char *s = json_dumps(c.messages, JSON_COMPACT | JSON_ENSURE_ASCII);
            printf("%s\n", s ? s : "[]");
            fflush(stdout);
            free(s);
        } else if (!strcmp(msg, "/help")) {
            fprintf(stderr, "/reset clears the history, /history prints it (JSON), /exit quits; Ctrl-C stops a "
                            "reply; a line ending in \\ continues on the next\n");
        } else if (msg[0] == '/' && msg[1] && !strchr(msg, ' ') && !strchr(msg, '\n')) {
            fprintf(stderr, "unknown command %s (/help lists them)\n", msg);
        } else if (msg[0]) {
            if (seed >= 0) c.sp.has_seed = 1, c.sp.seed = (uint64_t)seed + turn;
            turn++;
            chat_turn(&c, msg);
        }
        free(msg);
    }
    sigaction(SIGINT, &old_sa, NULL);
out:
    json_decref(c.messages);
    json_decref(c.specials);
    chat_template_free(c.ct);
    free(template_src);
    vllmc_engine_close(e);
    return rc;
}
