/*
 * metrics_http: /metrics, the dashboard page and the proxy's observer (see metrics_http.h).
 *
 * The collector is one thread with its own state-store connection. A scrape (on an admin
 * connection thread) that finds the figures older than a second kicks it and waits on a
 * condition variable for at most a second; the thread reads (one statement, a 2 s statement
 * timeout), sets the gauges and wakes the waiters. Reading at scrape time rather than on a
 * timer keeps an idle sidecar from counting a large table every second; the one-second reuse
 * keeps many scrapers (Prometheus, dashboards) to one count a second per sidecar. A database
 * that hangs stalls only the collector: scrapes go on, the figures age, and past
 * PROXY_METRICS_STALE_S they are left out.
 *
 * The observer runs on the proxy's loops: two relaxed atomic adds per exchange, no lock.
 */
#include "proxy/metrics_http.h"

#include "core/metrics.h"
#include "storage/pgstore.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COLLECT_EVERY_US 1000000u /* figures younger than this are reused */
#define SCRAPE_WAIT_MS 1000u      /* the longest a scrape waits for the collector */
#define STATEMENT_TIMEOUT_MS 2000

/* The page, built from proxy/dashboard.html by cmake/embed.cmake. */
extern const char proxy_dashboard_html[];
extern const size_t proxy_dashboard_html_len;

struct proxy_metrics {
    const struct config *cfg;
    flags_store *flags;        /* borrowed, or NULL */
    flags_snapshot *cfg_flags; /* the configuration's, shown without a store */
    pgstore *db;               /* the collector's; NULL without database_url */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t kick_cv, done_cv;
    bool kicked, stop, busy;
    uint64_t rounds;  /* reads finished */
    uint64_t last_us; /* when the last read finished (0: never) */
    uint64_t ok_us;   /* when the last successful read finished (0: never) */
};

/* ---- the collector -------------------------------------------------------------------------- */

static void collect(proxy_metrics *pm)
{
    int64_t counts[DOC_NSTATES], depth = 0;
    cut_err err = CUT_ERR_INIT;
    bool ok = pgstore_metrics_counts(pm->db, counts, &depth, STATEMENT_TIMEOUT_MS, &err) == 0;

    if (ok) {
        for (int s = 0; s < DOC_NSTATES; s++)
            metrics_set(MET_DOCUMENTS,
                        (unsigned)metrics_label_index(MET_DOCUMENTS, 0, doc_state_name(s)), 0,
                        (double)counts[s]);
        metrics_set(MET_QUEUE_DEPTH, 0, 0, (double)depth);
    }
    metrics_set(MET_STATE_STORE_UP, 0, 0, ok ? 1 : 0);
    pthread_mutex_lock(&pm->mu);
    bool was_ok = pm->ok_us != 0 && pm->last_us == pm->ok_us;
    pm->last_us = now_us();
    if (ok)
        pm->ok_us = pm->last_us;
    pm->rounds++;
    pm->busy = false;
    pthread_cond_broadcast(&pm->done_cv);
    pthread_mutex_unlock(&pm->mu);
    if (!ok && (was_ok || pm->rounds == 1))
        log_msgf(LOG_WARN, "metrics", "the state store's figures cannot be read: %s", err.msg);
}

static void *collector_main(void *arg)
{
    proxy_metrics *pm = arg;
    thread_setup("metrics", false);
    pthread_mutex_lock(&pm->mu);
    for (;;) {
        while (!pm->kicked && !pm->stop)
            pthread_cond_wait(&pm->kick_cv, &pm->mu);
        if (pm->stop)
            break;
        pm->kicked = false;
        pm->busy = true;
        pthread_mutex_unlock(&pm->mu);
        collect(pm);
        pthread_mutex_lock(&pm->mu);
    }
    pthread_mutex_unlock(&pm->mu);
    return NULL;
}

/* Admin thread: makes the state store's figures at most a second old if it can within
 * SCRAPE_WAIT_MS, and shows or hides them by their age. */
static void refresh_state(proxy_metrics *pm)
{
    bool fresh;
    if (!pm->db) {
        metrics_hide(MET_DOCUMENTS, true);
        metrics_hide(MET_QUEUE_DEPTH, true);
        metrics_hide(MET_STATE_STORE_UP, true);
        return;
    }
    pthread_mutex_lock(&pm->mu);
    if (pm->busy || pm->kicked || now_us() - pm->last_us >= COLLECT_EVERY_US || !pm->last_us) {
        struct timespec deadline;
        uint64_t want = pm->rounds + 1;
        if (!pm->busy && !pm->kicked) {
            pm->kicked = true;
            pthread_cond_signal(&pm->kick_cv);
        }
        deadline_after_ms(&deadline, SCRAPE_WAIT_MS);
        while (pm->rounds < want && !pm->stop)
            if (pthread_cond_timedwait(&pm->done_cv, &pm->mu, &deadline) != 0)
                break;
    }
    fresh = pm->ok_us && now_us() - pm->ok_us <= PROXY_METRICS_STALE_S * 1000000u;
    pthread_mutex_unlock(&pm->mu);
    metrics_hide(MET_DOCUMENTS, !fresh);
    metrics_hide(MET_QUEUE_DEPTH, !fresh);
    if (!fresh)
        metrics_set(MET_STATE_STORE_UP, 0, 0, 0);
}

/* ---- the flags ------------------------------------------------------------------------------ */

static void refresh_flags(proxy_metrics *pm)
{
    flags_snapshot *s =
        pm->flags ? flags_store_current(pm->flags) : flags_snapshot_ref(pm->cfg_flags);
    if (!s)
        return;
    metrics_set(MET_FLAG_READ_FROM_S3, 0, 0, flags_read_percent(s) / 100.0);
    metrics_set(MET_FLAG_SHADOW_READ, 0, 0, flags_shadow_read(s));
    metrics_set(MET_FLAG_DUAL_WRITE, 0, 0, flags_dual_write(s) ? 1 : 0);
    metrics_set(MET_FLAG_AUTO_ROLLBACK, 0, 0, flags_auto_rollback(s).enabled ? 1 : 0);
    metrics_set(MET_FLAG_CUTOVER_GATE, 0, 0, flags_cutover_gate(s));
    flags_snapshot_unref(s);
}

/* ---- admin handlers ------------------------------------------------------------------------- */

static void serve_metrics(void *arg, const struct proxy_admin_req *req,
                          struct proxy_admin_reply *rep)
{
    proxy_metrics *pm = arg;
    (void)req;
    refresh_state(pm);
    refresh_flags(pm);
    rep->content_type = "text/plain; version=0.0.4; charset=utf-8";
    if (!metrics_render(&rep->body)) {
        buf_reset(&rep->body);
        rep->status = 500;
        rep->content_type = "text/plain; charset=utf-8";
        if (!buf_puts(&rep->body, "metrics larger than the reply's ceiling\n"))
            return;
    }
}

static void serve_dashboard(void *arg, const struct proxy_admin_req *req,
                            struct proxy_admin_reply *rep)
{
    (void)arg;
    (void)req;
    rep->content_type = "text/html; charset=utf-8";
    if (!buf_append(&rep->body, proxy_dashboard_html, proxy_dashboard_html_len))
        rep->status = 500;
}

/* ---- the observer --------------------------------------------------------------------------- */

static void on_exchange(void *arg, const struct proxy_record *r)
{
    const proxy_metrics *pm = arg;
    long i = r->route ? (long)(r->route - pm->cfg->routes) : -1;
    unsigned route = i < (long)pm->cfg->nroutes ? metrics_route_index(i) : MET_ROUTE_OTHER;
    metrics_inc(MET_PROXY_REQUESTS, route, metrics_status_class(r->status));
    metrics_observe_us(MET_PROXY_DURATION, route, r->duration_us);
}

/* ---- life ----------------------------------------------------------------------------------- */

proxy_metrics *proxy_metrics_new(proxy *px, const struct config *cfg, flags_store *flags,
                                 cut_err *err)
{
    proxy_metrics *pm = xcalloc(1, sizeof(*pm));
    const char *names[METRICS_MAX_ROUTES];
    size_t n = cfg->nroutes < METRICS_MAX_ROUTES ? cfg->nroutes : METRICS_MAX_ROUTES;
    struct proxy_observer obs = {.arg = pm, .on_exchange = on_exchange};

    pm->cfg = cfg;
    pm->flags = flags;
    pthread_mutex_init(&pm->mu, NULL);
    pthread_cond_init(&pm->kick_cv, NULL);
    pthread_cond_init(&pm->done_cv, NULL);
    for (size_t i = 0; i < n; i++)
        names[i] = cfg->routes[i].name;
    metrics_set_routes(names, n);
    if (!flags && !(pm->cfg_flags = flags_snapshot_from_config(cfg, err)))
        goto fail;
    if (!proxy_add_observer(px, &obs, err))
        goto fail;
    if (!proxy_admin_add(px, "GET", "/metrics", serve_metrics, pm) ||
        !proxy_admin_add(px, "GET", "/", serve_dashboard, pm)) {
        err_set(err, CUT_ELIMIT, "metrics", "the admin port's handler table is full");
        goto fail;
    }
    if (cfg->database_url) {
        pm->db = pgstore_open(cfg->database_url);
        if (pthread_create(&pm->thread, NULL, collector_main, pm) != 0) {
            err_set(err, CUT_EIO, "metrics", "cannot start the metrics collector thread");
            goto fail;
        }
        pm->started = true;
    }
    return pm;
fail:
    proxy_metrics_free(pm);
    return NULL;
}

void proxy_metrics_free(proxy_metrics *pm)
{
    if (!pm)
        return;
    if (pm->started) {
        pthread_mutex_lock(&pm->mu);
        pm->stop = true;
        pthread_cond_broadcast(&pm->kick_cv);
        pthread_cond_broadcast(&pm->done_cv);
        pthread_mutex_unlock(&pm->mu);
        pthread_join(pm->thread, NULL);
    }
    pgstore_free(pm->db);
    flags_snapshot_unref(pm->cfg_flags);
    pthread_cond_destroy(&pm->kick_cv);
    pthread_cond_destroy(&pm->done_cv);
    pthread_mutex_destroy(&pm->mu);
    free(pm);
}
