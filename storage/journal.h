/*
 * journal: an append-only file of records in the spool directory, where an upload's record
 * goes when PostgreSQL cannot take it, so that nothing the application acknowledged is lost;
 * it is replayed into the database once the database is back, and after a restart.
 *
 * A record is written with one write(2) and made durable with fdatasync before the append
 * returns. On disk: "CUTJ", the payload's length (4 bytes, little endian), a check (the first
 * 8 bytes of SHA-256 over the length and the payload), then the payload. A crash can leave a
 * torn record at the end: the reader detects it by its length or its check and ignores it,
 * and never hands over a record whose bytes differ from what was appended. Damage in the
 * middle is skipped up to the next record that checks out; skipped bytes are counted.
 */
#ifndef CUTOVER_JOURNAL_H
#define CUTOVER_JOURNAL_H

#include "core/core.h"
#include "storage/pgstore.h"

#include <jansson.h>
#include <stdint.h>

#define JOURNAL_MAX_RECORD (1u << 20) /* payload ceiling */
#define JOURNAL_HEADER 16             /* magic, length, check */

typedef struct journal journal;

/* Opens (creating if needed) the journal file at path for appending. Returns a new journal
 * (journal_close()) or NULL with err set (CUT_EIO). */
journal *journal_open(const char *path, cut_err *err) CUT_MUST_USE;
/* Closes it. NULL is fine. */
void journal_close(journal *j);

/* Appends one record (payload borrowed for the call, 1..JOURNAL_MAX_RECORD bytes) and syncs
 * it to disk before returning. Any thread (appends are serialised). Returns false with err
 * set (CUT_EIO: a write or sync failed, e.g. the disk is full; the file is cut back to where
 * it was, so no torn record is left behind when the process lives on; CUT_ELIMIT: too big).
 * Blocks on the disk: never call it from an event loop. */
bool journal_append(journal *j, const void *payload, size_t n, cut_err *err) CUT_MUST_USE;

/* Moves the records appended so far aside: the file is renamed to aside_path and a new empty
 * one is opened at the journal's path for later appends, atomically with respect to
 * journal_append(). Then replay aside_path and remove it. Returns false with err set. */
bool journal_rotate(journal *j, const char *aside_path, cut_err *err) CUT_MUST_USE;

/* Encodes one record of payload[0..n) (1..JOURNAL_MAX_RECORD bytes) into out, which must
 * hold JOURNAL_HEADER + n bytes; returns the bytes written. What journal_append() writes. */
size_t journal_encode(const void *payload, size_t n, unsigned char *out);

/* What a read found. */
struct journal_scan {
    uint64_t records;       /* records handed over */
    uint64_t skipped_bytes; /* bytes that were not part of a good record */
    uint64_t torn_tail;     /* of those, bytes of an incomplete record at the end */
};

/* Called for each good record, in order; payload is borrowed for the call. Return false to
 * stop the read. */
typedef bool (*journal_record_fn)(void *arg, const void *payload, size_t n);

/* Reads records from buf[0..n): a pure function of its input. Returns the records handed
 * over; *scan (may be NULL) is filled. */
uint64_t journal_parse(const void *buf, size_t n, journal_record_fn fn, void *arg,
                       struct journal_scan *scan);

/* Reads the file at path (absent: no records) with journal_parse(). Returns false with err
 * set when it cannot be read (CUT_EIO) or is larger than max_bytes (CUT_ELIMIT). */
bool journal_read_file(const char *path, uint64_t max_bytes, journal_record_fn fn, void *arg,
                       struct journal_scan *scan, cut_err *err) CUT_MUST_USE;

/* ---- the record an upload leaves in the journal ------------------------------------------- */

/* A record's payload is a JSON object: "storage_key" (required), "s3_key", "vars",
 * "spool_path", "md5", "sha256", "content_type", "filename", "unmirrorable" (strings), "size"
 * (integer). Version 2 ("v": 2) adds "answered_seq" (integer), the order of the app's answer;
 * a record without "v" is version 1, from a build before it, and reads with answered_seq 0
 * (unknown: applied in order of arrival). */
#define JOURNAL_DOC_VERSION 2

/* Encodes d (origin ignored; failed_reason is kept as "unmirrorable") as a version-2 record.
 * Returns a new string (free()), or NULL when a string is not valid UTF-8. */
char *journal_doc_encode(const struct pgstore_doc_in *d);

/* A decoded record: doc's strings are borrowed from json, valid until journal_doc_clear(). */
struct journal_doc {
    int version;
    struct pgstore_doc_in doc;
    json_t *json;
};
/* Decodes payload[0..n): a pure function of its input. False with err set (CUT_EINVAL) when it
 * is not a JSON object with a string storage key, or a field has the wrong type; *out is then
 * empty. A version above JOURNAL_DOC_VERSION is read for the fields this build knows. */
bool journal_doc_decode(const void *payload, size_t n, struct journal_doc *out,
                        cut_err *err) CUT_MUST_USE;
void journal_doc_clear(struct journal_doc *d); /* NULL members are fine */

#endif
