-- A creator's followers in id order: a fan-out walks them so, off the key. The key
-- keeps the same pairs unique; lookups by follower read follows_follower_keyset.
CREATE TABLE follows_by_creator (
    follower_id BLOB    NOT NULL,
    creator_id  BLOB    NOT NULL,
    followed_at INTEGER NOT NULL,
    PRIMARY KEY (creator_id, follower_id)
) STRICT;
INSERT INTO follows_by_creator (follower_id, creator_id, followed_at)
    SELECT follower_id, creator_id, followed_at FROM follows;
DROP TABLE follows;
ALTER TABLE follows_by_creator RENAME TO follows;
CREATE INDEX follows_creator_keyset ON follows (creator_id, followed_at DESC, follower_id DESC);
CREATE INDEX follows_follower_keyset ON follows (follower_id, followed_at DESC, creator_id DESC);
