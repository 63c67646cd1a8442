/*
 * s3_bench: the load generator of bench/s3/run.sh (not a test).
 *   s3_bench presign N              presigns N URLs on one thread, prints URLs/s
 *   s3_bench put DIR PREFIX THREADS uploads every file of DIR to PREFIX with THREADS
 *                                   workers calling the blocking s3_put_file() on one
 *                                   client; prints docs, seconds and failures
 *   s3_bench engine DIR PREFIX N    the same through one transfer engine (one thread, N
 *                                   PUTs in flight), submitted at once; same output
 * The endpoint, bucket and keys come from S3_ENDPOINT, S3_REGION, S3_BUCKET,
 * S3_ACCESS_KEY and S3_SECRET_KEY. Files are handed out from one atomic counter, so the
 * workers stay busy until the list is done, as the sidecar's mirror workers are.
 */
#include "storage/s3.h"
#include "storage/xfer.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct job {
    s3_client *c;
    const char *dir;
    const char *prefix;
    char **names;
    size_t n;
    atomic_size_t next;
    atomic_int failed;
};

static void *worker(void *arg)
{
    struct job *j = arg;
    size_t i;

    while ((i = atomic_fetch_add(&j->next, 1)) < j->n) {
        char path[4096], key[1024];
        struct s3_result r;
        cut_err err = CUT_ERR_INIT;
        snprintf(path, sizeof(path), "%s/%s", j->dir, j->names[i]);
        snprintf(key, sizeof(key), "%s%s", j->prefix, j->names[i]);
        if (s3_put_file(j->c, key, path, NULL, &r, &err) != 0) {
            fprintf(stderr, "s3_bench: %s\n", err.msg);
            atomic_fetch_add(&j->failed, 1);
        }
    }
    return NULL;
}

struct engine_run {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t done, want;
    int failed;
};

static void engine_done(void *arg, const struct xfer_outcome *o, const cut_err *err)
{
    struct engine_run *r = arg;

    (void)o;
    pthread_mutex_lock(&r->mu);
    if (err_isset(err)) {
        fprintf(stderr, "s3_bench: %s\n", err->msg);
        r->failed++;
    }
    if (++r->done == r->want)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static size_t list_dir(const char *dir, char ***names)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t n = 0;

    *names = NULL;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        *names = realloc(*names, (n + 1) * sizeof(char *));
        (*names)[n++] = strdup(de->d_name);
    }
    if (d)
        closedir(d);
    return n;
}

static int run_engine(s3_client *c, const char *dir, const char *prefix, int inflight)
{
    struct xfer_engine_opts eo = {.max_active = inflight};
    struct engine_run r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    cut_err err = CUT_ERR_INIT;
    xfer_engine *e = xfer_engine_new(c, &eo, &err);
    char **names;
    size_t n = list_dir(dir, &names);
    uint64_t t0 = now_us();

    r.want = n;
    if (e == NULL) {
        fprintf(stderr, "s3_bench: %s\n", err.msg);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        char path[4096], key[1024];
        struct xfer_src src = {.kind = XFER_SRC_FILE, .path = path};
        struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = key};
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        snprintf(key, sizeof(key), "%s%s", prefix, names[i]);
        if (xfer_copy(e, &src, &dst, engine_done, &r, &err) != 0) {
            fprintf(stderr, "s3_bench: %s\n", err.msg);
            return 1;
        }
    }
    pthread_mutex_lock(&r.mu);
    while (r.done < n)
        pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    printf("%zu %.3f %d\n", n, (double)(now_us() - t0) / 1e6, r.failed);
    xfer_engine_free(e);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return r.failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct cfg_s3 cfg = {0};
    cut_err err = CUT_ERR_INIT;
    creds_provider *cp;
    s3_client *c;
    int rc = 0;

    if (argc < 3) {
        fprintf(stderr, "usage: s3_bench presign N | put DIR PREFIX THREADS | engine DIR "
                        "PREFIX INFLIGHT\n");
        return 2;
    }
    cfg.endpoint = getenv("S3_ENDPOINT") ? getenv("S3_ENDPOINT") : "https://s3.amazonaws.com";
    cfg.region = getenv("S3_REGION") ? getenv("S3_REGION") : "us-east-1";
    cfg.bucket = getenv("S3_BUCKET") ? getenv("S3_BUCKET") : "examplebucket";
    cfg.path_style = true;
    cfg.access_key_id = getenv("S3_ACCESS_KEY") ? getenv("S3_ACCESS_KEY") : "AKIDEXAMPLE";
    cfg.secret_access_key = getenv("S3_SECRET_KEY") ? getenv("S3_SECRET_KEY") : "secret";
    cp = creds_provider_new(&cfg, &err);
    c = cp ? s3_client_new(&cfg, cp, &err) : NULL;
    if (c == NULL) {
        fprintf(stderr, "s3_bench: %s\n", err.msg);
        return 1;
    }
    if (strcmp(argv[1], "presign") == 0) {
        long n = atol(argv[2]);
        char url[2048];
        uint64_t t0 = now_us();
        for (long i = 0; i < n; i++) {
            if (s3_presign(c, "GET", "documents/org-42/patient-7/scan 2024.pdf", 3600, 0, url,
                           sizeof(url), &err) < 0) {
                fprintf(stderr, "s3_bench: %s\n", err.msg);
                return 1;
            }
        }
        printf("%.0f\n", (double)n * 1e6 / (double)(now_us() - t0));
    } else if (strcmp(argv[1], "put") == 0 && argc == 5) {
        struct job j = {.c = c, .dir = argv[2], .prefix = argv[3]};
        int threads = atoi(argv[4]);
        pthread_t *th = calloc((size_t)threads, sizeof(*th));
        uint64_t t0;

        j.n = list_dir(j.dir, &j.names);
        t0 = now_us();
        for (int i = 0; i < threads; i++)
            pthread_create(&th[i], NULL, worker, &j);
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        printf("%zu %.3f %d\n", j.n, (double)(now_us() - t0) / 1e6, atomic_load(&j.failed));
        rc = atomic_load(&j.failed) ? 1 : 0;
        for (size_t i = 0; i < j.n; i++)
            free(j.names[i]);
        free(j.names);
        free(th);
    } else if (strcmp(argv[1], "engine") == 0 && argc == 5) {
        rc = run_engine(c, argv[2], argv[3], atoi(argv[4]));
    } else {
        fprintf(stderr, "usage: s3_bench presign N | put DIR PREFIX THREADS | engine DIR "
                        "PREFIX INFLIGHT\n");
        rc = 2;
    }
    s3_client_free(c);
    creds_provider_free(cp);
    return rc;
}
