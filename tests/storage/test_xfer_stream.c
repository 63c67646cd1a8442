/*
 * test_xfer_stream: legacy -> S3 copies sent as one PUT streamed from the GET (a document
 * whose GET announces a length under s3.multipart_threshold), against s3rver (which checks
 * SigV4 signatures; its ETag is the body's MD5). The legacy store is a plain HTTP server in
 * the test on a raw socket, so that it can break its answers the way a real one does (cut
 * short, longer than announced, changed between two GETs).
 *   - a 12 MiB document with 5 MiB parts and a 64 MiB threshold: one PUT (no parts), S3 has
 *     the same bytes and its ETag is their MD5, the engine counts one streamed copy and never
 *     held more than one stream buffer (a part buffer would be 5 MiB);
 *   - a store that announces 6 MiB and closes after 3 MiB: the copy fails and S3 never got a
 *     whole body (the PUT is cut short: S3 keeps no object; s3rver, which writes a PUT to its
 *     file as it arrives, keeps the bytes it got, fewer than announced); the next copy gets
 *     another body, whole: the hashes recorded and S3's bytes are those of that body;
 *   - a store that sends more than it announced: what S3 stores and what the outcome's hashes
 *     say are the same (the announced bytes);
 *   - the caller's expected hashes differ from the bytes: the copy fails and S3 never got a
 *     whole body (the PUT's last byte waits for the GET's checks);
 *   - S3 refusing the PUT once its body has gone (a relay answering 503 SlowDown): the copy fails
 *     at once (no retry of a PUT whose bytes are gone, the GET stopped), nothing reaches S3,
 *     and the next copy, with S3 answering again, succeeds;
 *   - what stays on the part path: a chunked answer (no length) of 6 MiB (a multipart upload
 *     of two 5 MiB parts) and a 200 KiB document (one buffered PUT); neither is streamed;
 *   - 20 copies of 6 MiB at once within a buffer budget of 4 stream buffers: all complete,
 *     identical, within the budget (paused GETs and PUTs do not wait on each other).
 */
#include "storage/legacy.h"
#include "storage/s3.h"
#include "storage/xfer.h"
#include "tests/faults/relay.h"
#include "tests/s3/xfer_gather.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MIB (1ull << 20)
#define NCONC 20
_Static_assert(NCONC <= GATHER_MAX, "one gather slot per copy");
#define SECRET "stream-secret-5"

/* ---- the legacy store: GET /raw/<key>, a thread per connection, Connection: close ---------
 *   ok-SIZE-...    200, Content-Length SIZE, body_bytes(key, 0, ...)
 *   cut-SIZE-...   the first GET: announces SIZE, sends SIZE/2 and closes; later GETs: 200
 *                  with body_bytes(key, 1, ...), a body the first one never had
 *   over-SIZE-...  announces SIZE, sends SIZE + 64 KiB
 *   chunk-SIZE-... 200 with SIZE bytes, Transfer-Encoding: chunked (no length announced) */

struct store {
    int lfd, port;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int conns; /* connection threads running */
    int gets;  /* GETs answered */
    char cut_seen[16][256];
    int ncut;
};

static void body_bytes(const char *key, int variant, uint64_t off, unsigned char *p, size_t n)
{
    uint32_t h = 2166136261u + (uint32_t)variant * 7919u;

    for (const char *k = key; *k; k++)
        h = (h ^ (unsigned char)*k) * 16777619u;
    for (size_t i = 0; i < n; i++) {
        uint64_t x = off + i;
        p[i] = (unsigned char)((x * 2654435761u) ^ h ^ (x >> 11) ^ (x >> 19));
    }
}

static bool send_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

struct conn {
    struct store *s;
    int fd;
};

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct store *s = c->s;
    char req[8192], key[256] = "";
    size_t got = 0;
    unsigned long long size = 0, send_n;
    int variant = 0;
    bool chunked;
    unsigned char *chunk = xmalloc(64 * 1024);
    char head[256];

    while (got < sizeof(req) - 1 && !memmem(req, got, "\r\n\r\n", 4)) {
        ssize_t r = recv(c->fd, req + got, sizeof(req) - 1 - got, 0);
        if (r <= 0)
            goto out;
        got += (size_t)r;
    }
    req[got] = '\0';
    if (sscanf(req, "GET /raw/%255s HTTP/1.1", key) != 1 ||
        !strstr(req, "X-Api-Key: " SECRET "\r\n"))
        goto out;
    {
        const char *dash = strchr(key, '-');
        size = dash ? strtoull(dash + 1, NULL, 10) : 0;
    }
    send_n = size;
    pthread_mutex_lock(&s->mu);
    s->gets++;
    if (strncmp(key, "cut-", 4) == 0) {
        bool seen = false;
        for (int i = 0; i < s->ncut; i++)
            seen |= strcmp(s->cut_seen[i], key) == 0;
        if (seen) {
            variant = 1;
        } else if (s->ncut < 16) {
            snprintf(s->cut_seen[s->ncut++], sizeof(s->cut_seen[0]), "%s", key);
            send_n = size / 2;
        }
    } else if (strncmp(key, "over-", 5) == 0) {
        send_n = size + 64 * 1024;
    }
    pthread_mutex_unlock(&s->mu);
    chunked = strncmp(key, "chunk-", 6) == 0;
    if (chunked)
        snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    else
        snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
                 "%llu\r\nConnection: close\r\n\r\n",
                 size);
    if (!send_all(c->fd, head, strlen(head)))
        goto out;
    for (uint64_t off = 0; off < send_n;) {
        size_t n = send_n - off < 64 * 1024 ? (size_t)(send_n - off) : 64 * 1024;
        char ch[32];
        body_bytes(key, variant, off, chunk, n);
        snprintf(ch, sizeof(ch), "%zx\r\n", n);
        if ((chunked && !send_all(c->fd, ch, strlen(ch))) || !send_all(c->fd, chunk, n) ||
            (chunked && !send_all(c->fd, "\r\n", 2)))
            goto out;
        off += n;
    }
    if (chunked && !send_all(c->fd, "0\r\n\r\n", 5))
        goto out;
    shutdown(c->fd, SHUT_WR);
out:
    close(c->fd);
    free(chunk);
    pthread_mutex_lock(&s->mu);
    s->conns--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(c);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct store *s = arg;

    for (;;) {
        int fd = accept(s->lfd, NULL, NULL);
        struct conn *c;
        pthread_t th;
        if (fd < 0)
            return NULL; /* shut down by store_free() */
        c = xcalloc(1, sizeof(*c));
        c->s = s;
        c->fd = fd;
        pthread_mutex_lock(&s->mu);
        s->conns++;
        pthread_mutex_unlock(&s->mu);
        if (pthread_create(&th, NULL, conn_main, c) != 0)
            abort();
        pthread_detach(th);
    }
}

static struct store *store_start(void)
{
    struct store *s = xcalloc(1, sizeof(*s));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);

    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 64), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, accept_main, s), 0);
    return s;
}

static void store_free(struct store *s)
{
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->th, NULL);
    close(s->lfd);
    pthread_mutex_lock(&s->mu);
    while (s->conns > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int store_gets(struct store *s)
{
    int n;

    pthread_mutex_lock(&s->mu);
    n = s->gets;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- S3, the engine, the legacy client ---------------------------------------------------- */

struct env {
    struct cfg_s3 cfg;
    creds_provider *cp;
    s3_client *c;
    xfer_engine *e;
    struct store *st;
    legacy_store *legacy;
    char run[48]; /* a prefix so that reruns never see old objects */
};

static int setup(void **state)
{
    struct env *v = xcalloc(1, sizeof(*v));
    struct xfer_engine_opts eo = {.max_active = NCONC};
    cut_err err = CUT_ERR_INIT;
    char *url;
    struct cfg_header h = {"X-Api-Key", SECRET};
    struct cfg_legacy lc = {NULL, &h, 1, 30};
    struct legacy_opts lo = {.max_bytes = 64 * MIB, .max_attempts = 2};

    v->cfg.endpoint = (char *)testenv("S3_ENDPOINT");
    v->cfg.region = (char *)testenv("S3_REGION");
    v->cfg.bucket = (char *)testenv("S3_BUCKET");
    v->cfg.path_style = true;
    v->cfg.access_key_id = (char *)testenv("S3_ACCESS_KEY");
    v->cfg.secret_access_key = (char *)testenv("S3_SECRET_KEY");
    v->cfg.multipart_threshold = 64 * MIB;
    v->cfg.part_size = 5 * MIB;
    v->cfg.max_attempts = 3;
    v->cfg.retry_base_ms = 50;
    v->cfg.retry_max_total_ms = 5000;
    v->cfg.timeout_s = 60;
    v->cp = creds_provider_new(&v->cfg, &err);
    assert_non_null(v->cp);
    v->c = s3_client_new(&v->cfg, v->cp, &err);
    assert_non_null(v->c);
    v->e = xfer_engine_new(v->c, &eo, &err); /* one per test: its peak counters are the test's */
    assert_non_null(v->e);
    v->st = store_start();
    url = xasprintf("http://127.0.0.1:%d/raw/{key}", v->st->port);
    lc.raw_url = url;
    v->legacy = legacy_new(&lc, &lo, &err);
    assert_non_null(v->legacy);
    free(url);
    snprintf(v->run, sizeof(v->run), "stream-%ld-%lu", (long)getpid(), (unsigned long)now_us());
    *state = v;
    return 0;
}

static int teardown(void **state)
{
    struct env *v = *state;

    xfer_engine_free(v->e);
    legacy_free(v->legacy);
    store_free(v->st);
    s3_client_free(v->c);
    creds_provider_free(v->cp);
    free(v);
    return 0;
}

static void assert_object(struct env *v, const char *key, uint64_t n, const unsigned char md5[16],
                          const unsigned char sha[32])
{
    struct s3_result r;
    struct md_sink ms = {EVP_MD_CTX_new(), 0};
    unsigned char got[32];
    unsigned int l;
    char etag[33];
    cut_err err = CUT_ERR_INIT;

    if (s3_head(v->c, key, &r, &err) != 0)
        fail_msg("HEAD %s: %s", key, err.msg);
    hex(md5, 16, etag);
    assert_string_equal(r.etag, etag);
    assert_int_equal(r.content_length, (int64_t)n);
    EVP_DigestInit_ex(ms.sha, EVP_sha256(), NULL);
    if (s3_get(v->c, key, sha_sink, &ms, &r, &err) != 0)
        fail_msg("GET %s: %s", key, err.msg);
    EVP_DigestFinal_ex(ms.sha, got, &l);
    assert_int_equal(ms.n, n);
    assert_memory_equal(got, sha, 32);
    EVP_MD_CTX_free(ms.sha);
}

/* S3 never received a whole body for key: a PUT cut short. S3 discards such a body (no
 * object: 404); s3rver writes a PUT's bytes to its file as they arrive and keeps what came
 * (an object shorter than announced), so that is what can be seen there. Either way no
 * object of `announced` bytes exists. */
static void assert_no_whole_body(struct env *v, const char *key, uint64_t announced)
{
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;

    if (s3_head(v->c, key, &r, &err) == 0) {
        if (r.content_length < 0 || (uint64_t)r.content_length >= announced)
            fail_msg("%s exists whole (%lld bytes)", key, (long long)r.content_length);
    } else if (r.status != 404) {
        fail_msg("HEAD %s: %s", key, err.msg);
    }
}

/* The hashes of key's body (variant) of n bytes. */
static void body_hashes(const char *key, int variant, uint64_t n, unsigned char md5[16],
                        unsigned char sha[32])
{
    unsigned char *p = xmalloc(n ? n : 1);

    body_bytes(key, variant, 0, p, n);
    hashes(p, n, md5, sha);
    free(p);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_streamed_one_put(void **state)
{
    struct env *v = *state;
    const char *lkey = "ok-12582912-a";
    char *key = xasprintf("%s/one-put", v->run);
    struct xfer_src src = {.kind = XFER_SRC_LEGACY, .key = lkey, .legacy = v->legacy};
    struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = key, .content_type = "application/pdf"};
    struct xfer_outcome o;
    struct xfer_stats st;
    unsigned char md5[16], sha[32];
    cut_err err = CUT_ERR_INIT;

    body_hashes(lkey, 0, 12 * MIB, md5, sha);
    if (xfer_copy_wait(v->e, &src, &dst, &o, &err) != 0)
        fail_msg("copy: %s", err.msg);
    assert_int_equal(o.legacy.fail, LEGACY_OK);
    assert_true(o.hashed);
    assert_int_equal(o.bytes, 12 * MIB);
    assert_memory_equal(o.md5, md5, 16);
    assert_memory_equal(o.sha256, sha, 32);
    assert_int_equal(o.parts, 0); /* one PUT, not a multipart upload of 5 MiB parts */
    assert_object(v, key, 12 * MIB, md5, sha);
    xfer_engine_stats(v->e, &st);
    assert_int_equal(st.streamed, 1);
    assert_int_equal(st.requests, 2); /* the GET and the PUT */
    /* the bytes went through the stream buffer, never a part (5 MiB) */
    if (st.buf_peak == 0 || st.buf_peak > MIB)
        fail_msg("peak buffer %llu bytes", (unsigned long long)st.buf_peak);
    free(key);
}

static void test_cut_short_then_changed(void **state)
{
    struct env *v = *state;
    const char *lkey = "cut-6291456-b";
    char *key = xasprintf("%s/cut", v->run);
    struct xfer_src src = {.kind = XFER_SRC_LEGACY, .key = lkey, .legacy = v->legacy};
    struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = key};
    struct xfer_outcome o;
    unsigned char md5[16], sha[32], md5_a[16], sha_a[32];
    cut_err err = CUT_ERR_INIT;

    /* 6 MiB announced, 3 MiB sent, then the connection closes */
    assert_int_equal(xfer_copy_wait(v->e, &src, &dst, &o, &err), -1);
    if (err.code != CUT_EHTTP || o.legacy.fail != LEGACY_SHORT)
        fail_msg("a GET cut short: %s (%s)", err.msg, legacy_fail_name(o.legacy.fail));
    assert_int_equal(store_gets(v->st), 1);
    assert_no_whole_body(v, key, 6 * MIB);

    /* the next attempt gets the whole document, another one than the first GET began */
    err_clear(&err);
    if (xfer_copy_wait(v->e, &src, &dst, &o, &err) != 0)
        fail_msg("second copy: %s", err.msg);
    body_hashes(lkey, 1, 6 * MIB, md5, sha);
    body_hashes(lkey, 0, 6 * MIB, md5_a, sha_a);
    assert_memory_not_equal(md5, md5_a, 16);
    assert_int_equal(o.bytes, 6 * MIB);
    assert_memory_equal(o.md5, md5, 16);
    assert_memory_equal(o.sha256, sha, 32);
    assert_object(v, key, 6 * MIB, md5, sha);
    free(key);
}

static void test_more_than_announced(void **state)
{
    struct env *v = *state;
    const char *lkey = "over-2097152-c";
    char *key = xasprintf("%s/over", v->run);
    struct xfer_src src = {.kind = XFER_SRC_LEGACY, .key = lkey, .legacy = v->legacy};
    struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = key};
    struct xfer_outcome o;
    unsigned char md5[16], sha[32];
    cut_err err = CUT_ERR_INIT;

    /* libcurl reads no further than Content-Length: the copy is the announced bytes, and the
     * hashes recorded are those S3 has; a failure would have to leave no object */
    if (xfer_copy_wait(v->e, &src, &dst, &o, &err) != 0) {
        print_message("more than announced: the copy failed (%s)\n", err.msg);
        assert_no_whole_body(v, key, 2 * MIB);
    } else {
        print_message("more than announced: the copy has the announced bytes\n");
        body_hashes(lkey, 0, 2 * MIB, md5, sha);
        assert_int_equal(o.bytes, 2 * MIB);
        assert_memory_equal(o.md5, md5, 16);
        assert_memory_equal(o.sha256, sha, 32);
        assert_object(v, key, 2 * MIB, md5, sha);
    }
    free(key);
}

static void test_expected_hashes_differ(void **state)
{
    struct env *v = *state;
    const char *lkey = "ok-3145728-d";
    char *key = xasprintf("%s/expected", v->run);
    unsigned char md5[16], sha[32];
    struct xfer_src src = {
        .kind = XFER_SRC_LEGACY, .key = lkey, .legacy = v->legacy, .md5 = md5, .sha256 = sha};
    struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = key};
    struct xfer_outcome o;
    struct xfer_stats st;
    cut_err err = CUT_ERR_INIT;

    body_hashes(lkey, 1, 3 * MIB, md5, sha); /* not the bytes the store has */
    assert_int_equal(xfer_copy_wait(v->e, &src, &dst, &o, &err), -1);
    assert_int_equal(err.code, CUT_ECONFLICT);
    xfer_engine_stats(v->e, &st);
    assert_int_equal(st.streamed, 1);
    /* the PUT's last byte waited for the GET's checks: S3 never got a whole body */
    assert_no_whole_body(v, key, 3 * MIB);
    free(key);
}

static void test_concurrent_within_budget(void **state)
{
    struct env *v = *state;
    struct gather *g = gather_new(NCONC);
    struct slot_ref refs[NCONC];
    char lkeys[NCONC][64], *keys[NCONC];
    struct xfer_stats st;
    const uint64_t budget = 4 * 256 * 1024;

    xfer_engine_set_buffer_budget(v->e, budget);
    for (int i = 0; i < NCONC; i++) {
        struct xfer_src src = {.kind = XFER_SRC_LEGACY, .key = lkeys[i], .legacy = v->legacy};
        struct xfer_sink dst = {.kind = XFER_SINK_S3};
        cut_err err = CUT_ERR_INIT;
        snprintf(lkeys[i], sizeof(lkeys[i]), "ok-6291456-n%d", i);
        keys[i] = xasprintf("%s/conc/%d", v->run, i);
        dst.key = keys[i];
        refs[i] = (struct slot_ref){g, i};
        if (xfer_copy(v->e, &src, &dst, gather_done, &refs[i], &err) != 0)
            fail_msg("submit %d: %s", i, err.msg);
    }
    if (!test_wait_until(gather_complete, g, 60000))
        fail_msg("only %d of %d copies ended", g->done, NCONC);
    for (int i = 0; i < NCONC; i++) {
        unsigned char md5[16], sha[32];
        if (g->s[i].code != CUT_OK)
            fail_msg("copy %d: %s", i, g->s[i].msg);
        body_hashes(lkeys[i], 0, 6 * MIB, md5, sha);
        assert_int_equal(g->s[i].o.bytes, 6 * MIB);
        assert_int_equal(g->s[i].o.parts, 0);
        assert_memory_equal(g->s[i].o.md5, md5, 16);
        assert_memory_equal(g->s[i].o.sha256, sha, 32);
        assert_object(v, keys[i], 6 * MIB, md5, sha);
        free(keys[i]);
    }
    xfer_engine_stats(v->e, &st);
    assert_int_equal(st.streamed, NCONC);
    if (st.buf_peak > budget)
        fail_msg("peak buffer %llu bytes over the budget", (unsigned long long)st.buf_peak);
    gather_free(g);
}

static void test_others_buffered(void **state)
{
    struct env *v = *state;
    static const struct {
        const char *lkey;
        uint64_t size;
        int parts;
    } docs[] = {{"chunk-6291456-f", 6 * MIB, 2}, {"ok-204800-g", 204800, 0}};

    for (size_t d = 0; d < sizeof(docs) / sizeof(docs[0]); d++) {
        char *key = xasprintf("%s/buffered/%zu", v->run, d);
        struct xfer_src src = {.kind = XFER_SRC_LEGACY, .key = docs[d].lkey, .legacy = v->legacy};
        struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = key};
        struct xfer_outcome o;
        unsigned char md5[16], sha[32];
        cut_err err = CUT_ERR_INIT;

        if (xfer_copy_wait(v->e, &src, &dst, &o, &err) != 0)
            fail_msg("copy %s: %s", docs[d].lkey, err.msg);
        body_hashes(docs[d].lkey, 0, docs[d].size, md5, sha);
        assert_int_equal(o.parts, docs[d].parts);
        assert_memory_equal(o.sha256, sha, 32);
        assert_object(v, key, docs[d].size, md5, sha);
        free(key);
    }
    {
        struct xfer_stats st;
        xfer_engine_stats(v->e, &st);
        assert_int_equal(st.streamed, 0);
    }
}

/* The port of an http://host:port URL. */
static int url_port(const char *url)
{
    const char *colon = strrchr(url, ':');

    assert_non_null(colon);
    return atoi(colon + 1);
}

static void test_put_refused(void **state)
{
    struct env *v = *state;
    relay *rl = relay_start(url_port(testenv("S3_ENDPOINT")));
    struct cfg_s3 cfg = v->cfg;
    const char *lkey = "ok-4194304-e";
    char *endpoint = xasprintf("http://127.0.0.1:%d", relay_port(rl));
    char *key = xasprintf("%s/refused", v->run);
    struct xfer_src src = {.kind = XFER_SRC_LEGACY, .key = lkey, .legacy = v->legacy};
    struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = key};
    struct xfer_engine_opts eo = {.max_active = 4};
    struct xfer_outcome o;
    struct xfer_stats st;
    unsigned char md5[16], sha[32];
    cut_err err = CUT_ERR_INIT;
    s3_client *c;
    xfer_engine *e;

    cfg.endpoint = endpoint;
    c = s3_client_new(&cfg, v->cp, &err);
    assert_non_null(c);
    e = xfer_engine_new(c, &eo, &err);
    assert_non_null(e);
    relay_set(rl, RELAY_ERRORS, 1); /* every request: 503 SlowDown or 500, after its body */
    assert_int_equal(xfer_copy_wait(e, &src, &dst, &o, &err), -1);
    if (err.code != CUT_ES3)
        fail_msg("a refused PUT: %s", err.msg);
    xfer_engine_stats(e, &st);
    assert_int_equal(st.streamed, 1);
    assert_int_equal(st.requests, 2); /* the GET and one PUT: its bytes were gone */
    assert_int_equal(relay_refused(rl), 1);
    assert_no_whole_body(v, key, 4 * MIB);

    relay_set(rl, RELAY_PASS, 0);
    err_clear(&err);
    if (xfer_copy_wait(e, &src, &dst, &o, &err) != 0)
        fail_msg("copy through the relay: %s", err.msg);
    body_hashes(lkey, 0, 4 * MIB, md5, sha);
    assert_memory_equal(o.md5, md5, 16);
    assert_object(v, key, 4 * MIB, md5, sha);
    xfer_engine_free(e);
    s3_client_free(c);
    relay_stop(rl);
    free(endpoint);
    free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_streamed_one_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_short_then_changed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_more_than_announced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expected_hashes_differ, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_others_buffered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_within_budget, setup, teardown),
    };

    return cmocka_run_group_tests_name("xfer_stream", tests, NULL, NULL);
}
