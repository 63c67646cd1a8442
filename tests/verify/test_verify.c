/*
 * `cutover verify` against the fixture's PostgreSQL, s3rver and example app (its legacy
 * store), a fresh state database per test. Documents are seeded in the app's store and
 * backfilled first (tests/bfenv.h, shared with the backfill tests), so that every test starts
 * from documents `verified` in S3.
 *
 * - quick: 1% of the objects (3 of 300) overwritten in S3 behind cutover's back, same size,
 *   other bytes: `verify` finds exactly those, records them `mismatch` with the recorded and
 *   the found checksums, exits 1; a document left `copied` (an interrupted copy) that S3
 *   agrees with becomes `verified`; a second `verify` still exits 1 (the mismatches are held,
 *   not silently repaired); `verify --repair --manifest` copies them again from the raw
 *   original: all verified, S3 holds the raw bytes again (read back), exit 0; the manifest's
 *   SHA-256 of a document equals that of the object GET from s3rver (s3rver has no checksum
 *   mode), its ETag that of a HEAD, its summary hash recomputes with `head -n -1 | sha256sum`
 *   and no temporary file is left.
 * - deep: 1% of the raw originals (3 of 300) changed in the legacy store after the copy:
 *   quick `verify` blames nothing (S3 still holds what was recorded), `verify --deep` finds
 *   exactly those, with side "legacy" and the raw original's new SHA-256; `--deep --repair`
 *   makes them verified with the new bytes in S3 and their SHA-256 recorded.
 * - failed: documents the legacy store did not have end `failed` in the backfill; `verify
 *   --repair` retries them (still missing: still failed, exit 1); once the store has them,
 *   `verify --repair` makes them verified with the right bytes, exit 0.
 * - fencing: a verify result about a document recorded again (new generation) or changed
 *   (moved to mismatch by someone else) after it was read is refused and writes nothing.
 */
#include "core/core.h"
#include "storage/pgstore.h"
#include "storage/s3.h"
#include "tests/bfenv.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int seq;

#define N 300
#define NBAD 3 /* 1% */
static const int bad_idx[NBAD] = {17, 123, 250};

/* ---- helpers ------------------------------------------------------------------------------ */

/* The value of one cell (new string, "" for NULL), failing when there is no single row. */
static char *q_str(const char *fmt, const char *arg)
{
    char *sql = xasprintf(fmt, arg);
    PGresult *r = bfenv_q(E.pg, sql);
    if (PQntuples(r) != 1)
        fail_msg("%s: %d rows", sql, PQntuples(r));
    char *v = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    free(sql);
    return v;
}

static char *new_org(void)
{
    return xasprintf("vf%ld-%d", (long)getpid(), ++seq);
}

static char *seed_key(const char *org, int i)
{
    return xasprintf("%s/seed-%06d.bin", org, i);
}

static char *s3_key_of(const char *org, const char *key)
{
    return xasprintf("backfilled/%s/%s", org, key);
}

/* Runs `cutover verify --config E.config ARGS`, expecting exit status want. */
static json_t *verify(const char *args, int want)
{
    char *a = xasprintf("verify --config '%s' %s", E.config, args ? args : "");
    char *out = NULL;
    json_t *sum;
    int rc = bfenv_run(a, "verify_summary", &out, &sum);
    if (rc != want) {
        char *what = xasprintf("cutover %s (expected exit %d)", a, want);
        bfenv_fail_with(what, rc, out);
    }
    free(a);
    free(out);
    return sum;
}

/* Seeds n documents of size bytes under org and backfills them: all verified. */
static void prepare(const char *org, int n, int size, const char *extra_after)
{
    bfenv_seed(org, n, size);
    char *path = bfenv_jsonl(E.dir, org, NULL, extra_after);
    char *src = xasprintf("{\"jsonl\": \"%s\"}", path);
    char *args = NULL, *out = NULL;
    json_t *sum;

    free(E.config);
    E.config = bfenv_config(E.dir, E.db_url, "{\"max_attempts\": 3}", src);
    args = xasprintf("backfill --config '%s' --concurrency 16", E.config);
    int rc = bfenv_run(args, "backfill_summary", &out, &sum);
    if (rc != (extra_after ? 1 : 0))
        bfenv_fail_with("backfill", rc, out);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), n);
    json_decref(sum);
    free(out);
    free(args);
    free(src);
    free(path);
}

/* Stores bytes under key in the legacy store, behind cutover's back (the app's own upload,
 * which replaces a document of the same key). */
static void legacy_store_put(const char *org, const char *key, const void *data, size_t len)
{
    CURL *c = curl_easy_init();
    char *ek = curl_easy_escape(c, key, 0);
    char *hk = xasprintf("X-Storage-Key: %s", ek), *ho = xasprintf("X-Org-Id: %s", org);
    const char *h[] = {hk, ho, "Content-Type: application/octet-stream", NULL};
    char *url = xasprintf("%s/documents", testenv("APP_URL"));
    struct test_http r;
    assert_int_equal(test_http("POST", url, h, data, len, &r), 0);
    if (r.status != 201)
        fail_msg("upload to the legacy store: %ld %s", r.status, r.body ? r.body : r.errbuf);
    test_http_free(&r);
    curl_free(ek);
    curl_easy_cleanup(c);
    free(url);
    free(hk);
    free(ho);
}

/* S3 holds the legacy store's raw bytes of key, and the recorded SHA-256 is theirs. */
static void assert_s3_is_raw(const char *org, const char *key)
{
    char *s3key = s3_key_of(org, key);
    char *rec = q_str("SELECT sha256 FROM cutover.documents WHERE storage_key = '%s'", key);
    bfenv_assert_same(E.s3, key, s3key, rec);
    free(rec);
    free(s3key);
}

/* The storage keys of state, by key, as one comma-separated string (new). */
static char *keys_in(const char *state)
{
    char *sql = xasprintf("SELECT coalesce(string_agg(storage_key, ',' ORDER BY storage_key), '') "
                          "FROM cutover.documents WHERE state = '%s'",
                          state);
    PGresult *r = bfenv_q(E.pg, sql);
    char *v = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    free(sql);
    return v;
}

static char *bad_keys(const char *org)
{
    struct buf b;
    buf_init(&b, 0);
    for (int i = 0; i < NBAD; i++) {
        char *k = seed_key(org, bad_idx[i]);
        assert_true(buf_printf(&b, "%s%s", i ? "," : "", k));
        free(k);
    }
    return buf_steal(&b);
}

/* ---- fixtures ------------------------------------------------------------------------------ */

/* ---- tests --------------------------------------------------------------------------------- */

static void test_quick_finds_overwrites(void **state)
{
    char *org = new_org();
    (void)state;

    prepare(org, N, 700, NULL);
    /* 1%: same size, one byte changed, written straight to S3 */
    for (int i = 0; i < NBAD; i++) {
        char *key = seed_key(org, bad_idx[i]), *s3key = s3_key_of(org, key);
        struct buf b;
        struct s3_result res;
        cut_err err = CUT_ERR_INIT;
        buf_init(&b, 1 << 20);
        bfenv_s3_read(E.s3, s3key, &b);
        b.data[b.len / 2] ^= 0x01;
        if (s3_put_buffer(E.s3, s3key, b.data, b.len, NULL, &res, &err) != 0)
            fail_msg("overwrite %s: %s", s3key, err.msg);
        buf_free(&b);
        free(key);
        free(s3key);
    }
    /* an interrupted copy: left `copied`, S3 holds its bytes */
    char *copied = seed_key(org, 5);
    char *sql = xasprintf("UPDATE cutover.documents SET state = 'copied', verified_at = NULL "
                          "WHERE storage_key = '%s'",
                          copied);
    PQclear(bfenv_q(E.pg, sql));
    free(sql);

    json_t *sum = verify(NULL, 1);
    assert_int_equal(bfenv_jint(sum, "pass", "checked"), N);
    assert_int_equal(bfenv_jint(sum, "pass", "mismatched"), NBAD);
    assert_int_equal(bfenv_jint(sum, "pass", "s3_side"), NBAD);
    assert_int_equal(bfenv_jint(sum, "pass", "legacy_side"), 0);
    assert_int_equal(bfenv_jint(sum, "pass", "promoted"), 1);
    assert_int_equal(bfenv_jint(sum, "states", "mismatch"), NBAD);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), N - NBAD);
    /* the report lists exactly those, with the recorded MD5 and S3's other ETag */
    json_t *mm = json_object_get(sum, "mismatches");
    assert_int_equal(json_array_size(mm), NBAD);
    for (size_t i = 0; i < NBAD; i++) {
        json_t *m = json_array_get(mm, i);
        char *want = seed_key(org, bad_idx[i]);
        assert_string_equal(json_string_value(json_object_get(m, "key")), want);
        assert_string_equal(json_string_value(json_object_get(m, "side")), "s3");
        const char *rec = json_string_value(json_object_get(json_object_get(m, "recorded"), "md5"));
        const char *found = json_string_value(json_object_get(json_object_get(m, "s3"), "etag"));
        assert_non_null(rec);
        assert_non_null(found);
        assert_string_not_equal(rec, found);
        free(want);
    }
    double ratio = json_real_value(json_object_get(sum, "consistency"));
    assert_true(ratio > 0.989 && ratio < 0.991);
    json_decref(sum);
    char *bad = bad_keys(org), *got = keys_in("mismatch");
    assert_string_equal(got, bad);
    free(got);
    /* held for a repair: nothing claims them meanwhile */
    assert_int_equal(bfenv_int(E.pg,
                               "SELECT count(*) FROM cutover.documents WHERE state = 'mismatch' "
                               "AND next_attempt_at = 'infinity' AND mismatch->>'side' = 's3'"),
                     NBAD);

    /* a backfill run meanwhile ends (it does not wait for held mismatches) and names them */
    {
        char *cmd = xasprintf("timeout 60 '%s' backfill --config '%s'", testenv_var("CUTOVER_BIN"),
                              E.config),
             *out = NULL;
        int brc = test_run(cmd, &out);
        if (brc != 1 || !strstr(out, "\"state\":\"mismatch\""))
            bfenv_fail_with("backfill while mismatches are held (expected exit 1)", brc, out);
        free(out);
        free(cmd);
    }

    /* again: the mismatches remain */
    sum = verify("--concurrency 4", 1);
    assert_int_equal(bfenv_jint(sum, "pass", "checked"), N - NBAD);
    assert_int_equal(bfenv_jint(sum, "pass", "mismatched"), 0);
    assert_int_equal(bfenv_jint(sum, "states", "mismatch"), NBAD);
    json_decref(sum);

    /* repaired from the raw originals, and a manifest */
    char *manifest = xasprintf("%s/manifest-%s.jsonl", E.dir, org);
    char *args = xasprintf("--repair --manifest '%s'", manifest);
    sum = verify(args, 0);
    assert_int_equal(bfenv_jint(sum, "repair", "released"), NBAD);
    assert_int_equal(bfenv_jint(sum, "recheck", "checked"), NBAD);
    assert_int_equal(bfenv_jint(sum, "recheck", "consistent"), NBAD);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), N);
    assert_int_equal(bfenv_jint(sum, "manifest", "documents"), N);
    json_decref(sum);
    for (int i = 0; i < NBAD; i++) {
        char *key = seed_key(org, bad_idx[i]);
        assert_s3_is_raw(org, key);
        free(key);
    }

    /* the manifest: each line's SHA-256 is that of the object s3rver serves */
    size_t mlen;
    char *text = test_read_file(manifest, &mlen);
    assert_non_null(text);
    char *last = NULL;
    int lines = 0, compared = 0;
    for (char *p = text; p < text + mlen; lines++) {
        char *nl = memchr(p, '\n', (size_t)(text + mlen - p));
        assert_non_null(nl);
        json_error_t jerr;
        json_t *o = json_loadb(p, (size_t)(nl - p), 0, &jerr);
        assert_non_null(o);
        if (json_object_get(o, "summary")) {
            last = p;
            char sha[65];
            bfenv_sha256_hex(text, (size_t)(p - text), sha);
            assert_string_equal(json_string_value(json_object_get(o, "sha256")), sha);
            assert_int_equal(bfenv_jint(json_object_get(o, "summary"), "documents", NULL), N);
            assert_int_equal(bfenv_jint(json_object_get(o, "summary"), "states", "verified"), N);
        } else if (lines % 37 == 0 || strstr(p, "seed-000017") || strstr(p, "seed-000123")) {
            const char *s3key = json_string_value(json_object_get(o, "s3_key"));
            struct buf b;
            struct s3_result h;
            cut_err err = CUT_ERR_INIT;
            char sha[65];
            buf_init(&b, 1 << 20);
            bfenv_s3_read(E.s3, s3key, &b);
            bfenv_sha256_hex(b.data, b.len, sha);
            assert_string_equal(json_string_value(json_object_get(o, "sha256")), sha);
            assert_int_equal(json_integer_value(json_object_get(o, "size")), b.len);
            assert_string_equal(json_string_value(json_object_get(o, "state")), "verified");
            assert_non_null(json_string_value(json_object_get(o, "verified_at")));
            if (s3_head(E.s3, s3key, &h, &err) != 0)
                fail_msg("HEAD %s: %s", s3key, err.msg);
            assert_string_equal(json_string_value(json_object_get(o, "s3_etag")), h.etag);
            buf_free(&b);
            compared++;
        }
        json_decref(o);
        p = nl + 1;
    }
    assert_int_equal(lines, N + 1);
    assert_true(last != NULL && compared >= 8);
    /* as a reviewer recomputes it */
    char *cmd = xasprintf("head -n -1 '%s' | sha256sum", manifest), *out = NULL;
    assert_int_equal(test_run(cmd, &out), 0);
    assert_non_null(strstr(last, out ? strtok(out, " ") : "?"));
    free(out);
    free(cmd);
    /* written beside, then renamed: no temporary file left */
    cmd = xasprintf("ls '%s' | grep -c '^manifest-%s.jsonl.tmp' || true", E.dir, org);
    out = NULL;
    assert_int_equal(test_run(cmd, &out), 0);
    assert_int_equal(atoi(out), 0);
    free(out);
    free(cmd);
    free(text);
    free(args);
    free(manifest);
    free(bad);
    free(copied);
    free(org);
}

static void test_deep_finds_changed_originals(void **state)
{
    char *org = new_org();
    char *old_sha[NBAD], new_sha[NBAD][65];
    (void)state;

    prepare(org, N, 600, NULL);
    for (int i = 0; i < NBAD; i++) {
        char *key = seed_key(org, bad_idx[i]);
        struct test_http raw;
        old_sha[i] = q_str("SELECT sha256 FROM cutover.documents WHERE storage_key = '%s'", key);
        bfenv_raw_read(key, &raw);
        raw.body[raw.body_len / 3] ^= 0x20; /* same size, other bytes */
        bfenv_sha256_hex(raw.body, raw.body_len, new_sha[i]);
        legacy_store_put(org, key, raw.body, raw.body_len);
        test_http_free(&raw);
        free(key);
    }

    /* S3 still holds what was copied: a quick check blames nothing */
    json_t *sum = verify(NULL, 0);
    assert_int_equal(bfenv_jint(sum, "pass", "mismatched"), 0);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), N);
    json_decref(sum);

    sum = verify("--deep", 1);
    assert_int_equal(bfenv_jint(sum, "pass", "checked"), N);
    assert_int_equal(bfenv_jint(sum, "pass", "mismatched"), NBAD);
    assert_int_equal(bfenv_jint(sum, "pass", "legacy_side"), NBAD);
    assert_int_equal(bfenv_jint(sum, "pass", "s3_side"), 0);
    assert_true(bfenv_jint(sum, "pass", "bytes") >= 2LL * N * 600);
    json_decref(sum);
    char *bad = bad_keys(org), *got = keys_in("mismatch");
    assert_string_equal(got, bad);
    free(got);
    for (int i = 0; i < NBAD; i++) {
        char *key = seed_key(org, bad_idx[i]);
        char *side = q_str("SELECT mismatch->>'side' FROM cutover.documents WHERE storage_key = "
                           "'%s'",
                           key);
        char *rec = q_str("SELECT mismatch->'recorded'->>'sha256' FROM cutover.documents WHERE "
                          "storage_key = '%s'",
                          key);
        char *leg = q_str("SELECT mismatch->'legacy'->>'sha256' FROM cutover.documents WHERE "
                          "storage_key = '%s'",
                          key);
        char *s3s = q_str("SELECT mismatch->'s3'->>'sha256' FROM cutover.documents WHERE "
                          "storage_key = '%s'",
                          key);
        assert_string_equal(side, "legacy");
        assert_string_equal(rec, old_sha[i]);
        assert_string_equal(s3s, old_sha[i]);
        assert_string_equal(leg, new_sha[i]);
        free(side);
        free(rec);
        free(leg);
        free(s3s);
        free(key);
    }

    sum = verify("--deep --repair", 0);
    assert_int_equal(bfenv_jint(sum, "repair", "released"), NBAD);
    assert_int_equal(bfenv_jint(sum, "recheck", "consistent"), NBAD);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), N);
    json_decref(sum);
    for (int i = 0; i < NBAD; i++) {
        char *key = seed_key(org, bad_idx[i]);
        assert_s3_is_raw(org, key);
        char *rec = q_str("SELECT sha256 FROM cutover.documents WHERE storage_key = '%s'", key);
        assert_string_equal(rec, new_sha[i]);
        free(rec);
        free(key);
        free(old_sha[i]);
    }
    free(bad);
    free(org);
}

static void test_failed_retried_by_repair(void **state)
{
    char *org = new_org();
    (void)state;

    char *k1 = xasprintf("%s/late-1.bin", org), *k2 = xasprintf("%s/late-2.bin", org);
    char *extra = xasprintf("{\"key\": \"%s\", \"org\": \"%s\"}\n{\"key\": \"%s\", \"org\": "
                            "\"%s\"}\n",
                            k1, org, k2, org);
    prepare(org, 20, 300, extra);
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE state = 'failed'"), 2);

    /* what is checked is consistent; failed documents are not checked */
    json_t *sum = verify(NULL, 0);
    assert_int_equal(bfenv_jint(sum, "pass", "checked"), 20);
    assert_int_equal(bfenv_jint(sum, "states", "failed"), 2);
    json_decref(sum);

    /* still missing from the legacy store: retried, failed again, exit 1 */
    sum = verify("--repair", 1);
    assert_int_equal(bfenv_jint(sum, "repair", "retried"), 2);
    assert_int_equal(bfenv_jint(sum, "states", "failed"), 2);
    json_decref(sum);

    /* the store has them now */
    legacy_store_put(org, k1, "first late document", 19);
    legacy_store_put(org, k2, "second late document", 20);
    sum = verify("--repair", 0);
    assert_int_equal(bfenv_jint(sum, "repair", "retried"), 2);
    assert_int_equal(bfenv_jint(sum, "states", "failed"), 0);
    assert_int_equal(bfenv_jint(sum, "states", "verified"), 22);
    json_decref(sum);
    assert_s3_is_raw(org, k1);
    assert_s3_is_raw(org, k2);
    free(extra);
    free(k1);
    free(k2);
    free(org);
}

static void test_stale_result_is_fenced(void **state)
{
    pgstore *st;
    cut_err err = CUT_ERR_INIT;
    struct pgstore_doc *page = NULL;
    size_t n = 0;
    (void)state;

    st = pgstore_connect(E.db_url, &err);
    assert_non_null(st);
    PQclear(bfenv_q(E.pg,
                    "INSERT INTO cutover.documents (storage_key, s3_key, state, size, md5, sha256, "
                    "verified_at) SELECT 'k' || i, 'o' || i, 'verified', 1, repeat('0', 32), "
                    "repeat('0', 64), now() FROM generate_series(1, 3) i"));
    PQclear(bfenv_q(
        E.pg, "INSERT INTO cutover.documents (storage_key, s3_key, state) VALUES ('k0', 'o0', "
              "'pending')"));
    assert_int_equal(pgstore_verify_page(st, NULL, NULL, 10, &page, &n, &err), 0);
    assert_int_equal(n, 3); /* the pending one is not checked */
    assert_string_equal(page[0].storage_key, "k1");

    /* k1 recorded again by the app while it was checked */
    struct pgstore_doc_in in = {.storage_key = "k1", .s3_key = "o1", .size = -1};
    int64_t gen = 0;
    assert_int_equal(pgstore_upsert(st, &in, &gen, &err), 0);
    assert_int_equal(gen, 2);
    assert_int_equal(pgstore_verify_mismatch(st, "k1", page[0].generation, page[0].updated_at,
                                             "{\"side\": \"s3\"}", "stale", &err),
                     -1);
    assert_int_equal(err.code, CUT_ECONFLICT);
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE storage_key = 'k1' AND "
                        "state = 'pending' AND mismatch IS NULL"),
        1);

    /* k2 moved to mismatch by another run while it was checked: a consistent result is not
     * recorded over it */
    assert_int_equal(pgstore_requeue(st, "k2", 0, "S3 may hold other bytes", NULL, &err), 0);
    struct pgstore_checked c[2] = {
        {.storage_key = "k2",
         .generation = page[1].generation,
         .updated_at = page[1].updated_at,
         .state = page[1].state},
        {.storage_key = "k3",
         .generation = page[2].generation,
         .updated_at = page[2].updated_at,
         .state = page[2].state},
    };
    size_t recorded = 9, promoted = 9;
    err_clear(&err);
    assert_int_equal(pgstore_verify_checked(st, c, 2, "ok", &recorded, &promoted, &err), 0);
    assert_int_equal(recorded, 1);
    assert_int_equal(promoted, 0);
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE storage_key = 'k2' AND "
                        "state = 'mismatch' AND checked_at IS NULL"),
        1);
    assert_int_equal(
        bfenv_int(E.pg, "SELECT count(*) FROM cutover.documents WHERE storage_key = 'k3' AND "
                        "checked_at IS NOT NULL"),
        1);
    pgstore_verify_page_free(page, n);
    pgstore_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_quick_finds_overwrites, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_deep_finds_changed_originals, bfenv_setup,
                                        bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_failed_retried_by_repair, bfenv_setup, bfenv_teardown),
        cmocka_unit_test_setup_teardown(test_stale_result_is_fenced, bfenv_setup, bfenv_teardown),
    };
    E.tag = "verify";
    return cmocka_run_group_tests(tests, bfenv_group_setup, bfenv_group_teardown);
}
