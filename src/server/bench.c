/* bench.c — `vllmc bench serve`: a load generator in the shape of
 * `vllm bench serve` with the random dataset. Prompts are random token ids
 * sent to /v1/completions (ignore_eos, greedy, streamed with usage) by
 * max-concurrency client threads; it reports request and token throughput
 * and TTFT, TPOT and ITL mean/median/p99 (ms), optionally as JSON with
 * vLLM's key names.
 *
 * Owns: its sockets and per-request results. Does not: use the engine API
 * (it is a plain HTTP client over loopback or the network), HTTPS, or
 * datasets other than random token ids. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/server.h"
#include "util/util.h"

struct bench_opts {
    char host[256], port[16];
    const char *model, *output_json, *api_key;
    int num_prompts, concurrency, input_len, output_len, vocab;
    uint64_t seed;
};

struct result {
    int ok;
    int input_len, output_len;
    double ttft, latency;
    double *itl;
    int n_itl;
    char err[160];
};

struct bench {
    const struct bench_opts *o;
    atomic_int next;
    struct result *res;
    char model[256];
};

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: vllmc bench serve [options]\n"
            "\n"
            "Load test of a running server (vllmc serve or vllm serve) with random token-id prompts\n"
            "through /v1/completions (greedy, ignore_eos, streamed), as `vllm bench serve\n"
            "--dataset-name random` does.\n"
            "\n"
            "options:\n"
            "  --base-url URL           server address (default http://127.0.0.1:8000)\n"
            "  --model NAME             model name (default: the first of /v1/models)\n"
            "  --num-prompts N          requests to send (default 1000)\n"
            "  --max-concurrency C      requests in flight at once (default: all)\n"
            "  --random-input-len I     prompt tokens per request (default 1024)\n"
            "  --random-output-len O    tokens to generate per request (default 128)\n"
            "  --random-vocab V         prompt ids are drawn from [1, V) (default 256)\n"
            "  --seed N                 random seed (default 0)\n"
            "  --api-key KEY            bearer key (default: $VLLM_API_KEY, $OPENAI_API_KEY)\n"
            "  --output-json FILE       also write the results as JSON (vLLM's key names)\n");
}

/* ---- a minimal HTTP/1.1 client ------------------------------------------ */

static int dial(const struct bench_opts *o) {
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai, *p;
    if (getaddrinfo(o->host, o->port, &hints, &ai)) return -1;
    int fd = -1;
    for (p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
        if (fd < 0) continue;
        if (!connect(fd, p->ai_addr, p->ai_addrlen)) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads a response; calls on_data for each piece of the (de-chunked) body.
 * Returns the HTTP status, or -1. */
struct reader {
    int fd;
    char buf[65536];
    size_t len, off;
};

static int rd_fill(struct reader *r) {
    if (r->off > 0 && r->off == r->len) r->off = r->len = 0;
    if (r->len == sizeof r->buf) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    ssize_t n;
    do n = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return -1;
    r->len += (size_t)n;
    return 0;
}

/* One line (without CRLF) into out; -1 at EOF. */
static int rd_line(struct reader *r, char *out, size_t cap) {
    for (;;) {
        char *nl = memchr(r->buf + r->off, '\n', r->len - r->off);
        if (nl) {
            size_t n = (size_t)(nl - (r->buf + r->off));
            size_t k = n > 0 && r->buf[r->off + n - 1] == '\r' ? n - 1 : n;
            snprintf(out, cap, "%.*s", (int)MIN(k, cap - 1), r->buf + r->off);
            r->off += n + 1;
            return 0;
        }
        if (rd_fill(r)) return -1;
    }
}

typedef void (*body_fn)(void *arg, const char *p, size_t n);

static int http_post(const struct bench_opts *o, const char *path, const char *body, body_fn fn, void *arg) {
    int fd = dial(o);
    if (fd < 0) return -1;
    char head[1024];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n%s%s%s\r\n",
                      body ? "POST" : "GET", path, o->host, o->port, body ? strlen(body) : 0,
                      o->api_key ? "Authorization: Bearer " : "", o->api_key ? o->api_key : "",
                      o->api_key ? "\r\n" : "");
    struct reader *r = xcalloc(1, sizeof *r);
    r->fd = fd;
    int status = -1;
    if (send_all(fd, head, (size_t)hn) || (body && send_all(fd, body, strlen(body)))) goto out;
    char line[8192];
    if (rd_line(r, line, sizeof line) || sscanf(line, "HTTP/%*s %d", &status) != 1) { status = -1; goto out; }
    int chunked = 0;
    long long clen = -1;
    for (;;) {
        if (rd_line(r, line, sizeof line)) { status = -1; goto out; }
        if (!line[0]) break;
        if (!strncasecmp(line, "transfer-encoding:", 18) && strcasestr(line, "chunked")) chunked = 1;
        if (!strncasecmp(line, "content-length:", 15)) clen = atoll(line + 15);
    }
    if (chunked) {
        for (;;) {
            if (rd_line(r, line, sizeof line)) break;
            size_t n = strtoul(line, NULL, 16);
            if (n == 0) break;
            while (n > 0) {
                if (r->off == r->len && rd_fill(r)) goto out;
                size_t k = MIN(n, r->len - r->off);
                fn(arg, r->buf + r->off, k);
                r->off += k;
                n -= k;
            }
            if (rd_line(r, line, sizeof line)) break; /* CRLF after the chunk */
        }
    } else {
        long long got = 0;
        for (;;) {
            if (r->off < r->len) {
                size_t k = r->len - r->off;
                if (clen >= 0 && (long long)k > clen - got) k = (size_t)(clen - got);
                fn(arg, r->buf + r->off, k);
                r->off += k;
                got += (long long)k;
            }
            if (clen >= 0 && got >= clen) break;
            if (rd_fill(r)) break;
        }
    }
out:
    close(fd);
    free(r);
    return status;
}

/* ---- one benchmark request -------------------------------------------- */

struct stream_state {
    struct result *res;
    double t0, t_last;
    char *line;
    size_t len, cap;
    int chunks, usage_tokens;
    int itl_cap;
};

static void on_sse_line(struct stream_state *st, const char *l) {
    if (strncmp(l, "data: ", 6) || !strcmp(l + 6, "[DONE]")) return;
    json_t *j = json_loads(l + 6, 0, NULL);
    if (!j) return;
    json_t *err = json_object_get(j, "error");
    if (err) {
        snprintf(st->res->err, sizeof st->res->err, "%s", json_string_value(json_object_get(err, "message")) ?: "error");
        st->res->ok = 0;
    }
    json_t *choices = json_object_get(j, "choices");
    if (json_array_size(choices) > 0) {
        double now = time_now();
        if (st->chunks == 0) st->res->ttft = now - st->t0;
        else {
            if (st->res->n_itl == st->itl_cap) {
                st->itl_cap = st->itl_cap ? 2 * st->itl_cap : 64;
                st->res->itl = realloc(st->res->itl, (size_t)st->itl_cap * sizeof *st->res->itl);
                if (!st->res->itl) abort(); /* out of memory */
            }
            st->res->itl[st->res->n_itl++] = now - st->t_last;
        }
        st->t_last = now;
        st->chunks++;
    }
    json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) st->usage_tokens = (int)json_integer_value(json_object_get(u, "completion_tokens"));
    json_decref(j);
}

static void on_body(void *arg, const char *p, size_t n) {
    struct stream_state *st = arg;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            if (st->len && st->line[st->len - 1] == '\r') st->len--;
            if (st->line) st->line[st->len] = 0;
            if (st->len) on_sse_line(st, st->line);
            st->len = 0;
            continue;
        }
        if (st->len + 2 > st->cap) {
            st->cap = st->cap ? 2 * st->cap : 4096;
            st->line = realloc(st->line, st->cap);
            if (!st->line) abort(); /* out of memory */
        }
        st->line[st->len++] = p[i];
    }
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void run_one(struct bench *b, int i) {
    const struct bench_opts *o = b->o;
    struct result *res = &b->res[i];
    uint64_t rng = o->seed * 1000003ull + (uint64_t)i;
    json_t *ids = json_array();
    for (int k = 0; k < o->input_len; k++)
        json_array_append_new(ids, json_integer(1 + (json_int_t)(splitmix(&rng) % (uint64_t)(o->vocab - 1))));
    json_t *req = json_object(), *so = json_object();
    json_object_set_new(req, "model", json_string(b->model));
    json_object_set_new(req, "prompt", ids);
    json_object_set_new(req, "max_tokens", json_integer(o->output_len));
    json_object_set_new(req, "temperature", json_real(0));
    json_object_set_new(req, "ignore_eos", json_true());
    json_object_set_new(req, "stream", json_true());
    json_object_set_new(so, "include_usage", json_true());
    json_object_set_new(req, "stream_options", so);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    struct stream_state st = { .res = res };
    res->ok = 1;
    res->input_len = o->input_len;
    st.t0 = time_now();
    int status = http_post(o, "/v1/completions", body, on_body, &st);
    res->latency = time_now() - st.t0;
    free(body);
    free(st.line);
    if (status != 200) {
        res->ok = 0;
        if (!res->err[0]) snprintf(res->err, sizeof res->err, "HTTP status %d", status);
    }
    res->output_len = st.usage_tokens ? st.usage_tokens : st.chunks;
    if (res->ok && st.chunks == 0) {
        res->ok = 0;
        snprintf(res->err, sizeof res->err, "no tokens received");
    }
}

static void *worker(void *arg) {
    struct bench *b = arg;
    for (;;) {
        int i = atomic_fetch_add(&b->next, 1);
        if (i >= b->o->num_prompts) break;
        run_one(b, i);
    }
    return NULL;
}

/* ---- statistics ----------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct stat3 {
    double mean, median, std, p99;
};

/* numpy's default percentile (linear interpolation) */
static double percentile(const double *sorted, int n, double q) {
    if (n == 0) return 0;
    double pos = q / 100.0 * (n - 1);
    int lo = (int)floor(pos), hi = MIN(lo + 1, n - 1);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

static struct stat3 stats_of(double *v, int n) {
    struct stat3 s = { 0 };
    if (n == 0) return s;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    s.mean = sum / n;
    for (int i = 0; i < n; i++) sq += (v[i] - s.mean) * (v[i] - s.mean);
    s.std = sqrt(sq / n);
    s.median = percentile(v, n, 50);
    s.p99 = percentile(v, n, 99);
    return s;
}

struct collect {
    char *p;
    size_t len;
};

static void on_collect(void *arg, const char *p, size_t n) {
    struct collect *c = arg;
    char *q = realloc(c->p, c->len + n + 1);
    if (!q) abort(); /* out of memory */
    c->p = q;
    memcpy(c->p + c->len, p, n);
    c->len += n;
    c->p[c->len] = 0;
}

/* The first model of GET /v1/models. */
static int fetch_model(struct bench *b) {
    struct collect c = { 0 };
    int status = http_post(b->o, "/v1/models", NULL, on_collect, &c);
    json_t *j = status == 200 && c.p ? json_loads(c.p, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id"));
    if (id) snprintf(b->model, sizeof b->model, "%s", id);
    json_decref(j);
    free(c.p);
    return id ? 0 : -1;
}

static int parse_base_url(const char *url, struct bench_opts *o) {
    if (strncmp(url, "http://", 7)) return -1;
    const char *h = url + 7, *end = h + strcspn(h, "/");
    const char *colon = NULL;
    if (*h == '[') { /* [v6]:port */
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb) return -1;
        snprintf(o->host, sizeof o->host, "%.*s", (int)(rb - h - 1), h + 1);
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        snprintf(o->host, sizeof o->host, "%.*s", (int)((colon ? colon : end) - h), h);
    }
    if (colon) snprintf(o->port, sizeof o->port, "%.*s", (int)(end - colon - 1), colon + 1);
    else snprintf(o->port, sizeof o->port, "80");
    return o->host[0] ? 0 : -1;
}

static int bench_arg_int(const char *flag, const char *v, int lo, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < lo || x > (1 << 30)) {
        fprintf(stderr, "vllmc bench serve: %s '%s': expected an integer >= %d\n", flag, v, lo);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static void print_row(const char *name, double v, int decimals) {
    printf("%-40s %-10.*f\n", name, decimals, v);
}

int vllmc_bench_serve_main(int argc, char **argv) {
    struct bench_opts o = { .num_prompts = 1000, .input_len = 1024, .output_len = 128, .vocab = 256 };
    parse_base_url("http://127.0.0.1:8000", &o);
    o.api_key = getenv("VLLM_API_KEY");
    if (!o.api_key) o.api_key = getenv("OPENAI_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_usage(stdout);
            return 0;
        }
        static const char *const known[] = { "--base-url", "--model", "--num-prompts", "--max-concurrency",
                                             "--random-input-len", "--random-output-len", "--random-vocab",
                                             "--seed", "--api-key", "--output-json" };
        int k = -1;
        for (size_t j = 0; j < ARRAY_LEN(known); j++)
            if (!strcmp(a, known[j])) k = (int)j;
        if (k < 0) {
            fprintf(stderr, "vllmc bench serve: unknown option '%s' (see vllmc bench serve --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "vllmc bench serve: option '%s' needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0, seed = 0;
        switch (k) {
        case 0: bad = parse_base_url(v, &o); if (bad) fprintf(stderr, "vllmc bench serve: --base-url '%s': expected http://HOST:PORT\n", v); break;
        case 1: o.model = v; break;
        case 2: bad = bench_arg_int(a, v, 1, &o.num_prompts); break;
        case 3: bad = bench_arg_int(a, v, 1, &o.concurrency); break;
        case 4: bad = bench_arg_int(a, v, 1, &o.input_len); break;
        case 5: bad = bench_arg_int(a, v, 1, &o.output_len); break;
        case 6: bad = bench_arg_int(a, v, 2, &o.vocab); break;
        case 7: bad = bench_arg_int(a, v, 0, &seed); o.seed = (uint64_t)seed; break;
        case 8: o.api_key = v; break;
        case 9: o.output_json = v; break;
        }
        if (bad) return 2;
    }
    if (o.concurrency <= 0 || o.concurrency > o.num_prompts) o.concurrency = o.num_prompts;

    struct bench b = { .o = &o };
    if (o.model) snprintf(b.model, sizeof b.model, "%s", o.model);
    else if (fetch_model(&b)) {
        fprintf(stderr, "vllmc bench serve: no model from http://%s:%s/v1/models\n", o.host, o.port);
        return 1;
    }
    b.res = xcalloc((size_t)o.num_prompts, sizeof *b.res);
    printf("Starting benchmark: %d prompts, input %d, output %d, max concurrency %d, model %s\n", o.num_prompts,
           o.input_len, o.output_len, o.concurrency, b.model);
    fflush(stdout);
    pthread_t *th = xcalloc((size_t)o.concurrency, sizeof *th);
    double t0 = time_now();
    int started = 0;
    for (int i = 0; i < o.concurrency; i++)
        if (!pthread_create(&th[i], NULL, worker, &b)) started++;
        else break;
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    double dur = time_now() - t0;
    free(th);

    int ok = 0, n_itl = 0;
    long long tin = 0, tout = 0;
    for (int i = 0; i < o.num_prompts; i++) {
        if (!b.res[i].ok) continue;
        ok++;
        tin += b.res[i].input_len;
        tout += b.res[i].output_len;
        n_itl += b.res[i].n_itl;
    }
    double *ttft = xmalloc((size_t)(ok + 1) * sizeof *ttft), *tpot = xmalloc((size_t)(ok + 1) * sizeof *tpot);
    double *itl = xmalloc((size_t)(n_itl + 1) * sizeof *itl);
    int n_tpot = 0, k_itl = 0, k_ttft = 0;
    for (int i = 0; i < o.num_prompts; i++) {
        struct result *r = &b.res[i];
        if (!r->ok) continue;
        ttft[k_ttft++] = r->ttft * 1000;
        if (r->output_len > 1) tpot[n_tpot++] = (r->latency - r->ttft) / (r->output_len - 1) * 1000;
        for (int k = 0; k < r->n_itl; k++) itl[k_itl++] = r->itl[k] * 1000;
    }
    struct stat3 s_ttft = stats_of(ttft, k_ttft), s_tpot = stats_of(tpot, n_tpot), s_itl = stats_of(itl, k_itl);

    printf("============ Serving Benchmark Result ============\n");
    printf("%-40s %-10d\n", "Successful requests:", ok);
    printf("%-40s %-10d\n", "Failed requests:", o.num_prompts - ok);
    printf("%-40s %-10d\n", "Maximum request concurrency:", o.concurrency);
    print_row("Benchmark duration (s):", dur, 2);
    printf("%-40s %-10lld\n", "Total input tokens:", tin);
    printf("%-40s %-10lld\n", "Total generated tokens:", tout);
    print_row("Request throughput (req/s):", ok / dur, 2);
    print_row("Output token throughput (tok/s):", tout / dur, 2);
    print_row("Total Token throughput (tok/s):", (tin + tout) / dur, 2);
    printf("%s\n", "---------------Time to First Token----------------");
    print_row("Mean TTFT (ms):", s_ttft.mean, 2);
    print_row("Median TTFT (ms):", s_ttft.median, 2);
    print_row("P99 TTFT (ms):", s_ttft.p99, 2);
    printf("%s\n", "-----Time per Output Token (excl. 1st token)------");
    print_row("Mean TPOT (ms):", s_tpot.mean, 2);
    print_row("Median TPOT (ms):", s_tpot.median, 2);
    print_row("P99 TPOT (ms):", s_tpot.p99, 2);
    printf("%s\n", "---------------Inter-token Latency----------------");
    print_row("Mean ITL (ms):", s_itl.mean, 2);
    print_row("Median ITL (ms):", s_itl.median, 2);
    print_row("P99 ITL (ms):", s_itl.p99, 2);
    printf("==================================================\n");
    for (int i = 0, shown = 0; i < o.num_prompts && shown < 3; i++)
        if (!b.res[i].ok) {
            fprintf(stderr, "request %d failed: %s\n", i, b.res[i].err);
            shown++;
        }

    int rc = ok == o.num_prompts ? 0 : 1;
    if (o.output_json) {
        json_t *j = json_object();
        json_object_set_new(j, "date", json_integer((json_int_t)time(NULL)));
        json_object_set_new(j, "backend", json_string("vllm"));
        json_object_set_new(j, "model_id", json_string(b.model));
        json_object_set_new(j, "num_prompts", json_integer(o.num_prompts));
        json_object_set_new(j, "max_concurrency", json_integer(o.concurrency));
        json_object_set_new(j, "random_input_len", json_integer(o.input_len));
        json_object_set_new(j, "random_output_len", json_integer(o.output_len));
        json_object_set_new(j, "duration", json_real(dur));
        json_object_set_new(j, "completed", json_integer(ok));
        json_object_set_new(j, "failed", json_integer(o.num_prompts - ok));
        json_object_set_new(j, "total_input_tokens", json_integer(tin));
        json_object_set_new(j, "total_output_tokens", json_integer(tout));
        json_object_set_new(j, "request_throughput", json_real(ok / dur));
        json_object_set_new(j, "output_throughput", json_real(tout / dur));
        json_object_set_new(j, "total_token_throughput", json_real((tin + tout) / dur));
        const struct { const char *name; struct stat3 s; } st[] = { { "ttft", s_ttft }, { "tpot", s_tpot }, { "itl", s_itl } };
        for (int k = 0; k < 3; k++) {
            char key[64];
            snprintf(key, sizeof key, "mean_%s_ms", st[k].name), json_object_set_new(j, key, json_real(st[k].s.mean));
            snprintf(key, sizeof key, "median_%s_ms", st[k].name), json_object_set_new(j, key, json_real(st[k].s.median));
            snprintf(key, sizeof key, "std_%s_ms", st[k].name), json_object_set_new(j, key, json_real(st[k].s.std));
            snprintf(key, sizeof key, "p99_%s_ms", st[k].name), json_object_set_new(j, key, json_real(st[k].s.p99));
        }
        json_t *il = json_array(), *ol = json_array(), *tt = json_array(), *errs = json_array();
        for (int i = 0; i < o.num_prompts; i++) {
            json_array_append_new(il, json_integer(b.res[i].input_len));
            json_array_append_new(ol, json_integer(b.res[i].output_len));
            json_array_append_new(tt, json_real(b.res[i].ttft));
            json_array_append_new(errs, json_string(b.res[i].ok ? "" : b.res[i].err));
        }
        json_object_set_new(j, "input_lens", il);
        json_object_set_new(j, "output_lens", ol);
        json_object_set_new(j, "ttfts", tt);
        json_object_set_new(j, "errors", errs);
        if (json_dump_file(j, o.output_json, JSON_INDENT(2))) {
            fprintf(stderr, "vllmc bench serve: cannot write %s\n", o.output_json);
            rc = 1;
        }
        json_decref(j);
    }
    for (int i = 0; i < o.num_prompts; i++) free(b.res[i].itl);
    free(b.res);
    free(ttft);
    free(tpot);
    free(itl);
    return rc;
}
