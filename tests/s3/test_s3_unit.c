/*
 * test_s3_unit: S3 rules that need no server. The canonical URI of keys the emulator cannot
 * store (`//`, a leading `/`, `..` segments) and of `%`, unicode and reserved characters;
 * addressing (virtual-hosted by default, path style on request or for dotted buckets);
 * presigning with a fixed time reproducing the S3 documentation's URL, through the library
 * and through `cutover presign`; the command's exit statuses.
 */
#include "storage/s3.h"
#include "storage/sigv4.h"
#include "tests/testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void expect_path(const char *prefix, const char *key, const char *want)
{
    char out[1024];

    assert_true(sigv4_encode_path(prefix, key, out, sizeof(out)) > 0);
    assert_string_equal(out, want);
}

static void test_canonical_uri_edges(void **state)
{
    (void)state;
    expect_path("", "a//b", "/a//b");
    expect_path("", "/leading", "//leading");
    expect_path("", "../up/./x", "/../up/./x");
    expect_path("", "a/../../b", "/a/../../b");
    expect_path("", "100%", "/100%25");
    expect_path("", "%2F already", "/%252F%20already"); /* no double decoding, one encoding */
    expect_path("", "a+b=c&d", "/a%2Bb%3Dc%26d");
    expect_path("", "q?#frag", "/q%3F%23frag");
    expect_path("", "-_.~", "/-_.~");
    expect_path("", "ä", "/%C3%A4");
    expect_path("", "診", "/%E8%A8%BA");
    expect_path("", "📄", "/%F0%9F%93%84");
    expect_path("", "sp ace", "/sp%20ace");
    expect_path("/bucket", "k", "/bucket/k");
    {
        char small[8];
        assert_int_equal(sigv4_encode_path("", "0123456789", small, sizeof(small)), -1);
    }
}

static void test_signer_no_normalisation(void **state)
{
    /* the same bytes must be signed as sent: "a/../b" and "b" sign differently */
    sigv4_signer *s = sigv4_signer_new("us-east-1", "s3");
    struct sigv4_creds c = {"AKID", "secret", NULL};
    struct sigv4_kv h[] = {{"host", "b.s3.amazonaws.com"}, {"x-amz-date", "20240101T000000Z"}};
    struct sigv4_request r1 = {"GET", "/a/../b", NULL, 0, h, 2, SIGV4_EMPTY_SHA256};
    struct sigv4_request r2 = {"GET", "/b", NULL, 0, h, 2, SIGV4_EMPTY_SHA256};
    struct sigv4_trace t1, t2;
    char a1[512], a2[512];
    cut_err err = CUT_ERR_INIT;

    (void)state;
    sigv4_trace_init(&t1);
    sigv4_trace_init(&t2);
    assert_int_equal(sigv4_sign_header(s, &c, &r1, "20240101T000000Z", a1, sizeof(a1), &t1, &err),
                     0);
    assert_int_equal(sigv4_sign_header(s, &c, &r2, "20240101T000000Z", a2, sizeof(a2), &t2, &err),
                     0);
    assert_non_null(strstr(t1.canonical_request.data, "\n/a/../b\n"));
    assert_string_not_equal(t1.signature, t2.signature);
    /* a new day derives a new key; the old one is not reused */
    assert_int_equal(sigv4_sign_header(s, &c, &r2, "20240102T000000Z", a1, sizeof(a1), &t1, &err),
                     0);
    assert_string_not_equal(t1.signature, t2.signature);
    sigv4_trace_free(&t1);
    sigv4_trace_free(&t2);
    sigv4_signer_free(s);
}

static s3_client *client(struct cfg_s3 *cfg, creds_provider **cp, const char *endpoint,
                         const char *bucket, bool path_style)
{
    cut_err err = CUT_ERR_INIT;
    s3_client *c;

    memset(cfg, 0, sizeof(*cfg));
    cfg->endpoint = (char *)endpoint;
    cfg->region = "us-east-1";
    cfg->bucket = (char *)bucket;
    cfg->path_style = path_style;
    cfg->access_key_id = "AKIAIOSFODNN7EXAMPLE";
    cfg->secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    *cp = creds_provider_new(cfg, &err);
    assert_non_null(*cp);
    c = s3_client_new(cfg, *cp, &err);
    assert_non_null(c);
    return c;
}

static void test_addressing(void **state)
{
    struct cfg_s3 cfg;
    creds_provider *cp;
    s3_client *c;
    char url[512];

    (void)state;
    c = client(&cfg, &cp, NULL, "docs", false);
    assert_true(s3_object_url(c, "a b.pdf", url, sizeof(url)) > 0);
    assert_string_equal(url, "https://docs.s3.us-east-1.amazonaws.com/a%20b.pdf");
    s3_client_free(c);
    creds_provider_free(cp);
    c = client(&cfg, &cp, "http://127.0.0.1:9000/", "docs", true);
    assert_true(s3_object_url(c, "k", url, sizeof(url)) > 0);
    assert_string_equal(url, "http://127.0.0.1:9000/docs/k");
    s3_client_free(c);
    creds_provider_free(cp);
    c = client(&cfg, &cp, NULL, "my.dotted.bucket", false); /* TLS: path style */
    assert_true(s3_object_url(c, "k", url, sizeof(url)) > 0);
    assert_string_equal(url, "https://s3.us-east-1.amazonaws.com/my.dotted.bucket/k");
    s3_client_free(c);
    creds_provider_free(cp);
}

#define DOC_URL                                                                                    \
    "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-"      \
    "Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date="       \
    "20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="               \
    "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"

static void test_presign_doc_example(void **state)
{
    struct cfg_s3 cfg;
    creds_provider *cp;
    s3_client *c;
    char url[2048];
    time_t at;
    cut_err err = CUT_ERR_INIT;
    uint64_t t0;
    int n = 20000;

    (void)state;
    c = client(&cfg, &cp, "https://s3.amazonaws.com", "examplebucket", false);
    assert_true(sigv4_parse_amz_date("20130524T000000Z", &at));
    assert_true(s3_presign(c, "GET", "test.txt", 86400, at, url, sizeof(url), &err) > 0);
    assert_string_equal(url, DOC_URL);
    assert_int_equal(s3_presign(c, "DELETE", "k", 60, at, url, sizeof(url), &err), -1);
    assert_int_equal(s3_presign(c, "GET", "k", 604801, at, url, sizeof(url), &err), -1);
    assert_int_equal(s3_presign(c, "GET", "k", 60, at, url, 40, &err), -1);
    /* the client keeps its last URLs: asked again (same key, second, expiry, method, from
     * the cache or not, colliding slots included) the answer is what a client that never
     * presigned before gives */
    {
        struct cfg_s3 cfg2;
        creds_provider *cp2;
        s3_client *c2 = client(&cfg2, &cp2, "https://s3.amazonaws.com", "examplebucket", false);
        char u1[2048], u2[2048], key[32];
        for (int round = 0; round < 2; round++) {
            for (int i = 0; i < 200; i++) {
                const char *m = i % 5 ? "GET" : "PUT";
                snprintf(key, sizeof(key), "k/%d", i % 150);
                assert_true(
                    s3_presign_nowait(c, m, key, 60 + i % 2, at + i % 3, u1, sizeof(u1), &err) > 0);
                if (round == 1) {
                    assert_true(
                        s3_presign(c2, m, key, 60 + i % 2, at + i % 3, u2, sizeof(u2), &err) > 0);
                    assert_string_equal(u1, u2);
                }
            }
        }
        assert_true(s3_presign(c, "GET", "test.txt", 86400, at, url, sizeof(url), &err) > 0);
        assert_string_equal(url, DOC_URL);
        assert_true(s3_presign(c, "GET", "test.txt", 86400, at, url, sizeof(url), &err) > 0);
        assert_string_equal(url, DOC_URL);
        assert_int_equal(s3_presign(c, "GET", "test.txt", 86400, at, url, 100, &err), -1);
        s3_client_free(c2);
        creds_provider_free(cp2);
    }
    t0 = now_us();
    for (int i = 0; i < n; i++)
        assert_true(s3_presign(c, "GET", "documents/org/patient/report.pdf", 3600, 0, url,
                               sizeof(url), &err) > 0);
    print_message("presign: %.0f URLs/s (this build)\n", n * 1e6 / (double)(now_us() - t0));
    s3_client_free(c);
    creds_provider_free(cp);
}

static void test_presign_command(void **state)
{
    const char *bin = testenv_var("CUTOVER_BIN");
    char *dir = test_tmpdir("presign"), *cfg = xasprintf("%s/c.json", dir), *cmd, *out = NULL;
    const char *json = "{\"s3\": {\"endpoint\": \"https://s3.amazonaws.com\", \"region\": "
                       "\"us-east-1\", \"bucket\": \"examplebucket\", \"access_key_id\": "
                       "\"AKIAIOSFODNN7EXAMPLE\", \"secret_access_key\": "
                       "\"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"}}";

    (void)state;
    assert_true(test_write_file(cfg, json, strlen(json)));
    cmd = xasprintf("env -u AWS_ACCESS_KEY_ID '%s' presign test.txt --config '%s' --expires 86400 "
                    "--at 20130524T000000Z",
                    bin, cfg);
    assert_int_equal(test_run(cmd, &out), 0);
    assert_string_equal(out, DOC_URL "\n");
    free(cmd);
    free(out);
    cmd = xasprintf("'%s' presign test.txt --config '%s' --at 2013-05-24 2>&1", bin, cfg);
    assert_int_equal(test_run(cmd, NULL), 2);
    free(cmd);
    cmd = xasprintf("'%s' presign test.txt --config '%s' --method DELETE 2>&1", bin, cfg);
    assert_int_equal(test_run(cmd, NULL), 2);
    free(cmd);
    cmd = xasprintf("'%s' presign --help", bin);
    assert_int_equal(test_run(cmd, NULL), 0);
    free(cmd);
    assert_true(test_write_file(cfg, "{}", 2));
    cmd = xasprintf("'%s' presign k --config '%s' 2>&1", bin, cfg);
    out = NULL;
    assert_int_equal(test_run(cmd, &out), 2);
    assert_non_null(strstr(out, "s3"));
    free(out);
    free(cmd);
    cmd = xasprintf("'%s' doctor --config '%s' 2>&1", bin, cfg);
    assert_int_equal(test_run(cmd, NULL), 2);
    free(cmd);
    cmd = xasprintf("rm -rf '%s'", dir);
    assert_int_equal(test_run(cmd, NULL), 0);
    free(cmd);
    free(cfg);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_uri_edges), cmocka_unit_test(test_signer_no_normalisation),
        cmocka_unit_test(test_addressing),          cmocka_unit_test(test_presign_doc_example),
        cmocka_unit_test(test_presign_command),
    };

    return cmocka_run_group_tests_name("s3_unit", tests, NULL, NULL);
}
