/*
 * /metrics end to end: `cutover proxy` before the example app, PostgreSQL and s3rver.
 *
 *   - after uploads through the proxy, /metrics passes `promtool check metrics`, and the
 *     counters moved by exactly what was done: proxied requests of the upload route in 2xx
 *     (one per upload) and of no route in 4xx (one request to an unknown path), S3 PUTs, the
 *     mirror's verified documents and its lag histogram;
 *   - documents per state and the queue depth agree with the database's own count (and with
 *     /admin/status when the admin API answers it);
 *   - a state store that accepts connections but never answers (a listening socket nobody
 *     reads) makes /metrics answer within two seconds all the same, without the document
 *     figures and with cutover_state_store_up 0.
 */
#include "core/core.h"
#include "tests/metrics/mxenv.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const STATES[7] = {"pending",  "copied", "verified", "active",
                                      "mismatch", "failed", "deleted"};

#define UPLOAD_2XX "cutover_proxy_requests_total{route=\"upload\",status_class=\"2xx\"}"
#define NONE_4XX "cutover_proxy_requests_total{route=\"none\",status_class=\"4xx\"}"
#define MIRROR_OK "cutover_mirror_documents_total{origin=\"upload\",outcome=\"verified\"}"

static void promtool(const char *text)
{
    char path[] = "/tmp/metrics-e2e-XXXXXX", *out = NULL;
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_true(test_write_file(path, text, strlen(text)));
    char *cmd = xasprintf("promtool check metrics < %s", path);
    int rc = test_run(cmd, &out);
    if (rc != 0)
        fail_msg("promtool check metrics: exit %d: %s\n%s", rc, out ? out : "", text);
    unlink(path);
    free(cmd);
    free(out);
}

struct agree {
    struct mxenv *e;
    char *last;
};

/* Whether a scrape's documents per state equal the database's (keeps the scrape). */
static bool figures_agree(void *arg)
{
    struct agree *a = arg;
    long db[7], status;
    free(a->last);
    a->last = mx_admin_get(a->e, "/metrics", false, &status);
    mx_db_counts(a->e, db);
    for (int s = 0; s < 7; s++) {
        char series[80];
        snprintf(series, sizeof(series), "cutover_documents{state=\"%s\"}", STATES[s]);
        if (mx_sample(a->last, series) != (double)db[s])
            return false;
    }
    return true;
}

static void test_traffic(void **state)
{
    struct mxenv e;
    long status;
    (void)state;
    mx_start(&e, "metrics");

    char *before = mx_admin_get(&e, "/metrics", false, &status);
    assert_int_equal(status, 200);
    double up0 = mx_sample(before, UPLOAD_2XX), none0 = mx_sample(before, NONE_4XX);
    assert_true(up0 >= 0 && none0 >= 0);
    assert_true(mx_sample(before, "cutover_flag_dual_write") == 1);
    assert_true(mx_sample(before, "cutover_flag_shadow_read_ratio") == 0.05);
    assert_true(mx_sample(before, "cutover_rollbacks_total") == 0);
    free(before);

    for (int i = 0; i < 6; i++)
        assert_int_equal(mx_upload(&e, 1000 + 500 * (size_t)i), 201);
    struct test_http r;
    char *url = xasprintf("http://127.0.0.1:%d/no/such/route", e.port);
    assert_int_equal(test_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    test_http_free(&r);
    free(url);
    assert_true(mx_wait_verified(&e, 6));

    struct agree a = {&e, NULL};
    assert_true(test_wait_until(figures_agree, &a, 10000));
    char *t = a.last;
    promtool(t);
    assert_true(mx_sample(t, UPLOAD_2XX) == up0 + 6);
    assert_true(mx_sample(t, NONE_4XX) == none0 + 1);
    assert_true(mx_sample(t, "cutover_s3_requests_total{operation=\"put\"}") >= 6);
    assert_true(mx_sample(t, "cutover_s3_requests_total{operation=\"head\"}") >= 6);
    assert_true(mx_sample(t, "cutover_s3_errors_total{operation=\"put\"}") == 0);
    assert_true(mx_sample(t, MIRROR_OK) == 6);
    assert_true(mx_sample(t, "cutover_mirror_bytes_total{origin=\"upload\"}") ==
                1000 * 6 + 500 * 15);
    assert_true(mx_sample(t, "cutover_mirror_lag_seconds_count") == 6);
    /* dual-write's own figures: six uploads recorded, each answer held for its record once */
    assert_true(mx_sample(t, "cutover_uploads_total{outcome=\"recorded\"}") == 6);
    assert_true(mx_sample(t, "cutover_uploads_total{outcome=\"lost\"}") == 0);
    assert_true(mx_sample(t, "cutover_upload_record_seconds_count") == 6);
    assert_true(mx_sample(t, "cutover_upload_record_seconds_bucket{le=\"10\"}") == 6);
    assert_true(mx_sample(t, "cutover_mirror_lag_seconds_bucket{le=\"+Inf\"}") == 6);
    assert_true(mx_sample(t, "cutover_proxy_request_duration_seconds_count{route=\"upload\"}") ==
                up0 + 6);
    assert_true(mx_sample(t, "cutover_documents{state=\"verified\"}") == 6);
    assert_true(mx_sample(t, "cutover_queue_depth") == 0);
    assert_true(mx_sample(t, "cutover_state_store_up") == 1);

    /* /admin/status, once the admin API serves it, gives the same figures */
    char *st = mx_admin_get(&e, "/admin/status", true, &status);
    if (status == 200) {
        json_error_t je;
        json_t *j = json_loads(st, 0, &je);
        assert_non_null(j);
        for (int s = 0; s < 7; s++) {
            char series[80];
            snprintf(series, sizeof(series), "cutover_documents{state=\"%s\"}", STATES[s]);
            assert_true(mx_sample(t, series) == (double)json_integer_value(json_object_get(
                                                    json_object_get(j, "documents"), STATES[s])));
        }
        assert_true(mx_sample(t, "cutover_queue_depth") ==
                    (double)json_integer_value(json_object_get(j, "queue_depth")));
        json_decref(j);
    } else {
        print_message("/admin/status answered %ld: compared with the database only\n", status);
    }
    free(st);
    free(t);
    assert_int_equal(mx_stop(&e), 0);
}

static void test_state_store_hung(void **state)
{
    (void)state;
    int hole = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(hole, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(hole, 16), 0); /* connections complete, nobody ever answers */
    assert_int_equal(getsockname(hole, (struct sockaddr *)&sa, &sl), 0);

    char *dir = test_tmpdir("metrics-hung"), *cfg = xasprintf("%s/c.json", dir),
         *log = xasprintf("%s/log", dir);
    int port = test_free_port(), admin = test_free_port();
    char *json = xasprintf("{\"listen\": \"127.0.0.1:%d\", \"upstream\": \"%s\",\n"
                           " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"token\": \"x\"},\n"
                           " \"database_url\": \"postgresql://u@127.0.0.1:%d/db\"}\n",
                           port, testenv("APP_URL"), admin, ntohs(sa.sin_port));
    assert_true(test_write_file(cfg, json, strlen(json)));
    char *argv[] = {(char *)testenv_var("CUTOVER_BIN"), "proxy", "--config", cfg, NULL};
    pid_t pid = test_spawn(argv, NULL, log);
    char *ready = xasprintf("http://127.0.0.1:%d/readyz", admin);
    assert_true(test_wait_http(ready, 20000));

    struct mxenv e = {.admin = admin};
    for (int i = 0; i < 2; i++) {
        long status;
        uint64_t t0 = now_us();
        char *t = mx_admin_get(&e, "/metrics", false, &status);
        uint64_t took = now_us() - t0;
        assert_int_equal(status, 200);
        if (took > 2000000)
            fail_msg("/metrics took %llu ms with a hung state store",
                     (unsigned long long)(took / 1000));
        assert_null(strstr(t, "\ncutover_documents{"));
        assert_null(strstr(t, "\ncutover_queue_depth "));
        assert_true(mx_sample(t, "cutover_state_store_up") == 0);
        assert_true(mx_sample(t, "cutover_flag_dual_write") >= 0);
        promtool(t);
        free(t);
    }
    int st = test_stop(pid, SIGTERM, 30000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(hole);
    test_rmtree(dir);
    free(dir);
    free(cfg);
    free(log);
    free(json);
    free(ready);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traffic),
        cmocka_unit_test(test_state_store_hung),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
