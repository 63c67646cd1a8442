/*
 * s3env: the S3 client a test uses to look at the fixture's s3rver directly (the bucket,
 * endpoint and credentials of the services file, path style, a few quick retries), and the
 * configuration of a `cutover proxy` pointed at that s3rver, which the dual-write tests share.
 */
#ifndef CUTOVER_TEST_S3ENV_H
#define CUTOVER_TEST_S3ENV_H

#include "storage/s3.h"

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

#endif
