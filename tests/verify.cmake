# `cutover verify` end to end: S3 objects overwritten behind cutover's back, raw originals
# changed in the legacy store, --repair, failed documents retried, the manifest; and the
# fencing of a stale verify result (the fixture's PostgreSQL, s3rver and example app).
cutover_test(NAME test_verify SOURCES verify/test_verify.c
  LIBS cutover_bfenv cutover_tests3 cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON
  PkgConfig::SSL LABELS e2e SERVICES TIMEOUT 300)
# How a HEAD's answer is compared with the record, and the consistency ratio (no servers).
cutover_test(NAME test_verify_unit SOURCES verify/test_verify_unit.c
  LIBS cutover_storage cutover_core LABELS unit TIMEOUT 60)
