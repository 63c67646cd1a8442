# Shadow reads end to end: a `cutover proxy` before a fixture of the test playing the app and a
# legacy store that can alter bytes or hang, with PostgreSQL and s3rver: matches, not copied,
# legacy_transformed, s3 (with the automatic rollback), the client never delayed, the bounds.
cutover_test(NAME test_shadow SOURCES shadow/test_shadow.c
  LIBS cutover_admin_sidecar cutover_tests3 cutover_storage cutover_core PkgConfig::PQ
  PkgConfig::JANSSON PkgConfig::CURL PkgConfig::MHD PkgConfig::SSL Threads::Threads
  LABELS e2e SERVICES TIMEOUT 180)
# S3 stopped with read_from_s3 at 100 and auto_rollback on: percent 0 within 5 s on both of two
# sidecars, one audit row with the figures, the clients always answered; on PRIVATE services.
cutover_test(NAME test_rollback_s3down SOURCES shadow/test_rollback_s3down.c
  LIBS cutover_admin_sidecar cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON
  PkgConfig::CURL LABELS e2e TIMEOUT 180)
