/*
 * A mirror whose copies are all in flight waits for one of them to end: it does not poll the
 * queue in a loop. The legacy store here is a socket that accepts connections (the kernel's
 * backlog) and never answers, so the one copy allowed (max_inflight 1) stays in flight; the
 * process's CPU time over two seconds must stay small. A mirror that spun while full (it did:
 * its poll deadline had passed and nothing moved it) burns most of a core there.
 */
#include "core/core.h"
#include "storage/legacy.h"
#include "storage/mirror.h"
#include "storage/pgstore.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static mirror *M;

static bool one_in_flight(void *arg)
{
    struct mirror_stats st;
    (void)arg;
    mirror_stats_get(M, &st);
    return st.inflight == 1;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void test_full_mirror_waits(void **state)
{
    cut_err err = CUT_ERR_INIT;
    (void)state;

    /* a legacy store that never answers */
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls, 16), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &alen), 0);

    char *db = test_fresh_db("mirror_idle");
    pgstore *st = pgstore_connect(db, &err);
    assert_non_null(st);
    assert_int_equal(pgstore_migrate(st, NULL, NULL, &err), 0);
    struct pgstore_doc_in d = {
        .storage_key = "idle/one.bin", .s3_key = "idle/one.bin", .origin = "backfill", .size = -1};
    assert_int_equal(pgstore_upsert(st, &d, NULL, &err), 0);

    struct test_s3 ts;
    test_s3_open_at(&ts, NULL, 1);
    s3_client *s3 = ts.c;
    xfer_engine *e = s3_client_engine(s3, &err);
    if (!e)
        fail_msg("s3: %s", err.msg);
    char *raw = xasprintf("http://127.0.0.1:%d/raw/{key}", ntohs(a.sin_port));
    struct cfg_legacy lcfg = {.raw_url = raw, .timeout_s = 60};
    struct legacy_opts lo = {.timeout_s = 60, .max_attempts = 1};
    legacy_store *legacy = legacy_new(&lcfg, &lo, &err);
    assert_non_null(legacy);

    struct mirror_opts mo = {.database_url = db, .max_inflight = 1, .poll_ms = 50};
    M = mirror_start(&mo, s3, e, legacy, &err);
    assert_non_null(M);
    assert_true(test_wait_until(one_in_flight, NULL, 20000));

    /* a measurement window, not a wait for a condition */
    double c0 = cpu_s();
    uint64_t t0 = now_us();
    while (now_us() - t0 < 2000000) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    double used = cpu_s() - c0;
    print_message("CPU while the only copy allowed is in flight: %.3f s over 2 s\n", used);
    assert_true(used < 0.3);

    close(ls); /* the copy fails (connection reset), and the mirror can stop */
    mirror_free(M);
    legacy_free(legacy);
    test_s3_close(&ts);
    pgstore_free(st);
    free(raw);
    free(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_mirror_waits),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
