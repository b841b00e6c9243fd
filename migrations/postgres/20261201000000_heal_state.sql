-- Self-heal state per app (PostgreSQL dialect of migrations/sqlite/20261201000000_heal_state.sql).
CREATE TABLE heal_state (
    app               TEXT    NOT NULL PRIMARY KEY,
    spec_hash         TEXT    NOT NULL,
    repairs           TEXT    NOT NULL,
    quarantined_since BIGINT,
    last_failure      TEXT,
    updated_at        BIGINT  NOT NULL
);
