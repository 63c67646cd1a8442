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
 * and its outcome is written with the claim's lease token: pgstore_complete_many() to `copied`,
 * then the transition to `verified` for the generation that was copied, for all the copies
 * that ended while the thread was busy in one statement (so the thread's round trips to the
 * database do not grow with the copies it records). A copy is verified
 * when the transfer engine saw S3 accept bytes whose MD5 (Content-MD5, or the ETag of a single
 * PUT) and SHA-256 match those recorded, and a HEAD afterwards agrees on the size, the ETag and
 * the SHA-256 checksum when S3 reports one.
 *
 * The leases of the jobs in flight are renewed by the mirror's thread every lease_ms / 3, all
 * in one statement (pgstore_renew_many), so that a copy slower than a lease is not claimed and
 * copied again by another mirror meanwhile; a job whose lease is found gone records nothing
 * (after_refusal()). The backfill's copies are this mirror's too (backfill_runner.c).
 *
 * A deleted document whose object is not recorded as removed is work too: the claim hands it
 * over, the object is deleted (on a small worker pool: the call blocks, and neither the
 * mirror's thread nor the engine's may wait on S3) and pgstore_removed() records it, fenced by
 * the lease; a failed removal is retried with the same backoff as a copy.
 *
 * A copy or a removal that finished after its document moved on (a newer generation
 * recorded, the document deleted, the lease voided) must not leave other bytes in S3: when its
 * outcome is refused, the mirror looks at the document again. Deleted: its removal is due
 * again (pgstore_requeue), so a delete always has the last word. Recorded again since: S3 is
 * asked (HEAD, after this copy landed) whether it holds the current generation's bytes (size
 * and MD5, known from the upload); when not, the current generation goes back to work whatever
 * its state, its lease voided, so that its own copy, in flight or verified already, cannot
 * stand: the last PUT to land is always one of the current generation.
 */
#include "storage/mirror.h"

#include "core/metrics.h"
#include "storage/pgstore.h"
#include "storage/spool.h"
#include "storage/worker.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum phase { PH_COPY, PH_HEAD, PH_RECHECK, PH_REMOVE };

struct job {
    struct job *next;
    struct job *live_prev, *live_next; /* the mirror's jobs in flight (its thread's) */
    bool lease_lost;                   /* a renewal found the lease gone */
    mirror *m;
    struct pgstore_doc doc;
    char token[33];
    enum phase phase;
    bool from_legacy;
    unsigned char md5[16], sha256[32];
    bool have_md5, have_sha256;
    char md5_hex[33], sha256_hex[65]; /* the bytes copied, once the HEAD agrees */
    char *disposition;
    /* the step that just ended (written on the engine thread, read on the mirror's) */
    struct xfer_outcome out;
    cut_err err;
    /* the copy's outcome, kept for the HEAD's comparison */
    struct xfer_outcome copy;
    /* PH_RECHECK: what the newer generation must look like */
    int64_t want_size;
    char want_md5[33];
    char want_sha256_b64[48]; /* "" when unknown */
    int64_t want_generation;
};

struct mirror {
    struct mirror_opts o;
    char *url, *owner;
    s3_client *s3;
    xfer_engine *e;
    legacy_store *legacy;
    worker_pool *remover; /* runs the blocking DELETEs of removals */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *done; /* steps ended, newest first */
    bool kicked, stopping;
    struct mirror_stats st;
    int inflight;      /* the mirror thread's */
    struct job *live;  /* the jobs in flight, for their leases' renewal (the thread's) */
    struct job *ready; /* copies S3 agrees with, to record (the thread's) */
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

/* Mirror thread: j is in flight from its claim until job_free(). */
static void job_link(mirror *m, struct job *j)
{
    j->live_prev = NULL;
    j->live_next = m->live;
    if (m->live)
        m->live->live_prev = j;
    m->live = j;
}

/* Mirror thread: j's work has ended (or been given up); frees j. */
static void job_free(struct job *j)
{
    if (!j)
        return;
    if (j->live_prev)
        j->live_prev->live_next = j->live_next;
    else if (j->m && j->m->live == j)
        j->m->live = j->live_next;
    if (j->live_next)
        j->live_next->live_prev = j->live_prev;
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

/* Metrics of a finished job: outcome (enum met_copy_outcome), bytes and, for an upload copied
 * and verified, its lag from the record (created_at; a re-recorded document's updated_at,
 * which a claim leaves alone). */
static void count_metrics(const struct job *j, unsigned outcome)
{
    bool bf = j->doc.origin && strcmp(j->doc.origin, "backfill") == 0;
    unsigned origin = bf ? MET_ORIGIN_BACKFILL : MET_ORIGIN_UPLOAD;
    metrics_inc(MET_MIRROR_DOCUMENTS, origin, outcome);
    if (outcome != MET_COPY_VERIFIED)
        return;
    metrics_add(MET_MIRROR_BYTES, origin, 0, j->copy.bytes);
    if (bf) {
        metrics_inc(MET_BACKFILL_DOCUMENTS, MET_BACKFILL_VERIFIED, 0);
        metrics_add(MET_BACKFILL_BYTES, 0, 0, j->copy.bytes);
    } else {
        metrics_observe_us(
            MET_MIRROR_LAG, 0,
            metrics_age_us(j->doc.generation > 1 ? j->doc.updated_at : j->doc.created_at));
    }
}

/* The attempt failed: recorded with its reason, rescheduled or `failed` (at once when
 * another attempt cannot succeed: max_attempts 1). Frees j. */
static void attempt_failed_after(mirror *m, struct job *j, const char *reason, int max_attempts)
{
    cut_err err = CUT_ERR_INIT;
    enum doc_state state = DOC_PENDING;

    count_metrics(j, MET_COPY_FAILED);
    if (pgstore_fail_backoff(m->store, j->doc.storage_key, j->token, reason, max_attempts,
                             m->o.backoff_ms, m->o.max_backoff_ms, &state, &err) != 0) {
        if (err.code == CUT_ECONFLICT)
            count(m, &m->st.lost_leases);
        log_msgf(LOG_WARN, "mirror", "%s: cannot record a failed copy (%s): %s", j->doc.storage_key,
                 reason, err.msg);
    } else if (state == DOC_FAILED) {
        count(m, &m->st.failed);
        log_msgf(LOG_ERROR, "mirror", "%s: failed: %s", j->doc.storage_key, reason);
    } else {
        count(m, &m->st.retried);
        log_msgf(LOG_WARN, "mirror", "%s: attempt failed, will retry: %s", j->doc.storage_key,
                 reason);
    }
    m->inflight--;
    job_free(j);
}

static void attempt_failed(mirror *m, struct job *j, const char *reason)
{
    attempt_failed_after(m, j, reason, m->o.max_attempts);
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

/* S3 may hold other bytes than the document's current state says: back to work it goes
 * (generation 0: whichever is current). */
static void requeue(mirror *m, const char *key, int64_t generation, const char *why)
{
    cut_err err = CUT_ERR_INIT;
    enum doc_state state = DOC_PENDING;

    if (pgstore_requeue(m->store, key, generation, why, &state, &err) != 0) {
        if (err.code == CUT_ECONFLICT && generation != 0) {
            requeue(m, key, 0, why); /* recorded again meanwhile: the newest goes again */
            return;
        }
        log_msgf(LOG_ERROR, "mirror", "%s: %s, and it cannot be put back to work: %s", key, why,
                 err.msg);
        return;
    }
    count(m, &m->st.requeued);
    log_msgf(LOG_WARN, "mirror", "%s: %s: %s again", key, why,
             state == DOC_DELETED ? "removing its object" : "copying it");
    pthread_mutex_lock(&m->mu);
    m->kicked = true;
    pthread_mutex_unlock(&m->mu);
}

/* The outcome of j was refused (lease lost, or the document moved on while it was copied or
 * removed): make sure S3 does not keep bytes the document no longer has. Consumes j. */
static void after_refusal(mirror *m, struct job *j, const char *why)
{
    struct pgstore_doc cur = {0};
    cut_err err = CUT_ERR_INIT;
    bool removal = j->phase == PH_REMOVE;

    j->lease_lost = true; /* no longer renewed */
    count(m, &m->st.lost_leases);
    log_msgf(LOG_INFO, "mirror", "%s: generation %lld %s but not recorded: %s", j->doc.storage_key,
             (long long)j->doc.generation, removal ? "removed" : "copied", why);
    if (pgstore_doc_get(m->store, j->doc.storage_key, &cur, &err) != 0) {
        if (err.code != CUT_ENOTFOUND)
            log_msgf(LOG_ERROR, "mirror", "%s: cannot look at the document again: %s",
                     j->doc.storage_key, err.msg);
        goto done;
    }
    if (!m->o.keep_spool && !removal && j->doc.spool_path &&
        (cur.state == DOC_DELETED || !cur.spool_path || strcmp(cur.spool_path, j->doc.spool_path)))
        unlink(j->doc.spool_path); /* this generation's spool file serves no one now */
    if (cur.state == DOC_DELETED) {
        if (!removal) /* a copy landed after the delete: the object goes again */
            requeue(m, j->doc.storage_key, 0, "a copy landed after the document was deleted");
        goto done;
    }
    if (cur.state == DOC_FAILED || (!removal && cur.generation == j->doc.generation))
        goto done; /* the same bytes, or nothing to mirror */
    if (strcmp(cur.s3_key, j->doc.s3_key) != 0 || cur.size < 0 || !cur.md5 ||
        strlen(cur.md5) != 32) {
        /* nothing to compare S3's object with: copy the current generation again */
        requeue(m, j->doc.storage_key, cur.generation,
                removal ? "a removal ran after the document was recorded again"
                        : "an older generation's copy landed after this one was recorded");
        goto done;
    }
    /* is the object the current generation's, now that this copy or removal has landed? */
    j->want_size = cur.size;
    memcpy(j->want_md5, cur.md5, 33);
    j->want_generation = cur.generation;
    j->want_sha256_b64[0] = '\0';
    {
        unsigned char sha[32];
        if (from_hex(cur.sha256, sha, 32))
            EVP_EncodeBlock((unsigned char *)j->want_sha256_b64, sha, 32);
    }
    pgstore_doc_clear(&cur);
    submit_head(m, j, PH_RECHECK);
    return;
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

/* The HEAD after a copy: S3 must agree with the bytes copied. A copy that passes waits in
 * m->ready for flush_completions(), which records the ones of one pass of the thread
 * together. */
static void head_checked(mirror *m, struct job *j)
{
    const struct s3_result *h = &j->out.s3;
    char sha_b64[48], why[256];

    hex_of(j->copy.md5, 16, j->md5_hex);
    hex_of(j->copy.sha256, 32, j->sha256_hex);
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
    if (j->lease_lost) {
        after_refusal(m, j, "lease lost: it expired or another worker holds it");
        return;
    }
    j->next = m->ready;
    m->ready = j;
}

/* A copy recorded copied and verified: its spool file has served. Frees j. */
static void recorded(mirror *m, struct job *j)
{
    count(m, &m->st.verified);
    count_metrics(j, MET_COPY_VERIFIED);
    if (j->doc.spool_path && !m->o.keep_spool)
        unlink(j->doc.spool_path);
    m->inflight--;
    job_free(j);
}

/* Records the copies waiting in m->ready, copied and verified, each fenced by its lease (so by
 * its generation), PGSTORE_COMPLETE_MAX to a statement: one round trip and one commit for all
 * the copies that ended while the thread was busy, instead of one each. */
static void flush_completions(mirror *m)
{
    struct pgstore_completion c[PGSTORE_COMPLETE_MAX];
    struct pgstore_outcome out[PGSTORE_COMPLETE_MAX];
    cut_err each[PGSTORE_COMPLETE_MAX];
    struct job *batch[PGSTORE_COMPLETE_MAX];

    while (m->ready) {
        cut_err err = CUT_ERR_INIT;
        size_t n = 0;
        for (; m->ready && n < PGSTORE_COMPLETE_MAX; n++) {
            struct job *j = m->ready;
            const struct s3_result *h = &j->out.s3;
            m->ready = j->next;
            batch[n] = j;
            out[n] = (struct pgstore_outcome){
                .size = (int64_t)j->copy.bytes,
                .md5 = j->md5_hex,
                .sha256 = j->sha256_hex,
                .s3_etag = h->etag[0] ? h->etag : NULL,
                .s3_sha256 = h->checksum_sha256[0] ? h->checksum_sha256 : NULL,
                .detail = j->from_legacy ? "copied from the legacy store" : "copied from the spool",
                .verified = "S3 agrees on size and checksum",
            };
            c[n] = (struct pgstore_completion){
                .storage_key = j->doc.storage_key, .token = j->token, .out = &out[n]};
        }
        if (pgstore_complete_many(m->store, c, n, DOC_COPIED, each, &err) != 0) {
            /* the leases run out and the documents are claimed and copied again */
            log_msgf(LOG_WARN, "mirror", "cannot record %zu copies: %s", n, err.msg);
            for (size_t i = 0; i < n; i++) {
                m->inflight--;
                job_free(batch[i]);
            }
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            struct job *j = batch[i];
            if (!err_isset(&each[i]))
                recorded(m, j);
            else if (each[i].code == CUT_ECONFLICT || each[i].code == CUT_ENOTFOUND)
                after_refusal(m, j, each[i].msg);
            else {
                log_msgf(LOG_WARN, "mirror", "%s: cannot record the copy: %s", j->doc.storage_key,
                         each[i].msg);
                m->inflight--;
                job_free(j);
            }
        }
    }
}

static void rechecked(mirror *m, struct job *j)
{
    const struct s3_result *h = &j->out.s3;
    /* the ETag is an MD5 for a single PUT; S3's SHA-256, when it reports one, settles it */
    bool same = !err_isset(&j->err) && h->content_length == j->want_size &&
                (h->checksum_sha256[0] && j->want_sha256_b64[0]
                     ? strcmp(h->checksum_sha256, j->want_sha256_b64) == 0
                     : strcasecmp(h->etag, j->want_md5) == 0);
    if (!same)
        requeue(m, j->doc.storage_key, j->want_generation,
                j->err.code == CUT_ENOTFOUND
                    ? "S3 lost the current generation's object to a late removal"
                    : "S3 may hold an older generation's bytes, landed after this one's copy");
    m->inflight--;
    job_free(j);
}

/* Remover thread: the blocking DELETE, then back to the mirror's thread. */
static void remove_job(worker_ctx *ctx, void *arg)
{
    struct job *j = arg;
    struct xfer_outcome o = {0};
    cut_err err = CUT_ERR_INIT;
    (void)ctx;
    if (s3_delete(j->m->s3, j->doc.s3_key, &o.s3, &err) == 0)
        err_clear(&err);
    step_done(j, &o, &err);
}

/* A key that cannot name an object we wrote: empty, a leading '/', a "." or ".." segment
 * (such documents are recorded `failed` and never copied). */
static bool key_unusable(const char *k)
{
    if (!k || !*k || *k == '/')
        return true;
    for (const char *seg = k; seg;) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return true;
        seg = end ? end + 1 : NULL;
    }
    return false;
}

static void removed(mirror *m, struct job *j)
{
    cut_err err = CUT_ERR_INIT;
    if (j->lease_lost) {
        after_refusal(m, j, "lease lost: it expired or another worker holds it");
        return;
    }
    if (pgstore_removed(m->store, j->doc.storage_key, j->token,
                        key_unusable(j->doc.s3_key) ? "no S3 object can have this document's key"
                                                    : "the S3 object was removed",
                        &err) != 0) {
        if (err.code == CUT_ECONFLICT || err.code == CUT_ENOTFOUND) {
            after_refusal(m, j, err.msg);
            return;
        }
        /* stays due: the next claim removes it again */
        log_msgf(LOG_WARN, "mirror", "%s: object removed, not recorded: %s", j->doc.storage_key,
                 err.msg);
    } else {
        count(m, &m->st.removed);
        count_metrics(j, MET_COPY_REMOVED);
        if (j->doc.spool_path && !m->o.keep_spool)
            unlink(j->doc.spool_path);
    }
    m->inflight--;
    job_free(j);
}

static void submit_remove(mirror *m, struct job *j)
{
    j->phase = PH_REMOVE;
    if (key_unusable(j->doc.s3_key)) {
        removed(m, j);
        return;
    }
    if (!worker_submit(m->remover, remove_job, j))
        attempt_failed(m, j, "the remover's queue is full");
}

static void advance(mirror *m, struct job *j)
{
    switch (j->phase) {
    case PH_COPY:
        if (m->o.outcome && (!err_isset(&j->err) || j->err.code == CUT_ES3 ||
                             (j->err.code == CUT_EHTTP && j->out.legacy.fail == LEGACY_OK)))
            m->o.outcome(m->o.outcome_arg, !err_isset(&j->err), "s3_put");
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
            /* the legacy store has no such document: asking again cannot help */
            if (j->from_legacy && j->out.legacy.fail == LEGACY_NOT_FOUND)
                attempt_failed_after(m, j, j->err.msg, 1);
            else
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
    case PH_REMOVE:
        if (err_isset(&j->err)) {
            char why[640];
            snprintf(why, sizeof(why), "cannot remove the S3 object: %s", j->err.msg);
            attempt_failed(m, j, why);
            return;
        }
        removed(m, j);
        return;
    }
}

/* Mirror thread: extends the lease of every job in flight, in one statement per
 * PGSTORE_RENEW_MAX of them, so that a copy longer than a lease is not claimed again by
 * another mirror. A job whose lease is found gone is marked lost: its outcome is not recorded
 * (after_refusal() looks at the document again instead), as a fenced completion would refuse
 * it. A failed renewal (the database away) is tried again at the next period. */
static void renew_leases(mirror *m)
{
    const char *keys[PGSTORE_RENEW_MAX], *tokens[PGSTORE_RENEW_MAX];
    struct job *batch[PGSTORE_RENEW_MAX];
    bool kept[PGSTORE_RENEW_MAX];
    struct job *j = m->live;

    while (j) {
        size_t n = 0;
        cut_err err = CUT_ERR_INIT;
        for (; j && n < PGSTORE_RENEW_MAX; j = j->live_next) {
            if (j->lease_lost)
                continue;
            batch[n] = j;
            keys[n] = j->doc.storage_key;
            tokens[n] = j->token;
            n++;
        }
        if (n == 0)
            break;
        if (pgstore_renew_many(m->store, keys, tokens, n, m->o.lease_ms, kept, &err) != 0) {
            log_msgf(LOG_WARN, "mirror", "cannot renew %zu leases: %s", n, err.msg);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (kept[i])
                continue;
            batch[i]->lease_lost = true;
            log_msgf(LOG_INFO, "mirror", "%s: lease lost during its %s", keys[i],
                     batch[i]->phase == PH_REMOVE ? "removal" : "copy");
        }
    }
    pthread_mutex_lock(&m->mu);
    m->st.renewals++;
    pthread_mutex_unlock(&m->mu);
}

static void claim_some(mirror *m, int want)
{
    struct pgstore_claim c = {0};
    cut_err err = CUT_ERR_INIT;

    if (pgstore_claim(m->store, m->owner, (size_t)want, m->o.lease_ms, m->o.origin, &c, &err) !=
        0) {
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
        job_link(m, j);
        count(m, &m->st.claimed);
        if (j->doc.state == DOC_DELETED)
            submit_remove(m, j);
        else
            submit_copy(m, j);
    }
    pgstore_claim_clear(&c);
}

static void *mirror_main(void *arg)
{
    mirror *m = arg;
    uint64_t next_poll = 0, next_renew = 0;
    uint64_t renew_every = (uint64_t)m->o.lease_ms / 3;

    thread_setup("mirror", m->o.background);
    if (renew_every < 50)
        renew_every = 50;
    for (;;) {
        struct job *done, *next;
        bool stopping, kicked;

        pthread_mutex_lock(&m->mu);
        for (;;) {
            bool full = m->inflight >= m->o.max_inflight;
            uint64_t until;
            if (m->done)
                break;
            /* copies in flight keep their leases, whatever else waits */
            if (m->inflight > 0 && now_ms() >= next_renew)
                break;
            if (m->stopping || full) {
                /* nothing to claim: only a step that ends (or, stopping, the last one)
                 * wakes the thread, or the next renewal; a kick stays set for when there is
                 * room again */
                if (m->stopping && m->inflight == 0)
                    break;
                if (m->inflight == 0) {
                    pthread_cond_wait(&m->cv, &m->mu);
                    continue;
                }
                until = next_renew;
            } else {
                if (m->kicked || now_ms() >= next_poll)
                    break;
                until = next_poll;
                if (m->inflight > 0 && next_renew < until)
                    until = next_renew;
            }
            struct timespec ts;
            uint64_t now = now_ms();
            deadline_after_ms(&ts, until > now ? until - now : 0);
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        }
        done = m->done;
        m->done = NULL;
        kicked = m->kicked;
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
        flush_completions(m);
        if (m->inflight > 0 && now_ms() >= next_renew) {
            renew_leases(m);
            next_renew = now_ms() + renew_every;
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
            pthread_mutex_lock(&m->mu);
            m->kicked = false; /* this claim answers the kicks so far */
            pthread_mutex_unlock(&m->mu);
            claim_some(m, want);
            if (before == 0 && m->inflight > 0)
                next_renew = now_ms() + renew_every; /* leases just taken */
            pthread_mutex_lock(&m->mu);
            m->st.inflight = m->inflight;
            pthread_mutex_unlock(&m->mu);
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
    struct worker_opts wo = {
        .name = "remover", .threads = 1, .queue_max = 65536, .background = o->background};
    m->remover = worker_pool_start(&wo, err);
    if (!m->remover) {
        pgstore_free(m->store);
        free(m->url);
        free(m->owner);
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (pthread_create(&m->thread, NULL, mirror_main, m) != 0) {
        err_set(err, CUT_EIO, "mirror", "cannot start the mirror thread");
        worker_pool_free(m->remover);
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
    worker_pool_free(m->remover);
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
