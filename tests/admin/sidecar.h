/*
 * sidecar: what the admin API tests share: `cutover proxy` started as a process of its own on
 * a given database (admin token ADMIN_TOKEN, an example app as upstream), and admin requests
 * to it with the token, answers parsed as JSON.
 */
#ifndef CUTOVER_TESTS_ADMIN_SIDECAR_H
#define CUTOVER_TESTS_ADMIN_SIDECAR_H

#include "tests/testlib.h"

#include <jansson.h>
#include <stdbool.h>

#define ADMIN_TOKEN "adm-token-9d41c2"

struct sidecar {
    char *dir, *config, *log;
    int port, admin;
    pid_t pid;
};

/* Writes a configuration for db_url under dir/name (a new directory) with flags (JSON object
 * text, may be NULL) and migrates the database. Not started. */
void sc_init(struct sidecar *s, const char *dir, const char *name, const char *db_url,
             const char *flags);
/* Starts it and waits until /readyz answers. */
void sc_start(struct sidecar *s);
/* Stops it (SIGTERM; it must exit 0) and frees what sc_init made. */
void sc_stop(struct sidecar *s);

/* An admin request (token unless auth is given: a whole "Authorization: ..." line, or "" for
 * none). Returns the status; *body (may be NULL) receives the parsed answer (new, or NULL
 * when it is not JSON). */
long sc_call(const struct sidecar *s, const char *method, const char *path, const char *body,
             const char *auth, json_t **answer);

/* Milliseconds since some fixed point (monotonic). */
double sc_now_ms(void);

#endif
