//! Schema migrations, embedded from `shared/migrations/` and applied by the
//! `migrate` binary (never by the functions at cold start). refinery records
//! what ran in `refinery_schema_history`, so running it twice is harmless.

use refinery::embed_migrations;

embed_migrations!("migrations");

/// Applies every migration not yet applied, in the client's `search_path`.
/// Returns the names of those applied now.
pub async fn run(client: &mut tokio_postgres::Client) -> Result<Vec<String>, refinery::Error> {
    let report = migrations::runner().run_async(client).await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|migration| migration.to_string())
        .collect())
}
