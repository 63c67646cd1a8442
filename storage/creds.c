/*
 * creds: the credentials chain of the S3 client (order and variables in creds.h).
 *
 * How: creds_provider_new() decides the source once, from the configuration and the
 * environment, so a misconfiguration is reported at start. Static sources produce one
 * credentials object that never expires. Temporary sources (STS web identity, container
 * endpoint) are fetched on first use and again when the current set is within the refresh
 * margin of its expiry. Refresh is single-flight: the thread that wins a trylock fetches;
 * others keep the current set while it is still valid, and only block when it has expired.
 * The credentials object is immutable and reference-counted, so a request that started
 * with the old set finishes with it.
 *
 * An event loop must never wait for STS or a credentials endpoint, so creds_peek() only
 * reads the set already fetched. When that set is missing or near its expiry, it wakes a
 * refresher thread of the provider (started on the first need, temporary sources only) that
 * fetches through the same single-flight path, ahead of expiry, and after a failure again
 * with a growing pause (1 s doubling to 30 s), so that a failing endpoint is not hammered by
 * every read.
 *
 * Why not a generic HTTP client: both endpoints are one GET with a capped answer. The web
 * identity token and the container authorization token are re-read from their files at
 * every fetch, because Kubernetes rotates them. No secret is ever logged: messages name
 * the source and the HTTP status, never a key, token or answer body.
 */
#include "storage/creds.h"
#include "storage/s3_util.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CREDS_MAX_ANSWER (64 * 1024)
#define CREDS_MAX_TOKEN_FILE (64 * 1024)
#define CREDS_TIMEOUT_S 10

struct creds_provider {
    enum creds_source source;
    /* web identity */
    char *role_arn;
    char *token_file;
    char *session_name;
    char *sts_endpoint;
    /* container */
    char *container_uri;
    char *auth_token;
    char *auth_token_file;

    pthread_mutex_t mu;      /* guards cur */
    pthread_mutex_t refresh; /* held by the one thread fetching */
    struct creds *cur;
    int margin_s;
    atomic_uint fetches;

    /* the refresher (creds_peek()'s background fetches); all under mu */
    pthread_cond_t cv;
    pthread_t thread;
    bool started, stop;
    time_t next_try; /* after a failed fetch, not before this */
    int backoff_s;
};

static struct creds *creds_make(const char *ak, const char *sk, const char *tok, time_t exp)
{
    struct creds *c = xcalloc(1, sizeof(*c));

    atomic_init(&c->refs, 1);
    c->access_key_id = xstrdup(ak);
    c->secret_access_key = xstrdup(sk);
    c->session_token = tok && tok[0] ? xstrdup(tok) : NULL;
    c->expires = exp;
    return c;
}

void creds_release(struct creds *c)
{
    if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    free(c->access_key_id);
    if (c->secret_access_key) {
        OPENSSL_cleanse(c->secret_access_key, strlen(c->secret_access_key));
        free(c->secret_access_key);
    }
    if (c->session_token) {
        OPENSSL_cleanse(c->session_token, strlen(c->session_token));
        free(c->session_token);
    }
    free(c);
}

const char *creds_source_name(enum creds_source s)
{
    switch (s) {
    case CREDS_CONFIG:
        return "configuration";
    case CREDS_ENV:
        return "environment";
    case CREDS_WEB_IDENTITY:
        return "web identity (STS AssumeRoleWithWebIdentity)";
    case CREDS_CONTAINER:
        return "container credentials endpoint";
    default:
        return "none";
    }
}

static const char *env(const char *name)
{
    const char *v = getenv(name);

    return v && v[0] ? v : NULL;
}

/* AWS SDKs accept plain http for the full URI only on loopback and the EKS/ECS link-local
 * agents; anything else must be https. */
static bool container_uri_allowed(const char *uri, cut_err *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    bool ok = false;

    if (curl_url_set(u, CURLUPART_URL, uri, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        err_set(err, CUT_EINVAL, "creds", "AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL");
        goto out;
    }
    if (strcmp(scheme, "https") == 0) {
        ok = true;
    } else if (strcmp(scheme, "http") == 0) {
        ok = strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
             strcmp(host, "[::1]") == 0 || strcmp(host, "169.254.170.2") == 0 ||
             strcmp(host, "169.254.170.23") == 0 || strcmp(host, "[fd00:ec2::23]") == 0;
        if (!ok)
            err_set(err, CUT_EINVAL, "creds",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI: plain http is allowed only to "
                    "loopback or the container agent (169.254.170.2/.23), not %s",
                    host);
    } else {
        err_set(err, CUT_EINVAL, "creds", "AWS_CONTAINER_CREDENTIALS_FULL_URI: scheme %s", scheme);
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

creds_provider *creds_provider_new(const struct cfg_s3 *cfg, cut_err *err)
{
    creds_provider *p = xcalloc(1, sizeof(*p));
    const char *region = cfg && cfg->region ? cfg->region : env("AWS_REGION");

    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->refresh, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->backoff_s = 1;
    p->margin_s = 300;
    atomic_init(&p->fetches, 0);

    if (cfg && cfg->access_key_id && cfg->secret_access_key) {
        p->source = CREDS_CONFIG;
        p->cur = creds_make(cfg->access_key_id, cfg->secret_access_key, cfg->session_token, 0);
    } else if (env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY")) {
        p->source = CREDS_ENV;
        p->cur = creds_make(env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"),
                            env("AWS_SESSION_TOKEN"), 0);
    } else if (env("AWS_ROLE_ARN") && env("AWS_WEB_IDENTITY_TOKEN_FILE")) {
        const char *ep = env("AWS_ENDPOINT_URL_STS");
        p->source = CREDS_WEB_IDENTITY;
        p->role_arn = xstrdup(env("AWS_ROLE_ARN"));
        p->token_file = xstrdup(env("AWS_WEB_IDENTITY_TOKEN_FILE"));
        p->session_name = env("AWS_ROLE_SESSION_NAME") ? xstrdup(env("AWS_ROLE_SESSION_NAME"))
                                                       : xasprintf("cutover-%ld", (long)time(NULL));
        if (ep == NULL)
            ep = env("AWS_STS_ENDPOINT_URL");
        if (ep)
            p->sts_endpoint = xstrdup(ep);
        else if (region)
            p->sts_endpoint = xasprintf("https://sts.%s.amazonaws.com", region);
        else
            p->sts_endpoint = xstrdup("https://sts.amazonaws.com");
    } else if (env("AWS_CONTAINER_CREDENTIALS_FULL_URI") ||
               env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) {
        p->source = CREDS_CONTAINER;
        if (env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) {
            p->container_uri =
                xasprintf("http://169.254.170.2%s", env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"));
        } else {
            if (!container_uri_allowed(env("AWS_CONTAINER_CREDENTIALS_FULL_URI"), err))
                goto fail;
            p->container_uri = xstrdup(env("AWS_CONTAINER_CREDENTIALS_FULL_URI"));
        }
        p->auth_token = xstrdup(env("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
        p->auth_token_file = xstrdup(env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"));
    } else {
        err_set(err, CUT_EINVAL, "creds",
                "no AWS credentials: set s3.access_key_id/secret_access_key, "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_ROLE_ARN with "
                "AWS_WEB_IDENTITY_TOKEN_FILE, or AWS_CONTAINER_CREDENTIALS_FULL_URI/"
                "_RELATIVE_URI");
        goto fail;
    }
    return p;
fail:
    creds_provider_free(p);
    return NULL;
}

void creds_provider_free(creds_provider *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->started)
        pthread_join(p->thread, NULL); /* at most one fetch's timeout */
    creds_release(p->cur);
    free(p->role_arn);
    free(p->token_file);
    free(p->session_name);
    free(p->sts_endpoint);
    free(p->container_uri);
    if (p->auth_token) {
        OPENSSL_cleanse(p->auth_token, strlen(p->auth_token));
        free(p->auth_token);
    }
    free(p->auth_token_file);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->refresh);
    pthread_cond_destroy(&p->cv);
    free(p);
}

enum creds_source creds_provider_source(const creds_provider *p)
{
    return p->source;
}

void creds_provider_set_refresh_margin(creds_provider *p, int seconds)
{
    pthread_mutex_lock(&p->mu);
    p->margin_s = seconds;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

unsigned creds_provider_fetches(const creds_provider *p)
{
    return atomic_load(&((creds_provider *)p)->fetches);
}

/* Reads a small file, trailing whitespace removed; new string or NULL with err set. */
static char *read_token(const char *path, const char *what, cut_err *err)
{
    FILE *f = fopen(path, "r");
    struct buf b;
    char chunk[4096];
    size_t n;

    buf_init(&b, CREDS_MAX_TOKEN_FILE);
    if (f == NULL) {
        err_set(err, CUT_EIO, "creds", "%s %s: cannot open", what, path);
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (!buf_append(&b, chunk, n)) {
            err_set(err, CUT_ELIMIT, "creds", "%s %s: larger than %d bytes", what, path,
                    CREDS_MAX_TOKEN_FILE);
            fclose(f);
            buf_free(&b);
            return NULL;
        }
    }
    fclose(f);
    while (b.len > 0 &&
           (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r' || b.data[b.len - 1] == ' '))
        b.data[--b.len] = '\0';
    if (b.len == 0) {
        err_set(err, CUT_EINVAL, "creds", "%s %s is empty", what, path);
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

static char *url_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0), *r;

    if (e == NULL)
        abort();
    r = xstrdup(e);
    curl_free(e);
    return r;
}

static struct creds *fetch_web_identity(creds_provider *p, cut_err *err)
{
    char *token = read_token(p->token_file, "AWS_WEB_IDENTITY_TOKEN_FILE", err);
    char *et = NULL, *er = NULL, *es = NULL, *url = NULL;
    char ak[256], sk[256], exp[64], *st = NULL;
    struct buf body = {0};
    struct creds *c = NULL;
    long status = 0;
    time_t t;
    size_t stlen = 8192;
    const char *sep;

    if (token == NULL)
        return NULL;
    et = url_escape(token);
    er = url_escape(p->role_arn);
    es = url_escape(p->session_name);
    sep = p->sts_endpoint[strlen(p->sts_endpoint) - 1] == '/' ? "" : "/";
    url = xasprintf("%s%s?Action=AssumeRoleWithWebIdentity&DurationSeconds=3600&RoleArn=%s"
                    "&RoleSessionName=%s&Version=2011-06-15&WebIdentityToken=%s",
                    p->sts_endpoint, sep, er, es, et);
    if (s3x_http_get(url, NULL, CREDS_TIMEOUT_S, CREDS_MAX_ANSWER, &status, &body, err) != 0)
        goto out;
    if (status != 200) {
        char code[128];
        s3x_xml_tag(body.data, body.len, "Code", code, sizeof(code));
        err_set(err, CUT_EHTTP, "creds", "STS AssumeRoleWithWebIdentity answered %ld %s", status,
                code);
        goto out;
    }
    st = xmalloc(stlen);
    if (!s3x_xml_tag(body.data, body.len, "AccessKeyId", ak, sizeof(ak)) ||
        !s3x_xml_tag(body.data, body.len, "SecretAccessKey", sk, sizeof(sk)) ||
        !s3x_xml_tag(body.data, body.len, "SessionToken", st, stlen) ||
        !s3x_xml_tag(body.data, body.len, "Expiration", exp, sizeof(exp)) ||
        !s3x_parse_iso8601(exp, &t)) {
        err_set(err, CUT_EHTTP, "creds",
                "STS answer lacks AccessKeyId, SecretAccessKey, SessionToken or Expiration");
        goto out;
    }
    c = creds_make(ak, sk, st, t);
out:
    OPENSSL_cleanse(sk, sizeof(sk));
    if (st) {
        OPENSSL_cleanse(st, stlen);
        free(st);
    }
    if (body.data)
        OPENSSL_cleanse(body.data, body.len);
    buf_free(&body);
    if (token) {
        OPENSSL_cleanse(token, strlen(token));
        OPENSSL_cleanse(et, strlen(et));
        OPENSSL_cleanse(url, strlen(url));
    }
    free(token);
    free(et);
    free(er);
    free(es);
    free(url);
    return c;
}

static struct creds *fetch_container(creds_provider *p, cut_err *err)
{
    char *tok = NULL, *hdr = NULL;
    const char *hdrs[2] = {NULL, NULL};
    struct buf body = {0};
    struct creds *c = NULL;
    json_t *j = NULL;
    json_error_t je;
    long status = 0;
    time_t t = 0;
    const char *ak, *sk, *st, *ex;

    if (p->auth_token_file) {
        tok = read_token(p->auth_token_file, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", err);
        if (tok == NULL)
            goto out;
    } else if (p->auth_token) {
        tok = xstrdup(p->auth_token);
    }
    if (tok) {
        if (strchr(tok, '\r') || strchr(tok, '\n')) {
            err_set(err, CUT_EINVAL, "creds", "container authorization token has a line break");
            goto out;
        }
        hdr = xasprintf("Authorization: %s", tok);
        hdrs[0] = hdr;
    }
    if (s3x_http_get(p->container_uri, hdrs, CREDS_TIMEOUT_S, CREDS_MAX_ANSWER, &status, &body,
                     err) != 0)
        goto out;
    if (status != 200) {
        err_set(err, CUT_EHTTP, "creds", "container credentials endpoint answered %ld", status);
        goto out;
    }
    j = json_loadb(body.data ? body.data : "", body.len, 0, &je);
    ak = json_string_value(json_object_get(j, "AccessKeyId"));
    sk = json_string_value(json_object_get(j, "SecretAccessKey"));
    st = json_string_value(json_object_get(j, "Token"));
    ex = json_string_value(json_object_get(j, "Expiration"));
    if (ak == NULL || sk == NULL) {
        err_set(err, CUT_EHTTP, "creds",
                "container credentials answer is not JSON with AccessKeyId and SecretAccessKey");
        goto out;
    }
    if (ex && !s3x_parse_iso8601(ex, &t)) {
        err_set(err, CUT_EHTTP, "creds", "container credentials Expiration is not ISO 8601");
        goto out;
    }
    c = creds_make(ak, sk, st, t);
out:
    json_decref(j);
    if (body.data)
        OPENSSL_cleanse(body.data, body.len);
    buf_free(&body);
    if (tok) {
        OPENSSL_cleanse(tok, strlen(tok));
        OPENSSL_cleanse(hdr, strlen(hdr));
    }
    free(tok);
    free(hdr);
    return c;
}

static bool fresh(const creds_provider *p, const struct creds *c, time_t now)
{
    return c && (c->expires == 0 || c->expires - p->margin_s > now);
}

static bool valid(const struct creds *c, time_t now)
{
    return c && (c->expires == 0 || c->expires > now);
}

int creds_acquire(creds_provider *p, struct creds **out, cut_err *err)
{
    struct creds *c, *n, *old;
    time_t now = time(NULL);
    bool locked;

    *out = NULL;
    pthread_mutex_lock(&p->mu);
    c = p->cur;
    if (fresh(p, c, now)) {
        atomic_fetch_add(&c->refs, 1);
        pthread_mutex_unlock(&p->mu);
        *out = c;
        return 0;
    }
    pthread_mutex_unlock(&p->mu);

    /* Needs a fetch. Another thread may be at it: keep the valid set, else wait. */
    locked = pthread_mutex_trylock(&p->refresh) == 0;
    if (!locked) {
        pthread_mutex_lock(&p->mu);
        c = p->cur;
        if (valid(c, now)) {
            atomic_fetch_add(&c->refs, 1);
            pthread_mutex_unlock(&p->mu);
            *out = c;
            return 0;
        }
        pthread_mutex_unlock(&p->mu);
        pthread_mutex_lock(&p->refresh);
    }
    /* Re-check: the thread we waited for may have refreshed already. */
    pthread_mutex_lock(&p->mu);
    c = p->cur;
    if (fresh(p, c, time(NULL))) {
        atomic_fetch_add(&c->refs, 1);
        pthread_mutex_unlock(&p->mu);
        pthread_mutex_unlock(&p->refresh);
        *out = c;
        return 0;
    }
    pthread_mutex_unlock(&p->mu);

    if (p->source == CREDS_WEB_IDENTITY)
        n = fetch_web_identity(p, err);
    else if (p->source == CREDS_CONTAINER)
        n = fetch_container(p, err);
    else
        n = NULL;
    atomic_fetch_add(&p->fetches, 1);
    pthread_mutex_lock(&p->mu);
    if (n) {
        old = p->cur;
        p->cur = n;
        log_msgf(LOG_INFO, "creds_refresh", "credentials fetched from the %s, valid until %ld",
                 creds_source_name(p->source), (long)n->expires);
    } else {
        old = NULL;
        /* A failed refresh keeps a still-valid set: S3 calls go on until it expires. */
        if (valid(p->cur, time(NULL))) {
            log_msgf(LOG_WARN, "creds_refresh", "refresh failed, keeping current set: %s",
                     err->msg);
            err_clear(err);
            n = p->cur;
        } else if (!err_isset(err)) {
            err_set(err, CUT_EINVAL, "creds", "no credentials from the %s",
                    creds_source_name(p->source));
        }
    }
    if (n)
        atomic_fetch_add(&n->refs, 1);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->refresh);
    creds_release(old);
    *out = n;
    return n ? 0 : -1;
}

/* The refresher: fetches when the set is missing or within the margin of its expiry, then
 * sleeps until the next set nears its expiry, a creds_peek() wakes it, or the provider stops. */
static void *refresher(void *arg)
{
    creds_provider *p = arg;

    thread_setup("creds", false);
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        time_t now = time(NULL);
        struct timespec ts = {0, 0};
        if (!fresh(p, p->cur, now) && now >= p->next_try) {
            struct creds *c = NULL;
            cut_err err = CUT_ERR_INIT;
            int rc;
            pthread_mutex_unlock(&p->mu);
            rc = creds_acquire(p, &c, &err); /* logs what it fetched or why it failed */
            creds_release(c);
            pthread_mutex_lock(&p->mu);
            if (rc == 0 && fresh(p, p->cur, time(NULL))) {
                p->backoff_s = 1;
            } else if (rc == 0) {
                /* a set that lives less than the margin: not again at once */
                p->next_try = time(NULL) + p->backoff_s;
                p->backoff_s = p->backoff_s >= 15 ? 30 : p->backoff_s * 2;
            } else {
                log_msgf(LOG_WARN, "creds_refresh", "no credentials, trying again in %d s: %s",
                         p->backoff_s, err.msg);
                p->next_try = time(NULL) + p->backoff_s;
                p->backoff_s = p->backoff_s >= 15 ? 30 : p->backoff_s * 2;
            }
            continue;
        }
        if (fresh(p, p->cur, now))
            ts.tv_sec = p->cur->expires ? p->cur->expires - p->margin_s : 0;
        else
            ts.tv_sec = p->next_try;
        if (ts.tv_sec)
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        else
            pthread_cond_wait(&p->cv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int creds_peek(creds_provider *p, struct creds **out, cut_err *err)
{
    time_t now = time(NULL);
    struct creds *c;

    *out = NULL;
    pthread_mutex_lock(&p->mu);
    c = p->cur;
    if (valid(c, now))
        atomic_fetch_add(&c->refs, 1);
    else
        c = NULL;
    if (!fresh(p, p->cur, now) && !p->stop &&
        (p->source == CREDS_WEB_IDENTITY || p->source == CREDS_CONTAINER)) {
        if (p->started)
            pthread_cond_signal(&p->cv);
        else if (pthread_create(&p->thread, NULL, refresher, p) == 0)
            p->started = true;
        else
            log_msgf(LOG_ERROR, "creds_refresh", "cannot start the credentials refresher");
    }
    pthread_mutex_unlock(&p->mu);
    if (!c) {
        err_set(err, CUT_EHTTP, "creds", "no valid credentials from the %s yet (being fetched)",
                creds_source_name(p->source));
        return -1;
    }
    *out = c;
    return 0;
}
