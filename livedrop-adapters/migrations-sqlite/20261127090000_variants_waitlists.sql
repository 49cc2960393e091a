-- Variants (sizes, colours): one stock row per variant, keyed by (drop_id, sku),
-- `position` keeping the order the variants were defined in. SQLite cannot change
-- a primary key in place, so the table is rebuilt; rows written before this
-- migration become the drop's one variant, sku 'default', no label. The CHECKs of
-- the invariant stay on each row: they hold per variant.
CREATE TABLE inventory_variants (
    drop_id     BLOB    NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
    sku         TEXT    NOT NULL,
    label       TEXT    NOT NULL,
    position    INTEGER NOT NULL CHECK (position >= 0),
    total_stock INTEGER NOT NULL CHECK (total_stock BETWEEN 0 AND 4294967295),
    available   INTEGER NOT NULL CHECK (available >= 0),
    reserved    INTEGER NOT NULL CHECK (reserved >= 0),
    sold        INTEGER NOT NULL CHECK (sold >= 0),
    -- Stock version: incremented by every movement, carried by stock events.
    version     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (drop_id, sku),
    CONSTRAINT inventory_balanced CHECK (available + reserved + sold = total_stock)
) STRICT;
INSERT INTO inventory_variants
    (drop_id, sku, label, position, total_stock, available, reserved, sold, version)
SELECT drop_id, 'default', '', 0, total_stock, available, reserved, sold, version
FROM inventory;
DROP TABLE inventory;
ALTER TABLE inventory_variants RENAME TO inventory;
CREATE UNIQUE INDEX inventory_position ON inventory (drop_id, position);

-- The variant an order holds, and the variant a ledger entry moved.
ALTER TABLE orders ADD COLUMN sku TEXT NOT NULL DEFAULT 'default';
ALTER TABLE inventory_ledger ADD COLUMN sku TEXT NOT NULL DEFAULT 'default';

-- Buyers waiting for units of a sold-out variant: one entry per buyer and drop.
-- `seq` only grows (AUTOINCREMENT never reuses a number), so it is the join order,
-- even within one instant; a buyer who joins again for the same sku keeps the row.
CREATE TABLE waitlist (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    drop_id   BLOB    NOT NULL,
    sku       TEXT    NOT NULL,
    user_id   BLOB    NOT NULL,
    quantity  INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 4294967295),
    joined_at INTEGER NOT NULL,
    CONSTRAINT waitlist_one_per_buyer UNIQUE (drop_id, user_id),
    CONSTRAINT waitlist_variant FOREIGN KEY (drop_id, sku)
        REFERENCES inventory (drop_id, sku) ON DELETE CASCADE
) STRICT;
CREATE INDEX waitlist_line ON waitlist (drop_id, sku, seq);
