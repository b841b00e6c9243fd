-- berth store, initial schema, PostgreSQL dialect of migrations/sqlite/20261123000000_store_init.sql
-- (same tables, columns and indexes). Times are BIGINT unix milliseconds, JSON is TEXT,
-- ids are BIGINT identities (monotonic, never reused: keyset paging relies on it).

CREATE TABLE apps (
    name                  TEXT    NOT NULL PRIMARY KEY,
    spec_json             TEXT    NOT NULL,
    spec_hash             TEXT    NOT NULL,
    source_file           TEXT    NOT NULL,
    revision              TEXT    NOT NULL,
    status                TEXT    NOT NULL,
    last_error            TEXT,
    last_good_spec_json   TEXT,
    last_good_hash        TEXT,
    last_good_revision    TEXT,
    last_good_source_file TEXT,
    last_good_at          BIGINT,
    updated_at            BIGINT  NOT NULL,
    last_reconciled_at    BIGINT
);

CREATE TABLE failed_rollouts (
    id        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app       TEXT    NOT NULL,
    spec_hash TEXT    NOT NULL,
    revision  TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    at        BIGINT  NOT NULL
);
CREATE INDEX failed_rollouts_app_at ON failed_rollouts (app, at);

CREATE TABLE replica_overrides (
    app        TEXT    NOT NULL PRIMARY KEY,
    replicas   BIGINT  NOT NULL,
    reason     TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL
);

CREATE TABLE events (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app         TEXT,
    event_type  TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    revision    TEXT,
    source_file TEXT,
    details     TEXT    NOT NULL,
    at          BIGINT  NOT NULL
);
CREATE INDEX events_app_id ON events (app, id);
CREATE INDEX events_at ON events (at);

CREATE TABLE scaling_decisions (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app           TEXT    NOT NULL,
    at            BIGINT  NOT NULL,
    from_replicas BIGINT  NOT NULL,
    to_replicas   BIGINT  NOT NULL,
    reason        TEXT    NOT NULL,
    metrics       TEXT    NOT NULL,
    factors       TEXT    NOT NULL
);
CREATE INDEX scaling_decisions_app_id ON scaling_decisions (app, id);

CREATE TABLE revisions (
    revision          TEXT    NOT NULL PRIMARY KEY,
    source            TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    message           TEXT    NOT NULL,
    first_recorded_at BIGINT  NOT NULL,
    at                BIGINT  NOT NULL
);
CREATE INDEX revisions_at ON revisions (at);
