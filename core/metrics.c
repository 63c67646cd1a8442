/*
 * metrics: the catalogue of families and their samples (see metrics.h).
 *
 * Storage. Every family owns a static array of 64-bit atomics, sized here for its labels'
 * largest value lists: a counter has one cell per label combination, a gauge one cell (a
 * double's bits) per combination, a histogram per label value one cell per bucket (not
 * cumulative; the last one is +Inf) and one for the sum in microseconds. An update computes
 * the cell and does one relaxed atomic operation: no lock, no allocation, no system call, so
 * the proxy's loops and the transfer engine count on their hot paths. Rendering reads the
 * cells one by one (relaxed): a sample may be one update behind another, which Prometheus'
 * model tolerates, and a histogram's cumulative buckets and _count come from the same reads.
 *
 * Why a fixed catalogue rather than registration at run time: what /metrics exports is then
 * known from the source (the README's list, the Grafana dashboard and its test are checked
 * against it), every family exists from the first scrape with zeros (absent series break
 * rate() and alerts), and nothing needs allocating or locking when a module counts. The one
 * label whose values come from the configuration, the proxy's route, has a fixed number of
 * slots (METRICS_MAX_ROUTES) filled once before traffic.
 */
#include "core/metrics.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

enum kind { COUNTER, GAUGE, HISTOGRAM };

struct label {
    const char *name;
    const char *const *values;
    size_t n;
    bool routes; /* values and n are the route table's, set by metrics_set_routes() */
};

struct family {
    const char *name, *help;
    enum kind kind;
    const struct label *l0, *l1; /* NULL: no such label */
    const uint64_t *bounds;      /* histograms: upper bounds in microseconds */
    size_t nb;
    _Atomic uint64_t *cells;
    size_t ncells; /* for the static check below */
};

/* ---- label values -------------------------------------------------------------------------- */

#define N_ROUTE (METRICS_MAX_ROUTES + 2)
static char route_names[METRICS_MAX_ROUTES][65];
static const char *route_values[N_ROUTE] = {"none", "other"};
static size_t route_n = 2;

static const char *const v_state[] = {"pending",  "copied", "verified", "active",
                                      "mismatch", "failed", "deleted"};
static const char *const v_origin[] = {"upload", "backfill"};
static const char *const v_copy[] = {"verified", "failed", "removed"};
static const char *const v_backfill[] = {"enqueued", "known", "verified"};
static const char *const v_s3op[] = {"put",
                                     "get",
                                     "head",
                                     "delete",
                                     "multipart_create",
                                     "multipart_part",
                                     "multipart_complete",
                                     "multipart_abort",
                                     "other"};
static const char *const v_upload[] = {"skipped",  "refused_by_app", "recorded",     "journaled",
                                       "replayed", "unusable",       "unmirrorable", "spool_failed",
                                       "lost",     "deleted",        "superseded"};
static const char *const v_class[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
static const char *const v_shadow[] = {"s3", "legacy_transformed", "both", "s3_error",
                                       "legacy_error"};
static const char *const v_skip[] = {"busy", "rate", "not_copied", "unknown", "no_url", "error"};

#define LABEL(nm, v)                                                                               \
    {                                                                                              \
        nm, v, sizeof(v) / sizeof(v[0]), false                                                     \
    }
static const struct label l_state = LABEL("state", v_state);
static const struct label l_origin = LABEL("origin", v_origin);
static const struct label l_copy = LABEL("outcome", v_copy);
static const struct label l_backfill = LABEL("outcome", v_backfill);
static const struct label l_s3op = LABEL("operation", v_s3op);
static const struct label l_upload = LABEL("outcome", v_upload);
static const struct label l_class = LABEL("status_class", v_class);
static const struct label l_shadow = LABEL("class", v_shadow);
static const struct label l_skip = LABEL("reason", v_skip);
static const struct label l_route = {"route", route_values, N_ROUTE, true};

/* ---- buckets ------------------------------------------------------------------------------- */

/* Request latencies: 1 ms to 30 s. */
static const uint64_t b_latency[] = {1000,   2500,   5000,    10000,   25000,   50000,    100000,
                                     250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000};
/* Upload acknowledged -> verified: 50 ms to an hour (an S3 outage makes hours). */
static const uint64_t b_lag[] = {50000,     100000,    250000,    500000,     1000000,
                                 2500000,   5000000,   10000000,  30000000,   60000000,
                                 120000000, 300000000, 600000000, 1800000000, 3600000000};
/* An answer held for its record: 100 us to 10 s (record_wait_ms caps the wait at 5 s). */
static const uint64_t b_record[] = {100,   250,   500,    1000,   2500,    5000,    10000,
                                    25000, 50000, 100000, 250000, 1000000, 5000000, 10000000};
#define NB_LAT (sizeof(b_latency) / sizeof(b_latency[0]))
#define NB_REC (sizeof(b_record) / sizeof(b_record[0]))
#define NB_LAG (sizeof(b_lag) / sizeof(b_lag[0]))

/* ---- cells ----------------------------------------------------------------------------------- */

#define CELLS(n) ((_Atomic uint64_t[n]){0}), (n)
#define NS(v) (sizeof(v) / sizeof(v[0]))

static const struct family fam[MET_COUNT] = {
    [MET_DOCUMENTS] = {"cutover_documents",
                       "Documents per state in the state store (absent while it cannot be read).",
                       GAUGE, &l_state, NULL, NULL, 0, CELLS(NS(v_state))},
    [MET_QUEUE_DEPTH] = {"cutover_queue_depth",
                         "Documents waiting for a copy or a removal (pending, mismatch, deleted "
                         "with the S3 object not yet removed), due now or backing off.",
                         GAUGE, NULL, NULL, NULL, 0, CELLS(1)},
    [MET_STATE_STORE_UP] = {"cutover_state_store_up",
                            "1 when the last read of the state store's figures succeeded.", GAUGE,
                            NULL, NULL, NULL, 0, CELLS(1)},
    [MET_MIRROR_LAG] = {"cutover_mirror_lag_seconds",
                        "Time from an upload's record (the app acknowledged it) to its copy "
                        "being verified in S3.",
                        HISTOGRAM, NULL, NULL, b_lag, NB_LAG, CELLS(NB_LAG + 2)},
    [MET_UPLOADS] = {"cutover_uploads_total",
                     "Uploads on upload routes, by what dual-write did: skipped (flag off), "
                     "refused_by_app (non-2xx), recorded, journaled (PostgreSQL away), replayed "
                     "(from the journal), unusable (no key in the answer), unmirrorable "
                     "(recorded failed), spool_failed (recorded for a legacy copy), lost, "
                     "deleted (delete routes), superseded (a later answer was recorded first).",
                     COUNTER, &l_upload, NULL, NULL, 0, CELLS(NS(v_upload))},
    [MET_UPLOAD_RECORD] = {"cutover_upload_record_seconds",
                           "Time from the app's 2xx answer to an upload's record written: the "
                           "time the client's answer waited for it (at most record_wait_ms).",
                           HISTOGRAM, NULL, NULL, b_record, NB_REC, CELLS(NB_REC + 2)},
    [MET_MIRROR_DOCUMENTS] = {"cutover_mirror_documents_total",
                              "Documents the mirror finished: copied and verified, a failed "
                              "attempt, or an S3 object removed.",
                              COUNTER, &l_origin, &l_copy, NULL, 0,
                              CELLS(NS(v_origin) * NS(v_copy))},
    [MET_MIRROR_BYTES] = {"cutover_mirror_bytes_total",
                          "Bytes of documents copied and verified in S3.", COUNTER, &l_origin, NULL,
                          NULL, 0, CELLS(NS(v_origin))},
    [MET_BACKFILL_DOCUMENTS] = {"cutover_backfill_documents_total",
                                "Backfill documents: enqueued (new), already known (left "
                                "alone), copied and verified.",
                                COUNTER, &l_backfill, NULL, NULL, 0, CELLS(NS(v_backfill))},
    [MET_BACKFILL_BYTES] = {"cutover_backfill_bytes_total",
                            "Bytes of backfill documents copied and verified in S3.", COUNTER, NULL,
                            NULL, NULL, 0, CELLS(1)},
    [MET_S3_REQUESTS] = {"cutover_s3_requests_total",
                         "S3 requests sent (each attempt, retries included).", COUNTER, &l_s3op,
                         NULL, NULL, 0, CELLS(NS(v_s3op))},
    [MET_S3_ERRORS] = {"cutover_s3_errors_total",
                       "S3 requests that failed: no answer, or an error status (404 on GET, "
                       "HEAD and DELETE is an answer, not an error).",
                       COUNTER, &l_s3op, NULL, NULL, 0, CELLS(NS(v_s3op))},
    [MET_S3_DURATION] = {"cutover_s3_request_duration_seconds",
                         "Duration of one S3 request attempt.", HISTOGRAM, &l_s3op, NULL, b_latency,
                         NB_LAT, CELLS(NS(v_s3op) * (NB_LAT + 2))},
    [MET_PROXY_REQUESTS] = {"cutover_proxy_requests_total",
                            "Requests through the data port, by route (none: no route matched) "
                            "and status class sent to the client (none: no answer).",
                            COUNTER, &l_route, &l_class, NULL, 0, CELLS(N_ROUTE *NS(v_class))},
    [MET_PROXY_DURATION] = {"cutover_proxy_request_duration_seconds",
                            "Duration of a proxied exchange, first request byte to the end.",
                            HISTOGRAM, &l_route, NULL, b_latency, NB_LAT,
                            CELLS(N_ROUTE *(NB_LAT + 2))},
    [MET_ROLLBACKS] = {"cutover_rollbacks_total",
                       "Automatic rollbacks made by this process (read_from_s3.percent set to 0).",
                       COUNTER, NULL, NULL, NULL, 0, CELLS(1)},
    [MET_SHADOW_COMPARES] = {"cutover_shadow_compares_total",
                             "Shadow reads compared (both stores fetched).", COUNTER, NULL, NULL,
                             NULL, 0, CELLS(1)},
    [MET_SHADOW_MISMATCHES] = {"cutover_shadow_mismatches_total",
                               "Shadow reads that differed, by class (README \"Shadow reads\"): "
                               "s3, both, s3_error (S3's faults), legacy_transformed, "
                               "legacy_error.",
                               COUNTER, &l_shadow, NULL, NULL, 0, CELLS(NS(v_shadow))},
    [MET_SHADOW_SKIPPED] = {"cutover_shadow_skipped_total",
                            "Shadow reads skipped, by reason: busy, rate, not_copied, unknown, "
                            "no_url, error.",
                            COUNTER, &l_skip, NULL, NULL, 0, CELLS(NS(v_skip))},
    [MET_FLAG_READ_FROM_S3] = {"cutover_flag_read_from_s3_ratio",
                               "Flag read_from_s3.percent as a ratio (0 to 1).", GAUGE, NULL, NULL,
                               NULL, 0, CELLS(1)},
    [MET_FLAG_SHADOW_READ] = {"cutover_flag_shadow_read_ratio", "Flag shadow_read (0 to 1).", GAUGE,
                              NULL, NULL, NULL, 0, CELLS(1)},
    [MET_FLAG_DUAL_WRITE] = {"cutover_flag_dual_write", "Flag dual_write (1 on, 0 off).", GAUGE,
                             NULL, NULL, NULL, 0, CELLS(1)},
    [MET_FLAG_AUTO_ROLLBACK] = {"cutover_flag_auto_rollback_enabled",
                                "Flag auto_rollback.enabled (1 on, 0 off).", GAUGE, NULL, NULL,
                                NULL, 0, CELLS(1)},
    [MET_FLAG_CUTOVER_GATE] = {"cutover_flag_cutover_gate_ratio",
                               "Flag cutover_gate: verified/total needed for read_from_s3 100.",
                               GAUGE, NULL, NULL, NULL, 0, CELLS(1)},
};

static atomic_bool hidden[MET_COUNT];

/* ---- labels ---------------------------------------------------------------------------------- */

static size_t label_n(const struct label *l)
{
    return !l ? 1 : l->routes ? route_n : l->n;
}

void metrics_set_routes(const char *const *names, size_t n)
{
    if (n > METRICS_MAX_ROUTES)
        n = METRICS_MAX_ROUTES;
    for (size_t i = 0; i < n; i++) {
        snprintf(route_names[i], sizeof(route_names[i]), "%s", names[i] ? names[i] : "");
        route_values[i + 2] = route_names[i];
    }
    route_n = n + 2;
}

unsigned metrics_route_index(long i)
{
    if (i < 0)
        return MET_ROUTE_NONE;
    if (i >= METRICS_MAX_ROUTES)
        return MET_ROUTE_OTHER;
    return (unsigned)i + 2;
}

unsigned metrics_status_class(int status)
{
    return status >= 100 && status <= 599 ? (unsigned)(status / 100) : 0;
}

int metrics_label_index(enum metric_id id, int dim, const char *value)
{
    const struct label *l = dim == 0 ? fam[id].l0 : fam[id].l1;
    if (!l || !value)
        return -1;
    for (size_t i = 0; i < label_n(l); i++)
        if (strcmp(l->values[i], value) == 0)
            return (int)i;
    return -1;
}

const char *metrics_name(enum metric_id id)
{
    return id < MET_COUNT ? fam[id].name : NULL;
}

/* The sample of labels (a, b): its index among the label combinations, clamped. */
static size_t combo(const struct family *f, unsigned a, unsigned b)
{
    size_t n0 = f->l0 ? (f->l0->routes ? N_ROUTE : f->l0->n) : 1;
    size_t n1 = f->l1 ? f->l1->n : 1;
    if (a >= n0)
        a = (unsigned)(n0 - 1);
    if (b >= n1)
        b = (unsigned)(n1 - 1);
    return (size_t)a * n1 + b;
}

/* ---- updates --------------------------------------------------------------------------------- */

void metrics_add(enum metric_id id, unsigned a, unsigned b, uint64_t n)
{
    const struct family *f = &fam[id];
    atomic_fetch_add_explicit(&f->cells[combo(f, a, b)], n, memory_order_relaxed);
}

void metrics_observe_us(enum metric_id id, unsigned a, uint64_t us)
{
    const struct family *f = &fam[id];
    _Atomic uint64_t *h = f->cells + combo(f, a, 0) * (f->nb + 2);
    size_t i = 0;
    while (i < f->nb && us > f->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h[f->nb + 1], us, memory_order_relaxed);
}

void metrics_set(enum metric_id id, unsigned a, unsigned b, double v)
{
    const struct family *f = &fam[id];
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    atomic_store_explicit(&f->cells[combo(f, a, b)], bits, memory_order_relaxed);
}

void metrics_hide(enum metric_id id, bool h)
{
    atomic_store(&hidden[id], h);
}

/* ---- rendering ------------------------------------------------------------------------------- */

/* A label value escaped for the exposition format: \\, \" and \n. */
static bool put_value(struct buf *b, const char *v)
{
    for (; *v; v++) {
        const char *esc = *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : *v == '\n' ? "\\n" : NULL;
        if (esc ? !buf_puts(b, esc) : !buf_append(b, v, 1))
            return false;
    }
    return true;
}

/* name{l0="v0",l1="v1"[,le="x"]} with what is there. */
static bool put_series(struct buf *b, const struct family *f, const char *suffix, size_t a,
                       size_t c, const char *le)
{
    bool any = f->l0 || le;
    if (!buf_printf(b, "%s%s", f->name, suffix) || (any && !buf_puts(b, "{")))
        return false;
    if (f->l0 && (!buf_printf(b, "%s=\"", f->l0->name) || !put_value(b, f->l0->values[a]) ||
                  !buf_puts(b, "\"")))
        return false;
    if (f->l1 && (!buf_printf(b, ",%s=\"", f->l1->name) || !put_value(b, f->l1->values[c]) ||
                  !buf_puts(b, "\"")))
        return false;
    if (le && !buf_printf(b, "%sle=\"%s\"", f->l0 ? "," : "", le))
        return false;
    return !any || buf_puts(b, "}");
}

static bool put_double(struct buf *b, double v)
{
    if (isnan(v))
        return buf_puts(b, " NaN\n");
    if (isinf(v))
        return buf_puts(b, v > 0 ? " +Inf\n" : " -Inf\n");
    return buf_printf(b, " %.17g\n", v);
}

static bool render_histogram(struct buf *b, const struct family *f, size_t a)
{
    _Atomic uint64_t *h = f->cells + combo(f, (unsigned)a, 0) * (f->nb + 2);
    uint64_t cum = 0;
    char le[32];
    for (size_t i = 0; i <= f->nb; i++) {
        cum += atomic_load_explicit(&h[i], memory_order_relaxed);
        if (i < f->nb)
            snprintf(le, sizeof(le), "%g", (double)f->bounds[i] / 1e6);
        else
            snprintf(le, sizeof(le), "+Inf");
        if (!put_series(b, f, "_bucket", a, 0, le) ||
            !buf_printf(b, " %llu\n", (unsigned long long)cum))
            return false;
    }
    uint64_t sum = atomic_load_explicit(&h[f->nb + 1], memory_order_relaxed);
    return put_series(b, f, "_sum", a, 0, NULL) &&
           buf_printf(b, " %llu.%06llu\n", (unsigned long long)(sum / 1000000),
                      (unsigned long long)(sum % 1000000)) &&
           put_series(b, f, "_count", a, 0, NULL) &&
           buf_printf(b, " %llu\n", (unsigned long long)cum);
}

bool metrics_render(struct buf *b)
{
    static const char *const type[] = {"counter", "gauge", "histogram"};
    for (int id = 0; id < MET_COUNT; id++) {
        const struct family *f = &fam[id];
        if (atomic_load(&hidden[id]))
            continue;
        if (!buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                        type[f->kind]))
            return false;
        for (size_t a = 0; a < label_n(f->l0); a++) {
            if (f->kind == HISTOGRAM) {
                if (!render_histogram(b, f, a))
                    return false;
                continue;
            }
            for (size_t c = 0; c < label_n(f->l1); c++) {
                uint64_t v = atomic_load_explicit(&f->cells[combo(f, (unsigned)a, (unsigned)c)],
                                                  memory_order_relaxed);
                if (!put_series(b, f, "", a, c, NULL))
                    return false;
                if (f->kind == COUNTER) {
                    if (!buf_printf(b, " %llu\n", (unsigned long long)v))
                        return false;
                } else {
                    double d;
                    memcpy(&d, &v, sizeof(d));
                    if (!put_double(b, d))
                        return false;
                }
            }
        }
    }
    return true;
}

/* ---- lags --------------------------------------------------------------------------------------
 */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

uint64_t metrics_age_us(const char *s)
{
    int y, mo, d, h, mi, sec, n = 0;
    int64_t frac_us = 0, off_s = 0;
    struct timeval tv;

    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6)
        return 0;
    s += n;
    if (*s == '.') {
        int64_t scale = 100000;
        for (s++; *s >= '0' && *s <= '9'; s++, scale /= 10)
            frac_us += (*s - '0') * scale;
    }
    if (*s == '+' || *s == '-') {
        int oh = 0, om = 0;
        int sign = *s == '-' ? -1 : 1;
        if (sscanf(s + 1, "%2d:%2d", &oh, &om) < 1 && sscanf(s + 1, "%2d", &oh) != 1)
            return 0;
        off_s = sign * (oh * 3600 + om * 60);
    } else if (*s != 'Z') {
        return 0;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31)
        return 0;
    int64_t t =
        days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec - off_s;
    int64_t at_us = t * 1000000 + frac_us;
    gettimeofday(&tv, NULL);
    int64_t now = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
    return now > at_us ? (uint64_t)(now - at_us) : 0;
}
