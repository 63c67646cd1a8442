/*
 * The record an upload leaves in the journal (storage/journal.h): version 2 carries the
 * answer's sequence, and comes back with every field; a version-1 record, as builds before the
 * sequence wrote it, still reads (sequence 0: unknown, replayed in order of arrival); a record
 * of a later version reads for the fields this build knows; records with a field of the wrong
 * type, without a storage key, or that are not a JSON object are refused with the reason.
 */
#include "core/core.h"
#include "storage/journal.h"
#include "tests/unit.h"

#include <stdlib.h>
#include <string.h>

static void test_round_trip(void **state)
{
    struct pgstore_doc_in in = {
        .storage_key = "docs/é à.pdf",
        .s3_key = "uploads/docs/é à.pdf",
        .vars = "{\"org\":\"7\"}",
        .spool_path = "/spool/0001",
        .size = 5ll << 30,
        .md5 = "0123456789abcdef0123456789abcdef",
        .sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        .content_type = "application/pdf",
        .filename = "é à.pdf",
        .failed_reason = NULL,
        .answered_seq = 1795800000123456ll,
    };
    struct journal_doc out;
    cut_err err = CUT_ERR_INIT;
    char *text = journal_doc_encode(&in);
    (void)state;

    assert_non_null(text);
    assert_non_null(strstr(text, "\"v\":2"));
    assert_true(journal_doc_decode(text, strlen(text), &out, &err));
    assert_int_equal(out.version, 2);
    assert_string_equal(out.doc.storage_key, in.storage_key);
    assert_string_equal(out.doc.s3_key, in.s3_key);
    assert_string_equal(out.doc.vars, in.vars);
    assert_string_equal(out.doc.spool_path, in.spool_path);
    assert_string_equal(out.doc.md5, in.md5);
    assert_string_equal(out.doc.sha256, in.sha256);
    assert_string_equal(out.doc.content_type, in.content_type);
    assert_string_equal(out.doc.filename, in.filename);
    assert_null(out.doc.failed_reason);
    assert_int_equal(out.doc.size, in.size);
    assert_int_equal(out.doc.answered_seq, in.answered_seq);
    assert_string_equal(out.doc.origin, "upload");
    journal_doc_clear(&out);
    free(text);

    /* no spool: no size, no sequence known */
    struct pgstore_doc_in bare = {
        .storage_key = "k", .s3_key = "k", .size = -1, .failed_reason = "a '..' segment"};
    text = journal_doc_encode(&bare);
    assert_true(journal_doc_decode(text, strlen(text), &out, &err));
    assert_int_equal(out.doc.size, -1);
    assert_int_equal(out.doc.answered_seq, 0);
    assert_null(out.doc.spool_path);
    assert_string_equal(out.doc.failed_reason, "a '..' segment");
    journal_doc_clear(&out);
    free(text);
}

/* What upload.c wrote before version 2, byte for byte. */
static void test_version1_reads(void **state)
{
    static const char v1[] =
        "{\"storage_key\":\"a/b.txt\",\"s3_key\":\"u/a/b.txt\",\"vars\":\"{}\","
        "\"spool_path\":\"/spool/7\",\"md5\":\"0123456789abcdef0123456789abcdef\","
        "\"sha256\":\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\","
        "\"content_type\":\"text/plain\",\"size\":12}";
    struct journal_doc out;
    cut_err err = CUT_ERR_INIT;
    (void)state;

    assert_true(journal_doc_decode(v1, strlen(v1), &out, &err));
    assert_int_equal(out.version, 1);
    assert_string_equal(out.doc.storage_key, "a/b.txt");
    assert_string_equal(out.doc.s3_key, "u/a/b.txt");
    assert_string_equal(out.doc.spool_path, "/spool/7");
    assert_string_equal(out.doc.content_type, "text/plain");
    assert_null(out.doc.filename);
    assert_int_equal(out.doc.size, 12);
    assert_int_equal(out.doc.answered_seq, 0);
    journal_doc_clear(&out);

    /* a sequence in a record that does not say it is version 2 is not trusted */
    static const char odd[] = "{\"storage_key\":\"k\",\"answered_seq\":5}";
    assert_true(journal_doc_decode(odd, strlen(odd), &out, &err));
    assert_int_equal(out.doc.answered_seq, 0);
    journal_doc_clear(&out);

    /* a later version: the known fields */
    static const char v3[] = "{\"v\":3,\"storage_key\":\"k\",\"answered_seq\":9,\"new\":[1]}";
    assert_true(journal_doc_decode(v3, strlen(v3), &out, &err));
    assert_int_equal(out.version, 3);
    assert_int_equal(out.doc.answered_seq, 9);
    journal_doc_clear(&out);
}

static void test_refused(void **state)
{
    static const char *bad[] = {
        "[1]",
        "{\"s3_key\":\"k\"}",
        "{\"storage_key\":\"\"}",
        "{\"storage_key\":7}",
        "{\"storage_key\":\"k\",\"size\":\"12\"}",
        "{\"storage_key\":\"k\",\"size\":-2}",
        "{\"v\":2,\"storage_key\":\"k\",\"answered_seq\":-1}",
        "{\"v\":2,\"storage_key\":\"k\",\"answered_seq\":1.5}",
        "{\"v\":0,\"storage_key\":\"k\"}",
        "{\"storage_key\":\"k\",\"md5\":[]}",
        "{\"storage_key\":\"k\"",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct journal_doc out;
        cut_err err = CUT_ERR_INIT;
        if (journal_doc_decode(bad[i], strlen(bad[i]), &out, &err))
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(err.code, CUT_EINVAL);
        assert_null(out.json);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_version1_reads),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
