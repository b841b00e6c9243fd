-- Self-heal state per app, so a restart keeps a crash loop's backoff and quarantine: the
-- spec hash the repairs were made for, their times (JSON array of unix milliseconds, oldest
-- first), since when self-heal is quarantined (NULL while it only backs off), and what the
-- last repaired container did (exit or failed probe). One row per app, replaced whenever
-- the state changes; deleted with the app.
CREATE TABLE heal_state (
    app               TEXT    NOT NULL PRIMARY KEY,
    spec_hash         TEXT    NOT NULL,
    repairs           TEXT    NOT NULL,
    quarantined_since INTEGER,
    last_failure      TEXT,
    updated_at        INTEGER NOT NULL
);
