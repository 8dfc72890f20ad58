-- Binds each recorded command id to the command it was sent with: SHA-256
-- over the command's type, actor and canonical data
-- (`domain::command_fingerprint`). A later delivery with the same id and
-- fingerprint is a redelivery, answered with the stored reply; the same id
-- with another fingerprint is refused `id_reused`. Rows recorded before this
-- migration have no fingerprint (NULL): a delivery of their id is answered
-- as a redelivery, as it was before. Adding a nullable column without a
-- default rewrites nothing.
ALTER TABLE processed_commands ADD COLUMN fingerprint bytea;
