/*
 * mxenv: a cutover proxy with a fresh database for the metrics and dashboard tests (see mxenv.h).
 */
#include "tests/metrics/mxenv.h"

#include "core/core.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const STATES[7] = {"pending",  "copied", "verified", "active",
                                      "mismatch", "failed", "deleted"};

void mx_start(struct mxenv *e, const char *tag)
{
    char *cmd, *out = NULL, *spool;

    memset(e, 0, sizeof(*e));
    snprintf(e->org, sizeof(e->org), "%s-%ld", tag, (long)getpid());
    e->db_url = test_fresh_db(tag);
    e->dir = test_tmpdir(tag);
    spool = xasprintf("%s/spool", e->dir);
    mkdir(spool, 0700);
    e->config = xasprintf("%s/cutover.json", e->dir);
    e->log = xasprintf("%s/cutover.log", e->dir);
    e->port = test_free_port();
    e->admin = test_free_port();
    char *json = xasprintf(
        "{\"listen\": \"127.0.0.1:%d\", \"upstream\": \"%s\",\n"
        " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"token\": \"" MX_TOKEN "\"},\n"
        " \"database_url\": \"%s\", \"spool_dir\": \"%s\",\n"
        " \"log\": {\"level\": \"info\", \"access\": false},\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\"},\n"
        " \"legacy\": {\"raw_url\": \"%s/legacy/raw/{key}\"},\n"
        " \"routes\": [\n"
        "  {\"name\": \"upload\", \"kind\": \"upload\", \"path\": \"/documents\",\n"
        "   \"key\": {\"response_json\": \"/storage_key\"},\n"
        "   \"vars\": {\"org\": {\"header\": \"X-Org-Id\"}},\n"
        "   \"s3_key\": \"documents/{org}/{key}\"},\n"
        "  {\"name\": \"delete\", \"kind\": \"delete\", \"path\": \"/documents/{key}\",\n"
        "   \"key\": {\"path\": \"key\"}}],\n"
        " \"flags\": {\"dual_write\": true, \"shadow_read\": 0.05},\n"
        " \"workers\": {\"mirror\": 2}}\n",
        e->port, testenv("APP_URL"), e->admin, e->db_url, spool, testenv("S3_ENDPOINT"),
        testenv("S3_REGION"), testenv("S3_BUCKET"), testenv("S3_ACCESS_KEY"),
        testenv("S3_SECRET_KEY"), testenv("APP_URL"));
    assert_true(test_write_file(e->config, json, strlen(json)));
    free(json);
    free(spool);
    cmd = xasprintf("'%s' migrate-db --config '%s'", testenv_var("CUTOVER_BIN"), e->config);
    if (test_run(cmd, &out) != 0)
        fail_msg("migrate-db: %s", out);
    free(cmd);
    free(out);
    char *argv[] = {(char *)testenv_var("CUTOVER_BIN"), "proxy", "--config", e->config, NULL};
    e->pid = test_spawn(argv, NULL, e->log);
    char *ready = xasprintf("http://127.0.0.1:%d/readyz", e->admin);
    assert_true(test_wait_http(ready, 20000));
    free(ready);
    e->pg = PQconnectdb(e->db_url);
    assert_int_equal(PQstatus(e->pg), CONNECTION_OK);
}

int mx_stop(struct mxenv *e)
{
    int st = test_stop(e->pid, SIGTERM, 30000);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *log = test_read_file(e->log, NULL);
        fprintf(stderr, "cutover proxy did not stop cleanly (status %d):\n%s\n", st,
                log ? log : "");
        free(log);
        return -1;
    }
    PQfinish(e->pg);
    test_rmtree(e->dir);
    free(e->db_url);
    free(e->dir);
    free(e->config);
    free(e->log);
    return 0;
}

long mx_upload(struct mxenv *e, size_t n)
{
    static int seq;
    struct test_http r;
    char *body = xmalloc(n), *url, *org = xasprintf("X-Org-Id: %s", e->org);
    const char *h[] = {org, "Content-Type: application/octet-stream", NULL};
    int k = ++seq;
    for (size_t i = 0; i < n; i++)
        body[i] = (char)('a' + (i + (size_t)k) % 26);
    url = xasprintf("http://127.0.0.1:%d/documents?filename=m%d.bin&patient_id=p%d", e->port, k, k);
    assert_int_equal(test_http("POST", url, h, body, n, &r), 0);
    long status = r.status;
    test_http_free(&r);
    free(url);
    free(org);
    free(body);
    return status;
}

struct verified_arg {
    struct mxenv *e;
    long want;
};

static bool verified(void *arg)
{
    struct verified_arg *a = arg;
    const char *p[1] = {a->e->org};
    PGresult *r = PQexecParams(a->e->pg,
                               "SELECT count(*) FROM cutover.documents WHERE state = 'verified' "
                               "AND vars->>'org' = $1",
                               1, NULL, p, NULL, NULL, 0);
    long n = PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n >= a->want;
}

bool mx_wait_verified(struct mxenv *e, long want)
{
    struct verified_arg a = {e, want};
    return test_wait_until(verified, &a, 30000);
}

char *mx_admin_get(struct mxenv *e, const char *path, bool auth, long *status)
{
    struct test_http r;
    const char *h[] = {"Authorization: Bearer " MX_TOKEN, NULL};
    char *url = xasprintf("http://127.0.0.1:%d%s", e->admin, path);
    assert_int_equal(test_http("GET", url, auth ? h : NULL, NULL, 0, &r), 0);
    *status = r.status;
    char *body = r.body;
    r.body = NULL;
    test_http_free(&r);
    free(url);
    return body;
}

double mx_sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

void mx_db_counts(struct mxenv *e, long counts[7])
{
    PGresult *r = PQexec(e->pg, "SELECT state, count(*) FROM cutover.documents GROUP BY state");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    for (int i = 0; i < 7; i++)
        counts[i] = 0;
    for (int i = 0; i < PQntuples(r); i++)
        for (int s = 0; s < 7; s++)
            if (strcmp(PQgetvalue(r, i, 0), STATES[s]) == 0)
                counts[s] = atol(PQgetvalue(r, i, 1));
    PQclear(r);
}
