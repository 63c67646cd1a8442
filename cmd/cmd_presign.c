/*
 * `cutover presign KEY`: prints a presigned S3 URL for an object key, with the bucket,
 * endpoint and credentials of the configuration. --at fixes the signing time so a URL can
 * be reproduced (tests, support); --method PUT signs an upload URL. The URL is printed on
 * stdout and nowhere else: it is a credential for its lifetime.
 */
#include "cmd/cli.h"
#include "storage/creds.h"
#include "storage/s3.h"
#include "storage/sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(FILE *out)
{
    fprintf(out, "usage: cutover presign KEY [--config FILE] [--expires SECONDS]\n"
                 "                           [--at YYYYMMDDTHHMMSSZ] [--method GET|PUT]\n\n"
                 "Prints an S3 presigned URL (SigV4, query signing) for the object KEY of the\n"
                 "configured bucket. --expires defaults to s3.presign_expires (1..604800);\n"
                 "--at fixes the signing time (default now); --method defaults to GET.\n"
                 "Exit status: 0 printed, 1 signing failed, 2 bad usage or configuration.\n");
}

int cmd_presign(int argc, char **argv)
{
    const char *key = NULL, *cfg_path = NULL, *method = "GET", *at_s = NULL;
    long expires = 0;
    time_t at = 0;
    struct config *cfg = NULL;
    creds_provider *cp = NULL;
    s3_client *c = NULL;
    cut_err err = CUT_ERR_INIT;
    char url[16384];
    int rc = EXIT_USAGE;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help(stdout);
            return 0;
        } else if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            cfg_path = argv[++i];
        } else if (strcmp(a, "--expires") == 0 && i + 1 < argc) {
            char *end;
            expires = strtol(argv[++i], &end, 10);
            if (*end || expires < 1 || expires > 604800)
                return cli_usage_error("presign", "--expires: a number of seconds in 1..604800");
        } else if (strcmp(a, "--at") == 0 && i + 1 < argc) {
            at_s = argv[++i];
            if (!sigv4_parse_amz_date(at_s, &at))
                return cli_usage_error("presign", "--at: expected YYYYMMDDTHHMMSSZ, got '%s'",
                                       at_s);
        } else if (strcmp(a, "--method") == 0 && i + 1 < argc) {
            method = argv[++i];
            if (strcmp(method, "GET") != 0 && strcmp(method, "PUT") != 0)
                return cli_usage_error("presign", "--method: GET or PUT");
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_usage_error("presign", "unknown or incomplete option '%s'", a);
        } else if (key == NULL) {
            key = a;
        } else {
            return cli_usage_error("presign", "one KEY only");
        }
    }
    if (key == NULL || key[0] == '\0')
        return cli_usage_error("presign", "missing KEY");
    cfg = cli_load_config(cfg_path);
    if (cfg == NULL)
        goto out;
    if (!cfg->has_s3) {
        fprintf(stderr, "cutover presign: config: s3: section missing\n");
        goto out;
    }
    cli_setup_logging(cfg);
    if (expires == 0)
        expires = cfg->s3.presign_expires > 0 ? cfg->s3.presign_expires : 3600;
    cp = creds_provider_new(&cfg->s3, &err);
    if (cp == NULL) {
        fprintf(stderr, "cutover presign: %s\n", err.msg);
        goto out;
    }
    c = s3_client_new(&cfg->s3, cp, &err);
    if (c == NULL) {
        fprintf(stderr, "cutover presign: config: %s\n", err.msg);
        goto out;
    }
    rc = EXIT_WORK;
    if (s3_presign(c, method, key, expires, at, url, sizeof(url), &err) < 0) {
        fprintf(stderr, "cutover presign: %s\n", err.msg);
        goto out;
    }
    printf("%s\n", url);
    rc = 0;
out:
    s3_client_free(c);
    creds_provider_free(cp);
    config_free(cfg);
    return rc;
}
