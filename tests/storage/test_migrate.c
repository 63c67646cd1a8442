/*
 * migrate-db against a real PostgreSQL: creates the schema, is idempotent when run again, the
 * database itself refuses a document in an unknown state, and two processes made to run at
 * the same moment (both held at the migration's advisory lock until they are both waiting)
 * both succeed, with every migration applied exactly once.
 */
#include "storage/pgstore.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define STR_(x) #x
#define STR(x) STR_(x)

static char *query1(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    PGresult *r;
    char *v = NULL;

    assert_int_equal(PQstatus(c), CONNECTION_OK);
    r = PQexec(c, sql);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        v = xstrdup(PQgetvalue(r, 0, 0));
    else
        fprintf(stderr, "query failed: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return v;
}

static void test_twice(void **state)
{
    char *url = test_fresh_db("migrate");
    char *cmd = xasprintf("%s migrate-db --database-url '%s'", testenv_var("CUTOVER_BIN"), url);
    char *out = NULL, *v;

    (void)state;
    assert_int_equal(test_run(cmd, &out), 0);
    assert_non_null(strstr(out, "upgraded from version 0"));
    free(out);
    assert_int_equal(test_run(cmd, &out), 0);
    assert_non_null(strstr(out, "up to date"));
    free(out);
    v = query1(url, "SELECT count(*) FROM cutover.schema_version");
    assert_int_equal(atoi(v), (int)pg_nmigrations);
    free(v);
    /* the state machine is enforced by the database itself: an unknown state is refused by
     * the CHECK on documents.state (SQLSTATE 23514), a known one accepted */
    {
        PGconn *c = PQconnectdb(url);
        PGresult *r;

        assert_int_equal(PQstatus(c), CONNECTION_OK);
        r = PQexec(c, "INSERT INTO cutover.documents (storage_key, s3_key, state) "
                      "VALUES ('k', 'k', 'bogus')");
        assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
        assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23514");
        assert_string_equal(PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME),
                            "documents_state_check");
        PQclear(r);
        r = PQexec(c, "INSERT INTO cutover.documents (storage_key, s3_key, state) "
                      "VALUES ('k', 'k', 'verified')");
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
        PQfinish(c);
    }
    free(cmd);
    free(url);
}

struct waiters {
    PGconn *c;
    int want;
};

/* Both migrate-db processes are inside their transaction, waiting for the advisory lock. */
static bool both_waiting(void *arg)
{
    struct waiters *w = arg;
    PGresult *r = PQexec(w->c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND NOT granted AND database = (SELECT oid FROM pg_database "
                               "WHERE datname = current_database())");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) == w->want;
    PQclear(r);
    return ok;
}

static void test_concurrent(void **state)
{
    char *url = test_fresh_db("migrate_conc");
    char *bin = xstrdup(testenv_var("CUTOVER_BIN"));
    char *dburl_env = xasprintf("DATABASE_URL=%s", url);
    char *argv[] = {bin, "migrate-db", NULL};
    char *env[] = {dburl_env, NULL};
    char *dir = test_tmpdir("migrate_conc");
    char *log_a = xasprintf("%s/a.log", dir), *log_b = xasprintf("%s/b.log", dir);
    char *out_a, *out_b, *v;
    struct waiters w = {PQconnectdb(url), 2};
    PGresult *r;
    pid_t a, b;
    int sa, sb, upgraded;

    (void)state;
    /* the test holds the migration lock, so both runs start and then queue behind it */
    assert_int_equal(PQstatus(w.c), CONNECTION_OK);
    r = PQexec(w.c, "SELECT pg_advisory_lock(" STR(PGSTORE_MIGRATION_LOCK) ")");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    a = test_spawn(argv, env, log_a);
    b = test_spawn(argv, env, log_b);
    assert_true(test_wait_until(both_waiting, &w, 30000));
    r = PQexec(w.c, "SELECT pg_advisory_unlock(" STR(PGSTORE_MIGRATION_LOCK) ")");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    PQfinish(w.c);
    sa = test_wait_exit(a, 60000);
    sb = test_wait_exit(b, 60000);
    out_a = test_read_file(log_a, NULL);
    out_b = test_read_file(log_b, NULL);
    fprintf(stderr, "a: %sb: %s", out_a ? out_a : "(none)\n", out_b ? out_b : "(none)\n");
    assert_true(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
    assert_true(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);
    /* one of them did the work, the other found it done */
    upgraded = (strstr(out_a, "upgraded from version 0") != NULL) +
               (strstr(out_b, "upgraded from version 0") != NULL);
    assert_int_equal(upgraded, 1);
    assert_true(strstr(out_a, "up to date") != NULL || strstr(out_b, "up to date") != NULL);
    v = query1(url, "SELECT count(*) || ' ' || count(DISTINCT version) || ' ' || max(version) "
                    "FROM cutover.schema_version");
    {
        char want[64];
        snprintf(want, sizeof(want), "%d %d %d", (int)pg_nmigrations, (int)pg_nmigrations,
                 pgstore_latest_version());
        assert_string_equal(v, want);
    }
    free(v);
    v = query1(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'cutover' "
                    "AND tablename = 'documents'");
    assert_int_equal(atoi(v), 1);
    free(v);
    free(out_a);
    free(out_b);
    free(log_a);
    free(log_b);
    test_rmtree(dir);
    free(dir);
    free(dburl_env);
    free(bin);
    free(url);
}

static void test_bad_url(void **state)
{
    char *cmd = xasprintf("%s migrate-db --database-url "
                          "'postgresql://u:hunter2@127.0.0.1:1/none?connect_timeout=2'",
                          testenv_var("CUTOVER_BIN"));
    char *out = NULL;

    (void)state;
    assert_int_equal(test_run(cmd, &out), 1);
    assert_non_null(strstr(out, "cannot connect"));
    assert_null(strstr(out, "hunter2")); /* the password never reaches a message */
    free(out);
    free(cmd);
    cmd = xasprintf("env -u DATABASE_URL %s migrate-db", testenv_var("CUTOVER_BIN"));
    assert_int_equal(test_run(cmd, &out), 2);
    assert_non_null(strstr(out, "database_url"));
    free(out);
    free(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_twice),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_bad_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
