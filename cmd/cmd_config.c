/*
 * `cutover config check FILE`: loads a configuration exactly as the sidecar would and lists
 * every problem (exit 2) or a one-line summary (exit 0). `cutover config reference` prints
 * the table of every key with its default, generated from the parser's own tables.
 */
#include "cmd/cli.h"

#include <stdio.h>
#include <string.h>

static void help(FILE *out)
{
    fprintf(out, "usage: cutover config check FILE\n"
                 "       cutover config reference\n\n"
                 "check: validates FILE (JSON, see the README's configuration reference) with\n"
                 "the environment it would run with; prints every problem as `field.path:\n"
                 "reason` and exits 2, or prints a summary and exits 0.\n"
                 "reference: prints every configuration key, its type, default and meaning.\n");
}

int cmd_config(int argc, char **argv)
{
    struct config *cfg;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        help(stdout);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "reference") == 0) {
        config_print_reference(stdout);
        return 0;
    }
    if (argc != 3 || strcmp(argv[1], "check") != 0) {
        help(stderr);
        return EXIT_USAGE;
    }
    cfg = cli_load_config(argv[2]);
    if (cfg == NULL)
        return EXIT_USAGE;
    printf("%s: ok (%zu route%s, s3 %s, legacy %s, backfill %s)\n", argv[2], cfg->nroutes,
           cfg->nroutes == 1 ? "" : "s", cfg->has_s3 ? cfg->s3.bucket : "not set",
           cfg->has_legacy ? "set" : "not set",
           cfg->backfill.kind == BACKFILL_SQL     ? "sql"
           : cfg->backfill.kind == BACKFILL_JSONL ? "jsonl"
                                                  : "not set");
    config_free(cfg);
    return 0;
}
