-- The leader lease of highly available controllers (PostgreSQL only; a SQLite store has
-- one controller, always the leader). One row: who holds the lease, its epoch (raised by
-- every change of holder: the fencing token every desired-state write is checked
-- against) and when it expires, in the database's clock (unix milliseconds), so the
-- controllers' clocks never have to agree.
CREATE TABLE leader_lease (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    holder     TEXT    NOT NULL,
    epoch      BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
INSERT INTO leader_lease (id, holder, epoch, expires_at) VALUES (1, '', 0, 0);
