/*
 * The backfill's pieces that need no servers: the JSONL reader (line numbers of bad lines,
 * blank lines and CRLF, a line over the ceiling, integer keys, fields as template variables,
 * null fields left out), the template variables of a row, the S3 key template of a
 * configuration, and the token bucket's arithmetic (debt, refill, the one-second ceiling).
 */
#include "core/config.h"
#include "storage/backfill.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;

static backfill_source *open_jsonl(const char *text, char **path)
{
    dir = test_tmpdir("backfill_unit");
    cut_err err = CUT_ERR_INIT;
    *path = xasprintf("%s/docs.jsonl", dir);
    assert_true(test_write_file(*path, text, strlen(text)));
    struct cfg_backfill cfg = {.kind = BACKFILL_JSONL, .jsonl = *path};
    backfill_source *s = backfill_source_open(&cfg, NULL, 100, &err);
    if (!s)
        fail_msg("%s", err.msg);
    return s;
}

static void test_jsonl_rows(void **state)
{
    char *path;
    cut_err err = CUT_ERR_INIT;
    struct backfill_row rows[4];
    size_t n;
    (void)state;

    backfill_source *s = open_jsonl("{\"key\": \"a/1.bin\", \"org\": \"o1\", \"patient\": null}\n"
                                    "\n"
                                    "   \r\n"
                                    "{\"key\": 42, \"n\": 7, \"ok\": true}\r\n"
                                    "{\"key\": \"x\"\n"
                                    "[1, 2]\n"
                                    "{\"org\": \"o\"}\n"
                                    "{\"key\": \"\"}\n"
                                    "{\"key\": {\"a\": 1}}\n"
                                    "{\"key\": \"last\"}",
                                    &path);
    /* at most 4 at a time: the rest comes with the next call */
    assert_int_equal(backfill_source_next(s, rows, 4, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_string_equal(rows[0].key, "a/1.bin");
    assert_int_equal(rows[0].line, 1);
    assert_string_equal(json_string_value(json_object_get(rows[0].vars, "org")), "o1");
    assert_null(json_object_get(rows[0].vars, "patient"));
    assert_null(json_object_get(rows[0].vars, "key"));
    assert_string_equal(rows[1].key, "42");
    assert_int_equal(rows[1].line, 4);
    assert_string_equal(json_string_value(json_object_get(rows[1].vars, "n")), "7");
    assert_null(rows[2].key);
    assert_int_equal(rows[2].line, 5);
    assert_non_null(strstr(rows[2].error, "not JSON"));
    assert_null(rows[3].key);
    assert_int_equal(rows[3].line, 6);
    assert_string_equal(rows[3].error, "not a JSON object");
    backfill_rows_clear(rows, n);
    assert_int_equal(backfill_source_next(s, rows, 4, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(rows[0].line, 7);
    assert_string_equal(rows[0].error, "no \"key\" member");
    assert_int_equal(rows[1].line, 8);
    assert_string_equal(rows[1].error, "the key is empty");
    assert_int_equal(rows[2].line, 9);
    assert_non_null(rows[2].error);
    /* the last line has no newline */
    assert_string_equal(rows[3].key, "last");
    assert_int_equal(rows[3].line, 10);
    backfill_rows_clear(rows, n);
    assert_int_equal(backfill_source_next(s, rows, 4, &n, &err), 0);
    assert_int_equal(n, 0);
    backfill_source_free(s);
    test_rmtree(dir);
    free(dir);
    free(path);
}

static void test_jsonl_long_line(void **state)
{
    char *path;
    cut_err err = CUT_ERR_INIT;
    struct backfill_row rows[3];
    size_t n;
    struct buf b;
    (void)state;

    buf_init(&b, 0);
    assert_true(buf_puts(&b, "{\"key\": \""));
    for (int i = 0; i < BACKFILL_MAX_LINE; i++)
        assert_true(buf_puts(&b, "x"));
    assert_true(buf_puts(&b, "\"}\n{\"key\": \"after\"}\n"));
    backfill_source *s = open_jsonl(b.data, &path);
    assert_int_equal(backfill_source_next(s, rows, 3, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_null(rows[0].key);
    assert_int_equal(rows[0].line, 1);
    assert_non_null(strstr(rows[0].error, "longer than"));
    assert_string_equal(rows[1].key, "after");
    assert_int_equal(rows[1].line, 2);
    backfill_rows_clear(rows, n);
    backfill_source_free(s);
    buf_free(&b);
    test_rmtree(dir);
    free(dir);
    free(path);
}

static void test_missing_file(void **state)
{
    cut_err err = CUT_ERR_INIT;
    struct cfg_backfill cfg = {.kind = BACKFILL_JSONL, .jsonl = "/nonexistent/docs.jsonl"};
    (void)state;
    assert_null(backfill_source_open(&cfg, NULL, 100, &err));
    assert_int_equal(err.code, CUT_EINVAL);
    assert_non_null(strstr(err.msg, "/nonexistent/docs.jsonl"));
}

static void test_row_vars_and_template(void **state)
{
    struct backfill_row r = {.key = "k/1", .vars = json_pack("{s:s}", "org", "o")};
    size_t len = 0;
    (void)state;

    assert_string_equal(backfill_row_var(&r, "key", 3, &len), "k/1");
    assert_int_equal(len, 3);
    assert_string_equal(backfill_row_var(&r, "orgX", 3, &len), "o");
    assert_null(backfill_row_var(&r, "patient", 7, &len));
    json_decref(r.vars);

    struct cfg_problems p = {0};
    struct config *cfg = config_parse(
        "{\"s3\": {\"bucket\": \"docs-bucket\", \"region\": \"r\"}, \"routes\": [{\"name\": \"d\", "
        "\"kind\": "
        "\"delete\", \"path\": \"/d/{key}\", "
        "\"key\": {\"path\": \"key\"}}, {\"name\": \"u\", \"kind\": \"upload\", \"path\": "
        "\"/documents\", \"key\": {\"response_json\": \"/k\"}, \"s3_key\": \"docs/{key}\"}]}",
        "test", &p);
    if (!cfg)
        fail_msg("%s", p.n ? p.lines[0] : "config");
    assert_string_equal(backfill_key_template(cfg), "docs/{key}");
    config_free(cfg);
    cfg = config_parse("{}", "test", &p);
    assert_non_null(cfg);
    assert_string_equal(backfill_key_template(cfg), "{key}");
    config_free(cfg);
}

static void test_bucket(void **state)
{
    struct backfill_bucket b;
    (void)state;

    /* no limit */
    backfill_bucket_init(&b, 0, 0);
    backfill_bucket_take(&b, 1e6, 0);
    assert_int_equal(backfill_bucket_wait_us(&b, 0), 0);

    /* 100/s, empty at the start: a first batch goes, then its debt is waited out */
    backfill_bucket_init(&b, 100, 1000000);
    assert_int_equal(backfill_bucket_wait_us(&b, 1000000), 0);
    backfill_bucket_take(&b, 100, 1000000);
    uint64_t w = backfill_bucket_wait_us(&b, 1000000);
    assert_true(w >= 999000 && w <= 1001000);
    /* half a second later, half the debt is left */
    w = backfill_bucket_wait_us(&b, 1500000);
    assert_true(w >= 499000 && w <= 501000);
    assert_int_equal(backfill_bucket_wait_us(&b, 2000001), 0);
    /* idle for a minute: at most one second's worth saved */
    backfill_bucket_take(&b, 0, 62000000);
    backfill_bucket_take(&b, 150, 62000000);
    w = backfill_bucket_wait_us(&b, 62000000);
    assert_true(w >= 499000 && w <= 501000);
    /* documents already known cost nothing */
    backfill_bucket_take(&b, 0, 62500001);
    assert_int_equal(backfill_bucket_wait_us(&b, 62500001), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonl_rows),   cmocka_unit_test(test_jsonl_long_line),
        cmocka_unit_test(test_missing_file), cmocka_unit_test(test_row_vars_and_template),
        cmocka_unit_test(test_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
