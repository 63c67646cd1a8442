/*
 * jsonsplice: finds the string at a JSON Pointer in an app's JSON answer, as a byte range of
 * the answer, and puts another string there, leaving every other byte as the app wrote it.
 *
 * The signed-URL rewrite used to parse the whole answer into a tree and print it again; this
 * scans the bytes once, with no allocation, and changes only the URL's own bytes (so the
 * app's whitespace, member order and number spelling are kept).
 *
 * The answer must be JSON that jansson (json_loadb, flags 0) would load: an object or array
 * at the top, valid UTF-8, no \u0000, no lone surrogate escape, numbers as RFC 8259 spells
 * them and within jansson's range (a 64-bit integer, a finite double), at most 2048 levels
 * of nesting, nothing after the value but whitespace. Duplicate member names: jansson keeps
 * the last one, other parsers the first, so a client could read either; when a member name
 * on the pointer's path occurs twice in its object, the splice refuses (JSPLICE_DUPLICATE)
 * and the answer stays the app's. Duplicates elsewhere in the answer do not matter.
 */
#ifndef CUTOVER_JSONSPLICE_H
#define CUTOVER_JSONSPLICE_H

#include "core/core.h"

/* The deepest nesting accepted (jansson's JSON_PARSER_MAX_DEPTH). */
#define JSPLICE_MAX_DEPTH 2048

enum jsplice_result {
    JSPLICE_STRING = 0, /* found: *start..*end is the string token, quotes included */
    JSPLICE_INVALID,    /* the answer is not JSON jansson would load, or the pointer is bad */
    JSPLICE_ABSENT,     /* no value at the pointer */
    JSPLICE_NOT_STRING, /* a value of another type at the pointer */
    JSPLICE_DUPLICATE,  /* a member name on the pointer's path occurs twice in its object */
};

/* Scans doc[0..len) (borrowed, need not be NUL-terminated) for the value at RFC 6901 pointer
 * ptr ("/a/0/b~1c"; "" is the whole answer, which is never a string). JSPLICE_STRING sets
 * [*start, *end) to the string's bytes with its quotes; nothing is allocated. */
enum jsplice_result jsplice_find(const char *doc, size_t len, const char *ptr, size_t *start,
                                 size_t *end);

/* Replaces body's bytes [start, end) (from jsplice_find) by s[0..n) as a JSON string, escaped
 * as jansson writes it (", \ and control characters; UTF-8 kept). False, body unchanged,
 * when the result would pass body->max or s is not valid UTF-8. */
bool jsplice_put_string(struct buf *body, size_t start, size_t end, const char *s,
                        size_t n) CUT_MUST_USE;

/* A short name for a result, for logs. */
const char *jsplice_result_name(enum jsplice_result r);

#endif
