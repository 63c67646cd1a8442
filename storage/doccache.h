/*
 * doccache: every replica's cache of document states and S3 keys, kept true by PostgreSQL's
 * notifications, so that a signed-URL read costs no database round trip in the common case.
 *
 * Migration 4 announces every change of a document's state or S3 key on the channel
 * cutover_documents with the key, the new state and the S3 key (or, for a key too long for a
 * notification, an order to forget that key or everything). A listener thread with a
 * connection of its own applies them to the cached entries. While that connection is down the
 * cache is not trusted: lookups answer DOCCACHE_UNTRUSTED (the caller rewrites nothing), and
 * once it is back (LISTEN first) every entry is dropped, since changes may have been missed.
 *
 * A miss is looked up by the caller (off the event loop) and filled in with the token the
 * miss gave: a notification that reached the key meanwhile wins over the fill, so a lookup
 * that read an older state can never overwrite a newer one. Entries for absent documents
 * (negative) live negative_ttl_ms. The cache holds at most max_entries (least recently used
 * out first). Every call takes one short mutex and never does I/O: safe on an event loop.
 */
#ifndef CUTOVER_DOCCACHE_H
#define CUTOVER_DOCCACHE_H

#include "core/core.h"
#include "storage/pgstore.h"

typedef struct doccache doccache;

struct doccache_opts {
    const char *database_url; /* the listener's connection; copied */
    size_t max_entries;       /* default 100000 */
    unsigned negative_ttl_ms; /* default 2000 */
    unsigned retry_ms;        /* between reconnection attempts; default 500 */
};

/* Starts the listener thread (it connects in the background). Returns a new cache
 * (doccache_free()) or NULL with err set. */
doccache *doccache_start(const struct doccache_opts *o, cut_err *err) CUT_MUST_USE;
/* Stops the listener and frees. NULL is fine. */
void doccache_free(doccache *c);

enum doccache_answer {
    DOCCACHE_UNTRUSTED = 0, /* the listener is not connected: confirm nothing */
    DOCCACHE_MISS,          /* not cached: look it up, then doccache_fill() with *fill */
    DOCCACHE_FOUND,         /* *state and s3_key set */
    DOCCACHE_ABSENT,        /* known not to exist (negative entry) */
};

/* Looks key up. FOUND copies the S3 key into s3_key (s3_len bytes with the NUL; a longer one
 * is a MISS). MISS leaves a placeholder and gives its token in *fill. */
enum doccache_answer doccache_lookup(doccache *c, const char *key, enum doc_state *state,
                                     char *s3_key, size_t s3_len, uint64_t *fill);
/* What a lookup of a missed key found (found false: no such document). Ignored when a
 * notification or a flush reached the key since the miss (fill no longer its token). */
void doccache_fill(doccache *c, const char *key, uint64_t fill, bool found, enum doc_state state,
                   const char *s3_key);
/* A state change this replica asked for (verified → active): the cached entry moves from
 * `from` to `to` at once, so that the change is not asked for again; the notification that
 * follows confirms or corrects it. Nothing happens when the entry is not in `from`. */
void doccache_note(doccache *c, const char *key, enum doc_state from, enum doc_state to);
/* True once per cached FOUND entry (until a notification changes it): lets a caller do
 * something once per document state (the move to the front of the copy queue). */
bool doccache_once(doccache *c, const char *key);
/* Whether the listener is connected (lookups may answer). */
bool doccache_trusted(doccache *c);

struct doccache_stats {
    uint64_t hits, misses, untrusted, fills, fills_late, notifications, flushes, evictions;
    size_t entries;
    bool trusted;
};
void doccache_stats_get(doccache *c, struct doccache_stats *out);

#endif
