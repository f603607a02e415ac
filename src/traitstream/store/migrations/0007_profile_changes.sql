-- The profile changes stream (docs/guarantees.md, "Profile changes").
--
-- Each profile's last published version. Kept apart from `profiles` so that it
-- outlives an erasure: profile ids are derived from the user or anonymous id, and a
-- profile identified again after its erasure must go on from the next version, never
-- reuse one that consumers already hold with other content. It stores no trait.
CREATE TABLE profile_versions (
    profile_id uuid   PRIMARY KEY,
    version    bigint NOT NULL
);

-- Change records written in the transaction that applied them, until the broker has
-- acknowledged them: one row per batch and shard (profile_id modulo 64), so that a
-- batch costs the outbox a few dozen rows, index entries and deletes rather than one
-- of each per changed profile. The arrays are parallel: element i of each is one
-- change record, in the order the batch made them. `bodies` holds the Avro record
-- but its last field, the version (avro/changes.py); a null element is a tombstone
-- for the key. Relayed in `id` order per shard, one relay per shard at a time (an
-- advisory lock), so a profile's versions reach the topic in order.
CREATE TABLE change_outbox (
    id            bigserial   PRIMARY KEY,
    shard         int         NOT NULL,
    profile_ids   uuid[]      NOT NULL,
    workspace_ids text[]      NOT NULL,
    versions      bigint[]    NOT NULL,
    kinds         text[]      NOT NULL,
    bodies        bytea[]     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Stored out of line without compression: the records are small Avro, and
-- compressing them costs the server more than it saves.
ALTER TABLE change_outbox ALTER COLUMN bodies SET STORAGE EXTERNAL;
CREATE INDEX change_outbox_shard ON change_outbox (shard, id);
