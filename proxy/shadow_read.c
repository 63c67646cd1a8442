/*
 * shadow_read: the data port's side of shadow reads (see shadow_read.h).
 *
 * The pick is random per read, not sticky like the rollout. The rollout must be sticky because
 * a user sees its answer; a shadow read changes nothing anyone sees, and what it is for is
 * coverage: a sticky pick (a hash of the key or the user) would compare the same documents
 * over and over at a low share and never look at the others, so a document whose S3 copy is
 * bad would stay unseen for good, while a random pick reaches every read document in time and
 * its counts estimate the fault rate over reads without bias. Shares of 0 and 1 are exact
 * either way (tests and the demo use them). The generator is a per-thread xorshift64*, seeded
 * from the clock and the thread: no lock, no system call on the read path.
 *
 * on_start decides, on the loop, from the flags reader's snapshot (lock-free): a read not
 * picked gets no state, and the proxy calls nothing more of this handler for it. A picked read
 * looks at the answer's head: a redirect route hands the Location at once; a JSON route holds
 * the answer (as the rewrite does) and hands the URL at the pointer from on_response_body.
 * Nothing here waits: shadow_submit() takes a slot or counts a skip and returns.
 */
#include "proxy/shadow_read.h"

#include "proxy/extract.h"
#include "storage/pgstore.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SR_MAX_READERS 64
#define SR_POOL_IDLE 2
#define SR_LIST_DEFAULT 20

struct shadow_read {
    const struct config *cfg;
    flags_store *flags;
    shadow *shadow;
    char *url;
    pthread_mutex_t mu; /* the readers' table */
    flags_reader *readers[SR_MAX_READERS];
    size_t nreaders;
    pgstore_pool *pool;
    atomic_uint_fast64_t picked;
};

/* One picked read. */
struct srx {
    const struct proxy_match *m; /* valid until on_done */
    char *key;                   /* from the request, when the route takes it there */
};

static __thread flags_reader *tl_reader;
static __thread shadow_read *tl_owner;
static __thread uint64_t tl_rnd;

static const flags_snapshot *snapshot(shadow_read *sr)
{
    if (tl_owner != sr || !tl_reader) {
        pthread_mutex_lock(&sr->mu);
        if (sr->nreaders < SR_MAX_READERS) {
            tl_reader = flags_reader_new(sr->flags);
            tl_owner = sr;
            sr->readers[sr->nreaders++] = tl_reader;
        }
        pthread_mutex_unlock(&sr->mu);
        if (tl_owner != sr)
            return NULL;
    }
    return flags_reader_get(tl_reader);
}

/* A uniform number in [0, 1). */
static double rnd01(void)
{
    if (tl_rnd == 0) {
        int on_stack;
        tl_rnd = now_us() ^ ((uint64_t)(uintptr_t)&on_stack << 16) ^ 0x9e3779b97f4a7c15ull;
        if (tl_rnd == 0)
            tl_rnd = 1;
    }
    tl_rnd ^= tl_rnd >> 12;
    tl_rnd ^= tl_rnd << 25;
    tl_rnd ^= tl_rnd >> 27;
    return (double)((tl_rnd * 0x2545f4914f6cdd1dull) >> 11) * (1.0 / 9007199254740992.0);
}

static void *sr_start(void *arg, proxy_exchange *x, const struct proxy_match *m)
{
    shadow_read *sr = arg;
    const flags_snapshot *fs = snapshot(sr);
    const struct cfg_route *r = m->route;
    double share;
    struct srx *s;

    if (!fs || !flags_snapshot_from_db(fs))
        return NULL;
    share = flags_shadow_read(fs);
    if (share <= 0 || (share < 1 && rnd01() >= share))
        return NULL;
    s = xcalloc(1, sizeof(*s));
    s->m = m;
    if (r->key.kind != SRC_RESPONSE_JSON && r->key.kind != SRC_RESPONSE_HEADER)
        s->key = proxy_request_value(x, m, &r->key);
    atomic_fetch_add_explicit(&sr->picked, 1, memory_order_relaxed);
    return s;
}

static enum proxy_answer_mode sr_response(void *arg, void *state, proxy_exchange *x, int status)
{
    shadow_read *sr = arg;
    struct srx *s = state;
    const struct cfg_route *r = s->m->route;

    if (r->url.kind != SRC_RESPONSE_JSON) {
        const char *loc = proxy_exchange_response_header(x, "Location");
        if (status < 200 || status > 399 || !loc)
            return PROXY_PASS;
        if (!s->key && r->key.kind == SRC_RESPONSE_HEADER) {
            const char *v = proxy_exchange_response_header(x, r->key.name);
            s->key = v ? xstrdup(v) : NULL;
        }
        if (s->key || r->key.kind != SRC_RESPONSE_JSON) {
            (void)shadow_submit(sr->shadow, s->key, loc);
            return PROXY_PASS;
        }
        return PROXY_HOLD; /* the key is in the JSON answer */
    }
    return status >= 200 && status <= 299 ? PROXY_HOLD : PROXY_PASS;
}

static enum proxy_answer_mode sr_response_body(void *arg, void *state, proxy_exchange *x,
                                               struct buf *body)
{
    shadow_read *sr = arg;
    struct srx *s = state;
    const struct cfg_route *r = s->m->route;
    json_error_t je;
    json_t *doc = json_loadb(body->data ? body->data : "", body->len, 0, &je);
    cut_err err = CUT_ERR_INIT;
    char *url = NULL;

    if (!s->key && r->key.kind == SRC_RESPONSE_JSON && doc)
        s->key = extract_json_string(doc, r->key.name, &err);
    else if (!s->key && r->key.kind == SRC_RESPONSE_HEADER) {
        const char *v = proxy_exchange_response_header(x, r->key.name);
        s->key = v ? xstrdup(v) : NULL;
    }
    if (r->url.kind == SRC_RESPONSE_JSON) {
        url = doc ? extract_json_string(doc, r->url.name, &err) : NULL;
    } else {
        const char *loc = proxy_exchange_response_header(x, "Location");
        url = loc ? xstrdup(loc) : NULL;
    }
    (void)shadow_submit(sr->shadow, s->key, url); /* a missing key or URL is counted there */
    free(url);
    json_decref(doc);
    return PROXY_PASS;
}

static void sr_done(void *arg, void *state, const struct proxy_outcome *o)
{
    struct srx *s = state;
    (void)arg;
    (void)o;
    free(s->key);
    free(s);
}

/* ---- GET /admin/shadow ------------------------------------------------------------------ */

static pgstore *db_take(shadow_read *sr)
{
    return pgstore_pool_take(sr->pool);
}

static void db_give(shadow_read *sr, pgstore *st)
{
    pgstore_pool_give(sr->pool, st);
}

static double mean_ms(uint64_t sum_us, uint64_t n)
{
    return n ? (double)sum_us / (double)n / 1000.0 : 0.0;
}

json_t *shadow_read_stats_json(shadow_read *sr)
{
    struct shadow_stats st;
    json_t *o = json_object(), *mm = json_object(), *sk = json_object();

    shadow_stats_get(sr->shadow, &st);
    json_object_set_new(o, "picked", json_integer((json_int_t)atomic_load(&sr->picked)));
    json_object_set_new(o, "requested", json_integer((json_int_t)st.requested));
    json_object_set_new(o, "compares", json_integer((json_int_t)st.compares));
    json_object_set_new(o, "matches", json_integer((json_int_t)st.matches));
    for (int i = 0; i < SHADOW_NCLASSES; i++)
        json_object_set_new(mm, shadow_class_name((enum shadow_class)i),
                            json_integer((json_int_t)st.mismatches[i]));
    json_object_set_new(o, "mismatches", mm);
    for (int i = 0; i < SHADOW_NSKIPS; i++)
        json_object_set_new(sk, shadow_skip_name((enum shadow_skip)i),
                            json_integer((json_int_t)st.skipped[i]));
    json_object_set_new(o, "skipped", sk);
    json_object_set_new(o, "recorded", json_integer((json_int_t)st.recorded));
    json_object_set_new(o, "record_failed", json_integer((json_int_t)st.record_failed));
    json_object_set_new(o, "in_flight", json_integer(st.in_flight));
    json_object_set_new(o, "peak", json_integer(st.peak));
    json_object_set_new(o, "concurrency", json_integer(st.concurrency));
    json_object_set_new(o, "bytes_per_s", json_integer((json_int_t)st.bytes_per_s));
    json_object_set_new(o, "legacy_ms_mean",
                        json_real(mean_ms(st.legacy_us_sum, st.legacy_fetches)));
    json_object_set_new(o, "legacy_ms_max", json_real((double)st.legacy_us_max / 1000.0));
    json_object_set_new(o, "s3_ms_mean", json_real(mean_ms(st.s3_us_sum, st.s3_fetches)));
    json_object_set_new(o, "s3_ms_max", json_real((double)st.s3_us_max / 1000.0));
    return o;
}

static void reply(struct proxy_admin_reply *rep, int status, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    rep->status = status;
    buf_reset(&rep->body);
    if (!text || !buf_puts(&rep->body, text) || !buf_puts(&rep->body, "\n")) {
        rep->status = 500;
        buf_reset(&rep->body);
        if (!buf_puts(&rep->body, "{\"error\":\"internal\",\"reason\":\"answer too large\"}\n"))
            rep->status = 500;
    }
    free(text);
    json_decref(o);
}

static void reply_error(struct proxy_admin_reply *rep, int status, const char *code,
                        const char *reason)
{
    json_t *o = json_object();
    json_object_set_new(o, "error", json_string(code));
    json_object_set_new(o, "reason", json_string(reason));
    reply(rep, status, o);
}

static void h_shadow(void *arg, const struct proxy_admin_req *req, struct proxy_admin_reply *rep)
{
    shadow_read *sr = arg;
    cut_err err = CUT_ERR_INIT;
    char *v = NULL, *end = NULL;
    long limit = SR_LIST_DEFAULT;
    json_t *o = NULL, *rows = NULL, *counts = NULL;
    flags_snapshot *fs;
    pgstore *st;
    int got = proxy_admin_query_get(req, "limit", &v);

    if (got != 0) {
        limit = v && *v ? strtol(v, &end, 10) : -1;
        if (got < 0 || !v || !*v || *end != '\0' || limit < 1 || limit > PGSTORE_SHADOW_LIST_MAX) {
            reply_error(rep, 400, "invalid", "limit: expected a whole number from 1 to 1000");
            goto out;
        }
    }
    st = db_take(sr);
    if (pgstore_shadow_counts(st, &counts, &err) != 0 ||
        pgstore_shadow_list(st, (int)limit, &rows, &err) != 0) {
        db_give(sr, st);
        reply_error(rep, err.code == CUT_ELIMIT ? 500 : 503,
                    err.code == CUT_ELIMIT ? "too_large" : "database_unavailable", err.msg);
        goto out;
    }
    db_give(sr, st);
    o = json_object();
    fs = flags_store_current(sr->flags);
    json_object_set_new(o, "shadow_read", json_real(flags_shadow_read(fs)));
    flags_snapshot_unref(fs);
    json_object_set_new(o, "stats", shadow_read_stats_json(sr));
    json_object_set_new(o, "mismatches_by_class", counts);
    json_object_set_new(o, "mismatches", rows);
    counts = rows = NULL;
    reply(rep, 200, o);
out:
    json_decref(counts);
    json_decref(rows);
    free(v);
}

/* ---- the feature ---------------------------------------------------------------------------- */

shadow_read *shadow_read_new(const struct config *cfg, const struct shadow_read_deps *d,
                             cut_err *err)
{
    shadow_read *sr;

    if (!d->flags || !d->shadow || !d->database_url) {
        err_set(err, CUT_EINVAL, "shadow_read", "shadow reads need the flags and the compares");
        return NULL;
    }
    sr = xcalloc(1, sizeof(*sr));
    sr->cfg = cfg;
    sr->flags = d->flags;
    sr->shadow = d->shadow;
    sr->url = xstrdup(d->database_url);
    sr->pool = pgstore_pool_new(sr->url, SR_POOL_IDLE);
    pthread_mutex_init(&sr->mu, NULL);
    return sr;
}

bool shadow_read_register(shadow_read *sr, proxy *px, cut_err *err)
{
    struct proxy_handler h = {
        .arg = sr,
        .on_start = sr_start,
        .on_response = sr_response,
        .on_response_body = sr_response_body,
        .on_done = sr_done,
    };
    if (!proxy_add_handler(px, ROUTE_SIGNED_URL, &h, err))
        return false;
    if (!proxy_admin_add(px, "GET", "/admin/shadow", h_shadow, sr)) {
        err_set(err, CUT_ELIMIT, "admin", "the admin port's handler table is full");
        return false;
    }
    return true;
}

void shadow_read_free(shadow_read *sr)
{
    if (!sr)
        return;
    for (size_t i = 0; i < sr->nreaders; i++)
        flags_reader_free(sr->readers[i]);
    pgstore_pool_free(sr->pool);
    pthread_mutex_destroy(&sr->mu);
    free(sr->url);
    free(sr);
}

uint64_t shadow_read_picked(shadow_read *sr)
{
    return atomic_load(&sr->picked);
}
