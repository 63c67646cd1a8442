/*
 * mxenv: what the metrics and dashboard tests share: a `cutover proxy` before the example app
 * with a fresh database and the fixture's s3rver, uploads through it, and scrapes of /metrics.
 */
#ifndef CUTOVER_TESTS_MXENV_H
#define CUTOVER_TESTS_MXENV_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <sys/types.h>

#define MX_TOKEN "metrics-t0ken"

struct mxenv {
    char *db_url, *dir, *config, *log;
    int port, admin;
    pid_t pid;
    PGconn *pg;
    char org[64];
};

/* Starts everything; aborts the test on failure. */
void mx_start(struct mxenv *e, const char *tag);
/* Stops the proxy (expects a clean exit) and removes the files. Returns 0 or -1. */
int mx_stop(struct mxenv *e);
/* Uploads a raw document of n bytes through the proxy; returns the HTTP status. */
long mx_upload(struct mxenv *e, size_t n);
/* Waits until want documents of this test's org are verified (deadline 30 s). */
bool mx_wait_verified(struct mxenv *e, long want);
/* GET of the admin port's path (token sent when auth); the answer's body as a new string
 * (free()) and its status in *status. */
char *mx_admin_get(struct mxenv *e, const char *path, bool auth, long *status);
/* The value of the sample whose line starts with series followed by a space, or -1. */
double mx_sample(const char *text, const char *series);
/* Documents per state from the database: counts[7] in doc_state order. */
void mx_db_counts(struct mxenv *e, long counts[7]);

#endif
