/*
 * The flag store against the real PostgreSQL, each test in a fresh database: the
 * configuration's values are written once (a second store with other values changes
 * nothing); a reload picks up a change made by another connection; an invalid value put in
 * the table is refused with "flags.NAME: reason" and the previous snapshot stays; a set
 * writes its audit row and is validated first; with the database away the configuration's
 * snapshot stays (marked not from the database); and readers on other threads, reading
 * without a lock while the snapshot is swapped hundreds of times, never see a torn one.
 */
#include "flags/flags.h"
#include "tests/storage/pg_helpers.h"

#include <pthread.h>
#include <stdatomic.h>

static struct config *cfg_with(const char *flags)
{
    struct cfg_problems p = {0};
    char *text = xasprintf("{\"flags\": %s}", flags);
    struct config *cfg = config_parse(text, "test", &p);

    assert_non_null(cfg);
    free(text);
    return cfg;
}

static flags_store *open_store(const char *url, const char *flags)
{
    struct config *cfg = cfg_with(flags);
    cut_err err = CUT_ERR_INIT;
    flags_store *fs = flags_store_new(url, cfg, &err);

    if (fs == NULL)
        fail_msg("flags_store_new: %s", err.msg);
    config_free(cfg);
    return fs;
}

static void test_initial_values_written_once(void **state)
{
    char *url = pgt_migrated_db("flags_init");
    flags_store *fs = open_store(url, "{\"dual_write\": true, \"shadow_read\": 0.25}");
    cut_err err = CUT_ERR_INIT;
    flags_snapshot *s;
    char *v;

    (void)state;
    /* before the database is read: the configuration's values, marked as such */
    s = flags_store_current(fs);
    assert_false(flags_snapshot_from_db(s));
    assert_true(flags_dual_write(s));
    flags_snapshot_unref(s);

    assert_int_equal(flags_store_reload(fs, &err), 0);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.flags"), 5);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.audit WHERE action = "
                                    "'flag_init' AND actor = 'config'"),
                     5);
    v = pgt_query1(url, "SELECT value::text FROM cutover.flags WHERE name = 'shadow_read'");
    assert_string_equal(v, "0.25");
    free(v);
    s = flags_store_current(fs);
    assert_true(flags_snapshot_from_db(s));
    assert_true(flags_shadow_read(s) == 0.25);
    flags_snapshot_unref(s);
    flags_store_free(fs);

    /* another replica with other initial values: the database's values win, nothing written */
    fs = open_store(url, "{\"dual_write\": false, \"shadow_read\": 0.5}");
    assert_int_equal(flags_store_reload(fs, &err), 0);
    s = flags_store_current(fs);
    assert_true(flags_dual_write(s));
    assert_true(flags_shadow_read(s) == 0.25);
    flags_snapshot_unref(s);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.audit"), 5);
    flags_store_free(fs);
    free(url);
}

static void test_reload_and_invalid(void **state)
{
    char *url = pgt_migrated_db("flags_reload");
    flags_store *fs = open_store(url, "{}");
    flags_reader *r = flags_reader_new(fs);
    cut_err err = CUT_ERR_INIT;
    const flags_snapshot *s;
    uint64_t version;
    char *v;

    (void)state;
    assert_int_equal(flags_store_reload(fs, &err), 0);
    s = flags_reader_get(r);
    assert_true(flags_snapshot_from_db(s));
    assert_false(flags_dual_write(s));
    /* another connection (the admin API of another replica) changes two flags */
    pgt_exec(url, "UPDATE cutover.flags SET value = 'true' WHERE name = 'dual_write'; "
                  "UPDATE cutover.flags SET value = '{\"percent\": 10}' WHERE name = "
                  "'read_from_s3'");
    assert_int_equal(flags_store_reload(fs, &err), 0);
    s = flags_reader_get(r);
    assert_true(flags_dual_write(s));
    assert_true(flags_read_percent(s) == 10.0);
    version = flags_snapshot_version(s);

    /* a value that breaks a rule: refused, the snapshot stays */
    pgt_exec(url, "UPDATE cutover.flags SET value = '{\"percent\": 150}' WHERE name = "
                  "'read_from_s3'");
    assert_int_equal(flags_store_reload(fs, &err), -1);
    assert_int_equal(err.code, CUT_EINVAL);
    assert_string_equal(err.msg, "flags.read_from_s3: percent: expected a number from 0 to 100");
    s = flags_reader_get(r);
    assert_int_equal(flags_snapshot_version(s), version);
    assert_true(flags_read_percent(s) == 10.0);
    /* an unknown flag too */
    pgt_exec(url, "UPDATE cutover.flags SET value = '{\"percent\": 20}' WHERE name = "
                  "'read_from_s3'; INSERT INTO cutover.flags (name, value) VALUES "
                  "('read_from_s4', 'true')");
    err_clear(&err);
    assert_int_equal(flags_store_reload(fs, &err), -1);
    assert_non_null(strstr(err.msg, "flags.read_from_s4: unknown flag"));
    assert_int_equal(flags_snapshot_version(flags_reader_get(r)), version);
    pgt_exec(url, "DELETE FROM cutover.flags WHERE name = 'read_from_s4'");
    err_clear(&err);
    assert_int_equal(flags_store_reload(fs, &err), 0);
    assert_true(flags_read_percent(flags_reader_get(r)) == 20.0);

    /* set: validated first (nothing written), then written with its audit row */
    {
        json_t *bad = json_real(3), *good = json_real(0.5);
        err_clear(&err);
        assert_int_equal(flags_store_set(fs, "shadow_read", bad, "alice", "try", &err), -1);
        assert_string_equal(err.msg, "flags.shadow_read: expected a number from 0 to 1");
        assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.audit WHERE action = "
                                        "'flag_set'"),
                         0);
        err_clear(&err);
        assert_int_equal(flags_store_set(fs, "shadow_read", good, "alice", "sample", &err), 0);
        assert_true(flags_shadow_read(flags_reader_get(r)) == 0.5);
        v = pgt_query1(url, "SELECT actor || ' ' || new::text || ' ' || reason FROM "
                            "cutover.audit WHERE action = 'flag_set'");
        assert_string_equal(v, "alice 0.5 sample");
        free(v);
        json_decref(bad);
        json_decref(good);
    }
    flags_reader_free(r);
    flags_store_free(fs);
    free(url);
}

static void test_database_away(void **state)
{
    flags_store *fs = open_store("postgresql://cutover@127.0.0.1:1/none?connect_timeout=2",
                                 "{\"dual_write\": true}");
    flags_reader *r = flags_reader_new(fs);
    cut_err err = CUT_ERR_INIT;
    struct config *cfg;

    (void)state;
    assert_int_equal(flags_store_reload(fs, &err), -1);
    assert_int_equal(err.code, CUT_EDB);
    assert_false(flags_snapshot_from_db(flags_reader_get(r)));
    assert_true(flags_dual_write(flags_reader_get(r)));
    flags_reader_free(r);
    flags_store_free(fs);
    /* an invalid flags section never makes a store */
    cfg = cfg_with("{\"shadow_read\": -1}");
    err_clear(&err);
    assert_null(flags_store_new("postgresql://x@127.0.0.1:1/none", cfg, &err));
    assert_string_equal(err.msg, "flags.shadow_read: expected a number from 0 to 1");
    config_free(cfg);
}

#define NREADERS 3
#define NSWAPS 200

struct reader_thread {
    flags_store *fs;
    atomic_bool *stop;
    long reads, torn, backwards;
    uint64_t versions_seen, last_version;
};

/* Every snapshot the writer makes has shadow_read == read_from_s3.percent / 100 and
 * dual_write == (percent is odd): a torn snapshot would break it. */
static void *reader_main(void *arg)
{
    struct reader_thread *t = arg;
    flags_reader *r = flags_reader_new(t->fs);
    uint64_t last = 0;

    while (!atomic_load(t->stop)) {
        const flags_snapshot *s = flags_reader_get(r);
        double pct = flags_read_percent(s);
        uint64_t v = flags_snapshot_version(s);
        const json_t *rs = flags_snapshot_value(s, "read_from_s3");

        if (flags_shadow_read(s) != pct / 100.0 || flags_dual_write(s) != ((long)pct % 2 == 1) ||
            json_number_value(json_object_get(rs, "percent")) != pct)
            t->torn++;
        if (v < last)
            t->backwards++;
        if (v != last)
            t->versions_seen++;
        last = v;
        t->reads++;
    }
    t->last_version = flags_snapshot_version(flags_reader_get(r));
    flags_reader_free(r);
    return NULL;
}

static void test_readers_never_torn(void **state)
{
    char *url = pgt_migrated_db("flags_torn");
    flags_store *fs = open_store(url, "{}");
    struct reader_thread rt[NREADERS];
    pthread_t th[NREADERS];
    atomic_bool stop = false;
    cut_err err = CUT_ERR_INIT;
    PGconn *c = PQconnectdb(url);
    flags_snapshot *last;

    (void)state;
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_int_equal(flags_store_reload(fs, &err), 0);
    for (int i = 0; i < NREADERS; i++) {
        rt[i] = (struct reader_thread){fs, &stop, 0, 0, 0, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &rt[i]), 0);
    }
    for (int k = 1; k <= NSWAPS; k++) {
        char sql[400];
        PGresult *res;
        int pct = k % 101;
        /* the three flags change together, in one transaction of another connection;
         * shadow_read is pct / 100 as the reader computes it */
        snprintf(sql, sizeof(sql),
                 "BEGIN; UPDATE cutover.flags SET value = to_jsonb(%d / 100.0) WHERE name = "
                 "'shadow_read';"
                 "UPDATE cutover.flags SET value = '{\"percent\": %d}' WHERE name = "
                 "'read_from_s3';"
                 "UPDATE cutover.flags SET value = '%s' WHERE name = 'dual_write'; COMMIT",
                 pct, pct, pct % 2 ? "true" : "false");
        res = PQexec(c, sql);
        assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);
        if (flags_store_reload(fs, &err) != 0)
            fail_msg("reload %d: %s", k, err.msg);
    }
    last = flags_store_current(fs);
    atomic_store(&stop, true);
    for (int i = 0; i < NREADERS; i++) {
        pthread_join(th[i], NULL);
        fprintf(stderr, "reader %d: %ld reads, %llu snapshots seen\n", i, rt[i].reads,
                (unsigned long long)rt[i].versions_seen);
        assert_int_equal(rt[i].torn, 0);
        assert_int_equal(rt[i].backwards, 0);
        /* after the last swap every reader is on the last snapshot */
        assert_int_equal(rt[i].last_version, flags_snapshot_version(last));
    }
    flags_snapshot_unref(last);
    PQfinish(c);
    flags_store_free(fs);
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initial_values_written_once),
        cmocka_unit_test(test_reload_and_invalid),
        cmocka_unit_test(test_database_away),
        cmocka_unit_test(test_readers_never_torn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
