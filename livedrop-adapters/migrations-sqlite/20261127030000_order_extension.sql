-- A reserved order's hold may be extended once (POST /orders/{id}/extend): when it
-- was (microseconds since the epoch, like every time here), or NULL. Rows written
-- before this migration were never extended.
ALTER TABLE orders ADD COLUMN extended_at INTEGER;
