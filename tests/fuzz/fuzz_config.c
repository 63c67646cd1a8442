/*
 * Fuzz target: the configuration parser (JSON text → struct, every problem listed). It must
 * never crash, leak or accept a configuration while reporting problems.
 */
#include "core/config.h"
#include "flags/flags.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfg_problems p = {0};
    char *text = xstrndup((const char *)data, size);
    struct config *cfg;

    config_set_extra_check(flags_check_config);
    cfg = config_parse(text, "fuzz", &p);
    if (cfg != NULL && p.n != 0)
        abort(); /* accepted while reporting problems */
    if (cfg == NULL && p.n == 0)
        abort(); /* refused without a reason */
    config_free(cfg);
    cfg_problems_free(&p);
    free(text);
    return 0;
}
