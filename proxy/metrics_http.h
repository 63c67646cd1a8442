/*
 * metrics_http: what the admin port serves for watching a migration: GET /metrics (Prometheus
 * text exposition of core/metrics.h's families) and GET / (the dashboard page, proxy/
 * dashboard.html, built into the binary). It also counts every proxied exchange (a proxy
 * observer: route, status class, duration) and keeps the state store's figures (documents per
 * state, queue depth) fresh for the scrapes with a collector thread of its own.
 *
 * A scrape never waits on PostgreSQL for more than a second: the collector reads the figures
 * when a scrape asks and they are older than a second; a scrape waits up to a second for that
 * read, then renders what it has. Figures whose last successful read is older than
 * PROXY_METRICS_STALE_S are left out of /metrics (absent, not stale: Prometheus then shows a
 * gap rather than old values), and cutover_state_store_up says 0.
 */
#ifndef CUTOVER_PROXY_METRICS_HTTP_H
#define CUTOVER_PROXY_METRICS_HTTP_H

#include "flags/flags.h"
#include "proxy/proxy.h"

#define PROXY_METRICS_STALE_S 5

typedef struct proxy_metrics proxy_metrics;

/* Registers GET /metrics and GET / on px's admin port and the exchange observer (call before
 * proxy_start()); names the metrics' route label after cfg's routes. With cfg->database_url,
 * starts the collector thread (it connects on the first scrape). flags (may be NULL: the
 * configuration's flags are shown) is borrowed and must outlive the result. cfg is borrowed
 * and must outlive the result. Returns a new proxy_metrics (proxy_metrics_free(), after
 * proxy_free()) or NULL with err set. */
proxy_metrics *proxy_metrics_new(proxy *px, const struct config *cfg, flags_store *flags,
                                 cut_err *err) CUT_MUST_USE;
/* Stops the collector and frees (NULL is fine). The proxy must be freed first: its admin
 * handlers and observer use this. */
void proxy_metrics_free(proxy_metrics *pm);

#endif
