# The sticky rollout: MurmurHash3 vectors, buckets, monotonicity, allow/deny.
cutover_test(NAME test_rollout SOURCES rewrite/test_rollout.c LIBS cutover_flags cutover_core
  LABELS unit TIMEOUT 60)
