/*
 * admin_backfill: `POST /admin/backfill {"action": "start"|"pause"|"resume"}` on the admin
 * port, driving a backfill_runner (storage/backfill_runner.h) inside the sidecar. The answer
 * is the backfill's progress (backfill_runner_progress()) with "state" the state it goes to
 * and "state_now" the one it is in (the runner's thread carries the action out): 200, or
 * 409 when the state does not allow the action (a pause of a backfill that is not running),
 * 400 for a body that is not {"action": ...} with a known action.
 */
#ifndef CUTOVER_ADMIN_BACKFILL_H
#define CUTOVER_ADMIN_BACKFILL_H

#include "core/core.h"
#include "proxy/proxy.h"
#include "storage/backfill_runner.h"

/* Registers the handler on px (before proxy_start()). r is borrowed and must outlive the
 * proxy. Returns false with err set when the admin table is full. */
bool admin_backfill_register(proxy *px, backfill_runner *r, cut_err *err) CUT_MUST_USE;

/* The S3 key of a backfill row from the upload route's template (tpl, borrowed by the caller
 * as key_arg): the backfill_key_fn of a runner in the sidecar. */
char *admin_backfill_key_of(void *tpl, const struct backfill_row *row, cut_err *err);

#endif
