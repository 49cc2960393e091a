-- Variants (sizes, colours): one stock row per variant, so buyers of different
-- sizes never queue on one row lock. A drop's inventory rows are keyed by
-- (drop_id, sku), `position` keeps the order the variants were defined in. Rows
-- written before this migration become the drop's one variant, sku 'default',
-- no label. The CHECKs of the invariant stay on each row: they hold per variant.
ALTER TABLE inventory ADD COLUMN sku text NOT NULL DEFAULT 'default';
ALTER TABLE inventory ADD COLUMN label text NOT NULL DEFAULT '';
ALTER TABLE inventory ADD COLUMN position integer NOT NULL DEFAULT 0 CHECK (position >= 0);
ALTER TABLE inventory ALTER COLUMN sku DROP DEFAULT;
ALTER TABLE inventory ALTER COLUMN position DROP DEFAULT;
ALTER TABLE inventory DROP CONSTRAINT inventory_pkey;
ALTER TABLE inventory ADD CONSTRAINT inventory_pkey PRIMARY KEY (drop_id, sku);
CREATE UNIQUE INDEX inventory_position ON inventory (drop_id, position);

-- The variant an order holds, and the variant a ledger entry moved.
ALTER TABLE orders ADD COLUMN sku text NOT NULL DEFAULT 'default';
ALTER TABLE inventory_ledger ADD COLUMN sku text NOT NULL DEFAULT 'default';

-- Buyers waiting for units of a sold-out variant: one entry per buyer and drop.
-- `seq` only grows, so it is the join order, even within one instant; a buyer who
-- joins again for the same sku keeps the row (and its place).
CREATE TABLE waitlist (
    seq       bigserial   PRIMARY KEY,
    drop_id   uuid        NOT NULL,
    sku       text        NOT NULL,
    user_id   uuid        NOT NULL,
    quantity  bigint      NOT NULL CHECK (quantity BETWEEN 1 AND 4294967295),
    joined_at timestamptz NOT NULL,
    CONSTRAINT waitlist_one_per_buyer UNIQUE (drop_id, user_id),
    CONSTRAINT waitlist_variant FOREIGN KEY (drop_id, sku)
        REFERENCES inventory (drop_id, sku) ON DELETE CASCADE
);
-- A variant's line, in join order.
CREATE INDEX waitlist_line ON waitlist (drop_id, sku, seq);
