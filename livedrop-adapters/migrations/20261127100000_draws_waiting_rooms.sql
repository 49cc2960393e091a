-- Draw drops: the public record of the draw on the drop (the revealed seed stays
-- NULL until the draw), the secret seed in a table no drop read joins.
ALTER TABLE drops ADD COLUMN draw_entries_close_at timestamptz;
ALTER TABLE drops ADD COLUMN draw_commitment text;
ALTER TABLE drops ADD COLUMN draw_seed text;
ALTER TABLE drops ADD COLUMN drawn_at timestamptz;
-- Waiting rooms: their settings (all NULL when the drop has none).
ALTER TABLE drops ADD COLUMN room_admit_per_minute bigint
    CHECK (room_admit_per_minute BETWEEN 0 AND 4294967295);
ALTER TABLE drops ADD COLUMN room_token_seconds bigint
    CHECK (room_token_seconds BETWEEN 0 AND 4294967295);
ALTER TABLE drops ADD COLUMN room_opens_minutes_before bigint
    CHECK (room_opens_minutes_before BETWEEN 0 AND 4294967295);

CREATE TABLE draw_secrets (
    drop_id uuid PRIMARY KEY REFERENCES drops (id) ON DELETE CASCADE,
    seed    text NOT NULL
);

-- One entry per buyer and drop; rank, result and order once drawn.
CREATE TABLE draw_entries (
    drop_id    uuid        NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL,
    sku        text        NOT NULL,
    quantity   bigint      NOT NULL CHECK (quantity BETWEEN 1 AND 4294967295),
    token      text        NOT NULL,
    entered_at timestamptz NOT NULL,
    result     text        NOT NULL DEFAULT 'pending',
    rank       bigint,
    order_id   uuid,
    PRIMARY KEY (drop_id, user_id)
);
CREATE INDEX draw_entries_rank ON draw_entries (drop_id, rank);

-- A waiting room's queue. Who joined before the start has no `seq` and no
-- `admit_at` (their order is by (shuffle_key, user_id), fixed at the start); later
-- arrivals get their join sequence and admission slot at their join.
CREATE TABLE queue_entries (
    drop_id     uuid        NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
    user_id     uuid        NOT NULL,
    joined_at   timestamptz NOT NULL,
    shuffle_key bigint      NOT NULL,
    seq         bigint,
    admit_at    timestamptz,
    PRIMARY KEY (drop_id, user_id)
);
CREATE INDEX queue_entries_pre ON queue_entries (drop_id, shuffle_key, user_id)
    WHERE seq IS NULL;
CREATE UNIQUE INDEX queue_entries_post ON queue_entries (drop_id, seq);
