/*
 * bfenv: see bfenv.h.
 */
#include "tests/bfenv.h"

#include "core/core.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int files;

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
