/*
 * rollback: the automatic rollback of read_from_s3 (the flag auto_rollback).
 *
 * The window: ROLLBACK_BUCKETS buckets of ok and error counts, each covering `width`
 * seconds, width = ceil(window_s / ROLLBACK_BUCKETS), so the window's memory stays fixed
 * whatever window_s is and the window slides by one bucket at a time. A bucket is reused
 * when its slot's time comes round again (its counts are dropped first). Recording takes the
 * window's mutex for a few additions: callers are S3 outcome paths (the mirror's thread),
 * not event loops.
 *
 * Deciding: a thread looks at the window every ROLLBACK_TICK_MS (and at once when an error is
 * recorded). With auto_rollback.enabled, read_from_s3.percent above 0 in this replica's
 * flags, at least min_samples outcomes and errors / outcomes above max_error_rate, it calls
 * flags_store_rollback(), which writes only while the database's percent is still above 0:
 * of several replicas deciding at once, exactly one writes the flag and its audit row. The
 * window is emptied after a rollback (by this replica or another), so that figures from
 * before do not trigger again once the percentage is raised. A window over the threshold
 * while the rollback is disabled is logged once per crossing.
 */
#include "core/metrics.h"
#include "flags/flags.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROLLBACK_BUCKETS 60
#define ROLLBACK_TICK_MS 100
#define ROLLBACK_KINDS 4

struct bucket {
    int64_t slot; /* now_s / width when last used; -1: empty */
    uint64_t ok, errors;
};

struct flags_rollback {
    flags_store *fs;
    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;
    bool stop, kicked;
    int width; /* seconds per bucket */
    int window_s;
    struct bucket b[ROLLBACK_BUCKETS];
    /* errors per kind since the window was last emptied, for the audit row's reason */
    const char *kinds[ROLLBACK_KINDS];
    uint64_t kind_errors[ROLLBACK_KINDS];
    bool warned;       /* over the threshold while disabled: logged */
    uint64_t retry_at; /* us: after a failed write, no new try before */
    pthread_t thread;
};

static int64_t now_s(void)
{
    return (int64_t)(now_us() / 1000000u);
}

/* Under mu. */
static void empty_window(flags_rollback *rb)
{
    for (int i = 0; i < ROLLBACK_BUCKETS; i++)
        rb->b[i] = (struct bucket){.slot = -1};
    memset(rb->kind_errors, 0, sizeof(rb->kind_errors));
    rb->warned = false;
}

/* Under mu: the window follows window_s (a change empties it). */
static void set_window(flags_rollback *rb, int window_s)
{
    if (window_s == rb->window_s)
        return;
    rb->window_s = window_s;
    rb->width = (window_s + ROLLBACK_BUCKETS - 1) / ROLLBACK_BUCKETS;
    if (rb->width < 1)
        rb->width = 1;
    empty_window(rb);
}

/* Under mu: the totals over the buckets still inside the window. */
static void totals(const flags_rollback *rb, uint64_t *ok, uint64_t *errors)
{
    int64_t cur = now_s() / rb->width;
    *ok = *errors = 0;
    for (int i = 0; i < ROLLBACK_BUCKETS; i++)
        if (rb->b[i].slot >= 0 && cur - rb->b[i].slot < ROLLBACK_BUCKETS) {
            *ok += rb->b[i].ok;
            *errors += rb->b[i].errors;
        }
}

void flags_rollback_record(flags_rollback *rb, bool ok, const char *kind)
{
    if (rb == NULL)
        return;
    pthread_mutex_lock(&rb->mu);
    int64_t slot = now_s() / rb->width;
    struct bucket *b = &rb->b[slot % ROLLBACK_BUCKETS];
    if (b->slot != slot)
        *b = (struct bucket){.slot = slot};
    if (ok) {
        b->ok++;
    } else {
        b->errors++;
        for (int i = 0; i < ROLLBACK_KINDS; i++)
            if (rb->kinds[i] == NULL || strcmp(rb->kinds[i], kind ? kind : "s3") == 0) {
                rb->kinds[i] = kind ? kind : "s3";
                rb->kind_errors[i]++;
                break;
            }
        rb->kicked = true;
        pthread_cond_signal(&rb->cv);
    }
    pthread_mutex_unlock(&rb->mu);
}

void flags_rollback_outcome(void *arg, bool ok, const char *kind)
{
    flags_rollback_record(arg, ok, kind);
}

/* Under mu: the reason text of a rollback (new string). */
static char *reason_text(const flags_rollback *rb, uint64_t ok, uint64_t errors,
                         const struct flags_auto_rollback *ar)
{
    char kinds[256] = "";
    size_t k = 0;
    for (int i = 0; i < ROLLBACK_KINDS && rb->kinds[i]; i++)
        if (rb->kind_errors[i] && k < sizeof(kinds))
            k += (size_t)snprintf(kinds + k, sizeof(kinds) - k, "%s%s %llu", k ? ", " : "",
                                  rb->kinds[i], (unsigned long long)rb->kind_errors[i]);
    return xasprintf("S3 error rate %.4f over the last %d s (%llu errors of %llu outcomes; %s) "
                     "above max_error_rate %.4f with min_samples %d: read_from_s3.percent set "
                     "to 0",
                     (double)errors / (double)(ok + errors), ar->window_s,
                     (unsigned long long)errors, (unsigned long long)(ok + errors),
                     kinds[0] ? kinds : "no kinds", ar->max_error_rate, ar->min_samples);
}

static void *rollback_main(void *arg)
{
    flags_rollback *rb = arg;

    thread_setup("rollback", false);
    pthread_mutex_lock(&rb->mu);
    while (!rb->stop) {
        struct timespec ts;
        flags_snapshot *s;
        struct flags_auto_rollback ar;
        uint64_t ok, errors;
        double percent;

        if (!rb->kicked) {
            deadline_after_ms(&ts, ROLLBACK_TICK_MS);
            pthread_cond_timedwait(&rb->cv, &rb->mu, &ts);
        }
        rb->kicked = false;
        if (rb->stop)
            break;
        pthread_mutex_unlock(&rb->mu);
        s = flags_store_current(rb->fs);
        ar = flags_auto_rollback(s);
        percent = flags_read_percent(s);
        flags_snapshot_unref(s);
        pthread_mutex_lock(&rb->mu);
        set_window(rb, ar.window_s);
        totals(rb, &ok, &errors);
        if (ok + errors < (uint64_t)ar.min_samples ||
            (double)errors <= ar.max_error_rate * (double)(ok + errors)) {
            rb->warned = false;
            continue;
        }
        if (now_us() < rb->retry_at)
            continue;
        if (!ar.enabled || percent <= 0) {
            if (!rb->warned)
                log_msgf(LOG_WARN, "auto_rollback",
                         "S3 error rate over the threshold (%llu errors of %llu), no rollback: "
                         "%s",
                         (unsigned long long)errors, (unsigned long long)(ok + errors),
                         !ar.enabled ? "auto_rollback is disabled" : "read_from_s3.percent is 0");
            rb->warned = true;
            continue;
        }
        char *reason = reason_text(rb, ok, errors, &ar);
        bool done = false;
        cut_err err = CUT_ERR_INIT;
        pthread_mutex_unlock(&rb->mu);
        if (flags_store_rollback(rb->fs, reason, &done, &err) != 0)
            log_msgf(LOG_ERROR, "auto_rollback", "rollback not written (retried): %s", err.msg);
        else if (done) {
            metrics_inc(MET_ROLLBACKS, 0, 0);
            log_msgf(LOG_ERROR, "auto_rollback", "rolled back: %s", reason);
        } else
            log_msgf(LOG_WARN, "auto_rollback",
                     "over the threshold, but read_from_s3.percent is 0 already (another replica "
                     "rolled back)");
        free(reason);
        pthread_mutex_lock(&rb->mu);
        if (!err_isset(&err))
            empty_window(rb);
        else
            rb->retry_at = now_us() + 2000000u;
    }
    pthread_mutex_unlock(&rb->mu);
    return NULL;
}

flags_rollback *flags_rollback_start(flags_store *fs, cut_err *err)
{
    flags_rollback *rb = xcalloc(1, sizeof(*rb));
    flags_snapshot *s = flags_store_current(fs);

    rb->fs = fs;
    pthread_mutex_init(&rb->mu, NULL);
    pthread_cond_init(&rb->cv, NULL);
    set_window(rb, flags_auto_rollback(s).window_s);
    flags_snapshot_unref(s);
    if (pthread_create(&rb->thread, NULL, rollback_main, rb) != 0) {
        err_set(err, CUT_EIO, "auto_rollback", "cannot start the rollback thread");
        pthread_mutex_destroy(&rb->mu);
        pthread_cond_destroy(&rb->cv);
        free(rb);
        return NULL;
    }
    return rb;
}

void flags_rollback_free(flags_rollback *rb)
{
    if (rb == NULL)
        return;
    pthread_mutex_lock(&rb->mu);
    rb->stop = true;
    pthread_cond_signal(&rb->cv);
    pthread_mutex_unlock(&rb->mu);
    pthread_join(rb->thread, NULL);
    pthread_mutex_destroy(&rb->mu);
    pthread_cond_destroy(&rb->cv);
    free(rb);
}
