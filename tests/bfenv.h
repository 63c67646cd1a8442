/*
 * bfenv: what the backfill and verify tests share to set up documents: seeding the example
 * app's legacy store, a JSONL source cut down to one test's documents, a configuration that
 * points cutover at the fixture (PostgreSQL, s3rver, the app as legacy store), running a
 * cutover command and reading its summary line, querying the state database, and comparing
 * what S3 holds with the legacy store's raw bytes.
 */
#ifndef CUTOVER_TEST_BFENV_H
#define CUTOVER_TEST_BFENV_H

#include "core/core.h"
#include "storage/s3.h"
#include "tests/s3env.h"
#include "tests/testlib.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/* What every backfill and verify test holds (the test files share one, E): a directory and an
 * S3 client of the group, and per test a fresh state database with cutover's schema. */
struct bfenv {
    const char *tag; /* set before the group runs: names the directory and the databases */
    bool no_s3;      /* set before the group runs: no S3 client (s3 stays NULL) */
    /* writes the first configuration of each test into config (set before the group runs;
     * NULL: bfenv_config() with workers and a JSONL source that is not there) */
    void (*first_config)(void);
    char *dir; /* the group's directory */
    struct test_s3 s3env;
    s3_client *s3;         /* s3env.c */
    char *db_url, *config; /* per test; config is the last one written (free() before another) */
    const char *workers;   /* a test's "workers" object for bfenv_config(), or NULL */
    PGconn *pg;            /* connected to db_url */
};
extern struct bfenv E;

/* cmocka fixtures over E: the group's directory and S3 client; per test a fresh database,
 * its first configuration, `cutover migrate-db` and the connection (closed and workers reset
 * after the test). */
int bfenv_group_setup(void **state);
int bfenv_group_teardown(void **state);
int bfenv_setup(void **state);
int bfenv_teardown(void **state);

/* Creates count documents of size bytes in the app's store with its /_control/seed, keys
 * "ORG/seed-NNNNNN.bin"; fails the test otherwise. */
void bfenv_seed(const char *org, int count, int size);

/* The app's documents.jsonl lines of org, with extra_before and extra_after (each may be
 * NULL) around them, written to DIR/docs-ORG.jsonl; returns its path (new string). */
char *bfenv_jsonl(const char *dir, const char *org, const char *extra_before,
                  const char *extra_after);

/* Writes a configuration into dir (a new file each call) for state database db_url, with
 * workers (a JSON object text, NULL: {}) and backfill source (a JSON object text); S3 keys
 * are "backfilled/{org}/{key}", the legacy store is the app's /legacy/raw/{key}. Returns its
 * path (new string). */
char *bfenv_config(const char *dir, const char *db_url, const char *workers, const char *source);

/* Runs `cutover ARGS` (args: the command and its options, shell-quoted by the caller);
 * returns its exit status, its whole output in *out (new string) and the last line starting
 * with {"event":"EVENT" as JSON in *summary (json_decref()); fails the test with the output
 * when there is no such line. */
int bfenv_run(const char *args, const char *event, char **out, json_t **summary);

/* Hex SHA-256 of p[0..n). */
void bfenv_sha256_hex(const void *p, size_t n, char out[65]);

/* The result of sql on c (PQclear()); fails the test with the error unless it succeeded. */
PGresult *bfenv_q(PGconn *c, const char *sql);
/* The one integer sql answers on c; -1 when it is not exactly one row. */
long long bfenv_int(PGconn *c, const char *sql);

/* The state database on c holds n recordings (transitions from nothing) and n `copied`
 * transitions: with n documents, each recorded once and copied once. */
void bfenv_assert_once(PGconn *c, long long n);

/* Fails the test for what, which exited rc: cmocka cuts a message at 1 KiB, so the whole
 * output (may be NULL) goes to stderr first. */
void bfenv_fail_with(const char *what, int rc, const char *out);
/* The integer at o.a (b NULL) or o.a.b of a summary; fails the test when there is none. */
long long bfenv_jint(json_t *o, const char *a, const char *b);

/* The object s3key's bytes from s3rver appended to got (buf_init'ed by the caller); fails the
 * test when the GET does. */
void bfenv_s3_read(s3_client *s3, const char *s3key, struct buf *got);
/* The raw original of key from the app's legacy store (test_http_free()); asserts a 200. */
void bfenv_raw_read(const char *key, struct test_http *raw);
/* S3's object s3key holds the app's raw bytes of key, and, sha256 not NULL, their SHA-256 is
 * sha256 (hex). */
void bfenv_assert_same(s3_client *s3, const char *key, const char *s3key, const char *sha256);

#endif
