/*
 * The admin API's handlers. They run on the admin port's connection threads and block on the
 * database; each takes a connection from a small pool of idle ones (pgstore_pool), so that
 * handlers running at once never share one. A database that cannot be reached gives 503 with
 * the reason within libpq's connect_timeout; nothing here retries.
 *
 * Answers are JSON. Errors are {"error": code, "reason": text} (plus "field" on a 400 for a
 * value, and the gate's figures on its 409). Flag changes go through flags_store_change(),
 * which validates, merges, applies the cutover gate and audits; this file only maps the HTTP
 * request onto it and its outcome onto a status code.
 */
#include "proxy/admin_api.h"

#include "storage/pgstore.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_IDLE 4
#define REASON_MAX 1000
#define AUDIT_DEFAULT 50

struct admin_api {
    flags_store *flags;
    char *url;                      /* NULL: no database */
    pgstore_pool *pool;             /* NULL: no database */
    json_t *(*backfill)(void *arg); /* NULL: no backfill inside this sidecar */
    void *backfill_arg;
};

void admin_api_set_backfill(admin_api *a, json_t *(*fn)(void *arg), void *arg)
{
    a->backfill = fn;
    a->backfill_arg = arg;
}

admin_api *admin_api_new(const struct config *cfg, flags_store *flags)
{
    admin_api *a = xcalloc(1, sizeof(*a));
    a->flags = flags;
    a->url = cfg->database_url && *cfg->database_url ? xstrdup(cfg->database_url) : NULL;
    a->pool = a->url ? pgstore_pool_new(a->url, POOL_IDLE) : NULL;
    return a;
}

void admin_api_free(admin_api *a)
{
    if (a == NULL)
        return;
    pgstore_pool_free(a->pool);
    free(a->url);
    free(a);
}

static pgstore *db_take(admin_api *a)
{
    return pgstore_pool_take(a->pool);
}

static void db_give(admin_api *a, pgstore *st)
{
    pgstore_pool_give(a->pool, st);
}

void admin_api_actor(const char *header, const char *client, char *out, size_t n)
{
    char who[65];
    size_t k = 0;

    for (const char *p = header; p && *p && k < sizeof(who) - 1; p++) {
        char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-_.:/+ ", c) != NULL)
            who[k++] = c;
    }
    who[k] = '\0';
    snprintf(out, n, "%s@%s", k ? who : "admin-api", client ? client : "?");
}

/* ---- answers ---------------------------------------------------------------------------- */

/* Sets the reply to o (taken over) as compact JSON with a newline. */
static void reply_json(struct proxy_admin_reply *rep, int status, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    rep->status = status;
    buf_reset(&rep->body);
    if (text == NULL || !buf_puts(&rep->body, text) || !buf_puts(&rep->body, "\n")) {
        rep->status = 500;
        buf_reset(&rep->body);
        if (!buf_puts(&rep->body, "{\"error\":\"internal\",\"reason\":\"answer too large\"}\n"))
            rep->status = 500;
    }
    free(text);
    json_decref(o);
}

static json_t *error_obj(const char *code, const char *reason)
{
    json_t *o = json_object();
    json_object_set_new(o, "error", json_string(code));
    json_object_set_new(o, "reason", json_string(reason));
    return o;
}

static void reply_error(struct proxy_admin_reply *rep, int status, const char *code,
                        const char *reason)
{
    reply_json(rep, status, error_obj(code, reason));
}

/* The reply for a failed call: 404 unknown, 400 bad input, 503 the database. */
static void reply_err(struct proxy_admin_reply *rep, const cut_err *err)
{
    if (err->code == CUT_ENOTFOUND)
        reply_error(rep, 404, "not_found", err->msg);
    else if (err->code == CUT_EINVAL)
        reply_error(rep, 400, "invalid", err->msg);
    else if (err->code == CUT_ELIMIT)
        reply_error(rep, 500, "too_large", err->msg);
    else
        reply_error(rep, 503, "database_unavailable", err->msg);
}

static bool need_db(admin_api *a, struct proxy_admin_reply *rep)
{
    if (a->url && a->flags)
        return true;
    reply_error(rep, 503, "no_database", "no database_url is configured");
    return false;
}

/* ---- handlers --------------------------------------------------------------------------- */

static void h_flags_get(void *arg, const struct proxy_admin_req *req, struct proxy_admin_reply *rep)
{
    admin_api *a = arg;
    flags_snapshot *s;
    (void)req;
    if (!a->flags) {
        reply_error(rep, 503, "no_database", "no database_url is configured");
        return;
    }
    s = flags_store_current(a->flags);
    reply_json(rep, 200, flags_snapshot_json(s));
    flags_snapshot_unref(s);
}

static void h_flags_patch(void *arg, const struct proxy_admin_req *req,
                          struct proxy_admin_reply *rep)
{
    admin_api *a = arg;
    json_error_t je;
    json_t *body = NULL, *patch = NULL, *x;
    const char *reason = NULL;
    struct flags_change c = {0};
    struct flags_gate g;
    flags_snapshot *now = NULL;
    cut_err err = CUT_ERR_INIT;
    char actor[160];

    if (!need_db(a, rep))
        return;
    body = json_loadb(req->body, req->body_len, 0, &je);
    if (!json_is_object(body)) {
        char why[256];
        snprintf(why, sizeof(why), "body: expected a JSON object of flag: value (%s)",
                 body ? "not an object" : je.text);
        reply_error(rep, 400, "invalid", why);
        goto out;
    }
    patch = json_deep_copy(body);
    if ((x = json_object_get(body, "reason")) != NULL) {
        if (!json_is_string(x) && !json_is_null(x)) {
            reply_error(rep, 400, "invalid", "reason: expected a string");
            goto out;
        }
        reason = json_string_value(x);
        if (reason && strlen(reason) > REASON_MAX) {
            reply_error(rep, 400, "invalid", "reason: at most 1000 bytes");
            goto out;
        }
        json_object_del(patch, "reason");
    }
    if ((x = json_object_get(body, "force")) != NULL) {
        if (!json_is_boolean(x)) {
            reply_error(rep, 400, "invalid", "force: expected true or false");
            goto out;
        }
        c.force = json_is_true(x);
        json_object_del(patch, "force");
    }
    admin_api_actor(req->actor, req->client, actor, sizeof(actor));
    c.patch = patch;
    c.actor = actor;
    c.reason = reason;
    if (flags_store_change(a->flags, &c, &g, &now, &err) != 0) {
        if (err.code == CUT_EINVAL) {
            json_t *o = error_obj("invalid", err.msg);
            json_object_set_new(o, "field", json_string(err.where));
            reply_json(rep, 400, o);
        } else if (err.code == CUT_ECONFLICT && strcmp(err.where, "cutover_gate") == 0) {
            json_t *o = error_obj("cutover_gate", err.msg);
            json_object_set_new(o, "verified", json_integer(g.verified));
            json_object_set_new(o, "total", json_integer(g.total));
            json_object_set_new(o, "ratio", json_real(g.ratio));
            json_object_set_new(o, "gate", json_real(g.gate));
            reply_json(rep, 409, o);
        } else if (err.code == CUT_ECONFLICT) {
            reply_error(rep, 409, "conflict", err.msg);
        } else {
            reply_error(rep, 503, "database_unavailable", err.msg);
        }
        goto out;
    }
    reply_json(rep, 200, flags_snapshot_json(now));
out:
    flags_snapshot_unref(now);
    json_decref(patch);
    json_decref(body);
}

static void h_status(void *arg, const struct proxy_admin_req *req, struct proxy_admin_reply *rep)
{
    admin_api *a = arg;
    cut_err err = CUT_ERR_INIT;
    flags_snapshot *s;
    pgstore *st;
    json_t *o = NULL;
    (void)req;

    if (!need_db(a, rep))
        return;
    s = flags_store_current(a->flags);
    st = db_take(a);
    if (flags_status_json(st, s, &o, &err) != 0) {
        reply_err(rep, &err);
    } else {
        if (a->backfill) {
            json_t *b = a->backfill(a->backfill_arg);
            json_object_set_new(o, "backfill_runner", b ? b : json_null());
        }
        reply_json(rep, 200, o);
    }
    db_give(a, st);
    flags_snapshot_unref(s);
}

#define DOCS_PREFIX "/admin/documents/"

static void h_document(void *arg, const struct proxy_admin_req *req, struct proxy_admin_reply *rep)
{
    admin_api *a = arg;
    cut_err err = CUT_ERR_INIT;
    const char *raw = req->raw_path;
    char *key = NULL;
    json_t *o = NULL;
    pgstore *st;
    size_t n;
    long len;

    if (!need_db(a, rep))
        return;
    /* the key from the path as sent: a %2F in a key is a slash of the key */
    if (strncmp(raw, DOCS_PREFIX, strlen(DOCS_PREFIX)) != 0) {
        reply_error(rep, 400, "invalid", "the path must be /admin/documents/{storage_key}");
        return;
    }
    raw += strlen(DOCS_PREFIX);
    n = strlen(raw);
    key = xmalloc(n + 1);
    len = pct_decode(raw, n, key, n + 1);
    if (len <= 0 || strlen(key) != (size_t)len) {
        reply_error(rep, 400, "invalid",
                    len == 0 ? "storage_key: empty" : "storage_key: malformed percent-encoding");
        goto out;
    }
    st = db_take(a);
    if (pgstore_document_json(st, key, &o, &err) != 0)
        reply_err(rep, &err);
    else
        reply_json(rep, 200, o);
    db_give(a, st);
out:
    free(key);
}

static void h_audit(void *arg, const struct proxy_admin_req *req, struct proxy_admin_reply *rep)
{
    admin_api *a = arg;
    cut_err err = CUT_ERR_INIT;
    char *v = NULL, *end = NULL;
    long limit = AUDIT_DEFAULT;
    json_t *o = NULL;
    pgstore *st;
    int got;

    if (!need_db(a, rep))
        return;
    got = proxy_admin_query_get(req, "limit", &v);
    if (got != 0) {
        limit = v && *v ? strtol(v, &end, 10) : -1;
        if (got < 0 || !v || !*v || *end != '\0' || limit < 1 || limit > PGSTORE_AUDIT_MAX) {
            reply_error(rep, 400, "invalid", "limit: expected a whole number from 1 to 1000");
            goto out;
        }
    }
    st = db_take(a);
    if (pgstore_audit_list(st, NULL, (int)limit, &o, &err) != 0)
        reply_err(rep, &err);
    else
        reply_json(rep, 200, o);
    db_give(a, st);
out:
    free(v);
}

bool admin_api_register(admin_api *a, proxy *px, cut_err *err)
{
    if (!proxy_admin_add(px, "GET", "/admin/flags", h_flags_get, a) ||
        !proxy_admin_add(px, "PATCH", "/admin/flags", h_flags_patch, a) ||
        !proxy_admin_add(px, "GET", "/admin/status", h_status, a) ||
        !proxy_admin_add(px, "GET", DOCS_PREFIX "*", h_document, a) ||
        !proxy_admin_add(px, "GET", "/admin/audit", h_audit, a)) {
        err_set(err, CUT_ELIMIT, "admin", "the admin port's handler table is full");
        return false;
    }
    return true;
}
