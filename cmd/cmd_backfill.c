/*
 * `cutover backfill [--config FILE] [--rate N] [--rate-bytes N] [--concurrency N] [--batch N]`:
 * copies every document of the backfill source that is not copied yet, then waits until none
 * of the backfill's documents is left to copy, and prints a summary.
 *
 * Wiring, in this thread: the source (storage/backfill.h) is read a batch at a time; each
 * row's S3 key is built from the upload route's template (proxy/extract.h) and the rows not
 * yet known are recorded `pending` with origin `backfill`. A mirror (storage/mirror.h) runs
 * beside it from the start, claiming queued documents under leases and copying them from
 * `legacy.raw_url` through the transfer engine, HEAD-checked and verified. Because the queue
 * is the only coordination, a second run (after a crash, a kill, a failed run) only adds what
 * is missing and copies what is left, and several runs at once share the work.
 *
 * Throttle: --rate N documents/s is a token bucket at enqueue time (storage/backfill.h): a
 * batch holds at most one second's worth (N rows), after each batch the documents actually
 * inserted are taken from the bucket, and the next batch waits while it is in debt. The same
 * rate, and --rate-bytes, are token buckets of this process's transfer engine on the copies
 * that read the legacy store (xfer.h's xfer_engine_set_legacy_limits()), so that work left in
 * the queue by an earlier run is throttled too; a 429/503 from the store holds every copy.
 * Each process has its own buckets.
 *
 * Progress: on a terminal (stderr) a one-line bar redrawn every second; otherwise a JSON line
 * on stdout every 5 s. At the end a summary: documents of origin `backfill` per state, the
 * ones that did not end verified with their reasons, elapsed time and documents/s.
 * SIGINT/SIGTERM stop it: copies in flight end and are recorded, the rest stays queued.
 */
#include "cmd/cli.h"
#include "proxy/extract.h"
#include "storage/backfill.h"
#include "storage/creds.h"
#include "storage/legacy.h"
#include "storage/mirror.h"
#include "storage/pgstore.h"
#include "storage/s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTED 100 /* bad rows and failed documents named in the summary */

struct run {
    const struct config *cfg;
    const char *tpl;
    bool tty;
    uint64_t start_us, last_progress_us;
    int64_t start_done, start_bytes; /* finished documents and bytes before this run */
    struct pgstore_origin_counts now;
    bool have_counts;
    long bad_rows;
    char *bad[MAX_LISTED];
    size_t nbad;
    struct backfill_enqueued enq;
    bool source_done;
    mirror *mirror;
    uint64_t copied_here; /* documents this process copied and verified */
};

static void help(FILE *out)
{
    fprintf(
        out,
        "usage: cutover backfill [--config FILE] [--rate N] [--rate-bytes N] [--concurrency N]\n"
        "                        [--batch N]\n\n"
        "Reads backfill.source (SQL paged by key, or JSONL), records the documents not known\n"
        "yet as pending (origin backfill), copies them from legacy.raw_url to S3, checks\n"
        "and verifies each, and waits until none is left to copy. Resumable: a second run\n"
        "copies only what is missing; several runs at once share the work.\n\n"
        "  --rate N         documents/s entering the queue (default backfill.rate; 0: none)\n"
        "  --rate-bytes N   bytes/s read from the legacy store, shared by all copies\n"
        "                   (default backfill.rate_bytes; 0: none; suffixes k M G, Ki Mi Gi)\n"
        "  --concurrency N  copies in flight (default backfill.concurrency)\n"
        "  --batch N        rows per source page and per insert (default 500, at most %d)\n\n"
        "Progress: a bar on a terminal, JSON lines every 5 s otherwise; then a summary.\n"
        "Exit 0: every backfilled document verified; 1: some failed (listed) or rows of\n"
        "the source were unusable; 2: bad usage or configuration.\n",
        BACKFILL_MAX_PAGE);
}

static char *key_of(void *arg, const struct backfill_row *row, cut_err *err)
{
    const struct run *r = arg;
    return extract_s3_key(r->tpl, backfill_row_var, (void *)row, err);
}

static int64_t finished(const struct pgstore_origin_counts *c)
{
    return c->counts[DOC_VERIFIED] + c->counts[DOC_ACTIVE] + c->counts[DOC_FAILED] +
           c->counts[DOC_DELETED];
}

/* Documents still to be copied, or being marked verified right now. */
static int64_t left(const struct pgstore_origin_counts *c)
{
    return c->counts[DOC_PENDING] + c->counts[DOC_MISMATCH] + c->settling;
}

static void fmt_bytes(double b, char *out, size_t n)
{
    const char *u[] = {"B", "kB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) {
        b /= 1000;
        i++;
    }
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void progress(struct run *r, pgstore *st, bool force)
{
    uint64_t now = now_us();
    uint64_t every = r->tty ? 1000000u : 5000000u;
    cut_err err = CUT_ERR_INIT;

    if (!force && now - r->last_progress_us < every)
        return;
    r->last_progress_us = now;
    if (pgstore_count_origin(st, "backfill", &r->now, &err) != 0) {
        log_msgf(LOG_WARN, "backfill", "cannot read the progress: %s", err.msg);
        return;
    }
    r->have_counts = true;
    double secs = (double)(now - r->start_us) / 1e6;
    int64_t done = finished(&r->now) - r->start_done;
    int64_t bytes = r->now.done_bytes - r->start_bytes;
    int64_t total = r->now.total, all_done = finished(&r->now);
    double rate = secs > 0 ? (double)done / secs : 0;
    double eta = rate > 0 ? (double)(total - all_done) / rate : -1;
    if (r->tty) {
        char b[32], etas[32];
        int width = 24, fill = total > 0 ? (int)(width * all_done / total) : 0;
        char bar[32];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        fmt_bytes((double)bytes, b, sizeof(b));
        if (eta >= 0 && r->source_done)
            snprintf(etas, sizeof(etas), "ETA %d:%02d", (int)eta / 60, (int)eta % 60);
        else
            snprintf(etas, sizeof(etas), "ETA --");
        fprintf(stderr, "\r[%s] %lld/%lld%s %.0f doc/s %s %s  ", bar, (long long)all_done,
                (long long)total, r->source_done ? "" : "+", rate, b, etas);
        fflush(stderr);
        return;
    }
    json_t *o = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:b}", "event", "backfill_progress",
                          "total", (json_int_t)total, "done", (json_int_t)all_done, "verified",
                          (json_int_t)(r->now.counts[DOC_VERIFIED] + r->now.counts[DOC_ACTIVE]),
                          "failed", (json_int_t)r->now.counts[DOC_FAILED], "pending",
                          (json_int_t)left(&r->now), "bytes", (json_int_t)bytes, "docs_per_s", rate,
                          "enqueued", (json_int_t)r->enq.inserted, "source_done", r->source_done);
    if (eta >= 0 && r->source_done)
        json_object_set_new(o, "eta_s", json_real(eta));
    char *line = json_dumps(o, JSON_COMPACT);
    printf("%s\n", line);
    fflush(stdout);
    free(line);
    json_decref(o);
}

static void note_bad_row(void *arg, const char *source, const struct backfill_row *row)
{
    struct run *r = arg;
    r->bad_rows++;
    fprintf(stderr, "%scutover backfill: %s:%ld: %s\n", r->tty ? "\n" : "", source, row->line,
            row->error);
    if (r->nbad < MAX_LISTED)
        r->bad[r->nbad++] = xasprintf("%s:%ld: %s", source, row->line, row->error);
}

/* Waits up to us for a stop signal; true when one came. */
static bool wait_signal(const sigset_t *set, uint64_t us)
{
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000u),
                          .tv_nsec = (long)(us % 1000000u) * 1000};
    return sigtimedwait(set, NULL, &ts) > 0;
}

/* Reads the whole source into the queue. Returns 0, 1 when stopped by a signal, -1 with err
 * set when the source or the database failed. */
static int enqueue_all(struct run *r, backfill_source *src, pgstore *st, size_t batch, double rate,
                       const sigset_t *set, cut_err *err)
{
    struct backfill_row *rows = xcalloc(batch, sizeof(*rows));
    struct backfill_bucket bucket;
    int rc = -1;

    backfill_bucket_init(&bucket, rate, now_us());
    for (;;) {
        size_t n = 0;
        uint64_t wait;
        while ((wait = backfill_bucket_wait_us(&bucket, now_us())) > 0) {
            if (wait_signal(set, wait > 250000 ? 250000 : wait)) {
                rc = 1;
                goto out;
            }
            progress(r, st, false);
        }
        size_t inserted;
        if (backfill_enqueue_page(src, st, rows, batch, key_of, r, note_bad_row, r, &bucket,
                                  &r->enq, &n, &inserted, err) != 0)
            goto out;
        if (n == 0)
            break;
        if (inserted > 0)
            mirror_kick(r->mirror);
        progress(r, st, false);
        if (wait_signal(set, 0)) {
            rc = 1;
            goto out;
        }
    }
    rc = 0;
out:
    free(rows);
    return rc;
}

/* Waits until no backfill document is left to copy and this process's copies are all
 * recorded. Returns 0, 1 when stopped by a signal, -1 with err set when the database cannot be
 * read. */
static int wait_copied(struct run *r, pgstore *st, const sigset_t *set, cut_err *err)
{
    for (;;) {
        struct mirror_stats ms;
        bool busy;
        if (pgstore_origin_busy(st, "backfill", &busy, err) != 0)
            return -1;
        mirror_stats_get(r->mirror, &ms);
        r->copied_here = ms.verified;
        if (!busy && ms.inflight == 0)
            return 0;
        progress(r, st, false);
        if (wait_signal(set, 200000))
            return 1;
    }
}

static void summary(struct run *r, pgstore *st, bool interrupted)
{
    struct pgstore_problem *probs = NULL;
    size_t nprobs = 0;
    cut_err err = CUT_ERR_INIT;
    double secs = (double)(now_us() - r->start_us) / 1e6;

    if (r->tty)
        fprintf(stderr, "\n");
    if (pgstore_list_problems(st, "backfill", MAX_LISTED, &probs, &nprobs, &err) != 0)
        log_msgf(LOG_WARN, "backfill", "cannot list the failed documents: %s", err.msg);
    int64_t done = finished(&r->now) - r->start_done;
    double rate = secs > 0 ? (double)done / secs : 0;
    json_t *o = json_object(), *states = json_object(), *failures = json_array(),
           *bad = json_array();
    for (int s = 0; s < DOC_NSTATES; s++)
        json_object_set_new(states, doc_state_name((enum doc_state)s),
                            json_integer(r->now.counts[s]));
    for (size_t i = 0; i < nprobs; i++)
        json_array_append_new(failures,
                              json_pack("{s:s,s:s,s:s?}", "key", probs[i].storage_key, "state",
                                        doc_state_name(probs[i].state), "reason", probs[i].reason));
    for (size_t i = 0; i < r->nbad; i++)
        json_array_append_new(bad, json_string(r->bad[i]));
    json_object_set_new(o, "event", json_string("backfill_summary"));
    json_object_set_new(o, "interrupted", json_boolean(interrupted));
    json_object_set_new(o, "states", states);
    json_object_set_new(o, "total", json_integer(r->now.total));
    json_object_set_new(o, "enqueued", json_integer((json_int_t)r->enq.inserted));
    json_object_set_new(o, "already_known", json_integer((json_int_t)r->enq.known));
    json_object_set_new(o, "unusable_rows", json_integer(r->bad_rows));
    json_object_set_new(o, "unusable", bad);
    json_object_set_new(o, "failures", failures);
    json_object_set_new(o, "finished_this_run", json_integer(done));
    json_object_set_new(o, "copied_by_this_process", json_integer((json_int_t)r->copied_here));
    json_object_set_new(o, "bytes_this_run", json_integer(r->now.done_bytes - r->start_bytes));
    json_object_set_new(o, "elapsed_s", json_real(secs));
    json_object_set_new(o, "docs_per_s", json_real(rate));
    if (r->tty) {
        char b[32];
        fmt_bytes((double)(r->now.done_bytes - r->start_bytes), b, sizeof(b));
        printf("backfill %s in %.1f s: %lld documents finished (%.0f/s, %s), %zu enqueued, "
               "%zu already known\n",
               interrupted ? "interrupted" : "done", secs, (long long)done, rate, b,
               r->enq.inserted, r->enq.known);
        printf("  backfill documents:");
        for (int s = 0; s < DOC_NSTATES; s++)
            if (r->now.counts[s])
                printf(" %s %lld", doc_state_name((enum doc_state)s), (long long)r->now.counts[s]);
        printf("\n");
        for (size_t i = 0; i < nprobs; i++)
            printf("  %s %s: %s\n", doc_state_name(probs[i].state), probs[i].storage_key,
                   probs[i].reason ? probs[i].reason : "(no reason recorded)");
        for (size_t i = 0; i < r->nbad; i++)
            printf("  unusable row %s\n", r->bad[i]);
    } else {
        char *line = json_dumps(o, JSON_COMPACT);
        printf("%s\n", line);
        free(line);
    }
    fflush(stdout);
    json_decref(o);
    pgstore_problems_free(probs, nprobs);
}

static bool parse_count(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* A byte rate: a number with an optional k, M, G (powers of 1000) or Ki, Mi, Gi suffix. */
static bool parse_bytes(const char *s, double *out)
{
    char *end;
    double v, mul = 1;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return false;
    if (*end) {
        static const char *const suf[] = {"k", "K", "M", "G", "Ki", "Mi", "Gi", NULL};
        static const double mult[] = {1e3, 1e3, 1e6, 1e9, 1024.0, 1048576.0, 1073741824.0};
        int i;
        for (i = 0; suf[i] && strcmp(end, suf[i]) != 0; i++)
            ;
        if (!suf[i])
            return false;
        mul = mult[i];
    }
    v *= mul;
    if (v > 1e12)
        return false;
    *out = v;
    return true;
}

int cmd_backfill(int argc, char **argv)
{
    const char *path = NULL;
    struct config *cfg = NULL;
    struct cli_transfer t = {0};
    backfill_source *src = NULL;
    pgstore *st = NULL;
    struct run r = {0};
    cut_err err = CUT_ERR_INIT;
    double rate = -1, rate_bytes = -1, conc = -1, batch = 500;
    int rc = EXIT_USAGE;
    bool interrupted = false;
    char *owner = NULL;
    sigset_t set;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help(stdout);
            return 0;
        } else if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(a, "--rate") == 0 && i + 1 < argc) {
            if (!parse_count(argv[++i], 0, 1e6, &rate))
                return cli_usage_error("backfill", "--rate: a number of documents/s, 0..1e6");
        } else if (strcmp(a, "--rate-bytes") == 0 && i + 1 < argc) {
            if (!parse_bytes(argv[++i], &rate_bytes))
                return cli_usage_error("backfill",
                                       "--rate-bytes: bytes/s, 0..1e12, with k M G Ki Mi Gi");
        } else if (strcmp(a, "--concurrency") == 0 && i + 1 < argc) {
            if (!parse_count(argv[++i], 1, 1024, &conc) || conc != (int)conc)
                return cli_usage_error("backfill", "--concurrency: an integer, 1..1024");
        } else if (strcmp(a, "--batch") == 0 && i + 1 < argc) {
            if (!parse_count(argv[++i], 1, BACKFILL_MAX_PAGE, &batch) || batch != (int)batch)
                return cli_usage_error("backfill", "--batch: an integer, 1..%d", BACKFILL_MAX_PAGE);
        } else {
            return cli_usage_error("backfill", "unknown argument '%s'", a);
        }
    }
    cfg = cli_load_config(path);
    if (!cfg)
        return EXIT_USAGE;
    cli_setup_logging(cfg);
    if (cfg->backfill.kind == BACKFILL_NONE) {
        fprintf(stderr, "cutover backfill: no backfill.source in the configuration\n");
        goto out;
    }
    if (!cfg->database_url || !cfg->has_s3 || !cfg->has_legacy) {
        fprintf(stderr, "cutover backfill: needs %s\n",
                !cfg->database_url ? "database_url"
                : !cfg->has_s3     ? "an s3 section"
                                   : "legacy.raw_url (the originals are copied from there)");
        goto out;
    }
    if (rate < 0)
        rate = cfg->backfill.rate;
    /* a batch is at most one second's worth, so that documents enter the queue smoothly */
    if (rate > 0 && batch > rate)
        batch = (double)(long long)rate < rate ? (double)(long long)rate + 1 : rate;
    if (conc < 0)
        conc = cfg->backfill.concurrency;
    if (rate_bytes < 0)
        rate_bytes = cfg->backfill.rate_bytes;
    r.cfg = cfg;
    r.tpl = backfill_key_template(cfg);
    r.tty = isatty(STDERR_FILENO);

    st = cli_store_current("backfill", cfg->database_url, &rc);
    if (!st)
        goto out;
    src = backfill_source_open(&cfg->backfill, cfg->database_url, (size_t)batch, &err);
    if (!src) {
        fprintf(stderr, "cutover backfill: %s: %s\n", err.where, err.msg);
        rc = err.code == CUT_EINVAL ? EXIT_USAGE : EXIT_WORK;
        goto out;
    }

    /* signals are taken synchronously here; every thread started below inherits the mask */
    rc = EXIT_WORK;
    if (cli_transfer_open("backfill", cfg, &set, &t) != 0)
        goto out;
    xfer_engine *engine = t.engine;
    /* the copies themselves start no faster than --rate and read no more than --rate-bytes
     * (also those of documents an earlier run left in the queue) */
    xfer_engine_set_legacy_limits(engine, rate, rate_bytes);
    xfer_engine_set_buffer_budget(engine, BACKFILL_BUFFER_BUDGET);
    owner = cli_owner("backfill");
    struct mirror_opts mo = {
        .database_url = cfg->database_url,
        .owner = owner,
        .max_inflight = (int)conc,
        .lease_ms = cfg->workers.lease_s * 1000,
        .origin = "backfill",
        .max_attempts = cfg->workers.max_attempts,
        .poll_ms = 500,
    };

    if (pgstore_count_origin(st, "backfill", &r.now, &err) != 0) {
        fprintf(stderr, "cutover backfill: %s\n", err.msg);
        goto out;
    }
    r.start_done = finished(&r.now);
    r.start_bytes = r.now.done_bytes;
    r.start_us = now_us();
    r.last_progress_us = r.start_us;
    log_msgf(LOG_INFO, "backfill", "from %s: %lld backfill documents known, %lld finished",
             backfill_source_name(src), (long long)r.now.total, (long long)r.start_done);

    r.mirror = mirror_start(&mo, t.s3, engine, t.legacy, &err);
    if (!r.mirror) {
        fprintf(stderr, "cutover backfill: %s\n", err.msg);
        goto out;
    }
    /* a failure of the source or the database ends the run: what was enqueued stays queued */
    int erc = enqueue_all(&r, src, st, (size_t)batch, rate, &set, &err);
    r.source_done = erc == 0;
    /* copies a killed run recorded but did not mark verified are checked against S3 (those that
     * differ go back to the queue, hence a few rounds) */
    for (int round = 0; erc == 0 && round < 3; round++) {
        size_t nv = 0, nm = 0;
        erc = wait_copied(&r, st, &set, &err);
        if (erc != 0 || backfill_settle_copied(st, t.s3, "backfill", &nv, &nm, &err) != 0) {
            erc = erc != 0 ? erc : -1;
            break;
        }
        if (nv + nm > 0)
            log_msgf(LOG_INFO, "backfill",
                     "interrupted copies checked against S3: %zu verified, %zu to copy again", nv,
                     nm);
        if (nm == 0)
            break;
        mirror_kick(r.mirror);
    }
    if (erc < 0)
        fprintf(stderr, "%scutover backfill: %s\n", r.tty ? "\n" : "", err.msg);
    interrupted = erc == 1;
    /* the copies in flight end and are recorded; the rest stays queued for the next run */
    mirror_free(r.mirror);
    r.mirror = NULL;
    progress(&r, st, true);
    summary(&r, st, interrupted);
    if (erc == 0 && r.bad_rows == 0 && !interrupted && r.have_counts &&
        r.now.counts[DOC_FAILED] + r.now.counts[DOC_MISMATCH] + r.now.counts[DOC_COPIED] +
                left(&r.now) ==
            0)
        rc = 0;
out:
    mirror_free(r.mirror);
    for (size_t i = 0; i < r.nbad; i++)
        free(r.bad[i]);
    free(owner);
    backfill_source_free(src);
    pgstore_free(st);
    cli_transfer_close(&t);
    config_free(cfg);
    return rc;
}
