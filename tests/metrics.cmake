# Metrics: the catalogue and its exposition, promtool's lint, the Grafana dashboard's names.
cutover_test(NAME test_metrics_unit SOURCES metrics/test_metrics_unit.c
  LIBS cutover_core PkgConfig::JANSSON LABELS unit TIMEOUT 60)
# /metrics end to end after real uploads: promtool, counters, figures against the database and
# /admin/status, and a hung state store that must not hang the scrape.
add_library(cutover_mxenv STATIC metrics/mxenv.c)
target_link_libraries(cutover_mxenv PUBLIC cutover_testlib cutover_core PkgConfig::PQ
  PkgConfig::CMOCKA)
cutover_test(NAME test_metrics SOURCES metrics/test_metrics.c
  LIBS cutover_mxenv cutover_core PkgConfig::PQ PkgConfig::JANSSON LABELS e2e SERVICES TIMEOUT 180)
# The dashboard page in headless Chromium (Debian's chromium), driven over the DevTools pipe:
# token, figures, a flag change, phone width, screenshots.
cutover_test(NAME test_dashboard SOURCES metrics/test_dashboard.c
  LIBS cutover_mxenv cutover_core PkgConfig::PQ PkgConfig::JANSSON PkgConfig::SSL
  LABELS e2e SERVICES TIMEOUT 180)
