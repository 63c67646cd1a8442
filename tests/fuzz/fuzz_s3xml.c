/*
 * Fuzz target: the XML answers of S3 and STS as storage/s3_util.c reads them (error bodies'
 * Code and Message, CreateMultipartUpload's UploadId, CompleteMultipartUpload's ETag, STS's
 * credentials and their Expiration time). The first input byte picks the output buffer's
 * size (1..256), the rest is the answer. For each tag the client reads, checked properties:
 * no crash or read outside the input; a value found fits its buffer and is no longer than
 * the text between the tags; without entities it is that text exactly; not found leaves ""
 * behind; and an ISO 8601 time that parses parses again to the same second once printed.
 */
#include "storage/s3_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_tag(const char *xml, size_t len, const char *tag, size_t outlen)
{
    char *out = malloc(outlen), open[64], close[64];
    int ol = snprintf(open, sizeof(open), "<%s>", tag);
    int cl = snprintf(close, sizeof(close), "</%s>", tag);
    bool found = s3x_xml_tag(xml, len, tag, out, outlen);
    const char *a = memmem(xml, len, open, (size_t)ol);
    const char *b = a ? memmem(a + ol, len - (size_t)(a + ol - xml), close, (size_t)cl) : NULL;

    if (!found) {
        if (out[0] != '\0')
            abort();
    } else {
        size_t n = strlen(out), span;
        if (a == NULL || b == NULL)
            abort(); /* found without both tags */
        span = (size_t)(b - (a + ol));
        if (n >= outlen || n > span)
            abort();
        if (!memchr(a + ol, '&', span) && !memchr(a + ol, '\0', span) &&
            (n != span || memcmp(out, a + ol, span) != 0))
            abort();
        if (strcmp(tag, "Expiration") == 0) {
            time_t t, t2;
            char again[40];
            struct tm tm;
            if (s3x_parse_iso8601(out, &t) && gmtime_r(&t, &tm) && tm.tm_year < 8000 &&
                tm.tm_year > -1900) {
                strftime(again, sizeof(again), "%Y-%m-%dT%H:%M:%SZ", &tm);
                if (strlen(again) == 20 && (!s3x_parse_iso8601(again, &t2) || t2 != t))
                    abort();
            }
        }
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *tags[] = {"Code",        "Message",         "UploadId",     "ETag",
                                 "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"};
    char *xml;
    size_t outlen;

    if (size < 1 || size > 65536)
        return 0;
    outlen = (size_t)data[0] + 1;
    xml = xstrndup((const char *)data + 1, size - 1); /* the answer's bytes, NUL-terminated */
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
        check_tag(xml, size - 1, tags[i], outlen);
        check_tag(xml, size - 1, tags[i], 1024);
    }
    free(xml);
    return 0;
}
