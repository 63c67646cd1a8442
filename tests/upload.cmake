# Upload interception's pure pieces (no servers): the streaming multipart/form-data parser.
cutover_test(NAME test_multipart SOURCES upload/test_multipart.c LIBS cutover_proxy cutover_core
  LABELS unit TIMEOUT 60)
# JSON Pointer evaluation and S3 key templates.
cutover_test(NAME test_extract SOURCES upload/test_extract.c LIBS cutover_proxy cutover_core
  LABELS unit TIMEOUT 60)
