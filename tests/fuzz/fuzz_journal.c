/*
 * Fuzz target: the journal reader (storage/journal.c). Two properties. Any bytes: no crash
 * or read outside the input, and every record handed over is within the input and under the
 * ceiling. A journal built from the input (cut into records by its own length bytes) then
 * cut short and given a damaged byte: the reader hands over only records that were
 * appended, each intact, in order, and every whole record before the damage. Payloads are
 * made printable, as the JSON text the journal holds is: such a payload can never contain a
 * whole record of its own (a length up to the ceiling has a NUL byte). And the records an
 * upload leaves (journal_doc_decode), for every record the input holds and for the whole
 * input as one payload: no crash; a record that decodes has a storage key, a size of -1 or
 * more, a sequence of 0 or more (0 below version 2), and encoding it again gives a record that
 * decodes to the same fields.
 */
#include "storage/journal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct check {
    const uint8_t *base;
    size_t n;
    /* the records appended, for the second property */
    const uint8_t *rec[64];
    size_t len[64];
    size_t nrec, next;
    bool bad;
};

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* The decoding properties for one payload. */
static void check_doc(const void *p, size_t n)
{
    struct journal_doc a, b;
    cut_err err = CUT_ERR_INIT;
    char *text;

    if (!journal_doc_decode(p, n, &a, &err))
        return;
    if (!a.doc.storage_key || !*a.doc.storage_key || a.doc.size < -1 || a.doc.answered_seq < 0 ||
        (a.version < 2 && a.doc.answered_seq != 0))
        abort();
    text = journal_doc_encode(&a.doc);
    if (!text || !journal_doc_decode(text, strlen(text), &b, &err))
        abort();
    if (!same_str(a.doc.storage_key, b.doc.storage_key) || !same_str(a.doc.s3_key, b.doc.s3_key) ||
        !same_str(a.doc.vars, b.doc.vars) || !same_str(a.doc.spool_path, b.doc.spool_path) ||
        !same_str(a.doc.md5, b.doc.md5) || !same_str(a.doc.sha256, b.doc.sha256) ||
        !same_str(a.doc.content_type, b.doc.content_type) ||
        !same_str(a.doc.filename, b.doc.filename) ||
        !same_str(a.doc.failed_reason, b.doc.failed_reason) || a.doc.size != b.doc.size ||
        a.doc.answered_seq != b.doc.answered_seq || b.version != JOURNAL_DOC_VERSION)
        abort();
    journal_doc_clear(&b);
    journal_doc_clear(&a);
    free(text);
}

static bool any_record(void *arg, const void *p, size_t n)
{
    struct check *c = arg;
    const uint8_t *q = p;
    if (n == 0 || n > JOURNAL_MAX_RECORD || q < c->base || q + n > c->base + c->n)
        abort();
    check_doc(p, n);
    return true;
}

/* Records must be appended ones, in order (skipping is allowed after damage). */
static bool known_record(void *arg, const void *p, size_t n)
{
    struct check *c = arg;
    while (c->next < c->nrec && (c->len[c->next] != n || memcmp(c->rec[c->next], p, n) != 0))
        c->next++;
    if (c->next == c->nrec)
        abort(); /* a record that was never appended */
    c->next++;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct check c = {.base = data, .n = size};
    struct journal_scan scan;
    unsigned char *file;
    size_t off = 0, pos = 0, cut, damage;

    journal_parse(data, size, any_record, &c, &scan);
    check_doc(data, size);
    if (scan.records * JOURNAL_HEADER > size || scan.skipped_bytes > size)
        abort();

    if (size < 3)
        return 0;
    file = malloc(size * 2 + 64 * JOURNAL_HEADER);
    uint8_t *text = malloc(size);
    for (size_t i = 0; i < size; i++)
        text[i] = (uint8_t)(0x20 + data[i] % 0x5f);
    cut = data[0] | (size_t)data[1] << 8;
    damage = data[2];
    pos = 3;
    while (pos < size && c.nrec < 64) {
        size_t n = data[pos] % 64 + 1;
        pos++;
        if (n > size - pos)
            n = size - pos;
        if (n == 0)
            break;
        c.rec[c.nrec] = text + pos;
        c.len[c.nrec++] = n;
        off += journal_encode(text + pos, n, file + off);
        pos += n;
    }
    if (cut > off)
        cut = off;
    if (damage && damage - 1 < cut)
        file[damage - 1] ^= 0x5a;
    journal_parse(file, cut, known_record, &c, &scan);
    /* undamaged and uncut: every record comes back */
    if (!damage && cut == off && scan.records != c.nrec)
        abort();
    free(file);
    free(text);
    return 0;
}
