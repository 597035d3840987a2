-- Tasks, the webhook outbox, and the trigger that fills the outbox when a task finishes
-- (so the delivery is written by the very transaction that finishes the task).
-- Times are Unix epoch seconds (REAL); JSON is TEXT.

CREATE TABLE tasks (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,  -- enqueue order, never reused
    id               TEXT    NOT NULL UNIQUE,
    status           TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    payload          TEXT    NOT NULL,
    idempotency_key  TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at           REAL    NOT NULL,
    timeout_seconds  REAL,
    deadline_at      REAL,
    target           TEXT,
    backend          TEXT,
    lease_owner      TEXT,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       REAL    NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    progress         TEXT,
    result           TEXT,
    error            TEXT,
    webhook_url      TEXT
);

-- Few indexes, mostly partial: every one is paid for on each state change.
-- claim: walk queued tasks in run order, O(log n) to the head
CREATE INDEX tasks_claim ON tasks (priority DESC, seq) WHERE status = 'queued';
-- expire_leases: only running tasks
CREATE INDEX tasks_running ON tasks (lease_expires_at) WHERE status = 'running';
-- unique while kept; tasks without a key cost nothing here
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id         TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    url             TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    delivered_at    REAL,
    last_error      TEXT,
    created_at      REAL    NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND next_attempt_at IS NOT NULL;
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id);

CREATE TRIGGER tasks_outbox AFTER UPDATE OF status ON tasks
WHEN NEW.webhook_url IS NOT NULL
 AND NEW.status IN ('succeeded', 'failed', 'cancelled')
 AND OLD.status NOT IN ('succeeded', 'failed', 'cancelled')
BEGIN
    INSERT INTO webhook_deliveries (task_id, url, body, next_attempt_at, created_at)
    VALUES (
        NEW.id,
        NEW.webhook_url,
        json_object(
            'event', 'task.finished',
            'id', NEW.id,
            'status', NEW.status,
            'attempts', NEW.attempts,
            'result', json(NEW.result),
            'error', json(NEW.error),
            'finished_at', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.finished_at, 'unixepoch')
        ),
        NEW.finished_at,
        NEW.finished_at
    );
END;
