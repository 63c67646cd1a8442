/*
 * Flag definitions, snapshots and the store.
 *
 * Rules: each flag has a default and a validator; a value is accepted only when its
 * validator says so, and the reason for a refusal names the member at fault, because the same
 * text becomes the body of the admin API's 400 and a config-check line.
 *
 * Snapshots: built once from a JSON object (every value validated, typed fields extracted),
 * never changed afterwards, freed when the last reference goes (an atomic count).
 *
 * How a snapshot reaches event loops without a lock, and why freeing an old one is safe.
 * The classic trouble with "an atomic pointer to a refcounted object" is the window between
 * a reader loading the pointer and incrementing the count: a writer may swap and drop the last
 * reference in between, and the reader then increments freed memory. Here no reader ever
 * takes a reference from a shared pointer. Each reader (one per loop) has its own mailbox, an
 * atomic pointer that only ever holds a reference owned by the mailbox. The writer, under the
 * store's publish mutex, takes a reference for each reader (it holds one itself, so the count
 * cannot be zero) and exchanges it into the reader's mailbox, dropping whatever reference the
 * exchange hands back (a snapshot the reader never picked up: the writer now owns it). The
 * reader exchanges its mailbox with NULL: if it gets a snapshot, it now owns that reference,
 * drops the one it held before and keeps the new one until its next get. Every increment is
 * made by a holder of a reference and every reference has exactly one owner at a time (the
 * exchange hands it over atomically), so a snapshot is freed exactly when nobody can reach it.
 * A reader's get is one atomic exchange (and, after a change, one decrement); it never waits
 * for the writer, and the writer never waits for readers.
 */
#include "flags/flags.h"

#include "storage/pgstore.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- rules ---------------------------------------------------------------------------------- */

typedef bool (*validator)(const char *name, const json_t *v, cut_err *err);

static bool refuse(cut_err *err, const char *name, const char *fmt, ...) CUT_PRINTF(3, 4);

static bool refuse(cut_err *err, const char *name, const char *fmt, ...)
{
    char why[400], where[48];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    snprintf(where, sizeof(where), "flags.%s", name);
    err_set(err, CUT_EINVAL, where, "flags.%.100s: %s", name, why);
    return false;
}

static bool number_in(const json_t *v, double lo, double hi)
{
    double d;
    if (!json_is_number(v))
        return false;
    d = json_number_value(v);
    return isfinite(d) && d >= lo && d <= hi;
}

static bool check_members(const char *name, const json_t *v, const char *const *allowed,
                          cut_err *err)
{
    const char *key;
    json_t *x;

    json_object_foreach((json_t *)v, key, x)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], key) == 0;
        if (!ok)
            return refuse(err, name, "%.64s: unknown member", key);
    }
    return true;
}

static bool v_bool(const char *name, const json_t *v, cut_err *err)
{
    return json_is_boolean(v) || refuse(err, name, "expected true or false");
}

static bool v_ratio(const char *name, const json_t *v, cut_err *err)
{
    return number_in(v, 0, 1) || refuse(err, name, "expected a number from 0 to 1");
}

#define MAX_LIST 100000

static bool string_list(const char *name, const json_t *v, const char *member, cut_err *err)
{
    size_t i;
    json_t *x;

    if (v == NULL)
        return true;
    if (!json_is_array(v) || json_array_size(v) > MAX_LIST)
        return refuse(err, name, "%s: expected an array of at most %d strings", member, MAX_LIST);
    json_array_foreach(v, i, x)
    {
        if (!json_is_string(x))
            return refuse(err, name, "%s[%zu]: expected a string", member, i);
    }
    return true;
}

static bool v_read_from_s3(const char *name, const json_t *v, cut_err *err)
{
    static const char *const allowed[] = {"percent", "allow", "deny", NULL};
    const json_t *p;

    if (!json_is_object(v))
        return refuse(err, name, "expected {\"percent\": 0..100, \"allow\": [..], \"deny\": [..]}");
    if (!check_members(name, v, allowed, err))
        return false;
    p = json_object_get(v, "percent");
    if (p != NULL && !number_in(p, 0, 100))
        return refuse(err, name, "percent: expected a number from 0 to 100");
    return string_list(name, json_object_get(v, "allow"), "allow", err) &&
           string_list(name, json_object_get(v, "deny"), "deny", err);
}

static bool v_auto_rollback(const char *name, const json_t *v, cut_err *err)
{
    static const char *const allowed[] = {"enabled", "max_error_rate", "window_s", "min_samples",
                                          NULL};
    const json_t *x;

    if (!json_is_object(v))
        return refuse(err, name,
                      "expected {\"enabled\": bool, \"max_error_rate\": 0..1, \"window_s\": "
                      "N, \"min_samples\": N}");
    if (!check_members(name, v, allowed, err))
        return false;
    if ((x = json_object_get(v, "enabled")) != NULL && !json_is_boolean(x))
        return refuse(err, name, "enabled: expected true or false");
    if ((x = json_object_get(v, "max_error_rate")) != NULL && !number_in(x, 0, 1))
        return refuse(err, name, "max_error_rate: expected a number from 0 to 1");
    if ((x = json_object_get(v, "window_s")) != NULL &&
        (!json_is_integer(x) || !number_in(x, 1, 86400)))
        return refuse(err, name, "window_s: expected a whole number of seconds from 1 to 86400");
    if ((x = json_object_get(v, "min_samples")) != NULL &&
        (!json_is_integer(x) || !number_in(x, 1, 1e9)))
        return refuse(err, name, "min_samples: expected a whole number from 1");
    return true;
}

static const struct {
    const char *name;
    const char *def;
    validator check;
} defs[] = {
    {"dual_write", "false", v_bool},
    {"shadow_read", "0", v_ratio},
    {"read_from_s3", "{\"percent\": 0, \"allow\": [], \"deny\": []}", v_read_from_s3},
    {"auto_rollback",
     "{\"enabled\": true, \"max_error_rate\": 0.01, \"window_s\": 60, \"min_samples\": 50}",
     v_auto_rollback},
    {"cutover_gate", "0.99999", v_ratio},
};

#define NDEFS (sizeof(defs) / sizeof(defs[0]))

json_t *flags_defaults(void)
{
    json_t *o = json_object();

    for (size_t i = 0; i < NDEFS; i++)
        json_object_set_new(o, defs[i].name, json_loads(defs[i].def, JSON_DECODE_ANY, NULL));
    return o;
}

bool flags_validate(const char *name, const json_t *value, cut_err *err)
{
    for (size_t i = 0; i < NDEFS; i++)
        if (strcmp(defs[i].name, name) == 0)
            return defs[i].check(name, value, err);
    return refuse(err, name,
                  "unknown flag (known: dual_write, shadow_read, read_from_s3, "
                  "auto_rollback, cutover_gate)");
}

/* The configuration's flags section as an object (new), or NULL with the problem in err. */
static json_t *config_values(const struct config *cfg, cut_err *err)
{
    json_error_t je;
    json_t *o = json_loads(cfg->flags_json ? cfg->flags_json : "{}", 0, &je);

    if (o == NULL || !json_is_object(o)) {
        err_set(err, CUT_EINVAL, "flags", "flags: expected an object of flag: value");
        json_decref(o);
        return NULL;
    }
    return o;
}

void flags_check_config(const struct config *cfg, struct cfg_problems *p)
{
    cut_err err = CUT_ERR_INIT;
    json_t *o = config_values(cfg, &err), *v;
    const char *key;

    if (o == NULL) {
        cfg_problem_add(p, "flags", "expected an object of flag: value");
        return;
    }
    json_object_foreach(o, key, v)
    {
        err_clear(&err);
        if (!flags_validate(key, v, &err)) {
            /* the message is "flags.NAME: reason": the problem is path + reason */
            size_t k = strlen("flags.") + strlen(key) + 2;
            const char *why = strlen(err.msg) >= k ? err.msg + k : err.msg;
            char path[128];
            snprintf(path, sizeof(path), "flags.%.100s", key);
            cfg_problem_add(p, path, "%s", why);
        }
    }
    json_decref(o);
}

/* ---- snapshots ------------------------------------------------------------------------------ */

struct flags_snapshot {
    atomic_uint refs;
    uint64_t version;
    bool from_db;
    json_t *values; /* every flag, private to the snapshot, never modified */
    bool dual_write;
    double shadow_read, read_percent, cutover_gate;
    struct flags_auto_rollback rollback;
    /* read_from_s3's allow and deny lists, sorted (strcmp), borrowed from values */
    const char **lists[2];
    size_t nlists[2];
};

static atomic_uint_fast64_t versions;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The strings of list (validated: an array of strings, or NULL) as a sorted array. */
static const char **sorted_list(const json_t *list, size_t *n)
{
    const char **v;
    size_t i;
    json_t *x;

    *n = json_array_size(list);
    if (*n == 0)
        return NULL;
    v = xcalloc(*n, sizeof(*v));
    json_array_foreach(list, i, x) v[i] = json_string_value(x);
    qsort(v, *n, sizeof(*v), cmp_str);
    return v;
}

static double num(const json_t *o, const char *member, double def)
{
    const json_t *v = json_object_get(o, member);
    return v ? json_number_value(v) : def;
}

flags_snapshot *flags_snapshot_new(const json_t *values, bool from_db, cut_err *err)
{
    flags_snapshot *s;
    json_t *all, *v, *ar;
    const char *key;

    if (!json_is_object(values)) {
        err_set(err, CUT_EINVAL, "flags", "flags: expected an object of flag: value");
        return NULL;
    }
    json_object_foreach((json_t *)values, key, v)
    {
        if (!flags_validate(key, v, err))
            return NULL;
    }
    all = flags_defaults();
    json_object_foreach((json_t *)values, key, v)
    {
        json_object_set_new(all, key, json_deep_copy(v));
    }

    s = xcalloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->version = atomic_fetch_add(&versions, 1) + 1;
    s->from_db = from_db;
    s->values = all;
    s->dual_write = json_is_true(json_object_get(all, "dual_write"));
    s->shadow_read = json_number_value(json_object_get(all, "shadow_read"));
    s->read_percent = num(json_object_get(all, "read_from_s3"), "percent", 0);
    s->cutover_gate = json_number_value(json_object_get(all, "cutover_gate"));
    s->lists[0] =
        sorted_list(json_object_get(json_object_get(all, "read_from_s3"), "allow"), &s->nlists[0]);
    s->lists[1] =
        sorted_list(json_object_get(json_object_get(all, "read_from_s3"), "deny"), &s->nlists[1]);
    ar = json_object_get(all, "auto_rollback");
    s->rollback.enabled =
        json_object_get(ar, "enabled") == NULL || json_is_true(json_object_get(ar, "enabled"));
    s->rollback.max_error_rate = num(ar, "max_error_rate", 0.01);
    s->rollback.window_s = (int)num(ar, "window_s", 60);
    s->rollback.min_samples = (int)num(ar, "min_samples", 50);
    return s;
}

flags_snapshot *flags_snapshot_from_config(const struct config *cfg, cut_err *err)
{
    json_t *o = config_values(cfg, err);
    flags_snapshot *s = o ? flags_snapshot_new(o, false, err) : NULL;

    json_decref(o);
    return s;
}

flags_snapshot *flags_snapshot_ref(const flags_snapshot *cs)
{
    flags_snapshot *s = (flags_snapshot *)cs;
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void flags_snapshot_unref(flags_snapshot *s)
{
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    free(s->lists[0]);
    free(s->lists[1]);
    json_decref(s->values);
    free(s);
}

uint64_t flags_snapshot_version(const flags_snapshot *s)
{
    return s->version;
}

bool flags_snapshot_from_db(const flags_snapshot *s)
{
    return s->from_db;
}

bool flags_dual_write(const flags_snapshot *s)
{
    return s->dual_write;
}

double flags_shadow_read(const flags_snapshot *s)
{
    return s->shadow_read;
}

double flags_read_percent(const flags_snapshot *s)
{
    return s->read_percent;
}

double flags_cutover_gate(const flags_snapshot *s)
{
    return s->cutover_gate;
}

struct flags_auto_rollback flags_auto_rollback(const flags_snapshot *s)
{
    return s->rollback;
}

bool flags_read_listed(const flags_snapshot *s, bool deny, const char *value)
{
    int i = deny ? 1 : 0;
    return s->nlists[i] &&
           bsearch(&value, s->lists[i], s->nlists[i], sizeof(char *), cmp_str) != NULL;
}

const json_t *flags_snapshot_value(const flags_snapshot *s, const char *name)
{
    return json_object_get(s->values, name);
}

json_t *flags_snapshot_json(const flags_snapshot *s)
{
    return json_deep_copy(s->values);
}

/* ---- the store and its readers ----------------------------------------------------------------
 */

struct flags_reader {
    flags_store *fs;
    _Atomic(flags_snapshot *) mailbox; /* a reference owned by the mailbox, or NULL */
    flags_snapshot *held;              /* the reader's own reference */
    flags_reader *next;                /* in fs->readers, under fs->pub_mu */
};

struct flags_store {
    pthread_mutex_t db_mu; /* one database conversation at a time (reload, set) */
    pgstore *st;
    json_t *initial; /* the configuration's values for every flag, written once */
    bool initialised;
    pthread_mutex_t pub_mu; /* current and the readers' list */
    flags_snapshot *current;
    flags_reader *readers;
    /* the periodic reload (flags_store_autoreload) */
    pthread_t reloader;
    bool reloading;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    bool stop;
    int period_ms;
    /* the listener (flags_store_listen) */
    char *url;
    pthread_t listener;
    bool listening;
    atomic_bool listen_stop;
    int wake[2]; /* a pipe: written once to stop the listener */
};

flags_store *flags_store_new(const char *database_url, const struct config *cfg, cut_err *err)
{
    flags_snapshot *s = flags_snapshot_from_config(cfg, err);
    flags_store *fs;

    if (s == NULL)
        return NULL;
    fs = xcalloc(1, sizeof(*fs));
    pthread_mutex_init(&fs->db_mu, NULL);
    pthread_mutex_init(&fs->pub_mu, NULL);
    pthread_mutex_init(&fs->stop_mu, NULL);
    pthread_cond_init(&fs->stop_cv, NULL);
    fs->st = pgstore_open(database_url);
    fs->url = xstrdup(database_url ? database_url : "");
    fs->wake[0] = fs->wake[1] = -1;
    atomic_init(&fs->listen_stop, false);
    fs->initial = flags_snapshot_json(s);
    fs->current = s;
    return fs;
}

static void *reload_main(void *arg)
{
    flags_store *fs = arg;
    uint64_t last_log = 0;

    thread_setup("flags-reload", false);
    pthread_mutex_lock(&fs->stop_mu);
    while (!fs->stop) {
        struct timespec ts;
        cut_err err = CUT_ERR_INIT;
        pthread_mutex_unlock(&fs->stop_mu);
        if (flags_store_reload(fs, &err) != 0 && now_us() - last_log > 30000000u) {
            last_log = now_us();
            log_msgf(LOG_WARN, "flags_reload", "flags kept as they were: %s", err.msg);
        }
        pthread_mutex_lock(&fs->stop_mu);
        deadline_after_ms(&ts, (uint64_t)fs->period_ms);
        if (!fs->stop)
            pthread_cond_timedwait(&fs->stop_cv, &fs->stop_mu, &ts);
    }
    pthread_mutex_unlock(&fs->stop_mu);
    return NULL;
}

int flags_store_autoreload(flags_store *fs, int period_ms, cut_err *err)
{
    if (fs->reloading || period_ms <= 0) {
        err_set(err, CUT_EINVAL, "flags", "the reload runs already, or its period is not positive");
        return -1;
    }
    fs->period_ms = period_ms;
    if (pthread_create(&fs->reloader, NULL, reload_main, fs) != 0) {
        err_set(err, CUT_EIO, "flags", "cannot start the flags' reload thread");
        return -1;
    }
    fs->reloading = true;
    return 0;
}

void flags_store_free(flags_store *fs)
{
    if (fs == NULL)
        return;
    if (fs->reloading) {
        pthread_mutex_lock(&fs->stop_mu);
        fs->stop = true;
        pthread_cond_signal(&fs->stop_cv);
        pthread_mutex_unlock(&fs->stop_mu);
        pthread_join(fs->reloader, NULL);
    }
    if (fs->listening) {
        atomic_store(&fs->listen_stop, true);
        if (write(fs->wake[1], "x", 1) < 0)
            log_msgf(LOG_WARN, "flags_listen", "cannot wake the listener: %s", strerror(errno));
        pthread_join(fs->listener, NULL);
    }
    if (fs->wake[0] >= 0) {
        close(fs->wake[0]);
        close(fs->wake[1]);
    }
    free(fs->url);
    pthread_mutex_destroy(&fs->stop_mu);
    pthread_cond_destroy(&fs->stop_cv);
    /* readers must be gone; any left are detached so that their free stays safe */
    for (flags_reader *r = fs->readers; r; r = r->next)
        r->fs = NULL;
    flags_snapshot_unref(fs->current);
    json_decref(fs->initial);
    pgstore_free(fs->st);
    pthread_mutex_destroy(&fs->pub_mu);
    pthread_mutex_destroy(&fs->db_mu);
    free(fs);
}

/* Makes s (its reference is taken over) the current snapshot and hands a reference to every
 * reader's mailbox. */
static void publish(flags_store *fs, flags_snapshot *s)
{
    flags_snapshot *old;

    pthread_mutex_lock(&fs->pub_mu);
    old = fs->current;
    fs->current = s;
    for (flags_reader *r = fs->readers; r; r = r->next)
        flags_snapshot_unref(atomic_exchange(&r->mailbox, flags_snapshot_ref(s)));
    pthread_mutex_unlock(&fs->pub_mu);
    flags_snapshot_unref(old);
}

/* Under db_mu. */
static int reload_locked(flags_store *fs, cut_err *err)
{
    json_t *values = NULL;
    flags_snapshot *s;

    if (!fs->initialised) {
        if (pgstore_flags_init(fs->st, fs->initial, "config", NULL, err) != 0)
            return -1;
        fs->initialised = true;
    }
    if (pgstore_flags_get(fs->st, &values, err) != 0)
        return -1;
    s = flags_snapshot_new(values, true, err);
    json_decref(values);
    if (s == NULL) {
        log_msgf(LOG_ERROR, "flags_refused",
                 "the flags in the database were not applied, the previous ones stay: %s",
                 err->msg);
        return -1;
    }
    publish(fs, s);
    return 0;
}

int flags_store_reload(flags_store *fs, cut_err *err)
{
    int rc;

    pthread_mutex_lock(&fs->db_mu);
    rc = reload_locked(fs, err);
    pthread_mutex_unlock(&fs->db_mu);
    return rc;
}

int flags_store_set(flags_store *fs, const char *name, const json_t *value, const char *actor,
                    const char *reason, cut_err *err)
{
    char *text = NULL;
    int rc = -1;

    if (!flags_validate(name, value, err))
        return -1;
    text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
    pthread_mutex_lock(&fs->db_mu);
    if (!fs->initialised && reload_locked(fs, err) != 0)
        goto out;
    if (pgstore_flag_set(fs->st, name, text, actor, reason, err) != 0)
        goto out;
    rc = reload_locked(fs, err);
out:
    pthread_mutex_unlock(&fs->db_mu);
    free(text);
    return rc;
}

flags_snapshot *flags_store_current(flags_store *fs)
{
    flags_snapshot *s;

    pthread_mutex_lock(&fs->pub_mu);
    s = flags_snapshot_ref(fs->current);
    pthread_mutex_unlock(&fs->pub_mu);
    return s;
}

flags_reader *flags_reader_new(flags_store *fs)
{
    flags_reader *r = xcalloc(1, sizeof(*r));

    r->fs = fs;
    pthread_mutex_lock(&fs->pub_mu);
    r->held = flags_snapshot_ref(fs->current);
    atomic_init(&r->mailbox, NULL);
    r->next = fs->readers;
    fs->readers = r;
    pthread_mutex_unlock(&fs->pub_mu);
    return r;
}

void flags_reader_free(flags_reader *r)
{
    if (r == NULL)
        return;
    if (r->fs != NULL) {
        pthread_mutex_lock(&r->fs->pub_mu);
        for (flags_reader **pp = &r->fs->readers; *pp; pp = &(*pp)->next)
            if (*pp == r) {
                *pp = r->next;
                break;
            }
        pthread_mutex_unlock(&r->fs->pub_mu);
    }
    /* unlinked: no writer can reach the mailbox any more */
    flags_snapshot_unref(atomic_exchange(&r->mailbox, NULL));
    flags_snapshot_unref(r->held);
    free(r);
}

const flags_snapshot *flags_reader_get(flags_reader *r)
{
    flags_snapshot *n;

    /* the common case, nothing new: one load, no write */
    if (atomic_load_explicit(&r->mailbox, memory_order_relaxed) == NULL)
        return r->held;
    n = atomic_exchange(&r->mailbox, NULL);
    if (n != NULL) {
        flags_snapshot_unref(r->held);
        r->held = n;
    }
    return r->held;
}

/* ---- the listener ------------------------------------------------------------------------------
 */

#define LISTEN_CHANNEL "cutover_flags"
#define LISTEN_BACKOFF_MIN_MS 250
#define LISTEN_BACKOFF_MAX_MS 5000

/* Waits ms, or less when the store is being freed. */
static void listen_pause(flags_store *fs, int ms)
{
    struct pollfd p = {.fd = fs->wake[0], .events = POLLIN};
    if (poll(&p, 1, ms) < 0 && errno != EINTR)
        log_msgf(LOG_WARN, "flags_listen", "poll: %s", strerror(errno));
}

static void listen_reload(flags_store *fs, const char *why)
{
    cut_err err = CUT_ERR_INIT;
    if (flags_store_reload(fs, &err) != 0)
        log_msgf(LOG_WARN, "flags_reload", "flags kept as they were (%s): %s", why, err.msg);
}

static void *listen_main(void *arg)
{
    flags_store *fs = arg;
    pgstore *l = pgstore_open(fs->url);
    bool up = false, was_up = false;
    int backoff = LISTEN_BACKOFF_MIN_MS;
    uint64_t last_log = 0;

    thread_setup("flags-listen", false);
    while (!atomic_load(&fs->listen_stop)) {
        cut_err err = CUT_ERR_INIT;
        int n = 0;

        if (!up) {
            if (pgstore_listen(l, LISTEN_CHANNEL, &err) != 0) {
                if (now_us() - last_log > 30000000u) {
                    last_log = now_us();
                    log_msgf(LOG_WARN, "flags_listen",
                             "flag changes not heard, retrying (the periodic reload goes on): %s",
                             err.msg);
                }
                listen_pause(fs, backoff);
                backoff = backoff * 2 > LISTEN_BACKOFF_MAX_MS ? LISTEN_BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            up = true;
            backoff = LISTEN_BACKOFF_MIN_MS;
            if (was_up)
                log_msgf(LOG_INFO, "flags_listen", "listening for flag changes again");
            was_up = true;
            /* whatever changed while nobody listened */
            listen_reload(fs, "after connecting");
        }
        if (pgstore_wait_notify(l, fs->wake[0], 1000, &n, &err) != 0) {
            up = false;
            log_msgf(LOG_WARN, "flags_listen", "flag changes not heard until reconnected: %s",
                     err.msg);
            continue;
        }
        if (n > 0)
            listen_reload(fs, "on a change");
    }
    pgstore_free(l);
    return NULL;
}

int flags_store_listen(flags_store *fs, cut_err *err)
{
    if (fs->listening) {
        err_set(err, CUT_EINVAL, "flags", "the listener runs already");
        return -1;
    }
    if (pipe2(fs->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        err_set(err, CUT_EIO, "flags", "pipe: %s", strerror(errno));
        fs->wake[0] = fs->wake[1] = -1;
        return -1;
    }
    if (pthread_create(&fs->listener, NULL, listen_main, fs) != 0) {
        err_set(err, CUT_EIO, "flags", "cannot start the flags' listener thread");
        return -1;
    }
    fs->listening = true;
    return 0;
}

/* ---- changes and the cutover gate ------------------------------------------------------------
 */

#define CHANGE_TRIES 5

double flags_consistency_ratio(int64_t verified, int64_t total)
{
    if (total <= 0 || verified <= 0)
        return 0;
    if (verified >= total)
        return 1;
    return (double)verified / (double)total;
}

static bool mergeable(const char *name)
{
    return strcmp(name, "read_from_s3") == 0 || strcmp(name, "auto_rollback") == 0;
}

/* The value flag name takes: the patch's, merged onto cur's when both are objects of a
 * mergeable flag. Returns a new value. */
static json_t *merged_value(const char *name, const json_t *cur, const json_t *v)
{
    json_t *m;
    if (!mergeable(name) || !json_is_object(v) || !json_is_object(cur))
        return json_deep_copy(v);
    m = json_deep_copy(cur);
    json_object_update(m, (json_t *)v);
    return m;
}

static double percent_of(const json_t *rfs)
{
    const json_t *p = json_object_get(rfs, "percent");
    return p ? json_number_value(p) : 0;
}

static char *dump(const json_t *v)
{
    return v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
}

/* Writes the gate's refusal to the audit log; a failure is logged only (the refusal stands). */
static void audit_refusal(flags_store *fs, const struct flags_change *c, const json_t *old,
                          const json_t *new_value, const struct flags_gate *g)
{
    cut_err err = CUT_ERR_INIT;
    char *o = dump(old), *n = dump(new_value);
    char *why = xasprintf("refused by the cutover gate: consistency %.6f (%lld verified of %lld) "
                          "is below %.6f%s%.400s",
                          g->ratio, (long long)g->verified, (long long)g->total, g->gate,
                          c->reason && *c->reason ? "; asked: " : "", c->reason ? c->reason : "");
    struct pgstore_audit_row a = {.actor = c->actor,
                                  .action = "gate_refused",
                                  .flag = "read_from_s3",
                                  .old = o,
                                  .new_value = n,
                                  .reason = why};
    if (pgstore_audit_add(fs->st, &a, &err) != 0)
        log_msgf(LOG_WARN, "flags_gate", "the gate's refusal could not be audited: %s", err.msg);
    free(why);
    free(o);
    free(n);
}

/* One attempt under db_mu. Returns 0, or -1 with err set. */
static int change_once(flags_store *fs, const struct flags_change *c, struct flags_gate *g,
                       cut_err *err)
{
    json_t *raw = NULL, *cur = NULL, *next = json_object();
    struct pgstore_flag_change *ch = NULL;
    char **texts = NULL;
    size_t n = 0, cap = json_object_size(c->patch);
    const char *name;
    json_t *v;
    int rc = -1;

    if (!fs->initialised) {
        if (pgstore_flags_init(fs->st, fs->initial, "config", NULL, err) != 0)
            goto out;
        fs->initialised = true;
    }
    if (pgstore_flags_text(fs->st, &raw, err) != 0)
        goto out;
    cur = json_object();
    json_object_foreach(raw, name, v)
    {
        json_t *x = json_loads(json_string_value(v), JSON_DECODE_ANY, NULL);
        if (x == NULL) {
            err_set(err, CUT_EDB, "flags", "flags.%.64s: unreadable value in the database", name);
            goto out;
        }
        json_object_set_new(cur, name, x);
    }
    json_object_foreach((json_t *)c->patch, name, v)
    {
        const json_t *old = json_object_get(cur, name);
        json_t *m = merged_value(name, old, v);
        if (!flags_validate(name, m, err)) {
            json_decref(m);
            goto out;
        }
        json_object_set_new(next, name, m);
    }
    /* the gate: only a raise of read_from_s3.percent to 100 */
    memset(g, 0, sizeof(*g));
    const json_t *rfs = json_object_get(next, "read_from_s3");
    if (rfs && percent_of(rfs) >= 100 && percent_of(json_object_get(cur, "read_from_s3")) < 100) {
        const json_t *gv = json_object_get(cur, "cutover_gate");
        g->checked = true;
        g->gate = gv && json_is_number(gv) ? json_number_value(gv) : 0.99999;
        if (pgstore_consistency(fs->st, &g->verified, &g->total, err) != 0)
            goto out;
        g->ratio = flags_consistency_ratio(g->verified, g->total);
        if (g->ratio < g->gate) {
            if (!c->force) {
                audit_refusal(fs, c, json_object_get(cur, "read_from_s3"), rfs, g);
                err_set(err, CUT_ECONFLICT, "cutover_gate",
                        "the cutover gate refuses read_from_s3.percent 100: consistency %.6f "
                        "(%lld verified of %lld documents) is below cutover_gate %.6f; "
                        "\"force\": true with a reason overrides it",
                        g->ratio, (long long)g->verified, (long long)g->total, g->gate);
                goto out;
            }
            g->forced = true;
        }
    }
    ch = xcalloc(cap ? cap : 1, sizeof(*ch));
    texts = xcalloc(2 * (cap ? cap : 1), sizeof(*texts));
    json_object_foreach(next, name, v)
    {
        const json_t *old = json_object_get(cur, name);
        if (old && json_equal((json_t *)old, v))
            continue;
        /* the old value exactly as the table holds it, compared as such on writing */
        texts[2 * n] = xstrdup(json_string_value(json_object_get(raw, name)));
        texts[2 * n + 1] = dump(v);
        ch[n] = (struct pgstore_flag_change){
            .name = name, .old = texts[2 * n], .value = texts[2 * n + 1]};
        n++;
    }
    if (n > 0 &&
        pgstore_flags_write(fs->st, ch, n, c->actor, g->forced ? "flag_forced" : "flag_set",
                            c->reason && *c->reason ? c->reason : NULL, err) != 0)
        goto out;
    rc = 0;
out:
    for (size_t i = 0; texts && i < 2 * cap; i++)
        free(texts[i]);
    free(texts);
    free(ch);
    json_decref(raw);
    json_decref(cur);
    json_decref(next);
    return rc;
}

int flags_store_change(flags_store *fs, const struct flags_change *c, struct flags_gate *gate,
                       flags_snapshot **now, cut_err *err)
{
    struct flags_gate g = {0};
    int rc = -1;

    *now = NULL;
    if (!json_is_object(c->patch) || json_object_size(c->patch) == 0) {
        err_set(err, CUT_EINVAL, "flags", "flags: expected an object of at least one flag: value");
        goto done;
    }
    if (c->force && (c->reason == NULL || *c->reason == '\0')) {
        err_set(err, CUT_EINVAL, "reason", "reason: \"force\" needs a reason");
        goto done;
    }
    pthread_mutex_lock(&fs->db_mu);
    for (int i = 0; i < CHANGE_TRIES; i++) {
        cut_err e = CUT_ERR_INIT;
        rc = change_once(fs, c, &g, &e);
        if (rc == 0 || e.code != CUT_ECONFLICT || strcmp(e.where, "flags write") != 0 ||
            i + 1 == CHANGE_TRIES) {
            if (rc != 0)
                *err = e;
            break;
        }
    }
    if (rc == 0 && reload_locked(fs, err) != 0)
        rc = -1;
    pthread_mutex_unlock(&fs->db_mu);
    if (rc == 0)
        *now = flags_store_current(fs);
done:
    if (gate)
        *gate = g;
    return rc;
}

int flags_store_rollback(flags_store *fs, const char *reason, bool *done, cut_err *err)
{
    int rc = -1;

    *done = false;
    pthread_mutex_lock(&fs->db_mu);
    for (int i = 0; i < CHANGE_TRIES; i++) {
        json_t *raw = NULL, *cur = NULL, *next = NULL;
        const char *old;
        char *text = NULL;
        cut_err e = CUT_ERR_INIT;

        if (!fs->initialised) {
            if (pgstore_flags_init(fs->st, fs->initial, "config", NULL, &e) != 0)
                goto attempt_out;
            fs->initialised = true;
        }
        if (pgstore_flags_text(fs->st, &raw, &e) != 0)
            goto attempt_out;
        old = json_string_value(json_object_get(raw, "read_from_s3"));
        cur = old ? json_loads(old, 0, NULL) : NULL;
        if (!json_is_object(cur) || percent_of(cur) <= 0) {
            rc = 0; /* nothing to roll back: someone did already */
            goto attempt_out;
        }
        next = json_deep_copy(cur);
        json_object_set_new(next, "percent", json_integer(0));
        text = dump(next);
        struct pgstore_flag_change ch = {.name = "read_from_s3", .old = old, .value = text};
        if (pgstore_flags_write(fs->st, &ch, 1, FLAGS_ROLLBACK_ACTOR, "rollback", reason, &e) ==
            0) {
            *done = true;
            rc = 0;
        }
    attempt_out:
        free(text);
        json_decref(next);
        json_decref(cur);
        json_decref(raw);
        if (rc == 0)
            break;
        if (e.code != CUT_ECONFLICT || i + 1 == CHANGE_TRIES) {
            *err = e;
            break;
        }
    }
    if (rc == 0 && reload_locked(fs, err) != 0 && !*done)
        rc = -1;
    pthread_mutex_unlock(&fs->db_mu);
    return rc;
}
