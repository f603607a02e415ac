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
-- acknowledged them. `body` is the Avro record but its last field, the version
-- (avro/changes.py); null is a tombstone for the key. Relayed in `id` order per shard
-- (profile_id modulo 64), one relay per shard at a time (an advisory lock), so a
-- profile's versions reach the topic in order.
CREATE TABLE change_outbox (
    id           bigserial   PRIMARY KEY,
    shard        int         NOT NULL,
    profile_id   uuid        NOT NULL,
    workspace_id text        NOT NULL,
    version      bigint      NOT NULL,
    kind         text        NOT NULL,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX change_outbox_shard ON change_outbox (shard, id);
