-- What an idempotent submit was asked to do (a hash of the request, made by the caller), so a
-- key reused for another request is refused instead of answered with the first task.
-- NULL on rows from before this migration, and for callers that send none: those are not
-- compared.
ALTER TABLE tasks ADD COLUMN request_fingerprint TEXT;
