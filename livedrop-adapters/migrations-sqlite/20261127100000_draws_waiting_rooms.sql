-- Draw drops: the public record of the draw on the drop (the revealed seed stays
-- NULL until the draw), the secret seed in a table no drop read joins.
ALTER TABLE drops ADD COLUMN draw_entries_close_at INTEGER;
ALTER TABLE drops ADD COLUMN draw_commitment TEXT;
ALTER TABLE drops ADD COLUMN draw_seed TEXT;
ALTER TABLE drops ADD COLUMN drawn_at INTEGER;
-- Waiting rooms: their settings (all NULL when the drop has none).
ALTER TABLE drops ADD COLUMN room_admit_per_minute INTEGER
    CHECK (room_admit_per_minute BETWEEN 0 AND 4294967295);
ALTER TABLE drops ADD COLUMN room_token_seconds INTEGER
    CHECK (room_token_seconds BETWEEN 0 AND 4294967295);
ALTER TABLE drops ADD COLUMN room_opens_minutes_before INTEGER
    CHECK (room_opens_minutes_before BETWEEN 0 AND 4294967295);

CREATE TABLE draw_secrets (
    drop_id BLOB PRIMARY KEY REFERENCES drops (id) ON DELETE CASCADE,
    seed    TEXT NOT NULL
) STRICT;

-- One entry per buyer and drop; rank, result and order once drawn.
CREATE TABLE draw_entries (
    drop_id    BLOB    NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
    user_id    BLOB    NOT NULL,
    sku        TEXT    NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 4294967295),
    token      TEXT    NOT NULL,
    entered_at INTEGER NOT NULL,
    result     TEXT    NOT NULL DEFAULT 'pending',
    rank       INTEGER,
    order_id   BLOB,
    PRIMARY KEY (drop_id, user_id)
) STRICT;
CREATE INDEX draw_entries_rank ON draw_entries (drop_id, rank);

-- A waiting room's queue. Who joined before the start has no `seq` and no
-- `admit_at` (their order is by (shuffle_key, user_id), fixed at the start); later
-- arrivals get their join sequence and admission slot at their join.
CREATE TABLE queue_entries (
    drop_id     BLOB    NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
    user_id     BLOB    NOT NULL,
    joined_at   INTEGER NOT NULL,
    shuffle_key INTEGER NOT NULL,
    seq         INTEGER,
    admit_at    INTEGER,
    PRIMARY KEY (drop_id, user_id)
) STRICT;
CREATE INDEX queue_entries_pre ON queue_entries (drop_id, shuffle_key, user_id)
    WHERE seq IS NULL;
CREATE UNIQUE INDEX queue_entries_post ON queue_entries (drop_id, seq);
