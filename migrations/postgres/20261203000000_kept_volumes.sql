-- Anonymous volumes left by removed containers of apps still in the source (PostgreSQL
-- dialect of migrations/sqlite/20261203000000_kept_volumes.sql).
CREATE TABLE kept_volumes (
    volume   TEXT    NOT NULL PRIMARY KEY,
    app      TEXT    NOT NULL,
    kept_at  BIGINT  NOT NULL
);
CREATE INDEX kept_volumes_app ON kept_volumes (app);
