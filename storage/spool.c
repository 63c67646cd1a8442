/*
 * spool: one writer thread appending upload bytes to spool files and hashing them (see
 * spool.h).
 *
 * Loops and the writer share one FIFO of operations (bytes for a file, finish, discard) under
 * one mutex; operations of a file keep their order, so a finish runs after every byte given
 * before it. The writer copies nothing: it takes ownership of the piece the loop copied,
 * writes it with write(2), feeds it to the file's MD5 and SHA-256 contexts and frees it.
 * Each file counts the bytes given but not yet written; a loop that sees this pass its mark
 * registers a drain callback, which the writer calls (outside the lock) once the count falls
 * to the low mark. The spool files are not synced: the document's record carries their hashes,
 * and a copy whose bytes do not match them is never taken (the copy then reads the legacy
 * store's original instead).
 */
#include "storage/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum op_kind { OP_DATA, OP_FINISH, OP_DISCARD };

struct spool_op {
    struct spool_op *next;
    enum op_kind kind;
    spool_file *f;
    size_t n;
    unsigned char data[]; /* OP_DATA */
};

struct spool_file {
    spool *s;
    char *path;
    int fd;
    EVP_MD_CTX *md5, *sha256;
    uint64_t size;
    bool failed; /* writer's; mirrored in failed_flag for loops */
    cut_err err;

    /* under s->mu */
    bool failed_flag;
    uint64_t pending;
    uint64_t low_water;
    void (*drain_fn)(void *arg);
    void *drain_arg;

    void (*done)(void *arg, const struct spool_result *r);
    void *done_arg;
};

struct spool {
    char *dir;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct spool_op *head, *tail;
    bool stop;
    struct spool_stats st;
};

void spool_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = 0;
}

static void push(spool *s, struct spool_op *op)
{
    op->next = NULL;
    if (s->tail)
        s->tail->next = op;
    else
        s->head = op;
    s->tail = op;
    pthread_cond_signal(&s->cv);
}

static void file_fail(spool_file *f, const char *what)
{
    if (f->failed)
        return;
    err_set(&f->err, CUT_EIO, "spool", "%s %s: %s", what, f->path, strerror(errno));
    f->failed = true;
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    unlink(f->path);
    pthread_mutex_lock(&f->s->mu);
    f->failed_flag = true;
    f->s->st.failures++;
    pthread_mutex_unlock(&f->s->mu);
    log_msgf(LOG_WARN, "spool", "%s", f->err.msg);
}

static bool file_create(spool_file *f)
{
    f->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (f->fd < 0) {
        file_fail(f, "cannot create");
        return false;
    }
    return true;
}

static void do_data(spool_file *f, const unsigned char *p, size_t n)
{
    size_t off = 0;
    if (f->failed || (f->fd < 0 && !file_create(f)))
        return;
    while (off < n) {
        ssize_t w = write(f->fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            file_fail(f, "cannot write");
            return;
        }
        off += (size_t)w;
    }
    if (EVP_DigestUpdate(f->md5, p, n) != 1 || EVP_DigestUpdate(f->sha256, p, n) != 1)
        abort();
    f->size += n;
}

static void file_free(spool_file *f)
{
    EVP_MD_CTX_free(f->md5);
    EVP_MD_CTX_free(f->sha256);
    free(f->path);
    free(f);
}

static void do_finish(spool_file *f)
{
    struct spool_result r = {0};
    unsigned int len = 0;

    if (!f->failed && f->fd < 0)
        file_create(f); /* an empty document is a document */
    if (!f->failed && close(f->fd) != 0) {
        f->fd = -1;
        file_fail(f, "cannot close");
    }
    f->fd = -1;
    r.ok = !f->failed;
    if (r.ok) {
        r.path = f->path;
        r.size = f->size;
        if (EVP_DigestFinal_ex(f->md5, r.md5, &len) != 1 ||
            EVP_DigestFinal_ex(f->sha256, r.sha256, &len) != 1)
            abort();
    } else {
        r.err = f->err;
    }
    if (f->done)
        f->done(f->done_arg, &r);
    file_free(f);
}

static void do_discard(spool_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    if (!f->failed)
        unlink(f->path);
    file_free(f);
}

static void *writer_main(void *arg)
{
    spool *s = arg;
    thread_setup("spool", false);
    for (;;) {
        struct spool_op *op;
        void (*fn)(void *) = NULL;
        void *fn_arg = NULL;

        pthread_mutex_lock(&s->mu);
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        op = s->head;
        if (!op) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        s->head = op->next;
        if (!s->head)
            s->tail = NULL;
        pthread_mutex_unlock(&s->mu);

        switch (op->kind) {
        case OP_DATA:
            do_data(op->f, op->data, op->n);
            pthread_mutex_lock(&s->mu);
            op->f->pending -= op->n;
            s->st.pending_bytes -= op->n;
            if (!op->f->failed)
                s->st.bytes += op->n;
            if (op->f->drain_fn && (op->f->pending <= op->f->low_water || op->f->failed)) {
                fn = op->f->drain_fn;
                fn_arg = op->f->drain_arg;
                op->f->drain_fn = NULL;
            }
            pthread_mutex_unlock(&s->mu);
            if (fn)
                fn(fn_arg);
            break;
        case OP_FINISH:
            do_finish(op->f);
            break;
        case OP_DISCARD:
            do_discard(op->f);
            break;
        }
        free(op);
    }
    return NULL;
}

spool *spool_new(const char *dir, cut_err *err)
{
    struct stat st;
    spool *s;

    if (!dir || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK) != 0) {
        err_set(err, CUT_EIO, "spool", "spool_dir %s is not a writable directory: %s",
                dir ? dir : "(unset)", dir ? strerror(errno ? errno : ENOTDIR) : "no path");
        return NULL;
    }
    s = xcalloc(1, sizeof(*s));
    s->dir = xstrdup(dir);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
        err_set(err, CUT_EIO, "spool", "cannot start the spool writer thread");
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s->dir);
        free(s);
        return NULL;
    }
    return s;
}

void spool_free(spool *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->dir);
    free(s);
}

void spool_stats_get(spool *s, struct spool_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

spool_file *spool_open(spool *s)
{
    unsigned char rnd[12];
    char hex[25];
    spool_file *f = xcalloc(1, sizeof(*f));

    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        abort();
    spool_hex(rnd, sizeof(rnd), hex);
    f->s = s;
    f->path = xasprintf("%s/%s.part", s->dir, hex);
    f->fd = -1;
    f->md5 = EVP_MD_CTX_new();
    f->sha256 = EVP_MD_CTX_new();
    if (!f->md5 || !f->sha256 || EVP_DigestInit_ex(f->md5, EVP_md5(), NULL) != 1 ||
        EVP_DigestInit_ex(f->sha256, EVP_sha256(), NULL) != 1)
        abort();
    pthread_mutex_lock(&s->mu);
    s->st.files++;
    pthread_mutex_unlock(&s->mu);
    return f;
}

uint64_t spool_write(spool_file *f, const void *data, size_t n)
{
    spool *s = f->s;
    struct spool_op *op;
    uint64_t pending;

    pthread_mutex_lock(&s->mu);
    if (f->failed_flag || n == 0) {
        pending = f->pending;
        pthread_mutex_unlock(&s->mu);
        return pending;
    }
    pthread_mutex_unlock(&s->mu);
    op = xmalloc(sizeof(*op) + n);
    op->kind = OP_DATA;
    op->f = f;
    op->n = n;
    memcpy(op->data, data, n);
    pthread_mutex_lock(&s->mu);
    f->pending += n;
    s->st.pending_bytes += n;
    if (s->st.pending_bytes > s->st.pending_peak)
        s->st.pending_peak = s->st.pending_bytes;
    pending = f->pending;
    push(s, op);
    pthread_mutex_unlock(&s->mu);
    return pending;
}

bool spool_failed(spool_file *f, cut_err *err)
{
    bool failed;
    pthread_mutex_lock(&f->s->mu);
    failed = f->failed_flag;
    pthread_mutex_unlock(&f->s->mu);
    /* f->err is written before failed_flag is set under the lock */
    if (failed && err)
        err_set(err, f->err.code, f->err.where, "%s", f->err.msg);
    return failed;
}

bool spool_wait_drain(spool_file *f, uint64_t low_water, void (*fn)(void *arg), void *arg)
{
    bool registered = false;
    pthread_mutex_lock(&f->s->mu);
    if (f->pending > low_water && !f->failed_flag) {
        f->low_water = low_water;
        f->drain_fn = fn;
        f->drain_arg = arg;
        registered = true;
    }
    pthread_mutex_unlock(&f->s->mu);
    return registered;
}

static void queue_end(spool_file *f, enum op_kind kind)
{
    struct spool_op *op = xcalloc(1, sizeof(*op));
    void (*fn)(void *);
    void *arg;
    op->kind = kind;
    op->f = f;
    pthread_mutex_lock(&f->s->mu);
    fn = f->drain_fn; /* still waiting: it is called here, once */
    arg = f->drain_arg;
    f->drain_fn = NULL;
    push(f->s, op);
    pthread_mutex_unlock(&f->s->mu);
    if (fn)
        fn(arg);
}

void spool_finish(spool_file *f, void (*done)(void *arg, const struct spool_result *r), void *arg)
{
    f->done = done;
    f->done_arg = arg;
    queue_end(f, OP_FINISH);
}

void spool_discard(spool_file *f)
{
    queue_end(f, OP_DISCARD);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

long spool_sweep(const char *dir, char *const *keep, size_t nkeep)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **sorted;
    long removed = 0;

    if (!d)
        return -1;
    sorted = xcalloc(nkeep ? nkeep : 1, sizeof(char *));
    memcpy(sorted, keep, nkeep * sizeof(char *));
    qsort(sorted, nkeep, sizeof(char *), cmp_str);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".part") != 0)
            continue;
        char *path = xasprintf("%s/%s", dir, e->d_name);
        if (!bsearch(&path, sorted, nkeep, sizeof(char *), cmp_str) && unlink(path) == 0)
            removed++;
        free(path);
    }
    closedir(d);
    free(sorted);
    return removed;
}
