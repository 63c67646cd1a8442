/*
 * h1parse: the HTTP/1.1 answer parser of the upstream client (RFC 9112). Pure functions, no
 * allocation, no I/O: the caller owns every buffer.
 *
 *   - h1_parse_response() parses one answer head (status line and header fields) from the
 *     start of a buffer. It is incremental in the picohttpparser way: call it again with
 *     more bytes until it stops answering H1_INCOMPLETE. Fields are returned as spans of the
 *     caller's buffer. It also works out the body framing (RFC 9112 §6.3).
 *   - h1_chunked_step() decodes a chunked body one step at a time, keeping its state in a
 *     small struct, so any split of the input gives the same result.
 */
#ifndef CUTOVER_H1PARSE_H
#define CUTOVER_H1PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H1_INCOMPLETE 0
#define H1_ERROR (-1)   /* malformed: answer 502, close the connection */
#define H1_TOO_BIG (-2) /* head over max_bytes or more than max_headers fields */

struct h1_header {
    const char *name;
    size_t nlen;
    const char *value; /* without leading or trailing whitespace */
    size_t vlen;
};

enum h1_framing {
    H1_BODY_NONE = 0,  /* decided by the caller: HEAD, 1xx, 204, 304 */
    H1_BODY_LENGTH,    /* content_length bytes */
    H1_BODY_CHUNKED,   /* Transfer-Encoding: chunked */
    H1_BODY_UNTIL_EOF, /* neither: read until the server closes */
};

struct h1_response {
    int minor; /* HTTP/1.minor */
    int status;
    size_t nheaders;
    int64_t content_length; /* -1: none */
    enum h1_framing framing;
    bool conn_close;      /* Connection: close */
    bool conn_keep_alive; /* Connection: keep-alive (matters for HTTP/1.0) */
};

/* Parses the head at buf[0, len). Returns the head's length (> 0) with r and hdrs[0,
 * r->nheaders) filled, H1_INCOMPLETE (needs more bytes), H1_ERROR or H1_TOO_BIG. Refused:
 * a version other than HTTP/1.x, a status outside 100-599, a field name that is not a
 * token or has whitespace before its colon, obs-fold, a control character in a value,
 * an invalid Content-Length or several that differ, a Transfer-Encoding other than one
 * `chunked`, and Content-Length together with Transfer-Encoding. Lines may end in CRLF
 * or LF. */
int h1_parse_response(const char *buf, size_t len, size_t max_bytes, struct h1_header *hdrs,
                      size_t max_headers, struct h1_response *r);

/* Whether a body follows a final answer with this status to this request (§6.3). */
bool h1_status_has_body(int status, bool head_request);

/* Chunked body decoder. Zero-initialise (or h1_chunked_init) before the first call. */
struct h1_chunked {
    int state;
    uint64_t left;     /* data bytes left in the current chunk */
    unsigned digits;   /* hex digits of the chunk size read so far */
    size_t line_bytes; /* bytes of the current extension or trailer section */
};

#define H1_CHUNK_EXT_MAX 4096
#define H1_TRAILER_MAX 16384

void h1_chunked_init(struct h1_chunked *c);
/* Consumes bytes of in[0, n). Returns the number consumed (>= 0) or H1_ERROR. When the
 * consumed bytes end with chunk data, *data_off and *data_len give that span (relative to
 * in); otherwise *data_len is 0. At most one data span is reported per call: call again
 * with the rest. h1_chunked_done() turns true once the last chunk and the trailer section
 * are read; nothing is consumed after that. */
long h1_chunked_step(struct h1_chunked *c, const char *in, size_t n, size_t *data_off,
                     size_t *data_len);
bool h1_chunked_done(const struct h1_chunked *c);

/* Token characters (RFC 9110 §5.6.2). */
bool h1_is_tchar(unsigned char ch);

#endif
