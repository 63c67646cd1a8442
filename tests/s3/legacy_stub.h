/*
 * legacy_stub: a stand-in for the legacy store, run inside a test with libmicrohttpd, for
 * what the real one cannot be asked to do on demand. GET /raw/<key> answers by the key:
 *   "missing..."  404             "broken..."  500            "slow..."  waits (released
 *   "huge..."     200 announcing 10 GiB                        by legacy_stub_free)
 *   "short..."    200 announcing 64 KiB, sends 32 KiB then closes the connection
 *   "chunked-N"   200 with N bytes, chunked (no Content-Length)
 *   "doc-N"       200 with N bytes and a Content-Length
 * Bodies are legacy_stub_bytes() of the key. Without the header "X-Api-Key: <key>" set by
 * legacy_stub_start, every answer is 401.
 */
#ifndef CUTOVER_TEST_LEGACY_STUB_H
#define CUTOVER_TEST_LEGACY_STUB_H

#include <stddef.h>
#include <stdint.h>

struct legacy_stub;

/* Starts the stub; api_key is the value the X-Api-Key header must have (copied). */
struct legacy_stub *legacy_stub_start(const char *api_key);
void legacy_stub_free(struct legacy_stub *s);
int legacy_stub_port(const struct legacy_stub *s);
/* Requests seen so far. */
int legacy_stub_requests(struct legacy_stub *s);

/* The n bytes from off of key's document (deterministic). */
void legacy_stub_bytes(const char *key, uint64_t off, void *out, size_t n);

#endif
