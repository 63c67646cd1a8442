/*
 * multipart: streaming multipart/form-data (RFC 7578 over RFC 2046 §5.1).
 *
 * The body is read once, in pieces of any size. A small state machine walks it: preamble,
 * delimiter, part headers, part body, and so on until the closing delimiter; the epilogue is
 * ignored. The delimiter is CRLF "--" boundary. A body starts with the delimiter without its
 * CRLF, which the parser handles by starting the preamble as if that CRLF had been seen.
 *
 * Finding the delimiter across pieces needs no copy: since a boundary cannot hold CR, a
 * partial match can only start at a CR, so the bytes held back while a match is pending are
 * always a prefix of the delimiter itself. When the match breaks, that prefix is handed on
 * from the delimiter string, and the byte that broke it is looked at again. Between CRs the
 * body is skipped with memchr and handed on in one run.
 *
 * Part headers are collected up to a ceiling, then parsed for Content-Disposition
 * (`form-data`, `name`, `filename`, `filename*=UTF-8''...`, quoted strings with backslash
 * escapes) and Content-Type. The part named like the route's file field streams to the
 * caller's callback; any other part is a form field kept in memory up to its ceiling.
 */
#include "proxy/multipart.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MP_MAX_BOUNDARY 70

enum mp_state {
    MP_PREAMBLE = 0,
    MP_AFTER_DELIM, /* "--boundary" seen: "--" (close) or padding then CRLF follow */
    MP_HEADERS,
    MP_BODY,
    MP_EPILOGUE, /* the closing delimiter was seen */
    MP_FAILED,
};

enum mp_part { PART_FILE = 1, PART_FIELD };

struct mp_field {
    char *name;
    struct buf value;
};

struct multipart {
    struct multipart_limits lim;
    char *file_field;
    multipart_file_fn on_file;
    void *arg;

    char delim[4 + MP_MAX_BOUNDARY + 1]; /* "\r\n--" boundary */
    size_t dlen;
    size_t k; /* delimiter bytes matched and held back */

    enum mp_state state;
    int after; /* MP_AFTER_DELIM: 0 start, 1 one '-' seen, 2 padding, 3 CR seen */
    struct buf hdr;
    size_t parts;

    enum mp_part part;
    struct mp_field *fields;
    size_t nfields;
    bool field_open; /* the last field's value is still arriving */

    bool file_seen;
    char *filename;
    char *file_type;
    uint64_t file_bytes;

    cut_err failure; /* the first error, repeated by every later call */
};

static const struct multipart_limits mp_defaults = {
    .max_part_header = 8192,
    .max_field = 64 * 1024,
    .max_fields = 64,
    .max_parts = 1000,
    .max_file = 0,
};

static bool fail(multipart *mp, cut_err *err, int code, const char *fmt, const char *arg)
{
    if (mp->state != MP_FAILED) {
        err_set(&mp->failure, code, "multipart", fmt, arg ? arg : "");
        mp->state = MP_FAILED;
    }
    err_set(err, mp->failure.code, mp->failure.where, "%s", mp->failure.msg);
    return false;
}

static bool is_lws(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_tchar(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_bchar(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("'()+_,-./:=? ", c));
}

/* ---- header values: `token; name=value; name="quoted"` ------------------------------- */

struct param_walk {
    const char *p, *end;
};

/* Next parameter of a header value. Returns 1 with name/value (value unquoted into vbuf,
 * NUL-terminated), 0 at the end, -1 when malformed. */
static int next_param(struct param_walk *w, char *name, size_t nlen, struct buf *vbuf)
{
    const char *p = w->p;
    size_t n = 0;

    while (p < w->end && is_lws(*p))
        p++;
    if (p == w->end)
        return 0;
    if (*p != ';')
        return -1;
    p++;
    while (p < w->end && is_lws(*p))
        p++;
    if (p == w->end)
        return 0; /* a trailing ';' */
    while (p < w->end && is_tchar(*p)) {
        if (n + 1 >= nlen)
            return -1;
        name[n++] = *p++;
    }
    name[n] = 0;
    while (p < w->end && is_lws(*p))
        p++;
    if (n == 0 || p == w->end || *p != '=')
        return -1;
    p++;
    while (p < w->end && is_lws(*p))
        p++;
    buf_reset(vbuf);
    if (p < w->end && *p == '"') {
        p++;
        for (;;) {
            if (p == w->end)
                return -1; /* unterminated */
            if (*p == '"')
                break;
            if (*p == '\\' && p + 1 < w->end)
                p++;
            if (!buf_append(vbuf, p, 1))
                return -1;
            p++;
        }
        p++;
    } else {
        const char *s = p;
        while (p < w->end && is_tchar(*p))
            p++;
        if (p == s || !buf_append(vbuf, s, (size_t)(p - s)))
            return -1;
    }
    if (!vbuf->data && !buf_append(vbuf, "", 0))
        return -1;
    w->p = p;
    return 1;
}

/* `filename*` (RFC 8187): "UTF-8''" then percent-encoded bytes. Returns a new string, or
 * NULL when the charset is not UTF-8 or the encoding is broken. */
static char *ext_value(const char *v)
{
    const char *q;
    char *out;
    size_t n;
    long len;

    if (strncasecmp(v, "utf-8'", 6) != 0)
        return NULL;
    q = strchr(v + 6, '\''); /* language, may be empty */
    if (!q)
        return NULL;
    q++;
    n = strlen(q);
    out = xmalloc(n + 1);
    len = pct_decode(q, n, out, n + 1);
    if (len < 0 || memchr(out, 0, (size_t)len)) {
        free(out);
        return NULL;
    }
    return out;
}

/* Parses one part's header block (hdr, ending with an empty line). */
static bool part_begin(multipart *mp, cut_err *err)
{
    const char *p = mp->hdr.data, *end = mp->hdr.data + mp->hdr.len;
    char *name = NULL, *filename = NULL, *filename_ext = NULL, *ctype = NULL;
    bool disposition = false, ok = false;
    struct buf v;

    buf_init(&v, mp->lim.max_part_header);
    if (++mp->parts > mp->lim.max_parts) {
        fail(mp, err, CUT_ELIMIT, "more parts than the ceiling%s", "");
        goto out;
    }
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        const char *colon, *vs, *ve;
        if (!eol || eol == p)
            break; /* the empty line ending the block */
        colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p || is_lws(*p)) {
            fail(mp, err, CUT_EINVAL, "malformed part header line%s", "");
            goto out;
        }
        for (const char *c = p; c < colon; c++)
            if (!is_tchar(*c)) {
                fail(mp, err, CUT_EINVAL, "malformed part header name%s", "");
                goto out;
            }
        vs = colon + 1;
        ve = eol;
        while (vs < ve && is_lws(*vs))
            vs++;
        while (ve > vs && is_lws(ve[-1]))
            ve--;
        size_t nlen = (size_t)(colon - p);
        if (nlen == 19 && strncasecmp(p, "content-disposition", 19) == 0) {
            struct param_walk w;
            char pname[32];
            int r;
            const char *t = vs;
            if (disposition) {
                fail(mp, err, CUT_EINVAL, "a part with two Content-Disposition fields%s", "");
                goto out;
            }
            disposition = true;
            while (t < ve && is_tchar(*t))
                t++;
            if (t - vs != 9 || strncasecmp(vs, "form-data", 9) != 0) {
                fail(mp, err, CUT_EINVAL, "a part whose Content-Disposition is not form-data%s",
                     "");
                goto out;
            }
            w.p = t;
            w.end = ve;
            while ((r = next_param(&w, pname, sizeof(pname), &v)) == 1) {
                char **slot = NULL;
                if (strcasecmp(pname, "name") == 0)
                    slot = &name;
                else if (strcasecmp(pname, "filename") == 0)
                    slot = &filename;
                if (slot && !*slot) {
                    if (memchr(v.data, 0, v.len)) {
                        fail(mp, err, CUT_EINVAL, "a NUL byte in a part's %s", pname);
                        goto out;
                    }
                    *slot = xstrndup(v.data, v.len);
                } else if (strcasecmp(pname, "filename*") == 0 && !filename_ext) {
                    filename_ext = ext_value(v.data);
                }
            }
            if (r < 0) {
                fail(mp, err, CUT_EINVAL, "malformed Content-Disposition parameters%s", "");
                goto out;
            }
        } else if (nlen == 12 && strncasecmp(p, "content-type", 12) == 0 && !ctype) {
            ctype = xstrndup(vs, (size_t)(ve - vs));
        }
        p = eol + 2;
    }
    if (!disposition || !name) {
        fail(mp, err, CUT_EINVAL, "a part without Content-Disposition: form-data; name=...%s", "");
        goto out;
    }
    if (strcmp(name, mp->file_field) == 0) {
        if (mp->file_seen) {
            fail(mp, err, CUT_EINVAL, "a second file part named '%s'", mp->file_field);
            goto out;
        }
        mp->file_seen = true;
        mp->part = PART_FILE;
        mp->filename = filename_ext ? filename_ext : filename;
        if (filename_ext) {
            free(filename);
        }
        filename = filename_ext = NULL;
        mp->file_type = ctype;
        ctype = NULL;
    } else {
        struct mp_field *f;
        if (mp->nfields >= mp->lim.max_fields) {
            fail(mp, err, CUT_ELIMIT, "more form fields than the ceiling%s", "");
            goto out;
        }
        mp->fields = xrealloc(mp->fields, (mp->nfields + 1) * sizeof(*mp->fields));
        f = &mp->fields[mp->nfields++];
        f->name = name;
        name = NULL;
        buf_init(&f->value, mp->lim.max_field);
        mp->part = PART_FIELD;
        mp->field_open = true;
    }
    ok = true;
out:
    free(name);
    free(filename);
    free(filename_ext);
    free(ctype);
    buf_free(&v);
    buf_reset(&mp->hdr);
    return ok;
}

/* Bytes of the current part's body. */
static bool part_data(multipart *mp, const char *data, size_t n, cut_err *err)
{
    if (n == 0 || mp->state == MP_PREAMBLE)
        return true;
    if (mp->part == PART_FILE) {
        if (mp->lim.max_file && n > mp->lim.max_file - mp->file_bytes)
            return fail(mp, err, CUT_ELIMIT, "the file part '%s' is over the size ceiling",
                        mp->file_field);
        mp->file_bytes += n;
        if (!mp->on_file(mp->arg, data, n))
            return fail(mp, err, CUT_EINVAL, "stopped%s", "");
        return true;
    }
    struct mp_field *f = &mp->fields[mp->nfields - 1];
    if (!buf_append(&f->value, data, n))
        return fail(mp, err, CUT_ELIMIT, "the form field '%s' is over the size ceiling", f->name);
    return true;
}

/* Walks data for the delimiter in the preamble or a part's body. Returns the bytes used
 * (the delimiter included when it completes; then state is MP_AFTER_DELIM), or -1. */
static long scan(multipart *mp, const char *data, size_t n, cut_err *err)
{
    size_t i = 0, run = 0;

    while (i < n) {
        if (mp->k == 0) {
            const char *cr = memchr(data + i, '\r', n - i);
            if (!cr) {
                i = n;
                break;
            }
            i = (size_t)(cr - data);
            if (!part_data(mp, data + run, i - run, err))
                return -1;
            mp->k = 1;
            i++;
            continue;
        }
        if (data[i] == mp->delim[mp->k]) {
            mp->k++;
            i++;
            if (mp->k == mp->dlen) {
                mp->k = 0;
                mp->field_open = false;
                mp->state = MP_AFTER_DELIM;
                mp->after = 0;
                return (long)i;
            }
            continue;
        }
        /* the match broke: what was held back is data; look at this byte again */
        if (!part_data(mp, mp->delim, mp->k, err))
            return -1;
        mp->k = 0;
        run = i;
    }
    if (mp->k == 0 && !part_data(mp, data + run, i - run, err))
        return -1;
    return (long)i;
}

multipart *multipart_new(const char *content_type, const char *file_field,
                         const struct multipart_limits *limits, multipart_file_fn on_file,
                         void *arg, cut_err *err)
{
    multipart *mp = NULL;
    const char *p, *end;
    struct param_walk w;
    struct buf v;
    char pname[32];
    int r;
    bool found = false;

    buf_init(&v, 1024);
    if (!content_type || !file_field || !*file_field || !on_file) {
        err_set(err, CUT_EINVAL, "multipart", "no Content-Type or no file field");
        goto out;
    }
    p = content_type;
    end = p + strlen(p);
    while (p < end && is_lws(*p))
        p++;
    if ((size_t)(end - p) < 19 || strncasecmp(p, "multipart/form-data", 19) != 0 ||
        (p + 19 < end && p[19] != ';' && !is_lws(p[19]))) {
        err_set(err, CUT_EINVAL, "multipart", "the Content-Type is not multipart/form-data");
        goto out;
    }
    w.p = p + 19;
    w.end = end;
    while ((r = next_param(&w, pname, sizeof(pname), &v)) == 1) {
        if (strcasecmp(pname, "boundary") != 0 || found)
            continue;
        found = true;
        if (v.len == 0 || v.len > MP_MAX_BOUNDARY || v.data[v.len - 1] == ' ') {
            err_set(err, CUT_EINVAL, "multipart", "the boundary must have 1 to 70 characters");
            goto out;
        }
        for (size_t i = 0; i < v.len; i++)
            if (!is_bchar(v.data[i])) {
                err_set(err, CUT_EINVAL, "multipart",
                        "the boundary holds a character RFC 2046 does not allow");
                goto out;
            }
        mp = xcalloc(1, sizeof(*mp));
        memcpy(mp->delim, "\r\n--", 4);
        memcpy(mp->delim + 4, v.data, v.len);
        mp->dlen = 4 + v.len;
    }
    if (r < 0 || !found) {
        err_set(err, CUT_EINVAL, "multipart",
                r < 0 ? "malformed Content-Type parameters" : "the Content-Type has no boundary");
        free(mp);
        mp = NULL;
        goto out;
    }
    mp->lim = mp_defaults;
    if (limits) {
        if (limits->max_part_header)
            mp->lim.max_part_header = limits->max_part_header;
        if (limits->max_field)
            mp->lim.max_field = limits->max_field;
        if (limits->max_fields)
            mp->lim.max_fields = limits->max_fields;
        if (limits->max_parts)
            mp->lim.max_parts = limits->max_parts;
        mp->lim.max_file = limits->max_file;
    }
    mp->file_field = xstrdup(file_field);
    mp->on_file = on_file;
    mp->arg = arg;
    buf_init(&mp->hdr, mp->lim.max_part_header);
    mp->state = MP_PREAMBLE;
    mp->k = 2; /* the body may start with the delimiter without its CRLF */
out:
    buf_free(&v);
    return mp;
}

void multipart_free(multipart *mp)
{
    if (!mp)
        return;
    for (size_t i = 0; i < mp->nfields; i++) {
        free(mp->fields[i].name);
        buf_free(&mp->fields[i].value);
    }
    free(mp->fields);
    buf_free(&mp->hdr);
    free(mp->file_field);
    free(mp->filename);
    free(mp->file_type);
    free(mp);
}

bool multipart_feed(multipart *mp, const void *data, size_t n, cut_err *err)
{
    const char *d = data;
    size_t i = 0;

    if (mp->state == MP_FAILED)
        return fail(mp, err, mp->failure.code, "%s", mp->failure.msg);
    while (i < n) {
        switch (mp->state) {
        case MP_PREAMBLE:
        case MP_BODY: {
            long used = scan(mp, d + i, n - i, err);
            if (used < 0)
                return false;
            i += (size_t)used;
            break;
        }
        case MP_AFTER_DELIM: {
            char c = d[i++];
            if (mp->after == 0 && c == '-') {
                mp->after = 1;
            } else if (mp->after == 1) {
                if (c != '-')
                    return fail(mp, err, CUT_EINVAL, "malformed delimiter line%s", "");
                mp->state = MP_EPILOGUE;
            } else if ((mp->after == 0 || mp->after == 2) && is_lws(c)) {
                mp->after = 2;
            } else if ((mp->after == 0 || mp->after == 2) && c == '\r') {
                mp->after = 3;
            } else if (mp->after == 3 && c == '\n') {
                mp->state = MP_HEADERS;
            } else {
                return fail(mp, err, CUT_EINVAL, "malformed delimiter line%s", "");
            }
            break;
        }
        case MP_HEADERS: {
            /* up to and including the empty line that ends the block */
            while (i < n) {
                if (!buf_append(&mp->hdr, d + i, 1))
                    return fail(mp, err, CUT_ELIMIT, "a part's headers are over the ceiling%s", "");
                i++;
                size_t L = mp->hdr.len;
                if ((L == 2 && memcmp(mp->hdr.data, "\r\n", 2) == 0) ||
                    (L >= 4 && memcmp(mp->hdr.data + L - 4, "\r\n\r\n", 4) == 0)) {
                    if (!part_begin(mp, err))
                        return false;
                    mp->state = MP_BODY;
                    break;
                }
            }
            break;
        }
        case MP_EPILOGUE:
            return true;
        case MP_FAILED:
            return false;
        }
    }
    return true;
}

bool multipart_finish(multipart *mp, cut_err *err)
{
    if (mp->state == MP_FAILED)
        return fail(mp, err, mp->failure.code, "%s", mp->failure.msg);
    if (mp->state != MP_EPILOGUE)
        return fail(mp, err, CUT_EINVAL, "the body ended before its closing boundary%s", "");
    if (!mp->file_seen)
        return fail(mp, err, CUT_EINVAL, "no file part named '%s'", mp->file_field);
    return true;
}

const char *multipart_filename(const multipart *mp)
{
    return mp->filename;
}

const char *multipart_file_type(const multipart *mp)
{
    return mp->file_type;
}

uint64_t multipart_file_bytes(const multipart *mp)
{
    return mp->file_bytes;
}

size_t multipart_field_count(const multipart *mp)
{
    /* the last field is complete once a delimiter followed it */
    return mp->field_open ? mp->nfields - 1 : mp->nfields;
}

const char *multipart_field_at(const multipart *mp, size_t i, const char **value, size_t *len)
{
    const struct mp_field *f = &mp->fields[i];
    if (value)
        *value = f->value.data ? f->value.data : "";
    if (len)
        *len = f->value.len;
    return f->name;
}

const char *multipart_field(const multipart *mp, const char *name, size_t *len)
{
    size_t n = multipart_field_count(mp);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(mp->fields[i].name, name) == 0) {
            if (len)
                *len = mp->fields[i].value.len;
            return mp->fields[i].value.data ? mp->fields[i].value.data : "";
        }
    }
    return NULL;
}
