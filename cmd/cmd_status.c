/*
 * `cutover status [--json] [--config FILE]`: where the migration stands, read from the
 * database of the configuration directly (so it answers without a running sidecar):
 * documents per state, the queue depth, the consistency ratio against the cutover gate, the
 * latest backfill run, the last automatic rollback and the flags. --json prints the same
 * object as GET /admin/status (flags_status_json()), for scripts; without it, a table.
 * The flags are the database's, each flag the table lacks taking the configuration's value.
 * Exit status: 0, 1 when the database cannot be read, 2 bad usage or configuration.
 */
#include "cmd/cli.h"
#include "flags/flags.h"
#include "storage/pgstore.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(FILE *out)
{
    fprintf(out, "usage: cutover status [--json] [--config FILE]\n\n"
                 "Documents per state, queue depth (documents waiting for work), the\n"
                 "consistency ratio (verified or active documents over all not deleted)\n"
                 "against the cutover gate, the latest backfill run, the last automatic\n"
                 "rollback and the flags, read from database_url directly (no sidecar needed).\n"
                 "--json prints the object of GET /admin/status (README \"Admin API\").\n");
}

/* The flags: the configuration's values, overwritten by the database's. */
static flags_snapshot *current_flags(const struct config *cfg, pgstore *st, cut_err *err)
{
    json_error_t je;
    json_t *vals = json_loads(cfg->flags_json ? cfg->flags_json : "{}", 0, &je), *db = NULL;
    flags_snapshot *s = NULL;

    if (vals == NULL)
        vals = json_object();
    if (pgstore_flags_get(st, &db, err) != 0)
        goto out;
    json_object_update(vals, db);
    s = flags_snapshot_new(vals, json_object_size(db) > 0, err);
out:
    json_decref(db);
    json_decref(vals);
    return s;
}

static const char *text_or(const json_t *o, const char *member, const char *def)
{
    const char *s = json_string_value(json_object_get(o, member));
    return s ? s : def;
}

static void print_table(const json_t *o)
{
    const json_t *docs = json_object_get(o, "documents"), *c = json_object_get(o, "consistency");
    const json_t *bf = json_object_get(o, "backfill"), *rb = json_object_get(o, "last_rollback");
    const json_t *flags = json_object_get(o, "flags"), *v;
    const char *k;

    printf("%-24s %12s\n", "STATE", "DOCUMENTS");
    json_object_foreach((json_t *)docs, k, v)
    {
        printf("%-24s %12lld\n", k, (long long)json_integer_value(v));
    }
    printf("\n%-24s %12lld\n", "queue depth",
           (long long)json_integer_value(json_object_get(o, "queue_depth")));
    printf("%-24s %12.6f  (%lld verified of %lld)\n", "consistency",
           json_number_value(json_object_get(c, "ratio")),
           (long long)json_integer_value(json_object_get(c, "verified")),
           (long long)json_integer_value(json_object_get(c, "total")));
    printf("%-24s %12.6f  (%s)\n", "cutover gate", json_number_value(json_object_get(c, "gate")),
           json_is_true(json_object_get(c, "gate_open")) ? "open: percent 100 allowed"
                                                         : "closed: percent 100 refused");
    if (json_is_object(bf)) {
        /* a run row exists only for runs started through POST /admin/backfill */
        printf("%-24s %lld of %lld done, %lld failed, %lld waiting, %.2f/s", "backfill",
               (long long)json_integer_value(json_object_get(bf, "done")),
               (long long)json_integer_value(json_object_get(bf, "documents")),
               (long long)json_integer_value(json_object_get(bf, "failed")),
               (long long)json_integer_value(json_object_get(bf, "waiting")),
               json_number_value(json_object_get(bf, "rate_per_s")));
        if (json_is_integer(json_object_get(bf, "id")))
            printf(" (sidecar run %lld: %s)",
                   (long long)json_integer_value(json_object_get(bf, "id")),
                   text_or(bf, "state", "?"));
        printf("\n");
    } else
        printf("%-24s none\n", "backfill");
    if (json_is_object(rb))
        printf("%-24s %s: %s\n", "last rollback", text_or(rb, "at", "?"),
               text_or(rb, "reason", ""));
    else
        printf("%-24s none\n", "last rollback");
    printf("%-24s %s\n", "last legacy read", text_or(o, "last_legacy_read", "none recorded"));
    printf("\n%-24s %s (%s)\n", "FLAG", "VALUE", text_or(o, "flags_source", "?"));
    json_object_foreach((json_t *)flags, k, v)
    {
        char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
        printf("%-24s %s\n", k, t ? t : "?");
        free(t);
    }
}

int cmd_status(int argc, char **argv)
{
    const char *config_path = NULL;
    bool as_json = false;
    struct config *cfg = NULL;
    pgstore *st = NULL;
    flags_snapshot *s = NULL;
    json_t *o = NULL;
    cut_err err = CUT_ERR_INIT;
    int rc = EXIT_USAGE;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help(stdout);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            as_json = true;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else {
            return cli_usage_error("status", "unknown argument '%s'", argv[i]);
        }
    }
    cfg = cli_load_config(config_path);
    if (cfg == NULL)
        return EXIT_USAGE;
    if (cfg->database_url == NULL || *cfg->database_url == '\0') {
        fprintf(stderr, "cutover status: database_url: not set (configuration or $DATABASE_URL)\n");
        goto out;
    }
    rc = EXIT_WORK;
    st = pgstore_connect(cfg->database_url, &err);
    if (st == NULL || !(s = current_flags(cfg, st, &err)) ||
        flags_status_json(st, s, &o, &err) != 0) {
        fprintf(stderr, "cutover status: %s\n", err.msg);
        goto out;
    }
    if (as_json) {
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
        fputc('\n', stdout);
    } else {
        print_table(o);
    }
    rc = 0;
out:
    json_decref(o);
    flags_snapshot_unref(s);
    pgstore_free(st);
    config_free(cfg);
    return rc;
}
