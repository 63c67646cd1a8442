/*
 * The state store's typed calls against the real PostgreSQL, each test in a fresh database:
 * upsert with generations, legal and illegal transitions (refused with no history row),
 * claims that never hand one document to two claimers (SKIP LOCKED), a lease that expires
 * and is re-claimed, after which the first worker's late completion is refused by the fence,
 * fail → attempts → failed, a flag and its audit row written together or not at all, counts
 * per state, one document's row, and a lost connection returning CUT_EDB with the next call
 * reconnecting. Several completions in one statement each get their own verdict, and a claim
 * walks the queue's indexes instead of the whole queue.
 */
#include "tests/storage/pg_helpers.h"

#include <pthread.h>

static pgstore *store(const char *url)
{
    return pgstore_open(url);
}

static void add_doc(pgstore *st, const char *key, int64_t *gen)
{
    cut_err err = CUT_ERR_INIT;
    struct pgstore_doc_in d = {.storage_key = key, .s3_key = key, .size = -1};

    if (pgstore_upsert(st, &d, gen, &err) != 0)
        fail_msg("upsert %s: %s", key, err.msg);
}

static void test_transition_table(void **state)
{
    (void)state;
    /* the happy path of DESIGN.md */
    assert_true(doc_transition_legal(DOC_PENDING, DOC_COPIED));
    assert_true(doc_transition_legal(DOC_COPIED, DOC_VERIFIED));
    assert_true(doc_transition_legal(DOC_VERIFIED, DOC_ACTIVE));
    assert_true(doc_transition_legal(DOC_COPIED, DOC_MISMATCH));
    assert_true(doc_transition_legal(DOC_MISMATCH, DOC_COPIED));
    assert_true(doc_transition_legal(DOC_FAILED, DOC_PENDING));
    /* reads are rewritten from verified/active only: no shortcut to them */
    assert_false(doc_transition_legal(DOC_PENDING, DOC_VERIFIED));
    assert_false(doc_transition_legal(DOC_PENDING, DOC_ACTIVE));
    assert_false(doc_transition_legal(DOC_MISMATCH, DOC_VERIFIED));
    assert_false(doc_transition_legal(DOC_FAILED, DOC_ACTIVE));
    for (int s = 0; s < DOC_NSTATES; s++) {
        assert_false(doc_transition_legal(DOC_DELETED, (enum doc_state)s));
        assert_false(doc_transition_legal((enum doc_state)s, (enum doc_state)s));
        if (s != DOC_DELETED)
            assert_true(doc_transition_legal((enum doc_state)s, DOC_DELETED));
        assert_int_equal(doc_state_parse(doc_state_name((enum doc_state)s)), s);
    }
    assert_int_equal(doc_state_parse("bogus"), -1);
}

static void test_upsert_generation(void **state)
{
    char *url = pgt_migrated_db("pg_upsert");
    pgstore *st = store(url);
    cut_err err = CUT_ERR_INIT;
    struct pgstore_doc d;
    int64_t gen = 0;

    (void)state;
    add_doc(st, "k1", &gen);
    assert_int_equal(gen, 1);
    assert_int_equal(pgstore_transition(st, "k1", 1, DOC_COPIED, "copy", &err), 0);
    /* re-recorded by the app: a new generation, back to pending */
    add_doc(st, "k1", &gen);
    assert_int_equal(gen, 2);
    assert_int_equal(pgstore_doc_get(st, "k1", &d, &err), 0);
    assert_int_equal(d.generation, 2);
    assert_int_equal(d.state, DOC_PENDING);
    assert_null(d.copied_at);
    pgstore_doc_clear(&d);
    /* work on generation 1 cannot move generation 2 */
    assert_int_equal(pgstore_transition(st, "k1", 1, DOC_COPIED, NULL, &err), -1);
    assert_int_equal(err.code, CUT_ECONFLICT);
    assert_non_null(strstr(err.msg, "stale"));
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.documents WHERE state = "
                                    "'pending' AND generation = 2"),
                     1);
    /* the history: recorded (from nothing), copied, re-recorded (from copied) */
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.transitions WHERE "
                                    "storage_key = 'k1'"),
                     3);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.transitions WHERE from_state "
                                    "= 'copied' AND to_state = 'pending' AND generation = 2"),
                     1);
    pgstore_free(st);
    free(url);
}

static void test_transitions(void **state)
{
    char *url = pgt_migrated_db("pg_trans");
    pgstore *st = store(url);
    cut_err err = CUT_ERR_INIT;
    struct pgstore_doc d;
    long long before;

    (void)state;
    add_doc(st, "a", NULL);
    assert_int_equal(pgstore_transition(st, "a", 0, DOC_COPIED, NULL, &err), 0);
    assert_int_equal(pgstore_transition(st, "a", 0, DOC_VERIFIED, "md5 equal", &err), 0);
    before = pgt_count(url, "SELECT count(*) FROM cutover.transitions");
    /* verified → pending is not in the table: refused with the reason, nothing written */
    assert_int_equal(pgstore_transition(st, "a", 0, DOC_PENDING, NULL, &err), -1);
    assert_int_equal(err.code, CUT_ECONFLICT);
    assert_non_null(strstr(err.msg, "illegal transition verified -> pending"));
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.transitions"), before);
    err_clear(&err);
    assert_int_equal(pgstore_transition(st, "a", 0, DOC_ACTIVE, NULL, &err), 0);
    assert_int_equal(pgstore_doc_get(st, "a", &d, &err), 0);
    assert_int_equal(d.state, DOC_ACTIVE);
    assert_non_null(d.copied_at);
    assert_non_null(d.verified_at);
    assert_non_null(d.activated_at);
    assert_null(d.failed_at);
    pgstore_doc_clear(&d);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.transitions WHERE "
                                    "from_state = 'copied' AND to_state = 'verified' AND "
                                    "detail = 'md5 equal'"),
                     1);
    err_clear(&err);
    assert_int_equal(pgstore_transition(st, "missing", 0, DOC_COPIED, NULL, &err), -1);
    assert_int_equal(err.code, CUT_ENOTFOUND);
    pgstore_free(st);
    free(url);
}

static void test_doc_get_and_counts(void **state)
{
    char *url = pgt_migrated_db("pg_get");
    pgstore *st = store(url);
    cut_err err = CUT_ERR_INIT;
    struct pgstore_doc_in in = {.storage_key = "docs/1.pdf",
                                .s3_key = "documents/o1/docs/1.pdf",
                                .origin = "backfill",
                                .vars = "{\"org\": \"o1\"}",
                                .spool_path = "/spool/1",
                                .size = 1234,
                                .md5 = "00112233445566778899aabbccddeeff",
                                .sha256 = NULL};
    struct pgstore_doc d;
    int64_t counts[DOC_NSTATES];
    char key[16];

    (void)state;
    assert_int_equal(pgstore_upsert(st, &in, NULL, &err), 0);
    assert_int_equal(pgstore_doc_get(st, "docs/1.pdf", &d, &err), 0);
    assert_string_equal(d.storage_key, "docs/1.pdf");
    assert_string_equal(d.s3_key, "documents/o1/docs/1.pdf");
    assert_string_equal(d.origin, "backfill");
    assert_non_null(strstr(d.vars, "\"o1\""));
    assert_string_equal(d.spool_path, "/spool/1");
    assert_int_equal(d.size, 1234);
    assert_string_equal(d.md5, "00112233445566778899aabbccddeeff");
    assert_null(d.sha256);
    assert_int_equal(d.attempts, 0);
    assert_non_null(strchr(d.created_at, 'T')); /* ISO 8601 */
    pgstore_doc_clear(&d);
    assert_int_equal(pgstore_doc_get(st, "nope", &d, &err), -1);
    assert_int_equal(err.code, CUT_ENOTFOUND);
    err_clear(&err);

    /* 3 pending (with docs/1.pdf), 2 copied, 1 verified, 1 deleted */
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "c%d", i);
        add_doc(st, key, NULL);
    }
    assert_int_equal(pgstore_transition(st, "c0", 0, DOC_COPIED, NULL, &err), 0);
    assert_int_equal(pgstore_transition(st, "c1", 0, DOC_COPIED, NULL, &err), 0);
    assert_int_equal(pgstore_transition(st, "c2", 0, DOC_COPIED, NULL, &err), 0);
    assert_int_equal(pgstore_transition(st, "c2", 0, DOC_VERIFIED, NULL, &err), 0);
    assert_int_equal(pgstore_transition(st, "c3", 0, DOC_DELETED, NULL, &err), 0);
    assert_int_equal(pgstore_count_states(st, counts, &err), 0);
    assert_int_equal(counts[DOC_PENDING], 3);
    assert_int_equal(counts[DOC_COPIED], 2);
    assert_int_equal(counts[DOC_VERIFIED], 1);
    assert_int_equal(counts[DOC_DELETED], 1);
    assert_int_equal(counts[DOC_ACTIVE], 0);
    assert_int_equal(counts[DOC_FAILED], 0);
    pgstore_free(st);
    free(url);
}

/* A mirror claiming one origin: backfill copies are left to the backfill (its throttles and
 * its pause hold), but a backfill document a user reads (moved to the head of the queue) and
 * a removal of any origin are still taken. */
static void test_claim_by_origin(void **state)
{
    char *url = pgt_migrated_db("pg_origin");
    pgstore *st = store(url);
    cut_err err = CUT_ERR_INIT;
    struct pgstore_claim c;
    bool bumped = false;
    const char *names[] = {"up", "bf", "bf-read", "bf-deleted"};

    (void)state;
    for (int i = 0; i < 4; i++) {
        struct pgstore_doc_in d = {.storage_key = names[i],
                                   .s3_key = names[i],
                                   .size = -1,
                                   .origin = i == 0 ? "upload" : "backfill"};
        if (pgstore_upsert(st, &d, NULL, &err) != 0)
            fail_msg("upsert %s: %s", names[i], err.msg);
    }
    assert_int_equal(pgstore_read_bump(st, "bf-read", &bumped, &err), 0);
    assert_true(bumped);
    assert_int_equal(pgstore_transition(st, "bf-deleted", 0, DOC_DELETED, "test", &err), 0);

    assert_int_equal(pgstore_claim(st, "dw", 100, 60000, "upload", &c, &err), 0);
    assert_int_equal(c.n, 3);
    for (size_t i = 0; i < c.n; i++)
        assert_string_not_equal(c.docs[i].storage_key, "bf");
    pgstore_claim_clear(&c);
    assert_int_equal(pgstore_claim(st, "dw", 100, 60000, "upload", &c, &err), 0);
    assert_int_equal(c.n, 0);
    pgstore_claim_clear(&c);
    assert_int_equal(pgstore_claim(st, "backfill", 100, 60000, "backfill", &c, &err), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.docs[0].storage_key, "bf");
    pgstore_claim_clear(&c);
    pgstore_free(st);
    free(url);
}

#define QUEUE_SCANS                                                                                \
    "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes WHERE schemaname = "              \
    "'cutover' AND indexrelname IN ('documents_due', 'documents_due_origin', "                     \
    "'documents_removals')"
#define STATE_SCANS                                                                                \
    "SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = 'cutover' AND indexrelname "     \
    "= 'documents_state'"
#define TABLE_SCANS                                                                                \
    "SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = 'cutover' AND relname = "         \
    "'documents'"

/* No other connection to the test's database is left. A backend sends its statistics before
 * it leaves pg_stat_activity, so from then on the counters hold everything done before. */
static bool others_gone(void *arg)
{
    return pgt_count(arg, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                          "current_database() AND pid <> pg_backend_pid()") == 0;
}

/* A claim walks a queue index in next_attempt_at order and stops at its limit, whatever the
 * queue's length: with 6,000 documents due (two origins, some removals), claims with and
 * without an origin scan only the queue's indexes, never the whole table or the state index
 * (which a claim that sorted every due document used). The counters are the server's own,
 * read when no other connection is left (each sends its statistics as it closes). */
static void test_claim_walks_index(void **state)
{
    char *url = pgt_migrated_db("pg_claimidx");
    pgstore *st = store(url);
    cut_err err = CUT_ERR_INIT;
    struct pgstore_claim c;
    long long queue_before, state_before, table_before;

    (void)state;
    pgt_exec(url, "INSERT INTO cutover.documents (storage_key, s3_key, origin, state) "
                  "SELECT 'k' || g, 'k' || g, CASE WHEN g % 2 = 0 THEN 'backfill' ELSE 'upload' "
                  "END, CASE WHEN g % 50 = 0 THEN 'deleted' ELSE 'pending' END "
                  "FROM generate_series(1, 6000) g");
    pgt_exec(url, "ANALYZE cutover.documents");
    assert_true(test_wait_until(others_gone, url, 20000));
    queue_before = pgt_count(url, QUEUE_SCANS);
    state_before = pgt_count(url, STATE_SCANS);
    table_before = pgt_count(url, TABLE_SCANS);
    assert_int_equal(pgstore_claim(st, "w", 5, 60000, "backfill", &c, &err), 0);
    assert_int_equal(c.n, 5);
    pgstore_claim_clear(&c);
    assert_int_equal(pgstore_claim(st, "w", 5, 60000, "upload", &c, &err), 0);
    assert_int_equal(c.n, 5);
    pgstore_claim_clear(&c);
    assert_int_equal(pgstore_claim(st, "w", 5, 60000, NULL, &c, &err), 0);
    assert_int_equal(c.n, 5);
    pgstore_claim_clear(&c);
    pgstore_free(st);
    assert_true(test_wait_until(others_gone, url, 20000));
    assert_true(pgt_count(url, QUEUE_SCANS) >= queue_before + 3);
    assert_int_equal(pgt_count(url, STATE_SCANS), state_before);
    assert_int_equal(pgt_count(url, TABLE_SCANS), table_before);
    free(url);
}

static void test_claim_skips_locked(void **state)
{
    char *url = pgt_migrated_db("pg_skip");
    /* a claim that waited for the locked row (no SKIP LOCKED) fails after 5 s, not never */
    char *timed = xasprintf("%s?options=-c%%20statement_timeout%%3D5000", url);
    pgstore *st = store(timed);
    cut_err err = CUT_ERR_INIT;
    struct pgstore_claim c;
    PGconn *other = PQconnectdb(url);
    char key[16];

    (void)state;
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "s%d", i);
        add_doc(st, key, NULL);
    }
    /* another transaction holds s2's row: the claim passes over it instead of waiting */
    assert_int_equal(PQstatus(other), CONNECTION_OK);
    PQclear(PQexec(other, "BEGIN"));
    PQclear(PQexec(other, "SELECT 1 FROM cutover.documents WHERE storage_key = 's2' FOR UPDATE"));
    if (pgstore_claim(st, "w", 100, 60000, NULL, &c, &err) != 0)
        fail_msg("claim: %s", err.msg);
    assert_int_equal(c.n, 4);
    for (size_t i = 0; i < c.n; i++)
        assert_string_not_equal(c.docs[i].storage_key, "s2");
    assert_int_equal(strlen(c.token), 32);
    pgstore_claim_clear(&c);
    PQclear(PQexec(other, "COMMIT"));
    PQfinish(other);
    /* the four are leased now: only s2 is left */
    assert_int_equal(pgstore_claim(st, "w", 100, 60000, NULL, &c, &err), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.docs[0].storage_key, "s2");
    pgstore_claim_clear(&c);
    assert_int_equal(pgstore_claim(st, "w", 100, 60000, NULL, &c, &err), 0);
    assert_int_equal(c.n, 0);
    pgstore_claim_clear(&c);
    pgstore_free(st);
    free(timed);
    free(url);
}

#define NDOCS 300

struct claimer {
    const char *url;
    pthread_barrier_t *start;
    char **keys; /* claimed, new strings */
    size_t n;
    int errors;
};

static void *claimer_run(void *arg)
{
    struct claimer *cl = arg;
    pgstore *st = pgstore_open(cl->url);
    cut_err err = CUT_ERR_INIT;

    cl->keys = xcalloc(NDOCS, sizeof(char *));
    pthread_barrier_wait(cl->start);
    for (;;) {
        struct pgstore_claim c;
        if (pgstore_claim(st, "claimer", 7, 60000, NULL, &c, &err) != 0) {
            cl->errors++;
            break;
        }
        if (c.n == 0) {
            pgstore_claim_clear(&c);
            break;
        }
        for (size_t i = 0; i < c.n && cl->n < NDOCS; i++)
            cl->keys[cl->n++] = xstrdup(c.docs[i].storage_key);
        pgstore_claim_clear(&c);
    }
    pgstore_free(st);
    return NULL;
}

static void test_two_claimers_never_share(void **state)
{
    char *url = pgt_migrated_db("pg_claimers");
    pgstore *st = store(url);
    pthread_barrier_t start;
    struct claimer cl[2] = {{0}, {0}};
    pthread_t t[2];
    char *seen;
    char key[16];

    (void)state;
    for (int i = 0; i < NDOCS; i++) {
        snprintf(key, sizeof(key), "d%d", i);
        add_doc(st, key, NULL);
    }
    pthread_barrier_init(&start, NULL, 2);
    for (int i = 0; i < 2; i++) {
        cl[i].url = url;
        cl[i].start = &start;
        assert_int_equal(pthread_create(&t[i], NULL, claimer_run, &cl[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    seen = xcalloc(NDOCS, 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cl[i].errors, 0);
        for (size_t j = 0; j < cl[i].n; j++) {
            int k = atoi(cl[i].keys[j] + 1);
            if (seen[k])
                fail_msg("%s claimed twice", cl[i].keys[j]);
            seen[k] = 1;
            free(cl[i].keys[j]);
        }
        free(cl[i].keys);
    }
    fprintf(stderr, "claimers got %zu and %zu documents\n", cl[0].n, cl[1].n);
    assert_int_equal(cl[0].n + cl[1].n, NDOCS);
    free(seen);
    pthread_barrier_destroy(&start);
    pgstore_free(st);
    free(url);
}

struct reclaim {
    pgstore *st;
    struct pgstore_claim c;
};

static bool reclaimed(void *arg)
{
    struct reclaim *r = arg;
    cut_err err = CUT_ERR_INIT;

    pgstore_claim_clear(&r->c);
    if (pgstore_claim(r->st, "second", 10, 60000, NULL, &r->c, &err) != 0)
        fail_msg("claim: %s", err.msg);
    return r->c.n == 1;
}

/* Copied and verified in one transaction: both history rows, the verified time, no lease. */
static void test_complete_verified(void **state)
{
    char *url = pgt_migrated_db("pg_verified");
    pgstore *a = store(url);
    cut_err err = CUT_ERR_INIT;
    struct pgstore_claim c;
    struct pgstore_outcome o = {.size = 3, .detail = "copied", .verified = "HEAD agrees"};
    struct pgstore_doc d;

    (void)state;
    add_doc(a, "both", NULL);
    assert_int_equal(pgstore_claim(a, "w", 10, 60000, NULL, &c, &err), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(pgstore_complete(a, "both", c.token, DOC_COPIED, &o, &err), 0);
    assert_int_equal(pgstore_doc_get(a, "both", &d, &err), 0);
    assert_int_equal(d.state, DOC_VERIFIED);
    assert_non_null(d.copied_at);
    assert_non_null(d.verified_at);
    pgstore_doc_clear(&d);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.transitions WHERE "
                                    "storage_key = 'both' AND ((to_state = 'copied' AND detail = "
                                    "'copied') OR (from_state = 'copied' AND to_state = 'verified' "
                                    "AND detail = 'HEAD agrees'))"),
                     2);
    pgstore_claim_clear(&c);
    pgstore_free(a);
    free(url);
}

/* Several completions in one statement: each gets its own verdict (recorded, lease lost, no
 * such document, illegal move), a refused one changes nothing, the others are written with
 * their own outcomes, and a verified copy's two history rows come in their order. */
static void test_complete_many(void **state)
{
    char *url = pgt_migrated_db("pg_many");
    pgstore *a = store(url);
    cut_err err = CUT_ERR_INIT, each[5];
    struct pgstore_claim c;
    struct pgstore_outcome o1 = {.size = 11, .s3_etag = "e1", .detail = "one", .verified = "v1"};
    struct pgstore_outcome o2 = {.size = 22, .s3_etag = "e2", .detail = "two", .verified = "v2"};
    struct pgstore_doc d;
    int64_t gen;

    (void)state;
    add_doc(a, "ok1", NULL);
    add_doc(a, "stolen", NULL);
    add_doc(a, "illegal", NULL);
    add_doc(a, "ok2", NULL);
    assert_int_equal(pgstore_claim(a, "w", 10, 60000, NULL, &c, &err), 0);
    assert_int_equal(c.n, 4);
    add_doc(a, "stolen", &gen); /* recorded again: the claim's lease is void */
    assert_int_equal(gen, 2);
    assert_int_equal(pgstore_transition(a, "illegal", 1, DOC_COPIED, "elsewhere", &err), 0);
    struct pgstore_completion batch[5] = {
        {.storage_key = "ok1", .token = c.token, .out = &o1},
        {.storage_key = "stolen", .token = c.token, .out = &o1},
        {.storage_key = "missing", .token = c.token, .out = &o1},
        {.storage_key = "illegal", .token = c.token, .out = &o1},
        {.storage_key = "ok2", .token = c.token, .out = &o2},
    };
    assert_int_equal(pgstore_complete_many(a, batch, 5, DOC_COPIED, each, &err), 0);
    assert_false(err_isset(&each[0]));
    assert_int_equal(each[1].code, CUT_ECONFLICT);
    assert_non_null(strstr(each[1].msg, "lease lost"));
    assert_int_equal(each[2].code, CUT_ENOTFOUND);
    assert_int_equal(each[3].code, CUT_ECONFLICT);
    assert_non_null(strstr(each[3].msg, "illegal transition copied -> copied"));
    assert_false(err_isset(&each[4]));
    /* each written with its own outcome */
    assert_int_equal(pgstore_doc_get(a, "ok1", &d, &err), 0);
    assert_int_equal(d.state, DOC_VERIFIED);
    assert_int_equal(d.size, 11);
    assert_string_equal(d.s3_etag, "e1");
    pgstore_doc_clear(&d);
    assert_int_equal(pgstore_doc_get(a, "ok2", &d, &err), 0);
    assert_int_equal(d.state, DOC_VERIFIED);
    assert_int_equal(d.size, 22);
    assert_string_equal(d.s3_etag, "e2");
    pgstore_doc_clear(&d);
    /* the refused ones untouched: no outcome, no history, the new generation still due */
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.documents WHERE storage_key "
                                    "IN ('stolen', 'illegal') AND s3_etag IS NULL AND "
                                    "verified_at IS NULL"),
                     2);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.documents WHERE storage_key = "
                                    "'stolen' AND state = 'pending' AND generation = 2"),
                     1);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.transitions WHERE storage_key "
                                    "IN ('stolen', 'illegal', 'missing') AND to_state IN "
                                    "('copied', 'verified') AND detail <> 'elsewhere'"),
                     0);
    /* copied before verified, each document with its own details */
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.transitions c JOIN "
                                    "cutover.transitions v USING (storage_key) WHERE "
                                    "c.to_state = 'copied' AND v.to_state = 'verified' AND "
                                    "v.from_state = 'copied' AND c.id < v.id AND "
                                    "((storage_key = 'ok1' AND c.detail = 'one' AND v.detail = "
                                    "'v1') OR (storage_key = 'ok2' AND c.detail = 'two' AND "
                                    "v.detail = 'v2'))"),
                     2);
    /* the tokens are spent */
    assert_int_equal(pgstore_complete_many(a, batch, 1, DOC_COPIED, each, &err), 0);
    assert_int_equal(each[0].code, CUT_ECONFLICT);
    /* one document twice, or too many: refused whole */
    struct pgstore_completion twice[2] = {batch[0], batch[0]};
    assert_int_equal(pgstore_complete_many(a, twice, 2, DOC_COPIED, each, &err), -1);
    assert_int_equal(err.code, CUT_EINVAL);
    err_clear(&err);
    assert_int_equal(
        pgstore_complete_many(a, batch, PGSTORE_COMPLETE_MAX + 1, DOC_COPIED, each, &err), -1);
    assert_int_equal(err.code, CUT_ELIMIT);
    pgstore_claim_clear(&c);
    pgstore_free(a);
    free(url);
}

static void test_lease_expiry_fence(void **state)
{
    char *url = pgt_migrated_db("pg_fence");
    pgstore *a = store(url), *b = store(url);
    cut_err err = CUT_ERR_INIT;
    struct pgstore_claim ca;
    struct reclaim rb = {b, {{0}, NULL, 0}};
    struct pgstore_outcome late = {.size = 1, .s3_etag = "late", .detail = "first worker"};
    struct pgstore_outcome mine = {.size = 2, .s3_etag = "mine", .detail = "second worker"};
    struct pgstore_doc d;

    (void)state;
    add_doc(a, "leased", NULL);
    assert_int_equal(pgstore_claim(a, "first", 10, 300, NULL, &ca, &err), 0);
    assert_int_equal(ca.n, 1);
    /* while the lease lives nobody else gets it */
    assert_false(reclaimed(&rb));
    /* it expires (300 ms) and the second worker takes it over */
    assert_true(test_wait_until(reclaimed, &rb, 10000));
    assert_string_not_equal(rb.c.token, ca.token);
    /* the first worker finishes late: the fence refuses, nothing is written */
    assert_int_equal(pgstore_complete(a, "leased", ca.token, DOC_COPIED, &late, &err), -1);
    assert_int_equal(err.code, CUT_ECONFLICT);
    assert_non_null(strstr(err.msg, "lease lost"));
    err_clear(&err);
    assert_int_equal(pgstore_fail(a, "leased", ca.token, "late", 10, 0, NULL, &err), -1);
    assert_int_equal(err.code, CUT_ECONFLICT);
    err_clear(&err);
    assert_int_equal(pgstore_renew(a, "leased", ca.token, 60000, &err), -1);
    err_clear(&err);
    /* the new owner's result is recorded */
    assert_int_equal(pgstore_renew(b, "leased", rb.c.token, 60000, &err), 0);
    assert_int_equal(pgstore_complete(b, "leased", rb.c.token, DOC_COPIED, &mine, &err), 0);
    assert_int_equal(pgstore_doc_get(a, "leased", &d, &err), 0);
    assert_int_equal(d.state, DOC_COPIED);
    assert_string_equal(d.s3_etag, "mine");
    assert_int_equal(d.size, 2);
    pgstore_doc_clear(&d);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.transitions WHERE "
                                    "to_state = 'copied'"),
                     1);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.transitions WHERE "
                                    "detail = 'second worker'"),
                     1);
    /* completed: the token is spent */
    assert_int_equal(pgstore_complete(b, "leased", rb.c.token, DOC_VERIFIED, NULL, &err), -1);
    assert_int_equal(err.code, CUT_ECONFLICT);
    pgstore_claim_clear(&ca);
    pgstore_claim_clear(&rb.c);
    pgstore_free(a);
    pgstore_free(b);
    free(url);
}

static void test_fail_until_failed(void **state)
{
    char *url = pgt_migrated_db("pg_fail");
    pgstore *st = store(url);
    cut_err err = CUT_ERR_INIT;
    struct pgstore_claim c;
    struct pgstore_doc d;
    enum doc_state s;
    char *v;

    (void)state;
    add_doc(st, "f", NULL);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(pgstore_claim(st, "w", 1, 60000, NULL, &c, &err), 0);
        assert_int_equal(c.n, 1);
        assert_int_equal(pgstore_fail(st, "f", c.token, "S3 answered 503", 3, 0, &s, &err), 0);
        assert_int_equal(s, i < 3 ? DOC_PENDING : DOC_FAILED);
        pgstore_claim_clear(&c);
    }
    assert_int_equal(pgstore_doc_get(st, "f", &d, &err), 0);
    assert_int_equal(d.state, DOC_FAILED);
    assert_int_equal(d.attempts, 3);
    assert_string_equal(d.last_error, "S3 answered 503");
    assert_non_null(d.failed_at);
    pgstore_doc_clear(&d);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.transitions WHERE "
                                    "from_state = 'pending' AND to_state = 'failed'"),
                     1);
    /* failed is not work any more */
    assert_int_equal(pgstore_claim(st, "w", 1, 60000, NULL, &c, &err), 0);
    assert_int_equal(c.n, 0);
    pgstore_claim_clear(&c);
    /* retried on demand: pending again, attempts reset */
    assert_int_equal(pgstore_transition(st, "f", 0, DOC_PENDING, "retry", &err), 0);
    assert_int_equal(pgstore_claim(st, "w", 1, 60000, NULL, &c, &err), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.docs[0].attempts, 0);
    /* a failure with backoff puts the next attempt in the future */
    assert_int_equal(pgstore_fail(st, "f", c.token, "timeout", 10, 600000, &s, &err), 0);
    pgstore_claim_clear(&c);
    v = pgt_query1(url, "SELECT next_attempt_at > now() + interval '5 minutes' FROM "
                        "cutover.documents WHERE storage_key = 'f'");
    assert_string_equal(v, "t");
    free(v);
    assert_int_equal(pgstore_claim(st, "w", 1, 60000, NULL, &c, &err), 0);
    assert_int_equal(c.n, 0);
    pgstore_claim_clear(&c);
    pgstore_free(st);
    free(url);
}

static void test_flag_and_audit(void **state)
{
    char *url = pgt_migrated_db("pg_flags");
    pgstore *st = store(url);
    cut_err err = CUT_ERR_INIT;
    json_t *init = json_pack("{s:b, s:f}", "dual_write", 0, "shadow_read", 0.0), *got;
    int written = -1;
    char *v;

    (void)state;
    assert_int_equal(pgstore_flags_init(st, init, "config", &written, &err), 0);
    assert_int_equal(written, 2);
    assert_int_equal(pgstore_flag_set(st, "dual_write", "true", "alice", "phase 2", &err), 0);
    /* initial values are written once: the database's value wins afterwards */
    assert_int_equal(pgstore_flags_init(st, init, "config", &written, &err), 0);
    assert_int_equal(written, 0);
    assert_int_equal(pgstore_flags_get(st, &got, &err), 0);
    assert_true(json_is_true(json_object_get(got, "dual_write")));
    json_decref(got);
    v = pgt_query1(url, "SELECT actor || ' ' || old::text || ' ' || new::text || ' ' || reason "
                        "FROM cutover.audit WHERE action = 'flag_set'");
    assert_string_equal(v, "alice false true phase 2");
    free(v);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.audit"), 3);

    /* an audit row that cannot be written takes the flag change down with it */
    pgt_exec(url, "CREATE FUNCTION cutover.no_audit() RETURNS trigger LANGUAGE plpgsql AS $$ "
                  "BEGIN RAISE EXCEPTION 'audit refused'; END $$; "
                  "CREATE TRIGGER no_audit BEFORE INSERT ON cutover.audit "
                  "FOR EACH ROW EXECUTE FUNCTION cutover.no_audit()");
    assert_int_equal(pgstore_flag_set(st, "dual_write", "false", "bob", "undo", &err), -1);
    assert_int_equal(err.code, CUT_EDB);
    assert_non_null(strstr(err.msg, "audit refused"));
    v = pgt_query1(url, "SELECT value::text FROM cutover.flags WHERE name = 'dual_write'");
    assert_string_equal(v, "true");
    free(v);
    assert_int_equal(pgt_count(url, "SELECT count(*) FROM cutover.audit"), 3);
    /* and the store is usable after the failed transaction */
    err_clear(&err);
    assert_int_equal(pgstore_flags_get(st, &got, &err), 0);
    json_decref(got);
    json_decref(init);
    pgstore_free(st);
    free(url);
}

struct gone {
    const char *url;
    int pid;
};

static bool backend_gone(void *arg)
{
    struct gone *g = arg;
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", g->pid);
    return pgt_count(g->url, sql) == 0;
}

static void test_connection_loss(void **state)
{
    char *url = pgt_migrated_db("pg_loss");
    pgstore *st = store(url);
    cut_err err = CUT_ERR_INIT;
    int64_t counts[DOC_NSTATES];
    struct gone g = {url, 0};
    char sql[128];
    int pid2;

    (void)state;
    add_doc(st, "x", NULL);
    g.pid = pgstore_backend_pid(st);
    assert_true(g.pid > 0);
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", g.pid);
    free(pgt_query1(url, sql));
    assert_true(test_wait_until(backend_gone, &g, 10000));
    /* the call that finds the connection dead fails with an error value */
    assert_int_equal(pgstore_count_states(st, counts, &err), -1);
    assert_int_equal(err.code, CUT_EDB);
    fprintf(stderr, "after the backend was terminated: %s\n", err.msg);
    /* the next one reconnects */
    err_clear(&err);
    assert_int_equal(pgstore_count_states(st, counts, &err), 0);
    assert_int_equal(counts[DOC_PENDING], 1);
    pid2 = pgstore_backend_pid(st);
    assert_true(pid2 > 0 && pid2 != g.pid);

    /* the same inside a transaction (transition: BEGIN, SELECT FOR UPDATE, ...) */
    g.pid = pid2;
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", g.pid);
    free(pgt_query1(url, sql));
    assert_true(test_wait_until(backend_gone, &g, 10000));
    assert_int_equal(pgstore_transition(st, "x", 0, DOC_COPIED, NULL, &err), -1);
    assert_int_equal(err.code, CUT_EDB);
    err_clear(&err);
    assert_int_equal(pgstore_transition(st, "x", 0, DOC_COPIED, NULL, &err), 0);
    pgstore_free(st);

    /* a server that is not there at all: an error value too */
    st = pgstore_open("postgresql://cutover@127.0.0.1:1/none?connect_timeout=2");
    assert_int_equal(pgstore_count_states(st, counts, &err), -1);
    assert_int_equal(err.code, CUT_EDB);
    pgstore_free(st);
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transition_table),   cmocka_unit_test(test_upsert_generation),
        cmocka_unit_test(test_transitions),        cmocka_unit_test(test_doc_get_and_counts),
        cmocka_unit_test(test_claim_skips_locked), cmocka_unit_test(test_two_claimers_never_share),
        cmocka_unit_test(test_lease_expiry_fence), cmocka_unit_test(test_fail_until_failed),
        cmocka_unit_test(test_complete_verified),  cmocka_unit_test(test_complete_many),
        cmocka_unit_test(test_claim_walks_index),  cmocka_unit_test(test_flag_and_audit),
        cmocka_unit_test(test_connection_loss),    cmocka_unit_test(test_claim_by_origin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
