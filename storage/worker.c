/*
 * The worker pool: N threads around one ring of jobs sized at start (no allocation on
 * submit), under one mutex with two condition variables (work for the threads, idle for
 * drain). Each thread owns a worker_ctx with its own pgstore, so jobs never share a
 * connection and never take a lock to use one.
 *
 * Refusals are counted under the mutex and logged outside it, at most once a second: a burst
 * of thousands of refusals (an overloaded database) is one line with the counts, and an event
 * loop calling worker_submit never writes more than that.
 */
#include "storage/worker.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct job {
    worker_fn fn;
    void *arg;
};

struct worker_ctx {
    worker_pool *pool;
    int index;
    pgstore *store;
    pthread_t thread;
    bool started;
};

struct worker_pool {
    char *name;
    char *database_url;
    pthread_mutex_t mu;
    pthread_cond_t work; /* a job was queued, or stopping */
    pthread_cond_t idle; /* queue empty and nothing running */
    struct job *ring;
    size_t cap, head, n; /* n jobs from head, modulo cap */
    size_t running;
    bool stopping, joined;
    bool background; /* its threads run at a lower priority (thread_setup()) */
    struct worker_stats st;
    uint64_t logged_full, logged_stopping; /* counts already reported */
    uint64_t last_log_us;
    int nthreads, nctx;
    worker_ctx *ctx;
};

static void *thread_main(void *arg)
{
    worker_ctx *ctx = arg;
    worker_pool *p = ctx->pool;

    thread_setup(p->name, p->background);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct job j;

        while (p->n == 0 && !p->stopping)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->n == 0)
            break; /* stopping, and nothing left to run */
        j = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->n--;
        p->running++;
        pthread_mutex_unlock(&p->mu);
        j.fn(ctx, j.arg);
        pthread_mutex_lock(&p->mu);
        p->running--;
        p->st.done++;
        if (p->n == 0 && p->running == 0)
            pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

worker_pool *worker_pool_start(const struct worker_opts *o, cut_err *err)
{
    worker_pool *p;

    if (o->threads < 1 || o->threads > WORKER_MAX_THREADS || o->queue_max < 1 ||
        o->queue_max > WORKER_MAX_QUEUE) {
        err_set(err, CUT_EINVAL, "workers", "%s: 1..%d threads and a queue of 1..%u jobs",
                o->name ? o->name : "workers", WORKER_MAX_THREADS, WORKER_MAX_QUEUE);
        return NULL;
    }
    p = xcalloc(1, sizeof(*p));
    p->name = xstrdup(o->name ? o->name : "workers");
    p->background = o->background;
    p->database_url = xstrdup(o->database_url);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->idle, NULL);
    p->cap = o->queue_max;
    p->ring = xcalloc(p->cap, sizeof(*p->ring));
    p->ctx = xcalloc((size_t)o->threads, sizeof(*p->ctx));
    p->nctx = o->threads;
    for (int i = 0; i < o->threads; i++) {
        worker_ctx *c = &p->ctx[i];
        c->pool = p;
        c->index = i;
        c->store = p->database_url ? pgstore_open(p->database_url) : NULL;
        if (pthread_create(&c->thread, NULL, thread_main, c) != 0) {
            err_set(err, CUT_EIO, "workers", "%s: cannot start thread %d of %d", p->name, i + 1,
                    o->threads);
            worker_pool_free(p);
            return NULL;
        }
        c->started = true;
        p->nthreads++;
    }
    return p;
}

/* Logs the refusals not reported yet, at most once a second unless forced. Outside the
 * mutex. */
static void report_refusals(worker_pool *p, bool force)
{
    uint64_t now = now_us(), full, stopping;
    size_t queued;
    bool due;

    pthread_mutex_lock(&p->mu);
    due = force || p->last_log_us == 0 || now - p->last_log_us >= 1000000;
    full = p->st.refused_full - p->logged_full;
    stopping = p->st.refused_stopping - p->logged_stopping;
    queued = p->n;
    if (due) {
        p->last_log_us = now;
        p->logged_full = p->st.refused_full;
        p->logged_stopping = p->st.refused_stopping;
    }
    pthread_mutex_unlock(&p->mu);
    if (!due || (full == 0 && stopping == 0))
        return;
    {
        char extra[160];
        snprintf(extra, sizeof(extra),
                 "\"pool\":\"%.32s\",\"refused_full\":%" PRIu64 ",\"refused_stopping\":%" PRIu64
                 ",\"queued\":%zu",
                 p->name, full, stopping, queued);
        log_line(LOG_WARN, "worker_refused",
                 full ? "jobs refused: the queue is full" : "jobs refused: the pool is stopping",
                 extra);
    }
}

bool worker_submit(worker_pool *p, worker_fn fn, void *arg)
{
    bool ok = false;

    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        p->st.refused_stopping++;
    } else if (p->n == p->cap) {
        p->st.refused_full++;
    } else {
        p->ring[(p->head + p->n) % p->cap] = (struct job){fn, arg};
        p->n++;
        p->st.submitted++;
        pthread_cond_signal(&p->work);
        ok = true;
    }
    pthread_mutex_unlock(&p->mu);
    if (!ok)
        report_refusals(p, false);
    return ok;
}

void worker_drain(worker_pool *p)
{
    pthread_mutex_lock(&p->mu);
    while ((p->n > 0 || p->running > 0) && p->nthreads > 0)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void worker_pool_stop(worker_pool *p)
{
    bool join;

    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    join = !p->joined;
    p->joined = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    if (!join)
        return;
    for (int i = 0; i < p->nthreads; i++)
        if (p->ctx[i].started)
            pthread_join(p->ctx[i].thread, NULL);
    report_refusals(p, true);
}

void worker_pool_free(worker_pool *p)
{
    if (p == NULL)
        return;
    worker_pool_stop(p);
    report_refusals(p, true); /* those refused after the stop */
    for (int i = 0; i < p->nctx; i++)
        pgstore_free(p->ctx[i].store);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p->ctx);
    free(p->ring);
    free(p->database_url);
    free(p->name);
    free(p);
}

void worker_stats_get(worker_pool *p, struct worker_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->st;
    out->queued = p->n;
    out->running = p->running;
    pthread_mutex_unlock(&p->mu);
}

pgstore *worker_store(worker_ctx *ctx)
{
    return ctx->store;
}

int worker_index(const worker_ctx *ctx)
{
    return ctx->index;
}
