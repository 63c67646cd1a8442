/*
 * Fuzz target: what proxy/extract.c pulls out of the app's answers and the client's
 * requests. The input is four lines and a JSON text: a JSON Pointer, a request target, a
 * query parameter's name, an S3 key template, then the JSON (the app's answer; its top-level
 * string members are also the template's variables). Checked properties: no crash or read
 * outside the input; the pointer "/" + each member's escaped name (or each index of an
 * array) finds exactly that member; extract_json_string gives a string or an error with a
 * message; a query value is never longer than the target and holds no NUL; an expanded S3
 * key is 1..EXTRACT_MAX_KEY bytes, does not start with '/', is valid UTF-8 without control
 * bytes and has no "." or ".." segment, and a refused one always says why.
 */
#include "proxy/extract.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *lookup(void *arg, const char *name, size_t nlen, size_t *len)
{
    char n[64];
    const json_t *v;
    if (nlen >= sizeof(n))
        return NULL;
    memcpy(n, name, nlen);
    n[nlen] = '\0';
    v = json_is_object((json_t *)arg) ? json_object_get(arg, n) : NULL;
    if (!json_is_string(v))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

/* "/" + name with '~' as "~0" and '/' as "~1". Returns a new string. */
static char *escape(const char *name)
{
    char *out = xmalloc(2 * strlen(name) + 2), *o = out;
    *o++ = '/';
    for (const char *c = name; *c; c++) {
        if (*c == '~' || *c == '/') {
            *o++ = '~';
            *o++ = *c == '~' ? '0' : '1';
        } else {
            *o++ = *c;
        }
    }
    *o = '\0';
    return out;
}

static void check_key(const char *key, const cut_err *err)
{
    if (key == NULL) {
        if (err->msg[0] == '\0')
            abort(); /* refused without a reason */
        return;
    }
    size_t n = strlen(key);
    if (n == 0 || n > EXTRACT_MAX_KEY || key[0] == '/' || !utf8_valid(key, n))
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
            abort();
    for (const char *s = key;;) {
        size_t seg = strcspn(s, "/");
        if ((seg == 1 && s[0] == '.') || (seg == 2 && s[0] == '.' && s[1] == '.'))
            abort();
        if (s[seg] == '\0')
            break;
        s += seg + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text, *line[4], *rest, *p;
    json_t *root;
    json_error_t jerr;

    if (size > 8192)
        return 0;
    text = xstrndup((const char *)data, size);
    p = text;
    for (int i = 0; i < 4; i++) {
        char *nl = strchr(p, '\n');
        if (nl == NULL) {
            free(text);
            return 0;
        }
        *nl = '\0';
        line[i] = p;
        p = nl + 1;
    }
    rest = p;
    root = json_loads(rest, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);

    /* the pointer as given */
    if (root) {
        cut_err err = CUT_ERR_INIT;
        (void)extract_json_pointer(root, line[0]);
        char *s = extract_json_string(root, line[0], &err);
        if (s == NULL && err.msg[0] == '\0')
            abort();
        free(s);
        if (extract_json_pointer(root, "") != root)
            abort();
    }
    /* every member and index is found by its own pointer */
    if (json_is_object(root)) {
        const char *k;
        json_t *v;
        json_object_foreach(root, k, v)
        {
            char *ptr = escape(k);
            if (extract_json_pointer(root, ptr) != v)
                abort();
            free(ptr);
        }
    } else if (json_is_array(root)) {
        for (size_t i = 0; i < json_array_size(root) && i < 32; i++) {
            char ptr[24];
            snprintf(ptr, sizeof(ptr), "/%zu", i);
            if (extract_json_pointer(root, ptr) != json_array_get(root, i))
                abort();
        }
    }
    /* a query parameter */
    char *q = extract_query_param(line[1], line[2]);
    if (q && strlen(q) > strlen(line[1]))
        abort();
    free(q);
    /* the key template, with the answer's members as variables */
    {
        cut_err err = CUT_ERR_INIT;
        char *key = extract_s3_key(line[3], lookup, root, &err);
        check_key(key, &err);
        free(key);
    }
    json_decref(root);
    free(text);
    return 0;
}
