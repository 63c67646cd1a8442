/*
 * metrics: cutover's Prometheus metrics, one fixed catalogue of families (counters, gauges,
 * histograms with fixed buckets), each with at most two labels whose values are a small fixed
 * list, rendered as the text exposition format 0.0.4.
 *
 * Updates are lock-free and allocation-free from any thread: every sample is a relaxed atomic
 * in static storage, addressed by the family and the labels' value indexes, so an event loop
 * or the transfer engine counts with one atomic add. The catalogue (names, help, labels,
 * buckets) is metrics.c's table, the one place that says what /metrics exports; the README's
 * list is written from it. Parts of cutover update it with one-line calls; what is read from
 * elsewhere at scrape time (documents per state, the flags) is set as gauges by the scraper
 * just before it renders.
 */
#ifndef CUTOVER_METRICS_H
#define CUTOVER_METRICS_H

#include "core/core.h"

enum metric_id {
    MET_DOCUMENTS,          /* gauge {state} */
    MET_QUEUE_DEPTH,        /* gauge */
    MET_STATE_STORE_UP,     /* gauge */
    MET_MIRROR_LAG,         /* histogram: upload acknowledged -> verified */
    MET_UPLOADS,            /* counter {outcome}: what dual-write did with an upload */
    MET_UPLOAD_RECORD,      /* histogram: the app's 2xx answer -> the upload's record written */
    MET_MIRROR_DOCUMENTS,   /* counter {origin, outcome} */
    MET_MIRROR_BYTES,       /* counter {origin} */
    MET_BACKFILL_DOCUMENTS, /* counter {outcome} */
    MET_BACKFILL_BYTES,     /* counter */
    MET_S3_REQUESTS,        /* counter {operation} */
    MET_S3_ERRORS,          /* counter {operation} */
    MET_S3_DURATION,        /* histogram {operation} */
    MET_PROXY_REQUESTS,     /* counter {route, status_class} */
    MET_PROXY_DURATION,     /* histogram {route} */
    MET_ROLLBACKS,          /* counter */
    MET_SHADOW_COMPARES,    /* counter */
    MET_SHADOW_MISMATCHES,  /* counter {class} */
    MET_SHADOW_SKIPPED,     /* counter {reason} */
    MET_FLAG_READ_FROM_S3,  /* gauge: read_from_s3.percent / 100 */
    MET_FLAG_SHADOW_READ,   /* gauge */
    MET_FLAG_DUAL_WRITE,    /* gauge 0/1 */
    MET_FLAG_AUTO_ROLLBACK, /* gauge 0/1 */
    MET_FLAG_CUTOVER_GATE,  /* gauge */
    MET_COUNT
};

/* Label value indexes of the fixed label lists (the order of metrics.c's lists). */
enum met_origin { MET_ORIGIN_UPLOAD = 0, MET_ORIGIN_BACKFILL };
enum met_copy_outcome { MET_COPY_VERIFIED = 0, MET_COPY_FAILED, MET_COPY_REMOVED };
enum met_backfill_outcome { MET_BACKFILL_ENQUEUED = 0, MET_BACKFILL_KNOWN, MET_BACKFILL_VERIFIED };
/* MET_UPLOADS' outcomes are the members of proxy/upload.h's struct upload_stats, in order. */
enum met_s3_op {
    MET_S3_PUT = 0,
    MET_S3_GET,
    MET_S3_HEAD,
    MET_S3_DELETE,
    MET_S3_MULTIPART_CREATE,
    MET_S3_MULTIPART_PART,
    MET_S3_MULTIPART_COMPLETE,
    MET_S3_MULTIPART_ABORT,
    MET_S3_OTHER,
};
/* Shadow reads' label values are storage/shadow.h's enum shadow_class and enum shadow_skip,
 * in the same order. */
/* The route label: 0 for requests that matched no route, 1 for routes past METRICS_MAX_ROUTES,
 * then the configured routes in order (metrics_set_routes). */
#define METRICS_MAX_ROUTES 32
#define MET_ROUTE_NONE 0u
#define MET_ROUTE_OTHER 1u

/* Names the configured routes (borrowed for the call; copied, cut at 64 bytes each): route i
 * of the configuration gets label index i + 2 (metrics_route_index). Call once, before any
 * thread counts a proxied request. */
void metrics_set_routes(const char *const *names, size_t n);
/* The route label index of configuration route i (i < 0: no route). */
unsigned metrics_route_index(long i);
/* The status_class label index of an HTTP status: "1xx".."5xx", or "none" for 0 (no answer
 * sent) and anything out of range. */
unsigned metrics_status_class(int status);
/* The index of value in a label of family id (dim 0 or 1), or -1 when it has no such value. */
int metrics_label_index(enum metric_id id, int dim, const char *value);

/* Counters: adds n to the sample of labels (a, b); unused labels are 0. An index out of range
 * is counted on the label's last value, never outside the family. */
void metrics_add(enum metric_id id, unsigned a, unsigned b, uint64_t n);
static inline void metrics_inc(enum metric_id id, unsigned a, unsigned b)
{
    metrics_add(id, a, b, 1);
}
/* Histograms (one label at most): one observation of us microseconds (stored in seconds). */
void metrics_observe_us(enum metric_id id, unsigned a, uint64_t us);
/* Gauges: sets the sample of labels (a, b). */
void metrics_set(enum metric_id id, unsigned a, unsigned b, double v);
/* Hides a family from the rendering (absent: its figures are unknown or too old), or shows it
 * again. Families are shown from the start. */
void metrics_hide(enum metric_id id, bool hidden);

/* Appends every shown family to b as text exposition 0.0.4 (HELP, TYPE, samples). Returns
 * false when b's ceiling was reached. Any thread; concurrent updates land in this rendering
 * or the next (a histogram's _count is the sum of its buckets as read, so they agree). */
bool metrics_render(struct buf *b) CUT_MUST_USE;
/* The name of family id ("cutover_documents"...). */
const char *metrics_name(enum metric_id id);

/* Microseconds since an ISO 8601 time with an offset ("2026-11-27T17:08:12.123+00:00", "Z"),
 * by this machine's clock; 0 when the time is in the future or s cannot be read. For lags
 * measured from a time PostgreSQL recorded. */
uint64_t metrics_age_us(const char *iso8601);

#endif
