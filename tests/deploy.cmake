# The deployment files (Dockerfile, deploy/kubernetes): lint, render, schemas, the sidecar's
# rules and `cutover config check` of the ConfigMap, all offline (tests/deploy/check.sh).
add_test(NAME test_deploy_manifests
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/deploy/check.sh $<TARGET_FILE:cutover>)
set_tests_properties(test_deploy_manifests PROPERTIES LABELS unit TIMEOUT 120)
