/*
 * testlib: process control, waiting with deadlines, one-shot HTTP and the services file.
 * Everything aborts the test with a message on setup failures, so a test body only asserts
 * what it is about.
 */
#include "tests/testlib.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "testlib: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

static char *env_text;
/* values handed out, kept reachable until exit */
static struct {
    char *key;
    char *value;
} env_cache[64];
static size_t env_ncache;

const char *testenv(const char *key)
{
    const char *file = getenv("CUTOVER_TEST_ENV");
    size_t klen = strlen(key);

    for (size_t i = 0; i < env_ncache; i++)
        if (strcmp(env_cache[i].key, key) == 0)
            return env_cache[i].value;
    if (env_text == NULL) {
        if (file == NULL)
            die("CUTOVER_TEST_ENV is not set (run through ctest)");
        env_text = test_read_file(file, NULL);
        if (env_text == NULL)
            die("cannot read %s: are the test services started?", file);
    }
    for (const char *p = env_text; *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            size_t vlen = len - klen - 1;
            char *v;
            if (env_ncache == sizeof(env_cache) / sizeof(env_cache[0]))
                die("too many keys read from %s", file);
            v = malloc(vlen + 1);
            memcpy(v, p + klen + 1, vlen);
            v[vlen] = '\0';
            env_cache[env_ncache].key = strdup(key);
            env_cache[env_ncache++].value = v;
            return v;
        }
        p += len + (eol ? 1 : 0);
    }
    die("key %s missing from %s", key, file);
    return NULL;
}

const char *testenv_var(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        die("environment variable %s is not set (run through ctest)", name);
    return v;
}

char *test_fresh_db(const char *tag)
{
    static int counter;
    char name[128], sql[256];
    const char *url = testenv("PG_URL");
    PGconn *c = PQconnectdb(url);
    PGresult *r;
    char *out, *slash;

    if (PQstatus(c) != CONNECTION_OK)
        die("cannot connect to %s: %s", url, PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    snprintf(name, sizeof(name), "t_%s_%d_%d", tag, (int)getpid(), ++counter);
    for (char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            *p = '_';
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
    PQclear(PQexec(c, sql));
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("create database %s: %s", name, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    out = malloc(strlen(url) + strlen(name) + 2);
    strcpy(out, url);
    slash = strrchr(out, '/');
    if (slash == NULL || slash < out + 12)
        die("PG_URL has no database part: %s", url);
    strcpy(slash + 1, name);
    return out;
}

int test_free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    if (fd < 0)
        die("socket: %s", strerror(errno));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("bind: %s", strerror(errno));
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

int test_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

pid_t test_spawn(char *const argv[], char *const env_extra[], const char *logfile)
{
    pid_t pid = fork();

    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        /* dies with the test, even when a failed assertion skipped its test_stop() */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (logfile) {
            int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
        }
        for (size_t i = 0; env_extra && env_extra[i]; i++)
            putenv(env_extra[i]);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

int test_wait_exit(pid_t pid, int timeout_ms)
{
    uint64_t deadline;
    struct timespec ts;
    int status;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    deadline = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + (uint64_t)timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 >= deadline)
            return -1;
        usleep(10000);
    }
}

int test_stop(pid_t pid, int sig, int timeout_ms)
{
    int status;

    if (pid <= 0)
        return -1;
    kill(pid, sig);
    status = test_wait_exit(pid, timeout_ms);
    if (status == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    return status;
}

bool test_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    struct timespec ts;
    uint64_t now, deadline;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    deadline = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + (uint64_t)timeout_ms;
    for (;;) {
        if (cond(arg))
            return true;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        if (now >= deadline)
            return cond(arg);
        usleep(20000);
    }
}

static bool http_answers(void *arg)
{
    struct test_http r;
    bool ok;

    test_http("GET", (const char *)arg, NULL, NULL, 0, &r);
    ok = r.status != 0;
    test_http_free(&r);
    return ok;
}

bool test_wait_http(const char *url, int timeout_ms)
{
    return test_wait_until(http_answers, (void *)url, timeout_ms);
}

struct grow {
    char *p;
    size_t len;
};

static size_t grow_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct grow *g = ud;
    size_t n = size * nmemb;
    g->p = realloc(g->p, g->len + n + 1);
    memcpy(g->p + g->len, ptr, n);
    g->len += n;
    g->p[g->len] = '\0';
    return n;
}

static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct grow *g = ud;
    size_t n = size * nmemb;
    /* keep only the final answer's block: a status line starts a new one */
    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0)
        g->len = 0;
    return grow_cb(ptr, size, nmemb, ud);
}

int test_http(const char *method, const char *url, const char *const headers[], const void *body,
              size_t body_len, struct test_http *out)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    struct grow b = {0}, hd = {0};
    CURLcode rc;

    memset(out, 0, sizeof(*out));
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    h = curl_slist_append(h, "Expect:");
    for (size_t i = 0; headers && headers[i]; i++)
        h = curl_slist_append(h, headers[i]);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, grow_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hd);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, out->errbuf);
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    else if (out->errbuf[0] == '\0')
        snprintf(out->errbuf, sizeof(out->errbuf), "%s", curl_easy_strerror(rc));
    out->body = b.p ? b.p : strdup("");
    out->body_len = b.len;
    out->headers = hd.p ? hd.p : strdup("");
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

void test_http_free(struct test_http *r)
{
    free(r->body);
    free(r->headers);
    r->body = r->headers = NULL;
}

char *test_http_header(const struct test_http *r, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = r->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            return strndup(v, (size_t)(p + len - v));
        }
        p += len + (eol ? 2 : 0);
    }
    return NULL;
}

int test_run(const char *cmd, char **output)
{
    char *full = malloc(strlen(cmd) + 16);
    FILE *f;
    struct grow g = {0};
    char chunk[4096];
    size_t n;
    int st;

    sprintf(full, "(%s) 2>&1", cmd);
    f = popen(full, "r");
    free(full);
    if (f == NULL)
        return -1;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        grow_cb(chunk, 1, n, &g);
    st = pclose(f);
    if (output)
        *output = g.p ? g.p : strdup("");
    else
        free(g.p);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct grow g = {0};
    size_t cap = 0, n;

    if (f == NULL)
        return NULL;
    /* the buffer doubles: a realloc per piece copies a 48 MiB file ~800 times under ASan */
    for (;;) {
        if (cap - g.len < 65536 + 1) {
            cap = cap ? 2 * cap : 4 * 65536;
            g.p = realloc(g.p, cap);
            if (g.p == NULL)
                abort();
        }
        n = fread(g.p + g.len, 1, cap - g.len - 1, f);
        if (n == 0)
            break;
        g.len += n;
    }
    fclose(f);
    g.p[g.len] = '\0';
    if (len)
        *len = g.len;
    return g.p;
}

bool test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    bool ok;

    if (f == NULL)
        return false;
    ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

char *test_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path = malloc(512);

    snprintf(path, 512, "%s/cutover-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (mkdtemp(path) == NULL)
        die("mkdtemp %s: %s", path, strerror(errno));
    return path;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void test_rmtree(const char *dir)
{
    if (dir == NULL || strncmp(dir, "/", 1) != 0 || strstr(dir, "/cutover-") == NULL)
        return; /* only what test_tmpdir() made */
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

uint32_t test_key_hash(const char *key)
{
    uint32_t h = 2166136261u;
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h;
}

void test_key_bytes(const char *key, uint64_t off, void *out, size_t n)
{
    uint32_t seed = test_key_hash(key);
    unsigned char *p = out;
    for (size_t i = 0; i < n; i++) {
        uint64_t x = off + i;
        p[i] = (unsigned char)((x * 2654435761u) ^ seed ^ (x >> 9) ^ (x >> 17));
    }
}

/* ---- a cutover under test --------------------------------------------------------------- */

void test_dump_file(const char *what, const char *path)
{
    char *text = path ? test_read_file(path, NULL) : NULL;
    fprintf(stderr, "---- %s ----\n%s\n", what, text ? text : "");
    free(text);
}

void test_migrate_db(const char *config)
{
    const char *bin = testenv_var("CUTOVER_BIN");
    size_t n = strlen(bin) + strlen(config) + 64;
    char *cmd = malloc(n), *out = NULL;
    int rc;

    if (cmd == NULL)
        die("out of memory");
    snprintf(cmd, n, "'%s' migrate-db --config '%s'", bin, config);
    rc = test_run(cmd, &out);
    free(cmd);
    if (rc != 0)
        die("cutover migrate-db --config %s: exit %d: %s", config, rc, out ? out : "");
    free(out);
}

pid_t test_start_proxy(const char *config, const char *log, int admin_port)
{
    char *argv[] = {(char *)testenv_var("CUTOVER_BIN"), "proxy", "--config", (char *)config, NULL};
    char ready[64];
    pid_t pid = test_spawn(argv, NULL, log);

    snprintf(ready, sizeof(ready), "http://127.0.0.1:%d/readyz", admin_port);
    if (!test_wait_http(ready, 20000)) {
        test_stop(pid, SIGKILL, 5000);
        test_dump_file("cutover's log", log);
        die("cutover proxy --config %s: %s does not answer after 20 s", config, ready);
    }
    return pid;
}

bool test_stop_proxy(pid_t pid, const char *log)
{
    int st = test_stop(pid, SIGTERM, 30000);

    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return true;
    fprintf(stderr, "cutover proxy did not stop cleanly (status %d)\n", st);
    test_dump_file("cutover's log", log);
    return false;
}

PGconn *test_pg_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);

    if (PQstatus(c) != CONNECTION_OK)
        die("connect to the test database: %s", PQerrorMessage(c));
    return c;
}
