cutover_test(NAME test_core SOURCES core/test_core.c LIBS cutover_core LABELS unit)
