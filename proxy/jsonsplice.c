/*
 * jsonsplice: the string at a JSON Pointer as a byte range of the answer (see jsonsplice.h).
 *
 * How: one pass over the bytes, without recursion (an explicit stack of container kinds, one
 * byte per level, JSPLICE_MAX_DEPTH at most) and without allocation (a real number longer
 * than 63 bytes is copied to the heap only to check its range with strtod). While scanning it
 * knows how many of the open containers lie on the pointer's path; a member name or an array
 * index at the next level is compared with the pointer's token only there, so the cost is one
 * validation pass whatever the answer holds. Member names are compared after unescaping
 * (the app may write "\u0075rl" for "url"), the pointer's tokens after RFC 6901's ~0 and ~1.
 *
 * Why scan it all rather than stop at the field: an answer that is not JSON must go to the
 * client unchanged, as it did when jansson loaded it; the rules follow jansson's loader so
 * that the same answers are rewritten (tests/fuzz/fuzz_jsplice.c compares the two).
 */
#include "proxy/jsonsplice.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSP_MAX_TOKENS 64
#define JSP_MAX_PTR 1024

struct ptr {
    size_t n;                    /* tokens */
    size_t off[JSP_MAX_TOKENS];  /* where each unescaped token starts in names */
    size_t len[JSP_MAX_TOKENS];  /* its length */
    long idx[JSP_MAX_TOKENS];    /* as an array index, or -1 */
    char names[JSP_MAX_PTR + 1]; /* the unescaped tokens, back to back */
};

/* Splits and unescapes the pointer. False when malformed or over the ceilings. */
static bool ptr_parse(const char *s, struct ptr *p)
{
    size_t o = 0;

    p->n = 0;
    if (strlen(s) > JSP_MAX_PTR)
        return false;
    if (*s == 0)
        return true;
    if (*s != '/')
        return false;
    while (*s == '/') {
        size_t start = o;
        s++;
        if (p->n == JSP_MAX_TOKENS)
            return false;
        for (; *s && *s != '/'; s++) {
            if (*s != '~') {
                p->names[o++] = *s;
                continue;
            }
            if (s[1] != '0' && s[1] != '1')
                return false;
            p->names[o++] = s[1] == '0' ? '~' : '/';
            s++;
        }
        p->off[p->n] = start;
        p->len[p->n] = o - start;
        /* RFC 6901 array index: digits, no leading zero; as extract.c, 9 digits at most */
        p->idx[p->n] = -1;
        if (o > start && o - start <= 9 && !(p->names[start] == '0' && o - start > 1)) {
            long v = 0;
            size_t i;
            for (i = start; i < o && p->names[i] >= '0' && p->names[i] <= '9'; i++)
                v = v * 10 + (p->names[i] - '0');
            if (i == o)
                p->idx[p->n] = v;
        }
        p->n++;
    }
    return true;
}

static const unsigned char *ws(const unsigned char *s, const unsigned char *e)
{
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++;
    return s;
}

/* Length of the valid UTF-8 sequence at s (first byte >= 0x80), or 0. */
static size_t utf8_seq(const unsigned char *s, const unsigned char *e)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;

    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F; /* no UTF-16 surrogates */
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F; /* nothing past U+10FFFF */
    if ((size_t)(e - s) < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* \uXXXX at s (s[0] == '\\', s[1] == 'u'): the 16-bit value, or -1. */
static long u4(const unsigned char *s, const unsigned char *e)
{
    long v = 0;

    if (e - s < 6 || s[0] != '\\' || s[1] != 'u')
        return -1;
    for (int i = 2; i < 6; i++) {
        int h = hexval(s[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* One escape at s (s[0] == '\\'): its code point in *cp and the bytes it takes, or 0 when
 * jansson would refuse it (unknown escape, \u0000, a lone or reversed surrogate). */
static size_t escape(const unsigned char *s, const unsigned char *e, long *cp)
{
    long v, lo;

    if (e - s < 2)
        return 0;
    switch (s[1]) {
    case '"':
    case '\\':
    case '/':
        *cp = s[1];
        return 2;
    case 'b':
        *cp = '\b';
        return 2;
    case 'f':
        *cp = '\f';
        return 2;
    case 'n':
        *cp = '\n';
        return 2;
    case 'r':
        *cp = '\r';
        return 2;
    case 't':
        *cp = '\t';
        return 2;
    case 'u':
        break;
    default:
        return 0;
    }
    v = u4(s, e);
    if (v <= 0 || (v >= 0xDC00 && v <= 0xDFFF))
        return 0;
    if (v < 0xD800 || v > 0xDBFF) {
        *cp = v;
        return 6;
    }
    lo = u4(s + 6, e);
    if (lo < 0xDC00 || lo > 0xDFFF)
        return 0;
    *cp = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
    return 12;
}

/* The string token at s (s[0] == '"'): returns the byte after its closing quote, or NULL
 * when invalid. *esc: it holds an escape. */
static const unsigned char *string_end(const unsigned char *s, const unsigned char *e, bool *esc)
{
    *esc = false;
    for (s++; s < e;) {
        unsigned char c = *s;
        if (c == '"')
            return s + 1;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            long cp;
            size_t n = escape(s, e, &cp);
            if (!n)
                return NULL;
            *esc = true;
            s += n;
        } else if (c < 0x80) {
            s++;
        } else {
            size_t n = utf8_seq(s, e);
            if (!n)
                return NULL;
            s += n;
        }
    }
    return NULL;
}

static size_t utf8_put(long cp, unsigned char out[4])
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Does the (valid) string token [s, e) say name[0..n) once unescaped? */
static bool key_is(const unsigned char *s, const unsigned char *e, bool esc, const char *name,
                   size_t n)
{
    const unsigned char *nm = (const unsigned char *)name;
    size_t o = 0;

    s++;
    e--; /* the quotes */
    if (!esc)
        return (size_t)(e - s) == n && memcmp(s, name, n) == 0;
    while (s < e) {
        if (*s != '\\') {
            if (o == n || nm[o++] != *s++)
                return false;
            continue;
        }
        long cp = 0;
        unsigned char u[4];
        size_t k;
        s += escape(s, e, &cp);
        k = utf8_put(cp, u);
        if (n - o < k || memcmp(nm + o, u, k) != 0)
            return false;
        o += k;
    }
    return o == n;
}

/* A number token at s: returns the byte after it, or NULL when jansson would refuse it
 * (spelling, an integer outside 64 bits, a real that overflows a double). */
static const unsigned char *number_end(const unsigned char *s, const unsigned char *e)
{
    const unsigned char *p = s, *digits;
    bool neg = false, real = false;
    size_t nd;

    if (p < e && *p == '-') {
        neg = true;
        p++;
    }
    digits = p;
    if (p < e && *p == '0') {
        p++;
    } else if (p < e && *p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    } else {
        return NULL;
    }
    nd = (size_t)(p - digits);
    if (p < e && *p == '.') {
        real = true;
        p++;
        if (p == e || *p < '0' || *p > '9')
            return NULL;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        real = true;
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p == e || *p < '0' || *p > '9')
            return NULL;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && *p >= '0' && *p <= '9')
        return NULL; /* "01" */
    if (!real) {
        const char *lim = neg ? "9223372036854775808" : "9223372036854775807";
        if (nd > 19 || (nd == 19 && memcmp(digits, lim, 19) > 0))
            return NULL;
        return p;
    }
    {
        char small[64], *t = small;
        size_t n = (size_t)(p - s);
        double d;
        bool ok;
        if (n >= sizeof(small))
            t = xmalloc(n + 1);
        memcpy(t, s, n);
        t[n] = 0;
        errno = 0;
        d = strtod(t, NULL);
        ok = !(errno == ERANGE && isinf(d));
        if (t != small)
            free(t);
        return ok ? p : NULL;
    }
}

static const unsigned char *literal_end(const unsigned char *s, const unsigned char *e)
{
    static const char *const lits[] = {"true", "false", "null"};

    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(lits[i]);
        if ((size_t)(e - s) >= n && memcmp(s, lits[i], n) == 0)
            return s + n;
    }
    return NULL;
}

enum jsplice_result jsplice_find(const char *doc, size_t len, const char *pointer, size_t *start,
                                 size_t *end)
{
    struct ptr pt;
    unsigned char kind[JSPLICE_MAX_DEPTH]; /* '{' or '[' per open container */
    long count[JSP_MAX_TOKENS];            /* on-path levels: elements seen, or name matches */
    const unsigned char *b = (const unsigned char *)doc, *s = b, *e = b + len;
    size_t depth = 0, onp = 0; /* open containers; how many of the outer ones are on path */
    bool on = false;           /* the next value is on the pointer's path */
    bool dup = false, expect_value = true;
    enum jsplice_result found = JSPLICE_ABSENT;

    if (!doc || !pointer || !ptr_parse(pointer, &pt))
        return JSPLICE_INVALID;
    s = ws(s, e);
    if (s == e || (*s != '{' && *s != '['))
        return JSPLICE_INVALID; /* jansson loads an object or an array only */
    if (pt.n == 0)
        found = JSPLICE_NOT_STRING;
    on = pt.n > 0;
    for (;;) {
        if (expect_value) {
            const unsigned char *v;
            bool target = on && depth == pt.n, esc;
            s = ws(s, e);
            if (s == e)
                return JSPLICE_INVALID;
            if (*s == '{' || *s == '[') {
                if (depth == JSPLICE_MAX_DEPTH)
                    return JSPLICE_INVALID;
                if (target)
                    found = JSPLICE_NOT_STRING;
                kind[depth] = *s;
                if (on && depth < pt.n) {
                    onp = depth + 1;
                    count[depth] = 0;
                }
                depth++;
                s = ws(s + 1, e);
                if (s < e && *s == (kind[depth - 1] == '{' ? '}' : ']')) {
                    s++;
                    if (onp == depth)
                        onp--;
                    depth--;
                    expect_value = false;
                    continue;
                }
                if (kind[depth - 1] == '[') {
                    on = onp == depth && pt.idx[depth - 1] == 0;
                    continue; /* the first element */
                }
                goto member;
            }
            if (*s == '"') {
                v = string_end(s, e, &esc);
                if (v && target) {
                    found = JSPLICE_STRING;
                    *start = (size_t)(s - b);
                    *end = (size_t)(v - b);
                }
            } else {
                v = (*s == '-' || (*s >= '0' && *s <= '9')) ? number_end(s, e) : literal_end(s, e);
                if (v && target)
                    found = JSPLICE_NOT_STRING;
            }
            if (!v)
                return JSPLICE_INVALID;
            s = v;
            expect_value = false;
            continue;
        }
        /* after a value */
        s = ws(s, e);
        if (depth == 0) {
            if (s != e)
                return JSPLICE_INVALID;
            break;
        }
        if (s == e)
            return JSPLICE_INVALID;
        if (*s == (kind[depth - 1] == '{' ? '}' : ']')) {
            s++;
            if (onp == depth)
                onp--;
            depth--;
            continue;
        }
        if (*s != ',')
            return JSPLICE_INVALID;
        s++;
        expect_value = true;
        if (kind[depth - 1] == '[') {
            on = false;
            if (onp == depth)
                on = ++count[depth - 1] == pt.idx[depth - 1];
            continue;
        }
    member : {
        const unsigned char *k;
        bool esc;
        s = ws(s, e);
        if (s == e || *s != '"')
            return JSPLICE_INVALID;
        k = string_end(s, e, &esc);
        if (!k)
            return JSPLICE_INVALID;
        on = onp == depth && key_is(s, k, esc, pt.names + pt.off[depth - 1], pt.len[depth - 1]);
        if (on && count[depth - 1]++ > 0)
            dup = true;
        s = ws(k, e);
        if (s == e || *s != ':')
            return JSPLICE_INVALID;
        s++;
        expect_value = true;
    }
    }
    return dup ? JSPLICE_DUPLICATE : found;
}

/* True when s[0..n) is printable ASCII without '"' or '\\' (nothing to escape): eight bytes
 * at a time, each test exact for "some byte is" (a byte over 0x7f only makes it say no). */
static bool plain_ascii(const unsigned char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = ones * 0x80;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t w, q, b;
        memcpy(&w, s + i, 8);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        if ((w | ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs)
            return false;
    }
    for (; i < n; i++)
        if (s[i] < 0x20 || s[i] >= 0x80 || s[i] == '"' || s[i] == '\\')
            return false;
    return true;
}

/* The bytes c takes inside a JSON string as jansson writes it. */
static size_t esc_len(unsigned char c)
{
    if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t')
        return 2;
    return c < 0x20 ? 6 : 1;
}

bool jsplice_put_string(struct buf *body, size_t start, size_t end, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t enc = 2, old = end - start, tail;
    bool plain = true, ascii = true; /* nothing to escape; no byte over 0x7f */
    char *o;

    if (start > end || end > body->len)
        return false;
    plain = plain_ascii((const unsigned char *)s, n); /* the common case: a URL */
    if (!plain) {
        for (size_t i = 0; i < n && ascii; i++)
            ascii = (unsigned char)s[i] < 0x80;
        if (!ascii && !utf8_valid(s, n))
            return false;
        plain = true;
        for (size_t i = 0; i < n && plain; i++) {
            unsigned char c = (unsigned char)s[i];
            plain = c >= 0x20 && c != '"' && c != '\\';
        }
    }
    if (plain) {
        enc += n;
    } else {
        for (size_t i = 0; i < n; i++)
            enc += esc_len((unsigned char)s[i]);
    }
    tail = body->len - end;
    if (enc > old) {
        /* grow first (the ceiling is checked here), then move the tail over the new bytes */
        static const char zeros[256];
        size_t grow = enc - old, len0 = body->len;
        if (body->max && (body->len > body->max || grow > body->max - body->len))
            return false;
        while (grow) {
            size_t k = grow < sizeof(zeros) ? grow : sizeof(zeros);
            if (!buf_append(body, zeros, k)) {
                body->len = len0;
                body->data[len0] = '\0';
                return false;
            }
            grow -= k;
        }
    }
    memmove(body->data + start + enc, body->data + end, tail);
    o = body->data + start;
    *o++ = '"';
    if (plain) {
        memcpy(o, s, n);
        o += n;
    }
    for (size_t i = 0; !plain && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *sh = c == '"'    ? "\\\""
                         : c == '\\' ? "\\\\"
                         : c == '\b' ? "\\b"
                         : c == '\f' ? "\\f"
                         : c == '\n' ? "\\n"
                         : c == '\r' ? "\\r"
                         : c == '\t' ? "\\t"
                                     : NULL;
        if (sh) {
            *o++ = sh[0];
            *o++ = sh[1];
        } else if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
    }
    *o = '"';
    body->len = start + enc + tail;
    body->data[body->len] = '\0';
    return true;
}

const char *jsplice_result_name(enum jsplice_result r)
{
    switch (r) {
    case JSPLICE_STRING:
        return "string";
    case JSPLICE_INVALID:
        return "not JSON";
    case JSPLICE_ABSENT:
        return "no value at the pointer";
    case JSPLICE_NOT_STRING:
        return "not a string at the pointer";
    case JSPLICE_DUPLICATE:
        return "a duplicate member name on the pointer's path";
    }
    return "?";
}
