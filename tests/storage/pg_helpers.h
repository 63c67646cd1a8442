/*
 * What the storage and flags tests share: a fresh database migrated to the latest schema, and
 * plain libpq for looking at (or tampering with) the tables behind the store's back.
 */
#ifndef CUTOVER_TESTS_PG_HELPERS_H
#define CUTOVER_TESTS_PG_HELPERS_H

#include "storage/pgstore.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A fresh database with schema cutover at the latest version; returns its URL (free()). */
static inline char *pgt_migrated_db(const char *tag)
{
    char *url = test_fresh_db(tag);
    cut_err err = CUT_ERR_INIT;
    pgstore *st = pgstore_connect(url, &err);

    if (st == NULL || pgstore_migrate(st, NULL, NULL, &err) != 0)
        fail_msg("migrate: %s: %s", err.where, err.msg);
    pgstore_free(st);
    return url;
}

/* The single value of sql (new string, free()), or NULL when it returns no row. */
static inline char *pgt_query1(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    PGresult *r;
    char *v = NULL;

    assert_int_equal(PQstatus(c), CONNECTION_OK);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("query failed: %s: %s", sql, PQerrorMessage(c));
    if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        v = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return v;
}

static inline long long pgt_count(const char *url, const char *sql)
{
    char *v = pgt_query1(url, sql);
    long long n = v ? atoll(v) : -1;
    free(v);
    return n;
}

/* Runs sql (any number of statements) and fails the test if it fails. */
static inline void pgt_exec(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    PGresult *r;

    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("exec failed: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

#endif
