# scripts/lib.sh: what scripts/demo.sh and scripts/soak.sh share, sourced by both once
# `run` (their working directory) is set. Defines:
#   free_port                   prints a TCP port free on 127.0.0.1 now.
#   wait_url URL SECONDS        waits until a GET of URL succeeds; status 1 after SECONDS.
#   write_example_config BUCKET DUAL_WRITE RATE CONCURRENCY
#                               writes $run/cutover.json: cutover on 127.0.0.1:$listen_port
#                               (admin $admin_port) in front of the example app ($APP_URL),
#                               the state in $PG_URL, spool $run/spool, S3 at $S3_ENDPOINT in
#                               BUCKET, the app's legacy store, its upload, signed-URL and
#                               delete routes, dual_write DUAL_WRITE (true or false) and a
#                               backfill of the app's documents.jsonl at RATE documents/s with
#                               CONCURRENCY copies.

free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

wait_url() { # wait_url URL SECONDS
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

write_example_config() { # write_example_config BUCKET DUAL_WRITE RATE CONCURRENCY
    cat >"$run/cutover.json" <<JSON
{
  "listen": "127.0.0.1:$listen_port",
  "upstream": "$APP_URL",
  "admin": { "listen": "127.0.0.1:$admin_port" },
  "database_url": "$PG_URL",
  "spool_dir": "$run/spool",
  "s3": { "endpoint": "$S3_ENDPOINT", "region": "$S3_REGION", "bucket": "$1",
          "path_style": true },
  "legacy": { "raw_url": "$APP_URL/legacy/raw/{key}" },
  "routes": [
    { "name": "upload", "kind": "upload", "method": "POST", "path": "/documents",
      "file_field": "file", "key": { "response_json": "/storage_key" },
      "vars": { "org": { "header": "X-Org-Id" }, "patient": { "form_field": "patient_id" } },
      "s3_key": "documents/{org}/{patient}/{key}" },
    { "name": "signed-url", "kind": "signed_url", "path": "/documents/{key}/url",
      "url": { "response_json": "/url" }, "sticky": { "header": "X-User-Id" } },
    { "name": "delete", "kind": "delete", "path": "/documents/{key}", "key": { "path": "key" } }
  ],
  "flags": { "dual_write": $2, "shadow_read": 0 },
  "backfill": { "source": { "jsonl": "$APP_DATA/documents.jsonl" }, "rate": $3,
                "concurrency": $4 }
}
JSON
}
