/*
 * Fuzz target: the request checks run before a request reaches the app. The input is a
 * request head: "METHOD TARGET VERSION\n" then "name: value\n" lines. Checked properties:
 * no crash; a refusal always has a status of 400, 413 or 431 and a reason; a request with
 * both Content-Length and Transfer-Encoding, or two Content-Length fields, is never passed.
 */
#include "proxy/http_check.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    struct cfg_limits lim = {0};
    struct http_check c;
    char *text = xstrndup((const char *)data, size), *line, *save = NULL;
    char method[32] = "", target[2048] = "", version[16] = "";
    int ncl = 0, nte = 0, status;

    lim.max_header_bytes = 16384;
    lim.max_headers = 100;
    lim.max_body_bytes = 1u << 30;
    lim.methods = (char **)methods;
    lim.nmethods = sizeof(methods) / sizeof(methods[0]);

    line = strtok_r(text, "\n", &save);
    if (line == NULL || sscanf(line, "%31s %2047s %15s", method, target, version) != 3) {
        free(text);
        return 0;
    }
    http_check_begin(&c, &lim, method, target, version);
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        char *colon = strchr(line, ':');
        const char *value;
        if (colon == NULL)
            continue;
        value = colon + 1;
        while (*value == ' ')
            value++;
        if ((size_t)(colon - line) == 14 && strncasecmp(line, "Content-Length", 14) == 0)
            ncl++;
        if ((size_t)(colon - line) == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0)
            nte++;
        http_check_field(&c, line, (size_t)(colon - line), value, strlen(value));
    }
    status = http_check_end(&c);
    if (status != 0 && status != 400 && status != 413 && status != 431 && status != 501)
        abort();
    if (status != 0 && c.reason == NULL)
        abort();
    if (status == 0 && ((ncl && nte) || ncl > 1))
        abort(); /* a smuggling shape went through */
    free(text);
    return 0;
}
