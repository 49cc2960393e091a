-- Case-insensitive email uniqueness and product search compare text folded by
-- livedrop_core::text::fold_case (Unicode lower case, computed in Rust), never the
-- database's lower(), whose result depends on the collation (under "C" it folds
-- ASCII only; under ICU or libc it differs from Rust on letters such as 'İ' or a
-- final 'Σ'). Rows written before this migration are folded by lower() once.

ALTER TABLE users ADD COLUMN email_key text;
UPDATE users SET email_key = lower(email);
ALTER TABLE users ALTER COLUMN email_key SET NOT NULL;
DROP INDEX users_email_lower_key;
CREATE UNIQUE INDEX users_email_key ON users (email_key);

ALTER TABLE products ADD COLUMN search_text text;
UPDATE products SET search_text = lower(title || ' ' || description);
ALTER TABLE products ALTER COLUMN search_text SET NOT NULL;
