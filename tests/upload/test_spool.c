/*
 * spool: bytes handed over in pieces come out in the file, in order, with the right MD5 and
 * SHA-256; a producer that pauses when its bytes waiting pass the high mark and resumes on
 * the drain callback never has more than the mark plus one piece waiting; a write that fails
 * (the file size limit standing in for a full disk) marks the file failed, wakes a waiting
 * producer, removes the file and reports why; a discarded file is removed; an empty
 * document is a file of 0 bytes.
 */
#include "core/core.h"
#include "storage/spool.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

struct finished {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, drained;
    struct spool_result r;
    char path[512];
};

static void on_done(void *arg, const struct spool_result *r)
{
    struct finished *f = arg;
    pthread_mutex_lock(&f->mu);
    f->r = *r;
    if (r->ok)
        snprintf(f->path, sizeof(f->path), "%s", r->path);
    f->r.path = NULL;
    f->done = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void on_drain(void *arg)
{
    struct finished *f = arg;
    pthread_mutex_lock(&f->mu);
    f->drained = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void wait_flag(struct finished *f, bool *flag)
{
    pthread_mutex_lock(&f->mu);
    while (!*flag)
        pthread_cond_wait(&f->cv, &f->mu);
    *flag = false;
    pthread_mutex_unlock(&f->mu);
}

static void init_finished(struct finished *f)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
}

/* Writes total bytes in pieces of up to piece bytes, pausing at high until drained to low.
 * Returns the most bytes that were waiting at any time the producer looked. */
static uint64_t produce(spool_file *sf, struct finished *fin, EVP_MD_CTX *md5, EVP_MD_CTX *sha,
                        size_t total, size_t piece, uint64_t high, uint64_t low)
{
    unsigned char *buf = xmalloc(piece);
    uint64_t most = 0;
    size_t off = 0;
    unsigned seed = 7;
    while (off < total) {
        size_t n = 1 + (size_t)rand_r(&seed) % piece;
        if (n > total - off)
            n = total - off;
        for (size_t i = 0; i < n; i++)
            buf[i] = (unsigned char)((off + i) * 2654435761u >> 13);
        if (md5) {
            EVP_DigestUpdate(md5, buf, n);
            EVP_DigestUpdate(sha, buf, n);
        }
        uint64_t pending = spool_write(sf, buf, n);
        if (pending > most)
            most = pending;
        off += n;
        if (pending > high && spool_wait_drain(sf, low, on_drain, fin))
            wait_flag(fin, &fin->drained);
    }
    free(buf);
    return most;
}

static void test_bytes_and_hashes(void **state)
{
    char *dir = test_tmpdir("spool");
    cut_err err = CUT_ERR_INIT;
    spool *s = spool_new(dir, &err);
    struct finished fin;
    struct spool_stats st;
    unsigned char md5[16], sha[32];
    unsigned int len;
    EVP_MD_CTX *m = EVP_MD_CTX_new(), *h = EVP_MD_CTX_new();
    const uint64_t high = 1 << 20, piece = 256 * 1024;
    (void)state;
    assert_non_null(s);
    init_finished(&fin);
    EVP_DigestInit_ex(m, EVP_md5(), NULL);
    EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    spool_file *sf = spool_open(s);
    uint64_t most = produce(sf, &fin, m, h, 48 << 20, piece, high, 256 * 1024);
    spool_finish(sf, on_done, &fin);
    wait_flag(&fin, &fin.done);
    EVP_DigestFinal_ex(m, md5, &len);
    EVP_DigestFinal_ex(h, sha, &len);
    assert_true(fin.r.ok);
    assert_int_equal(fin.r.size, 48 << 20);
    assert_memory_equal(fin.r.md5, md5, 16);
    assert_memory_equal(fin.r.sha256, sha, 32);
    /* the bytes on disk are the bytes given */
    size_t flen;
    char *data = test_read_file(fin.path, &flen);
    assert_int_equal(flen, 48 << 20);
    for (size_t i = 0; i < flen; i += 4093)
        assert_int_equal((unsigned char)data[i], (unsigned char)(i * 2654435761u >> 13));
    free(data);
    /* memory stayed bounded: never more than the mark plus one piece waiting */
    spool_stats_get(s, &st);
    assert_true(most <= high + piece);
    assert_true(st.pending_peak <= high + piece);
    assert_int_equal(st.pending_bytes, 0);
    assert_int_equal(st.bytes, 48 << 20);
    assert_int_equal(st.failures, 0);
    unlink(fin.path);
    spool_free(s);
    EVP_MD_CTX_free(m);
    EVP_MD_CTX_free(h);
    test_rmtree(dir);
    free(dir);
}

static void test_empty_and_discard(void **state)
{
    char *dir = test_tmpdir("spool");
    cut_err err = CUT_ERR_INIT;
    spool *s = spool_new(dir, &err);
    struct finished fin;
    char hex[65];
    struct stat st;
    (void)state;
    init_finished(&fin);
    spool_file *sf = spool_open(s);
    spool_finish(sf, on_done, &fin);
    wait_flag(&fin, &fin.done);
    assert_true(fin.r.ok);
    assert_int_equal(fin.r.size, 0);
    spool_hex(fin.r.md5, 16, hex);
    assert_string_equal(hex, "d41d8cd98f00b204e9800998ecf8427e");
    assert_int_equal(stat(fin.path, &st), 0);
    assert_int_equal(st.st_size, 0);
    unlink(fin.path);
    /* discard: the file is gone once the writer has run */
    sf = spool_open(s);
    assert_true(spool_write(sf, "abc", 3) <= 3);
    spool_discard(sf);
    spool_free(s); /* runs what is queued */
    char *cmd = xasprintf("test -z \"$(ls -A '%s')\"", dir);
    assert_int_equal(test_run(cmd, NULL), 0);
    free(cmd);
    test_rmtree(dir);
    free(dir);
    assert_null(spool_new("/nonexistent-spool-dir", &err));
    assert_int_equal(err.code, CUT_EIO);
    assert_non_null(strstr(err.msg, "spool_dir"));
}

static void test_write_failure(void **state)
{
    char *dir = test_tmpdir("spool");
    cut_err err = CUT_ERR_INIT;
    spool *s = spool_new(dir, &err);
    struct finished fin;
    struct rlimit old, lim;
    struct spool_stats st;
    (void)state;
    init_finished(&fin);
    /* files may not grow past 1 MiB: a write past it fails (EFBIG) as on a full disk */
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1 << 20;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    spool_file *sf = spool_open(s);
    produce(sf, &fin, NULL, NULL, 4 << 20, 64 * 1024, 512 * 1024, 0);
    spool_finish(sf, on_done, &fin);
    wait_flag(&fin, &fin.done);
    setrlimit(RLIMIT_FSIZE, &old);
    assert_false(fin.r.ok);
    assert_int_equal(fin.r.err.code, CUT_EIO);
    assert_non_null(strstr(fin.r.err.msg, "cannot write"));
    spool_stats_get(s, &st);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.pending_bytes, 0);
    spool_free(s);
    /* the failed file was removed */
    char *cmd = xasprintf("test -z \"$(ls -A '%s')\"", dir);
    assert_int_equal(test_run(cmd, NULL), 0);
    free(cmd);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_and_hashes),
        cmocka_unit_test(test_empty_and_discard),
        cmocka_unit_test(test_write_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
