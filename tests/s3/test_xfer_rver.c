/*
 * test_xfer_rver: the transfer engine against s3rver (which checks SigV4 signatures; its
 * ETag is the MD5 of the body, for multipart uploads too).
 *   - 200 PUTs submitted at once to one engine allowed 200 in flight (buffers, spool files
 *     with their hashes known, spool files without): all complete on the one engine thread;
 *     then 200 HEADs in flight: each ETag is the MD5 the engine computed as the bytes passed,
 *     which is the MD5 of the source; a few objects are read back and their SHA-256
 *     (computed by the engine on the way) is the source's;
 *   - copies from a legacy store (a stand-in inside the test) to S3: a document with a
 *     Content-Length (one PUT), one sent chunked (no length), one of 12 MiB (a multipart
 *     upload of 5 MiB parts): the hashes are those of the source and S3 has the same bytes;
 *   - sources that change: a legacy answer shorter than announced, legacy bytes that do not
 *     match the hashes the caller expects, spool files whose bytes no longer match the
 *     hashes recorded when they were received (single PUT and multipart): each copy fails
 *     (CUT_ECONFLICT, or the legacy failure) and, except for the single PUT that s3rver
 *     stores without checking its Content-MD5, the object does not exist.
 */
#include "storage/legacy.h"
#include "storage/s3.h"
#include "storage/xfer.h"
#include "tests/s3/legacy_stub.h"
#include "tests/s3/xfer_gather.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NPUT 200
_Static_assert(NPUT <= GATHER_MAX, "one gather slot per transfer");
#define SECRET "legacy-secret-77"

struct env {
    struct cfg_s3 cfg;
    creds_provider *cp;
    s3_client *c;
    xfer_engine *e;
    char *tmp;
    char run[32]; /* a prefix so that reruns never see old objects */
};

static int setup(void **state)
{
    struct env *v = xcalloc(1, sizeof(*v));
    struct xfer_engine_opts eo = {.max_active = NPUT};
    cut_err err = CUT_ERR_INIT;

    v->cfg.endpoint = (char *)testenv("S3_ENDPOINT");
    v->cfg.region = (char *)testenv("S3_REGION");
    v->cfg.bucket = (char *)testenv("S3_BUCKET");
    v->cfg.path_style = true;
    v->cfg.access_key_id = (char *)testenv("S3_ACCESS_KEY");
    v->cfg.secret_access_key = (char *)testenv("S3_SECRET_KEY");
    v->cfg.multipart_threshold = 5ull << 20;
    v->cfg.part_size = 5ull << 20;
    v->cfg.max_attempts = 3;
    v->cfg.retry_base_ms = 50;
    v->cfg.retry_max_total_ms = 5000;
    v->cfg.timeout_s = 60;
    v->cp = creds_provider_new(&v->cfg, &err);
    assert_non_null(v->cp);
    v->c = s3_client_new(&v->cfg, v->cp, &err);
    assert_non_null(v->c);
    v->e = xfer_engine_new(v->c, &eo, &err);
    assert_non_null(v->e);
    v->tmp = test_tmpdir("xfer");
    snprintf(v->run, sizeof(v->run), "xfer-%ld-%lu", (long)getpid(), (unsigned long)now_us());
    *state = v;
    return 0;
}

static int teardown(void **state)
{
    struct env *v = *state;

    xfer_engine_free(v->e);
    s3_client_free(v->c);
    creds_provider_free(v->cp);
    test_rmtree(v->tmp);
    free(v->tmp);
    free(v);
    return 0;
}

static void test_200_puts_in_flight(void **state)
{
    struct env *v = *state;
    struct gather *g = gather_new(NPUT);
    struct slot_ref refs[NPUT];
    char *bodies[NPUT], *keys[NPUT], *paths[NPUT];
    size_t lens[NPUT];
    unsigned char md5[NPUT][16], sha[NPUT][32];
    cut_err err = CUT_ERR_INIT;
    struct xfer_stats st;

    for (int i = 0; i < NPUT; i++) {
        lens[i] = 2000 + (size_t)i * 311;
        bodies[i] = xmalloc(lens[i]);
        keys[i] = xasprintf("%s/put/doc %03d.bin", v->run, i);
        legacy_stub_bytes(keys[i], 0, bodies[i], lens[i]);
        hashes(bodies[i], lens[i], md5[i], sha[i]);
        paths[i] = xasprintf("%s/spool-%03d", v->tmp, i);
        assert_true(test_write_file(paths[i], bodies[i], lens[i]));
    }
    for (int i = 0; i < NPUT; i++) {
        struct xfer_src src = {.kind = XFER_SRC_BUFFER, .data = bodies[i], .len = lens[i]};
        struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = keys[i]};
        if (i % 3 != 0) { /* a spool file, its hashes known for one in two */
            src = (struct xfer_src){.kind = XFER_SRC_FILE, .path = paths[i]};
            if (i % 3 == 1) {
                src.md5 = md5[i];
                src.sha256 = sha[i];
            }
        }
        refs[i] = (struct slot_ref){g, i};
        if (xfer_copy(v->e, &src, &dst, gather_done, &refs[i], &err) != 0)
            fail_msg("submit %d: %s", i, err.msg);
    }
    assert_true(test_wait_until(gather_complete, g, 60000));
    for (int i = 0; i < NPUT; i++) {
        struct gather_slot *s = &g->s[i];
        if (s->code != CUT_OK)
            fail_msg("PUT %d: %s", i, s->msg);
        assert_true(s->o.hashed);
        assert_int_equal(s->o.bytes, lens[i]);
        assert_memory_equal(s->o.md5, md5[i], 16);
        assert_memory_equal(s->o.sha256, sha[i], 32);
        assert_true(pthread_equal(s->th, g->s[0].th));
    }
    assert_false(pthread_equal(g->s[0].th, pthread_self()));
    xfer_engine_stats(v->e, &st);
    printf("200 PUTs: at most %d in flight at once, %llu requests\n", st.active_peak,
           (unsigned long long)st.requests);

    /* 200 HEADs in flight: S3's ETag is the MD5 computed on the way */
    {
        unsigned char got_md5[NPUT][16];
        for (int i = 0; i < NPUT; i++)
            memcpy(got_md5[i], g->s[i].o.md5, 16);
        gather_reset(g, NPUT);
        for (int i = 0; i < NPUT; i++)
            if (xfer_head(v->e, keys[i], gather_done, &refs[i], &err) != 0)
                fail_msg("HEAD %d: %s", i, err.msg);
        assert_true(test_wait_until(gather_complete, g, 60000));
        for (int i = 0; i < NPUT; i++) {
            char want[33];
            hex(got_md5[i], 16, want);
            if (g->s[i].code != CUT_OK)
                fail_msg("HEAD %d: %s", i, g->s[i].msg);
            assert_string_equal(g->s[i].o.s3.etag, want);
            assert_int_equal(g->s[i].o.s3.content_length, (int64_t)lens[i]);
        }
    }
    /* a few read back: the SHA-256 computed as the bytes come is the source's */
    gather_reset(g, NPUT / 20);
    for (int i = 0; i < NPUT; i += 20) {
        struct xfer_src src = {.kind = XFER_SRC_S3, .key = keys[i]};
        struct xfer_sink dst = {.kind = XFER_SINK_CALLBACK};
        refs[i / 20] = (struct slot_ref){g, i / 20};
        if (xfer_copy(v->e, &src, &dst, gather_done, &refs[i / 20], &err) != 0)
            fail_msg("GET %d: %s", i, err.msg);
    }
    assert_true(test_wait_until(gather_complete, g, 60000));
    for (int i = 0; i < NPUT; i += 20) {
        struct gather_slot *s = &g->s[i / 20];
        if (s->code != CUT_OK)
            fail_msg("GET %d: %s", i, s->msg);
        assert_int_equal(s->o.bytes, lens[i]);
        assert_memory_equal(s->o.sha256, sha[i], 32);
    }
    for (int i = 0; i < NPUT; i++) {
        free(bodies[i]);
        free(keys[i]);
        free(paths[i]);
    }
    gather_free(g);
}

static legacy_store *stub_store(struct legacy_stub *ls)
{
    char *url = xasprintf("http://127.0.0.1:%d/raw/{key}", legacy_stub_port(ls));
    struct cfg_header h = {"X-Api-Key", SECRET};
    struct cfg_legacy cfg = {url, &h, 1, 10};
    struct legacy_opts o = {.max_bytes = 64 << 20, .max_attempts = 2};
    cut_err err = CUT_ERR_INIT;
    legacy_store *st = legacy_new(&cfg, &o, &err);

    assert_non_null(st);
    free(url);
    return st;
}

static void assert_missing(struct env *v, const char *key)
{
    struct s3_result r;
    cut_err err = CUT_ERR_INIT;

    if (s3_head(v->c, key, &r, &err) != -1 || r.status != 404)
        fail_msg("%s exists (HTTP %ld, %lld bytes)", key, r.status, (long long)r.content_length);
}

static void test_legacy_to_s3(void **state)
{
    struct env *v = *state;
    struct legacy_stub *ls = legacy_stub_start(SECRET);
    legacy_store *st = stub_store(ls);
    static const struct {
        const char *key;
        size_t size;
        int parts;
    } docs[] = {
        {"doc-100000", 100000, 0},
        {"chunked-300000", 300000, 0},
        {"doc-12000000", 12000000, 3},
    };

    for (size_t d = 0; d < sizeof(docs) / sizeof(docs[0]); d++) {
        char *dst_key = xasprintf("%s/legacy/%s", v->run, docs[d].key), etag[33];
        char *want = xmalloc(docs[d].size);
        unsigned char md5[16], sha[32], got_sha[32];
        unsigned int l;
        struct xfer_src src = {.kind = XFER_SRC_LEGACY, .key = docs[d].key, .legacy = st};
        struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = dst_key};
        struct xfer_outcome o;
        struct s3_result r;
        struct md_sink ms = {EVP_MD_CTX_new(), 0};
        cut_err err = CUT_ERR_INIT;

        legacy_stub_bytes(docs[d].key, 0, want, docs[d].size);
        hashes(want, docs[d].size, md5, sha);
        if (xfer_copy_wait(v->e, &src, &dst, &o, &err) != 0)
            fail_msg("copy %s: %s", docs[d].key, err.msg);
        assert_int_equal(o.legacy.fail, LEGACY_OK);
        assert_true(o.hashed);
        assert_int_equal(o.bytes, docs[d].size);
        assert_memory_equal(o.md5, md5, 16);
        assert_memory_equal(o.sha256, sha, 32);
        assert_int_equal(o.parts, docs[d].parts);
        /* S3 has those bytes */
        assert_int_equal(s3_head(v->c, dst_key, &r, &err), 0);
        hex(md5, 16, etag);
        assert_string_equal(r.etag, etag);
        assert_int_equal(r.content_length, (int64_t)docs[d].size);
        EVP_DigestInit_ex(ms.sha, EVP_sha256(), NULL);
        assert_int_equal(s3_get(v->c, dst_key, sha_sink, &ms, &r, &err), 0);
        EVP_DigestFinal_ex(ms.sha, got_sha, &l);
        assert_int_equal(ms.n, docs[d].size);
        assert_memory_equal(got_sha, sha, 32);
        EVP_MD_CTX_free(ms.sha);
        free(want);
        free(dst_key);
    }
    legacy_free(st);
    legacy_stub_free(ls);
}

static void test_changed_sources_fail(void **state)
{
    struct env *v = *state;
    struct legacy_stub *ls = legacy_stub_start(SECRET);
    legacy_store *st = stub_store(ls);
    unsigned char md5[16], sha[32];
    struct xfer_outcome o;
    cut_err err = CUT_ERR_INIT;

    /* the legacy store announces 64 KiB and sends 32 KiB */
    {
        char *k = xasprintf("%s/changed/short", v->run);
        struct xfer_src src = {.kind = XFER_SRC_LEGACY, .key = "short-1", .legacy = st};
        struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = k};
        assert_int_equal(xfer_copy_wait(v->e, &src, &dst, &o, &err), -1);
        assert_int_equal(err.code, CUT_EHTTP);
        assert_int_equal(o.legacy.fail, LEGACY_SHORT);
        assert_missing(v, k);
        free(k);
    }
    /* the legacy bytes are not those the caller expects */
    {
        char *k = xasprintf("%s/changed/legacy-bytes", v->run);
        char body[5000];
        struct xfer_src src = {.kind = XFER_SRC_LEGACY, .key = "doc-5000", .legacy = st};
        struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = k};
        legacy_stub_bytes("doc-5000", 0, body, sizeof(body));
        body[4000] ^= 1;
        hashes(body, sizeof(body), md5, sha);
        src.md5 = md5;
        src.sha256 = sha;
        err_clear(&err);
        assert_int_equal(xfer_copy_wait(v->e, &src, &dst, &o, &err), -1);
        assert_int_equal(err.code, CUT_ECONFLICT);
        assert_missing(v, k);
        free(k);
    }
    /* spool files changed after their hashes were recorded: one PUT, and multipart */
    for (int big = 0; big < 2; big++) {
        size_t n = big ? (11u << 20) : 70000;
        char *k = xasprintf("%s/changed/spool-%d", v->run, big);
        char *path = xasprintf("%s/changed-%d", v->tmp, big);
        char *body = xmalloc(n);
        struct xfer_src src = {.kind = XFER_SRC_FILE, .path = path, .md5 = md5, .sha256 = sha};
        struct xfer_sink dst = {.kind = XFER_SINK_S3, .key = k};
        legacy_stub_bytes(k, 0, body, n);
        hashes(body, n, md5, sha);
        body[n - 10] ^= 0x40; /* changed after it was hashed */
        assert_true(test_write_file(path, body, n));
        err_clear(&err);
        assert_int_equal(xfer_copy_wait(v->e, &src, &dst, &o, &err), -1);
        if (err.code != CUT_ECONFLICT)
            fail_msg("spool %d: %s", big, err.msg);
        /* The multipart upload is never completed. A single PUT carries the Content-MD5 of
         * the recorded hashes, which S3 refuses (BadDigest); s3rver does not check
         * Content-MD5 and keeps the object, so only the failure is asserted there. */
        if (big)
            assert_missing(v, k);
        free(body);
        free(path);
        free(k);
    }
    legacy_free(st);
    legacy_stub_free(ls);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_200_puts_in_flight),
        cmocka_unit_test(test_legacy_to_s3),
        cmocka_unit_test(test_changed_sources_fail),
    };

    return cmocka_run_group_tests_name("xfer_rver", tests, setup, teardown);
}
