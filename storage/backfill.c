/*
 * backfill: the source readers and the enqueueing (see backfill.h).
 *
 * The SQL reader wraps the configured query as a subquery and asks for one page at a time:
 *
 *   SELECT * FROM (<query>) AS cutover_src [WHERE ("key")::text > $1]
 *   ORDER BY ("key")::text LIMIT <page>
 *
 * remembering the last key of each page. Comparing and ordering the same expression keeps the
 * pages consistent under any collation, and when the query is a plain table the planner pushes
 * the condition down to the key's index. Every column other than `key` becomes a template
 * variable (its text form); NULL columns are left out.
 *
 * The JSONL reader reads the file one line at a time with a ceiling on a line's length; blank
 * lines are skipped, and a line that is not a JSON object with a `key` becomes an error row
 * naming its line, never the end of the run.
 *
 * Settling: the mirror records a copy (`copied`) and then marks it `verified` in a second
 * transaction; a copier killed in between leaves a document no queue claims again. Once the
 * queue has drained, such documents are checked with a HEAD against what their copy recorded.
 */
#include "storage/backfill.h"

#include "core/metrics.h"
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct backfill_source {
    enum backfill_kind kind;
    char *name;
    /* JSONL */
    FILE *f;
    long line;
    bool eof;
    /* SQL */
    PGconn *conn;
    char *first_sql, *next_sql;
    char *last_key;
    size_t page;
    long rows;
    bool done;
};

void backfill_rows_clear(struct backfill_row *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++) {
        free(rows[i].key);
        json_decref(rows[i].vars);
        free(rows[i].error);
        memset(&rows[i], 0, sizeof(rows[i]));
    }
}

static bool open_sql(backfill_source *s, const struct cfg_backfill *cfg, const char *state_db_url,
                     cut_err *err)
{
    const char *url = cfg->database_url ? cfg->database_url : state_db_url;
    char red[512], msg[400];
    size_t len;

    if (!cfg->sql || !*cfg->sql) {
        err_set(err, CUT_EINVAL, "backfill.source.sql", "the query is empty");
        return false;
    }
    if (!url || !*url) {
        err_set(err, CUT_EINVAL, "backfill.source.database_url",
                "no database to run the query on (and no database_url)");
        return false;
    }
    /* a trailing semicolon cannot stay inside a subquery */
    len = strlen(cfg->sql);
    while (len > 0 && (cfg->sql[len - 1] == ';' || cfg->sql[len - 1] == ' ' ||
                       cfg->sql[len - 1] == '\n' || cfg->sql[len - 1] == '\t'))
        len--;
    s->first_sql = xasprintf("SELECT * FROM (%.*s) AS cutover_src ORDER BY (\"key\")::text "
                             "LIMIT %zu",
                             (int)len, cfg->sql, s->page);
    s->next_sql = xasprintf("SELECT * FROM (%.*s) AS cutover_src WHERE (\"key\")::text > $1 "
                            "ORDER BY (\"key\")::text LIMIT %zu",
                            (int)len, cfg->sql, s->page);
    {
        static const char *const kw[] = {"connect_timeout", "application_name", "dbname", NULL};
        const char *vals[] = {"10", "cutover-backfill", url, NULL};
        s->conn = PQconnectdbParams(kw, vals, 1);
    }
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
        const char *m = s->conn ? PQerrorMessage(s->conn) : "out of memory";
        pgstore_redact_url(url, red, sizeof(red));
        snprintf(msg, sizeof(msg), "%.*s", (int)strcspn(m, "\n"), m);
        err_set(err, CUT_EDB, "backfill.source", "cannot connect to %s: %s", red, msg);
        return false;
    }
    return true;
}

backfill_source *backfill_source_open(const struct cfg_backfill *cfg, const char *state_db_url,
                                      size_t page, cut_err *err)
{
    backfill_source *s = xcalloc(1, sizeof(*s));

    s->kind = cfg->kind;
    s->page = page < 1 ? 1 : page > BACKFILL_MAX_PAGE ? BACKFILL_MAX_PAGE : page;
    switch (cfg->kind) {
    case BACKFILL_JSONL:
        s->name = xstrdup(cfg->jsonl);
        s->f = cfg->jsonl ? fopen(cfg->jsonl, "r") : NULL;
        if (!s->f) {
            err_set(err, CUT_EINVAL, "backfill.source.jsonl", "cannot open %s: %s",
                    cfg->jsonl ? cfg->jsonl : "(none)", strerror(errno));
            goto fail;
        }
        return s;
    case BACKFILL_SQL:
        s->name = xstrdup("sql");
        if (!open_sql(s, cfg, state_db_url, err))
            goto fail;
        return s;
    case BACKFILL_NONE:
        break;
    }
    err_set(err, CUT_EINVAL, "backfill.source", "no backfill source in the configuration");
fail:
    backfill_source_free(s);
    return NULL;
}

void backfill_source_free(backfill_source *s)
{
    if (!s)
        return;
    if (s->f)
        fclose(s->f);
    PQfinish(s->conn);
    free(s->first_sql);
    free(s->next_sql);
    free(s->last_key);
    free(s->name);
    free(s);
}

const char *backfill_source_name(const backfill_source *s)
{
    return s->name;
}

static void row_error(struct backfill_row *r, long line, const char *fmt, const char *detail)
{
    r->line = line;
    r->error = xasprintf(fmt, detail);
}

/* The text form of a JSON scalar used as a key or a variable; NULL for null, objects and
 * arrays. */
static char *scalar_text(const json_t *v)
{
    if (json_is_string(v))
        return xstrndup(json_string_value(v), json_string_length(v));
    if (json_is_integer(v))
        return xasprintf("%lld", (long long)json_integer_value(v));
    if (json_is_real(v))
        return xasprintf("%.17g", json_real_value(v));
    if (json_is_boolean(v))
        return xstrdup(json_is_true(v) ? "true" : "false");
    return NULL;
}

/* A storage key must be usable in the legacy store's URL and as a row's key. */
static const char *key_problem(const char *k, size_t len)
{
    if (len == 0)
        return "the key is empty";
    if (len > BACKFILL_MAX_KEY)
        return "the key is longer than 4096 bytes";
    if (strlen(k) != len)
        return "the key holds a NUL byte";
    if (!utf8_valid(k, len))
        return "the key is not valid UTF-8";
    return NULL;
}

static void parse_line(struct backfill_row *r, long line, const char *text, size_t len)
{
    json_error_t jerr;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *k, *why;
    json_t *v;

    r->line = line;
    if (!o) {
        row_error(r, line, "not JSON: %s", jerr.text);
        return;
    }
    if (!json_is_object(o)) {
        row_error(r, line, "%s", "not a JSON object");
        goto out;
    }
    char *key = scalar_text(json_object_get(o, "key"));
    if (!key || json_is_boolean(json_object_get(o, "key"))) {
        row_error(r, line, "%s",
                  json_object_get(o, "key") ? "\"key\" is not a string or an integer"
                                            : "no \"key\" member");
        free(key);
        goto out;
    }
    if ((why = key_problem(key, json_is_string(json_object_get(o, "key"))
                                    ? json_string_length(json_object_get(o, "key"))
                                    : strlen(key))) != NULL) {
        row_error(r, line, "%s", why);
        free(key);
        goto out;
    }
    r->key = key;
    r->vars = json_object();
    json_object_foreach(o, k, v)
    {
        char *t;
        if (strcmp(k, "key") == 0 || !(t = scalar_text(v)))
            continue;
        json_object_set_new(r->vars, k, json_string(t));
        free(t);
    }
out:
    json_decref(o);
}

/* Reads one line into b (without its newline). Returns 1 with a line, 0 at the end, -1 on a
 * read error. *too_long: the line passed the ceiling (its rest was skipped, b holds nothing). */
static int read_line(FILE *f, struct buf *b, bool *too_long)
{
    char chunk[4096];
    bool any = false;

    buf_reset(b);
    *too_long = false;
    while (fgets(chunk, sizeof(chunk), f)) {
        size_t n = strlen(chunk);
        any = true;
        bool nl = n > 0 && chunk[n - 1] == '\n';
        if (nl)
            n--;
        if (!*too_long && !buf_append(b, chunk, n)) {
            *too_long = true;
            buf_reset(b);
        }
        if (nl)
            return 1;
    }
    if (ferror(f))
        return -1;
    return any ? 1 : 0;
}

static int next_jsonl(backfill_source *s, struct backfill_row *rows, size_t max, size_t *n,
                      cut_err *err)
{
    struct buf b;
    int rc = 0;

    buf_init(&b, BACKFILL_MAX_LINE);
    while (*n < max && !s->eof) {
        bool too_long;
        int got = read_line(s->f, &b, &too_long);
        if (got < 0) {
            err_set(err, CUT_EIO, "backfill.source.jsonl", "cannot read %s at line %ld: %s",
                    s->name, s->line + 1, strerror(errno));
            rc = -1;
            break;
        }
        if (got == 0) {
            s->eof = true;
            break;
        }
        s->line++;
        if (too_long) {
            row_error(&rows[(*n)++], s->line, "the line is longer than %s bytes", "65536");
            continue;
        }
        size_t i = 0;
        while (i < b.len && (b.data[i] == ' ' || b.data[i] == '\t' || b.data[i] == '\r'))
            i++;
        if (i == b.len)
            continue; /* blank */
        parse_line(&rows[(*n)++], s->line, b.data, b.len);
    }
    buf_free(&b);
    return rc;
}

static int next_sql(backfill_source *s, struct backfill_row *rows, size_t max, size_t *n,
                    cut_err *err)
{
    const char *p[1] = {s->last_key};
    PGresult *r;
    int keycol, rc = -1;
    char msg[400];

    if (s->done)
        return 0;
    if (max < s->page) {
        err_set(err, CUT_EINVAL, "backfill", "room for %zu rows, a page has %zu", max, s->page);
        return -1;
    }
    if (s->last_key)
        r = PQexecParams(s->conn, s->next_sql, 1, NULL, p, NULL, NULL, 0);
    else
        r = PQexec(s->conn, s->first_sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *m = PQerrorMessage(s->conn);
        snprintf(msg, sizeof(msg), "%.*s", (int)strcspn(m, "\n"), m);
        err_set(err, CUT_EDB, "backfill.source.sql", "the query failed: %s", msg);
        goto out;
    }
    keycol = PQfnumber(r, "\"key\"");
    if (keycol < 0) {
        err_set(err, CUT_EINVAL, "backfill.source.sql", "the query gives no column named key");
        goto out;
    }
    int nrows = PQntuples(r);
    if ((size_t)nrows < s->page)
        s->done = true;
    for (int i = 0; i < nrows; i++) {
        struct backfill_row *row = &rows[(*n)++];
        const char *k = PQgetvalue(r, i, keycol), *why;
        row->line = ++s->rows;
        if (PQgetisnull(r, i, keycol)) {
            row_error(row, row->line, "%s", "the key is NULL");
            continue;
        }
        if ((why = key_problem(k, (size_t)PQgetlength(r, i, keycol))) != NULL) {
            row_error(row, row->line, "%s", why);
            continue;
        }
        row->key = xstrdup(k);
        row->vars = json_object();
        for (int c = 0; c < PQnfields(r); c++)
            if (c != keycol && !PQgetisnull(r, i, c))
                json_object_set_new(row->vars, PQfname(r, c), json_string(PQgetvalue(r, i, c)));
    }
    if (nrows > 0) {
        free(s->last_key);
        s->last_key = xstrdup(PQgetvalue(r, nrows - 1, keycol));
    }
    rc = 0;
out:
    PQclear(r);
    if (rc != 0) {
        backfill_rows_clear(rows, *n);
        *n = 0;
    }
    return rc;
}

int backfill_source_next(backfill_source *s, struct backfill_row *rows, size_t max, size_t *n,
                         cut_err *err)
{
    *n = 0;
    if (max > BACKFILL_MAX_PAGE)
        max = BACKFILL_MAX_PAGE;
    memset(rows, 0, max * sizeof(*rows));
    if (s->kind == BACKFILL_JSONL)
        return next_jsonl(s, rows, max, n, err);
    return next_sql(s, rows, max, n, err);
}

const char *backfill_key_template(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (cfg->routes[i].kind == ROUTE_UPLOAD)
            return cfg->routes[i].s3_key ? cfg->routes[i].s3_key : "{key}";
    return "{key}";
}

const char *backfill_row_var(void *arg, const char *name, size_t nlen, size_t *len)
{
    const struct backfill_row *r = arg;
    char var[256];
    const json_t *v;

    if (nlen == 3 && memcmp(name, "key", 3) == 0) {
        *len = strlen(r->key);
        return r->key;
    }
    if (nlen >= sizeof(var))
        return NULL;
    memcpy(var, name, nlen);
    var[nlen] = '\0';
    v = json_object_get(r->vars, var);
    if (!json_is_string(v))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

int backfill_enqueue(pgstore *st, backfill_key_fn key_of, void *arg,
                     const struct backfill_row *rows, size_t n, struct backfill_enqueued *out,
                     cut_err *err)
{
    struct pgstore_doc_in *docs = NULL;
    char **owned = NULL;
    size_t nd = 0, inserted = 0, inserted_failed = 0;
    int rc = -1;

    if (n > BACKFILL_MAX_PAGE) {
        err_set(err, CUT_EINVAL, "backfill", "%zu rows in one batch (at most %d)", n,
                BACKFILL_MAX_PAGE);
        return -1;
    }
    if (n == 0)
        return 0;
    docs = xcalloc(n, sizeof(*docs));
    owned = xcalloc(3 * n, sizeof(*owned)); /* s3 key, vars text, reason of each */
    for (size_t i = 0; i < n; i++) {
        const struct backfill_row *r = &rows[i];
        struct pgstore_doc_in *d = &docs[nd];
        cut_err kerr = CUT_ERR_INIT;
        char *s3key;

        if (!r->key)
            continue;
        s3key = key_of(arg, r, &kerr);
        d->storage_key = r->key;
        d->origin = "backfill";
        d->size = -1;
        owned[3 * nd + 1] = json_dumps(r->vars, JSON_COMPACT | JSON_SORT_KEYS);
        d->vars = owned[3 * nd + 1];
        if (s3key) {
            owned[3 * nd] = s3key;
            d->s3_key = s3key;
        } else {
            /* recorded, so that the operator sees it, under the key as it is */
            d->s3_key = r->key;
            owned[3 * nd + 2] = xasprintf("the S3 key cannot be built: %s", kerr.msg);
            d->failed_reason = owned[3 * nd + 2];
        }
        nd++;
    }
    if (pgstore_insert_missing(st, docs, nd, &inserted, &inserted_failed, err) != 0)
        goto out;
    metrics_add(MET_BACKFILL_DOCUMENTS, MET_BACKFILL_ENQUEUED, 0, inserted);
    metrics_add(MET_BACKFILL_DOCUMENTS, MET_BACKFILL_KNOWN, 0, nd - inserted);
    if (out) {
        out->inserted += inserted;
        out->known += nd - inserted;
        out->unbuildable += inserted_failed;
    }
    rc = 0;
out:
    for (size_t i = 0; i < 3 * n; i++)
        free(owned[i]);
    free(owned);
    free(docs);
    return rc;
}

/* Whether S3's answer to a HEAD agrees with what the copy recorded. */
static bool head_agrees(const struct pgstore_doc *d, const struct s3_result *h)
{
    if (d->size < 0 || h->content_length != d->size)
        return false;
    if (!d->s3_etag || !h->etag[0] || strcmp(d->s3_etag, h->etag) != 0)
        return false;
    if (d->s3_sha256 && h->checksum_sha256[0] && strcmp(d->s3_sha256, h->checksum_sha256) != 0)
        return false;
    return true;
}

int backfill_settle_copied(pgstore *st, s3_client *s3, const char *origin, size_t *verified,
                           size_t *mismatched, cut_err *err)
{
    struct pgstore_problem *p = NULL;
    size_t n = 0;
    int rc = -1;

    *verified = *mismatched = 0;
    if (pgstore_list_problems(st, origin, PGSTORE_CLAIM_MAX, &p, &n, err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        struct pgstore_doc d = {0};
        struct s3_result h;
        cut_err herr = CUT_ERR_INIT, terr = CUT_ERR_INIT;

        if (p[i].state != DOC_COPIED)
            continue;
        if (pgstore_doc_get(st, p[i].storage_key, &d, err) != 0) {
            if (err->code == CUT_ENOTFOUND) {
                err_clear(err);
                continue;
            }
            goto out;
        }
        if (d.state != DOC_COPIED) {
            pgstore_doc_clear(&d);
            continue;
        }
        if (s3_head(s3, d.s3_key, &h, &herr) != 0 && herr.code != CUT_ENOTFOUND) {
            /* S3 cannot say: left as it is for a later run or verification */
            log_msgf(LOG_WARN, "backfill", "%s: copied, not checked: %s", d.storage_key, herr.msg);
            pgstore_doc_clear(&d);
            continue;
        }
        bool same = !err_isset(&herr) && head_agrees(&d, &h);
        if (pgstore_transition(st, d.storage_key, d.generation, same ? DOC_VERIFIED : DOC_MISMATCH,
                               same ? "S3 agrees on size and checksum (checked after an "
                                      "interrupted copy)"
                                    : "S3 does not hold what the interrupted copy recorded",
                               &terr) == 0) {
            if (same)
                (*verified)++;
            else
                (*mismatched)++;
        } else if (terr.code != CUT_ECONFLICT) {
            *err = terr;
            pgstore_doc_clear(&d);
            goto out;
        }
        pgstore_doc_clear(&d);
    }
    rc = 0;
out:
    pgstore_problems_free(p, n);
    return rc;
}

void backfill_bucket_init(struct backfill_bucket *b, double rate, uint64_t now)
{
    b->rate = rate;
    b->burst = rate > 1 ? rate : 1;
    b->tokens = 0; /* nothing saved at the start: the first batch goes, then the rate holds */
    b->last_us = now;
}

static void refill(struct backfill_bucket *b, uint64_t now)
{
    if (now > b->last_us) {
        b->tokens += (double)(now - b->last_us) * b->rate / 1e6;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    b->last_us = now;
}

void backfill_bucket_take(struct backfill_bucket *b, double n, uint64_t now)
{
    if (b->rate <= 0)
        return;
    refill(b, now);
    b->tokens -= n;
}

uint64_t backfill_bucket_wait_us(struct backfill_bucket *b, uint64_t now)
{
    if (b->rate <= 0)
        return 0;
    refill(b, now);
    if (b->tokens >= 0)
        return 0;
    return (uint64_t)(-b->tokens * 1e6 / b->rate) + 1;
}

int backfill_enqueue_page(backfill_source *src, pgstore *st, struct backfill_row *rows, size_t max,
                          backfill_key_fn key_of, void *key_arg, backfill_bad_fn bad, void *bad_arg,
                          struct backfill_bucket *bucket, struct backfill_enqueued *enq, size_t *n,
                          size_t *inserted, cut_err *err)
{
    size_t before = enq->inserted;
    int rc = -1;

    *n = 0;
    *inserted = 0;
    if (backfill_source_next(src, rows, max, n, err) != 0)
        goto out;
    for (size_t i = 0; bad && i < *n; i++)
        if (rows[i].error)
            bad(bad_arg, backfill_source_name(src), &rows[i]);
    if (*n > 0 && backfill_enqueue(st, key_of, key_arg, rows, *n, enq, err) != 0)
        goto out;
    *inserted = enq->inserted - before;
    backfill_bucket_take(bucket, (double)*inserted, now_us());
    rc = 0;
out:
    backfill_rows_clear(rows, *n);
    return rc;
}
