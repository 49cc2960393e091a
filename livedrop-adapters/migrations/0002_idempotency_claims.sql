-- Each claim of an idempotency key gets a token: `complete` and `release` by a
-- holder whose lease was taken over match no row, so they never touch the new
-- holder's claim.
ALTER TABLE idempotency_keys ADD COLUMN claim uuid;
