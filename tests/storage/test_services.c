/*
 * The harness itself: the PostgreSQL it started answers queries, and the S3 emulator checks
 * signatures (a request signed with the right secret by an independent client, curl's
 * --aws-sigv4, is accepted; the same request signed with a wrong secret is refused with
 * SignatureDoesNotMatch), so the S3 tests that rely on it can fail.
 */
#include "core/core.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_postgres_answers(void **state)
{
    PGconn *c = PQconnectdb(testenv("PG_URL"));
    PGresult *r;

    (void)state;
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    r = PQexec(c, "SELECT 40 + 2, current_setting('server_version_num')::int >= 150000");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    assert_string_equal(PQgetvalue(r, 0, 1), "t");
    PQclear(r);
    PQfinish(c);
}

static int curl_s3(const char *secret, const char *method, const char *key, const char *data,
                   char **out)
{
    char *cmd = xasprintf("curl -sS -o - -w '\\n%%{http_code}' -X %s --aws-sigv4 "
                          "'aws:amz:%s:s3' --user '%s:%s' "
                          "-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' %s%s%s '%s/%s/%s'",
                          method, testenv("S3_REGION"), testenv("S3_ACCESS_KEY"), secret,
                          data ? "--data-binary '" : "", data ? data : "", data ? "'" : "",
                          testenv("S3_ENDPOINT"), testenv("S3_BUCKET"), key);
    int rc = test_run(cmd, out);
    free(cmd);
    return rc;
}

static int last_status(const char *out)
{
    const char *nl = strrchr(out, '\n');
    return atoi(nl ? nl + 1 : out);
}

static void test_s3_checks_signatures(void **state)
{
    const char *secret = testenv("S3_SECRET_KEY");
    char *out = NULL;

    (void)state;
    assert_int_equal(curl_s3(secret, "PUT", "harness/signed.txt", "hello", &out), 0);
    assert_int_equal(last_status(out), 200);
    free(out);
    assert_int_equal(curl_s3(secret, "GET", "harness/signed.txt", NULL, &out), 0);
    assert_int_equal(last_status(out), 200);
    assert_non_null(strstr(out, "hello"));
    free(out);

    assert_int_equal(curl_s3("wrong-secret", "GET", "harness/signed.txt", NULL, &out), 0);
    assert_int_equal(last_status(out), 403);
    assert_non_null(strstr(out, "SignatureDoesNotMatch"));
    free(out);
    assert_int_equal(curl_s3("wrong-secret", "PUT", "harness/forged.txt", "x", &out), 0);
    assert_int_equal(last_status(out), 403);
    free(out);
    /* the forged object was not written */
    assert_int_equal(curl_s3(secret, "GET", "harness/forged.txt", NULL, &out), 0);
    assert_int_equal(last_status(out), 404);
    free(out);
    assert_int_equal(curl_s3(secret, "DELETE", "harness/signed.txt", NULL, &out), 0);
    assert_int_equal(last_status(out), 204);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_postgres_answers),
        cmocka_unit_test(test_s3_checks_signatures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
