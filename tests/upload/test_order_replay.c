/*
 * The journal's replay keeps the order of the app's answers (issue 8): records of one key
 * replayed in the wrong order (the later answer's first, as two recorders or a journaled and a
 * direct record can leave them) leave the row with the later answer's record, the older one
 * counted superseded and its spool file removed, while the spool file of the record the row
 * holds stays; a version-1 record (no sequence, written by an older build) still replays, in
 * order of arrival. Against the shared PostgreSQL, no timing: the records are appended by hand.
 * And the sequence itself: from several threads at once, every value distinct and each
 * thread's strictly increasing, none below the wall clock's microseconds when it was taken.
 */
#include "tests/storage/pg_helpers.h"
#include "tests/upload/upload_rig.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

/* A spool file named name in the rig's directory (new path, free()). */
static char *make_spool(struct rig *g, const char *name)
{
    char *path = xasprintf("%s/%s", g->dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("abc", f);
    fclose(f);
    return path;
}

/* Appends the record of an upload of key answered with sequence seq (0: a version-1 record,
 * as an older build wrote it). */
static void keep(struct rig *g, const char *key, const char *spool_path, char tag, int64_t seq)
{
    cut_err err = CUT_ERR_INIT;
    char md5[33], sha[65], *text;
    memset(md5, tag, 32);
    md5[32] = '\0';
    memset(sha, tag, 64);
    sha[64] = '\0';
    if (seq > 0) {
        struct pgstore_doc_in d = {.storage_key = key,
                                   .s3_key = key,
                                   .vars = "{}",
                                   .spool_path = spool_path,
                                   .size = 3,
                                   .md5 = md5,
                                   .sha256 = sha,
                                   .answered_seq = seq};
        text = journal_doc_encode(&d);
    } else {
        text = xasprintf("{\"storage_key\": \"%s\", \"s3_key\": \"%s\", \"vars\": \"{}\", "
                         "\"spool_path\": \"%s\", \"md5\": \"%s\", \"sha256\": \"%s\", "
                         "\"size\": 3}",
                         key, key, spool_path, md5, sha);
    }
    if (!journal_append(g->j, text, strlen(text), &err))
        fail_msg("journal: %s", err.msg);
    free(text);
}

static char *row(struct rig *g, const char *key, const char *col)
{
    char *sql = xasprintf("SELECT %s FROM cutover.documents WHERE storage_key = '%s'", col, key);
    char *v = pgt_query1(g->url, sql);
    free(sql);
    return v;
}

static void test_replay_keeps_answer_order(void **state)
{
    struct rig g;
    cut_err err = CUT_ERR_INIT;
    struct upload_stats st;
    char *v;
    (void)state;

    rig_open(&g, "order_replay");
    char *a = make_spool(&g, "a.part"), *b = make_spool(&g, "b.part");
    /* b answered after a, its record first */
    keep(&g, "k", b, 'b', 2000);
    keep(&g, "k", a, 'a', 1000);
    assert_int_equal(upload_replay_journal(g.u, g.db, &err), 2);
    v = row(&g, "k", "substr(sha256, 1, 1) || ' ' || generation || ' ' || answered_seq");
    assert_string_equal(v, "b 1 2000");
    free(v);
    upload_stats_get(g.u, &st);
    assert_int_equal(st.superseded, 1);
    assert_int_equal(st.lost, 0);
    assert_int_equal(access(a, F_OK), -1); /* serves no one */
    assert_int_equal(access(b, F_OK), 0);  /* the document's */

    /* the same record again (a lost answer, journaled): nothing, and its file stays */
    keep(&g, "k", b, 'b', 2000);
    assert_int_equal(upload_replay_journal(g.u, g.db, &err), 1);
    upload_stats_get(g.u, &st);
    assert_int_equal(st.superseded, 1);
    assert_int_equal(access(b, F_OK), 0);

    /* a version-1 record: unknown order, applied as it arrives */
    char *c = make_spool(&g, "c.part");
    keep(&g, "k", c, 'c', 0);
    assert_int_equal(upload_replay_journal(g.u, g.db, &err), 1);
    v = row(&g, "k",
            "substr(sha256, 1, 1) || ' ' || generation || ' ' || "
            "coalesce(answered_seq::text, 'unknown')");
    assert_string_equal(v, "c 2 unknown");
    free(v);
    assert_int_equal(access(c, F_OK), 0);
    free(a);
    free(b);
    free(c);
    rig_close(&g);
}

#define SEQ_THREADS 4
#define SEQ_EACH 20000

static uint64_t seqs[SEQ_THREADS][SEQ_EACH];

static void *take_seqs(void *arg)
{
    uint64_t *out = arg;
    for (int i = 0; i < SEQ_EACH; i++)
        out[i] = upload_seq_next();
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_seq_strictly_increasing(void **state)
{
    pthread_t t[SEQ_THREADS];
    struct timespec ts;
    (void)state;

    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t start = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    for (int i = 0; i < SEQ_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, take_seqs, seqs[i]), 0);
    for (int i = 0; i < SEQ_THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < SEQ_THREADS; i++) {
        assert_true(seqs[i][0] >= start);
        for (int j = 1; j < SEQ_EACH; j++)
            assert_true(seqs[i][j] > seqs[i][j - 1]);
    }
    qsort(seqs, SEQ_THREADS * SEQ_EACH, sizeof(uint64_t), cmp_u64);
    uint64_t *all = &seqs[0][0];
    for (int i = 1; i < SEQ_THREADS * SEQ_EACH; i++)
        assert_true(all[i] > all[i - 1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seq_strictly_increasing),
        cmocka_unit_test(test_replay_keeps_answer_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
