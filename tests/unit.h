/*
 * unit.h: cmocka with the headers it needs before it (it includes none of them itself).
 * Tests include this instead of <cmocka.h>.
 */
#ifndef CUTOVER_UNIT_H
#define CUTOVER_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#endif
