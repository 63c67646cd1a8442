/*
 * Fuzz target: SigV4 canonical requests and signatures (storage/sigv4.c), header signing and
 * presigning, with the object key as the S3 client encodes it. The input is lines: the
 * method, the object key, then "name=value" query parameters up to an empty line, then
 * "name:value" headers; host and x-amz-date are always signed. Checked properties: no crash
 * or overflow; a refusal is a ceiling (CUT_ELIMIT) with a message; a signature is 64
 * lower-case hex digits, the same when signed again, and the hash in the string to sign is
 * the SHA-256 of the canonical request, whose first lines are the method and the encoded
 * URI; the Authorization value ends with that signature; a presigned query is made of
 * unreserved characters, '%XX', '=' and '&' only, and ends with X-Amz-Signature=<signature>.
 * Also the generic path normalisation (no "//", "." or ".." left; applying it twice changes
 * nothing) and the x-amz-date parser (a parsed time prints and parses back to itself).
 */
#include "storage/sigv4.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXKV 64
#define DATE "20261127T120000Z"

static bool hex64(const char *s)
{
    for (int i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return false;
    return s[64] == '\0';
}

static void check_sign(sigv4_signer *s, const struct sigv4_creds *c, const struct sigv4_request *r)
{
    struct sigv4_trace t, t2;
    cut_err err = CUT_ERR_INIT;
    char out[8192], q[16384];
    char h[65];
    long n;

    sigv4_trace_init(&t);
    sigv4_trace_init(&t2);
    if (sigv4_sign_header(s, c, r, DATE, out, sizeof(out), &t, &err) == 0) {
        size_t ml = strlen(r->method), ul = strlen(r->canonical_uri);
        const char *cr = t.canonical_request.data;
        if (!hex64(t.signature) || strlen(out) < 64 || strcmp(out + strlen(out) - 64, t.signature))
            abort();
        if (t.canonical_request.len < ml + ul + 2 || memcmp(cr, r->method, ml) != 0 ||
            cr[ml] != '\n' || memcmp(cr + ml + 1, r->canonical_uri, ul) != 0 ||
            cr[ml + 1 + ul] != '\n')
            abort();
        sigv4_sha256_hex(cr, t.canonical_request.len, h);
        if (t.string_to_sign.len < 64 ||
            memcmp(t.string_to_sign.data + t.string_to_sign.len - 64, h, 64) != 0)
            abort();
        cut_err e2 = CUT_ERR_INIT;
        if (sigv4_sign_header(s, c, r, DATE, out, sizeof(out), &t2, &e2) != 0 ||
            strcmp(t.signature, t2.signature) != 0)
            abort(); /* not deterministic */
    } else if (err.code != CUT_ELIMIT || err.msg[0] == '\0') {
        abort();
    }
    cut_err e3 = CUT_ERR_INIT;
    n = sigv4_presign_query(s, c, r, DATE, 3600, q, sizeof(q), &t, &e3);
    if (n >= 0) {
        if ((size_t)n != strlen(q) || n < 81 || strncmp(q + n - 81, "&X-Amz-Signature=", 17) ||
            !hex64(q + n - 64))
            abort();
        for (long i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)q[i];
            if (!(isalnum(ch) || strchr("-_.~%=&", ch)))
                abort();
        }
    } else if (e3.code != CUT_ELIMIT || e3.msg[0] == '\0') {
        abort();
    }
    sigv4_trace_free(&t);
    sigv4_trace_free(&t2);
}

static void check_normalize(const char *path)
{
    size_t n = strlen(path);
    char *a = malloc(n + 2), *b = malloc(n + 2);
    long la = sigv4_normalize_path(path, a, n + 2);
    if (la >= 0) {
        if (strstr(a, "//") || strstr(a, "/./") || strstr(a, "/../"))
            abort();
        long lb = sigv4_normalize_path(a, b, n + 2);
        if (lb != la || strcmp(a, b) != 0)
            abort(); /* not idempotent */
    }
    free(a);
    free(b);
}

static void check_date(const char *s)
{
    time_t t, t2;
    char again[17];
    if (!sigv4_parse_amz_date(s, &t))
        return;
    sigv4_amz_date(t, again);
    if (!sigv4_parse_amz_date(again, &t2) || t2 != t)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text, *line, *method, *key, uri[16384];
    struct sigv4_kv query[MAXKV], headers[MAXKV];
    size_t nq = 0, nh = 0;
    bool in_headers = false;
    sigv4_signer *s;
    const struct sigv4_creds c = {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                  size % 2 ? "FwoGZXIvYXdzEXAMPLE" : NULL};

    if (size > 4096)
        return 0;
    text = xstrndup((const char *)data, size);
    check_normalize(text);
    check_date(text);
    method = strsep(&text, "\n");
    key = text ? strsep(&text, "\n") : NULL;
    if (key == NULL || *method == '\0' || sigv4_encode_path("/bucket", key, uri, sizeof(uri)) < 0)
        goto out;
    headers[nh++] = (struct sigv4_kv){"host", "bucket.s3.eu-west-1.amazonaws.com"};
    headers[nh++] = (struct sigv4_kv){"x-amz-date", DATE};
    while (text && (line = strsep(&text, "\n")) != NULL) {
        if (!in_headers && *line == '\0') {
            in_headers = true;
            continue;
        }
        char *sep = strchr(line, in_headers ? ':' : '=');
        if (in_headers && (sep == NULL || sep == line))
            continue;
        if (sep)
            *sep = '\0';
        if (in_headers && nh < MAXKV)
            headers[nh++] = (struct sigv4_kv){line, sep + 1};
        else if (!in_headers && nq < MAXKV)
            query[nq++] = (struct sigv4_kv){line, sep ? sep + 1 : NULL};
    }
    struct sigv4_request r = {.method = method,
                              .canonical_uri = uri,
                              .query = query,
                              .nquery = nq,
                              .headers = headers,
                              .nheaders = nh,
                              .payload_hash = SIGV4_UNSIGNED_PAYLOAD};
    s = sigv4_signer_new("eu-west-1", "s3");
    check_sign(s, &c, &r);
    sigv4_signer_free(s);
out:
    free(method);
    return 0;
}
