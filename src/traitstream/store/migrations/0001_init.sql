-- Profiles: one row per identified user or per anonymous visitor not yet identified.
CREATE TABLE profiles (
    profile_id   uuid PRIMARY KEY,
    workspace_id text        NOT NULL,
    user_id      text,
    traits       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Per-trait write stamps (event time, event id, op index): what keeps late writes out.
    trait_meta   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE UNIQUE INDEX profiles_workspace_user ON profiles (workspace_id, user_id)
    WHERE user_id IS NOT NULL;

-- Anonymous ids (device ids, visitor ids, anonymousId) and the profile each belongs to.
CREATE TABLE identities (
    workspace_id text NOT NULL,
    anonymous_id text NOT NULL,
    profile_id   uuid NOT NULL REFERENCES profiles (profile_id) ON DELETE CASCADE,
    linked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, anonymous_id)
);
CREATE INDEX identities_profile ON identities (profile_id);

-- The next offset to apply per partition, committed with the profiles it produced:
-- a redelivered record below it was applied already, whatever Redis remembers.
CREATE TABLE applied_offsets (
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    key_hash     bytea NOT NULL UNIQUE,
    workspace_id text NOT NULL,
    scopes       text[] NOT NULL,
    website_id   text,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id);
