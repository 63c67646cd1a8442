/*
 * The flags' rules without a database: a refusal is a cut_err "flags.NAME: reason" naming the
 * member at fault; a snapshot is built only from valid values (defaults filling the rest) and
 * exposes them typed; the configuration's flags section is reached only through a snapshot;
 * `cutover config check` refuses invalid flags although core/config no longer knows them.
 */
#include "flags/flags.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_validate_reports_cut_err(void **state)
{
    cut_err err = CUT_ERR_INIT;
    json_t *v;

    (void)state;
    v = json_loads("{\"percent\": 101}", 0, NULL);
    assert_false(flags_validate("read_from_s3", v, &err));
    assert_int_equal(err.code, CUT_EINVAL);
    assert_string_equal(err.where, "flags.read_from_s3");
    assert_string_equal(err.msg, "flags.read_from_s3: percent: expected a number from 0 to 100");
    json_decref(v);

    err_clear(&err);
    v = json_loads("{\"enabled\": true, \"speed\": 3}", 0, NULL);
    assert_false(flags_validate("auto_rollback", v, &err));
    assert_string_equal(err.msg, "flags.auto_rollback: speed: unknown member");
    json_decref(v);

    err_clear(&err);
    v = json_true();
    assert_false(flags_validate("dual_writes", v, &err));
    assert_non_null(strstr(err.msg, "flags.dual_writes: unknown flag"));
    err_clear(&err);
    assert_true(flags_validate("dual_write", v, &err));
    assert_false(err_isset(&err));
    json_decref(v);
}

static void test_snapshot_validates(void **state)
{
    cut_err err = CUT_ERR_INIT;
    json_t *good = json_loads("{\"dual_write\": true, \"read_from_s3\": {\"percent\": 25, "
                              "\"allow\": [\"u1\"]}, \"auto_rollback\": {\"window_s\": 30}}",
                              0, NULL);
    json_t *bad = json_loads("{\"dual_write\": true, \"shadow_read\": 2}", 0, NULL);
    flags_snapshot *s, *t;
    json_t *all;

    (void)state;
    s = flags_snapshot_new(good, true, &err);
    assert_non_null(s);
    assert_true(flags_dual_write(s));
    assert_true(flags_read_percent(s) == 25.0);
    assert_true(flags_shadow_read(s) == 0.0);      /* default */
    assert_true(flags_cutover_gate(s) == 0.99999); /* default */
    assert_true(flags_auto_rollback(s).enabled);   /* member absent: default */
    assert_int_equal(flags_auto_rollback(s).window_s, 30);
    assert_true(flags_snapshot_from_db(s));
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(flags_snapshot_value(s, "read_from_s3"), "allow"), 0)),
                        "u1");
    all = flags_snapshot_json(s);
    assert_int_equal(json_object_size(all), 5);
    json_decref(all);
    /* refused whole, with the reason */
    t = flags_snapshot_new(bad, true, &err);
    assert_null(t);
    assert_string_equal(err.msg, "flags.shadow_read: expected a number from 0 to 1");
    /* versions grow */
    err_clear(&err);
    t = flags_snapshot_new(good, false, &err);
    assert_true(flags_snapshot_version(t) > flags_snapshot_version(s));
    assert_true(flags_snapshot_ref(t) == t);
    flags_snapshot_unref(t);
    flags_snapshot_unref(t);
    flags_snapshot_unref(s);
    flags_snapshot_unref(NULL);
    json_decref(good);
    json_decref(bad);
}

static void test_config_section_is_uninterpreted(void **state)
{
    struct cfg_problems p = {0};
    struct config *cfg;
    cut_err err = CUT_ERR_INIT;

    (void)state;
    /* core/config loads it (it does not know the rules)... */
    cfg = config_parse("{\"flags\": {\"shadow_read\": 1.5, \"dual_write\": true}}", "t", &p);
    assert_non_null(cfg);
    assert_int_equal(p.n, 0);
    /* ...but no value can come out of it without the rules */
    assert_null(flags_snapshot_from_config(cfg, &err));
    assert_string_equal(err.msg, "flags.shadow_read: expected a number from 0 to 1");
    flags_check_config(cfg, &p);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.lines[0], "flags.shadow_read: expected a number from 0 to 1");
    cfg_problems_free(&p);
    config_free(cfg);
}

static void test_config_check_command(void **state)
{
    char *dir = test_tmpdir("flags_check");
    char *bad = xasprintf("%s/bad.json", dir);
    const char *text = "{\"flags\": {\"read_from_s3\": {\"percent\": 101}}}";
    char *cmd, *out = NULL;

    (void)state;
    assert_true(test_write_file(bad, text, strlen(text)));
    cmd = xasprintf("%s config check %s", testenv_var("CUTOVER_BIN"), bad);
    assert_int_equal(test_run(cmd, &out), 2);
    assert_non_null(strstr(out, "flags.read_from_s3: percent: expected a number from 0 to 100"));
    free(out);
    free(cmd);
    free(bad);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_reports_cut_err),
        cmocka_unit_test(test_snapshot_validates),
        cmocka_unit_test(test_config_section_is_uninterpreted),
        cmocka_unit_test(test_config_check_command),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
