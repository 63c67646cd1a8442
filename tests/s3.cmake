# S3 client tests. Unit tests (label unit) need no servers; the s3 ones use the services
# fixture's s3rver; fixtures that stand in for S3, STS and the container credentials
# endpoint run inside the test with libmicrohttpd.
# The S3 sources are compiled into one small library here so these tests do not depend on
# the rest of storage/.
set(S3_SRC ${CMAKE_SOURCE_DIR}/storage)
add_library(cutover_s3_under_test STATIC
  ${S3_SRC}/sigv4.c
  ${S3_SRC}/s3_util.c
  ${S3_SRC}/creds.c
  ${S3_SRC}/s3.c
)
target_link_libraries(cutover_s3_under_test PUBLIC cutover_core PkgConfig::SSL PkgConfig::CURL
  PkgConfig::JANSSON Threads::Threads)

cutover_test(NAME s3_sigv4_vectors SOURCES s3/test_sigv4_vectors.c
  LIBS cutover_s3_under_test LABELS unit TIMEOUT 60)

cutover_test(NAME s3_rver SOURCES s3/test_s3_rver.c
  LIBS cutover_s3_under_test LABELS s3 SERVICES TIMEOUT 180)

# S3, STS and container-credentials stand-ins run inside the test (no external services).
cutover_test(NAME s3_fixture SOURCES s3/test_s3_fixture.c
  LIBS cutover_s3_under_test PkgConfig::MHD LABELS unit TIMEOUT 60)

cutover_test(NAME s3_unit SOURCES s3/test_s3_unit.c
  LIBS cutover_s3_under_test LABELS unit TIMEOUT 60)

# The load generator of bench/s3/run.sh: built with the tests, never run by CTest.
add_executable(s3_bench ${CMAKE_SOURCE_DIR}/bench/s3/s3_bench.c)
target_link_libraries(s3_bench PRIVATE cutover_s3_under_test)
