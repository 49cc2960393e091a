-- The holder of an in-flight key: complete and release act only with its token, so a
-- request whose lease was taken over never touches the new holder's claim.
ALTER TABLE idempotency_keys ADD COLUMN claim BLOB;
