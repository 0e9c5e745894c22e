/* generate.c — `vllmc generate`: offline generation through the engine, as
 * vLLM's LLM.generate. One prompt (--prompt TEXT or --prompt-ids) prints the
 * generated ids and text; --input FILE.jsonl runs every line's prompt
 * concurrently (continuous batching) and writes one JSON object per request
 * to --output (or stdout), with a progress bar on a terminal.
 *
 * Input line: {"prompt": "text"} or {"prompt_token_ids": [..]}, plus any of
 * the sampling keys below; output line (vLLM's RequestOutput):
 * {"index", "request_id", "prompt", "prompt_token_ids", "num_cached_tokens",
 *  "outputs": [{"index", "text", "token_ids", "finish_reason", "stop_reason",
 *  "cumulative_logprob", "logprobs"}]}. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void generate_usage(FILE *f) {
    fprintf(f,
            "usage: vllmc generate MODEL (--prompt TEXT | --prompt-ids ID,... | --input FILE.jsonl) [options]\n"
            "\n"
            "  --prompt TEXT             one prompt as text (tokenized with the model's tokenizer)\n"
            "  --prompt-ids LIST         one prompt as comma-separated token ids\n"
            "  --input FILE              JSONL, one request per line: {\"prompt\": \"...\"} or\n"
            "                            {\"prompt_token_ids\": [...]}, plus sampling keys\n"
            "  --output FILE             JSONL results (default: stdout)\n"
            "\n"
            "sampling (defaults for every prompt; keys of an input line override them;\n"
            "the model's generation_config.json sets the defaults unless --generation-config vllm):\n"
            "  --max-tokens N            tokens to generate (default 16)\n"
            "  --temperature T           0 = greedy\n"
            "  --top-p P  --top-k K  --min-p P\n"
            "  --presence-penalty X  --frequency-penalty X  --repetition-penalty X\n"
            "  --seed N                  per-request seed (reproducible in any batch)\n"
            "  --n N                     samples per prompt\n"
            "  --stop STR                stop string (repeatable)\n"
            "  --min-tokens N  --ignore-eos  --logprobs K\n"
            "\n" ENGINE_OPTIONS_HELP);
}

struct job {
    int32_t *ids;
    int n_ids;
    char *prompt_text;
    struct vllmc_sampling_params sp;
    char **stop;
    int n_stop;
    int32_t *stop_ids;
    vllmc_request *r;
    /* collected */
    json_t *outs; /* array of per-sequence objects */
    int *n_tok;
    int n_cached;
    bool done;
};

/* Apply a JSON object's sampling keys (vLLM SamplingParams names) to sp. */
static int sampling_from_json(json_t *o, struct job *j, char *err, size_t errlen) {
    struct vllmc_sampling_params *sp = &j->sp;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        if (!strcmp(key, "prompt") || !strcmp(key, "prompt_token_ids")) continue;
#define NUM(name, field)                                                        \
        if (!strcmp(key, name)) {                                               \
            if (!json_is_number(v)) return errf_cli(err, errlen, key);          \
            sp->field = (float)json_number_value(v);                            \
            continue;                                                           \
        }
#define INT(name, field)                                                        \
        if (!strcmp(key, name)) {                                               \
            if (!json_is_integer(v)) return errf_cli(err, errlen, key);         \
            sp->field = (int)json_integer_value(v);                             \
            continue;                                                           \
        }
        NUM("temperature", temperature)
        NUM("top_p", top_p)
        NUM("min_p", min_p)
        NUM("presence_penalty", presence_penalty)
        NUM("frequency_penalty", frequency_penalty)
        NUM("repetition_penalty", repetition_penalty)
        INT("top_k", top_k)
        INT("max_tokens", max_tokens)
        INT("min_tokens", min_tokens)
        INT("n", n)
        INT("logprobs", logprobs)
        INT("prompt_logprobs", prompt_logprobs)
#undef NUM
#undef INT
        if (!strcmp(key, "seed")) {
            if (!json_is_integer(v)) return errf_cli(err, errlen, key);
            sp->has_seed = 1;
            sp->seed = (uint64_t)json_integer_value(v);
        } else if (!strcmp(key, "ignore_eos") || !strcmp(key, "include_stop_str_in_output") ||
                   !strcmp(key, "skip_special_tokens")) {
            if (!json_is_boolean(v)) return errf_cli(err, errlen, key);
            int b = json_is_true(v);
            if (key[0] == 'i' && key[1] == 'g') sp->ignore_eos = b;
            else if (key[0] == 'i') sp->include_stop_str_in_output = b;
            else sp->skip_special_tokens = b;
        } else if (!strcmp(key, "stop")) {
            if (json_is_string(v)) {
                j->stop = realloc(j->stop, sizeof *j->stop);
                j->stop[0] = strdup(json_string_value(v));
                j->n_stop = 1;
            } else if (json_is_array(v)) {
                j->n_stop = (int)json_array_size(v);
                j->stop = calloc((size_t)j->n_stop + 1, sizeof *j->stop);
                for (int i = 0; i < j->n_stop; i++) {
                    if (!json_is_string(json_array_get(v, i))) return errf_cli(err, errlen, key);
                    j->stop[i] = strdup(json_string_value(json_array_get(v, i)));
                }
            } else return errf_cli(err, errlen, key);
        } else if (!strcmp(key, "stop_token_ids")) {
            if (!json_is_array(v)) return errf_cli(err, errlen, key);
            int n = (int)json_array_size(v);
            j->stop_ids = calloc((size_t)n + 1, sizeof *j->stop_ids);
            for (int i = 0; i < n; i++) {
                if (!json_is_integer(json_array_get(v, i))) return errf_cli(err, errlen, key);
                j->stop_ids[i] = (int32_t)json_integer_value(json_array_get(v, i));
            }
            sp->stop_token_ids = j->stop_ids;
            sp->n_stop_token_ids = n;
        } else {
            snprintf(err, errlen, "unknown key '%s'", key);
            return -1;
        }
    }
    return 0;
}

static void job_free(struct job *j) {
    free(j->ids);
    free(j->prompt_text);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->stop);
    free(j->stop_ids);
    free(j->n_tok);
    json_decref(j->outs);
    if (j->r) vllmc_request_free(j->r);
}

static json_t *ids_json(const int32_t *ids, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* Fold one output read into the job's per-sequence JSON objects. */
static void absorb(struct job *j, const struct vllmc_output *o) {
    if (!j->outs) {
        j->outs = json_array();
        for (int i = 0; i < j->sp.n; i++) {
            json_t *s = json_pack("{s:i,s:s,s:[],s:n,s:n}", "index", i, "text", "", "token_ids", "finish_reason",
                                  "stop_reason");
            if (j->sp.logprobs >= 0) {
                json_object_set_new(s, "cumulative_logprob", json_real(0));
                json_object_set_new(s, "logprobs", json_array());
            }
            json_array_append_new(j->outs, s);
        }
    }
    for (int k = 0; k < o->n_seqs; k++) {
        const struct vllmc_seq_output *so = &o->seqs[k];
        json_t *s = json_array_get(j->outs, (size_t)so->index);
        if (so->text_len) {
            const char *old = json_string_value(json_object_get(s, "text"));
            size_t ol = strlen(old);
            char *t = malloc(ol + so->text_len + 1);
            memcpy(t, old, ol);
            memcpy(t + ol, so->text, so->text_len);
            t[ol + so->text_len] = 0;
            json_t *str = json_stringn_nocheck(t, ol + so->text_len);
            json_object_set_new(s, "text", str);
            free(t);
        }
        json_t *ids = json_object_get(s, "token_ids");
        for (int t = 0; t < so->n_tokens; t++) json_array_append_new(ids, json_integer(so->tokens[t]));
        if (so->logprobs) {
            json_t *lp = json_object_get(s, "logprobs");
            double cum = json_real_value(json_object_get(s, "cumulative_logprob"));
            for (int t = 0; t < so->n_tokens; t++) {
                const struct vllmc_token_logprobs *l = &so->logprobs[t];
                json_t *d = json_object();
                char key[16];
                snprintf(key, sizeof key, "%d", l->chosen.token);
                json_object_set_new(d, key, json_pack("{s:f,s:i}", "logprob", l->chosen.logprob, "rank", l->chosen.rank));
                for (int q = 0; q < l->n_top; q++) {
                    snprintf(key, sizeof key, "%d", l->top[q].token);
                    json_object_set_new(d, key, json_pack("{s:f,s:i}", "logprob", l->top[q].logprob, "rank",
                                                          l->top[q].rank));
                }
                json_array_append_new(lp, d);
                cum += l->chosen.logprob;
            }
            json_object_set_new(s, "cumulative_logprob", json_real(cum));
        }
        if (so->finish) {
            json_object_set_new(s, "finish_reason", json_string(vllmc_finish_name(so->finish)));
            if (so->stop_str) json_object_set_new(s, "stop_reason", json_string(so->stop_str));
            else if (so->stop_token >= 0) json_object_set_new(s, "stop_reason", json_integer(so->stop_token));
        }
    }
    j->n_cached = o->n_cached_tokens;
}

static void progress(int done, int total, int64_t toks, double t0) {
    if (!isatty(2)) return;
    double el = time_now_cli() - t0;
    int w = 30, fill = total ? done * w / total : w;
    fprintf(stderr, "\r[%.*s%*s] %d/%d requests, %.1f s, %.1f tok/s ", fill, "##############################",
            w - fill, "", done, total, el, el > 0 ? (double)toks / el : 0.0);
    if (done == total) fprintf(stderr, "\n");
}

int cmd_generate(int argc, char **argv) {
    struct vllmc_engine_params p;
    vllmc_engine_params_default(&p);
    const char *ids_arg = NULL, *prompt_text = NULL, *input = NULL, *output = NULL;
    /* CLI sampling defaults: applied over the engine's defaults */
    double temperature = NAN, top_p = NAN, min_p = NAN, pres = NAN, freq = NAN, rep = NAN;
    long max_tokens = 16, top_k = -2, n = 1, min_tokens = 0, logprobs = -1, v;
    long long seed = -1;
    int ignore_eos = 0;
    const char *stops[64];
    int n_stops = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = parse_engine_option("generate", argc, argv, &i, &p);
        if (rc < 0) return 2;
        if (rc > 0) continue;
#define NEED_VAL() do { if (!val) { fprintf(stderr, "vllmc generate: %s needs a value\n", a); return 2; } i++; } while (0)
#define BAD() do { fprintf(stderr, "vllmc generate: bad %s '%s'\n", a, val); return 2; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { generate_usage(stdout); return 0; }
        else if (!strcmp(a, "--prompt-ids")) { NEED_VAL(); ids_arg = val; }
        else if (!strcmp(a, "--prompt")) { NEED_VAL(); prompt_text = val; }
        else if (!strcmp(a, "--input")) { NEED_VAL(); input = val; }
        else if (!strcmp(a, "--output")) { NEED_VAL(); output = val; }
        else if (!strcmp(a, "--max-tokens")) { NEED_VAL(); if (parse_long(val, 1, 1 << 24, &max_tokens)) BAD(); }
        else if (!strcmp(a, "--temperature")) { NEED_VAL(); if (parse_double(val, 0, 1e6, &temperature)) BAD(); }
        else if (!strcmp(a, "--top-p")) { NEED_VAL(); if (parse_double(val, 0, 1, &top_p)) BAD(); }
        else if (!strcmp(a, "--min-p")) { NEED_VAL(); if (parse_double(val, 0, 1, &min_p)) BAD(); }
        else if (!strcmp(a, "--presence-penalty")) { NEED_VAL(); if (parse_double(val, -2, 2, &pres)) BAD(); }
        else if (!strcmp(a, "--frequency-penalty")) { NEED_VAL(); if (parse_double(val, -2, 2, &freq)) BAD(); }
        else if (!strcmp(a, "--repetition-penalty")) { NEED_VAL(); if (parse_double(val, 1e-6, 1e6, &rep)) BAD(); }
        else if (!strcmp(a, "--top-k")) { NEED_VAL(); if (parse_long(val, -1, 1 << 24, &top_k)) BAD(); }
        else if (!strcmp(a, "--n")) { NEED_VAL(); if (parse_long(val, 1, 128, &n)) BAD(); }
        else if (!strcmp(a, "--min-tokens")) { NEED_VAL(); if (parse_long(val, 0, 1 << 24, &min_tokens)) BAD(); }
        else if (!strcmp(a, "--logprobs")) { NEED_VAL(); if (parse_long(val, 0, 20, &logprobs)) BAD(); }
        else if (!strcmp(a, "--seed")) { NEED_VAL(); if (parse_long(val, 0, INT64_MAX, &v)) BAD(); seed = v; }
        else if (!strcmp(a, "--stop")) { NEED_VAL(); if (n_stops == 64) BAD(); stops[n_stops++] = val; }
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
        else if (a[0] == '-') { fprintf(stderr, "vllmc generate: unknown option '%s' (see --help)\n", a); return 2; }
        else if (!p.model) p.model = a;
        else { fprintf(stderr, "vllmc generate: unexpected argument '%s'\n", a); return 2; }
#undef NEED_VAL
#undef BAD
    }
    if (!p.model || (!!ids_arg + !!prompt_text + !!input) != 1) {
        fprintf(stderr, "vllmc generate: give a model and exactly one of --prompt, --prompt-ids, --input\n\n");
        generate_usage(stderr);
        return 2;
    }
    /* lines of the input file (or the one prompt) */
    json_t *lines = json_array();
    if (input) {
        FILE *f = fopen(input, "r");
        if (!f) { fprintf(stderr, "vllmc generate: cannot open %s\n", input); json_decref(lines); return 1; }
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        int lineno = 0;
        while ((len = getline(&line, &cap, f)) >= 0) {
            lineno++;
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ')) line[--len] = 0;
            if (!len) continue;
            json_error_t je;
            json_t *o = json_loads(line, 0, &je);
            if (!json_is_object(o)) {
                fprintf(stderr, "vllmc generate: %s:%d: not a JSON object (%s)\n", input, lineno, je.text);
                json_decref(o);
                free(line);
                fclose(f);
                json_decref(lines);
                return 1;
            }
            json_object_set_new(o, "_line", json_integer(lineno));
            json_array_append_new(lines, o);
        }
        free(line);
        fclose(f);
    } else if (prompt_text) json_array_append_new(lines, json_pack("{s:s,s:i}", "prompt", prompt_text, "_line", 0));
    else {
        int32_t *ids;
        int n_ids;
        if (parse_ids(ids_arg, &ids, &n_ids)) {
            fprintf(stderr, "vllmc generate: bad --prompt-ids '%s'\n", ids_arg);
            json_decref(lines);
            return 2;
        }
        json_array_append_new(lines, json_pack("{s:o,s:i}", "prompt_token_ids", ids_json(ids, n_ids), "_line", 0));
        free(ids);
    }
    size_t nj = json_array_size(lines);
    if (nj == 0) { fprintf(stderr, "vllmc generate: %s has no prompts\n", input); json_decref(lines); return 1; }

    vllmc_engine *e = open_engine_logged(&p);
    if (!e) { json_decref(lines); return 1; }
    struct job *jobs = calloc(nj, sizeof *jobs);
    int rc = 0;
    char err[1024];
    double t0 = time_now_cli();
    for (size_t k = 0; k < nj && !rc; k++) {
        json_t *o = json_array_get(lines, k);
        struct job *j = &jobs[k];
        int lineno = (int)json_integer_value(json_object_get(o, "_line"));
        json_object_del(o, "_line");
        vllmc_sampling_params_default(e, &j->sp);
        j->sp.max_tokens = (int)max_tokens;
        if (!isnan(temperature)) j->sp.temperature = (float)temperature;
        if (!isnan(top_p)) j->sp.top_p = (float)top_p;
        if (!isnan(min_p)) j->sp.min_p = (float)min_p;
        if (!isnan(pres)) j->sp.presence_penalty = (float)pres;
        if (!isnan(freq)) j->sp.frequency_penalty = (float)freq;
        if (!isnan(rep)) j->sp.repetition_penalty = (float)rep;
        if (top_k != -2) j->sp.top_k = (int)top_k;
        if (seed >= 0) j->sp.has_seed = 1, j->sp.seed = (uint64_t)seed;
        j->sp.n = (int)n;
        j->sp.min_tokens = (int)min_tokens;
        j->sp.logprobs = (int)logprobs;
        j->sp.ignore_eos = ignore_eos;
        if (n_stops) {
            j->stop = calloc((size_t)n_stops, sizeof *j->stop);
            for (int i = 0; i < n_stops; i++) j->stop[i] = strdup(stops[i]);
            j->n_stop = n_stops;
        }
        if (sampling_from_json(o, j, err, sizeof err)) {
            fprintf(stderr, "vllmc generate: %s:%d: %s\n", input, lineno, err);
            rc = 1;
            break;
        }
        j->sp.stop = (const char *const *)j->stop;
        j->sp.n_stop = j->n_stop;
        json_t *pt = json_object_get(o, "prompt"), *pi = json_object_get(o, "prompt_token_ids");
        if (json_is_string(pt)) {
            j->prompt_text = strdup(json_string_value(pt));
            if (prompt_encode(vllmc_engine_tokenizer(e), j->prompt_text, 1, &j->ids, &j->n_ids, err, sizeof err)) {
                fprintf(stderr, "vllmc generate: %s%s%d: %s\n", input ? input : "--prompt", input ? ":" : "",
                        lineno, err);
                rc = 1;
                break;
            }
        } else if (json_is_array(pi)) {
            j->n_ids = (int)json_array_size(pi);
            j->ids = calloc((size_t)j->n_ids + 1, sizeof *j->ids);
            for (int i = 0; i < j->n_ids; i++) j->ids[i] = (int32_t)json_integer_value(json_array_get(pi, (size_t)i));
        } else {
            fprintf(stderr, "vllmc generate: %s:%d: needs \"prompt\" (string) or \"prompt_token_ids\" (array)\n",
                    input, lineno);
            rc = 1;
            break;
        }
        struct vllmc_request_params rp = { .prompt = j->ids, .n_prompt = j->n_ids, .sampling = j->sp };
        if (vllmc_submit(e, &rp, &j->r, err, sizeof err)) {
            if (input) fprintf(stderr, "vllmc generate: %s:%d: %s\n", input, lineno, err);
            else fprintf(stderr, "vllmc: %s\n", err);
            rc = 1;
            break;
        }
    }
    /* collect: round-robin over unfinished requests with short waits */
    size_t n_done = 0;
    int64_t toks = 0;
    while (!rc && n_done < nj) {
        for (size_t k = 0; k < nj; k++) {
            struct job *j = &jobs[k];
            if (j->done) continue;
            struct vllmc_output o;
            int got;
            while ((got = vllmc_request_next(j->r, &o, 0)) == 1) {
                absorb(j, &o);
                for (int i = 0; i < o.n_seqs; i++) toks += o.seqs[i].n_tokens;
                if (o.error) { fprintf(stderr, "vllmc: %s\n", o.error); rc = 1; }
                if (o.finished) { j->done = true; n_done++; break; }
            }
        }
        progress((int)n_done, (int)nj, toks, t0);
        if (n_done < nj && !rc) {
            /* block on the first unfinished request instead of spinning */
            for (size_t k = 0; k < nj; k++)
                if (!jobs[k].done) {
                    struct vllmc_output o;
                    int got = vllmc_request_next(jobs[k].r, &o, 100);
                    if (got == 1) {
                        absorb(&jobs[k], &o);
                        for (int i = 0; i < o.n_seqs; i++) toks += o.seqs[i].n_tokens;
                        if (o.error) { fprintf(stderr, "vllmc: %s\n", o.error); rc = 1; }
                        if (o.finished) { jobs[k].done = true; n_done++; }
                    }
                    break;
                }
        }
    }
    double el = time_now_cli() - t0;
    if (!rc) {
        FILE *out = stdout;
        if (output && !(out = fopen(output, "w"))) { fprintf(stderr, "vllmc generate: cannot write %s\n", output); rc = 1; }
        for (size_t k = 0; k < nj && !rc; k++) {
            struct job *j = &jobs[k];
            if (!input) { /* one prompt: ids line, then text */
                for (int s = 0; s < j->sp.n; s++) {
                    json_t *so = json_array_get(j->outs, (size_t)s);
                    json_t *ids = json_object_get(so, "token_ids");
                    for (size_t i = 0; i < json_array_size(ids); i++)
                        fprintf(out, "%s%lld", i ? "," : "", (long long)json_integer_value(json_array_get(ids, i)));
                    fprintf(out, "\n");
                    const char *text = json_string_value(json_object_get(so, "text"));
                    if (text && *text) fprintf(out, "%s\n", text);
                }
                continue;
            }
            json_t *res = json_pack("{s:i,s:s+,s:o,s:i,s:O}", "index", (int)k, "request_id", "gen-", "0",
                                    "prompt_token_ids", ids_json(j->ids, j->n_ids), "num_cached_tokens", j->n_cached,
                                    "outputs", j->outs);
            json_object_set_new(res, "request_id", json_sprintf("gen-%zu", k));
            json_object_set_new(res, "prompt", j->prompt_text ? json_string(j->prompt_text) : json_null());
            char *s = json_dumps(res, JSON_COMPACT | JSON_PRESERVE_ORDER);
            fprintf(out, "%s\n", s);
            free(s);
            json_decref(res);
        }
        if (out && out != stdout) fclose(out);
        fprintf(stderr, "vllmc: %zu requests, %lld generated tokens in %.3f s (%.1f tok/s)\n", nj, (long long)toks, el,
                el > 0 ? (double)toks / el : 0.0);
    }
    for (size_t k = 0; k < nj; k++) job_free(&jobs[k]);
    free(jobs);
    json_decref(lines);
    vllmc_engine_close(e);
    return rc;
}
