/*
 * Dual-write end to end: `cutover proxy` in front of the example application, with the
 * fixture's PostgreSQL and s3rver. 500 uploads through cutover (multipart with special-character
 * filenames and form fields, raw bodies; mostly small, some of 256 KiB to 1 MiB, one of 3 MiB,
 * two of 20 MiB; and a PDF) all get the app's own answer,
 * and every document ends `verified`, with the same bytes in S3 as uploaded (read back and
 * compared) under the route's key template; the PDF is served by its presigned URL with its
 * content type and filename; an upload the app refuses leaves no row and no spool file; a
 * document whose S3 key would get a ".." segment is listed `failed` with the reason while the
 * client still gets its 201; a delete through cutover marks the row `deleted` and removes the
 * object from S3.
 */
#include "core/core.h"
#include "storage/s3.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <dirent.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static struct test_dw E;

struct doc {
    char *key;
    char *patient;
    unsigned char *data;
    size_t len;
    char sha256[65];
};

#define NDOCS 500
static struct doc docs[NDOCS];

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static PGresult *q(const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(E.pg, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(E.pg));
    return r;
}

static char *row_value(const char *sql, const char *key)
{
    const char *p[1] = {key};
    PGresult *r = q(sql, 1, p);
    char *v = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? xstrdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    return v;
}

static int setup(void **state)
{
    (void)state;
    test_dw_start(&E, "dualwrite", 4, NULL, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return test_dw_stop(&E) ? 0 : -1;
}

/* ---- uploads through cutover ------------------------------------------------------------- */

struct body {
    struct buf b;
};

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    if (!buf_append(&b->b, p, size * n))
        return 0;
    return size * n;
}

/* POSTs a multipart upload (or PUTs a raw body when filename is NULL in the form); returns the
 * HTTP status and the answer's storage_key (new string) in *key. */
static long upload(const char *org, const char *patient, const char *filename, const char *ctype,
                   const void *data, size_t len, bool raw, char **key)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    struct body b;
    curl_mime *mime = NULL;
    long status = 0;
    char *url, *hdr = xasprintf("X-Org-Id: %s", org);

    buf_init(&b.b, 1 << 20);
    h = curl_slist_append(h, hdr);
    if (raw) {
        char *ef = curl_easy_escape(c, filename, 0), *ep = curl_easy_escape(c, patient, 0);
        url = xasprintf("http://127.0.0.1:%d/documents?filename=%s&patient_id=%s", E.port, ef, ep);
        curl_free(ef);
        curl_free(ep);
        char *ct = xasprintf("Content-Type: %s", ctype);
        h = curl_slist_append(h, ct);
        free(ct);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else {
        url = xasprintf("http://127.0.0.1:%d/documents", E.port);
        mime = curl_mime_init(c);
        curl_mimepart *part = curl_mime_addpart(mime);
        curl_mime_name(part, "patient_id");
        curl_mime_data(part, patient, CURL_ZERO_TERMINATED);
        part = curl_mime_addpart(mime);
        curl_mime_name(part, "file");
        curl_mime_filename(part, filename);
        curl_mime_type(part, ctype);
        curl_mime_data(part, data, len);
        curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    *key = NULL;
    if (status == 201) {
        json_error_t je;
        json_t *j = json_loadb(b.b.data, b.b.len, 0, &je);
        char sha[65];
        sha256_hex(data, len, sha);
        /* the client gets the app's own answer: its checksum of our bytes */
        assert_string_equal(json_string_value(json_object_get(j, "sha256")), sha);
        *key = xstrdup(json_string_value(json_object_get(j, "storage_key")));
        json_decref(j);
    }
    buf_free(&b.b);
    curl_mime_free(mime);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(url);
    free(hdr);
    return status;
}

static bool all_verified(void *arg)
{
    (void)arg;
    const char *p[1] = {E.org};
    PGresult *r = q("SELECT count(*) FROM cutover.documents WHERE state = 'verified' "
                    "AND vars->>'org' = $1",
                    1, p);
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n >= NDOCS;
}

static bool no_spool_parts(void *arg)
{
    (void)arg;
    DIR *d = opendir(E.spool);
    struct dirent *e;
    bool none = true;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".part"))
            none = false;
    if (d)
        closedir(d);
    return none;
}

static int sink_buf(void *arg, const void *data, size_t n)
{
    return buf_append(arg, data, n) ? 0 : 1;
}

static void test_uploads_verified(void **state)
{
    static const char *names[] = {"lab result (1).txt", "Ärztebrief für Müller.pdf",
                                  "100% sure #1?.txt",  "plus+sign & equals=.bin",
                                  "診療記録.txt",       "quote's \"name\".txt"};
    (void)state;
    for (int i = 0; i < NDOCS; i++) {
        struct doc *d = &docs[i];
        bool raw = i % 6 == 5;
        size_t len = i == 7                 ? (3u << 20) + 17
                     : i == 123 || i == 321 ? (20u << 20) - (size_t)i
                     : i % 50 == 11         ? (256u << 10) + (size_t)i * 1597
                                            : (size_t)(i * 997 % 5000) + (i == 3 ? 0 : 1);
        char fname[128];
        d->data = xmalloc(len ? len : 1);
        for (size_t k = 0; k < len; k++)
            d->data[k] = (unsigned char)((k * 131 + (size_t)i * 7) & 0xff);
        d->len = len;
        sha256_hex(d->data, len, d->sha256);
        d->patient = xasprintf("p-%d", i % 4);
        snprintf(fname, sizeof(fname), "%d %s", i, names[i % 6]);
        long st = upload(E.org, d->patient, fname, "application/octet-stream", d->data, len, raw,
                         &d->key);
        if (st != 201)
            fail_msg("upload %d: HTTP %ld", i, st);
    }
    if (!test_wait_until(all_verified, NULL, 90000)) {
        PGresult *r = q("SELECT storage_key, state, last_error FROM cutover.documents "
                        "WHERE state <> 'verified'",
                        0, NULL);
        for (int i = 0; i < PQntuples(r); i++)
            fprintf(stderr, "not verified: %s %s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                    PQgetvalue(r, i, 2));
        PQclear(r);
        fail_msg("not every document reached verified");
    }
    for (int i = 0; i < NDOCS; i++) {
        struct doc *d = &docs[i];
        char *s3_key = xasprintf("documents/%s/%s", E.org, d->key);
        char *row_key =
            row_value("SELECT s3_key FROM cutover.documents WHERE storage_key = $1", d->key);
        char *row_sha =
            row_value("SELECT sha256 FROM cutover.documents WHERE storage_key = $1", d->key);
        struct buf got;
        struct s3_result res;
        cut_err err = CUT_ERR_INIT;
        char sha[65];
        assert_string_equal(row_key, s3_key);
        assert_string_equal(row_sha, d->sha256);
        buf_init(&got, 0);
        if (s3_get(E.s3env.c, s3_key, sink_buf, &got, &res, &err) != 0)
            fail_msg("GET %s: %s", s3_key, err.msg);
        sha256_hex(got.data ? got.data : "", got.len, sha);
        assert_int_equal(got.len, d->len);
        assert_string_equal(sha, d->sha256);
        buf_free(&got);
        free(s3_key);
        free(row_key);
        free(row_sha);
    }
    /* verified documents leave nothing in the spool */
    assert_true(test_wait_until(no_spool_parts, NULL, 10000));
}

static void test_pdf_served_with_type_and_name(void **state)
{
    static const char pdf[] = "%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n";
    char *key = NULL, *s3_key, url[4096], *cmd, *out = NULL;
    cut_err err = CUT_ERR_INIT;
    (void)state;
    assert_int_equal(upload(E.org, "pdf", "Befund Müller.pdf", "application/pdf", pdf,
                            sizeof(pdf) - 1, false, &key),
                     201);
    s3_key = xasprintf("documents/%s/%s", E.org, key);
    char *verified_sql = "SELECT state FROM cutover.documents WHERE storage_key = $1";
    for (int i = 0; i < 600; i++) {
        char *st = row_value(verified_sql, key);
        bool v = st && strcmp(st, "verified") == 0;
        free(st);
        if (v)
            break;
        usleep(50000);
    }
    assert_true(s3_presign(E.s3env.c, "GET", s3_key, 600, 0, url, sizeof(url), &err) > 0);
    cmd = xasprintf("curl -s -D - -o /dev/null '%s'", url);
    assert_int_equal(test_run(cmd, &out), 0);
    if (!strcasestr(out, "content-type: application/pdf") ||
        !strcasestr(out, "content-disposition: inline; filename=\"Befund M__ller.pdf\"; "
                         "filename*=UTF-8''Befund%20M%C3%BCller.pdf"))
        fail_msg("presigned GET headers:\n%s", out);
    free(out);
    free(cmd);
    free(s3_key);
    free(key);
}

static void test_refused_by_app(void **state)
{
    char *key = NULL;
    const char *p[1];
    (void)state;
    /* the app refuses an upload without X-Org-Id */
    CURL *c = curl_easy_init();
    curl_mime *mime = curl_mime_init(c);
    curl_mimepart *part = curl_mime_addpart(mime);
    char *url = xasprintf("http://127.0.0.1:%d/documents", E.port);
    long status = 0;
    curl_mime_name(part, "file");
    curl_mime_filename(part, "refused.txt");
    curl_mime_data(part, "refused bytes", CURL_ZERO_TERMINATED);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    struct body b;
    buf_init(&b.b, 0);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    assert_int_equal(status, 400);
    assert_non_null(strstr(b.b.data, "X-Org-Id"));
    buf_free(&b.b);
    curl_mime_free(mime);
    curl_easy_cleanup(c);
    free(url);
    p[0] = "refused.txt";
    PGresult *r =
        q("SELECT count(*) FROM cutover.documents WHERE storage_key LIKE '%' || $1", 1, p);
    assert_string_equal(PQgetvalue(r, 0, 0), "0");
    PQclear(r);
    assert_true(test_wait_until(no_spool_parts, NULL, 10000));
    free(key);
}

/* Count of the app's upload answers with status 400 so far (its /_control/stats). */
static long app_upload_400s(void)
{
    struct test_http r;
    json_error_t je;
    long n = -1;
    char *url = xasprintf("%s/_control/stats", testenv("APP_URL"));
    if (test_http("GET", url, NULL, NULL, 0, &r) == 0 && r.status == 200) {
        json_t *j = json_loadb(r.body, r.body_len, 0, &je);
        json_t *v = json_object_get(json_object_get(json_object_get(j, "status"), "upload"), "400");
        n = json_is_integer(v) ? (long)json_integer_value(v) : 0;
        json_decref(j);
    }
    test_http_free(&r);
    free(url);
    return n;
}

static long before_400s;

static bool app_answered_400(void *arg)
{
    (void)arg;
    return app_upload_400s() > before_400s;
}

/* The app refuses as soon as it has the head, before the body has ended; the body keeps
 * coming through cutover after the app's answer: nothing is recorded, nothing is left in the
 * spool, cutover stays up, and the client gets the app's 400. */
static void test_refused_before_the_body_ends(void **state)
{
    static const char head[] = "POST /documents HTTP/1.1\r\nHost: x\r\n"
                               "Content-Type: multipart/form-data; boundary=XyZ\r\n"
                               "Content-Length: 20000\r\n\r\n"
                               "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
                               "filename=\"early.bin\"\r\n\r\n";
    char buf[4096], *url;
    size_t sent = strlen(strstr(head, "\r\n\r\n") + 4); /* body bytes in the head's packet */
    int fd = test_connect(E.port);
    struct test_http r;
    (void)state;
    before_400s = app_upload_400s();
    assert_true(fd >= 0);
    assert_int_equal(send(fd, head, sizeof(head) - 1, 0), (ssize_t)(sizeof(head) - 1));
    /* the app has answered 400 (no X-Org-Id) to cutover before the body is sent */
    assert_true(test_wait_until(app_answered_400, NULL, 10000));
    memset(buf, 'e', sizeof(buf));
    while (sent < 20000) {
        size_t n = 20000 - sent < sizeof(buf) ? 20000 - sent : sizeof(buf);
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n > 12);
    buf[n] = 0;
    assert_non_null(strstr(buf, " 400 "));
    close(fd);
    /* cutover is still there and answers */
    url = xasprintf("http://127.0.0.1:%d/health", E.port);
    assert_int_equal(test_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    test_http_free(&r);
    free(url);
    assert_true(test_wait_until(no_spool_parts, NULL, 10000));
}

static void test_unmirrorable_listed_failed(void **state)
{
    char *key = NULL, *st, *err;
    (void)state;
    /* the app takes any organisation without '/': {org} becomes a ".." segment */
    assert_int_equal(upload("..", "p", "unmirrorable.txt", "text/plain", "x", 1, true, &key), 201);
    for (int i = 0; i < 200; i++) {
        st = row_value("SELECT state FROM cutover.documents WHERE storage_key = $1", key);
        if (st)
            break;
        usleep(50000);
    }
    assert_non_null(st);
    assert_string_equal(st, "failed");
    err = row_value("SELECT last_error FROM cutover.documents WHERE storage_key = $1", key);
    assert_non_null(err);
    assert_non_null(strstr(err, "{org}"));
    free(err);
    char *detail = row_value("SELECT detail FROM cutover.transitions WHERE storage_key = $1 "
                             "AND to_state = 'failed' ORDER BY id DESC LIMIT 1",
                             key);
    assert_non_null(detail);
    assert_non_null(strstr(detail, "'.' or '..' segment"));
    free(detail);
    free(st);
    free(key);
}

static void test_delete_through_cutover(void **state)
{
    struct doc *d = &docs[0];
    char *enc, *url, *s3_key = xasprintf("documents/%s/%s", E.org, d->key);
    struct test_http r;
    struct s3_result res;
    cut_err err = CUT_ERR_INIT;
    CURL *c = curl_easy_init();
    (void)state;
    enc = curl_easy_escape(c, d->key, 0);
    url = xasprintf("http://127.0.0.1:%d/documents/%s", E.port, enc);
    assert_int_equal(test_http("DELETE", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 204);
    test_http_free(&r);
    char *st = row_value("SELECT state FROM cutover.documents WHERE storage_key = $1", d->key);
    assert_string_equal(st, "deleted");
    assert_int_equal(s3_head(E.s3env.c, s3_key, &res, &err), -1);
    assert_int_equal(err.code, CUT_ENOTFOUND);
    free(st);
    curl_free(enc);
    curl_easy_cleanup(c);
    free(url);
    free(s3_key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uploads_verified),
        cmocka_unit_test(test_pdf_served_with_type_and_name),
        cmocka_unit_test(test_refused_by_app),
        cmocka_unit_test(test_refused_before_the_body_ends),
        cmocka_unit_test(test_unmirrorable_listed_failed),
        cmocka_unit_test(test_delete_through_cutover),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, setup, teardown);
}
