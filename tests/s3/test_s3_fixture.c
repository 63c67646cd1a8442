/*
 * test_s3_fixture: the S3 client and the credentials chain against small HTTP servers run
 * inside this test with libmicrohttpd, for what a real S3 cannot be asked to do on demand:
 *   - S3 answering 503 SlowDown twice and then 200 (retried, attempts counted), a 403 that
 *     must not be retried, a 500 that never stops (bounded attempts);
 *   - the headers a PutObject and a CreateMultipartUpload carry (Content-MD5, checksum,
 *     SSE-S3 and SSE-KMS, the session token);
 *   - STS AssumeRoleWithWebIdentity and the container credentials endpoint, handing out
 *     credentials that expire in seconds, so refresh (and refresh under 8 threads) is seen;
 *   - a container endpoint that holds its answer: s3_presign_nowait() (the event loop's
 *     presign) returns at once without credentials, the refresher fetches in the background,
 *     and a set near its expiry keeps signing while the refresh hangs.
 * Nothing sleeps and hopes: waits are polls of a condition with a deadline.
 */
#include "storage/creds.h"
#include "storage/s3.h"
#include "tests/testlib.h"

#include <microhttpd.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- the fixture server ---------------------------------------------------------------- */

enum mode { M_SLOWDOWN, M_FORBIDDEN, M_ALWAYS500, M_RECORD, M_STS, M_CONTAINER };

struct fixture {
    struct MHD_Daemon *d;
    int port;
    enum mode mode;
    pthread_mutex_t mu;
    int requests;
    int expires_in; /* STS / container: seconds of validity handed out */
    bool hold;      /* container: answers wait until hold is cleared */
    int held;       /* requests waiting now */
    pthread_cond_t cv;
    char last_headers[8192]; /* "name: value\n" of the last request */
    char last_method[16];
    char last_url[1024];
    char last_query[2048];
};

static enum MHD_Result add_hdr(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    struct fixture *f = cls;
    size_t l = strlen(f->last_headers);

    (void)kind;
    snprintf(f->last_headers + l, sizeof(f->last_headers) - l, "%s: %s\n", k, v ? v : "");
    return MHD_YES;
}

static enum MHD_Result add_q(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    struct fixture *f = cls;
    size_t l = strlen(f->last_query);

    (void)kind;
    snprintf(f->last_query + l, sizeof(f->last_query) - l, "%s=%s\n", k, v ? v : "");
    return MHD_YES;
}

static void iso(time_t t, char *out, size_t n)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **ctx)
{
    struct fixture *f = cls;
    struct MHD_Response *resp;
    char body[2048], exp[64];
    int status = 200, n;
    enum MHD_Result ret;

    (void)version;
    (void)data;
    if (*ctx == NULL) {
        *ctx = (void *)1;
        return MHD_YES;
    }
    if (*size) {
        *size = 0; /* the body is not looked at */
        return MHD_YES;
    }
    pthread_mutex_lock(&f->mu);
    n = ++f->requests;
    f->last_headers[0] = f->last_query[0] = '\0';
    MHD_get_connection_values(conn, MHD_HEADER_KIND, add_hdr, f);
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_q, f);
    snprintf(f->last_method, sizeof(f->last_method), "%s", method);
    snprintf(f->last_url, sizeof(f->last_url), "%s", url);
    body[0] = '\0';
    switch (f->mode) {
    case M_SLOWDOWN:
        if (n <= 2) {
            status = 503;
            snprintf(body, sizeof(body),
                     "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please "
                     "reduce your request rate.</Message></Error>");
        }
        break;
    case M_FORBIDDEN:
        status = 403;
        snprintf(body, sizeof(body),
                 "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>");
        break;
    case M_ALWAYS500:
        status = 500;
        snprintf(body, sizeof(body), "<Error><Code>InternalError</Code></Error>");
        break;
    case M_RECORD:
        if (strcmp(method, "POST") == 0)
            snprintf(body, sizeof(body),
                     "<InitiateMultipartUploadResult><UploadId>up-1</UploadId>"
                     "</InitiateMultipartUploadResult>");
        break;
    case M_STS:
        iso(time(NULL) + f->expires_in, exp, sizeof(exp));
        snprintf(body, sizeof(body),
                 "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>"
                 "<Credentials><AccessKeyId>ASIASTS%d</AccessKeyId><SecretAccessKey>sts-secret"
                 "</SecretAccessKey><SessionToken>sts-token-%d</SessionToken><Expiration>%s"
                 "</Expiration></Credentials></AssumeRoleWithWebIdentityResult>"
                 "</AssumeRoleWithWebIdentityResponse>",
                 n, n, exp);
        break;
    case M_CONTAINER:
        f->held++;
        while (f->hold)
            pthread_cond_wait(&f->cv, &f->mu);
        f->held--;
        if (!strstr(f->last_headers, "Authorization: pod-token-42\n")) {
            status = 401;
            break;
        }
        iso(time(NULL) + f->expires_in, exp, sizeof(exp));
        snprintf(body, sizeof(body),
                 "{\"AccessKeyId\":\"ASIACT%d\",\"SecretAccessKey\":\"ct-secret\","
                 "\"Token\":\"ct-token-%d\",\"Expiration\":\"%s\"}",
                 n, n, exp);
        break;
    }
    pthread_mutex_unlock(&f->mu);
    resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    if (status == 200 && (f->mode == M_SLOWDOWN || f->mode == M_RECORD))
        MHD_add_response_header(resp, "ETag", "\"0123456789abcdef0123456789abcdef\"");
    MHD_add_response_header(resp, "x-amz-request-id", "REQ123");
    ret = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static struct fixture *fixture_start(enum mode m)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->mode = m;
    f->expires_in = 3600;
    f->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, handler, f, MHD_OPTION_END);
    assert_non_null(f->d);
    f->port = MHD_get_daemon_info(f->d, MHD_DAEMON_INFO_BIND_PORT)->port;
    return f;
}

static void fixture_stop(struct fixture *f)
{
    MHD_stop_daemon(f->d);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

static int requests(struct fixture *f)
{
    int n;

    pthread_mutex_lock(&f->mu);
    n = f->requests;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* ---- S3 side --------------------------------------------------------------------------- */

struct client {
    struct cfg_s3 cfg;
    char endpoint[64];
    creds_provider *cp;
    s3_client *c;
};

static void client_open(struct client *k, struct fixture *f, enum sse_mode sse)
{
    cut_err err = CUT_ERR_INIT;

    memset(k, 0, sizeof(*k));
    snprintf(k->endpoint, sizeof(k->endpoint), "http://127.0.0.1:%d", f->port);
    k->cfg.endpoint = k->endpoint;
    k->cfg.region = "eu-west-1";
    k->cfg.bucket = "bucket";
    k->cfg.path_style = true;
    k->cfg.sse = sse;
    k->cfg.kms_key_id = sse == SSE_KMS ? "arn:aws:kms:eu-west-1:111122223333:key/abcd" : NULL;
    k->cfg.max_attempts = 4;
    k->cfg.retry_base_ms = 10;
    k->cfg.retry_max_total_ms = 5000;
    k->cfg.timeout_s = 10;
    k->cfg.access_key_id = "AKIDTEST";
    k->cfg.secret_access_key = "secret";
    k->cfg.session_token = "session-token-xyz";
    k->cp = creds_provider_new(&k->cfg, &err);
    assert_non_null(k->cp);
    k->c = s3_client_new(&k->cfg, k->cp, &err);
    assert_non_null(k->c);
}

static void client_close(struct client *k)
{
    s3_client_free(k->c);
    creds_provider_free(k->cp);
}

static void test_slowdown_twice_then_ok(void **state)
{
    struct fixture *f = fixture_start(M_SLOWDOWN);
    struct client k;
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;

    (void)state;
    client_open(&k, f, SSE_NONE);
    if (s3_put_buffer(k.c, "doc.pdf", "hello", 5, NULL, &r, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(r.attempts, 3);
    assert_int_equal(requests(f), 3);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.etag, "0123456789abcdef0123456789abcdef");
    assert_string_equal(r.request_id, "REQ123");
    client_close(&k);
    fixture_stop(f);
}

static void test_forbidden_not_retried(void **state)
{
    struct fixture *f = fixture_start(M_FORBIDDEN);
    struct client k;
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;

    (void)state;
    client_open(&k, f, SSE_NONE);
    assert_int_equal(s3_put_buffer(k.c, "doc.pdf", "hello", 5, NULL, &r, &err), -1);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(requests(f), 1);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.code, "AccessDenied");
    assert_string_equal(r.message, "Access Denied");
    assert_int_equal(err.code, CUT_ES3);
    client_close(&k);
    fixture_stop(f);
}

static void test_500_bounded(void **state)
{
    struct fixture *f = fixture_start(M_ALWAYS500);
    struct client k;
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;

    (void)state;
    client_open(&k, f, SSE_NONE);
    assert_int_equal(s3_delete(k.c, "doc.pdf", &r, &err), -1);
    assert_int_equal(r.attempts, 4);
    assert_int_equal(requests(f), 4);
    assert_string_equal(r.code, "InternalError");
    client_close(&k);
    fixture_stop(f);
}

static void test_connection_refused_retried(void **state)
{
    struct client k;
    struct fixture *f = fixture_start(M_RECORD);
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;
    int port = f->port;

    (void)state;
    client_open(&k, f, SSE_NONE);
    fixture_stop(f); /* nobody listens there any more */
    (void)port;
    assert_int_equal(s3_delete(k.c, "doc.pdf", &r, &err), -1);
    assert_int_equal(err.code, CUT_EHTTP);
    assert_int_equal(r.attempts, 4);
    assert_int_equal(r.status, 0);
    client_close(&k);
}

static void test_put_headers(void **state)
{
    struct fixture *f = fixture_start(M_RECORD);
    struct client k;
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;
    struct s3_put_opts o = {"application/pdf", NULL, NULL};
    char id[64];

    (void)state;
    client_open(&k, f, SSE_KMS);
    assert_int_equal(s3_put_buffer(k.c, "a b/c+d.pdf", "hello", 5, &o, &r, &err), 0);
    assert_string_equal(f->last_method, "PUT");
    /* MD5("hello") and SHA-256("hello"), base64 */
    assert_non_null(strcasestr(f->last_headers, "Content-MD5: XUFAKrxLKna5cZ2REBfFkg==\n"));
    assert_non_null(strstr(
        f->last_headers, "x-amz-checksum-sha256: LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=\n"));
    assert_non_null(strcasestr(f->last_headers,
                               "x-amz-content-sha256: "
                               "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362"
                               "938b9824\n"));
    assert_non_null(strcasestr(f->last_headers, "x-amz-server-side-encryption: aws:kms\n"));
    assert_non_null(strcasestr(f->last_headers, "x-amz-server-side-encryption-aws-kms-key-id: "
                                                "arn:aws:kms:eu-west-1:111122223333:key/abcd\n"));
    assert_non_null(strcasestr(f->last_headers, "x-amz-security-token: session-token-xyz\n"));
    assert_non_null(strcasestr(f->last_headers, "Content-Type: application/pdf\n"));
    assert_non_null(
        strcasestr(f->last_headers, "Authorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/"));
    assert_non_null(
        strcasestr(f->last_headers, "x-amz-security-token;x-amz-server-side-encryption;"));
    assert_null(strcasestr(f->last_headers, "Expect:"));
    assert_string_equal(f->last_url, "/bucket/a b/c+d.pdf"); /* MHD decodes the path */
    client_close(&k);

    client_open(&k, f, SSE_S3);
    assert_int_equal(s3_multipart_create(k.c, "big.bin", NULL, id, sizeof(id), &r, &err), 0);
    assert_string_equal(id, "up-1");
    assert_string_equal(f->last_method, "POST");
    assert_non_null(strstr(f->last_query, "uploads="));
    assert_non_null(strcasestr(f->last_headers, "x-amz-server-side-encryption: AES256\n"));
    assert_null(strcasestr(f->last_headers, "kms-key-id"));
    client_close(&k);
    fixture_stop(f);
}

/* ---- credentials ----------------------------------------------------------------------- */

struct refresh_wait {
    creds_provider *p;
    const char *first_key;
};

static bool key_changed(void *arg)
{
    struct refresh_wait *w = arg;
    struct creds *c = NULL;
    cut_err err = CUT_ERR_INIT;
    bool changed;

    if (creds_acquire(w->p, &c, &err) != 0)
        return false;
    changed = strcmp(c->access_key_id, w->first_key) != 0;
    creds_release(c);
    return changed;
}

static void clear_env(void)
{
    static const char *const v[] = {"AWS_ACCESS_KEY_ID",
                                    "AWS_SECRET_ACCESS_KEY",
                                    "AWS_SESSION_TOKEN",
                                    "AWS_ROLE_ARN",
                                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                                    "AWS_ENDPOINT_URL_STS",
                                    "AWS_STS_ENDPOINT_URL",
                                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                                    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                                    NULL};
    for (int i = 0; v[i]; i++)
        unsetenv(v[i]);
}

static void test_chain_order(void **state)
{
    struct cfg_s3 cfg = {0};
    creds_provider *p;
    cut_err err = CUT_ERR_INIT;

    (void)state;
    clear_env();
    cfg.region = "eu-west-1";
    assert_null(creds_provider_new(&cfg, &err));
    assert_non_null(strstr(err.msg, "no AWS credentials"));
    err_clear(&err);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.1.2.3/creds", 1);
    assert_null(creds_provider_new(&cfg, &err)); /* plain http to a remote host */
    err_clear(&err);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/creds", 1);
    p = creds_provider_new(&cfg, &err);
    assert_int_equal(creds_provider_source(p), CREDS_CONTAINER);
    creds_provider_free(p);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::1:role/r", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent", 1);
    p = creds_provider_new(&cfg, &err);
    assert_int_equal(creds_provider_source(p), CREDS_WEB_IDENTITY);
    creds_provider_free(p);
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    p = creds_provider_new(&cfg, &err);
    assert_int_equal(creds_provider_source(p), CREDS_ENV);
    creds_provider_free(p);
    cfg.access_key_id = "AKIDCFG";
    cfg.secret_access_key = "cfgsecret";
    p = creds_provider_new(&cfg, &err);
    assert_int_equal(creds_provider_source(p), CREDS_CONFIG);
    creds_provider_free(p);
    clear_env();
}

static void test_web_identity_refresh(void **state)
{
    struct fixture *f = fixture_start(M_STS);
    struct cfg_s3 cfg = {0};
    char *dir = test_tmpdir("sts"), *tokfile = xasprintf("%s/token", dir), ep[64], *cmd;
    creds_provider *p;
    struct creds *c = NULL;
    struct refresh_wait w;
    cut_err err = CUT_ERR_INIT;
    char first[64];

    (void)state;
    clear_env();
    assert_true(test_write_file(tokfile, "eyJhbGciOi.jwt-token\n", 21));
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", f->port);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/cutover", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", tokfile, 1);
    setenv("AWS_ENDPOINT_URL_STS", ep, 1);
    cfg.region = "eu-west-1";
    f->expires_in = 4;
    p = creds_provider_new(&cfg, &err);
    assert_non_null(p);
    creds_provider_set_refresh_margin(p, 2);
    if (creds_acquire(p, &c, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c->access_key_id, "ASIASTS1");
    assert_string_equal(c->session_token, "sts-token-1");
    assert_string_equal(c->secret_access_key, "sts-secret");
    assert_non_null(strstr(f->last_query, "Action=AssumeRoleWithWebIdentity\n"));
    assert_non_null(strstr(f->last_query, "WebIdentityToken=eyJhbGciOi.jwt-token\n"));
    assert_non_null(strstr(f->last_query, "RoleArn=arn:aws:iam::111122223333:role/cutover\n"));
    snprintf(first, sizeof(first), "%s", c->access_key_id);
    creds_release(c);
    /* still fresh: no new fetch */
    assert_int_equal(creds_acquire(p, &c, &err), 0);
    assert_string_equal(c->access_key_id, first);
    creds_release(c);
    assert_int_equal(requests(f), 1);
    /* within the margin of expiry: fetched again */
    w.p = p;
    w.first_key = first;
    assert_true(test_wait_until(key_changed, &w, 10000));
    assert_true(requests(f) >= 2);
    creds_provider_free(p);
    clear_env();
    cmd = xasprintf("rm -rf '%s'", dir);
    assert_int_equal(test_run(cmd, NULL), 0);
    free(cmd);
    free(tokfile);
    free(dir);
    fixture_stop(f);
}

struct hammer {
    creds_provider *p;
    int failures;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    uint64_t end = now_us() + 2500000;

    while (now_us() < end) {
        struct creds *c = NULL;
        cut_err err = CUT_ERR_INIT;
        if (creds_acquire(h->p, &c, &err) != 0 || strncmp(c->access_key_id, "ASIACT", 6) != 0)
            __atomic_add_fetch(&h->failures, 1, __ATOMIC_RELAXED);
        creds_release(c);
    }
    return NULL;
}

static void test_container_refresh_concurrent(void **state)
{
    struct fixture *f = fixture_start(M_CONTAINER);
    struct cfg_s3 cfg = {0};
    char *dir = test_tmpdir("ct"), *tokfile = xasprintf("%s/token", dir), uri[96], *cmd;
    creds_provider *p;
    struct creds *c = NULL;
    struct hammer h = {0};
    pthread_t th[8];
    cut_err err = CUT_ERR_INIT;
    int fetched;

    (void)state;
    clear_env();
    assert_true(test_write_file(tokfile, "pod-token-42\n", 13));
    snprintf(uri, sizeof(uri), "http://127.0.0.1:%d/v1/credentials", f->port);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokfile, 1);
    f->expires_in = 3;
    p = creds_provider_new(&cfg, &err);
    assert_non_null(p);
    creds_provider_set_refresh_margin(p, 2);
    if (creds_acquire(p, &c, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c->access_key_id, "ASIACT1");
    assert_string_equal(c->session_token, "ct-token-1");
    assert_string_equal(f->last_url, "/v1/credentials");
    creds_release(c);
    /* 8 threads for 2.5 s across at least two refresh points: every acquire succeeds and
     * the endpoint is asked about once per refresh, not once per thread */
    h.p = p;
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer_run, &h), 0);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    fetched = requests(f);
    assert_int_equal(h.failures, 0);
    assert_true(fetched >= 2);
    assert_true(fetched <= 6);
    creds_provider_free(p);

    /* a wrong token is refused with the endpoint's status, no secret in the message */
    assert_true(test_write_file(tokfile, "wrong\n", 6));
    p = creds_provider_new(&cfg, &err);
    assert_int_equal(creds_acquire(p, &c, &err), -1);
    assert_non_null(strstr(err.msg, "401"));
    creds_provider_free(p);
    clear_env();
    cmd = xasprintf("rm -rf '%s'", dir);
    assert_int_equal(test_run(cmd, NULL), 0);
    free(cmd);
    free(tokfile);
    free(dir);
    fixture_stop(f);
}

static void set_hold(struct fixture *f, bool hold)
{
    pthread_mutex_lock(&f->mu);
    f->hold = hold;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

struct nowait {
    s3_client *c;
    struct fixture *f;
    long n;
    int held;
    char url[4096];
};

static bool held_one(void *arg)
{
    struct nowait *w = arg;
    pthread_mutex_lock(&w->f->mu);
    w->held = w->f->held;
    pthread_mutex_unlock(&w->f->mu);
    return w->held == 1;
}

static bool signs_with(void *arg, const char *token)
{
    struct nowait *w = arg;
    cut_err err = CUT_ERR_INIT;
    w->n = s3_presign_nowait(w->c, "GET", "doc.pdf", 60, 0, w->url, sizeof(w->url), &err);
    return w->n > 0 && strstr(w->url, token) != NULL;
}
static bool signs_with_1(void *arg)
{
    return signs_with(arg, "X-Amz-Security-Token=ct-token-1");
}
static bool signs_with_2(void *arg)
{
    return signs_with(arg, "X-Amz-Security-Token=ct-token-2");
}

/* The event loop's presign never waits for the credentials endpoint: with the endpoint
 * holding its answer, s3_presign_nowait() returns S3_NO_CREDS at once (a blocking presign
 * would sit in the fetch until its 10 s timeout and fail with another error), the refresher
 * asks once in the background (not once per presign), and once the answer comes presigning
 * works; a set within the refresh margin keeps signing while the next fetch hangs. */
static void test_presign_nowait_endpoint_hangs(void **state)
{
    struct fixture *f = fixture_start(M_CONTAINER);
    struct cfg_s3 cfg = {0};
    char *dir = test_tmpdir("ctnw"), *tokfile = xasprintf("%s/token", dir), uri[96], *cmd;
    creds_provider *p;
    struct nowait w = {0};
    cut_err err = CUT_ERR_INIT;
    char ep[64];

    (void)state;
    clear_env();
    assert_true(test_write_file(tokfile, "pod-token-42\n", 13));
    snprintf(uri, sizeof(uri), "http://127.0.0.1:%d/v1/credentials", f->port);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokfile, 1);
    p = creds_provider_new(&cfg, &err);
    assert_non_null(p);
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", f->port);
    cfg.endpoint = ep;
    cfg.region = "eu-west-1";
    cfg.bucket = "bucket";
    cfg.path_style = true;
    cfg.max_attempts = 1;
    cfg.timeout_s = 10;
    w.c = s3_client_new(&cfg, p, &err);
    assert_non_null(w.c);
    w.f = f;
    set_hold(f, true);

    /* no credentials yet: refused at once, the fetch runs in the background */
    assert_int_equal(s3_presign_nowait(w.c, "GET", "doc.pdf", 60, 0, w.url, sizeof(w.url), &err),
                     S3_NO_CREDS);
    assert_true(err_isset(&err));
    assert_null(strstr(err.msg, "ct-"));
    if (!test_wait_until(held_one, &w, 10000))
        fail_msg("the refresher never asked the endpoint (%d held)", w.held);
    for (int i = 0; i < 100; i++) {
        cut_err e2 = CUT_ERR_INIT;
        assert_int_equal(s3_presign_nowait(w.c, "GET", "doc.pdf", 60, 0, w.url, sizeof(w.url), &e2),
                         S3_NO_CREDS);
    }
    assert_int_equal(requests(f), 1); /* one fetch in flight, not one per presign */

    set_hold(f, false);
    if (!test_wait_until(signs_with_1, &w, 10000))
        fail_msg("never presigned with the fetched set");

    /* the set is now within the margin: presigning goes on with it while the refresh hangs */
    set_hold(f, true);
    creds_provider_set_refresh_margin(p, 3650); /* the set lives 3600 s */
    assert_true(signs_with_1(&w));              /* also wakes the refresher */
    if (!test_wait_until(held_one, &w, 10000))
        fail_msg("the refresher did not refresh ahead of expiry");
    creds_provider_set_refresh_margin(p, 300); /* so that the next set is not refreshed */
    for (int i = 0; i < 10; i++)
        assert_true(signs_with_1(&w));
    set_hold(f, false);
    if (!test_wait_until(signs_with_2, &w, 10000))
        fail_msg("never presigned with the refreshed set");
    assert_int_equal(requests(f), 2);

    s3_client_free(w.c);
    creds_provider_free(p);
    clear_env();
    cmd = xasprintf("rm -rf '%s'", dir);
    assert_int_equal(test_run(cmd, NULL), 0);
    free(cmd);
    free(tokfile);
    free(dir);
    fixture_stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slowdown_twice_then_ok),
        cmocka_unit_test(test_forbidden_not_retried),
        cmocka_unit_test(test_500_bounded),
        cmocka_unit_test(test_connection_refused_retried),
        cmocka_unit_test(test_put_headers),
        cmocka_unit_test(test_chain_order),
        cmocka_unit_test(test_web_identity_refresh),
        cmocka_unit_test(test_container_refresh_concurrent),
        cmocka_unit_test(test_presign_nowait_endpoint_hangs),
    };

    log_set_level(LOG_ERROR);
    return cmocka_run_group_tests_name("s3_fixture", tests, NULL, NULL);
}
