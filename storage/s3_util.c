/*
 * s3_util: helpers shared by the S3 client and the credentials chain.
 *
 * The XML reader is deliberately tiny: S3 and STS answers that matter to us are flat
 * (<Code>, <Message>, <UploadId>, <ETag>, <AccessKeyId>...), so finding the first element
 * of a name and decoding the five predefined entities is enough, and it never allocates.
 * Hashing a file range reads it in 256 KiB blocks with pread so a caller may hash and later
 * send the same range without sharing a file position. The HTTP GET caps the body it keeps
 * (a credentials endpoint is a peer like any other).
 */
#include "storage/s3_util.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool s3x_xml_tag(const char *xml, size_t len, const char *tag, char *out, size_t outlen)
{
    char open[80], close[80];
    const char *p, *e, *end = xml + len;
    size_t ol, cl, j = 0;

    out[0] = '\0';
    if (xml == NULL || outlen == 0)
        return false;
    ol = (size_t)snprintf(open, sizeof(open), "<%s>", tag);
    cl = (size_t)snprintf(close, sizeof(close), "</%s>", tag);
    if (ol >= sizeof(open) || cl >= sizeof(close))
        return false;
    p = memmem(xml, len, open, ol);
    if (p == NULL)
        return false;
    p += ol;
    e = memmem(p, (size_t)(end - p), close, cl);
    if (e == NULL)
        return false;
    while (p < e) {
        char c = *p;
        size_t adv = 1;
        if (c == '&') {
            static const struct {
                const char *ent;
                char c;
            } ents[] = {{"&amp;", '&'},   {"&lt;", '<'},  {"&gt;", '>'},  {"&quot;", '"'},
                        {"&apos;", '\''}, {"&#34;", '"'}, {"&#39;", '\''}};
            for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
                size_t el = strlen(ents[i].ent);
                if ((size_t)(e - p) >= el && memcmp(p, ents[i].ent, el) == 0) {
                    c = ents[i].c;
                    adv = el;
                    break;
                }
            }
        }
        if (j + 1 >= outlen) {
            out[0] = '\0';
            return false;
        }
        out[j++] = c;
        p += adv;
    }
    out[j] = '\0';
    return true;
}

void s3x_base64(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

void s3x_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void s3x_hash_buf(const void *p, size_t n, unsigned char md5[16], unsigned char sha256[32])
{
    unsigned int l;

    if (md5 && EVP_Digest(p, n, md5, &l, EVP_md5(), NULL) != 1)
        abort();
    if (sha256 && EVP_Digest(p, n, sha256, &l, EVP_sha256(), NULL) != 1)
        abort();
}

int s3x_hash_fd(int fd, uint64_t off, uint64_t len, unsigned char md5[16], unsigned char sha256[32],
                cut_err *err)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new(), *s = EVP_MD_CTX_new();
    size_t bsz = 256 * 1024;
    char *b = xmalloc(bsz);
    unsigned int l;
    int rc = -1;

    if (m == NULL || s == NULL || EVP_DigestInit_ex(m, EVP_md5(), NULL) != 1 ||
        EVP_DigestInit_ex(s, EVP_sha256(), NULL) != 1)
        abort();
    while (len > 0) {
        size_t want = len < bsz ? (size_t)len : bsz;
        ssize_t got = pread(fd, b, want, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            err_set(err, CUT_EIO, "s3_hash", "reading the file: %s",
                    got < 0 ? strerror(errno) : "shorter than expected");
            goto out;
        }
        EVP_DigestUpdate(m, b, (size_t)got);
        EVP_DigestUpdate(s, b, (size_t)got);
        off += (uint64_t)got;
        len -= (uint64_t)got;
    }
    if (EVP_DigestFinal_ex(m, md5, &l) != 1 || EVP_DigestFinal_ex(s, sha256, &l) != 1)
        abort();
    rc = 0;
out:
    free(b);
    EVP_MD_CTX_free(m);
    EVP_MD_CTX_free(s);
    return rc;
}

static bool num(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return false;
        *v = *v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    return true;
}

bool s3x_parse_iso8601(const char *s, time_t *t)
{
    struct tm tm = {0};
    int y, mo, d, h, mi, se, oh = 0, om = 0, sign = 0;
    const char *p = s;

    if (!num(&p, 4, &y) || *p++ != '-' || !num(&p, 2, &mo) || *p++ != '-' || !num(&p, 2, &d) ||
        (*p != 'T' && *p != 't' && *p != ' '))
        return false;
    p++;
    if (!num(&p, 2, &h) || *p++ != ':' || !num(&p, 2, &mi) || *p++ != ':' || !num(&p, 2, &se))
        return false;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '+' ? 1 : -1;
        p++;
        if (!num(&p, 2, &oh))
            return false;
        if (*p == ':')
            p++;
        if (!num(&p, 2, &om))
            return false;
    } else {
        return false;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return false;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    *t = timegm(&tm) - sign * (oh * 3600 + om * 60);
    return true;
}

struct get_sink {
    struct buf *body;
    bool over;
};

static size_t get_write(char *p, size_t sz, size_t n, void *arg)
{
    struct get_sink *g = arg;

    if (!buf_append(g->body, p, sz * n)) {
        g->over = true;
        return 0;
    }
    return sz * n;
}

int s3x_http_get(const char *url, const char *const *headers, int timeout_s, size_t max,
                 long *status, struct buf *body, cut_err *err)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hl = NULL;
    struct get_sink g = {body, false};
    char ebuf[CURL_ERROR_SIZE] = "";
    CURLcode cc;
    int rc = -1;

    buf_init(body, max);
    *status = 0;
    if (h == NULL) {
        err_set(err, CUT_EHTTP, "http_get", "curl_easy_init failed");
        goto out;
    }
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)timeout_s);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)(timeout_s < 5 ? timeout_s : 5));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, get_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &g);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    cc = curl_easy_perform(h);
    if (g.over) {
        err_set(err, CUT_ELIMIT, "http_get", "answer larger than %zu bytes", max);
        goto out;
    }
    if (cc != CURLE_OK) {
        err_set(err, CUT_EHTTP, "http_get", "%s", ebuf[0] ? ebuf : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    rc = 0;
out:
    curl_slist_free_all(hl);
    if (h)
        curl_easy_cleanup(h);
    return rc;
}

char *s3_content_disposition(const char *filename)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = filename ? strlen(filename) : 0;
    bool plain = true;
    struct buf b;

    if (n == 0 || n > 1024 || !utf8_valid(filename, n))
        return NULL;
    buf_init(&b, 0);
    if (!buf_puts(&b, "inline; filename=\""))
        abort();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)filename[i];
        bool ok = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        plain = plain && ok;
        if (!buf_append(&b, ok ? (const char *)&c : "_", 1))
            abort();
    }
    if (!buf_puts(&b, "\""))
        abort();
    if (!plain) {
        if (!buf_puts(&b, "; filename*=UTF-8''"))
            abort();
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)filename[i];
            /* RFC 8187 attr-char: ALPHA / DIGIT / "!#$&+-.^_`|~" */
            bool keep = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                        (c >= 'A' && c <= 'Z') || (c && strchr("!#$&+-.^_`|~", c));
            char enc[3] = {'%', hex[c >> 4], hex[c & 15]};
            if (!buf_append(&b, keep ? (const char *)&c : enc, keep ? 1 : 3))
                abort();
        }
    }
    return buf_steal(&b);
}
