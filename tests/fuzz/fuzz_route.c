/*
 * Fuzz target: path-template matching (proxy/route.c) with the templates as the
 * configuration parses them (core/config.c). The input is "TEMPLATE\nTARGET": the template
 * becomes a signed_url route's path, the target is matched against it. Checked properties:
 * no crash or read outside the input; a template the configuration refuses is never used;
 * a match with its variables implies a match without them (the cheap path agrees), with as
 * many variables as the template has, each named as in the template; each value is its raw
 * segment percent-decoded, whole and not empty (a segment that decodes to a NUL byte never
 * matches); and re-encoding every value (each byte %XX) into the template gives a target
 * that matches with the same values.
 */
#include "core/config.h"
#include "proxy/proxy_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct config *config_with(const char *tpl)
{
    struct cfg_problems p = {0};
    json_t *route =
        json_pack("{s:s, s:s, s:s, s:{s:s}, s:{s:s}}", "name", "r", "kind", "signed_url", "path",
                  tpl, "url", "response_json", "/url", "key", "response_json", "/storage_key");
    json_t *root = json_pack("{s:s, s:s, s:[o]}", "listen", "127.0.0.1:1", "upstream",
                             "http://127.0.0.1:2", "routes", route);
    char *text = root ? json_dumps(root, 0) : NULL;
    struct config *cfg = text ? config_parse(text, "fuzz", &p) : NULL;
    json_decref(root);
    free(text);
    cfg_problems_free(&p);
    return cfg;
}

/* The target made of the template with each variable replaced by its value, %XX-encoded. */
static char *reencode(const struct cfg_route *r, const struct proxy_match *m)
{
    struct buf b;
    size_t v = 0;
    buf_init(&b, 0);
    for (size_t i = 0; i < r->nsegments; i++) {
        if (!buf_append(&b, "/", 1))
            abort();
        if (!r->segments[i].is_var) {
            if (!buf_append(&b, r->segments[i].text, strlen(r->segments[i].text)))
                abort();
            continue;
        }
        for (const char *c = m->var_values[v++]; *c; c++) {
            char hex[4];
            snprintf(hex, sizeof(hex), "%%%02X", (unsigned char)*c);
            if (!buf_append(&b, hex, 3))
                abort();
        }
    }
    if (!buf_append(&b, "", 1))
        abort();
    return (char *)b.data;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    char *tpl, *target;
    struct config *cfg;
    struct proxy_match m = {0}, m0 = {0}, m2 = {0};

    if (nl == NULL || size > 4096)
        return 0;
    tpl = xstrndup((const char *)data, (size_t)(nl - data));
    target = xstrndup((const char *)nl + 1, size - (size_t)(nl - data) - 1);
    cfg = config_with(tpl);
    if (cfg == NULL || strlen(target) == 0)
        goto out;
    const struct cfg_route *r = &cfg->routes[0];
    bool with = px_route_match(cfg, "GET", target, true, &m);
    bool without = px_route_match(cfg, "GET", target, false, &m0);
    if (with && !without)
        abort(); /* the cheap path must not miss what the full one matches */
    if (!with)
        goto out;
    size_t nvar = 0;
    for (size_t i = 0; i < r->nsegments; i++)
        nvar += r->segments[i].is_var;
    if (m.route != r || m.nvars != nvar)
        abort();
    const char *p = target, *end = target + strcspn(target, "?");
    size_t v = 0;
    for (size_t i = 0; i < r->nsegments; i++) {
        const char *seg = ++p; /* past the '/' */
        while (p < end && *p != '/')
            p++;
        if (!r->segments[i].is_var)
            continue;
        size_t slen = (size_t)(p - seg);
        char *dec = xmalloc(slen + 1);
        long dlen = pct_decode(seg, slen, dec, slen + 1);
        if (strcmp(m.var_names[v], r->segments[i].text) != 0 || m.var_values[v][0] == '\0' ||
            dlen < 0 || (size_t)dlen != strlen(m.var_values[v]) ||
            memcmp(dec, m.var_values[v], (size_t)dlen) != 0)
            abort();
        free(dec);
        v++;
    }
    char *again = reencode(r, &m);
    if (!px_route_match(cfg, "GET", again, true, &m2) || m2.nvars != m.nvars)
        abort();
    for (size_t i = 0; i < m.nvars; i++)
        if (strcmp(m.var_values[i], m2.var_values[i]) != 0)
            abort();
    free(again);
out:
    px_match_clear(&m);
    px_match_clear(&m0);
    px_match_clear(&m2);
    config_free(cfg);
    free(tpl);
    free(target);
    return 0;
}
