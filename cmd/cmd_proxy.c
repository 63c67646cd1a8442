/*
 * `cutover proxy [--config FILE]`: runs the sidecar (data port and admin port) until
 * SIGTERM or SIGINT, then stops accepting, lets in-flight requests finish within
 * limits.shutdown_grace_s and exits 0. Signals are blocked in every thread and taken
 * synchronously with sigtimedwait() here, so no handler runs inside the servers' threads.
 *
 * With a database and an S3 bucket configured, it also wires dual-write: the spool writer,
 * the recorders, the journal, the transfer engine, the legacy store and the mirror. With a
 * database it keeps the flags (LISTEN/NOTIFY, with a periodic reload behind) and serves the
 * admin API. With signed-URL routes it wires read cutover too (the notified document cache,
 * its lookup workers, the rewrite, and shadow reads' compares and handler, registered before
 * the rewrite so that they see the app's own URL; it shares dual-write's flags, S3 client and
 * mirror when those run). Between signals, this thread replays the journal into the database when
 * there is one to replay (every 500 ms: a stat() when there is none).
 *
 * With a backfill source as well (and legacy.raw_url), POST /admin/backfill starts, pauses
 * and resumes a backfill on a thread of the sidecar (storage/backfill_runner.h).
 */
#include "cmd/cli.h"
#include "flags/flags.h"
#include "proxy/admin_api.h"
#include "proxy/admin_backfill.h"
#include "proxy/metrics_http.h"
#include "proxy/proxy.h"
#include "proxy/rewrite.h"
#include "proxy/shadow_read.h"
#include "proxy/upload.h"
#include "storage/creds.h"
#include "storage/doccache.h"
#include "storage/journal.h"
#include "storage/legacy.h"
#include "storage/mirror.h"
#include "storage/pgstore.h"
#include "storage/s3.h"
#include "storage/shadow.h"
#include "storage/spool.h"
#include "storage/worker.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Everything dual-write runs on; all NULL when it is not configured. */
struct dual_write {
    spool *spool;
    creds_provider *creds;
    s3_client *s3;
    legacy_store *legacy;
    flags_store *flags;
    flags_rollback *rollback;
    worker_pool *recorder;
    journal *journal;
    mirror *mirror;
    upload *upload;
    pgstore *replay_db;
};

/* Everything read cutover runs on that dual-write does not provide; NULL when not configured. */
struct read_cutover {
    creds_provider *creds;
    s3_client *s3;
    flags_store *flags;
    doccache *cache;
    worker_pool *workers;
    rewrite *rewrite;
    shadow *shadow;           /* shadow reads' compares */
    shadow_read *shadow_read; /* their handler, registered before the rewrite */
};

static bool has_kind(const struct config *cfg, enum route_kind k)
{
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (cfg->routes[i].kind == k)
            return true;
    return false;
}

/* At start, before any upload: the spool files no document needs any more (uploads cut by a
 * crash or a stop) are removed. Only once the journal is replayed, since its records may
 * name spool files; with the database away, they stay until the next start. */
static void sweep_spool(const struct config *cfg, struct dual_write *dw)
{
    cut_err err = CUT_ERR_INIT;
    char **paths = NULL, *prefix = xasprintf("%s/", cfg->spool_dir);
    size_t n = 0;
    long removed;

    if (upload_replay_journal(dw->upload, dw->replay_db, &err) < 0 ||
        pgstore_spool_in_use(dw->replay_db, prefix, &paths, &n, &err) != 0) {
        log_msgf(LOG_WARN, "spool", "leftover spool files kept until the next start: %s", err.msg);
        free(prefix);
        return;
    }
    removed = spool_sweep(cfg->spool_dir, paths, n);
    if (removed > 0)
        log_msgf(LOG_INFO, "spool", "%ld spool files no document needs were removed", removed);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    free(prefix);
}

/* The flags with a database: read now, then kept current by LISTEN/NOTIFY, with a reload
 * every FLAGS_RELOAD_MS as the safety net. Returns a new store or NULL with err set. */
#define FLAGS_RELOAD_MS 5000
static flags_store *flags_start(const struct config *cfg, cut_err *err)
{
    cut_err ferr = CUT_ERR_INIT;
    flags_store *fs = flags_store_new(cfg->database_url, cfg, err);

    if (!fs)
        return NULL;
    if (flags_store_reload(fs, &ferr) != 0)
        log_msgf(LOG_WARN, "flags", "starting with the configuration's flags: %s", ferr.msg);
    if (flags_store_autoreload(fs, FLAGS_RELOAD_MS, err) != 0 || flags_store_listen(fs, err) != 0) {
        flags_store_free(fs);
        return NULL;
    }
    return fs;
}

static bool dual_write_start(const struct config *cfg, proxy *px, struct dual_write *dw,
                             cut_err *err)
{
    char host[128] = "cutover";
    char *jpath = NULL, *owner = NULL;
    bool ok = false;

    if (!has_kind(cfg, ROUTE_UPLOAD) && !has_kind(cfg, ROUTE_DELETE))
        return true;
    if (!cfg->database_url || !cfg->has_s3) {
        log_msgf(LOG_WARN, "dual_write",
                 "upload and delete routes pass through untouched: dual-write needs %s",
                 !cfg->database_url ? "database_url" : "an s3 section");
        return true;
    }
    gethostname(host, sizeof(host) - 1);
    dw->spool = spool_new(cfg->spool_dir, err);
    if (!dw->spool)
        goto out;
    dw->creds = creds_provider_new(&cfg->s3, err);
    if (!dw->creds)
        goto out;
    dw->s3 = s3_client_new(&cfg->s3, dw->creds, err);
    if (!dw->s3)
        goto out;
    xfer_engine *engine = s3_client_engine(dw->s3, err);
    if (!engine)
        goto out;
    /* copies never take a CPU from the requests they mirror */
    xfer_engine_background(engine);
    if (cfg->has_legacy && !(dw->legacy = legacy_new(&cfg->legacy, NULL, err)))
        goto out;
    if (!dw->flags && !(dw->flags = flags_start(cfg, err)))
        goto out;
    struct worker_opts wo = {
        .name = "recorder", .threads = 2, .queue_max = 65536, .database_url = cfg->database_url};
    dw->recorder = worker_pool_start(&wo, err);
    if (!dw->recorder)
        goto out;
    jpath = xasprintf("%s/journal.log", cfg->spool_dir);
    dw->journal = journal_open(jpath, err);
    if (!dw->journal)
        goto out;
    owner = xasprintf("%s:%ld", host, (long)getpid());
    struct mirror_opts mo = {
        .database_url = cfg->database_url,
        .owner = owner,
        .max_inflight = 4 * cfg->workers.mirror,
        .lease_ms = cfg->workers.lease_s * 1000,
        .origin = "upload",
        .background = true,
        .max_attempts = cfg->workers.max_attempts,
        .max_backoff_ms = cfg->workers.max_backoff_s * 1000,
        .outcome = dw->rollback ? flags_rollback_outcome : NULL,
        .outcome_arg = dw->rollback,
    };
    dw->mirror = mirror_start(&mo, dw->s3, engine, dw->legacy, err);
    if (!dw->mirror)
        goto out;
    struct upload_deps d = {
        .spool = dw->spool,
        .recorder = dw->recorder,
        .flags = dw->flags,
        .journal = dw->journal,
        .mirror = dw->mirror,
        .s3 = dw->s3,
    };
    dw->upload = upload_new(cfg, &d, err);
    if (!dw->upload || !upload_register(dw->upload, px, err))
        goto out;
    dw->replay_db = pgstore_open(cfg->database_url);
    sweep_spool(cfg, dw);
    ok = true;
out:
    free(jpath);
    free(owner);
    return ok;
}

static bool read_cutover_start(const struct config *cfg, proxy *px, struct dual_write *dw,
                               struct read_cutover *rc, cut_err *err)
{
    char host[128] = "cutover";

    if (!has_kind(cfg, ROUTE_SIGNED_URL))
        return true;
    if (!cfg->database_url || !cfg->has_s3) {
        log_msgf(LOG_WARN, "read_cutover", "signed-URL routes pass through untouched: %s",
                 !cfg->database_url ? "no database_url" : "no s3 section");
        return true;
    }
    gethostname(host, sizeof(host) - 1);
    if (!dw->s3 && (!(rc->creds = creds_provider_new(&cfg->s3, err)) ||
                    !(rc->s3 = s3_client_new(&cfg->s3, rc->creds, err))))
        return false;
    if (!dw->flags && !(rc->flags = flags_start(cfg, err)))
        return false;
    struct doccache_opts co = {.database_url = cfg->database_url};
    if (!(rc->cache = doccache_start(&co, err)))
        return false;
    struct worker_opts wo = {
        .name = "rewrite", .threads = 2, .queue_max = 65536, .database_url = cfg->database_url};
    if (!(rc->workers = worker_pool_start(&wo, err)))
        return false;
    struct shadow_opts so = {
        .database_url = cfg->database_url,
        .replica = host,
        .concurrency = cfg->shadow.concurrency,
        .bytes_per_s = cfg->shadow.bytes_per_s,
        .timeout_s = cfg->shadow.timeout_s,
        .outcome = dw->rollback ? flags_rollback_outcome : NULL,
        .outcome_arg = dw->rollback,
    };
    if (!(rc->shadow = shadow_start(&so, dw->s3 ? dw->s3 : rc->s3, err)))
        return false;
    struct shadow_read_deps sd = {
        .flags = dw->flags ? dw->flags : rc->flags,
        .shadow = rc->shadow,
        .database_url = cfg->database_url,
    };
    if (!(rc->shadow_read = shadow_read_new(cfg, &sd, err)) ||
        !shadow_read_register(rc->shadow_read, px, err))
        return false;
    struct rewrite_deps d = {
        .flags = dw->flags ? dw->flags : rc->flags,
        .cache = rc->cache,
        .workers = rc->workers,
        .s3 = dw->s3 ? dw->s3 : rc->s3,
        .mirror = dw->mirror,
        .replica = host,
    };
    rc->rewrite = rewrite_new(cfg, &d, err);
    return rc->rewrite && rewrite_register(rc->rewrite, px, err);
}

static void read_cutover_free(struct read_cutover *rc)
{
    worker_pool_free(rc->workers);
    rewrite_free(rc->rewrite);
    shadow_read_free(rc->shadow_read);
    shadow_free(rc->shadow);
    doccache_free(rc->cache);
    flags_store_free(rc->flags);
    s3_client_free(rc->s3);
    creds_provider_free(rc->creds);
    memset(rc, 0, sizeof(*rc));
}

/* The backfill inside the sidecar (POST /admin/backfill): a client of S3 and of the legacy
 * store of its own, so that it does not depend on dual-write being configured. */
struct sidecar_backfill {
    creds_provider *creds;
    s3_client *s3;
    legacy_store *legacy;
    backfill_runner *runner; /* backfill_runner_progress(runner): the progress for /admin/status */
};

static json_t *runner_progress(void *runner)
{
    return backfill_runner_progress(runner);
}

static bool backfill_start(const struct config *cfg, proxy *px, admin_api *api,
                           struct sidecar_backfill *bf, cut_err *err)
{
    char host[128] = "cutover", *owner;
    bool ok;

    if (cfg->backfill.kind == BACKFILL_NONE || !cfg->database_url || !cfg->has_s3 ||
        !cfg->has_legacy)
        return true;
    if (!(bf->creds = creds_provider_new(&cfg->s3, err)) ||
        !(bf->s3 = s3_client_new(&cfg->s3, bf->creds, err)) ||
        !(bf->legacy = legacy_new(&cfg->legacy, NULL, err)))
        return false;
    gethostname(host, sizeof(host) - 1);
    owner = xasprintf("backfill:%s:%ld", host, (long)getpid());
    struct backfill_runner_opts o = {
        .cfg = cfg,
        .key_of = admin_backfill_key_of,
        .key_arg = (void *)backfill_key_template(cfg),
        .s3 = bf->s3,
        .legacy = bf->legacy,
        .owner = owner,
    };
    bf->runner = backfill_runner_new(&o, err);
    free(owner);
    ok = bf->runner && admin_backfill_register(px, bf->runner, err);
    if (ok && api)
        admin_api_set_backfill(api, runner_progress, bf->runner);
    return ok;
}

static void backfill_free(struct sidecar_backfill *bf)
{
    backfill_runner_free(bf->runner);
    legacy_free(bf->legacy);
    s3_client_free(bf->s3);
    creds_provider_free(bf->creds);
    memset(bf, 0, sizeof(*bf));
}

/* The journal's records go to the database as soon as it takes them. */
static void replay(struct dual_write *dw)
{
    cut_err err = CUT_ERR_INIT;
    static uint64_t last_log;
    if (!dw->upload)
        return;
    if (upload_replay_journal(dw->upload, dw->replay_db, &err) < 0 &&
        now_us() - last_log > 30000000u) {
        last_log = now_us();
        log_msgf(LOG_WARN, "journal", "replay postponed: %s", err.msg);
    }
}

/* After the proxy stopped taking requests: the recorders finish (their resumes are ignored
 * from now on), then the rest in reverse order. */
static void dual_write_stop(struct dual_write *dw)
{
    if (dw->recorder)
        worker_pool_stop(dw->recorder);
}

static void dual_write_free(struct dual_write *dw)
{
    mirror_free(dw->mirror);
    flags_rollback_free(dw->rollback);
    worker_pool_free(dw->recorder);
    upload_free(dw->upload);
    journal_close(dw->journal);
    flags_store_free(dw->flags);
    legacy_free(dw->legacy);
    s3_client_free(dw->s3);
    creds_provider_free(dw->creds);
    spool_free(dw->spool);
    pgstore_free(dw->replay_db);
    memset(dw, 0, sizeof(*dw));
}

static void help(FILE *out)
{
    fprintf(out,
            "usage: cutover proxy [--config FILE]\n\n"
            "Runs the reverse proxy on `listen`, forwarding to `upstream`, and the admin\n"
            "port (/healthz, /readyz, /metrics, the dashboard at /; with `database_url` the\n"
            "admin API under /admin/: flags, status, documents, audit) on `admin.listen`.\n"
            "With it, an `s3` section and upload or delete routes, it also mirrors uploads to\n"
            "S3 while the flag dual_write is on (see the README's Dual-write); with\n"
            "signed-URL routes, it answers reads with S3 presigned URLs per read_from_s3.\n"
            "With backfill.source and legacy.raw_url, POST /admin/backfill\n"
            "{\"action\": \"start\"|\"pause\"|\"resume\"} runs the backfill inside the sidecar.\n"
            "SIGTERM or SIGINT: stop accepting, finish in-flight requests within\n"
            "limits.shutdown_grace_s, exit 0. The configuration comes from FILE, or\n"
            "$CUTOVER_CONFIG.\n");
}

int cmd_proxy(int argc, char **argv)
{
    const char *path = NULL;
    struct config *cfg = NULL;
    proxy *px = NULL;
    struct dual_write dw = {0};
    admin_api *api = NULL;
    struct read_cutover rcut = {0};
    proxy_metrics *pm = NULL;
    struct sidecar_backfill bf = {0};
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
    if (px && cfg->database_url &&
        (!(dw.flags = flags_start(cfg, &err)) ||
         !(dw.rollback = flags_rollback_start(dw.flags, &err))))
        goto fail;
    api = px ? admin_api_new(cfg, dw.flags) : NULL;
    if (!px || !admin_api_register(api, px, &err) || !dual_write_start(cfg, px, &dw, &err) ||
        !read_cutover_start(cfg, px, &dw, &rcut, &err) ||
        !backfill_start(cfg, px, api, &bf, &err) ||
        !(pm = proxy_metrics_new(px, cfg, dw.flags, &err)) || !proxy_start(px, &err)) {
    fail:
        fprintf(stderr, "cutover proxy: %s\n", err.msg);
        goto out_curl;
    }
    int sig = 0;
    for (;;) {
        /* the journal's backlog holds new records too (upload.h): replay it often */
        struct timespec ts = {.tv_nsec = 500 * 1000000L};
        replay(&dw);
        sig = sigtimedwait(&set, NULL, &ts);
        if (sig > 0)
            break;
    }
    log_msgf(LOG_INFO, "shutdown", "signal %d: draining for up to %d s", sig,
             cfg->limits.shutdown_grace_s);
    proxy_shutdown(px, cfg->limits.shutdown_grace_s);
    dual_write_stop(&dw);
    log_line(LOG_INFO, "stopped", "proxy stopped", NULL);
    rc = 0;
out_curl:
    dual_write_stop(&dw);
    if (rcut.workers)
        worker_pool_stop(rcut.workers);
    proxy_free(px);
    admin_api_free(api);
    read_cutover_free(&rcut);
    proxy_metrics_free(pm);
    backfill_free(&bf);
    dual_write_free(&dw);
    curl_global_cleanup();
out:
    config_free(cfg);
    return rc;
}
