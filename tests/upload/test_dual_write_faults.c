/*
 * Dual-write under faults: `cutover proxy` before the example application, on a PRIVATE
 * instance of the services (its own PostgreSQL, s3rver and app, started here and stopped at
 * the end: the shared fixture is never touched, other tests run against it).
 *
 *   PostgreSQL stopped in the middle of a stream of uploads: every upload gets the app's 201,
 *   the records go to the journal in spool_dir (counted while the database is away), and once
 *   it is back the journal is replayed, emptied, and every document ends verified with the
 *   bytes uploaded (read back from S3 and compared). A key kept in the journal and uploaded
 *   again right after the database is back ends with the second upload's bytes (the replay
 *   of the older record must not overwrite the newer one).
 *
 *   s3rver killed in the middle of a stream: no client error; while S3 is away the retries
 *   never wait longer than workers.max_backoff_s (read from the rows' next_attempt_at); all
 *   verified within 30 s after S3 is back.
 *
 *   cutover SIGKILLed in the middle of two concurrent streams, restarted: every upload that
 *   got its 201 ends verified with its own bytes; no row and no S3 object holds other bytes
 *   than the upload of its key (unanswered uploads may be absent).
 *
 *   cutover SIGKILLed while records go to the journal (PostgreSQL away), the journal left with
 *   a torn record at its end (what a kill inside an append leaves), after two records the
 *   database cannot take: restarted with the database back, it replays the journal at start,
 *   skips those (logged) and the torn record, empties the journal, and every acknowledged
 *   document ends verified.
 *
 *   The spool on a full disk (a small tmpfs, filled up; skipped when mounting is refused):
 *   uploads still get the app's 201, the documents are recorded without a spool file, copied
 *   from the legacy store and verified; the condition is logged.
 *
 *   S3 answering 503 SlowDown or 500 InternalError to every third request, and S3 slow (every
 *   request delayed 2 s), from a relay of the test between cutover and s3rver (tests/faults/
 *   relay.c); PostgreSQL restarted in the middle of a stream, and down 30 s; the legacy store
 *   down (a relay dropping every connection) while the mirror needs it because the spool
 *   files are gone, one of its originals deleted (that document ends failed, with the
 *   reason); the app down (every client gets 502, nothing recorded, nothing spooled).
 *
 * Each scenario ends with its line of the fault table (table_row(): acknowledged uploads,
 * verified with the bytes read back from S3, failed with a reason, lost, verified with other
 * bytes), appended to $CUTOVER_FAULTS_TABLE for scripts/faults.sh; lost and other bytes must
 * be 0. argv[1] picks the set: "fast" (the default), "slow" (S3 slow, PostgreSQL down 30 s:
 * CTest runs it in the optimised build only) or "all".
 *
 * The fast set's outages last a few seconds (PostgreSQL at least 3 s, S3 until copies were retried
 * three times; the slow set has the 30 s of the issue): the behaviour is the same (uploads recorded
 * or journaled, retries bounded by the ceiling) and the suite stays fast. Leases are 5 s
 * (workers.lease_s): a copy whose outcome could not be recorded (database away, process
 * killed) is taken up again after its lease, 300 s by default. Every wait is a condition
 * polled with a deadline. CUTOVER_TEST_FILTER=<scenario> runs one scenario; with
 * CUTOVER_TEST_KEEP set, the temporary directory (cutover's and the services' logs) is kept.
 */
#include "core/core.h"
#include "storage/journal.h"
#include "storage/s3.h"
#include "tests/faults/relay.h"
#include "tests/s3env.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_BACKOFF_S 2 /* workers.max_backoff_s of these tests */

static char *G_dir;      /* this test's temporary directory */
static char *G_services; /* the private services' directory */
static struct test_s3 G_s3env;
static s3_client *G_s3;

/* One cutover process with its database, spool and config. */
struct inst {
    char tag[32];
    char org[64];
    char *db_url, *dir, *spool, *config, *log;
    int port, admin;
    pid_t pid;
    PGconn *pg;
    bool mounted;
    /* NULL: the private services' own; else a relay before them, or nothing (app down) */
    char *s3_endpoint, *legacy_base, *upstream;
    uint64_t t0; /* when the scenario started */
};

struct doc {
    char key[160];
    unsigned char *data;
    size_t len;
    char sha256[65];
    long status; /* the client's answer; 0: none */
};

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- the private services ------------------------------------------------------------------ */

static int services_rc(const char *sub)
{
    char *out = NULL;
    char *cmd = xasprintf("'%s/tests/harness/services.sh' %s '%s'",
                          testenv_var("CUTOVER_SOURCE_DIR"), sub, G_services);
    int rc = test_run(cmd, &out);
    if (rc != 0)
        fprintf(stderr, "services.sh %s: exit %d: %s\n", sub, rc, out ? out : "");
    free(out);
    free(cmd);
    return rc;
}

static void services(const char *sub)
{
    if (services_rc(sub) != 0)
        fail_msg("services.sh %s failed", sub);
}

static int group_setup(void **state)
{
    cut_err err = CUT_ERR_INIT;
    char *env;
    (void)state;

    G_dir = test_tmpdir("dwfaults");
    G_services = xasprintf("%s/services", G_dir);
    services("start");
    /* every testenv() from here on reads the private instance */
    env = xasprintf("%s/env", G_services);
    setenv("CUTOVER_TEST_ENV", env, 1);
    free(env);

    test_s3_open(&G_s3env);
    G_s3 = G_s3env.c;
    if (!G_s3)
        fail_msg("s3 client: %s", err.msg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    test_s3_close(&G_s3env);
    services("stop");
    if (getenv("CUTOVER_TEST_KEEP"))
        fprintf(stderr, "kept %s (CUTOVER_TEST_KEEP)\n", G_dir);
    else
        test_rmtree(G_dir);
    free(G_services);
    free(G_dir);
    return 0;
}

static void inst_free(struct inst *I);
/* The scenario's instance, freed by scenario_teardown() even when the scenario failed. */
static struct inst *G_cur;

/* After each scenario, passed or not: its cutover stopped, and PostgreSQL and s3rver up
 * again, so that one failure does not fail the scenarios after it. */
static int scenario_teardown(void **state)
{
    int rc = 0;
    char *s3 = xasprintf("%s/", testenv("S3_ENDPOINT"));
    (void)state;
    if (G_cur)
        inst_free(G_cur);
    if (PQping(testenv("PG_URL")) != PQPING_OK && services_rc("pg-start") != 0)
        rc = -1;
    if (!test_wait_http(s3, 200) && services_rc("s3-start") != 0)
        rc = -1;
    free(s3);
    return rc;
}

/* ---- one cutover ---------------------------------------------------------------------------- */

/* A new instance (inst_free()) with a fresh database and its own directories, not started. */
static struct inst *inst_new(const char *tag)
{
    struct inst *I = xcalloc(1, sizeof(*I));
    G_cur = I;
    snprintf(I->tag, sizeof(I->tag), "%s", tag);
    snprintf(I->org, sizeof(I->org), "%s-%ld", tag, (long)getpid());
    I->db_url = test_fresh_db(tag);
    I->dir = xasprintf("%s/%s", G_dir, tag);
    mkdir(I->dir, 0700);
    I->spool = xasprintf("%s/spool", I->dir);
    mkdir(I->spool, 0700);
    I->config = xasprintf("%s/cutover.json", I->dir);
    I->log = xasprintf("%s/cutover.log", I->dir);
    I->port = test_free_port();
    I->admin = test_free_port();
    I->t0 = now_us();
    return I;
}

/* Writes the config, migrates the database and starts cutover. */
static void inst_configure(struct inst *I)
{
    char *cmd, *out = NULL;
    /* short leases: a copy whose outcome could not be recorded (the database away, the
     * process killed) is taken up again within seconds */
    char *json = xasprintf(
        "{\"listen\": \"127.0.0.1:%d\", \"upstream\": \"%s\",\n"
        " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"token\": \"t0ken-for-tests\"},\n"
        " \"database_url\": \"%s\", \"spool_dir\": \"%s\",\n"
        " \"log\": {\"level\": \"info\", \"access\": false},\n"
        " \"s3\": {\"endpoint\": \"%s\", \"region\": \"%s\", \"bucket\": \"%s\",\n"
        "        \"path_style\": true, \"access_key_id\": \"%s\", \"secret_access_key\": \"%s\",\n"
        "        \"max_attempts\": 2, \"retry_base_ms\": 50, \"retry_max_total_ms\": 2000,\n"
        "        \"timeout_s\": 20},\n"
        " \"legacy\": {\"raw_url\": \"%s/legacy/raw/{key}\"},\n"
        " \"routes\": [\n"
        "  {\"name\": \"upload\", \"kind\": \"upload\", \"path\": \"/documents\",\n"
        "   \"key\": {\"response_json\": \"/storage_key\"},\n"
        "   \"vars\": {\"org\": {\"header\": \"X-Org-Id\"}},\n"
        "   \"s3_key\": \"faults/{key}\"}],\n"
        " \"flags\": {\"dual_write\": true},\n"
        " \"workers\": {\"mirror\": 4, \"lease_s\": 5, \"max_attempts\": 200,\n"
        "             \"max_backoff_s\": %d}}\n",
        I->port, I->upstream ? I->upstream : testenv("APP_URL"), I->admin, I->db_url, I->spool,
        I->s3_endpoint ? I->s3_endpoint : testenv("S3_ENDPOINT"), testenv("S3_REGION"),
        testenv("S3_BUCKET"), testenv("S3_ACCESS_KEY"), testenv("S3_SECRET_KEY"),
        I->legacy_base ? I->legacy_base : testenv("APP_URL"), MAX_BACKOFF_S);
    assert_true(test_write_file(I->config, json, strlen(json)));
    free(json);
    cmd = xasprintf("'%s' migrate-db --config '%s'", testenv_var("CUTOVER_BIN"), I->config);
    if (test_run(cmd, &out) != 0)
        fail_msg("migrate-db: %s", out);
    free(cmd);
    free(out);
}

static void inst_start(struct inst *I)
{
    char *argv[] = {(char *)testenv_var("CUTOVER_BIN"), "proxy", "--config", I->config, NULL};
    char *ready = xasprintf("http://127.0.0.1:%d/readyz", I->admin);
    I->pid = test_spawn(argv, NULL, I->log);
    if (!test_wait_http(ready, 30000))
        fail_msg("cutover did not start (log %s)", I->log);
    free(ready);
}

static void inst_kill(struct inst *I)
{
    test_stop(I->pid, SIGKILL, 10000);
    I->pid = 0;
}

/* SIGTERM: it must exit 0 (in-flight work drained). */
static void inst_stop(struct inst *I)
{
    int st = test_stop(I->pid, SIGTERM, 30000);
    I->pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char *log = test_read_file(I->log, NULL);
        fprintf(stderr, "cutover did not stop cleanly (status %d):\n%s\n", st, log ? log : "");
        free(log);
        fail_msg("cutover did not stop cleanly");
    }
}

static void inst_free(struct inst *I)
{
    if (I->pid)
        test_stop(I->pid, SIGKILL, 10000);
    PQfinish(I->pg);
    if (I->mounted) {
        char *cmd = xasprintf("umount '%s' || umount -l '%s'", I->spool, I->spool);
        test_run(cmd, NULL);
        free(cmd);
    }
    free(I->db_url);
    free(I->dir);
    free(I->spool);
    free(I->config);
    free(I->log);
    free(I->s3_endpoint);
    free(I->legacy_base);
    free(I->upstream);
    if (G_cur == I)
        G_cur = NULL;
    free(I);
}

/* A query on this instance's database, reconnecting after a restart of PostgreSQL. NULL
 * when the database does not answer. */
static PGresult *try_q(struct inst *I, const char *sql, int n, const char *const *params)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!I->pg || PQstatus(I->pg) != CONNECTION_OK) {
            PQfinish(I->pg);
            I->pg = PQconnectdb(I->db_url);
            if (PQstatus(I->pg) != CONNECTION_OK)
                continue;
        }
        PGresult *r = PQexecParams(I->pg, sql, n, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK)
            return r;
        PQclear(r);
    }
    return NULL;
}

static PGresult *q(struct inst *I, const char *sql, int n, const char *const *params)
{
    PGresult *r = try_q(I, sql, n, params);
    if (!r)
        fail_msg("%s: %s", sql, I->pg ? PQerrorMessage(I->pg) : "no connection");
    return r;
}

/* ---- documents and uploads ------------------------------------------------------------------ */

static void docs_make(struct inst *I, struct doc *docs, int n, size_t big_every, size_t big)
{
    for (int i = 0; i < n; i++) {
        struct doc *d = &docs[i];
        size_t len = big_every && i % (int)big_every == (int)big_every - 1
                         ? big + (size_t)i
                         : (size_t)(i * 7919 % 6000) + 1;
        snprintf(d->key, sizeof(d->key), "%s/doc %03d (é+%%).bin", I->org, i);
        d->data = xmalloc(len);
        for (size_t k = 0; k < len; k++)
            d->data[k] = (unsigned char)((k * 131 + (size_t)i * 7 + (unsigned char)I->tag[0]) >> 1);
        d->len = len;
        sha256_hex(d->data, len, d->sha256);
        d->status = 0;
    }
}

static void docs_free(struct doc *docs, int n)
{
    for (int i = 0; i < n; i++)
        free(docs[i].data);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* A raw upload of d through cutover, its key given by X-Storage-Key; the HTTP status (0: no
 * answer). */
static long upload(const struct inst *I, const struct doc *d)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    long status = 0;
    char *url = xasprintf("http://127.0.0.1:%d/documents?filename=f.bin", I->port);
    char *enc = curl_easy_escape(c, d->key, 0);
    char *hk = xasprintf("X-Storage-Key: %s", enc);
    char *ho = xasprintf("X-Org-Id: %s", I->org);

    h = curl_slist_append(h, hk);
    h = curl_slist_append(h, ho);
    h = curl_slist_append(h, "Content-Type: application/octet-stream");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, d->data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)d->len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_free(enc);
    curl_easy_cleanup(c);
    free(url);
    free(hk);
    free(ho);
    return status;
}

/* Uploads in a thread (or several): docs[i] for i = first, first + step, ... */
struct stream {
    struct inst *I;
    struct doc *docs;
    int n, nthreads;
    bool wait_on_fail; /* after an upload without an answer, wait for `restarts` to move */
    atomic_int started, done, restarts;
    pthread_t th[4];
    int first[4];
};

struct stream_arg {
    struct stream *s;
    int first;
};

static bool restarted_since(struct stream *s, int seen)
{
    for (int i = 0; i < 3000 && atomic_load(&s->restarts) == seen; i++)
        usleep(20000);
    return atomic_load(&s->restarts) != seen;
}

static void *stream_main(void *arg)
{
    struct stream_arg *a = arg;
    struct stream *s = a->s;
    for (int i = a->first; i < s->n; i += s->nthreads) {
        int seen = atomic_load(&s->restarts);
        atomic_fetch_add(&s->started, 1);
        s->docs[i].status = upload(s->I, &s->docs[i]);
        atomic_fetch_add(&s->done, 1);
        if (s->docs[i].status != 201 && s->wait_on_fail && !restarted_since(s, seen))
            break;
    }
    free(a);
    return NULL;
}

static void stream_start(struct stream *s, struct inst *I, struct doc *docs, int n, int nthreads,
                         bool wait_on_fail)
{
    memset(s, 0, sizeof(*s));
    s->I = I;
    s->docs = docs;
    s->n = n;
    s->nthreads = nthreads;
    s->wait_on_fail = wait_on_fail;
    for (int t = 0; t < nthreads; t++) {
        struct stream_arg *a = xmalloc(sizeof(*a));
        a->s = s;
        a->first = t;
        assert_int_equal(pthread_create(&s->th[t], NULL, stream_main, a), 0);
    }
}

static void stream_join(struct stream *s)
{
    for (int t = 0; t < s->nthreads; t++)
        pthread_join(s->th[t], NULL);
}

struct at_least {
    atomic_int *v;
    int want;
};

static bool reached(void *arg)
{
    struct at_least *a = arg;
    return atomic_load(a->v) >= a->want;
}

static void wait_done(struct stream *s, int want)
{
    struct at_least a = {&s->done, want};
    if (!test_wait_until(reached, &a, 120000))
        fail_msg("the uploads stalled at %d of %d", atomic_load(&s->done), want);
}

/* The latest acknowledged upload of key, else the latest upload of it; NULL: none. */
static struct doc *latest(struct doc *docs, int n, const char *key)
{
    struct doc *d = NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(docs[i].key, key) == 0 && (!d || docs[i].status == 201 || d->status != 201))
            d = &docs[i];
    return d;
}

/* ---- checks ------------------------------------------------------------------------------- */

struct verified_arg {
    struct inst *I;
    struct doc *docs;
    int n;
};

/* Every acknowledged document is verified, with the bytes of its key's latest upload. */
static bool acked_verified(void *arg)
{
    struct verified_arg *v = arg;
    const char *p[1] = {v->I->org};
    PGresult *r = try_q(v->I,
                        "SELECT storage_key, sha256 FROM cutover.documents "
                        "WHERE state = 'verified' AND vars->>'org' = $1",
                        1, p);
    bool all = r != NULL;
    for (int i = 0; all && i < v->n; i++) {
        const struct doc *d = latest(v->docs, v->n, v->docs[i].key);
        bool found = d->status != 201;
        for (int k = 0; !found && k < PQntuples(r); k++)
            found = strcmp(PQgetvalue(r, k, 0), d->key) == 0 &&
                    strcmp(PQgetvalue(r, k, 1), d->sha256) == 0;
        all = found;
    }
    PQclear(r);
    return all;
}

/* Prints the rows that are not verified, or not with their latest upload's bytes. */
static void dump_rows(struct inst *I, struct doc *docs, int n)
{
    const char *p[1] = {I->org};
    PGresult *r = try_q(I,
                        "SELECT storage_key, state, attempts, last_error, sha256, generation "
                        "FROM cutover.documents WHERE vars->>'org' = $1",
                        1, p);
    for (int i = 0; r && i < PQntuples(r); i++) {
        const struct doc *d = latest(docs, n, PQgetvalue(r, i, 0));
        bool ok = strcmp(PQgetvalue(r, i, 1), "verified") == 0 && d &&
                  strcmp(PQgetvalue(r, i, 4), d->sha256) == 0;
        if (!ok)
            fprintf(stderr, "%s: %s generation %s, attempts %s, sha256 %s (latest upload %s) %s\n",
                    PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 5),
                    PQgetvalue(r, i, 2), PQgetvalue(r, i, 4), d ? d->sha256 : "none",
                    PQgetvalue(r, i, 3));
    }
    for (int i = 0; r && i < n; i++) {
        bool found = false;
        for (int k = 0; k < PQntuples(r) && !found; k++)
            found = strcmp(PQgetvalue(r, k, 0), docs[i].key) == 0;
        if (!found)
            fprintf(stderr, "%s: no row (upload %d answered %ld)\n", docs[i].key, i,
                    docs[i].status);
    }
    PQclear(r);
}

/* Waits for every acknowledged document to be verified; the milliseconds it took. */
static uint64_t wait_verified(struct inst *I, struct doc *docs, int n, int timeout_ms)
{
    struct verified_arg v = {I, docs, n};
    uint64_t t0 = now_us();
    if (!test_wait_until(acked_verified, &v, timeout_ms)) {
        dump_rows(I, docs, n);
        fail_msg("not every acknowledged document was verified within %d ms (log %s)", timeout_ms,
                 I->log);
    }
    return (now_us() - t0) / 1000;
}

static int sink_buf(void *arg, const void *data, size_t n)
{
    return buf_append(arg, data, n) ? 0 : 1;
}

/* The bytes of S3's object for key, compared with d's. */
static void assert_s3_bytes(const char *s3_key, const struct doc *d)
{
    struct buf got;
    struct s3_result res;
    cut_err err = CUT_ERR_INIT;
    char sha[65];
    buf_init(&got, 0);
    if (s3_get(G_s3, s3_key, sink_buf, &got, &res, &err) != 0)
        fail_msg("GET %s: %s", s3_key, err.msg);
    sha256_hex(got.data ? got.data : "", got.len, sha);
    if (got.len != d->len || strcmp(sha, d->sha256) != 0)
        fail_msg("%s: S3 holds %zu bytes (sha256 %s), the upload had %zu (%s)", s3_key, got.len,
                 sha, d->len, d->sha256);
    buf_free(&got);
}

/* Every row of this instance is the upload of its key (none with other bytes, none unknown),
 * every acknowledged upload has one, and every verified row's object in S3 holds exactly the
 * upload's bytes. Returns the rows. */
static int check_rows(struct inst *I, struct doc *docs, int n)
{
    const char *p[1] = {I->org};
    PGresult *r = q(I,
                    "SELECT storage_key, state, sha256, size, s3_key FROM cutover.documents "
                    "WHERE vars->>'org' = $1 ORDER BY storage_key",
                    1, p);
    int rows = PQntuples(r);
    for (int k = 0; k < rows; k++) {
        const char *key = PQgetvalue(r, k, 0);
        struct doc *d = latest(docs, n, key);
        if (!d)
            fail_msg("a row for a key never uploaded: %s", key);
        if (strcmp(PQgetvalue(r, k, 1), "verified") != 0)
            continue; /* an unanswered upload may be recorded and still on its way */
        assert_string_equal(PQgetvalue(r, k, 2), d->sha256);
        assert_int_equal(atoll(PQgetvalue(r, k, 3)), (long long)d->len);
        char *want = xasprintf("faults/%s", d->key);
        assert_string_equal(PQgetvalue(r, k, 4), want);
        assert_s3_bytes(want, d);
        free(want);
    }
    for (int i = 0; i < n; i++) {
        bool found = false;
        for (int k = 0; k < rows && !found; k++)
            found = strcmp(PQgetvalue(r, k, 0), docs[i].key) == 0;
        if (docs[i].status == 201 && !found)
            fail_msg("acknowledged upload %d (%s) has no row", i, docs[i].key);
    }
    PQclear(r);
    return rows;
}

static char *journal_path(const struct inst *I, const char *name)
{
    return xasprintf("%s/%s", I->spool, name);
}

static bool count_record(void *arg, const void *payload, size_t n)
{
    (void)payload;
    (void)n;
    (*(uint64_t *)arg)++;
    return true;
}

/* Records waiting in the journal: journal.log and the file a failed replay left aside. */
static uint64_t journal_records(const struct inst *I)
{
    static const char *const names[] = {"journal.log", "journal.replay"};
    uint64_t n = 0;
    for (size_t i = 0; i < 2; i++) {
        char *path = journal_path(I, names[i]);
        cut_err err = CUT_ERR_INIT;
        if (!journal_read_file(path, 1ull << 30, count_record, &n, NULL, &err))
            fail_msg("%s", err.msg);
        free(path);
    }
    return n;
}

/* The journal replayed: journal.log empty (or absent), nothing left aside. */
static bool journal_empty(void *arg)
{
    const struct inst *I = arg;
    char *path = journal_path(I, "journal.log"), *aside = journal_path(I, "journal.replay");
    struct stat st;
    bool empty = (stat(path, &st) != 0 || st.st_size == 0) && access(aside, F_OK) != 0;
    free(path);
    free(aside);
    return empty;
}

static bool log_has(const struct inst *I, const char *text)
{
    char *log = test_read_file(I->log, NULL);
    bool has = log && strstr(log, text);
    free(log);
    return has;
}

static int acked(const struct doc *docs, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += docs[i].status == 201;
    return k;
}

/* ---- the fault table ----------------------------------------------------------------------- */

/* S3's object for s3_key holds exactly d's bytes. */
static bool s3_same_bytes(const char *s3_key, const struct doc *d)
{
    struct buf got;
    struct s3_result res;
    cut_err err = CUT_ERR_INIT;
    char sha[65];
    bool same;
    buf_init(&got, 0);
    if (s3_get(G_s3, s3_key, sink_buf, &got, &res, &err) != 0) {
        buf_free(&got);
        return false;
    }
    sha256_hex(got.data ? got.data : "", got.len, sha);
    same = got.len == d->len && strcmp(sha, d->sha256) == 0;
    buf_free(&got);
    return same;
}

struct tally {
    int acked, verified, failed, lost, wrong;
    char reason[96]; /* the first failed document's reason */
};

/* Counts the acknowledged documents (each key once: its latest acknowledged upload) by
 * outcome: verified with the client's bytes (the row's SHA-256 and S3's bytes, read back),
 * failed with a reason, or lost (neither); and every verified row whose bytes are not its
 * key's latest upload (wrong). NULL from try_q (the database away): everything lost. */
static void tally(struct inst *I, struct doc *docs, int n, struct tally *t)
{
    const char *p[1] = {I->org};
    PGresult *r = try_q(I,
                        "SELECT storage_key, state, sha256, coalesce(last_error, ''), s3_key "
                        "FROM cutover.documents WHERE vars->>'org' = $1",
                        1, p);
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < n; i++) {
        const struct doc *d = &docs[i];
        int k = -1;
        if (d->status < 200 || d->status > 299 || latest(docs, n, d->key) != d)
            continue;
        t->acked++;
        for (int j = 0; r && j < PQntuples(r) && k < 0; j++)
            if (strcmp(PQgetvalue(r, j, 0), d->key) == 0)
                k = j;
        if (k < 0) {
            t->lost++;
        } else if (strcmp(PQgetvalue(r, k, 1), "verified") == 0) {
            if (strcmp(PQgetvalue(r, k, 2), d->sha256) == 0 &&
                s3_same_bytes(PQgetvalue(r, k, 4), d))
                t->verified++;
            else
                t->wrong++;
        } else if (strcmp(PQgetvalue(r, k, 1), "failed") == 0 && PQgetvalue(r, k, 3)[0]) {
            if (t->failed++ == 0)
                snprintf(t->reason, sizeof(t->reason), "%s", PQgetvalue(r, k, 3));
        } else {
            t->lost++;
        }
    }
    /* verified rows of uploads never acknowledged, or of an older upload of their key */
    for (int j = 0; r && j < PQntuples(r); j++) {
        const struct doc *d = latest(docs, n, PQgetvalue(r, j, 0));
        if (strcmp(PQgetvalue(r, j, 1), "verified") == 0 &&
            (!d || strcmp(PQgetvalue(r, j, 2), d->sha256) != 0) &&
            (!d || d->status < 200 || d->status > 299))
            t->wrong++;
    }
    PQclear(r);
}

/* The scenario's line of the fault table: appended to $CUTOVER_FAULTS_TABLE (tab-separated:
 * fault, acknowledged, verified, failed, lost, verified with other bytes, seconds, first
 * reason) when set, and printed; then lost and wrong must be 0. */
static void table_row(struct inst *I, const char *fault, struct doc *docs, int n)
{
    struct tally t;
    const char *path = getenv("CUTOVER_FAULTS_TABLE");
    double secs = (double)(now_us() - I->t0) / 1e6;
    tally(I, docs, n, &t);
    for (char *c = t.reason; *c; c++)
        if (*c == '\t' || *c == '\n' || *c == '\r')
            *c = ' ';
    fprintf(stderr,
            "TABLE %s: acknowledged %d, verified %d, failed %d, lost %d, wrong bytes %d "
            "(%.1f s)%s%s\n",
            fault, t.acked, t.verified, t.failed, t.lost, t.wrong, secs,
            t.reason[0] ? "; failed: " : "", t.reason);
    if (path) {
        FILE *f = fopen(path, "a");
        if (f) {
            fprintf(f, "%s\t%d\t%d\t%d\t%d\t%d\t%.1f\t%s\n", fault, t.acked, t.verified, t.failed,
                    t.lost, t.wrong, secs, t.reason);
            fclose(f);
        }
    }
    if (t.lost || t.wrong)
        dump_rows(I, docs, n);
    assert_int_equal(t.lost, 0);
    assert_int_equal(t.wrong, 0);
}

/* Every acknowledged document is verified with its bytes, or failed with a reason. */
static bool settled(void *arg)
{
    struct verified_arg *v = arg;
    const char *p[1] = {v->I->org};
    PGresult *r = try_q(v->I,
                        "SELECT storage_key, sha256, state, coalesce(last_error, '') "
                        "FROM cutover.documents WHERE state IN ('verified', 'failed') "
                        "AND vars->>'org' = $1",
                        1, p);
    bool all = r != NULL;
    for (int i = 0; all && i < v->n; i++) {
        const struct doc *d = latest(v->docs, v->n, v->docs[i].key);
        bool found = d->status < 200 || d->status > 299;
        for (int k = 0; !found && k < PQntuples(r); k++)
            found = strcmp(PQgetvalue(r, k, 0), d->key) == 0 &&
                    (strcmp(PQgetvalue(r, k, 2), "failed") == 0
                         ? PQgetvalue(r, k, 3)[0] != '\0'
                         : strcmp(PQgetvalue(r, k, 1), d->sha256) == 0);
        all = found;
    }
    PQclear(r);
    return all;
}

static void wait_settled(struct inst *I, struct doc *docs, int n, int timeout_ms)
{
    struct verified_arg v = {I, docs, n};
    if (!test_wait_until(settled, &v, timeout_ms)) {
        dump_rows(I, docs, n);
        fail_msg("not every acknowledged document was verified or failed within %d ms (log %s)",
                 timeout_ms, I->log);
    }
}

/* ---- scenarios ---------------------------------------------------------------------------- */

#define PG_DOCS 36
#define PG_FIRST 24 /* uploads before PostgreSQL is back */

/* PostgreSQL stopped for at least outage_ms in the middle of a stream of uploads. */
static void postgres_outage(int outage_ms, const char *fault)
{
    struct inst *I;
    static struct doc docs[PG_DOCS];
    struct stream s;

    I = inst_new(outage_ms > 10000 ? "pgdown" : "pgout");
    inst_configure(I);
    inst_start(I);
    docs_make(I, docs, PG_DOCS, 12, 1u << 20);
    /* the first upload after PostgreSQL is back replaces one kept in the journal: the replay
     * must not put the older one over it */
    memcpy(docs[PG_FIRST].key, docs[PG_FIRST - 1].key, sizeof(docs[PG_FIRST].key));
    /* a stream of uploads, PostgreSQL stopped after the first 8 */
    stream_start(&s, I, docs, PG_FIRST, 1, false);
    wait_done(&s, 8);
    services("pg-stop");
    uint64_t t_stop = now_us();
    /* uploads started from here on find the database away */
    int s0 = atomic_load(&s.started);
    stream_join(&s);
    /* the outage lasts at least outage_ms: flags reloads, claims and journal replays fail
     * meanwhile */
    while (now_us() - t_stop < (uint64_t)outage_ms * 1000ull)
        usleep(20000);
    uint64_t journaled = journal_records(I);
    if (journaled < (uint64_t)(PG_FIRST - s0))
        fail_msg("%d uploads answered while PostgreSQL was away, %llu records in the journal",
                 PG_FIRST - s0, (unsigned long long)journaled);
    /* PostgreSQL back; the stream goes on while the journal is replayed */
    services("pg-start");
    stream_start(&s, I, docs + PG_FIRST, PG_DOCS - PG_FIRST, 1, false);
    stream_join(&s);
    for (int i = 0; i < PG_DOCS; i++)
        if (docs[i].status != 201)
            fail_msg("upload %d got HTTP %ld", i, docs[i].status);
    uint64_t ms = wait_verified(I, docs, PG_DOCS, 60000);
    if (!test_wait_until(journal_empty, I, 20000))
        fail_msg("the journal was not emptied after the replay");
    assert_true(log_has(I, "records replayed into the database"));
    assert_int_equal(check_rows(I, docs, PG_DOCS), PG_DOCS - 1);
    fprintf(stderr,
            "postgres outage: %llu records journaled, all verified %llu ms after the "
            "restart\n",
            (unsigned long long)journaled, (unsigned long long)ms);
    table_row(I, fault, docs, PG_DOCS);
    inst_stop(I);
    docs_free(docs, PG_DOCS);
    inst_free(I);
}

static void test_postgres_outage(void **state)
{
    (void)state;
    postgres_outage(3000, "PostgreSQL down 3 s");
}

/* the 30 s (the slow set) */
static void test_postgres_down_30s(void **state)
{
    (void)state;
    postgres_outage(30000, "PostgreSQL down 30 s");
}

#define S3_DOCS 30

/* Some document was retried at least `want` times. */
struct retried_arg {
    struct inst *I;
    int want;
};

static bool retried(void *arg)
{
    struct retried_arg *a = arg;
    char w[16];
    const char *p[2] = {a->I->org, w};
    snprintf(w, sizeof(w), "%d", a->want);
    PGresult *r = try_q(a->I,
                        "SELECT count(*) FROM cutover.documents WHERE vars->>'org' = $1 "
                        "AND attempts >= $2::int",
                        2, p);
    bool yes = r && atol(PQgetvalue(r, 0, 0)) > 0;
    PQclear(r);
    return yes;
}

static void test_s3_outage(void **state)
{
    struct inst *I;
    struct doc docs[S3_DOCS];
    struct stream s;
    struct retried_arg ra;
    (void)state;

    I = inst_new("s3out");
    inst_configure(I);
    inst_start(I);
    docs_make(I, docs, S3_DOCS, 10, 512u << 10);
    stream_start(&s, I, docs, S3_DOCS, 1, false);
    wait_done(&s, 6);
    services("s3-stop");
    wait_done(&s, 24);
    /* retried past the point where doubling alone (1 s, 2 s, 4 s...) would exceed the
     * ceiling of 2 s */
    ra.I = I;
    ra.want = 3;
    if (!test_wait_until(retried, &ra, 60000)) {
        dump_rows(I, docs, S3_DOCS);
        fail_msg("no copy was retried 3 times while S3 was away");
    }
    {
        const char *p[1] = {I->org};
        PGresult *r = q(I,
                        "SELECT coalesce(max(extract(epoch FROM next_attempt_at - updated_at)), 0),"
                        " count(*) FILTER (WHERE state = 'failed')"
                        " FROM cutover.documents WHERE vars->>'org' = $1 AND attempts > 0",
                        1, p);
        double longest = atof(PQgetvalue(r, 0, 0));
        if (longest > MAX_BACKOFF_S + 0.5)
            fail_msg("a retry waits %.1f s, over workers.max_backoff_s = %d", longest,
                     MAX_BACKOFF_S);
        assert_string_equal(PQgetvalue(r, 0, 1), "0");
        PQclear(r);
    }
    services("s3-start");
    stream_join(&s);
    for (int i = 0; i < S3_DOCS; i++)
        if (docs[i].status != 201)
            fail_msg("upload %d got HTTP %ld", i, docs[i].status);
    /* the bound: all verified within 30 s after S3 is back */
    uint64_t ms = wait_verified(I, docs, S3_DOCS, 30000);
    assert_int_equal(check_rows(I, docs, S3_DOCS), S3_DOCS);
    fprintf(stderr, "s3 outage: all verified %llu ms after S3 was back\n", (unsigned long long)ms);
    table_row(I, "S3 down (s3rver killed)", docs, S3_DOCS);
    inst_stop(I);
    docs_free(docs, S3_DOCS);
    inst_free(I);
}

#define KILL_DOCS 40

static void test_sigkill_restart(void **state)
{
    struct inst *I;
    static struct doc docs[KILL_DOCS];
    struct stream s;
    (void)state;

    I = inst_new("kill");
    inst_configure(I);
    inst_start(I);
    docs_make(I, docs, KILL_DOCS, 8, 2u << 20);
    stream_start(&s, I, docs, KILL_DOCS, 2, true);
    wait_done(&s, 12);
    inst_kill(I);
    /* what an upload cut by the kill leaves in the spool: removed at the next start */
    char *stray = xasprintf("%s/000000000000000000000000.part", I->spool);
    assert_true(test_write_file(stray, "cut by the kill", 15));
    inst_start(I);
    assert_int_equal(access(stray, F_OK), -1);
    free(stray);
    atomic_fetch_add(&s.restarts, 1);
    stream_join(&s);
    int n = acked(docs, KILL_DOCS);
    /* each stream loses at most the upload in flight at the kill, or the next one */
    if (n < KILL_DOCS - 2)
        fail_msg("only %d of %d uploads were answered", n, KILL_DOCS);
    uint64_t ms = wait_verified(I, docs, KILL_DOCS, 60000);
    int rows = check_rows(I, docs, KILL_DOCS);
    assert_true(rows >= n);
    fprintf(stderr,
            "sigkill: %d of %d answered, %d recorded, all verified %llu ms after the "
            "restart\n",
            n, KILL_DOCS, rows, (unsigned long long)ms);
    table_row(I, "cutover SIGKILLed during uploads", docs, KILL_DOCS);
    inst_stop(I);
    docs_free(docs, KILL_DOCS);
    inst_free(I);
}

#define JOURNAL_DOCS 8

static void test_sigkill_while_journaling(void **state)
{
    struct inst *I;
    static struct doc docs[JOURNAL_DOCS];
    static const char torn[] = "{\"storage_key\":\"torn/never-acknowledged\",\"s3_key\":\"x\"}";
    static const char nokey[] = "{\"s3_key\":\"faults/no-key\"}";
    static const char poison[] = "{\"storage_key\":\"poison\",\"s3_key\":\"faults/poison\","
                                 "\"vars\":\"{not json\"}";
    unsigned char rec[JOURNAL_HEADER + 256];
    (void)state;

    I = inst_new("journal");
    inst_configure(I);
    inst_start(I);
    docs_make(I, docs, JOURNAL_DOCS, 0, 0);
    services("pg-stop");
    for (int i = 0; i < JOURNAL_DOCS; i++) {
        docs[i].status = upload(I, &docs[i]);
        if (docs[i].status != 201)
            fail_msg("upload %d with PostgreSQL away: HTTP %ld", i, docs[i].status);
    }
    assert_int_equal(journal_records(I), JOURNAL_DOCS);
    inst_kill(I);
    {
        char *path = journal_path(I, "journal.log");
        int fd = open(path, O_WRONLY | O_APPEND);
        size_t len;
        assert_true(fd >= 0);
        /* records the database cannot take (no key; vars that are not JSON) must not hold
         * back the others */
        len = journal_encode(nokey, sizeof(nokey) - 1, rec);
        assert_int_equal(write(fd, rec, len), (ssize_t)len);
        len = journal_encode(poison, sizeof(poison) - 1, rec);
        assert_int_equal(write(fd, rec, len), (ssize_t)len);
        /* what a kill in the middle of an append leaves: the start of a record */
        len = journal_encode(torn, sizeof(torn) - 1, rec);
        assert_int_equal(write(fd, rec, len / 2), (ssize_t)(len / 2));
        close(fd);
        free(path);
    }
    services("pg-start");
    inst_start(I);
    uint64_t ms = wait_verified(I, docs, JOURNAL_DOCS, 60000);
    if (!test_wait_until(journal_empty, I, 20000))
        fail_msg("the journal was not emptied after the replay");
    assert_true(log_has(I, "torn tail"));
    assert_true(log_has(I, "poison: NOT RECORDED: the database refuses its journal record"));
    assert_int_equal(check_rows(I, docs, JOURNAL_DOCS), JOURNAL_DOCS);
    fprintf(stderr, "journal: %d records replayed at start, all verified within %llu ms\n",
            JOURNAL_DOCS, (unsigned long long)ms);
    table_row(I, "cutover SIGKILLed while journaling", docs, JOURNAL_DOCS);
    inst_stop(I);
    docs_free(docs, JOURNAL_DOCS);
    inst_free(I);
}

#define FULL_DOCS 6

static void test_spool_disk_full(void **state)
{
    struct inst *I;
    static struct doc docs[FULL_DOCS];
    char *cmd, *out = NULL, *filler;
    (void)state;

    I = inst_new("diskfull");
    cmd = xasprintf("mount -t tmpfs -o size=256k,mode=0700 tmpfs '%s'", I->spool);
    if (test_run(cmd, &out) != 0) {
        fprintf(stderr,
                "SKIPPED: the spool disk-full test needs to mount a tmpfs (root with "
                "CAP_SYS_ADMIN): %s\n",
                out ? out : "");
        free(out);
        free(cmd);
        inst_free(I);
        skip();
        return;
    }
    free(out);
    free(cmd);
    I->mounted = true;
    inst_configure(I);
    inst_start(I);
    /* fill the disk up (journal.log is already there) */
    filler = xasprintf("%s/filler", I->spool);
    {
        static char block[4096];
        int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ssize_t w;
        assert_true(fd >= 0);
        memset(block, 'z', sizeof(block));
        while ((w = write(fd, block, sizeof(block))) > 0)
            ;
        assert_int_equal(errno, ENOSPC);
        close(fd);
    }
    docs_make(I, docs, FULL_DOCS, 2, 48u << 10);
    for (int i = 0; i < FULL_DOCS; i++) {
        docs[i].status = upload(I, &docs[i]);
        if (docs[i].status != 201)
            fail_msg("upload %d with the spool disk full: HTTP %ld", i, docs[i].status);
    }
    {
        const char *p[1] = {I->org};
        PGresult *r = q(I,
                        "SELECT count(*) FROM cutover.documents WHERE vars->>'org' = $1 "
                        "AND spool_path IS NULL",
                        1, p);
        /* recorded before the answers: every one, and none with a spool file */
        assert_int_equal(atoi(PQgetvalue(r, 0, 0)), FULL_DOCS);
        PQclear(r);
    }
    uint64_t ms = wait_verified(I, docs, FULL_DOCS, 60000);
    assert_int_equal(check_rows(I, docs, FULL_DOCS), FULL_DOCS);
    assert_true(log_has(I, "recorded for a copy from the legacy store"));
    fprintf(stderr, "disk full: %d uploads copied from the legacy store, verified within %llu ms\n",
            FULL_DOCS, (unsigned long long)ms);
    table_row(I, "spool disk full (256 KiB tmpfs)", docs, FULL_DOCS);
    inst_stop(I);
    unlink(filler);
    free(filler);
    docs_free(docs, FULL_DOCS);
    inst_free(I);
}

/* ---- faults injected by a relay, the database restarted, the app down --------------------- */

static int url_port(const char *url)
{
    const char *c = strrchr(url, ':');
    return c ? atoi(c + 1) : 0;
}

/* A relay before the private s3rver; the instance's S3 endpoint is the relay. */
static relay *s3_relay(struct inst *I)
{
    relay *r = relay_start(url_port(testenv("S3_ENDPOINT")));
    I->s3_endpoint = xasprintf("http://127.0.0.1:%d", relay_port(r));
    return r;
}

#define ERR_DOCS 24

/* S3 answering 503 SlowDown or 500 InternalError to every third request. */
static void test_s3_errors(void **state)
{
    struct inst *I;
    static struct doc docs[ERR_DOCS];
    struct stream s;
    relay *r;
    (void)state;

    I = inst_new("s3err");
    r = s3_relay(I);
    relay_set(r, RELAY_ERRORS, 3);
    inst_configure(I);
    inst_start(I);
    docs_make(I, docs, ERR_DOCS, 8, 384u << 10);
    stream_start(&s, I, docs, ERR_DOCS, 2, false);
    stream_join(&s);
    for (int i = 0; i < ERR_DOCS; i++)
        if (docs[i].status != 201)
            fail_msg("upload %d got HTTP %ld", i, docs[i].status);
    wait_settled(I, docs, ERR_DOCS, 60000);
    if (relay_refused(r) < 3)
        fail_msg("the relay refused only %d requests", relay_refused(r));
    fprintf(stderr, "s3 errors: %d of %d S3 requests refused\n", relay_refused(r),
            relay_requests(r));
    table_row(I, "S3 answers 503/500 to 1 request in 3", docs, ERR_DOCS);
    inst_stop(I);
    relay_stop(r);
    docs_free(docs, ERR_DOCS);
    inst_free(I);
}

#define SLOW_DOCS 8

/* Every S3 request delayed 2 s (the slow set). */
static void test_s3_slow(void **state)
{
    struct inst *I;
    static struct doc docs[SLOW_DOCS];
    relay *r;
    (void)state;

    I = inst_new("s3slow");
    r = s3_relay(I);
    relay_set(r, RELAY_DELAY, 2000);
    inst_configure(I);
    inst_start(I);
    docs_make(I, docs, SLOW_DOCS, 4, 256u << 10);
    for (int i = 0; i < SLOW_DOCS; i++) {
        docs[i].status = upload(I, &docs[i]);
        if (docs[i].status != 201)
            fail_msg("upload %d with S3 slow: HTTP %ld", i, docs[i].status);
    }
    wait_settled(I, docs, SLOW_DOCS, 90000);
    table_row(I, "S3 slow (2 s per request)", docs, SLOW_DOCS);
    inst_stop(I);
    relay_stop(r);
    docs_free(docs, SLOW_DOCS);
    inst_free(I);
}

#define RESTART_DOCS 30

/* PostgreSQL restarted (stopped at once, started again) in the middle of a stream. */
static void test_postgres_restart(void **state)
{
    struct inst *I;
    static struct doc docs[RESTART_DOCS];
    struct stream s;
    (void)state;

    I = inst_new("pgrestart");
    inst_configure(I);
    inst_start(I);
    docs_make(I, docs, RESTART_DOCS, 10, 512u << 10);
    stream_start(&s, I, docs, RESTART_DOCS, 2, false);
    wait_done(&s, 8);
    services("pg-stop");
    services("pg-start");
    stream_join(&s);
    for (int i = 0; i < RESTART_DOCS; i++)
        if (docs[i].status != 201)
            fail_msg("upload %d got HTTP %ld", i, docs[i].status);
    wait_settled(I, docs, RESTART_DOCS, 60000);
    if (!test_wait_until(journal_empty, I, 20000))
        fail_msg("the journal was not emptied after the restart");
    table_row(I, "PostgreSQL restarted", docs, RESTART_DOCS);
    inst_stop(I);
    docs_free(docs, RESTART_DOCS);
    inst_free(I);
}

#define LEG_DOCS 10

static bool spool_path_of(struct inst *I, const char *key, char *out, size_t n)
{
    const char *p[1] = {key};
    PGresult *r = q(I,
                    "SELECT coalesce(spool_path, '') FROM cutover.documents "
                    "WHERE storage_key = $1",
                    1, p);
    bool ok = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0];
    if (ok)
        snprintf(out, n, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return ok;
}

struct dropped_arg {
    relay *r;
    int want;
};

static bool relay_dropped_enough(void *arg)
{
    struct dropped_arg *a = arg;
    return relay_dropped(a->r) >= a->want;
}

/* The legacy store down while the mirror needs it: the spool files are gone (removed while S3
 * was away), so each copy must read the legacy store's raw original. Once it is back, every
 * document is verified, but one whose original the legacy store no longer has: that one is
 * failed, with the reason. */
static void test_legacy_down(void **state)
{
    struct inst *I;
    static struct doc docs[LEG_DOCS];
    relay *rs3, *rleg;
    struct dropped_arg da;
    (void)state;

    I = inst_new("legacy");
    rs3 = s3_relay(I);
    rleg = relay_start(url_port(testenv("APP_URL")));
    I->legacy_base = xasprintf("http://127.0.0.1:%d", relay_port(rleg));
    relay_set(rs3, RELAY_DOWN, 0);
    inst_configure(I);
    inst_start(I);
    docs_make(I, docs, LEG_DOCS, 5, 300u << 10);
    for (int i = 0; i < LEG_DOCS; i++) {
        docs[i].status = upload(I, &docs[i]);
        if (docs[i].status != 201)
            fail_msg("upload %d: HTTP %ld", i, docs[i].status);
    }
    /* the spool files go (recorded before the answers: every row names its file) */
    for (int i = 0; i < LEG_DOCS; i++) {
        char path[1024];
        if (!spool_path_of(I, docs[i].key, path, sizeof(path)))
            fail_msg("%s: no spool path recorded", docs[i].key);
        if (unlink(path) != 0 && errno != ENOENT)
            fail_msg("unlink %s: %s", path, strerror(errno));
    }
    /* one original removed from the legacy store itself (not through cutover) */
    {
        CURL *c = curl_easy_init();
        char *enc = curl_easy_escape(c, docs[0].key, 0);
        char *url = xasprintf("%s/documents/%s", testenv("APP_URL"), enc);
        struct test_http h;
        assert_int_equal(test_http("DELETE", url, NULL, NULL, 0, &h), 0);
        assert_int_equal(h.status, 204);
        test_http_free(&h);
        free(url);
        curl_free(enc);
        curl_easy_cleanup(c);
    }
    /* S3 back, the legacy store down: copies are tried and refused */
    relay_set(rleg, RELAY_DOWN, 0);
    relay_set(rs3, RELAY_PASS, 0);
    da.r = rleg;
    da.want = LEG_DOCS / 2;
    if (!test_wait_until(relay_dropped_enough, &da, 60000))
        fail_msg("the mirror tried the legacy store only %d times", relay_dropped(rleg));
    /* (a copy that had its spool file open before the unlink may have landed meanwhile, with
     * the right bytes: the table checks them) */
    relay_set(rleg, RELAY_PASS, 0);
    wait_settled(I, docs, LEG_DOCS, 60000);
    {
        const char *p[1] = {docs[0].key};
        PGresult *r = q(I, "SELECT state FROM cutover.documents WHERE storage_key = $1", 1, p);
        assert_string_equal(PQgetvalue(r, 0, 0), "failed");
        PQclear(r);
    }
    table_row(I, "legacy store down, spool files gone", docs, LEG_DOCS);
    inst_stop(I);
    relay_stop(rs3);
    relay_stop(rleg);
    docs_free(docs, LEG_DOCS);
    inst_free(I);
}

#define APP_DOCS 5

static bool spool_has_data(const struct inst *I)
{
    char *cmd = xasprintf("find '%s' -type f ! -name 'journal.*' | grep -q .", I->spool);
    bool has = test_run(cmd, NULL) == 0;
    free(cmd);
    return has;
}

/* The app down: every client gets 502, nothing is recorded, nothing left in the spool. */
static void test_app_down(void **state)
{
    struct inst *I;
    static struct doc docs[APP_DOCS];
    (void)state;

    I = inst_new("appdown");
    I->upstream = xasprintf("http://127.0.0.1:%d", test_free_port()); /* nothing listens */
    inst_configure(I);
    inst_start(I);
    docs_make(I, docs, APP_DOCS, 0, 0);
    for (int i = 0; i < APP_DOCS; i++) {
        docs[i].status = upload(I, &docs[i]);
        assert_int_equal(docs[i].status, 502);
    }
    {
        const char *p[1] = {I->org};
        PGresult *r = q(I, "SELECT count(*) FROM cutover.documents WHERE vars->>'org' = $1", 1, p);
        assert_string_equal(PQgetvalue(r, 0, 0), "0");
        PQclear(r);
    }
    assert_false(spool_has_data(I));
    table_row(I, "app down (clients get 502)", docs, APP_DOCS);
    inst_stop(I);
    docs_free(docs, APP_DOCS);
    inst_free(I);
}

/* argv[1]: "fast" (default: every scenario but the slow ones), "slow" (PostgreSQL down 30 s
 * and S3 slow, about a minute: CTest runs them in the optimised build only) or "all". */
int main(int argc, char **argv)
{
    const struct CMUnitTest fast[] = {
        cmocka_unit_test_teardown(test_postgres_outage, scenario_teardown),
        cmocka_unit_test_teardown(test_postgres_restart, scenario_teardown),
        cmocka_unit_test_teardown(test_s3_outage, scenario_teardown),
        cmocka_unit_test_teardown(test_s3_errors, scenario_teardown),
        cmocka_unit_test_teardown(test_legacy_down, scenario_teardown),
        cmocka_unit_test_teardown(test_app_down, scenario_teardown),
        cmocka_unit_test_teardown(test_sigkill_restart, scenario_teardown),
        cmocka_unit_test_teardown(test_sigkill_while_journaling, scenario_teardown),
        cmocka_unit_test_teardown(test_spool_disk_full, scenario_teardown),
    };
    const struct CMUnitTest slow[] = {
        cmocka_unit_test_teardown(test_s3_slow, scenario_teardown),
        cmocka_unit_test_teardown(test_postgres_down_30s, scenario_teardown),
    };
    const char *set = argc > 1 ? argv[1] : "fast";
    int rc = 0;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (getenv("CUTOVER_TEST_FILTER")) /* one scenario, e.g. "test_s3_outage" */
        cmocka_set_test_filter(getenv("CUTOVER_TEST_FILTER"));
    if (strcmp(set, "fast") == 0 || strcmp(set, "all") == 0)
        rc |= cmocka_run_group_tests_name("faults", fast, group_setup, group_teardown);
    if (strcmp(set, "slow") == 0 || strcmp(set, "all") == 0)
        rc |= cmocka_run_group_tests_name("slow faults", slow, group_setup, group_teardown);
    return rc;
}
