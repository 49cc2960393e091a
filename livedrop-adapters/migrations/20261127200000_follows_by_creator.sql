-- A creator's followers in id order: a fan-out walks them so, so each batch's
-- notifications land in one stretch of the notifications' indexes led by the user.
-- The key keeps the same pairs unique; lookups by follower read
-- follows_follower_keyset.
ALTER TABLE follows
    DROP CONSTRAINT follows_pkey,
    ADD CONSTRAINT follows_pkey PRIMARY KEY (creator_id, follower_id);
