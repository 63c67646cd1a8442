/*
 * bfenv: what the backfill and verify tests share to set up documents: seeding the example
 * app's legacy store, a JSONL source cut down to one test's documents, a configuration that
 * points cutover at the fixture (PostgreSQL, s3rver, the app as legacy store), running a
 * cutover command and reading its summary line.
 */
#ifndef CUTOVER_TEST_BFENV_H
#define CUTOVER_TEST_BFENV_H

#include <jansson.h>
#include <stddef.h>

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

#endif
