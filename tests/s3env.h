/*
 * s3env: the S3 client a test uses to look at the fixture's s3rver directly (the bucket,
 * endpoint and credentials of the services file, path style, a few quick retries).
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
void test_s3_close(struct test_s3 *t);

#endif
