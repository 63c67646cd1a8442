/*
 * http_check: the request checks done before any byte of a request reaches the app, as
 * pure functions over names and values (no sockets), so that they can be unit-tested and
 * fuzzed. libmicrohttpd 0.9.75 accepts smuggling-shaped requests on its own; these checks
 * are what refuses them.
 */
#ifndef CUTOVER_HTTP_CHECK_H
#define CUTOVER_HTTP_CHECK_H

#include "core/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 9110 §5.6.2 token. */
bool http_is_token(const char *s, size_t n);
/* A field value without control characters (HTAB allowed) and without DEL. */
bool http_value_ok(const char *v, size_t n);
/* Hop-by-hop per RFC 9110 §7.6.1 (plus Proxy-Connection and Trailer), or a framing header
 * the proxy sets itself (Content-Length, Transfer-Encoding, Expect, Host is NOT one). */
bool http_is_hop_by_hop(const char *name, size_t n);
/* True when the comma-separated list (a Connection value) names token, case-insensitive. */
bool http_list_has(const char *list, const char *token, size_t tlen);
/* Strict decimal Content-Length (digits only, no sign, at most INT64_MAX). */
bool http_parse_length(const char *v, size_t n, uint64_t *out);
/* An origin-form target: starts with '/', visible ASCII only, no '#'. */
bool http_target_ok(const char *t, size_t n);
/* Percent-decodes s[0..n) into out (room for n+1); false on a bad escape or a NUL. */
bool http_percent_decode(const char *s, size_t n, char *out, size_t *outlen);

/* Accumulates the verdict over one request's header fields. */
struct http_check {
    const struct cfg_limits *lim;
    size_t bytes; /* request line + fields, as they were on the wire (approximately) */
    size_t nfields;
    int ncl, nte, nhost;
    uint64_t content_length;
    bool cl_bad, te_bad, chunked, http11;
    int status; /* 0 while fine; the first refusal wins */
    const char *reason;
};

void http_check_begin(struct http_check *c, const struct cfg_limits *lim, const char *method,
                      const char *target, const char *version);
void http_check_field(struct http_check *c, const char *name, size_t nlen, const char *value,
                      size_t vlen);
/* Returns 0 (forward it) or the status to refuse with; c->reason says why. */
int http_check_end(struct http_check *c);

#endif
