# `cutover backfill` end to end: JSONL and SQL sources, a second run, bad rows and failures,
# two processes sharing the queue (the fixture's PostgreSQL, s3rver and example app).
cutover_test(NAME test_backfill SOURCES backfill/test_backfill.c
  LIBS cutover_bfenv cutover_tests3 cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON PkgConfig::SSL
  LABELS e2e SERVICES TIMEOUT 300)
# The mirror, all of its copies in flight, waits instead of polling (CPU over a window).
cutover_test(NAME test_mirror_idle SOURCES backfill/test_mirror_idle.c
  LIBS cutover_tests3 cutover_storage cutover_core LABELS pg s3 SERVICES TIMEOUT 120)
# The JSONL reader, row variables, the key template and the token bucket (no servers).
cutover_test(NAME test_backfill_unit SOURCES backfill/test_backfill_unit.c
  LIBS cutover_storage cutover_core LABELS unit TIMEOUT 60)
# Legacy store errors (404 failed at once, 500 retried, 429 holding the whole backfill), the
# bytes/s limit, three processes and a SIGKILL counted by the GETs of a legacy store in the test.
cutover_test(NAME test_backfill_legacy
  SOURCES backfill/test_backfill_legacy.c backfill/legacy_fixture.c
  LIBS cutover_bfenv cutover_storage cutover_core PkgConfig::MHD PkgConfig::PQ PkgConfig::JANSSON PkgConfig::SSL
  Threads::Threads LABELS e2e SERVICES TIMEOUT 300)
# Thousands of small documents from SQL and from JSONL, all verified (count: see the file).
cutover_test(NAME test_backfill_scale SOURCES backfill/test_backfill_scale.c
  LIBS cutover_bfenv cutover_tests3 cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON
  LABELS e2e SERVICES TIMEOUT 900)
# Issue 9's 10,000 from each source in the optimised build; 1,500 under the sanitizers.
if(CUTOVER_SANITIZE)
  target_compile_definitions(test_backfill_scale PRIVATE NSCALE=1500)
else()
  target_compile_definitions(test_backfill_scale PRIVATE NSCALE=10000)
endif()
# POST /admin/backfill start/pause/resume on `cutover proxy`, with the progress in the answer.
cutover_test(NAME test_backfill_admin
  SOURCES backfill/test_backfill_admin.c backfill/legacy_fixture.c
  LIBS cutover_core PkgConfig::MHD PkgConfig::PQ PkgConfig::JANSSON Threads::Threads
  LABELS e2e SERVICES TIMEOUT 180)
# A document uploaded again through cutover while the backfill copies its older bytes.
cutover_test(NAME test_backfill_race
  SOURCES backfill/test_backfill_race.c backfill/legacy_fixture.c
  LIBS cutover_tests3 cutover_storage cutover_core PkgConfig::MHD PkgConfig::PQ PkgConfig::SSL
  Threads::Threads LABELS e2e SERVICES TIMEOUT 180)
