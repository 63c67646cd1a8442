/*
 * cli: the command line. main.c dispatches `cutover <command>` from one table; each command
 * is a function of (argc, argv) where argv[0] is the command's name, and returns the exit
 * status: 0 success, 1 the work failed, 2 bad usage or bad configuration.
 */
#ifndef CUTOVER_CLI_H
#define CUTOVER_CLI_H

#include "core/config.h"
#include "storage/creds.h"
#include "storage/legacy.h"
#include "storage/s3.h"
#include "storage/xfer.h"

#include <signal.h>
#include <stdbool.h>

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

/* What the batch commands (backfill, verify) copy and check with. */
struct cli_transfer {
    bool curl_up;
    creds_provider *creds;
    s3_client *s3;
    xfer_engine *engine;  /* borrowed from s3 */
    legacy_store *legacy; /* NULL when the configuration has no legacy store */
};

/* Blocks SIGTERM and SIGINT (filling *set: the caller takes them synchronously, and every
 * thread started afterwards inherits the mask), ignores SIGPIPE, sets up libcurl and makes
 * t's S3 client, engine and legacy store (when cfg has one) from cfg. Returns 0, or -1 after
 * printing "cutover <cmd>: reason"; call cli_transfer_close() in both cases. */
CUT_MUST_USE int cli_transfer_open(const char *cmd, const struct config *cfg, sigset_t *set,
                                   struct cli_transfer *t);
/* Frees what cli_transfer_open() made (t zeroed, or opened; either way). */
void cli_transfer_close(struct cli_transfer *t);

/* The owner name of this process's leases, "<what>:<host>:<pid>" (new string, free()). */
char *cli_owner(const char *what);

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
