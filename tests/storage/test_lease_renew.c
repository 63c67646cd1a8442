/*
 * A copy that outlasts its lease keeps it (issue 8): two mirrors share one database, S3 is
 * behind a relay that delays every request by more than a lease (lease 3 s, each request held
 * 4 s, so the PUT and its HEAD span more than two leases). The first mirror claims the
 * document; the second one, polling every 50 ms, must never get it: the first renews its lease
 * every second while the copy is in flight. Without the renewal the lease lapses during the
 * PUT, the second mirror claims the document and PUTs it again, and the first one's outcome is
 * refused (each copy then outlasting the lease, the document is never recorded: it stays pending
 * for ever, copied again and again). Checked: the document ends verified, S3 saw exactly one PUT
 * and one HEAD, the first mirror claimed once and renewed, the second never claimed, no lease was
 * lost.
 */
#include "core/core.h"
#include "storage/mirror.h"
#include "storage/pgstore.h"
#include "tests/faults/relay.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEASE_MS 3000
#define DELAY_MS 4000

static mirror *M1;

static bool m1_in_flight(void *arg)
{
    struct mirror_stats st;
    (void)arg;
    mirror_stats_get(M1, &st);
    return st.inflight == 1;
}

struct done_arg {
    pgstore *st;
    const char *key;
};

static bool verified(void *arg)
{
    struct done_arg *a = arg;
    struct pgstore_doc d = {0};
    cut_err err = CUT_ERR_INIT;
    bool ok = pgstore_doc_get(a->st, a->key, &d, &err) == 0 && d.state == DOC_VERIFIED;
    pgstore_doc_clear(&d);
    return ok;
}

static int url_port(const char *url)
{
    const char *c = strrchr(url, ':');
    return c ? atoi(c + 1) : 0;
}

static void test_long_copy_keeps_its_lease(void **state)
{
    cut_err err = CUT_ERR_INIT;
    (void)state;

    char *dir = test_tmpdir("lease_renew");
    char *path = xasprintf("%s/doc.bin", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 4096; i++)
        fputc('a' + i % 26, f);
    fclose(f);

    char *db = test_fresh_db("lease_renew");
    pgstore *st = pgstore_connect(db, &err);
    assert_non_null(st);
    assert_int_equal(pgstore_migrate(st, NULL, NULL, &err), 0);
    struct pgstore_doc_in d = {.storage_key = "lease/slow.bin",
                               .s3_key = "lease/slow.bin",
                               .spool_path = path,
                               .size = -1};
    assert_int_equal(pgstore_upsert(st, &d, NULL, &err), 0);

    relay *r = relay_start(url_port(testenv("S3_ENDPOINT")));
    relay_set(r, RELAY_DELAY, DELAY_MS);
    char *endpoint = xasprintf("http://127.0.0.1:%d", relay_port(r));
    struct test_s3 ts;
    test_s3_open_at(&ts, endpoint, 1);
    s3_client *s3 = ts.c;
    xfer_engine *e = s3_client_engine(s3, &err);
    if (!e)
        fail_msg("s3: %s", err.msg);

    struct mirror_opts o1 = {.database_url = db,
                             .owner = "first",
                             .max_inflight = 4,
                             .lease_ms = LEASE_MS,
                             .poll_ms = 50,
                             .keep_spool = true};
    M1 = mirror_start(&o1, s3, e, NULL, &err);
    assert_non_null(M1);
    assert_true(test_wait_until(m1_in_flight, NULL, 20000));
    struct mirror_opts o2 = o1;
    o2.owner = "second";
    mirror *m2 = mirror_start(&o2, s3, e, NULL, &err);
    assert_non_null(m2);

    struct done_arg a = {st, d.storage_key};
    assert_true(test_wait_until(verified, &a, 30000));
    /* stopping waits for whatever is still in flight (a second copy, without renewal) */
    struct mirror_stats s1, s2;
    mirror_stats_get(M1, &s1);
    mirror_stats_get(m2, &s2);
    print_message("first: claimed %llu, renewals %llu, lost %llu; second: claimed %llu; "
                  "S3 requests %d\n",
                  (unsigned long long)s1.claimed, (unsigned long long)s1.renewals,
                  (unsigned long long)s1.lost_leases, (unsigned long long)s2.claimed,
                  relay_requests(r));
    assert_int_equal(s2.claimed, 0);
    assert_int_equal(s1.claimed, 1);
    assert_int_equal(s1.lost_leases, 0);
    assert_int_equal(s1.verified, 1);
    assert_true(s1.renewals >= 2);
    mirror_free(m2);
    mirror_free(M1);
    assert_int_equal(relay_requests(r), 2); /* one PUT, one HEAD */
    relay_stop(r);
    test_s3_close(&ts);
    pgstore_free(st);
    test_rmtree(dir);
    free(endpoint);
    free(path);
    free(dir);
    free(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_copy_keeps_its_lease),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
