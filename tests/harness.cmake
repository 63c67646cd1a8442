# Tests of the test harness itself. test_example_app starts its own example application
# (examples/app/server.js, needs node) on a free port and checks every endpoint.
cutover_test(NAME test_example_app SOURCES harness/test_example_app.c
  LIBS PkgConfig::JANSSON PkgConfig::SSL LABELS e2e TIMEOUT 120)
