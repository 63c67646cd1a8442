/*
 * Fuzz target: S3 key encoding for SigV4. Properties: no crash or overflow; an encoded key
 * holds only unreserved characters, '/' and %XX with upper-case hex; decoding the encoding
 * gives back the key's bytes exactly (no double encoding, no normalisation).
 */
#include "storage/sigv4.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cap = size * 3 + 1;
    char *enc = malloc(cap), *dec = malloc(cap);
    long n, m;

    if (size > 4096)
        goto out;
    n = sigv4_encode((const char *)data, size, true, enc, cap);
    if (n < 0)
        goto out;
    for (long i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)enc[i];
        if (ch == '%') {
            if (i + 2 >= n)
                abort();
            if (!isxdigit((unsigned char)enc[i + 1]) || !isxdigit((unsigned char)enc[i + 2]) ||
                islower((unsigned char)enc[i + 1]) || islower((unsigned char)enc[i + 2]))
                abort();
            i += 2;
        } else if (!(isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' ||
                     ch == '/')) {
            abort();
        }
    }
    m = sigv4_decode(enc, (size_t)n, dec, cap);
    if (m != (long)size || memcmp(dec, data, size) != 0)
        abort();
out:
    free(enc);
    free(dec);
    return 0;
}
