/*
 * core: the small pieces shared by every part of cutover (errors, allocation, buffers,
 * logging). Nothing here knows about HTTP, S3 or PostgreSQL.
 */
#ifndef CUTOVER_CORE_H
#define CUTOVER_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CUT_MUST_USE __attribute__((warn_unused_result))
#define CUT_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- errors -------------------------------------------------------------------------- */

enum cut_code {
    CUT_OK = 0,
    CUT_EINVAL, /* bad input: configuration, arguments, a peer's malformed data */
    CUT_EIO,    /* local file or socket trouble */
    CUT_EDB,    /* PostgreSQL */
    CUT_EHTTP,  /* an HTTP peer (upstream, legacy store) */
    CUT_ES3,    /* S3 answered with an error */
    CUT_ELIMIT, /* a ceiling was hit */
    CUT_ENOTFOUND,
    CUT_ECONFLICT,
};

/* One error value: a code, where it happened and a one-line message. The first message
 * set wins: later err_set() calls on an already-set error change nothing, so the root
 * cause is what reaches the operator. */
typedef struct cut_err {
    int code;
    char where[48];
    char msg[512];
} cut_err;

#define CUT_ERR_INIT                                                                               \
    {                                                                                              \
        0, {0},                                                                                    \
        {                                                                                          \
            0                                                                                      \
        }                                                                                          \
    }

void err_set(cut_err *e, int code, const char *where, const char *fmt, ...) CUT_PRINTF(4, 5);
void err_clear(cut_err *e);
static inline bool err_isset(const cut_err *e)
{
    return e->code != CUT_OK;
}

/* ---- allocation: a failed small allocation aborts (nothing sensible can follow) ------ */

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s); /* NULL in, NULL out */
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) CUT_PRINTF(1, 2); /* returns a new string, free() */

/* ---- growable buffer with a ceiling --------------------------------------------------- */

/* A byte buffer that never grows past `max` (0 = no ceiling other than SIZE_MAX/2).
 * data is always NUL-terminated when non-NULL. Free with buf_free(). */
struct buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
};

void buf_init(struct buf *b, size_t max);
/* Appends n bytes; returns false (buffer unchanged) when the ceiling would be passed. */
bool buf_append(struct buf *b, const void *p, size_t n) CUT_MUST_USE;
bool buf_puts(struct buf *b, const char *s) CUT_MUST_USE;
bool buf_printf(struct buf *b, const char *fmt, ...) CUT_PRINTF(2, 3) CUT_MUST_USE;
/* Appends s as the inside of a JSON string (quotes not included). */
bool buf_json_escape(struct buf *b, const char *s, size_t n) CUT_MUST_USE;
void buf_reset(struct buf *b);
void buf_free(struct buf *b);
/* Hands the bytes over: returns data (caller frees), leaves b empty. */
char *buf_steal(struct buf *b);

/* ---- logging: JSON lines on stdout ------------------------------------------------------ */

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
bool log_enabled(enum log_level lvl);
/* Parses "debug" | "info" | "warn" | "error" | "off"; returns -1 when unknown. */
int log_level_parse(const char *s);
/* Sends lines to fd (default 1, stdout). */
void log_set_fd(int fd);

/* One line: {"ts":..,"level":..,"event":..,"msg":..[,extra]}. `extra` is NULL or a
 * pre-built JSON fragment of members without braces (`"k":1,"s":"x"`). The line is written
 * with one write(2), so lines from threads never interleave. */
void log_line(enum log_level lvl, const char *event, const char *msg, const char *extra);
void log_msgf(enum log_level lvl, const char *event, const char *fmt, ...) CUT_PRINTF(3, 4);

/* ---- text ------------------------------------------------------------------------------ */

/* Value of a hexadecimal digit (either case), or -1. */
int hex_value(char c);
/* Percent-decodes s[0..n) into out (outlen bytes, NUL-terminated); '+' stays '+'. Returns the
 * decoded length, or -1 on a malformed escape or when out is too small (n + 1 suffices). */
long pct_decode(const char *s, size_t n, char *out, size_t outlen);
/* True when s[0..n) is valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). */
bool utf8_valid(const char *s, size_t n);

/* ---- small helpers ---------------------------------------------------------------------- */

/* How much lower a background thread's priority is (its nice value, added). */
#define THREAD_BACKGROUND_NICE 10
/* Names the calling thread (name may be NULL: unchanged; 15 bytes are kept), and with
 * background lowers its scheduling priority by THREAD_BACKGROUND_NICE, for work that must not
 * take a CPU from the request path when both want one (core/thread.c). */
void thread_setup(const char *name, bool background);

/* Monotonic clock in microseconds. */
uint64_t now_us(void);
/* The realtime clock ms from now, for pthread_cond_timedwait(). */
struct timespec;
void deadline_after_ms(struct timespec *ts, uint64_t ms);
/* Wall clock as ISO 8601 UTC with milliseconds into out (>= 32 bytes). */
void now_iso8601(char *out, size_t n);
/* Splits "host:port" ("[::1]:80" too); returns false when malformed. host is new, free(). */
bool parse_host_port(const char *s, char **host, int *port) CUT_MUST_USE;

#endif
