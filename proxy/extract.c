/*
 * extract: JSON Pointer evaluation and S3 key template expansion (see extract.h).
 *
 * The pointer is walked token by token without copying the whole pointer: each token is
 * unescaped into a small stack buffer (member names longer than that are looked up from a
 * heap copy). Array indices follow RFC 6901 strictly: digits only, no leading zero.
 *
 * A key template is expanded into a buffer capped at S3's key limit. Values are checked one
 * by one before they are appended, so that the reason names the variable that was bad: a
 * client that sends `X-Org-Id: ../other-org` must not get its document written beside
 * another organisation's, and a control character must not reach a log line or a key.
 */
#include "proxy/extract.h"

#include <stdlib.h>
#include <string.h>

/* Unescapes one pointer token tok[0..n) into out (NUL-terminated). False when a '~' is
 * not followed by 0 or 1. */
static bool unescape(const char *tok, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (tok[i] != '~') {
            out[o++] = tok[i];
            continue;
        }
        if (i + 1 >= n || (tok[i + 1] != '0' && tok[i + 1] != '1'))
            return false;
        out[o++] = tok[i + 1] == '0' ? '~' : '/';
        i++;
    }
    out[o] = 0;
    return true;
}

static bool array_index(const char *s, size_t *idx)
{
    size_t v = 0;
    if (!*s || (s[0] == '0' && s[1]) || strlen(s) > 9)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (size_t)(*p - '0');
    }
    *idx = v;
    return true;
}

const json_t *extract_json_pointer(const json_t *root, const char *ptr)
{
    const json_t *cur = root;
    char small[256];

    if (!root || !ptr)
        return NULL;
    if (*ptr == 0)
        return root;
    if (*ptr != '/')
        return NULL;
    while (cur && *ptr == '/') {
        const char *tok = ptr + 1;
        const char *end = strchr(tok, '/');
        size_t n = end ? (size_t)(end - tok) : strlen(tok);
        char *name = n < sizeof(small) ? small : xmalloc(n + 1);
        bool ok = unescape(tok, n, name);
        if (ok && json_is_object(cur)) {
            cur = json_object_get(cur, name);
        } else if (ok && json_is_array(cur)) {
            size_t idx;
            cur = array_index(name, &idx) ? json_array_get(cur, idx) : NULL;
        } else {
            cur = NULL;
        }
        if (name != small)
            free(name);
        ptr = tok + n;
    }
    return cur;
}

char *extract_json_string(const json_t *root, const char *ptr, cut_err *err)
{
    const json_t *v = extract_json_pointer(root, ptr);
    if (json_is_string(v))
        return xstrndup(json_string_value(v), json_string_length(v));
    if (json_is_integer(v))
        return xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
    err_set(err, CUT_EINVAL, "extract", "the answer has %s at JSON pointer \"%s\"",
            v ? "neither a string nor an integer" : "no value", ptr);
    return NULL;
}

/* Why value v[0..n) of variable name cannot be part of a key, or NULL when it can. */
static const char *bad_value(const char *v, size_t n)
{
    if (n == 0)
        return "is empty";
    /* "documents/{org}/{key}" with a key "/x" would name "documents/o//x" (issue 8) */
    if (v[0] == '/')
        return "starts with '/'";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f)
            return "holds a control character";
    }
    if (!utf8_valid(v, n))
        return "is not valid UTF-8";
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && v[j] != '/')
            j++;
        if ((j - i == 1 && v[i] == '.') || (j - i == 2 && v[i] == '.' && v[i + 1] == '.'))
            return "has a '.' or '..' segment";
        i = j + 1;
    }
    return NULL;
}

char *extract_s3_key(const char *tpl, extract_var_fn lookup, void *arg, cut_err *err)
{
    struct buf out;
    const char *p = tpl;
    char *key = NULL;

    buf_init(&out, EXTRACT_MAX_KEY);
    while (*p) {
        const char *open = strchr(p, '{');
        const char *close;
        size_t lit = open ? (size_t)(open - p) : strlen(p);
        if (!buf_append(&out, p, lit))
            goto too_long;
        if (!open)
            break;
        close = strchr(open, '}');
        if (!close) {
            err_set(err, CUT_EINVAL, "extract", "the key template has an unclosed '{'");
            goto out;
        }
        size_t nlen = (size_t)(close - open - 1), vlen = 0;
        const char *v = lookup(arg, open + 1, nlen, &vlen);
        const char *why;
        if (!v) {
            err_set(err, CUT_EINVAL, "extract", "the variable {%.*s} has no value", (int)nlen,
                    open + 1);
            goto out;
        }
        if ((why = bad_value(v, vlen)) != NULL) {
            err_set(err, CUT_EINVAL, "extract", "the value of {%.*s} %s", (int)nlen, open + 1, why);
            goto out;
        }
        if (!buf_append(&out, v, vlen))
            goto too_long;
        p = close + 1;
    }
    if (out.len == 0 || out.data[0] == '/') {
        err_set(err, CUT_EINVAL, "extract", "the S3 key is empty or starts with '/'");
        goto out;
    }
    /* a value and the literal text beside it can still make a "." or ".." segment */
    if (bad_value(out.data, out.len) != NULL) {
        err_set(err, CUT_EINVAL, "extract", "the S3 key \"%s\" %s", out.data,
                bad_value(out.data, out.len));
        goto out;
    }
    key = buf_steal(&out);
    goto out;
too_long:
    err_set(err, CUT_EINVAL, "extract", "the S3 key is longer than %d bytes", EXTRACT_MAX_KEY);
out:
    buf_free(&out);
    return key;
}

char *extract_query_param(const char *target, const char *name)
{
    const char *q = target ? strchr(target, '?') : NULL;
    size_t nlen = name ? strlen(name) : 0;

    if (!q || nlen == 0)
        return NULL;
    q++;
    while (*q) {
        const char *end = strchr(q, '&');
        const char *eq;
        size_t plen = end ? (size_t)(end - q) : strlen(q);
        char *k, *v;
        long kl, vl;

        eq = memchr(q, '=', plen);
        size_t klen = eq ? (size_t)(eq - q) : plen;
        k = xmalloc(klen + 1);
        kl = pct_decode(q, klen, k, klen + 1);
        if (kl >= 0 && (size_t)kl == nlen && memcmp(k, name, nlen) == 0) {
            size_t vlen = eq ? plen - klen - 1 : 0;
            char *raw = xstrndup(eq ? eq + 1 : "", vlen);
            for (char *c = raw; *c; c++)
                if (*c == '+')
                    *c = ' ';
            v = xmalloc(vlen + 1);
            vl = pct_decode(raw, vlen, v, vlen + 1);
            free(raw);
            free(k);
            if (vl < 0 || memchr(v, 0, (size_t)vl)) {
                free(v);
                return NULL;
            }
            return v;
        }
        free(k);
        if (!end)
            break;
        q = end + 1;
    }
    return NULL;
}
