/*
 * The sticky rollout without servers: MurmurHash3 x86_32 against published vectors (each also
 * checked, while this test was written, against a separate implementation); the bucket of
 * "<route>:<sticky>" for the vectors the README gives; the threshold's 0.01% steps; raising
 * the percentage only adds reads (never one in at p and out at p' > p); about p% of 10,000
 * sticky values are in; deny wins over allow, allow wins over the percentage.
 */
#include "flags/rollout.h"
#include "tests/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_murmur3_vectors(void **state)
{
    static const struct {
        const char *in;
        uint32_t seed, want;
    } v[] = {
        {"", 0, 0x00000000u},
        {"", 1, 0x514e28b7u},
        {"hello", 0, 0x248bfa47u},
        {"hello", 1, 0xbb4abcadu},
        {"The quick brown fox jumps over the lazy dog", 0, 0x2e4ff723u},
        {"a", 0, 0x3c2569b2u},
        {"ab", 0, 0x9bbfd75fu},
        {"abc", 0, 0xb3dd93fau},
        {"abcd", 0, 0x43ed676au},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint32_t h = flags_murmur3_32(v[i].in, strlen(v[i].in), v[i].seed);
        if (h != v[i].want)
            fail_msg("murmur3(\"%s\", %u) = 0x%08x, want 0x%08x", v[i].in, v[i].seed, h, v[i].want);
    }
}

/* The README's table: route, sticky value, bucket. */
static void test_bucket_vectors(void **state)
{
    (void)state;
    assert_int_equal(flags_rollout_bucket("signed-url", "user-1"), 3119);
    assert_int_equal(flags_rollout_bucket("signed-url", "user-42"), 2813);
    assert_int_equal(flags_rollout_bucket("signed-url", "alice"), 9807);
    assert_int_equal(flags_rollout_bucket("signed-url", "zo\xc3\xab"), 1402);
    assert_int_equal(flags_rollout_bucket("redirect", "org-7/doc.pdf"), 6004);
    /* the joined form is what is hashed */
    assert_int_equal(flags_rollout_bucket("hel", "lo") /* "hel:lo" */,
                     flags_murmur3_32("hel:lo", 6, 0) % 10000);
}

static void test_threshold(void **state)
{
    (void)state;
    assert_int_equal(flags_rollout_threshold(0), 0);
    assert_int_equal(flags_rollout_threshold(0.01), 1);
    assert_int_equal(flags_rollout_threshold(0.07), 7);
    assert_int_equal(flags_rollout_threshold(0.29), 29);
    assert_int_equal(flags_rollout_threshold(30), 3000);
    assert_int_equal(flags_rollout_threshold(99.99), 9999);
    assert_int_equal(flags_rollout_threshold(100), 10000);
}

static flags_snapshot *snap(const char *read_from_s3)
{
    char *text = xasprintf("{\"read_from_s3\": %s}", read_from_s3);
    json_t *v = json_loads(text, 0, NULL);
    cut_err err = CUT_ERR_INIT;
    flags_snapshot *s = flags_snapshot_new(v, true, &err);
    if (!s)
        fail_msg("%s: %s", text, err.msg);
    json_decref(v);
    free(text);
    return s;
}

static void test_monotonic_and_share(void **state)
{
    static const double steps[] = {0, 0.01, 1, 5, 25, 30, 50, 99.99, 100};
    enum { N = 10000, NS = sizeof(steps) / sizeof(steps[0]) };
    static bool in[NS][N];
    char v[32];
    (void)state;
    for (size_t i = 0; i < NS; i++) {
        char text[64];
        snprintf(text, sizeof(text), "{\"percent\": %g}", steps[i]);
        flags_snapshot *s = snap(text);
        size_t count = 0;
        for (int u = 0; u < N; u++) {
            snprintf(v, sizeof(v), "user-%d", u);
            in[i][u] = flags_rollout_selects(s, "signed-url", v, NULL);
            count += in[i][u];
            if (i > 0 && in[i - 1][u] && !in[i][u])
                fail_msg("user-%d in at %g%% but out at %g%%", u, steps[i - 1], steps[i]);
        }
        if (steps[i] == 30)
            assert_true(count >= 2700 && count <= 3300);
        if (steps[i] == 0)
            assert_int_equal(count, 0);
        if (steps[i] == 100)
            assert_int_equal(count, N);
        flags_snapshot_unref(s);
    }
}

static void test_lists(void **state)
{
    enum flags_rollout_why why;
    flags_snapshot *s;
    (void)state;

    s = snap("{\"percent\": 100, \"deny\": [\"bob\", \"carol\"], \"allow\": [\"carol\"]}");
    assert_false(flags_rollout_selects(s, "signed-url", "bob", &why));
    assert_int_equal(why, FLAGS_ROLLOUT_DENIED);
    assert_false(flags_rollout_selects(s, "signed-url", "carol", &why)); /* deny wins */
    assert_int_equal(why, FLAGS_ROLLOUT_DENIED);
    assert_true(flags_rollout_selects(s, "signed-url", "dave", &why));
    assert_int_equal(why, FLAGS_ROLLOUT_IN);
    flags_snapshot_unref(s);

    s = snap("{\"percent\": 0, \"allow\": [\"zed\", \"amy\", \"max\"]}");
    assert_true(flags_rollout_selects(s, "signed-url", "amy", &why));
    assert_int_equal(why, FLAGS_ROLLOUT_ALLOWED);
    assert_true(flags_rollout_selects(s, "signed-url", "zed", NULL));
    assert_false(flags_rollout_selects(s, "signed-url", "am", &why));
    assert_int_equal(why, FLAGS_ROLLOUT_OUT);
    flags_snapshot_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_murmur3_vectors), cmocka_unit_test(test_bucket_vectors),
        cmocka_unit_test(test_threshold),       cmocka_unit_test(test_monotonic_and_share),
        cmocka_unit_test(test_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
