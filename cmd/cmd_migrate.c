/*
 * `cutover migrate-db`: creates or upgrades schema `cutover`. Idempotent, and safe when
 * several replicas run it at once (pgstore_migrate holds an advisory lock).
 */
#include "cmd/cli.h"
#include "storage/pgstore.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

static void help(FILE *out)
{
    fprintf(out, "usage: cutover migrate-db [--config FILE] [--database-url URL]\n\n"
                 "Creates or upgrades cutover's schema `cutover` in PostgreSQL. The database is\n"
                 "database_url from the configuration, or $DATABASE_URL, or --database-url.\n"
                 "Idempotent; replicas may run it at the same time.\n");
}

int cmd_migrate_db(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"database-url", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config_path = NULL, *url = NULL;
    struct config *cfg = NULL;
    pgstore *st = NULL;
    cut_err err = CUT_ERR_INIT;
    int ch, from = 0, to = 0, rc = EXIT_WORK;

    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:d:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 'd':
            url = optarg;
            break;
        case 'h':
            help(stdout);
            return 0;
        default:
            help(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc)
        return cli_usage_error("migrate-db", "unexpected argument '%s'", argv[optind]);
    cfg = cli_load_config(config_path);
    if (cfg == NULL)
        return EXIT_USAGE;
    if (url == NULL)
        url = cfg->database_url;
    if (url == NULL) {
        fprintf(stderr, "cutover migrate-db: database_url: not set (configuration, "
                        "$DATABASE_URL or --database-url)\n");
        rc = EXIT_USAGE;
        goto out;
    }
    st = pgstore_connect(url, &err);
    if (st == NULL || pgstore_migrate(st, &from, &to, &err) != 0) {
        fprintf(stderr, "cutover migrate-db: %s: %s\n", err.where, err.msg);
        goto out;
    }
    if (from == to)
        printf("schema cutover is up to date (version %d)\n", to);
    else
        printf("schema cutover upgraded from version %d to %d\n", from, to);
    rc = 0;
out:
    pgstore_free(st);
    config_free(cfg);
    return rc;
}
