/*
 * worker: a pool of threads fed by a bounded queue, for the work an event loop must not do
 * itself (a database round trip, a file sync): the loop submits a job and goes on; the job
 * runs on a worker thread, which holds its own state-store connection (worker_store()).
 *
 * Submitting never blocks: when the queue is full or the pool is stopping the job is refused,
 * and every refusal is counted (worker_stats) and logged (at most one line a second, with the
 * counts), so nothing is dropped silently; the caller learns it from the return value.
 */
#ifndef CUTOVER_WORKER_H
#define CUTOVER_WORKER_H

#include "core/core.h"
#include "storage/pgstore.h"

typedef struct worker_pool worker_pool;
/* What a job gets from the thread that runs it: valid for the duration of the job. */
typedef struct worker_ctx worker_ctx;

/* A job: runs on one of the pool's threads, with that thread's context. */
typedef void (*worker_fn)(worker_ctx *ctx, void *arg);

#define WORKER_MAX_THREADS 256
#define WORKER_MAX_QUEUE (1u << 20)

struct worker_opts {
    const char *name;         /* in log lines ("mirror"); copied */
    int threads;              /* 1..WORKER_MAX_THREADS */
    size_t queue_max;         /* jobs waiting to run, 1..WORKER_MAX_QUEUE */
    const char *database_url; /* each thread's store connects here; NULL: no store. Copied. */
    bool background;          /* background work: the threads yield a shared CPU (thread_setup()) */
};

/* Starts the threads. Returns a new pool (worker_pool_free()) or NULL with err set. */
worker_pool *worker_pool_start(const struct worker_opts *o, cut_err *err) CUT_MUST_USE;

/* Queues fn(ctx, arg). Never blocks (beyond a short mutex). Returns false when the queue is
 * full or the pool is stopping: the job will not run, arg stays the caller's, and the refusal
 * has been counted and logged. */
bool worker_submit(worker_pool *p, worker_fn fn, void *arg) CUT_MUST_USE;

/* Waits until every job queued so far (and any they queue) has run and no job is running.
 * Not from a job of the same pool. */
void worker_drain(worker_pool *p);

/* Refuses new jobs, runs every job already queued, then joins the threads. Idempotent. Not
 * from a job of the same pool. */
void worker_pool_stop(worker_pool *p);

/* Stops (as worker_pool_stop) and frees. NULL is fine. */
void worker_pool_free(worker_pool *p);

struct worker_stats {
    uint64_t submitted;        /* accepted */
    uint64_t done;             /* ran to the end */
    uint64_t refused_full;     /* refused: the queue was full */
    uint64_t refused_stopping; /* refused: the pool was stopping */
    size_t queued, running;
};
void worker_stats_get(worker_pool *p, struct worker_stats *out);

/* This thread's own store (borrowed, valid for the job; it lives as long as the thread), or
 * NULL when the pool has no database_url. It connects on first use and again after a lost
 * connection. */
pgstore *worker_store(worker_ctx *ctx);
/* The thread's index in the pool, 0..threads-1. */
int worker_index(const worker_ctx *ctx);

#endif
