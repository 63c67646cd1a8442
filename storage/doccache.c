/*
 * The document-state cache (see doccache.h for what it promises).
 *
 * Layout: a chained hash table (FNV-1a of the key, a power-of-two number of heads) whose
 * entries also sit on one doubly linked list in order of use, most recent first; the tail is
 * evicted when max_entries is reached. One mutex guards both: every operation is a hash, a
 * few pointer moves and at most one small copy, so the hold is short enough for event loops.
 *
 * An entry is FILLING (a miss being looked up: it answers MISS again, and carries the token
 * the fill must present), FOUND (state and S3 key) or ABSENT (a negative entry, until its
 * expiry). A notification for a cached key makes it FOUND with the announced values (or drops
 * it, for a removal), whatever it was: notifications arrive in commit order and are the
 * newest truth, so a fill whose token no longer matches is late and dropped. Notifications
 * for keys not cached are ignored: caching every change a backfill makes would evict what
 * reads use.
 *
 * The listener: its own libpq connection, LISTEN cutover_documents, then poll() on the
 * connection's socket and an eventfd that stop writes. On a lost connection the cache stops
 * being trusted at once; on each (re)connection LISTEN is issued first, then every entry is
 * dropped and the cache trusted again, so nothing cached before the gap survives it.
 */
#include "storage/doccache.h"

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

enum ent_kind { ENT_FILLING, ENT_FOUND, ENT_ABSENT };

struct ent {
    char *key;
    char *s3_key; /* FOUND only */
    uint32_t hash;
    enum ent_kind kind;
    enum doc_state state;
    uint64_t fill;       /* FILLING: the token */
    uint64_t expires_us; /* ABSENT */
    bool once;           /* doccache_once() said true */
    struct ent *hnext, *prev, *next;
};

struct doccache {
    char *url;
    size_t max_entries;
    uint64_t negative_ttl_us;
    unsigned retry_ms;

    pthread_mutex_t mu;
    struct ent **heads;
    size_t nheads; /* power of two */
    size_t n;
    struct ent *mru, *lru;
    uint64_t next_fill;
    atomic_bool trusted;
    struct doccache_stats st;

    int stopfd;
    pthread_t thread;
};

static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

/* ---- the table, under mu -------------------------------------------------------------------- */

static struct ent *find(doccache *c, const char *key, size_t klen, uint32_t h)
{
    for (struct ent *e = c->heads[h & (c->nheads - 1)]; e; e = e->hnext)
        if (e->hash == h && strncmp(e->key, key, klen) == 0 && e->key[klen] == 0)
            return e;
    return NULL;
}

static void lru_unlink(doccache *c, struct ent *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->mru = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->lru = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(doccache *c, struct ent *e)
{
    e->next = c->mru;
    e->prev = NULL;
    if (c->mru)
        c->mru->prev = e;
    c->mru = e;
    if (!c->lru)
        c->lru = e;
}

static void drop(doccache *c, struct ent *e)
{
    struct ent **pp = &c->heads[e->hash & (c->nheads - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    c->n--;
    free(e->key);
    free(e->s3_key);
    free(e);
}

static void flush_locked(doccache *c)
{
    while (c->mru)
        drop(c, c->mru);
    c->st.flushes++;
}

static struct ent *insert(doccache *c, const char *key, size_t klen, uint32_t h)
{
    struct ent *e;
    if (c->n >= c->max_entries && c->lru) {
        drop(c, c->lru);
        c->st.evictions++;
    }
    e = xcalloc(1, sizeof(*e));
    e->key = xmalloc(klen + 1);
    memcpy(e->key, key, klen);
    e->key[klen] = 0;
    e->hash = h;
    e->hnext = c->heads[h & (c->nheads - 1)];
    c->heads[h & (c->nheads - 1)] = e;
    lru_front(c, e);
    c->n++;
    return e;
}

static void set_found(struct ent *e, enum doc_state state, const char *s3_key, size_t slen)
{
    e->kind = ENT_FOUND;
    e->state = state;
    e->once = false;
    free(e->s3_key);
    e->s3_key = xmalloc(slen + 1);
    memcpy(e->s3_key, s3_key, slen);
    e->s3_key[slen] = 0;
}

/* ---- lookups -------------------------------------------------------------------------------- */

enum doccache_answer doccache_lookup(doccache *c, const char *key, enum doc_state *state,
                                     char *s3_key, size_t s3_len, uint64_t *fill)
{
    size_t klen = strlen(key);
    uint32_t h = fnv1a(key, klen);
    enum doccache_answer a;
    struct ent *e;

    if (!atomic_load(&c->trusted)) {
        pthread_mutex_lock(&c->mu);
        c->st.untrusted++;
        pthread_mutex_unlock(&c->mu);
        return DOCCACHE_UNTRUSTED;
    }
    pthread_mutex_lock(&c->mu);
    e = find(c, key, klen, h);
    if (e && e->kind == ENT_ABSENT && now_us() >= e->expires_us) {
        drop(c, e);
        e = NULL;
    }
    if (e && e->kind == ENT_FOUND && strlen(e->s3_key) < s3_len) {
        *state = e->state;
        memcpy(s3_key, e->s3_key, strlen(e->s3_key) + 1);
        a = DOCCACHE_FOUND;
        c->st.hits++;
    } else if (e && e->kind == ENT_ABSENT) {
        a = DOCCACHE_ABSENT;
        c->st.hits++;
    } else {
        if (!e)
            e = insert(c, key, klen, h);
        e->kind = ENT_FILLING;
        e->fill = ++c->next_fill;
        *fill = e->fill;
        a = DOCCACHE_MISS;
        c->st.misses++;
    }
    lru_unlink(c, e);
    lru_front(c, e);
    pthread_mutex_unlock(&c->mu);
    return a;
}

void doccache_fill(doccache *c, const char *key, uint64_t fill, bool found, enum doc_state state,
                   const char *s3_key)
{
    size_t klen = strlen(key);
    struct ent *e;

    pthread_mutex_lock(&c->mu);
    e = find(c, key, klen, fnv1a(key, klen));
    if (!e || e->kind != ENT_FILLING || e->fill != fill || !atomic_load(&c->trusted)) {
        c->st.fills_late++;
    } else if (found) {
        set_found(e, state, s3_key, strlen(s3_key));
        c->st.fills++;
    } else {
        e->kind = ENT_ABSENT;
        e->expires_us = now_us() + c->negative_ttl_us;
        c->st.fills++;
    }
    pthread_mutex_unlock(&c->mu);
}

void doccache_note(doccache *c, const char *key, enum doc_state from, enum doc_state to)
{
    size_t klen = strlen(key);
    struct ent *e;

    pthread_mutex_lock(&c->mu);
    e = find(c, key, klen, fnv1a(key, klen));
    if (e && e->kind == ENT_FOUND && e->state == from)
        e->state = to;
    pthread_mutex_unlock(&c->mu);
}

bool doccache_once(doccache *c, const char *key)
{
    size_t klen = strlen(key);
    struct ent *e;
    bool first = false;

    pthread_mutex_lock(&c->mu);
    e = find(c, key, klen, fnv1a(key, klen));
    if (e && e->kind == ENT_FOUND && !e->once)
        first = e->once = true;
    pthread_mutex_unlock(&c->mu);
    return first;
}

bool doccache_trusted(doccache *c)
{
    return atomic_load(&c->trusted);
}

void doccache_stats_get(doccache *c, struct doccache_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    out->entries = c->n;
    out->trusted = atomic_load(&c->trusted);
    pthread_mutex_unlock(&c->mu);
}

/* ---- notifications -------------------------------------------------------------------------- */

/* Applies one payload (see migration 4): "<state> <n> <key><s3_key>", "- <n> <key>" or "*".
 * A payload that does not parse drops everything: better a few misses than a stale entry. */
static void apply(doccache *c, const char *p)
{
    const char *sp = strchr(p, ' '), *key;
    char word[16], *end;
    unsigned long klen;
    int state = -1;
    struct ent *e;

    pthread_mutex_lock(&c->mu);
    c->st.notifications++;
    if (!sp || (size_t)(sp - p) >= sizeof(word))
        goto flush;
    memcpy(word, p, (size_t)(sp - p));
    word[sp - p] = 0;
    if (strcmp(word, "-") != 0 && (state = doc_state_parse(word)) < 0)
        goto flush;
    klen = strtoul(sp + 1, &end, 10);
    if (*end != ' ' || strlen(end + 1) < klen)
        goto flush;
    key = end + 1;
    e = find(c, key, klen, fnv1a(key, klen));
    if (!e)
        goto out;
    if (state < 0)
        drop(c, e);
    else
        set_found(e, (enum doc_state)state, key + klen, strlen(key + klen));
    goto out;
flush:
    flush_locked(c);
out:
    pthread_mutex_unlock(&c->mu);
}

/* ---- the listener --------------------------------------------------------------------------- */

static bool stopping(doccache *c, int wait_ms)
{
    struct pollfd pf = {.fd = c->stopfd, .events = POLLIN};
    return poll(&pf, 1, wait_ms) > 0;
}

static void untrust(doccache *c)
{
    atomic_store(&c->trusted, false);
    pthread_mutex_lock(&c->mu);
    flush_locked(c);
    pthread_mutex_unlock(&c->mu);
}

static PGconn *listen_connect(doccache *c)
{
    PGconn *pc = PQconnectdb(c->url);
    PGresult *r;

    if (PQstatus(pc) != CONNECTION_OK) {
        PQfinish(pc);
        return NULL;
    }
    r = PQexec(pc, "LISTEN cutover_documents");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        PQclear(r);
        PQfinish(pc);
        return NULL;
    }
    PQclear(r);
    PQsetnonblocking(pc, 1);
    /* listening: from now on no change is missed; what was cached before may be stale */
    pthread_mutex_lock(&c->mu);
    flush_locked(c);
    pthread_mutex_unlock(&c->mu);
    atomic_store(&c->trusted, true);
    return pc;
}

static void *listener_main(void *arg)
{
    doccache *c = arg;
    PGconn *pc = NULL;
    bool was_up = false;
    uint64_t last_log = 0;

    thread_setup("doccache", false);
    for (;;) {
        if (!pc) {
            pc = listen_connect(c);
            if (!pc) {
                if (now_us() - last_log > 30000000u) {
                    last_log = now_us();
                    log_msgf(LOG_WARN, "doccache",
                             "document states cannot be confirmed (no listening connection): "
                             "reads keep the app's answers");
                }
                if (stopping(c, (int)c->retry_ms))
                    break;
                continue;
            }
            if (was_up)
                log_msgf(LOG_INFO, "doccache", "listening again; the cache starts empty");
            was_up = true;
        }
        struct pollfd pf[2] = {{.fd = c->stopfd, .events = POLLIN},
                               {.fd = PQsocket(pc), .events = POLLIN}};
        if (poll(pf, 2, 1000) < 0)
            continue;
        if (pf[0].revents)
            break;
        if (pf[1].revents || PQstatus(pc) != CONNECTION_OK) {
            PGnotify *nf;
            if (!PQconsumeInput(pc) || PQstatus(pc) != CONNECTION_OK) {
                untrust(c);
                log_msgf(LOG_WARN, "doccache",
                         "the listening connection was lost: reads keep the app's answers "
                         "until it is back");
                PQfinish(pc);
                pc = NULL;
                continue;
            }
            while ((nf = PQnotifies(pc)) != NULL) {
                apply(c, nf->extra);
                PQfreemem(nf);
            }
        }
    }
    atomic_store(&c->trusted, false);
    PQfinish(pc);
    return NULL;
}

doccache *doccache_start(const struct doccache_opts *o, cut_err *err)
{
    doccache *c = xcalloc(1, sizeof(*c));

    c->url = xstrdup(o->database_url);
    c->max_entries = o->max_entries ? o->max_entries : 100000;
    c->negative_ttl_us = (uint64_t)(o->negative_ttl_ms ? o->negative_ttl_ms : 2000) * 1000u;
    c->retry_ms = o->retry_ms ? o->retry_ms : 500;
    for (c->nheads = 1024; c->nheads < c->max_entries && c->nheads < (1u << 24);)
        c->nheads *= 2;
    c->heads = xcalloc(c->nheads, sizeof(*c->heads));
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->trusted, false);
    c->stopfd = eventfd(0, EFD_CLOEXEC);
    if (c->stopfd < 0 || pthread_create(&c->thread, NULL, listener_main, c) != 0) {
        err_set(err, CUT_EIO, "doccache", "cannot start the document cache's listener");
        if (c->stopfd >= 0)
            close(c->stopfd);
        c->stopfd = -1;
        doccache_free(c);
        return NULL;
    }
    return c;
}

void doccache_free(doccache *c)
{
    if (!c)
        return;
    if (c->stopfd >= 0) {
        uint64_t one = 1;
        if (write(c->stopfd, &one, sizeof(one)) < 0) {
            /* an eventfd write does not fail here; the join below would wait */
        }
        pthread_join(c->thread, NULL);
        close(c->stopfd);
    }
    pthread_mutex_lock(&c->mu);
    while (c->mru)
        drop(c, c->mru);
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_destroy(&c->mu);
    free(c->heads);
    free(c->url);
    free(c);
}
