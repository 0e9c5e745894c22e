/* bench.c — `vllmc bench throughput|latency MODEL`: offline benchmarks
 * through the engine, in the shape of `vllm bench throughput|latency`:
 * random token prompts, ignore_eos, temperature 1 (vLLM's choices), printed
 * results and --output-json; and prefix-caching: time to first token of a
 * long prompt cold and re-sent with a new suffix. (`vllmc bench serve` lives in src/server.) */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: vllmc bench throughput MODEL [--num-prompts N] [--input-len I] [--output-len O] [options]\n"
            "       vllmc bench latency MODEL [--batch-size B] [--input-len I] [--output-len O]\n"
            "                               [--num-iters N] [--num-iters-warmup W] [options]\n"
            "       vllmc bench prefix-caching MODEL [--prefix-len P] [--suffix-len S] [--repetitions R]\n"
            "       vllmc bench serve --help\n"
            "\n"
            "  --num-prompts N        requests (throughput; default 100)\n"
            "  --batch-size B         requests per iteration (latency; default 8)\n"
            "  --input-len I          random prompt tokens per request (default 128)\n"
            "  --output-len O         generated tokens per request, EOS ignored (default 128)\n"
            "  --num-iters N          measured iterations (latency; default 5)\n"
            "  --num-iters-warmup W   warm-up iterations (latency; default 1)\n"
            "  --prefix-len P         shared prefix (prefix-caching; default 2000): time to first token\n"
            "                         of prefix+suffix cold, then with a new suffix of --suffix-len (16)\n"
            "  --greedy               temperature 0 instead of vLLM's 1\n"
            "  --top-k K, --top-p P   sample each request with these (default: off, as vLLM's bench)\n"
            "  --output-json FILE     results as JSON\n"
            "\n" ENGINE_OPTIONS_HELP);
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

/* Submit n requests of random prompts and wait for all; returns seconds, or
 * a negative value after printing an error. */
static long b_top_k = 0;   /* --top-k (0: off) */
static double b_top_p = 1; /* --top-p */

static double run_batch(vllmc_engine *e, int n, int in_len, int out_len, int greedy, uint64_t *rng, int64_t *out_toks) {
    struct vllmc_model_info info;
    vllmc_model_info(e, &info);
    vllmc_request **r = calloc((size_t)n, sizeof *r);
    int32_t *ids = malloc((size_t)in_len * sizeof *ids);
    char err[512];
    double t0 = time_now_cli(), el = -1;
    int submitted = 0;
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < in_len; i++) ids[i] = (int32_t)(rng_next(rng) % (uint64_t)info.n_vocab);
        struct vllmc_request_params rp = { .prompt = ids, .n_prompt = in_len };
        vllmc_sampling_params_default(e, &rp.sampling);
        rp.sampling.temperature = greedy ? 0.0f : 1.0f;
        rp.sampling.top_p = (float)b_top_p, rp.sampling.top_k = (int)b_top_k, rp.sampling.min_p = 0;
        rp.sampling.repetition_penalty = 1;
        rp.sampling.max_tokens = out_len;
        rp.sampling.ignore_eos = 1;
        rp.sampling.detokenize = 0;
        if (vllmc_submit(e, &rp, &r[k], err, sizeof err)) {
            fprintf(stderr, "vllmc bench: %s\n", err);
            goto done;
        }
        submitted++;
    }
    int64_t toks = 0;
    for (int k = 0; k < n; k++) {
        struct vllmc_output o;
        while (vllmc_request_next(r[k], &o, -1) == 1) {
            for (int i = 0; i < o.n_seqs; i++) toks += o.seqs[i].n_tokens;
            if (o.error) {
                fprintf(stderr, "vllmc bench: %s\n", o.error);
                goto done;
            }
            if (o.finished) break;
        }
    }
    *out_toks = toks;
    el = time_now_cli() - t0;
done:
    for (int k = 0; k < submitted; k++) vllmc_request_free(r[k]);
    free(r);
    free(ids);
    return el;
}

/* Time to first token of one request (seconds), and its cached tokens. */
static double ttft_once(vllmc_engine *e, const int32_t *ids, int n, int *cached) {
    struct vllmc_request_params rp = { .prompt = ids, .n_prompt = n };
    vllmc_sampling_params_default(e, &rp.sampling);
    rp.sampling.temperature = 0;
    rp.sampling.max_tokens = 1;
    rp.sampling.ignore_eos = 1;
    rp.sampling.detokenize = 0;
    vllmc_request *r;
    char err[512];
    if (vllmc_submit(e, &rp, &r, err, sizeof err)) {
        fprintf(stderr, "vllmc bench: %s\n", err);
        return -1;
    }
    struct vllmc_output o;
    double t = -1;
    while (vllmc_request_next(r, &o, -1) == 1) {
        if (o.t_first_token > 0 && t < 0) t = o.t_first_token - o.t_arrival;
        *cached = o.n_cached_tokens;
        if (o.finished) break;
    }
    vllmc_request_free(r);
    return t;
}

/* Cold prompt (prefix + suffix A), then the same prefix with a new suffix B. */
static json_t *bench_prefix(vllmc_engine *e, int prefix_len, int suffix_len, int reps, uint64_t *rng) {
    struct vllmc_model_info info;
    vllmc_model_info(e, &info);
    int n = prefix_len + suffix_len;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    double cold = 0, warm = 0;
    int cached = 0;
    for (int k = 0; k < reps; k++) {
        for (int i = 0; i < n; i++) ids[i] = (int32_t)(rng_next(rng) % (uint64_t)info.n_vocab);
        int c0;
        double tc = ttft_once(e, ids, n, &c0);
        for (int i = prefix_len; i < n; i++) ids[i] = (int32_t)(rng_next(rng) % (uint64_t)info.n_vocab);
        double tw = ttft_once(e, ids, n, &cached);
        if (tc < 0 || tw < 0) { free(ids); return NULL; }
        printf("rep %d: cold TTFT %.4f s (%d cached), warm TTFT %.4f s (%d cached)\n", k, tc, c0, tw, cached);
        cold += tc, warm += tw;
    }
    free(ids);
    cold /= reps, warm /= reps;
    printf("Prefix %d + suffix %d tokens: cold TTFT %.4f s, warm TTFT %.4f s: %.1fx sooner\n", prefix_len, suffix_len,
           cold, warm, cold / warm);
    return json_pack("{s:i,s:i,s:f,s:f,s:f,s:i}", "prefix_len", prefix_len, "suffix_len", suffix_len, "cold_ttft",
                     cold, "warm_ttft", warm, "speedup", cold / warm, "warm_cached_tokens", cached);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const double *sorted, int n, double q) {
    if (n == 1) return sorted[0];
    double pos = q / 100.0 * (n - 1);
    int lo = (int)pos;
    if (lo >= n - 1) return sorted[n - 1];
    return sorted[lo] + (pos - lo) * (sorted[lo + 1] - sorted[lo]);
}

int cmd_bench(int argc, char **argv) {
    if (argc < 1 || !strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        bench_usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    const char *mode = argv[0];
    bool thr = !strcmp(mode, "throughput"), lat = !strcmp(mode, "latency"), pfx = !strcmp(mode, "prefix-caching");
    if (!thr && !lat && !pfx) {
        fprintf(stderr, "vllmc bench: unknown benchmark '%s' (throughput, latency, prefix-caching, serve)\n", mode);
        return 2;
    }
    struct vllmc_engine_params p;
    vllmc_engine_params_default(&p);
    long num_prompts = 100, batch = 8, in_len = 128, out_len = 128, iters = 5, warm = 1, prefix_len = 2000,
         suffix_len = 16, reps = 3;
    int greedy = 0;
    const char *json_out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = parse_engine_option("bench", argc, argv, &i, &p);
        if (rc < 0) return 2;
        if (rc > 0) continue;
#define NUMOPT(name, lo, var)                                                                 \
        if (!strcmp(a, name)) {                                                               \
            if (!val || parse_long(val, lo, 1 << 24, &var)) {                                 \
                fprintf(stderr, "vllmc bench: %s needs an integer >= %d\n", name, lo);        \
                return 2;                                                                     \
            }                                                                                 \
            i++;                                                                              \
            continue;                                                                         \
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { bench_usage(stdout); return 0; }
        NUMOPT("--num-prompts", 1, num_prompts)
        NUMOPT("--batch-size", 1, batch)
        NUMOPT("--input-len", 1, in_len)
        NUMOPT("--output-len", 1, out_len)
        NUMOPT("--num-iters", 1, iters)
        NUMOPT("--num-iters-warmup", 0, warm)
        NUMOPT("--prefix-len", 1, prefix_len)
        NUMOPT("--suffix-len", 1, suffix_len)
        NUMOPT("--repetitions", 1, reps)
        NUMOPT("--top-k", 0, b_top_k)
#undef NUMOPT
        if (!strcmp(a, "--greedy")) greedy = 1;
        else if (!strcmp(a, "--top-p")) {
            char *end = NULL;
            b_top_p = val ? strtod(val, &end) : 0;
            if (!val || end == val || *end || !(b_top_p > 0 && b_top_p <= 1)) {
                fprintf(stderr, "vllmc bench: --top-p needs a number in (0, 1]\n");
                return 2;
            }
            i++;
        }
        else if (!strcmp(a, "--output-json")) {
            if (!val) { fprintf(stderr, "vllmc bench: --output-json needs a file\n"); return 2; }
            json_out = val;
            i++;
        } else if (a[0] == '-') { fprintf(stderr, "vllmc bench: unknown option '%s' (see --help)\n", a); return 2; }
        else if (!p.model) p.model = a;
        else { fprintf(stderr, "vllmc bench: unexpected argument '%s'\n", a); return 2; }
    }
    if (!p.model) { bench_usage(stderr); return 2; }
    vllmc_engine *e = open_engine_logged(&p);
    if (!e) return 1;
    uint64_t rng = 0x243F6A8885A308D3ull ^ p.seed;
    json_t *res = NULL;
    int rc = 0;
    if (pfx) {
        res = bench_prefix(e, (int)prefix_len, (int)suffix_len, (int)reps, &rng);
        if (!res) rc = 1;
    } else if (thr) {
        int64_t toks = 0;
        double el = run_batch(e, (int)num_prompts, (int)in_len, (int)out_len, greedy, &rng, &toks);
        if (el < 0) rc = 1;
        else {
            double total = (double)num_prompts * (double)in_len + (double)toks;
            printf("Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s\n", num_prompts / el,
                   total / el, toks / el);
            printf("Total num prompt tokens:  %ld\nTotal num output tokens:  %lld\nElapsed: %.3f s\n",
                   num_prompts * in_len, (long long)toks, el);
            res = json_pack("{s:f,s:i,s:f,s:f,s:f,s:f}", "elapsed_time", el, "num_requests", (int)num_prompts,
                            "total_num_tokens", total, "requests_per_second", num_prompts / el, "tokens_per_second",
                            total / el, "output_tokens_per_second", toks / el);
        }
    } else {
        double *lat_s = calloc((size_t)iters, sizeof *lat_s);
        int64_t toks;
        for (long k = 0; k < warm && !rc; k++)
            if (run_batch(e, (int)batch, (int)in_len, (int)out_len, greedy, &rng, &toks) < 0) rc = 1;
        for (long k = 0; k < iters && !rc; k++) {
            lat_s[k] = run_batch(e, (int)batch, (int)in_len, (int)out_len, greedy, &rng, &toks);
            if (lat_s[k] < 0) rc = 1;
        }
        if (!rc) {
            double sum = 0;
            for (long k = 0; k < iters; k++) sum += lat_s[k];
            json_t *lats = json_array(), *pct = json_object();
            for (long k = 0; k < iters; k++) json_array_append_new(lats, json_real(lat_s[k]));
            qsort(lat_s, (size_t)iters, sizeof *lat_s, cmp_double);
            printf("Avg latency: %.4f seconds\n", sum / iters);
            const int qs[] = { 10, 25, 50, 75, 90, 99 };
            for (size_t q = 0; q < sizeof qs / sizeof *qs; q++) {
                double v = percentile(lat_s, (int)iters, qs[q]);
                printf("%d%% percentile latency: %.4f seconds\n", qs[q], v);
                char key[8];
                snprintf(key, sizeof key, "%d", qs[q]);
                json_object_set_new(pct, key, json_real(v));
            }
            res = json_pack("{s:f,s:o,s:o}", "avg_latency", sum / iters, "latencies", lats, "percentiles", pct);
        }
        free(lat_s);
    }
    struct vllmc_engine_stats st;
    vllmc_engine_stats(e, &st);
    if (res) {
        json_object_set_new(res, "engine_steps", json_integer(st.steps));
        json_object_set_new(res, "engine_busy_seconds", json_real(st.busy_seconds));
        json_object_set_new(res, "preemptions", json_integer(st.preemptions));
        json_object_set_new(res, "engine_forward_seconds", json_real(st.forward_seconds));
        json_object_set_new(res, "engine_gap_seconds", json_real(st.gap_seconds));
        fprintf(stderr, "vllmc: %lld steps, %.3f s in steps, %.3f s of them in the forward (engine overhead %.1f%%), "
                "%lld preemptions; %.1f us of host time from a step's results to the next forward (%lld steps)\n",
                (long long)st.steps, st.busy_seconds, st.forward_seconds,
                st.busy_seconds > 0 ? 100.0 * (st.busy_seconds - st.forward_seconds) / st.busy_seconds : 0.0,
                (long long)st.preemptions, st.gap_steps ? 1e6 * st.gap_seconds / (double)st.gap_steps : 0.0,
                (long long)st.gap_steps);
    }
    if (res && json_out && json_dump_file(res, json_out, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) {
        fprintf(stderr, "vllmc bench: cannot write %s\n", json_out);
        rc = 1;
    }
    json_decref(res);
    vllmc_engine_close(e);
    return rc;
}
