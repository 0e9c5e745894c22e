/* server_internal.h — state shared by the server's files: serve.c (CLI,
 * start-up, shutdown), http.c (libmicrohttpd, routing, bodies, auth, waiting
 * on the engine) and api.c (the generation endpoints).
 *
 * Threading: libmicrohttpd runs one thread per connection; a request's
 * handler blocks in that thread. It waits in poll() on three fds: its own
 * eventfd (written by the engine's notify callback), the client's socket
 * (POLLRDHUP: the client went away -> vllmc_abort at once) and the server's
 * shutdown eventfd. Nothing spins. */
#ifndef VLLMC_SERVER_INTERNAL_H
#define VLLMC_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "server/metrics.h"
#include "server/protocol.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "vllmc.h"

#define SERVER_MAX_BODY (8u << 20)       /* larger bodies: 413 */
#define SERVER_PING_MS 1000              /* SSE ": ping" while nothing else is sent */

/* An eventfd that engine notify callbacks write. Waiters are recycled, never
 * freed while the server runs: a notify that races with the end of its
 * request then only wakes some later request spuriously. */
struct waiter {
    int efd;
    struct waiter *next;
};

struct server {
    vllmc_engine *engine;
    const struct tokenizer *tok;         /* NULL: token ids only */
    struct vllmc_model_info info;
    struct vllmc_sampling_params defaults;
    struct proto_limits lim;
    const char **names;                  /* --served-model-name (or the model argument) */
    int n_names;
    const char *model_root;              /* as given on the command line */
    const char *api_key;                 /* NULL: no auth */
    struct chat_template *tmpl;          /* default template, or NULL */
    struct chat_template *tmpl_tools;    /* the tokenizer's "tool_use" template, or NULL */
    json_t *default_kwargs;              /* --default-chat-template-kwargs (object) */
    json_t *specials;                    /* bos_token, eos_token, ... for templates */
    int log_requests;
    int max_waiting;                     /* admission bound on queued requests */
    time_t created;
    struct metrics metrics;

    atomic_int shutting_down;
    atomic_int n_active;                 /* HTTP requests in a generation handler */
    atomic_int n_queued;                 /* submitted, no output yet */
    atomic_ullong next_id;
    int shutdown_fd;                     /* eventfd, readable once shutdown began */
    pthread_mutex_t waiters_mu;
    struct waiter *free_waiters;         /* free list */
    struct MHD_Daemon *mhd;
};

/* One HTTP request (libmicrohttpd's per-request context). */
struct hreq {
    struct server *s;
    int route;
    char *body;
    size_t len, cap;
    int too_large;
    int fd;                              /* the client socket */
    double t_start;
    struct gen *gen;                     /* streaming generation, owned */
};

/* ---- http.c ---- */
int http_start(struct server *s, const struct sockaddr *addr, int ipv6, char *err, size_t errlen);
int http_port(struct server *s);      /* the bound port */
void http_quiesce(struct server *s);  /* stop accepting connections */
void http_stop(struct server *s);     /* close everything, join the connection threads */
/* transport helpers used by api.c */
enum MHD_Result http_send_json(struct MHD_Connection *mc, int status, json_t *body); /* steals body */
enum MHD_Result http_send_error(struct MHD_Connection *mc, const struct proto_error *e);
char *json_dump_compact(const json_t *j, size_t *len);

/* ---- api.c ---- */
enum MHD_Result api_completions(struct hreq *h, struct MHD_Connection *mc, enum proto_kind kind);
enum MHD_Result api_tokenize(struct hreq *h, struct MHD_Connection *mc);
enum MHD_Result api_detokenize(struct hreq *h, struct MHD_Connection *mc);
void gen_free(struct gen *g);
struct waiter *waiter_get(struct server *s);  /* NULL: out of file descriptors */
void waiter_put(struct server *s, struct waiter *w);
void waiters_free(struct server *s);          /* at exit, after the engine is closed */

#endif
