/*
 * relay: a loopback TCP relay that a fault test puts in front of a server (s3rver, the legacy
 * store) to inject faults at the HTTP request level: every request delayed, a share of
 * requests answered 503 or 500 without reaching the server, or the server "down" (every
 * connection accepted and closed at once, nothing answered).
 *
 * One connection to the server per request, and both sides asked to close it afterwards
 * (Connection: close after each first line), so that each request is seen whole and alone.
 * A refused request's body (Content-Length) is read before the answer, as a server would.
 * A thread per connection; the mode may change at any time and applies to requests whose
 * head arrives after the change.
 */
#ifndef CUTOVER_TEST_RELAY_H
#define CUTOVER_TEST_RELAY_H

#include <stdbool.h>

typedef struct relay relay;

enum relay_mode {
    RELAY_PASS,   /* forwarded as received */
    RELAY_DELAY,  /* forwarded after arg milliseconds */
    RELAY_ERRORS, /* every arg-th request answered 503 SlowDown or 500 InternalError, in turn */
    RELAY_DOWN,   /* connections accepted and closed at once */
};

/* Starts a relay on a free port of 127.0.0.1 in front of 127.0.0.1:up_port; aborts the test
 * when it cannot. Returns a new relay, free with relay_stop(). */
relay *relay_start(int up_port);
int relay_port(const relay *r);
void relay_set(relay *r, enum relay_mode mode, int arg);
/* Requests whose head arrived; requests answered with an error; connections closed unread. */
int relay_requests(relay *r);
int relay_refused(relay *r);
int relay_dropped(relay *r);
/* Stops accepting, releases delayed requests, waits (bounded) for the connections to end and
 * frees r. NULL: nothing. */
void relay_stop(relay *r);

#endif
