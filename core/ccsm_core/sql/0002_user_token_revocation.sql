-- Issue 12, item 4: tokens outlive a password change, and reactivation brings old tokens back.
-- When a user's password changes, or the user is deactivated, deleted or re-roled, every token issued before that
-- instant stops working: the API guard and the ws-gateway refuse a token whose `iat` is earlier than this column.
-- Kept in the database (not only in Redis) so that it survives a Redis restart without persistence and a process
-- restart. NULL: never revoked. UTC wall time with milliseconds, like every DATETIME this service writes.
-- Additive and backwards compatible: the old backend names its columns in every INSERT into users, and its one
-- `SELECT * FROM users` (web login) reads named fields only, so it neither writes nor shows this column.
ALTER TABLE users ADD COLUMN tokens_revoked_at DATETIME(3) NULL DEFAULT NULL;
