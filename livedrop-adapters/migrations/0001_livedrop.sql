-- livedrop schema. Every table is created unqualified, so it lands in the first
-- schema of the connection's search_path (one schema per deployment or per test).

CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL,
    display_name  text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('customer', 'creator', 'admin')),
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE follows (
    follower_id uuid        NOT NULL,
    creator_id  uuid        NOT NULL,
    followed_at timestamptz NOT NULL,
    PRIMARY KEY (follower_id, creator_id)
);
-- Followers of a creator, newest first (listing and fan-out keyset).
CREATE INDEX follows_creator_keyset ON follows (creator_id, followed_at DESC, follower_id DESC);
-- Creators a user follows, newest first.
CREATE INDEX follows_follower_keyset ON follows (follower_id, followed_at DESC, creator_id DESC);

CREATE TABLE products (
    id          uuid        PRIMARY KEY,
    creator_id  uuid        NOT NULL,
    title       text        NOT NULL,
    description text        NOT NULL,
    price_cents bigint      NOT NULL,
    currency    text        NOT NULL,
    image_url   text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL
);
CREATE INDEX products_keyset ON products (created_at DESC, id DESC);
CREATE INDEX products_creator_keyset ON products (creator_id, created_at DESC, id DESC);

CREATE TABLE drops (
    id             uuid        PRIMARY KEY,
    product_id     uuid        NOT NULL,
    creator_id     uuid        NOT NULL,
    title          text        NOT NULL,
    price_cents    bigint      NOT NULL,
    currency       text        NOT NULL,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    per_user_limit bigint      NOT NULL CHECK (per_user_limit >= 0),
    state          text        NOT NULL CHECK (state IN ('scheduled', 'live', 'ended', 'cancelled')),
    created_at     timestamptz NOT NULL
);
CREATE INDEX drops_keyset ON drops (created_at DESC, id DESC);
CREATE INDEX drops_creator_keyset ON drops (creator_id, created_at DESC, id DESC);
-- The scheduler's due_transitions query: one partial index per lagging state.
CREATE INDEX drops_due_start ON drops (starts_at, id) WHERE state = 'scheduled';
CREATE INDEX drops_due_end ON drops (ends_at) WHERE state = 'live';

-- The authoritative stock. The CHECKs make the invariant hold even against raw SQL.
CREATE TABLE inventory (
    drop_id     uuid   PRIMARY KEY REFERENCES drops (id) ON DELETE CASCADE,
    total_stock bigint NOT NULL CHECK (total_stock BETWEEN 0 AND 4294967295),
    available   bigint NOT NULL CHECK (available >= 0),
    reserved    bigint NOT NULL CHECK (reserved >= 0),
    sold        bigint NOT NULL CHECK (sold >= 0),
    -- Stock version: incremented by every movement, carried by stock events.
    version     bigint NOT NULL DEFAULT 0,
    CONSTRAINT inventory_balanced CHECK (available + reserved + sold = total_stock)
);

CREATE TABLE inventory_ledger (
    id         uuid        PRIMARY KEY,
    drop_id    uuid        NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
    kind       text        NOT NULL CHECK (kind IN ('initial', 'restock', 'shrink')),
    delta      bigint      NOT NULL,
    reason     text        NOT NULL,
    actor_id   uuid,
    total      bigint      NOT NULL,
    available  bigint      NOT NULL,
    reserved   bigint      NOT NULL,
    sold       bigint      NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX inventory_ledger_keyset ON inventory_ledger (drop_id, created_at DESC, id DESC);

CREATE TABLE orders (
    id               uuid        PRIMARY KEY,
    user_id          uuid        NOT NULL,
    drop_id          uuid        NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
    quantity         bigint      NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint      NOT NULL,
    total_cents      bigint      NOT NULL,
    currency         text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('reserved', 'confirmed', 'cancelled', 'expired')),
    idempotency_key  text        NOT NULL,
    fingerprint      text        NOT NULL,
    reserved_until   timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT orders_user_idempotency_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_user_keyset ON orders (user_id, created_at DESC, id DESC);
-- Units a buyer holds in a drop (the per-user limit).
CREATE INDEX orders_holding ON orders (drop_id, user_id) WHERE status IN ('reserved', 'confirmed');
-- The hold sweeper.
CREATE INDEX orders_hold_expiry ON orders (reserved_until) WHERE status = 'reserved';

CREATE TABLE idempotency_keys (
    user_id     uuid        NOT NULL,
    key         text        NOT NULL,
    fingerprint text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('in_flight', 'completed')),
    lease_until timestamptz,
    response    jsonb,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE notifications (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL,
    kind       text        NOT NULL,
    payload    jsonb       NOT NULL,
    dedup_key  text        NOT NULL,
    created_at timestamptz NOT NULL,
    read_at    timestamptz,
    CONSTRAINT notifications_user_dedup_key UNIQUE (user_id, dedup_key)
);
CREATE INDEX notifications_keyset ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread_keyset ON notifications (user_id, created_at DESC, id DESC)
    WHERE read_at IS NULL;

CREATE TABLE outbox (
    seq          bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    aggregate_id uuid        NOT NULL,
    version      bigint      NOT NULL,
    occurred_at  timestamptz NOT NULL,
    payload      jsonb       NOT NULL,
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

-- Wakes relays blocked in wait_for_append. One notification per statement, delivered
-- at commit (so never for a rolled-back append); the channel is per schema.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('livedrop_outbox_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_appended AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
