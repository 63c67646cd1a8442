/*
 * s3_util: small pieces the S3 client and the credentials chain share: reading one element
 * out of an S3/STS XML answer, base64, hashing a file range, ISO 8601 times, and one
 * bounded HTTP GET for the credentials endpoints. Internal to storage/.
 */
#ifndef CUTOVER_S3_UTIL_H
#define CUTOVER_S3_UTIL_H

#include "core/core.h"

#include <stdint.h>
#include <time.h>

/* Copies the text of the first <tag>...</tag> in xml (entities decoded) into out.
 * Returns true when found and it fit; false otherwise (out is then ""). */
bool s3x_xml_tag(const char *xml, size_t len, const char *tag, char *out, size_t outlen);

/* Standard base64 of n bytes into out (NUL-terminated); out needs 4 * ((n + 2) / 3) + 1. */
void s3x_base64(const unsigned char *in, size_t n, char *out);

/* MD5 and SHA-256 of len bytes of fd from off (pread; the file offset is untouched).
 * Returns 0, or -1 with err set (CUT_EIO) when the file is shorter or unreadable. */
int s3x_hash_fd(int fd, uint64_t off, uint64_t len, unsigned char md5[16], unsigned char sha256[32],
                cut_err *err) CUT_MUST_USE;
void s3x_hash_buf(const void *p, size_t n, unsigned char md5[16], unsigned char sha256[32]);

/* Lower-case hex of n bytes into out (2n + 1). */
void s3x_hex(const unsigned char *in, size_t n, char *out);

/* Parses "2024-05-01T12:00:00Z", with optional fraction and "+HH:MM" offset. */
bool s3x_parse_iso8601(const char *s, time_t *t) CUT_MUST_USE;

/* One GET of url with the given extra header lines (NULL-terminated list, may be NULL),
 * the answer's body capped at max bytes. Fills *status and body (buf_free() it).
 * Returns 0 when an HTTP answer arrived (any status), -1 with err set otherwise. */
int s3x_http_get(const char *url, const char *const *headers, int timeout_s, size_t max,
                 long *status, struct buf *body, cut_err *err) CUT_MUST_USE;

#endif
