/*
 * access_log: one JSON line per request through log_line(), written when libmicrohttpd
 * reports the request complete. The path is logged without its query string, because
 * queries carry tokens and signatures that must never reach a log.
 */
#include "proxy/proxy_int.h"

#include <string.h>

void px_access_log(const struct proxy_exchange *x)
{
    struct buf b;
    char ex[160];
    buf_init(&b, 4096);
    uint64_t now = now_us();
    double dur_ms = (double)(now - x->t_start) / 1000.0;
    double up_ms = x->t_up_headers && x->t_up_start
                       ? (double)(x->t_up_headers - x->t_up_start) / 1000.0
                       : -1.0;
    const char *m = x->method ? x->method : "";
    const char *t = x->target ? x->target : "";
    size_t plen = strcspn(t, "?");
    bool ok = buf_puts(&b, "\"method\":\"") && buf_json_escape(&b, m, strlen(m)) &&
              buf_puts(&b, "\",\"path\":\"") && buf_json_escape(&b, t, plen);
    snprintf(ex, sizeof(ex),
             "\",\"status\":%d,\"bytes\":%llu,\"request_bytes\":%llu,\"duration_ms\":%.3f,"
             "\"upstream_ms\":%.3f",
             x->sent_status, (unsigned long long)x->out_total, (unsigned long long)x->in_total,
             dur_ms, up_ms);
    ok = ok && buf_puts(&b, ex);
    if (ok)
        log_line(LOG_INFO, "access", "request", b.data);
    buf_free(&b);
}
