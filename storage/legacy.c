/*
 * legacy: the legacy store's URL template, its headers and the blocking fetch.
 *
 * The store keeps what every GET needs ready: the template split around {key}, the header
 * lines as one curl list built once (the values may be credentials: they are only ever
 * handed to libcurl, never formatted into a message), the timeout, the ceiling and the
 * attempts. The GET itself runs on a transfer engine (xfer.c), which classifies its end
 * into a legacy_result; legacy_fetch() is the blocking wrapper the command line uses.
 */
#include "storage/legacy.h"
#include "storage/sigv4.h"
#include "storage/xfer.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#define LEGACY_MAX_KEY 1024
#define LEGACY_DEFAULT_MAX_BYTES (5ull << 30)

struct legacy_store {
    char *prefix; /* the template before {key} */
    char *suffix; /* and after */
    struct curl_slist *headers;
    int timeout_s;
    uint64_t max_bytes;
    int max_attempts;
};

legacy_store *legacy_new(const struct cfg_legacy *cfg, const struct legacy_opts *opts, cut_err *err)
{
    legacy_store *s = NULL;
    const char *at;

    if (cfg == NULL || cfg->raw_url == NULL || !cfg->raw_url[0]) {
        err_set(err, CUT_EINVAL, "legacy", "legacy.raw_url: missing");
        goto out;
    }
    at = strstr(cfg->raw_url, "{key}");
    if (at == NULL) {
        err_set(err, CUT_EINVAL, "legacy", "legacy.raw_url: no {key} in the template");
        goto out;
    }
    s = xcalloc(1, sizeof(*s));
    s->prefix = xstrndup(cfg->raw_url, (size_t)(at - cfg->raw_url));
    s->suffix = xstrdup(at + 5);
    for (size_t i = 0; i < cfg->nheaders; i++) {
        char *line = xasprintf("%s: %s", cfg->headers[i].name, cfg->headers[i].value);
        struct curl_slist *n = curl_slist_append(s->headers, line);
        size_t l = strlen(line);
        memset(line, 0, l); /* the value may be a credential */
        free(line);
        if (n == NULL)
            abort();
        s->headers = n;
    }
    s->timeout_s = opts && opts->timeout_s > 0 ? opts->timeout_s
                   : cfg->timeout_s > 0        ? cfg->timeout_s
                                               : 30;
    s->max_bytes = opts && opts->max_bytes ? opts->max_bytes : LEGACY_DEFAULT_MAX_BYTES;
    s->max_attempts = opts && opts->max_attempts > 0 ? opts->max_attempts : 3;
out:
    return s;
}

void legacy_free(legacy_store *s)
{
    if (s == NULL)
        return;
    curl_slist_free_all(s->headers);
    free(s->prefix);
    free(s->suffix);
    free(s);
}

char *legacy_url(const legacy_store *s, const char *key, cut_err *err)
{
    char enc[3 * LEGACY_MAX_KEY + 1];

    if (key == NULL || !key[0]) {
        err_set(err, CUT_EINVAL, "legacy", "empty key");
        return NULL;
    }
    if (strlen(key) > LEGACY_MAX_KEY ||
        sigv4_encode(key, strlen(key), false, enc, sizeof(enc)) < 0) {
        err_set(err, CUT_ELIMIT, "legacy", "key longer than %d bytes", LEGACY_MAX_KEY);
        return NULL;
    }
    return xasprintf("%s%s%s", s->prefix, enc, s->suffix);
}

const char *legacy_fail_name(enum legacy_fail f)
{
    switch (f) {
    case LEGACY_OK:
        return "ok";
    case LEGACY_NOT_FOUND:
        return "not found";
    case LEGACY_HTTP_STATUS:
        return "HTTP error";
    case LEGACY_TIMEOUT:
        return "timeout";
    case LEGACY_UNREACHABLE:
        return "no answer";
    case LEGACY_TOO_LARGE:
        return "over the size ceiling";
    case LEGACY_SHORT:
        return "body shorter than announced";
    }
    return "?";
}

void *legacy_header_list(const legacy_store *s)
{
    return s->headers;
}

int legacy_timeout_s(const legacy_store *s)
{
    return s->timeout_s;
}

uint64_t legacy_max_bytes(const legacy_store *s)
{
    return s->max_bytes;
}

int legacy_max_attempts(const legacy_store *s)
{
    return s->max_attempts;
}

int legacy_fetch(legacy_store *s, struct xfer_engine *e, const char *key,
                 int (*sink)(void *arg, const void *data, size_t n), void *arg,
                 struct legacy_result *res, cut_err *err)
{
    struct xfer_src src = {.kind = XFER_SRC_LEGACY, .key = key, .legacy = s};
    struct xfer_sink dst = {.kind = XFER_SINK_CALLBACK, .fn = sink, .arg = arg};
    struct xfer_outcome o;
    int rc = xfer_copy_wait(e, &src, &dst, &o, err);

    *res = o.legacy;
    return rc;
}
