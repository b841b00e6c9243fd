//! `--store URL`: which database berth keeps its state in. `sqlite://PATH` (a file; the
//! default is `<state-dir>/berth.db`) or `postgres://...` / `postgresql://...` (libpq-style
//! URL: user, password, host, port, database, `sslmode` and the other parameters sqlx's
//! PostgreSQL driver reads). Owns the parsing, the URL handed to sqlx and the form shown in
//! messages (password hidden). Must not touch: the database (it only names it).

use super::StoreError;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;
use std::fmt;
use std::path::{Path, PathBuf};

/// The SQL dialect of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Postgres => "PostgreSQL",
        })
    }
}

/// A parsed `--store` value.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL, as given.
    Postgres(String),
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl StoreUrl {
    /// The default store: `berth.db` in the state directory.
    pub fn default_in(state_dir: &Path) -> StoreUrl {
        StoreUrl::Sqlite(state_dir.join("berth.db"))
    }

    /// Parses `sqlite://PATH`, `sqlite:PATH`, `postgres://...` or `postgresql://...`.
    pub fn parse(text: &str) -> Result<StoreUrl, StoreError> {
        let bad = |why: &str| StoreError::BadUrl {
            url: redact_password(text),
            why: why.to_string(),
        };
        if let Some(rest) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err(bad("it names no file"));
            }
            if rest.contains('?') {
                return Err(bad(
                    "berth sets the SQLite options itself; give the path without a query",
                ));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(rest)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
            return Ok(StoreUrl::Postgres(text.to_string()));
        }
        Err(bad("it must start with sqlite:// or postgres://"))
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            StoreUrl::Sqlite(_) => Dialect::Sqlite,
            StoreUrl::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The store for messages: the file's path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            StoreUrl::Sqlite(path) => path.display().to_string(),
            StoreUrl::Postgres(url) => redact_password(url),
        }
    }

    /// The URL sqlx's `Any` driver connects to (a SQLite file is created when missing,
    /// or opened read-only for a probe).
    pub(super) fn connect_url(&self, read_only: bool) -> String {
        match self {
            StoreUrl::Sqlite(path) => SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(!read_only)
                .read_only(read_only)
                .to_url_lossy()
                .to_string(),
            StoreUrl::Postgres(url) => url.clone(),
        }
    }
}

/// `url` with its password replaced by `***` (left as is when it does not parse).
fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_dialects_and_hides_the_password() {
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/berth/berth.db").unwrap(),
            StoreUrl::Sqlite(PathBuf::from("/var/lib/berth/berth.db"))
        );
        assert_eq!(
            StoreUrl::parse("sqlite:state/berth.db").unwrap(),
            StoreUrl::Sqlite(PathBuf::from("state/berth.db"))
        );
        let pg = StoreUrl::parse("postgres://berth:secret@db:5432/berth").unwrap();
        assert_eq!(pg.dialect(), Dialect::Postgres);
        assert_eq!(pg.display(), "postgres://berth:***@db:5432/berth");
        assert!(!format!("{pg:?}").contains("secret"));
    }

    #[test]
    fn refuses_other_schemes_with_the_reason() {
        let e = StoreUrl::parse("mysql://u:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sqlite:// or postgres://"), "{e}");
        assert!(!e.contains("pw"), "{e}");
        let e = StoreUrl::parse("sqlite://").unwrap_err().to_string();
        assert!(e.contains("names no file"), "{e}");
    }
}
