/*
 * The order of dual-write's records in the state store (issue 8), each test in a fresh
 * database, deterministic: the records are handed to pgstore in the order that a slow recorder
 * would make them arrive. Two uploads of one key recorded in the wrong order (the later answer
 * first): the row keeps the later one's bytes, one generation, the older record reported
 * superseded; the same record replayed still changes nothing; a sequence unknown on either
 * side is applied in order of arrival. Deletes: answered before an upload recorded first (not
 * applied), answered after an upload recorded later (the upload does not bring the document
 * back, even a document never recorded before the delete). And the batch lease renewal: kept
 * leases extended, a lost one reported.
 */
#include "tests/storage/pg_helpers.h"

static int64_t upsert(pgstore *st, const char *key, const char *tag, int64_t seq)
{
    cut_err err = CUT_ERR_INIT;
    char spool[64], md5[33];
    int64_t gen = 99;

    snprintf(spool, sizeof(spool), "/spool/%s", tag);
    snprintf(md5, sizeof(md5), "%032x", (unsigned)tag[0]);
    struct pgstore_doc_in d = {.storage_key = key,
                               .s3_key = key,
                               .spool_path = spool,
                               .size = 10,
                               .md5 = md5,
                               .answered_seq = seq};
    if (pgstore_upsert(st, &d, &gen, &err) != 0)
        fail_msg("upsert %s: %s", key, err.msg);
    return gen;
}

static char *col(const char *url, const char *key, const char *column)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT %s FROM cutover.documents WHERE storage_key = '%s'", column,
             key);
    return pgt_query1(url, sql);
}

static void assert_col(const char *url, const char *key, const char *column, const char *want)
{
    char *v = col(url, key, column);
    if (want == NULL)
        assert_null(v);
    else
        assert_string_equal(v ? v : "(null)", want);
    free(v);
}

static long long history(const char *url, const char *key)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM cutover.transitions WHERE storage_key = '%s'",
             key);
    return pgt_count(url, sql);
}

static enum pgstore_delete_result del(pgstore *st, const char *key, int64_t seq)
{
    struct pgstore_delete_out out;
    cut_err err = CUT_ERR_INIT;
    if (pgstore_delete_answered(st, key, seq, NULL, &out, &err) != 0)
        fail_msg("delete %s: %s", key, err.msg);
    return out.result;
}

/* seq 2 recorded, then seq 1: the row keeps seq 2's record. */
static void test_older_upload_superseded(void **state)
{
    char *url = pgt_migrated_db("order_up");
    pgstore *st = pgstore_open(url);
    (void)state;

    assert_int_equal(upsert(st, "k", "b", 2), 1);
    assert_int_equal(upsert(st, "k", "a", 1), -1); /* answered first, recorded last */
    assert_col(url, "k", "spool_path", "/spool/b");
    assert_col(url, "k", "answered_seq", "2");
    assert_col(url, "k", "generation", "1");
    assert_col(url, "k", "state", "pending");
    assert_int_equal(history(url, "k"), 1);

    /* the same record replayed (its first upsert's answer lost): nothing, and not superseded */
    assert_int_equal(upsert(st, "k", "b", 2), 0);
    assert_col(url, "k", "generation", "1");

    /* in order: a new generation */
    assert_int_equal(upsert(st, "k", "c", 3), 2);
    assert_col(url, "k", "spool_path", "/spool/c");
    assert_int_equal(history(url, "k"), 2);

    /* an equal sequence from another record is not newer */
    assert_int_equal(upsert(st, "k", "d", 3), -1);

    /* unknown on either side: order of arrival, as before sequences */
    assert_int_equal(upsert(st, "k", "e", 0), 3);
    assert_col(url, "k", "answered_seq", NULL);
    assert_int_equal(upsert(st, "k", "f", 1), 4);
    assert_col(url, "k", "spool_path", "/spool/f");
    pgstore_free(st);
    free(url);
}

/* A copy claimed for the newer generation is not disturbed by the older record. */
static void test_superseded_keeps_lease(void **state)
{
    char *url = pgt_migrated_db("order_lease");
    pgstore *st = pgstore_open(url);
    struct pgstore_claim c = {0};
    cut_err err = CUT_ERR_INIT;
    (void)state;

    assert_int_equal(upsert(st, "k", "b", 20), 1);
    assert_int_equal(pgstore_claim(st, "t", 10, 60000, NULL, &c, &err), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(upsert(st, "k", "a", 10), -1);
    struct pgstore_outcome o = {.size = 10, .detail = "copied", .verified = "ok"};
    assert_int_equal(pgstore_complete(st, "k", c.token, DOC_COPIED, &o, &err), 0);
    assert_col(url, "k", "state", "verified");
    pgstore_claim_clear(&c);
    pgstore_free(st);
    free(url);
}

static void test_delete_orders(void **state)
{
    char *url = pgt_migrated_db("order_del");
    pgstore *st = pgstore_open(url);
    struct pgstore_claim c = {0};
    cut_err err = CUT_ERR_INIT;
    (void)state;

    /* a delete answered before the upload that is recorded first: the upload stays */
    assert_int_equal(upsert(st, "a", "u", 10), 1);
    assert_int_equal(del(st, "a", 5), PGSTORE_DEL_SUPERSEDED);
    assert_col(url, "a", "state", "pending");
    assert_col(url, "a", "answered_seq", "10");

    /* an upload answered before the delete, recorded after it: no resurrection */
    assert_int_equal(upsert(st, "b", "u", 10), 1);
    assert_int_equal(del(st, "b", 20), PGSTORE_DEL_DELETED);
    assert_int_equal(upsert(st, "b", "v", 15), -1);
    assert_col(url, "b", "state", "deleted");
    assert_col(url, "b", "generation", "1");
    /* an upload answered after the delete: a new generation */
    assert_int_equal(upsert(st, "b", "w", 25), 2);
    assert_col(url, "b", "state", "pending");

    /* a key deleted before its first upload was recorded: the delete is kept, the upload
     * answered before it does not create the document, nor is there anything to remove */
    assert_int_equal(del(st, "c", 30), PGSTORE_DEL_UNKNOWN);
    assert_col(url, "c", "state", "deleted");
    assert_int_equal(upsert(st, "c", "u", 25), -1);
    assert_col(url, "c", "state", "deleted");
    assert_int_equal(pgstore_claim(st, "t", 10, 60000, NULL, &c, &err), 0);
    for (size_t i = 0; i < c.n; i++)
        assert_string_not_equal(c.docs[i].storage_key, "c");
    pgstore_claim_clear(&c);
    assert_int_equal(upsert(st, "c", "v", 35), 2);
    assert_col(url, "c", "state", "pending");

    /* without a sequence, an unknown key leaves nothing (as before) */
    assert_int_equal(del(st, "d", 0), PGSTORE_DEL_UNKNOWN);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.documents WHERE "
                                    "storage_key = 'd'"),
                     0);

    /* deleted twice: the later delete's sequence is kept */
    assert_int_equal(upsert(st, "e", "u", 10), 1);
    assert_int_equal(del(st, "e", 20), PGSTORE_DEL_DELETED);
    assert_int_equal(del(st, "e", 30), PGSTORE_DEL_ALREADY);
    assert_int_equal(upsert(st, "e", "v", 25), -1);
    assert_col(url, "e", "state", "deleted");
    /* a delete of unknown order changes nothing on a deleted row */
    assert_int_equal(del(st, "e", 0), PGSTORE_DEL_ALREADY);
    assert_col(url, "e", "answered_seq", "30");
    pgstore_free(st);
    free(url);
}

static void test_renew_many(void **state)
{
    char *url = pgt_migrated_db("order_renew");
    pgstore *st = pgstore_open(url);
    struct pgstore_claim c = {0};
    cut_err err = CUT_ERR_INIT;
    const char *keys[3] = {"r1", "r2", "r3"};
    const char *tokens[3];
    bool kept[3];
    (void)state;

    for (int i = 0; i < 3; i++)
        assert_int_equal(upsert(st, keys[i], keys[i], 0), 1);
    assert_int_equal(pgstore_claim(st, "t", 10, 2000, NULL, &c, &err), 0);
    assert_int_equal(c.n, 3);
    for (int i = 0; i < 3; i++)
        tokens[i] = c.token;
    /* r2's lease is voided behind the claimer's back (a requeue does that) */
    pgt_exec(url, "UPDATE cutover.documents SET lease_token = 'other' WHERE storage_key = 'r2'");
    assert_int_equal(pgstore_renew_many(st, keys, tokens, 3, 600000, kept, &err), 0);
    assert_true(kept[0]);
    assert_false(kept[1]);
    assert_true(kept[2]);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.documents WHERE lease_expires "
                                    "> now() + interval '500 seconds'"),
                     2);
    /* none at all, and too many */
    assert_int_equal(pgstore_renew_many(st, keys, tokens, 0, 1000, kept, &err), 0);
    assert_int_equal(pgstore_renew_many(st, keys, tokens, PGSTORE_RENEW_MAX + 1, 1000, kept, &err),
                     -1);
    assert_int_equal(err.code, CUT_ELIMIT);
    pgstore_claim_clear(&c);
    pgstore_free(st);
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_older_upload_superseded),
        cmocka_unit_test(test_superseded_keeps_lease),
        cmocka_unit_test(test_delete_orders),
        cmocka_unit_test(test_renew_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
