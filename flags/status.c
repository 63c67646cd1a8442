/*
 * status: the one picture of a migration that GET /admin/status and `cutover status --json`
 * both print, so that the two can never disagree on a figure's meaning: documents per state,
 * the queue depth, the consistency ratio against the cutover gate, the flags, the latest
 * backfill run's progress, the last automatic rollback, and the last read answered with the
 * legacy store's URL (the runbook retires the legacy store 30 days after it). The figures come from
 * pgstore_status_counts() (which defines verified, total and the queue depth once) and the
 * ratio from flags_consistency_ratio(), the same ones the gate uses.
 */
#include "flags/flags.h"

#include "storage/pgstore.h"

#include <stdlib.h>

int flags_status_json(pgstore *st, const flags_snapshot *s, json_t **out, cut_err *err)
{
    struct pgstore_status c;
    json_t *o = NULL, *docs, *cons, *backfill = NULL, *rollback = NULL;
    char *legacy_read = NULL;
    double ratio, gate = flags_cutover_gate(s);
    int rc = -1;

    *out = NULL;
    if (pgstore_status_counts(st, &c, err) != 0 ||
        pgstore_backfill_progress(st, &backfill, err) != 0 ||
        pgstore_audit_list(st, FLAGS_ROLLBACK_ACTOR, 1, &rollback, err) != 0 ||
        pgstore_legacy_read_last(st, &legacy_read, err) != 0)
        goto out;
    o = json_object();
    docs = json_object();
    for (int i = 0; i < DOC_NSTATES; i++)
        json_object_set_new(docs, doc_state_name((enum doc_state)i), json_integer(c.counts[i]));
    json_object_set_new(o, "documents", docs);
    json_object_set_new(o, "queue_depth", json_integer(c.queue_depth));
    ratio = flags_consistency_ratio(c.verified, c.total);
    cons = json_object();
    json_object_set_new(cons, "verified", json_integer(c.verified));
    json_object_set_new(cons, "total", json_integer(c.total));
    json_object_set_new(cons, "ratio", json_real(ratio));
    json_object_set_new(cons, "gate", json_real(gate));
    json_object_set_new(cons, "gate_open", json_boolean(ratio >= gate));
    json_object_set_new(o, "consistency", cons);
    json_object_set_new(o, "flags", flags_snapshot_json(s));
    json_object_set_new(o, "flags_source",
                        json_string(flags_snapshot_from_db(s) ? "database" : "configuration"));
    json_object_set_new(o, "backfill", backfill);
    backfill = NULL;
    json_object_set_new(o, "last_rollback",
                        json_array_size(rollback) > 0 ? json_incref(json_array_get(rollback, 0))
                                                      : json_null());
    json_object_set_new(o, "last_legacy_read",
                        legacy_read ? json_string(legacy_read) : json_null());
    *out = o;
    o = NULL;
    rc = 0;
out:
    json_decref(o);
    json_decref(backfill);
    json_decref(rollback);
    free(legacy_read);
    return rc;
}
