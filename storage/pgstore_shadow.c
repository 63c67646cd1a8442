/*
 * The state store's calls for shadow reads (pgstore.h, "shadow reads"): record one difference
 * a shadow read found, list the latest ones and count them per class. The table keeps what was
 * delivered (statuses, sizes, checksums, latencies, a failure's short name), never where from:
 * no URL, no query string, so a signed URL cannot land in the database by this way. It is
 * bounded: an insert removes the rows older than the latest PGSTORE_SHADOW_KEEP (by id, through
 * the primary key), so a legacy store that transforms every delivery cannot grow it forever.
 * Answers meant for JSON are built by PostgreSQL (json_agg) with the columns listed by name.
 */
#include "storage/pgstore_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)

static const char *i64(char *b, size_t n, int64_t v)
{
    if (v < 0)
        return NULL;
    snprintf(b, n, "%lld", (long long)v);
    return b;
}

static const char *ms(char *b, size_t n, double v)
{
    if (v < 0)
        return NULL;
    snprintf(b, n, "%.3f", v);
    return b;
}

int pgstore_shadow_record(pgstore *st, const struct pgstore_shadow_row *r, cut_err *err)
{
    static const char sql[] =
        "WITH ins AS (INSERT INTO cutover.shadow_mismatches (storage_key, class,\n"
        "    expected_sha256, expected_size, legacy_status, legacy_size, legacy_sha256,\n"
        "    legacy_ms, legacy_error, s3_status, s3_size, s3_sha256, s3_ms, s3_error, replica)\n"
        "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)\n"
        "  RETURNING id)\n"
        "DELETE FROM cutover.shadow_mismatches\n"
        "  WHERE id <= (SELECT id FROM ins) - " STR(PGSTORE_SHADOW_KEEP);
    char b[8][32];
    const char *p[15] = {
        r->storage_key,
        r->class_name,
        r->expected_sha256,
        i64(b[0], sizeof(b[0]), r->expected_size),
        i64(b[1], sizeof(b[1]), r->legacy_status),
        i64(b[2], sizeof(b[2]), r->legacy_size),
        r->legacy_sha256,
        ms(b[3], sizeof(b[3]), r->legacy_ms),
        r->legacy_error,
        i64(b[4], sizeof(b[4]), r->s3_status),
        i64(b[5], sizeof(b[5]), r->s3_size),
        r->s3_sha256,
        ms(b[6], sizeof(b[6]), r->s3_ms),
        r->s3_error,
        r->replica,
    };
    return pgs_run_ok(st, "shadow_record", sql, 15, p, err) ? 0 : -1;
}

int pgstore_shadow_list(pgstore *st, int limit, json_t **out, cut_err *err)
{
    static const char sql[] =
        "SELECT coalesce(json_agg(t ORDER BY t.id DESC), '[]')::text FROM (\n"
        "  SELECT id, to_json(at)#>>'{}' AS at, storage_key, class, expected_sha256,\n"
        "    expected_size, legacy_status, legacy_size, legacy_sha256, legacy_ms, legacy_error,\n"
        "    s3_status, s3_size, s3_sha256, s3_ms, s3_error, replica\n"
        "  FROM cutover.shadow_mismatches ORDER BY id DESC LIMIT $1) t";
    char lim[16];
    const char *p[1] = {lim};
    PGresult *r;

    *out = NULL;
    if (limit < 1 || limit > PGSTORE_SHADOW_LIST_MAX) {
        err_set(err, CUT_EINVAL, "shadow_list", "limit: expected 1 to %d", PGSTORE_SHADOW_LIST_MAX);
        return -1;
    }
    snprintf(lim, sizeof(lim), "%d", limit);
    r = pgs_run(st, "shadow_list", sql, 1, p, err);
    if (!r)
        return -1;
    return pgs_json_cell(r, false, "shadow_list", out, err);
}

int pgstore_shadow_counts(pgstore *st, json_t **out, cut_err *err)
{
    static const char sql[] = "SELECT coalesce(json_object_agg(class, n), '{}')::text FROM (\n"
                              "  SELECT class, count(*) AS n FROM cutover.shadow_mismatches\n"
                              "  GROUP BY class) t";
    PGresult *r = pgs_run(st, "shadow_counts", sql, 0, NULL, err);

    *out = NULL;
    if (!r)
        return -1;
    return pgs_json_cell(r, false, "shadow_counts", out, err);
}
