/*
 * The command line as a user meets it: `cutover --help` lists every command with its real
 * scope (both `config` subcommands, every area `doctor` checks), every listed command answers
 * its own `--help` with exit 0, and bad usage exits 2 with a message.
 */
#include "core/core.h"
#include "tests/testlib.h"
#include "tests/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *run(const char *args, int *status)
{
    char *out = NULL;
    char *cmd = xasprintf("'%s' %s 2>&1", testenv_var("CUTOVER_BIN"), args);
    *status = test_run(cmd, &out);
    free(cmd);
    return out ? out : xstrdup("");
}

static void test_top_level_help(void **state)
{
    int st;
    char *out = run("--help", &st);

    (void)state;
    assert_int_equal(st, 0);
    /* both config subcommands */
    assert_non_null(strstr(out, "config check FILE"));
    assert_non_null(strstr(out, "config reference"));
    /* everything doctor checks */
    const char *doctor = strstr(out, "\n  doctor");
    assert_non_null(doctor);
    const char *scope[] = {"database",    "application", "legacy store", "spool",
                           "credentials", "bucket",      "clock skew"};
    for (size_t i = 0; i < sizeof(scope) / sizeof(scope[0]); i++) {
        if (!strstr(doctor, scope[i]))
            fail_msg("doctor's line in --help does not mention '%s':\n%s", scope[i], out);
    }
    free(out);
}

/* Every command listed by --help (a line "  name  summary") answers `name --help`. */
static void test_every_command_has_help(void **state)
{
    int st;
    char *out = run("--help", &st);
    int seen = 0;

    (void)state;
    assert_int_equal(st, 0);
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char name[32];
        if (strncmp(line, "  ", 2) != 0 || line[2] == ' ')
            continue;
        if (sscanf(line + 2, "%31s", name) != 1)
            continue;
        char *args = xasprintf("%s --help", name);
        int cst;
        char *help = run(args, &cst);
        if (cst != 0 || !strstr(help, "usage: cutover"))
            fail_msg("`cutover %s` exited %d:\n%s", args, cst, help);
        free(help);
        free(args);
        seen++;
    }
    assert_true(seen >= 5);
    free(out);
}

static void test_bad_usage(void **state)
{
    int st;
    char *out;

    (void)state;
    out = run("", &st);
    assert_int_equal(st, 2);
    assert_non_null(strstr(out, "usage: cutover"));
    free(out);
    out = run("no-such-command", &st);
    assert_int_equal(st, 2);
    assert_non_null(strstr(out, "unknown command 'no-such-command'"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top_level_help),
        cmocka_unit_test(test_every_command_has_help),
        cmocka_unit_test(test_bad_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
