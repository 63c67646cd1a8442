cutover_test(NAME test_migrate SOURCES storage/test_migrate.c
  LIBS cutover_storage cutover_core LABELS pg SERVICES)
cutover_test(NAME test_services SOURCES storage/test_services.c
  LIBS cutover_core PkgConfig::PQ LABELS "pg;s3" SERVICES)
cutover_test(NAME test_pgstore SOURCES storage/test_pgstore.c
  LIBS cutover_storage cutover_core Threads::Threads LABELS pg SERVICES TIMEOUT 120)
cutover_test(NAME test_redact SOURCES storage/test_redact.c
  LIBS cutover_storage cutover_core LABELS unit)
cutover_test(NAME test_worker SOURCES storage/test_worker.c
  LIBS cutover_storage cutover_core Threads::Threads LABELS pg SERVICES TIMEOUT 120)

# Legacy -> S3 copies streamed as one PUT, against s3rver and a raw-socket legacy store.
cutover_test(NAME xfer_stream SOURCES storage/test_xfer_stream.c
  ${CMAKE_CURRENT_SOURCE_DIR}/faults/relay.c LIBS cutover_storage Threads::Threads LABELS s3 SERVICES TIMEOUT 120)
# Dual-write's order in the state store: records of one key arriving in the wrong order,
# deletes against uploads both ways, the batch lease renewal.
cutover_test(NAME test_order SOURCES storage/test_order.c
  LIBS cutover_storage cutover_core PkgConfig::PQ LABELS pg SERVICES TIMEOUT 60)
# The mirror renews the leases of its copies in flight: a copy longer than two leases, two
# mirrors on one database, S3 delayed by a relay; the document is PUT once.
cutover_test(NAME test_lease_renew SOURCES storage/test_lease_renew.c
  ${CMAKE_CURRENT_SOURCE_DIR}/faults/relay.c
  LIBS cutover_tests3 cutover_storage cutover_core Threads::Threads LABELS "pg;s3" SERVICES TIMEOUT 120)
