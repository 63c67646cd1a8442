/*
 * Fuzz target: the upstream answer parser (proxy/h1parse.c). The input is an answer as the
 * app could send it: a head, then a chunked body. Checked properties: no crash or read
 * outside the input; a parsed head is no longer than the input and its fields lie inside
 * it; a head parsed whole parses the same when cut anywhere before its end (incomplete,
 * never an error); the chunked decoder consumes at most what it is given, reports data
 * inside it, and gives the same body whether fed whole or one byte at a time.
 */
#include "proxy/h1parse.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decodes in[0, n) with steps of at most `step` bytes; returns the decoded length or -1. */
static long decode(const char *in, size_t n, size_t step, char *out, bool *done)
{
    struct h1_chunked c;
    size_t pos = 0, olen = 0;
    h1_chunked_init(&c);
    while (pos < n && !h1_chunked_done(&c)) {
        size_t give = n - pos < step ? n - pos : step, off, dlen;
        long u = h1_chunked_step(&c, in + pos, give, &off, &dlen);
        if (u < 0)
            return -1;
        if ((size_t)u > give || (dlen && off + dlen > (size_t)u) || u == 0)
            abort();
        memcpy(out + olen, in + pos + off, dlen);
        olen += dlen;
        pos += (size_t)u;
    }
    *done = h1_chunked_done(&c);
    return (long)olen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    struct h1_header h[16];
    struct h1_response r;
    int rc = h1_parse_response(in, size, 4096, h, 16, &r);
    if (rc > 0) {
        if ((size_t)rc > size || r.nheaders > 16 || r.status < 100 || r.status > 599)
            abort();
        for (size_t i = 0; i < r.nheaders; i++)
            if (h[i].name < in || h[i].value < in || h[i].name + h[i].nlen > in + rc ||
                h[i].value + h[i].vlen > in + rc || h[i].nlen == 0)
                abort();
        if (r.framing == H1_BODY_LENGTH && r.content_length < 0)
            abort();
        for (size_t k = 0; k < (size_t)rc; k++) {
            struct h1_response r2;
            if (h1_parse_response(in, k, 4096, h, 16, &r2) != H1_INCOMPLETE)
                abort();
        }
    }
    /* the body: after a parsed head, else the whole input */
    size_t off = rc > 0 ? (size_t)rc : 0;
    char *a = malloc(size + 1), *b = malloc(size + 1);
    bool da = false, db = false;
    long na = decode(in + off, size - off, size + 1, a, &da);
    long nb = decode(in + off, size - off, 1, b, &db);
    if (na != nb || da != db || (na > 0 && memcmp(a, b, (size_t)na) != 0))
        abort();
    free(a);
    free(b);
    return 0;
}
