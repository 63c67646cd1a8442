cutover_test(NAME test_flags_rules SOURCES flags/test_flags_rules.c
  LIBS cutover_flags cutover_core LABELS unit)
cutover_test(NAME test_flags_store SOURCES flags/test_flags_store.c
  LIBS cutover_flags cutover_storage cutover_core Threads::Threads LABELS pg SERVICES TIMEOUT 120)
