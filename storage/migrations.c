/*
 * The schema `cutover`, as numbered migrations. A migration is never edited once released:
 * changes come as a new number. Each runs inside the transaction that records it.
 *
 * documents: one row per document, keyed by the legacy storage key, carrying the state
 * machine of DESIGN.md (pending → copied → verified → active, plus mismatch, failed, deleted)
 * with the time of every transition, and the queue columns (lease, attempts, next attempt)
 * that let any number of sidecars and backfill jobs share the work with
 * FOR UPDATE SKIP LOCKED.
 *
 * 6 is shadow reads': shadow_mismatches keeps every difference a shadow read found (the
 * document key, the original's checksum and size as recorded at copy time, what each store
 * delivered, the class, the latencies; never a URL). 5 is kept for verification's columns.
 *
 * 4 is read cutover's: every change of a document's state or S3 key is announced on the
 * channel cutover_documents (payload "<state> <key bytes> <key><s3_key>", or "- <key bytes>
 * <key>" when that would pass PostgreSQL's 8000-byte limit, or "*" when even the key would:
 * the listeners drop that entry, or everything), so that every replica's cache of document
 * states stays true; legacy_reads keeps, per replica, the last read answered with the legacy
 * URL.
 *
 * 3 adds what the S3 object is served with: the document's content type and original
 * filename, as the upload gave them.
 *
 * 5 adds what verification finds (storage/pgstore_verify.c): the time of the last check that
 * found S3 consistent, the S3 object's version id when the bucket keeps versions, and the
 * detail of the last mismatch (which side differs, the recorded and the found size and
 * checksums) as one JSON object.
 *
 * 7 orders dual-write's records: answered_seq is the sequence the sidecar gave the upload or
 * delete when the app's answer was seen (NULL: unknown, a row from before 7, a backfill, an old
 * journal record). A record older than the row's is not applied (storage/pgstore.c).
 *
 * 8 gives every claim (storage/pgstore.c) an index it can walk in next_attempt_at order and
 * stop at its limit, so that a claim costs the same with ten documents to copy or millions:
 * the due documents of any origin, the copies due for one origin, and the removals due. The
 * index of 1 covered pending and mismatch only, and a claim that also takes removals sorted
 * the whole queue every time (5 ms at 5,000 documents, growing with the queue).
 *
 * 2 adds the document's generation (a document re-recorded under the same storage key is a
 * new generation, so work on an older one cannot overwrite it) and the lease token that fences
 * a claim's completion.
 */
#include "storage/pgstore.h"

const struct pg_migration pg_migrations[] = {
    {1, "documents, transitions, flags, audit, backfill runs",
     "CREATE TABLE cutover.documents (\n"
     "  storage_key     text PRIMARY KEY,\n"
     "  s3_key          text NOT NULL,\n"
     "  state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','copied',\n"
     "                  'verified','active','mismatch','failed','deleted')),\n"
     "  origin          text NOT NULL DEFAULT 'upload' CHECK (origin IN ('upload','backfill')),\n"
     "  vars            jsonb NOT NULL DEFAULT '{}',\n"
     "  spool_path      text,\n"
     "  size            bigint,\n"
     "  md5             text,\n"
     "  sha256          text,\n"
     "  s3_etag         text,\n"
     "  s3_sha256       text,\n"
     "  legacy_sha256   text,\n"
     "  attempts        integer NOT NULL DEFAULT 0,\n"
     "  last_error      text,\n"
     "  lease_owner     text,\n"
     "  lease_expires   timestamptz,\n"
     "  next_attempt_at timestamptz NOT NULL DEFAULT now(),\n"
     "  created_at      timestamptz NOT NULL DEFAULT now(),\n"
     "  updated_at      timestamptz NOT NULL DEFAULT now(),\n"
     "  copied_at       timestamptz,\n"
     "  verified_at     timestamptz,\n"
     "  activated_at    timestamptz,\n"
     "  mismatch_at     timestamptz,\n"
     "  failed_at       timestamptz,\n"
     "  deleted_at      timestamptz\n"
     ");\n"
     "CREATE INDEX documents_state ON cutover.documents (state);\n"
     "CREATE INDEX documents_queue ON cutover.documents (next_attempt_at)\n"
     "  WHERE state IN ('pending','mismatch');\n"
     "CREATE TABLE cutover.transitions (\n"
     "  id          bigserial PRIMARY KEY,\n"
     "  storage_key text NOT NULL,\n"
     "  from_state  text,\n"
     "  to_state    text NOT NULL,\n"
     "  at          timestamptz NOT NULL DEFAULT now(),\n"
     "  detail      text\n"
     ");\n"
     "CREATE INDEX transitions_key ON cutover.transitions (storage_key, at);\n"
     "CREATE TABLE cutover.flags (\n"
     "  name       text PRIMARY KEY,\n"
     "  value      jsonb NOT NULL,\n"
     "  updated_at timestamptz NOT NULL DEFAULT now(),\n"
     "  updated_by text NOT NULL DEFAULT 'config'\n"
     ");\n"
     "CREATE TABLE cutover.audit (\n"
     "  id     bigserial PRIMARY KEY,\n"
     "  at     timestamptz NOT NULL DEFAULT now(),\n"
     "  actor  text NOT NULL,\n"
     "  action text NOT NULL,\n"
     "  flag   text,\n"
     "  old    jsonb,\n"
     "  new    jsonb,\n"
     "  reason text\n"
     ");\n"
     "CREATE FUNCTION cutover.notify_flags() RETURNS trigger LANGUAGE plpgsql AS $$\n"
     "BEGIN PERFORM pg_notify('cutover_flags', NEW.name); RETURN NEW; END $$;\n"
     "CREATE TRIGGER flags_notify AFTER INSERT OR UPDATE ON cutover.flags\n"
     "  FOR EACH ROW EXECUTE FUNCTION cutover.notify_flags();\n"
     "CREATE TABLE cutover.backfill_runs (\n"
     "  id          bigserial PRIMARY KEY,\n"
     "  state       text NOT NULL DEFAULT 'running' CHECK (state IN ('running','paused',\n"
     "              'done','failed')),\n"
     "  started_at  timestamptz NOT NULL DEFAULT now(),\n"
     "  updated_at  timestamptz NOT NULL DEFAULT now(),\n"
     "  finished_at timestamptz,\n"
     "  total       bigint,\n"
     "  enqueued    bigint NOT NULL DEFAULT 0,\n"
     "  last_error  text\n"
     ");\n"},
    {2, "document generation, lease token",
     "ALTER TABLE cutover.documents\n"
     "  ADD COLUMN generation  bigint NOT NULL DEFAULT 1,\n"
     "  ADD COLUMN lease_token text;\n"
     "ALTER TABLE cutover.transitions ADD COLUMN generation bigint;\n"},
    {3, "document content type and filename",
     "ALTER TABLE cutover.documents\n"
     "  ADD COLUMN content_type text,\n"
     "  ADD COLUMN filename     text;\n"},
    {4, "document change notifications, last legacy read",
     "CREATE FUNCTION cutover.notify_documents() RETURNS trigger LANGUAGE plpgsql AS $$\n"
     "DECLARE r record; p text;\n"
     "BEGIN\n"
     "  IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;\n"
     "  IF TG_OP = 'DELETE' THEN\n"
     "    p := '- ' || octet_length(r.storage_key) || ' ' || r.storage_key;\n"
     "  ELSE\n"
     "    p := r.state || ' ' || octet_length(r.storage_key) || ' ' || r.storage_key || r.s3_key;\n"
     "    IF octet_length(p) > 7900 THEN\n"
     "      p := '- ' || octet_length(r.storage_key) || ' ' || r.storage_key;\n"
     "    END IF;\n"
     "  END IF;\n"
     "  IF octet_length(p) > 7900 THEN p := '*'; END IF;\n"
     "  PERFORM pg_notify('cutover_documents', p);\n"
     "  RETURN NULL;\n"
     "END $$;\n"
     "CREATE TRIGGER documents_notify_ins AFTER INSERT OR DELETE ON cutover.documents\n"
     "  FOR EACH ROW EXECUTE FUNCTION cutover.notify_documents();\n"
     "CREATE TRIGGER documents_notify_upd AFTER UPDATE ON cutover.documents\n"
     "  FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state\n"
     "                     OR OLD.s3_key IS DISTINCT FROM NEW.s3_key)\n"
     "  EXECUTE FUNCTION cutover.notify_documents();\n"
     "CREATE TABLE cutover.legacy_reads (\n"
     "  replica text PRIMARY KEY,\n"
     "  last_at timestamptz NOT NULL\n"
     ");\n"},
    {5, "verification: last check, S3 version id, mismatch detail",
     "ALTER TABLE cutover.documents\n"
     "  ADD COLUMN checked_at    timestamptz,\n"
     "  ADD COLUMN s3_version_id text,\n"
     "  ADD COLUMN mismatch      jsonb;\n"},
    {6, "shadow read mismatches",
     "CREATE TABLE cutover.shadow_mismatches (\n"
     "  id              bigserial PRIMARY KEY,\n"
     "  at              timestamptz NOT NULL DEFAULT now(),\n"
     "  storage_key     text NOT NULL,\n"
     "  class           text NOT NULL CHECK (class IN ('s3','legacy_transformed','both',\n"
     "                  's3_error','legacy_error')),\n"
     "  expected_sha256 text,\n"
     "  expected_size   bigint,\n"
     "  legacy_status   integer,\n"
     "  legacy_size     bigint,\n"
     "  legacy_sha256   text,\n"
     "  legacy_ms       double precision,\n"
     "  legacy_error    text,\n"
     "  s3_status       integer,\n"
     "  s3_size         bigint,\n"
     "  s3_sha256       text,\n"
     "  s3_ms           double precision,\n"
     "  s3_error        text,\n"
     "  replica         text\n"
     ");\n"
     "CREATE INDEX shadow_mismatches_key ON cutover.shadow_mismatches (storage_key, at);\n"},
    {7, "document answered sequence",
     "ALTER TABLE cutover.documents ADD COLUMN answered_seq bigint;\n"},
    {8, "queue indexes for every claim",
     "DROP INDEX cutover.documents_queue;\n"
     "CREATE INDEX documents_due ON cutover.documents (next_attempt_at)\n"
     "  WHERE state IN ('pending','mismatch','deleted');\n"
     "CREATE INDEX documents_due_origin ON cutover.documents (origin, next_attempt_at)\n"
     "  WHERE state IN ('pending','mismatch');\n"
     "CREATE INDEX documents_removals ON cutover.documents (next_attempt_at)\n"
     "  WHERE state = 'deleted';\n"},
};

const size_t pg_nmigrations = sizeof(pg_migrations) / sizeof(pg_migrations[0]);
