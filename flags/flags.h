/*
 * flags: the migration's switches (INTERFACE.md "Flags"): their names, defaults and the
 * rules for a valid value. The store (PostgreSQL, shared by replicas) builds on these.
 */
#ifndef CUTOVER_FLAGS_H
#define CUTOVER_FLAGS_H

#include "core/config.h"

#include <jansson.h>

/* Every flag with its default value. Returns a new object (json_decref()). */
json_t *flags_defaults(void) CUT_MUST_USE;

/* Checks one flag's value. Returns true when valid; otherwise writes the reason (naming the
 * member, e.g. "percent: must be a number from 0 to 100") into why. Unknown names fail. */
bool flags_validate(const char *name, const json_t *value, char *why, size_t whylen) CUT_MUST_USE;

/* Checks the configuration's initial flag values, adding "flags.NAME: reason" to p. */
void flags_check_config(const struct config *cfg, struct cfg_problems *p);

#endif
