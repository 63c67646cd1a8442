/*
 * upload: dual-write for upload routes, and deletes (see upload.h).
 *
 * Each upload request that the flag selects gets a state shared by three threads: the
 * request's loop (hooks), the spool writer (the file's end, drain callbacks) and a recorder
 * worker (the database or the journal). It is reference counted; each thread that may still
 * touch it holds a reference.
 *
 *   on_start      spool file opened, multipart parser started (file_field), flag read
 *   body          bytes → parser → spool_write(); past the high mark the body pauses until
 *                 the writer drains to the low mark; a parser or disk failure stops the tee
 *                 (the request still reaches the app intact)
 *   on_response   non-2xx: spool discarded, PASS. 2xx: HOLD when the key is in the JSON
 *                 answer, else go on at once
 *   record        key, variables and S3 key resolved on the loop; spool_finish(); the
 *                 exchange waits (PROXY_WAIT) while a recorder writes the row, once both
 *                 the spool's end and the resolved record are there; then it resumes and the
 *                 client gets the app's answer unchanged
 *
 * The wait has a deadline (record_wait_ms): past it the client gets its answer anyway and
 * the record is still written when it can be. So records of one key may reach the database in
 * another order than the app answered them: each carries the sequence taken on the loop when
 * the 2xx answer was seen (upload_seq_next()), and the database keeps the later answer's
 * (pgstore_upsert(), pgstore_delete_answered()); a record found older is not applied and its
 * spool file is removed. Nothing here blocks a loop: the flag comes
 * from a per-thread lock-free reader, the spool is written by its own thread, the database
 * and the journal are touched only by recorder workers.
 */
#include "proxy/upload.h"

#include "proxy/extract.h"
#include "proxy/multipart.h"

#include "core/metrics.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define UP_HIGH (1u << 20)    /* bytes waiting for the spool before the body pauses */
#define UP_LOW (256u * 1024u) /* ... and resumes */
#define UP_PAUSE_MS 60000u    /* a body pause longer than this gives the tee up */
#define UP_MAX_READERS 64

struct upload {
    const struct config *cfg;
    struct upload_deps d;
    /* backlog: the journal may hold records the database has not taken yet. While it does,
     * new records go to the journal behind them, so that a replay never puts an older record
     * of a key over a newer one. jmu orders appends against the replay's rotation. */
    pthread_mutex_t jmu;
    bool backlog;
    pthread_mutex_t mu;
    flags_reader *readers[UP_MAX_READERS];
    size_t nreaders;
    struct upload_stats st;
};

enum up_kind { UP_UPLOAD, UP_DELETE };

struct up {
    atomic_int refs;
    upload *u;
    enum up_kind kind;
    const struct cfg_route *route;
    const struct proxy_match *m; /* valid until on_done */

    spool_file *sf; /* the loop's until finished or discarded */
    multipart *mp;
    struct buf file; /* the file part's bytes of one body piece, written to the spool at once */
    bool body_failed;
    char body_why[640];
    char *content_type;

    /* the record, built on the loop */
    uint64_t seq;       /* the app's 2xx answer, in order (upload_seq_next()) */
    uint64_t answer_us; /* when the record began (now_us()): its wait, for /metrics */
    bool waiting;       /* the answer waits for the recorder */
    bool resumed;       /* the recorder is done: let the answer go */
    proxy_ticket answer;
    char *storage_key, *s3_key, *filename, *vars;
    char unmirrorable[1024];

    /* the spool's end (writer thread), read by the recorder after the join */
    bool spool_ok;
    char *spool_path;
    uint64_t size;
    char md5[33], sha256[65];
    char spool_why[640];
    atomic_int join;
};

static __thread flags_reader *tl_reader;
static __thread upload *tl_reader_owner;

/* The last sequence given, for the whole process. */
static _Atomic uint64_t seq_last;

uint64_t upload_seq_next(void)
{
    struct timespec ts;
    uint64_t now, last, next;

    clock_gettime(CLOCK_REALTIME, &ts);
    now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    last = atomic_load(&seq_last);
    do {
        next = now > last ? now : last + 1;
    } while (!atomic_compare_exchange_weak(&seq_last, &last, next));
    return next;
}

/* /metrics' cutover_uploads_total has one outcome per member, in the struct's order */
_Static_assert(sizeof(struct upload_stats) == 11 * sizeof(uint64_t),
               "struct upload_stats and metrics.c's v_upload list the same outcomes");

static void stat_add(upload *u, uint64_t *field)
{
    pthread_mutex_lock(&u->mu);
    (*field)++;
    pthread_mutex_unlock(&u->mu);
    metrics_inc(MET_UPLOADS, (unsigned)(field - &u->st.skipped), 0);
}

static bool dual_write_on(upload *u)
{
    if (tl_reader_owner != u || !tl_reader) {
        pthread_mutex_lock(&u->mu);
        if (u->nreaders < UP_MAX_READERS) {
            tl_reader = flags_reader_new(u->d.flags);
            tl_reader_owner = u;
            u->readers[u->nreaders++] = tl_reader;
        }
        pthread_mutex_unlock(&u->mu);
        if (tl_reader_owner != u)
            return false; /* more loops than readers: in doubt, do nothing */
    }
    return flags_dual_write(flags_reader_get(tl_reader));
}

static void up_unref(struct up *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    multipart_free(s->mp);
    buf_free(&s->file);
    free(s->content_type);
    free(s->storage_key);
    free(s->s3_key);
    free(s->filename);
    free(s->vars);
    free(s->spool_path);
    free(s);
}

/* ---- the tee ------------------------------------------------------------------------------ */

/* The parser hands the file part over in runs (a CR that may start a delimiter comes on its
 * own): they are gathered so that each body piece is one spool write. */
static bool on_file_bytes(void *arg, const void *data, size_t n)
{
    struct up *s = arg;
    return buf_append(&s->file, data, n);
}

static void body_fail(struct up *s, const char *fmt, const char *why)
{
    s->body_failed = true;
    snprintf(s->body_why, sizeof(s->body_why), fmt, why);
}

/* Writer thread (or the loop inside finish/discard): resume the paused body. */
static void drained(void *arg)
{
    proxy_ticket *t = arg;
    proxy_exchange_resume(*t);
    free(t);
}

static void *up_start(void *arg, proxy_exchange *x, const struct proxy_match *m)
{
    upload *u = arg;
    struct up *s;

    if (!dual_write_on(u)) {
        stat_add(u, &u->st.skipped);
        return NULL;
    }
    s = xcalloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->u = u;
    s->kind = UP_UPLOAD;
    s->route = m->route;
    s->m = m;
    s->sf = spool_open(u->d.spool);
    buf_init(&s->file, 0);
    /* a multipart body gives up its file part; any other body is the document itself, as
     * for a route without file_field */
    const char *ct = proxy_exchange_request_header(x, "Content-Type");
    while (ct && (*ct == ' ' || *ct == '\t'))
        ct++;
    if (m->route->file_field && ct && strncasecmp(ct, "multipart/form-data", 19) == 0) {
        struct multipart_limits lim = {.max_file = u->cfg->limits.max_body_bytes};
        cut_err err = CUT_ERR_INIT;
        s->mp = multipart_new(ct, m->route->file_field, &lim, on_file_bytes, s, &err);
        if (!s->mp)
            body_fail(s, "multipart: %s", err.msg);
    } else {
        s->content_type = xstrdup(ct);
    }
    return s;
}

static enum proxy_body_result up_body(void *arg, void *state, proxy_exchange *x, const void *data,
                                      size_t n)
{
    struct up *s = state;
    cut_err err = CUT_ERR_INIT;
    uint64_t pending;

    (void)arg;
    /* the app may answer before the body has ended: once the spool file is finished or
     * discarded, the rest of the body is not ours to keep */
    if (s->body_failed || !s->sf)
        return PROXY_BODY_FAIL;
    if (s->mp) {
        buf_reset(&s->file);
        if (!multipart_feed(s->mp, data, n, &err)) {
            body_fail(s, "multipart: %s", err.msg);
            return PROXY_BODY_FAIL;
        }
        pending = spool_write(s->sf, s->file.data, s->file.len);
    } else {
        pending = spool_write(s->sf, data, n);
    }
    if (spool_failed(s->sf, &err)) {
        body_fail(s, "%s", err.msg);
        return PROXY_BODY_FAIL;
    }
    if (pending > UP_HIGH) {
        proxy_ticket *t = xmalloc(sizeof(*t));
        *t = proxy_exchange_wait(x, UP_PAUSE_MS);
        if (spool_wait_drain(s->sf, UP_LOW, drained, t))
            return PROXY_BODY_PAUSE;
        free(t); /* drained already: no pause, the ticket lapses */
    }
    return PROXY_BODY_OK;
}

/* ---- resolving the record ------------------------------------------------------------------ */

/* The value of src for this exchange: a new string, or NULL with why. */
static char *source_value(struct up *s, proxy_exchange *x, const struct cfg_source *src,
                          const json_t *answer, char *why, size_t whylen)
{
    const char *v = NULL;
    size_t len;
    cut_err err = CUT_ERR_INIT;

    switch (src->kind) {
    case SRC_HEADER:
        v = proxy_exchange_request_header(x, src->name);
        break;
    case SRC_RESPONSE_HEADER:
        v = proxy_exchange_response_header(x, src->name);
        break;
    case SRC_QUERY: {
        char *q = extract_query_param(proxy_exchange_target(x), src->name);
        if (!q)
            snprintf(why, whylen, "no query parameter '%s'", src->name);
        return q;
    }
    case SRC_PATH:
        for (size_t i = 0; i < s->m->nvars; i++)
            if (strcmp(s->m->var_names[i], src->name) == 0)
                return xstrdup(s->m->var_values[i]);
        break;
    case SRC_FORM_FIELD:
        v = s->mp ? multipart_field(s->mp, src->name, &len) : NULL;
        if (v && memchr(v, 0, len)) {
            snprintf(why, whylen, "the form field '%s' holds a NUL byte", src->name);
            return NULL;
        }
        break;
    case SRC_RESPONSE_JSON: {
        char *r = answer ? extract_json_string(answer, src->name, &err) : NULL;
        if (!r)
            snprintf(why, whylen, "%s", answer ? err.msg : "the answer is not JSON");
        return r;
    }
    case SRC_REQUEST_JSON:
        snprintf(why, whylen, "request_json is not read on upload routes");
        return NULL;
    case SRC_NONE:
        break;
    }
    if (!v)
        snprintf(why, whylen, "no value for %s '%s'",
                 src->kind == SRC_HEADER            ? "header"
                 : src->kind == SRC_RESPONSE_HEADER ? "answer header"
                 : src->kind == SRC_FORM_FIELD      ? "form field"
                                                    : "path variable",
                 src->name ? src->name : "");
    return v ? xstrdup(v) : NULL;
}

struct tpl_vars {
    const struct cfg_route *route;
    const char *key;
    char **values;
};

static const char *tpl_lookup(void *arg, const char *name, size_t nlen, size_t *len)
{
    struct tpl_vars *t = arg;
    if (nlen == 3 && memcmp(name, "key", 3) == 0) {
        *len = strlen(t->key);
        return t->key;
    }
    for (size_t i = 0; i < t->route->nvars; i++) {
        const char *n = t->route->vars[i].name;
        if (strlen(n) == nlen && memcmp(n, name, nlen) == 0 && t->values[i]) {
            *len = strlen(t->values[i]);
            return t->values[i];
        }
    }
    return NULL;
}

/* Fills the record from the request and the answer. False: nothing can be recorded. */
static bool resolve(struct up *s, proxy_exchange *x, const json_t *answer)
{
    const struct cfg_route *r = s->route;
    char why[600];
    char **values = xcalloc(r->nvars ? r->nvars : 1, sizeof(char *));
    json_t *vars = json_object();
    bool ok = false;

    s->storage_key = source_value(s, x, &r->key, answer, why, sizeof(why));
    if (!s->storage_key || !*s->storage_key) {
        log_msgf(LOG_WARN, "upload_unusable",
                 "route %s: the app answered 2xx but the storage key cannot be read: %s", r->name,
                 s->storage_key ? "it is empty" : why);
        stat_add(s->u, &s->u->st.unusable);
        goto out;
    }
    for (size_t i = 0; i < r->nvars; i++) {
        values[i] = source_value(s, x, &r->vars[i].src, answer, why, sizeof(why));
        if (values[i])
            json_object_set_new(vars, r->vars[i].name, json_string(values[i]));
        else if (!s->unmirrorable[0])
            snprintf(s->unmirrorable, sizeof(s->unmirrorable), "variable {%.64s}: %s",
                     r->vars[i].name, why);
    }
    if (!s->unmirrorable[0]) {
        struct tpl_vars tv = {r, s->storage_key, values};
        cut_err err = CUT_ERR_INIT;
        s->s3_key = extract_s3_key(r->s3_key, tpl_lookup, &tv, &err);
        if (!s->s3_key)
            snprintf(s->unmirrorable, sizeof(s->unmirrorable), "%s", err.msg);
    }
    s->vars = json_dumps(vars, JSON_COMPACT | JSON_SORT_KEYS);
    if (s->mp) {
        if (multipart_filename(s->mp))
            s->filename = xstrdup(multipart_filename(s->mp));
        if (multipart_file_type(s->mp))
            s->content_type = xstrdup(multipart_file_type(s->mp));
    }
    ok = true;
out:
    for (size_t i = 0; i < r->nvars; i++)
        free(values[i]);
    free(values);
    json_decref(vars);
    return ok;
}

/* ---- recording ------------------------------------------------------------------------------ */

/* The record of s as the database and the journal take it (strings borrowed from s). */
static struct pgstore_doc_in record_of(const struct up *s)
{
    struct pgstore_doc_in d = {
        .storage_key = s->storage_key,
        .s3_key = s->s3_key ? s->s3_key : "",
        .origin = "upload",
        .vars = s->vars,
        .spool_path = s->spool_ok ? s->spool_path : NULL,
        .size = s->spool_ok ? (int64_t)s->size : -1,
        .md5 = s->spool_ok ? s->md5 : NULL,
        .sha256 = s->spool_ok ? s->sha256 : NULL,
        .content_type = s->content_type,
        .filename = s->filename,
        .failed_reason = s->unmirrorable[0] ? s->unmirrorable : NULL,
        .answered_seq = (int64_t)s->seq,
    };
    return d;
}

static char *record_json(const struct up *s)
{
    struct pgstore_doc_in d = record_of(s);
    return journal_doc_encode(&d);
}

/* Writes one record to the database (an unmirrorable one straight as failed, with its
 * reason). A record older than the one the row holds is not applied: its spool file is
 * removed, and it is counted. Returns pgstore_upsert()'s. */
static int write_record(upload *u, pgstore *db, const struct pgstore_doc_in *d, bool *superseded,
                        cut_err *err)
{
    int64_t gen = 0;
    int rc = pgstore_upsert(db, d, &gen, err);

    *superseded = rc == 0 && gen < 0;
    if (*superseded) {
        stat_add(u, &u->st.superseded);
        log_msgf(LOG_INFO, "upload_superseded",
                 "%s: not recorded: answered (sequence %lld) before the upload or delete of "
                 "this key that the database holds",
                 d->storage_key, (long long)d->answered_seq);
        if (d->spool_path)
            unlink(d->spool_path);
    }
    return rc;
}

/* Appends a record to the journal (marking the backlog); false with err set when it fails. */
static bool journal_keep(upload *u, const char *text, cut_err *err)
{
    bool ok;
    if (!text) {
        err_set(err, CUT_EINVAL, "journal", "the record is not valid UTF-8");
        return false;
    }
    pthread_mutex_lock(&u->jmu);
    ok = journal_append(u->d.journal, text, strlen(text), err);
    if (ok)
        u->backlog = true;
    pthread_mutex_unlock(&u->jmu);
    return ok;
}

static bool has_backlog(upload *u)
{
    bool b;
    pthread_mutex_lock(&u->jmu);
    b = u->backlog;
    pthread_mutex_unlock(&u->jmu);
    return b;
}

static void record_job(worker_ctx *ctx, void *arg)
{
    struct up *s = arg;
    upload *u = s->u;
    cut_err err = CUT_ERR_INIT;
    const char *unm = s->unmirrorable[0] ? s->unmirrorable : NULL;
    struct pgstore_doc_in rec = record_of(s);
    bool done = false, superseded = false;

    if (!s->spool_ok && !unm) {
        stat_add(u, &u->st.spool_failed);
        log_msgf(LOG_WARN, "upload_spool", "%s: recorded for a copy from the legacy store: %s",
                 s->storage_key, s->spool_why[0] ? s->spool_why : "no spool file");
    }
    if (u->d.journal && has_backlog(u)) {
        /* earlier records wait in the journal: this one goes behind them */
        char *text = record_json(s);
        cut_err jerr = CUT_ERR_INIT;
        if (journal_keep(u, text, &jerr)) {
            stat_add(u, &u->st.journaled);
            done = true;
        } else {
            log_msgf(LOG_WARN, "upload_journal",
                     "%s: the journal failed (%s): recorded in the database ahead of older "
                     "journal records",
                     s->storage_key, jerr.msg);
        }
        free(text);
    }
    if (done) {
        /* replayed by upload_replay_journal() */
    } else if (write_record(u, worker_store(ctx), &rec, &superseded, &err) == 0) {
        if (superseded) {
            /* counted and logged by write_record() */
        } else {
            stat_add(u, unm ? &u->st.unmirrorable : &u->st.recorded);
            if (unm)
                log_msgf(LOG_WARN, "upload_unmirrorable", "%s: recorded as failed: %s",
                         s->storage_key, unm);
            mirror_kick(u->d.mirror);
        }
    } else {
        char *text = record_json(s);
        cut_err jerr = CUT_ERR_INIT;
        if (u->d.journal && journal_keep(u, text, &jerr)) {
            stat_add(u, &u->st.journaled);
            log_msgf(LOG_WARN, "upload_journaled",
                     "%s: the database is away (%s): kept in the journal", s->storage_key, err.msg);
        } else {
            stat_add(u, &u->st.lost);
            log_msgf(LOG_ERROR, "upload_lost",
                     "%s: NOT RECORDED: the database is away (%s) and the journal failed (%s); "
                     "a backfill will find it",
                     s->storage_key, err.msg, u->d.journal ? jerr.msg : "no journal");
        }
        free(text);
    }
    metrics_observe_us(MET_UPLOAD_RECORD, 0, now_us() - s->answer_us);
    proxy_exchange_resume(s->answer);
    up_unref(s);
}

/* Both halves (the spool's end, the resolved record) are in: hand it to a recorder. */
static void join_one(struct up *s)
{
    if (atomic_fetch_sub(&s->join, 1) != 1)
        return;
    if (!worker_submit(s->u->d.recorder, record_job, s)) {
        /* the refusal is counted and logged by the pool */
        stat_add(s->u, &s->u->st.lost);
        log_msgf(LOG_ERROR, "upload_lost",
                 "%s: NOT RECORDED: the recorder's queue is full; "
                 "a backfill will find it",
                 s->storage_key);
        proxy_exchange_resume(s->answer);
        up_unref(s);
    }
}

static void spooled(void *arg, const struct spool_result *r)
{
    struct up *s = arg;
    s->spool_ok = r->ok;
    if (r->ok) {
        s->spool_path = xstrdup(r->path);
        s->size = r->size;
        spool_hex(r->md5, 16, s->md5);
        spool_hex(r->sha256, 32, s->sha256);
    } else {
        snprintf(s->spool_why, sizeof(s->spool_why), "%s", r->err.msg);
        /* counted by record_job() */
    }
    join_one(s);
}

/* 2xx: resolve, finish the spool, wait for the record. */
static enum proxy_answer_mode begin_record(struct up *s, proxy_exchange *x, const json_t *answer)
{
    if (!resolve(s, x, answer)) {
        spool_discard(s->sf);
        s->sf = NULL;
        return PROXY_PASS;
    }
    if (s->mp && !s->body_failed) {
        cut_err err = CUT_ERR_INIT;
        if (!multipart_finish(s->mp, &err))
            body_fail(s, "multipart: %s", err.msg);
    }
    if (!proxy_exchange_request_complete(x))
        body_fail(s, "%s", "the app answered before the whole body arrived");
    atomic_init(&s->join, s->body_failed ? 1 : 2);
    s->answer_us = now_us();
    s->answer = proxy_exchange_wait(x, s->u->d.record_wait_ms);
    s->waiting = true;
    atomic_fetch_add(&s->refs, 1); /* the recorder's */
    if (s->body_failed) {
        snprintf(s->spool_why, sizeof(s->spool_why), "%s", s->body_why);
        spool_discard(s->sf);
    } else {
        spool_finish(s->sf, spooled, s);
    }
    s->sf = NULL;
    join_one(s);
    return PROXY_WAIT;
}

static bool needs_answer_body(const struct cfg_route *r)
{
    if (r->key.kind == SRC_RESPONSE_JSON)
        return true;
    for (size_t i = 0; i < r->nvars; i++)
        if (r->vars[i].src.kind == SRC_RESPONSE_JSON)
            return true;
    return false;
}

static enum proxy_answer_mode up_response(void *arg, void *state, proxy_exchange *x, int status)
{
    struct up *s = state;
    (void)arg;
    if (s->waiting)
        return PROXY_PASS; /* resumed after the record (or its deadline) */
    if (status < 200 || status > 299) {
        spool_discard(s->sf);
        s->sf = NULL;
        stat_add(s->u, &s->u->st.refused_by_app);
        return PROXY_PASS;
    }
    s->seq = upload_seq_next();
    if (needs_answer_body(s->route))
        return PROXY_HOLD;
    return begin_record(s, x, NULL);
}

static enum proxy_answer_mode up_response_body(void *arg, void *state, proxy_exchange *x,
                                               struct buf *body)
{
    struct up *s = state;
    json_error_t je;
    json_t *answer;
    enum proxy_answer_mode mode;

    (void)arg;
    if (s->waiting)
        return PROXY_PASS;
    answer = json_loadb(body->data ? body->data : "", body->len, JSON_DECODE_ANY, &je);
    mode = begin_record(s, x, answer);
    json_decref(answer);
    return mode;
}

static void up_done(void *arg, void *state, const struct proxy_outcome *o)
{
    struct up *s = state;
    (void)arg;
    (void)o;
    if (s->sf) {
        /* the answer was never a 2xx that got this far (client gone, 413, 502...) */
        spool_discard(s->sf);
        s->sf = NULL;
    }
    up_unref(s);
}

/* ---- deletes --------------------------------------------------------------------------------- */

struct del {
    upload *u;
    char *key;
    uint64_t seq; /* the app's 2xx answer, in order */
    proxy_ticket answer;
    bool waiting;
};

static void *del_start(void *arg, proxy_exchange *x, const struct proxy_match *m)
{
    struct del *d = xcalloc(1, sizeof(*d));
    char why[600];
    struct up tmp = {.m = m, .route = m->route};
    d->u = arg;
    if (m->route->key.kind != SRC_RESPONSE_JSON && m->route->key.kind != SRC_RESPONSE_HEADER)
        d->key = source_value(&tmp, x, &m->route->key, NULL, why, sizeof(why));
    return d;
}

/* Recorder thread: the document becomes `deleted`, which makes the removal of its S3 object
 * work for the mirror (retried there like a copy, and done again should a copy in flight land
 * later), unless an upload the app answered after this delete is recorded already. The object
 * is also deleted here once, so that it is usually gone before the client gets the app's
 * answer; only the mirror records the removal. */
static void delete_job(worker_ctx *ctx, void *arg)
{
    struct del *d = arg;
    pgstore *db = worker_store(ctx);
    struct pgstore_delete_out out;
    cut_err err = CUT_ERR_INIT;

    if (pgstore_delete_answered(db, d->key, (int64_t)d->seq, "deleted by the app", &out, &err) !=
        0) {
        log_msgf(LOG_ERROR, "delete", "%s: deleted by the app, not marked deleted: %s", d->key,
                 err.msg);
    } else if (out.result == PGSTORE_DEL_SUPERSEDED) {
        stat_add(d->u, &d->u->st.superseded);
        log_msgf(LOG_INFO, "upload_superseded",
                 "%s: delete not applied: the app answered a newer upload of this key, recorded "
                 "first",
                 d->key);
    } else if (out.result == PGSTORE_DEL_DELETED) {
        struct s3_result r;
        cut_err serr = CUT_ERR_INIT;
        stat_add(d->u, &d->u->st.deleted);
        if (d->u->d.s3 && out.s3_key[0] && out.was != DOC_FAILED &&
            s3_delete(d->u->d.s3, out.s3_key, &r, &serr) != 0)
            log_msgf(LOG_WARN, "delete",
                     "%s: marked deleted; its S3 object stays until the "
                     "mirror removes it: %s",
                     d->key, serr.msg);
        mirror_kick(d->u->d.mirror);
    }
    proxy_exchange_resume(d->answer);
    free(d->key);
    free(d);
}

static enum proxy_answer_mode del_response(void *arg, void *state, proxy_exchange *x, int status)
{
    struct del *d = state;
    (void)arg;
    if (d->waiting || status < 200 || status > 299 || !d->key)
        return PROXY_PASS;
    struct del *job = xcalloc(1, sizeof(*job));
    job->u = d->u;
    job->key = xstrdup(d->key);
    job->seq = upload_seq_next();
    job->answer = proxy_exchange_wait(x, d->u->d.record_wait_ms);
    d->waiting = true;
    if (!worker_submit(d->u->d.recorder, delete_job, job)) {
        log_msgf(LOG_ERROR, "delete",
                 "%s: deleted by the app, not marked deleted: the "
                 "recorder's queue is full",
                 d->key);
        free(job->key);
        free(job);
        return PROXY_PASS;
    }
    return PROXY_WAIT;
}

static void del_done(void *arg, void *state, const struct proxy_outcome *o)
{
    struct del *d = state;
    (void)arg;
    (void)o;
    free(d->key);
    free(d);
}

/* ---- the journal ------------------------------------------------------------------------------
 */

struct replay {
    upload *u;
    pgstore *db;
    long n;       /* records written */
    long skipped; /* records the database cannot take */
    cut_err err;
};

static bool replay_one(void *arg, const void *payload, size_t n)
{
    struct replay *r = arg;
    struct journal_doc jd;
    cut_err err = CUT_ERR_INIT;
    bool superseded;
    int rc;

    if (!journal_doc_decode(payload, n, &jd, &err)) {
        log_msgf(LOG_ERROR, "journal", "a journal record is skipped: %s", err.msg);
        r->skipped++;
        return true;
    }
    rc = write_record(r->u, r->db, &jd.doc, &superseded, &err);
    if (rc != 0 && (err.code != CUT_EDB || pgstore_last_refused(r->db))) {
        /* the database refuses this record for what it holds: skipped, or it would hold back
         * every record behind it for ever. Only the failure itself tells: a lost connection,
         * or a server that was away, is not a refusal even when a new connection works at
         * once (a probe on one would take a record cut by a restart for a refused one, and
         * lose it) */
        log_msgf(LOG_ERROR, "upload_lost",
                 "%s: NOT RECORDED: the database refuses its journal record (%s); "
                 "a backfill will find it",
                 jd.doc.storage_key, err.msg);
        pthread_mutex_lock(&r->u->mu);
        r->u->st.lost++;
        pthread_mutex_unlock(&r->u->mu);
        r->skipped++;
        rc = 0;
    } else if (rc != 0) {
        r->err = err;
    } else {
        r->n++;
    }
    journal_doc_clear(&jd);
    return rc == 0;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

long upload_replay_journal(upload *u, pgstore *db, cut_err *err)
{
    char *path, *aside;
    long total = 0, done = -1;

    if (!u->d.journal)
        return 0;
    path = xasprintf("%s/journal.log", u->cfg->spool_dir);
    aside = xasprintf("%s/journal.replay", u->cfg->spool_dir);
    /* a few rounds: records appended behind the backlog during a replay are taken at once */
    for (int round = 0; round < 4; round++) {
        struct replay r = {.u = u, .db = db};
        struct journal_scan scan;

        pthread_mutex_lock(&u->jmu);
        /* an aside file left by an earlier replay goes first */
        if (access(aside, F_OK) != 0) {
            if (file_size(path) <= 0) {
                u->backlog = false; /* everything appended is in the database */
                pthread_mutex_unlock(&u->jmu);
                break;
            }
            if (!journal_rotate(u->d.journal, aside, err)) {
                pthread_mutex_unlock(&u->jmu);
                goto out;
            }
        }
        pthread_mutex_unlock(&u->jmu);
        if (!journal_read_file(aside, 1ull << 32, replay_one, &r, &scan, err))
            goto out;
        total += r.n;
        if (err_isset(&r.err) || scan.records != (uint64_t)(r.n + r.skipped)) {
            err_set(err, r.err.code ? r.err.code : CUT_EDB, "journal",
                    "replay stopped after %ld: %s", r.n, r.err.msg);
            goto out;
        }
        if (scan.skipped_bytes)
            log_msgf(LOG_WARN, "journal", "replay skipped %llu damaged bytes (%llu of a torn tail)",
                     (unsigned long long)scan.skipped_bytes, (unsigned long long)scan.torn_tail);
        unlink(aside);
    }
    done = total;
out:
    if (total) {
        pthread_mutex_lock(&u->mu);
        u->st.replayed += (uint64_t)total;
        pthread_mutex_unlock(&u->mu);
        log_msgf(LOG_INFO, "journal", "%ld records replayed into the database", total);
        mirror_kick(u->d.mirror);
    }
    free(path);
    free(aside);
    return done;
}

/* ---- the feature ---------------------------------------------------------------------------- */

upload *upload_new(const struct config *cfg, const struct upload_deps *d, cut_err *err)
{
    upload *u;
    if (!d->spool || !d->recorder || !d->flags) {
        err_set(err, CUT_EINVAL, "upload", "dual-write needs a spool, recorders and the flags");
        return NULL;
    }
    u = xcalloc(1, sizeof(*u));
    u->cfg = cfg;
    u->d = *d;
    if (!u->d.record_wait_ms)
        u->d.record_wait_ms = 5000;
    pthread_mutex_init(&u->mu, NULL);
    pthread_mutex_init(&u->jmu, NULL);
    if (u->d.journal) {
        /* records of an earlier run wait for their replay: new ones go behind them */
        char *path = xasprintf("%s/journal.log", cfg->spool_dir);
        char *aside = xasprintf("%s/journal.replay", cfg->spool_dir);
        u->backlog = file_size(path) > 0 || access(aside, F_OK) == 0;
        free(path);
        free(aside);
    }
    return u;
}

bool upload_register(upload *u, proxy *px, cut_err *err)
{
    struct proxy_handler up = {
        .arg = u,
        .on_start = up_start,
        .on_request_body = up_body,
        .on_response = up_response,
        .on_response_body = up_response_body,
        .on_done = up_done,
    };
    struct proxy_handler del = {
        .arg = u,
        .on_start = del_start,
        .on_response = del_response,
        .on_done = del_done,
    };
    return proxy_add_handler(px, ROUTE_UPLOAD, &up, err) &&
           proxy_add_handler(px, ROUTE_DELETE, &del, err);
}

void upload_free(upload *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->nreaders; i++)
        flags_reader_free(u->readers[i]);
    pthread_mutex_destroy(&u->mu);
    pthread_mutex_destroy(&u->jmu);
    free(u);
}

void upload_stats_get(upload *u, struct upload_stats *out)
{
    pthread_mutex_lock(&u->mu);
    *out = u->st;
    pthread_mutex_unlock(&u->mu);
}
