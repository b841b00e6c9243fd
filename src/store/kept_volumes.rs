//! The `kept_volumes` table: anonymous volumes (an image's `VOLUME`) that stayed on the host
//! when berth removed a container of an app still in the source (scale-in, a failed start,
//! the old side of a rollout), so that removing the app later deletes them too instead of
//! leaving unlabelled volumes behind. Owns that table's SQL. Must not touch: the volumes
//! themselves (the mutating runtime deletes them), the decision which ones go.

use super::{Store, StoreError};

impl Store {
    /// Remembers that `volumes` of `app` stayed on the host (`now_ms`: unix ms). A volume
    /// already recorded keeps one row (its app and time are updated).
    pub async fn record_kept_volumes(
        &self,
        app: &str,
        volumes: &[String],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        for volume in volumes {
            self.write(
                "recording a kept anonymous volume",
                sqlx::query(
                    "INSERT INTO kept_volumes (volume, app, kept_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (volume) DO UPDATE SET \
                         app = excluded.app, kept_at = excluded.kept_at",
                )
                .bind(volume)
                .bind(app)
                .bind(now_ms),
            )
            .await?;
        }
        Ok(())
    }

    /// The anonymous volumes recorded for `app`, sorted.
    pub async fn kept_volumes(&self, app: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT volume FROM kept_volumes WHERE app = $1 ORDER BY volume")
                .bind(app)
                .fetch_all(&self.pool)
                .await
                .map_err(self.query_error("listing kept anonymous volumes"))?;
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    /// Forgets `volumes` (they are gone from the host).
    pub async fn forget_kept_volumes(&self, volumes: &[String]) -> Result<(), StoreError> {
        for volume in volumes {
            self.write(
                "forgetting a kept anonymous volume",
                sqlx::query("DELETE FROM kept_volumes WHERE volume = $1").bind(volume),
            )
            .await?;
        }
        Ok(())
    }
}
