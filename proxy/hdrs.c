/*
 * hdrs: the header lists an exchange carries (the request's fields for the app, the answer's
 * for the client): "Name: value" lines stored back to back in one buffer, each ended by a
 * NUL (see proxy_int.h). Shared by the front end (server.c) and the app side (upstream.c),
 * so that neither reaches into the other for them.
 */
#include "proxy/proxy_int.h"

#include <string.h>

bool px_hdrs_add(struct buf *h, const char *name, size_t nlen, const char *sep, size_t slen,
                 const char *value, size_t vlen, cut_err *err)
{
    size_t len = h->len;
    if (!buf_append(h, name, nlen) || !buf_append(h, sep, slen) || !buf_append(h, value, vlen) ||
        !buf_append(h, "", 1)) {
        h->len = len;
        if (h->data)
            h->data[len] = 0;
        err_set(err, CUT_ELIMIT, "proxy", "header list over %u bytes", PX_HDRS_MAX);
        return false;
    }
    return true;
}

void px_hdrs_filter(struct buf *h, bool (*drop)(const char *line, void *arg), void *arg)
{
    size_t w = 0, r = 0;
    while (r < h->len) {
        size_t n = strlen(h->data + r) + 1;
        if (!drop(h->data + r, arg)) {
            if (w != r)
                memmove(h->data + w, h->data + r, n);
            w += n;
        }
        r += n;
    }
    h->len = w;
    if (h->data)
        h->data[w] = 0;
}
