-- Before going back to workers older than migration 0005_compact_stamps: write each
-- profile's stamps out in full into trait_meta again, the only column those workers
-- read (they stop on a row whose trait_meta is null). Stop every worker first, run
-- this once, then start the older release. It rewrites each profile written since
-- 0005 in one transaction: on a large table, run it in a quiet hour.
UPDATE profiles AS p
SET trait_meta = json_strip_nulls(json_build_object(
        'w', (SELECT coalesce(json_object_agg(s.key, json_build_array(
                         p.stamps -> 'e' -> ((s.value ->> 0)::int) -> 0,
                         p.stamps -> 'e' -> ((s.value ->> 0)::int) -> 1,
                         s.value -> 1)), '{}'::json)
              FROM json_each(p.stamps -> 'w') AS s),
        'o', (SELECT coalesce(json_object_agg(s.key, json_build_array(
                         p.stamps -> 'e' -> ((s.value ->> 0)::int) -> 0,
                         p.stamps -> 'e' -> ((s.value ->> 0)::int) -> 1,
                         s.value -> 1)), '{}'::json)
              FROM json_each(p.stamps -> 'o') AS s),
        'c', CASE WHEN p.stamps -> 'c' IS NOT NULL THEN json_build_array(
                         p.stamps -> 'e' -> ((p.stamps -> 'c' ->> 0)::int) -> 0,
                         p.stamps -> 'e' -> ((p.stamps -> 'c' ->> 0)::int) -> 1,
                         p.stamps -> 'c' -> 1) END)),  -- no "c" without a clear_all, as before
    stamps = NULL
WHERE p.stamps IS NOT NULL;
