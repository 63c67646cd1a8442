/*
 * test_s3_rver: the S3 client against s3rver (which checks SigV4 signatures).
 *
 * Keys with every character that broke URL signing elsewhere (spaces, + % # ? & = ; ' ( )
 * * , $ @ ~, unicode letters, CJK, emoji, nested /) are written, headed, read back
 * byte-identical and deleted; presigned GET and PUT URLs for the same keys are used with
 * the curl command-line tool; a 200 MiB file goes through multipart upload and comes back
 * with the same MD5; a client with a wrong secret is refused and S3's error code reaches
 * the caller (this is also what proves the emulator checks signatures at all, since it
 * accepts unsigned requests).
 */
#include "storage/s3.h"
#include "tests/testlib.h"

#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static const char *const keys[] = {
    "plain.txt",
    "with space/and  two spaces.pdf",
    "plus+sign and=equals&amp.txt",
    "100% sure #1?.txt",
    "semi;colon'quote(paren)*star,comma$dollar@at~tilde!bang.bin",
    "unicode/Ärztebrief für Müller.pdf",
    "cjk/診療記録/患者.txt",
    "emoji/📄 report 🏥.txt",
    "nested/a/b/c/d/e/f.txt",
};

struct env {
    struct cfg_s3 cfg;
    creds_provider *creds;
    s3_client *c;
    char *tmp;
};

static void cfg_from_env(struct cfg_s3 *cfg, const char *secret)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->endpoint = (char *)testenv("S3_ENDPOINT");
    cfg->region = (char *)testenv("S3_REGION");
    cfg->bucket = (char *)testenv("S3_BUCKET");
    cfg->path_style = true;
    cfg->presign_expires = 600;
    cfg->access_key_id = (char *)testenv("S3_ACCESS_KEY");
    cfg->secret_access_key = (char *)(secret ? secret : testenv("S3_SECRET_KEY"));
    cfg->multipart_threshold = 64ull << 20;
    cfg->part_size = 16ull << 20;
    cfg->max_attempts = 3;
    cfg->retry_base_ms = 50;
    cfg->retry_max_total_ms = 5000;
    cfg->timeout_s = 120;
}

static int setup(void **state)
{
    struct env *e = xcalloc(1, sizeof(*e));
    cut_err err = CUT_ERR_INIT;

    cfg_from_env(&e->cfg, NULL);
    e->creds = creds_provider_new(&e->cfg, &err);
    assert_non_null(e->creds);
    e->c = s3_client_new(&e->cfg, e->creds, &err);
    if (e->c == NULL)
        fail_msg("%s", err.msg);
    e->tmp = test_tmpdir("s3rver");
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    char *cmd = xasprintf("rm -rf '%s'", e->tmp);

    assert_int_equal(test_run(cmd, NULL), 0);
    free(cmd);
    s3_client_free(e->c);
    creds_provider_free(e->creds);
    free(e->tmp);
    free(e);
    return 0;
}

struct collect {
    struct buf b;
};

static int collect_sink(void *arg, const void *p, size_t n)
{
    struct collect *c = arg;

    return buf_append(&c->b, p, n) ? 0 : 1;
}

static void md5_hex(const void *p, size_t n, char out[33])
{
    unsigned char d[16];
    unsigned int l;
    static const char hx[] = "0123456789abcdef";

    EVP_Digest(p, n, d, &l, EVP_md5(), NULL);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[32] = '\0';
}

static void get_and_compare(s3_client *c, const char *key, const void *want, size_t n)
{
    struct collect col;
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;

    buf_init(&col.b, 1 << 20);
    if (s3_get(c, key, collect_sink, &col, &r, &err) != 0)
        fail_msg("GET %s: %s", key, err.msg);
    assert_int_equal(r.status, 200);
    assert_int_equal(col.b.len, n);
    assert_memory_equal(col.b.data, want, n);
    buf_free(&col.b);
}

static void test_keys_roundtrip(void **state)
{
    struct env *e = *state;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *key = keys[i];
        char *body = xasprintf("document %zu: %s\n\x01\x02\xff binary tail", i, key);
        size_t n = strlen(body); /* \x01\x02\xff included */
        struct s3_result r;
        cut_err err = CUT_ERR_INIT;
        char md5[33];

        md5_hex(body, n, md5);
        if (s3_put_buffer(e->c, key, body, n, NULL, &r, &err) != 0)
            fail_msg("PUT %s: %s", key, err.msg);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.etag, md5);
        if (s3_head(e->c, key, &r, &err) != 0)
            fail_msg("HEAD %s: %s", key, err.msg);
        assert_int_equal(r.content_length, (int64_t)n);
        assert_string_equal(r.etag, md5);
        get_and_compare(e->c, key, body, n);
        if (s3_delete(e->c, key, &r, &err) != 0)
            fail_msg("DELETE %s: %s", key, err.msg);
        assert_int_equal(s3_head(e->c, key, &r, &err), -1);
        assert_int_equal(err.code, CUT_ENOTFOUND);
        assert_int_equal(r.status, 404);
        free(body);
    }
}

static void test_presigned_with_curl(void **state)
{
    struct env *e = *state;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *key = keys[i];
        char url[8192], *cmd, *out = NULL, *got;
        char *src = xasprintf("%s/src%zu", e->tmp, i), *dst = xasprintf("%s/dst%zu", e->tmp, i);
        char *body = xasprintf("presigned body %zu for %s", i, key);
        size_t n = strlen(body), gl = 0;
        struct s3_result r;
        cut_err err = CUT_ERR_INIT;

        assert_true(test_write_file(src, body, n));
        /* PUT through a presigned URL, then read it back with the client */
        assert_true(s3_presign(e->c, "PUT", key, 300, 0, url, sizeof(url), &err) > 0);
        cmd =
            xasprintf("curl -sS -f -g --path-as-is -X PUT --upload-file '%s' '%s' 2>&1", src, url);
        if (test_run(cmd, &out) != 0)
            fail_msg("presigned PUT %s: %s", key, out ? out : "");
        free(cmd);
        free(out);
        out = NULL;
        get_and_compare(e->c, key, body, n);
        /* GET through a presigned URL */
        assert_true(s3_presign(e->c, "GET", key, 300, 0, url, sizeof(url), &err) > 0);
        cmd = xasprintf("curl -sS -f -g --path-as-is -o '%s' '%s' 2>&1", dst, url);
        if (test_run(cmd, &out) != 0)
            fail_msg("presigned GET %s: %s", key, out ? out : "");
        got = test_read_file(dst, &gl);
        assert_non_null(got);
        assert_int_equal(gl, n);
        assert_memory_equal(got, body, n);
        /* a presigned GET URL does not allow PUT */
        free(cmd);
        free(out);
        out = NULL;
        cmd = xasprintf("curl -s -o /dev/null -w '%%{http_code}' -g --path-as-is -X PUT "
                        "--upload-file '%s' '%s'",
                        src, url);
        assert_int_equal(test_run(cmd, &out), 0);
        assert_string_equal(out, "403");
        assert_int_equal(s3_delete(e->c, key, &r, &err), 0);
        free(cmd);
        free(out);
        free(got);
        free(body);
        free(src);
        free(dst);
    }
}

static void test_wrong_secret_refused(void **state)
{
    struct env *e = *state;
    struct cfg_s3 cfg;
    creds_provider *cp;
    s3_client *bad;
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;

    (void)e;
    cfg_from_env(&cfg, "not-the-secret");
    cp = creds_provider_new(&cfg, &err);
    bad = s3_client_new(&cfg, cp, &err);
    assert_non_null(bad);
    assert_int_equal(s3_put_buffer(bad, "refused.txt", "x", 1, NULL, &r, &err), -1);
    assert_int_equal(err.code, CUT_ES3);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.code, "SignatureDoesNotMatch");
    assert_int_equal(r.attempts, 1); /* a 403 is never retried */
    assert_non_null(strstr(err.msg, "SignatureDoesNotMatch"));
    assert_null(strstr(err.msg, "not-the-secret"));
    s3_client_free(bad);
    creds_provider_free(cp);
}

struct md5_sink {
    EVP_MD_CTX *ctx;
    uint64_t n;
};

static int md5_sink_cb(void *arg, const void *p, size_t n)
{
    struct md5_sink *s = arg;

    EVP_DigestUpdate(s->ctx, p, n);
    s->n += n;
    return 0;
}

static void test_multipart_200mib(void **state)
{
    struct env *e = *state;
    char *path = xasprintf("%s/big.bin", e->tmp), want[33], got[33];
    const size_t size = 200u << 20, chunk = 1u << 20;
    unsigned char d[16];
    unsigned int l;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    FILE *f = fopen(path, "wb");
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    uint64_t *blk = xmalloc(chunk);
    struct md5_sink sink;
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;

    assert_non_null(f);
    EVP_DigestInit_ex(m, EVP_md5(), NULL);
    for (size_t done = 0; done < size; done += chunk) {
        for (size_t i = 0; i < chunk / 8; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            blk[i] = x;
        }
        assert_int_equal(fwrite(blk, 1, chunk, f), chunk);
        EVP_DigestUpdate(m, blk, chunk);
    }
    assert_int_equal(fclose(f), 0);
    EVP_DigestFinal_ex(m, d, &l);
    for (int i = 0; i < 16; i++)
        sprintf(want + 2 * i, "%02x", d[i]);

    if (s3_put_file(e->c, "big/200MiB multipart.bin", path, NULL, &r, &err) != 0)
        fail_msg("multipart: %s", err.msg);
    assert_int_equal(r.status, 200);
    /* s3rver's multipart ETag is the MD5 of the whole body (real S3: MD5 of MD5s + "-13") */
    assert_string_equal(r.etag, want);
    assert_int_equal(s3_head(e->c, "big/200MiB multipart.bin", &r, &err), 0);
    assert_int_equal(r.content_length, (int64_t)size);

    EVP_DigestInit_ex(m, EVP_md5(), NULL);
    sink.ctx = m;
    sink.n = 0;
    if (s3_get(e->c, "big/200MiB multipart.bin", md5_sink_cb, &sink, &r, &err) != 0)
        fail_msg("GET big: %s", err.msg);
    EVP_DigestFinal_ex(m, d, &l);
    for (int i = 0; i < 16; i++)
        sprintf(got + 2 * i, "%02x", d[i]);
    assert_int_equal(sink.n, size);
    assert_string_equal(got, want);
    assert_int_equal(s3_delete(e->c, "big/200MiB multipart.bin", &r, &err), 0);
    unlink(path);
    EVP_MD_CTX_free(m);
    free(blk);
    free(path);
}

static void test_multipart_abort_unsupported(void **state)
{
    struct env *e = *state;
    char id[1024];
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;

    if (s3_multipart_create(e->c, "aborted.bin", NULL, id, sizeof(id), &r, &err) != 0)
        fail_msg("create: %s", err.msg);
    assert_true(id[0] != '\0');
    /* s3rver has no AbortMultipartUpload and answers 405 (real S3 answers 204): the caller
     * gets that definite answer, as an S3 error, after one attempt (405 is not retried). */
    assert_int_equal(s3_multipart_abort(e->c, "aborted.bin", id, &r, &err), -1);
    assert_int_equal(err.code, CUT_ES3);
    assert_int_equal(r.status, 405);
    assert_int_equal(r.attempts, 1);
}

static void run_doctor(struct env *e, const char *db, const char *secret, int want_rc,
                       const char *want_line)
{
    char *cfg = xasprintf("%s/doctor.json", e->tmp), *cmd, *out = NULL;
    char *json =
        xasprintf("{\"database_url\": \"%s\", \"upstream\": \"%s\", \"spool_dir\": \"%s\", "
                  "\"legacy\": {\"raw_url\": \"%s/legacy/raw/{key}\"}, "
                  "\"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", "
                  "\"bucket\": \"%s\", \"path_style\": true, \"access_key_id\": "
                  "\"%s\", \"secret_access_key\": \"%s\", \"max_attempts\": 1}}",
                  db, testenv("APP_URL"), e->tmp, testenv("LEGACY_URL"), testenv("S3_ENDPOINT"),
                  testenv("S3_REGION"), testenv("S3_BUCKET"), testenv("S3_ACCESS_KEY"), secret);

    assert_true(test_write_file(cfg, json, strlen(json)));
    cmd = xasprintf("'%s' doctor --config '%s' 2>&1", testenv_var("CUTOVER_BIN"), cfg);
    if (test_run(cmd, &out) != want_rc || strstr(out, want_line) == NULL)
        fail_msg("doctor: expected exit %d and '%s', got:\n%s", want_rc, want_line, out);
    assert_null(strstr(out, secret[0] ? secret : "\x01"));
    free(out);
    free(cmd);
    free(json);
    free(cfg);
}

static void test_doctor(void **state)
{
    struct env *e = *state;
    char *db = test_fresh_db("doctor");
    char *cmd = xasprintf("'%s' migrate-db --database-url '%s'", testenv_var("CUTOVER_BIN"), db);

    /* before migrate-db: the database check fails and says what to run */
    run_doctor(e, db, testenv("S3_SECRET_KEY"), 1, "run `cutover migrate-db`");
    assert_int_equal(test_run(cmd, NULL), 0);
    run_doctor(e, db, testenv("S3_SECRET_KEY"), 0, "ok   read back: identical");
    run_doctor(e, db, testenv("S3_SECRET_KEY"), 0, "ok   legacy store: reachable (HTTP 404)");
    run_doctor(e, db, testenv("S3_SECRET_KEY"), 0, "ok   application: reachable (HTTP ");
    run_doctor(e, db, testenv("S3_SECRET_KEY"), 0, "ok   spool: ");
    run_doctor(e, db, "wrong-secret-value", 1, "FAIL write:");
    free(cmd);
    free(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrong_secret_refused),
        cmocka_unit_test(test_keys_roundtrip),
        cmocka_unit_test(test_presigned_with_curl),
        cmocka_unit_test(test_multipart_abort_unsupported),
        cmocka_unit_test(test_doctor),
        cmocka_unit_test(test_multipart_200mib),
    };

    return cmocka_run_group_tests_name("s3rver", tests, setup, teardown);
}
