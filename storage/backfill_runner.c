/*
 * backfill_runner: a backfill on a thread of its own, driven by start/pause/resume (see
 * backfill_runner.h).
 *
 * The thread is a small loop around one state. Running: read one batch of the source (while
 * the documents/s bucket is not in debt) and enqueue it, or, once the source is read, look
 * whether any backfill document is still to copy; when none is and the mirror has nothing
 * in flight, check the copies a killed copier left `copied` and end `done`. Between steps it
 * waits on its condition variable (at most 200 ms), so a control call is seen at once.
 * Paused: the mirror is stopped (its copies in flight end and are recorded) and the thread
 * waits. Every second it counts the backfill's documents per state (one query) into a
 * snapshot under the lock, which backfill_runner_progress() reads: the admin port never
 * waits on the database for it.
 *
 * The transfer engine is the runner's own (a thread and a libcurl multi handle), so its
 * documents/s and bytes/s limits and its backoff after the legacy store's 429/503 apply to
 * the backfill's copies only, never to dual-write's.
 */
#include "storage/backfill_runner.h"
#include "storage/mirror.h"
#include "storage/pgstore.h"
#include "storage/xfer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUNNER_BATCH 500
#define RUNNER_STEP_MS 200
#define RUNNER_COUNT_EVERY_US 1000000u

enum want { W_NONE, W_START, W_PAUSE, W_RESUME, W_QUIT };

struct backfill_runner {
    struct backfill_runner_opts o;
    char *owner;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;

    /* guarded by mu */
    enum backfill_state state;
    enum want want;
    struct pgstore_origin_counts counts;
    bool have_counts, source_done;
    uint64_t enqueued;
    int64_t start_done, start_bytes;
    uint64_t start_us;
    char error[512];
    struct xfer_stats xs;

    /* the runner's thread only */
    pgstore *st;
    xfer_engine *engine;
    mirror *mirror;
    backfill_source *src;
    struct backfill_row *rows;
    size_t batch;
    struct backfill_bucket bucket;
    struct backfill_enqueued enq;
    uint64_t last_count_us;
    int settle_rounds;
};

const char *backfill_state_name(enum backfill_state s)
{
    switch (s) {
    case BF_IDLE:
        return "idle";
    case BF_RUNNING:
        return "running";
    case BF_PAUSED:
        return "paused";
    case BF_DONE:
        return "done";
    case BF_FAILED:
        return "failed";
    }
    return "unknown";
}

static int64_t finished(const struct pgstore_origin_counts *c)
{
    return c->counts[DOC_VERIFIED] + c->counts[DOC_ACTIVE] + c->counts[DOC_FAILED] +
           c->counts[DOC_DELETED];
}

static void set_state(backfill_runner *r, enum backfill_state s, const char *error)
{
    pthread_mutex_lock(&r->mu);
    r->state = s;
    if (error)
        snprintf(r->error, sizeof(r->error), "%s", error);
    pthread_mutex_unlock(&r->mu);
    if (error)
        log_msgf(LOG_ERROR, "backfill", "the backfill stopped: %s", error);
    else
        log_msgf(LOG_INFO, "backfill", "backfill %s", backfill_state_name(s));
}

/* Counts the backfill's documents into the snapshot (at most once a second unless force). */
static void count(backfill_runner *r, bool force)
{
    struct pgstore_origin_counts c;
    cut_err err = CUT_ERR_INIT;
    uint64_t now = now_us();

    if (!force && now - r->last_count_us < RUNNER_COUNT_EVERY_US)
        return;
    r->last_count_us = now;
    if (pgstore_count_origin(r->st, "backfill", &c, &err) != 0) {
        log_msgf(LOG_WARN, "backfill", "cannot count the progress: %s", err.msg);
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->counts = c;
    r->have_counts = true;
    r->enqueued = r->enq.inserted;
    if (r->engine)
        xfer_engine_stats(r->engine, &r->xs);
    pthread_mutex_unlock(&r->mu);
}

static void stop_mirror(backfill_runner *r)
{
    mirror_free(r->mirror); /* copies in flight end and are recorded */
    r->mirror = NULL;
}

static bool start_mirror(backfill_runner *r, cut_err *err)
{
    const struct config *cfg = r->o.cfg;
    struct mirror_opts mo = {
        .database_url = cfg->database_url,
        .owner = r->owner,
        .max_inflight = cfg->backfill.concurrency,
        .lease_ms = cfg->workers.lease_s * 1000,
        .origin = "backfill",
        .max_attempts = cfg->workers.max_attempts,
        .max_backoff_ms = cfg->workers.max_backoff_s * 1000,
        .poll_ms = 500,
    };
    if (r->mirror)
        return true;
    r->mirror = mirror_start(&mo, r->o.s3, r->engine, r->o.legacy, err);
    return r->mirror != NULL;
}

/* A new pass: the source opened again, the counters of this pass reset. */
static bool begin(backfill_runner *r, cut_err *err)
{
    const struct config *cfg = r->o.cfg;
    double rate = cfg->backfill.rate;

    backfill_source_free(r->src);
    r->src = NULL;
    r->batch = RUNNER_BATCH;
    /* a batch is at most one second's worth, so that documents enter the queue smoothly */
    if (rate > 0 && (double)r->batch > rate)
        r->batch = rate < 1 ? 1 : (size_t)rate;
    r->src = backfill_source_open(&cfg->backfill, cfg->database_url, r->batch, err);
    if (!r->src)
        return false;
    memset(&r->enq, 0, sizeof(r->enq));
    r->settle_rounds = 0;
    backfill_bucket_init(&r->bucket, rate, now_us());
    xfer_engine_set_legacy_limits(r->engine, rate, cfg->backfill.rate_bytes);
    xfer_engine_set_buffer_budget(r->engine, BACKFILL_BUFFER_BUDGET);
    if (!start_mirror(r, err))
        return false;
    count(r, true);
    pthread_mutex_lock(&r->mu);
    r->source_done = false;
    r->start_done = r->have_counts ? finished(&r->counts) : 0;
    r->start_bytes = r->have_counts ? r->counts.done_bytes : 0;
    r->start_us = now_us();
    r->error[0] = '\0';
    pthread_mutex_unlock(&r->mu);
    return true;
}

/* A bad row of the source goes to the log (the sidecar has no terminal to print it on). */
static void log_bad_row(void *arg, const char *source, const struct backfill_row *row)
{
    (void)arg;
    log_msgf(LOG_WARN, "backfill", "%s:%ld: %s", source, row->line, row->error);
}

/* One step of a running pass. Returns 1 to go on, 0 when the pass is done, -1 with err set
 * when it failed. *idle: nothing was done, wait a little. */
static int step(backfill_runner *r, bool *idle, cut_err *err)
{
    bool source_done;

    *idle = false;
    pthread_mutex_lock(&r->mu);
    source_done = r->source_done;
    pthread_mutex_unlock(&r->mu);
    if (!source_done) {
        size_t n = 0, inserted = 0;
        if (backfill_bucket_wait_us(&r->bucket, now_us()) > 0) {
            *idle = true;
            return 1;
        }
        if (backfill_enqueue_page(r->src, r->st, r->rows, r->batch, r->o.key_of, r->o.key_arg,
                                  log_bad_row, NULL, &r->bucket, &r->enq, &n, &inserted, err) != 0)
            return -1;
        if (n == 0) {
            pthread_mutex_lock(&r->mu);
            r->source_done = true;
            pthread_mutex_unlock(&r->mu);
            return 1;
        }
        if (inserted > 0)
            mirror_kick(r->mirror);
        return 1;
    }
    /* the source is read: wait for the queue to drain, then settle interrupted copies */
    struct mirror_stats ms;
    bool busy;
    if (pgstore_origin_busy(r->st, "backfill", &busy, err) != 0)
        return -1;
    mirror_stats_get(r->mirror, &ms);
    if (busy || ms.inflight > 0) {
        *idle = true;
        return 1;
    }
    size_t nv = 0, nm = 0;
    if (backfill_settle_copied(r->st, r->o.s3, "backfill", &nv, &nm, err) != 0)
        return -1;
    if (nm > 0 && ++r->settle_rounds < 3) {
        mirror_kick(r->mirror);
        return 1;
    }
    return 0;
}

static void *runner_main(void *arg)
{
    backfill_runner *r = arg;

    thread_setup("backfill", false);
    for (;;) {
        enum want w;
        enum backfill_state s;
        cut_err err = CUT_ERR_INIT;

        pthread_mutex_lock(&r->mu);
        w = r->want;
        r->want = W_NONE;
        s = r->state;
        pthread_mutex_unlock(&r->mu);

        if (w == W_QUIT)
            break;
        if (w == W_START && s != BF_RUNNING && s != BF_PAUSED) {
            if (!begin(r, &err)) {
                stop_mirror(r);
                set_state(r, BF_FAILED, err.msg);
                continue;
            }
            set_state(r, BF_RUNNING, NULL);
            s = BF_RUNNING;
        } else if (w == W_PAUSE && s == BF_RUNNING) {
            stop_mirror(r);
            set_state(r, BF_PAUSED, NULL);
            s = BF_PAUSED;
        } else if (w == W_RESUME && s == BF_PAUSED) {
            if (!start_mirror(r, &err)) {
                set_state(r, BF_FAILED, err.msg);
                continue;
            }
            set_state(r, BF_RUNNING, NULL);
            s = BF_RUNNING;
        }

        bool idle = true;
        if (s == BF_RUNNING) {
            int rc = step(r, &idle, &err);
            if (rc <= 0) {
                stop_mirror(r);
                count(r, true);
                set_state(r, rc == 0 ? BF_DONE : BF_FAILED, rc == 0 ? NULL : err.msg);
                continue;
            }
        }
        if (s == BF_RUNNING || s == BF_PAUSED)
            count(r, false);
        if (!idle)
            continue;
        pthread_mutex_lock(&r->mu);
        if (r->want == W_NONE) {
            struct timespec ts;
            if (s == BF_RUNNING || s == BF_PAUSED) {
                deadline_after_ms(&ts, RUNNER_STEP_MS);
                pthread_cond_timedwait(&r->cv, &r->mu, &ts);
            } else {
                pthread_cond_wait(&r->cv, &r->mu);
            }
        }
        pthread_mutex_unlock(&r->mu);
    }
    stop_mirror(r);
    return NULL;
}

backfill_runner *backfill_runner_new(const struct backfill_runner_opts *o, cut_err *err)
{
    backfill_runner *r;
    const struct config *cfg = o ? o->cfg : NULL;

    if (!cfg || cfg->backfill.kind == BACKFILL_NONE || !cfg->database_url || !o->s3 || !o->legacy ||
        !o->key_of) {
        err_set(err, CUT_EINVAL, "backfill",
                "a backfill needs backfill.source, database_url, s3 and legacy.raw_url");
        return NULL;
    }
    r = xcalloc(1, sizeof(*r));
    r->o = *o;
    r->owner = o->owner ? xstrdup(o->owner) : xasprintf("backfill:%ld", (long)getpid());
    r->o.owner = r->owner;
    r->rows = xcalloc(BACKFILL_MAX_PAGE, sizeof(*r->rows));
    r->st = pgstore_open(cfg->database_url);
    struct xfer_engine_opts eo = {.max_active = 2 * cfg->backfill.concurrency + 4};
    r->engine = xfer_engine_new(o->s3, &eo, err);
    if (!r->engine)
        goto fail;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (pthread_create(&r->th, NULL, runner_main, r) != 0) {
        err_set(err, CUT_EIO, "backfill", "cannot start the backfill thread");
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        goto fail;
    }
    return r;
fail:
    xfer_engine_free(r->engine);
    pgstore_free(r->st);
    free(r->rows);
    free(r->owner);
    free(r);
    return NULL;
}

void backfill_runner_free(backfill_runner *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->want = W_QUIT;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->th, NULL);
    xfer_engine_free(r->engine);
    backfill_source_free(r->src);
    pgstore_free(r->st);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->rows);
    free(r->owner);
    free(r);
}

int backfill_runner_control(backfill_runner *r, const char *action, enum backfill_state *now,
                            cut_err *err)
{
    enum want w;
    enum backfill_state to;
    int rc = -1;

    if (strcmp(action, "start") == 0)
        w = W_START;
    else if (strcmp(action, "pause") == 0)
        w = W_PAUSE;
    else if (strcmp(action, "resume") == 0)
        w = W_RESUME;
    else {
        err_set(err, CUT_EINVAL, "backfill", "unknown action: use start, pause or resume");
        return -1;
    }
    pthread_mutex_lock(&r->mu);
    /* a command not yet taken by the thread decides what the state will be */
    enum backfill_state s = r->want == W_START    ? BF_RUNNING
                            : r->want == W_PAUSE  ? BF_PAUSED
                            : r->want == W_RESUME ? BF_RUNNING
                                                  : r->state;
    *now = s;
    switch (w) {
    case W_START:
        to = s == BF_PAUSED ? BF_PAUSED : BF_RUNNING;
        if (s != BF_RUNNING && s != BF_PAUSED)
            r->want = W_START;
        break;
    case W_PAUSE:
        if (s != BF_RUNNING) {
            err_set(err, CUT_ECONFLICT, "backfill", "the backfill is %s: only a running one pauses",
                    backfill_state_name(s));
            goto out;
        }
        to = BF_PAUSED;
        r->want = W_PAUSE;
        break;
    default:
        if (s != BF_PAUSED) {
            err_set(err, CUT_ECONFLICT, "backfill", "the backfill is %s: only a paused one resumes",
                    backfill_state_name(s));
            goto out;
        }
        to = BF_RUNNING;
        r->want = W_RESUME;
        break;
    }
    *now = to;
    pthread_cond_signal(&r->cv);
    rc = 0;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

json_t *backfill_runner_progress(backfill_runner *r)
{
    json_t *o;
    struct pgstore_origin_counts c;
    struct xfer_stats xs;
    bool have, source_done;
    double secs = 0;
    int64_t done_run, bytes_run;
    enum backfill_state s;
    char error[512];
    uint64_t enqueued;

    pthread_mutex_lock(&r->mu);
    c = r->counts;
    have = r->have_counts;
    source_done = r->source_done;
    s = r->state;
    xs = r->xs;
    enqueued = r->enqueued;
    memcpy(error, r->error, sizeof(error));
    if (r->start_us)
        secs = (double)(now_us() - r->start_us) / 1e6;
    done_run = have ? finished(&c) - r->start_done : 0;
    bytes_run = have ? c.done_bytes - r->start_bytes : 0;
    pthread_mutex_unlock(&r->mu);
    if (!have)
        memset(&c, 0, sizeof(c));
    if (s == BF_IDLE)
        done_run = bytes_run = 0;
    double rate = secs > 0 ? (double)done_run / secs : 0;
    double brate = secs > 0 ? (double)bytes_run / secs : 0;
    int64_t left = c.total - finished(&c);
    o = json_object();
    json_object_set_new(o, "state", json_string(backfill_state_name(s)));
    json_object_set_new(o, "total", json_integer(c.total));
    json_object_set_new(o, "done", json_integer(finished(&c)));
    json_object_set_new(o, "verified", json_integer(c.counts[DOC_VERIFIED] + c.counts[DOC_ACTIVE]));
    json_object_set_new(o, "failed", json_integer(c.counts[DOC_FAILED]));
    json_object_set_new(o, "pending",
                        json_integer(c.counts[DOC_PENDING] + c.counts[DOC_MISMATCH] + c.settling));
    json_object_set_new(o, "enqueued", json_integer((json_int_t)enqueued));
    json_object_set_new(o, "source_done", json_boolean(source_done));
    json_object_set_new(o, "bytes", json_integer(bytes_run));
    json_object_set_new(o, "docs_per_s", json_real(rate));
    json_object_set_new(o, "bytes_per_s", json_real(brate));
    json_object_set_new(o, "eta_s",
                        s == BF_DONE                           ? json_real(0)
                        : source_done && rate > 0 && left >= 0 ? json_real((double)left / rate)
                                                               : json_null());
    json_object_set_new(o, "elapsed_s", json_real(secs));
    json_object_set_new(o, "rate", json_real(r->o.cfg->backfill.rate));
    json_object_set_new(o, "rate_bytes", json_real(r->o.cfg->backfill.rate_bytes));
    json_object_set_new(o, "legacy_throttled", json_integer((json_int_t)xs.throttled));
    json_object_set_new(o, "legacy_hold_ms", json_integer((json_int_t)xs.hold_ms));
    json_object_set_new(o, "error", error[0] ? json_string(error) : json_null());
    return o;
}
