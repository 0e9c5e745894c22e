/* test_server.c — `vllmc serve` end to end: the real binary ($BUILD/vllmc)
 * on 127.0.0.1 (port 0: the server picks a free one and logs it), spoken to
 * over plain sockets. Every wait is bounded; the server is killed when the
 * test process ends (PR_SET_PDEATHSIG) whatever happens.
 *
 * References: greedy continuations and log-probabilities of the golden
 * fixtures come from transformers (tests/fixtures/<name>/reference.json);
 * response shapes, error statuses and parameter checks from vLLM's OpenAI
 * server; the official `openai` npm client drives tests/e2e (run from here;
 * skipped when tests/e2e/node_modules is absent — tools/test.sh installs it).
 * VLLMC_SERVER_BIN overrides the binary. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "util/util.h"

#define QWEN "tests/fixtures/qwen3_f32"
#define IO_TIMEOUT_S 120

static const char *server_bin(void) {
    static char p[600];
    const char *o = getenv("VLLMC_SERVER_BIN");
    if (o) return o;
    const char *b = getenv("BUILD");
    snprintf(p, sizeof p, "%s/vllmc", b && *b ? b : "build");
    return p;
}

static void msleep(int ms) {
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Run the binary with args; returns the exit status (-1 on a signal) and
 * the combined output in out (malloc'd). Bounded by 120 s. */
static int run_cmd(const char *const *args, char **out) {
    char path[] = "/tmp/vllmc_srv_out_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fd, 1);
        dup2(fd, 2);
        int n = 0;
        const char *argv[64];
        argv[n++] = server_bin();
        for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    int st = 0, done = 0;
    for (int i = 0; i < 2400 && !done; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) done = 1;
        else msleep(50);
    }
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    off_t len = lseek(fd, 0, SEEK_END);
    *out = xcalloc(1, (size_t)len + 1);
    if (pread(fd, *out, (size_t)len, 0) < 0) (*out)[0] = 0;
    close(fd);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the server process -------------------------------------------------- */

struct srv {
    pid_t pid;
    int port;
    char log[300];
};

static char *read_file_str(const char *p) {
    FILE *f = fopen(p, "rb");
    if (!f) return xstrdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = xcalloc(1, (size_t)(n > 0 ? n : 0) + 1);
    if (n > 0 && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
    fclose(f);
    return s;
}

static void srv_dump_log(const struct srv *s) {
    char *l = read_file_str(s->log);
    size_t n = strlen(l);
    fprintf(stderr, "  --- server log (last 3000 bytes) ---\n%s\n", n > 3000 ? l + n - 3000 : l);
    free(l);
}

/* vllmc serve MODEL --port 0 --threads 2 ARGS... ; waits for the listening line. */
static void srv_start(struct srv *s, const char *model, const char *const *args, const char *api_key_env) {
    memset(s, 0, sizeof *s);
    const char *dir = test_mkdtemp();
    snprintf(s->log, sizeof s->log, "%s/server.log", dir);
    s->pid = fork();
    REQUIRE(s->pid >= 0);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        if (api_key_env) setenv("VLLM_API_KEY", api_key_env, 1);
        else unsetenv("VLLM_API_KEY");
        const char *argv[64];
        int n = 0;
        argv[n++] = server_bin();
        argv[n++] = "serve";
        argv[n++] = model;
        argv[n++] = "--port";
        argv[n++] = "0";
        argv[n++] = "--threads";
        argv[n++] = "2";
        for (int i = 0; args && args[i] && n < 63; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    for (int i = 0; i < 1200; i++) { /* 60 s */
        char *l = read_file_str(s->log);
        const char *m = strstr(l, "API server on http://127.0.0.1:");
        if (m) {
            s->port = atoi(m + strlen("API server on http://127.0.0.1:"));
            free(l);
            return;
        }
        free(l);
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            srv_dump_log(s);
            s->pid = 0;
            REQUIRE(!"the server exited at start-up");
        }
        msleep(50);
    }
    srv_dump_log(s);
    REQUIRE(!"the server did not start listening");
}

/* SIGTERM, then wait (bounded); returns the exit status, -1 if it had to be killed. */
static int srv_stop(struct srv *s) {
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 400; i++) { /* 20 s */
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            if (!WIFEXITED(st) || WEXITSTATUS(st)) srv_dump_log(s);
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        msleep(50);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    srv_dump_log(s);
    return -1;
}

/* ---- a small HTTP client ------------------------------------------------- */

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = { IO_TIMEOUT_S, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
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

struct resp {
    int status;
    char *head;  /* status line and headers */
    char *body;  /* de-chunked */
    size_t body_len;
    json_t *json;/* the body parsed, if it is JSON */
};

static void resp_free(struct resp *r) {
    free(r->head);
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

/* Parse a complete raw response (read until the server closed). */
static void resp_parse(const char *raw, size_t n, struct resp *r) {
    memset(r, 0, sizeof *r);
    r->status = -1;
    const char *sep = memmem(raw, n, "\r\n\r\n", 4);
    if (!sep || sscanf(raw, "HTTP/1.%*d %d", &r->status) != 1) {
        r->status = -1;
        r->head = xstrdup("");
        r->body = xstrdup("");
        return;
    }
    r->head = strndup(raw, (size_t)(sep - raw));
    const char *b = sep + 4, *end = raw + n;
    char *out = xcalloc(1, (size_t)(end - b) + 1);
    size_t len = 0;
    if (strcasestr(r->head, "transfer-encoding: chunked")) {
        while (b < end) {
            char *e;
            unsigned long sz = strtoul(b, &e, 16);
            const char *nl = memmem(b, (size_t)(end - b), "\r\n", 2);
            if (!nl || sz == 0) break;
            b = nl + 2;
            if ((size_t)(end - b) < sz) sz = (unsigned long)(end - b);
            memcpy(out + len, b, sz);
            len += sz;
            b += sz + 2;
        }
    } else {
        len = (size_t)(end - b);
        memcpy(out, b, len);
    }
    out[len] = 0;
    r->body = out;
    r->body_len = len;
    r->json = json_loadb(out, len, 0, NULL);
}

static char *read_all(int fd, size_t *n) {
    size_t cap = 65536, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        len += (size_t)k;
    }
    buf[len] = 0;
    *n = len;
    return buf;
}

/* One request on a fresh connection ("Connection: close"). */
static int http(int port, const char *method, const char *path, const char *body, const char *headers,
                struct resp *r) {
    int fd = dial(port);
    if (fd < 0) {
        memset(r, 0, sizeof *r);
        r->status = -1;
        return -1;
    }
    size_t bl = body ? strlen(body) : 0;
    char *req = xmalloc(bl + 1024);
    int hn = snprintf(req, 1024,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n%s\r\n",
                      method, path, bl, headers ? headers : "");
    if (body) memcpy(req + hn, body, bl);
    int rc = send_all(fd, req, (size_t)hn + bl);
    free(req);
    size_t n;
    char *raw = read_all(fd, &n);
    close(fd);
    resp_parse(raw, n, r);
    free(raw);
    return rc ? -1 : r->status;
}

static int post(int port, const char *path, const char *body, struct resp *r) {
    return http(port, "POST", path, body, NULL, r);
}

static json_t *jget(json_t *o, const char *path) { /* "a.0.b" */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *sv = NULL;
    for (char *tok = strtok_r(buf, ".", &sv); tok && o; tok = strtok_r(NULL, ".", &sv)) {
        if (json_is_array(o)) o = json_array_get(o, (size_t)atoi(tok));
        else o = json_object_get(o, tok);
    }
    return o;
}

/* The body is an OpenAI error object with code == status; returns its message. */
static const char *check_error(struct resp *r, int status, const char *param) {
    if (r->status != status) {
        fprintf(stderr, "  expected status %d, got %d: %s\n", status, r->status, r->body);
        test_failed_here_ = 1;
        return "";
    }
    json_t *e = json_object_get(r->json, "error");
    CHECK(json_is_object(e));
    CHECK(json_is_string(json_object_get(e, "message")));
    CHECK(json_is_string(json_object_get(e, "type")));
    CHECK(json_object_get(e, "param") != NULL);
    CHECK(json_integer_value(json_object_get(e, "code")) == status);
    if (param) {
        const char *p = json_string_value(json_object_get(e, "param"));
        if (!p || strcmp(p, param)) {
            fprintf(stderr, "  expected param %s in %s\n", param, r->body);
            test_failed_here_ = 1;
        }
    }
    return json_string_value(json_object_get(e, "message")) ?: "";
}

/* A metric's value for the given series prefix (e.g. "vllm:num_requests_running{"). */
static double metric(const char *text, const char *series) {
    const char *p = text;
    size_t n = strlen(series);
    while ((p = strstr(p, series))) {
        if (p == text || p[-1] == '\n') {
            const char *sp = strchr(p, ' ');
            return sp ? strtod(sp + 1, NULL) : NAN;
        }
        p += n;
    }
    return NAN;
}

static char *get_metrics(int port) {
    struct resp r;
    http(port, "GET", "/metrics", NULL, NULL, &r);
    REQUIRE(r.status == 200);
    char *t = xstrdup(r.body);
    resp_free(&r);
    return t;
}

/* Wait (bounded) until no request runs or waits and no KV block is held. */
static int wait_idle(int port) {
    for (int i = 0; i < 400; i++) {
        char *m = get_metrics(port);
        double run = metric(m, "vllm:num_requests_running{"), wait = metric(m, "vllm:num_requests_waiting{");
        double kv = metric(m, "vllm:kv_cache_usage_perc{");
        free(m);
        if (run == 0 && wait == 0 && kv == 0) return 1;
        msleep(50);
    }
    return 0;
}

static int server_available(void) {
    char *out;
    const char *args[] = { "serve", "--help", NULL };
    int rc = run_cmd(args, &out);
    int ok = rc == 0 && strstr(out, "--served-model-name");
    free(out);
    return ok;
}
#define NEED_SERVER() do { if (!server_available()) SKIP("vllmc serve is not wired into the binary"); } while (0)

/* ---- fixtures ---------------------------------------------------------------- */

struct fcase {
    json_t *prompt, *greedy, *margin, *logprobs;
};
struct fix {
    json_t *root;
    int n_cases, f32;
    struct fcase c[8];
};

static int fix_load(struct fix *f, const char *dir) {
    char p[600];
    snprintf(p, sizeof p, "%s/reference.json", dir);
    memset(f, 0, sizeof *f);
    f->root = json_load_file(p, 0, NULL);
    if (!f->root) return -1;
    const char *wd = json_string_value(json_object_get(f->root, "weights_dtype"));
    f->f32 = wd && !strcmp(wd, "float32");
    json_t *cases = json_object_get(f->root, "cases");
    for (size_t i = 0; i < json_array_size(cases) && i < 8; i++) {
        json_t *c = json_array_get(cases, i);
        f->c[f->n_cases++] = (struct fcase){ json_object_get(c, "prompt_ids"), json_object_get(c, "greedy_ids"),
                                             json_object_get(c, "greedy_margin"), json_object_get(c, "logprobs") };
    }
    return 0;
}

/* Greedy ids equal to the reference up to its first near-tie (margin < 1e-2),
 * as tests/unit/test_golden.c checks them. Returns the mismatches. */
static int greedy_mismatch(const struct fcase *c, json_t *ids, const char *what) {
    size_t n = json_array_size(c->greedy);
    if (json_array_size(ids) < n) {
        fprintf(stderr, "  %s: %zu tokens, reference has %zu\n", what, json_array_size(ids), n);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (json_number_value(json_array_get(c->margin, i)) < 1e-2) break;
        if (json_integer_value(json_array_get(ids, i)) != json_integer_value(json_array_get(c->greedy, i))) {
            fprintf(stderr, "  %s: token %zu is %lld, transformers %lld\n", what, i,
                    (long long)json_integer_value(json_array_get(ids, i)),
                    (long long)json_integer_value(json_array_get(c->greedy, i)));
            return 1;
        }
    }
    return 0;
}

static char *greedy_body(const struct fcase *c, int stream) {
    json_t *o = json_object();
    json_object_set(o, "prompt", c->prompt);
    json_object_set_new(o, "max_tokens", json_integer((json_int_t)json_array_size(c->greedy)));
    json_object_set_new(o, "temperature", json_real(0));
    json_object_set_new(o, "ignore_eos", json_true());
    json_object_set_new(o, "return_token_ids", json_true());
    if (stream) json_object_set_new(o, "stream", json_true());
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* ---- tests --------------------------------------------------------------------- */

TEST(cli_flags) {
    NEED_SERVER();
    char *out;
    const char *help[] = { "serve", "--help", NULL };
    CHECK(run_cmd(help, &out) == 0);
    static const char *const flags[] = {
        "--host", "--port", "--served-model-name", "--api-key", "VLLM_API_KEY", "--max-model-len", "--max-num-seqs",
        "--max-num-batched-tokens", "--block-size", "--kv-cache-memory-bytes", "--enable-prefix-caching",
        "--no-enable-prefix-caching", "--prefix-caching-hash-algo", "--dtype", "--seed", "--chat-template",
        "--default-chat-template-kwargs", "--generation-config", "--hf-overrides", "--threads",
        "--disable-log-requests", "--device", "--gpu-memory-utilization", "--cuda-matmul", "--async-scheduling",
        "--no-async-scheduling", "--enforce-eager", "--tensor-parallel-size", "-tp", "--trust-remote-code",
    };
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        if (!strstr(out, flags[i])) {
            fprintf(stderr, "  --help does not document %s\n", flags[i]);
            test_failed_here_ = 1;
        }
    free(out);
    const char *unknown[] = { "serve", QWEN, "--no-such-flag", NULL };
    CHECK(run_cmd(unknown, &out) == 2);
    CHECK(strstr(out, "--no-such-flag") != NULL);
    free(out);
    /* no MODEL: the bundled demo model; where there is none, a usage error */
    setenv("VLLMC_DEMO_MODEL", "/nonexistent/demo", 1);
    const char *nomodel[] = { "serve", NULL };
    CHECK(run_cmd(nomodel, &out) == 2);
    unsetenv("VLLMC_DEMO_MODEL");
    free(out);
    const char *badval[] = { "serve", QWEN, "--block-size", "7", NULL };
    CHECK(run_cmd(badval, &out) == 2);
    free(out);
    const char *badmm[] = { "serve", QWEN, "--cuda-matmul", "fp8", NULL };
    CHECK(run_cmd(badmm, &out) == 2);
    CHECK(strstr(out, "--cuda-matmul 'fp8'") != NULL);
    free(out);
    const char *missing[] = { "serve", "/nonexistent/model/dir", NULL };
    CHECK(run_cmd(missing, &out) == 1);
    CHECK(strstr(out, "/nonexistent/model/dir") != NULL);
    free(out);
    const char *dtype[] = { "serve", QWEN, "--dtype", "bfloat16", "--port", "0", NULL };
    CHECK(run_cmd(dtype, &out) == 1); /* the checkpoint is float32 */
    CHECK(strstr(out, "--dtype") != NULL);
    free(out);
    /* vLLM command-line flags: parsed (the run ends at the same --dtype check, not a usage error) */
    const char *vflags[] = { "serve", QWEN, "--trust-remote-code", "-tp", "1", "--enforce-eager",
                             "--tensor-parallel-size=1", "--dtype", "bfloat16", "--port", "0", NULL };
    CHECK(run_cmd(vflags, &out) == 1);
    CHECK(strstr(out, "--dtype") != NULL);
    free(out);
    const char *tp2[] = { "serve", QWEN, "-tp", "2", NULL };
    CHECK(run_cmd(tp2, &out) == 2);
    CHECK(strstr(out, "--tensor-parallel-size '2'") != NULL);
    free(out);
    /* the names of --served-model-name end at the next option, -tp included */
    const char *names_tp[] = { "serve", QWEN, "--served-model-name", "a", "b", "-tp", "2", "--dtype", "bfloat16", NULL };
    CHECK(run_cmd(names_tp, &out) == 2);
    CHECK(strstr(out, "--tensor-parallel-size '2'") != NULL);
    free(out);
    const char *eagerval[] = { "serve", QWEN, "--enforce-eager=1", NULL };
    CHECK(run_cmd(eagerval, &out) == 2);
    free(out);
}

TEST(endpoints) {
    NEED_SERVER();
    struct srv s;
    const char *args[] = { "--served-model-name", "m1", "m2", NULL };
    srv_start(&s, QWEN, args, NULL);
    char *log = read_file_str(s.log);
    CHECK(strstr(log, "KV cache:") && strstr(log, "blocks") && strstr(log, "F32")); /* start-up log */
    free(log);
    struct resp r;
    CHECK(http(s.port, "GET", "/health", NULL, NULL, &r) == 200 && r.body_len == 0);
    resp_free(&r);
    CHECK(http(s.port, "GET", "/ping", NULL, NULL, &r) == 200);
    resp_free(&r);
    CHECK(http(s.port, "POST", "/ping", "", NULL, &r) == 200);
    resp_free(&r);
    CHECK(http(s.port, "GET", "/version", NULL, NULL, &r) == 200);
    CHECK(json_is_string(json_object_get(r.json, "version")));
    resp_free(&r);
    CHECK(http(s.port, "GET", "/v1/models", NULL, NULL, &r) == 200);
    CHECK(!strcmp(json_string_value(jget(r.json, "object")) ?: "", "list"));
    CHECK(json_array_size(jget(r.json, "data")) == 2);
    CHECK(!strcmp(json_string_value(jget(r.json, "data.0.id")) ?: "", "m1"));
    CHECK(!strcmp(json_string_value(jget(r.json, "data.1.id")) ?: "", "m2"));
    CHECK(!strcmp(json_string_value(jget(r.json, "data.0.object")) ?: "", "model"));
    CHECK(json_integer_value(jget(r.json, "data.0.max_model_len")) == 256); /* the fixture's max_position_embeddings */
    resp_free(&r);

    /* a completion answers under the second name too, and reports it */
    CHECK(post(s.port, "/v1/completions", "{\"model\":\"m2\",\"prompt\":[5,6,7],\"max_tokens\":3}", &r) == 200);
    CHECK(!strcmp(json_string_value(jget(r.json, "model")) ?: "", "m2"));
    CHECK(!strcmp(json_string_value(jget(r.json, "object")) ?: "", "text_completion"));
    CHECK(json_integer_value(jget(r.json, "usage.prompt_tokens")) == 3);
    CHECK(json_integer_value(jget(r.json, "usage.completion_tokens")) <= 3);
    CHECK(json_is_integer(jget(r.json, "usage.prompt_tokens_details.cached_tokens")));
    resp_free(&r);

    char *m = get_metrics(s.port);
    static const char *const fam[][2] = {
        { "vllm:num_requests_running", "gauge" }, { "vllm:num_requests_waiting", "gauge" },
        { "vllm:kv_cache_usage_perc", "gauge" }, { "vllm:prompt_tokens_total", "counter" },
        { "vllm:generation_tokens_total", "counter" }, { "vllm:num_preemptions_total", "counter" },
        { "vllm:request_success_total", "counter" }, { "vllm:prefix_cache_queries_total", "counter" },
        { "vllm:prefix_cache_hits_total", "counter" }, { "vllm:time_to_first_token_seconds", "histogram" },
        { "vllm:inter_token_latency_seconds", "histogram" }, { "vllm:e2e_request_latency_seconds", "histogram" },
        { "vllm:request_queue_time_seconds", "histogram" }, { "vllm:request_prompt_tokens", "histogram" },
        { "vllm:request_generation_tokens", "histogram" },
    };
    for (size_t i = 0; i < sizeof fam / sizeof *fam; i++) {
        char t[160];
        snprintf(t, sizeof t, "# TYPE %s %s\n", fam[i][0], fam[i][1]);
        if (!strstr(m, t)) {
            fprintf(stderr, "  /metrics lacks '%s'\n", t);
            test_failed_here_ = 1;
        }
    }
    CHECK(strstr(m, "vllm:num_requests_running{engine=\"0\",model_name=\"m1\"} 0\n") != NULL);
    CHECK(metric(m, "vllm:prompt_tokens_total{") >= 3);
    CHECK(metric(m, "vllm:e2e_request_latency_seconds_count{") == 1);
    CHECK(metric(m, "vllm:request_prompt_tokens_count{") == 1);
    CHECK(metric(m, "vllm:request_prompt_tokens_sum{") == 3);
    CHECK(metric(m, "vllm:time_to_first_token_seconds_count{") == 1);
    /* vLLM's bucket boundaries */
    CHECK(strstr(m, "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.001\",model_name=\"m1\"}") != NULL);
    CHECK(strstr(m, "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"2560.0\",model_name=\"m1\"}") != NULL);
    CHECK(strstr(m, "vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"7680.0\",model_name=\"m1\"}") != NULL);
    CHECK(strstr(m, "vllm:request_prompt_tokens_bucket{engine=\"0\",le=\"200.0\",model_name=\"m1\"}") != NULL);
    CHECK(strstr(m, "le=\"500.0\",model_name=\"m1\"") == NULL); /* 1-2-5 buckets stop at max_model_len 256 */
    double stop = metric(m, "vllm:request_success_total{engine=\"0\",finished_reason=\"stop\"");
    double length = metric(m, "vllm:request_success_total{engine=\"0\",finished_reason=\"length\"");
    CHECK(stop + length == 1);
    free(m);
    CHECK(srv_stop(&s) == 0);
}

TEST(errors) {
    NEED_SERVER();
    struct srv s;
    srv_start(&s, QWEN, NULL, NULL);
    struct resp r;
    int p = s.port;
    http(p, "GET", "/no/such/path", NULL, NULL, &r);
    check_error(&r, 404, NULL);
    resp_free(&r);
    http(p, "GET", "/v1/completions", NULL, NULL, &r);
    check_error(&r, 405, NULL);
    CHECK(strstr(r.head, "Allow: POST") != NULL);
    resp_free(&r);
    http(p, "DELETE", "/v1/models", NULL, NULL, &r);
    check_error(&r, 405, NULL);
    resp_free(&r);

    static const struct {
        const char *body, *param;
        int status;
    } bad[] = {
        { "{\"prompt\": [1,2,3", NULL, 400 },                         /* truncated */
        { "not json at all", NULL, 400 },
        { "", NULL, 400 },
        { "[1,2,3]", NULL, 400 },                                     /* not an object */
        { "{\"prompt\": [1,2], \"max_tokens\": \"ten\"}", "max_tokens", 400 },
        { "{\"prompt\": 12}", "prompt", 400 },
        { "{\"prompt\": []}", "prompt", 400 },
        { "{\"prompt\": [1, \"a\"]}", "prompt", 400 },
        { "{\"prompt\": [1,2], \"model\": \"nope\"}", "model", 404 },  /* vLLM: NotFoundError */
        { "{\"prompt\": [1,2], \"top_p\": 0}", "top_p", 400 },
        { "{\"prompt\": [1,2], \"top_p\": 1.5}", "top_p", 400 },
        { "{\"prompt\": [1,2], \"n\": 0}", "n", 400 },
        { "{\"prompt\": [1,2], \"temperature\": -0.5}", "temperature", 400 },
        { "{\"prompt\": [1,2], \"top_k\": -2}", "top_k", 400 },
        { "{\"prompt\": [1,2], \"min_p\": 2}", "min_p", 400 },
        { "{\"prompt\": [1,2], \"presence_penalty\": 2.5}", "presence_penalty", 400 },
        { "{\"prompt\": [1,2], \"frequency_penalty\": -3}", "frequency_penalty", 400 },
        { "{\"prompt\": [1,2], \"repetition_penalty\": 0}", "repetition_penalty", 400 },
        { "{\"prompt\": [1,2], \"max_tokens\": 0}", "max_tokens", 400 },
        { "{\"prompt\": [1,2], \"max_tokens\": 255}", "max_tokens", 400 },   /* 2 + 255 > 256 */
        { "{\"prompt\": [1,2], \"min_tokens\": 20, \"max_tokens\": 10}", "min_tokens", 400 },
        { "{\"prompt\": [1,2], \"logprobs\": 21}", "logprobs", 400 },
        { "{\"prompt\": [1,2], \"prompt_logprobs\": 21}", "prompt_logprobs", 400 },
        { "{\"prompt\": [1,2], \"stream_options\": {\"include_usage\": true}}", "stream_options", 400 },
        { "{\"prompt\": [1,2], \"stream\": true, \"prompt_logprobs\": 1}", "prompt_logprobs", 400 },
        { "{\"prompt\": [1,2], \"stop\": [\"\"]}", "stop", 400 },
        { "{\"prompt\": [1,2], \"stop\": 5}", "stop", 400 },
        { "{\"prompt\": [1,2], \"logit_bias\": {\"99999\": 1}}", "logit_bias", 400 },
        { "{\"prompt\": [1,2], \"allowed_token_ids\": []}", "allowed_token_ids", 400 },
        { "{\"prompt\": [1,2], \"use_beam_search\": true}", "use_beam_search", 400 },
        { "{\"prompt\": [1,2], \"suffix\": \"x\"}", "suffix", 400 },
        { "{\"prompt\": [1,2], \"cache_salt\": \"\"}", "cache_salt", 400 },
        { "{\"prompt\": [1,2], \"truncate_prompt_tokens\": 1000}", "truncate_prompt_tokens", 400 },
        { "{\"prompt\": [384]}", "prompt", 400 },                     /* vocabulary is 384 */
        { "{\"prompt\": [-1]}", "prompt", 400 },
        { "{\"prompt\": \"text\"}", "prompt", 400 },                  /* no tokenizer.json */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        post(p, "/v1/completions", bad[i].body, &r);
        if (r.status != bad[i].status) fprintf(stderr, "  body: %s\n", bad[i].body);
        check_error(&r, bad[i].status, bad[i].param);
        resp_free(&r);
    }
    /* a prompt as long as the context: vLLM's message */
    {
        json_t *o = json_object(), *ids = json_array();
        for (int i = 0; i < 256; i++) json_array_append_new(ids, json_integer(7));
        json_object_set_new(o, "prompt", ids);
        char *b = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        post(p, "/v1/completions", b, &r);
        CHECK(strstr(check_error(&r, 400, NULL), "maximum context length is 256 tokens") != NULL);
        resp_free(&r);
        free(b);
    }
    /* invalid UTF-8 inside a JSON string */
    post(p, "/v1/completions", "{\"prompt\": \"\xff\xfe\", \"max_tokens\": 2}", &r);
    check_error(&r, 400, NULL);
    resp_free(&r);
    post(p, "/v1/chat/completions", "{\"messages\": \"hi\"}", &r);
    check_error(&r, 400, "messages");
    resp_free(&r);
    post(p, "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"top_logprobs\": 2}", &r);
    check_error(&r, 400, "top_logprobs");
    resp_free(&r);
    post(p, "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {\"url\": \"x\"}}]}]}", &r);
    check_error(&r, 400, "messages");
    resp_free(&r);
    post(p, "/detokenize", "{\"tokens\": [1, 999]}", &r);
    check_error(&r, 400, "tokens");
    resp_free(&r);
    /* still healthy */
    CHECK(http(p, "GET", "/health", NULL, NULL, &r) == 200);
    resp_free(&r);
    CHECK(srv_stop(&s) == 0);
}

TEST(auth) {
    NEED_SERVER();
    for (int via_env = 0; via_env < 2; via_env++) {
        struct srv s;
        const char *args[] = { "--api-key", "sekret", NULL };
        srv_start(&s, QWEN, via_env ? NULL : args, via_env ? "sekret" : NULL);
        struct resp r;
        http(s.port, "GET", "/v1/models", NULL, NULL, &r);
        check_error(&r, 401, NULL);
        resp_free(&r);
        http(s.port, "GET", "/v1/models", NULL, "Authorization: Bearer wrong\r\n", &r);
        check_error(&r, 401, NULL);
        resp_free(&r);
        http(s.port, "POST", "/v1/completions", "{\"prompt\":[1,2],\"max_tokens\":1}", "Authorization: Bearer sekre\r\n", &r);
        check_error(&r, 401, NULL);
        resp_free(&r);
        CHECK(http(s.port, "GET", "/v1/models", NULL, "Authorization: Bearer sekret\r\n", &r) == 200);
        resp_free(&r);
        CHECK(http(s.port, "POST", "/v1/completions", "{\"prompt\":[1,2],\"max_tokens\":1}",
                   "Authorization: Bearer sekret\r\n", &r) == 200);
        resp_free(&r);
        CHECK(http(s.port, "GET", "/health", NULL, NULL, &r) == 200); /* not under /v1: open, as vLLM */
        resp_free(&r);
        CHECK(http(s.port, "GET", "/metrics", NULL, NULL, &r) == 200);
        resp_free(&r);
        CHECK(srv_stop(&s) == 0);
    }
}

/* Garbage, truncated and oversized input never takes the server down. */
TEST(robust_input) {
    NEED_SERVER();
    struct srv s;
    srv_start(&s, QWEN, NULL, NULL);
    struct resp r;
    int p = s.port;
    /* 10 MB body -> 413 */
    size_t big = 10u << 20;
    char *body = xmalloc(big + 1);
    memset(body, ' ', big);
    memcpy(body, "{\"prompt\": \"", 12);
    body[big - 2] = '"', body[big - 1] = '}', body[big] = 0;
    post(p, "/v1/completions", body, &r);
    check_error(&r, 413, NULL);
    resp_free(&r);
    free(body);
    /* not HTTP at all */
    static const char *const junk[] = {
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello\r\n\r\n",
        "GARBAGE\r\n\r\n",
        "GET /health HTTP/9.9\r\n\r\n",
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\"", /* then hang up */
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
        int fd = dial(p);
        REQUIRE(fd >= 0);
        send_all(fd, junk[i], strlen(junk[i]));
        shutdown(fd, SHUT_WR);
        size_t n;
        free(read_all(fd, &n));
        close(fd);
    }
    /* a chunked, well-formed body works */
    {
        int fd = dial(p);
        REQUIRE(fd >= 0);
        const char *req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "10\r\n{\"prompt\":[1,2],\r\n0f\r\n\"max_tokens\":2}\r\n0\r\n\r\n";
        send_all(fd, req, strlen(req));
        size_t n;
        char *raw = read_all(fd, &n);
        close(fd);
        resp_parse(raw, n, &r);
        free(raw);
        CHECK(r.status == 200);
        CHECK(json_integer_value(jget(r.json, "usage.prompt_tokens")) == 2);
        resp_free(&r);
    }
    /* 1000 sequential connections */
    int ok = 0;
    for (int i = 0; i < 1000; i++) {
        if (i % 100 == 7) ok += post(p, "/v1/completions", "{\"prompt\":[3,4],\"max_tokens\":2}", &r) == 200;
        else ok += http(p, "GET", i % 2 ? "/health" : "/v1/models", NULL, NULL, &r) == 200;
        resp_free(&r);
    }
    CHECK(ok == 1000);
    CHECK(wait_idle(p));
    CHECK(srv_stop(&s) == 0);
}

/* Every fixture through HTTP: greedy continuation and prompt logprobs equal
 * transformers' (f32 KV cache, as in test_golden). */
TEST(golden_fixtures) {
    NEED_SERVER();
    DIR *d = opendir("tests/fixtures");
    REQUIRE(d);
    struct dirent *de;
    int n_fix = 0;
    while ((de = readdir(d))) {
        char dir[600];
        snprintf(dir, sizeof dir, "tests/fixtures/%s", de->d_name);
        struct fix f;
        if (de->d_name[0] == '.' || fix_load(&f, dir)) continue;
        n_fix++;
        struct srv s;
        /* qwen3_dynamic's context is 16 (prompts go past it on purpose) */
        const char *args[] = { "--kv-cache-dtype", "float32", "--max-model-len", "512", NULL };
        srv_start(&s, dir, args, NULL);
        double tol = f.f32 ? 1e-3 : 1e-2;
        for (int c = 0; c < f.n_cases; c++) {
            struct resp r;
            char *b = greedy_body(&f.c[c], 0);
            CHECK(post(s.port, "/v1/completions", b, &r) == 200);
            free(b);
            char what[700];
            snprintf(what, sizeof what, "%s case %d", de->d_name, c);
            if (greedy_mismatch(&f.c[c], jget(r.json, "choices.0.token_ids"), what)) test_failed_here_ = 1;
            CHECK(!strcmp(json_string_value(jget(r.json, "choices.0.finish_reason")) ?: "", "length"));
            resp_free(&r);

            /* prompt logprobs of prompt + reference continuation */
            json_t *seq = json_deep_copy(f.c[c].prompt);
            json_array_extend(seq, f.c[c].greedy);
            json_t *o = json_object();
            json_object_set_new(o, "prompt", seq);
            json_object_set_new(o, "max_tokens", json_integer(1));
            json_object_set_new(o, "prompt_logprobs", json_integer(0));
            b = json_dumps(o, JSON_COMPACT);
            CHECK(post(s.port, "/v1/completions", b, &r) == 200);
            free(b);
            json_t *pl = jget(r.json, "choices.0.prompt_logprobs");
            CHECK(json_array_size(pl) == json_array_size(seq));
            CHECK(json_is_null(json_array_get(pl, 0)));
            double worst = 0;
            for (size_t j = 1; j < json_array_size(pl) && j < json_array_size(seq); j++) {
                char key[16];
                snprintf(key, sizeof key, "%lld", (long long)json_integer_value(json_array_get(seq, j)));
                json_t *e = json_object_get(json_array_get(pl, j), key);
                double got = json_number_value(json_object_get(e, "logprob"));
                double want = json_number_value(json_array_get(f.c[c].logprobs, j - 1));
                if (!e || !(fabs(got - want) <= worst)) worst = e ? fabs(got - want) : 1e9;
            }
            if (worst > tol) {
                fprintf(stderr, "  %s: prompt logprob off by %g (tolerance %g)\n", what, worst, tol);
                test_failed_here_ = 1;
            }
            json_decref(o);
            resp_free(&r);
        }
        CHECK(srv_stop(&s) == 0);
        json_decref(f.root);
    }
    closedir(d);
    CHECK(n_fix >= 5);
}

/* ---- concurrency ------------------------------------------------------------------ */

struct job {
    int port, stream, disconnect;
    const struct fcase *c;
    int ok;
    char err[200];
};

static void *job_run(void *arg) {
    struct job *j = arg;
    char *b = greedy_body(j->c, j->stream);
    if (!j->stream) {
        struct resp r;
        post(j->port, "/v1/completions", b, &r);
        j->ok = r.status == 200 && !greedy_mismatch(j->c, jget(r.json, "choices.0.token_ids"), "concurrent");
        if (!j->ok) snprintf(j->err, sizeof j->err, "status %d %.120s", r.status, r.body);
        resp_free(&r);
        free(b);
        return NULL;
    }
    /* streamed: collect token_ids of every chunk; or hang up after the first */
    int fd = dial(j->port);
    if (fd < 0) { free(b); return NULL; }
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n",
                      strlen(b));
    send_all(fd, head, (size_t)hn);
    send_all(fd, b, strlen(b));
    free(b);
    if (j->disconnect) {
        char buf[4096];
        size_t got = 0;
        while (got < 64) {
            ssize_t k = recv(fd, buf, sizeof buf, 0);
            if (k <= 0) break;
            got += (size_t)k;
        }
        close(fd); /* mid-stream */
        j->ok = 1;
        return NULL;
    }
    size_t n;
    char *raw = read_all(fd, &n);
    close(fd);
    struct resp r;
    resp_parse(raw, n, &r);
    free(raw);
    json_t *ids = json_array();
    int done = 0, finished = 0;
    for (char *sv = NULL, *line = strtok_r(r.body, "\n", &sv); line; line = strtok_r(NULL, "\n", &sv)) {
        if (strncmp(line, "data: ", 6)) continue;
        if (!strcmp(line + 6, "[DONE]")) { done = 1; continue; }
        json_t *o = json_loads(line + 6, 0, NULL);
        json_array_extend(ids, jget(o, "choices.0.token_ids"));
        if (json_is_string(jget(o, "choices.0.finish_reason"))) finished = 1;
        json_decref(o);
    }
    j->ok = r.status == 200 && done && finished && !greedy_mismatch(j->c, ids, "stream");
    if (!j->ok) snprintf(j->err, sizeof j->err, "status %d done %d finished %d", r.status, done, finished);
    json_decref(ids);
    resp_free(&r);
    return NULL;
}

static void run_jobs(struct job *jobs, int n) {
    pthread_t th[128];
    for (int i = 0; i < n; i++) REQUIRE(pthread_create(&th[i], NULL, job_run, &jobs[i]) == 0);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

TEST(concurrent_32_golden) {
    NEED_SERVER();
    struct fix f;
    REQUIRE(fix_load(&f, QWEN) == 0);
    struct srv s;
    const char *args[] = { "--kv-cache-dtype", "float32", NULL };
    srv_start(&s, QWEN, args, NULL);
    struct job jobs[32];
    for (int i = 0; i < 32; i++) jobs[i] = (struct job){ .port = s.port, .c = &f.c[i % f.n_cases], .stream = i % 4 == 3 };
    run_jobs(jobs, 32);
    for (int i = 0; i < 32; i++)
        if (!jobs[i].ok) {
            fprintf(stderr, "  request %d: %s\n", i, jobs[i].err);
            test_failed_here_ = 1;
        }
    CHECK(wait_idle(s.port));
    CHECK(srv_stop(&s) == 0);
    json_decref(f.root);
}

TEST(streams_64_with_disconnects) {
    NEED_SERVER();
    struct fix f;
    REQUIRE(fix_load(&f, QWEN) == 0);
    struct srv s;
    const char *args[] = { "--kv-cache-dtype", "float32", NULL };
    srv_start(&s, QWEN, args, NULL);
    /* long streams: the continuation is checked on its first tokens only */
    struct fcase longc[8];
    for (int i = 0; i < f.n_cases; i++) longc[i] = f.c[i];
    struct job jobs[64];
    for (int i = 0; i < 64; i++)
        jobs[i] = (struct job){ .port = s.port, .c = &longc[i % f.n_cases], .stream = 1, .disconnect = i % 3 == 0 };
    run_jobs(jobs, 64);
    int failed = 0;
    for (int i = 0; i < 64; i++)
        if (!jobs[i].ok) {
            fprintf(stderr, "  stream %d: %s\n", i, jobs[i].err);
            failed++;
        }
    CHECK(failed == 0);
    /* every request ended (finished or aborted) and freed its blocks */
    CHECK(wait_idle(s.port));
    char *m = get_metrics(s.port);
    CHECK(metric(m, "vllm:num_requests_running{") == 0);
    CHECK(metric(m, "vllm:kv_cache_usage_perc{") == 0);
    free(m);
    /* and a fresh request still answers correctly */
    struct resp r;
    char *b = greedy_body(&f.c[0], 0);
    CHECK(post(s.port, "/v1/completions", b, &r) == 200);
    CHECK(!greedy_mismatch(&f.c[0], jget(r.json, "choices.0.token_ids"), "after the storm"));
    resp_free(&r);
    free(b);
    CHECK(srv_stop(&s) == 0);
    json_decref(f.root);
}

/* Streaming shape: chunks, finish_reason in the last choice chunk, the usage
 * chunk, [DONE]; n > 1; echo; logprobs; stop_token_ids -> stop_reason. */
TEST(completion_shapes) {
    NEED_SERVER();
    struct fix f;
    REQUIRE(fix_load(&f, QWEN) == 0);
    struct srv s;
    const char *args[] = { "--kv-cache-dtype", "float32", NULL };
    srv_start(&s, QWEN, args, NULL);
    struct resp r;
    json_t *prompt = f.c[0].prompt;
    char *ps = json_dumps(prompt, JSON_COMPACT);
    char body[4096];

    snprintf(body, sizeof body,
             "{\"prompt\":%s,\"max_tokens\":6,\"temperature\":0,\"ignore_eos\":true,\"stream\":true,"
             "\"stream_options\":{\"include_usage\":true},\"return_token_ids\":true}", ps);
    CHECK(post(s.port, "/v1/completions", body, &r) == 200);
    CHECK(strstr(r.head, "text/event-stream") != NULL);
    int chunks = 0, usage_seen = 0, done = 0, finish_at = -1, n_ids = 0;
    for (char *sv = NULL, *line = strtok_r(r.body, "\n", &sv); line; line = strtok_r(NULL, "\n", &sv)) {
        if (line[0] == ':') continue; /* SSE comment */
        CHECK(!strncmp(line, "data: ", 6));
        if (!strcmp(line + 6, "[DONE]")) { done = 1; continue; }
        CHECK(!done);
        json_t *o = json_loads(line + 6, 0, NULL);
        CHECK(o != NULL);
        CHECK(!strcmp(json_string_value(jget(o, "object")) ?: "", "text_completion"));
        if (json_array_size(jget(o, "choices")) == 0) {
            usage_seen = 1;
            CHECK(json_integer_value(jget(o, "usage.completion_tokens")) == 6);
            CHECK(json_integer_value(jget(o, "usage.prompt_tokens")) == (json_int_t)json_array_size(prompt));
        } else {
            CHECK(!usage_seen);
            CHECK(json_is_null(jget(o, "usage"))); /* include_usage: null until the last chunk */
            n_ids += (int)json_array_size(jget(o, "choices.0.token_ids"));
            if (json_is_string(jget(o, "choices.0.finish_reason"))) finish_at = chunks;
            chunks++;
        }
        json_decref(o);
    }
    CHECK(done && usage_seen && n_ids == 6);
    CHECK(finish_at == chunks - 1);
    resp_free(&r);

    /* n = 3, two prompts: six choices with indexes 0..5 */
    snprintf(body, sizeof body, "{\"prompt\":[%s,[5,6,7]],\"max_tokens\":4,\"n\":3,\"temperature\":1.0,\"seed\":7}", ps);
    CHECK(post(s.port, "/v1/completions", body, &r) == 200);
    CHECK(json_array_size(jget(r.json, "choices")) == 6);
    int seen[6] = { 0 };
    for (size_t i = 0; i < json_array_size(jget(r.json, "choices")); i++) {
        json_int_t idx = json_integer_value(json_object_get(json_array_get(jget(r.json, "choices"), i), "index"));
        if (idx >= 0 && idx < 6) seen[idx]++;
    }
    for (int i = 0; i < 6; i++) CHECK(seen[i] == 1);
    CHECK(json_integer_value(jget(r.json, "usage.completion_tokens")) <= 24);
    resp_free(&r);

    /* seeded sampling is reproducible */
    snprintf(body, sizeof body, "{\"prompt\":%s,\"max_tokens\":8,\"temperature\":1.0,\"seed\":1234,\"ignore_eos\":true,"
             "\"return_token_ids\":true}", ps);
    struct resp r2;
    CHECK(post(s.port, "/v1/completions", body, &r) == 200);
    CHECK(post(s.port, "/v1/completions", body, &r2) == 200);
    CHECK(json_equal(jget(r.json, "choices.0.token_ids"), jget(r2.json, "choices.0.token_ids")));
    resp_free(&r);
    resp_free(&r2);

    /* logprobs: the sampled token's logprob equals the reference's at greedy */
    snprintf(body, sizeof body, "{\"prompt\":%s,\"max_tokens\":3,\"temperature\":0,\"ignore_eos\":true,\"logprobs\":2,"
             "\"return_tokens_as_token_ids\":true}", ps);
    CHECK(post(s.port, "/v1/completions", body, &r) == 200);
    json_t *lp = jget(r.json, "choices.0.logprobs");
    CHECK(json_array_size(json_object_get(lp, "tokens")) == 3);
    CHECK(json_array_size(json_object_get(lp, "token_logprobs")) == 3);
    CHECK(json_array_size(json_object_get(lp, "text_offset")) == 3);
    char want[32];
    snprintf(want, sizeof want, "token_id:%lld", (long long)json_integer_value(json_array_get(f.c[0].greedy, 0)));
    CHECK(!strcmp(json_string_value(jget(lp, "tokens.0")) ?: "", want));
    double ref = json_number_value(json_array_get(f.c[0].logprobs, json_array_size(prompt) - 1));
    CHECK_NEAR(json_number_value(jget(lp, "token_logprobs.0")), ref, 1e-3);
    json_t *top0 = jget(lp, "top_logprobs.0");
    CHECK(json_object_size(top0) >= 2 && json_object_size(top0) <= 3);
    CHECK_NEAR(json_number_value(json_object_get(top0, want)), ref, 1e-3);
    resp_free(&r);

    /* echo with max_tokens 0: the prompt and its logprobs only */
    snprintf(body, sizeof body, "{\"prompt\":%s,\"max_tokens\":0,\"echo\":true,\"logprobs\":0,"
             "\"return_tokens_as_token_ids\":true}", ps);
    CHECK(post(s.port, "/v1/completions", body, &r) == 200);
    lp = jget(r.json, "choices.0.logprobs");
    CHECK(json_array_size(json_object_get(lp, "tokens")) == json_array_size(prompt));
    CHECK(json_is_null(jget(lp, "token_logprobs.0")));
    CHECK_NEAR(json_number_value(jget(lp, "token_logprobs.1")), json_number_value(json_array_get(f.c[0].logprobs, 0)), 1e-3);
    CHECK(json_integer_value(jget(r.json, "usage.completion_tokens")) == 0);
    resp_free(&r);

    /* stop_token_ids: stops at the reference's second token, stop_reason names it */
    json_int_t stop_tok = json_integer_value(json_array_get(f.c[0].greedy, 1));
    if (json_number_value(json_array_get(f.c[0].margin, 0)) >= 1e-2 && json_number_value(json_array_get(f.c[0].margin, 1)) >= 1e-2 &&
        stop_tok != json_integer_value(json_array_get(f.c[0].greedy, 0))) {
        snprintf(body, sizeof body, "{\"prompt\":%s,\"max_tokens\":10,\"temperature\":0,\"stop_token_ids\":[%lld],"
                 "\"return_token_ids\":true}", ps, (long long)stop_tok);
        CHECK(post(s.port, "/v1/completions", body, &r) == 200);
        CHECK(!strcmp(json_string_value(jget(r.json, "choices.0.finish_reason")) ?: "", "stop"));
        CHECK(json_integer_value(jget(r.json, "choices.0.stop_reason")) == stop_tok);
        CHECK(json_array_size(jget(r.json, "choices.0.token_ids")) <= 2);
        resp_free(&r);
    }

    /* a repeated prompt is served from the prefix cache (a full block of 16) */
    snprintf(body, sizeof body, "{\"prompt\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20],\"max_tokens\":1}");
    CHECK(post(s.port, "/v1/completions", body, &r) == 200);
    resp_free(&r);
    CHECK(post(s.port, "/v1/completions", body, &r) == 200);
    CHECK(json_integer_value(jget(r.json, "usage.prompt_tokens_details.cached_tokens")) == 16);
    resp_free(&r);
    char *m = get_metrics(s.port);
    CHECK(metric(m, "vllm:prefix_cache_hits_total{") >= 16);
    free(m);
    free(ps);
    CHECK(srv_stop(&s) == 0);
    json_decref(f.root);
}

/* A long-context server (the fixture's context stretched by --hf-overrides)
 * so that a request keeps running while we look. */
static void srv_start_long(struct srv *s, const char *const *extra) {
    const char *args[16] = { "--hf-overrides", "{\"max_position_embeddings\": 16384}", "--max-model-len", "16384" };
    int n = 4;
    for (int i = 0; extra && extra[i] && n < 15; i++) args[n++] = extra[i];
    args[n] = NULL;
    srv_start(s, QWEN, args, NULL);
}

static int open_stream(int port, int max_tokens) {
    int fd = dial(port);
    REQUIRE(fd >= 0);
    char body[256], req[512];
    snprintf(body, sizeof body, "{\"prompt\":[5,6,7],\"max_tokens\":%d,\"ignore_eos\":true,\"stream\":true}", max_tokens);
    int n = snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    REQUIRE(send_all(fd, req, (size_t)n) == 0);
    return fd;
}

static int read_until(int fd, const char *needle) {
    char buf[8192];
    size_t len = 0;
    while (len < sizeof buf - 1) {
        ssize_t k = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (k <= 0) return 0;
        len += (size_t)k;
        buf[len] = 0;
        if (strstr(buf, needle)) return 1;
    }
    return 1;
}

TEST(admission_and_queued_abort) {
    NEED_SERVER();
    struct srv s;
    const char *extra[] = { "--max-num-seqs", "1", "--max-waiting-requests", "1", NULL };
    srv_start_long(&s, extra);
    int a = open_stream(s.port, 16000);  /* runs */
    CHECK(read_until(a, "data: "));
    int b = open_stream(s.port, 16000);  /* waits: one slot */
    int queued = 0;
    for (int i = 0; i < 400 && !queued; i++) {
        char *m = get_metrics(s.port);
        queued = metric(m, "vllm:num_requests_waiting{") == 1;
        free(m);
        if (!queued) msleep(50);
    }
    CHECK(queued);
    struct resp r;
    post(s.port, "/v1/completions", "{\"prompt\":[1,2],\"max_tokens\":1}", &r);
    check_error(&r, 429, NULL);
    resp_free(&r);
    close(b); /* a queued client leaves: aborted at once */
    close(a);
    CHECK(wait_idle(s.port));
    CHECK(post(s.port, "/v1/completions", "{\"prompt\":[1,2],\"max_tokens\":1}", &r) == 200);
    resp_free(&r);
    CHECK(srv_stop(&s) == 0);
}

TEST(shutdown_mid_stream) {
    NEED_SERVER();
    struct srv s;
    srv_start_long(&s, NULL);
    int a = open_stream(s.port, 16000);
    CHECK(read_until(a, "data: "));
    int idle = dial(s.port); /* an idle keep-alive connection does not hold the exit */
    CHECK(idle >= 0);
    CHECK(srv_stop(&s) == 0);
    size_t n;
    char *rest = read_all(a, &n); /* the stream ended (aborted, or the connection closed) */
    free(rest);
    close(a);
    close(idle);
    char *log = read_file_str(s.log);
    CHECK(strstr(log, "shutting down") != NULL);
    free(log);
}

/* vllmc bench serve against the server: every request completes with the
 * asked-for token counts (no timing is checked). */
TEST(bench_serve_client) {
    NEED_SERVER();
    struct srv s;
    srv_start(&s, QWEN, NULL, NULL);
    const char *dir = test_mkdtemp();
    char url[64], json[300];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    snprintf(json, sizeof json, "%s/bench.json", dir);
    const char *args[] = { "bench", "serve", "--base-url", url, "--num-prompts", "12", "--max-concurrency", "4",
                           "--random-input-len", "9", "--random-output-len", "5", "--output-json", json, NULL };
    char *out;
    CHECK(run_cmd(args, &out) == 0);
    CHECK(strstr(out, "Successful requests:") && strstr(out, "Mean TTFT (ms):") && strstr(out, "P99 ITL (ms):"));
    free(out);
    json_t *j = json_load_file(json, 0, NULL);
    CHECK(json_integer_value(json_object_get(j, "completed")) == 12);
    CHECK(json_integer_value(json_object_get(j, "total_input_tokens")) == 12 * 9);
    CHECK(json_integer_value(json_object_get(j, "total_output_tokens")) == 12 * 5);
    CHECK(json_number_value(json_object_get(j, "output_throughput")) > 0);
    CHECK(json_array_size(json_object_get(j, "ttfts")) == 12);
    json_decref(j);
    char *m = get_metrics(s.port);
    CHECK(metric(m, "vllm:generation_tokens_total{") == 12 * 5);
    CHECK(metric(m, "vllm:request_success_total{engine=\"0\",finished_reason=\"length\"") == 12);
    free(m);
    const char *bad[] = { "bench", "serve", "--no-such-option", NULL };
    CHECK(run_cmd(bad, &out) == 2);
    free(out);
    CHECK(srv_stop(&s) == 0);
}

/* ---- a model with a tokenizer: the fixture's weights + a byte-level BPE of our own ---- */

static const char *CHAT_TEMPLATE =
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/* GPT-2's byte -> printable character map. */
static void byte_char(int b, char *out) {
    int cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) cp = b;
    else {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
    else out[0] = (char)(0xc0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3f)), out[2] = 0;
}

/* Writes DIR with symlinks to the qwen3 fixture and a 384-token tokenizer:
 * 256 bytes, 124 merges, 4 special tokens. */
static const char *make_text_model(void) {
    const char *dir = test_mkdtemp();
    char cwd[512], src[1200], dst[1200];
    REQUIRE(getcwd(cwd, sizeof cwd));
    DIR *d = opendir(QWEN);
    REQUIRE(d);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".safetensors") || !strcmp(de->d_name, "config.json") ||
            !strcmp(de->d_name, "generation_config.json")) {
            snprintf(src, sizeof src, "%s/%s/%s", cwd, QWEN, de->d_name);
            snprintf(dst, sizeof dst, "%s/%s", dir, de->d_name);
            REQUIRE(symlink(src, dst) == 0);
        }
    closedir(d);
    json_t *vocab = json_object(), *merges = json_array();
    char syms[256][4];
    for (int b = 0; b < 256; b++) {
        byte_char(b, syms[b]);
        json_object_set_new(vocab, syms[b], json_integer(b));
    }
    int id = 256;
    const char *letters = "etaoinsrhdlucmfywgpbvkxqjz";
    for (int i = 0; i < 26 && id < 380; i++) { /* "Ġe", "Ġt", ... */
        char a[8], m[16], tok[16];
        byte_char(' ', a);
        snprintf(m, sizeof m, "%s %c", a, letters[i]);
        snprintf(tok, sizeof tok, "%s%c", a, letters[i]);
        json_array_append_new(merges, json_string(m));
        json_object_set_new(vocab, tok, json_integer(id++));
    }
    for (int i = 0; i < 26 && id < 380; i++)
        for (int k = 0; k < 26 && id < 380; k++) {
            char m[8], tok[8];
            snprintf(m, sizeof m, "%c %c", letters[i], letters[k]);
            snprintf(tok, sizeof tok, "%c%c", letters[i], letters[k]);
            json_array_append_new(merges, json_string(m));
            json_object_set_new(vocab, tok, json_integer(id++));
        }
    static const char *const specials[] = { "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>" };
    json_t *added = json_array();
    for (int i = 0; i < 4; i++) {
        json_t *a = json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", 380 + i, "content", specials[i], "single_word", 0,
                              "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
        json_array_append_new(added, a);
        json_object_set_new(vocab, specials[i], json_integer(380 + i));
    }
    json_t *model = json_pack("{s:s,s:n,s:n,s:n,s:n,s:b,s:b,s:b}", "type", "BPE", "dropout", "unk_token",
                              "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                              "ignore_merges", 0);
    json_object_set_new(model, "vocab", vocab);
    json_object_set_new(model, "merges", merges);
    json_t *tok = json_pack("{s:s,s:n,s:n,s:o,s:n,s:{s:s,s:b,s:b,s:b},s:{s:s,s:b,s:b,s:b},s:{s:s,s:b,s:b,s:b},s:o}",
                            "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer",
                            "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                            "use_regex", 1, "post_processor", "type", "ByteLevel", "add_prefix_space", 1,
                            "trim_offsets", 0, "use_regex", 1, "decoder", "type", "ByteLevel", "add_prefix_space", 1,
                            "trim_offsets", 1, "use_regex", 1, "model", model);
    REQUIRE(tok);
    snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
    REQUIRE(json_dump_file(tok, dst, 0) == 0);
    json_decref(tok);
    json_t *cfg = json_pack("{s:s,s:s,s:s,s:s,s:s}", "tokenizer_class", "PreTrainedTokenizerFast", "eos_token",
                            "<|im_end|>", "pad_token", "<|pad|>", "bos_token", "<|endoftext|>", "chat_template",
                            CHAT_TEMPLATE);
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", dir);
    REQUIRE(json_dump_file(cfg, dst, 0) == 0);
    json_decref(cfg);
    return dir;
}

/* Skips the test when the binary has no text layer yet. */
static void need_tokenizer(int port) {
    struct resp r;
    post(port, "/tokenize", "{\"prompt\": \"hi\"}", &r);
    int ok = r.status == 200;
    if (!ok) fprintf(stderr, "  /tokenize: %d %s\n", r.status, r.body);
    resp_free(&r);
    if (!ok) SKIP("no tokenizer support in this build");
}

static json_t *tokenize(int port, const char *body) {
    struct resp r;
    post(port, "/tokenize", body, &r);
    CHECK(r.status == 200);
    json_t *t = json_incref(json_object_get(r.json, "tokens"));
    CHECK(json_integer_value(json_object_get(r.json, "count")) == (json_int_t)json_array_size(t));
    resp_free(&r);
    return t;
}

TEST(text_model) {
    NEED_SERVER();
    const char *dir = make_text_model();
    struct srv s;
    srv_start(&s, dir, NULL, NULL);
    need_tokenizer(s.port);
    struct resp r;
    int p = s.port;

    /* /tokenize and /detokenize round trip (byte-level BPE is lossless) */
    json_t *t = tokenize(p, "{\"prompt\": \"the cat sat on the mat, caf\\u00e9 \\u2615\", \"add_special_tokens\": false}");
    CHECK(json_array_size(t) > 0);
    char *ts = json_dumps(t, JSON_COMPACT), body[8192];
    snprintf(body, sizeof body, "{\"tokens\": %s}", ts);
    CHECK(post(p, "/detokenize", body, &r) == 200);
    CHECK(!strcmp(json_string_value(json_object_get(r.json, "prompt")) ?: "", "the cat sat on the mat, caf\xc3\xa9 \xe2\x98\x95"));
    resp_free(&r);
    /* " t" is a merged token of our vocabulary: the text is not one id per byte */
    CHECK(json_array_size(t) < strlen("the cat sat on the mat, caf\xc3\xa9 \xe2\x98\x95"));
    CHECK(post(p, "/tokenize", "{\"prompt\": \"ab\", \"return_token_strs\": true}", &r) == 200);
    CHECK(json_array_size(json_object_get(r.json, "token_strs")) == json_array_size(json_object_get(r.json, "tokens")));
    resp_free(&r);

    /* a string prompt and its token ids give the same greedy completion */
    snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 8, \"temperature\": 0, \"ignore_eos\": true, \"return_token_ids\": true}", ts);
    CHECK(post(p, "/v1/completions", body, &r) == 200);
    struct resp r2;
    CHECK(post(p, "/v1/completions", "{\"prompt\": \"the cat sat on the mat, caf\\u00e9 \\u2615\", \"add_special_tokens\": false, "
                                     "\"max_tokens\": 8, \"temperature\": 0, \"ignore_eos\": true, \"return_token_ids\": true}", &r2) == 200);
    CHECK(json_equal(jget(r.json, "choices.0.token_ids"), jget(r2.json, "choices.0.token_ids")));
    CHECK(json_equal(jget(r2.json, "choices.0.prompt_token_ids"), t));
    CHECK(!strcmp(json_string_value(jget(r.json, "choices.0.text")) ?: "a", json_string_value(jget(r2.json, "choices.0.text")) ?: "b"));
    /* the text is the decode of the ids (skip_special_tokens) */
    char *gen = json_dumps(jget(r.json, "choices.0.token_ids"), JSON_COMPACT);
    free(ts);
    resp_free(&r2);
    resp_free(&r);
    free(gen);
    json_decref(t);

    /* chat: the template renders what we expect; the prompt is its tokens */
    const char *msgs = "[{\"role\": \"system\", \"content\": \"be brief\"}, "
                       "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"hi\"}, {\"type\": \"text\", \"text\": \"there\"}]}]";
    snprintf(body, sizeof body, "{\"prompt\": \"<|im_start|>system\\nbe brief<|im_end|>\\n<|im_start|>user\\nhi\\nthere<|im_end|>\\n<|im_start|>assistant\\n\", \"add_special_tokens\": false}");
    json_t *want = tokenize(p, body);
    snprintf(body, sizeof body, "{\"messages\": %s}", msgs);
    json_t *got = tokenize(p, body);
    CHECK(json_equal(want, got));
    json_decref(got);
    snprintf(body, sizeof body, "{\"messages\": %s, \"max_tokens\": 6, \"temperature\": 0, \"ignore_eos\": true, \"return_token_ids\": true}", msgs);
    CHECK(post(p, "/v1/chat/completions", body, &r) == 200);
    CHECK(!strcmp(json_string_value(jget(r.json, "object")) ?: "", "chat.completion"));
    CHECK(!strcmp(json_string_value(jget(r.json, "choices.0.message.role")) ?: "", "assistant"));
    CHECK(json_is_string(jget(r.json, "choices.0.message.content")));
    CHECK(json_equal(jget(r.json, "prompt_token_ids"), want));
    CHECK(json_integer_value(jget(r.json, "usage.prompt_tokens")) == (json_int_t)json_array_size(want));
    json_t *chat_ids = json_incref(jget(r.json, "choices.0.token_ids"));
    const char *chat_text = json_string_value(jget(r.json, "choices.0.message.content"));
    char *chat_text_copy = xstrdup(chat_text ? chat_text : "");
    resp_free(&r);
    json_decref(want);

    /* the same, streamed: role first, then content, finish_reason last */
    snprintf(body, sizeof body, "{\"messages\": %s, \"max_tokens\": 6, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true, "
             "\"stream_options\": {\"include_usage\": true}}", msgs);
    CHECK(post(p, "/v1/chat/completions", body, &r) == 200);
    int k = 0, role_first = 0, finish_last = 0, done = 0;
    char content[4096] = "";
    for (char *sv = NULL, *line = strtok_r(r.body, "\n", &sv); line; line = strtok_r(NULL, "\n", &sv)) {
        if (strncmp(line, "data: ", 6)) continue;
        if (!strcmp(line + 6, "[DONE]")) { done = 1; continue; }
        json_t *o = json_loads(line + 6, 0, NULL);
        CHECK(!strcmp(json_string_value(jget(o, "object")) ?: "", "chat.completion.chunk"));
        if (json_array_size(jget(o, "choices"))) {
            if (k == 0) role_first = !strcmp(json_string_value(jget(o, "choices.0.delta.role")) ?: "", "assistant");
            else CHECK(jget(o, "choices.0.delta.role") == NULL);
            const char *c = json_string_value(jget(o, "choices.0.delta.content"));
            if (c) strncat(content, c, sizeof content - strlen(content) - 1);
            finish_last = json_is_string(jget(o, "choices.0.finish_reason"));
            k++;
        } else {
            CHECK(json_integer_value(jget(o, "usage.completion_tokens")) == 6);
        }
        json_decref(o);
    }
    CHECK(role_first && finish_last && done);
    CHECK(!strcmp(content, chat_text_copy));
    resp_free(&r);
    free(chat_text_copy);
    json_decref(chat_ids);

    /* chat logprobs */
    snprintf(body, sizeof body, "{\"messages\": %s, \"max_tokens\": 3, \"logprobs\": true, \"top_logprobs\": 2}", msgs);
    CHECK(post(p, "/v1/chat/completions", body, &r) == 200);
    json_t *content_lp = jget(r.json, "choices.0.logprobs.content");
    CHECK(json_array_size(content_lp) >= 1);
    CHECK(json_array_size(jget(content_lp, "0.top_logprobs")) == 2);
    CHECK(json_number_value(jget(content_lp, "0.logprob")) <= 0);
    CHECK(json_is_array(jget(content_lp, "0.bytes")));
    resp_free(&r);

    /* per-request template, and a template error -> 400 */
    snprintf(body, sizeof body, "{\"messages\": %s, \"chat_template\": \"{{ messages[1]['content'] }}!\"}", msgs);
    t = tokenize(p, body);
    want = tokenize(p, "{\"prompt\": \"hi\\nthere!\", \"add_special_tokens\": false}");
    CHECK(json_equal(t, want));
    json_decref(t);
    json_decref(want);
    snprintf(body, sizeof body, "{\"messages\": %s, \"chat_template\": \"{{ raise_exception('no system role here') }}\"}", msgs);
    post(p, "/v1/chat/completions", body, &r);
    CHECK(strstr(check_error(&r, 400, NULL), "no system role here") != NULL);
    resp_free(&r);
    snprintf(body, sizeof body, "{\"messages\": %s, \"chat_template\": \"{%% for x in %%}\"}", msgs);
    post(p, "/v1/chat/completions", body, &r);
    check_error(&r, 400, NULL);
    resp_free(&r);
    /* continue_final_message with add_generation_prompt */
    snprintf(body, sizeof body, "{\"messages\": %s, \"continue_final_message\": true}", msgs);
    post(p, "/v1/chat/completions", body, &r);
    check_error(&r, 400, "continue_final_message");
    resp_free(&r);
    CHECK(srv_stop(&s) == 0);
}

/* The official OpenAI client (tests/e2e, Node) against the server. */
TEST(openai_node_client) {
    NEED_SERVER();
    struct stat st;
    if (stat("tests/e2e/node_modules/openai/package.json", &st))
        SKIP("tests/e2e/node_modules is absent (bash tests/e2e/install.sh installs the openai client)");
    char *out;
    if (system("node --version > /dev/null 2>&1")) SKIP("node is not installed");
    const char *dir = make_text_model();
    struct srv s;
    const char *args[] = { "--api-key", "e2e-key", "--served-model-name", "tiny", NULL };
    srv_start(&s, dir, args, NULL);
    {
        struct resp r;
        http(s.port, "POST", "/tokenize", "{\"prompt\": \"hi\"}", NULL, &r);
        int ok = r.status == 200;
        resp_free(&r);
        if (!ok) SKIP("no tokenizer support in this build");
    }
    char cmd[1024], logp[400];
    snprintf(logp, sizeof logp, "%s.e2e", s.log);
    snprintf(cmd, sizeof cmd,
             "VLLMC_BASE_URL=http://127.0.0.1:%d/v1 VLLMC_API_KEY=e2e-key VLLMC_MODEL=tiny "
             "timeout 300 node --test tests/e2e/ > %s 2>&1",
             s.port, logp);
    int rc = system(cmd);
    if (rc) {
        out = read_file_str(logp);
        fprintf(stderr, "  node tests failed (%d):\n%s\n", rc, out);
        free(out);
        test_failed_here_ = 1;
    }
    unlink(logp);
    CHECK(srv_stop(&s) == 0);
}

TEST_MAIN()
