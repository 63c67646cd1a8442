/*
 * What the transfer engine's tests share: the MD5 and SHA-256 of a buffer and their hex, a
 * GET sink that hashes what S3 sends, and the completions of many transfers gathered from the
 * engine's thread (each callback fills its slot under the gather's mutex; the test waits with
 * test_wait_until(gather_complete, g, ...) and then reads the slots). Header-only: each test
 * is its own executable.
 */
#ifndef CUTOVER_TESTS_XFER_GATHER_H
#define CUTOVER_TESTS_XFER_GATHER_H

#include "core/core.h"
#include "storage/xfer.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static inline void hashes(const void *p, size_t n, unsigned char md5[16], unsigned char sha[32])
{
    unsigned int l;

    EVP_Digest(p, n, md5, &l, EVP_md5(), NULL);
    EVP_Digest(p, n, sha, &l, EVP_sha256(), NULL);
}

static inline void hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

/* An s3_get() sink: the SHA-256 and the count of the bytes received. */
struct md_sink {
    EVP_MD_CTX *sha;
    uint64_t n;
};

static inline int sha_sink(void *arg, const void *p, size_t n)
{
    struct md_sink *m = arg;

    EVP_DigestUpdate(m->sha, p, n);
    m->n += n;
    return 0;
}

#define GATHER_MAX 200

struct gather_slot {
    bool done;
    int code;
    char msg[512];
    struct xfer_outcome o;
    pthread_t th; /* the thread the completion ran on */
};

struct gather {
    pthread_mutex_t mu;
    int done;
    int want;
    struct gather_slot s[GATHER_MAX];
};

/* A transfer's callback argument: its gather and its slot. */
struct slot_ref {
    struct gather *g;
    int i;
};

static inline void gather_done(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    struct slot_ref *r = arg;
    struct gather *g = r->g;

    pthread_mutex_lock(&g->mu);
    g->s[r->i].done = true;
    g->s[r->i].code = err->code;
    snprintf(g->s[r->i].msg, sizeof(g->s[r->i].msg), "%s", err->msg);
    g->s[r->i].o = *o;
    g->s[r->i].th = pthread_self();
    g->done++;
    pthread_mutex_unlock(&g->mu);
}

static inline bool gather_complete(void *arg)
{
    struct gather *g = arg;
    bool d;

    pthread_mutex_lock(&g->mu);
    d = g->done == g->want;
    pthread_mutex_unlock(&g->mu);
    return d;
}

/* Empties every slot; `want` completions (<= GATHER_MAX) make the gather complete. */
static inline void gather_reset(struct gather *g, int want)
{
    pthread_mutex_lock(&g->mu);
    g->done = 0;
    g->want = want;
    memset(g->s, 0, sizeof(g->s));
    pthread_mutex_unlock(&g->mu);
}

/* A new gather waiting for `want` completions; free with gather_free(). */
static inline struct gather *gather_new(int want)
{
    struct gather *g = xcalloc(1, sizeof(*g));

    pthread_mutex_init(&g->mu, NULL);
    gather_reset(g, want);
    return g;
}

static inline void gather_free(struct gather *g)
{
    pthread_mutex_destroy(&g->mu);
    free(g);
}

#endif
