-- The write stamps move to a column of their own, in a compact form (Profile.meta in
-- merge.py): an identify's event time and id are stored once per profile instead of
-- once per trait, which takes a profile row of nine traits from about 1,040 to 625
-- bytes. Workers read `stamps` and fall back to `trait_meta` for rows not rewritten
-- since; they write `stamps` and leave `trait_meta` null. A worker of the previous
-- release cannot read a null `trait_meta` and stops on such a row instead of
-- misreading it (docs/operations.md, "Kubernetes", on upgrading).
-- Both changes touch the catalog only: no rewrite, a lock held for moments. The lock
-- waits for transactions already using the table (a dashboard's long query) and
-- everything after it waits behind it, so it gives up after 10 s rather than stall
-- the workers and readers; run the migration again then.
SET LOCAL lock_timeout = '10s';
ALTER TABLE profiles ADD COLUMN stamps json;
ALTER TABLE profiles ALTER COLUMN trait_meta DROP NOT NULL;
