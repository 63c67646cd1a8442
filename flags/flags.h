/*
 * flags: the migration's switches (INTERFACE.md "Flags"): their names, defaults and rules,
 * and the store that keeps them in PostgreSQL (cutover.flags) for every replica.
 *
 * Flag values reach the rest of cutover only as a flags_snapshot: immutable, and validated
 * when it is built (a value that breaks a rule never becomes a snapshot). The configuration's
 * "flags" section is uninterpreted text in core/config; this module is the only way from it,
 * or from the database, to values.
 *
 * The proxy's event loops read the current snapshot through a flags_reader, without a lock;
 * a reload (and, later, LISTEN/NOTIFY) swaps it. See flags.c for how an old snapshot is freed
 * safely while readers may still hold it.
 */
#ifndef CUTOVER_FLAGS_H
#define CUTOVER_FLAGS_H

#include "core/config.h"

#include <jansson.h>

/* ---- rules --------------------------------------------------------------------------------- */

/* Every flag with its default value. Returns a new object (json_decref()). */
json_t *flags_defaults(void) CUT_MUST_USE;

/* Checks one flag's value. Returns true when valid; otherwise false with err set to
 * CUT_EINVAL, where "flags.NAME" and the message "flags.NAME: reason", the reason naming the
 * member at fault ("flags.read_from_s3: percent: expected a number from 0 to 100"). Unknown
 * names fail. */
bool flags_validate(const char *name, const json_t *value, cut_err *err) CUT_MUST_USE;

/* Checks the configuration's flags section, adding "flags.NAME: reason" to p for each bad
 * value. `cutover config check` (and every command loading a configuration) calls it. */
void flags_check_config(const struct config *cfg, struct cfg_problems *p);

/* ---- snapshots ----------------------------------------------------------------------------- */

/* A complete, validated, immutable set of flag values, reference counted. */
typedef struct flags_snapshot flags_snapshot;

/* Builds a snapshot from values (an object name: value; a flag it lacks takes its default).
 * Every value is validated; the first bad one refuses the whole snapshot with
 * "flags.NAME: reason". Returns a new snapshot (one reference: flags_snapshot_unref()) or
 * NULL with err set. from_db says whether the values came from the database. */
flags_snapshot *flags_snapshot_new(const json_t *values, bool from_db, cut_err *err) CUT_MUST_USE;
/* The same from the configuration's flags section (from_db false). */
flags_snapshot *flags_snapshot_from_config(const struct config *cfg, cut_err *err) CUT_MUST_USE;
/* Takes one more reference (returns s); any thread that holds a reference may call it. */
flags_snapshot *flags_snapshot_ref(const flags_snapshot *s);
/* Drops one reference; the last one frees. NULL is fine. */
void flags_snapshot_unref(flags_snapshot *s);

/* Increases with every snapshot built in this process. */
uint64_t flags_snapshot_version(const flags_snapshot *s);
/* False for the configuration's values (the database not read yet): a caller in doubt
 * leaves the app's answer alone. */
bool flags_snapshot_from_db(const flags_snapshot *s);

bool flags_dual_write(const flags_snapshot *s);
double flags_shadow_read(const flags_snapshot *s);
double flags_read_percent(const flags_snapshot *s); /* read_from_s3.percent */
double flags_cutover_gate(const flags_snapshot *s);
struct flags_auto_rollback {
    bool enabled;
    double max_error_rate;
    int window_s;
    int min_samples;
};
struct flags_auto_rollback flags_auto_rollback(const flags_snapshot *s);
/* One flag's value, borrowed: valid while the caller holds s. NULL for an unknown name. */
const json_t *flags_snapshot_value(const flags_snapshot *s, const char *name);
/* All flags as one object. Returns a new object (json_decref()). */
json_t *flags_snapshot_json(const flags_snapshot *s) CUT_MUST_USE;

/* ---- the store ----------------------------------------------------------------------------- */

typedef struct flags_store flags_store;

/* A store over cutover.flags at database_url (copied), with its own connection. Its first
 * snapshot is the configuration's (validated: an invalid flags section is refused here with
 * "flags.NAME: reason"), until flags_store_reload() reads the database. Does not connect.
 * Returns a new store (flags_store_free(), after every reader is freed) or NULL. */
flags_store *flags_store_new(const char *database_url, const struct config *cfg,
                             cut_err *err) CUT_MUST_USE;
void flags_store_free(flags_store *fs);

/* Reads cutover.flags and makes it the current snapshot. The first successful call writes
 * the configuration's values for every flag the table lacks (once: from then on the
 * database's values win). A value in the table that breaks a rule refuses the reload
 * (CUT_EINVAL, "flags.NAME: reason") and the current snapshot stays; so does a database
 * error (CUT_EDB). Blocking: not on an event loop. Returns 0 or -1. */
int flags_store_reload(flags_store *fs, cut_err *err) CUT_MUST_USE;

/* Starts a thread that reloads every period_ms (the safety net behind change notifications;
 * a failed reload is logged and the flags stay as they were). Stopped by flags_store_free().
 * Returns 0, or -1 with err set. */
int flags_store_autoreload(flags_store *fs, int period_ms, cut_err *err) CUT_MUST_USE;

/* Validates value, writes it with its audit row (actor, reason), then reloads. Blocking. */
int flags_store_set(flags_store *fs, const char *name, const json_t *value, const char *actor,
                    const char *reason, cut_err *err) CUT_MUST_USE;

/* Starts a thread that LISTENs on channel cutover_flags (the trigger flags_notify of the
 * schema fires on every write to cutover.flags) on a connection of its own, and reloads on
 * each notification, so that a change reaches every replica within a second. After a lost
 * connection it reconnects (backing off from 250 ms to 5 s) and reloads once listening
 * again; while the database is away the flags stay as they were. Stopped by
 * flags_store_free(). Returns 0, or -1 with err set. */
int flags_store_listen(flags_store *fs, cut_err *err) CUT_MUST_USE;

/* ---- changes through the admin API, and the cutover gate ------------------------------------ */

/* The consistency ratio verified / total (pgstore_consistency() defines both): 0 when there
 * is no document at all, since nothing is known to be verified then. */
double flags_consistency_ratio(int64_t verified, int64_t total);

/* One change request. patch: {flag: value}, borrowed; for read_from_s3 and auto_rollback an
 * object value is merged member by member onto the current value (a member given replaces
 * that member, arrays whole); any other value replaces the flag's value. actor: who asks
 * (borrowed, stored in the audit rows). reason: may be NULL or "", except with force. */
struct flags_change {
    const json_t *patch;
    const char *actor;
    const char *reason;
    bool force;
};

/* What the cutover gate looked at; checked false when the change does not raise
 * read_from_s3.percent to 100. */
struct flags_gate {
    bool checked;
    bool forced; /* the gate refused and force overrode it */
    int64_t verified, total;
    double ratio, gate;
};

/* Applies a change: every value merged and validated (CUT_EINVAL, where "flags.NAME", the
 * reason naming the member), force without a reason refused (CUT_EINVAL, where "reason"),
 * then the cutover gate: raising read_from_s3.percent to 100 (from below) while the
 * consistency ratio is below the stored cutover_gate is refused with CUT_ECONFLICT (where
 * "cutover_gate"; the figures in *gate) and the refusal is written to the audit log (action
 * "gate_refused"), unless force (the changes are then audited with action "flag_forced").
 * The changed flags are written in one transaction with one audit row each (action
 * "flag_set"; values equal to the current ones are skipped) and only while nobody changed
 * them meanwhile (otherwise read again and decided again, a few times); then the store is
 * reloaded and *now receives the snapshot this replica now uses (a new reference,
 * flags_snapshot_unref()). Database trouble: CUT_EDB, nothing changed. Blocking. */
int flags_store_change(flags_store *fs, const struct flags_change *c, struct flags_gate *gate,
                       flags_snapshot **now, cut_err *err) CUT_MUST_USE;

/* The actor of the audit rows written by the automatic rollback. */
#define FLAGS_ROLLBACK_ACTOR "auto-rollback"

/* ---- status (status.c) ----------------------------------------------------------------------- */

struct pgstore;
/* The status object of GET /admin/status and `cutover status --json` (README "Admin API"):
 * {"documents": {state: n...}, "queue_depth", "consistency": {"verified", "total", "ratio",
 * "gate", "gate_open"}, "flags", "flags_source", "backfill" (null without a run),
 * "last_rollback" (null before the first)}, the flags and the gate from s. Returns 0 with
 * *out a new object (json_decref()), or -1 with err set (CUT_EDB...). Blocking. */
int flags_status_json(struct pgstore *st, const flags_snapshot *s, json_t **out,
                      cut_err *err) CUT_MUST_USE;

/* The current snapshot: a new reference (flags_snapshot_unref()). Takes a short mutex: for
 * threads other than event loops, which use a reader. */
flags_snapshot *flags_store_current(flags_store *fs) CUT_MUST_USE;

/* ---- readers: lock-free access for event loops --------------------------------------------- */

/* One per thread that reads flags on a hot path (each proxy loop). */
typedef struct flags_reader flags_reader;

/* Registers a reader (takes a short mutex: call at the thread's start). Returns a new reader
 * (flags_reader_free(), before flags_store_free()). */
flags_reader *flags_reader_new(flags_store *fs);
void flags_reader_free(flags_reader *r);
/* The current snapshot, without a lock or a system call. Borrowed: valid until the next
 * flags_reader_get() on this reader or flags_reader_free() (flags_snapshot_ref() to keep it
 * longer). One thread at a time per reader. */
const flags_snapshot *flags_reader_get(flags_reader *r);

#endif
