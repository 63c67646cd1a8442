/*
 * route: matches a request against the configured routes on the raw request target, one
 * path segment at a time, so that an encoded slash (%2F) inside a key never splits a
 * segment. Literal segments compare byte for byte with the raw text; variable segments
 * capture the raw text and are then percent-decoded. The query string is ignored. Cost on
 * the pass-through path: one walk over the path per route with the request's method; an
 * observer alone needs the route only, and then nothing is decoded or allocated.
 */
#include "proxy/http_check.h"
#include "proxy/proxy_int.h"

#include <stdlib.h>
#include <string.h>

void px_match_clear(struct proxy_match *m)
{
    for (size_t i = 0; i < m->nvars; i++)
        free(m->var_values[i]);
    memset(m, 0, sizeof(*m));
}

static bool match_one(const struct cfg_route *r, const char *path, size_t plen, bool want_vars,
                      struct proxy_match *m)
{
    const char *p = path, *end = path + plen;
    memset(m, 0, sizeof(*m));
    for (size_t i = 0; i < r->nsegments; i++) {
        if (p >= end || *p != '/')
            goto fail;
        p++;
        const char *seg = p;
        while (p < end && *p != '/')
            p++;
        size_t slen = (size_t)(p - seg);
        const struct cfg_segment *s = &r->segments[i];
        if (s->is_var && !want_vars) {
            if (slen == 0)
                goto fail;
        } else if (s->is_var) {
            if (slen == 0 || m->nvars >= PROXY_MAX_VARS)
                goto fail;
            char *v = xmalloc(slen + 1);
            size_t vlen;
            if (!http_percent_decode(seg, slen, v, &vlen)) {
                free(v);
                goto fail;
            }
            m->var_names[m->nvars] = s->text;
            m->var_values[m->nvars++] = v;
        } else if (strlen(s->text) != slen || memcmp(s->text, seg, slen) != 0) {
            goto fail;
        }
    }
    /* a single trailing slash is tolerated */
    if (p < end && !(p + 1 == end && *p == '/'))
        goto fail;
    m->route = r;
    return true;
fail:
    px_match_clear(m);
    return false;
}

bool px_route_match(const struct config *cfg, const char *method, const char *target,
                    bool want_vars, struct proxy_match *m)
{
    size_t plen = strcspn(target, "?");
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct cfg_route *r = &cfg->routes[i];
        if (r->method && strcmp(r->method, method) != 0)
            continue;
        if (match_one(r, target, plen, want_vars, m))
            return true;
    }
    return false;
}
