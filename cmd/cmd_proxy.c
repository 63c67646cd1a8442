/*
 * `cutover proxy [--config FILE]`: runs the sidecar (data port and admin port) until
 * SIGTERM or SIGINT, then stops accepting, lets in-flight requests finish within
 * limits.shutdown_grace_s and exits 0. Signals are blocked in every thread and taken
 * synchronously with sigwait() here, so no handler runs inside the servers' threads.
 */
#include "cmd/cli.h"
#include "proxy/proxy.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static void help(FILE *out)
{
    fprintf(out, "usage: cutover proxy [--config FILE]\n\n"
                 "Runs the reverse proxy on `listen`, forwarding to `upstream`, and the admin\n"
                 "port (/healthz, /readyz) on `admin.listen`. SIGTERM or SIGINT: stop\n"
                 "accepting, finish in-flight requests within limits.shutdown_grace_s, exit 0.\n"
                 "The configuration comes from FILE, or $CUTOVER_CONFIG.\n");
}

int cmd_proxy(int argc, char **argv)
{
    const char *path = NULL;
    struct config *cfg = NULL;
    proxy *px = NULL;
    cut_err err = CUT_ERR_INIT;
    int rc = EXIT_WORK;
    sigset_t set;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help(stdout);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else {
            return cli_usage_error("proxy", "unknown argument '%s'", argv[i]);
        }
    }
    cfg = cli_load_config(path);
    if (!cfg)
        return EXIT_USAGE;
    cli_setup_logging(cfg);

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "cutover proxy: curl_global_init failed\n");
        goto out;
    }

    px = proxy_new(cfg, &err);
    if (!px || !proxy_start(px, &err)) {
        fprintf(stderr, "cutover proxy: %s\n", err.msg);
        goto out_curl;
    }
    int sig = 0;
    sigwait(&set, &sig);
    log_msgf(LOG_INFO, "shutdown", "signal %d: draining for up to %d s", sig,
             cfg->limits.shutdown_grace_s);
    proxy_shutdown(px, cfg->limits.shutdown_grace_s);
    log_line(LOG_INFO, "stopped", "proxy stopped", NULL);
    rc = 0;
out_curl:
    proxy_free(px);
    curl_global_cleanup();
out:
    config_free(cfg);
    return rc;
}
