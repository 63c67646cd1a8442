# Upload interception's pure pieces (no servers): the streaming multipart/form-data parser.
cutover_test(NAME test_multipart SOURCES upload/test_multipart.c LIBS cutover_proxy cutover_core
  LABELS unit TIMEOUT 60)
