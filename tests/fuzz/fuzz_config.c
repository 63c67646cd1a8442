/*
 * Fuzz target: the configuration parser (JSON text → struct, every problem listed) and the
 * flags' rules applied to its flags section. It must never crash, leak or accept a
 * configuration while reporting problems, and the flags' check and their snapshot must agree.
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

    cfg = config_parse(text, "fuzz", &p);
    if (cfg != NULL && p.n != 0)
        abort(); /* accepted while reporting problems */
    if (cfg != NULL) {
        /* the flags' rules, as the command line checks them; a section they accept makes a
         * snapshot, one they refuse does not */
        cut_err err = CUT_ERR_INIT;
        flags_snapshot *s = flags_snapshot_from_config(cfg, &err);
        flags_check_config(cfg, &p);
        if ((s != NULL) != (p.n == 0))
            abort();
        flags_snapshot_unref(s);
    }
    if (cfg == NULL && p.n == 0)
        abort(); /* refused without a reason */
    config_free(cfg);
    cfg_problems_free(&p);
    free(text);
    return 0;
}
