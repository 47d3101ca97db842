//! The cold-start baseline: what any tokio binary pays to reach the point a
//! function's init reaches. It opens the same two connections (tokio-postgres
//! and a redis multiplexed connection, concurrently, as `AppState::connect`
//! does), runs one query on each (`SELECT 1`, `PING`), prints `ready` and
//! exits. The suite times spawn -> `ready` and compares a function's
//! spawn -> first `next` poll with it.
//!
//! `DATABASE_URL` and `REDIS_URL` as for the functions.

use std::process::ExitCode;
use tokio_postgres::NoTls;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (Ok(database_url), Ok(redis_url)) =
        (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL"))
    else {
        eprintln!("baseline: DATABASE_URL and REDIS_URL are required");
        return ExitCode::FAILURE;
    };
    let postgres = async {
        let (client, connection) = tokio_postgres::connect(&database_url, NoTls).await?;
        tokio::spawn(connection);
        client.query_one("SELECT 1", &[]).await?;
        Ok::<_, tokio_postgres::Error>(client)
    };
    let redis = async {
        let mut connection = redis::Client::open(redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await?;
        Ok::<_, redis::RedisError>(connection)
    };
    match tokio::join!(postgres, redis) {
        (Ok(_client), Ok(_connection)) => {
            println!("ready");
            ExitCode::SUCCESS
        }
        (Err(error), _) => {
            eprintln!("baseline: postgres: {error}");
            ExitCode::FAILURE
        }
        (_, Err(error)) => {
            eprintln!("baseline: redis: {error}");
            ExitCode::FAILURE
        }
    }
}
