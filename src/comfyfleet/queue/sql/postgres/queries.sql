-- Named queries for the PostgreSQL engine (see sqlfiles.py). Parameters are %(named)s.
-- Times come from the queue's clock as %(now)s, so tests can move time instead of sleeping.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: lock_migrations
SELECT pg_advisory_xact_lock(hashtext('comfyfleet.queue.migrate:' || %(schema)s));

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: insert_task
INSERT INTO tasks (id, priority, payload, idempotency_key, max_attempts, run_at,
                   timeout_seconds, target, webhook_url, request_fingerprint, models,
                   checkpoint, created_at)
VALUES (%(id)s, %(priority)s, %(payload)s, %(idempotency_key)s, %(max_attempts)s, %(run_at)s,
        %(timeout_seconds)s, %(target)s, %(webhook_url)s, %(request_fingerprint)s, %(models)s,
        %(checkpoint)s, %(now)s)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: announce_work
-- Sent after the commit that made work claimable (see postgres.py for why not in a trigger).
SELECT pg_notify(%(channel)s, '') AS sent;

-- name: watch_task
-- From now on changes of this task are NOTIFYed (to every replica's waiters). The row lock
-- this takes is what orders it with a concurrent change (see PostgresQueue._watching).
UPDATE tasks SET watched = true WHERE id = %(id)s AND NOT watched
RETURNING id, status;

-- name: get_task
SELECT * FROM tasks WHERE id = %(id)s;

-- name: get_task_by_key
SELECT * FROM tasks WHERE idempotency_key = %(idempotency_key)s;

-- name: task_deliveries
SELECT * FROM webhook_deliveries WHERE task_id = %(id)s ORDER BY id;

-- name: claim
-- SKIP LOCKED: concurrent claimers (any replica) each take a different head task.
UPDATE tasks
   SET status = 'running',
       attempts = attempts + 1,
       lease_owner = %(owner)s,
       lease_expires_at = %(now)s + make_interval(secs => %(lease_seconds)s),
       started_at = %(now)s,
       deadline_at = %(now)s + make_interval(secs => timeout_seconds),
       backend = %(backend)s,
       progress = NULL
 WHERE id = (
        SELECT id FROM tasks
         WHERE status = 'queued'
           AND run_at <= %(now)s
           AND (%(targets)s::text[] IS NULL OR target IS NULL
                OR target = ANY (%(targets)s::text[]))
         ORDER BY priority DESC, seq
         LIMIT 1
           FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: claim_placed
-- The claim of a claimer that says what it runs well (base.Fit): only tasks whose models it
-- has (have is its files, each between newlines: one string search per need), or that name
-- none, or that have been due for placement_wait (nobody starves); among the
-- first `window` of those in run order, within the top priority, an overdue one first, then
-- one with its warm checkpoint, then FIFO. Only the chosen row is locked (SKIP LOCKED: a
-- candidate another claim holds is passed over).
UPDATE tasks
   SET status = 'running',
       attempts = attempts + 1,
       lease_owner = %(owner)s,
       lease_expires_at = %(now)s + make_interval(secs => %(lease_seconds)s),
       started_at = %(now)s,
       deadline_at = %(now)s + make_interval(secs => timeout_seconds),
       backend = %(backend)s,
       progress = NULL
 WHERE id = (
        SELECT id FROM tasks
         WHERE id = ANY (ARRAY(  -- the window first (an index walk), then a look-up of each
                SELECT id FROM tasks
                 WHERE status = 'queued'
                   AND run_at <= %(now)s
                   AND (%(targets)s::text[] IS NULL OR target IS NULL
                        OR target = ANY (%(targets)s::text[]))
                   AND (models IS NULL OR %(have)s::text IS NULL
                        OR run_at <= %(now)s - make_interval(secs => %(placement_wait)s)
                        OR NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(models) AS need
                                        WHERE strpos(%(have)s::text, E'\n' || need || E'\n')
                                              = 0))
                 ORDER BY priority DESC, seq
                 LIMIT %(window)s))
           AND status = 'queued'
         ORDER BY priority DESC,
                  run_at <= %(now)s - make_interval(secs => %(placement_wait)s) DESC,
                  coalesce(checkpoint = %(warm)s::text, false) DESC, seq
         LIMIT 1
           FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: next_run_at_placed
-- As next_run_at, for claim_placed: a task whose models the claimer lacks is its to take
-- only placement_wait after it is due.
SELECT min(CASE WHEN models IS NULL OR %(have)s::text IS NULL
                     OR NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(models) AS need
                                     WHERE strpos(%(have)s::text, E'\n' || need || E'\n') = 0)
                THEN run_at
                ELSE run_at + make_interval(secs => %(placement_wait)s) END) AS next_run_at
  FROM tasks
 WHERE status = 'queued'
   AND (%(targets)s::text[] IS NULL OR target IS NULL OR target = ANY (%(targets)s::text[]));

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
 WHERE id = %(id)s AND status = 'running' AND lease_owner = %(owner)s
   AND attempts = %(attempts)s
RETURNING *;

-- name: next_run_at
-- Due ones count too: after a claim that found nothing, a due task was skipped (locked).
SELECT min(run_at) AS next_run_at FROM tasks
 WHERE status = 'queued'
   AND (%(targets)s::text[] IS NULL OR target IS NULL OR target = ANY (%(targets)s::text[]));

-- name: heartbeat
UPDATE tasks
   SET lease_expires_at = %(now)s + make_interval(secs => %(lease_seconds)s),
       progress = coalesce(%(progress)s, progress)
 WHERE id = %(id)s AND status = 'running' AND lease_owner = %(owner)s
RETURNING cancel_requested, lease_expires_at;

-- name: complete
-- A succeeded task reads done at 100 percent, whatever the last heartbeat managed to record.
UPDATE tasks
   SET status = 'succeeded', result = %(result)s, finished_at = %(now)s,
       lease_expires_at = NULL, progress = %(progress)s,
       error = NULL  -- the errors of earlier attempts are in the result
 WHERE id = %(id)s AND status = 'running' AND lease_owner = %(owner)s
RETURNING *;

-- name: fail
-- The CASEs all read the row as it was: retry while attempts remain, unless cancelled.
-- A requeued task has no progress yet; a finished one keeps the stage it stopped in (the
-- agent's last word, else the last heartbeat's).
UPDATE tasks
   SET status = CASE WHEN cancel_requested THEN 'cancelled'
                     WHEN %(retryable)s AND attempts < max_attempts THEN 'queued'
                     ELSE 'failed' END,
       run_at = CASE WHEN NOT cancel_requested AND %(retryable)s AND attempts < max_attempts
                     THEN %(now)s + make_interval(secs => %(backoff_seconds)s)
                     ELSE run_at END,
       finished_at = CASE WHEN NOT cancel_requested AND %(retryable)s
                               AND attempts < max_attempts
                          THEN NULL ELSE %(now)s END,
       lease_owner = CASE WHEN NOT cancel_requested AND %(retryable)s
                               AND attempts < max_attempts
                          THEN NULL ELSE lease_owner END,
       progress = CASE WHEN NOT cancel_requested AND %(retryable)s AND attempts < max_attempts
                       THEN NULL ELSE coalesce(%(progress)s, progress) END,
       error = %(error)s,
       lease_expires_at = NULL,
       deadline_at = NULL
 WHERE id = %(id)s AND status = 'running' AND lease_owner = %(owner)s
RETURNING *;

-- name: cancel
UPDATE tasks
   SET status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
       finished_at = CASE WHEN status = 'queued' THEN %(now)s ELSE finished_at END,
       cancel_requested = true
 WHERE id = %(id)s AND status IN ('queued', 'running')
RETURNING *;

-- name: expire_leases
-- Past the deadline: failed (timeout). Lease lost: requeued while attempts remain (without
-- the lost attempt's progress; a finished task keeps its last heartbeat's).
WITH expired AS (
    SELECT id,
           coalesce(deadline_at <= %(now)s, false) AS overdue,
           NOT cancel_requested AND NOT coalesce(deadline_at <= %(now)s, false)
               AND attempts < max_attempts AS retry
      FROM tasks
     WHERE status = 'running' AND (lease_expires_at <= %(now)s OR deadline_at <= %(now)s)
       FOR UPDATE SKIP LOCKED
)
UPDATE tasks AS t
   SET status = CASE WHEN t.cancel_requested THEN 'cancelled'
                     WHEN e.retry THEN 'queued'
                     ELSE 'failed' END,
       error = CASE WHEN e.overdue THEN %(timeout_error)s ELSE %(lease_error)s END,
       finished_at = CASE WHEN e.retry THEN NULL ELSE %(now)s END,
       lease_owner = CASE WHEN e.retry THEN NULL ELSE t.lease_owner END,
       run_at = CASE WHEN e.retry THEN %(now)s ELSE t.run_at END,
       progress = CASE WHEN e.retry THEN NULL ELSE t.progress END,
       lease_expires_at = NULL,
       deadline_at = NULL
  FROM expired AS e
 WHERE t.id = e.id
RETURNING t.*;

-- name: list_tasks
SELECT * FROM tasks
 WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(priority)s::integer IS NULL OR priority = %(priority)s::integer)
   AND (%(created_after)s::timestamptz IS NULL OR created_at > %(created_after)s::timestamptz)
   AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s::timestamptz)
   AND (%(cursor)s::bigint IS NULL OR seq < %(cursor)s::bigint)
 ORDER BY seq DESC
 LIMIT %(limit)s;

-- name: position
SELECT t.status,
       (SELECT count(*) FROM tasks AS o
         WHERE o.status = 'queued'
           AND (o.priority > t.priority OR (o.priority = t.priority AND o.seq < t.seq))
       ) + 1 AS position
  FROM tasks AS t
 WHERE t.id = %(id)s;

-- name: stats
SELECT status, priority, count(*) AS count, min(created_at) AS oldest
  FROM tasks
 GROUP BY status, priority;

-- name: queued_models
-- Queued tasks per distinct file list, NULL (no placement) included: the autoscaler's
-- per-pool demand, all counts from one snapshot.
SELECT models, count(*) AS count FROM tasks
 WHERE status = 'queued'
 GROUP BY models;

-- name: purge
-- Deliveries go with their task (ON DELETE CASCADE).
DELETE FROM tasks
 WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < %(before)s
RETURNING id;

-- name: due_webhooks
UPDATE webhook_deliveries
   SET attempts = attempts + 1,
       next_attempt_at = %(now)s + make_interval(secs => %(lease_seconds)s)
 WHERE id IN (SELECT id FROM webhook_deliveries
               WHERE delivered_at IS NULL AND next_attempt_at <= %(now)s
               ORDER BY next_attempt_at, id
               LIMIT %(limit)s
                 FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: webhook_delivered
UPDATE webhook_deliveries
   SET delivered_at = %(now)s, next_attempt_at = NULL, last_error = NULL
 WHERE id = %(id)s
RETURNING id;

-- name: webhook_failed
UPDATE webhook_deliveries SET last_error = %(error)s, next_attempt_at = %(next_attempt_at)s
 WHERE id = %(id)s AND delivered_at IS NULL
RETURNING id;
