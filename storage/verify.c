/*
 * verify: the passes, the repair and the manifest (see verify.h).
 *
 * A pass runs on the calling thread, which owns the state-store connection and every
 * database call. Checks are submitted to the transfer engine (a HEAD, or for a deep check two
 * streamed GETs whose bytes are only hashed); their completion callbacks, on the engine's
 * thread, only put the finished check on a list and signal. The calling thread takes
 * finished checks, decides, records, and tops the checks in flight up to the concurrency from
 * the current page; a page (by storage key, after the last key of the one before) is read
 * only when the previous one is used up. Memory is one page plus the checks in flight.
 *
 * Consistent checks are recorded in batches (one statement per batch), differences one at a
 * time as they come, each fenced by the row as it was read.
 *
 * The repair starts a mirror of its own: the mirror's copy path (raw original -> hashed ->
 * PUT with Content-MD5 -> HEAD -> verified) is the only one, so a repaired document is
 * checked exactly as a first copy is.
 *
 * The manifest is written a page at a time with stdio to a temporary file beside the target,
 * the SHA-256 of its document lines computed as they are written, then fsync and rename.
 */
#include "storage/verify.h"

#include "storage/mirror.h"
#include "storage/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define PAGE 500
#define FLUSH_AT 200 /* consistent checks recorded in one statement */

struct vpass;

struct check {
    struct check *next;
    struct vpass *p;
    struct pgstore_doc doc;
    int outstanding; /* transfers not ended yet (under p->mu) */
    struct xfer_outcome s3;
    cut_err s3_err;
    struct xfer_outcome legacy;
    cut_err legacy_err;
};

struct vpass {
    const struct verify_opts *o;
    pgstore *st;
    xfer_engine *e;
    legacy_store *legacy;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct check *done; /* ended, newest first */
    int inflight;       /* the calling thread's */
    struct verify_counts c;
    /* consistent checks waiting to be recorded */
    struct check *ok[FLUSH_AT];
    char *ok_etag[FLUSH_AT];
    size_t nok;
};

static void check_free(struct check *k)
{
    if (!k)
        return;
    pgstore_doc_clear(&k->doc);
    free(k);
}

static void hex_of(const unsigned char *in, size_t n, char *out)
{
    spool_hex(in, n, out);
}

static bool is_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (hex_value(s[i]) < 0)
            return false;
    return true;
}

/* The base64 form S3 gives of a hex SHA-256 into out[48]; false when hex is not one. */
static bool sha_hex_to_b64(const char *hex, char *out)
{
    unsigned char b[32];
    if (!is_hex(hex, 64))
        return false;
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)(hex_value(hex[2 * i]) << 4 | hex_value(hex[2 * i + 1]));
    EVP_EncodeBlock((unsigned char *)out, b, 32);
    return true;
}

/* S3's base64 SHA-256 as hex into out[65]; false when it is not one (a composite checksum of
 * a multipart upload, "...-N", is not). */
static bool sha_b64_to_hex(const char *b64, char *out)
{
    unsigned char b[48];
    if (strlen(b64) != 44 || strchr(b64, '-'))
        return false;
    if (EVP_DecodeBlock(b, (const unsigned char *)b64, 44) != 33) /* 32 + one '=' of padding */
        return false;
    hex_of(b, 32, out);
    return true;
}

/* ---- the engine's side ------------------------------------------------------------------ */

static void ended(struct check *k, const struct xfer_outcome *o, const cut_err *err, bool s3side)
{
    struct vpass *p = k->p;
    pthread_mutex_lock(&p->mu);
    if (s3side) {
        k->s3 = *o;
        k->s3_err = *err;
    } else {
        k->legacy = *o;
        k->legacy_err = *err;
    }
    if (--k->outstanding == 0) {
        k->next = p->done;
        p->done = k;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
}

static void s3_ended(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    ended(arg, o, err, true);
}

static void legacy_ended(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    ended(arg, o, err, false);
}

/* ---- deciding --------------------------------------------------------------------------- */

static void event(struct vpass *p, const char *key, const char *what, const char *detail)
{
    if (p->o->event)
        p->o->event(p->o->arg, key, what, detail);
}

static void unchecked(struct vpass *p, struct check *k, const char *why)
{
    p->c.unchecked++;
    event(p, k->doc.storage_key, "unchecked", why);
    check_free(k);
}

/* Records a difference. side: "s3", "legacy" or "both". */
static int mismatch(struct vpass *p, struct check *k, const char *side, json_t *found,
                    const char *detail, cut_err *err)
{
    json_t *m = json_pack("{s:s,s:s,s:{s:o,s:s?,s:s?}}", "side", side, "check",
                          p->o->deep ? "deep" : "quick", "recorded", "size",
                          k->doc.size >= 0 ? json_integer(k->doc.size) : json_null(), "sha256",
                          k->doc.sha256, "md5", k->doc.md5);
    cut_err merr = CUT_ERR_INIT;
    char *text;
    int rc = 0;

    json_object_update(m, found);
    text = json_dumps(m, JSON_COMPACT);
    if (pgstore_verify_mismatch(p->st, k->doc.storage_key, k->doc.generation, k->doc.updated_at,
                                text, detail, &merr) != 0) {
        if (merr.code == CUT_ECONFLICT || merr.code == CUT_ENOTFOUND) {
            p->c.stale++;
        } else {
            *err = merr;
            rc = -1;
        }
    } else {
        p->c.mismatched++;
        if (strcmp(side, "s3") == 0 || strcmp(side, "both") == 0)
            p->c.s3_side++;
        if (strcmp(side, "legacy") == 0 || strcmp(side, "both") == 0)
            p->c.legacy_side++;
        event(p, k->doc.storage_key, "mismatch", detail);
    }
    free(text);
    json_decref(m);
    json_decref(found);
    check_free(k);
    return rc;
}

static int flush_ok(struct vpass *p, cut_err *err)
{
    struct pgstore_checked c[FLUSH_AT];
    char lsha[FLUSH_AT][65];
    size_t recorded = 0, promoted = 0;
    int rc = 0;

    if (p->nok == 0)
        return 0;
    for (size_t i = 0; i < p->nok; i++) {
        struct check *k = p->ok[i];
        bool have_l = p->o->deep && k->legacy.hashed;
        if (have_l)
            hex_of(k->legacy.sha256, 32, lsha[i]);
        c[i] = (struct pgstore_checked){
            .storage_key = k->doc.storage_key,
            .generation = k->doc.generation,
            .updated_at = k->doc.updated_at,
            .state = k->doc.state,
            .s3_etag = p->ok_etag[i],
            .s3_version_id = k->s3.s3.version_id[0] ? k->s3.s3.version_id : NULL,
            .legacy_sha256 = have_l ? lsha[i] : NULL,
        };
    }
    if (pgstore_verify_checked(p->st, c, p->nok,
                               p->o->deep ? "verify --deep: S3 and the raw original agree with "
                                            "the recorded SHA-256"
                                          : "verify: S3 agrees on size and checksum",
                               &recorded, &promoted, err) != 0) {
        rc = -1;
    } else {
        p->c.consistent += (int64_t)recorded;
        p->c.promoted += (int64_t)promoted;
        p->c.stale += (int64_t)(p->nok - recorded);
    }
    for (size_t i = 0; i < p->nok; i++) {
        check_free(p->ok[i]);
        free(p->ok_etag[i]);
    }
    p->nok = 0;
    return rc;
}

static int consistent(struct vpass *p, struct check *k, const char *etag, cut_err *err)
{
    p->ok[p->nok] = k;
    p->ok_etag[p->nok] = etag && *etag ? xstrdup(etag) : NULL;
    p->nok++;
    return p->nok == FLUSH_AT ? flush_ok(p, err) : 0;
}

bool verify_head_agrees(const struct pgstore_doc *d, const struct s3_result *h, bool etag_not_md5,
                        char *why, size_t whylen, char found_sha256[65])
{
    char want_b64[48];

    found_sha256[0] = '\0';
    why[0] = '\0';
    if (d->size >= 0 && h->content_length != d->size) {
        snprintf(why, whylen, "verify: S3 holds %lld bytes, %lld recorded",
                 (long long)h->content_length, (long long)d->size);
        return false;
    }
    if (h->checksum_sha256[0] && sha_b64_to_hex(h->checksum_sha256, found_sha256) &&
        sha_hex_to_b64(d->sha256, want_b64)) {
        if (strcmp(want_b64, h->checksum_sha256) == 0)
            return true;
        snprintf(why, whylen, "verify: S3's SHA-256 %s differs from the recorded %s", found_sha256,
                 d->sha256);
        return false;
    }
    if (!etag_not_md5 && is_hex(h->etag, 32) && is_hex(d->md5, 32)) {
        if (strcasecmp(h->etag, d->md5) == 0)
            return true;
        snprintf(why, whylen, "verify: S3's ETag (MD5) %s differs from the recorded MD5 %s",
                 h->etag, d->md5);
        return false;
    }
    if (d->s3_etag && h->etag[0] && strcmp(d->s3_etag, h->etag) != 0) {
        snprintf(why, whylen,
                 "verify: S3's ETag %.80s differs from the one recorded at the copy "
                 "%.80s",
                 h->etag, d->s3_etag);
        return false;
    }
    return true; /* the size is all S3 lets us compare */
}

static int decide_quick(struct vpass *p, struct check *k, cut_err *err)
{
    const struct s3_result *h = &k->s3.s3;
    const struct pgstore_doc *d = &k->doc;
    char why[1024], found_sha[65];

    if (k->s3_err.code == CUT_ENOTFOUND) {
        snprintf(why, sizeof(why), "verify: S3 has no object %.512s", d->s3_key);
        return mismatch(p, k, "s3", json_pack("{s:n}", "s3"), why, err);
    }
    if (err_isset(&k->s3_err)) {
        unchecked(p, k, k->s3_err.msg);
        return 0;
    }
    if (verify_head_agrees(d, h, p->o->etag_not_md5, why, sizeof(why), found_sha))
        return consistent(p, k, h->etag, err);
    json_t *found =
        json_pack("{s:{s:I,s:s,s:s?,s:s?}}", "s3", "size", (json_int_t)h->content_length, "etag",
                  h->etag, "sha256", found_sha[0] ? found_sha : NULL, "version_id",
                  h->version_id[0] ? h->version_id : NULL);
    return mismatch(p, k, "s3", found, why, err);
}

static int decide_deep(struct vpass *p, struct check *k, cut_err *err)
{
    const struct pgstore_doc *d = &k->doc;
    char why[1024], s3hex[65], lhex[65];
    bool s3diff, ldiff;

    p->c.bytes += k->s3.bytes + k->legacy.bytes;
    if (k->s3_err.code == CUT_ENOTFOUND) {
        snprintf(why, sizeof(why), "verify --deep: S3 has no object %.512s", d->s3_key);
        return mismatch(p, k, "s3", json_pack("{s:n}", "s3"), why, err);
    }
    if (err_isset(&k->s3_err) || !k->s3.hashed) {
        snprintf(why, sizeof(why), "S3: %s", err_isset(&k->s3_err) ? k->s3_err.msg : "not hashed");
        unchecked(p, k, why);
        return 0;
    }
    if (err_isset(&k->legacy_err) || !k->legacy.hashed) {
        snprintf(why, sizeof(why), "the legacy store: %s",
                 err_isset(&k->legacy_err) ? k->legacy_err.msg : "not hashed");
        unchecked(p, k, why);
        return 0;
    }
    hex_of(k->s3.sha256, 32, s3hex);
    hex_of(k->legacy.sha256, 32, lhex);
    if (is_hex(d->sha256, 64)) {
        s3diff =
            strcasecmp(s3hex, d->sha256) != 0 || (d->size >= 0 && k->s3.bytes != (uint64_t)d->size);
        ldiff = strcasecmp(lhex, d->sha256) != 0 ||
                (d->size >= 0 && k->legacy.bytes != (uint64_t)d->size);
    } else {
        /* nothing recorded to compare with: the raw original is the reference */
        s3diff = strcmp(s3hex, lhex) != 0 || k->s3.bytes != k->legacy.bytes;
        ldiff = false;
    }
    if (!s3diff && !ldiff)
        return consistent(p, k, k->s3.s3.etag, err);
    json_t *found = json_pack("{s:{s:I,s:s,s:s},s:{s:I,s:s}}", "s3", "size",
                              (json_int_t)k->s3.bytes, "sha256", s3hex, "etag", k->s3.s3.etag,
                              "legacy", "size", (json_int_t)k->legacy.bytes, "sha256", lhex);
    const char *side = s3diff && ldiff ? "both" : s3diff ? "s3" : "legacy";
    snprintf(why, sizeof(why),
             "verify --deep: %s differs: recorded SHA-256 %s, S3 %s (%llu bytes), raw original "
             "%s (%llu bytes)",
             strcmp(side, "both") == 0 ? "S3 and the raw original"
             : s3diff                  ? "S3"
                                       : "the raw original",
             d->sha256 ? d->sha256 : "(none)", s3hex, (unsigned long long)k->s3.bytes, lhex,
             (unsigned long long)k->legacy.bytes);
    return mismatch(p, k, side, found, why, err);
}

/* ---- the pass ----------------------------------------------------------------------------- */

/* Hands k's transfers to the engine; a refusal ends k at once as unchecked. */
static void submit(struct vpass *p, struct check *k)
{
    cut_err err = CUT_ERR_INIT;

    k->p = p;
    if (!p->o->deep) {
        k->outstanding = 1;
        if (xfer_head(p->e, k->doc.s3_key, s3_ended, k, &err) != 0)
            goto refused;
        p->inflight++;
        return;
    }
    struct xfer_src ls = {.kind = XFER_SRC_LEGACY, .key = k->doc.storage_key, .legacy = p->legacy};
    struct xfer_src ss = {.kind = XFER_SRC_S3, .key = k->doc.s3_key};
    struct xfer_sink hash_only = {.kind = XFER_SINK_CALLBACK};
    k->outstanding = 2;
    if (xfer_copy(p->e, &ss, &hash_only, s3_ended, k, &err) != 0)
        goto refused;
    p->inflight++;
    if (xfer_copy(p->e, &ls, &hash_only, legacy_ended, k, &err) != 0) {
        /* the S3 side is on its way: this side ends now, as failed */
        struct xfer_outcome none = {0};
        legacy_ended(k, &none, &err);
    }
    return;
refused:
    p->c.checked++;
    unchecked(p, k, err.msg);
}

static int take_done(struct vpass *p, cut_err *err)
{
    struct check *done, *rev = NULL, *next;
    int rc = 0;

    pthread_mutex_lock(&p->mu);
    done = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->mu);
    for (; done; done = next) {
        next = done->next;
        done->next = rev;
        rev = done;
    }
    for (; rev; rev = next) {
        next = rev->next;
        p->inflight--;
        p->c.checked++;
        if (rc == 0)
            rc = p->o->deep ? decide_deep(p, rev, err) : decide_quick(p, rev, err);
        else
            check_free(rev);
    }
    return rc;
}

int verify_pass(pgstore *st, xfer_engine *e, legacy_store *legacy, const struct verify_opts *o,
                struct verify_counts *out, cut_err *err)
{
    struct vpass p = {.o = o, .st = st, .e = e, .legacy = legacy};
    struct pgstore_doc *page = NULL;
    size_t npage = 0, idx = 0;
    char *after = NULL;
    bool more = true, stop = false;
    int conc = o->concurrency > 0 ? o->concurrency : 32;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (o->deep && !legacy) {
        err_set(err, CUT_EINVAL, "verify", "a deep verification needs legacy.raw_url");
        return -1;
    }
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    for (;;) {
        /* top up */
        while (!stop && p.inflight < conc) {
            if (idx == npage) {
                pgstore_verify_page_free(page, npage);
                page = NULL;
                npage = idx = 0;
                if (!more)
                    break;
                if (pgstore_verify_page(st, after, o->since, PAGE, &page, &npage, err) != 0)
                    goto drain;
                more = npage == PAGE;
                if (npage == 0)
                    break;
                free(after);
                after = xstrdup(page[npage - 1].storage_key);
            }
            struct check *k = xcalloc(1, sizeof(*k));
            k->doc = page[idx];
            memset(&page[idx], 0, sizeof(page[idx]));
            idx++;
            submit(&p, k);
        }
        if (p.inflight == 0 && (stop || (!more && idx == npage)))
            break;
        pthread_mutex_lock(&p.mu);
        if (!p.done) {
            struct timespec ts;
            deadline_after_ms(&ts, 200);
            pthread_cond_timedwait(&p.cv, &p.mu, &ts);
        }
        pthread_mutex_unlock(&p.mu);
        if (take_done(&p, err) != 0)
            goto drain;
        if (p.inflight == 0 && flush_ok(&p, err) != 0)
            goto drain;
        if (o->progress) {
            p.c.interrupted = stop;
            o->progress(o->arg, &p.c);
        }
        if (!stop && o->wait && o->wait(o->arg, 0)) {
            stop = true;
            p.c.interrupted = true;
        }
    }
    if (flush_ok(&p, err) != 0)
        goto drain;
    rc = 0;
drain:
    /* after a failure the checks in flight end (unrecorded) before their memory goes */
    while (p.inflight > 0) {
        struct check *list, *next;
        pthread_mutex_lock(&p.mu);
        while (!p.done)
            pthread_cond_wait(&p.cv, &p.mu);
        list = p.done;
        p.done = NULL;
        pthread_mutex_unlock(&p.mu);
        for (; list; list = next) {
            next = list->next;
            check_free(list);
            p.inflight--;
        }
    }
    for (size_t i = 0; i < p.nok; i++) {
        check_free(p.ok[i]);
        free(p.ok_etag[i]);
    }
    pgstore_verify_page_free(page, npage);
    free(after);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
    p.c.interrupted = stop;
    *out = p.c;
    return rc;
}

/* ---- repair ------------------------------------------------------------------------------ */

int verify_repair(pgstore *st, const struct verify_repair_opts *o, s3_client *s3, xfer_engine *e,
                  legacy_store *legacy, struct verify_repaired *out, cut_err *err)
{
    mirror *m = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (pgstore_verify_release(st, &out->released, &out->retried, err) != 0)
        return -1;
    struct mirror_opts mo = {
        .database_url = o->database_url,
        .owner = o->owner,
        .max_inflight = o->concurrency > 0 ? o->concurrency : 16,
        .lease_ms = o->lease_ms,
        .max_attempts = o->max_attempts,
        .poll_ms = 200,
    };
    m = mirror_start(&mo, s3, e, legacy, err);
    if (!m)
        return -1;
    for (;;) {
        struct mirror_stats ms;
        bool busy;
        if (pgstore_verify_busy(st, &busy, err) != 0)
            goto out;
        mirror_stats_get(m, &ms);
        out->copied = ms.verified;
        if (!busy && ms.inflight == 0)
            break;
        if (o->progress)
            o->progress(o->arg, out);
        if (o->wait && o->wait(o->arg, 200)) {
            out->interrupted = true;
            break;
        }
        if (!o->wait)
            usleep(200000);
    }
    rc = 0;
out:
    /* the copies in flight end and are recorded */
    mirror_free(m);
    return rc;
}

/* ---- manifest ------------------------------------------------------------------------------ */

double verify_consistency(const int64_t counts[DOC_NSTATES])
{
    int64_t all = 0;
    for (int s = 0; s < DOC_NSTATES; s++)
        if (s != DOC_DELETED)
            all += counts[s];
    return all > 0 ? (double)(counts[DOC_VERIFIED] + counts[DOC_ACTIVE]) / (double)all : 1.0;
}

static json_t *manifest_line(const struct pgstore_manifest_row *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "storage_key", json_string(r->storage_key));
    json_object_set_new(o, "s3_key", json_string(r->s3_key));
    json_object_set_new(o, "size", r->size >= 0 ? json_integer(r->size) : json_null());
    json_object_set_new(o, "sha256", r->sha256 ? json_string(r->sha256) : json_null());
    json_object_set_new(o, "state", json_string(doc_state_name(r->state)));
    json_object_set_new(o, "verified_at",
                        r->verified_at ? json_string(r->verified_at) : json_null());
    json_object_set_new(o, "s3_etag", r->s3_etag ? json_string(r->s3_etag) : json_null());
    if (r->s3_version_id)
        json_object_set_new(o, "s3_version_id", json_string(r->s3_version_id));
    return o;
}

int verify_manifest_write(pgstore *st, const char *path, struct verify_manifest_sum *out,
                          cut_err *err)
{
    char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    struct pgstore_manifest_row *rows = NULL;
    size_t n = 0;
    char *after = NULL;
    unsigned char sum[32];
    FILE *f = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        err_set(err, CUT_EIO, "manifest", "cannot start a SHA-256");
        goto out;
    }
    f = fopen(tmp, "w");
    if (!f) {
        err_set(err, CUT_EIO, "manifest", "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    for (;;) {
        if (pgstore_manifest_page(st, after, PGSTORE_VERIFY_PAGE_MAX, &rows, &n, err) != 0)
            goto out;
        for (size_t i = 0; i < n; i++) {
            json_t *o = manifest_line(&rows[i]);
            char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
            size_t len = line ? strlen(line) : 0;
            json_decref(o);
            if (!line) {
                err_set(err, CUT_ELIMIT, "manifest", "a line does not fit in memory");
                goto out;
            }
            bool ok = fwrite(line, 1, len, f) == len && fputc('\n', f) != EOF &&
                      EVP_DigestUpdate(md, line, len) == 1 && EVP_DigestUpdate(md, "\n", 1) == 1;
            free(line);
            if (!ok) {
                err_set(err, CUT_EIO, "manifest", "cannot write %s: %s", tmp, strerror(errno));
                goto out;
            }
            out->documents++;
            out->counts[rows[i].state]++;
        }
        if (n > 0) {
            free(after);
            after = xstrdup(rows[n - 1].storage_key);
        }
        pgstore_manifest_rows_free(rows, n);
        rows = NULL;
        if (n < PGSTORE_VERIFY_PAGE_MAX)
            break;
    }
    EVP_DigestFinal_ex(md, sum, NULL);
    hex_of(sum, 32, out->sha256);
    {
        json_t *states = json_object();
        for (int s = 0; s < DOC_NSTATES; s++)
            if (s != DOC_DELETED)
                json_object_set_new(states, doc_state_name((enum doc_state)s),
                                    json_integer(out->counts[s]));
        json_t *o = json_pack("{s:{s:I,s:o,s:f},s:s,s:s}", "summary", "documents",
                              (json_int_t)out->documents, "states", states, "consistency",
                              verify_consistency(out->counts), "sha256", out->sha256, "sha256_of",
                              "every byte of the lines above this one, each with its newline "
                              "(head -n -1 FILE | sha256sum)");
        char *line = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        bool ok = line && fprintf(f, "%s\n", line) > 0;
        free(line);
        if (!ok || fflush(f) != 0 || fsync(fileno(f)) != 0) {
            err_set(err, CUT_EIO, "manifest", "cannot write %s: %s", tmp, strerror(errno));
            goto out;
        }
    }
    if (fclose(f) != 0) {
        f = NULL;
        err_set(err, CUT_EIO, "manifest", "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        err_set(err, CUT_EIO, "manifest", "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (f)
        fclose(f);
    if (rc != 0)
        unlink(tmp);
    pgstore_manifest_rows_free(rows, n);
    EVP_MD_CTX_free(md);
    free(after);
    free(tmp);
    return rc;
}
