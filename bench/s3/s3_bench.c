/*
 * s3_bench: the load generator of bench/s3/run.sh (not a test).
 *   s3_bench presign N              presigns N URLs on one thread, prints URLs/s
 *   s3_bench put DIR PREFIX THREADS uploads every file of DIR to PREFIX with THREADS
 *                                   workers sharing one client; prints docs and seconds
 * The endpoint, bucket and keys come from S3_ENDPOINT, S3_REGION, S3_BUCKET,
 * S3_ACCESS_KEY and S3_SECRET_KEY. Files are handed out from one atomic counter, so the
 * workers stay busy until the list is done, as the sidecar's mirror workers are.
 */
#include "storage/s3.h"

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

int main(int argc, char **argv)
{
    struct cfg_s3 cfg = {0};
    cut_err err = CUT_ERR_INIT;
    creds_provider *cp;
    s3_client *c;
    int rc = 0;

    if (argc < 3) {
        fprintf(stderr, "usage: s3_bench presign N | put DIR PREFIX THREADS\n");
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
        DIR *d = opendir(j.dir);
        struct dirent *de;
        uint64_t t0;

        while (d && (de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            j.names = realloc(j.names, (j.n + 1) * sizeof(char *));
            j.names[j.n++] = strdup(de->d_name);
        }
        if (d)
            closedir(d);
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
    } else {
        fprintf(stderr, "usage: s3_bench presign N | put DIR PREFIX THREADS\n");
        rc = 2;
    }
    s3_client_free(c);
    creds_provider_free(cp);
    return rc;
}
