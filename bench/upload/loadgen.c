/*
 * loadgen: uploads at a fixed arrival rate (an open loop), for bench/upload/run.sh.
 *
 * Request i is due at t0 + i / rate, whether or not the earlier ones have finished, so a
 * slow server does not slow the load down (a closed loop like wrk's would, and would hide
 * the queueing it causes). Each request is a multipart/form-data POST whose part "file"
 * carries --size bytes (the same pseudo-random bytes every time, read from one buffer with
 * no copy); all run on one libcurl multi handle, which keeps connections alive and opens new
 * ones when every open one is busy. A request's latency runs from the moment it was due to
 * the end of the answer, so time spent waiting for a free slot (--max-inflight) counts too.
 *
 * Requests due during the first --warmup seconds are sent but not counted. At the end one
 * line of KEY=VALUE pairs goes to stdout: counts, the throughput achieved (2xx answers
 * completed during the window, per second), latency percentiles in
 * milliseconds, and the window's start as Unix time (to select the database rows it made).
 * Every run is bounded: nothing is sent after the schedule ends, and whatever is still in
 * flight --timeout seconds later is counted as an error.
 *
 * With --raw the body is the document itself (Content-Type application/octet-stream, its name
 * in the query's filename) instead of a multipart form.
 *
 * Usage: loadgen --url URL --rate R --duration S --size BYTES [--warmup S] [--raw]
 *                [--header "Name: value"]... [--max-inflight N] [--timeout S]
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_HEADERS 16
#define MAX_SIZE (1ull << 30)

struct req {
    CURL *h;
    curl_mime *mime;
    size_t off;  /* read position in the body */
    double due;  /* seconds since t0 */
    int counted; /* due inside the measured window */
    char errbuf[CURL_ERROR_SIZE];
};

static const unsigned char *body;
static size_t body_len;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t read_part(char *buf, size_t size, size_t n, void *arg)
{
    struct req *r = arg;
    size_t want = size * n, left = body_len - r->off;
    if (want > left)
        want = left;
    memcpy(buf, body + r->off, want);
    r->off += want;
    return want;
}

static int seek_part(void *arg, curl_off_t offset, int origin)
{
    struct req *r = arg;
    if (origin != SEEK_SET || offset < 0 || (size_t)offset > body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    r->off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile of sorted v[0..n) */
static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --url URL --rate R --duration S --size BYTES [--warmup S] [--raw]\n"
            "               [--header \"Name: value\"]... [--max-inflight N] "
            "[--timeout S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    double rate = 0, duration = 0, warmup = 0, timeout = 30;
    unsigned long long size = 0;
    long max_inflight = 256;
    struct curl_slist *headers = NULL, *raw_headers = NULL;
    int nheaders = 0, raw = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--raw") == 0) {
            raw = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--rate") == 0)
            rate = strtod(v, NULL);
        else if (strcmp(a, "--duration") == 0)
            duration = strtod(v, NULL);
        else if (strcmp(a, "--warmup") == 0)
            warmup = strtod(v, NULL);
        else if (strcmp(a, "--timeout") == 0)
            timeout = strtod(v, NULL);
        else if (strcmp(a, "--size") == 0)
            size = strtoull(v, NULL, 10);
        else if (strcmp(a, "--max-inflight") == 0)
            max_inflight = strtol(v, NULL, 10);
        else if (strcmp(a, "--header") == 0 && nheaders++ < MAX_HEADERS) {
            headers = curl_slist_append(headers, v);
            raw_headers = curl_slist_append(raw_headers, v);
        } else
            usage();
    }
    if (!url || rate <= 0 || rate > 100000 || duration <= 0 || duration > 3600 || warmup < 0 ||
        warmup > 3600 || size == 0 || size > MAX_SIZE || max_inflight < 1 || max_inflight > 10000 ||
        timeout <= 0 || timeout > 3600)
        usage();
    headers = curl_slist_append(headers, "Expect:");
    raw_headers = curl_slist_append(raw_headers, "Expect:");
    raw_headers = curl_slist_append(raw_headers, "Content-Type: application/octet-stream");

    body_len = (size_t)size;
    unsigned char *b = malloc(body_len);
    if (!b) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull; /* xorshift: bytes that do not compress */
    for (size_t i = 0; i < body_len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (unsigned char)(x >> 24);
    }
    body = b;

    size_t total = (size_t)((warmup + duration) * rate + 0.5);
    size_t nwarm = (size_t)(warmup * rate + 0.5);
    double *lat = calloc(total ? total : 1, sizeof(double));
    struct req *reqs = calloc(total ? total : 1, sizeof(struct req));
    if (!lat || !reqs) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, max_inflight);

    size_t next = 0, nlat = 0, ok = 0, errors = 0, late_start = 0, in_window = 0;
    long running = 0;
    double t0 = now_s() + 0.05, window_start = t0 + warmup;
    double wall_window = wall_s() + 0.05 + warmup;
    double hard_end = t0 + warmup + duration + timeout;
    int shown = 0;

    for (;;) {
        double t = now_s() - t0;
        while (next < total && running < max_inflight && (double)next / rate <= t) {
            struct req *r = &reqs[next];
            r->due = (double)next / rate;
            r->counted = next >= nwarm;
            if (t - r->due > 0.01)
                late_start++;
            r->h = curl_easy_init();
            char fname[64];
            snprintf(fname, sizeof(fname), "bench-%zu.bin", next);
            if (raw) {
                char *u = malloc(strlen(url) + sizeof(fname) + 16);
                if (!u) {
                    fprintf(stderr, "loadgen: out of memory\n");
                    return 1;
                }
                sprintf(u, "%s%sfilename=%s", url, strchr(url, '?') ? "&" : "?", fname);
                curl_easy_setopt(r->h, CURLOPT_URL, u);
                free(u); /* libcurl keeps its own copy */
                curl_easy_setopt(r->h, CURLOPT_POST, 1L);
                curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
                curl_easy_setopt(r->h, CURLOPT_READFUNCTION, read_part);
                curl_easy_setopt(r->h, CURLOPT_READDATA, r);
                curl_easy_setopt(r->h, CURLOPT_SEEKFUNCTION, seek_part);
                curl_easy_setopt(r->h, CURLOPT_SEEKDATA, r);
                curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, raw_headers);
            } else {
                r->mime = curl_mime_init(r->h);
                curl_mimepart *part = curl_mime_addpart(r->mime);
                curl_mime_name(part, "file");
                curl_mime_filename(part, fname);
                curl_mime_type(part, "application/octet-stream");
                curl_mime_data_cb(part, (curl_off_t)body_len, read_part, seek_part, NULL, r);
                curl_easy_setopt(r->h, CURLOPT_URL, url);
                curl_easy_setopt(r->h, CURLOPT_MIMEPOST, r->mime);
                curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, headers);
            }
            curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, discard);
            curl_easy_setopt(r->h, CURLOPT_PRIVATE, r);
            curl_easy_setopt(r->h, CURLOPT_ERRORBUFFER, r->errbuf);
            curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
            curl_easy_setopt(r->h, CURLOPT_NOSIGNAL, 1L);
            curl_multi_add_handle(m, r->h);
            running++;
            next++;
        }

        int still;
        curl_multi_perform(m, &still);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct req *r;
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            double done = now_s() - t0;
            int good = msg->data.result == CURLE_OK && status >= 200 && status < 300;
            if (good && t0 + done >= window_start && t0 + done < window_start + duration)
                in_window++;
            if (r->counted) {
                if (good) {
                    ok++;
                    lat[nlat++] = done - r->due;
                } else {
                    errors++;
                }
            }
            if (!good && shown++ < 5)
                fprintf(stderr, "loadgen: request %zu: %s (HTTP %ld)\n", (size_t)(r - reqs),
                        msg->data.result != CURLE_OK ? r->errbuf : "answer", status);
            curl_multi_remove_handle(m, r->h);
            curl_easy_cleanup(r->h);
            curl_mime_free(r->mime);
            r->h = NULL;
            r->mime = NULL;
            running--;
        }
        if (next >= total && running == 0)
            break;
        if (now_s() > hard_end) {
            for (size_t i = 0; i < next; i++) {
                if (!reqs[i].h)
                    continue;
                if (reqs[i].counted)
                    errors++;
                curl_multi_remove_handle(m, reqs[i].h);
                curl_easy_cleanup(reqs[i].h);
                curl_mime_free(reqs[i].mime);
                reqs[i].h = NULL;
            }
            fprintf(stderr, "loadgen: gave up on the requests still in flight\n");
            break;
        }
        int wait_ms = 100;
        if (next < total && running < max_inflight) {
            double d = ((double)next / rate - (now_s() - t0)) * 1000;
            wait_ms = d <= 0 ? 0 : d < 100 ? (int)d + 1 : 100;
        }
        if (wait_ms > 0)
            curl_multi_poll(m, NULL, 0, wait_ms, NULL);
    }

    qsort(lat, nlat, sizeof(double), cmp_double);
    size_t counted = total - nwarm;
    printf("sent=%zu counted=%zu ok=%zu errors=%zu late_starts=%zu offered=%.1f achieved=%.1f "
           "p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f window_start=%.3f\n",
           next, counted, ok, errors, late_start, rate, (double)in_window / duration,
           pct(lat, nlat, 50) * 1000, pct(lat, nlat, 90) * 1000, pct(lat, nlat, 99) * 1000,
           nlat ? lat[nlat - 1] * 1000 : 0, wall_window);
    curl_multi_cleanup(m);
    curl_slist_free_all(headers);
    curl_slist_free_all(raw_headers);
    curl_global_cleanup();
    free(lat);
    free(reqs);
    free(b);
    return errors == 0 && ok == counted ? 0 : 1;
}
