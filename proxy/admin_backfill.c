/*
 * admin_backfill: the admin port's backfill control (see admin_backfill.h). The handler
 * parses the body (at most 1 MiB, the admin port's ceiling), hands the action to the
 * runner, which only records it under its lock (its thread carries it out), and answers the
 * progress snapshot: nothing here waits on the database or on copies.
 */
#include "proxy/admin_backfill.h"
#include "proxy/extract.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

char *admin_backfill_key_of(void *tpl, const struct backfill_row *row, cut_err *err)
{
    return extract_s3_key(tpl, backfill_row_var, (void *)row, err);
}

static void reply_json(struct proxy_admin_reply *reply, int status, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    reply->status = status;
    if (!text || !buf_puts(&reply->body, text) || !buf_puts(&reply->body, "\n"))
        reply->status = 500;
    free(text);
    json_decref(o);
}

static void reply_error(struct proxy_admin_reply *reply, int status, const char *msg)
{
    reply_json(reply, status, json_pack("{s:s}", "error", msg));
}

static void handle(void *arg, const struct proxy_admin_req *req, struct proxy_admin_reply *reply)
{
    backfill_runner *r = arg;
    json_error_t jerr;
    json_t *body = NULL, *o;
    const char *action;
    enum backfill_state now;
    cut_err err = CUT_ERR_INIT;

    body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(body) || !json_is_string(json_object_get(body, "action"))) {
        reply_error(reply, 400, "the body must be {\"action\": \"start\"|\"pause\"|\"resume\"}");
        goto out;
    }
    action = json_string_value(json_object_get(body, "action"));
    if (backfill_runner_control(r, action, &now, &err) != 0 && err.code != CUT_ECONFLICT) {
        reply_error(reply, 400, err.msg);
        goto out;
    }
    o = backfill_runner_progress(r);
    /* the thread carries the action out: "state" is where it goes, "state_now" where it is */
    json_object_set_new(o, "state_now", json_incref(json_object_get(o, "state")));
    json_object_set_new(o, "state", json_string(backfill_state_name(now)));
    if (err_isset(&err))
        json_object_set_new(o, "error", json_string(err.msg));
    reply_json(reply, err_isset(&err) ? 409 : 200, o);
out:
    json_decref(body);
}

bool admin_backfill_register(proxy *px, backfill_runner *r, cut_err *err)
{
    if (!proxy_admin_add(px, "POST", "/admin/backfill", handle, r)) {
        err_set(err, CUT_ELIMIT, "admin", "the admin handler table is full");
        return false;
    }
    return true;
}
