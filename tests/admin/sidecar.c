/*
 * The admin tests' sidecar processes (sidecar.h).
 */
#include "tests/admin/sidecar.h"

#include "core/core.h"
#include "tests/unit.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

void sc_init(struct sidecar *s, const char *dir, const char *name, const char *db_url,
             const char *flags)
{
    char *json, *cmd, *out = NULL;

    memset(s, 0, sizeof(*s));
    s->dir = xasprintf("%s/%s", dir, name);
    mkdir(s->dir, 0700);
    s->config = xasprintf("%s/cutover.json", s->dir);
    s->log = xasprintf("%s/cutover.log", s->dir);
    s->port = test_free_port();
    s->admin = test_free_port();
    json =
        xasprintf("{\"listen\": \"127.0.0.1:%d\", \"upstream\": \"%s\",\n"
                  " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"token\": \"%s\"},\n"
                  " \"database_url\": \"%s\",\n"
                  " \"log\": {\"level\": \"info\", \"access\": false},\n"
                  " \"flags\": %s}\n",
                  s->port, testenv("APP_URL"), s->admin, ADMIN_TOKEN, db_url, flags ? flags : "{}");
    assert_true(test_write_file(s->config, json, strlen(json)));
    free(json);
    cmd = xasprintf("'%s' migrate-db --config '%s'", testenv_var("CUTOVER_BIN"), s->config);
    if (test_run(cmd, &out) != 0)
        fail_msg("migrate-db: %s", out ? out : "");
    free(cmd);
    free(out);
}

void sc_start(struct sidecar *s)
{
    char *argv[] = {(char *)testenv_var("CUTOVER_BIN"), "proxy", "--config", s->config, NULL};
    char *ready = xasprintf("http://127.0.0.1:%d/healthz", s->admin);
    s->pid = test_spawn(argv, NULL, s->log);
    if (!test_wait_http(ready, 30000))
        fail_msg("cutover did not start (log %s)", s->log);
    free(ready);
}

void sc_stop(struct sidecar *s)
{
    if (s->pid > 0) {
        int st = test_stop(s->pid, SIGTERM, 30000);
        s->pid = 0;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            char *log = test_read_file(s->log, NULL);
            fprintf(stderr, "cutover did not stop cleanly (status %d):\n%s\n", st, log ? log : "");
            free(log);
            fail_msg("cutover did not stop cleanly");
        }
    }
    free(s->dir);
    free(s->config);
    free(s->log);
    memset(s, 0, sizeof(*s));
}

long sc_call(const struct sidecar *s, const char *method, const char *path, const char *body,
             const char *auth, json_t **answer)
{
    struct test_http r;
    char *url = xasprintf("http://127.0.0.1:%d%s", s->admin, path);
    const char *bearer = "Authorization: Bearer " ADMIN_TOKEN;
    const char *hdrs[3] = {auth ? (*auth ? auth : NULL) : bearer, NULL, NULL};
    long status;

    if (body && hdrs[0])
        hdrs[1] = "Content-Type: application/json";
    else if (body)
        hdrs[0] = "Content-Type: application/json";
    if (test_http(method, url, hdrs, body, body ? strlen(body) : 0, &r) != 0 && r.status == 0)
        fail_msg("%s %s: %s", method, url, r.errbuf);
    status = r.status;
    if (answer)
        *answer = r.body ? json_loads(r.body, JSON_DECODE_ANY, NULL) : NULL;
    test_http_free(&r);
    free(url);
    return status;
}

double sc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}
