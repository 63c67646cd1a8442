/*
 * bfenv: see bfenv.h.
 */
#include "tests/bfenv.h"

#include "core/core.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int files;

struct bfenv E;

int bfenv_group_setup(void **state)
{
    (void)state;
    E.dir = test_tmpdir(E.tag);
    if (!E.no_s3) {
        test_s3_open(&E.s3env);
        E.s3 = E.s3env.c;
    }
    return 0;
}

int bfenv_group_teardown(void **state)
{
    (void)state;
    if (E.s3)
        test_s3_close(&E.s3env);
    E.s3 = NULL;
    test_rmtree(E.dir);
    free(E.config);
    E.config = NULL;
    return 0;
}

int bfenv_setup(void **state)
{
    (void)state;
    E.db_url = test_fresh_db(E.tag);
    if (E.first_config) {
        E.first_config();
    } else {
        free(E.config);
        E.config = bfenv_config(E.dir, E.db_url, E.workers, "{\"jsonl\": \"/nonexistent\"}");
    }
    test_migrate_db(E.config);
    E.pg = test_pg_connect(E.db_url);
    return 0;
}

int bfenv_teardown(void **state)
{
    (void)state;
    PQfinish(E.pg);
    E.pg = NULL;
    E.workers = NULL;
    free(E.db_url);
    E.db_url = NULL;
    return 0;
}

void bfenv_seed(const char *org, int count, int size)
{
    struct test_http r;
    char *url = xasprintf("%s/_control/seed", testenv("APP_URL"));
    char *body = xasprintf("{\"count\": %d, \"size\": %d, \"org\": \"%s\"}", count, size, org);
    const char *h[] = {"Content-Type: application/json", NULL};
    assert_int_equal(test_http("POST", url, h, body, strlen(body), &r), 0);
    if (r.status != 201)
        fail_msg("seed: %ld %s", r.status, r.body ? r.body : r.errbuf);
    test_http_free(&r);
    free(url);
    free(body);
}

char *bfenv_jsonl(const char *dir, const char *org, const char *extra_before,
                  const char *extra_after)
{
    char *path = xasprintf("%s/docs-%s.jsonl", dir, org);
    char *app = xasprintf("%s/documents.jsonl", testenv("APP_DATA"));
    char *all = test_read_file(app, NULL);
    char *needle = xasprintf("\"org\":\"%s\"", org);
    struct buf out;

    assert_non_null(all);
    buf_init(&out, 0);
    if (extra_before)
        assert_true(buf_puts(&out, extra_before));
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n"))
        if (strstr(line, needle))
            assert_true(buf_printf(&out, "%s\n", line));
    if (extra_after)
        assert_true(buf_puts(&out, extra_after));
    assert_true(test_write_file(path, out.data, out.len));
    buf_free(&out);
    free(all);
    free(app);
    free(needle);
    return path;
}

char *bfenv_config(const char *dir, const char *db_url, const char *workers, const char *source)
{
    char *path = xasprintf("%s/cutover-%d.json", dir, ++files);
    char *json = xasprintf(
        "{\"upstream\": \"%s\", \"database_url\": \"%s\", \"spool_dir\": \"%s\",\n"
        " \"log\": {\"level\": \"warn\"},\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\"},\n"
        " \"legacy\": {\"raw_url\": \"%s/legacy/raw/{key}\"},\n"
        " \"routes\": [\n"
        "  {\"name\": \"upload\", \"kind\": \"upload\", \"path\": \"/documents\",\n"
        "   \"file_field\": \"file\", \"key\": {\"response_json\": \"/storage_key\"},\n"
        "   \"vars\": {\"org\": {\"header\": \"X-Org-Id\"}},\n"
        "   \"s3_key\": \"backfilled/{org}/{key}\"}],\n"
        " \"workers\": %s,\n"
        " \"backfill\": {\"source\": %s, \"rate\": 0, \"concurrency\": 8}}\n",
        testenv("APP_URL"), db_url, dir, testenv("S3_ENDPOINT"), testenv("S3_REGION"),
        testenv("S3_BUCKET"), testenv("S3_ACCESS_KEY"), testenv("S3_SECRET_KEY"),
        testenv("APP_URL"), workers ? workers : "{}", source);
    assert_true(test_write_file(path, json, strlen(json)));
    free(json);
    return path;
}

int bfenv_run(const char *args, const char *event, char **out, json_t **summary)
{
    char *cmd = xasprintf("'%s' %s", testenv_var("CUTOVER_BIN"), args);
    char *needle = xasprintf("{\"event\":\"%s\"", event);
    char *o = NULL;
    int rc = test_run(cmd, &o);
    const char *s = NULL;

    for (const char *p = o; p && (p = strstr(p, needle)) != NULL; p++)
        s = p;
    *summary = NULL;
    if (s) {
        json_error_t jerr;
        *summary = json_loadb(s, strcspn(s, "\n"), 0, &jerr);
    }
    if (!*summary) {
        fprintf(stderr, "no %s line; the output of %s:\n%s\n", event, args, o ? o : "");
        fail_msg("no %s line (exit %d)", event, rc);
    }
    free(cmd);
    free(needle);
    *out = o;
    return rc;
}

void bfenv_sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

PGresult *bfenv_q(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    return r;
}

long long bfenv_int(PGconn *c, const char *sql)
{
    PGresult *r = bfenv_q(c, sql);
    long long v = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

void bfenv_assert_once(PGconn *c, long long n)
{
    assert_int_equal(
        bfenv_int(c, "SELECT count(*) FROM cutover.transitions WHERE to_state = 'copied'"), n);
    assert_int_equal(
        bfenv_int(c, "SELECT count(*) FROM cutover.transitions WHERE from_state IS NULL"), n);
}

void bfenv_fail_with(const char *what, int rc, const char *out)
{
    fprintf(stderr, "%s: exit %d; its output:\n%s\n", what, rc, out ? out : "");
    fail_msg("%s: exit %d (output above)", what, rc);
}

long long bfenv_jint(json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(o, a);
    if (b)
        v = json_object_get(v, b);
    if (!json_is_integer(v))
        fail_msg("the summary has no integer %s%s%s", a, b ? "." : "", b ? b : "");
    return json_integer_value(v);
}

static int sink_buf(void *arg, const void *data, size_t n)
{
    return buf_append(arg, data, n) ? 0 : 1;
}

void bfenv_s3_read(s3_client *s3, const char *s3key, struct buf *got)
{
    struct s3_result res;
    cut_err err = CUT_ERR_INIT;
    if (s3_get(s3, s3key, sink_buf, got, &res, &err) != 0)
        fail_msg("GET %s from S3: %s", s3key, err.msg);
}

void bfenv_raw_read(const char *key, struct test_http *raw)
{
    CURL *c = curl_easy_init();
    char *ek = curl_easy_escape(c, key, 0);
    char *url = xasprintf("%s/legacy/raw/%s", testenv("APP_URL"), ek);
    assert_int_equal(test_http("GET", url, NULL, NULL, 0, raw), 0);
    assert_int_equal(raw->status, 200);
    curl_free(ek);
    curl_easy_cleanup(c);
    free(url);
}

void bfenv_assert_same(s3_client *s3, const char *key, const char *s3key, const char *sha256)
{
    struct buf got;
    struct test_http raw;
    char sha[65];

    buf_init(&got, 64 << 20);
    bfenv_s3_read(s3, s3key, &got);
    bfenv_raw_read(key, &raw);
    assert_int_equal(got.len, raw.body_len);
    assert_memory_equal(got.data, raw.body, got.len);
    if (sha256) {
        bfenv_sha256_hex(got.data, got.len, sha);
        assert_string_equal(sha, sha256);
    }
    test_http_free(&raw);
    buf_free(&got);
}
