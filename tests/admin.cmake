# Admin port tests (label e2e: the proxy runs in-process with its own upstream fixture,
# tests/proxy/fixture.c; no shared services).
cutover_test(NAME test_admin SOURCES admin/test_admin.c
  LIBS cutover_proxy cutover_proxy_fixture LABELS e2e TIMEOUT 120)
