/*
 * Flag definitions. Each flag has a default and a validator; a value is accepted only when
 * its validator says so, and the reason for a refusal names the member at fault, because
 * the same text becomes the body of the admin API's 400 and a config-check line.
 */
#include "flags/flags.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef bool (*validator)(const json_t *v, char *why, size_t n);

static bool number_in(const json_t *v, double lo, double hi)
{
    double d;
    if (!json_is_number(v))
        return false;
    d = json_number_value(v);
    return isfinite(d) && d >= lo && d <= hi;
}

static bool check_members(const json_t *v, const char *const *allowed, char *why, size_t n)
{
    const char *key;
    json_t *x;

    json_object_foreach((json_t *)v, key, x)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], key) == 0;
        if (!ok) {
            snprintf(why, n, "%s: unknown member", key);
            return false;
        }
    }
    return true;
}

static bool v_bool(const json_t *v, char *why, size_t n)
{
    if (json_is_boolean(v))
        return true;
    snprintf(why, n, "expected true or false");
    return false;
}

static bool v_ratio(const json_t *v, char *why, size_t n)
{
    if (number_in(v, 0, 1))
        return true;
    snprintf(why, n, "expected a number from 0 to 1");
    return false;
}

static bool string_list(const json_t *v, const char *name, char *why, size_t n)
{
    size_t i;
    json_t *x;

    if (v == NULL)
        return true;
    if (!json_is_array(v) || json_array_size(v) > 100000) {
        snprintf(why, n, "%s: expected an array of strings", name);
        return false;
    }
    json_array_foreach(v, i, x)
    {
        if (!json_is_string(x)) {
            snprintf(why, n, "%s[%zu]: expected a string", name, i);
            return false;
        }
    }
    return true;
}

static bool v_read_from_s3(const json_t *v, char *why, size_t n)
{
    static const char *const allowed[] = {"percent", "allow", "deny", NULL};
    const json_t *p;

    if (!json_is_object(v)) {
        snprintf(why, n, "expected {\"percent\": 0..100, \"allow\": [..], \"deny\": [..]}");
        return false;
    }
    if (!check_members(v, allowed, why, n))
        return false;
    p = json_object_get(v, "percent");
    if (p != NULL && !number_in(p, 0, 100)) {
        snprintf(why, n, "percent: expected a number from 0 to 100");
        return false;
    }
    return string_list(json_object_get(v, "allow"), "allow", why, n) &&
           string_list(json_object_get(v, "deny"), "deny", why, n);
}

static bool v_auto_rollback(const json_t *v, char *why, size_t n)
{
    static const char *const allowed[] = {"enabled", "max_error_rate", "window_s", "min_samples",
                                          NULL};
    const json_t *x;

    if (!json_is_object(v)) {
        snprintf(why, n,
                 "expected {\"enabled\": bool, \"max_error_rate\": 0..1, \"window_s\": "
                 "N, \"min_samples\": N}");
        return false;
    }
    if (!check_members(v, allowed, why, n))
        return false;
    if ((x = json_object_get(v, "enabled")) != NULL && !json_is_boolean(x)) {
        snprintf(why, n, "enabled: expected true or false");
        return false;
    }
    if ((x = json_object_get(v, "max_error_rate")) != NULL && !number_in(x, 0, 1)) {
        snprintf(why, n, "max_error_rate: expected a number from 0 to 1");
        return false;
    }
    if ((x = json_object_get(v, "window_s")) != NULL &&
        (!json_is_integer(x) || !number_in(x, 1, 86400))) {
        snprintf(why, n, "window_s: expected a whole number of seconds from 1 to 86400");
        return false;
    }
    if ((x = json_object_get(v, "min_samples")) != NULL &&
        (!json_is_integer(x) || !number_in(x, 1, 1e9))) {
        snprintf(why, n, "min_samples: expected a whole number from 1");
        return false;
    }
    return true;
}

static const struct {
    const char *name;
    const char *def;
    validator check;
} defs[] = {
    {"dual_write", "false", v_bool},
    {"shadow_read", "0", v_ratio},
    {"read_from_s3", "{\"percent\": 0, \"allow\": [], \"deny\": []}", v_read_from_s3},
    {"auto_rollback",
     "{\"enabled\": true, \"max_error_rate\": 0.01, \"window_s\": 60, \"min_samples\": 50}",
     v_auto_rollback},
    {"cutover_gate", "0.99999", v_ratio},
};

#define NDEFS (sizeof(defs) / sizeof(defs[0]))

json_t *flags_defaults(void)
{
    json_t *o = json_object();

    for (size_t i = 0; i < NDEFS; i++)
        json_object_set_new(o, defs[i].name, json_loads(defs[i].def, 0, NULL));
    return o;
}

bool flags_validate(const char *name, const json_t *value, char *why, size_t whylen)
{
    for (size_t i = 0; i < NDEFS; i++)
        if (strcmp(defs[i].name, name) == 0)
            return defs[i].check(value, why, whylen);
    snprintf(why, whylen,
             "unknown flag (known: dual_write, shadow_read, read_from_s3, "
             "auto_rollback, cutover_gate)");
    return false;
}

void flags_check_config(const struct config *cfg, struct cfg_problems *p)
{
    const char *key;
    json_t *v;

    json_object_foreach(cfg->flags, key, v)
    {
        char why[256], path[128];
        if (!flags_validate(key, v, why, sizeof(why))) {
            snprintf(path, sizeof(path), "flags.%s", key);
            cfg_problem_add(p, path, "%s", why);
        }
    }
}
