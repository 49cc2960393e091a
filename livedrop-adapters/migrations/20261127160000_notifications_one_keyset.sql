-- A user's notifications are listed through one keyset index. The partial index of
-- unread ones held the same entries as the full one for every notification until
-- it was read, so each notification cost one more index insert (a drop-live
-- fan-out writes one per follower); the unread listing now reads the full index
-- and skips the read ones.
DROP INDEX IF EXISTS notifications_unread_keyset;
