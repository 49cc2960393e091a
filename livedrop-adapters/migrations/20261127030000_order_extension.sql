-- A reserved order's hold may be extended once (POST /orders/{id}/extend): when it
-- was, or NULL. Rows written before this migration were never extended.
ALTER TABLE orders ADD COLUMN extended_at timestamptz;
