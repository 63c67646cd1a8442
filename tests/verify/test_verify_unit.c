/*
 * The verify decisions that need no servers: how a HEAD's answer is compared with the record
 * (verify_head_agrees: the size first, then S3's SHA-256 checksum in base64 against the
 * recorded hex, a multipart composite checksum skipped for the ETag, the ETag as an MD5 only
 * when it is one and not under SSE-KMS, else the ETag recorded at the copy), and the
 * consistency ratio.
 */
#include "storage/verify.h"
#include "tests/unit.h"

#include <stdio.h>
#include <string.h>

/* SHA-256 and MD5 of "abc" */
#define SHA_HEX "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_B64 "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
#define MD5_HEX "900150983cd24fb0d6963f7d28e17f72"
/* SHA-256 of "abd", base64 */
#define OTHER_B64 "pS0VnyYrLG3bckphhAvvw26zDIiHekAwtly+himESck="

static struct pgstore_doc rec(void)
{
    struct pgstore_doc d = {0};
    d.size = 3;
    d.sha256 = SHA_HEX;
    d.md5 = MD5_HEX;
    d.s3_etag = MD5_HEX;
    return d;
}

static struct s3_result head(int64_t len, const char *etag, const char *sha_b64)
{
    struct s3_result h = {0};
    h.content_length = len;
    snprintf(h.etag, sizeof(h.etag), "%s", etag);
    snprintf(h.checksum_sha256, sizeof(h.checksum_sha256), "%s", sha_b64);
    return h;
}

static bool agrees(const struct pgstore_doc *d, const struct s3_result *h, bool kms, char *why,
                   char *found)
{
    return verify_head_agrees(d, h, kms, why, 512, found);
}

static void test_size_first(void **state)
{
    struct pgstore_doc d = rec();
    struct s3_result h = head(4, MD5_HEX, SHA_B64);
    char why[512], found[65];
    (void)state;
    assert_false(agrees(&d, &h, false, why, found));
    assert_non_null(strstr(why, "4 bytes, 3 recorded"));
}

static void test_sha256_checksum(void **state)
{
    struct pgstore_doc d = rec();
    char why[512], found[65];
    (void)state;
    /* S3's SHA-256 settles it, whatever the ETag says */
    struct s3_result h = head(3, "0123456789abcdef0123456789abcdef", SHA_B64);
    assert_true(agrees(&d, &h, false, why, found));
    assert_string_equal(found, SHA_HEX);
    /* another SHA-256: a mismatch naming both, hex */
    h = head(3, MD5_HEX, OTHER_B64);
    assert_false(agrees(&d, &h, false, why, found));
    assert_string_equal(found, "a52d159f262b2c6ddb724a61840befc36eb30c88877a4030b65cbe86298449c9");
    assert_non_null(strstr(why, SHA_HEX));
    assert_non_null(strstr(why, found));
}

static void test_composite_checksum_falls_back_to_etag(void **state)
{
    struct pgstore_doc d = rec();
    char why[512], found[65];
    (void)state;
    /* a multipart upload's checksum of checksums is not the object's SHA-256 */
    struct s3_result h = head(3, MD5_HEX, "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=-2");
    assert_true(agrees(&d, &h, false, why, found));
    h = head(3, "ffffffffffffffffffffffffffffffff", "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfI-2");
    assert_false(agrees(&d, &h, false, why, found));
    assert_non_null(strstr(why, "ETag (MD5)"));
}

static void test_etag_md5(void **state)
{
    struct pgstore_doc d = rec();
    char why[512], found[65];
    (void)state;
    struct s3_result h = head(3, "900150983CD24FB0D6963F7D28E17F72", "");
    assert_true(agrees(&d, &h, false, why, found));
    h = head(3, "900150983cd24fb0d6963f7d28e17f73", "");
    assert_false(agrees(&d, &h, false, why, found));
    assert_non_null(strstr(why, MD5_HEX));
    assert_string_equal(found, "");
}

static void test_etag_not_md5(void **state)
{
    struct pgstore_doc d = rec();
    char why[512], found[65];
    (void)state;
    /* SSE-KMS: the ETag is no MD5, only the one recorded at the copy counts */
    d.s3_etag = "kms-etag-of-the-copy-00000000000";
    struct s3_result h = head(3, "kms-etag-of-the-copy-00000000000", "");
    assert_true(agrees(&d, &h, true, why, found));
    h = head(3, MD5_HEX, "");
    assert_false(agrees(&d, &h, true, why, found));
    /* a multipart ETag ("...-N") likewise */
    d.s3_etag = "abcdef-3";
    h = head(3, "abcdef-3", "");
    assert_true(agrees(&d, &h, false, why, found));
    h = head(3, "abcdee-3", "");
    assert_false(agrees(&d, &h, false, why, found));
    /* nothing recorded to compare with but the size */
    d.s3_etag = NULL;
    d.md5 = NULL;
    d.sha256 = NULL;
    assert_true(agrees(&d, &h, false, why, found));
}

static void test_consistency(void **state)
{
    int64_t c[DOC_NSTATES] = {0};
    (void)state;
    assert_true(verify_consistency(c) == 1.0);
    c[DOC_VERIFIED] = 97;
    c[DOC_ACTIVE] = 2;
    c[DOC_MISMATCH] = 1;
    c[DOC_DELETED] = 50; /* not counted */
    assert_true(verify_consistency(c) > 0.98999 && verify_consistency(c) < 0.99001);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_first),
        cmocka_unit_test(test_sha256_checksum),
        cmocka_unit_test(test_composite_checksum_falls_back_to_etag),
        cmocka_unit_test(test_etag_md5),
        cmocka_unit_test(test_etag_not_md5),
        cmocka_unit_test(test_consistency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
