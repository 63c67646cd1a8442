/*
 * Read cutover end to end: two `cutover proxy` processes on one database in front of the
 * example application, with PostgreSQL and s3rver. Documents are uploaded through the first
 * (dual-write copies them until they are verified); keys hold spaces, '%', '+', unicode and
 * slashes. Flags are changed by writing cutover.flags, as an operator's tool would; each
 * scenario waits (with a deadline) until both sidecars answer with the new value.
 *
 *   percent 0: every answer is the app's, on both sidecars; the last legacy read is recorded.
 *   percent 100: every verified document is answered with an S3 presigned URL (JSON and
 *     redirect routes) that fetches from s3rver exactly the uploaded bytes, and the document
 *     becomes active; a document unknown to cutover, or not verified, keeps the app's URL.
 *     A route whose answer is not JSON (the app's raw bytes) passes them unchanged.
 *   the app's 403 reaches the client untouched (status, type and body bytes as the app sent).
 *   percent 30: 30% ± 3% of 10,000 sticky values are selected (computed with the rollout
 *     call); a sample of 300 users is answered by both sidecars as that computation says,
 *     and again after the first sidecar is restarted.
 *   migrate on read: a pending document due in an hour is copied and verified within seconds
 *     once it is read.
 *   a state change reaches the other sidecar's cache: a document both serve from S3 is made
 *     `failed` in the database and the second sidecar, whose cache held it as active, answers
 *     with the app's URL within 2 s.
 *
 * With the argument "faults" it runs instead on a PRIVATE instance of the services (started
 * and stopped here, the shared fixture is never touched): PostgreSQL is stopped while reads
 * flow at percent 100; no read fails, and every answer from the moment the sidecar notices
 * (within a deadline) is the app's own; once PostgreSQL is back, reads are rewritten again.
 */
#include "core/core.h"
#include "flags/rollout.h"
#include "storage/pgstore.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct side {
    char *config, *log, *spool;
    int port, admin;
    pid_t pid;
};

struct doc {
    char *key;
    unsigned char *data;
    size_t len;
};

#define NDOCS 6

static struct {
    bool faults;
    char *dir, *services, *db_url;
    char org[64];
    PGconn *pg;
    struct side s[2];
    struct doc docs[NDOCS];
    char *unknown_key, *failed_key, *pending_key;
} E;

static PGresult *q(const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(E.pg, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(E.pg));
    return r;
}

static void services(const char *sub)
{
    char *out = NULL;
    char *cmd = xasprintf("'%s/tests/harness/services.sh' %s '%s'",
                          testenv_var("CUTOVER_SOURCE_DIR"), sub, E.services);
    if (test_run(cmd, &out) != 0)
        fail_msg("services.sh %s: %s", sub, out ? out : "");
    free(out);
    free(cmd);
}

/* ---- the sidecars -------------------------------------------------------------------------- */

static void side_configure(struct side *S, int i)
{
    S->spool = xasprintf("%s/spool%d", E.dir, i);
    mkdir(S->spool, 0700);
    S->config = xasprintf("%s/cutover%d.json", E.dir, i);
    S->log = xasprintf("%s/cutover%d.log", E.dir, i);
    S->port = test_free_port();
    S->admin = test_free_port();
    char *json = xasprintf(
        "{\"listen\": \"127.0.0.1:%d\", \"upstream\": \"%s\",\n"
        " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"token\": \"t0ken-for-tests\"},\n"
        " \"database_url\": \"%s\", \"spool_dir\": \"%s\",\n"
        " \"log\": {\"level\": \"info\", \"access\": false},\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\"},\n"
        " \"legacy\": {\"raw_url\": \"%s/legacy/raw/{key}\"},\n"
        " \"routes\": [\n"
        "  {\"name\": \"upload\", \"kind\": \"upload\", \"path\": \"/documents\",\n"
        "   \"key\": {\"response_json\": \"/storage_key\"}, \"s3_key\": \"rw/{key}\"},\n"
        "  {\"name\": \"signed-url\", \"kind\": \"signed_url\", \"path\": "
        "\"/documents/{key}/url\",\n"
        "   \"url\": {\"response_json\": \"/url\"}, \"sticky\": {\"header\": \"X-User-Id\"}},\n"
        "  {\"name\": \"redirect\", \"kind\": \"signed_url\",\n"
        "   \"path\": \"/documents/{key}/redirect\",\n"
        "   \"url\": {\"response_header\": \"Location\"}, \"sticky\": {\"header\": "
        "\"X-User-Id\"}},\n"
        "  {\"name\": \"not-json\", \"kind\": \"signed_url\", \"path\": \"/legacy/raw/{key}\",\n"
        "   \"url\": {\"response_json\": \"/url\"}}],\n"
        " \"flags\": {\"dual_write\": true},\n"
        " \"workers\": {\"mirror\": 2, \"max_backoff_s\": 1}}\n",
        S->port, testenv("APP_URL"), S->admin, E.db_url, S->spool, testenv("S3_ENDPOINT"),
        testenv("S3_REGION"), testenv("S3_BUCKET"), testenv("S3_ACCESS_KEY"),
        testenv("S3_SECRET_KEY"), testenv("APP_URL"));
    assert_true(test_write_file(S->config, json, strlen(json)));
    free(json);
}

static void side_start(struct side *S)
{
    char *argv[] = {(char *)testenv_var("CUTOVER_BIN"), "proxy", "--config", S->config, NULL};
    S->pid = test_spawn(argv, NULL, S->log);
    char *ready = xasprintf("http://127.0.0.1:%d/readyz", S->admin);
    if (!test_wait_http(ready, 20000))
        fail_msg("cutover did not start; see %s", S->log);
    free(ready);
}

static void side_stop(struct side *S)
{
    int st = test_stop(S->pid, SIGTERM, 30000);
    S->pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *log = test_read_file(S->log, NULL);
        fprintf(stderr, "cutover did not stop cleanly (%d):\n%s\n", st, log ? log : "");
        free(log);
        fail_msg("cutover did not stop cleanly");
    }
}

/* ---- reads ------------------------------------------------------------------------------- */

struct answer {
    long status;
    char *url; /* the URL in the answer (JSON /url or Location), or NULL */
    struct test_http r;
};

static void answer_free(struct answer *a)
{
    free(a->url);
    test_http_free(&a->r);
    memset(a, 0, sizeof(*a));
}

/* GETs /documents/{key}/url (or /redirect) on port as user. */
static void read_doc(int port, const char *key, const char *user, bool redirect, struct answer *a)
{
    char *ek = curl_easy_escape(NULL, key, 0);
    char *url = port ? xasprintf("http://127.0.0.1:%d/documents/%s/%s", port, ek,
                                 redirect ? "redirect" : "url")
                     : xasprintf("%s/documents/%s/%s", testenv("APP_URL"), ek,
                                 redirect ? "redirect" : "url");
    char *hu = xasprintf("X-User-Id: %s", user);
    const char *h[] = {hu, NULL};

    memset(a, 0, sizeof(*a));
    test_http("GET", url, h, NULL, 0, &a->r);
    a->status = a->r.status;
    if (redirect) {
        a->url = test_http_header(&a->r, "Location");
    } else if (a->status == 200) {
        json_error_t je;
        json_t *j = json_loadb(a->r.body, a->r.body_len, 0, &je);
        const char *u = json_string_value(json_object_get(j, "url"));
        a->url = u ? xstrdup(u) : NULL;
        json_decref(j);
    }
    curl_free(ek);
    free(url);
    free(hu);
}

static bool is_s3(const char *url)
{
    const char *ep = testenv("S3_ENDPOINT");
    return url && strncmp(url, ep, strlen(ep)) == 0 && strstr(url, "X-Amz-Signature=");
}

static bool is_app(const char *url)
{
    const char *app = testenv("APP_URL");
    return url && strncmp(url, app, strlen(app)) == 0 && strstr(url, "/legacy/delivery/");
}

/* 1: rewritten, 0: the app's URL; fails the test on anything else. */
static int rewritten(int port, const char *key, const char *user, bool redirect)
{
    struct answer a;
    int rc;
    read_doc(port, key, user, redirect, &a);
    if (a.status != (redirect ? 302 : 200) || !(is_s3(a.url) || is_app(a.url)))
        fail_msg("read of %s on %d: HTTP %ld %s (%s)", key, port, a.status, a.r.body, a.r.errbuf);
    rc = is_s3(a.url);
    answer_free(&a);
    return rc;
}

static void set_flag(const char *name, const char *value)
{
    const char *p[2] = {name, value};
    PQclear(q("INSERT INTO cutover.flags (name, value, updated_by) VALUES ($1, $2::jsonb, "
              "'test') ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, "
              "updated_at = now()",
              2, p));
}

struct probe {
    const char *user;
    int want;
};

static bool both_answer(void *arg)
{
    struct probe *p = arg;
    for (int i = 0; i < 2; i++)
        if (E.s[i].pid && rewritten(E.s[i].port, E.docs[0].key, p->user, false) != p->want)
            return false;
    return true;
}

/* Sets read_from_s3 and waits until both sidecars apply it (user is in at this value when
 * want is 1, out when 0). */
static void set_percent(const char *value, const char *user, int want)
{
    struct probe p = {user, want};
    set_flag("read_from_s3", value);
    if (!test_wait_until(both_answer, &p, 10000))
        fail_msg("read_from_s3 = %s not applied within 10 s", value);
}

/* A user whose bucket for the signed-url route is at or over lo and under hi. */
static const char *user_in_range(uint32_t lo, uint32_t hi, char *buf, size_t n)
{
    for (int i = 0;; i++) {
        snprintf(buf, n, "probe-%d", i);
        uint32_t b = flags_rollout_bucket("signed-url", buf);
        if (b >= lo && b < hi)
            return buf;
    }
}

/* ---- documents --------------------------------------------------------------------------- */

static long upload(int port, const char *key, const void *data, size_t len)
{
    char *ek = curl_easy_escape(NULL, key, 0);
    char *url = port ? xasprintf("http://127.0.0.1:%d/documents?filename=x", port)
                     : xasprintf("%s/documents?filename=x", testenv("APP_URL"));
    char *hk = xasprintf("X-Storage-Key: %s", ek), *ho = xasprintf("X-Org-Id: %s", E.org);
    const char *h[] = {hk, ho, "Content-Type: application/octet-stream", NULL};
    struct test_http r;
    long st;
    test_http("POST", url, h, data, len, &r);
    st = r.status;
    test_http_free(&r);
    curl_free(ek);
    free(url);
    free(hk);
    free(ho);
    return st;
}

static bool all_verified(void *arg)
{
    (void)arg;
    PGresult *r = q("SELECT count(*) FROM cutover.documents WHERE state = 'verified'", 0, NULL);
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n >= NDOCS;
}

static void make_docs(void)
{
    static const char *names[NDOCS] = {"plain.txt",           "a b/c d.txt",
                                       "100% sure/50%25.bin", "plus+sign+/x+y.bin",
                                       "Ärzte/診療記録.txt",  "deep/er/path/f (1)'.bin"};
    for (int i = 0; i < NDOCS; i++) {
        struct doc *d = &E.docs[i];
        d->key = xasprintf("%s/%s", E.org, names[i]);
        d->len = 100 + (size_t)i * 1777;
        d->data = xmalloc(d->len);
        for (size_t k = 0; k < d->len; k++)
            d->data[k] = (unsigned char)((k * 151 + (size_t)i * 13) & 0xff);
        if (upload(E.s[0].port, d->key, d->data, d->len) != 201)
            fail_msg("upload of %s failed", d->key);
    }
    if (!test_wait_until(all_verified, NULL, 60000))
        fail_msg("the uploads were not verified within 60 s");
    /* known to the app only */
    E.unknown_key = xasprintf("%s/unknown doc.txt", E.org);
    assert_int_equal(upload(0, E.unknown_key, "u", 1), 201);
    /* known, not verified: failed */
    E.failed_key = xasprintf("%s/failed doc.txt", E.org);
    assert_int_equal(upload(0, E.failed_key, "f", 1), 201);
    const char *p[1] = {E.failed_key};
    PQclear(q("INSERT INTO cutover.documents (storage_key, s3_key, state, origin) "
              "VALUES ($1, 'rw/' || $1, 'failed', 'backfill')",
              1, p));
    /* pending, not due for an hour (as after failed attempts with a long backoff) */
    E.pending_key = xasprintf("%s/pending doc.txt", E.org);
    assert_int_equal(upload(0, E.pending_key, "pending bytes", 13), 201);
    p[0] = E.pending_key;
    PQclear(q("INSERT INTO cutover.documents (storage_key, s3_key, state, origin, "
              "next_attempt_at) VALUES ($1, 'rw/' || $1, 'pending', 'backfill', "
              "now() + interval '1 hour')",
              1, p));
}

static int sink(void *arg, const void *data, size_t n)
{
    return buf_append(arg, data, n) ? 0 : 1;
}

/* ---- setup --------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    char *cmd, *out = NULL;
    (void)state;

    E.dir = test_tmpdir("rewrite");
    if (E.faults) {
        E.services = xasprintf("%s/services", E.dir);
        services("start");
        char *env = xasprintf("%s/env", E.services);
        setenv("CUTOVER_TEST_ENV", env, 1);
        free(env);
    }
    snprintf(E.org, sizeof(E.org), "rw-%ld", (long)getpid());
    E.db_url = test_fresh_db("rewrite");
    E.pg = PQconnectdb(E.db_url);
    assert_int_equal(PQstatus(E.pg), CONNECTION_OK);
    for (int i = 0; i < 2; i++)
        side_configure(&E.s[i], i);
    cmd = xasprintf("'%s' migrate-db --config '%s'", testenv_var("CUTOVER_BIN"), E.s[0].config);
    if (test_run(cmd, &out) != 0)
        fail_msg("migrate-db: %s", out);
    free(cmd);
    free(out);
    side_start(&E.s[0]);
    if (!E.faults)
        side_start(&E.s[1]);
    make_docs();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        if (E.s[i].pid)
            side_stop(&E.s[i]);
    PQfinish(E.pg);
    if (E.faults)
        services("stop");
    if (!getenv("CUTOVER_TEST_KEEP"))
        test_rmtree(E.dir);
    return 0;
}

/* ---- scenarios ------------------------------------------------------------------------------ */

static void test_percent_0(void **state)
{
    char *last = NULL;
    pgstore *st;
    cut_err err = CUT_ERR_INIT;
    (void)state;

    set_percent("{\"percent\": 0}", "anyone", 0);
    PQclear(q("DELETE FROM cutover.legacy_reads", 0, NULL));
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < NDOCS; i++) {
            assert_int_equal(rewritten(E.s[s].port, E.docs[i].key, "user-1", false), 0);
            assert_int_equal(rewritten(E.s[s].port, E.docs[i].key, "user-2", true), 0);
        }
    /* the last legacy read is recorded, in the background, at most once a second per sidecar:
     * reads earlier than the DELETE may have taken this second's turn, so reads go on (each
     * answered with the app's URL) until a record shows up */
    st = pgstore_open(E.db_url);
    for (int i = 0; i < 250; i++) {
        assert_int_equal(pgstore_legacy_read_last(st, &last, &err), 0);
        if (last)
            break;
        assert_int_equal(rewritten(E.s[i % 2].port, E.docs[0].key, "user-1", false), 0);
        usleep(20000);
    }
    assert_non_null(last);
    free(last);
    pgstore_free(st);
}

static bool all_active(void *arg)
{
    (void)arg;
    PGresult *r = q("SELECT count(*) FROM cutover.documents WHERE state = 'active'", 0, NULL);
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n >= NDOCS;
}

static void fetch_same(const char *url, const struct doc *d)
{
    struct test_http r;
    test_http("GET", url, NULL, NULL, 0, &r);
    if (r.status != 200)
        fail_msg("GET presigned URL for %s: HTTP %ld %.300s", d->key, r.status, r.body);
    assert_int_equal(r.body_len, d->len);
    assert_memory_equal(r.body, d->data, d->len);
    test_http_free(&r);
}

static void test_percent_100(void **state)
{
    (void)state;
    set_percent("{\"percent\": 100}", "anyone", 1);
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < NDOCS; i++) {
            struct answer a;
            read_doc(E.s[s].port, E.docs[i].key, "user-1", false, &a);
            assert_int_equal(a.status, 200);
            if (!is_s3(a.url))
                fail_msg("%s not rewritten: %s", E.docs[i].key, a.r.body);
            /* the body's length follows the new URL */
            char *cl = test_http_header(&a.r, "Content-Length");
            assert_non_null(cl);
            assert_int_equal(atol(cl), (long)a.r.body_len);
            free(cl);
            fetch_same(a.url, &E.docs[i]);
            answer_free(&a);
            read_doc(E.s[s].port, E.docs[i].key, "user-1", true, &a);
            assert_int_equal(a.status, 302);
            assert_true(is_s3(a.url));
            fetch_same(a.url, &E.docs[i]);
            answer_free(&a);
        }
    /* unknown to cutover, or not verified: the app's URL */
    for (int s = 0; s < 2; s++) {
        assert_int_equal(rewritten(E.s[s].port, E.unknown_key, "user-1", false), 0);
        assert_int_equal(rewritten(E.s[s].port, E.failed_key, "user-1", false), 0);
        assert_int_equal(rewritten(E.s[s].port, E.failed_key, "user-1", true), 0);
    }
    /* a selected read of a verified document whose answer is not JSON: the app's bytes */
    for (int i = 0; i < NDOCS; i++) {
        char *ek = curl_easy_escape(NULL, E.docs[i].key, 0);
        char *url = xasprintf("http://127.0.0.1:%d/legacy/raw/%s", E.s[0].port, ek);
        struct test_http r;
        test_http("GET", url, NULL, NULL, 0, &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, E.docs[i].len);
        assert_memory_equal(r.body, E.docs[i].data, E.docs[i].len);
        test_http_free(&r);
        free(url);
        curl_free(ek);
    }
    /* served from S3: the documents become active */
    assert_true(test_wait_until(all_active, NULL, 10000));
}

static void test_app_403_untouched(void **state)
{
    struct test_http r;
    struct answer direct, via;
    const char *body = "{\"user\": \"mallory\", \"denied\": true}";
    char *ctl = xasprintf("%s/_control/deny", testenv("APP_URL"));
    const char *h[] = {"Content-Type: application/json", NULL};
    (void)state;

    test_http("POST", ctl, h, body, strlen(body), &r);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    read_doc(0, E.docs[1].key, "mallory", false, &direct);
    read_doc(E.s[0].port, E.docs[1].key, "mallory", false, &via);
    assert_int_equal(direct.status, 403);
    assert_int_equal(via.status, 403);
    assert_int_equal(via.r.body_len, direct.r.body_len);
    assert_memory_equal(via.r.body, direct.r.body, direct.r.body_len);
    char *t1 = test_http_header(&direct.r, "Content-Type"),
         *t2 = test_http_header(&via.r, "Content-Type");
    assert_string_equal(t1, t2);
    free(t1);
    free(t2);
    answer_free(&direct);
    answer_free(&via);
    body = "{\"user\": \"mallory\", \"denied\": false}";
    test_http("POST", ctl, h, body, strlen(body), &r);
    test_http_free(&r);
    free(ctl);
}

#define NSTICKY 10000
#define NSAMPLE 300

static void test_sticky_30(void **state)
{
    static bool want[NSAMPLE];
    char user[64], probe[64];
    cut_err err = CUT_ERR_INIT;
    json_t *v = json_loads("{\"read_from_s3\": {\"percent\": 30}}", 0, NULL);
    flags_snapshot *fs = flags_snapshot_new(v, true, &err);
    size_t in = 0;
    (void)state;

    json_decref(v);
    assert_non_null(fs);
    for (int i = 0; i < NSTICKY; i++) {
        snprintf(user, sizeof(user), "user-%d", i);
        bool sel = flags_rollout_selects(fs, "signed-url", user, NULL);
        in += sel;
        if (i < NSAMPLE)
            want[i] = sel;
    }
    flags_snapshot_unref(fs);
    if (in < 2700 || in > 3300)
        fail_msg("%zu of %d sticky values selected at 30%%", in, NSTICKY);

    /* a user in at 100 but out at 30 shows when both sidecars have the new value */
    set_percent("{\"percent\": 30}", user_in_range(3000, 10000, probe, sizeof(probe)), 0);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < NSAMPLE; i++) {
            snprintf(user, sizeof(user), "user-%d", i);
            for (int s = 0; s < 2; s++) {
                int got = rewritten(E.s[s].port, E.docs[i % NDOCS].key, user, false);
                if (got != (int)want[i])
                    fail_msg("round %d, sidecar %d: %s %s, the rule says %s", round, s, user,
                             got ? "rewritten" : "not rewritten", want[i] ? "in" : "out");
            }
        }
        if (round == 0) {
            /* the same answers after a restart */
            side_stop(&E.s[0]);
            side_start(&E.s[0]);
            struct probe p = {user_in_range(0, 3000, probe, sizeof(probe)), 1};
            assert_true(test_wait_until(both_answer, &p, 10000));
        }
    }
}

static bool pending_verified(void *arg)
{
    (void)arg;
    const char *p[1] = {E.pending_key};
    PGresult *r = q("SELECT state FROM cutover.documents WHERE storage_key = $1", 1, p);
    bool ok = strcmp(PQgetvalue(r, 0, 0), "verified") == 0;
    PQclear(r);
    return ok;
}

static void test_migrate_on_read(void **state)
{
    (void)state;
    assert_false(pending_verified(NULL));
    /* not verified yet: the app's URL, and the document moves to the front of the queue */
    assert_int_equal(rewritten(E.s[1].port, E.pending_key, "user-1", false), 0);
    if (!test_wait_until(pending_verified, NULL, 15000))
        fail_msg("a read did not move the pending document forward");
}

struct still {
    const char *key;
};

static bool served_by_app(void *arg)
{
    struct still *s = arg;
    return rewritten(E.s[1].port, s->key, "user-1", false) == 0;
}

/* the first sidecar's notification may come a little after the second's */
static bool served_by_app_0(void *arg)
{
    struct still *s = arg;
    return rewritten(E.s[0].port, s->key, "user-1", false) == 0;
}

static void test_invalidation_reaches_other_sidecar(void **state)
{
    const char *key = E.docs[2].key;
    const char *p[1] = {key};
    struct still s = {key};
    (void)state;

    set_percent("{\"percent\": 100}", "anyone", 1);
    /* cached on both (a second read is a hit) */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(rewritten(E.s[0].port, key, "user-1", false), 1);
        assert_int_equal(rewritten(E.s[1].port, key, "user-1", false), 1);
    }
    PQclear(q("UPDATE cutover.documents SET state = 'failed' WHERE storage_key = $1", 1, p));
    if (!test_wait_until(served_by_app, &s, 2000))
        fail_msg("the second sidecar kept its cached state after the change");
    if (!test_wait_until(served_by_app_0, &s, 2000))
        fail_msg("the first sidecar kept its cached state after the change");
}

/* ---- faults: PostgreSQL stopped while reads flow ------------------------------------------ */

static void test_pg_stopped(void **state)
{
    const char *key = E.docs[0].key;
    int app_since = -1, n = 0;
    (void)state;

    set_percent("{\"percent\": 100}", "anyone", 1);
    for (int i = 0; i < NDOCS; i++)
        assert_int_equal(rewritten(E.s[0].port, E.docs[i].key, "user-1", false), 1);
    services("pg-stop");
    /* reads keep flowing: none fails (rewritten() fails the test on an error), and once the
     * sidecar has noticed, every answer is the app's */
    uint64_t deadline = now_us() + 10000000u;
    while (now_us() < deadline && (app_since < 0 || n - app_since < 200)) {
        int got = rewritten(E.s[0].port, E.docs[n % NDOCS].key, "user-1", n % 2 == 1);
        if (got == 0 && app_since < 0)
            app_since = n;
        if (got == 1 && app_since >= 0)
            fail_msg("read %d rewritten after the answers had turned to the app's", n);
        n++;
    }
    if (app_since < 0 || n - app_since < 200)
        fail_msg("PostgreSQL stopped: answers did not turn to the app's (%d reads)", n);
    services("pg-start");
    PQfinish(E.pg);
    E.pg = PQconnectdb(E.db_url);
    struct probe p = {"anyone", 1};
    if (!test_wait_until(both_answer, &p, 15000))
        fail_msg("PostgreSQL back: reads were not rewritten again");
    (void)key;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percent_0),
        cmocka_unit_test(test_percent_100),
        cmocka_unit_test(test_app_403_untouched),
        cmocka_unit_test(test_sticky_30),
        cmocka_unit_test(test_migrate_on_read),
        cmocka_unit_test(test_invalidation_reaches_other_sidecar),
    };
    const struct CMUnitTest faults[] = {
        cmocka_unit_test(test_pg_stopped),
    };
    E.faults = argc > 1 && strcmp(argv[1], "faults") == 0;
    (void)sink;
    if (E.faults)
        return cmocka_run_group_tests_name("rewrite_faults", faults, group_setup, group_teardown);
    return cmocka_run_group_tests_name("rewrite", tests, group_setup, group_teardown);
}
