# Admin port tests (label e2e: the proxy runs in-process with its own upstream fixture,
# tests/proxy/fixture.c; no shared services).
cutover_test(NAME test_admin SOURCES admin/test_admin.c
  LIBS cutover_proxy cutover_proxy_fixture LABELS e2e TIMEOUT 120)
# The admin API on two `cutover proxy` processes sharing one database, and the flags and
# status commands (tests/admin/sidecar.c starts them).
add_library(cutover_admin_sidecar STATIC admin/sidecar.c)
target_link_libraries(cutover_admin_sidecar PUBLIC cutover_core cutover_testlib
  PkgConfig::JANSSON PkgConfig::CMOCKA)
cutover_test(NAME test_admin_api SOURCES admin/test_admin_api.c
  LIBS cutover_admin_sidecar cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON
  LABELS e2e SERVICES TIMEOUT 180)
# The flags kept through a database outage, on a private PostgreSQL the test stops and starts.
cutover_test(NAME test_admin_outage SOURCES admin/test_admin_outage.c
  LIBS cutover_admin_sidecar cutover_storage cutover_core PkgConfig::PQ PkgConfig::JANSSON
  LABELS e2e TIMEOUT 180)
