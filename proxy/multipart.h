/*
 * multipart: a streaming multipart/form-data parser (RFC 7578, RFC 2046 §5.1) for upload
 * routes. It is fed the request body in pieces of any size, as they stream to the app, and
 * hands over the bytes of one file part (the route's `file_field`) as they arrive, without
 * holding them; the other parts are kept as small form fields (template variables).
 *
 * A pure function of its input: no I/O, no clock, no global state, so it can be fuzzed and
 * tested on every split of a body. Every size a client controls has a ceiling: part
 * headers, form fields (each and in all), the number of parts, the file part.
 */
#ifndef CUTOVER_MULTIPART_H
#define CUTOVER_MULTIPART_H

#include "core/core.h"

typedef struct multipart multipart;

struct multipart_limits {
    size_t max_part_header; /* bytes of one part's header block; default 8 KiB */
    size_t max_field;       /* bytes of one form field's value; default 64 KiB */
    size_t max_fields;      /* form fields kept; default 64 */
    size_t max_parts;       /* parts in all; default 1000 */
    uint64_t max_file;      /* bytes of the file part; 0: no ceiling */
};

/* Receives the file part's bytes in order; data is borrowed for the call. Returns true to
 * go on, false to stop the parser (multipart_feed then fails with CUT_EINVAL "stopped"). */
typedef bool (*multipart_file_fn)(void *arg, const void *data, size_t n);

/* Starts a parser for a body whose Content-Type header is content_type (the boundary is taken
 * from it) and whose file part is the part named file_field. limits NULL: the defaults; a
 * zero member: its default. on_file receives the file part's bytes (arg passed back).
 * Returns a new parser (multipart_free()) or NULL with err set (CUT_EINVAL: not
 * multipart/form-data, no boundary, a boundary that is empty, too long or holds a character
 * RFC 2046 does not allow). */
multipart *multipart_new(const char *content_type, const char *file_field,
                         const struct multipart_limits *limits, multipart_file_fn on_file,
                         void *arg, cut_err *err) CUT_MUST_USE;
void multipart_free(multipart *mp);

/* Feeds the next n bytes of the body (borrowed for the call). Returns true, or false with err
 * set once the body cannot be used (CUT_EINVAL: malformed, a second file part; CUT_ELIMIT: a
 * ceiling passed, naming which). After a failure every later call fails with the same
 * error. Bytes after the closing delimiter are ignored. */
bool multipart_feed(multipart *mp, const void *data, size_t n, cut_err *err) CUT_MUST_USE;

/* The body has ended. Returns true when the closing delimiter was seen and the file part was
 * there exactly once; else false with err set (truncated body, missing file part). */
bool multipart_finish(multipart *mp, cut_err *err) CUT_MUST_USE;

/* The file part's filename (from `filename*=UTF-8''...` when given, else `filename`), or
 * NULL. Valid until multipart_free(). */
const char *multipart_filename(const multipart *mp);
/* The file part's Content-Type, or NULL. Valid until multipart_free(). */
const char *multipart_file_type(const multipart *mp);
/* Bytes of the file part handed to on_file so far. */
uint64_t multipart_file_bytes(const multipart *mp);
/* The value of the first complete form field called name, or NULL. *len (may be NULL)
 * receives its length: a value may hold NUL bytes. Valid until multipart_free(). */
const char *multipart_field(const multipart *mp, const char *name, size_t *len);
/* Number of form fields kept, and the i-th one's name and value (i < count). */
size_t multipart_field_count(const multipart *mp);
const char *multipart_field_at(const multipart *mp, size_t i, const char **value, size_t *len);

#endif
