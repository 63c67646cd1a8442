/*
 * xfer: the transfer engine: one thread, one libcurl multi handle, many transfers.
 *
 * Shape. A transfer (struct xjob) is a small state machine that runs one HTTP request at a
 * time against S3 (struct xreq: create, part, complete, put, head...) and, when its source
 * is streamed, one GET beside it. Submissions from any thread go into a locked list and
 * wake the loop (curl_multi_wakeup); everything else belongs to the engine thread and
 * takes no lock. The loop: take submissions, admit transfers up to max_active (and, for those
 * reading the legacy store, within its documents/s bucket, its hold after a 429/503 and its
 * concurrency ceiling), resume the GETs the bytes/s bucket paused, start requests whose
 * backoff timer is due, let
 * libcurl work, hand finished requests to their transfer, then poll for at most the time to
 * the next timer. A request to be retried leaves the multi handle and waits in a list with
 * its due time: the thread keeps serving every other transfer meanwhile.
 *
 * Bytes and hashes. Request bodies are read from memory or with pread from the file and
 * answer bodies are handed on as libcurl delivers them; both are hashed on the way (MD5
 * and SHA-256, OpenSSL EVP). A hasher is marked when an attempt starts and rewound when
 * it is retried, so a retry does not hash twice. Checks: hashes the caller gave are
 * compared with the bytes when the last byte is read (the request carries their Content-MD5,
 * so S3 refuses the changed bytes, and the transfer fails); without them the body goes as
 * UNSIGNED-PAYLOAD and S3's ETag (the MD5 of a single PUT or of a part, unless SSE-KMS) is compared
 * with the MD5 computed. A file that changes length between the start and the end of its copy fails
 * the copy.
 *
 * Legacy -> S3, streamed. When the GET's first body bytes arrive, a 200 that announces a
 * length (not chunked) above XFER_STREAM_BUF and under s3.multipart_threshold, on a bucket
 * whose ETag is the body's MD5 (not SSE-KMS), makes the copy one PUT streamed from the GET:
 * the bytes pass through a ring of XFER_STREAM_BUF into the PUT's read callback; the GET
 * pauses while the ring is full and the PUT while it is empty, and each side's progress
 * resumes the other (from the loop, never inside a libcurl callback). The PUT has the
 * announced Content-Length, UNSIGNED-PAYLOAD and no Content-MD5 (unknown before the last
 * byte); the GET's hasher hashes each byte once. Checks: the GET must deliver exactly the
 * announced length (libcurl stops at it and fails a shorter body) and, when the caller gave
 * hashes, have them; the document's last byte is held back from the PUT until the GET has
 * ended and passed those checks, so a failed GET cuts the PUT short (its handle removed, the
 * connection closed) and S3 never receives a whole body of that attempt. S3's ETag must then
 * be the MD5 computed. The PUT is retried only while it has taken nothing from the ring;
 * past that its failure fails the copy, and the caller's retry starts again from byte 0.
 * Download and upload overlap, and a copy holds XFER_STREAM_BUF, not a part.
 *
 * Legacy -> S3, buffered (any other answer: small, chunked, at or above the threshold,
 * SSE-KMS). The GET's bytes fill a part buffer (s3.part_size); the GET pauses while a
 * full part is uploaded (with the Content-MD5 of the part, one pass over the buffer). A
 * document that ends within the first part goes as one PUT with Content-MD5 and checksum,
 * both the GET's own hashes (so a small document is hashed once); a longer one as a multipart
 * upload. A part buffer (its announced length, or a whole part; a stream buffer for a
 * streamed copy) is reserved from the engine's budget before the first byte, else the GET
 * pauses until a copy ends: at most max(budget, one part) of buffers exist at once
 * (max_active parts without a budget), whatever the documents' sizes.
 *
 * The blocking wrappers (xfer_s3_call, xfer_copy_wait) submit a transfer whose completion
 * signals a condition variable.
 */
#include "storage/xfer.h"
#include "core/metrics.h"
#include "storage/s3_util.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define XFER_MAX_ERROR_BODY (64 * 1024)
#define XFER_MAX_XML (1024 * 1024)
#define XFER_BACKOFF_CAP_MS 20000
#define XFER_MAX_PARTS 10000
#define XFER_MAX_KEY 1024
#define XFER_HANDLE_POOL 64
#define XFER_DEFAULT_ACTIVE 64
#define XFER_MAX_HOLD_S 60         /* ceiling of a Retry-After or a shared backoff */
#define XFER_HOLD_FIRST_MS 500     /* the shared backoff's first hold without Retry-After */
#define XFER_THROTTLED_ATTEMPTS 10 /* attempts of a GET the store keeps answering 429/503 */
#define XFER_STREAM_BUF                                                                            \
    (256 * 1024) /* the buffer between the GET and the PUT of a streamed copy                      \
                  */

/* ---- incremental hashing --------------------------------------------------------------- */

struct hasher {
    EVP_MD_CTX *md5, *sha, *md5_mark, *sha_mark;
    uint64_t n, n_mark;
};

/* The digests, fetched once: an implicit fetch (EVP_md5()) on every init takes OpenSSL's
 * store locks each time. */
static EVP_MD *md_md5, *md_sha256;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;

static void md_fetch(void)
{
    md_md5 = EVP_MD_fetch(NULL, "MD5", NULL);
    md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (md_md5 == NULL || md_sha256 == NULL)
        abort();
}

/* Allocates h's contexts the first time (on the engine thread, not the submitter's). */
static void hasher_init(struct hasher *h)
{
    if (h->md5)
        return;
    pthread_once(&md_once, md_fetch);
    h->md5 = EVP_MD_CTX_new();
    h->sha = EVP_MD_CTX_new();
    h->md5_mark = EVP_MD_CTX_new();
    h->sha_mark = EVP_MD_CTX_new();
    if (!h->md5 || !h->sha || !h->md5_mark || !h->sha_mark ||
        EVP_DigestInit_ex(h->md5, md_md5, NULL) != 1 ||
        EVP_DigestInit_ex(h->sha, md_sha256, NULL) != 1)
        abort();
    h->n = h->n_mark = 0;
}

static void hasher_reset(struct hasher *h)
{
    if (h->md5 == NULL) {
        hasher_init(h);
        return;
    }
    if (EVP_DigestInit_ex(h->md5, md_md5, NULL) != 1 ||
        EVP_DigestInit_ex(h->sha, md_sha256, NULL) != 1)
        abort();
    h->n = 0;
}

static void hasher_free(struct hasher *h)
{
    EVP_MD_CTX_free(h->md5);
    EVP_MD_CTX_free(h->sha);
    EVP_MD_CTX_free(h->md5_mark);
    EVP_MD_CTX_free(h->sha_mark);
    memset(h, 0, sizeof(*h));
}

static void hasher_update(struct hasher *h, const void *p, size_t n)
{
    if (EVP_DigestUpdate(h->md5, p, n) != 1 || EVP_DigestUpdate(h->sha, p, n) != 1)
        abort();
    h->n += n;
}

static void hasher_mark(struct hasher *h)
{
    if (EVP_MD_CTX_copy_ex(h->md5_mark, h->md5) != 1 ||
        EVP_MD_CTX_copy_ex(h->sha_mark, h->sha) != 1)
        abort();
    h->n_mark = h->n;
}

static void hasher_rewind(struct hasher *h)
{
    if (EVP_MD_CTX_copy_ex(h->md5, h->md5_mark) != 1 ||
        EVP_MD_CTX_copy_ex(h->sha, h->sha_mark) != 1)
        abort();
    h->n = h->n_mark;
}

/* The digests so far, without ending the hasher (finalises copies). */
static void hasher_peek(const struct hasher *h, unsigned char md5[16], unsigned char sha[32])
{
    EVP_MD_CTX *a = EVP_MD_CTX_new(), *b = EVP_MD_CTX_new();
    unsigned int l;

    if (!a || !b || EVP_MD_CTX_copy_ex(a, h->md5) != 1 || EVP_MD_CTX_copy_ex(b, h->sha) != 1 ||
        EVP_DigestFinal_ex(a, md5, &l) != 1 || EVP_DigestFinal_ex(b, sha, &l) != 1)
        abort();
    EVP_MD_CTX_free(a);
    EVP_MD_CTX_free(b);
}

/* ---- token buckets ---------------------------------------------------------------------- */

/* rate tokens a second, at most one second's worth saved, empty at the start; a taker may
 * leave it in debt, and nothing more is let through until the debt is paid back. rate <= 0:
 * no limit. */
struct tbucket {
    double rate, tokens, burst;
    uint64_t last_us;
};

static void tb_init(struct tbucket *b, double rate, uint64_t now)
{
    b->rate = rate;
    b->burst = rate > 1 ? rate : 1;
    b->tokens = 0;
    b->last_us = now;
}

static void tb_refill(struct tbucket *b, uint64_t now)
{
    if (now > b->last_us) {
        b->tokens += (double)(now - b->last_us) * b->rate / 1e6;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    b->last_us = now;
}

/* True when b lets something through now (not in debt). */
static bool tb_open(struct tbucket *b, uint64_t now)
{
    if (b->rate <= 0)
        return true;
    tb_refill(b, now);
    return b->tokens >= 0;
}

static void tb_take(struct tbucket *b, double n, uint64_t now)
{
    if (b->rate <= 0)
        return;
    tb_refill(b, now);
    b->tokens -= n;
}

/* Microseconds from now until b is out of debt (0: open). */
static uint64_t tb_wait_us(struct tbucket *b, uint64_t now)
{
    if (tb_open(b, now))
        return 0;
    return (uint64_t)(-b->tokens * 1e6 / b->rate) + 1;
}

/* ---- requests -------------------------------------------------------------------------- */

struct xjob;
struct xreq;
typedef void (*xreq_done_fn)(struct xreq *r);

struct xreq {
    struct xjob *job;
    xreq_done_fn done;
    bool legacy;            /* a GET of the legacy store, else an S3 request */
    struct s3_req rq;       /* S3; for the legacy GET only sink/keep are used */
    struct hasher *hin[2];  /* the body sent is hashed here (NULL: not) */
    struct hasher *hout[2]; /* a 2xx answer's body is hashed here */
    bool tee;               /* 2xx answer bytes go to the transfer's part buffer first */
    bool stream;            /* a streamed PUT: its body is read from the job's stream buffer */
    uint64_t out_max;       /* ceiling of a 2xx answer's body; 0: none */
    int max_attempts;
    bool (*body_ok)(struct xreq *r); /* called once the last body byte is read */

    /* per request */
    struct buf url;
    char uri[3 * XFER_MAX_KEY + 256];
    struct buf errbody;
    int attempt;
    uint64_t start_us, due_us;
    struct xreq *wnext; /* the waiting (backoff) or ready list */
    struct s3_result res;
    cut_err err;
    /* per attempt */
    CURL *h;
    struct curl_slist *hl;
    char ebuf[CURL_ERROR_SIZE];
    uint64_t sent, got;
    bool delivered, sink_stop, keep_over, too_big, body_bad, running;
    int fd_errno;
    long retry_after_s; /* legacy: the answer's Retry-After in seconds, -1 when none */
    bool chunked;       /* the answer came with Transfer-Encoding: chunked */
    bool thr_paused;    /* legacy: paused by the bytes/s bucket, in the engine's thr list */
    struct xreq *tnext; /* the bytes/s wait list */
};

/* ---- transfers ------------------------------------------------------------------------- */

enum job_kind { J_CALL, J_HEAD, J_PUT, J_MPU_FILE, J_LEGACY_PUT, J_FETCH };

struct xjob {
    xfer_engine *e;
    enum job_kind kind;
    struct xjob *next;          /* submission / pending queue */
    struct xjob *anext, *aprev; /* active list */
    struct xjob *pnext;         /* poke list */
    bool poked;
    bool reads_legacy;  /* admitted under the legacy store's limits (legacy_active) */
    uint64_t reserved;  /* part-buffer bytes reserved from the engine's budget */
    bool mem_paused;    /* its GET waits for a reservation, in the engine's memwait list */
    struct xjob *mnext; /* the memwait list */
    xfer_done_fn done;
    void *arg;
    struct xfer_outcome out;
    cut_err err;
    bool finished;

    /* owned copies of what the caller gave */
    char *key, *content_type, *content_disposition, *src_key, *path, *lurl;
    const void *data;
    size_t len;
    bool have_hashes;
    unsigned char md5[16], sha[32];
    xfer_data_fn fn;
    void *fn_arg;
    legacy_store *legacy;
    enum xfer_src_kind src_kind;
    int url_timeout_s; /* XFER_SRC_URL */
    uint64_t url_max;  /* XFER_SRC_URL */

    /* J_CALL */
    struct s3_req call_rq;

    int fd;
    uint64_t size;
    struct hasher whole, part;
    struct xreq r;   /* the S3 request in flight (one at a time) */
    struct xreq src; /* the streamed GET of a legacy -> S3 copy, or a fetch */
    struct s3_put_hdrs ph;
    struct sigv4_kv q[2], hv[8];
    char pn[24];

    /* multipart */
    char upload_id[1024];
    int mpu; /* 0 none, 1 creating, 2 created */
    bool aborting;
    uint64_t part_size, off;
    unsigned nparts, partno;
    struct buf xml, answer;

    /* legacy -> S3 */
    struct buf pbuf; /* the part being filled; a streamed copy's ring (XFER_STREAM_BUF) */
    bool src_running, src_done, src_paused, busy, final_sent, flush;
    /* legacy -> S3 streamed: one PUT fed from the ring in pbuf.data */
    bool stream;         /* decided at the GET's first body bytes */
    bool put_started;    /* the PUT is in j->r */
    bool put_paused;     /* its read callback found nothing to send */
    uint64_t slen;       /* the length the GET announced: the PUT's Content-Length */
    size_t rhead, rlen;  /* the ring's first byte and how many it holds */
    size_t src_want;     /* the size of the GET's chunk refused while the ring was full */
    cut_err pending_err; /* the failure an abort is cleaning up after */
};

struct xfer_engine {
    s3_client *s3; /* borrowed; NULL: legacy fetches only */
    struct s3_limits lim;
    int max_active;
    bool no_jitter;
    CURLM *multi;
    pthread_t th;
    bool started;

    pthread_mutex_t mu; /* guards sub_*, woken and stop */
    struct xjob *sub_head, *sub_tail;
    bool woken; /* a wakeup is on its way: later submitters need not send another */
    bool stop;
    bool want_background, background; /* xfer_engine_background(); the thread's own */

    /* engine thread only */
    struct xjob *pend_head, *pend_tail;
    struct xjob *act;
    struct xjob *poke;
    struct xreq *waiting;
    struct xreq *ready;
    CURL *pool[XFER_HANDLE_POOL];
    int npool;
    uint64_t seed;

    /* limits on the transfers that read the legacy store (engine thread; the wanted values
     * are set under mu and picked up by the loop) */
    double want_docs, want_bytes, have_docs, have_bytes;
    struct tbucket docs, bytes;
    struct xreq *thr_head, *thr_tail; /* GETs paused by the bytes/s bucket, oldest first */
    int legacy_active;                /* admitted transfers that read the legacy store */
    int legacy_cap;                   /* their ceiling while the store asks for less load */
    uint64_t hold_until_us;           /* no new legacy request before (429/503) */
    uint64_t cap_changed_us;          /* the last decrease or increase of legacy_cap */
    uint64_t backoff_ms;              /* shared backoff without Retry-After, doubling */
    /* part buffers of legacy -> S3 copies: reserved before their first byte */
    uint64_t want_budget, buf_budget, buf_reserved;
    struct xjob *mem_head, *mem_tail; /* copies waiting for a reservation, oldest first */

    atomic_ullong st_submitted, st_completed, st_failed, st_requests, st_retries;
    atomic_ullong st_throttled, st_legacy_bytes, st_hold_ms, st_streamed, st_buf_peak;
    atomic_int st_active, st_peak, st_legacy_cap, st_legacy_active;
};

static void job_step(struct xjob *j);
static void mem_unlist(xfer_engine *e, struct xjob *j);
static void req_start(xfer_engine *e, struct xreq *r);
static void job_cancel_reqs(struct xjob *j);

/* ---- curl callbacks --------------------------------------------------------------------- */

static size_t on_read(char *dst, size_t sz, size_t n, void *arg)
{
    struct xreq *r = arg;
    const struct s3_req *rq = &r->rq;
    uint64_t total = rq->fd >= 0 ? rq->file_len : rq->body_len;
    size_t want = sz * n;
    ssize_t got;

    if (r->sent >= total)
        return 0;
    if (want > total - r->sent)
        want = (size_t)(total - r->sent);
    if (rq->fd < 0) {
        memcpy(dst, rq->body + r->sent, want);
        got = (ssize_t)want;
    } else {
        do {
            got = pread(rq->fd, dst, want, (off_t)(rq->file_off + r->sent));
        } while (got < 0 && errno == EINTR);
        if (got <= 0) {
            r->fd_errno = got < 0 ? errno : 0;
            if (got == 0)
                r->body_bad = true; /* the file got shorter */
            return CURL_READFUNC_ABORT;
        }
    }
    for (int i = 0; i < 2; i++)
        if (r->hin[i])
            hasher_update(r->hin[i], dst, (size_t)got);
    r->sent += (uint64_t)got;
    if (r->sent == total && r->body_ok && !r->body_ok(r)) {
        /* The bytes differ from the hashes the caller gave. The body still goes out whole,
         * with the Content-MD5 of those hashes, so S3 refuses it (BadDigest): cutting the
         * body short instead is no proof, as some S3-compatible servers store a truncated
         * body. The transfer fails whatever the answer. */
        r->body_bad = true;
    }
    return (size_t)got;
}

static int on_seek(void *arg, curl_off_t off, int origin)
{
    struct xreq *r = arg;

    if (origin != SEEK_SET || off != 0)
        return CURL_SEEKFUNC_CANTSEEK;
    r->sent = 0;
    for (int i = 0; i < 2; i++)
        if (r->hin[i])
            hasher_rewind(r->hin[i]);
    return CURL_SEEKFUNC_OK;
}

/* Asks the loop to move j on once libcurl's callbacks are over (job_step): a callback may
 * neither add a handle to the multi handle nor should it resume another transfer. */
static void job_poke(struct xjob *j)
{
    if (!j->poked) {
        j->poked = true;
        j->pnext = j->e->poke;
        j->e->poke = j;
    }
}

/* The body of a streamed PUT: the bytes the GET put in the ring. Pauses when the ring is
 * empty (the GET's next bytes resume it). The last byte of the document waits until the GET
 * has ended and its checks have passed, so S3 never receives a whole body that the copy
 * then refuses: a failed GET cuts the PUT short, and S3 stores nothing of that attempt. */
static size_t on_stream_read(char *dst, size_t sz, size_t n, void *arg)
{
    struct xreq *r = arg;
    struct xjob *j = r->job;
    uint64_t left = j->slen - r->sent;
    size_t give = j->rlen, first;

    if (j->finished)
        return CURL_READFUNC_ABORT;
    if (left == 0)
        return 0;
    if (give > left) {
        r->body_bad = true; /* more bytes than announced: never happens past libcurl's own check */
        return CURL_READFUNC_ABORT;
    }
    if (!j->src_done && give == left)
        give--;
    if (give > sz * n)
        give = sz * n;
    if (give == 0) {
        if (j->src_done) { /* the GET ended short of its length: it failed before this */
            r->body_bad = true;
            return CURL_READFUNC_ABORT;
        }
        j->put_paused = true;
        return CURL_READFUNC_PAUSE;
    }
    first = XFER_STREAM_BUF - j->rhead < give ? XFER_STREAM_BUF - j->rhead : give;
    memcpy(dst, j->pbuf.data + j->rhead, first);
    memcpy(dst + first, j->pbuf.data, give - first);
    j->rhead = (j->rhead + give) % XFER_STREAM_BUF;
    j->rlen -= give;
    if (j->rlen == 0)
        j->rhead = 0;
    r->sent += give;
    if (j->src_paused && XFER_STREAM_BUF - j->rlen >= j->src_want)
        job_poke(j); /* room for the GET's refused chunk */
    return give;
}

/* A streamed body cannot be read again: libcurl may rewind only what it has not taken. */
static int on_stream_seek(void *arg, curl_off_t off, int origin)
{
    struct xreq *r = arg;

    return origin == SEEK_SET && off == 0 && r->sent == 0 ? CURL_SEEKFUNC_OK
                                                          : CURL_SEEKFUNC_CANTSEEK;
}

static void copy_value(char *dst, size_t dlen, const char *v, size_t n, bool unquote)
{
    while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    while (n > 0 && *v == ' ') {
        v++;
        n--;
    }
    if (unquote && n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    if (n >= dlen)
        n = dlen - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    struct xreq *x = arg;
    struct s3_result *r = &x->res;
    size_t len = sz * n;
    const char *colon;
    size_t nl;

    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        r->etag[0] = r->request_id[0] = r->checksum_sha256[0] = r->date[0] = '\0';
        r->version_id[0] = '\0';
        r->content_length = -1;
        x->chunked = false;
        return len;
    }
    colon = memchr(p, ':', len);
    if (colon == NULL)
        return len;
    nl = (size_t)(colon - p);
    colon++;
#define HDR(name) (nl == sizeof(name) - 1 && strncasecmp(p, name, nl) == 0)
    if (HDR("etag"))
        copy_value(r->etag, sizeof(r->etag), colon, len - nl - 1, true);
    else if (HDR("x-amz-request-id"))
        copy_value(r->request_id, sizeof(r->request_id), colon, len - nl - 1, false);
    else if (HDR("x-amz-checksum-sha256"))
        copy_value(r->checksum_sha256, sizeof(r->checksum_sha256), colon, len - nl - 1, false);
    else if (HDR("x-amz-version-id"))
        copy_value(r->version_id, sizeof(r->version_id), colon, len - nl - 1, false);
    else if (HDR("date"))
        copy_value(r->date, sizeof(r->date), colon, len - nl - 1, false);
    else if (HDR("transfer-encoding")) {
        char v[128];
        copy_value(v, sizeof(v), colon, len - nl - 1, false);
        x->chunked = strcasestr(v, "chunked") != NULL;
    } else if (HDR("retry-after") && x->legacy) {
        /* delay-seconds or an HTTP-date (RFC 9110 §10.2.3); the caller caps it */
        char v[64];
        copy_value(v, sizeof(v), colon, len - nl - 1, false);
        if (v[0] >= '0' && v[0] <= '9') {
            x->retry_after_s = strtol(v, NULL, 10);
        } else {
            time_t at = curl_getdate(v, NULL);
            if (at > 0)
                x->retry_after_s = at > time(NULL) ? (long)(at - time(NULL)) : 0;
        }
    } else if (HDR("content-length")) {
        char v[32];
        long status = 0;
        copy_value(v, sizeof(v), colon, len - nl - 1, false);
        r->content_length = strtoll(v, NULL, 10);
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
        if (x->out_max && status >= 200 && status < 300 && r->content_length > 0 &&
            (uint64_t)r->content_length > x->out_max) {
            x->too_big = true;
            return 0;
        }
    }
#undef HDR
    return len;
}

static size_t job_tee(struct xjob *j, const char *p, size_t len);

/* The bytes/s bucket of a legacy GET: paused while the bucket is in debt, in the engine's
 * wait list (oldest first, so the paused GETs share the rate in turn). */
static bool thr_pause(struct xreq *r)
{
    xfer_engine *e = r->job->e;

    if (tb_open(&e->bytes, now_us()))
        return false;
    r->thr_paused = true;
    r->tnext = NULL;
    if (e->thr_tail)
        e->thr_tail->tnext = r;
    else
        e->thr_head = r;
    e->thr_tail = r;
    return true;
}

static void thr_remove(xfer_engine *e, struct xreq *r)
{
    struct xreq *prev = NULL;

    if (!r->thr_paused)
        return;
    for (struct xreq *x = e->thr_head; x; prev = x, x = x->tnext)
        if (x == r) {
            if (prev)
                prev->tnext = r->tnext;
            else
                e->thr_head = r->tnext;
            if (e->thr_tail == r)
                e->thr_tail = prev;
            break;
        }
    r->thr_paused = false;
    r->tnext = NULL;
}

static size_t on_write(char *p, size_t sz, size_t n, void *arg)
{
    struct xreq *r = arg;
    size_t len = sz * n;
    long status = 0;

    curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
        if (r->out_max && r->got + len > r->out_max) {
            r->too_big = true;
            return 0;
        }
        if (r->legacy && thr_pause(r))
            return CURL_WRITEFUNC_PAUSE;
        if (r->tee) {
            size_t took = job_tee(r->job, p, len);
            if (took != len)
                return took; /* CURL_WRITEFUNC_PAUSE, or 0: stop */
        }
        if (r->legacy) {
            tb_take(&r->job->e->bytes, (double)len, now_us());
            atomic_fetch_add(&r->job->e->st_legacy_bytes, len);
        }
        r->got += len;
        for (int i = 0; i < 2; i++)
            if (r->hout[i])
                hasher_update(r->hout[i], p, len);
        if (r->rq.sink) {
            if (r->rq.sink(r->rq.sink_arg, p, len) != 0) {
                r->sink_stop = true;
                return 0;
            }
        } else if (r->rq.keep) {
            if (!buf_append(r->rq.keep, p, len)) {
                r->keep_over = true;
                return 0;
            }
        }
        if (!r->rq.keep)
            r->delivered = true; /* these bytes are gone: no retry from the start */
        return len;
    }
    /* An error body: keep the first 64 KiB (enough for <Code> and <Message>), drop the rest. */
    if (!buf_append(&r->errbody, p, len)) {
        size_t room = r->errbody.max - r->errbody.len;
        if (room && !buf_append(&r->errbody, p, room < len ? room : len))
            return len;
    }
    return len;
}

/* ---- the engine's request machinery ---------------------------------------------------- */

static CURL *handle_get(xfer_engine *e)
{
    CURL *h;

    if (e->npool > 0)
        return e->pool[--e->npool];
    if ((h = curl_easy_init()) == NULL)
        abort();
    return h;
}

static void handle_put(xfer_engine *e, CURL *h)
{
    if (e->npool < XFER_HANDLE_POOL)
        e->pool[e->npool++] = h;
    else
        curl_easy_cleanup(h);
}

static uint64_t rnd_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A request that ends without reaching libcurl (signing failed...): finished by the loop. */
static void req_fail_now(xfer_engine *e, struct xreq *r)
{
    r->running = true;
    r->wnext = e->ready;
    e->ready = r;
}

static void req_init(struct xreq *r, struct xjob *j, xreq_done_fn done)
{
    memset(r, 0, sizeof(*r));
    r->job = j;
    r->done = done;
    r->rq.fd = -1;
    r->res.content_length = -1;
}

/* Starts the first attempt of r (set up by the caller) or the next one. */
static void req_attempt(xfer_engine *e, struct xreq *r)
{
    CURL *h;
    const struct s3_req *rq = &r->rq;
    bool upload = !r->legacy && (rq->body != NULL || rq->fd >= 0 ||
                                 strcmp(rq->method, "POST") == 0 || strcmp(rq->method, "PUT") == 0);

    for (int i = 0; i < 2; i++)
        if (r->hin[i]) {
            if (r->attempt == 0)
                hasher_mark(r->hin[i]);
            else
                hasher_rewind(r->hin[i]);
        }
    r->sent = r->got = 0;
    r->delivered = r->sink_stop = r->keep_over = r->too_big = r->body_bad = false;
    r->fd_errno = 0;
    r->retry_after_s = -1;
    r->ebuf[0] = '\0';
    buf_reset(&r->errbody);
    if (rq->keep)
        buf_reset(rq->keep);
    curl_slist_free_all(r->hl);
    r->hl = NULL;
    if (!r->legacy && s3_req_sign(e->s3, rq, r->uri, &r->hl, &r->err) != 0) {
        req_fail_now(e, r);
        return;
    }
    h = handle_get(e);
    r->h = h;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_PRIVATE, r);
    curl_easy_setopt(h, CURLOPT_URL, r->url.data);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER,
                     !r->legacy       ? r->hl
                     : r->job->legacy ? (struct curl_slist *)legacy_header_list(r->job->legacy)
                                      : NULL);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    /* a streamed PUT lasts as long as its GET, then S3 answers: both timeouts */
    curl_easy_setopt(h, CURLOPT_TIMEOUT,
                     (long)(r->stream        ? e->lim.timeout_s + legacy_timeout_s(r->job->legacy)
                            : !r->legacy     ? e->lim.timeout_s
                            : r->job->legacy ? legacy_timeout_s(r->job->legacy)
                                             : r->job->url_timeout_s));
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->ebuf);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    if (r->legacy) {
        /* a plain GET */
    } else if (strcmp(rq->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (upload) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE,
                         (curl_off_t)(r->stream     ? r->job->slen
                                      : rq->fd >= 0 ? rq->file_len
                                                    : rq->body_len));
        curl_easy_setopt(h, CURLOPT_READFUNCTION, r->stream ? on_stream_read : on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, r);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, r->stream ? on_stream_seek : on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, r);
        if (strcmp(rq->method, "PUT") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
    } else if (strcmp(rq->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
    }
    r->running = true;
    atomic_fetch_add(&e->st_requests, 1);
    if (curl_multi_add_handle(e->multi, h) != CURLM_OK) {
        r->h = NULL;
        handle_put(e, h);
        err_set(&r->err, CUT_EIO, "xfer", "cannot add a transfer to the engine");
        r->running = false;
        req_fail_now(e, r);
    }
}

/* Starts r: target built, then the first attempt. The job's reqs are set up by the caller. */
static void req_start(xfer_engine *e, struct xreq *r)
{
    r->attempt = 0;
    r->start_us = now_us();
    r->wnext = NULL;
    memset(&r->res, 0, sizeof(r->res));
    r->res.content_length = -1;
    err_clear(&r->err);
    buf_init(&r->errbody, XFER_MAX_ERROR_BODY);
    if (r->url.max == 0)
        buf_init(&r->url, 16384);
    if (r->legacy) {
        buf_reset(&r->url);
        if (!buf_puts(&r->url, r->job->lurl))
            err_set(&r->err, CUT_ELIMIT, "legacy", "URL too long");
    } else {
        if (r->max_attempts == 0)
            r->max_attempts = e->lim.max_attempts;
        if (s3_req_target(e->s3, &r->rq, r->uri, sizeof(r->uri), &r->url, &r->err) != 0) {
            req_fail_now(e, r);
            return;
        }
    }
    if (err_isset(&r->err)) {
        req_fail_now(e, r);
        return;
    }
    req_attempt(e, r);
}

static void req_cleanup(struct xreq *r)
{
    curl_slist_free_all(r->hl);
    r->hl = NULL;
    buf_free(&r->url);
    buf_free(&r->errbody);
}

static void legacy_classify(struct xreq *r, CURLcode cc, long status, struct legacy_result *lr)
{
    lr->status = cc == CURLE_OK ? status : (status ? status : 0);
    lr->content_length = r->res.content_length;
    lr->bytes = r->got;
    lr->attempts = r->attempt + 1;
    if (r->too_big)
        lr->fail = LEGACY_TOO_LARGE;
    else if (cc == CURLE_OPERATION_TIMEDOUT)
        lr->fail = LEGACY_TIMEOUT;
    else if (cc == CURLE_PARTIAL_FILE)
        lr->fail = LEGACY_SHORT;
    else if (cc != CURLE_OK && status == 0)
        lr->fail = LEGACY_UNREACHABLE;
    else if (cc != CURLE_OK)
        lr->fail = LEGACY_SHORT; /* the answer broke after its status */
    else if (status == 404 || status == 410)
        lr->fail = LEGACY_NOT_FOUND;
    else if (status < 200 || status >= 300)
        lr->fail = LEGACY_HTTP_STATUS;
    else
        lr->fail = LEGACY_OK;
}

/* The S3 operation of a request, for metrics: by method and the query's names. */
static unsigned s3_op(const struct s3_req *rq)
{
    bool part = false, uploads = false, upload_id = false;
    for (size_t i = 0; i < rq->nquery; i++) {
        part |= strcmp(rq->query[i].name, "partNumber") == 0;
        uploads |= strcmp(rq->query[i].name, "uploads") == 0;
        upload_id |= strcmp(rq->query[i].name, "uploadId") == 0;
    }
    if (strcmp(rq->method, "PUT") == 0)
        return part ? MET_S3_MULTIPART_PART : MET_S3_PUT;
    if (strcmp(rq->method, "POST") == 0)
        return uploads     ? MET_S3_MULTIPART_CREATE
               : upload_id ? MET_S3_MULTIPART_COMPLETE
                           : MET_S3_OTHER;
    if (strcmp(rq->method, "DELETE") == 0)
        return upload_id ? MET_S3_MULTIPART_ABORT : MET_S3_DELETE;
    if (strcmp(rq->method, "HEAD") == 0)
        return MET_S3_HEAD;
    return strcmp(rq->method, "GET") == 0 && rq->key ? MET_S3_GET : MET_S3_OTHER;
}

/* Counts an S3 request that ended (its retries included): an error is an error answer from S3
 * or no answer at all (404 is an answer; local trouble with the body is not S3's). */
static void s3_count(const struct xreq *r)
{
    unsigned op;
    if (r->legacy)
        return;
    op = s3_op(&r->rq);
    metrics_inc(MET_S3_REQUESTS, op, 0);
    if (r->err.code == CUT_ES3 || r->err.code == CUT_EHTTP)
        metrics_inc(MET_S3_ERRORS, op, 0);
    metrics_observe_us(MET_S3_DURATION, op, now_us() - r->start_us);
}

/* The legacy store answered 429 or 503: it asks for less load, from the whole engine, not
 * only for this document. No new legacy request starts until the hold ends (Retry-After when
 * given, capped; else a shared backoff doubling from XFER_HOLD_FIRST_MS), and the number of
 * transfers reading the store at once is halved (once per hold: the answers of requests
 * already in flight say the same thing), then grows back by one a second (admit()). */
static void legacy_throttled(xfer_engine *e, struct xreq *r, long status)
{
    uint64_t now = now_us(), hold_ms;
    bool holding = now < e->hold_until_us;

    atomic_fetch_add(&e->st_throttled, 1);
    if (r->retry_after_s >= 0) {
        hold_ms =
            (uint64_t)(r->retry_after_s > XFER_MAX_HOLD_S ? XFER_MAX_HOLD_S : r->retry_after_s) *
            1000;
        if (hold_ms < XFER_HOLD_FIRST_MS)
            hold_ms = XFER_HOLD_FIRST_MS;
    } else {
        e->backoff_ms = e->backoff_ms ? 2 * e->backoff_ms : XFER_HOLD_FIRST_MS;
        if (e->backoff_ms > XFER_MAX_HOLD_S * 1000)
            e->backoff_ms = XFER_MAX_HOLD_S * 1000;
        hold_ms = e->backoff_ms;
    }
    if (now + hold_ms * 1000 > e->hold_until_us) {
        atomic_fetch_add(
            &e->st_hold_ms,
            (e->hold_until_us > now ? now + hold_ms * 1000 - e->hold_until_us : hold_ms * 1000) /
                1000);
        e->hold_until_us = now + hold_ms * 1000;
    }
    if (!holding) {
        int cap = e->legacy_active / 2;
        if (cap < 1)
            cap = 1;
        if (cap < e->legacy_cap)
            e->legacy_cap = cap;
        e->cap_changed_us = now;
        atomic_store(&e->st_legacy_cap, e->legacy_cap);
        log_msgf(LOG_WARN, "legacy_throttled",
                 "the legacy store answered %ld%s: no new request for %llu ms, then at most %d "
                 "at once, growing back by one a second",
                 status, r->retry_after_s >= 0 ? " with Retry-After" : "",
                 (unsigned long long)hold_ms, e->legacy_cap);
    }
}

/* A request's attempt ended (cc from libcurl). Retries it after a backoff, or finishes it. */
static void req_finished(xfer_engine *e, struct xreq *r, CURLcode cc)
{
    const struct s3_req *rq = &r->rq;
    long status = 0;
    bool retry = false;
    char why[CURL_ERROR_SIZE + 64];
    const char *what = r->legacy ? "GET" : rq->method;
    const char *name = r->legacy ? r->job->src_key : (rq->key ? rq->key : "(bucket)");
    bool throttled = false;

    thr_remove(e, r);
    if (r->h) {
        curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(e->multi, r->h);
        curl_easy_setopt(r->h, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, NULL);
        handle_put(e, r->h);
        r->h = NULL;
    }
    r->running = false;
    if (err_isset(&r->err)) /* never reached libcurl */
        goto done;
    r->res.attempts = r->attempt + 1;
    r->res.status = cc == CURLE_OK ? status : 0;
    r->res.code[0] = r->res.message[0] = '\0';
    if (r->legacy) {
        struct legacy_result *lr = &r->job->out.legacy;
        legacy_classify(r, cc, status, lr);
        if (r->sink_stop) {
            err_set(&r->err, CUT_EIO, "legacy", "GET %s: the receiver stopped the transfer", name);
            goto done;
        }
        switch (lr->fail) {
        case LEGACY_OK:
            if (now_us() >= e->hold_until_us)
                e->backoff_ms = 0; /* the store serves again: the next 429 starts afresh */
            goto done;
        case LEGACY_TIMEOUT:
        case LEGACY_UNREACHABLE:
        case LEGACY_SHORT:
            retry = !r->delivered && !r->too_big;
            snprintf(why, sizeof(why), "%s%s%s", legacy_fail_name(lr->fail), r->ebuf[0] ? ": " : "",
                     r->ebuf[0] ? r->ebuf : (cc != CURLE_OK ? curl_easy_strerror(cc) : ""));
            break;
        case LEGACY_HTTP_STATUS:
            retry = status >= 500 || status == 408 || status == 429;
            if (status == 429 || status == 503) {
                throttled = true;
                legacy_throttled(e, r, status);
            }
            snprintf(why, sizeof(why), "HTTP %ld", status);
            break;
        case LEGACY_NOT_FOUND:
            snprintf(why, sizeof(why), "HTTP %ld", status);
            break;
        case LEGACY_TOO_LARGE:
            snprintf(why, sizeof(why), "over the ceiling of %llu bytes",
                     (unsigned long long)r->out_max);
            break;
        }
        goto decide;
    }
    if (r->fd_errno) {
        err_set(&r->err, CUT_EIO, "xfer", "%s %s: reading the file: %s", what, name,
                strerror(r->fd_errno));
        goto done;
    }
    if (r->body_bad) {
        err_set(&r->err, CUT_ECONFLICT, "xfer",
                "%s %s: the source changed while it was copied (its bytes or length differ "
                "from what was announced)",
                what, name);
        goto done;
    }
    if (r->sink_stop) {
        err_set(&r->err, CUT_EIO, "xfer", "%s %s: the receiver stopped the transfer", what, name);
        goto done;
    }
    if (r->keep_over) {
        err_set(&r->err, CUT_ELIMIT, "xfer", "%s: answer larger than %zu bytes", what,
                rq->keep->max);
        goto done;
    }
    if (r->too_big) {
        err_set(&r->err, CUT_ELIMIT, "xfer", "%s %s: answer over %llu bytes", what, name,
                (unsigned long long)r->out_max);
        goto done;
    }
    if (cc != CURLE_OK) {
        snprintf(why, sizeof(why), "%s", r->ebuf[0] ? r->ebuf : curl_easy_strerror(cc));
        retry = s3_retryable_curl(cc) && !r->delivered;
    } else if (status >= 200 && status < 300) {
        /* 200 with an <Error> body (CompleteMultipartUpload) */
        if (rq->keep && rq->keep->len && memmem(rq->keep->data, rq->keep->len, "<Error>", 7)) {
            s3x_xml_tag(rq->keep->data, rq->keep->len, "Code", r->res.code, sizeof(r->res.code));
            s3x_xml_tag(rq->keep->data, rq->keep->len, "Message", r->res.message,
                        sizeof(r->res.message));
            snprintf(why, sizeof(why), "%ld with an error body", status);
            retry = s3_retryable_answer(0, r->res.code);
        } else {
            goto done;
        }
    } else {
        s3x_xml_tag(r->errbody.data, r->errbody.len, "Code", r->res.code, sizeof(r->res.code));
        s3x_xml_tag(r->errbody.data, r->errbody.len, "Message", r->res.message,
                    sizeof(r->res.message));
        if (!r->res.code[0])
            snprintf(r->res.code, sizeof(r->res.code), "%s", s3_status_code_name(status));
        snprintf(why, sizeof(why), "HTTP %ld", status);
        retry = s3_retryable_answer(status, r->res.code);
    }
decide:
    if (r->stream && r->sent > 0)
        retry = false; /* the bytes it took from the stream buffer are gone */
    if (retry && r->attempt + 1 < (throttled && r->max_attempts < XFER_THROTTLED_ATTEMPTS
                                       ? XFER_THROTTLED_ATTEMPTS
                                       : r->max_attempts)) {
        uint64_t cap_ms = (uint64_t)e->lim.retry_base_ms << (r->attempt < 20 ? r->attempt : 20);
        uint64_t wait_ms, spent_ms;
        if (cap_ms > XFER_BACKOFF_CAP_MS)
            cap_ms = XFER_BACKOFF_CAP_MS;
        wait_ms = e->no_jitter ? cap_ms : rnd_next(&e->seed) % (cap_ms + 1);
        spent_ms = (now_us() - r->start_us) / 1000;
        if (throttled || spent_ms + wait_ms < (uint64_t)e->lim.retry_max_total_ms) {
            log_msgf(LOG_WARN, r->legacy ? "legacy_retry" : "s3_retry",
                     "%s %s: %s%s%s; attempt %d, retrying in %lu ms", what, name, why,
                     r->res.code[0] ? " " : "", r->res.code, r->attempt + 1,
                     (unsigned long)wait_ms);
            r->attempt++;
            r->due_us = now_us() + wait_ms * 1000;
            if (r->legacy && r->due_us < e->hold_until_us)
                r->due_us = e->hold_until_us; /* the whole engine waits for the store */
            r->running = true; /* waiting counts as running: the job must not move on */
            r->wnext = e->waiting;
            e->waiting = r;
            atomic_fetch_add(&e->st_retries, 1);
            return;
        }
    }
    if (r->legacy) {
        const struct legacy_result *lr = &r->job->out.legacy;
        err_set(&r->err,
                lr->fail == LEGACY_NOT_FOUND   ? CUT_ENOTFOUND
                : lr->fail == LEGACY_TOO_LARGE ? CUT_ELIMIT
                                               : CUT_EHTTP,
                "legacy", "GET %s from the legacy store: %s (after %d attempts)", name, why,
                r->attempt + 1);
    } else if (cc != CURLE_OK) {
        err_set(&r->err, CUT_EHTTP, "s3", "%s %s: %s (after %d attempts)", what, name, why,
                r->attempt + 1);
    } else {
        err_set(&r->err, status == 404 ? CUT_ENOTFOUND : CUT_ES3, "s3",
                "%s %s: %s %s%s%s (request id %s, %d attempts)", what, name, why, r->res.code,
                r->res.message[0] ? ": " : "", r->res.message,
                r->res.request_id[0] ? r->res.request_id : "-", r->attempt + 1);
    }
done:
    r->running = false;
    s3_count(r);
    r->done(r);
}

/* ---- transfers ------------------------------------------------------------------------- */

/* Prepares r for the job's next request (the previous one's buffers freed). */
static void job_req(struct xjob *j, struct xreq *r, xreq_done_fn done)
{
    req_cleanup(r);
    req_init(r, j, done);
}

static void job_free(struct xjob *j)
{
    req_cleanup(&j->r);
    req_cleanup(&j->src);
    if (j->fd >= 0)
        close(j->fd);
    hasher_free(&j->whole);
    hasher_free(&j->part);
    buf_free(&j->xml);
    buf_free(&j->answer);
    buf_free(&j->pbuf);
    free(j->key);
    free(j->content_type);
    free(j->content_disposition);
    free(j->src_key);
    free(j->path);
    free(j->lurl);
    free(j);
}

/* Ends the transfer: the caller's callback, then the job is gone. */
static void job_finish(struct xjob *j, const cut_err *err)
{
    xfer_engine *e = j->e;
    cut_err ok = CUT_ERR_INIT;

    if (j->finished)
        return;
    j->finished = true;
    job_cancel_reqs(j);
    if (j->poked) {
        for (struct xjob **pp = &e->poke; *pp; pp = &(*pp)->pnext)
            if (*pp == j) {
                *pp = j->pnext;
                break;
            }
        j->poked = false;
    }
    if (j->anext)
        j->anext->aprev = j->aprev;
    if (j->aprev)
        j->aprev->anext = j->anext;
    else if (e->act == j)
        e->act = j->anext;
    mem_unlist(e, j);
    if (j->reserved) {
        e->buf_reserved -= j->reserved;
        j->reserved = 0;
    }
    atomic_fetch_sub(&e->st_active, 1);
    if (j->reads_legacy) {
        e->legacy_active--;
        atomic_store(&e->st_legacy_active, e->legacy_active);
    }
    atomic_fetch_add(err && err_isset(err) ? &e->st_failed : &e->st_completed, 1);
    j->done(j->arg, &j->out, err ? err : &ok);
    job_free(j);
}

/* A failure after CreateMultipartUpload: abort the upload first, then report err. */
static void mpu_abort_done(struct xreq *r)
{
    struct xjob *j = r->job;

    if (err_isset(&r->err))
        log_msgf(LOG_WARN, "s3_abort",
                 "AbortMultipartUpload %s failed (%ld %s); "
                 "a bucket lifecycle rule should clean up incomplete uploads",
                 j->key, r->res.status, r->res.code);
    job_finish(j, &j->pending_err);
}

static void job_fail(struct xjob *j, const cut_err *err)
{
    if (j->finished)
        return;
    /* the streamed GET may still run (a failed PUT), or a part (a failed GET): stop them */
    job_cancel_reqs(j);
    if (j->mpu == 2 && !j->aborting) {
        j->aborting = true;
        j->pending_err = *err;
        job_req(j, &j->r, mpu_abort_done);
        j->q[0] = (struct sigv4_kv){"uploadId", j->upload_id};
        j->r.rq.method = "DELETE";
        j->r.rq.key = j->key;
        j->r.rq.query = j->q;
        j->r.rq.nquery = 1;
        j->r.max_attempts = 2;
        req_start(j->e, &j->r);
        return;
    }
    job_finish(j, err);
}

static void hex_of(const unsigned char *p, size_t n, char *out)
{
    s3x_hex(p, n, out);
}

/* ETag (as S3 sent it, quotes removed) against an MD5; false when S3's ETag is no MD5. */
static bool etag_matches(const char *etag, const unsigned char md5[16])
{
    char hx[33];

    hex_of(md5, 16, hx);
    return strcasecmp(etag, hx) == 0;
}

/* The caller's hashes against the bytes read so far (called at the last byte). */
static bool body_ok_whole(struct xreq *r)
{
    struct xjob *j = r->job;
    unsigned char md5[16], sha[32];

    hasher_peek(&j->whole, md5, sha);
    return memcmp(md5, j->md5, 16) == 0 && memcmp(sha, j->sha, 32) == 0;
}

/* The file's length now against its length when the copy started. */
static bool file_same_length(struct xjob *j, cut_err *err)
{
    struct stat st;

    if (j->fd < 0)
        return true;
    if (fstat(j->fd, &st) != 0 || (uint64_t)st.st_size != j->size) {
        err_set(err, CUT_ECONFLICT, "xfer", "%s changed length while it was copied to %s", j->path,
                j->key);
        return false;
    }
    return true;
}

/* ---- J_CALL and J_HEAD: one request ---------------------------------------------------- */

static void call_done(struct xreq *r)
{
    struct xjob *j = r->job;

    j->out.s3 = r->res;
    job_finish(j, &r->err);
}

/* ---- J_PUT: one PutObject from a buffer or a file -------------------------------------- */

/* The transfer's bytes are all through: its outcome gets their hashes. False when the caller
 * gave hashes and the bytes do not have them. */
static bool whole_hashed(struct xjob *j)
{
    hasher_peek(&j->whole, j->out.md5, j->out.sha256);
    j->out.bytes = j->whole.n;
    j->out.hashed = true;
    return !j->have_hashes ||
           (memcmp(j->out.md5, j->md5, 16) == 0 && memcmp(j->out.sha256, j->sha, 32) == 0);
}

static void put_done(struct xreq *r)
{
    struct xjob *j = r->job;
    cut_err err = CUT_ERR_INIT;

    j->out.s3 = r->res;
    if (err_isset(&r->err)) {
        job_finish(j, &r->err);
        return;
    }
    if (!whole_hashed(j))
        err_set(&err, CUT_ECONFLICT, "xfer", "PUT %s: the bytes sent differ from their hashes",
                j->key);
    else if (!j->have_hashes && j->e->lim.etag_is_md5 && !etag_matches(r->res.etag, j->out.md5))
        /* sent without Content-MD5: the ETag is the proof that S3 has these bytes */
        err_set(&err, CUT_ECONFLICT, "xfer",
                "PUT %s: S3's ETag %s is not the MD5 of the bytes sent", j->key, r->res.etag);
    else
        (void)file_same_length(j, &err);
    job_finish(j, &err);
}

static void put_start(struct xjob *j)
{
    struct xreq *r = &j->r;
    const unsigned char *md5 = j->have_hashes ? j->md5 : NULL,
                        *sha = j->have_hashes ? j->sha : NULL;

    job_req(j, r, put_done);
    s3_put_hdrs_fill(j->e->s3, &j->ph, md5, sha, j->content_type, j->content_disposition, true);
    r->rq.method = "PUT";
    r->rq.key = j->key;
    r->rq.headers = j->ph.hv;
    r->rq.nheaders = j->ph.n;
    r->rq.payload_hash = j->ph.sha_hex;
    if (j->fd >= 0) {
        r->rq.fd = j->fd;
        r->rq.file_len = j->size;
    } else {
        r->rq.body = j->data ? j->data : "";
        r->rq.body_len = j->len;
    }
    r->hin[0] = &j->whole;
    if (j->have_hashes)
        r->body_ok = body_ok_whole;
    req_start(j->e, r);
}

/* ---- J_MPU_FILE: a multipart upload of a file, parts read once ------------------------- */

static void mpu_file_part(struct xjob *j);

static void mpu_complete_done(struct xreq *r)
{
    struct xjob *j = r->job;
    struct s3_result *res = &r->res;

    j->out.s3 = *res;
    if (err_isset(&r->err)) {
        job_fail(j, &r->err);
        return;
    }
    if (!res->etag[0])
        s3x_xml_tag(j->answer.data, j->answer.len, "ETag", res->etag, sizeof(res->etag));
    /* the XML ETag is quoted ("&quot;...&quot;" decoded to quotes) */
    if (res->etag[0] == '"') {
        size_t l = strlen(res->etag);
        memmove(res->etag, res->etag + 1, l);
        if (l >= 2 && res->etag[l - 2] == '"')
            res->etag[l - 2] = '\0';
    }
    j->out.s3 = *res;
    j->mpu = 3; /* completed: nothing to abort */
    job_finish(j, NULL);
}

static void mpu_complete(struct xjob *j)
{
    struct xreq *r = &j->r;
    unsigned char sha[32];
    cut_err err = CUT_ERR_INIT;

    /* every byte has passed: check before the object comes to exist */
    hasher_peek(&j->whole, j->out.md5, j->out.sha256);
    j->out.bytes = j->whole.n;
    j->out.hashed = true;
    if (j->have_hashes && (memcmp(j->out.md5, j->md5, 16) || memcmp(j->out.sha256, j->sha, 32))) {
        err_set(&err, CUT_ECONFLICT, "xfer",
                "multipart %s: the bytes read differ from their hashes (the source changed)",
                j->key);
        job_fail(j, &err);
        return;
    }
    if (!file_same_length(j, &err)) {
        job_fail(j, &err);
        return;
    }
    if (!buf_puts(&j->xml, "</CompleteMultipartUpload>"))
        abort();
    job_req(j, r, mpu_complete_done);
    s3x_hash_buf(j->xml.data, j->xml.len, NULL, sha);
    s3x_hex(sha, 32, j->ph.sha_hex);
    j->hv[0] = (struct sigv4_kv){"content-type", "application/xml"};
    j->q[0] = (struct sigv4_kv){"uploadId", j->upload_id};
    r->rq.method = "POST";
    r->rq.key = j->key;
    r->rq.query = j->q;
    r->rq.nquery = 1;
    r->rq.headers = j->hv;
    r->rq.nheaders = 1;
    r->rq.body = j->xml.data;
    r->rq.body_len = j->xml.len;
    r->rq.payload_hash = j->ph.sha_hex;
    buf_reset(&j->answer);
    r->rq.keep = &j->answer;
    req_start(j->e, r);
}

/* A part's ETag is the MD5 of the part (unless SSE-KMS): compare it when the part went
 * without Content-MD5 (S3 checked it otherwise), then note it for the completion. */
static bool part_check_note(struct xjob *j, struct xreq *r, bool sent_md5, cut_err *err)
{
    unsigned char md5[16], sha[32];

    if (!r->res.etag[0]) {
        err_set(err, CUT_ES3, "s3", "UploadPart %s #%u: no ETag in the answer", j->key, j->partno);
        return false;
    }
    hasher_peek(&j->part, md5, sha);
    if (!sent_md5 && j->e->lim.etag_is_md5 && !etag_matches(r->res.etag, md5)) {
        err_set(err, CUT_ECONFLICT, "xfer",
                "UploadPart %s #%u: S3's ETag %s is not the MD5 of the part sent", j->key,
                j->partno, r->res.etag);
        return false;
    }
    if (!buf_printf(&j->xml, "<Part><PartNumber>%u</PartNumber><ETag>\"%s\"</ETag></Part>",
                    j->partno, r->res.etag))
        abort();
    j->out.parts = (int)j->partno;
    return true;
}

static void mpu_file_part_done(struct xreq *r)
{
    struct xjob *j = r->job;
    cut_err err = CUT_ERR_INIT;

    j->out.s3 = r->res;
    if (err_isset(&r->err)) {
        job_fail(j, &r->err);
        return;
    }
    if (!part_check_note(j, r, !j->e->lim.etag_is_md5, &err)) {
        job_fail(j, &err);
        return;
    }
    j->off += r->rq.file_len;
    if (j->partno < j->nparts)
        mpu_file_part(j);
    else
        mpu_complete(j);
}

static void mpu_file_part(struct xjob *j)
{
    struct xreq *r = &j->r;
    uint64_t len = j->size - j->off < j->part_size ? j->size - j->off : j->part_size;
    unsigned char md5[16], sha[32];
    cut_err err = CUT_ERR_INIT;
    bool sign = !j->e->lim.etag_is_md5;

    j->partno++;
    job_req(j, r, mpu_file_part_done);
    if (sign && s3x_hash_fd(j->fd, j->off, len, md5, sha, &err) != 0) {
        /* SSE-KMS: S3's ETag is no MD5, so Content-MD5 must be sent (the part read twice) */
        job_fail(j, &err);
        return;
    }
    s3_put_hdrs_fill(j->e->s3, &j->ph, sign ? md5 : NULL, sign ? sha : NULL, NULL, NULL, false);
    snprintf(j->pn, sizeof(j->pn), "%u", j->partno);
    j->q[0] = (struct sigv4_kv){"partNumber", j->pn};
    j->q[1] = (struct sigv4_kv){"uploadId", j->upload_id};
    r->rq.method = "PUT";
    r->rq.key = j->key;
    r->rq.query = j->q;
    r->rq.nquery = 2;
    r->rq.headers = j->ph.hv;
    r->rq.nheaders = j->ph.n;
    r->rq.payload_hash = j->ph.sha_hex;
    r->rq.fd = j->fd;
    r->rq.file_off = j->off;
    r->rq.file_len = len;
    hasher_reset(&j->part);
    r->hin[0] = &j->whole;
    r->hin[1] = &j->part;
    req_start(j->e, r);
}

static void mpu_create_done(struct xreq *r)
{
    struct xjob *j = r->job;
    cut_err err = CUT_ERR_INIT;

    j->out.s3 = r->res;
    if (err_isset(&r->err)) {
        j->mpu = 0;
        job_fail(j, &r->err);
        return;
    }
    if (!s3x_xml_tag(j->answer.data, j->answer.len, "UploadId", j->upload_id,
                     sizeof(j->upload_id)) ||
        !j->upload_id[0]) {
        j->mpu = 0;
        err_set(&err, CUT_ES3, "s3", "CreateMultipartUpload %s: no UploadId in the answer", j->key);
        job_fail(j, &err);
        return;
    }
    j->mpu = 2;
    if (!buf_puts(&j->xml,
                  "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"))
        abort();
    if (j->kind == J_MPU_FILE)
        mpu_file_part(j);
    else
        job_step(j);
}

static void mpu_create(struct xjob *j)
{
    struct xreq *r = &j->r;
    size_t n = 0;

    j->mpu = 1;
    job_req(j, r, mpu_create_done);
    if (j->content_type)
        j->hv[n++] = (struct sigv4_kv){"content-type", j->content_type};
    if (j->content_disposition)
        j->hv[n++] = (struct sigv4_kv){"content-disposition", j->content_disposition};
    n = s3_sse_headers(j->e->s3, j->hv, n);
    j->q[0] = (struct sigv4_kv){"uploads", ""};
    r->rq.method = "POST";
    r->rq.key = j->key;
    r->rq.query = j->q;
    r->rq.nquery = 1;
    r->rq.headers = j->hv;
    r->rq.nheaders = n;
    buf_reset(&j->answer);
    r->rq.keep = &j->answer;
    req_start(j->e, r);
}

/* ---- J_LEGACY_PUT: the legacy store's bytes to S3, a part buffered at a time ----------- */

/* Reserves j's part buffer from the engine's budget: the announced length when it is under a
 * part, else a whole part. Granted when it fits, or when nothing is reserved at all (a part
 * larger than the budget still goes, one at a time). A copy holding a reservation can always
 * fill and send its part, so the copies waiting for one never wait on each other. */
static bool mem_reserve(struct xjob *j)
{
    xfer_engine *e = j->e;
    int64_t cl = j->src.res.content_length;
    uint64_t need = j->stream                                ? XFER_STREAM_BUF
                    : cl >= 0 && (uint64_t)cl < j->part_size ? (uint64_t)cl + 1
                                                             : j->pbuf.max;

    if (e->buf_budget && e->buf_reserved > 0 && e->buf_reserved + need > e->buf_budget)
        return false;
    e->buf_reserved += need;
    j->reserved = need;
    if (e->buf_reserved > atomic_load(&e->st_buf_peak))
        atomic_store(&e->st_buf_peak, e->buf_reserved);
    /* the buffer in one allocation of that size, not grown by doubling past it */
    if (j->pbuf.cap < need + 1) {
        j->pbuf.data = xrealloc(j->pbuf.data, need + 1);
        j->pbuf.cap = need + 1;
    }
    return true;
}

static void mem_unlist(xfer_engine *e, struct xjob *j)
{
    struct xjob *prev = NULL;
    if (!j->mem_paused)
        return;
    for (struct xjob *x = e->mem_head; x; prev = x, x = x->mnext)
        if (x == j) {
            if (prev)
                prev->mnext = j->mnext;
            else
                e->mem_head = j->mnext;
            if (e->mem_tail == j)
                e->mem_tail = prev;
            break;
        }
    j->mem_paused = false;
    j->mnext = NULL;
}

/* Copies waiting for a reservation go on, oldest first, while the budget has room. */
static void mem_release(xfer_engine *e)
{
    while (e->mem_head && mem_reserve(e->mem_head)) {
        struct xjob *j = e->mem_head;
        e->mem_head = j->mnext;
        if (!e->mem_head)
            e->mem_tail = NULL;
        j->mnext = NULL;
        j->mem_paused = false;
        if (j->src.h)
            curl_easy_pause(j->src.h, CURLPAUSE_CONT);
    }
}

/* ---- J_LEGACY_PUT streamed: one PUT fed by the GET through XFER_STREAM_BUF bytes -------- */

/* At the GET's first body bytes (its headers are in): a 200 announcing a length (not chunked)
 * above the stream buffer and under the multipart threshold, on a bucket whose ETag is the
 * body's MD5, goes as one PUT streamed from the GET. The ETag then proves what S3 received
 * (there is no Content-MD5: it is not known before the last byte). */
static void stream_decide(struct xjob *j)
{
    xfer_engine *e = j->e;
    struct xreq *g = &j->src;
    int64_t cl = g->res.content_length;
    long status = 0;

    if (g->h)
        curl_easy_getinfo(g->h, CURLINFO_RESPONSE_CODE, &status);
    j->stream = status == 200 && !g->chunked && cl > XFER_STREAM_BUF &&
                (uint64_t)cl < e->lim.multipart_threshold && e->lim.etag_is_md5;
    j->slen = j->stream ? (uint64_t)cl : 0;
}

/* The GET's bytes into the ring, whole or not at all (a paused write is offered again
 * whole); pauses the GET while they do not fit. */
static size_t stream_take(struct xjob *j, const char *p, size_t len)
{
    size_t tail, first;

    if (j->whole.n + len > j->slen) { /* whole.n: the bytes taken so far */
        j->src.sink_stop = true;      /* more than announced: never happens past libcurl's check */
        return 0;
    }
    if (j->rlen + len > XFER_STREAM_BUF) {
        j->src_paused = true;
        j->src_want = len;
        return CURL_WRITEFUNC_PAUSE;
    }
    tail = (j->rhead + j->rlen) % XFER_STREAM_BUF;
    first = XFER_STREAM_BUF - tail < len ? XFER_STREAM_BUF - tail : len;
    memcpy(j->pbuf.data + tail, p, first);
    memcpy(j->pbuf.data, p + first, len - first);
    j->rlen += len;
    if (!j->put_started || j->put_paused)
        job_poke(j);
    return len;
}

static void stream_put_done(struct xreq *r)
{
    struct xjob *j = r->job;
    cut_err err = CUT_ERR_INIT;

    j->busy = false;
    j->out.s3 = r->res;
    if (err_isset(&r->err)) {
        job_fail(j, &r->err);
        return;
    }
    if (!j->src_done || r->sent != j->slen)
        err_set(&err, CUT_ECONFLICT, "xfer", "PUT %s: answered before its %llu bytes were sent",
                j->key, (unsigned long long)j->slen);
    else if (!etag_matches(r->res.etag, j->out.md5))
        /* the body went without Content-MD5: the ETag is the proof that S3 has these bytes */
        err_set(&err, CUT_ECONFLICT, "xfer",
                "PUT %s: S3's ETag %s is not the MD5 of the bytes sent", j->key, r->res.etag);
    job_finish(j, &err);
}

/* The PUT: Content-Length the announced length, UNSIGNED-PAYLOAD, the object's headers. Retried
 * only while it has taken nothing from the ring (S3 refused it before the body: libcurl waits
 * for 100 Continue on a large body); past that the bytes are gone and a failure fails the
 * copy, which its caller retries from the start. */
static void stream_put_start(struct xjob *j)
{
    struct xreq *r = &j->r;

    j->put_started = true;
    atomic_fetch_add(&j->e->st_streamed, 1);
    job_req(j, r, stream_put_done);
    s3_put_hdrs_fill(j->e->s3, &j->ph, NULL, NULL, j->content_type, j->content_disposition, true);
    r->rq.method = "PUT";
    r->rq.key = j->key;
    r->rq.headers = j->ph.hv;
    r->rq.nheaders = j->ph.n;
    r->rq.payload_hash = j->ph.sha_hex;
    r->stream = true;
    j->busy = true;
    req_start(j->e, r);
}

/* Moves a streamed copy on: starts its PUT, resumes the PUT when bytes (or the end of the
 * GET) arrived, resumes the GET when its refused chunk fits. */
static void stream_step(struct xjob *j)
{
    if (!j->put_started) {
        stream_put_start(j);
    } else if (j->put_paused && j->r.h && (j->rlen > 0 || j->src_done)) {
        j->put_paused = false;
        curl_easy_pause(j->r.h, CURLPAUSE_CONT);
    }
    if (j->src_paused && j->src.h && XFER_STREAM_BUF - j->rlen >= j->src_want) {
        j->src_paused = false;
        curl_easy_pause(j->src.h, CURLPAUSE_CONT);
    }
}

/* Called from the GET's write callback: takes the bytes into the part buffer, or pauses the
 * GET while a full part waits for its upload (or while no buffer can be reserved). */
static size_t job_tee(struct xjob *j, const char *p, size_t len)
{
    if (j->kind != J_LEGACY_PUT)
        return len;
    if (j->whole.n == 0 && !j->put_started) {
        /* until the first byte is taken (a retried GET decides again); a reservation made
         * for the other way is given back and made again (a ring needs XFER_STREAM_BUF) */
        bool was = j->stream;
        stream_decide(j);
        if (j->reserved && was != j->stream) {
            j->e->buf_reserved -= j->reserved;
            j->reserved = 0;
        }
    }
    if (!j->reserved && !mem_reserve(j)) {
        xfer_engine *e = j->e;
        j->mem_paused = true;
        j->mnext = NULL;
        if (e->mem_tail)
            e->mem_tail->mnext = j;
        else
            e->mem_head = j;
        e->mem_tail = j;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (j->stream)
        return stream_take(j, p, len);
    if (j->flush || j->busy || j->pbuf.len + len > j->pbuf.max) {
        j->src_paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (!buf_append(&j->pbuf, p, len))
        abort(); /* checked above */
    if (j->pbuf.len >= j->part_size) {
        j->flush = true;
        job_poke(j);
    }
    return len;
}

static void legacy_part_done(struct xreq *r)
{
    struct xjob *j = r->job;
    cut_err err = CUT_ERR_INIT;

    j->busy = false;
    j->out.s3 = r->res;
    if (err_isset(&r->err)) {
        job_fail(j, &r->err);
        return;
    }
    if (!part_check_note(j, r, true, &err)) {
        job_fail(j, &err);
        return;
    }
    buf_reset(&j->pbuf);
    hasher_reset(&j->part);
    j->flush = false;
    job_step(j);
}

static void legacy_single_done(struct xreq *r)
{
    struct xjob *j = r->job;

    j->busy = false;
    j->out.s3 = r->res; /* sent with Content-MD5 of the bytes read: S3 checked them */
    job_finish(j, &r->err);
}

/* One S3 request of the part buffer: the whole document (PUT) or one part (UploadPart),
 * with Content-MD5 and SHA-256 from the hashers. */
static void legacy_send_buffer(struct xjob *j, bool single)
{
    struct xreq *r = &j->r;
    unsigned char md5[16], sha[32];

    job_req(j, r, single ? legacy_single_done : legacy_part_done);
    if (single) {
        /* the whole document is the part: the GET's own hashes, no second pass */
        memcpy(md5, j->out.md5, 16);
        memcpy(sha, j->out.sha256, 32);
        s3_put_hdrs_fill(j->e->s3, &j->ph, md5, sha, j->content_type, j->content_disposition, true);
    } else {
        /* a part: Content-MD5 (S3 checks the bytes against it) and an unsigned payload, one
         * pass over the buffer (the document's SHA-256 is the GET's) */
        unsigned int l;
        pthread_once(&md_once, md_fetch);
        if (EVP_Digest(j->pbuf.data ? j->pbuf.data : "", j->pbuf.len, md5, &l, md_md5, NULL) != 1)
            abort();
        s3_put_hdrs_fill(j->e->s3, &j->ph, md5, NULL, NULL, NULL, false);
    }
    r->rq.method = "PUT";
    r->rq.key = j->key;
    if (!single) {
        j->partno++;
        snprintf(j->pn, sizeof(j->pn), "%u", j->partno);
        j->q[0] = (struct sigv4_kv){"partNumber", j->pn};
        j->q[1] = (struct sigv4_kv){"uploadId", j->upload_id};
        r->rq.query = j->q;
        r->rq.nquery = 2;
    }
    r->rq.headers = j->ph.hv;
    r->rq.nheaders = j->ph.n;
    r->rq.payload_hash = j->ph.sha_hex;
    r->rq.body = j->pbuf.data ? j->pbuf.data : "";
    r->rq.body_len = j->pbuf.len;
    j->busy = true;
    req_start(j->e, r);
}

static void legacy_src_done(struct xreq *r)
{
    struct xjob *j = r->job;

    j->src_running = false;
    if (err_isset(&r->err)) {
        job_fail(j, &r->err);
        return;
    }
    j->src_done = true;
    hasher_peek(&j->whole, j->out.md5, j->out.sha256);
    j->out.bytes = j->whole.n;
    j->out.hashed = true;
    if (j->stream && j->whole.n != j->slen) {
        cut_err err = CUT_ERR_INIT;
        err_set(&err, CUT_ECONFLICT, "xfer",
                "%s: the legacy store sent %llu bytes where it announced %llu", j->src_key,
                (unsigned long long)j->whole.n, (unsigned long long)j->slen);
        job_fail(j, &err);
        return;
    }
    if (j->have_hashes && (memcmp(j->out.md5, j->md5, 16) || memcmp(j->out.sha256, j->sha, 32))) {
        cut_err err = CUT_ERR_INIT;
        err_set(&err, CUT_ECONFLICT, "xfer",
                "%s: the legacy store's bytes differ from the expected hashes", j->src_key);
        job_fail(j, &err);
        return;
    }
    job_step(j);
}

/* Moves a legacy -> S3 copy on: called whenever the GET, a request or the buffer changed. */
static void job_step(struct xjob *j)
{
    if (j->finished || j->kind != J_LEGACY_PUT || j->aborting)
        return;
    if (j->stream) {
        stream_step(j);
        return;
    }
    if (j->busy || j->mpu == 1)
        return;
    if (j->flush || (j->src_done && j->mpu == 2 && j->pbuf.len > 0)) {
        if (j->mpu == 0) {
            mpu_create(j);
            return;
        }
        if (j->partno + 1 > XFER_MAX_PARTS) {
            cut_err err = CUT_ERR_INIT;
            err_set(&err, CUT_ELIMIT, "xfer", "%s: more than %d parts", j->key, XFER_MAX_PARTS);
            job_fail(j, &err);
            return;
        }
        legacy_send_buffer(j, false);
        return;
    }
    if (j->src_done) {
        if (j->final_sent)
            return;
        j->final_sent = true;
        if (j->mpu == 0)
            legacy_send_buffer(j, true);
        else
            mpu_complete(j);
        return;
    }
    if (j->src_paused && j->src.h) {
        j->src_paused = false;
        curl_easy_pause(j->src.h, CURLPAUSE_CONT);
    }
}

static void fetch_done(struct xreq *r)
{
    struct xjob *j = r->job;
    cut_err err = CUT_ERR_INIT;

    if (!r->legacy)
        j->out.s3 = r->res;
    if (err_isset(&r->err)) {
        job_finish(j, &r->err);
        return;
    }
    if (!whole_hashed(j))
        err_set(&err, CUT_ECONFLICT, "xfer", "%s: the bytes read differ from the expected hashes",
                j->src_key);
    job_finish(j, &err);
}

/* The streamed GET of a fetch or a legacy -> S3 copy. */
static void src_start(struct xjob *j)
{
    struct xreq *r = &j->src;

    job_req(j, r, j->kind == J_FETCH ? fetch_done : legacy_src_done);
    r->hout[0] = &j->whole;
    if (j->src_kind == XFER_SRC_LEGACY) {
        r->legacy = true;
        r->out_max = legacy_max_bytes(j->legacy);
        r->max_attempts = legacy_max_attempts(j->legacy);
    } else if (j->src_kind == XFER_SRC_URL) {
        /* a plain GET like the legacy store's, without its headers, tried once */
        r->legacy = true;
        r->out_max = j->url_max;
        r->max_attempts = 1;
    } else {
        r->rq.method = "GET";
        r->rq.key = j->src_key;
    }
    if (j->kind == J_FETCH) {
        r->rq.sink = j->fn;
        r->rq.sink_arg = j->fn_arg;
    } else {
        r->tee = true;
        r->hout[1] = NULL; /* the part hasher is fed by job_tee() */
        j->src_running = true;
    }
    req_start(j->e, r);
}

/* Admission: the transfer starts its first request. */
static void job_start(struct xjob *j)
{
    xfer_engine *e = j->e;
    struct stat st;
    cut_err err = CUT_ERR_INIT;

    if (j->kind != J_CALL && j->kind != J_HEAD) {
        hasher_init(&j->whole);
        hasher_init(&j->part);
    }
    switch (j->kind) {
    case J_CALL:
        job_req(j, &j->r, call_done);
        j->r.rq = j->call_rq;
        req_start(e, &j->r);
        return;
    case J_HEAD:
        job_req(j, &j->r, call_done);
        j->hv[0] = (struct sigv4_kv){"x-amz-checksum-mode", "ENABLED"};
        j->r.rq.method = "HEAD";
        j->r.rq.key = j->key;
        j->r.rq.headers = j->hv;
        j->r.rq.nheaders = 1;
        req_start(e, &j->r);
        return;
    case J_FETCH:
        src_start(j);
        return;
    case J_LEGACY_PUT:
        buf_init(&j->pbuf, (size_t)j->part_size + 256 * 1024);
        src_start(j);
        return;
    case J_PUT:
    case J_MPU_FILE:
        break;
    }
    if (j->src_kind == XFER_SRC_FILE) {
        j->fd = open(j->path, O_RDONLY | O_CLOEXEC);
        if (j->fd < 0 || fstat(j->fd, &st) != 0) {
            err_set(&err, CUT_EIO, "xfer", "%s: %s", j->path, strerror(errno));
            job_finish(j, &err);
            return;
        }
        j->size = (uint64_t)st.st_size;
        if (j->size >= e->lim.multipart_threshold) {
            j->kind = J_MPU_FILE;
            while ((j->size + j->part_size - 1) / j->part_size > XFER_MAX_PARTS)
                j->part_size += 1ull << 20; /* at most 10,000 parts: grow in MiB steps */
            j->nparts = (unsigned)((j->size + j->part_size - 1) / j->part_size);
            mpu_create(j);
            return;
        }
        if (!j->have_hashes && !e->lim.etag_is_md5) {
            /* SSE-KMS: the ETag proves nothing, so Content-MD5 must be known before */
            if (s3x_hash_fd(j->fd, 0, j->size, j->md5, j->sha, &err) != 0) {
                job_finish(j, &err);
                return;
            }
            j->have_hashes = true;
        }
    }
    put_start(j);
}

/* ---- the engine ------------------------------------------------------------------------ */

/* Takes r out of libcurl or the backoff list; its done callback is not called. */
static void req_cancel(xfer_engine *e, struct xreq *r)
{
    thr_remove(e, r);
    if (r->h) {
        curl_multi_remove_handle(e->multi, r->h);
        curl_easy_setopt(r->h, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, NULL);
        handle_put(e, r->h);
        r->h = NULL;
    }
    for (struct xreq **pp = &e->waiting; *pp; pp = &(*pp)->wnext)
        if (*pp == r) {
            *pp = r->wnext;
            break;
        }
    for (struct xreq **pp = &e->ready; *pp; pp = &(*pp)->wnext)
        if (*pp == r) {
            *pp = r->wnext;
            break;
        }
    r->running = false;
}

static void job_cancel_reqs(struct xjob *j)
{
    req_cancel(j->e, &j->r);
    req_cancel(j->e, &j->src);
    j->src_running = false;
    j->busy = false;
}

/* Whether a transfer that reads the legacy store may start now: the documents/s bucket is
 * not in debt, no hold (429/503) is running, and fewer than legacy_cap such transfers run. */
static bool legacy_may_start(xfer_engine *e, uint64_t now)
{
    if (now < e->hold_until_us || e->legacy_active >= e->legacy_cap)
        return false;
    if (e->buf_budget && e->buf_reserved >= e->buf_budget)
        return false; /* the part buffers are all taken: a start would only wait */
    return tb_open(&e->docs, now);
}

static void admit(xfer_engine *e)
{
    uint64_t now = now_us();

    /* the legacy store's ceiling grows back by one a second after a hold */
    if (e->legacy_cap < e->max_active && now >= e->hold_until_us &&
        now - e->cap_changed_us >= 1000000u) {
        e->legacy_cap++;
        e->cap_changed_us = now;
        atomic_store(&e->st_legacy_cap, e->legacy_cap);
    }
    /* in submission order; a transfer held by the legacy store's limits keeps its place while
     * the ones behind it that do not read the store (HEADs, spool copies) go on */
    struct xjob **pp = &e->pend_head, *prev = NULL;
    while (*pp && atomic_load(&e->st_active) < e->max_active) {
        struct xjob *j = *pp;
        int active;
        bool legacy = j->src_kind == XFER_SRC_LEGACY && j->kind != J_CALL && j->kind != J_HEAD;
        if (legacy && !legacy_may_start(e, now)) {
            prev = j;
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        if (e->pend_tail == j)
            e->pend_tail = prev;
        j->next = NULL;
        j->anext = e->act;
        j->aprev = NULL;
        if (e->act)
            e->act->aprev = j;
        e->act = j;
        active = atomic_fetch_add(&e->st_active, 1) + 1;
        if (active > atomic_load(&e->st_peak))
            atomic_store(&e->st_peak, active);
        if (legacy) {
            j->reads_legacy = true;
            e->legacy_active++;
            atomic_store(&e->st_legacy_active, e->legacy_active);
            tb_take(&e->docs, 1, now);
        }
        job_start(j);
    }
}

/* Whether some transfer waiting for admission could start now. */
static bool admissible(xfer_engine *e)
{
    uint64_t now = now_us();

    if (atomic_load(&e->st_active) >= e->max_active)
        return false;
    for (struct xjob *j = e->pend_head; j; j = j->next)
        if (j->src_kind != XFER_SRC_LEGACY || j->kind == J_CALL || j->kind == J_HEAD ||
            legacy_may_start(e, now))
            return true;
    return false;
}

/* The GETs paused by the bytes/s bucket go on, oldest first, while it is out of debt (each
 * one's first bytes may put it back in debt and pause it again, at the end of the list). */
static void thr_release(xfer_engine *e)
{
    int n = 0;
    for (struct xreq *x = e->thr_head; x; x = x->tnext)
        n++;
    while (e->thr_head && n-- > 0 && tb_open(&e->bytes, now_us())) {
        struct xreq *r = e->thr_head;
        e->thr_head = r->tnext;
        if (!e->thr_head)
            e->thr_tail = NULL;
        r->tnext = NULL;
        r->thr_paused = false;
        if (r->h)
            curl_easy_pause(r->h, CURLPAUSE_CONT);
    }
}

/* Milliseconds until a limit of the legacy store may let something go (capped by max_ms). */
static long limits_wait_ms(xfer_engine *e, long max_ms)
{
    uint64_t now = now_us(), us = (uint64_t)max_ms * 1000;
    bool legacy_pending = false;

    for (struct xjob *j = e->pend_head; j && !legacy_pending; j = j->next)
        legacy_pending = j->src_kind == XFER_SRC_LEGACY;
    if (e->thr_head) {
        uint64_t w = tb_wait_us(&e->bytes, now);
        if (w < us)
            us = w;
    }
    if (legacy_pending && atomic_load(&e->st_active) < e->max_active) {
        uint64_t w;
        if (now < e->hold_until_us)
            w = e->hold_until_us - now;
        else if (e->legacy_active >= e->legacy_cap)
            w = 1000000u; /* a transfer ending wakes the loop anyway; the cap grows each second */
        else if (e->buf_budget && e->buf_reserved >= e->buf_budget)
            w = us; /* only a copy that ends makes room, and its end wakes the loop */
        else
            w = tb_wait_us(&e->docs, now);
        if (w < us)
            us = w;
    }
    return (long)((us + 999) / 1000);
}

void xfer_engine_set_buffer_budget(xfer_engine *e, uint64_t bytes)
{
    pthread_mutex_lock(&e->mu);
    e->want_budget = bytes;
    pthread_mutex_unlock(&e->mu);
    curl_multi_wakeup(e->multi);
}

void xfer_engine_background(xfer_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->want_background = true;
    pthread_mutex_unlock(&e->mu);
    curl_multi_wakeup(e->multi);
}

void xfer_engine_set_legacy_limits(xfer_engine *e, double docs_per_s, double bytes_per_s)
{
    pthread_mutex_lock(&e->mu);
    e->want_docs = docs_per_s > 0 ? docs_per_s : 0;
    e->want_bytes = bytes_per_s > 0 ? bytes_per_s : 0;
    pthread_mutex_unlock(&e->mu);
    curl_multi_wakeup(e->multi);
}

static void fail_all(xfer_engine *e, struct xjob *list)
{
    cut_err err = CUT_ERR_INIT;

    err_set(&err, CUT_EIO, "xfer", "the transfer engine stopped");
    while (list) {
        struct xjob *j = list, *n = j->next;
        j->finished = true;
        atomic_fetch_add(&e->st_failed, 1);
        j->done(j->arg, &j->out, &err);
        job_free(j);
        list = n;
    }
}

static void *engine_main(void *arg)
{
    xfer_engine *e = arg;
    struct xjob *sub;

    thread_setup("xfer", false);
    for (;;) {
        bool stop, bg;
        int running = 0, msgs;
        CURLMsg *m;
        uint64_t now;
        long wait_ms = 1000;

        pthread_mutex_lock(&e->mu);
        sub = e->sub_head;
        e->sub_head = e->sub_tail = NULL;
        e->woken = false;
        stop = e->stop;
        bg = e->want_background;
        if (e->want_docs != e->have_docs) {
            e->have_docs = e->want_docs;
            tb_init(&e->docs, e->have_docs, now_us());
        }
        e->buf_budget = e->want_budget;
        if (e->want_bytes != e->have_bytes) {
            e->have_bytes = e->want_bytes;
            tb_init(&e->bytes, e->have_bytes, now_us());
        }
        pthread_mutex_unlock(&e->mu);
        if (bg && !e->background) {
            thread_setup(NULL, true);
            e->background = true;
        }
        while (sub) {
            struct xjob *n = sub->next;
            sub->next = NULL;
            if (e->pend_tail)
                e->pend_tail->next = sub;
            else
                e->pend_head = sub;
            e->pend_tail = sub;
            sub = n;
        }
        if (stop)
            break;
        admit(e);

        thr_release(e);
        mem_release(e);

        /* backoff timers that are due (the legacy store's wait for a hold to end) */
        now = now_us();
        for (struct xreq **pp = &e->waiting; *pp;) {
            struct xreq *r = *pp;
            if (r->legacy && r->due_us < e->hold_until_us)
                r->due_us = e->hold_until_us;
            if (r->due_us <= now) {
                *pp = r->wnext;
                r->wnext = NULL;
                req_attempt(e, r);
            } else {
                pp = &r->wnext;
            }
        }
        /* requests that ended before reaching libcurl */
        while (e->ready) {
            struct xreq *r = e->ready;
            e->ready = r->wnext;
            r->wnext = NULL;
            req_finished(e, r, CURLE_OK);
        }

        curl_multi_perform(e->multi, &running);
        while ((m = curl_multi_info_read(e->multi, &msgs)) != NULL) {
            struct xreq *r = NULL;
            if (m->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            if (r)
                req_finished(e, r, m->data.result);
        }
        /* transfers whose part buffer filled up during the callbacks */
        while (e->poke) {
            struct xjob *j = e->poke;
            e->poke = j->pnext;
            j->poked = false;
            job_step(j);
        }
        if (e->ready || admissible(e))
            continue;
        wait_ms = limits_wait_ms(e, wait_ms);

        now = now_us();
        for (struct xreq *r = e->waiting; r; r = r->wnext) {
            long ms = r->due_us <= now ? 0 : (long)((r->due_us - now + 999) / 1000);
            if (ms < wait_ms)
                wait_ms = ms;
        }
        if (wait_ms > 0)
            curl_multi_poll(e->multi, NULL, 0, (int)wait_ms, NULL);
    }

    /* stopping: everything still here fails */
    while (e->act) {
        struct xjob *j = e->act;
        cut_err err = CUT_ERR_INIT;
        job_cancel_reqs(j);
        err_set(&err, CUT_EIO, "xfer", "the transfer engine stopped");
        job_finish(j, &err);
    }
    fail_all(e, e->pend_head);
    e->pend_head = e->pend_tail = NULL;
    pthread_mutex_lock(&e->mu);
    sub = e->sub_head;
    e->sub_head = e->sub_tail = NULL;
    pthread_mutex_unlock(&e->mu);
    fail_all(e, sub);
    return NULL;
}

xfer_engine *xfer_engine_new(s3_client *s3, const struct xfer_engine_opts *opts, cut_err *err)
{
    xfer_engine *e = xcalloc(1, sizeof(*e));

    e->s3 = s3;
    if (s3) {
        e->lim = *s3_client_limits(s3);
    } else {
        e->lim.retry_base_ms = 100;
        e->lim.retry_max_total_ms = 30000;
        e->lim.max_attempts = 3;
        e->lim.timeout_s = 300;
        e->lim.part_size = 16ull << 20;
        e->lim.multipart_threshold = 64ull << 20;
        e->lim.etag_is_md5 = true;
    }
    e->max_active = opts && opts->max_active > 0 ? opts->max_active : XFER_DEFAULT_ACTIVE;
    e->no_jitter = opts && opts->no_jitter;
    e->legacy_cap = e->max_active;
    atomic_store(&e->st_legacy_cap, e->legacy_cap);
    e->seed = now_us() ^ (uint64_t)(uintptr_t)e;
    if (e->seed == 0)
        e->seed = 0x9e3779b97f4a7c15ull;
    pthread_mutex_init(&e->mu, NULL);
    e->multi = curl_multi_init();
    if (e->multi == NULL) {
        err_set(err, CUT_EIO, "xfer", "cannot create a libcurl multi handle");
        goto fail;
    }
    /* keep a warm connection per transfer in flight: libcurl's default cache is sized
     * for the handles attached at the moment, and ours are attached one request at a time */
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)(2 * e->max_active));
    if (pthread_create(&e->th, NULL, engine_main, e) != 0) {
        err_set(err, CUT_EIO, "xfer", "cannot start the engine thread: %s", strerror(errno));
        goto fail;
    }
    e->started = true;
    return e;
fail:
    xfer_engine_free(e);
    return NULL;
}

void xfer_engine_free(xfer_engine *e)
{
    if (e == NULL)
        return;
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        pthread_mutex_unlock(&e->mu);
        curl_multi_wakeup(e->multi);
        pthread_join(e->th, NULL);
    }
    for (int i = 0; i < e->npool; i++)
        curl_easy_cleanup(e->pool[i]);
    if (e->multi)
        curl_multi_cleanup(e->multi);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

bool xfer_on_engine_thread(const xfer_engine *e)
{
    return e->started && pthread_equal(pthread_self(), e->th);
}

void xfer_engine_stats(xfer_engine *e, struct xfer_stats *out)
{
    out->submitted = atomic_load(&e->st_submitted);
    out->completed = atomic_load(&e->st_completed);
    out->failed = atomic_load(&e->st_failed);
    out->requests = atomic_load(&e->st_requests);
    out->retries = atomic_load(&e->st_retries);
    out->active = atomic_load(&e->st_active);
    out->active_peak = atomic_load(&e->st_peak);
    out->throttled = atomic_load(&e->st_throttled);
    out->hold_ms = atomic_load(&e->st_hold_ms);
    out->legacy_bytes = atomic_load(&e->st_legacy_bytes);
    out->legacy_cap = atomic_load(&e->st_legacy_cap);
    out->legacy_active = atomic_load(&e->st_legacy_active);
    out->streamed = atomic_load(&e->st_streamed);
    out->buf_peak = atomic_load(&e->st_buf_peak);
}

static struct xjob *job_new(xfer_engine *e, enum job_kind kind, xfer_done_fn done, void *arg)
{
    struct xjob *j = xcalloc(1, sizeof(*j));

    j->e = e;
    j->kind = kind;
    j->done = done;
    j->arg = arg;
    j->fd = -1;
    j->out.s3.content_length = -1;
    j->out.legacy.content_length = -1;
    j->part_size = e->lim.part_size;
    buf_init(&j->xml, 0);
    buf_init(&j->answer, XFER_MAX_XML);
    return j;
}

static void submit(xfer_engine *e, struct xjob *j)
{
    bool wake;

    atomic_fetch_add(&e->st_submitted, 1);
    pthread_mutex_lock(&e->mu);
    if (e->sub_tail)
        e->sub_tail->next = j;
    else
        e->sub_head = j;
    e->sub_tail = j;
    wake = !e->woken;
    e->woken = true;
    pthread_mutex_unlock(&e->mu);
    if (wake)
        curl_multi_wakeup(e->multi);
}

static bool key_ok(const char *key, const char *what, cut_err *err)
{
    if (key == NULL || !key[0] || strlen(key) > XFER_MAX_KEY) {
        err_set(err, CUT_EINVAL, "xfer", "%s: key empty or longer than %d bytes", what,
                XFER_MAX_KEY);
        return false;
    }
    return true;
}

int xfer_copy(xfer_engine *e, const struct xfer_src *src, const struct xfer_sink *sink,
              xfer_done_fn done, void *arg, cut_err *err)
{
    struct xjob *j;
    enum job_kind kind;

    if (sink->kind == XFER_SINK_S3) {
        if (e->s3 == NULL) {
            err_set(err, CUT_EINVAL, "xfer", "copy to S3 on an engine without an S3 client");
            return -1;
        }
        if (!key_ok(sink->key, "copy to S3", err))
            return -1;
        if (src->kind == XFER_SRC_S3) {
            err_set(err, CUT_EINVAL, "xfer", "S3 to S3 copies are not supported");
            return -1;
        }
        kind = src->kind == XFER_SRC_LEGACY ? J_LEGACY_PUT : J_PUT;
    } else {
        if (src->kind != XFER_SRC_LEGACY && src->kind != XFER_SRC_S3 && src->kind != XFER_SRC_URL) {
            err_set(err, CUT_EINVAL, "xfer", "a fetch reads from the legacy store, S3 or a URL");
            return -1;
        }
        kind = J_FETCH;
    }
    if (src->kind == XFER_SRC_LEGACY && src->legacy == NULL) {
        err_set(err, CUT_EINVAL, "xfer", "legacy source without a legacy store");
        return -1;
    }
    if (src->kind == XFER_SRC_S3 && e->s3 == NULL) {
        err_set(err, CUT_EINVAL, "xfer", "S3 source on an engine without an S3 client");
        return -1;
    }
    if (src->kind == XFER_SRC_URL &&
        (src->url == NULL ||
         (strncmp(src->url, "http://", 7) != 0 && strncmp(src->url, "https://", 8) != 0))) {
        err_set(err, CUT_EINVAL, "xfer", "a URL source must be an http:// or https:// URL");
        return -1;
    }
    if ((src->kind == XFER_SRC_LEGACY || src->kind == XFER_SRC_S3 || src->kind == XFER_SRC_URL) &&
        !key_ok(src->key, "source", err))
        return -1;
    if (src->kind == XFER_SRC_FILE && (src->path == NULL || !src->path[0])) {
        err_set(err, CUT_EINVAL, "xfer", "file source without a path");
        return -1;
    }
    j = job_new(e, kind, done, arg);
    j->src_kind = src->kind;
    j->key = xstrdup(sink->kind == XFER_SINK_S3 ? sink->key : NULL);
    j->content_type = xstrdup(sink->content_type);
    j->content_disposition = xstrdup(sink->content_disposition);
    j->src_key = xstrdup(src->key ? src->key : sink->key);
    j->path = xstrdup(src->path);
    j->data = src->data;
    j->len = src->len;
    j->legacy = src->legacy;
    j->fn = sink->fn;
    j->fn_arg = sink->arg;
    if (src->md5 && src->sha256) {
        memcpy(j->md5, src->md5, 16);
        memcpy(j->sha, src->sha256, 32);
        j->have_hashes = true;
    }
    if (src->kind == XFER_SRC_URL) {
        j->lurl = xstrdup(src->url);
        j->url_timeout_s = src->timeout_s > 0 ? src->timeout_s : 30;
        j->url_max = src->max_bytes ? src->max_bytes : 5ull << 30;
    }
    if (src->kind == XFER_SRC_LEGACY) {
        j->lurl = legacy_url(src->legacy, src->key, err);
        if (j->lurl == NULL) {
            job_free(j);
            return -1;
        }
    }
    submit(e, j);
    return 0;
}

int xfer_head(xfer_engine *e, const char *key, xfer_done_fn done, void *arg, cut_err *err)
{
    struct xjob *j;

    if (e->s3 == NULL) {
        err_set(err, CUT_EINVAL, "xfer", "HEAD on an engine without an S3 client");
        return -1;
    }
    if (!key_ok(key, "HEAD", err))
        return -1;
    j = job_new(e, J_HEAD, done, arg);
    j->key = xstrdup(key);
    j->out.op = XFER_HEAD;
    submit(e, j);
    return 0;
}

/* ---- blocking wrappers ----------------------------------------------------------------- */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    struct xfer_outcome *out;
    cut_err *err;
};

static void waiter_done(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    struct waiter *w = arg;

    pthread_mutex_lock(&w->mu);
    *w->out = *o;
    if (err_isset(err))
        *w->err = *err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void waiter_wait(struct waiter *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

static void waiter_init(struct waiter *w, struct xfer_outcome *out, cut_err *err)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->done = false;
    w->out = out;
    w->err = err;
}

static bool refuse_on_engine(xfer_engine *e, cut_err *err)
{
    if (xfer_on_engine_thread(e)) {
        err_set(err, CUT_EINVAL, "xfer",
                "a blocking call on the engine's own thread would wait for itself");
        return true;
    }
    return false;
}

int xfer_s3_call(xfer_engine *e, const struct s3_req *rq, struct s3_result *res, cut_err *err)
{
    struct xfer_outcome o;
    struct waiter w;
    cut_err e2 = CUT_ERR_INIT;
    struct xjob *j;

    memset(res, 0, sizeof(*res));
    res->content_length = -1;
    if (refuse_on_engine(e, err))
        return -1;
    if (e->s3 == NULL) {
        err_set(err, CUT_EINVAL, "xfer", "S3 request on an engine without an S3 client");
        return -1;
    }
    memset(&o, 0, sizeof(o));
    waiter_init(&w, &o, &e2);
    j = job_new(e, J_CALL, waiter_done, &w);
    j->call_rq = *rq;
    submit(e, j);
    waiter_wait(&w);
    *res = o.s3;
    if (err_isset(&e2)) {
        err_set(err, e2.code, e2.where, "%s", e2.msg);
        return -1;
    }
    return 0;
}

int xfer_copy_wait(xfer_engine *e, const struct xfer_src *src, const struct xfer_sink *sink,
                   struct xfer_outcome *out, cut_err *err)
{
    struct waiter w;
    cut_err e2 = CUT_ERR_INIT;

    memset(out, 0, sizeof(*out));
    out->s3.content_length = -1;
    out->legacy.content_length = -1;
    if (refuse_on_engine(e, err))
        return -1;
    waiter_init(&w, out, &e2);
    if (xfer_copy(e, src, sink, waiter_done, &w, err) != 0) {
        pthread_cond_destroy(&w.cv);
        pthread_mutex_destroy(&w.mu);
        return -1;
    }
    waiter_wait(&w);
    if (err_isset(&e2)) {
        err_set(err, e2.code, e2.where, "%s", e2.msg);
        return -1;
    }
    return 0;
}
