/*
 * s3env: the S3 client a test uses to look at the fixture's s3rver directly (the bucket,
 * endpoint and credentials of the services file, path style, a few quick retries), and the
 * configuration of a `cutover proxy` pointed at that s3rver, which the dual-write tests share.
 */
#ifndef CUTOVER_TEST_S3ENV_H
#define CUTOVER_TEST_S3ENV_H

#include "storage/s3.h"

#include <libpq-fe.h>
#include <sys/types.h>

struct test_s3 {
    struct cfg_s3 cfg;
    creds_provider *creds;
    s3_client *c;
};

/* Fills t from the services file ($CUTOVER_TEST_ENV as it is now); aborts the test with
 * the reason when the client cannot be made. */
void test_s3_open(struct test_s3 *t);
/* test_s3_open() at another endpoint (NULL: the fixture's; e.g. a relay in front of it), with
 * max_attempts attempts per request (0: 3). endpoint is borrowed and must outlive t. */
void test_s3_open_at(struct test_s3 *t, const char *endpoint, int max_attempts);
void test_s3_close(struct test_s3 *t);

/* A `cutover proxy` configuration: listen on 127.0.0.1:port, admin listener on
 * 127.0.0.1:admin (token "t0ken-for-tests"), upstream, state database db_url, spool dir
 * spool, log level info without access lines, the fixture's bucket and credentials at
 * s3_endpoint (NULL: the fixture's own) with s3_extra (NULL, or more members of "s3", e.g.
 * "\"max_attempts\": 1"), dual_write on, and rest: the other top-level members as JSON
 * text (routes, legacy, workers...). All borrowed. */
struct test_proxy_config {
    int port, admin;
    const char *upstream, *db_url, *spool;
    const char *s3_endpoint, *s3_extra;
    const char *rest;
};
/* Writes c to path; aborts the test when it cannot. */
void test_proxy_config_write(const char *path, const struct test_proxy_config *c);

/* The routes of the dual-write tests (JSON members text for test_proxy_config.rest): uploads
 * at POST /documents (file field "file", key from the answer's /storage_key, org from the
 * X-Org-Id header, S3 key "documents/{org}/{key}") and deletes at /documents/{key}. */
extern const char test_upload_routes[];

/* A `cutover proxy` with dual-write on in front of the example app, as the dual-write tests
 * run it: a fresh state database, a spool directory, the routes of test_upload_routes, the
 * legacy store on the app, `workers.mirror` mirror workers, and S3 at s3_endpoint with
 * s3_extra (as in test_proxy_config). */
struct test_dw {
    char *db_url;
    char *dir, *spool, *config, *log;
    int port, admin; /* the data and admin listeners */
    pid_t pid;
    char org[64];         /* the X-Org-Id of this run: "<tag>-<pid>" */
    PGconn *pg;           /* the test's own connection to the state database */
    struct test_s3 s3env; /* the fixture's s3rver, directly */
};
/* Starts it (tag names the database, the directory and the org); aborts the test when it
 * cannot. s3_endpoint and s3_extra are borrowed for the call. */
void test_dw_start(struct test_dw *d, const char *tag, int mirror, const char *s3_endpoint,
                   const char *s3_extra);
/* Stops the proxy and frees the rest. False when the proxy did not stop cleanly (its log is
 * on stderr). */
bool test_dw_stop(struct test_dw *d);

#endif
