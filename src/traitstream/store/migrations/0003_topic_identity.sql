-- The broker's id of the topic the offsets belong to. A topic deleted and created
-- again under the same name starts its offsets over; its new id tells the worker
-- to forget the old offsets instead of skipping every new record.
ALTER TABLE applied_offsets ADD COLUMN topic_id text;
