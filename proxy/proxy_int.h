/*
 * proxy_int: what the proxy's own files share (front end, upstream loop, admin port,
 * routes, access log). Not for use outside proxy/.
 *
 * One `struct proxy_exchange` lives per request. Two threads touch it: the front-end thread
 * (libmicrohttpd) and the upstream thread (libcurl multi). Fields marked [F] belong to the
 * front end, [U] to the upstream thread, [M] are shared and read or written under `mu`.
 * It is reference counted: one reference for the front end (dropped when libmicrohttpd
 * reports the request completed), one for the upstream side while a transfer is attached,
 * one while it sits in the upstream command queue.
 */
#ifndef CUTOVER_PROXY_INT_H
#define CUTOVER_PROXY_INT_H

#include "proxy/proxy.h"

#include <curl/curl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#define PX_IN_CAP (256u * 1024u)  /* request bytes buffered between client and app */
#define PX_OUT_CAP (256u * 1024u) /* answer bytes buffered between app and client */
#define PX_MAX_ADMIN 32

enum px_phase { PH_NEW = 0, PH_REFUSED, PH_BODY, PH_WAIT, PH_ANSWERED };

enum px_cmd { CMD_START = 1, CMD_UNPAUSE_READ = 2, CMD_UNPAUSE_WRITE = 4, CMD_ABORT = 8 };

struct px_upstream; /* upstream.c */
struct px_conn;     /* server.c: per-connection record for the header deadline */

struct proxy_exchange {
    pthread_mutex_t mu;
    atomic_int refs;
    proxy *px;
    struct MHD_Connection *conn;
    struct px_conn *pc; /* [F] */

    /* request, [F] until CMD_START, then read-only */
    enum px_phase phase; /* [F] */
    char *target;        /* raw request target, new string */
    const char *method;  /* borrowed from libmicrohttpd, valid for the request */
    bool head;
    bool has_body;
    int64_t body_len; /* -1: chunked */
    struct curl_slist *req_headers;
    uint64_t t_start, t_up_start, t_up_headers; /* microseconds */
    struct proxy_match match;
    bool matched;
    void *hook_state;

    /* request body, client → app [M] */
    char *in;
    size_t in_off, in_len;
    bool in_eof;
    bool in_paused;    /* curl's read callback returned PAUSE */
    uint64_t in_total; /* [F] */

    /* answer, app → client [M] */
    int status;
    struct curl_slist *resp_headers; /* "Name: value" lines, filtered */
    int64_t resp_len;                /* -1 unknown */
    bool headers_done;               /* [U] final headers seen */
    bool resp_ready;                 /* the front end may queue the answer */
    bool hold;
    struct buf out; /* ceiling PX_OUT_CAP, or max_json_answer while holding */
    size_t out_off;
    bool out_eof;
    bool out_paused;     /* curl's write callback returned PAUSE */
    bool up_failed;      /* transfer ended in error */
    int up_error_status; /* 502/504 when the app never answered */
    const char *up_reason;
    bool up_done;
    uint64_t out_total; /* [F] */
    int sent_status;    /* [F] */

    bool suspended; /* [M] libmicrohttpd connection suspended by us */
    bool fe_gone;   /* [M] front end completed: conn must not be touched */

    /* upstream command queue [M under px->cmd_mu] */
    unsigned cmds;
    bool queued;
    struct proxy_exchange *qnext;
    CURL *easy;                           /* [U] */
    struct proxy_exchange *aprev, *anext; /* [U] attached transfers */
    struct proxy_exchange *wnext;         /* [U] front-end wake-ups batched per loop turn */
    bool wake_queued;                     /* [U] */
    char conn_tokens[256];                /* [U] names listed in the answer's Connection */
};

struct px_admin_route {
    const char *method;
    char path[128];
    bool prefix;
    proxy_admin_fn fn;
    void *arg;
};

struct proxy {
    const struct config *cfg;
    struct proxy_hooks hooks;
    bool have_hooks;
    struct MHD_Daemon *mhd;
    struct MHD_Daemon *admin;
    int port, admin_port;
    char *up_host;
    int up_port;
    size_t up_base_len;

    struct px_upstream *up;

    atomic_long inflight;
    atomic_bool stopping;
    bool running;

    /* connection registry for the whole-header deadline (server.c) */
    pthread_mutex_t conn_mu;
    struct px_conn *conns;
    pthread_t sweeper;
    bool sweeper_started;
    pthread_cond_t sweep_cv;

    /* background pool (defer.c) */
    struct px_defer *defer;

    struct px_admin_route admin_routes[PX_MAX_ADMIN];
    size_t nadmin;
};

/* exchange references */
void px_ex_ref(struct proxy_exchange *x);
void px_ex_unref(struct proxy_exchange *x);
/* Resumes the client connection if we suspended it and the front end still owns it.
 * Caller holds x->mu. */
void px_wake_front(struct proxy_exchange *x);

/* upstream.c */
struct px_upstream *px_upstream_new(proxy *px, cut_err *err);
void px_upstream_free(struct px_upstream *up);
/* Builds the transfer for x and queues it (front-end thread). */
bool px_upstream_start(struct proxy_exchange *x, cut_err *err);
/* Posts a command for x to the upstream thread (any thread, never blocks). */
void px_upstream_post(struct proxy_exchange *x, unsigned cmd);
/* Aborts every transfer (shutdown). */
void px_upstream_abort_all(struct px_upstream *up);

/* route.c */
bool px_route_match(const struct config *cfg, const char *method, const char *target,
                    struct proxy_match *m);
void px_match_clear(struct proxy_match *m);

/* admin.c */
bool px_admin_start(proxy *px, cut_err *err);
void px_admin_stop(proxy *px);

/* defer.c */
struct px_defer *px_defer_new(int threads, size_t queue_max);
void px_defer_free(struct px_defer *d); /* runs what is queued, then joins */

/* access_log.c */
void px_access_log(const struct proxy_exchange *x);

#endif
