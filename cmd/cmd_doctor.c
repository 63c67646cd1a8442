/*
 * `cutover doctor`: checks, before a migration, that this sidecar can do its S3 work:
 * credentials are found, the bucket answers, a test object can be written, read back,
 * compared and deleted, and the local clock agrees with S3's Date header (SigV4 refuses
 * requests more than 15 minutes off). Each check prints one line, "ok" or "FAIL", with the
 * reason; the exit status is 1 when any check failed. It also checks that the database
 * answers with an up-to-date schema, and that the application and the legacy store are
 * reachable: they answer HTTP at all (any status below 500: a probe key is expected to be
 * missing, so "reachable (HTTP 404)" is a success). The legacy store is read with its own
 * fetcher (storage/legacy), on a transfer engine, with its configured headers and timeout.
 */
#include "cmd/cli.h"
#include "storage/creds.h"
#include "storage/pgstore.h"
#include "storage/s3.h"
#include "storage/xfer.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define DOCTOR_OBJECT_BYTES (64 * 1024)
#define SKEW_LIMIT_S (15 * 60)
#define SKEW_WARN_S 60

static int failures;

static void check(bool ok, const char *what, const char *fmt, ...) CUT_PRINTF(3, 4);
static void check(bool ok, const char *what, const char *fmt, ...)
{
    va_list ap;

    printf("%-4s %s: ", ok ? "ok" : "FAIL", what);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (!ok)
        failures++;
}

static void help(FILE *out)
{
    fprintf(out, "usage: cutover doctor [--config FILE]\n\n"
                 "Checks the database (reachable, schema up to date), that the application\n"
                 "and the legacy store are reachable (any answer below 500; a probe key is\n"
                 "expected to be missing), that the spool directory is writable, S3\n"
                 "credentials, that the bucket answers, that a test object can be written,\n"
                 "read back, compared and deleted, and the clock skew against S3.\n"
                 "Prints one line per check (ok / FAIL and why); exit 1 when any failed.\n");
}

struct cmp {
    const unsigned char *want;
    size_t n, off;
    bool differs;
};

static int cmp_sink(void *arg, const void *p, size_t n)
{
    struct cmp *c = arg;

    if (c->off + n > c->n || memcmp(c->want + c->off, p, n) != 0)
        c->differs = true;
    c->off += n;
    return c->differs ? 1 : 0;
}

static void s3_checks(const struct cfg_s3 *s3cfg)
{
    cut_err err = CUT_ERR_INIT;
    creds_provider *cp = creds_provider_new(s3cfg, &err);
    struct creds *cr = NULL;
    s3_client *c = NULL;
    struct s3_result r;
    unsigned char *body = NULL;
    char key[256], host[64] = "host";
    struct cmp cmp;
    time_t server;

    if (cp == NULL || creds_acquire(cp, &cr, &err) != 0) {
        check(false, "credentials", "%s", err.msg);
        goto out;
    }
    check(true, "credentials", "found (%s%s)", creds_source_name(creds_provider_source(cp)),
          cr->session_token ? ", temporary" : "");
    c = s3_client_new(s3cfg, cp, &err);
    if (c == NULL) {
        check(false, "s3 client", "%s", err.msg);
        goto out;
    }
    if (s3_head_bucket(c, &r, &err) != 0) {
        check(false, "bucket", "%s: %s", s3cfg->bucket, err.msg);
    } else {
        check(true, "bucket", "%s answers (HTTP %ld)", s3cfg->bucket, r.status);
    }
    if (r.date[0] && (server = curl_getdate(r.date, NULL)) > 0) {
        long skew = (long)(time(NULL) - server);
        long mag = skew < 0 ? -skew : skew;
        check(mag < SKEW_LIMIT_S, "clock skew", "%+ld s against S3's Date%s", skew,
              mag >= SKEW_LIMIT_S  ? " (SigV4 refuses more than 15 minutes)"
              : mag >= SKEW_WARN_S ? " (fix NTP: close to the 15-minute limit)"
                                   : "");
    } else {
        check(false, "clock skew", "S3 sent no Date header to compare with");
    }
    gethostname(host, sizeof(host) - 1);
    snprintf(key, sizeof(key), "cutover-doctor/%s-%ld-%ld.bin", host, (long)getpid(),
             (long)time(NULL));
    body = xmalloc(DOCTOR_OBJECT_BYTES);
    if (RAND_bytes(body, DOCTOR_OBJECT_BYTES) != 1)
        memset(body, 0x5a, DOCTOR_OBJECT_BYTES);
    err_clear(&err);
    if (s3_put_buffer(c, key, body, DOCTOR_OBJECT_BYTES, NULL, &r, &err) != 0) {
        check(false, "write", "%s", err.msg);
        goto out;
    }
    check(true, "write", "%s (%d bytes, ETag %s)", key, DOCTOR_OBJECT_BYTES, r.etag);
    cmp = (struct cmp){body, DOCTOR_OBJECT_BYTES, 0, false};
    if (s3_get(c, key, cmp_sink, &cmp, &r, &err) != 0 && !cmp.differs) {
        check(false, "read back", "%s", err.msg);
    } else {
        check(!cmp.differs && cmp.off == DOCTOR_OBJECT_BYTES, "read back",
              cmp.differs || cmp.off != DOCTOR_OBJECT_BYTES ? "the bytes differ from those written"
                                                            : "identical");
    }
    err_clear(&err);
    if (s3_delete(c, key, &r, &err) != 0) {
        check(false, "delete", "%s", err.msg);
    } else {
        err_clear(&err);
        bool gone = s3_head(c, key, &r, &err) != 0 && r.status == 404;
        check(gone, "delete", gone ? "deleted" : "still there after DELETE (HTTP %ld)", r.status);
    }
out:
    free(body);
    creds_release(cr);
    s3_client_free(c);
    creds_provider_free(cp);
}

static void database_check(const struct config *cfg)
{
    cut_err err = CUT_ERR_INIT;
    pgstore *st;
    int v;

    if (cfg->database_url == NULL) {
        check(false, "database", "database_url is not set (configuration or $DATABASE_URL)");
        return;
    }
    st = pgstore_connect(cfg->database_url, &err);
    if (st == NULL) {
        check(false, "database", "%s", err.msg);
        return;
    }
    v = pgstore_schema_version(st, &err);
    if (v < 0)
        check(false, "database", "%s", err.msg);
    else if (v < pgstore_latest_version())
        check(false, "database",
              "schema cutover is at version %d, this build needs %d: run "
              "`cutover migrate-db`",
              v, pgstore_latest_version());
    else
        check(true, "database", "reachable, schema cutover at version %d", v);
    pgstore_free(st);
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* GET url; any HTTP answer below 500 counts as reachable. */
static void reach_check(const char *what, const char *url)
{
    CURL *c = curl_easy_init();
    char ebuf[CURL_ERROR_SIZE] = "";
    long status = 0;
    CURLcode rc;

    if (c == NULL) {
        check(false, what, "cannot create an HTTP handle");
        return;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK)
        check(false, what, "no answer: %s", ebuf[0] ? ebuf : curl_easy_strerror(rc));
    else if (status >= 500)
        check(false, what, "answers HTTP %ld", status);
    else
        check(true, what, "reachable (HTTP %ld)", status);
    curl_easy_cleanup(c);
}

/* The spool must be a writable directory: uploads are teed there until they reach S3. */
static void spool_check(const struct config *cfg)
{
    struct statvfs vfs;
    char *probe = xasprintf("%s/.cutover-doctor-%ld", cfg->spool_dir, (long)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0600);

    if (fd < 0) {
        check(false, "spool", "%s: cannot create a file: %s", cfg->spool_dir, strerror(errno));
    } else {
        close(fd);
        unlink(probe);
        if (statvfs(cfg->spool_dir, &vfs) == 0)
            check(true, "spool", "%s writable, %.1f GiB free", cfg->spool_dir,
                  (double)vfs.f_bavail * (double)vfs.f_frsize / (1024.0 * 1024 * 1024));
        else
            check(true, "spool", "%s writable", cfg->spool_dir);
    }
    free(probe);
}

/* A GET of a probe key through the legacy fetcher: 404 is the expected answer. Header
 * values are secrets: the fetcher never prints them, nor does this. */
static void legacy_check(const struct config *cfg)
{
    struct legacy_opts lo = {.max_bytes = 1 << 20, .max_attempts = 1};
    struct legacy_result lr;
    cut_err err = CUT_ERR_INIT;
    legacy_store *st = NULL;
    xfer_engine *eng = NULL;

    if (!cfg->has_legacy) {
        check(false, "legacy store", "no `legacy` section: mismatches cannot be repaired");
        return;
    }
    if ((st = legacy_new(&cfg->legacy, &lo, &err)) == NULL ||
        (eng = xfer_engine_new(NULL, NULL, &err)) == NULL) {
        check(false, "legacy store", "%s", err.msg);
        goto out;
    }
    if (legacy_fetch(st, eng, "cutover-doctor-probe", NULL, NULL, &lr, &err) == 0 ||
        lr.fail == LEGACY_NOT_FOUND || lr.fail == LEGACY_TOO_LARGE ||
        (lr.fail == LEGACY_HTTP_STATUS && lr.status < 500))
        check(true, "legacy store", "reachable (HTTP %ld)", lr.status);
    else if (lr.fail == LEGACY_HTTP_STATUS)
        check(false, "legacy store", "answers HTTP %ld", lr.status);
    else
        check(false, "legacy store", "%s", err.msg);
out:
    xfer_engine_free(eng);
    legacy_free(st);
}

int cmd_doctor(int argc, char **argv)
{
    const char *cfg_path = NULL;
    struct config *cfg;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help(stdout);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            cfg_path = argv[++i];
        } else {
            return cli_usage_error("doctor", "unknown argument '%s'", argv[i]);
        }
    }
    cfg = cli_load_config(cfg_path);
    if (cfg == NULL)
        return EXIT_USAGE;
    if (!cfg->has_s3) {
        fprintf(stderr, "cutover doctor: config: s3: section missing\n");
        config_free(cfg);
        return EXIT_USAGE;
    }
    cli_setup_logging(cfg);
    failures = 0;
    database_check(cfg);
    reach_check("application", cfg->upstream);
    legacy_check(cfg);
    spool_check(cfg);
    s3_checks(&cfg->s3);
    config_free(cfg);
    return failures ? EXIT_WORK : 0;
}
