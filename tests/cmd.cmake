# The command line as a user meets it: the top-level help, each command's help, exit codes.
cutover_test(NAME test_cli SOURCES cmd/test_cli.c LIBS cutover_core LABELS unit TIMEOUT 60)

# The binary builds on a machine without the test framework (cmocka hidden from pkg-config).
# A whole build: run once, in the optimised build only.
if(NOT CUTOVER_SANITIZE)
  add_test(NAME build_without_cmocka COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cmd/build_without_cmocka.sh)
  set_tests_properties(build_without_cmocka PROPERTIES LABELS build TIMEOUT 600
    ENVIRONMENT "CUTOVER_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endif()
