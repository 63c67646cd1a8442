/*
 * fixture: the upstream application the proxy tests talk to (see fixture.h). libmicrohttpd
 * with a thread per connection keeps it simple to make an answer slow; the raw target is
 * taken from the URI log callback, as the proxy itself does, so that tests can tell the
 * raw target apart from a decoded one. Also the helpers that start and stop the proxy.
 */
#include "fixture.h"

#include "tests/testlib.h"

#include <ctype.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct fx {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    struct fx_seen last;
    int connections, started;
};

struct fx_req {
    char *target;
    bool started;
    uint64_t len, hash;
};

void fx_gen(uint64_t off, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t x = off + i;
        out[i] = (unsigned char)((x * 131u) ^ (x >> 9) ^ (x >> 17));
    }
}

uint64_t fx_hash(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    struct fx_seen *s = cls;
    size_t n = strlen(s->headers);
    (void)kind;
    char line[2048];
    snprintf(line, sizeof(line), "%s: %s\n", key, value ? value : "");
    for (char *p = line; *p && *p != ':'; p++)
        *p = (char)tolower((unsigned char)*p);
    if (n + strlen(line) < sizeof(s->headers))
        memcpy(s->headers + n, line, strlen(line) + 1);
    return MHD_YES;
}

static ssize_t gen_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    uint64_t total = *(uint64_t *)cls;
    if (pos >= total)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (max > total - pos)
        max = (size_t)(total - pos);
    fx_gen(pos, (unsigned char *)buf, max);
    return (ssize_t)max;
}

static enum MHD_Result answer(struct MHD_Connection *c, struct fx_req *r, const char *url)
{
    struct MHD_Response *resp = NULL;
    unsigned status = 200;
    char tmp[64];

    if (strncmp(url, "/status/", 8) == 0) {
        status = (unsigned)atoi(url + 8);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else if (strncmp(url, "/gen/", 5) == 0) {
        uint64_t *total = malloc(sizeof(*total));
        *total = strtoull(url + 5, NULL, 10);
        bool cl = strstr(r->target, "cl=1") != NULL;
        resp = MHD_create_response_from_callback(cl ? *total : MHD_SIZE_UNKNOWN, 64 * 1024,
                                                 gen_reader, total, free);
    } else if (strncmp(url, "/slow/", 6) == 0) {
        struct timespec ts = {0, 0};
        long ms = atol(url + 6);
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (ms % 1000) * 1000000L;
        nanosleep(&ts, NULL);
        resp = MHD_create_response_from_buffer(4, (void *)"slow", MHD_RESPMEM_PERSISTENT);
    } else if (strncmp(url, "/json", 5) == 0) {
        const char *j = "{\"url\":\"http://legacy.example/doc/1\",\"id\":7}";
        resp = MHD_create_response_from_buffer(strlen(j), (void *)j, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Content-Type", "application/json");
        MHD_add_response_header(resp, "Location", "http://legacy.example/doc/1");
    } else {
        resp = MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Set-Cookie", "a=1; Path=/");
        MHD_add_response_header(resp, "Set-Cookie", "b=2; Path=/");
        MHD_add_response_header(resp, "X-Multi", "one");
        MHD_add_response_header(resp, "X-Multi", "two");
        MHD_add_response_header(resp, "Connection", "X-Secret");
        MHD_add_response_header(resp, "X-Secret", "hidden");
        MHD_add_response_header(resp, "Keep-Alive", "timeout=5");
    }
    snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)r->len);
    MHD_add_response_header(resp, "X-Body-Len", tmp);
    snprintf(tmp, sizeof(tmp), "%016llx", (unsigned long long)r->hash);
    MHD_add_response_header(resp, "X-Body-Hash", tmp);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **req_cls)
{
    struct fx *f = cls;
    struct fx_req *r = *req_cls;
    (void)version;
    if (!r->started) {
        r->started = true;
        pthread_mutex_lock(&f->mu);
        f->started++;
        pthread_mutex_unlock(&f->mu);
        r->hash = FX_HASH_INIT;
        return MHD_YES;
    }
    if (*size) {
        r->hash = fx_hash(r->hash, data, *size);
        r->len += *size;
        *size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&f->mu);
    struct fx_seen *s = &f->last;
    int count = s->count + 1;
    memset(s, 0, sizeof(*s));
    s->count = count;
    snprintf(s->method, sizeof(s->method), "%s", method);
    snprintf(s->target, sizeof(s->target), "%s", r->target);
    MHD_get_connection_values(c, MHD_HEADER_KIND, add_header, s);
    s->body_len = r->len;
    s->body_hash = r->hash;
    pthread_mutex_unlock(&f->mu);
    return answer(c, r, url);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    struct fx_req *r = calloc(1, sizeof(*r));
    (void)cls;
    (void)c;
    r->target = strdup(uri);
    return r;
}

static void on_done(void *cls, struct MHD_Connection *c, void **req_cls,
                    enum MHD_RequestTerminationCode toe)
{
    struct fx_req *r = *req_cls;
    (void)cls;
    (void)c;
    (void)toe;
    if (r) {
        free(r->target);
        free(r);
    }
    *req_cls = NULL;
}

static void on_conn(void *cls, struct MHD_Connection *c, void **ctx,
                    enum MHD_ConnectionNotificationCode toe)
{
    struct fx *f = cls;
    (void)c;
    (void)ctx;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        pthread_mutex_lock(&f->mu);
        f->connections++;
        pthread_mutex_unlock(&f->mu);
    }
}

int fx_connections(struct fx *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->connections;
    pthread_mutex_unlock(&f->mu);
    return n;
}

int fx_started(struct fx *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->started;
    pthread_mutex_unlock(&f->mu);
    return n;
}

struct fx *fx_start(void)
{
    struct fx *f = calloc(1, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    for (int attempt = 0; attempt < 5 && !f->d; attempt++) {
        f->port = test_free_port();
        f->d = MHD_start_daemon(
            MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL,
            (uint16_t)f->port, NULL, NULL, handler, f, MHD_OPTION_URI_LOG_CALLBACK, on_uri, f,
            MHD_OPTION_NOTIFY_COMPLETED, on_done, f, MHD_OPTION_NOTIFY_CONNECTION, on_conn, f,
            MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_END);
    }
    if (!f->d) {
        free(f);
        return NULL;
    }
    return f;
}

int fx_port(const struct fx *f)
{
    return f->port;
}

void fx_stop(struct fx *f)
{
    if (!f)
        return;
    if (f->d)
        MHD_stop_daemon(f->d);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void fx_last(struct fx *f, struct fx_seen *out)
{
    pthread_mutex_lock(&f->mu);
    *out = f->last;
    pthread_mutex_unlock(&f->mu);
}

int fx_count(struct fx *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->last.count;
    pthread_mutex_unlock(&f->mu);
    return n;
}

char *fx_seen_header(const struct fx_seen *s, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = s->headers; *p;) {
        const char *eol = strchr(p, '\n');
        if (!eol)
            break;
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(eol - v));
        }
        p = eol + 1;
    }
    return NULL;
}

/* ---- running the proxy ------------------------------------------------------------------ */

bool px_run_start(struct px_run *r, const char *upstream_url, const char *extra_top,
                  const char *extra_limits)
{
    char cfg[4096], url[128], *argv[5];
    memset(r, 0, sizeof(*r));
    r->dir = test_tmpdir("proxy");
    r->port = test_free_port();
    r->admin_port = test_free_port();
    if (asprintf(&r->cfg_path, "%s/cutover.json", r->dir) < 0 ||
        asprintf(&r->log_path, "%s/proxy.log", r->dir) < 0)
        return false;
    snprintf(cfg, sizeof(cfg),
             "{\"listen\":\"127.0.0.1:%d\",\"upstream\":\"%s\","
             "\"admin\":{\"listen\":\"127.0.0.1:%d\"}%s%s%s"
             ",\"limits\":{\"shutdown_grace_s\":10%s%s}}",
             r->port, upstream_url, r->admin_port,
             extra_top && strstr(extra_top, "\"log\"") ? "" : ",\"log\":{\"level\":\"info\"}",
             extra_top ? "," : "", extra_top ? extra_top : "", extra_limits ? "," : "",
             extra_limits ? extra_limits : "");
    if (!test_write_file(r->cfg_path, cfg, strlen(cfg)))
        return false;
    argv[0] = (char *)testenv_var("CUTOVER_BIN");
    argv[1] = "proxy";
    argv[2] = "--config";
    argv[3] = r->cfg_path;
    argv[4] = NULL;
    r->pid = test_spawn(argv, NULL, r->log_path);
    if (r->pid <= 0)
        return false;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", r->admin_port);
    if (!test_wait_http(url, 10000)) {
        char *log = test_read_file(r->log_path, NULL);
        fprintf(stderr, "proxy did not start:\n%s\n", log ? log : "");
        free(log);
        return false;
    }
    return true;
}

int px_run_stop(struct px_run *r)
{
    int st = -1;
    if (r->pid > 0)
        st = test_stop(r->pid, SIGTERM, 15000);
    r->pid = 0;
    return st;
}

void px_run_free(struct px_run *r)
{
    if (r->pid > 0)
        px_run_stop(r);
    test_rmtree(r->dir);
    free(r->dir);
    free(r->cfg_path);
    free(r->log_path);
    r->dir = r->cfg_path = r->log_path = NULL;
}

int px_run_log_count(const struct px_run *r, const char *needle)
{
    char *log = test_read_file(r->log_path, NULL);
    int n = 0;
    for (const char *p = log; p && (p = strstr(p, needle)); p++)
        n++;
    free(log);
    return n;
}
