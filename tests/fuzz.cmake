# One fuzz target per parser. CTest replays each corpus (every seed, any compiler); with
# clang and -DCUTOVER_FUZZ=ON the targets link libFuzzer: tests/fuzz/run.sh fuzzes for real.
set(FUZZ_DIR ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
function(cutover_fuzz name)
  cmake_parse_arguments(F "" "" "LIBS;SOURCES" ${ARGN})
  if(CUTOVER_FUZZ)
    add_executable(${name} ${FUZZ_DIR}/${name}.c ${F_SOURCES})
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    add_test(NAME ${name} COMMAND ${name} -runs=0 ${FUZZ_DIR}/corpus/${F_UNPARSED_ARGUMENTS})
  else()
    add_executable(${name} ${FUZZ_DIR}/${name}.c ${FUZZ_DIR}/replay.c ${F_SOURCES})
    add_test(NAME ${name} COMMAND ${name} ${FUZZ_DIR}/corpus/${F_UNPARSED_ARGUMENTS})
  endif()
  target_link_libraries(${name} PRIVATE ${F_LIBS})
  set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 120)
endfunction()

cutover_fuzz(fuzz_config config LIBS cutover_flags cutover_core)
# the checks alone: they are pure functions, the rest of the proxy is not needed
cutover_fuzz(fuzz_http_check http_check SOURCES ${CMAKE_SOURCE_DIR}/proxy/http_check.c
  LIBS cutover_core)
cutover_fuzz(fuzz_sigv4 sigv4 LIBS cutover_storage)
cutover_fuzz(fuzz_h1parse h1parse SOURCES ${CMAKE_SOURCE_DIR}/proxy/h1parse.c
  LIBS cutover_core)
cutover_fuzz(fuzz_multipart multipart LIBS cutover_proxy cutover_core)
cutover_fuzz(fuzz_journal journal LIBS cutover_storage cutover_core)
cutover_fuzz(fuzz_route route SOURCES ${CMAKE_SOURCE_DIR}/proxy/route.c
  ${CMAKE_SOURCE_DIR}/proxy/http_check.c LIBS cutover_core)
cutover_fuzz(fuzz_extract extract SOURCES ${CMAKE_SOURCE_DIR}/proxy/extract.c LIBS cutover_core)
cutover_fuzz(fuzz_s3xml s3xml LIBS cutover_storage)
cutover_fuzz(fuzz_sigv4_sign sigv4_sign LIBS cutover_storage)
