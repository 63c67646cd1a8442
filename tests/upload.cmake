# Dual-write's pieces that need no servers: multipart parser, key templates, journal, spool.
cutover_test(NAME test_multipart SOURCES upload/test_multipart.c LIBS cutover_proxy cutover_core
  LABELS unit TIMEOUT 60)
# JSON Pointer evaluation and S3 key templates.
cutover_test(NAME test_extract SOURCES upload/test_extract.c LIBS cutover_proxy cutover_core
  LABELS unit TIMEOUT 60)
# The journal that keeps upload records while PostgreSQL is away.
cutover_test(NAME test_journal SOURCES upload/test_journal.c LIBS cutover_storage cutover_core
  LABELS unit TIMEOUT 60)
# The spool writer: bytes, hashes, backpressure, a failing disk.
cutover_test(NAME test_spool SOURCES upload/test_spool.c LIBS cutover_storage cutover_core
  LABELS unit TIMEOUT 120)
# Dual-write end to end: `cutover proxy` before the example app, PostgreSQL and s3rver.
cutover_test(NAME test_dual_write SOURCES upload/test_dual_write.c
  LIBS cutover_tests3 cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON PkgConfig::SSL
  LABELS e2e SERVICES TIMEOUT 300)
# Dual-write's races: an overwrite or a delete while a copy is held in flight by a relay before
# s3rver, and S3 refusing deletes.
cutover_test(NAME test_dual_write_races SOURCES upload/test_dual_write_races.c
  LIBS cutover_tests3 cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON PkgConfig::SSL
  LABELS e2e SERVICES TIMEOUT 300)
# Dual-write under faults (PostgreSQL stopped, s3rver killed, cutover SIGKILLed, the spool
# disk full), on a private instance of the services that the test starts and stops itself.
# Also the fault suite's table (scripts/faults.sh): S3 answering errors, the legacy store down,
# the app down, PostgreSQL restarted; the slow faults (S3 slow, PostgreSQL down 30 s) are a
# second entry, run in the optimised build only (about a minute).
cutover_test(NAME test_dual_write_faults SOURCES upload/test_dual_write_faults.c
  ${CMAKE_CURRENT_SOURCE_DIR}/faults/relay.c
  LIBS cutover_tests3 cutover_storage cutover_core PkgConfig::PQ PkgConfig::SSL Threads::Threads
  LABELS e2e faults TIMEOUT 300 ARGS fast)
if(NOT CUTOVER_SANITIZE)
  add_test(NAME test_faults_slow COMMAND test_dual_write_faults slow)
  get_test_property(test_dual_write_faults ENVIRONMENT faults_env)
  set_tests_properties(test_faults_slow PROPERTIES LABELS "e2e;faults" TIMEOUT 300
    ENVIRONMENT "${faults_env}")
endif()
# The journal's replay at the moments an outage makes ambiguous: a connection cut by a
# restart (not a refusal), a refused record, an upsert whose answer was lost replayed.
cutover_test(NAME test_replay SOURCES upload/test_replay.c
  LIBS cutover_proxy cutover_flags cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON
  Threads::Threads LABELS pg SERVICES TIMEOUT 60)
# The upload record the journal keeps: version 2 with the answer's sequence, version 1 still read.
cutover_test(NAME test_journal_doc SOURCES upload/test_journal_doc.c
  LIBS cutover_storage cutover_core LABELS unit TIMEOUT 60)
# The journal's replay keeps the order of the app's answers: records of a key in the wrong order.
cutover_test(NAME test_order_replay SOURCES upload/test_order_replay.c
  LIBS cutover_proxy cutover_flags cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON
  Threads::Threads LABELS pg SERVICES TIMEOUT 60)
# Dual-write's order through `cutover proxy`: an upload answered before a delete, recorded after
# it (held back by a lock of the test), does not bring the document back.
cutover_test(NAME test_order_e2e SOURCES upload/test_order_e2e.c
  LIBS cutover_tests3 cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON
  LABELS e2e SERVICES TIMEOUT 120)
