-- User ids that resolve to another user's profile: written by aliases (previousId ->
-- userId), read by the workers for every user id of a batch, and by the profile reads.
-- An erased or merged-away profile takes its aliases with it (the workers move those
-- of a merged profile to the profile it merged into first).
CREATE TABLE user_aliases (
    workspace_id text NOT NULL,
    user_id      text NOT NULL,
    profile_id   uuid NOT NULL REFERENCES profiles (profile_id) ON DELETE CASCADE,
    aliased_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX user_aliases_profile ON user_aliases (profile_id);
