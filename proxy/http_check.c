/*
 * http_check: verdicts on a request's line and header fields, made in the first handler
 * call, before libmicrohttpd reads any body byte. Each field is looked at once while
 * libmicrohttpd's parsed list is walked; the verdict is the first refusal met, so the
 * reason in the 400 names the root cause. libmicrohttpd 0.9.75 glues obs-fold text onto the
 * previous field's *name* and keeps whitespace before the colon in the name, so a name that
 * is not a token, or that starts like a framing field without being one, means the header
 * block was mangled and is refused rather than guessed at. Pure functions, no I/O: the
 * same code serves the proxy, the tests and a fuzz target.
 */
#include "proxy/http_check.h"

#include <string.h>
#include <strings.h>

static const char *const default_methods[] = {"GET",    "HEAD",    "POST", "PUT",
                                              "DELETE", "OPTIONS", "PATCH"};

static bool tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool http_is_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!tchar((unsigned char)s[i]))
            return false;
    return true;
}

bool http_value_ok(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static bool name_is(const char *name, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(name, lit, n) == 0;
}

bool http_is_hop_by_hop(const char *name, size_t n)
{
    static const char *const hop[] = {"connection", "keep-alive",     "proxy-connection",
                                      "te",         "trailer",        "transfer-encoding",
                                      "upgrade",    "content-length", "expect"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (name_is(name, n, hop[i]))
            return true;
    return false;
}

bool http_list_has(const char *list, const char *token, size_t tlen)
{
    const char *p = list;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tlen && strncasecmp(s, token, tlen) == 0)
            return true;
    }
    return false;
}

bool http_parse_length(const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    if (n == 0 || n > 19)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        uint64_t d = (uint64_t)(v[i] - '0');
        /* the length is used as an int64_t: larger is refused, not wrapped */
        if (x > ((uint64_t)INT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

bool http_target_ok(const char *t, size_t n)
{
    if (n == 0 || t[0] != '/')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return false;
    }
    return true;
}

bool http_percent_decode(const char *s, size_t n, char *out, size_t *outlen)
{
    long len = pct_decode(s, n, out, n + 1);

    if (len < 0 || memchr(out, '\0', (size_t)len) != NULL)
        return false;
    *outlen = (size_t)len;
    return true;
}

static void refuse(struct http_check *c, int status, const char *reason)
{
    if (c->status == 0) {
        c->status = status;
        c->reason = reason;
    }
}

void http_check_begin(struct http_check *c, const struct cfg_limits *lim, const char *method,
                      const char *target, const char *version)
{
    memset(c, 0, sizeof(*c));
    c->lim = lim;
    size_t tlen = target ? strlen(target) : 0;
    c->bytes = strlen(method) + tlen + strlen(version) + 4;
    bool allowed = false;
    if (lim->nmethods > 0) {
        for (size_t i = 0; i < lim->nmethods && !allowed; i++)
            allowed = strcmp(lim->methods[i], method) == 0;
    } else {
        for (size_t i = 0; i < sizeof(default_methods) / sizeof(default_methods[0]); i++)
            allowed = allowed || strcmp(default_methods[i], method) == 0;
    }
    if (!http_is_token(method, strlen(method)) || !allowed)
        refuse(c, 400, "method not allowed by the proxy");
    if (strcmp(version, "HTTP/1.1") != 0 && strcmp(version, "HTTP/1.0") != 0)
        refuse(c, 400, "unsupported HTTP version");
    c->http11 = strcmp(version, "HTTP/1.1") == 0;
    if (!target || !http_target_ok(target, tlen))
        refuse(c, 400, "request target is not a valid origin-form");
}

void http_check_field(struct http_check *c, const char *name, size_t nlen, const char *value,
                      size_t vlen)
{
    c->nfields++;
    c->bytes += nlen + vlen + 4;
    if (!http_is_token(name, nlen)) {
        refuse(c, 400, "header name is not a token (whitespace or obs-fold)");
        return;
    }
    if (!http_value_ok(value, vlen)) {
        refuse(c, 400, "header value holds a control character");
        return;
    }
    if (name_is(name, nlen, "content-length")) {
        uint64_t v;
        if (c->ncl++ > 0 || !http_parse_length(value, vlen, &v))
            c->cl_bad = true;
        else
            c->content_length = v;
    } else if (name_is(name, nlen, "transfer-encoding")) {
        /* exactly one field whose value is exactly "chunked" (case-insensitive) */
        if (c->nte++ > 0 || !name_is(value, vlen, "chunked"))
            c->te_bad = true;
        else
            c->chunked = true;
    } else if (name_is(name, nlen, "host")) {
        c->nhost++;
    } else if ((nlen > 14 && strncasecmp(name, "content-length", 14) == 0) ||
               (nlen > 17 && strncasecmp(name, "transfer-encoding", 17) == 0) ||
               (nlen > 4 && strncasecmp(name, "host", 4) == 0 &&
                !(name[4] == '-' || name[4] == '_'))) {
        refuse(c, 400, "header name mangled (obs-fold glued onto a framing field)");
    }
}

int http_check_end(struct http_check *c)
{
    const struct cfg_limits *lim = c->lim;
    /* size first: an oversized block is answered 431 whatever else is wrong with it */
    if ((lim->max_header_bytes && c->bytes > lim->max_header_bytes) ||
        (lim->max_headers && c->nfields > lim->max_headers)) {
        c->status = 431;
        c->reason = "request header fields too large";
        return c->status;
    }
    if (c->ncl > 0 && c->nte > 0)
        refuse(c, 400, "both Content-Length and Transfer-Encoding");
    if (c->cl_bad)
        refuse(c, 400, "invalid or repeated Content-Length");
    if (c->te_bad)
        refuse(c, 400, "Transfer-Encoding other than a single chunked");
    /* RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing */
    if (c->nte > 0 && !c->http11)
        refuse(c, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (c->nhost > 1)
        refuse(c, 400, "repeated Host");
    if (c->nhost == 0 && c->http11)
        refuse(c, 400, "missing Host");
    if (c->status == 0 && lim->max_body_bytes && c->ncl == 1 &&
        c->content_length > lim->max_body_bytes)
        refuse(c, 413, "request body larger than the proxy's limit");
    return c->status;
}
