/*
 * The document-state cache against a real PostgreSQL (migration 4's trigger, a listener with
 * its own connection):
 *   - untrusted until the listener is connected; a miss, its fill, then hits;
 *   - a change in the database (state, S3 key, a removal) reaches the cached entry;
 *   - a fill that comes after a notification for the same key is dropped (the lookup read an
 *     older state), and a fill after a flush is dropped;
 *   - a key too long for a notification's payload still invalidates its entry;
 *   - absent documents are remembered for negative_ttl_ms only, then missed again;
 *   - the cache never holds more than max_entries (least recently used out first);
 *   - the listener's connection terminated: untrusted at once, trusted again (and emptied)
 *     once it reconnects.
 * Every wait is a condition polled with a deadline.
 */
#include "storage/doccache.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *db_url;
static PGconn *pg;

static void sql(const char *text, int n, const char *const *params)
{
    PGresult *r = PQexecParams(pg, text, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", text, PQerrorMessage(pg));
    PQclear(r);
}

static int setup(void **state)
{
    pgstore *st;
    cut_err err = CUT_ERR_INIT;
    (void)state;
    db_url = test_fresh_db("doccache");
    st = pgstore_open(db_url);
    if (pgstore_migrate(st, NULL, NULL, &err) != 0)
        fail_msg("migrate: %s", err.msg);
    pgstore_free(st);
    pg = PQconnectdb(db_url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    PQfinish(pg);
    free(db_url);
    return 0;
}

static bool trusted(void *arg)
{
    return doccache_trusted(arg);
}

struct expect {
    doccache *c;
    const char *key;
    enum doccache_answer a;
    enum doc_state st;
    const char *s3_key;
};

static bool answers(void *arg)
{
    struct expect *e = arg;
    enum doc_state st;
    char s3[1100];
    uint64_t fill;
    enum doccache_answer a = doccache_lookup(e->c, e->key, &st, s3, sizeof(s3), &fill);
    if (a != e->a)
        return false;
    return a != DOCCACHE_FOUND || (st == e->st && (!e->s3_key || strcmp(s3, e->s3_key) == 0));
}

static doccache *start(size_t max, unsigned neg_ms)
{
    cut_err err = CUT_ERR_INIT;
    struct doccache_opts o = {
        .database_url = db_url, .max_entries = max, .negative_ttl_ms = neg_ms, .retry_ms = 50};
    doccache *c = doccache_start(&o, &err);
    if (!c)
        fail_msg("%s", err.msg);
    if (!test_wait_until(trusted, c, 10000))
        fail_msg("the listener never connected");
    return c;
}

static void insert(const char *key, const char *state)
{
    const char *p[2] = {key, state};
    sql("INSERT INTO cutover.documents (storage_key, s3_key, state) VALUES ($1, 's3/' || $1, $2)",
        2, p);
}

struct seen {
    doccache *c;
    uint64_t before;
};

static bool notified(void *arg)
{
    struct seen *w = arg;
    struct doccache_stats ds;
    doccache_stats_get(w->c, &ds);
    return ds.notifications > w->before;
}

/* insert(), then waits until c has applied the insert's own notification: a lookup's fill
 * taken before it arrives would be dropped by it (as a fill older than a change must be), and
 * the long key's flush would empty the cache after the fill. */
static void insert_seen(doccache *c, const char *key, const char *state)
{
    struct doccache_stats ds;
    doccache_stats_get(c, &ds);
    struct seen w = {c, ds.notifications};
    insert(key, state);
    if (!test_wait_until(notified, &w, 5000))
        fail_msg("the insert's notification never reached the cache");
}

static void set_state(const char *key, const char *state)
{
    const char *p[2] = {key, state};
    sql("UPDATE cutover.documents SET state = $2 WHERE storage_key = $1", 2, p);
}

static void test_miss_fill_hit_and_changes(void **state)
{
    doccache *c = start(0, 0);
    enum doc_state st;
    char s3[1100];
    uint64_t fill = 0, fill2 = 0;
    (void)state;

    insert_seen(c, "a", "verified");
    assert_int_equal(doccache_lookup(c, "a", &st, s3, sizeof(s3), &fill), DOCCACHE_MISS);
    doccache_fill(c, "a", fill, true, DOC_VERIFIED, "s3/a");
    assert_int_equal(doccache_lookup(c, "a", &st, s3, sizeof(s3), &fill), DOCCACHE_FOUND);
    assert_int_equal(st, DOC_VERIFIED);
    assert_string_equal(s3, "s3/a");

    /* a change in the database reaches the entry: state, then S3 key, then a removal */
    set_state("a", "mismatch");
    struct expect e = {c, "a", DOCCACHE_FOUND, DOC_MISMATCH, "s3/a"};
    assert_true(test_wait_until(answers, &e, 5000));
    sql("UPDATE cutover.documents SET s3_key = 'other/a' WHERE storage_key = 'a'", 0, NULL);
    e.s3_key = "other/a";
    assert_true(test_wait_until(answers, &e, 5000));
    sql("DELETE FROM cutover.documents WHERE storage_key = 'a'", 0, NULL);
    e.a = DOCCACHE_MISS;
    assert_true(test_wait_until(answers, &e, 5000));

    /* a lookup that read an older state loses against the notification that came after */
    insert_seen(c, "b", "verified");
    assert_int_equal(doccache_lookup(c, "b", &st, s3, sizeof(s3), &fill), DOCCACHE_MISS);
    set_state("b", "mismatch");
    struct expect eb = {c, "b", DOCCACHE_FOUND, DOC_MISMATCH, NULL};
    assert_true(test_wait_until(answers, &eb, 5000));
    doccache_fill(c, "b", fill, true, DOC_VERIFIED, "s3/b"); /* late: dropped */
    assert_int_equal(doccache_lookup(c, "b", &st, s3, sizeof(s3), &fill2), DOCCACHE_FOUND);
    assert_int_equal(st, DOC_MISMATCH);

    /* a key too long for a payload: its entry is dropped all the same */
    char *longkey = xmalloc(8001);
    memset(longkey, 'k', 8000);
    longkey[8000] = 0;
    insert_seen(c, longkey, "verified");
    assert_int_equal(doccache_lookup(c, longkey, &st, s3, sizeof(s3), &fill), DOCCACHE_MISS);
    doccache_fill(c, longkey, fill, true, DOC_VERIFIED, "x");
    assert_int_equal(doccache_lookup(c, longkey, &st, s3, sizeof(s3), &fill), DOCCACHE_FOUND);
    set_state(longkey, "mismatch");
    struct expect el = {c, longkey, DOCCACHE_MISS, 0, NULL};
    assert_true(test_wait_until(answers, &el, 5000));
    free(longkey);
    doccache_free(c);
}

static void test_negative_ttl_and_bound(void **state)
{
    doccache *c = start(16, 200);
    enum doc_state st;
    char s3[1100], key[32];
    uint64_t fill = 0;
    struct doccache_stats ds;
    (void)state;

    assert_int_equal(doccache_lookup(c, "nobody", &st, s3, sizeof(s3), &fill), DOCCACHE_MISS);
    doccache_fill(c, "nobody", fill, false, DOC_PENDING, NULL);
    assert_int_equal(doccache_lookup(c, "nobody", &st, s3, sizeof(s3), &fill), DOCCACHE_ABSENT);
    struct expect e = {c, "nobody", DOCCACHE_MISS, 0, NULL};
    assert_true(test_wait_until(answers, &e, 5000)); /* expired after 200 ms */
    /* and an insert makes a negative entry found at once */
    doccache_fill(c, "nobody", fill, false, DOC_PENDING, NULL);
    insert("nobody", "pending");
    struct expect e2 = {c, "nobody", DOCCACHE_FOUND, DOC_PENDING, "s3/nobody"};
    assert_true(test_wait_until(answers, &e2, 5000));

    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        if (doccache_lookup(c, key, &st, s3, sizeof(s3), &fill) == DOCCACHE_MISS)
            doccache_fill(c, key, fill, true, DOC_VERIFIED, key);
    }
    doccache_stats_get(c, &ds);
    assert_true(ds.entries <= 16);
    assert_true(ds.evictions >= 84);
    /* the most recent ones stayed */
    assert_int_equal(doccache_lookup(c, "k99", &st, s3, sizeof(s3), &fill), DOCCACHE_FOUND);
    doccache_free(c);
}

struct flushed {
    doccache *c;
    uint64_t before;
};

/* Emptied since `before` and listening again. */
static bool flushed_and_back(void *arg)
{
    struct flushed *f = arg;
    struct doccache_stats ds;
    doccache_stats_get(f->c, &ds);
    return ds.flushes > f->before && ds.trusted;
}

static void test_lost_connection(void **state)
{
    doccache *c = start(0, 0);
    enum doc_state st;
    char s3[1100];
    uint64_t fill = 0;
    (void)state;

    assert_int_equal(doccache_lookup(c, "z", &st, s3, sizeof(s3), &fill), DOCCACHE_MISS);
    doccache_fill(c, "z", fill, true, DOC_VERIFIED, "s3/z");
    assert_int_equal(doccache_lookup(c, "z", &st, s3, sizeof(s3), &fill), DOCCACHE_FOUND);
    struct doccache_stats ds;
    doccache_stats_get(c, &ds);
    struct flushed f = {c, ds.flushes};
    /* the listener's backend terminated: nothing is confirmed until it is back */
    sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query = 'LISTEN cutover_documents' AND datname = current_database()",
        0, NULL);
    assert_true(test_wait_until(flushed_and_back, &f, 10000));
    /* it came back empty: what was cached before the gap is looked up again */
    assert_int_equal(doccache_lookup(c, "z", &st, s3, sizeof(s3), &fill), DOCCACHE_MISS);
    doccache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_miss_fill_hit_and_changes),
        cmocka_unit_test(test_negative_ttl_and_bound),
        cmocka_unit_test(test_lost_connection),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
