/*
 * h1parse: see h1parse.h. Written for the upstream side of the proxy: strict where a lax
 * reading could let a response be split or smuggled (framing fields, line structure),
 * lenient only where RFC 9112 allows it (bare LF line ends, an empty reason phrase).
 */
#include "proxy/h1parse.h"

#include "core/core.h"

#include <string.h>

bool h1_is_tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool ieq(const char *a, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    if (n != m)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (c != (unsigned char)lit[i])
            return false;
    }
    return true;
}

/* One Content-Length value: digits, or a list of identical digit strings (§6.3 item 5). */
static bool parse_cl(const char *v, size_t n, int64_t *out)
{
    int64_t val = -1;
    size_t i = 0;
    while (i < n) {
        int64_t x = 0;
        size_t d = 0;
        while (i < n && v[i] >= '0' && v[i] <= '9') {
            if (x > (INT64_MAX - 9) / 10)
                return false;
            x = x * 10 + (v[i] - '0');
            i++;
            d++;
        }
        if (d == 0 || (val >= 0 && x != val))
            return false;
        val = x;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i < n) {
            if (v[i] != ',')
                return false;
            i++;
            while (i < n && (v[i] == ' ' || v[i] == '\t'))
                i++;
            if (i == n)
                return false;
        }
    }
    if (val < 0)
        return false;
    *out = val;
    return true;
}

/* Sets the Connection flags from one Connection value (a comma-separated token list). */
static void scan_connection(const char *v, size_t n, struct h1_response *r)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (ieq(v + s, i - s, "close"))
            r->conn_close = true;
        else if (ieq(v + s, i - s, "keep-alive"))
            r->conn_keep_alive = true;
    }
}

/* Finds the end of the line starting at p: returns its length without CR/LF and sets *next
 * to the start of the next line; -1 when no LF yet, -2 on a bare CR. */
static long line_end(const char *p, const char *end, const char **next)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (!lf)
        return -1;
    const char *e = lf;
    if (e > p && e[-1] == '\r')
        e--;
    if (memchr(p, '\r', (size_t)(e - p)))
        return -2;
    *next = lf + 1;
    return (long)(e - p);
}

int h1_parse_response(const char *buf, size_t len, size_t max_bytes, struct h1_header *hdrs,
                      size_t max_headers, struct h1_response *r)
{
    const char *p = buf, *end = buf + len, *next;
    int te = 0;
    bool have_cl = false;

    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    if (len > max_bytes)
        end = buf + max_bytes;

    /* status line: HTTP/1.x SP 3DIGIT [SP reason] */
    long ll = line_end(p, end, &next);
    if (ll == -2)
        return H1_ERROR;
    if (ll == -1) {
        /* refuse early when what is there cannot start a status line */
        size_t n = (size_t)(end - p) < 5 ? (size_t)(end - p) : 5;
        if (memcmp(p, "HTTP/", n) != 0)
            return H1_ERROR;
        return len >= max_bytes ? H1_TOO_BIG : H1_INCOMPLETE;
    }
    if (ll < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9' || p[8] != ' ')
        return H1_ERROR;
    r->minor = p[7] - '0';
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return H1_ERROR;
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (r->status < 100 || r->status > 599 || (ll > 12 && p[12] != ' '))
        return H1_ERROR;
    for (long i = 13; i < ll; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return H1_ERROR;
    }
    p = next;

    for (;;) {
        ll = line_end(p, end, &next);
        if (ll == -2)
            return H1_ERROR;
        if (ll == -1)
            return len >= max_bytes ? H1_TOO_BIG : H1_INCOMPLETE;
        if (ll == 0)
            break;
        if (p[0] == ' ' || p[0] == '\t')
            return H1_ERROR; /* obs-fold */
        const char *colon = memchr(p, ':', (size_t)ll);
        if (!colon || colon == p)
            return H1_ERROR;
        for (const char *q = p; q < colon; q++)
            if (!h1_is_tchar((unsigned char)*q))
                return H1_ERROR;
        const char *v = colon + 1, *ve = p + ll;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (const char *q = v; q < ve; q++) {
            unsigned char c = (unsigned char)*q;
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return H1_ERROR;
        }
        if (r->nheaders == max_headers)
            return H1_TOO_BIG;
        struct h1_header *h = &hdrs[r->nheaders++];
        h->name = p;
        h->nlen = (size_t)(colon - p);
        h->value = v;
        h->vlen = (size_t)(ve - v);
        if (ieq(h->name, h->nlen, "content-length")) {
            int64_t cl;
            if (!parse_cl(v, h->vlen, &cl) || (have_cl && cl != r->content_length))
                return H1_ERROR;
            have_cl = true;
            r->content_length = cl;
        } else if (ieq(h->name, h->nlen, "transfer-encoding")) {
            if (te++ || !ieq(v, h->vlen, "chunked"))
                return H1_ERROR;
        } else if (ieq(h->name, h->nlen, "connection")) {
            scan_connection(v, h->vlen, r);
        }
        p = next;
    }
    if (te && have_cl)
        return H1_ERROR;
    r->framing = te ? H1_BODY_CHUNKED : have_cl ? H1_BODY_LENGTH : H1_BODY_UNTIL_EOF;
    return (int)(next - buf);
}

bool h1_status_has_body(int status, bool head_request)
{
    return !head_request && status >= 200 && status != 204 && status != 304;
}

/* ---- chunked ---------------------------------------------------------------------------- */

enum {
    CK_SIZE0 = 0, /* first hex digit of a chunk size */
    CK_SIZE,      /* more hex digits */
    CK_EXT,       /* chunk extension, up to the line end */
    CK_SIZE_LF,   /* CR seen after the size line */
    CK_DATA,
    CK_DATA_CR, /* CRLF after the data */
    CK_DATA_LF,
    CK_TRAILER0, /* start of a trailer line (or the empty line that ends the body) */
    CK_TRAILER,  /* inside a trailer line */
    CK_TRAILER_LF,
    CK_END_LF, /* CR of the final empty line seen */
    CK_DONE,
};

void h1_chunked_init(struct h1_chunked *c)
{
    memset(c, 0, sizeof(*c));
}

bool h1_chunked_done(const struct h1_chunked *c)
{
    return c->state == CK_DONE;
}

static bool ext_char_ok(unsigned char ch)
{
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

long h1_chunked_step(struct h1_chunked *c, const char *in, size_t n, size_t *data_off,
                     size_t *data_len)
{
    size_t i = 0;
    *data_off = 0;
    *data_len = 0;
    while (i < n && c->state != CK_DONE) {
        unsigned char ch = (unsigned char)in[i];
        switch (c->state) {
        case CK_SIZE0:
        case CK_SIZE: {
            int h = hex_value((char)ch);
            if (h >= 0) {
                if (c->digits == 15)
                    return H1_ERROR; /* over 2^60: refused */
                c->left = (c->left << 4) | (uint64_t)h;
                c->digits++;
                c->state = CK_SIZE;
                i++;
                break;
            }
            if (c->state == CK_SIZE0)
                return H1_ERROR;
            if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = CK_EXT;
                c->line_bytes = 0;
            } else if (ch == '\r') {
                c->state = CK_SIZE_LF;
                i++;
            } else if (ch == '\n') {
                i++;
                goto size_line_done;
            } else {
                return H1_ERROR;
            }
            break;
        }
        case CK_EXT:
            if (ch == '\r') {
                c->state = CK_SIZE_LF;
            } else if (ch == '\n') {
                i++;
                goto size_line_done;
            } else if (!ext_char_ok(ch) || ++c->line_bytes > H1_CHUNK_EXT_MAX) {
                return H1_ERROR;
            }
            i++;
            break;
        case CK_SIZE_LF:
            if (ch != '\n')
                return H1_ERROR;
            i++;
        size_line_done:
            c->digits = 0;
            if (c->left == 0) {
                c->state = CK_TRAILER0;
                c->line_bytes = 0;
            } else {
                c->state = CK_DATA;
            }
            break;
        case CK_DATA: {
            size_t take = n - i;
            if ((uint64_t)take > c->left)
                take = (size_t)c->left;
            c->left -= take;
            if (c->left == 0)
                c->state = CK_DATA_CR;
            *data_off = i;
            *data_len = take;
            return (long)(i + take);
        }
        case CK_DATA_CR:
            if (ch == '\r')
                c->state = CK_DATA_LF;
            else if (ch == '\n')
                c->state = CK_SIZE0;
            else
                return H1_ERROR;
            i++;
            break;
        case CK_DATA_LF:
            if (ch != '\n')
                return H1_ERROR;
            c->state = CK_SIZE0;
            i++;
            break;
        case CK_TRAILER0:
            if (ch == '\r') {
                c->state = CK_END_LF;
            } else if (ch == '\n') {
                c->state = CK_DONE;
            } else if (ch == ' ' || ch == '\t' || !h1_is_tchar(ch)) {
                return H1_ERROR; /* obs-fold or a line that cannot be a field */
            } else {
                c->state = CK_TRAILER;
                if (++c->line_bytes > H1_TRAILER_MAX)
                    return H1_ERROR;
            }
            i++;
            break;
        case CK_TRAILER:
            if (ch == '\r') {
                c->state = CK_TRAILER_LF;
            } else if (ch == '\n') {
                c->state = CK_TRAILER0;
            } else if (!ext_char_ok(ch)) {
                return H1_ERROR;
            }
            if (++c->line_bytes > H1_TRAILER_MAX)
                return H1_ERROR;
            i++;
            break;
        case CK_TRAILER_LF:
            if (ch != '\n')
                return H1_ERROR;
            c->state = CK_TRAILER0;
            i++;
            break;
        case CK_END_LF:
            if (ch != '\n')
                return H1_ERROR;
            c->state = CK_DONE;
            i++;
            break;
        default:
            return H1_ERROR;
        }
    }
    return (long)i;
}
