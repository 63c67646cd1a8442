/*
 * The metrics catalogue without services: the text exposition (HELP, TYPE, labels escaped,
 * cumulative histogram buckets whose +Inf equals _count, sums in seconds), label indexes
 * clamped inside their family, hidden families left out, lags read from PostgreSQL's
 * timestamps, promtool's verdict on a rendering, and the Grafana dashboard naming only
 * metrics that are exported.
 */
#include "core/metrics.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char *render(void)
{
    struct buf b;
    buf_init(&b, 4 << 20);
    assert_true(metrics_render(&b));
    return buf_steal(&b);
}

/* The value of the sample line starting with series (name and labels exactly), or -1. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

static void test_exposition(void **state)
{
    (void)state;
    const char *routes[] = {"upload", "odd\"na\\me\nx"};
    metrics_set_routes(routes, 2);
    metrics_inc(MET_PROXY_REQUESTS, metrics_route_index(0), metrics_status_class(201));
    metrics_inc(MET_PROXY_REQUESTS, metrics_route_index(0), metrics_status_class(201));
    metrics_inc(MET_PROXY_REQUESTS, metrics_route_index(-1), metrics_status_class(0));
    metrics_inc(MET_PROXY_REQUESTS, metrics_route_index(1), metrics_status_class(503));
    metrics_observe_us(MET_S3_DURATION, MET_S3_PUT, 3000);     /* le 0.005 */
    metrics_observe_us(MET_S3_DURATION, MET_S3_PUT, 2000000);  /* le 2.5 */
    metrics_observe_us(MET_S3_DURATION, MET_S3_PUT, 99000000); /* +Inf */
    metrics_add(MET_S3_REQUESTS, 999, 0, 5);                   /* clamped to the last value */
    metrics_set(MET_FLAG_READ_FROM_S3, 0, 0, 0.25);

    char *t = render();
    assert_non_null(strstr(t, "# HELP cutover_proxy_requests_total "));
    assert_non_null(strstr(t, "# TYPE cutover_proxy_requests_total counter\n"));
    assert_non_null(strstr(t, "# TYPE cutover_s3_request_duration_seconds histogram\n"));
    assert_non_null(strstr(t, "# TYPE cutover_documents gauge\n"));
    assert_true(sample(t, "cutover_proxy_requests_total{route=\"upload\",status_class=\"2xx\"}") ==
                2);
    assert_true(sample(t, "cutover_proxy_requests_total{route=\"none\",status_class=\"none\"}") ==
                1);
    assert_true(sample(t, "cutover_proxy_requests_total{route=\"odd\\\"na\\\\me\\nx\","
                          "status_class=\"5xx\"}") == 1);
    assert_true(sample(t, "cutover_s3_request_duration_seconds_bucket{operation=\"put\","
                          "le=\"0.0025\"}") == 0);
    assert_true(sample(t, "cutover_s3_request_duration_seconds_bucket{operation=\"put\","
                          "le=\"0.005\"}") == 1);
    assert_true(sample(t, "cutover_s3_request_duration_seconds_bucket{operation=\"put\","
                          "le=\"2.5\"}") == 2);
    assert_true(sample(t, "cutover_s3_request_duration_seconds_bucket{operation=\"put\","
                          "le=\"+Inf\"}") == 3);
    assert_true(sample(t, "cutover_s3_request_duration_seconds_count{operation=\"put\"}") == 3);
    assert_true(sample(t, "cutover_s3_request_duration_seconds_sum{operation=\"put\"}") == 101.003);
    assert_true(sample(t, "cutover_s3_requests_total{operation=\"other\"}") == 5);
    assert_true(sample(t, "cutover_flag_read_from_s3_ratio") == 0.25);
    assert_true(sample(t, "cutover_rollbacks_total") == 0);
    assert_true(sample(t, "cutover_shadow_mismatches_total{class=\"s3\"}") == 0);
    free(t);

    metrics_hide(MET_DOCUMENTS, true);
    t = render();
    assert_null(strstr(t, "cutover_documents"));
    free(t);
    metrics_hide(MET_DOCUMENTS, false);
}

static void test_labels(void **state)
{
    (void)state;
    assert_int_equal(metrics_status_class(0), 0);
    assert_int_equal(metrics_status_class(99), 0);
    assert_int_equal(metrics_status_class(404), 4);
    assert_int_equal(metrics_status_class(600), 0);
    assert_int_equal(metrics_route_index(-1), MET_ROUTE_NONE);
    assert_int_equal(metrics_route_index(METRICS_MAX_ROUTES), MET_ROUTE_OTHER);
    assert_int_equal(metrics_label_index(MET_DOCUMENTS, 0, "verified"), 2);
    assert_int_equal(metrics_label_index(MET_DOCUMENTS, 0, "nope"), -1);
    assert_int_equal(metrics_label_index(MET_S3_ERRORS, 0, "multipart_part"),
                     MET_S3_MULTIPART_PART);
    assert_string_equal(metrics_name(MET_MIRROR_LAG), "cutover_mirror_lag_seconds");
}

static void test_age(void **state)
{
    (void)state;
    struct timeval tv;
    char s[64];
    struct tm tm;
    gettimeofday(&tv, NULL);
    time_t then = tv.tv_sec - 90;
    gmtime_r(&then, &tm);
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S.500000+00:00", &tm);
    uint64_t age = metrics_age_us(s);
    assert_true(age > 88000000 && age < 92000000);
    /* the same instant two hours east */
    time_t east = then + 7200;
    gmtime_r(&east, &tm);
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S+02:00", &tm);
    age = metrics_age_us(s);
    assert_true(age > 88000000 && age < 92000000);
    assert_int_equal(metrics_age_us("2999-01-01T00:00:00Z"), 0);
    assert_int_equal(metrics_age_us("yesterday"), 0);
    assert_int_equal(metrics_age_us(NULL), 0);
}

/* promtool (Debian's prometheus package) lints the whole rendering. */
static void test_promtool(void **state)
{
    (void)state;
    char *t = render(), *out = NULL, path[] = "/tmp/metrics-unit-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_true(test_write_file(path, t, strlen(t)));
    char *cmd = xasprintf("promtool check metrics < %s", path);
    int rc = test_run(cmd, &out);
    if (rc != 0)
        fail_msg("promtool check metrics: exit %d: %s", rc, out ? out : "");
    unlink(path);
    free(cmd);
    free(out);
    free(t);
}

/* Every metric name in the Grafana dashboard's expressions is one /metrics exports. */
static void test_grafana_names(void **state)
{
    (void)state;
    char *t = render();
    char *path = xasprintf("%s/deploy/grafana/cutover.json", testenv_var("CUTOVER_SOURCE_DIR"));
    json_error_t je;
    json_t *d = json_load_file(path, 0, &je);
    if (!d)
        fail_msg("%s: %s", path, je.text);
    json_t *panels = json_object_get(d, "panels"), *p, *tg;
    size_t i, j, names = 0;
    assert_true(json_array_size(panels) > 10);
    json_array_foreach(panels, i, p)
    {
        json_array_foreach(json_object_get(p, "targets"), j, tg)
        {
            const char *e = json_string_value(json_object_get(tg, "expr"));
            assert_non_null(e);
            for (const char *q = strstr(e, "cutover_"); q; q = strstr(q, "cutover_")) {
                size_t n = strspn(q, "abcdefghijklmnopqrstuvwxyz0123456789_");
                char *name = xstrndup(q, n), *line = xasprintf("\n%s", name);
                /* a sample of that name: followed by '{' or ' ' somewhere in the rendering */
                bool found = false;
                for (const char *h = strstr(t, line); h && !found; h = strstr(h + 1, line))
                    found = h[n + 1] == '{' || h[n + 1] == ' ';
                if (!found)
                    fail_msg(
                        "the dashboard's panel \"%s\" names %s, which /metrics does not export",
                        json_string_value(json_object_get(p, "title")), name);
                names++;
                free(name);
                free(line);
                q += n;
            }
        }
    }
    assert_true(names >= 20);
    json_decref(d);
    free(path);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exposition),    cmocka_unit_test(test_labels),
        cmocka_unit_test(test_age),           cmocka_unit_test(test_promtool),
        cmocka_unit_test(test_grafana_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
