/*
 * test_proxy_raw: the table-driven raw-socket suite. Each row of raw_cases.txt is sent as
 * bytes to a running `cutover proxy` in front of the fixture; the test checks the status,
 * whether the connection is closed after the answer (and that nothing pipelined behind a
 * refused request is answered), and what the upstream received (or that it received
 * nothing). Row format, fields separated by " | ":
 *
 *   name | status | close|close-mhd|keep | upstream assertions | request bytes
 *
 * close-mhd: libmicrohttpd itself answered (and repeats part of its answer); only a second
 * status line counts as a failure then.
 *
 * Upstream assertions: `none`, or space-separated `method=M`, `target=T`, `body=N`,
 * `hdr:name=value` (\s for a space), `nohdr:name`. Request bytes use \r \n \t \\ \xHH,
 * {BIG:N} (N 'a' characters) and {HDRS:N} (N small header lines).
 */
#include "fixture.h"

#include "tests/testlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct rd {
    int fd;
    char buf[65536];
    size_t len;
};

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Reads more bytes with a deadline; returns bytes read, 0 on EOF, -1 on timeout/error. */
static ssize_t rd_more(struct rd *r, uint64_t deadline)
{
    for (;;) {
        uint64_t now = ms_now();
        if (now >= deadline)
            return -1;
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        int rc = poll(&p, 1, (int)(deadline - now));
        if (rc <= 0)
            continue;
        if (r->len >= sizeof(r->buf) - 1)
            return -1;
        ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return errno == ECONNRESET ? 0 : -1;
        r->len += (size_t)n;
        r->buf[r->len] = 0;
        return n;
    }
}

/* Reads one response (status line, headers, Content-Length body); returns the status, or
 * -1 (timeout or malformed), or 0 when the connection closed before any byte. */
static int read_response(struct rd *r, uint64_t deadline)
{
    char *end;
    while (!(end = strstr(r->buf, "\r\n\r\n"))) {
        ssize_t n = rd_more(r, deadline);
        if (n <= 0)
            return r->len == 0 && n == 0 ? 0 : -1;
    }
    int status = 0;
    if (sscanf(r->buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    size_t hlen = (size_t)(end - r->buf) + 4;
    size_t cl = 0;
    for (char *p = r->buf; p < end; p++)
        if ((p == r->buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0)
            cl = strtoul(p + 15, NULL, 10);
    while (r->len < hlen + cl)
        if (rd_more(r, deadline) <= 0)
            return -1;
    memmove(r->buf, r->buf + hlen + cl, r->len - hlen - cl);
    r->len -= hlen + cl;
    r->buf[r->len] = 0;
    return status;
}

static char *unescape(const char *s, size_t *outlen)
{
    size_t cap = strlen(s) + 1, len = 0;
    char *o = malloc(cap);
    for (const char *p = s; *p;) {
        char tmp[64];
        const char *add = NULL;
        size_t alen = 0;
        char *dyn = NULL;
        if (p[0] == '\\' && p[1]) {
            char c = p[1];
            p += 2;
            if (c == 'r')
                tmp[0] = '\r';
            else if (c == 'n')
                tmp[0] = '\n';
            else if (c == 't')
                tmp[0] = '\t';
            else if (c == 's')
                tmp[0] = ' ';
            else if (c == 'x') {
                unsigned v = 0;
                sscanf(p, "%2x", &v);
                tmp[0] = (char)v;
                p += 2;
            } else
                tmp[0] = c;
            add = tmp, alen = 1;
        } else if (strncmp(p, "{BIG:", 5) == 0) {
            size_t n = strtoul(p + 5, NULL, 10);
            dyn = malloc(n);
            memset(dyn, 'a', n);
            add = dyn, alen = n;
            p = strchr(p, '}') + 1;
        } else if (strncmp(p, "{HDRS:", 6) == 0) {
            size_t n = strtoul(p + 6, NULL, 10);
            dyn = malloc(n * 16 + 1);
            alen = 0;
            for (size_t i = 0; i < n; i++)
                alen += (size_t)sprintf(dyn + alen, "X-H%zu: v\r\n", i);
            add = dyn;
            p = strchr(p, '}') + 1;
        } else {
            tmp[0] = *p++;
            add = tmp, alen = 1;
        }
        if (len + alen + 1 > cap) {
            cap = (len + alen + 1) * 2;
            o = realloc(o, cap);
        }
        memcpy(o + len, add, alen);
        len += alen;
        free(dyn);
    }
    o[len] = 0;
    *outlen = len;
    return o;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false; /* the proxy may close early on an oversized request */
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool check_upstream(struct fx *f, int before, const char *spec, char *why, size_t wn)
{
    struct fx_seen s;
    fx_last(f, &s);
    if (strcmp(spec, "none") == 0) {
        if (s.count != before) {
            snprintf(why, wn, "upstream received %d request(s), last %s %s", s.count - before,
                     s.method, s.target);
            return false;
        }
        return true;
    }
    if (s.count == before) {
        snprintf(why, wn, "upstream received nothing");
        return false;
    }
    char *copy = strdup(spec), *save = NULL;
    bool ok = true;
    for (char *t = strtok_r(copy, " ", &save); t && ok; t = strtok_r(NULL, " ", &save)) {
        size_t vl;
        if (strncmp(t, "method=", 7) == 0) {
            ok = strcmp(s.method, t + 7) == 0;
        } else if (strncmp(t, "target=", 7) == 0) {
            ok = strcmp(s.target, t + 7) == 0;
        } else if (strncmp(t, "body=", 5) == 0) {
            ok = s.body_len == strtoull(t + 5, NULL, 10);
        } else if (strncmp(t, "hdr:", 4) == 0) {
            char *eq = strchr(t, '=');
            *eq = 0;
            char *want = unescape(eq + 1, &vl);
            char *got = fx_seen_header(&s, t + 4);
            ok = got && strcmp(got, want) == 0;
            if (!ok)
                snprintf(why, wn, "header %s: got '%s', want '%s'", t + 4, got ? got : "(none)",
                         want);
            free(want);
            free(got);
            *eq = '=';
            if (!ok)
                break;
        } else if (strncmp(t, "nohdr:", 6) == 0) {
            char *got = fx_seen_header(&s, t + 6);
            ok = got == NULL;
            free(got);
        }
        if (!ok && !why[0])
            snprintf(why, wn, "upstream assertion '%s' failed (saw %s %s body %llu; headers:\n%s)",
                     t, s.method, s.target, (unsigned long long)s.body_len, s.headers);
    }
    free(copy);
    return ok;
}

static bool run_case(struct fx *f, int port, char *line, int lineno)
{
    char *fields[5];
    char *p = line;
    for (int i = 0; i < 5; i++) {
        fields[i] = p;
        char *sep = i < 4 ? strstr(p, " | ") : NULL;
        if (i < 4 && !sep) {
            fprintf(stderr, "line %d: malformed row\n", lineno);
            return false;
        }
        if (sep) {
            *sep = 0;
            p = sep + 3;
        }
    }
    const char *name = fields[0];
    int want_status = atoi(fields[1]);
    bool mhd_answer = strcmp(fields[2], "close-mhd") == 0;
    bool want_close = mhd_answer || strcmp(fields[2], "close") == 0;
    char why[16384] = "";
    size_t reqlen;
    char *req = unescape(fields[4], &reqlen);
    int before = fx_count(f);
    bool ok = false;
    struct rd r = {.fd = test_connect(port)};
    if (r.fd < 0) {
        snprintf(why, sizeof(why), "cannot connect");
        goto out;
    }
    (void)send_all(r.fd, req, reqlen);
    uint64_t deadline = ms_now() + 5000;
    int st = read_response(&r, deadline);
    if (st != want_status) {
        snprintf(why, sizeof(why), "status %d, want %d (got: %.200s)", st, want_status, r.buf);
        goto out;
    }
    if (want_close) {
        ssize_t n;
        while ((n = rd_more(&r, deadline)) > 0)
            ;
        if (n < 0) {
            snprintf(why, sizeof(why), "connection not closed");
            goto out;
        }
        if (r.len && (!mhd_answer || strstr(r.buf, "HTTP/1."))) {
            snprintf(why, sizeof(why), "bytes after a refusal: %.200s", r.buf);
            goto out;
        }
    }
    if (!check_upstream(f, before, fields[3], why, sizeof(why)))
        goto out;
    if (!want_close) {
        const char *probe = "GET /status/200 HTTP/1.1\r\nHost: probe\r\n\r\n";
        send_all(r.fd, probe, strlen(probe));
        int st2 = read_response(&r, ms_now() + 5000);
        if (st2 != 200) {
            snprintf(why, sizeof(why), "connection not kept alive (probe got %d)", st2);
            goto out;
        }
    }
    ok = true;
out:
    if (r.fd >= 0)
        close(r.fd);
    printf("%s %3d %s\n", ok ? "ok  " : "FAIL", lineno, name);
    if (!ok)
        printf("     %s\n", why);
    free(req);
    return ok;
}

/* argv[1]: another table, relative to the source tree (tests/hostile/raw_cases.txt) */
int main(int argc, char **argv)
{
    char path[1024], url[128];
    const char *table = argc > 1 ? argv[1] : "tests/proxy/raw_cases.txt";
    int min_rows = argc > 1 ? 1 : 30;
    snprintf(path, sizeof(path), "%s/%s", testenv_var("CUTOVER_SOURCE_DIR"), table);
    FILE *in = fopen(path, "r");
    if (!in) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    struct fx *f = fx_start();
    if (!f)
        return 1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", fx_port(f));
    struct px_run px;
    if (!px_run_start(&px, url, NULL,
                      "\"max_body_bytes\":1000,\"max_header_bytes\":8192,\"max_headers\":50")) {
        fx_stop(f);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rows = 0, failed = 0;
    while (getline(&line, &cap, in) > 0) {
        lineno++;
        line[strcspn(line, "\n")] = 0;
        if (!line[0] || line[0] == '#')
            continue;
        rows++;
        if (!run_case(f, px.port, line, lineno))
            failed++;
    }
    free(line);
    fclose(in);
    int st = px_run_stop(&px);
    px_run_free(&px);
    fx_stop(f);
    printf("%d rows, %d failed; proxy exit status %d\n", rows, failed, st);
    if (rows < min_rows)
        printf("FAIL: fewer than %d rows\n", min_rows);
    return failed == 0 && rows >= min_rows && st == 0 ? 0 : 1;
}
