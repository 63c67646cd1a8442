/*
 * core: the buffer's ceiling, JSON escaping, the first error message winning, host:port
 * parsing, and the shape of a log line (one JSON object per line, fixed keys, levels).
 */
#include "core/core.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_buf_ceiling(void **state)
{
    struct buf b;

    (void)state;
    buf_init(&b, 8);
    assert_true(buf_append(&b, "12345", 5));
    assert_false(buf_append(&b, "6789", 4)); /* would pass the ceiling: refused, unchanged */
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "12345");
    assert_true(buf_append(&b, "678", 3));
    assert_false(buf_puts(&b, "9"));
    assert_false(buf_append(&b, "x", SIZE_MAX)); /* no overflow in the check */
    buf_free(&b);
    buf_free(&b); /* twice is harmless */
}

static void test_json_escape(void **state)
{
    struct buf b;
    const char raw[] = "a\"b\\c\nd\x01\x7f\xc3\xa9";
    json_t *parsed;
    char *doc;

    (void)state;
    buf_init(&b, 0);
    assert_true(buf_json_escape(&b, raw, sizeof(raw) - 1));
    doc = xasprintf("[\"%s\"]", b.data);
    parsed = json_loads(doc, 0, NULL);
    assert_non_null(parsed);
    assert_string_equal(json_string_value(json_array_get(parsed, 0)), raw);
    json_decref(parsed);
    free(doc);
    buf_free(&b);
}

static void test_err_first_wins(void **state)
{
    cut_err e = CUT_ERR_INIT;

    (void)state;
    assert_false(err_isset(&e));
    err_set(&e, CUT_EDB, "db", "connection refused");
    err_set(&e, CUT_EIO, "later", "a consequence");
    assert_int_equal(e.code, CUT_EDB);
    assert_string_equal(e.where, "db");
    assert_string_equal(e.msg, "connection refused");
    err_clear(&e);
    assert_false(err_isset(&e));
}

static void test_host_port(void **state)
{
    char *h = NULL;
    int p = 0;

    (void)state;
    assert_true(parse_host_port("127.0.0.1:8081", &h, &p));
    assert_string_equal(h, "127.0.0.1");
    assert_int_equal(p, 8081);
    free(h);
    assert_true(parse_host_port("[::1]:9090", &h, &p));
    assert_string_equal(h, "::1");
    free(h);
    assert_false(parse_host_port("8081", &h, &p));
    assert_false(parse_host_port(":80", &h, &p));
    assert_false(parse_host_port("host:", &h, &p));
    assert_false(parse_host_port("host:99999", &h, &p));
    assert_false(parse_host_port("host:80x", &h, &p));
}

static void test_pct_decode(void **state)
{
    char out[32];

    (void)state;
    assert_int_equal(pct_decode("a%20b%2Fc+d", 11, out, sizeof(out)), 7);
    assert_string_equal(out, "a b/c+d");
    assert_int_equal(pct_decode("%e6%97%a5", 9, out, sizeof(out)), 3);
    assert_string_equal(out, "\xe6\x97\xa5");
    assert_int_equal(pct_decode("%2", 2, out, sizeof(out)), -1);  /* truncated escape */
    assert_int_equal(pct_decode("%zz", 3, out, sizeof(out)), -1); /* not hex */
    assert_int_equal(pct_decode("abcd", 4, out, 4), -1);          /* no room for the NUL */
    assert_int_equal(pct_decode("abcd", 4, out, 5), 4);
    assert_int_equal(hex_value('F'), 15);
    assert_int_equal(hex_value('g'), -1);
}

static void test_log_lines(void **state)
{
    char *dir = test_tmpdir("log"), *path = xasprintf("%s/log", dir), *text, *line;
    FILE *f = fopen(path, "w");
    json_t *j;

    (void)state;
    assert_non_null(f);
    log_set_fd(fileno(f));
    log_set_level(LOG_INFO);
    log_msgf(LOG_DEBUG, "hidden", "not written");
    log_msgf(LOG_INFO, "started", "listening on %d", 8081);
    log_line(LOG_WARN, "upstream", "quote \" and\nnewline", "\"status\":502,\"path\":\"/x\"");
    log_set_level(LOG_OFF);
    log_msgf(LOG_ERROR, "silenced", "off means off");
    log_set_fd(1);
    log_set_level(LOG_INFO);
    fclose(f);

    text = test_read_file(path, NULL);
    assert_null(strstr(text, "hidden"));
    assert_null(strstr(text, "silenced"));
    line = strtok(text, "\n");
    j = json_loads(line, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "event")), "started");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "listening on 8081");
    assert_non_null(json_object_get(j, "ts"));
    json_decref(j);
    line = strtok(NULL, "\n");
    j = json_loads(line, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "quote \" and\nnewline");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 502);
    json_decref(j);
    assert_null(strtok(NULL, "\n"));
    assert_int_equal(log_level_parse("warn"), LOG_WARN);
    assert_int_equal(log_level_parse("loud"), -1);
    free(text);
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_ceiling),    cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_err_first_wins), cmocka_unit_test(test_host_port),
        cmocka_unit_test(test_pct_decode),     cmocka_unit_test(test_log_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
