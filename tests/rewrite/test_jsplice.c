/*
 * jsonsplice: the URL string found at the route's JSON Pointer and replaced in the app's own
 * bytes. Asserts: the field at the start, at the end, nested in objects and arrays; escaped
 * pointer tokens (~0, ~1) and escaped member names ("\u0075rl"); strings with escapes and
 * braces before the field; the field absent; a non-string value; duplicate member names on
 * the path refused (elsewhere ignored); answers jansson refuses refused too (and the same
 * answers accepted); the app's whitespace kept byte for byte; escaping of the new string;
 * the body's ceiling.
 */
#include "core/core.h"
#include "proxy/jsonsplice.h"
#include "tests/unit.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Splices "NEW" at ptr into doc: the resulting text, or NULL with *r set when refused. */
static char *splice(const char *doc, const char *ptr, enum jsplice_result *r)
{
    size_t a = 0, b = 0;
    struct buf body;
    *r = jsplice_find(doc, strlen(doc), ptr, &a, &b);
    if (*r != JSPLICE_STRING)
        return NULL;
    buf_init(&body, 0);
    assert_true(buf_append(&body, doc, strlen(doc)));
    assert_true(jsplice_put_string(&body, a, b, "NEW", 3));
    return buf_steal(&body);
}

static void expect(const char *doc, const char *ptr, const char *want)
{
    enum jsplice_result r;
    char *got = splice(doc, ptr, &r);
    if (!got)
        fail_msg("%s at %s: refused (%s)", doc, ptr, jsplice_result_name(r));
    if (strcmp(got, want) != 0)
        fail_msg("%s at %s: got %s, want %s", doc, ptr, got, want);
    free(got);
}

static void refuse(const char *doc, const char *ptr, enum jsplice_result want)
{
    size_t a, b;
    enum jsplice_result r = jsplice_find(doc, strlen(doc), ptr, &a, &b);
    if (r != want)
        fail_msg("%s at %s: %s, want %s", doc, ptr, jsplice_result_name(r),
                 jsplice_result_name(want));
}

static void test_positions(void **state)
{
    (void)state;
    expect("{\"url\":\"x\",\"a\":1}", "/url", "{\"url\":\"NEW\",\"a\":1}");
    expect("{\"a\":1,\"url\":\"x\"}", "/url", "{\"a\":1,\"url\":\"NEW\"}");
    expect("{\"url\":\"\"}", "/url", "{\"url\":\"NEW\"}");
    expect("{\"a\":{\"b\":[1,{\"url\":\"x\"}]},\"url\":2}", "/a/b/1/url",
           "{\"a\":{\"b\":[1,{\"url\":\"NEW\"}]},\"url\":2}");
    expect("[\"a\",\"b\",\"c\"]", "/2", "[\"a\",\"b\",\"NEW\"]");
    expect("[[],[[\"x\"]]]", "/1/0/0", "[[],[[\"NEW\"]]]");
    /* the same name at another level is not the field */
    expect("{\"x\":{\"url\":\"no\"},\"url\":\"yes\"}", "/url",
           "{\"x\":{\"url\":\"no\"},\"url\":\"NEW\"}");
    /* a long URL replaced by a short one and the other way round */
    expect("{\"u\":\"https://legacy.example.com/a/very/long/path?sig=0123456789\",\"z\":[]}", "/u",
           "{\"u\":\"NEW\",\"z\":[]}");
}

static void test_whitespace_kept(void **state)
{
    (void)state;
    expect(" {\n  \"url\" :\t\"x\" ,\r\n  \"n\": 1.50e+3\n}\n", "/url",
           " {\n  \"url\" :\t\"NEW\" ,\r\n  \"n\": 1.50e+3\n}\n");
}

static void test_escapes(void **state)
{
    (void)state;
    /* pointer tokens: ~1 is '/', ~0 is '~' */
    expect("{\"a/b\":\"x\",\"m~n\":\"y\"}", "/a~1b", "{\"a/b\":\"NEW\",\"m~n\":\"y\"}");
    expect("{\"a/b\":\"x\",\"m~n\":\"y\"}", "/m~0n", "{\"a/b\":\"x\",\"m~n\":\"NEW\"}");
    refuse("{\"a\":\"x\"}", "/a~2", JSPLICE_INVALID);
    refuse("{\"a\":\"x\"}", "a", JSPLICE_INVALID);
    /* member names escaped in the answer are compared unescaped */
    expect("{\"\\u0075rl\":\"x\"}", "/url", "{\"\\u0075rl\":\"NEW\"}");
    expect("{\"\\u00e9\":\"x\"}", "/\xc3\xa9", "{\"\\u00e9\":\"NEW\"}");
    expect("{\"\\ud83d\\ude00\":\"x\"}", "/\xf0\x9f\x98\x80", "{\"\\ud83d\\ude00\":\"NEW\"}");
    expect("{\"a\\/b\":\"x\"}", "/a~1b", "{\"a\\/b\":\"NEW\"}");
    refuse("{\"url\\n\":\"x\"}", "/url", JSPLICE_ABSENT);
    /* strings with escapes, quotes and brackets before the field do not confuse the scan */
    expect("{\"t\":\"\\\"url\\\":\\\"no\\\" } ] \\\\\",\"url\":\"x\"}", "/url",
           "{\"t\":\"\\\"url\\\":\\\"no\\\" } ] \\\\\",\"url\":\"NEW\"}");
    /* the old value's own escapes are replaced whole */
    expect("{\"url\":\"a\\\"b\\u0041\\\\\"}", "/url", "{\"url\":\"NEW\"}");
}

static void test_absent_and_types(void **state)
{
    (void)state;
    refuse("{\"a\":\"x\"}", "/url", JSPLICE_ABSENT);
    refuse("{\"a\":{\"b\":1}}", "/a/c", JSPLICE_ABSENT);
    refuse("{\"a\":\"x\"}", "/a/b", JSPLICE_ABSENT);
    refuse("[\"x\"]", "/1", JSPLICE_ABSENT);
    refuse("[\"x\",\"y\"]", "/01", JSPLICE_ABSENT);
    refuse("[\"x\"]", "/-", JSPLICE_ABSENT);
    refuse("{}", "/url", JSPLICE_ABSENT);
    refuse("{\"url\":1}", "/url", JSPLICE_NOT_STRING);
    refuse("{\"url\":null}", "/url", JSPLICE_NOT_STRING);
    refuse("{\"url\":{\"a\":\"x\"}}", "/url", JSPLICE_NOT_STRING);
    refuse("{\"url\":[\"x\"]}", "/url", JSPLICE_NOT_STRING);
    refuse("{\"url\":\"x\"}", "", JSPLICE_NOT_STRING);
}

static void test_duplicates(void **state)
{
    (void)state;
    /* jansson keeps the last, many clients the first: refused when on the path */
    refuse("{\"url\":\"a\",\"url\":\"b\"}", "/url", JSPLICE_DUPLICATE);
    refuse("{\"url\":\"a\",\"u\\u0072l\":\"b\"}", "/url", JSPLICE_DUPLICATE);
    refuse("{\"d\":{\"url\":\"a\"},\"d\":{\"url\":\"b\"}}", "/d/url", JSPLICE_DUPLICATE);
    refuse("{\"d\":{\"url\":\"a\"},\"d\":1}", "/d/url", JSPLICE_DUPLICATE);
    /* elsewhere they do not matter */
    expect("{\"x\":1,\"x\":2,\"url\":\"a\"}", "/url", "{\"x\":1,\"x\":2,\"url\":\"NEW\"}");
    expect("{\"o\":{\"url\":1,\"url\":2},\"url\":\"a\"}", "/url",
           "{\"o\":{\"url\":1,\"url\":2},\"url\":\"NEW\"}");
}

/* Answers that jansson refuses are refused; the valid ones around them are not. */
static void test_invalid_like_jansson(void **state)
{
    const char *docs[] = {
        "",
        "\"url\"",
        "1",
        "{\"url\":\"x\"",
        "{\"url\":\"x\"}x",
        "{\"url\":\"x\"}{}",
        "{\"url\":\"x\",}",
        "{\"url\" \"x\"}",
        "{url:\"x\"}",
        "{\"url\":'x'}",
        "{\"url\":\"x\",\"n\":01}",
        "{\"url\":\"x\",\"n\":1.}",
        "{\"url\":\"x\",\"n\":.5}",
        "{\"url\":\"x\",\"n\":1e}",
        "{\"url\":\"x\",\"n\":+1}",
        "{\"url\":\"x\",\"n\":-}",
        "{\"url\":\"x\",\"n\":99999999999999999999}",
        "{\"url\":\"x\",\"n\":9223372036854775808}",
        "{\"url\":\"x\",\"n\":1e400}",
        "{\"url\":\"x\",\"n\":tru}",
        "{\"url\":\"x\",\"n\":nulll}",
        "{\"url\":\"x\",\"s\":\"\\u0000\"}",
        "{\"url\":\"x\",\"s\":\"\\ud800\"}",
        "{\"url\":\"x\",\"s\":\"\\udc00\\ud800\"}",
        "{\"url\":\"x\",\"s\":\"\\x\"}",
        "{\"url\":\"x\",\"s\":\"\t\"}",
        "{\"url\":\"x\",\"s\":\"\xc3\"}",
        "{\"url\":\"x\",\"s\":\"\xed\xa0\x80\"}",
        "{\"url\":\"x\",\"s\":\"\xc0\xaf\"}",
        "{\"url\":\"x\",\"a\":[1,]}",
        "{\"url\":\"x\",\"a\":[1 2]}",
        "\xef\xbb\xbf{\"url\":\"x\"}",
        "{\"url\":\"x\"}\0",
    };
    const char *ok[] = {
        "{\"url\":\"x\",\"n\":-0.0e-0}",
        "{\"url\":\"x\",\"n\":9223372036854775807,\"m\":-9223372036854775808}",
        "{\"url\":\"x\",\"n\":1e-400}",
        "{\"url\":\"x\",\"s\":\"\\ud83d\\ude00\xf4\x8f\xbf\xbf\x7f\"}",
        "{\"url\":\"x\",\"v\":[true,false,null,{},[]]}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        size_t a, b, len = strlen(docs[i]) + (i == sizeof(docs) / sizeof(docs[0]) - 1);
        json_error_t je;
        json_t *j = json_loadb(docs[i], len, 0, &je);
        if (j)
            fail_msg("jansson loads case %zu: the case is wrong", i);
        if (jsplice_find(docs[i], len, "/url", &a, &b) != JSPLICE_INVALID)
            fail_msg("case %zu (%s) not refused", i, docs[i]);
    }
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        json_error_t je;
        json_t *j = json_loads(ok[i], 0, &je);
        if (!j)
            fail_msg("jansson refuses ok case %zu: %s", i, je.text);
        json_decref(j);
        /* "url":"x" comes first in each: the rest must be kept */
        char want[256];
        snprintf(want, sizeof(want), "{\"url\":\"NEW\"%s", ok[i] + strlen("{\"url\":\"x\""));
        expect(ok[i], "/url", want);
    }
}

static void test_depth(void **state)
{
    size_t d = JSPLICE_MAX_DEPTH;
    char *doc = malloc(2 * (d + 1) + 1);
    size_t a, b;
    (void)state;
    memset(doc, '[', d);
    memset(doc + d, ']', d);
    doc[2 * d] = 0;
    assert_int_equal(jsplice_find(doc, 2 * d, "/0", &a, &b), JSPLICE_NOT_STRING);
    memset(doc, '[', d + 1);
    memset(doc + d + 1, ']', d + 1);
    doc[2 * d + 2] = 0;
    assert_int_equal(jsplice_find(doc, 2 * d + 2, "/0", &a, &b), JSPLICE_INVALID);
    free(doc);
}

static void test_put_string(void **state)
{
    struct buf body;
    const char *doc = "{\"url\":\"x\",\"z\":1}";
    size_t a, b;
    (void)state;
    buf_init(&body, 0);
    assert_true(buf_append(&body, doc, strlen(doc)));
    assert_int_equal(jsplice_find(body.data, body.len, "/url", &a, &b), JSPLICE_STRING);
    /* escaped as jansson writes it */
    assert_true(jsplice_put_string(&body, a, b, "a\"b\\c/\n\x01\xc3\xa9", 10));
    assert_string_equal(body.data, "{\"url\":\"a\\\"b\\\\c/\\n\\u0001\xc3\xa9\",\"z\":1}");
    assert_int_equal(body.len, strlen(body.data));
    /* invalid UTF-8 is refused, body unchanged */
    assert_int_equal(jsplice_find(body.data, body.len, "/url", &a, &b), JSPLICE_STRING);
    assert_false(jsplice_put_string(&body, a, b, "\xff", 1));
    assert_string_equal(body.data, "{\"url\":\"a\\\"b\\\\c/\\n\\u0001\xc3\xa9\",\"z\":1}");
    buf_free(&body);

    /* the ceiling: growing past max refuses, body unchanged */
    buf_init(&body, 20);
    assert_true(buf_append(&body, doc, strlen(doc)));
    assert_int_equal(jsplice_find(body.data, body.len, "/url", &a, &b), JSPLICE_STRING);
    assert_false(jsplice_put_string(&body, a, b, "https://s3.example", 18));
    assert_string_equal(body.data, doc);
    assert_true(jsplice_put_string(&body, a, b, "abcd", 4));
    assert_string_equal(body.data, "{\"url\":\"abcd\",\"z\":1}");
    buf_free(&body);
}

/* Every length around the 8-byte steps, a byte to escape (or not) at every position: the
 * string written is the one jansson writes for the same value. */
static void test_put_string_like_jansson(void **state)
{
    const char *specials[] = {"\"", "\\", "\x1f", "\n", "\x7f", "\xc3\xa9", "/", "a"};
    (void)state;
    for (size_t len = 0; len <= 24; len++) {
        for (size_t pos = 0; pos <= len; pos++) {
            for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
                char v[64], *want;
                size_t n = 0, a, b;
                struct buf body;
                json_t *j;
                for (size_t i = 0; i < len; i++) {
                    if (i == pos) {
                        memcpy(v + n, specials[k], strlen(specials[k]));
                        n += strlen(specials[k]);
                    }
                    v[n++] = (char)('a' + i % 26);
                }
                if (pos == len) {
                    memcpy(v + n, specials[k], strlen(specials[k]));
                    n += strlen(specials[k]);
                }
                j = json_stringn(v, n);
                assert_non_null(j);
                want = json_dumps(j, JSON_ENCODE_ANY);
                buf_init(&body, 0);
                assert_true(buf_append(&body, "[\"x\",1]", 7));
                assert_int_equal(jsplice_find(body.data, body.len, "/0", &a, &b), JSPLICE_STRING);
                assert_true(jsplice_put_string(&body, a, b, v, n));
                if (body.len != strlen(want) + 4 ||
                    memcmp(body.data + 1, want, strlen(want)) != 0 ||
                    strcmp(body.data + 1 + strlen(want), ",1]") != 0)
                    fail_msg("len %zu pos %zu special %zu: %s, want [%s,1]", len, pos, k, body.data,
                             want);
                free(want);
                json_decref(j);
                buf_free(&body);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_positions),
        cmocka_unit_test(test_whitespace_kept),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_absent_and_types),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_invalid_like_jansson),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_put_string),
        cmocka_unit_test(test_put_string_like_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
