/*
 * s3env: see s3env.h.
 */
#include "tests/s3env.h"

#include "tests/testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void test_s3_open(struct test_s3 *t)
{
    cut_err err = CUT_ERR_INIT;
    memset(t, 0, sizeof(*t));
    t->cfg.endpoint = (char *)testenv("S3_ENDPOINT");
    t->cfg.region = (char *)testenv("S3_REGION");
    t->cfg.bucket = (char *)testenv("S3_BUCKET");
    t->cfg.path_style = true;
    t->cfg.presign_expires = 600;
    t->cfg.access_key_id = (char *)testenv("S3_ACCESS_KEY");
    t->cfg.secret_access_key = (char *)testenv("S3_SECRET_KEY");
    t->cfg.multipart_threshold = 64ull << 20;
    t->cfg.part_size = 16ull << 20;
    t->cfg.max_attempts = 3;
    t->cfg.retry_base_ms = 50;
    t->cfg.retry_max_total_ms = 5000;
    t->cfg.timeout_s = 60;
    t->creds = creds_provider_new(&t->cfg, &err);
    t->c = t->creds ? s3_client_new(&t->cfg, t->creds, &err) : NULL;
    if (!t->c) {
        fprintf(stderr, "test: S3 client for the fixture: %s\n", err.msg);
        exit(1);
    }
}

void test_s3_close(struct test_s3 *t)
{
    s3_client_free(t->c);
    creds_provider_free(t->creds);
    memset(t, 0, sizeof(*t));
}
