/*
 * admin_api: the handlers of the admin API (INTERFACE.md "Admin API"; README "Admin API"):
 * GET and PATCH /admin/flags, GET /admin/status, GET /admin/documents/{storage_key} and
 * GET /admin/audit. The token check is admin.c's, before any of these runs.
 */
#ifndef CUTOVER_ADMIN_API_H
#define CUTOVER_ADMIN_API_H

#include "flags/flags.h"
#include "proxy/proxy.h"

typedef struct admin_api admin_api;

/* The handlers over flags (borrowed; NULL: no database, every call but GET /admin/flags
 * answers 503) and cfg's database_url (read at the call, the string copied). Returns a new
 * value (admin_api_free(), after proxy_free()). */
admin_api *admin_api_new(const struct config *cfg, flags_store *flags);
void admin_api_free(admin_api *a);

/* Adds the sidecar's own backfill to GET /admin/status as member "backfill_runner": fn(arg)
 * returns a new object (its progress) or NULL, on the admin thread, without blocking. Call
 * before proxy_start(). */
void admin_api_set_backfill(admin_api *a, json_t *(*fn)(void *arg), void *arg);

/* Registers the handlers on px (before proxy_start()). False with err set when the table is
 * full. */
bool admin_api_register(admin_api *a, proxy *px, cut_err *err) CUT_MUST_USE;

/* The actor written in the audit rows of a request: "<X-Cutover-Actor>@<client address>",
 * the header's value cut to 64 bytes and reduced to letters, digits and "-_.:/+ ", or
 * "admin-api@<client address>" without one. Writes into out (n bytes). */
void admin_api_actor(const char *header, const char *client, char *out, size_t n);

#endif
