/*
 * legacy_fixture: a legacy store for the backfill tests, in the test process
 * (libmicrohttpd, a thread per connection). It serves GET /raw/{key} and counts, per key,
 * every GET it answered, so that a test can tell how many times a document was copied (a
 * copy reads the raw original exactly once), and records the time and status of every
 * request, so that a test can see when the store was asked and when it was left alone.
 *
 * What a key gets, from the name after its last '/':
 *   ok-SIZE-N       200 with SIZE deterministic bytes (legacy_fixture_bytes())
 *   nf-N            404
 *   e500xK-SIZE-N   500 to the first K GETs, then as ok-
 *   e500-N          500 always
 *   hold-SIZE-N     waits until legacy_fixture_release() (or 30 s), then as ok-
 * Any key may also get 429 during a throttle window (legacy_fixture_throttle()).
 */
#ifndef CUTOVER_TEST_LEGACY_FIXTURE_H
#define CUTOVER_TEST_LEGACY_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct legacy_fixture legacy_fixture;

/* Starts the store on 127.0.0.1 (a free port); aborts the test when it cannot. */
legacy_fixture *legacy_fixture_start(void);
void legacy_fixture_free(legacy_fixture *f); /* releases held answers first; NULL is fine */
int legacy_fixture_port(const legacy_fixture *f);

/* The bytes of key from off (what the store sends for an ok- key). */
void legacy_fixture_bytes(const char *key, uint64_t off, void *out, size_t n);
/* The size a key's name announces (SIZE), 0 when it has none. */
uint64_t legacy_fixture_size(const char *key);

/* GETs answered for key (any status). */
int legacy_fixture_gets(legacy_fixture *f, const char *key);
/* Requests answered in all, and 200 answers' body bytes announced in all. */
long legacy_fixture_total(legacy_fixture *f);

/* From the next request on, every request arriving within window_ms of it gets 429, with
 * `Retry-After: retry_after_s` when retry_after_s >= 0. */
void legacy_fixture_throttle(legacy_fixture *f, int window_ms, int retry_after_s);

/* One request as the store saw it: arrival time (now_us() clock) and the status answered. */
struct legacy_fixture_hit {
    uint64_t at_us;
    int status;
    int nth; /* the how-many-th request of its key this was (1: the first) */
};
/* Copies up to max hits, in arrival order; returns how many were copied. */
size_t legacy_fixture_hits(legacy_fixture *f, struct legacy_fixture_hit *out, size_t max);

/* From now on key's body is data[0..len) (copied) instead of its name's bytes, as if the
 * application had stored a new version. A request takes its body when it arrives: a held
 * answer sends what the store had then. */
void legacy_fixture_put(legacy_fixture *f, const char *key, const void *data, size_t len);

/* hold- keys: how many answers are waiting now; release them all (and every later one). */
int legacy_fixture_held(legacy_fixture *f);
void legacy_fixture_release(legacy_fixture *f);

#endif
