/*
 * A database URL's password never reaches a message, whatever form it is written in: the
 * URL's user:pass@, a ?password= or &password= query parameter, a keyword string's
 * password=... (bare, quoted, with spaces or escaped quotes). Both pgstore_redact_url and the
 * message of a failed connection are checked; the connection goes to a closed port, so no
 * server is needed.
 */
#include "storage/pgstore.h"
#include "tests/unit.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *url;
    const char *secret; /* must not appear */
    const char *shown;  /* must appear */
} cases[] = {
    {"postgresql://u:hunter2@127.0.0.1:1/db", "hunter2", "host=127.0.0.1"},
    {"postgresql://u@127.0.0.1:1/db?password=hunter2", "hunter2", "dbname=db"},
    {"postgresql://u@127.0.0.1:1/db?connect_timeout=2&password=hunter2", "hunter2", "user=u"},
    {"postgresql://u@127.0.0.1:1/db?password=hunter2&connect_timeout=2", "hunter2",
     "connect_timeout=2"},
    {"postgres://u:p%40ss@127.0.0.1:1/db", "p@ss", "password=***"},
    {"host=127.0.0.1 port=1 user=u password=hunter2 dbname=db", "hunter2", "port=1"},
    {"host=127.0.0.1 port=1 password = hunter2", "hunter2", "password=***"},
    {"host=127.0.0.1 port=1 password='a secret b'", "secret", "password=***"},
    {"host=127.0.0.1 port=1 password='it\\'s-hidden' user=u", "hidden", "user=u"},
    {"host=127.0.0.1 port=1 sslpassword=hunter2", "hunter2", "sslpassword=***"},
};

static void test_redact_forms(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[512];
        pgstore_redact_url(cases[i].url, out, sizeof(out));
        if (strstr(out, cases[i].secret) != NULL || strstr(out, cases[i].shown) == NULL)
            fail_msg("%s redacted as %s", cases[i].url, out);
    }
}

static void test_redact_unparsable_and_small(void **state)
{
    char out[512], tiny[12];

    (void)state;
    /* libpq cannot parse this one (its own message would quote "b"): nothing is shown */
    pgstore_redact_url("host=x password=a b", out, sizeof(out));
    assert_null(strstr(out, "a b"));
    assert_non_null(strstr(out, "cannot parse"));
    pgstore_redact_url("postgresql://u:hunter2@127.0.0.1:1/db", tiny, sizeof(tiny));
    assert_true(strlen(tiny) < sizeof(tiny));
    assert_null(strstr(tiny, "hunter2"));
}

static void test_connect_failure_message(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cut_err err = CUT_ERR_INIT;
        pgstore *st = pgstore_connect(cases[i].url, &err);
        assert_null(st);
        assert_int_equal(err.code, CUT_EDB);
        assert_non_null(strstr(err.msg, "cannot connect"));
        if (strstr(err.msg, cases[i].secret) != NULL)
            fail_msg("the message shows the password: %s", err.msg);
    }
    {
        /* a password made of the mask's own character is still masked, once */
        cut_err err = CUT_ERR_INIT;
        assert_null(pgstore_connect("host=127.0.0.1 port=1 user=u password=*", &err));
        assert_int_equal(err.code, CUT_EDB);
    }
    {
        /* a malformed string: libpq's parse error quotes a piece of it */
        cut_err err = CUT_ERR_INIT;
        assert_null(pgstore_connect("host=127.0.0.1 password=top secret", &err));
        assert_int_equal(err.code, CUT_EINVAL);
        fprintf(stderr, "malformed: %s\n", err.msg);
        assert_null(strstr(err.msg, "secret"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact_forms),
        cmocka_unit_test(test_redact_unparsable_and_small),
        cmocka_unit_test(test_connect_failure_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
