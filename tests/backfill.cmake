# `cutover backfill` end to end: JSONL and SQL sources, a second run, bad rows and failures,
# two processes sharing the queue (the fixture's PostgreSQL, s3rver and example app).
cutover_test(NAME test_backfill SOURCES backfill/test_backfill.c
  LIBS cutover_bfenv cutover_tests3 cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON PkgConfig::SSL
  LABELS e2e SERVICES TIMEOUT 300)
# The mirror, all of its copies in flight, waits instead of polling (CPU over a window).
cutover_test(NAME test_mirror_idle SOURCES backfill/test_mirror_idle.c
  LIBS cutover_storage cutover_core LABELS pg s3 SERVICES TIMEOUT 120)
# The JSONL reader, row variables, the key template and the token bucket (no servers).
cutover_test(NAME test_backfill_unit SOURCES backfill/test_backfill_unit.c
  LIBS cutover_storage cutover_core LABELS unit TIMEOUT 60)
