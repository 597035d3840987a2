-- Tasks, the webhook outbox, and triggers: the outbox row is written by the transaction that
-- finishes a task, and changes of watched tasks NOTIFY cf_task.<schema> (payload: task id).
-- (New work is announced on cf_work.<schema> by the engine, after its commit.)
-- Runs with search_path set to the queue's schema.

CREATE TABLE tasks (
    id               text        PRIMARY KEY,
    seq              bigint      GENERATED ALWAYS AS IDENTITY,  -- enqueue order
    status           text        NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         integer     NOT NULL DEFAULT 0,
    payload          jsonb       NOT NULL,
    idempotency_key  text,
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at           timestamptz NOT NULL,
    timeout_seconds  double precision,
    deadline_at      timestamptz,
    target           text,
    backend          text,
    lease_owner      text,
    lease_expires_at timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    progress         jsonb,
    result           jsonb,
    error            jsonb,
    webhook_url      text,
    watched          boolean     NOT NULL DEFAULT false  -- someone waits: NOTIFY changes
);

-- Few indexes, mostly partial: a state change is not a HOT update, so every index is paid for
-- on every claim and finish. Hence no index on seq alone (it cost a fifth of claim+complete
-- throughput): `list` sorts, which is fine for an admin view of a table `purge` keeps small.
-- claim: the head of the queued tasks in run order, O(log n) however deep the queue
CREATE INDEX tasks_claim ON tasks (priority DESC, seq) WHERE status = 'queued';
-- expire_leases: only running tasks
CREATE INDEX tasks_running ON tasks (lease_expires_at) WHERE status = 'running';
-- unique while kept; tasks without a key cost nothing here
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id         text        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    url             text        NOT NULL,
    body            jsonb       NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    delivered_at    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND next_attempt_at IS NOT NULL;
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id);

CREATE FUNCTION tasks_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (task_id, url, body, next_attempt_at, created_at)
    VALUES (
        NEW.id,
        NEW.webhook_url,
        jsonb_build_object(
            'event', 'task.finished',
            'id', NEW.id,
            'status', NEW.status,
            'attempts', NEW.attempts,
            'result', NEW.result,
            'error', NEW.error,
            'finished_at',
            to_char(NEW.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        ),
        NEW.finished_at,
        NEW.finished_at
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_outbox AFTER UPDATE OF status ON tasks
FOR EACH ROW
WHEN (NEW.webhook_url IS NOT NULL
      AND NEW.status IN ('succeeded', 'failed', 'cancelled')
      AND OLD.status NOT IN ('succeeded', 'failed', 'cancelled'))
EXECUTE FUNCTION tasks_outbox();

CREATE FUNCTION tasks_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cf_task.' || TG_TABLE_SCHEMA, NEW.id);
    RETURN NULL;
END;
$$;

-- Only for watched tasks: NOTIFY serializes committing transactions (a cluster-wide lock
-- held through the commit), so the hot path (claim, complete) must not notify in vain.
CREATE TRIGGER tasks_notify_change AFTER UPDATE ON tasks
FOR EACH ROW WHEN (NEW.watched
                   AND (OLD.status IS DISTINCT FROM NEW.status
                        OR OLD.progress IS DISTINCT FROM NEW.progress
                        OR OLD.cancel_requested IS DISTINCT FROM NEW.cancel_requested))
EXECUTE FUNCTION tasks_notify_change();
