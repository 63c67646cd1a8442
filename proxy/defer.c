/*
 * defer: a small pool of worker threads fed by a bounded queue, so that request handling
 * can hand off work (recording an upload, a shadow fetch) without waiting for it. Posting
 * never blocks: a full queue refuses the job and the caller decides what to do.
 */
#include "proxy/proxy_int.h"

#include <stdlib.h>

struct job {
    void (*fn)(void *);
    void *arg;
    struct job *next;
};

struct px_defer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail;
    size_t n, max;
    bool stop;
    int nthreads;
    pthread_t threads[8];
};

static void *worker(void *arg)
{
    struct px_defer *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->head && !d->stop)
            pthread_cond_wait(&d->cv, &d->mu);
        if (!d->head)
            break;
        struct job *j = d->head;
        d->head = j->next;
        if (!d->head)
            d->tail = NULL;
        d->n--;
        pthread_mutex_unlock(&d->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&d->mu);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

struct px_defer *px_defer_new(int threads, size_t queue_max)
{
    struct px_defer *d = xcalloc(1, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->max = queue_max;
    if (threads > 8)
        threads = 8;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&d->threads[d->nthreads], NULL, worker, d) == 0)
            d->nthreads++;
    return d;
}

void px_defer_free(struct px_defer *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < d->nthreads; i++)
        pthread_join(d->threads[i], NULL);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

bool proxy_defer(proxy *px, void (*fn)(void *arg), void *arg)
{
    struct px_defer *d = px->defer;
    bool ok = false;
    if (!d || atomic_load(&px->stopping))
        return false;
    pthread_mutex_lock(&d->mu);
    if (!d->stop && d->n < d->max && d->nthreads > 0) {
        struct job *j = xmalloc(sizeof(*j));
        j->fn = fn;
        j->arg = arg;
        j->next = NULL;
        if (d->tail)
            d->tail->next = j;
        else
            d->head = j;
        d->tail = j;
        d->n++;
        pthread_cond_signal(&d->cv);
        ok = true;
    }
    pthread_mutex_unlock(&d->mu);
    return ok;
}
