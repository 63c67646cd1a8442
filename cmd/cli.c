/*
 * Shared pieces of the command line: loading the configuration with every problem printed
 * (the flags' rules included, checked here explicitly since core/config does not know them),
 * and usage errors in one format.
 */
#include "cmd/cli.h"

#include "flags/flags.h"
#include "storage/pgstore.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct config *cli_load_config(const char *path)
{
    struct cfg_problems problems = {0};
    struct config *cfg;

    cfg = config_load(path, &problems);
    /* core/config keeps the flags section uninterpreted; their rules live in flags/ */
    if (cfg != NULL)
        flags_check_config(cfg, &problems);
    if (cfg == NULL || problems.n > 0) {
        config_free(cfg);
        cfg = NULL;
        for (size_t i = 0; i < problems.n; i++)
            fprintf(stderr, "cutover: config: %s\n", problems.lines[i]);
        cfg_problems_free(&problems);
    }
    return cfg;
}

void cli_setup_logging(const struct config *cfg)
{
    log_set_level(cfg->log_level);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "cutover %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see `cutover %s --help`)\n", cmd);
    return EXIT_USAGE;
}

pgstore *cli_store_current(const char *cmd, const char *url, int *rc)
{
    cut_err err = CUT_ERR_INIT;
    pgstore *st = pgstore_connect(url, &err);
    int v;

    if (!st) {
        fprintf(stderr, "cutover %s: %s\n", cmd, err.msg);
        *rc = EXIT_WORK;
        return NULL;
    }
    if ((v = pgstore_schema_version(st, &err)) == pgstore_latest_version())
        return st;
    if (v < 0)
        fprintf(stderr, "cutover %s: %s\n", cmd, err.msg);
    else
        fprintf(stderr,
                "cutover %s: the schema is at version %d, this build needs %d: run "
                "`cutover migrate-db` first\n",
                cmd, v, pgstore_latest_version());
    *rc = v < 0 ? EXIT_WORK : EXIT_USAGE;
    pgstore_free(st);
    return NULL;
}

int cli_transfer_open(const char *cmd, const struct config *cfg, sigset_t *set,
                      struct cli_transfer *t)
{
    cut_err err = CUT_ERR_INIT;

    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "cutover %s: curl_global_init failed\n", cmd);
        return -1;
    }
    t->curl_up = true;
    t->creds = creds_provider_new(&cfg->s3, &err);
    if (t->creds)
        t->s3 = s3_client_new(&cfg->s3, t->creds, &err);
    t->engine = t->s3 ? s3_client_engine(t->s3, &err) : NULL;
    if (t->engine && cfg->has_legacy)
        t->legacy = legacy_new(&cfg->legacy, NULL, &err);
    if (!t->engine || (cfg->has_legacy && !t->legacy)) {
        fprintf(stderr, "cutover %s: %s\n", cmd, err.msg);
        return -1;
    }
    return 0;
}

void cli_transfer_close(struct cli_transfer *t)
{
    legacy_free(t->legacy);
    s3_client_free(t->s3);
    creds_provider_free(t->creds);
    if (t->curl_up)
        curl_global_cleanup();
    memset(t, 0, sizeof(*t));
}

char *cli_owner(const char *what)
{
    char host[128] = "cutover";
    gethostname(host, sizeof(host) - 1);
    return xasprintf("%s:%s:%ld", what, host, (long)getpid());
}
