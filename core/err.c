/*
 * Error values and allocation wrappers. err_set keeps the first message: the deepest
 * failure is usually reported first, and it is the one an operator needs.
 */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void err_set(cut_err *e, int code, const char *where, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL || e->code != CUT_OK)
        return;
    e->code = code == CUT_OK ? CUT_EINVAL : code;
    snprintf(e->where, sizeof(e->where), "%s", where ? where : "");
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

void err_clear(cut_err *e)
{
    if (e == NULL)
        return;
    e->code = CUT_OK;
    e->where[0] = '\0';
    e->msg[0] = '\0';
}

static void oom(size_t n)
{
    fprintf(stderr, "cutover: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    if (s == NULL)
        return NULL;
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    int n;
    char *p;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    p = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}
