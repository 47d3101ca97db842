//! `cargo run -p users-api --bin migrate`: applies the SQL migrations to the
//! database named by `DATABASE_URL`.

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!("migrate: DATABASE_URL is required but not set");
            return ExitCode::FAILURE;
        }
    };
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        eprintln!("migrate: DATABASE_URL is not a valid PostgreSQL connection URL");
        return ExitCode::FAILURE;
    };
    let (mut client, connection) = match config.connect(tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(error) => {
            eprintln!("migrate: cannot connect to the database: {error}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(connection);
    match users_api::migrate::run(&mut client).await {
        Ok(applied) if applied.is_empty() => println!("migrate: schema is up to date"),
        Ok(applied) => println!("migrate: applied {}", applied.join(", ")),
        Err(error) => {
            eprintln!("migrate: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
