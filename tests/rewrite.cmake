# The sticky rollout: MurmurHash3 vectors, buckets, monotonicity, allow/deny.
cutover_test(NAME test_rollout SOURCES rewrite/test_rollout.c LIBS cutover_flags cutover_core
  LABELS unit TIMEOUT 60)
# Read cutover end to end: two sidecars on one database before the example app, PostgreSQL and
# s3rver: percent 0/100/30, sticky across sidecars and a restart, presigned URLs fetching the
# same bytes, redirects, the app's 403, migrate on read, cache invalidation across sidecars.
cutover_test(NAME test_rewrite SOURCES rewrite/test_rewrite.c
  LIBS cutover_flags cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON PkgConfig::SSL
  LABELS e2e SERVICES TIMEOUT 300)
# The same with PostgreSQL stopped while reads flow, on a private instance of the services.
cutover_test(NAME test_rewrite_faults SOURCES rewrite/test_rewrite.c
  LIBS cutover_flags cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON PkgConfig::SSL
  LABELS e2e TIMEOUT 300 ARGS faults)
# The notified cache of document states against PostgreSQL: fills, notifications, late fills,
# long keys, negative entries, the size bound, a lost listening connection.
cutover_test(NAME test_doccache SOURCES rewrite/test_doccache.c
  LIBS cutover_storage cutover_core PkgConfig::PQ LABELS pg SERVICES TIMEOUT 120)
# The splice of the presigned URL into the app's JSON answer: positions, escapes, absent,
# other types, duplicate names, answers jansson refuses, whitespace kept, the ceiling.
cutover_test(NAME test_jsplice SOURCES rewrite/test_jsplice.c
  LIBS cutover_proxy cutover_core PkgConfig::JANSSON LABELS unit TIMEOUT 60)
