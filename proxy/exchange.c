/*
 * exchange: the life of one request/answer, in one place. The front end (server.c) and the
 * upstream side (upstream.c) report events; this file decides what comes next, runs the
 * features' handlers, parks and resumes, and recycles the exchange at its end. Neither
 * side frees an exchange or keeps it alive for the other: an exchange ends when the front
 * end is done with it, no transfer is attached and no wake-up is queued, and only
 * maybe_end() checks that.
 *
 *   on_uri ──► NEW ──checks fail──► REFUSED (400/431/...) ─────────────────────────┐
 *               │ checks pass: route matched, on_start, on_request                  │
 *               ├──PROXY_WAIT──► PARKED ──resume: on_request again──┐                │
 *               │                  └──deadline: next handler────────┤                │
 *               ▼◄──────────────────────────────────────────────────┘                │
 *             BODY: the request streams to the app (no app: 502 queued)              │
 *               │   on_request_body: OK │ FAIL (that handler stops) │ PAUSE (body not │
 *               │   read until the resume; deadline: as FAIL); over max_body: DRAIN   │
 *               │   then 413 ─────────────────────────────────────────────────────────┤
 *               ▼                                                                     │
 *             WAIT: the body is in, the answer is not ready                           │
 *               │ answer head ─► on_response ─PASS─► ready                            │
 *               │                   ├─WAIT─► parked; resume: on_response again;       │
 *               │                   │        deadline: as PASS for that handler       │
 *               │                   └─HOLD─► held until complete ─► on_response_body  │
 *               │                             ─PASS─► ready; ─WAIT─► parked, as above │
 *               │ (app failed before its head: 502/504 ready)                         │
 *               ▼                                                                     │
 *             ANSWERED: streaming to the client                                       │
 *               │                                                                     │
 *   client hangs up while waiting ─► GONE (the connection is closed) ─────────────────┤
 *               ▼                                                                     ▼
 *             front end done (libmicrohttpd completed the request) ─► END: handlers'
 *             on_done, observers, back to the loop's free list
 *
 * Waiting. A hook takes a ticket with proxy_exchange_wait(): the loop's slot of the
 * exchange and a generation unique in the loop. The exchange records the generation of
 * each wait it is in (one for the answer, one per handler for a body pause). A resume is a
 * message in the loop's mailbox (a mutex-guarded array, the eventfd written when it turns
 * non-empty); the loop looks the slot up and acts only when the generation is still the
 * one waited on, so a late, duplicate or foreign resume changes nothing. While a wait is
 * on, the client's socket is also in the loop's epoll set for its hang-up (a suspended
 * libmicrohttpd connection is not polled), and the exchange is on the loop's list of
 * waits, swept every PX_WAIT_SWEEP_US for deadlines. At shutdown, waits still on after the
 * grace period end and their clients are dropped. None of this runs for an exchange that
 * never waits: the pass-through path pays one test of x->any_state per hook point.
 */
#include "proxy/proxy_int.h"

#include "proxy/extract.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Exchanges kept at rest per loop; more than the requests a loop has in flight at once is
 * only memory. */
#define PX_XFREE_MAX 256
/* An answer buffer larger than this is not kept with a resting exchange. */
#define PX_OUT_KEEP (16u * 1024u)
#define PX_WAIT_SWEEP_US 20000u

/* ---- birth and death ------------------------------------------------------------------ */

struct proxy_exchange *px_ex_new(struct px_loop *l)
{
    struct proxy_exchange *x = l->xfree;
    if (x) {
        l->xfree = x->wnext;
        l->nxfree--;
        x->wnext = NULL;
    } else {
        x = xcalloc(1, sizeof(*x));
        buf_init(&x->req_headers, PX_HDRS_MAX);
        buf_init(&x->resp_headers, PX_HDRS_MAX);
        buf_init(&x->out, PX_OUT_CAP);
    }
    x->px = l->px;
    x->loop = l;
    x->resp_len = -1;
    return x;
}

static void ex_destroy(struct proxy_exchange *x)
{
    buf_free(&x->req_headers);
    buf_free(&x->resp_headers);
    buf_free(&x->out);
    free(x);
}

static void slot_release(struct px_loop *l, struct proxy_exchange *x)
{
    if (!x->slot)
        return;
    struct px_slot *s = &l->slots[x->slot - 1];
    s->x = NULL;
    s->next_free = l->slot_free;
    l->slot_free = x->slot;
    x->slot = 0;
}

static void ex_recycle(struct proxy_exchange *x)
{
    struct px_loop *l = x->loop;
    px_match_clear(&x->match);
    if (x->target != x->target_small)
        free(x->target);
    free(x->in);
    if (l->nxfree >= PX_XFREE_MAX) {
        ex_destroy(x);
        return;
    }
    /* back to the loop's free list, keeping the buffers' memory */
    struct buf rq = x->req_headers, rs = x->resp_headers, out = x->out;
    if (out.cap > PX_OUT_KEEP)
        buf_free(&out);
    buf_reset(&rq);
    buf_reset(&rs);
    buf_reset(&out);
    out.max = PX_OUT_CAP;
    memset(x, 0, sizeof(*x));
    x->req_headers = rq;
    x->resp_headers = rs;
    x->out = out;
    x->wnext = l->xfree;
    l->xfree = x;
    l->nxfree++;
}

static void ex_end(struct proxy_exchange *x)
{
    proxy *px = x->px;
    slot_release(x->loop, x);
    if (x->any_state) {
        struct proxy_outcome o = {
            .status = x->sent_status,
            .request_bytes = x->in_total,
            .response_bytes = x->out_total,
            .request_complete = x->in_eof && x->up_done && !x->up_failed,
            .upstream_ok = x->headers_done && x->up_done && !x->up_failed,
        };
        for (int i = 0; i < x->kind->n; i++)
            if (x->hstate[i] && x->kind->h[i].on_done)
                x->kind->h[i].on_done(x->kind->h[i].arg, x->hstate[i], &o);
    }
    if (px->nobservers) {
        uint64_t now = now_us();
        struct proxy_record r = {
            .route = x->matched ? x->match.route : NULL,
            .method = x->method ? x->method : "",
            .status = x->sent_status,
            .request_bytes = x->in_total,
            .response_bytes = x->out_total,
            .duration_us = now > x->t_start ? now - x->t_start : 0,
            .upstream_us = x->t_up_headers > x->t_up_start && x->t_up_start
                               ? x->t_up_headers - x->t_up_start
                               : 0,
            .refused = x->refused,
            .upstream_failed = x->up_failed && !x->refused && !x->client_gone,
            .client_gone = x->client_gone,
            .why = x->why,
        };
        for (int i = 0; i < px->nobservers; i++)
            px->observers[i].on_exchange(px->observers[i].arg, &r);
    }
    ex_recycle(x);
}

static void maybe_end(struct proxy_exchange *x)
{
    if (x->fe_gone && !x->uc && !x->wake_queued)
        ex_end(x);
}

void px_ex_why(struct proxy_exchange *x, const char *fmt, ...)
{
    if (x->why)
        return; /* the first reason wins */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->why_buf, sizeof(x->why_buf), fmt, ap);
    va_end(ap);
    x->why = x->why_buf;
}

/* ---- waking the front end ------------------------------------------------------------- */

/* Resuming a client connection costs libmicrohttpd a turn; doing it once per loop turn
 * instead of once per event lets a small answer's header and body reach the client in
 * one go. */
void px_ex_wake_later(struct proxy_exchange *x)
{
    struct px_loop *l = x->loop;
    if (x->wake_queued || x->fe_gone)
        return;
    x->wake_queued = true;
    x->wnext = l->wake;
    l->wake = x;
}

void px_ex_wake_done(struct proxy_exchange *x)
{
    x->wake_queued = false;
    px_wake_front(x);
    maybe_end(x);
}

/* ---- waits ---------------------------------------------------------------------------- */

static bool has_wait(const struct proxy_exchange *x)
{
    return x->ans_wait != HK_NONE || x->body_paused;
}

static void watch_client(struct proxy_exchange *x)
{
    int fd = px_front_fd(x);
    if (x->client_watched || fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET,
                             .data.u64 = PX_TAG_CLIENT | (uint64_t)(x->slot - 1)};
    if (epoll_ctl(x->loop->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        x->client_watched = true;
}

static void unwatch_client(struct proxy_exchange *x)
{
    if (!x->client_watched)
        return;
    x->client_watched = false;
    int fd = px_front_fd(x);
    if (fd >= 0)
        epoll_ctl(x->loop->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void link_waiting(struct proxy_exchange *x)
{
    struct px_loop *l = x->loop;
    if (!x->waiting_linked) {
        x->waiting_linked = true;
        x->wprev = NULL;
        x->wlnext = l->waiting;
        if (l->waiting)
            l->waiting->wprev = x;
        l->waiting = x;
    }
    watch_client(x);
}

/* Called whenever a wait ended: leaves the list when none is left. */
static void waits_changed(struct proxy_exchange *x)
{
    struct px_loop *l = x->loop;
    if (has_wait(x) || !x->waiting_linked)
        return;
    if (x->wprev)
        x->wprev->wlnext = x->wlnext;
    else
        l->waiting = x->wlnext;
    if (x->wlnext)
        x->wlnext->wprev = x->wprev;
    x->wprev = x->wlnext = NULL;
    x->waiting_linked = false;
    unwatch_client(x);
}

static void cancel_waits(struct proxy_exchange *x)
{
    x->ans_wait = HK_NONE;
    x->ans_gen = 0;
    x->body_paused = 0;
    waits_changed(x);
}

proxy_ticket proxy_exchange_wait(proxy_exchange *x, unsigned timeout_ms)
{
    struct px_loop *l = x->loop;
    proxy_ticket t = {0};
    if (x->in_hook == HK_NONE || x->fe_gone)
        return t;
    if (!x->slot) {
        if (!l->slot_free) {
            uint32_t n = l->nslots ? l->nslots * 2 : 64;
            l->slots = xrealloc(l->slots, n * sizeof(*l->slots));
            for (uint32_t i = n; i > l->nslots; i--) {
                l->slots[i - 1].x = NULL;
                l->slots[i - 1].next_free = l->slot_free;
                l->slot_free = i;
            }
            l->nslots = n;
        }
        x->slot = l->slot_free;
        l->slot_free = l->slots[x->slot - 1].next_free;
        l->slots[x->slot - 1].x = x;
    }
    if (timeout_ms < 1)
        timeout_ms = 1;
    if (timeout_ms > PROXY_WAIT_MAX_MS)
        timeout_ms = PROXY_WAIT_MAX_MS;
    x->prep_gen = ++l->next_gen;
    x->prep_deadline = now_us() + (uint64_t)timeout_ms * 1000u;
    t.px = x->px;
    t.loop = (uint32_t)l->idx;
    t.slot = x->slot - 1;
    t.gen = x->prep_gen;
    return t;
}

/* After hook i answered: starts the wait it asked for (wants) when it took a ticket.
 * Returns true when the exchange now waits. */
static bool begin_wait(struct proxy_exchange *x, enum px_hook at, int i, bool wants)
{
    uint64_t gen = x->prep_gen;
    x->prep_gen = 0;
    x->in_hook = HK_NONE;
    if (!wants)
        return false; /* a ticket taken without waiting is void */
    if (!gen) {
        log_line(LOG_ERROR, "hook_wait", "a hook asked to wait without a ticket; going on", NULL);
        return false;
    }
    if (at == HK_BODY) {
        x->body_paused |= 1u << i;
        x->body_gen[i] = gen;
        x->body_deadline[i] = x->prep_deadline;
    } else {
        x->ans_wait = at;
        x->ans_i = i;
        x->ans_gen = gen;
        x->ans_deadline = x->prep_deadline;
    }
    atomic_fetch_add_explicit(&x->loop->c_waits, 1, memory_order_relaxed);
    link_waiting(x);
    return true;
}

static void enter_hook(struct proxy_exchange *x, enum px_hook at, int i)
{
    x->in_hook = at;
    x->in_hook_i = i;
    x->prep_gen = 0;
}

/* ---- the hooks ---------------------------------------------------------------------- */

/* Runs on_request from handler `from` on. Returns false when one of them waits. */
static bool run_request(struct proxy_exchange *x, int from)
{
    const struct px_kind *k = x->kind;
    for (int i = from; i < k->n; i++) {
        if (!x->hstate[i] || !k->h[i].on_request)
            continue;
        enter_hook(x, HK_REQUEST, i);
        enum proxy_answer_mode m = k->h[i].on_request(k->h[i].arg, x->hstate[i], x);
        if (begin_wait(x, HK_REQUEST, i, m == PROXY_WAIT))
            return false;
    }
    return true;
}

bool px_ex_request(struct proxy_exchange *x)
{
    proxy *px = x->px;
    const struct config *cfg = px->cfg;
    if (!cfg->nroutes || (!px->have_handlers && !px->nobservers))
        return true;
    if (!px_route_match(cfg, x->method, x->target, px->have_handlers, &x->match))
        return true;
    x->matched = true;
    const struct px_kind *k = &px->kinds[x->match.route->kind];
    if (!k->n)
        return true;
    x->kind = k;
    for (int i = 0; i < k->n; i++) {
        if (k->h[i].on_start)
            x->hstate[i] = k->h[i].on_start(k->h[i].arg, x, &x->match);
        if (x->hstate[i])
            x->any_state = true;
        if (!x->hstate[i] || !k->h[i].on_request_body)
            x->body_off |= 1u << i;
    }
    if (!x->any_state)
        return true;
    return run_request(x, 0);
}

void px_ex_request_body(struct proxy_exchange *x, const char *data, size_t n)
{
    const struct px_kind *k = x->kind;
    if (!x->any_state)
        return;
    for (int i = 0; i < k->n; i++) {
        if (x->body_off & (1u << i))
            continue;
        enter_hook(x, HK_BODY, i);
        enum proxy_body_result r = k->h[i].on_request_body(k->h[i].arg, x->hstate[i], x, data, n);
        if (r == PROXY_BODY_FAIL)
            x->body_off |= 1u << i;
        begin_wait(x, HK_BODY, i, r == PROXY_BODY_PAUSE);
    }
}

static void run_response_body(struct proxy_exchange *x, int from)
{
    const struct px_kind *k = x->kind;
    for (int i = from; i < k->n; i++) {
        if (!(x->held & (1u << i)) || !k->h[i].on_response_body)
            continue;
        enter_hook(x, HK_RESPONSE_BODY, i);
        enum proxy_answer_mode m = k->h[i].on_response_body(k->h[i].arg, x->hstate[i], x, &x->out);
        if (begin_wait(x, HK_RESPONSE_BODY, i, m == PROXY_WAIT))
            return;
    }
    x->resp_len = (int64_t)x->out.len;
    x->resp_ready = true;
    px_ex_wake_later(x);
}

void px_ex_response_body(struct proxy_exchange *x)
{
    run_response_body(x, 0);
}

/* Every handler has seen the head: hold the answer, or let it go. */
static void response_decided(struct proxy_exchange *x)
{
    size_t max = x->px->cfg->limits.max_json_answer;
    bool hold = x->held && !x->head && !(x->status == 204 || x->status == 304) &&
                (x->resp_len < 0 || (uint64_t)x->resp_len <= max) && x->out.len <= max &&
                x->out_off == 0;
    if (hold && x->up_done) {
        /* the answer came whole while a handler waited */
        if (!x->up_failed) {
            x->hold = true;
            run_response_body(x, 0);
            return;
        }
    } else if (hold) {
        x->hold = true;
        x->out.max = max;
        if (x->out_paused) {
            x->out_paused = false;
            px_upstream_unpause(x);
        }
        return;
    }
    x->resp_ready = true;
    px_ex_wake_later(x);
}

static void run_response(struct proxy_exchange *x, int from)
{
    const struct px_kind *k = x->kind;
    for (int i = from; i < k->n; i++) {
        if (!x->hstate[i] || !k->h[i].on_response)
            continue;
        enter_hook(x, HK_RESPONSE, i);
        enum proxy_answer_mode m = k->h[i].on_response(k->h[i].arg, x->hstate[i], x, x->status);
        if (begin_wait(x, HK_RESPONSE, i, m == PROXY_WAIT))
            return;
        if (m == PROXY_HOLD)
            x->held |= 1u << i;
    }
    response_decided(x);
}

void px_ex_response(struct proxy_exchange *x)
{
    x->headers_done = true;
    if (!x->any_state) {
        x->resp_ready = true;
        px_ex_wake_later(x);
        return;
    }
    run_response(x, 0);
}

/* Ends the answer-side wait: the hook runs again after a resume; after a deadline the
 * next handler's turn comes. */
static void end_answer_wait(struct proxy_exchange *x, bool resumed)
{
    enum px_hook at = x->ans_wait;
    int next = resumed ? x->ans_i : x->ans_i + 1;
    x->ans_wait = HK_NONE;
    x->ans_gen = 0;
    waits_changed(x);
    switch (at) {
    case HK_REQUEST:
        if (run_request(x, next))
            px_front_request_ready(x);
        break;
    case HK_RESPONSE:
        run_response(x, next);
        break;
    case HK_RESPONSE_BODY:
        run_response_body(x, next);
        break;
    default:
        break;
    }
    /* the hooks may have queued a wake-up; this runs outside the loop's turn */
    px_upstream_flush(x->loop);
}

static void end_body_pause(struct proxy_exchange *x, int i, bool resumed)
{
    x->body_paused &= ~(1u << i);
    x->body_gen[i] = 0;
    if (!resumed)
        x->body_off |= 1u << i;
    waits_changed(x);
    if (!x->body_paused)
        px_wake_front(x);
}

static void deliver_resume(struct px_loop *l, const struct px_msg *m)
{
    struct proxy_exchange *x = m->slot < l->nslots ? l->slots[m->slot].x : NULL;
    if (x && x->ans_wait != HK_NONE && x->ans_gen == m->gen) {
        atomic_fetch_add_explicit(&l->c_resumed, 1, memory_order_relaxed);
        end_answer_wait(x, true);
        return;
    }
    if (x && x->body_paused) {
        for (int i = 0; i < PROXY_MAX_HANDLERS; i++) {
            if ((x->body_paused & (1u << i)) && x->body_gen[i] == m->gen) {
                atomic_fetch_add_explicit(&l->c_resumed, 1, memory_order_relaxed);
                end_body_pause(x, i, true);
                return;
            }
        }
    }
    atomic_fetch_add_explicit(&l->c_stale, 1, memory_order_relaxed);
}

void proxy_exchange_resume(proxy_ticket t)
{
    if (!t.px || !t.gen || t.loop >= PX_MAX_LOOPS)
        return;
    struct px_loop *l = &t.px->loops[t.loop];
    struct px_mailbox *mb = &l->mb;
    uint64_t one = 1;
    pthread_mutex_lock(&mb->mu);
    if (!mb->closed) {
        if (mb->n == mb->cap) {
            mb->cap = mb->cap ? mb->cap * 2 : 64;
            mb->v = xrealloc(mb->v, mb->cap * sizeof(*mb->v));
        }
        mb->v[mb->n++] = (struct px_msg){.slot = t.slot, .gen = t.gen};
        /* written under the lock: the loop closes its eventfd only after closing the box */
        if (mb->n == 1 && write(l->evfd, &one, sizeof(one)) < 0) {
            /* the counter cannot overflow here; nothing else can fail */
        }
    }
    pthread_mutex_unlock(&mb->mu);
}

static void mailbox_drain(struct px_loop *l)
{
    struct px_mailbox *mb = &l->mb;
    pthread_mutex_lock(&mb->mu);
    struct px_msg *v = mb->v;
    size_t n = mb->n, cap = mb->cap;
    mb->v = l->mb_spare;
    mb->cap = l->mb_spare_cap;
    mb->n = 0;
    pthread_mutex_unlock(&mb->mu);
    for (size_t i = 0; i < n; i++)
        deliver_resume(l, &v[i]);
    l->mb_spare = v;
    l->mb_spare_cap = cap;
}

static void sweep_waits(struct px_loop *l, uint64_t now)
{
    struct proxy_exchange *x = l->waiting, *nx;
    for (; x; x = nx) {
        nx = x->wlnext;
        if (x->ans_wait != HK_NONE && now >= x->ans_deadline) {
            atomic_fetch_add_explicit(&l->c_timed_out, 1, memory_order_relaxed);
            log_line(LOG_WARN, "wait_timeout",
                     "a hook's wait passed its deadline; the app's answer goes on unchanged", NULL);
            end_answer_wait(x, false);
        }
        for (int i = 0; i < PROXY_MAX_HANDLERS && x->body_paused; i++) {
            if ((x->body_paused & (1u << i)) && now >= x->body_deadline[i]) {
                atomic_fetch_add_explicit(&l->c_timed_out, 1, memory_order_relaxed);
                log_line(LOG_WARN, "wait_timeout",
                         "a body hook's pause passed its deadline; it gets no more of this body",
                         NULL);
                end_body_pause(x, i, false);
            }
        }
    }
}

void px_ex_run(struct px_loop *l, bool mail, uint64_t now)
{
    if (mail)
        mailbox_drain(l);
    if (l->waiting && now >= l->next_wait_sweep) {
        sweep_waits(l, now);
        l->next_wait_sweep = now + PX_WAIT_SWEEP_US;
    }
}

uint64_t px_ex_next_timer(struct px_loop *l)
{
    return l->waiting ? l->next_wait_sweep : UINT64_MAX;
}

void px_ex_client_event(struct px_loop *l, uint32_t slot)
{
    struct proxy_exchange *x = slot < l->nslots ? l->slots[slot].x : NULL;
    if (!x || !x->client_watched)
        return;
    atomic_fetch_add_explicit(&l->c_gone, 1, memory_order_relaxed);
    x->client_gone = true;
    cancel_waits(x);
    px_upstream_abort(x);
    px_front_drop(x);
    px_upstream_flush(l);
}

void px_ex_abort_waits(struct px_loop *l)
{
    while (l->waiting) {
        struct proxy_exchange *x = l->waiting;
        cancel_waits(x);
        px_upstream_abort(x);
        px_front_drop(x);
    }
    px_upstream_flush(l);
}

void px_ex_front_done(struct proxy_exchange *x, bool client_left)
{
    if (client_left && !x->up_failed && !x->refused)
        x->client_gone = true; /* not the proxy cutting a failed answer */
    cancel_waits(x);
    x->fe_gone = true;
    px_upstream_abort(x);
    maybe_end(x);
}

/* ---- loops ------------------------------------------------------------------------------ */

void px_ex_loop_init(struct px_loop *l)
{
    pthread_mutex_lock(&l->mb.mu);
    l->mb.closed = false;
    pthread_mutex_unlock(&l->mb.mu);
}

void px_ex_loop_fini(struct px_loop *l)
{
    pthread_mutex_lock(&l->mb.mu);
    l->mb.closed = true;
    free(l->mb.v);
    l->mb.v = NULL;
    l->mb.n = l->mb.cap = 0;
    pthread_mutex_unlock(&l->mb.mu);
    free(l->mb_spare);
    l->mb_spare = NULL;
    l->mb_spare_cap = 0;
    while (l->xfree) {
        struct proxy_exchange *x = l->xfree;
        l->xfree = x->wnext;
        ex_destroy(x);
    }
    l->nxfree = 0;
    free(l->slots);
    l->slots = NULL;
    l->nslots = l->slot_free = 0;
}

void proxy_counters(proxy *px, struct proxy_counters *c)
{
    memset(c, 0, sizeof(*c));
    for (int i = 0; i < PX_MAX_LOOPS; i++) {
        struct px_loop *l = &px->loops[i];
        c->waits += atomic_load_explicit(&l->c_waits, memory_order_relaxed);
        c->resumed += atomic_load_explicit(&l->c_resumed, memory_order_relaxed);
        c->timed_out += atomic_load_explicit(&l->c_timed_out, memory_order_relaxed);
        c->stale_resumes += atomic_load_explicit(&l->c_stale, memory_order_relaxed);
        c->gone_while_waiting += atomic_load_explicit(&l->c_gone, memory_order_relaxed);
    }
}

/* ---- registration ------------------------------------------------------------------------ */

bool proxy_add_handler(proxy *px, enum route_kind kind, const struct proxy_handler *h, cut_err *err)
{
    if (kind < ROUTE_UPLOAD || kind > ROUTE_DELETE) {
        err_set(err, CUT_EINVAL, "proxy", "unknown route kind %d", (int)kind);
        return false;
    }
    struct px_kind *k = &px->kinds[kind];
    if (k->n >= PROXY_MAX_HANDLERS) {
        err_set(err, CUT_ELIMIT, "proxy", "route kind %d has %d handlers already", (int)kind,
                PROXY_MAX_HANDLERS);
        return false;
    }
    k->h[k->n++] = *h;
    px->have_handlers = true;
    return true;
}

bool proxy_add_observer(proxy *px, const struct proxy_observer *o, cut_err *err)
{
    if (!o->on_exchange) {
        err_set(err, CUT_EINVAL, "proxy", "an observer needs on_exchange");
        return false;
    }
    if (px->nobservers >= PROXY_MAX_OBSERVERS) {
        err_set(err, CUT_ELIMIT, "proxy", "%d observers already", PROXY_MAX_OBSERVERS);
        return false;
    }
    px->observers[px->nobservers++] = *o;
    return true;
}

/* A request-side value of the route (header, query, path variable): a new string or NULL. */
char *proxy_request_value(proxy_exchange *x, const struct proxy_match *m,
                          const struct cfg_source *src)
{
    const char *v = NULL;
    switch (src->kind) {
    case SRC_HEADER:
        v = proxy_exchange_request_header(x, src->name);
        break;
    case SRC_QUERY:
        return extract_query_param(proxy_exchange_target(x), src->name);
    case SRC_PATH:
        for (size_t i = 0; i < m->nvars; i++)
            if (strcmp(m->var_names[i], src->name) == 0)
                v = m->var_values[i];
        break;
    default:
        break;
    }
    return v ? xstrdup(v) : NULL;
}
