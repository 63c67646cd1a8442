/*
 * `cutover verify [--config FILE] [--deep] [--repair] [--manifest FILE] [--concurrency N]`:
 * checks every copied, verified or active document against S3 (storage/verify.h), repairs
 * what differs when asked, writes the evidence when asked, and reports.
 *
 * Order: one pass (quick, or deep); with --repair, the mismatch documents are copied again
 * from legacy.raw_url and the failed ones retried (a mirror of this process), then a second
 * pass of the same kind over the documents verified since the repair began; with --manifest,
 * the manifest is written last, so it shows the state the report ends with.
 *
 * Progress: on a terminal (stderr) one line redrawn every second; otherwise a JSON line on
 * stdout every 5 s. Then the report: documents per state, the consistency ratio (verified or
 * active over every document not deleted), what this run checked and found, and the documents
 * left in `mismatch` with the recorded and the found checksums. Exit 0 when every check was
 * consistent and no mismatch remains, 1 otherwise (also when a check could not be made, or
 * with --repair when a document is still `failed`), 2 bad usage.
 */
#include "cmd/cli.h"
#include "storage/creds.h"
#include "storage/legacy.h"
#include "storage/pgstore.h"
#include "storage/s3.h"
#include "storage/verify.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTED 1000 /* mismatches and unchecked documents named in the report */

struct vrun {
    bool tty, deep;
    const char *phase;
    sigset_t set;
    uint64_t start_us, pass_start_us, last_us;
    json_t *unchecked; /* [{key, reason}], at most MAX_LISTED */
    int64_t nunchecked;
};

static void help(FILE *out)
{
    fprintf(
        out,
        "usage: cutover verify [--config FILE] [--deep] [--repair] [--manifest FILE]\n"
        "                      [--concurrency N]\n\n"
        "Checks every copied, verified or active document against S3 and reports.\n\n"
        "  (quick)          a HEAD of each object: its size, and its SHA-256 checksum when\n"
        "                   S3 reports one, else its ETag when that is an MD5, against what\n"
        "                   the copy recorded; a `copied` document that agrees is verified\n"
        "  --deep           reads the raw original from legacy.raw_url and the object from\n"
        "                   S3 again, streaming, and compares their SHA-256 with the recorded\n"
        "                   one (the report says which side differs)\n"
        "  --repair         copies every mismatch document again from legacy.raw_url and\n"
        "                   retries the failed ones, then checks them again\n"
        "  --manifest FILE  writes one JSON line per document and a summary line whose\n"
        "                   sha256 is that of the lines above it (head -n -1 FILE | sha256sum)\n"
        "  --concurrency N  checks (or copies) in flight (default backfill.concurrency)\n\n"
        "A difference makes the document `mismatch`, recorded with both checksums and held\n"
        "until --repair. Progress: a line on a terminal, JSON lines every 5 s otherwise.\n"
        "Exit 0: everything checked is consistent and no mismatch remains; 1: mismatches\n"
        "remain, a check could not be made, or (--repair) documents are still failed;\n"
        "2: bad usage or configuration.\n");
}

static bool stop_wait(void *arg, int ms)
{
    struct vrun *r = arg;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    return sigtimedwait(&r->set, NULL, &ts) > 0;
}

static void on_event(void *arg, const char *key, const char *what, const char *detail)
{
    struct vrun *r = arg;
    if (strcmp(what, "unchecked") == 0) {
        r->nunchecked++;
        if (json_array_size(r->unchecked) < MAX_LISTED)
            json_array_append_new(r->unchecked,
                                  json_pack("{s:s,s:s}", "key", key, "reason", detail));
    }
    if (r->tty)
        fprintf(stderr, "\r\033[K%s %s: %s\n", what, key, detail);
}

static void on_progress(void *arg, const struct verify_counts *c)
{
    struct vrun *r = arg;
    uint64_t now = now_us();
    if (now - r->last_us < (r->tty ? 1000000u : 5000000u))
        return;
    r->last_us = now;
    double secs = (double)(now - r->pass_start_us) / 1e6;
    double rate = secs > 0 ? (double)c->checked / secs : 0;
    if (r->tty) {
        fprintf(stderr,
                "\r\033[K%s: %lld checked (%.0f/s), %lld consistent, %lld mismatch, %lld "
                "unchecked",
                r->phase, (long long)c->checked, rate, (long long)c->consistent,
                (long long)c->mismatched, (long long)c->unchecked);
        fflush(stderr);
        return;
    }
    json_t *o = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:f}", "event", "verify_progress", "phase",
                          r->phase, "checked", (json_int_t)c->checked, "consistent",
                          (json_int_t)c->consistent, "mismatched", (json_int_t)c->mismatched,
                          "unchecked", (json_int_t)c->unchecked, "docs_per_s", rate);
    char *line = json_dumps(o, JSON_COMPACT);
    printf("%s\n", line);
    fflush(stdout);
    free(line);
    json_decref(o);
}

static void on_repair_progress(void *arg, const struct verify_repaired *rp)
{
    struct vrun *r = arg;
    uint64_t now = now_us();
    if (now - r->last_us < (r->tty ? 1000000u : 5000000u))
        return;
    r->last_us = now;
    if (r->tty) {
        fprintf(stderr, "\r\033[Krepair: %lld mismatch and %lld failed queued again, %llu copied",
                (long long)rp->released, (long long)rp->retried, (unsigned long long)rp->copied);
        fflush(stderr);
        return;
    }
    json_t *o = json_pack("{s:s,s:s,s:I,s:I,s:I}", "event", "verify_progress", "phase", "repair",
                          "released", (json_int_t)rp->released, "retried", (json_int_t)rp->retried,
                          "copied", (json_int_t)rp->copied);
    char *line = json_dumps(o, JSON_COMPACT);
    printf("%s\n", line);
    fflush(stdout);
    free(line);
    json_decref(o);
}

static json_t *counts_json(const struct verify_counts *c, double secs)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:b}", "checked",
                     (json_int_t)c->checked, "consistent", (json_int_t)c->consistent, "promoted",
                     (json_int_t)c->promoted, "mismatched", (json_int_t)c->mismatched, "s3_side",
                     (json_int_t)c->s3_side, "legacy_side", (json_int_t)c->legacy_side, "stale",
                     (json_int_t)c->stale, "unchecked", (json_int_t)c->unchecked, "bytes",
                     (json_int_t)c->bytes, "elapsed_s", secs, "docs_per_s",
                     secs > 0 ? (double)c->checked / secs : 0.0, "interrupted", c->interrupted);
}

static bool parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* One pass with its timing and its line in the report. */
static int run_pass(struct vrun *r, const char *phase, pgstore *st, xfer_engine *e,
                    legacy_store *legacy, struct verify_opts *vo, json_t *report,
                    struct verify_counts *c, cut_err *err)
{
    r->phase = phase;
    r->pass_start_us = now_us();
    r->last_us = r->pass_start_us;
    int rc = verify_pass(st, e, legacy, vo, c, err);
    double secs = (double)(now_us() - r->pass_start_us) / 1e6;
    if (r->tty)
        fprintf(stderr, "\r\033[K");
    json_object_set_new(report, phase, counts_json(c, secs));
    return rc;
}

static void print_human(json_t *rep)
{
    json_t *states = json_object_get(rep, "states"), *v;
    const char *k;

    printf("verify (%s) %s in %.1f s\n", json_string_value(json_object_get(rep, "mode")),
           json_is_true(json_object_get(rep, "interrupted")) ? "interrupted" : "done",
           json_real_value(json_object_get(rep, "elapsed_s")));
    for (const char *const *ph = (const char *const[]){"pass", "recheck", NULL}; *ph; ph++) {
        json_t *p = json_object_get(rep, *ph);
        if (!p)
            continue;
        printf("  %s: %lld checked (%.0f/s), %lld consistent (%lld newly verified), %lld "
               "mismatch (S3 %lld, raw original %lld), %lld unchecked, %lld changed meanwhile\n",
               *ph, (long long)json_integer_value(json_object_get(p, "checked")),
               json_real_value(json_object_get(p, "docs_per_s")),
               (long long)json_integer_value(json_object_get(p, "consistent")),
               (long long)json_integer_value(json_object_get(p, "promoted")),
               (long long)json_integer_value(json_object_get(p, "mismatched")),
               (long long)json_integer_value(json_object_get(p, "s3_side")),
               (long long)json_integer_value(json_object_get(p, "legacy_side")),
               (long long)json_integer_value(json_object_get(p, "unchecked")),
               (long long)json_integer_value(json_object_get(p, "stale")));
    }
    if ((v = json_object_get(rep, "repair")))
        printf("  repair: %lld mismatch copied again, %lld failed retried, %lld copies verified\n",
               (long long)json_integer_value(json_object_get(v, "released")),
               (long long)json_integer_value(json_object_get(v, "retried")),
               (long long)json_integer_value(json_object_get(v, "copied")));
    printf("  documents:");
    json_object_foreach(states, k, v)
    {
        if (json_integer_value(v))
            printf(" %s %lld", k, (long long)json_integer_value(v));
    }
    printf("\n  consistency: %.6f (verified or active over all not deleted)\n",
           json_real_value(json_object_get(rep, "consistency")));
    size_t i;
    json_array_foreach(json_object_get(rep, "mismatches"), i, v)
    {
        printf("  mismatch %s: %s\n", json_string_value(json_object_get(v, "key")),
               json_string_value(json_object_get(v, "reason"))
                   ? json_string_value(json_object_get(v, "reason"))
                   : "(no reason recorded)");
    }
    json_array_foreach(json_object_get(rep, "unchecked"), i, v)
    {
        printf("  unchecked %s: %s\n", json_string_value(json_object_get(v, "key")),
               json_string_value(json_object_get(v, "reason")));
    }
    if ((v = json_object_get(rep, "manifest")))
        printf("  manifest %s: %lld documents, sha256 %s\n",
               json_string_value(json_object_get(v, "path")),
               (long long)json_integer_value(json_object_get(v, "documents")),
               json_string_value(json_object_get(v, "sha256")));
}

int cmd_verify(int argc, char **argv)
{
    const char *path = NULL, *manifest = NULL;
    struct config *cfg = NULL;
    struct cli_transfer t = {0};
    pgstore *st = NULL;
    struct vrun r = {0};
    cut_err err = CUT_ERR_INIT;
    bool deep = false, repair = false;
    long conc = -1;
    int rc = EXIT_USAGE;
    char *owner = NULL;
    json_t *report = json_object();

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help(stdout);
            json_decref(report);
            return 0;
        } else if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(a, "--deep") == 0) {
            deep = true;
        } else if (strcmp(a, "--repair") == 0) {
            repair = true;
        } else if (strcmp(a, "--manifest") == 0 && i + 1 < argc) {
            manifest = argv[++i];
        } else if (strcmp(a, "--concurrency") == 0 && i + 1 < argc) {
            if (!parse_int(argv[++i], 1, 1024, &conc)) {
                json_decref(report);
                return cli_usage_error("verify", "--concurrency: an integer, 1..1024");
            }
        } else {
            json_decref(report);
            return cli_usage_error("verify", "unknown argument '%s'", a);
        }
    }
    r.unchecked = json_array();
    r.deep = deep;
    cfg = cli_load_config(path);
    if (!cfg)
        goto out;
    cli_setup_logging(cfg);
    if (!cfg->database_url || !cfg->has_s3 || ((deep || repair) && !cfg->has_legacy)) {
        fprintf(stderr, "cutover verify: needs %s\n",
                !cfg->database_url ? "database_url"
                : !cfg->has_s3     ? "an s3 section"
                                   : "legacy.raw_url (--deep and --repair read the originals)");
        goto out;
    }
    if (conc < 0)
        conc = cfg->backfill.concurrency > 0 ? cfg->backfill.concurrency : 32;
    r.tty = isatty(STDERR_FILENO);

    st = cli_store_current("verify", cfg->database_url, &rc);
    if (!st)
        goto out;

    /* signals are taken synchronously; every thread started below inherits the mask */
    rc = EXIT_WORK;
    if (cli_transfer_open("verify", cfg, &r.set, &t) != 0)
        goto out;

    struct verify_opts vo = {
        .deep = deep,
        .concurrency = (int)conc,
        .etag_not_md5 = cfg->s3.sse == SSE_KMS,
        .wait = stop_wait,
        .event = on_event,
        .progress = on_progress,
        .arg = &r,
    };
    struct verify_counts c1 = {0}, c2 = {0};
    bool interrupted = false, pass_failed = false;
    r.start_us = now_us();
    json_object_set_new(report, "event", json_string("verify_summary"));
    json_object_set_new(report, "mode", json_string(deep ? "deep" : "quick"));
    if (run_pass(&r, "pass", st, t.engine, t.legacy, &vo, report, &c1, &err) != 0) {
        fprintf(stderr, "cutover verify: %s\n", err.msg);
        pass_failed = true;
    }
    interrupted = c1.interrupted;
    if (repair && !pass_failed && !interrupted) {
        struct verify_repaired rp = {0};
        char since[64];
        owner = cli_owner("verify");
        struct verify_repair_opts ro = {
            .database_url = cfg->database_url,
            .owner = owner,
            .concurrency = (int)conc,
            .lease_ms = cfg->workers.lease_s * 1000,
            .max_attempts = cfg->workers.max_attempts,
            .wait = stop_wait,
            .progress = on_repair_progress,
            .arg = &r,
        };
        r.last_us = now_us();
        if (pgstore_verify_now(st, since, &err) != 0 ||
            verify_repair(st, &ro, t.s3, t.engine, t.legacy, &rp, &err) != 0) {
            fprintf(stderr, "%scutover verify: repair: %s\n", r.tty ? "\r\033[K" : "", err.msg);
            pass_failed = true;
        } else {
            if (r.tty)
                fprintf(stderr, "\r\033[K");
            json_object_set_new(report, "repair",
                                json_pack("{s:I,s:I,s:I}", "released", (json_int_t)rp.released,
                                          "retried", (json_int_t)rp.retried, "copied",
                                          (json_int_t)rp.copied));
            interrupted = rp.interrupted;
            vo.since = since;
            if (!interrupted &&
                run_pass(&r, "recheck", st, t.engine, t.legacy, &vo, report, &c2, &err) != 0) {
                fprintf(stderr, "cutover verify: %s\n", err.msg);
                pass_failed = true;
            }
            interrupted = interrupted || c2.interrupted;
        }
    }

    /* the report */
    int64_t counts[DOC_NSTATES];
    struct pgstore_mismatch_row *mm = NULL;
    size_t nmm = 0;
    if (pgstore_count_states(st, counts, &err) != 0 ||
        pgstore_verify_mismatches(st, MAX_LISTED, &mm, &nmm, &err) != 0) {
        fprintf(stderr, "cutover verify: %s\n", err.msg);
        goto out;
    }
    json_t *states = json_object(), *mms = json_array();
    for (int s = 0; s < DOC_NSTATES; s++)
        json_object_set_new(states, doc_state_name((enum doc_state)s), json_integer(counts[s]));
    for (size_t i = 0; i < nmm; i++) {
        json_error_t jerr;
        json_t *detail = mm[i].mismatch ? json_loads(mm[i].mismatch, 0, &jerr) : NULL;
        json_t *o = json_pack("{s:s,s:s,s:s?}", "key", mm[i].storage_key, "s3_key", mm[i].s3_key,
                              "reason", mm[i].last_error);
        if (detail)
            json_object_update(o, detail);
        json_decref(detail);
        json_array_append_new(mms, o);
    }
    pgstore_verify_mm_free(mm, nmm);
    json_object_set_new(report, "states", states);
    json_object_set_new(report, "consistency", json_real(verify_consistency(counts)));
    json_object_set_new(report, "mismatches", mms);
    json_object_set_new(report, "unchecked", json_incref(r.unchecked));
    json_object_set_new(report, "unchecked_total", json_integer(r.nunchecked));
    json_object_set_new(report, "interrupted", json_boolean(interrupted));

    if (manifest && !pass_failed && !interrupted) {
        struct verify_manifest_sum ms;
        if (verify_manifest_write(st, manifest, &ms, &err) != 0) {
            fprintf(stderr, "cutover verify: %s\n", err.msg);
            pass_failed = true;
        } else {
            json_object_set_new(report, "manifest",
                                json_pack("{s:s,s:I,s:s}", "path", manifest, "documents",
                                          (json_int_t)ms.documents, "sha256", ms.sha256));
        }
    }
    json_object_set_new(report, "elapsed_s", json_real((double)(now_us() - r.start_us) / 1e6));
    if (r.tty) {
        print_human(report);
    } else {
        char *line = json_dumps(report, JSON_COMPACT);
        printf("%s\n", line);
        free(line);
    }
    fflush(stdout);
    if (!pass_failed && !interrupted && counts[DOC_MISMATCH] == 0 && r.nunchecked == 0 &&
        !(repair && counts[DOC_FAILED] > 0))
        rc = 0;
out:
    free(owner);
    pgstore_free(st);
    cli_transfer_close(&t);
    config_free(cfg);
    json_decref(r.unchecked);
    json_decref(report);
    return rc;
}
