/*
 * test_secrets_scan: a whole scenario run with distinctive secret values, then every place a
 * secret could leak to is searched for them and for request signatures.
 *
 * The secrets: an AWS secret key and session token (s3rver of a private services instance is
 * given that key pair: S3RVER_EXTRA_KEY), the admin token, and the database password (in
 * DATABASE_URL; the throwaway cluster trusts every local connection, so any password works),
 * all given through the environment as an operator would.
 *
 * The scenario: `cutover migrate-db`; `cutover proxy` with dual-write on, uploads through it
 * (verified in S3); admin calls with the token, then with wrong tokens until the lockout
 * (429); a backfill of documents seeded in the legacy store; `cutover doctor`; `cutover
 * presign`.
 *
 * Searched: the stdout and stderr of every cutover process (for presign, whose stdout is a
 * signed URL by design, its stderr; its stdout must still hold neither the secret key nor the
 * admin token nor the password); every row of every table of schema `cutover` (audit,
 * transitions, documents... each row cast to text); /metrics when it answers. Needles: the
 * four secrets, "X-Amz-Signature=", "Signature=", "AWS4-HMAC-SHA256 Credential=",
 * "X-Amz-Security-Token=". Any hit fails the test, naming where. The scanner is checked
 * first on a planted line, so a scanner that finds nothing cannot pass.
 */
#include "core/core.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define AWS_KEY_ID "AKIASCANSCANSCAN7Q2W"
#define AWS_SECRET "sEcReTaws-7f3c9a1e5b2d8c4f6a0e"
#define AWS_TOKEN "sEcReTsession-2b8d4f6a1c3e5a7b9d0f"
#define ADMIN_TOKEN "sEcReTadmin-5e6f7a8b9c0d1e2f"
#define DB_PASSWORD "sEcReTdbpw-0c1d2e3f4a5b"

static const char *const needles[] = {
    AWS_SECRET,
    AWS_TOKEN,
    ADMIN_TOKEN,
    DB_PASSWORD,
    "X-Amz-Signature=",
    "Signature=",
    "AWS4-HMAC-SHA256 Credential=",
    "X-Amz-Security-Token=",
    NULL,
};

static char *G_dir, *G_services;
static char *G_db, *G_config;
static int G_port, G_admin;
static pid_t G_pid;
static char G_org[64];

/* Every needle found in text, "where: needle" lines appended to hits. */
static int scan(const char *where, const char *text, size_t len, struct buf *hits,
                const char *const *which)
{
    int n = 0;
    for (size_t i = 0; which[i]; i++) {
        size_t nl = strlen(which[i]);
        for (size_t off = 0; text && off + nl <= len; off++)
            if (memcmp(text + off, which[i], nl) == 0) {
                if (!buf_printf(hits, "%s: \"%s\" at byte %zu\n", where, which[i], off))
                    fail_msg("out of room for the hits");
                n++;
                break;
            }
    }
    return n;
}

static int scan_file(const char *path, struct buf *hits, const char *const *which)
{
    size_t len = 0;
    char *text = test_read_file(path, &len);
    if (!text)
        fail_msg("cannot read %s", path);
    int n = scan(path, text, len, hits, which);
    free(text);
    return n;
}

/* A cutover command, stdout and stderr to files named after it in G_dir; its exit status. */
static int run_cutover(const char *name, const char *args)
{
    char *cmd = xasprintf("'%s' %s --config '%s' >'%s/%s.out' 2>'%s/%s.err'",
                          testenv_var("CUTOVER_BIN"), args, G_config, G_dir, name, G_dir, name);
    int rc = test_run(cmd, NULL);
    free(cmd);
    return rc;
}

static long http(const char *method, const char *url, const char *auth, const char *body)
{
    struct test_http r;
    const char *h[3] = {auth, "X-Org-Id: scan", NULL};
    char hv[128];
    long st;
    if (auth) {
        snprintf(hv, sizeof(hv), "Authorization: Bearer %s", auth);
        h[0] = hv;
    } else {
        h[0] = "X-Org-Id: scan";
        h[1] = NULL;
    }
    if (test_http(method, url, h, body, body ? strlen(body) : 0, &r) != 0)
        fail_msg("%s %s: %s", method, url, r.errbuf);
    st = r.status;
    test_http_free(&r);
    return st;
}

static bool all_verified(void *arg)
{
    PGconn *pg = arg;
    PGresult *r = PQexec(pg, "SELECT count(*) FILTER (WHERE state <> 'verified'), count(*) "
                             "FROM cutover.documents");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "0") == 0 &&
              atoi(PQgetvalue(r, 0, 1)) > 0;
    PQclear(r);
    return ok;
}

static void test_no_secret_anywhere(void **state)
{
    struct buf hits;
    char *json, *url, *cmd, *out = NULL;
    int found = 0;
    (void)state;
    buf_init(&hits, 0);

    /* the scanner finds what it looks for */
    {
        static const char planted[] = "{\"msg\":\"PUT /b/k?X-Amz-Signature=ab " AWS_SECRET "\"}";
        struct buf h;
        buf_init(&h, 0);
        assert_int_equal(scan("planted", planted, sizeof(planted) - 1, &h, needles), 3);
        buf_free(&h);
    }

    /* a private services instance whose s3rver knows the distinctive key pair */
    G_dir = test_tmpdir("secrets");
    G_services = xasprintf("%s/services", G_dir);
    cmd = xasprintf("S3RVER_EXTRA_KEY='%s:%s' '%s/tests/harness/services.sh' start '%s'",
                    AWS_KEY_ID, AWS_SECRET, testenv_var("CUTOVER_SOURCE_DIR"), G_services);
    if (test_run(cmd, &out) != 0)
        fail_msg("services.sh start: %s", out ? out : "");
    free(cmd);
    free(out);
    out = NULL;
    char *envfile = xasprintf("%s/env", G_services);
    setenv("CUTOVER_TEST_ENV", envfile, 1);
    free(envfile);

    /* the secrets, from the environment only */
    {
        char *plain = test_fresh_db("secrets");
        const char *at = strstr(plain, "postgres@");
        assert_non_null(at);
        G_db = xasprintf("%.*spostgres:%s@%s", (int)(at - plain), plain, DB_PASSWORD,
                         at + strlen("postgres@"));
        free(plain);
    }
    setenv("DATABASE_URL", G_db, 1);
    setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID, 1);
    setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET, 1);
    setenv("AWS_SESSION_TOKEN", AWS_TOKEN, 1);
    setenv("CUTOVER_ADMIN_TOKEN", ADMIN_TOKEN, 1);

    snprintf(G_org, sizeof(G_org), "scan-%ld", (long)getpid());
    G_port = test_free_port();
    G_admin = test_free_port();
    char *spool = xasprintf("%s/spool", G_dir);
    mkdir(spool, 0700);
    G_config = xasprintf("%s/cutover.json", G_dir);
    json = xasprintf(
        "{\"listen\": \"127.0.0.1:%d\", \"upstream\": \"%s\",\n"
        " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"max_auth_failures\": 3},\n"
        " \"spool_dir\": \"%s\",\n"
        " \"log\": {\"level\": \"debug\", \"access\": true},\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true},\n"
        " \"legacy\": {\"raw_url\": \"%s/legacy/raw/{key}\"},\n"
        " \"routes\": [\n"
        "  {\"name\": \"upload\", \"kind\": \"upload\", \"path\": \"/documents\",\n"
        "   \"key\": {\"response_json\": \"/storage_key\"},\n"
        "   \"vars\": {\"org\": {\"header\": \"X-Org-Id\"}},\n"
        "   \"s3_key\": \"scan/{key}\"}],\n"
        " \"flags\": {\"dual_write\": true},\n"
        " \"backfill\": {\"source\": {\"jsonl\": \"%s/documents.jsonl\"}, \"rate\": 0}}\n",
        G_port, testenv("APP_URL"), G_admin, spool, testenv("S3_ENDPOINT"), testenv("S3_REGION"),
        testenv("S3_BUCKET"), testenv("APP_URL"), testenv("APP_DATA"));
    free(spool);
    assert_true(test_write_file(G_config, json, strlen(json)));
    free(json);

    /* migrate-db, proxy */
    if (run_cutover("migrate-db", "migrate-db") != 0)
        fail_msg("migrate-db failed (see %s)", G_dir);
    {
        char *argv[] = {(char *)testenv_var("CUTOVER_BIN"), "proxy", "--config", G_config, NULL};
        char *log = xasprintf("%s/proxy.log", G_dir);
        char *ready = xasprintf("http://127.0.0.1:%d/readyz", G_admin);
        G_pid = test_spawn(argv, NULL, log);
        if (!test_wait_http(ready, 30000))
            fail_msg("cutover proxy did not start (log %s)", log);
        free(log);
        free(ready);
    }

    /* uploads, mirrored and verified */
    for (int i = 0; i < 5; i++) {
        char *u = xasprintf("http://127.0.0.1:%d/documents?filename=scan%d.txt", G_port, i);
        char body[64];
        snprintf(body, sizeof(body), "secret-scan document %d", i);
        assert_int_equal(http("POST", u, NULL, body), 201);
        free(u);
    }
    PGconn *pg = PQconnectdb(G_db);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    if (!test_wait_until(all_verified, pg, 30000))
        fail_msg("the uploads were not verified (S3 refusing the distinctive key pair?)");

    /* admin calls with the token, then wrong tokens until the lockout */
    static const char *const paths[] = {"/admin/status", "/admin/flags", "/admin/audit?limit=5",
                                        "/admin/documents/x"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        url = xasprintf("http://127.0.0.1:%d%s", G_admin, paths[i]);
        long st = http("GET", url, ADMIN_TOKEN, NULL);
        assert_true(st != 401 && st != 429);
        free(url);
    }
    url = xasprintf("http://127.0.0.1:%d/admin/flags", G_admin);
    long st = 0;
    for (int i = 0; i < 10 && st != 429; i++)
        st = http("GET", url, "wrong-token-for-the-scan", NULL);
    assert_int_equal(st, 429);
    free(url);

    /* a backfill of documents seeded in the legacy store */
    url = xasprintf("%s/_control/seed", testenv("APP_URL"));
    assert_int_equal(http("POST", url, NULL, "{\"count\": 5, \"size\": 2000, \"org\": \"seeded\"}"),
                     201);
    free(url);
    if (run_cutover("backfill", "backfill --rate 100") != 0)
        fail_msg("backfill failed (see %s/backfill.err)", G_dir);

    /* doctor, presign */
    (void)run_cutover("doctor", "doctor");
    if (run_cutover("presign", "presign scan/some-key --expires 60") != 0)
        fail_msg("presign failed (see %s/presign.err)", G_dir);

    /* /metrics, when it answers */
    {
        struct test_http r;
        char hv[128];
        const char *h[2] = {hv, NULL};
        snprintf(hv, sizeof(hv), "Authorization: Bearer %s", ADMIN_TOKEN);
        url = xasprintf("http://127.0.0.1:%d/metrics", G_admin);
        if (test_http("GET", url, h, NULL, 0, &r) == 0 && r.status == 200)
            found += scan("/metrics", r.body, r.body_len, &hits, needles);
        test_http_free(&r);
        free(url);
    }

    /* the proxy stopped: its whole log written */
    int stst = test_stop(G_pid, SIGTERM, 30000);
    G_pid = 0;
    assert_true(WIFEXITED(stst) && WEXITSTATUS(stst) == 0);

    /* every cutover process's output */
    {
        static const char *const files[] = {"proxy.log",    "migrate-db.out", "migrate-db.err",
                                            "backfill.out", "backfill.err",   "doctor.out",
                                            "doctor.err",   "presign.err",    NULL};
        /* presign's stdout is its signed URL: no secret key, admin token or password in it */
        static const char *const presign_needles[] = {AWS_SECRET, ADMIN_TOKEN, DB_PASSWORD, NULL};
        for (size_t i = 0; files[i]; i++) {
            char *p = xasprintf("%s/%s", G_dir, files[i]);
            found += scan_file(p, &hits, needles);
            free(p);
        }
        char *p = xasprintf("%s/presign.out", G_dir);
        char *signed_url = test_read_file(p, NULL);
        assert_non_null(strstr(signed_url, "X-Amz-Signature=")); /* it did presign */
        free(signed_url);
        found += scan_file(p, &hits, presign_needles);
        free(p);
    }

    /* every row of every table of schema cutover */
    {
        PGresult *t = PQexec(pg, "SELECT table_name FROM information_schema.tables "
                                 "WHERE table_schema = 'cutover' ORDER BY 1");
        assert_int_equal(PQresultStatus(t), PGRES_TUPLES_OK);
        assert_true(PQntuples(t) >= 4);
        for (int i = 0; i < PQntuples(t); i++) {
            char *sql = xasprintf("SELECT t::text FROM cutover.%s t", PQgetvalue(t, i, 0));
            PGresult *r = PQexec(pg, sql);
            assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
            for (int k = 0; k < PQntuples(r); k++) {
                char *where = xasprintf("cutover.%s row %d", PQgetvalue(t, i, 0), k);
                found +=
                    scan(where, PQgetvalue(r, k, 0), (size_t)PQgetlength(r, k, 0), &hits, needles);
                free(where);
            }
            PQclear(r);
            free(sql);
        }
        PQclear(t);
    }
    PQfinish(pg);

    if (found)
        fail_msg("secrets or signatures found (%d):\n%.*s", found, (int)hits.len, hits.data);
    buf_free(&hits);
}

static int teardown(void **state)
{
    (void)state;
    if (G_pid)
        test_stop(G_pid, SIGKILL, 10000);
    if (G_services) {
        char *cmd = xasprintf("'%s/tests/harness/services.sh' stop '%s'",
                              testenv_var("CUTOVER_SOURCE_DIR"), G_services);
        test_run(cmd, NULL);
        free(cmd);
    }
    if (G_dir && !getenv("CUTOVER_TEST_KEEP"))
        test_rmtree(G_dir);
    free(G_dir);
    free(G_services);
    free(G_db);
    free(G_config);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_no_secret_anywhere, teardown),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
