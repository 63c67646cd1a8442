/*
 * rollout: which signed-URL reads the flag read_from_s3 selects, reproducibly.
 *
 * The rule (README "Read cutover"): MurmurHash3 x86_32 with seed 0 over the UTF-8 bytes of
 * "<route name>:<sticky value>" (the document's storage key when the route names no
 * `sticky`); bucket = hash mod 10000; a read is in when bucket < percent × 100 (rounded to a
 * whole bucket, so steps of 0.01% work). The same inputs give the same answer on every
 * replica, after a restart and in every version, and raising the percentage only adds
 * buckets. The lists override the percentage: a sticky value in `deny` is always out, even
 * when it is also in `allow` (deny wins: it is what an operator uses to keep one customer on
 * the legacy store, and a list mistake then errs on the side that changes nothing); a value
 * in `allow` only is always in. The lists hold sticky values (or document keys for a route
 * without `sticky`), compared byte for byte.
 *
 * Pure functions: no allocation, no lock, safe on an event loop.
 */
#ifndef CUTOVER_FLAGS_ROLLOUT_H
#define CUTOVER_FLAGS_ROLLOUT_H

#include "flags/flags.h"

#include <stddef.h>
#include <stdint.h>

#define FLAGS_ROLLOUT_BUCKETS 10000u

/* MurmurHash3 x86_32 of data[0..len) with seed. */
uint32_t flags_murmur3_32(const void *data, size_t len, uint32_t seed);

/* The bucket (0..9999) of route:sticky. */
uint32_t flags_rollout_bucket(const char *route, const char *sticky);

/* The buckets selected by percent (0..100): round(percent × 100), clamped to 0..10000. */
uint32_t flags_rollout_threshold(double percent);

enum flags_rollout_why {
    FLAGS_ROLLOUT_OUT = 0, /* bucket at or over the threshold */
    FLAGS_ROLLOUT_IN,      /* bucket under the threshold */
    FLAGS_ROLLOUT_ALLOWED, /* in: listed in allow */
    FLAGS_ROLLOUT_DENIED,  /* out: listed in deny */
};

/* Whether the flag read_from_s3 of s selects this read of route with sticky (both
 * NUL-terminated; sticky is the route's sticky value or the document key). *why (may be NULL)
 * receives the reason. */
bool flags_rollout_selects(const flags_snapshot *s, const char *route, const char *sticky,
                           enum flags_rollout_why *why);

#endif
