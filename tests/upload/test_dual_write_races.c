/*
 * Dual-write's races, end to end (issue 8): `cutover proxy` in front of the example app, with
 * the fixture's PostgreSQL and s3rver, and between cutover and s3rver a relay of this test
 * that holds chosen PUTs until the test releases them (a copy "in flight" for as long as the
 * test likes) and answers chosen DELETEs with 503 SlowDown.
 *
 * - The same storage key uploaded again while the first copy is held: released in either
 *   order, S3 ends with the second upload's bytes (read back), the row is `verified` for
 *   generation 2 with the second upload's SHA-256, and it stays so.
 * - A document deleted through the app while its copy is held: after the release the object
 *   is gone from S3, the row `deleted`, its removal recorded.
 * - S3 refusing the DELETE several times: the removal is retried until the object is gone,
 *   and recorded.
 *
 * The relay opens one connection to s3rver per request and asks both sides to close it
 * afterwards (Connection: close), so each request is seen whole and alone. Nothing waits on a
 * hopeful sleep: held requests are released by the test, and every wait is for a condition.
 */
#include "core/core.h"
#include "storage/s3.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the relay ------------------------------------------------------------------------------ */

#define HEAD_MAX 65536
#define MAX_HELD 8

struct held {
    bool released, landed;
    char sha_b64[64]; /* the PUT's x-amz-checksum-sha256 */
};

static struct relay {
    int lfd, port, up_port;
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    int active; /* connections being served */
    /* PUTs whose path contains hold_match: the next hold_budget are held */
    char hold_match[256];
    int hold_budget;
    struct held held[MAX_HELD];
    int nheld;
    /* DELETEs whose path contains refuse_match: the next refuse_budget get 503 */
    char refuse_match[256];
    int refuse_budget;
    int refused;
    int deletes_passed; /* DELETEs matching refuse_match that reached s3rver */
} R;

static bool write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

static void header_value(const char *head, const char *name, char *out, size_t n)
{
    size_t len = strlen(name);
    out[0] = '\0';
    for (const char *l = strstr(head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        const char *h = l + 2;
        if (strncasecmp(h, name, len) == 0 && h[len] == ':') {
            const char *v = h + len + 1, *e = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            snprintf(out, n, "%.*s", (int)(e - v), v);
            return;
        }
    }
}

static int connect_upstream(void)
{
    int fd = test_connect(R.up_port);
    return fd;
}

/* Sends buf (a message head and what followed it) with "Connection: close" after its first
 * line. */
static bool send_closing(int fd, const char *buf, size_t n)
{
    const char *eol = memmem(buf, n, "\r\n", 2);
    static const char cc[] = "Connection: close\r\n";
    if (!eol)
        return false;
    size_t first = (size_t)(eol - buf) + 2;
    return write_all(fd, buf, first) && write_all(fd, cc, sizeof(cc) - 1) &&
           write_all(fd, buf + first, n - first);
}

static void *serve(void *arg)
{
    int cfd = (int)(intptr_t)arg, ufd = -1, slot = -1;
    char *buf = xmalloc(HEAD_MAX + 1);
    size_t n = 0;
    char *end = NULL, method[16] = "", path[2048] = "";

    while (!end && n < HEAD_MAX) {
        ssize_t r = recv(cfd, buf + n, HEAD_MAX - n, 0);
        if (r <= 0)
            goto out;
        n += (size_t)r;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end || sscanf(buf, "%15s %2047s", method, path) != 2)
        goto out;

    pthread_mutex_lock(&R.mu);
    if (strcmp(method, "DELETE") == 0 && R.refuse_match[0] && strstr(path, R.refuse_match)) {
        if (R.refuse_budget > 0) {
            static const char body[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
                                       "SlowDown</Code><Message>Please reduce your request rate."
                                       "</Message></Error>";
            char *ans = xasprintf("HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                                  "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                                  sizeof(body) - 1, body);
            R.refuse_budget--;
            R.refused++;
            pthread_cond_broadcast(&R.cv);
            pthread_mutex_unlock(&R.mu);
            write_all(cfd, ans, strlen(ans));
            free(ans);
            goto out;
        }
        R.deletes_passed++;
    }
    if (strcmp(method, "PUT") == 0 && R.hold_match[0] && strstr(path, R.hold_match) &&
        R.hold_budget > 0 && R.nheld < MAX_HELD) {
        R.hold_budget--;
        slot = R.nheld++;
        header_value(buf, "x-amz-checksum-sha256", R.held[slot].sha_b64,
                     sizeof(R.held[slot].sha_b64));
        pthread_cond_broadcast(&R.cv);
        while (!R.held[slot].released && !R.stopping)
            pthread_cond_wait(&R.cv, &R.mu);
    }
    pthread_mutex_unlock(&R.mu);

    ufd = connect_upstream();
    if (ufd < 0 || !send_closing(ufd, buf, n))
        goto out;
    /* pump until s3rver closes; the answer's first line gets "Connection: close" after it */
    {
        struct pollfd p[2] = {{.fd = cfd, .events = POLLIN}, {.fd = ufd, .events = POLLIN}};
        bool client_open = true, first_line = false;
        size_t an = 0;
        char *ans = xmalloc(HEAD_MAX);
        for (;;) {
            p[0].fd = client_open ? cfd : -1;
            if (poll(p, 2, 60000) <= 0)
                break;
            if (client_open && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
                char b[16384];
                ssize_t r = recv(cfd, b, sizeof(b), 0);
                if (r <= 0)
                    client_open = false;
                else if (!write_all(ufd, b, (size_t)r))
                    break;
            }
            if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t r = recv(ufd, ans + an, HEAD_MAX - an, 0);
                if (r <= 0)
                    break;
                if (first_line) {
                    if (!write_all(cfd, ans, (size_t)r))
                        break;
                    continue;
                }
                an += (size_t)r;
                if (memmem(ans, an, "\r\n", 2)) {
                    if (!send_closing(cfd, ans, an))
                        break;
                    first_line = true;
                    an = 0;
                } else if (an == HEAD_MAX) {
                    break;
                }
            }
        }
        free(ans);
    }
    shutdown(cfd, SHUT_WR);
out:
    pthread_mutex_lock(&R.mu);
    if (slot >= 0)
        R.held[slot].landed = true;
    R.active--;
    pthread_cond_broadcast(&R.cv);
    pthread_mutex_unlock(&R.mu);
    if (ufd >= 0)
        close(ufd);
    close(cfd);
    free(buf);
    return NULL;
}

static void *acceptor(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(R.lfd, NULL, NULL);
        pthread_t t;
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL; /* the listening socket was shut down */
        }
        pthread_mutex_lock(&R.mu);
        if (R.stopping) {
            pthread_mutex_unlock(&R.mu);
            close(fd);
            continue;
        }
        R.active++;
        pthread_mutex_unlock(&R.mu);
        if (pthread_create(&t, NULL, serve, (void *)(intptr_t)fd) != 0) {
            close(fd);
            pthread_mutex_lock(&R.mu);
            R.active--;
            pthread_mutex_unlock(&R.mu);
            continue;
        }
        pthread_detach(t);
    }
}

static void relay_start(int up_port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int one = 1;
    R.up_port = up_port;
    R.lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(R.lfd >= 0);
    setsockopt(R.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(R.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(R.lfd, (struct sockaddr *)&a, &len), 0);
    assert_int_equal(listen(R.lfd, 64), 0);
    R.port = ntohs(a.sin_port);
    pthread_mutex_init(&R.mu, NULL);
    pthread_cond_init(&R.cv, NULL);
    assert_int_equal(pthread_create(&R.acceptor, NULL, acceptor, NULL), 0);
}

static void relay_stop(void)
{
    pthread_mutex_lock(&R.mu);
    R.stopping = true;
    pthread_cond_broadcast(&R.cv);
    pthread_mutex_unlock(&R.mu);
    shutdown(R.lfd, SHUT_RDWR);
    pthread_join(R.acceptor, NULL);
    close(R.lfd);
    /* the connections end with cutover (stopped before) */
    pthread_mutex_lock(&R.mu);
    for (int i = 0; i < 500 && R.active > 0; i++) {
        pthread_mutex_unlock(&R.mu);
        usleep(10000);
        pthread_mutex_lock(&R.mu);
    }
    pthread_mutex_unlock(&R.mu);
}

/* Holds the next `budget` PUTs whose path contains match. */
static void relay_hold(const char *match, int budget)
{
    pthread_mutex_lock(&R.mu);
    snprintf(R.hold_match, sizeof(R.hold_match), "%s", match);
    R.hold_budget = budget;
    memset(R.held, 0, sizeof(R.held));
    R.nheld = 0;
    pthread_mutex_unlock(&R.mu);
}

/* Waits (with a deadline) until `count` PUTs are held; fails the test otherwise. */
static void relay_wait_held(int count)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    pthread_mutex_lock(&R.mu);
    while (R.nheld < count)
        if (pthread_cond_timedwait(&R.cv, &R.mu, &ts) != 0)
            break;
    int n = R.nheld;
    pthread_mutex_unlock(&R.mu);
    if (n < count)
        fail_msg("%d PUTs held after 30 s, expected %d", n, count);
}

/* Releases held PUT i and waits until s3rver has answered it and the answer went back. */
static void relay_release(int i)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    pthread_mutex_lock(&R.mu);
    R.held[i].released = true;
    pthread_cond_broadcast(&R.cv);
    while (!R.held[i].landed)
        if (pthread_cond_timedwait(&R.cv, &R.mu, &ts) != 0)
            break;
    bool landed = R.held[i].landed;
    pthread_mutex_unlock(&R.mu);
    if (!landed)
        fail_msg("held PUT %d did not land within 30 s of its release", i);
}

/* ---- cutover before the app, through the relay ------------------------------------------------
 */

static struct test_dw E;

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void sha256_b64(const void *p, size_t n, char out[48])
{
    unsigned char md[32];
    unsigned int len;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, 32);
}

static PGresult *q(const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(E.pg, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(E.pg));
    return r;
}

/* One column of the document's row (new string) or NULL. */
static char *row_value(const char *col, const char *key)
{
    const char *p[1] = {key};
    char *sql = xasprintf("SELECT %s FROM cutover.documents WHERE storage_key = $1", col);
    PGresult *r = q(sql, 1, p);
    char *v = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? xstrdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    free(sql);
    return v;
}

static int setup(void **state)
{
    char host[256];
    int up_port = 0;
    (void)state;

    if (sscanf(testenv("S3_ENDPOINT"), "http://%255[^:]:%d", host, &up_port) != 2)
        fail_msg("S3_ENDPOINT %s: not http://host:port", testenv("S3_ENDPOINT"));
    relay_start(up_port);
    char *s3 = xasprintf("http://127.0.0.1:%d", R.port);
    /* cutover's S3 goes through the relay, one attempt per call (a refused DELETE is the
     * mirror's to retry); the test reads S3 directly (E.s3env) */
    test_dw_start(&E, "dwraces", 2, s3, "\"max_attempts\": 1, \"timeout_s\": 120");
    free(s3);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bool stopped = test_dw_stop(&E);
    relay_stop();
    return stopped ? 0 : -1;
}

/* Uploads data as the document named key (X-Storage-Key) through cutover; asserts 201. */
static void upload(const char *key, const void *data, size_t len)
{
    char *url = xasprintf("http://127.0.0.1:%d/documents?filename=race.bin", E.port);
    char *org = xasprintf("X-Org-Id: %s", E.org);
    CURL *c = curl_easy_init();
    char *enc = curl_easy_escape(c, key, 0);
    char *sk = xasprintf("X-Storage-Key: %s", enc);
    const char *h[] = {org, sk, "Content-Type: application/octet-stream", NULL};
    struct test_http r;
    assert_int_equal(test_http("POST", url, h, data, len, &r), 0);
    if (r.status != 201)
        fail_msg("upload %s: HTTP %ld %s", key, r.status, r.body ? r.body : "");
    json_error_t je;
    json_t *j = json_loadb(r.body, r.body_len, 0, &je);
    assert_string_equal(json_string_value(json_object_get(j, "storage_key")), key);
    json_decref(j);
    test_http_free(&r);
    curl_free(enc);
    curl_easy_cleanup(c);
    free(sk);
    free(org);
    free(url);
}

static void delete_doc(const char *key)
{
    CURL *c = curl_easy_init();
    char *enc = curl_easy_escape(c, key, 0);
    char *url = xasprintf("http://127.0.0.1:%d/documents/%s", E.port, enc);
    struct test_http r;
    assert_int_equal(test_http("DELETE", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 204);
    test_http_free(&r);
    curl_free(enc);
    curl_easy_cleanup(c);
    free(url);
}

static int sink_buf(void *arg, const void *data, size_t n)
{
    return buf_append(arg, data, n) ? 0 : 1;
}

/* The object's SHA-256 (hex) in out, or "" when S3 has no such object. */
static void s3_sha(const char *key, char out[65])
{
    char *s3_key = xasprintf("documents/%s/%s", E.org, key);
    struct buf got;
    struct s3_result res;
    cut_err err = CUT_ERR_INIT;
    buf_init(&got, 0);
    out[0] = '\0';
    if (s3_get(E.s3env.c, s3_key, sink_buf, &got, &res, &err) == 0)
        sha256_hex(got.data ? got.data : "", got.len, out);
    else if (err.code != CUT_ENOTFOUND)
        fail_msg("GET %s: %s", s3_key, err.msg);
    buf_free(&got);
    free(s3_key);
}

/* ---- overwrites ---------------------------------------------------------------------------------
 */

struct want {
    const char *key;
    const char *sha; /* the bytes S3 and the row must have */
};

/* Generation 2, verified, its SHA-256 in the row and its bytes in S3, no lease, nothing due. */
static bool newest_verified(void *arg)
{
    struct want *w = arg;
    const char *p[1] = {w->key};
    char sha[65];
    PGresult *r = q("SELECT state, generation, sha256, lease_token IS NULL "
                    "FROM cutover.documents WHERE storage_key = $1",
                    1, p);
    bool ok = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "verified") == 0 &&
              strcmp(PQgetvalue(r, 0, 1), "2") == 0 && strcmp(PQgetvalue(r, 0, 2), w->sha) == 0 &&
              strcmp(PQgetvalue(r, 0, 3), "t") == 0;
    PQclear(r);
    if (!ok)
        return false;
    s3_sha(w->key, sha);
    return strcmp(sha, w->sha) == 0;
}

static bool changed(void *arg)
{
    return !newest_verified(arg);
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 31 + seed * 101) & 0xff);
}

static void overwrite_race(const char *name, bool old_lands_last)
{
    char *key = xasprintf("%s-%s", E.org, name);
    unsigned char a[3000], b[2000];
    char sha_a[65], sha_b[65], b64_a[48], b64_b[48], *state;
    struct want w = {.key = key, .sha = sha_b};

    fill(a, sizeof(a), 1);
    fill(b, sizeof(b), 2);
    sha256_hex(a, sizeof(a), sha_a);
    sha256_hex(b, sizeof(b), sha_b);
    sha256_b64(a, sizeof(a), b64_a);
    sha256_b64(b, sizeof(b), b64_b);

    relay_hold(key, 2);
    upload(key, a, sizeof(a));
    relay_wait_held(1); /* generation 1's copy is in flight */
    upload(key, b, sizeof(b));
    relay_wait_held(2); /* and generation 2's */
    assert_string_equal(R.held[0].sha_b64, b64_a);
    assert_string_equal(R.held[1].sha_b64, b64_b);
    state = row_value("generation", key);
    assert_string_equal(state, "2");
    free(state);

    if (old_lands_last) {
        relay_release(1);
        /* the newer copy is verified first... */
        if (!test_wait_until(newest_verified, &w, 30000)) {
            test_dump_file("cutover's log", E.log);
            fail_msg("%s: generation 2 not verified after its copy landed", name);
        }
        /* ...then the older one lands over it */
        relay_release(0);
    } else {
        relay_release(0);
        relay_release(1);
    }
    if (!test_wait_until(newest_verified, &w, 30000)) {
        char sha[65];
        s3_sha(key, sha);
        state = row_value("state || ' generation ' || generation || ' ' || sha256", key);
        test_dump_file("cutover's log", E.log);
        fail_msg("%s: row %s, S3 holds %s (generation 1 %s, generation 2 %s)", name, state, sha,
                 sha_a, sha_b);
    }
    /* and it stays so: the older copy's late completion changes nothing any more */
    assert_false(test_wait_until(changed, &w, 1500));
    free(key);
}

static void test_overwrite_old_copy_lands_last(void **state)
{
    (void)state;
    overwrite_race("old-last", true);
}

static void test_overwrite_new_copy_lands_last(void **state)
{
    (void)state;
    overwrite_race("new-last", false);
}

/* ---- deletes ------------------------------------------------------------------------------------
 */

/* deleted, its removal recorded (off the queue), and no object in S3 */
static bool removed(void *arg)
{
    const char *key = arg;
    const char *p[1] = {key};
    char sha[65];
    PGresult *r = q("SELECT state, next_attempt_at = 'infinity', lease_token IS NULL, "
                    "(SELECT count(*) FROM cutover.transitions t WHERE t.storage_key = $1 "
                    "  AND t.to_state = 'deleted' AND t.detail = 'the S3 object was removed') "
                    "FROM cutover.documents WHERE storage_key = $1",
                    1, p);
    bool ok = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "deleted") == 0 &&
              strcmp(PQgetvalue(r, 0, 1), "t") == 0 && strcmp(PQgetvalue(r, 0, 2), "t") == 0 &&
              atoi(PQgetvalue(r, 0, 3)) >= 1;
    PQclear(r);
    if (!ok)
        return false;
    s3_sha(key, sha);
    return sha[0] == '\0';
}

static bool reappeared(void *arg)
{
    return !removed(arg);
}

static void test_delete_while_copy_in_flight(void **state)
{
    char *key = xasprintf("%s-deleted-in-flight", E.org);
    unsigned char c[4000];
    char *st;
    (void)state;

    fill(c, sizeof(c), 3);
    relay_hold(key, 1);
    upload(key, c, sizeof(c));
    relay_wait_held(1);
    delete_doc(key);
    st = row_value("state", key);
    assert_string_equal(st, "deleted");
    free(st);
    /* the copy lands after the delete: the object must not stay */
    relay_release(0);
    if (!test_wait_until(removed, key, 30000)) {
        char sha[65];
        s3_sha(key, sha);
        st = row_value("state || ' ' || next_attempt_at || ' ' || coalesce(last_error, '')", key);
        test_dump_file("cutover's log", E.log);
        fail_msg("after the late copy: row %s, S3 object %s", st, sha[0] ? sha : "absent");
    }
    assert_false(test_wait_until(reappeared, key, 1500));
    st = row_value("state", key);
    assert_string_equal(st, "deleted");
    free(st);
    free(key);
}

static bool verified(void *arg)
{
    char *st = row_value("state", arg);
    bool v = st && strcmp(st, "verified") == 0;
    free(st);
    return v;
}

static void test_delete_refused_then_retried(void **state)
{
    char *key = xasprintf("%s-delete-refused", E.org);
    unsigned char d[1500];
    char sha[65], *st;
    (void)state;

    fill(d, sizeof(d), 4);
    upload(key, d, sizeof(d));
    assert_true(test_wait_until(verified, key, 30000));
    pthread_mutex_lock(&R.mu);
    snprintf(R.refuse_match, sizeof(R.refuse_match), "%s", key);
    R.refuse_budget = 3;
    R.refused = 0;
    R.deletes_passed = 0;
    pthread_mutex_unlock(&R.mu);

    delete_doc(key);
    st = row_value("state", key);
    assert_string_equal(st, "deleted");
    free(st);
    if (!test_wait_until(removed, key, 30000)) {
        s3_sha(key, sha);
        st = row_value("state || ' ' || next_attempt_at || ' ' || attempts || ' ' || "
                       "coalesce(last_error, '')",
                       key);
        test_dump_file("cutover's log", E.log);
        fail_msg("S3 refused the DELETE 3 times: row %s, S3 object %s", st,
                 sha[0] ? "still there" : "absent");
    }
    pthread_mutex_lock(&R.mu);
    int refused = R.refused, passed = R.deletes_passed;
    pthread_mutex_unlock(&R.mu);
    assert_int_equal(refused, 3);
    assert_true(passed >= 1);
    /* the recorded removal resets the attempts the refusals counted */
    st = row_value("attempts", key);
    assert_string_equal(st, "0");
    free(st);
    free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overwrite_old_copy_lands_last),
        cmocka_unit_test(test_overwrite_new_copy_lands_last),
        cmocka_unit_test(test_delete_while_copy_in_flight),
        cmocka_unit_test(test_delete_refused_then_retried),
    };
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, setup, teardown);
}
