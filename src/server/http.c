/* http.c — the HTTP side of vllmc serve: libmicrohttpd callbacks, request
 * bodies (with the 413 limit), routing (404/405), bearer auth on the /v1 paths, the
 * small endpoints (/health, /ping, /version, /metrics, /v1/models), and
 * error objects. The generation endpoints live in api.c.
 *
 * Owns: struct hreq (one per HTTP request, freed in on_completed).
 * Does not: parse request JSON (protocol.c) or wait on the engine (api.c). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/server.h"
#include "server/server_internal.h"
#include "util/util.h"

#define BODY_DISCARD_LIMIT (64ull << 20) /* beyond this we answer 413 without reading the body */

enum { M_GET = 1, M_POST = 2, M_HEAD = 4 };
enum { R_NONE = 0, R_HEALTH, R_PING, R_VERSION, R_METRICS, R_MODELS, R_COMPLETIONS, R_CHAT, R_TOKENIZE,
       R_DETOKENIZE };

static const struct {
    const char *path;
    int route;
    unsigned methods;
} ROUTES[] = {
    { "/health", R_HEALTH, M_GET | M_HEAD },
    { "/ping", R_PING, M_GET | M_POST | M_HEAD },
    { "/version", R_VERSION, M_GET | M_HEAD },
    { "/metrics", R_METRICS, M_GET | M_HEAD },
    { "/v1/models", R_MODELS, M_GET | M_HEAD },
    { "/v1/completions", R_COMPLETIONS, M_POST },
    { "/v1/chat/completions", R_CHAT, M_POST },
    { "/tokenize", R_TOKENIZE, M_POST },
    { "/detokenize", R_DETOKENIZE, M_POST },
};

char *json_dump_compact(const json_t *j, size_t *len) {
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s) s = xstrdup("{}");
    *len = strlen(s);
    return s;
}

static enum MHD_Result send_bytes(struct MHD_Connection *mc, int status, char *buf, size_t len, const char *ctype) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(buf);
        return MHD_NO;
    }
    if (ctype) MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(mc, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result http_send_json(struct MHD_Connection *mc, int status, json_t *body) {
    size_t len;
    char *s = json_dump_compact(body, &len);
    json_decref(body);
    return send_bytes(mc, status, s, len, "application/json");
}

enum MHD_Result http_send_error(struct MHD_Connection *mc, const struct proto_error *e) {
    return http_send_json(mc, e->status, proto_error_json(e));
}

static enum MHD_Result send_err(struct MHD_Connection *mc, int status, const char *type, const char *msg) {
    struct proto_error e;
    proto_errorf(&e, status, type, NULL, "%s", msg);
    return http_send_error(mc, &e);
}

static enum MHD_Result send_empty(struct MHD_Connection *mc, int status) {
    return send_bytes(mc, status, xstrdup(""), 0, NULL);
}

/* ---- small endpoints ---- */

static enum MHD_Result models(struct server *s, struct MHD_Connection *mc) {
    json_t *data = json_array();
    for (int i = 0; i < s->n_names; i++) {
        json_t *m = json_object(), *perm = json_object();
        json_object_set_new(m, "id", json_string(s->names[i]));
        json_object_set_new(m, "object", json_string("model"));
        json_object_set_new(m, "created", json_integer((json_int_t)s->created));
        json_object_set_new(m, "owned_by", json_string("vllm"));
        json_object_set_new(m, "root", json_string(s->model_root));
        json_object_set_new(m, "parent", json_null());
        json_object_set_new(m, "max_model_len", json_integer(s->lim.max_model_len));
        json_object_set_new(perm, "id", json_sprintf("modelperm-%d", i));
        json_object_set_new(perm, "object", json_string("model_permission"));
        json_object_set_new(perm, "created", json_integer((json_int_t)s->created));
        json_object_set_new(perm, "allow_create_engine", json_false());
        json_object_set_new(perm, "allow_sampling", json_true());
        json_object_set_new(perm, "allow_logprobs", json_true());
        json_object_set_new(perm, "allow_search_indices", json_false());
        json_object_set_new(perm, "allow_view", json_true());
        json_object_set_new(perm, "allow_fine_tuning", json_false());
        json_object_set_new(perm, "organization", json_string("*"));
        json_object_set_new(perm, "group", json_null());
        json_object_set_new(perm, "is_blocking", json_false());
        json_t *perms = json_array();
        json_array_append_new(perms, perm);
        json_object_set_new(m, "permission", perms);
        json_array_append_new(data, m);
    }
    json_t *o = json_object();
    json_object_set_new(o, "object", json_string("list"));
    json_object_set_new(o, "data", data);
    return http_send_json(mc, 200, o);
}

static enum MHD_Result metrics_endpoint(struct server *s, struct MHD_Connection *mc) {
    struct vllmc_engine_stats st;
    vllmc_engine_stats(s->engine, &st);
    size_t len;
    char *text = metrics_render(&s->metrics, &st, &len);
    return send_bytes(mc, 200, text, len, "text/plain; version=0.0.4; charset=utf-8");
}

static int engine_dead(struct server *s) {
    struct vllmc_engine_stats st;
    vllmc_engine_stats(s->engine, &st);
    return st.engine_dead;
}

/* Constant-time comparison of the Authorization header with "Bearer KEY". */
static int auth_ok(struct server *s, struct MHD_Connection *mc) {
    if (!s->api_key) return 1;
    const char *h = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7)) return 0;
    h += 7;
    size_t a = strlen(h), b = strlen(s->api_key);
    unsigned char diff = (unsigned char)(a != b);
    for (size_t i = 0; i < a; i++) diff |= (unsigned char)(h[i] ^ s->api_key[i % (b ? b : 1)]);
    return diff == 0;
}

static unsigned method_bit(const char *m) {
    if (!strcmp(m, MHD_HTTP_METHOD_GET)) return M_GET;
    if (!strcmp(m, MHD_HTTP_METHOD_POST)) return M_POST;
    if (!strcmp(m, MHD_HTTP_METHOD_HEAD)) return M_HEAD;
    return 0;
}

static enum MHD_Result dispatch(struct hreq *h, struct MHD_Connection *mc, const char *url, const char *method) {
    struct server *s = h->s;
    int idx = -1;
    for (size_t i = 0; i < ARRAY_LEN(ROUTES); i++)
        if (!strcmp(url, ROUTES[i].path)) idx = (int)i;
    if (idx < 0) return send_err(mc, 404, "NotFoundError", "Not Found");
    if (!(ROUTES[idx].methods & method_bit(method))) {
        struct proto_error e;
        proto_errorf(&e, 405, "MethodNotAllowedError", NULL, "Method Not Allowed");
        struct MHD_Response *r;
        size_t len;
        json_t *j = proto_error_json(&e);
        char *body = json_dump_compact(j, &len);
        json_decref(j);
        r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (!r) return MHD_NO;
        unsigned m = ROUTES[idx].methods;
        MHD_add_response_header(r, "Allow", m & M_POST ? (m & M_GET ? "GET, POST" : "POST") : "GET");
        MHD_add_response_header(r, "Content-Type", "application/json");
        enum MHD_Result ret = MHD_queue_response(mc, 405, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (h->too_large) {
        char msg[160];
        snprintf(msg, sizeof msg, "Request body too large: the limit is %u bytes", SERVER_MAX_BODY);
        return send_err(mc, 413, "RequestEntityTooLargeError", msg);
    }
    if (!strncmp(url, "/v1/", 4) && !auth_ok(s, mc)) return send_err(mc, 401, "AuthenticationError", "Unauthorized");
    switch (ROUTES[idx].route) {
    case R_HEALTH:
    case R_PING:
        return send_empty(mc, engine_dead(s) ? 503 : 200);
    case R_VERSION: {
        json_t *o = json_object();
        json_object_set_new(o, "version", json_string(VLLMC_VERSION));
        return http_send_json(mc, 200, o);
    }
    case R_METRICS:
        return metrics_endpoint(s, mc);
    case R_MODELS:
        return models(s, mc);
    case R_TOKENIZE:
        return api_tokenize(h, mc);
    case R_DETOKENIZE:
        return api_detokenize(h, mc);
    default:
        break;
    }
    if (atomic_load(&s->shutting_down)) return send_err(mc, 503, "ServiceUnavailableError", "the server is shutting down");
    return api_completions(h, mc, ROUTES[idx].route == R_CHAT ? PROTO_CHAT : PROTO_COMPLETION);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size, void **ctx) {
    struct server *s = cls;
    struct hreq *h = *ctx;
    if (!h) {
        h = xcalloc(1, sizeof *h);
        h->s = s;
        h->t_start = time_now();
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        h->fd = ci ? ci->connect_fd : -1;
        *ctx = h;
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > BODY_DISCARD_LIMIT) {
            char msg[160];
            snprintf(msg, sizeof msg, "Request body too large: the limit is %u bytes", SERVER_MAX_BODY);
            return send_err(mc, 413, "RequestEntityTooLargeError", msg);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (h->too_large || h->len + n > SERVER_MAX_BODY) { /* keep reading, keep nothing */
            h->too_large = 1;
            free(h->body);
            h->body = NULL;
            h->cap = 0;
            h->len += n;
            return h->len > BODY_DISCARD_LIMIT ? MHD_NO : MHD_YES;
        }
        if (h->len + n + 1 > h->cap) {
            size_t cap = h->cap ? h->cap : 4096;
            while (cap < h->len + n + 1) cap *= 2;
            char *b = realloc(h->body, cap);
            if (!b) return MHD_NO;
            h->body = b;
            h->cap = cap;
        }
        memcpy(h->body + h->len, upload_data, n);
        h->len += n;
        h->body[h->len] = 0;
        return MHD_YES;
    }
    return dispatch(h, mc, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **ctx, enum MHD_RequestTerminationCode toe) {
    struct hreq *h = *ctx;
    if (!h) return;
    gen_free(h->gen); /* aborts what is still running */
    free(h->body);
    free(h);
    *ctx = NULL;
}

int http_start(struct server *s, const struct sockaddr *addr, int ipv6, char *err, size_t errlen) {
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    if (ipv6) flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, addr,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned)300, MHD_OPTION_CONNECTION_LIMIT, (unsigned)4000,
                              MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!s->mhd) return errf(err, errlen, "could not listen (address in use or not available?)");
    return 0;
}

int http_port(struct server *s) {
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    return di ? di->port : -1;
}

void http_quiesce(struct server *s) {
    MHD_socket fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

void http_stop(struct server *s) {
    if (s->mhd) MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
}
