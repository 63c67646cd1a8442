# Hostile input (issue 13), label `faults` so that scripts/faults.sh runs them with the fault
# scenarios. The base request checks are in tests/proxy/ (raw_cases.txt, test_proxy_e2e's
# deadlines), the admin port's body limit and lockout in tests/admin/.
# Smuggling through obs-fold, bad chunk sizes, NUL bytes: test_proxy_raw's runner, another table.
cutover_test(NAME test_hostile_raw SOURCES proxy/test_proxy_raw.c
  LIBS cutover_proxy_fixture LABELS e2e faults TIMEOUT 120 ARGS tests/hostile/raw_cases.txt)
# Slow clients (slowloris, stalled bodies) closed by the proxy's timeouts while a normal client
# is served.
cutover_test(NAME test_hostile_slow SOURCES hostile/test_hostile_slow.c
  LIBS cutover_proxy_fixture LABELS e2e faults TIMEOUT 120)
# Hostile keys, template values and answers from an app of the test's own, through dual-write.
cutover_test(NAME test_hostile_app SOURCES hostile/test_hostile_app.c
  LIBS cutover_tests3 cutover_storage cutover_core PkgConfig::PQ PkgConfig::MHD Threads::Threads
  LABELS e2e faults SERVICES TIMEOUT 120)
# Secrets scan: a whole scenario with distinctive secrets (own private services), then every
# log line, every row of schema cutover and /metrics searched for them and for signatures.
cutover_test(NAME test_secrets_scan SOURCES hostile/test_secrets_scan.c
  LIBS cutover_core PkgConfig::PQ PkgConfig::CURL LABELS e2e faults TIMEOUT 180)
