/*
 * Fuzz target: the streaming multipart/form-data parser (proxy/multipart.c). The input is a
 * request body for the boundary "XyZ" and the file field "file", with small ceilings so
 * that they are reached. Checked properties: no crash or read outside the input; the same
 * outcome (success or the same error), the same file bytes and the same form fields whether
 * the body is fed whole, one byte at a time, or in two pieces cut in the middle; the file
 * bytes are never more than the input and never over their ceiling.
 */
#include "proxy/multipart.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
    bool ok;
    cut_err err;
    struct buf file;
    struct buf fields; /* name NUL value-length value, for each field */
};

static bool sink(void *arg, const void *d, size_t n)
{
    struct run *r = arg;
    if (!buf_append(&r->file, d, n))
        abort();
    return true;
}

static void run_once(const uint8_t *data, size_t size, size_t step, struct run *r)
{
    static const struct multipart_limits lim = {
        .max_part_header = 256, .max_field = 64, .max_fields = 4, .max_parts = 8, .max_file = 512};
    multipart *mp;
    size_t off = 0;

    memset(r, 0, sizeof(*r));
    buf_init(&r->file, 0);
    buf_init(&r->fields, 0);
    mp = multipart_new("multipart/form-data; boundary=XyZ", "file", &lim, sink, r, &r->err);
    if (!mp)
        abort();
    r->ok = true;
    while (off < size && r->ok) {
        size_t n = step && size - off > step ? step : size - off;
        r->ok = multipart_feed(mp, data + off, n, &r->err);
        off += n;
    }
    if (r->ok)
        r->ok = multipart_finish(mp, &r->err);
    for (size_t i = 0; i < multipart_field_count(mp); i++) {
        const char *v;
        size_t len;
        const char *name = multipart_field_at(mp, i, &v, &len);
        if (!buf_append(&r->fields, name, strlen(name) + 1) ||
            !buf_append(&r->fields, &len, sizeof(len)) || !buf_append(&r->fields, v, len))
            abort();
    }
    if (r->file.len > size || r->file.len > 512 || multipart_file_bytes(mp) != r->file.len)
        abort();
    multipart_free(mp);
}

static bool same(const struct buf *a, const struct buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run a, b, c;
    run_once(data, size, 0, &a);
    run_once(data, size, 1, &b);
    run_once(data, size, size / 2 ? size / 2 : 1, &c);
    if (a.ok != b.ok || a.ok != c.ok || strcmp(a.err.msg, b.err.msg) != 0 ||
        strcmp(a.err.msg, c.err.msg) != 0)
        abort();
    if (a.ok && (!same(&a.file, &b.file) || !same(&a.file, &c.file) ||
                 !same(&a.fields, &b.fields) || !same(&a.fields, &c.fields)))
        abort();
    buf_free(&a.file);
    buf_free(&b.file);
    buf_free(&c.file);
    buf_free(&a.fields);
    buf_free(&b.fields);
    buf_free(&c.fields);
    return 0;
}
