# Shadow reads end to end: a `cutover proxy` before a fixture of the test playing the app and a
# legacy store that can alter bytes or hang, with PostgreSQL and s3rver: matches, not copied,
# legacy_transformed, s3 (with the automatic rollback), the client never delayed, the bounds.
cutover_test(NAME test_shadow SOURCES shadow/test_shadow.c
  LIBS cutover_admin_sidecar cutover_tests3 cutover_storage cutover_core PkgConfig::PQ
  PkgConfig::JANSSON PkgConfig::CURL PkgConfig::MHD PkgConfig::SSL Threads::Threads
  LABELS e2e SERVICES TIMEOUT 180)
