/*
 * test_sigv4_vectors: runs every SigV4 vector in tests/s3/data/sigv4 (the AWS test suite,
 * the S3 documentation's worked examples and the S3-shaped derived cases) through the
 * signer, for header signing and for query signing where the vector has a query variant,
 * comparing canonical request, string to sign, signed headers and signature one by one, so
 * a failure says which step differs. One cmocka test per vector file; `divergent/` is not
 * run (its README explains why those published values are inconsistent).
 *
 * Generic-service vectors (applies_to_s3 false) are signed with their own path rules
 * (normalisation, one encoding of the raw path); S3 vectors sign the object key with the
 * S3 rule (encode once, never normalise).
 */
#include "storage/sigv4.h"

#include <dirent.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char *data_dir(void)
{
    const char *src = getenv("CUTOVER_SOURCE_DIR");

    return xasprintf("%s/tests/s3/data/sigv4", src ? src : ".");
}

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

struct vec_req {
    struct sigv4_kv hdr[SIGV4_MAX_HEADERS];
    size_t nhdr;
    struct sigv4_kv q[SIGV4_MAX_PARAMS];
    size_t nq;
    char *owned[2 * SIGV4_MAX_PARAMS];
    size_t nowned;
    char uri[1024];
};

static char *keep(struct vec_req *v, char *s)
{
    assert_true(v->nowned < 2 * SIGV4_MAX_PARAMS);
    v->owned[v->nowned++] = s;
    return s;
}

static void vec_req_free(struct vec_req *v)
{
    for (size_t i = 0; i < v->nowned; i++)
        free(v->owned[i]);
}

static bool has_header(const struct vec_req *v, const char *name)
{
    for (size_t i = 0; i < v->nhdr; i++)
        if (strcasecmp(v->hdr[i].name, name) == 0)
            return true;
    return false;
}

/* Builds the request from the vector: URI, decoded query, headers as sent. */
static void build(json_t *d, bool s3, struct vec_req *v)
{
    json_t *req = json_object_get(d, "request"), *opts = json_object_get(d, "options");
    const char *key = jstr(req, "object_key"), *path = jstr(req, "path_raw");
    json_t *qp = json_object_get(req, "query_params");
    const char *qraw = jstr(req, "query_raw");
    size_t i;
    json_t *h;

    memset(v, 0, sizeof(*v));
    if (s3 && key) {
        assert_true(sigv4_encode_path("", key, v->uri, sizeof(v->uri)) > 0);
    } else if (s3) {
        assert_non_null(path);
        snprintf(v->uri, sizeof(v->uri), "%s", path);
    } else {
        char norm[1024];
        const char *p = path;
        if (json_is_true(json_object_get(opts, "normalize_path"))) {
            assert_true(sigv4_normalize_path(path, norm, sizeof(norm)) >= 0);
            p = norm;
        }
        assert_true(sigv4_encode(p, strlen(p), true, v->uri, sizeof(v->uri)) >= 0);
    }
    if (!json_is_array(qp))
        qp = json_object_get(req, "extra_query_params");
    if (json_is_array(qp) && json_array_size(qp) > 0) {
        json_array_foreach(qp, i, h)
        {
            v->q[v->nq].name = json_string_value(json_array_get(h, 0));
            v->q[v->nq].value = json_string_value(json_array_get(h, 1));
            v->nq++;
        }
    } else if (qraw && qraw[0]) {
        char *dup = keep(v, xstrdup(qraw)), *save = NULL;
        for (char *tok = strtok_r(dup, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
            char *eq = strchr(tok, '=');
            const char *val = eq ? eq + 1 : "";
            size_t nl = eq ? (size_t)(eq - tok) : strlen(tok);
            char *n = keep(v, xmalloc(nl + 1)), *vv = keep(v, xmalloc(strlen(val) + 1));
            assert_true(sigv4_decode(tok, nl, n, nl + 1) >= 0);
            assert_true(sigv4_decode(val, strlen(val), vv, strlen(val) + 1) >= 0);
            v->q[v->nq].name = n;
            v->q[v->nq].value = vv;
            v->nq++;
        }
    }
    json_array_foreach(json_object_get(req, "headers"), i, h)
    {
        v->hdr[v->nhdr].name = json_string_value(json_array_get(h, 0));
        v->hdr[v->nhdr].value = json_string_value(json_array_get(h, 1));
        v->nhdr++;
    }
    if (!has_header(v, "host") && jstr(req, "host")) {
        v->hdr[v->nhdr].name = "host";
        v->hdr[v->nhdr].value = jstr(req, "host");
        v->nhdr++;
    }
}

static void expect_eq(const char *id, const char *what, const char *want, const char *got)
{
    if (strcmp(want, got) != 0) {
        print_error("%s: %s differs\n--- expected\n%s\n--- got\n%s\n", id, what, want, got);
        fail();
    }
}

static void check_trace(const char *id, const char *mode, json_t *auth, const struct sigv4_trace *t)
{
    char what[64];

    snprintf(what, sizeof(what), "%s canonical request", mode);
    expect_eq(id, what, jstr(auth, "canonical_request"), t->canonical_request.data);
    snprintf(what, sizeof(what), "%s string to sign", mode);
    expect_eq(id, what, jstr(auth, "string_to_sign"), t->string_to_sign.data);
    if (jstr(auth, "signed_headers")) {
        snprintf(what, sizeof(what), "%s signed headers", mode);
        expect_eq(id, what, jstr(auth, "signed_headers"), t->signed_headers);
    }
    snprintf(what, sizeof(what), "%s signature", mode);
    expect_eq(id, what, jstr(auth, "signature"), t->signature);
}

static void run_vector(void **state)
{
    const char *path = *state;
    json_error_t je;
    json_t *d = json_load_file(path, 0, &je);
    json_t *cr, *opts, *req, *ha, *qa;
    const char *id, *amz, *payload;
    struct sigv4_creds c = {0};
    struct vec_req v;
    sigv4_signer *s;
    bool s3;
    cut_err err = CUT_ERR_INIT;

    if (d == NULL)
        fail_msg("%s: %s", path, je.text);
    id = jstr(d, "id");
    cr = json_object_get(d, "credentials");
    opts = json_object_get(d, "options");
    req = json_object_get(d, "request");
    ha = json_object_get(d, "header_auth");
    qa = json_object_get(d, "query_auth");
    amz = jstr(d, "amz_date");
    s3 = json_is_true(json_object_get(d, "applies_to_s3"));
    c.access_key_id = jstr(cr, "access_key_id");
    c.secret_access_key = jstr(cr, "secret_access_key");
    if (!json_is_true(json_object_get(opts, "omit_session_token")))
        c.session_token = jstr(cr, "session_token");
    s = sigv4_signer_new(jstr(d, "region"), jstr(d, "service"));
    build(d, s3, &v);

    if (ha) {
        struct sigv4_trace t;
        struct sigv4_request r;
        char auth[2048], want_sig[80];
        size_t nhdr = v.nhdr;

        payload = jstr(d, "payload_hash");
        if (payload == NULL)
            payload = jstr(req, "body_sha256");
        assert_non_null(payload);
        if (!has_header(&v, "x-amz-date")) {
            v.hdr[v.nhdr++] = (struct sigv4_kv){"X-Amz-Date", amz};
        }
        if (c.session_token && !has_header(&v, "x-amz-security-token"))
            v.hdr[v.nhdr++] = (struct sigv4_kv){"X-Amz-Security-Token", c.session_token};
        if (json_is_true(json_object_get(opts, "sign_body")) &&
            !has_header(&v, "x-amz-content-sha256"))
            v.hdr[v.nhdr++] = (struct sigv4_kv){"x-amz-content-sha256", payload};
        r = (struct sigv4_request){jstr(req, "method"), v.uri, v.q, v.nq, v.hdr, v.nhdr, payload};
        sigv4_trace_init(&t);
        if (sigv4_sign_header(s, &c, &r, amz, auth, sizeof(auth), &t, &err) != 0)
            fail_msg("%s: %s", id, err.msg);
        check_trace(id, "header", ha, &t);
        snprintf(want_sig, sizeof(want_sig), "Signature=%s", jstr(ha, "signature"));
        assert_non_null(strstr(auth, want_sig));
        assert_non_null(strstr(auth, c.access_key_id));
        sigv4_trace_free(&t);
        v.nhdr = nhdr;
    }
    if (qa) {
        struct sigv4_trace t;
        struct sigv4_request r;
        char q[8192];
        long n;
        json_t *exp = json_object_get(opts, "expiration_in_seconds");
        const char *url = jstr(qa, "presigned_url");

        payload = jstr(opts, "payload");
        if (payload == NULL)
            payload = jstr(d, "payload_hash");
        assert_non_null(payload);
        r = (struct sigv4_request){jstr(req, "method"), v.uri, v.q, v.nq, v.hdr, v.nhdr, payload};
        sigv4_trace_init(&t);
        n = sigv4_presign_query(s, &c, &r, amz, (long)json_integer_value(exp), q, sizeof(q), &t,
                                &err);
        if (n < 0)
            fail_msg("%s: %s", id, err.msg);
        check_trace(id, "query", qa, &t);
        if (url) {
            const char *qm = strchr(url, '?');
            assert_non_null(qm);
            expect_eq(id, "presigned query", qm + 1, q);
        }
        sigv4_trace_free(&t);
    }
    assert_true(ha || qa);
    vec_req_free(&v);
    sigv4_signer_free(s);
    json_decref(d);
}

/* Collects the vector files of dir (and one level of sub-folders but `divergent`). */
static void collect(const char *dir, char ***paths, size_t *n)
{
    DIR *dp = opendir(dir);
    struct dirent *de;

    if (dp == NULL) {
        fprintf(stderr, "cannot open %s\n", dir);
        exit(1);
    }
    while ((de = readdir(dp)) != NULL) {
        char *p;
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.')
            continue;
        p = xasprintf("%s/%s", dir, de->d_name);
        if (de->d_type == DT_DIR) {
            if (strcmp(de->d_name, "divergent") != 0)
                collect(p, paths, n);
            free(p);
            continue;
        }
        if (l < 5 || strcmp(de->d_name + l - 5, ".json") != 0) {
            free(p);
            continue;
        }
        *paths = xrealloc(*paths, (*n + 1) * sizeof(char *));
        (*paths)[(*n)++] = p;
    }
    closedir(dp);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
    char *dir = data_dir(), **paths = NULL;
    size_t n = 0;
    struct CMUnitTest *tests;
    int rc;

    collect(dir, &paths, &n);
    qsort(paths, n, sizeof(char *), cmp_str);
    if (n < 50) {
        fprintf(stderr, "only %zu vectors found in %s\n", n, dir);
        return 1;
    }
    tests = xcalloc(n, sizeof(*tests));
    for (size_t i = 0; i < n; i++) {
        tests[i].name = strrchr(paths[i], '/') + 1;
        tests[i].test_func = run_vector;
        tests[i].initial_state = paths[i];
    }
    rc = _cmocka_run_group_tests("sigv4_vectors", tests, n, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    free(tests);
    free(dir);
    return rc;
}
