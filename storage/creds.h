/*
 * creds: where the S3 client's AWS credentials come from, in the order the AWS SDKs use:
 *   1. the configuration (s3.access_key_id / secret_access_key / session_token),
 *   2. the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN),
 *   3. web identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE → STS
 *      AssumeRoleWithWebIdentity; endpoint from AWS_ENDPOINT_URL_STS or
 *      AWS_STS_ENDPOINT_URL, else the regional STS endpoint),
 *   4. the container endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI, with
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN or AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE).
 * Temporary credentials are fetched again a margin before they expire (default 5 minutes);
 * one thread refreshes while the others keep using the still-valid set. creds_peek() never
 * waits: a background thread fetches for it.
 */
#ifndef CUTOVER_CREDS_H
#define CUTOVER_CREDS_H

#include "core/config.h"
#include "core/core.h"

#include <stdatomic.h>
#include <time.h>

/* One immutable set of credentials, shared by reference. */
struct creds {
    atomic_int refs;
    char *access_key_id;
    char *secret_access_key;
    char *session_token; /* NULL when none */
    time_t expires;      /* 0: does not expire */
};

enum creds_source {
    CREDS_NONE = 0,
    CREDS_CONFIG,
    CREDS_ENV,
    CREDS_WEB_IDENTITY,
    CREDS_CONTAINER,
};

typedef struct creds_provider creds_provider;

/* Picks the first source of the chain that is configured (nothing is fetched yet).
 * Borrows cfg for the call only (what it needs is copied). Returns a new provider (free
 * with creds_provider_free()) or NULL with err set (CUT_EINVAL) when no source is
 * configured or one is configured wrongly (e.g. an http container URI on a remote host). */
creds_provider *creds_provider_new(const struct cfg_s3 *cfg, cut_err *err) CUT_MUST_USE;
void creds_provider_free(creds_provider *p);

enum creds_source creds_provider_source(const creds_provider *p);
const char *creds_source_name(enum creds_source s);

/* Fetches again this many seconds before expiry (default 300). */
void creds_provider_set_refresh_margin(creds_provider *p, int seconds);
/* How many times credentials were fetched from STS or the container endpoint. */
unsigned creds_provider_fetches(const creds_provider *p);

/* Returns a reference to current credentials in *out (release with creds_release()),
 * fetching or refreshing them when needed. Thread-safe. Returns 0, or -1 with err set. */
int creds_acquire(creds_provider *p, struct creds **out, cut_err *err) CUT_MUST_USE;
void creds_release(struct creds *c);

/* The same without ever waiting for a fetch, for an event loop: a reference to the current
 * set when it has not expired (release with creds_release()), else -1 with err set. When the
 * set is missing or within the refresh margin, wakes the provider's refresher thread (started
 * here the first time), which fetches in the background; after a failed fetch it tries again
 * 1 s later, doubling to 30 s. Static sources never need it. */
int creds_peek(creds_provider *p, struct creds **out, cut_err *err) CUT_MUST_USE;

#endif
