/*
 * cli: the command line. main.c dispatches `cutover <command>` from one table; each command
 * is a function of (argc, argv) where argv[0] is the command's name, and returns the exit
 * status: 0 success, 1 the work failed, 2 bad usage or bad configuration.
 */
#ifndef CUTOVER_CLI_H
#define CUTOVER_CLI_H

#include "core/config.h"

#define EXIT_WORK 1
#define EXIT_USAGE 2

struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
};

/* The table, NULL-terminated (main.c). */
extern const struct cli_command cli_commands[];

/* Loads the configuration from path (or $CUTOVER_CONFIG, or defaults + environment),
 * printing every problem to stderr as "cutover: config: <path>: <reason>".
 * Returns a new config (config_free()) or NULL; the caller then exits EXIT_USAGE. */
struct config *cli_load_config(const char *path);

/* Applies the configuration's log level. */
void cli_setup_logging(const struct config *cfg);

/* Prints "cutover <cmd>: <message>" to stderr and returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) CUT_PRINTF(2, 3);

/* Connects to the state store at url and checks that its schema is the one this build
 * needs. Returns a new store (pgstore_free()), or NULL after printing "cutover <cmd>: reason"
 * with *rc set: EXIT_WORK when the database cannot be read, EXIT_USAGE when the schema is
 * at another version (run `cutover migrate-db`). */
struct pgstore *cli_store_current(const char *cmd, const char *url, int *rc);

/* Commands (one file each: cmd_<name>.c). */
int cmd_config(int argc, char **argv);
int cmd_presign(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_migrate_db(int argc, char **argv);
int cmd_proxy(int argc, char **argv);
int cmd_backfill(int argc, char **argv);
int cmd_flags(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_verify(int argc, char **argv);

#endif
