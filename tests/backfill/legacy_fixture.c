/*
 * legacy_fixture: see legacy_fixture.h. Per-key counts in a chained hash table under one
 * mutex; hits in a growing array; a held answer waits on a condition variable that
 * legacy_fixture_release() and legacy_fixture_free() signal (30 s at most), never a sleep.
 */
#include "tests/backfill/legacy_fixture.h"
#include "core/core.h"
#include "tests/testlib.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBUCKETS 65536

struct count {
    struct count *next;
    int gets;
    unsigned char *data; /* legacy_fixture_put(), or NULL */
    size_t len;
    char key[];
};

struct legacy_fixture {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool released, stopping;
    int held;
    long total;
    struct count *tab[NBUCKETS];
    struct legacy_fixture_hit *hits;
    size_t nhits, caphits;
    /* throttle */
    bool thr_armed;
    uint64_t thr_from_us, thr_until_us;
    int thr_window_ms, thr_retry_after;
};

struct body {
    char key[512];
    uint64_t size;
    unsigned char *data; /* a snapshot of a put body, or NULL */
};

static void body_free(void *p)
{
    struct body *b = p;
    free(b->data);
    free(b);
}

void legacy_fixture_bytes(const char *key, uint64_t off, void *out, size_t n)
{
    test_key_bytes(key, off, out, n);
}

static const char *name_of(const char *key)
{
    const char *s = strrchr(key, '/');
    return s ? s + 1 : key;
}

uint64_t legacy_fixture_size(const char *key)
{
    const char *n = name_of(key), *dash;
    if (strncmp(n, "ok-", 3) == 0)
        return strtoull(n + 3, NULL, 10);
    if (strncmp(n, "hold-", 5) == 0)
        return strtoull(n + 5, NULL, 10);
    if (strncmp(n, "e500x", 5) == 0 && (dash = strchr(n, '-')) != NULL)
        return strtoull(dash + 1, NULL, 10);
    return 0;
}

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct body *b = cls;
    size_t n;
    if (pos >= b->size)
        return MHD_CONTENT_READER_END_OF_STREAM;
    n = b->size - pos < max ? (size_t)(b->size - pos) : max;
    if (b->data)
        memcpy(buf, b->data + pos, n);
    else
        legacy_fixture_bytes(b->key, pos, buf, n);
    return (ssize_t)n;
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status, int retry_after)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    char ra[32];
    if (retry_after >= 0) {
        snprintf(ra, sizeof(ra), "%d", retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static struct count *entry(legacy_fixture *f, const char *key)
{
    uint32_t h = test_key_hash(key) % NBUCKETS;
    struct count *c;
    for (c = f->tab[h]; c; c = c->next)
        if (strcmp(c->key, key) == 0)
            break;
    if (!c) {
        size_t n = strlen(key) + 1;
        c = xcalloc(1, sizeof(*c) + n);
        memcpy(c->key, key, n);
        c->next = f->tab[h];
        f->tab[h] = c;
    }
    return c;
}

static void hit(legacy_fixture *f, uint64_t at, int status, int nth)
{
    if (f->nhits == f->caphits) {
        f->caphits = f->caphits ? 2 * f->caphits : 4096;
        f->hits = xrealloc(f->hits, f->caphits * sizeof(*f->hits));
    }
    f->hits[f->nhits++] = (struct legacy_fixture_hit){at, status, nth};
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **ctx)
{
    legacy_fixture *f = cls;
    const char *key, *name;
    int before, status = 200, retry_after = -1;
    uint64_t now = now_us();
    (void)version;
    (void)data;
    (void)size;

    if (*ctx == NULL) {
        *ctx = (void *)1;
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 || strncmp(url, "/raw/", 5) != 0)
        return answer(conn, 404, -1);
    key = url + 5; /* decoded by MHD */
    name = name_of(key);
    pthread_mutex_lock(&f->mu);
    f->total++;
    struct count *c = entry(f, key);
    before = c->gets++;
    struct body *b = xcalloc(1, sizeof(*b));
    snprintf(b->key, sizeof(b->key), "%s", key);
    b->size = legacy_fixture_size(key);
    if (c->data) {
        b->data = xmalloc(c->len ? c->len : 1);
        memcpy(b->data, c->data, c->len);
        b->size = c->len;
    }
    if (f->thr_armed) {
        f->thr_armed = false;
        f->thr_from_us = now;
        f->thr_until_us = now + (uint64_t)f->thr_window_ms * 1000;
    }
    if (now >= f->thr_from_us && now < f->thr_until_us) {
        status = 429;
        retry_after = f->thr_retry_after;
    } else if (strncmp(name, "nf-", 3) == 0) {
        status = 404;
    } else if (strncmp(name, "e500-", 5) == 0) {
        status = 500;
    } else if (strncmp(name, "e500x", 5) == 0 && before < atoi(name + 5)) {
        status = 500;
    } else if (strncmp(name, "ok-", 3) != 0 && strncmp(name, "hold-", 5) != 0 &&
               strncmp(name, "e500x", 5) != 0) {
        status = 404;
    }
    hit(f, now, status, before + 1);
    if (status == 200 && strncmp(name, "hold-", 5) == 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 30;
        f->held++;
        while (!f->released && !f->stopping)
            if (pthread_cond_timedwait(&f->cv, &f->mu, &until) != 0)
                break;
        f->held--;
    }
    pthread_mutex_unlock(&f->mu);
    if (status != 200) {
        body_free(b);
        return answer(conn, (unsigned)status, retry_after);
    }
    struct MHD_Response *r =
        MHD_create_response_from_callback(b->size, 64 * 1024, reader, b, body_free);
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

legacy_fixture *legacy_fixture_start(void)
{
    legacy_fixture *f = xcalloc(1, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    for (int tries = 0; tries < 20 && !f->d; tries++) {
        f->port = test_free_port();
        f->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                    MHD_USE_ERROR_LOG,
                                (uint16_t)f->port, NULL, NULL, handler, f,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_END);
    }
    if (!f->d) {
        fprintf(stderr, "legacy_fixture: cannot start\n");
        exit(1);
    }
    return f;
}

void legacy_fixture_free(legacy_fixture *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stopping = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    MHD_stop_daemon(f->d);
    for (size_t i = 0; i < NBUCKETS; i++)
        while (f->tab[i]) {
            struct count *c = f->tab[i];
            f->tab[i] = c->next;
            free(c->data);
            free(c);
        }
    free(f->hits);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

int legacy_fixture_port(const legacy_fixture *f)
{
    return f->port;
}

int legacy_fixture_gets(legacy_fixture *f, const char *key)
{
    uint32_t h = test_key_hash(key) % NBUCKETS;
    int n = 0;
    pthread_mutex_lock(&f->mu);
    for (struct count *c = f->tab[h]; c; c = c->next)
        if (strcmp(c->key, key) == 0)
            n = c->gets;
    pthread_mutex_unlock(&f->mu);
    return n;
}

long legacy_fixture_total(legacy_fixture *f)
{
    pthread_mutex_lock(&f->mu);
    long n = f->total;
    pthread_mutex_unlock(&f->mu);
    return n;
}

void legacy_fixture_throttle(legacy_fixture *f, int window_ms, int retry_after_s)
{
    pthread_mutex_lock(&f->mu);
    f->thr_armed = true;
    f->thr_window_ms = window_ms;
    f->thr_retry_after = retry_after_s;
    pthread_mutex_unlock(&f->mu);
}

size_t legacy_fixture_hits(legacy_fixture *f, struct legacy_fixture_hit *out, size_t max)
{
    pthread_mutex_lock(&f->mu);
    size_t n = f->nhits < max ? f->nhits : max;
    memcpy(out, f->hits, n * sizeof(*out));
    pthread_mutex_unlock(&f->mu);
    return n;
}

int legacy_fixture_held(legacy_fixture *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->held;
    pthread_mutex_unlock(&f->mu);
    return n;
}

void legacy_fixture_put(legacy_fixture *f, const char *key, const void *data, size_t len)
{
    pthread_mutex_lock(&f->mu);
    struct count *c = entry(f, key);
    free(c->data);
    c->data = xmalloc(len ? len : 1);
    memcpy(c->data, data, len);
    c->len = len;
    pthread_mutex_unlock(&f->mu);
}

void legacy_fixture_release(legacy_fixture *f)
{
    pthread_mutex_lock(&f->mu);
    f->released = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}
