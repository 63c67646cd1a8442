/*
 * The dashboard page in a real browser: headless Chromium (Debian's chromium), driven over the
 * DevTools protocol on a pipe (--remote-debugging-pipe: NUL-separated JSON messages on fds 3
 * and 4), from C with jansson; no browser download, no Node.js package.
 *
 *   - GET / asks for the admin token; once given, it is kept in sessionStorage only (nothing in
 *     localStorage) and the page shows the figures the API gives: documents per state, the
 *     consistency ratio and the queue depth, equal to /admin/status (or, while the admin API
 *     is not there, to the database's count);
 *   - a flag changed from the page (shadow_read, with a reason) is sent as PATCH /admin/flags
 *     with the token; with the admin API there, it reaches it: GET /admin/flags shows the new
 *     value and the audit log has the reason;
 *   - the page fits a phone's width (no horizontal scrolling at 390 px);
 *   - screenshots: dashboard.png (laptop, 1280 px) and dashboard-phone.png in the test's
 *     directory, and in $CUTOVER_SCREENSHOT_DIR when set (the README's docs/dashboard.png).
 */
#include "core/core.h"
#include "tests/metrics/mxenv.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CDP_MAX_MESSAGE (64 * 1024 * 1024)

struct cdp {
    pid_t pid;
    int wfd, rfd;
    struct buf in;
    int next_id;
    char session[128];
    char *profile;
};

static struct cdp C;
static struct mxenv E;

static void cdp_start(void)
{
    int to[2], from[2];
    assert_int_equal(pipe(to), 0);
    assert_int_equal(pipe(from), 0);
    C.profile = test_tmpdir("chromium");
    char *logp = xasprintf("%s/chromium.log", C.profile);
    char *prof = xasprintf("--user-data-dir=%s", C.profile);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int log = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int r = dup(to[0]), w = dup(from[1]); /* above 4 before the dup2s below */
        dup2(log, 1);
        dup2(log, 2);
        dup2(r, 3);
        dup2(w, 4);
        for (int fd = 5; fd < 1024; fd++)
            close(fd);
        execlp("chromium", "chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
               "--hide-scrollbars", "--remote-debugging-pipe", prof, "about:blank", (char *)NULL);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    C.pid = pid;
    C.wfd = to[1];
    C.rfd = from[0];
    buf_init(&C.in, CDP_MAX_MESSAGE);
    C.next_id = 1;
    free(logp);
    free(prof);
}

/* Sends method(params) to the browser (session: the page's, or "" for the browser) and returns
 * the result object (new reference), failing the test on an error or after 30 s. */
static json_t *cdp_call(bool page, const char *method, json_t *params)
{
    int id = C.next_id++;
    json_t *m = json_pack("{s:i,s:s,s:o}", "id", id, "method", method, "params",
                          params ? params : json_object());
    if (page)
        json_object_set_new(m, "sessionId", json_string(C.session));
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    size_t n = strlen(text) + 1; /* the NUL ends the message */
    for (size_t off = 0; off < n;) {
        ssize_t w = write(C.wfd, text + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        off += (size_t)w;
    }
    free(text);
    uint64_t deadline = now_us() + 30000000u;
    for (;;) {
        char *nul = C.in.len ? memchr(C.in.data, 0, C.in.len) : NULL;
        if (nul) {
            size_t len = (size_t)(nul - C.in.data);
            json_error_t je;
            json_t *msg = json_loadb(C.in.data, len, 0, &je);
            memmove(C.in.data, nul + 1, C.in.len - len - 1);
            C.in.len -= len + 1;
            if (!msg)
                fail_msg("DevTools message: %s", je.text);
            if (json_integer_value(json_object_get(msg, "id")) == id) {
                json_t *err = json_object_get(msg, "error");
                if (err) {
                    char *e = json_dumps(err, 0);
                    fail_msg("%s: %s", method, e);
                }
                json_t *res = json_incref(json_object_get(msg, "result"));
                json_decref(msg);
                return res;
            }
            json_decref(msg); /* an event */
            continue;
        }
        struct pollfd p = {.fd = C.rfd, .events = POLLIN};
        int64_t left = (int64_t)(deadline - now_us());
        if (left <= 0)
            fail_msg("%s: no answer from Chromium within 30 s", method);
        if (poll(&p, 1, (int)(left / 1000) + 1) <= 0)
            continue;
        char chunk[65536];
        ssize_t r = read(C.rfd, chunk, sizeof(chunk));
        if (r <= 0)
            fail_msg("%s: Chromium closed its pipe", method);
        assert_true(buf_append(&C.in, chunk, (size_t)r));
    }
}

/* Evaluates expr in the page; returns its value (new reference). */
static json_t *eval(const char *expr)
{
    json_t *r = cdp_call(
        true, "Runtime.evaluate",
        json_pack("{s:s,s:b,s:b}", "expression", expr, "returnByValue", 1, "awaitPromise", 1));
    json_t *v = json_incref(json_object_get(json_object_get(r, "result"), "value"));
    json_decref(r);
    return v ? v : json_null();
}

static bool eval_true(void *arg)
{
    json_t *v = eval(arg);
    bool t = json_is_true(v);
    json_decref(v);
    return t;
}

static char *eval_string(const char *expr)
{
    json_t *v = eval(expr);
    char *s = xstrdup(json_is_string(v) ? json_string_value(v) : "");
    json_decref(v);
    return s;
}

static void viewport(int w, int h, bool mobile)
{
    json_decref(cdp_call(true, "Emulation.setDeviceMetricsOverride",
                         json_pack("{s:i,s:i,s:f,s:b}", "width", w, "height", h,
                                   "deviceScaleFactor", mobile ? 2.0 : 1.0, "mobile", mobile)));
}

static void screenshot(const char *name)
{
    json_t *r = cdp_call(true, "Page.captureScreenshot",
                         json_pack("{s:s,s:b}", "format", "png", "captureBeyondViewport", 0));
    const char *b64 = json_string_value(json_object_get(r, "data"));
    assert_non_null(b64);
    size_t n = strlen(b64);
    unsigned char *png = xmalloc(n);
    int len = EVP_DecodeBlock(png, (const unsigned char *)b64, (int)n);
    assert_true(len > 8);
    while (n > 0 && b64[n - 1] == '=') { /* EVP_DecodeBlock counts the padding */
        len--;
        n--;
    }
    assert_memory_equal(png, "\x89PNG", 4);
    assert_true(test_write_file(name, png, (size_t)len));
    const char *dir = getenv("CUTOVER_SCREENSHOT_DIR");
    if (dir && *dir) {
        char *p = xasprintf("%s/%s", dir, name);
        assert_true(test_write_file(p, png, (size_t)len));
        free(p);
    }
    free(png);
    json_decref(r);
}

static int setup(void **state)
{
    (void)state;
    mx_start(&E, "dashboard");
    for (int i = 0; i < 5; i++)
        assert_int_equal(mx_upload(&E, 2000 + 100 * (size_t)i), 201);
    assert_true(mx_wait_verified(&E, 5));
    cdp_start();
    json_t *t = cdp_call(false, "Target.createTarget", json_pack("{s:s}", "url", "about:blank"));
    json_t *a =
        cdp_call(false, "Target.attachToTarget",
                 json_pack("{s:O,s:b}", "targetId", json_object_get(t, "targetId"), "flatten", 1));
    snprintf(C.session, sizeof(C.session), "%s",
             json_string_value(json_object_get(a, "sessionId")));
    json_decref(t);
    json_decref(a);
    assert_true(C.session[0]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    json_t *r = cdp_call(false, "Browser.close", NULL);
    json_decref(r);
    test_wait_exit(C.pid, 10000);
    close(C.wfd);
    close(C.rfd);
    buf_free(&C.in);
    test_rmtree(C.profile);
    free(C.profile);
    return mx_stop(&E);
}

/* The figure the page shows for a state equals want. */
struct shown {
    const char *state;
    long want;
};
static bool state_shown(void *arg)
{
    struct shown *s = arg;
    char expr[256], want[32];
    snprintf(expr, sizeof(expr), "(document.querySelector('[data-state=%s]')||{}).textContent||''",
             s->state);
    snprintf(want, sizeof(want), "%ld", s->want);
    char *got = eval_string(expr);
    bool ok = strcmp(got, want) == 0;
    free(got);
    return ok;
}

static void test_dashboard(void **state)
{
    (void)state;
    static const char *const states[7] = {"pending",  "copied", "verified", "active",
                                          "mismatch", "failed", "deleted"};
    long status;
    char *url = xasprintf("http://127.0.0.1:%d/", E.admin);

    viewport(1280, 1000, false);
    json_decref(cdp_call(true, "Page.navigate", json_pack("{s:s}", "url", url)));
    /* it asks for the token first */
    assert_true(test_wait_until(
        eval_true, "document.getElementById('login').classList.contains('show')", 20000));
    json_decref(eval("document.getElementById('token').value = '" MX_TOKEN "';"
                     "document.getElementById('login-btn').click(); true"));
    assert_true(test_wait_until(eval_true,
                                "sessionStorage.getItem('cutover.token') === '" MX_TOKEN "' && "
                                "localStorage.length === 0 && "
                                "!document.getElementById('login').classList.contains('show')",
                                10000));

    /* the figures the API gives (or the database's, without the admin API) */
    long want[7];
    char *st = mx_admin_get(&E, "/admin/status", true, &status);
    bool admin_api = status == 200;
    if (admin_api) {
        json_t *j = json_loads(st, 0, NULL);
        for (int s = 0; s < 7; s++)
            want[s] = (long)json_integer_value(
                json_object_get(json_object_get(j, "documents"), states[s]));
        json_decref(j);
    } else {
        print_message("/admin/status answered %ld: the page is checked against the database\n",
                      status);
        mx_db_counts(&E, want);
    }
    free(st);
    assert_true(want[2] >= 5);
    for (int s = 0; s < 7; s++) {
        struct shown sh = {states[s], want[s]};
        if (!test_wait_until(state_shown, &sh, 10000))
            fail_msg("the page does not show %ld %s documents", want[s], states[s]);
    }
    assert_true(test_wait_until(eval_true,
                                "document.getElementById('ratio').textContent === '100%'", 10000));
    assert_true(
        test_wait_until(eval_true, "document.getElementById('queue').textContent === '0'", 10000));

    /* a flag changed from the page, with a reason */
    json_decref(eval("(() => { const f = document.getElementById('f-shadow'); f.value = '0.2';"
                     "f.dispatchEvent(new Event('input'));"
                     "document.getElementById('f-reason').value = 'from the dashboard test';"
                     "document.getElementById('apply').click(); return true; })()"));
    if (admin_api) {
        assert_true(test_wait_until(
            eval_true, "document.getElementById('flag-msg').textContent.startsWith('applied')",
            10000));
        char *flags = mx_admin_get(&E, "/admin/flags", true, &status);
        assert_int_equal(status, 200);
        json_t *j = json_loads(flags, 0, NULL);
        assert_true(json_real_value(json_object_get(j, "shadow_read")) == 0.2);
        json_decref(j);
        free(flags);
        PGresult *r = PQexec(E.pg, "SELECT count(*) FROM cutover.audit WHERE flag = "
                                   "'shadow_read' AND reason = 'from the dashboard test'");
        assert_string_equal(PQgetvalue(r, 0, 0), "1");
        PQclear(r);
    } else {
        /* the PATCH went out with the token (a refused token would ask for it again) */
        assert_true(test_wait_until(
            eval_true, "document.getElementById('flag-msg').textContent.startsWith('HTTP 404')",
            10000));
        assert_true(eval_true("!document.getElementById('login').classList.contains('show')"));
        print_message("no admin API: the flag change was sent, not applied\n");
    }

    /* uploads while the page refreshes: its rates (kept in the page) go up */
    for (int i = 0; i < 20 && !eval_true("Number(document.getElementById('c-proxy').dataset.max) "
                                         "> 0 && Number(document.getElementById('c-s3')"
                                         ".dataset.max) > 0");
         i++) {
        json_t *n0 = eval("Number(document.body.dataset.loaded)");
        long seen = (long)json_number_value(n0);
        json_decref(n0);
        for (int k = 0; k < 3; k++)
            assert_int_equal(mx_upload(&E, 3000), 201);
        char *next = xasprintf("Number(document.body.dataset.loaded) > %ld", seen);
        assert_true(test_wait_until(eval_true, next, 10000));
        free(next);
    }
    assert_true(eval_true("Number(document.getElementById('c-proxy').dataset.max) > 0"));
    assert_true(test_wait_until(eval_true, "Number(document.body.dataset.loaded) >= 4", 20000));
    screenshot("dashboard.png");
    viewport(390, 844, true);
    assert_true(test_wait_until(
        eval_true, "document.documentElement.scrollWidth <= window.innerWidth + 1", 10000));
    screenshot("dashboard-phone.png");
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dashboard),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
