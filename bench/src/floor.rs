//! The floor: what the same client libraries cost with nothing of ours around
//! them. A `find` hit cannot be cheaper than one Redis GET and a JSON decode;
//! a miss cannot be cheaper than GET + SELECT by primary key + SET. Each
//! caller gets its own connections, like the functions' instances.
//!
//! Two references sit beside the floors: the same round trips made with the
//! commands the cache's fill leases use (the `SET NX GET` get-or-lease
//! lookup, then the compare-and-set script), so a gap to the floor can be
//! split into what the protocol costs in Redis and what the library adds
//! around it.

use crate::measure::{BoxError, Check, Lane, Measured, phase};
use redis::AsyncCommands;
use redis::Script;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::{NoTls, Statement};
use users_api::testing::lookup_command;
use uuid::Uuid;

const SELECT: &str = "SELECT id, email, name, created_at, updated_at FROM users WHERE id = $1";

/// The cache's own fill script, sent raw: the "reference" rows.
static COMPARE_AND_SET: LazyLock<Script> =
    LazyLock::new(|| Script::new(users_api::testing::COMPARE_AND_SET_SCRIPT));

/// One caller's raw clients.
pub struct Clients {
    multiplexed: MultiplexedConnection,
    manager: ConnectionManager,
    pg: Arc<tokio_postgres::Client>,
    select: Statement,
    /// The key the GET floors read: a user body of the benchmark's size.
    key: String,
    /// Prefix of the never-written keys the GET+SELECT+SET floor misses on.
    fill_prefix: String,
    /// The same for the lease reference.
    lease_prefix: String,
    id: Uuid,
}

impl Clients {
    /// Connects, prepares the SELECT and stores `id`'s body under
    /// `{key_prefix}:floor:{caller}`.
    pub async fn connect(
        database_url: &str,
        redis_url: &str,
        key_prefix: &str,
        caller: usize,
        id: Uuid,
    ) -> Result<Self, BoxError> {
        let (pg, connection) = tokio_postgres::connect(database_url, NoTls).await?;
        tokio::spawn(connection);
        let select = pg.prepare(SELECT).await?;
        let client = redis::Client::open(redis_url)?;
        let mut multiplexed = client.get_multiplexed_async_connection().await?;
        let manager = client.get_connection_manager().await?;
        let user = to_user(
            &pg.query_opt(&select, &[&id])
                .await?
                .ok_or("floor user is missing")?,
        );
        let key = format!("{key_prefix}:floor:{caller}");
        let () = multiplexed
            .set_ex(&key, serde_json::to_vec(&user)?, 3600)
            .await?;
        Ok(Self {
            multiplexed,
            manager,
            pg: Arc::new(pg),
            select,
            key,
            fill_prefix: format!("{key_prefix}:floor:fill:{caller}:"),
            lease_prefix: format!("{key_prefix}:floor:lease:{caller}:"),
            id,
        })
    }

    /// Size of the value the GET floors read.
    pub async fn value_len(&self) -> Result<usize, BoxError> {
        let value: Vec<u8> = self.multiplexed.clone().get(&self.key).await?;
        Ok(value.len())
    }
}

/// Which floor to time.
#[derive(Clone, Copy)]
pub enum Floor {
    /// GET on a MultiplexedConnection + decode: the floor of a hit.
    Get,
    /// The same through a ConnectionManager, as the library holds it.
    GetManager,
    /// Prepared SELECT by primary key + row decode.
    Select,
    /// GET (nil) + SELECT + serialize + SET EX: the floor of a miss.
    GetSelectSet,
    /// Reference: the get-or-lease lookup on a present key + decode.
    Lease,
    /// Reference: get-or-lease (takes the lease) + SELECT + compare-and-set.
    LeaseSelectSet,
}

impl Floor {
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "floor: GET + decode",
            Self::GetManager => "floor: GET + decode (manager)",
            Self::Select => "floor: SELECT by pk",
            Self::GetSelectSet => "floor: GET + SELECT + SET",
            Self::Lease => "reference: lease lookup (hit) + decode",
            Self::LeaseSelectSet => "reference: lease lookup + SELECT + CAS script",
        }
    }
}

/// Times `floor` with one lane per client; `first` numbers the fill keys,
/// so that no two phases share one.
pub async fn measure(
    floor: Floor,
    clients: &[Arc<Clients>],
    first: usize,
    warmup: usize,
    iterations: usize,
) -> Result<Measured, BoxError> {
    let lanes = clients
        .iter()
        .map(|clients| {
            let clients = clients.clone();
            Lane {
                warmup: (first..first + warmup).collect(),
                items: (first + warmup..first + warmup + iterations).collect(),
                op: move |i: usize| call(floor, clients.clone(), i),
                after: None,
            }
        })
        .collect();
    phase(floor.name(), lanes).await
}

/// Raw calls have no bound of their own; this one keeps a stalled server
/// from stalling the suite.
const CALL_LIMIT: Duration = Duration::from_secs(5);

impl Clients {
    /// The miss floors' Postgres part: the SELECT, the row decoded and
    /// serialized as the body a fill stores.
    async fn select_body(&self) -> Result<Vec<u8>, BoxError> {
        let row = self
            .pg
            .query_opt(&self.select, &[&self.id])
            .await?
            .ok_or("row missing")?;
        Ok(serde_json::to_vec(&to_user(&row))?)
    }
}

async fn call(floor: Floor, clients: Arc<Clients>, i: usize) -> Check {
    let result = async {
        Ok::<Check, BoxError>(match floor {
            Floor::Get => {
                let value: Option<Vec<u8>> = clients.multiplexed.clone().get(&clients.key).await?;
                decode(value)
            }
            Floor::GetManager => {
                let value: Option<Vec<u8>> = clients.manager.clone().get(&clients.key).await?;
                decode(value)
            }
            Floor::Select => {
                let row = clients
                    .pg
                    .query_opt(&clients.select, &[&clients.id])
                    .await?;
                match row {
                    Some(row) => {
                        std::hint::black_box(to_user(&row));
                        None
                    }
                    None => Some("row missing".to_owned()),
                }
            }
            Floor::GetSelectSet => {
                let key = format!("{}{i}", clients.fill_prefix);
                let mut redis = clients.multiplexed.clone();
                let cached: Option<Vec<u8>> = redis.get(&key).await?;
                let body = clients.select_body().await?;
                let () = redis.set_ex(&key, body, 3600).await?;
                cached.map(|_| "fill key already set".to_owned())
            }
            Floor::Lease => {
                let mut redis = clients.multiplexed.clone();
                let value: Option<Vec<u8>> = lookup_command(&clients.key, b"lease", 3000)
                    .query_async(&mut redis)
                    .await?;
                decode(value)
            }
            Floor::LeaseSelectSet => {
                let key = format!("{}{i}", clients.lease_prefix);
                let token = format!("l{i}");
                let mut redis = clients.multiplexed.clone();
                let cached: Option<Vec<u8>> = lookup_command(&key, token.as_bytes(), 3000)
                    .query_async(&mut redis)
                    .await?;
                let body = clients.select_body().await?;
                let stored: i64 = COMPARE_AND_SET
                    .key(&key)
                    .arg(&token)
                    .arg(body)
                    .arg(3_600_000)
                    .invoke_async(&mut redis)
                    .await?;
                match (cached, stored) {
                    (None, 1) => None,
                    (Some(_), _) => Some("lease key already set".to_owned()),
                    _ => Some("compare-and-set refused".to_owned()),
                }
            }
        })
    };
    match tokio::time::timeout(CALL_LIMIT, result).await {
        Ok(result) => result.unwrap_or_else(|error| Some(error.to_string())),
        Err(_) => Some(format!("no answer within {CALL_LIMIT:?}")),
    }
}

fn decode(value: Option<Vec<u8>>) -> Check {
    match value {
        None => Some("key missing".to_owned()),
        Some(bytes) => serde_json::from_slice::<User>(&bytes)
            .err()
            .map(|error| error.to_string()),
    }
}

/// A user in its wire form, as the cache holds it. A type of our own, so the
/// floor stays put when the library's `User` changes; decoding it costs what
/// decoding the library's does.
#[derive(Serialize, Deserialize)]
struct User {
    id: Uuid,
    email: String,
    name: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

fn to_user(row: &tokio_postgres::Row) -> User {
    User {
        id: row.get(0),
        email: row.get(1),
        name: row.get(2),
        created_at: row.get(3),
        updated_at: row.get(4),
    }
}
