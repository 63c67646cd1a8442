/*
 * Fuzz target: the JSON splice of the signed-URL rewrite, against jansson. The input is a
 * JSON Pointer, a newline, then the answer. Properties: no crash or overflow; the splice
 * refuses (JSPLICE_INVALID) exactly the answers json_loadb refuses, and also those with a
 * raw NUL byte (which jansson passes over between tokens); found, absent and
 * not-a-string agree with extract_json_pointer over jansson's tree; a spliced answer loads
 * with jansson and equals the original tree with that one string replaced, and every byte
 * outside the replaced range is the app's.
 */
#include "proxy/extract.h"
#include "proxy/jsonsplice.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char NEW[] = "https://s3.example/k?X-Amz-Signature=\"\\\x01\xc3\xa9";

/* Not RFC 6901: neither empty nor starting with '/', or a '~' not followed by 0 or 1. */
static bool ptr_malformed(const char *p)
{
    if (p[0] && p[0] != '/')
        return true;
    for (; *p; p++)
        if (p[0] == '~' && p[1] != '0' && p[1] != '1')
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *nl = memchr(in, '\n', size < 256 ? size : 256);
    char ptr[257];
    const char *doc;
    size_t dlen, a = 0, b = 0, slashes = 0;
    json_error_t je;
    json_t *j = NULL, *k = NULL;
    const json_t *v;
    enum jsplice_result r;
    struct buf body;

    if (!nl || memchr(in, 0, (size_t)(nl - in)))
        return 0;
    memcpy(ptr, in, (size_t)(nl - in));
    ptr[nl - in] = 0;
    for (const char *p = ptr; *p; p++)
        slashes += *p == '/';
    if (slashes > 60)
        return 0;
    doc = nl + 1;
    dlen = size - (size_t)(doc - in);
    r = jsplice_find(doc, dlen, ptr, &a, &b);
    j = json_loadb(doc, dlen, 0, &je);
    if (!j) {
        if (r != JSPLICE_INVALID)
            abort(); /* jansson refuses what the splice would rewrite */
        return 0;
    }
    v = extract_json_pointer(j, ptr);
    switch (r) {
    case JSPLICE_INVALID:
        /* only a malformed pointer, which finds nothing in jansson's tree either; or a raw
         * NUL byte between tokens, which jansson 2.14 passes over and RFC 8259 does not
         * allow: the splice refuses such an answer, and the app's bytes go out unchanged */
        if (memchr(doc, 0, dlen))
            break;
        if (v || !ptr_malformed(ptr))
            abort();
        break;
    case JSPLICE_ABSENT:
        if (v)
            abort();
        break;
    case JSPLICE_NOT_STRING:
        if (!v || json_is_string(v))
            abort();
        break;
    case JSPLICE_DUPLICATE:
        break;
    case JSPLICE_STRING:
        if (!json_is_string(v) || a >= b || b > dlen || doc[a] != '"' || doc[b - 1] != '"')
            abort();
        buf_init(&body, 0);
        if (!buf_append(&body, doc, dlen) || !jsplice_put_string(&body, a, b, NEW, sizeof(NEW) - 1))
            abort();
        if (memcmp(body.data, doc, a) != 0 ||
            memcmp(body.data + body.len - (dlen - b), doc + b, dlen - b) != 0)
            abort();
        k = json_loadb(body.data, body.len, 0, &je);
        if (!k || json_string_set((json_t *)v, NEW) != 0 || !json_equal(j, k))
            abort();
        buf_free(&body);
        break;
    }
    json_decref(j);
    json_decref(k);
    return 0;
}
