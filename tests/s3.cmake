# S3 client and transfer engine tests. Unit tests (label unit) need no servers; the s3 ones
# use the services fixture's s3rver; fixtures that stand in for S3, STS, the container
# credentials endpoint and the legacy store run inside the test with libmicrohttpd.
# They link the storage library as it is built for the binary (cutover_storage).

cutover_test(NAME s3_sigv4_vectors SOURCES s3/test_sigv4_vectors.c
  LIBS cutover_storage LABELS unit TIMEOUT 60)

cutover_test(NAME s3_rver SOURCES s3/test_s3_rver.c
  LIBS cutover_storage LABELS s3 SERVICES TIMEOUT 180)

# S3, STS and container-credentials stand-ins run inside the test (no external services).
cutover_test(NAME s3_fixture SOURCES s3/test_s3_fixture.c
  LIBS cutover_storage PkgConfig::MHD LABELS unit TIMEOUT 60)

cutover_test(NAME s3_unit SOURCES s3/test_s3_unit.c
  LIBS cutover_storage LABELS unit TIMEOUT 60)

# The load generator of bench/s3/run.sh: built with the tests, never run by CTest.
add_executable(s3_bench ${CMAKE_SOURCE_DIR}/bench/s3/s3_bench.c)
target_link_libraries(s3_bench PRIVATE cutover_storage Threads::Threads)

# The transfer engine and the legacy fetcher against stand-ins inside the test.
cutover_test(NAME xfer_fixture SOURCES s3/test_xfer_fixture.c s3/legacy_stub.c
  LIBS cutover_storage PkgConfig::MHD LABELS unit TIMEOUT 90)

# The transfer engine against s3rver: 200 PUTs in flight, legacy -> S3 copies, changed sources.
cutover_test(NAME xfer_rver SOURCES s3/test_xfer_rver.c s3/legacy_stub.c
  LIBS cutover_storage PkgConfig::MHD LABELS s3 SERVICES TIMEOUT 180)
