/*
 * Configuration: one JSON file (INTERFACE.md) plus the environment, parsed with jansson into
 * one immutable struct. Scalar settings of every section are described by one table per
 * section (name, type, where it lands, default, range, one line of documentation): the same
 * tables fill the defaults, check types and ranges, and print the reference for the README.
 * Objects with structure of their own (routes, value sources, sse, the backfill source) have
 * small dedicated parsers. Loading never stops at the first problem: every bad key is
 * reported with its path (`routes[1].url`) and the reason, then the load fails.
 */
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_CONFIG_FILE (4u << 20)

enum ftype { FT_STRING, FT_SECRET, FT_BOOL, FT_INT, FT_U64, FT_SIZE, FT_DOUBLE, FT_LISTEN };

struct field {
    const char *name;
    enum ftype type;
    size_t off;  /* offset in struct config */
    size_t off2; /* FT_LISTEN: offset of the port */
    const char *def;
    double min, max;
    const char *env; /* FT_SECRET: standard variable used when the file has no value */
    const char *doc;
};

#define OFF(f) offsetof(struct config, f)
#define GIB (1024.0 * 1024 * 1024)
#define MIB (1024.0 * 1024)

static const struct field root_fields[] = {
    {"listen", FT_LISTEN, OFF(listen_host), OFF(listen_port), "0.0.0.0:8081", 0, 0, NULL,
     "address of the data port the application's clients reach"},
    {"upstream", FT_STRING, OFF(upstream), 0, "http://127.0.0.1:8080", 0, 0, NULL,
     "the application, http://host:port (plain HTTP: it is in the same pod)"},
    {"database_url", FT_SECRET, OFF(database_url), 0, NULL, 0, 0, "DATABASE_URL",
     "PostgreSQL URL of cutover's own state (schema `cutover`)"},
    {"spool_dir", FT_STRING, OFF(spool_dir), 0, "/var/spool/cutover", 0, 0, NULL,
     "where upload bodies are teed until they are copied to S3"},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL},
};

static const struct field admin_fields[] = {
    {"listen", FT_LISTEN, OFF(admin_host), OFF(admin_port), "127.0.0.1:9090", 0, 0, NULL,
     "address of the admin port (API, dashboard, /metrics, probes)"},
    {"token", FT_SECRET, OFF(admin_token), 0, NULL, 0, 0, "CUTOVER_ADMIN_TOKEN",
     "bearer token required on /admin/*; without one every /admin/ call is refused (403) "
     "unless `admin.allow_unauthenticated`"},
    {"allow_unauthenticated", FT_BOOL, OFF(admin_allow_unauthenticated), 0, "false", 0, 0, NULL,
     "with no token set, serve /admin/* without one; only with a loopback `admin.listen` "
     "(127.x.x.x or [::1])"},
    {"max_auth_failures", FT_INT, OFF(admin_max_auth_failures), 0, "5", 1, 1000, NULL,
     "wrong tokens from one client address within `admin.auth_lockout_s` before that address "
     "is refused (429)"},
    {"auth_lockout_s", FT_INT, OFF(admin_auth_lockout_s), 0, "60", 1, 86400, NULL,
     "window for counting wrong tokens, and how long an address is then refused, seconds"},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL},
};

static const struct field log_fields[] = {
    {"level", FT_STRING, 0, 0, "info", 0, 0, NULL, "debug, info, warn, error or off"},
    {"access", FT_BOOL, OFF(access_log), 0, "true", 0, 0, NULL, "one JSON line per request"},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL},
};

static const struct field s3_fields[] = {
    {"endpoint", FT_STRING, OFF(s3.endpoint), 0, NULL, 0, 0, NULL,
     "S3 endpoint URL; default https://s3.<region>.amazonaws.com"},
    {"region", FT_STRING, OFF(s3.region), 0, NULL, 0, 0, NULL,
     "AWS region; default $AWS_REGION or $AWS_DEFAULT_REGION"},
    {"bucket", FT_STRING, OFF(s3.bucket), 0, NULL, 0, 0, NULL, "destination bucket (required)"},
    {"path_style", FT_BOOL, OFF(s3.path_style), 0, "false", 0, 0, NULL,
     "path-style addressing (emulators) instead of virtual-hosted style"},
    {"presign_expires", FT_INT, OFF(s3.presign_expires), 0, "3600", 1, 604800, NULL,
     "lifetime of presigned URLs, seconds"},
    {"multipart_threshold", FT_U64, OFF(s3.multipart_threshold), 0, "67108864", 5 * MIB,
     5 * 1024 * GIB, NULL, "objects from this size up are sent as multipart uploads, bytes"},
    {"part_size", FT_U64, OFF(s3.part_size), 0, "16777216", 5 * MIB, 5 * GIB, NULL,
     "multipart part size, bytes"},
    {"max_attempts", FT_INT, OFF(s3.max_attempts), 0, "5", 1, 20, NULL,
     "attempts per S3 call (retries on 5xx, SlowDown, timeouts)"},
    {"retry_base_ms", FT_INT, OFF(s3.retry_base_ms), 0, "100", 1, 60000, NULL,
     "first backoff ceiling; doubles per attempt, full jitter"},
    {"retry_max_total_ms", FT_INT, OFF(s3.retry_max_total_ms), 0, "30000", 1, 3600000, NULL,
     "total time one call may spend retrying"},
    {"timeout_s", FT_INT, OFF(s3.timeout_s), 0, "300", 1, 86400, NULL, "per request"},
    {"access_key_id", FT_SECRET, OFF(s3.access_key_id), 0, NULL, 0, 0, NULL,
     "static credentials; default the AWS chain (env, web identity, container)"},
    {"secret_access_key", FT_SECRET, OFF(s3.secret_access_key), 0, NULL, 0, 0, NULL,
     "static credentials (use env:NAME)"},
    {"session_token", FT_SECRET, OFF(s3.session_token), 0, NULL, 0, 0, NULL,
     "static session token (use env:NAME)"},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL},
};

static const struct field legacy_fields[] = {
    {"raw_url", FT_STRING, OFF(legacy.raw_url), 0, NULL, 0, 0, NULL,
     "URL template of a document's raw original, with {key} (required)"},
    {"timeout_s", FT_INT, OFF(legacy.timeout_s), 0, "60", 1, 86400, NULL, "per fetch"},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL},
};

static const struct field backfill_fields[] = {
    {"rate", FT_DOUBLE, OFF(backfill.rate), 0, "50", 0, 1e6, NULL,
     "documents per second across this process, 0 = unlimited"},
    {"concurrency", FT_INT, OFF(backfill.concurrency), 0, "8", 1, 256, NULL,
     "documents copied at once"},
    {"rate_bytes", FT_DOUBLE, OFF(backfill.rate_bytes), 0, "0", 0, 1e12, NULL,
     "bytes per second read from the legacy store across this process, 0 = unlimited"},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL},
};

static const struct field limits_fields[] = {
    {"max_header_bytes", FT_SIZE, OFF(limits.max_header_bytes), 0, "16384", 1024, 1 * MIB, NULL,
     "request line plus headers; more is answered 431"},
    {"max_headers", FT_SIZE, OFF(limits.max_headers), 0, "100", 1, 10000, NULL,
     "header lines per request; more is answered 431"},
    {"max_body_bytes", FT_U64, OFF(limits.max_body_bytes), 0, "5368709120", 0, 5 * 1024 * GIB, NULL,
     "request body; more is answered 413 (before 100 Continue)"},
    {"header_timeout_s", FT_INT, OFF(limits.header_timeout_s), 0, "30", 1, 3600, NULL,
     "the whole request header must arrive within this time"},
    {"idle_timeout_s", FT_INT, OFF(limits.idle_timeout_s), 0, "60", 1, 86400, NULL,
     "idle keep-alive connections are closed after this time"},
    {"upstream_connect_timeout_s", FT_INT, OFF(limits.upstream_connect_timeout_s), 0, "5", 1, 600,
     NULL, "connecting to the application; failure is answered 502"},
    {"upstream_timeout_s", FT_INT, OFF(limits.upstream_timeout_s), 0, "60", 1, 86400, NULL,
     "waiting for the application's answer; longer is answered 504"},
    {"shutdown_grace_s", FT_INT, OFF(limits.shutdown_grace_s), 0, "25", 0, 3600, NULL,
     "on SIGTERM, in-flight requests get this long to finish"},
    {"max_connections", FT_SIZE, OFF(limits.max_connections), 0, "10000", 1, 1000000, NULL,
     "client connections at once"},
    {"max_json_answer", FT_SIZE, OFF(limits.max_json_answer), 0, "1048576", 1024, 64 * MIB, NULL,
     "largest application answer held to rewrite a signed URL"},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL},
};

static const struct field workers_fields[] = {
    {"proxy_loops", FT_INT, OFF(workers.proxy_loops), 0, "1", 0, 16, NULL,
     "event loops (threads) serving the data port; 0 = one per CPU. One loop serves about "
     "40k small requests/s on one core and leaves the pod's other CPUs to the app"},
    {"mirror", FT_INT, OFF(workers.mirror), 0, "4", 1, 256, NULL,
     "mirror concurrency: 4 × this many copies to S3 in flight per sidecar"},
    {"lease_s", FT_INT, OFF(workers.lease_s), 0, "300", 5, 86400, NULL,
     "a claimed job returns to the queue after this time if its worker died"},
    {"max_attempts", FT_INT, OFF(workers.max_attempts), 0, "10", 1, 1000, NULL,
     "copies tried before a document is `failed`"},
    {"max_backoff_s", FT_INT, OFF(workers.max_backoff_s), 0, "10", 1, 3600, NULL,
     "longest wait between two copy attempts (1 s, then doubling up to this): documents are "
     "verified this soon after S3 is back from an outage"},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL},
};

static const struct field shadow_fields[] = {
    {"concurrency", FT_INT, OFF(shadow.concurrency), 0, "4", 1, 64, NULL,
     "shadow compares at once per sidecar; a read beyond it is skipped (counted as busy)"},
    {"bytes_per_s", FT_U64, OFF(shadow.bytes_per_s), 0, "8388608", 1, 10 * GIB, NULL,
     "shadow bytes per second asked of each store (token bucket, one second of burst)"},
    {"timeout_s", FT_INT, OFF(shadow.timeout_s), 0, "30", 1, 3600, NULL,
     "per shadow fetch, the whole transfer"},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL},
};

static const char *const default_methods[] = {"GET",   "HEAD",   "POST",    "PUT",
                                              "PATCH", "DELETE", "OPTIONS", NULL};

struct ctx {
    struct cfg_problems *p;
    struct config *cfg;
};

static void vproblem(struct cfg_problems *p, const char *path, const char *fmt, va_list ap)
{
    char msg[600];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    p->lines = xrealloc(p->lines, (p->n + 1) * sizeof(char *));
    p->lines[p->n++] = xasprintf("%s: %s", path && *path ? path : "(top level)", msg);
}

void cfg_problem_add(struct cfg_problems *p, const char *path, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vproblem(p, path, fmt, ap);
    va_end(ap);
}

static void problem(struct ctx *c, const char *path, const char *fmt, ...) CUT_PRINTF(3, 4);

static void problem(struct ctx *c, const char *path, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vproblem(c->p, path, fmt, ap);
    va_end(ap);
}

/* "a" + "b" → "a.b"; "" + "b" → "b". Returns a new string. */
static char *join(const char *path, const char *key)
{
    if (path == NULL || *path == '\0')
        return xstrdup(key);
    return xasprintf("%s.%s", path, key);
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* Reports every member of obj not in allowed (NULL-terminated) and not in table. */
static void check_keys(struct ctx *c, const char *path, json_t *obj, const char *const *allowed,
                       const struct field *table)
{
    const char *key;
    json_t *v;

    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed && allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], key) == 0;
        for (size_t i = 0; table && table[i].name && !ok; i++)
            ok = strcmp(table[i].name, key) == 0;
        if (!ok) {
            char *p = join(path, key);
            problem(c, p, "unknown field");
            free(p);
        }
    }
}

/* A string value, with `env:NAME` read from the environment. Returns a new string or NULL
 * (problem reported) */
static char *string_value(struct ctx *c, const char *path, json_t *v)
{
    const char *s;

    if (!json_is_string(v)) {
        problem(c, path, "expected a string, got %s", type_name(v));
        return NULL;
    }
    s = json_string_value(v);
    if (strncmp(s, "env:", 4) == 0) {
        const char *e = getenv(s + 4);
        if (s[4] == '\0') {
            problem(c, path, "env: needs a variable name");
            return NULL;
        }
        if (e == NULL) {
            problem(c, path, "environment variable %s is not set", s + 4);
            return NULL;
        }
        return xstrdup(e);
    }
    if (strlen(s) != json_string_length(v)) {
        problem(c, path, "contains a NUL byte");
        return NULL;
    }
    return xstrdup(s);
}

static bool set_scalar(struct ctx *c, const struct field *f, const char *path, json_t *v,
                       const char *deftext)
{
    char *base = (char *)c->cfg;
    json_t *tmp = NULL;
    bool ok = false;

    if (v == NULL) {
        if (deftext == NULL)
            return true;
        if (f->type == FT_STRING || f->type == FT_SECRET || f->type == FT_LISTEN)
            v = tmp = json_string(deftext);
        else if (f->type == FT_BOOL)
            v = tmp = json_boolean(strcmp(deftext, "true") == 0);
        else
            v = tmp = json_real(strtod(deftext, NULL));
    }
    switch (f->type) {
    case FT_STRING:
    case FT_SECRET: {
        char *s = string_value(c, path, v);
        if (s == NULL)
            goto out;
        if (f->off) {
            free(*(char **)(base + f->off));
            *(char **)(base + f->off) = s;
        } else {
            free(s);
        }
        break;
    }
    case FT_LISTEN: {
        char *s = string_value(c, path, v), *host = NULL;
        int port;
        if (s == NULL)
            goto out;
        if (!parse_host_port(s, &host, &port)) {
            problem(c, path, "expected \"host:port\" with a port 0..65535, got \"%s\"", s);
            free(s);
            goto out;
        }
        free(s);
        free(*(char **)(base + f->off));
        *(char **)(base + f->off) = host;
        *(int *)(base + f->off2) = port;
        break;
    }
    case FT_BOOL:
        if (!json_is_boolean(v)) {
            problem(c, path, "expected true or false, got %s", type_name(v));
            goto out;
        }
        if (f->off)
            *(bool *)(base + f->off) = json_is_true(v);
        break;
    case FT_INT:
    case FT_U64:
    case FT_SIZE:
    case FT_DOUBLE: {
        double d;
        if (!json_is_number(v)) {
            problem(c, path, "expected a number, got %s", type_name(v));
            goto out;
        }
        d = json_number_value(v);
        if (d < f->min || d > f->max) {
            problem(c, path, "must be between %.15g and %.15g, got %.15g", f->min, f->max, d);
            goto out;
        }
        if (f->type != FT_DOUBLE && d != (double)(int64_t)d) {
            problem(c, path, "expected a whole number, got %g", d);
            goto out;
        }
        if (f->type == FT_INT)
            *(int *)(base + f->off) = (int)d;
        else if (f->type == FT_U64)
            *(uint64_t *)(base + f->off) = (uint64_t)d;
        else if (f->type == FT_SIZE)
            *(size_t *)(base + f->off) = (size_t)d;
        else
            *(double *)(base + f->off) = d;
        break;
    }
    }
    ok = true;
out:
    json_decref(tmp);
    return ok;
}

/* Applies a table to obj (which may be NULL: defaults only). */
static void apply_table(struct ctx *c, const char *path, json_t *obj, const struct field *table)
{
    for (const struct field *f = table; f->name; f++) {
        json_t *v = obj ? json_object_get(obj, f->name) : NULL;
        char *p = join(path, f->name);
        const char *def = f->def;
        if (v == NULL && f->type == FT_SECRET && f->env && getenv(f->env))
            def = getenv(f->env);
        set_scalar(c, f, p, v, def);
        free(p);
    }
}

/* obj[key] must be an object when present; returns it, NULL when absent or wrong. */
static json_t *section(struct ctx *c, json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);
    if (v != NULL && !json_is_object(v)) {
        problem(c, key, "expected an object, got %s", type_name(v));
        return NULL;
    }
    return v;
}

/* ---- value sources ------------------------------------------------------------------- */

static const struct {
    const char *name;
    enum src_kind kind;
} source_kinds[] = {
    {"header", SRC_HEADER},
    {"query", SRC_QUERY},
    {"path", SRC_PATH},
    {"form_field", SRC_FORM_FIELD},
    {"request_json", SRC_REQUEST_JSON},
    {"response_json", SRC_RESPONSE_JSON},
    {"response_header", SRC_RESPONSE_HEADER},
};

static bool is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return false;
    return true;
}

static bool is_var_name(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return true;
}

static bool route_has_var(const struct cfg_route *r, const char *name)
{
    for (size_t i = 0; i < r->nsegments; i++)
        if (r->segments[i].is_var && strcmp(r->segments[i].text, name) == 0)
            return true;
    return false;
}

static const char *source_expected =
    "expected one of {\"header\": N}, {\"query\": N}, {\"path\": VAR}, {\"form_field\": N}, "
    "{\"request_json\": POINTER}, {\"response_json\": POINTER}, {\"response_header\": N}";

/* Parses a value source. Returns false (problem reported) when invalid. */
static bool parse_source(struct ctx *c, const char *path, json_t *v, const struct cfg_route *r,
                         struct cfg_source *out)
{
    const char *key;
    json_t *val;

    if (!json_is_object(v) || json_object_size(v) != 1) {
        problem(c, path, "%s", source_expected);
        return false;
    }
    json_object_foreach(v, key, val)
    {
        size_t i;
        for (i = 0; i < sizeof(source_kinds) / sizeof(source_kinds[0]); i++)
            if (strcmp(source_kinds[i].name, key) == 0)
                break;
        if (i == sizeof(source_kinds) / sizeof(source_kinds[0])) {
            problem(c, path, "unknown source \"%s\"; %s", key, source_expected);
            return false;
        }
        if (!json_is_string(val)) {
            char *p = join(path, key);
            problem(c, p, "expected a string, got %s", type_name(val));
            free(p);
            return false;
        }
        const char *s = json_string_value(val);
        char *p = join(path, key);
        bool ok = true;
        switch (source_kinds[i].kind) {
        case SRC_REQUEST_JSON:
        case SRC_RESPONSE_JSON:
            if (*s != '\0' && *s != '/') {
                problem(c, p, "a JSON pointer (RFC 6901) is empty or starts with '/', got \"%s\"",
                        s);
                ok = false;
            }
            for (const char *q = s; ok && (q = strchr(q, '~')) != NULL; q++)
                if (q[1] != '0' && q[1] != '1') {
                    problem(c, p, "'~' must be followed by 0 or 1 in a JSON pointer");
                    ok = false;
                }
            break;
        case SRC_PATH:
            if (r && !route_has_var(r, s)) {
                problem(c, p, "the path template \"%s\" has no {%s}", r->path, s);
                ok = false;
            }
            break;
        case SRC_HEADER:
        case SRC_RESPONSE_HEADER:
            if (!is_token(s)) {
                problem(c, p, "\"%s\" is not a valid header name", s);
                ok = false;
            }
            break;
        default:
            if (*s == '\0') {
                problem(c, p, "must not be empty");
                ok = false;
            }
        }
        free(p);
        if (!ok)
            return false;
        out->kind = source_kinds[i].kind;
        out->name = xstrdup(s);
    }
    return true;
}

/* ---- routes -------------------------------------------------------------------------- */

static bool parse_template(struct ctx *c, const char *path, const char *tpl, struct cfg_route *r)
{
    const char *p = tpl;
    size_t nvars = 0;

    if (*tpl != '/') {
        problem(c, path, "must start with '/', got \"%s\"", tpl);
        return false;
    }
    if (strchr(tpl, '?') || strchr(tpl, '#')) {
        problem(c, path, "a path template has no query or fragment");
        return false;
    }
    while (*p == '/') {
        const char *start = ++p, *end = strchr(start, '/');
        size_t n = end ? (size_t)(end - start) : strlen(start);
        struct cfg_segment seg = {NULL, false};

        if (n > 0 && start[0] == '{') {
            if (start[n - 1] != '}' || !is_var_name(start + 1, n - 2)) {
                problem(c, path, "\"%.*s\": a variable is a whole segment {name}", (int)n, start);
                return false;
            }
            seg.is_var = true;
            seg.text = xstrndup(start + 1, n - 2);
            if (route_has_var(r, seg.text)) {
                problem(c, path, "variable {%s} appears twice", seg.text);
                free(seg.text);
                return false;
            }
        } else {
            if (memchr(start, '{', n) || memchr(start, '}', n)) {
                problem(c, path, "\"%.*s\": a variable is a whole segment {name}", (int)n, start);
                return false;
            }
            seg.text = xstrndup(start, n);
        }
        r->segments = xrealloc(r->segments, (r->nsegments + 1) * sizeof(*r->segments));
        r->segments[r->nsegments++] = seg;
        p = start + n;
    }
    for (size_t i = 0; i < r->nsegments; i++)
        nvars += r->segments[i].is_var;
    if (nvars > CFG_MAX_PATH_VARS) {
        problem(c, path, "%zu path variables; a route has at most %d", nvars, CFG_MAX_PATH_VARS);
        return false;
    }
    return true;
}

/* Checks that every {name} of an S3 key template is `key` or a declared var. */
static void check_s3_key(struct ctx *c, const char *path, const struct cfg_route *r)
{
    const char *p = r->s3_key;

    if (*p == '\0' || *p == '/') {
        problem(c, path, "an S3 key template must not be empty or start with '/'");
        return;
    }
    while ((p = strchr(p, '{')) != NULL) {
        const char *end = strchr(p, '}');
        bool known;
        if (end == NULL) {
            problem(c, path, "unclosed '{'");
            return;
        }
        known = (size_t)(end - p - 1) == 3 && strncmp(p + 1, "key", 3) == 0;
        for (size_t i = 0; i < r->nvars && !known; i++)
            known = strlen(r->vars[i].name) == (size_t)(end - p - 1) &&
                    strncmp(r->vars[i].name, p + 1, (size_t)(end - p - 1)) == 0;
        if (!known) {
            problem(c, path, "unknown variable {%.*s}: use {key} or a name from vars",
                    (int)(end - p - 1), p + 1);
            return;
        }
        p = end + 1;
    }
}

static void parse_route(struct ctx *c, const char *path, json_t *v, struct cfg_route *r)
{
    static const char *const allowed[] = {"name", "kind",   "method", "path",   "file_field", "key",
                                          "url",  "sticky", "vars",   "s3_key", NULL};
    json_t *x;
    char *p;

    if (!json_is_object(v)) {
        problem(c, path, "expected an object, got %s", type_name(v));
        return;
    }
    check_keys(c, path, v, allowed, NULL);

    p = join(path, "name");
    x = json_object_get(v, "name");
    if (x == NULL)
        problem(c, p, "required");
    else if ((r->name = string_value(c, p, x)) != NULL && *r->name == '\0')
        problem(c, p, "must not be empty");
    free(p);

    p = join(path, "kind");
    x = json_object_get(v, "kind");
    if (x == NULL) {
        problem(c, p, "required: upload, signed_url or delete");
    } else if (!json_is_string(x)) {
        problem(c, p, "expected a string, got %s", type_name(x));
    } else {
        const char *k = json_string_value(x);
        if (strcmp(k, "upload") == 0)
            r->kind = ROUTE_UPLOAD;
        else if (strcmp(k, "signed_url") == 0)
            r->kind = ROUTE_SIGNED_URL;
        else if (strcmp(k, "delete") == 0)
            r->kind = ROUTE_DELETE;
        else
            problem(c, p, "expected upload, signed_url or delete, got \"%s\"", k);
    }
    free(p);

    p = join(path, "method");
    x = json_object_get(v, "method");
    if (x != NULL) {
        r->method = string_value(c, p, x);
        if (r->method && !is_token(r->method)) {
            problem(c, p, "\"%s\" is not an HTTP method", r->method);
        } else if (r->method) {
            for (char *q = r->method; *q; q++)
                *q = (char)toupper((unsigned char)*q);
        }
    } else {
        r->method = xstrdup(r->kind == ROUTE_UPLOAD   ? "POST"
                            : r->kind == ROUTE_DELETE ? "DELETE"
                                                      : "GET");
    }
    free(p);

    p = join(path, "path");
    x = json_object_get(v, "path");
    if (x == NULL) {
        problem(c, p, "required: a path template such as \"/documents/{key}/url\"");
    } else if ((r->path = string_value(c, p, x)) != NULL) {
        parse_template(c, p, r->path, r);
    }
    free(p);

    /* vars before key and s3_key: they may refer to them */
    p = join(path, "vars");
    x = json_object_get(v, "vars");
    if (x != NULL && r->kind != ROUTE_UPLOAD) {
        problem(c, p, "only for routes of kind upload");
    } else if (x != NULL && !json_is_object(x)) {
        problem(c, p, "expected an object of name: source, got %s", type_name(x));
    } else if (x != NULL) {
        const char *name;
        json_t *src;
        r->vars = xcalloc(json_object_size(x), sizeof(*r->vars));
        json_object_foreach(x, name, src)
        {
            char *vp = join(p, name);
            if (!is_var_name(name, strlen(name)) || strcmp(name, "key") == 0) {
                problem(c, vp, "a variable name is letters, digits and '_', and not \"key\"");
            } else if (parse_source(c, vp, src, r, &r->vars[r->nvars].src)) {
                r->vars[r->nvars++].name = xstrdup(name);
            }
            free(vp);
        }
    }
    free(p);

    p = join(path, "key");
    x = json_object_get(v, "key");
    if (x != NULL) {
        parse_source(c, p, x, r, &r->key);
    } else if (r->kind == ROUTE_SIGNED_URL && route_has_var(r, "key")) {
        r->key.kind = SRC_PATH;
        r->key.name = xstrdup("key");
    } else if (r->kind != 0) {
        problem(c, p,
                "required: where the document's storage key is (e.g. {\"path\": \"key\"} "
                "or {\"response_json\": \"/storage_key\"})");
    }
    free(p);

    p = join(path, "url");
    x = json_object_get(v, "url");
    if (r->kind == ROUTE_SIGNED_URL) {
        const char *want =
            "expected {\"response_json\": ...} or {\"response_header\": \"Location\"}";
        if (x == NULL) {
            problem(c, p, "required: %s", want);
        } else if (!parse_source(c, p, x, r, &r->url)) {
            /* reported */
        } else if (r->url.kind != SRC_RESPONSE_JSON &&
                   !(r->url.kind == SRC_RESPONSE_HEADER &&
                     strcasecmp(r->url.name, "Location") == 0)) {
            problem(c, p, "%s", want);
        }
    } else if (x != NULL) {
        problem(c, p, "only for routes of kind signed_url");
    }
    free(p);

    p = join(path, "sticky");
    x = json_object_get(v, "sticky");
    if (x != NULL && r->kind != ROUTE_SIGNED_URL) {
        problem(c, p, "only for routes of kind signed_url");
    } else if (x != NULL && parse_source(c, p, x, r, &r->sticky)) {
        if (r->sticky.kind != SRC_HEADER && r->sticky.kind != SRC_QUERY &&
            r->sticky.kind != SRC_PATH)
            problem(c, p, "the sticky value comes from the request: header, query or path");
    }
    free(p);

    p = join(path, "file_field");
    x = json_object_get(v, "file_field");
    if (x != NULL && r->kind != ROUTE_UPLOAD) {
        problem(c, p, "only for routes of kind upload");
    } else if (x != NULL) {
        r->file_field = string_value(c, p, x);
        if (r->file_field && *r->file_field == '\0')
            problem(c, p, "must not be empty");
    }
    free(p);

    p = join(path, "s3_key");
    x = json_object_get(v, "s3_key");
    if (x != NULL && r->kind != ROUTE_UPLOAD) {
        problem(c, p, "only for routes of kind upload");
    } else if (x != NULL) {
        r->s3_key = string_value(c, p, x);
        if (r->s3_key)
            check_s3_key(c, p, r);
    }
    if (r->s3_key == NULL)
        r->s3_key = xstrdup("{key}");
    free(p);
}

static void parse_routes(struct ctx *c, json_t *v)
{
    size_t i;
    json_t *item;

    if (v == NULL)
        return;
    if (!json_is_array(v)) {
        problem(c, "routes", "expected an array of routes, got %s", type_name(v));
        return;
    }
    c->cfg->routes = xcalloc(json_array_size(v), sizeof(struct cfg_route));
    json_array_foreach(v, i, item)
    {
        char path[32];
        struct cfg_route *r = &c->cfg->routes[i];
        snprintf(path, sizeof(path), "routes[%zu]", i);
        parse_route(c, path, item, r);
        c->cfg->nroutes = i + 1;
        for (size_t j = 0; j < i && r->name; j++)
            if (c->cfg->routes[j].name && strcmp(c->cfg->routes[j].name, r->name) == 0) {
                char *p = join(path, "name");
                problem(c, p, "\"%s\" is already the name of routes[%zu]", r->name, j);
                free(p);
            }
    }
}

/* ---- sections with structure ----------------------------------------------------------- */

static void parse_s3(struct ctx *c, json_t *s3)
{
    static const char *const allowed[] = {"sse", NULL};
    struct cfg_s3 *o = &c->cfg->s3;
    json_t *sse;

    apply_table(c, "s3", s3, s3_fields);
    if (s3 == NULL)
        return;
    c->cfg->has_s3 = true;
    check_keys(c, "s3", s3, allowed, s3_fields);
    if (o->region == NULL) {
        const char *e = getenv("AWS_REGION");
        if (e == NULL || *e == '\0')
            e = getenv("AWS_DEFAULT_REGION");
        if (e && *e)
            o->region = xstrdup(e);
        else
            problem(c, "s3.region", "required (or set AWS_REGION)");
    }
    if (o->bucket == NULL)
        problem(c, "s3.bucket", "required");
    else if (strlen(o->bucket) < 3 || strlen(o->bucket) > 63 || strchr(o->bucket, '/'))
        problem(c, "s3.bucket", "\"%s\" is not a bucket name (3 to 63 characters, no '/')",
                o->bucket);
    if (o->endpoint && strncmp(o->endpoint, "http://", 7) != 0 &&
        strncmp(o->endpoint, "https://", 8) != 0)
        problem(c, "s3.endpoint", "expected an http:// or https:// URL, got \"%s\"", o->endpoint);
    if (o->endpoint) {
        size_t n = strlen(o->endpoint);
        while (n > 0 && o->endpoint[n - 1] == '/')
            o->endpoint[--n] = '\0';
    }
    if ((o->access_key_id == NULL) != (o->secret_access_key == NULL))
        problem(c, o->access_key_id ? "s3.secret_access_key" : "s3.access_key_id",
                "access_key_id and secret_access_key go together");
    if (o->part_size > o->multipart_threshold && o->multipart_threshold)
        problem(c, "s3.part_size", "must not exceed s3.multipart_threshold");

    sse = json_object_get(s3, "sse");
    if (sse != NULL) {
        static const char *const sse_keys[] = {"mode", "kms_key_id", NULL};
        json_t *mode, *kid;
        if (!json_is_object(sse)) {
            problem(c, "s3.sse", "expected an object, got %s", type_name(sse));
            return;
        }
        check_keys(c, "s3.sse", sse, sse_keys, NULL);
        mode = json_object_get(sse, "mode");
        kid = json_object_get(sse, "kms_key_id");
        if (mode == NULL || !json_is_string(mode)) {
            problem(c, "s3.sse.mode", "required: \"AES256\", \"aws:kms\" or \"none\"");
        } else if (strcmp(json_string_value(mode), "AES256") == 0) {
            o->sse = SSE_S3;
        } else if (strcmp(json_string_value(mode), "aws:kms") == 0) {
            o->sse = SSE_KMS;
        } else if (strcmp(json_string_value(mode), "none") != 0) {
            problem(c, "s3.sse.mode", "expected \"AES256\", \"aws:kms\" or \"none\", got \"%s\"",
                    json_string_value(mode));
        }
        if (kid != NULL)
            o->kms_key_id = string_value(c, "s3.sse.kms_key_id", kid);
        if (o->sse == SSE_KMS && kid == NULL)
            problem(c, "s3.sse.kms_key_id", "required with mode aws:kms");
        if (o->sse != SSE_KMS && kid != NULL)
            problem(c, "s3.sse.kms_key_id", "only with mode aws:kms");
    }
}

static void parse_legacy(struct ctx *c, json_t *lg)
{
    static const char *const allowed[] = {"headers", NULL};
    struct cfg_legacy *o = &c->cfg->legacy;
    json_t *h;

    apply_table(c, "legacy", lg, legacy_fields);
    if (lg == NULL)
        return;
    c->cfg->has_legacy = true;
    check_keys(c, "legacy", lg, allowed, legacy_fields);
    if (o->raw_url == NULL)
        problem(c, "legacy.raw_url", "required: a URL template with {key}");
    else if (strncmp(o->raw_url, "http://", 7) != 0 && strncmp(o->raw_url, "https://", 8) != 0)
        problem(c, "legacy.raw_url", "expected an http:// or https:// URL, got \"%s\"", o->raw_url);
    else if (strstr(o->raw_url, "{key}") == NULL)
        problem(c, "legacy.raw_url", "must contain {key}");
    h = json_object_get(lg, "headers");
    if (h != NULL && !json_is_object(h)) {
        problem(c, "legacy.headers", "expected an object of name: value, got %s", type_name(h));
    } else if (h != NULL) {
        const char *name;
        json_t *val;
        o->headers = xcalloc(json_object_size(h), sizeof(*o->headers));
        json_object_foreach(h, name, val)
        {
            char *p = join("legacy.headers", name);
            char *s;
            if (!is_token(name)) {
                problem(c, p, "not a valid header name");
            } else if ((s = string_value(c, p, val)) != NULL) {
                if (strpbrk(s, "\r\n") != NULL) {
                    problem(c, p, "a header value must not contain CR or LF");
                    free(s);
                } else {
                    o->headers[o->nheaders].name = xstrdup(name);
                    o->headers[o->nheaders++].value = s;
                }
            }
            free(p);
        }
    }
}

static void parse_backfill(struct ctx *c, json_t *bf)
{
    static const char *const allowed[] = {"source", NULL};
    struct cfg_backfill *o = &c->cfg->backfill;
    json_t *src;

    apply_table(c, "backfill", bf, backfill_fields);
    if (bf == NULL)
        return;
    check_keys(c, "backfill", bf, allowed, backfill_fields);
    src = json_object_get(bf, "source");
    if (src == NULL)
        return;
    if (!json_is_object(src)) {
        problem(c, "backfill.source",
                "expected {\"sql\": ..., \"database_url\": ...} or "
                "{\"jsonl\": PATH}, got %s",
                type_name(src));
        return;
    }
    if (json_object_get(src, "jsonl")) {
        static const char *const k[] = {"jsonl", NULL};
        check_keys(c, "backfill.source", src, k, NULL);
        o->kind = BACKFILL_JSONL;
        o->jsonl = string_value(c, "backfill.source.jsonl", json_object_get(src, "jsonl"));
    } else if (json_object_get(src, "sql")) {
        static const char *const k[] = {"sql", "database_url", NULL};
        json_t *db = json_object_get(src, "database_url");
        check_keys(c, "backfill.source", src, k, NULL);
        o->kind = BACKFILL_SQL;
        o->sql = string_value(c, "backfill.source.sql", json_object_get(src, "sql"));
        if (db)
            o->database_url = string_value(c, "backfill.source.database_url", db);
    } else {
        problem(c, "backfill.source",
                "expected {\"sql\": ..., \"database_url\": ...} or "
                "{\"jsonl\": PATH}");
    }
}

static void parse_limits(struct ctx *c, json_t *lim)
{
    static const char *const allowed[] = {"methods", NULL};
    struct cfg_limits *o = &c->cfg->limits;
    json_t *m = lim ? json_object_get(lim, "methods") : NULL;

    apply_table(c, "limits", lim, limits_fields);
    if (lim)
        check_keys(c, "limits", lim, allowed, limits_fields);
    if (m != NULL) {
        size_t i;
        json_t *x;
        if (!json_is_array(m) || json_array_size(m) == 0) {
            problem(c, "limits.methods", "expected a non-empty array of method names");
            m = NULL;
        } else {
            o->methods = xcalloc(json_array_size(m), sizeof(char *));
            json_array_foreach(m, i, x)
            {
                char p[48];
                snprintf(p, sizeof(p), "limits.methods[%zu]", i);
                if (!json_is_string(x) || !is_token(json_string_value(x)))
                    problem(c, p, "expected a method name");
                else
                    o->methods[o->nmethods++] = xstrdup(json_string_value(x));
            }
        }
    }
    if (m == NULL) {
        size_t n = 0;
        while (default_methods[n])
            n++;
        o->methods = xcalloc(n, sizeof(char *));
        for (size_t i = 0; i < n; i++)
            o->methods[o->nmethods++] = xstrdup(default_methods[i]);
    }
}

static void parse_flags(struct ctx *c, json_t *f)
{
    if (f != NULL && !json_is_object(f)) {
        problem(c, "flags", "expected an object of flag: value, got %s", type_name(f));
        f = NULL;
    }
    c->cfg->flags_json = f ? json_dumps(f, JSON_COMPACT) : xstrdup("{}");
    if (c->cfg->flags_json == NULL)
        problem(c, "flags", "cannot be encoded again as JSON");
}

/* A literal loopback address: 127.0.0.0/8, ::1 or ::ffff:127.x.x.x. Names (even
 * "localhost") are not trusted to resolve to one. */
static bool is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (host == NULL)
        return false;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

static void parse_root(struct ctx *c, json_t *root)
{
    static const char *const allowed[] = {"admin",   "log",    "s3",       "legacy",
                                          "routes",  "flags",  "backfill", "limits",
                                          "workers", "shadow", NULL};
    json_t *log, *admin, *workers, *shadow;
    struct config *cfg = c->cfg;

    check_keys(c, "", root, allowed, root_fields);
    apply_table(c, "", root, root_fields);

    admin = section(c, root, "admin");
    if (admin)
        check_keys(c, "admin", admin, NULL, admin_fields);
    apply_table(c, "admin", admin, admin_fields);
    if (cfg->admin_allow_unauthenticated && !is_loopback(cfg->admin_host))
        problem(c, "admin.allow_unauthenticated",
                "only with a loopback admin.listen (127.x.x.x or [::1]), got \"%s\"",
                cfg->admin_host ? cfg->admin_host : "");

    log = section(c, root, "log");
    if (log)
        check_keys(c, "log", log, NULL, log_fields);
    apply_table(c, "log", log, log_fields);
    cfg->log_level = LOG_INFO;
    if (log && json_object_get(log, "level")) {
        json_t *lv = json_object_get(log, "level");
        int l = json_is_string(lv) ? log_level_parse(json_string_value(lv)) : -1;
        if (l < 0)
            problem(c, "log.level", "expected debug, info, warn, error or off");
        else
            cfg->log_level = (enum log_level)l;
    }

    parse_s3(c, section(c, root, "s3"));
    parse_legacy(c, section(c, root, "legacy"));
    parse_routes(c, json_object_get(root, "routes"));
    parse_flags(c, json_object_get(root, "flags"));
    parse_backfill(c, section(c, root, "backfill"));
    parse_limits(c, section(c, root, "limits"));
    workers = section(c, root, "workers");
    if (workers)
        check_keys(c, "workers", workers, NULL, workers_fields);
    apply_table(c, "workers", workers, workers_fields);
    shadow = section(c, root, "shadow");
    if (shadow)
        check_keys(c, "shadow", shadow, NULL, shadow_fields);
    apply_table(c, "shadow", shadow, shadow_fields);

    if (cfg->upstream) {
        size_t n = strlen(cfg->upstream);
        while (n > 0 && cfg->upstream[n - 1] == '/')
            cfg->upstream[--n] = '\0';
        if (strncmp(cfg->upstream, "https://", 8) == 0)
            problem(c, "upstream",
                    "https is not supported: the app is reached in the pod over "
                    "plain http://host:port");
        else if (strncmp(cfg->upstream, "http://", 7) != 0)
            problem(c, "upstream", "expected http://host:port, got \"%s\"", cfg->upstream);
        else if (strchr(cfg->upstream + 7, '/') != NULL)
            problem(c, "upstream", "expected http://host:port without a path");
    }
    if (cfg->spool_dir && cfg->spool_dir[0] != '/')
        problem(c, "spool_dir", "expected an absolute path, got \"%s\"", cfg->spool_dir);
    if (cfg->backfill.kind != BACKFILL_NONE && !cfg->has_s3)
        problem(c, "s3", "required when a backfill source is set");
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (cfg->routes[i].kind == ROUTE_UPLOAD && !cfg->has_s3) {
            problem(c, "s3", "required by routes[%zu] (kind upload)", i);
            break;
        }
}

struct config *config_parse(const char *text, const char *origin, struct cfg_problems *problems)
{
    struct ctx c = {problems, NULL};
    json_error_t jerr;
    json_t *root = NULL;

    problems->lines = NULL;
    problems->n = 0;
    c.cfg = xcalloc(1, sizeof(struct config));
    c.cfg->path = origin ? xstrdup(origin) : NULL;
    root = json_loads(text ? text : "{}", JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        problem(&c, origin ? origin : "config", "line %d, column %d: %s", jerr.line, jerr.column,
                jerr.text);
    } else if (!json_is_object(root)) {
        problem(&c, origin ? origin : "config", "expected a JSON object at the top level");
    } else {
        parse_root(&c, root);
    }
    json_decref(root);
    if (problems->n > 0) {
        config_free(c.cfg);
        return NULL;
    }
    return c.cfg;
}

struct config *config_load(const char *path, struct cfg_problems *problems)
{
    FILE *f;
    struct buf b;
    char chunk[8192];
    size_t n;
    struct config *cfg = NULL;

    problems->lines = NULL;
    problems->n = 0;
    if (path == NULL)
        path = getenv("CUTOVER_CONFIG");
    if (path == NULL || *path == '\0')
        return config_parse("{}", NULL, problems);
    f = fopen(path, "rb");
    if (f == NULL) {
        problems->lines = xmalloc(sizeof(char *));
        problems->lines[0] = xasprintf("%s: cannot open: %s", path, strerror(errno));
        problems->n = 1;
        return NULL;
    }
    buf_init(&b, MAX_CONFIG_FILE);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (!buf_append(&b, chunk, n)) {
            problems->lines = xmalloc(sizeof(char *));
            problems->lines[0] = xasprintf("%s: larger than %u bytes", path, MAX_CONFIG_FILE);
            problems->n = 1;
            goto out;
        }
    }
    if (ferror(f)) {
        problems->lines = xmalloc(sizeof(char *));
        problems->lines[0] = xasprintf("%s: read error", path);
        problems->n = 1;
        goto out;
    }
    cfg = config_parse(b.data ? b.data : "", path, problems);
out:
    fclose(f);
    buf_free(&b);
    return cfg;
}

static void free_source(struct cfg_source *s)
{
    free(s->name);
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->listen_host);
    free(cfg->upstream);
    free(cfg->admin_host);
    free(cfg->admin_token);
    free(cfg->database_url);
    free(cfg->spool_dir);
    free(cfg->s3.endpoint);
    free(cfg->s3.region);
    free(cfg->s3.bucket);
    free(cfg->s3.kms_key_id);
    free(cfg->s3.access_key_id);
    free(cfg->s3.secret_access_key);
    free(cfg->s3.session_token);
    free(cfg->legacy.raw_url);
    for (size_t i = 0; i < cfg->legacy.nheaders; i++) {
        free(cfg->legacy.headers[i].name);
        free(cfg->legacy.headers[i].value);
    }
    free(cfg->legacy.headers);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct cfg_route *r = &cfg->routes[i];
        free(r->name);
        free(r->method);
        free(r->path);
        for (size_t j = 0; j < r->nsegments; j++)
            free(r->segments[j].text);
        free(r->segments);
        free(r->file_field);
        free_source(&r->key);
        free_source(&r->url);
        free_source(&r->sticky);
        for (size_t j = 0; j < r->nvars; j++) {
            free(r->vars[j].name);
            free_source(&r->vars[j].src);
        }
        free(r->vars);
        free(r->s3_key);
    }
    free(cfg->routes);
    free(cfg->flags_json);
    free(cfg->backfill.sql);
    free(cfg->backfill.database_url);
    free(cfg->backfill.jsonl);
    for (size_t i = 0; i < cfg->limits.nmethods; i++)
        free(cfg->limits.methods[i]);
    free(cfg->limits.methods);
    free(cfg);
}

void cfg_problems_free(struct cfg_problems *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->lines[i]);
    free(p->lines);
    p->lines = NULL;
    p->n = 0;
}

static void print_table(FILE *out, const char *section_name, const struct field *t)
{
    static const char *const tn[] = {"string",  "secret",  "boolean", "integer",
                                     "integer", "integer", "number",  "host:port"};
    for (; t->name; t++) {
        fprintf(out, "| `%s%s%s` | %s | %s%s%s | %s", section_name, *section_name ? "." : "",
                t->name, tn[t->type], t->def ? "`" : "", t->def ? t->def : "-", t->def ? "`" : "",
                t->doc);
        if (t->env)
            fprintf(out, "; also `$%s`", t->env);
        fprintf(out, " |\n");
    }
}

void config_print_reference(FILE *out)
{
    fprintf(out, "| key | type | default | meaning |\n|---|---|---|---|\n");
    print_table(out, "", root_fields);
    print_table(out, "admin", admin_fields);
    print_table(out, "log", log_fields);
    print_table(out, "s3", s3_fields);
    fprintf(out, "| `s3.sse` | object | - | `{\"mode\": \"AES256\"}` or `{\"mode\": \"aws:kms\", "
                 "\"kms_key_id\": \"...\"}` |\n");
    print_table(out, "legacy", legacy_fields);
    fprintf(out, "| `legacy.headers` | object | - | headers sent to the legacy store "
                 "(values may be `env:NAME`) |\n");
    fprintf(out, "| `routes` | array | `[]` | see Routes below |\n");
    fprintf(out, "| `flags` | object | `{}` | initial flag values, written once when the "
                 "database has none |\n");
    print_table(out, "backfill", backfill_fields);
    fprintf(out, "| `backfill.source` | object | - | `{\"sql\": ..., \"database_url\": ...}` "
                 "or `{\"jsonl\": PATH}` |\n");
    print_table(out, "limits", limits_fields);
    fprintf(out,
            "| `limits.methods` | array | `%s` | methods the proxy forwards; others get "
            "400 |\n",
            "[\"GET\",\"HEAD\",\"POST\",\"PUT\",\"PATCH\",\"DELETE\",\"OPTIONS\"]");
    print_table(out, "workers", workers_fields);
    print_table(out, "shadow", shadow_fields);
}
