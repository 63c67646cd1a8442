/*
 * The worker pool against the real PostgreSQL: jobs run on the pool's threads (never the
 * submitter's), each thread with its own connection; a full queue refuses without blocking,
 * and the refusals are counted and logged; drain waits for everything queued; stop runs what
 * is queued, then refuses (counted too). A pool's threads carry its name, and a background
 * pool's run at a lower priority.
 */
#include "storage/worker.h"
#include "tests/storage/pg_helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NTHREADS 3

struct seen {
    pthread_barrier_t together; /* the first NTHREADS jobs meet here: one per thread */
    pthread_mutex_t mu;
    pthread_t threads[64];
    int pids[64];
    int index[64];
    int n, errors;
};

static void record(worker_ctx *ctx, void *arg)
{
    struct seen *s = arg;
    cut_err err = CUT_ERR_INIT;
    int64_t counts[DOC_NSTATES];
    int i;

    pthread_mutex_lock(&s->mu);
    i = s->n++;
    pthread_mutex_unlock(&s->mu);
    if (i < NTHREADS)
        pthread_barrier_wait(&s->together);
    if (pgstore_count_states(worker_store(ctx), counts, &err) != 0) {
        fprintf(stderr, "job: %s\n", err.msg);
        s->errors++;
    }
    s->threads[i] = pthread_self();
    s->pids[i] = pgstore_backend_pid(worker_store(ctx));
    s->index[i] = worker_index(ctx);
}

struct sched_seen {
    char name[16];
    int nice;
};

static int my_nice(void)
{
    return getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
}

static void sched_record(worker_ctx *ctx, void *arg)
{
    struct sched_seen *s = arg;
    (void)ctx;
    pthread_getname_np(pthread_self(), s->name, sizeof(s->name));
    s->nice = my_nice();
}

/* A pool's threads carry its name; a background pool's run THREAD_BACKGROUND_NICE lower than
 * the thread that started it, a foreground pool's at the same priority. */
static void test_names_and_background(void **state)
{
    int base = my_nice();
    (void)state;
    for (int bg = 0; bg < 2; bg++) {
        struct worker_opts o = {
            .name = bg ? "bg-pool" : "fg-pool", .threads = 1, .queue_max = 4, .background = bg};
        struct sched_seen seen = {{0}, -100};
        cut_err err = CUT_ERR_INIT;
        worker_pool *p = worker_pool_start(&o, &err);
        int want = bg ? base + THREAD_BACKGROUND_NICE : base;
        assert_non_null(p);
        assert_true(worker_submit(p, sched_record, &seen));
        worker_drain(p);
        assert_string_equal(seen.name, o.name);
        assert_int_equal(seen.nice, want > 19 ? 19 : want);
        worker_pool_free(p);
    }
    /* the starting thread itself is left as it was */
    assert_int_equal(my_nice(), base);
}

static void test_own_thread_own_connection(void **state)
{
    char *url = pgt_migrated_db("worker_conn");
    struct worker_opts o = {
        .name = "test", .threads = NTHREADS, .queue_max = 64, .database_url = url};
    cut_err err = CUT_ERR_INIT;
    worker_pool *p = worker_pool_start(&o, &err);
    struct seen *s = xcalloc(1, sizeof(*s));
    struct worker_stats st;

    (void)state;
    assert_non_null(p);
    pthread_barrier_init(&s->together, NULL, NTHREADS);
    pthread_mutex_init(&s->mu, NULL);
    for (int i = 0; i < 30; i++)
        assert_true(worker_submit(p, record, s));
    worker_drain(p);
    assert_int_equal(s->n, 30);
    assert_int_equal(s->errors, 0);
    for (int i = 0; i < 30; i++) {
        assert_false(pthread_equal(s->threads[i], pthread_self()));
        assert_true(s->pids[i] > 0);
        for (int j = 0; j < 30; j++) {
            /* same thread ⇔ same connection (and same index) */
            bool same_thread = pthread_equal(s->threads[i], s->threads[j]);
            assert_int_equal(same_thread, s->pids[i] == s->pids[j]);
            assert_int_equal(same_thread, s->index[i] == s->index[j]);
        }
    }
    /* the first three met at the barrier: three threads, three backends */
    assert_int_not_equal(s->pids[0], s->pids[1]);
    assert_int_not_equal(s->pids[1], s->pids[2]);
    assert_int_not_equal(s->pids[0], s->pids[2]);
    worker_stats_get(p, &st);
    assert_int_equal(st.submitted, 30);
    assert_int_equal(st.done, 30);
    assert_int_equal(st.refused_full + st.refused_stopping, 0);
    worker_pool_free(p);
    pthread_barrier_destroy(&s->together);
    pthread_mutex_destroy(&s->mu);
    free(s);
    free(url);
}

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    atomic_int ran;
};

static void wait_gate(worker_ctx *ctx, void *arg)
{
    struct gate *g = arg;
    (void)ctx;
    pthread_mutex_lock(&g->mu);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    atomic_fetch_add(&g->ran, 1);
}

static void count_job(worker_ctx *ctx, void *arg)
{
    struct gate *g = arg;
    (void)ctx;
    atomic_fetch_add(&g->ran, 1);
}

static worker_pool *gpool;

static bool one_running(void *arg)
{
    struct worker_stats st;
    (void)arg;
    worker_stats_get(gpool, &st);
    return st.running == 1;
}

static void open_gate(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void test_queue_full_refused_and_counted(void **state)
{
    struct worker_opts o = {.name = "mirror", .threads = 1, .queue_max = 4};
    cut_err err = CUT_ERR_INIT;
    struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0};
    struct worker_stats st;
    char *dir = test_tmpdir("worker_log");
    char *logpath = xasprintf("%s/log", dir);
    FILE *log = fopen(logpath, "w+");
    char *text;
    uint64_t t0;

    (void)state;
    assert_non_null(log);
    log_set_fd(fileno(log));
    gpool = worker_pool_start(&o, &err);
    assert_non_null(gpool);
    /* the only thread is busy: the queue holds 4, the next 3 are refused at once */
    assert_true(worker_submit(gpool, wait_gate, &g));
    assert_true(test_wait_until(one_running, NULL, 10000));
    for (int i = 0; i < 4; i++)
        assert_true(worker_submit(gpool, count_job, &g));
    t0 = now_us();
    for (int i = 0; i < 3; i++)
        assert_false(worker_submit(gpool, count_job, &g));
    assert_true(now_us() - t0 < 1000000); /* refused, not waited for */
    worker_stats_get(gpool, &st);
    assert_int_equal(st.refused_full, 3);
    assert_int_equal(st.queued, 4);
    assert_int_equal(st.running, 1);
    /* drain: everything queued runs */
    open_gate(&g);
    worker_drain(gpool);
    assert_int_equal(atomic_load(&g.ran), 5);
    /* stop runs what is queued, then refuses */
    pthread_mutex_lock(&g.mu);
    g.open = false;
    pthread_mutex_unlock(&g.mu);
    assert_true(worker_submit(gpool, wait_gate, &g));
    assert_true(test_wait_until(one_running, NULL, 10000));
    for (int i = 0; i < 4; i++)
        assert_true(worker_submit(gpool, count_job, &g));
    open_gate(&g);
    worker_pool_stop(gpool);
    assert_int_equal(atomic_load(&g.ran), 10);
    assert_false(worker_submit(gpool, count_job, &g));
    worker_stats_get(gpool, &st);
    assert_int_equal(st.submitted, 10);
    assert_int_equal(st.done, 10);
    assert_int_equal(st.refused_full, 3);
    assert_int_equal(st.refused_stopping, 1);
    worker_pool_free(gpool);
    gpool = NULL;
    log_set_fd(1);
    fflush(log);
    text = test_read_file(logpath, NULL);
    fprintf(stderr, "%s", text);
    /* every refusal is in the log: the burst of 3 in one line, the late one at the end */
    assert_non_null(strstr(text, "\"event\":\"worker_refused\""));
    assert_non_null(strstr(text, "\"pool\":\"mirror\""));
    assert_true(strstr(text, "\"refused_full\":3") != NULL ||
                (strstr(text, "\"refused_full\":1") && strstr(text, "\"refused_full\":2")));
    assert_non_null(strstr(text, "\"refused_stopping\":1"));
    free(text);
    fclose(log);
    free(logpath);
    test_rmtree(dir);
    free(dir);
}

static void test_bad_options(void **state)
{
    struct worker_opts o = {.name = "x", .threads = 0, .queue_max = 4};
    cut_err err = CUT_ERR_INIT;

    (void)state;
    assert_null(worker_pool_start(&o, &err));
    assert_int_equal(err.code, CUT_EINVAL);
    o.threads = 1;
    o.queue_max = 0;
    err_clear(&err);
    assert_null(worker_pool_start(&o, &err));
    worker_pool_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_thread_own_connection),
        cmocka_unit_test(test_queue_full_refused_and_counted),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_names_and_background),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
