/*
 * JSON-lines logging on stdout. One helper builds every line with fixed keys
 * (ts, level, event, msg, then the caller's members) and writes it with a single write(2)
 * so that lines from several threads never interleave. Callers must never pass secrets:
 * credentials, signatures and signed query strings stay out of `msg` and `extra`.
 */
#include "core.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = LOG_INFO;
static _Atomic int g_fd = 1;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void log_set_level(enum log_level lvl)
{
    g_level = lvl;
}

enum log_level log_get_level(void)
{
    return (enum log_level)g_level;
}

bool log_enabled(enum log_level lvl)
{
    return (int)lvl >= g_level && g_level != LOG_OFF;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i <= LOG_OFF; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void log_set_fd(int fd)
{
    g_fd = fd;
}

uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void deadline_after_ms(struct timespec *ts, uint64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void now_iso8601(char *out, size_t n)
{
    struct timespec ts;
    struct tm tm;
    char base[24];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%03ldZ", base, ts.tv_nsec / 1000000L);
}

void log_line(enum log_level lvl, const char *event, const char *msg, const char *extra)
{
    char ts[40];
    struct buf b;
    bool ok;

    if (!log_enabled(lvl))
        return;
    now_iso8601(ts, sizeof(ts));
    buf_init(&b, 1 << 20);
    ok = buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"", ts, level_names[lvl]);
    ok = ok && buf_json_escape(&b, event, strlen(event)) && buf_puts(&b, "\"");
    if (msg) {
        ok = ok && buf_puts(&b, ",\"msg\":\"") && buf_json_escape(&b, msg, strlen(msg)) &&
             buf_puts(&b, "\"");
    }
    if (extra && *extra)
        ok = ok && buf_puts(&b, ",") && buf_puts(&b, extra);
    ok = ok && buf_puts(&b, "}\n");
    if (ok) {
        size_t off = 0;
        while (off < b.len) {
            ssize_t w = write(g_fd, b.data + off, b.len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    }
    buf_free(&b);
}

void log_msgf(enum log_level lvl, const char *event, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!log_enabled(lvl))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_line(lvl, event, msg, NULL);
}

bool parse_host_port(const char *s, char **host, int *port)
{
    const char *colon;
    char *end;
    long p;

    if (s == NULL || *s == '\0')
        return false;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return false;
        colon = rb + 1;
        *host = xstrndup(s + 1, (size_t)(rb - s - 1));
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || colon == s)
            return false;
        *host = xstrndup(s, (size_t)(colon - s));
    }
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno || *end != '\0' || end == colon + 1 || p < 0 || p > 65535) {
        free(*host);
        *host = NULL;
        return false;
    }
    *port = (int)p;
    return true;
}
