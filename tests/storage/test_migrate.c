/*
 * migrate-db against a real PostgreSQL: creates the schema, is idempotent when run again,
 * and two processes started at once both succeed with every migration applied once.
 */
#include "storage/pgstore.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

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
    /* the state machine is enforced by the database itself */
    v = query1(url, "SELECT count(*) FROM information_schema.check_constraints "
                    "WHERE constraint_schema = 'cutover'");
    assert_true(atoi(v) >= 2);
    free(v);
    free(cmd);
    free(url);
}

static void test_concurrent(void **state)
{
    char *url = test_fresh_db("migrate_conc");
    char *bin = xstrdup(testenv_var("CUTOVER_BIN"));
    char *dburl_env = xasprintf("DATABASE_URL=%s", url);
    char *argv[] = {bin, "migrate-db", NULL};
    char *env[] = {dburl_env, NULL};
    pid_t a, b;
    int sa, sb;
    char *v;

    (void)state;
    a = test_spawn(argv, env, NULL);
    b = test_spawn(argv, env, NULL);
    sa = test_wait_exit(a, 60000);
    sb = test_wait_exit(b, 60000);
    assert_true(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
    assert_true(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);
    v = query1(url, "SELECT count(*) FROM cutover.schema_version");
    assert_int_equal(atoi(v), (int)pg_nmigrations);
    free(v);
    v = query1(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'cutover' "
                    "AND tablename = 'documents'");
    assert_int_equal(atoi(v), 1);
    free(v);
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
