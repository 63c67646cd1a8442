# Proxy tests (label e2e; none needs the shared services: each starts its own upstream
# fixture, tests/proxy/fixture.c, and its own `cutover proxy`).
add_library(cutover_proxy_fixture STATIC proxy/fixture.c)
target_link_libraries(cutover_proxy_fixture PUBLIC cutover_testlib PkgConfig::MHD
  PkgConfig::CURL Threads::Threads)

cutover_test(NAME test_proxy_raw SOURCES proxy/test_proxy_raw.c
  LIBS cutover_proxy_fixture LABELS e2e TIMEOUT 120)
cutover_test(NAME test_proxy_e2e SOURCES proxy/test_proxy_e2e.c
  LIBS cutover_proxy_fixture LABELS e2e TIMEOUT 120)
cutover_test(NAME test_proxy_big SOURCES proxy/test_proxy_big.c
  LIBS cutover_proxy_fixture LABELS e2e TIMEOUT 240)
cutover_test(NAME test_proxy_hooks SOURCES proxy/test_proxy_hooks.c
  LIBS cutover_proxy cutover_proxy_fixture LABELS e2e TIMEOUT 60)
cutover_test(NAME test_proxy_wait SOURCES proxy/test_proxy_wait.c
  LIBS cutover_proxy cutover_proxy_fixture LABELS e2e TIMEOUT 120)
# the request checks' pure functions
cutover_test(NAME test_proxy_http_check SOURCES proxy/test_proxy_http_check.c
  ${CMAKE_SOURCE_DIR}/proxy/http_check.c LIBS cutover_core LABELS unit TIMEOUT 60)
# the upstream answer parser alone: pure functions
cutover_test(NAME test_proxy_h1parse SOURCES proxy/test_proxy_h1parse.c ${CMAKE_SOURCE_DIR}/proxy/h1parse.c
  LIBS cutover_core LABELS unit TIMEOUT 60)
cutover_test(NAME test_proxy_upstream SOURCES proxy/test_proxy_upstream.c
  LIBS cutover_proxy_fixture LABELS e2e TIMEOUT 120)
# A refused request's answer survives a client still sending (graceful close).
cutover_test(NAME test_proxy_linger SOURCES proxy/test_proxy_linger.c
  LIBS cutover_proxy_fixture LABELS e2e TIMEOUT 60)
