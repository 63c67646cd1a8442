/*
 * extract: RFC 6901 pointers (the RFC's own examples, escapes, strict array indices, absent
 * and malformed pointers) and S3 key templates (values substituted as they are; a value that
 * is empty, holds a control character or invalid UTF-8, or has a "." or ".." segment, a key
 * that starts with '/' or passes 1024 bytes, an unknown variable: each refused with the
 * variable named).
 */
#include "core/core.h"
#include "proxy/extract.h"
#include "storage/s3.h"
#include "tests/unit.h"

#include <stdlib.h>
#include <string.h>

static void test_pointer_rfc6901(void **state)
{
    /* the example document of RFC 6901 section 5 */
    json_error_t je;
    json_t *doc = json_loads("{\"foo\": [\"bar\", \"baz\"], \"\": 0, \"a/b\": 1, \"c%d\": 2, "
                             "\"e^f\": 3, \"g|h\": 4, \"i\\\\j\": 5, \"k\\\"l\": 6, \" \": 7, "
                             "\"m~n\": 8}",
                             0, &je);
    (void)state;
    assert_non_null(doc);
    assert_ptr_equal(extract_json_pointer(doc, ""), doc);
    assert_ptr_equal(extract_json_pointer(doc, "/foo"), json_object_get(doc, "foo"));
    assert_string_equal(json_string_value(extract_json_pointer(doc, "/foo/0")), "bar");
    struct {
        const char *ptr;
        int want;
    } cases[] = {{"/", 0},     {"/a~1b", 1}, {"/c%d", 2}, {"/e^f", 3}, {"/g|h", 4},
                 {"/i\\j", 5}, {"/k\"l", 6}, {"/ ", 7},   {"/m~0n", 8}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const json_t *v = extract_json_pointer(doc, cases[i].ptr);
        if (!json_is_integer(v) || json_integer_value(v) != cases[i].want)
            fail_msg("pointer '%s'", cases[i].ptr);
    }
    /* absent or malformed */
    const char *bad[] = {"foo",   "/foo/2", "/foo/01", "/foo/-",   "/foo/x",
                         "/nope", "/m~2n",  "/m~",     "/foo/0/x", "/foo/99999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (extract_json_pointer(doc, bad[i]) != NULL)
            fail_msg("pointer '%s' should find nothing", bad[i]);
    json_decref(doc);
}

static void test_pointer_string(void **state)
{
    json_t *doc = json_pack("{s:s, s:I, s:b, s:{s:s}}", "key", "a/b c.pdf", "id", (json_int_t)42,
                            "flag", 1, "deep", "k", "v");
    cut_err err = CUT_ERR_INIT;
    char *s;
    (void)state;
    s = extract_json_string(doc, "/key", &err);
    assert_string_equal(s, "a/b c.pdf");
    free(s);
    s = extract_json_string(doc, "/id", &err);
    assert_string_equal(s, "42");
    free(s);
    s = extract_json_string(doc, "/deep/k", &err);
    assert_string_equal(s, "v");
    free(s);
    assert_null(extract_json_string(doc, "/flag", &err));
    assert_non_null(strstr(err.msg, "neither a string nor an integer"));
    err_clear(&err);
    assert_null(extract_json_string(doc, "/missing", &err));
    assert_non_null(strstr(err.msg, "no value at JSON pointer \"/missing\""));
    json_decref(doc);
}

struct vars {
    const char *names[4];
    const char *values[4];
};

static const char *lookup(void *arg, const char *name, size_t nlen, size_t *len)
{
    struct vars *v = arg;
    for (size_t i = 0; i < 4 && v->names[i]; i++)
        if (strlen(v->names[i]) == nlen && memcmp(v->names[i], name, nlen) == 0) {
            *len = strlen(v->values[i]);
            return v->values[i];
        }
    return NULL;
}

static char *expand(const char *tpl, const char *org, const char *key, cut_err *err)
{
    struct vars v = {{"org", "key"}, {org, key}};
    return extract_s3_key(tpl, lookup, &v, err);
}

static void test_s3_key_ok(void **state)
{
    cut_err err = CUT_ERR_INIT;
    char *k;
    (void)state;
    k = expand("documents/{org}/{key}", "clinic-7", "9d/lab result (1).txt", &err);
    assert_string_equal(k, "documents/clinic-7/9d/lab result (1).txt");
    free(k);
    /* special characters and unicode are the key's own: no encoding here */
    k = expand("{key}", "x", "a+b%20c#d?e&f=g'h(i)*!;~ \xc3\xa9\xe6\x96\x87\xf0\x9f\x93\x84", &err);
    assert_string_equal(k, "a+b%20c#d?e&f=g'h(i)*!;~ \xc3\xa9\xe6\x96\x87\xf0\x9f\x93\x84");
    free(k);
    /* dots that are not a whole segment are fine */
    k = expand("{org}/{key}", "a..b", "...", &err);
    assert_string_equal(k, "a..b/...");
    free(k);
    assert_false(err_isset(&err));
}

static void expect_refused(const char *tpl, const char *org, const char *key, const char *why)
{
    cut_err err = CUT_ERR_INIT;
    char *k = expand(tpl, org, key, &err);
    if (k || err.code != CUT_EINVAL || !strstr(err.msg, why))
        fail_msg("'%s' org='%s' key='%s': got %s / '%s', expected '%s'", tpl, org, key,
                 k ? k : "(null)", err.msg, why);
}

static void test_s3_key_refused(void **state)
{
    char big[1100];
    (void)state;
    expect_refused("documents/{org}/{key}", "..", "k", "{org} has a '.' or '..' segment");
    expect_refused("documents/{org}/{key}", "a/../b", "k", "{org} has a '.' or '..' segment");
    expect_refused("documents/{org}/{key}", "o", "../../etc/passwd", "{key} has a '.' or '..'");
    expect_refused("documents/{org}/{key}", "o", "x/.", "{key} has a '.' or '..' segment");
    expect_refused("documents/{org}/{key}", "o", "a\nb", "{key} holds a control character");
    expect_refused("documents/{org}/{key}", "o", "a\x7f", "{key} holds a control character");
    expect_refused("documents/{org}/{key}", "o\tx", "k", "{org} holds a control character");
    expect_refused("documents/{org}/{key}", "o", "\xc0\xaf", "{key} is not valid UTF-8");
    expect_refused("documents/{org}/{key}", "o", "\xed\xa0\x80", "{key} is not valid UTF-8");
    expect_refused("documents/{org}/{key}", "", "k", "{org} is empty");
    expect_refused("{key}", "o", "/abs", "starts with '/'");
    /* a value with a leading slash, inside the key (issue 8: unmirrorable) */
    expect_refused("documents/{org}/{key}", "o", "/abs", "{key} starts with '/'");
    expect_refused("{org}./{key}", ".", "k", "'.' or '..' segment"); /* value + literal */
    expect_refused("documents/{patient}/{key}", "o", "k", "{patient} has no value");
    expect_refused("documents/{org", "o", "k", "unclosed");
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    expect_refused("d/{key}", "o", big, "longer than 1024 bytes");
    big[1022] = 0; /* "d/" + 1022 = 1024: exactly the limit is allowed */
    cut_err err = CUT_ERR_INIT;
    char *k = expand("d/{key}", "o", big, &err);
    assert_non_null(k);
    assert_int_equal(strlen(k), 1024);
    free(k);
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(utf8_valid("plain", 5));
    assert_true(utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    assert_false(utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    assert_false(utf8_valid("\xe2\x82", 2));         /* truncated */
    assert_false(utf8_valid("\xff", 1));
}

static void test_content_disposition(void **state)
{
    char *v;
    (void)state;
    v = s3_content_disposition("report 2026.pdf");
    assert_string_equal(v, "inline; filename=\"report 2026.pdf\"");
    free(v);
    v = s3_content_disposition("r\xc3\xa9sum\xc3\xa9 \"final\".pdf");
    assert_string_equal(v, "inline; filename=\"r__sum__ _final_.pdf\"; "
                           "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf");
    free(v);
    v = s3_content_disposition("a\\b;c.txt");
    assert_string_equal(v, "inline; filename=\"a_b;c.txt\"; filename*=UTF-8''a%5Cb%3Bc.txt");
    free(v);
    assert_null(s3_content_disposition(NULL));
    assert_null(s3_content_disposition(""));
    assert_null(s3_content_disposition("\xff.pdf"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pointer_rfc6901),
        cmocka_unit_test(test_pointer_string),
        cmocka_unit_test(test_s3_key_ok),
        cmocka_unit_test(test_s3_key_refused),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_content_disposition),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
