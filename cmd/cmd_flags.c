/*
 * `cutover flags get` and `cutover flags set NAME=VALUE... [--reason TEXT] [--force]`: read
 * or change the flags through a sidecar's admin API (GET and PATCH /admin/flags), so that a
 * change takes the same path as any other: validation, the cutover gate, the audit log, and
 * every replica told at once. The admin URL is --admin URL, or http://<admin.listen> of the
 * configuration (a wildcard address read as 127.0.0.1); the token is $CUTOVER_ADMIN_TOKEN,
 * else admin.token. Each NAME=VALUE reads VALUE as JSON, or as a string when it is not JSON
 * (a bare word); a dotted NAME (read_from_s3.percent=25) sets one member of an object flag,
 * which the server merges onto the current value. Prints the flags the sidecar now uses.
 * Exit status: 0 done; 1 refused (400, 409: the server's reason on stderr) or unreachable;
 * 2 bad usage.
 */
#include "cmd/cli.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ANSWER_MAX (4 * 1024 * 1024)
#define NAME_MAX_LEN 64

static void help(FILE *out)
{
    fprintf(out, "usage: cutover flags get [--admin URL] [--config FILE]\n"
                 "       cutover flags set NAME=VALUE... [--reason TEXT] [--force] [--admin URL]\n"
                 "                         [--config FILE]\n\n"
                 "Reads or changes the migration's flags through a sidecar's admin API (GET and\n"
                 "PATCH /admin/flags) and prints the flags that sidecar now uses, as JSON.\n"
                 "VALUE is JSON (true, 25, 0.5, {\"percent\": 25}) or a bare word; a dotted NAME\n"
                 "sets one member of an object flag: read_from_s3.percent=25.\n\n"
                 "  --admin URL     the admin port (default: http://<admin.listen> of the config)\n"
                 "  --reason TEXT   why, written to the audit log with the change\n"
                 "  --force         pass the cutover gate (needs --reason)\n"
                 "  --config FILE   the configuration (or $CUTOVER_CONFIG)\n\n"
                 "The token is $CUTOVER_ADMIN_TOKEN (or admin.token). Exit status: 0 done, 1 the\n"
                 "sidecar refused (its reason on stderr) or could not be reached, 2 bad usage.\n");
}

struct answer {
    struct buf body;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct answer *a = ud;
    return buf_append(&a->body, p, size * n) ? size * n : 0;
}

/* Adds NAME=VALUE to patch. False with a message in why. */
static bool add_assignment(json_t *patch, const char *arg, char *why, size_t wn)
{
    const char *eq = strchr(arg, '=');
    char name[NAME_MAX_LEN + 1], *dot;
    json_t *v;
    size_t n;

    if (eq == NULL || eq == arg || eq[1] == '\0') {
        snprintf(why, wn, "expected NAME=VALUE, got '%.100s'", arg);
        return false;
    }
    n = (size_t)(eq - arg);
    if (n > NAME_MAX_LEN) {
        snprintf(why, wn, "flag name longer than %d bytes", NAME_MAX_LEN);
        return false;
    }
    memcpy(name, arg, n);
    name[n] = '\0';
    v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
    if (v == NULL)
        v = json_string(eq + 1);
    if (v == NULL) {
        snprintf(why, wn, "%s: the value is not valid UTF-8", name);
        return false;
    }
    dot = strchr(name, '.');
    if (dot == NULL) {
        json_object_set_new(patch, name, v);
        return true;
    }
    *dot = '\0';
    if (strchr(dot + 1, '.') != NULL || dot[1] == '\0' || name[0] == '\0') {
        snprintf(why, wn, "%.64s: expected FLAG or FLAG.MEMBER", arg);
        json_decref(v);
        return false;
    }
    json_t *obj = json_object_get(patch, name);
    if (!json_is_object(obj)) {
        obj = json_object();
        json_object_set_new(patch, name, obj);
    }
    json_object_set_new(obj, dot + 1, v);
    return true;
}

/* The admin port's base URL from the configuration, new string. */
static char *admin_url_from(const struct config *cfg)
{
    const char *h = cfg->admin_host && *cfg->admin_host ? cfg->admin_host : "127.0.0.1";
    if (strcmp(h, "0.0.0.0") == 0)
        h = "127.0.0.1";
    else if (strcmp(h, "::") == 0)
        h = "::1";
    return strchr(h, ':') ? xasprintf("http://[%s]:%d", h, cfg->admin_port)
                          : xasprintf("http://%s:%d", h, cfg->admin_port);
}

/* One request; returns the HTTP status (0: none, with a message on stderr). */
static long call(const char *method, const char *url, const char *token, const char *body,
                 struct answer *ans)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char errbuf[CURL_ERROR_SIZE] = "", *line, actor[120];
    const struct passwd *pw = getpwuid(getuid());
    long status = 0;

    if (!c)
        return 0;
    snprintf(actor, sizeof(actor), "X-Cutover-Actor: cli:%.64s",
             pw && pw->pw_name ? pw->pw_name : "unknown");
    h = curl_slist_append(h, actor);
    if (token && *token) {
        line = xasprintf("Authorization: Bearer %s", token);
        h = curl_slist_append(h, line);
        free(line);
    }
    if (body)
        h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, ans);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        fprintf(stderr, "cutover flags: %s: %s\n", url, errbuf[0] ? errbuf : "request failed");
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

int cmd_flags(int argc, char **argv)
{
    const char *config_path = NULL, *admin = NULL, *reason = NULL, *sub = NULL;
    bool force = false;
    json_t *patch = json_object(), *o = NULL;
    struct config *cfg = NULL;
    struct answer ans;
    char *base = NULL, *url = NULL, *body = NULL, why[200];
    const char *token;
    long status;
    int rc = EXIT_USAGE;

    buf_init(&ans.body, ANSWER_MAX);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help(stdout);
            rc = 0;
            goto out;
        } else if ((strcmp(a, "--config") == 0 || strcmp(a, "--admin") == 0 ||
                    strcmp(a, "--reason") == 0) &&
                   i + 1 < argc) {
            const char **dst = a[2] == 'c' ? &config_path : a[2] == 'a' ? &admin : &reason;
            *dst = argv[++i];
        } else if (strcmp(a, "--force") == 0) {
            force = true;
        } else if (a[0] == '-') {
            rc = cli_usage_error("flags", "unknown option '%s'", a);
            goto out;
        } else if (sub == NULL) {
            sub = a;
            if (strcmp(sub, "get") != 0 && strcmp(sub, "set") != 0) {
                rc = cli_usage_error("flags", "expected get or set, got '%s'", sub);
                goto out;
            }
        } else if (strcmp(sub, "set") == 0) {
            if (!add_assignment(patch, a, why, sizeof(why))) {
                rc = cli_usage_error("flags", "%s", why);
                goto out;
            }
        } else {
            rc = cli_usage_error("flags", "get takes no argument ('%s')", a);
            goto out;
        }
    }
    if (sub == NULL) {
        rc = cli_usage_error("flags", "expected get or set");
        goto out;
    }
    if (strcmp(sub, "set") == 0 && json_object_size(patch) == 0) {
        rc = cli_usage_error("flags", "set needs at least one NAME=VALUE");
        goto out;
    }
    if (strcmp(sub, "get") == 0 && (reason || force)) {
        rc = cli_usage_error("flags", "--reason and --force go with set");
        goto out;
    }
    if (force && (reason == NULL || *reason == '\0')) {
        rc = cli_usage_error("flags", "--force needs --reason");
        goto out;
    }
    /* the configuration only when it is needed or named */
    if (admin == NULL || config_path != NULL || getenv("CUTOVER_CONFIG") != NULL) {
        cfg = cli_load_config(config_path);
        if (cfg == NULL)
            goto out;
    }
    base = admin ? xstrdup(admin) : admin_url_from(cfg);
    while (*base && base[strlen(base) - 1] == '/')
        base[strlen(base) - 1] = '\0';
    url = xasprintf("%s/admin/flags", base);
    token = getenv("CUTOVER_ADMIN_TOKEN");
    if ((token == NULL || *token == '\0') && cfg)
        token = cfg->admin_token;
    if (strcmp(sub, "set") == 0) {
        if (reason)
            json_object_set_new(patch, "reason", json_string(reason));
        if (force)
            json_object_set_new(patch, "force", json_true());
        body = json_dumps(patch, JSON_COMPACT);
    }
    rc = EXIT_WORK;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        goto out;
    status = call(body ? "PATCH" : "GET", url, token, body, &ans);
    curl_global_cleanup();
    if (status == 0)
        goto out;
    o = ans.body.data ? json_loads(ans.body.data, 0, NULL) : NULL;
    if (status != 200) {
        const char *r = json_string_value(json_object_get(o, "reason"));
        fprintf(stderr, "cutover flags: %ld: %s\n", status,
                r ? r : (ans.body.data ? ans.body.data : "no answer"));
        goto out;
    }
    if (!json_is_object(o)) {
        fprintf(stderr, "cutover flags: the answer is not a JSON object\n");
        goto out;
    }
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    fputc('\n', stdout);
    rc = 0;
out:
    json_decref(o);
    json_decref(patch);
    free(body);
    free(url);
    free(base);
    buf_free(&ans.body);
    config_free(cfg);
    return rc;
}
