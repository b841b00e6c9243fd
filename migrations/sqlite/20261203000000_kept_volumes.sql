-- Anonymous volumes (an image's VOLUME) that stayed on the host when berth removed a
-- container of an app still in the source (scale-in, a failed start, the old side of a
-- rollout, which hands them to its replacement). Docker gives them no labels, so this is
-- how the later removal of the app finds and deletes them. One row per volume; deleted
-- once the volume is gone.
CREATE TABLE kept_volumes (
    volume   TEXT    NOT NULL PRIMARY KEY,
    app      TEXT    NOT NULL,
    kept_at  INTEGER NOT NULL
);
CREATE INDEX kept_volumes_app ON kept_volumes (app);
