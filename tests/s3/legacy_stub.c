/*
 * legacy_stub: see legacy_stub.h. Thread per connection, so a "slow" answer that waits
 * holds only its own connection; it waits on a condition variable that legacy_stub_free()
 * signals (or 30 s), never a sleep.
 */
#include "tests/s3/legacy_stub.h"
#include "core/core.h"
#include "tests/testlib.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct legacy_stub {
    struct MHD_Daemon *d;
    int port;
    char *api_key;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    int requests;
};

struct body {
    char key[256];
    uint64_t size; /* bytes to send */
};

void legacy_stub_bytes(const char *key, uint64_t off, void *out, size_t n)
{
    test_key_bytes(key, off, out, n);
}

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct body *b = cls;
    size_t n;

    if (pos >= b->size)
        return MHD_CONTENT_READER_END_WITH_ERROR; /* "short": the rest never comes */
    n = b->size - pos < max ? (size_t)(b->size - pos) : max;
    legacy_stub_bytes(b->key, pos, buf, n);
    return (ssize_t)n;
}

static ssize_t reader_chunked(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct body *b = cls;
    size_t n;

    if (pos >= b->size)
        return MHD_CONTENT_READER_END_OF_STREAM;
    n = b->size - pos < max ? (size_t)(b->size - pos) : max;
    legacy_stub_bytes(b->key, pos, buf, n);
    return (ssize_t)n;
}

static enum MHD_Result answer_status(struct MHD_Connection *conn, unsigned status)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);

    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **ctx)
{
    struct legacy_stub *s = cls;
    const char *key, *have;
    struct body *b;
    struct MHD_Response *r;
    enum MHD_Result ret;
    uint64_t announce;

    (void)version;
    (void)data;
    (void)size;
    (void)method;
    if (*ctx == NULL) {
        *ctx = (void *)1;
        return MHD_YES;
    }
    pthread_mutex_lock(&s->mu);
    s->requests++;
    pthread_mutex_unlock(&s->mu);
    have = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Api-Key");
    if (have == NULL || strcmp(have, s->api_key) != 0)
        return answer_status(conn, 401);
    if (strncmp(url, "/raw/", 5) != 0)
        return answer_status(conn, 404);
    key = url + 5; /* MHD has decoded %XX */
    if (strncmp(key, "missing", 7) == 0)
        return answer_status(conn, 404);
    if (strncmp(key, "broken", 6) == 0)
        return answer_status(conn, 500);
    if (strncmp(key, "slow", 4) == 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 30;
        pthread_mutex_lock(&s->mu);
        while (!s->stopping)
            if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != 0)
                break;
        pthread_mutex_unlock(&s->mu);
        return answer_status(conn, 200);
    }
    b = xcalloc(1, sizeof(*b));
    snprintf(b->key, sizeof(b->key), "%s", key);
    if (strncmp(key, "huge", 4) == 0) {
        b->size = 1024;
        announce = 10ull << 30;
    } else if (strncmp(key, "short", 5) == 0) {
        b->size = 32 * 1024;
        announce = 64 * 1024;
    } else if (strncmp(key, "chunked-", 8) == 0) {
        b->size = strtoull(key + 8, NULL, 10);
        announce = MHD_SIZE_UNKNOWN;
    } else if (strncmp(key, "doc-", 4) == 0) {
        b->size = strtoull(key + 4, NULL, 10);
        announce = b->size;
    } else {
        free(b);
        return answer_status(conn, 404);
    }
    r = MHD_create_response_from_callback(
        announce, 64 * 1024, announce == MHD_SIZE_UNKNOWN ? reader_chunked : reader, b, free);
    ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

struct legacy_stub *legacy_stub_start(const char *api_key)
{
    struct legacy_stub *s = xcalloc(1, sizeof(*s));

    s->api_key = xstrdup(api_key);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, handler, s, MHD_OPTION_END);
    if (s->d == NULL) {
        fprintf(stderr, "legacy_stub: cannot start\n");
        abort();
    }
    s->port = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT)->port;
    return s;
}

void legacy_stub_free(struct legacy_stub *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    MHD_stop_daemon(s->d);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->api_key);
    free(s);
}

int legacy_stub_port(const struct legacy_stub *s)
{
    return s->port;
}

int legacy_stub_requests(struct legacy_stub *s)
{
    int n;

    pthread_mutex_lock(&s->mu);
    n = s->requests;
    pthread_mutex_unlock(&s->mu);
    return n;
}
