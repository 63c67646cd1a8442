/*
 * test_proxy_http_check: the request checks' pure functions, without a server (label
 * unit, so `ctest -L unit` runs them).
 */
#include "proxy/http_check.h"
#include "tests/unit.h"

#include <stdint.h>

/* The request's length is kept as a signed 64-bit number: a longer one must be refused,
 * not wrap to a negative length (which would forward the body as chunked). */
static void test_length_fits_int64(void **state)
{
    uint64_t v = 0;
    (void)state;
    assert_true(http_parse_length("9223372036854775807", 19, &v));
    assert_true(v == (uint64_t)INT64_MAX);
    assert_false(http_parse_length("9223372036854775808", 19, &v));
    assert_false(http_parse_length("9999999999999999999", 19, &v));
    assert_false(http_parse_length("", 0, &v));
    assert_false(http_parse_length("1x", 2, &v));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_length_fits_int64)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
