//! The three writes, each one statement, run on a connection of the pool
//! (`UserStore::write`) or inside a keyed write's transaction (`keyed.rs`).

use super::sql::{DELETE, INSERT, UPDATE};
use super::{Written, to_user};
use crate::user::{NewUser, User};
use deadpool_postgres::Object;
use uuid::Uuid;

/// One of the three writes.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    Insert {
        id: Uuid,
        user: &'a NewUser,
        owner: &'a str,
    },
    Update {
        id: Uuid,
        user: &'a NewUser,
        expected: Option<&'a [i64]>,
        owner: Option<&'a str>,
    },
    Delete {
        id: Uuid,
        expected: Option<&'a [i64]>,
        owner: Option<&'a str>,
    },
}

impl Write<'_> {
    /// The statement's name, in spans.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Insert { .. } => "insert_user",
            Self::Update { .. } => "update_user",
            Self::Delete { .. } => "delete_user",
        }
    }
}

/// The write's statement, on `client` (in a transaction or not).
pub(super) async fn run(
    client: &Object,
    write: Write<'_>,
) -> Result<Written<Option<User>>, tokio_postgres::Error> {
    Ok(match write {
        Write::Insert { id, user, owner } => {
            let insert = client.prepare_cached(INSERT).await?;
            let (email, name) = (user.email.as_str(), user.name.as_str());
            let row = client
                .query_one(&insert, &[&id, &email, &name, &owner])
                .await?;
            Written::Done(Some(to_user(&row)))
        }
        Write::Update {
            id,
            user,
            expected,
            owner,
        } => {
            let update = client.prepare_cached(UPDATE).await?;
            let (email, name) = (user.email.as_str(), user.name.as_str());
            let row = client
                .query_opt(&update, &[&id, &email, &name, &expected, &owner])
                .await?;
            match row {
                Some(row) if row.get::<_, bool>(7) => Written::Done(Some(to_user(&row))),
                Some(_) => Written::Conflict,
                None => Written::NotFound,
            }
        }
        Write::Delete {
            id,
            expected,
            owner,
        } => {
            let delete = client.prepare_cached(DELETE).await?;
            match client.query_opt(&delete, &[&id, &expected, &owner]).await? {
                Some(row) if row.get::<_, bool>(0) => Written::Done(None),
                Some(_) => Written::Conflict,
                None => Written::NotFound,
            }
        }
    })
}
