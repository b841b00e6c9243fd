//! `StoreError`: the one error type of the store boundary. Owns the wording of every
//! database failure berth reports. Must not touch: the database itself (it only describes
//! failures), anything outside src/store.

use std::path::PathBuf;

/// Everything that can go wrong in the store. `location` is the database file path, or
/// `:memory:` for an in-memory store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the directory {} for the database: {source}; create it by hand or \
         choose a database path in a writable directory",
        dir.display()
    )]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot open the {dialect} database {location}: {source}; {}", open_hint(*dialect))]
    Open {
        location: String,
        dialect: super::Dialect,
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "--store {url} is not a store URL: {why}; use sqlite://PATH or \
         postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    BadUrl { url: String, why: String },

    /// The lease exists on PostgreSQL only (a SQLite store has one controller).
    #[error(
        "{operation} needs a PostgreSQL store, but {location} is SQLite; a SQLite store has \
         one controller, which always leads (use --store postgres://... for several)"
    )]
    NoLease {
        operation: &'static str,
        location: String,
    },

    #[error(
        "{operation} refused on the database {location}: this controller's leader lease \
         (epoch {epoch}) has moved on to another controller; only the leader writes desired \
         state, the next pass runs as a follower"
    )]
    Fenced {
        operation: &'static str,
        location: String,
        epoch: i64,
    },

    #[error(
        "cannot migrate the database {location}: {source}; if a newer berth wrote this file, \
         run that version, otherwise restore a backup or move the file aside to start fresh"
    )]
    Migrate {
        location: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    #[error(
        "{operation} failed on the database {location}: {source}; check that the database \
         server answers (PostgreSQL), free disk space and file permissions (SQLite), and that \
         no other program holds the database locked"
    )]
    Query {
        operation: &'static str,
        location: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("app {name:?} is not in the store; record its pass with record_app_pass first")]
    AppNotFound { name: String },

    #[error(
        "the database {location} holds a value berth cannot read: {detail}; if a newer berth \
         wrote it, run that version, otherwise move the file aside to start fresh"
    )]
    Corrupt { location: String, detail: String },
}

fn open_hint(dialect: super::Dialect) -> &'static str {
    match dialect {
        super::Dialect::Sqlite => {
            "check that the file is readable and writable by this user and is a berth SQLite \
             database"
        }
        super::Dialect::Postgres => {
            "check that PostgreSQL runs and accepts connections at that host and port, and \
             that the user, password and database in --store are right (the database must \
             exist)"
        }
    }
}
