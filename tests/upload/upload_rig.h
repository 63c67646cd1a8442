/*
 * What the journal-replay tests share: an upload module wired as `cutover proxy` wires it (a
 * spool, one recorder thread, the flags store, the journal) over a fresh migrated database, and
 * the store the replay writes with, as cmd_proxy keeps one.
 */
#ifndef CUTOVER_TESTS_UPLOAD_RIG_H
#define CUTOVER_TESTS_UPLOAD_RIG_H

#include "core/config.h"
#include "flags/flags.h"
#include "proxy/upload.h"
#include "storage/journal.h"
#include "storage/pgstore.h"
#include "storage/spool.h"
#include "storage/worker.h"
#include "tests/storage/pg_helpers.h"

struct rig {
    char *dir, *url;
    struct config *cfg;
    spool *sp;
    worker_pool *rec;
    flags_store *flags;
    journal *j;
    upload *u;
    pgstore *db; /* the replay's store, as cmd_proxy keeps one */
};

static inline void rig_open(struct rig *g, const char *tag)
{
    struct cfg_problems p = {0};
    cut_err err = CUT_ERR_INIT;
    char *text, *jpath;

    memset(g, 0, sizeof(*g));
    g->dir = test_tmpdir(tag);
    g->url = pgt_migrated_db(tag);
    text = xasprintf("{\"spool_dir\": \"%s\"}", g->dir);
    g->cfg = config_parse(text, "test", &p);
    free(text);
    assert_non_null(g->cfg);
    g->sp = spool_new(g->dir, &err);
    assert_non_null(g->sp);
    struct worker_opts wo = {.name = "recorder", .threads = 1, .queue_max = 4};
    g->rec = worker_pool_start(&wo, &err);
    assert_non_null(g->rec);
    g->flags = flags_store_new(g->url, g->cfg, &err);
    assert_non_null(g->flags);
    jpath = xasprintf("%s/journal.log", g->dir);
    g->j = journal_open(jpath, &err);
    free(jpath);
    assert_non_null(g->j);
    struct upload_deps d = {.spool = g->sp, .recorder = g->rec, .flags = g->flags, .journal = g->j};
    g->u = upload_new(g->cfg, &d, &err);
    assert_non_null(g->u);
    g->db = pgstore_open(g->url);
}

static inline void rig_close(struct rig *g)
{
    pgstore_free(g->db);
    upload_free(g->u);
    journal_close(g->j);
    flags_store_free(g->flags);
    worker_pool_stop(g->rec);
    worker_pool_free(g->rec);
    spool_free(g->sp);
    config_free(g->cfg);
    test_rmtree(g->dir);
    free(g->dir);
    free(g->url);
}

#endif
