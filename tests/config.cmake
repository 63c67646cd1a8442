cutover_test(NAME test_config SOURCES config/test_config.c
  LIBS cutover_flags cutover_core LABELS unit)
