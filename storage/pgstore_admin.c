/*
 * pgstore_admin: the state store's calls for the admin API, `cutover status` and the flags'
 * propagation: the documents per state with the queue depth and the consistency figures, the
 * latest backfill run with its progress, the audit log, one document as JSON, flag changes
 * written only while every flag still holds the value the caller read (compare and set), and
 * LISTEN/NOTIFY on a connection of its own.
 *
 * Answers meant for JSON are built by PostgreSQL itself (json_build_object, json_agg) and
 * parsed once here: the columns are listed by name, so a secret column (the lease token) can
 * never leak by a later ALTER TABLE. Each answer text has a ceiling (PGSTORE_ADMIN_JSON_MAX)
 * checked before it is parsed.
 *
 * The consistency figures are defined here and nowhere else: verified = documents `verified`
 * or `active`; total = every document that is not `deleted`.
 */
#include "storage/pgstore_int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pgstore_status_counts(pgstore *st, struct pgstore_status *out, cut_err *err)
{
    static const char sql[] = "SELECT state, count(*),\n"
                              "  count(*) FILTER (WHERE state IN ('pending', 'mismatch')\n"
                              "    OR (state = 'deleted' AND next_attempt_at < 'infinity'))\n"
                              "FROM cutover.documents GROUP BY state";
    PGresult *r;

    memset(out, 0, sizeof(*out));
    r = pgs_run(st, "status", sql, 0, NULL, err);
    if (r == NULL)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        int s = doc_state_parse(PQgetvalue(r, i, 0));
        int64_t n = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        if (s < 0)
            continue;
        out->counts[s] = n;
        out->queue_depth += strtoll(PQgetvalue(r, i, 2), NULL, 10);
        if (s == DOC_VERIFIED || s == DOC_ACTIVE)
            out->verified += n;
        if (s != DOC_DELETED)
            out->total += n;
    }
    PQclear(r);
    return 0;
}

int pgstore_consistency(pgstore *st, int64_t *verified, int64_t *total, cut_err *err)
{
    struct pgstore_status s;

    if (pgstore_status_counts(st, &s, err) != 0)
        return -1;
    *verified = s.verified;
    *total = s.total;
    return 0;
}

int pgstore_backfill_progress(pgstore *st, json_t **out, cut_err *err)
{
    /* the latest run's row (its members null when no run was recorded), and the progress of
     * documents recorded by backfill: done (verified or active), failed, waiting (pending or
     * mismatch), and the documents made verified in the last minute as a rate; null when
     * there is neither a run nor a backfill document */
    static const char sql[] =
        "SELECT CASE WHEN r.id IS NULL AND d.documents = 0 THEN NULL ELSE\n"
        "  json_build_object('id', r.id, 'state', r.state, 'started_at', r.started_at,\n"
        "  'updated_at', r.updated_at, 'finished_at', r.finished_at, 'total', r.total,\n"
        "  'enqueued', r.enqueued, 'last_error', r.last_error,\n"
        "  'documents', d.documents, 'done', d.done, 'failed', d.failed, 'waiting', d.waiting,\n"
        "  'rate_per_s', round(d.last_minute / 60.0, 2)) END\n"
        "FROM (SELECT count(*) FILTER (WHERE state <> 'deleted') AS documents,\n"
        "     count(*) FILTER (WHERE state IN ('verified', 'active')) AS done,\n"
        "     count(*) FILTER (WHERE state = 'failed') AS failed,\n"
        "     count(*) FILTER (WHERE state IN ('pending', 'mismatch')) AS waiting,\n"
        "     count(*) FILTER (WHERE verified_at > now() - interval '60 seconds') AS last_minute\n"
        "   FROM cutover.documents WHERE origin = 'backfill') d\n"
        "  LEFT JOIN (SELECT * FROM cutover.backfill_runs ORDER BY id DESC LIMIT 1) r ON true";
    PGresult *r = pgs_run(st, "backfill progress", sql, 0, NULL, err);

    *out = NULL;
    if (r == NULL)
        return -1;
    return pgs_json_cell(r, true, "backfill progress", out, err);
}

/* One audit row as JSON, in the column order of every audit answer. */
#define AUDIT_JSON                                                                                 \
    "json_build_object('id', a.id, 'at', a.at, 'actor', a.actor, 'action', a.action, 'flag', "     \
    "a.flag, 'old', a.old, 'new', a.new, 'reason', a.reason)"

int pgstore_audit_list(pgstore *st, const char *actor, int limit, json_t **out, cut_err *err)
{
    static const char sql[] =
        "SELECT coalesce(json_agg(" AUDIT_JSON " ORDER BY a.id DESC), '[]'::json)\n"
        "FROM (SELECT * FROM cutover.audit WHERE ($2::text IS NULL OR actor = $2)\n"
        "      ORDER BY id DESC LIMIT $1::int) a";
    char lim[16];
    const char *p[2] = {lim, actor};
    PGresult *r;

    *out = NULL;
    if (limit < 1 || limit > PGSTORE_AUDIT_MAX) {
        err_set(err, CUT_EINVAL, "audit", "limit: expected 1 to %d", PGSTORE_AUDIT_MAX);
        return -1;
    }
    snprintf(lim, sizeof(lim), "%d", limit);
    r = pgs_run(st, "audit", sql, 2, p, err);
    if (r == NULL)
        return -1;
    return pgs_json_cell(r, true, "audit", out, err);
}

int pgstore_audit_add(pgstore *st, const struct pgstore_audit_row *a, cut_err *err)
{
    const char *p[6] = {a->actor, a->action, a->flag, a->old, a->new_value, a->reason};

    return pgs_run_ok(st, "audit",
                      "INSERT INTO cutover.audit (actor, action, flag, old, new, reason) "
                      "VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6)",
                      6, p, err)
               ? 0
               : -1;
}

int pgstore_document_json(pgstore *st, const char *storage_key, json_t **out, cut_err *err)
{
    static const char sql[] =
        "SELECT json_build_object('storage_key', storage_key, 's3_key', s3_key,\n"
        "  'state', state, 'origin', origin, 'generation', generation, 'vars', vars,\n"
        "  'size', size, 'md5', md5, 'sha256', sha256, 's3_etag', s3_etag,\n"
        "  's3_sha256', s3_sha256, 'legacy_sha256', legacy_sha256,\n"
        "  'content_type', content_type, 'filename', filename,\n"
        "  'attempts', attempts, 'last_error', last_error,\n"
        "  'leased', lease_expires IS NOT NULL AND lease_expires > now(),\n"
        "  'next_attempt_at', CASE WHEN next_attempt_at = 'infinity' THEN NULL\n"
        "                     ELSE next_attempt_at END,\n"
        "  'created_at', created_at, 'updated_at', updated_at, 'copied_at', copied_at,\n"
        "  'verified_at', verified_at, 'activated_at', activated_at,\n"
        "  'mismatch_at', mismatch_at, 'failed_at', failed_at, 'deleted_at', deleted_at)\n"
        "FROM cutover.documents WHERE storage_key = $1";
    const char *p[1] = {storage_key};
    PGresult *r;

    *out = NULL;
    r = pgs_run(st, "document", sql, 1, p, err);
    if (r == NULL)
        return -1;
    if (PQntuples(r) != 1) {
        PQclear(r);
        err_set(err, CUT_ENOTFOUND, "document", "no document with this storage key");
        return -1;
    }
    return pgs_json_cell(r, true, "document", out, err);
}

int pgstore_flags_write(pgstore *st, const struct pgstore_flag_change *ch, size_t n,
                        const char *actor, const char *action, const char *reason, cut_err *err)
{
    int rc = -1;

    if (!pgs_begin(st, "flags write", err))
        goto out;
    for (size_t i = 0; i < n; i++) {
        const char *p[6] = {ch[i].name, ch[i].old};
        PGresult *r = pgs_run(st, "flags write",
                              "SELECT value::text, value = $2::jsonb FROM cutover.flags "
                              "WHERE name = $1 FOR UPDATE",
                              2, p, err);
        bool same;
        if (r == NULL)
            goto out;
        same = PQntuples(r) == 1 ? ch[i].old != NULL && strcmp(PQgetvalue(r, 0, 1), "t") == 0
                                 : ch[i].old == NULL;
        PQclear(r);
        if (!same) {
            err_set(err, CUT_ECONFLICT, "flags write",
                    "flags.%.64s was changed by someone else meanwhile", ch[i].name);
            goto out;
        }
        p[1] = ch[i].value;
        p[2] = actor;
        if (!pgs_run_ok(st, "flags write",
                        "INSERT INTO cutover.flags (name, value, updated_at, updated_by) "
                        "VALUES ($1, $2::jsonb, now(), $3) ON CONFLICT (name) DO UPDATE SET "
                        "value = EXCLUDED.value, updated_at = now(), "
                        "updated_by = EXCLUDED.updated_by",
                        3, p, err))
            goto out;
        struct pgstore_audit_row a = {
            .actor = actor,
            .action = action,
            .flag = ch[i].name,
            .old = ch[i].old,
            .new_value = ch[i].value,
            .reason = reason,
        };
        if (pgstore_audit_add(st, &a, err) != 0)
            goto out;
    }
    if (!pgs_commit(st, "flags write", err))
        goto out;
    rc = 0;
out:
    pgs_rollback(st);
    return rc;
}

/* ---- notifications -------------------------------------------------------------------------- */

int pgstore_listen(pgstore *st, const char *channel, cut_err *err)
{
    char *id = NULL, *sql = NULL;
    int rc = -1;

    if (!pgs_ensure(st, err))
        return -1;
    id = PQescapeIdentifier(st->conn, channel, strlen(channel));
    if (id == NULL) {
        err_set(err, CUT_EINVAL, "listen", "bad channel name");
        goto out;
    }
    sql = xasprintf("LISTEN %s", id);
    if (!pgs_run_ok(st, "listen", sql, 0, NULL, err))
        goto out;
    rc = 0;
out:
    free(sql);
    PQfreemem(id);
    return rc;
}

int pgstore_wait_notify(pgstore *st, int wake_fd, int timeout_ms, int *count, cut_err *err)
{
    struct pollfd pf[2];
    PGnotify *nt;
    int nfds = 1, rc;

    *count = 0;
    if (st->conn == NULL || PQstatus(st->conn) != CONNECTION_OK) {
        err_set(err, CUT_EDB, "notify", "not connected");
        return -1;
    }
    pf[0] = (struct pollfd){.fd = PQsocket(st->conn), .events = POLLIN};
    if (wake_fd >= 0) {
        pf[1] = (struct pollfd){.fd = wake_fd, .events = POLLIN};
        nfds = 2;
    }
    rc = poll(pf, (nfds_t)nfds, timeout_ms);
    if (rc < 0 && errno != EINTR) {
        err_set(err, CUT_EIO, "notify", "poll: %s", strerror(errno));
        return -1;
    }
    if (rc <= 0 || !(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
        return 0;
    if (!PQconsumeInput(st->conn) || PQstatus(st->conn) != CONNECTION_OK) {
        char msg[200];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(st->conn));
        msg[strcspn(msg, "\n")] = '\0';
        err_set(err, CUT_EDB, "notify", "connection lost: %s", msg);
        PQfinish(st->conn);
        st->conn = NULL;
        return -1;
    }
    while ((nt = PQnotifies(st->conn)) != NULL) {
        (*count)++;
        PQfreemem(nt);
    }
    return 0;
}
