/*
 * extract: the pure pieces that turn what the app said into a document's identity. RFC 6901
 * JSON Pointer evaluation (the storage key or the URL in the app's JSON answer) and the
 * expansion of a route's S3 key template (`documents/{org}/{patient}/{key}`) with checks
 * that keep a client-supplied value from escaping its place in the bucket.
 *
 * No I/O and no global state: fuzzable as they are.
 */
#ifndef CUTOVER_EXTRACT_H
#define CUTOVER_EXTRACT_H

#include "core/core.h"

#include <jansson.h>

/* S3's limit on an object key, in bytes of UTF-8. */
#define EXTRACT_MAX_KEY 1024

/* The value at pointer ptr (RFC 6901: "" is the whole document, "/a/0/b~1c" walks members
 * and array indices, ~0 and ~1 unescaped) in root, or NULL when absent or malformed (an
 * array index with a leading zero, "-", not a number). Borrowed from root. */
const json_t *extract_json_pointer(const json_t *root, const char *ptr);

/* The same, as text: a JSON string's value, or an integer's decimal form (storage keys are
 * sometimes numeric ids). Returns a new string (free()) or NULL with err set, naming the
 * pointer (absent, or of another type). */
char *extract_json_string(const json_t *root, const char *ptr, cut_err *err) CUT_MUST_USE;

/* The first query parameter called name in a request target ("/path?a=1&b=x%20y"), its value
 * percent-decoded with '+' as a space. Returns a new string (free()), or NULL when absent or
 * badly encoded (or holding a NUL byte). */
char *extract_query_param(const char *target, const char *name);

/* Looks a template variable up: returns its value (borrowed until the expansion ends) and its
 * length, or NULL when the variable has no value. */
typedef const char *(*extract_var_fn)(void *arg, const char *name, size_t nlen, size_t *len);

/* Expands tpl's {name} references with lookup(arg, ...). Each value must be valid UTF-8 and
 * free of control characters (bytes < 0x20 and 0x7f), and no `/`-separated segment of a
 * value may be `.` or `..`; the whole key must not start with `/`, must not be empty and
 * must not pass EXTRACT_MAX_KEY bytes. Returns a new string (free()) or NULL with err set
 * (CUT_EINVAL) naming the variable and the reason: the document is then unmirrorable. */
char *extract_s3_key(const char *tpl, extract_var_fn lookup, void *arg, cut_err *err) CUT_MUST_USE;

#endif
