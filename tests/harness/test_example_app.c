/*
 * The example application (examples/app/server.js) behaves as the tests and the demo expect:
 * uploads (raw and multipart) land in its legacy store under realistic keys, signed URLs are
 * refused to unknown or denied users and checked for signature and expiry, the altered switch
 * changes what the delivery URL serves but never the raw original, hostile keys round-trip
 * through every endpoint, and the control API does what it says.
 *
 * The test starts its own instance on a free port in a temporary directory (it does not use
 * the shared services) and drives it with libcurl through testlib.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/testlib.h"

#define SECRET "test-secret-ünï"
#define RAW_TOKEN "raw-token-123"
#define MAX_BODY (4 * 1024 * 1024)
#define BOUNDARY "----cutoverTestBoundary7MA4YWxkTrZu0gW"

static struct {
    pid_t pid;
    char base[64];
    char *dir;
    char data[600];
    char log[600];
    const char *script;
} app;

/* ---------- utilities ---------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

/* Percent-encodes everything but unreserved characters (and '/' when keep_slash). */
static char *pct(const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1), *o = out;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~' || (keep_slash && *p == '/')) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* Percent-decodes n bytes of s (no '+' rule). */
static char *unpct(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;

    for (size_t i = 0; i < n; i++) {
        unsigned int v;
        if (s[i] == '%' && i + 2 < n && sscanf(s + i + 1, "%2x", &v) == 1) {
            *o++ = (char)v;
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

static void hex_of(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void digest_hex(const char *alg, const void *data, size_t len, char out[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    assert_int_equal(EVP_Digest(data, len, d, &n, EVP_get_digestbyname(alg), NULL), 1);
    hex_of(d, n, out);
}

static void expected_sig(const char *key, const char *expires, char out[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    char *msg = xasprintf("%s\n%s", key, expires);

    assert_non_null(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)msg,
                         strlen(msg), d, &n));
    hex_of(d, n, out);
    free(msg);
}

/* ---------- HTTP against the app ---------- */

/* One exchange; target is a path on the app or an absolute URL. Fails the test when no
 * answer came at all. */
static void req(struct test_http *r, const char *method, const char *target,
                const char *const headers[], const void *body, size_t len)
{
    char *url =
        strncmp(target, "http", 4) == 0 ? strdup(target) : xasprintf("%s%s", app.base, target);

    test_http(method, url, headers, body, len, r);
    if (r->status == 0) {
        print_error("%s %s: no answer: %s\n", method, url, r->errbuf);
        free(url);
        fail();
    }
    free(url);
}

#define EXPECT_STATUS(r, code) expect_status_at(&(r), (code), __FILE__, __LINE__)
static void expect_status_at(const struct test_http *r, long code, const char *file, int line)
{
    if (r->status != code) {
        print_error("status %ld, expected %ld; body: %.400s\n", r->status, code,
                    r->body ? r->body : "");
        _fail(file, line);
    }
}

/* The answer's body as JSON (new reference). */
static json_t *jbody(const struct test_http *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body, r->body_len, 0, &e);

    if (j == NULL) {
        print_error("answer is not JSON (%s): %.300s\n", e.text, r->body);
        fail();
    }
    return j;
}

static const char *jstr(json_t *j, const char *name)
{
    json_t *v = json_object_get(j, name);
    if (!json_is_string(v)) {
        print_error("JSON field %s missing or not a string\n", name);
        fail();
    }
    return json_string_value(v);
}

/* Checks a 4xx answer carries {"error": "..."} mentioning want (when not NULL). */
static void expect_error(const struct test_http *r, long code, const char *want)
{
    json_t *j;

    EXPECT_STATUS(*r, code);
    j = jbody(r);
    if (want && strstr(jstr(j, "error"), want) == NULL) {
        print_error("error \"%s\" does not mention \"%s\"\n", jstr(j, "error"), want);
        fail();
    }
    json_decref(j);
}

/* ---------- the app process ---------- */

static bool app_start(void)
{
    char listen[64];
    int port = test_free_port();
    char *argv[] = {"node",       (char *)app.script, "--listen", listen,        "--data",
                    app.data,     "--secret",         SECRET,     "--raw-token", RAW_TOKEN,
                    "--max-body", "4194304",          NULL};
    char health[128];

    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    snprintf(app.base, sizeof(app.base), "http://127.0.0.1:%d", port);
    snprintf(health, sizeof(health), "%s/health", app.base);
    app.pid = test_spawn(argv, NULL, app.log);
    if (!test_wait_http(health, 20000)) {
        char *log = test_read_file(app.log, NULL);
        fprintf(stderr, "example app did not answer on %s; its log:\n%s\n", app.base,
                log ? log : "(none)");
        free(log);
        test_stop(app.pid, SIGKILL, 2000);
        app.pid = 0;
        return false;
    }
    return true;
}

static void app_stop(void)
{
    if (app.pid > 0) {
        int st = test_stop(app.pid, SIGTERM, 5000);
        app.pid = 0;
        assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
}

static int group_setup(void **state)
{
    (void)state;
    app.script = xasprintf("%s/examples/app/server.js", testenv_var("CUTOVER_SOURCE_DIR"));
    app.dir = test_tmpdir("example-app");
    snprintf(app.data, sizeof(app.data), "%s/store", app.dir);
    snprintf(app.log, sizeof(app.log), "%s/app.log", app.dir);
    return app_start() ? 0 : -1;
}

static int group_teardown(void **state)
{
    char *cmd;

    (void)state;
    if (app.pid > 0)
        test_stop(app.pid, SIGTERM, 5000);
    cmd = xasprintf("rm -rf '%s'", app.dir);
    test_run(cmd, NULL);
    free(cmd);
    return 0;
}

/* Puts the control state back (altered, deny list, delays, clock, stats). */
static int reset_control(void **state)
{
    struct test_http r;

    (void)state;
    req(&r, "POST", "/_control/reset", NULL, "{}", 2);
    EXPECT_STATUS(r, 200);
    test_http_free(&r);
    return 0;
}

static void control(const char *name, const char *json)
{
    struct test_http r;
    char *path = xasprintf("/_control/%s", name);

    req(&r, "POST", path, NULL, json, strlen(json));
    if (r.status != 200 && r.status != 201) {
        print_error("control %s %s: %ld %s\n", name, json, r.status, r.body);
        fail();
    }
    test_http_free(&r);
    free(path);
}

/* ---------- uploads ---------- */

/* Raw-body upload; fixed_key NULL lets the app derive the key from ?filename=. Returns the
 * storage key (new string) and checks size and checksums in the answer. */
static char *upload_raw(const char *org, const char *fixed_key, const char *filename,
                        const void *data, size_t len)
{
    struct test_http r;
    char *h_org = xasprintf("X-Org-Id: %s", org);
    char *enc = fixed_key ? pct(fixed_key, false) : NULL;
    char *h_key = enc ? xasprintf("X-Storage-Key: %s", enc) : NULL;
    const char *headers[] = {h_org, "Content-Type: application/pdf", h_key, NULL};
    char *fn = filename ? pct(filename, false) : NULL;
    char *path = fn ? xasprintf("/documents?filename=%s", fn) : strdup("/documents");
    char md5[65], sha[65];
    json_t *j;
    char *key;

    req(&r, "POST", path, headers, data, len);
    EXPECT_STATUS(r, 201);
    j = jbody(&r);
    key = strdup(jstr(j, "storage_key"));
    digest_hex("MD5", data, len, md5);
    digest_hex("SHA256", data, len, sha);
    assert_int_equal(json_integer_value(json_object_get(j, "size")), (json_int_t)len);
    assert_string_equal(jstr(j, "md5"), md5);
    assert_string_equal(jstr(j, "sha256"), sha);
    if (fixed_key)
        assert_string_equal(key, fixed_key);
    json_decref(j);
    test_http_free(&r);
    free(path);
    free(fn);
    free(h_key);
    free(enc);
    free(h_org);
    return key;
}

/* A multipart body: fields patient_id (when not NULL), note, storage_key (when not NULL),
 * then the file part. New buffer, length in *len. */
static char *multipart_body(const char *patient, const char *fixed_key, const char *filename,
                            const char *ctype, const void *data, size_t dlen, size_t *len)
{
    char *head = xasprintf("preamble is ignored\r\n"
                           "%s%s%s%s%s"
                           "--" BOUNDARY "\r\n"
                           "Content-Disposition: form-data; name=\"note\"\r\n\r\n"
                           "kept, not used\r\n"
                           "%s%s%s"
                           "--" BOUNDARY "\r\n"
                           "Content-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                           "Content-Type: %s\r\n\r\n",
                           patient ? "--" BOUNDARY "\r\n" : "",
                           patient ? "Content-Disposition: form-data; name=\"patient_id\"\r\n" : "",
                           patient ? "\r\n" : "", patient ? patient : "", patient ? "\r\n" : "",
                           fixed_key ? "--" BOUNDARY "\r\nContent-Disposition: form-data; "
                                       "name=\"storage_key\"\r\n\r\n"
                                     : "",
                           fixed_key ? fixed_key : "", fixed_key ? "\r\n" : "", filename, ctype);
    const char *tail = "\r\n--" BOUNDARY "--\r\nepilogue is ignored";
    size_t hl = strlen(head), tl = strlen(tail);
    char *body = malloc(hl + dlen + tl);

    memcpy(body, head, hl);
    memcpy(body + hl, data, dlen);
    memcpy(body + hl + dlen, tail, tl);
    *len = hl + dlen + tl;
    free(head);
    return body;
}

static char *upload_multipart(const char *org, const char *patient, const char *fixed_key,
                              const char *filename, const void *data, size_t dlen)
{
    struct test_http r;
    char *h_org = xasprintf("X-Org-Id: %s", org);
    const char *headers[] = {h_org, "Content-Type: multipart/form-data; boundary=" BOUNDARY, NULL};
    size_t len;
    char *body = multipart_body(patient, fixed_key, filename, "image/png", data, dlen, &len);
    char sha[65];
    json_t *j;
    char *key;

    req(&r, "POST", "/documents", headers, body, len);
    EXPECT_STATUS(r, 201);
    j = jbody(&r);
    key = strdup(jstr(j, "storage_key"));
    digest_hex("SHA256", data, dlen, sha);
    assert_string_equal(jstr(j, "sha256"), sha);
    assert_int_equal(json_integer_value(json_object_get(j, "size")), (json_int_t)dlen);
    if (fixed_key)
        assert_string_equal(key, fixed_key);
    json_decref(j);
    test_http_free(&r);
    free(body);
    free(h_org);
    return key;
}

/* ---------- reads ---------- */

/* GET /documents/{key}/url as user; returns the signed URL (new string). */
static char *signed_url(const char *key, const char *user)
{
    struct test_http r;
    char *enc = pct(key, false);
    char *path = xasprintf("/documents/%s/url", enc);
    char *h_user = xasprintf("X-User-Id: %s", user);
    const char *headers[] = {h_user, NULL};
    json_t *j;
    char *url;

    req(&r, "GET", path, headers, NULL, 0);
    EXPECT_STATUS(r, 200);
    j = jbody(&r);
    url = strdup(jstr(j, "url"));
    assert_true(json_integer_value(json_object_get(j, "expires_at")) > (json_int_t)time(NULL));
    json_decref(j);
    test_http_free(&r);
    free(h_user);
    free(path);
    free(enc);
    return url;
}

/* Fetches url and checks the body is exactly data. */
static void expect_bytes(const char *url, const char *const headers[], const void *data, size_t len)
{
    struct test_http r;

    req(&r, "GET", url, headers, NULL, 0);
    EXPECT_STATUS(r, 200);
    if (r.body_len != len || memcmp(r.body, data, len) != 0) {
        print_error("GET %s: %zu bytes differ from the %zu uploaded\n", url, r.body_len, len);
        fail();
    }
    test_http_free(&r);
}

static const char *const RAW_AUTH[] = {"Authorization: Bearer " RAW_TOKEN, NULL};

/* The raw URL of key, with '/' kept as separators or encoded as %2F. */
static char *raw_path(const char *key, bool keep_slash)
{
    char *enc = pct(key, keep_slash);
    char *p = xasprintf("/legacy/raw/%s", enc);
    free(enc);
    return p;
}

static json_t *list_documents(void)
{
    struct test_http r;
    json_t *j;

    req(&r, "GET", "/documents", NULL, NULL, 0);
    EXPECT_STATUS(r, 200);
    j = jbody(&r);
    assert_true(json_is_array(j));
    test_http_free(&r);
    return j;
}

/* The listed entry of key (borrowed from list) or NULL. */
static json_t *find_listed(json_t *list, const char *key)
{
    size_t i;
    json_t *e;

    json_array_foreach(list, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "key")), key) == 0)
            return e;
    }
    return NULL;
}

/* The documents.jsonl line object for key (new reference) or NULL; checks every line. */
static json_t *jsonl_entry(const char *key)
{
    char *path = xasprintf("%s/documents.jsonl", app.data);
    char *text = test_read_file(path, NULL);
    json_t *found = NULL;

    assert_non_null(text);
    for (char *line = text, *nl; *line; line = nl + 1) {
        json_error_t e;
        json_t *j;
        nl = strchr(line, '\n');
        assert_non_null(nl); /* every line ends with a newline */
        j = json_loadb(line, (size_t)(nl - line), 0, &e);
        assert_non_null(j);
        assert_int_equal(json_object_size(j), 3); /* key, org, patient */
        if (strcmp(json_string_value(json_object_get(j, "key")), key) == 0 && found == NULL)
            found = json_incref(j);
        json_decref(j);
    }
    free(text);
    free(path);
    return found;
}

/* ---------- tests ---------- */

static void test_health(void **state)
{
    struct test_http r;
    json_t *j;

    (void)state;
    req(&r, "GET", "/health", NULL, NULL, 0);
    EXPECT_STATUS(r, 200);
    j = jbody(&r);
    assert_true(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
    test_http_free(&r);
}

static void test_upload_raw(void **state)
{
    static const char data[] = "%PDF-1.4 raw upload\n";
    const char *headers[] = {"Content-Type: application/pdf", NULL};
    struct test_http r;
    char *key, *raw;
    json_t *list, *e;

    (void)state;
    /* no X-Org-Id: refused before anything is stored */
    req(&r, "POST", "/documents?filename=a.pdf", headers, data, sizeof(data) - 1);
    expect_error(&r, 400, "X-Org-Id");
    test_http_free(&r);

    key = upload_raw("acme", NULL, "lab report (final)+v2 é.pdf", data, sizeof(data) - 1);
    /* <org>/<16 hex>/<filename verbatim> */
    assert_int_equal(strncmp(key, "acme/", 5), 0);
    assert_int_equal(strspn(key + 5, "0123456789abcdef"), 16);
    assert_string_equal(key + 21, "/lab report (final)+v2 é.pdf");

    raw = raw_path(key, false);
    expect_bytes(raw, RAW_AUTH, data, sizeof(data) - 1);
    req(&r, "GET", raw, RAW_AUTH, NULL, 0);
    assert_non_null(strstr(r.headers, "application/pdf"));
    test_http_free(&r);

    list = list_documents();
    e = find_listed(list, key);
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "org")), "acme");
    json_decref(list);

    /* no filename at all: a default name, still under the org */
    free(key);
    key = upload_raw("acme", NULL, NULL, "x", 1);
    assert_int_equal(strncmp(key, "acme/", 5), 0);
    assert_string_equal(key + 21, "/document");
    free(key);
    free(raw);
}

static void test_upload_multipart(void **state)
{
    static const char data[] = "\x89PNG\r\n\x1a\n multipart body\r\n--not-the-boundary\r\n";
    const char *fname = "scan 01 (copy) + notes 'ü' 文件.png";
    char *key, *raw;
    json_t *line;
    struct test_http r;

    (void)state;
    key = upload_multipart("org-7", "patient-42", NULL, fname, data, sizeof(data) - 1);
    assert_int_equal(strncmp(key, "org-7/", 6), 0);
    assert_int_equal(strspn(key + 6, "0123456789abcdef"), 16);
    assert_int_equal(key[22], '/');
    assert_string_equal(key + 23, fname);

    raw = raw_path(key, true);
    expect_bytes(raw, RAW_AUTH, data, sizeof(data) - 1);
    req(&r, "GET", raw, RAW_AUTH, NULL, 0);
    assert_non_null(strstr(r.headers, "image/png"));
    test_http_free(&r);

    line = jsonl_entry(key);
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "org")), "org-7");
    assert_string_equal(json_string_value(json_object_get(line, "patient")), "patient-42");
    json_decref(line);
    free(raw);
    free(key);
}

static void test_signed_url(void **state)
{
    static const char data[] = "signed delivery";
    const char *no_user[] = {NULL};
    const char *alice[] = {"X-User-Id: alice", NULL};
    const char *mallory[] = {"X-User-Id: mallory", NULL};
    struct test_http r;
    char *key, *url, *enc, *path, *bad, *other_url;
    char sig[65], past[32];
    const char *q, *e, *s;
    char *decoded;

    (void)state;
    key = upload_raw("acme", "acme/signed/plain.pdf", NULL, data, sizeof(data) - 1);
    enc = pct(key, false);
    path = xasprintf("/documents/%s/url", enc);

    req(&r, "GET", path, no_user, NULL, 0);
    expect_error(&r, 401, "X-User-Id");
    test_http_free(&r);

    control("deny", "{\"user\": \"mallory\"}");
    req(&r, "GET", path, mallory, NULL, 0);
    expect_error(&r, 403, "mallory");
    test_http_free(&r);
    control("deny", "{\"user\": \"mallory\", \"denied\": false}");
    req(&r, "GET", path, mallory, NULL, 0);
    EXPECT_STATUS(r, 200);
    test_http_free(&r);

    req(&r, "GET", "/documents/acme%2Fno-such.pdf/url", alice, NULL, 0);
    expect_error(&r, 404, NULL);
    test_http_free(&r);
    req(&r, "GET", "/documents/acme%2Fsigned%2Fplain.pdf/url?expires_in=0", alice, NULL, 0);
    expect_error(&r, 400, "expires_in");
    test_http_free(&r);

    /* the URL is <base>/legacy/delivery/<key>?expires=E&sig=HMAC-SHA256(secret, key\nE) */
    url = signed_url(key, "alice");
    assert_int_equal(strncmp(url, app.base, strlen(app.base)), 0);
    s = url + strlen(app.base);
    assert_int_equal(strncmp(s, "/legacy/delivery/", 17), 0);
    q = strchr(s, '?');
    assert_non_null(q);
    decoded = unpct(s + 17, (size_t)(q - s - 17));
    assert_string_equal(decoded, key);
    free(decoded);
    assert_int_equal(strncmp(q, "?expires=", 9), 0);
    e = strstr(q, "&sig=");
    assert_non_null(e);
    {
        char *expires = strndup(q + 9, (size_t)(e - q - 9));
        expected_sig(key, expires, sig);
        assert_string_equal(e + 5, sig);
        free(expires);
    }
    expect_bytes(url, NULL, data, sizeof(data) - 1);

    /* a wrong signature, no signature, another key's signature: 403 */
    bad = strdup(url);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == '0' ? '1' : '0';
    req(&r, "GET", bad, NULL, NULL, 0);
    expect_error(&r, 403, "signature");
    test_http_free(&r);
    free(bad);
    bad = strndup(url, (size_t)(q - url));
    req(&r, "GET", bad, NULL, NULL, 0);
    expect_error(&r, 403, NULL);
    test_http_free(&r);
    free(bad);
    free(upload_raw("acme", "acme/signed/other.pdf", NULL, "other", 5));
    other_url = signed_url("acme/signed/other.pdf", "alice");
    bad = xasprintf("%.*s%s", (int)(q - url), url, strchr(other_url, '?'));
    req(&r, "GET", bad, NULL, NULL, 0);
    expect_error(&r, 403, "signature");
    test_http_free(&r);
    free(bad);

    /* correctly signed but expired */
    snprintf(past, sizeof(past), "%lld", (long long)time(NULL) - 10);
    expected_sig(key, past, sig);
    bad = xasprintf("%.*s?expires=%s&sig=%s", (int)(q - url), url, past, sig);
    req(&r, "GET", bad, NULL, NULL, 0);
    expect_error(&r, 403, "expired");
    test_http_free(&r);
    free(bad);

    /* the app's clock moved past the expiry: the issued URL stops working, then works again */
    control("clock", "{\"offset_s\": 7200}");
    req(&r, "GET", url, NULL, NULL, 0);
    expect_error(&r, 403, "expired");
    test_http_free(&r);
    control("clock", "{\"offset_s\": 0}");
    expect_bytes(url, NULL, data, sizeof(data) - 1);

    free(other_url);
    free(url);
    free(path);
    free(enc);
    free(key);
}

static void test_redirect(void **state)
{
    static const char data[] = "redirected bytes";
    const char *alice[] = {"X-User-Id: alice", NULL};
    struct test_http r;
    char *key, *enc, *path, *loc;

    (void)state;
    key = upload_raw("acme", "acme/redirect/doc one.pdf", NULL, data, sizeof(data) - 1);
    enc = pct(key, false);
    path = xasprintf("/documents/%s/redirect", enc);

    req(&r, "GET", path, NULL, NULL, 0);
    expect_error(&r, 401, NULL);
    test_http_free(&r);
    control("deny", "{\"user\": \"alice\"}");
    req(&r, "GET", path, alice, NULL, 0);
    expect_error(&r, 403, NULL);
    test_http_free(&r);
    control("deny", "{\"user\": \"alice\", \"denied\": false}");

    req(&r, "GET", path, alice, NULL, 0);
    EXPECT_STATUS(r, 302);
    loc = test_http_header(&r, "Location");
    assert_non_null(loc);
    assert_int_equal(strncmp(loc, app.base, strlen(app.base)), 0);
    assert_non_null(strstr(loc, "/legacy/delivery/acme/redirect/doc%20one.pdf?expires="));
    assert_non_null(strstr(loc, "&sig="));
    test_http_free(&r);
    expect_bytes(loc, NULL, data, sizeof(data) - 1);

    free(loc);
    free(path);
    free(enc);
    free(key);
}

static void test_altered(void **state)
{
    char data[3000];
    struct test_http r;
    char *key, *url, *raw, *json;

    (void)state;
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + i % 26);
    key = upload_raw("acme", "acme/altered/photo.jpg", NULL, data, sizeof(data));
    url = signed_url(key, "bob");
    raw = raw_path(key, false);

    /* append: the delivery URL serves more bytes than were stored */
    json = xasprintf("{\"key\": \"%s\", \"altered\": true}", key);
    control("alter", json);
    free(json);
    req(&r, "GET", url, NULL, NULL, 0);
    EXPECT_STATUS(r, 200);
    assert_true(r.body_len > sizeof(data));
    assert_memory_equal(r.body, data, sizeof(data));
    test_http_free(&r);
    expect_bytes(raw, RAW_AUTH, data, sizeof(data));

    /* flip: same length, different bytes */
    json = xasprintf("{\"key\": \"%s\", \"altered\": true, \"mode\": \"flip\"}", key);
    control("alter", json);
    free(json);
    req(&r, "GET", url, NULL, NULL, 0);
    EXPECT_STATUS(r, 200);
    assert_int_equal(r.body_len, sizeof(data));
    assert_memory_not_equal(r.body, data, sizeof(data));
    test_http_free(&r);
    expect_bytes(raw, RAW_AUTH, data, sizeof(data));

    /* off again: the original bytes */
    json = xasprintf("{\"key\": \"%s\", \"altered\": false}", key);
    control("alter", json);
    free(json);
    expect_bytes(url, NULL, data, sizeof(data));

    /* refusals of the switch itself */
    req(&r, "POST", "/_control/alter", NULL, "{\"key\": \"acme/none\"}", 20);
    expect_error(&r, 404, NULL);
    test_http_free(&r);
    req(&r, "POST", "/_control/alter", NULL, "{\"key\": 5}", 10);
    expect_error(&r, 400, NULL);
    test_http_free(&r);

    free(raw);
    free(url);
    free(key);
}

static void test_raw_token(void **state)
{
    const char *wrong[] = {"Authorization: Bearer nope", NULL};
    const char *bare[] = {"Authorization: " RAW_TOKEN, NULL};
    struct test_http r;
    char *key, *raw, *len;

    (void)state;
    key = upload_raw("acme", "acme/raw/token.bin", NULL, "0123456789", 10);
    raw = raw_path(key, true);
    req(&r, "GET", raw, NULL, NULL, 0);
    expect_error(&r, 401, NULL);
    test_http_free(&r);
    req(&r, "GET", raw, wrong, NULL, 0);
    expect_error(&r, 401, NULL);
    test_http_free(&r);
    expect_bytes(raw, bare, "0123456789", 10);
    expect_bytes(raw, RAW_AUTH, "0123456789", 10);
    req(&r, "HEAD", raw, RAW_AUTH, NULL, 0);
    EXPECT_STATUS(r, 200);
    len = test_http_header(&r, "Content-Length");
    assert_string_equal(len, "10");
    free(len);
    test_http_free(&r);
    free(raw);
    free(key);
}

/* Keys that broke URL signing in the story: spaces, unicode, '+', '%', '#', '?', dots. */
static const char *const HOSTILE_KEYS[] = {
    "acme/with space/and  two.pdf",
    "acme/ünïcødé/文件 名.pdf",
    "acme/emoji 😀/x.png",
    "acme/a+b=c&d;e,f.pdf",
    "acme/100% sure/%41%2F%zz.pdf",
    "acme/#hash?query=1&x#y.pdf",
    "acme/it's (1) [2] {3} !*@$.pdf",
    "acme/../etc/passwd",
    "acme/./dot/../dots...",
    "acme//double//slash/",
    "acme/tilde~back\\slash\"quote<>|^`.pdf",
    " leading and trailing space ",
    "no-slash-at-all",
};

static void test_hostile_keys(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(HOSTILE_KEYS) / sizeof(HOSTILE_KEYS[0]); i++) {
        const char *want = HOSTILE_KEYS[i];
        char data[64], *key, *url, *raw, *raw_slash, *enc, *path, *loc;
        const char *user[] = {"X-User-Id: carol", NULL};
        struct test_http r;
        json_t *list, *line;
        int n = snprintf(data, sizeof(data), "document %zu\r\n----cutoverTest", i);

        /* half through the header, half through the multipart field */
        if (i % 2 == 0)
            key = upload_raw("acme", want, NULL, data, (size_t)n);
        else
            key = upload_multipart("acme", "p1", want, "ignored.pdf", data, (size_t)n);
        assert_string_equal(key, want);

        url = signed_url(key, "carol");
        expect_bytes(url, NULL, data, (size_t)n);

        enc = pct(key, false);
        path = xasprintf("/documents/%s/redirect", enc);
        req(&r, "GET", path, user, NULL, 0);
        EXPECT_STATUS(r, 302);
        loc = test_http_header(&r, "Location");
        test_http_free(&r);
        expect_bytes(loc, NULL, data, (size_t)n);
        free(loc);
        free(path);

        raw = raw_path(key, false);
        raw_slash = raw_path(key, true);
        expect_bytes(raw, RAW_AUTH, data, (size_t)n);
        expect_bytes(raw_slash, RAW_AUTH, data, (size_t)n);

        list = list_documents();
        assert_non_null(find_listed(list, key));
        json_decref(list);
        line = jsonl_entry(key);
        assert_non_null(line);
        json_decref(line);

        path = xasprintf("/documents/%s", enc);
        req(&r, "DELETE", path, NULL, NULL, 0);
        EXPECT_STATUS(r, 204);
        test_http_free(&r);
        req(&r, "DELETE", path, NULL, NULL, 0);
        expect_error(&r, 404, NULL);
        test_http_free(&r);
        req(&r, "GET", raw, RAW_AUTH, NULL, 0);
        expect_error(&r, 404, NULL);
        test_http_free(&r);
        req(&r, "GET", url, NULL, NULL, 0);
        expect_error(&r, 404, NULL);
        test_http_free(&r);
        free(path);
        path = xasprintf("/documents/%s/url", enc);
        req(&r, "GET", path, user, NULL, 0);
        expect_error(&r, 404, NULL);
        test_http_free(&r);

        list = list_documents();
        assert_null(find_listed(list, key));
        json_decref(list);
        assert_null(jsonl_entry(key));

        free(path);
        free(enc);
        free(raw_slash);
        free(raw);
        free(url);
        free(key);
    }
}

static void test_overwrite_fixed_key(void **state)
{
    char *key;
    json_t *list;
    size_t i, count = 0;
    json_t *e;

    (void)state;
    key = upload_raw("acme", "acme/fixed/twice.txt", NULL, "first", 5);
    free(key);
    key = upload_raw("acme", "acme/fixed/twice.txt", NULL, "second!", 7);
    expect_bytes("/legacy/raw/acme/fixed/twice.txt", RAW_AUTH, "second!", 7);
    list = list_documents();
    json_array_foreach(list, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "key")), key) == 0)
            count++;
    }
    assert_int_equal(count, 1);
    json_decref(list);
    free(key);
}

static void test_seed(void **state)
{
    struct test_http r;
    json_t *j, *list, *e, *line;
    size_t i, n = 0;
    const char *seed = "{\"count\": 5, \"size\": 1000, \"org\": \"seedorg\", "
                       "\"prefix\": \"seedorg/batch-\"}";

    (void)state;
    req(&r, "POST", "/_control/seed", NULL, seed, strlen(seed));
    EXPECT_STATUS(r, 201);
    j = jbody(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "created")), 5);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "keys"), 0)),
                        "seedorg/batch-000000.bin");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "keys"), 4)),
                        "seedorg/batch-000004.bin");
    json_decref(j);
    test_http_free(&r);

    req(&r, "GET", "/documents?org=seedorg", NULL, NULL, 0);
    EXPECT_STATUS(r, 200);
    list = jbody(&r);
    test_http_free(&r);
    json_array_foreach(list, i, e)
    {
        assert_string_equal(json_string_value(json_object_get(e, "org")), "seedorg");
        assert_int_equal(json_integer_value(json_object_get(e, "size")), 1000);
        assert_true(json_is_string(json_object_get(e, "patient")));
        n++;
    }
    assert_int_equal(n, 5);
    json_decref(list);

    req(&r, "GET", "/legacy/raw/seedorg%2Fbatch-000003.bin", RAW_AUTH, NULL, 0);
    EXPECT_STATUS(r, 200);
    assert_int_equal(r.body_len, 1000);
    test_http_free(&r);
    line = jsonl_entry("seedorg/batch-000003.bin");
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "org")), "seedorg");
    json_decref(line);

    req(&r, "POST", "/_control/seed", NULL, "{\"count\": -1}", 13);
    expect_error(&r, 400, "count");
    test_http_free(&r);
}

static void test_delay(void **state)
{
    struct test_http r;
    uint64_t t0;

    (void)state;
    control("delay", "{\"ms\": 300}");
    t0 = now_ms();
    req(&r, "GET", "/health", NULL, NULL, 0);
    EXPECT_STATUS(r, 200);
    test_http_free(&r);
    assert_true(now_ms() - t0 >= 290);

    /* a delay for one route only */
    control("delay", "{\"ms\": 0}");
    control("delay", "{\"ms\": 300, \"route\": \"list\"}");
    t0 = now_ms();
    req(&r, "GET", "/documents", NULL, NULL, 0);
    EXPECT_STATUS(r, 200);
    test_http_free(&r);
    assert_true(now_ms() - t0 >= 290);

    req(&r, "POST", "/_control/delay", NULL, "{\"ms\": \"slow\"}", 14);
    expect_error(&r, 400, "ms");
    test_http_free(&r);
}

static long stat_of(json_t *stats, const char *group, const char *route, const char *status)
{
    json_t *v = json_object_get(json_object_get(stats, group), route);
    if (status)
        v = json_object_get(v, status);
    return v ? (long)json_integer_value(v) : 0;
}

static json_t *get_stats(void)
{
    struct test_http r;
    json_t *j;

    req(&r, "GET", "/_control/stats", NULL, NULL, 0);
    EXPECT_STATUS(r, 200);
    j = jbody(&r);
    test_http_free(&r);
    return j;
}

static void test_stats(void **state)
{
    const char *dave[] = {"X-User-Id: dave", NULL};
    struct test_http r;
    json_t *s;
    char *key, *url;

    (void)state;
    key = upload_raw("acme", "acme/stats/s.txt", NULL, "s", 1);
    s = get_stats();
    assert_int_equal(stat_of(s, "routes", "upload", NULL), 1);
    assert_int_equal(stat_of(s, "status", "upload", "201"), 1);
    json_decref(s);

    url = signed_url(key, "dave");
    req(&r, "GET", "/documents/acme%2Fstats%2Fs.txt/url", NULL, NULL, 0);
    test_http_free(&r);
    req(&r, "GET", "/documents/acme%2Fstats%2Fs.txt/redirect", dave, NULL, 0);
    test_http_free(&r);
    expect_bytes(url, NULL, "s", 1);
    req(&r, "GET", "/nowhere", NULL, NULL, 0);
    expect_error(&r, 404, NULL);
    test_http_free(&r);

    s = get_stats();
    assert_int_equal(stat_of(s, "routes", "url", NULL), 2);
    assert_int_equal(stat_of(s, "status", "url", "200"), 1);
    assert_int_equal(stat_of(s, "status", "url", "401"), 1);
    assert_int_equal(stat_of(s, "status", "redirect", "302"), 1);
    assert_int_equal(stat_of(s, "routes", "delivery", NULL), 1);
    assert_int_equal(stat_of(s, "routes", "not_found", NULL), 1);
    assert_int_equal(stat_of(s, "routes", "control", NULL), 0);
    assert_int_equal(json_integer_value(json_object_get(s, "total")), 6);
    json_decref(s);
    free(url);
    free(key);
}

static bool tmp_empty(void *arg)
{
    char *cmd = xasprintf("test -z \"$(ls -A '%s/tmp')\"", (const char *)arg);
    int st = test_run(cmd, NULL);
    free(cmd);
    return st == 0;
}

static void post_upload(const char *ctype, const char *body, size_t len, long code,
                        const char *want)
{
    char *h = xasprintf("Content-Type: %s", ctype);
    const char *headers[] = {"X-Org-Id: acme", h, NULL};
    struct test_http r;

    req(&r, "POST", "/documents", headers, body, len);
    expect_error(&r, code, want);
    test_http_free(&r);
    free(h);
}

static void test_bad_input(void **state)
{
    const char *mp = "multipart/form-data; boundary=" BOUNDARY;
    const char *part = "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"file\"; "
                       "filename=\"a.txt\"\r\n\r\nabc";
    char *body, *longkey, *h;
    struct test_http r;
    size_t len;

    (void)state;
    /* multipart: truncated, no file part, two file parts, no boundary, no name */
    post_upload(mp, part, strlen(part), 400, "closing delimiter");
    body = xasprintf("--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n"
                     "--" BOUNDARY "--\r\n");
    post_upload(mp, body, strlen(body), 400, "file");
    free(body);
    body = xasprintf("%s\r\n%s\r\n--" BOUNDARY "--\r\n", part, part);
    post_upload(mp, body, strlen(body), 400, "more than one");
    free(body);
    post_upload("multipart/form-data", part, strlen(part), 400, "boundary");
    body =
        xasprintf("--" BOUNDARY "\r\nContent-Type: text/plain\r\n\r\nabc\r\n--" BOUNDARY "--\r\n");
    post_upload(mp, body, strlen(body), 400, "Content-Disposition");
    free(body);
    body = xasprintf("--" BOUNDARY "\r\nX: %02000d\r\n", 0);
    for (int i = 0; i < 10; i++) {
        char *more = xasprintf("%sX: %02000d\r\n", body, i);
        free(body);
        body = more;
    }
    post_upload(mp, body, strlen(body), 400, "headers too long");
    free(body);

    /* keys: too long, control characters, empty, bad percent-encoding */
    longkey = malloc(1100);
    memset(longkey, 'k', 1099);
    longkey[1099] = '\0';
    h = xasprintf("X-Storage-Key: %s", longkey);
    {
        const char *headers[] = {"X-Org-Id: acme", h, NULL};
        req(&r, "POST", "/documents", headers, "x", 1);
        expect_error(&r, 400, "longer");
        test_http_free(&r);
    }
    free(h);
    free(longkey);
    {
        const char *headers[] = {"X-Org-Id: acme", "X-Storage-Key: a%0Ab", NULL};
        req(&r, "POST", "/documents", headers, "x", 1);
        expect_error(&r, 400, "control");
        test_http_free(&r);
    }
    {
        const char *headers[] = {"X-Org-Id: acme", "X-Storage-Key: a%zz", NULL};
        req(&r, "POST", "/documents", headers, "x", 1);
        expect_error(&r, 400, "percent");
        test_http_free(&r);
    }
    {
        const char *headers[] = {"X-Org-Id: a/b", NULL};
        req(&r, "POST", "/documents", headers, "x", 1);
        expect_error(&r, 400, "X-Org-Id");
        test_http_free(&r);
    }
    req(&r, "GET", "/documents/%E0%A4%A/url", NULL, NULL, 0);
    expect_error(&r, 400, "percent");
    test_http_free(&r);
    req(&r, "GET", "/legacy/raw/%ZZ", RAW_AUTH, NULL, 0);
    expect_error(&r, 400, "percent");
    test_http_free(&r);
    req(&r, "GET", "/legacy/delivery/acme/x.pdf?expires=abc&sig=zz", NULL, NULL, 0);
    expect_error(&r, 403, NULL);
    test_http_free(&r);

    /* routes and methods that do not exist */
    req(&r, "PUT", "/documents", NULL, "x", 1);
    expect_error(&r, 405, NULL);
    test_http_free(&r);
    req(&r, "GET", "/nothing/here", NULL, NULL, 0);
    expect_error(&r, 404, NULL);
    test_http_free(&r);

    /* control API: bad JSON, wrong shape, unknown endpoint */
    req(&r, "POST", "/_control/deny", NULL, "{not json", 9);
    expect_error(&r, 400, "JSON");
    test_http_free(&r);
    req(&r, "POST", "/_control/deny", NULL, "[1]", 3);
    expect_error(&r, 400, "object");
    test_http_free(&r);
    req(&r, "POST", "/_control/nope", NULL, "{}", 2);
    expect_error(&r, 404, NULL);
    test_http_free(&r);

    /* bodies over --max-body: declared, and chunked (counted while streaming) */
    len = MAX_BODY + 1;
    body = calloc(1, len);
    {
        const char *headers[] = {"X-Org-Id: acme", NULL};
        req(&r, "POST", "/documents", headers, body, len);
        expect_error(&r, 413, "larger");
        test_http_free(&r);
    }
    {
        const char *headers[] = {"X-Org-Id: acme", "Transfer-Encoding: chunked", NULL};
        req(&r, "POST", "/documents", headers, body, len);
        /* the answer is 413, unless the connection closed while curl was still sending */
        if (r.status != 0)
            expect_error(&r, 413, "larger");
        test_http_free(&r);
    }
    free(body);

    /* still healthy, and no temporary file left behind */
    req(&r, "GET", "/health", NULL, NULL, 0);
    EXPECT_STATUS(r, 200);
    test_http_free(&r);
    {
        char *data = xasprintf("%s", app.data);
        assert_true(test_wait_until(tmp_empty, data, 5000));
        free(data);
    }
}

static void test_large_multipart(void **state)
{
    size_t len = 3 * 1024 * 1024 + 17;
    unsigned char *data = malloc(len);
    char *key, *url;
    uint32_t x = 12345;

    (void)state;
    /* pseudo-random bytes with boundary-like sequences sprinkled in */
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (unsigned char)(x >> 16);
    }
    for (size_t i = 1000; i + 64 < len; i += 65521)
        memcpy(data + i, "\r\n--" BOUNDARY, 20);
    key = upload_multipart("big", "p9", NULL, "large scan.tiff", data, len);
    url = signed_url(key, "erin");
    expect_bytes(url, NULL, data, len);
    free(url);
    free(key);
    free(data);
}

static void test_restart_keeps_store(void **state)
{
    char *key;
    json_t *list;

    (void)state;
    key = upload_raw("acme", "acme/restart/kept é.pdf", NULL, "kept", 4);
    app_stop();
    assert_true(app_start());
    list = list_documents();
    assert_non_null(find_listed(list, key));
    json_decref(list);
    expect_bytes("/legacy/raw/acme%2Frestart%2Fkept%20%C3%A9.pdf", RAW_AUTH, "kept", 4);
    {
        json_t *line = jsonl_entry(key);
        assert_non_null(line);
        json_decref(line);
    }
    free(key);
}

static void test_usage_errors(void **state)
{
    char *cmd, *out = NULL;

    (void)state;
    cmd = xasprintf("node '%s' --listen 127.0.0.1:1", app.script);
    assert_int_equal(test_run(cmd, &out), 2);
    assert_non_null(strstr(out, "--data"));
    free(out);
    free(cmd);
    cmd = xasprintf("node '%s' --bogus", app.script);
    assert_int_equal(test_run(cmd, NULL), 2);
    free(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_health, reset_control),
        cmocka_unit_test_setup(test_upload_raw, reset_control),
        cmocka_unit_test_setup(test_upload_multipart, reset_control),
        cmocka_unit_test_setup(test_signed_url, reset_control),
        cmocka_unit_test_setup(test_redirect, reset_control),
        cmocka_unit_test_setup(test_altered, reset_control),
        cmocka_unit_test_setup(test_raw_token, reset_control),
        cmocka_unit_test_setup(test_hostile_keys, reset_control),
        cmocka_unit_test_setup(test_overwrite_fixed_key, reset_control),
        cmocka_unit_test_setup(test_seed, reset_control),
        cmocka_unit_test_setup(test_delay, reset_control),
        cmocka_unit_test_setup(test_stats, reset_control),
        cmocka_unit_test_setup(test_bad_input, reset_control),
        cmocka_unit_test_setup(test_large_multipart, reset_control),
        cmocka_unit_test_setup(test_restart_keeps_store, reset_control),
        cmocka_unit_test(test_usage_errors),
    };
    return cmocka_run_group_tests_name("example_app", tests, group_setup, group_teardown);
}
