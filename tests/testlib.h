/*
 * testlib: what the C tests share. Tests that need the real services (PostgreSQL, s3rver,
 * the example app) read their addresses from the file named by $CUTOVER_TEST_ENV, written by
 * tests/harness/services.sh when the CTest fixture `services` starts them.
 *
 * Keys in that file: PG_URL (superuser URL of the `postgres` database), S3_ENDPOINT,
 * S3_REGION, S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, APP_URL (a shared example app),
 * LEGACY_URL (same as APP_URL: the app serves its legacy store), SERVICES_DIR.
 * Other environment for tests: CUTOVER_BIN (the built binary), CUTOVER_SOURCE_DIR.
 * Unit-test files include "tests/unit.h" (cmocka plus the headers it needs first) rather than
 * <cmocka.h>: clang-format's include sorting would otherwise break cmocka's prerequisites.
 */
#ifndef CUTOVER_TESTLIB_H
#define CUTOVER_TESTLIB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Value of KEY from the services file; aborts the test (exit 1 with a message) when the
 * file or the key is missing. The string lives until exit. */
const char *testenv(const char *key);
/* $name, aborting with a message when unset. */
const char *testenv_var(const char *name);

/* Creates a fresh, empty database for this test and returns its URL (new string, free()).
 * The name is "t_<tag>_<pid>_<counter>". */
char *test_fresh_db(const char *tag);

/* A TCP port on 127.0.0.1 free at the time of the call. */
int test_free_port(void);
/* A blocking TCP connection to 127.0.0.1:port; the socket, or -1. */
int test_connect(int port);

/* Starts argv[0] with argv, stdout and stderr appended to logfile (NULL: inherited). The
 * child gets SIGTERM if the test process ends first, so a failed test leaves nothing behind.
 * env_extra is NULL or a NULL-terminated list of "K=V" added to the environment. */
pid_t test_spawn(char *const argv[], char *const env_extra[], const char *logfile);
/* Sends sig, waits up to timeout_ms for the exit (then SIGKILL); returns the exit status as
 * from waitpid (use WIFEXITED/WEXITSTATUS), or -1. */
int test_stop(pid_t pid, int sig, int timeout_ms);
/* Waits up to timeout_ms for the child to exit by itself; returns its status or -1. */
int test_wait_exit(pid_t pid, int timeout_ms);

/* Polls cond(arg) every 20 ms until true or timeout_ms passes; returns the last answer. */
bool test_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms);
/* Waits until a GET of url answers (any HTTP status) within timeout_ms. */
bool test_wait_http(const char *url, int timeout_ms);

/* One HTTP exchange with libcurl. headers is NULL or a NULL-terminated list of
 * "Name: value" lines. body may be NULL. Fills the answer; free with test_http_free(). */
struct test_http {
    long status;
    char *body; /* NUL-terminated */
    size_t body_len;
    char *headers;    /* the raw header block of the final answer */
    char errbuf[256]; /* curl's message when status == 0 */
};
int test_http(const char *method, const char *url, const char *const headers[], const void *body,
              size_t body_len, struct test_http *out);
void test_http_free(struct test_http *r);
/* Value of header name in r->headers (case-insensitive), new string or NULL. */
char *test_http_header(const struct test_http *r, const char *name);

/* Runs a shell command, capturing stdout+stderr into *output (new string, may be NULL);
 * returns the exit status (0..255) or -1. */
int test_run(const char *cmd, char **output);

/* Reads a whole file (new buffer, NUL-terminated) or NULL. */
char *test_read_file(const char *path, size_t *len);
/* Writes a file; returns false on failure. */
bool test_write_file(const char *path, const void *data, size_t len);
/* A new empty directory under $TMPDIR (new string). */
char *test_tmpdir(const char *tag);
/* Removes a directory made by test_tmpdir() and everything in it (NULL: nothing). */
void test_rmtree(const char *dir);

/* FNV-1a of key. */
uint32_t test_key_hash(const char *key);
/* Bytes [off, off + n) of the synthetic document named key, the same in every run: what the
 * in-test legacy stores serve, and what a test compares a copy with. */
void test_key_bytes(const char *key, uint64_t off, void *out, size_t n);

/* ---- a cutover under test ---- */

/* Runs `$CUTOVER_BIN migrate-db --config config`; aborts the test with its output when it
 * fails. */
void test_migrate_db(const char *config);
/* Starts `$CUTOVER_BIN proxy --config config` (output appended to log, NULL: inherited) and
 * waits up to 20 s for its admin listener's /readyz on admin_port; returns its pid (end it
 * with test_stop_proxy()), or aborts the test with its log when it never answers. */
pid_t test_start_proxy(const char *config, const char *log, int admin_port);
/* SIGTERM, then up to 30 s for the exit; true when it exited 0, otherwise false with the
 * status and the log (may be NULL) on stderr. */
bool test_stop_proxy(pid_t pid, const char *log);
/* The file at path (NULL: nothing) on stderr under a "---- what ----" line, so that a
 * failure shows why (cutover's log, typically). */
void test_dump_file(const char *what, const char *path);
/* A connection to url (PQfinish()); aborts the test with the reason when it fails. */
PGconn *test_pg_connect(const char *url);

#endif
