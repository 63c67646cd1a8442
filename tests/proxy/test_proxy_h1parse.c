/*
 * test_proxy_h1parse: the upstream answer parser (proxy/h1parse.c), table-driven. Heads are fed
 * whole and one byte at a time (the answer must not depend on how bytes arrive); chunked
 * bodies are fed whole and in every two-part split.
 */
#include "tests/unit.h"

#include "proxy/h1parse.h"

#include <stdio.h>
#include <string.h>

struct head_case {
    const char *name;
    const char *in;
    int want; /* > 0: parsed (the head's length is checked to be the whole input minus
                 `extra`), or H1_INCOMPLETE / H1_ERROR / H1_TOO_BIG */
    int status;
    enum h1_framing framing;
    long long cl;
    int nheaders;
    bool close;
    size_t extra;
};

#define OK 1

static const struct head_case heads[] = {
    {"plain 200 with length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", OK, 200,
     H1_BODY_LENGTH, 5, 1, false, 0},
    {"body bytes after the head", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", OK, 200,
     H1_BODY_LENGTH, 5, 1, false, 5},
    {"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", OK, 200, H1_BODY_CHUNKED,
     -1, 1, false, 0},
    {"chunked any case", "HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n", OK, 200,
     H1_BODY_CHUNKED, -1, 1, false, 0},
    {"until close", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n", OK, 200, H1_BODY_UNTIL_EOF, -1, 1, false,
     0},
    {"no reason phrase", "HTTP/1.1 204\r\n\r\n", OK, 204, H1_BODY_UNTIL_EOF, -1, 0, false, 0},
    {"empty reason phrase", "HTTP/1.1 404 \r\n\r\n", OK, 404, H1_BODY_UNTIL_EOF, -1, 0, false, 0},
    {"reason with spaces and tab", "HTTP/1.1 500 Internal\tServer Error\r\n\r\n", OK, 500,
     H1_BODY_UNTIL_EOF, -1, 0, false, 0},
    {"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", OK, 200, H1_BODY_LENGTH, 0, 1,
     false, 0},
    {"bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: 2\n\n", OK, 200, H1_BODY_LENGTH, 2, 1,
     false, 0},
    {"Connection close", "HTTP/1.1 200 OK\r\nConnection: x-a, Close\r\n\r\n", OK, 200,
     H1_BODY_UNTIL_EOF, -1, 1, true, 0},
    {"repeated fields kept", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n", OK,
     200, H1_BODY_UNTIL_EOF, -1, 2, false, 0},
    {"empty value", "HTTP/1.1 200 OK\r\nX-Empty:\r\n\r\n", OK, 200, H1_BODY_UNTIL_EOF, -1, 1, false,
     0},
    {"value trimmed", "HTTP/1.1 200 OK\r\nX-A: \t v \t\r\n\r\n", OK, 200, H1_BODY_UNTIL_EOF, -1, 1,
     false, 0},
    {"obs-text in a value", "HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\r\n\r\n", OK, 200,
     H1_BODY_UNTIL_EOF, -1, 1, false, 0},
    {"equal Content-Length twice",
     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", OK, 200, H1_BODY_LENGTH,
     3, 2, false, 0},
    {"Content-Length list of equal values", "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", OK,
     200, H1_BODY_LENGTH, 3, 1, false, 0},
    {"100 Continue is a head of its own", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
     OK, 100, H1_BODY_UNTIL_EOF, -1, 0, false, 19},
    {"incomplete status line", "HTTP/1.1 200 O", H1_INCOMPLETE, 0, 0, 0, 0, false, 0},
    {"incomplete head", "HTTP/1.1 200 OK\r\nX-A: 1\r\n", H1_INCOMPLETE, 0, 0, 0, 0, false, 0},
    {"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"HTTP/2 status line", "HTTP/2 200\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"HTTP/1.1 lower case", "http/1.1 200 OK\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"status 600", "HTTP/1.1 600 X\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"status 099", "HTTP/1.1 099 X\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"letters in status", "HTTP/1.1 2x0 OK\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"control in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"bare CR in a value", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"NUL in a value", "HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n", H1_ERROR, 0, 0, 0,
     0, false, 0},
    {"no colon", "HTTP/1.1 200 OK\r\nX-A\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"empty name", "HTTP/1.1 200 OK\r\n: v\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"non-token name", "HTTP/1.1 200 OK\r\nX@A: 1\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n\r\n", H1_ERROR, 0, 0, 0, 0, false, 0},
    {"differing Content-Length",
     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", H1_ERROR, 0, 0, 0, 0,
     false, 0},
    {"Content-Length list differing", "HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n", H1_ERROR,
     0, 0, 0, 0, false, 0},
    {"Content-Length negative", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", H1_ERROR, 0, 0, 0,
     0, false, 0},
    {"Content-Length plus", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", H1_ERROR, 0, 0, 0, 0,
     false, 0},
    {"Content-Length empty", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", H1_ERROR, 0, 0, 0, 0,
     false, 0},
    {"Content-Length trailing comma", "HTTP/1.1 200 OK\r\nContent-Length: 3,\r\n\r\n", H1_ERROR, 0,
     0, 0, 0, false, 0},
    {"Content-Length hex", "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", H1_ERROR, 0, 0, 0, 0,
     false, 0},
    {"Content-Length overflow", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
     H1_ERROR, 0, 0, 0, 0, false, 0},
    {"Content-Length with chunked",
     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", H1_ERROR, 0, 0,
     0, 0, false, 0},
    {"TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", H1_ERROR, 0,
     0, 0, 0, false, 0},
    {"TE identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", H1_ERROR, 0, 0, 0, 0,
     false, 0},
    {"two TE lines",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
     H1_ERROR, 0, 0, 0, 0, false, 0},
};

static void check_head(const struct head_case *c, const char *in, size_t len)
{
    struct h1_header h[8];
    struct h1_response r;
    int rc = h1_parse_response(in, len, 4096, h, 8, &r);
    if (c->want == OK) {
        if (rc != (int)(len - c->extra))
            fail_msg("%s: rc %d, want %zu", c->name, rc, len - c->extra);
        if (r.status != c->status || (int)r.nheaders != c->nheaders || r.conn_close != c->close ||
            r.content_length != c->cl || r.framing != c->framing)
            fail_msg("%s: status %d nheaders %zu close %d cl %lld framing %d", c->name, r.status,
                     r.nheaders, r.conn_close, (long long)r.content_length, (int)r.framing);
    } else if (rc != c->want) {
        fail_msg("%s: rc %d, want %d", c->name, rc, c->want);
    }
}

static size_t case_len(const struct head_case *c)
{
    /* the NUL case carries a NUL inside: its length is up to the final CRLFCRLF */
    size_t n = strlen(c->in);
    if (strcmp(c->name, "NUL in a value") == 0)
        n = sizeof("HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n") - 1;
    return n;
}

static void test_heads(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        const struct head_case *c = &heads[i];
        size_t len = case_len(c);
        check_head(c, c->in, len);
        /* any prefix of a good head is incomplete, never an error */
        if (c->want == OK) {
            struct h1_header h[8];
            struct h1_response r;
            size_t head = len - c->extra;
            for (size_t k = 0; k < head; k++) {
                int rc = h1_parse_response(c->in, k, 4096, h, 8, &r);
                if (rc != H1_INCOMPLETE)
                    fail_msg("%s: prefix %zu gave %d", c->name, k, rc);
            }
        }
    }
}

static void test_head_limits(void **state)
{
    (void)state;
    struct h1_header h[4];
    struct h1_response r;
    const char *five = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    assert_int_equal(h1_parse_response(five, strlen(five), 4096, h, 4, &r), H1_TOO_BIG);
    const char *four = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    assert_int_equal(h1_parse_response(four, strlen(four), 4096, h, 4, &r), (int)strlen(four));
    /* a head longer than max_bytes, complete or not */
    char big[600];
    memcpy(big, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
    memset(big + 24, 'a', sizeof(big) - 24);
    assert_int_equal(h1_parse_response(big, sizeof(big), 256, h, 4, &r), H1_TOO_BIG);
    assert_int_equal(h1_parse_response(big, 100, 256, h, 4, &r), H1_INCOMPLETE);
    memcpy(big + sizeof(big) - 4, "\r\n\r\n", 4);
    assert_int_equal(h1_parse_response(big, sizeof(big), 256, h, 4, &r), H1_TOO_BIG);
    assert_int_equal(h1_parse_response(big, sizeof(big), 1024, h, 4, &r), (int)sizeof(big));
    /* which statuses carry a body */
    assert_false(h1_status_has_body(204, false));
    assert_false(h1_status_has_body(304, false));
    assert_false(h1_status_has_body(100, false));
    assert_false(h1_status_has_body(200, true));
    assert_true(h1_status_has_body(200, false));
    assert_true(h1_status_has_body(404, false));
}

struct chunk_case {
    const char *name;
    const char *in;
    const char *body; /* NULL: an error */
    size_t extra;     /* bytes left after the body */
};

static const struct chunk_case chunks[] = {
    {"one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", 0},
    {"two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 0},
    {"upper-case hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", 0},
    {"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello", 0},
    {"empty body", "0\r\n\r\n", "", 0},
    {"extension", "5;name=value\r\nhello\r\n0;last\r\n\r\n", "hello", 0},
    {"quoted extension", "5;a=\"x;y\"\r\nhello\r\n0\r\n\r\n", "hello", 0},
    {"whitespace before extension", "5 ;a\r\nhello\r\n0\r\n\r\n", "hello", 0},
    {"trailers", "5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n", "hello", 0},
    {"bare LF", "5\nhello\n0\n\n", "hello", 0},
    {"bytes after the end stay", "1\r\na\r\n0\r\n\r\nHTTP/1.1", "a", 8},
    {"no size", "\r\nhello\r\n0\r\n\r\n", NULL, 0},
    {"bad hex", "5g\r\nhello\r\n0\r\n\r\n", NULL, 0},
    {"negative size", "-5\r\nhello\r\n0\r\n\r\n", NULL, 0},
    {"size overflow", "1000000000000000\r\nx\r\n", NULL, 0},
    {"missing CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n", NULL, 0},
    {"CR without LF after size", "5\rhello\r\n0\r\n\r\n", NULL, 0},
    {"control in extension", "5;a\x01\r\nhello\r\n0\r\n\r\n", NULL, 0},
    {"obs-fold in trailers", "0\r\nX-A: 1\r\n 2\r\n\r\n", NULL, 0},
    {"trailer not a field", "0\r\n@@\r\n\r\n", NULL, 0},
    {"CR without LF at the end", "0\r\n\rX", NULL, 0},
};

/* Decodes in[0, n) in two parts split at `split`; returns 1 done, 0 not done, -1 error. */
static int decode(const char *in, size_t n, size_t split, char *out, size_t *olen, size_t *used)
{
    struct h1_chunked c;
    h1_chunked_init(&c);
    *olen = 0;
    size_t pos = 0;
    size_t parts[2] = {split, n};
    for (int k = 0; k < 2; k++) {
        while (pos < parts[k] && !h1_chunked_done(&c)) {
            size_t off, dlen;
            long u = h1_chunked_step(&c, in + pos, parts[k] - pos, &off, &dlen);
            if (u < 0)
                return -1;
            if (u == 0)
                break;
            memcpy(out + *olen, in + pos + off, dlen);
            *olen += dlen;
            pos += (size_t)u;
        }
    }
    *used = pos;
    return h1_chunked_done(&c) ? 1 : 0;
}

static void test_chunked(void **state)
{
    (void)state;
    char out[256];
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        const struct chunk_case *c = &chunks[i];
        size_t n = strlen(c->in);
        for (size_t split = 0; split <= n; split++) {
            size_t olen, used;
            int rc = decode(c->in, n, split, out, &olen, &used);
            if (!c->body) {
                if (rc != -1)
                    fail_msg("%s (split %zu): accepted", c->name, split);
                continue;
            }
            if (rc != 1 || olen != strlen(c->body) || memcmp(out, c->body, olen) != 0 ||
                used != n - c->extra)
                fail_msg("%s (split %zu): rc %d body %.*s used %zu", c->name, split, rc, (int)olen,
                         out, used);
        }
    }
}

static void test_chunked_ceilings(void **state)
{
    (void)state;
    static char in[H1_TRAILER_MAX + 64];
    char out[8];
    size_t olen, used;
    /* an extension over the ceiling */
    memset(in, 0, sizeof(in));
    in[0] = '1';
    in[1] = ';';
    memset(in + 2, 'a', H1_CHUNK_EXT_MAX + 1);
    assert_int_equal(decode(in, strlen(in), 0, out, &olen, &used), -1);
    /* trailers over the ceiling */
    memset(in, 0, sizeof(in));
    memcpy(in, "0\r\nX: ", 6);
    memset(in + 6, 'b', H1_TRAILER_MAX);
    assert_int_equal(decode(in, strlen(in), 0, out, &olen, &used), -1);
    /* the largest size accepted: 15 hex digits, data then follows */
    struct h1_chunked c;
    size_t off, dlen;
    h1_chunked_init(&c);
    const char *big = "fffffffffffffff\r\nxy";
    long u = h1_chunked_step(&c, big, strlen(big), &off, &dlen);
    assert_int_equal(u, (long)strlen(big));
    assert_int_equal(off, 17);
    assert_int_equal(dlen, 2);
    assert_false(h1_chunked_done(&c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heads),
        cmocka_unit_test(test_head_limits),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunked_ceilings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
