/*
 * main: `cutover <command> [options]`. Commands are dispatched from one table, which is
 * also what `cutover --help` prints; a command is listed only once it works.
 */
#include "cmd/cli.h"

#include <stdio.h>
#include <string.h>

const struct cli_command cli_commands[] = {
    {"config",
     "config check FILE: validate a configuration, list every problem;\n"
     "               config reference: print every key with its type, default and meaning",
     cmd_config},
    {"migrate-db", "create or upgrade the schema `cutover` in PostgreSQL (idempotent)",
     cmd_migrate_db},
    {"proxy", "run the sidecar: reverse proxy on `listen`, admin port on `admin.listen`",
     cmd_proxy},
    {"backfill",
     "copy every document of backfill.source not yet copied (resumable, shared by\n"
     "               several runs), verify each, summarise; --rate N, --concurrency N",
     cmd_backfill},
    {"verify",
     "check copied documents against S3 (--deep: and the raw originals), --repair what\n"
     "               differs, --manifest FILE for an auditor; report and exit 1 on mismatches",
     cmd_verify},
    {"presign", "print an S3 presigned URL (GET or PUT) for an object key", cmd_presign},
    {"doctor",
     "check before a migration: the database and its schema, the application and the\n"
     "               legacy store (reachable), the spool directory (writable), credentials,\n"
     "               bucket write/read/delete and clock skew",
     cmd_doctor},
    {"status",
     "documents per state, queue depth, consistency ratio against the cutover gate,\n"
     "               backfill, last rollback, flags (from the database); --json",
     cmd_status},
    {"flags",
     "flags get | flags set NAME=VALUE... [--reason TEXT] [--force]: read or change\n"
     "               the flags through a sidecar's admin API (--admin URL)",
     cmd_flags},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: cutover <command> [--config FILE] [options]\n\n"
                 "Moves an application's documents from a legacy store to Amazon S3 while it\n"
                 "keeps serving. Commands:\n\n");
    for (const struct cli_command *c = cli_commands; c->name; c++)
        fprintf(out, "  %-12s %s\n", c->name, c->summary);
    fprintf(out, "\n`cutover <command> --help` tells more. Exit status: 0 success, 1 the work\n"
                 "failed, 2 bad usage or configuration.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("cutover 0.1.0\n");
        return 0;
    }
    for (const struct cli_command *c = cli_commands; c->name; c++)
        if (strcmp(argv[1], c->name) == 0)
            return c->run(argc - 1, argv + 1);
    fprintf(stderr, "cutover: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
