/*
 * config: the one configuration struct of cutover, built from one JSON file (INTERFACE.md)
 * plus the environment. Immutable after config_load() returns; every part borrows it.
 */
#ifndef CUTOVER_CONFIG_H
#define CUTOVER_CONFIG_H

#include "core.h"

#include <jansson.h>
#include <stdio.h>

/* Where a value is pulled from, in the app's request or answer. */
enum src_kind {
    SRC_NONE = 0,
    SRC_HEADER,          /* request header */
    SRC_QUERY,           /* request query parameter */
    SRC_PATH,            /* {VAR} of the route's path template */
    SRC_FORM_FIELD,      /* multipart field of the request */
    SRC_REQUEST_JSON,    /* RFC 6901 pointer into the request's JSON body */
    SRC_RESPONSE_JSON,   /* RFC 6901 pointer into the app's JSON answer */
    SRC_RESPONSE_HEADER, /* header of the app's answer */
};

struct cfg_source {
    enum src_kind kind;
    char *name; /* header/query/field name, path variable or JSON pointer */
};

struct cfg_var {
    char *name;
    struct cfg_source src;
};

enum route_kind { ROUTE_UPLOAD = 1, ROUTE_SIGNED_URL, ROUTE_DELETE };

/* Path variables a route's template may hold ({a}/{b}...); more is refused at load. The
 * proxy's route match keeps this many. */
#define CFG_MAX_PATH_VARS 8

/* A path template split into segments: "/documents/{key}/url" → 3 segments, the second
 * being the variable "key". Matching is done on the raw path, one segment at a time. */
struct cfg_segment {
    char *text; /* literal text, or the variable's name when is_var */
    bool is_var;
};

struct cfg_route {
    char *name;
    enum route_kind kind;
    char *method; /* upper case */
    char *path;   /* the template as written */
    struct cfg_segment *segments;
    size_t nsegments;
    char *file_field;         /* upload: multipart part holding the document; NULL = whole body */
    struct cfg_source key;    /* upload, delete: the document's storage key */
    struct cfg_source url;    /* signed_url: where the URL is in the answer */
    struct cfg_source sticky; /* signed_url: the rollout's sticky value (SRC_NONE: none) */
    struct cfg_var *vars;
    size_t nvars;
    char *s3_key; /* template of the S3 object key; default "{key}" */
};

enum sse_mode { SSE_NONE = 0, SSE_S3, SSE_KMS };

struct cfg_s3 {
    char *endpoint; /* NULL: https://s3.<region>.amazonaws.com */
    char *region;
    char *bucket;
    bool path_style;
    int presign_expires; /* seconds, 1..604800 */
    enum sse_mode sse;
    char *kms_key_id;
    uint64_t multipart_threshold; /* bytes; default 64 MiB */
    uint64_t part_size;           /* bytes; default 16 MiB, >= 5 MiB */
    int max_attempts;             /* retries: attempts per call, default 5 */
    int retry_base_ms;            /* first backoff ceiling, default 100 */
    int retry_max_total_ms;       /* total time across attempts, default 30000 */
    int timeout_s;                /* per request, default 300 */
    /* credentials from the file or env:; NULL means the chain (env vars, web identity,
     * container endpoint) is used */
    char *access_key_id;
    char *secret_access_key;
    char *session_token;
};

struct cfg_header {
    char *name;
    char *value;
};

struct cfg_legacy {
    char *raw_url; /* template with {key} */
    struct cfg_header *headers;
    size_t nheaders;
    int timeout_s;
};

enum backfill_kind { BACKFILL_NONE = 0, BACKFILL_SQL, BACKFILL_JSONL };

struct cfg_backfill {
    enum backfill_kind kind;
    char *sql;
    char *database_url; /* NULL: the state database */
    char *jsonl;
    double rate;       /* documents per second, 0 = unlimited; default 50 */
    double rate_bytes; /* bytes per second read from the legacy store, 0 = unlimited */
    int concurrency;   /* default 8 */
};

struct cfg_limits {
    size_t max_header_bytes;        /* request line + headers; default 16384 → 431 */
    size_t max_headers;             /* count; default 100 → 431 */
    uint64_t max_body_bytes;        /* default 5 GiB (5368709120), 0: none; more → 413 */
    int header_timeout_s;           /* whole header must arrive within; default 30 */
    int idle_timeout_s;             /* keep-alive idle; default 60 */
    int upstream_connect_timeout_s; /* default 5 → 502 */
    int upstream_timeout_s;         /* first byte of the answer; default 60 → 504 */
    int shutdown_grace_s;           /* default 25 */
    size_t max_connections;         /* default 10000 */
    size_t max_json_answer;         /* bytes of an app answer held for rewriting; default 1 MiB */
    char **methods;                 /* allow-list, upper case */
    size_t nmethods;
};

struct cfg_workers {
    int proxy_loops;  /* event loops (threads) of the data port; default 1; 0 = one per CPU */
    int mirror;       /* mirror worker threads; default 4 */
    int lease_s;      /* queue lease; default 300 */
    int max_attempts; /* per document before `failed`; default 10 */
    /* the longest wait between two copy attempts of a document; default 10 */
    int max_backoff_s;
};

/* Shadow reads' bounds (README "Shadow reads"). */
struct cfg_shadow {
    int concurrency;      /* compares at once per sidecar; default 4 */
    uint64_t bytes_per_s; /* token bucket per store; default 8 MiB */
    int timeout_s;        /* per fetch; default 30 */
};

struct config {
    char *path; /* the file it came from, or NULL */

    char *listen_host;
    int listen_port;
    char *upstream; /* http://host:port, no trailing slash */
    char *admin_host;
    int admin_port;
    char *admin_token; /* may be NULL: /admin/ then refused, unless allow_unauthenticated */
    bool admin_allow_unauthenticated; /* no token: /admin/ open; only with a loopback listen */
    int admin_max_auth_failures;      /* wrong tokens per address before 429; default 5 */
    int admin_auth_lockout_s;         /* failure window and refusal time; default 60 */
    char *database_url;
    char *spool_dir;
    enum log_level log_level;
    bool access_log;

    struct cfg_s3 s3;
    bool has_s3;
    struct cfg_legacy legacy;
    bool has_legacy;
    struct cfg_route *routes;
    size_t nroutes;
    /* The "flags" section as written: JSON object text (never NULL, "{}" when absent), NOT
     * interpreted or validated here. Flag values come only from flags/ (its snapshot
     * constructor validates them); `config check` runs flags_check_config() explicitly. */
    char *flags_json;
    struct cfg_backfill backfill;
    struct cfg_limits limits;
    struct cfg_workers workers;
    struct cfg_shadow shadow;
};

/* The problems found while loading: every one, each a line "path: reason". */
struct cfg_problems {
    char **lines;
    size_t n;
};

/* Loads and validates a configuration from a file. With path NULL, $CUTOVER_CONFIG is used,
 * and without it the defaults plus the environment. Returns a new config (free with
 * config_free()) or NULL with every problem in *problems (free with cfg_problems_free()). */
struct config *config_load(const char *path, struct cfg_problems *problems) CUT_MUST_USE;
/* The same from JSON text; `origin` names it in messages. */
struct config *config_parse(const char *text, const char *origin,
                            struct cfg_problems *problems) CUT_MUST_USE;
void config_free(struct config *cfg);
void cfg_problems_free(struct cfg_problems *p);
/* Appends "path: reason" to p. */
void cfg_problem_add(struct cfg_problems *p, const char *path, const char *fmt, ...)
    CUT_PRINTF(3, 4);

/* Prints the configuration reference (every key, type, default, meaning) as Markdown. */
void config_print_reference(FILE *out);

#endif
