/*
 * mirror: claim, copy, verify, record (see mirror.h).
 *
 * One thread per mirror owns a state-store connection and every database call; the copies
 * and HEADs run on the transfer engine, whose completion callbacks only move the job to the
 * mirror's list of finished steps and wake the thread. So the engine thread never waits on
 * PostgreSQL and the mirror thread never waits on S3. A job goes:
 *
 *   claimed ─► COPY (spool file, or the legacy store's raw original) ─► HEAD ─► record
 *
 * and its outcome is written with the claim's lease token: pgstore_complete() to `copied`,
 * then the transition to `verified` for the generation that was copied. A copy is verified
 * when the transfer engine saw S3 accept bytes whose MD5 (Content-MD5, or the ETag of a single
 * PUT) and SHA-256 match those recorded, and a HEAD afterwards agrees on the size, the ETag and
 * the SHA-256 checksum when S3 reports one.
 *
 * A copy that finished after its document moved on (a newer generation recorded, or the
 * document deleted) must not leave older bytes in S3: when the outcome is refused, the mirror
 * looks at the document again. Deleted: the object is removed. A newer generation already
 * verified: the object is checked against that generation's size and MD5, and the document
 * is sent back to the queue (`mismatch`) when S3 now holds other bytes.
 */
#include "storage/mirror.h"

#include "storage/pgstore.h"
#include "storage/spool.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum phase { PH_COPY, PH_HEAD, PH_RECHECK };

struct job {
    struct job *next;
    mirror *m;
    struct pgstore_doc doc;
    char token[33];
    enum phase phase;
    bool from_legacy;
    unsigned char md5[16], sha256[32];
    bool have_md5, have_sha256;
    char *disposition;
    /* the step that just ended (written on the engine thread, read on the mirror's) */
    struct xfer_outcome out;
    cut_err err;
    /* the copy's outcome, kept for the HEAD's comparison */
    struct xfer_outcome copy;
    /* PH_RECHECK: what the newer generation must look like */
    int64_t want_size;
    char want_md5[33];
    int64_t want_generation;
};

struct mirror {
    struct mirror_opts o;
    char *url, *owner;
    s3_client *s3;
    xfer_engine *e;
    legacy_store *legacy;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *done; /* steps ended, newest first */
    bool kicked, stopping;
    struct mirror_stats st;
    int inflight; /* the mirror thread's */
    pgstore *store;
};

static uint64_t now_ms(void)
{
    return now_us() / 1000;
}

static bool from_hex(const char *hex, unsigned char *out, size_t n)
{
    if (!hex || strlen(hex) != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

static void job_free(struct job *j)
{
    if (!j)
        return;
    pgstore_doc_clear(&j->doc);
    free(j->disposition);
    free(j);
}

/* Engine thread: a step ended. */
static void step_done(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    struct job *j = arg;
    mirror *m = j->m;
    j->out = *o;
    j->err = *err;
    pthread_mutex_lock(&m->mu);
    j->next = m->done;
    m->done = j;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static void count(mirror *m, uint64_t *field)
{
    pthread_mutex_lock(&m->mu);
    (*field)++;
    pthread_mutex_unlock(&m->mu);
}

/* The attempt failed: recorded with its reason, rescheduled or `failed`. Frees j. */
static void attempt_failed(mirror *m, struct job *j, const char *reason)
{
    cut_err err = CUT_ERR_INIT;
    enum doc_state state = DOC_PENDING;

    if (pgstore_fail_backoff(m->store, j->doc.storage_key, j->token, reason, m->o.max_attempts,
                             m->o.backoff_ms, m->o.max_backoff_ms, &state, &err) != 0) {
        if (err.code == CUT_ECONFLICT)
            count(m, &m->st.lost_leases);
        log_msgf(LOG_WARN, "mirror", "%s: cannot record a failed copy (%s): %s", j->doc.storage_key,
                 reason, err.msg);
    } else if (state == DOC_FAILED) {
        count(m, &m->st.failed);
        log_msgf(LOG_ERROR, "mirror", "%s: failed after %d attempts: %s", j->doc.storage_key,
                 m->o.max_attempts, reason);
    } else {
        count(m, &m->st.retried);
        log_msgf(LOG_WARN, "mirror", "%s: copy failed, will retry: %s", j->doc.storage_key, reason);
    }
    m->inflight--;
    job_free(j);
}

static void submit_copy(mirror *m, struct job *j)
{
    struct xfer_src src = {0};
    struct xfer_sink sink = {0};
    cut_err err = CUT_ERR_INIT;

    if (!j->from_legacy && j->doc.spool_path && access(j->doc.spool_path, R_OK) == 0) {
        src.kind = XFER_SRC_FILE;
        src.path = j->doc.spool_path;
    } else if (m->legacy) {
        if (!j->from_legacy)
            count(m, &m->st.from_legacy);
        j->from_legacy = true;
        src.kind = XFER_SRC_LEGACY;
        src.key = j->doc.storage_key;
        src.legacy = m->legacy;
    } else {
        attempt_failed(m, j, "the spool file is gone and no legacy store is configured");
        return;
    }
    /* the bytes must be those the application accepted, whichever the source */
    src.md5 = j->have_md5 ? j->md5 : NULL;
    src.sha256 = j->have_sha256 ? j->sha256 : NULL;
    sink.kind = XFER_SINK_S3;
    sink.key = j->doc.s3_key;
    sink.content_type = j->doc.content_type;
    sink.content_disposition = j->disposition;
    j->phase = PH_COPY;
    if (xfer_copy(m->e, &src, &sink, step_done, j, &err) != 0)
        attempt_failed(m, j, err.msg);
}

static void submit_head(mirror *m, struct job *j, enum phase phase)
{
    cut_err err = CUT_ERR_INIT;
    j->phase = phase;
    if (xfer_head(m->e, j->doc.s3_key, step_done, j, &err) != 0) {
        if (phase == PH_HEAD) {
            attempt_failed(m, j, err.msg);
        } else {
            log_msgf(LOG_WARN, "mirror", "%s: cannot check S3 after a lost lease: %s",
                     j->doc.storage_key, err.msg);
            m->inflight--;
            job_free(j);
        }
    }
}

/* The outcome of j was refused (lease lost, or the document moved on while it was copied):
 * make sure S3 does not keep bytes the document no longer has. Consumes j. */
static void after_refusal(mirror *m, struct job *j, const char *why)
{
    struct pgstore_doc cur = {0};
    cut_err err = CUT_ERR_INIT;
    struct s3_result r;

    count(m, &m->st.lost_leases);
    log_msgf(LOG_INFO, "mirror", "%s: generation %lld copied but not recorded: %s",
             j->doc.storage_key, (long long)j->doc.generation, why);
    if (pgstore_doc_get(m->store, j->doc.storage_key, &cur, &err) != 0)
        goto done;
    if (cur.state == DOC_DELETED) {
        cut_err derr = CUT_ERR_INIT;
        if (s3_delete(m->s3, j->doc.s3_key, &r, &derr) != 0)
            log_msgf(LOG_ERROR, "mirror", "%s: deleted, but its late copy could not be removed: %s",
                     j->doc.storage_key, derr.msg);
        goto done;
    }
    if (cur.generation != j->doc.generation &&
        (cur.state == DOC_COPIED || cur.state == DOC_VERIFIED || cur.state == DOC_ACTIVE) &&
        cur.md5 && strlen(cur.md5) == 32 && strcmp(cur.s3_key, j->doc.s3_key) == 0) {
        /* a newer generation was copied first: is its object still the one in S3? */
        j->want_size = cur.size;
        memcpy(j->want_md5, cur.md5, 33);
        j->want_generation = cur.generation;
        pgstore_doc_clear(&cur);
        submit_head(m, j, PH_RECHECK);
        return;
    }
done:
    pgstore_doc_clear(&cur);
    m->inflight--;
    job_free(j);
}

static void hex_of(const unsigned char *in, size_t n, char *out)
{
    spool_hex(in, n, out);
}

static void b64_of(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static void head_checked(mirror *m, struct job *j)
{
    const struct s3_result *h = &j->out.s3;
    char md5[33], sha[65], sha_b64[48], why[256];
    cut_err err = CUT_ERR_INIT;

    hex_of(j->copy.md5, 16, md5);
    hex_of(j->copy.sha256, 32, sha);
    b64_of(j->copy.sha256, 32, sha_b64);
    if (h->content_length != (int64_t)j->copy.bytes) {
        snprintf(why, sizeof(why), "S3 reports %lld bytes after a copy of %llu",
                 (long long)h->content_length, (unsigned long long)j->copy.bytes);
        attempt_failed(m, j, why);
        return;
    }
    if (h->checksum_sha256[0] && strcmp(h->checksum_sha256, sha_b64) != 0) {
        attempt_failed(m, j, "S3's SHA-256 checksum differs from the bytes copied");
        return;
    }
    if (j->copy.s3.etag[0] && h->etag[0] && strcmp(j->copy.s3.etag, h->etag) != 0) {
        attempt_failed(m, j, "S3's ETag changed between the copy and the HEAD");
        return;
    }
    struct pgstore_outcome out = {
        .size = (int64_t)j->copy.bytes,
        .md5 = md5,
        .sha256 = sha,
        .s3_etag = h->etag[0] ? h->etag : NULL,
        .s3_sha256 = h->checksum_sha256[0] ? h->checksum_sha256 : NULL,
        .detail = j->from_legacy ? "copied from the legacy store" : "copied from the spool",
    };
    if (pgstore_complete(m->store, j->doc.storage_key, j->token, DOC_COPIED, &out, &err) != 0) {
        if (err.code == CUT_ECONFLICT || err.code == CUT_ENOTFOUND) {
            after_refusal(m, j, err.msg);
            return;
        }
        log_msgf(LOG_WARN, "mirror", "%s: cannot record the copy: %s", j->doc.storage_key, err.msg);
        m->inflight--;
        job_free(j);
        return;
    }
    if (pgstore_transition(m->store, j->doc.storage_key, j->doc.generation, DOC_VERIFIED,
                           "S3 agrees on size and checksum", &err) != 0) {
        if (err.code == CUT_ECONFLICT) {
            after_refusal(m, j, err.msg);
            return;
        }
        /* stays `copied`: verification picks it up */
        log_msgf(LOG_WARN, "mirror", "%s: copied, not marked verified: %s", j->doc.storage_key,
                 err.msg);
    } else {
        count(m, &m->st.verified);
        if (j->doc.spool_path && !m->o.keep_spool)
            unlink(j->doc.spool_path);
    }
    m->inflight--;
    job_free(j);
}

static void rechecked(mirror *m, struct job *j)
{
    const struct s3_result *h = &j->out.s3;
    cut_err err = CUT_ERR_INIT;
    bool same = err_isset(&j->err)
                    ? false
                    : h->content_length == j->want_size && strcasecmp(h->etag, j->want_md5) == 0;
    if (!same && j->err.code != CUT_ENOTFOUND) {
        if (pgstore_transition(m->store, j->doc.storage_key, j->want_generation, DOC_MISMATCH,
                               "an older generation's copy landed after this one was copied",
                               &err) == 0)
            log_msgf(LOG_WARN, "mirror", "%s: S3 holds an older generation's bytes: copying again",
                     j->doc.storage_key);
    }
    m->inflight--;
    job_free(j);
}

static void advance(mirror *m, struct job *j)
{
    switch (j->phase) {
    case PH_COPY:
        if (err_isset(&j->err)) {
            bool spool_bad =
                !j->from_legacy && (j->err.code == CUT_EIO || j->err.code == CUT_ECONFLICT);
            if (spool_bad && m->legacy) {
                log_msgf(LOG_WARN, "mirror",
                         "%s: the spool file cannot be used (%s): copying from the legacy store",
                         j->doc.storage_key, j->err.msg);
                j->from_legacy = true;
                count(m, &m->st.from_legacy);
                submit_copy(m, j);
                return;
            }
            attempt_failed(m, j, j->err.msg);
            return;
        }
        j->copy = j->out;
        submit_head(m, j, PH_HEAD);
        return;
    case PH_HEAD:
        if (err_isset(&j->err)) {
            attempt_failed(m, j, j->err.msg);
            return;
        }
        head_checked(m, j);
        return;
    case PH_RECHECK:
        rechecked(m, j);
        return;
    }
}

static void claim_some(mirror *m, int want)
{
    struct pgstore_claim c = {0};
    cut_err err = CUT_ERR_INIT;

    if (pgstore_claim(m->store, m->owner, (size_t)want, m->o.lease_ms, &c, &err) != 0) {
        static uint64_t last_log;
        if (now_ms() - last_log > 10000) {
            last_log = now_ms();
            log_msgf(LOG_WARN, "mirror", "cannot claim work: %s", err.msg);
        }
        return;
    }
    for (size_t i = 0; i < c.n; i++) {
        struct job *j = xcalloc(1, sizeof(*j));
        j->m = m;
        j->doc = c.docs[i];
        memset(&c.docs[i], 0, sizeof(c.docs[i]));
        memcpy(j->token, c.token, sizeof(j->token));
        j->have_md5 = from_hex(j->doc.md5, j->md5, 16);
        j->have_sha256 = from_hex(j->doc.sha256, j->sha256, 32);
        j->disposition = s3_content_disposition(j->doc.filename);
        m->inflight++;
        count(m, &m->st.claimed);
        submit_copy(m, j);
    }
    pgstore_claim_clear(&c);
}

static void *mirror_main(void *arg)
{
    mirror *m = arg;
    uint64_t next_poll = 0;

    for (;;) {
        struct job *done, *next;
        bool stopping, kicked;

        pthread_mutex_lock(&m->mu);
        for (;;) {
            if (m->done)
                break;
            if (m->stopping) {
                if (m->inflight == 0)
                    break;
                pthread_cond_wait(&m->cv, &m->mu); /* the copies in flight end */
                continue;
            }
            if (m->kicked || now_ms() >= next_poll)
                break;
            uint64_t wait_ms = next_poll - now_ms();
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += (time_t)(wait_ms / 1000);
            ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        }
        done = m->done;
        m->done = NULL;
        kicked = m->kicked;
        m->kicked = false;
        stopping = m->stopping;
        pthread_mutex_unlock(&m->mu);

        /* oldest first */
        struct job *rev = NULL;
        for (; done; done = next) {
            next = done->next;
            done->next = rev;
            rev = done;
        }
        for (; rev; rev = next) {
            next = rev->next;
            advance(m, rev);
        }
        pthread_mutex_lock(&m->mu);
        m->st.inflight = m->inflight;
        pthread_mutex_unlock(&m->mu);
        if (stopping) {
            if (m->inflight == 0)
                break;
            continue;
        }
        if ((kicked || now_ms() >= next_poll) && m->inflight < m->o.max_inflight) {
            int want = m->o.max_inflight - m->inflight;
            int before = m->inflight;
            claim_some(m, want);
            /* a full batch: there may be more waiting, look again at once */
            next_poll = now_ms() + (m->inflight - before >= want ? 0 : (uint64_t)m->o.poll_ms);
        }
    }
    return NULL;
}

mirror *mirror_start(const struct mirror_opts *o, s3_client *s3, xfer_engine *e,
                     legacy_store *legacy, cut_err *err)
{
    mirror *m;

    if (!o || !o->database_url || !s3 || !e) {
        err_set(err, CUT_EINVAL, "mirror", "a mirror needs a database URL and a transfer engine");
        return NULL;
    }
    m = xcalloc(1, sizeof(*m));
    m->o = *o;
    if (m->o.max_inflight <= 0)
        m->o.max_inflight = 16;
    if (m->o.lease_ms <= 0)
        m->o.lease_ms = 300000;
    if (m->o.max_attempts <= 0)
        m->o.max_attempts = 10;
    if (m->o.backoff_ms <= 0)
        m->o.backoff_ms = 1000;
    if (m->o.max_backoff_ms <= 0)
        m->o.max_backoff_ms = 10000;
    if (m->o.poll_ms <= 0)
        m->o.poll_ms = 1000;
    m->url = xstrdup(o->database_url);
    m->owner = o->owner ? xstrdup(o->owner) : xasprintf("mirror:%ld", (long)getpid());
    m->o.database_url = m->url;
    m->o.owner = m->owner;
    m->s3 = s3;
    m->e = e;
    m->legacy = legacy;
    m->store = pgstore_open(m->url);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (pthread_create(&m->thread, NULL, mirror_main, m) != 0) {
        err_set(err, CUT_EIO, "mirror", "cannot start the mirror thread");
        pgstore_free(m->store);
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->cv);
        free(m->url);
        free(m->owner);
        free(m);
        return NULL;
    }
    return m;
}

void mirror_kick(mirror *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->kicked = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

void mirror_free(mirror *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    pgstore_free(m->store);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m->url);
    free(m->owner);
    free(m);
}

void mirror_stats_get(mirror *m, struct mirror_stats *out)
{
    pthread_mutex_lock(&m->mu);
    *out = m->st;
    pthread_mutex_unlock(&m->mu);
}
