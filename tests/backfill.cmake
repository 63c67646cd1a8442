# `cutover backfill` end to end: JSONL and SQL sources, a second run, bad rows and failures,
# two processes sharing the queue (the fixture's PostgreSQL, s3rver and example app).
cutover_test(NAME test_backfill SOURCES backfill/test_backfill.c
  LIBS cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON PkgConfig::SSL
  LABELS e2e SERVICES TIMEOUT 300)
