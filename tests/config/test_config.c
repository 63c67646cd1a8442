/*
 * Configuration: every invalid configuration of tests/config/invalid.txt is refused with a
 * problem naming the expected field path; the INTERFACE.md example loads with the values it
 * says; defaults, env: indirection and the standard variables apply; `cutover config check`
 * exits 0 and 2 accordingly.
 */
#include "core/config.h"
#include "flags/flags.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *path_in_source(const char *rel)
{
    return xasprintf("%s/%s", testenv_var("CUTOVER_SOURCE_DIR"), rel);
}

/* As the command line loads a configuration: the flags' rules are checked explicitly. */
static struct config *parse(const char *text, struct cfg_problems *p)
{
    struct config *cfg = config_parse(text, "config", p);

    if (cfg != NULL)
        flags_check_config(cfg, p);
    if (cfg != NULL && p->n > 0) {
        config_free(cfg);
        cfg = NULL;
    }
    return cfg;
}

static bool has_problem(const struct cfg_problems *p, const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < p->n; i++)
        if (strncmp(p->lines[i], path, n) == 0 && strncmp(p->lines[i] + n, ": ", 2) == 0)
            return true;
    return false;
}

static void test_invalid_table(void **state)
{
    char *file = path_in_source("tests/config/invalid.txt");
    char *text = test_read_file(file, NULL);
    char *p, *next;
    int cases = 0, failures = 0;

    (void)state;
    assert_non_null(text);
    for (p = strstr(text, "\n### "); p; p = next) {
        char name[128] = "", expect[128] = "", envset[128] = "";
        char *body, *end;
        struct cfg_problems probs = {0};
        struct config *cfg;

        p += 5;
        next = strstr(p, "\n### ");
        end = next ? next : p + strlen(p);
        sscanf(p, "%127[^\n]", name);
        body = strchr(p, '\n') + 1;
        if (strncmp(body, "expect: ", 8) == 0) {
            sscanf(body + 8, "%127[^\n]", expect);
            body = strchr(body, '\n') + 1;
        }
        if (strncmp(body, "env: ", 5) == 0) {
            sscanf(body + 5, "%127[^\n]", envset);
            body = strchr(body, '\n') + 1;
        }
        char *json = xstrndup(body, (size_t)(end - body));
        char *eq = strchr(envset, '=');
        char *saved = NULL;
        if (eq) {
            *eq = '\0';
            saved = xstrdup(getenv(envset));
            if (eq[1])
                setenv(envset, eq + 1, 1);
            else
                unsetenv(envset);
        }
        cfg = parse(json, &probs);
        if (eq) {
            if (saved)
                setenv(envset, saved, 1);
            free(saved);
        }
        cases++;
        if (cfg != NULL || !has_problem(&probs, expect)) {
            failures++;
            fprintf(stderr, "case \"%s\": expected a problem at \"%s\", got:\n", name, expect);
            for (size_t i = 0; i < probs.n; i++)
                fprintf(stderr, "  %s\n", probs.lines[i]);
            if (cfg)
                fprintf(stderr, "  (accepted)\n");
        }
        config_free(cfg);
        cfg_problems_free(&probs);
        free(json);
    }
    fprintf(stderr, "%d invalid configurations checked\n", cases);
    assert_true(cases >= 25);
    assert_int_equal(failures, 0);
    free(text);
    free(file);
}

static void test_interface_example(void **state)
{
    char *file = path_in_source("tests/config/valid/interface.json");
    struct cfg_problems probs = {0};
    struct config *cfg;

    (void)state;
    setenv("LEGACY_AUTH", "Bearer legacy-secret", 1);
    setenv("APP_DATABASE_URL", "postgresql://app@db/app", 1);
    cfg = config_load(file, &probs);
    for (size_t i = 0; i < probs.n; i++)
        fprintf(stderr, "%s\n", probs.lines[i]);
    assert_non_null(cfg);
    assert_string_equal(cfg->listen_host, "0.0.0.0");
    assert_int_equal(cfg->listen_port, 8081);
    assert_int_equal(cfg->admin_port, 9090);
    assert_string_equal(cfg->s3.bucket, "documents");
    assert_int_equal(cfg->s3.sse, SSE_KMS);
    assert_int_equal(cfg->nroutes, 3);
    assert_int_equal(cfg->routes[0].kind, ROUTE_UPLOAD);
    assert_int_equal(cfg->routes[0].key.kind, SRC_RESPONSE_JSON);
    assert_string_equal(cfg->routes[0].key.name, "/storage_key");
    assert_int_equal(cfg->routes[0].nvars, 2);
    assert_int_equal(cfg->routes[1].kind, ROUTE_SIGNED_URL);
    assert_int_equal(cfg->routes[1].nsegments, 3);
    assert_true(cfg->routes[1].segments[1].is_var);
    assert_string_equal(cfg->routes[1].segments[1].text, "key");
    assert_int_equal(cfg->routes[1].key.kind, SRC_PATH); /* defaulted from {key} */
    assert_int_equal(cfg->routes[1].sticky.kind, SRC_HEADER);
    assert_string_equal(cfg->routes[2].method, "DELETE");
    assert_string_equal(cfg->legacy.headers[0].value, "Bearer legacy-secret");
    assert_int_equal(cfg->backfill.kind, BACKFILL_SQL);
    assert_string_equal(cfg->backfill.database_url, "postgresql://app@db/app");
    assert_int_equal(cfg->backfill.concurrency, 16);
    {
        /* the flags' values are reached through flags/ only, validated */
        cut_err err = CUT_ERR_INIT;
        flags_snapshot *fl = flags_snapshot_from_config(cfg, &err);
        assert_non_null(fl);
        assert_true(flags_dual_write(fl));
        assert_false(flags_snapshot_from_db(fl));
        assert_true(flags_shadow_read(fl) == 0.0);
        assert_true(flags_cutover_gate(fl) == 0.99999); /* the default */
        flags_snapshot_unref(fl);
    }
    config_free(cfg);
    free(file);
}

static void test_defaults_and_env(void **state)
{
    struct cfg_problems probs = {0};
    struct config *cfg;

    (void)state;
    setenv("DATABASE_URL", "postgresql://from-env@127.0.0.1/x", 1);
    setenv("CUTOVER_ADMIN_TOKEN", "tok", 1);
    cfg = parse("{}", &probs);
    assert_non_null(cfg);
    assert_string_equal(cfg->upstream, "http://127.0.0.1:8080");
    assert_int_equal(cfg->listen_port, 8081);
    assert_string_equal(cfg->admin_host, "127.0.0.1");
    assert_string_equal(cfg->database_url, "postgresql://from-env@127.0.0.1/x");
    assert_string_equal(cfg->admin_token, "tok");
    assert_int_equal(cfg->limits.max_header_bytes, 16384);
    assert_int_equal(cfg->limits.nmethods, 7);
    assert_int_equal(cfg->s3.presign_expires, 3600);
    assert_int_equal(cfg->workers.mirror, 4);
    assert_int_equal(cfg->workers.proxy_loops, 1);
    assert_true(cfg->access_log);
    assert_false(cfg->has_s3);
    config_free(cfg);

    /* the file wins over the standard variable; the region comes from AWS_REGION */
    setenv("AWS_REGION", "eu-central-1", 1);
    cfg = parse("{\"database_url\": \"postgresql://file@127.0.0.1/y\", "
                "\"s3\": {\"bucket\": \"bkt\"}}",
                &probs);
    assert_non_null(cfg);
    assert_string_equal(cfg->database_url, "postgresql://file@127.0.0.1/y");
    assert_string_equal(cfg->s3.region, "eu-central-1");
    assert_int_equal(cfg->s3.multipart_threshold, 64u << 20);
    config_free(cfg);
    unsetenv("DATABASE_URL");
    unsetenv("CUTOVER_ADMIN_TOKEN");
}

static void test_every_problem_listed(void **state)
{
    struct cfg_problems probs = {0};
    struct config *cfg;

    (void)state;
    cfg = parse("{\"listen\": 1, \"log\": {\"level\": \"loud\"}, \"workers\": {\"mirror\": 0}}",
                &probs);
    assert_null(cfg);
    assert_int_equal(probs.n, 3);
    assert_true(has_problem(&probs, "listen"));
    assert_true(has_problem(&probs, "log.level"));
    assert_true(has_problem(&probs, "workers.mirror"));
    cfg_problems_free(&probs);
}

/* A route may hold CFG_MAX_PATH_VARS path variables, and one more is refused at load with
 * the field path and the limit (the proxy's match keeps that many: a longer route would
 * silently never match). */
static void test_path_var_limit(void **state)
{
    struct cfg_problems probs = {0};
    struct config *cfg;
    char json[1024], tpl[512] = "";
    size_t n = 0;

    (void)state;
    for (int i = 0; i < CFG_MAX_PATH_VARS - 1; i++)
        n += (size_t)snprintf(tpl + n, sizeof(tpl) - n, "/{v%d}", i);
    snprintf(tpl + n, sizeof(tpl) - n, "/{key}");
    snprintf(json, sizeof(json),
             "{\"routes\": [{\"name\": \"r\", \"kind\": \"delete\", \"path\": \"%s\", \"key\": "
             "{\"path\": \"key\"}}]}",
             tpl);
    cfg = parse(json, &probs);
    for (size_t i = 0; i < probs.n; i++)
        fprintf(stderr, "%s\n", probs.lines[i]);
    assert_non_null(cfg);
    assert_int_equal(cfg->routes[0].nsegments, CFG_MAX_PATH_VARS);
    config_free(cfg);

    snprintf(json, sizeof(json),
             "{\"routes\": [{\"name\": \"r\", \"kind\": \"delete\", \"path\": "
             "\"/x%s/{extra}\", \"key\": {\"path\": \"key\"}}]}",
             tpl);
    cfg = parse(json, &probs);
    assert_null(cfg);
    assert_true(has_problem(&probs, "routes[0].path"));
    char want[64];
    snprintf(want, sizeof(want), "at most %d", CFG_MAX_PATH_VARS);
    assert_non_null(strstr(probs.lines[0], want));
    cfg_problems_free(&probs);
}

/* admin.allow_unauthenticated: off by default, accepted with a loopback admin.listen (IPv4
 * and IPv6), refused elsewhere (tests/config/invalid.txt); the lockout settings' defaults. */
static void test_admin_fields(void **state)
{
    static const char *const ok[] = {
        "{\"admin\": {\"allow_unauthenticated\": true}}",
        "{\"admin\": {\"listen\": \"127.0.0.2:0\", \"allow_unauthenticated\": true}}",
        "{\"admin\": {\"listen\": \"[::1]:9090\", \"allow_unauthenticated\": true}}",
    };
    struct cfg_problems probs = {0};
    struct config *cfg;

    (void)state;
    unsetenv("CUTOVER_ADMIN_TOKEN");
    cfg = parse("{}", &probs);
    assert_non_null(cfg);
    assert_false(cfg->admin_allow_unauthenticated);
    assert_null(cfg->admin_token);
    assert_int_equal(cfg->admin_max_auth_failures, 5);
    assert_int_equal(cfg->admin_auth_lockout_s, 60);
    config_free(cfg);
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cfg = parse(ok[i], &probs);
        for (size_t j = 0; j < probs.n; j++)
            fprintf(stderr, "%s: %s\n", ok[i], probs.lines[j]);
        assert_non_null(cfg);
        assert_true(cfg->admin_allow_unauthenticated);
        config_free(cfg);
    }
}

static void test_config_check_command(void **state)
{
    char *dir = test_tmpdir("config");
    char *good = xasprintf("%s/good.json", dir), *bad = xasprintf("%s/bad.json", dir);
    char *cmd, *out = NULL;
    int rc;

    (void)state;
    assert_true(test_write_file(good, "{\"upstream\": \"http://127.0.0.1:9\"}", 34));
    assert_true(test_write_file(bad, "{\"listen\": 1, \"routes\": [{}]}", 29));
    cmd = xasprintf("%s config check %s", testenv_var("CUTOVER_BIN"), good);
    rc = test_run(cmd, &out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "ok"));
    free(cmd);
    free(out);
    cmd = xasprintf("%s config check %s", testenv_var("CUTOVER_BIN"), bad);
    rc = test_run(cmd, &out);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "listen: "));
    assert_non_null(strstr(out, "routes[0].name: required"));
    assert_non_null(strstr(out, "routes[0].kind: required"));
    free(cmd);
    free(out);
    cmd = xasprintf("%s config check %s/missing.json", testenv_var("CUTOVER_BIN"), dir);
    rc = test_run(cmd, &out);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "cannot open"));
    free(cmd);
    free(out);
    cmd = xasprintf("%s config reference", testenv_var("CUTOVER_BIN"));
    rc = test_run(cmd, &out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "`limits.max_body_bytes`"));
    {
        /* the README's reference is this output, row for row */
        char *readme_path = path_in_source("README.md");
        char *readme = test_read_file(readme_path, NULL), *save = NULL;
        assert_non_null(readme);
        for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            if (strstr(readme, line) == NULL)
                fail_msg("README.md lacks the reference row: %s (paste `cutover config "
                         "reference` into it)",
                         line);
        free(readme);
        free(readme_path);
    }
    free(cmd);
    free(out);
    free(good);
    free(bad);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_table),        cmocka_unit_test(test_interface_example),
        cmocka_unit_test(test_defaults_and_env),     cmocka_unit_test(test_every_problem_listed),
        cmocka_unit_test(test_config_check_command), cmocka_unit_test(test_path_var_limit),
        cmocka_unit_test(test_admin_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
