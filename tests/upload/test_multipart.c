/*
 * The streaming multipart/form-data parser (proxy/multipart.c): the file part's bytes and the
 * form fields come out the same whatever the body's pieces (every split point, one byte at a
 * time); bytes that look like a delimiter but are not one stay in the file; quoted
 * parameters, filename*=UTF-8''; preamble, padding and epilogue; and every refusal: not
 * multipart, no or bad boundary, a missing or second file part, a part over its ceiling,
 * too many fields, a truncated body, a part without Content-Disposition.
 */
#include "core/core.h"
#include "proxy/multipart.h"
#include "tests/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CT "multipart/form-data; boundary=XyZ"

struct got {
    struct buf file;
    int calls;
    bool stop_after_first;
};

static bool on_file(void *arg, const void *data, size_t n)
{
    struct got *g = arg;
    assert_true(n > 0);
    assert_true(buf_append(&g->file, data, n));
    g->calls++;
    return !g->stop_after_first;
}

/* Parses body fed in pieces of `step` bytes (0: whole). Returns the parser (caller frees)
 * and whether feed+finish succeeded in *ok, with err. */
static multipart *parse(const char *ct, const char *body, size_t len, size_t step,
                        const struct multipart_limits *lim, struct got *g, bool *ok, cut_err *err)
{
    cut_err e0 = CUT_ERR_INIT;
    multipart *mp;
    size_t off = 0;

    buf_init(&g->file, 0);
    g->calls = 0;
    mp = multipart_new(ct, "file", lim, on_file, g, &e0);
    assert_non_null(mp);
    *ok = true;
    while (off < len) {
        size_t n = step == 0 || len - off < step ? len - off : step;
        if (!multipart_feed(mp, body + off, n, err)) {
            *ok = false;
            return mp;
        }
        off += n;
    }
    *ok = multipart_finish(mp, err);
    return mp;
}

static const char basic[] =
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"patient_id\"\r\n"
    "\r\n"
    "17\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"lab (1).txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "Lab result\r\n--XyY not a delimiter\r\n-\r\n--XyZ\r\n"
    "Content-Disposition: form-data; name=note\r\n"
    "\r\n"
    "a\r\nb\r\n"
    "--XyZ--\r\n"
    "epilogue is ignored --XyZ\r\n";

static void check_basic(multipart *mp, struct got *g)
{
    static const char file[] = "Lab result\r\n--XyY not a delimiter\r\n-";
    size_t len;
    assert_int_equal(g->file.len, sizeof(file) - 1);
    assert_memory_equal(g->file.data, file, sizeof(file) - 1);
    assert_int_equal(multipart_file_bytes(mp), sizeof(file) - 1);
    assert_string_equal(multipart_filename(mp), "lab (1).txt");
    assert_string_equal(multipart_file_type(mp), "text/plain");
    assert_int_equal(multipart_field_count(mp), 2);
    assert_string_equal(multipart_field(mp, "patient_id", &len), "17");
    assert_int_equal(len, 2);
    assert_string_equal(multipart_field(mp, "note", &len), "a\r\nb");
    assert_null(multipart_field(mp, "nope", NULL));
}

static void test_basic_every_split(void **state)
{
    size_t len = sizeof(basic) - 1;
    (void)state;
    /* whole, one byte at a time, and every size of piece */
    for (size_t step = 0; step <= len; step++) {
        struct got g = {0};
        cut_err err = CUT_ERR_INIT;
        bool ok;
        multipart *mp = parse(CT, basic, len, step, NULL, &g, &ok, &err);
        if (!ok)
            fail_msg("step %zu: %s", step, err.msg);
        check_basic(mp, &g);
        multipart_free(mp);
        buf_free(&g.file);
    }
    /* two pieces, cut at every point */
    for (size_t cut = 0; cut <= len; cut++) {
        struct got g = {0};
        cut_err err = CUT_ERR_INIT;
        multipart *mp;
        buf_init(&g.file, 0);
        g.calls = 0;
        g.stop_after_first = false;
        mp = multipart_new(CT, "file", NULL, on_file, &g, &err);
        assert_true(multipart_feed(mp, basic, cut, &err));
        assert_true(multipart_feed(mp, basic + cut, len - cut, &err));
        assert_true(multipart_finish(mp, &err));
        check_basic(mp, &g);
        multipart_free(mp);
        buf_free(&g.file);
    }
}

/* Bytes that begin like the delimiter (CR, CRLF, CRLF--, CRLF--Xy) and a CR right before the
 * real delimiter all stay in the file. */
static void test_delimiter_lookalikes(void **state)
{
    static const char body[] = "preamble\r\n--XyZ \t\r\n"
                               "content-disposition: form-data; name=\"file\"\r\n\r\n"
                               "\r\r\n\r\n-\r\n--\r\n--Xy\r\n--X\r\r\n--XyZ--";
    static const char file[] = "\r\r\n\r\n-\r\n--\r\n--Xy\r\n--X\r";
    (void)state;
    for (size_t step = 0; step < sizeof(body); step++) {
        struct got g = {0};
        cut_err err = CUT_ERR_INIT;
        bool ok;
        multipart *mp = parse(CT, body, sizeof(body) - 1, step, NULL, &g, &ok, &err);
        if (!ok)
            fail_msg("step %zu: %s", step, err.msg);
        assert_int_equal(g.file.len, sizeof(file) - 1);
        assert_memory_equal(g.file.data, file, sizeof(file) - 1);
        assert_null(multipart_filename(mp));
        multipart_free(mp);
        buf_free(&g.file);
    }
}

static void test_parameters(void **state)
{
    static const char body[] =
        "--a b'()+_,-./:=?\r\n"
        "Content-Disposition: form-data; NAME=\"file\"; filename=\"plain.pdf\"; "
        "filename*=UTF-8''%E2%82%AC%20rates%22.pdf\r\n\r\n"
        "x\r\n--a b'()+_,-./:=?\r\n"
        "Content-Disposition: form-data; name=\"quo\\\"ted\\\\\"\r\n\r\n"
        "v\r\n--a b'()+_,-./:=?--";
    struct got g = {0};
    cut_err err = CUT_ERR_INIT;
    bool ok;
    multipart *mp = parse("Multipart/Form-Data ; charset=utf-8; boundary=\"a b'()+_,-./:=?\"", body,
                          sizeof(body) - 1, 0, NULL, &g, &ok, &err);
    (void)state;
    if (!ok)
        fail_msg("%s", err.msg);
    assert_string_equal(multipart_filename(mp), "\xE2\x82\xAC rates\".pdf");
    assert_string_equal(multipart_field(mp, "quo\"ted\\", NULL), "v");
    multipart_free(mp);
    buf_free(&g.file);
}

static void expect_new_fails(const char *ct, const char *why)
{
    cut_err err = CUT_ERR_INIT;
    struct got g = {0};
    multipart *mp = multipart_new(ct, "file", NULL, on_file, &g, &err);
    assert_null(mp);
    assert_int_equal(err.code, CUT_EINVAL);
    if (!strstr(err.msg, why))
        fail_msg("'%s': got '%s', expected '%s'", ct ? ct : "(null)", err.msg, why);
}

static void test_bad_content_type(void **state)
{
    (void)state;
    expect_new_fails(NULL, "no Content-Type");
    expect_new_fails("application/json", "not multipart/form-data");
    expect_new_fails("multipart/form-datax; boundary=a", "not multipart/form-data");
    expect_new_fails("multipart/mixed; boundary=a", "not multipart/form-data");
    expect_new_fails("multipart/form-data", "no boundary");
    expect_new_fails("multipart/form-data; charset=x", "no boundary");
    expect_new_fails("multipart/form-data; boundary=\"\"", "1 to 70");
    expect_new_fails("multipart/form-data; boundary=\"ab \"", "1 to 70");
    expect_new_fails("multipart/form-data; boundary=\"a\rb\"", "does not allow");
    expect_new_fails("multipart/form-data; boundary=\"unterminated", "malformed");
    char ct[128];
    snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%071d", 0);
    expect_new_fails(ct, "1 to 70");
    snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%070d", 0);
    struct got g = {0};
    cut_err err = CUT_ERR_INIT;
    multipart *mp = multipart_new(ct, "file", NULL, on_file, &g, &err);
    assert_non_null(mp); /* 70 is allowed */
    multipart_free(mp);
}

/* body must fail (at feed when at_feed, else at finish) with code and a message holding why */
static void expect_fails(const char *body, const struct multipart_limits *lim, int code,
                         const char *why)
{
    for (size_t step = 0; step < 3; step++) {
        struct got g = {0};
        cut_err err = CUT_ERR_INIT;
        bool ok;
        multipart *mp = parse(CT, body, strlen(body), step, lim, &g, &ok, &err);
        assert_false(ok);
        assert_int_equal(err.code, code);
        if (!strstr(err.msg, why))
            fail_msg("got '%s', expected '%s'", err.msg, why);
        /* a failed parser keeps failing with the same reason */
        cut_err again = CUT_ERR_INIT;
        assert_false(multipart_feed(mp, "x", 1, &again));
        assert_string_equal(again.msg, err.msg);
        multipart_free(mp);
        buf_free(&g.file);
    }
}

#define PART(name) "--XyZ\r\nContent-Disposition: form-data; name=\"" name "\"\r\n\r\n"

static void test_refusals(void **state)
{
    struct multipart_limits lim = {0};
    (void)state;
    expect_fails(PART("a") "1\r\n--XyZ--", NULL, CUT_EINVAL, "no file part named 'file'");
    expect_fails(PART("file") "1\r\n" PART("file") "2\r\n--XyZ--", NULL, CUT_EINVAL,
                 "a second file part named 'file'");
    expect_fails(PART("file") "123", NULL, CUT_EINVAL, "ended before its closing boundary");
    expect_fails("", NULL, CUT_EINVAL, "ended before its closing boundary");
    expect_fails("--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--", NULL, CUT_EINVAL,
                 "without Content-Disposition");
    expect_fails("--XyZ\r\nContent-Disposition: attachment; name=\"file\"\r\n\r\nx\r\n--XyZ--",
                 NULL, CUT_EINVAL, "not form-data");
    expect_fails("--XyZ\r\nno colon here\r\n\r\nx\r\n--XyZ--", NULL, CUT_EINVAL,
                 "malformed part header");
    expect_fails("--XyZx\r\n", NULL, CUT_EINVAL, "malformed delimiter");
    expect_fails("--XyZ-x", NULL, CUT_EINVAL, "malformed delimiter");
    lim.max_file = 4;
    expect_fails(PART("file") "12345\r\n--XyZ--", &lim, CUT_ELIMIT, "over the size ceiling");
    lim.max_file = 0;
    lim.max_field = 3;
    expect_fails(PART("a") "1234\r\n" PART("file") "x\r\n--XyZ--", &lim, CUT_ELIMIT,
                 "form field 'a' is over the size ceiling");
    lim.max_field = 0;
    lim.max_fields = 2;
    expect_fails(PART("a") "1\r\n" PART("b") "2\r\n" PART("c") "3\r\n--XyZ--", &lim, CUT_ELIMIT,
                 "more form fields");
    lim.max_fields = 0;
    lim.max_part_header = 64;
    expect_fails("--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
                 "filename=\"a-rather-long-file-name.pdf\"\r\n\r\nx\r\n--XyZ--",
                 &lim, CUT_ELIMIT, "headers are over the ceiling");
}

/* exactly at the ceilings is allowed */
static void test_at_ceilings(void **state)
{
    struct multipart_limits lim = {.max_file = 5, .max_field = 4};
    const char *body = PART("a") "1234\r\n" PART("file") "12345\r\n--XyZ--";
    struct got g = {0};
    cut_err err = CUT_ERR_INIT;
    bool ok;
    multipart *mp = parse(CT, body, strlen(body), 1, &lim, &g, &ok, &err);
    (void)state;
    if (!ok)
        fail_msg("%s", err.msg);
    assert_int_equal(multipart_file_bytes(mp), 5);
    multipart_free(mp);
    buf_free(&g.file);
}

static void test_callback_stops(void **state)
{
    const char *body = PART("file") "12345\r\n--XyZ--";
    struct got g = {.stop_after_first = true};
    cut_err err = CUT_ERR_INIT;
    bool ok;
    multipart *mp = parse(CT, body, strlen(body), 0, NULL, &g, &ok, &err);
    (void)state;
    assert_false(ok);
    assert_int_equal(g.calls, 1);
    assert_non_null(strstr(err.msg, "stopped"));
    multipart_free(mp);
    buf_free(&g.file);
}

/* A field is listed only once complete; values may hold NUL bytes. */
static void test_field_complete_and_binary(void **state)
{
    struct got g = {0};
    cut_err err = CUT_ERR_INIT;
    static const char part[] = PART("bin") "a\0b";
    multipart *mp = multipart_new(CT, "file", NULL, on_file, &g, &err);
    size_t len;
    (void)state;
    buf_init(&g.file, 0);
    assert_true(multipart_feed(mp, part, sizeof(part) - 1, &err));
    assert_int_equal(multipart_field_count(mp), 0);
    assert_null(multipart_field(mp, "bin", NULL));
    assert_true(multipart_feed(mp, "\r\n--XyZ", 7, &err));
    assert_int_equal(multipart_field_count(mp), 1);
    const char *v = multipart_field(mp, "bin", &len);
    assert_int_equal(len, 3);
    assert_memory_equal(v, "a\0b", 3);
    multipart_free(mp);
    buf_free(&g.file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_every_split), cmocka_unit_test(test_delimiter_lookalikes),
        cmocka_unit_test(test_parameters),        cmocka_unit_test(test_bad_content_type),
        cmocka_unit_test(test_refusals),          cmocka_unit_test(test_at_ceilings),
        cmocka_unit_test(test_callback_stops),    cmocka_unit_test(test_field_complete_and_binary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
