-- Named queries for the SQLite engine (see sqlfiles.py). Parameters are :named.
-- Times are epoch seconds computed by the queue's clock and passed in as :now.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
);

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :now);

-- name: insert_task
INSERT INTO tasks (id, priority, payload, idempotency_key, max_attempts, run_at,
                   timeout_seconds, target, webhook_url, request_fingerprint, models,
                   checkpoint, created_at)
VALUES (:id, :priority, :payload, :idempotency_key, :max_attempts, :run_at,
        :timeout_seconds, :target, :webhook_url, :request_fingerprint, :models,
        :checkpoint, :now)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: get_task
SELECT * FROM tasks WHERE id = :id;

-- name: get_task_by_key
SELECT * FROM tasks WHERE idempotency_key = :idempotency_key;

-- name: task_deliveries
SELECT * FROM webhook_deliveries WHERE task_id = :id ORDER BY id;

-- name: claim
UPDATE tasks
   SET status = 'running',
       attempts = attempts + 1,
       lease_owner = :owner,
       lease_expires_at = :now + :lease_seconds,
       started_at = :now,
       deadline_at = :now + timeout_seconds,
       backend = :backend,
       progress = NULL
 WHERE seq = (
        SELECT seq FROM tasks INDEXED BY tasks_claim  -- never a sort of the whole queue
         WHERE status = 'queued'
           AND run_at <= :now
           AND (:targets IS NULL OR target IS NULL
                OR target IN (SELECT value FROM json_each(:targets)))
         ORDER BY priority DESC, seq
         LIMIT 1)
RETURNING *;

-- name: claim_placed
-- The claim of a claimer that says what it runs well (base.Fit): only tasks whose models it
-- has (:have is its files, each between newlines: one string search per need, no parse of a
-- list per claim), or that name none, or that have been due for :placement_wait (nobody
-- starves); among the first :window of those in run order, within the top priority, an
-- overdue one first, then one with its warm checkpoint, then FIFO.
UPDATE tasks
   SET status = 'running',
       attempts = attempts + 1,
       lease_owner = :owner,
       lease_expires_at = :now + :lease_seconds,
       started_at = :now,
       deadline_at = :now + timeout_seconds,
       backend = :backend,
       progress = NULL
 WHERE seq = (
        SELECT seq FROM (
                SELECT seq, priority, run_at, checkpoint FROM tasks INDEXED BY tasks_claim
                 WHERE status = 'queued'
                   AND run_at <= :now
                   AND (:targets IS NULL OR target IS NULL
                        OR target IN (SELECT value FROM json_each(:targets)))
                   AND (models IS NULL OR :have IS NULL OR run_at <= :now - :placement_wait
                        OR NOT EXISTS (SELECT 1 FROM json_each(models) AS need
                                        WHERE instr(:have, char(10) || need.value || char(10))
                                              = 0))
                 ORDER BY priority DESC, seq
                 LIMIT :window)
         ORDER BY priority DESC, run_at <= :now - :placement_wait DESC,
                  coalesce(checkpoint = :warm, 0) DESC, seq
         LIMIT 1)
RETURNING *;

-- name: next_run_at_placed
-- As next_run_at, for claim_placed: a task whose models the claimer lacks is its to take
-- only :placement_wait after it is due.
SELECT min(CASE WHEN models IS NULL OR :have IS NULL
                     OR NOT EXISTS (SELECT 1 FROM json_each(models) AS need
                                     WHERE instr(:have, char(10) || need.value || char(10))
                                           = 0)
                THEN run_at ELSE run_at + :placement_wait END) AS next_run_at
  FROM tasks INDEXED BY tasks_claim
 WHERE status = 'queued'
   AND (:targets IS NULL OR target IS NULL
        OR target IN (SELECT value FROM json_each(:targets)));

-- name: unclaim
-- A claim committed for a claimer that was cancelled before receiving it: back to queued in
-- its old place, the attempt not counted (a first attempt also forgets start and backend).
UPDATE tasks
   SET status = 'queued',
       attempts = attempts - 1,
       lease_owner = NULL,
       lease_expires_at = NULL,
       deadline_at = NULL,
       started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END,
       backend = CASE WHEN attempts = 1 THEN NULL ELSE backend END
 WHERE id = :id AND status = 'running' AND lease_owner = :owner AND attempts = :attempts
RETURNING *;

-- name: next_run_at
-- Due ones count too: after a claim that found nothing, a due task was skipped or just came.
SELECT min(run_at) AS next_run_at FROM tasks INDEXED BY tasks_claim
 WHERE status = 'queued'
   AND (:targets IS NULL OR target IS NULL
        OR target IN (SELECT value FROM json_each(:targets)));

-- name: heartbeat
UPDATE tasks
   SET lease_expires_at = :now + :lease_seconds,
       progress = coalesce(:progress, progress)
 WHERE id = :id AND status = 'running' AND lease_owner = :owner
RETURNING cancel_requested, lease_expires_at;

-- name: complete
-- A succeeded task reads done at 100 percent, whatever the last heartbeat managed to record.
UPDATE tasks
   SET status = 'succeeded', result = :result, finished_at = :now, lease_expires_at = NULL,
       progress = :progress, error = NULL  -- the errors of earlier attempts are in the result
 WHERE id = :id AND status = 'running' AND lease_owner = :owner
RETURNING *;

-- name: fail
-- The CASEs all read the row as it was: retry while attempts remain, unless cancelled.
-- A requeued task has no progress yet; a finished one keeps the stage it stopped in (the
-- agent's last word, else the last heartbeat's).
UPDATE tasks
   SET status = CASE WHEN cancel_requested THEN 'cancelled'
                     WHEN :retryable AND attempts < max_attempts THEN 'queued'
                     ELSE 'failed' END,
       run_at = CASE WHEN NOT cancel_requested AND :retryable AND attempts < max_attempts
                     THEN :now + :backoff_seconds ELSE run_at END,
       finished_at = CASE WHEN NOT cancel_requested AND :retryable AND attempts < max_attempts
                          THEN NULL ELSE :now END,
       lease_owner = CASE WHEN NOT cancel_requested AND :retryable AND attempts < max_attempts
                          THEN NULL ELSE lease_owner END,
       progress = CASE WHEN NOT cancel_requested AND :retryable AND attempts < max_attempts
                       THEN NULL ELSE coalesce(:progress, progress) END,
       error = :error,
       lease_expires_at = NULL,
       deadline_at = NULL
 WHERE id = :id AND status = 'running' AND lease_owner = :owner
RETURNING *;

-- name: cancel
UPDATE tasks
   SET status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
       finished_at = CASE WHEN status = 'queued' THEN :now ELSE finished_at END,
       cancel_requested = 1
 WHERE id = :id AND status IN ('queued', 'running')
RETURNING *;

-- name: expire_leases
-- Past the deadline: failed (timeout). Lease lost: requeued while attempts remain (without
-- the lost attempt's progress; a finished task keeps its last heartbeat's).
UPDATE tasks
   SET status = CASE WHEN cancel_requested THEN 'cancelled'
                     WHEN deadline_at <= :now THEN 'failed'
                     WHEN attempts < max_attempts THEN 'queued'
                     ELSE 'failed' END,
       error = CASE WHEN deadline_at <= :now THEN :timeout_error ELSE :lease_error END,
       finished_at = CASE WHEN NOT cancel_requested AND NOT coalesce(deadline_at <= :now, 0)
                           AND attempts < max_attempts THEN NULL ELSE :now END,
       lease_owner = CASE WHEN NOT cancel_requested AND NOT coalesce(deadline_at <= :now, 0)
                           AND attempts < max_attempts THEN NULL ELSE lease_owner END,
       run_at = CASE WHEN NOT cancel_requested AND NOT coalesce(deadline_at <= :now, 0)
                      AND attempts < max_attempts THEN :now ELSE run_at END,
       progress = CASE WHEN NOT cancel_requested AND NOT coalesce(deadline_at <= :now, 0)
                        AND attempts < max_attempts THEN NULL ELSE progress END,
       lease_expires_at = NULL,
       deadline_at = NULL
 WHERE status = 'running' AND (lease_expires_at <= :now OR deadline_at <= :now)
RETURNING *;

-- name: list_tasks
SELECT * FROM tasks
 WHERE (:status IS NULL OR status = :status)
   AND (:priority IS NULL OR priority = :priority)
   AND (:created_after IS NULL OR created_at > :created_after)
   AND (:created_before IS NULL OR created_at < :created_before)
   AND (:cursor IS NULL OR seq < :cursor)
 ORDER BY seq DESC
 LIMIT :limit;

-- name: position
SELECT t.status,
       (SELECT count(*) FROM tasks AS o INDEXED BY tasks_claim
         WHERE o.status = 'queued'
           AND (o.priority > t.priority OR (o.priority = t.priority AND o.seq < t.seq))
       ) + 1 AS position
  FROM tasks AS t
 WHERE t.id = :id;

-- name: stats
SELECT status, priority, count(*) AS count, min(created_at) AS oldest
  FROM tasks
 GROUP BY status, priority;

-- name: queued_models
-- Queued tasks per distinct file list, NULL (no placement) included: the autoscaler's
-- per-pool demand, all counts from one snapshot.
SELECT models, count(*) AS count FROM tasks INDEXED BY tasks_claim
 WHERE status = 'queued'
 GROUP BY models;

-- name: purge
-- Deliveries go with their task (ON DELETE CASCADE).
DELETE FROM tasks
 WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < :before
RETURNING id;

-- name: due_webhooks
UPDATE webhook_deliveries
   SET attempts = attempts + 1, next_attempt_at = :now + :lease_seconds
 WHERE id IN (SELECT id FROM webhook_deliveries
               WHERE delivered_at IS NULL AND next_attempt_at <= :now
               ORDER BY next_attempt_at, id
               LIMIT :limit)
RETURNING *;

-- name: webhook_delivered
UPDATE webhook_deliveries SET delivered_at = :now, next_attempt_at = NULL, last_error = NULL
 WHERE id = :id
RETURNING id;

-- name: webhook_failed
UPDATE webhook_deliveries SET last_error = :error, next_attempt_at = :next_attempt_at
 WHERE id = :id AND delivered_at IS NULL
RETURNING id;
