/*
 * journal: records come back as appended, in order; a file cut at every possible length
 * (a crash mid-append) gives exactly the records that were whole, and reports the torn
 * tail; a damaged record in the middle is skipped and the ones after it still read; a
 * rotation moves what was appended aside while later appends go to a fresh file; appends
 * from several threads never interleave; a full disk fails the append with the reason;
 * empty and oversized records are refused.
 */
#include "core/core.h"
#include "storage/journal.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct seen {
    char *rec[4096];
    size_t len[4096];
    size_t n;
};

static bool collect(void *arg, const void *p, size_t n)
{
    struct seen *s = arg;
    assert_true(s->n < 4096);
    s->rec[s->n] = xmalloc(n);
    memcpy(s->rec[s->n], p, n);
    s->len[s->n++] = n;
    return true;
}

static void seen_free(struct seen *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->rec[i]);
    s->n = 0;
}

static char *payload(int i, size_t *n)
{
    /* sizes 1, 40, 1000... and bytes that include the magic and NULs */
    static const size_t sizes[] = {1, 40, 1000, 17, 4096};
    size_t len = sizes[i % 5];
    char *p = xmalloc(len);
    for (size_t k = 0; k < len; k++)
        p[k] = (char)((i * 31 + (int)k) & 0xff);
    if (len >= 8)
        memcpy(p + 2, "CUTJ", 4);
    *n = len;
    return p;
}

static void test_append_and_read(void **state)
{
    char *dir = test_tmpdir("journal");
    char *path = xasprintf("%s/journal.log", dir);
    cut_err err = CUT_ERR_INIT;
    struct seen s = {0};
    struct journal_scan scan;
    journal *j = journal_open(path, &err);
    (void)state;
    assert_non_null(j);
    for (int i = 0; i < 50; i++) {
        size_t n;
        char *p = payload(i, &n);
        assert_true(journal_append(j, p, n, &err));
        free(p);
    }
    journal_close(j);
    assert_true(journal_read_file(path, 1 << 30, collect, &s, &scan, &err));
    assert_int_equal(s.n, 50);
    assert_int_equal(scan.records, 50);
    assert_int_equal(scan.skipped_bytes, 0);
    for (int i = 0; i < 50; i++) {
        size_t n;
        char *p = payload(i, &n);
        assert_int_equal(s.len[i], n);
        assert_memory_equal(s.rec[i], p, n);
        free(p);
    }
    seen_free(&s);
    /* reopening appends after what is there */
    j = journal_open(path, &err);
    assert_true(journal_append(j, "tail", 4, &err));
    journal_close(j);
    assert_true(journal_read_file(path, 1 << 30, collect, &s, NULL, &err));
    assert_int_equal(s.n, 51);
    assert_memory_equal(s.rec[50], "tail", 4);
    seen_free(&s);
    /* an absent file has no records; one over the ceiling is refused */
    unlink(path);
    assert_true(journal_read_file(path, 1 << 30, collect, &s, &scan, &err));
    assert_int_equal(scan.records, 0);
    test_rmtree(dir);
    free(path);
    free(dir);
}

/* Every length a crash could leave: the records wholly inside are read, nothing else. */
static void test_torn_tail_every_cut(void **state)
{
    unsigned char file[3 * (JOURNAL_HEADER + 1000)];
    size_t ends[3], off = 0;
    (void)state;
    for (int i = 0; i < 3; i++) {
        size_t n;
        char *p = payload(i + 1, &n); /* 40, 1000, 17 bytes */
        off += journal_encode(p, n, file + off);
        ends[i] = off;
        free(p);
    }
    for (size_t cut = 0; cut <= off; cut++) {
        struct seen s = {0};
        struct journal_scan scan;
        size_t whole = 0;
        while (whole < 3 && ends[whole] <= cut)
            whole++;
        journal_parse(file, cut, collect, &s, &scan);
        if (s.n != whole)
            fail_msg("cut at %zu: %zu records, expected %zu", cut, s.n, whole);
        for (size_t i = 0; i < whole; i++) {
            size_t n;
            char *p = payload((int)i + 1, &n);
            assert_int_equal(s.len[i], n);
            assert_memory_equal(s.rec[i], p, n);
            free(p);
        }
        size_t tail = cut - (whole ? ends[whole - 1] : 0);
        assert_int_equal(scan.torn_tail, tail);
        assert_int_equal(scan.skipped_bytes, tail);
        seen_free(&s);
    }
}

/* A flipped bit anywhere in the middle record: it is skipped, the others are read intact. */
static void test_damage_in_the_middle(void **state)
{
    unsigned char file[3 * (JOURNAL_HEADER + 1000)];
    size_t starts[4], off = 0;
    (void)state;
    for (int i = 0; i < 3; i++) {
        size_t n;
        char *p = payload(i + 1, &n);
        starts[i] = off;
        off += journal_encode(p, n, file + off);
        free(p);
    }
    starts[3] = off;
    for (size_t pos = starts[1]; pos < starts[2]; pos += 7) {
        struct seen s = {0};
        struct journal_scan scan;
        file[pos] ^= 0x10;
        journal_parse(file, off, collect, &s, &scan);
        assert_int_equal(s.n, 2);
        assert_int_equal(s.len[0], 40);
        assert_int_equal(s.len[1], 17);
        assert_true(scan.skipped_bytes >= 1);
        assert_int_equal(scan.torn_tail, 0);
        file[pos] ^= 0x10;
        seen_free(&s);
    }
}

static void test_rotate(void **state)
{
    char *dir = test_tmpdir("journal");
    char *path = xasprintf("%s/journal.log", dir);
    char *aside = xasprintf("%s/journal.replay", dir);
    cut_err err = CUT_ERR_INIT;
    struct seen s = {0};
    journal *j = journal_open(path, &err);
    (void)state;
    assert_true(journal_append(j, "one", 3, &err));
    assert_true(journal_append(j, "two", 3, &err));
    assert_true(journal_rotate(j, aside, &err));
    assert_true(journal_append(j, "three", 5, &err));
    journal_close(j);
    assert_true(journal_read_file(aside, 1 << 20, collect, &s, NULL, &err));
    assert_int_equal(s.n, 2);
    assert_memory_equal(s.rec[1], "two", 3);
    seen_free(&s);
    assert_true(journal_read_file(path, 1 << 20, collect, &s, NULL, &err));
    assert_int_equal(s.n, 1);
    assert_memory_equal(s.rec[0], "three", 5);
    seen_free(&s);
    test_rmtree(dir);
    free(aside);
    free(path);
    free(dir);
}

struct writer {
    journal *j;
    int id;
};

static void *write_many(void *arg)
{
    struct writer *w = arg;
    cut_err err = CUT_ERR_INIT;
    for (int i = 0; i < 200; i++) {
        char rec[600];
        int n = snprintf(rec, sizeof(rec), "writer %d record %d ", w->id, i);
        memset(rec + n, 'a' + w->id, sizeof(rec) - (size_t)n);
        if (!journal_append(w->j, rec, sizeof(rec), &err))
            return (void *)1;
    }
    return NULL;
}

static void test_concurrent_appends(void **state)
{
    char *dir = test_tmpdir("journal");
    char *path = xasprintf("%s/journal.log", dir);
    cut_err err = CUT_ERR_INIT;
    struct seen s = {0};
    struct journal_scan scan;
    pthread_t t[4];
    struct writer w[4];
    journal *j = journal_open(path, &err);
    int next[4] = {0};
    (void)state;
    for (int i = 0; i < 4; i++) {
        w[i] = (struct writer){j, i};
        pthread_create(&t[i], NULL, write_many, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        assert_null(rc);
    }
    journal_close(j);
    assert_true(journal_read_file(path, 1 << 30, collect, &s, &scan, &err));
    assert_int_equal(s.n, 800);
    assert_int_equal(scan.skipped_bytes, 0);
    /* each writer's records whole and in its own order */
    for (size_t i = 0; i < s.n; i++) {
        int id, k;
        assert_int_equal(s.len[i], 600);
        assert_int_equal(sscanf(s.rec[i], "writer %d record %d ", &id, &k), 2);
        assert_int_equal(k, next[id]++);
        assert_int_equal(s.rec[i][599], 'a' + id);
    }
    seen_free(&s);
    test_rmtree(dir);
    free(path);
    free(dir);
}

static void test_refusals(void **state)
{
    cut_err err = CUT_ERR_INIT;
    char *big;
    journal *j = journal_open("/dev/full", &err); /* every write: no space left */
    (void)state;
    assert_non_null(j);
    assert_false(journal_append(j, "x", 1, &err));
    assert_int_equal(err.code, CUT_EIO);
    assert_non_null(strstr(err.msg, "No space left"));
    err_clear(&err);
    assert_false(journal_append(j, "", 0, &err));
    assert_int_equal(err.code, CUT_ELIMIT);
    err_clear(&err);
    big = xcalloc(1, JOURNAL_MAX_RECORD + 1);
    assert_false(journal_append(j, big, JOURNAL_MAX_RECORD + 1, &err));
    assert_int_equal(err.code, CUT_ELIMIT);
    free(big);
    journal_close(j);
    err_clear(&err);
    assert_null(journal_open("/nonexistent-dir/journal.log", &err));
    assert_int_equal(err.code, CUT_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_read),      cmocka_unit_test(test_torn_tail_every_cut),
        cmocka_unit_test(test_damage_in_the_middle), cmocka_unit_test(test_rotate),
        cmocka_unit_test(test_concurrent_appends),   cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
