# Metrics: the catalogue and its exposition, promtool's lint, the Grafana dashboard's names.
cutover_test(NAME test_metrics_unit SOURCES metrics/test_metrics_unit.c
  LIBS cutover_core PkgConfig::JANSSON LABELS unit TIMEOUT 60)
