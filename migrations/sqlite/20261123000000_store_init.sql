-- berth store, initial schema.
-- Portable on purpose (a PostgreSQL backend will follow): times are INTEGER unix
-- milliseconds, JSON is TEXT, enums are lowercase kebab-case TEXT, no triggers, no
-- SQLite-only functions. AUTOINCREMENT keeps ids monotonic and never reused, which the
-- keyset paging of events and scaling decisions relies on (PostgreSQL: BIGSERIAL/IDENTITY).

-- One row per app berth currently knows about: the desired spec from the source, the
-- reconcile status, and the last spec that rolled out healthy (used when the source breaks).
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
    last_good_at          INTEGER,
    updated_at            INTEGER NOT NULL,
    last_reconciled_at    INTEGER
);

-- Rollouts that never became healthy; a (app, spec_hash) listed here is not retried until
-- the spec changes. Cleared per app.
CREATE TABLE failed_rollouts (
    id        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    app       TEXT    NOT NULL,
    spec_hash TEXT    NOT NULL,
    revision  TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX failed_rollouts_app_at ON failed_rollouts (app, at);

-- Replica counts chosen by the autoscaler (or an operator); git never carries them.
CREATE TABLE replica_overrides (
    app        TEXT    NOT NULL PRIMARY KEY,
    replicas   INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Append-only history of what berth did and why. app is NULL for host-wide events.
CREATE TABLE events (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    app         TEXT,
    event_type  TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    revision    TEXT,
    source_file TEXT,
    details     TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX events_app_id ON events (app, id);
CREATE INDEX events_at ON events (at);

-- Append-only history of autoscaler decisions with the inputs that led to them.
CREATE TABLE scaling_decisions (
    id            INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    app           TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    from_replicas INTEGER NOT NULL,
    to_replicas   INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    metrics       TEXT    NOT NULL,
    factors       TEXT    NOT NULL
);
CREATE INDEX scaling_decisions_app_id ON scaling_decisions (app, id);

-- One row per source revision berth has tried to apply, with the outcome of the latest try.
CREATE TABLE revisions (
    revision          TEXT    NOT NULL PRIMARY KEY,
    source            TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    message           TEXT    NOT NULL,
    first_recorded_at INTEGER NOT NULL,
    at                INTEGER NOT NULL
);
CREATE INDEX revisions_at ON revisions (at);
