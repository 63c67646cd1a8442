/*
 * read cutover: the signed-URL rewrite (see rewrite.h for what it does).
 *
 * One handler on signed-URL routes. on_start reads the flag through this loop's lock-free
 * flags reader and decides the rollout (flags/rollout.h) from the request alone, so the
 * decision never depends on timing. on_response lets every answer the rewrite will not touch
 * go at once (a refusal, a read the flag leaves on the legacy store) and holds the others.
 * on_response_body then finds the storage key, asks the cache, and either rewrites at once
 * (a hit), leaves the answer alone (absent, not ready, unconfirmed), or parks the exchange
 * while a worker looks the document up and fills the cache, then is called again.
 *
 * The per-request state is shared with a worker only while a lookup runs; it is reference
 * counted (the loop's reference is dropped in on_done, the worker's when the job ends), so a
 * client that leaves while the lookup runs is safe. Everything else a read triggers (the move
 * to active, the move to the front of the copy queue, the last legacy read) is a job of its
 * own that owns its copies: the client never waits for it.
 *
 * The rewritten JSON answer is the app's bytes with only the URL string's bytes replaced
 * (proxy/jsonsplice.h: one scan that also checks the answer is JSON jansson would load, no
 * tree, no re-encoding), so the app's formatting is kept. An answer that is not JSON, has no
 * string at the pointer, repeats a member name on the pointer's path, or would grow past
 * limits.max_json_answer goes unchanged.
 */
#include "proxy/rewrite.h"

#include "flags/rollout.h"
#include "proxy/extract.h"
#include "proxy/jsonsplice.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RW_MAX_READERS 64
#define RW_KEYBUF (EXTRACT_MAX_KEY + 1)
#define RW_URLBUF 8192

struct counters {
    atomic_uint_fast64_t rewritten, not_selected, not_ready, unknown, unconfirmed, unusable,
        app_refused, activated, bumped, no_credentials;
};

struct rewrite {
    const struct config *cfg;
    struct rewrite_deps d;
    char *replica;
    pthread_mutex_t mu; /* the readers' table */
    flags_reader *readers[RW_MAX_READERS];
    size_t nreaders;
    atomic_uint_fast64_t last_legacy_us; /* when the last legacy read was handed to a worker */
    atomic_bool creds_down;              /* the last presign found no valid credentials */
    struct counters c;
};

/* One signed-URL request. */
struct rwx {
    atomic_int refs;
    rewrite *rw;
    const struct proxy_match *m; /* valid until on_done */
    bool selected;
    bool json; /* the URL is in the JSON answer, else in Location */
    bool waiting;
    proxy_ticket ticket;
    char *key; /* the storage key once known */
    /* the worker's answer, read by the loop after the resume */
    bool lk_ok, lk_found;
    enum doc_state lk_state;
    char *lk_s3_key; /* a new string, only after a lookup that found the document */
};

static __thread flags_reader *tl_reader;
static __thread rewrite *tl_reader_owner;

#define COUNT(rw, f) atomic_fetch_add_explicit(&(rw)->c.f, 1, memory_order_relaxed)

/* This loop's snapshot, or NULL when there is no reader for it (in doubt: no rewrite). */
static const flags_snapshot *snapshot(rewrite *rw)
{
    if (tl_reader_owner != rw || !tl_reader) {
        pthread_mutex_lock(&rw->mu);
        if (rw->nreaders < RW_MAX_READERS) {
            tl_reader = flags_reader_new(rw->d.flags);
            tl_reader_owner = rw;
            rw->readers[rw->nreaders++] = tl_reader;
        }
        pthread_mutex_unlock(&rw->mu);
        if (tl_reader_owner != rw)
            return NULL;
    }
    return flags_reader_get(tl_reader);
}

static void rwx_unref(struct rwx *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    free(s->key);
    free(s->lk_s3_key);
    free(s);
}

/* ---- background jobs: each owns its copies ----------------------------------------------- */

struct bg {
    rewrite *rw;
    char *key;
    uint64_t fill;    /* lookup: the cache's token */
    struct rwx *s;    /* lookup for a waiting request (a reference), or NULL */
    bool bump_if_due; /* lookup: a read that only wants migrate on read */
};

static void bg_free(struct bg *b)
{
    free(b->key);
    free(b);
}

static void submit(rewrite *rw, worker_fn fn, struct bg *b)
{
    if (!worker_submit(rw->d.workers, fn, b)) {
        /* refused (queue full, stopping): counted and logged by the pool */
        if (b->s) {
            proxy_exchange_resume(b->s->ticket); /* the app's answer goes at once */
            rwx_unref(b->s);
        }
        bg_free(b);
    }
}

static void bump_job(worker_ctx *ctx, void *arg)
{
    struct bg *b = arg;
    cut_err err = CUT_ERR_INIT;
    bool bumped = false;

    if (pgstore_read_bump(worker_store(ctx), b->key, &bumped, &err) != 0)
        log_msgf(LOG_DEBUG, "read_bump", "not moved forward: %s", err.msg);
    else if (bumped) {
        COUNT(b->rw, bumped);
        mirror_kick(b->rw->d.mirror);
    }
    bg_free(b);
}

static void maybe_bump(rewrite *rw, const char *key, enum doc_state st)
{
    if ((st != DOC_PENDING && st != DOC_MISMATCH) || !doccache_once(rw->d.cache, key))
        return;
    struct bg *b = xcalloc(1, sizeof(*b));
    b->rw = rw;
    b->key = xstrdup(key);
    submit(rw, bump_job, b);
}

static void activate_job(worker_ctx *ctx, void *arg)
{
    struct bg *b = arg;
    cut_err err = CUT_ERR_INIT;

    if (pgstore_transition(worker_store(ctx), b->key, 0, DOC_ACTIVE, "first read from S3", &err) ==
        0)
        COUNT(b->rw, activated);
    else
        log_msgf(LOG_DEBUG, "activate", "not marked active: %s", err.msg);
    bg_free(b);
}

static void legacy_job(worker_ctx *ctx, void *arg)
{
    struct bg *b = arg;
    cut_err err = CUT_ERR_INIT;

    if (pgstore_legacy_read_mark(worker_store(ctx), b->rw->replica, &err) != 0)
        log_msgf(LOG_DEBUG, "legacy_read", "last legacy read not recorded: %s", err.msg);
    bg_free(b);
}

/* An answer went out with the app's own URL: recorded at most once a second. */
static void legacy_read(rewrite *rw)
{
    uint64_t now = now_us(), last = atomic_load(&rw->last_legacy_us);
    if (now - last < 1000000u || !atomic_compare_exchange_strong(&rw->last_legacy_us, &last, now))
        return;
    struct bg *b = xcalloc(1, sizeof(*b));
    b->rw = rw;
    submit(rw, legacy_job, b);
}

static void lookup_job(worker_ctx *ctx, void *arg)
{
    struct bg *b = arg;
    rewrite *rw = b->rw;
    cut_err err = CUT_ERR_INIT;
    enum doc_state st = DOC_PENDING;
    char s3_key[RW_KEYBUF];
    int rc = pgstore_doc_state(worker_store(ctx), b->key, &st, s3_key, sizeof(s3_key), &err);
    bool found = rc == 0, known = rc == 0 || err.code == CUT_ENOTFOUND;

    if (known)
        doccache_fill(rw->d.cache, b->key, b->fill, found, st, found ? s3_key : NULL);
    else
        log_msgf(LOG_DEBUG, "doc_state", "state not confirmed: %s", err.msg);
    if (found && b->bump_if_due)
        maybe_bump(rw, b->key, st);
    if (b->s) {
        b->s->lk_ok = known;
        b->s->lk_found = found;
        b->s->lk_state = st;
        if (found)
            b->s->lk_s3_key = xstrdup(s3_key);
        proxy_exchange_resume(b->s->ticket);
        rwx_unref(b->s);
    }
    bg_free(b);
}

/* ---- the hooks ------------------------------------------------------------------------------ */

static void *rw_start(void *arg, proxy_exchange *x, const struct proxy_match *m)
{
    rewrite *rw = arg;
    const struct cfg_route *r = m->route;
    const flags_snapshot *fs = snapshot(rw);
    struct rwx *s = xcalloc(1, sizeof(*s));

    atomic_init(&s->refs, 1);
    s->rw = rw;
    s->m = m;
    s->json = r->url.kind == SRC_RESPONSE_JSON;
    if (r->key.kind != SRC_RESPONSE_JSON && r->key.kind != SRC_RESPONSE_HEADER)
        s->key = proxy_request_value(x, m, &r->key);
    if (fs && flags_snapshot_from_db(fs)) {
        char *sticky = r->sticky.kind != SRC_NONE ? proxy_request_value(x, m, &r->sticky) : NULL;
        const char *v = r->sticky.kind != SRC_NONE ? sticky : s->key;
        /* a route naming `sticky` whose value is missing stays on the legacy store */
        s->selected = v && flags_rollout_selects(fs, r->name, v, NULL);
        free(sticky);
    }
    return s;
}

/* Leaves the app's answer as it is. */
static enum proxy_answer_mode keep(struct rwx *s)
{
    legacy_read(s->rw);
    return PROXY_PASS;
}

static enum proxy_answer_mode rw_response(void *arg, void *state, proxy_exchange *x, int status)
{
    struct rwx *s = state;
    rewrite *rw = arg;
    bool ok = s->json ? status >= 200 && status <= 299
                      : status >= 200 && status <= 399 &&
                            proxy_exchange_response_header(x, "Location") != NULL;

    if (!ok) {
        COUNT(rw, app_refused);
        return PROXY_PASS;
    }
    if (!s->selected) {
        enum doc_state st;
        char s3_key[RW_KEYBUF];
        uint64_t fill = 0;
        COUNT(rw, not_selected);
        if (s->key) {
            /* migrate on read for reads the flag leaves on the legacy store too */
            switch (doccache_lookup(rw->d.cache, s->key, &st, s3_key, sizeof(s3_key), &fill)) {
            case DOCCACHE_FOUND:
                maybe_bump(rw, s->key, st);
                break;
            case DOCCACHE_MISS: {
                struct bg *b = xcalloc(1, sizeof(*b));
                b->rw = rw;
                b->key = xstrdup(s->key);
                b->fill = fill;
                b->bump_if_due = true;
                submit(rw, lookup_job, b);
                break;
            }
            default:
                break;
            }
        }
        return keep(s);
    }
    return PROXY_HOLD;
}

/* Puts url in place of the app's URL. False: the answer stays as it was. */
static bool replace_url(struct rwx *s, proxy_exchange *x, struct buf *body, const char *url,
                        size_t n)
{
    size_t a = 0, b = 0;
    enum jsplice_result r;

    if (!s->json)
        return proxy_exchange_set_response_header(x, "Location", url);
    r = jsplice_find(body->data ? body->data : "", body->len, s->m->route->url.name, &a, &b);
    if (r != JSPLICE_STRING) {
        log_msgf(LOG_DEBUG, "rewrite", "answer left as it is: %s", jsplice_result_name(r));
        return false;
    }
    if (!jsplice_put_string(body, a, b, url, n)) {
        log_msgf(LOG_WARN, "rewrite", "the rewritten answer would pass limits.max_json_answer");
        return false;
    }
    return true;
}

/* The state is known: rewrite or not. body is left intact unless the rewrite succeeds. */
static enum proxy_answer_mode act(struct rwx *s, proxy_exchange *x, struct buf *body,
                                  enum doc_state st, const char *s3_key)
{
    rewrite *rw = s->rw;
    char url[RW_URLBUF];
    cut_err err = CUT_ERR_INIT;
    long n;

    if (st != DOC_VERIFIED && st != DOC_ACTIVE) {
        COUNT(rw, not_ready);
        maybe_bump(rw, s->key, st);
        return keep(s);
    }
    n = s3_presign_nowait(rw->d.s3, "GET", s3_key, rw->cfg->s3.presign_expires, 0, url, sizeof(url),
                          &err);
    if (n == S3_NO_CREDS) {
        /* counted per read, logged once per outage (the refresher logs its attempts) */
        COUNT(rw, no_credentials);
        if (!atomic_exchange(&rw->creds_down, true))
            log_msgf(LOG_WARN, "rewrite",
                     "no valid S3 credentials: reads keep the app's URL until they are fetched");
        return keep(s);
    }
    if (atomic_load_explicit(&rw->creds_down, memory_order_relaxed) &&
        atomic_exchange(&rw->creds_down, false))
        log_msgf(LOG_INFO, "rewrite", "S3 credentials back: reads are rewritten again");
    if (n < 0) {
        log_msgf(LOG_WARN, "rewrite", "no presigned URL: %s", err.msg);
        COUNT(rw, unusable);
        return keep(s);
    }
    /* the body changes only once its replacement is whole and fits */
    if (!replace_url(s, x, body, url, (size_t)n)) {
        COUNT(rw, unusable);
        return keep(s);
    }
    COUNT(rw, rewritten);
    if (st == DOC_VERIFIED) {
        struct bg *b = xcalloc(1, sizeof(*b));
        doccache_note(rw->d.cache, s->key, DOC_VERIFIED, DOC_ACTIVE);
        b->rw = rw;
        b->key = xstrdup(s->key);
        submit(rw, activate_job, b);
    }
    return PROXY_PASS;
}

static enum proxy_answer_mode rw_response_body(void *arg, void *state, proxy_exchange *x,
                                               struct buf *body)
{
    struct rwx *s = state;
    rewrite *rw = arg;
    enum doc_state st;
    char s3_key[RW_KEYBUF];
    uint64_t fill = 0;

    if (s->waiting) {
        /* resumed by the lookup */
        if (!s->lk_ok) {
            COUNT(rw, unconfirmed);
            return keep(s);
        }
        if (!s->lk_found) {
            COUNT(rw, unknown);
            return keep(s);
        }
        return act(s, x, body, s->lk_state, s->lk_s3_key);
    }
    if (!s->key) {
        const struct cfg_source *k = &s->m->route->key;
        if (k->kind == SRC_RESPONSE_HEADER) {
            const char *v = proxy_exchange_response_header(x, k->name);
            s->key = v ? xstrdup(v) : NULL;
        } else if (k->kind == SRC_RESPONSE_JSON) {
            json_error_t je;
            cut_err err = CUT_ERR_INIT;
            json_t *doc = json_loadb(body->data ? body->data : "", body->len, 0, &je);
            s->key = doc ? extract_json_string(doc, k->name, &err) : NULL;
            json_decref(doc);
        }
        if (!s->key || !*s->key) {
            COUNT(rw, unusable);
            return keep(s);
        }
    }
    switch (doccache_lookup(rw->d.cache, s->key, &st, s3_key, sizeof(s3_key), &fill)) {
    case DOCCACHE_FOUND:
        return act(s, x, body, st, s3_key);
    case DOCCACHE_ABSENT:
        COUNT(rw, unknown);
        return keep(s);
    case DOCCACHE_UNTRUSTED:
        COUNT(rw, unconfirmed);
        return keep(s);
    case DOCCACHE_MISS:
        break;
    }
    struct bg *b = xcalloc(1, sizeof(*b));
    b->rw = rw;
    b->key = xstrdup(s->key);
    b->fill = fill;
    b->s = s;
    s->ticket = proxy_exchange_wait(x, rw->d.lookup_wait_ms);
    s->waiting = true;
    atomic_fetch_add(&s->refs, 1); /* the worker's */
    if (!worker_submit(rw->d.workers, lookup_job, b)) {
        rwx_unref(s);
        bg_free(b);
        COUNT(rw, unconfirmed);
        return keep(s); /* not PROXY_WAIT: the ticket lapses */
    }
    return PROXY_WAIT;
}

static void rw_done(void *arg, void *state, const struct proxy_outcome *o)
{
    (void)arg;
    (void)o;
    rwx_unref(state);
}

/* ---- the feature ---------------------------------------------------------------------------- */

rewrite *rewrite_new(const struct config *cfg, const struct rewrite_deps *d, cut_err *err)
{
    rewrite *rw;

    if (!d->flags || !d->cache || !d->workers || !d->s3) {
        err_set(err, CUT_EINVAL, "rewrite",
                "read cutover needs the flags, the document cache, workers and an S3 client");
        return NULL;
    }
    rw = xcalloc(1, sizeof(*rw));
    rw->cfg = cfg;
    rw->d = *d;
    rw->replica = xstrdup(d->replica ? d->replica : "cutover");
    rw->d.replica = rw->replica;
    if (!rw->d.lookup_wait_ms)
        rw->d.lookup_wait_ms = 1000;
    pthread_mutex_init(&rw->mu, NULL);
    {
        /* temporary credentials: start fetching now, in the background, so that the first
         * reads find them; the URL itself is thrown away */
        char url[RW_URLBUF];
        cut_err e = CUT_ERR_INIT;
        if (s3_presign_nowait(d->s3, "GET", "cutover-warm-up", 60, 0, url, sizeof(url), &e) < 0)
            log_msgf(LOG_DEBUG, "rewrite", "no S3 credentials yet: %s", e.msg);
    }
    atomic_init(&rw->last_legacy_us, 0);
    atomic_init(&rw->creds_down, false);
    return rw;
}

bool rewrite_register(rewrite *rw, proxy *px, cut_err *err)
{
    struct proxy_handler h = {
        .arg = rw,
        .on_start = rw_start,
        .on_response = rw_response,
        .on_response_body = rw_response_body,
        .on_done = rw_done,
    };
    return proxy_add_handler(px, ROUTE_SIGNED_URL, &h, err);
}

void rewrite_free(rewrite *rw)
{
    if (!rw)
        return;
    for (size_t i = 0; i < rw->nreaders; i++)
        flags_reader_free(rw->readers[i]);
    pthread_mutex_destroy(&rw->mu);
    free(rw->replica);
    free(rw);
}

void rewrite_stats_get(rewrite *rw, struct rewrite_stats *out)
{
#define LOAD(f) out->f = atomic_load(&rw->c.f)
    LOAD(rewritten);
    LOAD(not_selected);
    LOAD(not_ready);
    LOAD(unknown);
    LOAD(unconfirmed);
    LOAD(unusable);
    LOAD(app_refused);
    LOAD(activated);
    LOAD(bumped);
    LOAD(no_credentials);
#undef LOAD
}
