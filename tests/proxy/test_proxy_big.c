/*
 * test_proxy_big: 1 GiB streamed up through the proxy (Content-Length) and 1 GiB streamed
 * down (chunked), both checked by checksum. The data is generated as it is sent and hashed
 * as it is received on both sides, never held in memory. $CUTOVER_BIG_BYTES overrides the
 * size.
 */
#include "fixture.h"

#include "tests/testlib.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct xfer {
    uint64_t total, off, hash;
    char got_hash[32];
};

static size_t gen_read(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t max = size * n;
    if (max > x->total - x->off)
        max = (size_t)(x->total - x->off);
    fx_gen(x->off, (unsigned char *)buf, max);
    x->hash = fx_hash(x->hash, buf, max);
    x->off += max;
    return max;
}

static size_t hash_write(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    x->hash = fx_hash(x->hash, buf, size * n);
    x->off += size * n;
    return size * n;
}

static size_t find_hash(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t len = size * n;
    if (len > 13 && strncasecmp(buf, "X-Body-Hash: ", 13) == 0)
        snprintf(x->got_hash, sizeof(x->got_hash), "%.16s", buf + 13);
    return len;
}

int main(void)
{
    uint64_t total = 1ull << 30;
    const char *env = getenv("CUTOVER_BIG_BYTES");
    if (env)
        total = strtoull(env, NULL, 10);
    signal(SIGPIPE, SIG_IGN);
    struct fx *f = fx_start();
    if (!f)
        return 1;
    char up[64], u[128];
    snprintf(up, sizeof(up), "http://127.0.0.1:%d", fx_port(f));
    struct px_run px;
    if (!px_run_start(&px, up, NULL, NULL))
        return 1;
    int fails = 0;

    struct xfer upl = {.total = total, .hash = FX_HASH_INIT};
    CURL *c = curl_easy_init();
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/upload", px.port);
    curl_easy_setopt(c, CURLOPT_URL, u);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "POST");
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)total);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, gen_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &upl);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, find_hash);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &upl);
    curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    char want[32];
    snprintf(want, sizeof(want), "%016" PRIx64, upl.hash);
    if (rc != CURLE_OK || status != 200 || strcmp(want, upl.got_hash) != 0) {
        fprintf(stderr, "upload: rc %d status %ld hash sent %s, app got %s\n", rc, status, want,
                upl.got_hash);
        fails++;
    } else {
        printf("upload of %" PRIu64 " bytes: checksum %s matches\n", total, want);
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);

    struct xfer dl = {.total = total, .hash = FX_HASH_INIT};
    c = curl_easy_init();
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/gen/%" PRIu64, px.port, total);
    curl_easy_setopt(c, CURLOPT_URL, u);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, hash_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &dl);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    /* the generator is the same both ways: same bytes, same checksum */
    if (rc != CURLE_OK || status != 200 || dl.off != total || dl.hash != upl.hash) {
        fprintf(stderr, "download: rc %d status %ld bytes %" PRIu64 " hash %016" PRIx64 "\n", rc,
                status, dl.off, dl.hash);
        fails++;
    } else {
        printf("download of %" PRIu64 " bytes: checksum matches\n", total);
    }
    if (px_run_stop(&px) != 0)
        fails++;
    px_run_free(&px);
    fx_stop(f);
    return fails ? 1 : 0;
}
