/*
 * pgstore_metrics: the state store's figures for /metrics: documents per state and the queue's
 * depth, as pgstore_status_counts() defines them for /admin/status (so the two never differ in
 * meaning), read in a transaction of its own under a statement timeout, so that a database
 * that answers slowly costs the caller at most that long. The caller (the metrics collector's
 * thread) never runs it on a path that serves requests.
 */
#include "storage/pgstore_int.h"

#include <stdio.h>

int pgstore_metrics_counts(pgstore *st, int64_t counts[DOC_NSTATES], int64_t *queue_depth,
                           int timeout_ms, cut_err *err)
{
    struct pgstore_status s;
    char sql[64];
    int rc = -1;

    for (int i = 0; i < DOC_NSTATES; i++)
        counts[i] = 0;
    *queue_depth = 0;
    if (!pgs_begin(st, "metrics", err))
        goto out;
    snprintf(sql, sizeof(sql), "SET LOCAL statement_timeout = %d", timeout_ms > 0 ? timeout_ms : 1);
    if (!pgs_run_ok(st, "metrics", sql, 0, NULL, err) || pgstore_status_counts(st, &s, err) != 0)
        goto out;
    if (!pgs_commit(st, "metrics", err))
        goto out;
    for (int i = 0; i < DOC_NSTATES; i++)
        counts[i] = s.counts[i];
    *queue_depth = s.queue_depth;
    rc = 0;
out:
    if (rc != 0)
        pgs_rollback(st);
    return rc;
}
