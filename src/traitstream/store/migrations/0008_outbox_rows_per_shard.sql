-- The change outbox holds one row per batch and shard rather than one per change
-- record: a batch's records of one shard travel together, in the order the batch
-- made them, so a batch costs the outbox a few dozen rows, index entries and deletes
-- instead of one of each per changed profile. The arrays are parallel: element i of
-- each is one change record. `bodies` is the Avro record but its last field, the
-- version (avro/changes.py); a null element is a tombstone for the key. Relayed in
-- `id` order per shard, one relay per shard at a time, as before.
CREATE TABLE change_outbox_rows (
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
ALTER TABLE change_outbox_rows ALTER COLUMN bodies SET STORAGE EXTERNAL;

-- Records still waiting in the old form keep their order: per shard, one row in id order.
INSERT INTO change_outbox_rows (shard, profile_ids, workspace_ids, versions, kinds, bodies, created_at)
SELECT shard, array_agg(profile_id ORDER BY id), array_agg(workspace_id ORDER BY id),
       array_agg(version ORDER BY id), array_agg(kind ORDER BY id), array_agg(body ORDER BY id),
       min(created_at)
FROM change_outbox GROUP BY shard ORDER BY shard;

DROP TABLE change_outbox;
ALTER TABLE change_outbox_rows RENAME TO change_outbox;
ALTER INDEX change_outbox_rows_pkey RENAME TO change_outbox_pkey;
ALTER SEQUENCE change_outbox_rows_id_seq RENAME TO change_outbox_id_seq;
CREATE INDEX change_outbox_shard ON change_outbox (shard, id);
