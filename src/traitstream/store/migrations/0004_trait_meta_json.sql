-- The write stamps as json, not jsonb. Only the worker reads them, always whole, and
-- jsonb made PostgreSQL parse every event time into a numeric on each write and print
-- it back on each read: most of the database's CPU per identify. json keeps the text
-- as written, once checked to be JSON; readers get the same values as before.
-- Rewrites the table (existing stamps are converted, nothing is lost).
ALTER TABLE profiles
    ALTER COLUMN trait_meta TYPE json USING trait_meta::json,
    ALTER COLUMN trait_meta SET DEFAULT '{}'::json;
