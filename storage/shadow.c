/*
 * shadow: shadow reads' compares (see shadow.h for what they find and how they are bounded).
 *
 * A compare goes through three threads, none of them an event loop:
 *   1. shadow_submit() (the caller's thread, a proxy loop): takes a slot with a compare and
 *      swap on the in-flight count (over `concurrency`: skipped "busy") and queues the compare
 *      on the worker thread. Nothing else: no lock but the worker queue's short mutex.
 *   2. the worker (a thread with its own state-store connection): reads the document's row
 *      (state, S3 key, recorded size and SHA-256), skips what is not copied yet, charges the
 *      token bucket the recorded size (empty: skipped "rate"), presigns a GET for the S3 key
 *      and submits both fetches to the engine.
 *   3. the engine's thread: each fetch's completion notes status, bytes, SHA-256 and latency;
 *      the second one classifies, counts, feeds the rollback window and, for a difference,
 *      queues the row's insert on the worker; then the slot is given back.
 * The engine is this module's own (at most 2 × concurrency transfers), so shadow fetches
 * never take a turn from the mirror's copies, and it has no S3 client: both fetches are plain
 * GETs of URLs that carry their own authorisation (XFER_SRC_URL), the S3 one being exactly the
 * kind of presigned URL the rewrite hands to clients, so a signing fault shows up here first.
 *
 * Counts go to this value's stats (GET /admin/shadow) and to /metrics
 * (cutover_shadow_compares_total, cutover_shadow_mismatches_total{class},
 * cutover_shadow_skipped_total{reason}: the label values are these enums' names in order).
 *
 * Each fetch has a ceiling of twice the recorded size plus 1 MiB (a delivery larger than that
 * is a failed fetch, not a stream to follow forever) and the timeout. URLs live only in the
 * compare (freed with it) and in the engine's request; no log line, message or row holds one.
 */
#include "storage/shadow.h"

#include "core/metrics.h"
#include "storage/pgstore.h"
#include "storage/worker.h"
#include "storage/xfer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SHADOW_URLBUF 16384

struct side {
    bool done, ok;    /* the fetch ended; with a 2xx answer read whole */
    long status;      /* 0: no answer */
    uint64_t bytes;   /* body bytes received */
    char sha256[65];  /* hex, when ok */
    const char *fail; /* short name of the failure (static), or NULL */
    uint64_t start_us, us;
};

struct compare {
    shadow *sh;
    char *key, *url; /* url: the legacy delivery URL (a credential) */
    char s3_url[SHADOW_URLBUF];
    char expected_sha256[65];
    int64_t expected_size;
    atomic_int pending; /* fetches still running */
    struct side legacy, s3;
    enum shadow_class cls;
};

struct shadow {
    s3_client *s3;
    char *replica;
    int concurrency, timeout_s;
    uint64_t bytes_per_s;
    void (*outcome)(void *arg, bool ok, const char *kind);
    void *outcome_arg;
    worker_pool *workers;
    xfer_engine *engine;
    atomic_bool stopping;
    atomic_int in_flight, peak;

    pthread_mutex_t mu; /* the token bucket */
    double tokens;
    uint64_t refill_us;

    atomic_uint_fast64_t requested, compares, matches, recorded, record_failed;
    atomic_uint_fast64_t mismatches[SHADOW_NCLASSES], skipped[SHADOW_NSKIPS];
    atomic_uint_fast64_t legacy_us_sum, legacy_us_max, legacy_fetches;
    atomic_uint_fast64_t s3_us_sum, s3_us_max, s3_fetches;
};

static const char *const class_names[SHADOW_NCLASSES] = {"s3", "legacy_transformed", "both",
                                                         "s3_error", "legacy_error"};
static const char *const skip_names[SHADOW_NSKIPS] = {"busy",    "rate",   "not_copied",
                                                      "unknown", "no_url", "error"};

const char *shadow_class_name(enum shadow_class c)
{
    return (unsigned)c < SHADOW_NCLASSES ? class_names[c] : "?";
}

const char *shadow_skip_name(enum shadow_skip s)
{
    return (unsigned)s < SHADOW_NSKIPS ? skip_names[s] : "?";
}

bool shadow_class_is_s3_fault(enum shadow_class c)
{
    return c == SHADOW_S3 || c == SHADOW_BOTH || c == SHADOW_S3_ERROR;
}

static void skip(shadow *sh, enum shadow_skip why)
{
    atomic_fetch_add_explicit(&sh->skipped[why], 1, memory_order_relaxed);
    metrics_inc(MET_SHADOW_SKIPPED, (unsigned)why, 0);
}

static void compare_free(struct compare *c)
{
    if (!c)
        return;
    free(c->key);
    free(c->url);
    free(c);
}

/* The compare is over (counted or not): its slot goes back. */
static void release(struct compare *c)
{
    atomic_fetch_sub(&c->sh->in_flight, 1);
    compare_free(c);
}

static void max_store(atomic_uint_fast64_t *m, uint64_t v)
{
    uint64_t cur = atomic_load(m);
    while (v > cur && !atomic_compare_exchange_weak(m, &cur, v))
        ;
}

/* ---- the worker: lookup, bucket, presign, fetches ------------------------------------------ */

/* Takes n bytes from the bucket; false (nothing taken) when it is empty. The bucket holds one
 * second of bytes at most and may go below zero by one admission (a document larger than the
 * burst is still fetched, and the next ones wait for the debt to be paid). */
static bool bucket_take(shadow *sh, uint64_t n)
{
    bool ok = false;
    uint64_t now = now_us();

    pthread_mutex_lock(&sh->mu);
    sh->tokens += (double)(now - sh->refill_us) * (double)sh->bytes_per_s / 1e6;
    if (sh->tokens > (double)sh->bytes_per_s)
        sh->tokens = (double)sh->bytes_per_s;
    sh->refill_us = now;
    if (sh->tokens > 0) {
        sh->tokens -= (double)n;
        ok = true;
    }
    pthread_mutex_unlock(&sh->mu);
    return ok;
}

static void record_job(worker_ctx *ctx, void *arg);

/* Engine thread: the second fetch to end decides. */
static void finish(struct compare *c)
{
    shadow *sh = c->sh;
    bool s3_same, legacy_same, mismatch = true;

    if (atomic_load(&sh->stopping)) {
        release(c); /* the engine stopped under it: not a finding */
        return;
    }
    s3_same = c->s3.ok && strcasecmp(c->s3.sha256, c->expected_sha256) == 0 &&
              (c->expected_size < 0 || c->s3.bytes == (uint64_t)c->expected_size);
    legacy_same = c->legacy.ok && strcasecmp(c->legacy.sha256, c->expected_sha256) == 0 &&
                  (c->expected_size < 0 || c->legacy.bytes == (uint64_t)c->expected_size);
    if (!c->s3.ok)
        c->cls = SHADOW_S3_ERROR;
    else if (!s3_same && c->legacy.ok && !legacy_same)
        c->cls = SHADOW_BOTH;
    else if (!s3_same)
        c->cls = SHADOW_S3;
    else if (!c->legacy.ok)
        c->cls = SHADOW_LEGACY_ERROR;
    else if (!legacy_same)
        c->cls = SHADOW_LEGACY_TRANSFORMED;
    else
        mismatch = false;

    atomic_fetch_add(&sh->compares, 1);
    metrics_inc(MET_SHADOW_COMPARES, 0, 0);
    atomic_fetch_add(&sh->legacy_us_sum, c->legacy.us);
    atomic_fetch_add(&sh->legacy_fetches, 1);
    max_store(&sh->legacy_us_max, c->legacy.us);
    atomic_fetch_add(&sh->s3_us_sum, c->s3.us);
    atomic_fetch_add(&sh->s3_fetches, 1);
    max_store(&sh->s3_us_max, c->s3.us);
    if (sh->outcome)
        sh->outcome(sh->outcome_arg, !mismatch || !shadow_class_is_s3_fault(c->cls), "shadow");
    if (!mismatch) {
        atomic_fetch_add(&sh->matches, 1);
        release(c);
        return;
    }
    atomic_fetch_add(&sh->mismatches[c->cls], 1);
    metrics_inc(MET_SHADOW_MISMATCHES, (unsigned)c->cls, 0);
    log_msgf(LOG_WARN, "shadow_mismatch",
             "%s: %s (original %lld bytes; legacy: HTTP %ld, %llu bytes%s%s; S3: HTTP %ld, %llu "
             "bytes%s%s)",
             c->key, shadow_class_name(c->cls), (long long)c->expected_size, c->legacy.status,
             (unsigned long long)c->legacy.bytes, c->legacy.fail ? ", " : "",
             c->legacy.fail ? c->legacy.fail : "", c->s3.status, (unsigned long long)c->s3.bytes,
             c->s3.fail ? ", " : "", c->s3.fail ? c->s3.fail : "");
    /* the row is written by the worker; the slot is held until then, so the bound covers it */
    free(c->url);
    c->url = NULL;
    memset(c->s3_url, 0, sizeof(c->s3_url));
    if (!worker_submit(sh->workers, record_job, c)) {
        atomic_fetch_add(&sh->record_failed, 1);
        release(c);
    }
}

static void fetch_done(struct compare *c, struct side *s, const struct xfer_outcome *o,
                       const cut_err *err)
{
    s->us = now_us() - s->start_us;
    s->status = o->legacy.status;
    s->bytes = o->legacy.bytes;
    s->ok = !err_isset(err) && o->hashed;
    if (s->ok) {
        for (int i = 0; i < 32; i++)
            snprintf(s->sha256 + 2 * i, 3, "%02x", o->sha256[i]);
    } else {
        s->fail = o->legacy.fail != LEGACY_OK ? legacy_fail_name(o->legacy.fail)
                  : err->code == CUT_EIO      ? "stopped"
                                              : "failed";
    }
    s->done = true;
    if (atomic_fetch_sub(&c->pending, 1) == 1)
        finish(c);
}

static void legacy_done(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    struct compare *c = arg;
    fetch_done(c, &c->legacy, o, err);
}

static void s3_done(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    struct compare *c = arg;
    fetch_done(c, &c->s3, o, err);
}

/* Submits one fetch; a refusal ends that side at once as failed. */
static void start_fetch(struct compare *c, struct side *s, const char *url, xfer_done_fn done)
{
    shadow *sh = c->sh;
    cut_err err = CUT_ERR_INIT;
    uint64_t size = c->expected_size > 0 ? (uint64_t)c->expected_size : 0;
    struct xfer_src src = {
        .kind = XFER_SRC_URL,
        .key = c->key,
        .url = url,
        .timeout_s = sh->timeout_s,
        .max_bytes = 2 * size + (1u << 20),
    };
    struct xfer_sink sink = {.kind = XFER_SINK_CALLBACK};
    struct xfer_outcome none = {0};

    s->start_us = now_us();
    if (xfer_copy(sh->engine, &src, &sink, done, c, &err) != 0) {
        log_msgf(LOG_DEBUG, "shadow", "%s: fetch not started: %s", c->key, err.msg);
        done(c, &none, &err);
    }
}

static void lookup_job(worker_ctx *ctx, void *arg)
{
    struct compare *c = arg;
    shadow *sh = c->sh;
    struct pgstore_doc d = {0};
    cut_err err = CUT_ERR_INIT;
    long n;

    if (atomic_load(&sh->stopping)) {
        release(c);
        return;
    }
    if (pgstore_doc_get(worker_store(ctx), c->key, &d, &err) != 0) {
        if (err.code == CUT_ENOTFOUND) {
            skip(sh, SHADOW_SKIP_UNKNOWN);
        } else {
            log_msgf(LOG_DEBUG, "shadow", "%s: state not read: %s", c->key, err.msg);
            skip(sh, SHADOW_SKIP_ERROR);
        }
        goto drop;
    }
    if ((d.state != DOC_VERIFIED && d.state != DOC_ACTIVE) || !d.sha256 || strlen(d.sha256) != 64) {
        skip(sh, SHADOW_SKIP_NOT_COPIED);
        goto drop;
    }
    if (!bucket_take(sh, d.size > 0 ? (uint64_t)d.size : 0)) {
        skip(sh, SHADOW_SKIP_RATE);
        goto drop;
    }
    n = s3_presign(sh->s3, "GET", d.s3_key, sh->timeout_s + 60, 0, c->s3_url, sizeof(c->s3_url),
                   &err);
    if (n < 0) {
        log_msgf(LOG_WARN, "shadow", "%s: no presigned URL: %s", c->key, err.msg);
        skip(sh, SHADOW_SKIP_ERROR);
        goto drop;
    }
    memcpy(c->expected_sha256, d.sha256, 65);
    c->expected_size = d.size;
    pgstore_doc_clear(&d);
    atomic_init(&c->pending, 2);
    start_fetch(c, &c->legacy, c->url, legacy_done);
    start_fetch(c, &c->s3, c->s3_url, s3_done); /* c may be gone after this call */
    return;
drop:
    pgstore_doc_clear(&d);
    release(c);
}

static const char *hex_or_null(const struct side *s)
{
    return s->ok ? s->sha256 : NULL;
}

static void record_job(worker_ctx *ctx, void *arg)
{
    struct compare *c = arg;
    shadow *sh = c->sh;
    cut_err err = CUT_ERR_INIT;
    struct pgstore_shadow_row r = {
        .storage_key = c->key,
        .class_name = shadow_class_name(c->cls),
        .expected_sha256 = c->expected_sha256,
        .expected_size = c->expected_size,
        .legacy_status = (int)c->legacy.status,
        .legacy_size = c->legacy.status ? (int64_t)c->legacy.bytes : -1,
        .legacy_sha256 = hex_or_null(&c->legacy),
        .legacy_ms = (double)c->legacy.us / 1000.0,
        .legacy_error = c->legacy.fail,
        .s3_status = (int)c->s3.status,
        .s3_size = c->s3.status ? (int64_t)c->s3.bytes : -1,
        .s3_sha256 = hex_or_null(&c->s3),
        .s3_ms = (double)c->s3.us / 1000.0,
        .s3_error = c->s3.fail,
        .replica = sh->replica,
    };

    if (pgstore_shadow_record(worker_store(ctx), &r, &err) == 0) {
        atomic_fetch_add(&sh->recorded, 1);
    } else {
        atomic_fetch_add(&sh->record_failed, 1);
        log_msgf(LOG_WARN, "shadow", "%s: mismatch not recorded: %s", c->key, err.msg);
    }
    release(c);
}

/* ---- the value ---------------------------------------------------------------------------- */

bool shadow_submit(shadow *sh, const char *key, const char *url)
{
    struct compare *c;
    int cur;

    atomic_fetch_add_explicit(&sh->requested, 1, memory_order_relaxed);
    if (!key || !*key || !url ||
        (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) ||
        strlen(url) >= SHADOW_URLBUF) {
        skip(sh, SHADOW_SKIP_NO_URL);
        return false;
    }
    cur = atomic_load(&sh->in_flight);
    do {
        if (cur >= sh->concurrency) {
            skip(sh, SHADOW_SKIP_BUSY);
            return false;
        }
    } while (!atomic_compare_exchange_weak(&sh->in_flight, &cur, cur + 1));
    int peak = atomic_load(&sh->peak);
    while (cur + 1 > peak && !atomic_compare_exchange_weak(&sh->peak, &peak, cur + 1))
        ;
    c = xcalloc(1, sizeof(*c));
    c->sh = sh;
    c->key = xstrdup(key);
    c->url = xstrdup(url);
    c->expected_size = -1;
    if (!worker_submit(sh->workers, lookup_job, c)) {
        skip(sh, SHADOW_SKIP_ERROR);
        release(c);
        return false;
    }
    return true;
}

shadow *shadow_start(const struct shadow_opts *o, s3_client *s3, cut_err *err)
{
    shadow *sh;

    if (!o->database_url || !s3) {
        err_set(err, CUT_EINVAL, "shadow", "shadow reads need a database and an S3 client");
        return NULL;
    }
    sh = xcalloc(1, sizeof(*sh));
    sh->s3 = s3;
    sh->replica = xstrdup(o->replica ? o->replica : "cutover");
    sh->concurrency = o->concurrency > 0 ? o->concurrency : 4;
    sh->bytes_per_s = o->bytes_per_s ? o->bytes_per_s : 8u << 20;
    sh->timeout_s = o->timeout_s > 0 ? o->timeout_s : 30;
    sh->outcome = o->outcome;
    sh->outcome_arg = o->outcome_arg;
    sh->tokens = (double)sh->bytes_per_s;
    sh->refill_us = now_us();
    pthread_mutex_init(&sh->mu, NULL);
    struct worker_opts wo = {.name = "shadow",
                             .threads = 1,
                             .queue_max = 2 * (size_t)sh->concurrency + 16,
                             .database_url = o->database_url};
    struct xfer_engine_opts eo = {.max_active = 2 * sh->concurrency};
    if (!(sh->workers = worker_pool_start(&wo, err)) ||
        !(sh->engine = xfer_engine_new(NULL, &eo, err))) {
        shadow_free(sh);
        return NULL;
    }
    return sh;
}

void shadow_free(shadow *sh)
{
    if (!sh)
        return;
    atomic_store(&sh->stopping, true);
    if (sh->workers)
        worker_pool_stop(sh->workers); /* queued lookups see `stopping` and drop */
    xfer_engine_free(sh->engine);      /* fetches in flight end; their compares drop */
    worker_pool_free(sh->workers);
    pthread_mutex_destroy(&sh->mu);
    free(sh->replica);
    free(sh);
}

void shadow_stats_get(shadow *sh, struct shadow_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->requested = atomic_load(&sh->requested);
    out->compares = atomic_load(&sh->compares);
    out->matches = atomic_load(&sh->matches);
    for (int i = 0; i < SHADOW_NCLASSES; i++)
        out->mismatches[i] = atomic_load(&sh->mismatches[i]);
    for (int i = 0; i < SHADOW_NSKIPS; i++)
        out->skipped[i] = atomic_load(&sh->skipped[i]);
    out->recorded = atomic_load(&sh->recorded);
    out->record_failed = atomic_load(&sh->record_failed);
    out->in_flight = atomic_load(&sh->in_flight);
    out->peak = atomic_load(&sh->peak);
    out->legacy_us_sum = atomic_load(&sh->legacy_us_sum);
    out->legacy_us_max = atomic_load(&sh->legacy_us_max);
    out->legacy_fetches = atomic_load(&sh->legacy_fetches);
    out->s3_us_sum = atomic_load(&sh->s3_us_sum);
    out->s3_us_max = atomic_load(&sh->s3_us_max);
    out->s3_fetches = atomic_load(&sh->s3_fetches);
    out->concurrency = sh->concurrency;
    out->bytes_per_s = sh->bytes_per_s;
}
