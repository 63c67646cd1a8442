/*
 * spool: upload bytes written to files in `spool_dir` and hashed (MD5 and SHA-256) off the
 * event loop, with backpressure. An event loop hands each piece of a body over with
 * spool_write(), which copies it and returns at once; one writer thread appends and hashes.
 * When the bytes waiting for a file pass a high-water mark, the loop stops reading the client
 * (spool_wait_drain()) and is called back once the writer has caught up, so a slow disk slows
 * the upload instead of growing memory.
 *
 * A spool file is used by one loop thread from spool_open() to spool_finish() or
 * spool_discard(); after either, the handle belongs to the writer, which frees it.
 */
#ifndef CUTOVER_SPOOL_H
#define CUTOVER_SPOOL_H

#include "core/core.h"

#include <stdint.h>

typedef struct spool spool;
typedef struct spool_file spool_file;

/* Starts the writer for directory dir (copied; it must exist and be writable). Returns a new
 * spool (spool_free()) or NULL with err set (CUT_EIO). */
spool *spool_new(const char *dir, cut_err *err) CUT_MUST_USE;
/* Finishes every queued operation (callbacks run), stops the writer and frees. NULL is fine. */
void spool_free(spool *s);

struct spool_stats {
    uint64_t files;         /* opened */
    uint64_t bytes;         /* written */
    uint64_t failures;      /* files whose writing failed (disk full...) */
    uint64_t pending_bytes; /* copied, not yet written, across files */
    uint64_t pending_peak;  /* the most ever pending at once */
};
void spool_stats_get(spool *s, struct spool_stats *out);

/* A new spool file (created by the writer on its first bytes, under a new random name). */
spool_file *spool_open(spool *s);

/* Copies n bytes for the writer and returns at once. Returns the bytes now waiting to be
 * written for this file (the caller compares it with its high-water mark). Bytes given after
 * the file failed are dropped (spool_failed() tells). */
uint64_t spool_write(spool_file *f, const void *data, size_t n);

/* True once writing this file failed; err (may be NULL) receives why. */
bool spool_failed(spool_file *f, cut_err *err);

/* Asks to be called (fn(arg)) once at most low_water bytes wait for this file, or the file
 * failed. Returns false, and registers nothing, when that is already true: the caller goes
 * on reading. One registration at a time per file. A registered fn is called exactly once:
 * on the writer thread when the bytes drain or the writing fails, or on the caller's thread
 * inside spool_finish() / spool_discard() when it was still waiting. */
bool spool_wait_drain(spool_file *f, uint64_t low_water, void (*fn)(void *arg), void *arg);

/* The outcome of a finished file, valid during the callback only. */
struct spool_result {
    bool ok;
    cut_err err;      /* when !ok */
    const char *path; /* the file (when ok), kept on disk for the caller */
    uint64_t size;
    unsigned char md5[16];
    unsigned char sha256[32];
};

/* Every byte given so far is written, the file closed and its hashes computed; then done(arg,
 * result) runs on the writer thread. A failed file is removed before done runs. f is the
 * writer's from here on. */
void spool_finish(spool_file *f, void (*done)(void *arg, const struct spool_result *r), void *arg);

/* The bytes are not wanted (the app refused the upload): the file is removed; f is the
 * writer's from here on. */
void spool_discard(spool_file *f);

/* Removes the spool files (`*.part`) in dir that are not in keep (full paths, borrowed):
 * what uploads cut by a crash or a stop left behind. Call before any spool is open on dir.
 * Returns the files removed, or -1 when dir cannot be read. */
long spool_sweep(const char *dir, char *const *keep, size_t nkeep);

/* Hex of n bytes into out (2n+1 bytes). */
void spool_hex(const unsigned char *in, size_t n, char *out);

#endif
