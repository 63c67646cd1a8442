/*
 * inproc: the proxy run inside a test process, as the features will run it, in front of
 * the fixture app (fixture.h): a configuration with an upload route (POST /documents), a
 * signed-URL route (GET /json/{key}) and a delete route (DELETE /documents/{key}).
 */
#ifndef CUTOVER_TEST_PROXY_INPROC_H
#define CUTOVER_TEST_PROXY_INPROC_H

#include "proxy/proxy.h"
#include "tests/testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses a configuration for a proxy on a free port in front of upstream (an http:// URL),
 * with extra_top ("" or JSON members ending in a comma) added at the top level. Returns a
 * new config (config_free()) or NULL; *port is the data port. */
static inline struct config *inproc_config_url(const char *upstream, const char *extra_top,
                                               int *port)
{
    char text[4096];
    *port = test_free_port();
    snprintf(
        text, sizeof(text),
        "{%s\"listen\":\"127.0.0.1:%d\",\"upstream\":\"%s\","
        "\"admin\":{\"listen\":\"127.0.0.1:%d\"},\"log\":{\"level\":\"error\",\"access\":false},"
        "\"s3\":{\"region\":\"eu-west-1\",\"bucket\":\"documents\"},"
        "\"routes\":["
        "{\"name\":\"upload\",\"kind\":\"upload\",\"path\":\"/documents\","
        "\"key\":{\"response_json\":\"/id\"}},"
        "{\"name\":\"delete\",\"kind\":\"delete\",\"method\":\"DELETE\","
        "\"path\":\"/documents/{key}\",\"key\":{\"path\":\"key\"}},"
        "{\"name\":\"signed-url\",\"kind\":\"signed_url\",\"path\":\"/json/{key}\","
        "\"url\":{\"response_json\":\"/url\"}}]}",
        extra_top, *port, upstream, test_free_port());
    struct cfg_problems probs = {0};
    struct config *cfg = config_parse(text, "test", &probs);
    for (size_t i = 0; i < probs.n; i++)
        fprintf(stderr, "config: %s\n", probs.lines[i]);
    cfg_problems_free(&probs);
    return cfg;
}

/* The same in front of 127.0.0.1:upstream_port. */
static inline struct config *inproc_config(int upstream_port, const char *extra_top, int *port)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", upstream_port);
    return inproc_config_url(url, extra_top, port);
}

/* The value of path variable name in m, or "". */
static inline const char *inproc_var(const struct proxy_match *m, const char *name)
{
    for (size_t i = 0; i < m->nvars; i++)
        if (strcmp(m->var_names[i], name) == 0)
            return m->var_values[i];
    return "";
}

#endif
