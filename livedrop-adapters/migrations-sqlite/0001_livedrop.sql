-- livedrop schema for SQLite: the PostgreSQL schema (../migrations) in SQLite's terms.
-- Tables are STRICT, so a value of the wrong type is refused instead of stored.
-- Ids are 16-byte UUID blobs (their byte order is the UUID order); times are INTEGER
-- microseconds since the Unix epoch, UTC (so they order and compare as numbers);
-- JSON is text.

CREATE TABLE users (
    id            BLOB    PRIMARY KEY,
    email         TEXT    NOT NULL,
    -- The email lower-cased by the store (SQLite's lower() only folds ASCII).
    email_key     TEXT    NOT NULL,
    display_name  TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('customer', 'creator', 'admin')),
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX users_email_key ON users (email_key);

CREATE TABLE follows (
    follower_id BLOB    NOT NULL,
    creator_id  BLOB    NOT NULL,
    followed_at INTEGER NOT NULL,
    PRIMARY KEY (follower_id, creator_id)
) STRICT;
CREATE INDEX follows_creator_keyset ON follows (creator_id, followed_at DESC, follower_id DESC);
CREATE INDEX follows_follower_keyset ON follows (follower_id, followed_at DESC, creator_id DESC);

CREATE TABLE products (
    id          BLOB    PRIMARY KEY,
    creator_id  BLOB    NOT NULL,
    title       TEXT    NOT NULL,
    description TEXT    NOT NULL,
    -- "title description" lower-cased by the store, what text search scans.
    search_text TEXT    NOT NULL,
    price_cents INTEGER NOT NULL,
    currency    TEXT    NOT NULL,
    image_url   TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL
) STRICT;
CREATE INDEX products_keyset ON products (created_at DESC, id DESC);
CREATE INDEX products_creator_keyset ON products (creator_id, created_at DESC, id DESC);

CREATE TABLE drops (
    id             BLOB    PRIMARY KEY,
    product_id     BLOB    NOT NULL,
    creator_id     BLOB    NOT NULL,
    title          TEXT    NOT NULL,
    price_cents    INTEGER NOT NULL,
    currency       TEXT    NOT NULL,
    starts_at      INTEGER NOT NULL,
    ends_at        INTEGER NOT NULL,
    per_user_limit INTEGER NOT NULL CHECK (per_user_limit BETWEEN 0 AND 4294967295),
    state          TEXT    NOT NULL CHECK (state IN ('scheduled', 'live', 'ended', 'cancelled')),
    created_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX drops_keyset ON drops (created_at DESC, id DESC);
CREATE INDEX drops_creator_keyset ON drops (creator_id, created_at DESC, id DESC);
CREATE INDEX drops_due_start ON drops (starts_at, id) WHERE state = 'scheduled';
CREATE INDEX drops_due_end ON drops (ends_at) WHERE state = 'live';

-- The authoritative stock. The CHECKs make the invariant hold even against raw SQL.
CREATE TABLE inventory (
    drop_id     BLOB    PRIMARY KEY REFERENCES drops (id) ON DELETE CASCADE,
    total_stock INTEGER NOT NULL CHECK (total_stock BETWEEN 0 AND 4294967295),
    available   INTEGER NOT NULL CHECK (available >= 0),
    reserved    INTEGER NOT NULL CHECK (reserved >= 0),
    sold        INTEGER NOT NULL CHECK (sold >= 0),
    -- Stock version: incremented by every movement, carried by stock events.
    version     INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT inventory_balanced CHECK (available + reserved + sold = total_stock)
) STRICT;

CREATE TABLE inventory_ledger (
    id         BLOB    PRIMARY KEY,
    drop_id    BLOB    NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL CHECK (kind IN ('initial', 'restock', 'shrink')),
    delta      INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    actor_id   BLOB,
    total      INTEGER NOT NULL,
    available  INTEGER NOT NULL,
    reserved   INTEGER NOT NULL,
    sold       INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX inventory_ledger_keyset ON inventory_ledger (drop_id, created_at DESC, id DESC);

CREATE TABLE orders (
    id               BLOB    PRIMARY KEY,
    user_id          BLOB    NOT NULL,
    drop_id          BLOB    NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
    quantity         INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 4294967295),
    unit_price_cents INTEGER NOT NULL,
    total_cents      INTEGER NOT NULL,
    currency         TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('reserved', 'confirmed', 'cancelled', 'expired')),
    idempotency_key  TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    reserved_until   INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    CONSTRAINT orders_user_idempotency_key UNIQUE (user_id, idempotency_key)
) STRICT;
CREATE INDEX orders_user_keyset ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_holding ON orders (drop_id, user_id) WHERE status IN ('reserved', 'confirmed');
CREATE INDEX orders_hold_expiry ON orders (reserved_until) WHERE status = 'reserved';

CREATE TABLE idempotency_keys (
    user_id     BLOB    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('in_flight', 'completed')),
    lease_until INTEGER,
    response    TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE notifications (
    id         BLOB    PRIMARY KEY,
    user_id    BLOB    NOT NULL,
    kind       TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    dedup_key  TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    read_at    INTEGER,
    CONSTRAINT notifications_user_dedup_key UNIQUE (user_id, dedup_key)
) STRICT;
CREATE INDEX notifications_keyset ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread_keyset ON notifications (user_id, created_at DESC, id DESC)
    WHERE read_at IS NULL;

CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     BLOB    NOT NULL,
    event_type   TEXT    NOT NULL,
    aggregate_id BLOB    NOT NULL,
    version      INTEGER NOT NULL,
    occurred_at  INTEGER NOT NULL,
    payload      TEXT    NOT NULL,
    published_at INTEGER
) STRICT;
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
