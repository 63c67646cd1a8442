/*
 * test_replay: the journal's replay into PostgreSQL (upload_replay_journal) at the moments a
 * database outage makes ambiguous, against the shared PostgreSQL fixture, without timing:
 * each moment is made by hand (a record appended to the journal, the replay's connection
 * cut with pg_terminate_backend while the server stays up).
 *
 *   A connection cut by a restart, found dead by the replay's first write although the
 *   server is back: the record is not a refused one. It stays in the journal and the next
 *   replay writes it. (The replay used to probe the database on a new connection after a
 *   failed write and skip the record as refused when the probe worked: after a PostgreSQL
 *   restart with nothing in the journal, the first record journaled afterwards, an upload
 *   that replaced a key, was dropped, and the key stayed at the older upload's bytes.)
 *
 *   A record the database refuses for its data (vars that are not JSON) is still skipped,
 *   logged, and does not hold back the records behind it.
 *
 *   An upsert whose COMMIT went through but whose answer was lost is journaled by the
 *   recorder; its replay must not make a second generation of the same upload (whose spool
 *   file the mirror may have removed by then, sending the copy to the legacy store, which may
 *   hold another upload's bytes). A later upload of the key (another spool file) still
 *   makes a new generation, and a document without a spool file is always re-recorded.
 */
#include "tests/storage/pg_helpers.h"
#include "tests/upload/upload_rig.h"

#include <sys/stat.h>
#include <unistd.h>

/* A record as the recorder writes it to the journal. */
static char *record(const char *key, const char *spool_path, const char *sha, const char *vars)
{
    return xasprintf("{\"storage_key\": \"%s\", \"s3_key\": \"r/%s\", \"vars\": \"%s\", "
                     "\"spool_path\": \"%s\", \"md5\": \"%032d\", \"sha256\": \"%s\", "
                     "\"size\": 3}",
                     key, key, vars, spool_path, 0, sha);
}

static void keep(struct rig *g, const char *text)
{
    cut_err err = CUT_ERR_INIT;
    if (!journal_append(g->j, text, strlen(text), &err))
        fail_msg("journal: %s", err.msg);
}

/* The replay's connection cut behind its back, the server staying up: what a restart of
 * PostgreSQL leaves to a connection made before it. */
static void cut_connection(struct rig *g)
{
    cut_err err = CUT_ERR_INIT;
    char sql[96];
    assert_true(pgstore_schema_version(g->db, &err) > 0); /* connected */
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", pgstore_backend_pid(g->db));
    pgt_exec(g->url, sql);
}

static char *row(struct rig *g, const char *key, const char *col)
{
    char *sql = xasprintf("SELECT %s FROM cutover.documents WHERE storage_key = '%s'", col, key);
    char *v = pgt_query1(g->url, sql);
    free(sql);
    return v;
}

static bool aside_exists(struct rig *g)
{
    char *aside = xasprintf("%s/journal.replay", g->dir);
    bool yes = access(aside, F_OK) == 0;
    free(aside);
    return yes;
}

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void test_cut_connection_is_not_a_refusal(void **state)
{
    struct rig g;
    cut_err err = CUT_ERR_INIT;
    char *a, *b, *v;
    (void)state;

    rig_open(&g, "replaycut");
    /* the key's first upload, recorded before the restart */
    a = record("k", "/spool/a.part", SHA_A, "{}");
    keep(&g, a);
    assert_int_equal(upload_replay_journal(g.u, g.db, &err), 1);
    /* the restart: the replay's connection is dead, the server is back; the key's second
     * upload is journaled (its recorder's connection was dead too) */
    cut_connection(&g);
    b = record("k", "/spool/b.part", SHA_B, "{}");
    keep(&g, b);
    err = (cut_err)CUT_ERR_INIT;
    assert_int_equal(upload_replay_journal(g.u, g.db, &err), -1);
    assert_int_equal(err.code, CUT_EDB);
    assert_true(aside_exists(&g)); /* kept for the next replay */
    v = row(&g, "k", "sha256");
    assert_string_equal(v, SHA_A);
    free(v);
    /* the next replay (cmd_proxy: 500 ms later) takes it */
    err = (cut_err)CUT_ERR_INIT;
    assert_int_equal(upload_replay_journal(g.u, g.db, &err), 1);
    assert_false(aside_exists(&g));
    v = row(&g, "k", "sha256 || ' ' || generation");
    assert_string_equal(v, SHA_B " 2");
    free(v);
    struct upload_stats st;
    upload_stats_get(g.u, &st);
    assert_int_equal(st.lost, 0);
    free(a);
    free(b);
    rig_close(&g);
}

static void test_refused_record_skipped(void **state)
{
    struct rig g;
    cut_err err = CUT_ERR_INIT;
    char *bad, *good, *v;
    (void)state;

    rig_open(&g, "replaybad");
    bad = record("poison", "/spool/p.part", SHA_A, "not json");
    good = record("fine", "/spool/f.part", SHA_B, "{}");
    keep(&g, bad);
    keep(&g, good);
    assert_int_equal(upload_replay_journal(g.u, g.db, &err), 1);
    assert_false(aside_exists(&g));
    assert_null(row(&g, "poison", "sha256"));
    v = row(&g, "fine", "sha256");
    assert_string_equal(v, SHA_B);
    free(v);
    struct upload_stats st;
    upload_stats_get(g.u, &st);
    assert_int_equal(st.lost, 1);
    free(bad);
    free(good);
    rig_close(&g);
}

static void test_lost_commit_answer_replayed(void **state)
{
    struct rig g;
    cut_err err = CUT_ERR_INIT;
    char *a, *b, *v;
    int64_t gen = -1;
    (void)state;

    rig_open(&g, "replaydup");
    /* the recorder's upsert committed, its answer lost: the same record is journaled */
    struct pgstore_doc_in d = {.storage_key = "k",
                               .s3_key = "r/k",
                               .vars = "{}",
                               .spool_path = "/spool/a.part",
                               .size = 3,
                               .md5 = "00000000000000000000000000000000",
                               .sha256 = SHA_A};
    assert_int_equal(pgstore_upsert(g.db, &d, &gen, &err), 0);
    assert_int_equal(gen, 1);
    pgt_exec(g.url, "UPDATE cutover.documents SET state = 'verified'");
    a = record("k", "/spool/a.part", SHA_A, "{}");
    keep(&g, a);
    assert_int_equal(upload_replay_journal(g.u, g.db, &err), 1);
    v = row(&g, "k", "state || ' ' || generation");
    assert_string_equal(v, "verified 1"); /* the same upload: no new generation */
    free(v);
    assert_int_equal(pgt_count(g.url, "SELECT count(*) FROM cutover.transitions "
                                      "WHERE storage_key = 'k'"),
                     1);
    /* a later upload of the key (its own spool file) is a new generation */
    b = record("k", "/spool/b.part", SHA_B, "{}");
    keep(&g, b);
    assert_int_equal(upload_replay_journal(g.u, g.db, &err), 1);
    v = row(&g, "k", "state || ' ' || generation || ' ' || sha256");
    assert_string_equal(v, "pending 2 " SHA_B);
    free(v);
    /* without a spool file, nothing tells two uploads apart: always a new generation */
    struct pgstore_doc_in n = {.storage_key = "k", .s3_key = "r/k", .size = -1};
    assert_int_equal(pgstore_upsert(g.db, &n, &gen, &err), 0);
    assert_int_equal(pgstore_upsert(g.db, &n, &gen, &err), 0);
    assert_int_equal(gen, 4);
    free(a);
    free(b);
    rig_close(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_connection_is_not_a_refusal),
        cmocka_unit_test(test_refused_record_skipped),
        cmocka_unit_test(test_lost_commit_answer_replayed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
