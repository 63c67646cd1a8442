/*
 * s3env: see s3env.h.
 */
#include "tests/s3env.h"

#include "core/core.h"
#include "tests/testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void test_s3_open(struct test_s3 *t)
{
    test_s3_open_at(t, NULL, 0);
}

void test_s3_open_at(struct test_s3 *t, const char *endpoint, int max_attempts)
{
    cut_err err = CUT_ERR_INIT;
    memset(t, 0, sizeof(*t));
    t->cfg.endpoint = (char *)(endpoint ? endpoint : testenv("S3_ENDPOINT"));
    t->cfg.region = (char *)testenv("S3_REGION");
    t->cfg.bucket = (char *)testenv("S3_BUCKET");
    t->cfg.path_style = true;
    t->cfg.presign_expires = 600;
    t->cfg.access_key_id = (char *)testenv("S3_ACCESS_KEY");
    t->cfg.secret_access_key = (char *)testenv("S3_SECRET_KEY");
    t->cfg.multipart_threshold = 64ull << 20;
    t->cfg.part_size = 16ull << 20;
    t->cfg.max_attempts = max_attempts > 0 ? max_attempts : 3;
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

const char test_upload_routes[] =
    "\"routes\": [\n"
    "  {\"name\": \"upload\", \"kind\": \"upload\", \"path\": \"/documents\",\n"
    "   \"file_field\": \"file\", \"key\": {\"response_json\": \"/storage_key\"},\n"
    "   \"vars\": {\"org\": {\"header\": \"X-Org-Id\"}},\n"
    "   \"s3_key\": \"documents/{org}/{key}\"},\n"
    "  {\"name\": \"delete\", \"kind\": \"delete\", \"path\": \"/documents/{key}\",\n"
    "   \"key\": {\"path\": \"key\"}}]";

void test_proxy_config_write(const char *path, const struct test_proxy_config *c)
{
    char *json =
        xasprintf("{\"listen\": \"127.0.0.1:%d\", \"upstream\": \"%s\",\n"
                  " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"token\": \"t0ken-for-tests\"},\n"
                  " \"database_url\": \"%s\", \"spool_dir\": \"%s\",\n"
                  " \"log\": {\"level\": \"info\", \"access\": false},\n"
                  " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
                  "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": "
                  "\"%s\"%s%s},\n"
                  " \"flags\": {\"dual_write\": true},\n"
                  " %s}\n",
                  c->port, c->upstream, c->admin, c->db_url, c->spool,
                  c->s3_endpoint ? c->s3_endpoint : testenv("S3_ENDPOINT"), testenv("S3_REGION"),
                  testenv("S3_BUCKET"), testenv("S3_ACCESS_KEY"), testenv("S3_SECRET_KEY"),
                  c->s3_extra ? ",\n        " : "", c->s3_extra ? c->s3_extra : "", c->rest);
    if (!test_write_file(path, json, strlen(json))) {
        fprintf(stderr, "test: cannot write %s\n", path);
        exit(1);
    }
    free(json);
}

void test_dw_start(struct test_dw *d, const char *tag, int mirror, const char *s3_endpoint,
                   const char *s3_extra)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->org, sizeof(d->org), "%s-%ld", tag, (long)getpid());
    d->db_url = test_fresh_db(tag);
    d->dir = test_tmpdir(tag);
    d->spool = xasprintf("%s/spool", d->dir);
    mkdir(d->spool, 0700);
    d->config = xasprintf("%s/cutover.json", d->dir);
    d->log = xasprintf("%s/cutover.log", d->dir);
    d->port = test_free_port();
    d->admin = test_free_port();
    char *rest = xasprintf("\"legacy\": {\"raw_url\": \"%s/legacy/raw/{key}\"},\n %s,\n"
                           " \"workers\": {\"mirror\": %d}",
                           testenv("APP_URL"), test_upload_routes, mirror);
    struct test_proxy_config pc = {.port = d->port,
                                   .admin = d->admin,
                                   .upstream = testenv("APP_URL"),
                                   .db_url = d->db_url,
                                   .spool = d->spool,
                                   .s3_endpoint = s3_endpoint,
                                   .s3_extra = s3_extra,
                                   .rest = rest};
    test_proxy_config_write(d->config, &pc);
    free(rest);
    test_migrate_db(d->config);
    d->pid = test_start_proxy(d->config, d->log, d->admin);
    d->pg = test_pg_connect(d->db_url);
    test_s3_open(&d->s3env);
}

bool test_dw_stop(struct test_dw *d)
{
    if (!test_stop_proxy(d->pid, d->log))
        return false;
    test_s3_close(&d->s3env);
    PQfinish(d->pg);
    test_rmtree(d->dir);
    free(d->db_url);
    free(d->dir);
    free(d->spool);
    free(d->config);
    free(d->log);
    memset(d, 0, sizeof(*d));
    return true;
}
